//! `/healthz` (the process answers) and `/readyz` (the store answers and the service is
//! not shutting down). Neither needs a token; neither says anything about tenants.
//! They must never touch a tenant's rows or reveal why the store failed.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::store::TenantId;

/// A health answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers and the service is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable("shutting down"));
    }
    let probe = TenantId::new("readyz-probe").map_err(ApiError::from)?;
    match state.shared().store.tenant(&probe).await {
        Ok(_) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe: the store did not answer");
            Err(ApiError::Unavailable("the store is not reachable"))
        }
    }
}
