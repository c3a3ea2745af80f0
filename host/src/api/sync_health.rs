//! The sync-health view of a tenant: open errors grouped by the health groups of the sync
//! spec (validation and required fields, duplicates, permissions, picklist mismatches,
//! associations waiting, plugin errors, rate limits, plus CRM unavailable and other),
//! each with its count and affected records; the open errors themselves, paged and
//! optionally of one group; and their export as CSV or JSON.
//!
//! The export streams page by page from the store (bounded memory, whatever the count),
//! in the format asked by `?format=csv|json` or else by the `Accept` header. CSV follows
//! RFC 4180 (the `csv` crate quotes and doubles quotes); a text cell that a spreadsheet
//! would run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is
//! prefixed with `'`. A store failure after the first page aborts the response instead of
//! ending it cleanly, so a cut export is never taken for a whole one.
//!
//! What this module must never do: show another tenant's errors (every store call carries
//! the scope's tenant).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::TenantScope;
use super::error::{ApiError, ApiQuery, ErrorBody};
use super::paging::{next_after, page};
use crate::store::{ErrorCategory, ObjectPair, Page, Side, Store, SyncError, TenantId};

/// Rows the export reads from the store at a time.
const EXPORT_PAGE: u32 = 500;
const CSV: &str = "text/csv";
const JSON: &str = "application/json";

/// One health group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryHealthView {
    /// The group.
    pub category: ErrorCategory,
    /// Open errors in it.
    pub open_errors: i64,
    /// Distinct records affected.
    pub affected_records: i64,
}

/// The health view: every group, in a fixed order, with zero counts included.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncHealth {
    /// Open errors in all groups.
    pub open_errors: i64,
    /// One entry per group.
    pub categories: Vec<CategoryHealthView>,
}

/// An open sync error: one record that failed, its group and its retry state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncErrorView {
    /// The error id.
    pub id: i64,
    /// Which object types.
    pub object_pair: ObjectPair,
    /// The side of the failing record.
    pub record_side: Side,
    /// The failing record's id on that side.
    pub record_id: String,
    /// The health group.
    pub category: ErrorCategory,
    /// The latest message.
    pub message: String,
    /// The latest details (the CRM's error, the planned write, ...).
    pub payload: Value,
    /// Failures since it was first seen.
    pub attempts: i64,
    /// First failure, milliseconds since the Unix epoch.
    pub first_seen_ms: i64,
    /// Latest failure.
    pub last_seen_ms: i64,
    /// When the next automatic retry is due; null when retries stopped.
    pub next_retry_at_ms: Option<i64>,
}

impl From<SyncError> for SyncErrorView {
    fn from(e: SyncError) -> Self {
        SyncErrorView {
            id: e.id,
            object_pair: e.object_pair,
            record_side: e.record.side,
            record_id: e.record.id,
            category: e.category,
            message: e.message,
            payload: e.payload,
            attempts: e.attempts,
            first_seen_ms: e.first_seen_ms,
            last_seen_ms: e.last_seen_ms,
            next_retry_at_ms: e.next_retry_at_ms,
        }
    }
}

/// A page of open errors.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncErrorList {
    /// Oldest first.
    pub errors: Vec<SyncErrorView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Filter and paging of open errors.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ErrorQuery {
    /// Only this group.
    pub category: Option<ErrorCategory>,
    /// Errors with ids above this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `text/csv`, one row per error with a header row.
    Csv,
    /// `application/json`, an array of errors.
    Json,
}

/// What to export.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Only this group.
    pub category: Option<ErrorCategory>,
    /// The format; without it, the `Accept` header decides (JSON when it allows both).
    pub format: Option<ExportFormat>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(list_errors))
        .routes(routes!(export_errors))
}

/// Open errors by health group, with counts.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sync-health", tag = "sync health",
    params(("tenant" = String, Path, description = "The tenant id")),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncHealth),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn health(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<SyncHealth>, ApiError> {
    let summary = state.shared().store.health_summary(&scope.tenant).await?;
    let categories: Vec<CategoryHealthView> = ErrorCategory::ALL
        .iter()
        .map(|c| {
            let found = summary.iter().find(|h| h.category == *c);
            CategoryHealthView {
                category: *c,
                open_errors: found.map_or(0, |h| h.open_errors),
                affected_records: found.map_or(0, |h| h.affected_records),
            }
        })
        .collect();
    Ok(Json(SyncHealth {
        open_errors: categories.iter().map(|c| c.open_errors).sum(),
        categories,
    }))
}

/// Open errors (the affected records), oldest first, optionally of one group.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sync-health/errors", tag = "sync health",
    params(("tenant" = String, Path, description = "The tenant id"), ErrorQuery),
    security(("tenant_token" = [])),
    responses((status = 200, body = SyncErrorList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_errors(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ErrorQuery>,
) -> Result<Json<SyncErrorList>, ApiError> {
    let page = page(q.after, q.limit)?;
    let errors = state
        .shared()
        .store
        .open_errors(&scope.tenant, q.category, page)
        .await?;
    Ok(Json(SyncErrorList {
        next_after: next_after(&errors, page, |e| e.id),
        errors: errors.into_iter().map(Into::into).collect(),
    }))
}

/// Every open error (optionally of one group) as CSV or JSON, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sync-health/errors/export", tag = "sync health",
    params(("tenant" = String, Path, description = "The tenant id"), ExportQuery),
    security(("tenant_token" = [])),
    responses(
        (status = 200, description = "The export (an attachment)",
            content((Vec<SyncErrorView> = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 406, description = "`Accept` allows neither CSV nor JSON", body = ErrorBody)))]
async fn export_errors(
    scope: TenantScope,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format {
        Some(f) => f,
        None => negotiate(headers.get(header::ACCEPT))?,
    };
    let store = Arc::clone(&state.shared().store);
    // The first page is read before answering, so a failing store is still a clean error.
    let first = store
        .open_errors(&scope.tenant, q.category, Page::first(EXPORT_PAGE))
        .await?;
    let export = Export {
        store,
        tenant: scope.tenant.clone(),
        category: q.category,
        format,
        pending: Some(first),
        after: None,
        rows: 0,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(export, Export::next_chunk));
    let (content_type, ext) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Json => (JSON, "json"),
    };
    let disposition = format!(
        "attachment; filename=\"sync-errors-{}.{ext}\"",
        scope.tenant
    );
    let disposition = HeaderValue::from_str(&disposition)
        .map_err(|e| ApiError::Internal(format!("content disposition: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// The format the `Accept` header prefers: the highest `q` among `text/csv`,
/// `application/json` and their wildcards (JSON for `*/*`), the first listed on a tie.
/// No header means JSON.
fn negotiate(accept: Option<&HeaderValue>) -> Result<ExportFormat, ApiError> {
    let Some(accept) = accept else {
        return Ok(ExportFormat::Json);
    };
    let accept = accept
        .to_str()
        .map_err(|_| ApiError::BadRequest("the Accept header is not ASCII text".into()))?;
    let mut best: Option<(f32, ExportFormat)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse().map_err(|_| {
                    ApiError::BadRequest(format!("the Accept header has a bad q value: {v:?}"))
                })?;
            }
        }
        let format = match media.as_str() {
            CSV | "text/*" => ExportFormat::Csv,
            JSON | "application/*" | "*/*" => ExportFormat::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f).ok_or(ApiError::NotAcceptable {
        offered: "text/csv or application/json",
    })
}

/// The state of an export stream.
struct Export {
    store: Arc<dyn Store>,
    tenant: TenantId,
    category: Option<ErrorCategory>,
    format: ExportFormat,
    /// A page read but not yet sent.
    pending: Option<Vec<SyncError>>,
    /// The last id sent.
    after: Option<i64>,
    /// Rows sent so far.
    rows: u64,
    done: bool,
}

const CSV_HEADER: [&str; 11] = [
    "id",
    "object_pair",
    "record_side",
    "record_id",
    "category",
    "message",
    "attempts",
    "first_seen",
    "last_seen",
    "next_retry_at",
    "payload",
];

impl Export {
    /// The next chunk of the body: the head with the first page, each page, the tail with
    /// the last page; an error (aborting the response) if the store fails.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Export)> {
        if self.done {
            return None;
        }
        let rows = match self.pending.take() {
            Some(rows) => rows,
            None => match self
                .store
                .open_errors(
                    &self.tenant,
                    self.category,
                    Page {
                        after: self.after,
                        limit: EXPORT_PAGE,
                    },
                )
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, rows_sent = self.rows, "export: the store failed mid-stream");
                    self.done = true;
                    return Some((Err(std::io::Error::other("the store failed")), self));
                }
            },
        };
        let first = self.rows == 0 && self.after.is_none();
        let last = rows.len() < EXPORT_PAGE as usize;
        let sent_before = self.rows > 0;
        self.after = rows.last().map(|r| r.id).or(self.after);
        self.rows += rows.len() as u64;
        self.done = last;
        let chunk = match self.format {
            ExportFormat::Csv => csv_chunk(&rows, first),
            ExportFormat::Json => json_chunk(rows, first, last, sent_before),
        };
        Some((chunk.map(Bytes::from), self))
    }
}

/// A text cell a spreadsheet would read as a formula gets a leading `'`.
fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn csv_chunk(rows: &[SyncError], with_header: bool) -> Result<Vec<u8>, std::io::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if with_header {
        w.write_record(CSV_HEADER)?;
    }
    for e in rows {
        let payload = e.payload.to_string();
        w.write_record([
            e.id.to_string().as_str(),
            e.object_pair.as_str(),
            e.record.side.as_str(),
            &defuse(&e.record.id),
            e.category.as_str(),
            &defuse(&e.message),
            e.attempts.to_string().as_str(),
            &rfc3339(e.first_seen_ms),
            &rfc3339(e.last_seen_ms),
            &e.next_retry_at_ms.map(rfc3339).unwrap_or_default(),
            &defuse(&payload),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

fn json_chunk(
    rows: Vec<SyncError>,
    first: bool,
    last: bool,
    sent_before: bool,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    if first {
        out.push(b'[');
    }
    for (i, e) in rows.into_iter().enumerate() {
        if sent_before || i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &SyncErrorView::from(e))?;
    }
    if last {
        out.push(b']');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Result<ExportFormat, ApiError> {
        negotiate(Some(&HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn accept_picks_the_preferred_supported_format() {
        assert_eq!(negotiate(None).unwrap(), ExportFormat::Json);
        assert_eq!(accept("text/csv").unwrap(), ExportFormat::Csv);
        assert_eq!(accept("application/json").unwrap(), ExportFormat::Json);
        assert_eq!(accept("*/*").unwrap(), ExportFormat::Json);
        assert_eq!(
            accept("application/json;q=0.5, text/csv").unwrap(),
            ExportFormat::Csv
        );
        assert_eq!(
            accept("text/html, text/csv;q=0.9, */*;q=0.8").unwrap(),
            ExportFormat::Csv
        );
        assert_eq!(
            accept("TEXT/CSV; charset=utf-8").unwrap(),
            ExportFormat::Csv
        );
        assert_eq!(
            accept("text/csv;q=0, application/json;q=0.1").unwrap(),
            ExportFormat::Json
        );
        let e = accept("application/xml").unwrap_err();
        assert_eq!(e.status_and_code().1, "not_acceptable");
        let e = accept("text/csv;q=0").unwrap_err();
        assert_eq!(e.status_and_code().1, "not_acceptable");
        let e = accept("text/csv;q=abc").unwrap_err();
        assert_eq!(e.status_and_code().1, "bad_request");
    }

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("-1"), "'-1");
        assert_eq!(defuse("plain"), "plain");
    }
}
