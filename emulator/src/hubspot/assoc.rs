//! Associations v4 routes: list an object's associations, create default and
//! labeled associations, remove them, the batch create/read/archive/
//! associate-default/labels-archive calls, and association labels.
//!
//! Association changes never bump `hs_lastmodifieddate` (as in HubSpot), but
//! they do recompute the contact rollups (done by the store). Must never
//! answer 500 or panic on any input.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::schema::{ObjectType, iso};
use super::store::{AssocType, HUBSPOT_DEFINED, Store};
use super::{Body, HubSpot, P, Params, now_ms, object_type};

/// Most inputs an association batch takes (unverified for HubSpot; its docs name 1,000 for reads).
pub const MAX_ASSOC_BATCH: usize = 1_000;

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TypeInput {
    association_category: String,
    association_type_id: u32,
}

#[derive(Deserialize)]
struct Id {
    id: Value,
}

fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn path_id(s: &str) -> Result<u64, ApiError> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| ApiError::validation(format!("{s:?} is not a valid object id")))
}

/// `{fromObjectTypeId, fromObjectId, toObjectTypeId, toObjectId, labels}`.
fn labels_between(s: &Store, from: (ObjectType, u64), to: (ObjectType, u64)) -> Value {
    let labels: Vec<String> = s
        .associations(from, to.0)
        .into_iter()
        .find(|(id, _)| *id == to.1)
        .map(|(_, types)| types.into_iter().filter_map(|t| t.label.clone()).collect())
        .unwrap_or_default();
    json!({
        "fromObjectTypeId": from.0.type_id(),
        "fromObjectId": from.1,
        "toObjectTypeId": to.0.type_id(),
        "toObjectId": to.1,
        "labels": labels,
    })
}

fn default_results(s: &Store, from: (ObjectType, u64), to: (ObjectType, u64)) -> Vec<Value> {
    let spec = |a: (ObjectType, u64), b: (ObjectType, u64)| {
        json!({
            "from": {"id": a.1.to_string()},
            "to": {"id": b.1.to_string()},
            "associationSpec": {"associationCategory": HUBSPOT_DEFINED, "associationTypeId": s.default_type(a.0, b.0)},
        })
    };
    vec![spec(from, to), spec(to, from)]
}

fn batch_body(started: i64, results: Vec<Value>, errors: Vec<Value>, ok: StatusCode) -> Response {
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

fn input_error(category: &str, message: String, ids: Vec<String>) -> Value {
    json!({"status": "error", "category": category, "message": message, "context": {"ids": ids}, "errors": [], "links": {}})
}

/// `GET /crm/v4/objects/{type}/{id}/associations/{toType}`.
pub async fn list(
    State(hs): State<HubSpot>,
    P((object, id, to)): P<(String, String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let (ot, to) = (object_type(&object)?, object_type(&to)?);
    let id = path_id(&id)?;
    let limit = params.limit(500, 500)?;
    let after = match params.get("after") {
        None => 0,
        Some(a) => a
            .parse::<usize>()
            .map_err(|_| ApiError::validation(format!("Invalid paging cursor after={a:?}")))?,
    };
    let body = hs.read(|s| {
        let all = s.associations((ot, id), to);
        let page: Vec<Value> = all
            .iter()
            .skip(after)
            .take(limit)
            .map(|(tid, types)| json!({"toObjectId": tid, "associationTypes": types.iter().map(|t| t.spec_json()).collect::<Vec<_>>()}))
            .collect();
        let mut body = json!({"results": page});
        if after + limit < all.len() {
            body["paging"] = json!({"next": {"after": (after + limit).to_string(), "link": null}});
        }
        body
    });
    Ok(Json(body).into_response())
}

/// `PUT /crm/v4/objects/{type}/{id}/associations/default/{toType}/{toId}`.
pub async fn put_default(
    State(hs): State<HubSpot>,
    P((object, id, to, to_id)): P<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let from = (object_type(&object)?, path_id(&id)?);
    let to = (object_type(&to)?, path_id(&to_id)?);
    let started = now_ms();
    hs.write(|s| {
        let ty = s.default_type(from.0, to.0).ok_or_else(|| {
            ApiError::validation(format!(
                "{} cannot be associated with {}",
                from.0.plural(),
                to.0.plural()
            ))
        })?;
        s.associate(from, to, HUBSPOT_DEFINED, ty)
            .map_err(|e| ApiError::validation(e.to_string()))?;
        Ok(batch_body(
            started,
            default_results(s, from, to),
            Vec::new(),
            StatusCode::OK,
        ))
    })
}

/// `PUT /crm/v4/objects/{type}/{id}/associations/{toType}/{toId}` with a body of
/// types: 201 with the pair's labels.
pub async fn put_labeled(
    State(hs): State<HubSpot>,
    P((object, id, to, to_id)): P<(String, String, String, String)>,
    Body(types): Body<Vec<TypeInput>>,
) -> Result<Response, ApiError> {
    let from = (object_type(&object)?, path_id(&id)?);
    let to = (object_type(&to)?, path_id(&to_id)?);
    if types.is_empty() {
        return Err(ApiError::validation(
            "The body needs at least one association type",
        ));
    }
    hs.write(|s| {
        for t in &types {
            s.associate(from, to, &t.association_category, t.association_type_id)
                .map_err(|e| ApiError::validation(e.to_string()))?;
        }
        Ok((StatusCode::CREATED, Json(labels_between(s, from, to))).into_response())
    })
}

/// `DELETE /crm/v4/objects/{type}/{id}/associations/{toType}/{toId}`: removes every association of the pair.
pub async fn delete(
    State(hs): State<HubSpot>,
    P((object, id, to, to_id)): P<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let from = (object_type(&object)?, path_id(&id)?);
    let to = (object_type(&to)?, path_id(&to_id)?);
    hs.write(|s| s.remove_pair(from, to));
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn inputs<T: serde::de::DeserializeOwned>(body: &Value) -> Result<Vec<T>, ApiError> {
    let arr = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::validation("Invalid input JSON: the body needs an \"inputs\" array")
        })?;
    if arr.len() > MAX_ASSOC_BATCH {
        return Err(ApiError::validation(format!(
            "Batch input size {} exceeds the limit of {MAX_ASSOC_BATCH} inputs",
            arr.len()
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v.clone()).map_err(|e| {
                ApiError::validation(format!("Invalid input JSON in inputs[{i}]: {e}"))
            })
        })
        .collect()
}

/// `POST /crm/v4/associations/{from}/{to}/batch/associate/default`.
pub async fn batch_default(
    State(hs): State<HubSpot>,
    P((from_t, to_t)): P<(String, String)>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct In {
        from: Id,
        to: Id,
    }
    let (ft, tt) = (object_type(&from_t)?, object_type(&to_t)?);
    let parsed: Vec<In> = inputs(&body)?;
    let started = now_ms();
    hs.write(|s| {
        let ty = s.default_type(ft, tt).ok_or_else(|| {
            ApiError::validation(format!(
                "{} cannot be associated with {}",
                ft.plural(),
                tt.plural()
            ))
        })?;
        let (mut results, mut errors) = (Vec::new(), Vec::new());
        for i in &parsed {
            match (parse_id(&i.from.id), parse_id(&i.to.id)) {
                (Some(a), Some(b)) => match s.associate((ft, a), (tt, b), HUBSPOT_DEFINED, ty) {
                    Ok(()) => results.extend(default_results(s, (ft, a), (tt, b))),
                    Err(e) => errors.push(input_error(
                        "VALIDATION_ERROR",
                        e.to_string(),
                        vec![a.to_string(), b.to_string()],
                    )),
                },
                _ => errors.push(input_error(
                    "VALIDATION_ERROR",
                    "from.id and to.id must be record ids".into(),
                    Vec::new(),
                )),
            }
        }
        Ok(batch_body(started, results, errors, StatusCode::OK))
    })
}

/// `POST /crm/v4/associations/{from}/{to}/batch/{create|read|archive}`.
pub async fn batch(
    State(hs): State<HubSpot>,
    P((from_t, to_t, action)): P<(String, String, String)>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    let (ft, tt) = (object_type(&from_t)?, object_type(&to_t)?);
    let started = now_ms();
    match action.as_str() {
        "create" => {
            #[derive(Deserialize)]
            struct In {
                from: Id,
                to: Id,
                types: Vec<TypeInput>,
            }
            let parsed: Vec<In> = inputs(&body)?;
            hs.write(|s| {
                let (mut results, mut errors) = (Vec::new(), Vec::new());
                for i in &parsed {
                    let (Some(a), Some(b)) = (parse_id(&i.from.id), parse_id(&i.to.id)) else {
                        errors.push(input_error(
                            "VALIDATION_ERROR",
                            "from.id and to.id must be record ids".into(),
                            Vec::new(),
                        ));
                        continue;
                    };
                    let outcome = i.types.iter().try_for_each(|t| {
                        s.associate(
                            (ft, a),
                            (tt, b),
                            &t.association_category,
                            t.association_type_id,
                        )
                    });
                    match outcome {
                        Ok(()) if !i.types.is_empty() => {
                            results.push(labels_between(s, (ft, a), (tt, b)))
                        }
                        Ok(()) => errors.push(input_error(
                            "VALIDATION_ERROR",
                            "types must not be empty".into(),
                            vec![a.to_string()],
                        )),
                        Err(e) => errors.push(input_error(
                            "VALIDATION_ERROR",
                            e.to_string(),
                            vec![a.to_string(), b.to_string()],
                        )),
                    }
                }
                Ok(batch_body(started, results, errors, StatusCode::CREATED))
            })
        }
        "read" => {
            let parsed: Vec<Id> = inputs(&body)?;
            hs.read(|s| {
                let (mut results, mut errors) = (Vec::new(), Vec::new());
                for i in &parsed {
                    let Some(a) = parse_id(&i.id) else {
                        errors.push(input_error("VALIDATION_ERROR", format!("{} is not a valid object id", i.id), Vec::new()));
                        continue;
                    };
                    let assocs = s.associations((ft, a), tt);
                    if s.table(ft).active(a).is_none() || assocs.is_empty() {
                        errors.push(input_error(
                            "OBJECT_NOT_FOUND",
                            format!("No {} is associated with {} {a}.", tt.singular(), ft.singular()),
                            vec![a.to_string()],
                        ));
                        continue;
                    }
                    let to: Vec<Value> = assocs
                        .iter()
                        .map(|(tid, types)| json!({"toObjectId": tid, "associationTypes": types.iter().map(|t| t.spec_json()).collect::<Vec<_>>()}))
                        .collect();
                    results.push(json!({"from": {"id": a.to_string()}, "to": to}));
                }
                Ok(batch_body(started, results, errors, StatusCode::OK))
            })
        }
        "archive" => {
            #[derive(Deserialize)]
            struct In {
                from: Id,
                to: Vec<Id>,
            }
            let parsed: Vec<In> = inputs(&body)?;
            hs.write(|s| {
                for i in &parsed {
                    let Some(a) = parse_id(&i.from.id) else {
                        continue;
                    };
                    for t in &i.to {
                        if let Some(b) = parse_id(&t.id) {
                            s.remove_pair((ft, a), (tt, b));
                        }
                    }
                }
            });
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => Err(ApiError::not_found(format!(
            "Unknown association batch action {other}"
        ))),
    }
}

/// `POST /crm/v4/associations/{from}/{to}/batch/labels/archive`: removes specific labels.
pub async fn batch_archive_labels(
    State(hs): State<HubSpot>,
    P((from_t, to_t)): P<(String, String)>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct In {
        from: Id,
        to: Id,
        types: Vec<TypeInput>,
    }
    let (ft, tt) = (object_type(&from_t)?, object_type(&to_t)?);
    let parsed: Vec<In> = inputs(&body)?;
    hs.write(|s| {
        for i in &parsed {
            if let (Some(a), Some(b)) = (parse_id(&i.from.id), parse_id(&i.to.id)) {
                for t in &i.types {
                    s.remove_type((ft, a), (tt, b), t.association_type_id);
                }
            }
        }
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /crm/v4/associations/{from}/{to}/labels`.
pub async fn labels(
    State(hs): State<HubSpot>,
    P((from_t, to_t)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let (ft, tt) = (object_type(&from_t)?, object_type(&to_t)?);
    let results: Vec<Value> =
        hs.read(|s| s.types_between(ft, tt).map(AssocType::spec_json).collect());
    Ok(Json(json!({"results": results})).into_response())
}

/// `POST /crm/v4/associations/{from}/{to}/labels` `{label, name, inverseLabel?}`.
pub async fn create_label(
    State(hs): State<HubSpot>,
    P((from_t, to_t)): P<(String, String)>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    let (ft, tt) = (object_type(&from_t)?, object_type(&to_t)?);
    let label = body
        .get("label")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let (Some(label), Some(name)) = (label, name) else {
        return Err(ApiError::validation("label and name are required"));
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::validation(format!(
            "name {name:?} may contain only lower-case letters, digits and underscores"
        )));
    }
    let inverse = body
        .get("inverseLabel")
        .and_then(Value::as_str)
        .map(str::to_string);
    let results = hs.write(|s| {
        if s.types_between(ft, tt)
            .any(|t| t.label.as_deref() == Some(label))
        {
            return Err(ApiError::Conflict(format!(
                "An association label {label:?} already exists between {} and {}",
                ft.plural(),
                tt.plural()
            )));
        }
        Ok(s.create_label(ft, tt, label, inverse.as_deref())
            .iter()
            .map(AssocType::spec_json)
            .collect::<Vec<_>>())
    })?;
    Ok(Json(json!({"results": results})).into_response())
}
