//! The HubSpot webhook receiver over real HTTP: signed deliveries are stored (the app's
//! own events are not), one event that cannot be read costs only itself, refusals store
//! nothing, a redelivery adds nothing, and a store failure answers 503 so HubSpot
//! retries.

use std::sync::Arc;

use dealbridge::crm::Secret;
use dealbridge::crm::hubspot::sign_v3;
use dealbridge::store::{self, Store, TenantId};
use dealbridge::sync::webhook_receiver::{
    HOOK_PATH, MAX_BODY_BYTES, WebhookReceiver, WebhookReceiverConfig,
};
use futures_util::FutureExt;
use serde_json::{Value, json};

const APP_ID: u64 = 54321;
const SECRET: &str = "the-client-secret";

struct Served {
    url: String,
    store: Arc<dyn Store>,
    tenant: TenantId,
    receiver: WebhookReceiver,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A receiver on a free local port over a fresh SQLite store; `tenant_exists: false`
/// makes every store write fail (the tenant's rows reference it).
async fn serve(tenant_exists: bool) -> Served {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = store::open(&url).await.unwrap();
    let tenant = TenantId::new("hooks").unwrap();
    if tenant_exists {
        store.create_tenant(&tenant, "hooks", 0).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}{HOOK_PATH}", listener.local_addr().unwrap());
    let receiver = WebhookReceiver::new(WebhookReceiverConfig {
        store: store.clone(),
        tenant: tenant.clone(),
        client_secret: Secret::new(SECRET),
        app_id: APP_ID,
        portal_id: Some(62515),
        public_url: public_url.clone(),
    });
    let router = receiver.clone().router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Served {
        url: public_url,
        store,
        tenant,
        receiver,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn event(event_id: u64, object_id: u64, source: &str, source_id: &str) -> Value {
    json!({
        "eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": APP_ID,
        "occurredAt": 1_700_000_000_000u64 + event_id, "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0, "objectId": object_id, "changeSource": source, "sourceId": source_id,
        "changeFlag": "UPDATED", "propertyName": "amount", "propertyValue": "10"
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Served {
    /// Posts `body` signed with `secret` at `timestamp`, as HubSpot would.
    async fn post_signed(&self, body: &[u8], secret: &str, timestamp: i64) -> (u16, Value) {
        let ts = timestamp.to_string();
        let sig = sign_v3(&Secret::new(secret), "POST", &self.url, body, &ts);
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-HubSpot-Signature-v3", sig)
            .header("X-HubSpot-Request-Timestamp", ts)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn pending(&self) -> u64 {
        self.store
            .pending_hubspot_change_count(&self.tenant)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_signed_delivery_is_stored_without_the_apps_own_events() {
    let s = serve(true).await;
    let arrived = s.receiver.changes_arrived();
    let body = serde_json::to_vec(&json!([
        event(1, 100, "CRM_UI", "userId:7"),
        event(2, 200, "INTEGRATION", &APP_ID.to_string()),
        event(3, 300, "INTEGRATION", "999"),
        {"eventId": 4, "subscriptionType": "deal.associationChange", "fromObjectId": 1, "toObjectId": 2}
    ]))
    .unwrap();
    let (status, _) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 204);
    let deals = s
        .store
        .pending_hubspot_changes(&s.tenant, "deals", 10)
        .await
        .unwrap();
    let ids: Vec<&str> = deals.iter().map(|d| d.object_id.as_str()).collect();
    assert_eq!(ids, ["100", "300"], "the app's own write (200) is dropped");
    // The engine is woken: the permit, given before the answer, waits for it.
    assert!(arrived.notified().now_or_never().is_some());

    // A redelivery of the same events stores nothing new, still answers 204, and wakes
    // nobody (the permit is given before the answer, so none now means none at all).
    let (status, _) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 204);
    assert_eq!(s.pending().await, 2);
    assert!(
        arrived.notified().now_or_never().is_none(),
        "nothing new, no wake-up"
    );

    // A delivery of only the app's own events stores nothing and wakes nobody.
    let own =
        serde_json::to_vec(&json!([event(9, 900, "INTEGRATION", &APP_ID.to_string())])).unwrap();
    let (status, _) = s.post_signed(&own, SECRET, now_ms()).await;
    assert_eq!(status, 204);
    assert_eq!(s.pending().await, 2);
    assert!(
        arrived.notified().now_or_never().is_none(),
        "no foreign change, no wake-up"
    );

    // A new foreign change wakes it again.
    let next = serde_json::to_vec(&json!([event(10, 100, "CRM_UI", "userId:7")])).unwrap();
    assert_eq!(s.post_signed(&next, SECRET, now_ms()).await.0, 204);
    assert!(arrived.notified().now_or_never().is_some());
}

#[tokio::test]
async fn one_malformed_event_costs_only_itself() {
    let s = serve(true).await;
    let at = 1_700_000_000_000u64;
    let body = serde_json::to_vec(&json!([
        event(1, 100, "CRM_UI", "userId:7"),
        // Events that cannot be read: no eventId, a non-numeric one, one too large for
        // the store, no objectId, no occurredAt.
        {"subscriptionType": "deal.creation", "objectId": 150, "occurredAt": at, "changeSource": "CRM_UI"},
        {"eventId": "x", "subscriptionType": "deal.creation", "objectId": 151, "occurredAt": at},
        {"eventId": u64::MAX, "subscriptionType": "deal.creation", "objectId": 152, "occurredAt": at},
        {"eventId": 5, "subscriptionType": "deal.creation", "occurredAt": at},
        {"eventId": 6, "subscriptionType": "deal.creation", "objectId": 153},
        event(2, 200, "CRM_UI", "userId:7"),
        // Another event that shares an id with the first one: kept too.
        {"eventId": 1, "subscriptionType": "deal.creation", "objectId": 300, "occurredAt": at,
         "changeSource": "CRM_UI", "sourceId": "userId:7"},
        // A deal deleted, then restored: it is back, to be read again.
        {"eventId": 7, "subscriptionType": "deal.deletion", "objectId": 400, "occurredAt": at,
         "changeSource": "CRM_UI"},
        {"eventId": 8, "subscriptionType": "deal.restore", "objectId": 400, "occurredAt": at + 1,
         "changeSource": "CRM_UI"}
    ]))
    .unwrap();
    let (status, err) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 204, "{err}");
    let deals = s
        .store
        .pending_hubspot_changes(&s.tenant, "deals", 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = deals.iter().map(|d| d.object_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["100", "200", "300", "400"]);
    assert_eq!(s.pending().await, 5);
    let restored = deals.iter().find(|d| d.object_id == "400").unwrap();
    assert!(
        !restored.deleted,
        "a restore is not a deletion: {restored:?}"
    );
    // Delivered again, nothing is added.
    assert_eq!(s.post_signed(&body, SECRET, now_ms()).await.0, 204);
    assert_eq!(s.pending().await, 5);
}

#[tokio::test]
async fn refused_deliveries_store_nothing_and_say_why() {
    let s = serve(true).await;
    let body = serde_json::to_vec(&json!([event(1, 100, "CRM_UI", "userId:7")])).unwrap();

    let (status, err) = s.post_signed(&body, "another-secret", now_ms()).await;
    assert_eq!(status, 401);
    assert!(
        err["error"].as_str().unwrap().contains("signature"),
        "{err}"
    );

    let stale = now_ms() - 6 * 60 * 1000;
    let (status, err) = s.post_signed(&body, SECRET, stale).await;
    assert_eq!(status, 401);
    assert!(err["error"].as_str().unwrap().contains("old"), "{err}");

    let (status, err) = s
        .post_signed(b"{\"not\":\"a list\"}", SECRET, now_ms())
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("list of webhook events"),
        "{err}"
    );

    let unsigned = s.http.post(&s.url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let err: Value = unsigned.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("missing header"),
        "{err}"
    );

    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, err) = s.post_signed(&huge, SECRET, now_ms()).await;
    assert_eq!(status, 413);
    assert!(err["error"].as_str().unwrap().contains("larger"), "{err}");

    assert_eq!(s.pending().await, 0);
}

#[tokio::test]
async fn a_store_failure_answers_503_so_hubspot_retries() {
    let s = serve(false).await;
    let body = serde_json::to_vec(&json!([event(1, 100, "CRM_UI", "userId:7")])).unwrap();
    let (status, err) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"].is_string(), "{err}");
    // Once the store can take it, the retried delivery is stored.
    s.store.create_tenant(&s.tenant, "hooks", 0).await.unwrap();
    let (status, _) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 204);
    assert_eq!(s.pending().await, 1);
}

/// An app installed in several portals delivers them all to one URL: the tenant keeps its
/// own portal's events only.
#[tokio::test]
async fn events_of_another_portal_are_dropped() {
    let s = serve(true).await;
    let mut other = event(1, 100, "CRM_UI", "userId:7");
    other["portalId"] = json!(99);
    let body = serde_json::to_vec(&json!([other, event(2, 200, "CRM_UI", "userId:7")])).unwrap();
    let (status, _) = s.post_signed(&body, SECRET, now_ms()).await;
    assert_eq!(status, 204);
    let deals = s
        .store
        .pending_hubspot_changes(&s.tenant, "deals", 10)
        .await
        .unwrap();
    let ids: Vec<&str> = deals.iter().map(|d| d.object_id.as_str()).collect();
    assert_eq!(ids, ["200"]);
}

/// The feed proves itself with the app's own creations coming back, and a refused
/// delivery (here one signed with another secret) withdraws that proof.
#[tokio::test]
async fn own_creations_prove_the_feed_until_a_delivery_is_refused() {
    let s = serve(true).await;
    let health = s.receiver.health();
    let creation = |id: u64, at: u64| {
        json!({"eventId": id, "subscriptionId": 7, "portalId": 62515, "appId": APP_ID,
            "occurredAt": at, "subscriptionType": "deal.creation", "attemptNumber": 0,
            "objectId": id, "changeSource": "INTEGRATION", "sourceId": APP_ID.to_string(),
            "changeFlag": "CREATED"})
    };
    let mark = health.mark("deals");
    let wait = std::time::Duration::from_millis(200);
    // Nothing created yet: nothing proven.
    assert_eq!(health.proven_since("deals", mark, 2, wait).await, None);
    let body = serde_json::to_vec(&json!([
        creation(5, 1_700_000_000_500),
        creation(6, 1_700_000_000_100)
    ]))
    .unwrap();
    assert_eq!(s.post_signed(&body, SECRET, now_ms()).await.0, 204);
    // Both came back: proven from the earlier one; the own events were not stored.
    assert_eq!(
        health.proven_since("deals", mark, 2, wait).await,
        Some(1_700_000_000_100)
    );
    assert_eq!(s.pending().await, 0);
    // Another object type is not proven by deals.
    let companies = health.mark("companies");
    assert_eq!(
        health.proven_since("companies", companies, 1, wait).await,
        None
    );
    // A refused delivery: no longer proven for a window that was open then.
    assert_eq!(
        s.post_signed(&body, "another secret", now_ms()).await.0,
        401
    );
    assert_eq!(health.proven_since("deals", mark, 2, wait).await, None);
}
