//! End-to-end: a plugin's `crm` calls during a sync reach the tenant's two CRMs over real
//! HTTPS, with the sync's own credentials added by the host and counted against the sync's
//! own limits. The example owner-lookup plugin resolves a changed owner by looking the user
//! up in Salesforce and the owner up in HubSpot, by email.

use dealbridge::crm::hubspot::types::{Filter, FilterGroup, Operator, SearchRequest};
use dealbridge::crm::salesforce::Fields;
use dealbridge_e2e::{Emu, world};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_looks_owners_up_in_both_crms_during_a_sync() {
    let w = world(0).await;
    let (users, owners) = (w.sf_users().await, w.hs_owners().await);
    let (ada, grace) = ("ada.lovelace@example.com", "grace.hopper@example.com");
    let fields: Fields = [
        ("Name", json!("Looked up")),
        ("StageName", json!("Prospecting")),
        ("CloseDate", json!("2026-09-30")),
        ("OwnerId", json!(users[ada])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let opp = w.sf.create("Opportunity", &fields).await.unwrap();

    // The default rules create and link the deal.
    let mut default_engine = w.engine(&w.config(""), "egress").await;
    default_engine.run_cycle().await.expect("backfill");
    drop(default_engine);
    let found =
        w.hs.search(
            "deals",
            &SearchRequest {
                filter_groups: vec![FilterGroup {
                    filters: vec![Filter::new("dealbridge_sf_id", Operator::Eq, &opp)],
                }],
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .results;
    assert_eq!(found.len(), 1, "one deal synced from the opportunity");
    let deal_id = found[0].id.clone();

    // The owner-lookup plugin takes over; the owner changes in Salesforce.
    let cfg = w.config_with_plugin(dealbridge_guests::OWNER_LOOKUP);
    let mut engine = w.engine(&cfg, "egress").await;
    let grace_fields: Fields = [("OwnerId".to_string(), json!(users[grace]))]
        .into_iter()
        .collect();
    w.sf.update("Opportunity", &opp, &grace_fields)
        .await
        .unwrap();
    w.reset_accounting().await;
    engine.run_cycle().await.expect("the cycle runs");

    let deal =
        w.hs.get("deals", &deal_id, &["hubspot_owner_id"], &[])
            .await
            .unwrap();
    assert_eq!(
        deal.properties
            .get("hubspot_owner_id")
            .and_then(|v| v.as_deref()),
        Some(owners[grace].as_str()),
        "the plugin resolved Grace's HubSpot owner through the CRMs"
    );
    // The lookups went out as the plugin's own requests: a HubSpot owners search by email
    // (the sync itself reads owners only at set-up, before the accounting was reset).
    assert!(
        w.calls_with(Emu::HubSpot, "owners", 200).await >= 1,
        "the plugin's owner lookup reached HubSpot: {}",
        w.requests(Emu::HubSpot).await
    );
}
