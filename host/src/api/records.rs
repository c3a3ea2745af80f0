//! One record's sync state, looked up by either side's id within an object pair: its
//! current link (the record on the other side and what the link means now) and its
//! per-record history (what the engine did to it, newest first, paged).
//!
//! A Salesforce id may be given in its 15- or 18-character form (the store keeps 18); a
//! HubSpot id is its numeric object id. Read-only. What this module must never do: show
//! another tenant's link or history (a record the tenant does not know is a 404, whoever
//! else knows it).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::TenantScope;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::paging::{next_after, page};
use crate::crm::salesforce::types::id18;
use crate::store::{
    Direction, EventKind, Link, LinkState, ObjectPair, Page, RecordEvent, RecordKey, Side, TenantId,
};

/// The most digits of a HubSpot object id.
const MAX_HUBSPOT_ID_DIGITS: usize = 20;

/// The link between a Salesforce record and a HubSpot record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkView {
    /// Which object types.
    pub object_pair: ObjectPair,
    /// The Salesforce id (18 characters).
    pub salesforce_id: String,
    /// The HubSpot id.
    pub hubspot_id: String,
    /// What the link means now.
    pub state: LinkState,
    /// When it was first committed, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was last committed.
    pub updated_at_ms: i64,
}

impl From<Link> for LinkView {
    fn from(l: Link) -> Self {
        LinkView {
            object_pair: l.object_pair,
            salesforce_id: l.salesforce_id,
            hubspot_id: l.hubspot_id,
            state: l.state,
            created_at_ms: l.created_at_ms,
            updated_at_ms: l.updated_at_ms,
        }
    }
}

/// One entry of a record's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordEventView {
    /// The entry id.
    pub id: i64,
    /// What happened.
    pub kind: EventKind,
    /// Which way a write went (`none` for skips and failures before a write).
    pub direction: Direction,
    /// The Salesforce id, when known.
    pub salesforce_id: Option<String>,
    /// The HubSpot id, when known.
    pub hubspot_id: Option<String>,
    /// The source record's modification stamp that caused it.
    pub source_version: String,
    /// The run it belongs to.
    pub run_id: Option<i64>,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The fields written (name to `{from, to}`).
    pub fields: Value,
    /// A skip reason or an error text.
    pub message: Option<String>,
}

impl From<RecordEvent> for RecordEventView {
    fn from(e: RecordEvent) -> Self {
        let ev = e.event;
        RecordEventView {
            id: e.id,
            kind: ev.kind,
            direction: ev.direction,
            salesforce_id: ev.salesforce_id,
            hubspot_id: ev.hubspot_id,
            source_version: ev.source_version,
            run_id: ev.run_id,
            at_ms: ev.at_ms,
            fields: ev.fields,
            message: ev.message,
        }
    }
}

/// A page of a record's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordHistory {
    /// Which object types.
    pub object_pair: ObjectPair,
    /// The side of the id looked up.
    pub side: Side,
    /// The id looked up (a Salesforce id in its 18-character form).
    pub record_id: String,
    /// Newest first.
    pub events: Vec<RecordEventView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Paging of a record's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries with ids below this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_link))
        .routes(routes!(record_history))
}

/// The path of a record: tenant, object pair, side, id.
type RecordPath = (String, ObjectPair, Side, String);

/// Checks an id and puts a Salesforce id in its 18-character form.
fn record_key(side: Side, id: &str) -> Result<RecordKey, ApiError> {
    let id = match side {
        Side::Salesforce => id18(id).ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "`record_id` {id:?} is not a Salesforce id (15 or 18 letters and digits)"
            ))
        })?,
        Side::HubSpot => {
            let digits = !id.is_empty()
                && id.len() <= MAX_HUBSPOT_ID_DIGITS
                && id.bytes().all(|b| b.is_ascii_digit());
            if !digits {
                return Err(ApiError::InvalidInput(format!(
                    "`record_id` {id:?} is not a HubSpot id (1 to {MAX_HUBSPOT_ID_DIGITS} digits)"
                )));
            }
            id.to_string()
        }
    };
    Ok(RecordKey { side, id })
}

fn record_not_found(pair: ObjectPair, record: &RecordKey) -> ApiError {
    ApiError::NotFound {
        what: "record",
        id: format!("{pair}/{}/{}", record.side, record.id),
    }
}

/// The link of a record, if it has one.
async fn find_link(
    state: &AppState,
    tenant: &TenantId,
    pair: ObjectPair,
    record: &RecordKey,
) -> Result<Option<Link>, ApiError> {
    let store = &state.shared().store;
    let ids = std::slice::from_ref(&record.id);
    let links = match record.side {
        Side::Salesforce => store.links_by_salesforce_ids(tenant, pair, ids).await?,
        Side::HubSpot => store.links_by_hubspot_ids(tenant, pair, ids).await?,
    };
    Ok(links.into_iter().next())
}

/// The current link of a record, by either side's id.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/link",
    tag = "records",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("pair" = ObjectPair, Path, description = "The object pair"),
        ("side" = Side, Path, description = "Which side `record_id` belongs to"),
        ("record_id" = String, Path, description = "The record's id on that side")),
    security(("tenant_token" = [])),
    responses((status = 200, body = LinkView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "The record is not linked", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn record_link(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<RecordPath>,
) -> Result<Json<LinkView>, ApiError> {
    let (_, pair, side, id) = path;
    let record = record_key(side, &id)?;
    find_link(&state, &scope.tenant, pair, &record)
        .await?
        .map(|l| Json(l.into()))
        .ok_or_else(|| record_not_found(pair, &record))
}

/// A record's history, newest first, by either side's id. A record that has neither a
/// link nor any history is a 404.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/history",
    tag = "records",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("pair" = ObjectPair, Path, description = "The object pair"),
        ("side" = Side, Path, description = "Which side `record_id` belongs to"),
        ("record_id" = String, Path, description = "The record's id on that side"),
        HistoryQuery),
    security(("tenant_token" = [])),
    responses((status = 200, body = RecordHistory),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "The tenant knows no such record", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn record_history(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<RecordPath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<RecordHistory>, ApiError> {
    let (_, pair, side, id) = path;
    let record = record_key(side, &id)?;
    let page = page(q.after, q.limit)?;
    let store = &state.shared().store;
    let events = store
        .record_history(&scope.tenant, pair, &record, page)
        .await?;
    let known = !events.is_empty()
        || find_link(&state, &scope.tenant, pair, &record)
            .await?
            .is_some()
        || !store
            .record_history(&scope.tenant, pair, &record, Page::first(1))
            .await?
            .is_empty();
    if !known {
        return Err(record_not_found(pair, &record));
    }
    Ok(Json(RecordHistory {
        object_pair: pair,
        side,
        next_after: next_after(&events, page, |e| e.id),
        record_id: record.id,
        events: events.into_iter().map(Into::into).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_per_side() {
        let k = record_key(Side::Salesforce, "006000000000001").unwrap();
        assert_eq!(k.id.len(), 18);
        assert_eq!(
            record_key(Side::Salesforce, "006000000000001AAA")
                .unwrap()
                .id,
            "006000000000001AAA"
        );
        assert_eq!(record_key(Side::HubSpot, "1234").unwrap().id, "1234");
        for (side, bad) in [
            (Side::Salesforce, "short"),
            (Side::Salesforce, "006000000000001-AA"),
            (Side::HubSpot, ""),
            (Side::HubSpot, "12a"),
            (Side::HubSpot, "123456789012345678901"),
        ] {
            let e = record_key(side, bad).unwrap_err();
            assert_eq!(e.status_and_code().1, "invalid_input", "{bad}");
        }
    }
}
