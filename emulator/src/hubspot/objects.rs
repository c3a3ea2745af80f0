//! CRM objects v3 routes: create, read, update, archive, list with `after`
//! paging, batch read/create/update/upsert/archive with 207 partial results,
//! and search (filter groups, sorts, paging, the 10,000-result cap).
//!
//! Handlers parse and check the request, then do all store work inside one
//! synchronous lock scope. Values are validated for the whole request before
//! anything is written (a schema error fails a create or update request with
//! 400); per-record failures (missing record, unique conflict, forced
//! validation, and for upsert also property-check failures) become per-input
//! errors of a 207.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::schema::{ObjectType, PropError, iso};
use super::store::{Changes, Filter, RecordError, Sort, Store};
use super::webhooks::Actor;
use super::{Body, HubSpot, P, Params, now_ms, object_type};

/// Most inputs a batch call takes.
pub const MAX_BATCH: usize = 100;
/// Largest list page when `propertiesWithHistory` is asked for.
pub const MAX_HISTORY_PAGE: usize = 50;
/// Most results a search reaches.
pub const SEARCH_CAP: usize = 10_000;
/// Largest search page.
pub const MAX_SEARCH_PAGE: usize = 200;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AssocTypeInput {
    association_category: String,
    association_type_id: u32,
}

#[derive(Deserialize)]
pub struct IdOnly {
    id: Value,
}

#[derive(Deserialize)]
pub struct AssocInput {
    to: IdOnly,
    types: Vec<AssocTypeInput>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateInput {
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    associations: Vec<AssocInput>,
    #[serde(default, rename = "objectWriteTraceId")]
    _trace: Option<String>,
}

#[derive(Deserialize)]
pub struct UpdateInput {
    #[serde(default)]
    properties: Map<String, Value>,
}

/// An id as clients send it (string or number).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn record_error(e: RecordError) -> ApiError {
    match e {
        RecordError::NotFound(id) => ApiError::object_not_found(&id),
        RecordError::Conflict(m) => ApiError::Conflict(m),
        RecordError::Forced(m) => ApiError::validation(m),
    }
}

/// One per-input error of a batch (HubSpot's StandardError shape).
fn batch_error(category: &str, message: &str, context: Value) -> Value {
    json!({"status": "error", "category": category, "message": message, "context": context, "errors": [], "links": {}})
}

fn record_batch_error(e: &RecordError, input_id: Option<&str>) -> Value {
    let ctx = |id: &str| json!({"ids": [id]});
    match e {
        RecordError::NotFound(id) => batch_error(
            "OBJECT_NOT_FOUND",
            "Could not find the object to update: it may be deleted or not exist.",
            ctx(id),
        ),
        RecordError::Conflict(m) => batch_error(
            "CONFLICT",
            m,
            input_id.map(ctx).unwrap_or_else(|| json!({})),
        ),
        RecordError::Forced(m) => batch_error(
            "VALIDATION_ERROR",
            m,
            input_id.map(ctx).unwrap_or_else(|| json!({})),
        ),
    }
}

/// The per-input error of an input whose values failed their property checks.
fn property_batch_error(errors: &[PropError], input_id: &str) -> Value {
    let inner: Vec<Value> = errors.iter().map(PropError::to_json).collect();
    let mut e = batch_error(
        "VALIDATION_ERROR",
        &format!("Property values were not valid: {}", Value::Array(inner)),
        json!({"ids": [input_id]}),
    );
    e["errors"] = errors
        .iter()
        .map(|p| json!({"message": p.message, "code": p.code, "context": {"propertyName": [p.name]}}))
        .collect();
    e
}

/// `{status, results, startedAt, completedAt}` (+ `errors`, `numErrors` → 207).
fn batch_response(
    ok: StatusCode,
    started: i64,
    results: Vec<Value>,
    errors: Vec<Value>,
) -> Response {
    let mut body = json!({"status": "COMPLETE", "results": results, "startedAt": iso(started), "completedAt": iso(now_ms())});
    let status = if errors.is_empty() {
        ok
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    (status, Json(body)).into_response()
}

/// Checks the v3 `associations` of a create and resolves each to (to type, to id, category, type id).
fn resolve_assocs(
    store: &Store,
    ot: ObjectType,
    inputs: &[AssocInput],
) -> Result<Vec<(ObjectType, u64, String, u32)>, ApiError> {
    let mut out = Vec::new();
    for a in inputs {
        let to_id = id_text(&a.to.id)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| ApiError::validation("associations[].to.id must be a record id"))?;
        for t in &a.types {
            let Some(ty) = store.assoc_types.iter().find(|x| {
                x.from == ot
                    && x.type_id == t.association_type_id
                    && x.category.eq_ignore_ascii_case(&t.association_category)
            }) else {
                return Err(ApiError::validation(format!(
                    "{} {} is not a valid association type from {}",
                    t.association_category,
                    t.association_type_id,
                    ot.plural()
                )));
            };
            if store.table(ty.to).active(to_id).is_none() {
                return Err(ApiError::validation(format!(
                    "No {} with id {to_id} exists to associate with",
                    ty.to.singular()
                )));
            }
            out.push((
                ty.to,
                to_id,
                t.association_category.clone(),
                t.association_type_id,
            ));
        }
    }
    Ok(out)
}

fn associations_param(params: &Params) -> Result<Vec<ObjectType>, ApiError> {
    params
        .list("associations")
        .unwrap_or_default()
        .iter()
        .map(|s| super::object_type(s))
        .collect()
}

/// `GET /crm/v3/objects/{type}`.
pub async fn list(
    State(hs): State<HubSpot>,
    P(object): P<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let with_history = params.list("propertiesWithHistory").unwrap_or_default();
    // HubSpot reads at most 50 records a page with property history.
    let limit = params.limit(10, 100)?.min(if with_history.is_empty() {
        usize::MAX
    } else {
        MAX_HISTORY_PAGE
    });
    let after = match params.get("after") {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            ApiError::validation(format!(
                "Invalid paging cursor after={a:?}: expected the value of paging.next.after"
            ))
        })?,
    };
    let archived = params.archived()?;
    let props = params.list("properties");
    let assoc = associations_param(&params)?;
    let body = hs.read(|s| {
        let mut it = s
            .table(ot)
            .records()
            .range(after..)
            .map(|(_, r)| r)
            .filter(|r| r.archived == archived);
        let results: Vec<Value> = it
            .by_ref()
            .take(limit)
            .map(|r| {
                let mut v = s.record_json(ot, r, props.as_deref(), &assoc);
                s.add_history(ot, r, &with_history, &mut v);
                v
            })
            .collect();
        let mut body = json!({"results": results});
        if let Some(next) = it.next() {
            body["paging"] = json!({"next": {
                "after": next.id.to_string(),
                "link": format!("/crm/v3/objects/{}?limit={limit}&after={}", ot.plural(), next.id),
            }});
        }
        body
    });
    Ok(Json(body).into_response())
}

/// Finds a record by path id, or by `idProperty`.
fn locate(
    s: &Store,
    ot: ObjectType,
    id: &str,
    id_property: Option<&str>,
    archived: bool,
) -> Result<u64, ApiError> {
    let table = s.table(ot);
    match id_property {
        Some(p) if p != "hs_object_id" => {
            if !table.is_id_property(p) {
                return Err(ApiError::validation(format!(
                    "{p} is not a unique property of {}: it cannot be used as idProperty",
                    ot.plural()
                )));
            }
            table
                .find_by(p, id)
                .ok_or_else(|| ApiError::object_not_found(id))
        }
        _ => {
            let n = id
                .parse::<u64>()
                .map_err(|_| ApiError::object_not_found(id))?;
            match table.records().get(&n) {
                Some(r) if r.archived == archived => Ok(n),
                _ => Err(ApiError::object_not_found(id)),
            }
        }
    }
}

/// `GET /crm/v3/objects/{type}/{id}`.
pub async fn get_one(
    State(hs): State<HubSpot>,
    P((object, id)): P<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let archived = params.archived()?;
    let props = params.list("properties");
    let assoc = associations_param(&params)?;
    let with_history = params.list("propertiesWithHistory").unwrap_or_default();
    let body = hs.read(|s| {
        let n = locate(s, ot, &id, params.get("idProperty"), archived)?;
        let rec = &s.table(ot).records()[&n];
        let mut v = s.record_json(ot, rec, props.as_deref(), &assoc);
        s.add_history(ot, rec, &with_history, &mut v);
        Ok::<_, ApiError>(v)
    })?;
    Ok(Json(body).into_response())
}

/// `POST /crm/v3/objects/{type}`.
pub async fn create(
    State(hs): State<HubSpot>,
    actor: Actor,
    P(object): P<String>,
    Body(input): Body<CreateInput>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let faults = hs.faults().clone();
    let body = hs.write_crm(ot, actor, |s, events| {
        let changes = s
            .validate(ot, None, &input.properties)
            .map_err(|e| ApiError::properties(&e))?;
        let assocs = resolve_assocs(s, ot, &input.associations)?;
        let id = s
            .apply(ot, None, changes, now_ms(), &faults)
            .map_err(record_error)?;
        events.created(s, id);
        for (to, to_id, cat, ty) in assocs {
            s.associate((ot, id), (to, to_id), &cat, ty)
                .map_err(|e| ApiError::validation(e.to_string()))?;
        }
        Ok::<_, ApiError>(s.full_json(ot, &s.table(ot).records()[&id]))
    })?;
    Ok(created(body))
}

/// `PATCH /crm/v3/objects/{type}/{id}`.
pub async fn update(
    State(hs): State<HubSpot>,
    actor: Actor,
    P((object, id)): P<(String, String)>,
    params: Params,
    Body(input): Body<UpdateInput>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let faults = hs.faults().clone();
    let body = hs.write_crm(ot, actor, |s, events| {
        let n = locate(s, ot, &id, params.get("idProperty"), false)?;
        let changes = s
            .validate(ot, s.table(ot).records().get(&n), &input.properties)
            .map_err(|e| ApiError::properties(&e))?;
        let before = events.before(s, n);
        s.apply(ot, Some(n), changes, now_ms(), &faults)
            .map_err(record_error)?;
        events.updated(s, n, before);
        Ok::<_, ApiError>(s.full_json(ot, &s.table(ot).records()[&n]))
    })?;
    Ok(Json(body).into_response())
}

/// `DELETE /crm/v3/objects/{type}/{id}`: archives; 204 even when nothing was there.
pub async fn archive(
    State(hs): State<HubSpot>,
    actor: Actor,
    P((object, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    if let Ok(n) = id.parse::<u64>() {
        hs.write_crm(ot, actor, |s, events| {
            let now = now_ms();
            if s.archive(ot, n, now) {
                events.archived(n, now);
            }
        });
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /crm/v3/objects/{type}/batch/{read|create|update|upsert|archive}`.
pub async fn batch(
    State(hs): State<HubSpot>,
    actor: Actor,
    P((object, action)): P<(String, String)>,
    params: Params,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let started = now_ms();
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::validation("Invalid input JSON: the body needs an \"inputs\" array")
        })?;
    if inputs.len() > MAX_BATCH {
        return Err(ApiError::validation(format!(
            "Batch input size {} exceeds the limit of {MAX_BATCH} inputs",
            inputs.len()
        )));
    }
    let faults = hs.faults().clone();
    match action.as_str() {
        "read" => batch_read(&hs, ot, &body, inputs, &params, started),
        "create" => {
            let parsed: Vec<CreateInput> = parse_inputs(inputs)?;
            hs.write_crm(ot, actor, |s, events| {
                let mut all = Vec::with_capacity(parsed.len());
                let mut errors: Vec<PropError> = Vec::new();
                for (i, input) in parsed.iter().enumerate() {
                    match s.validate(ot, None, &input.properties) {
                        Ok(c) => all.push(c),
                        Err(e) => errors.extend(e.into_iter().map(|mut e| {
                            e.message = format!("inputs[{i}]: {}", e.message);
                            e
                        })),
                    }
                }
                if !errors.is_empty() {
                    return Err(ApiError::properties(&errors));
                }
                let assocs = parsed
                    .iter()
                    .map(|i| resolve_assocs(s, ot, &i.associations))
                    .collect::<Result<Vec<_>, _>>()?;
                let now = now_ms();
                let (mut results, mut errs) = (Vec::new(), Vec::new());
                for (changes, assocs) in all.into_iter().zip(assocs) {
                    match s.apply(ot, None, changes, now, &faults) {
                        Ok(id) => {
                            events.created(s, id);
                            for (to, to_id, cat, ty) in assocs {
                                let _ = s.associate((ot, id), (to, to_id), &cat, ty);
                            }
                            results.push(s.full_json(ot, &s.table(ot).records()[&id]));
                        }
                        Err(e) => errs.push(record_batch_error(&e, None)),
                    }
                }
                Ok(batch_response(StatusCode::CREATED, started, results, errs))
            })
        }
        "update" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct In {
                id: Value,
                #[serde(default)]
                properties: Map<String, Value>,
                #[serde(default)]
                id_property: Option<String>,
            }
            let parsed: Vec<In> = parse_inputs(inputs)?;
            let ids: Vec<String> = parsed
                .iter()
                .map(|i| {
                    id_text(&i.id)
                        .ok_or_else(|| ApiError::validation("inputs[].id must be a string"))
                })
                .collect::<Result<_, _>>()?;
            no_duplicates(&ids)?;
            hs.write_crm(ot, actor, |s, events| {
                let mut plan: Vec<Result<(u64, Changes), RecordError>> = Vec::new();
                let mut errors = Vec::new();
                for (i, (input, id)) in parsed.iter().zip(&ids).enumerate() {
                    let found = locate(s, ot, id, input.id_property.as_deref(), false).ok();
                    let existing = found.and_then(|n| s.table(ot).records().get(&n));
                    match s.validate(ot, existing, &input.properties) {
                        Ok(c) => plan.push(
                            found
                                .map(|n| (n, c))
                                .ok_or_else(|| RecordError::NotFound(id.clone())),
                        ),
                        Err(e) => errors.extend(e.into_iter().map(|mut e| {
                            e.message = format!("inputs[{i}]: {}", e.message);
                            e
                        })),
                    }
                }
                if !errors.is_empty() {
                    return Err(ApiError::properties(&errors));
                }
                let now = now_ms();
                let (mut results, mut errs) = (Vec::new(), Vec::new());
                for (step, id) in plan.into_iter().zip(&ids) {
                    let written = step.and_then(|(n, c)| {
                        let before = events.before(s, n);
                        let n = s.apply(ot, Some(n), c, now, &faults)?;
                        events.updated(s, n, before);
                        Ok(n)
                    });
                    match written {
                        Ok(n) => results.push(s.full_json(ot, &s.table(ot).records()[&n])),
                        Err(e) => errs.push(record_batch_error(&e, Some(id))),
                    }
                }
                Ok(batch_response(StatusCode::OK, started, results, errs))
            })
        }
        "upsert" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct In {
                id: Value,
                #[serde(default)]
                id_property: Option<String>,
                #[serde(default)]
                properties: Map<String, Value>,
            }
            let parsed: Vec<In> = parse_inputs(inputs)?;
            let ids: Vec<String> = parsed
                .iter()
                .map(|i| {
                    id_text(&i.id)
                        .ok_or_else(|| ApiError::validation("inputs[].id must be a string"))
                })
                .collect::<Result<_, _>>()?;
            no_duplicates(&ids)?;
            hs.write_crm(ot, actor, |s, events| {
                let mut plan = Vec::new();
                for (i, (input, id)) in parsed.iter().zip(&ids).enumerate() {
                    let Some(prop) = input.id_property.as_deref() else {
                        return Err(ApiError::validation(format!("inputs[{i}].idProperty is required for upsert")));
                    };
                    if prop == "hs_object_id" || !s.table(ot).is_id_property(prop) {
                        return Err(ApiError::validation(format!(
                            "{prop} is not a unique property of {}: upsert needs an idProperty with hasUniqueValue",
                            ot.plural()
                        )));
                    }
                    let found = s.table(ot).find_by(prop, id);
                    let mut props = input.properties.clone();
                    if found.is_none() {
                        props.insert(prop.to_string(), Value::String(id.clone()));
                    }
                    let existing = found.and_then(|n| s.table(ot).records().get(&n));
                    // HubSpot answers an upsert input whose values fail their
                    // property checks with a per-input VALIDATION_ERROR in a 207
                    // (captured in HubSpot/hubspot-api-ruby#403); the other
                    // inputs are written.
                    plan.push((found, s.validate(ot, existing, &props)));
                }
                let now = now_ms();
                let (mut results, mut errs) = (Vec::new(), Vec::new());
                for ((found, checked), id) in plan.into_iter().zip(&ids) {
                    let changes = match checked {
                        Ok(c) => c,
                        Err(e) => {
                            errs.push(property_batch_error(&e, id));
                            continue;
                        }
                    };
                    let before = found.map(|n| events.before(s, n));
                    match s.apply(ot, found, changes, now, &faults) {
                        Ok(n) => {
                            match before {
                                Some(before) => events.updated(s, n, before),
                                None => events.created(s, n),
                            }
                            let mut v = s.full_json(ot, &s.table(ot).records()[&n]);
                            v["new"] = json!(found.is_none());
                            results.push(v);
                        }
                        Err(e) => errs.push(record_batch_error(&e, Some(id))),
                    }
                }
                Ok(batch_response(StatusCode::OK, started, results, errs))
            })
        }
        "archive" => {
            let parsed: Vec<IdOnly> = parse_inputs(inputs)?;
            let now = now_ms();
            hs.write_crm(ot, actor, |s, events| {
                for i in &parsed {
                    if let Some(n) = id_text(&i.id).and_then(|t| t.parse::<u64>().ok())
                        && s.archive(ot, n, now)
                    {
                        events.archived(n, now);
                    }
                }
            });
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => Err(ApiError::not_found(format!(
            "Unknown batch action {other}: expected read, create, update, upsert or archive"
        ))),
    }
}

fn parse_inputs<T: serde::de::DeserializeOwned>(inputs: &[Value]) -> Result<Vec<T>, ApiError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v.clone()).map_err(|e| {
                ApiError::validation(format!("Invalid input JSON in inputs[{i}]: {e}"))
            })
        })
        .collect()
}

fn no_duplicates(ids: &[String]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(ApiError::validation(format!(
                "Duplicate IDs found in batch input: [{id}]. IDs must be unique"
            )));
        }
    }
    Ok(())
}

/// An optional array of property names in a request body (`None` when
/// absent, null or empty).
fn name_list(body: &Value, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a {
                let Some(name) = x.as_str() else {
                    return Err(ApiError::validation(format!(
                        "{key} must be an array of property names: {x} is not a string"
                    )));
                };
                v.push(name.to_string());
            }
            Ok(if v.is_empty() { None } else { Some(v) })
        }
        Some(_) => Err(ApiError::validation(format!(
            "{key} must be an array of property names"
        ))),
    }
}

fn batch_read(
    hs: &HubSpot,
    ot: ObjectType,
    body: &Value,
    inputs: &[Value],
    params: &Params,
    started: i64,
) -> Result<Response, ApiError> {
    let parsed: Vec<IdOnly> = parse_inputs(inputs)?;
    let props = name_list(body, "properties")?;
    let with_history = name_list(body, "propertiesWithHistory")?.unwrap_or_default();
    let id_property = body
        .get("idProperty")
        .and_then(Value::as_str)
        .map(str::to_string);
    let archived = params.archived()?;
    hs.read(|s| {
        let mut results = Vec::new();
        let mut missing = Vec::new();
        for i in &parsed {
            let id = id_text(&i.id).unwrap_or_default();
            match locate(s, ot, &id, id_property.as_deref(), archived) {
                Ok(n) => {
                    let rec = &s.table(ot).records()[&n];
                    let mut v = s.record_json(ot, rec, props.as_deref(), &[]);
                    s.add_history(ot, rec, &with_history, &mut v);
                    results.push(v);
                }
                Err(ApiError::Validation { message, .. }) => return Err(ApiError::validation(message)),
                Err(_) => missing.push(id),
            }
        }
        let errors = if missing.is_empty() {
            Vec::new()
        } else {
            vec![batch_error(
                "OBJECT_NOT_FOUND",
                &format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", ot.upper()),
                json!({"ids": missing}),
            )]
        };
        Ok(batch_response(StatusCode::OK, started, results, errors))
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SearchInput {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    sorts: Vec<Value>,
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    after: Option<Value>,
    #[serde(default)]
    query: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct FilterGroup {
    #[serde(default)]
    filters: Vec<Filter>,
}

fn parse_sort(v: &Value) -> Result<Sort, ApiError> {
    match v {
        Value::String(s) => match s.strip_prefix('-') {
            Some(p) => Ok(Sort {
                property: p.to_string(),
                descending: true,
            }),
            None => Ok(Sort {
                property: s.clone(),
                descending: false,
            }),
        },
        Value::Object(o) => {
            let property = o
                .get("propertyName")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::validation("sorts[].propertyName is required"))?;
            let descending = match o
                .get("direction")
                .and_then(Value::as_str)
                .unwrap_or("ASCENDING")
            {
                "ASCENDING" => false,
                "DESCENDING" => true,
                d => {
                    return Err(ApiError::validation(format!(
                        "sorts[].direction must be ASCENDING or DESCENDING, not {d}"
                    )));
                }
            };
            Ok(Sort {
                property: property.to_string(),
                descending,
            })
        }
        _ => Err(ApiError::validation(
            "sorts[] must be objects with propertyName and direction",
        )),
    }
}

fn number_field(v: &Option<Value>, name: &str) -> Result<Option<usize>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| ApiError::validation(format!("{name} must be a non-negative integer"))),
        Some(Value::String(s)) => s.trim().parse::<usize>().map(Some).map_err(|_| {
            ApiError::validation(format!(
                "Invalid {name} {s:?}: expected the value of paging.next.after"
            ))
        }),
        Some(other) => Err(ApiError::validation(format!(
            "{name} must be an integer, not {other}"
        ))),
    }
}

/// `POST /crm/v3/objects/{type}/search`.
pub async fn search(
    State(hs): State<HubSpot>,
    P(object): P<String>,
    Body(input): Body<SearchInput>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    if input.filter_groups.len() > 5 {
        return Err(ApiError::validation(format!(
            "Too many filter groups ({}): at most 5 are allowed",
            input.filter_groups.len()
        )));
    }
    let total_filters: usize = input.filter_groups.iter().map(|g| g.filters.len()).sum();
    if input.filter_groups.iter().any(|g| g.filters.len() > 10) || total_filters > 25 {
        return Err(ApiError::validation(
            "Too many filters: at most 10 per filter group and 25 in total are allowed",
        ));
    }
    let limit = number_field(&input.limit, "limit")?.unwrap_or(10);
    if limit == 0 || limit > MAX_SEARCH_PAGE {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_SEARCH_PAGE}, not {limit}"
        )));
    }
    let after = number_field(&input.after, "after")?.unwrap_or(0);
    if after >= SEARCH_CAP {
        return Err(ApiError::validation(format!(
            "The search endpoint returns at most {SEARCH_CAP} results for one query: after={after} is past that. Narrow the query instead."
        )));
    }
    let sorts: Vec<Sort> = input
        .sorts
        .iter()
        .map(parse_sort)
        .collect::<Result<_, _>>()?;
    let groups: Vec<Vec<Filter>> = input.filter_groups.into_iter().map(|g| g.filters).collect();
    let page_limit = limit.min(SEARCH_CAP - after);
    let body = hs.read(|s| {
        let (total, ids) = s
            .search(
                ot,
                &groups,
                &sorts,
                input.query.as_deref(),
                after,
                page_limit,
            )
            .map_err(ApiError::validation)?;
        let results: Vec<Value> = ids
            .iter()
            .map(|id| {
                s.record_json(
                    ot,
                    &s.table(ot).records()[id],
                    input.properties.as_deref().filter(|p| !p.is_empty()),
                    &[],
                )
            })
            .collect();
        let mut body = json!({"total": total, "results": results});
        let next = after + ids.len();
        if next < total && !ids.is_empty() {
            body["paging"] = json!({"next": {"after": next.to_string()}});
        }
        Ok::<_, ApiError>(body)
    })?;
    Ok(Json(body).into_response())
}
