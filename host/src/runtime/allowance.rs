//! The tenant's CRM allowance applied to plugin egress: every request a plugin sends through
//! [`HttpGateway`](super::HttpGateway) first passes the same limits as the sync's own calls to
//! that CRM — the HubSpot app's rolling window, search rate and daily cap
//! ([`HubSpotGovernor`]), the Salesforce org's API budget ([`SalesforceClient::budget_check`]) —
//! and the CRM's answer feeds them back (rate-limit headers, 429 pauses, `Sforce-Limit-Info`).
//!
//! A plugin therefore shares its tenant's allowance instead of having one of its own: it can
//! never spend past the tenant's policy, and its calls leave the sync exactly that much less.
//! A request that would have to wait past the invocation's deadline is refused at once rather
//! than waited for. This module must never let a request through that the tenant's governor
//! or budget refuses.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::gateway::{CrmTarget, GuestRequest, HttpMethod};
use crate::crm::governor::{CallUse, HubSpotGovernor, HubSpotRateHeaders, RequestKind};
use crate::crm::hubspot::HubSpotClient;
use crate::crm::salesforce::SalesforceClient;
use crate::crm::salesforce::types::parse_limit_info;

/// The tenant's allowance for one CRM.
#[async_trait::async_trait]
pub trait CrmAllowance: Send + Sync {
    /// Takes the allowance for one request, waiting at most `within` for it.
    async fn admit(&self, req: &GuestRequest, within: Duration) -> Result<(), AllowanceRefused>;

    /// Learns from the CRM's answer (status and headers, names in lower case) to a request it
    /// admitted.
    fn observe(&self, req: &GuestRequest, status: u16, headers: &[(String, String)]);
}

/// Why the tenant's allowance refused a request (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tenant's {crm} allowance refused the request: {reason}")]
pub struct AllowanceRefused {
    /// `salesforce` or `hubspot`.
    pub crm: &'static str,
    /// What is spent, with its figures.
    pub reason: String,
}

/// The tenant's allowance for each of its CRMs.
#[derive(Clone)]
pub struct CrmAllowances {
    /// For the Salesforce org.
    pub salesforce: Arc<dyn CrmAllowance>,
    /// For the HubSpot portal.
    pub hubspot: Arc<dyn CrmAllowance>,
}

impl CrmAllowances {
    /// The allowances of the sync's own clients of the tenant: their governor and budget.
    pub fn of_clients(salesforce: &SalesforceClient, hubspot: &HubSpotClient) -> Self {
        Self {
            salesforce: Arc::new(salesforce.clone()),
            hubspot: Arc::new(hubspot.clone()),
        }
    }

    /// No allowance on either CRM (local runs against a test org, tests).
    pub fn unmetered() -> Self {
        Self {
            salesforce: Arc::new(Unmetered),
            hubspot: Arc::new(Unmetered),
        }
    }

    /// The allowance for `target`.
    pub fn of(&self, target: CrmTarget) -> &dyn CrmAllowance {
        match target {
            CrmTarget::Salesforce => &*self.salesforce,
            CrmTarget::Hubspot => &*self.hubspot,
        }
    }
}

/// No allowance of its own: only the per-invocation limits apply (local runs, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unmetered;

#[async_trait::async_trait]
impl CrmAllowance for Unmetered {
    async fn admit(&self, _req: &GuestRequest, _within: Duration) -> Result<(), AllowanceRefused> {
        Ok(())
    }

    fn observe(&self, _req: &GuestRequest, _status: u16, _headers: &[(String, String)]) {}
}

/// Which HubSpot limit a plugin request counts against: `POST .../search` is a search.
fn hubspot_kind(req: &GuestRequest) -> RequestKind {
    if req.method == HttpMethod::Post && req.path.trim_end_matches('/').ends_with("/search") {
        RequestKind::Search
    } else {
        RequestKind::Standard
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_u64(headers: &[(String, String)], name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}

/// The wait a 429 asks for (`Retry-After` in seconds; one second when absent).
fn retry_after(headers: &[(String, String)]) -> Duration {
    Duration::from_secs(header_u64(headers, "retry-after").unwrap_or(1))
}

#[async_trait::async_trait]
impl CrmAllowance for HubSpotGovernor {
    async fn admit(&self, req: &GuestRequest, within: Duration) -> Result<(), AllowanceRefused> {
        let kind = hubspot_kind(req);
        let until = tokio::time::Instant::now() + within;
        loop {
            let now = tokio::time::Instant::now();
            let today = Utc::now().date_naive();
            match self.try_acquire(kind, now, today) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(wait)) if now + wait <= until => tokio::time::sleep(wait).await,
                Ok(Err(wait)) => {
                    return Err(AllowanceRefused {
                        crm: CrmTarget::Hubspot.as_str(),
                        reason: format!(
                            "the {} rate window is full for the next {} ms, past the invocation's deadline",
                            match kind {
                                RequestKind::Search => "search",
                                RequestKind::Standard => "request",
                            },
                            wait.as_millis()
                        ),
                    });
                }
                Err(cap) => {
                    return Err(AllowanceRefused {
                        crm: CrmTarget::Hubspot.as_str(),
                        reason: cap.to_string(),
                    });
                }
            }
        }
    }

    fn observe(&self, req: &GuestRequest, status: u16, headers: &[(String, String)]) {
        let now = tokio::time::Instant::now();
        let rate = HubSpotRateHeaders {
            max: header_u64(headers, "x-hubspot-ratelimit-max"),
            remaining: header_u64(headers, "x-hubspot-ratelimit-remaining"),
            interval_ms: header_u64(headers, "x-hubspot-ratelimit-interval-milliseconds"),
            daily: header_u64(headers, "x-hubspot-ratelimit-daily"),
            daily_remaining: header_u64(headers, "x-hubspot-ratelimit-daily-remaining"),
        };
        HubSpotGovernor::observe(self, &rate, now);
        if status == 429 {
            self.pause(hubspot_kind(req), now, retry_after(headers));
        }
    }
}

/// The client's own governor: the sync's HubSpot calls and the plugin's share it.
#[async_trait::async_trait]
impl CrmAllowance for HubSpotClient {
    async fn admit(&self, req: &GuestRequest, within: Duration) -> Result<(), AllowanceRefused> {
        CrmAllowance::admit(self.governor(), req, within).await
    }

    fn observe(&self, req: &GuestRequest, status: u16, headers: &[(String, String)]) {
        CrmAllowance::observe(self.governor(), req, status, headers);
    }
}

/// The org's API budget as the sync's client knows it. A plugin call counts as first-attempt
/// sync work ([`CallUse::Normal`]): it may use the tenant's whole allocation, no more.
#[async_trait::async_trait]
impl CrmAllowance for SalesforceClient {
    async fn admit(&self, _req: &GuestRequest, _within: Duration) -> Result<(), AllowanceRefused> {
        self.budget_check(CallUse::Normal)
            .map_err(|e| AllowanceRefused {
                crm: CrmTarget::Salesforce.as_str(),
                reason: e.to_string(),
            })
    }

    fn observe(&self, _req: &GuestRequest, _status: u16, headers: &[(String, String)]) {
        if let Some(usage) = header(headers, "sforce-limit-info").and_then(parse_limit_info) {
            self.observe_api_usage(usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::governor::HubSpotLimits;

    fn req(method: HttpMethod, path: &str) -> GuestRequest {
        GuestRequest {
            target: CrmTarget::Hubspot,
            method,
            path: path.into(),
            query: vec![],
            headers: vec![],
            body: None,
        }
    }

    #[test]
    fn only_post_search_counts_as_search() {
        assert_eq!(
            hubspot_kind(&req(HttpMethod::Post, "/crm/v3/objects/deals/search")),
            RequestKind::Search
        );
        assert_eq!(
            hubspot_kind(&req(HttpMethod::Get, "/crm/v3/objects/deals/search")),
            RequestKind::Standard
        );
        assert_eq!(
            hubspot_kind(&req(HttpMethod::Post, "/crm/v3/objects/deals")),
            RequestKind::Standard
        );
    }

    #[tokio::test]
    async fn a_full_window_past_the_deadline_is_refused_without_waiting() {
        let governor = HubSpotGovernor::new(&HubSpotLimits {
            requests_per_interval: 1,
            interval: Duration::from_secs(3600),
            search_per_second: 1,
            daily_cap: None,
        });
        let r = req(HttpMethod::Get, "/crm/v3/owners");
        CrmAllowance::admit(&governor, &r, Duration::from_millis(10))
            .await
            .unwrap();
        let refused = CrmAllowance::admit(&governor, &r, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(refused.crm, "hubspot");
        assert!(refused.reason.contains("rate window is full"), "{refused}");
    }

    #[tokio::test]
    async fn a_429_pauses_the_shared_governor() {
        let governor = HubSpotGovernor::new(&HubSpotLimits::default());
        let r = req(HttpMethod::Get, "/crm/v3/owners");
        let headers = [("retry-after".to_string(), "600".to_string())];
        CrmAllowance::observe(&governor, &r, 429, &headers);
        let refused = CrmAllowance::admit(&governor, &r, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.reason.contains("rate window is full"), "{refused}");
    }
}
