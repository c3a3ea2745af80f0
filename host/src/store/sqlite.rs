//! The SQLite backend: one file, the embedded default for a single team.
//!
//! Write transactions start with `BEGIN IMMEDIATE` so that two connections of the pool
//! never both read and then fail to upgrade: SQLite has one writer at a time, which is
//! also what makes leasing a plain conditional `UPDATE`. It must never open an
//! in-memory database with more than one connection (each would see its own database).
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit is durable against a crash of the
//! process (the WAL is written before the commit returns); only a power loss or an OS crash
//! can roll back the last few commits, never corrupt the file. That loss is safe for sync
//! state: the checkpoints go back with the links, so the engine re-reads those records and
//! its writes are upserts on cross-reference keys (nothing is duplicated). `FULL` would
//! wait on an fsync per commit.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Pool, Sqlite, Transaction};

use super::{Backend, StoreConfig, StoreError, StoreResult};

type Db = Sqlite;
type DbRow = SqliteRow;
type This = SqliteStore;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Most ids in one `IN (...)` list and rows in one multi-row `INSERT`: SQLite finds each
/// bound parameter's name by a linear search of the statement's parameters, so binding
/// costs the square of their count per statement; short statements are cheaper in all.
const ID_CHUNK: usize = 100;
const ROW_CHUNK: usize = 25;

/// Picks the due tenant and leases it in one statement; SQLite runs one writer at a
/// time, so no row locks are needed (`$1` holder, `$2` expiry, `$3` now).
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
        LIMIT 1)
RETURNING tenant_id, fencing_token, lease_expires_at_ms";

/// SQLite has one replica: nothing to tell the others when a run is asked for.
const RUN_REQUESTED_NOTIFY_SQL: Option<&str> = None;
/// Nor when a token is revoked: the one replica forgets it itself.
const TOKENS_REVOKED_NOTIFY_SQL: Option<&str> = None;
/// Writers are one at a time already (`BEGIN IMMEDIATE`), so received HubSpot changes
/// commit in the order of their sequence numbers without a further lock.
const HUBSPOT_CHANGES_WRITE_LOCK_SQL: Option<&str> = None;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Pool<Db>,
    config: StoreConfig,
}

/// Turns on SQLite's query planner stability guarantee on a new connection. Without
/// it, SQLite (built with `SQLITE_ENABLE_STAT4`, as bundled) lets a bound parameter's
/// value shape the plan, and so marks a statement whose `LIMIT` is a parameter as
/// expired whenever that parameter is bound again: every paged query was compiled again
/// at each execution (about 8 % of the API's CPU). The store runs no `ANALYZE`, so the
/// plans do not get worse.
async fn stable_query_plans(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `db` is this connection's open handle, held locked for the call;
    // SQLITE_DBCONFIG_ENABLE_QPSG takes an int and an optional `int*` for the result.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db.as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("enabling SQLite's query planner stability guarantee failed ({rc})").into(),
        ))
    }
}

impl SqliteStore {
    /// Opens (creating it with `?mode=rwc`) the database at `url` and runs the migrations.
    pub async fn open(url: &str, config: StoreConfig) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Self::connect_with(options, config).await
    }

    /// Opens with explicit connect options and runs the migrations.
    pub async fn connect_with(
        options: SqliteConnectOptions,
        config: StoreConfig,
    ) -> StoreResult<Self> {
        config.validate()?;
        let in_memory = options.get_filename().as_os_str().is_empty()
            || options
                .get_filename()
                .to_string_lossy()
                .contains(":memory:");
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool_options = if in_memory {
            // One connection that never closes: an in-memory database lives and dies with it.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(config.max_connections)
        }
        .after_connect(|conn, _| Box::pin(async move { stable_query_plans(conn).await }));
        let pool = pool_options.connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool, config })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Db>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn backend_kind() -> Backend {
        Backend::Sqlite
    }
}

include!("sql_common.rs");

#[cfg(test)]
mod connection_settings_tests {
    use std::ffi::c_int;

    use super::*;

    #[tokio::test]
    async fn every_connection_has_stable_query_plans() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, StoreConfig::default())
            .await
            .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        let mut enabled: c_int = -1;
        // SAFETY: an open, locked handle; -1 only reads the setting into `enabled`.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_config(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                -1 as c_int,
                &mut enabled as *mut c_int,
            )
        };
        assert_eq!((rc, enabled), (libsqlite3_sys::SQLITE_OK, 1));
    }
}
