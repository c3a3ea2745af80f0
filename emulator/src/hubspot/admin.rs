//! The HubSpot emulator's own control routes under `/__emulator/`: seed,
//! reset, snapshot export (optionally written to a file) and import, rate-limit
//! settings, the token, and webhook delivery (`/__emulator/webhooks`: counters,
//! retry settings, pause). Fault profiles and request accounting come from `control`.
//!
//! A reset, seed or snapshot load keeps the app's webhook settings and
//! subscriptions (they are app settings, not portal data) and discards the
//! events still queued.
//!
//! These routes are never authenticated, counted, delayed or rate limited.
//! Errors are `{"error": "..."}` with a 400, like the shared control routes.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use super::HubSpot;
use super::ratelimit::RateLimitSettings;
use super::schema::ObjectType;
use crate::Seed;

/// Largest snapshot body `PUT /__emulator/snapshot` takes (a 100,000-deal portal is ~100 MB).
const SNAPSHOT_BODY_LIMIT: usize = 1 << 30;

fn control_error(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.to_string()})),
    )
        .into_response()
}

fn counts(hs: &HubSpot) -> Value {
    hs.read(|s| {
        let mut m = serde_json::Map::new();
        for ot in ObjectType::ALL {
            m.insert(
                ot.plural().into(),
                json!(
                    s.table(ot)
                        .records()
                        .values()
                        .filter(|r| !r.archived)
                        .count()
                ),
            );
        }
        m.insert("owners".into(), json!(s.owners.len()));
        m.insert("pipelines".into(), json!(s.pipelines.len()));
        Value::Object(m)
    })
}

/// The routes (merged into [`HubSpot::router`]).
pub fn routes(hs: HubSpot) -> Router {
    Router::new()
        .route("/__emulator/reset", post(reset))
        .route("/__emulator/seed", post(seed))
        .route(
            "/__emulator/snapshot",
            get(snapshot)
                .put(load_snapshot)
                .layer(DefaultBodyLimit::max(SNAPSHOT_BODY_LIMIT)),
        )
        .route("/__emulator/rate-limits", get(get_limits).put(put_limits))
        .route("/__emulator/token", get(token))
        .route("/__emulator/webhooks", get(get_webhooks).put(put_webhooks))
        .with_state(hs)
}

/// `POST /__emulator/reset`: back to the current seed's portal; rate windows restart.
async fn reset(State(hs): State<HubSpot>) -> Response {
    let seed = *hs.inner.seed.lock();
    hs.reseed(&seed);
    hs.inner.limits.set(hs.inner.limits.settings());
    Json(json!({"seed": seed.to_string(), "counts": counts(&hs)})).into_response()
}

/// `POST /__emulator/seed` `{"seed": "demo" | "empty" | 42}`.
async fn seed(State(hs): State<HubSpot>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return control_error(format_args!("invalid JSON: {e}")),
    };
    let seed: Result<Seed, String> = match v.get("seed") {
        Some(Value::String(s)) => s.parse::<Seed>().map_err(|e| e.to_string()),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Seed::Number)
            .ok_or_else(|| format!("invalid seed {n}")),
        _ => Err("the body needs \"seed\": \"demo\", \"empty\" or a non-negative number".into()),
    };
    match seed {
        Ok(seed) => {
            hs.reseed(&seed);
            Json(json!({"seed": seed.to_string(), "counts": counts(&hs)})).into_response()
        }
        Err(e) => control_error(e),
    }
}

/// `GET /__emulator/snapshot[?path=/file.json]`: all state as JSON; with `path`, also written there.
async fn snapshot(
    State(hs): State<HubSpot>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let path = match query {
        Ok(Query(q)) => q
            .into_iter()
            .rev()
            .find(|(k, _)| k == "path")
            .map(|(_, v)| v),
        Err(e) => return control_error(e.body_text()),
    };
    let snap = hs.snapshot();
    if let Some(path) = path {
        let text = match serde_json::to_vec_pretty(&snap) {
            Ok(t) => t,
            Err(e) => return control_error(format_args!("could not serialize the snapshot: {e}")),
        };
        if let Err(e) = tokio::fs::write(&path, &text).await {
            return control_error(format_args!("could not write {path}: {e}"));
        }
    }
    Json(snap).into_response()
}

/// `PUT /__emulator/snapshot[?path=/file.json]`: replaces the portal with an
/// exported snapshot, sent as the body or read from `path`.
async fn load_snapshot(
    State(hs): State<HubSpot>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Bytes,
) -> Response {
    let path = match query {
        Ok(Query(q)) => q
            .into_iter()
            .rev()
            .find(|(k, _)| k == "path")
            .map(|(_, v)| v),
        Err(e) => return control_error(e.body_text()),
    };
    let bytes = match path {
        Some(path) => match tokio::fs::read(&path).await {
            Ok(b) => Bytes::from(b),
            Err(e) => return control_error(format_args!("could not read {path}: {e}")),
        },
        None => body,
    };
    let snap: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return control_error(format_args!("invalid JSON: {e}")),
    };
    match hs.load_snapshot(&snap) {
        Ok(()) => Json(json!({"loaded": true, "counts": counts(&hs)})).into_response(),
        Err(e) => control_error(e),
    }
}

async fn get_limits(State(hs): State<HubSpot>) -> Response {
    Json(hs.inner.limits.settings()).into_response()
}

/// `PUT /__emulator/rate-limits` `{"ten_secondly": 190|null, "interval_ms": 10000, "search_per_second": 5|null, "daily": N|null}`.
async fn put_limits(State(hs): State<HubSpot>, body: Bytes) -> Response {
    let settings: RateLimitSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return control_error(format_args!("invalid rate-limit settings: {e}")),
    };
    if settings.interval_ms == 0
        || settings.ten_secondly == Some(0)
        || settings.search_per_second == Some(0)
        || settings.daily == Some(0)
    {
        return control_error(
            "limits must be at least 1 (use null to switch one off) and interval_ms must be positive",
        );
    }
    hs.set_rate_limits(settings.clone());
    Json(settings).into_response()
}

async fn token(State(hs): State<HubSpot>) -> Response {
    Json(json!({"token": hs.token()})).into_response()
}

/// `GET /__emulator/webhooks`: `{"queued","inFlight","delivered","failed","retries","discarded","lastError"}`.
async fn get_webhooks(State(hs): State<HubSpot>) -> Response {
    Json(hs.webhook_stats()).into_response()
}

/// Delivery settings as `PUT /__emulator/webhooks` takes them (each optional).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeliveryChange {
    retry_initial_ms: Option<u64>,
    max_retries: Option<u32>,
    paused: Option<bool>,
    timeout_ms: Option<u64>,
    max_queued: Option<usize>,
}

/// `PUT /__emulator/webhooks` `{"retryInitialMs", "maxRetries", "paused", "timeoutMs", "maxQueued"}`
/// (any subset): answers the resulting delivery settings.
async fn put_webhooks(State(hs): State<HubSpot>, body: Bytes) -> Response {
    let change: DeliveryChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return control_error(format_args!("invalid webhook delivery settings: {e}")),
    };
    if change.timeout_ms == Some(0) || change.max_queued == Some(0) {
        return control_error("timeoutMs and maxQueued must be at least 1");
    }
    let mut options = hs.webhooks().options();
    if let Some(v) = change.retry_initial_ms {
        options.retry_initial_ms = v;
    }
    if let Some(v) = change.max_retries {
        options.max_retries = v;
    }
    if let Some(v) = change.paused {
        options.paused = v;
    }
    if let Some(v) = change.timeout_ms {
        options.timeout_ms = v;
    }
    if let Some(v) = change.max_queued {
        options.max_queued = v;
    }
    hs.set_webhook_delivery(options.clone());
    Json(options).into_response()
}
