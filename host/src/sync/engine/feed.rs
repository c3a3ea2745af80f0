//! The HubSpot webhook feed: records that someone other than dealbridge created, changed
//! or archived in HubSpot, as the webhook receiver stored them (`sync::webhook_receiver`
//! drops dealbridge's own events), read by id and synced like a search window's records.
//! Their events are settled once handled, so a crash before that only reads them again
//! (echo suppression makes a second pass write nothing).
//!
//! What the feed buys: a backfill need not read back what it wrote to learn whether a
//! person edited it meanwhile, once its own creations came back through the feed
//! (`FeedWindow`, proven by the receiver's `FeedHealth`), and an archive in HubSpot marks
//! its link at once (after a read confirms the record is gone). The search window of each cycle still runs (a safety net for events HubSpot
//! never delivered); an event of a record that window already read at that change or later
//! needs no second read.

use super::*;
use crate::crm::hubspot::types::parse_timestamp_ms;
use crate::store::{PendingHubSpotChange, SettledHubSpotChange};

/// How long a backfill's HubSpot pass waits for its own creations to come back through
/// the feed before it reads back what it wrote instead.
const FEED_PROOF_WAIT: Duration = Duration::from_secs(30);

/// Objects taken from the feed per round (a batch read is 100 a call).
const FEED_ROUND: u32 = 500;
/// Rounds per pair per cycle: a flood of changes is spread over cycles, and a cycle ends.
const FEED_ROUNDS_PER_PASS: usize = 20;

impl Cycle {
    /// Notes the records a search window read (id and modification time, the pair's
    /// `modified` property).
    pub(super) fn note_seen(&mut self, schema: &PairSchema, records: &[HsObject]) {
        if records.is_empty() {
            return;
        }
        let modified = schema.spec.hs_modified;
        let seen = self.hs_seen.entry(schema.spec.pair).or_default();
        for r in records {
            if let Some(ms) = r.prop(modified).and_then(parse_timestamp_ms) {
                seen.insert(r.id.clone(), ms);
            }
        }
    }
}

impl Engine {
    /// Whether the tenant's HubSpot webhook feed is on (events are received and stored).
    pub(super) fn feed_on(&self) -> bool {
        self.setup.webhook_feed.is_some()
    }

    /// Where the feed stands for `object_type`, when a backfill may come to trust it: the
    /// feed is on, set-up verified the app's subscriptions, and a receiver runs for this
    /// engine (not in a dry run).
    pub(super) fn feed_mark(&self, object_type: &str) -> Option<FeedMark> {
        let verified = self.setup.webhook_feed.as_ref().is_some_and(|f| f.verified);
        match &self.feed_health {
            Some(h) if verified && !self.opts.dry_run => Some(h.mark(object_type)),
            _ => None,
        }
    }

    /// When the feed proves itself for a pair's backfill (every record it created in
    /// HubSpot came back through it), the time on HubSpot's clock from which it holds
    /// everyone else's changes; else `None`, and the backfill reads back what it wrote.
    pub(super) async fn feed_proven_since(
        &self,
        schema: &PairSchema,
        window: FeedWindow,
    ) -> Option<i64> {
        let created = window.created;
        let health = self.feed_health.as_ref()?;
        let object_type = schema.spec.hs_object;
        let since = health
            .proven_since(object_type, window.mark, created, FEED_PROOF_WAIT)
            .await;
        if since.is_none() && created > 0 {
            tracing::warn!(
                object_type,
                created,
                "the HubSpot webhook feed did not deliver this backfill's own creations (or refused a delivery); reading back what it wrote"
            );
        }
        since
    }

    /// The pair's records the feed names, read by id and synced; archived ones mark
    /// their links. Their events are settled after (not in a dry run, which reads one
    /// round and writes nothing).
    pub(super) async fn capture_hs_feed(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
    ) -> Result<(), SyncError> {
        if !self.feed_on() {
            return Ok(());
        }
        let pair = schema.spec.pair;
        let object_type = schema.spec.hs_object;
        let props = capture::hs_properties(schema, &self.opts.xref_property);
        let prop_refs: Vec<&str> = props.iter().map(String::as_str).collect();
        let seen = cy.hs_seen.remove(&pair).unwrap_or_default();
        let trigger = cy.trigger;
        for _ in 0..FEED_ROUNDS_PER_PASS {
            let (pending, more) = self.pending_feed(object_type).await?;
            if pending.is_empty() {
                break;
            }
            // Read: every record whose latest event is a deletion (to confirm it is gone:
            // it may have been restored), and every changed one the search window did not
            // already read at that change or later.
            let to_read: Vec<(String, bool)> = pending
                .iter()
                .filter(|p| {
                    p.deleted
                        || seen
                            .get(&p.object_id)
                            .is_none_or(|&read_at| read_at < p.last_occurred_at_ms)
                })
                .map(|p| (p.object_id.clone(), p.deleted))
                .collect();
            if !to_read.is_empty() {
                let ids: Vec<String> = to_read.iter().map(|(id, _)| id.clone()).collect();
                let out = self
                    .hs
                    .batch_read(object_type, &ids, &prop_refs, None)
                    .await?;
                let mut records = Vec::new();
                let mut gone = Vec::new();
                for ((id, deleted), item) in to_read.into_iter().zip(out.items) {
                    match item {
                        Ok(r) => records.push(r),
                        // Archived (its deletion event may still be on its way otherwise).
                        Err(_) if deleted => gone.push(id),
                        Err(_) => {}
                    }
                }
                cy.report.counters.read_hubspot += records.len() as i64;
                self.sync_hs_records(cy, schema, records, trigger, None)
                    .await?;
                if !gone.is_empty() {
                    self.mark_hubspot_archived(cy, pair, &gone).await?;
                }
            }
            if self.opts.dry_run {
                break;
            }
            self.settle_feed(object_type, &pending).await?;
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// Marks the active (or unsynced) links of HubSpot records archived in HubSpot: the
    /// Salesforce record stays (SYNC-SPEC: archiving in HubSpot never deletes in
    /// Salesforce) and the pair stops syncing.
    async fn mark_hubspot_archived(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        hubspot_ids: &[String],
    ) -> Result<(), SyncError> {
        let links = self
            .store
            .links_by_hubspot_ids(&self.opts.tenant, pair, hubspot_ids)
            .await?;
        let mut commit = CommitBuilder::new(pair);
        let now = now_ms();
        for l in links
            .iter()
            .filter(|l| matches!(l.state, LinkState::Active | LinkState::Unsynced))
        {
            if self.opts.dry_run {
                cy.report.planned.push(PlannedOp {
                    op: "unlink",
                    target: "salesforce",
                    pair: pair.as_str(),
                    record: l.salesforce_id.clone(),
                    detail: json!({"hubspot_id": l.hubspot_id, "reason": "archived in HubSpot"}),
                });
                continue;
            }
            commit.record(
                &l.salesforce_id,
                &l.hubspot_id,
                LinkState::HubSpotArchived,
                None,
                EventKind::Unsynced,
                Direction::None,
                "archived",
                cy.run_id,
                now,
                json!({"reason": "the HubSpot record was archived"}),
            );
            commit.counters.skipped += 1;
        }
        if self.opts.dry_run {
            return Ok(());
        }
        let counters = commit.counters;
        self.commit(cy, pair, commit, None, now).await?;
        cy.report.counters.add(&counters);
        Ok(())
    }

    /// The next round of the feed's records of `object_type`, and whether more may follow.
    async fn pending_feed(
        &self,
        object_type: &str,
    ) -> Result<(Vec<PendingHubSpotChange>, bool), SyncError> {
        let pending = self
            .store
            .pending_hubspot_changes(&self.opts.tenant, object_type, FEED_ROUND)
            .await?;
        let more = pending.len() >= FEED_ROUND as usize;
        Ok((pending, more))
    }

    /// Settles `pending` (of `object_type`): each record's events up to the last one read.
    async fn settle_feed(
        &self,
        object_type: &str,
        pending: &[PendingHubSpotChange],
    ) -> Result<(), SyncError> {
        let settled: Vec<SettledHubSpotChange> = pending
            .iter()
            .map(|p| SettledHubSpotChange {
                object_type: object_type.to_string(),
                object_id: p.object_id.clone(),
                up_to_seq: p.last_seq,
            })
            .collect();
        self.store
            .settle_hubspot_changes(&self.lease, &settled)
            .await?;
        Ok(())
    }

    /// Settles the feed's events of HubSpot objects no synced pair reads (their sync is
    /// off), so they do not pile up.
    pub(super) async fn settle_unsynced_feed(&self) -> Result<(), SyncError> {
        if !self.feed_on() || self.opts.dry_run {
            return Ok(());
        }
        for object_type in ["deals", "companies", "contacts"] {
            if self
                .setup
                .pairs
                .iter()
                .any(|p| p.spec.hs_object == object_type)
            {
                continue;
            }
            loop {
                let (pending, more) = self.pending_feed(object_type).await?;
                if pending.is_empty() {
                    break;
                }
                self.settle_feed(object_type, &pending).await?;
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }
}
