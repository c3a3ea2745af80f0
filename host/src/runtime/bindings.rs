//! The generated bindings of the `dealbridge:rules@0.1.1` world `flat-plugin`.
//!
//! `flat-plugin` includes `plugin`, so its imports are those of every rules
//! component; a component may export `rules` only (world `plugin`) or also
//! `flat-rules`. The host finds each export by name at load (see
//! `RulesExports` in `mod.rs`), so one set of bindings serves both worlds.
//!
//! This module only runs `bindgen!` over `wit/rules.wit`; the host behaviour
//! of the imports lives in `host.rs`. It must never hold policy: no limits,
//! no I/O.

wasmtime::component::bindgen!({
    world: "flat-plugin",
    path: "../wit",
    imports: {
        // The only import that waits on the network; it may also end the
        // invocation (deadline) by trapping.
        "dealbridge:rules/crm.send": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    additional_derives: [PartialEq],
});

// `self::` keeps the generated `dealbridge` module apart from this crate's own name.
pub use self::dealbridge::rules::crm::{
    Method as WitMethod, Request as WitRequest, RequestError as WitRequestError,
    Response as WitResponse,
};
pub use self::dealbridge::rules::flat_types::{
    FlatBatch, FlatField, FlatPair, FlatRecord, FlatRelated, FlatSnapshot, FlatValue, Span,
};
pub use self::dealbridge::rules::log::Level as WitLevel;
pub use self::dealbridge::rules::types::*;
pub use self::exports::dealbridge::rules::flat_rules::{
    FieldRef, FlatOutcome, FlatPlan, FlatWrite, FlatWrites,
};
pub use self::exports::dealbridge::rules::rules::{
    Description, ErrorKind, ExtraField, FieldMapping, FieldWrite, Inclusion, PairOutcome,
    PairWrites, RuleError, Skip, SyncRule,
};
