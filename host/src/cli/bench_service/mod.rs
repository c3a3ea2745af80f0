//! The service benchmarks, beside the sync benchmarks of [`super::bench`]:
//!
//! - [`tenants`] (`dealbridge bench tenants`): many tenants in one service process, each
//!   with its own plugin version; resident memory and activation time from the compiled
//!   cache.
//! - [`api`] (`dealbridge bench api`): the API's latency under load, from this process
//!   against `dealbridge serve` running as a child process on loopback.
//!
//! Both print their figures (or one JSON document with `--json`) and never fail because a
//! figure is high: the issue sets no numeric target for them. They only talk to
//! 127.0.0.1 and never print a token.

pub mod api;
pub mod tenants;

use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use api::ApiBenchArgs;
pub use tenants::TenantsBenchArgs;

/// A latency distribution (nearest-rank percentiles), in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest sample.
    pub max_ms: f64,
    /// The sum of all samples.
    pub total_ms: f64,
}

impl Latency {
    /// The distribution of `samples` (empty: all zero).
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rank = |p: f64| {
            let n = samples.len();
            let i = ((p / 100.0) * n as f64).ceil() as usize;
            ms(samples[i.clamp(1, n) - 1])
        };
        Latency {
            count: samples.len(),
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: ms(samples[samples.len() - 1]),
            total_ms: samples.iter().map(|d| ms(*d)).sum(),
        }
    }

    /// `p50 … ms, p99 … ms, max … ms`, for people.
    pub fn human(&self) -> String {
        format!(
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// This process's resident set, in KiB, from `/proc/self/status` (zero off Linux).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Resident {
    /// `VmRSS`: all resident pages.
    pub total_kib: u64,
    /// `RssAnon`: heap, stacks, instance memory.
    pub anon_kib: u64,
    /// `RssFile`: resident pages of mapped files (compiled artefacts are mapped from the
    /// compile cache).
    pub file_kib: u64,
}

impl Resident {
    /// Now.
    pub fn now() -> Resident {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Resident {
            total_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        }
    }

    /// `… MiB (anon … MiB, file … MiB)`, for people.
    pub fn human(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "{:.1} MiB (anon {:.1} MiB, file-backed {:.1} MiB)",
            mib(self.total_kib),
            mib(self.anon_kib),
            mib(self.file_kib)
        )
    }
}

/// A client of a benchmark's own service: every answer must be a 2xx (its JSON is
/// returned), anything else is an error naming the request.
struct ApiClient {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl ApiClient {
    /// `method base+path` with a bearer token and an optional body of a content type.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `method base+path` with a bearer token and a JSON body.
    async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        self.send(method, path, token, Some(("application/json", bytes)))
            .await
    }
}

/// A random secret in hex (tokens and keys of a benchmark's own service).
fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(vec![Duration::from_millis(7)]).p99_ms, 7.0);
        assert_eq!(Latency::of(Vec::new()).count, 0);
    }
}
