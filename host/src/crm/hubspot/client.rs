//! The HubSpot CRM client: objects, batch calls with per-input outcomes, search and the keyset
//! change scan, associations v4, pipelines, owners and properties, all through one request
//! loop that passes the [`HubSpotGovernor`] and applies the retry rules.
//!
//! The loop: take a governor slot (10-second window, search rate, daily cap); on 429 pause the
//! governor for `Retry-After` (or the policy's window) and retry; on 5xx or a timeout retry
//! with jittered backoff, for idempotent requests only; never retry another 4xx. Every call is
//! counted in the metrics. It must never log the token, never page a search past 10,000
//! results, and never resend a create after HubSpot may have received it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::errors::{BatchError, ErrorBody, HubSpotError};
use super::types::*;
use crate::crm::governor::{HubSpotGovernor, HubSpotLimits, HubSpotRateHeaders, RequestKind};
use crate::crm::metrics::{CallOutcome, CrmMetrics, MetricsSnapshot};
use crate::crm::transport::{
    RetryPolicy, Secret, TransportOptions, body_excerpt, build_http_client, parse_retry_after,
    transport_outcome, transport_retryable,
};

/// Inputs per batch call (HubSpot's documented limit for object batches).
pub const BATCH_LIMIT: usize = 100;
/// Inputs per associations v4 batch call (kept at the object limit; HubSpot allows more on
/// some endpoints, unverified).
pub const ASSOCIATION_BATCH_LIMIT: usize = 100;
/// The most results one search query can page through.
pub const SEARCH_CAP: u64 = 10_000;
/// The largest search page.
pub const SEARCH_PAGE_MAX: u32 = 200;

const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 10;
const MAX_FILTERS: usize = 25;

/// Everything the HubSpot client needs.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// The API base (`https://api.hubapi.com`, or the emulator's base URL).
    pub base_url: String,
    /// The private-app access token.
    pub token: Secret,
    /// HTTP settings (timeouts, extra CA).
    pub transport: TransportOptions,
    /// Retry settings.
    pub retry: RetryPolicy,
    /// Rate limits of the app.
    pub limits: HubSpotLimits,
}

impl HubSpotConfig {
    /// A configuration with default transport, retries and limits (190/10 s, 4 searches/s).
    pub fn new(base_url: impl Into<String>, token: impl Into<Secret>) -> Self {
        Self {
            base_url: base_url.into(),
            token: token.into(),
            transport: TransportOptions::default(),
            retry: RetryPolicy::default(),
            limits: HubSpotLimits::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    config: HubSpotConfig,
    governor: HubSpotGovernor,
    metrics: CrmMetrics,
}

/// A HubSpot client for one portal. Cheap to clone; clones share the governor and metrics.
#[derive(Debug, Clone)]
pub struct HubSpotClient {
    inner: Arc<Inner>,
}

struct Call {
    method: Method,
    endpoint: &'static str,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    idempotent: bool,
    kind: RequestKind,
    /// Sends the client's Bearer token; `false` for the developer API, which is
    /// authenticated by a `hapikey` query parameter instead.
    bearer: bool,
}

impl Call {
    fn new(method: Method, endpoint: &'static str, path: &[&str]) -> Self {
        Self {
            idempotent: method != Method::POST,
            method,
            endpoint,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            kind: RequestKind::Standard,
            bearer: true,
        }
    }
    /// Authenticates with a developer API key (`hapikey`) instead of the Bearer token.
    fn developer_key(mut self, key: &Secret) -> Self {
        self.bearer = false;
        self.query.push(("hapikey", key.expose().to_string()));
        self
    }
    fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }
    fn idempotent(mut self, i: bool) -> Self {
        self.idempotent = i;
        self
    }
    fn search(mut self) -> Self {
        self.kind = RequestKind::Search;
        self
    }
}

/// An object type or other path word: letters, digits, `_` and `-` (e.g. `deals`, `2-123`).
/// Checks a scan request whose filter group keeps `reserved_filters` filters for the scan
/// itself; returns the modification property and the properties to read (the request's,
/// plus the modification property and `hs_object_id`, which the cursor needs).
fn checked_scan(
    request: &ScanRequest,
    reserved_filters: usize,
) -> Result<(&str, Vec<String>), HubSpotError> {
    check_word("object type", &request.object_type)?;
    let modified = request.modified_property();
    check_word("modification property", modified)?;
    if request.page_size == 0 || request.page_size > SEARCH_PAGE_MAX {
        return Err(HubSpotError::InvalidInput(format!(
            "scan page size {} is outside 1..={SEARCH_PAGE_MAX}",
            request.page_size
        )));
    }
    let extra_max = MAX_FILTERS_PER_GROUP - reserved_filters;
    if request.extra_filters.len() > extra_max {
        return Err(HubSpotError::InvalidInput(format!(
            "at most {extra_max} extra scan filters"
        )));
    }
    let mut properties = request.properties.clone();
    for p in [modified, "hs_object_id"] {
        if !properties.iter().any(|x| x == p) {
            properties.push(p.into());
        }
    }
    Ok((modified, properties))
}

fn check_word(kind: &str, s: &str) -> Result<(), HubSpotError> {
    if !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(HubSpotError::InvalidInput(format!(
            "{kind} {s:?} is not a valid HubSpot name"
        )))
    }
}

fn check_id(id: &str) -> Result<(), HubSpotError> {
    if !id.is_empty() && id.len() <= 40 && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(HubSpotError::InvalidInput(format!(
            "{id:?} is not a HubSpot record id"
        )))
    }
}

fn decode<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, HubSpotError> {
    serde_json::from_slice(body).map_err(|e| HubSpotError::Decode {
        endpoint,
        message: e.to_string(),
        excerpt: body_excerpt(body),
    })
}

fn check_search(req: &SearchRequest) -> Result<(), HubSpotError> {
    if let Some(after) = &req.after {
        let n: u64 = after.parse().map_err(|_| {
            HubSpotError::InvalidInput(format!("search cursor {after:?} is not a number"))
        })?;
        if n >= SEARCH_CAP {
            return Err(HubSpotError::SearchCap { after: n });
        }
    }
    if req.limit == 0 || req.limit > SEARCH_PAGE_MAX {
        return Err(HubSpotError::InvalidInput(format!(
            "search limit {} is outside 1..={SEARCH_PAGE_MAX}",
            req.limit
        )));
    }
    if req.filter_groups.len() > MAX_GROUPS {
        return Err(HubSpotError::InvalidInput(format!(
            "{} filter groups (at most {MAX_GROUPS})",
            req.filter_groups.len()
        )));
    }
    let total: usize = req.filter_groups.iter().map(|g| g.filters.len()).sum();
    if req
        .filter_groups
        .iter()
        .any(|g| g.filters.len() > MAX_FILTERS_PER_GROUP)
        || total > MAX_FILTERS
    {
        return Err(HubSpotError::InvalidInput(format!(
            "too many search filters ({total}; at most {MAX_FILTERS_PER_GROUP} a group, {MAX_FILTERS} in all)"
        )));
    }
    Ok(())
}

impl HubSpotClient {
    /// Builds a client (no request is made).
    pub fn new(config: HubSpotConfig) -> Result<Self, HubSpotError> {
        let base = Url::parse(&config.base_url).map_err(|e| {
            HubSpotError::InvalidInput(format!("base URL {:?}: {e}", config.base_url))
        })?;
        if base.cannot_be_a_base() {
            return Err(HubSpotError::InvalidInput(format!(
                "base URL {:?} cannot be a base",
                config.base_url
            )));
        }
        if config.token.expose().is_empty() {
            return Err(HubSpotError::InvalidInput("empty access token".into()));
        }
        let http = build_http_client(&config.transport)?;
        let governor = HubSpotGovernor::new(&config.limits);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                config,
                governor,
                metrics: CrmMetrics::default(),
            }),
        })
    }

    /// This client's call counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Calls counted against today's cap.
    pub fn daily_calls(&self) -> u64 {
        self.inner.governor.daily_used()
    }

    /// The governor every request of this client passes. Plugin egress to the same portal
    /// passes it too, so a plugin's calls count against the app's limits like the sync's.
    pub fn governor(&self) -> &HubSpotGovernor {
        &self.inner.governor
    }

    fn url(&self, path: &[String]) -> Url {
        let mut url = self.inner.base.clone();
        url.set_query(None);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(path.iter());
        }
        url
    }

    async fn backoff(&self, retry: u32) {
        self.inner.metrics.record_retry();
        tokio::time::sleep(self.inner.config.retry.backoff.random_delay(retry)).await;
    }

    /// The request loop (see the module docs). Returns the status and body of a 2xx.
    async fn execute(&self, call: Call) -> Result<(u16, Vec<u8>), HubSpotError> {
        let policy = &self.inner.config.retry;
        let url = self.url(&call.path);
        let mut transient = 0u32;
        let mut throttled = 0u32;
        let mut attempts = 0u32;
        // The developer API is the developer account's, not the portal's: its calls take no
        // slot of the portal's limits, and its rate headers and 429s say nothing of them.
        let portal_limits = call.bearer;
        loop {
            if portal_limits {
                self.inner.governor.acquire(call.kind).await?;
            }
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .header("Accept", "application/json");
            if call.bearer {
                req = req.bearer_auth(self.inner.config.token.expose());
            }
            if !call.query.is_empty() {
                req = req.query(&call.query);
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
                    // A developer key rides in the query: keep the URL out of the error.
                    let e = if call.bearer { e } else { e.without_url() };
                    self.inner
                        .metrics
                        .record_call(call.endpoint, transport_outcome(&e));
                    if transport_retryable(&e, call.idempotent)
                        && transient < policy.max_transient_retries
                    {
                        self.backoff(transient).await;
                        transient += 1;
                        continue;
                    }
                    return Err(HubSpotError::Transport {
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
            let rate = HubSpotRateHeaders::from_headers(resp.headers());
            if portal_limits {
                self.inner.governor.observe(&rate, Instant::now());
            }
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = match resp.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    let e = if call.bearer { e } else { e.without_url() };
                    if call.idempotent && transient < policy.max_transient_retries {
                        self.backoff(transient).await;
                        transient += 1;
                        continue;
                    }
                    return Err(HubSpotError::Transport {
                        endpoint: call.endpoint,
                        attempts,
                        source: e,
                    });
                }
            };
            if (200..300).contains(&status) {
                return Ok((status, body));
            }
            let err_body: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                message: body_excerpt(&body),
                ..ErrorBody::default()
            });
            if status == 429 {
                let policy_name = err_body.policy_name.clone();
                if policy_name.as_deref() == Some("DAILY") {
                    return Err(HubSpotError::RateLimited {
                        endpoint: call.endpoint,
                        policy: policy_name,
                        retry_after,
                    });
                }
                let wait = retry_after.unwrap_or_else(|| match policy_name.as_deref() {
                    Some("SECONDLY") => Duration::from_secs(1),
                    _ => rate
                        .interval_ms
                        .map(Duration::from_millis)
                        .unwrap_or(Duration::from_secs(1))
                        .min(
                            policy
                                .backoff
                                .delay(throttled, 1.0)
                                .max(Duration::from_secs(1)),
                        ),
                });
                let kind = if policy_name.as_deref() == Some("SECONDLY") {
                    RequestKind::Search
                } else {
                    call.kind
                };
                if throttled >= policy.max_throttle_retries || wait > policy.max_throttle_wait {
                    return Err(HubSpotError::RateLimited {
                        endpoint: call.endpoint,
                        policy: policy_name,
                        retry_after,
                    });
                }
                throttled += 1;
                self.inner.metrics.record_throttle();
                self.inner.metrics.record_retry();
                if portal_limits {
                    self.inner.governor.pause(kind, Instant::now(), wait);
                } else {
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
            if status >= 500 && call.idempotent && transient < policy.max_transient_retries {
                self.backoff(transient).await;
                transient += 1;
                continue;
            }
            return Err(HubSpotError::Api {
                endpoint: call.endpoint,
                status,
                body: Box::new(err_body),
            });
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, HubSpotError> {
        let endpoint = call.endpoint;
        let (_, body) = self.execute(call).await?;
        decode(endpoint, &body)
    }

    // ----- objects -----

    /// Creates a record. Not retried once HubSpot may have received it: prefer
    /// [`HubSpotClient::batch_upsert`] on a unique property for sync writes.
    pub async fn create(
        &self,
        object_type: &str,
        properties: &Properties,
        associations: &[AssociationSpec],
    ) -> Result<HsObject, HubSpotError> {
        check_word("object type", object_type)?;
        let mut body = json!({ "properties": properties });
        if !associations.is_empty() {
            body["associations"] = json!(associations);
        }
        self.json(
            Call::new(
                Method::POST,
                "hs.object.create",
                &["crm", "v3", "objects", object_type],
            )
            .json(&body),
        )
        .await
    }

    /// Reads a record with the given properties (and associated ids of `associations`).
    pub async fn get(
        &self,
        object_type: &str,
        id: &str,
        properties: &[&str],
        associations: &[&str],
    ) -> Result<HsObject, HubSpotError> {
        check_word("object type", object_type)?;
        check_id(id)?;
        let mut call = Call::new(
            Method::GET,
            "hs.object.get",
            &["crm", "v3", "objects", object_type, id],
        );
        if !properties.is_empty() {
            call = call.query("properties", properties.join(","));
        }
        if !associations.is_empty() {
            call = call.query("associations", associations.join(","));
        }
        self.json(call).await
    }

    /// Updates a record's properties.
    pub async fn update(
        &self,
        object_type: &str,
        id: &str,
        properties: &Properties,
    ) -> Result<HsObject, HubSpotError> {
        check_word("object type", object_type)?;
        check_id(id)?;
        self.json(
            Call::new(
                Method::PATCH,
                "hs.object.update",
                &["crm", "v3", "objects", object_type, id],
            )
            .json(&json!({ "properties": properties })),
        )
        .await
    }

    /// Archives (deletes) a record.
    pub async fn archive(&self, object_type: &str, id: &str) -> Result<(), HubSpotError> {
        check_word("object type", object_type)?;
        check_id(id)?;
        self.execute(Call::new(
            Method::DELETE,
            "hs.object.archive",
            &["crm", "v3", "objects", object_type, id],
        ))
        .await
        .map(|_| ())
    }

    /// One page of a list (`limit` up to 100), from `after`.
    pub async fn list_page(
        &self,
        object_type: &str,
        properties: &[&str],
        after: Option<&str>,
        limit: u32,
    ) -> Result<ListPage<HsObject>, HubSpotError> {
        check_word("object type", object_type)?;
        let mut call = Call::new(
            Method::GET,
            "hs.object.list",
            &["crm", "v3", "objects", object_type],
        )
        .query("limit", limit.clamp(1, 100).to_string());
        if !properties.is_empty() {
            call = call.query("properties", properties.join(","));
        }
        if let Some(after) = after {
            call = call.query("after", after);
        }
        self.json(call).await
    }

    // ----- batch -----

    async fn batch_call(
        &self,
        endpoint: &'static str,
        object_type: &str,
        op: &str,
        body: Value,
        idempotent: bool,
    ) -> Result<(u16, BatchResponse), HubSpotError> {
        let (status, bytes) = self
            .execute(
                Call::new(
                    Method::POST,
                    endpoint,
                    &["crm", "v3", "objects", object_type, "batch", op],
                )
                .json(&body)
                .idempotent(idempotent),
            )
            .await?;
        Ok((status, decode(endpoint, &bytes)?))
    }

    /// Reads records by id (or by the unique property `id_property`), 100 a call; one item
    /// per id in order (missing records are `OBJECT_NOT_FOUND` errors).
    pub async fn batch_read(
        &self,
        object_type: &str,
        ids: &[String],
        properties: &[&str],
        id_property: Option<&str>,
    ) -> Result<BatchOutcome, HubSpotError> {
        check_word("object type", object_type)?;
        if let Some(p) = id_property {
            check_word("idProperty", p)?;
        }
        let mut outcome = BatchOutcome::default();
        for chunk in ids.chunks(BATCH_LIMIT) {
            let mut body = json!({
                "inputs": chunk.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
                "properties": properties,
            });
            if let Some(p) = id_property {
                body["idProperty"] = json!(p);
            }
            let (status, resp) = self
                .batch_call("hs.batch.read", object_type, "read", body, true)
                .await?;
            let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
            merge(
                &mut outcome,
                attribute(status, &keys, id_property, resp, Attribution::ByKey),
            );
        }
        Ok(outcome)
    }

    /// Creates records, 100 a call; one item per input in order. Each input carries an
    /// `objectWriteTraceId` so that a 207's errors name their input. Not retried after
    /// HubSpot may have received it.
    pub async fn batch_create(
        &self,
        object_type: &str,
        inputs: &[CreateInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        self.create_batches(object_type, inputs, None).await
    }

    /// Creates records that each set `key_property`, a property with unique values, 100 a
    /// call; one item per input in order, results tied to inputs by that property's value
    /// when they carry no trace id (HubSpot does not promise the order of a create's
    /// results). HubSpot refuses an input whose value another record holds, so a create
    /// repeated after a lost answer cannot make a second record. Not retried after HubSpot
    /// may have received it.
    pub async fn batch_create_keyed(
        &self,
        object_type: &str,
        key_property: &str,
        inputs: &[CreateInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        check_word("key property", key_property)?;
        if let Some(i) = inputs
            .iter()
            .position(|i| i.properties.get(key_property).is_none_or(|v| v.is_empty()))
        {
            return Err(HubSpotError::InvalidInput(format!(
                "create input {i} has no {key_property}"
            )));
        }
        self.create_batches(object_type, inputs, Some(key_property))
            .await
    }

    async fn create_batches(
        &self,
        object_type: &str,
        inputs: &[CreateInput],
        key_property: Option<&str>,
    ) -> Result<BatchOutcome, HubSpotError> {
        check_word("object type", object_type)?;
        let mut outcome = BatchOutcome::default();
        for chunk in inputs.chunks(BATCH_LIMIT) {
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(i, input)| {
                    let mut v = json!({ "properties": input.properties, "objectWriteTraceId": i.to_string() });
                    if !input.associations.is_empty() {
                        v["associations"] = json!(input.associations);
                    }
                    v
                }).collect::<Vec<_>>(),
            });
            let (status, resp) = self
                .batch_call("hs.batch.create", object_type, "create", body, false)
                .await?;
            let (keys, how): (Vec<&str>, Attribution) = match key_property {
                Some(p) => (
                    chunk
                        .iter()
                        .map(|i| i.properties.get(p).map(String::as_str).unwrap_or_default())
                        .collect(),
                    Attribution::ByKey,
                ),
                None => (vec![""; chunk.len()], Attribution::Positional),
            };
            merge(
                &mut outcome,
                attribute(status, &keys, key_property, resp, how),
            );
        }
        Ok(outcome)
    }

    /// Updates records by id (or by the unique property `id_property`), 100 a call; one item
    /// per input in order.
    pub async fn batch_update(
        &self,
        object_type: &str,
        inputs: &[UpdateInput],
        id_property: Option<&str>,
    ) -> Result<BatchOutcome, HubSpotError> {
        check_word("object type", object_type)?;
        if id_property.is_none() {
            for i in inputs {
                check_id(&i.id)?;
            }
        }
        self.batch_write(
            "hs.batch.update",
            object_type,
            "update",
            inputs,
            id_property,
        )
        .await
    }

    /// Creates or updates records keyed on `id_property`, a property with unique values
    /// (`hasUniqueValue`), 100 a call; one item per input in order (`new` tells which were
    /// created). Idempotent: safe to retry, which is why sync writes use it.
    pub async fn batch_upsert(
        &self,
        object_type: &str,
        id_property: &str,
        inputs: &[UpdateInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        check_word("object type", object_type)?;
        check_word("idProperty", id_property)?;
        if let Some(i) = inputs.iter().position(|i| i.id.is_empty()) {
            return Err(HubSpotError::InvalidInput(format!(
                "upsert input {i} has an empty {id_property}"
            )));
        }
        self.batch_write(
            "hs.batch.upsert",
            object_type,
            "upsert",
            inputs,
            Some(id_property),
        )
        .await
    }

    async fn batch_write(
        &self,
        endpoint: &'static str,
        object_type: &str,
        op: &str,
        inputs: &[UpdateInput],
        id_property: Option<&str>,
    ) -> Result<BatchOutcome, HubSpotError> {
        let mut outcome = BatchOutcome::default();
        for chunk in inputs.chunks(BATCH_LIMIT) {
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(i, input)| {
                    let mut v = json!({
                        "id": input.id,
                        "properties": input.properties,
                        "objectWriteTraceId": i.to_string(),
                    });
                    if let Some(p) = id_property {
                        v["idProperty"] = json!(p);
                    }
                    v
                }).collect::<Vec<_>>(),
            });
            let (status, resp) = self
                .batch_call(endpoint, object_type, op, body, true)
                .await?;
            let keys: Vec<&str> = chunk.iter().map(|i| i.id.as_str()).collect();
            merge(
                &mut outcome,
                attribute(status, &keys, id_property, resp, Attribution::ByKey),
            );
        }
        Ok(outcome)
    }

    /// Archives records by id, 100 a call.
    pub async fn batch_archive(
        &self,
        object_type: &str,
        ids: &[String],
    ) -> Result<(), HubSpotError> {
        check_word("object type", object_type)?;
        for chunk in ids.chunks(BATCH_LIMIT) {
            for id in chunk {
                check_id(id)?;
            }
            let body =
                json!({ "inputs": chunk.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>() });
            self.execute(
                Call::new(
                    Method::POST,
                    "hs.batch.archive",
                    &["crm", "v3", "objects", object_type, "batch", "archive"],
                )
                .json(&body)
                .idempotent(true),
            )
            .await?;
        }
        Ok(())
    }

    // ----- search -----

    /// One search page. Refuses (without a call) an `after` at or past the 10,000 cap and
    /// filter sets over HubSpot's limits.
    pub async fn search(
        &self,
        object_type: &str,
        request: &SearchRequest,
    ) -> Result<SearchPage, HubSpotError> {
        check_word("object type", object_type)?;
        check_search(request)?;
        let body = serde_json::to_value(request)
            .map_err(|e| HubSpotError::InvalidInput(format!("search request: {e}")))?;
        self.json(
            Call::new(
                Method::POST,
                "hs.search",
                &["crm", "v3", "objects", object_type, "search"],
            )
            .json(&body)
            .idempotent(true)
            .search(),
        )
        .await
    }

    /// One step of a change scan: records modified in `[cursor, until)` in
    /// `(modification time, hs_object_id)` order, and the cursor to continue from. The
    /// modification property is the request's (`hs_lastmodifieddate` unless it names
    /// another, e.g. `lastmodifieddate` for contacts).
    ///
    /// Keyset paging instead of offsets: every query reads only its first page, so the
    /// 10,000-result cap is never reached and records changing during the scan are not
    /// skipped (an offset shifts when a record leaves the window). A range query sorted by
    /// time returns every record older than the page's last time; the records at that last
    /// time are read again by the next step. When one millisecond holds a whole page (many
    /// records share one modification time), the scan narrows the window to that instant
    /// and pages it by `hs_object_id`.
    pub async fn scan_modified_page(
        &self,
        request: &ScanRequest,
        cursor: ScanCursor,
    ) -> Result<ScanPage, HubSpotError> {
        let (modified, properties) = checked_scan(request, 3)?;
        let limit = request.page_size as usize;
        let mut cursor = cursor;
        if cursor.modified_ms >= request.until_ms {
            return Ok(ScanPage {
                records: Vec::new(),
                next: cursor,
                done: true,
            });
        }
        loop {
            if let Some(after_id) = cursor.after_id {
                // Tie phase: the records at one instant, by id.
                let t = cursor.modified_ms;
                let mut filters = vec![
                    Filter::new(modified, Operator::Eq, t.to_string()),
                    Filter::new("hs_object_id", Operator::Gt, after_id.to_string()),
                ];
                filters.extend(request.extra_filters.iter().cloned());
                let page = self
                    .search(
                        &request.object_type,
                        &SearchRequest {
                            filter_groups: vec![FilterGroup { filters }],
                            sorts: vec![Sort {
                                property_name: "hs_object_id".into(),
                                direction: Direction::Ascending,
                            }],
                            properties: properties.clone(),
                            limit: request.page_size,
                            after: None,
                            query: None,
                        },
                    )
                    .await?;
                let mut records = page.results;
                records.sort_by_key(|r| r.numeric_id().unwrap_or(0));
                records.retain(|r| r.numeric_id().is_some_and(|id| id > after_id));
                let full = records.len() >= limit;
                let next = if full {
                    ScanCursor {
                        modified_ms: t,
                        after_id: records.last().and_then(HsObject::numeric_id),
                    }
                } else {
                    ScanCursor::from_ms(t + 1)
                };
                let done = !full && next.modified_ms >= request.until_ms;
                return Ok(ScanPage {
                    records,
                    next,
                    done,
                });
            }

            // Range phase: everything in [t, until), by time.
            let t = cursor.modified_ms;
            let mut filters = vec![
                Filter::new(modified, Operator::Gte, t.to_string()),
                Filter::new(modified, Operator::Lt, request.until_ms.to_string()),
            ];
            filters.extend(request.extra_filters.iter().cloned());
            let page = self
                .search(
                    &request.object_type,
                    &SearchRequest {
                        filter_groups: vec![FilterGroup { filters }],
                        sorts: vec![Sort {
                            property_name: modified.into(),
                            direction: Direction::Ascending,
                        }],
                        properties: properties.clone(),
                        limit: request.page_size,
                        after: None,
                        query: None,
                    },
                )
                .await?;
            let mut keyed = Vec::with_capacity(page.results.len());
            for r in page.results {
                let ms = r
                    .prop(modified)
                    .and_then(parse_timestamp_ms)
                    .ok_or_else(|| HubSpotError::Decode {
                        endpoint: "hs.search",
                        message: format!("record {} has no readable {modified}", r.id),
                        excerpt: String::new(),
                    })?;
                keyed.push((ms, r.numeric_id().unwrap_or(0), r));
            }
            keyed.sort_by_key(|(ms, id, _)| (*ms, *id));
            if keyed.len() < limit {
                // The whole rest of the window.
                return Ok(ScanPage {
                    records: keyed.into_iter().map(|(_, _, r)| r).collect(),
                    next: ScanCursor::from_ms(request.until_ms),
                    done: true,
                });
            }
            let last_ms = keyed.last().map(|k| k.0).unwrap_or(t);
            let first_ms = keyed.first().map(|k| k.0).unwrap_or(t);
            if first_ms == last_ms {
                // A whole page at one instant: page that instant by id.
                cursor = ScanCursor {
                    modified_ms: last_ms,
                    after_id: Some(0),
                };
                continue;
            }
            // Everything before the last instant is complete; that instant is read again.
            let records = keyed
                .into_iter()
                .filter(|(ms, _, _)| *ms < last_ms)
                .map(|(_, _, r)| r)
                .collect();
            return Ok(ScanPage {
                records,
                next: ScanCursor::from_ms(last_ms),
                done: false,
            });
        }
    }

    /// One page of a whole-window read in id order: the records modified before
    /// `request.until_ms` whose id is above `after_id`, up to a page, sorted by
    /// `hs_object_id` (a total order, so every page is full: no instant is read twice,
    /// however many records share one modification time). Returns the records and the id
    /// to continue after (`None`: the window is exhausted). A record modified during the
    /// read leaves the window and belongs to the next one, so only the end of the window is
    /// a safe checkpoint: for reading everything once (a backfill), not for resuming.
    pub async fn scan_by_id_page(
        &self,
        request: &ScanRequest,
        after_id: u64,
    ) -> Result<(Vec<HsObject>, Option<u64>), HubSpotError> {
        self.scan_id_range_page(request, after_id, None).await
    }

    /// [`HubSpotClient::scan_by_id_page`] over the ids up to `through_id` (inclusive) only,
    /// when given: disjoint id ranges of one window can be read side by side.
    pub async fn scan_id_range_page(
        &self,
        request: &ScanRequest,
        after_id: u64,
        through_id: Option<u64>,
    ) -> Result<(Vec<HsObject>, Option<u64>), HubSpotError> {
        let (modified, properties) = checked_scan(request, 3)?;
        let mut filters = vec![
            Filter::new(modified, Operator::Lt, request.until_ms.to_string()),
            Filter::new("hs_object_id", Operator::Gt, after_id.to_string()),
        ];
        if let Some(through) = through_id {
            filters.push(Filter::new(
                "hs_object_id",
                Operator::Lte,
                through.to_string(),
            ));
        }
        filters.extend(request.extra_filters.iter().cloned());
        let page = self
            .search(
                &request.object_type,
                &SearchRequest {
                    filter_groups: vec![FilterGroup { filters }],
                    sorts: vec![Sort {
                        property_name: "hs_object_id".into(),
                        direction: Direction::Ascending,
                    }],
                    properties,
                    limit: request.page_size,
                    after: None,
                    query: None,
                },
            )
            .await?;
        // The page held every match (`total` counts them all): no further page to ask for,
        // even when this one is full. (A response without a total asks on, as before.)
        let last_page = page.total > 0 && page.total <= page.results.len() as u64;
        let mut records = page.results;
        records.sort_by_key(|r| r.numeric_id().unwrap_or(0));
        records.retain(|r| r.numeric_id().is_some_and(|id| id > after_id));
        let next = if !last_page && records.len() >= request.page_size as usize {
            records.last().and_then(HsObject::numeric_id)
        } else {
            None
        };
        Ok((records, next))
    }

    /// Runs a change scan to the end of its window; returns every record (in
    /// `(hs_lastmodifieddate, id)` order) and the final cursor. For large windows prefer
    /// [`HubSpotClient::scan_modified_page`] and checkpoint after each page.
    pub async fn scan_modified(
        &self,
        request: &ScanRequest,
        cursor: ScanCursor,
    ) -> Result<(Vec<HsObject>, ScanCursor), HubSpotError> {
        let mut all = Vec::new();
        let mut cursor = cursor;
        loop {
            let page = self.scan_modified_page(request, cursor).await?;
            all.extend(page.records);
            cursor = page.next;
            if page.done {
                return Ok((all, cursor));
            }
        }
    }

    // ----- associations v4 -----

    /// Associates two records with the default (unlabeled) type.
    pub async fn associate_default(
        &self,
        from_type: &str,
        from_id: &str,
        to_type: &str,
        to_id: &str,
    ) -> Result<(), HubSpotError> {
        check_word("object type", from_type)?;
        check_word("object type", to_type)?;
        check_id(from_id)?;
        check_id(to_id)?;
        self.execute(Call::new(
            Method::PUT,
            "hs.assoc.default",
            &[
                "crm",
                "v4",
                "objects",
                from_type,
                from_id,
                "associations",
                "default",
                to_type,
                to_id,
            ],
        ))
        .await
        .map(|_| ())
    }

    /// Creates associations (with their types/labels), 100 a call.
    pub async fn batch_associate(
        &self,
        from_type: &str,
        to_type: &str,
        inputs: &[AssociationInput],
    ) -> Result<(), HubSpotError> {
        check_word("object type", from_type)?;
        check_word("object type", to_type)?;
        for chunk in inputs.chunks(ASSOCIATION_BATCH_LIMIT) {
            for i in chunk {
                check_id(&i.from)?;
                check_id(&i.to)?;
                if i.types.is_empty() {
                    return Err(HubSpotError::InvalidInput(format!(
                        "association {} -> {} has no type",
                        i.from, i.to
                    )));
                }
            }
            let body = json!({
                "inputs": chunk.iter().map(|i| json!({
                    "from": { "id": i.from },
                    "to": { "id": i.to },
                    "types": i.types,
                })).collect::<Vec<_>>()
            });
            let (status, bytes) = self
                .execute(
                    Call::new(
                        Method::POST,
                        "hs.assoc.batch.create",
                        &[
                            "crm",
                            "v4",
                            "associations",
                            from_type,
                            to_type,
                            "batch",
                            "create",
                        ],
                    )
                    .json(&body)
                    .idempotent(true),
                )
                .await?;
            if status == 207 {
                let resp: BatchResponse = decode("hs.assoc.batch.create", &bytes)?;
                if let Some(first) = resp.errors.into_iter().next() {
                    return Err(HubSpotError::Api {
                        endpoint: "hs.assoc.batch.create",
                        status,
                        body: Box::new(first),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads the associations of records, 100 a call; one entry per id that has any.
    pub async fn batch_read_associations(
        &self,
        from_type: &str,
        to_type: &str,
        ids: &[String],
    ) -> Result<Vec<AssociationsOf>, HubSpotError> {
        check_word("object type", from_type)?;
        check_word("object type", to_type)?;
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            results: Vec<AssociationsOf>,
        }
        let mut out = Vec::new();
        for chunk in ids.chunks(ASSOCIATION_BATCH_LIMIT) {
            for id in chunk {
                check_id(id)?;
            }
            let body =
                json!({ "inputs": chunk.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>() });
            let r: Resp = self
                .json(
                    Call::new(
                        Method::POST,
                        "hs.assoc.batch.read",
                        &[
                            "crm",
                            "v4",
                            "associations",
                            from_type,
                            to_type,
                            "batch",
                            "read",
                        ],
                    )
                    .json(&body)
                    .idempotent(true),
                )
                .await?;
            out.extend(r.results);
        }
        Ok(out)
    }

    /// Removes all associations between each `(from, [to...])` pair, 100 a call.
    pub async fn batch_archive_associations(
        &self,
        from_type: &str,
        to_type: &str,
        pairs: &[(String, Vec<String>)],
    ) -> Result<(), HubSpotError> {
        check_word("object type", from_type)?;
        check_word("object type", to_type)?;
        for chunk in pairs.chunks(ASSOCIATION_BATCH_LIMIT) {
            for (from, tos) in chunk {
                check_id(from)?;
                for to in tos {
                    check_id(to)?;
                }
            }
            let body = json!({
                "inputs": chunk.iter().map(|(from, tos)| json!({
                    "from": { "id": from },
                    "to": tos.iter().map(|t| json!({ "id": t })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()
            });
            self.execute(
                Call::new(
                    Method::POST,
                    "hs.assoc.batch.archive",
                    &[
                        "crm",
                        "v4",
                        "associations",
                        from_type,
                        to_type,
                        "batch",
                        "archive",
                    ],
                )
                .json(&body)
                .idempotent(true),
            )
            .await?;
        }
        Ok(())
    }

    // ----- pipelines, owners, properties -----

    /// The pipelines of an object type (`deals`).
    pub async fn list_pipelines(&self, object_type: &str) -> Result<Vec<Pipeline>, HubSpotError> {
        check_word("object type", object_type)?;
        let page: ListPage<Pipeline> = self
            .json(Call::new(
                Method::GET,
                "hs.pipelines.list",
                &["crm", "v3", "pipelines", object_type],
            ))
            .await?;
        Ok(page.results)
    }

    /// Creates a pipeline with its stages.
    pub async fn create_pipeline(
        &self,
        object_type: &str,
        pipeline: &NewPipeline,
    ) -> Result<Pipeline, HubSpotError> {
        check_word("object type", object_type)?;
        let body = serde_json::to_value(pipeline)
            .map_err(|e| HubSpotError::InvalidInput(format!("pipeline: {e}")))?;
        self.json(
            Call::new(
                Method::POST,
                "hs.pipelines.create",
                &["crm", "v3", "pipelines", object_type],
            )
            .json(&body),
        )
        .await
    }

    /// Every owner (all pages).
    pub async fn list_owners(&self) -> Result<Vec<Owner>, HubSpotError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, "hs.owners.list", &["crm", "v3", "owners"])
                .query("limit", "100");
            if let Some(a) = &after {
                call = call.query("after", a.clone());
            }
            let page: ListPage<Owner> = self.json(call).await?;
            let next = page.next_after().map(str::to_string);
            out.extend(page.results);
            match next {
                Some(n) if Some(&n) != after.as_ref() => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// The property definitions of an object type.
    pub async fn list_properties(
        &self,
        object_type: &str,
    ) -> Result<Vec<PropertyDefinition>, HubSpotError> {
        check_word("object type", object_type)?;
        let page: ListPage<PropertyDefinition> = self
            .json(Call::new(
                Method::GET,
                "hs.properties.list",
                &["crm", "v3", "properties", object_type],
            ))
            .await?;
        Ok(page.results)
    }

    /// Creates a property (with `hasUniqueValue` for a cross-reference key).
    pub async fn create_property(
        &self,
        object_type: &str,
        property: &NewProperty,
    ) -> Result<PropertyDefinition, HubSpotError> {
        check_word("object type", object_type)?;
        check_word("property name", &property.name)?;
        let body = serde_json::to_value(property)
            .map_err(|e| HubSpotError::InvalidInput(format!("property: {e}")))?;
        self.json(
            Call::new(
                Method::POST,
                "hs.properties.create",
                &["crm", "v3", "properties", object_type],
            )
            .json(&body),
        )
        .await
    }

    // ----- the token, webhook settings and subscriptions -----

    /// What HubSpot says of this client's own private-app token: its app, portal, user
    /// and scopes (`POST /oauth/v2/private-apps/get/access-token-info`).
    pub async fn access_token_info(&self) -> Result<TokenInfo, HubSpotError> {
        let body = json!({ "tokenKey": self.inner.config.token.expose() });
        self.json(
            Call::new(
                Method::POST,
                "hs.token.info",
                &["oauth", "v2", "private-apps", "get", "access-token-info"],
            )
            .json(&body)
            .idempotent(true),
        )
        .await
    }

    /// The app's webhook settings, `None` when it has none (developer API: the
    /// developer account's key, not the token).
    pub async fn webhook_settings(
        &self,
        app_id: u64,
        developer_key: &Secret,
    ) -> Result<Option<WebhookSettings>, HubSpotError> {
        let app = app_id.to_string();
        let call = Call::new(
            Method::GET,
            "hs.webhooks.settings.get",
            &["webhooks", "v3", &app, "settings"],
        )
        .developer_key(developer_key);
        match self.json(call).await {
            Ok(settings) => Ok(Some(settings)),
            Err(HubSpotError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points the app's webhooks at `target_url`, with at most `max_concurrent`
    /// deliveries in flight (developer API).
    pub async fn put_webhook_settings(
        &self,
        app_id: u64,
        developer_key: &Secret,
        target_url: &str,
        max_concurrent: u32,
    ) -> Result<WebhookSettings, HubSpotError> {
        let app = app_id.to_string();
        let body = json!({
            "targetUrl": target_url,
            "throttling": { "maxConcurrentRequests": max_concurrent, "period": "SECONDLY" },
        });
        self.json(
            Call::new(
                Method::PUT,
                "hs.webhooks.settings.put",
                &["webhooks", "v3", &app, "settings"],
            )
            .developer_key(developer_key)
            .json(&body),
        )
        .await
    }

    /// The app's webhook subscriptions, active and paused (developer API).
    pub async fn webhook_subscriptions(
        &self,
        app_id: u64,
        developer_key: &Secret,
    ) -> Result<Vec<WebhookSubscription>, HubSpotError> {
        #[derive(Deserialize)]
        struct Subscriptions {
            #[serde(default)]
            results: Vec<WebhookSubscription>,
        }
        let app = app_id.to_string();
        let list: Subscriptions = self
            .json(
                Call::new(
                    Method::GET,
                    "hs.webhooks.subscriptions.list",
                    &["webhooks", "v3", &app, "subscriptions"],
                )
                .developer_key(developer_key),
            )
            .await?;
        Ok(list.results)
    }

    /// Subscribes the app to `event_type` (`deal.creation`, `contact.propertyChange`...;
    /// `property` names the property of a `propertyChange`), active at once (developer
    /// API). Not retried once HubSpot may have received it.
    pub async fn create_webhook_subscription(
        &self,
        app_id: u64,
        developer_key: &Secret,
        event_type: &str,
        property: Option<&str>,
    ) -> Result<WebhookSubscription, HubSpotError> {
        let mut body = json!({ "eventType": event_type, "active": true });
        if let Some(p) = property {
            check_word("property name", p)?;
            body["propertyName"] = json!(p);
        }
        let app = app_id.to_string();
        self.json(
            Call::new(
                Method::POST,
                "hs.webhooks.subscriptions.create",
                &["webhooks", "v3", &app, "subscriptions"],
            )
            .developer_key(developer_key)
            .json(&body),
        )
        .await
    }

    /// Turns a subscription on or off (developer API).
    pub async fn set_webhook_subscription_active(
        &self,
        app_id: u64,
        developer_key: &Secret,
        subscription_id: &str,
        active: bool,
    ) -> Result<WebhookSubscription, HubSpotError> {
        check_id(subscription_id)?;
        let app = app_id.to_string();
        self.json(
            Call::new(
                Method::PATCH,
                "hs.webhooks.subscriptions.update",
                &["webhooks", "v3", &app, "subscriptions", subscription_id],
            )
            .developer_key(developer_key)
            .json(&json!({ "active": active })),
        )
        .await
    }
}

/// How results are tied to inputs when they carry no trace id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attribution {
    /// By the record id, or by the `idProperty` value.
    ByKey,
    /// In order, when the counts leave no doubt (batch create).
    Positional,
}

fn merge(total: &mut BatchOutcome, part: BatchOutcome) {
    total.items.extend(part.items);
    total.unattributed.extend(part.unattributed);
}

/// Ties a batch response to its inputs: by `objectWriteTraceId` (the input's index in its
/// chunk), by key (id or `idProperty` value), or by position; errors by their context's
/// trace ids or ids. An input with neither result nor error gets a synthetic error.
fn attribute(
    status: u16,
    keys: &[&str],
    id_property: Option<&str>,
    resp: BatchResponse,
    how: Attribution,
) -> BatchOutcome {
    let n = keys.len();
    let mut items: Vec<Option<Result<HsObject, BatchError>>> = vec![None; n];
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        by_key.entry(*k).or_default().push(i);
    }
    let mut unattributed = Vec::new();

    for body in resp.errors {
        let mut idx: Vec<usize> = body
            .context_strings("objectWriteTraceId")
            .iter()
            .filter_map(|t| t.parse::<usize>().ok())
            .filter(|i| *i < n)
            .collect();
        if idx.is_empty() {
            for id in body
                .context_strings("ids")
                .into_iter()
                .chain(body.context_strings("id"))
            {
                if let Some(is) = by_key.get(id.as_str()) {
                    idx.extend(is.iter().copied());
                }
            }
        }
        let err = BatchError {
            status,
            body: Box::new(body),
        };
        if idx.is_empty() {
            unattributed.push(err);
        } else {
            for i in idx {
                items[i] = Some(Err(err.clone()));
            }
        }
    }

    let mut leftovers = Vec::new();
    for r in resp.results {
        let by_trace = r
            .object_write_trace_id
            .as_deref()
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|i| *i < n && items[*i].is_none());
        let slot = by_trace.or_else(|| {
            if how != Attribution::ByKey {
                return None;
            }
            let key = match id_property {
                Some(p) if p != "hs_object_id" => r.prop(p).map(str::to_string),
                _ => Some(r.id.clone()),
            }?;
            by_key
                .get(key.as_str())
                .and_then(|is| is.iter().copied().find(|i| items[*i].is_none()))
        });
        match slot {
            Some(i) => items[i] = Some(Ok(r)),
            None => leftovers.push(r),
        }
    }
    // Positional fallback: only when exactly the open inputs remain.
    let open: Vec<usize> = (0..n).filter(|i| items[*i].is_none()).collect();
    if !leftovers.is_empty() && leftovers.len() == open.len() {
        for (i, r) in open.into_iter().zip(leftovers) {
            items[i] = Some(Ok(r));
        }
    }

    BatchOutcome {
        items: items
            .into_iter()
            .enumerate()
            .map(|(i, it)| {
                it.unwrap_or_else(|| {
                    Err(BatchError::synthetic(
                        "OBJECT_NOT_FOUND",
                        format!("no result for input {i} ({})", keys[i]),
                    ))
                })
            })
            .collect(),
        unattributed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::ErrorClass;

    fn resp(json: &str) -> BatchResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn read_207_ties_missing_ids_to_their_inputs() {
        let r = resp(
            r#"{"status":"COMPLETE","results":[{"id":"3","properties":{}},{"id":"1","properties":{}}],
               "numErrors":1,"errors":[{"status":"error","category":"OBJECT_NOT_FOUND","message":"Could not get some DEAL objects","context":{"ids":["2"]}}]}"#,
        );
        let out = attribute(207, &["1", "2", "3"], None, r, Attribution::ByKey);
        assert_eq!(out.items[0].as_ref().unwrap().id, "1");
        assert_eq!(
            out.items[1].as_ref().unwrap_err().class(),
            ErrorClass::NotFound
        );
        assert_eq!(out.items[2].as_ref().unwrap().id, "3");
        assert!(out.unattributed.is_empty());
        assert_eq!(out.failures().count(), 1);
    }

    #[test]
    fn upsert_results_match_by_id_property_and_trace_id() {
        let r = resp(
            r#"{"status":"COMPLETE","results":[
                {"id":"900","properties":{"sf_id":"006B"},"new":true},
                {"id":"901","properties":{"sf_id":"006A"},"new":false}],
               "errors":[{"status":"error","category":"VALIDATION_ERROR","message":"Property values were not valid","errors":[{"message":"x was not one of the allowed options","code":"INVALID_OPTION","in":"dealstage"}],"context":{"objectWriteTraceId":["2"]}}]}"#,
        );
        let out = attribute(
            207,
            &["006A", "006B", "006C"],
            Some("sf_id"),
            r,
            Attribution::ByKey,
        );
        assert_eq!(out.items[0].as_ref().unwrap().id, "901");
        assert_eq!(out.items[1].as_ref().unwrap().new, Some(true));
        assert_eq!(
            out.items[2].as_ref().unwrap_err().class(),
            ErrorClass::PicklistMismatch
        );
        assert!(!out.all_ok());
    }

    #[test]
    fn create_results_use_trace_ids_then_positions() {
        // Trace ids present: order in the answer does not matter.
        let r = resp(
            r#"{"results":[{"id":"11","properties":{},"objectWriteTraceId":"1"},{"id":"10","properties":{},"objectWriteTraceId":"0"}]}"#,
        );
        let out = attribute(201, &["", ""], None, r, Attribution::Positional);
        assert_eq!(out.items[0].as_ref().unwrap().id, "10");
        assert_eq!(out.items[1].as_ref().unwrap().id, "11");
        // No trace ids, one error named by trace id: the result goes to the open input.
        let r = resp(
            r#"{"results":[{"id":"20","properties":{}}],"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"bad","context":{"objectWriteTraceId":["0"]}}]}"#,
        );
        let out = attribute(207, &["", ""], None, r, Attribution::Positional);
        assert!(out.items[0].is_err());
        assert_eq!(out.items[1].as_ref().unwrap().id, "20");
    }

    #[test]
    fn unnamed_errors_are_kept_apart_and_silent_inputs_fail() {
        let r = resp(
            r#"{"results":[],"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"something"}]}"#,
        );
        let out = attribute(207, &["5"], None, r, Attribution::ByKey);
        assert_eq!(out.unattributed.len(), 1);
        assert!(out.items[0].is_err());
    }

    #[test]
    fn search_requests_are_checked_before_sending() {
        let ok = SearchRequest {
            limit: 100,
            after: Some("9900".into()),
            ..SearchRequest::default()
        };
        assert!(check_search(&ok).is_ok());
        let past = SearchRequest {
            limit: 100,
            after: Some("10000".into()),
            ..SearchRequest::default()
        };
        assert!(matches!(
            check_search(&past),
            Err(HubSpotError::SearchCap { after: 10_000 })
        ));
        let big = SearchRequest {
            limit: 201,
            ..SearchRequest::default()
        };
        assert!(check_search(&big).is_err());
        let many = SearchRequest {
            limit: 10,
            filter_groups: vec![
                FilterGroup {
                    filters: vec![Filter::new("a", Operator::Eq, "1"); 11]
                };
                1
            ],
            ..SearchRequest::default()
        };
        assert!(check_search(&many).is_err());
    }

    #[test]
    fn config_is_validated_and_debug_redacts_the_token() {
        assert!(HubSpotClient::new(HubSpotConfig::new("::", "t")).is_err());
        assert!(HubSpotClient::new(HubSpotConfig::new("https://api.example.test", "")).is_err());
        let c = HubSpotClient::new(HubSpotConfig::new(
            "https://api.example.test",
            "pat-na1-secret",
        ))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("pat-na1-secret"), "{dbg}");
        assert_eq!(
            c.url(&["crm".into(), "v3".into(), "objects".into(), "deals".into()])
                .as_str(),
            "https://api.example.test/crm/v3/objects/deals"
        );
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(check_word("object type", "deals").is_ok());
        assert!(check_word("object type", "2-1234").is_ok());
        assert!(check_word("object type", "deals/../x").is_err());
        assert!(check_id("123").is_ok());
        assert!(check_id("12a").is_err());
    }
}
