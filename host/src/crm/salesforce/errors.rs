//! The Salesforce client's errors: a typed enum the sync engine can match on, each carrying
//! the vendor error code and HTTP status where there is one, and mapping to an
//! [`ErrorClass`].
//!
//! This module must never put a token or a credential into an error message.

use serde::Deserialize;

use crate::crm::ErrorClass;
use crate::crm::governor::BudgetExceeded;
use crate::crm::transport::TransportError;

/// One item of a Salesforce REST error body (`[{"message","errorCode","fields"}]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorItem {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// The vendor code, e.g. `INVALID_SESSION_ID`, `REQUIRED_FIELD_MISSING`.
    #[serde(default)]
    pub error_code: String,
    /// Fields involved, when Salesforce names them.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// The class of a Salesforce error code (REST `errorCode`, collections `statusCode`).
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "REQUIRED_FIELD_MISSING"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "FIELD_INTEGRITY_EXCEPTION"
        | "STRING_TOO_LONG"
        | "INVALID_TYPE_ON_FIELD_IN_RECORD"
        | "NUMBER_OUTSIDE_VALID_RANGE"
        | "INVALID_EMAIL_ADDRESS"
        | "MALFORMED_ID"
        | "INVALID_ID_FIELD"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
        | "FIELD_FILTER_VALIDATION_EXCEPTION"
        | "INVALID_FIELD_WHEN_USING_TEMPLATE" => ErrorClass::Validation,
        "DUPLICATE_VALUE" | "DUPLICATES_DETECTED" | "DUPLICATE_EXTERNAL_ID" => {
            ErrorClass::Duplicate
        }
        "INSUFFICIENT_ACCESS"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED"
        | "FUNCTIONALITY_NOT_ENABLED" => ErrorClass::Permission,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" | "BAD_VALUE_FOR_RESTRICTED_PICKLIST" => {
            ErrorClass::PicklistMismatch
        }
        "REQUEST_LIMIT_EXCEEDED" | "TOO_MANY_REQUESTS" => ErrorClass::RateLimit,
        "INVALID_SESSION_ID"
        | "INVALID_AUTH_HEADER"
        | "invalid_grant"
        | "invalid_client"
        | "invalid_client_id"
        | "unauthorized_client"
        | "inactive_user" => ErrorClass::Auth,
        "NOT_FOUND" | "ENTITY_IS_DELETED" | "INVALID_CROSS_REFERENCE_KEY" => ErrorClass::NotFound,
        "SERVER_UNAVAILABLE" | "UNABLE_TO_LOCK_ROW" | "REQUEST_RUNNING_TOO_LONG" => {
            ErrorClass::Transient
        }
        "ALL_OR_NONE_OPERATION_ROLLED_BACK" => ErrorClass::RolledBack,
        "MALFORMED_QUERY"
        | "INVALID_FIELD"
        | "INVALID_TYPE"
        | "JSON_PARSER_ERROR"
        | "INVALID_QUERY_LOCATOR"
        | "EXCEEDED_ID_LIMIT"
        | "INVALID_REPLICATION_DATE"
        | "METHOD_NOT_ALLOWED"
        | "INVALID_INPUT" => ErrorClass::BadRequest,
        _ => ErrorClass::Other,
    }
}

fn class_of_status(status: u16) -> ErrorClass {
    match status {
        401 => ErrorClass::Auth,
        403 => ErrorClass::Permission,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::RateLimit,
        400 | 405 | 415 => ErrorClass::BadRequest,
        s if s >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

/// Everything that can go wrong in a Salesforce call.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// Salesforce answered with an error status and a REST error body.
    #[error("Salesforce {endpoint} answered {status} {}: {}", .errors.first().map(|e| e.error_code.as_str()).unwrap_or("-"), .errors.first().map(|e| e.message.as_str()).unwrap_or(.raw.as_str()))]
    Api {
        /// The endpoint kind (as in the metrics).
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The parsed error items (empty when the body was not the documented array).
        errors: Vec<ApiErrorItem>,
        /// A bounded excerpt of the body when it could not be parsed.
        raw: String,
    },
    /// The OAuth token endpoint refused the credentials.
    #[error("Salesforce OAuth failed ({status} {error}): {description}")]
    OAuth {
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` (e.g. `invalid_grant`).
        error: String,
        /// The `error_description`.
        description: String,
    },
    /// The tenant's API budget does not allow the call.
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
    /// Salesforce kept failing (5xx) or timing out after the allowed retries, or the
    /// connection failed.
    #[error("Salesforce {endpoint} transport failure after {attempts} attempt(s): {source}")]
    Transport {
        /// The endpoint kind.
        endpoint: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        source: reqwest::Error,
    },
    /// A 2xx response whose body was not what the documented wire format says.
    #[error("Salesforce {endpoint} returned an unexpected body: {message} (body: {excerpt})")]
    Decode {
        /// The endpoint kind.
        endpoint: &'static str,
        /// The parse error.
        message: String,
        /// A bounded excerpt of the body.
        excerpt: String,
    },
    /// The caller's input cannot be sent (bad name, too many records, empty id).
    #[error("invalid Salesforce request: {0}")]
    InvalidInput(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] TransportError),
}

impl SalesforceError {
    /// The sync-health class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { status, errors, .. } => errors
                .first()
                .map(|e| classify_code(&e.error_code))
                .filter(|c| *c != ErrorClass::Other)
                .unwrap_or_else(|| class_of_status(*status)),
            Self::OAuth { .. } => ErrorClass::Auth,
            Self::Budget(_) => ErrorClass::RateLimit,
            Self::Transport { .. } => ErrorClass::Transient,
            Self::Decode { .. } => ErrorClass::Other,
            Self::InvalidInput(_) => ErrorClass::BadRequest,
            Self::Setup(_) => ErrorClass::Other,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::OAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The vendor error code (`errorCode`, or the OAuth `error`), when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { errors, .. } => errors.first().map(|e| e.error_code.as_str()),
            Self::OAuth { error, .. } => Some(error.as_str()),
            _ => None,
        }
    }

    /// Whether this is Salesforce's 401 `INVALID_SESSION_ID` (the session expired).
    pub fn is_invalid_session(&self) -> bool {
        matches!(self, Self::Api { status: 401, .. })
            && self.code().is_none_or(|c| c == "INVALID_SESSION_ID")
    }
}

/// Parses a REST error body; an unparsable body gives an empty list.
pub(crate) fn parse_error_body(body: &[u8]) -> Vec<ApiErrorItem> {
    serde_json::from_slice::<Vec<ApiErrorItem>>(body)
        .or_else(|_| serde_json::from_slice::<ApiErrorItem>(body).map(|e| vec![e]))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_error_array() {
        let body = br#"[{"message":"Required fields are missing: [CloseDate]","errorCode":"REQUIRED_FIELD_MISSING","fields":["CloseDate"]}]"#;
        let errors = parse_error_body(body);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_code, "REQUIRED_FIELD_MISSING");
        assert_eq!(errors[0].fields, vec!["CloseDate"]);
        let e = SalesforceError::Api {
            endpoint: "sf.sobject.create",
            status: 400,
            errors,
            raw: String::new(),
        };
        assert_eq!(e.class(), ErrorClass::Validation);
        assert_eq!(e.status(), Some(400));
        assert_eq!(e.code(), Some("REQUIRED_FIELD_MISSING"));
        assert!(e.to_string().contains("REQUIRED_FIELD_MISSING"));
    }

    #[test]
    fn classifies_codes_into_sync_health_classes() {
        assert_eq!(classify_code("DUPLICATE_VALUE"), ErrorClass::Duplicate);
        assert_eq!(
            classify_code("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
            ErrorClass::PicklistMismatch
        );
        assert_eq!(
            classify_code("INSUFFICIENT_ACCESS_OR_READONLY"),
            ErrorClass::Permission
        );
        assert_eq!(
            classify_code("REQUEST_LIMIT_EXCEEDED"),
            ErrorClass::RateLimit
        );
        assert_eq!(classify_code("UNABLE_TO_LOCK_ROW"), ErrorClass::Transient);
        assert_eq!(classify_code("ENTITY_IS_DELETED"), ErrorClass::NotFound);
        assert_eq!(classify_code("MALFORMED_QUERY"), ErrorClass::BadRequest);
        assert_eq!(
            classify_code("ALL_OR_NONE_OPERATION_ROLLED_BACK"),
            ErrorClass::RolledBack
        );
        assert_eq!(classify_code("SOMETHING_NEW"), ErrorClass::Other);
    }

    #[test]
    fn unknown_code_falls_back_to_the_status() {
        let e = SalesforceError::Api {
            endpoint: "sf.query",
            status: 503,
            errors: parse_error_body(b"<html>down</html>"),
            raw: "<html>down</html>".into(),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        assert!(e.to_string().contains("<html>down</html>"));
        let e = SalesforceError::Api {
            endpoint: "sf.query",
            status: 401,
            errors: parse_error_body(
                br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
            ),
            raw: String::new(),
        };
        assert!(e.is_invalid_session());
        assert_eq!(e.class(), ErrorClass::Auth);
    }
}
