//! A real sync, seen the way an operator and a tenant see it: the engine runs a backfill
//! and an incremental cycle (one record fails: its Salesforce owner has no HubSpot owner)
//! against the in-process emulators; then the process metrics count the runs, records,
//! the error by health group, the CRM calls and the plugin invocations, and the service
//! API, over the engine's own store, shows the runs with the cycle's counters, a synced
//! record's link and history, and the error on the health view and in the CSV export.

use dealbridge::api::{self, ApiConfig, AppState};
use dealbridge::crm::salesforce::Fields;
use dealbridge::runtime::{Runtime, RuntimeConfig};
use dealbridge_e2e::world;
use serde_json::{Value, json};

const OPERATOR: &str = "operator-token-for-the-observability-test-0123";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The value of one series (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The sum of every series of a metric whose labels contain `part`.
fn sum_matching(text: &str, metric: &str, part: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let r = client.get(url).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_shows_in_metrics_and_in_the_read_api() {
    let w = world(10).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "observer").await;
    let before = dealbridge::telemetry::render();

    let backfill = e.run_cycle().await.expect("backfill");
    assert!(
        backfill.counters.created_hubspot > 0,
        "{:?}",
        backfill.counters
    );
    let frances = w.sf_users().await["frances.allen@example.com"].clone();
    let orphan: Fields = [
        ("Name", json!("Orphan")),
        ("StageName", json!("Prospecting")),
        ("CloseDate", json!("2026-09-30")),
        ("OwnerId", json!(frances)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let orphan = w.sf.create("Opportunity", &orphan).await.unwrap();
    let incremental = e.run_cycle().await.expect("incremental cycle");
    assert!(
        incremental
            .failures
            .iter()
            .any(|f| f.record == format!("salesforce:{orphan}")),
        "{:?}",
        incremental.failures
    );

    // The process metrics moved by at least this process's own work.
    let after = dealbridge::telemetry::render();
    let grew = |name: &str, by: f64| {
        let (b, a) = (series(&before, name), series(&after, name));
        assert!(a >= b + by, "{name}: {b} -> {a}\n{after}");
    };
    // The seeded org has records that fail (owners without a HubSpot owner).
    let status_of = |r: &dealbridge::sync::CycleReport| {
        if r.failures.is_empty() {
            "succeeded"
        } else {
            "partially_failed"
        }
    };
    grew(
        &format!(
            "dealbridge_sync_runs_total{{trigger=\"backfill\",status=\"{}\"}}",
            status_of(&backfill)
        ),
        1.0,
    );
    grew(
        "dealbridge_sync_runs_total{trigger=\"scheduled\",status=\"partially_failed\"}",
        1.0,
    );
    grew(
        "dealbridge_sync_records_total{counter=\"created_hubspot\"}",
        backfill.counters.created_hubspot as f64,
    );
    grew(
        "dealbridge_sync_records_total{counter=\"failed\"}",
        (backfill.counters.failed + incremental.counters.failed) as f64,
    );
    grew("dealbridge_sync_errors_total{category=\"validation\"}", 1.0);
    grew(
        "dealbridge_plugin_invocations_total{export=\"plan\",outcome=\"ok\"}",
        1.0,
    );
    grew("dealbridge_plugin_fuel_used_count{export=\"plan\"}", 1.0);
    let crm = |text: &str, which: &str| {
        sum_matching(
            text,
            "dealbridge_crm_api_calls_total",
            &format!("crm=\"{which}\""),
        )
    };
    let sf_calls =
        (backfill.counters.api_calls_salesforce + incremental.counters.api_calls_salesforce) as f64;
    assert!(sf_calls > 0.0);
    assert!(crm(&after, "salesforce") >= crm(&before, "salesforce") + sf_calls);
    assert!(crm(&after, "hubspot") > crm(&before, "hubspot"));

    // The read API over the engine's store shows the same runs and the error.
    let store = e.store().clone();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let state = AppState::new(store, runtime, OPERATOR, KEY_HEX, ApiConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/admin/tenants/demo/tokens"))
        .bearer_auth(OPERATOR)
        .json(&json!({"label": "observer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, text) = get(&client, &format!("{base}/v1/tenants/demo/runs"), &token).await;
    assert_eq!(status, 200, "{text}");
    let runs: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(runs["runs"][0]["id"], incremental.run_id);
    assert_eq!(runs["runs"][0]["status"], "partially_failed");
    // The stored counters are the cycle's report: reads, writes, skips, failures, calls.
    assert_eq!(
        runs["runs"][0]["counters"],
        serde_json::to_value(incremental.counters).unwrap()
    );
    assert!(incremental.counters.failed >= 1);
    assert_eq!(runs["runs"][1]["id"], backfill.run_id);
    assert_eq!(runs["runs"][1]["trigger"], "backfill");
    assert_eq!(runs["runs"][1]["status"], status_of(&backfill));
    assert_eq!(
        runs["runs"][1]["counters"],
        serde_json::to_value(backfill.counters).unwrap()
    );

    let (_, text) = get(
        &client,
        &format!("{base}/v1/tenants/demo/sync-health"),
        &token,
    )
    .await;
    let health: Value = serde_json::from_str(&text).unwrap();
    let validation = health["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "validation")
        .unwrap();
    assert!(validation["open_errors"].as_i64().unwrap() >= 1, "{text}");

    let (status, text) = get(
        &client,
        &format!("{base}/v1/tenants/demo/sync-health/errors/export?format=csv&category=validation"),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&orphan) && text.contains("frances.allen@example.com"),
        "{text}"
    );

    // The engine records a failure as an open error, not as history: a record that never
    // synced has neither a link nor history.
    for what in ["link", "history"] {
        let (status, text) = get(
            &client,
            &format!("{base}/v1/tenants/demo/records/opportunity_deal/salesforce/{orphan}/{what}"),
            &token,
        )
        .await;
        assert_eq!(status, 404, "{what}: {text}");
    }

    // A synced record: its link and its creation in the history.
    let links = e
        .store()
        .links(
            &dealbridge::store::TenantId::new("demo").unwrap(),
            dealbridge::store::ObjectPair::OpportunityDeal,
            None,
            1,
        )
        .await
        .unwrap();
    let link = &links[0];
    let (status, text) = get(
        &client,
        &format!(
            "{base}/v1/tenants/demo/records/opportunity_deal/hubspot/{}/link",
            link.hubspot_id
        ),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&link.salesforce_id));
    let (_, text) = get(
        &client,
        &format!(
            "{base}/v1/tenants/demo/records/opportunity_deal/salesforce/{}/history",
            link.salesforce_id
        ),
        &token,
    )
    .await;
    let history: Value = serde_json::from_str(&text).unwrap();
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "created" && e["run_id"] == backfill.run_id),
        "{text}"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    e.release().await.unwrap();
}
