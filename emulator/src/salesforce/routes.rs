//! HTTP routes of the Salesforce emulator: request parsing, the REST guard
//! (session, daily limit, `Sforce-Limit-Info`), and the JSON shapes of every
//! endpoint.
//!
//! Handlers take the org lock only inside synchronous blocks; they must never
//! hold it across an `.await`, and never answer in a non-Salesforce shape.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::errors::{ApiError, injected_error};
use super::schema::{self, obj};
use super::store::{self, WriteCtx, now_ms};
use super::{API_VERSION, Shared, auth};
use crate::control::{self, FaultProfile};

/// The authenticated user of a REST request.
#[derive(Clone)]
struct User(String);

type ApiResult = Result<Response, ApiError>;

fn base() -> String {
    format!("/services/data/{API_VERSION}")
}

pub fn router(shared: Shared) -> Router {
    let b = base();
    let rest = Router::new()
        .route(&b, get(resources))
        .route(&format!("{b}/limits"), get(limits))
        .route(&format!("{b}/sobjects"), get(describe_global))
        .route(
            &format!("{b}/sobjects/{{sobject}}"),
            get(basic_info).post(create),
        )
        .route(&format!("{b}/sobjects/{{sobject}}/describe"), get(describe))
        .route(&format!("{b}/sobjects/{{sobject}}/updated"), get(updated))
        .route(&format!("{b}/sobjects/{{sobject}}/deleted"), get(deleted))
        .route(
            &format!("{b}/sobjects/{{sobject}}/{{id}}"),
            get(retrieve).patch(update).delete(delete),
        )
        .route(
            &format!("{b}/sobjects/{{sobject}}/{{field}}/{{value}}"),
            get(retrieve_by_ext).patch(upsert),
        )
        .route(&format!("{b}/query"), get(query))
        .route(&format!("{b}/query/{{locator}}"), get(query_more))
        .route(&format!("{b}/queryAll"), get(query_all))
        .route(&format!("{b}/queryAll/{{locator}}"), get(query_more))
        .route(
            &format!("{b}/composite/sobjects"),
            post(collection_create)
                .patch(collection_update)
                .delete(collection_delete),
        )
        .route(
            &format!("{b}/composite/sobjects/{{sobject}}"),
            get(collection_retrieve).post(collection_retrieve_post),
        )
        .route(
            &format!("{b}/composite/sobjects/{{sobject}}/{{field}}"),
            axum::routing::patch(collection_upsert),
        )
        .route(
            "/services/data/{*rest}",
            axum::routing::any(|| async { ApiError::not_found() }),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), rest_guard));
    let api = Router::new()
        .route("/services/data", get(versions))
        .route("/services/oauth2/token", post(auth::token))
        .route("/services/oauth2/revoke", post(auth::revoke))
        .route("/id/{org_id}/{user_id}", get(auth::identity))
        .route("/services/Soap/u/{version}", post(auth::soap_login))
        .merge(rest)
        .fallback(|| async { ApiError::not_found() })
        .layer(control::api_layer(
            shared.faults.clone(),
            shared.accounting.clone(),
            injected_error,
        ))
        .with_state(shared.clone());
    let control_api = control_routes(shared.clone()).merge(control::control_routes(
        shared.faults.clone(),
        shared.accounting.clone(),
    ));
    let inner = api.merge(control_api);
    // Clients differ on trailing slashes (`/query/?q=` vs `/query?q=`): route both alike.
    let normalised = inner.map_request(|mut req: Request| {
        let path = req.uri().path();
        if path.len() > 1 && path.ends_with('/') {
            let trimmed = path.trim_end_matches('/');
            let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
            let pq = match req.uri().query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed.to_string(),
            };
            if let Ok(uri) = pq.parse() {
                *req.uri_mut() = uri;
            }
        }
        req
    });
    Router::new().fallback_service(normalised)
}

/// Session check, daily limit, and the `Sforce-Limit-Info` header.
async fn rest_guard(State(shared): State<Shared>, mut req: Request, next: Next) -> Response {
    let Some(user) = shared.authenticate(req.headers()) else {
        return ApiError::session().into_response();
    };
    let (used, limit, allowed) = shared.count_request();
    let header = HeaderValue::from_str(&format!("api-usage={used}/{limit}"))
        .unwrap_or(HeaderValue::from_static("api-usage=0/0"));
    let mut resp = if allowed {
        req.extensions_mut().insert(User(user));
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
        .into_response()
    };
    resp.headers_mut().insert("sforce-limit-info", header);
    resp
}

async fn versions() -> Response {
    Json(json!([{"label": "Winter '25", "url": base(), "version": API_VERSION.trim_start_matches('v')}])).into_response()
}

async fn resources() -> Response {
    let b = base();
    let mut m = Map::new();
    for r in [
        "tooling",
        "metadata",
        "eclair",
        "folders",
        "prechatForms",
        "chatter",
        "tabs",
        "appMenu",
        "quickActions",
        "queryAll",
        "commerce",
        "wave",
        "iot",
        "analytics",
        "search",
        "identity",
        "composite",
        "parameterizedSearch",
        "fingerprint",
        "theme",
        "nouns",
        "domino",
        "event",
        "serviceTemplates",
        "recent",
        "connect",
        "licensing",
        "limits",
        "process",
        "async-queries",
        "query",
        "match",
        "emailConnect",
        "compactLayouts",
        "knowledgeManagement",
        "sobjects",
        "actions",
        "support",
    ] {
        m.insert(r.to_string(), json!(format!("{b}/{r}")));
    }
    Json(Value::Object(m)).into_response()
}

async fn limits(State(shared): State<Shared>) -> Response {
    let (used, limit) = shared.usage();
    let mk = |max: u64, rem: u64| json!({"Max": max, "Remaining": rem});
    Json(json!({
        "DailyApiRequests": mk(limit, limit.saturating_sub(used)),
        "DailyAsyncApexExecutions": mk(250000, 250000),
        "DailyBulkApiBatches": mk(15000, 15000),
        "DailyBulkV2QueryJobs": mk(10000, 10000),
        "DataStorageMB": mk(1024, 1000),
        "FileStorageMB": mk(1024, 1024),
        "HourlyTimeBasedWorkflow": mk(1000, 1000),
        "SingleEmail": mk(5000, 5000),
    }))
    .into_response()
}

async fn describe_global(State(shared): State<Shared>) -> Response {
    Json(schema::describe_global(&shared.schema)).into_response()
}

fn object(shared: &Shared, name: &str) -> Result<usize, ApiError> {
    shared.schema.object_index(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "The requested resource does not exist: sObject type '{name}' is not supported."
            ),
        )
    })
}

async fn basic_info(State(shared): State<Shared>, Path(sobject): Path<String>) -> ApiResult {
    let o = object(&shared, &sobject)?;
    Ok(Json(schema::basic_info(&shared.schema.objects[o])).into_response())
}

async fn describe(State(shared): State<Shared>, Path(sobject): Path<String>) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let org = shared.org.read();
    let rts = if o == obj::OPPORTUNITY {
        org.opportunity_record_types()
    } else {
        Vec::new()
    };
    Ok(Json(schema::describe(
        &shared.schema.objects[o],
        org.multi_currency,
        &rts,
    ))
    .into_response())
}

fn parse_object_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::json_parse("the request body is empty"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad(
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from a non-object value",
        )),
        Err(e) => Err(ApiError::json_parse(e)),
    }
}

fn save_result(id: &str) -> Value {
    json!({"id": id, "success": true, "errors": []})
}

async fn create(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Path(sobject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let fields = parse_object_body(&body)?;
    let ctx = WriteCtx {
        user_id: &user,
        now: now_ms(),
        faults: &shared.faults,
    };
    let id = shared.org.write().create(o, &fields, &ctx)?;
    Ok((StatusCode::CREATED, Json(save_result(&id))).into_response())
}

async fn retrieve(
    State(shared): State<Shared>,
    Path((sobject, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let org = shared.org.read();
    let idx = org.get_live(o, &id)?;
    let fields = match q.get("fields") {
        Some(list) => Some(org.field_indexes(o, list)?),
        None => None,
    };
    let row = org.tables[o].rows[idx].clone();
    Ok(Json(org.render(o, &row, fields.as_deref())).into_response())
}

async fn update(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Path((sobject, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let fields = parse_object_body(&body)?;
    let ctx = WriteCtx {
        user_id: &user,
        now: now_ms(),
        faults: &shared.faults,
    };
    shared.org.write().update(o, &id, &fields, &ctx)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Path((sobject, id)): Path<(String, String)>,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let ctx = WriteCtx {
        user_id: &user,
        now: now_ms(),
        faults: &shared.faults,
    };
    let mut org = shared.org.write();
    org.get_live(o, &id)?;
    org.delete(&id, Some(o), &ctx)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn retrieve_by_ext(
    State(shared): State<Shared>,
    Path((sobject, field, value)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let org = shared.org.read();
    let def = &shared.schema.objects[o];
    let fi = def
        .field_index(&field)
        .filter(|i| def.fields[*i].external_id);
    if fi.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {field}"),
        ));
    }
    let idx = org.tables[o]
        .by_ext
        .get(&value)
        .copied()
        .ok_or_else(ApiError::not_found)?;
    let fields = match q.get("fields") {
        Some(list) => Some(org.field_indexes(o, list)?),
        None => None,
    };
    let row = org.tables[o].rows[idx].clone();
    Ok(Json(org.render(o, &row, fields.as_deref())).into_response())
}

async fn upsert(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Path((sobject, field, value)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let fields = parse_object_body(&body)?;
    let ctx = WriteCtx {
        user_id: &user,
        now: now_ms(),
        faults: &shared.faults,
    };
    let (id, created) = shared
        .org
        .write()
        .upsert(o, &field, &value, &fields, &ctx)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"id": id, "success": true, "errors": [], "created": created})),
    )
        .into_response())
}

fn page_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("batchSize=")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
        })
        .map(|n| n.clamp(200, store::PAGE_SIZE))
        .unwrap_or(store::PAGE_SIZE)
}

fn run_query(shared: &Shared, q: Option<&String>, all: bool, headers: &HeaderMap) -> ApiResult {
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::bad(
            "MALFORMED_QUERY",
            "A query string has to be specified",
        ));
    };
    let org = shared.org.read();
    match org.query(q, all, page_size(headers))? {
        store::QueryResult::Count(n) => {
            Ok(Json(json!({"totalSize": n, "done": true, "records": []})).into_response())
        }
        store::QueryResult::Aggregate(body) => Ok(Json(body).into_response()),
        store::QueryResult::Rows(cursor) => {
            let locator = cursor
                .has_more_pages()
                .then(|| shared.cursors.open(cursor.clone()));
            Ok(json_body(org.render_page(
                &cursor,
                0,
                locator.as_deref(),
            )?))
        }
    }
}

/// A response with an already serialized JSON body.
fn json_body(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn query(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult {
    run_query(&shared, p.get("q"), false, &headers)
}

async fn query_all(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult {
    run_query(&shared, p.get("q"), true, &headers)
}

async fn query_more(State(shared): State<Shared>, Path(locator): Path<String>) -> ApiResult {
    let (cursor, locator, pos) = shared.cursors.resume(&locator)?;
    let body = shared
        .org
        .read()
        .render_page(&cursor, pos, Some(&locator))?;
    Ok(json_body(body))
}

fn parse_window(q: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let bad = |m: &str| ApiError::bad("INVALID_REPLICATION_DATE", m.to_string());
    let start = q
        .get("start")
        .ok_or_else(|| ApiError::bad("MISSING_ARGUMENT", "start is required"))?;
    let end = q
        .get("end")
        .ok_or_else(|| ApiError::bad("MISSING_ARGUMENT", "end is required"))?;
    let start =
        super::value::parse_datetime(start).ok_or_else(|| bad("start: invalid date format"))?;
    let end = super::value::parse_datetime(end).ok_or_else(|| bad("end: invalid date format"))?;
    // Whole minutes, and never past now.
    let minute = 60_000;
    let start = start - start.rem_euclid(minute);
    let now = now_ms();
    let end = end.min(now);
    let end = end - end.rem_euclid(minute);
    if end <= start {
        return Err(bad(
            "startDate must chronologically precede endDate by more than one minute",
        ));
    }
    if start < now - 30 * 86_400_000 {
        return Err(bad("startDate cannot be more than 30 days ago"));
    }
    Ok((start, end))
}

async fn updated(
    State(shared): State<Shared>,
    Path(sobject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let (start, end) = parse_window(&q)?;
    let v = shared.org.read().updated(o, start, end);
    if v["ids"].as_array().is_some_and(|a| a.len() > 600_000) {
        return Err(ApiError::bad(
            "EXCEEDED_ID_LIMIT",
            "More than 600,000 ids in the window; use a smaller window",
        ));
    }
    Ok(Json(v).into_response())
}

async fn deleted(
    State(shared): State<Shared>,
    Path(sobject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let (start, end) = parse_window(&q)?;
    Ok(Json(shared.org.read().deleted(o, start, end)).into_response())
}

// ------------------------------------------------------------------ collections

const COLLECTION_LIMIT: usize = 200;

fn too_many(n: usize, max: usize) -> ApiError {
    ApiError::bad(
        "EXCEEDED_ID_LIMIT",
        format!(
            "record limit reached. cannot submit more than {max} records into this call (got {n})"
        ),
    )
}

struct CollectionBody {
    all_or_none: bool,
    records: Vec<Value>,
}

fn parse_collection(body: &Bytes) -> Result<CollectionBody, ApiError> {
    let m = parse_object_body(body)?;
    for k in m.keys() {
        if k != "allOrNone" && k != "records" {
            return Err(ApiError::bad(
                "JSON_PARSER_ERROR",
                format!("Unrecognized field \"{k}\""),
            ));
        }
    }
    let all_or_none = match m.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad(
                "JSON_PARSER_ERROR",
                format!("Cannot deserialize instance of boolean from {v}"),
            ));
        }
    };
    let records = match m.get("records") {
        Some(Value::Array(a)) => a.clone(),
        _ => {
            return Err(ApiError::bad(
                "JSON_PARSER_ERROR",
                "records: a list of sObjects is required",
            ));
        }
    };
    if records.len() > COLLECTION_LIMIT {
        return Err(too_many(records.len(), COLLECTION_LIMIT));
    }
    Ok(CollectionBody {
        all_or_none,
        records,
    })
}

fn rolled_back() -> Value {
    json!({"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []})
}

/// One record of a collection call: its id and, for upserts, whether it was
/// created; or its id when known and the error.
type RecordOutcome = Result<(String, Option<bool>), (Option<String>, ApiError)>;

/// Runs `op` on each record under one write lock, with allOrNone rollback.
fn run_collection(
    shared: &Shared,
    all_or_none: bool,
    n: usize,
    mut op: impl FnMut(&mut store::Org, usize) -> RecordOutcome,
) -> Value {
    let mut org = shared.org.write();
    org.begin();
    let results: Vec<RecordOutcome> = (0..n).map(|i| op(&mut org, i)).collect();
    let failed = results.iter().any(Result::is_err);
    if all_or_none && failed {
        org.rollback();
    } else {
        org.commit();
    }
    drop(org);
    let out: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok((id, created)) if all_or_none && failed => {
                let mut v = json!({"id": id, "success": false, "errors": [rolled_back()]});
                if created.is_some() {
                    v["created"] = json!(false);
                }
                v
            }
            Ok((id, created)) => {
                let mut v = json!({"id": id, "success": true, "errors": []});
                if let Some(c) = created {
                    v["created"] = json!(c);
                }
                v
            }
            Err((id, e)) => {
                let mut v = json!({"success": false, "errors": [e.record_error()]});
                if let Some(id) = id {
                    v["id"] = json!(id);
                }
                v
            }
        })
        .collect();
    Value::Array(out)
}

fn record_type(rec: &Value, shared: &Shared) -> Result<usize, ApiError> {
    let t = rec
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    let Some(t) = t else {
        return Err(ApiError::bad(
            "INVALID_TYPE",
            "Must send a concrete entity type.",
        ));
    };
    shared.schema.object_index(t).ok_or_else(|| {
        ApiError::bad(
            "INVALID_TYPE",
            format!("sObject type '{t}' is not supported."),
        )
    })
}

async fn collection_create(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    body: Bytes,
) -> ApiResult {
    let c = parse_collection(&body)?;
    let now = now_ms();
    let out = run_collection(&shared, c.all_or_none, c.records.len(), |org, i| {
        let rec = &c.records[i];
        let o = record_type(rec, &shared).map_err(|e| (None, e))?;
        let m = rec.as_object().cloned().unwrap_or_default();
        let ctx = WriteCtx {
            user_id: &user,
            now,
            faults: &shared.faults,
        };
        org.create(o, &m, &ctx)
            .map(|id| (id, None))
            .map_err(|e| (None, e))
    });
    Ok(Json(out).into_response())
}

fn record_id(rec: &Value) -> Option<String> {
    rec.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
}

async fn collection_update(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    body: Bytes,
) -> ApiResult {
    let c = parse_collection(&body)?;
    let now = now_ms();
    let out = run_collection(&shared, c.all_or_none, c.records.len(), |org, i| {
        let rec = &c.records[i];
        let Some(id) = record_id(rec) else {
            return Err((
                None,
                ApiError::bad("MISSING_ARGUMENT", "Id not specified in an update call")
                    .with_fields(vec!["Id".into()]),
            ));
        };
        let o = record_type(rec, &shared).map_err(|e| (Some(id.clone()), e))?;
        let mut m = rec.as_object().cloned().unwrap_or_default();
        m.retain(|k, _| !k.eq_ignore_ascii_case("id"));
        let ctx = WriteCtx {
            user_id: &user,
            now,
            faults: &shared.faults,
        };
        org.update(o, &id, &m, &ctx)
            .map(|id| (id, None))
            .map_err(|e| (Some(id), e))
    });
    Ok(Json(out).into_response())
}

async fn collection_upsert(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Path((sobject, field)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let o = object(&shared, &sobject)?;
    let def = &shared.schema.objects[o];
    if def
        .field_index(&field)
        .filter(|i| def.fields[*i].external_id || def.fields[*i].name == "Id")
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {field}"),
        ));
    }
    let c = parse_collection(&body)?;
    let now = now_ms();
    let out = run_collection(&shared, c.all_or_none, c.records.len(), |org, i| {
        let rec = &c.records[i];
        let t = record_type(rec, &shared).map_err(|e| (None, e))?;
        if t != o {
            return Err((
                None,
                ApiError::bad(
                    "INVALID_TYPE",
                    format!(
                        "Record type {} does not match the URL's {}",
                        shared.schema.objects[t].name, def.name
                    ),
                ),
            ));
        }
        let m = rec.as_object().cloned().unwrap_or_default();
        let key = m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&field))
            .and_then(|(_, v)| v.as_str().map(str::to_string));
        let Some(key) = key else {
            return Err((
                None,
                ApiError::bad("MISSING_ARGUMENT", format!("{field} not specified"))
                    .with_fields(vec![field.clone()]),
            ));
        };
        let ctx = WriteCtx {
            user_id: &user,
            now,
            faults: &shared.faults,
        };
        org.upsert(o, &field, &key, &m, &ctx)
            .map(|(id, created)| (id, Some(created)))
            .map_err(|e| (None, e))
    });
    Ok(Json(out).into_response())
}

fn split_ids(q: &HashMap<String, String>) -> Vec<String> {
    q.get("ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

async fn collection_delete(
    State(shared): State<Shared>,
    Extension(User(user)): Extension<User>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let ids = split_ids(&q);
    if ids.is_empty() {
        return Err(ApiError::bad("MISSING_ARGUMENT", "ids is required"));
    }
    if ids.len() > COLLECTION_LIMIT {
        return Err(too_many(ids.len(), COLLECTION_LIMIT));
    }
    let all_or_none = match q.get("allOrNone").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "INVALID_INPUT",
                format!("allOrNone must be true or false, not {other}"),
            ));
        }
    };
    let now = now_ms();
    let out = run_collection(&shared, all_or_none, ids.len(), |org, i| {
        let ctx = WriteCtx {
            user_id: &user,
            now,
            faults: &shared.faults,
        };
        org.delete(&ids[i], None, &ctx)
            .map(|id| (id, None))
            .map_err(|e| (Some(ids[i].clone()), e))
    });
    Ok(Json(out).into_response())
}

fn retrieve_many(
    shared: &Shared,
    sobject: &str,
    ids: Vec<String>,
    fields: Option<String>,
) -> ApiResult {
    let o = object(shared, sobject)?;
    if ids.is_empty() {
        return Err(ApiError::bad("MISSING_ARGUMENT", "ids is required"));
    }
    if ids.len() > 2000 {
        return Err(too_many(ids.len(), 2000));
    }
    let Some(fields) = fields.filter(|f| !f.trim().is_empty()) else {
        return Err(ApiError::bad("MISSING_ARGUMENT", "fields is required"));
    };
    let org = shared.org.read();
    let idx = org.field_indexes(o, &fields)?;
    let out: Vec<Value> = ids
        .iter()
        .map(|id| match org.get_live(o, id) {
            Ok(i) => org.render(o, &org.tables[o].rows[i], Some(&idx)),
            Err(_) => Value::Null,
        })
        .collect();
    Ok(Json(out).into_response())
}

async fn collection_retrieve(
    State(shared): State<Shared>,
    Path(sobject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let ids = split_ids(&q);
    retrieve_many(&shared, &sobject, ids, q.get("fields").cloned())
}

async fn collection_retrieve_post(
    State(shared): State<Shared>,
    Path(sobject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let m = parse_object_body(&body)?;
    let ids: Vec<String> = m
        .get("ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let fields = m.get("fields").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    });
    retrieve_many(&shared, &sobject, ids, fields)
}

// ------------------------------------------------------------------ control API

fn control_error(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.to_string()})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    accounts: Option<usize>,
    #[serde(default)]
    contacts: Option<usize>,
    #[serde(default)]
    opportunities: Option<usize>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    multi_currency: Option<bool>,
}

fn control_routes(shared: Shared) -> Router {
    let s1 = shared.clone();
    let s2 = shared.clone();
    let s3 = shared.clone();
    let s4 = shared.clone();
    let s5 = shared.clone();
    let s6 = shared;
    Router::new()
        .route(
            "/__emulator/seed",
            post(move |body: Bytes| {
                let s = s1.clone();
                async move {
                    let req: SeedRequest = if body.is_empty() {
                        SeedRequest {
                            seed: None,
                            accounts: None,
                            contacts: None,
                            opportunities: None,
                        }
                    } else {
                        match serde_json::from_slice(&body) {
                            Ok(r) => r,
                            Err(e) => {
                                return control_error(format_args!("invalid seed request: {e}"));
                            }
                        }
                    };
                    let d = s.sizes;
                    let sizes = super::seed::SeedSizes {
                        accounts: req.accounts.unwrap_or(d.accounts),
                        contacts: req.contacts.unwrap_or(d.contacts),
                        opportunities: req.opportunities.unwrap_or(d.opportunities),
                    };
                    if sizes.accounts > 1_000_000
                        || sizes.contacts > 2_000_000
                        || sizes.opportunities > 2_000_000
                    {
                        return control_error(
                            "at most 1,000,000 accounts and 2,000,000 contacts/opportunities",
                        );
                    }
                    let multi = s.multi_currency();
                    let mut org = store::Org::new(s.schema.clone(), multi);
                    super::seed::seed(&mut org, Some(req.seed.unwrap_or(1)), sizes);
                    *s.org.write() = org;
                    let org = s.org.read();
                    let counts: Map<String, Value> = org
                        .schema
                        .objects
                        .iter()
                        .zip(&org.tables)
                        .map(|(d, t)| (d.name.to_string(), json!(t.rows.len())))
                        .collect();
                    Json(json!({"seeded": Value::Object(counts)})).into_response()
                }
            }),
        )
        .route(
            "/__emulator/reset",
            post(move || {
                let s = s2.clone();
                async move {
                    let multi = s.multi_currency();
                    let mut org = store::Org::new(s.schema.clone(), multi);
                    super::seed::seed(&mut org, None, Default::default());
                    *s.org.write() = org;
                    s.faults.set(FaultProfile::default());
                    s.accounting.reset();
                    StatusCode::NO_CONTENT.into_response()
                }
            }),
        )
        .route(
            "/__emulator/snapshot",
            get(move || {
                let s = s3.clone();
                async move { Json(s.org.read().export()).into_response() }
            })
            .put(move |body: Bytes| {
                let s = s4.clone();
                async move {
                    let v: Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return control_error(format_args!("invalid snapshot: {e}")),
                    };
                    match store::Org::import(s.schema.clone(), &v) {
                        Ok(org) => {
                            *s.org.write() = org;
                            StatusCode::NO_CONTENT.into_response()
                        }
                        Err(e) => control_error(format_args!("invalid snapshot: {e}")),
                    }
                }
            }),
        )
        .route(
            "/__emulator/settings",
            axum::routing::put(move |body: Bytes| {
                let s = s5.clone();
                async move {
                    let req: Settings = match serde_json::from_slice(&body) {
                        Ok(r) => r,
                        Err(e) => return control_error(format_args!("invalid settings: {e}")),
                    };
                    if let Some(m) = req.multi_currency {
                        s.org.write().multi_currency = m;
                    }
                    Json(json!({"multi_currency": s.multi_currency()})).into_response()
                }
            }),
        )
        .route(
            "/__emulator/purge-deleted",
            post(move || {
                let s = s6.clone();
                async move {
                    s.org.write().purge_deleted();
                    StatusCode::NO_CONTENT.into_response()
                }
            }),
        )
}
