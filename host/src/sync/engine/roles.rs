//! Contact roles and associations: roles changed in Salesforce, the periodic sweep of
//! linked deals' associations (their changes do not bump modification times), deleted
//! roles, a batch's current associations and its association writes, and the contacts a new deal moves forward to
//! the opportunity stage.

use super::batches::link_id;
use super::*;

/// The current associations of a batch's opportunities (contact roles, by opportunity id)
/// and deals (companies and contacts, by deal id).
#[derive(Default)]
pub(super) struct CurrentAssociations {
    pub(super) roles: HashMap<String, Vec<ContactRole>>,
    pub(super) deals: HashMap<String, DealAssociations>,
}

impl Engine {
    /// Contact roles changed (or deleted) since the last look: re-plan their opportunities.
    pub(super) async fn reconcile_roles(
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
    pub(super) async fn sweep_associations(
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
    pub(super) async fn sweep_candidates(
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
    pub(super) async fn deleted_roles(
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

    /// The current associations of a batch's opportunities and deals, and each pair's
    /// associations for the plugin (`Work::assoc`): an opportunity's account and contact
    /// roles (from a backfill's role map when it has one), a deal's companies and
    /// contacts, each with its counterpart's id where the counterpart is linked (only for
    /// the pairs that are synced).
    pub(super) async fn read_associations(
        &self,
        cy: &mut Cycle,
        active: &mut [Work],
    ) -> Result<CurrentAssociations, SyncError> {
        let opp_ids: Vec<String> = active
            .iter()
            .filter_map(|w| w.sf.as_ref().map(|s| s.id.clone()))
            .collect();
        let deal_ids: Vec<String> = active
            .iter()
            .filter_map(|w| w.hs.as_ref().map(|s| s.id.clone()))
            .collect();
        let mut roles = HashMap::new();
        if let Some(all) = cy.backfill_roles.as_mut() {
            roles = opp_ids
                .iter()
                .filter_map(|id| all.remove(id).map(|r| (id.clone(), r)))
                .collect();
        } else if !opp_ids.is_empty() {
            roles = associations::contact_roles(&self.sf, &opp_ids).await?;
        }
        let deals = associations::deal_associations(&self.hs, &deal_ids).await?;
        let account_ids: Vec<String> = active.iter().filter_map(|w| w.account_id.clone()).collect();
        let contact_ids: Vec<String> = roles
            .values()
            .flatten()
            .map(|r| r.contact_id.clone())
            .collect();
        let company_ids: Vec<String> = deals
            .values()
            .flat_map(|a| a.companies.iter().map(|c| c.0.clone()))
            .collect();
        let hs_contact_ids: Vec<String> = deals
            .values()
            .flat_map(|a| a.contacts.iter().cloned())
            .collect();
        let company_sync = self.setup.pair(ObjectPair::AccountCompany).is_some();
        let contact_sync = self.setup.pair(ObjectPair::ContactContact).is_some();
        let accounts = self
            .linked_counterparts(
                ObjectPair::AccountCompany,
                Side::Salesforce,
                &account_ids,
                company_sync,
            )
            .await?;
        let contacts = self
            .linked_counterparts(
                ObjectPair::ContactContact,
                Side::Salesforce,
                &contact_ids,
                contact_sync,
            )
            .await?;
        let companies = self
            .linked_counterparts(
                ObjectPair::AccountCompany,
                Side::HubSpot,
                &company_ids,
                company_sync,
            )
            .await?;
        let hs_contacts = self
            .linked_counterparts(
                ObjectPair::ContactContact,
                Side::HubSpot,
                &hs_contact_ids,
                contact_sync,
            )
            .await?;
        for w in active.iter_mut() {
            let mut sf_list = Vec::new();
            if w.sf.is_some() {
                if company_sync && let Some(a) = &w.account_id {
                    sf_list.push(plan::related(
                        RelatedKind::Company,
                        Some(a.clone()),
                        accounts.get(a.as_str()).cloned(),
                        None,
                        true,
                    ));
                }
                if contact_sync && let Some(rs) = w.sf.as_ref().and_then(|s| roles.get(&s.id)) {
                    for r in rs {
                        sf_list.push(plan::related(
                            RelatedKind::Contact,
                            Some(r.contact_id.clone()),
                            contacts.get(r.contact_id.as_str()).cloned(),
                            r.role.clone(),
                            r.primary,
                        ));
                    }
                }
            }
            let mut hs_list = Vec::new();
            if let Some(a) = w.hs.as_ref().and_then(|h| deals.get(&h.id)) {
                if company_sync {
                    for (c, primary) in &a.companies {
                        hs_list.push(plan::related(
                            RelatedKind::Company,
                            companies.get(c.as_str()).cloned(),
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
                            hs_contacts.get(c.as_str()).cloned(),
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
        Ok(CurrentAssociations { roles, deals })
    }

    /// The counterparts of `ids` (records of `pair` on `side`) that are actively linked,
    /// by id; none read when the pair is not `synced` or there are no ids.
    async fn linked_counterparts(
        &self,
        pair: ObjectPair,
        side: Side,
        ids: &[String],
        synced: bool,
    ) -> Result<HashMap<String, String>, SyncError> {
        if !synced || ids.is_empty() {
            return Ok(HashMap::new());
        }
        let other = match side {
            Side::Salesforce => Side::HubSpot,
            Side::HubSpot => Side::Salesforce,
        };
        Ok(self
            .links_by_ids(pair, side, ids)
            .await?
            .iter()
            .filter(|l| l.state == LinkState::Active)
            .map(|l| (link_id(l, side).to_string(), link_id(l, other).to_string()))
            .collect())
    }

    /// A batch's association writes, after its field writes (`results`): for each pair
    /// done, the difference between the associations the plugin asked for and the
    /// current ones (`roles`, `deal_assoc`), written to HubSpot (then the contacts that got
    /// a deal move forward) and Salesforce (contact roles, accounts); in a dry run only
    /// planned. Returns the associations waiting for their account or contact to be
    /// linked, for `finish_batch` to record after its commit.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_associations(
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
                    cy.report.planned.push(PlannedOp { op: "associate", target: "hubspot", pair: pair.as_str(), record: w.hs_id().or(w.sf_id()).unwrap_or_default().to_string(), detail: json!(d.iter().map(|r| json!({"kind": super::writes::related_kind_name(r.kind, Side::HubSpot), "hubspot_id": r.hubspot_id, "salesforce_id": r.salesforce_id})).collect::<Vec<_>>()) });
                }
                if let Some(d) = &pw.salesforce_associations {
                    cy.report.planned.push(PlannedOp { op: "associate", target: "salesforce", pair: pair.as_str(), record: w.sf_id().or(w.hs_id()).unwrap_or_default().to_string(), detail: json!(d.iter().map(|r| json!({"kind": super::writes::related_kind_name(r.kind, Side::HubSpot), "hubspot_id": r.hubspot_id, "salesforce_id": r.salesforce_id})).collect::<Vec<_>>()) });
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

    /// Moves the HubSpot contacts that just got a deal to the `opportunity` lifecycle stage
    /// (batched, see [`associations::promote_deal_contacts`]); a contact HubSpot refuses is
    /// a failure of that contact. The contact's change that comes back is no change of a
    /// synced field, so it settles as an echo.
    pub(super) async fn promote_deal_contacts(
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
}
