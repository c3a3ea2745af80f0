//! dealbridge's default sync rules: HubSpot's native Salesforce connector behaviour as a rules
//! component (`dealbridge:rules/plugin@0.1.0`), configurable by the tenant's plugin config JSON.
//!
//! Built for `wasm32-unknown-unknown` (no WASI; `rules-wasm/artifacts` makes the core module a
//! component) this crate is the default rules component; built for the host it is
//! an ordinary library whose [`Rules`] entry points take the config as a parameter (the `config`
//! import exists only inside the component), so benchmarks can compare native and WASM speed on
//! the same code. The policy lives in plain functions over the WIT types ([`plan`], [`config`],
//! [`describe`]). This crate must never perform I/O or call the `crm` import: it plans only.
//!
//! The config schema is documented in `README.md` beside this crate.

pub mod config;
pub mod decimal;
pub mod describe;
pub mod heap;
pub mod mappings;
pub mod plan;

/// The bindings generated from `wit/rules.wit` (world `plugin`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        additional_derives: [PartialEq],
    });
}

pub use bindings::dealbridge::rules::types;
pub use bindings::exports::dealbridge::rules::rules as exports;

use bindings::dealbridge::rules::types::{Batch, FieldInfo};
use bindings::exports::dealbridge::rules::rules::{Description, Inclusion, PairOutcome, RuleError};

/// The default rules with a parsed, checked config: the native entry point.
#[derive(Debug, Clone)]
pub struct Rules {
    config: config::Config,
}

impl Rules {
    /// Parses and checks a tenant config (JSON text, `{}` for the defaults).
    pub fn from_json(config_json: &str) -> Result<Self, RuleError> {
        Ok(Rules {
            config: config::parse(config_json)?,
        })
    }

    /// The checked config.
    pub fn config(&self) -> &config::Config {
        &self.config
    }

    /// `describe`: the mapping table, refusing incompatible custom mappings.
    pub fn describe(&self, schema: &[FieldInfo]) -> Result<Description, RuleError> {
        describe::describe(&self.config, schema)
    }

    /// `condition`: one inclusion per pair.
    pub fn condition(&self, batch: &Batch) -> Result<Vec<Inclusion>, RuleError> {
        plan::Prepared::new(&self.config, batch).condition()
    }

    /// `plan`: one outcome per pair.
    pub fn plan(&self, batch: &Batch) -> Result<Vec<PairOutcome>, RuleError> {
        Ok(plan::Prepared::new(&self.config, batch).plan())
    }
}

/// The component's exports: read the config through the import, then run the plain functions.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::Rules;
    use super::bindings::dealbridge::rules::config;
    use super::bindings::dealbridge::rules::types::{Batch, FieldInfo};
    use super::bindings::exports::dealbridge::rules::rules::{
        Description, Guest, Inclusion, PairOutcome, RuleError,
    };

    /// Every invocation runs in a fresh instance: a size-class heap beats a general allocator.
    #[global_allocator]
    static HEAP: super::heap::SizeClassHeap = super::heap::SizeClassHeap::new();

    struct DefaultRules;

    /// Leaves the batch in linear memory instead of freeing it string by string: the host
    /// throws the instance away after the call, so the frees would be wasted work (a few hundred
    /// instructions per record). The peak of memory is the same, since the output is built
    /// before the batch would be dropped.
    fn forget_input(batch: Batch) {
        std::mem::forget(batch);
    }

    impl Guest for DefaultRules {
        fn describe(schema: Vec<FieldInfo>) -> Result<Description, RuleError> {
            Rules::from_json(&config::get())?.describe(&schema)
        }

        fn condition(batch: Batch) -> Result<Vec<Inclusion>, RuleError> {
            let out = Rules::from_json(&config::get())?.condition(&batch);
            forget_input(batch);
            out
        }

        fn plan(batch: Batch) -> Result<Vec<PairOutcome>, RuleError> {
            let out = Rules::from_json(&config::get())?.plan(&batch);
            forget_input(batch);
            out
        }
    }

    super::bindings::export!(DefaultRules with_types_in super::bindings);
}
