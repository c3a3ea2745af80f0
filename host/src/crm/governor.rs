//! Rate governors and budgets: how fast and how much the clients may call the CRMs.
//!
//! - [`RollingWindow`]: at most `max` calls in any rolling `interval` (HubSpot's
//!   `TEN_SECONDLY_ROLLING` window and its search rate), with 429 pauses and corrections from
//!   the `X-HubSpot-RateLimit-*` headers. A sliding log rather than a refilling bucket: a
//!   bucket of capacity C refilled at C per interval lets 2C through in one rolling interval,
//!   which is exactly what earns a 429.
//! - [`DailyCap`]: calls per UTC day.
//! - [`HubSpotGovernor`]: the async gate every HubSpot request passes.
//! - [`SalesforceBudget`]: the tenant's share of the org's daily API allowance, read from
//!   `Sforce-Limit-Info`; retries stop at 75% of it.
//! - [`Backoff`]: jittered exponential delays for 5xx and timeouts.
//!
//! Everything here takes the time as an argument (`tokio::time::Instant`, a UTC date, a
//! jitter value), so the logic is deterministic and tested without sleeping; the async
//! wrapper sleeps with tokio's clock, which tests pause. This module must never sleep with
//! the std clock and never make an HTTP call.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::time::Instant;

/// Jittered exponential backoff: the n-th retry waits between half and all of
/// `min(max, base * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// The largest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (0 for the first retry); `jitter` in `[0, 1]`
    /// picks a point between half and all of the exponential ceiling.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        ceiling / 2 + ceiling.mul_f64(jitter) / 2
    }

    /// [`Backoff::delay`] with a random jitter.
    pub fn random_delay(&self, retry: u32) -> Duration {
        self.delay(retry, rand::random::<f64>())
    }
}

/// At most `max` calls in any rolling `interval`, kept as a log of call times.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    max: u32,
    interval: Duration,
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl RollingWindow {
    /// A window allowing `max` calls per `interval` (`max` is at least 1).
    pub fn new(max: u32, interval: Duration) -> Self {
        Self {
            max: max.max(1),
            interval,
            sent: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Calls allowed per interval.
    pub fn max(&self) -> u32 {
        self.max
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&t) = self.sent.front() {
            if t + self.interval <= now {
                self.sent.pop_front();
            } else {
                break;
            }
        }
    }

    /// How long a caller must wait before the next call may go (zero: now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.expire(now);
        let pause = self
            .paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
            .unwrap_or_default();
        let window = if (self.sent.len() as u32) < self.max {
            Duration::ZERO
        } else {
            // Full: the oldest call in the window must leave it first.
            let oldest = self.sent[self.sent.len() - self.max as usize];
            (oldest + self.interval).saturating_duration_since(now)
        };
        pause.max(window)
    }

    /// Records a call sent at `now`.
    pub fn record(&mut self, now: Instant) {
        self.expire(now);
        self.sent.push_back(now);
        while self.sent.len() > self.max as usize {
            self.sent.pop_front();
        }
    }

    /// Takes a call slot if one is free now; otherwise says how long to wait.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let wait = self.wait_time(now);
        if wait.is_zero() {
            self.record(now);
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// No call may go before `until` (after a 429).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Aligns the window with the server's view: its `max`/`interval` if it says so, and
    /// no more free slots than it reports `remaining` (another client may share the app).
    pub fn observe(
        &mut self,
        now: Instant,
        remaining: Option<u64>,
        max: Option<u64>,
        interval: Option<Duration>,
    ) {
        if let Some(max) = max.filter(|m| *m > 0) {
            self.max = u32::try_from(max).unwrap_or(u32::MAX);
        }
        if let Some(interval) = interval.filter(|i| !i.is_zero()) {
            self.interval = interval;
        }
        self.expire(now);
        if let Some(remaining) = remaining {
            let free_locally = u64::from(self.max).saturating_sub(self.sent.len() as u64);
            let mut missing = free_locally.saturating_sub(remaining);
            while missing > 0 {
                self.sent.push_back(now);
                missing -= 1;
            }
        }
    }
}

/// The daily cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("daily API cap reached: {used} of {cap} calls used today")]
pub struct DailyCapReached {
    /// Calls counted today.
    pub used: u64,
    /// The cap.
    pub cap: u64,
}

/// Calls per (UTC) day; no cap when `cap` is `None`.
#[derive(Debug, Clone)]
pub struct DailyCap {
    cap: Option<u64>,
    used: u64,
    day: Option<NaiveDate>,
}

impl DailyCap {
    /// A cap of `cap` calls a day (`None`: unlimited).
    pub fn new(cap: Option<u64>) -> Self {
        Self {
            cap,
            used: 0,
            day: None,
        }
    }

    fn roll(&mut self, today: NaiveDate) {
        if self.day != Some(today) {
            self.day = Some(today);
            self.used = 0;
        }
    }

    /// Takes one call of today's allowance.
    pub fn try_acquire(&mut self, today: NaiveDate) -> Result<(), DailyCapReached> {
        self.roll(today);
        if let Some(cap) = self.cap
            && self.used >= cap
        {
            return Err(DailyCapReached {
                used: self.used,
                cap,
            });
        }
        self.used += 1;
        Ok(())
    }

    /// Aligns with the server's daily counters (`X-HubSpot-RateLimit-Daily[-Remaining]`).
    pub fn observe(&mut self, today: NaiveDate, daily_max: Option<u64>, remaining: Option<u64>) {
        self.roll(today);
        if let Some(max) = daily_max {
            self.cap = Some(self.cap.map_or(max, |c| c.min(max)));
        }
        if let (Some(max), Some(remaining)) = (daily_max, remaining) {
            self.used = self.used.max(max.saturating_sub(remaining));
        }
    }

    /// Calls counted today.
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// HubSpot's limits for one private app.
#[derive(Debug, Clone)]
pub struct HubSpotLimits {
    /// Requests per rolling interval (190 for Professional/Enterprise, 100 for free/starter).
    pub requests_per_interval: u32,
    /// The rolling interval (10 s).
    pub interval: Duration,
    /// Search requests per second (HubSpot documents 4–5; default 4).
    pub search_per_second: u32,
    /// Calls per day (650,000 Professional, 1,000,000 Enterprise); `None`: only what the
    /// `X-HubSpot-RateLimit-Daily` header says.
    pub daily_cap: Option<u64>,
}

impl Default for HubSpotLimits {
    fn default() -> Self {
        Self {
            requests_per_interval: 190,
            interval: Duration::from_secs(10),
            search_per_second: 4,
            daily_cap: None,
        }
    }
}

/// Which HubSpot limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Every request but search.
    Standard,
    /// `POST .../search`: the search rate as well as the standard window.
    Search,
}

/// The rate-limit headers of one HubSpot response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubSpotRateHeaders {
    /// `X-HubSpot-RateLimit-Max`.
    pub max: Option<u64>,
    /// `X-HubSpot-RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds`.
    pub interval_ms: Option<u64>,
    /// `X-HubSpot-RateLimit-Daily`.
    pub daily: Option<u64>,
    /// `X-HubSpot-RateLimit-Daily-Remaining`.
    pub daily_remaining: Option<u64>,
}

impl HubSpotRateHeaders {
    /// Reads the headers (absent or unparsable ones are `None`).
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Self {
            max: get("x-hubspot-ratelimit-max"),
            remaining: get("x-hubspot-ratelimit-remaining"),
            interval_ms: get("x-hubspot-ratelimit-interval-milliseconds"),
            daily: get("x-hubspot-ratelimit-daily"),
            daily_remaining: get("x-hubspot-ratelimit-daily-remaining"),
        }
    }
}

#[derive(Debug)]
struct HubSpotState {
    window: RollingWindow,
    search: RollingWindow,
    daily: DailyCap,
}

/// The gate every HubSpot request passes: the rolling window, the search rate and the
/// daily cap, corrected by the server's headers and paused by 429s.
#[derive(Debug)]
pub struct HubSpotGovernor {
    state: Mutex<HubSpotState>,
}

fn utc_today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

impl HubSpotGovernor {
    /// A governor for these limits.
    pub fn new(limits: &HubSpotLimits) -> Self {
        Self {
            state: Mutex::new(HubSpotState {
                window: RollingWindow::new(limits.requests_per_interval, limits.interval),
                search: RollingWindow::new(limits.search_per_second, Duration::from_secs(1)),
                daily: DailyCap::new(limits.daily_cap),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubSpotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for one request now, or says how long to wait; fails at once when the
    /// daily cap is reached (waiting for tomorrow is the caller's decision).
    pub fn try_acquire(
        &self,
        kind: RequestKind,
        now: Instant,
        today: NaiveDate,
    ) -> Result<Result<(), Duration>, DailyCapReached> {
        let mut s = self.lock();
        let mut wait = s.window.wait_time(now);
        if kind == RequestKind::Search {
            wait = wait.max(s.search.wait_time(now));
        }
        if !wait.is_zero() {
            return Ok(Err(wait));
        }
        s.daily.try_acquire(today)?;
        s.window.record(now);
        if kind == RequestKind::Search {
            s.search.record(now);
        }
        Ok(Ok(()))
    }

    /// Waits (on tokio's clock) until a request of `kind` may go, and takes its slot.
    pub async fn acquire(&self, kind: RequestKind) -> Result<(), DailyCapReached> {
        loop {
            match self.try_acquire(kind, Instant::now(), utc_today())? {
                Ok(()) => return Ok(()),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Applies a response's rate-limit headers.
    pub fn observe(&self, headers: &HubSpotRateHeaders, now: Instant) {
        self.observe_on(headers, now, utc_today());
    }

    /// [`HubSpotGovernor::observe`] with an explicit date.
    pub fn observe_on(&self, headers: &HubSpotRateHeaders, now: Instant, today: NaiveDate) {
        let mut s = self.lock();
        s.window.observe(
            now,
            headers.remaining,
            headers.max,
            headers.interval_ms.map(Duration::from_millis),
        );
        s.daily
            .observe(today, headers.daily, headers.daily_remaining);
    }

    /// After a 429: no request of `kind` goes before `now + wait`. A search 429 pauses
    /// searches only; any other pauses everything.
    pub fn pause(&self, kind: RequestKind, now: Instant, wait: Duration) {
        let mut s = self.lock();
        match kind {
            RequestKind::Search => s.search.pause_until(now + wait),
            RequestKind::Standard => s.window.pause_until(now + wait),
        }
    }

    /// Calls counted against today's cap.
    pub fn daily_used(&self) -> u64 {
        self.lock().daily.used()
    }
}

/// A Salesforce org's API usage, from `Sforce-Limit-Info: api-usage=USED/LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls used in the rolling 24 hours.
    pub used: u64,
    /// The org's daily allowance.
    pub limit: u64,
}

/// How much of the org's daily API allowance the tenant lets the sync use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allocation {
    /// No budget of our own (Salesforce's own limit still applies).
    Unlimited,
    /// The sync stops once the org's usage reaches this many calls.
    Calls(u64),
    /// The sync stops once the org's usage reaches this fraction (0–1) of its limit.
    FractionOfOrgLimit(f64),
}

/// The Salesforce budget's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// The tenant's allocation.
    pub allocation: Allocation,
    /// Background work (retries) stops at this fraction of the allocation (0.75).
    pub retry_stop_fraction: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            allocation: Allocation::Unlimited,
            retry_stop_fraction: 0.75,
        }
    }
}

/// What a call is for, which decides how much of the budget it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallUse {
    /// First attempts of sync work: up to the whole allocation.
    Normal,
    /// Retries and other background work: up to `retry_stop_fraction` of the allocation.
    Retry,
}

/// The Salesforce budget does not allow this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "Salesforce API budget: org usage {used} reached the {threshold}-call threshold for {call_use:?} calls (allocation {allocation})"
)]
pub struct BudgetExceeded {
    /// The org's usage last reported.
    pub used: u64,
    /// The threshold that applies to this kind of call.
    pub threshold: u64,
    /// The tenant's allocation in calls.
    pub allocation: u64,
    /// The kind of call refused.
    pub call_use: CallUse,
}

/// The tenant's Salesforce budget, fed by `Sforce-Limit-Info`.
#[derive(Debug, Clone)]
pub struct SalesforceBudget {
    config: BudgetConfig,
    usage: Option<ApiUsage>,
}

impl SalesforceBudget {
    /// A budget with this configuration and no usage known yet.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            usage: None,
        }
    }

    /// Records the usage a response reported.
    pub fn observe(&mut self, usage: ApiUsage) {
        self.usage = Some(usage);
    }

    /// The usage last reported.
    pub fn usage(&self) -> Option<ApiUsage> {
        self.usage
    }

    /// The allocation in calls, once known (a fraction needs the org's limit first).
    pub fn allocation_calls(&self) -> Option<u64> {
        match self.config.allocation {
            Allocation::Unlimited => None,
            Allocation::Calls(n) => Some(n),
            Allocation::FractionOfOrgLimit(f) => self
                .usage
                .map(|u| (u.limit as f64 * f.clamp(0.0, 1.0)).floor() as u64),
        }
    }

    /// The org usage at which calls of this kind stop.
    pub fn threshold(&self, call_use: CallUse) -> Option<u64> {
        let allocation = self.allocation_calls()?;
        Some(match call_use {
            CallUse::Normal => allocation,
            CallUse::Retry => {
                (allocation as f64 * self.config.retry_stop_fraction.clamp(0.0, 1.0)).floor() as u64
            }
        })
    }

    /// Whether a call of this kind may go. Unknown usage (no response seen yet) allows it:
    /// the first response tells.
    pub fn check(&self, call_use: CallUse) -> Result<(), BudgetExceeded> {
        let (Some(usage), Some(threshold), Some(allocation)) = (
            self.usage,
            self.threshold(call_use),
            self.allocation_calls(),
        ) else {
            return Ok(());
        };
        if usage.used >= threshold {
            Err(BudgetExceeded {
                used: usage.used,
                threshold,
                allocation,
                call_use,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, d).unwrap()
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        // Capped at max, even for huge retry numbers.
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
        // Out-of-range jitter is clamped, NaN is the midpoint.
        assert_eq!(b.delay(0, 7.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, f64::NAN), Duration::from_millis(75));
        let r = b.random_delay(2);
        assert!(r >= Duration::from_millis(200) && r <= Duration::from_millis(400));
    }

    #[test]
    fn rolling_window_allows_max_then_waits_for_the_oldest_to_leave() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(3, Duration::from_secs(10));
        assert!(w.try_acquire(t0).is_ok());
        assert!(w.try_acquire(t0 + Duration::from_secs(1)).is_ok());
        assert!(w.try_acquire(t0 + Duration::from_secs(2)).is_ok());
        // The 4th call must wait until the first leaves the window at t0+10s.
        assert_eq!(
            w.try_acquire(t0 + Duration::from_secs(3)),
            Err(Duration::from_secs(7))
        );
        assert!(w.try_acquire(t0 + Duration::from_secs(10)).is_ok());
        // Now the window holds t0+1, t0+2, t0+10: next slot at t0+11.
        assert_eq!(
            w.wait_time(t0 + Duration::from_millis(10_500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn rolling_window_never_lets_more_than_max_through_in_any_interval() {
        // Simulate greedy callers for 60 s and check every rolling 10 s window.
        let t0 = Instant::now();
        let mut w = RollingWindow::new(19, Duration::from_secs(10));
        let mut now = t0;
        let mut sent = Vec::new();
        while now < t0 + Duration::from_secs(60) {
            match w.try_acquire(now) {
                Ok(()) => sent.push(now),
                Err(wait) => now += wait,
            }
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(10))
                .count();
            assert!(in_window <= 19, "{in_window} calls in one window");
        }
        // And it is not needlessly slow: 6 windows' worth went through.
        assert_eq!(sent.len(), 19 * 6);
    }

    #[test]
    fn pause_after_429_blocks_until_the_deadline() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(100, Duration::from_secs(10));
        w.pause_until(t0 + Duration::from_secs(2));
        assert_eq!(w.try_acquire(t0), Err(Duration::from_secs(2)));
        // A shorter pause does not shorten the longer one.
        w.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(
            w.wait_time(t0 + Duration::from_millis(500)),
            Duration::from_millis(1500)
        );
        assert!(w.try_acquire(t0 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn headers_shrink_free_slots_and_adopt_server_limits() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(190, Duration::from_secs(10));
        w.record(t0);
        // The server says only 2 remain (someone else shares the app) and the max is 100.
        w.observe(t0, Some(2), Some(100), Some(Duration::from_secs(10)));
        assert_eq!(w.max(), 100);
        assert!(w.try_acquire(t0).is_ok());
        assert!(w.try_acquire(t0).is_ok());
        assert_eq!(w.try_acquire(t0), Err(Duration::from_secs(10)));
        // A remaining larger than ours changes nothing.
        let mut w2 = RollingWindow::new(5, Duration::from_secs(10));
        w2.observe(t0, Some(50), None, None);
        assert_eq!(w2.wait_time(t0), Duration::ZERO);
    }

    #[test]
    fn daily_cap_counts_per_day_and_follows_headers() {
        let mut cap = DailyCap::new(Some(2));
        assert!(cap.try_acquire(day(1)).is_ok());
        assert!(cap.try_acquire(day(1)).is_ok());
        assert_eq!(
            cap.try_acquire(day(1)),
            Err(DailyCapReached { used: 2, cap: 2 })
        );
        // A new day resets.
        assert!(cap.try_acquire(day(2)).is_ok());
        // Headers: daily 1000 with 3 remaining means 997 used; our cap stays the lower 2.
        let mut cap = DailyCap::new(None);
        cap.observe(day(3), Some(1000), Some(3));
        assert_eq!(cap.used(), 997);
        for _ in 0..3 {
            assert!(cap.try_acquire(day(3)).is_ok());
        }
        assert!(cap.try_acquire(day(3)).is_err());
    }

    #[test]
    fn governor_search_counts_against_both_limits() {
        let t0 = Instant::now();
        let g = HubSpotGovernor::new(&HubSpotLimits {
            requests_per_interval: 5,
            interval: Duration::from_secs(10),
            search_per_second: 2,
            daily_cap: Some(100),
        });
        let d = day(1);
        assert_eq!(g.try_acquire(RequestKind::Search, t0, d), Ok(Ok(())));
        assert_eq!(g.try_acquire(RequestKind::Search, t0, d), Ok(Ok(())));
        // The third search this second waits for the search rate...
        assert_eq!(
            g.try_acquire(RequestKind::Search, t0, d),
            Ok(Err(Duration::from_secs(1)))
        );
        // ...but a standard call may still go (3 of 5 in the window).
        assert_eq!(g.try_acquire(RequestKind::Standard, t0, d), Ok(Ok(())));
        assert_eq!(g.daily_used(), 3);
        // A 429 on search pauses searches only.
        g.pause(RequestKind::Search, t0, Duration::from_secs(5));
        assert_eq!(
            g.try_acquire(RequestKind::Search, t0 + Duration::from_secs(2), d),
            Ok(Err(Duration::from_secs(3)))
        );
        assert_eq!(
            g.try_acquire(RequestKind::Standard, t0 + Duration::from_secs(2), d),
            Ok(Ok(()))
        );
    }

    #[test]
    fn governor_daily_cap_fails_fast() {
        let t0 = Instant::now();
        let g = HubSpotGovernor::new(&HubSpotLimits {
            daily_cap: Some(1),
            ..HubSpotLimits::default()
        });
        assert_eq!(g.try_acquire(RequestKind::Standard, t0, day(1)), Ok(Ok(())));
        assert_eq!(
            g.try_acquire(RequestKind::Standard, t0, day(1)),
            Err(DailyCapReached { used: 1, cap: 1 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn governor_acquire_waits_on_tokios_clock() {
        let g = HubSpotGovernor::new(&HubSpotLimits {
            requests_per_interval: 10,
            interval: Duration::from_secs(10),
            search_per_second: 4,
            daily_cap: None,
        });
        let start = Instant::now();
        for _ in 0..10 {
            g.acquire(RequestKind::Standard).await.unwrap();
        }
        assert_eq!(Instant::now() - start, Duration::ZERO);
        // The 11th and later wait for the window to roll: 25 calls take 2 full windows.
        for _ in 0..15 {
            g.acquire(RequestKind::Standard).await.unwrap();
        }
        assert_eq!(Instant::now() - start, Duration::from_secs(20));
    }

    #[test]
    fn header_parsing_reads_hubspot_rate_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("X-HubSpot-RateLimit-Max", "190".parse().unwrap());
        h.insert("X-HubSpot-RateLimit-Remaining", "187".parse().unwrap());
        h.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".parse().unwrap(),
        );
        h.insert("X-HubSpot-RateLimit-Daily", "1000000".parse().unwrap());
        h.insert(
            "X-HubSpot-RateLimit-Daily-Remaining",
            "oops".parse().unwrap(),
        );
        let r = HubSpotRateHeaders::from_headers(&h);
        assert_eq!(r.max, Some(190));
        assert_eq!(r.remaining, Some(187));
        assert_eq!(r.interval_ms, Some(10_000));
        assert_eq!(r.daily, Some(1_000_000));
        assert_eq!(r.daily_remaining, None);
    }

    #[test]
    fn budget_stops_retries_at_75_percent_and_everything_at_the_allocation() {
        let mut b = SalesforceBudget::new(BudgetConfig {
            allocation: Allocation::Calls(1000),
            retry_stop_fraction: 0.75,
        });
        // Nothing known yet: allowed.
        assert!(b.check(CallUse::Retry).is_ok());
        b.observe(ApiUsage {
            used: 749,
            limit: 100_000,
        });
        assert!(b.check(CallUse::Retry).is_ok());
        b.observe(ApiUsage {
            used: 750,
            limit: 100_000,
        });
        let e = b.check(CallUse::Retry).unwrap_err();
        assert_eq!(e.threshold, 750);
        assert!(b.check(CallUse::Normal).is_ok());
        b.observe(ApiUsage {
            used: 1000,
            limit: 100_000,
        });
        assert_eq!(b.check(CallUse::Normal).unwrap_err().threshold, 1000);
    }

    #[test]
    fn budget_fraction_resolves_against_the_org_limit() {
        let mut b = SalesforceBudget::new(BudgetConfig {
            allocation: Allocation::FractionOfOrgLimit(0.5),
            retry_stop_fraction: 0.75,
        });
        assert_eq!(b.allocation_calls(), None);
        b.observe(ApiUsage {
            used: 30_000,
            limit: 100_000,
        });
        assert_eq!(b.allocation_calls(), Some(50_000));
        assert_eq!(b.threshold(CallUse::Retry), Some(37_500));
        assert!(b.check(CallUse::Retry).is_ok());
        b.observe(ApiUsage {
            used: 37_500,
            limit: 100_000,
        });
        assert!(b.check(CallUse::Retry).is_err());
        assert!(b.check(CallUse::Normal).is_ok());
        // Unlimited never refuses.
        let mut u = SalesforceBudget::new(BudgetConfig::default());
        u.observe(ApiUsage {
            used: 99_999,
            limit: 100_000,
        });
        assert!(u.check(CallUse::Retry).is_ok());
    }
}
