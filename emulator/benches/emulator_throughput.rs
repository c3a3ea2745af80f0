//! Throughput of the emulators as a sync client sees it: both emulators start
//! in process on 127.0.0.1 (plain HTTP), and a reqwest client with N concurrent
//! tasks, each running a bounded loop, measures requests/s and p50/p99 latency
//! of the calls dealbridge makes most, plus the time to seed 100k opportunities
//! through the control API.
//!
//! Run: `cargo bench -p dealbridge-emulator --bench emulator_throughput`
//! (`DEALBRIDGE_BENCH_TASKS` sets the concurrency, default 8;
//! `DEALBRIDGE_BENCH_SCALE` multiplies every request count, default 1.0).
//!
//! Client and server share the machine's cores, so the figures are end to end
//! (client JSON work included). This bench never talks to anything but loopback.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dealbridge_emulator::{EmulatorOptions, Seed, start};
use reqwest::{Client, Method};
use serde_json::{Value, json};

const V: &str = "/services/data/v62.0";
const SOQL_FIELDS: &str = "Id, Name, StageName, Amount, CloseDate, AccountId, OwnerId, Probability, dealbridge_id__c, SystemModstamp";

/// One line of the results table.
struct Row {
    operation: String,
    requests: usize,
    /// Records (or inputs) handled per request, for the items/s column.
    items_per_request: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<58} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9}",
        "operation", "requests", "seconds", "req/s", "items/s", "p50 ms", "p99 ms"
    );
    println!("{}", "-".repeat(118));
    for r in rows {
        let mut l = r.latencies.clone();
        l.sort();
        let secs = r.elapsed.as_secs_f64();
        let rps = r.requests as f64 / secs;
        let items = if r.items_per_request > 1 {
            format!("{:.0}", rps * r.items_per_request as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<58} {:>8} {:>8.2} {:>10.0} {:>10} {:>9.2} {:>9.2}",
            r.operation,
            r.requests,
            secs,
            rps,
            items,
            percentile(&l, 50.0).as_secs_f64() * 1e3,
            percentile(&l, 99.0).as_secs_f64() * 1e3,
        );
    }
    println!();
}

/// Runs `op(task, i)` for i in 0..per_task on `tasks` concurrent tasks and times each call.
async fn measure<F, Fut>(
    operation: &str,
    tasks: usize,
    per_task: usize,
    items_per_request: usize,
    op: F,
) -> Row
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let s = Instant::now();
                    op(t, i).await;
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks * per_task);
    for h in handles {
        latencies.extend(h.await.expect("bench task panicked"));
    }
    let row = Row {
        operation: operation.to_string(),
        requests: tasks * per_task,
        items_per_request,
        elapsed: started.elapsed(),
        latencies,
    };
    eprintln!(
        "  done: {operation} ({} requests in {:.2}s)",
        row.requests,
        row.elapsed.as_secs_f64()
    );
    row
}

/// Sends a request and fails loudly unless it succeeded; returns the JSON body (or null).
async fn send(
    client: &Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Value {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    if !status.is_success() {
        panic!("{url}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{url}: {e}"))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(run());
}

async fn run() {
    let tasks: usize = env_or("DEALBRIDGE_BENCH_TASKS", 8).max(1);
    let scale: f64 = env_or("DEALBRIDGE_BENCH_SCALE", 1.0_f64).max(0.01);
    let n = |base: usize| {
        ((base as f64 * scale).ceil() as usize)
            .div_ceil(tasks)
            .max(1)
    };
    eprintln!(
        "emulator_throughput: {tasks} concurrent tasks, scale {scale}, {} worker threads",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let emu = start(EmulatorOptions {
        seed: Seed::Empty,
        ..Default::default()
    })
    .await
    .expect("start emulators");
    let client = Client::builder()
        .pool_max_idle_per_host(tasks * 2)
        .build()
        .expect("client");
    let sf = emu.salesforce_urls.http.clone();
    let hs = emu.hubspot_urls.http.clone();
    let mut rows = Vec::new();

    // Seeding through the control API.
    let seed_url = format!("{sf}/__emulator/seed");
    let mut seed_100k = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        let v = send(
            &client,
            Method::POST,
            &seed_url,
            "",
            Some(&json!({"seed": 100 + round, "opportunities": 100_000})),
        )
        .await;
        seed_100k.push(t.elapsed());
        assert_eq!(v["seeded"]["Opportunity"], 100_000);
    }
    rows.push(Row {
        operation: "control: seed 100k opportunities (+300 acc, 1k contacts)".into(),
        requests: seed_100k.len(),
        items_per_request: 100_000,
        elapsed: seed_100k.iter().sum(),
        latencies: seed_100k,
    });
    let t = Instant::now();
    let v = send(
        &client,
        Method::POST,
        &seed_url,
        "",
        Some(&json!({"seed": 7, "opportunities": 10_000})),
    )
    .await;
    rows.push(Row {
        operation: "control: seed 10k opportunities".into(),
        requests: 1,
        items_per_request: 10_000,
        elapsed: t.elapsed(),
        latencies: vec![t.elapsed()],
    });
    assert_eq!(v["seeded"]["Opportunity"], 10_000);

    // Log in once; every task shares the token.
    let c = &emu.salesforce_credentials;
    let tok: Value = client
        .post(format!("{sf}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("username", c.username.as_str()),
            ("password", c.password.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token: Arc<str> = Arc::from(tok["access_token"].as_str().expect("access_token"));
    let ids: Arc<Vec<String>> = {
        let page = send(
            &client,
            Method::GET,
            &format!("{sf}{V}/query?q=SELECT+Id+FROM+Opportunity+LIMIT+2000"),
            &token,
            None,
        )
        .await;
        Arc::new(
            page["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| r["Id"].as_str().expect("Id").to_string())
                .collect(),
        )
    };

    // (a) Simple GET of one record.
    {
        let (client, token, ids, sf) = (client.clone(), token.clone(), ids.clone(), sf.clone());
        rows.push(
            measure(
                "SF GET sobjects/Opportunity/{id}",
                tasks,
                n(40_000),
                1,
                move |t, i| {
                    let (client, token) = (client.clone(), token.clone());
                    let url = format!(
                        "{sf}{V}/sobjects/Opportunity/{}",
                        ids[(t * 7919 + i) % ids.len()]
                    );
                    async move {
                        send(&client, Method::GET, &url, &token, None).await;
                    }
                },
            )
            .await,
        );
    }

    // (b) A typical SOQL page over 10k opportunities, and the nextRecordsUrl follow-up.
    let q_limit =
        format!("SELECT {SOQL_FIELDS} FROM Opportunity ORDER BY SystemModstamp, Id LIMIT 2000");
    let q_paged = format!("SELECT {SOQL_FIELDS} FROM Opportunity ORDER BY SystemModstamp, Id");
    for (label, q) in [
        (
            "SF SOQL 10 fields ORDER BY SystemModstamp, Id LIMIT 2000",
            q_limit,
        ),
        (
            "SF SOQL same, no LIMIT: page 1 of 10k (2000 rows)",
            q_paged.clone(),
        ),
    ] {
        let (client, token, sf) = (client.clone(), token.clone(), sf.clone());
        let url = Arc::new(
            reqwest::Url::parse_with_params(&format!("{sf}{V}/query"), &[("q", q)])
                .expect("url")
                .to_string(),
        );
        rows.push(
            measure(label, tasks, n(400), 2000, move |_, _| {
                let (client, token, url) = (client.clone(), token.clone(), url.clone());
                async move {
                    let v = send(&client, Method::GET, &url, &token, None).await;
                    assert_eq!(v["records"].as_array().map(Vec::len), Some(2000));
                }
            })
            .await,
        );
    }
    {
        let first = send(
            &client,
            Method::GET,
            reqwest::Url::parse_with_params(&format!("{sf}{V}/query"), &[("q", &q_paged)])
                .expect("url")
                .as_str(),
            &token,
            None,
        )
        .await;
        let next = Arc::new(format!(
            "{sf}{}",
            first["nextRecordsUrl"].as_str().expect("nextRecordsUrl")
        ));
        let (client, token) = (client.clone(), token.clone());
        rows.push(
            measure(
                "SF SOQL nextRecordsUrl follow-up (rows 2000..4000)",
                tasks,
                n(400),
                2000,
                move |_, _| {
                    let (client, token, next) = (client.clone(), token.clone(), next.clone());
                    async move {
                        let v = send(&client, Method::GET, &next, &token, None).await;
                        assert_eq!(v["records"].as_array().map(Vec::len), Some(2000));
                    }
                },
            )
            .await,
        );
    }

    // (c) Collections upsert of 200 records by external id (first round creates, then updates).
    {
        let (client, token, sf) = (client.clone(), token.clone(), sf.clone());
        let url = Arc::new(format!(
            "{sf}{V}/composite/sobjects/Opportunity/dealbridge_id__c"
        ));
        rows.push(
            measure(
                "SF PATCH composite/sobjects upsert, 200 records",
                tasks,
                n(400),
                200,
                move |t, i| {
                    let (client, token, url) = (client.clone(), token.clone(), url.clone());
                    let records: Vec<Value> = (0..200)
                        .map(|j| {
                            json!({
                                "attributes": {"type": "Opportunity"},
                                "dealbridge_id__c": format!("bench-{t}-{}-{j}", i % 10),
                                "Name": format!("Bench deal {t}/{i}/{j}"),
                                "StageName": "Prospecting",
                                "CloseDate": "2026-09-30",
                                "Amount": (i * 200 + j) as f64,
                            })
                        })
                        .collect();
                    let body = json!({"allOrNone": false, "records": records});
                    async move {
                        let v = send(&client, Method::PATCH, &url, &token, Some(&body)).await;
                        assert_eq!(v.as_array().map(Vec::len), Some(200));
                        assert_eq!(v[199]["success"], true, "{}", v[199]);
                    }
                },
            )
            .await,
        );
    }

    // (d) HubSpot: batch upsert of 100 deals and a search page (rate limits switched off).
    let hs_token: Arc<str> = Arc::from(emu.hubspot_credentials.private_app_token.as_str());
    send(
        &client,
        Method::PUT,
        &format!("{hs}/__emulator/rate-limits"),
        "",
        Some(&json!({"ten_secondly": null, "search_per_second": null, "daily": null})),
    )
    .await;
    let prop = send(
        &client,
        Method::POST,
        &format!("{hs}/crm/v3/properties/deals"),
        &hs_token,
        Some(
            &json!({"name": "bench_sf_id", "label": "Bench SF id", "type": "string",
                     "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true}),
        ),
    )
    .await;
    assert_eq!(prop["hasUniqueValue"], true, "{prop}");
    {
        let (client, token) = (client.clone(), hs_token.clone());
        let url = Arc::new(format!("{hs}/crm/v3/objects/deals/batch/upsert"));
        rows.push(
            measure(
                "HS POST deals/batch/upsert, 100 inputs",
                tasks,
                n(400),
                100,
                move |t, i| {
                    let (client, token, url) = (client.clone(), token.clone(), url.clone());
                    let inputs: Vec<Value> = (0..100)
                        .map(|j| {
                            json!({
                                "idProperty": "bench_sf_id",
                                "id": format!("sf-{t}-{}-{j}", i % 10),
                                "properties": {
                                    "dealname": format!("Bench deal {t}/{i}/{j}"),
                                    "amount": format!("{}", i * 100 + j),
                                    "pipeline": "default",
                                    "dealstage": "appointmentscheduled",
                                },
                            })
                        })
                        .collect();
                    let body = json!({"inputs": inputs});
                    async move {
                        let v = send(&client, Method::POST, &url, &token, Some(&body)).await;
                        assert_eq!(v["results"].as_array().map(Vec::len), Some(100), "{v}");
                    }
                },
            )
            .await,
        );
    }
    {
        let (client, token) = (client.clone(), hs_token.clone());
        let url = Arc::new(format!("{hs}/crm/v3/objects/deals/search"));
        let body = Arc::new(json!({
            "filterGroups": [{"filters": [{"propertyName": "amount", "operator": "GTE", "value": "0"}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["dealname", "amount", "dealstage", "pipeline", "closedate", "hs_lastmodifieddate", "bench_sf_id"],
            "limit": 100,
        }));
        rows.push(
            measure(
                "HS POST deals/search, 100 of ~8k by hs_lastmodifieddate",
                tasks,
                n(2_000),
                100,
                move |_, _| {
                    let (client, token, url, body) =
                        (client.clone(), token.clone(), url.clone(), body.clone());
                    async move {
                        let v = send(&client, Method::POST, &url, &token, Some(&body)).await;
                        assert_eq!(v["results"].as_array().map(Vec::len), Some(100), "{v}");
                    }
                },
            )
            .await,
        );
    }

    print_table(&rows);
    emu.shutdown().await.expect("shutdown");
}
