//! The HubSpot emulator: CRM objects v3 (deals, companies, contacts: CRUD,
//! list, batch, search), associations v4, pipelines, properties and owners,
//! behind a private-app Bearer token and HubSpot's rate limits, plus a control
//! API under `/__emulator/`.
//!
//! Webhooks: the private-app token belongs to the app [`APP_ID`] of portal
//! [`PORTAL_ID`]; a second token, [`HubSpot::user_token`], stands for a person
//! in HubSpot's UI. The developer Webhooks v3 API (`developer.rs`, key in
//! `?hapikey=`) sets the app's target URL and subscriptions; every CRM object
//! write then queues events for the active subscriptions (`webhooks.rs`:
//! `changeSource` `INTEGRATION` + appId for the app's token, `CRM_UI` +
//! `userId:<n>` for the user's), which `delivery.rs` POSTs, signed with
//! `X-HubSpot-Signature-v3`, 100 at most per request, retrying failures.
//! Control-plane changes (seed, reset, snapshot load) make no events, keep the
//! settings and subscriptions and discard queued events.
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
pub mod delivery;
pub mod developer;
pub mod error;
pub mod index;
pub mod meta;
pub mod objects;
pub mod ratelimit;
pub mod schema;
pub mod search;
pub mod seed;
pub mod store;
pub mod webhooks;

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
pub use self::webhooks::{APP_ID, DeliveryOptions, PORTAL_ID, WebhookStats};
use self::webhooks::{Actor, Recorder, Webhooks};
use crate::Seed;
use crate::control::{self, Accounting, Faults};

struct Inner {
    store: RwLock<Store>,
    faults: Faults,
    accounting: Accounting,
    limits: RateLimiter,
    token: String,
    user_token: String,
    seed: Mutex<Seed>,
    webhooks: Webhooks,
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
                user_token: format!(
                    "ui-user-{}-5f1c2e7a-3b8d-4a6f-9e21-c7d4b0a8f365",
                    webhooks::UI_USER_ID
                ),
                seed: Mutex::new(*seed),
                webhooks: Webhooks::default(),
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

    /// A second token that authenticates every CRM route like [`HubSpot::token`]
    /// (same rate limits and accounting) but stands for a person editing in
    /// HubSpot's UI: webhook events of its changes carry
    /// `changeSource: "CRM_UI"`, `sourceId: "userId:<UI_USER_ID>"`.
    pub fn user_token(&self) -> String {
        self.inner.user_token.clone()
    }

    /// The portal (hub) id: `portalId` of webhook events, `hubId` of token info.
    pub fn portal_id(&self) -> u64 {
        PORTAL_ID
    }

    /// The id of the app the private-app token belongs to ([`APP_ID`]).
    pub fn app_id(&self) -> u64 {
        APP_ID
    }

    /// The developer API key the webhooks API takes as `?hapikey=`.
    pub fn developer_api_key(&self) -> String {
        webhooks::DEVELOPER_API_KEY.to_string()
    }

    /// The app's client secret, the key of `X-HubSpot-Signature-v3`.
    pub fn client_secret(&self) -> String {
        webhooks::CLIENT_SECRET.to_string()
    }

    /// The app's webhook settings, subscriptions and event queue.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// Webhook delivery counters (also `GET /__emulator/webhooks`).
    pub fn webhook_stats(&self) -> WebhookStats {
        self.inner.webhooks.stats()
    }

    /// Waits until no webhook event is queued or in flight; `false` if
    /// `timeout` passed first (e.g. deliveries are paused or keep failing).
    pub async fn wait_webhooks_idle(&self, timeout: std::time::Duration) -> bool {
        self.inner.webhooks.wait_idle(timeout).await
    }

    /// Replaces the webhook delivery settings (also `PUT /__emulator/webhooks`).
    pub fn set_webhook_delivery(&self, options: DeliveryOptions) {
        self.inner.webhooks.set_options(options);
    }

    /// A CRM write of `object` records by `actor`: `f` runs with the store
    /// write-locked and a [`Recorder`] for the app's active subscriptions,
    /// whose events are queued before the lock is released.
    pub fn write_crm<T>(
        &self,
        object: schema::ObjectType,
        actor: Actor,
        f: impl FnOnce(&mut Store, &mut Recorder) -> T,
    ) -> T {
        let mut recorder = self.inner.webhooks.recorder(object, actor);
        let mut store = self.inner.store.write();
        let out = f(&mut store, &mut recorder);
        self.inner.webhooks.queue(recorder);
        drop(store);
        out
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
        self.inner.webhooks.discard_queued();
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
        self.inner.webhooks.discard_queued();
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
        let developer = developer::routes(self.clone()).layer(control::api_layer(
            self.inner.faults.clone(),
            self.inner.accounting.clone(),
            error::injected_error_body,
        ));
        api.merge(developer)
            .merge(admin::routes(self.clone()))
            .merge(control::control_routes(
                self.inner.faults.clone(),
                self.inner.accounting.clone(),
            ))
    }
}

/// Auth and rate limits in front of every API route. The token decides the
/// [`Actor`] handlers attribute changes to.
async fn guard(State(hs): State<HubSpot>, mut req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let actor = match auth.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) {
        None => {
            return ApiError::Unauthorized(
                "Authentication credentials not found. This API supports both API Key and OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview".into(),
            )
            .into_response();
        }
        Some(t) if t.trim() == hs.inner.token => Actor::App,
        Some(t) if t.trim() == hs.inner.user_token => Actor::User,
        Some(_) => {
            return ApiError::Unauthorized("Authentication credentials not found: the access token is invalid, expired or revoked.".into())
                .into_response();
        }
    };
    req.extensions_mut().insert(actor);
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

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    /// Who the request's token stands for (set by the auth guard; the app by default).
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Actor>()
            .copied()
            .unwrap_or(Actor::App))
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
