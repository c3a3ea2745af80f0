//! Delivery of queued webhook events to the app's target URL, as HubSpot does
//! it: one tokio task per portal (started on the first queued event, inside
//! the runtime the handlers run in), requests of at most 100 events as a JSON
//! array, at most `throttling.maxConcurrentRequests` requests at once, each
//! signed with `X-HubSpot-Signature-v3`. A connection error, a timeout, a 5xx
//! or another non-2xx answer sends the same events again after a back-off that
//! doubles (after `Retry-After` seconds instead, for a 429 that gives them),
//! with `attemptNumber` one higher; after the last retry they count as failed.
//! An answer of 400, 401, 403, 404 or 405 is never retried, as HubSpot does:
//! the events count as failed at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::task::JoinSet;

use super::now_ms;
use super::schema::ObjectType;
use super::webhooks::{
    APP_ID, Actor, CLIENT_SECRET, Event, EventKind, MAX_EVENTS_PER_REQUEST, PORTAL_ID, Shared,
    UI_USER_ID,
};

/// The `User-Agent` of delivery requests.
const USER_AGENT: &str = "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client) - WebhooksExecutorDaemon-executor (dealbridge emulator)";

/// Starts the delivery task of `shared` on the current tokio runtime; `false`
/// outside a runtime (the next queued event tries again).
pub(super) fn spawn(shared: &Arc<Shared>) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(run(Arc::clone(shared)));
            true
        }
        Err(_) => false,
    }
}

/// One request's worth of events.
struct Job {
    events: Vec<Event>,
    target_url: String,
    generation: u64,
}

/// The next request to send, if deliveries are not paused, a target is set,
/// events wait and fewer than `maxConcurrentRequests` requests are running.
fn next_job(shared: &Shared, running: usize) -> Option<Job> {
    let mut st = shared.state.lock();
    if st.options.paused || st.queue.is_empty() {
        return None;
    }
    let settings = st.settings.as_ref()?;
    if running >= settings.throttling.max_concurrent_requests.max(1) as usize {
        return None;
    }
    let target_url = settings.target_url.clone();
    let n = st.queue.len().min(MAX_EVENTS_PER_REQUEST);
    let events: Vec<Event> = st.queue.drain(..n).collect();
    st.stats.in_flight += n as u64;
    Some(Job {
        events,
        target_url,
        generation: st.generation,
    })
}

async fn run(shared: Arc<Shared>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().user_agent(USER_AGENT).build() {
        Ok(c) => c,
        Err(e) => {
            let mut st = shared.state.lock();
            st.stats.last_error = Some(format!("the webhook HTTP client could not start: {e}"));
            st.worker_running = false;
            return;
        }
    };
    let mut running = JoinSet::new();
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            running.abort_all();
            return;
        }
        while let Some(job) = next_job(&shared, running.len()) {
            running.spawn(deliver(Arc::clone(&shared), client.clone(), job));
        }
        if running.is_empty() {
            shared.wake.notified().await;
        } else {
            tokio::select! {
                _ = running.join_next() => {}
                _ = shared.wake.notified() => {}
            }
        }
    }
}

/// Sends one job until it is acknowledged or out of retries.
async fn deliver(shared: Arc<Shared>, client: reqwest::Client, job: Job) {
    let count = job.events.len() as u64;
    let uri = signature_uri(&job.target_url);
    let mut attempt = 0u32;
    loop {
        let body = body_json(&job.events, attempt);
        let timestamp = now_ms().to_string();
        let signature = signature_v3(CLIENT_SECRET, "POST", &uri, &body, &timestamp);
        let timeout = Duration::from_millis(shared.state.lock().options.timeout_ms.max(1));
        let outcome = client
            .post(&job.target_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-HubSpot-Signature-Version", "v3")
            .header("X-HubSpot-Signature-v3", signature)
            .header("X-HubSpot-Request-Timestamp", &timestamp)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let result = match outcome {
            Ok(resp) => attempt_result(
                resp.status(),
                resp.headers().get(http::header::RETRY_AFTER),
                &job.target_url,
            ),
            Err(e) => AttemptResult::Retry {
                error: format!("POST {} failed: {e}", job.target_url),
                after_ms: None,
            },
        };
        let Some(wait) = settle(&shared, &job, count, attempt, result) else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        attempt += 1;
    }
    shared.idle.notify_waiters();
    shared.wake.notify_one();
}

/// What one delivery attempt came to.
#[derive(Debug, PartialEq)]
enum AttemptResult {
    /// A 2xx answer.
    Delivered,
    /// A failure HubSpot retries: a connection error, a timeout, a 429 (after its
    /// `Retry-After`, in milliseconds, when given), a 5xx or another status.
    Retry {
        error: String,
        after_ms: Option<u64>,
    },
    /// An answer HubSpot does not retry: 400, 401, 403, 404 or 405.
    Refused { error: String },
}

/// The answers after which HubSpot never sends a batch again.
const NOT_RETRIED: [u16; 5] = [400, 401, 403, 404, 405];

/// The result of an attempt the target answered with `status`.
fn attempt_result(
    status: http::StatusCode,
    retry_after: Option<&http::HeaderValue>,
    target_url: &str,
) -> AttemptResult {
    if status.is_success() {
        return AttemptResult::Delivered;
    }
    let error = format!("POST {target_url} answered {status}");
    if NOT_RETRIED.contains(&status.as_u16()) {
        return AttemptResult::Refused { error };
    }
    let after_ms = (status == http::StatusCode::TOO_MANY_REQUESTS)
        .then(|| retry_after?.to_str().ok()?.trim().parse::<u64>().ok())
        .flatten()
        .map(|seconds| seconds.saturating_mul(1_000));
    AttemptResult::Retry { error, after_ms }
}

/// Books the outcome of one attempt: `None` when the job is done (delivered,
/// refused, out of retries, or discarded meanwhile), else how long to wait
/// before the next attempt.
fn settle(
    shared: &Shared,
    job: &Job,
    count: u64,
    attempt: u32,
    result: AttemptResult,
) -> Option<u64> {
    let mut st = shared.state.lock();
    let (error, refused, after_ms) = match result {
        AttemptResult::Delivered => {
            st.stats.in_flight -= count;
            st.stats.delivered += count;
            return None;
        }
        AttemptResult::Retry { error, after_ms } => (error, false, after_ms),
        AttemptResult::Refused { error } => (error, true, None),
    };
    st.stats.last_error = Some(error);
    let stale = st.generation != job.generation;
    if stale || refused || attempt >= st.options.max_retries || shared.closed.load(Ordering::SeqCst)
    {
        st.stats.in_flight -= count;
        if stale {
            st.stats.discarded += count;
        } else {
            st.stats.failed += count;
        }
        return None;
    }
    st.stats.retries += 1;
    Some(after_ms.unwrap_or_else(|| {
        st.options
            .retry_initial_ms
            .saturating_mul(1u64 << attempt.min(30))
    }))
}

/// One event as HubSpot sends it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    event_id: u64,
    subscription_id: u64,
    portal_id: u64,
    app_id: u64,
    occurred_at: i64,
    subscription_type: &'static str,
    attempt_number: u32,
    object_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    property_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    property_value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change_flag: Option<&'static str>,
    change_source: &'static str,
    source_id: &'a str,
}

fn subscription_type(object: ObjectType, kind: &EventKind) -> &'static str {
    match (object, kind) {
        (ObjectType::Contacts, EventKind::Creation) => "contact.creation",
        (ObjectType::Contacts, EventKind::Deletion) => "contact.deletion",
        (ObjectType::Contacts, EventKind::PropertyChange { .. }) => "contact.propertyChange",
        (ObjectType::Companies, EventKind::Creation) => "company.creation",
        (ObjectType::Companies, EventKind::Deletion) => "company.deletion",
        (ObjectType::Companies, EventKind::PropertyChange { .. }) => "company.propertyChange",
        (ObjectType::Deals, EventKind::Creation) => "deal.creation",
        (ObjectType::Deals, EventKind::Deletion) => "deal.deletion",
        (ObjectType::Deals, EventKind::PropertyChange { .. }) => "deal.propertyChange",
    }
}

/// The request body: the events as a JSON array, with this `attemptNumber`.
pub fn body_json(events: &[Event], attempt: u32) -> Vec<u8> {
    let app_source = APP_ID.to_string();
    let user_source = format!("userId:{UI_USER_ID}");
    let wire: Vec<WireEvent<'_>> = events
        .iter()
        .map(|e| {
            let (property_name, property_value, change_flag) = match &e.kind {
                EventKind::Creation => (None, None, Some("CREATED")),
                EventKind::Deletion => (None, None, Some("DELETED")),
                EventKind::PropertyChange { name, value } => {
                    (Some(&**name), Some(value.as_str()), None)
                }
            };
            WireEvent {
                event_id: e.event_id,
                subscription_id: e.subscription_id,
                portal_id: PORTAL_ID,
                app_id: APP_ID,
                occurred_at: e.occurred_at,
                subscription_type: subscription_type(e.object, &e.kind),
                attempt_number: attempt,
                object_id: e.object_id,
                property_name,
                property_value,
                change_flag,
                change_source: e.actor.change_source(),
                source_id: match e.actor {
                    Actor::App => &app_source,
                    Actor::User => &user_source,
                },
            }
        })
        .collect();
    // A Vec of plain structs of strings and integers always serializes.
    serde_json::to_vec(&wire).unwrap_or_else(|_| b"[]".to_vec())
}

/// The URI part of the v3 signature: the target URL with the percent-encoded
/// characters HubSpot's documentation lists (`: / ? @ ! $ ' ( ) * , ;`) decoded.
pub fn signature_uri(url: &str) -> String {
    const DECODED: [(&[u8; 2], u8); 12] = [
        (b"3A", b':'),
        (b"2F", b'/'),
        (b"3F", b'?'),
        (b"40", b'@'),
        (b"21", b'!'),
        (b"24", b'$'),
        (b"27", b'\''),
        (b"28", b'('),
        (b"29", b')'),
        (b"2A", b'*'),
        (b"2C", b','),
        (b"3B", b';'),
    ];
    let bytes = url.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let code = [
                bytes[i + 1].to_ascii_uppercase(),
                bytes[i + 2].to_ascii_uppercase(),
            ];
            if let Some((_, c)) = DECODED.iter().find(|(k, _)| **k == code) {
                out.push(*c);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // Only ASCII was replaced by ASCII, so the text stays valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| url.to_string())
}

/// `X-HubSpot-Signature-v3`: base64 of HMAC-SHA256 keyed with the client
/// secret over `method + uri + body + timestamp`.
pub fn signature_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return String::new();
    };
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_uri_decodes_the_documented_characters_only() {
        assert_eq!(
            signature_uri("https://h.example/hook%3Fa%3Db%2Cc%20d%3b%25"),
            "https://h.example/hook?a%3Db,c%20d;%25"
        );
        assert_eq!(signature_uri("http://x/%"), "http://x/%");
        assert_eq!(signature_uri("http://x/%4"), "http://x/%4");
    }

    #[test]
    fn only_the_statuses_hubspot_gives_up_on_are_not_retried() {
        let url = "http://x/hook";
        for code in [400, 401, 403, 404, 405] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    attempt_result(status, None, url),
                    AttemptResult::Refused { .. }
                ),
                "{code}"
            );
        }
        for code in [402, 408, 409, 410, 413, 422, 500, 502, 503, 504] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    attempt_result(status, None, url),
                    AttemptResult::Retry { after_ms: None, .. }
                ),
                "{code}"
            );
        }
        assert_eq!(
            attempt_result(http::StatusCode::NO_CONTENT, None, url),
            AttemptResult::Delivered
        );
        let after = http::HeaderValue::from_static("3");
        assert!(matches!(
            attempt_result(http::StatusCode::TOO_MANY_REQUESTS, Some(&after), url),
            AttemptResult::Retry {
                after_ms: Some(3_000),
                ..
            }
        ));
        // A Retry-After that is not a number of seconds falls back to the back-off,
        // and only a 429's is followed.
        let date = http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert!(matches!(
            attempt_result(http::StatusCode::TOO_MANY_REQUESTS, Some(&date), url),
            AttemptResult::Retry { after_ms: None, .. }
        ));
        assert!(matches!(
            attempt_result(http::StatusCode::SERVICE_UNAVAILABLE, Some(&after), url),
            AttemptResult::Retry { after_ms: None, .. }
        ));
    }

    #[test]
    fn bodies_carry_hubspot_fields() {
        let events = vec![Event {
            event_id: 7,
            subscription_id: 9,
            object: ObjectType::Deals,
            object_id: 11,
            occurred_at: 1_700_000_000_000,
            kind: EventKind::PropertyChange {
                name: Arc::from("amount"),
                value: "12.50".into(),
            },
            actor: Actor::User,
        }];
        let v: serde_json::Value = serde_json::from_slice(&body_json(&events, 2)).unwrap();
        let e = &v[0];
        assert_eq!(e["subscriptionType"], "deal.propertyChange");
        assert_eq!(e["attemptNumber"], 2);
        assert_eq!(e["propertyName"], "amount");
        assert_eq!(e["propertyValue"], "12.50");
        assert_eq!(e["changeSource"], "CRM_UI");
        assert_eq!(e["sourceId"], format!("userId:{UI_USER_ID}"));
        assert_eq!(e["portalId"], PORTAL_ID);
        assert!(e.get("changeFlag").is_none());
    }
}
