//! The errors at the runtime's boundary: [`LoadError`] (a component that does
//! not fit) and [`InvokeError`] (an invocation that did not produce output).
//!
//! Each variant says exactly what went wrong so that a caller can match on it
//! and a tenant can fix it; no variant may carry a credential.

use super::bindings::{ErrorKind, RuleError};
use super::limits::{LimitHit, LimitKind};

/// Why a component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file has no bytes.
    #[error("the file is empty")]
    Empty,
    /// The file is larger than the host accepts.
    #[error("the file is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file does not start with the WebAssembly magic `\0asm`.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// A WebAssembly header of a version or layer this host does not know.
    #[error("unsupported WebAssembly header (version {version:#x}, layer {layer})")]
    UnknownHeader {
        /// The header's version field.
        version: u16,
        /// The header's layer field.
        layer: u16,
    },
    /// The bytes do not validate or compile (corrupted or truncated).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not export the contract's `rules` interface.
    #[error("does not target the world `dealbridge:rules/plugin@0.1.x`: no export of `dealbridge:rules/rules`; it exports [{}]", .exports.join(", "))]
    WrongWorld {
        /// The exports found.
        exports: Vec<String>,
    },
    /// The component was built against another version of the contract.
    #[error("built against `{found}`; this host supports dealbridge:rules@0.1.x")]
    WrongVersion {
        /// The interface name found, with its version.
        found: String,
    },
    /// The component imports interfaces outside the world.
    #[error("imports outside the world `dealbridge:rules/plugin` (nothing of these is granted): {}", .imports.join(", "))]
    ForbiddenImports {
        /// The imports refused.
        imports: Vec<String>,
    },
    /// The imports fit by name but not by type.
    #[error("imports do not match the contract: {0}")]
    Link(String),
    /// The compile cache could not be read or written.
    #[error("compile cache: {0}")]
    Cache(String),
    /// The engine could not be set up.
    #[error("engine: {0}")]
    Engine(String),
}

/// Why an invocation produced no output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// A per-invocation limit was reached.
    #[error("limit `{limit}` reached: limit {limit_value}, reached {reached}")]
    Limit {
        /// Which limit.
        limit: LimitKind,
        /// Its value.
        limit_value: u64,
        /// The figure reached.
        reached: u64,
    },
    /// The guest overflowed its call stack, or its shadow stack in linear
    /// memory (Rust, C): recursion too deep.
    #[error("stack overflow in the plugin (recursion too deep)")]
    StackOverflow,
    /// The guest trapped or panicked.
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// The guest called `exit`.
    #[error("the plugin exited with status {0}")]
    Exit(i32),
    /// The plugin's own typed error for the whole call.
    #[error("the plugin returned an error: {}", rule_error_text(.0))]
    Rule(RuleError),
    /// The input was refused before the call (e.g. config not a JSON object).
    #[error("invalid input: {0}")]
    Input(String),
    /// The instance could not be created (e.g. the instance pool is full).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// An export of the contract's interfaces has another type than the contract's (the
    /// names fit, the signature does not). Found on the component's first instantiation;
    /// the message names the export.
    #[error("the component does not fit the contract: {0}")]
    Contract(String),
    /// The arguments of a host call (a CRM request, a log line) would take more
    /// host memory than [`Limits::lift_budget`](super::Limits::lift_budget):
    /// strings or lists that share the plugin's memory count once per
    /// reference. The host stopped copying them, made no call, and stopped the
    /// invocation.
    #[error(
        "a host call's arguments would take more than {budget} bytes on the host (strings and lists that share the plugin's memory count once per reference); the call was not made"
    )]
    HostCallTooLarge {
        /// The lift budget, in host bytes.
        budget: u64,
    },
    /// The plugin returned a value that breaks the contract: a flat plan
    /// whose span or field index points outside its list, or a number of
    /// outcomes or inclusions other than the batch's number of pairs. The
    /// whole output is refused.
    #[error("the plugin's `{export}` returned an invalid output: {reason}")]
    InvalidOutput {
        /// The export that returned it, e.g. `flat-rules.plan`.
        export: &'static str,
        /// What is wrong, naming the outcome and the item.
        reason: String,
    },
}

impl InvokeError {
    /// The limit hit, if this is one.
    pub fn limit_hit(&self) -> Option<LimitHit> {
        match *self {
            InvokeError::Limit {
                limit,
                limit_value,
                reached,
            } => Some(LimitHit {
                limit,
                limit_value,
                reached,
            }),
            _ => None,
        }
    }
}

impl From<LimitHit> for InvokeError {
    fn from(h: LimitHit) -> Self {
        InvokeError::Limit {
            limit: h.limit,
            limit_value: h.limit_value,
            reached: h.reached,
        }
    }
}

/// The kebab-case name of an error kind, as in the WIT contract.
pub fn error_kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::IncompatibleMapping => "incompatible-mapping",
        ErrorKind::UnmappedStage => "unmapped-stage",
        ErrorKind::UnmappedPipeline => "unmapped-pipeline",
        ErrorKind::MissingOwner => "missing-owner",
        ErrorKind::InvalidValue => "invalid-value",
        ErrorKind::Other => "other",
    }
}

fn rule_error_text(e: &RuleError) -> String {
    match &e.field {
        Some(f) => format!("{} ({f}): {}", error_kind_name(e.kind), e.message),
        None => format!("{}: {}", error_kind_name(e.kind), e.message),
    }
}
