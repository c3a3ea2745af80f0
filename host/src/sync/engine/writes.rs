//! One batch after its pairs are read: the pairs still to sync, the plugin's plan, the CRM
//! writes (batched upserts keyed on cross-reference ids, failures split out per record),
//! then the commit of what was acknowledged: links, snapshots, history and the checkpoint.
//!
//! `finish_batch` runs those steps in order; `apply_writes` makes one batch's writes: each
//! pair's fields on the wire (`PendingWrites`), the source side's writes first when
//! creating, then what each pair wrote or why it failed.

use super::roles::CurrentAssociations;
use super::*;

impl Engine {
    /// The rest of a batch once its pairs are read, `direction` being the side they were
    /// captured on: the pairs still to sync (`pairs_to_plan`), their associations
    /// (opportunities), the plugin's plan, the writes between the two test fault points,
    /// then the commit of what was acknowledged with the checkpoint `cp`, and last the
    /// associations left waiting.
    pub(super) async fn finish_batch(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        works: Vec<Work>,
        direction: runtime::Direction,
        trigger: Trigger,
        cp: Option<Checkpoint>,
    ) -> Result<(), SyncError> {
        let pair = schema.spec.pair;
        let mut commit = CommitBuilder::new(pair);
        let mut active = self
            .pairs_to_plan(cy, schema, works, trigger, &mut commit)
            .await?;
        let current = if pair == ObjectPair::OpportunityDeal && !active.is_empty() {
            self.read_associations(cy, &mut active).await?
        } else {
            CurrentAssociations::default()
        };
        let outcomes = self
            .plugin_outcomes(cy, schema, &mut active, direction, trigger)
            .await?;

        // Apply.
        let fault_spot = FaultSpot {
            pair,
            direction: store_direction(direction),
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
                &current.roles,
                &current.deals,
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
        let collect_written = direction == runtime::Direction::SalesforceToHubspot
            && trigger == Trigger::Backfill
            && !self.opts.dry_run;
        let written_hs = self.record_acknowledged(
            cy,
            schema,
            &active,
            &outcomes,
            &mut results,
            direction,
            collect_written,
            &mut commit,
            now,
        );
        if self.opts.dry_run {
            cy.report.counters.add(&commit.counters);
            return Ok(());
        }
        let counters = commit.counters;
        self.commit(cy, pair, commit, cp, now).await?;
        cy.report.counters.add(&counters);
        if collect_written {
            *cy.hs_created.entry(pair).or_default() += counters.created_hubspot.max(0) as u64;
            cy.backfill_written
                .entry(pair)
                .or_default()
                .extend(written_hs.iter().filter_map(|id| id.parse::<u64>().ok()));
        }
        self.report_waiting(cy, pair, waiting).await
    }

    /// The pairs to hand to the plugin. The others are counted, or recorded, in `commit`:
    /// a pair whose link is archived, deleted or unsynced (skipped, unless a resync syncs
    /// it again or its deal is back in a synced pipeline), a pair whose HubSpot record
    /// is archived (recorded as such), and a pair equal to its last-synced snapshot (an
    /// echo; not in a resync). Snapshots not read before reading are read here.
    async fn pairs_to_plan(
        &self,
        cy: &Cycle,
        schema: &PairSchema,
        works: Vec<Work>,
        trigger: Trigger,
        commit: &mut CommitBuilder,
    ) -> Result<Vec<Work>, SyncError> {
        let pair = schema.spec.pair;
        let linked_sf: Vec<String> = works
            .iter()
            .filter(|w| w.link.is_some() && w.snapshot.is_none())
            .filter_map(|w| w.sf_id().map(str::to_string))
            .collect();
        let snaps = if linked_sf.is_empty() {
            HashMap::new()
        } else {
            self.store
                .snapshots(&self.opts.tenant, pair, &linked_sf)
                .await?
        };
        let now = now_ms();
        let mut active: Vec<Work> = Vec::with_capacity(works.len());
        for mut w in works {
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
        Ok(active)
    }

    /// The plugin's plan of each pair (a fresh instance per call). When the call fails,
    /// every pair fails with it (plugin error) and none is left to write.
    async fn plugin_outcomes(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        active: &mut Vec<Work>,
        direction: runtime::Direction,
        trigger: Trigger,
    ) -> Result<Vec<Result<PairOutcome, String>>, SyncError> {
        if active.is_empty() {
            return Ok(Vec::new());
        }
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
            Ok(p) => Ok(p.outcomes),
            Err(e) => {
                let msg = e.to_string();
                for w in active.iter() {
                    let (side, id) = source_key(w, direction);
                    self.fail(
                        cy,
                        schema.spec.pair,
                        side,
                        id,
                        ErrorCategory::PluginError,
                        &msg,
                        json!({"plugin_error": msg}),
                    )
                    .await?;
                }
                active.clear();
                Ok(Vec::new())
            }
        }
    }

    /// Records each planned pair in `commit` as acknowledged (`results`): written or
    /// up to date (an active link with its snapshot and history), moved out of the synced
    /// pipelines (unsynced), or skipped, with the batch's counters. Returns the HubSpot ids
    /// written when `collect_written`.
    #[allow(clippy::too_many_arguments)]
    fn record_acknowledged(
        &self,
        cy: &Cycle,
        schema: &PairSchema,
        active: &[Work],
        outcomes: &[Result<PairOutcome, String>],
        results: &mut [Option<Done>],
        direction: runtime::Direction,
        collect_written: bool,
        commit: &mut CommitBuilder,
        now: i64,
    ) -> Vec<String> {
        let from_sf = direction == runtime::Direction::SalesforceToHubspot;
        let dir = store_direction(direction);
        let mut written_hs: Vec<String> = Vec::new();
        for (i, w) in active.iter().enumerate() {
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
        written_hs
    }

    /// Commits `commit` with the checkpoint `cp` under the run's next commit key.
    pub(super) async fn commit(
        &self,
        cy: &Cycle,
        pair: ObjectPair,
        commit: CommitBuilder,
        cp: Option<Checkpoint>,
        now: i64,
    ) -> Result<(), SyncError> {
        let key = format!(
            "{}:{}:{}",
            cy.run_id,
            pair,
            self.seq.fetch_add(1, Ordering::SeqCst)
        );
        let c = commit.build(
            key,
            self.lease.clone(),
            cp.into_iter().collect(),
            cy.run_id,
            now,
        );
        self.store.commit_batch(&self.opts.tenant, &c).await?;
        Ok(())
    }

    /// Associations waiting for their account or contact: an open error on the record,
    /// recorded after the commit (which resolves the record's older errors).
    async fn report_waiting(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        waiting: Vec<(String, Side, Vec<Related>)>,
    ) -> Result<(), SyncError> {
        for (id, side, rels) in waiting {
            let names: Vec<String> = rels.iter().map(related_name).collect();
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

    /// One batch's CRM writes, after the plugin's plan (`outcomes`, by position in
    /// `works`): a pair the plugin refused fails, a pair up to date is done as it is, and
    /// each pair to write has its fields put on the wire (`PendingWrites::wire_fields`) and
    /// queued (`queue_writes`), or in a dry run only planned. Then the writes themselves,
    /// the source side's first (a record is created where it is missing before the other
    /// side is written with its id), and what each pair wrote or why it failed
    /// (`acknowledged`). Returns what was acknowledged, by position.
    pub(super) async fn apply_writes(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        works: &mut [Work],
        outcomes: &[Result<PairOutcome, String>],
        direction: runtime::Direction,
    ) -> Result<Vec<Option<Done>>, SyncError> {
        let pair = schema.spec.pair;
        let mut done: Vec<Option<Done>> = vec![None; works.len()];
        let mut pending = PendingWrites::from_current(schema, works);
        for (i, w) in works.iter().enumerate() {
            let pw = match &outcomes[i] {
                Ok(PairOutcome::Write(pw)) => pw,
                Ok(PairOutcome::Error(e)) => {
                    self.fail_refused(cy, pair, w, direction, e).await?;
                    continue;
                }
                Ok(PairOutcome::Skip(Skip::UpToDate)) => {
                    // Both sides agree: link them (a first match) and take the snapshot.
                    done[i] = pending.up_to_date(i, w);
                    continue;
                }
                _ => continue,
            };
            let (hs_p, sf_f) = pending.wire_fields(schema, i, pw);
            if self.opts.dry_run {
                plan_dry_run(cy, pair, w, hs_p, sf_f);
                continue;
            }
            self.queue_writes(&mut pending, i, w, direction, hs_p, sf_f);
        }
        let hs_creates = self.hubspot_creates(cy, pair, works, outcomes, &mut pending);
        // Source side first when creating: HubSpot for SF→HS, Salesforce for HS→SF.
        if direction == runtime::Direction::SalesforceToHubspot {
            self.write_hubspot(cy, schema, &hs_creates, &mut pending)
                .await;
            self.write_salesforce(schema, &mut pending).await;
        } else {
            self.write_salesforce(schema, &mut pending).await;
            self.write_hubspot(cy, schema, &hs_creates, &mut pending)
                .await;
        }
        if self.opts.dry_run {
            return Ok(done);
        }
        self.acknowledged(cy, pair, works, outcomes, direction, pending, &mut done)
            .await?;
        Ok(done)
    }

    /// A pair the plugin refused fails, filed under its source record with the plugin's
    /// error kind (unmapped stage or pipeline: picklist mismatch; missing owner or invalid
    /// value: validation; else a plugin error).
    async fn fail_refused(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        w: &Work,
        direction: runtime::Direction,
        e: &runtime::RuleError,
    ) -> Result<(), SyncError> {
        let cat = match e.kind {
            runtime::ErrorKind::UnmappedStage | runtime::ErrorKind::UnmappedPipeline => {
                ErrorCategory::PicklistMismatch
            }
            runtime::ErrorKind::MissingOwner | runtime::ErrorKind::InvalidValue => {
                ErrorCategory::Validation
            }
            _ => ErrorCategory::PluginError,
        };
        let payload = json!({"kind": runtime::error_kind_name(e.kind), "field": e.field, "message": e.message});
        let (side, id) = source_key(w, direction);
        self.fail(
            cy,
            pair,
            side,
            id,
            cat,
            &format!("{}: {}", runtime::error_kind_name(e.kind), e.message),
            payload,
        )
        .await
    }

    /// Queues pair `i`'s writes: its HubSpot properties as an update of its HubSpot record
    /// (setting the cross-reference when it is not yet the Salesforce id) or an upsert on
    /// the cross-reference (a new record, always written from Salesforce), and its
    /// Salesforce fields likewise as an update (setting the external id) or an upsert on the
    /// external id (always written from HubSpot).
    fn queue_writes(
        &self,
        pending: &mut PendingWrites,
        i: usize,
        w: &Work,
        direction: runtime::Direction,
        mut hs_p: crate::crm::hubspot::Properties,
        mut sf_f: crate::crm::salesforce::Fields,
    ) {
        let from_sf = direction == runtime::Direction::SalesforceToHubspot;
        // HubSpot side.
        if !hs_p.is_empty() || (from_sf && w.hs.is_none()) {
            match (&w.hs, w.sf_id()) {
                (Some(h), sf_id) => {
                    if let Some(s) = sf_id
                        && w.hs_xref.as_deref() != Some(s)
                    {
                        hs_p.insert(self.opts.xref_property.clone(), s.to_string());
                    }
                    pending.hs_updates.push((
                        i,
                        UpdateInput {
                            id: h.id.clone(),
                            properties: hs_p,
                        },
                    ));
                }
                (None, Some(s)) => {
                    hs_p.insert(self.opts.xref_property.clone(), s.to_string());
                    pending.hs_upserts.push((
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
                    pending.sf_updates.push((
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
                    pending.sf_upserts.push((
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

    /// In a portal that held none of the pair's records: the HubSpot upserts taken out of
    /// `pending` as creates, each with the associations the plugin asked for inline and
    /// its create-only properties (`stage_at_create`), and the associations it is created
    /// with when they go inline.
    fn hubspot_creates(
        &self,
        cy: &Cycle,
        pair: ObjectPair,
        works: &[Work],
        outcomes: &[Result<PairOutcome, String>],
        pending: &mut PendingWrites,
    ) -> Vec<(usize, apply::HsNew, DealAssociations)> {
        if cy.hubspot_empty != Some(pair) {
            return Vec::new();
        }
        std::mem::take(&mut pending.hs_upserts)
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
    }

    /// The HubSpot writes: creates (an empty portal), then upserts on the cross-reference,
    /// then updates; new ids, records created and failures go to `pending`.
    async fn write_hubspot(
        &self,
        cy: &mut Cycle,
        schema: &PairSchema,
        hs_creates: &[(usize, apply::HsNew, DealAssociations)],
        pending: &mut PendingWrites,
    ) {
        let hs_obj = schema.spec.hs_object;
        if !hs_creates.is_empty() {
            let news: Vec<apply::HsNew> = hs_creates.iter().map(|(_, n, _)| n.clone()).collect();
            let res = apply::hs_create(&self.hs, hs_obj, &self.opts.xref_property, &news).await;
            for ((i, n, with), (r, inline)) in hs_creates.iter().zip(res) {
                match r {
                    Ok(o) => {
                        if o.new != Some(false) {
                            pending.created.insert(*i);
                        }
                        pending.new_hs.insert(*i, o.id.clone());
                        if inline {
                            pending.inline_assoc.insert(*i, with.clone());
                        }
                        if inline && !n.create_only.is_empty() {
                            cy.stage_set_now.push(o.id.clone());
                        }
                    }
                    Err(f) => pending.failed[*i] = Some(f),
                }
            }
        }
        for (list, mode) in [
            (
                &pending.hs_upserts,
                HsMode::Upsert(self.opts.xref_property.as_str()),
            ),
            (&pending.hs_updates, HsMode::Update),
        ] {
            let inputs: Vec<UpdateInput> = list.iter().map(|(_, u)| u.clone()).collect();
            let res = apply::hs_write(&self.hs, hs_obj, mode, &inputs).await;
            for ((i, _), r) in list.iter().zip(res) {
                match r {
                    Ok(o) => {
                        if matches!(mode, HsMode::Upsert(_)) {
                            if o.new != Some(false) {
                                pending.created.insert(*i);
                            }
                            pending.new_hs.insert(*i, o.id.clone());
                        }
                    }
                    Err(f) => pending.failed[*i] = Some(f),
                }
            }
        }
    }

    /// The Salesforce writes of the pairs not failed so far, upserts on the external id
    /// then updates, each with the HubSpot id of a record created just now; new ids,
    /// records created and failures go to `pending`.
    async fn write_salesforce(&self, schema: &PairSchema, pending: &mut PendingWrites) {
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
                        s.fields
                            .insert(self.opts.external_id_field.clone(), Json::String(h.clone()));
                    }
                    (*i, s)
                })
                .collect()
        };
        let ups = fix(&pending.sf_upserts, &pending.new_hs, &pending.failed);
        let upd = fix(&pending.sf_updates, &pending.new_hs, &pending.failed);
        for (list, mode) in [
            (&ups, SfMode::Upsert(self.opts.external_id_field.as_str())),
            (&upd, SfMode::Update),
        ] {
            let inputs: Vec<SfInput> = list.iter().map(|(_, s)| s.clone()).collect();
            let res = apply::sf_write(&self.sf, schema.spec.sobject, mode, &inputs).await;
            for ((i, _), r) in list.iter().zip(res) {
                match r {
                    Ok(ack) => {
                        if matches!(mode, SfMode::Upsert(_)) {
                            if ack.created {
                                pending.created.insert(*i);
                            }
                            pending.new_sf.insert(*i, ack.id);
                        }
                    }
                    Err(f) => pending.failed[*i] = Some(f),
                }
            }
        }
    }

    /// What each pair's writes came to: a failed write fails the pair (filed under its
    /// source record); a pair that wrote (or only changes associations) and has an id on
    /// both sides is done, unless it already is.
    #[allow(clippy::too_many_arguments)]
    async fn acknowledged(
        &self,
        cy: &mut Cycle,
        pair: ObjectPair,
        works: &[Work],
        outcomes: &[Result<PairOutcome, String>],
        direction: runtime::Direction,
        mut pending: PendingWrites,
        done: &mut [Option<Done>],
    ) -> Result<(), SyncError> {
        for (i, w) in works.iter().enumerate() {
            let written = &pending.written[i];
            let wrote = !written.is_empty()
                || pending.new_hs.contains_key(&i)
                || pending.new_sf.contains_key(&i);
            if let Some(f) = &pending.failed[i] {
                let (side, id) = source_key(w, direction);
                let payload = json!({"class": f.class.as_str(), "fields": written});
                self.fail(cy, pair, side, id, f.category(), &f.message, payload)
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
            let sf_id = pending
                .new_sf
                .get(&i)
                .cloned()
                .or(w.sf_id().map(str::to_string));
            let hs_id = pending
                .new_hs
                .get(&i)
                .cloned()
                .or(w.hs_id().map(str::to_string));
            if let (Some(s), Some(h)) = (sf_id, hs_id) {
                let updated_hs =
                    written.iter().any(|f| f.starts_with("hubspot.")) && w.hs.is_some();
                let updated_sf =
                    written.iter().any(|f| f.starts_with("salesforce.")) && w.sf.is_some();
                done[i] = Some(Done {
                    sf_id: s,
                    hs_id: h,
                    created: pending.created.contains(&i),
                    written: written.clone(),
                    sf_values: pending.sf_vals[i].clone(),
                    hs_values: pending.hs_vals[i].clone(),
                    updated_sf,
                    updated_hs,
                    created_with: pending.inline_assoc.remove(&i),
                });
            }
        }
        Ok(())
    }

    /// The create-only properties of a new HubSpot record: for a contact the backfill creates
    /// while it knows every contact role (an empty portal, opportunities still to
    /// backfill), the lifecycle stage the lifecycle step would move it to once its
    /// opportunity's deal is associated (a new contact has no stage yet), unless the
    /// plugin writes the stage itself.
    pub(super) fn stage_at_create(
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
}

/// One batch's writes as they are gathered and made, each by the pair's position.
struct PendingWrites {
    /// Each pair's Salesforce values: its current ones, then what it writes.
    sf_vals: Vec<Vec<runtime::Value>>,
    /// Each pair's HubSpot values: its current ones, then what it writes.
    hs_vals: Vec<Vec<runtime::Value>>,
    /// The fields each pair writes (`hubspot.<property>`, `salesforce.<field>`).
    written: Vec<Vec<String>>,
    /// HubSpot records to upsert on the cross-reference property (new ones).
    hs_upserts: Vec<(usize, UpdateInput)>,
    /// HubSpot records to update by id.
    hs_updates: Vec<(usize, UpdateInput)>,
    /// Salesforce records to upsert on the external id (new ones).
    sf_upserts: Vec<(usize, SfInput)>,
    /// Salesforce records to update by id.
    sf_updates: Vec<(usize, SfInput)>,
    /// The write a CRM refused.
    failed: Vec<Option<WriteFailure>>,
    /// The ids of HubSpot records upserted or created.
    new_hs: HashMap<usize, String>,
    /// The ids of Salesforce records upserted.
    new_sf: HashMap<usize, String>,
    /// The pairs whose record was created.
    created: HashSet<usize>,
    /// The associations a HubSpot record was created with.
    inline_assoc: HashMap<usize, DealAssociations>,
}

impl PendingWrites {
    /// Every pair from its current values (nulls on a side with no record), nothing to write.
    fn from_current(schema: &PairSchema, works: &[Work]) -> Self {
        let current = |side: Option<&plan::SideRecord>, len: usize| {
            side.map(|s| s.values.clone())
                .unwrap_or_else(|| vec![runtime::Value::Null; len])
        };
        PendingWrites {
            sf_vals: works
                .iter()
                .map(|w| current(w.sf.as_ref(), schema.sf_fields.len()))
                .collect(),
            hs_vals: works
                .iter()
                .map(|w| current(w.hs.as_ref(), schema.hs_fields.len()))
                .collect(),
            written: vec![Vec::new(); works.len()],
            hs_upserts: Vec::new(),
            hs_updates: Vec::new(),
            sf_upserts: Vec::new(),
            sf_updates: Vec::new(),
            failed: vec![None; works.len()],
            new_hs: HashMap::new(),
            new_sf: HashMap::new(),
            created: HashSet::new(),
            inline_assoc: HashMap::new(),
        }
    }

    /// Pair `i` as it is, both sides in agreement (when it has both).
    fn up_to_date(&self, i: usize, w: &Work) -> Option<Done> {
        let (s, h) = (w.sf.as_ref()?, w.hs.as_ref()?);
        Some(Done {
            sf_id: s.id.clone(),
            hs_id: h.id.clone(),
            created: false,
            written: Vec::new(),
            sf_values: self.sf_vals[i].clone(),
            hs_values: self.hs_vals[i].clone(),
            updated_sf: false,
            updated_hs: false,
            created_with: None,
        })
    }

    /// Pair `i`'s writes on the wire, HubSpot properties and Salesforce fields (a field
    /// that is not writable is passed over); its values and written fields follow them.
    fn wire_fields(
        &mut self,
        schema: &PairSchema,
        i: usize,
        pw: &runtime::PairWrites,
    ) -> (
        crate::crm::hubspot::Properties,
        crate::crm::salesforce::Fields,
    ) {
        let mut hs_p = crate::crm::hubspot::Properties::new();
        for fw in &pw.hubspot {
            let Some(kind) = schema.hs_writable.get(&fw.field) else {
                continue;
            };
            let wire = values::to_hubspot(&fw.value, *kind);
            if let Some(idx) = schema.hs_index(&fw.field) {
                self.hs_vals[i][idx] =
                    values::from_hubspot(Some(&wire), *kind).unwrap_or(runtime::Value::Null);
            }
            hs_p.insert(fw.field.clone(), wire);
            self.written[i].push(format!("hubspot.{}", fw.field));
        }
        let mut sf_f = crate::crm::salesforce::Fields::new();
        for fw in &pw.salesforce {
            let Some(kind) = schema.sf_writable.get(&fw.field) else {
                continue;
            };
            let wire = values::to_salesforce(&fw.value, *kind);
            if let Some(idx) = schema.sf_index(&fw.field) {
                self.sf_vals[i][idx] =
                    values::from_salesforce(&wire, *kind).unwrap_or(runtime::Value::Null);
            }
            sf_f.insert(fw.field.clone(), wire);
            self.written[i].push(format!("salesforce.{}", fw.field));
        }
        (hs_p, sf_f)
    }
}

/// A dry run's plan of one pair's writes: a create or an update on each side it writes.
fn plan_dry_run(
    cy: &mut Cycle,
    pair: ObjectPair,
    w: &Work,
    hs_p: crate::crm::hubspot::Properties,
    sf_f: crate::crm::salesforce::Fields,
) {
    if !hs_p.is_empty() {
        cy.report.planned.push(PlannedOp {
            op: if w.hs.is_some() { "update" } else { "create" },
            target: "hubspot",
            pair: pair.as_str(),
            record: w.hs_id().or(w.sf_id()).unwrap_or_default().to_string(),
            detail: json!(hs_p),
        });
    }
    if !sf_f.is_empty() {
        cy.report.planned.push(PlannedOp {
            op: if w.sf.is_some() { "update" } else { "create" },
            target: "salesforce",
            pair: pair.as_str(),
            record: w.sf_id().or(w.hs_id()).unwrap_or_default().to_string(),
            detail: Json::Object(sf_f),
        });
    }
}

/// Where a failure of a pair is filed: the side its record was captured on in
/// `direction`, and its id there.
fn source_key(w: &Work, direction: runtime::Direction) -> (Side, &str) {
    if direction == runtime::Direction::SalesforceToHubspot {
        (Side::Salesforce, w.sf_id().unwrap_or_default())
    } else {
        (Side::HubSpot, w.hs_id().unwrap_or_default())
    }
}

/// The direction of a batch as the store (history, fault points) names it.
fn store_direction(direction: runtime::Direction) -> Direction {
    if direction == runtime::Direction::SalesforceToHubspot {
        Direction::SalesforceToHubSpot
    } else {
        Direction::HubSpotToSalesforce
    }
}

/// What was acknowledged for one pair.
#[derive(Debug, Clone)]
pub(super) struct Done {
    pub(super) sf_id: String,
    pub(super) hs_id: String,
    pub(super) created: bool,
    pub(super) written: Vec<String>,
    pub(super) sf_values: Vec<runtime::Value>,
    pub(super) hs_values: Vec<runtime::Value>,
    pub(super) updated_sf: bool,
    pub(super) updated_hs: bool,
    /// The HubSpot associations the record was created with (none: created without, or
    /// not created).
    pub(super) created_with: Option<DealAssociations>,
}

/// A related record as a person reads it in a failure: `account 001…` or `contact 003…` by
/// its Salesforce id, `company 123` or `contact 456` by its HubSpot id.
pub(super) fn related_name(r: &Related) -> String {
    match (&r.salesforce_id, &r.hubspot_id) {
        (Some(id), _) => format!("{} {id}", related_kind_name(r.kind, Side::Salesforce)),
        (None, Some(id)) => format!("{} {id}", related_kind_name(r.kind, Side::HubSpot)),
        (None, None) => related_kind_name(r.kind, Side::HubSpot).to_string(),
    }
}

/// What a related record is called on one side.
pub(super) fn related_kind_name(kind: RelatedKind, side: Side) -> &'static str {
    match (kind, side) {
        (RelatedKind::Company, Side::Salesforce) => "account",
        (RelatedKind::Company, Side::HubSpot) => "company",
        (RelatedKind::Contact, _) => "contact",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_association_names_the_record_as_its_side_calls_it() {
        let related = |kind, salesforce_id: Option<&str>, hubspot_id: Option<&str>| Related {
            kind,
            salesforce_id: salesforce_id.map(str::to_string),
            hubspot_id: hubspot_id.map(str::to_string),
            role: None,
            primary: false,
        };
        let account = related(RelatedKind::Company, Some("0010A000000001HQAQ"), None);
        assert_eq!(related_name(&account), "account 0010A000000001HQAQ");
        let company = related(RelatedKind::Company, None, Some("1001"));
        assert_eq!(related_name(&company), "company 1001");
        let contact = related(RelatedKind::Contact, Some("0030A0000000001QAA"), Some("77"));
        assert_eq!(related_name(&contact), "contact 0030A0000000001QAA");
    }
}
