//! The multi-tenant HTTP service behind `dealbridge serve`: a JSON API (axum) that
//! documents itself at `/openapi.json` (utoipa, generated from the handlers).
//!
//! - [`error`]: the one error type and its one status mapping; JSON rejections.
//! - [`auth`]: the operator token and tenant API tokens; the extractors that every
//!   route uses to learn its caller.
//! - [`token_cache`]: tenant tokens verified recently (bounded staleness), so a tenant
//!   route reads the store once, for its own data.
//! - [`secrets`]: AES-256-GCM for CRM connections at rest, with previous keys for rotation.
//! - [`reseal`]: seals every stored connection again under the current key (`dealbridge
//!   keys reseal`), so previous keys can be retired.
//! - [`tenants`]: operator routes (create, list, disable, tokens).
//! - [`connections`]: a tenant's Salesforce and HubSpot connections (write-only secrets).
//! - [`plugins`]: upload, rule-test fixtures, tests on demand, activation gated on the
//!   tests, rollback, invocation reports.
//! - [`health`]: `/healthz`, `/readyz`, `/openapi.json`.
//! - [`runs`]: the run history with counters.
//! - [`records`]: one record's current link and per-record history.
//! - [`sync_health`]: open errors by health group, paged, and their CSV/JSON export.
//! - [`metrics`]: `/metrics` (Prometheus text, operator token).
//! - [`paging`]: `after`/`limit` keyset paging shared by the list routes.
//! - [`syncs`]: the write side of a tenant's syncs: schedule, sync now, pause, resume,
//!   dry run, resyncs (runs themselves happen in [`crate::service`]).
//!
//! Routes: operator routes under `/v1/tenants` need the operator token; everything under
//! `/v1/tenants/{tenant}/...` needs one of that tenant's tokens ([`auth::TenantScope`]
//! refuses another tenant's before the handler runs). Every refusal is a 4xx JSON error.
//!
//! What this module must never do: return or log a CRM credential, a token secret or
//! hash, or an internal error detail; let a request of one tenant read or change
//! another tenant's rows; compile a component other than on upload or on a cache miss;
//! panic on input (a panic that slips through becomes a logged 500, not a dropped
//! connection).

pub mod auth;
pub mod connections;
pub mod error;
pub mod health;
pub mod metrics;
pub mod paging;
pub mod plugins;
pub mod records;
pub mod reseal;
pub mod runs;
pub mod secrets;
pub mod sync_health;
pub mod syncs;
pub mod tenants;
pub mod token_cache;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hashlink::LruCache;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Operator, OperatorToken, OperatorTokenError, TenantScope};
pub use error::{ApiError, ErrorBody};
pub use secrets::{CipherError, ConnectionCipher, SecretKeyError};

use crate::runtime::{Limits, LoadedPlugin, Runtime};
use crate::store::{Store, TimestampMs};

/// Environment variable holding the operator token.
pub const OPERATOR_TOKEN_ENV: &str = "DEALBRIDGE_OPERATOR_TOKEN";
/// Environment variable holding the connection key (the current one: it seals).
pub const SECRET_KEY_ENV: &str = "DEALBRIDGE_SECRET_KEY";
/// Environment variable holding previous connection keys, separated by commas or white
/// space: they still open what they sealed, until [`reseal`] moved it to the current key.
pub const PREVIOUS_SECRET_KEYS_ENV: &str = "DEALBRIDGE_PREVIOUS_SECRET_KEYS";

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The largest component upload, in bytes. Default 16 MiB (the runtime's own cap
    /// applies too).
    pub max_component_bytes: usize,
    /// The largest JSON body, in bytes. Default 2 MiB.
    pub max_json_bytes: usize,
    /// The limits each rule-test invocation runs under (a fixture may override them,
    /// exactly as in `dealbridge plugin test`).
    pub test_limits: Limits,
    /// How many compiled plugins stay in memory (by digest); when full, the least
    /// recently used is dropped (and compiled again, or loaded from the compile cache,
    /// when next needed).
    pub plugin_cache_entries: usize,
    /// How long a tenant token found valid is trusted without reading the store again:
    /// the longest a revoke or a disable made by another replica takes to be honoured
    /// here when its announcement is missed (this process honours its own at once, and on
    /// PostgreSQL those of other replicas as soon as [`crate::service::listen_to_replicas`]
    /// hears them). Default 5 s; zero reads the store on every request.
    pub token_cache_ttl: Duration,
    /// How many tenant tokens are kept verified at most. Default 10,000.
    pub token_cache_entries: usize,
    /// The longest a dry run may take, in seconds. Default 120.
    pub dry_run_budget_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_component_bytes: 16 << 20,
            max_json_bytes: 2 << 20,
            test_limits: Limits::default(),
            plugin_cache_entries: 32,
            token_cache_ttl: Duration::from_secs(5),
            token_cache_entries: 10_000,
            dry_run_budget_secs: 120,
        }
    }
}

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    /// The operator token is refused.
    #[error("{OPERATOR_TOKEN_ENV}: {0}")]
    OperatorToken(#[from] OperatorTokenError),
    /// The connection key is missing.
    #[error("{SECRET_KEY_ENV} must hold the 32-byte connection key (64 hex characters or base64)")]
    MissingSecretKey,
    /// The connection key is refused.
    #[error("{SECRET_KEY_ENV}: {0}")]
    SecretKey(#[from] SecretKeyError),
    /// A previous connection key is refused.
    #[error("{PREVIOUS_SECRET_KEYS_ENV}: {0}")]
    PreviousSecretKeys(SecretKeyError),
}

/// The connection cipher from the environment: the current key from [`SECRET_KEY_ENV`]
/// and the previous keys, if any, from [`PREVIOUS_SECRET_KEYS_ENV`].
pub fn cipher_from_env() -> Result<ConnectionCipher, ApiSetupError> {
    let current = std::env::var(SECRET_KEY_ENV).map_err(|_| ApiSetupError::MissingSecretKey)?;
    let previous = std::env::var(PREVIOUS_SECRET_KEYS_ENV).unwrap_or_default();
    cipher_from_texts(&current, &previous)
}

/// The connection cipher from the current key's text and the previous keys' list.
pub fn cipher_from_texts(current: &str, previous: &str) -> Result<ConnectionCipher, ApiSetupError> {
    ConnectionCipher::from_key_text(current)?
        .with_previous_keys_text(previous)
        .map_err(ApiSetupError::PreviousSecretKeys)
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: Runtime,
    pub(crate) operator: OperatorToken,
    pub(crate) cipher: ConnectionCipher,
    pub(crate) config: ApiConfig,
    pub(crate) rng: SystemRandom,
    /// Compiled plugins by digest, the least recently used dropped first.
    pub(crate) plugins: Mutex<LruCache<String, LoadedPlugin>>,
    /// Tenant tokens verified recently.
    pub(crate) tokens: token_cache::TokenCache,
    shutting_down: AtomicBool,
    /// Wakes an idle scheduler worker of this process when a tenant became due.
    scheduler_wake: tokio::sync::Notify,
}

impl AppState {
    /// The state of a service on `store` and `runtime`, with the operator token and the
    /// connection key (as read from [`OPERATOR_TOKEN_ENV`] and [`SECRET_KEY_ENV`]).
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Runtime,
        operator_token: &str,
        secret_key: &str,
        config: ApiConfig,
    ) -> Result<Self, ApiSetupError> {
        let cipher = ConnectionCipher::from_key_text(secret_key)?;
        Self::with_cipher(store, runtime, operator_token, cipher, config)
    }

    /// [`AppState::new`] with a connection cipher built by the caller (e.g. holding
    /// previous keys: [`cipher_from_env`]).
    pub fn with_cipher(
        store: Arc<dyn Store>,
        runtime: Runtime,
        operator_token: &str,
        cipher: ConnectionCipher,
        config: ApiConfig,
    ) -> Result<Self, ApiSetupError> {
        Ok(AppState {
            inner: Arc::new(Shared {
                store,
                runtime,
                operator: OperatorToken::new(operator_token)?,
                cipher,
                plugins: Mutex::new(LruCache::new(config.plugin_cache_entries.max(1))),
                tokens: token_cache::TokenCache::new(
                    config.token_cache_entries,
                    config.token_cache_ttl,
                ),
                config,
                rng: SystemRandom::new(),
                shutting_down: AtomicBool::new(false),
                scheduler_wake: tokio::sync::Notify::new(),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner
    }

    /// Marks the service as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Tells this process's scheduler that a tenant became due (sync now, resume, a
    /// resync): one idle worker looks for it at once instead of at its next idle poll. If
    /// no worker is idle, the next one to become idle looks at once.
    pub fn wake_scheduler(&self) {
        self.inner.scheduler_wake.notify_one();
    }

    /// Forgets the verified tokens a revoke, disable or delete took away (announced by
    /// another replica: [`crate::service::listen_to_replicas`]).
    pub fn forget_revoked(&self, revoked: &crate::store::Revoked) {
        match revoked {
            crate::store::Revoked::Tenant(tenant) => self.inner.tokens.forget_tenant(tenant),
            crate::store::Revoked::Token { tenant, token_id } => {
                self.inner.tokens.forget_token(tenant, token_id)
            }
        }
    }

    /// Forgets every verified token: each is read from the store at its next use (after
    /// announcements of other replicas may have been missed).
    pub fn forget_all_tokens(&self) {
        self.inner.tokens.forget_all();
    }

    /// Resolves at the next [`AppState::wake_scheduler`] (or at once if one came while no
    /// worker was waiting).
    pub(crate) async fn scheduler_woken(&self) {
        self.inner.scheduler_wake.notified().await;
    }

    /// The digests of the compiled plugins kept in memory, the least recently used first.
    pub fn cached_plugin_digests(&self) -> Vec<String> {
        self.inner
            .plugins
            .lock()
            .iter()
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}

/// The current time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The OpenAPI document's fixed parts; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dealbridge",
        description = "Two-way Salesforce Opportunity / HubSpot deal sync: the multi-tenant service API."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness, readiness, this document"),
        (name = "tenants", description = "Operator: tenant administration"),
        (name = "connections", description = "A tenant's CRM connections (secrets are write-only)"),
        (name = "plugins", description = "A tenant's rules components, rule tests and activation"),
        (name = "runs", description = "A tenant's sync runs and their counters"),
        (name = "records", description = "One record's link and per-record history"),
        (name = "sync health", description = "Open sync errors by health group, and their export"),
        (name = "operations", description = "Operator: Prometheus metrics"),
        (name = "syncs", description = "A tenant's sync schedule, sync now, pause, dry run and resyncs"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "operator_token",
                "The operator token (DEALBRIDGE_OPERATOR_TOKEN).",
            ),
            (
                "tenant_token",
                "A tenant API token (`dbt.<tenant>.<id>.<secret>`).",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The routes and their OpenAPI document, before the state is attached.
fn routes(config: &ApiConfig) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(tenants::routes())
        .merge(connections::routes())
        .merge(reseal::routes())
        .merge(plugins::routes(config))
        .merge(runs::routes())
        .merge(records::routes())
        .merge(sync_health::routes())
        .merge(metrics::routes())
        .merge(syncs::routes())
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(&ApiConfig::default()).1
}

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    let (router, doc) = routes(&state.shared().config);
    let doc = Arc::new(doc);
    let json_limit = state.shared().config.max_json_bytes;
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::Extension(error::JsonLimit(json_limit)))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .layer(axum::middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops taking new
/// connections and lets the requests in flight finish (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let on_shutdown = async move {
        shutdown.await;
        state.begin_shutdown();
        tracing::info!("shutting down: finishing requests in flight");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(on_shutdown)
        .await
}

/// One structured log line per request: method, route template, status, duration,
/// `tenant_id` when a tenant token was used and `run_id` when the route names a run;
/// never the body, the query string or the Authorization header. Also counts the request
/// in the process metrics (by route template, never by path).
async fn log_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        tenant_id = tracing::field::Empty,
        run_id = tracing::field::Empty,
        actor = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    crate::telemetry::http_request(method.as_str(), &route, status, elapsed);
    let _entered = span.enter();
    tracing::info!(status, duration_ms = elapsed * 1000.0, "request");
    response
}

/// Answers `Connection: close` when a request's body was left unread: refused before it was
/// read (a wrong content type, a bad query), or too large to drain (see `plugins::drain`).
///
/// The server closes such a connection after the answer, since the unread body is still on it.
/// Without the header a client may send its next request on that connection as it closes and
/// see a broken pipe; with it, the client opens a new one. A body read to its end keeps the
/// connection, as does a request without a body.
async fn close_after_refused_body(req: Request, next: Next) -> Response {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|len| len.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let read_to_end = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let seen = read_to_end.clone();
    let mut data = body.into_data_stream();
    let tracked = futures_util::stream::poll_fn(move |cx| {
        let polled = data.poll_next_unpin(cx);
        if let std::task::Poll::Ready(None) = polled {
            seen.store(true, Ordering::Release);
        }
        polled
    });
    let req = Request::from_parts(parts, axum::body::Body::from_stream(tracked));
    let mut response = next.run(req).await;
    if !read_to_end.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn on_panic(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The payload may quote request data; it is not logged.
    ApiError::Internal("a handler panicked".into()).into_response()
}
