//! Per-client call counters: every HTTP call a CRM client makes is counted here by endpoint
//! kind (e.g. `sf.query`, `hs.batch.upsert`) and outcome (the HTTP status, or `timeout` /
//! `connect` / `transport`), with retries, throttle waits and token refreshes counted apart.
//!
//! The sync engine and the benchmarks read a [`MetricsSnapshot`]; every call also counts in
//! the process-wide Prometheus metrics ([`crate::telemetry`]). This module must never
//! record request contents (no ids, no values, no tokens): only counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The outcome of one HTTP call, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallOutcome {
    /// The server answered with this HTTP status.
    Status(u16),
    /// The request timed out.
    Timeout,
    /// No connection could be made.
    Connect,
    /// Another transport failure (TLS, broken connection, body read).
    Transport,
}

impl CallOutcome {
    fn label(self) -> String {
        match self {
            Self::Status(s) => s.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Connect => "connect".into(),
            Self::Transport => "transport".into(),
        }
    }
}

/// Counters for one client. Cheap to update from many tasks at once.
#[derive(Debug, Default)]
pub struct CrmMetrics {
    calls: Mutex<BTreeMap<(&'static str, CallOutcome), u64>>,
    retries: AtomicU64,
    throttle_waits: AtomicU64,
    token_refreshes: AtomicU64,
}

impl CrmMetrics {
    /// Counts one HTTP call of `endpoint` that ended with `outcome`.
    pub fn record_call(&self, endpoint: &'static str, outcome: CallOutcome) {
        crate::telemetry::crm_call(endpoint, outcome.label());
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry((endpoint, outcome)).or_default() += 1;
    }

    /// Counts one retry (after a 5xx, a timeout, a 429 or a session refresh).
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one wait imposed by a 429 answer.
    pub fn record_throttle(&self) {
        self.throttle_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one OAuth token request (initial login or refresh).
    pub fn record_token_refresh(&self) {
        self.token_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_endpoint: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((endpoint, outcome), n) in calls.iter() {
            *by_endpoint
                .entry((*endpoint).to_string())
                .or_default()
                .entry(outcome.label())
                .or_default() += n;
        }
        MetricsSnapshot {
            calls: by_endpoint,
            retries: self.retries.load(Ordering::Relaxed),
            throttle_waits: self.throttle_waits.load(Ordering::Relaxed),
            token_refreshes: self.token_refreshes.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one client's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Calls by endpoint kind, then by outcome label (`"200"`, `"429"`, `"timeout"`, ...).
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Waits imposed by a 429.
    pub throttle_waits: u64,
    /// OAuth token requests (login and refresh).
    pub token_refreshes: u64,
}

impl MetricsSnapshot {
    /// All HTTP calls made, whatever the outcome.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().flat_map(|m| m.values()).sum()
    }

    /// Calls of one endpoint kind, whatever the outcome.
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Calls of one endpoint kind that ended with this outcome label (e.g. `"503"`).
    pub fn calls_with(&self, endpoint: &str, outcome: &str) -> u64 {
        self.calls
            .get(endpoint)
            .and_then(|m| m.get(outcome))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_endpoint_and_outcome() {
        let m = CrmMetrics::default();
        m.record_call("sf.query", CallOutcome::Status(200));
        m.record_call("sf.query", CallOutcome::Status(200));
        m.record_call("sf.query", CallOutcome::Status(503));
        m.record_call("sf.token", CallOutcome::Timeout);
        m.record_retry();
        let s = m.snapshot();
        assert_eq!(s.total_calls(), 4);
        assert_eq!(s.calls_to("sf.query"), 3);
        assert_eq!(s.calls_with("sf.query", "200"), 2);
        assert_eq!(s.calls_with("sf.query", "503"), 1);
        assert_eq!(s.calls_with("sf.token", "timeout"), 1);
        assert_eq!(s.calls_to("hs.search"), 0);
        assert_eq!(s.retries, 1);
    }
}
