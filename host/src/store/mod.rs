//! The store: all durable state of dealbridge, behind one [`Store`] trait with two
//! backends, SQLite (one file, the embedded default) and PostgreSQL (several
//! `dealbridge serve` replicas on one database).
//!
//! What it keeps, per tenant: links between Salesforce and HubSpot records, the
//! last-synced per-field snapshot of each link, change-capture checkpoints, sync
//! errors with their retry schedule, run history with counters, per-record history,
//! and for the service: tenants, hashed API tokens, encrypted CRM connections, plugin
//! versions with their activation history, rule-test fixtures and invocation reports.
//! The schema lives in `host/migrations/{sqlite,postgres}/` and is compiled into the
//! binary; [`open`] runs it.
//!
//! Crash safety: the engine writes the result of a batch with [`Store::commit_batch`],
//! one transaction holding the links, snapshots, history, error resolutions, checkpoint
//! advances and run counters of the writes the CRMs acknowledged, and the HubSpot changes
//! (received by webhook, [`Store::record_hubspot_changes`]) the batch dealt with. Committing the same
//! batch again (after a crash before the engine learnt that the commit succeeded) changes
//! nothing further: links are unique per `(tenant, object pair, Salesforce id)` and per
//! `(tenant, object pair, HubSpot id)`, history rows are de-duplicated by
//! [`NewRecordEvent::dedup_key`], checkpoints only move forward, and counters are added
//! only by a commit that happened.
//!
//! Scale-out: a tenant's sync runs under a [`Lease`] (holder, expiry, fencing token).
//! PostgreSQL picks due tenants with `FOR UPDATE SKIP LOCKED`; SQLite's single writer
//! makes a conditional `UPDATE` enough. Every state-changing call of the engine
//! presents its lease; a holder whose lease was taken over gets [`StoreError::LeaseLost`]
//! and writes nothing.
//!
//! What the store must never do:
//! - mark a record synced (write a link or snapshot) other than through a commit by the
//!   engine of writes the CRM acknowledged;
//! - return or touch another tenant's rows: every method takes the tenant (or a lease
//!   naming it) and every statement filters on it; rows reference each other by
//!   `(tenant_id, id)` so even a wrong id cannot cross tenants;
//! - see a CRM credential in plaintext (connections are opaque ciphertext) or an API
//!   token (only the service's hashes);
//! - move a checkpoint backwards except through an explicit, fenced reset.
//!
//! Why a trait object (`Arc<dyn Store>`) and not an enum: the engine and the service
//! hold the store without knowing the backend, tests and fakes can implement it, and
//! adding a backend does not touch callers. The cost (one boxed future per call) is
//! nothing next to a database round trip. Both backends compile the same statements
//! from one source file (`sql_common.rs`, included into each backend module with its own
//! `Db` type), so their behaviour cannot drift; only connection setup, the transaction
//! start and the due-tenant pick differ.

mod error;
mod postgres;
mod sqlite;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use error::{StoreError, StoreResult};
pub use postgres::{PostgresStore, RUN_REQUESTED_CHANNEL, TOKENS_REVOKED_CHANNEL};
pub use sqlite::SqliteStore;
pub use types::*;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Settings of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// When failed records are retried.
    pub retry: RetrySchedule,
    /// The size of the connection pool.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retry: RetrySchedule::default(),
            max_connections: 8,
        }
    }
}

impl StoreConfig {
    pub(crate) fn validate(&self) -> StoreResult<()> {
        if self.retry.delays_ms.is_empty() || self.retry.delays_ms.iter().any(|d| *d <= 0) {
            return Err(StoreError::InvalidInput(
                "retry schedule needs at least one delay, all positive".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(StoreError::InvalidInput(
                "max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Opens the store named by `url` with default settings and runs the migrations.
///
/// `sqlite://path/to/file.db?mode=rwc` (or `sqlite:...`) opens SQLite;
/// `postgres://...` or `postgresql://...` opens PostgreSQL.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, StoreConfig::default()).await
}

/// [`open`] with explicit settings.
pub async fn open_with(url: &str, config: StoreConfig) -> StoreResult<Arc<dyn Store>> {
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .ok_or_else(|| StoreError::InvalidUrl("missing `scheme:`".into()))?;
    match scheme.as_str() {
        "sqlite" => Ok(Arc::new(SqliteStore::open(url, config).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::open(url, config).await?)),
        other => Err(StoreError::UnsupportedScheme(other.to_string())),
    }
}

/// Durable state of dealbridge. See the module docs for the guarantees.
///
/// Every method is scoped to one tenant (by a [`TenantId`] or a [`Lease`]), except
/// [`Store::acquire_next_due_tenant`], which picks the tenant and returns only its lease.
/// Times are caller-supplied milliseconds since the Unix epoch.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which database this is.
    fn backend(&self) -> Backend;

    // ---- tenants and their credentials ----

    /// Creates a tenant (due for sync at once). [`StoreError::AlreadyExists`] if the id is taken.
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Tenant>;
    /// The tenant, if it exists.
    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    /// Admin only (the service's operator, never a tenant's request): every tenant, by
    /// ascending id, strictly after `after`, at most `limit` (1 to 1,000). The one
    /// cross-tenant listing; it returns tenant rows only, nothing they own.
    async fn list_tenants(&self, after: Option<&TenantId>, limit: u32) -> StoreResult<Vec<Tenant>>;
    /// Disables or enables a tenant. A disabled tenant is never leased. A disable is
    /// announced to the other replicas (on PostgreSQL, `NOTIFY` on
    /// [`TOKENS_REVOKED_CHANNEL`]) so they forget the tenant's tokens at once.
    async fn set_tenant_disabled(&self, id: &TenantId, disabled: bool) -> StoreResult<()>;
    /// Deletes a tenant and every row it owns. Returns whether it existed. Announced like
    /// a disable.
    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool>;
    /// Stores an API token's hash. [`StoreError::AlreadyExists`] if the token id is taken.
    async fn add_api_token(&self, tenant: &TenantId, token: &ApiToken) -> StoreResult<()>;
    /// The token named `token_id`, revoked or not.
    async fn api_token(&self, tenant: &TenantId, token_id: &str) -> StoreResult<Option<ApiToken>>;
    /// Revokes a token. Returns whether an unrevoked token was revoked. A revoke is
    /// announced to the other replicas like a disable.
    async fn revoke_api_token(
        &self,
        tenant: &TenantId,
        token_id: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<bool>;
    /// Stores (replaces) the encrypted connection to one CRM.
    async fn put_connection(
        &self,
        tenant: &TenantId,
        crm: Side,
        connection: &EncryptedConnection,
    ) -> StoreResult<()>;
    /// The encrypted connection to one CRM.
    async fn connection(
        &self,
        tenant: &TenantId,
        crm: Side,
    ) -> StoreResult<Option<EncryptedConnection>>;
    /// Replaces the sealed bytes and key id of a stored connection, but only if it is
    /// still exactly `expected` (so a connection written meanwhile is never overwritten
    /// by an older one sealed again); its `updated_at_ms` stays. Returns whether it was
    /// replaced. For key rotation: the plaintext must be unchanged.
    async fn reseal_connection(
        &self,
        tenant: &TenantId,
        crm: Side,
        expected: &EncryptedConnection,
        key_id: &str,
        ciphertext: &[u8],
    ) -> StoreResult<bool>;
    /// Deletes a connection. Returns whether it existed.
    async fn delete_connection(&self, tenant: &TenantId, crm: Side) -> StoreResult<bool>;

    // ---- leases and scheduling ----

    /// Takes the tenant's lease if nobody holds it or the holder's lease expired at
    /// `now_ms`; `None` if someone else holds it. The fencing token grows by one.
    async fn try_acquire_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Option<Lease>>;
    /// Takes the lease of the enabled, unpaused tenant whose sync has been due longest and
    /// that nobody holds (or whose lease expired), and clears its `run_requested`; a
    /// pending sync now (`sync_now_requested`) becomes `leased_for_sync_now`. Its due time
    /// becomes `now_ms`, so a run asked for while this one goes on is due from this run's
    /// start, never from before it: a tenant that asks for a run during each of its runs
    /// cannot keep an old due time and go before tenants that became due meanwhile (and
    /// a holder that dies leaves the tenant due). `None` if there is none.
    async fn acquire_next_due_tenant(
        &self,
        holder: &str,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Option<Lease>>;
    /// Extends a lease still held (same holder and fencing token) to `now_ms + ttl_ms`.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Lease>;
    /// Gives a lease up, optionally setting when the tenant is next due.
    async fn release_lease(
        &self,
        lease: &Lease,
        next_due_at_ms: Option<TimestampMs>,
    ) -> StoreResult<()>;
    /// Sets when the tenant's sync is next due (e.g. `now` for "sync now").
    async fn schedule_sync(&self, tenant: &TenantId, due_at_ms: TimestampMs) -> StoreResult<()>;
    /// The tenant's schedule and lease state.
    async fn sync_job(&self, tenant: &TenantId) -> StoreResult<Option<SyncJob>>;
    /// Sets the time between runs (positive). A tenant due later than `now_ms +
    /// interval_ms` becomes due then, so a shorter interval takes effect at once.
    async fn set_sync_interval(
        &self,
        tenant: &TenantId,
        interval_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<SyncJob>;
    /// Pauses or resumes the tenant's scheduled runs. A resume is announced to the other
    /// replicas like a run request (on PostgreSQL, `NOTIFY`), as it may make the tenant
    /// due at once.
    async fn set_sync_paused(&self, tenant: &TenantId, paused: bool) -> StoreResult<SyncJob>;
    /// Sets the config given to the tenant's rules plugin (a JSON object).
    async fn set_plugin_config(&self, tenant: &TenantId, config: &Value) -> StoreResult<SyncJob>;
    /// Asks for a run as soon as possible (sync now): the tenant is due at `now_ms` and,
    /// if a run is going on, stays due when that run ends; the scheduler's lease for it
    /// is marked `leased_for_sync_now`.
    async fn request_sync(&self, tenant: &TenantId, now_ms: TimestampMs) -> StoreResult<SyncJob>;
    /// Ends a scheduler's run: gives the lease up, records the run of failures in a row,
    /// and makes the tenant due at `next_due_at_ms`, or at once when a run was asked for
    /// meanwhile. [`StoreError::LeaseLost`] if the lease is stale (nothing changes).
    async fn finish_job(
        &self,
        lease: &Lease,
        next_due_at_ms: TimestampMs,
        consecutive_failures: i64,
    ) -> StoreResult<()>;

    // ---- resyncs asked for over the API ----

    /// Stores a resync for whichever replica next runs the tenant and asks for a run.
    async fn request_resync(
        &self,
        tenant: &TenantId,
        request: &ResyncRequest,
        now_ms: TimestampMs,
    ) -> StoreResult<PendingResync>;
    /// Resyncs not done yet, oldest first, at most `limit` (1 to 1,000).
    async fn pending_resyncs(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> StoreResult<Vec<PendingResync>>;
    /// One resync, done or not.
    async fn resync_request(
        &self,
        tenant: &TenantId,
        id: i64,
    ) -> StoreResult<Option<PendingResync>>;
    /// Marks a pending resync done under the tenant's lease. Returns whether it was
    /// pending; [`StoreError::LeaseLost`] if the lease is stale.
    async fn complete_resync(
        &self,
        lease: &Lease,
        id: i64,
        run_id: Option<i64>,
        outcome: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<bool>;

    // ---- links, snapshots, the batch commit ----

    /// Links of the given Salesforce ids (one query per 500 ids; missing ids are absent).
    async fn links_by_salesforce_ids(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        ids: &[String],
    ) -> StoreResult<Vec<Link>>;
    /// Links of the given HubSpot ids.
    async fn links_by_hubspot_ids(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        ids: &[String],
    ) -> StoreResult<Vec<Link>>;
    /// One page of a pair's links (every state) in Salesforce-id order: those whose
    /// Salesforce id sorts after `after` (`None`: from the first), at most `limit`
    /// (1 to 1,000). Keyset paging, so links added or removed meanwhile never shift a page.
    async fn links(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Link>>;
    /// Snapshots of the links of the given Salesforce ids, keyed by Salesforce id.
    async fn snapshots(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        salesforce_ids: &[String],
    ) -> StoreResult<HashMap<String, Snapshot>>;
    /// Commits a batch of acknowledged writes in one transaction (see [`CommitBatch`]).
    /// Fails with [`StoreError::LeaseLost`] (writing nothing) if the batch's lease is stale,
    /// with [`StoreError::LinkConflict`] if a HubSpot id is linked to another record.
    async fn commit_batch(
        &self,
        tenant: &TenantId,
        batch: &CommitBatch,
    ) -> StoreResult<CommitOutcome>;

    // ---- the HubSpot change feed ----

    /// Stores changes that a webhook delivered, in one transaction, each with a new store
    /// sequence number larger than any given before. Idempotent: an event already stored
    /// (a redelivery: same event id, object, time, kind and property) inserts nothing,
    /// while a different event that shares an event id is stored. A change this store
    /// cannot keep (a kind other than `created`, `deleted`, `property`, no object type or
    /// id, an event id over `i64::MAX`) is left out rather than failing the others.
    /// Returns the rows inserted. Not fenced: these are input to the sync, not its state.
    async fn record_hubspot_changes(
        &self,
        tenant: &TenantId,
        changes: &[NewHubSpotChange],
        received_at_ms: TimestampMs,
    ) -> StoreResult<u64>;
    /// The records of one object type with pending changes, one row per record, the
    /// record whose oldest pending row has the smallest sequence number (arrived first)
    /// first, at most `limit` (1 to 1,000). A record is `deleted` when its latest pending
    /// change (by time, then sequence number) is a deletion.
    async fn pending_hubspot_changes(
        &self,
        tenant: &TenantId,
        object_type: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingHubSpotChange>>;
    /// How many changes (events) are pending, of every object type.
    async fn pending_hubspot_change_count(&self, tenant: &TenantId) -> StoreResult<u64>;
    /// Settles changes outside a batch commit (records the engine does not sync): each
    /// record's rows up to its `up_to_seq` are removed. Fenced by the lease
    /// ([`StoreError::LeaseLost`], removing nothing, if it is stale). Returns the rows
    /// removed.
    async fn settle_hubspot_changes(
        &self,
        lease: &Lease,
        settled: &[SettledHubSpotChange],
    ) -> StoreResult<u64>;

    // ---- checkpoints ----

    /// The checkpoint of one stream.
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        side: Side,
        stream: Stream,
    ) -> StoreResult<Option<Checkpoint>>;
    /// Forgets a checkpoint (a full resync reads from the beginning). Fenced.
    async fn reset_checkpoint(
        &self,
        lease: &Lease,
        pair: ObjectPair,
        side: Side,
        stream: Stream,
    ) -> StoreResult<bool>;

    // ---- errors and sync health ----

    /// Records a failure: a new open error, or one more attempt of the open error with the
    /// same (pair, record, category); a resolved one reopens with attempts = 1. The next
    /// retry follows the store's [`RetrySchedule`].
    async fn record_error(
        &self,
        tenant: &TenantId,
        error: &NewSyncError,
        now_ms: TimestampMs,
    ) -> StoreResult<SyncError>;
    /// Open errors whose retry is due at `now_ms`, oldest due first.
    async fn due_errors(
        &self,
        tenant: &TenantId,
        now_ms: TimestampMs,
        limit: u32,
    ) -> StoreResult<Vec<SyncError>>;
    /// Resolves an error by id. Returns whether an open error was resolved.
    async fn resolve_error(
        &self,
        tenant: &TenantId,
        error_id: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<bool>;
    /// Open errors counted by health group.
    async fn health_summary(&self, tenant: &TenantId) -> StoreResult<Vec<CategoryHealth>>;
    /// Open errors, optionally of one group, by ascending id.
    async fn open_errors(
        &self,
        tenant: &TenantId,
        category: Option<ErrorCategory>,
        page: Page,
    ) -> StoreResult<Vec<SyncError>>;

    // ---- runs ----

    /// Starts a run under a lease; runs of the tenant still marked running (their
    /// replica died) become [`RunStatus::Abandoned`].
    async fn start_run(
        &self,
        lease: &Lease,
        trigger: RunTrigger,
        now_ms: TimestampMs,
    ) -> StoreResult<Run>;
    /// Adds counters to a run (outside a batch commit, e.g. API calls of a failed batch).
    async fn add_run_counters(
        &self,
        tenant: &TenantId,
        run_id: i64,
        counters: &RunCounters,
    ) -> StoreResult<()>;
    /// Ends a running run.
    async fn finish_run(
        &self,
        tenant: &TenantId,
        run_id: i64,
        status: RunStatus,
        message: Option<&str>,
        now_ms: TimestampMs,
    ) -> StoreResult<Run>;
    /// One run.
    async fn run(&self, tenant: &TenantId, run_id: i64) -> StoreResult<Option<Run>>;
    /// Runs, newest first (`page.after` is the last id of the previous page).
    async fn runs(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Run>>;

    // ---- per-record history ----

    /// Appends history outside a batch (skips, failures). Returns how many were new.
    async fn append_events(&self, tenant: &TenantId, events: &[NewRecordEvent])
    -> StoreResult<u64>;
    /// History of one record, newest first.
    async fn record_history(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        record: &RecordKey,
        page: Page,
    ) -> StoreResult<Vec<RecordEvent>>;

    // ---- plugins ----

    /// Stores a plugin version; uploading the same digest again returns the existing one.
    async fn add_plugin_version(
        &self,
        tenant: &TenantId,
        source: &ComponentSource,
        label: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<PluginVersion>;
    /// One plugin version (without bytes).
    async fn plugin_version(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Option<PluginVersion>>;
    /// All plugin versions, newest first.
    async fn plugin_versions(&self, tenant: &TenantId) -> StoreResult<Vec<PluginVersion>>;
    /// The component bytes when the store keeps them.
    async fn plugin_component(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Option<Vec<u8>>>;
    /// Records the results of the rule tests run against a version.
    async fn set_plugin_test_results(
        &self,
        tenant: &TenantId,
        version_id: i64,
        results: &Value,
    ) -> StoreResult<()>;
    /// Activates a version (`None`: the built-in default rules). Activating the active
    /// version changes nothing and returns the current activation.
    async fn activate_plugin(
        &self,
        tenant: &TenantId,
        version_id: Option<i64>,
        actor: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Activation>;
    /// Returns to what was active before the current activation (repeatable, like a stack).
    async fn rollback_plugin(
        &self,
        tenant: &TenantId,
        actor: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Activation>;
    /// The active version; `None` means the built-in default rules.
    async fn active_plugin(&self, tenant: &TenantId) -> StoreResult<Option<PluginVersion>>;
    /// Activation history, newest first.
    async fn activations(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Activation>>;
    /// Attaches a rule-test fixture to a version.
    async fn add_rule_fixture(
        &self,
        tenant: &TenantId,
        version_id: i64,
        name: &str,
        input: &Value,
        expected: &Value,
        now_ms: TimestampMs,
    ) -> StoreResult<RuleFixture>;
    /// The fixtures of a version, by name.
    async fn rule_fixtures(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Vec<RuleFixture>>;
    /// Stores the report of one plugin invocation.
    async fn add_invocation_report(
        &self,
        tenant: &TenantId,
        run_id: Option<i64>,
        version_id: Option<i64>,
        report: &Value,
        now_ms: TimestampMs,
    ) -> StoreResult<InvocationReport>;
    /// Invocation reports, optionally of one run, newest first.
    async fn invocation_reports(
        &self,
        tenant: &TenantId,
        run_id: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<InvocationReport>>;
}
