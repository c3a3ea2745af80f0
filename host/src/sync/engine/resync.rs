//! Manual resync (all, one record, a SOQL filter) and the retry of failed records whose
//! retry time has come.

use super::*;

impl Engine {
    pub(super) async fn resync_sf_ids(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        ids: &[String],
        trigger: Trigger,
    ) -> Result<(), SyncError> {
        let select = capture::sf_select(schema, &self.opts.external_id_field);
        for chunk in ids.chunks(200) {
            let soql = capture::sf_by_ids_soql(schema, &select, chunk);
            let rows = self.sf.query(&soql, QueryScope::Live).await?;
            cy.report.counters.read_salesforce += rows.len() as i64;
            self.sync_sf_rows(cy, schema, rows, trigger, None).await?;
        }
        Ok(())
    }

    pub(super) async fn resync_hs_ids(
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

    pub(super) async fn do_resync(
        &mut self,
        cy: &mut Cycle,
        what: Resync,
    ) -> Result<(), SyncError> {
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

    pub(super) async fn resync_where(
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
    pub(super) async fn retry_due(&self, cy: &mut Cycle) -> Result<(), SyncError> {
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
}
