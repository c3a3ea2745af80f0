//! A deliberately hostile rules component, for testing the plugin runtime's isolation, limits
//! and egress checks. The attack is chosen by the plugin config, e.g. `{"attack": "infinite-loop"}`
//! (see [`Attack`]); it runs at the start of every export (`describe`, and `condition` and `plan`
//! of both `rules` and `flat-rules`: the component targets the world `flat-plugin`). The attacks
//! on the output instead shape what `plan` returns: a flat plan that points outside its lists,
//! or a number of outcomes other than the batch's number of pairs.
//!
//! Built with one of the features `forbidden-fs`, `forbidden-sockets` or `forbidden-http`, the
//! component instead imports a forbidden interface (wasi:filesystem, wasi:sockets, wasi:http) and
//! must be refused at load time. This crate must never be shipped to a tenant or loaded outside
//! tests, and none of its attacks may reach anything but the host's own checks.

// Natively the crate is only unit-tested; the attacks run inside the component.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;

#[cfg(not(feature = "forbidden-http"))]
mod bindings {
    wit_bindgen::generate!({
        world: "flat-plugin",
        path: "../../wit",
    });
}

#[cfg(feature = "forbidden-http")]
mod bindings {
    wit_bindgen::generate!({
        world: "dealbridge:hostile/plugin-with-http",
        path: ["../../wit", "wit/fake-wasi-http", "wit/hostile-http"],
        generate_all,
    });
}

use bindings::dealbridge::rules::crm::{self, Method, Request, RequestError};
use bindings::dealbridge::rules::log::{self, Level};
use bindings::dealbridge::rules::types::Crm;
use bindings::exports::dealbridge::rules::rules::{ErrorKind, RuleError};

/// The attacks, by their config name (`{"attack": NAME, ...}`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "attack", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Attack {
    /// No attack: behaves (returns one up-to-date skip per pair). The default for `{}`.
    None,
    /// Spins forever: fuel or the deadline must stop it.
    InfiniteLoop,
    /// Recurses without end: a stack overflow trap.
    DeepRecursion,
    /// Allocates and touches memory until allocation fails: the memory limit must stop it.
    MemoryBomb {
        /// Bytes per allocation step (default 1 MiB).
        #[serde(default)]
        step: Option<usize>,
    },
    /// Returns an output far above the output limit.
    HugeOutput {
        /// Size of the returned text (default 8 MiB).
        #[serde(default)]
        bytes: Option<usize>,
    },
    /// Returns `copies` strings that all point at the same `bytes` bytes of its memory (on both
    /// paths: the nested `plan` as skip reasons, the flat `plan` as written text values), so
    /// that copying them would take the host `copies × bytes`. Deliberately unsound inside the
    /// guest (the strings share one allocation); the host must refuse them before it holds them.
    SharedOutput {
        /// How many strings (default 64).
        #[serde(default)]
        copies: Option<usize>,
        /// The bytes they share (default 1 MiB).
        #[serde(default)]
        bytes: Option<usize>,
    },
    /// Sends one CRM request with `copies` headers whose values all point at the same `bytes`
    /// bytes of its memory, as `shared-output` does for the returned value.
    SharedRequest {
        /// How many headers (default 64).
        #[serde(default)]
        copies: Option<usize>,
        /// The bytes their values share (default 1 MiB).
        #[serde(default)]
        bytes: Option<usize>,
    },
    /// Writes far more log than the log cap.
    HugeLog {
        /// Total bytes of log (default 16 MiB, in 1 KiB lines).
        #[serde(default)]
        bytes: Option<usize>,
    },
    /// Executes `unreachable`.
    Trap,
    /// Panics (an abort trap in WASM).
    Panic,
    /// Sends requests that try to escape the CRM API root or smuggle credentials; returns a
    /// whole-call error of kind `other` whose message is `crm escapes: all N denied` when the
    /// host denied every one, or names the first that was not denied.
    CrmEscape {
        /// Run only this case (see [`ESCAPES`]); all when absent.
        #[serde(default)]
        case: Option<String>,
    },
    /// Sends many valid requests: the outbound-request limit must stop it.
    RequestFlood {
        /// How many requests (default 10,000).
        #[serde(default)]
        count: Option<u32>,
    },
    /// `plan` and `condition` (on both paths) return one outcome or inclusion more than the
    /// batch has pairs.
    WrongOutcomeCount,
    /// `flat-rules.plan`: the first outcome's Salesforce writes span reaches one item past the
    /// plan's `writes`. The nested `plan` behaves.
    FlatWriteSpanOutOfRange,
    /// `flat-rules.plan`: the first outcome's HubSpot associations span starts past the plan's
    /// `related`. The nested `plan` behaves.
    FlatRelatedSpanOutOfRange,
    /// `flat-rules.plan`: the first outcome writes a `known` HubSpot field whose index is past
    /// the batch's HubSpot field table. The nested `plan` behaves.
    FlatFieldIndexOutOfTable,
}

/// One escape attempt: a name, the CRM, the path and extra headers.
pub struct Escape {
    /// The case name (`case` in the config).
    pub name: &'static str,
    /// Which CRM.
    pub target: Crm,
    /// The path the guest asks for.
    pub path: &'static str,
    /// Extra headers.
    pub headers: &'static [(&'static str, &'static str)],
}

/// Every escape attempt, each of which the host must deny before anything leaves it.
pub const ESCAPES: &[Escape] = &[
    Escape {
        name: "absolute-url",
        target: Crm::Hubspot,
        path: "http://evil.example/",
        headers: &[],
    },
    Escape {
        name: "dot-dot",
        target: Crm::Hubspot,
        path: "/crm/v3/../../admin",
        headers: &[],
    },
    Escape {
        name: "encoded-dot-dot",
        target: Crm::Hubspot,
        path: "/crm/v3/%2e%2e/%2e%2e/admin",
        headers: &[],
    },
    Escape {
        name: "encoded-dot-dot-upper",
        target: Crm::Salesforce,
        path: "/services/data/%2E%2E/%2E%2E/x",
        headers: &[],
    },
    Escape {
        name: "encoded-slash",
        target: Crm::Hubspot,
        path: "/crm/v3/%2f%2fevil.example/x",
        headers: &[],
    },
    Escape {
        name: "protocol-relative",
        target: Crm::Hubspot,
        path: "//evil.example/x",
        headers: &[],
    },
    Escape {
        name: "backslash",
        target: Crm::Hubspot,
        path: "/crm/v3/..\\..\\admin",
        headers: &[],
    },
    Escape {
        name: "no-leading-slash",
        target: Crm::Hubspot,
        path: "evil.example/x",
        headers: &[],
    },
    Escape {
        name: "query-in-path",
        target: Crm::Hubspot,
        path: "/crm/v3/owners?email=a@b.c",
        headers: &[],
    },
    Escape {
        name: "crlf-in-path",
        target: Crm::Salesforce,
        path: "/services/data/v62.0/query\r\nHost: evil.example",
        headers: &[],
    },
    Escape {
        name: "encoded-crlf-in-path",
        target: Crm::Hubspot,
        path: "/crm/v3/owners%0d%0aHost:%20evil.example",
        headers: &[],
    },
    Escape {
        name: "encoded-nul",
        target: Crm::Hubspot,
        path: "/crm/v3/owners%00.json",
        headers: &[],
    },
    Escape {
        name: "header-value-injection",
        target: Crm::Hubspot,
        path: "/crm/v3/owners",
        headers: &[("X-A", "b\r\nHost: evil.example")],
    },
    Escape {
        name: "header-name-injection",
        target: Crm::Hubspot,
        path: "/crm/v3/owners",
        headers: &[("X-A\r\nHost", "evil.example")],
    },
    Escape {
        name: "authorization-header",
        target: Crm::Hubspot,
        path: "/crm/v3/owners",
        headers: &[("Authorization", "Bearer stolen")],
    },
    Escape {
        name: "authorization-header-case",
        target: Crm::Salesforce,
        path: "/services/data/v62.0/limits",
        headers: &[("aUtHoRiZaTiOn", "Bearer stolen")],
    },
    Escape {
        name: "host-header",
        target: Crm::Hubspot,
        path: "/crm/v3/owners",
        headers: &[("Host", "evil.example")],
    },
    Escape {
        name: "cookie-header",
        target: Crm::Salesforce,
        path: "/services/data/v62.0/limits",
        headers: &[("Cookie", "sid=stolen")],
    },
];

fn hostile_error(message: String) -> RuleError {
    RuleError {
        kind: ErrorKind::Other,
        field: None,
        message,
    }
}

fn parse_attack(json: &str) -> Result<Attack, RuleError> {
    if json.trim() == "{}" || json.trim().is_empty() {
        return Ok(Attack::None);
    }
    serde_json::from_str(json).map_err(|e| RuleError {
        kind: ErrorKind::Config,
        field: Some("attack".to_string()),
        message: format!("unknown hostile config: {e}"),
    })
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut local = [0u8; 256];
    local.copy_from_slice(pad);
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::process::abort()
    }
}

fn send(target: Crm, path: &str, headers: &[(&str, &str)]) -> Result<u16, RequestError> {
    let req = Request {
        target,
        method: Method::Get,
        path: path.to_string(),
        query: Vec::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: None,
    };
    crm::send(&req).map(|r| r.status)
}

/// Runs the configured attack. Returns `Ok(())` for `none` and for the attacks on the output
/// (which the exports carry out); the others never return normally, or return the error they
/// were built to produce.
fn attack(a: &Attack) -> Result<(), RuleError> {
    match a {
        Attack::None
        | Attack::WrongOutcomeCount
        | Attack::FlatWriteSpanOutOfRange
        | Attack::FlatRelatedSpanOutOfRange
        | Attack::FlatFieldIndexOutOfTable
        | Attack::SharedOutput { .. } => Ok(()),
        Attack::InfiniteLoop => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Attack::DeepRecursion => {
            let n = recurse(0, &mut [0u8; 256]);
            Err(hostile_error(format!("recursion returned {n}")))
        }
        Attack::MemoryBomb { step } => {
            let step = step.unwrap_or(1 << 20).max(4096);
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; step];
                for i in (0..step).step_by(4096) {
                    chunk[i] = 1;
                }
                hoard.push(std::hint::black_box(chunk));
            }
        }
        Attack::HugeOutput { bytes } => {
            let text = "x".repeat(bytes.unwrap_or(8 << 20));
            Err(hostile_error(text))
        }
        Attack::HugeLog { bytes } => {
            let line = "y".repeat(1024);
            let lines = bytes.unwrap_or(16 << 20) / 1024;
            for _ in 0..lines {
                log::write(Level::Info, &line);
            }
            Err(hostile_error(format!("wrote {lines} log lines")))
        }
        Attack::SharedRequest { copies, bytes } => {
            let values = shared_strings(copies.unwrap_or(64), bytes.unwrap_or(1 << 20));
            let req = std::mem::ManuallyDrop::new(Request {
                target: Crm::Hubspot,
                method: Method::Get,
                path: "/crm/v3/owners".to_string(),
                query: Vec::new(),
                headers: std::mem::ManuallyDrop::into_inner(values)
                    .into_iter()
                    .map(|v| ("X-Pad".to_string(), v))
                    .collect(),
                body: None,
            });
            let sent = crm::send(&req).map(|r| r.status);
            Err(hostile_error(format!(
                "a request with shared header values was taken: {sent:?}"
            )))
        }
        Attack::Trap => trap(),
        Attack::Panic => panic!("hostile component panics on purpose"),
        Attack::CrmEscape { case } => {
            let cases: Vec<&Escape> = ESCAPES
                .iter()
                .filter(|e| case.as_deref().is_none_or(|c| c == e.name))
                .collect();
            if cases.is_empty() {
                return Err(hostile_error(format!("no escape case named {case:?}")));
            }
            for e in &cases {
                match send(e.target, e.path, e.headers) {
                    Ok(status) => {
                        return Err(hostile_error(format!(
                            "crm escape NOT denied: case {} got HTTP status {status}",
                            e.name
                        )));
                    }
                    Err(RequestError::Denied(_)) => {}
                    Err(other) => {
                        return Err(hostile_error(format!(
                            "crm escape NOT denied: case {} failed otherwise: {other:?}",
                            e.name
                        )));
                    }
                }
            }
            Err(hostile_error(format!(
                "crm escapes: all {} denied",
                cases.len()
            )))
        }
        Attack::RequestFlood { count } => {
            let count = count.unwrap_or(10_000);
            for i in 0..count {
                if let Err(e) = send(Crm::Hubspot, "/crm/v3/owners", &[]) {
                    return Err(hostile_error(format!(
                        "request {} of {count} refused: {e:?}",
                        i + 1
                    )));
                }
            }
            Err(hostile_error(format!("all {count} requests were sent")))
        }
    }
}

/// `copies` strings that all point at one buffer of `bytes` bytes: what no safe guest can make,
/// and what the canonical ABI allows (a string is a pointer and a length). They must never be
/// dropped (they would free one block `copies` times), hence the `ManuallyDrop`; a value built
/// from them is handed to the host and never comes back.
fn shared_strings(copies: usize, bytes: usize) -> std::mem::ManuallyDrop<Vec<String>> {
    let mut text = std::mem::ManuallyDrop::new("z".repeat(bytes));
    let (ptr, len) = (text.as_mut_ptr(), text.len());
    std::mem::ManuallyDrop::new(
        (0..copies)
            // SAFETY: none. Every string aliases the same leaked block on purpose; the caller
            // never drops them (see above).
            .map(|_| unsafe { String::from_raw_parts(ptr, len, len) })
            .collect(),
    )
}

/// The forbidden imports of the feature builds, exercised so the linker keeps them.
fn forbidden() -> Result<(), RuleError> {
    #[cfg(feature = "forbidden-fs")]
    {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        return Err(hostile_error(format!(
            "read {} bytes from /etc/passwd",
            text.len()
        )));
    }
    #[cfg(feature = "forbidden-sockets")]
    {
        let ok = std::net::TcpStream::connect("169.254.169.254:80").is_ok();
        return Err(hostile_error(format!(
            "connected to the metadata service: {ok}"
        )));
    }
    #[cfg(feature = "forbidden-http")]
    {
        let status = bindings::wasi::http::handler::handle("http://evil.example/");
        return Err(hostile_error(format!("direct HTTP status {status}")));
    }
    #[allow(unreachable_code)]
    Ok(())
}

/// How many outcomes (or inclusions) the exports return for a batch of `pairs` pairs.
fn outcome_count(a: &Attack, pairs: usize) -> usize {
    if *a == Attack::WrongOutcomeCount {
        pairs + 1
    } else {
        pairs
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::bindings::dealbridge::rules::config;
    use super::bindings::dealbridge::rules::flat_types::{FlatBatch, Span};
    use super::bindings::dealbridge::rules::types::{Batch, FieldInfo, ObjectPair, Value};
    use super::bindings::exports::dealbridge::rules::flat_rules::{
        self, FieldRef, FlatOutcome, FlatPlan, FlatWrite, FlatWrites,
    };
    use super::bindings::exports::dealbridge::rules::rules::{
        Description, Guest, Inclusion, PairOutcome, RuleError, Skip,
    };
    use super::{Attack, attack, forbidden, outcome_count, parse_attack, shared_strings};

    struct Hostile;

    /// Runs the configured attack; the attack, for the exports that shape their output by it.
    fn run() -> Result<Attack, RuleError> {
        forbidden()?;
        let a = parse_attack(&config::get())?;
        attack(&a)?;
        Ok(a)
    }

    impl Guest for Hostile {
        fn describe(_schema: Vec<FieldInfo>) -> Result<Description, RuleError> {
            run()?;
            Ok(Description {
                name: "dealbridge-hostile".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                object_pairs: vec![ObjectPair::OpportunityDeal],
                mappings: Vec::new(),
                extra_fields: Vec::new(),
            })
        }

        fn condition(batch: Batch) -> Result<Vec<Inclusion>, RuleError> {
            let a = run()?;
            let n = outcome_count(&a, batch.pairs.len());
            Ok(vec![Inclusion::Include; n])
        }

        fn plan(batch: Batch) -> Result<Vec<PairOutcome>, RuleError> {
            let a = run()?;
            if let Attack::SharedOutput { copies, bytes } = a {
                let reasons = shared_strings(copies.unwrap_or(64), bytes.unwrap_or(1 << 20));
                return Ok(std::mem::ManuallyDrop::into_inner(reasons)
                    .into_iter()
                    .map(|r| PairOutcome::Skip(Skip::Excluded(r)))
                    .collect());
            }
            let n = outcome_count(&a, batch.pairs.len());
            Ok(vec![PairOutcome::Skip(Skip::UpToDate); n])
        }
    }

    impl flat_rules::Guest for Hostile {
        fn condition(batch: FlatBatch) -> Result<Vec<Inclusion>, RuleError> {
            let a = run()?;
            let n = outcome_count(&a, batch.pairs.len());
            Ok(vec![Inclusion::Include; n])
        }

        fn plan(batch: FlatBatch) -> Result<FlatPlan, RuleError> {
            let a = run()?;
            let n = outcome_count(&a, batch.pairs.len());
            let mut outcomes = vec![FlatOutcome::Skip(Skip::UpToDate); n];
            let mut writes = Vec::new();
            let nothing = Span { start: 0, len: 0 };
            let mut first = FlatWrites {
                salesforce: nothing,
                hubspot: nothing,
                salesforce_associations: None,
                hubspot_associations: None,
            };
            let spoils_first =
                match a {
                    Attack::FlatWriteSpanOutOfRange => {
                        writes.push(FlatWrite {
                            field: FieldRef::Named("Name".to_string()),
                            value: Value::Text("hostile".to_string()),
                        });
                        first.salesforce = Span { start: 0, len: 2 };
                        true
                    }
                    Attack::FlatRelatedSpanOutOfRange => {
                        first.hubspot_associations = Some(Span { start: 3, len: 0 });
                        true
                    }
                    Attack::SharedOutput { copies, bytes } => {
                        let texts = shared_strings(copies.unwrap_or(64), bytes.unwrap_or(1 << 20));
                        writes.extend(std::mem::ManuallyDrop::into_inner(texts).into_iter().map(
                            |t| FlatWrite {
                                field: FieldRef::Named("Description".to_string()),
                                value: Value::Text(t),
                            },
                        ));
                        false
                    }
                    Attack::FlatFieldIndexOutOfTable => {
                        writes.push(FlatWrite {
                            field: FieldRef::Known(batch.hubspot_fields.len() as u32 + 7),
                            value: Value::Null,
                        });
                        first.hubspot = Span { start: 0, len: 1 };
                        true
                    }
                    _ => false,
                };
            if spoils_first && let Some(o) = outcomes.first_mut() {
                *o = FlatOutcome::Write(first);
            }
            Ok(FlatPlan {
                writes,
                related: Vec::new(),
                outcomes,
            })
        }
    }

    super::bindings::export!(Hostile with_types_in super::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_selects_the_attack() {
        assert_eq!(parse_attack("{}").unwrap(), Attack::None);
        assert_eq!(
            parse_attack(r#"{"attack":"infinite-loop"}"#).unwrap(),
            Attack::InfiniteLoop
        );
        assert_eq!(
            parse_attack(r#"{"attack":"huge-output","bytes":10}"#).unwrap(),
            Attack::HugeOutput { bytes: Some(10) }
        );
        assert_eq!(
            parse_attack(r#"{"attack":"crm-escape","case":"dot-dot"}"#).unwrap(),
            Attack::CrmEscape {
                case: Some("dot-dot".into())
            }
        );
        let e = parse_attack(r#"{"attack":"nope"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
    }

    #[test]
    fn escape_cases_have_unique_names_and_each_is_hostile() {
        for (i, e) in ESCAPES.iter().enumerate() {
            assert!(
                ESCAPES[..i].iter().all(|o| o.name != e.name),
                "duplicate {}",
                e.name
            );
            let p = e.path.to_ascii_lowercase();
            let bad_path = !p.starts_with('/')
                || p.starts_with("//")
                || p.contains("..")
                || p.contains("%2e")
                || p.contains("%2f")
                || p.contains('\\')
                || p.contains('?')
                || p.contains('\r')
                || p.contains("%0d")
                || p.contains("%00");
            let bad_header = e.headers.iter().any(|(k, v)| {
                let k = k.to_ascii_lowercase();
                k.contains('\r')
                    || v.contains('\r')
                    || ["authorization", "host", "cookie"].contains(&k.as_str())
            });
            assert!(bad_path || bad_header, "case {} is harmless", e.name);
        }
    }
}
