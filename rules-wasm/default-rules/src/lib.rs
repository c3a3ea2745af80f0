//! dealbridge's default sync rules: HubSpot's native Salesforce connector behaviour as a rules
//! component (`dealbridge:rules/flat-plugin@0.1.1`: it exports `rules` and `flat-rules`),
//! configurable by the tenant's plugin config JSON.
//!
//! Built for `wasm32-unknown-unknown` (no WASI; `rules-wasm/artifacts` makes the core module a
//! component) this crate is the default rules component; built for the host it is
//! an ordinary library whose [`Rules`] entry points take the config as a parameter (the `config`
//! import exists only inside the component), so benchmarks can compare native and WASM speed on
//! the same code. The policy lives in plain functions over the WIT types ([`plan`], [`config`],
//! [`describe`]). There is one planning path, over the flat form of a batch ([`flat`]): the
//! `flat-rules` exports and [`Rules::plan_flat`] run it directly; the nested `rules` exports and
//! [`Rules::plan`] flatten the batch, run it, and nest the plan. This crate must never perform
//! I/O or call the `crm` import: it plans only.
//!
//! The config schema is documented in `README.md` beside this crate.

pub mod config;
pub mod decimal;
pub mod describe;
pub mod flat;
pub mod heap;
pub mod mappings;
pub mod plan;

/// The bindings generated from `wit/rules.wit` (world `flat-plugin`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "flat-plugin",
        path: "../../wit",
        additional_derives: [PartialEq],
    });
}

pub use bindings::dealbridge::rules::flat_types;
pub use bindings::dealbridge::rules::types;
pub use bindings::exports::dealbridge::rules::flat_rules as flat_exports;
pub use bindings::exports::dealbridge::rules::rules as exports;

use bindings::dealbridge::rules::flat_types::FlatBatch;
use bindings::dealbridge::rules::types::{Batch, FieldInfo};
use bindings::exports::dealbridge::rules::flat_rules::FlatPlan;
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

    /// `rules.condition`: one inclusion per pair (the batch flattened, then [`Self::condition_flat`]).
    pub fn condition(&self, batch: &Batch) -> Result<Vec<Inclusion>, RuleError> {
        self.condition_flat(&flat::flatten(batch))
    }

    /// `rules.plan`: one outcome per pair (the batch flattened, planned by [`Self::plan_flat`],
    /// and the plan nested).
    pub fn plan(&self, batch: &Batch) -> Result<Vec<PairOutcome>, RuleError> {
        let plan = self.plan_flat(&flat::flatten(batch))?;
        flat::nest(&batch.salesforce_fields, &batch.hubspot_fields, plan)
    }

    /// `flat-rules.condition`: one inclusion per pair.
    pub fn condition_flat(&self, batch: &FlatBatch) -> Result<Vec<Inclusion>, RuleError> {
        let prepared = plan::Prepared::new(&self.config, batch)?;
        let out = prepared.condition();
        discard(prepared);
        out
    }

    /// `flat-rules.plan`: one outcome per pair, writes and associations in the plan's lists.
    pub fn plan_flat(&self, batch: &FlatBatch) -> Result<FlatPlan, RuleError> {
        let prepared = plan::Prepared::new(&self.config, batch)?;
        let plan = prepared.plan();
        discard(prepared);
        Ok(plan)
    }
}

/// Drops a value natively. Inside the component it leaves the value in linear memory instead:
/// the host throws the instance away after the call, so freeing it piece by piece would be
/// wasted work (a few hundred instructions per record for a batch, about a thousand per call
/// for the config and the planner's tables). The peak of memory is the same, since the output
/// is built before these would be dropped.
#[inline]
fn discard<T>(value: T) {
    #[cfg(target_arch = "wasm32")]
    std::mem::forget(value);
    #[cfg(not(target_arch = "wasm32"))]
    drop(value);
}

/// The component's exports: read the config through the import, then run the plain functions.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::bindings::dealbridge::rules::config;
    use super::bindings::dealbridge::rules::flat_types::FlatBatch;
    use super::bindings::dealbridge::rules::types::{Batch, FieldInfo};
    use super::bindings::exports::dealbridge::rules::flat_rules::{self, FlatPlan};
    use super::bindings::exports::dealbridge::rules::rules::{
        self, Description, Inclusion, PairOutcome, RuleError,
    };
    use super::{Rules, discard};

    /// Every invocation runs in a fresh instance: a size-class heap beats a general allocator.
    #[global_allocator]
    static HEAP: super::heap::SizeClassHeap = super::heap::SizeClassHeap::new();

    /// The canonical ABI's allocator, which the host calls for every list and string it puts
    /// into linear memory (a batch of one pair takes about 16 calls). It goes straight to the
    /// heap: wit-bindgen's own `cabi_realloc` (a weak symbol, so this one replaces it) reaches
    /// the heap through two more calls, each with its own fuel and epoch checks. Same
    /// contract as wit-bindgen's: `(0, 0, align, 0)` is the dangling `align`, a non-zero old
    /// size reallocates, and running out of memory traps.
    #[unsafe(export_name = "cabi_realloc")]
    unsafe extern "C" fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        // SAFETY: the canonical ABI passes a power-of-two alignment and sizes that fit it, and
        // a non-zero `old_len` only with a block this heap gave out with that size and alignment.
        unsafe {
            HEAP.canonical_realloc(old_ptr, old_len, align, new_len, || {
                core::arch::wasm32::unreachable()
            })
        }
    }

    struct DefaultRules;

    /// The config import, parsed and checked; its text is left in linear memory.
    fn rules() -> Result<Rules, RuleError> {
        let json = config::get();
        let rules = Rules::from_json(&json);
        discard(json);
        rules
    }

    impl rules::Guest for DefaultRules {
        fn describe(schema: Vec<FieldInfo>) -> Result<Description, RuleError> {
            rules()?.describe(&schema)
        }

        fn condition(batch: Batch) -> Result<Vec<Inclusion>, RuleError> {
            let rules = rules()?;
            let out = rules.condition(&batch);
            discard((rules, batch));
            out
        }

        fn plan(batch: Batch) -> Result<Vec<PairOutcome>, RuleError> {
            let rules = rules()?;
            let out = rules.plan(&batch);
            discard((rules, batch));
            out
        }
    }

    impl flat_rules::Guest for DefaultRules {
        fn condition(batch: FlatBatch) -> Result<Vec<Inclusion>, RuleError> {
            let rules = rules()?;
            let out = rules.condition_flat(&batch);
            discard((rules, batch));
            out
        }

        #[cfg(not(feature = "bench-floor"))]
        fn plan(batch: FlatBatch) -> Result<FlatPlan, RuleError> {
            let rules = rules()?;
            let out = rules.plan_flat(&batch);
            discard((rules, batch));
            out
        }

        /// The bench's floor: no config, no planning, one `up-to-date` per pair.
        #[cfg(feature = "bench-floor")]
        fn plan(batch: FlatBatch) -> Result<FlatPlan, RuleError> {
            use super::bindings::exports::dealbridge::rules::flat_rules::FlatOutcome;
            use super::bindings::exports::dealbridge::rules::rules::Skip;
            let out = FlatPlan {
                writes: Vec::new(),
                related: Vec::new(),
                outcomes: vec![FlatOutcome::Skip(Skip::UpToDate); batch.pairs.len()],
            };
            discard(batch);
            Ok(out)
        }
    }

    super::bindings::export!(DefaultRules with_types_in super::bindings);
}
