//! The PostgreSQL backend: several `dealbridge serve` replicas on one database.
//!
//! Due tenants are picked with `SELECT ... FOR UPDATE SKIP LOCKED` inside the leasing
//! `UPDATE`, so two replicas never lease one tenant and never wait on each other.
//! Migrations take PostgreSQL's advisory lock (sqlx's migrator), so replicas may start
//! together. It must never need TLS for the local database nor keep connection secrets.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Pool, Postgres, Transaction};

use super::{Backend, StoreConfig, StoreError, StoreResult};

type Db = Postgres;
type DbRow = PgRow;
type This = PostgresStore;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Most ids in one `IN (...)` list, and rows in one multi-row `INSERT`.
const ID_CHUNK: usize = 500;
const ROW_CHUNK: usize = 200;

/// Picks the due tenant that no other replica is looking at (`SKIP LOCKED`) and leases
/// it (`$1` holder, `$2` expiry, `$3` now).
const ACQUIRE_NEXT_DUE_SQL: &str = "\
UPDATE tenant_jobs
   SET lease_holder = $1, lease_expires_at_ms = $2, fencing_token = fencing_token + 1,
       next_due_at_ms = $3,
       run_requested = FALSE, leased_for_sync_now = sync_now_requested,
       sync_now_requested = FALSE
 WHERE (lease_holder IS NULL OR lease_expires_at_ms <= $3)
   AND tenant_id = (
       SELECT j.tenant_id FROM tenant_jobs j JOIN tenants t ON t.id = j.tenant_id
        WHERE NOT t.disabled AND NOT j.paused AND j.next_due_at_ms <= $3
          AND (j.lease_holder IS NULL OR j.lease_expires_at_ms <= $3)
        ORDER BY j.next_due_at_ms, j.tenant_id
        LIMIT 1
        FOR UPDATE OF j SKIP LOCKED)
RETURNING tenant_id, fencing_token, lease_expires_at_ms";

/// The channel on which a replica announces that a tenant's run was asked for (sync now,
/// a resync) or that a tenant was resumed; the payload is the tenant id. Replicas `LISTEN`
/// on it to wake an idle worker at once ([`crate::service::listen_to_replicas`]).
pub const RUN_REQUESTED_CHANNEL: &str = "dealbridge_run_requested";

/// Makes one tenant's writers of received HubSpot changes take turns until they commit
/// (`$1` the tenant), so that their rows become visible in the order of their sequence
/// numbers: without it, a delivery that drew a smaller `seq` could commit after the
/// engine read and settled past a larger one, and its unread row would be settled too.
const HUBSPOT_CHANGES_WRITE_LOCK_SQL: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(hashtext('dealbridge.hubspot_changes:' || $1))");

/// Announces a run asked for, on [`RUN_REQUESTED_CHANNEL`] (`$1` the tenant).
const RUN_REQUESTED_NOTIFY_SQL: Option<&str> =
    Some("SELECT pg_notify('dealbridge_run_requested', $1)");

/// The channel on which a replica announces a revoked token, a disabled or a deleted
/// tenant (the payload is a [`super::Revoked::payload`]), so every replica forgets the
/// tokens it verified recently at once ([`crate::service::listen_to_replicas`]).
pub const TOKENS_REVOKED_CHANNEL: &str = "dealbridge_tokens_revoked";

/// Announces a revocation, on [`TOKENS_REVOKED_CHANNEL`] (`$1` the payload).
const TOKENS_REVOKED_NOTIFY_SQL: Option<&str> =
    Some("SELECT pg_notify('dealbridge_tokens_revoked', $1)");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool<Db>,
    config: StoreConfig,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and runs the migrations.
    pub async fn open(url: &str, config: StoreConfig) -> StoreResult<Self> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Self::connect_with(options, config).await
    }

    /// Connects with explicit options (e.g. a `search_path` for a test schema) and runs
    /// the migrations.
    pub async fn connect_with(options: PgConnectOptions, config: StoreConfig) -> StoreResult<Self> {
        config.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool, config })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Db>> {
        Ok(self.pool.begin().await?)
    }

    fn backend_kind() -> Backend {
        Backend::Postgres
    }
}

include!("sql_common.rs");
