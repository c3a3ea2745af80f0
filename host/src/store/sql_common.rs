// The statements and logic shared by both backends.
//
// This file is `include!`d into `sqlite.rs` and `postgres.rs`, each of which defines
// `Db` (the sqlx database), `DbRow`, `This` (its store type, with `pool`, `config`,
// `begin_write()` and `backend_kind()`), `ACQUIRE_NEXT_DUE_SQL`, `RUN_REQUESTED_NOTIFY_SQL`
// (a statement that tells other replicas a run was asked for, if the database can),
// `TOKENS_REVOKED_NOTIFY_SQL` (the same for a revoked token or a disabled tenant),
// `HUBSPOT_CHANGES_WRITE_LOCK_SQL` (a statement, if the database needs one, after which
// a tenant's received HubSpot changes commit in the order of their `seq`),
// `ID_CHUNK` (most ids in
// one `IN (...)` list) and `ROW_CHUNK` (most rows in one multi-row `INSERT`). Every statement
// here is written once in the SQL both databases accept (`$n` parameters, `ON CONFLICT`,
// `RETURNING`), so the two backends run the same statements and cannot drift.
// It must never filter a table without `tenant_id` (the one exception: `list_tenants`, the
// operator's listing of the `tenants` table itself), and never build SQL from values:
// only placeholder lists are generated, every value is bound.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

use super::Store as _;
use super::types::*;

/// Most rows in one page.
const MAX_PAGE: u32 = 1000;

/// `$first, $first+1, ...` (`count` placeholders).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($f, ..), ($f+cols, ..)` for `rows` rows of `cols` columns.
fn value_rows(first: usize, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(first + r * cols, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn page_limit(page: Page) -> StoreResult<i64> {
    if page.limit == 0 || page.limit > MAX_PAGE {
        return Err(StoreError::InvalidInput(format!(
            "page limit {} must be between 1 and {MAX_PAGE}",
            page.limit
        )));
    }
    Ok(i64::from(page.limit))
}

fn check_ttl(holder: &str, ttl_ms: i64) -> StoreResult<()> {
    if holder.is_empty() {
        return Err(StoreError::InvalidInput(
            "lease holder must not be empty".into(),
        ));
    }
    if ttl_ms <= 0 {
        return Err(StoreError::InvalidInput(format!(
            "lease ttl {ttl_ms} ms must be positive"
        )));
    }
    Ok(())
}

fn unique_ids(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Orders checkpoint cursors: by time, then by id length, then by id bytes, so numeric
/// HubSpot ids order numerically and 18-character Salesforce ids order as Salesforce sorts.
fn cursor_key(time_ms: i64, id: &str) -> (i64, usize, &[u8]) {
    (time_ms, id.len(), id.as_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn map_unique(err: sqlx::Error, what: &'static str, id: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists {
            what,
            id: id.to_string(),
        },
        _ => StoreError::Database(err),
    }
}

fn tenant_from_row(row: &DbRow) -> StoreResult<TenantId> {
    TenantId::new(row.try_get::<String, _>("tenant_id")?).map_err(|_| StoreError::Corrupt {
        what: "tenant id",
        value: row.try_get::<String, _>("tenant_id").unwrap_or_default(),
    })
}

fn parse<T: std::str::FromStr<Err = StoreError>>(row: &DbRow, col: &str) -> StoreResult<T> {
    row.try_get::<String, _>(col)?.parse()
}

const LINK_COLS: &str =
    "tenant_id, object_pair, salesforce_id, hubspot_id, state, created_at_ms, updated_at_ms";

fn link_from_row(row: &DbRow) -> StoreResult<Link> {
    Ok(Link {
        tenant: tenant_from_row(row)?,
        object_pair: parse(row, "object_pair")?,
        salesforce_id: row.try_get("salesforce_id")?,
        hubspot_id: row.try_get("hubspot_id")?,
        state: parse(row, "state")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

const ERROR_COLS: &str = "id, tenant_id, object_pair, record_side, record_id, category, message, \
     payload, attempts, first_seen_ms, last_seen_ms, next_retry_at_ms, resolved_at_ms";

fn error_from_row(row: &DbRow) -> StoreResult<SyncError> {
    Ok(SyncError {
        id: row.try_get("id")?,
        tenant: tenant_from_row(row)?,
        object_pair: parse(row, "object_pair")?,
        record: RecordKey {
            side: parse(row, "record_side")?,
            id: row.try_get("record_id")?,
        },
        category: parse(row, "category")?,
        message: row.try_get("message")?,
        payload: row.try_get::<Json<Value>, _>("payload")?.0,
        attempts: row.try_get("attempts")?,
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        next_retry_at_ms: row.try_get("next_retry_at_ms")?,
        resolved_at_ms: row.try_get("resolved_at_ms")?,
    })
}

const RUN_COLS: &str = "id, tenant_id, trigger_kind, status, fencing_token, started_at_ms, \
     finished_at_ms, counters, message";

fn run_from_row(row: &DbRow) -> StoreResult<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        tenant: tenant_from_row(row)?,
        trigger: parse(row, "trigger_kind")?,
        status: parse(row, "status")?,
        fencing_token: row.try_get("fencing_token")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        counters: row.try_get::<Json<RunCounters>, _>("counters")?.0,
        message: row.try_get("message")?,
    })
}

const EVENT_COLS: &str = "id, tenant_id, object_pair, salesforce_id, hubspot_id, kind, direction, \
     source_version, run_id, at_ms, fields, message";

fn event_from_row(row: &DbRow) -> StoreResult<RecordEvent> {
    Ok(RecordEvent {
        id: row.try_get("id")?,
        tenant: tenant_from_row(row)?,
        event: NewRecordEvent {
            object_pair: parse(row, "object_pair")?,
            salesforce_id: row.try_get("salesforce_id")?,
            hubspot_id: row.try_get("hubspot_id")?,
            kind: parse(row, "kind")?,
            direction: parse(row, "direction")?,
            source_version: row.try_get("source_version")?,
            run_id: row.try_get("run_id")?,
            at_ms: row.try_get("at_ms")?,
            fields: row.try_get::<Json<Value>, _>("fields")?.0,
            message: row.try_get("message")?,
        },
    })
}

const PLUGIN_COLS: &str = "id, sha256, label, component_path, size_bytes, uploaded_at_ms, \
     test_results, active";

fn plugin_from_row(row: &DbRow) -> StoreResult<PluginVersion> {
    Ok(PluginVersion {
        id: row.try_get("id")?,
        sha256: row.try_get("sha256")?,
        label: row.try_get("label")?,
        component_path: row.try_get("component_path")?,
        size_bytes: row.try_get("size_bytes")?,
        uploaded_at_ms: row.try_get("uploaded_at_ms")?,
        test_results: row
            .try_get::<Option<Json<Value>>, _>("test_results")?
            .map(|j| j.0),
        active: row.try_get("active")?,
    })
}

const ACTIVATION_COLS: &str =
    "id, version_id, previous_version_id, rollback_to, is_rollback, actor, activated_at_ms";

fn activation_from_row(row: &DbRow) -> StoreResult<Activation> {
    Ok(Activation {
        id: row.try_get("id")?,
        version_id: row.try_get("version_id")?,
        previous_version_id: row.try_get("previous_version_id")?,
        rollback_to: row.try_get("rollback_to")?,
        is_rollback: row.try_get("is_rollback")?,
        actor: row.try_get("actor")?,
        activated_at_ms: row.try_get("activated_at_ms")?,
    })
}

const FIXTURE_COLS: &str = "id, version_id, name, input, expected, created_at_ms";

fn fixture_from_row(row: &DbRow) -> StoreResult<RuleFixture> {
    Ok(RuleFixture {
        id: row.try_get("id")?,
        version_id: row.try_get("version_id")?,
        name: row.try_get("name")?,
        input: row.try_get::<Json<Value>, _>("input")?.0,
        expected: row.try_get::<Json<Value>, _>("expected")?.0,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

const REPORT_COLS: &str = "id, run_id, version_id, at_ms, report";

fn report_from_row(row: &DbRow) -> StoreResult<InvocationReport> {
    Ok(InvocationReport {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        version_id: row.try_get("version_id")?,
        at_ms: row.try_get("at_ms")?,
        report: row.try_get::<Json<Value>, _>("report")?.0,
    })
}

type Tx = sqlx::Transaction<'static, Db>;

/// Most ids in one resync of records.
const MAX_RESYNC_IDS: usize = 100;

const JOB_COLS: &str = "tenant_id, interval_ms, paused, next_due_at_ms, run_requested, \
     sync_now_requested, leased_for_sync_now, consecutive_failures, plugin_config, \
     lease_holder, lease_expires_at_ms, fencing_token";

fn job_from_row(row: &DbRow) -> StoreResult<SyncJob> {
    Ok(SyncJob {
        tenant: tenant_from_row(row)?,
        interval_ms: row.try_get("interval_ms")?,
        paused: row.try_get("paused")?,
        next_due_at_ms: row.try_get("next_due_at_ms")?,
        run_requested: row.try_get("run_requested")?,
        sync_now_requested: row.try_get("sync_now_requested")?,
        leased_for_sync_now: row.try_get("leased_for_sync_now")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        plugin_config: row.try_get::<Json<Value>, _>("plugin_config")?.0,
        lease_holder: row.try_get("lease_holder")?,
        lease_expires_at_ms: row.try_get("lease_expires_at_ms")?,
        fencing_token: row.try_get("fencing_token")?,
    })
}

fn job_or_not_found(row: Option<DbRow>, tenant: &TenantId) -> StoreResult<SyncJob> {
    match row {
        Some(r) => job_from_row(&r),
        None => Err(StoreError::NotFound {
            what: "tenant",
            id: tenant.to_string(),
            tenant: tenant.clone(),
        }),
    }
}

const RESYNC_COLS: &str = "id, request, requested_at_ms, done_at_ms, run_id, outcome";

fn resync_from_row(row: &DbRow) -> StoreResult<PendingResync> {
    Ok(PendingResync {
        id: row.try_get("id")?,
        request: row.try_get::<Json<ResyncRequest>, _>("request")?.0,
        requested_at_ms: row.try_get("requested_at_ms")?,
        done_at_ms: row.try_get("done_at_ms")?,
        run_id: row.try_get("run_id")?,
        outcome: row.try_get("outcome")?,
    })
}

/// Proves inside `tx` that `lease` is still the tenant's current lease, and locks the
/// tenant's job row until the transaction ends (PostgreSQL; SQLite holds the write lock
/// anyway), so no other replica can take the lease over mid-commit.
async fn fence(tx: &mut Tx, lease: &Lease, commit_at_ms: Option<TimestampMs>) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE tenant_jobs SET last_commit_at_ms = COALESCE($4, last_commit_at_ms) \
         WHERE tenant_id = $1 AND lease_holder = $2 AND fencing_token = $3",
    )
    .bind(lease.tenant.as_str())
    .bind(&lease.holder)
    .bind(lease.fencing_token)
    .bind(commit_at_ms)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::lease_lost(lease))
    }
}

/// Locks the tenant row for the rest of `tx` (serialises per-tenant read-modify-write
/// such as plugin activation); [`StoreError::NotFound`] if the tenant does not exist.
async fn lock_tenant(tx: &mut Tx, tenant: &TenantId) -> StoreResult<()> {
    let done = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound {
            what: "tenant",
            id: tenant.to_string(),
            tenant: tenant.clone(),
        })
    }
}

/// Makes the tenant due at `now_ms` (or keeps an earlier due time) and marks a run as
/// asked for, so the end of a run going on does not push it back; `sync_now` also marks
/// it as a sync now (its run is recorded as manual).
async fn request_run(
    tx: &mut Tx,
    tenant: &TenantId,
    now_ms: TimestampMs,
    sync_now: bool,
) -> StoreResult<SyncJob> {
    let sql = format!(
        "UPDATE tenant_jobs SET run_requested = TRUE, \
         sync_now_requested = (sync_now_requested OR $3), \
         next_due_at_ms = CASE WHEN next_due_at_ms > $2 THEN $2 ELSE next_due_at_ms END \
         WHERE tenant_id = $1 RETURNING {JOB_COLS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(now_ms)
        .bind(sync_now)
        .fetch_optional(&mut **tx)
        .await?;
    let job = job_or_not_found(row, tenant)?;
    announce_run_requested(tx, tenant).await?;
    Ok(job)
}

/// Tells the other replicas that `tenant` may be due now (where the backend can: on
/// PostgreSQL a `NOTIFY`, delivered at commit to every replica listening).
async fn announce_run_requested(tx: &mut Tx, tenant: &TenantId) -> StoreResult<()> {
    announce(tx, RUN_REQUESTED_NOTIFY_SQL, tenant.as_str()).await
}

/// Tells the other replicas what a revoke, disable or delete took away (likewise, so
/// never before the store has it).
async fn announce_revoked(tx: &mut Tx, revoked: &Revoked) -> StoreResult<()> {
    announce(tx, TOKENS_REVOKED_NOTIFY_SQL, &revoked.payload()).await
}

/// Runs a backend's announcement statement, if it has one, with `payload`.
async fn announce(tx: &mut Tx, notify: Option<&'static str>, payload: &str) -> StoreResult<()> {
    if let Some(notify) = notify {
        sqlx::query(notify).bind(payload).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn links_by(
    exec: &mut <Db as sqlx::Database>::Connection,
    tenant: &TenantId,
    pair: ObjectPair,
    column: &'static str,
    ids: &[String],
) -> StoreResult<Vec<Link>> {
    let mut out = Vec::new();
    for chunk in unique_ids(ids).chunks(ID_CHUNK) {
        let sql = format!(
            "SELECT {LINK_COLS} FROM links WHERE tenant_id = $1 AND object_pair = $2 \
             AND {column} IN ({})",
            placeholders(3, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(pair.as_str());
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *exec).await? {
            out.push(link_from_row(&row)?);
        }
    }
    Ok(out)
}

async fn insert_events(
    tx: &mut Tx,
    tenant: &TenantId,
    events: &[&NewRecordEvent],
) -> StoreResult<u64> {
    const COLS: usize = 12;
    let mut inserted = 0;
    for chunk in events.chunks(ROW_CHUNK) {
        let sql = format!(
            "INSERT INTO record_events (tenant_id, object_pair, salesforce_id, hubspot_id, kind, \
             direction, source_version, run_id, at_ms, fields, message, dedup_key) \
             VALUES {} ON CONFLICT (tenant_id, dedup_key) DO NOTHING",
            value_rows(1, chunk.len(), COLS)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            if e.salesforce_id.is_none() && e.hubspot_id.is_none() {
                return Err(StoreError::InvalidInput(
                    "a record event needs a Salesforce id or a HubSpot id".into(),
                ));
            }
            q = q
                .bind(tenant.as_str())
                .bind(e.object_pair.as_str())
                .bind(e.salesforce_id.as_deref())
                .bind(e.hubspot_id.as_deref())
                .bind(e.kind.as_str())
                .bind(e.direction.as_str())
                .bind(&e.source_version)
                .bind(e.run_id)
                .bind(e.at_ms)
                .bind(Json(&e.fields))
                .bind(e.message.as_deref())
                .bind(e.dedup_key());
        }
        inserted += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

async fn add_counters(
    tx: &mut Tx,
    tenant: &TenantId,
    run_id: i64,
    counters: &RunCounters,
) -> StoreResult<()> {
    // Touch first so PostgreSQL locks the row before we read it.
    let touched =
        sqlx::query("UPDATE runs SET counters = counters WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
    if touched.rows_affected() != 1 {
        return Err(StoreError::NotFound {
            what: "run",
            id: run_id.to_string(),
            tenant: tenant.clone(),
        });
    }
    let row = sqlx::query("SELECT counters FROM runs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(run_id)
        .fetch_one(&mut **tx)
        .await?;
    let mut current = row.try_get::<Json<RunCounters>, _>("counters")?.0;
    current.add(counters);
    sqlx::query("UPDATE runs SET counters = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(run_id)
        .bind(Json(&current))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Advances one checkpoint inside `tx` if the new cursor is later; returns whether it moved.
async fn advance_checkpoint(
    tx: &mut Tx,
    tenant: &TenantId,
    cp: &Checkpoint,
    now_ms: TimestampMs,
) -> StoreResult<bool> {
    let existing = sqlx::query(
        "SELECT cursor_time_ms, cursor_id FROM checkpoints \
         WHERE tenant_id = $1 AND object_pair = $2 AND side = $3 AND stream = $4",
    )
    .bind(tenant.as_str())
    .bind(cp.object_pair.as_str())
    .bind(cp.side.as_str())
    .bind(cp.stream.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        let time: i64 = row.try_get("cursor_time_ms")?;
        let id: String = row.try_get("cursor_id")?;
        if cursor_key(cp.cursor_time_ms, &cp.cursor_id) <= cursor_key(time, &id) {
            return Ok(false);
        }
    }
    sqlx::query(
        "INSERT INTO checkpoints (tenant_id, object_pair, side, stream, cursor_time_ms, cursor_id, \
         updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, object_pair, side, stream) DO UPDATE SET \
         cursor_time_ms = excluded.cursor_time_ms, cursor_id = excluded.cursor_id, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(tenant.as_str())
    .bind(cp.object_pair.as_str())
    .bind(cp.side.as_str())
    .bind(cp.stream.as_str())
    .bind(cp.cursor_time_ms)
    .bind(&cp.cursor_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Checks a batch for mistakes the engine must not make, before touching the database.
fn validate_batch(tenant: &TenantId, batch: &CommitBatch) -> StoreResult<()> {
    if batch.batch_key.is_empty() {
        return Err(StoreError::InvalidInput("a batch needs a batch key".into()));
    }
    if &batch.lease.tenant != tenant {
        return Err(StoreError::InvalidInput(format!(
            "batch lease is for tenant `{}`, not `{tenant}`",
            batch.lease.tenant
        )));
    }
    let mut sf = HashSet::new();
    let mut hs = HashSet::new();
    for r in &batch.records {
        if r.salesforce_id.is_empty() || r.hubspot_id.is_empty() {
            return Err(StoreError::InvalidInput(
                "a committed record needs both a Salesforce id and a HubSpot id".into(),
            ));
        }
        if !sf.insert(r.salesforce_id.as_str()) {
            return Err(StoreError::InvalidInput(format!(
                "Salesforce id `{}` appears twice in one batch",
                r.salesforce_id
            )));
        }
        if !hs.insert(r.hubspot_id.as_str()) {
            return Err(StoreError::InvalidInput(format!(
                "HubSpot id `{}` appears twice in one batch",
                r.hubspot_id
            )));
        }
        if let Some(e) = r.events.iter().find(|e| e.object_pair != batch.object_pair) {
            return Err(StoreError::InvalidInput(format!(
                "event for {} in a batch of {}",
                e.object_pair, batch.object_pair
            )));
        }
    }
    for settled in &batch.settled_hubspot_changes {
        if settled.object_type.is_empty() || settled.object_id.is_empty() {
            return Err(StoreError::InvalidInput(
                "a settled HubSpot change needs an object type and an object id".into(),
            ));
        }
    }
    Ok(())
}

async fn resolve_for_records(
    tx: &mut Tx,
    tenant: &TenantId,
    pair: ObjectPair,
    side: Side,
    ids: &[&str],
    now_ms: TimestampMs,
) -> StoreResult<u64> {
    let mut resolved = 0;
    for chunk in ids.chunks(ID_CHUNK) {
        let sql = format!(
            "UPDATE sync_errors SET resolved_at_ms = $4, next_retry_at_ms = NULL \
             WHERE tenant_id = $1 AND object_pair = $2 AND record_side = $3 \
             AND resolved_at_ms IS NULL AND record_id IN ({})",
            placeholders(5, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(pair.as_str())
            .bind(side.as_str())
            .bind(now_ms);
        for id in chunk {
            q = q.bind(*id);
        }
        resolved += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(resolved)
}

/// The kinds a received HubSpot change may have.
const HUBSPOT_CHANGE_KINDS: [&str; 3] = ["created", "deleted", "property"];

/// A received change as the database stores it: its event id as a signed 64-bit integer
/// and its property as text ('' for none); `None` when the store cannot keep it (an
/// unknown kind, no object type or id, an event id over `i64::MAX`).
fn change_row(change: &NewHubSpotChange) -> Option<(i64, &str)> {
    if !HUBSPOT_CHANGE_KINDS.contains(&change.kind.as_str())
        || change.object_type.is_empty()
        || change.object_id.is_empty()
    {
        return None;
    }
    let event_id = i64::try_from(change.event_id).ok()?;
    Some((event_id, change.property.as_deref().unwrap_or("")))
}

/// Removes each record's received changes up to its `up_to_seq` inside `tx`; returns the
/// rows removed.
async fn settle_changes(
    tx: &mut Tx,
    tenant: &TenantId,
    settled: &[SettledHubSpotChange],
) -> StoreResult<u64> {
    let mut removed = 0;
    for s in settled {
        removed += sqlx::query(
            "DELETE FROM hubspot_changes WHERE tenant_id = $1 AND object_type = $2 \
             AND object_id = $3 AND seq <= $4",
        )
        .bind(tenant.as_str())
        .bind(&s.object_type)
        .bind(&s.object_id)
        .bind(s.up_to_seq)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(removed)
}

async fn current_activation(tx: &mut Tx, tenant: &TenantId) -> StoreResult<Option<Activation>> {
    let sql = format!(
        "SELECT {ACTIVATION_COLS} FROM plugin_activations WHERE tenant_id = $1 \
         ORDER BY id DESC LIMIT 1"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| activation_from_row(&r))
        .transpose()
}

/// What an activation records besides who and when.
struct ActivationChange {
    version_id: Option<i64>,
    previous_version_id: Option<i64>,
    rollback_to: Option<i64>,
    is_rollback: bool,
}

/// Makes `change.version_id` (or the default rules) the active version and records the
/// activation, inside `tx` (which holds the tenant lock).
async fn set_active(
    tx: &mut Tx,
    tenant: &TenantId,
    change: ActivationChange,
    actor: &str,
    now_ms: TimestampMs,
) -> StoreResult<Activation> {
    let ActivationChange {
        version_id,
        previous_version_id,
        rollback_to,
        is_rollback,
    } = change;
    sqlx::query("UPDATE plugin_versions SET active = FALSE WHERE tenant_id = $1 AND active")
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    if let Some(v) = version_id {
        sqlx::query("UPDATE plugin_versions SET active = TRUE WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    let sql = format!(
        "INSERT INTO plugin_activations (tenant_id, version_id, previous_version_id, rollback_to, \
         is_rollback, actor, activated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING {ACTIVATION_COLS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(version_id)
        .bind(previous_version_id)
        .bind(rollback_to)
        .bind(is_rollback)
        .bind(actor)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?;
    activation_from_row(&row)
}

async fn version_exists(tx: &mut Tx, tenant: &TenantId, version_id: i64) -> StoreResult<()> {
    let found =
        sqlx::query("SELECT 1 AS one FROM plugin_versions WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(version_id)
            .fetch_optional(&mut **tx)
            .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            what: "plugin version",
            id: version_id.to_string(),
            tenant: tenant.clone(),
        }),
    }
}

impl This {
    /// Why a lease could not be taken: the tenant is missing or disabled, or `Ok` (held).
    async fn explain_no_lease(&self, tenant: &TenantId) -> StoreResult<()> {
        match self.tenant(tenant).await? {
            None => Err(StoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
                tenant: tenant.clone(),
            }),
            Some(t) if t.disabled => Err(StoreError::TenantDisabled(tenant.clone())),
            Some(_) => Ok(()),
        }
    }
}

#[async_trait]
impl super::Store for This {
    fn backend(&self) -> Backend {
        Self::backend_kind()
    }

    async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Tenant> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, disabled, created_at_ms) VALUES ($1, $2, FALSE, $3)",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, "tenant", id.as_str()))?;
        sqlx::query("INSERT INTO tenant_jobs (tenant_id, next_due_at_ms) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Tenant {
            id: id.clone(),
            name: name.to_string(),
            disabled: false,
            created_at_ms: now_ms,
        })
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let row =
            sqlx::query("SELECT id, name, disabled, created_at_ms FROM tenants WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Tenant {
                id: id.clone(),
                name: r.try_get("name")?,
                disabled: r.try_get("disabled")?,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .transpose()
    }

    async fn list_tenants(&self, after: Option<&TenantId>, limit: u32) -> StoreResult<Vec<Tenant>> {
        let limit = page_limit(Page::first(limit))?;
        // The one statement without a tenant filter: the operator's listing of tenants.
        let rows = sqlx::query(
            "SELECT id, name, disabled, created_at_ms FROM tenants \
             WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(after.map(TenantId::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(Tenant {
                    id: TenantId::new(id.clone()).map_err(|_| StoreError::Corrupt {
                        what: "tenant id",
                        value: id,
                    })?,
                    name: r.try_get("name")?,
                    disabled: r.try_get("disabled")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    async fn set_tenant_disabled(&self, id: &TenantId, disabled: bool) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE tenants SET disabled = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(disabled)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "tenant",
                id: id.to_string(),
                tenant: id.clone(),
            });
        }
        if disabled {
            announce_revoked(&mut tx, &Revoked::Tenant(id.clone())).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // Activations point at each other and at versions; drop them first so the
        // cascade from `tenants` never trips over their order.
        sqlx::query("DELETE FROM plugin_activations WHERE tenant_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM invocation_reports WHERE tenant_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM record_events WHERE tenant_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            announce_revoked(&mut tx, &Revoked::Tenant(id.clone())).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_api_token(&self, tenant: &TenantId, token: &ApiToken) -> StoreResult<()> {
        if token.token_id.is_empty() || token.hash.is_empty() {
            return Err(StoreError::InvalidInput(
                "API token id and hash must not be empty".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO api_tokens (tenant_id, token_id, token_hash, label, created_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(&token.token_id)
        .bind(&token.hash)
        .bind(&token.label)
        .bind(token.created_at_ms)
        .bind(token.revoked_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| map_unique(e, "API token", &token.token_id))?;
        Ok(())
    }

    async fn api_token(&self, tenant: &TenantId, token_id: &str) -> StoreResult<Option<ApiToken>> {
        let row = sqlx::query(
            "SELECT token_id, token_hash, label, created_at_ms, revoked_at_ms FROM api_tokens \
             WHERE tenant_id = $1 AND token_id = $2",
        )
        .bind(tenant.as_str())
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ApiToken {
                token_id: r.try_get("token_id")?,
                hash: r.try_get("token_hash")?,
                label: r.try_get("label")?,
                created_at_ms: r.try_get("created_at_ms")?,
                revoked_at_ms: r.try_get("revoked_at_ms")?,
            })
        })
        .transpose()
    }

    async fn revoke_api_token(
        &self,
        tenant: &TenantId,
        token_id: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = $3 \
             WHERE tenant_id = $1 AND token_id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(tenant.as_str())
        .bind(token_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let revoked = done.rows_affected() == 1;
        if revoked {
            let what = Revoked::Token {
                tenant: tenant.clone(),
                token_id: token_id.to_string(),
            };
            announce_revoked(&mut tx, &what).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn put_connection(
        &self,
        tenant: &TenantId,
        crm: Side,
        connection: &EncryptedConnection,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO crm_connections (tenant_id, crm, key_id, ciphertext, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, crm) DO UPDATE SET \
             key_id = excluded.key_id, ciphertext = excluded.ciphertext, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(tenant.as_str())
        .bind(crm.as_str())
        .bind(&connection.key_id)
        .bind(&connection.ciphertext)
        .bind(connection.updated_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn connection(
        &self,
        tenant: &TenantId,
        crm: Side,
    ) -> StoreResult<Option<EncryptedConnection>> {
        let row = sqlx::query(
            "SELECT key_id, ciphertext, updated_at_ms FROM crm_connections WHERE tenant_id = $1 AND crm = $2",
        )
        .bind(tenant.as_str())
        .bind(crm.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EncryptedConnection {
                key_id: r.try_get("key_id")?,
                ciphertext: r.try_get("ciphertext")?,
                updated_at_ms: r.try_get("updated_at_ms")?,
            })
        })
        .transpose()
    }

    async fn reseal_connection(
        &self,
        tenant: &TenantId,
        crm: Side,
        expected: &EncryptedConnection,
        key_id: &str,
        ciphertext: &[u8],
    ) -> StoreResult<bool> {
        if key_id.is_empty() || ciphertext.is_empty() {
            return Err(StoreError::InvalidInput(
                "a resealed connection needs a key id and a ciphertext".into(),
            ));
        }
        let done = sqlx::query(
            "UPDATE crm_connections SET key_id = $5, ciphertext = $6 \
             WHERE tenant_id = $1 AND crm = $2 AND key_id = $3 AND ciphertext = $4",
        )
        .bind(tenant.as_str())
        .bind(crm.as_str())
        .bind(&expected.key_id)
        .bind(&expected.ciphertext)
        .bind(key_id)
        .bind(ciphertext)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_connection(&self, tenant: &TenantId, crm: Side) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM crm_connections WHERE tenant_id = $1 AND crm = $2")
            .bind(tenant.as_str())
            .bind(crm.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn try_acquire_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Option<Lease>> {
        check_ttl(holder, ttl_ms)?;
        let expires = now_ms.saturating_add(ttl_ms);
        // One statement: PostgreSQL re-checks the WHERE after waiting for a concurrent
        // writer's row lock, SQLite has one writer; either way exactly one caller wins.
        let row = sqlx::query(
            "UPDATE tenant_jobs SET lease_holder = $2, lease_expires_at_ms = $3, \
             fencing_token = fencing_token + 1 \
             WHERE tenant_id = $1 AND (lease_holder IS NULL OR lease_expires_at_ms <= $4) \
             AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = $1 AND NOT t.disabled) \
             RETURNING fencing_token, lease_expires_at_ms",
        )
        .bind(tenant.as_str())
        .bind(holder)
        .bind(expires)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(Lease {
                tenant: tenant.clone(),
                holder: holder.to_string(),
                fencing_token: r.try_get("fencing_token")?,
                expires_at_ms: r.try_get("lease_expires_at_ms")?,
            })),
            None => {
                self.explain_no_lease(tenant).await?;
                Ok(None)
            }
        }
    }

    async fn acquire_next_due_tenant(
        &self,
        holder: &str,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Option<Lease>> {
        check_ttl(holder, ttl_ms)?;
        let row = sqlx::query(ACQUIRE_NEXT_DUE_SQL)
            .bind(holder)
            .bind(now_ms.saturating_add(ttl_ms))
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Lease {
                tenant: tenant_from_row(&r)?,
                holder: holder.to_string(),
                fencing_token: r.try_get("fencing_token")?,
                expires_at_ms: r.try_get("lease_expires_at_ms")?,
            })
        })
        .transpose()
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<Lease> {
        check_ttl(&lease.holder, ttl_ms)?;
        let expires = now_ms.saturating_add(ttl_ms);
        let done = sqlx::query(
            "UPDATE tenant_jobs SET lease_expires_at_ms = $4 \
             WHERE tenant_id = $1 AND lease_holder = $2 AND fencing_token = $3",
        )
        .bind(lease.tenant.as_str())
        .bind(&lease.holder)
        .bind(lease.fencing_token)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::lease_lost(lease));
        }
        Ok(Lease {
            expires_at_ms: expires,
            ..lease.clone()
        })
    }

    async fn release_lease(
        &self,
        lease: &Lease,
        next_due_at_ms: Option<TimestampMs>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE tenant_jobs SET lease_holder = NULL, lease_expires_at_ms = NULL, \
             next_due_at_ms = COALESCE($4, next_due_at_ms) \
             WHERE tenant_id = $1 AND lease_holder = $2 AND fencing_token = $3",
        )
        .bind(lease.tenant.as_str())
        .bind(&lease.holder)
        .bind(lease.fencing_token)
        .bind(next_due_at_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::lease_lost(lease));
        }
        Ok(())
    }

    async fn schedule_sync(&self, tenant: &TenantId, due_at_ms: TimestampMs) -> StoreResult<()> {
        let done = sqlx::query("UPDATE tenant_jobs SET next_due_at_ms = $2 WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .bind(due_at_ms)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
                tenant: tenant.clone(),
            });
        }
        Ok(())
    }

    async fn sync_job(&self, tenant: &TenantId) -> StoreResult<Option<SyncJob>> {
        let sql = format!("SELECT {JOB_COLS} FROM tenant_jobs WHERE tenant_id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| job_from_row(&r))
            .transpose()
    }

    async fn set_sync_interval(
        &self,
        tenant: &TenantId,
        interval_ms: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<SyncJob> {
        if interval_ms <= 0 {
            return Err(StoreError::InvalidInput(format!(
                "sync interval {interval_ms} ms must be positive"
            )));
        }
        let sql = format!(
            "UPDATE tenant_jobs SET interval_ms = $2, \
             next_due_at_ms = CASE WHEN next_due_at_ms > $3 THEN $3 ELSE next_due_at_ms END \
             WHERE tenant_id = $1 RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(interval_ms)
            .bind(now_ms.saturating_add(interval_ms))
            .fetch_optional(&self.pool)
            .await?;
        job_or_not_found(row, tenant)
    }

    async fn set_sync_paused(&self, tenant: &TenantId, paused: bool) -> StoreResult<SyncJob> {
        let sql =
            format!("UPDATE tenant_jobs SET paused = $2 WHERE tenant_id = $1 RETURNING {JOB_COLS}");
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(paused)
            .fetch_optional(&mut *tx)
            .await?;
        let job = job_or_not_found(row, tenant)?;
        if !paused {
            // A resumed tenant may be due at once: idle workers of every replica look.
            announce_run_requested(&mut tx, tenant).await?;
        }
        tx.commit().await?;
        Ok(job)
    }

    async fn set_plugin_config(&self, tenant: &TenantId, config: &Value) -> StoreResult<SyncJob> {
        if !config.is_object() {
            return Err(StoreError::InvalidInput(
                "a plugin config must be a JSON object".into(),
            ));
        }
        let sql = format!(
            "UPDATE tenant_jobs SET plugin_config = $2 WHERE tenant_id = $1 RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(Json(config))
            .fetch_optional(&self.pool)
            .await?;
        job_or_not_found(row, tenant)
    }

    async fn request_sync(&self, tenant: &TenantId, now_ms: TimestampMs) -> StoreResult<SyncJob> {
        let mut tx = self.begin_write().await?;
        let job = request_run(&mut tx, tenant, now_ms, true).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn finish_job(
        &self,
        lease: &Lease,
        next_due_at_ms: TimestampMs,
        consecutive_failures: i64,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE tenant_jobs SET lease_holder = NULL, lease_expires_at_ms = NULL, \
             next_due_at_ms = CASE WHEN run_requested THEN next_due_at_ms ELSE $4 END, \
             run_requested = FALSE, consecutive_failures = $5 \
             WHERE tenant_id = $1 AND lease_holder = $2 AND fencing_token = $3",
        )
        .bind(lease.tenant.as_str())
        .bind(&lease.holder)
        .bind(lease.fencing_token)
        .bind(next_due_at_ms)
        .bind(consecutive_failures.max(0))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::lease_lost(lease));
        }
        Ok(())
    }

    async fn request_resync(
        &self,
        tenant: &TenantId,
        request: &ResyncRequest,
        now_ms: TimestampMs,
    ) -> StoreResult<PendingResync> {
        if let ResyncRequest::Records { ids, .. } = request
            && (ids.is_empty() || ids.len() > MAX_RESYNC_IDS || ids.iter().any(String::is_empty))
        {
            return Err(StoreError::InvalidInput(format!(
                "a resync of records names 1 to {MAX_RESYNC_IDS} non-empty ids"
            )));
        }
        let mut tx = self.begin_write().await?;
        request_run(&mut tx, tenant, now_ms, false).await?;
        let sql = format!(
            "INSERT INTO pending_resyncs (tenant_id, request, requested_at_ms) \
             VALUES ($1, $2, $3) RETURNING {RESYNC_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(Json(request))
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
        let pending = resync_from_row(&row)?;
        tx.commit().await?;
        Ok(pending)
    }

    async fn pending_resyncs(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> StoreResult<Vec<PendingResync>> {
        let limit = page_limit(Page::first(limit))?;
        let sql = format!(
            "SELECT {RESYNC_COLS} FROM pending_resyncs \
             WHERE tenant_id = $1 AND done_at_ms IS NULL ORDER BY id LIMIT $2"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(resync_from_row)
            .collect()
    }

    async fn resync_request(
        &self,
        tenant: &TenantId,
        id: i64,
    ) -> StoreResult<Option<PendingResync>> {
        let sql =
            format!("SELECT {RESYNC_COLS} FROM pending_resyncs WHERE tenant_id = $1 AND id = $2");
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| resync_from_row(&r))
            .transpose()
    }

    async fn complete_resync(
        &self,
        lease: &Lease,
        id: i64,
        run_id: Option<i64>,
        outcome: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        fence(&mut tx, lease, None).await?;
        let done = sqlx::query(
            "UPDATE pending_resyncs SET done_at_ms = $3, run_id = $4, outcome = $5 \
             WHERE tenant_id = $1 AND id = $2 AND done_at_ms IS NULL",
        )
        .bind(lease.tenant.as_str())
        .bind(id)
        .bind(now_ms)
        .bind(run_id)
        .bind(outcome)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn links_by_salesforce_ids(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        ids: &[String],
    ) -> StoreResult<Vec<Link>> {
        let mut conn = self.pool.acquire().await?;
        links_by(&mut conn, tenant, pair, "salesforce_id", ids).await
    }

    async fn links_by_hubspot_ids(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        ids: &[String],
    ) -> StoreResult<Vec<Link>> {
        let mut conn = self.pool.acquire().await?;
        links_by(&mut conn, tenant, pair, "hubspot_id", ids).await
    }

    async fn links(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Link>> {
        let limit = page_limit(Page { after: None, limit })?;
        let rows = match after {
            Some(after) => {
                let sql = format!(
                    "SELECT {LINK_COLS} FROM links WHERE tenant_id = $1 AND object_pair = $2 \
                     AND salesforce_id > $3 ORDER BY salesforce_id LIMIT $4"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(pair.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {LINK_COLS} FROM links WHERE tenant_id = $1 AND object_pair = $2 \
                     ORDER BY salesforce_id LIMIT $3"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(pair.as_str())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(link_from_row).collect()
    }

    async fn snapshots(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        salesforce_ids: &[String],
    ) -> StoreResult<HashMap<String, Snapshot>> {
        let mut out = HashMap::new();
        for chunk in unique_ids(salesforce_ids).chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT salesforce_id, salesforce, hubspot, synced_at_ms FROM snapshots \
                 WHERE tenant_id = $1 AND object_pair = $2 AND salesforce_id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(pair.as_str());
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.insert(
                    row.try_get::<String, _>("salesforce_id")?,
                    Snapshot {
                        salesforce: row
                            .try_get::<Json<BTreeMap<String, Value>>, _>("salesforce")?
                            .0,
                        hubspot: row
                            .try_get::<Json<BTreeMap<String, Value>>, _>("hubspot")?
                            .0,
                        synced_at_ms: row.try_get("synced_at_ms")?,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn commit_batch(
        &self,
        tenant: &TenantId,
        batch: &CommitBatch,
    ) -> StoreResult<CommitOutcome> {
        validate_batch(tenant, batch)?;
        let pair = batch.object_pair;
        let now = batch.now_ms;
        let mut outcome = CommitOutcome::default();
        let mut tx = self.begin_write().await?;
        fence(&mut tx, &batch.lease, Some(now)).await?;
        let fresh = sqlx::query(
            "INSERT INTO committed_batches (tenant_id, batch_key, committed_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, batch_key) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&batch.batch_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if fresh.rows_affected() == 0 {
            // Already committed: write nothing (the transaction rolls back on drop).
            return Ok(CommitOutcome {
                already_committed: true,
                ..CommitOutcome::default()
            });
        }

        // What is linked today, by either id of the batch (two queries per 500 records).
        let sf_ids: Vec<String> = batch
            .records
            .iter()
            .map(|r| r.salesforce_id.clone())
            .collect();
        let hs_ids: Vec<String> = batch.records.iter().map(|r| r.hubspot_id.clone()).collect();
        let by_sf: HashMap<String, Link> =
            links_by(&mut tx, tenant, pair, "salesforce_id", &sf_ids)
                .await?
                .into_iter()
                .map(|l| (l.salesforce_id.clone(), l))
                .collect();
        let by_hs: HashMap<String, Link> = links_by(&mut tx, tenant, pair, "hubspot_id", &hs_ids)
            .await?
            .into_iter()
            .map(|l| (l.hubspot_id.clone(), l))
            .collect();

        let mut changed = Vec::new();
        for r in &batch.records {
            if let Some(other) = by_hs.get(&r.hubspot_id)
                && other.salesforce_id != r.salesforce_id
            {
                return Err(StoreError::LinkConflict {
                    object_pair: pair,
                    salesforce_id: r.salesforce_id.clone(),
                    hubspot_id: r.hubspot_id.clone(),
                    linked_salesforce_id: other.salesforce_id.clone(),
                });
            }
            match by_sf.get(&r.salesforce_id) {
                None => {
                    outcome.links_inserted += 1;
                    changed.push(r);
                }
                Some(l) if l.hubspot_id == r.hubspot_id && l.state == r.state => {
                    outcome.links_unchanged += 1;
                }
                Some(_) => {
                    outcome.links_updated += 1;
                    changed.push(r);
                }
            }
        }

        for chunk in changed.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO links ({LINK_COLS}) VALUES {} \
                 ON CONFLICT (tenant_id, object_pair, salesforce_id) DO UPDATE SET \
                 hubspot_id = excluded.hubspot_id, state = excluded.state, \
                 updated_at_ms = excluded.updated_at_ms",
                value_rows(1, chunk.len(), 7)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(tenant.as_str())
                    .bind(pair.as_str())
                    .bind(&r.salesforce_id)
                    .bind(&r.hubspot_id)
                    .bind(r.state.as_str())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }

        let with_snapshot: Vec<(&CommittedRecord, &Snapshot)> = batch
            .records
            .iter()
            .filter_map(|r| r.snapshot.as_ref().map(|s| (r, s)))
            .collect();
        for chunk in with_snapshot.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO snapshots (tenant_id, object_pair, salesforce_id, salesforce, hubspot, \
                 synced_at_ms) VALUES {} \
                 ON CONFLICT (tenant_id, object_pair, salesforce_id) DO UPDATE SET \
                 salesforce = excluded.salesforce, hubspot = excluded.hubspot, \
                 synced_at_ms = excluded.synced_at_ms",
                value_rows(1, chunk.len(), 6)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (r, s) in chunk {
                q = q
                    .bind(tenant.as_str())
                    .bind(pair.as_str())
                    .bind(&r.salesforce_id)
                    .bind(Json(&s.salesforce))
                    .bind(Json(&s.hubspot))
                    .bind(s.synced_at_ms);
            }
            q.execute(&mut *tx).await?;
        }

        let events: Vec<&NewRecordEvent> = batch.records.iter().flat_map(|r| &r.events).collect();
        outcome.events_inserted = insert_events(&mut tx, tenant, &events).await?;

        let sf: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.salesforce_id.as_str())
            .collect();
        let hs: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.hubspot_id.as_str())
            .collect();
        outcome.errors_resolved =
            resolve_for_records(&mut tx, tenant, pair, Side::Salesforce, &sf, now).await?
                + resolve_for_records(&mut tx, tenant, pair, Side::HubSpot, &hs, now).await?;

        for cp in &batch.checkpoints {
            if advance_checkpoint(&mut tx, tenant, cp, now).await? {
                outcome.checkpoints_advanced += 1;
            }
        }
        if let Some((run_id, counters)) = &batch.counters {
            add_counters(&mut tx, tenant, *run_id, counters).await?;
        }
        outcome.hubspot_changes_settled =
            settle_changes(&mut tx, tenant, &batch.settled_hubspot_changes).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn record_hubspot_changes(
        &self,
        tenant: &TenantId,
        changes: &[NewHubSpotChange],
        received_at_ms: TimestampMs,
    ) -> StoreResult<u64> {
        const COLS: usize = 10;
        let rows: Vec<(&NewHubSpotChange, i64, &str)> = changes
            .iter()
            .filter_map(|c| change_row(c).map(|(event_id, property)| (c, event_id, property)))
            .collect();
        if rows.len() < changes.len() {
            tracing::warn!(
                left_out = changes.len() - rows.len(),
                "HubSpot changes the store cannot keep were left out"
            );
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        // The engine settles a record's rows up to the largest `seq` it read: a row with a
        // smaller `seq` must never become visible after that one.
        if let Some(lock) = HUBSPOT_CHANGES_WRITE_LOCK_SQL {
            sqlx::query(lock)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let mut inserted = 0;
        for chunk in rows.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO hubspot_changes (tenant_id, event_id, object_type, object_id, kind, \
                 property, occurred_at_ms, change_source, source_id, received_at_ms) VALUES {} \
                 ON CONFLICT (tenant_id, event_id, object_type, object_id, occurred_at_ms, kind, \
                 property) DO NOTHING",
                value_rows(1, chunk.len(), COLS)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (c, event_id, property) in chunk {
                q = q
                    .bind(tenant.as_str())
                    .bind(*event_id)
                    .bind(&c.object_type)
                    .bind(&c.object_id)
                    .bind(&c.kind)
                    .bind(*property)
                    .bind(c.occurred_at_ms)
                    .bind(&c.change_source)
                    .bind(c.source_id.as_deref())
                    .bind(received_at_ms);
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn pending_hubspot_changes(
        &self,
        tenant: &TenantId,
        object_type: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingHubSpotChange>> {
        let limit = page_limit(Page { after: None, limit })?;
        let rows = sqlx::query(
            "SELECT g.object_id, g.last_seq, g.last_at, \
             (SELECT c.kind FROM hubspot_changes c WHERE c.tenant_id = $1 \
               AND c.object_type = $2 AND c.object_id = g.object_id \
               ORDER BY c.occurred_at_ms DESC, c.seq DESC LIMIT 1) AS last_kind \
             FROM (SELECT object_id, MIN(seq) AS first_seq, MAX(seq) AS last_seq, \
                   MAX(occurred_at_ms) AS last_at FROM hubspot_changes \
                   WHERE tenant_id = $1 AND object_type = $2 GROUP BY object_id) g \
             ORDER BY g.first_seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(object_type)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingHubSpotChange {
                    object_id: r.try_get("object_id")?,
                    last_seq: r.try_get("last_seq")?,
                    last_occurred_at_ms: r.try_get("last_at")?,
                    deleted: r.try_get::<Option<String>, _>("last_kind")?.as_deref()
                        == Some("deleted"),
                })
            })
            .collect()
    }

    async fn pending_hubspot_change_count(&self, tenant: &TenantId) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM hubspot_changes WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    async fn settle_hubspot_changes(
        &self,
        lease: &Lease,
        settled: &[SettledHubSpotChange],
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        fence(&mut tx, lease, None).await?;
        let removed = settle_changes(&mut tx, &lease.tenant, settled).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn checkpoint(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        side: Side,
        stream: Stream,
    ) -> StoreResult<Option<Checkpoint>> {
        let row = sqlx::query(
            "SELECT cursor_time_ms, cursor_id FROM checkpoints \
             WHERE tenant_id = $1 AND object_pair = $2 AND side = $3 AND stream = $4",
        )
        .bind(tenant.as_str())
        .bind(pair.as_str())
        .bind(side.as_str())
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Checkpoint {
                object_pair: pair,
                side,
                stream,
                cursor_time_ms: r.try_get("cursor_time_ms")?,
                cursor_id: r.try_get("cursor_id")?,
            })
        })
        .transpose()
    }

    async fn reset_checkpoint(
        &self,
        lease: &Lease,
        pair: ObjectPair,
        side: Side,
        stream: Stream,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        fence(&mut tx, lease, None).await?;
        let done = sqlx::query(
            "DELETE FROM checkpoints WHERE tenant_id = $1 AND object_pair = $2 AND side = $3 AND stream = $4",
        )
        .bind(lease.tenant.as_str())
        .bind(pair.as_str())
        .bind(side.as_str())
        .bind(stream.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_error(
        &self,
        tenant: &TenantId,
        error: &NewSyncError,
        now_ms: TimestampMs,
    ) -> StoreResult<SyncError> {
        if error.record.id.is_empty() {
            return Err(StoreError::InvalidInput(
                "an error needs a record id".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        // The increment happens in the database so concurrent failures all count.
        let row = sqlx::query(
            "INSERT INTO sync_errors (tenant_id, object_pair, record_side, record_id, category, message, \
             payload, attempts, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8) \
             ON CONFLICT (tenant_id, object_pair, record_side, record_id, category) DO UPDATE SET \
             attempts = CASE WHEN sync_errors.resolved_at_ms IS NULL THEN sync_errors.attempts + 1 ELSE 1 END, \
             first_seen_ms = CASE WHEN sync_errors.resolved_at_ms IS NULL THEN sync_errors.first_seen_ms \
                 ELSE excluded.first_seen_ms END, \
             message = excluded.message, payload = excluded.payload, \
             last_seen_ms = excluded.last_seen_ms, resolved_at_ms = NULL \
             RETURNING id, attempts",
        )
        .bind(tenant.as_str())
        .bind(error.object_pair.as_str())
        .bind(error.record.side.as_str())
        .bind(&error.record.id)
        .bind(error.category.as_str())
        .bind(&error.message)
        .bind(Json(&error.payload))
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let next = self.config.retry.next_retry(attempts, now_ms);
        let sql = format!(
            "UPDATE sync_errors SET next_retry_at_ms = $3 WHERE tenant_id = $1 AND id = $2 \
             RETURNING {ERROR_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(id)
            .bind(next)
            .fetch_one(&mut *tx)
            .await?;
        let stored = error_from_row(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn due_errors(
        &self,
        tenant: &TenantId,
        now_ms: TimestampMs,
        limit: u32,
    ) -> StoreResult<Vec<SyncError>> {
        let limit = page_limit(Page::first(limit))?;
        let sql = format!(
            "SELECT {ERROR_COLS} FROM sync_errors WHERE tenant_id = $1 AND resolved_at_ms IS NULL \
             AND next_retry_at_ms <= $2 ORDER BY next_retry_at_ms, id LIMIT $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(error_from_row)
            .collect()
    }

    async fn resolve_error(
        &self,
        tenant: &TenantId,
        error_id: i64,
        now_ms: TimestampMs,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sync_errors SET resolved_at_ms = $3, next_retry_at_ms = NULL \
             WHERE tenant_id = $1 AND id = $2 AND resolved_at_ms IS NULL",
        )
        .bind(tenant.as_str())
        .bind(error_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn health_summary(&self, tenant: &TenantId) -> StoreResult<Vec<CategoryHealth>> {
        let rows = sqlx::query(
            "SELECT category, COUNT(*) AS open_errors, \
             COUNT(DISTINCT object_pair || ':' || record_side || ':' || record_id) AS affected \
             FROM sync_errors WHERE tenant_id = $1 AND resolved_at_ms IS NULL \
             GROUP BY category ORDER BY category",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CategoryHealth {
                    category: parse(r, "category")?,
                    open_errors: r.try_get("open_errors")?,
                    affected_records: r.try_get("affected")?,
                })
            })
            .collect()
    }

    async fn open_errors(
        &self,
        tenant: &TenantId,
        category: Option<ErrorCategory>,
        page: Page,
    ) -> StoreResult<Vec<SyncError>> {
        let limit = page_limit(page)?;
        let sql = format!(
            "SELECT {ERROR_COLS} FROM sync_errors WHERE tenant_id = $1 AND resolved_at_ms IS NULL \
             AND ($2 IS NULL OR category = $2) AND id > $3 ORDER BY id LIMIT $4"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(category.map(ErrorCategory::as_str))
            .bind(page.after.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(error_from_row)
            .collect()
    }

    async fn start_run(
        &self,
        lease: &Lease,
        trigger: RunTrigger,
        now_ms: TimestampMs,
    ) -> StoreResult<Run> {
        let mut tx = self.begin_write().await?;
        fence(&mut tx, lease, None).await?;
        sqlx::query(
            "UPDATE runs SET status = 'abandoned', finished_at_ms = $2, \
             message = 'its replica stopped before finishing; a later run took over' \
             WHERE tenant_id = $1 AND status = 'running'",
        )
        .bind(lease.tenant.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "INSERT INTO runs (tenant_id, trigger_kind, status, fencing_token, started_at_ms, counters) \
             VALUES ($1, $2, 'running', $3, $4, $5) RETURNING {RUN_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(lease.tenant.as_str())
            .bind(trigger.as_str())
            .bind(lease.fencing_token)
            .bind(now_ms)
            .bind(Json(RunCounters::default()))
            .fetch_one(&mut *tx)
            .await?;
        let run = run_from_row(&row)?;
        tx.commit().await?;
        Ok(run)
    }

    async fn add_run_counters(
        &self,
        tenant: &TenantId,
        run_id: i64,
        counters: &RunCounters,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        add_counters(&mut tx, tenant, run_id, counters).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_run(
        &self,
        tenant: &TenantId,
        run_id: i64,
        status: RunStatus,
        message: Option<&str>,
        now_ms: TimestampMs,
    ) -> StoreResult<Run> {
        if status == RunStatus::Running {
            return Err(StoreError::InvalidInput(
                "a run cannot finish as `running`".into(),
            ));
        }
        let sql = format!(
            "UPDATE runs SET status = $3, finished_at_ms = $4, message = $5 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running' RETURNING {RUN_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(run_id)
            .bind(status.as_str())
            .bind(now_ms)
            .bind(message)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => run_from_row(&r),
            None => match self.run(tenant, run_id).await? {
                Some(run) => Err(StoreError::InvalidInput(format!(
                    "run {run_id} already ended as `{}`",
                    run.status
                ))),
                None => Err(StoreError::NotFound {
                    what: "run",
                    id: run_id.to_string(),
                    tenant: tenant.clone(),
                }),
            },
        }
    }

    async fn run(&self, tenant: &TenantId, run_id: i64) -> StoreResult<Option<Run>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND id = $2");
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| run_from_row(&r))
            .transpose()
    }

    async fn runs(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Run>> {
        let limit = page_limit(page)?;
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[NewRecordEvent],
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let refs: Vec<&NewRecordEvent> = events.iter().collect();
        let n = insert_events(&mut tx, tenant, &refs).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn record_history(
        &self,
        tenant: &TenantId,
        pair: ObjectPair,
        record: &RecordKey,
        page: Page,
    ) -> StoreResult<Vec<RecordEvent>> {
        let limit = page_limit(page)?;
        let column = match record.side {
            Side::Salesforce => "salesforce_id",
            Side::HubSpot => "hubspot_id",
        };
        let sql = format!(
            "SELECT {EVENT_COLS} FROM record_events WHERE tenant_id = $1 AND object_pair = $2 \
             AND {column} = $3 AND id < $4 ORDER BY id DESC LIMIT $5"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(pair.as_str())
            .bind(&record.id)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn add_plugin_version(
        &self,
        tenant: &TenantId,
        source: &ComponentSource,
        label: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<PluginVersion> {
        let (sha, bytes, path, size) = match source {
            ComponentSource::Bytes(b) => {
                if b.is_empty() {
                    return Err(StoreError::InvalidInput("component bytes are empty".into()));
                }
                let size = i64::try_from(b.len())
                    .map_err(|_| StoreError::InvalidInput("component too large".into()))?;
                (sha256_hex(b), Some(b.as_slice()), None, Some(size))
            }
            ComponentSource::Path { path, sha256 } => {
                let valid = sha256.len() == 64
                    && sha256
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
                if !valid {
                    return Err(StoreError::InvalidInput(format!(
                        "sha256 `{sha256}` must be 64 lowercase hex characters"
                    )));
                }
                if path.is_empty() {
                    return Err(StoreError::InvalidInput("component path is empty".into()));
                }
                (sha256.clone(), None, Some(path.as_str()), None)
            }
        };
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant).await?;
        sqlx::query(
            "INSERT INTO plugin_versions (tenant_id, sha256, label, component, component_path, size_bytes, \
             uploaded_at_ms, active) VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) \
             ON CONFLICT (tenant_id, sha256) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&sha)
        .bind(label)
        .bind(bytes)
        .bind(path)
        .bind(size)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT {PLUGIN_COLS} FROM plugin_versions WHERE tenant_id = $1 AND sha256 = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&sha)
            .fetch_one(&mut *tx)
            .await?;
        let version = plugin_from_row(&row)?;
        tx.commit().await?;
        Ok(version)
    }

    async fn plugin_version(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Option<PluginVersion>> {
        let sql =
            format!("SELECT {PLUGIN_COLS} FROM plugin_versions WHERE tenant_id = $1 AND id = $2");
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(version_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| plugin_from_row(&r))
            .transpose()
    }

    async fn plugin_versions(&self, tenant: &TenantId) -> StoreResult<Vec<PluginVersion>> {
        let sql = format!(
            "SELECT {PLUGIN_COLS} FROM plugin_versions WHERE tenant_id = $1 ORDER BY id DESC"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(plugin_from_row)
            .collect()
    }

    async fn plugin_component(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT component FROM plugin_versions WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_str())
                .bind(version_id)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Err(StoreError::NotFound {
                what: "plugin version",
                id: version_id.to_string(),
                tenant: tenant.clone(),
            }),
            Some(r) => Ok(r.try_get("component")?),
        }
    }

    async fn set_plugin_test_results(
        &self,
        tenant: &TenantId,
        version_id: i64,
        results: &Value,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE plugin_versions SET test_results = $3 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(version_id)
        .bind(Json(results))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound {
                what: "plugin version",
                id: version_id.to_string(),
                tenant: tenant.clone(),
            });
        }
        Ok(())
    }

    async fn activate_plugin(
        &self,
        tenant: &TenantId,
        version_id: Option<i64>,
        actor: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Activation> {
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant).await?;
        if let Some(v) = version_id {
            version_exists(&mut tx, tenant, v).await?;
        }
        let current = current_activation(&mut tx, tenant).await?;
        let current_version = current.as_ref().and_then(|a| a.version_id);
        if let Some(cur) = &current
            && current_version == version_id
        {
            let cur = cur.clone();
            tx.commit().await?;
            return Ok(cur);
        }
        let change = ActivationChange {
            version_id,
            previous_version_id: current_version,
            rollback_to: current.as_ref().map(|a| a.id),
            is_rollback: false,
        };
        let activation = set_active(&mut tx, tenant, change, actor, now_ms).await?;
        tx.commit().await?;
        Ok(activation)
    }

    async fn rollback_plugin(
        &self,
        tenant: &TenantId,
        actor: &str,
        now_ms: TimestampMs,
    ) -> StoreResult<Activation> {
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant).await?;
        let current = current_activation(&mut tx, tenant).await?;
        let Some(target_id) = current.as_ref().and_then(|a| a.rollback_to) else {
            return Err(StoreError::NothingToRollBack(tenant.clone()));
        };
        let sql = format!(
            "SELECT {ACTIVATION_COLS} FROM plugin_activations WHERE tenant_id = $1 AND id = $2"
        );
        let target = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(target_id)
            .fetch_one(&mut *tx)
            .await?;
        let target = activation_from_row(&target)?;
        let change = ActivationChange {
            version_id: target.version_id,
            previous_version_id: current.and_then(|a| a.version_id),
            rollback_to: target.rollback_to,
            is_rollback: true,
        };
        let activation = set_active(&mut tx, tenant, change, actor, now_ms).await?;
        tx.commit().await?;
        Ok(activation)
    }

    async fn active_plugin(&self, tenant: &TenantId) -> StoreResult<Option<PluginVersion>> {
        let sql =
            format!("SELECT {PLUGIN_COLS} FROM plugin_versions WHERE tenant_id = $1 AND active");
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| plugin_from_row(&r))
            .transpose()
    }

    async fn activations(&self, tenant: &TenantId, page: Page) -> StoreResult<Vec<Activation>> {
        let limit = page_limit(page)?;
        let sql = format!(
            "SELECT {ACTIVATION_COLS} FROM plugin_activations WHERE tenant_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(activation_from_row)
            .collect()
    }

    async fn add_rule_fixture(
        &self,
        tenant: &TenantId,
        version_id: i64,
        name: &str,
        input: &Value,
        expected: &Value,
        now_ms: TimestampMs,
    ) -> StoreResult<RuleFixture> {
        if name.is_empty() {
            return Err(StoreError::InvalidInput(
                "fixture name must not be empty".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        version_exists(&mut tx, tenant, version_id).await?;
        let sql = format!(
            "INSERT INTO rule_fixtures (tenant_id, version_id, name, input, expected, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {FIXTURE_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(version_id)
            .bind(name)
            .bind(Json(input))
            .bind(Json(expected))
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| map_unique(e, "rule fixture", name))?;
        let fixture = fixture_from_row(&row)?;
        tx.commit().await?;
        Ok(fixture)
    }

    async fn rule_fixtures(
        &self,
        tenant: &TenantId,
        version_id: i64,
    ) -> StoreResult<Vec<RuleFixture>> {
        let sql = format!(
            "SELECT {FIXTURE_COLS} FROM rule_fixtures WHERE tenant_id = $1 AND version_id = $2 ORDER BY name"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(version_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(fixture_from_row)
            .collect()
    }

    async fn add_invocation_report(
        &self,
        tenant: &TenantId,
        run_id: Option<i64>,
        version_id: Option<i64>,
        report: &Value,
        now_ms: TimestampMs,
    ) -> StoreResult<InvocationReport> {
        let mut tx = self.begin_write().await?;
        if let Some(v) = version_id {
            version_exists(&mut tx, tenant, v).await?;
        }
        if let Some(r) = run_id {
            let found = sqlx::query("SELECT 1 AS one FROM runs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_str())
                .bind(r)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound {
                    what: "run",
                    id: r.to_string(),
                    tenant: tenant.clone(),
                });
            }
        }
        let sql = format!(
            "INSERT INTO invocation_reports (tenant_id, run_id, version_id, at_ms, report) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {REPORT_COLS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(run_id)
            .bind(version_id)
            .bind(now_ms)
            .bind(Json(report))
            .fetch_one(&mut *tx)
            .await?;
        let report = report_from_row(&row)?;
        tx.commit().await?;
        Ok(report)
    }

    async fn invocation_reports(
        &self,
        tenant: &TenantId,
        run_id: Option<i64>,
        page: Page,
    ) -> StoreResult<Vec<InvocationReport>> {
        let limit = page_limit(page)?;
        let sql = format!(
            "SELECT {REPORT_COLS} FROM invocation_reports WHERE tenant_id = $1 \
             AND ($2 IS NULL OR run_id = $2) AND id < $3 ORDER BY id DESC LIMIT $4"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(run_id)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(report_from_row)
            .collect()
    }
}
