//! `/metrics`: the process's Prometheus metrics ([`crate::telemetry`]) in the Prometheus
//! text format (version 0.0.4), for the operator's scraper (`Authorization: Bearer
//! <operator token>`; Prometheus reads it from `authorization.credentials_file`).
//!
//! Behind the operator token because the figures describe every tenant's activity
//! together; they never name a tenant or a record.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Operator;
use super::error::ErrorBody;
use crate::telemetry;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics of this replica: CRM API calls by CRM, endpoint and status; plugin
/// invocations with fuel and latency histograms; sync runs, records and errors by
/// health group; API requests by route and status.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn metrics(_operator: Operator) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        telemetry::render(),
    )
        .into_response()
}
