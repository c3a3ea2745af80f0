//! End-to-end tests of links and associations: contact roles ↔ deal associations (both
//! ways) and the contact rollups HubSpot calculates from them, the company association
//! from `AccountId` (and with company sync off), deals created into an empty portal with
//! their associations inline (and a create never duplicating a record), the association
//! sweep, convergence under injected faults with every failure recorded, and the change
//! cursors (1,000 records at one modification time; more than 10,000 HubSpot deals
//! changed since a checkpoint).
//!
//! Every test drives cycles explicitly and checks both CRMs.

use std::collections::BTreeSet;

use dealbridge::crm::hubspot::HubSpotClient;
use dealbridge::crm::hubspot::types::{
    CreateInput, Filter, FilterGroup, Operator, SearchRequest, UpdateInput, parse_timestamp_ms,
};
use dealbridge::crm::salesforce::{Fields, QueryScope};
use dealbridge::runtime::{Owner, Pipeline};
use dealbridge::store::{Direction, ErrorCategory, ObjectPair, Page, Side, TenantId};
use dealbridge::sync::apply::{HsNew, hs_create};
use dealbridge::sync::associations::deal_associations;
use dealbridge::sync::setup::CheckStatus;
use dealbridge::sync::{Engine, TenantConfig};
use dealbridge_e2e::{Emu, World, world, world_empty_portal, world_sized};
use serde_json::{Value, json};

fn tenant() -> TenantId {
    TenantId::new("demo").unwrap()
}

/// A sales-team member who is both a Salesforce user and a HubSpot owner.
fn owner(e: &Engine) -> Owner {
    e.setup()
        .owners
        .iter()
        .find(|o| o.salesforce_user_id.is_some() && o.hubspot_owner_id.is_some())
        .cloned()
        .expect("an owner on both sides")
}

fn pipeline(e: &Engine) -> Pipeline {
    e.setup()
        .pipelines
        .iter()
        .find(|p| p.record_type_id.is_some())
        .or(e.setup().pipelines.first())
        .cloned()
        .expect("a synced pipeline")
}

/// Gives every seeded account, contact and opportunity an owner who is in HubSpot (a
/// missing owner is a sync error of its own, tested elsewhere).
async fn owners_in_hubspot(w: &World, e: &Engine) {
    let sf_owner = json!(owner(e).salesforce_user_id.unwrap());
    let mut snap = w.salesforce_snapshot().await;
    for o in ["Opportunity", "Account", "Contact"] {
        set_all(&mut snap, o, "OwnerId", &sf_owner);
    }
    w.put_salesforce_snapshot(&snap).await;
}

fn assert_no_failures(failures: &[dealbridge::sync::engine::FailureLine]) {
    assert!(failures.is_empty(), "{failures:?}");
}

/// A cycle's counters show no create and no update on either side.
fn assert_writes_nothing(c: &dealbridge::store::RunCounters) {
    assert_eq!(
        (
            c.created_hubspot,
            c.updated_hubspot,
            c.created_salesforce,
            c.updated_salesforce
        ),
        (0, 0, 0, 0),
        "{c:?}"
    );
}

fn fields(v: Value) -> Fields {
    v.as_object().cloned().unwrap()
}

async fn create(w: &World, sobject: &str, v: Value) -> String {
    w.sf.create(sobject, &fields(v)).await.unwrap()
}

async fn new_opportunity(
    w: &World,
    e: &Engine,
    name: &str,
    amount: f64,
    stage: &str,
    close: &str,
    account: Option<&str>,
) -> String {
    let mut v = json!({
        "Name": name,
        "Amount": amount,
        "StageName": stage,
        "CloseDate": close,
        "OwnerId": owner(e).salesforce_user_id.unwrap(),
    });
    if let Some(rt) = pipeline(e).record_type_id {
        v["RecordTypeId"] = json!(rt);
    }
    if let Some(a) = account {
        v["AccountId"] = json!(a);
    }
    create(w, "Opportunity", v).await
}

async fn role(w: &World, opp: &str, contact: &str, primary: bool) {
    create(
        w,
        "OpportunityContactRole",
        json!({"OpportunityId": opp, "ContactId": contact, "Role": "Decision Maker", "IsPrimary": primary}),
    )
    .await;
}

/// The HubSpot id linked to a Salesforce id.
async fn hs_id(e: &Engine, pair: ObjectPair, sf_id: &str) -> String {
    let links = e
        .store()
        .links_by_salesforce_ids(&tenant(), pair, &[sf_id.to_string()])
        .await
        .unwrap();
    assert_eq!(links.len(), 1, "{sf_id} is linked in {pair}");
    links[0].hubspot_id.clone()
}

async fn contacts_of(w: &World, deal: &str) -> BTreeSet<String> {
    deal_associations(&w.hs, &[deal.to_string()])
        .await
        .unwrap()
        .remove(deal)
        .unwrap_or_default()
        .contacts
        .into_iter()
        .collect()
}

async fn role_contacts(w: &World, opp: &str) -> BTreeSet<String> {
    w.sf.query(
        &format!("SELECT ContactId FROM OpportunityContactRole WHERE OpportunityId = '{opp}'"),
        QueryScope::Live,
    )
    .await
    .unwrap()
    .iter()
    .filter_map(|r| r.str_field("ContactId").map(str::to_string))
    .collect()
}

/// A HubSpot date or datetime property as `YYYY-MM-DD`.
fn day(v: Option<&str>) -> Option<String> {
    let v = v?;
    if let Ok(ms) = v.parse::<i64>() {
        let days = ms.div_euclid(86_400_000);
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        return Some(format!("{y:04}-{m:02}-{d:02}"));
    }
    Some(v.chars().take(10).collect())
}

fn num(v: Option<&str>) -> Option<f64> {
    v.and_then(|s| s.parse().ok())
}

const ROLLUPS: [&str; 5] = [
    "num_associated_deals",
    "first_deal_created_date",
    "recent_deal_close_date",
    "recent_deal_amount",
    "total_revenue",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_roles_become_deal_associations_and_contact_rollups_come_out_right() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let acc = create(
        &w,
        "Account",
        json!({"Name": "Rollup Co", "OwnerId": sf_owner}),
    )
    .await;
    let c1 = create(
        &w,
        "Contact",
        json!({"FirstName": "Ada", "LastName": "Roll", "Email": "ada.roll@rollup.example", "AccountId": acc, "OwnerId": sf_owner}),
    )
    .await;
    let c2 = create(
        &w,
        "Contact",
        json!({"FirstName": "Bo", "LastName": "Roll", "Email": "bo.roll@rollup.example", "AccountId": acc, "OwnerId": sf_owner}),
    )
    .await;
    let o1 = new_opportunity(&w, &e, "R1", 1000.0, "Closed Won", "2026-03-01", Some(&acc)).await;
    let o2 = new_opportunity(&w, &e, "R2", 2500.0, "Closed Won", "2026-04-15", Some(&acc)).await;
    role(&w, &o1, &c1, true).await;
    role(&w, &o1, &c2, false).await;
    role(&w, &o2, &c1, true).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    // The most recently *created* deal is an open one with a smaller amount.
    let o3 = new_opportunity(&w, &e, "R3", 700.0, "Prospecting", "2026-06-30", Some(&acc)).await;
    role(&w, &o3, &c1, false).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);

    let (d1, d2, d3) = (
        hs_id(&e, ObjectPair::OpportunityDeal, &o1).await,
        hs_id(&e, ObjectPair::OpportunityDeal, &o2).await,
        hs_id(&e, ObjectPair::OpportunityDeal, &o3).await,
    );
    let (h1, h2) = (
        hs_id(&e, ObjectPair::ContactContact, &c1).await,
        hs_id(&e, ObjectPair::ContactContact, &c2).await,
    );
    assert_eq!(
        contacts_of(&w, &d1).await,
        BTreeSet::from([h1.clone(), h2.clone()])
    );
    assert_eq!(contacts_of(&w, &d2).await, BTreeSet::from([h1.clone()]));
    assert_eq!(contacts_of(&w, &d3).await, BTreeSet::from([h1.clone()]));

    let created = |d: dealbridge::crm::hubspot::HsObject| {
        d.created_at
            .as_deref()
            .and_then(parse_timestamp_ms)
            .expect("createdAt")
    };
    let t1 = created(w.hs.get("deals", &d1, &["amount"], &[]).await.unwrap());
    let t2 = created(w.hs.get("deals", &d2, &["amount"], &[]).await.unwrap());
    let t3 = created(w.hs.get("deals", &d3, &["amount"], &[]).await.unwrap());
    assert!(t3 > t1.max(t2), "R3 was created last");

    let k1 = w.hs.get("contacts", &h1, &ROLLUPS, &[]).await.unwrap();
    assert_eq!(k1.prop("num_associated_deals"), Some("3"));
    assert_eq!(num(k1.prop("recent_deal_amount")), Some(700.0), "{k1:?}");
    assert_eq!(num(k1.prop("total_revenue")), Some(3500.0), "{k1:?}");
    assert_eq!(
        day(k1.prop("recent_deal_close_date")).as_deref(),
        Some("2026-04-15")
    );
    assert_eq!(
        k1.prop("first_deal_created_date")
            .and_then(parse_timestamp_ms),
        Some(t1.min(t2))
    );
    let k2 = w.hs.get("contacts", &h2, &ROLLUPS, &[]).await.unwrap();
    assert_eq!(k2.prop("num_associated_deals"), Some("1"));
    assert_eq!(num(k2.prop("recent_deal_amount")), Some(1000.0));
    assert_eq!(num(k2.prop("total_revenue")), Some(1000.0));
    assert_eq!(
        day(k2.prop("recent_deal_close_date")).as_deref(),
        Some("2026-03-01")
    );
    // Another cycle changes no association.
    e.run_cycle().await.unwrap();
    assert_eq!(contacts_of(&w, &d1).await, BTreeSet::from([h1.clone(), h2]));
}

/// Into a portal that held no company, contact or deal, a backfill creates the deals with
/// their company and contact associations in the create calls (no association call at
/// all), and the contacts that have a contact role at the `opportunity` lifecycle stage
/// (no lifecycle read or update); the next cycle finds nothing to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_into_an_empty_portal_creates_deals_with_their_associations() {
    let w = world_empty_portal(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let acc = create(
        &w,
        "Account",
        json!({"Name": "Inline Co", "OwnerId": sf_owner}),
    )
    .await;
    let mut contacts = Vec::new();
    for name in ["Ada", "Bo", "Cy"] {
        contacts.push(
            create(
                &w,
                "Contact",
                json!({"FirstName": name, "LastName": "Inline", "Email": format!("{name}@inline.example"), "AccountId": acc, "OwnerId": sf_owner}),
            )
            .await,
        );
    }
    let o1 = new_opportunity(
        &w,
        &e,
        "I1",
        1000.0,
        "Prospecting",
        "2026-03-01",
        Some(&acc),
    )
    .await;
    let o2 = new_opportunity(&w, &e, "I2", 2500.0, "Prospecting", "2026-04-15", None).await;
    role(&w, &o1, &contacts[0], true).await;
    role(&w, &o1, &contacts[1], false).await;
    role(&w, &o2, &contacts[1], false).await;
    w.reset_accounting().await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let v4_calls: u64 = w.requests(Emu::HubSpot).await["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["route"]
                .as_str()
                .is_some_and(|r| r.starts_with("/crm/v4/"))
        })
        .map(|c| c["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(v4_calls, 0, "associations were created with the deals");
    // One batch call per object type, the creates: the contacts with a role were created
    // at their lifecycle stage, so the lifecycle step read and moved none of them.
    assert_eq!(
        w.calls_with(Emu::HubSpot, "/crm/v3/objects/{object_type}/batch/", 200)
            .await
            + w.calls_with(Emu::HubSpot, "/crm/v3/objects/{object_type}/batch/", 201)
                .await,
        3,
        "{}",
        w.requests(Emu::HubSpot).await
    );
    let h3 = hs_id(&e, ObjectPair::ContactContact, &contacts[2]).await;
    assert_eq!(
        lifecycle_stage(&w, &h3).await.unwrap_or_default(),
        "",
        "no role, no stage"
    );
    let (d1, d2) = (
        hs_id(&e, ObjectPair::OpportunityDeal, &o1).await,
        hs_id(&e, ObjectPair::OpportunityDeal, &o2).await,
    );
    let company = hs_id(&e, ObjectPair::AccountCompany, &acc).await;
    let (h1, h2) = (
        hs_id(&e, ObjectPair::ContactContact, &contacts[0]).await,
        hs_id(&e, ObjectPair::ContactContact, &contacts[1]).await,
    );
    let a1 = deal_associations(&w.hs, &[d1.clone(), d2.clone()])
        .await
        .unwrap();
    assert_eq!(
        a1[&d1].companies,
        vec![(company, true)],
        "the primary company"
    );
    assert_eq!(
        contacts_of(&w, &d1).await,
        BTreeSet::from([h1.clone(), h2.clone()])
    );
    assert!(a1[&d2].companies.is_empty(), "no account, no company");
    assert_eq!(contacts_of(&w, &d2).await, BTreeSet::from([h2.clone()]));
    for h in [&h1, &h2] {
        assert_eq!(
            lifecycle_stage(&w, h).await.as_deref(),
            Some("opportunity"),
            "a contact with a deal"
        );
    }
    // HubSpot's own rollups count the associations made at create time.
    let k2 = w.hs.get("contacts", &h2, &ROLLUPS, &[]).await.unwrap();
    assert_eq!(k2.prop("num_associated_deals"), Some("2"));
    let again = e.run_cycle().await.unwrap();
    assert_eq!(
        (
            again.counters.created_hubspot,
            again.counters.updated_hubspot
        ),
        (0, 0),
        "{:?}",
        again.counters
    );
    assert_eq!(contacts_of(&w, &d1).await, BTreeSet::from([h1, h2]));
}

/// A create never makes a second record for one Salesforce id: an input whose
/// cross-reference value a record already holds (written meanwhile, or before a crash) is
/// upserted onto that record, without its associations; the others are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_cross_reference_exists_is_upserted_onto_that_record() {
    let w = world_empty_portal(0).await;
    let cfg = w.config("");
    // The set-up creates the unique cross-reference property.
    let _e = w.engine(&cfg, "a").await;
    let hs = w.hubspot_unthrottled();
    let xref = cfg.hubspot.cross_reference_property.clone();
    let input = |sf_id: &str, name: &str| UpdateInput {
        id: sf_id.to_string(),
        properties: [
            ("name".to_string(), name.to_string()),
            (xref.clone(), sf_id.to_string()),
        ]
        .into(),
    };
    let (old_sf, new_sf) = ("001000000000001AAA", "001000000000002AAA");
    let before = hs
        .batch_upsert("companies", &xref, &[input(old_sf, "Before")])
        .await
        .unwrap();
    let existing = before.items[0].as_ref().unwrap().id.clone();
    // A create-only property goes with the create, never onto the existing record.
    let create_only = || [("industry".to_string(), "Created".to_string())].into();
    let news = vec![
        HsNew {
            input: input(old_sf, "After"),
            associations: vec![],
            create_only: create_only(),
        },
        HsNew {
            input: input(new_sf, "New"),
            associations: vec![],
            create_only: create_only(),
        },
    ];
    let res = hs_create(&hs, "companies", &xref, &news).await;
    let (first, first_inline) = &res[0];
    assert_eq!(first.as_ref().unwrap().id, existing, "the same record");
    assert!(!first_inline, "written by the upsert");
    let (second, second_inline) = &res[1];
    assert!(second.is_ok() && *second_inline, "{second:?}");
    for sf_id in [old_sf, new_sf] {
        let found = hs
            .search(
                "companies",
                &SearchRequest {
                    filter_groups: vec![FilterGroup {
                        filters: vec![Filter::new(&xref, Operator::Eq, sf_id)],
                    }],
                    properties: vec!["name".into()],
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(found.total, 1, "one company for {sf_id}");
    }
    let now = hs
        .get("companies", &existing, &["name", "industry"], &[])
        .await
        .unwrap();
    assert_eq!(now.prop("name"), Some("After"));
    assert_eq!(
        now.prop("industry").unwrap_or(""),
        "",
        "not set on the existing record"
    );
    let created = hs
        .get(
            "companies",
            &second.as_ref().unwrap().id,
            &["industry"],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.prop("industry"), Some("Created"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_association_added_only_in_hubspot_is_swept_into_a_contact_role() {
    let w = world(0).await;
    let cfg = w.config("association_sweep_every = 1");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let acc = create(
        &w,
        "Account",
        json!({"Name": "Sweep Co", "OwnerId": sf_owner}),
    )
    .await;
    let c1 = create(
        &w,
        "Contact",
        json!({"FirstName": "Cy", "LastName": "Sweep", "Email": "cy@sweep.example", "AccountId": acc, "OwnerId": sf_owner}),
    )
    .await;
    let c2 = create(
        &w,
        "Contact",
        json!({"FirstName": "Di", "LastName": "Sweep", "Email": "di@sweep.example", "AccountId": acc, "OwnerId": sf_owner}),
    )
    .await;
    let o1 = new_opportunity(&w, &e, "S1", 300.0, "Prospecting", "2026-07-01", Some(&acc)).await;
    role(&w, &o1, &c1, true).await;
    e.run_cycle().await.unwrap();
    e.run_cycle().await.unwrap();
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &o1).await;
    let (h1, h2) = (
        hs_id(&e, ObjectPair::ContactContact, &c1).await,
        hs_id(&e, ObjectPair::ContactContact, &c2).await,
    );
    assert_eq!(contacts_of(&w, &deal).await, BTreeSet::from([h1.clone()]));
    let modified =
        |o: dealbridge::crm::hubspot::HsObject| o.prop("hs_lastmodifieddate").map(str::to_string);
    let before = modified(
        w.hs.get("deals", &deal, &["hs_lastmodifieddate"], &[])
            .await
            .unwrap(),
    );

    // Only in HubSpot: the deal's modification time does not move.
    w.hs.associate_default("deals", &deal, "contacts", &h2)
        .await
        .unwrap();
    assert_eq!(
        modified(
            w.hs.get("deals", &deal, &["hs_lastmodifieddate"], &[])
                .await
                .unwrap()
        ),
        before
    );
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    assert_eq!(
        role_contacts(&w, &o1).await,
        BTreeSet::from([c1.clone(), c2.clone()]),
        "the HubSpot association became a contact role"
    );
    // The role's echo (Salesforce → HubSpot) keeps both associations.
    e.run_cycle().await.unwrap();
    e.run_cycle().await.unwrap();
    assert_eq!(contacts_of(&w, &deal).await, BTreeSet::from([h1, h2]));
    assert_eq!(role_contacts(&w, &o1).await.len(), 2, "no duplicate role");
}

/// A HubSpot contact without an owner goes to Salesforce with Salesforce's default owner
/// (the integration user, who has no HubSpot owner) and settles without an error: a blank
/// owner is no mismatch. An owner given in Salesforce later comes to HubSpot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_contact_without_an_owner_takes_the_salesforce_default_without_error() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let email = "no.owner@blank.example";
    let h =
        w.hs.create(
            "contacts",
            &[
                ("email".to_string(), email.to_string()),
                ("firstname".to_string(), "No".to_string()),
                ("lastname".to_string(), "Owner".to_string()),
            ]
            .into(),
            &[],
        )
        .await
        .unwrap()
        .id;
    for _ in 0..3 {
        let r = e.run_cycle().await.unwrap();
        assert_no_failures(&r.failures);
    }
    let sf =
        w.sf.query(
            &format!("SELECT Id, OwnerId FROM Contact WHERE Email = '{email}'"),
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert_eq!(sf.len(), 1, "{sf:?}");
    let sf_id = sf[0].id().unwrap().to_string();
    let default_owner = sf[0].str_field("OwnerId").unwrap().to_string();
    assert!(
        !e.setup()
            .owners
            .iter()
            .any(
                |o| o.salesforce_user_id.as_deref() == Some(default_owner.as_str())
                    && o.hubspot_owner_id.is_some()
            ),
        "Salesforce's default owner has no HubSpot owner"
    );
    let hs_owner = |o: dealbridge::crm::hubspot::HsObject| {
        o.prop("hubspot_owner_id")
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    assert_eq!(
        hs_owner(
            w.hs.get("contacts", &h, &["hubspot_owner_id"], &[])
                .await
                .unwrap()
        ),
        None
    );
    assert!(
        e.store()
            .open_errors(&tenant(), None, Page::first(100))
            .await
            .unwrap()
            .is_empty()
    );

    let real = owner(&e);
    w.sf.update(
        "Contact",
        &sf_id,
        &fields(json!({"OwnerId": real.salesforce_user_id.clone().unwrap()})),
    )
    .await
    .unwrap();
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    assert_eq!(
        hs_owner(
            w.hs.get("contacts", &h, &["hubspot_owner_id"], &[])
                .await
                .unwrap()
        ),
        real.hubspot_owner_id
    );
}

/// An opportunity, its account and contacts with a role each, synced (the links exist):
/// (opportunity, account, contacts).
async fn opportunity_with_roles(
    w: &World,
    e: &mut Engine,
    tag: &str,
    n: usize,
) -> (String, String, Vec<String>) {
    let sf_owner = owner(e).salesforce_user_id.unwrap();
    let acc = create(
        w,
        "Account",
        json!({"Name": format!("{tag} Co"), "OwnerId": sf_owner}),
    )
    .await;
    let mut contacts = Vec::new();
    for i in 0..n {
        contacts.push(
            create(
                w,
                "Contact",
                json!({"FirstName": format!("P{i}"), "LastName": tag, "Email": format!("p{i}@{tag}.example"), "AccountId": acc, "OwnerId": sf_owner}),
            )
            .await,
        );
    }
    let opp = new_opportunity(w, e, tag, 400.0, "Prospecting", "2026-08-01", Some(&acc)).await;
    for (i, c) in contacts.iter().enumerate() {
        role(w, &opp, c, i == 0).await;
    }
    for _ in 0..2 {
        let r = e.run_cycle().await.unwrap();
        assert_no_failures(&r.failures);
    }
    (opp, acc, contacts)
}

async fn companies_of(w: &World, deal: &str) -> BTreeSet<String> {
    deal_associations(&w.hs, &[deal.to_string()])
        .await
        .unwrap()
        .remove(deal)
        .unwrap_or_default()
        .companies
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

async fn lifecycle_stage(w: &World, contact: &str) -> Option<String> {
    w.hs.get("contacts", contact, &["lifecyclestage"], &[])
        .await
        .unwrap()
        .prop("lifecyclestage")
        .map(str::to_string)
}

/// A contact associated with a synced deal moves forward to the `opportunity` lifecycle
/// stage, never back (`customer` stays, `other` is left alone); the contact's change
/// coming back is an echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_that_gets_a_deal_moves_forward_to_the_opportunity_stage() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let mut contacts = Vec::new();
    for name in ["Lea", "Cus", "Oth", "Bla", "Out"] {
        contacts.push(
            create(
                &w,
                "Contact",
                json!({"FirstName": name, "LastName": "Stage", "Email": format!("{name}@stage.example"), "OwnerId": sf_owner}),
            )
            .await,
        );
    }
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let mut hs = Vec::new();
    for c in &contacts {
        hs.push(hs_id(&e, ObjectPair::ContactContact, c).await);
    }
    for (h, stage) in hs.iter().zip(["lead", "customer", "other", "", "lead"]) {
        w.hs.update(
            "contacts",
            h,
            &[("lifecyclestage".to_string(), stage.to_string())].into(),
        )
        .await
        .unwrap();
    }
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);

    let opp = new_opportunity(&w, &e, "Stage", 900.0, "Prospecting", "2026-09-01", None).await;
    for c in &contacts[..4] {
        role(&w, &opp, c, false).await;
    }
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &opp).await;
    assert_eq!(
        contacts_of(&w, &deal).await,
        hs[..4].iter().cloned().collect::<BTreeSet<_>>()
    );
    let mut stages = Vec::new();
    for h in &hs {
        stages.push(lifecycle_stage(&w, h).await);
    }
    assert_eq!(
        stages,
        [
            Some("opportunity"),
            Some("customer"),
            Some("other"),
            Some("opportunity"),
            Some("lead"),
        ]
        .map(|s| s.map(str::to_string))
    );
    // The contacts' change comes back as an echo: nothing is written to either CRM.
    let again = e.run_cycle().await.unwrap();
    assert_no_failures(&again.failures);
    assert_writes_nothing(&again.counters);
    assert_eq!(
        lifecycle_stage(&w, &hs[0]).await.as_deref(),
        Some("opportunity")
    );
}

/// Associations removed in HubSpot while Salesforce still has the contact role and the
/// account are restored by the sweep (Salesforce is the source of roles); the roles stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_removed_only_in_hubspot_are_restored_by_the_sweep() {
    let w = world(0).await;
    let cfg = w.config("association_sweep_every = 1");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let (opp, acc, contacts) = opportunity_with_roles(&w, &mut e, "restore", 2).await;
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &opp).await;
    let company = hs_id(&e, ObjectPair::AccountCompany, &acc).await;
    let (h1, h2) = (
        hs_id(&e, ObjectPair::ContactContact, &contacts[0]).await,
        hs_id(&e, ObjectPair::ContactContact, &contacts[1]).await,
    );
    assert_eq!(
        contacts_of(&w, &deal).await,
        BTreeSet::from([h1.clone(), h2.clone()])
    );
    assert_eq!(
        companies_of(&w, &deal).await,
        BTreeSet::from([company.clone()])
    );

    w.hs.batch_archive_associations("deals", "contacts", &[(deal.clone(), vec![h2.clone()])])
        .await
        .unwrap();
    w.hs.batch_archive_associations(
        "deals",
        "companies",
        &[(deal.clone(), vec![company.clone()])],
    )
    .await
    .unwrap();
    assert_eq!(contacts_of(&w, &deal).await, BTreeSet::from([h1.clone()]));
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    assert_eq!(contacts_of(&w, &deal).await, BTreeSet::from([h1, h2]));
    assert_eq!(companies_of(&w, &deal).await, BTreeSet::from([company]));
    assert_eq!(
        role_contacts(&w, &opp).await,
        contacts.iter().cloned().collect::<BTreeSet<_>>()
    );
}

/// A contact role deleted in Salesforce takes its deal association away in HubSpot, even
/// with the sweep running in every cycle: the sweep does not mistake the association left
/// in HubSpot for one added there (which would re-create the role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_deleted_in_salesforce_removes_the_association_despite_the_sweep() {
    let w = world(0).await;
    let cfg = w.config("association_sweep_every = 1");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let (opp, _, contacts) = opportunity_with_roles(&w, &mut e, "unrole", 2).await;
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &opp).await;
    let h1 = hs_id(&e, ObjectPair::ContactContact, &contacts[0]).await;
    assert_eq!(contacts_of(&w, &deal).await.len(), 2);
    let gone = w
        .sf
        .query(
            &format!(
                "SELECT Id FROM OpportunityContactRole WHERE OpportunityId = '{opp}' AND ContactId = '{}'",
                contacts[1]
            ),
            QueryScope::Live,
        )
        .await
        .unwrap();
    w.sf.delete("OpportunityContactRole", gone[0].id().unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        let r = e.run_cycle().await.unwrap();
        assert_no_failures(&r.failures);
    }
    assert_eq!(
        role_contacts(&w, &opp).await,
        BTreeSet::from([contacts[0].clone()]),
        "the deleted role was not re-created"
    );
    assert_eq!(contacts_of(&w, &deal).await, BTreeSet::from([h1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_becomes_the_deal_company_association() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let acc = create(
        &w,
        "Account",
        json!({"Name": "Company Co", "OwnerId": sf_owner}),
    )
    .await;
    let o = new_opportunity(&w, &e, "C1", 10.0, "Prospecting", "2026-08-01", Some(&acc)).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &o).await;
    let company = hs_id(&e, ObjectPair::AccountCompany, &acc).await;
    let a = deal_associations(&w.hs, std::slice::from_ref(&deal))
        .await
        .unwrap()
        .remove(&deal)
        .unwrap_or_default();
    assert_eq!(a.companies, vec![(company, true)], "the primary company");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_company_sync_off_a_deal_gets_no_company_and_the_report_says_so() {
    let w = world(0).await;
    let cfg = w.config("company_sync = false");
    let (mut e, report) = w.engine_with_report(&cfg, "a").await;
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "order.company_before_deal")
        .expect("the order check");
    assert_eq!(check.status, CheckStatus::Warning);
    assert!(
        check.message.contains("without their company association"),
        "{}",
        check.message
    );
    owners_in_hubspot(&w, &e).await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    let acc = create(
        &w,
        "Account",
        json!({"Name": "Offline Co", "OwnerId": sf_owner}),
    )
    .await;
    let o = new_opportunity(&w, &e, "N1", 10.0, "Prospecting", "2026-08-01", Some(&acc)).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, &o).await;
    let a = deal_associations(&w.hs, std::slice::from_ref(&deal))
        .await
        .unwrap()
        .remove(&deal)
        .unwrap_or_default();
    assert!(a.companies.is_empty(), "{a:?}");
    let search =
        w.hs.search(
            "companies",
            &SearchRequest {
                filter_groups: vec![FilterGroup {
                    filters: vec![Filter::new("dealbridge_sf_id", Operator::Eq, acc.as_str())],
                }],
                limit: 10,
                ..Default::default()
            },
        )
        .await;
    // Company sync off: not even the cross-reference property was set up on companies.
    match search {
        Ok(found) => assert_eq!(found.total, 0, "no company was synced"),
        Err(e) => assert!(
            e.to_string().contains("dealbridge_sf_id does not exist"),
            "{e}"
        ),
    }
    assert!(
        e.store()
            .links_by_salesforce_ids(&tenant(), ObjectPair::AccountCompany, &[acc])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_injected_faults_the_sync_converges_and_every_failure_is_recorded() {
    let w = world_sized(6, 12, 24).await;
    // Salesforce sessions live one second: the engine must log in again, more than once.
    w.set_faults(Emu::Salesforce, json!({"token_lifetime_secs": 1}))
        .await;
    let cfg = w.config("retry_interval_secs = 1");
    let mut e = w.engine(&cfg, "a").await;
    // Every record has an owner who is in HubSpot (a missing owner is its own error).
    let sf_owner = json!(owner(&e).salesforce_user_id.unwrap());
    let mut snap = w.salesforce_snapshot().await;
    for o in ["Opportunity", "Account", "Contact"] {
        set_all(&mut snap, o, "OwnerId", &sf_owner);
    }
    w.put_salesforce_snapshot(&snap).await;
    let victim =
        w.sf.query(
            "SELECT Id, Name FROM Opportunity ORDER BY Id LIMIT 1",
            QueryScope::Live,
        )
        .await
        .unwrap()
        .remove(0);
    let victim_name = victim.str_field("Name").unwrap().to_string();
    // Salesforce answers 503 to every collection write; HubSpot 429 to every company
    // write; a validation rule refuses one deal.
    w.set_faults(
        Emu::Salesforce,
        json!({
            "token_lifetime_secs": 1,
            "error_rates": [
                {"status": 503, "rate": 1.0, "path_prefix": "/services/data/v62.0/composite/sobjects"}
            ]
        }),
    )
    .await;
    w.set_faults(
        Emu::HubSpot,
        json!({
            "error_rates": [
                {"status": 429, "rate": 1.0, "path_prefix": "/crm/v3/objects/companies/batch/upsert"}
            ],
            "validation_failures": [
                {"object": "deals", "field": "dealname", "equals": victim_name, "message": "Deal name is reserved"}
            ]
        }),
    )
    .await;
    let first = e.run_cycle().await.unwrap();
    let cats: BTreeSet<&str> = first.failures.iter().map(|f| f.category).collect();
    for c in ["crm_unavailable", "rate_limit", "validation"] {
        assert!(cats.contains(c), "{c} in {:?}", first.failures);
    }
    let open = e
        .store()
        .open_errors(&tenant(), None, Page::first(1000))
        .await
        .unwrap();
    // Every failed record is stored with the category the cycle reported.
    for f in &first.failures {
        let (side, id) = f.record.split_once(':').unwrap();
        assert!(
            open.iter().any(|o| o.record.id == id
                && o.category.as_str() == f.category
                && (o.record.side == Side::Salesforce) == (side == "salesforce")),
            "{f:?} is stored"
        );
    }
    let victim_err = open
        .iter()
        .find(|o| o.record.id == victim.id().unwrap())
        .expect("the validation failure is stored");
    assert_eq!(victim_err.category, ErrorCategory::Validation);
    assert!(victim_err.message.contains("Deal name is reserved"));
    assert!(
        open.iter()
            .any(|o| o.category == ErrorCategory::CrmUnavailable)
    );
    assert!(
        open.iter()
            .any(|o| o.object_pair == ObjectPair::AccountCompany
                && o.category == ErrorCategory::RateLimit)
    );

    // Fixed: the retries resolve every error (they fall due after the 1 s interval).
    w.set_faults(Emu::HubSpot, json!({})).await;
    w.set_faults(Emu::Salesforce, json!({"token_lifetime_secs": 1}))
        .await;
    let mut open_left = usize::MAX;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let _ = e.run_cycle().await;
        open_left = e
            .store()
            .open_errors(&tenant(), None, Page::first(1000))
            .await
            .unwrap()
            .len();
        if open_left == 0 {
            break;
        }
    }
    let left = e
        .store()
        .open_errors(&tenant(), None, Page::first(1000))
        .await
        .unwrap();
    assert_eq!(open_left, 0, "{left:?}");
    // Both CRMs agree: every opportunity, account and contact that syncs is linked.
    let opps =
        w.sf.query("SELECT Id FROM Opportunity", QueryScope::Live)
            .await
            .unwrap();
    let ids: Vec<String> = opps
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect();
    let linked = e
        .store()
        .links_by_salesforce_ids(&tenant(), ObjectPair::OpportunityDeal, &ids)
        .await
        .unwrap();
    assert!(
        linked
            .iter()
            .any(|l| l.salesforce_id == victim.id().unwrap())
    );
    let deal = hs_id(&e, ObjectPair::OpportunityDeal, victim.id().unwrap()).await;
    let d = w.hs.get("deals", &deal, &["dealname"], &[]).await.unwrap();
    assert_eq!(d.prop("dealname"), Some(victim_name.as_str()));
    let accounts =
        w.sf.query("SELECT Id FROM Account", QueryScope::Live)
            .await
            .unwrap();
    let acc_ids: Vec<String> = accounts
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect();
    assert_eq!(
        e.store()
            .links_by_salesforce_ids(&tenant(), ObjectPair::AccountCompany, &acc_ids)
            .await
            .unwrap()
            .len(),
        acc_ids.len(),
        "every account has its company"
    );
    // The faults really happened.
    assert!(w.calls_with(Emu::Salesforce, "composite", 503).await >= 1);
    assert!(w.calls_with(Emu::HubSpot, "batch", 429).await >= 1);
    assert!(
        w.calls_with(Emu::Salesforce, "", 401).await >= 1,
        "an expired session was refused"
    );
}

fn set_all(snapshot: &mut Value, object: &str, field: &str, value: &Value) -> usize {
    let recs = snapshot["objects"][object]["records"]
        .as_array_mut()
        .unwrap();
    for r in recs.iter_mut() {
        r[field] = value.clone();
    }
    recs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_opportunities_sharing_one_modification_time_sync_once_each() {
    let w = world_sized(5, 10, 1_000).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    let sf_owner = owner(&e).salesforce_user_id.unwrap();
    // Every opportunity: one owner who is in HubSpot, and one SystemModstamp.
    let mut snap = w.salesforce_snapshot().await;
    let stamp = snap["objects"]["Opportunity"]["records"][0]["SystemModstamp"].clone();
    assert_eq!(
        set_all(&mut snap, "Opportunity", "SystemModstamp", &stamp),
        1_000
    );
    for o in ["Opportunity", "Account", "Contact"] {
        set_all(&mut snap, o, "OwnerId", &json!(sf_owner));
    }
    w.put_salesforce_snapshot(&snap).await;

    let first = e.run_cycle().await.unwrap();
    assert_no_failures(&first.failures);
    // 1,000 deals, plus the companies and contacts not matched by domain or email.
    assert!(
        (1_000..=1_015).contains(&first.counters.created_hubspot),
        "{:?}",
        first.counters
    );
    let ids: Vec<String> =
        w.sf.query("SELECT Id FROM Opportunity", QueryScope::Live)
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.id().map(str::to_string))
            .collect();
    assert_eq!(ids.len(), 1_000);
    let links = e
        .store()
        .links_by_salesforce_ids(&tenant(), ObjectPair::OpportunityDeal, &ids)
        .await
        .unwrap();
    assert_eq!(links.len(), 1_000);
    let hs_ids: BTreeSet<&str> = links.iter().map(|l| l.hubspot_id.as_str()).collect();
    assert_eq!(hs_ids.len(), 1_000, "one deal each");

    // All of them change again at one new instant, after the checkpoint.
    let marker = create(&w, "Account", json!({"Name": "clock"})).await;
    let now =
        w.sf.get("Account", &marker, Some(&["SystemModstamp"]))
            .await
            .unwrap();
    let now = json!(now.str_field("SystemModstamp").unwrap());
    let mut snap = w.salesforce_snapshot().await;
    set_all(&mut snap, "Opportunity", "SystemModstamp", &now);
    set_all(&mut snap, "Opportunity", "Description", &json!("tied"));
    w.put_salesforce_snapshot(&snap).await;
    let second = e.run_cycle().await.unwrap();
    assert_eq!(
        second.counters.updated_hubspot, 1_000,
        "{:?}",
        second.counters
    );
    let third = e.run_cycle().await.unwrap();
    assert_eq!(
        (
            third.counters.updated_hubspot,
            third.counters.created_hubspot
        ),
        (0, 0),
        "nothing twice: {:?}",
        third.counters
    );
    let deals =
        w.hs.batch_read(
            "deals",
            &links[..100]
                .iter()
                .map(|l| l.hubspot_id.clone())
                .collect::<Vec<_>>(),
            &["description"],
            None,
        )
        .await
        .unwrap();
    for d in deals.items.into_iter().map(Result::unwrap) {
        assert_eq!(d.prop("description"), Some("tied"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_ten_thousand_hubspot_deals_changed_since_the_checkpoint_all_sync() {
    const N: usize = 10_100;
    let w = world(0).await;
    w.hubspot_rate_limits(
        json!({"ten_secondly": null, "interval_ms": 10000, "search_per_second": null, "daily": null}),
    )
    .await;
    let cfg = w.config_unthrottled("batch_size = 1000");
    let mut e = w.engine(&cfg, "a").await;
    owners_in_hubspot(&w, &e).await;
    e.run_cycle().await.unwrap();
    create_hubspot_deals(&w.hubspot_unthrottled(), &e, "bulk", N).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    assert_eq!(r.counters.created_salesforce, N as i64, "{:?}", r.counters);
    let count =
        w.sf.query_page::<dealbridge::crm::salesforce::types::SObject>(
            "SELECT COUNT() FROM Opportunity WHERE Name LIKE 'bulk %'",
            QueryScope::Live,
        )
        .await
        .unwrap()
        .total_size;
    assert_eq!(count as usize, N, "every deal became one opportunity");
    let mut links = 0;
    let mut after: Option<String> = None;
    loop {
        let page = e
            .store()
            .links(
                &tenant(),
                ObjectPair::OpportunityDeal,
                after.as_deref(),
                1000,
            )
            .await
            .unwrap();
        links += page.len();
        after = page.last().map(|l| l.salesforce_id.clone());
        if page.len() < 1000 {
            break;
        }
    }
    assert_eq!(links, N);
}

/// Creates `n` deals in HubSpot (a multiple of 100, a batch call each), named
/// "prefix batch-i", in the first stage of the first pipeline, owned by a synced owner.
async fn create_hubspot_deals(hs: &HubSpotClient, e: &Engine, prefix: &str, n: usize) {
    let hs_owner = owner(e).hubspot_owner_id.unwrap();
    let p = pipeline(e);
    let stage = p.stages[0].id.clone();
    for b in 0..n / 100 {
        let inputs: Vec<CreateInput> = (0..100)
            .map(|i| CreateInput {
                properties: [
                    ("dealname".to_string(), format!("{prefix} {b}-{i}")),
                    ("amount".to_string(), format!("{}", b * 100 + i)),
                    ("pipeline".to_string(), p.id.clone()),
                    ("dealstage".to_string(), stage.clone()),
                    ("closedate".to_string(), "2026-09-30".to_string()),
                    ("hubspot_owner_id".to_string(), hs_owner.clone()),
                ]
                .into(),
                associations: vec![],
            })
            .collect();
        hs.batch_create("deals", &inputs).await.unwrap();
    }
}

/// Runs a cycle that must stop at the armed fault point.
async fn crash_at_the_fault_point(e: &mut Engine) {
    let err = e.run_cycle().await.unwrap_err();
    assert!(
        matches!(err, dealbridge::sync::SyncError::Injected(_)),
        "{err}"
    );
}

/// Drops the crashed engine, starts another on the same store and runs two cycles: the
/// first fails no record, the second writes nothing.
async fn restart_and_settle(w: &World, cfg: &TenantConfig, crashed: Engine) -> Engine {
    drop(crashed);
    let mut e = w.engine(cfg, "second").await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let again = e.run_cycle().await.unwrap();
    assert_writes_nothing(&again.counters);
    e
}

/// The records of `object` in HubSpot (one search for the total).
async fn hubspot_total(w: &World, object: &str) -> u64 {
    w.hs.search(
        object,
        &SearchRequest {
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .total
}

/// The batches of one page are written side by side. A crash after some of them were
/// acknowledged and committed while others were not (the page's checkpoint not yet moved)
/// loses nothing and duplicates nothing after the restart: every record has exactly one
/// counterpart and one link, and a further cycle writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_among_batches_written_side_by_side_loses_and_duplicates_nothing() {
    let w = world_empty_portal(600).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "first").await;
    owners_in_hubspot(&w, &e).await;
    // The accounts' and contacts' batches (side by side) pass the fault point first; it
    // fires among the opportunity page's batches or the companies' and contacts'
    // read-backs that run beside them.
    e.fault_point().arm_after_apply(6);
    crash_at_the_fault_point(&mut e).await;
    let e2 = restart_and_settle(&w, &cfg, e).await;
    assert_every_record_linked_once(&w, &e2).await;
}

/// Every account, contact and opportunity has exactly one link and one HubSpot record.
async fn assert_every_record_linked_once(w: &World, e: &Engine) {
    let tenant = tenant();
    for (sobject, object, pair) in [
        ("Account", "companies", ObjectPair::AccountCompany),
        ("Contact", "contacts", ObjectPair::ContactContact),
        ("Opportunity", "deals", ObjectPair::OpportunityDeal),
    ] {
        let rows =
            w.sf.query(&format!("SELECT Id FROM {sobject}"), QueryScope::Live)
                .await
                .unwrap();
        let mut links = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = e
                .store()
                .links(&tenant, pair, after.as_deref(), 500)
                .await
                .unwrap();
            after = page.last().map(|l| l.salesforce_id.clone());
            let full = page.len() == 500;
            links.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(links.len(), rows.len(), "every {sobject} linked once");
        let distinct: std::collections::HashSet<&str> =
            links.iter().map(|l| l.hubspot_id.as_str()).collect();
        assert_eq!(distinct.len(), links.len(), "one {object} record per link");
        assert_eq!(
            hubspot_total(w, object).await,
            rows.len() as u64,
            "no {object} record twice"
        );
    }
}

/// Accounts and contacts need nothing of each other: their Salesforce passes run side by
/// side. A failure in one (a contacts' batch before it writes, or any batch between its
/// writes and its commit) while the other writes loses nothing and duplicates nothing after
/// the restart, and a further cycle writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_accounts_and_contacts_are_written_side_by_side_loses_and_duplicates_nothing()
{
    // 60 accounts (one batch of 100) beside 200 contacts (two), no look-back: the
    // contacts' second batch fails before it writes; or the second batch applied (an
    // account's or a contacts' batch) crashes before its commit.
    for before_apply in [true, false] {
        let w = world_empty_portal(600).await;
        let mut cfg = w.config("");
        cfg.sync.lookback_secs = 0;
        cfg.sync.batch_size = 100;
        let mut e = w.engine(&cfg, "first").await;
        owners_in_hubspot(&w, &e).await;
        if before_apply {
            e.fault_point().arm_before_apply_of(
                ObjectPair::ContactContact,
                Direction::SalesforceToHubSpot,
                1,
            );
        } else {
            e.fault_point().arm_after_apply(1);
        }
        crash_at_the_fault_point(&mut e).await;
        let deals = hubspot_total(&w, "deals").await;
        assert_eq!(deals, 0, "the crash came before the opportunities");
        let e2 = restart_and_settle(&w, &cfg, e).await;
        assert_every_record_linked_once(&w, &e2).await;
    }
}

/// A HubSpot page's deals are written to Salesforce in batches. A crash while one batch
/// of a page has written nothing and the one before it was written and committed loses
/// nothing and duplicates nothing (no look-back to re-read the window): after the restart
/// every deal has one opportunity and one link, and a further cycle writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_among_a_hubspot_pages_batches_loses_and_duplicates_nothing() {
    const N: usize = 600;
    let w = world_empty_portal(0).await;
    let mut cfg = w.config("");
    cfg.sync.lookback_secs = 0;
    let mut e = w.engine(&cfg, "first").await;
    owners_in_hubspot(&w, &e).await;
    e.run_cycle().await.unwrap();
    create_hubspot_deals(&w.hs, &e, "side", N).await;
    // Three pages of 200, two batches of 100 each: the fault fires in the second page,
    // before its second batch writes.
    e.fault_point().arm_before_apply_of(
        ObjectPair::OpportunityDeal,
        Direction::HubSpotToSalesforce,
        3,
    );
    crash_at_the_fault_point(&mut e).await;
    let opportunities = async || {
        w.sf.query_page::<dealbridge::crm::salesforce::types::SObject>(
            "SELECT COUNT() FROM Opportunity WHERE Name LIKE 'side %'",
            QueryScope::Live,
        )
        .await
        .unwrap()
        .total_size as usize
    };
    let written = opportunities().await;
    assert!(
        written > 0 && written < N,
        "the crash came among the deals: {written} of {N} written"
    );
    let e2 = restart_and_settle(&w, &cfg, e).await;
    assert_eq!(
        opportunities().await,
        N,
        "every deal became one opportunity"
    );
    assert_eq!(hubspot_total(&w, "deals").await, N as u64, "no deal twice");
    let links = e2
        .store()
        .links(&tenant(), ObjectPair::OpportunityDeal, None, 1000)
        .await
        .unwrap();
    assert_eq!(links.len(), N, "every deal linked once");
    let distinct: std::collections::HashSet<&str> =
        links.iter().map(|l| l.hubspot_id.as_str()).collect();
    assert_eq!(distinct.len(), N, "one deal per link");
}

/// The batches of one Salesforce page are written side by side. A batch that fails before
/// it writes, while others of its page were written and committed, must keep the page's
/// checkpoint where it was: with no look-back to re-read the window, the restart still
/// writes every opportunity, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_beside_committed_ones_keeps_its_pages_checkpoint() {
    let w = world_empty_portal(600).await;
    let mut cfg = w.config("");
    cfg.sync.lookback_secs = 0;
    let mut e = w.engine(&cfg, "first").await;
    owners_in_hubspot(&w, &e).await;
    // The opportunities' page holds six batches, written two at a time: the third fails
    // before it writes, beside the second.
    e.fault_point().arm_before_apply_of(
        ObjectPair::OpportunityDeal,
        Direction::SalesforceToHubSpot,
        2,
    );
    crash_at_the_fault_point(&mut e).await;
    let written = hubspot_total(&w, "deals").await;
    assert!(
        written > 0 && written < 600,
        "the failure came among the opportunities: {written} of 600 written"
    );
    let e2 = restart_and_settle(&w, &cfg, e).await;
    assert_eq!(
        hubspot_total(&w, "deals").await,
        600,
        "every opportunity once"
    );
    let links = e2
        .store()
        .links(&tenant(), ObjectPair::OpportunityDeal, None, 1000)
        .await
        .unwrap();
    assert_eq!(links.len(), 600, "every opportunity linked once");
}

/// A backfill's last HubSpot read-back (the deals', with nothing else running) reads two id
/// ranges side by side, cut among the ids its Salesforce pass wrote. Deals HubSpot held
/// before the backfill (ids below the cut) become opportunities, the deals the backfill
/// wrote settle as echoes, nothing is written twice, and the next cycle writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_in_two_id_ranges_syncs_every_deal_once() {
    let w = world_empty_portal(600).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "first").await;
    owners_in_hubspot(&w, &e).await;
    create_hubspot_deals(&w.hs, &e, "side", 100).await;
    let r = e.run_cycle().await.unwrap();
    assert_no_failures(&r.failures);
    let side =
        w.sf.query_page::<dealbridge::crm::salesforce::types::SObject>(
            "SELECT COUNT() FROM Opportunity WHERE Name LIKE 'side %'",
            QueryScope::Live,
        )
        .await
        .unwrap()
        .total_size;
    assert_eq!(side, 100, "every deal HubSpot held became one opportunity");
    assert_eq!(hubspot_total(&w, "deals").await, 700, "no deal twice");
    let links = e
        .store()
        .links(&tenant(), ObjectPair::OpportunityDeal, None, 1000)
        .await
        .unwrap();
    assert_eq!(links.len(), 700, "every deal linked once");
    let distinct: std::collections::HashSet<&str> =
        links.iter().map(|l| l.hubspot_id.as_str()).collect();
    assert_eq!(distinct.len(), 700, "one deal per link");
    let again = e.run_cycle().await.unwrap();
    assert_writes_nothing(&again.counters);
}
