//! Typed rows of the store: what the engine and the service read and write.
//!
//! These are plain data. They must never hold a secret in plaintext: CRM connections
//! are opaque ciphertext, API tokens are hashes chosen by the service.
//! All times are milliseconds since the Unix epoch (`i64`), supplied by the caller, so
//! the two backends behave identically and tests control the clock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::StoreError;

/// Milliseconds since the Unix epoch.
pub type TimestampMs = i64;

/// Generates a string-backed enum: `as_str`, `Display`, `FromStr` (a value the store
/// never writes is [`StoreError::Corrupt`]), serde as the same strings and the matching
/// OpenAPI schema (the service shows these values as they are).
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $s:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] $variant,)+
        }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// The value as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s,)+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        // By hand: the derive does not see `serde(rename)` through the macro's tokens.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("A ", $what, ".")))
                    .enum_values(Some([$($s,)+]))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt { what: $what, value: other.to_string() }),
                }
            }
        }
    };
}

/// A tenant id: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates and wraps a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Self, StoreError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(TenantId(id))
        } else {
            Err(StoreError::InvalidInput(format!(
                "tenant id `{id}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantId {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

string_enum!(
    /// A pair of object types that sync with each other (the WIT `object-pair`).
    ObjectPair, "object pair" {
        /// Salesforce Opportunity and HubSpot deal.
        OpportunityDeal => "opportunity_deal",
        /// Salesforce Account and HubSpot company.
        AccountCompany => "account_company",
        /// Salesforce Contact and HubSpot contact.
        ContactContact => "contact_contact",
    }
);

string_enum!(
    /// One of the two CRMs.
    Side, "side" {
        /// Salesforce.
        Salesforce => "salesforce",
        /// HubSpot.
        HubSpot => "hubspot",
    }
);

string_enum!(
    /// What a link currently means.
    LinkState, "link state" {
        /// Both records exist and sync.
        Active => "active",
        /// The HubSpot record was archived; the Salesforce record is kept.
        HubSpotArchived => "hubspot_archived",
        /// The Salesforce record was deleted (so the HubSpot record was archived).
        SalesforceDeleted => "salesforce_deleted",
        /// The pair no longer meets the sync condition (or left a synced pipeline).
        Unsynced => "unsynced",
    }
);

/// The link between one Salesforce record and one HubSpot record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The tenant.
    pub tenant: TenantId,
    /// Which object types.
    pub object_pair: ObjectPair,
    /// The Salesforce id (18 characters; the engine normalises it).
    pub salesforce_id: String,
    /// The HubSpot id.
    pub hubspot_id: String,
    /// What the link means now.
    pub state: LinkState,
    /// When the link was first committed.
    pub created_at_ms: TimestampMs,
    /// When it was last committed.
    pub updated_at_ms: TimestampMs,
}

/// The last-synced value of every mapped field on each side, for echo suppression
/// and for the sync rules (which side changed since the last sync).
///
/// Values are JSON as the engine gives them; exact decimals travel as JSON strings
/// (`"1234.50"`), never as floats.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Salesforce field name to value.
    pub salesforce: BTreeMap<String, Value>,
    /// HubSpot property name to value.
    pub hubspot: BTreeMap<String, Value>,
    /// When this snapshot was committed.
    pub synced_at_ms: TimestampMs,
}

string_enum!(
    /// Which change stream of a side a checkpoint follows.
    Stream, "checkpoint stream" {
        /// Created and updated records.
        Changes => "changes",
        /// Deleted or archived records.
        Deletes => "deletes",
    }
);

/// How far change capture has read one stream of one side: a `(time, id)` cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The object pair.
    pub object_pair: ObjectPair,
    /// The side read.
    pub side: Side,
    /// The stream read.
    pub stream: Stream,
    /// The modification time of the last record consumed.
    pub cursor_time_ms: TimestampMs,
    /// The id of the last record consumed at that time (tie-break).
    pub cursor_id: String,
}

string_enum!(
    /// Sync-health groups (SYNC-SPEC.md "Limits, errors and budgets").
    ErrorCategory, "error category" {
        /// Validation rules and required fields.
        Validation => "validation",
        /// Duplicate records.
        Duplicate => "duplicate",
        /// Missing permissions.
        Permission => "permission",
        /// A picklist or stage value with no match.
        PicklistMismatch => "picklist_mismatch",
        /// An association waiting for its account or contact to be linked.
        AssociationWaiting => "association_waiting",
        /// The tenant's plugin failed or returned an error.
        PluginError => "plugin_error",
        /// A rate limit or API budget was hit.
        RateLimit => "rate_limit",
        /// A CRM was unreachable or answered 5xx.
        CrmUnavailable => "crm_unavailable",
        /// Anything else.
        Other => "other",
    }
);

/// Which record an error or event is about: a side and that side's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// The side the id belongs to.
    pub side: Side,
    /// The record id on that side.
    pub id: String,
}

/// A failure to report or to retry (input of [`super::Store::record_error`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSyncError {
    /// The object pair.
    pub object_pair: ObjectPair,
    /// The failing record.
    pub record: RecordKey,
    /// The health group.
    pub category: ErrorCategory,
    /// A message for the tenant.
    pub message: String,
    /// Details (the CRM's error body, the planned write, ...).
    pub payload: Value,
}

/// A sync error as stored, with its retry state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncError {
    /// Row id (per store, unique across tenants).
    pub id: i64,
    /// The tenant.
    pub tenant: TenantId,
    /// The object pair.
    pub object_pair: ObjectPair,
    /// The failing record.
    pub record: RecordKey,
    /// The health group.
    pub category: ErrorCategory,
    /// The latest message.
    pub message: String,
    /// The latest details.
    pub payload: Value,
    /// How many times it failed since it was first seen (or last resolved).
    pub attempts: i64,
    /// First failure of this occurrence.
    pub first_seen_ms: TimestampMs,
    /// Latest failure.
    pub last_seen_ms: TimestampMs,
    /// When the retry is due; `None` when retries stopped or it is resolved.
    pub next_retry_at_ms: Option<TimestampMs>,
    /// When it was resolved; `None` while open.
    pub resolved_at_ms: Option<TimestampMs>,
}

/// Open errors of one health group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryHealth {
    /// The group.
    pub category: ErrorCategory,
    /// Open errors in it.
    pub open_errors: i64,
    /// Distinct records affected.
    pub affected_records: i64,
}

/// Keyset paging: rows strictly after `after` (an id) in the listing's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The last id of the previous page; `None` for the first page.
    pub after: Option<i64>,
    /// At most this many rows (1 to 1,000).
    pub limit: u32,
}

impl Page {
    /// The first page of `limit` rows.
    pub fn first(limit: u32) -> Self {
        Page { after: None, limit }
    }
}

/// When errors are retried: the delay after the n-th failure is `delays_ms[n-1]`,
/// the last delay repeating; after `max_attempts` (if set) retries stop and the
/// error waits for a person (it stays on the health view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySchedule {
    /// Delays in milliseconds; must not be empty.
    pub delays_ms: Vec<i64>,
    /// Stop automatic retries after this many failures.
    pub max_attempts: Option<i64>,
}

impl Default for RetrySchedule {
    /// 1 minute, 5 minutes, 15 minutes, then every 30 minutes (HubSpot's connector
    /// retries every 30 minutes), without end.
    fn default() -> Self {
        RetrySchedule {
            delays_ms: vec![60_000, 300_000, 900_000, 1_800_000],
            max_attempts: None,
        }
    }
}

impl RetrySchedule {
    /// When the next retry is due after failure number `attempts` (1-based) at `now`.
    pub fn next_retry(&self, attempts: i64, now_ms: TimestampMs) -> Option<TimestampMs> {
        if let Some(max) = self.max_attempts
            && attempts >= max
        {
            return None;
        }
        let last = self.delays_ms.len().checked_sub(1)?;
        let index = usize::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(last);
        Some(now_ms.saturating_add(self.delays_ms[index]))
    }
}

string_enum!(
    /// What started a run.
    RunTrigger, "run trigger" {
        /// The scheduler (the tenant was due).
        Scheduled => "scheduled",
        /// A person asked for a sync.
        Manual => "manual",
        /// An import or backfill of existing records.
        Backfill => "backfill",
        /// A resync of one record or a filtered set.
        Resync => "resync",
    }
);

string_enum!(
    /// How a run is going or ended.
    RunStatus, "run status" {
        /// Still running.
        Running => "running",
        /// Finished without record errors.
        Succeeded => "succeeded",
        /// Finished; some records failed (see errors).
        PartiallyFailed => "partially_failed",
        /// Stopped by an error before finishing.
        Failed => "failed",
        /// Its replica died or lost the lease; a later run took over.
        Abandoned => "abandoned",
    }
);

/// Counters of one run. Added to by [`CommitBatch::counters`] in the same transaction
/// as the batch, so a crash never counts a batch twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunCounters {
    /// Changed records read from Salesforce.
    pub read_salesforce: i64,
    /// Changed records read from HubSpot.
    pub read_hubspot: i64,
    /// Records created in Salesforce.
    pub created_salesforce: i64,
    /// Records created in HubSpot.
    pub created_hubspot: i64,
    /// Records updated in Salesforce.
    pub updated_salesforce: i64,
    /// Records updated in HubSpot.
    pub updated_hubspot: i64,
    /// HubSpot records archived because their Salesforce record was deleted.
    pub archived_hubspot: i64,
    /// Records skipped by the rules (excluded, up to date, unsynced pipeline).
    pub skipped: i64,
    /// Changes recognised as our own writes coming back.
    pub echoes_suppressed: i64,
    /// Records that failed.
    pub failed: i64,
    /// Salesforce API calls.
    pub api_calls_salesforce: i64,
    /// HubSpot API calls.
    pub api_calls_hubspot: i64,
}

impl RunCounters {
    /// Adds `other` to `self` field by field (saturating).
    pub fn add(&mut self, other: &RunCounters) {
        let RunCounters {
            read_salesforce,
            read_hubspot,
            created_salesforce,
            created_hubspot,
            updated_salesforce,
            updated_hubspot,
            archived_hubspot,
            skipped,
            echoes_suppressed,
            failed,
            api_calls_salesforce,
            api_calls_hubspot,
        } = other;
        self.read_salesforce = self.read_salesforce.saturating_add(*read_salesforce);
        self.read_hubspot = self.read_hubspot.saturating_add(*read_hubspot);
        self.created_salesforce = self.created_salesforce.saturating_add(*created_salesforce);
        self.created_hubspot = self.created_hubspot.saturating_add(*created_hubspot);
        self.updated_salesforce = self.updated_salesforce.saturating_add(*updated_salesforce);
        self.updated_hubspot = self.updated_hubspot.saturating_add(*updated_hubspot);
        self.archived_hubspot = self.archived_hubspot.saturating_add(*archived_hubspot);
        self.skipped = self.skipped.saturating_add(*skipped);
        self.echoes_suppressed = self.echoes_suppressed.saturating_add(*echoes_suppressed);
        self.failed = self.failed.saturating_add(*failed);
        self.api_calls_salesforce = self
            .api_calls_salesforce
            .saturating_add(*api_calls_salesforce);
        self.api_calls_hubspot = self.api_calls_hubspot.saturating_add(*api_calls_hubspot);
    }
}

/// One sync run of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Row id.
    pub id: i64,
    /// The tenant.
    pub tenant: TenantId,
    /// What started it.
    pub trigger: RunTrigger,
    /// Its status.
    pub status: RunStatus,
    /// The fencing token of the lease it ran under.
    pub fencing_token: i64,
    /// Start.
    pub started_at_ms: TimestampMs,
    /// End; `None` while running.
    pub finished_at_ms: Option<TimestampMs>,
    /// Counters.
    pub counters: RunCounters,
    /// Why it failed or was abandoned.
    pub message: Option<String>,
}

string_enum!(
    /// What happened to a record (per-record history).
    EventKind, "event kind" {
        /// The record was created on the target side and linked.
        Created => "created",
        /// Fields were written on the target side.
        Updated => "updated",
        /// The target record was archived or deleted.
        Deleted => "deleted",
        /// The pair stopped syncing.
        Unsynced => "unsynced",
        /// The rules skipped it.
        Skipped => "skipped",
        /// It failed (see the error).
        Failed => "failed",
    }
);

string_enum!(
    /// Which way a write went.
    Direction, "direction" {
        /// From Salesforce to HubSpot.
        SalesforceToHubSpot => "sf_to_hs",
        /// From HubSpot to Salesforce.
        HubSpotToSalesforce => "hs_to_sf",
        /// Not a write (skip, failure before writing).
        None => "none",
    }
);

/// A per-record history entry to append.
///
/// Idempotency rule: an event is identified by (object pair, kind, direction,
/// Salesforce id, HubSpot id, `source_version`). Appending an event whose identity
/// already exists is a no-op, so re-committing a batch after a crash never
/// duplicates history. `source_version` is the source record's own modification
/// stamp (SystemModstamp / hs_lastmodifieddate) that caused the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecordEvent {
    /// The object pair.
    pub object_pair: ObjectPair,
    /// The Salesforce id, when known.
    pub salesforce_id: Option<String>,
    /// The HubSpot id, when known.
    pub hubspot_id: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// Which way.
    pub direction: Direction,
    /// The source modification stamp that caused it.
    pub source_version: String,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// When it happened.
    pub at_ms: TimestampMs,
    /// Fields written (name to `{from, to}` or whatever the engine records).
    pub fields: Value,
    /// A message (skip reason, error text).
    pub message: Option<String>,
}

impl NewRecordEvent {
    /// The identity used for de-duplication (see the type's docs).
    pub fn dedup_key(&self) -> String {
        // Lengths prefix each part so distinct tuples never collide.
        let parts = [
            self.object_pair.as_str(),
            self.kind.as_str(),
            self.direction.as_str(),
            self.salesforce_id.as_deref().unwrap_or(""),
            self.hubspot_id.as_deref().unwrap_or(""),
            self.source_version.as_str(),
        ];
        let mut key = String::new();
        for p in parts {
            key.push_str(&p.len().to_string());
            key.push(':');
            key.push_str(p);
        }
        key
    }
}

/// A per-record history entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordEvent {
    /// Row id.
    pub id: i64,
    /// The tenant.
    pub tenant: TenantId,
    /// The event.
    pub event: NewRecordEvent,
}

/// A lease on one tenant's sync: only its holder may commit, and only while its
/// fencing token is the tenant's latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The tenant.
    pub tenant: TenantId,
    /// Who holds it (a replica's unique id).
    pub holder: String,
    /// Grows by one at every acquisition of this tenant's lease.
    pub fencing_token: i64,
    /// When it expires unless renewed.
    pub expires_at_ms: TimestampMs,
}

/// One acknowledged record of a batch: its link, its new snapshot and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedRecord {
    /// The Salesforce id.
    pub salesforce_id: String,
    /// The HubSpot id.
    pub hubspot_id: String,
    /// The link's state after this commit.
    pub state: LinkState,
    /// The full new snapshot (replaces the old one); `None` keeps the old one.
    pub snapshot: Option<Snapshot>,
    /// History entries (de-duplicated, see [`NewRecordEvent`]).
    pub events: Vec<NewRecordEvent>,
}

/// What the engine commits after the CRMs acknowledged a batch of writes: all of it in
/// one transaction, or none of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitBatch {
    /// Names this batch (e.g. `"<run id>:<batch number>"`), unique per tenant. A batch
    /// whose key was already committed changes nothing and reports
    /// [`CommitOutcome::already_committed`], so a retried commit never counts twice.
    pub batch_key: String,
    /// The lease the engine runs under; a stale lease makes the commit fail with
    /// [`StoreError::LeaseLost`].
    pub lease: Lease,
    /// The object pair of every record in the batch.
    pub object_pair: ObjectPair,
    /// The acknowledged records (at most one entry per Salesforce id and per HubSpot id).
    pub records: Vec<CommittedRecord>,
    /// Checkpoints to advance (a checkpoint never moves backwards: an older cursor is
    /// ignored).
    pub checkpoints: Vec<Checkpoint>,
    /// Counters to add to a run of this tenant.
    pub counters: Option<(i64, RunCounters)>,
    /// The commit time.
    pub now_ms: TimestampMs,
    /// Received HubSpot changes this batch dealt with: each object's rows up to
    /// `up_to_seq` are removed from the change feed with the links, so a change the batch
    /// read is settled exactly when what it wrote is committed.
    #[serde(default)]
    pub settled_hubspot_changes: Vec<SettledHubSpotChange>,
}

/// A change to a HubSpot record that a webhook delivered (see
/// [`crate::store::Store::record_hubspot_changes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHubSpotChange {
    /// HubSpot's event id (a redelivered event has the same one; HubSpot does not
    /// promise that different events have different ids, nor that ids grow with time).
    /// The store keeps ids up to `i64::MAX`.
    pub event_id: u64,
    /// The v3 object type: `deals`, `companies` or `contacts`.
    pub object_type: String,
    /// The record's id.
    pub object_id: String,
    /// `created`, `deleted` or `property` (a property change, or another change that
    /// calls for reading the record again, then with no property).
    pub kind: String,
    /// The changed property of a `property` change (`None` and `Some("")` are the
    /// same: no property).
    pub property: Option<String>,
    /// When the change happened in HubSpot.
    pub occurred_at_ms: TimestampMs,
    /// Who made it (`CRM_UI`, `INTEGRATION`, `IMPORT`, ...).
    pub change_source: String,
    /// The source's id (`userId:123`, an app id), when given.
    pub source_id: Option<String>,
}

/// A HubSpot record with received changes not settled yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHubSpotChange {
    /// The record's id.
    pub object_id: String,
    /// The largest store sequence number of its pending rows: settle up to this one
    /// ([`SettledHubSpotChange::up_to_seq`]); a change received later gets a larger one.
    pub last_seq: i64,
    /// When its newest pending change happened.
    pub last_occurred_at_ms: TimestampMs,
    /// Its latest pending change (by when it happened, then by arrival) is a deletion.
    pub deleted: bool,
}

/// Received changes of one HubSpot record that the engine has dealt with: its rows with a
/// store sequence number up to `up_to_seq` are removed (rows received later stay
/// pending, whatever HubSpot's event ids say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledHubSpotChange {
    /// The v3 object type.
    pub object_type: String,
    /// The record's id.
    pub object_id: String,
    /// The largest store sequence number dealt with ([`PendingHubSpotChange::last_seq`]).
    pub up_to_seq: i64,
}

/// What a commit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommitOutcome {
    /// The batch key had been committed before; nothing was written this time.
    pub already_committed: bool,
    /// New links.
    pub links_inserted: u64,
    /// Links whose HubSpot id or state changed.
    pub links_updated: u64,
    /// Links already exactly as committed.
    pub links_unchanged: u64,
    /// History rows added (duplicates are not counted).
    pub events_inserted: u64,
    /// Open errors of these records that were resolved.
    pub errors_resolved: u64,
    /// Checkpoints that moved forward.
    pub checkpoints_advanced: u64,
    /// Received HubSpot change events removed as settled.
    #[serde(default)]
    pub hubspot_changes_settled: u64,
}

/// A tenant of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// A display name.
    pub name: String,
    /// A disabled tenant never syncs and its tokens are refused.
    pub disabled: bool,
    /// Creation time.
    pub created_at_ms: TimestampMs,
}

/// A stored API token: the service hashes the secret; the store only keeps the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The public part of the token (names it; not secret).
    pub token_id: String,
    /// The hash of the secret part, in a format the service chooses (PHC string).
    pub hash: String,
    /// A label for people.
    pub label: String,
    /// Creation time.
    pub created_at_ms: TimestampMs,
    /// Revocation time; a revoked token is refused.
    pub revoked_at_ms: Option<TimestampMs>,
}

/// What a revoke or a disable took away, as announced to the other replicas (on
/// PostgreSQL a `NOTIFY` on [`crate::store::TOKENS_REVOKED_CHANNEL`]): one token, or every
/// token of a tenant (disabled or deleted). Carries ids only, never a secret or a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Every token of the tenant.
    Tenant(TenantId),
    /// One token.
    Token {
        /// Its tenant.
        tenant: TenantId,
        /// Its public id.
        token_id: String,
    },
}

impl Revoked {
    /// The notification payload: `<tenant>` or `<tenant>.<token id>` (a tenant id never
    /// holds a `.`).
    pub fn payload(&self) -> String {
        match self {
            Revoked::Tenant(t) => t.to_string(),
            Revoked::Token { tenant, token_id } => format!("{tenant}.{token_id}"),
        }
    }

    /// Reads a payload written by [`Revoked::payload`]; `None` if it is not one.
    pub fn from_payload(payload: &str) -> Option<Revoked> {
        match payload.split_once('.') {
            None => TenantId::new(payload).ok().map(Revoked::Tenant),
            Some((tenant, token_id)) if !token_id.is_empty() && !token_id.contains('.') => {
                Some(Revoked::Token {
                    tenant: TenantId::new(tenant).ok()?,
                    token_id: token_id.to_string(),
                })
            }
            Some(_) => None,
        }
    }
}

/// A CRM connection, encrypted by the service. The store never sees its plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedConnection {
    /// The id of the key that encrypted it (for key rotation).
    pub key_id: String,
    /// The sealed bytes (nonce and tag included, as the service's cipher lays them out).
    pub ciphertext: Vec<u8>,
    /// When it was stored.
    pub updated_at_ms: TimestampMs,
}

/// Where an uploaded plugin component lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentSource {
    /// The bytes are kept in the store; their sha256 is computed by the store.
    Bytes(Vec<u8>),
    /// The bytes live in a file; the caller vouches for their digest.
    Path {
        /// The file path.
        path: String,
        /// The sha256 of its bytes, 64 lowercase hex characters.
        sha256: String,
    },
}

/// A plugin version as stored (without its bytes; see [`super::Store::plugin_component`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// Row id.
    pub id: i64,
    /// The sha256 of the component, lowercase hex.
    pub sha256: String,
    /// A label for people (file name, git describe, ...).
    pub label: String,
    /// The path when the bytes are not in the store.
    pub component_path: Option<String>,
    /// The size in bytes when they are in the store.
    pub size_bytes: Option<i64>,
    /// Upload time.
    pub uploaded_at_ms: TimestampMs,
    /// Results of the rule tests run against it.
    pub test_results: Option<Value>,
    /// Whether it is the tenant's active version.
    pub active: bool,
}

/// One activation of a plugin version (or of the built-in default rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Row id.
    pub id: i64,
    /// The version activated; `None` means the built-in default rules.
    pub version_id: Option<i64>,
    /// The version that was active before; `None` means the default rules.
    pub previous_version_id: Option<i64>,
    /// The activation a rollback from this one returns to; `None` when there is
    /// nothing earlier.
    pub rollback_to: Option<i64>,
    /// Whether this activation was a rollback.
    pub is_rollback: bool,
    /// Who did it.
    pub actor: String,
    /// When.
    pub activated_at_ms: TimestampMs,
}

/// A rule-test fixture attached to a plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFixture {
    /// Row id.
    pub id: i64,
    /// The version it belongs to.
    pub version_id: i64,
    /// A unique name within the version.
    pub name: String,
    /// The input given to the plugin.
    pub input: Value,
    /// The expected output.
    pub expected: Value,
    /// Creation time.
    pub created_at_ms: TimestampMs,
}

/// The report of one plugin invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationReport {
    /// Row id.
    pub id: i64,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// The plugin version invoked (`None`: built-in default rules).
    pub version_id: Option<i64>,
    /// When.
    pub at_ms: TimestampMs,
    /// The report (fuel, memory, duration, logs, decisions).
    pub report: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_payloads_round_trip_and_refuse_anything_else() {
        let t = TenantId::new("acme-1").unwrap();
        for r in [
            Revoked::Tenant(t.clone()),
            Revoked::Token {
                tenant: t.clone(),
                token_id: "0123abcd".into(),
            },
        ] {
            assert_eq!(Revoked::from_payload(&r.payload()), Some(r));
        }
        for bad in ["", "a b", "acme.", "acme.x.y", ".x"] {
            assert_eq!(Revoked::from_payload(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tenant_id_rejects_bad_input() {
        assert!(TenantId::new("acme-1_B").is_ok());
        for bad in ["", "a b", "x'; drop", &"a".repeat(65), "é"] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidInput(_)), "{bad:?}");
        }
    }

    #[test]
    fn enums_round_trip_and_reject_unknown() {
        for c in ErrorCategory::ALL {
            assert_eq!(c.as_str().parse::<ErrorCategory>().unwrap(), *c);
        }
        for s in LinkState::ALL {
            assert_eq!(s.as_str().parse::<LinkState>().unwrap(), *s);
        }
        let err = "nope".parse::<Side>().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { what: "side", .. }));
    }

    #[test]
    fn retry_schedule_steps_then_repeats_then_stops() {
        let s = RetrySchedule {
            delays_ms: vec![10, 100],
            max_attempts: Some(4),
        };
        assert_eq!(s.next_retry(1, 1000), Some(1010));
        assert_eq!(s.next_retry(2, 1000), Some(1100));
        assert_eq!(s.next_retry(3, 1000), Some(1100));
        assert_eq!(s.next_retry(4, 1000), None);
        let empty = RetrySchedule {
            delays_ms: vec![],
            max_attempts: None,
        };
        assert_eq!(empty.next_retry(1, 0), None);
    }

    #[test]
    fn dedup_key_separates_fields() {
        let mut a = NewRecordEvent {
            object_pair: ObjectPair::OpportunityDeal,
            salesforce_id: Some("a".into()),
            hubspot_id: Some("bc".into()),
            kind: EventKind::Updated,
            direction: Direction::SalesforceToHubSpot,
            source_version: "1".into(),
            run_id: None,
            at_ms: 0,
            fields: Value::Null,
            message: None,
        };
        let k1 = a.dedup_key();
        a.salesforce_id = Some("ab".into());
        a.hubspot_id = Some("c".into());
        assert_ne!(k1, a.dedup_key());
    }

    #[test]
    fn counters_add() {
        let mut a = RunCounters {
            created_hubspot: 2,
            ..Default::default()
        };
        a.add(&RunCounters {
            created_hubspot: 3,
            skipped: 1,
            ..Default::default()
        });
        assert_eq!(a.created_hubspot, 5);
        assert_eq!(a.skipped, 1);
    }
}

/// A tenant's sync schedule and the state of its lease, as the scheduler keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJob {
    /// The tenant.
    pub tenant: TenantId,
    /// Time between the end of one scheduled run and the next.
    pub interval_ms: i64,
    /// A paused tenant is never picked by the scheduler (a run going on finishes).
    pub paused: bool,
    /// When the next run is due.
    pub next_due_at_ms: TimestampMs,
    /// A run was asked for (sync now, resync) since the current run was leased; the
    /// end of that run leaves the tenant due at once.
    pub run_requested: bool,
    /// Sync now was asked for and no scheduler has leased the tenant since.
    pub sync_now_requested: bool,
    /// The scheduler took the current (or latest) lease for a sync now: its run is
    /// recorded as [`RunTrigger::Manual`].
    pub leased_for_sync_now: bool,
    /// Runs in a row that failed (0 after a success); the scheduler backs off on it.
    pub consecutive_failures: i64,
    /// The config given to the tenant's rules plugin (a JSON object; `{}` by default).
    pub plugin_config: Value,
    /// Who holds the lease, if anyone (it may have expired).
    pub lease_holder: Option<String>,
    /// When that lease expires.
    pub lease_expires_at_ms: Option<TimestampMs>,
    /// The fencing token of the latest lease.
    pub fencing_token: i64,
}

/// What a resync asked for over the API covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResyncRequest {
    /// Every record of every synced pair.
    All,
    /// Records of one pair, by their ids on one side.
    Records {
        /// The pair.
        object_pair: ObjectPair,
        /// The side the ids belong to.
        side: Side,
        /// The ids (1 to 100).
        ids: Vec<String>,
    },
}

/// A resync waiting for (or done by) the replica that runs the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingResync {
    /// Row id.
    pub id: i64,
    /// What it covers.
    pub request: ResyncRequest,
    /// When it was asked for.
    pub requested_at_ms: TimestampMs,
    /// When a run finished it; `None` while pending.
    pub done_at_ms: Option<TimestampMs>,
    /// The run that did it (none when it failed before a run started).
    pub run_id: Option<i64>,
    /// How it ended (`succeeded`, `partially_failed`, `failed: ...`).
    pub outcome: Option<String>,
}
