//! HTTP tests of the HubSpot emulator's webhooks: the developer Webhooks v3
//! API (settings, subscriptions, their validation and envelopes), the
//! private-app token information route, and event deliveries to a receiver
//! in this test that checks HubSpot's v3 signature itself.

mod hubspot_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use dealbridge_emulator::Seed;
use dealbridge_emulator::hubspot::APP_ID;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use hubspot_support::{Hs, is_iso, start};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        serde_json::from_slice::<Vec<Value>>(&self.body).expect("a JSON array of events")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {name} missing"))
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    /// Requests still to answer with a failure.
    fail_next: AtomicUsize,
    /// The failure's status (500 when 0); a 429 comes with `Retry-After: 0`.
    fail_status: AtomicU16,
}

/// A local webhook target.
struct Receiver {
    state: Arc<ReceiverState>,
    /// The target URL as configured (with a percent-encoded comma in its query).
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        async fn hook(
            State(state): State<Arc<ReceiverState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, HeaderMap) {
            state.requests.lock().push(Received { headers, body });
            let failing = state
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !failing {
                return (StatusCode::NO_CONTENT, HeaderMap::new());
            }
            let status = match state.fail_status.load(Ordering::SeqCst) {
                0 => StatusCode::INTERNAL_SERVER_ERROR,
                code => StatusCode::from_u16(code).expect("a valid status"),
            };
            let mut headers = HeaderMap::new();
            if status == StatusCode::TOO_MANY_REQUESTS {
                headers.insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("0"),
                );
            }
            (status, headers)
        }
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/hooks/hubspot", post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            state,
            url: format!("http://{addr}/hooks/hubspot?tags=crm%2Csync"),
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.requests().iter().flat_map(Received::events).collect()
    }
}

/// HubSpot's documented v3 rule, written here independently of the emulator:
/// decode `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B` in the URI, then
/// base64(HMAC-SHA256(secret, method + uri + body + timestamp)).
fn expected_signature(secret: &str, url: &str, body: &[u8], timestamp: &str) -> String {
    let mut uri = url.to_string();
    for (code, c) in [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ] {
        uri = uri.replace(code, c);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(b"POST");
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks headers and signature of every request the receiver got.
fn assert_signed(h: &Hs, receiver: &Receiver) {
    for r in receiver.requests() {
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-hubspot-signature-version"), "v3");
        let timestamp = r.header("x-hubspot-request-timestamp");
        let sent: i64 = timestamp.parse().expect("epoch ms");
        assert!(
            (chrono::Utc::now().timestamp_millis() - sent).abs() < 60_000,
            "{sent}"
        );
        assert_eq!(
            r.header("x-hubspot-signature-v3"),
            expected_signature(&h.hs.client_secret(), &receiver.url, &r.body, timestamp),
            "signature of {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.events().len() <= 100);
    }
}

fn hooks_path(h: &Hs, path: &str) -> String {
    format!(
        "/webhooks/v3/{APP_ID}{path}?hapikey={}",
        h.hs.developer_api_key()
    )
}

async fn dev(h: &Hs, method: Method, path: &str, body: Option<Value>) -> hubspot_support::Reply {
    h.raw(
        method,
        &hooks_path(h, path),
        None,
        body.map(|b| b.to_string()),
    )
    .await
}

/// Sets the target (10 concurrent requests) and returns the ids of new active subscriptions.
async fn subscribe(h: &Hs, target: &str, subscriptions: &[(&str, Option<&str>, bool)]) -> Vec<u64> {
    let r = dev(
        h,
        Method::PUT,
        "/settings",
        Some(json!({"targetUrl": target, "throttling": {"maxConcurrentRequests": 10, "period": "SECONDLY"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut ids = Vec::new();
    for (event_type, property, active) in subscriptions {
        let mut body = json!({"eventType": event_type, "active": active});
        if let Some(p) = property {
            body["propertyName"] = json!(p);
        }
        let r = dev(h, Method::POST, "/subscriptions", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().parse().unwrap());
    }
    ids
}

fn deal_inputs(n: usize, from: usize) -> Value {
    let inputs: Vec<Value> = (from..from + n)
        .map(|i| json!({"properties": {"dealname": format!("Deal {i}"), "amount": "10"}}))
        .collect();
    json!({ "inputs": inputs })
}

#[tokio::test]
async fn settings_and_subscriptions_follow_the_webhooks_v3_api() {
    let h = start(Seed::Empty).await;
    // Authentication: the developer API key in `hapikey`.
    let settings = format!("/webhooks/v3/{APP_ID}/settings");
    h.raw(Method::GET, &settings, None, None)
        .await
        .assert_error(401, "INVALID_AUTHENTICATION");
    h.raw(Method::GET, &format!("{settings}?hapikey=nope"), None, None)
        .await
        .assert_error(401, "INVALID_AUTHENTICATION");
    // The private-app token is not a developer key.
    h.raw(Method::GET, &settings, Some(&h.token), None)
        .await
        .assert_error(401, "INVALID_AUTHENTICATION");
    h.raw(
        Method::GET,
        &format!(
            "/webhooks/v3/{}/settings?hapikey={}",
            APP_ID + 1,
            h.hs.developer_api_key()
        ),
        None,
        None,
    )
    .await
    .assert_error(404, "OBJECT_NOT_FOUND");
    dev(&h, Method::GET, "/settings", None)
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");

    // Settings: validation, then create, read, replace.
    let throttling = json!({"maxConcurrentRequests": 10, "period": "SECONDLY"});
    for bad in [
        json!({"targetUrl": "ftp://example.com/hook", "throttling": throttling}),
        json!({"targetUrl": "/relative/hook", "throttling": throttling}),
        json!({"throttling": throttling}),
        json!({"targetUrl": "https://example.com/hook"}),
        json!({"targetUrl": "https://example.com/hook", "throttling": {"maxConcurrentRequests": 0, "period": "SECONDLY"}}),
        json!({"targetUrl": "https://example.com/hook", "throttling": {"maxConcurrentRequests": 5, "period": "HOURLY"}}),
    ] {
        dev(&h, Method::PUT, "/settings", Some(bad))
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }
    let r = dev(
        &h,
        Method::PUT,
        "/settings",
        Some(json!({"targetUrl": "https://example.com/hook", "throttling": throttling})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["targetUrl"], "https://example.com/hook");
    assert_eq!(r.body["throttling"], throttling);
    assert!(
        is_iso(&r.body["createdAt"]) && is_iso(&r.body["updatedAt"]),
        "{}",
        r.body
    );
    let created_at = r.body["createdAt"].clone();
    let r = dev(
        &h,
        Method::PUT,
        "/settings",
        Some(json!({"targetUrl": "http://example.com/other", "throttling": {"maxConcurrentRequests": 3}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = dev(&h, Method::GET, "/settings", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["targetUrl"], "http://example.com/other");
    // `period` is optional (current HubSpot documents only maxConcurrentRequests).
    assert_eq!(r.body["throttling"], json!({"maxConcurrentRequests": 3}));
    assert_eq!(r.body["createdAt"], created_at);

    // Subscriptions: validation.
    for (bad, why) in [
        (
            json!({"eventType": "deal.propertyChange"}),
            "no propertyName",
        ),
        (
            json!({"eventType": "deal.propertyChange", "propertyName": "no_such_property"}),
            "unknown property",
        ),
        (
            json!({"eventType": "company.propertyChange", "propertyName": "dealname"}),
            "a deal property on companies",
        ),
        (json!({"eventType": "deal.exploded"}), "unknown event type"),
        (
            json!({"eventType": "ticket.creation"}),
            "an object the emulator lacks",
        ),
        (json!({"active": true}), "no eventType"),
    ] {
        let r = dev(&h, Method::POST, "/subscriptions", Some(bad)).await;
        assert_eq!(r.status.as_u16(), 400, "{why}: {}", r.body);
        r.assert_error(400, "VALIDATION_ERROR");
    }
    let r = dev(
        &h,
        Method::POST,
        "/subscriptions",
        Some(json!({"eventType": "deal.creation", "active": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let creation = r.body.clone();
    assert!(
        creation["id"]
            .as_str()
            .is_some_and(|id| id.parse::<u64>().is_ok())
    );
    assert_eq!(creation["eventType"], "deal.creation");
    assert_eq!(creation["active"], true);
    assert!(creation.get("propertyName").is_none(), "{creation}");
    assert!(is_iso(&creation["createdAt"]) && is_iso(&creation["updatedAt"]));
    dev(
        &h,
        Method::POST,
        "/subscriptions",
        Some(json!({"eventType": "deal.creation"})),
    )
    .await
    .assert_error(409, "CONFLICT");
    let r = dev(
        &h,
        Method::POST,
        "/subscriptions",
        Some(json!({"eventType": "deal.propertyChange", "propertyName": "amount"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["active"], false, "inactive unless asked: {}", r.body);
    assert_eq!(r.body["propertyName"], "amount");
    let amount_id = r.body["id"].as_str().unwrap().to_string();

    let r = dev(&h, Method::GET, "/subscriptions", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let listed = r.body["results"].as_array().expect("results");
    assert_eq!(listed.len(), 2, "{}", r.body);
    assert_eq!(listed[0], creation);

    let r = dev(
        &h,
        Method::PATCH,
        &format!("/subscriptions/{amount_id}"),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], true);
    let r = dev(
        &h,
        Method::GET,
        &format!("/subscriptions/{amount_id}"),
        None,
    )
    .await;
    assert_eq!(r.body["active"], true);

    let r = dev(
        &h,
        Method::POST,
        "/subscriptions/batch/update",
        Some(json!({"inputs": [{"id": amount_id.parse::<u64>().unwrap(), "active": false}, {"id": 1, "active": true}]})),
    )
    .await;
    assert_eq!(r.status.as_u16(), 207, "{}", r.body);
    assert_eq!(r.body["status"], "COMPLETE");
    assert_eq!(r.body["results"][0]["id"], json!(amount_id));
    assert_eq!(r.body["results"][0]["active"], false);
    assert_eq!(r.body["numErrors"], 1);
    assert_eq!(r.body["errors"][0]["category"], "OBJECT_NOT_FOUND");

    let r = dev(
        &h,
        Method::DELETE,
        &format!("/subscriptions/{amount_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    dev(
        &h,
        Method::GET,
        &format!("/subscriptions/{amount_id}"),
        None,
    )
    .await
    .assert_error(404, "OBJECT_NOT_FOUND");
    dev(
        &h,
        Method::DELETE,
        &format!("/subscriptions/{amount_id}"),
        None,
    )
    .await
    .assert_error(404, "OBJECT_NOT_FOUND");

    let r = dev(&h, Method::DELETE, "/settings", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    dev(&h, Method::GET, "/settings", None)
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");

    // Counted like every API route, under their own routes.
    let r = h.control(Method::GET, "/__emulator/requests", None).await;
    let calls = r.body["calls"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["route"] == "/webhooks/v3/{app_id}/settings" && c["method"] == "PUT"),
        "{}",
        r.body
    );
    assert!(
        calls
            .iter()
            .any(|c| c["route"] == "/webhooks/v3/{app_id}/subscriptions" && c["status"] == 201),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn access_token_info_describes_the_private_app() {
    let h = start(Seed::Demo).await;
    let path = "/oauth/v2/private-apps/get/access-token-info";
    let r = h
        .raw(
            Method::POST,
            path,
            None,
            Some(json!({"tokenKey": h.token}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["appId"], APP_ID);
    assert_eq!(r.body["hubId"], h.hs.portal_id());
    assert!(r.body["userId"].as_u64().is_some(), "{}", r.body);
    let scopes = r.body["scopes"].as_array().expect("scopes");
    assert!(
        scopes.iter().any(|s| s == "crm.objects.deals.write"),
        "{}",
        r.body
    );
    let keys: BTreeSet<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["appId", "hubId", "scopes", "userId"]));
    for token in [h.hs.user_token(), "pat-na1-unknown".to_string()] {
        h.raw(
            Method::POST,
            path,
            None,
            Some(json!({"tokenKey": token}).to_string()),
        )
        .await
        .assert_error(401, "INVALID_AUTHENTICATION");
    }
    h.raw(Method::POST, path, None, Some("{}".into()))
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn batch_creates_arrive_signed_in_requests_of_at_most_100() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    let subs = subscribe(
        &h,
        &receiver.url,
        &[
            ("deal.creation", None, true),
            ("deal.propertyChange", Some("amount"), false),
            ("contact.creation", None, true),
        ],
    )
    .await;
    let creation_sub = subs[0];
    // Held while the 250 deals are written, so the queue is sent as 100, 100, 50.
    h.control(
        Method::PUT,
        "/__emulator/webhooks",
        Some(json!({"paused": true})),
    )
    .await;
    let mut ids = BTreeSet::new();
    for (n, from) in [(100, 0), (100, 100), (50, 200)] {
        let r = h
            .post("/crm/v3/objects/deals/batch/create", deal_inputs(n, from))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        for rec in r.body["results"].as_array().unwrap() {
            ids.insert(rec["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
    }
    let stats = h.hs.webhook_stats();
    assert_eq!(stats.queued, 250, "{stats:?}");
    assert!(!h.hs.wait_webhooks_idle(Duration::from_millis(50)).await);
    h.control(
        Method::PUT,
        "/__emulator/webhooks",
        Some(json!({"paused": false})),
    )
    .await;
    assert!(
        h.hs.wait_webhooks_idle(WAIT).await,
        "{:?}",
        h.hs.webhook_stats()
    );

    let requests = receiver.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.events().len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![50, 100, 100], "{sizes:?}");
    assert_signed(&h, &receiver);

    let mut events = receiver.events();
    events.sort_by_key(|e| e["eventId"].as_u64());
    let event_ids: BTreeSet<u64> = events
        .iter()
        .map(|e| e["eventId"].as_u64().unwrap())
        .collect();
    assert_eq!(event_ids.len(), 250, "event ids are unique");
    let objects: BTreeSet<u64> = events
        .iter()
        .map(|e| e["objectId"].as_u64().unwrap())
        .collect();
    assert_eq!(objects, ids);
    // Events follow the order of the writes.
    let in_event_order: Vec<u64> = events
        .iter()
        .map(|e| e["objectId"].as_u64().unwrap())
        .collect();
    assert_eq!(in_event_order, ids.iter().copied().collect::<Vec<_>>());
    let first = &events[0];
    let keys: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "eventId",
            "subscriptionId",
            "portalId",
            "appId",
            "occurredAt",
            "subscriptionType",
            "attemptNumber",
            "objectId",
            "changeFlag",
            "changeSource",
            "sourceId",
        ])
    );
    for e in &events {
        assert_eq!(e["subscriptionType"], "deal.creation");
        assert_eq!(e["subscriptionId"], creation_sub);
        assert_eq!(e["portalId"], h.hs.portal_id());
        assert_eq!(e["appId"], APP_ID);
        assert_eq!(e["attemptNumber"], 0);
        assert_eq!(e["changeFlag"], "CREATED");
        assert_eq!(e["changeSource"], "INTEGRATION");
        assert_eq!(e["sourceId"], APP_ID.to_string());
    }
    let id = first["objectId"].as_u64().unwrap().to_string();
    let props = h.props_of("deals", &id, "hs_lastmodifieddate").await;
    let modified =
        chrono::DateTime::parse_from_rfc3339(props["hs_lastmodifieddate"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    assert_eq!(first["occurredAt"], modified);
    let stats = h.hs.webhook_stats();
    assert_eq!(
        (
            stats.delivered,
            stats.failed,
            stats.retries,
            stats.queued,
            stats.in_flight
        ),
        (250, 0, 0, 0, 0)
    );

    // Property changes: only subscribed, active properties, with their new values.
    let r = dev(
        &h,
        Method::POST,
        "/subscriptions",
        Some(
            json!({"eventType": "deal.propertyChange", "propertyName": "dealname", "active": true}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dealname_sub: u64 = r.body["id"].as_str().unwrap().parse().unwrap();
    let before = receiver.events().len();
    let r = h
        .patch(
            &format!("/crm/v3/objects/deals/{id}"),
            json!({"properties": {"dealname": "Renamed", "amount": "99"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Writing the same value again changes nothing: no event.
    h.patch(
        &format!("/crm/v3/objects/deals/{id}"),
        json!({"properties": {"dealname": "Renamed"}}),
    )
    .await;
    let created = h
        .create("deals", json!({"dealname": "Fresh", "amount": "5"}))
        .await;
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let mut new: Vec<Value> = receiver.events().split_off(before);
    new.sort_by_key(|e| e["eventId"].as_u64());
    let summary: Vec<(String, String, Value)> = new
        .iter()
        .map(|e| {
            (
                e["subscriptionType"].as_str().unwrap().to_string(),
                e["objectId"].to_string(),
                e.get("propertyValue").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("deal.propertyChange".into(), id.clone(), json!("Renamed")),
            ("deal.creation".into(), created.clone(), Value::Null),
            (
                "deal.propertyChange".into(),
                created.clone(),
                json!("Fresh")
            ),
        ]
    );
    assert_eq!(new[0]["propertyName"], "dealname");
    assert_eq!(new[0]["subscriptionId"], dealname_sub);
    assert!(new[0].get("changeFlag").is_none());
    assert_signed(&h, &receiver);
}

#[tokio::test]
async fn changes_are_attributed_to_the_token_that_made_them() {
    let h = start(Seed::Demo).await;
    let receiver = Receiver::start().await;
    subscribe(
        &h,
        &receiver.url,
        &[
            ("company.creation", None, true),
            ("company.propertyChange", Some("name"), true),
        ],
    )
    .await;
    let user = h.hs.user_token();
    let r = h
        .raw(
            Method::POST,
            "/crm/v3/objects/companies",
            Some(&user),
            Some(json!({"properties": {"name": "Made in the UI"}}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .patch(
            &format!("/crm/v3/objects/companies/{id}"),
            json!({"properties": {"name": "Renamed by the app"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let mut events = receiver.events();
    events.sort_by_key(|e| e["eventId"].as_u64());
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["subscriptionType"].as_str().unwrap(),
                e["changeSource"].as_str().unwrap(),
                e["sourceId"].as_str().unwrap(),
            )
        })
        .collect();
    let ui = "userId:9100001";
    let app = APP_ID.to_string();
    assert_eq!(
        seen,
        vec![
            ("company.creation", "CRM_UI", ui),
            ("company.propertyChange", "CRM_UI", ui),
            ("company.propertyChange", "INTEGRATION", app.as_str()),
        ]
    );
    // The user token is a CRM token like the app's: counted the same way.
    let r = h.control(Method::GET, "/__emulator/requests", None).await;
    assert!(
        r.body["calls"].as_array().unwrap().iter().any(|c| {
            c["route"] == "/crm/v3/objects/{object_type}"
                && c["method"] == "POST"
                && c["status"] == 201
        }),
        "{}",
        r.body
    );
    assert_signed(&h, &receiver);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_next_attempt_number() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    subscribe(&h, &receiver.url, &[("contact.creation", None, true)]).await;
    let r = h
        .control(
            Method::PUT,
            "/__emulator/webhooks",
            Some(json!({"retryInitialMs": 20, "maxRetries": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["retryInitialMs"], 20);
    receiver.state.fail_next.store(1, Ordering::SeqCst);
    let contact = h
        .create("contacts", json!({"email": "retry@example.com"}))
        .await;
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (requests[0].events(), requests[1].events());
    assert_eq!(first[0]["attemptNumber"], 0);
    assert_eq!(second[0]["attemptNumber"], 1);
    assert_eq!(first[0]["eventId"], second[0]["eventId"]);
    assert_eq!(second[0]["objectId"].to_string(), contact);
    assert_signed(&h, &receiver);
    let r = h.control(Method::GET, "/__emulator/webhooks", None).await;
    assert_eq!(r.body["delivered"], 1, "{}", r.body);
    assert_eq!(r.body["retries"], 1);
    assert_eq!(r.body["failed"], 0);
    assert_eq!(r.body["queued"], 0);
    assert_eq!(r.body["inFlight"], 0);
    assert!(
        r.body["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{}",
        r.body
    );

    // Out of retries: 1 + maxRetries requests, then the events count as failed.
    receiver.state.fail_next.store(100, Ordering::SeqCst);
    h.create("contacts", json!({"email": "lost@example.com"}))
        .await;
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let attempts: Vec<Value> = receiver.requests()[2..]
        .iter()
        .map(|r| r.events()[0]["attemptNumber"].clone())
        .collect();
    assert_eq!(attempts, vec![json!(0), json!(1), json!(2)]);
    let stats = h.hs.webhook_stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.retries),
        (1, 1, 3),
        "{stats:?}"
    );
}

#[tokio::test]
async fn deliveries_refused_with_400_401_403_404_or_405_are_dropped_not_retried() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    subscribe(&h, &receiver.url, &[("contact.creation", None, true)]).await;
    let r = h
        .control(
            Method::PUT,
            "/__emulator/webhooks",
            Some(json!({"retryInitialMs": 20, "maxRetries": 3})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refused = [400u16, 401, 403, 404, 405];
    for (i, code) in refused.into_iter().enumerate() {
        receiver.state.fail_status.store(code, Ordering::SeqCst);
        receiver.state.fail_next.store(1, Ordering::SeqCst);
        h.create(
            "contacts",
            json!({"email": format!("refused{i}@example.com")}),
        )
        .await;
        assert!(h.hs.wait_webhooks_idle(WAIT).await);
        assert_eq!(
            receiver.requests().len(),
            i + 1,
            "{code}: sent once, not again"
        );
        let stats = h.hs.webhook_stats();
        assert_eq!(
            (
                stats.delivered,
                stats.failed,
                stats.retries,
                stats.in_flight
            ),
            (0, i as u64 + 1, 0, 0),
            "{code}: {stats:?}"
        );
        assert!(
            stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(&code.to_string())),
            "{stats:?}"
        );
    }

    // A 429 (after its Retry-After) and a 5xx are retried, and then delivered.
    for code in [429u16, 503] {
        receiver.state.fail_status.store(code, Ordering::SeqCst);
        receiver.state.fail_next.store(1, Ordering::SeqCst);
        let before = receiver.requests().len();
        h.create(
            "contacts",
            json!({"email": format!("retried{code}@example.com")}),
        )
        .await;
        assert!(h.hs.wait_webhooks_idle(WAIT).await);
        let attempts: Vec<Value> = receiver.requests()[before..]
            .iter()
            .map(|r| r.events()[0]["attemptNumber"].clone())
            .collect();
        assert_eq!(attempts, vec![json!(0), json!(1)], "{code}");
    }
    let stats = h.hs.webhook_stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.retries),
        (2, refused.len() as u64, 2),
        "{stats:?}"
    );
}

#[tokio::test]
async fn archiving_makes_deletion_events() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    let subs = subscribe(&h, &receiver.url, &[("deal.deletion", None, true)]).await;
    let one = h.create("deals", json!({"dealname": "One"})).await;
    let two = h.create("deals", json!({"dealname": "Two"})).await;
    let r = h.delete(&format!("/crm/v3/objects/deals/{one}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Archiving an archived record again is not a change.
    h.delete(&format!("/crm/v3/objects/deals/{one}")).await;
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/archive",
            json!({"inputs": [{"id": two}, {"id": one}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let mut events = receiver.events();
    events.sort_by_key(|e| e["eventId"].as_u64());
    let objects: Vec<String> = events.iter().map(|e| e["objectId"].to_string()).collect();
    assert_eq!(objects, vec![one, two]);
    for e in &events {
        assert_eq!(e["subscriptionType"], "deal.deletion");
        assert_eq!(e["changeFlag"], "DELETED");
        assert_eq!(e["subscriptionId"], subs[0]);
        assert!(
            e["occurredAt"]
                .as_i64()
                .is_some_and(|t| t > 1_700_000_000_000)
        );
    }
    assert_signed(&h, &receiver);
}

#[tokio::test]
async fn control_plane_changes_make_no_events_and_keep_the_app_settings() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    subscribe(
        &h,
        &receiver.url,
        &[
            ("contact.creation", None, true),
            ("company.creation", None, true),
            ("deal.creation", None, true),
            ("deal.deletion", None, true),
        ],
    )
    .await;
    let r = h
        .control(Method::POST, "/__emulator/seed", Some(json!({"seed": 3})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let snapshot = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    h.control(Method::POST, "/__emulator/reset", None).await;
    let r = h
        .control(Method::PUT, "/__emulator/snapshot", Some(snapshot))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(h.hs.webhook_stats().queued, 0);
    // Settings and subscriptions survive: the next API write is the first event.
    assert_eq!(
        dev(&h, Method::GET, "/settings", None).await.status,
        StatusCode::OK
    );
    let r = dev(&h, Method::GET, "/subscriptions", None).await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 4);
    let id = h
        .create("companies", json!({"name": "After the reset"}))
        .await;
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let events = receiver.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["objectId"].to_string(), id);
    let stats = h.hs.webhook_stats();
    assert_eq!((stats.delivered, stats.failed, stats.discarded), (1, 0, 0));
}

#[tokio::test]
async fn without_a_target_url_no_events_are_kept() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    subscribe(&h, &receiver.url, &[("deal.creation", None, true)]).await;
    dev(&h, Method::DELETE, "/settings", None).await;
    h.create("deals", json!({"dealname": "Nobody listens"}))
        .await;
    assert_eq!(h.hs.webhook_stats(), Default::default());
    assert!(h.hs.wait_webhooks_idle(Duration::from_millis(1)).await);
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn upserts_and_batch_updates_make_creation_and_property_change_events() {
    let h = start(Seed::Empty).await;
    let receiver = Receiver::start().await;
    subscribe(
        &h,
        &receiver.url,
        &[
            ("contact.creation", None, true),
            ("contact.propertyChange", Some("firstname"), true),
        ],
    )
    .await;
    let upsert = |first: &str| json!({"inputs": [{"id": "ada@example.com", "idProperty": "email", "properties": {"firstname": first}}]});
    let r = h
        .post("/crm/v3/objects/contacts/batch/upsert", upsert("Ada"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["results"][0]["id"].as_str().unwrap().to_string();
    let r = h
        .post("/crm/v3/objects/contacts/batch/upsert", upsert("Augusta"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [{"id": id, "properties": {"firstname": "Countess", "lastname": "Lovelace"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.hs.wait_webhooks_idle(WAIT).await);
    let mut events = receiver.events();
    events.sort_by_key(|e| e["eventId"].as_u64());
    let seen: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["objectId"].to_string(), id);
            (
                e["subscriptionType"].as_str().unwrap().to_string(),
                e.get("propertyValue").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("contact.creation".to_string(), Value::Null),
            ("contact.propertyChange".to_string(), json!("Ada")),
            ("contact.propertyChange".to_string(), json!("Augusta")),
            ("contact.propertyChange".to_string(), json!("Countess")),
        ]
    );
    assert_signed(&h, &receiver);
}
