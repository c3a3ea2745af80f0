//! The scheduler inside `dealbridge serve`: a pool of workers that sync the service's
//! tenants, on one replica or several sharing one PostgreSQL database.
//!
//! Each of the [`ServiceConfig::workers`] workers repeatedly leases the tenant whose sync
//! has been due longest ([`crate::store::Store::acquire_next_due_tenant`]: PostgreSQL
//! picks it with `FOR UPDATE SKIP LOCKED`, an expired lease is free again), then, under
//! that lease:
//! 1. reads the tenant's sources (its sealed connections and active plugin version) and
//!    reuses its cached engine when they are unchanged, else builds one
//!    ([`engines::build`]: opens the connections, loads the plugin or the default rules,
//!    runs the set-up);
//! 2. runs the resyncs asked for over the API ([`crate::store::PendingResync`]), each
//!    marked done under the lease, then one incremental cycle;
//! 3. renews the lease every third of its time to live while it runs;
//! 4. gives the lease up with the next due time: the tenant's interval after a success,
//!    a doubling back-off (capped at [`ServiceConfig::max_backoff`]) after failures in a
//!    row, or at once when someone asked for a run meanwhile.
//!
//! A worker with nothing to do waits [`ServiceConfig::idle_poll`], or less: a sync now,
//! resume or resync asked for over this replica's API wakes one idle worker at once
//! ([`AppState::wake_scheduler`]). On PostgreSQL the store also announces every run
//! asked for (sync now, resync) with `NOTIFY` on [`crate::store::RUN_REQUESTED_CHANNEL`],
//! and [`listen_to_replicas`] (started by `dealbridge serve`, [`replica_events`]) listens
//! on it, so an idle worker of every replica wakes too; if the listening connection is
//! lost, the replica falls back to its idle poll until it is back. A run leased for a sync now is recorded as
//! [`RunTrigger::Manual`], a first run as a backfill, the others as scheduled.
//!
//! Engines are kept between runs in an [`EngineCache`] of
//! [`ServiceConfig::engine_cache_entries`]: the least recently used is dropped first and
//! rebuilt on its tenant's next run.
//!
//! Fairness and isolation: a tenant runs on at most one worker of all replicas (its
//! lease), the pool is shared oldest-due-first (a leased tenant is due from its run's
//! start, so one that asks for a run during each run cannot keep an old due time and go
//! before tenants that became due meanwhile), every run has a time budget
//! ([`ServiceConfig::run_budget`]; over it, the run is stopped, recorded as failed and
//! the tenant backs off), and a tenant that keeps failing is retried less and less often.
//! A replica that dies leaves its lease to expire; the next holder's run marks the dead
//! run abandoned and, since creates are upserts on cross-reference keys, redoes the
//! unfinished batch without duplicating anything.
//!
//! Shutdown ([`Scheduler::shutdown`]): workers stop taking tenants; runs going on may
//! finish within [`ServiceConfig::shutdown_grace`]; runs still going after it are
//! stopped, recorded as failed and their tenants released as due at once, so another
//! replica picks them up without waiting for the lease to expire.
//!
//! What this module must never do: run a tenant without holding its lease, commit under
//! a lease it lost (the store refuses stale fencing tokens), log a credential, or let one
//! tenant's failure stop a worker.

pub mod engines;
pub mod replica_events;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::AppState;
use crate::store::{
    Lease, Page, PendingResync, ResyncRequest, RunStatus, RunTrigger, Side, Store, StoreError,
    SyncJob, TenantId, TimestampMs,
};
use crate::sync::{CycleReport, Engine, Resync, SyncError};
use engines::{BuildError, BuildOptions, EngineCache, EngineCacheStats, Sources};
pub use replica_events::listen_to_replicas;

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Tenant runs at the same time on this replica (0: this replica serves the API only).
    pub workers: usize,
    /// This replica's name as a lease holder (unique among replicas).
    pub holder: String,
    /// How long a lease lasts without renewal: how soon another replica takes over a
    /// dead one's tenant.
    pub lease_ttl: Duration,
    /// How long an idle worker waits before looking for a due tenant again (a sync now,
    /// resume or resync asked for on this replica wakes one at once).
    pub idle_poll: Duration,
    /// The longest one tenant's run may take.
    pub run_budget: Duration,
    /// The longest wait between runs of a tenant that keeps failing.
    pub max_backoff: Duration,
    /// How long runs going on may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Engines kept between runs (one per tenant; the least recently used is dropped
    /// first and rebuilt on its tenant's next run).
    pub engine_cache_entries: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            workers: 4,
            holder: replica_name(),
            lease_ttl: Duration::from_secs(30),
            idle_poll: Duration::from_secs(1),
            run_budget: Duration::from_secs(15 * 60),
            max_backoff: Duration::from_secs(60 * 60),
            shutdown_grace: Duration::from_secs(30),
            engine_cache_entries: 256,
        }
    }
}

/// A lease holder name for this process: `serve-<pid>-<random>`.
pub fn replica_name() -> String {
    format!("serve-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

fn now_ms() -> TimestampMs {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a run of the scheduler's turn is recorded as: `manual` when the lease was taken
/// for a sync now asked for over the API, else `scheduled` (a first run is a backfill
/// either way).
fn trigger_of(job: &SyncJob) -> RunTrigger {
    if job.leased_for_sync_now {
        RunTrigger::Manual
    } else {
        RunTrigger::Scheduled
    }
}

/// When a tenant is next due after `failures` failed runs in a row (0: it succeeded).
fn next_delay_ms(interval_ms: i64, failures: i64, max_backoff_ms: i64) -> i64 {
    if failures <= 0 {
        return interval_ms;
    }
    let doubled = interval_ms.saturating_mul(1_i64 << (failures - 1).min(20));
    doubled.min(max_backoff_ms.max(interval_ms))
}

/// The running scheduler. Dropping it without [`Scheduler::shutdown`] aborts the workers
/// (their leases expire).
pub struct Scheduler {
    ctx: Arc<Ctx>,
    workers: JoinSet<()>,
    stop: watch::Sender<bool>,
    hard_stop: watch::Sender<bool>,
    grace: Duration,
}

/// What the workers share.
struct Ctx {
    state: AppState,
    config: ServiceConfig,
    engines: Mutex<EngineCache<(Engine, Sources)>>,
}

/// How a tenant's turn ended.
enum Outcome {
    /// Ran (records may have failed; they have their own retries).
    Ran,
    /// The tenant has no connection yet; nothing ran.
    NotConnected(Side),
    /// The run failed.
    Failed(String),
    /// Over the time budget; stopped.
    OverBudget,
    /// Another holder took the lease over; nothing more may be written.
    LeaseLost(StoreError),
    /// The service is shutting down; stopped.
    ShutDown,
}

impl Scheduler {
    /// Starts the workers on `state`'s store, cipher and runtime.
    pub fn start(state: AppState, config: ServiceConfig) -> Scheduler {
        let (stop, _) = watch::channel(false);
        let (hard_stop, _) = watch::channel(false);
        let grace = config.shutdown_grace;
        let ctx = Arc::new(Ctx {
            state,
            engines: Mutex::new(EngineCache::new(config.engine_cache_entries)),
            config,
        });
        let mut workers = JoinSet::new();
        for _ in 0..ctx.config.workers {
            workers.spawn(worker(ctx.clone(), stop.subscribe(), hard_stop.subscribe()));
        }
        tracing::info!(
            workers = ctx.config.workers,
            holder = %ctx.config.holder,
            "scheduler started"
        );
        Scheduler {
            ctx,
            workers,
            stop,
            hard_stop,
            grace,
        }
    }

    /// What the engine cache did so far.
    pub fn engine_cache_stats(&self) -> EngineCacheStats {
        self.ctx.engines.lock().stats()
    }

    /// Stops taking tenants, lets runs going on finish within the grace period, then stops
    /// the others (recorded as failed, their tenants released as due at once).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(self.grace, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!("runs still going after the grace period: stopping them");
            let _ = self.hard_stop.send(true);
            while self.workers.join_next().await.is_some() {}
        }
        tracing::info!("scheduler stopped");
    }
}

async fn worker(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>, hard_stop: watch::Receiver<bool>) {
    let store = ctx.state.shared().store.clone();
    let ttl_ms = millis(ctx.config.lease_ttl);
    loop {
        if *stop.borrow() {
            return;
        }
        match store
            .acquire_next_due_tenant(&ctx.config.holder, ttl_ms, now_ms())
            .await
        {
            Ok(Some(lease)) => {
                // Its own task, so that a panic in one tenant's run cannot take the
                // worker down (the lease then expires and the tenant runs again).
                let tenant = lease.tenant.clone();
                let turn = tokio::spawn({
                    let (ctx, hard_stop) = (ctx.clone(), hard_stop.clone());
                    async move { ctx.turn(lease, hard_stop).await }
                });
                if let Err(e) = turn.await {
                    tracing::error!(tenant = %tenant, error = %e, "a tenant's turn panicked");
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "looking for a due tenant failed"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = ctx.state.scheduler_woken() => {}
            () = tokio::time::sleep(ctx.config.idle_poll) => {}
        }
    }
}

/// Renews `lease` every third of its time to live; returns only when it was lost.
async fn keep_lease(store: Arc<dyn Store>, mut lease: Lease, ttl: Duration) -> StoreError {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.renew_lease(&lease, millis(ttl), now_ms()).await {
            Ok(renewed) => lease = renewed,
            Err(e @ StoreError::LeaseLost { .. }) => return e,
            // A passing store failure: the lease has two more thirds of its life.
            Err(e) => tracing::warn!(tenant = %lease.tenant, error = %e, "renewing a lease failed"),
        }
    }
}

impl Ctx {
    fn store(&self) -> &Arc<dyn Store> {
        &self.state.shared().store
    }

    /// One tenant's turn under `lease`, from the run to giving the lease up.
    async fn turn(self: &Arc<Self>, lease: Lease, mut hard_stop: watch::Receiver<bool>) {
        let tenant = lease.tenant.clone();
        let job = match self.store().sync_job(&tenant).await {
            Ok(Some(job)) => job,
            Ok(None) => return, // deleted meanwhile, with its job row
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "reading the schedule failed");
                let _ = self.store().release_lease(&lease, None).await;
                return;
            }
        };
        let cached = self.engines.lock().take(&tenant);
        let trigger = trigger_of(&job);
        let work = {
            let ctx = self.clone();
            let lease = lease.clone();
            async move { ctx.run(lease, trigger, cached).await }
        };
        let outcome = tokio::select! {
            done = tokio::time::timeout(self.config.run_budget, work) => match done {
                Ok((engine, outcome)) => {
                    if let Some(kept) = engine {
                        self.keep_engine(tenant.clone(), kept);
                    }
                    outcome
                }
                Err(_) => Outcome::OverBudget,
            },
            lost = keep_lease(self.store().clone(), lease.clone(), self.config.lease_ttl) => {
                Outcome::LeaseLost(lost)
            }
            _ = hard_stop.wait_for(|s| *s) => Outcome::ShutDown,
        };
        self.end_turn(&lease, &job, outcome).await;
    }

    fn keep_engine(&self, tenant: TenantId, kept: (Engine, Sources)) {
        let evicted = self.engines.lock().put(tenant, kept);
        if let Some(evicted) = evicted {
            tracing::debug!(tenant = %evicted, "engine dropped from the cache (least recently used)");
        }
    }

    /// Records how the turn ended and gives the lease up with the next due time.
    async fn end_turn(&self, lease: &Lease, job: &SyncJob, outcome: Outcome) {
        let tenant = &lease.tenant;
        let now = now_ms();
        let max_backoff = millis(self.config.max_backoff);
        let (failures, next_due) = match &outcome {
            Outcome::Ran => (0, now + job.interval_ms),
            Outcome::NotConnected(crm) => {
                tracing::info!(tenant = %tenant, crm = %crm, "not synced: a connection is missing");
                (job.consecutive_failures, now + job.interval_ms)
            }
            Outcome::LeaseLost(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "lease lost during a run");
                return;
            }
            Outcome::ShutDown => {
                let message = "the service shut down before the run finished";
                self.stop_running_run(lease, message).await;
                (job.consecutive_failures, now)
            }
            Outcome::Failed(_) | Outcome::OverBudget => {
                if let Outcome::Failed(message) = &outcome {
                    tracing::warn!(tenant = %tenant, error = %message, "run failed");
                } else {
                    let message = format!(
                        "stopped: over the run budget of {} s",
                        self.config.run_budget.as_secs()
                    );
                    tracing::warn!(tenant = %tenant, "{message}");
                    if !self.stop_running_run(lease, &message).await {
                        // Stopped before its run started (in the set-up): still a run
                        // the tenant should see.
                        self.record_failed_run(lease, trigger_of(job), &message)
                            .await;
                    }
                }
                let failures = job.consecutive_failures.saturating_add(1);
                (
                    failures,
                    now + next_delay_ms(job.interval_ms, failures, max_backoff),
                )
            }
        };
        if let Err(e) = self.store().finish_job(lease, next_due, failures).await {
            tracing::warn!(tenant = %tenant, error = %e, "giving the lease up failed");
        }
    }

    /// Ends the run that this lease started and that was stopped mid-way. Returns
    /// whether there was one.
    async fn stop_running_run(&self, lease: &Lease, message: &str) -> bool {
        let runs = match self.store().runs(&lease.tenant, Page::first(10)).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(tenant = %lease.tenant, error = %e, "reading runs failed");
                return false;
            }
        };
        let mut found = false;
        for run in runs
            .iter()
            .filter(|r| r.status == RunStatus::Running && r.fencing_token == lease.fencing_token)
        {
            found = true;
            let _ = self
                .store()
                .finish_run(
                    &lease.tenant,
                    run.id,
                    RunStatus::Failed,
                    Some(message),
                    now_ms(),
                )
                .await;
        }
        found
    }

    /// The work of a turn: the engine (cached or built), the pending resyncs, one cycle.
    /// Returns the engine to keep (none after a failure: it is rebuilt next time).
    async fn run(
        &self,
        lease: Lease,
        trigger: RunTrigger,
        cached: Option<(Engine, Sources)>,
    ) -> (Option<(Engine, Sources)>, Outcome) {
        let tenant = lease.tenant.clone();
        let (mut engine, sources) = match self.engine(lease.clone(), cached).await {
            Ok(e) => e,
            Err(BuildError::NotConnected(crm)) => return (None, Outcome::NotConnected(crm)),
            Err(e) => {
                let message = format!("starting the sync: {e}");
                self.record_failed_run(&lease, trigger, &message).await;
                return (None, Outcome::Failed(message));
            }
        };
        match self.store().pending_resyncs(&tenant, 100).await {
            Ok(pending) => {
                for p in pending {
                    if let Err(e) = self.resync(&mut engine, &p).await {
                        return (None, Outcome::Failed(format!("resync {}: {e}", p.id)));
                    }
                }
            }
            Err(e) => return (None, Outcome::Failed(format!("reading resyncs: {e}"))),
        }
        match engine.run_cycle_as(trigger).await {
            Ok(report) => {
                log_cycle(&tenant, &report);
                (Some((engine, sources)), Outcome::Ran)
            }
            Err(e) => (None, Outcome::Failed(e.to_string())),
        }
    }

    /// The cached engine under the new lease when its sources are unchanged, else a new one.
    async fn engine(
        &self,
        lease: Lease,
        cached: Option<(Engine, Sources)>,
    ) -> Result<(Engine, Sources), BuildError> {
        if let Some((mut engine, built_from)) = cached
            && engines::sources(&self.state, &lease.tenant).await? == built_from
        {
            engine.adopt_lease(lease);
            self.engines.lock().note_reused();
            return Ok((engine, built_from));
        }
        let opts = BuildOptions {
            holder: self.config.holder.clone(),
            lease_ttl_ms: millis(self.config.lease_ttl),
            dry_run: false,
        };
        let built = engines::build(&self.state, lease, &opts).await?;
        self.engines.lock().note_built();
        Ok(built)
    }

    /// A failure before any cycle started (set-up, credentials): a failed run, so the
    /// tenant sees it in its run history.
    async fn record_failed_run(&self, lease: &Lease, trigger: RunTrigger, message: &str) {
        let store = self.store();
        match store.start_run(lease, trigger, now_ms()).await {
            Ok(run) => {
                let _ = store
                    .finish_run(
                        &lease.tenant,
                        run.id,
                        RunStatus::Failed,
                        Some(message),
                        now_ms(),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(tenant = %lease.tenant, error = %e, "recording a failed run failed")
            }
        }
    }

    /// Runs one pending resync and marks it done. A failure of the resync itself is its
    /// outcome; only a store failure (the lease lost, the database gone) is returned.
    async fn resync(&self, engine: &mut Engine, pending: &PendingResync) -> Result<(), SyncError> {
        let mut last_run = None;
        let mut outcome = "succeeded".to_string();
        for what in engine_resyncs(&pending.request) {
            match engine.resync(what).await {
                Ok(report) => {
                    last_run = Some(report.run_id);
                    if !report.failures.is_empty() {
                        outcome = format!("partially_failed: {} records", report.failures.len());
                    }
                }
                Err(e @ SyncError::Store(_)) => return Err(e),
                Err(e) => {
                    outcome = format!("failed: {e}");
                    break;
                }
            }
        }
        self.store()
            .complete_resync(engine.lease(), pending.id, last_run, &outcome, now_ms())
            .await?;
        Ok(())
    }
}

/// How long a dry run's lease lives without renewal (it is renewed while it runs).
const DRY_RUN_LEASE_TTL: Duration = Duration::from_secs(30);

/// Why a dry run did not produce a plan.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// A run (or another dry run) of the tenant holds its lease.
    #[error("a sync of this tenant is running; try again when it has finished")]
    Busy,
    /// Over the time budget.
    #[error("the dry run took longer than {0} s and was stopped")]
    OverBudget(u64),
    /// The engine could not be built (missing connection, set-up, credentials).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The cycle failed.
    #[error("the dry run failed: {0}")]
    Sync(#[from] SyncError),
    /// The store failed or the lease was lost.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Plans one cycle of the tenant with its stored connections and active plugin, writing
/// nothing to either CRM or to the sync state: it takes the tenant's lease (so it never
/// overlaps a run), builds a dry-run engine (set-up only reports what it would create),
/// runs one cycle within `budget` and gives the lease back without touching the schedule.
pub async fn dry_run(
    state: &AppState,
    tenant: &TenantId,
    budget: Duration,
) -> Result<CycleReport, DryRunError> {
    let store = state.shared().store.clone();
    let holder = format!("dry-run-{}", replica_name());
    let ttl = DRY_RUN_LEASE_TTL;
    let lease = store
        .try_acquire_lease(tenant, &holder, millis(ttl), now_ms())
        .await?
        .ok_or(DryRunError::Busy)?;
    let opts = BuildOptions {
        holder,
        lease_ttl_ms: millis(ttl),
        dry_run: true,
    };
    let work = async {
        let (mut engine, _) = engines::build(state, lease.clone(), &opts).await?;
        Ok::<_, DryRunError>(engine.run_cycle().await?)
    };
    let result = tokio::select! {
        done = tokio::time::timeout(budget, work) => {
            done.unwrap_or(Err(DryRunError::OverBudget(budget.as_secs())))
        }
        lost = keep_lease(store.clone(), lease.clone(), ttl) => Err(lost.into()),
    };
    if let Err(e) = store.release_lease(&lease, None).await {
        tracing::warn!(tenant = %tenant, error = %e, "giving a dry run's lease up failed");
    }
    result
}

/// The engine's resyncs for a stored request: Salesforce ids in one filtered resync,
/// HubSpot ids one by one (the engine reads HubSpot records by id). Ids without their
/// side's shape are left out (they would otherwise reach SOQL).
pub fn engine_resyncs(request: &ResyncRequest) -> Vec<Resync> {
    let shaped = |side, ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| valid_record_id(side, id))
            .cloned()
            .collect()
    };
    match request {
        ResyncRequest::All => vec![Resync::All],
        ResyncRequest::Records {
            object_pair,
            side: Side::Salesforce,
            ids,
        } => {
            let ids = shaped(Side::Salesforce, ids);
            if ids.is_empty() {
                return Vec::new();
            }
            let quoted: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
            vec![Resync::Filter {
                pair: *object_pair,
                soql_where: format!("Id IN ({})", quoted.join(", ")),
            }]
        }
        ResyncRequest::Records {
            object_pair,
            side: Side::HubSpot,
            ids,
        } => shaped(Side::HubSpot, ids)
            .into_iter()
            .map(|id| Resync::Record {
                pair: *object_pair,
                side: Side::HubSpot,
                id,
            })
            .collect(),
    }
}

/// Whether `id` has the shape of a record id of `side` (Salesforce: 15 or 18
/// alphanumerics; HubSpot: 1 to 20 digits). Ids go into SOQL, so nothing else may pass.
pub fn valid_record_id(side: Side, id: &str) -> bool {
    match side {
        Side::Salesforce => {
            matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        Side::HubSpot => (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn log_cycle(tenant: &TenantId, report: &CycleReport) {
    let c = &report.counters;
    tracing::info!(
        tenant = %tenant,
        run_id = report.run_id,
        read_salesforce = c.read_salesforce,
        read_hubspot = c.read_hubspot,
        created = c.created_salesforce + c.created_hubspot,
        updated = c.updated_salesforce + c.updated_hubspot,
        failed = c.failed,
        millis = report.millis,
        "cycle finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectPair;

    #[test]
    fn failing_tenants_back_off_doubling_up_to_the_cap() {
        assert_eq!(next_delay_ms(60_000, 0, 3_600_000), 60_000);
        assert_eq!(next_delay_ms(60_000, 1, 3_600_000), 60_000);
        assert_eq!(next_delay_ms(60_000, 2, 3_600_000), 120_000);
        assert_eq!(next_delay_ms(60_000, 4, 3_600_000), 480_000);
        assert_eq!(next_delay_ms(60_000, 40, 3_600_000), 3_600_000);
        // A cap below the interval never makes a failing tenant run more often.
        assert_eq!(next_delay_ms(60_000, 3, 1_000), 60_000);
    }

    #[test]
    fn record_resyncs_become_engine_resyncs() {
        let sf = ResyncRequest::Records {
            object_pair: ObjectPair::OpportunityDeal,
            side: Side::Salesforce,
            ids: vec!["006000000000001AAA".into(), "006000000000002AAA".into()],
        };
        assert_eq!(
            engine_resyncs(&sf),
            vec![Resync::Filter {
                pair: ObjectPair::OpportunityDeal,
                soql_where: "Id IN ('006000000000001AAA', '006000000000002AAA')".into()
            }]
        );
        let hs = ResyncRequest::Records {
            object_pair: ObjectPair::ContactContact,
            side: Side::HubSpot,
            ids: vec!["1".into(), "2".into()],
        };
        assert_eq!(engine_resyncs(&hs).len(), 2);
        let bad = ResyncRequest::Records {
            object_pair: ObjectPair::OpportunityDeal,
            side: Side::Salesforce,
            ids: vec!["x' OR Name != '".into()],
        };
        assert!(
            engine_resyncs(&bad).is_empty(),
            "nothing unshaped reaches SOQL"
        );
        assert_eq!(engine_resyncs(&ResyncRequest::All), vec![Resync::All]);
    }

    #[test]
    fn record_ids_must_have_their_side_shape() {
        assert!(valid_record_id(Side::Salesforce, "006000000000001AAA"));
        assert!(valid_record_id(Side::Salesforce, "006000000000001"));
        assert!(!valid_record_id(Side::Salesforce, "006' OR Id != '"));
        assert!(!valid_record_id(Side::Salesforce, "0060000000001"));
        assert!(valid_record_id(Side::HubSpot, "12345"));
        assert!(!valid_record_id(Side::HubSpot, "12a"));
        assert!(!valid_record_id(Side::HubSpot, ""));
    }
}
