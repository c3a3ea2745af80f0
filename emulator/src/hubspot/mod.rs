//! The HubSpot emulator: CRM objects v3 (deals, companies, contacts: CRUD,
//! list, batch, search), associations v4, pipelines, properties and owners,
//! behind a private-app Bearer token and HubSpot's rate limits, plus a control
//! API under `/__emulator/`.
//!
//! Response shapes follow HubSpot's documented wire format (the one the
//! official Python and JavaScript clients deserialize). All state lives in one
//! [`store::Store`] behind a `RwLock` that no handler holds across an
//! `.await`. No handler may panic or answer 500 for anything a client sends:
//! every failure leaves as an [`error::ApiError`] in HubSpot's envelope.
//!
//! Layering, outermost first: request accounting / latency / injected errors
//! (`control::api_layer`), then auth (401) and rate limits (429), then routes.

pub mod admin;
pub mod assoc;
pub mod error;
pub mod index;
pub mod meta;
pub mod objects;
pub mod ratelimit;
pub mod schema;
pub mod search;
pub mod seed;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::request::Parts;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;

use self::error::ApiError;
use self::ratelimit::{RateLimitSettings, RateLimiter};
use self::store::Store;
use crate::Seed;
use crate::control::{self, Accounting, Faults};

struct Inner {
    store: RwLock<Store>,
    faults: Faults,
    accounting: Accounting,
    limits: RateLimiter,
    token: String,
    seed: Mutex<Seed>,
}

/// One emulated HubSpot portal. Cheap to clone (shared state).
#[derive(Clone)]
pub struct HubSpot {
    inner: Arc<Inner>,
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl HubSpot {
    /// A portal seeded with `seed` (see [`seed::build`]).
    pub fn new(seed: &Seed) -> HubSpot {
        HubSpot {
            inner: Arc::new(Inner {
                store: RwLock::new(seed::build(seed)),
                faults: Faults::default(),
                accounting: Accounting::default(),
                limits: RateLimiter::default(),
                token: "pat-na1-7e3c2a10-4b5d-4c6e-9f80-d3a1b2c4e5f6".to_string(),
                seed: Mutex::new(*seed),
            }),
        }
    }

    /// The private-app token clients send as `Authorization: Bearer <token>`.
    pub fn token(&self) -> String {
        self.inner.token.clone()
    }

    /// Same as [`HubSpot::token`] (the name `crate::start` uses).
    pub fn private_app_token(&self) -> String {
        self.token()
    }

    /// The fault profile of this portal.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The request accounting of this portal.
    pub fn accounting(&self) -> &Accounting {
        &self.inner.accounting
    }

    /// Replaces the rate-limit settings (also `PUT /__emulator/rate-limits`).
    pub fn set_rate_limits(&self, settings: RateLimitSettings) {
        self.inner.limits.set(settings);
    }

    /// Re-seeds the portal (also `POST /__emulator/seed`).
    pub fn reseed(&self, seed: &Seed) {
        let fresh = seed::build(seed);
        *self.inner.store.write() = fresh;
        *self.inner.seed.lock() = *seed;
    }

    /// The whole state as JSON (also `GET /__emulator/snapshot`).
    pub fn snapshot(&self) -> serde_json::Value {
        self.read(|s| s.snapshot())
    }

    /// Replaces the whole portal with a snapshot's state (also
    /// `PUT /__emulator/snapshot`). The snapshot is checked completely first:
    /// on error the portal is unchanged. Rate windows, faults and accounting
    /// are kept; a later reset goes back to the seed, not to the snapshot.
    pub fn load_snapshot(&self, snapshot: &serde_json::Value) -> Result<(), store::SnapshotError> {
        let loaded = Store::from_snapshot(snapshot)?;
        *self.inner.store.write() = loaded;
        Ok(())
    }

    /// Runs `f` with the store read-locked (never across an await).
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.inner.store.read())
    }

    /// Runs `f` with the store write-locked (never across an await).
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.inner.store.write())
    }

    /// Every route: the HubSpot API (with accounting, faults, auth and rate
    /// limits) and the control API under `/__emulator/`.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(
                "/crm/v3/objects/{object_type}",
                get(objects::list).post(objects::create),
            )
            .route(
                "/crm/v3/objects/{object_type}/search",
                post(objects::search),
            )
            .route(
                "/crm/v3/objects/{object_type}/batch/{action}",
                post(objects::batch),
            )
            .route(
                "/crm/v3/objects/{object_type}/{id}",
                get(objects::get_one)
                    .patch(objects::update)
                    .delete(objects::archive),
            )
            .route(
                "/crm/v4/objects/{object_type}/{id}/associations/{to_type}",
                get(assoc::list),
            )
            .route(
                "/crm/v4/objects/{object_type}/{id}/associations/default/{to_type}/{to_id}",
                put(assoc::put_default),
            )
            .route(
                "/crm/v4/objects/{object_type}/{id}/associations/{to_type}/{to_id}",
                put(assoc::put_labeled).delete(assoc::delete),
            )
            .route(
                "/crm/v4/associations/{from_type}/{to_type}/batch/associate/default",
                post(assoc::batch_default),
            )
            .route(
                "/crm/v4/associations/{from_type}/{to_type}/batch/labels/archive",
                post(assoc::batch_archive_labels),
            )
            .route(
                "/crm/v4/associations/{from_type}/{to_type}/batch/{action}",
                post(assoc::batch),
            )
            .route(
                "/crm/v4/associations/{from_type}/{to_type}/labels",
                get(assoc::labels).post(assoc::create_label),
            )
            .route(
                "/crm/v3/pipelines/{object_type}",
                get(meta::pipelines).post(meta::create_pipeline),
            )
            .route(
                "/crm/v3/pipelines/{object_type}/{pipeline_id}",
                get(meta::pipeline),
            )
            .route(
                "/crm/v3/pipelines/{object_type}/{pipeline_id}/stages",
                get(meta::stages),
            )
            .route(
                "/crm/v3/pipelines/{object_type}/{pipeline_id}/stages/{stage_id}",
                get(meta::stage),
            )
            .route(
                "/crm/v3/properties/{object_type}",
                get(meta::properties).post(meta::create_property),
            )
            .route(
                "/crm/v3/properties/{object_type}/{name}",
                get(meta::property),
            )
            .route("/crm/v3/owners", get(meta::owners))
            .route("/crm/v3/owners/", get(meta::owners))
            .route("/crm/v3/owners/{owner_id}", get(meta::owner))
            .fallback(|| async { ApiError::not_found("The requested resource was not found.") })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .layer(control::api_layer(
                self.inner.faults.clone(),
                self.inner.accounting.clone(),
                error::injected_error_body,
            ))
            .with_state(self.clone());
        api.merge(admin::routes(self.clone()))
            .merge(control::control_routes(
                self.inner.faults.clone(),
                self.inner.accounting.clone(),
            ))
    }
}

/// Auth and rate limits in front of every API route.
async fn guard(State(hs): State<HubSpot>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) {
        None => {
            return ApiError::Unauthorized(
                "Authentication credentials not found. This API supports both API Key and OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview".into(),
            )
            .into_response();
        }
        Some(t) if t.trim() != hs.inner.token => {
            return ApiError::Unauthorized("Authentication credentials not found: the access token is invalid, expired or revoked.".into())
                .into_response();
        }
        Some(_) => {}
    }
    let is_search = req.method() == http::Method::POST && req.uri().path().ends_with("/search");
    match hs.inner.limits.check(is_search, &hs.inner.faults) {
        Ok(standing) => {
            let mut resp = next.run(req).await;
            standing.write(resp.headers_mut());
            resp
        }
        Err(refusal) => {
            let (err, standing) = *refusal;
            let mut resp = err.into_response();
            standing.write(resp.headers_mut());
            resp
        }
    }
}

/// A JSON body; anything unreadable is HubSpot's 400, never axum's plain-text rejection.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::validation(e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_json(&e))
    }
}

/// Query parameters as pairs (repeated keys kept).
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::validation(e.body_text()))
    }
}

impl Params {
    /// The last value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A list parameter given repeated and/or comma-separated; `None` if absent.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = false;
        for (k, v) in &self.0 {
            if k == name {
                seen = true;
                out.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
        }
        seen.then_some(out)
    }

    /// `archived=true`. Like HubSpot, any letter case is accepted (the Python
    /// client sends `True`).
    pub fn archived(&self) -> Result<bool, ApiError> {
        match self.get("archived") {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::validation(format!(
                "archived must be true or false, not {v:?}"
            ))),
        }
    }

    /// A numeric parameter within `1..=max`, or `default`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n.min(max)),
                _ => Err(ApiError::validation(format!(
                    "limit must be a positive integer, not {v:?}"
                ))),
            },
        }
    }
}

/// Path parameters; a malformed path is HubSpot's 400.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| P(t))
            .map_err(|e| ApiError::validation(e.body_text()))
    }
}

/// Parses an object type path segment.
pub fn object_type(s: &str) -> Result<schema::ObjectType, ApiError> {
    schema::ObjectType::parse(s)
        .ok_or_else(|| ApiError::validation(format!("Unable to infer object type from: {s}")))
}
