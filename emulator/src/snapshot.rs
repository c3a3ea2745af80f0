//! The snapshot file of `dealbridge emulate --snapshot` (and
//! [`crate::EmulatorOptions::snapshot`]): both emulators' state in one JSON
//! document, `{"salesforce": <org>, "hubspot": <portal>}`, the same documents
//! that each emulator's `GET /__emulator/snapshot` returns.
//!
//! A file holding only a Salesforce org (the format before HubSpot was
//! included) still loads; HubSpot then starts from the seed.

use std::path::Path;

use serde_json::{Value, json};

use crate::hubspot::HubSpot;
use crate::salesforce::{self, Salesforce};

/// Why a snapshot file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("could not read snapshot {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("could not write snapshot {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid snapshot {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Both emulators' state, ready to serve.
pub struct Loaded {
    pub salesforce: Salesforce,
    /// `None` for a Salesforce-only file: start HubSpot from the seed.
    pub hubspot: Option<HubSpot>,
}

/// Reads a snapshot file. `seed` is what a loaded HubSpot portal resets to.
pub fn load(
    path: &Path,
    salesforce_config: salesforce::Config,
    seed: &crate::Seed,
) -> Result<Loaded, SnapshotError> {
    let shown = path.display().to_string();
    let invalid = |message: String| SnapshotError::Invalid {
        path: shown.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: shown.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let (org, portal) = match v.get("salesforce") {
        Some(org) => (org, v.get("hubspot")),
        None => (&v, None),
    };
    let salesforce = Salesforce::from_snapshot(org, salesforce_config)
        .map_err(|e| invalid(format!("salesforce: {e}")))?;
    let hubspot = match portal {
        Some(portal) => {
            let hubspot = HubSpot::new(seed);
            hubspot
                .load_snapshot(portal)
                .map_err(|e| invalid(format!("hubspot: {e}")))?;
            Some(hubspot)
        }
        None => None,
    };
    Ok(Loaded {
        salesforce,
        hubspot,
    })
}

/// Writes both emulators' state to `path`.
pub fn save(path: &Path, salesforce: &Salesforce, hubspot: &HubSpot) -> Result<(), SnapshotError> {
    let doc = json!({"salesforce": salesforce.snapshot(), "hubspot": hubspot.snapshot()});
    std::fs::write(path, doc.to_string()).map_err(|source| SnapshotError::Write {
        path: path.display().to_string(),
        source,
    })
}
