//! The HubSpot webhook feed: records that someone other than dealbridge created, changed
//! or archived in HubSpot, as the webhook receiver stored them (`sync::webhook_receiver`
//! drops dealbridge's own events), read by id and synced like a search window's records.
//! Their events are settled once handled, so a crash before that only reads them again
//! (echo suppression makes a second pass write nothing).
//!
//! What the feed buys: a backfill need not read back what it wrote to learn whether a
//! person edited it meanwhile (`FeedWindow`), and an archive in HubSpot marks its link
//! at once. The search window of each cycle still runs (a safety net for events HubSpot
//! never delivered); an event of a record that window already read at that change or later
//! needs no second read.

use super::*;
use crate::store::{PendingHubSpotChange, SettledHubSpotChange};

/// Objects taken from the feed per round (a batch read is 100 a call).
const FEED_ROUND: u32 = 500;
/// Rounds per pair per cycle: a flood of changes is spread over cycles, and a cycle ends.
const FEED_ROUNDS_PER_PASS: usize = 20;

impl Cycle {
    /// Notes the records a search window read (id and modification time).
    pub(super) fn note_seen(&mut self, pair: ObjectPair, records: &[HsObject]) {
        if records.is_empty() {
            return;
        }
        let seen = self.hs_seen.entry(pair).or_default();
        for r in records {
            if let Some(ms) = r.last_modified_ms() {
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

    /// Whether the feed is on and set-up verified that HubSpot sends every change of the
    /// synced objects to it: only then may a backfill skip reading back what it wrote.
    pub(super) fn feed_verified(&self) -> bool {
        self.setup.webhook_feed.as_ref().is_some_and(|f| f.verified)
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
            let pending = self
                .store
                .pending_hubspot_changes(&self.opts.tenant, object_type, FEED_ROUND)
                .await?;
            if pending.is_empty() {
                break;
            }
            let more = pending.len() >= FEED_ROUND as usize;
            let archived: Vec<String> = pending
                .iter()
                .filter(|p| p.deleted)
                .map(|p| p.object_id.clone())
                .collect();
            let to_read: Vec<String> = pending
                .iter()
                .filter(|p| !p.deleted)
                .filter(|p| {
                    seen.get(&p.object_id)
                        .is_none_or(|&read_at| read_at < p.last_occurred_at_ms)
                })
                .map(|p| p.object_id.clone())
                .collect();
            if !to_read.is_empty() {
                let out = self
                    .hs
                    .batch_read(object_type, &to_read, &prop_refs, None)
                    .await?;
                // A record archived since its event is not found: its deletion event
                // follows.
                let records: Vec<HsObject> = out.items.into_iter().filter_map(Result::ok).collect();
                cy.report.counters.read_hubspot += records.len() as i64;
                self.sync_hs_records(cy, schema, records, trigger, None)
                    .await?;
            }
            if !archived.is_empty() {
                self.mark_hubspot_archived(cy, pair, &archived).await?;
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
                let pending = self
                    .store
                    .pending_hubspot_changes(&self.opts.tenant, object_type, FEED_ROUND)
                    .await?;
                if pending.is_empty() {
                    break;
                }
                let more = pending.len() >= FEED_ROUND as usize;
                self.settle_feed(object_type, &pending).await?;
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }
}
