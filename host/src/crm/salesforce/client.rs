//! The Salesforce REST client: OAuth sessions, SOQL, changes, sObject CRUD and collections,
//! describe and metadata, with retries, the session refresh and the API budget.
//!
//! One request loop ([`SalesforceClient::execute`]) applies every rule: the budget (first
//! attempts up to the allocation, retries only below 75% of it), one session refresh and
//! retry on 401 `INVALID_SESSION_ID`, waits on 429 (`Retry-After`), jittered exponential
//! backoff on 5xx and timeouts for idempotent requests only, no retry of any other 4xx.
//! It must never log a token, never follow a `nextRecordsUrl` to another host, and never
//! resend a create after the server may have received it.

use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::errors::{SalesforceError, parse_error_body};
use super::types::*;
use crate::crm::governor::{BudgetConfig, CallUse, SalesforceBudget};
use crate::crm::metrics::{CallOutcome, CrmMetrics, MetricsSnapshot};
use crate::crm::transport::{
    RetryPolicy, Secret, TransportOptions, body_excerpt, build_http_client, parse_retry_after,
    transport_outcome, transport_retryable,
};

/// Records per collections call (Salesforce's limit).
pub const COLLECTION_BATCH: usize = 200;

/// How the client logs in (the OAuth grant).
#[derive(Debug, Clone)]
pub enum SalesforceCredentials {
    /// `grant_type=password` (username-password flow of a connected app).
    Password {
        /// The connected app's consumer key.
        client_id: String,
        /// The connected app's consumer secret.
        client_secret: Secret,
        /// The integration user.
        username: String,
        /// The password, with the security token appended where the org needs one.
        password: Secret,
    },
    /// `grant_type=client_credentials` (the connected app's run-as user).
    ClientCredentials {
        /// The consumer key.
        client_id: String,
        /// The consumer secret.
        client_secret: Secret,
    },
    /// `grant_type=refresh_token` (a token from an earlier web/device flow).
    RefreshToken {
        /// The consumer key.
        client_id: String,
        /// The consumer secret, when the app requires it for refreshes.
        client_secret: Option<Secret>,
        /// The refresh token.
        refresh_token: Secret,
    },
}

/// Everything the Salesforce client needs.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Where the token endpoint lives (`https://login.salesforce.com`, a My Domain, or the
    /// emulator's base URL); `/services/oauth2/token` is appended.
    pub login_url: String,
    /// Overrides the `instance_url` of the token response (normally unset).
    pub instance_url: Option<String>,
    /// The REST API version, e.g. `v62.0`.
    pub api_version: String,
    /// The OAuth grant.
    pub credentials: SalesforceCredentials,
    /// HTTP settings (timeouts, extra CA).
    pub transport: TransportOptions,
    /// Retry settings.
    pub retry: RetryPolicy,
    /// The tenant's API budget.
    pub budget: BudgetConfig,
    /// Rows per SOQL page (`Sforce-Query-Options: batchSize=N`, 200–2,000); `None`: 2,000.
    pub query_batch_size: Option<u32>,
}

impl SalesforceConfig {
    /// A configuration with the defaults: API `v62.0`, default transport, retries and an
    /// unlimited budget.
    pub fn new(login_url: impl Into<String>, credentials: SalesforceCredentials) -> Self {
        Self {
            login_url: login_url.into(),
            instance_url: None,
            api_version: "v62.0".into(),
            credentials,
            transport: TransportOptions::default(),
            retry: RetryPolicy::default(),
            budget: BudgetConfig::default(),
            query_batch_size: None,
        }
    }
}

/// A logged-in session.
struct Session {
    access_token: Secret,
    instance_url: Url,
    refresh_token: Option<Secret>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &self.access_token)
            .field("instance_url", &self.instance_url.as_str())
            .field("refresh_token", &self.refresh_token)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: SalesforceConfig,
    session: RwLock<Option<Arc<Session>>>,
    login_lock: tokio::sync::Mutex<()>,
    metrics: CrmMetrics,
    budget: Mutex<SalesforceBudget>,
}

/// A Salesforce REST client for one org. Cheap to clone; clones share the session, the
/// budget and the metrics.
#[derive(Debug, Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

/// Where a request goes.
enum Target {
    /// Path segments after `/services/data/vXX.X/` (each one percent-encoded).
    Data(Vec<String>),
    /// A server-given path on the instance (`nextRecordsUrl`).
    InstancePath(String),
}

/// One request of the loop.
struct Call {
    method: Method,
    endpoint: &'static str,
    target: Target,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    idempotent: bool,
}

impl Call {
    fn new(method: Method, endpoint: &'static str, target: Target) -> Self {
        let idempotent = method != Method::POST;
        Self {
            method,
            endpoint,
            target,
            query: Vec::new(),
            body: None,
            idempotent,
        }
    }

    fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

fn seg(parts: &[&str]) -> Target {
    Target::Data(parts.iter().map(|s| s.to_string()).collect())
}

/// An sObject or field API name: letters, digits and underscores, starting with a letter.
fn check_name(kind: &str, name: &str) -> Result<(), SalesforceError> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SalesforceError::InvalidInput(format!(
            "{kind} {name:?} is not a Salesforce API name"
        )))
    }
}

fn check_id(id: &str) -> Result<(), SalesforceError> {
    if id18(id).is_some() {
        Ok(())
    } else {
        Err(SalesforceError::InvalidInput(format!(
            "{id:?} is not a 15- or 18-character Salesforce id"
        )))
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn decode<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, SalesforceError> {
    serde_json::from_slice(body).map_err(|e| SalesforceError::Decode {
        endpoint,
        message: e.to_string(),
        excerpt: body_excerpt(body),
    })
}

impl SalesforceClient {
    /// Builds a client. No request is made until the first call (which logs in).
    pub fn new(config: SalesforceConfig) -> Result<Self, SalesforceError> {
        if !config.api_version.starts_with('v') || config.api_version[1..].parse::<f64>().is_err() {
            return Err(SalesforceError::InvalidInput(format!(
                "API version {:?} is not of the form v62.0",
                config.api_version
            )));
        }
        Url::parse(&config.login_url).map_err(|e| {
            SalesforceError::InvalidInput(format!("login URL {:?}: {e}", config.login_url))
        })?;
        if let Some(i) = &config.instance_url {
            Url::parse(i)
                .map_err(|e| SalesforceError::InvalidInput(format!("instance URL {i:?}: {e}")))?;
        }
        let http = build_http_client(&config.transport)?;
        let budget = SalesforceBudget::new(config.budget);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                session: RwLock::new(None),
                login_lock: tokio::sync::Mutex::new(()),
                metrics: CrmMetrics::default(),
                budget: Mutex::new(budget),
            }),
        })
    }

    /// This client's call counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The org's API usage from the last `Sforce-Limit-Info` header.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        self.lock_budget().usage()
    }

    /// Whether the budget allows a call of this kind now (the engine asks with
    /// [`CallUse::Retry`] before re-running failed records in the background).
    pub fn budget_check(&self, call_use: CallUse) -> Result<(), SalesforceError> {
        self.lock_budget().check(call_use).map_err(Into::into)
    }

    /// Records the org's usage from a response this client did not send (a plugin's call to
    /// the same org through the runtime's egress), so the budget stays current.
    pub fn observe_api_usage(&self, usage: ApiUsage) {
        self.lock_budget().observe(usage);
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, SalesforceBudget> {
        self.inner.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs in now (otherwise the first call does), so that bad credentials show at once.
    pub async fn connect(&self) -> Result<(), SalesforceError> {
        self.session().await.map(|_| ())
    }

    /// The session's instance URL and access token (logging in first when there is no
    /// session), for the one other sender to this org: a plugin's `crm` call through the
    /// runtime's gateway. After a refresh the next call gives the new token.
    pub async fn session_access(&self) -> Result<(Url, Secret), SalesforceError> {
        let session = self.session().await?;
        Ok((session.instance_url.clone(), session.access_token.clone()))
    }

    fn current_session(&self) -> Option<Arc<Session>> {
        self.inner
            .session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn session(&self) -> Result<Arc<Session>, SalesforceError> {
        if let Some(s) = self.current_session() {
            return Ok(s);
        }
        self.renew(None).await
    }

    /// Gets a new session, unless another task already replaced `stale`.
    async fn renew(&self, stale: Option<&Arc<Session>>) -> Result<Arc<Session>, SalesforceError> {
        let _guard = self.inner.login_lock.lock().await;
        let current = self.current_session();
        match (&current, stale) {
            (Some(cur), Some(old)) if !Arc::ptr_eq(cur, old) => return Ok(cur.clone()),
            (Some(cur), None) => return Ok(cur.clone()),
            _ => {}
        }
        let refresh = current.as_ref().and_then(|s| s.refresh_token.clone());
        let session = Arc::new(self.request_token(refresh).await?);
        *self
            .inner
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        Ok(session)
    }

    /// Calls the token endpoint: a refresh grant when we hold a refresh token, otherwise
    /// the configured grant.
    async fn request_token(&self, refresh: Option<Secret>) -> Result<Session, SalesforceError> {
        let cfg = &self.inner.config;
        let mut form: Vec<(&str, String)> = Vec::new();
        let kept_refresh = match (&cfg.credentials, refresh) {
            (
                SalesforceCredentials::Password {
                    client_id,
                    client_secret,
                    ..
                }
                | SalesforceCredentials::ClientCredentials {
                    client_id,
                    client_secret,
                },
                Some(token),
            ) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", client_secret.expose().into()));
                form.push(("refresh_token", token.expose().into()));
                Some(token)
            }
            (
                SalesforceCredentials::Password {
                    client_id,
                    client_secret,
                    username,
                    password,
                },
                None,
            ) => {
                form.push(("grant_type", "password".into()));
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", client_secret.expose().into()));
                form.push(("username", username.clone()));
                form.push(("password", password.expose().into()));
                None
            }
            (
                SalesforceCredentials::ClientCredentials {
                    client_id,
                    client_secret,
                },
                None,
            ) => {
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", client_secret.expose().into()));
                None
            }
            (
                SalesforceCredentials::RefreshToken {
                    client_id,
                    client_secret,
                    refresh_token,
                },
                held,
            ) => {
                let token = held.unwrap_or_else(|| refresh_token.clone());
                form.push(("grant_type", "refresh_token".into()));
                form.push(("client_id", client_id.clone()));
                if let Some(secret) = client_secret {
                    form.push(("client_secret", secret.expose().into()));
                }
                form.push(("refresh_token", token.expose().into()));
                Some(token)
            }
        };
        let mut url = Url::parse(&cfg.login_url).map_err(|e| {
            SalesforceError::InvalidInput(format!("login URL {:?}: {e}", cfg.login_url))
        })?;
        url.path_segments_mut()
            .map_err(|_| SalesforceError::InvalidInput("login URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["services", "oauth2", "token"]);

        let endpoint = "sf.oauth.token";
        let mut retry = 0u32;
        loop {
            self.inner.metrics.record_token_refresh();
            let sent = self
                .inner
                .http
                .post(url.clone())
                .header("Accept", "application/json")
                .form(&form)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.inner
                        .metrics
                        .record_call(endpoint, transport_outcome(&e));
                    if transport_retryable(&e, true) && retry < cfg.retry.max_transient_retries {
                        self.backoff(retry).await;
                        retry += 1;
                        continue;
                    }
                    return Err(SalesforceError::Transport {
                        endpoint,
                        attempts: retry + 1,
                        source: e,
                    });
                }
            };
            let status = resp.status().as_u16();
            self.inner
                .metrics
                .record_call(endpoint, CallOutcome::Status(status));
            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if (200..300).contains(&status) {
                let tr: TokenResponse = decode(endpoint, &body)?;
                let instance = cfg.instance_url.as_deref().unwrap_or(&tr.instance_url);
                let instance_url = Url::parse(instance).map_err(|e| SalesforceError::Decode {
                    endpoint,
                    message: format!("instance_url {instance:?}: {e}"),
                    excerpt: String::new(),
                })?;
                return Ok(Session {
                    access_token: Secret::new(tr.access_token),
                    instance_url,
                    refresh_token: tr.refresh_token.map(Secret::new).or(kept_refresh),
                });
            }
            if status >= 500 && retry < cfg.retry.max_transient_retries {
                self.backoff(retry).await;
                retry += 1;
                continue;
            }
            let parsed: Option<OAuthErrorBody> = serde_json::from_slice(&body).ok();
            let (error, description) = parsed
                .map(|b| (b.error, b.error_description))
                .unwrap_or_else(|| (String::new(), body_excerpt(&body)));
            return Err(SalesforceError::OAuth {
                status,
                error,
                description,
            });
        }
    }

    async fn backoff(&self, retry: u32) {
        self.inner.metrics.record_retry();
        tokio::time::sleep(self.inner.config.retry.backoff.random_delay(retry)).await;
    }

    fn url_for(&self, session: &Session, target: &Target) -> Result<Url, SalesforceError> {
        let mut url = session.instance_url.clone();
        match target {
            Target::Data(parts) => {
                url.set_query(None);
                let mut segs = url.path_segments_mut().map_err(|_| {
                    SalesforceError::InvalidInput("instance URL cannot be a base".into())
                })?;
                segs.pop_if_empty()
                    .extend(["services", "data", &self.inner.config.api_version])
                    .extend(parts.iter());
            }
            Target::InstancePath(path) => {
                // Only paths on this instance's data API: never another host.
                if !path.starts_with("/services/data/") || path.contains("//") {
                    return Err(SalesforceError::InvalidInput(format!(
                        "refusing to follow {path:?}: not a /services/data/ path"
                    )));
                }
                let (p, q) = path.split_once('?').unwrap_or((path, ""));
                url.set_path(p);
                url.set_query(if q.is_empty() { None } else { Some(q) });
            }
        }
        Ok(url)
    }

    /// The request loop (see the module docs). Returns the status and body of a 2xx.
    async fn execute(&self, call: Call) -> Result<(u16, Vec<u8>), SalesforceError> {
        let policy = &self.inner.config.retry;
        let mut transient_retries = 0u32;
        let mut throttle_retries = 0u32;
        let mut refreshed = false;
        let mut attempts = 0u32;
        loop {
            let call_use = if attempts == 0 {
                CallUse::Normal
            } else {
                CallUse::Retry
            };
            self.lock_budget().check(call_use)?;
            let session = self.session().await?;
            let url = self.url_for(&session, &call.target)?;
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), url)
                .bearer_auth(session.access_token.expose())
                .header("Accept", "application/json");
            if !call.query.is_empty() {
                req = req.query(&call.query);
            }
            if let Some(n) = self.inner.config.query_batch_size
                && matches!(call.endpoint, "sf.query" | "sf.queryAll")
            {
                req = req.header(
                    "Sforce-Query-Options",
                    format!("batchSize={}", n.clamp(200, 2000)),
                );
            }
            if let Some(body) = &call.body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(body.clone());
            }
            attempts += 1;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.inner
                        .metrics
                        .record_call(call.endpoint, transport_outcome(&e));
                    if transport_retryable(&e, call.idempotent)
                        && transient_retries < policy.max_transient_retries
                    {
                        self.backoff(transient_retries).await;
                        transient_retries += 1;
                        continue;
                    }
                    return Err(SalesforceError::Transport {
                        endpoint: call.endpoint,
                        attempts,
                        source: e,
                    });
                }
            };
            let status = resp.status().as_u16();
            self.inner
                .metrics
                .record_call(call.endpoint, CallOutcome::Status(status));
            if let Some(usage) = resp
                .headers()
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_limit_info)
            {
                self.lock_budget().observe(usage);
            }
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = match resp.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    if call.idempotent && transient_retries < policy.max_transient_retries {
                        self.backoff(transient_retries).await;
                        transient_retries += 1;
                        continue;
                    }
                    return Err(SalesforceError::Transport {
                        endpoint: call.endpoint,
                        attempts,
                        source: e,
                    });
                }
            };
            if (200..300).contains(&status) {
                return Ok((status, body));
            }
            let errors = parse_error_body(&body);
            let err = SalesforceError::Api {
                endpoint: call.endpoint,
                status,
                raw: if errors.is_empty() {
                    body_excerpt(&body)
                } else {
                    String::new()
                },
                errors,
            };
            if status == 401 && !refreshed && err.is_invalid_session() {
                refreshed = true;
                self.inner.metrics.record_retry();
                self.renew(Some(&session)).await?;
                continue;
            }
            if status == 429 && throttle_retries < policy.max_throttle_retries {
                let wait =
                    retry_after.unwrap_or_else(|| policy.backoff.random_delay(throttle_retries));
                if wait <= policy.max_throttle_wait {
                    throttle_retries += 1;
                    self.inner.metrics.record_throttle();
                    self.inner.metrics.record_retry();
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            if status >= 500 && call.idempotent && transient_retries < policy.max_transient_retries
            {
                self.backoff(transient_retries).await;
                transient_retries += 1;
                continue;
            }
            return Err(err);
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, SalesforceError> {
        let endpoint = call.endpoint;
        let (_, body) = self.execute(call).await?;
        decode(endpoint, &body)
    }

    // ----- SOQL -----

    /// The first page of a SOQL query (up to 2,000 rows); follow with
    /// [`SalesforceClient::query_more`] while `!done`.
    pub async fn query_page<T: DeserializeOwned>(
        &self,
        soql: &str,
        scope: QueryScope,
    ) -> Result<QueryPage<T>, SalesforceError> {
        if soql.trim().is_empty() {
            return Err(SalesforceError::InvalidInput("empty SOQL query".into()));
        }
        let (endpoint, resource) = match scope {
            QueryScope::Live => ("sf.query", "query"),
            QueryScope::IncludeDeleted => ("sf.queryAll", "queryAll"),
        };
        self.json(Call::new(Method::GET, endpoint, seg(&[resource])).query("q", soql))
            .await
    }

    /// The page at a `nextRecordsUrl`.
    pub async fn query_more<T: DeserializeOwned>(
        &self,
        next_records_url: &str,
    ) -> Result<QueryPage<T>, SalesforceError> {
        let endpoint = if next_records_url.contains("/queryAll/") {
            "sf.queryAll"
        } else {
            "sf.query"
        };
        self.json(Call::new(
            Method::GET,
            endpoint,
            Target::InstancePath(next_records_url.to_string()),
        ))
        .await
    }

    /// Every row of a SOQL query, following `nextRecordsUrl` until `done`.
    pub async fn query_all_as<T: DeserializeOwned>(
        &self,
        soql: &str,
        scope: QueryScope,
    ) -> Result<Vec<T>, SalesforceError> {
        let mut page = self.query_page::<T>(soql, scope).await?;
        let mut rows = std::mem::take(&mut page.records);
        while !page.done {
            let next = page
                .next_records_url
                .take()
                .ok_or_else(|| SalesforceError::Decode {
                    endpoint: "sf.query",
                    message: "page not done but without nextRecordsUrl".into(),
                    excerpt: String::new(),
                })?;
            page = self.query_more::<T>(&next).await?;
            rows.append(&mut page.records);
        }
        Ok(rows)
    }

    /// Every row of a SOQL query as [`SObject`]s.
    pub async fn query(
        &self,
        soql: &str,
        scope: QueryScope,
    ) -> Result<Vec<SObject>, SalesforceError> {
        self.query_all_as(soql, scope).await
    }

    // ----- changes -----

    /// Ids of records of `sobject` changed in `[start, end]` (by `SystemModstamp`).
    pub async fn updated(
        &self,
        sobject: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<UpdatedIds, SalesforceError> {
        check_name("sObject", sobject)?;
        self.json(
            Call::new(
                Method::GET,
                "sf.updated",
                seg(&["sobjects", sobject, "updated"]),
            )
            .query("start", iso(start))
            .query("end", iso(end)),
        )
        .await
    }

    /// Records of `sobject` deleted in `[start, end]`.
    pub async fn deleted(
        &self,
        sobject: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<DeletedRecords, SalesforceError> {
        check_name("sObject", sobject)?;
        self.json(
            Call::new(
                Method::GET,
                "sf.deleted",
                seg(&["sobjects", sobject, "deleted"]),
            )
            .query("start", iso(start))
            .query("end", iso(end)),
        )
        .await
    }

    // ----- single records -----

    /// Creates one record; returns its id. Not retried after it may have reached the
    /// server: prefer [`SalesforceClient::upsert`] on an external id for sync writes.
    pub async fn create(&self, sobject: &str, fields: &Fields) -> Result<String, SalesforceError> {
        check_name("sObject", sobject)?;
        let r: SaveResult = self
            .json(
                Call::new(
                    Method::POST,
                    "sf.sobject.create",
                    seg(&["sobjects", sobject]),
                )
                .json(&Value::Object(fields.clone())),
            )
            .await?;
        r.id.ok_or_else(|| SalesforceError::Decode {
            endpoint: "sf.sobject.create",
            message: "create answered without an id".into(),
            excerpt: String::new(),
        })
    }

    /// Reads one record (all fields, or only `fields`).
    pub async fn get(
        &self,
        sobject: &str,
        id: &str,
        fields: Option<&[&str]>,
    ) -> Result<SObject, SalesforceError> {
        check_name("sObject", sobject)?;
        check_id(id)?;
        let mut call = Call::new(
            Method::GET,
            "sf.sobject.get",
            seg(&["sobjects", sobject, id]),
        );
        if let Some(fields) = fields {
            for f in fields {
                check_name("field", f)?;
            }
            call = call.query("fields", fields.join(","));
        }
        self.json(call).await
    }

    /// Updates one record's fields.
    pub async fn update(
        &self,
        sobject: &str,
        id: &str,
        fields: &Fields,
    ) -> Result<(), SalesforceError> {
        check_name("sObject", sobject)?;
        check_id(id)?;
        self.execute(
            Call::new(
                Method::PATCH,
                "sf.sobject.update",
                seg(&["sobjects", sobject, id]),
            )
            .json(&Value::Object(fields.clone())),
        )
        .await
        .map(|_| ())
    }

    /// Deletes one record.
    pub async fn delete(&self, sobject: &str, id: &str) -> Result<(), SalesforceError> {
        check_name("sObject", sobject)?;
        check_id(id)?;
        self.execute(Call::new(
            Method::DELETE,
            "sf.sobject.delete",
            seg(&["sobjects", sobject, id]),
        ))
        .await
        .map(|_| ())
    }

    /// Creates or updates the record whose external-id field `ext_field` is `ext_value`.
    /// `Id` and `ext_field` are left out of the body (the URL carries the key).
    pub async fn upsert(
        &self,
        sobject: &str,
        ext_field: &str,
        ext_value: &str,
        fields: &Fields,
    ) -> Result<UpsertOutcome, SalesforceError> {
        check_name("sObject", sobject)?;
        check_name("field", ext_field)?;
        if ext_value.is_empty() {
            return Err(SalesforceError::InvalidInput(
                "empty external id value".into(),
            ));
        }
        let mut body = fields.clone();
        body.remove("Id");
        body.remove(ext_field);
        let (status, bytes) = self
            .execute(
                Call::new(
                    Method::PATCH,
                    "sf.sobject.upsert",
                    seg(&["sobjects", sobject, ext_field, ext_value]),
                )
                .json(&Value::Object(body)),
            )
            .await?;
        let r: SaveResult = decode("sf.sobject.upsert", &bytes)?;
        let id = r.id.ok_or_else(|| SalesforceError::Decode {
            endpoint: "sf.sobject.upsert",
            message: "upsert answered without an id".into(),
            excerpt: body_excerpt(&bytes),
        })?;
        Ok(UpsertOutcome {
            id,
            created: r.created.unwrap_or(status == 201),
        })
    }

    // ----- collections -----

    fn with_type(sobject: &str, fields: &Fields) -> Value {
        let mut rec = serde_json::Map::with_capacity(fields.len() + 1);
        rec.insert("attributes".into(), json!({ "type": sobject }));
        for (k, v) in fields {
            if k != "attributes" {
                rec.insert(k.clone(), v.clone());
            }
        }
        Value::Object(rec)
    }

    fn check_batch(len: usize, all_or_none: bool) -> Result<(), SalesforceError> {
        if all_or_none && len > COLLECTION_BATCH {
            return Err(SalesforceError::InvalidInput(format!(
                "allOrNone over {len} records: one collections call takes at most {COLLECTION_BATCH}, and splitting would break all-or-none"
            )));
        }
        Ok(())
    }

    async fn collection_save(
        &self,
        method: Method,
        endpoint: &'static str,
        target: Vec<String>,
        records: Vec<Value>,
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        let idempotent = method != Method::POST;
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(COLLECTION_BATCH) {
            let body = json!({ "allOrNone": all_or_none, "records": chunk });
            let results: Vec<SaveResult> = self
                .json(
                    Call::new(method.clone(), endpoint, Target::Data(target.clone()))
                        .json(&body)
                        .idempotent(idempotent),
                )
                .await?;
            if results.len() != chunk.len() {
                return Err(SalesforceError::Decode {
                    endpoint,
                    message: format!("{} results for {} records", results.len(), chunk.len()),
                    excerpt: String::new(),
                });
            }
            out.extend(results);
        }
        Ok(out)
    }

    /// Creates records (collections, 200 a call), one [`SaveResult`] per record in order.
    pub async fn create_many(
        &self,
        sobject: &str,
        records: &[Fields],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        check_name("sObject", sobject)?;
        Self::check_batch(records.len(), all_or_none)?;
        let recs = records
            .iter()
            .map(|r| Self::with_type(sobject, r))
            .collect();
        self.collection_save(
            Method::POST,
            "sf.collections.create",
            vec!["composite".into(), "sobjects".into()],
            recs,
            all_or_none,
        )
        .await
    }

    /// Updates records by id (collections, 200 a call), one result per record in order.
    pub async fn update_many(
        &self,
        sobject: &str,
        records: &[(String, Fields)],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        check_name("sObject", sobject)?;
        Self::check_batch(records.len(), all_or_none)?;
        let mut recs = Vec::with_capacity(records.len());
        for (id, fields) in records {
            check_id(id)?;
            let mut rec = Self::with_type(sobject, fields);
            if let Value::Object(m) = &mut rec {
                m.remove("Id");
                m.insert("id".into(), Value::String(id.clone()));
            }
            recs.push(rec);
        }
        self.collection_save(
            Method::PATCH,
            "sf.collections.update",
            vec!["composite".into(), "sobjects".into()],
            recs,
            all_or_none,
        )
        .await
    }

    /// Upserts records on the external-id field `ext_field` (each record must carry it),
    /// 200 a call; one result per record in order, with `created`.
    pub async fn upsert_many(
        &self,
        sobject: &str,
        ext_field: &str,
        records: &[Fields],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        check_name("sObject", sobject)?;
        check_name("field", ext_field)?;
        Self::check_batch(records.len(), all_or_none)?;
        let mut recs = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match r.get(ext_field) {
                Some(v) if !v.is_null() && v.as_str() != Some("") => {}
                _ => {
                    return Err(SalesforceError::InvalidInput(format!(
                        "record {i} has no value for the external id field {ext_field}"
                    )));
                }
            }
            let mut rec = Self::with_type(sobject, r);
            if let Value::Object(m) = &mut rec {
                m.remove("Id");
            }
            recs.push(rec);
        }
        self.collection_save(
            Method::PATCH,
            "sf.collections.upsert",
            vec![
                "composite".into(),
                "sobjects".into(),
                sobject.into(),
                ext_field.into(),
            ],
            recs,
            all_or_none,
        )
        .await
    }

    /// Deletes records by id (200 a call), one result per id in order.
    pub async fn delete_many(
        &self,
        ids: &[String],
        all_or_none: bool,
    ) -> Result<Vec<SaveResult>, SalesforceError> {
        Self::check_batch(ids.len(), all_or_none)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(COLLECTION_BATCH) {
            for id in chunk {
                check_id(id)?;
            }
            let results: Vec<SaveResult> = self
                .json(
                    Call::new(
                        Method::DELETE,
                        "sf.collections.delete",
                        seg(&["composite", "sobjects"]),
                    )
                    .query("ids", chunk.join(","))
                    .query("allOrNone", all_or_none.to_string()),
                )
                .await?;
            if results.len() != chunk.len() {
                return Err(SalesforceError::Decode {
                    endpoint: "sf.collections.delete",
                    message: format!("{} results for {} ids", results.len(), chunk.len()),
                    excerpt: String::new(),
                });
            }
            out.extend(results);
        }
        Ok(out)
    }

    /// Reads records by id (200 ids a call to keep URLs short); `None` where a record does
    /// not exist. `fields` must name at least one field.
    pub async fn retrieve_many(
        &self,
        sobject: &str,
        ids: &[String],
        fields: &[&str],
    ) -> Result<Vec<Option<SObject>>, SalesforceError> {
        check_name("sObject", sobject)?;
        if fields.is_empty() {
            return Err(SalesforceError::InvalidInput(
                "retrieve needs at least one field".into(),
            ));
        }
        for f in fields {
            check_name("field", f)?;
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(COLLECTION_BATCH) {
            for id in chunk {
                check_id(id)?;
            }
            let rows: Vec<Option<SObject>> = self
                .json(
                    Call::new(
                        Method::GET,
                        "sf.collections.retrieve",
                        seg(&["composite", "sobjects", sobject]),
                    )
                    .query("ids", chunk.join(","))
                    .query("fields", fields.join(",")),
                )
                .await?;
            if rows.len() != chunk.len() {
                return Err(SalesforceError::Decode {
                    endpoint: "sf.collections.retrieve",
                    message: format!("{} rows for {} ids", rows.len(), chunk.len()),
                    excerpt: String::new(),
                });
            }
            out.extend(rows);
        }
        Ok(out)
    }

    // ----- metadata -----

    /// Describes an sObject (fields, types, picklist values).
    pub async fn describe(&self, sobject: &str) -> Result<SObjectDescribe, SalesforceError> {
        check_name("sObject", sobject)?;
        self.json(Call::new(
            Method::GET,
            "sf.describe",
            seg(&["sobjects", sobject, "describe"]),
        ))
        .await
    }

    /// The record types of an sObject.
    pub async fn record_types(&self, sobject: &str) -> Result<Vec<RecordType>, SalesforceError> {
        check_name("sObject", sobject)?;
        let soql = format!(
            "SELECT Id, Name, DeveloperName, IsActive FROM RecordType WHERE SobjectType = {}",
            soql_quote(sobject)
        );
        self.query_all_as(&soql, QueryScope::Live).await
    }

    /// The opportunity stages, in picklist order.
    pub async fn opportunity_stages(&self) -> Result<Vec<OpportunityStage>, SalesforceError> {
        self.query_all_as(
            "SELECT MasterLabel, IsClosed, IsWon, DefaultProbability, SortOrder, IsActive FROM OpportunityStage ORDER BY SortOrder",
            QueryScope::Live,
        )
        .await
    }

    /// The users (for matching owners by email).
    pub async fn users(&self) -> Result<Vec<User>, SalesforceError> {
        self.query_all_as(
            "SELECT Id, Email, Name, IsActive FROM User",
            QueryScope::Live,
        )
        .await
    }

    /// The org's limits (daily API allowance).
    pub async fn limits(&self) -> Result<OrgLimits, SalesforceError> {
        self.json(Call::new(Method::GET, "sf.limits", seg(&["limits"])))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SalesforceClient {
        SalesforceClient::new(SalesforceConfig::new(
            "https://login.example.test",
            SalesforceCredentials::ClientCredentials {
                client_id: "cid".into(),
                client_secret: Secret::new("very-secret"),
            },
        ))
        .unwrap()
    }

    #[test]
    fn names_and_ids_are_checked_before_any_request() {
        assert!(check_name("sObject", "Opportunity").is_ok());
        assert!(check_name("field", "Ext_Id__c").is_ok());
        assert!(check_name("sObject", "Opportunity/../x").is_err());
        assert!(check_name("sObject", "").is_err());
        assert!(check_id("006000000000001AAA").is_ok());
        assert!(check_id("../../etc").is_err());
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let mut cfg = SalesforceConfig::new(
            "not a url",
            SalesforceCredentials::ClientCredentials {
                client_id: "c".into(),
                client_secret: Secret::new("s"),
            },
        );
        assert!(matches!(
            SalesforceClient::new(cfg.clone()),
            Err(SalesforceError::InvalidInput(_))
        ));
        cfg.login_url = "https://login.example.test".into();
        cfg.api_version = "62".into();
        assert!(matches!(
            SalesforceClient::new(cfg),
            Err(SalesforceError::InvalidInput(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = client();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        let session = Session {
            access_token: Secret::new("00Dtoken"),
            instance_url: Url::parse("https://x.test").unwrap(),
            refresh_token: Some(Secret::new("5Aep-refresh")),
        };
        let dbg = format!("{session:?}");
        assert!(
            !dbg.contains("00Dtoken") && !dbg.contains("5Aep-refresh"),
            "{dbg}"
        );
    }

    #[test]
    fn urls_are_built_under_the_api_version_and_never_leave_the_instance() {
        let c = client();
        let session = Session {
            access_token: Secret::new("t"),
            instance_url: Url::parse("https://na1.example.test").unwrap(),
            refresh_token: None,
        };
        let u = c
            .url_for(
                &session,
                &seg(&["sobjects", "Opportunity", "Ext__c", "a/b c"]),
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://na1.example.test/services/data/v62.0/sobjects/Opportunity/Ext__c/a%2Fb%20c"
        );
        let u = c
            .url_for(&session, &seg(&["sobjects", "Opportunity", "updated"]))
            .unwrap();
        assert!(
            u.as_str().ends_with("/v62.0/sobjects/Opportunity/updated"),
            "{u}"
        );
        let u = c
            .url_for(
                &session,
                &Target::InstancePath("/services/data/v62.0/query/01gxx-2000".into()),
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://na1.example.test/services/data/v62.0/query/01gxx-2000"
        );
        assert!(
            c.url_for(
                &session,
                &Target::InstancePath("https://evil.test/x".into())
            )
            .is_err()
        );
        assert!(
            c.url_for(
                &session,
                &Target::InstancePath("/services/data//evil.test".into())
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn all_or_none_over_200_is_refused_without_a_call() {
        let c = client();
        let records = vec![Fields::new(); 201];
        let err = c
            .create_many("Opportunity", &records, true)
            .await
            .unwrap_err();
        assert!(matches!(err, SalesforceError::InvalidInput(_)), "{err}");
        let err = c
            .upsert_many("Opportunity", "Ext__c", &[Fields::new()], false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Ext__c"), "{err}");
        assert_eq!(c.metrics().total_calls(), 0);
    }
}
