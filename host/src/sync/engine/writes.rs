//! One batch after the plugin's plan: the CRM writes (batched upserts keyed on
//! cross-reference ids, failures split out per record), then the commit of what was
//! acknowledged: links, snapshots, history and the checkpoint.

use super::*;

impl Engine {
    pub(super) async fn finish_batch(
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

    pub(super) async fn apply_writes(
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
