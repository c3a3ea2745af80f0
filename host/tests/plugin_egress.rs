//! Plugin egress over real HTTP: the owner-lookup example and the hostile component run through
//! the real [`HttpGateway`] against the in-process emulators. The host adds the credentials
//! (the plugin never has a token, and the emulators refuse a request without one), escapes
//! never leave the host, the response-byte cap holds, and the tenant's CRM allowance (the sync
//! clients' own HubSpot governor and Salesforce budget) bounds what a plugin may spend.

use std::sync::{Arc, OnceLock};

use dealbridge::crm::governor::{Allocation, BudgetConfig, HubSpotLimits};
use dealbridge::crm::hubspot::{HubSpotClient, HubSpotConfig};
use dealbridge::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use dealbridge::crm::{RetryPolicy, Secret};
use dealbridge::runtime::gateway::{CrmBaseUrls, CrmTarget, StaticCredentials};
use dealbridge::runtime::{
    Batch, CrmAllowances, HttpGateway, InvokeError, Invoked, LimitKind, Limits, LoadedPlugin,
    PairOutcome, TraceOutcome, Value,
};
use dealbridge_emulator::hubspot::ratelimit::RateLimitSettings;
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed};
use serde_json::json;

mod plugin_support;

use plugin_support::{batch_from_fixture, load};

fn owner_lookup() -> &'static LoadedPlugin {
    static P: OnceLock<LoadedPlugin> = OnceLock::new();
    P.get_or_init(|| load(dealbridge_guests::OWNER_LOOKUP))
}

async fn emulators() -> RunningEmulators {
    dealbridge_emulator::start(EmulatorOptions {
        seed: Seed::Empty,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulators start")
}

/// The sync's Salesforce client of the tenant, with this API allocation.
fn salesforce_client(emu: &RunningEmulators, allocation: Allocation) -> SalesforceClient {
    let c = &emu.salesforce_credentials;
    let creds = SalesforceCredentials::Password {
        client_id: c.client_id.clone(),
        client_secret: Secret::new(c.client_secret.clone()),
        username: c.username.clone(),
        password: Secret::new(format!("{}{}", c.password, c.security_token)),
    };
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.http.clone(), creds);
    cfg.retry = RetryPolicy {
        max_transient_retries: 0,
        ..RetryPolicy::default()
    };
    cfg.budget = BudgetConfig {
        allocation,
        ..BudgetConfig::default()
    };
    SalesforceClient::new(cfg).unwrap()
}

/// The sync's HubSpot client of the tenant, with this daily cap.
fn hubspot_client(emu: &RunningEmulators, daily_cap: Option<u64>) -> HubSpotClient {
    let mut cfg = HubSpotConfig::new(
        emu.hubspot_urls.http.clone(),
        emu.hubspot_credentials.private_app_token.clone(),
    );
    cfg.limits = HubSpotLimits {
        daily_cap,
        ..HubSpotLimits::default()
    };
    HubSpotClient::new(cfg).unwrap()
}

/// A Salesforce access token from the emulator's OAuth endpoint (the host's credential).
async fn salesforce_token(emu: &RunningEmulators) -> String {
    let c = &emu.salesforce_credentials;
    let password = format!("{}{}", c.password, c.security_token);
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/services/oauth2/token",
            emu.salesforce_urls.http
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("username", c.username.as_str()),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap().to_string()
}

async fn gateway(emu: &RunningEmulators, allowances: CrmAllowances) -> Arc<HttpGateway> {
    let bases = CrmBaseUrls {
        salesforce: Some(emu.salesforce_urls.http.parse().unwrap()),
        hubspot: Some(emu.hubspot_urls.http.parse().unwrap()),
    };
    let creds = StaticCredentials {
        salesforce: Some(salesforce_token(emu).await),
        hubspot: Some(emu.hubspot_credentials.private_app_token.clone()),
    };
    Arc::new(HttpGateway::new(bases, Arc::new(creds), allowances).unwrap())
}

/// Salesforce → HubSpot deals owned by the Salesforce user `owner_id`.
fn deals_owned_by(owner_id: &str, deals: usize) -> Batch {
    let pairs: Vec<_> = (0..deals)
        .map(|i| {
            json!({
                "salesforce": { "id": format!("0060000000000{i:02}AAA"), "modified_at": "2026-05-20T12:00:00Z",
                                "fields": { "Name": "Big deal", "OwnerId": owner_id } },
                "hubspot": { "id": format!("90{i:02}"), "modified_at": "2026-05-19T12:00:00Z",
                             "fields": { "dealname": "Big deal" } },
                "salesforce_changed": ["OwnerId"]
            })
        })
        .collect();
    batch_from_fixture(json!({
        "object_pair": "opportunity-deal",
        "direction": "salesforce-to-hubspot",
        "pairs": pairs
    }))
}

/// Ada Lovelace's Salesforce user id and HubSpot owner id, as the sync's clients read them.
async fn ada(sf: &SalesforceClient, hs: &HubSpotClient) -> (String, String) {
    let email = "ada.lovelace@example.com";
    let user = sf
        .users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email.as_deref() == Some(email))
        .expect("Ada is a Salesforce user");
    let owner = hs
        .list_owners()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.email.as_deref() == Some(email))
        .expect("Ada is a HubSpot owner");
    (user.id, owner.id)
}

async fn plan(gw: &Arc<HttpGateway>, limits: Limits, batch: &Batch) -> Invoked<Vec<PairOutcome>> {
    let inv = dealbridge::runtime::Invocation::new(limits, &json!({}), gw.clone()).unwrap();
    owner_lookup().plan(&inv, batch).await
}

fn hubspot_owner_written(outcome: &PairOutcome) -> Option<String> {
    let PairOutcome::Write(w) = outcome else {
        return None;
    };
    w.hubspot
        .iter()
        .find(|f| f.field == "hubspot_owner_id")
        .and_then(|f| match &f.value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        })
}

fn error_message(outcome: &PairOutcome) -> &str {
    match outcome {
        PairOutcome::Error(e) => &e.message,
        other => panic!("expected an error outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn owner_lookup_resolves_owners_over_real_http_with_host_credentials() {
    let emu = emulators().await;
    let sf = salesforce_client(&emu, Allocation::Unlimited);
    let hs = hubspot_client(&emu, None);
    let (sf_user, hs_owner) = ada(&sf, &hs).await;
    let gw = gateway(&emu, CrmAllowances::unmetered()).await;

    let r = plan(&gw, Limits::default(), &deals_owned_by(&sf_user, 2)).await;
    let outcomes = r.result.expect("the plan runs");
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!(hubspot_owner_written(o).as_deref(), Some(hs_owner.as_str()));
    }
    // One lookup per owner and batch: a SOQL query, then the HubSpot owner by email, both
    // authenticated by the host (the emulators answer 401 without a token).
    let trace: Vec<_> = r
        .report
        .http
        .iter()
        .map(|h| (h.target, h.path.as_str(), h.status, h.outcome))
        .collect();
    assert_eq!(
        trace,
        vec![
            (
                CrmTarget::Salesforce,
                "/services/data/v62.0/query",
                Some(200),
                TraceOutcome::Ok
            ),
            (
                CrmTarget::Hubspot,
                "/crm/v3/owners",
                Some(200),
                TraceOutcome::Ok
            ),
        ]
    );
    assert!(r.report.http.iter().all(|h| h.response_bytes > 0));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn escapes_through_the_real_gateway_never_reach_the_crm() {
    let emu = emulators().await;
    let sf = salesforce_client(&emu, Allocation::Unlimited);
    sf.users().await.unwrap();
    let before = sf.api_usage().unwrap().used;
    let gw = gateway(&emu, CrmAllowances::unmetered()).await;
    let hostile = load(dealbridge_guests::HOSTILE);
    let inv = dealbridge::runtime::Invocation::new(
        Limits::default(),
        &json!({"attack": "crm-escape"}),
        gw.clone(),
    )
    .unwrap();
    let r = hostile
        .plan(&inv, &deals_owned_by("005000000000001AAA", 1))
        .await;
    match &r.result {
        Err(InvokeError::Rule(e)) => assert!(
            e.message.starts_with("crm escapes: all") && e.message.ends_with("denied"),
            "{}",
            e.message
        ),
        other => panic!("{other:?}"),
    }
    assert!(r.report.http.len() >= 18);
    assert!(
        r.report
            .http
            .iter()
            .all(|h| h.outcome == TraceOutcome::Denied && h.status.is_none()),
        "{:#?}",
        r.report.http
    );
    // The org counted exactly one more request: this one, not any of the escapes.
    sf.users().await.unwrap();
    assert_eq!(sf.api_usage().unwrap().used, before + 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_real_response_over_the_byte_cap_is_refused_to_the_plugin() {
    let emu = emulators().await;
    let sf = salesforce_client(&emu, Allocation::Unlimited);
    let hs = hubspot_client(&emu, None);
    let (sf_user, _) = ada(&sf, &hs).await;
    let gw = gateway(&emu, CrmAllowances::unmetered()).await;
    let limits = Limits {
        response_bytes: 40,
        ..Limits::default()
    };
    let r = plan(&gw, limits, &deals_owned_by(&sf_user, 1)).await;
    let outcomes = r.result.expect("the plan runs; the pair gets an error");
    let message = error_message(&outcomes[0]);
    assert!(message.contains("LimitExceeded"), "{message}");
    assert_eq!(r.report.http.len(), 1, "the lookup stops at the SOQL query");
    assert_eq!(r.report.http[0].outcome, TraceOutcome::Limit);
    let hit = r
        .report
        .limits_hit
        .iter()
        .find(|h| h.limit == LimitKind::ResponseBytes)
        .expect("the response-byte cap is reported");
    assert_eq!(hit.limit_value, 40);
    assert!(hit.reached > 40, "{hit:?}");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn plugin_calls_spend_the_tenants_hubspot_daily_cap_and_stop_at_it() {
    let emu = emulators().await;
    let sf = salesforce_client(&emu, Allocation::Unlimited);
    // The sync's client: its governor allows 2 calls today, and the sync spends one.
    let hs = hubspot_client(&emu, Some(2));
    let (sf_user, hs_owner) = ada(&sf, &hs).await;
    assert_eq!(hs.daily_calls(), 1);
    let gw = gateway(&emu, CrmAllowances::of_clients(&sf, &hs)).await;
    let batch = deals_owned_by(&sf_user, 1);

    // The plugin's HubSpot call takes the last one.
    let first = plan(&gw, Limits::default(), &batch).await;
    let outcomes = first.result.expect("the first plan runs");
    assert_eq!(
        hubspot_owner_written(&outcomes[0]).as_deref(),
        Some(hs_owner.as_str())
    );
    assert_eq!(
        hs.daily_calls(),
        2,
        "the plugin's call counts for the tenant"
    );

    // The next invocation's HubSpot call is refused before it leaves.
    let second = plan(&gw, Limits::default(), &batch).await;
    let outcomes = second
        .result
        .expect("the second plan runs; the pair gets an error");
    let message = error_message(&outcomes[0]);
    assert!(message.contains("daily API cap reached"), "{message}");
    let hubspot = second
        .report
        .http
        .iter()
        .find(|h| h.target == CrmTarget::Hubspot)
        .expect("the HubSpot call is traced");
    assert_eq!(hubspot.outcome, TraceOutcome::Limit);
    assert!(hubspot.status.is_none(), "nothing was sent");
    assert_eq!(hs.daily_calls(), 2);
    // The sync's own next call is refused by the same governor.
    assert!(hs.list_owners().await.is_err());
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn plugin_calls_feed_and_stop_at_the_tenants_salesforce_budget() {
    let emu = emulators().await;
    let hs = hubspot_client(&emu, None);
    let probe = salesforce_client(&emu, Allocation::Unlimited);
    let (sf_user, _) = ada(&probe, &hs).await;
    let used = probe.api_usage().unwrap().used;
    // The sync's client may use the org up to two calls past what is used now.
    let sf = salesforce_client(&emu, Allocation::Calls(used + 2));
    sf.users().await.unwrap();
    assert_eq!(sf.api_usage().unwrap().used, used + 1);
    let gw = gateway(&emu, CrmAllowances::of_clients(&sf, &hs)).await;
    let batch = deals_owned_by(&sf_user, 1);

    // The plugin's SOQL query goes, and its `Sforce-Limit-Info` updates the sync's budget.
    let first = plan(&gw, Limits::default(), &batch).await;
    first.result.expect("the first plan runs");
    assert_eq!(first.report.http[0].status, Some(200));
    assert_eq!(sf.api_usage().unwrap().used, used + 2);

    // The allocation is spent: the plugin's next query never leaves, nor does the sync's.
    let second = plan(&gw, Limits::default(), &batch).await;
    let outcomes = second
        .result
        .expect("the second plan runs; the pair gets an error");
    let message = error_message(&outcomes[0]);
    assert!(message.contains("Salesforce API budget"), "{message}");
    assert_eq!(second.report.http.len(), 1);
    assert_eq!(second.report.http[0].outcome, TraceOutcome::Limit);
    assert!(sf.users().await.is_err());
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_rate_window_past_the_deadline_refuses_at_once() {
    let emu = emulators().await;
    // The portal allows one request an hour; the sync's client learns it from the rate
    // headers of its first call, which spends it.
    emu.hubspot.set_rate_limits(RateLimitSettings {
        ten_secondly: Some(1),
        interval_ms: 3_600_000,
        ..RateLimitSettings::default()
    });
    let sf = salesforce_client(&emu, Allocation::Unlimited);
    let hs = hubspot_client(&emu, None);
    let (sf_user, _) = ada(&sf, &hs).await;
    let gw = gateway(&emu, CrmAllowances::of_clients(&sf, &hs)).await;
    let r = plan(&gw, Limits::default(), &deals_owned_by(&sf_user, 1)).await;
    let outcomes = r.result.expect("the plan runs; the pair gets an error");
    let message = error_message(&outcomes[0]);
    assert!(message.contains("rate window is full"), "{message}");
    let hubspot = r
        .report
        .http
        .iter()
        .find(|h| h.target == CrmTarget::Hubspot)
        .unwrap();
    assert_eq!(hubspot.outcome, TraceOutcome::Limit);
    emu.shutdown().await.unwrap();
}
