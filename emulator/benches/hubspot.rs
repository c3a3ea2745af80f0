//! Throughput of the HubSpot emulator over real HTTP on 127.0.0.1: simple
//! reads, 100-input batch upserts, and search pages (incl. a sorted search
//! over 100,000 deals, and the sync engine's keyset change scan over 120,000
//! deals: range page, steady state, tie phase; EQ/IN lookups by the unique
//! cross-reference property and by id), and the engine's id-order read-back
//! (every page of `modified < until AND id > after AND pipeline IN [..]`,
//! by id, 200 a page) at 10,000 and 120,000 deals. Prints requests/s and the
//! in-process time of one search; bounded in count, stops by itself.
//! Run: `cargo bench -p dealbridge-emulator --bench hubspot`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dealbridge_emulator::Seed;
use dealbridge_emulator::hubspot::HubSpot;
use dealbridge_emulator::hubspot::ratelimit::RateLimitSettings;
use dealbridge_emulator::hubspot::schema::ObjectType;
use dealbridge_emulator::hubspot::store::{Filter, Sort};
use serde_json::{Map, Value, json};

/// The engine's id-order read of a whole window (`scan_id_range_page` in
/// host/src/crm/hubspot/client.rs), in process: every page until the page
/// holds the rest (`total <= page`). Prints the pages, the mean store time
/// per page, and a page at the last quarter of the window measured alone;
/// checks each `total` is the count of what is still to read.
fn id_order_read_back(hs: &HubSpot, label: &str) {
    let m = "hs_lastmodifieddate";
    let until = (dealbridge_emulator::hubspot::now_ms() + 3_600_000).to_string();
    let group = |after: u64| -> Vec<Vec<Filter>> {
        let filters = json!([
            {"propertyName": m, "operator": "LT", "value": until},
            {"propertyName": "hs_object_id", "operator": "GT", "value": after.to_string()},
            {"propertyName": "pipeline", "operator": "IN", "values": ["default"]},
        ]);
        vec![serde_json::from_value(filters).expect("filters")]
    };
    let sorts = [Sort {
        property: "hs_object_id".into(),
        descending: false,
    }];
    let active = hs.read(|s| s.table(ObjectType::Deals).modified_index().len());
    let (mut after, mut pages, mut read) = (0u64, 0usize, 0usize);
    let mut cursors = Vec::new();
    let start = Instant::now();
    loop {
        let (total, ids) = hs.read(|s| {
            s.search(ObjectType::Deals, &group(after), &sorts, None, 0, 200)
                .expect("search")
        });
        assert_eq!(total, active - read, "total counts what is still to read");
        cursors.push(after);
        pages += 1;
        read += ids.len();
        match ids.last() {
            Some(last) if total > ids.len() => after = *last,
            _ => break,
        }
    }
    let took = start.elapsed();
    let late = cursors[cursors.len() * 3 / 4];
    let reps = 50;
    let start = Instant::now();
    for _ in 0..reps {
        hs.read(|s| {
            s.search(ObjectType::Deals, &group(late), &sorts, None, 0, 200)
                .expect("search")
        });
    }
    let per_late = start.elapsed() / reps;
    println!(
        "id-order read-back ({label}): {pages} pages in {took:.2?} ({:.2?} a page); a page 3/4 in: {per_late:.2?}",
        took / pages as u32
    );
}

struct Target {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Sends `total` requests built by `make(i)` with `concurrency` in flight; returns requests/s.
async fn run<F>(t: &Arc<Target>, total: usize, concurrency: usize, make: F) -> (f64, Duration)
where
    F: Fn(&Target, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (t, make, next) = (t.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let resp = make(&t, i)
                    .bearer_auth(&t.token)
                    .send()
                    .await
                    .expect("request");
                let status = resp.status();
                let _ = resp.bytes().await;
                assert!(status.is_success(), "status {status}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let took = start.elapsed();
    (total as f64 / took.as_secs_f64(), took)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let hs = HubSpot::new(&Seed::Empty);
        hs.set_rate_limits(RateLimitSettings::unlimited());
        hs.write(|s| {
            for i in 0..10_000 {
                let mut p = Map::new();
                p.insert("dealname".into(), json!(format!("bench deal {i}")));
                p.insert("amount".into(), json!((i % 1000).to_string()));
                let ch = s.validate(ObjectType::Deals, None, &p).expect("valid");
                s.apply(ObjectType::Deals, None, ch, 1_700_000_000_000 + (i % 500) as i64, &Default::default()).expect("apply");
            }
        });
        id_order_read_back(&hs, "10k deals");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = hs.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let t = Arc::new(Target { base: format!("http://{addr}"), token: hs.token(), http: reqwest::Client::new() });
        let prop = json!({"name": "dealbridge_sf_id", "label": "x", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true});
        t.http.post(format!("{}/crm/v3/properties/deals", t.base)).bearer_auth(&t.token).json(&prop).send().await.expect("property");
        let first = hs.read(|s| *s.table(ObjectType::Deals).records().keys().next().expect("a deal"));

        let (rps, took) = run(&t, 20_000, 64, move |t, i| t.http.get(format!("{}/crm/v3/objects/deals/{}", t.base, first + (i % 1000) as u64))).await;
        println!("simple GET record          : {rps:>9.0} requests/s  (20000 requests in {took:.2?})");

        let (rps, took) = run(&t, 300, 8, |t, i| {
            let inputs: Vec<Value> = (0..100)
                .map(|j| json!({"idProperty": "dealbridge_sf_id", "id": format!("006{:012}", (i * 100 + j) % 20_000), "properties": {"dealname": "upserted", "amount": j.to_string()}}))
                .collect();
            t.http.post(format!("{}/crm/v3/objects/deals/batch/upsert", t.base)).json(&json!({"inputs": inputs}))
        })
        .await;
        println!("batch upsert (100 inputs)  : {rps:>9.0} requests/s  ({:.0} records/s; 300 requests in {took:.2?})", rps * 100.0);

        let search = json!({
            "filterGroups": [{"filters": [{"propertyName": "amount", "operator": "GTE", "value": "100"}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}, {"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "limit": 100
        });
        let body = search.clone();
        let (rps, took) = run(&t, 500, 8, move |t, _| t.http.post(format!("{}/crm/v3/objects/deals/search", t.base)).json(&body)).await;
        println!("search page (~30k deals)   : {rps:>9.0} requests/s  (500 requests in {took:.2?})");

        hs.write(|s| {
            for i in 0..90_000 {
                let mut p = Map::new();
                p.insert("amount".into(), json!((i % 1000).to_string()));
                let ch = s.validate(ObjectType::Deals, None, &p).expect("valid");
                s.apply(ObjectType::Deals, None, ch, 1_700_000_000_000 + (i % 5000) as i64, &Default::default()).expect("apply");
            }
        });
        let body = search.clone();
        let (rps, took) = run(&t, 100, 4, move |t, i| {
            let mut b = body.clone();
            b["after"] = json!(((i % 50) * 100).to_string());
            t.http.post(format!("{}/crm/v3/objects/deals/search", t.base)).json(&b)
        })
        .await;
        println!("sorted search page (100k)  : {rps:>9.0} requests/s  (100 requests in {took:.2?})");
        id_order_read_back(&hs, "120k deals");

        // The sync engine's keyset change scan (host/src/crm/hubspot/client.rs).
        let m = "hs_lastmodifieddate";
        let until = (dealbridge_emulator::hubspot::now_ms() + 3_600_000).to_string();
        let (steady_t, busy_t, busy_first) = hs.read(|s| {
            let idx = s.table(ObjectType::Deals).modified_index();
            let steady = idx.iter().rev().nth(1000).map(|k| k.0).unwrap_or(0);
            let busy = idx.range((1_700_000_000_007, 0)..).next().copied().unwrap_or((0, 0));
            (steady, busy.0, busy.1)
        });
        let props = json!(["dealname", "amount", "dealstage", m]);
        let range = |from: String, extra: Option<Value>| {
            let mut filters = vec![json!({"propertyName": m, "operator": "GTE", "value": from}), json!({"propertyName": m, "operator": "LT", "value": until})];
            filters.extend(extra);
            json!({"filterGroups": [{"filters": filters}], "sorts": [{"propertyName": m, "direction": "ASCENDING"}], "properties": props, "limit": 200})
        };
        let cases = [
            ("keyset first page (120k)  ", range("0".into(), None)),
            ("keyset steady (last 1k)   ", range(steady_t.to_string(), None)),
            ("keyset tie phase (1 ms)   ", json!({"filterGroups": [{"filters": [
                {"propertyName": m, "operator": "EQ", "value": busy_t.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": busy_first.to_string()}]}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "properties": props, "limit": 200})),
            ("keyset + pipeline filter  ", range("0".into(), Some(json!({"propertyName": "pipeline", "operator": "EQ", "value": "default"})))),
            ("sorted search page (120k) ", search.clone()),
            // Non-unique filters and ranges with sorts other than the time.
            ("dealstage EQ by createdate", json!({"filterGroups": [{"filters": [
                {"propertyName": "dealstage", "operator": "EQ", "value": "appointmentscheduled"}]}],
                "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}], "properties": props, "limit": 100})),
            ("createdate range by amount", json!({"filterGroups": [{"filters": [
                {"propertyName": "createdate", "operator": "BETWEEN", "value": "1700000001000", "highValue": "1700000003999"}]}],
                "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}], "properties": props, "limit": 100})),
            // Lookups by the unique cross-reference property and by id.
            ("xref EQ (unique property) ", json!({"filterGroups": [{"filters": [
                {"propertyName": "dealbridge_sf_id", "operator": "EQ", "value": "006000000012345"}]}],
                "sorts": [], "properties": props, "limit": 100})),
            ("xref IN, 100 values       ", json!({"filterGroups": [{"filters": [
                {"propertyName": "dealbridge_sf_id", "operator": "IN", "values": (0..100).map(|k| format!("006{:012}", k * 150)).collect::<Vec<_>>()}]}],
                "sorts": [], "properties": props, "limit": 100})),
            ("hs_object_id IN, 100 ids  ", json!({"filterGroups": [{"filters": [
                {"propertyName": "hs_object_id", "operator": "IN", "values": (0..100).map(|k| (first + k * 997).to_string()).collect::<Vec<_>>()}]}],
                "sorts": [], "properties": props, "limit": 100})),
        ];
        for (name, body) in cases {
            let groups: Vec<Vec<Filter>> = body["filterGroups"].as_array().expect("groups").iter()
                .map(|g| serde_json::from_value(g["filters"].clone()).expect("filters")).collect();
            let sorts: Vec<Sort> = body["sorts"].as_array().expect("sorts").iter()
                .map(|x| Sort { property: x["propertyName"].as_str().expect("name").into(), descending: x["direction"] == "DESCENDING" }).collect();
            let limit = body["limit"].as_u64().expect("limit") as usize;
            let reps = 200;
            let start = Instant::now();
            let mut total = 0;
            for _ in 0..reps {
                total = hs.read(|s| s.search(ObjectType::Deals, &groups, &sorts, None, 0, limit).expect("search").0);
            }
            let per = start.elapsed() / reps;
            let b = body.clone();
            let (rps, took) = run(&t, 2000, 8, move |t, _| t.http.post(format!("{}/crm/v3/objects/deals/search", t.base)).json(&b)).await;
            println!("{name} : {rps:>9.0} requests/s  (2000 requests in {took:.2?}); store search {per:.2?}, total {total}");
        }
    });
}
