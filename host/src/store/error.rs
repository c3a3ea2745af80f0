//! The store's error type: one enum a caller can match on.
//!
//! It must never carry secrets (connection ciphertext, token hashes) in its messages.

use super::types::{ObjectPair, TenantId};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL has a scheme the store does not serve.
    #[error("unsupported store URL scheme `{0}` (expected `sqlite:` or `postgres:`)")]
    UnsupportedScheme(String),

    /// The database URL could not be parsed.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),

    /// The caller passed a value the store refuses (the message names it).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The caller's lease on the tenant is gone (expired and taken over, or released):
    /// nothing was written.
    #[error(
        "lease lost: tenant `{tenant}` is no longer leased by `{holder}` with fencing token {fencing_token}"
    )]
    LeaseLost {
        /// The tenant.
        tenant: TenantId,
        /// The holder that thought it held the lease.
        holder: String,
        /// The fencing token it presented.
        fencing_token: i64,
    },

    /// The tenant is disabled: no sync may run for it.
    #[error("tenant `{0}` is disabled")]
    TenantDisabled(TenantId),

    /// A row the caller named does not exist for this tenant.
    #[error("{what} `{id}` not found for tenant `{tenant}`")]
    NotFound {
        /// What kind of row.
        what: &'static str,
        /// Its id.
        id: String,
        /// The tenant that asked.
        tenant: TenantId,
    },

    /// A row with this key already exists.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// What kind of row.
        what: &'static str,
        /// Its id.
        id: String,
    },

    /// The batch would link a HubSpot record that is already linked to another
    /// Salesforce record. Nothing of the batch was written.
    #[error(
        "link conflict in {object_pair}: HubSpot `{hubspot_id}` is linked to Salesforce `{linked_salesforce_id}`, \
         the batch links it to `{salesforce_id}`"
    )]
    LinkConflict {
        /// The object pair.
        object_pair: ObjectPair,
        /// The Salesforce id in the batch.
        salesforce_id: String,
        /// The HubSpot id in the batch.
        hubspot_id: String,
        /// The Salesforce id it is already linked to.
        linked_salesforce_id: String,
    },

    /// Uploaded component bytes do not match the digest given for them.
    #[error("component digest mismatch: expected sha256 {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller named.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },

    /// A rollback was asked for but no earlier activation exists.
    #[error("nothing to roll back to for tenant `{0}`")]
    NothingToRollBack(TenantId),

    /// A value read from the database is not one the store writes (a corrupt or
    /// newer-schema row).
    #[error("corrupt {what} in the store: `{value}`")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The value found.
        value: String,
    },

    /// A JSON column could not be encoded or decoded.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),

    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The store's result type.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The lease presented is no longer held (expired and taken over, or released).
    pub(crate) fn lease_lost(lease: &super::Lease) -> Self {
        StoreError::LeaseLost {
            tenant: lease.tenant.clone(),
            holder: lease.holder.clone(),
            fencing_token: lease.fencing_token,
        }
    }
}
