//! Operator routes under `/v1/admin/tenants`: create a tenant (with its first API token,
//! shown once), list tenants, disable and enable one, issue and revoke tokens.
//!
//! Only the operator token opens these routes ([`Operator`]). They must never return a
//! token after the response that issued it, nor a token's hash, nor anything a tenant
//! owns besides its tenant row.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Operator, issue_token};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{AppState, now_ms};
use crate::store::{Tenant, TenantId};

/// A tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Its id (1 to 64 characters of `A-Z a-z 0-9 _ -`).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// A disabled tenant's tokens are refused and it never syncs.
    pub disabled: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            id: t.id.to_string(),
            name: t.name,
            disabled: t.disabled,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Its id (1 to 64 characters of `A-Z a-z 0-9 _ -`).
    pub id: String,
    /// A display name (1 to 200 characters).
    pub name: String,
}

/// A token, as issued: `token` is shown this once and never again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedTokenView {
    /// The bearer token. Store it now: the service keeps only its hash.
    pub token: String,
    /// Its public id (to revoke it).
    pub token_id: String,
    /// Its label.
    pub label: String,
}

/// A created tenant and its first token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    /// The tenant.
    pub tenant: TenantView,
    /// Its first API token.
    pub token: IssuedTokenView,
}

/// A page of tenants.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// Tenants by ascending id.
    pub tenants: Vec<TenantView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Paging of the tenant list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantPage {
    /// Tenants with ids strictly after this one.
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// A new token's label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label for people (1 to 200 characters).
    pub label: String,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(disable_tenant))
        .routes(routes!(enable_tenant))
        .routes(routes!(create_token))
        .routes(routes!(revoke_token))
}

/// Checks a display name or label.
pub(crate) fn check_label(what: &str, s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if n == 0 || n > 200 || s.chars().any(char::is_control) || s.trim().is_empty() {
        return Err(ApiError::InvalidInput(format!(
            "`{what}` must be 1 to 200 characters without control characters"
        )));
    }
    Ok(())
}

fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(ApiError::from)
}

/// The tenant named in an operator path, or 404.
async fn existing(state: &AppState, id: &str) -> Result<TenantId, ApiError> {
    let not_found = || ApiError::NotFound {
        what: "tenant",
        id: id.to_string(),
    };
    let tid = TenantId::new(id).map_err(|_| not_found())?;
    match state.shared().store.tenant(&tid).await? {
        Some(_) => Ok(tid),
        None => Err(not_found()),
    }
}

/// Creates a tenant and its first API token.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "tenants",
    request_body = CreateTenant,
    security(("operator_token" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only now", body = TenantCreated),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_tenant(
    _op: Operator,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let id = tenant_id(&body.id)?;
    check_label("name", &body.name)?;
    let shared = state.shared();
    let now = now_ms();
    let tenant = shared.store.create_tenant(&id, &body.name, now).await?;
    let issued = issue_token(&shared.rng, &id, "initial", now)?;
    shared.store.add_api_token(&id, &issued.record).await?;
    tracing::info!(tenant = %id, token_id = %issued.record.token_id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            tenant: tenant.into(),
            token: IssuedTokenView {
                token: issued.token,
                token_id: issued.record.token_id,
                label: issued.record.label,
            },
        }),
    ))
}

/// Lists tenants by id.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "tenants",
    params(TenantPage),
    security(("operator_token" = [])),
    responses((status = 200, body = TenantList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_tenants(
    _op: Operator,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<TenantPage>,
) -> Result<Json<TenantList>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    let after = page.after.as_deref().map(tenant_id).transpose()?;
    let tenants = state
        .shared()
        .store
        .list_tenants(after.as_ref(), limit)
        .await?;
    let next_after = (tenants.len() == limit as usize)
        .then(|| tenants.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

async fn set_disabled(state: &AppState, id: &str, disabled: bool) -> Result<TenantView, ApiError> {
    let tid = existing(state, id).await?;
    let store = &state.shared().store;
    store.set_tenant_disabled(&tid, disabled).await?;
    if disabled {
        // After the store has it, so no request can keep the enabled tenant's tokens.
        state.shared().tokens.forget_tenant(&tid);
    }
    tracing::info!(tenant = %tid, disabled, "tenant status changed");
    let t = store
        .tenant(&tid)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "tenant",
            id: id.to_string(),
        })?;
    Ok(t.into())
}

/// Disables a tenant: its tokens are refused and it never syncs.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/disable", tag = "tenants",
    params(("id" = String, Path, description = "The tenant id")),
    security(("operator_token" = [])),
    responses((status = 200, body = TenantView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn disable_tenant(
    _op: Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantView>, ApiError> {
    set_disabled(&state, &id, true).await.map(Json)
}

/// Enables a disabled tenant again.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/enable", tag = "tenants",
    params(("id" = String, Path, description = "The tenant id")),
    security(("operator_token" = [])),
    responses((status = 200, body = TenantView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn enable_tenant(
    _op: Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantView>, ApiError> {
    set_disabled(&state, &id, false).await.map(Json)
}

/// Issues another API token for a tenant (e.g. to rotate one).
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/tokens", tag = "tenants",
    params(("id" = String, Path, description = "The tenant id")),
    request_body = NewToken,
    security(("operator_token" = [])),
    responses((status = 201, body = IssuedTokenView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    _op: Operator,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedTokenView>), ApiError> {
    let tid = existing(&state, &id).await?;
    check_label("label", &body.label)?;
    let shared = state.shared();
    let issued = issue_token(&shared.rng, &tid, &body.label, now_ms())?;
    shared.store.add_api_token(&tid, &issued.record).await?;
    tracing::info!(tenant = %tid, token_id = %issued.record.token_id, "token issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedTokenView {
            token: issued.token,
            token_id: issued.record.token_id,
            label: issued.record.label,
        }),
    ))
}

/// Revokes a tenant's token.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/tokens/{token_id}", tag = "tenants",
    params(("id" = String, Path, description = "The tenant id"),
        ("token_id" = String, Path, description = "The token's public id")),
    security(("operator_token" = [])),
    responses((status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such unrevoked token", body = ErrorBody)))]
async fn revoke_token(
    _op: Operator,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, token_id) = path;
    let tid = existing(&state, &id).await?;
    let revoked = state
        .shared()
        .store
        .revoke_api_token(&tid, &token_id, now_ms())
        .await?;
    // After the store has it, so no request can keep the token as valid (forgotten even
    // if another replica revoked it first).
    state.shared().tokens.forget_token(&tid, &token_id);
    if revoked {
        tracing::info!(tenant = %tid, token_id = %token_id, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "token",
            id: token_id,
        })
    }
}
