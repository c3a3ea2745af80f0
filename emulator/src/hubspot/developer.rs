//! The developer-side routes of the emulated app: the Webhooks v3 API
//! (settings and event subscriptions of [`APP_ID`], authenticated by the
//! developer API key in `?hapikey=`) and the private-app token information
//! route `POST /oauth/v2/private-apps/get/access-token-info`.
//!
//! These routes are counted by the request accounting like every API route
//! (under their own route templates, so set-up calls are told apart from CRM
//! calls) but are not subject to the CRM rate limits. Shapes follow HubSpot's
//! Webhooks v3 OpenAPI document: settings and subscription times are ISO
//! date-times, subscription ids are strings in bodies and integers in paths,
//! a new subscription is inactive unless `active: true` is given.

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use super::schema::iso;
use super::webhooks::{
    APP_ID, DEVELOPER_API_KEY, EventAction, EventType, PORTAL_ID, Settings, Subscription,
    SubscriptionError, Throttling, UI_USER_ID,
};
use super::{Body, HubSpot, P, Params, now_ms};

/// The scopes the private app was granted.
const SCOPES: &[&str] = &[
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.objects.owners.read",
    "crm.schemas.companies.read",
    "crm.schemas.contacts.read",
    "crm.schemas.deals.read",
    "crm.schemas.deals.write",
    "oauth",
];

/// The routes (merged into [`HubSpot::router`] under the accounting layer).
pub fn routes(hs: HubSpot) -> Router {
    let webhooks = Router::new()
        .route(
            "/webhooks/v3/{app_id}/settings",
            get(get_settings).put(put_settings).delete(delete_settings),
        )
        .route(
            "/webhooks/v3/{app_id}/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/webhooks/v3/{app_id}/subscriptions/batch/update",
            post(batch_update),
        )
        .route(
            "/webhooks/v3/{app_id}/subscriptions/{subscription_id}",
            get(get_subscription)
                .patch(patch_subscription)
                .delete(delete_subscription),
        )
        .layer(middleware::from_fn(developer_key));
    Router::new()
        .route(
            "/oauth/v2/private-apps/get/access-token-info",
            post(access_token_info),
        )
        .merge(webhooks)
        .with_state(hs)
}

/// The developer API key check in front of the webhooks routes.
async fn developer_key(params: Params, req: Request, next: Next) -> Response {
    match params.get("hapikey") {
        Some(key) if key == DEVELOPER_API_KEY => next.run(req).await,
        Some(_) => ApiError::Unauthorized(
            "The API key provided is invalid. View or manage your API key here: https://app.hubspot.com/l/api-key/".into(),
        )
        .into_response(),
        None => ApiError::Unauthorized(
            "Any of the listed authentication credentials are missing: developer_hapikey".into(),
        )
        .into_response(),
    }
}

/// Only the emulated app exists.
fn check_app(app_id: &str) -> Result<(), ApiError> {
    if app_id.trim().parse::<u64>().ok() == Some(APP_ID) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "App {app_id} was not found or does not belong to this developer account"
        )))
    }
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "targetUrl": s.target_url,
        "throttling": s.throttling,
        "createdAt": iso(s.created_ms),
        "updatedAt": iso(s.updated_ms),
    })
}

fn subscription_json(s: &Subscription) -> Value {
    let mut v = json!({
        "id": s.id.to_string(),
        "eventType": s.event_type.name(),
        "active": s.active,
        "createdAt": iso(s.created_ms),
        "updatedAt": iso(s.updated_ms),
    });
    if let Some(p) = &s.property_name {
        v["propertyName"] = json!(p);
    }
    v
}

/// `GET /webhooks/v3/{appId}/settings`.
async fn get_settings(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    match hs.webhooks().settings() {
        Some(s) => Ok(Json(settings_json(&s)).into_response()),
        None => Err(ApiError::not_found(format!(
            "No webhook settings exist for app {APP_ID}"
        ))),
    }
}

/// An absolute `http`/`https` URL with a host.
fn check_target_url(url: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        ApiError::validation(format!(
            "targetUrl {url:?} is not a valid absolute URL: {e}"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::validation(format!(
            "targetUrl {url:?} must be an http or https URL with a host"
        )));
    }
    Ok(())
}

fn parse_throttling(v: Option<&Value>) -> Result<Throttling, ApiError> {
    let Some(t) = v.and_then(Value::as_object) else {
        return Err(ApiError::validation(
            "throttling is required: {\"maxConcurrentRequests\": n}",
        ));
    };
    let max = t
        .get("maxConcurrentRequests")
        .and_then(Value::as_u64)
        .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
        .ok_or_else(|| {
            ApiError::validation("throttling.maxConcurrentRequests must be a positive integer")
        })?;
    let period = match t.get("period") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p == "SECONDLY" || p == "ROLLING_MINUTE" => Some(p.clone()),
        Some(_) => {
            return Err(ApiError::validation(
                "throttling.period must be SECONDLY or ROLLING_MINUTE",
            ));
        }
    };
    Ok(Throttling {
        max_concurrent_requests: max as u32,
        period,
    })
}

/// `PUT /webhooks/v3/{appId}/settings` `{"targetUrl", "throttling"}`.
async fn put_settings(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let Some(target_url) = body.get("targetUrl").and_then(Value::as_str) else {
        return Err(ApiError::validation("targetUrl is required"));
    };
    check_target_url(target_url)?;
    let throttling = parse_throttling(body.get("throttling"))?;
    let settings = hs
        .webhooks()
        .put_settings(target_url.to_string(), throttling, now_ms());
    Ok(Json(settings_json(&settings)).into_response())
}

/// `DELETE /webhooks/v3/{appId}/settings`: 204.
async fn delete_settings(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    hs.webhooks().delete_settings();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /webhooks/v3/{appId}/subscriptions`.
async fn list_subscriptions(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let results: Vec<Value> = hs
        .webhooks()
        .subscriptions()
        .iter()
        .map(subscription_json)
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// `POST /webhooks/v3/{appId}/subscriptions` `{"eventType", "propertyName"?, "active"?}`: 201.
async fn create_subscription(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let Some(name) = body.get("eventType").and_then(Value::as_str) else {
        return Err(ApiError::validation("eventType is required"));
    };
    let Some(event_type) = EventType::parse(name) else {
        return Err(ApiError::validation(format!(
            "eventType {name:?} is not supported: expected contact, company or deal with .creation, .deletion, .propertyChange, .associationChange, .restore or .merge"
        )));
    };
    let active = match body.get("active") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "active must be true or false, not {other}"
            )));
        }
    };
    let property_name = match (event_type.action, body.get("propertyName")) {
        (EventAction::PropertyChange, Some(Value::String(p))) if !p.is_empty() => {
            let exists = hs.read(|s| s.table(event_type.object).prop(p).is_some());
            if !exists {
                return Err(ApiError::validation(format!(
                    "Property {p:?} does not exist for object type {}",
                    event_type.object.singular()
                )));
            }
            Some(p.clone())
        }
        (EventAction::PropertyChange, _) => {
            return Err(ApiError::validation(format!(
                "propertyName is required for {}",
                event_type.name()
            )));
        }
        _ => None,
    };
    match hs
        .webhooks()
        .create_subscription(event_type, property_name, active, now_ms())
    {
        Ok(sub) => Ok((StatusCode::CREATED, Json(subscription_json(&sub))).into_response()),
        Err(e @ SubscriptionError::Duplicate(..)) => Err(ApiError::Conflict(e.to_string())),
    }
}

fn subscription_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Subscription {id} was not found for app {APP_ID}"))
}

fn parse_subscription_id(id: &str) -> Result<u64, ApiError> {
    id.trim()
        .parse::<u64>()
        .map_err(|_| subscription_not_found(id))
}

/// `GET /webhooks/v3/{appId}/subscriptions/{subscriptionId}`.
async fn get_subscription(
    State(hs): State<HubSpot>,
    P((app_id, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let n = parse_subscription_id(&id)?;
    hs.webhooks()
        .subscription(n)
        .map(|s| Json(subscription_json(&s)).into_response())
        .ok_or_else(|| subscription_not_found(&id))
}

fn active_field(body: &Value) -> Result<bool, ApiError> {
    body.get("active")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::validation("active (true or false) is required"))
}

/// `PATCH /webhooks/v3/{appId}/subscriptions/{subscriptionId}` `{"active"}`.
async fn patch_subscription(
    State(hs): State<HubSpot>,
    P((app_id, id)): P<(String, String)>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let n = parse_subscription_id(&id)?;
    let active = active_field(&body)?;
    hs.webhooks()
        .set_active(n, active, now_ms())
        .map(|s| Json(subscription_json(&s)).into_response())
        .ok_or_else(|| subscription_not_found(&id))
}

/// `DELETE /webhooks/v3/{appId}/subscriptions/{subscriptionId}`: 204.
async fn delete_subscription(
    State(hs): State<HubSpot>,
    P((app_id, id)): P<(String, String)>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let n = parse_subscription_id(&id)?;
    if hs.webhooks().delete_subscription(n) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(subscription_not_found(&id))
    }
}

/// `POST /webhooks/v3/{appId}/subscriptions/batch/update` `{"inputs": [{"id", "active"}]}`:
/// 200, or 207 with an error per unknown id.
async fn batch_update(
    State(hs): State<HubSpot>,
    P(app_id): P<String>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    check_app(&app_id)?;
    let started = now_ms();
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return Err(ApiError::validation(
            "Invalid input JSON: the body needs an \"inputs\" array",
        ));
    };
    let mut plan = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let id = match input.get("id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| ApiError::validation(format!("inputs[{i}].id must be an integer")))?;
        let active = active_field(input)
            .map_err(|_| ApiError::validation(format!("inputs[{i}].active is required")))?;
        plan.push((id, active));
    }
    let now = now_ms();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for (id, active) in plan {
        match hs.webhooks().set_active(id, active, now) {
            Some(s) => results.push(subscription_json(&s)),
            None => errors.push(json!({
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": format!("Subscription {id} was not found for app {APP_ID}"),
                "context": {"ids": [id.to_string()]},
                "errors": [],
                "links": {},
            })),
        }
    }
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now_ms()),
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        out["numErrors"] = json!(errors.len());
        out["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(out)).into_response())
}

/// `POST /oauth/v2/private-apps/get/access-token-info` `{"tokenKey"}`: the
/// private app's user, hub, app and scopes. Any other token (the UI user's
/// token is not a private-app token) is 401.
async fn access_token_info(
    State(hs): State<HubSpot>,
    Body(body): Body<Value>,
) -> Result<Response, ApiError> {
    let Some(token) = body.get("tokenKey").and_then(Value::as_str) else {
        return Err(ApiError::validation("tokenKey is required"));
    };
    if token.trim() != hs.token() {
        return Err(ApiError::Unauthorized(
            "The access token is not a valid private app access token: it may be invalid, expired or revoked.".into(),
        ));
    }
    Ok(Json(json!({
        "userId": UI_USER_ID,
        "hubId": PORTAL_ID,
        "appId": APP_ID,
        "scopes": SCOPES,
    }))
    .into_response())
}
