//! Salesforce authentication: the OAuth token endpoint (password,
//! client_credentials and refresh_token grants) and token revocation, the
//! identity URL that token responses name,
//! the minimal SOAP `login` and `logout` that simple-salesforce and jsforce
//! call, sessions with expiry, and the daily API request limit.
//!
//! Tokens are random and held in memory only. This module must never accept
//! a request without a live session, and never log credentials.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use http::StatusCode;
use rand::RngExt;
use serde_json::json;
use sha2::Sha256;

use super::errors::oauth_error;
use super::{InstanceUrl, Shared};

/// Default session lifetime (Salesforce's default session timeout is 2 hours).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);

pub struct Session {
    pub user_id: String,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    pub access: HashMap<String, Session>,
    /// refresh token -> user id
    pub refresh: HashMap<String, String>,
}

fn random_token(org_id: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..96)
        .map(|_| {
            let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._"
                [rng.random_range(0..64)];
            c as char
        })
        .collect();
    format!("{}!{tail}", &org_id[..15])
}

impl Shared {
    /// Issues an access token for `user_id`.
    pub fn issue_token(&self, user_id: &str) -> String {
        let token = random_token(&self.org_id);
        let lifetime = self.faults.token_lifetime(DEFAULT_TOKEN_LIFETIME);
        let mut s = self.sessions.lock();
        // Drop expired sessions now and then so the map stays small.
        if s.access.len() > 10_000 {
            let now = Instant::now();
            s.access.retain(|_, v| v.expires > now);
        }
        s.access.insert(
            token.clone(),
            Session {
                user_id: user_id.to_string(),
                expires: Instant::now() + lifetime,
            },
        );
        token
    }

    /// The user of a live session named in `Authorization: Bearer|OAuth <token>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .trim();
        let (scheme, token) = value.split_once(' ')?;
        if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth")) {
            return None;
        }
        let s = self.sessions.lock();
        let session = s.access.get(token.trim())?;
        (session.expires > Instant::now()).then(|| session.user_id.clone())
    }

    fn token_response(&self, instance: &str, user_id: &str, refresh: Option<String>) -> Response {
        let token = self.issue_token(user_id);
        let issued_at = chrono::Utc::now().timestamp_millis().to_string();
        let id = format!("{instance}/id/{}/{user_id}", self.org_id);
        let signature = Hmac::<Sha256>::new_from_slice(self.credentials.client_secret.as_bytes())
            .map(|mut mac| {
                mac.update(format!("{id}{issued_at}").as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            })
            .unwrap_or_default();
        let mut body = json!({
            "access_token": token,
            "instance_url": instance,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        });
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
            body["scope"] = json!("api refresh_token");
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn user_by_username(&self, username: &str) -> Option<String> {
        let org = self.org.read();
        let o = super::schema::obj::USER;
        let def = &org.schema.objects[o];
        let ui = def.field_index("Username")?;
        let active = def.field_index("IsActive")?;
        org.tables[o]
            .rows
            .iter()
            .find(|r| {
                r.vals[ui]
                    .as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(username))
                    && r.vals[active].as_bool()
            })
            .map(|r| r.id().to_string())
    }

    fn password_ok(&self, password: &str) -> bool {
        let c = &self.credentials;
        password == c.password || password == format!("{}{}", c.password, c.security_token)
    }
}

/// The base URL clients reached us on (the listener's), for `instance_url`.
pub fn instance_url(ext: Option<&InstanceUrl>, headers: &HeaderMap) -> String {
    if let Some(InstanceUrl(u)) = ext {
        return u.clone();
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(shared): State<Shared>,
    ext: Option<axum::Extension<InstanceUrl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let instance = instance_url(ext.as_ref().map(|e| &e.0), &headers);
    let params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let creds = &shared.credentials;
    // Client credentials may come in the body or as HTTP Basic auth.
    let (mut client_id, mut client_secret) = (
        params.get("client_id").cloned(),
        params.get("client_secret").cloned(),
    );
    if let Some(basic) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim())
        && let Ok(text) = String::from_utf8(decoded)
        && let Some((id, secret)) = text.split_once(':')
    {
        client_id.get_or_insert(id.to_string());
        client_secret.get_or_insert(secret.to_string());
    }
    let grant = params.get("grant_type").map(String::as_str).unwrap_or("");
    if !matches!(grant, "password" | "client_credentials" | "refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        );
    }
    if client_id.as_deref() != Some(creds.client_id.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "client identifier invalid",
        );
    }
    let secret_ok = client_secret.as_deref() == Some(creds.client_secret.as_str());
    match grant {
        "password" => {
            if !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            let user = params
                .get("username")
                .and_then(|u| shared.user_by_username(u));
            match (user, params.get("password")) {
                (Some(user), Some(p)) if shared.password_ok(p) => {
                    shared.token_response(&instance, &user, None)
                }
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "authentication failure",
                ),
            }
        }
        "client_credentials" => {
            if !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            let user = shared.integration_user_id.clone();
            shared.token_response(&instance, &user, None)
        }
        _ => {
            // refresh_token: the secret is optional (as for connected apps that don't require it),
            // but a wrong one is refused.
            if client_secret.is_some() && !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            let user = params
                .get("refresh_token")
                .and_then(|r| shared.sessions.lock().refresh.get(r).cloned());
            match user {
                Some(user) => shared.token_response(&instance, &user, None),
                None => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "expired access/refresh token",
                ),
            }
        }
    }
}

/// `POST /services/oauth2/revoke` (form `token=...`): an access token ends its
/// session, a refresh token can no longer be exchanged. 200 with an empty body;
/// an unknown token is 400 `invalid_token`.
pub async fn revoke(State(shared): State<Shared>, body: Bytes) -> Response {
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mut sessions = shared.sessions.lock();
    let revoked =
        sessions.access.remove(&token).is_some() || sessions.refresh.remove(&token).is_some();
    drop(sessions);
    if revoked {
        StatusCode::OK.into_response()
    } else {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "Token was invalid",
        )
    }
}

/// The identity service's refusals are plain text, as on the real service.
fn identity_refused(reason: &'static str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        reason,
    )
        .into_response()
}

/// `GET /id/{orgId}/{userId}`: the identity URL that token responses name in
/// `id`, answered in JSON for the session's own org. The API URLs carry the
/// literal `{version}` unless the `version` parameter asks for one (`latest`
/// or e.g. `62.0`).
pub async fn identity(
    State(shared): State<Shared>,
    ext: Option<axum::Extension<InstanceUrl>>,
    headers: HeaderMap,
    axum::extract::Path((org_id, user_id)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if shared.authenticate(&headers).is_none() {
        return identity_refused("Bad_OAuth_Token");
    }
    let same = |a: &str, b: &str| {
        super::ids::normalize(a).is_ok_and(|a| super::ids::normalize(b).is_ok_and(|b| a == b))
    };
    if !same(&org_id, &shared.org_id) {
        return identity_refused("Bad_Id");
    }
    let org = shared.org.read();
    let o = super::schema::obj::USER;
    let Some(row) = org
        .find(o, &user_id)
        .map(|idx| org.render(o, &org.tables[o].rows[idx], None))
    else {
        return identity_refused("Bad_Id");
    };
    drop(org);
    let instance = instance_url(ext.as_ref().map(|e| &e.0), &headers);
    let version = match q.get("version").map(String::as_str) {
        Some("latest") => super::API_VERSION.trim_start_matches('v').to_string(),
        Some(v) => v.trim_start_matches('v').to_string(),
        None => "{version}".to_string(),
    };
    let (org18, user18) = (&shared.org_id, row["Id"].as_str().unwrap_or_default());
    let text = |k: &str| row[k].clone();
    let body = json!({
        "id": format!("{instance}/id/{org18}/{user18}"),
        "asserted_user": true,
        "user_id": user18,
        "organization_id": org18,
        "username": text("Username"),
        "nick_name": text("Alias"),
        "display_name": text("Name"),
        "email": text("Email"),
        "email_verified": true,
        "first_name": text("FirstName"),
        "last_name": text("LastName"),
        "timezone": "GMT",
        "active": text("IsActive"),
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": text("LastModifiedDate"),
        "is_app_installed": true,
        "urls": {
            "enterprise": format!("{instance}/services/Soap/c/{version}/{org18}"),
            "metadata": format!("{instance}/services/Soap/m/{version}/{org18}"),
            "partner": format!("{instance}/services/Soap/u/{version}/{org18}"),
            "rest": format!("{instance}/services/data/v{version}/"),
            "sobjects": format!("{instance}/services/data/v{version}/sobjects/"),
            "search": format!("{instance}/services/data/v{version}/search/"),
            "query": format!("{instance}/services/data/v{version}/query/"),
            "recent": format!("{instance}/services/data/v{version}/recent/"),
            "profile": format!("{instance}/{user18}"),
        },
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The text of the first element whose local name is `name` (any namespace prefix).
fn element_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let tag_name = tag.split_whitespace().next().unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        if local == name && !tag.starts_with('/') && !tag.ends_with('/') {
            let body = &rest[end + 1..];
            let close = body.find("</")?;
            return Some(xml_unescape(&body[..close]));
        }
        rest = &rest[end + 1..];
    }
    None
}

/// A SOAP fault (HTTP 500, as on the real service) whose detail is a `fault_type`
/// (`LoginFault`, `UnexpectedErrorFault`).
fn soap_fault_of(fault_type: &str, code: &str, message: &str) -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{code}: {msg}</faultstring><detail><sf:{fault_type} xsi:type="sf:{fault_type}"><sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>{msg}</sf:exceptionMessage></sf:{fault_type}></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#,
        msg = xml_escape(message)
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(http::header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn soap_fault(code: &str, message: &str) -> Response {
    soap_fault_of("LoginFault", code, message)
}

/// Whether the document has an element whose local name is `name`
/// (self-closing or not, any namespace prefix).
fn has_element(xml: &str, name: &str) -> bool {
    xml.split('<').skip(1).any(|tag| {
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .next()
            .unwrap_or("");
        tag_name.rsplit(':').next() == Some(name)
    })
}

/// The partner API `logout` call: ends the session named in the `SessionHeader`.
fn soap_logout(shared: &Shared, xml: &str) -> Response {
    let ended = element_text(xml, "sessionId")
        .is_some_and(|token| shared.sessions.lock().access.remove(token.trim()).is_some());
    if !ended {
        return soap_fault_of(
            "UnexpectedErrorFault",
            "INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
        );
    }
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com"><soapenv:Body><logoutResponse/></soapenv:Body></soapenv:Envelope>"#,
    )
        .into_response()
}

/// `POST /services/Soap/u/{version}`: the partner API `login` and `logout` calls.
pub async fn soap_login(
    State(shared): State<Shared>,
    ext: Option<axum::Extension<InstanceUrl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let instance = instance_url(ext.as_ref().map(|e| &e.0), &headers);
    let Ok(xml) = std::str::from_utf8(&body) else {
        return soap_fault(
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
        );
    };
    if has_element(xml, "logout") {
        return soap_logout(&shared, xml);
    }
    if element_text(xml, "login").is_none() && !xml.contains("login") {
        return soap_fault(
            "UNKNOWN_EXCEPTION",
            "This emulator only supports the SOAP login and logout calls.",
        );
    }
    let user = element_text(xml, "username").and_then(|u| shared.user_by_username(u.trim()));
    let password_ok = element_text(xml, "password").is_some_and(|p| shared.password_ok(&p));
    let Some(user) = user.filter(|_| password_ok) else {
        return soap_fault(
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
        );
    };
    let session = shared.issue_token(&user);
    let lifetime = shared
        .faults
        .token_lifetime(DEFAULT_TOKEN_LIFETIME)
        .as_secs();
    let version = super::API_VERSION.trim_start_matches('v');
    let server_url = format!("{instance}/services/Soap/u/{version}/{}", shared.org_id);
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result><metadataServerUrl>{instance}/services/Soap/m/{version}/{org}</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox><serverUrl>{server_url}</serverUrl><sessionId>{session}</sessionId><userId>{user}</userId><userInfo><accessibilityMode>false</accessibilityMode><currencySymbol>$</currencySymbol><orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit><orgDefaultCurrencyIsoCode>USD</orgDefaultCurrencyIsoCode><orgDisallowHtmlAttachments>false</orgDisallowHtmlAttachments><orgHasPersonAccounts>false</orgHasPersonAccounts><organizationId>{org}</organizationId><organizationMultiCurrency>{multi}</organizationMultiCurrency><organizationName>dealbridge emulator</organizationName><profileId>00e0A000000AAAAAAA</profileId><roleId xsi:nil="true"/><sessionSecondsValid>{lifetime}</sessionSecondsValid><userDefaultCurrencyIsoCode xsi:nil="true"/><userEmail>{email}</userEmail><userFullName>Integration User</userFullName><userId>{user}</userId><userLanguage>en_US</userLanguage><userLocale>en_US</userLocale><userName>{username}</userName><userTimeZone>UTC</userTimeZone><userType>Standard</userType><userUiSkin>Theme3</userUiSkin></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"#,
        org = shared.org_id,
        multi = shared.multi_currency(),
        email = xml_escape(super::seed::INTEGRATION_EMAIL),
        username = xml_escape(&shared.credentials.username),
    );
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_elements_with_any_prefix() {
        let xml = r#"<env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>a@b.c</n1:username><n1:password>p&amp;w</n1:password></n1:login></env:Body>"#;
        assert_eq!(element_text(xml, "username").as_deref(), Some("a@b.c"));
        assert_eq!(element_text(xml, "password").as_deref(), Some("p&w"));
        assert_eq!(element_text(xml, "nothing"), None);
    }

    #[test]
    fn finds_self_closing_elements_by_local_name() {
        let xml = r#"<se:Body><logout xmlns="urn:partner.soap.sforce.com"/></se:Body>"#;
        assert!(has_element(xml, "logout"));
        assert!(has_element("<n1:logout/>", "logout"));
        assert!(!has_element("<n1:login><logoutx/></n1:login>", "logout"));
        assert!(!has_element("no tags at all", "logout"));
    }
}
