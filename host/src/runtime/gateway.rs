//! The way out for the `crm` import: the [`CrmGateway`] trait and its
//! implementations, [`HttpGateway`] (real HTTP to the tenant's CRMs),
//! [`MockGateway`] (fixture responses, for `plugin run|test`),
//! [`ReadOnlyGateway`] (reads only, for dry runs) and [`DenyAllGateway`].
//!
//! A gateway adds the base URL and the credentials; the plugin never sees a
//! token. [`HttpGateway`] also passes every request through the tenant's CRM
//! allowance (`allowance`), the same governors as the sync's own calls. A gateway must never send a request that `egress` refuses, never
//! follow a redirect, and never read more of a response than it was allowed.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use url::Url;

use super::allowance::{AllowanceRefused, CrmAllowances};
use super::egress::{self, EgressDenied};
use crate::crm::transport::{TransportOptions, http_client_builder};

/// One of the tenant's two CRMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmTarget {
    /// The tenant's Salesforce org.
    Salesforce,
    /// The tenant's HubSpot portal.
    Hubspot,
}

impl CrmTarget {
    /// `salesforce` or `hubspot`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmTarget::Salesforce => "salesforce",
            CrmTarget::Hubspot => "hubspot",
        }
    }
}

/// An HTTP method a plugin may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl HttpMethod {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// A request as the plugin described it (already checked by `egress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRequest {
    /// Which CRM.
    pub target: CrmTarget,
    /// The method.
    pub method: HttpMethod,
    /// The path below the API root.
    pub path: String,
    /// Query parameters, unencoded.
    pub query: Vec<(String, String)>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Option<Vec<u8>>,
}

/// A CRM's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestResponse {
    /// The HTTP status.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What the runtime allows one request.
#[derive(Debug, Clone, Copy)]
pub struct SendBudget {
    /// The time left before the invocation's deadline.
    pub timeout: Duration,
    /// The response bytes left for this invocation.
    pub max_response_bytes: u64,
}

/// Why a gateway delivered no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Refused before anything left.
    #[error("denied: {0}")]
    Denied(#[from] EgressDenied),
    /// No fixture mock answers this request.
    #[error("no mocked response for {0}")]
    Unmocked(String),
    /// The response body is larger than the bytes left.
    #[error("response larger than the {allowed} response bytes left (read {read})")]
    ResponseTooLarge {
        /// The bytes that were left.
        allowed: u64,
        /// The bytes read when the gateway stopped.
        read: u64,
    },
    /// The time left ran out.
    #[error("timed out")]
    Timeout,
    /// Connection, TLS or DNS failure.
    #[error("transport: {0}")]
    Transport(String),
    /// No credential for the CRM.
    #[error("no credential: {0}")]
    Credential(String),
    /// The tenant's rate limits or API budget refused it (nothing was sent).
    #[error(transparent)]
    Allowance(#[from] AllowanceRefused),
}

/// The way out for the `crm` import. The runtime checks the request with
/// `egress`, counts it, bounds it by the deadline and records it; the
/// gateway delivers it.
#[async_trait::async_trait]
pub trait CrmGateway: Send + Sync {
    /// Sends one request within the budget.
    async fn send(
        &self,
        req: &GuestRequest,
        budget: SendBudget,
    ) -> Result<GuestResponse, GatewayError>;
}

/// A gateway that refuses everything (a tenant with no CRM connected, or
/// `plugin check`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAllGateway;

#[async_trait::async_trait]
impl CrmGateway for DenyAllGateway {
    async fn send(
        &self,
        req: &GuestRequest,
        _budget: SendBudget,
    ) -> Result<GuestResponse, GatewayError> {
        Err(GatewayError::Denied(EgressDenied::NotConnected(
            req.target.as_str(),
        )))
    }
}

/// Lets only `GET` requests through to the gateway it wraps: the gateway of a dry run,
/// which must write nothing to either CRM, while a plugin may still look things up.
pub struct ReadOnlyGateway<G>(pub G);

#[async_trait::async_trait]
impl<G: CrmGateway> CrmGateway for ReadOnlyGateway<G> {
    async fn send(
        &self,
        req: &GuestRequest,
        budget: SendBudget,
    ) -> Result<GuestResponse, GatewayError> {
        if req.method != HttpMethod::Get {
            return Err(GatewayError::Denied(EgressDenied::WriteInDryRun(
                req.method.as_str(),
            )));
        }
        self.0.send(req, budget).await
    }
}

// ---------------------------------------------------------------------------
// Mock

/// One mocked response.
#[derive(Debug, Clone)]
pub struct Mock {
    /// The CRM it answers for.
    pub target: CrmTarget,
    /// The method it answers.
    pub method: HttpMethod,
    /// The exact path it answers.
    pub path: String,
    /// Query parameters that must all be in the request (a subset), if given.
    pub query: Option<Vec<(String, String)>>,
    /// The response.
    pub response: GuestResponse,
    /// A delay before answering (to test deadlines).
    pub delay: Option<Duration>,
}

/// Answers requests from a list of mocks: a request takes the first unused
/// mock whose target, method and path are equal and whose query is a subset.
#[derive(Debug, Default)]
pub struct MockGateway {
    mocks: Mutex<Vec<(Mock, bool)>>,
}

impl MockGateway {
    /// A gateway with these mocks.
    pub fn new(mocks: Vec<Mock>) -> Self {
        Self {
            mocks: Mutex::new(mocks.into_iter().map(|m| (m, false)).collect()),
        }
    }

    /// How many mocks were not used.
    pub fn unused(&self) -> usize {
        self.mocks.lock().iter().filter(|(_, used)| !used).count()
    }

    fn take(&self, req: &GuestRequest) -> Option<Mock> {
        let mut mocks = self.mocks.lock();
        let (mock, used) = mocks.iter_mut().find(|(m, used)| {
            !*used
                && m.target == req.target
                && m.method == req.method
                && m.path == req.path
                && m.query
                    .as_ref()
                    .is_none_or(|q| q.iter().all(|p| req.query.contains(p)))
        })?;
        *used = true;
        Some(mock.clone())
    }
}

#[async_trait::async_trait]
impl CrmGateway for MockGateway {
    async fn send(
        &self,
        req: &GuestRequest,
        budget: SendBudget,
    ) -> Result<GuestResponse, GatewayError> {
        egress::check_request(
            &req.path,
            req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        let Some(mock) = self.take(req) else {
            return Err(GatewayError::Unmocked(format!(
                "{} {} {}",
                req.target.as_str(),
                req.method.as_str(),
                req.path
            )));
        };
        if let Some(delay) = mock.delay {
            if delay > budget.timeout {
                tokio::time::sleep(budget.timeout).await;
                return Err(GatewayError::Timeout);
            }
            tokio::time::sleep(delay).await;
        }
        let len = mock.response.body.len() as u64;
        if len > budget.max_response_bytes {
            return Err(GatewayError::ResponseTooLarge {
                allowed: budget.max_response_bytes,
                read: len,
            });
        }
        Ok(mock.response)
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// Gives the bearer token for a tenant's CRM. The token never reaches a plugin.
#[async_trait::async_trait]
pub trait CredentialProvider: Send + Sync {
    /// The current access token for `target`.
    async fn bearer_token(&self, target: CrmTarget) -> Result<String, GatewayError>;
}

/// Fixed tokens (tests, local runs).
#[derive(Clone, Default)]
pub struct StaticCredentials {
    /// The Salesforce token.
    pub salesforce: Option<String>,
    /// The HubSpot token.
    pub hubspot: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticCredentials { .. }")
    }
}

#[async_trait::async_trait]
impl CredentialProvider for StaticCredentials {
    async fn bearer_token(&self, target: CrmTarget) -> Result<String, GatewayError> {
        match target {
            CrmTarget::Salesforce => self.salesforce.clone(),
            CrmTarget::Hubspot => self.hubspot.clone(),
        }
        .ok_or_else(|| GatewayError::Credential(format!("no token for {}", target.as_str())))
    }
}

/// The base URLs of a tenant's CRMs (Salesforce instance URL, HubSpot API root).
#[derive(Debug, Clone, Default)]
pub struct CrmBaseUrls {
    /// e.g. `https://acme.my.salesforce.com`
    pub salesforce: Option<Url>,
    /// e.g. `https://api.hubapi.com`
    pub hubspot: Option<Url>,
}

/// Real HTTP to the tenant's two CRMs: base URL + checked path, the tenant's
/// allowance taken first (waiting only within the time left), the bearer
/// token from the [`CredentialProvider`], no redirects, no proxy from the
/// environment, the response read only up to the bytes left.
pub struct HttpGateway {
    salesforce_client: reqwest::Client,
    hubspot_client: reqwest::Client,
    bases: CrmBaseUrls,
    credentials: Arc<dyn CredentialProvider>,
    allowances: CrmAllowances,
}

impl HttpGateway {
    /// A gateway for these base URLs, credentials and allowances, trusting the
    /// platform's roots only.
    pub fn new(
        bases: CrmBaseUrls,
        credentials: Arc<dyn CredentialProvider>,
        allowances: CrmAllowances,
    ) -> Result<Self, GatewayError> {
        let default = TransportOptions::default();
        Self::with_transports(bases, credentials, allowances, &default, &default)
    }

    /// A gateway that connects to each CRM as the sync's own client of that CRM does
    /// (its extra root CA, its timeouts), with redirects and proxies always off.
    pub fn with_transports(
        bases: CrmBaseUrls,
        credentials: Arc<dyn CredentialProvider>,
        allowances: CrmAllowances,
        salesforce: &TransportOptions,
        hubspot: &TransportOptions,
    ) -> Result<Self, GatewayError> {
        let client = |opts: &TransportOptions| {
            http_client_builder(opts)
                .map_err(|e| GatewayError::Transport(e.to_string()))?
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .map_err(|e| GatewayError::Transport(e.to_string()))
        };
        Ok(Self {
            salesforce_client: client(salesforce)?,
            hubspot_client: client(hubspot)?,
            bases,
            credentials,
            allowances,
        })
    }

    fn client_for(&self, target: CrmTarget) -> &reqwest::Client {
        match target {
            CrmTarget::Salesforce => &self.salesforce_client,
            CrmTarget::Hubspot => &self.hubspot_client,
        }
    }

    /// The URL a request goes to (checked).
    pub fn url_for(&self, req: &GuestRequest) -> Result<Url, GatewayError> {
        let base = match req.target {
            CrmTarget::Salesforce => self.bases.salesforce.as_ref(),
            CrmTarget::Hubspot => self.bases.hubspot.as_ref(),
        }
        .ok_or(EgressDenied::NotConnected(req.target.as_str()))?;
        Ok(egress::join(base, &req.path, &req.query)?)
    }
}

#[async_trait::async_trait]
impl CrmGateway for HttpGateway {
    async fn send(
        &self,
        req: &GuestRequest,
        budget: SendBudget,
    ) -> Result<GuestResponse, GatewayError> {
        egress::check_request(
            &req.path,
            req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        let url = self.url_for(req)?;
        let allowance = self.allowances.of(req.target);
        let work = async {
            allowance.admit(req, budget.timeout).await?;
            let token = self.credentials.bearer_token(req.target).await?;
            let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
                .map_err(|e| GatewayError::Transport(e.to_string()))?;
            let mut builder = self
                .client_for(req.target)
                .request(method, url)
                .bearer_auth(token);
            for (k, v) in &req.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            if let Some(body) = &req.body {
                builder = builder
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let mut resp = builder
                .send()
                .await
                .map_err(|e| GatewayError::Transport(e.to_string()))?;
            let status = resp.status().as_u16();
            // Cookies never reach a plugin (a session cookie is a credential).
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "set-cookie" | "set-cookie2" | "www-authenticate"
                    )
                })
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            allowance.observe(req, status, &headers);
            if let Some(len) = resp.content_length()
                && len > budget.max_response_bytes
            {
                return Err(GatewayError::ResponseTooLarge {
                    allowed: budget.max_response_bytes,
                    read: len,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| GatewayError::Transport(e.to_string()))?
            {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > budget.max_response_bytes {
                    return Err(GatewayError::ResponseTooLarge {
                        allowed: budget.max_response_bytes,
                        read: body.len() as u64,
                    });
                }
            }
            Ok(GuestResponse {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(budget.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> GuestRequest {
        GuestRequest {
            target: CrmTarget::Hubspot,
            method: HttpMethod::Get,
            path: path.into(),
            query: vec![("email".into(), "a@x.com".into())],
            headers: vec![],
            body: None,
        }
    }

    fn budget() -> SendBudget {
        SendBudget {
            timeout: Duration::from_secs(5),
            max_response_bytes: 1000,
        }
    }

    #[tokio::test]
    async fn mock_answers_once_by_target_method_path_and_query_subset() {
        let mock = Mock {
            target: CrmTarget::Hubspot,
            method: HttpMethod::Get,
            path: "/crm/v3/owners".into(),
            query: Some(vec![("email".into(), "a@x.com".into())]),
            response: GuestResponse {
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
            },
            delay: None,
        };
        let gw = MockGateway::new(vec![mock]);
        assert!(matches!(
            gw.send(&req("/crm/v3/other"), budget()).await,
            Err(GatewayError::Unmocked(_))
        ));
        assert_eq!(
            gw.send(&req("/crm/v3/owners"), budget())
                .await
                .unwrap()
                .status,
            200
        );
        assert_eq!(gw.unused(), 0);
        assert!(matches!(
            gw.send(&req("/crm/v3/owners"), budget()).await,
            Err(GatewayError::Unmocked(_))
        ));
    }

    #[tokio::test]
    async fn read_only_gateway_passes_reads_and_refuses_every_other_method_unsent() {
        let owners = Mock {
            target: CrmTarget::Hubspot,
            method: HttpMethod::Get,
            path: "/crm/v3/owners".into(),
            query: None,
            response: GuestResponse {
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
            },
            delay: None,
        };
        let writes: Vec<Mock> = [
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ]
        .into_iter()
        .map(|method| Mock {
            method,
            ..owners.clone()
        })
        .collect();
        let gw = ReadOnlyGateway(MockGateway::new(
            std::iter::once(owners).chain(writes).collect(),
        ));
        assert_eq!(
            gw.send(&req("/crm/v3/owners"), budget())
                .await
                .unwrap()
                .status,
            200
        );
        for method in [
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ] {
            let write = GuestRequest {
                method,
                ..req("/crm/v3/owners")
            };
            match gw.send(&write, budget()).await {
                Err(GatewayError::Denied(EgressDenied::WriteInDryRun(m))) => {
                    assert_eq!(m, method.as_str())
                }
                other => panic!("{method:?} got {other:?}"),
            }
        }
        // The refused writes never reached the inner gateway: their mocks are all unused.
        assert_eq!(gw.0.unused(), 4);
    }

    #[tokio::test]
    async fn mock_refuses_bad_paths_before_matching() {
        let gw = MockGateway::new(vec![]);
        assert!(matches!(
            gw.send(&req("/../x"), budget()).await,
            Err(GatewayError::Denied(_))
        ));
    }

    #[tokio::test]
    async fn mock_response_is_bounded() {
        let mock = Mock {
            target: CrmTarget::Hubspot,
            method: HttpMethod::Get,
            path: "/big".into(),
            query: None,
            response: GuestResponse {
                status: 200,
                headers: vec![],
                body: vec![b'x'; 2000],
            },
            delay: None,
        };
        let gw = MockGateway::new(vec![mock]);
        let err = gw.send(&req("/big"), budget()).await.unwrap_err();
        assert_eq!(
            err,
            GatewayError::ResponseTooLarge {
                allowed: 1000,
                read: 2000
            }
        );
    }

    #[tokio::test]
    async fn http_gateway_refuses_unconnected_crm_and_never_sends() {
        let gw = HttpGateway::new(
            CrmBaseUrls::default(),
            Arc::new(StaticCredentials::default()),
            CrmAllowances::unmetered(),
        )
        .unwrap();
        let err = gw.send(&req("/crm/v3/owners"), budget()).await.unwrap_err();
        assert_eq!(
            err,
            GatewayError::Denied(EgressDenied::NotConnected("hubspot"))
        );
    }

    #[tokio::test]
    async fn http_gateway_adds_the_token_and_joins_the_base() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\nset-cookie: sid=secret\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let bases = CrmBaseUrls {
            salesforce: None,
            hubspot: Some(Url::parse(&format!("http://{addr}/hs")).unwrap()),
        };
        let creds = StaticCredentials {
            salesforce: None,
            hubspot: Some("sekret".into()),
        };
        let gw = HttpGateway::new(bases, Arc::new(creds), CrmAllowances::unmetered()).unwrap();
        let resp = gw.send(&req("/crm/v3/owners"), budget()).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
        assert!(resp.headers.contains(&("x-a".into(), "b".into())));
        assert!(
            resp.headers.iter().all(|(k, _)| k != "set-cookie"),
            "{:?}",
            resp.headers
        );
        let seen = server.await.unwrap();
        assert!(
            seen.starts_with("GET /hs/crm/v3/owners?email=a%40x.com HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(
            seen.to_ascii_lowercase()
                .contains("authorization: bearer sekret"),
            "{seen}"
        );
    }
}
