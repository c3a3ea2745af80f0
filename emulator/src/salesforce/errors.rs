//! Salesforce REST error shapes.
//!
//! Every REST error is a JSON array `[{"message","errorCode","fields"?}]`;
//! per-record errors inside collection results use `statusCode` instead of
//! `errorCode`. OAuth errors use `{"error","error_description"}`. Nothing in
//! the emulator may answer an error in any other shape.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// One Salesforce error.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn with_fields(mut self, fields: Vec<String>) -> Self {
        self.fields = fields;
        self
    }
    pub fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }
    pub fn session() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }
    pub fn json_parse(detail: impl std::fmt::Display) -> Self {
        ApiError::bad(
            "JSON_PARSER_ERROR",
            format!("Unexpected character or value in the request body: {detail}"),
        )
    }
    /// The per-record shape used in collection and SaveResult errors.
    pub fn record_error(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
    /// The top-level REST shape.
    pub fn body(&self) -> Value {
        if self.fields.is_empty() {
            json!([{"message": self.message, "errorCode": self.code}])
        } else {
            json!([{"message": self.message, "errorCode": self.code, "fields": self.fields}])
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The error body for an injected fault of `status` (used by the fault layer).
pub fn injected_error(status: StatusCode) -> Response {
    let (code, message) = match status.as_u16() {
        400 => ("MALFORMED_QUERY", "Injected fault: malformed request"),
        401 => ("INVALID_SESSION_ID", "Session expired or invalid"),
        403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        404 => ("NOT_FOUND", "The requested resource does not exist"),
        409 => (
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record or 1 records",
        ),
        500 => (
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-123456789)",
        ),
        502..=504 => (
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable. Please try again later.",
        ),
        _ => ("UNKNOWN_EXCEPTION", "An unexpected error occurred."),
    };
    ApiError::new(status, code, message).into_response()
}

/// An OAuth token endpoint error.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = ApiError::bad("INVALID_FIELD", "No such column").with_fields(vec!["Foo".into()]);
        assert_eq!(
            e.body(),
            json!([{"message": "No such column", "errorCode": "INVALID_FIELD", "fields": ["Foo"]}])
        );
        assert_eq!(
            e.record_error(),
            json!({"statusCode": "INVALID_FIELD", "message": "No such column", "fields": ["Foo"]})
        );
        assert_eq!(
            ApiError::session().body()[0]["errorCode"],
            "INVALID_SESSION_ID"
        );
    }
}
