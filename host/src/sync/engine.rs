//! The engine: one sync cycle across the object pairs in dependency order, the poll loop,
//! manual resync, dry run and the test fault point (before apply, or between apply and commit).
//!
//! A cycle, per pair (accounts ↔ companies, contacts ↔ contacts, then opportunities ↔
//! deals): Salesforce changes page by page (capture → plan → apply → commit; the next
//! page is read while one is handled, its batches are written a few at once and the
//! page's checkpoint is committed once all of them are), Salesforce deletes (a deleted
//! opportunity archives its deal), HubSpot changes the same way (the next page read ahead,
//! its batches in turn), beside the next pair's Salesforce pass; then contact roles
//! changed in Salesforce (their changes do not touch
//! the opportunity), then the failed records whose retry is due. A crash anywhere re-runs
//! from the last commit: creates are upserts on cross-reference keys, so nothing is
//! duplicated.
//!
//! It must never commit what a CRM did not acknowledge, never move a checkpoint past a
//! record that is not committed, never write in a dry run, and never hold more than two
//! pages of records per pass (one handled, one read ahead).

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

/// A test hook: fail the cycle between apply and commit after this many applied batches
/// (`-1`: never), or just before one batch of a pair and direction writes anything. Lets a
/// test kill the engine after the CRM acknowledged a write but before the link was
/// committed, or while a batch run beside others has written nothing yet.
#[derive(Debug, Clone, Default)]
pub struct FaultPoint(Arc<FaultState>);

#[derive(Debug)]
struct FaultState {
    /// Batches still to let through (`-1`: disarmed).
    left: AtomicI64,
    /// The only spot that counts (none: every batch, between apply and commit).
    only: std::sync::Mutex<Option<FaultSpot>>,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            left: AtomicI64::new(-1),
            only: std::sync::Mutex::new(None),
        }
    }
}

/// Where a batch passes the fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FaultSpot {
    pair: ObjectPair,
    direction: Direction,
    /// Before the batch's writes (else between apply and commit).
    before_apply: bool,
}

impl FaultPoint {
    /// Fires after `n` more applied batches, between apply and commit.
    pub fn arm_after_apply(&self, n: i64) {
        self.arm(None, n);
    }

    /// Fires when the batch of `pair` in `direction` after `n` more of them is about to
    /// write: none of its records reaches a CRM. Other batches pass.
    pub fn arm_before_apply_of(&self, pair: ObjectPair, direction: Direction, n: i64) {
        let spot = FaultSpot {
            pair,
            direction,
            before_apply: true,
        };
        self.arm(Some(spot), n);
    }

    fn arm(&self, only: Option<FaultSpot>, n: i64) {
        *self.0.only.lock().unwrap_or_else(|e| e.into_inner()) = only;
        self.0.left.store(n, Ordering::SeqCst);
    }

    fn check(&self, spot: FaultSpot) -> Result<(), SyncError> {
        let only = *self.0.only.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match only {
            None => !spot.before_apply,
            Some(o) => o == spot,
        };
        if !counts {
            return Ok(());
        }
        // One decrement per batch, even with batches checking at once.
        match self
            .0
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n >= 0).then(|| n - 1)
            }) {
            Ok(0) => Err(SyncError::Injected(if spot.before_apply {
                "before apply"
            } else {
                "between apply and commit"
            })),
            _ => Ok(()),
        }
    }
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
    /// `create`, `update`, `delete` or `associate`.
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

    /// Takes in what a batch's cycle did.
    fn absorb(&mut self, child: Cycle) {
        let Cycle {
            report,
            failed,
            stage_set_now,
            backfill_written,
            ..
        } = child;
        self.report.counters.add(&report.counters);
        self.report.failures.extend(report.failures);
        self.report.planned.extend(report.planned);
        self.failed.extend(failed);
        self.stage_set_now.extend(stage_set_now);
        for (pair, ids) in backfill_written {
            self.backfill_written.entry(pair).or_default().extend(ids);
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
        // Each pair's HubSpot changes are read while the next pair's Salesforce changes are
        // written (search and writes are separate HubSpot budgets): the next pair needs
        // only this one's Salesforce side linked, and the next HubSpot pass waits for both.
        // A dry run goes in turn.
        let pairs = self.synced_pairs();
        let mut hubspot_behind: Option<&PairSchema> = None;
        for schema in &pairs {
            let salesforce_side = async |cy: &mut Cycle| {
                self.capture_sf(cy, schema).await?;
                if schema.spec.pair == ObjectPair::OpportunityDeal {
                    self.capture_sf_deletes(cy, schema).await?;
                }
                Ok::<(), SyncError>(())
            };
            if self.opts.dry_run {
                // In turn, so that the plan prints pair by pair.
                salesforce_side(cy).await?;
                self.capture_hs(cy, schema, false).await?;
                continue;
            }
            match hubspot_behind {
                Some(behind) => {
                    // Beside another pass its read-back stays one range: its written ids
                    // are not needed.
                    cy.backfill_written.remove(&behind.spec.pair);
                    let mut hs_cy = cy.pass_child();
                    let (sf, hs) = tokio::join!(
                        salesforce_side(cy),
                        self.capture_hs(&mut hs_cy, behind, false)
                    );
                    cy.absorb(hs_cy);
                    sf?;
                    hs?;
                }
                None => salesforce_side(cy).await?,
            }
            hubspot_behind = Some(schema);
        }
        if let Some(behind) = hubspot_behind {
            // Alone: nothing else runs beside it, so a backfill's read-back may be read in
            // two id ranges side by side.
            self.capture_hs(cy, behind, true).await?;
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
        Ok(())
    }

    fn cp_cursor(cp: &Option<Checkpoint>) -> Option<Cursor> {
        cp.as_ref().map(|c| Cursor {
            time_ms: c.cursor_time_ms,
            id: c.cursor_id.clone(),
        })
    }

    async fn capture_sf(&self, cy: &mut Cycle, schema: &PairSchema) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let cp = self
            .store
            .checkpoint(&self.opts.tenant, pair, Side::Salesforce, Stream::Changes)
            .await?;
        let backfill = cp.is_none();
        let cursor = Self::cp_cursor(&cp)
            .map(|c| c.back(self.opts.lookback_ms))
            .unwrap_or_else(Cursor::zero);
        let until = now_ms();
        let trigger = if backfill {
            Trigger::Backfill
        } else {
            cy.trigger
        };
        if backfill {
            if capture::hs_is_empty(&self.hs, schema.spec.hs_object).await? {
                cy.hubspot_empty = Some(pair);
            }
            let roles_wanted = match pair {
                ObjectPair::OpportunityDeal => true,
                // Contacts created into an empty portal carry their lifecycle stage when
                // the opportunity backfill that follows will give them a deal.
                ObjectPair::ContactContact => {
                    cy.hubspot_empty == Some(pair) && self.opportunity_backfill_pending().await?
                }
                ObjectPair::AccountCompany => false,
            };
            if roles_wanted && cy.backfill_roles.is_none() {
                cy.backfill_roles = Some(associations::all_contact_roles(&self.sf).await?);
            }
            if pair == ObjectPair::ContactContact
                && let Some(roles) = &cy.backfill_roles
            {
                cy.role_contacts = Arc::new(
                    roles
                        .values()
                        .flatten()
                        .map(|r| r.contact_id.clone())
                        .collect(),
                );
            }
        }
        let result = self
            .capture_sf_pages(cy, schema, cursor, until, trigger, backfill)
            .await;
        cy.hubspot_empty = None;
        cy.role_contacts = Arc::default();
        if pair == ObjectPair::OpportunityDeal || result.is_err() {
            cy.backfill_roles = None;
        }
        result
    }

    /// True when opportunities are synced and have not been backfilled yet (this cycle
    /// backfills them after the contacts).
    async fn opportunity_backfill_pending(&self) -> Result<bool, SyncError> {
        if self.setup.pair(ObjectPair::OpportunityDeal).is_none() {
            return Ok(false);
        }
        Ok(self.opportunity_checkpoint().await?.is_none())
    }

    /// The checkpoint of the opportunities' Salesforce changes (none: not backfilled yet).
    async fn opportunity_checkpoint(&self) -> Result<Option<Checkpoint>, SyncError> {
        Ok(self
            .store
            .checkpoint(
                &self.opts.tenant,
                ObjectPair::OpportunityDeal,
                Side::Salesforce,
                Stream::Changes,
            )
            .await?)
    }

    async fn capture_sf_pages(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        cursor: Cursor,
        until: i64,
        trigger: Trigger,
        backfill: bool,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let select = capture::sf_select(schema, &self.opts.external_id_field);
        let mut done_n = 0u64;
        let mut page =
            capture::sf_changes(&self.sf, schema.spec.sobject, &select, &cursor, until).await?;
        let total = backfill.then_some(page.total);
        loop {
            cy.report.counters.read_salesforce += page.rows.len() as i64;
            let cp_next = Checkpoint {
                object_pair: pair,
                side: Side::Salesforce,
                stream: Stream::Changes,
                cursor_time_ms: page.next.time_ms,
                cursor_id: page.next.id.clone(),
            };
            let rows = std::mem::take(&mut page.rows);
            let n = rows.len();
            // The next page is read while this one is planned and written.
            let next_page = async {
                match &page.more {
                    Some(url) if !page.done => {
                        Some(capture::sf_more(&self.sf, url, &page.next).await)
                    }
                    _ => None,
                }
            };
            let (next, synced) = tokio::join!(
                next_page,
                self.sync_sf_rows(cy, schema, rows, trigger, Some(cp_next))
            );
            synced?;
            done_n += n as u64;
            if let Some(p) = &self.progress {
                p(pair.as_str(), done_n, total);
            }
            match next {
                Some(p) => page = p?,
                None => return Ok(()),
            }
        }
    }

    async fn capture_sf_deletes(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let cp = self
            .store
            .checkpoint(&self.opts.tenant, pair, Side::Salesforce, Stream::Deletes)
            .await?;
        let until = now_ms();
        let Some(mut cursor) = Self::cp_cursor(&cp).map(|c| c.back(self.opts.lookback_ms)) else {
            // First run: nothing deleted before it was ever linked; start the stream now.
            if !self.opts.dry_run {
                let cpn = Checkpoint {
                    object_pair: pair,
                    side: Side::Salesforce,
                    stream: Stream::Deletes,
                    cursor_time_ms: until,
                    cursor_id: String::new(),
                };
                let key = format!("{}:{}:deletes-start", cy.run_id, pair);
                let c = CommitBuilder::new(pair).build(
                    key,
                    self.lease.clone(),
                    vec![cpn],
                    cy.run_id,
                    now_ms(),
                );
                self.store.commit_batch(&self.opts.tenant, &c).await?;
            }
            return Ok(());
        };
        loop {
            let page = capture::sf_deletes(
                &self.sf,
                schema.spec.sobject,
                &cursor,
                until,
                capture::SF_PAGE,
            )
            .await?;
            let ids: Vec<String> = page
                .rows
                .iter()
                .filter_map(|r| r.id().map(str::to_string))
                .collect();
            let links = if ids.is_empty() {
                Vec::new()
            } else {
                self.store
                    .links_by_salesforce_ids(&self.opts.tenant, pair, &ids)
                    .await?
            };
            let active: Vec<_> = links
                .into_iter()
                .filter(|l| l.state == LinkState::Active || l.state == LinkState::Unsynced)
                .collect();
            let mut commit = CommitBuilder::new(pair);
            if !active.is_empty() {
                let hs_ids: Vec<String> = active.iter().map(|l| l.hubspot_id.clone()).collect();
                if self.opts.dry_run {
                    for l in &active {
                        cy.report.planned.push(PlannedOp {
                            op: "delete",
                            target: "hubspot",
                            pair: pair.as_str(),
                            record: l.hubspot_id.clone(),
                            detail: json!({"salesforce_id": l.salesforce_id}),
                        });
                    }
                } else {
                    match self.hs.batch_archive("deals", &hs_ids).await {
                        Ok(()) => {
                            for l in &active {
                                commit.record(
                                    &l.salesforce_id,
                                    &l.hubspot_id,
                                    LinkState::SalesforceDeleted,
                                    None,
                                    EventKind::Deleted,
                                    Direction::SalesforceToHubSpot,
                                    "deleted",
                                    cy.run_id,
                                    now_ms(),
                                    json!({}),
                                );
                            }
                            commit.counters.archived_hubspot += active.len() as i64;
                        }
                        Err(e) => {
                            for l in &active {
                                let f = WriteFailure {
                                    class: e.class(),
                                    message: e.to_string(),
                                };
                                self.fail(
                                    cy,
                                    pair,
                                    Side::Salesforce,
                                    &l.salesforce_id,
                                    f.category(),
                                    &f.message,
                                    json!({"op": "archive", "hubspot_id": l.hubspot_id}),
                                )
                                .await?;
                            }
                        }
                    }
                }
            }
            if !self.opts.dry_run {
                let cpn = Checkpoint {
                    object_pair: pair,
                    side: Side::Salesforce,
                    stream: Stream::Deletes,
                    cursor_time_ms: page.next.time_ms,
                    cursor_id: page.next.id.clone(),
                };
                let key = format!(
                    "{}:{}:del:{}",
                    cy.run_id,
                    pair,
                    self.seq.fetch_add(1, Ordering::SeqCst)
                );
                let counters = commit.counters;
                let c = commit.build(key, self.lease.clone(), vec![cpn], cy.run_id, now_ms());
                self.store.commit_batch(&self.opts.tenant, &c).await?;
                cy.report.counters.add(&counters);
            }
            cursor = page.next;
            if page.done {
                break;
            }
        }
        Ok(())
    }

    /// A pair's HubSpot changes, page by page (the next page is read while one is
    /// handled), a page's batches in turn. `alone`: nothing else of the cycle runs beside
    /// it, so a backfill's read-back may read two id ranges side by side.
    async fn capture_hs(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        alone: bool,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let cp = self
            .store
            .checkpoint(&self.opts.tenant, pair, Side::HubSpot, Stream::Changes)
            .await?;
        let backfill = cp.is_none();
        let cursor = Self::cp_cursor(&cp)
            .map(|c| c.back(self.opts.lookback_ms))
            .unwrap_or_else(Cursor::zero);
        let until = now_ms();
        let props = capture::hs_properties(schema, &self.opts.xref_property);
        let pipelines: Option<Vec<String>> = (pair == ObjectPair::OpportunityDeal)
            .then(|| self.setup.pipelines.iter().map(|p| p.id.clone()).collect());
        if pipelines.as_ref().is_some_and(|p| p.is_empty()) {
            return Ok(());
        }
        let trigger = if backfill {
            Trigger::Backfill
        } else {
            cy.trigger
        };
        if backfill {
            // Everything once, in id order; the checkpoint only at the end of the window.
            let written = cy.backfill_written.remove(&pair).unwrap_or_default();
            let cpn = Checkpoint {
                object_pair: pair,
                side: Side::HubSpot,
                stream: Stream::Changes,
                cursor_time_ms: until,
                cursor_id: String::new(),
            };
            let range = |after: u64, through: Option<u64>| HsRange {
                schema,
                props: &props,
                pipelines: pipelines.as_deref(),
                after,
                through,
                until,
                trigger,
            };
            let split = if alone {
                readback_split(written, capture::HS_PAGE as usize)
            } else {
                None
            };
            let Some(split) = split else {
                return self.hs_backfill_range(cy, range(0, None), Some(cpn)).await;
            };
            // Two id ranges side by side, the split at a page boundary of the ids the
            // Salesforce pass wrote (so no range ends with a page of its own); the window's
            // checkpoint once both are done.
            let (mut low_cy, mut high_cy) = (cy.child(), cy.child());
            let (low, high) = tokio::join!(
                self.hs_backfill_range(&mut low_cy, range(0, Some(split)), None),
                self.hs_backfill_range(&mut high_cy, range(split, None), None),
            );
            cy.absorb(low_cy);
            cy.absorb(high_cy);
            low?;
            high?;
            return self.commit_empty(cy, pair, cpn).await;
        }
        let (props, pipelines) = (&props, pipelines.as_deref());
        let read_page = |cursor: Cursor| async move {
            capture::hs_changes(&self.hs, schema, props, pipelines, &cursor, until).await
        };
        let mut page = read_page(cursor).await?;
        loop {
            cy.report.counters.read_hubspot += page.records.len() as i64;
            let cpn = Checkpoint {
                object_pair: pair,
                side: Side::HubSpot,
                stream: Stream::Changes,
                cursor_time_ms: page.next.time_ms,
                cursor_id: page.next.id.clone(),
            };
            let records = std::mem::take(&mut page.records);
            // The next page (it starts after this one) is read while this one is handled.
            let next_page = async {
                if page.done {
                    None
                } else {
                    Some(read_page(page.next.clone()).await)
                }
            };
            let (following, synced) = tokio::join!(
                next_page,
                self.sync_hs_records(cy, schema, records, trigger, Some(cpn))
            );
            synced?;
            match following {
                Some(p) => page = p?,
                None => return Ok(()),
            }
        }
    }

    /// One id range of a backfill's HubSpot window, page by page in id order (the next page
    /// is read while one is handled); `cp` goes with the last page.
    async fn hs_backfill_range(
        &self,
        cy: &mut Cycle,
        r: HsRange<'_>,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let read_page = |after: u64| {
            capture::hs_backfill_page(
                &self.hs,
                r.schema,
                r.props,
                r.pipelines,
                after,
                r.through,
                r.until,
            )
        };
        let mut page = read_page(r.after).await?;
        let mut cp = cp;
        loop {
            let (records, next) = page;
            cy.report.counters.read_hubspot += records.len() as i64;
            let cp_here = if next.is_none() { cp.take() } else { None };
            let next_page = async {
                match next {
                    Some(after) => Some(read_page(after).await),
                    None => None,
                }
            };
            let (following, synced) = tokio::join!(
                next_page,
                self.sync_hs_records(cy, r.schema, records, r.trigger, cp_here)
            );
            synced?;
            match following {
                Some(p) => page = p?,
                None => return Ok(()),
            }
        }
    }

    /// Contact roles changed (or deleted) since the last look: re-plan their opportunities.
    async fn reconcile_roles(
        &mut self,
        cy: &mut Cycle,
        schema: &PairSchema,
        cycle_start: i64,
    ) -> Result<(), SyncError> {
        let Some(since) = self.ocr_since_ms else {
            self.ocr_since_ms = Some(cycle_start);
            return Ok(());
        };
        let t = capture::soql_time(since - self.opts.lookback_ms);
        let mut opp_ids: Vec<String> = Vec::new();
        for (scope, cond) in [
            (QueryScope::Live, ""),
            (QueryScope::IncludeDeleted, "IsDeleted = true AND "),
        ] {
            let soql = format!(
                "SELECT OpportunityId FROM OpportunityContactRole WHERE {cond}SystemModstamp >= {t}"
            );
            for r in self.sf.query(&soql, scope).await? {
                if let Some(o) = r.str_field("OpportunityId")
                    && !opp_ids.iter().any(|x| x == o)
                {
                    opp_ids.push(o.to_string());
                }
            }
        }
        self.ocr_since_ms = Some(cycle_start);
        if opp_ids.is_empty() {
            return Ok(());
        }
        self.resync_sf_ids(cy, schema, &opp_ids, Trigger::Resync)
            .await
    }

    /// The association sweep: pages through the opportunity ↔ deal links (100 a page, so
    /// each HubSpot v4 batch read is one call per association type) and compares each
    /// deal's HubSpot associations with what Salesforce has (its account and contact roles,
    /// through the links); association changes do not bump `hs_lastmodifieddate`, so the
    /// change scan never sees them. A deal whose HubSpot side has something Salesforce lacks
    /// is re-planned HubSpot → Salesforce with the plugin's policy (an association added in
    /// HubSpot), unless Salesforce deleted that contact's role; a deal that lacks what
    /// Salesforce implies (an association removed in HubSpot), or keeps a contact whose role
    /// Salesforce deleted, is re-planned Salesforce → HubSpot, which restores or removes it.
    async fn sweep_associations(
        &mut self,
        cy: &mut Cycle,
        schema: &PairSchema,
    ) -> Result<(), SyncError> {
        const SWEEP_PAGE: u32 = crate::crm::hubspot::client::ASSOCIATION_BATCH_LIMIT as u32;
        let tenant = self.opts.tenant.clone();
        let company_sync = self.setup.pair(ObjectPair::AccountCompany).is_some();
        let contact_sync = self.setup.pair(ObjectPair::ContactContact).is_some();
        if !company_sync && !contact_sync {
            return Ok(());
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .links(
                    &tenant,
                    ObjectPair::OpportunityDeal,
                    after.as_deref(),
                    SWEEP_PAGE,
                )
                .await?;
            let full = page.len() == SWEEP_PAGE as usize;
            after = page.last().map(|l| l.salesforce_id.clone());
            let active: Vec<store::Link> = page
                .into_iter()
                .filter(|l| l.state == LinkState::Active)
                .collect();
            if !active.is_empty() {
                let (from_hs, from_sf) = self
                    .sweep_candidates(&active, company_sync, contact_sync)
                    .await?;
                if !from_hs.is_empty() {
                    self.resync_hs_ids(cy, schema, &from_hs, Trigger::Resync)
                        .await?;
                }
                if !from_sf.is_empty() {
                    self.resync_sf_ids(cy, schema, &from_sf, Trigger::Resync)
                        .await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The pairs of `links` whose associations differ between the CRMs: the deals to
    /// re-plan HubSpot → Salesforce (HubSpot names a contact that is not a contact role of
    /// the opportunity and whose role Salesforce did not delete, or a company while the
    /// opportunity has no account) and the opportunities to re-plan Salesforce → HubSpot
    /// (HubSpot lacks a linked role contact or the linked account's company, or keeps a
    /// contact whose role Salesforce deleted). Reads are batched: one HubSpot call per
    /// association type, and one Salesforce query each for roles, deleted roles and accounts.
    async fn sweep_candidates(
        &self,
        links: &[store::Link],
        company_sync: bool,
        contact_sync: bool,
    ) -> Result<(Vec<String>, Vec<String>), SyncError> {
        let tenant = &self.opts.tenant;
        let deal_ids: Vec<String> = links.iter().map(|l| l.hubspot_id.clone()).collect();
        let opp_ids: Vec<String> = links.iter().map(|l| l.salesforce_id.clone()).collect();
        let mut assoc = associations::deal_associations(&self.hs, &deal_ids).await?;
        if !company_sync {
            assoc.values_mut().for_each(|a| a.companies.clear());
        }
        if !contact_sync {
            assoc.values_mut().for_each(|a| a.contacts.clear());
        }
        let roles = if contact_sync {
            associations::contact_roles(&self.sf, &opp_ids).await?
        } else {
            HashMap::new()
        };
        let mut accounts: HashMap<String, String> = HashMap::new();
        if company_sync {
            for chunk in opp_ids.chunks(200) {
                let soql = format!(
                    "SELECT Id, AccountId FROM Opportunity WHERE Id IN ({})",
                    soql_in(chunk)
                );
                for r in self.sf.query(&soql, QueryScope::Live).await? {
                    if let (Some(id), Some(a)) = (r.id(), r.str_field("AccountId"))
                        && !a.is_empty()
                    {
                        accounts.insert(id.to_string(), a.to_string());
                    }
                }
            }
        }
        // Contacts by HubSpot id → Salesforce id, and back, for both sides' contacts.
        let hs_contacts: Vec<String> = assoc
            .values()
            .flat_map(|a| a.contacts.iter().cloned())
            .collect();
        let sf_contacts: Vec<String> = roles
            .values()
            .flatten()
            .map(|r| r.contact_id.clone())
            .collect();
        let mut contact_hs_to_sf: HashMap<String, String> = HashMap::new();
        let mut contact_sf_to_hs: HashMap<String, String> = HashMap::new();
        for (by_hs, ids) in [(true, &hs_contacts), (false, &sf_contacts)] {
            if ids.is_empty() {
                continue;
            }
            let found = if by_hs {
                self.store
                    .links_by_hubspot_ids(tenant, ObjectPair::ContactContact, ids)
                    .await?
            } else {
                self.store
                    .links_by_salesforce_ids(tenant, ObjectPair::ContactContact, ids)
                    .await?
            };
            for l in found.into_iter().filter(|l| l.state == LinkState::Active) {
                contact_hs_to_sf.insert(l.hubspot_id.clone(), l.salesforce_id.clone());
                contact_sf_to_hs.insert(l.salesforce_id, l.hubspot_id);
            }
        }
        let account_ids: Vec<String> = accounts.values().cloned().collect();
        let company_of: HashMap<String, String> = if account_ids.is_empty() {
            HashMap::new()
        } else {
            self.store
                .links_by_salesforce_ids(tenant, ObjectPair::AccountCompany, &account_ids)
                .await?
                .into_iter()
                .filter(|l| l.state == LinkState::Active)
                .map(|l| (l.salesforce_id, l.hubspot_id))
                .collect()
        };
        let empty = DealAssociations::default();
        // Per opportunity: its deal's HubSpot contacts that are not its roles, as
        // Salesforce ids (none: not linked).
        let mut extra: HashMap<&str, Vec<Option<String>>> = HashMap::new();
        for l in links {
            let a = assoc.get(&l.hubspot_id).unwrap_or(&empty);
            let role_contacts: HashSet<&str> = roles
                .get(&l.salesforce_id)
                .map(|rs| rs.iter().map(|r| r.contact_id.as_str()).collect())
                .unwrap_or_default();
            for c in &a.contacts {
                let sf = contact_hs_to_sf.get(c);
                if !sf.is_some_and(|sf| role_contacts.contains(sf.as_str())) {
                    extra
                        .entry(l.salesforce_id.as_str())
                        .or_default()
                        .push(sf.cloned());
                }
            }
        }
        let deleted = self.deleted_roles(&extra).await?;
        let (mut from_hs, mut from_sf) = (Vec::new(), Vec::new());
        for l in links {
            let a = assoc.get(&l.hubspot_id).unwrap_or(&empty);
            let opp = l.salesforce_id.as_str();
            let (mut hs_ahead, mut sf_ahead) = (false, false);
            for sf in extra.get(opp).into_iter().flatten() {
                if sf
                    .as_ref()
                    .is_some_and(|sf| deleted.contains(&(opp.to_string(), sf.clone())))
                {
                    sf_ahead = true;
                } else {
                    hs_ahead = true;
                }
            }
            let account = accounts.get(opp);
            hs_ahead |= !a.companies.is_empty() && account.is_none();
            let role_missing = roles.get(opp).into_iter().flatten().any(|r| {
                contact_sf_to_hs
                    .get(&r.contact_id)
                    .is_some_and(|h| !a.contacts.contains(h))
            });
            let company_missing = account
                .and_then(|acc| company_of.get(acc))
                .is_some_and(|c| !a.companies.iter().any(|(x, _)| x == c));
            sf_ahead |= role_missing || company_missing;
            // What HubSpot added goes to Salesforce first; the role's re-plan then
            // brings the rest back.
            if hs_ahead {
                from_hs.push(l.hubspot_id.clone());
            } else if sf_ahead {
                from_sf.push(l.salesforce_id.clone());
            }
        }
        Ok((from_hs, from_sf))
    }

    /// The (opportunity, contact) pairs among `extra` whose contact role Salesforce deleted
    /// (and has not since re-created): one query per 200 opportunities.
    async fn deleted_roles(
        &self,
        extra: &HashMap<&str, Vec<Option<String>>>,
    ) -> Result<HashSet<(String, String)>, SyncError> {
        let opps: Vec<String> = extra
            .iter()
            .filter(|(_, cs)| cs.iter().any(Option::is_some))
            .map(|(o, _)| o.to_string())
            .collect();
        let mut out = HashSet::new();
        for chunk in opps.chunks(200) {
            let soql = format!(
                "SELECT OpportunityId, ContactId FROM OpportunityContactRole WHERE IsDeleted = true AND OpportunityId IN ({})",
                soql_in(chunk)
            );
            for r in self.sf.query(&soql, QueryScope::IncludeDeleted).await? {
                if let (Some(o), Some(c)) = (r.str_field("OpportunityId"), r.str_field("ContactId"))
                {
                    out.insert((o.to_string(), c.to_string()));
                }
            }
        }
        Ok(out)
    }

    async fn resync_sf_ids(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        ids: &[String],
        trigger: Trigger,
    ) -> Result<(), SyncError> {
        let select = capture::sf_select(schema, &self.opts.external_id_field);
        for chunk in ids.chunks(200) {
            let soql = format!(
                "SELECT {} FROM {} WHERE Id IN ({})",
                select.join(", "),
                schema.spec.sobject,
                soql_in(chunk)
            );
            let rows = self.sf.query(&soql, QueryScope::Live).await?;
            cy.report.counters.read_salesforce += rows.len() as i64;
            self.sync_sf_rows(cy, schema, rows, trigger, None).await?;
        }
        Ok(())
    }

    async fn resync_hs_ids(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        ids: &[String],
        trigger: Trigger,
    ) -> Result<(), SyncError> {
        let props = capture::hs_properties(schema, &self.opts.xref_property);
        let prop_refs: Vec<&str> = props.iter().map(String::as_str).collect();
        let out = self
            .hs
            .batch_read(schema.spec.hs_object, ids, &prop_refs, None)
            .await?;
        let recs: Vec<HsObject> = out.items.into_iter().filter_map(Result::ok).collect();
        cy.report.counters.read_hubspot += recs.len() as i64;
        self.sync_hs_records(cy, schema, recs, trigger, None).await
    }

    async fn do_resync(&mut self, cy: &mut Cycle, what: Resync) -> Result<(), SyncError> {
        match what {
            Resync::All => {
                for schema in self.synced_pairs() {
                    self.resync_where(cy, &schema, None).await?;
                }
                Ok(())
            }
            Resync::Filter { pair, soql_where } => {
                let schema = self
                    .setup
                    .pair(pair)
                    .cloned()
                    .ok_or_else(|| SyncError::Config(format!("{pair} is not synced")))?;
                self.resync_where(cy, &schema, Some(&soql_where)).await
            }
            Resync::Record { pair, side, id } => {
                let schema = self
                    .setup
                    .pair(pair)
                    .cloned()
                    .ok_or_else(|| SyncError::Config(format!("{pair} is not synced")))?;
                match side {
                    Side::Salesforce => {
                        self.resync_sf_ids(cy, &schema, &[id], Trigger::Resync)
                            .await
                    }
                    Side::HubSpot => {
                        self.resync_hs_ids(cy, &schema, &[id], Trigger::Resync)
                            .await
                    }
                }
            }
        }
    }

    async fn resync_where(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        cond: Option<&str>,
    ) -> Result<(), SyncError> {
        let select = capture::sf_select(schema, &self.opts.external_id_field);
        let mut last = String::new();
        loop {
            let mut wh = format!("Id > {}", crate::crm::salesforce::types::soql_quote(&last));
            if let Some(c) = cond {
                wh = format!("({c}) AND {wh}");
            }
            let soql = format!(
                "SELECT {} FROM {} WHERE {wh} ORDER BY Id ASC LIMIT {}",
                select.join(", "),
                schema.spec.sobject,
                capture::SF_PAGE
            );
            let page = self
                .sf
                .query_page::<SObject>(&soql, QueryScope::Live)
                .await?;
            let n = page.records.len();
            if let Some(id) = page.records.last().and_then(|r| r.id()) {
                last = id.to_string();
            }
            cy.report.counters.read_salesforce += n as i64;
            self.sync_sf_rows(cy, schema, page.records, Trigger::Resync, None)
                .await?;
            if n < capture::SF_PAGE {
                return Ok(());
            }
        }
    }

    /// Failed records whose retry is due, re-read and synced again.
    async fn retry_due(&self, cy: &mut Cycle) -> Result<(), SyncError> {
        if self.opts.dry_run {
            return Ok(());
        }
        if self.sf.budget_check(CallUse::Retry).is_err() {
            return Ok(());
        }
        let due = self
            .store
            .due_errors(&self.opts.tenant, now_ms(), 1_000)
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        for schema in self.synced_pairs() {
            let pair = schema.spec.pair;
            let mut sf_ids: Vec<String> = due
                .iter()
                .filter(|e| e.object_pair == pair && e.record.side == Side::Salesforce)
                .map(|e| e.record.id.clone())
                .collect();
            let mut hs_ids: Vec<String> = due
                .iter()
                .filter(|e| e.object_pair == pair && e.record.side == Side::HubSpot)
                .map(|e| e.record.id.clone())
                .collect();
            sf_ids.sort();
            sf_ids.dedup();
            hs_ids.sort();
            hs_ids.dedup();
            if !sf_ids.is_empty() {
                self.resync_sf_ids(cy, &schema, &sf_ids, Trigger::Resync)
                    .await?;
            }
            if !hs_ids.is_empty() {
                self.resync_hs_ids(cy, &schema, &hs_ids, Trigger::Resync)
                    .await?;
            }
        }
        // What did not fail again is resolved (synced, or no longer meant to sync).
        for e in due {
            if !cy
                .failed
                .contains(&(e.object_pair, e.record.side, e.record.id.clone()))
            {
                self.store
                    .resolve_error(&self.opts.tenant, e.id, now_ms())
                    .await?;
            }
        }
        Ok(())
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

    async fn sync_sf_rows(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        rows: Vec<SObject>,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        if rows.is_empty() {
            if let Some(cp) = cp {
                self.commit_empty(cy, schema.spec.pair, cp).await?;
            }
            return Ok(());
        }
        let in_flight = self.sf_batches_in_flight(cy, schema.spec.pair);
        self.page_batches(
            cy,
            schema.spec.pair,
            rows,
            in_flight,
            cp,
            SObject::id,
            move |mut child, chunk, cp_here| async move {
                let r = self
                    .sf_batch(&mut child, schema, chunk, trigger, cp_here)
                    .await;
                (child, r)
            },
        )
        .await
    }

    /// Handles one page's records in batches of `batch_size`, then its checkpoint `cp`.
    /// With one in flight they go in turn: the last batch carries the checkpoint and the
    /// first failure stops the page. With more, up to `in_flight` run at once and commit
    /// in any order: the checkpoint is a commit of its own once all of them are
    /// committed, and is not moved when any failed (the page is read again; writes are
    /// keyed). Each batch gets its own cycle, absorbed into `cy` when it is done.
    #[allow(clippy::too_many_arguments)]
    async fn page_batches<T, Fut>(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        items: Vec<T>,
        in_flight: usize,
        cp: Option<Checkpoint>,
        source_id: for<'x> fn(&'x T) -> Option<&'x str>,
        batch: impl Fn(Cycle, Vec<T>, Option<Checkpoint>) -> Fut,
    ) -> Result<(), SyncError>
    where
        Fut: Future<Output = (Cycle, Result<(), SyncError>)>,
    {
        if in_flight <= 1 {
            for (chunk, cp_here) in batches_with_checkpoint(items, self.opts.batch_size, cp) {
                let child = cy.batch_child(chunk.iter().filter_map(source_id));
                let (child, r) = batch(child, chunk, cp_here).await;
                cy.absorb(child);
                cy.settle_stage_set();
                r?;
            }
            return Ok(());
        }
        let jobs: Vec<(Cycle, Vec<T>)> = batches_with_checkpoint(items, self.opts.batch_size, None)
            .into_iter()
            .map(|(chunk, _)| (cy.batch_child(chunk.iter().filter_map(source_id)), chunk))
            .collect();
        let done: Vec<(Cycle, Result<(), SyncError>)> = futures_util::stream::iter(
            jobs.into_iter()
                .map(|(child, chunk)| batch(child, chunk, None)),
        )
        .buffer_unordered(in_flight)
        .collect()
        .await;
        let mut first_error = None;
        for (child, r) in done {
            cy.absorb(child);
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        cy.settle_stage_set();
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(cp) = cp {
            self.commit_empty(cy, pair, cp).await?;
        }
        Ok(())
    }

    /// How many Salesforce → HubSpot batches of one page run at once. One in a dry run
    /// (its plan prints in order) and for contacts matched by email (two batches could
    /// claim one HubSpot contact); otherwise the batches touch disjoint records.
    fn sf_batches_in_flight(&self, cy: &Cycle, pair: ObjectPair) -> usize {
        let email_matching = pair == ObjectPair::ContactContact
            && self.opts.match_contacts_by_email
            && cy.hubspot_empty != Some(pair);
        if self.opts.dry_run || email_matching {
            1
        } else {
            BATCHES_IN_FLIGHT
        }
    }

    async fn commit_empty(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        cp: Checkpoint,
    ) -> Result<(), SyncError> {
        if self.opts.dry_run {
            return Ok(());
        }
        let key = format!(
            "{}:{}:{}",
            cy.run_id,
            pair,
            self.seq.fetch_add(1, Ordering::SeqCst)
        );
        let c =
            CommitBuilder::new(pair).build(key, self.lease.clone(), vec![cp], cy.run_id, now_ms());
        self.store.commit_batch(&self.opts.tenant, &c).await?;
        Ok(())
    }

    async fn sf_batch(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        rows: Vec<SObject>,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let tenant = self.opts.tenant.clone();
        let mut works: Vec<Work> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = row.id().unwrap_or_default().to_string();
            match plan::sf_side(schema, row) {
                Ok(side) => works.push(Work {
                    source_version: row
                        .str_field("SystemModstamp")
                        .unwrap_or_default()
                        .to_string(),
                    sf_ext: row
                        .str_field(&self.opts.external_id_field)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    account_id: row.str_field("AccountId").map(str::to_string),
                    sf: Some(side),
                    ..Work::default()
                }),
                Err((field, e)) => {
                    self.fail(
                        cy,
                        pair,
                        Side::Salesforce,
                        &id,
                        ErrorCategory::Validation,
                        &format!("{field}: {e}"),
                        json!({"field": field}),
                    )
                    .await?;
                }
            }
        }
        drop(rows);
        // Links, then cross-reference ids, then matching.
        let sf_ids: Vec<String> = works
            .iter()
            .filter_map(|w| w.sf.as_ref().map(|s| s.id.clone()))
            .collect();
        let links = self
            .store
            .links_by_salesforce_ids(&tenant, pair, &sf_ids)
            .await?;
        let by_sf: HashMap<&str, &store::Link> = links
            .iter()
            .map(|l| (l.salesforce_id.as_str(), l))
            .collect();
        for w in works.iter_mut() {
            let id = w.sf.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            w.link = by_sf.get(id.as_str()).map(|l| (*l).clone());
        }
        drop(by_sf);
        let echoes = self
            .settled_before_reading(schema, &mut works, trigger)
            .await?;
        let props = capture::hs_properties(schema, &self.opts.xref_property);
        let prop_refs: Vec<&str> = props.iter().map(String::as_str).collect();
        let unlinked: Vec<String> = works
            .iter()
            .filter(|w| w.link.is_none() && w.sf_ext.is_none())
            .filter_map(|w| w.sf.as_ref().map(|s| s.id.clone()))
            .collect();
        // Nothing to match in a portal that held no record of this type.
        let hubspot_empty = cy.hubspot_empty == Some(pair);
        let mut found: HashMap<String, HsObject> = HashMap::new();
        if !unlinked.is_empty() && !hubspot_empty {
            let out = self
                .hs
                .batch_read(
                    schema.spec.hs_object,
                    &unlinked,
                    &prop_refs,
                    Some(&self.opts.xref_property),
                )
                .await?;
            for o in out.items.into_iter().flatten() {
                if let Some(x) = o.prop(&self.opts.xref_property) {
                    found.insert(x.to_string(), o);
                }
            }
        }
        // Contacts: by email.
        let mut by_email: HashMap<String, HsObject> = HashMap::new();
        if pair == ObjectPair::ContactContact && self.opts.match_contacts_by_email && !hubspot_empty
        {
            let email_i = schema.sf_index("Email");
            let emails: Vec<String> = works
                .iter()
                .filter(|w| {
                    w.link.is_none()
                        && w.sf_ext.is_none()
                        && !found.contains_key(w.sf.as_ref().map(|s| s.id.as_str()).unwrap_or(""))
                })
                .filter_map(
                    |w| match email_i.and_then(|i| w.sf.as_ref().map(|s| &s.values[i])) {
                        Some(runtime::Value::Text(e)) if !e.is_empty() => Some(e.to_lowercase()),
                        _ => None,
                    },
                )
                .collect();
            if !emails.is_empty() {
                let out = self
                    .hs
                    .batch_read("contacts", &emails, &prop_refs, Some("email"))
                    .await?;
                for o in out.items.into_iter().flatten() {
                    if let Some(e) = o.prop("email") {
                        by_email.insert(e.to_lowercase(), o);
                    }
                }
            }
        }
        let mut need_read: Vec<String> = Vec::new();
        for (n, w) in works.iter_mut().enumerate() {
            if echoes.contains(&n) {
                continue;
            }
            let id = w.sf.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            let matched = found.remove(&id).or_else(|| {
                let i = schema.sf_index("Email")?;
                match &w.sf.as_ref()?.values[i] {
                    runtime::Value::Text(e) if w.link.is_none() && w.sf_ext.is_none() => {
                        by_email.remove(&e.to_lowercase())
                    }
                    _ => None,
                }
            });
            if let Some(o) = matched {
                // Already linked elsewhere? Then it is not ours to take.
                w.hs_xref = o.prop(&self.opts.xref_property).map(str::to_string);
                if w.hs_xref.as_deref().is_none_or(|x| x == id) {
                    w.hs = plan::hs_side(schema, &o).ok();
                    w.hs_id_hint = Some(o.id.clone());
                }
            } else if let Some(h) = w.hs_id().map(str::to_string) {
                need_read.push(h);
            }
        }
        let mut read: HashMap<String, HsObject> = HashMap::new();
        if !need_read.is_empty() {
            let out = self
                .hs
                .batch_read(schema.spec.hs_object, &need_read, &prop_refs, None)
                .await?;
            for o in out.items.into_iter().flatten() {
                if !o.archived {
                    read.insert(o.id.clone(), o);
                }
            }
        }
        for (n, w) in works.iter_mut().enumerate() {
            if w.hs.is_some() || echoes.contains(&n) {
                continue;
            }
            if let Some(h) = w.hs_id().map(str::to_string) {
                match read.get(&h) {
                    Some(o) => {
                        w.hs_xref = o.prop(&self.opts.xref_property).map(str::to_string);
                        w.hs = plan::hs_side(schema, o).ok();
                    }
                    None if w.link.is_some() => w.hs_gone = true,
                    None => w.sf_ext = None, // a stale external id: the record is gone
                }
            }
        }
        drop(read);
        self.finish_batch(
            cy,
            schema,
            works,
            runtime::Direction::SalesforceToHubspot,
            trigger,
            cp,
        )
        .await
    }

    /// The positions of the linked, active pairs whose read side equals its last-synced
    /// snapshot: echoes of the engine's own writes, or records read again. They are settled
    /// without reading the other CRM (a change there comes through its own stream); their
    /// snapshots are set. None in a resync, which syncs every record again.
    async fn settled_before_reading(
        &self,
        schema: &PairSchema,
        works: &mut [Work],
        trigger: Trigger,
    ) -> Result<HashSet<usize>, SyncError> {
        let active = |w: &Work| {
            w.link
                .as_ref()
                .is_some_and(|l| l.state == LinkState::Active)
        };
        let ids: Vec<String> = works
            .iter()
            .filter(|w| active(w))
            .filter_map(|w| w.sf_id().map(str::to_string))
            .collect();
        if trigger == Trigger::Resync || ids.is_empty() {
            return Ok(HashSet::new());
        }
        let snaps = self
            .store
            .snapshots(&self.opts.tenant, schema.spec.pair, &ids)
            .await?;
        let mut settled = HashSet::new();
        for (n, w) in works.iter_mut().enumerate() {
            if !active(w) {
                continue;
            }
            let Some(snap) = w.sf_id().and_then(|id| snaps.get(id)) else {
                continue;
            };
            w.snapshot = Some(snap.clone());
            plan::compute_changes(schema, w);
            if plan::is_settled(w) {
                settled.insert(n);
            }
        }
        Ok(settled)
    }

    // ----- HubSpot → Salesforce -----

    async fn sync_hs_records(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        recs: Vec<HsObject>,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        if recs.is_empty() {
            if let Some(cp) = cp {
                self.commit_empty(cy, schema.spec.pair, cp).await?;
            }
            return Ok(());
        }
        // In turn: two at once measured no faster (the backfill's read-back of deals, 2,069–
        // 2,311 records/s against 2,108–2,430 in turn, alternated at load 1–2.5).
        self.page_batches(
            cy,
            schema.spec.pair,
            recs,
            1,
            cp,
            hs_source_id,
            move |mut child, chunk, cp_here| async move {
                let r = self
                    .hs_batch(&mut child, schema, chunk, trigger, cp_here)
                    .await;
                (child, r)
            },
        )
        .await
    }

    async fn hs_batch(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        recs: Vec<HsObject>,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let tenant = self.opts.tenant.clone();
        let mut works = Vec::with_capacity(recs.len());
        for o in &recs {
            match plan::hs_side(schema, o) {
                Ok(side) => works.push(Work {
                    source_version: o
                        .prop(schema.spec.hs_modified)
                        .unwrap_or_default()
                        .to_string(),
                    hs_xref: o
                        .prop(&self.opts.xref_property)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    hs: Some(side),
                    ..Work::default()
                }),
                Err((field, e)) => {
                    self.fail(
                        cy,
                        pair,
                        Side::HubSpot,
                        &o.id,
                        ErrorCategory::Validation,
                        &format!("{field}: {e}"),
                        json!({"field": field}),
                    )
                    .await?;
                }
            }
        }
        drop(recs);
        let hs_ids: Vec<String> = works
            .iter()
            .filter_map(|w| w.hs.as_ref().map(|h| h.id.clone()))
            .collect();
        let links = self
            .store
            .links_by_hubspot_ids(&tenant, pair, &hs_ids)
            .await?;
        let by_hs: HashMap<&str, &store::Link> =
            links.iter().map(|l| (l.hubspot_id.as_str(), l)).collect();
        for w in works.iter_mut() {
            let id = w.hs.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            w.link = by_hs.get(id.as_str()).map(|l| (*l).clone());
        }
        drop(by_hs);
        let echoes = self
            .settled_before_reading(schema, &mut works, trigger)
            .await?;
        // Read the Salesforce counterparts (linked, or named by the cross-reference).
        let select = capture::sf_select(schema, &self.opts.external_id_field);
        let want: Vec<String> = works
            .iter()
            .enumerate()
            .filter(|(n, _)| !echoes.contains(n))
            .filter_map(|(_, w)| w.sf_id().map(str::to_string))
            .collect();
        let mut rows: HashMap<String, SObject> = HashMap::new();
        for chunk in want.chunks(200) {
            let soql = format!(
                "SELECT {} FROM {} WHERE Id IN ({})",
                select.join(", "),
                schema.spec.sobject,
                soql_in(chunk)
            );
            for r in self.sf.query(&soql, QueryScope::Live).await? {
                if let Some(id) = r.id() {
                    rows.insert(id.to_string(), r);
                }
            }
        }
        let mut skip = vec![false; works.len()];
        for (i, w) in works.iter_mut().enumerate() {
            if echoes.contains(&i) {
                continue;
            }
            let Some(id) = w.sf_id().map(str::to_string) else {
                continue;
            };
            match rows.remove(&id) {
                Some(r) => {
                    w.sf_ext = r
                        .str_field(&self.opts.external_id_field)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string);
                    w.account_id = r.str_field("AccountId").map(str::to_string);
                    w.sf = plan::sf_side(schema, &r).ok();
                }
                None if w.link.is_some() => skip[i] = true, // deleted in Salesforce: the link already says so, or will
                None => w.hs_xref = None,
            }
        }
        let mut i = 0;
        works.retain(|_| {
            let k = !skip[i];
            i += 1;
            k
        });
        self.finish_batch(
            cy,
            schema,
            works,
            runtime::Direction::HubspotToSalesforce,
            trigger,
            cp,
        )
        .await
    }

    // ----- the shared half: snapshot, associations, plugin, apply, commit -----

    async fn finish_batch(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        mut works: Vec<Work>,
        direction: runtime::Direction,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let tenant = self.opts.tenant.clone();
        let from_sf = direction == runtime::Direction::SalesforceToHubspot;
        let linked_sf: Vec<String> = works
            .iter()
            .filter(|w| w.link.is_some() && w.snapshot.is_none())
            .filter_map(|w| w.sf_id().map(str::to_string))
            .collect();
        let snaps = if linked_sf.is_empty() {
            HashMap::new()
        } else {
            self.store.snapshots(&tenant, pair, &linked_sf).await?
        };
        let mut commit = CommitBuilder::new(pair);
        let now = now_ms();
        let mut active: Vec<Work> = Vec::with_capacity(works.len());
        for mut w in works.drain(..) {
            if let Some(l) = &w.link
                && l.state != LinkState::Active
            {
                // Archived / deleted / unsynced links stay as they are, unless the
                // record is synced again by a resync, or (unsynced) the deal is back in a
                // synced pipeline: a deal syncs while it sits in one (SYNC-SPEC.md).
                let back_in_synced_pipeline = l.state == LinkState::Unsynced
                    && schema.hs_index("pipeline").is_some_and(|i| {
                        matches!(
                            w.hs.as_ref().and_then(|h| h.values.get(i)),
                            Some(runtime::Value::Text(p))
                                if self.setup.pipelines.iter().any(|x| &x.id == p)
                        )
                    });
                if !back_in_synced_pipeline
                    && (trigger != Trigger::Resync || l.state == LinkState::SalesforceDeleted)
                {
                    commit.counters.skipped += 1;
                    continue;
                }
            }
            if w.hs_gone {
                let (s, h) = (
                    w.sf_id().unwrap_or_default().to_string(),
                    w.hs_id().unwrap_or_default().to_string(),
                );
                commit.record(
                    &s,
                    &h,
                    LinkState::HubSpotArchived,
                    None,
                    EventKind::Unsynced,
                    Direction::None,
                    &w.source_version,
                    cy.run_id,
                    now,
                    json!({"reason": "the HubSpot record was archived"}),
                );
                commit.counters.skipped += 1;
                continue;
            }
            if w.snapshot.is_none()
                && let Some(id) = w.sf_id()
            {
                w.snapshot = snaps.get(id).cloned();
            }
            plan::compute_changes(schema, &mut w);
            if plan::is_settled(&w) && trigger != Trigger::Resync {
                commit.counters.echoes_suppressed += 1;
                continue;
            }
            active.push(w);
        }

        // Associations of opportunities.
        let mut roles: HashMap<String, Vec<ContactRole>> = HashMap::new();
        let mut deal_assoc: HashMap<String, DealAssociations> = HashMap::new();
        if pair == ObjectPair::OpportunityDeal && !active.is_empty() {
            let opp_ids: Vec<String> = active
                .iter()
                .filter_map(|w| w.sf.as_ref().map(|s| s.id.clone()))
                .collect();
            let deal_ids: Vec<String> = active
                .iter()
                .filter_map(|w| w.hs.as_ref().map(|s| s.id.clone()))
                .collect();
            if let Some(all) = cy.backfill_roles.as_mut() {
                roles = opp_ids
                    .iter()
                    .filter_map(|id| all.remove(id).map(|r| (id.clone(), r)))
                    .collect();
            } else if !opp_ids.is_empty() {
                roles = associations::contact_roles(&self.sf, &opp_ids).await?;
            }
            deal_assoc = associations::deal_associations(&self.hs, &deal_ids).await?;
            let account_ids: Vec<String> =
                active.iter().filter_map(|w| w.account_id.clone()).collect();
            let contact_ids: Vec<String> = roles
                .values()
                .flatten()
                .map(|r| r.contact_id.clone())
                .collect();
            let company_ids: Vec<String> = deal_assoc
                .values()
                .flat_map(|a| a.companies.iter().map(|c| c.0.clone()))
                .collect();
            let hs_contact_ids: Vec<String> = deal_assoc
                .values()
                .flat_map(|a| a.contacts.iter().cloned())
                .collect();
            let company_sync = self.setup.pair(ObjectPair::AccountCompany).is_some();
            let contact_sync = self.setup.pair(ObjectPair::ContactContact).is_some();
            let acc_links = if company_sync && !account_ids.is_empty() {
                self.store
                    .links_by_salesforce_ids(&tenant, ObjectPair::AccountCompany, &account_ids)
                    .await?
            } else {
                Vec::new()
            };
            let con_links = if contact_sync && !contact_ids.is_empty() {
                self.store
                    .links_by_salesforce_ids(&tenant, ObjectPair::ContactContact, &contact_ids)
                    .await?
            } else {
                Vec::new()
            };
            let comp_links = if company_sync && !company_ids.is_empty() {
                self.store
                    .links_by_hubspot_ids(&tenant, ObjectPair::AccountCompany, &company_ids)
                    .await?
            } else {
                Vec::new()
            };
            let hcon_links = if contact_sync && !hs_contact_ids.is_empty() {
                self.store
                    .links_by_hubspot_ids(&tenant, ObjectPair::ContactContact, &hs_contact_ids)
                    .await?
            } else {
                Vec::new()
            };
            let acc: HashMap<&str, &str> = acc_links
                .iter()
                .filter(|l| l.state == LinkState::Active)
                .map(|l| (l.salesforce_id.as_str(), l.hubspot_id.as_str()))
                .collect();
            let con: HashMap<&str, &str> = con_links
                .iter()
                .filter(|l| l.state == LinkState::Active)
                .map(|l| (l.salesforce_id.as_str(), l.hubspot_id.as_str()))
                .collect();
            let comp: HashMap<&str, &str> = comp_links
                .iter()
                .filter(|l| l.state == LinkState::Active)
                .map(|l| (l.hubspot_id.as_str(), l.salesforce_id.as_str()))
                .collect();
            let hcon: HashMap<&str, &str> = hcon_links
                .iter()
                .filter(|l| l.state == LinkState::Active)
                .map(|l| (l.hubspot_id.as_str(), l.salesforce_id.as_str()))
                .collect();
            for w in active.iter_mut() {
                let mut sf_list = Vec::new();
                if w.sf.is_some() {
                    if company_sync && let Some(a) = &w.account_id {
                        sf_list.push(plan::related(
                            RelatedKind::Company,
                            Some(a.clone()),
                            acc.get(a.as_str()).map(|s| s.to_string()),
                            None,
                            true,
                        ));
                    }
                    if contact_sync && let Some(rs) = w.sf.as_ref().and_then(|s| roles.get(&s.id)) {
                        for r in rs {
                            sf_list.push(plan::related(
                                RelatedKind::Contact,
                                Some(r.contact_id.clone()),
                                con.get(r.contact_id.as_str()).map(|s| s.to_string()),
                                r.role.clone(),
                                r.primary,
                            ));
                        }
                    }
                }
                let mut hs_list = Vec::new();
                if let Some(a) = w.hs.as_ref().and_then(|h| deal_assoc.get(&h.id)) {
                    if company_sync {
                        for (c, primary) in &a.companies {
                            hs_list.push(plan::related(
                                RelatedKind::Company,
                                comp.get(c.as_str()).map(|s| s.to_string()),
                                Some(c.clone()),
                                None,
                                *primary,
                            ));
                        }
                    }
                    if contact_sync {
                        for c in &a.contacts {
                            hs_list.push(plan::related(
                                RelatedKind::Contact,
                                hcon.get(c.as_str()).map(|s| s.to_string()),
                                Some(c.clone()),
                                None,
                                false,
                            ));
                        }
                    }
                }
                w.assoc = runtime::PairAssociations {
                    salesforce: sf_list,
                    hubspot: hs_list,
                };
            }
        }

        // The plugin, a fresh instance per call.
        let mut outcomes: Vec<Result<PairOutcome, String>> = Vec::new();
        if !active.is_empty() {
            let pairs = active
                .iter()
                .map(|w| plan::record_pair(schema, w))
                .collect();
            let batch = plan::batch(schema, &self.setup, direction, trigger, pairs);
            match plan::call_plugin(
                &self.plugin,
                &self.setup.plugin_config,
                self.gateway.clone(),
                batch,
            )
            .await
            {
                Ok(p) => outcomes = p.outcomes,
                Err(e) => {
                    let msg = e.to_string();
                    for w in &active {
                        let (side, id) = if from_sf {
                            (Side::Salesforce, w.sf_id())
                        } else {
                            (Side::HubSpot, w.hs_id())
                        };
                        self.fail(
                            cy,
                            pair,
                            side,
                            id.unwrap_or_default(),
                            ErrorCategory::PluginError,
                            &msg,
                            json!({"plugin_error": msg}),
                        )
                        .await?;
                    }
                    active.clear();
                }
            }
        }

        // Apply.
        let fault_spot = FaultSpot {
            pair,
            direction: if from_sf {
                Direction::SalesforceToHubSpot
            } else {
                Direction::HubSpotToSalesforce
            },
            before_apply: true,
        };
        self.fault.check(fault_spot)?;
        let mut results = self
            .apply_writes(cy, schema, &mut active, &outcomes, direction)
            .await?;
        let waiting = if pair == ObjectPair::OpportunityDeal {
            self.apply_associations(
                cy,
                schema,
                &active,
                &outcomes,
                &results,
                &roles,
                &deal_assoc,
                direction,
            )
            .await?
        } else {
            Vec::new()
        };
        self.fault.check(FaultSpot {
            before_apply: false,
            ..fault_spot
        })?;

        // Commit what was acknowledged.
        let now = now_ms();
        // A Salesforce backfill's HubSpot ids, kept to cut the pair's read-back.
        let collect_written = from_sf && trigger == Trigger::Backfill && !self.opts.dry_run;
        let mut written_hs: Vec<String> = Vec::new();
        for (i, w) in active.iter().enumerate() {
            let dir = if from_sf {
                Direction::SalesforceToHubSpot
            } else {
                Direction::HubSpotToSalesforce
            };
            match (&outcomes[i], results[i].take()) {
                (Ok(PairOutcome::Skip(Skip::UnsyncedPipeline(reason))), _) => {
                    commit.counters.skipped += 1;
                    if let (Some(s), Some(h)) = (w.sf_id(), w.hs_id())
                        && w.link
                            .as_ref()
                            .is_some_and(|l| l.state == LinkState::Active)
                    {
                        commit.record(
                            s,
                            h,
                            LinkState::Unsynced,
                            None,
                            EventKind::Unsynced,
                            Direction::None,
                            &w.source_version,
                            cy.run_id,
                            now,
                            json!({"reason": reason}),
                        );
                    }
                }
                (Ok(PairOutcome::Skip(_)), Some(done))
                | (Ok(PairOutcome::Write(_)), Some(done)) => {
                    let kind = if done.created {
                        EventKind::Created
                    } else if done.written.is_empty() {
                        EventKind::Skipped
                    } else {
                        EventKind::Updated
                    };
                    if done.written.is_empty() {
                        commit.counters.skipped += 1;
                    }
                    let snap = plan::snapshot_after(schema, &done.sf_values, &done.hs_values, now);
                    if collect_written {
                        written_hs.push(done.hs_id.clone());
                    }
                    commit.record(
                        &done.sf_id,
                        &done.hs_id,
                        LinkState::Active,
                        Some(snap),
                        kind,
                        dir,
                        &w.source_version,
                        cy.run_id,
                        now,
                        json!({"fields": done.written}),
                    );
                    match (from_sf, done.created) {
                        (true, true) => commit.counters.created_hubspot += 1,
                        (false, true) => commit.counters.created_salesforce += 1,
                        _ => {}
                    }
                    if done.updated_hs {
                        commit.counters.updated_hubspot += 1;
                    }
                    if done.updated_sf {
                        commit.counters.updated_salesforce += 1;
                    }
                }
                (Ok(PairOutcome::Skip(_)), None) => commit.counters.skipped += 1,
                (Err(_reason), _) => commit.counters.skipped += 1,
                _ => {}
            }
        }
        if self.opts.dry_run {
            cy.report.counters.add(&commit.counters);
            return Ok(());
        }
        let key = format!(
            "{}:{}:{}",
            cy.run_id,
            pair,
            self.seq.fetch_add(1, Ordering::SeqCst)
        );
        let counters = commit.counters;
        let c = commit.build(
            key,
            self.lease.clone(),
            cp.into_iter().collect(),
            cy.run_id,
            now,
        );
        self.store.commit_batch(&tenant, &c).await?;
        cy.report.counters.add(&counters);
        if collect_written {
            cy.backfill_written
                .entry(pair)
                .or_default()
                .extend(written_hs.iter().filter_map(|id| id.parse::<u64>().ok()));
        }
        // Associations waiting for their account or contact: an open error on the record,
        // recorded after the commit (which resolves the record's older errors).
        for (id, side, rels) in waiting {
            let names: Vec<String> = rels
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {}",
                        r.kind,
                        r.salesforce_id
                            .clone()
                            .or(r.hubspot_id.clone())
                            .unwrap_or_default()
                    )
                })
                .collect();
            let msg = format!(
                "associations waiting for their account/contact to be linked: {}",
                names.join(", ")
            );
            self.fail(
                cy,
                pair,
                side,
                &id,
                ErrorCategory::AssociationWaiting,
                &msg,
                json!({"waiting": names}),
            )
            .await?;
        }
        Ok(())
    }

    async fn apply_writes(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        works: &mut [Work],
        outcomes: &[Result<PairOutcome, String>],
        direction: runtime::Direction,
    ) -> Result<Vec<Option<Done>>, SyncError> {
        let pair = schema.spec.pair;
        let from_sf = direction == runtime::Direction::SalesforceToHubspot;
        let mut done: Vec<Option<Done>> = vec![None; works.len()];
        // Start every pair from its current values.
        let mut sf_vals: Vec<Vec<runtime::Value>> = works
            .iter()
            .map(|w| {
                w.sf.as_ref()
                    .map(|s| s.values.clone())
                    .unwrap_or_else(|| vec![runtime::Value::Null; schema.sf_fields.len()])
            })
            .collect();
        let mut hs_vals: Vec<Vec<runtime::Value>> = works
            .iter()
            .map(|w| {
                w.hs.as_ref()
                    .map(|s| s.values.clone())
                    .unwrap_or_else(|| vec![runtime::Value::Null; schema.hs_fields.len()])
            })
            .collect();
        let mut hs_upserts: Vec<(usize, UpdateInput)> = Vec::new();
        let mut hs_updates: Vec<(usize, UpdateInput)> = Vec::new();
        let mut sf_upserts: Vec<(usize, SfInput)> = Vec::new();
        let mut sf_updates: Vec<(usize, SfInput)> = Vec::new();
        let mut written: Vec<Vec<String>> = vec![Vec::new(); works.len()];
        let mut failed: Vec<Option<WriteFailure>> = vec![None; works.len()];
        for (i, w) in works.iter().enumerate() {
            let src_side = if from_sf {
                Side::Salesforce
            } else {
                Side::HubSpot
            };
            let src_id = if from_sf { w.sf_id() } else { w.hs_id() }
                .unwrap_or_default()
                .to_string();
            let pw = match &outcomes[i] {
                Ok(PairOutcome::Write(pw)) => pw,
                Ok(PairOutcome::Error(e)) => {
                    let cat = match e.kind {
                        runtime::ErrorKind::UnmappedStage
                        | runtime::ErrorKind::UnmappedPipeline => ErrorCategory::PicklistMismatch,
                        runtime::ErrorKind::MissingOwner | runtime::ErrorKind::InvalidValue => {
                            ErrorCategory::Validation
                        }
                        _ => ErrorCategory::PluginError,
                    };
                    let payload = json!({"kind": runtime::error_kind_name(e.kind), "field": e.field, "message": e.message});
                    self.fail(
                        cy,
                        pair,
                        src_side,
                        &src_id,
                        cat,
                        &format!("{}: {}", runtime::error_kind_name(e.kind), e.message),
                        payload,
                    )
                    .await?;
                    continue;
                }
                Ok(PairOutcome::Skip(Skip::UpToDate)) => {
                    // Both sides agree: link them (a first match) and take the snapshot.
                    if let (Some(s), Some(h)) = (w.sf.as_ref(), w.hs.as_ref()) {
                        done[i] = Some(Done {
                            sf_id: s.id.clone(),
                            hs_id: h.id.clone(),
                            created: false,
                            written: Vec::new(),
                            sf_values: sf_vals[i].clone(),
                            hs_values: hs_vals[i].clone(),
                            updated_sf: false,
                            updated_hs: false,
                            created_with: None,
                        });
                    }
                    continue;
                }
                _ => continue,
            };
            let mut hs_p = crate::crm::hubspot::Properties::new();
            for fw in &pw.hubspot {
                let Some(kind) = schema.hs_writable.get(&fw.field) else {
                    continue;
                };
                let wire = values::to_hubspot(&fw.value, *kind);
                if let Some(idx) = schema.hs_index(&fw.field) {
                    hs_vals[i][idx] =
                        values::from_hubspot(Some(&wire), *kind).unwrap_or(runtime::Value::Null);
                }
                hs_p.insert(fw.field.clone(), wire);
                written[i].push(format!("hubspot.{}", fw.field));
            }
            let mut sf_f = crate::crm::salesforce::Fields::new();
            for fw in &pw.salesforce {
                let Some(kind) = schema.sf_writable.get(&fw.field) else {
                    continue;
                };
                let wire = values::to_salesforce(&fw.value, *kind);
                if let Some(idx) = schema.sf_index(&fw.field) {
                    sf_vals[i][idx] =
                        values::from_salesforce(&wire, *kind).unwrap_or(runtime::Value::Null);
                }
                sf_f.insert(fw.field.clone(), wire);
                written[i].push(format!("salesforce.{}", fw.field));
            }
            if self.opts.dry_run {
                if !hs_p.is_empty() {
                    let op = if w.hs.is_some() { "update" } else { "create" };
                    cy.report.planned.push(PlannedOp {
                        op,
                        target: "hubspot",
                        pair: pair.as_str(),
                        record: w.hs_id().or(w.sf_id()).unwrap_or_default().to_string(),
                        detail: json!(hs_p),
                    });
                }
                if !sf_f.is_empty() {
                    let op = if w.sf.is_some() { "update" } else { "create" };
                    cy.report.planned.push(PlannedOp {
                        op,
                        target: "salesforce",
                        pair: pair.as_str(),
                        record: w.sf_id().or(w.hs_id()).unwrap_or_default().to_string(),
                        detail: Json::Object(sf_f),
                    });
                }
                continue;
            }
            // HubSpot side.
            if !hs_p.is_empty() || (from_sf && w.hs.is_none()) {
                match (&w.hs, w.sf_id()) {
                    (Some(h), sf_id) => {
                        if let Some(s) = sf_id
                            && w.hs_xref.as_deref() != Some(s)
                        {
                            hs_p.insert(self.opts.xref_property.clone(), s.to_string());
                        }
                        hs_updates.push((
                            i,
                            UpdateInput {
                                id: h.id.clone(),
                                properties: hs_p,
                            },
                        ));
                    }
                    (None, Some(s)) => {
                        hs_p.insert(self.opts.xref_property.clone(), s.to_string());
                        hs_upserts.push((
                            i,
                            UpdateInput {
                                id: s.to_string(),
                                properties: hs_p,
                            },
                        ));
                    }
                    (None, None) => {}
                }
            }
            // Salesforce side.
            if !sf_f.is_empty() || (!from_sf && w.sf.is_none()) {
                match (&w.sf, w.hs_id()) {
                    (Some(s), hs_id) => {
                        if let Some(h) = hs_id
                            && w.sf_ext.as_deref() != Some(h)
                        {
                            sf_f.insert(
                                self.opts.external_id_field.clone(),
                                Json::String(h.to_string()),
                            );
                        }
                        sf_updates.push((
                            i,
                            SfInput {
                                id: Some(s.id.clone()),
                                fields: sf_f,
                            },
                        ));
                    }
                    (None, Some(h)) => {
                        sf_f.insert(
                            self.opts.external_id_field.clone(),
                            Json::String(h.to_string()),
                        );
                        sf_upserts.push((
                            i,
                            SfInput {
                                id: None,
                                fields: sf_f,
                            },
                        ));
                    }
                    (None, None) => {}
                }
            }
        }
        let mut new_hs: HashMap<usize, String> = HashMap::new();
        let mut new_sf: HashMap<usize, String> = HashMap::new();
        let mut created: HashSet<usize> = HashSet::new();
        // A portal that held none of these records: create them with their associations.
        let hs_creates: Vec<(usize, apply::HsNew, DealAssociations)> =
            if cy.hubspot_empty == Some(pair) {
                std::mem::take(&mut hs_upserts)
                    .into_iter()
                    .map(|(i, input)| {
                        let desired = match &outcomes[i] {
                            Ok(PairOutcome::Write(pw)) => pw.hubspot_associations.as_deref(),
                            _ => None,
                        };
                        let (associations, with) =
                            associations::inline_hubspot(desired.unwrap_or_default());
                        let create_only = self.stage_at_create(cy, pair, &works[i], &input);
                        (
                            i,
                            apply::HsNew {
                                input,
                                associations,
                                create_only,
                            },
                            with,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
        let mut inline_assoc: HashMap<usize, DealAssociations> = HashMap::new();
        let hs_obj = schema.spec.hs_object;
        let sobj = schema.spec.sobject;
        // Source side first when creating: HubSpot for SF→HS, Salesforce for HS→SF.
        let order: [bool; 2] = if from_sf {
            [true, false]
        } else {
            [false, true]
        };
        for hs_turn in order {
            if hs_turn {
                if !hs_creates.is_empty() {
                    let news: Vec<apply::HsNew> =
                        hs_creates.iter().map(|(_, n, _)| n.clone()).collect();
                    let res =
                        apply::hs_create(&self.hs, hs_obj, &self.opts.xref_property, &news).await;
                    for ((i, n, with), (r, inline)) in hs_creates.iter().zip(res) {
                        match r {
                            Ok(o) => {
                                if o.new != Some(false) {
                                    created.insert(*i);
                                }
                                new_hs.insert(*i, o.id.clone());
                                if inline {
                                    inline_assoc.insert(*i, with.clone());
                                }
                                if inline && !n.create_only.is_empty() {
                                    cy.stage_set_now.push(o.id.clone());
                                }
                            }
                            Err(f) => failed[*i] = Some(f),
                        }
                    }
                }
                for (list, mode) in [
                    (
                        &hs_upserts,
                        HsMode::Upsert(self.opts.xref_property.as_str()),
                    ),
                    (&hs_updates, HsMode::Update),
                ] {
                    let inputs: Vec<UpdateInput> = list.iter().map(|(_, u)| u.clone()).collect();
                    let res = apply::hs_write(&self.hs, hs_obj, mode, &inputs).await;
                    for ((i, _), r) in list.iter().zip(res) {
                        match r {
                            Ok(o) => {
                                if matches!(mode, HsMode::Upsert(_)) {
                                    if o.new != Some(false) {
                                        created.insert(*i);
                                    }
                                    new_hs.insert(*i, o.id.clone());
                                }
                            }
                            Err(f) => failed[*i] = Some(f),
                        }
                    }
                }
            } else {
                // Salesforce writes need the HubSpot id of records created just now.
                let fix = |list: &[(usize, SfInput)],
                           new_hs: &HashMap<usize, String>,
                           failed: &[Option<WriteFailure>]|
                 -> Vec<(usize, SfInput)> {
                    list.iter()
                        .filter(|(i, _)| failed[*i].is_none())
                        .map(|(i, s)| {
                            let mut s = s.clone();
                            if let Some(h) = new_hs.get(i) {
                                s.fields.insert(
                                    self.opts.external_id_field.clone(),
                                    Json::String(h.clone()),
                                );
                            }
                            (*i, s)
                        })
                        .collect()
                };
                let ups = fix(&sf_upserts, &new_hs, &failed);
                let upd = fix(&sf_updates, &new_hs, &failed);
                for (list, mode) in [
                    (&ups, SfMode::Upsert(self.opts.external_id_field.as_str())),
                    (&upd, SfMode::Update),
                ] {
                    let inputs: Vec<SfInput> = list.iter().map(|(_, s)| s.clone()).collect();
                    let res = apply::sf_write(&self.sf, sobj, mode, &inputs).await;
                    for ((i, _), r) in list.iter().zip(res) {
                        match r {
                            Ok(ack) => {
                                if matches!(mode, SfMode::Upsert(_)) {
                                    if ack.created {
                                        created.insert(*i);
                                    }
                                    new_sf.insert(*i, ack.id);
                                }
                            }
                            Err(f) => failed[*i] = Some(f),
                        }
                    }
                }
            }
        }
        if self.opts.dry_run {
            return Ok(done);
        }
        for (i, w) in works.iter().enumerate() {
            let wrote =
                !written[i].is_empty() || new_hs.contains_key(&i) || new_sf.contains_key(&i);
            if let Some(f) = &failed[i] {
                let (side, id) = if from_sf {
                    (Side::Salesforce, w.sf_id())
                } else {
                    (Side::HubSpot, w.hs_id())
                };
                let payload = json!({"class": f.class.as_str(), "fields": written[i]});
                self.fail(
                    cy,
                    pair,
                    side,
                    id.unwrap_or_default(),
                    f.category(),
                    &f.message,
                    payload,
                )
                .await?;
                continue;
            }
            // A plan that only changes associations writes no field, but its pair is
            // done all the same (so that its associations are applied).
            let assoc_only = matches!(&outcomes[i], Ok(PairOutcome::Write(pw))
                if pw.hubspot_associations.is_some() || pw.salesforce_associations.is_some());
            if (!wrote && !assoc_only) || done[i].is_some() {
                continue;
            }
            let sf_id = new_sf.get(&i).cloned().or(w.sf_id().map(str::to_string));
            let hs_id = new_hs.get(&i).cloned().or(w.hs_id().map(str::to_string));
            if let (Some(s), Some(h)) = (sf_id, hs_id) {
                let updated_hs =
                    written[i].iter().any(|f| f.starts_with("hubspot.")) && w.hs.is_some();
                let updated_sf =
                    written[i].iter().any(|f| f.starts_with("salesforce.")) && w.sf.is_some();
                done[i] = Some(Done {
                    sf_id: s,
                    hs_id: h,
                    created: created.contains(&i),
                    written: written[i].clone(),
                    sf_values: sf_vals[i].clone(),
                    hs_values: hs_vals[i].clone(),
                    updated_sf,
                    updated_hs,
                    created_with: inline_assoc.remove(&i),
                });
            }
        }
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_associations(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        works: &[Work],
        outcomes: &[Result<PairOutcome, String>],
        results: &[Option<Done>],
        roles: &HashMap<String, Vec<ContactRole>>,
        deal_assoc: &HashMap<String, DealAssociations>,
        direction: runtime::Direction,
    ) -> Result<Vec<(String, Side, Vec<Related>)>, SyncError> {
        let pair = schema.spec.pair;
        let from_sf = direction == runtime::Direction::SalesforceToHubspot;
        let mut hs_changes = HsChanges::default();
        let mut sf_changes = SfChanges::default();
        let mut waiting = Vec::new();
        let mut involved: Vec<(usize, String)> = Vec::new();
        // HubSpot contacts that get a deal in this batch (inline at create, or added).
        let mut new_contacts: Vec<String> = Vec::new();
        let empty = DealAssociations::default();
        for (i, w) in works.iter().enumerate() {
            let Ok(PairOutcome::Write(pw)) = &outcomes[i] else {
                continue;
            };
            let Some(done) = &results[i] else {
                if !self.opts.dry_run {
                    continue;
                }
                if let Some(d) = &pw.hubspot_associations {
                    cy.report.planned.push(PlannedOp { op: "associate", target: "hubspot", pair: pair.as_str(), record: w.hs_id().or(w.sf_id()).unwrap_or_default().to_string(), detail: json!(d.iter().map(|r| json!({"kind": format!("{:?}", r.kind), "hubspot_id": r.hubspot_id, "salesforce_id": r.salesforce_id})).collect::<Vec<_>>()) });
                }
                if let Some(d) = &pw.salesforce_associations {
                    cy.report.planned.push(PlannedOp { op: "associate", target: "salesforce", pair: pair.as_str(), record: w.sf_id().or(w.hs_id()).unwrap_or_default().to_string(), detail: json!(d.iter().map(|r| json!({"kind": format!("{:?}", r.kind), "hubspot_id": r.hubspot_id, "salesforce_id": r.salesforce_id})).collect::<Vec<_>>()) });
                }
                continue;
            };
            let src = if from_sf {
                (done.sf_id.clone(), Side::Salesforce)
            } else {
                (done.hs_id.clone(), Side::HubSpot)
            };
            if let Some(created) = &done.created_with {
                new_contacts.extend(created.contacts.iter().cloned());
            }
            if let Some(desired) = &pw.hubspot_associations {
                let current = done
                    .created_with
                    .as_ref()
                    .or_else(|| deal_assoc.get(&done.hs_id))
                    .unwrap_or(&empty);
                let before = (
                    hs_changes.companies_add.len(),
                    hs_changes.contacts_add.len(),
                    hs_changes.companies_remove.len(),
                    hs_changes.contacts_remove.len(),
                );
                let wait =
                    associations::diff_hubspot(&done.hs_id, desired, current, &mut hs_changes);
                if before
                    != (
                        hs_changes.companies_add.len(),
                        hs_changes.contacts_add.len(),
                        hs_changes.companies_remove.len(),
                        hs_changes.contacts_remove.len(),
                    )
                {
                    involved.push((i, src.0.clone()));
                }
                if !wait.is_empty() {
                    waiting.push((src.0.clone(), src.1, wait));
                }
            }
            if let Some(desired) = &pw.salesforce_associations {
                let current = roles.get(&done.sf_id).map(Vec::as_slice).unwrap_or(&[]);
                let wait = associations::diff_salesforce(
                    &done.sf_id,
                    w.account_id.as_deref(),
                    desired,
                    current,
                    &mut sf_changes,
                );
                if !wait.is_empty() {
                    waiting.push((src.0.clone(), src.1, wait));
                }
            }
        }
        if self.opts.dry_run {
            return Ok(waiting);
        }
        let applied = if hs_changes.is_empty() {
            Ok(())
        } else {
            associations::apply_hubspot(&self.hs, &hs_changes).await
        };
        if applied.is_ok() {
            new_contacts.extend(hs_changes.contacts_add.iter().map(|a| a.to.clone()));
            self.promote_deal_contacts(cy, &new_contacts).await?;
        }
        if let Err(e) = applied {
            let class = e.crm_class().unwrap_or(crate::crm::ErrorClass::Other);
            for (_, id) in &involved {
                let side = if from_sf {
                    Side::Salesforce
                } else {
                    Side::HubSpot
                };
                self.fail(
                    cy,
                    pair,
                    side,
                    id,
                    apply::category_of(class),
                    &format!("associations: {e}"),
                    json!({"op": "associate"}),
                )
                .await?;
            }
        }
        if !sf_changes.roles_add.is_empty() {
            let recs: Vec<crate::crm::salesforce::Fields> = sf_changes
                .roles_add
                .iter()
                .map(|(o, c, role, primary)| {
                    let mut f = crate::crm::salesforce::Fields::new();
                    f.insert("OpportunityId".into(), Json::String(o.clone()));
                    f.insert("ContactId".into(), Json::String(c.clone()));
                    if let Some(r) = role {
                        f.insert("Role".into(), Json::String(r.clone()));
                    }
                    f.insert("IsPrimary".into(), Json::Bool(*primary));
                    f
                })
                .collect();
            match self
                .sf
                .create_many("OpportunityContactRole", &recs, false)
                .await
            {
                Ok(res) => {
                    for (r, (o, _, _, _)) in res.iter().zip(&sf_changes.roles_add) {
                        if !r.success {
                            let msg = r
                                .errors
                                .first()
                                .map(|e| format!("{}: {}", e.status_code, e.message))
                                .unwrap_or_default();
                            let cls = r.error_class().unwrap_or(crate::crm::ErrorClass::Other);
                            self.fail(
                                cy,
                                pair,
                                Side::Salesforce,
                                o,
                                apply::category_of(cls),
                                &format!("contact role: {msg}"),
                                json!({"op": "contact_role"}),
                            )
                            .await?;
                        }
                    }
                }
                Err(e) => {
                    for (o, _, _, _) in &sf_changes.roles_add {
                        self.fail(
                            cy,
                            pair,
                            Side::Salesforce,
                            o,
                            apply::category_of(e.class()),
                            &format!("contact role: {e}"),
                            json!({"op": "contact_role"}),
                        )
                        .await?;
                    }
                }
            }
        }
        if !sf_changes.account_set.is_empty() {
            let inputs: Vec<SfInput> = sf_changes
                .account_set
                .iter()
                .map(|(o, a)| SfInput {
                    id: Some(o.clone()),
                    fields: [("AccountId".to_string(), Json::String(a.clone()))]
                        .into_iter()
                        .collect(),
                })
                .collect();
            let res = apply::sf_write(&self.sf, "Opportunity", SfMode::Update, &inputs).await;
            for (r, (o, _)) in res.into_iter().zip(&sf_changes.account_set) {
                if let Err(f) = r {
                    self.fail(
                        cy,
                        pair,
                        Side::Salesforce,
                        o,
                        f.category(),
                        &format!("account: {}", f.message),
                        json!({"op": "account"}),
                    )
                    .await?;
                }
            }
        }
        Ok(waiting)
    }

    /// The create-only properties of a new HubSpot record: for a contact the backfill creates
    /// while it knows every contact role (an empty portal, opportunities still to
    /// backfill), the lifecycle stage the lifecycle step would move it to once its
    /// opportunity's deal is associated (a new contact has no stage yet), unless the
    /// plugin writes the stage itself.
    fn stage_at_create(
        &self,
        cy: &Cycle,
        pair: ObjectPair,
        work: &Work,
        input: &UpdateInput,
    ) -> crate::crm::hubspot::Properties {
        let mut out = crate::crm::hubspot::Properties::new();
        if pair != ObjectPair::ContactContact
            || input
                .properties
                .contains_key(associations::LIFECYCLE_PROPERTY)
        {
            return out;
        }
        if work.sf_id().is_some_and(|id| cy.role_contacts.contains(id)) {
            out.insert(
                associations::LIFECYCLE_PROPERTY.to_string(),
                associations::DEAL_CONTACT_STAGE.to_string(),
            );
        }
        out
    }

    /// Moves the HubSpot contacts that just got a deal to the `opportunity` lifecycle stage
    /// (batched, see [`associations::promote_deal_contacts`]); a contact HubSpot refuses is
    /// a failure of that contact. The contact's change that comes back is no change of a
    /// synced field, so it settles as an echo.
    async fn promote_deal_contacts(
        &self,
        cy: &mut Cycle,
        contacts: &[String],
    ) -> Result<(), SyncError> {
        let contacts: Vec<String> = contacts
            .iter()
            .filter(|c| !cy.stage_set_at_create.contains(*c))
            .cloned()
            .collect();
        let refused = match associations::promote_deal_contacts(&self.hs, &contacts).await {
            Ok((_, refused)) => refused
                .into_iter()
                .map(|(id, msg)| (id, ErrorCategory::Validation, msg))
                .collect(),
            Err(e) => {
                let class = e.crm_class().unwrap_or(crate::crm::ErrorClass::Other);
                contacts
                    .iter()
                    .map(|id| (id.clone(), apply::category_of(class), e.to_string()))
                    .collect::<Vec<_>>()
            }
        };
        for (id, category, msg) in refused {
            self.fail(
                cy,
                ObjectPair::ContactContact,
                Side::HubSpot,
                &id,
                category,
                &format!("lifecycle stage: {msg}"),
                json!({"op": "lifecycle_stage"}),
            )
            .await?;
        }
        Ok(())
    }

    /// Runs cycles every `interval` until `stop` resolves.
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
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Salesforce → HubSpot batches of one page written at once (each a plugin call, a few
/// CRM calls and a commit): one is planned while the other's calls are in flight. Each
/// batch in flight holds about 7 MiB (its records, the plugin instance); four kept the
/// 100k backfill's peak at 272 MiB, over its 256 MiB budget.
const BATCHES_IN_FLIGHT: usize = 2;

/// The HubSpot id of a captured record, for a batch's cycle (only the Salesforce side
/// takes anything out of the cycle by id).
fn hs_source_id(o: &HsObject) -> Option<&str> {
    Some(o.id.as_str())
}

/// What was acknowledged for one pair.
#[derive(Debug, Clone)]
struct Done {
    sf_id: String,
    hs_id: String,
    created: bool,
    written: Vec<String>,
    sf_values: Vec<runtime::Value>,
    hs_values: Vec<runtime::Value>,
    updated_sf: bool,
    updated_hs: bool,
    /// The HubSpot associations the record was created with (none: created without, or
    /// not created).
    created_with: Option<DealAssociations>,
}

/// The set-up's pair spec (re-exported for the CLI).
pub fn pair_spec(pair: ObjectPair) -> PairSpec {
    PairSpec::of(pair)
}

/// One id range of a backfill's HubSpot window: what `hs_backfill_range` reads.
#[derive(Clone, Copy)]
struct HsRange<'a> {
    schema: &'a PairSchema,
    props: &'a [String],
    pipelines: Option<&'a [String]>,
    /// Ids above this one...
    after: u64,
    /// ...up to this one (inclusive; none: no upper bound).
    through: Option<u64>,
    until: i64,
    trigger: Trigger,
}

/// Where to cut a backfill's read-back in two id ranges read side by side: the id that
/// ends the first half of the pages that the HubSpot ids the Salesforce pass wrote fill
/// (`page` records a page), so that, when HubSpot holds only those, both ranges are whole
/// pages and the read costs no more search calls than one range would. None when they fill
/// fewer than two pages.
fn readback_split(mut written: Vec<u64>, page: usize) -> Option<u64> {
    written.sort_unstable();
    written.dedup();
    let pages = written.len().div_ceil(page.max(1));
    if pages < 2 {
        return None;
    }
    written.get((pages / 2) * page - 1).copied()
}

/// Splits captured records into batches of at most `size`, in order. Only the
/// last batch carries the checkpoint, so the cursor moves past a page only when
/// every batch of it has been committed.
fn batches_with_checkpoint<T>(
    mut items: Vec<T>,
    size: usize,
    checkpoint: Option<Checkpoint>,
) -> Vec<(Vec<T>, Option<Checkpoint>)> {
    let size = size.max(1);
    let mut batches = Vec::with_capacity(items.len().div_ceil(size));
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(size));
        batches.push((std::mem::replace(&mut items, rest), None));
    }
    if let Some(last) = batches.last_mut() {
        last.1 = checkpoint;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_back_is_cut_at_a_page_boundary_of_the_written_ids() {
        // 5 pages of 2: the first range holds 2 whole pages (ids up to the 4th).
        let ids: Vec<u64> = vec![19, 3, 7, 11, 5, 13, 17, 2, 23, 29];
        assert_eq!(readback_split(ids, 2), Some(7));
        // Duplicates count once; fewer than two pages: no cut.
        assert_eq!(readback_split(vec![4, 4, 9, 12], 2), Some(9));
        assert_eq!(readback_split(vec![4, 9], 2), None);
        assert_eq!(readback_split(Vec::new(), 200), None);
        // 10,000 ids in pages of 200: 25 whole pages below the cut.
        let ids: Vec<u64> = (1..=10_000).collect();
        assert_eq!(readback_split(ids, 200), Some(5_000));
    }

    #[test]
    fn batches_keep_order_and_only_the_last_carries_the_checkpoint() {
        let cp = Checkpoint {
            object_pair: ObjectPair::OpportunityDeal,
            side: store::Side::Salesforce,
            stream: store::Stream::Changes,
            cursor_time_ms: 42,
            cursor_id: "006".into(),
        };
        let batches = batches_with_checkpoint((1..=5).collect(), 2, Some(cp.clone()));
        let sizes: Vec<Vec<i32>> = batches.iter().map(|(b, _)| b.clone()).collect();
        assert_eq!(sizes, vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert!(batches[..2].iter().all(|(_, c)| c.is_none()));
        assert_eq!(batches[2].1, Some(cp));
        assert!(batches_with_checkpoint(Vec::<i32>::new(), 2, None).is_empty());
    }

    #[test]
    fn the_fault_point_fires_once_after_n_applies() {
        let f = FaultPoint::default();
        let spot = |before_apply| FaultSpot {
            pair: ObjectPair::AccountCompany,
            direction: Direction::SalesforceToHubSpot,
            before_apply,
        };
        assert!(f.check(spot(false)).is_ok());
        f.arm_after_apply(1);
        assert!(f.check(spot(true)).is_ok());
        assert!(f.check(spot(false)).is_ok());
        assert!(f.check(spot(true)).is_ok());
        assert!(matches!(f.check(spot(false)), Err(SyncError::Injected(_))));
        assert!(f.check(spot(false)).is_ok());
    }

    #[test]
    fn a_fault_before_apply_counts_only_its_pair_and_direction() {
        let f = FaultPoint::default();
        let (deals, back) = (ObjectPair::OpportunityDeal, Direction::HubSpotToSalesforce);
        let spot = |pair, direction| FaultSpot {
            pair,
            direction,
            before_apply: true,
        };
        f.arm_before_apply_of(deals, back, 1);
        assert!(f.check(spot(deals, Direction::SalesforceToHubSpot)).is_ok());
        assert!(f.check(spot(ObjectPair::ContactContact, back)).is_ok());
        assert!(f.check(spot(deals, back)).is_ok());
        let after_apply = FaultSpot {
            before_apply: false,
            ..spot(deals, back)
        };
        assert!(f.check(after_apply).is_ok());
        assert!(matches!(
            f.check(spot(deals, back)),
            Err(SyncError::Injected(_))
        ));
        assert!(f.check(spot(deals, back)).is_ok());
    }
}
