//! Reading what changed: the Salesforce pass (pages of changed records, then deletes) and
//! the HubSpot pass (a search window, or a backfill's read-back in id ranges read side by
//! side), each feeding its records to the batches.

use super::*;

impl Engine {
    pub(super) fn cp_cursor(cp: &Option<Checkpoint>) -> Option<Cursor> {
        cp.as_ref().map(|c| Cursor {
            time_ms: c.cursor_time_ms,
            id: c.cursor_id.clone(),
        })
    }

    pub(super) async fn capture_sf(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
    ) -> Result<(), SyncError> {
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
            // Before anything is written: where the feed stands.
            if let Some(mark) = self.feed_mark(schema.spec.hs_object) {
                cy.feed_windows
                    .insert(pair, FeedWindow { mark, created: 0 });
            }
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
    pub(super) async fn opportunity_backfill_pending(&self) -> Result<bool, SyncError> {
        if self.setup.pair(ObjectPair::OpportunityDeal).is_none() {
            return Ok(false);
        }
        Ok(self.opportunity_checkpoint().await?.is_none())
    }

    /// The checkpoint of the opportunities' Salesforce changes (none: not backfilled yet).
    pub(super) async fn opportunity_checkpoint(&self) -> Result<Option<Checkpoint>, SyncError> {
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

    pub(super) async fn capture_sf_pages(
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

    pub(super) async fn capture_sf_deletes(
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
    pub(super) async fn capture_hs(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        alone: bool,
    ) -> Result<(), SyncError> {
        self.capture_hs_window(cy, schema, alone).await?;
        self.capture_hs_feed(cy, schema).await
    }

    /// A pair's HubSpot changes read by search: the window since its checkpoint, or a
    /// backfill's whole window.
    async fn capture_hs_window(
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
            // With the feed proven, only what was created before the backfill's first
            // create: the rest is either its own writes or in the feed.
            let created_before = match cy.feed_windows.get(&pair).copied() {
                Some(w) => self.feed_proven_since(schema, w).await,
                None => None,
            };
            let range = |after: u64, through: Option<u64>| HsRange {
                schema,
                props: &props,
                pipelines: pipelines.as_deref(),
                created_before,
                after,
                through,
                until,
                trigger,
            };
            let split = if alone && created_before.is_none() {
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
            if self.feed_on() {
                cy.note_seen(schema, &page.records);
            }
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
    pub(super) async fn hs_backfill_range(
        &self,
        cy: &mut Cycle,
        r: HsRange<'_>,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let window = capture::HsBackfillWindow {
            properties: r.props,
            pipelines: r.pipelines,
            created_before_ms: r.created_before,
            through_id: r.through,
            until_ms: r.until,
        };
        let read_page = |after: u64| capture::hs_backfill_page(&self.hs, r.schema, &window, after);
        let mut page = read_page(r.after).await?;
        let mut cp = cp;
        loop {
            let (records, next) = page;
            cy.report.counters.read_hubspot += records.len() as i64;
            if self.feed_on() {
                cy.note_seen(r.schema, &records);
            }
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
}

/// One id range of a backfill's HubSpot window: what `hs_backfill_range` reads.
#[derive(Clone, Copy)]
pub(super) struct HsRange<'a> {
    pub(super) schema: &'a PairSchema,
    pub(super) props: &'a [String],
    pub(super) pipelines: Option<&'a [String]>,
    /// Only records created before this time (epoch ms), when the webhook feed covers the
    /// rest.
    pub(super) created_before: Option<i64>,
    /// Ids above this one...
    pub(super) after: u64,
    /// ...up to this one (inclusive; none: no upper bound).
    pub(super) through: Option<u64>,
    pub(super) until: i64,
    pub(super) trigger: Trigger,
}

/// Where to cut a backfill's read-back in two id ranges read side by side: the id that
/// ends the first half of the pages that the HubSpot ids the Salesforce pass wrote fill
/// (`page` records a page), so that, when HubSpot holds only those, both ranges are whole
/// pages and the read costs no more search calls than one range would. None when they fill
/// fewer than two pages.
pub(super) fn readback_split(mut written: Vec<u64>, page: usize) -> Option<u64> {
    written.sort_unstable();
    written.dedup();
    let pages = written.len().div_ceil(page.max(1));
    if pages < 2 {
        return None;
    }
    written.get((pages / 2) * page - 1).copied()
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
}
