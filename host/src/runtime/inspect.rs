//! Checks of a component before and after compilation: size, magic, core
//! module vs component (the header's layer), and the world: the export of
//! `dealbridge:rules/rules@0.1.x` (and whether it also exports
//! `dealbridge:rules/flat-rules`, the world `flat-plugin`) and no import
//! outside the world.
//!
//! Everything here runs before a single guest instruction does; it must
//! never instantiate anything.

use serde::Serialize;
use wasmparser::{Encoding, Parser};

use super::error::LoadError;
use super::wasi;

/// The contract's package and the versions this host accepts.
pub const CONTRACT_PACKAGE: &str = "dealbridge:rules";
/// The export a plugin must have (any `0.1.x`).
pub const RULES_EXPORT: &str = "dealbridge:rules/rules";
/// The export of a plugin that also plans over the flat form of a batch (since 0.1.1).
pub const FLAT_RULES_EXPORT: &str = "dealbridge:rules/flat-rules";
/// The contract version of this host.
pub const CONTRACT_VERSION: &str = "0.1.1";

/// Checks the raw bytes: not empty, not too large, the magic, a component.
pub fn check_header(bytes: &[u8], max_bytes: u64) -> Result<(), LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    if bytes.len() as u64 > max_bytes {
        return Err(LoadError::TooLarge {
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    if Parser::is_core_wasm(bytes) {
        return Err(LoadError::CoreModule);
    }
    if Parser::is_component(bytes) {
        return Ok(());
    }
    Err(LoadError::UnknownHeader { version, layer })
}

/// Which kind of WebAssembly the bytes are, if any (for messages).
pub fn encoding(bytes: &[u8]) -> Option<Encoding> {
    if Parser::is_component(bytes) {
        Some(Encoding::Component)
    } else if Parser::is_core_wasm(bytes) {
        Some(Encoding::Module)
    } else {
        None
    }
}

/// What a component imports and exports, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorldInfo {
    /// The contract version the component was built against (from its
    /// `dealbridge:rules/rules@X` export).
    pub contract_version: String,
    /// Every import, by name with version.
    pub imports: Vec<String>,
    /// Every export, by name with version.
    pub exports: Vec<String>,
    /// Whether it exports `flat-rules` (the world `flat-plugin`): the host
    /// then plans on the flat form of a batch.
    pub flat_rules: bool,
}

impl WorldInfo {
    /// The world the component targets: `flat-plugin` or `plugin`.
    pub fn world_name(&self) -> &'static str {
        if self.flat_rules {
            "flat-plugin"
        } else {
            "plugin"
        }
    }
}

/// Checks the names of a compiled component's imports and exports.
pub fn check_world(imports: Vec<String>, exports: Vec<String>) -> Result<WorldInfo, LoadError> {
    let rules = exports
        .iter()
        .find(|e| e.split('@').next() == Some(RULES_EXPORT));
    let Some(rules) = rules else {
        return Err(LoadError::WrongWorld { exports });
    };
    let version = rules
        .split_once('@')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    if !version.starts_with("0.1.") {
        return Err(LoadError::WrongVersion {
            found: rules.clone(),
        });
    }
    // A contract import or export of another version is a version mismatch, not a stray one.
    if let Some(other) = imports.iter().chain(&exports).find(|i| {
        i.starts_with(CONTRACT_PACKAGE)
            && !i
                .split_once('@')
                .is_some_and(|(_, v)| v.starts_with("0.1."))
    }) {
        return Err(LoadError::WrongVersion {
            found: other.clone(),
        });
    }
    let refused: Vec<String> = imports
        .iter()
        .filter(|i| !wasi::import_allowed(i))
        .cloned()
        .collect();
    if !refused.is_empty() {
        return Err(LoadError::ForbiddenImports { imports: refused });
    }
    let flat_rules = exports
        .iter()
        .any(|e| e.split('@').next() == Some(FLAT_RULES_EXPORT));
    Ok(WorldInfo {
        contract_version: version,
        imports,
        exports,
        flat_rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_problem() {
        assert!(matches!(check_header(b"", 100), Err(LoadError::Empty)));
        assert!(matches!(
            check_header(b"hello world", 100),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0as", 100),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(&[0u8; 200], 100),
            Err(LoadError::TooLarge {
                size: 200,
                max: 100
            })
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0", 100),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0", 100).is_ok());
        assert!(matches!(
            check_header(b"\0asm\x0d\0\x07\0", 100),
            Err(LoadError::UnknownHeader {
                version: 0xd,
                layer: 7
            })
        ));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn world_checks() {
        let ok = check_world(
            names(&["dealbridge:rules/log@0.1.0", "wasi:cli/stderr@0.2.6"]),
            names(&["dealbridge:rules/rules@0.1.0"]),
        )
        .unwrap();
        assert_eq!(ok.contract_version, "0.1.0");
        assert!(!ok.flat_rules);
        assert_eq!(ok.world_name(), "plugin");

        let flat = check_world(
            names(&["dealbridge:rules/flat-types@0.1.1"]),
            names(&[
                "dealbridge:rules/rules@0.1.1",
                "dealbridge:rules/flat-rules@0.1.1",
            ]),
        )
        .unwrap();
        assert_eq!(flat.contract_version, CONTRACT_VERSION);
        assert!(flat.flat_rules);
        assert_eq!(flat.world_name(), "flat-plugin");

        let err = check_world(
            vec![],
            names(&[
                "dealbridge:rules/rules@0.1.1",
                "dealbridge:rules/flat-rules@0.2.0",
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, LoadError::WrongVersion { found } if found == "dealbridge:rules/flat-rules@0.2.0"),
            "{err}"
        );

        let err = check_world(vec![], names(&["wasi:cli/run@0.2.0"])).unwrap_err();
        assert!(matches!(err, LoadError::WrongWorld { .. }));
        assert!(err.to_string().contains("wasi:cli/run@0.2.0"), "{err}");

        let err = check_world(vec![], names(&["dealbridge:rules/rules@0.2.0"])).unwrap_err();
        assert!(
            err.to_string().contains("dealbridge:rules/rules@0.2.0"),
            "{err}"
        );

        let err = check_world(
            names(&["dealbridge:rules/crm@0.3.0"]),
            names(&["dealbridge:rules/rules@0.1.0"]),
        )
        .unwrap_err();
        assert!(matches!(err, LoadError::WrongVersion { .. }), "{err}");

        let err = check_world(
            names(&[
                "wasi:filesystem/types@0.2.6",
                "wasi:sockets/tcp@0.2.6",
                "wasi:io/poll@0.2.6",
            ]),
            names(&["dealbridge:rules/rules@0.1.0"]),
        )
        .unwrap_err();
        match err {
            LoadError::ForbiddenImports { imports } => {
                assert_eq!(
                    imports,
                    names(&["wasi:filesystem/types@0.2.6", "wasi:sockets/tcp@0.2.6"])
                )
            }
            other => panic!("{other}"),
        }
    }
}
