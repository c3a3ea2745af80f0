//! Fault profiles and request accounting shared by both emulators.
//!
//! STATUS: ready for use by the HubSpot emulator. The shape below is stable
//! (additions only): [`FaultProfile`], [`Faults`], [`Accounting`], [`api_layer`]
//! and [`control_routes`]. `crate::start` expects from the HubSpot side:
//! `hubspot::HubSpot::new(&Seed) -> Self`, `fn router(&self) -> axum::Router`
//! (vendor routes + `/__emulator/...`, no state left to provide) and
//! `fn private_app_token(&self) -> String` (printed by `dealbridge emulate`).
//! `emulator/src/hubspot/mod.rs` was a placeholder only: replace it freely.
//!
//! How an emulator uses this module:
//!
//! ```ignore
//! let api = Router::new()./* vendor routes */
//!     .layer(control::api_layer(faults.clone(), accounting.clone(), my_error_body));
//! let app = api.merge(control::control_routes(faults, accounting)) /* + own /__emulator routes */;
//! ```
//!
//! `api_layer` must wrap the vendor API routes only: control routes under
//! `/__emulator/` are never counted, delayed or failed. Rate limits
//! ([`FaultProfile::rate_limit`]) and forced validations are interpreted by each
//! emulator itself, because their wire shapes differ per vendor.
//!
//! This module must never hold a lock across an `.await`, and never panic on
//! any profile a client sends (bad profiles are rejected with a 400).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tower::{Layer, Service};

/// One injected error: a share of requests (optionally only those whose path
/// starts with `path_prefix`) answered with `status` and the vendor's error body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorRate {
    /// HTTP status to answer with (400..=599).
    pub status: u16,
    /// Share of matching requests, 0.0..=1.0.
    pub rate: f64,
    /// Only requests whose path starts with this prefix; `None` = every API request.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// A forced validation failure: writes of `object` records whose `field`
/// equals `equals` fail with `message` (Salesforce: FIELD_CUSTOM_VALIDATION_EXCEPTION,
/// HubSpot: VALIDATION_ERROR).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForcedValidation {
    /// Object name as the vendor spells it (`Opportunity`, `deals`), compared case-insensitively.
    pub object: String,
    /// Field or property name, compared case-insensitively.
    pub field: String,
    /// The value that triggers the failure (compared as JSON; a string also
    /// matches a number or boolean with the same text).
    pub equals: Value,
    /// The message the error carries.
    pub message: String,
}

/// Rate-limit settings. Each emulator interprets them in its own terms:
/// Salesforce uses `max_requests` as the daily API limit (window is ignored
/// unless given); HubSpot uses them as its rolling window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed in one window.
    pub max_requests: u64,
    /// Window length in seconds; `None` = the vendor's usual window
    /// (Salesforce: 24 h, HubSpot: 10 s).
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// The faults an emulator injects. `PUT /__emulator/faults` replaces it whole.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultProfile {
    /// Injected error rates, checked in order with one random draw per request.
    pub error_rates: Vec<ErrorRate>,
    /// Added to every API request, in milliseconds.
    pub latency_ms: u64,
    /// Lifetime of newly issued access tokens; `None` = the emulator default.
    pub token_lifetime_secs: Option<u64>,
    /// Forced validation failures.
    pub validation_failures: Vec<ForcedValidation>,
    /// Fault draws are deterministic given this seed (the RNG is reseeded on every `set`).
    pub random_seed: u64,
    /// Rate-limit override; `None` = the emulator default.
    pub rate_limit: Option<RateLimit>,
}

/// Why a fault profile was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("error_rates[{index}].status {status} is not an error status (400..=599)")]
    BadStatus { index: usize, status: u16 },
    #[error("error_rates[{index}].rate {rate} is not within 0..=1")]
    BadRate { index: usize, rate: f64 },
    #[error("the error rates add up to {0}, more than 1")]
    RatesOverOne(f64),
    #[error("latency_ms {0} is more than 60000")]
    LatencyTooLong(u64),
    #[error("rate_limit.max_requests must be at least 1")]
    ZeroRateLimit,
    #[error("rate_limit.window_secs must be at least 1")]
    ZeroWindow,
}

impl FaultProfile {
    /// Checks that the profile makes sense.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let mut sum = 0.0;
        for (index, e) in self.error_rates.iter().enumerate() {
            if !(400..=599).contains(&e.status) {
                return Err(ProfileError::BadStatus {
                    index,
                    status: e.status,
                });
            }
            if !(0.0..=1.0).contains(&e.rate) || e.rate.is_nan() {
                return Err(ProfileError::BadRate {
                    index,
                    rate: e.rate,
                });
            }
            sum += e.rate;
        }
        if sum > 1.0 + 1e-9 {
            return Err(ProfileError::RatesOverOne(sum));
        }
        if self.latency_ms > 60_000 {
            return Err(ProfileError::LatencyTooLong(self.latency_ms));
        }
        if let Some(rl) = &self.rate_limit {
            if rl.max_requests == 0 {
                return Err(ProfileError::ZeroRateLimit);
            }
            if rl.window_secs == Some(0) {
                return Err(ProfileError::ZeroWindow);
            }
        }
        Ok(())
    }
}

struct FaultsInner {
    profile: RwLock<Arc<FaultProfile>>,
    rng: Mutex<StdRng>,
    /// Bumped on every `set`, so emulators can notice a new profile (e.g. reset a rate window).
    generation: AtomicU64,
}

impl Default for FaultsInner {
    fn default() -> Self {
        FaultsInner {
            profile: RwLock::new(Arc::new(FaultProfile::default())),
            rng: Mutex::new(StdRng::seed_from_u64(0)),
            generation: AtomicU64::new(0),
        }
    }
}

/// The current fault profile of one emulator, shared by all its handlers.
#[derive(Clone, Default)]
pub struct Faults(Arc<FaultsInner>);

impl Faults {
    /// A copy of the current profile.
    pub fn get(&self) -> FaultProfile {
        (**self.0.profile.read()).clone()
    }

    /// The current profile without copying it.
    pub fn current(&self) -> Arc<FaultProfile> {
        self.0.profile.read().clone()
    }

    /// Replaces the profile and reseeds the fault RNG from `random_seed`.
    /// Callers that take profiles from clients should call [`FaultProfile::validate`] first.
    pub fn set(&self, p: FaultProfile) {
        let seed = p.random_seed;
        *self.0.profile.write() = Arc::new(p);
        *self.0.rng.lock() = StdRng::seed_from_u64(seed);
        self.0.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the profile was set (for emulators that keep per-profile state).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }

    /// Lifetime of new tokens, or `default` when the profile sets none.
    pub fn token_lifetime(&self, default: Duration) -> Duration {
        self.current()
            .token_lifetime_secs
            .map(Duration::from_secs)
            .unwrap_or(default)
    }

    /// The rate-limit override, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.current().rate_limit.clone()
    }

    /// Draws whether this request (by path) gets an injected error.
    pub fn draw_error(&self, path: &str) -> Option<StatusCode> {
        let profile = self.current();
        if profile.error_rates.is_empty() {
            return None;
        }
        let draw: f64 = self.0.rng.lock().random();
        let mut acc = 0.0;
        for e in &profile.error_rates {
            if let Some(prefix) = &e.path_prefix
                && !path.starts_with(prefix.as_str())
            {
                continue;
            }
            acc += e.rate;
            if draw < acc {
                return StatusCode::from_u16(e.status).ok();
            }
        }
        None
    }

    /// The first forced validation that matches this record of `object`, if any.
    /// Field names and object names compare case-insensitively.
    pub fn forced_validation(
        &self,
        object: &str,
        record: &Map<String, Value>,
    ) -> Option<ForcedValidation> {
        let profile = self.current();
        profile
            .validation_failures
            .iter()
            .find(|v| {
                v.object.eq_ignore_ascii_case(object)
                    && record.iter().any(|(k, val)| {
                        k.eq_ignore_ascii_case(&v.field) && values_match(val, &v.equals)
                    })
            })
            .cloned()
    }
}

/// JSON equality, where a string also matches a number or bool with the same text
/// (HubSpot sends every property as a string).
#[allow(clippy::cmp_owned)] // a fault-rule match, not a hot path: the plain comparison reads best
fn values_match(actual: &Value, expected: &Value) -> bool {
    if actual == expected {
        return true;
    }
    match (actual, expected) {
        (Value::String(s), Value::Number(_) | Value::Bool(_)) => *s == expected.to_string(),
        (Value::Number(_) | Value::Bool(_), Value::String(s)) => *s == actual.to_string(),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => false,
    }
}

/// Calls counted for one (method, route template, status).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallCount {
    pub method: String,
    /// The axum route template (e.g. `/services/data/v62.0/sobjects/{sobject}/{id}`),
    /// or `<unmatched>` for requests no route matched.
    pub route: String,
    pub status: u16,
    pub count: u64,
}

/// One accounting bucket: method, route template, status.
type CallKey = (http::Method, Arc<str>, u16);

#[derive(Default)]
struct AccountingInner {
    counts: Mutex<HashMap<CallKey, u64>>,
    total: AtomicU64,
}

/// Request accounting: API calls by method, route and status.
#[derive(Clone, Default)]
pub struct Accounting(Arc<AccountingInner>);

impl Accounting {
    /// Records one call.
    pub fn record(&self, method: &http::Method, route: &str, status: StatusCode) {
        self.0.total.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.0.counts.lock();
        if let Some(c) = counts.iter_mut().find_map(|((m, r, s), c)| {
            (m == method && &**r == route && *s == status.as_u16()).then_some(c)
        }) {
            *c += 1;
        } else {
            counts.insert((method.clone(), Arc::from(route), status.as_u16()), 1);
        }
    }

    /// All counters, sorted by route, method and status.
    pub fn snapshot(&self) -> Vec<CallCount> {
        let counts = self.0.counts.lock();
        let mut out: Vec<CallCount> = counts
            .iter()
            .map(|((m, r, s), c)| CallCount {
                method: m.to_string(),
                route: r.to_string(),
                status: *s,
                count: *c,
            })
            .collect();
        drop(counts);
        out.sort_by(|a, b| (&a.route, &a.method, a.status).cmp(&(&b.route, &b.method, b.status)));
        out
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        let mut counts = self.0.counts.lock();
        counts.clear();
        self.0.total.store(0, Ordering::SeqCst);
    }

    /// Total calls since start or the last reset.
    pub fn total(&self) -> u64 {
        self.0.total.load(Ordering::SeqCst)
    }
}

/// Builds a vendor-shaped error response for an injected status.
pub type ErrorBodyFn = fn(StatusCode) -> Response;

/// The middleware layer for an emulator's API routes: adds latency, answers
/// injected errors with `error_body`, and counts every request by
/// (method, matched route, status). Use with `Router::layer`.
pub fn api_layer(faults: Faults, accounting: Accounting, error_body: ErrorBodyFn) -> ApiLayer {
    ApiLayer {
        faults,
        accounting,
        error_body,
    }
}

/// See [`api_layer`].
#[derive(Clone)]
pub struct ApiLayer {
    faults: Faults,
    accounting: Accounting,
    error_body: ErrorBodyFn,
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;
    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ApiLayer`] wraps around the routes.
#[derive(Clone)]
pub struct ApiService<S> {
    inner: S,
    layer: ApiLayer,
}

impl<S> Service<Request<Body>> for ApiService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let route: Arc<str> = req
                .extensions()
                .get::<MatchedPath>()
                .map(|m| Arc::from(m.as_str()))
                .unwrap_or_else(|| Arc::from("<unmatched>"));
            let (latency, injected) = {
                let profile = layer.faults.current();
                let injected = if profile.error_rates.is_empty() {
                    None
                } else {
                    layer.faults.draw_error(req.uri().path())
                };
                (profile.latency_ms, injected)
            };
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            let response = match injected {
                Some(status) => (layer.error_body)(status),
                None => inner.call(req).await?,
            };
            layer.accounting.record(&method, &route, response.status());
            Ok(response)
        })
    }
}

/// A control-API error: `{"error": "..."}` with a 400.
fn control_error(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message.to_string() })),
    )
        .into_response()
}

/// `GET`/`PUT /__emulator/faults` and `GET`/`DELETE /__emulator/requests`.
///
/// `GET /__emulator/requests` answers `{"total": N, "calls": [CallCount...]}`.
pub fn control_routes<S>(faults: Faults, accounting: Accounting) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let f_get = faults.clone();
    let f_put = faults;
    let a_get = accounting.clone();
    let a_del = accounting;
    Router::new()
        .route(
            "/__emulator/faults",
            get(move || {
                let f = f_get.clone();
                async move { axum::Json(f.get()) }
            })
            .put(move |body: Bytes| {
                let f = f_put.clone();
                async move {
                    let profile: FaultProfile = match serde_json::from_slice(&body) {
                        Ok(p) => p,
                        Err(e) => return control_error(format_args!("invalid fault profile: {e}")),
                    };
                    if let Err(e) = profile.validate() {
                        return control_error(format_args!("invalid fault profile: {e}"));
                    }
                    f.set(profile.clone());
                    axum::Json(profile).into_response()
                }
            }),
        )
        .route(
            "/__emulator/requests",
            get(move || {
                let a = a_get.clone();
                async move { axum::Json(json!({ "total": a.total(), "calls": a.snapshot() })) }
            })
            .delete(move || {
                let a = a_del.clone();
                async move {
                    a.reset();
                    StatusCode::NO_CONTENT
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_numbers_and_bools_by_their_text() {
        assert!(values_match(&json!("42"), &json!(42)));
        assert!(values_match(&json!(1.5), &json!("1.5")));
        assert!(values_match(&json!("true"), &json!(true)));
        assert!(!values_match(&json!("4"), &json!(42)));
        assert!(!values_match(&json!("420"), &json!(42)));
        assert!(!values_match(&json!("tru"), &json!(true)));
        assert!(!values_match(&json!(""), &json!(false)));
    }

    #[test]
    fn draws_are_deterministic_by_seed() {
        let f = Faults::default();
        let profile = FaultProfile {
            error_rates: vec![ErrorRate {
                status: 503,
                rate: 0.5,
                path_prefix: None,
            }],
            random_seed: 42,
            ..Default::default()
        };
        f.set(profile.clone());
        let a: Vec<_> = (0..64).map(|_| f.draw_error("/x")).collect();
        f.set(profile);
        let b: Vec<_> = (0..64).map(|_| f.draw_error("/x")).collect();
        assert_eq!(a, b);
        let hits = a.iter().filter(|s| s.is_some()).count();
        assert!(hits > 10 && hits < 54, "about half should fail, got {hits}");
    }

    #[test]
    fn path_prefix_limits_errors() {
        let f = Faults::default();
        f.set(FaultProfile {
            error_rates: vec![ErrorRate {
                status: 500,
                rate: 1.0,
                path_prefix: Some("/a".into()),
            }],
            ..Default::default()
        });
        assert_eq!(
            f.draw_error("/a/b"),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert_eq!(f.draw_error("/b"), None);
    }

    #[test]
    fn bad_profiles_are_refused() {
        let p = FaultProfile {
            error_rates: vec![ErrorRate {
                status: 200,
                rate: 0.1,
                path_prefix: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            p.validate(),
            Err(ProfileError::BadStatus {
                index: 0,
                status: 200
            })
        );
        let p = FaultProfile {
            error_rates: vec![ErrorRate {
                status: 500,
                rate: 1.5,
                path_prefix: None,
            }],
            ..Default::default()
        };
        assert!(matches!(p.validate(), Err(ProfileError::BadRate { .. })));
        let err = serde_json::from_str::<FaultProfile>(r#"{"latency":5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn forced_validation_matches_case_insensitively_and_by_text() {
        let f = Faults::default();
        f.set(FaultProfile {
            validation_failures: vec![ForcedValidation {
                object: "Opportunity".into(),
                field: "Amount".into(),
                equals: json!(13),
                message: "unlucky".into(),
            }],
            ..Default::default()
        });
        let rec = json!({"amount": "13"});
        assert!(
            f.forced_validation("opportunity", rec.as_object().unwrap())
                .is_some()
        );
        let rec = json!({"Amount": 14});
        assert!(
            f.forced_validation("Opportunity", rec.as_object().unwrap())
                .is_none()
        );
        let rec = json!({"Amount": 13.0});
        assert!(
            f.forced_validation("Opportunity", rec.as_object().unwrap())
                .is_some()
        );
    }

    #[test]
    fn accounting_counts_and_resets() {
        let a = Accounting::default();
        a.record(&http::Method::GET, "/x", StatusCode::OK);
        a.record(&http::Method::GET, "/x", StatusCode::OK);
        a.record(&http::Method::POST, "/x", StatusCode::CREATED);
        assert_eq!(a.total(), 3);
        let snap = a.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.iter().find(|c| c.method == "GET").unwrap().count, 2);
        a.reset();
        assert_eq!(a.total(), 0);
        assert!(a.snapshot().is_empty());
    }
}
