//! HubSpot's request limits for a private app: a rolling 10-second window
//! (190 requests by default), a separate per-second limit for the search
//! endpoints (5), and a daily limit (1,000,000), each configurable and each
//! switchable off. Answers the `X-HubSpot-RateLimit-*` headers and the
//! documented 429 body. Must never sleep or block: a request over a limit is
//! refused at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::HeaderMap;
use http::header::HeaderValue;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::control::Faults;

/// The limits in force. `None` switches a limit off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Requests per rolling interval (HubSpot Professional/Enterprise: 190 per 10 s).
    pub ten_secondly: Option<u64>,
    /// The rolling interval in milliseconds (10,000).
    pub interval_ms: u64,
    /// Search requests per second (HubSpot: 5).
    pub search_per_second: Option<u64>,
    /// Requests per day (UTC day here; HubSpot uses the portal's time zone).
    pub daily: Option<u64>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            ten_secondly: Some(190),
            interval_ms: 10_000,
            search_per_second: Some(5),
            daily: Some(1_000_000),
        }
    }
}

impl RateLimitSettings {
    /// Every limit off (for benchmarks).
    pub fn unlimited() -> Self {
        RateLimitSettings {
            ten_secondly: None,
            interval_ms: 10_000,
            search_per_second: None,
            daily: None,
        }
    }
}

/// Where a request stands, for the response headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub max: Option<u64>,
    pub remaining: u64,
    pub interval_ms: u64,
    pub daily: Option<u64>,
    pub daily_remaining: u64,
    /// Search responses carry no rate-limit headers.
    pub search: bool,
}

impl Standing {
    /// Adds the `X-HubSpot-RateLimit-*` headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        if self.search {
            return;
        }
        let mut put = |k: &'static str, v: u64| {
            headers.insert(k, HeaderValue::from(v));
        };
        if let Some(max) = self.max {
            put("x-hubspot-ratelimit-max", max);
            put("x-hubspot-ratelimit-remaining", self.remaining);
            put(
                "x-hubspot-ratelimit-interval-milliseconds",
                self.interval_ms,
            );
        }
        if let Some(daily) = self.daily {
            put("x-hubspot-ratelimit-daily", daily);
            put("x-hubspot-ratelimit-daily-remaining", self.daily_remaining);
        }
    }
}

struct State {
    settings: RateLimitSettings,
    window: VecDeque<Instant>,
    search: VecDeque<Instant>,
    day: i64,
    daily_used: u64,
    fault_generation: u64,
}

/// The limiter of one emulated portal.
pub struct RateLimiter {
    state: Mutex<State>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(RateLimitSettings::default())
    }
}

fn today() -> i64 {
    Utc::now().timestamp().div_euclid(86_400)
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State {
                settings,
                window: VecDeque::new(),
                search: VecDeque::new(),
                day: today(),
                daily_used: 0,
                fault_generation: 0,
            }),
        }
    }

    pub fn settings(&self) -> RateLimitSettings {
        self.state.lock().settings.clone()
    }

    /// Replaces the settings and starts every window afresh.
    pub fn set(&self, settings: RateLimitSettings) {
        let mut s = self.state.lock();
        s.settings = settings;
        s.window.clear();
        s.search.clear();
        s.daily_used = 0;
    }

    /// Counts one request, or refuses it with HubSpot's 429.
    /// A fault profile's `rate_limit` overrides the rolling window. The refusal is
    /// boxed: it is the rare path, and keeps the per-request `Ok` small.
    pub fn check(
        &self,
        is_search: bool,
        faults: &Faults,
    ) -> Result<Standing, Box<(ApiError, Standing)>> {
        let now = Instant::now();
        let override_limit = faults.rate_limit();
        let generation = faults.generation();
        let mut s = self.state.lock();
        if s.fault_generation != generation {
            s.fault_generation = generation;
            s.window.clear();
            s.search.clear();
        }
        let (max, interval_ms) = match &override_limit {
            Some(rl) => (
                Some(rl.max_requests),
                rl.window_secs
                    .map(|w| w.saturating_mul(1000))
                    .unwrap_or(10_000),
            ),
            None => (s.settings.ten_secondly, s.settings.interval_ms.max(1)),
        };
        let day = today();
        if s.day != day {
            s.day = day;
            s.daily_used = 0;
        }
        prune(&mut s.window, now, Duration::from_millis(interval_ms));
        prune(&mut s.search, now, Duration::from_secs(1));
        let daily = s.settings.daily;
        let standing = |s: &State| Standing {
            max,
            remaining: max
                .map(|m| m.saturating_sub(s.window.len() as u64))
                .unwrap_or(0),
            interval_ms,
            daily,
            daily_remaining: daily.map(|d| d.saturating_sub(s.daily_used)).unwrap_or(0),
            search: is_search,
        };
        if let Some(d) = daily
            && s.daily_used >= d
        {
            let err = ApiError::RateLimited {
                message: "You have reached your daily limit.".into(),
                policy: "DAILY",
            };
            return Err(Box::new((err, standing(&s))));
        }
        if is_search {
            if let Some(limit) = s.settings.search_per_second
                && s.search.len() as u64 >= limit
            {
                let err = ApiError::RateLimited {
                    message: "You have reached your secondly limit.".into(),
                    policy: "SECONDLY",
                };
                return Err(Box::new((err, standing(&s))));
            }
            s.search.push_back(now);
        } else {
            if let Some(m) = max
                && s.window.len() as u64 >= m
            {
                let err = ApiError::RateLimited {
                    message: "You have reached your ten_secondly_rolling limit.".into(),
                    policy: "TEN_SECONDLY_ROLLING",
                };
                return Err(Box::new((err, standing(&s))));
            }
            if max.is_some() {
                s.window.push_back(now);
            }
        }
        if daily.is_some() {
            s.daily_used += 1;
        }
        Ok(standing(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_window_refuses_over_limit() {
        let rl = RateLimiter::new(RateLimitSettings {
            ten_secondly: Some(3),
            ..Default::default()
        });
        let f = Faults::default();
        for expected in [2, 1, 0] {
            assert_eq!(rl.check(false, &f).unwrap().remaining, expected);
        }
        let (err, standing) = *rl.check(false, &f).unwrap_err();
        assert_eq!(standing.remaining, 0);
        assert!(matches!(
            err,
            ApiError::RateLimited {
                policy: "TEN_SECONDLY_ROLLING",
                ..
            }
        ));
        // searches have their own limit
        assert!(rl.check(true, &f).is_ok());
    }

    #[test]
    fn daily_and_search_limits_and_switching_off() {
        let rl = RateLimiter::new(RateLimitSettings {
            ten_secondly: None,
            search_per_second: Some(1),
            daily: Some(2),
            ..Default::default()
        });
        let f = Faults::default();
        assert!(rl.check(true, &f).is_ok());
        assert!(matches!(
            rl.check(true, &f).unwrap_err().0,
            ApiError::RateLimited {
                policy: "SECONDLY",
                ..
            }
        ));
        assert!(rl.check(false, &f).is_ok());
        assert!(matches!(
            rl.check(false, &f).unwrap_err().0,
            ApiError::RateLimited {
                policy: "DAILY",
                ..
            }
        ));
        rl.set(RateLimitSettings::unlimited());
        for _ in 0..1000 {
            assert!(rl.check(false, &f).is_ok());
        }
    }

    #[test]
    fn fault_profile_overrides_window() {
        let rl = RateLimiter::default();
        let f = Faults::default();
        f.set(crate::control::FaultProfile {
            rate_limit: Some(crate::control::RateLimit {
                max_requests: 1,
                window_secs: Some(60),
            }),
            ..Default::default()
        });
        let s = rl.check(false, &f).unwrap();
        assert_eq!((s.max, s.interval_ms), (Some(1), 60_000));
        assert!(rl.check(false, &f).is_err());
    }
}
