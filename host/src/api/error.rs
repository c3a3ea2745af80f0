//! The API's one error type, [`ApiError`], and the one place that maps each variant to
//! an HTTP status and the JSON body `{"error": {"code": "...", "message": "..."}}`.
//!
//! Also the request extractors whose rejections must come out in that shape instead of
//! axum's plain-text 400/413/415/422: [`ApiJson`] (content type, size, syntax, data),
//! [`ApiPath`] and [`ApiQuery`], plus the JSON fallbacks for unknown routes and methods.
//!
//! What this module must never do: put an internal detail (a database message, a file
//! path, a ciphertext, a token or its hash) into a response body. Internal errors are
//! logged here, with their detail, and answered with a generic message.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Everything a request can fail with. See [`ApiError::status_and_code`] for the mapping.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax error, truncated, empty).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A path parameter, query string or header that cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input that the API refuses (the message names the field).
    #[error("{0}")]
    InvalidInput(String),
    /// An uploaded component that does not fit the contract (the message says why).
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// The request's content type is not the one the route takes.
    #[error("unsupported content type: this route takes {expected}")]
    UnsupportedMediaType {
        /// What the route takes.
        expected: &'static str,
    },
    /// The `Accept` header names no type the route can answer with.
    #[error("not acceptable: this route answers with {offered}")]
    NotAcceptable {
        /// What the route can answer with.
        offered: &'static str,
    },
    /// The body is larger than the route accepts.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials that may not do this (another tenant, the wrong kind of token).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The tenant is disabled: its tokens are refused.
    #[error("tenant `{0}` is disabled")]
    TenantDisabled(String),
    /// A resource the caller named does not exist (for this tenant).
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of resource.
        what: &'static str,
        /// The id given.
        id: String,
    },
    /// No route has this path.
    #[error("no route for this path")]
    RouteNotFound,
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A resource with this key exists already.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// What kind of resource.
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// The request conflicts with the resource's state (a stable `code` says which way).
    #[error("{message}")]
    Conflict {
        /// A stable, machine-readable code (`tests_failed`, `nothing_to_roll_back`, ...).
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The service cannot serve now (shutting down, store unreachable).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A fault of the service. The detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `code` is stable and machine-readable; `message` is for people.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// E.g. `not_found`, `invalid_json`, `tests_failed`.
    pub code: String,
    /// What went wrong, without internals.
    pub message: String,
}

impl ApiError {
    /// The one mapping of variants to a status and a stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidInput(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::InvalidComponent(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component")
            }
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotAcceptable { .. } => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TenantDisabled(_) => (StatusCode::FORBIDDEN, "tenant_disabled"),
            ApiError::NotFound { .. } | ApiError::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The message a client sees.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the service logged the details".to_string(),
            other => other.to_string(),
        }
    }

    /// The body a client sees.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.status_and_code().1.to_string(),
                message: self.public_message(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(code, detail = %detail, "internal error");
        } else {
            tracing::debug!(code, status = status.as_u16(), message = %self, "request refused");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput(m) => ApiError::InvalidInput(m),
            StoreError::NotFound { what, id, .. } => ApiError::NotFound { what, id },
            StoreError::AlreadyExists { what, id } => ApiError::AlreadyExists { what, id },
            StoreError::TenantDisabled(t) => ApiError::TenantDisabled(t.to_string()),
            StoreError::NothingToRollBack(_) => ApiError::Conflict {
                code: "nothing_to_roll_back",
                message: "there is no earlier activation to roll back to".into(),
            },
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The limit is not in the rejection; the caller that knows it says it.
            ApiError::PayloadTooLarge { limit: 0 }
        } else {
            ApiError::BadRequest("the request body could not be read".into())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                ApiError::BadRequest(format!("invalid path parameter: {}", e.body_text()))
            }
            other => ApiError::Internal(format!("path extraction: {}", other.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

/// The content type of a request without parameters, lowercased; `None` if absent.
pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// A JSON request body: `application/json` (or `+json`) required, the router's body
/// limit applied, syntax errors 400 `invalid_json`, data errors 422 `invalid_input`
/// naming the JSON path.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = content_type(req.headers())
            .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        let limit = body_limit(&req);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| match ApiError::from(r) {
                ApiError::PayloadTooLarge { .. } => ApiError::PayloadTooLarge { limit },
                other => other,
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The JSON body limit in force for this request (set by the router).
fn body_limit(req: &Request) -> usize {
    req.extensions().get::<JsonLimit>().map_or(2 << 20, |l| l.0)
}

/// The router's JSON body limit, put in the request extensions so that the
/// rejection can name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonLimit(pub usize);

/// Parses JSON with the path of the first problem in the message: text that is not
/// JSON is 400 `invalid_json`; JSON of the wrong shape is 422 `invalid_input`. Two steps
/// (text to a value, value to `T`) because with `arbitrary_precision` a wrongly typed
/// number reads as a syntax error in one step.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::InvalidInput(inner.to_string())
        } else {
            ApiError::InvalidInput(format!("at `{path}`: {inner}"))
        }
    })
}

/// Path parameters with a JSON 400 on failure.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string with a JSON 400 on failure.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The fallback for paths no route has.
pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// The fallback for a known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_a_4xx_or_named_5xx_and_hides_internals() {
        let cases = [
            (ApiError::MalformedJson("x".into()), 400, "invalid_json"),
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::InvalidInput("x".into()), 422, "invalid_input"),
            (
                ApiError::InvalidComponent("x".into()),
                422,
                "invalid_component",
            ),
            (
                ApiError::UnsupportedMediaType { expected: "a/b" },
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::NotAcceptable { offered: "a/b" },
                406,
                "not_acceptable",
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (ApiError::Unauthorized("x"), 401, "unauthorized"),
            (ApiError::Forbidden("x"), 403, "forbidden"),
            (ApiError::TenantDisabled("t".into()), 403, "tenant_disabled"),
            (
                ApiError::NotFound {
                    what: "thing",
                    id: "1".into(),
                },
                404,
                "not_found",
            ),
            (ApiError::RouteNotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ApiError::AlreadyExists {
                    what: "thing",
                    id: "1".into(),
                },
                409,
                "already_exists",
            ),
            (
                ApiError::Conflict {
                    code: "tests_failed",
                    message: "m".into(),
                },
                409,
                "tests_failed",
            ),
            (ApiError::Unavailable("x"), 503, "unavailable"),
            (ApiError::Internal("secret detail".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let (s, c) = err.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{err:?}");
            let body = err.body();
            assert_eq!(body.error.code, code);
        }
        let hidden = ApiError::Internal("database error: password=hunter2".into());
        assert!(!hidden.public_message().contains("hunter2"));
    }

    #[test]
    fn store_errors_map_to_client_errors_or_hidden_internals() {
        let e: ApiError = StoreError::InvalidInput("bad".into()).into();
        assert!(matches!(e, ApiError::InvalidInput(_)));
        let e: ApiError = StoreError::AlreadyExists {
            what: "tenant",
            id: "a".into(),
        }
        .into();
        assert_eq!(e.status_and_code().0, StatusCode::CONFLICT);
        let e: ApiError = StoreError::Corrupt {
            what: "side",
            value: "x".into(),
        }
        .into();
        assert_eq!(e.status_and_code().0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.public_message().contains("side"));
    }

    #[test]
    fn json_errors_separate_syntax_from_data() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        assert!(matches!(
            parse_json::<T>(b"{\"a\":"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<T>(b""),
            Err(ApiError::MalformedJson(_))
        ));
        match parse_json::<T>(b"{\"a\": \"x\"}") {
            Err(ApiError::InvalidInput(m)) => assert!(m.contains("`a`"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_json::<T>(b"{\"a\": 3}").unwrap().a, 3);
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            s: String,
        }
        match parse_json::<S>(b"{\"s\": 5}") {
            Err(ApiError::InvalidInput(m)) => assert!(m.contains("`s`"), "{m}"),
            other => panic!("a number where a string belongs is a data error: {other:?}"),
        }
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert_eq!(content_type(&h), None);
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(content_type(&h).as_deref(), Some("application/json"));
    }
}
