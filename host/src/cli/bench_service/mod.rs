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

use serde::{Deserialize, Serialize};

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

/// This process's resident set size (`VmRSS`) in KiB; `None` off Linux.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
