//! Absolute paths of the guest components built by this crate's build script (a nested
//! `cargo build` into `<workspace>/target/guests`: the default rules for
//! `wasm32-unknown-unknown`, made a component without any WASI import; the others for
//! `wasm32-wasip2`), and of hand-made inputs that the plugin runtime must refuse or stop.
//! Hosts and tests read the files at these paths.
//!
//! Every component here except [`DEFAULT_RULES`] and [`OWNER_LOOKUP`] is hostile on purpose or,
//! [`DEFAULT_RULES_FLOOR`], a bench's stand-in that plans nothing: this crate must never be used
//! to pick a component to run for a real tenant.

/// The default rules component (`dealbridge-default-rules`): HubSpot's native connector
/// behaviour, configured by the tenant's plugin config JSON.
pub const DEFAULT_RULES: &str = env!("DEALBRIDGE_GUEST_DEFAULT_RULES");

/// The bytes of [`DEFAULT_RULES`], embedded so that a binary runs the default rules anywhere.
pub static DEFAULT_RULES_WASM: &[u8] = include_bytes!(env!("DEALBRIDGE_GUEST_DEFAULT_RULES"));

/// The default rules built with the feature `bench-floor`: the same component, whose
/// `flat-rules.plan` answers one skip per pair without planning. The runtime bench's measure of
/// the host's own cost for this component; it plans nothing and must never serve a tenant.
pub const DEFAULT_RULES_FLOOR: &str = env!("DEALBRIDGE_GUEST_DEFAULT_RULES_FLOOR");

/// The example plugin that resolves deal owners through the `crm` import
/// (`dealbridge-example-owner-lookup`), built against the frozen 0.1.0 contract
/// (`wit/compat/0.1.0`): the component that proves an older 0.1.x plugin keeps running.
pub const OWNER_LOOKUP: &str = env!("DEALBRIDGE_GUEST_OWNER_LOOKUP");

/// The hostile component (`dealbridge-hostile`, world `flat-plugin`): its plugin config chooses
/// the attack, e.g. `{"attack": "infinite-loop"}` (also `deep-recursion`, `memory-bomb`,
/// `huge-output`, `huge-log`, `trap`, `panic`, `crm-escape`, `request-flood`,
/// `wrong-outcome-count`, and on the flat path `flat-write-span-out-of-range`,
/// `flat-related-span-out-of-range`, `flat-field-index-out-of-table`; `{}` behaves).
pub const HOSTILE: &str = env!("DEALBRIDGE_GUEST_HOSTILE");

/// A hostile variant that imports `wasi:filesystem` (Rust `std::fs`): must be refused at load.
pub const HOSTILE_FILESYSTEM: &str = env!("DEALBRIDGE_GUEST_HOSTILE_FS");

/// A hostile variant that imports `wasi:sockets` (Rust `std::net::TcpStream`): must be refused
/// at load.
pub const HOSTILE_SOCKETS: &str = env!("DEALBRIDGE_GUEST_HOSTILE_SOCKETS");

/// A hostile variant that imports `wasi:http/handler@0.3.0-rc-2025-09-16` (a stand-in signature with
/// the real name): must be refused at load.
pub const HOSTILE_HTTP: &str = env!("DEALBRIDGE_GUEST_HOSTILE_HTTP");

/// A plain core WebAssembly module, not a component.
pub const INPUT_CORE_MODULE: &str = env!("DEALBRIDGE_INPUT_CORE_MODULE");

/// A component exporting `dealbridge:rules/rules@0.2.0`: a contract version mismatch.
pub const INPUT_WRONG_VERSION: &str = env!("DEALBRIDGE_INPUT_WRONG_VERSION");

/// A valid component of another world (exports `example:other/api@1.0.0` only).
pub const INPUT_WRONG_WORLD: &str = env!("DEALBRIDGE_INPUT_WRONG_WORLD");

/// A component of the rules world that imports nothing and spins in its start function: it
/// loads, and every invocation of it must end at the deadline.
pub const INPUT_SPIN_AT_START: &str = env!("DEALBRIDGE_INPUT_SPIN_AT_START");

/// A component of the rules world that imports nothing and, in its start function, copies
/// 8 MiB of its memory in a loop: a handful of instructions per 8 MiB, so only fuel charged
/// per byte copied makes the fuel limit stop it.
pub const INPUT_COPY_LOOP_AT_START: &str = env!("DEALBRIDGE_INPUT_COPY_LOOP_AT_START");

/// A component exporting `dealbridge:rules/rules@0.1.0` with the right function names but none
/// of the contract's types: it loads, and its first instance is refused.
pub const INPUT_WRONG_SIGNATURES: &str = env!("DEALBRIDGE_INPUT_WRONG_SIGNATURES");

/// A component of the `flat-plugin` world whose exports all have the contract's types except
/// `flat-rules.plan`, which returns a `u32`; its functions are stubs that trap. It loads, and
/// its first instance is refused, naming `flat-rules` and `plan`.
pub const INPUT_WRONG_FLAT_SIGNATURE: &str = env!("DEALBRIDGE_INPUT_WRONG_FLAT_SIGNATURE");

/// An empty file.
pub const INPUT_EMPTY: &str = env!("DEALBRIDGE_INPUT_EMPTY");

/// The default rules component cut short: a valid header followed by truncated sections.
pub const INPUT_TRUNCATED: &str = env!("DEALBRIDGE_INPUT_TRUNCATED");

/// The component-model header followed by bytes that form no valid section.
pub const INPUT_CORRUPT: &str = env!("DEALBRIDGE_INPUT_CORRUPT");

/// A shell script: not WebAssembly at all.
pub const INPUT_NOT_WASM: &str = env!("DEALBRIDGE_INPUT_NOT_WASM");

/// Every good component: `(name, path)`.
pub const COMPONENTS: &[(&str, &str)] = &[
    ("default-rules", DEFAULT_RULES),
    ("owner-lookup", OWNER_LOOKUP),
];

/// Every input that must be refused at load time: `(name, path)`.
pub const REFUSED_AT_LOAD: &[(&str, &str)] = &[
    ("hostile-filesystem", HOSTILE_FILESYSTEM),
    ("hostile-sockets", HOSTILE_SOCKETS),
    ("hostile-http", HOSTILE_HTTP),
    ("core-module", INPUT_CORE_MODULE),
    ("wrong-version", INPUT_WRONG_VERSION),
    ("wrong-world", INPUT_WRONG_WORLD),
    ("empty", INPUT_EMPTY),
    ("truncated", INPUT_TRUNCATED),
    ("corrupt", INPUT_CORRUPT),
    ("not-wasm", INPUT_NOT_WASM),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The component-model binary header: magic, version 0x0d, layer 1.
    const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn every_path_is_absolute_and_exists() {
        for (name, p) in COMPONENTS
            .iter()
            .chain(REFUSED_AT_LOAD)
            .chain(&[("hostile", HOSTILE)])
        {
            assert!(std::path::Path::new(p).is_absolute(), "{name}: {p}");
            assert!(std::path::Path::new(p).is_file(), "{name}: {p}");
        }
    }

    #[test]
    fn components_are_components_and_inputs_are_what_they_claim() {
        for p in [
            DEFAULT_RULES,
            DEFAULT_RULES_FLOOR,
            OWNER_LOOKUP,
            HOSTILE,
            HOSTILE_FILESYSTEM,
            HOSTILE_SOCKETS,
            HOSTILE_HTTP,
            INPUT_WRONG_VERSION,
            INPUT_WRONG_WORLD,
            INPUT_SPIN_AT_START,
            INPUT_COPY_LOOP_AT_START,
            INPUT_WRONG_SIGNATURES,
            INPUT_WRONG_FLAT_SIGNATURE,
        ] {
            assert!(bytes(p).starts_with(COMPONENT_HEADER), "{p}");
        }
        assert!(bytes(INPUT_CORE_MODULE).starts_with(b"\0asm\x01\x00\x00\x00"));
        assert!(bytes(INPUT_EMPTY).is_empty());
        assert!(bytes(INPUT_TRUNCATED).len() < bytes(DEFAULT_RULES).len());
        assert!(bytes(INPUT_CORRUPT).starts_with(COMPONENT_HEADER));
        assert!(!bytes(INPUT_NOT_WASM).starts_with(b"\0asm"));
    }

    /// Whether the component's bytes name an interface (import names are stored as plain text).
    fn mentions(path: &str, name: &str) -> bool {
        bytes(path)
            .windows(name.len())
            .any(|w| w == name.as_bytes())
    }

    #[test]
    fn forbidden_variants_import_what_they_claim_and_the_good_ones_do_not() {
        assert!(mentions(HOSTILE_FILESYSTEM, "wasi:filesystem/"));
        assert!(mentions(HOSTILE_SOCKETS, "wasi:sockets/"));
        assert!(mentions(
            HOSTILE_HTTP,
            "wasi:http/handler@0.3.0-rc-2025-09-16"
        ));
        for p in [DEFAULT_RULES, OWNER_LOOKUP, HOSTILE] {
            for forbidden in ["wasi:filesystem/", "wasi:sockets/", "wasi:http/"] {
                assert!(!mentions(p, forbidden), "{p} mentions {forbidden}");
            }
        }
        for p in [DEFAULT_RULES, HOSTILE] {
            assert!(mentions(p, "dealbridge:rules/rules@0.1.1"), "{p}");
        }
        // The example is built against the frozen 0.1.0 contract (`wit/compat/0.1.0`).
        assert!(mentions(OWNER_LOOKUP, "dealbridge:rules/rules@0.1.0"));
        for p in [DEFAULT_RULES, HOSTILE] {
            assert!(mentions(p, "dealbridge:rules/flat-rules@0.1.1"), "{p}");
        }
    }

    #[test]
    fn the_default_rules_import_no_wasi_and_the_other_guests_do() {
        assert!(!mentions(DEFAULT_RULES, "wasi:"), "{DEFAULT_RULES}");
        for p in [OWNER_LOOKUP, HOSTILE] {
            assert!(
                mentions(p, "wasi:cli/"),
                "{p} is no longer a wasm32-wasip2 component"
            );
        }
    }
}
