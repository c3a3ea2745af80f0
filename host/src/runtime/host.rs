//! The invocation state (the data of a wasmtime `Store`) and the host side of
//! the contract's imports: `crm`, `log`, `config`.
//!
//! Each import is a capability with its own limit: `crm` goes through
//! `egress` and the tenant's [`CrmGateway`], counted and bounded by the
//! deadline; `log` is capped; `config` is read-only. This module must never
//! hand a plugin anything it did not ask for through the contract, and never
//! let a host call outlive the invocation's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::bindings::dealbridge::rules::{config, crm, flat_types, log, types};
use super::bindings::{WitLevel, WitMethod, WitRequest, WitRequestError, WitResponse};
use super::egress;
use super::gateway::{CrmGateway, CrmTarget, GatewayError, GuestRequest, HttpMethod, SendBudget};
use super::limits::{LimitHit, LimitKind, LimitTrap, Limiter, Limits};
use super::report::{HttpTraceEntry, LogLevel, LogLine, RunReport, TraceOutcome};
use super::wasi::LazyWasi;

/// The data of one invocation's store.
pub(crate) struct State {
    pub(crate) wasi: LazyWasi,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) limits: Limits,
    pub(crate) config_json: Arc<str>,
    pub(crate) gateway: Arc<dyn CrmGateway>,
    pub(crate) deadline: Instant,
    pub(crate) report: RunReport,
    log_bytes: u64,
    requests: u32,
    response_bytes: u64,
}

impl State {
    pub(crate) fn new(
        limits: Limits,
        config_json: Arc<str>,
        gateway: Arc<dyn CrmGateway>,
        deadline: Instant,
    ) -> Self {
        Self {
            wasi: LazyWasi::new(limits.stdio_bytes),
            table: ResourceTable::new(),
            limiter: Limiter::new(&limits),
            report: RunReport {
                fuel_limit: limits.fuel,
                ..RunReport::default()
            },
            limits,
            config_json,
            gateway,
            deadline,
            log_bytes: 0,
            requests: 0,
            response_bytes: 0,
        }
    }

    /// Records (or raises the figure of) a limit reached without ending the invocation.
    fn soft_limit(&mut self, limit: LimitKind, limit_value: u64, reached: u64) {
        match self.report.limits_hit.iter_mut().find(|h| h.limit == limit) {
            Some(hit) => hit.reached = hit.reached.max(reached),
            None => self.report.limits_hit.push(LimitHit {
                limit,
                limit_value,
                reached,
            }),
        }
    }

    /// Moves the captured stdio into the report.
    pub(crate) fn finish_stdio(&mut self) {
        let ((out, out_dropped), (err, err_dropped)) = self.wasi.stdio();
        self.report.stdout = out;
        self.report.stderr = err;
        self.report.stdio_dropped_bytes = out_dropped + err_dropped;
        if out_dropped + err_dropped > 0 {
            let reached = (self.report.stdout.len() + self.report.stderr.len()) as u64
                + out_dropped
                + err_dropped;
            self.soft_limit(LimitKind::StdioBytes, self.limits.stdio_bytes, reached);
        }
    }

    fn deadline_trap(&self) -> wasmtime::Error {
        wasmtime::Error::new(LimitTrap(LimitHit {
            limit: LimitKind::Deadline,
            limit_value: self.limits.deadline_ms,
            reached: self.limits.deadline_ms
                + self
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
        }))
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.ctx(),
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl flat_types::Host for State {}

impl config::Host for State {
    fn get(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }
}

impl log::Host for State {
    fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        let len = message.len() as u64;
        if self.log_bytes + len > self.limits.log_bytes {
            self.report.log_dropped_bytes += len;
            self.report.log_dropped_lines += 1;
            let reached = self.log_bytes + self.report.log_dropped_bytes;
            self.soft_limit(LimitKind::LogBytes, self.limits.log_bytes, reached);
            return Ok(());
        }
        self.log_bytes += len;
        let level = match level {
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        };
        self.report.logs.push(LogLine { level, message });
        Ok(())
    }
}

fn method(m: WitMethod) -> HttpMethod {
    match m {
        WitMethod::Get => HttpMethod::Get,
        WitMethod::Post => HttpMethod::Post,
        WitMethod::Put => HttpMethod::Put,
        WitMethod::Patch => HttpMethod::Patch,
        WitMethod::Delete => HttpMethod::Delete,
    }
}

fn target(c: types::Crm) -> CrmTarget {
    match c {
        types::Crm::Salesforce => CrmTarget::Salesforce,
        types::Crm::Hubspot => CrmTarget::Hubspot,
    }
}

/// The path as it goes into the report: control characters escaped, bounded.
fn printable_path(path: &str) -> String {
    let mut s: String = path
        .chars()
        .take(300)
        .flat_map(char::escape_debug)
        .collect();
    if path.chars().count() > 300 {
        s.push('…');
    }
    s
}

impl crm::Host for State {
    async fn send(
        &mut self,
        req: WitRequest,
    ) -> wasmtime::Result<Result<WitResponse, WitRequestError>> {
        let started = Instant::now();
        let request = GuestRequest {
            target: target(req.target),
            method: method(req.method),
            path: req.path,
            query: req.query,
            headers: req.headers,
            body: req.body,
        };
        let mut entry = HttpTraceEntry {
            target: request.target,
            method: request.method.as_str().to_string(),
            path: printable_path(&request.path),
            status: None,
            request_bytes: request.body.as_ref().map_or(0, |b| b.len() as u64),
            response_bytes: 0,
            ms: 0.0,
            outcome: TraceOutcome::Denied,
            detail: None,
        };
        let finish =
            |state: &mut State, mut entry: HttpTraceEntry, outcome, detail: Option<String>| {
                entry.outcome = outcome;
                entry.detail = detail;
                entry.ms = started.elapsed().as_secs_f64() * 1000.0;
                state.report.http.push(entry);
            };

        // 1. Refuse what may not leave, before counting or sending.
        if let Err(denied) = egress::check_request(
            &request.path,
            request.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            request
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ) {
            let text = denied.to_string();
            finish(self, entry, TraceOutcome::Denied, Some(text.clone()));
            return Ok(Err(WitRequestError::Denied(text)));
        }

        // 2. Per-invocation limits.
        if self.requests >= self.limits.outbound_requests {
            let hit = LimitHit {
                limit: LimitKind::OutboundRequests,
                limit_value: self.limits.outbound_requests as u64,
                reached: self.requests as u64 + 1,
            };
            self.requests += 1;
            self.soft_limit(hit.limit, hit.limit_value, hit.reached);
            finish(self, entry, TraceOutcome::Limit, Some(hit.to_string()));
            return Ok(Err(WitRequestError::LimitExceeded(hit.to_string())));
        }
        self.requests += 1;
        let left = self
            .limits
            .response_bytes
            .saturating_sub(self.response_bytes);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining == Duration::ZERO {
            finish(self, entry, TraceOutcome::Timeout, None);
            return Err(self.deadline_trap());
        }

        // 3. Send, bounded by the deadline (the gateway gets the time left,
        //    and the whole call is also under the invocation's timeout).
        let budget = SendBudget {
            timeout: remaining,
            max_response_bytes: left,
        };
        let gateway = self.gateway.clone();
        let sent = match tokio::time::timeout(remaining, gateway.send(&request, budget)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::Timeout),
        };
        match sent {
            Ok(resp) => {
                self.response_bytes += resp.body.len() as u64;
                entry.status = Some(resp.status);
                entry.response_bytes = resp.body.len() as u64;
                finish(self, entry, TraceOutcome::Ok, None);
                Ok(Ok(WitResponse {
                    status: resp.status,
                    headers: resp.headers,
                    body: resp.body,
                }))
            }
            Err(GatewayError::Timeout) => {
                finish(self, entry, TraceOutcome::Timeout, None);
                Err(self.deadline_trap())
            }
            Err(GatewayError::ResponseTooLarge { allowed: _, read }) => {
                let hit = LimitHit {
                    limit: LimitKind::ResponseBytes,
                    limit_value: self.limits.response_bytes,
                    reached: self.response_bytes + read,
                };
                self.soft_limit(hit.limit, hit.limit_value, hit.reached);
                finish(self, entry, TraceOutcome::Limit, Some(hit.to_string()));
                Ok(Err(WitRequestError::LimitExceeded(hit.to_string())))
            }
            Err(GatewayError::Allowance(refused)) => {
                let text = refused.to_string();
                finish(self, entry, TraceOutcome::Limit, Some(text.clone()));
                Ok(Err(WitRequestError::LimitExceeded(text)))
            }
            Err(GatewayError::Denied(d)) => {
                let text = d.to_string();
                finish(self, entry, TraceOutcome::Denied, Some(text.clone()));
                Ok(Err(WitRequestError::Denied(text)))
            }
            Err(e @ GatewayError::Unmocked(_)) => {
                let text = e.to_string();
                finish(self, entry, TraceOutcome::Unmocked, Some(text.clone()));
                Ok(Err(WitRequestError::Denied(text)))
            }
            Err(e @ (GatewayError::Transport(_) | GatewayError::Credential(_))) => {
                let text = e.to_string();
                finish(self, entry, TraceOutcome::Transport, Some(text.clone()));
                Ok(Err(WitRequestError::Transport(text)))
            }
        }
    }
}
