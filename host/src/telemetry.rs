//! Process-wide Prometheus metrics, served by `dealbridge serve` at `/metrics` in the
//! Prometheus text format (version 0.0.4), with the official client (`prometheus-client`).
//!
//! The parts that do the work report here at the point where the work completes, with one
//! call each:
//! - [`crm_call`]: every HTTP call a CRM client makes (from [`crate::crm::CrmMetrics`]),
//!   by CRM, endpoint kind and status;
//! - [`plugin_invocation`]: every plugin invocation (from the runtime), its outcome, fuel
//!   and wall time as histograms;
//! - [`run_finished`] and [`sync_error`]: every sync run the engine ends (status, trigger,
//!   duration, record counters) and every failure it records (by health group);
//! - [`http_request`]: every API request (route template, method, status, duration);
//! - [`webhook_delivery`]: every HubSpot webhook delivery the receiver answered (by
//!   outcome), with the events it stored and the app's own events it dropped.
//!
//! Metrics are per process (one series set per replica; sum them across replicas).
//! This module must never take a label from request or record contents: labels are
//! route templates, endpoint kinds, statuses and enum names only, so the number of series
//! stays bounded and no id, value or tenant data reaches the scrape.

use std::borrow::Cow;
use std::sync::{LazyLock, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::{InvokeError, RunReport};
use crate::store::{ErrorCategory, RunCounters, RunStatus, RunTrigger};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrmCallLabels {
    crm: &'static str,
    endpoint: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    export: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    export: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    trigger: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    counter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn fuel_histogram() -> Histogram {
    // 10 thousand to about 42 billion units, ×4 per bucket.
    Histogram::new(exponential_buckets(1e4, 4.0, 12))
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to about 16 s, ×2 per bucket.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn run_seconds_histogram() -> Histogram {
    // 10 ms to about 45 minutes, ×3.5 per bucket.
    Histogram::new(exponential_buckets(0.01, 3.5, 11))
}

struct Metrics {
    registry: Registry,
    crm_calls: Family<CrmCallLabels, Counter>,
    plugin_invocations: Family<InvocationLabels, Counter>,
    plugin_fuel: HistogramFamily<ExportLabels>,
    plugin_seconds: HistogramFamily<ExportLabels>,
    runs: Family<RunLabels, Counter>,
    run_seconds: HistogramFamily<TriggerLabels>,
    records: Family<RecordLabels, Counter>,
    sync_errors: Family<CategoryLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<RouteLabels>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_events_stored: Counter,
    webhook_own_events_dropped: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dealbridge");
        let m = Metrics {
            crm_calls: Family::default(),
            plugin_invocations: Family::default(),
            plugin_fuel: Family::new_with_constructor(fuel_histogram),
            plugin_seconds: Family::new_with_constructor(seconds_histogram),
            runs: Family::default(),
            run_seconds: Family::new_with_constructor(run_seconds_histogram),
            records: Family::default(),
            sync_errors: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(seconds_histogram),
            webhook_deliveries: Family::default(),
            webhook_events_stored: Counter::default(),
            webhook_own_events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "crm_api_calls",
            "HTTP calls made to the CRMs, by CRM, endpoint kind and status (or timeout, connect, transport)",
            m.crm_calls.clone(),
        );
        registry.register(
            "plugin_invocations",
            "Plugin invocations, by export and outcome (ok, or the kind of failure)",
            m.plugin_invocations.clone(),
        );
        registry.register(
            "plugin_fuel_used",
            "Fuel consumed per plugin invocation (about one unit per instruction)",
            m.plugin_fuel.clone(),
        );
        registry.register(
            "plugin_invocation_duration_seconds",
            "Wall time per plugin invocation (instantiation, call and host calls)",
            m.plugin_seconds.clone(),
        );
        registry.register(
            "sync_runs",
            "Sync runs ended, by trigger and status",
            m.runs.clone(),
        );
        registry.register(
            "sync_run_duration_seconds",
            "Wall time of ended sync runs, by trigger",
            m.run_seconds.clone(),
        );
        registry.register(
            "sync_records",
            "Records counted by ended sync runs, by run counter (read_salesforce, created_hubspot, skipped, failed, ...)",
            m.records.clone(),
        );
        registry.register(
            "sync_errors",
            "Record failures recorded by the sync engine, by sync-health group",
            m.sync_errors.clone(),
        );
        registry.register(
            "http_requests",
            "API requests answered, by method, route template and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request duration, by method and route template",
            m.http_seconds.clone(),
        );
        registry.register(
            "hubspot_webhook_deliveries",
            "HubSpot webhook deliveries answered, by outcome (stored, unauthorized, bad_body, too_large, store_failed)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "hubspot_webhook_events_stored",
            "Events of HubSpot webhook deliveries stored in the change feed (changes other users or apps made)",
            m.webhook_events_stored.clone(),
        );
        registry.register(
            "hubspot_webhook_own_events_dropped",
            "Events of HubSpot webhook deliveries dropped because the app's own writes made them",
            m.webhook_own_events_dropped.clone(),
        );
        Metrics { registry, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The CRM an endpoint kind belongs to (`sf.*` or `hs.*`).
fn crm_of(endpoint: &str) -> &'static str {
    match endpoint.split('.').next() {
        Some("sf") => "salesforce",
        Some("hs") => "hubspot",
        _ => "other",
    }
}

/// Counts one CRM HTTP call of `endpoint` (e.g. `sf.query`) that ended with `status`
/// (an HTTP status, or `timeout` / `connect` / `transport`).
pub fn crm_call(endpoint: &'static str, status: String) {
    METRICS
        .crm_calls
        .get_or_create(&CrmCallLabels {
            crm: crm_of(endpoint),
            endpoint,
            status,
        })
        .inc();
}

/// The outcome labels of plugin invocations; [`invocation_outcome`] gives an index into it.
const OUTCOMES: [&str; 11] = [
    "ok",
    "limit",
    "stack_overflow",
    "trap",
    "exit",
    "rule_error",
    "invalid_input",
    "instantiate",
    "invalid_output",
    "host_call_too_large",
    "contract",
];

/// How an invocation ended: its index in [`OUTCOMES`].
fn invocation_outcome<T>(result: &Result<T, InvokeError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(InvokeError::Limit { .. }) => 1,
        Err(InvokeError::StackOverflow) => 2,
        Err(InvokeError::Trap(_)) => 3,
        Err(InvokeError::Exit(_)) => 4,
        Err(InvokeError::Rule(_)) => 5,
        Err(InvokeError::Input(_)) => 6,
        Err(InvokeError::Instantiate(_)) => 7,
        Err(InvokeError::InvalidOutput { .. }) => 8,
        Err(InvokeError::HostCallTooLarge { .. }) => 9,
        Err(InvokeError::Contract(_)) => 10,
    }
}

/// The exports of the rules contract, whose plugin series are kept in [`PLUGIN_SERIES`].
const EXPORTS: [&str; 3] = ["describe", "condition", "plan"];

/// The plugin series of one export, each found in its family on its first use (so a series
/// still appears in the scrape only once it has counted something) and kept: a family lookup
/// takes a read lock and hashes the labels, and the three lookups were about 1% of the
/// instructions of a small invocation.
struct PluginSeries {
    invocations: [OnceLock<Counter>; OUTCOMES.len()],
    fuel: OnceLock<Histogram>,
    seconds: OnceLock<Histogram>,
}

impl PluginSeries {
    const fn new() -> Self {
        Self {
            invocations: [const { OnceLock::new() }; OUTCOMES.len()],
            fuel: OnceLock::new(),
            seconds: OnceLock::new(),
        }
    }
}

static PLUGIN_SERIES: [PluginSeries; EXPORTS.len()] =
    [const { PluginSeries::new() }; EXPORTS.len()];

/// The metric kept in `slot`, looked up with `lookup` the first time; without a slot, looked up
/// now.
fn kept<'a, M: Clone>(slot: Option<&'a OnceLock<M>>, lookup: impl FnOnce() -> M) -> Cow<'a, M> {
    match slot {
        Some(slot) => Cow::Borrowed(slot.get_or_init(lookup)),
        None => Cow::Owned(lookup()),
    }
}

/// Counts one plugin invocation of `export` (`describe`, `condition`, `plan`) with its
/// fuel and wall time.
pub fn plugin_invocation<T>(
    export: &'static str,
    result: &Result<T, InvokeError>,
    report: &RunReport,
) {
    let outcome = invocation_outcome(result);
    let series = EXPORTS
        .iter()
        .position(|e| *e == export)
        .map(|i| &PLUGIN_SERIES[i]);
    let labels = ExportLabels { export };
    kept(series.map(|s| &s.invocations[outcome]), || {
        let labels = InvocationLabels {
            export,
            outcome: OUTCOMES[outcome],
        };
        METRICS.plugin_invocations.get_or_create(&labels).clone()
    })
    .inc();
    kept(series.map(|s| &s.fuel), || {
        METRICS.plugin_fuel.get_or_create(&labels).clone()
    })
    .observe(report.fuel_used as f64);
    kept(series.map(|s| &s.seconds), || {
        METRICS.plugin_seconds.get_or_create(&labels).clone()
    })
    .observe(report.wall_time_us as f64 / 1e6);
}

/// The record counters of a run by name (API calls are counted by [`crm_call`]).
fn record_counters(c: &RunCounters) -> [(&'static str, i64); 10] {
    [
        ("read_salesforce", c.read_salesforce),
        ("read_hubspot", c.read_hubspot),
        ("created_salesforce", c.created_salesforce),
        ("created_hubspot", c.created_hubspot),
        ("updated_salesforce", c.updated_salesforce),
        ("updated_hubspot", c.updated_hubspot),
        ("archived_hubspot", c.archived_hubspot),
        ("skipped", c.skipped),
        ("echoes_suppressed", c.echoes_suppressed),
        ("failed", c.failed),
    ]
}

/// Counts one ended sync run and adds its record counters.
pub fn run_finished(trigger: RunTrigger, status: RunStatus, seconds: f64, counters: &RunCounters) {
    METRICS
        .runs
        .get_or_create(&RunLabels {
            trigger: trigger.as_str(),
            status: status.as_str(),
        })
        .inc();
    METRICS
        .run_seconds
        .get_or_create(&TriggerLabels {
            trigger: trigger.as_str(),
        })
        .observe(seconds);
    for (counter, n) in record_counters(counters) {
        if let Ok(n) = u64::try_from(n)
            && n > 0
        {
            METRICS
                .records
                .get_or_create(&RecordLabels { counter })
                .inc_by(n);
        }
    }
}

/// Counts one record failure recorded in the store.
pub fn sync_error(category: ErrorCategory) {
    METRICS
        .sync_errors
        .get_or_create(&CategoryLabels {
            category: category.as_str(),
        })
        .inc();
}

/// The standard methods as themselves; any other (a client may send any token) as
/// `OTHER`, so a client cannot add series.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

/// Counts one answered API request. `route` must be a route template (bounded), never
/// the request path.
pub fn http_request(method: &str, route: &str, status: u16, seconds: f64) {
    let method = method_label(method);
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route: route.to_string(),
            status,
        })
        .inc();
    METRICS
        .http_seconds
        .get_or_create(&RouteLabels {
            method,
            route: route.to_string(),
        })
        .observe(seconds);
}

/// How the webhook receiver answered a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified, read and stored (204).
    Stored,
    /// Missing or wrong signature, or a stale timestamp (401).
    Unauthorized,
    /// Not a list of webhook events (400).
    BadBody,
    /// Larger than the receiver accepts (413).
    TooLarge,
    /// The store failed; HubSpot retries (503).
    StoreFailed,
    /// More deliveries at once than the receiver takes; HubSpot retries (429).
    Busy,
}

impl WebhookOutcome {
    /// Its label.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Stored => "stored",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::BadBody => "bad_body",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::StoreFailed => "store_failed",
            WebhookOutcome::Busy => "busy",
        }
    }
}

/// Counts one answered HubSpot webhook delivery, the events it stored and the app's own
/// events it dropped.
pub fn webhook_delivery(outcome: WebhookOutcome, events_stored: u64, own_events_dropped: u64) {
    METRICS
        .webhook_deliveries
        .get_or_create(&OutcomeLabels {
            outcome: outcome.as_str(),
        })
        .inc();
    if events_stored > 0 {
        METRICS.webhook_events_stored.inc_by(events_stored);
    }
    if own_events_dropped > 0 {
        METRICS
            .webhook_own_events_dropped
            .inc_by(own_events_dropped);
    }
}

/// Every metric in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_render_with_their_labels() {
        crm_call("hs.batch.upsert", "429".into());
        crm_call("sf.query", "timeout".into());
        sync_error(ErrorCategory::PicklistMismatch);
        run_finished(
            RunTrigger::Resync,
            RunStatus::PartiallyFailed,
            0.25,
            &RunCounters {
                created_hubspot: 3,
                failed: 1,
                ..RunCounters::default()
            },
        );
        let text = render();
        assert!(text.contains("# TYPE dealbridge_crm_api_calls_total counter"));
        let at_least_one = |prefix: &str| {
            let v = line_value(&text, prefix).unwrap_or_else(|| panic!("{prefix}: {text}"));
            assert!(v >= 1.0, "{prefix}: {v}");
        };
        at_least_one(
            "dealbridge_crm_api_calls_total{crm=\"hubspot\",endpoint=\"hs.batch.upsert\",status=\"429\"}",
        );
        at_least_one(
            "dealbridge_crm_api_calls_total{crm=\"salesforce\",endpoint=\"sf.query\",status=\"timeout\"}",
        );
        at_least_one("dealbridge_sync_errors_total{category=\"picklist_mismatch\"}");
        at_least_one("dealbridge_sync_runs_total{trigger=\"resync\",status=\"partially_failed\"}");
        let created = line_value(
            &text,
            "dealbridge_sync_records_total{counter=\"created_hubspot\"}",
        )
        .unwrap();
        assert!(created >= 3.0, "{text}");
        at_least_one("dealbridge_sync_run_duration_seconds_count{trigger=\"resync\"}");
        let sum = line_value(
            &text,
            "dealbridge_sync_run_duration_seconds_sum{trigger=\"resync\"}",
        );
        assert!(sum.unwrap() >= 0.25, "{text}");
    }

    #[test]
    fn plugin_series_count_every_invocation_after_the_first() {
        let report = RunReport {
            fuel_used: 30_000,
            wall_time_us: 2_000,
            ..RunReport::default()
        };
        let failed: Result<(), InvokeError> = Err(InvokeError::Exit(3));
        let count = "dealbridge_plugin_invocations_total{export=\"condition\",outcome=\"exit\"}";
        let fuel = "dealbridge_plugin_fuel_used_count{export=\"condition\"}";
        let seconds = "dealbridge_plugin_invocation_duration_seconds_count{export=\"condition\"}";
        let figures = || {
            let text = render();
            [count, fuel, seconds].map(|p| line_value(&text, p).unwrap_or(0.0))
        };
        plugin_invocation("condition", &failed, &report);
        let once = figures();
        assert!(
            once[0] >= 1.0 && once[1] >= 1.0 && once[2] >= 1.0,
            "{once:?}"
        );
        plugin_invocation("condition", &failed, &report);
        plugin_invocation("condition", &failed, &report);
        let thrice = figures();
        for (after, before) in thrice.iter().zip(once) {
            assert!(*after >= before + 2.0, "{once:?} -> {thrice:?}");
        }
        // A name outside the contract is still counted, under its own label.
        plugin_invocation("other", &failed, &report);
        assert!(
            render()
                .contains("dealbridge_plugin_invocations_total{export=\"other\",outcome=\"exit\"}")
        );
    }

    /// Each way an invocation can end is counted under its own outcome label, and every label
    /// of [`OUTCOMES`] is some ending's.
    #[test]
    fn every_invocation_ending_counts_under_its_own_outcome() {
        use crate::runtime::{ErrorKind, LimitKind, RuleError};
        let endings: [(InvokeError, &str); OUTCOMES.len() - 1] = [
            (
                InvokeError::Limit {
                    limit: LimitKind::Fuel,
                    limit_value: 10,
                    reached: 10,
                },
                "limit",
            ),
            (InvokeError::StackOverflow, "stack_overflow"),
            (InvokeError::Trap("unreachable".into()), "trap"),
            (InvokeError::Exit(2), "exit"),
            (
                InvokeError::Rule(RuleError {
                    kind: ErrorKind::Config,
                    field: None,
                    message: "bad".into(),
                }),
                "rule_error",
            ),
            (InvokeError::Input("too big".into()), "invalid_input"),
            (InvokeError::Instantiate("no memory".into()), "instantiate"),
            (
                InvokeError::InvalidOutput {
                    export: "plan",
                    reason: "too few outcomes".into(),
                },
                "invalid_output",
            ),
            (
                InvokeError::HostCallTooLarge { budget: 1 },
                "host_call_too_large",
            ),
            (
                InvokeError::Contract("`describe` has another type".into()),
                "contract",
            ),
        ];
        let report = RunReport::default();
        let series = |outcome: &str| {
            format!(
                "dealbridge_plugin_invocations_total{{export=\"describe\",outcome=\"{outcome}\"}}"
            )
        };
        let count = |outcome: &str| line_value(&render(), &series(outcome)).unwrap_or(0.0);
        let mut labels = vec!["ok"];
        plugin_invocation("describe", &Ok::<(), InvokeError>(()), &report);
        for (error, label) in endings {
            let before = count(label);
            plugin_invocation("describe", &Err::<(), _>(error), &report);
            assert!(count(label) > before, "{label}");
            labels.push(label);
        }
        assert!(count("ok") >= 1.0);
        labels.sort_unstable();
        let mut all = OUTCOMES.to_vec();
        all.sort_unstable();
        assert_eq!(labels, all);
    }

    #[test]
    fn webhook_deliveries_count_by_outcome() {
        webhook_delivery(WebhookOutcome::Stored, 3, 2);
        webhook_delivery(WebhookOutcome::Unauthorized, 0, 0);
        let text = render();
        let value = |p: &str| line_value(&text, p).unwrap_or_else(|| panic!("{p}: {text}"));
        assert!(value("dealbridge_hubspot_webhook_deliveries_total{outcome=\"stored\"}") >= 1.0);
        assert!(
            value("dealbridge_hubspot_webhook_deliveries_total{outcome=\"unauthorized\"}") >= 1.0
        );
        assert!(value("dealbridge_hubspot_webhook_events_stored_total") >= 3.0);
        assert!(value("dealbridge_hubspot_webhook_own_events_dropped_total") >= 2.0);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "OTHER");
        assert_eq!(method_label("get"), "OTHER");
    }

    #[test]
    fn endpoints_map_to_their_crm() {
        assert_eq!(crm_of("sf.collections.upsert"), "salesforce");
        assert_eq!(crm_of("hs.search"), "hubspot");
        assert_eq!(crm_of("x"), "other");
    }
}
