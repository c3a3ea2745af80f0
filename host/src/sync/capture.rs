//! Change capture: what changed on each side since a checkpoint, one page at a time.
//!
//! Salesforce: SOQL keyset paging on `(SystemModstamp, Id)` (live rows for changes,
//! `queryAll` with `IsDeleted = true` for deletes), so that any number of records sharing
//! one modification time is read exactly once. HubSpot: the crm client's keyset scan on
//! `(modification time, hs_object_id)` (`hs_lastmodifieddate`, or `lastmodifieddate` for
//! contacts), which never pages a search past its 10,000 cap. A HubSpot backfill (no
//! checkpoint yet) reads its whole window in `hs_object_id` order instead: a total order,
//! so a page never repeats records that share one modification time (a batch write stamps
//! its records alike), at the price of a checkpoint only at the window's end.
//! Every page comes with the cursor to checkpoint after it is handled. The engine reads
//! again a small look-back window behind each checkpoint; echo suppression makes the
//! re-read records no-ops.
//!
//! This module reads only: it must never write to a CRM or to the store, and never hold
//! more than one page.

use chrono::{DateTime, SecondsFormat, Utc};

use super::error::SyncError;
use super::setup::{PairSchema, soql_in};
use super::values::parse_time_ms;
use crate::crm::hubspot::types::{Filter, Operator, ScanCursor, ScanRequest, SearchRequest};
use crate::crm::hubspot::{HsObject, HubSpotClient};
use crate::crm::salesforce::SalesforceClient;
use crate::crm::salesforce::types::{QueryScope, SObject, soql_quote};
use crate::store::ObjectPair;

/// Rows per Salesforce page of a `LIMIT` query (SOQL's largest batch).
pub const SF_PAGE: usize = 2_000;
/// Records per HubSpot search page (the largest).
pub const HS_PAGE: u32 = 200;

/// A `(time, id)` position: everything after it is still to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The last id read at `time_ms` (`""`: none yet).
    pub id: String,
}

impl Cursor {
    /// The start of time.
    pub fn zero() -> Self {
        Cursor {
            time_ms: 0,
            id: String::new(),
        }
    }

    /// This cursor moved back by `ms` (reading again what is within it).
    pub fn back(&self, ms: i64) -> Self {
        if ms <= 0 {
            return self.clone();
        }
        Cursor {
            time_ms: (self.time_ms - ms).max(0),
            id: String::new(),
        }
    }
}

/// A SOQL datetime literal.
pub fn soql_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The SOQL that reads a pair's Salesforce records by id (`select` from [`sf_select`]; at most
/// 200 ids, as the callers chunk them).
pub fn sf_by_ids_soql(schema: &PairSchema, select: &[String], ids: &[String]) -> String {
    format!(
        "SELECT {} FROM {} WHERE Id IN ({})",
        select.join(", "),
        schema.spec.sobject,
        soql_in(ids)
    )
}

/// The fields selected from Salesforce for a pair: the system fields the engine needs,
/// then the field table.
pub fn sf_select(schema: &PairSchema, external_id_field: &str) -> Vec<String> {
    let mut f: Vec<String> = vec![
        "Id".into(),
        "SystemModstamp".into(),
        "LastModifiedDate".into(),
        external_id_field.into(),
    ];
    if schema.spec.pair == ObjectPair::OpportunityDeal {
        f.push("AccountId".into());
    }
    for x in &schema.sf_fields {
        if !f.contains(x) {
            f.push(x.clone());
        }
    }
    f
}

/// The properties read from HubSpot for a pair.
pub fn hs_properties(schema: &PairSchema, xref: &str) -> Vec<String> {
    let mut p: Vec<String> = vec![schema.spec.hs_modified.into(), xref.into()];
    if schema.spec.pair == ObjectPair::OpportunityDeal {
        p.push("pipeline".into());
    }
    if schema.spec.pair == ObjectPair::ContactContact {
        p.push("email".into());
    }
    for x in &schema.hs_fields {
        if !p.contains(x) {
            p.push(x.clone());
        }
    }
    p
}

/// One page of Salesforce rows after `cursor`, up to `until_ms` (inclusive).
pub struct SfPage {
    /// The rows, in `(SystemModstamp, Id)` order.
    pub rows: Vec<SObject>,
    /// Where the next page starts (checkpoint this after handling the rows).
    pub next: Cursor,
    /// True when nothing is left up to `until_ms`.
    pub done: bool,
    /// The query's next page (changes: the query locator's `nextRecordsUrl`).
    pub more: Option<String>,
    /// Rows the whole query matches (changes only; 0 otherwise).
    pub total: u64,
}

/// The `(SystemModstamp, Id)` of a row.
pub fn sf_position(row: &SObject) -> Option<Cursor> {
    let t = row.str_field("SystemModstamp").and_then(parse_time_ms)?;
    Some(Cursor {
        time_ms: t,
        id: row.id()?.to_string(),
    })
}

fn keyset_where(cursor: &Cursor, until_ms: i64) -> String {
    let t = soql_time(cursor.time_ms);
    format!(
        "(SystemModstamp > {t} OR (SystemModstamp = {t} AND Id > {})) AND SystemModstamp <= {}",
        soql_quote(&cursor.id),
        soql_time(until_ms)
    )
}

/// Changed (created or updated) rows of a pair's sObject after `cursor`: the first page
/// of one query over the whole window (no `LIMIT`), so that its `totalSize` counts the
/// window and each further page is one call through its query locator ([`sf_more`]).
pub async fn sf_changes(
    sf: &SalesforceClient,
    sobject: &str,
    select: &[String],
    cursor: &Cursor,
    until_ms: i64,
) -> Result<SfPage, SyncError> {
    let soql = format!(
        "SELECT {} FROM {sobject} WHERE {} ORDER BY SystemModstamp ASC, Id ASC",
        select.join(", "),
        keyset_where(cursor, until_ms)
    );
    let p = sf.query_page::<SObject>(&soql, QueryScope::Live).await?;
    Ok(locator_page(p, cursor))
}

/// The next page of [`sf_changes`] (`more` of the previous one, which ended at `cursor`).
pub async fn sf_more(
    sf: &SalesforceClient,
    more: &str,
    cursor: &Cursor,
) -> Result<SfPage, SyncError> {
    let p = sf.query_more::<SObject>(more).await?;
    Ok(locator_page(p, cursor))
}

fn locator_page(p: crate::crm::salesforce::QueryPage<SObject>, cursor: &Cursor) -> SfPage {
    let next = p
        .records
        .last()
        .and_then(sf_position)
        .unwrap_or_else(|| cursor.clone());
    let more = if p.done { None } else { p.next_records_url };
    SfPage {
        rows: p.records,
        next,
        done: more.is_none(),
        more,
        total: p.total_size,
    }
}

/// Deleted rows (`queryAll`, `IsDeleted = true`) of an sObject after `cursor`.
pub async fn sf_deletes(
    sf: &SalesforceClient,
    sobject: &str,
    cursor: &Cursor,
    until_ms: i64,
    limit: usize,
) -> Result<SfPage, SyncError> {
    let soql = format!(
        "SELECT Id, SystemModstamp FROM {sobject} WHERE IsDeleted = true AND {} ORDER BY SystemModstamp ASC, Id ASC LIMIT {limit}",
        keyset_where(cursor, until_ms)
    );
    page(sf, &soql, QueryScope::IncludeDeleted, cursor, limit).await
}

async fn page(
    sf: &SalesforceClient,
    soql: &str,
    scope: QueryScope,
    cursor: &Cursor,
    limit: usize,
) -> Result<SfPage, SyncError> {
    let p = sf.query_page::<SObject>(soql, scope).await?;
    let rows = p.records;
    let done = rows.len() < limit;
    let next = rows
        .last()
        .and_then(sf_position)
        .unwrap_or_else(|| cursor.clone());
    Ok(SfPage {
        rows,
        next,
        done,
        more: None,
        total: 0,
    })
}

/// True when HubSpot holds no record of `object_type` (one search for a single result).
/// HubSpot's search index trails writes by a few seconds, so this is a hint for skipping
/// reads, never a guarantee: writes stay keyed on the unique cross-reference property.
pub async fn hs_is_empty(hs: &HubSpotClient, object_type: &str) -> Result<bool, SyncError> {
    let req = SearchRequest {
        properties: vec!["hs_object_id".into()],
        limit: 1,
        ..SearchRequest::default()
    };
    let page = hs.search(object_type, &req).await?;
    Ok(page.total == 0 && page.results.is_empty())
}

/// One page of HubSpot records modified after `cursor` and before `until_ms`.
pub struct HsPage {
    /// The records.
    pub records: Vec<HsObject>,
    /// Where the next page starts.
    pub next: Cursor,
    /// True when the window is exhausted.
    pub done: bool,
}

fn scan_cursor(c: &Cursor) -> ScanCursor {
    ScanCursor {
        modified_ms: c.time_ms,
        after_id: c.id.parse().ok(),
    }
}

/// Changed HubSpot records of a pair (deals only in `pipelines`, when given).
pub async fn hs_changes(
    hs: &HubSpotClient,
    schema: &PairSchema,
    properties: &[String],
    pipelines: Option<&[String]>,
    cursor: &Cursor,
    until_ms: i64,
) -> Result<HsPage, SyncError> {
    let req = scan_request(schema, properties, pipelines, until_ms);
    let page = hs.scan_modified_page(&req, scan_cursor(cursor)).await?;
    let next = Cursor {
        time_ms: page.next.modified_ms,
        id: page
            .next
            .after_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
    };
    Ok(HsPage {
        records: page.records,
        next,
        done: page.done,
    })
}

/// The creation time of deals, companies and contacts alike.
pub const HS_CREATED_PROPERTY: &str = "createdate";

/// What a backfill reads of a pair's HubSpot window: everything modified before `until_ms`
/// (deals only in `pipelines`, when given), with `created_before_ms` only the records
/// created before it, with `through_id` only the ids up to it (one of several id ranges
/// read side by side).
#[derive(Debug, Clone, Copy)]
pub struct HsBackfillWindow<'a> {
    /// The properties to read.
    pub properties: &'a [String],
    /// The synced deal pipelines (deals only).
    pub pipelines: Option<&'a [String]>,
    /// Only records created before this time (epoch ms).
    pub created_before_ms: Option<i64>,
    /// Only ids up to this one (inclusive).
    pub through_id: Option<u64>,
    /// The window's end (exclusive), epoch ms.
    pub until_ms: i64,
}

/// A page of a pair's whole HubSpot window in id order, after `after_id`: for a backfill,
/// which reads every record once and checkpoints only at the end (`until_ms`). Returns the
/// records and where to continue (`None`: done).
pub async fn hs_backfill_page(
    hs: &HubSpotClient,
    schema: &PairSchema,
    window: &HsBackfillWindow<'_>,
    after_id: u64,
) -> Result<(Vec<HsObject>, Option<u64>), SyncError> {
    let mut req = scan_request(schema, window.properties, window.pipelines, window.until_ms);
    if let Some(t) = window.created_before_ms {
        req.extra_filters.push(Filter::new(
            HS_CREATED_PROPERTY,
            Operator::Lt,
            t.to_string(),
        ));
    }
    Ok(hs
        .scan_id_range_page(&req, after_id, window.through_id)
        .await?)
}

fn scan_request(
    schema: &PairSchema,
    properties: &[String],
    pipelines: Option<&[String]>,
    until_ms: i64,
) -> ScanRequest {
    let mut extra = Vec::new();
    if let Some(p) = pipelines {
        extra.push(Filter::in_list("pipeline", Operator::In, p.to_vec()));
    }
    ScanRequest {
        object_type: schema.spec.hs_object.to_string(),
        until_ms,
        properties: properties.to_vec(),
        modified_property: Some(schema.spec.hs_modified.to_string()),
        extra_filters: extra,
        page_size: HS_PAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_condition_breaks_ties_by_id() {
        let c = Cursor {
            time_ms: 1_779_310_172_000,
            id: "006000000000001AAA".into(),
        };
        let w = keyset_where(&c, 1_779_310_180_000);
        assert_eq!(
            w,
            "(SystemModstamp > 2026-05-20T20:49:32.000Z OR (SystemModstamp = 2026-05-20T20:49:32.000Z AND Id > '006000000000001AAA')) AND SystemModstamp <= 2026-05-20T20:49:40.000Z"
        );
    }

    #[test]
    fn look_back_forgets_the_tie_break() {
        let c = Cursor {
            time_ms: 10_000,
            id: "x".into(),
        };
        assert_eq!(
            c.back(3_000),
            Cursor {
                time_ms: 7_000,
                id: String::new()
            }
        );
        assert_eq!(c.back(0), c);
        assert_eq!(
            Cursor {
                time_ms: 100,
                id: "y".into()
            }
            .back(1_000)
            .time_ms,
            0
        );
    }
}
