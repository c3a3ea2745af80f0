//! `[hubspot.webhooks]` in a started sync: the receiver is bound before set-up, served
//! for the engine (its store, tenant and app), and wakes the engine on what it stores;
//! `dealbridge sync` refuses a listen address it cannot bind with a config error.

use std::io::Write;
use std::process::Command;

use dealbridge::cli::demo::{demo_config, demo_env};
use dealbridge::crm::Secret;
use dealbridge::crm::hubspot::sign_v3;
use dealbridge::sync::TenantConfig;
use dealbridge::sync::setup::{CheckStatus, WebhookFeed};
use dealbridge::sync::start::{StartOptions, bind_webhooks, start};
use futures_util::FutureExt;
use serde_json::json;

const PUBLIC_URL: &str = "https://sync.example.test/tenant-a/hooks/hubspot";
const APP_ID: u64 = 54321;

fn webhooks_section(listen: &str) -> String {
    format!(
        "\n[hubspot.webhooks]\nlisten = \"{listen}\"\npublic_url = \"{PUBLIC_URL}\"\nclient_secret_env = \"HOOK_SECRET\"\napp_id = {APP_ID}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_sync_receives_deliveries_into_its_store_and_wakes_the_engine() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = dealbridge_emulator::start(dealbridge_emulator::EmulatorOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let text = demo_config(
        &emu.salesforce_urls.https,
        &emu.hubspot_urls.https,
        &emu.ca_cert_path,
        &store_url,
        1.0,
    )
    // The [hubspot.webhooks] table must follow [hubspot]'s keys, before [plugin].
    .replacen(
        "\n[plugin]",
        &format!("{}\n[plugin]", webhooks_section("127.0.0.1:0")),
        1,
    );
    let cfg = TenantConfig::parse(&text).unwrap();
    let demo = demo_env(&emu);
    let env = move |k: &str| match k {
        "HOOK_SECRET" => Some("hook-secret".to_string()),
        other => demo(other),
    };

    let listener = bind_webhooks(&cfg, &env)
        .await
        .unwrap()
        .expect("configured");
    let addr = listener.local_addr().unwrap();
    assert_eq!(listener.public_url(), PUBLIC_URL);
    let (mut engine, report) = start(&cfg, &env, StartOptions::default()).await.unwrap();
    assert_eq!(
        engine.setup().webhook_feed,
        Some(WebhookFeed {
            app_id: APP_ID,
            // Learnt from the token although the app id is configured.
            hub_id: Some(dealbridge_emulator::hubspot::PORTAL_ID),
            verified: false
        })
    );
    let unverified = report
        .checks
        .iter()
        .find(|c| c.name == "hubspot.webhooks.subscriptions")
        .expect("the subscriptions are reported");
    assert_eq!(unverified.status, CheckStatus::Warning);
    let _server = listener.serve(&mut engine).unwrap();
    let arrived = engine.hubspot_changes_arrived().expect("wired").clone();

    let portal = dealbridge_emulator::hubspot::PORTAL_ID;
    let body = serde_json::to_vec(&json!([
        {"eventId": 1, "portalId": portal, "appId": APP_ID, "occurredAt": 1_700_000_000_000u64,
         "subscriptionType": "deal.propertyChange", "objectId": 42, "changeSource": "CRM_UI",
         "sourceId": "userId:1", "propertyName": "amount", "propertyValue": "5"},
        {"eventId": 2, "portalId": portal, "appId": APP_ID, "occurredAt": 1_700_000_000_001u64,
         "subscriptionType": "deal.propertyChange", "objectId": 43, "changeSource": "INTEGRATION",
         "sourceId": APP_ID.to_string(), "propertyName": "amount", "propertyValue": "6"}
    ]))
    .unwrap();
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let signature = sign_v3(&Secret::new("hook-secret"), "POST", PUBLIC_URL, &body, &ts);
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/hooks/hubspot"))
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", ts)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let pending = engine
        .store()
        .pending_hubspot_changes(&engine.lease().tenant, "deals", 10)
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.object_id.as_str()).collect();
    assert_eq!(ids, ["42"], "the app's own change is dropped");
    assert!(arrived.notified().now_or_never().is_some());
    engine.release().await.unwrap();
}

#[test]
fn sync_refuses_a_listen_address_in_use_as_a_config_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        "store = \"sqlite://{}?mode=rwc\"\n\n[salesforce]\nlogin_url = \"https://login.example.test\"\ngrant = \"client_credentials\"\nclient_id_env = \"SF_ID\"\nclient_secret_env = \"SF_SECRET\"\n\n[hubspot]\nbase_url = \"https://api.example.test\"\ntoken_env = \"HS_TOKEN\"\n{}",
        dir.path().join("s.db").display(),
        webhooks_section(&addr.to_string())
    )
    .unwrap();
    drop(f);
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["sync", "--once", "--config"])
        .arg(&path)
        .env("HOOK_SECRET", "s")
        .output()
        .expect("run dealbridge sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("hubspot.webhooks.listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
    drop(taken);
}
