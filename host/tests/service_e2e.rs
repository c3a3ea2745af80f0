//! The service end to end, in process: both emulators, the API on 127.0.0.1:0 over a
//! SQLite file, and the scheduler. A tenant is created and set up over HTTP (connections,
//! the default rules uploaded with a rule-test fixture and activated, a plugin config), a
//! forced validation failure in HubSpot makes the first sync record an error, and after
//! the fault is removed a resync asked for over the API fixes it; a dry run then plans a
//! new opportunity's deal without writing, a triggered sync creates it, and both CRMs
//! have converged: every Salesforce record has exactly one HubSpot counterpart, nothing is
//! duplicated, no error is left open.

mod api_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_support::{TestServer, default_fixtures};
use dealbridge::crm::Secret;
use dealbridge::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use dealbridge::service::{Scheduler, ServiceConfig};
use dealbridge::store::{ErrorCategory, ObjectPair, Page, RunStatus, TenantId};
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TENANT: &str = "acme";

/// Polls `check` every 100 ms until it returns `Some`, or fails after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_json(url: String, body: Value) {
    let r = reqwest::Client::new()
        .put(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The Salesforce records of `sobject` in the emulator's snapshot.
async fn sf_records(emu: &RunningEmulators, sobject: &str) -> Vec<Value> {
    let snap = get_json(format!("{}/__emulator/snapshot", emu.salesforce_urls.http)).await;
    snap["objects"][sobject]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every HubSpot record of `object` with its cross-reference property (paged).
async fn hs_records(emu: &RunningEmulators, object: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/crm/v3/objects/{object}?limit=100&properties=dealbridge_sf_id",
            emu.hubspot_urls.http
        );
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(&emu.hubspot_credentials.private_app_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(page["results"].as_array().cloned().unwrap_or_default());
        match page["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return out,
        }
    }
}

/// Starts the emulators with only their metadata, seeds a small Salesforce org, and gives
/// every record an owner who is also a HubSpot owner (a missing owner is an error of its
/// own, not what this test is about).
async fn emulators() -> RunningEmulators {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = dealbridge_emulator::start(EmulatorOptions {
        seed: Seed::Empty,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulators start");
    let r = reqwest::Client::new()
        .post(format!("{}/__emulator/seed", emu.salesforce_urls.http))
        .json(&json!({"seed": 7, "accounts": 3, "contacts": 6, "opportunities": 12}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut snap = get_json(format!("{}/__emulator/snapshot", emu.salesforce_urls.http)).await;
    let ada = snap["objects"]["User"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["Email"] == "ada.lovelace@example.com")
        .expect("a user who is a HubSpot owner")["Id"]
        .clone();
    for o in ["Opportunity", "Account", "Contact"] {
        for r in snap["objects"][o]["records"].as_array_mut().unwrap() {
            r["OwnerId"] = ada.clone();
        }
    }
    put_json(
        format!("{}/__emulator/snapshot", emu.salesforce_urls.http),
        snap,
    )
    .await;
    emu
}

/// A Salesforce client for edits (the integration user, plain HTTP).
fn salesforce_client(emu: &RunningEmulators) -> SalesforceClient {
    let c = &emu.salesforce_credentials;
    SalesforceClient::new(SalesforceConfig::new(
        emu.salesforce_urls.http.clone(),
        SalesforceCredentials::Password {
            client_id: c.client_id.clone(),
            client_secret: Secret::new(c.client_secret.clone()),
            username: c.username.clone(),
            password: Secret::new(format!("{}{}", c.password, c.security_token)),
        },
    ))
    .unwrap()
}

/// Sets the tenant up over the API: connections, the default rules with a fixture,
/// activated, and the plugin config.
async fn set_up_tenant(s: &TestServer, emu: &RunningEmulators, token: &str) {
    let c = &emu.salesforce_credentials;
    for (crm, body) in [
        (
            "salesforce",
            json!({"base_url": emu.salesforce_urls.http, "client_id": c.client_id,
                "client_secret": c.client_secret, "username": c.username,
                "password": format!("{}{}", c.password, c.security_token)}),
        ),
        (
            "hubspot",
            json!({"base_url": emu.hubspot_urls.http,
                "access_token": emu.hubspot_credentials.private_app_token}),
        ),
    ] {
        let r = s
            .call(
                Method::PUT,
                &format!("/v1/tenants/{TENANT}/connections/{crm}"),
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let version = s.default_rules_version(TENANT, token).await;
    let (name, fixture) = default_fixtures().remove(0);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/plugins/{version}/fixtures"),
            Some(token),
            Some(json!({"name": name, "fixture": fixture})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/plugins/{version}/activate"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The seeded Opportunity.Type values are not options of HubSpot's dealtype.
    let r = s
        .call(
            Method::PUT,
            &format!("/v1/tenants/{TENANT}/sync/plugin-config"),
            Some(token),
            Some(json!({"rules": {"opportunity-deal": {"Type": "dont-sync"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Only asked-for runs in this test.
    let r = s
        .call(
            Method::PUT,
            &format!("/v1/tenants/{TENANT}/sync/schedule"),
            Some(token),
            Some(json!({"interval_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_syncs_through_the_service_and_converges_after_a_fault() {
    let emu = emulators().await;
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
    set_up_tenant(&s, &emu, &token).await;

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
    for (sobject, object, pair) in [
        ("Opportunity", "deals", ObjectPair::OpportunityDeal),
        ("Account", "companies", ObjectPair::AccountCompany),
        ("Contact", "contacts", ObjectPair::ContactContact),
    ] {
        let sf: BTreeSet<String> = sf_records(&emu, sobject)
            .await
            .iter()
            .map(|r| r["Id"].as_str().unwrap().to_string())
            .collect();
        let hs = hs_records(&emu, object).await;
        let xrefs: Vec<String> = hs
            .iter()
            .filter_map(|r| r["properties"]["dealbridge_sf_id"].as_str())
            .map(str::to_string)
            .collect();
        let unique: BTreeSet<String> = xrefs.iter().cloned().collect();
        assert_eq!(unique.len(), xrefs.len(), "{object}: a duplicate");
        assert_eq!(hs.len(), sf.len(), "{object}: counts differ");
        assert_eq!(unique, sf, "{object}: every record has its counterpart");
        let links = store.links(&tenant, pair, None, 1000).await.unwrap();
        assert_eq!(links.len(), sf.len(), "{pair}: one link per record");
    }
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
