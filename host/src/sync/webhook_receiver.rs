//! The HubSpot webhook receiver: the change feed's way in. `POST /hooks/hubspot` takes a
//! delivery, checks its v3 signature against the public URL HubSpot called, reads its
//! events, drops those the app's own API writes made (the sync's writes coming back),
//! and stores the others with [`Store::record_hubspot_changes`] before answering 204, so
//! that HubSpot retries anything not stored (503). The engine reads the stored changes
//! and learns of new ones through [`WebhookReceiver::changes_arrived`].
//!
//! Answers: 204 stored; 400 not a list of events; 401 missing or wrong signature, or a
//! timestamp older than five minutes; 413 a body over 4 MiB; 429 more deliveries at once
//! than it takes (HubSpot retries); 503 the store failed. Every refusal has a short JSON
//! body `{"error": "..."}`.
//!
//! It also keeps the feed's health ([`FeedHealth`]): the app's own creations it verified
//! (the proof that HubSpot delivers to it, which a backfill needs before it leaves out
//! what it wrote) and the deliveries it refused.
//!
//! This module must never store an event of a delivery that did not verify, never answer
//! 2xx before the store committed, and never log a delivery's contents or the secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use crate::crm::Secret;
use crate::crm::hubspot::webhooks::{
    ChangeEvent, ChangeKind, SIGNATURE_V3_HEADER, TIMESTAMP_HEADER, WebhookRejection,
    parse_delivery, verify_signature_v3,
};
use crate::store::{NewHubSpotChange, Store, TenantId};
use crate::telemetry::{self, WebhookOutcome};

/// The path the receiver serves (the public URL must end with it).
pub const HOOK_PATH: &str = "/hooks/hubspot";
/// The largest delivery accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Deliveries handled at once; more are answered 429 (HubSpot retries them), so that a
/// flood cannot hold unbounded bodies in memory.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;

/// What the receiver verified, for the engine to decide how far to trust the feed: per
/// HubSpot object type, the app's own creations it received (each write the sync makes
/// coming back, signed), and the deliveries it refused since it started.
#[derive(Debug, Default)]
pub struct FeedHealth {
    own_creations: std::sync::Mutex<HashMap<String, OwnCreations>>,
    refused: AtomicU64,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct OwnCreations {
    count: u64,
    /// The earliest `occurredAt` (HubSpot's clock) among those since the last mark.
    first_since_mark_ms: Option<i64>,
}

/// Where the feed stood when a backfill of an object type started ([`FeedHealth::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedMark {
    own_creations: u64,
    refused: u64,
}

impl FeedHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnCreations>> {
        self.own_creations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start of a backfill of `object_type`: what was received so far, and the
    /// earliest own creation from here on forgotten.
    pub fn mark(&self, object_type: &str) -> FeedMark {
        let mut m = self.lock();
        let entry = m.entry(object_type.to_string()).or_default();
        entry.first_since_mark_ms = None;
        FeedMark {
            own_creations: entry.count,
            refused: self.refused.load(Ordering::SeqCst),
        }
    }

    /// Waits (up to `wait`) until at least `created` own creations of `object_type` arrived
    /// since `mark` with no delivery refused meanwhile; then the earliest one's time on
    /// HubSpot's clock: every record created from then on by anyone else is in the feed.
    /// `None`: not proven (nothing created, a refusal, or the creations did not all
    /// arrive in time).
    pub async fn proven_since(
        &self,
        object_type: &str,
        mark: FeedMark,
        created: u64,
        wait: Duration,
    ) -> Option<i64> {
        if created == 0 {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.refused.load(Ordering::SeqCst) != mark.refused {
                return None;
            }
            let now = self.lock().get(object_type).copied().unwrap_or_default();
            if now.count.saturating_sub(mark.own_creations) >= created {
                return now.first_since_mark_ms;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Counts the app's own creations among `own` (one delivery's), under one lock, and
    /// wakes a backfill waiting for them.
    fn own_created(&self, own: &[&ChangeEvent]) {
        let mut creations = own
            .iter()
            .filter(|e| e.kind == ChangeKind::Created)
            .peekable();
        if creations.peek().is_none() {
            return;
        }
        {
            let mut m = self.lock();
            for e in creations {
                // Looked up before an owned key is made: a delivery is mostly one type.
                let entry = match m.get_mut(&e.object_type) {
                    Some(entry) => entry,
                    None => m.entry(e.object_type.clone()).or_default(),
                };
                entry.count += 1;
                entry.first_since_mark_ms = Some(
                    entry
                        .first_since_mark_ms
                        .map_or(e.occurred_at_ms, |t| t.min(e.occurred_at_ms)),
                );
            }
        }
        self.changed.notify_waiters();
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// What a receiver is built from.
#[derive(Debug, Clone)]
pub struct WebhookReceiverConfig {
    /// Where received changes go.
    pub store: Arc<dyn Store>,
    /// The tenant they belong to.
    pub tenant: TenantId,
    /// The app's client secret, which signs deliveries.
    pub client_secret: Secret,
    /// The app whose own writes are dropped.
    pub app_id: u64,
    /// The tenant's HubSpot portal (hub id), when known: events that name another portal
    /// (an app installed in several delivers them all to one URL) are dropped.
    pub portal_id: Option<u64>,
    /// The URL HubSpot calls (its target URL, ending in [`HOOK_PATH`]).
    pub public_url: String,
}

/// The receiver of one tenant's HubSpot webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    config: Arc<WebhookReceiverConfig>,
    changes_arrived: Arc<Notify>,
    health: Arc<FeedHealth>,
    permits: Arc<Semaphore>,
}

impl WebhookReceiver {
    /// A receiver (nothing is bound yet: serve [`WebhookReceiver::router`]).
    pub fn new(config: WebhookReceiverConfig) -> Self {
        WebhookReceiver {
            config: Arc::new(config),
            changes_arrived: Arc::new(Notify::new()),
            health: Arc::default(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)),
        }
    }

    /// The feed's health as this receiver sees it.
    pub fn health(&self) -> Arc<FeedHealth> {
        self.health.clone()
    }

    /// Notified (one permit, kept until someone waits) after each delivery that stored at
    /// least one new change another user or app made (a redelivery stores none), before
    /// HubSpot gets its answer.
    pub fn changes_arrived(&self) -> Arc<Notify> {
        self.changes_arrived.clone()
    }

    /// The routes: `POST /hooks/hubspot`.
    pub fn router(self) -> Router {
        Router::new()
            .route(HOOK_PATH, post(deliver))
            .with_state(self)
    }
}

/// A refusal: its status, a short JSON body and the outcome counted.
fn refuse(status: StatusCode, outcome: WebhookOutcome, message: String) -> Response {
    telemetry::webhook_delivery(outcome, 0, 0);
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn unauthorized(rejection: WebhookRejection) -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        WebhookOutcome::Unauthorized,
        rejection.to_string(),
    )
}

/// How much of a too-large body is read (and dropped) before the 413, so that a sender
/// still writing it gets the answer rather than a reset connection.
const DRAINED_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Reads the body up to [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Vec<u8>, Response> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                WebhookOutcome::BadBody,
                format!("reading the body: {e}"),
            )
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen > DRAINED_BYTES {
            break;
        }
        if seen <= MAX_BODY_BYTES {
            out.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            WebhookOutcome::TooLarge,
            WebhookRejection::TooLarge {
                limit: MAX_BODY_BYTES,
            }
            .to_string(),
        ));
    }
    Ok(out)
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookRejection> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(WebhookRejection::MissingHeader(name))
}

/// The store's row for an event.
fn new_change(e: &ChangeEvent) -> NewHubSpotChange {
    let (kind, property) = match &e.kind {
        ChangeKind::Created => ("created", None),
        ChangeKind::Deleted => ("deleted", None),
        ChangeKind::PropertyChanged { property } => ("property", Some(property.clone())),
        // A merge, a restore...: the record changed, read it again.
        ChangeKind::Other(_) => ("property", None),
    };
    NewHubSpotChange {
        event_id: e.event_id,
        object_type: e.object_type.clone(),
        object_id: e.object_id.clone(),
        kind: kind.to_string(),
        property,
        occurred_at_ms: e.occurred_at_ms,
        change_source: e.change_source.clone(),
        source_id: e.source_id.clone(),
    }
}

async fn deliver(
    State(receiver): State<WebhookReceiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let config = &receiver.config;
    let health = &receiver.health;
    // Before any body is read: the signature headers, the declared size, a free slot.
    let (signature, timestamp) = match (
        header(&headers, SIGNATURE_V3_HEADER),
        header(&headers, TIMESTAMP_HEADER),
    ) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => {
            health.refused();
            return unauthorized(e);
        }
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        health.refused();
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            WebhookOutcome::TooLarge,
            WebhookRejection::TooLarge {
                limit: MAX_BODY_BYTES,
            }
            .to_string(),
        );
    }
    let Ok(_permit) = receiver.permits.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            WebhookOutcome::Busy,
            "too many deliveries at once; retry later".into(),
        );
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(refusal) => {
            health.refused();
            return refusal;
        }
    };
    let called = match uri.query() {
        Some(q) => format!("{}?{q}", config.public_url),
        None => config.public_url.clone(),
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Err(e) = verify_signature_v3(
        &config.client_secret,
        method.as_str(),
        &called,
        &body,
        timestamp,
        signature,
        now_ms,
    ) {
        health.refused();
        return unauthorized(e);
    }
    let events = match parse_delivery(&body) {
        Ok(parsed) => {
            if parsed.skipped > 0 {
                tracing::warn!(
                    skipped = parsed.skipped,
                    "HubSpot webhook events without a usable id or time were skipped"
                );
            }
            parsed.events
        }
        Err(e) => {
            health.refused();
            return refuse(
                StatusCode::BAD_REQUEST,
                WebhookOutcome::BadBody,
                e.to_string(),
            );
        }
    };
    let (ours, other_portal): (Vec<&ChangeEvent>, Vec<&ChangeEvent>) =
        events.iter().partition(|e| {
            config
                .portal_id
                .is_none_or(|p| e.portal_id == p || e.portal_id == 0)
        });
    if !other_portal.is_empty() {
        tracing::warn!(
            dropped = other_portal.len(),
            "HubSpot webhook events of another portal were dropped"
        );
    }
    let (own, foreign): (Vec<&ChangeEvent>, Vec<&ChangeEvent>) =
        ours.into_iter().partition(|e| e.is_from_app(config.app_id));
    let changes: Vec<NewHubSpotChange> = foreign.iter().map(|e| new_change(e)).collect();
    let stored = match config
        .store
        .record_hubspot_changes(&config.tenant, &changes, now_ms)
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "storing a HubSpot webhook delivery failed; HubSpot will retry");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                WebhookOutcome::StoreFailed,
                "the change could not be stored; retry later".into(),
            );
        }
    };
    telemetry::webhook_delivery(WebhookOutcome::Stored, stored, own.len() as u64);
    // Counted only once stored: a delivery answered 503 comes again.
    health.own_created(&own);
    if stored > 0 {
        receiver.changes_arrived.notify_one();
    }
    StatusCode::NO_CONTENT.into_response()
}
