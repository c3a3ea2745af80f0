//! Associations: an opportunity's account and contact roles on the Salesforce side, a
//! deal's company and contact associations on the HubSpot side, read in bulk, expressed
//! with both sides' ids through the links, and reconciled explicitly (their changes do not
//! bump modification times).
//!
//! Given the complete set the plugin wants on a side, the host adds and removes the
//! difference: HubSpot v4 batch association create/archive (100 a call), Salesforce
//! `OpportunityContactRole` creates (200 a call) and the `AccountId` of an opportunity
//! without one. A related record with no counterpart yet is left out and reported as an
//! association waiting for its account or contact. Nothing is ever removed from
//! Salesforce.
//!
//! A contact that gets a deal moves to the `opportunity` lifecycle stage unless it is at or
//! past it (HubSpot's order; `other` and custom stages stay): one batch read and one batch
//! update per 100 contacts. (A backfill into an empty portal creates contacts that have a
//! contact role at that stage instead, and skips them here.) Apart from that property, this module must never create or
//! change a company, contact, deal or opportunity.

use std::collections::{HashMap, HashSet};

use super::error::SyncError;
use super::setup::soql_in;
use crate::crm::hubspot::HubSpotClient;
use crate::crm::hubspot::types::{
    AssociationInput, AssociationSpec, AssociationType, RecordRef, UpdateInput,
};
use crate::crm::salesforce::SalesforceClient;
use crate::crm::salesforce::types::QueryScope;
use crate::runtime::{Related, RelatedKind};

/// One contact role as Salesforce has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRole {
    /// The contact.
    pub contact_id: String,
    /// `Role`.
    pub role: Option<String>,
    /// `IsPrimary`.
    pub primary: bool,
}

const ROLE_FIELDS: &str = "OpportunityId, ContactId, Role, IsPrimary";

/// The contact roles of opportunities, by opportunity id (200 ids per query).
pub async fn contact_roles(
    sf: &SalesforceClient,
    opp_ids: &[String],
) -> Result<HashMap<String, Vec<ContactRole>>, SyncError> {
    let mut out: HashMap<String, Vec<ContactRole>> = HashMap::new();
    for chunk in opp_ids.chunks(200) {
        let soql = format!(
            "SELECT {ROLE_FIELDS} FROM OpportunityContactRole WHERE OpportunityId IN ({}) ORDER BY Id",
            soql_in(chunk)
        );
        add_roles(&mut out, sf.query(&soql, QueryScope::Live).await?);
    }
    Ok(out)
}

/// Every contact role of the org, by opportunity id: one query, read a page (2,000) a
/// call. For an opportunity backfill, where a query per batch of opportunities would cost
/// ten times the calls; it holds only ids, roles and flags.
pub async fn all_contact_roles(
    sf: &SalesforceClient,
) -> Result<HashMap<String, Vec<ContactRole>>, SyncError> {
    let mut out: HashMap<String, Vec<ContactRole>> = HashMap::new();
    let soql = format!("SELECT {ROLE_FIELDS} FROM OpportunityContactRole ORDER BY Id");
    add_roles(&mut out, sf.query(&soql, QueryScope::Live).await?);
    Ok(out)
}

fn add_roles(
    out: &mut HashMap<String, Vec<ContactRole>>,
    rows: Vec<crate::crm::salesforce::SObject>,
) {
    for r in rows {
        let (Some(opp), Some(contact)) = (r.str_field("OpportunityId"), r.str_field("ContactId"))
        else {
            continue;
        };
        out.entry(opp.to_string()).or_default().push(ContactRole {
            contact_id: contact.to_string(),
            role: r.str_field("Role").map(str::to_string),
            primary: r
                .fields
                .get("IsPrimary")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        });
    }
}

/// A deal's associations as HubSpot has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DealAssociations {
    /// Companies, with whether the association is the primary one.
    pub companies: Vec<(String, bool)>,
    /// Contacts.
    pub contacts: Vec<String>,
}

/// The associations of deals, by deal id.
pub async fn deal_associations(
    hs: &HubSpotClient,
    deal_ids: &[String],
) -> Result<HashMap<String, DealAssociations>, SyncError> {
    let mut out: HashMap<String, DealAssociations> = HashMap::new();
    if deal_ids.is_empty() {
        return Ok(out);
    }
    for a in hs
        .batch_read_associations("deals", "companies", deal_ids)
        .await?
    {
        let e = out.entry(a.from.id.clone()).or_default();
        for t in a.to {
            let primary = t
                .association_types
                .iter()
                .any(|x| x.type_id == AssociationType::DEAL_TO_COMPANY_PRIMARY.association_type_id);
            e.companies.push((t.to_object_id, primary));
        }
    }
    for a in hs
        .batch_read_associations("deals", "contacts", deal_ids)
        .await?
    {
        let e = out.entry(a.from.id.clone()).or_default();
        e.contacts.extend(a.to.into_iter().map(|t| t.to_object_id));
    }
    Ok(out)
}

/// The HubSpot changes that make a deal's associations equal to a desired set.
#[derive(Debug, Default)]
pub struct HsChanges {
    /// deal → company to add (with the primary type when asked).
    pub companies_add: Vec<AssociationInput>,
    /// deal → contact to add.
    pub contacts_add: Vec<AssociationInput>,
    /// deal → companies to remove.
    pub companies_remove: Vec<(String, Vec<String>)>,
    /// deal → contacts to remove.
    pub contacts_remove: Vec<(String, Vec<String>)>,
}

impl HsChanges {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.companies_add.is_empty()
            && self.contacts_add.is_empty()
            && self.companies_remove.is_empty()
            && self.contacts_remove.is_empty()
    }
}

/// Adds to `changes` what makes `deal_id`'s associations equal `desired`; returns the
/// desired entries that have no HubSpot id yet (waiting for their account or contact).
pub fn diff_hubspot(
    deal_id: &str,
    desired: &[Related],
    current: &DealAssociations,
    changes: &mut HsChanges,
) -> Vec<Related> {
    let mut waiting = Vec::new();
    let mut want_companies: HashSet<&str> = HashSet::new();
    let mut want_contacts: HashSet<&str> = HashSet::new();
    for r in desired {
        let Some(id) = r.hubspot_id.as_deref() else {
            waiting.push(r.clone());
            continue;
        };
        match r.kind {
            RelatedKind::Company => {
                if want_companies.insert(id) && !current.companies.iter().any(|(c, _)| c == id) {
                    let mut types = vec![AssociationType::DEAL_TO_COMPANY];
                    if r.primary {
                        types.push(AssociationType::DEAL_TO_COMPANY_PRIMARY);
                    }
                    changes.companies_add.push(AssociationInput {
                        from: deal_id.to_string(),
                        to: id.to_string(),
                        types,
                    });
                }
            }
            RelatedKind::Contact => {
                if want_contacts.insert(id) && !current.contacts.iter().any(|c| c == id) {
                    changes.contacts_add.push(AssociationInput {
                        from: deal_id.to_string(),
                        to: id.to_string(),
                        types: vec![AssociationType::DEAL_TO_CONTACT],
                    });
                }
            }
        }
    }
    let rm_c: Vec<String> = current
        .companies
        .iter()
        .filter(|(c, _)| !want_companies.contains(c.as_str()))
        .map(|(c, _)| c.clone())
        .collect();
    if !rm_c.is_empty() {
        changes.companies_remove.push((deal_id.to_string(), rm_c));
    }
    let rm_k: Vec<String> = current
        .contacts
        .iter()
        .filter(|c| !want_contacts.contains(c.as_str()))
        .cloned()
        .collect();
    if !rm_k.is_empty() {
        changes.contacts_remove.push((deal_id.to_string(), rm_k));
    }
    waiting
}

/// The associations a new deal is created with: the entries of the desired set that have a
/// HubSpot id (the others wait, as [`diff_hubspot`] reports), as create specs and as the
/// deal's associations once it exists.
pub fn inline_hubspot(desired: &[Related]) -> (Vec<AssociationSpec>, DealAssociations) {
    let mut changes = HsChanges::default();
    diff_hubspot("", desired, &DealAssociations::default(), &mut changes);
    let mut created = DealAssociations::default();
    let mut specs = Vec::new();
    for a in changes.companies_add {
        let primary = a.types.contains(&AssociationType::DEAL_TO_COMPANY_PRIMARY);
        created.companies.push((a.to.clone(), primary));
        specs.push(AssociationSpec {
            to: RecordRef::new(a.to),
            types: a.types,
        });
    }
    for a in changes.contacts_add {
        created.contacts.push(a.to.clone());
        specs.push(AssociationSpec {
            to: RecordRef::new(a.to),
            types: a.types,
        });
    }
    (specs, created)
}

/// Applies HubSpot association changes (batched).
pub async fn apply_hubspot(hs: &HubSpotClient, c: &HsChanges) -> Result<(), SyncError> {
    if !c.companies_add.is_empty() {
        hs.batch_associate("deals", "companies", &c.companies_add)
            .await?;
    }
    if !c.contacts_add.is_empty() {
        hs.batch_associate("deals", "contacts", &c.contacts_add)
            .await?;
    }
    if !c.companies_remove.is_empty() {
        hs.batch_archive_associations("deals", "companies", &c.companies_remove)
            .await?;
    }
    if !c.contacts_remove.is_empty() {
        hs.batch_archive_associations("deals", "contacts", &c.contacts_remove)
            .await?;
    }
    Ok(())
}

/// HubSpot's default contact lifecycle stages, earliest first (`other` is outside the order).
const LIFECYCLE_ORDER: [&str; 7] = [
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
];

/// The contact property that holds the lifecycle stage.
pub const LIFECYCLE_PROPERTY: &str = "lifecyclestage";

/// The lifecycle stage of a contact associated with a deal.
pub const DEAL_CONTACT_STAGE: &str = "opportunity";

/// Whether a contact at lifecycle stage `stage` moves to [`DEAL_CONTACT_STAGE`] when it gets
/// a deal: when blank or before it in HubSpot's order. `other`, custom stages and later
/// stages stay (HubSpot ignores a move backwards made through the API anyway).
pub fn moves_to_deal_stage(stage: Option<&str>) -> bool {
    let rank = |s: &str| LIFECYCLE_ORDER.iter().position(|x| *x == s);
    match stage.filter(|s| !s.is_empty()) {
        None => true,
        Some(s) => rank(s).is_some_and(|r| Some(r) < rank(DEAL_CONTACT_STAGE)),
    }
}

/// Moves the contacts that were just associated with a deal to [`DEAL_CONTACT_STAGE`] where
/// [`moves_to_deal_stage`] says so: one batch read and at most one batch update per 100
/// contacts. Returns the number moved and the contacts whose update HubSpot refused, with
/// its message (a contact that no longer exists is skipped).
pub async fn promote_deal_contacts(
    hs: &HubSpotClient,
    contact_ids: &[String],
) -> Result<(usize, Vec<(String, String)>), SyncError> {
    let mut ids: Vec<String> = contact_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok((0, Vec::new()));
    }
    let read = hs
        .batch_read("contacts", &ids, &[LIFECYCLE_PROPERTY], None)
        .await?;
    let inputs: Vec<UpdateInput> = read
        .items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|c| moves_to_deal_stage(c.prop(LIFECYCLE_PROPERTY)))
        .map(|c| UpdateInput {
            id: c.id.clone(),
            properties: [(
                LIFECYCLE_PROPERTY.to_string(),
                DEAL_CONTACT_STAGE.to_string(),
            )]
            .into(),
        })
        .collect();
    if inputs.is_empty() {
        return Ok((0, Vec::new()));
    }
    let out = hs.batch_update("contacts", &inputs, None).await?;
    let failed: Vec<(String, String)> = out
        .failures()
        .map(|(i, e)| (inputs[i].id.clone(), e.body.message.clone()))
        .collect();
    Ok((inputs.len() - failed.len(), failed))
}

/// The Salesforce changes toward a desired set: contact roles to add and an account to set.
#[derive(Debug, Default, PartialEq)]
pub struct SfChanges {
    /// New contact roles: (opportunity id, contact id, role, primary).
    pub roles_add: Vec<(String, String, Option<String>, bool)>,
    /// (opportunity id, account id) for opportunities without an account.
    pub account_set: Vec<(String, String)>,
}

/// Adds what makes an opportunity have every desired contact role (and its account when it
/// has none); returns the entries without a Salesforce id yet. Nothing is removed.
pub fn diff_salesforce(
    opp_id: &str,
    account_id: Option<&str>,
    desired: &[Related],
    roles: &[ContactRole],
    changes: &mut SfChanges,
) -> Vec<Related> {
    let mut waiting = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for r in desired {
        let Some(id) = r.salesforce_id.as_deref() else {
            waiting.push(r.clone());
            continue;
        };
        match r.kind {
            RelatedKind::Contact => {
                if seen.insert(id) && !roles.iter().any(|x| x.contact_id == id) {
                    changes.roles_add.push((
                        opp_id.to_string(),
                        id.to_string(),
                        r.role.clone(),
                        false,
                    ));
                }
            }
            RelatedKind::Company => {
                if account_id.is_none() && !changes.account_set.iter().any(|(o, _)| o == opp_id) {
                    changes
                        .account_set
                        .push((opp_id.to_string(), id.to_string()));
                }
            }
        }
    }
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(kind: RelatedKind, sf: Option<&str>, hs: Option<&str>) -> Related {
        Related {
            kind,
            salesforce_id: sf.map(Into::into),
            hubspot_id: hs.map(Into::into),
            role: None,
            primary: false,
        }
    }

    #[test]
    fn hubspot_diff_adds_and_removes_exactly_the_difference() {
        let current = DealAssociations {
            companies: vec![("c1".into(), false)],
            contacts: vec!["k1".into(), "k2".into()],
        };
        let desired = vec![
            rel(RelatedKind::Company, Some("001a"), Some("c1")),
            rel(RelatedKind::Contact, Some("003a"), Some("k1")),
            rel(RelatedKind::Contact, Some("003b"), Some("k3")),
            rel(RelatedKind::Contact, Some("003c"), None),
        ];
        let mut ch = HsChanges::default();
        let waiting = diff_hubspot("d1", &desired, &current, &mut ch);
        assert_eq!(waiting.len(), 1);
        assert_eq!(ch.contacts_add.len(), 1);
        assert_eq!(ch.contacts_add[0].to, "k3");
        assert_eq!(
            ch.contacts_remove,
            vec![("d1".to_string(), vec!["k2".to_string()])]
        );
        assert!(ch.companies_add.is_empty() && ch.companies_remove.is_empty());
    }

    #[test]
    fn a_new_deal_is_created_with_the_associations_that_have_a_hubspot_id() {
        let mut primary = rel(RelatedKind::Company, Some("001a"), Some("c1"));
        primary.primary = true;
        let desired = vec![
            primary,
            rel(RelatedKind::Contact, Some("003a"), Some("k1")),
            rel(RelatedKind::Contact, Some("003a"), Some("k1")),
            rel(RelatedKind::Contact, Some("003b"), None),
        ];
        let (specs, created) = inline_hubspot(&desired);
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].types,
            vec![
                AssociationType::DEAL_TO_COMPANY,
                AssociationType::DEAL_TO_COMPANY_PRIMARY
            ]
        );
        assert_eq!(specs[1].to, RecordRef::new("k1"));
        assert_eq!(created.companies, vec![("c1".to_string(), true)]);
        assert_eq!(created.contacts, vec!["k1".to_string()]);
        // Created with them, the deal needs no further change; the waiting one still waits.
        let mut ch = HsChanges::default();
        let waiting = diff_hubspot("d1", &desired, &created, &mut ch);
        assert!(ch.is_empty());
        assert_eq!(waiting.len(), 1);
    }

    #[test]
    fn a_deal_moves_a_contact_forward_to_opportunity_never_back() {
        for stage in [
            None,
            Some(""),
            Some("subscriber"),
            Some("lead"),
            Some("salesqualifiedlead"),
        ] {
            assert!(moves_to_deal_stage(stage), "{stage:?}");
        }
        for stage in [
            "opportunity",
            "customer",
            "evangelist",
            "other",
            "a_custom_stage",
        ] {
            assert!(!moves_to_deal_stage(Some(stage)), "{stage}");
        }
    }

    #[test]
    fn salesforce_diff_only_adds() {
        let roles = vec![ContactRole {
            contact_id: "003a".into(),
            role: None,
            primary: true,
        }];
        let desired = vec![
            rel(RelatedKind::Contact, Some("003a"), Some("k1")),
            rel(RelatedKind::Contact, Some("003b"), Some("k2")),
            rel(RelatedKind::Company, Some("001x"), Some("c1")),
        ];
        let mut ch = SfChanges::default();
        let waiting = diff_salesforce("006a", None, &desired, &roles, &mut ch);
        assert!(waiting.is_empty());
        assert_eq!(
            ch.roles_add,
            vec![("006a".to_string(), "003b".to_string(), None, false)]
        );
        assert_eq!(
            ch.account_set,
            vec![("006a".to_string(), "001x".to_string())]
        );
        let mut ch2 = SfChanges::default();
        diff_salesforce("006a", Some("001y"), &desired, &roles, &mut ch2);
        assert!(ch2.account_set.is_empty());
    }
}
