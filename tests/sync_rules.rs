//! End-to-end tests of the sync behaviour of SYNC-SPEC.md against the in-process emulators
//! over real HTTPS: each sync rule in both directions (blanks and clears included), two-way
//! by the source systems' modification times, owners by email (and the missing-owner error),
//! multi-currency pass-through, one pipeline per record type with its stage table (and the
//! unmapped-stage error), asymmetric deletes, and deals leaving the synced pipelines.
//!
//! Every test seeds a small org, drives the engine one cycle at a time and reads the results
//! back from both CRMs through their APIs (and from the store where the spec names a link
//! state or a visible sync error).

use std::collections::HashMap;

use dealbridge::crm::hubspot::types::{Filter, FilterGroup, Operator, SearchRequest};
use dealbridge::crm::hubspot::{HsObject, Properties};
use dealbridge::crm::salesforce::{Fields, QueryScope, SObject};
use dealbridge::store::{ErrorCategory, Link, LinkState, ObjectPair, Page, Side, TenantId};
use dealbridge::sync::values::parse_time_ms;
use dealbridge::sync::{CycleReport, Engine};
use dealbridge_e2e::{World, world};
use serde_json::{Value, json};

const DEAL_PROPS: &[&str] = &[
    "dealname",
    "amount",
    "description",
    "dealstage",
    "pipeline",
    "hubspot_owner_id",
    "deal_currency_code",
    "closedate",
    "hs_lastmodifieddate",
    "dealbridge_sf_id",
];
const OPP_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "Amount",
    "Description",
    "StageName",
    "RecordTypeId",
    "OwnerId",
    "LastModifiedDate",
    "dealbridge_id__c",
];

fn tenant() -> TenantId {
    TenantId::new("demo").unwrap()
}

async fn cycle(e: &mut Engine) -> CycleReport {
    e.run_cycle().await.expect("the cycle runs")
}

fn fields(pairs: &[(&str, Value)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates an opportunity (Name, an open stage, a close date and an owner who is also a
/// HubSpot owner, plus `extra`). Without an owner Salesforce would make the integration user
/// the owner, who has no HubSpot owner (a missing-owner error).
async fn new_opp(w: &World, name: &str, extra: &[(&str, Value)]) -> String {
    let ada = w.sf_users().await["ada.lovelace@example.com"].clone();
    let mut f = fields(&[
        ("Name", json!(name)),
        ("StageName", json!("Prospecting")),
        ("CloseDate", json!("2026-09-30")),
        ("OwnerId", json!(ada)),
    ]);
    for (k, v) in extra {
        f.insert(k.to_string(), v.clone());
    }
    w.sf.create("Opportunity", &f)
        .await
        .expect("opportunity created")
}

async fn opp(w: &World, id: &str) -> SObject {
    w.sf.get("Opportunity", id, Some(OPP_FIELDS))
        .await
        .expect("opportunity readable")
}

async fn set_opp(w: &World, id: &str, pairs: &[(&str, Value)]) {
    w.sf.update("Opportunity", id, &fields(pairs))
        .await
        .expect("opportunity updated");
}

async fn deal(w: &World, id: &str) -> HsObject {
    w.hs.get("deals", id, DEAL_PROPS, &[])
        .await
        .expect("deal readable")
}

async fn set_deal(w: &World, id: &str, pairs: &[(&str, &str)]) {
    w.hs.update("deals", id, &props(pairs))
        .await
        .expect("deal updated");
}

/// The live deals whose cross-reference is `sf_id`.
async fn deals_for(w: &World, sf_id: &str) -> Vec<HsObject> {
    w.hs.search(
        "deals",
        &SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new("dealbridge_sf_id", Operator::Eq, sf_id)],
            }],
            properties: DEAL_PROPS.iter().map(|s| s.to_string()).collect(),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("deal search")
    .results
}

/// The one live deal synced from `sf_id`.
async fn deal_for(w: &World, sf_id: &str) -> HsObject {
    let found = deals_for(w, sf_id).await;
    assert_eq!(found.len(), 1, "exactly one deal for opportunity {sf_id}");
    found.into_iter().next().unwrap()
}

async fn link(e: &Engine, sf_id: &str) -> Link {
    let links = e
        .store()
        .links_by_salesforce_ids(&tenant(), ObjectPair::OpportunityDeal, &[sf_id.into()])
        .await
        .unwrap();
    assert_eq!(links.len(), 1, "one link for {sf_id}: {links:?}");
    links.into_iter().next().unwrap()
}

/// A HubSpot property as text, `""` when blank.
fn hp<'a>(o: &'a HsObject, name: &str) -> &'a str {
    o.prop(name).unwrap_or("")
}

/// A Salesforce field as text (numbers in their JSON form), `""` when null.
fn sfv(o: &SObject, name: &str) -> String {
    match o.fields.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// A Salesforce number field as its decimal text without trailing zeros (`3000.0` → `3000`).
fn money(o: &SObject, name: &str) -> String {
    let t = sfv(o, name);
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

/// Opportunity record type ids by name.
async fn record_types(w: &World) -> HashMap<String, String> {
    w.sf.record_types("Opportunity")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.id))
        .collect()
}

/// Deal pipelines by label: (id, stage id by stage label).
async fn pipelines(w: &World) -> HashMap<String, (String, HashMap<String, String>)> {
    w.hs.list_pipelines("deals")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| !p.archived)
        .map(|p| {
            let stages = p.stages.into_iter().map(|s| (s.label, s.id)).collect();
            (p.label, (p.id, stages))
        })
        .collect()
}

/// Rewrites the Salesforce org through the emulator's snapshot export/import (metadata such
/// as record types and users is read-only through the REST API).
async fn edit_salesforce_org(w: &World, edit: impl FnOnce(&mut Value)) {
    let base = &w.emu.salesforce_urls.http;
    let c = reqwest::Client::new();
    let mut snap: Value = c
        .get(format!("{base}/__emulator/snapshot"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap()
        .json()
        .await
        .unwrap();
    edit(&mut snap);
    c.put(format!("{base}/__emulator/snapshot"))
        .json(&snap)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("snapshot import");
}

fn records<'a>(snap: &'a mut Value, object: &str) -> &'a mut Vec<Value> {
    snap["objects"][object]["records"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("the snapshot has {object} records"))
}

// ----- the sync rules -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_salesforce_unless_blank_salesforce_wins_blank_takes_hubspot_and_clears_propagate() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Prefer A", &[("Description", json!("from Salesforce"))]).await;
    let b = new_opp(&w, "Prefer B", &[]).await;
    cycle(&mut e).await;
    let (da, db) = (deal_for(&w, &a).await, deal_for(&w, &b).await);
    assert_eq!(hp(&da, "description"), "from Salesforce");
    assert_eq!(hp(&db, "description"), "");

    // A HubSpot edit of a non-blank Salesforce value is written back; a blank Salesforce
    // field takes the HubSpot value.
    set_deal(&w, &da.id, &[("description", "edited in HubSpot")]).await;
    set_deal(&w, &db.id, &[("description", "from HubSpot")]).await;
    cycle(&mut e).await;
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "from Salesforce");
    assert_eq!(
        hp(&deal(&w, &da.id).await, "description"),
        "from Salesforce"
    );
    assert_eq!(sfv(&opp(&w, &b).await, "Description"), "from HubSpot");
    assert_eq!(hp(&deal(&w, &db.id).await, "description"), "from HubSpot");

    // Clearing Salesforce clears HubSpot; once Salesforce has a value, HubSpot no longer
    // writes it (its edits and its clears are written back).
    set_opp(&w, &a, &[("Description", Value::Null)]).await;
    set_deal(&w, &db.id, &[("description", "")]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &da.id).await, "description"), "");
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "");
    assert_eq!(hp(&deal(&w, &db.id).await, "description"), "from HubSpot");
    assert_eq!(sfv(&opp(&w, &b).await, "Description"), "from HubSpot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_salesforce_hubspot_never_writes_to_salesforce() {
    let w = world(0).await;
    let cfg = w.config_with_rules(r#"Description = "always-salesforce""#, "");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Always A", &[("Description", json!("from Salesforce"))]).await;
    let b = new_opp(&w, "Always B", &[]).await;
    cycle(&mut e).await;
    let (da, db) = (deal_for(&w, &a).await, deal_for(&w, &b).await);
    assert_eq!(hp(&da, "description"), "from Salesforce");

    set_deal(&w, &da.id, &[("description", "edited in HubSpot")]).await;
    set_deal(&w, &db.id, &[("description", "from HubSpot")]).await;
    cycle(&mut e).await;
    // Salesforce's value overwrites HubSpot's edit; a blank Salesforce field stays blank.
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "from Salesforce");
    assert_eq!(
        hp(&deal(&w, &da.id).await, "description"),
        "from Salesforce"
    );
    assert_eq!(sfv(&opp(&w, &b).await, "Description"), "");
    assert_eq!(hp(&deal(&w, &db.id).await, "description"), "from HubSpot");

    // A Salesforce clear still clears HubSpot.
    set_opp(&w, &a, &[("Description", Value::Null)]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &da.id).await, "description"), "");
    assert_eq!(sfv(&opp(&w, &b).await, "Description"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_changes_and_clears_propagate_both_ways() {
    let w = world(0).await;
    let cfg = w.config_with_rules(r#"Description = "two-way""#, "");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Two-way A", &[("Description", json!("v1"))]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "description"), "v1");

    set_deal(&w, &d.id, &[("description", "v2 from HubSpot")]).await;
    cycle(&mut e).await;
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "v2 from HubSpot");

    set_deal(&w, &d.id, &[("description", "")]).await;
    cycle(&mut e).await;
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "");
    assert_eq!(hp(&deal(&w, &d.id).await, "description"), "");

    set_opp(&w, &a, &[("Description", json!("v3 from Salesforce"))]).await;
    cycle(&mut e).await;
    assert_eq!(
        hp(&deal(&w, &d.id).await, "description"),
        "v3 from Salesforce"
    );

    set_opp(&w, &a, &[("Description", Value::Null)]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "description"), "");
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_the_newer_side_wins_by_the_source_modification_times() {
    let w = world(0).await;
    let cfg = w.config_with_rules(r#"Amount = "two-way""#, "");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Conflict A", &[("Amount", json!(1000))]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "amount"), "1000");

    // Salesforce first, HubSpot later: HubSpot is newer by its own clock although the
    // engine reads (and plans) the Salesforce change first.
    set_opp(&w, &a, &[("Amount", json!(2000))]).await;
    set_deal(&w, &d.id, &[("amount", "3000")]).await;
    let sf_t = parse_time_ms(&sfv(&opp(&w, &a).await, "LastModifiedDate")).unwrap();
    let hs_t = deal(&w, &d.id).await.last_modified_ms().unwrap();
    assert!(
        hs_t > sf_t,
        "precondition: HubSpot ({hs_t}) is newer than Salesforce ({sf_t})"
    );
    cycle(&mut e).await;
    assert_eq!(money(&opp(&w, &a).await, "Amount"), "3000");
    assert_eq!(hp(&deal(&w, &d.id).await, "amount"), "3000");

    // HubSpot first, Salesforce in a later second (Salesforce stamps whole seconds): the
    // Salesforce value is newer and wins, although HubSpot's change is read after it.
    set_deal(&w, &d.id, &[("amount", "4000")]).await;
    let hs_t = deal(&w, &d.id).await.last_modified_ms().unwrap();
    // Clock resolution, not a race: Salesforce's next whole second after HubSpot's edit.
    let wait = (hs_t / 1000 + 1) * 1000 - wall_clock_ms();
    if wait > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64 + 20)).await;
    }
    set_opp(&w, &a, &[("Amount", json!(5000))]).await;
    let sf_t = parse_time_ms(&sfv(&opp(&w, &a).await, "LastModifiedDate")).unwrap();
    assert!(
        sf_t > hs_t,
        "precondition: Salesforce ({sf_t}) is newer than HubSpot ({hs_t})"
    );
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "amount"), "5000");
    assert_eq!(money(&opp(&w, &a).await, "Amount"), "5000");
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dont_sync_moves_nothing_either_way_clears_included() {
    let w = world(0).await;
    let cfg = w.config_with_rules(r#"Description = "dont-sync""#, "");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Quiet 1", &[("Description", json!("Salesforce only"))]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "dealname"), "Quiet 1", "the other fields sync");
    assert_eq!(hp(&d, "description"), "");

    set_deal(&w, &d.id, &[("description", "HubSpot only")]).await;
    set_opp(&w, &a, &[("Name", json!("Quiet 2"))]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "dealname"), "Quiet 2");
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "Salesforce only");
    assert_eq!(hp(&deal(&w, &d.id).await, "description"), "HubSpot only");

    set_opp(
        &w,
        &a,
        &[("Description", Value::Null), ("Name", json!("Quiet 3"))],
    )
    .await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "dealname"), "Quiet 3");
    assert_eq!(hp(&deal(&w, &d.id).await, "description"), "HubSpot only");

    set_deal(&w, &d.id, &[("description", "")]).await;
    set_opp(&w, &a, &[("Description", json!("Salesforce again"))]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "description"), "");
    assert_eq!(sfv(&opp(&w, &a).await, "Description"), "Salesforce again");
}

// ----- owners -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_map_both_ways_by_email() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let (users, owners) = (w.sf_users().await, w.hs_owners().await);
    let (ada, grace, kath) = (
        "ada.lovelace@example.com",
        "grace.hopper@example.com",
        "katherine.johnson@example.com",
    );
    // Owner ids differ between the CRMs: only the email links them.
    assert_ne!(users[ada], owners[ada]);
    let a = new_opp(&w, "Owned", &[("OwnerId", json!(users[ada]))]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "hubspot_owner_id"), owners[ada]);

    // Owner is two-way whatever the rule: a HubSpot change reaches Salesforce.
    set_deal(&w, &d.id, &[("hubspot_owner_id", &owners[grace])]).await;
    cycle(&mut e).await;
    assert_eq!(sfv(&opp(&w, &a).await, "OwnerId"), users[grace]);
    assert_eq!(
        hp(&deal(&w, &d.id).await, "hubspot_owner_id"),
        owners[grace]
    );

    set_opp(&w, &a, &[("OwnerId", json!(users[kath]))]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "hubspot_owner_id"), owners[kath]);

    // Salesforce requires an owner: a cleared HubSpot owner is restored from Salesforce.
    set_deal(&w, &d.id, &[("hubspot_owner_id", "")]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "hubspot_owner_id"), owners[kath]);
    assert_eq!(sfv(&opp(&w, &a).await, "OwnerId"), users[kath]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_owner_without_a_hubspot_owner_is_a_visible_sync_error() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let users = w.sf_users().await;
    let frances = "frances.allen@example.com"; // a Salesforce user with no HubSpot owner
    assert!(!w.hs_owners().await.contains_key(frances));
    let a = new_opp(&w, "Orphan", &[("OwnerId", json!(users[frances]))]).await;
    let report = cycle(&mut e).await;
    let line = report
        .failures
        .iter()
        .find(|f| f.record == format!("salesforce:{a}"))
        .unwrap_or_else(|| panic!("a failure for {a}: {:?}", report.failures));
    assert!(line.message.contains("missing-owner"), "{}", line.message);
    assert!(
        deals_for(&w, &a).await.is_empty(),
        "no deal without an owner"
    );
    // Shown on the health view.
    let errors = e
        .store()
        .open_errors(
            &tenant(),
            Some(ErrorCategory::Validation),
            Page::first(1000),
        )
        .await
        .unwrap();
    let err = errors
        .iter()
        .find(|x| x.record.side == Side::Salesforce && x.record.id == a)
        .unwrap_or_else(|| panic!("an open error for {a}: {errors:?}"));
    assert!(err.message.contains(frances), "{}", err.message);
    assert_eq!(err.object_pair, ObjectPair::OpportunityDeal);
    let health = e.store().health_summary(&tenant()).await.unwrap();
    let v = health
        .iter()
        .find(|h| h.category == ErrorCategory::Validation)
        .expect("a validation group");
    assert!(v.open_errors >= 1 && v.affected_records >= 1, "{health:?}");

    // Fixing the owner syncs the record and resolves its error.
    set_opp(
        &w,
        &a,
        &[("OwnerId", json!(users["ada.lovelace@example.com"]))],
    )
    .await;
    cycle(&mut e).await;
    assert_eq!(deal_for(&w, &a).await.prop("dealname"), Some("Orphan"));
    let errors = e
        .store()
        .open_errors(&tenant(), None, Page::first(1000))
        .await
        .unwrap();
    assert!(
        !errors.iter().any(|x| x.record.id == a),
        "the error is resolved: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_owner_without_a_salesforce_user_is_a_visible_sync_error() {
    let w = world(0).await;
    let ada = "ada.lovelace@example.com";
    // Ada leaves Salesforce (inactive user) but stays a HubSpot owner.
    edit_salesforce_org(&w, |snap| {
        for u in records(snap, "User") {
            if u["Email"] == ada {
                u["IsActive"] = json!(false);
            }
        }
    })
    .await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let owners = w.hs_owners().await;
    let pipes = pipelines(&w).await;
    let (pipe, stages) = &pipes["Salesforce - New Business"];
    let d =
        w.hs.create(
            "deals",
            &props(&[
                ("dealname", "Owned by a leaver"),
                ("pipeline", pipe),
                ("dealstage", &stages["Prospecting"]),
                ("closedate", "2026-09-30"),
                ("hubspot_owner_id", &owners[ada]),
            ]),
            &[],
        )
        .await
        .unwrap();
    let report = cycle(&mut e).await;
    let line = report
        .failures
        .iter()
        .find(|f| f.record == format!("hubspot:{}", d.id))
        .unwrap_or_else(|| panic!("a failure for deal {}: {:?}", d.id, report.failures));
    assert!(line.message.contains("missing-owner"), "{}", line.message);
    let errors = e
        .store()
        .open_errors(
            &tenant(),
            Some(ErrorCategory::Validation),
            Page::first(1000),
        )
        .await
        .unwrap();
    let err = errors
        .iter()
        .find(|x| x.record.side == Side::HubSpot && x.record.id == d.id)
        .unwrap_or_else(|| panic!("an open error for deal {}: {errors:?}", d.id));
    assert!(err.message.contains(ada), "{}", err.message);
    let created =
        w.sf.query(
            &format!(
                "SELECT Id FROM Opportunity WHERE dealbridge_id__c = '{}'",
                d.id
            ),
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert!(created.is_empty(), "no opportunity without an owner");
}

// ----- currency -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_currency_amount_and_currency_code_pass_through_unconverted() {
    let w = world(0).await;
    reqwest::Client::new()
        .put(format!(
            "{}/__emulator/settings",
            w.emu.salesforce_urls.http
        ))
        .json(&json!({"multi_currency": true}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap();
    let cfg = w.config_with_rules("", "[plugin.config]\nmulti_currency = true\n");
    let mut e = w.engine(&cfg, "a").await;
    assert!(e.setup().multi_currency);
    cycle(&mut e).await;
    // Salesforce → HubSpot.
    let a = new_opp(
        &w,
        "Euro deal",
        &[
            ("Amount", json!(1234.56)),
            ("CurrencyIsoCode", json!("EUR")),
        ],
    )
    .await;
    // HubSpot → Salesforce.
    let pipes = pipelines(&w).await;
    let (pipe, stages) = &pipes["Salesforce - Renewal"];
    let hd =
        w.hs.create(
            "deals",
            &props(&[
                ("dealname", "Yen deal"),
                ("pipeline", pipe),
                ("dealstage", &stages["Qualification"]),
                ("closedate", "2026-10-31"),
                ("amount", "98765.43"),
                ("deal_currency_code", "JPY"),
            ]),
            &[],
        )
        .await
        .unwrap();
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "amount"), "1234.56");
    assert_eq!(hp(&d, "deal_currency_code"), "EUR");
    let rows =
        w.sf.query(
            &format!(
                "SELECT Id, Amount, CurrencyIsoCode FROM Opportunity WHERE dealbridge_id__c = '{}'",
                hd.id
            ),
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the HubSpot deal became one opportunity");
    assert_eq!(money(&rows[0], "Amount"), "98765.43");
    assert_eq!(sfv(&rows[0], "CurrencyIsoCode"), "JPY");

    // A Salesforce change of both travels as it is.
    set_opp(
        &w,
        &a,
        &[("Amount", json!(777.25)), ("CurrencyIsoCode", json!("GBP"))],
    )
    .await;
    cycle(&mut e).await;
    let d = deal(&w, &d.id).await;
    assert_eq!(hp(&d, "amount"), "777.25");
    assert_eq!(hp(&d, "deal_currency_code"), "GBP");
}

// ----- pipelines and stages -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pipeline_per_record_type_and_stages_map_both_ways() {
    let w = world(0).await;
    let cfg = w.config_with_rules(r#"StageName = "two-way""#, "");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let rts = record_types(&w).await;
    assert_eq!(rts.len(), 2, "{rts:?}");
    let pipes = pipelines(&w).await;
    let synced: Vec<&String> = pipes
        .keys()
        .filter(|l| l.starts_with("Salesforce - "))
        .collect();
    assert_eq!(synced.len(), 2, "{synced:?}");
    let (nb, nb_stages) = &pipes["Salesforce - New Business"];
    let (rn, rn_stages) = &pipes["Salesforce - Renewal"];
    assert!(!pipes.contains_key("Salesforce - Default pipeline"));
    assert!(nb_stages.contains_key("Closed Won") && rn_stages.contains_key("Needs Analysis"));

    let a = new_opp(
        &w,
        "Renewal deal",
        &[
            ("RecordTypeId", json!(rts["Renewal"])),
            ("StageName", json!("Qualification")),
        ],
    )
    .await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "pipeline"), rn);
    assert_eq!(hp(&d, "dealstage"), rn_stages["Qualification"]);

    // Salesforce stage change → the stage id of the same pipeline.
    set_opp(&w, &a, &[("StageName", json!("Value Proposition"))]).await;
    cycle(&mut e).await;
    let d = deal(&w, &d.id).await;
    assert_eq!(hp(&d, "pipeline"), rn);
    assert_eq!(hp(&d, "dealstage"), rn_stages["Value Proposition"]);

    // HubSpot moves the deal to the other synced pipeline: stage and record type follow.
    set_deal(
        &w,
        &d.id,
        &[
            ("pipeline", nb),
            ("dealstage", &nb_stages["Negotiation/Review"]),
        ],
    )
    .await;
    cycle(&mut e).await;
    let o = opp(&w, &a).await;
    assert_eq!(sfv(&o, "StageName"), "Negotiation/Review");
    assert_eq!(sfv(&o, "RecordTypeId"), rts["New Business"]);
    let d = deal(&w, &d.id).await;
    assert_eq!(hp(&d, "pipeline"), nb);
    assert_eq!(hp(&d, "dealstage"), nb_stages["Negotiation/Review"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_record_type_syncs_to_the_default_pipeline() {
    let w = world(0).await;
    edit_salesforce_org(&w, |snap| {
        records(snap, "RecordType").retain(|r| r["Name"] != "Renewal");
    })
    .await;
    let rts = record_types(&w).await;
    assert_eq!(rts.len(), 1, "{rts:?}");
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let pipes = pipelines(&w).await;
    let synced: Vec<&String> = pipes
        .keys()
        .filter(|l| l.starts_with("Salesforce - "))
        .collect();
    assert_eq!(synced, vec!["Salesforce - Default pipeline"]);
    let (pipe, stages) = &pipes["Salesforce - Default pipeline"];
    let a = new_opp(&w, "Only type", &[("StageName", json!("Needs Analysis"))]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    assert_eq!(hp(&d, "pipeline"), pipe);
    assert_eq!(hp(&d, "dealstage"), stages["Needs Analysis"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_stage_is_a_visible_sync_error_both_ways() {
    let w = world(0).await;
    // The Renewal pipeline's table maps only Prospecting (the other pipeline gets the
    // identity table).
    let cfg = w.config_with_rules(
        "",
        "[plugin.config.stage_map.Renewal]\nProspecting = \"Prospecting\"\n",
    );
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let rts = record_types(&w).await;
    let a = new_opp(
        &w,
        "Unmapped",
        &[
            ("RecordTypeId", json!(rts["Renewal"])),
            ("StageName", json!("Qualification")),
        ],
    )
    .await;
    let mapped = new_opp(
        &w,
        "Mapped",
        &[
            ("RecordTypeId", json!(rts["Renewal"])),
            ("StageName", json!("Prospecting")),
        ],
    )
    .await;
    let pipes = pipelines(&w).await;
    let (rn, rn_stages) = &pipes["Salesforce - Renewal"];
    let hd =
        w.hs.create(
            "deals",
            &props(&[
                ("dealname", "Unmapped in HubSpot"),
                ("pipeline", rn),
                ("dealstage", &rn_stages["Needs Analysis"]),
                ("closedate", "2026-09-30"),
            ]),
            &[],
        )
        .await
        .unwrap();
    let report = cycle(&mut e).await;
    let errors = e
        .store()
        .open_errors(
            &tenant(),
            Some(ErrorCategory::PicklistMismatch),
            Page::first(1000),
        )
        .await
        .unwrap();
    let sf_err = errors
        .iter()
        .find(|x| x.record.side == Side::Salesforce && x.record.id == a)
        .unwrap_or_else(|| panic!("an open error for {a}: {:?}", report.failures));
    assert!(
        sf_err.message.contains("unmapped-stage") && sf_err.message.contains("Qualification"),
        "{}",
        sf_err.message
    );
    assert_eq!(sf_err.payload["field"], "StageName");
    let hs_err = errors
        .iter()
        .find(|x| x.record.side == Side::HubSpot && x.record.id == hd.id)
        .unwrap_or_else(|| panic!("an open error for deal {}: {:?}", hd.id, report.failures));
    assert!(
        hs_err.message.contains("unmapped-stage") && hs_err.message.contains("Needs Analysis"),
        "{}",
        hs_err.message
    );
    assert_eq!(hs_err.payload["field"], "dealstage");
    let health = e.store().health_summary(&tenant()).await.unwrap();
    assert!(
        health
            .iter()
            .any(|h| h.category == ErrorCategory::PicklistMismatch && h.affected_records >= 2),
        "{health:?}"
    );
    // Nothing half-synced: no deal for the unmapped opportunity, no opportunity for the
    // unmapped deal; the mapped one synced.
    assert!(deals_for(&w, &a).await.is_empty());
    let rows =
        w.sf.query(
            &format!(
                "SELECT Id FROM Opportunity WHERE dealbridge_id__c = '{}'",
                hd.id
            ),
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
    let d = deal_for(&w, &mapped).await;
    assert_eq!(hp(&d, "dealstage"), rn_stages["Prospecting"]);
}

// ----- deletes -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_synced_opportunity_archives_its_deal() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Doomed", &[]).await;
    let keep = new_opp(&w, "Kept", &[]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    let kept = deal_for(&w, &keep).await;
    w.sf.delete("Opportunity", &a).await.unwrap();
    let report = cycle(&mut e).await;
    assert_eq!(report.counters.archived_hubspot, 1, "{:?}", report.counters);
    assert!(
        w.hs.get("deals", &d.id, &[], &[]).await.is_err(),
        "archived"
    );
    assert!(deals_for(&w, &a).await.is_empty());
    assert_eq!(deal(&w, &kept.id).await.prop("dealname"), Some("Kept"));
    assert_eq!(link(&e, &a).await.state, LinkState::SalesforceDeleted);
    assert_eq!(link(&e, &keep).await.state, LinkState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_a_deal_never_deletes_the_opportunity_and_marks_the_link() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Survivor", &[]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    w.hs.archive("deals", &d.id).await.unwrap();
    cycle(&mut e).await;
    assert_eq!(sfv(&opp(&w, &a).await, "Name"), "Survivor");

    // The opportunity changes: the link is marked, and no deal is re-created.
    set_opp(&w, &a, &[("Name", json!("Survivor 2"))]).await;
    let report = cycle(&mut e).await;
    assert_eq!(report.counters.created_hubspot, 0, "{:?}", report.counters);
    assert!(deals_for(&w, &a).await.is_empty(), "no new deal");
    assert_eq!(link(&e, &a).await.state, LinkState::HubSpotArchived);
    let o = opp(&w, &a).await;
    assert_eq!(sfv(&o, "Name"), "Survivor 2");
    let n =
        w.sf.query(
            &format!("SELECT Id FROM Opportunity WHERE Id = '{a}'"),
            QueryScope::Live,
        )
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1, "the opportunity is still there");
}

// ----- pipelines that are not synced -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_deal_to_an_unsynced_pipeline_stops_it_syncing_both_ways() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    let a = new_opp(&w, "Mover", &[("Description", json!("before"))]).await;
    let control = new_opp(&w, "Stayer", &[]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    let c = deal_for(&w, &control).await;
    let pipes = pipelines(&w).await;
    let (default_pipe, default_stages) = pipes
        .values()
        .find(|(id, _)| id == "default")
        .expect("HubSpot's own default pipeline");
    let first_default_stage = default_stages.values().next().unwrap().clone();
    set_deal(
        &w,
        &d.id,
        &[
            ("pipeline", default_pipe),
            ("dealstage", &first_default_stage),
            ("dealname", "Renamed in HubSpot"),
        ],
    )
    .await;
    cycle(&mut e).await;
    // HubSpot → Salesforce: the deal's changes do not arrive.
    let o = opp(&w, &a).await;
    assert_eq!(sfv(&o, "Name"), "Mover");
    assert_eq!(sfv(&o, "StageName"), "Prospecting");

    // Salesforce → HubSpot: the opportunity's changes do not reach the deal.
    set_opp(
        &w,
        &a,
        &[("Name", json!("Mover 2")), ("Description", json!("after"))],
    )
    .await;
    set_opp(&w, &control, &[("Name", json!("Stayer 2"))]).await;
    cycle(&mut e).await;
    let d = deal(&w, &d.id).await;
    assert_eq!(hp(&d, "dealname"), "Renamed in HubSpot");
    assert_eq!(hp(&d, "description"), "before");
    assert_eq!(hp(&d, "pipeline"), default_pipe);
    assert_eq!(link(&e, &a).await.state, LinkState::Unsynced);
    assert_eq!(deal(&w, &c.id).await.prop("dealname"), Some("Stayer 2"));

    // And it stays so: more HubSpot edits do not reach Salesforce either.
    set_deal(&w, &d.id, &[("description", "edited while unsynced")]).await;
    cycle(&mut e).await;
    let o = opp(&w, &a).await;
    assert_eq!(sfv(&o, "Name"), "Mover 2");
    assert_eq!(sfv(&o, "Description"), "after");
    assert_eq!(deals_for(&w, &a).await.len(), 1, "no second deal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_deal_back_to_a_synced_pipeline_resumes_syncing() {
    let w = world(0).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    cycle(&mut e).await;
    // No record type given: the org's default one (New Business).
    let a = new_opp(&w, "Boomerang", &[]).await;
    cycle(&mut e).await;
    let d = deal_for(&w, &a).await;
    let pipes = pipelines(&w).await;
    let (nb, nb_stages) = &pipes["Salesforce - New Business"];
    assert_eq!(hp(&d, "pipeline"), nb);
    let (_, default_stages) = pipes
        .values()
        .find(|(id, _)| id == "default")
        .expect("HubSpot's own default pipeline");
    let some_default_stage = default_stages.values().next().unwrap().clone();
    set_deal(
        &w,
        &d.id,
        &[("pipeline", "default"), ("dealstage", &some_default_stage)],
    )
    .await;
    set_opp(&w, &a, &[("Name", json!("Boomerang 2"))]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "dealname"), "Boomerang");
    assert_eq!(link(&e, &a).await.state, LinkState::Unsynced);

    // Back into a synced pipeline (another stage): the pair syncs again by its rules
    // (Salesforce's non-blank name and stage win under the default rule).
    set_deal(
        &w,
        &d.id,
        &[
            ("pipeline", nb),
            ("dealstage", &nb_stages["Needs Analysis"]),
        ],
    )
    .await;
    cycle(&mut e).await;
    let d = deal(&w, &d.id).await;
    assert_eq!(hp(&d, "dealname"), "Boomerang 2");
    assert_eq!(hp(&d, "pipeline"), nb);
    assert_eq!(hp(&d, "dealstage"), nb_stages["Prospecting"]);
    assert_eq!(link(&e, &a).await.state, LinkState::Active);
    set_opp(&w, &a, &[("Name", json!("Boomerang 3"))]).await;
    cycle(&mut e).await;
    assert_eq!(hp(&deal(&w, &d.id).await, "dealname"), "Boomerang 3");
}
