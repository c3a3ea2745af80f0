//! The HubSpot client's errors: a typed enum the sync engine can match on, carrying HubSpot's
//! `category`, sub-category / codes and the HTTP status, each mapping to an [`ErrorClass`];
//! plus [`BatchError`], the error of one input of a batch call.
//!
//! This module must never put the private-app token into an error message.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::crm::ErrorClass;
use crate::crm::governor::DailyCapReached;
use crate::crm::transport::TransportError;

/// One detail of a HubSpot error (`errors[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// A code, e.g. `INVALID_OPTION`, `REQUIRED`.
    #[serde(default)]
    pub code: Option<String>,
    /// Where: usually the property name.
    #[serde(default, rename = "in")]
    pub location: Option<String>,
    /// A sub-category.
    #[serde(default)]
    pub sub_category: Option<Value>,
    /// More context.
    #[serde(default)]
    pub context: Option<Value>,
}

/// A HubSpot error body (`{"status":"error","message","correlationId","category",...}`),
/// also used for 429 bodies (`errorType`, `policyName`). Every field is optional.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Usually `error`.
    #[serde(default)]
    pub status: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// HubSpot's id for support.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The category: `VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, `CONFLICT`, ...
    #[serde(default)]
    pub category: Option<String>,
    /// A finer category (a string or an object).
    #[serde(default)]
    pub sub_category: Option<Value>,
    /// Details.
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
    /// Context (`ids`, `objectWriteTraceId`, ...: usually lists of strings).
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// On 429: `RATE_LIMIT`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// On 429: `TEN_SECONDLY_ROLLING`, `SECONDLY`, `DAILY`, ...
    #[serde(default)]
    pub policy_name: Option<String>,
}

impl ErrorBody {
    /// The class of this error, given the HTTP status it came with.
    pub fn class(&self, status: u16) -> ErrorClass {
        let picklist = self.errors.iter().any(|e| {
            e.code.as_deref() == Some("INVALID_OPTION")
                || e.message.contains("was not one of the allowed options")
        }) || self.message.contains("INVALID_OPTION")
            || self.message.contains("was not one of the allowed options");
        let sub = self
            .sub_category
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("");
        match self.category.as_deref().unwrap_or("") {
            _ if status == 429 || self.error_type.as_deref() == Some("RATE_LIMIT") => {
                ErrorClass::RateLimit
            }
            "RATE_LIMITS" => ErrorClass::RateLimit,
            "VALIDATION_ERROR" if picklist => ErrorClass::PicklistMismatch,
            "VALIDATION_ERROR" if sub.contains("UNIQUE") || sub.contains("DUPLICATE") => {
                ErrorClass::Duplicate
            }
            "VALIDATION_ERROR" => ErrorClass::Validation,
            "CONFLICT" | "OBJECT_ALREADY_EXISTS" => ErrorClass::Duplicate,
            "OBJECT_NOT_FOUND" => ErrorClass::NotFound,
            "MISSING_SCOPES" | "FORBIDDEN" => ErrorClass::Permission,
            "INVALID_AUTHENTICATION" | "EXPIRED_AUTHENTICATION" => ErrorClass::Auth,
            _ => match status {
                400 | 422 => ErrorClass::Validation,
                401 => ErrorClass::Auth,
                403 => ErrorClass::Permission,
                404 => ErrorClass::NotFound,
                409 => ErrorClass::Duplicate,
                s if s >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Other,
            },
        }
    }

    /// Strings listed under a context key (`ids`, `objectWriteTraceId`), whether HubSpot sent
    /// a list or a single value.
    pub fn context_strings(&self, key: &str) -> Vec<String> {
        match self.context.as_ref().and_then(|c| c.get(key)) {
            Some(Value::Array(items)) => items.iter().filter_map(value_string).collect(),
            Some(v) => value_string(v).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The failure of one input of a batch call.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchError {
    /// The HTTP status of the batch response that reported it (207, or the error status).
    pub status: u16,
    /// HubSpot's error.
    pub body: Box<ErrorBody>,
}

impl BatchError {
    /// The class of this input's failure.
    pub fn class(&self) -> ErrorClass {
        // Inside a 207, judge by the category (the status is the batch's, not the input's).
        let status = if self.status == 207 { 400 } else { self.status };
        match self.body.category.as_deref() {
            Some("OBJECT_NOT_FOUND") => ErrorClass::NotFound,
            _ => self.body.class(status),
        }
    }

    /// HubSpot's category.
    pub fn category(&self) -> Option<&str> {
        self.body.category.as_deref()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.body.message
    }

    pub(crate) fn synthetic(category: &str, message: impl Into<String>) -> Self {
        Self {
            status: 0,
            body: Box::new(ErrorBody {
                category: Some(category.into()),
                message: message.into(),
                ..ErrorBody::default()
            }),
        }
    }
}

/// Everything that can go wrong in a HubSpot call.
#[derive(Debug, thiserror::Error)]
pub enum HubSpotError {
    /// HubSpot answered with an error status.
    #[error("HubSpot {endpoint} answered {status} {}: {}", .body.category.as_deref().unwrap_or("-"), .body.message)]
    Api {
        /// The endpoint kind (as in the metrics).
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The parsed body (empty fields when it was not JSON).
        body: Box<ErrorBody>,
    },
    /// Still throttled (429) after the allowed waits, or told to wait longer than allowed.
    #[error("HubSpot {endpoint} rate limited ({}); retry after {retry_after:?}", .policy.as_deref().unwrap_or("unknown policy"))]
    RateLimited {
        /// The endpoint kind.
        endpoint: &'static str,
        /// HubSpot's `policyName`.
        policy: Option<String>,
        /// How long HubSpot asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The daily cap (ours or HubSpot's) is reached.
    #[error(transparent)]
    DailyCap(#[from] DailyCapReached),
    /// A search would page past the 10,000-result cap (HubSpot answers 400).
    #[error("HubSpot search cannot page past 10,000 results (after = {after})")]
    SearchCap {
        /// The offset asked for.
        after: u64,
    },
    /// The connection failed, or 5xx/timeouts persisted after the allowed retries.
    #[error("HubSpot {endpoint} transport failure after {attempts} attempt(s): {source}")]
    Transport {
        /// The endpoint kind.
        endpoint: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        source: reqwest::Error,
    },
    /// A 2xx body that is not the documented shape.
    #[error("HubSpot {endpoint} returned an unexpected body: {message} (body: {excerpt})")]
    Decode {
        /// The endpoint kind.
        endpoint: &'static str,
        /// The parse error.
        message: String,
        /// A bounded excerpt.
        excerpt: String,
    },
    /// The caller's input cannot be sent.
    #[error("invalid HubSpot request: {0}")]
    InvalidInput(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] TransportError),
}

impl HubSpotError {
    /// The sync-health class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { status, body, .. } => body.class(*status),
            Self::RateLimited { .. } | Self::DailyCap(_) => ErrorClass::RateLimit,
            Self::SearchCap { .. } | Self::InvalidInput(_) => ErrorClass::BadRequest,
            Self::Transport { .. } => ErrorClass::Transient,
            Self::Decode { .. } | Self::Setup(_) => ErrorClass::Other,
        }
    }

    /// The HTTP status, when HubSpot answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// HubSpot's category (or the 429 policy), when there is one.
    pub fn category(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => body.category.as_deref(),
            Self::RateLimited { policy, .. } => policy.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ErrorBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn classifies_documented_bodies() {
        let b = body(
            r#"{"status":"error","message":"Property values were not valid","correlationId":"c1","category":"VALIDATION_ERROR","errors":[{"message":"x was not one of the allowed options","code":"INVALID_OPTION","in":"dealstage"}]}"#,
        );
        assert_eq!(b.class(400), ErrorClass::PicklistMismatch);
        assert_eq!(b.errors[0].location.as_deref(), Some("dealstage"));
        let b = body(r#"{"status":"error","message":"missing","category":"VALIDATION_ERROR"}"#);
        assert_eq!(b.class(400), ErrorClass::Validation);
        let b = body(r#"{"status":"error","message":"nope","category":"OBJECT_NOT_FOUND"}"#);
        assert_eq!(b.class(404), ErrorClass::NotFound);
        let b = body(r#"{"status":"error","message":"exists","category":"CONFLICT"}"#);
        assert_eq!(b.class(409), ErrorClass::Duplicate);
        let b = body(
            r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
        );
        assert_eq!(b.class(429), ErrorClass::RateLimit);
        assert_eq!(b.policy_name.as_deref(), Some("TEN_SECONDLY_ROLLING"));
        let b =
            body(r#"{"status":"error","message":"bad token","category":"INVALID_AUTHENTICATION"}"#);
        assert_eq!(b.class(401), ErrorClass::Auth);
        assert_eq!(ErrorBody::default().class(502), ErrorClass::Transient);
    }

    #[test]
    fn context_strings_accept_lists_and_scalars() {
        let b = body(
            r#"{"status":"error","message":"m","category":"OBJECT_NOT_FOUND","context":{"ids":["1","2"],"objectWriteTraceId":"7","n":[3]}}"#,
        );
        assert_eq!(b.context_strings("ids"), vec!["1", "2"]);
        assert_eq!(b.context_strings("objectWriteTraceId"), vec!["7"]);
        assert_eq!(b.context_strings("n"), vec!["3"]);
        assert!(b.context_strings("missing").is_empty());
    }

    #[test]
    fn errors_expose_status_category_and_class() {
        let e = HubSpotError::Api {
            endpoint: "hs.object.get",
            status: 404,
            body: Box::new(body(
                r#"{"status":"error","message":"gone","category":"OBJECT_NOT_FOUND"}"#,
            )),
        };
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.category(), Some("OBJECT_NOT_FOUND"));
        assert_eq!(e.class(), ErrorClass::NotFound);
        assert!(e.to_string().contains("OBJECT_NOT_FOUND"));
        let e = HubSpotError::SearchCap { after: 10_000 };
        assert_eq!(e.class(), ErrorClass::BadRequest);
    }
}
