//! End-to-end tests of the sync engine against the emulators over real HTTP(S).

use dealbridge::crm::hubspot::types::{Filter, FilterGroup, Operator, SearchRequest, UpdateInput};
use dealbridge::crm::salesforce::{Fields, QueryScope};
use dealbridge::store::{ObjectPair, TenantId};
use dealbridge::sync::SyncError;
use dealbridge_e2e::{world, world_empty_portal};

async fn with_xref(w: &dealbridge_e2e::World, object: &str, sf_id: &str) -> u64 {
    w.hs.search(
        object,
        &SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new("dealbridge_sf_id", Operator::Eq, sf_id)],
            }],
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_suppression_a_second_cycle_after_a_sync_writes_nothing() {
    let w = world(120).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    let first = e.run_cycle().await.unwrap();
    assert!(first.counters.created_hubspot > 50, "{:?}", first.counters);
    let before: serde_json::Value =
        reqwest::get(format!("{}/__emulator/snapshot", w.emu.hubspot_urls.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let sf_before =
        w.sf.query(
            "SELECT Id, SystemModstamp FROM Opportunity ORDER BY Id",
            QueryScope::Live,
        )
        .await
        .unwrap();
    let second = e.run_cycle().await.unwrap();
    let c = second.counters;
    assert_eq!(
        (
            c.created_hubspot,
            c.created_salesforce,
            c.updated_hubspot,
            c.updated_salesforce
        ),
        (0, 0, 0, 0),
        "{c:?}"
    );
    let after: serde_json::Value =
        reqwest::get(format!("{}/__emulator/snapshot", w.emu.hubspot_urls.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        before == after,
        "the second cycle must not change anything in HubSpot"
    );
    let sf_after =
        w.sf.query(
            "SELECT Id, SystemModstamp FROM Opportunity ORDER BY Id",
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert_eq!(
        sf_before, sf_after,
        "the second cycle must not change anything in Salesforce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_arrive_both_ways_and_money_is_exact() {
    let w = world(60).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    e.run_cycle().await.unwrap();
    let tenant = TenantId::new("demo").unwrap();
    let rows =
        w.sf.query("SELECT Id FROM Opportunity ORDER BY Id", QueryScope::Live)
            .await
            .unwrap();
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect();
    let links = e
        .store()
        .links_by_salesforce_ids(&tenant, ObjectPair::OpportunityDeal, &ids)
        .await
        .unwrap();
    assert!(links.len() >= 2);
    // Salesforce → HubSpot: an exact amount, not converted.
    let (a, b) = (&links[0], &links[1]);
    let mut f = Fields::new();
    f.insert("Amount".into(), serde_json::json!(98765.43));
    w.sf.update("Opportunity", &a.salesforce_id, &f)
        .await
        .unwrap();
    // HubSpot → Salesforce: the description (Salesforce blank, so HubSpot writes it).
    w.hs.batch_update(
        "deals",
        &[UpdateInput {
            id: b.hubspot_id.clone(),
            properties: [("description".to_string(), "from HubSpot".to_string())].into(),
        }],
        None,
    )
    .await
    .unwrap();
    e.run_cycle().await.unwrap();
    let deal =
        w.hs.get("deals", &a.hubspot_id, &["amount"], &[])
            .await
            .unwrap();
    assert_eq!(deal.prop("amount"), Some("98765.43"));
    let opp =
        w.sf.get("Opportunity", &b.salesforce_id, Some(&["Description"]))
            .await
            .unwrap();
    assert_eq!(opp.str_field("Description"), Some("from HubSpot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_apply_and_commit_leaves_no_duplicate_after_restart() {
    crash_between_apply_and_commit(world(40).await).await;
}

/// The same crash in a backfill into an empty portal, where records are created (not
/// upserted) with their associations: the restart finds the portal no longer empty and
/// upserts, so the records written before the crash are not created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_a_backfill_into_an_empty_portal_leaves_no_duplicate() {
    crash_between_apply_and_commit(world_empty_portal(40).await).await;
}

async fn crash_between_apply_and_commit(w: dealbridge_e2e::World) {
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "first").await;
    // The first applied batch (accounts) commits; the fault fires after the second
    // batch's writes were acknowledged and before its links were committed.
    e.fault_point().arm_after_apply(1);
    let err = e.run_cycle().await.unwrap_err();
    assert!(matches!(err, SyncError::Injected(_)), "{err}");
    drop(e);
    // Restart (the dead holder's lease expires), sync to the end.
    let mut e2 = w.engine(&cfg, "second").await;
    e2.run_cycle().await.unwrap();
    e2.run_cycle().await.unwrap();
    let tenant = TenantId::new("demo").unwrap();
    for (sobject, object, pair) in [
        ("Contact", "contacts", ObjectPair::ContactContact),
        ("Opportunity", "deals", ObjectPair::OpportunityDeal),
    ] {
        let rows =
            w.sf.query(
                &format!("SELECT Id FROM {sobject} ORDER BY Id LIMIT 15"),
                QueryScope::Live,
            )
            .await
            .unwrap();
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.id().map(str::to_string))
            .collect();
        let links = e2
            .store()
            .links_by_salesforce_ids(&tenant, pair, &ids)
            .await
            .unwrap();
        assert!(!links.is_empty(), "{sobject} records were linked");
        for l in &links {
            // A contact matched by email to one of the portal's own is linked without
            // necessarily carrying the cross-reference; none is ever there twice.
            let n = with_xref(&w, object, &l.salesforce_id).await;
            if object == "deals" {
                assert_eq!(n, 1, "exactly one deal for {}", l.salesforce_id);
            } else {
                assert!(n <= 1, "{n} contacts for {}", l.salesforce_id);
            }
        }
        let distinct: std::collections::HashSet<&str> =
            links.iter().map(|l| l.hubspot_id.as_str()).collect();
        assert_eq!(distinct.len(), links.len(), "one {object} record per link");
    }
}
