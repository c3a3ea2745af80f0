//! A tenant's connections to its Salesforce org and HubSpot portal:
//! `PUT|GET|DELETE /v1/tenants/{tenant}/connections/{crm}`.
//!
//! `PUT` takes the base URL and the credentials (OAuth client id and secret, access and
//! refresh tokens, username and password as the grant needs), seals them with
//! [`super::secrets`] and stores only the ciphertext. `GET` opens it and returns only
//! what is not secret: the base URL, which credentials are set, the key id and the time.
//!
//! What this module must never do: return, log or `Debug`-print a credential (they are
//! [`Credential`]s, whose `Debug` is redacted); store a plaintext; hand a credential to a
//! plugin (plugins reach a CRM only through the runtime's gateway, which adds them).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::TenantScope;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::secrets::{CipherError, ConnectionCipher};
use super::{AppState, PREVIOUS_SECRET_KEYS_ENV, now_ms};
use crate::store::{EncryptedConnection, Side, TenantId};

/// Longest credential accepted, in bytes.
const MAX_CREDENTIAL_BYTES: usize = 8 << 10;

/// A credential: serialised as itself (into the sealed plaintext only), `Debug` redacted.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, format = Password)]
pub struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// The value, for the one place that puts it on the wire to the CRM.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A connection as written (`PUT`). Unknown keys are refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    /// Salesforce: the login URL (`https://login.salesforce.com`, a My Domain);
    /// HubSpot: the API base (`https://api.hubapi.com`). `http` or `https`, no
    /// user info, query or fragment.
    pub base_url: String,
    /// OAuth client id (Salesforce consumer key, HubSpot app client id).
    #[serde(default)]
    pub client_id: Option<Credential>,
    /// OAuth client secret.
    #[serde(default)]
    pub client_secret: Option<Credential>,
    /// An access token (HubSpot private-app token, or a current OAuth access token).
    #[serde(default)]
    pub access_token: Option<Credential>,
    /// An OAuth refresh token.
    #[serde(default)]
    pub refresh_token: Option<Credential>,
    /// Salesforce username (password grant).
    #[serde(default)]
    pub username: Option<Credential>,
    /// Salesforce password plus security token (password grant).
    #[serde(default)]
    pub password: Option<Credential>,
}

impl ConnectionInput {
    fn credentials(&self) -> [(&'static str, Option<&Credential>); 6] {
        [
            ("client_id", self.client_id.as_ref()),
            ("client_secret", self.client_secret.as_ref()),
            ("access_token", self.access_token.as_ref()),
            ("refresh_token", self.refresh_token.as_ref()),
            ("username", self.username.as_ref()),
            ("password", self.password.as_ref()),
        ]
    }

    /// The names of the credentials that are set.
    pub fn credentials_set(&self) -> Vec<String> {
        self.credentials()
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(n, _)| n.to_string())
            .collect()
    }

    fn validate(&self) -> Result<(), ApiError> {
        check_base_url(&self.base_url)?;
        let mut any_secret = false;
        for (name, c) in self.credentials() {
            if let Some(c) = c {
                if c.0.is_empty() || c.0.len() > MAX_CREDENTIAL_BYTES {
                    return Err(ApiError::InvalidInput(format!(
                        "`{name}` must be 1 to {MAX_CREDENTIAL_BYTES} bytes"
                    )));
                }
                if c.0.chars().any(char::is_control) {
                    return Err(ApiError::InvalidInput(format!(
                        "`{name}` must not contain control characters"
                    )));
                }
                any_secret |= name != "client_id" && name != "username";
            }
        }
        if !any_secret {
            return Err(ApiError::InvalidInput(
                "a connection needs at least one of `access_token`, `refresh_token`, `client_secret` or `password`".into(),
            ));
        }
        Ok(())
    }
}

fn check_base_url(text: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::InvalidInput(format!("`base_url` {why}"));
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry user info (put credentials in their fields)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(())
}

/// What the API shows of a connection: nothing secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    /// `salesforce` or `hubspot`.
    pub crm: String,
    /// The base URL.
    pub base_url: String,
    /// Which credentials are set (names only, never values).
    pub credentials_set: Vec<String>,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// When it was written, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put_connection, get_connection, delete_connection))
}

/// The CRM named in a path, or 404.
pub(crate) fn crm_param(s: &str) -> Result<Side, ApiError> {
    s.parse::<Side>().map_err(|_| ApiError::NotFound {
        what: "CRM (expected `salesforce` or `hubspot`)",
        id: s.chars().take(64).collect(),
    })
}

/// A sealing or opening failure as the API answers it: a connection sealed with a key
/// this server does not hold, or one that does not authenticate, is a conflict the
/// tenant can resolve by putting the connection again (and the operator by configuring
/// the key); the message names key ids only, never a key or a credential.
fn cipher_error(e: CipherError) -> ApiError {
    match e {
        CipherError::WrongKey { .. } => ApiError::Conflict {
            code: "connection_key_unavailable",
            message: format!(
                "{e}; put the connection again, or ask the operator to add its key to {PREVIOUS_SECRET_KEYS_ENV}"
            ),
        },
        CipherError::Tampered => ApiError::Conflict {
            code: "connection_unreadable",
            message: format!("{e}; put the connection again"),
        },
        CipherError::Random => ApiError::Internal(format!("connection cipher: {e}")),
    }
}

/// Seals a connection for `tenant` and `crm` with the current key, stamped `now`.
pub(crate) fn seal_connection(
    cipher: &ConnectionCipher,
    tenant: &TenantId,
    crm: Side,
    plaintext: &[u8],
    updated_at_ms: i64,
) -> Result<EncryptedConnection, CipherError> {
    Ok(EncryptedConnection {
        key_id: cipher.key_id().to_string(),
        ciphertext: cipher.seal(tenant, crm, plaintext)?,
        updated_at_ms,
    })
}

/// Opens a tenant's stored connection (for the service's own use: the sync engine's
/// clients). `None` if there is none.
pub async fn open_connection(
    state: &AppState,
    tenant: &TenantId,
    crm: Side,
) -> Result<Option<(ConnectionInput, EncryptedConnection)>, ApiError> {
    let shared = state.shared();
    let Some(sealed) = shared.store.connection(tenant, crm).await? else {
        return Ok(None);
    };
    let plain = shared
        .cipher
        .open(tenant, crm, &sealed.key_id, &sealed.ciphertext)
        .map_err(cipher_error)?;
    // The error's text could quote the plaintext: only its category is kept.
    let input: ConnectionInput = serde_json::from_slice(&plain).map_err(|e| {
        ApiError::Internal(format!(
            "a sealed connection does not decode ({:?} error)",
            e.classify()
        ))
    })?;
    Ok(Some((input, sealed)))
}

fn view(crm: Side, input: &ConnectionInput, sealed: &EncryptedConnection) -> ConnectionView {
    ConnectionView {
        crm: crm.to_string(),
        base_url: input.base_url.clone(),
        credentials_set: input.credentials_set(),
        key_id: sealed.key_id.clone(),
        updated_at_ms: sealed.updated_at_ms,
    }
}

/// Stores (replaces) the connection to one CRM, sealed.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/connections/{crm}", tag = "connections",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("crm" = String, Path, description = "`salesforce` or `hubspot`")),
    request_body = ConnectionInput,
    security(("tenant_token" = [])),
    responses((status = 200, description = "Stored; secrets are not echoed", body = ConnectionView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn put_connection(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<ConnectionInput>,
) -> Result<Json<ConnectionView>, ApiError> {
    let crm = path.1;
    let crm = crm_param(&crm)?;
    input.validate()?;
    let shared = state.shared();
    let plain = serde_json::to_vec(&input)
        .map_err(|e| ApiError::Internal(format!("encoding a connection: {e}")))?;
    let sealed = seal_connection(&shared.cipher, &scope.tenant, crm, &plain, now_ms())
        .map_err(cipher_error)?;
    shared
        .store
        .put_connection(&scope.tenant, crm, &sealed)
        .await?;
    tracing::info!(tenant = %scope.tenant, crm = %crm, credentials = ?input.credentials_set(), "connection stored");
    Ok(Json(view(crm, &input, &sealed)))
}

/// The connection to one CRM, without its secrets.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/connections/{crm}", tag = "connections",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("crm" = String, Path, description = "`salesforce` or `hubspot`")),
    security(("tenant_token" = [])),
    responses((status = 200, body = ConnectionView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Sealed with a key this server does not hold (`connection_key_unavailable`), or unreadable (`connection_unreadable`)", body = ErrorBody)))]
async fn get_connection(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, String)>,
) -> Result<Json<ConnectionView>, ApiError> {
    let crm = path.1;
    let crm = crm_param(&crm)?;
    match open_connection(&state, &scope.tenant, crm).await? {
        Some((input, sealed)) => Ok(Json(view(crm, &input, &sealed))),
        None => Err(ApiError::NotFound {
            what: "connection",
            id: crm.to_string(),
        }),
    }
}

/// Deletes the connection to one CRM.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/connections/{crm}", tag = "connections",
    params(("tenant" = String, Path, description = "The tenant id"),
        ("crm" = String, Path, description = "`salesforce` or `hubspot`")),
    security(("tenant_token" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete_connection(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiPath(path): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let crm = path.1;
    let crm = crm_param(&crm)?;
    if state
        .shared()
        .store
        .delete_connection(&scope.tenant, crm)
        .await?
    {
        tracing::info!(tenant = %scope.tenant, crm = %crm, "connection deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "connection",
            id: crm.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> ConnectionInput {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn debug_never_shows_credentials() {
        let i = input(serde_json::json!({
            "base_url": "https://api.hubapi.com", "access_token": "pat-na1-SECRET"
        }));
        assert!(!format!("{i:?}").contains("SECRET"));
        assert_eq!(i.credentials_set(), ["access_token"]);
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = input(
            serde_json::json!({"base_url": "https://x.example", "client_id": "a", "client_secret": "b"}),
        );
        assert!(ok.validate().is_ok());
        for (json, needle) in [
            (
                serde_json::json!({"base_url": "ftp://x", "access_token": "t"}),
                "http",
            ),
            (
                serde_json::json!({"base_url": "nope", "access_token": "t"}),
                "not a URL",
            ),
            (
                serde_json::json!({"base_url": "https://u:p@x", "access_token": "t"}),
                "user info",
            ),
            (
                serde_json::json!({"base_url": "https://x?a=1", "access_token": "t"}),
                "query",
            ),
            (
                serde_json::json!({"base_url": "https://x", "client_id": "a"}),
                "at least one",
            ),
            (
                serde_json::json!({"base_url": "https://x", "access_token": ""}),
                "access_token",
            ),
            (
                serde_json::json!({"base_url": "https://x", "password": "a\nb"}),
                "control",
            ),
        ] {
            match input(json.clone()).validate() {
                Err(ApiError::InvalidInput(m)) => assert!(m.contains(needle), "{json}: {m}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn crm_param_accepts_the_two_crms_only() {
        assert_eq!(crm_param("salesforce").unwrap(), Side::Salesforce);
        assert_eq!(crm_param("hubspot").unwrap(), Side::HubSpot);
        assert!(matches!(crm_param("zoho"), Err(ApiError::NotFound { .. })));
    }
}
