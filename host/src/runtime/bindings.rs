//! The generated bindings of the `dealbridge:rules@0.1.0` world `plugin`.
//!
//! This module only runs `bindgen!` over `wit/rules.wit`; the host behaviour
//! of the imports lives in `host.rs`. It must never hold policy: no limits,
//! no I/O.

wasmtime::component::bindgen!({
    world: "plugin",
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
pub use self::dealbridge::rules::log::Level as WitLevel;
pub use self::dealbridge::rules::types::*;
pub use self::exports::dealbridge::rules::rules::{
    Description, ErrorKind, ExtraField, FieldMapping, FieldWrite, Inclusion, PairOutcome,
    PairWrites, RuleError, Skip, SyncRule,
};

/// Whether a component import (by name, e.g. `dealbridge:rules/log@0.1.0`) may be linked to a
/// host function that waits, so that an instance importing it must run on a fiber: `crm` (sent
/// over the network) and every WASI interface (wasmtime-wasi's bindings are async). Only the
/// contract's `types`, `log` and `config` never wait, and they reach nothing outside the
/// invocation.
pub(crate) fn import_may_wait(name: &str) -> bool {
    let interface = name.split_once('@').map_or(name, |(i, _)| i);
    !matches!(
        interface,
        "dealbridge:rules/types" | "dealbridge:rules/log" | "dealbridge:rules/config"
    )
}

#[cfg(test)]
mod tests {
    use super::import_may_wait;

    #[test]
    fn only_crm_and_wasi_imports_may_wait() {
        assert!(!import_may_wait("dealbridge:rules/types@0.1.0"));
        assert!(!import_may_wait("dealbridge:rules/log@0.1.0"));
        assert!(!import_may_wait("dealbridge:rules/config@0.1.2"));
        assert!(import_may_wait("dealbridge:rules/crm@0.1.0"));
        assert!(import_may_wait("wasi:io/streams@0.2.6"));
        assert!(import_may_wait("wasi:cli/stderr@0.2.0"));
        assert!(import_may_wait("something-else"));
    }
}
