//! Per-invocation limits: the tenant policy ([`Limits`]), the names of the
//! limits ([`LimitKind`]) and the wasmtime resource limiter that enforces
//! linear memory, tables and instances and records the peak memory.
//!
//! Every limit hit must surface as a typed error naming the limit and the
//! figure reached; this module must never let a guest grow past a limit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The limits of one invocation, set per tenant.
///
/// Unknown keys are refused, so a typo in a tenant policy is an error. Every
/// key may be left out; the defaults are below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel: about one unit per WebAssembly instruction. Deterministic, so a
    /// tenant reproduces a limit locally with `dealbridge plugin run`.
    /// Default 500 000 000.
    pub fuel: u64,
    /// Wall-clock deadline of the whole invocation in milliseconds,
    /// instantiation and time spent in host calls (CRM requests) included.
    /// Default 2 000.
    pub deadline_ms: u64,
    /// Linear memory of all the component's memories together, in bytes.
    /// Default 32 MiB.
    pub memory_bytes: u64,
    /// Tables the component may create. Default 32.
    pub tables: u32,
    /// Elements per table. Default 100 000.
    pub table_elements: u64,
    /// Core instances the component may create. Default 32.
    pub instances: u32,
    /// Input bytes: the canonical-ABI size of the arguments (see
    /// `runtime::size`), checked before anything is copied into the guest.
    /// Default 1 MiB.
    pub input_bytes: u64,
    /// Output bytes: the canonical-ABI size of the returned value. Default 1 MiB.
    ///
    /// It also bounds what the host copies out of the guest at all (see
    /// [`Limits::lift_budget`]): a value whose strings or lists share guest bytes would
    /// otherwise be copied once per reference and could take far more host memory than the
    /// guest has.
    pub output_bytes: u64,
    /// Log bytes (messages of the `log` import). Lines past the cap are
    /// dropped and counted, as the contract says. Default 64 KiB.
    pub log_bytes: u64,
    /// Captured stdout and stderr bytes (each); the rest is dropped and
    /// counted. Default 64 KiB.
    pub stdio_bytes: u64,
    /// CRM requests per invocation. Past it a request gets
    /// `request-error::limit-exceeded`. Default 32.
    pub outbound_requests: u32,
    /// Response body bytes of all CRM requests together. Default 4 MiB.
    pub response_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 500_000_000,
            deadline_ms: 2_000,
            memory_bytes: 32 << 20,
            tables: 32,
            table_elements: 100_000,
            instances: 32,
            input_bytes: 1 << 20,
            output_bytes: 1 << 20,
            log_bytes: 64 << 10,
            stdio_bytes: 64 << 10,
            outbound_requests: 32,
            response_bytes: 4 << 20,
        }
    }
}

/// How many host bytes one output byte may take once lifted. wasmtime counts a list's elements
/// at their host size, and the wire size (`size`) counts at least 8 bytes per field, case and
/// header: a `String` in a list is 24 host bytes for its 8, and the largest ratio, a
/// `PairOutcome` that skips (about 100 host bytes for its 16), is under 7. `size`'s `lift_budget_covers_every_well_formed_output` holds it for
/// every type a returned list holds.
pub const LIFT_BYTES_PER_OUTPUT_BYTE: u64 = 8;

/// Host bytes every lift may take whatever the output limit: the small fixed parts of a
/// value (a host call's arguments, an error) must always fit.
pub const LIFT_BUDGET_FLOOR: u64 = 64 << 10;

impl Limits {
    /// The most host memory that lifting one value out of the guest may take, in bytes: the
    /// returned value of an export, or the arguments of one host call (a CRM request, a log
    /// line). wasmtime counts it as it copies (`Store::set_hostcall_fuel`): every string's
    /// bytes and every list's elements at their host size, once per reference, so strings
    /// or lists that share guest bytes count once each and cannot make the host allocate
    /// more than this.
    ///
    /// Any value whose wire size is within `output_bytes` fits, so the budget refuses nothing
    /// that the output limit would pass; it only refuses earlier, before the host holds it.
    pub fn lift_budget(&self) -> u64 {
        self.output_bytes
            .saturating_mul(LIFT_BYTES_PER_OUTPUT_BYTE)
            .saturating_add(LIFT_BUDGET_FLOOR)
    }

    /// Applies the keys of a JSON object on top of these limits (a fixture's
    /// `limits`), refusing unknown keys and wrong types.
    pub fn merged_with(&self, overrides: &serde_json::Value) -> Result<Limits, serde_json::Error> {
        let mut base = serde_json::to_value(self)?;
        if let (Some(base), Some(over)) = (base.as_object_mut(), overrides.as_object()) {
            for (key, value) in over {
                base.insert(key.clone(), value.clone());
            }
        }
        let merged: Limits = serde_json::from_value(base)?;
        // Unknown keys would have been silently inserted above; refuse them.
        if let Some(over) = overrides.as_object() {
            let known = serde_json::to_value(Limits::default())?;
            if let Some(key) = over.keys().find(|k| known.get(k.as_str()).is_none()) {
                return Err(serde::de::Error::custom(format!("unknown limit `{key}`")));
            }
        }
        Ok(merged)
    }
}

/// The name of a limit, as in [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// [`Limits::fuel`]
    Fuel,
    /// [`Limits::deadline_ms`] (figures in milliseconds)
    Deadline,
    /// [`Limits::memory_bytes`]
    Memory,
    /// [`Limits::tables`]
    Tables,
    /// [`Limits::table_elements`]
    TableElements,
    /// [`Limits::instances`]
    Instances,
    /// [`Limits::input_bytes`]
    InputBytes,
    /// [`Limits::output_bytes`]
    OutputBytes,
    /// [`Limits::log_bytes`]
    LogBytes,
    /// [`Limits::stdio_bytes`]
    StdioBytes,
    /// [`Limits::outbound_requests`]
    OutboundRequests,
    /// [`Limits::response_bytes`]
    ResponseBytes,
}

impl LimitKind {
    /// The policy key of the limit (`fuel`, `deadline_ms`, ...).
    pub fn key(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::Deadline => "deadline_ms",
            LimitKind::Memory => "memory_bytes",
            LimitKind::Tables => "tables",
            LimitKind::TableElements => "table_elements",
            LimitKind::Instances => "instances",
            LimitKind::InputBytes => "input_bytes",
            LimitKind::OutputBytes => "output_bytes",
            LimitKind::LogBytes => "log_bytes",
            LimitKind::StdioBytes => "stdio_bytes",
            LimitKind::OutboundRequests => "outbound_requests",
            LimitKind::ResponseBytes => "response_bytes",
        }
    }

    /// Parses a policy key (`fuel`, `deadline_ms`, ...).
    pub fn from_key(key: &str) -> Option<LimitKind> {
        use LimitKind::*;
        [
            Fuel,
            Deadline,
            Memory,
            Tables,
            TableElements,
            Instances,
            InputBytes,
            OutputBytes,
            LogBytes,
            StdioBytes,
            OutboundRequests,
            ResponseBytes,
        ]
        .into_iter()
        .find(|k| k.key() == key)
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A limit that was reached: which, its value, and the figure reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// Which limit.
    pub limit: LimitKind,
    /// The limit's value.
    pub limit_value: u64,
    /// The figure the plugin reached (or asked for).
    pub reached: u64,
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit `{}` reached: limit {}, reached {}",
            self.limit, self.limit_value, self.reached
        )
    }
}

/// The error a limiter raises inside wasmtime; `Runtime` turns it back into
/// [`LimitHit`] by downcasting.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LimitTrap(pub LimitHit);

/// Enforces memory, tables and instances for one store and tracks the peak
/// of linear memory.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_limit: u64,
    table_limit: u32,
    table_elements: u64,
    instance_limit: u32,
    /// The current total of all linear memories.
    memory_now: u64,
    /// The highest total seen.
    pub(crate) peak_memory: u64,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory_limit: limits.memory_bytes,
            table_limit: limits.tables,
            table_elements: limits.table_elements,
            instance_limit: limits.instances,
            memory_now: 0,
            peak_memory: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let total = self.memory_now.saturating_add(grow);
        if total > self.memory_limit {
            return Err(wasmtime::Error::new(LimitTrap(LimitHit {
                limit: LimitKind::Memory,
                limit_value: self.memory_limit,
                reached: total,
            })));
        }
        self.memory_now = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            return Err(wasmtime::Error::new(LimitTrap(LimitHit {
                limit: LimitKind::TableElements,
                limit_value: self.table_elements,
                reached: desired as u64,
            })));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instance_limit as usize
    }

    fn tables(&self) -> usize {
        self.table_limit as usize
    }

    fn memories(&self) -> usize {
        // One memory per core module at most in practice; bounded by the
        // instance count, the bytes are bounded by `memory_bytes`.
        self.instance_limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn defaults_match_the_documented_policy() {
        let l = Limits::default();
        assert_eq!(l.deadline_ms, 2_000);
        assert_eq!(l.memory_bytes, 32 * 1024 * 1024);
        assert_eq!(l.input_bytes, 1024 * 1024);
        assert_eq!(l.log_bytes, 64 * 1024);
        assert_eq!(l.outbound_requests, 32);
        assert_eq!(l.response_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<Limits>(r#"{"fuell": 3}"#).unwrap_err();
        assert!(err.to_string().contains("fuell"), "{err}");
        let err = Limits::default()
            .merged_with(&serde_json::json!({"memmory": 1}))
            .unwrap_err();
        assert!(err.to_string().contains("memmory"), "{err}");
    }

    #[test]
    fn merge_overrides_only_given_keys() {
        let l = Limits::default()
            .merged_with(&serde_json::json!({"fuel": 7}))
            .unwrap();
        assert_eq!(l.fuel, 7);
        assert_eq!(l.deadline_ms, 2_000);
        assert!(
            Limits::default()
                .merged_with(&serde_json::json!({"fuel": "x"}))
                .is_err()
        );
    }

    #[test]
    fn limit_keys_round_trip() {
        for k in [
            LimitKind::Fuel,
            LimitKind::Deadline,
            LimitKind::ResponseBytes,
        ] {
            assert_eq!(LimitKind::from_key(k.key()), Some(k));
        }
        assert_eq!(LimitKind::from_key("nope"), None);
    }

    #[test]
    fn limiter_refuses_growth_past_the_memory_limit_and_tracks_peak() {
        let mut lim = Limiter::new(&Limits {
            memory_bytes: 1000,
            ..Limits::default()
        });
        assert!(lim.memory_growing(0, 600, None).unwrap());
        let err = lim.memory_growing(600, 1200, None).unwrap_err();
        let hit = err.downcast_ref::<LimitTrap>().unwrap().0;
        assert_eq!(hit.limit, LimitKind::Memory);
        assert_eq!(hit.reached, 1200);
        assert_eq!(lim.peak_memory, 600);
        assert!(lim.memory_growing(0, 400, None).unwrap());
        assert_eq!(lim.peak_memory, 1000);
    }
}
