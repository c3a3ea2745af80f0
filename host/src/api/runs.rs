//! A tenant's run history: every sync run with its trigger, status, times and counters
//! (records read, created, updated, archived, skipped, echoes suppressed, failed, API
//! calls), newest first, and one run by id.
//!
//! Read-only: runs are written by the engine. What this module must never do: show
//! another tenant's run (every store call carries the scope's tenant, so a foreign id is
//! a 404 like a missing one).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::TenantScope;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::paging::{next_after, page};
use crate::store::{Run, RunCounters, RunStatus, RunTrigger};

/// One sync run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The run id.
    pub id: i64,
    /// What started it.
    pub trigger: RunTrigger,
    /// How it is going or how it ended.
    pub status: RunStatus,
    /// Start, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// End; null while running.
    pub finished_at_ms: Option<i64>,
    /// `finished_at_ms - started_at_ms`; null while running.
    pub duration_ms: Option<i64>,
    /// What it did.
    pub counters: RunCounters,
    /// Why it failed, partially failed or was abandoned.
    pub message: Option<String>,
}

impl From<Run> for RunView {
    fn from(r: Run) -> Self {
        RunView {
            id: r.id,
            trigger: r.trigger,
            status: r.status,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            duration_ms: r
                .finished_at_ms
                .map(|end| end.saturating_sub(r.started_at_ms)),
            counters: r.counters,
            message: r.message,
        }
    }
}

/// A page of runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Paging of the run history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Runs with ids below this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// The run history, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/runs", tag = "runs",
    params(("tenant" = String, Path, description = "The tenant id"), RunQuery),
    security(("tenant_token" = [])),
    responses((status = 200, body = RunList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_runs(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Json<RunList>, ApiError> {
    let page = page(q.after, q.limit)?;
    let runs = state.shared().store.runs(&scope.tenant, page).await?;
    Ok(Json(RunList {
        next_after: next_after(&runs, page, |r| r.id),
        runs: runs.into_iter().map(Into::into).collect(),
    }))
}

/// One run with its counters.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/runs/{run}", tag = "runs",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("run" = i64, Path, description = "The run id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = RunView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<RunView>, ApiError> {
    let run_id = path.1;
    tracing::Span::current().record("run_id", run_id);
    let run = state
        .shared()
        .store
        .run(&scope.tenant, run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "run",
            id: run_id.to_string(),
        })?;
    Ok(Json(run.into()))
}
