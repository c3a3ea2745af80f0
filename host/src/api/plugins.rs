//! A tenant's rules components: upload (size-capped, validated exactly as `dealbridge
//! plugin check` does — header, world, imports, link, `describe` — and stored by
//! sha256), versions, rule-test fixtures, tests on demand (the runner of `dealbridge
//! plugin test`), activation only when every test passes (the results are stored on the
//! version and shown), rollback in one call, and the invocation reports of runs.
//!
//! Compiling happens on upload (or on a cache miss when tests run) on a blocking
//! thread, never on the sync path. What this module must never do: activate a version
//! whose tests did not all pass now; run a fixture against a real CRM (the runner mocks
//! every request); show another tenant's version, fixture or report (every store call
//! carries the scope's tenant); show a server file path.

use axum::Json;
use std::time::Duration;

use axum::body::{BodyDataStream, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::TenantScope;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, content_type};
use super::tenants::check_label;
use super::{ApiConfig, AppState, now_ms};
use crate::runtime::fixture;
use crate::runtime::fixture::convert::description_to_json;
use crate::runtime::{Invocation, LoadError, LoadedPlugin};
use crate::store::{
    Activation, ComponentSource, InvocationReport, Page, PluginVersion, RuleFixture, TenantId,
};

/// A stored plugin version (never its bytes or a server path).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginVersionView {
    /// The version id.
    pub id: i64,
    /// The sha256 of the component (its content address).
    pub sha256: String,
    /// A label for people.
    pub label: String,
    /// The size in bytes.
    pub size_bytes: Option<i64>,
    /// Upload time, milliseconds since the Unix epoch.
    pub uploaded_at_ms: i64,
    /// Whether it is the tenant's active version.
    pub active: bool,
    /// The results of the latest rule-test run against it (see [`TestResults`]).
    pub test_results: Option<Value>,
}

impl From<PluginVersion> for PluginVersionView {
    fn from(v: PluginVersion) -> Self {
        PluginVersionView {
            id: v.id,
            sha256: v.sha256,
            label: v.label,
            size_bytes: v.size_bytes,
            uploaded_at_ms: v.uploaded_at_ms,
            active: v.active,
            test_results: v.test_results,
        }
    }
}

/// The answer to an upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadResult {
    /// The version (the existing one if these bytes were uploaded before).
    pub version: PluginVersionView,
    /// Whether this upload created the version.
    pub created: bool,
    /// The contract version the component targets.
    pub contract_version: String,
    /// Whether it exports `flat-rules` (the world `flat-plugin`): the service then plans on
    /// the flat form of a batch.
    pub flat_rules: bool,
    /// Its imports.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// What its `describe` returned with an empty config.
    pub description: Value,
}

/// Upload options.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// A label for people (1 to 200 characters; default `upload`).
    pub label: Option<String>,
}

/// A rule-test fixture to attach to a version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddFixture {
    /// A name unique within the version (1 to 200 characters).
    pub name: String,
    /// The fixture, in the format of `docs/fixtures.md` (with its `expect`).
    pub fixture: Value,
}

/// An attached fixture.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FixtureView {
    /// Its id.
    pub id: i64,
    /// The version it belongs to.
    pub version_id: i64,
    /// Its name.
    pub name: String,
    /// The fixture without `expect`.
    pub input: Value,
    /// Its `expect` (null when it has none).
    pub expected: Value,
    /// When it was attached.
    pub created_at_ms: i64,
}

impl From<RuleFixture> for FixtureView {
    fn from(f: RuleFixture) -> Self {
        FixtureView {
            id: f.id,
            version_id: f.version_id,
            name: f.name,
            input: f.input,
            expected: f.expected,
            created_at_ms: f.created_at_ms,
        }
    }
}

/// One case of a rule-test run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestCase {
    /// The fixture's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why not (empty when it passed).
    pub failures: Vec<String>,
    /// What the plugin returned (as `dealbridge plugin run` prints it).
    pub output: Option<Value>,
    /// Fuel used.
    pub fuel_used: Option<u64>,
}

/// A rule-test run against one version; stored on the version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestResults {
    /// The version.
    pub version_id: i64,
    /// Its sha256.
    pub sha256: String,
    /// When the tests ran.
    pub ran_at_ms: i64,
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed.
    pub failed: u32,
    /// At least one case and none failed.
    pub all_passed: bool,
    /// Every case, by name.
    pub cases: Vec<TestCase>,
}

/// An activation (of a version, or of the built-in default rules when `version_id` is null).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivationView {
    /// Its id.
    pub id: i64,
    /// The version activated; null: the built-in default rules.
    pub version_id: Option<i64>,
    /// The version active before.
    pub previous_version_id: Option<i64>,
    /// Whether it was a rollback.
    pub is_rollback: bool,
    /// Who did it (`token:<id>`).
    pub actor: String,
    /// When.
    pub activated_at_ms: i64,
}

impl From<Activation> for ActivationView {
    fn from(a: Activation) -> Self {
        ActivationView {
            id: a.id,
            version_id: a.version_id,
            previous_version_id: a.previous_version_id,
            is_rollback: a.is_rollback,
            actor: a.actor,
            activated_at_ms: a.activated_at_ms,
        }
    }
}

/// The answer to an activation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Activated {
    /// The activation.
    pub activation: ActivationView,
    /// The test run that allowed it.
    pub test_results: TestResults,
}

/// The active version and the activation history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivationState {
    /// The active version; null: the built-in default rules.
    pub active: Option<PluginVersionView>,
    /// Activations, newest first (at most 100).
    pub history: Vec<ActivationView>,
}

/// An invocation's report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvocationReportView {
    /// Its id.
    pub id: i64,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// The version invoked; null: the built-in default rules.
    pub version_id: Option<i64>,
    /// When.
    pub at_ms: i64,
    /// The report: fuel, memory, duration, logs, HTTP trace, decisions.
    pub report: Value,
}

impl From<InvocationReport> for InvocationReportView {
    fn from(r: InvocationReport) -> Self {
        InvocationReportView {
            id: r.id,
            run_id: r.run_id,
            version_id: r.version_id,
            at_ms: r.at_ms,
            report: r.report,
        }
    }
}

/// A page of invocation reports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvocationReportList {
    /// Newest first.
    pub reports: Vec<InvocationReportView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Filters and paging of invocation reports.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Only reports of this run.
    pub run_id: Option<i64>,
    /// Reports with ids below this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

pub(super) fn routes(config: &ApiConfig) -> OpenApiRouter<AppState> {
    let (schemas, paths, upload) = routes!(upload_plugin, list_plugins);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            // The upload's own cap; JSON routes keep the router's smaller one.
            upload.layer(DefaultBodyLimit::max(config.max_component_bytes)),
        ))
        .routes(routes!(get_plugin))
        .routes(routes!(add_fixture, list_fixtures))
        .routes(routes!(run_tests))
        .routes(routes!(activate))
        .routes(routes!(activation_state))
        .routes(routes!(rollback))
        .routes(routes!(list_reports))
        .routes(routes!(get_report))
}

/// A component upload body: `application/wasm` (or `application/octet-stream`), at most
/// the configured size.
pub struct ComponentUpload(pub Bytes);

impl FromRequest<AppState> for ComponentUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !matches!(
            content_type(req.headers()).as_deref(),
            Some("application/wasm" | "application/octet-stream")
        ) {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/wasm",
            });
        }
        let limit = state.shared().config.max_component_bytes;
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut stream = req.into_body().into_data_stream();
        if declared.is_some_and(|n| n > limit as u64) {
            // Not buffered at all: read on and thrown away.
            drain(&mut stream, 0).await;
            return Err(ApiError::PayloadTooLarge { limit });
        }
        read_capped(&mut stream, limit).await.map(ComponentUpload)
    }
}

/// The most of an oversized upload read and thrown away before answering 413.
const MAX_DRAIN_BYTES: u64 = 64 << 20;
/// The longest an oversized upload is read and thrown away before answering 413.
const MAX_DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads a body of at most `limit` bytes; an oversized one (a chunked body has no
/// declared length) is drained before the 413.
async fn read_capped(stream: &mut BodyDataStream, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable_body())?;
        if buf.len() + chunk.len() > limit {
            let read = (buf.len() + chunk.len()) as u64;
            drop(buf);
            drain(stream, read).await;
            return Err(ApiError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads the rest of a refused body and throws it away, within [`MAX_DRAIN_BYTES`]
/// (counting the `read` bytes already read) and [`MAX_DRAIN_TIME`]: a server that
/// answers and closes while the client is still sending makes the client see a
/// connection reset instead of the answer. Past either bound the connection is closed.
async fn drain(stream: &mut BodyDataStream, mut read: u64) {
    let rest = async {
        while read <= MAX_DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(more)) => read += more.len() as u64,
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(MAX_DRAIN_TIME, rest).await;
}

fn unreadable_body() -> ApiError {
    ApiError::BadRequest("the request body could not be read".into())
}

fn load_error(e: LoadError) -> ApiError {
    match e {
        LoadError::TooLarge { max, .. } => ApiError::PayloadTooLarge {
            limit: usize::try_from(max).unwrap_or(usize::MAX),
        },
        LoadError::Cache(_) | LoadError::Engine(_) => {
            ApiError::Internal(format!("loading a component: {e}"))
        }
        other => ApiError::InvalidComponent(other.to_string()),
    }
}

/// Validates and compiles on a blocking thread.
async fn compile(state: &AppState, bytes: Bytes) -> Result<LoadedPlugin, ApiError> {
    let runtime = state.shared().runtime.clone();
    tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("compile task: {e}")))?
        .map_err(load_error)
}

/// Keeps a compiled plugin in memory as the most recently used; when the cache is full,
/// the least recently used one is dropped.
fn cache_put(state: &AppState, plugin: &LoadedPlugin) {
    state
        .shared()
        .plugins
        .lock()
        .insert(plugin.digest().to_string(), plugin.clone());
}

/// The compiled plugin of `digest` if kept, marked as the most recently used.
fn cache_get(state: &AppState, digest: &str) -> Option<LoadedPlugin> {
    state.shared().plugins.lock().get(digest).cloned()
}

/// The built-in default rules, compiled once and kept like an uploaded version (what a
/// tenant with no active version syncs with).
pub(crate) async fn default_rules_plugin(state: &AppState) -> Result<LoadedPlugin, ApiError> {
    let bytes = crate::sync::start::default_rules();
    let digest = hex::encode(Sha256::digest(bytes));
    if let Some(p) = cache_get(state, &digest) {
        return Ok(p);
    }
    let plugin = compile(state, Bytes::from_static(bytes)).await?;
    cache_put(state, &plugin);
    Ok(plugin)
}

fn version_not_found(id: i64) -> ApiError {
    ApiError::NotFound {
        what: "plugin version",
        id: id.to_string(),
    }
}

async fn version(state: &AppState, tenant: &TenantId, id: i64) -> Result<PluginVersion, ApiError> {
    state
        .shared()
        .store
        .plugin_version(tenant, id)
        .await?
        .ok_or_else(|| version_not_found(id))
}

/// The compiled plugin of a tenant's version: from memory, or compiled from the store's
/// bytes (checked against the version's digest).
pub(crate) async fn loaded(
    state: &AppState,
    tenant: &TenantId,
    v: &PluginVersion,
) -> Result<LoadedPlugin, ApiError> {
    if let Some(p) = cache_get(state, &v.sha256) {
        return Ok(p);
    }
    let bytes = match state.shared().store.plugin_component(tenant, v.id).await? {
        Some(b) => b,
        None => match &v.component_path {
            Some(path) => tokio::fs::read(path)
                .await
                .map_err(|e| ApiError::Internal(format!("reading a stored component: {e}")))?,
            None => return Err(ApiError::Internal("a version without bytes or path".into())),
        },
    };
    if hex::encode(Sha256::digest(&bytes)) != v.sha256 {
        return Err(ApiError::Internal(format!(
            "the stored component of version {} does not match its digest",
            v.id
        )));
    }
    let plugin = compile(state, Bytes::from(bytes)).await?;
    cache_put(state, &plugin);
    Ok(plugin)
}

/// Uploads a rules component; validates it like `dealbridge plugin check`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm",
        description = "The component (`.wasm`, built for wasm32-wasip2)"),
    security(("tenant_token" = [])),
    responses(
        (status = 201, description = "A new version", body = UploadResult),
        (status = 200, description = "These bytes were uploaded before", body = UploadResult),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "Not a component of the contract; the message says why", body = ErrorBody)))]
async fn upload_plugin(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    ComponentUpload(bytes): ComponentUpload,
) -> Result<(StatusCode, Json<UploadResult>), ApiError> {
    let label = query.label.unwrap_or_else(|| "upload".into());
    check_label("label", &label)?;
    let plugin = compile(&state, bytes.clone()).await?;
    // `plugin check` also calls `describe` with an empty config.
    let described = plugin
        .describe(&Invocation::with_defaults(), &[])
        .await
        .result
        .map_err(|e| ApiError::InvalidComponent(format!("`describe` failed: {e}")))?;
    let store = &state.shared().store;
    let existing = store
        .plugin_versions(&scope.tenant)
        .await?
        .into_iter()
        .find(|v| v.sha256 == plugin.digest());
    let (v, created) = match existing {
        Some(v) => (v, false),
        None => {
            let v = store
                .add_plugin_version(
                    &scope.tenant,
                    &ComponentSource::Bytes(bytes.to_vec()),
                    &label,
                    now_ms(),
                )
                .await?;
            (v, true)
        }
    };
    cache_put(&state, &plugin);
    tracing::info!(tenant = %scope.tenant, version = v.id, sha256 = %v.sha256, created, "plugin uploaded");
    let world = plugin.world();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(UploadResult {
            version: v.into(),
            created,
            contract_version: world.contract_version.clone(),
            flat_rules: world.flat_rules,
            imports: world.imports.clone(),
            exports: world.exports.clone(),
            description: description_to_json(&described),
        }),
    ))
}

/// Lists the tenant's plugin versions, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = Vec<PluginVersionView>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_plugins(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<Vec<PluginVersionView>>, ApiError> {
    let versions = state.shared().store.plugin_versions(&scope.tenant).await?;
    Ok(Json(versions.into_iter().map(Into::into).collect()))
}

/// One plugin version, with its latest test results.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins/{version}", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("version" = i64, Path, description = "The version id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = PluginVersionView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_plugin(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<PluginVersionView>, ApiError> {
    let id = path.1;
    Ok(Json(version(&state, &scope.tenant, id).await?.into()))
}

/// Attaches a rule-test fixture to a version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{version}/fixtures", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("version" = i64, Path, description = "The version id")),
    request_body = AddFixture,
    security(("tenant_token" = [])),
    responses((status = 201, body = FixtureView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "Not a fixture; the message names the JSON path", body = ErrorBody)))]
async fn add_fixture(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<AddFixture>,
) -> Result<(StatusCode, Json<FixtureView>), ApiError> {
    let id = path.1;
    check_label("name", &body.name)?;
    let Value::Object(mut input) = body.fixture else {
        return Err(ApiError::InvalidInput(
            "`fixture` must be a JSON object".into(),
        ));
    };
    fixture::parse(&Value::Object(input.clone()).to_string())
        .map_err(|m| ApiError::InvalidInput(format!("`fixture`: {m}")))?;
    version(&state, &scope.tenant, id).await?;
    let expected = input.remove("expect").unwrap_or(Value::Null);
    let f = state
        .shared()
        .store
        .add_rule_fixture(
            &scope.tenant,
            id,
            &body.name,
            &Value::Object(input),
            &expected,
            now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(f.into())))
}

/// The fixtures of a version, by name.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/plugins/{version}/fixtures", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("version" = i64, Path, description = "The version id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = Vec<FixtureView>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_fixtures(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<Vec<FixtureView>>, ApiError> {
    let id = path.1;
    version(&state, &scope.tenant, id).await?;
    let fixtures = state
        .shared()
        .store
        .rule_fixtures(&scope.tenant, id)
        .await?;
    Ok(Json(fixtures.into_iter().map(Into::into).collect()))
}

/// Runs every fixture of a version with the `plugin test` runner and stores the results.
async fn test_version(
    state: &AppState,
    tenant: &TenantId,
    v: &PluginVersion,
) -> Result<TestResults, ApiError> {
    let plugin = loaded(state, tenant, v).await?;
    let shared = state.shared();
    let fixtures = shared.store.rule_fixtures(tenant, v.id).await?;
    let mut cases = Vec::with_capacity(fixtures.len());
    for f in fixtures {
        let mut doc = f.input.clone();
        if let (Value::Object(map), false) = (&mut doc, f.expected.is_null()) {
            map.insert("expect".into(), f.expected.clone());
        }
        let (failures, run) = match fixture::parse(&doc.to_string()) {
            Err(m) => (vec![m], None),
            Ok(fx) => match fixture::run_every_path(&plugin, &fx, &shared.config.test_limits).await
            {
                Err(e) => (vec![e.to_string()], None),
                // The output shown is the one of the path the service plans on.
                Ok(runs) => {
                    let failures = fixture::check_every_path(&fx, &runs);
                    let default_path = plugin.default_path();
                    let shown = match runs.iter().position(|r| r.path == default_path) {
                        Some(i) => runs.into_iter().nth(i),
                        None => runs.into_iter().last(),
                    };
                    (failures, shown.map(|r| r.run))
                }
            },
        };
        cases.push(TestCase {
            name: f.name,
            passed: failures.is_empty(),
            failures,
            output: run.as_ref().map(|r| r.output.clone()),
            fuel_used: run.as_ref().map(|r| r.report.fuel_used),
        });
    }
    let passed = cases.iter().filter(|c| c.passed).count() as u32;
    let failed = cases.len() as u32 - passed;
    let results = TestResults {
        version_id: v.id,
        sha256: v.sha256.clone(),
        ran_at_ms: now_ms(),
        passed,
        failed,
        all_passed: failed == 0 && passed > 0,
        cases,
    };
    let as_json = serde_json::to_value(&results)
        .map_err(|e| ApiError::Internal(format!("encoding test results: {e}")))?;
    shared
        .store
        .set_plugin_test_results(tenant, v.id, &as_json)
        .await?;
    tracing::info!(tenant = %tenant, version = v.id, passed, failed, "rule tests ran");
    Ok(results)
}

/// Runs the version's rule tests now (the `dealbridge plugin test` runner); the results
/// are stored on the version.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{version}/tests", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("version" = i64, Path, description = "The version id")),
    security(("tenant_token" = [])),
    responses((status = 200, description = "The run, passing or not", body = TestResults),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_tests(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<TestResults>, ApiError> {
    let id = path.1;
    let v = version(&state, &scope.tenant, id).await?;
    Ok(Json(test_version(&state, &scope.tenant, &v).await?))
}

/// Runs the version's rule tests and activates it only if at least one test ran and all
/// passed. The results are stored on the version either way.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{version}/activate", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("version" = i64, Path, description = "The version id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = Activated),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`no_rule_tests` or `tests_failed` (results on the version)", body = ErrorBody)))]
async fn activate(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<Activated>, ApiError> {
    let id = path.1;
    let v = version(&state, &scope.tenant, id).await?;
    let results = test_version(&state, &scope.tenant, &v).await?;
    if results.cases.is_empty() {
        return Err(ApiError::Conflict {
            code: "no_rule_tests",
            message: format!(
                "version {id} has no rule-test fixtures; attach some before activating it"
            ),
        });
    }
    if !results.all_passed {
        let first = results
            .cases
            .iter()
            .find(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.failures.join("; ")))
            .unwrap_or_default();
        let first: String = first.chars().take(500).collect();
        return Err(ApiError::Conflict {
            code: "tests_failed",
            message: format!(
                "{} of {} rule tests failed, so version {id} was not activated (first: {first}); \
                 the results are stored on the version",
                results.failed,
                results.cases.len()
            ),
        });
    }
    let activation = state
        .shared()
        .store
        .activate_plugin(
            &scope.tenant,
            Some(id),
            &format!("token:{}", scope.token_id),
            now_ms(),
        )
        .await?;
    tracing::info!(tenant = %scope.tenant, version = id, "plugin activated");
    Ok(Json(Activated {
        activation: activation.into(),
        test_results: results,
    }))
}

/// The active version and the activation history.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/activation", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = ActivationState),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn activation_state(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<ActivationState>, ApiError> {
    let store = &state.shared().store;
    let active = store.active_plugin(&scope.tenant).await?;
    let history = store.activations(&scope.tenant, Page::first(100)).await?;
    Ok(Json(ActivationState {
        active: active.map(Into::into),
        history: history.into_iter().map(Into::into).collect(),
    }))
}

/// Returns to what was active before the current activation.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/activation/rollback", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = ActivationView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "`nothing_to_roll_back`", body = ErrorBody)))]
async fn rollback(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<ActivationView>, ApiError> {
    let a = state
        .shared()
        .store
        .rollback_plugin(
            &scope.tenant,
            &format!("token:{}", scope.token_id),
            now_ms(),
        )
        .await?;
    tracing::info!(tenant = %scope.tenant, version = ?a.version_id, "plugin rolled back");
    Ok(Json(a.into()))
}

/// Invocation reports, newest first, optionally of one run.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/invocations", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"), ReportQuery),
    security(("tenant_token" = [])),
    responses((status = 200, body = InvocationReportList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_reports(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<InvocationReportList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    let reports = state
        .shared()
        .store
        .invocation_reports(
            &scope.tenant,
            q.run_id,
            Page {
                after: q.after,
                limit,
            },
        )
        .await?;
    let next_after = (reports.len() == limit as usize)
        .then(|| reports.last().map(|r| r.id))
        .flatten();
    Ok(Json(InvocationReportList {
        reports: reports.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// One invocation report.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/invocations/{id}", tag = "plugins",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("id" = i64, Path, description = "The report id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = InvocationReportView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_report(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<InvocationReportView>, ApiError> {
    let id = path.1;
    let not_found = || ApiError::NotFound {
        what: "invocation report",
        id: id.to_string(),
    };
    // Reports list newest first below `after`: the page just above `id` starts with it.
    let after = id.checked_add(1).ok_or_else(not_found)?;
    let found = state
        .shared()
        .store
        .invocation_reports(
            &scope.tenant,
            None,
            Page {
                after: Some(after),
                limit: 1,
            },
        )
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(not_found)?;
    Ok(Json(found.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_map_to_422_except_service_faults() {
        let e = load_error(LoadError::CoreModule);
        assert_eq!(e.status_and_code().1, "invalid_component");
        assert!(e.public_message().contains("wasm32-wasip2"));
        let e = load_error(LoadError::ForbiddenImports {
            imports: vec!["wasi:filesystem/types@0.2.6".into()],
        });
        assert!(e.public_message().contains("wasi:filesystem"));
        assert_eq!(
            load_error(LoadError::TooLarge { size: 9, max: 8 })
                .status_and_code()
                .0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let e = load_error(LoadError::Cache("/var/cache/x: denied".into()));
        assert_eq!(e.status_and_code().0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.public_message().contains("/var/cache"));
    }
}
