//! The engine: one sync cycle across the object pairs in dependency order, the poll loop,
//! manual resync, dry run and the test fault point (before apply, or between apply and commit).
//!
//! A cycle, per pair, in stages of the dependency order (accounts ↔ companies and
//! contacts ↔ contacts side by side, then opportunities ↔ deals): Salesforce changes page
//! by page (capture → plan → apply → commit; the next page is read while one is handled,
//! its batches are written a few at once and the page's checkpoint is committed once all
//! of them are), Salesforce deletes (a deleted opportunity archives its deal), HubSpot
//! changes the same way (the next page read ahead, its batches in turn), beside the next
//! stage's Salesforce passes (the last stage's alone, a backfill's read-back in two id ranges
//! side by side); then contact roles changed in Salesforce (their changes do not touch
//! the opportunity), then the failed records whose retry is due. A crash anywhere re-runs
//! from the last commit: creates are upserts on cross-reference keys, so nothing is
//! duplicated.
//!
//! It must never commit what a CRM did not acknowledge, never move a checkpoint past a
//! record that is not committed, never write in a dry run, and never hold more than two
//! pages of records per pass (one handled, one read ahead).
//!
//! The `impl Engine` is spread over submodules by stage: this one holds the public API, the
//! cycle and the poll loop; `changes` reads what changed on each side; `batches` cuts a
//! pass into batches and runs them; `writes` makes one batch's CRM writes and commits what
//! was acknowledged; `roles` handles contact roles and associations; `resync` the manual
//! resync and the retry of failed records; `feed` the HubSpot webhook feed (records others
//! changed in HubSpot, read by id after each HubSpot pass); `fault` the test fault point.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::apply::{self, HsMode, SfInput, SfMode, WriteFailure};
use super::associations::{self, ContactRole, DealAssociations, HsChanges, SfChanges};
use super::capture::{self, Cursor};
use super::commit::CommitBuilder;
use super::error::SyncError;
use super::plan::{self, Work};
use super::setup::{PairSchema, PairSpec, Setup, soql_in};
use super::values;
use super::webhook_receiver::{FeedHealth, FeedMark};
use crate::crm::governor::CallUse;
use crate::crm::hubspot::types::UpdateInput;
use crate::crm::hubspot::{HsObject, HubSpotClient};
use crate::crm::salesforce::SalesforceClient;
use crate::crm::salesforce::types::{QueryScope, SObject};
use crate::runtime::{
    self, CrmGateway, LoadedPlugin, PairOutcome, Related, RelatedKind, Skip, Trigger,
};
use crate::store::{
    self, Checkpoint, Direction, ErrorCategory, EventKind, Lease, LinkState, NewSyncError,
    ObjectPair, RecordKey, RunCounters, RunStatus, RunTrigger, Side, Store, Stream, TenantId,
};

mod batches;
mod changes;
mod fault;
mod feed;
mod resync;
mod roles;
mod writes;

pub use fault::FaultPoint;
use fault::FaultSpot;
use writes::Done;

/// What the engine needs beyond the clients, the store, the plugin and the set-up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The tenant.
    pub tenant: TenantId,
    /// The Salesforce external-id field.
    pub external_id_field: String,
    /// The HubSpot cross-reference property.
    pub xref_property: String,
    /// Pairs per plugin call and commit.
    pub batch_size: usize,
    /// Read again this far behind each checkpoint.
    pub lookback_ms: i64,
    /// Plan only: print, write nothing.
    pub dry_run: bool,
    /// Match unlinked contacts by email.
    pub match_contacts_by_email: bool,
    /// The lease holder's name (unique per process).
    pub holder: String,
    /// How long the lease lasts without renewal.
    pub lease_ttl_ms: i64,
    /// Sweep the associations of every linked deal every this many incremental cycles
    /// (their changes do not bump modification times); 0: never.
    pub association_sweep_every: u32,
}

/// A manual resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// Every record of every synced pair.
    All,
    /// One record, by its id on one side.
    Record {
        /// The pair.
        pair: ObjectPair,
        /// The side the id belongs to.
        side: Side,
        /// The id.
        id: String,
    },
    /// The Salesforce records of a pair that match a SOQL condition.
    Filter {
        /// The pair.
        pair: ObjectPair,
        /// A SOQL `WHERE` condition, e.g. `StageName = 'Closed Won'`.
        soql_where: String,
    },
}

/// One planned operation (dry run) or done one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedOp {
    /// `create`, `update`, `delete`, `associate` or `unlink` (a HubSpot archive).
    pub op: &'static str,
    /// `salesforce` or `hubspot`: where it writes.
    pub target: &'static str,
    /// The object pair.
    pub pair: &'static str,
    /// The record (source id, or target id for updates).
    pub record: String,
    /// The fields written, or the associations.
    pub detail: Json,
}

/// What one cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    /// The run id in the store (0 in a dry run).
    pub run_id: i64,
    /// Counters.
    pub counters: RunCounters,
    /// Records that failed this cycle (stored as sync errors).
    pub failures: Vec<FailureLine>,
    /// Planned operations (dry run only).
    pub planned: Vec<PlannedOp>,
    /// Wall time.
    pub millis: u64,
}

/// One failed record.
#[derive(Debug, Clone, Serialize)]
pub struct FailureLine {
    /// The pair.
    pub pair: &'static str,
    /// The record key.
    pub record: String,
    /// The health group.
    pub category: &'static str,
    /// The message.
    pub message: String,
}

/// Progress of a long read (backfill).
pub type ProgressFn = Arc<dyn Fn(&str, u64, Option<u64>) + Send + Sync>;

/// The sync engine of one tenant.
pub struct Engine {
    sf: SalesforceClient,
    hs: HubSpotClient,
    store: Arc<dyn Store>,
    plugin: LoadedPlugin,
    gateway: Arc<dyn CrmGateway>,
    setup: Setup,
    opts: EngineOptions,
    lease: Lease,
    fault: FaultPoint,
    seq: AtomicU64,
    ocr_since_ms: Option<i64>,
    progress: Option<ProgressFn>,
    /// Incremental cycles run (the association sweep's clock).
    incremental_cycles: u64,
    /// Notified when the webhook receiver stored a change someone else made in HubSpot
    /// (the change feed): the poll loop then runs its next cycle without waiting out the
    /// interval.
    hubspot_changes_arrived: Option<Arc<tokio::sync::Notify>>,
    /// The webhook receiver's view of the feed (none: no receiver runs for this engine).
    feed_health: Option<Arc<FeedHealth>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Salesforce => "salesforce",
        Side::HubSpot => "hubspot",
    }
}

/// Cycle-wide state.
struct Cycle {
    run_id: i64,
    trigger: Trigger,
    report: CycleReport,
    failed: HashSet<(ObjectPair, Side, String)>,
    /// The pair whose Salesforce backfill is running while HubSpot held no record of its
    /// object type when it started: there is nothing to match, so new records are created
    /// (the unique cross-reference property still refuses a duplicate) with their
    /// associations inline.
    hubspot_empty: Option<ObjectPair>,
    /// Every contact role, by opportunity, read once for a backfill (a page of roles per
    /// call instead of a query per batch): by the contact backfill into an empty portal
    /// (which creates contacts with a role at the deal-contact lifecycle stage) or else by
    /// the opportunity backfill, which consumes it.
    backfill_roles: Option<HashMap<String, Vec<ContactRole>>>,
    /// HubSpot contacts this cycle created at the deal-contact lifecycle stage: the
    /// lifecycle step has nothing to read or move for them.
    stage_set_at_create: Arc<HashSet<String>>,
    /// Those created by this batch, added to `stage_set_at_create` after its page.
    stage_set_now: Vec<String>,
    /// The Salesforce contacts with a contact role, while a contact backfill into an
    /// empty portal runs before the opportunity backfill.
    role_contacts: Arc<HashSet<String>>,
    /// The HubSpot ids each pair's Salesforce backfill wrote this cycle: where the pair's
    /// HubSpot read-back can be cut into id ranges read side by side.
    backfill_written: HashMap<ObjectPair, Vec<u64>>,
    /// Pairs whose Salesforce backfill ran this cycle while the HubSpot webhook feed was
    /// on and verified: where the feed stood when it started.
    feed_windows: HashMap<ObjectPair, FeedWindow>,
    /// HubSpot records each pair's Salesforce backfill created this cycle.
    hs_created: HashMap<ObjectPair, u64>,
    /// HubSpot records this cycle's search windows read, with their modification time, by
    /// pair: a webhook event of such a record no newer than what the window read needs no
    /// second read.
    hs_seen: HashMap<ObjectPair, HashMap<String, i64>>,
}

/// Where the webhook feed stood when a pair's backfill started. Once every record the
/// backfill created in HubSpot has come back through the feed (signed, no delivery
/// refused meanwhile), the feed is proven from the earliest of them on: every record
/// anyone else created or changed since is in it, so the pair's HubSpot pass need only read
/// what was created before that (on HubSpot's own clock), not read back what the backfill
/// wrote. Unproven, it reads back as without the feed.
#[derive(Debug, Clone, Copy)]
struct FeedWindow {
    mark: FeedMark,
    /// The records the backfill created in HubSpot (set once its Salesforce pass is done).
    created: u64,
}

impl Cycle {
    /// A cycle for work run beside other work of the same run: the same run and view,
    /// its own report.
    fn child(&self) -> Cycle {
        Cycle {
            run_id: self.run_id,
            trigger: self.trigger,
            report: CycleReport {
                run_id: self.run_id,
                ..Default::default()
            },
            failed: HashSet::new(),
            hubspot_empty: self.hubspot_empty,
            backfill_roles: None,
            stage_set_at_create: Arc::clone(&self.stage_set_at_create),
            stage_set_now: Vec::new(),
            role_contacts: Arc::clone(&self.role_contacts),
            backfill_written: HashMap::new(),
            feed_windows: self.feed_windows.clone(),
            hs_created: HashMap::new(),
            hs_seen: HashMap::new(),
        }
    }

    /// A cycle for one batch of `source_ids` (run beside the page's other batches), with
    /// the contact roles of its opportunities taken out of a backfill's role map.
    fn batch_child<'a>(&mut self, source_ids: impl Iterator<Item = &'a str>) -> Cycle {
        let backfill_roles = self.backfill_roles.as_mut().map(|all| {
            source_ids
                .filter_map(|id| all.remove_entry(id))
                .collect::<HashMap<_, _>>()
        });
        Cycle {
            backfill_roles,
            ..self.child()
        }
    }

    /// A cycle for a HubSpot pass run beside the next pair's Salesforce pass: none of the
    /// Salesforce backfill's state.
    fn pass_child(&self) -> Cycle {
        Cycle {
            hubspot_empty: None,
            stage_set_at_create: Arc::default(),
            role_contacts: Arc::default(),
            ..self.child()
        }
    }

    /// A cycle for one pair's Salesforce side run beside another pair's: the same run, its
    /// own report and backfill state. The contacts' pass takes the backfill's contact roles
    /// (if read already); `absorb_pair` hands them back.
    fn pair_child(&mut self, pair: ObjectPair) -> Cycle {
        let backfill_roles = if pair == ObjectPair::ContactContact {
            self.backfill_roles.take()
        } else {
            None
        };
        Cycle {
            hubspot_empty: None,
            backfill_roles,
            ..self.child()
        }
    }

    /// Takes in what a pair's Salesforce side did, with what the rest of the cycle needs of
    /// its backfill: the contact roles it read (for the opportunities) and the contacts it
    /// created at their lifecycle stage.
    fn absorb_pair(&mut self, mut child: Cycle) {
        if let Some(roles) = child.backfill_roles.take() {
            self.backfill_roles = Some(roles);
        }
        let created = std::mem::take(&mut child.stage_set_at_create);
        if !Arc::ptr_eq(&created, &self.stage_set_at_create) && !created.is_empty() {
            Arc::make_mut(&mut self.stage_set_at_create).extend(created.iter().cloned());
        }
        self.absorb(child);
    }

    /// Takes in what a batch's cycle did.
    fn absorb(&mut self, child: Cycle) {
        let Cycle {
            report,
            failed,
            stage_set_now,
            backfill_written,
            feed_windows,
            hs_created,
            hs_seen,
            ..
        } = child;
        self.feed_windows.extend(feed_windows);
        for (pair, n) in hs_created {
            *self.hs_created.entry(pair).or_default() += n;
        }
        for (pair, seen) in hs_seen {
            self.hs_seen.entry(pair).or_default().extend(seen);
        }
        self.report.counters.add(&report.counters);
        self.report.failures.extend(report.failures);
        self.report.planned.extend(report.planned);
        self.failed.extend(failed);
        self.stage_set_now.extend(stage_set_now);
        for (pair, ids) in backfill_written {
            self.backfill_written.entry(pair).or_default().extend(ids);
        }
    }

    /// Gives each pair's feed window the count of records its Salesforce pass created in
    /// HubSpot, before the HubSpot passes (which run on child cycles) need it.
    fn seal_feed_windows(&mut self) {
        for (pair, w) in self.feed_windows.iter_mut() {
            w.created = self.hs_created.get(pair).copied().unwrap_or(0);
        }
    }

    /// Adds the contacts the page's batches created at their lifecycle stage to the
    /// cycle's set (once every batch's view of the set is gone).
    fn settle_stage_set(&mut self) {
        if !self.stage_set_now.is_empty() {
            let now = std::mem::take(&mut self.stage_set_now);
            Arc::make_mut(&mut self.stage_set_at_create).extend(now);
        }
    }
}

impl Engine {
    /// An engine over connected clients, an opened store, a loaded plugin and a finished
    /// set-up. Takes the tenant's lease (waiting up to its TTL for a dead holder's lease to
    /// expire).
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        sf: SalesforceClient,
        hs: HubSpotClient,
        store: Arc<dyn Store>,
        plugin: LoadedPlugin,
        gateway: Arc<dyn CrmGateway>,
        setup: Setup,
        opts: EngineOptions,
    ) -> Result<Engine, SyncError> {
        if store.tenant(&opts.tenant).await?.is_none() {
            match store
                .create_tenant(&opts.tenant, opts.tenant.as_str(), now_ms())
                .await
            {
                Ok(_) | Err(store::StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let deadline =
            Instant::now() + Duration::from_millis(opts.lease_ttl_ms.max(0) as u64 + 1_000);
        let lease = loop {
            if let Some(l) = store
                .try_acquire_lease(&opts.tenant, &opts.holder, opts.lease_ttl_ms, now_ms())
                .await?
            {
                break l;
            }
            if Instant::now() >= deadline {
                return Err(SyncError::Precondition(format!(
                    "tenant `{}` is being synced by another process (its lease did not expire)",
                    opts.tenant
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Self::under_lease(
            sf, hs, store, plugin, gateway, setup, opts, lease,
        ))
    }

    /// An engine that runs under a lease its caller already holds (the service's
    /// scheduler leases tenants itself). The lease must name `opts.tenant`.
    #[allow(clippy::too_many_arguments)]
    pub fn under_lease(
        sf: SalesforceClient,
        hs: HubSpotClient,
        store: Arc<dyn Store>,
        plugin: LoadedPlugin,
        gateway: Arc<dyn CrmGateway>,
        setup: Setup,
        opts: EngineOptions,
        lease: Lease,
    ) -> Engine {
        debug_assert_eq!(lease.tenant, opts.tenant);
        Engine {
            sf,
            hs,
            store,
            plugin,
            gateway,
            setup,
            opts,
            lease,
            fault: FaultPoint::default(),
            seq: AtomicU64::new(0),
            ocr_since_ms: None,
            progress: None,
            incremental_cycles: 0,
            hubspot_changes_arrived: None,
            feed_health: None,
        }
    }

    /// Runs the next cycles under `lease` (a newer lease of the same tenant: the
    /// scheduler keeps an engine between runs and leases the tenant anew for each).
    pub fn adopt_lease(&mut self, lease: Lease) {
        debug_assert_eq!(lease.tenant, self.opts.tenant);
        self.lease = lease;
    }

    /// The lease it runs under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The test fault point.
    pub fn fault_point(&self) -> FaultPoint {
        self.fault.clone()
    }

    /// Reports backfill progress to `f(pair, done, total)`.
    pub fn on_progress(&mut self, f: ProgressFn) {
        self.progress = Some(f);
    }

    /// Wakes on `arrived`, which the HubSpot webhook receiver notifies when it stored new
    /// changes (see [`crate::sync::webhook_receiver::WebhookReceiver::changes_arrived`]).
    pub fn on_hubspot_changes(&mut self, arrived: Arc<tokio::sync::Notify>) {
        self.hubspot_changes_arrived = Some(arrived);
    }

    /// Trusts the webhook feed as far as `health` (its receiver's) proves it.
    pub fn on_feed_health(&mut self, health: Arc<FeedHealth>) {
        self.feed_health = Some(health);
    }

    /// What the webhook receiver notifies when it stored new HubSpot changes, when a
    /// receiver runs for this engine.
    pub fn hubspot_changes_arrived(&self) -> Option<&Arc<tokio::sync::Notify>> {
        self.hubspot_changes_arrived.as_ref()
    }

    /// The set-up it runs with.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Gives the lease up.
    pub async fn release(self) -> Result<(), SyncError> {
        self.store
            .release_lease(&self.lease, Some(now_ms()))
            .await?;
        Ok(())
    }

    async fn renew(&mut self) -> Result<(), SyncError> {
        self.lease = self
            .store
            .renew_lease(&self.lease, self.opts.lease_ttl_ms, now_ms())
            .await?;
        Ok(())
    }

    fn metrics_calls(&self) -> (u64, u64) {
        (
            self.sf.metrics().total_calls(),
            self.hs.metrics().total_calls(),
        )
    }

    /// One incremental (or, the first time, backfill) cycle.
    pub async fn run_cycle(&mut self) -> Result<CycleReport, SyncError> {
        self.run_cycle_as(RunTrigger::Scheduled).await
    }

    /// One cycle whose run is recorded with `trigger` when it is incremental (e.g.
    /// [`RunTrigger::Manual`] for a sync someone asked for); a first cycle is a backfill.
    pub async fn run_cycle_as(&mut self, trigger: RunTrigger) -> Result<CycleReport, SyncError> {
        let span = self.run_span();
        tracing::Instrument::instrument(self.cycle(None, trigger), span).await
    }

    /// A manual resync.
    pub async fn resync(&mut self, what: Resync) -> Result<CycleReport, SyncError> {
        let span = self.run_span();
        tracing::Instrument::instrument(self.cycle(Some(what), RunTrigger::Resync), span).await
    }

    /// The span of one cycle: logs inside it carry the tenant and (once started) the run.
    fn run_span(&self) -> tracing::Span {
        tracing::info_span!(
            "run",
            tenant_id = %self.opts.tenant,
            run_id = tracing::field::Empty
        )
    }

    async fn cycle(
        &mut self,
        resync: Option<Resync>,
        incremental_trigger: RunTrigger,
    ) -> Result<CycleReport, SyncError> {
        let started = Instant::now();
        let (sf0, hs0) = self.metrics_calls();
        self.renew().await?;
        let opp_cp = self.opportunity_checkpoint().await?;
        let trigger = match (&resync, &opp_cp) {
            (Some(_), _) => Trigger::Resync,
            (None, None) => Trigger::Backfill,
            (None, Some(_)) => Trigger::Incremental,
        };
        let rt = match trigger {
            Trigger::Backfill => RunTrigger::Backfill,
            Trigger::Resync => RunTrigger::Resync,
            Trigger::Incremental => incremental_trigger,
        };
        let run_id = if self.opts.dry_run {
            0
        } else {
            self.store.start_run(&self.lease, rt, now_ms()).await?.id
        };
        tracing::Span::current().record("run_id", run_id);
        let mut cy = Cycle {
            run_id,
            trigger,
            report: CycleReport {
                run_id,
                ..Default::default()
            },
            failed: HashSet::new(),
            hubspot_empty: None,
            backfill_roles: None,
            stage_set_at_create: Arc::default(),
            stage_set_now: Vec::new(),
            role_contacts: Arc::default(),
            backfill_written: HashMap::new(),
            feed_windows: HashMap::new(),
            hs_created: HashMap::new(),
            hs_seen: HashMap::new(),
        };
        let cycle_start = now_ms();
        let result = match resync {
            Some(r) => self.do_resync(&mut cy, r).await,
            None => self.do_cycle(&mut cy, cycle_start).await,
        };
        let (sf1, hs1) = self.metrics_calls();
        let calls = RunCounters {
            api_calls_salesforce: (sf1 - sf0) as i64,
            api_calls_hubspot: (hs1 - hs0) as i64,
            ..RunCounters::default()
        };
        cy.report.counters.add(&calls);
        cy.report.millis = started.elapsed().as_millis() as u64;
        if !self.opts.dry_run {
            // Reads and failures are counted outside the batch commits: stored here, with
            // the calls, so the run history shows what the report shows.
            let uncommitted = RunCounters {
                read_salesforce: cy.report.counters.read_salesforce,
                read_hubspot: cy.report.counters.read_hubspot,
                failed: cy.report.counters.failed,
                ..calls
            };
            let _ = self
                .store
                .add_run_counters(&self.opts.tenant, run_id, &uncommitted)
                .await;
            let (status, msg) = match &result {
                Ok(()) if cy.report.failures.is_empty() => (RunStatus::Succeeded, None),
                Ok(()) => (
                    RunStatus::PartiallyFailed,
                    Some(format!("{} records failed", cy.report.failures.len())),
                ),
                Err(e) => (RunStatus::Failed, Some(e.to_string())),
            };
            if !matches!(result, Err(SyncError::Injected(_))) {
                let _ = self
                    .store
                    .finish_run(&self.opts.tenant, run_id, status, msg.as_deref(), now_ms())
                    .await;
                let seconds = started.elapsed().as_secs_f64();
                crate::telemetry::run_finished(rt, status, seconds, &cy.report.counters);
            }
        }
        result.map(|_| cy.report)
    }

    fn synced_pairs(&self) -> Vec<PairSchema> {
        self.setup.pairs.clone()
    }

    async fn do_cycle(&mut self, cy: &mut Cycle, cycle_start: i64) -> Result<(), SyncError> {
        let pairs = self.synced_pairs();
        if self.opts.dry_run {
            // In turn, so that the plan prints pair by pair.
            for schema in &pairs {
                self.salesforce_side(cy, schema).await?;
                self.capture_hs(cy, schema, false).await?;
            }
        } else {
            // Stage by stage in dependency order: a stage's Salesforce passes run side by
            // side, and its HubSpot passes (in turn) beside the next stage's Salesforce
            // passes (search and writes are separate HubSpot budgets): the next stage needs
            // only this one's Salesforce side linked, and the next HubSpot pass waits for
            // both.
            let mut hubspot_behind: Vec<&PairSchema> = Vec::new();
            for stage in dependency_stages(&pairs) {
                cy.seal_feed_windows();
                // Beside another pass a read-back stays one range: its written ids are not
                // needed.
                for behind in &hubspot_behind {
                    cy.backfill_written.remove(&behind.spec.pair);
                }
                let mut hs_cy = cy.pass_child();
                let hubspot_side = async {
                    for behind in &hubspot_behind {
                        self.capture_hs(&mut hs_cy, behind, false).await?;
                    }
                    Ok::<(), SyncError>(())
                };
                let (sf, hs) = tokio::join!(self.salesforce_stage(cy, &stage), hubspot_side);
                cy.absorb(hs_cy);
                sf?;
                hs?;
                hubspot_behind = stage;
            }
            // Alone: nothing else runs beside them, so a backfill's read-back may be read in
            // two id ranges side by side.
            cy.seal_feed_windows();
            for behind in hubspot_behind {
                self.capture_hs(cy, behind, true).await?;
            }
        }
        if let Some(schema) = self.setup.pair(ObjectPair::OpportunityDeal).cloned() {
            // The sweep first: what HubSpot added reaches Salesforce before a contact
            // role's re-plan (Salesforce → HubSpot) could take it away.
            if cy.trigger == Trigger::Incremental {
                self.incremental_cycles += 1;
                let every = u64::from(self.opts.association_sweep_every);
                if every > 0 && self.incremental_cycles.is_multiple_of(every) {
                    self.sweep_associations(cy, &schema).await?;
                }
            }
            self.reconcile_roles(cy, &schema, cycle_start).await?;
        }
        self.retry_due(cy).await?;
        self.settle_unsynced_feed().await?;
        Ok(())
    }

    /// One pair's Salesforce side: its changes, then (opportunities) its deletes.
    async fn salesforce_side(&self, cy: &mut Cycle, schema: &PairSchema) -> Result<(), SyncError> {
        self.capture_sf(cy, schema).await?;
        if schema.spec.pair == ObjectPair::OpportunityDeal {
            self.capture_sf_deletes(cy, schema).await?;
        }
        Ok(())
    }

    /// The Salesforce sides of one dependency stage: a lone pair's on the cycle itself,
    /// several side by side, each on a cycle of its own (its own backfill state) handed
    /// back once all of them are done.
    async fn salesforce_stage(
        &self,
        cy: &mut Cycle,
        stage: &[&PairSchema],
    ) -> Result<(), SyncError> {
        if let [schema] = stage {
            return self.salesforce_side(cy, schema).await;
        }
        let passes: Vec<_> = stage
            .iter()
            .map(|schema| {
                let mut pair_cy = cy.pair_child(schema.spec.pair);
                async move {
                    let r = self.salesforce_side(&mut pair_cy, schema).await;
                    (pair_cy, r)
                }
            })
            .collect();
        let mut first_error = None;
        for (pair_cy, r) in futures_util::future::join_all(passes).await {
            cy.absorb_pair(pair_cy);
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        side: Side,
        id: &str,
        category: ErrorCategory,
        message: &str,
        payload: Json,
    ) -> Result<(), SyncError> {
        cy.report.counters.failed += 1;
        cy.failed.insert((pair, side, id.to_string()));
        cy.report.failures.push(FailureLine {
            pair: pair.as_str(),
            record: format!("{}:{id}", side_name(side)),
            category: category.as_str(),
            message: message.to_string(),
        });
        if self.opts.dry_run {
            return Ok(());
        }
        self.store
            .record_error(
                &self.opts.tenant,
                &NewSyncError {
                    object_pair: pair,
                    record: RecordKey {
                        side,
                        id: id.to_string(),
                    },
                    category,
                    message: message.to_string(),
                    payload,
                },
                now_ms(),
            )
            .await?;
        crate::telemetry::sync_error(category);
        Ok(())
    }

    // ----- Salesforce → HubSpot -----

    /// Runs cycles every `interval` until `stop` resolves; sooner (but no sooner than
    /// half a second after the last one started) when the webhook feed stored a change.
    pub async fn poll(
        &mut self,
        interval: Duration,
        mut on_cycle: impl FnMut(&Result<CycleReport, SyncError>),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), SyncError> {
        tokio::pin!(stop);
        loop {
            let started = Instant::now();
            let r = self.run_cycle().await;
            on_cycle(&r);
            if let Err(e) = &r
                && matches!(
                    e,
                    SyncError::Store(_) | SyncError::Injected(_) | SyncError::Precondition(_)
                )
            {
                return r.map(|_| ());
            }
            let wait = interval.saturating_sub(started.elapsed());
            let arrivals = self.hubspot_changes_arrived.clone();
            let feed_arrival = async {
                match arrivals {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                _ = feed_arrival => {
                    // A stream of changes runs cycles at most this often (each one also
                    // searches every pair's window).
                    let earliest = started + interval.min(FEED_WAKE_MIN_GAP);
                    tokio::select! {
                        _ = &mut stop => return Ok(()),
                        _ = tokio::time::sleep_until(earliest.into()) => {}
                    }
                }
            }
        }
    }
}

/// The shortest time from one cycle's start to the next when the webhook feed wakes the
/// poll loop early.
const FEED_WAKE_MIN_GAP: Duration = Duration::from_millis(500);

/// The synced pairs in stages of the dependency order (SYNC-SPEC): accounts and contacts
/// need nothing of each other; both are linked before the opportunities, whose deals are
/// associated with their companies and contacts. Set-up order within a stage.
fn dependency_stages(pairs: &[PairSchema]) -> Vec<Vec<&PairSchema>> {
    let stage_of = |pair: ObjectPair| match pair {
        ObjectPair::AccountCompany | ObjectPair::ContactContact => 0,
        ObjectPair::OpportunityDeal => 1,
    };
    let mut stages: Vec<Vec<&PairSchema>> = vec![Vec::new(); 2];
    for schema in pairs {
        stages[stage_of(schema.spec.pair)].push(schema);
    }
    stages.retain(|stage| !stage.is_empty());
    stages
}

/// The set-up's pair spec (re-exported for the CLI).
pub fn pair_spec(pair: ObjectPair) -> PairSpec {
    PairSpec::of(pair)
}
