//! The service end to end, in process: both emulators, the API on 127.0.0.1:0 over a
//! SQLite file, and the scheduler. A tenant is created and set up over HTTP (connections,
//! the default rules uploaded with a rule-test fixture and activated, a plugin config), a
//! forced validation failure in HubSpot makes the first sync record an error, and after
//! the fault is removed a resync asked for over the API fixes it; a dry run then plans a
//! new opportunity's deal without writing, a triggered sync creates it, and both CRMs
//! have converged: every Salesforce record has exactly one HubSpot counterpart, nothing is
//! duplicated, no error is left open.

mod api_support;
mod service_support;

use std::time::Duration;

use api_support::TestServer;
use dealbridge::service::{Scheduler, ServiceConfig};
use dealbridge::store::{ErrorCategory, Page, RunStatus, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_support::{
    assert_converged, emulators, eventually, hs_records, put_json, salesforce_client,
    set_up_tenant, sf_records,
};

const TENANT: &str = "acme";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_syncs_through_the_service_and_converges_after_a_fault() {
    let emu = emulators(3, 6, 12).await;
    let s = TestServer::start().await;
    let scheduler = Scheduler::start(
        s.state.clone(),
        ServiceConfig {
            workers: 2,
            lease_ttl: Duration::from_secs(5),
            idle_poll: Duration::from_millis(100),
            ..ServiceConfig::default()
        },
    );
    let token = s.tenant(TENANT).await;
    let tenant = TenantId::new(TENANT).unwrap();
    // Paused until it is set up, so no run starts half-way.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/sync/pause"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    set_up_tenant(&s.base, &emu, TENANT, &token).await;

    // Before the first sync the plan needs metadata that only a real run creates (the
    // cross-reference property): the dry run says so and writes nothing anywhere.
    let opportunities = sf_records(&emu, "Opportunity").await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/sync/dry-run"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "sync_failed", "{}", r.text);
    assert!(
        hs_records(&emu, "deals").await.is_empty(),
        "a dry run wrote"
    );
    assert!(
        s.store
            .runs(&tenant, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );

    // HubSpot refuses one deal.
    let victim = opportunities[0].clone();
    let victim_id = victim["Id"].as_str().unwrap().to_string();
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({"validation_failures": [{"object": "deals", "field": "dealname",
            "equals": victim["Name"], "message": "Deal name is reserved"}]}),
    )
    .await;
    for route in ["resume", "trigger"] {
        let r = s
            .call(
                Method::POST,
                &format!("/v1/tenants/{TENANT}/sync/{route}"),
                Some(&token),
                None,
            )
            .await;
        assert!(r.status.is_success(), "{route}: {}", r.text);
    }
    let store = s.store.clone();
    let error = eventually(
        "the injected failure in health",
        Duration::from_secs(120),
        || {
            let (store, tenant, victim_id) = (store.clone(), tenant.clone(), victim_id.clone());
            async move {
                let runs = store.runs(&tenant, Page::first(10)).await.unwrap();
                let finished = runs.iter().any(|r| r.status != RunStatus::Running);
                let open = store
                    .open_errors(&tenant, Some(ErrorCategory::Validation), Page::first(100))
                    .await
                    .unwrap();
                open.into_iter()
                    .find(|e| e.record.id == victim_id)
                    .filter(|_| finished)
            }
        },
    )
    .await;
    assert!(error.message.contains("Deal name is reserved"), "{error:?}");
    let health = store.health_summary(&tenant).await.unwrap();
    assert!(!health.is_empty(), "health shows the open error");
    let runs = store.runs(&tenant, Page::first(10)).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::PartiallyFailed, "{runs:?}");
    assert_eq!(
        hs_records(&emu, "deals").await.len(),
        opportunities.len() - 1,
        "every deal but the refused one"
    );

    // Fixed; a resync of the record, asked for over the API, converges.
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({}),
    )
    .await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/resyncs"),
            Some(&token),
            Some(
                json!({"scope": "records", "object_pair": "opportunity_deal",
                "side": "salesforce", "ids": [victim_id]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    let resync_path = format!("/v1/tenants/{TENANT}/resyncs/{}", r.body["id"]);
    let done = eventually("the resync", Duration::from_secs(120), || {
        let s = &s;
        let (path, token) = (resync_path.clone(), token.clone());
        async move {
            let r = s.call(Method::GET, &path, Some(&token), None).await;
            (r.body["status"] == "done").then_some(r.body)
        }
    })
    .await;
    assert_eq!(done["outcome"], "succeeded", "{done}");
    assert!(done["run_id"].as_i64().is_some(), "{done}");

    // The resync's turn goes on with a regular cycle; wait for its end.
    eventually("the end of the run", Duration::from_secs(120), || {
        let s = &s;
        let token = token.clone();
        async move {
            let r = s
                .call(
                    Method::GET,
                    &format!("/v1/tenants/{TENANT}/sync"),
                    Some(&token),
                    None,
                )
                .await;
            (r.body["running"] == false).then_some(())
        }
    })
    .await;
    // A new opportunity: a dry run plans its deal and writes nothing; a sync creates it.
    let sf = salesforce_client(&emu);
    let owner = opportunities[0]["OwnerId"].clone();
    let mut fields = dealbridge::crm::salesforce::Fields::new();
    for (k, v) in [
        ("Name", json!("Planned in a dry run")),
        ("StageName", json!("Prospecting")),
        ("CloseDate", json!("2027-01-15")),
        ("Amount", json!(1234.5)),
        ("OwnerId", owner),
    ] {
        fields.insert(k.into(), v);
    }
    let new_id = sf.create("Opportunity", &fields).await.unwrap();
    let runs_before = store.runs(&tenant, Page::first(100)).await.unwrap().len();
    let deals_before = hs_records(&emu, "deals").await.len();
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/sync/dry-run"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let planned: Vec<&Value> = r.body["planned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["op"] == "create" && p["target"] == "hubspot")
        .collect();
    assert_eq!(planned.len(), 1, "{}", r.text);
    assert_eq!(planned[0]["pair"], "opportunity_deal", "{}", r.text);
    assert!(
        planned[0]["record"].as_str().unwrap().contains(&new_id),
        "{}",
        r.text
    );
    assert_eq!(
        hs_records(&emu, "deals").await.len(),
        deals_before,
        "a dry run wrote"
    );
    assert_eq!(
        store.runs(&tenant, Page::first(100)).await.unwrap().len(),
        runs_before,
        "a dry run recorded a run"
    );
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/sync/trigger"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    eventually("the triggered run", Duration::from_secs(120), || {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let runs = store.runs(&tenant, Page::first(100)).await.unwrap();
            (runs.len() > runs_before && runs[0].status != RunStatus::Running).then_some(())
        }
    })
    .await;

    // Converged: no open error, and each pair's records match one to one on both sides.
    let open = store
        .open_errors(&tenant, None, Page::first(100))
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    assert_converged(&emu, store.as_ref(), &tenant).await;
    // The schedule shows a healthy tenant.
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/{TENANT}/sync"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["consecutive_failures"], 0, "{}", r.text);
    assert_eq!(r.body["paused"], false);

    scheduler.shutdown().await;
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}
