//! The run report of one invocation: fuel, memory, time, the HTTP trace, logs
//! and captured stdio. It is what `dealbridge plugin run` prints and what the
//! service stores with every plan.
//!
//! A report must never hold a credential or a CRM response body.

use serde::{Deserialize, Serialize};

use super::gateway::CrmTarget;
use super::limits::LimitHit;

/// Everything measured about one invocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The export that ran: `rules.describe`, `rules.condition`, `rules.plan`,
    /// `flat-rules.condition` or `flat-rules.plan` (empty in reports stored
    /// before it was recorded).
    #[serde(default)]
    pub export: String,
    /// Fuel consumed (about one unit per instruction).
    pub fuel_used: u64,
    /// The fuel limit of the invocation.
    pub fuel_limit: u64,
    /// The highest total of linear memory, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time of the whole invocation (instantiation, call and host calls), in microseconds.
    pub wall_time_us: u64,
    /// Canonical-ABI size of the input, in bytes.
    pub input_bytes: u64,
    /// Canonical-ABI size of the output, in bytes (0 when there is none).
    pub output_bytes: u64,
    /// One entry per CRM request the plugin made, in order.
    pub http: Vec<HttpTraceEntry>,
    /// The plugin's log lines that fit in the cap.
    pub logs: Vec<LogLine>,
    /// Bytes of log messages dropped past the cap.
    pub log_dropped_bytes: u64,
    /// Log lines dropped past the cap.
    pub log_dropped_lines: u64,
    /// Captured stdout (up to the cap).
    pub stdout: String,
    /// Captured stderr (up to the cap; a Rust guest's panic message lands here).
    pub stderr: String,
    /// Bytes of stdout and stderr dropped past the cap.
    pub stdio_dropped_bytes: u64,
    /// Limits that were reached without ending the invocation (log cap,
    /// refused CRM requests). A limit that ends it is the invocation's error.
    pub limits_hit: Vec<LimitHit>,
}

/// The level of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Fine detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something to look at.
    Warn,
    /// Something went wrong.
    Error,
}

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its level.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// How a CRM request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceOutcome {
    /// A response came back (any status).
    Ok,
    /// Refused before it left (path, header, unconnected CRM).
    Denied,
    /// No fixture mock answered it.
    Unmocked,
    /// Refused by a per-invocation limit.
    Limit,
    /// The deadline passed in flight.
    Timeout,
    /// Connection, TLS, DNS or credential failure.
    Transport,
}

/// One CRM request in the run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpTraceEntry {
    /// Which CRM.
    pub target: CrmTarget,
    /// The method.
    pub method: String,
    /// The path as the plugin gave it (control characters escaped).
    pub path: String,
    /// The status, when a response came back.
    pub status: Option<u16>,
    /// Bytes of the request body.
    pub request_bytes: u64,
    /// Bytes of the response body.
    pub response_bytes: u64,
    /// Time spent, in milliseconds.
    pub ms: f64,
    /// How it ended.
    pub outcome: TraceOutcome,
    /// Why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
