//! A tenant's syncs, the write side: the schedule (`GET /v1/tenants/{tenant}/sync`,
//! `PUT .../sync/schedule`), the rules plugin's config (`PUT .../sync/plugin-config`), sync now (`POST .../sync/trigger`), pause and resume, a dry
//! run that returns the planned writes (`POST .../sync/dry-run`) and resyncs of selected
//! records or of everything (`POST .../resyncs`, `GET .../resyncs/{resync}`).
//!
//! Runs happen in the scheduler ([`crate::service`]) of whichever replica leases the
//! tenant, so these routes only change what the store says: the schedule row, or a
//! pending resync that the next run consumes. The dry run is the exception: it plans one
//! cycle in this request, under the tenant's lease (refused while a run holds it).
//!
//! What this module must never do: start a write to a CRM in a request (only the
//! scheduler writes), let a record id that is not shaped like one reach SOQL, or act on
//! another tenant (every store call carries the scope's tenant).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::TenantScope;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::{AppState, now_ms};
use crate::service::engines::BuildError;
use crate::service::{self, DryRunError, valid_record_id};
use crate::store::{ObjectPair, PendingResync, ResyncRequest, Side, SyncJob, TenantId};
use crate::sync::SyncError;

/// Shortest poll interval, in seconds.
const MIN_INTERVAL_SECS: u64 = 1;
/// Longest poll interval, in seconds (one day).
const MAX_INTERVAL_SECS: u64 = 86_400;
/// Most record ids in one resync request.
const MAX_RESYNC_IDS: usize = 100;

/// A tenant's sync schedule and whether a run holds its lease now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    /// Seconds between the end of one run and the next.
    pub interval_secs: u64,
    /// Paused: the scheduler does not start runs (one going on finishes).
    pub paused: bool,
    /// When the next run is due, milliseconds since the Unix epoch.
    pub next_due_at_ms: i64,
    /// A run was asked for and has not started yet, or was asked for during a run.
    pub run_requested: bool,
    /// Runs in a row that failed; the scheduler waits longer after each (up to a cap).
    pub consecutive_failures: i64,
    /// A run (or a dry run) holds the tenant's lease now.
    pub running: bool,
    /// The config given to the rules plugin (the active version, or the default rules).
    pub plugin_config: Value,
}

impl SyncStatus {
    fn of(job: &SyncJob, now: i64) -> Self {
        SyncStatus {
            interval_secs: u64::try_from(job.interval_ms / 1000).unwrap_or(0),
            paused: job.paused,
            next_due_at_ms: job.next_due_at_ms,
            run_requested: job.run_requested,
            consecutive_failures: job.consecutive_failures,
            running: job.lease_holder.is_some() && job.lease_expires_at_ms.is_some_and(|e| e > now),
            plugin_config: job.plugin_config.clone(),
        }
    }
}

/// A new schedule. Unknown keys are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// Seconds between runs, 1 to 86400 (a whole number).
    pub interval_secs: u64,
}

/// What a resync covers.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResyncScope {
    /// Every record of every synced pair.
    All,
    /// The records named by `object_pair`, `side` and `ids`.
    Records,
}

/// A resync to run. Unknown keys are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncInput {
    /// `all` or `records`.
    pub scope: ResyncScope,
    /// With `records`: `opportunity_deal`, `account_company` or `contact_contact`.
    #[serde(default)]
    pub object_pair: Option<String>,
    /// With `records`: `salesforce` or `hubspot`, the side the ids belong to.
    #[serde(default)]
    pub side: Option<String>,
    /// With `records`: 1 to 100 record ids (Salesforce: 15 or 18 letters and digits;
    /// HubSpot: digits).
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

impl ResyncInput {
    fn into_request(self) -> Result<ResyncRequest, ApiError> {
        let bad = |m: String| Err(ApiError::InvalidInput(m));
        match self.scope {
            ResyncScope::All => {
                if self.object_pair.is_some() || self.side.is_some() || self.ids.is_some() {
                    return bad("a resync of `all` takes no `object_pair`, `side` or `ids`".into());
                }
                Ok(ResyncRequest::All)
            }
            ResyncScope::Records => {
                let (Some(pair), Some(side), Some(ids)) = (self.object_pair, self.side, self.ids)
                else {
                    return bad(
                        "a resync of `records` needs `object_pair`, `side` and `ids`".into(),
                    );
                };
                let Ok(object_pair) = pair.parse::<ObjectPair>() else {
                    return bad(format!(
                        "`object_pair` must be one of opportunity_deal, account_company, contact_contact, not {pair:?}"
                    ));
                };
                let Ok(side) = side.parse::<Side>() else {
                    return bad(format!(
                        "`side` must be salesforce or hubspot, not {side:?}"
                    ));
                };
                if ids.is_empty() || ids.len() > MAX_RESYNC_IDS {
                    return bad(format!(
                        "`ids` must hold 1 to {MAX_RESYNC_IDS} ids, not {}",
                        ids.len()
                    ));
                }
                if let Some(id) = ids.iter().find(|id| !valid_record_id(side, id)) {
                    let shape = match side {
                        Side::Salesforce => "15 or 18 letters and digits",
                        Side::HubSpot => "1 to 20 digits",
                    };
                    return bad(format!(
                        "`ids`: {:?} is not a {side} record id ({shape})",
                        id.chars().take(40).collect::<String>()
                    ));
                }
                Ok(ResyncRequest::Records {
                    object_pair,
                    side,
                    ids,
                })
            }
        }
    }
}

/// A resync: pending until the run that does it finishes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResyncView {
    /// Its id.
    pub id: i64,
    /// What it covers (`{"scope": "all"}` or `{"scope": "records", ...}`).
    pub request: Value,
    /// `pending` or `done`.
    pub status: String,
    /// When it was asked for, milliseconds since the Unix epoch.
    pub requested_at_ms: i64,
    /// When a run finished it.
    pub done_at_ms: Option<i64>,
    /// The (last) run that did it.
    pub run_id: Option<i64>,
    /// `succeeded`, `partially_failed: N records` or `failed: why`.
    pub outcome: Option<String>,
}

impl From<PendingResync> for ResyncView {
    fn from(p: PendingResync) -> Self {
        ResyncView {
            id: p.id,
            request: serde_json::to_value(&p.request).unwrap_or(Value::Null),
            status: if p.done_at_ms.is_some() {
                "done"
            } else {
                "pending"
            }
            .into(),
            requested_at_ms: p.requested_at_ms,
            done_at_ms: p.done_at_ms,
            run_id: p.run_id,
            outcome: p.outcome,
        }
    }
}

/// One write a dry run planned.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlannedWrite {
    /// `create`, `update`, `delete` or `associate`.
    pub op: String,
    /// The CRM it would write to: `salesforce` or `hubspot`.
    pub target: String,
    /// The object pair.
    pub pair: String,
    /// The record (source id, or target id for updates).
    pub record: String,
    /// The fields it would write, or the associations.
    pub detail: Value,
}

/// A record the dry run could not plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlannedFailure {
    /// The object pair.
    pub pair: String,
    /// `side:id`.
    pub record: String,
    /// The health group.
    pub category: String,
    /// Why.
    pub message: String,
}

/// What one cycle would do now. Nothing was written.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DryRunReport {
    /// The planned writes.
    pub planned: Vec<PlannedWrite>,
    /// Records that would fail.
    pub failures: Vec<PlannedFailure>,
    /// The cycle's counters (reads, API calls, skips).
    pub counters: Value,
    /// How long planning took, in milliseconds.
    pub millis: u64,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_status))
        .routes(routes!(set_schedule))
        .routes(routes!(set_plugin_config))
        .routes(routes!(trigger))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(dry_run))
        .routes(routes!(request_resync))
        .routes(routes!(get_resync))
}

async fn status_of(state: &AppState, tenant: &TenantId) -> Result<SyncStatus, ApiError> {
    let job = state
        .shared()
        .store
        .sync_job(tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "tenant",
            id: tenant.to_string(),
        })?;
    Ok(SyncStatus::of(&job, now_ms()))
}

/// The schedule and whether a run is going on.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sync", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn sync_status(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<SyncStatus>, ApiError> {
    Ok(Json(status_of(&state, &scope.tenant).await?))
}

/// Sets the poll interval. A shorter interval takes effect at once.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/sync/schedule", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    request_body = ScheduleInput,
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncStatus),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn set_schedule(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ScheduleInput>,
) -> Result<Json<SyncStatus>, ApiError> {
    if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&input.interval_secs) {
        return Err(ApiError::InvalidInput(format!(
            "`interval_secs` must be {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS}, not {}",
            input.interval_secs
        )));
    }
    let now = now_ms();
    let interval_ms = i64::try_from(input.interval_secs * 1000).unwrap_or(i64::MAX);
    let job = state
        .shared()
        .store
        .set_sync_interval(&scope.tenant, interval_ms, now)
        .await?;
    tracing::info!(tenant = %scope.tenant, interval_secs = input.interval_secs, "schedule set");
    Ok(Json(SyncStatus::of(&job, now)))
}

/// Sets the config given to the tenant's rules plugin (a JSON object, as `[plugin.config]`
/// of a `tenant.toml`); the next run uses it.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/sync/plugin-config", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    request_body(content = Object, description = "The plugin's config"),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncStatus),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_plugin_config(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(config): ApiJson<Value>,
) -> Result<Json<SyncStatus>, ApiError> {
    if !config.is_object() {
        return Err(ApiError::InvalidInput(
            "the plugin config must be a JSON object".into(),
        ));
    }
    let job = state
        .shared()
        .store
        .set_plugin_config(&scope.tenant, &config)
        .await?;
    tracing::info!(tenant = %scope.tenant, "plugin config set");
    Ok(Json(SyncStatus::of(&job, now_ms())))
}

/// Asks for a sync now: the scheduler of some replica starts it as soon as a worker is
/// free (after the run going on, if any); an idle worker of this replica is woken at
/// once. Its run is recorded with the trigger `manual`. A paused tenant stays paused.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/sync/trigger", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 202, description = "Due now", body = SyncStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn trigger(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<SyncStatus>), ApiError> {
    let now = now_ms();
    let job = state
        .shared()
        .store
        .request_sync(&scope.tenant, now)
        .await?;
    state.wake_scheduler();
    tracing::info!(tenant = %scope.tenant, "sync requested");
    Ok((StatusCode::ACCEPTED, Json(SyncStatus::of(&job, now))))
}

async fn set_paused(
    state: &AppState,
    tenant: &TenantId,
    paused: bool,
) -> Result<Json<SyncStatus>, ApiError> {
    let job = state.shared().store.set_sync_paused(tenant, paused).await?;
    if !paused {
        state.wake_scheduler();
    }
    tracing::info!(tenant = %tenant, paused, "pause set");
    Ok(Json(SyncStatus::of(&job, now_ms())))
}

/// Pauses scheduled runs (a run going on finishes). Idempotent.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/sync/pause", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn pause(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<SyncStatus>, ApiError> {
    set_paused(&state, &scope.tenant, true).await
}

/// Resumes scheduled runs. Idempotent.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/sync/resume", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn resume(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<SyncStatus>, ApiError> {
    set_paused(&state, &scope.tenant, false).await
}

fn dry_run_error(e: DryRunError) -> ApiError {
    match e {
        DryRunError::Busy => ApiError::Conflict {
            code: "sync_running",
            message: e.to_string(),
        },
        DryRunError::Build(BuildError::NotConnected(crm)) => ApiError::Conflict {
            code: "not_connected",
            message: format!("the {crm} connection is not set"),
        },
        DryRunError::Build(BuildError::Service(api)) => api,
        DryRunError::Build(BuildError::Sync(e)) | DryRunError::Sync(e) => sync_conflict(e),
        DryRunError::OverBudget(_) => ApiError::Conflict {
            code: "over_budget",
            message: e.to_string(),
        },
        DryRunError::Store(s) => s.into(),
    }
}

/// A sync failure the tenant can act on (credentials, set-up, a CRM refusing); the
/// message comes from the engine and the CRMs, never holds a credential.
fn sync_conflict(e: SyncError) -> ApiError {
    match e {
        SyncError::Store(s) => s.into(),
        other => ApiError::Conflict {
            code: "sync_failed",
            message: other.to_string(),
        },
    }
}

/// Plans one cycle with the stored connections and the active plugin and returns the
/// writes it would make. Writes nothing: no CRM write, no metadata created, no sync
/// state. Refused (409 `sync_running`) while a run holds the tenant's lease.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/sync/dry-run", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = DryRunReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "`sync_running`, `not_connected`, `sync_failed` or `over_budget`", body = ErrorBody)))]
async fn dry_run(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<DryRunReport>, ApiError> {
    let budget = Duration::from_secs(state.shared().config.dry_run_budget_secs);
    let report = service::dry_run(&state, &scope.tenant, budget)
        .await
        .map_err(dry_run_error)?;
    Ok(Json(DryRunReport {
        planned: report
            .planned
            .into_iter()
            .map(|p| PlannedWrite {
                op: p.op.into(),
                target: p.target.into(),
                pair: p.pair.into(),
                record: p.record,
                detail: p.detail,
            })
            .collect(),
        failures: report
            .failures
            .into_iter()
            .map(|f| PlannedFailure {
                pair: f.pair.into(),
                record: f.record,
                category: f.category.into(),
                message: f.message,
            })
            .collect(),
        counters: serde_json::to_value(report.counters).unwrap_or(Value::Null),
        millis: report.millis,
    }))
}

/// Asks for a resync of the named records, or of everything. Whichever replica runs the
/// tenant next does it (before its regular cycle); poll `GET .../resyncs/{resync}`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/resyncs", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id")),
    request_body = ResyncInput,
    security(("tenant_token" = [])),
    responses((status = 202, description = "Pending", body = ResyncView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn request_resync(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ResyncInput>,
) -> Result<(StatusCode, Json<ResyncView>), ApiError> {
    let request = input.into_request()?;
    let pending = state
        .shared()
        .store
        .request_resync(&scope.tenant, &request, now_ms())
        .await?;
    state.wake_scheduler();
    tracing::info!(tenant = %scope.tenant, resync = pending.id, "resync requested");
    Ok((StatusCode::ACCEPTED, Json(pending.into())))
}

/// One resync and, once done, its outcome.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/resyncs/{resync}", tag = "syncs",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("resync" = i64, Path, description = "The resync id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = ResyncView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_resync(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, i64)>,
) -> Result<Json<ResyncView>, ApiError> {
    let id = path.1;
    state
        .shared()
        .store
        .resync_request(&scope.tenant, id)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| ApiError::NotFound {
            what: "resync",
            id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: Value) -> Result<ResyncRequest, String> {
        serde_json::from_value::<ResyncInput>(json)
            .map_err(|e| e.to_string())?
            .into_request()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn resync_input_names_what_is_wrong() {
        assert_eq!(
            input(serde_json::json!({"scope": "all"})),
            Ok(ResyncRequest::All)
        );
        for (json, needle) in [
            (
                serde_json::json!({"scope": "all", "ids": ["1"]}),
                "takes no",
            ),
            (serde_json::json!({"scope": "records"}), "needs"),
            (
                serde_json::json!({"scope": "records", "object_pair": "deals", "side": "hubspot", "ids": ["1"]}),
                "object_pair",
            ),
            (
                serde_json::json!({"scope": "records", "object_pair": "opportunity_deal", "side": "zoho", "ids": ["1"]}),
                "side",
            ),
            (
                serde_json::json!({"scope": "records", "object_pair": "opportunity_deal", "side": "hubspot", "ids": []}),
                "1 to 100",
            ),
            (
                serde_json::json!({"scope": "records", "object_pair": "opportunity_deal", "side": "salesforce", "ids": ["006' OR Name != '"]}),
                "not a salesforce record id",
            ),
        ] {
            let err = input(json.clone()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
