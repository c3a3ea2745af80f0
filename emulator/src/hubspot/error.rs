//! HubSpot's error envelope: every failure of the emulated API leaves through
//! [`ApiError`], whose response is
//! `{"status":"error","message","correlationId","category",...}` with the
//! status HubSpot uses. It must never produce a non-JSON body or a 500 for a
//! client's mistake.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::schema::PropError;

static CORRELATION: AtomicU64 = AtomicU64::new(1);

/// A fresh correlation id in UUID text form (unique per process, cheap).
pub fn correlation_id() -> String {
    let n = CORRELATION.fetch_add(1, Ordering::Relaxed);
    let hi = 0x6862_7370_u64; // "hbsp"
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        hi,
        (n >> 48) & 0xffff,
        (n >> 36) & 0xfff,
        (n >> 24) & 0xfff,
        n & 0xff_ffff_ffff
    )
}

/// An error of the emulated HubSpot API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `VALIDATION_ERROR`.
    #[error("{message}")]
    Validation {
        message: String,
        errors: Vec<Value>,
        context: Option<Value>,
    },
    /// 401 `INVALID_AUTHENTICATION`.
    #[error("{0}")]
    Unauthorized(String),
    /// 404 `OBJECT_NOT_FOUND`.
    #[error("{message}")]
    NotFound {
        message: String,
        context: Option<Value>,
    },
    /// 405 for a known path with the wrong method.
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// 409 `CONFLICT`.
    #[error("{0}")]
    Conflict(String),
    /// 429 in HubSpot's rate-limit shape.
    #[error("{message}")]
    RateLimited {
        message: String,
        policy: &'static str,
    },
    /// Any status injected by a fault profile.
    #[error("injected {0}")]
    Injected(StatusCode),
}

impl ApiError {
    /// A plain 400 `VALIDATION_ERROR`.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            message: message.into(),
            errors: Vec::new(),
            context: None,
        }
    }

    /// 400 for property values that failed, in HubSpot's
    /// `Property values were not valid: [...]` form.
    pub fn properties(errors: &[PropError]) -> ApiError {
        let inner: Vec<Value> = errors.iter().map(PropError::to_json).collect();
        let message = format!("Property values were not valid: {}", Value::Array(inner));
        let details = errors
            .iter()
            .map(|e| json!({"message": e.message, "code": e.code, "context": {"propertyName": [e.name]}}))
            .collect();
        ApiError::Validation {
            message,
            errors: details,
            context: None,
        }
    }

    /// 404 for a missing object id.
    pub fn object_not_found(id: &str) -> ApiError {
        ApiError::NotFound {
            message: "Object not found.  objectId are usually numeric.".to_string(),
            context: Some(json!({"id": [id]})),
        }
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            message: message.into(),
            context: None,
        }
    }

    /// 400 for a body that is not JSON of the expected shape.
    pub fn bad_json(err: &serde_json::Error) -> ApiError {
        ApiError::validation(format!(
            "Invalid input JSON on line {}, column {}: {err}",
            err.line(),
            err.column()
        ))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Injected(s) => *s,
        }
    }

    /// HubSpot's `category`.
    pub fn category(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } | ApiError::MethodNotAllowed => "VALIDATION_ERROR",
            ApiError::Unauthorized(_) => "INVALID_AUTHENTICATION",
            ApiError::NotFound { .. } => "OBJECT_NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited { .. } => "RATE_LIMITS",
            ApiError::Injected(s) => category_for(*s),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let correlation = correlation_id();
        match self {
            ApiError::RateLimited { message, policy } => json!({
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation,
                "policyName": policy,
                "requestId": correlation_id(),
            }),
            ApiError::Validation {
                message,
                errors,
                context,
            } => {
                let mut body = json!({
                    "status": "error",
                    "message": message,
                    "correlationId": correlation,
                    "category": "VALIDATION_ERROR",
                });
                if !errors.is_empty() {
                    body["errors"] = Value::Array(errors.clone());
                }
                if let Some(c) = context {
                    body["context"] = c.clone();
                }
                body
            }
            ApiError::NotFound { message, context } => {
                let mut body = json!({
                    "status": "error",
                    "message": message,
                    "correlationId": correlation,
                    "category": "OBJECT_NOT_FOUND",
                });
                if let Some(c) = context {
                    body["context"] = c.clone();
                }
                body
            }
            ApiError::Injected(s) if *s == StatusCode::TOO_MANY_REQUESTS => json!({
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": correlation,
                "policyName": "TEN_SECONDLY_ROLLING",
                "requestId": correlation_id(),
            }),
            other => json!({
                "status": "error",
                "message": other.to_string(),
                "correlationId": correlation,
                "category": other.category(),
            }),
        }
    }
}

/// The category HubSpot uses for a status (used for injected faults).
fn category_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "VALIDATION_ERROR",
        401 => "INVALID_AUTHENTICATION",
        403 => "MISSING_SCOPES",
        404 => "OBJECT_NOT_FOUND",
        409 => "CONFLICT",
        429 => "RATE_LIMITS",
        _ => "INTERNAL_ERROR",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Injected(s) if s.is_server_error()) {
            response.headers_mut().insert(
                "x-hubspot-emulator-injected",
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// The error body for statuses injected by a fault profile (see `control::api_layer`).
pub fn injected_error_body(status: StatusCode) -> Response {
    ApiError::Injected(status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_hubspot_fields() {
        let body = ApiError::properties(&[PropError::doesnt_exist("nope")]).body();
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "VALIDATION_ERROR");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with("Property values were not valid: [{"),
            "{msg}"
        );
        assert!(msg.contains("PROPERTY_DOESNT_EXIST"), "{msg}");
        assert_eq!(body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
        assert_eq!(body["correlationId"].as_str().unwrap().len(), 36);
        let rl = ApiError::RateLimited {
            message: "x".into(),
            policy: "DAILY",
        }
        .body();
        assert_eq!(rl["errorType"], "RATE_LIMIT");
        assert_eq!(rl["policyName"], "DAILY");
    }

    #[test]
    fn correlation_ids_differ() {
        assert_ne!(correlation_id(), correlation_id());
    }
}
