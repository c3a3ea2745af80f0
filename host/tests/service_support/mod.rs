//! Shared set-up of the service's end-to-end tests: the emulators with a small seeded
//! org whose owners are all HubSpot owners, a tenant set up over the HTTP API, and the
//! checks that both CRMs converged. Talks to nothing but the in-process emulators and the
//! service under test.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dealbridge::api::AppState;
use dealbridge::crm::Secret;
use dealbridge::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use dealbridge::service::{Scheduler, ServiceConfig};
use dealbridge::store::{ObjectPair, Page, Run, RunStatus, Store, TenantId};
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Polls `check` every 100 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
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

/// Waits (up to `limit`) until one of the tenant's last five runs has `status`; returns
/// the newest such run.
pub async fn a_run_with_status(
    store: &dyn Store,
    tenant: &TenantId,
    status: RunStatus,
    limit: Duration,
) -> Run {
    eventually(
        &format!("a {status:?} run of {tenant}"),
        limit,
        || async move {
            let runs = store.runs(tenant, Page::first(5)).await.unwrap();
            runs.into_iter().find(|r| r.status == status)
        },
    )
    .await
}

pub async fn put_json(url: String, body: Value) {
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

pub async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The Salesforce records of `sobject` in the emulator's snapshot.
pub async fn sf_records(emu: &RunningEmulators, sobject: &str) -> Vec<Value> {
    let snap = get_json(format!("{}/__emulator/snapshot", emu.salesforce_urls.http)).await;
    snap["objects"][sobject]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every HubSpot record of `object` with its cross-reference property (paged).
pub async fn hs_records(emu: &RunningEmulators, object: &str) -> Vec<Value> {
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
pub async fn emulators(accounts: usize, contacts: usize, opportunities: usize) -> RunningEmulators {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = dealbridge_emulator::start(EmulatorOptions {
        seed: Seed::Empty,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulators start");
    let r = reqwest::Client::new()
        .post(format!("{}/__emulator/seed", emu.salesforce_urls.http))
        .json(
            &json!({"seed": 7, "accounts": accounts, "contacts": contacts,
            "opportunities": opportunities}),
        )
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
pub fn salesforce_client(emu: &RunningEmulators) -> SalesforceClient {
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

/// `method path` on the API at `base` with a bearer token and an optional JSON body:
/// the status and the JSON answer.
pub async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A scheduler on `state` for tests: `workers` workers, leases of 5 s, an idle poll of
/// 100 ms, and whatever `adjust` changes.
pub fn test_scheduler(
    state: &AppState,
    workers: usize,
    adjust: impl FnOnce(&mut ServiceConfig),
) -> Scheduler {
    let mut config = ServiceConfig {
        workers,
        lease_ttl: Duration::from_secs(5),
        idle_poll: Duration::from_millis(100),
        ..ServiceConfig::default()
    };
    adjust(&mut config);
    Scheduler::start(state.clone(), config)
}

/// Points the tenant's HubSpot connection at port 1 of the loopback, where nothing
/// listens: a CRM that cannot be reached.
pub async fn put_unreachable_hubspot(base: &str, tenant: &str, token: &str) {
    let (status, body) = call(
        base,
        Method::PUT,
        &format!("/v1/tenants/{tenant}/connections/hubspot"),
        token,
        Some(json!({"base_url": "http://127.0.0.1:1", "access_token": "pat"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Creates a tenant with the operator token; returns the tenant's token.
pub async fn create_tenant(base: &str, operator: &str, id: &str) -> String {
    let (status, body) = call(
        base,
        Method::POST,
        "/v1/admin/tenants",
        operator,
        Some(json!({"id": id, "name": id})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"]["token"].as_str().unwrap().to_string()
}

/// Sets a tenant up over the API at `base`: both connections, the default rules
/// uploaded with a rule-test fixture and activated, the plugin config the seeded org
/// needs, and an interval of an hour (so only asked-for runs happen).
pub async fn set_up_tenant(base: &str, emu: &RunningEmulators, tenant: &str, token: &str) {
    let expect = |what: &str, (status, body): (StatusCode, Value), want: StatusCode| {
        assert_eq!(status, want, "{what}: {body}");
        body
    };
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
        let path = format!("/v1/tenants/{tenant}/connections/{crm}");
        expect(
            crm,
            call(base, Method::PUT, &path, token, Some(body)).await,
            StatusCode::OK,
        );
    }
    let wasm = std::fs::read(dealbridge_guests::DEFAULT_RULES).expect("default rules");
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/{tenant}/plugins?label=default"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "upload: {}", r.status());
    let uploaded: Value = r.json().await.unwrap();
    let version = uploaded["version"]["id"].as_i64().unwrap();
    let (name, fixture) = first_default_fixture();
    expect(
        "fixture",
        call(
            base,
            Method::POST,
            &format!("/v1/tenants/{tenant}/plugins/{version}/fixtures"),
            token,
            Some(json!({"name": name, "fixture": fixture})),
        )
        .await,
        StatusCode::CREATED,
    );
    expect(
        "activate",
        call(
            base,
            Method::POST,
            &format!("/v1/tenants/{tenant}/plugins/{version}/activate"),
            token,
            None,
        )
        .await,
        StatusCode::OK,
    );
    // The seeded Opportunity.Type values are not options of HubSpot's dealtype.
    expect(
        "plugin config",
        call(
            base,
            Method::PUT,
            &format!("/v1/tenants/{tenant}/sync/plugin-config"),
            token,
            Some(json!({"rules": {"opportunity-deal": {"Type": "dont-sync"}}})),
        )
        .await,
        StatusCode::OK,
    );
    expect(
        "schedule",
        call(
            base,
            Method::PUT,
            &format!("/v1/tenants/{tenant}/sync/schedule"),
            token,
            Some(json!({"interval_secs": 3600})),
        )
        .await,
        StatusCode::OK,
    );
}

/// The first of the default rules' rule-test fixtures (name, fixture).
fn first_default_fixture() -> (String, Value) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rules-wasm/default-rules/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let p = files.first().expect("a fixture");
    let name = p.file_stem().unwrap().to_string_lossy().to_string();
    let v = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    (name, v)
}

/// Asserts that the pair's records match one to one on both CRMs: as many HubSpot
/// records as Salesforce records, each naming a distinct Salesforce id (no duplicate),
/// together naming every one, and one link per record in the store.
pub async fn assert_converged(emu: &RunningEmulators, store: &dyn Store, tenant: &TenantId) {
    for (sobject, object, pair) in [
        ("Opportunity", "deals", ObjectPair::OpportunityDeal),
        ("Account", "companies", ObjectPair::AccountCompany),
        ("Contact", "contacts", ObjectPair::ContactContact),
    ] {
        let sf: BTreeSet<String> = sf_records(emu, sobject)
            .await
            .iter()
            .map(|r| r["Id"].as_str().unwrap().to_string())
            .collect();
        let hs = hs_records(emu, object).await;
        let xrefs: Vec<String> = hs
            .iter()
            .filter_map(|r| r["properties"]["dealbridge_sf_id"].as_str())
            .map(str::to_string)
            .collect();
        let unique: BTreeSet<String> = xrefs.iter().cloned().collect();
        assert_eq!(unique.len(), xrefs.len(), "{object}: a duplicate");
        assert_eq!(hs.len(), sf.len(), "{object}: counts differ");
        assert_eq!(unique, sf, "{object}: every record has its counterpart");
        let links = store.links(tenant, pair, None, 1000).await.unwrap();
        assert_eq!(links.len(), sf.len(), "{pair}: one link per record");
    }
}
