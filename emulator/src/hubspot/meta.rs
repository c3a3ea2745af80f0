//! Metadata routes: deal pipelines and stages (list, read, create), property
//! definitions (list, read, create custom and unique-value ones) and owners.
//!
//! Pipelines exist for deals only here; other object types answer a clear
//! 400. Must never accept a definition the store could not honour (e.g. a
//! unique property of a type that cannot be unique).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::schema::{ModificationMetadata, ObjectType, PropOption, PropType, PropertyDef, iso};
use super::store::{Pipeline, Stage, Store};
use super::{Body, HubSpot, P, Params, now_ms, object_type};

/// Most custom unique-value properties per object type.
pub const MAX_UNIQUE_PROPERTIES: usize = 10;

fn deals_only(s: &str) -> Result<(), ApiError> {
    match object_type(s)? {
        ObjectType::Deals => Ok(()),
        other => Err(ApiError::validation(format!(
            "The emulator has pipelines for deals only, not {}",
            other.plural()
        ))),
    }
}

/// `GET /crm/v3/pipelines/deals`.
pub async fn pipelines(
    State(hs): State<HubSpot>,
    P(object): P<String>,
) -> Result<Response, ApiError> {
    deals_only(&object)?;
    let results: Vec<Value> = hs.read(|s| s.pipelines.iter().map(Pipeline::to_json).collect());
    Ok(Json(json!({"results": results})).into_response())
}

/// `GET /crm/v3/pipelines/deals/{id}`.
pub async fn pipeline(
    State(hs): State<HubSpot>,
    P((object, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    deals_only(&object)?;
    hs.read(|s| s.pipeline(&id).map(Pipeline::to_json))
        .map(|p| Json(p).into_response())
        .ok_or_else(|| ApiError::not_found(format!("Unable to find pipeline {id}")))
}

/// `GET /crm/v3/pipelines/deals/{id}/stages`.
pub async fn stages(
    State(hs): State<HubSpot>,
    P((object, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    deals_only(&object)?;
    hs.read(|s| {
        s.pipeline(&id)
            .map(|p| json!({"results": p.stages.iter().map(Stage::to_json).collect::<Vec<_>>()}))
    })
    .map(|p| Json(p).into_response())
    .ok_or_else(|| ApiError::not_found(format!("Unable to find pipeline {id}")))
}

/// `GET /crm/v3/pipelines/deals/{pipelineId}/stages/{stageId}`.
pub async fn stage(
    State(hs): State<HubSpot>,
    P((object, id, stage_id)): P<(String, String, String)>,
) -> Result<Response, ApiError> {
    deals_only(&object)?;
    hs.read(|s| {
        let pipeline = s
            .pipeline(&id)
            .ok_or_else(|| ApiError::not_found(format!("Unable to find pipeline {id}")))?;
        pipeline
            .stages
            .iter()
            .find(|st| st.id == stage_id)
            .map(|st| Json(st.to_json()).into_response())
            .ok_or_else(|| {
                ApiError::not_found(format!("Unable to find stage {stage_id} in pipeline {id}"))
            })
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInput {
    label: String,
    display_order: i64,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInput {
    label: String,
    display_order: i64,
    stages: Vec<StageInput>,
}

fn meta_text(m: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `POST /crm/v3/pipelines/deals`.
pub async fn create_pipeline(
    State(hs): State<HubSpot>,
    P(object): P<String>,
    Body(input): Body<PipelineInput>,
) -> Result<Response, ApiError> {
    deals_only(&object)?;
    let label = input.label.trim().to_string();
    if label.is_empty() {
        return Err(ApiError::validation("label must not be empty"));
    }
    if input.stages.is_empty() {
        return Err(ApiError::validation("A pipeline needs at least one stage"));
    }
    let mut parsed = Vec::new();
    for (i, st) in input.stages.iter().enumerate() {
        let probability = meta_text(&st.metadata, "probability").ok_or_else(|| {
            ApiError::validation(format!(
                "stages[{i}].metadata.probability is required for deal stages"
            ))
        })?;
        let p = probability
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p));
        let Some(p) = p else {
            return Err(ApiError::validation(format!(
                "stages[{i}].metadata.probability must be a number between 0.0 and 1.0"
            )));
        };
        let is_closed = match meta_text(&st.metadata, "isClosed").as_deref() {
            None => p == 0.0 || p == 1.0,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "stages[{i}].metadata.isClosed must be true or false, not {other}"
                )));
            }
        };
        if st.label.trim().is_empty() {
            return Err(ApiError::validation(format!(
                "stages[{i}].label must not be empty"
            )));
        }
        parsed.push((
            st.label.trim().to_string(),
            st.display_order,
            format!("{p:.1}"),
            is_closed,
        ));
    }
    let body = hs.write(|s| {
        if s.pipelines
            .iter()
            .any(|p| p.label.eq_ignore_ascii_case(&label))
        {
            return Err(ApiError::Conflict(format!(
                "A pipeline with label {label:?} already exists"
            )));
        }
        let now = now_ms();
        let id = s.next_meta_id();
        let stages = parsed
            .into_iter()
            .map(|(label, display_order, probability, is_closed)| Stage {
                id: s.next_meta_id(),
                label,
                display_order,
                probability,
                is_closed,
                created_ms: now,
            })
            .collect();
        let p = Pipeline {
            id,
            label: label.clone(),
            display_order: input.display_order,
            stages,
            created_ms: now,
        };
        let json = p.to_json();
        s.pipelines.push(p);
        Ok(json)
    })?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A property definition with its external options filled in (pipelines, stages, owners).
fn property_json(s: &Store, ot: ObjectType, def: &PropertyDef) -> Value {
    let mut def = def.clone();
    let opt = |label: &str, value: &str, i: usize| PropOption {
        label: label.into(),
        value: value.into(),
        display_order: i as i64,
        hidden: false,
        description: None,
    };
    match (ot, def.name.as_str()) {
        (ObjectType::Deals, "pipeline") => {
            def.options = s
                .pipelines
                .iter()
                .enumerate()
                .map(|(i, p)| opt(&p.label, &p.id, i))
                .collect()
        }
        (ObjectType::Deals, "dealstage") => {
            def.options = s
                .pipelines
                .iter()
                .flat_map(|p| p.stages.iter())
                .enumerate()
                .map(|(i, st)| opt(&st.label, &st.id, i))
                .collect()
        }
        (_, "hubspot_owner_id") => {
            def.options = s
                .owners
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    opt(
                        &format!("{} {}", o.first_name, o.last_name),
                        &o.id.to_string(),
                        i,
                    )
                })
                .collect()
        }
        _ => {}
    }
    serde_json::to_value(def).unwrap_or(Value::Null)
}

/// `GET /crm/v3/properties/{type}`.
pub async fn properties(
    State(hs): State<HubSpot>,
    P(object): P<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let archived = params.archived()?;
    let results: Vec<Value> = hs.read(|s| {
        s.table(ot)
            .props
            .iter()
            .filter(|p| p.archived == archived)
            .map(|p| property_json(s, ot, p))
            .collect()
    });
    Ok(Json(json!({"results": results})).into_response())
}

/// `GET /crm/v3/properties/{type}/{name}`.
pub async fn property(
    State(hs): State<HubSpot>,
    P((object, name)): P<(String, String)>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    hs.read(|s| s.table(ot).prop(&name).map(|p| property_json(s, ot, p)))
        .map(|p| Json(p).into_response())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Unable to find property {name} for object type {}",
                ot.plural()
            ))
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyInput {
    name: String,
    label: String,
    #[serde(rename = "type")]
    ty: String,
    field_type: String,
    group_name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    options: Vec<PropOption>,
    #[serde(default)]
    display_order: Option<i64>,
    #[serde(default)]
    has_unique_value: bool,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    form_field: Option<bool>,
    #[serde(default)]
    calculation_formula: Option<String>,
    #[serde(default)]
    external_options: Option<bool>,
}

/// `POST /crm/v3/properties/{type}`.
pub async fn create_property(
    State(hs): State<HubSpot>,
    P(object): P<String>,
    Body(input): Body<PropertyInput>,
) -> Result<Response, ApiError> {
    let ot = object_type(&object)?;
    let name = input.name.trim();
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(ApiError::validation(format!(
            "Property name {name:?} must start with a lower-case letter and contain only a-z, 0-9 and _"
        )));
    }
    if input.label.trim().is_empty() {
        return Err(ApiError::validation("label must not be empty"));
    }
    let Some(ty) = PropType::parse(&input.ty) else {
        return Err(ApiError::validation(format!(
            "{:?} is not a valid property type: expected string, number, date, datetime, enumeration or bool",
            input.ty
        )));
    };
    if !ty.field_types().contains(&input.field_type.as_str()) {
        return Err(ApiError::validation(format!(
            "fieldType {:?} is not valid for type {}: expected one of {:?}",
            input.field_type,
            input.ty,
            ty.field_types()
        )));
    }
    if ty == PropType::Enumeration && input.options.is_empty() {
        return Err(ApiError::validation(
            "An enumeration property needs options",
        ));
    }
    if input.has_unique_value && !matches!(ty, PropType::String | PropType::Number) {
        return Err(ApiError::validation(
            "hasUniqueValue is allowed only on string and number properties",
        ));
    }
    let _ = (&input.calculation_formula, input.external_options);
    let body = hs.write(|s| {
        let table = s.table(ot);
        if table.prop(name).is_some() {
            return Err(ApiError::Conflict(format!(
                "A property named {name:?} already exists for object type {}",
                ot.plural()
            )));
        }
        if input.has_unique_value && table.unique_count() >= MAX_UNIQUE_PROPERTIES {
            return Err(ApiError::validation(format!(
                "{} already has {MAX_UNIQUE_PROPERTIES} unique-value properties, the most allowed",
                ot.plural()
            )));
        }
        let now = iso(now_ms());
        let def = PropertyDef {
            name: name.to_string(),
            label: input.label.trim().to_string(),
            ty,
            field_type: input.field_type.clone(),
            description: input.description.clone().unwrap_or_default(),
            group_name: input.group_name.clone(),
            options: input.options.clone(),
            display_order: input.display_order.unwrap_or(-1),
            calculated: false,
            external_options: false,
            has_unique_value: input.has_unique_value,
            hidden: input.hidden,
            hubspot_defined: false,
            modification_metadata: ModificationMetadata {
                archivable: true,
                read_only_definition: false,
                read_only_value: false,
            },
            form_field: input.form_field.unwrap_or(false),
            created_at: now.clone(),
            updated_at: now,
            archived: false,
        };
        let json = serde_json::to_value(&def).unwrap_or(Value::Null);
        s.table_mut(ot).add_prop(def);
        Ok(json)
    })?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /crm/v3/owners?email=&limit=&after=`.
pub async fn owners(State(hs): State<HubSpot>, params: Params) -> Result<Response, ApiError> {
    let limit = params.limit(100, 500)?;
    let after = match params.get("after") {
        None => 0,
        Some(a) => a
            .parse::<usize>()
            .map_err(|_| ApiError::validation(format!("Invalid paging cursor after={a:?}")))?,
    };
    let archived = params.archived()?;
    let email = params.get("email").map(str::to_ascii_lowercase);
    let body = hs.read(|s| {
        let all: Vec<&super::store::Owner> =
            s.owners.iter().filter(|_| !archived).filter(|o| email.as_ref().is_none_or(|e| o.email.eq_ignore_ascii_case(e))).collect();
        let results: Vec<Value> = all.iter().skip(after).take(limit).map(|o| o.to_json()).collect();
        let mut body = json!({"results": results});
        if after + limit < all.len() {
            body["paging"] = json!({"next": {"after": (after + limit).to_string(), "link": format!("/crm/v3/owners?limit={limit}&after={}", after + limit)}});
        }
        body
    });
    Ok(Json(body).into_response())
}

/// `GET /crm/v3/owners/{ownerId}?idProperty=id|userId`.
pub async fn owner(
    State(hs): State<HubSpot>,
    P(id): P<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let by_user = match params.get("idProperty") {
        None | Some("id") => false,
        Some("userId") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "idProperty must be id or userId, not {other}"
            )));
        }
    };
    let n = id
        .parse::<u64>()
        .map_err(|_| ApiError::not_found(format!("Owner {id} not found")))?;
    hs.read(|s| {
        s.owners
            .iter()
            .find(|o| if by_user { o.user_id == n } else { o.id == n })
            .map(|o| o.to_json())
    })
    .map(|o| Json(o).into_response())
    .ok_or_else(|| ApiError::not_found(format!("Owner {id} not found")))
}
