//! The engine's error type: what stops a cycle (as opposed to a record's failure, which is
//! stored as a sync error and retried). It must never carry a credential.

use crate::crm::ErrorClass;
use crate::crm::hubspot::HubSpotError;
use crate::crm::salesforce::SalesforceError;
use crate::runtime::{InvokeError, LoadError};
use crate::store::StoreError;

/// Why a cycle (or the set-up) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The tenant config is invalid or incomplete.
    #[error("config: {0}")]
    Config(String),
    /// A precondition of SYNC-SPEC.md does not hold (permission, cross-reference key...).
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// A Salesforce call failed for the whole cycle (capture, metadata).
    #[error(transparent)]
    Salesforce(#[from] SalesforceError),
    /// A HubSpot call failed for the whole cycle.
    #[error(transparent)]
    HubSpot(#[from] HubSpotError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rules component could not be loaded.
    #[error("plugin: {0}")]
    PluginLoad(#[from] LoadError),
    /// The rules component failed for a whole batch (describe, an invalid config).
    #[error("plugin: {0}")]
    Plugin(#[from] InvokeError),
    /// A test fault point fired (see `engine::FaultPoint`).
    #[error("injected fault at {0}")]
    Injected(&'static str),
}

impl SyncError {
    /// The CRM error class, when the cycle stopped on a CRM error.
    pub fn crm_class(&self) -> Option<ErrorClass> {
        match self {
            SyncError::Salesforce(e) => Some(e.class()),
            SyncError::HubSpot(e) => Some(e.class()),
            _ => None,
        }
    }
}
