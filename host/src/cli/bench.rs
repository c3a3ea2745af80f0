//! `dealbridge bench sync [--records N] [--scenario ...] [--json]`: the sync benchmarks.
//!
//! Every scenario starts both emulators in process (empty portal and org), seeds the
//! Salesforce org through its control API (`--records` opportunities, a tenth as many
//! accounts and a third as many contacts, with contact roles), starts the engine with the
//! default rules and a fresh SQLite file, and measures:
//!
//! 1. `calls`: CRM API calls per synced record of the backfill, from the emulators' own
//!    request accounting, beside the batching minimum and the naive 2 calls per record.
//! 2. `throughput`: records/s of the backfill with every rate limit off.
//! 3. `throttled`: records/s with HubSpot's real limits (190 per 10 s, search 5/s) and the
//!    number of 429 answers.
//! 4. `latency`: the poll loop at `--poll` seconds; `--edits` edits on each side at known
//!    times, each timed until it is seen on the other side (p50/p95/max).
//! 5. `memory`: the engine's peak RSS (`VmHWM`): set-up and backfill run as
//!    `dealbridge sync --once --json` in a child process, so the figure holds the engine
//!    alone (the emulators stay in this process).
//!
//! Figures are measured and printed beside their targets; this command never fails because
//! a target is missed (exit 1 only when records did not sync). It must never talk to
//! anything but the emulators it started on 127.0.0.1, and never print a credential.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use dealbridge_emulator::control::CallCount;
use dealbridge_emulator::hubspot::ratelimit::RateLimitSettings;
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed};
use serde::Serialize;
use serde_json::{Value, json};

use super::ExitStatus;
use super::demo::{demo_env, with_webhook_feed};
use super::sync::progress_bar;
use crate::crm::governor::HubSpotLimits;
use crate::crm::hubspot::types::UpdateInput;
use crate::crm::hubspot::{HubSpotClient, HubSpotConfig};
use crate::crm::salesforce::types::soql_quote;
use crate::crm::salesforce::{
    QueryScope, SalesforceClient, SalesforceConfig, SalesforceCredentials,
};
use crate::crm::{Secret, TransportOptions};
use crate::store::{ObjectPair, RunCounters, TenantId};
use crate::sync::start::{StartOptions, bind_webhooks, start};
use crate::sync::{Engine, TenantConfig};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Benchmark the sync engine against in-process emulators (API calls per record,
    /// throughput with and without rate limits, change latency, peak memory).
    Sync(SyncBenchArgs),
    /// Benchmark many tenants in one service process, each with its own plugin version
    /// (resident memory, activation time from the compiled cache).
    Tenants(super::bench_service::TenantsBenchArgs),
    /// Benchmark the service API's latency under load from a second process on loopback.
    Api(super::bench_service::ApiBenchArgs),
}

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// CRM API calls per synced record of a backfill, against the batching minimum.
    Calls,
    /// Backfill records/s with every rate limit off.
    Throughput,
    /// Backfill records/s with HubSpot's real rate limits on (190 per 10 s).
    Throttled,
    /// Change latency of the poll loop, both directions (p50/p95/max).
    Latency,
    /// Peak resident memory (VmHWM) of the engine process over set-up and a backfill.
    Memory,
    /// Every scenario above, in that order.
    All,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Calls => "calls",
            Scenario::Throughput => "throughput",
            Scenario::Throttled => "throttled",
            Scenario::Latency => "latency",
            Scenario::Memory => "memory",
            Scenario::All => "all",
        }
    }

    /// Opportunities seeded when `--records` is not given.
    fn default_records(self) -> usize {
        match self {
            Scenario::Memory => 100_000,
            Scenario::Latency => 1_000,
            _ => 10_000,
        }
    }
}

/// `dealbridge bench sync`.
#[derive(Debug, Args)]
pub struct SyncBenchArgs {
    /// Opportunities to seed in every scenario (plus a tenth as many accounts and a third
    /// as many contacts). Default: 10,000; memory: 100,000; latency: 1,000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    pub records: Option<u64>,
    /// Scenarios to run (repeat the flag or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Edits made on each side in the latency scenario.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub edits: u64,
    /// Seconds between polls in the latency scenario.
    #[arg(long, default_value_t = 1.0)]
    pub poll: f64,
    /// Seconds to wait for one edit to arrive before counting it as lost.
    #[arg(long, default_value_t = 30.0)]
    pub arrival_timeout: f64,
    /// How the engine learns of HubSpot changes: `polling` (search windows only) or
    /// `webhooks` (the emulated app delivers signed events to the engine's receiver, which
    /// keeps only others' changes; a backfill then reads nothing back).
    #[arg(long, value_enum, default_value = "polling")]
    pub feed: Feed,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// How the benchmarked engine learns of HubSpot changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feed {
    /// Search windows since each checkpoint (and a backfill's read-back).
    Polling,
    /// The HubSpot webhook feed (`[hubspot.webhooks]`) beside the search windows.
    Webhooks,
}

/// One measured figure, beside its target.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// A short machine name (`calls_per_record`, `records_per_sec`, ...).
    pub name: &'static str,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The target, in words (empty: no target, a figure for context).
    pub target: String,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: &'static str,
    /// Salesforce records seeded (opportunities + accounts + contacts).
    pub records_seeded: u64,
    /// Records the backfill wrote to HubSpot and linked (created + updated there).
    pub records_synced: u64,
    /// Records that failed in the backfill.
    pub records_failed: u64,
    /// The backfill's wall time in seconds (engine cycle only: not start-up, seeding, set-up).
    pub backfill_secs: f64,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Details: the seeded sizes, request accounting by route, how minimums are computed.
    pub details: Value,
}

fn figure(name: &'static str, value: f64, unit: &'static str) -> Figure {
    Figure {
        name,
        value,
        unit,
        target: String::new(),
        met: None,
    }
}

fn target(name: &'static str, value: f64, unit: &'static str, t: String, met: bool) -> Figure {
    Figure {
        name,
        value,
        unit,
        target: t,
        met: Some(met),
    }
}

/// Seeded sizes for `n` opportunities.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sizes {
    opportunities: u64,
    accounts: u64,
    contacts: u64,
}

impl Sizes {
    fn of(n: u64) -> Sizes {
        Sizes {
            opportunities: n,
            accounts: (n / 10).max(1),
            contacts: (n / 3).max(1),
        }
    }

    fn total(&self) -> u64 {
        self.opportunities + self.accounts + self.contacts
    }

    fn each(&self) -> [u64; 3] {
        [self.accounts, self.contacts, self.opportunities]
    }
}

/// Which rate limits the emulator enforces and the client observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limits {
    /// Every limit off (emulator) and a governor that never waits (client).
    Off,
    /// HubSpot's real limits (190 per 10 s, search 5/s) and the client's defaults.
    Real,
}

/// The bench tenant: emulator URLs, its CA, SQLite, default rules (as the demo's, with the
/// seeded `Type` values, which are no HubSpot `dealtype` options, not synced).
fn bench_config(
    emu: &RunningEmulators,
    store: &str,
    limits: Limits,
    poll: f64,
    feed: Feed,
) -> String {
    let (rate, search) = match limits {
        Limits::Off => (1_000_000u32, 1_000_000u32),
        Limits::Real => (190, 4),
    };
    let text = format!(
        r#"
tenant = "bench"
store = "{store}"

[salesforce]
login_url = "{sf}"
grant = "password"
client_id_env = "DEMO_SF_CLIENT_ID"
client_secret_env = "DEMO_SF_CLIENT_SECRET"
username_env = "DEMO_SF_USERNAME"
password_env = "DEMO_SF_PASSWORD"
ca_file = "{ca}"

[hubspot]
base_url = "{hs}"
token_env = "DEMO_HS_TOKEN"
ca_file = "{ca}"
requests_per_10s = {rate}
search_per_second = {search}

[plugin]
stage_map = "identity"

[plugin.config.rules.opportunity-deal]
Type = "dont-sync"

[sync]
poll_interval_secs = {poll}
lookback_secs = 2
"#,
        sf = emu.salesforce_urls.https,
        hs = emu.hubspot_urls.https,
        ca = emu.ca_cert_path.display(),
    );
    match feed {
        Feed::Polling => text,
        Feed::Webhooks => with_webhook_feed(&text),
    }
}

/// Request accounting of one emulator.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Requests {
    total: u64,
    calls: Vec<CallCount>,
}

impl Requests {
    fn with_status(&self, status: u16) -> u64 {
        self.calls
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.count)
            .sum()
    }

    /// `{"METHOD route [status]": count}`, largest first.
    fn by_route(&self) -> Value {
        let mut v: Vec<&CallCount> = self.calls.iter().collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.count));
        Value::Object(
            v.into_iter()
                .map(|c| {
                    (
                        format!("{} {} [{}]", c.method, c.route, c.status),
                        json!(c.count),
                    )
                })
                .collect(),
        )
    }
}

/// One scenario's emulators, store and engine.
struct Bed {
    emu: RunningEmulators,
    http: reqwest::Client,
    engine: Engine,
    dir: PathBuf,
    sizes: Sizes,
    /// Calls of start-up and set-up (login, checks, properties, pipelines, owners).
    setup_sf: Requests,
    setup_hs: Requests,
    /// Seeded records moved to an owner who exists in HubSpot.
    reassigned: u64,
}

impl Bed {
    async fn requests(&self, base: &str) -> anyhow::Result<Requests> {
        self.http
            .get(format!("{base}/__emulator/requests"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("reading the emulator's request accounting")?
            .json::<Requests>()
            .await
            .context("decoding the emulator's request accounting")
    }

    async fn reset_requests(&self) -> anyhow::Result<()> {
        for base in [&self.emu.salesforce_urls.http, &self.emu.hubspot_urls.http] {
            self.http
                .delete(format!("{base}/__emulator/requests"))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .context("resetting the emulator's request accounting")?;
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.engine.release().await?;
        self.emu.shutdown().await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Started, seeded emulators with their rate limits set, before any engine.
struct Seeded {
    emu: RunningEmulators,
    http: reqwest::Client,
    sizes: Sizes,
    reassigned: u64,
}

async fn seeded(n: u64, limits: Limits) -> anyhow::Result<Seeded> {
    let emu = dealbridge_emulator::start(EmulatorOptions {
        seed: Seed::Empty,
        ..EmulatorOptions::default()
    })
    .await
    .context("starting the emulators")?;
    let http = reqwest::Client::new();
    let sizes = Sizes::of(n);
    http.post(format!("{}/__emulator/seed", emu.salesforce_urls.http))
        .json(&json!({
            "seed": 1,
            "accounts": sizes.accounts,
            "contacts": sizes.contacts,
            "opportunities": sizes.opportunities,
        }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("seeding the Salesforce emulator")?;
    let reassigned = reassign_unmatched_owners(&emu).await?;
    let settings = match limits {
        Limits::Off => RateLimitSettings::unlimited(),
        Limits::Real => RateLimitSettings::default(),
    };
    http.put(format!("{}/__emulator/rate-limits", emu.hubspot_urls.http))
        .json(&settings)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("setting the HubSpot emulator's rate limits")?;
    Ok(Seeded {
        emu,
        http,
        sizes,
        reassigned,
    })
}

/// A fresh directory for one scenario's store and files.
fn scenario_dir(scenario: Scenario) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "dealbridge-bench-{}-{}-{}",
        std::process::id(),
        scenario.name(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("bench.db").display())
}

async fn bed(
    scenario: Scenario,
    n: u64,
    limits: Limits,
    poll: f64,
    feed: Feed,
) -> anyhow::Result<Bed> {
    let Seeded {
        emu,
        http,
        sizes,
        reassigned,
    } = seeded(n, limits).await?;
    let dir = scenario_dir(scenario)?;
    let cfg = TenantConfig::parse(&bench_config(&emu, &sqlite_url(&dir), limits, poll, feed))?;
    let env = demo_env(&emu);
    for base in [&emu.salesforce_urls.http, &emu.hubspot_urls.http] {
        http.delete(format!("{base}/__emulator/requests"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("resetting the emulator's request accounting")?;
    }
    // The receiver is bound before set-up points the app's webhooks at it.
    let listener = bind_webhooks(&cfg, &env)
        .await
        .context("binding the webhook receiver")?;
    let (mut engine, _setup) = start(
        &cfg,
        &env,
        StartOptions {
            webhook_public_url: listener.as_ref().map(|l| l.public_url().to_string()),
            ..StartOptions::default()
        },
    )
    .await
    .context("starting the engine (set-up)")?;
    if let Some(listener) = listener {
        listener
            .serve(&mut engine)
            .context("serving the webhook receiver")?;
    }
    let mut b = Bed {
        emu,
        http,
        engine,
        dir,
        sizes,
        setup_sf: Requests::default(),
        setup_hs: Requests::default(),
        reassigned,
    };
    b.setup_sf = b.requests(&b.emu.salesforce_urls.http.clone()).await?;
    b.setup_hs = b.requests(&b.emu.hubspot_urls.http.clone()).await?;
    b.reset_requests().await?;
    Ok(b)
}

/// The seeded org has sales users without a HubSpot owner (so that the demo shows
/// missing-owner errors). A benchmark wants every record syncable: their records move to
/// the first user who is in HubSpot, before any accounting starts. Returns how many moved.
async fn reassign_unmatched_owners(emu: &RunningEmulators) -> anyhow::Result<u64> {
    let (sf, _) = observer_clients(emu, false)?;
    let people = dealbridge_emulator::people::SALES_TEAM;
    let Some(keep) = people.iter().find(|p| p.in_hubspot) else {
        return Ok(0);
    };
    let email_in = |list: Vec<&str>| {
        list.iter()
            .map(|e| soql_quote(e))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<&str> = people
        .iter()
        .filter(|p| !p.in_hubspot)
        .map(|p| p.email)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let users = sf
        .query(
            &format!(
                "SELECT Id, Email FROM User WHERE Email IN ({})",
                email_in(missing.iter().copied().chain([keep.email]).collect())
            ),
            QueryScope::Live,
        )
        .await
        .context("reading the seeded users")?;
    let id_of = |email: &str| {
        users
            .iter()
            .find(|u| u.str_field("Email") == Some(email))
            .and_then(|u| u.id().map(str::to_string))
    };
    let Some(to) = id_of(keep.email) else {
        bail!("the seeded org has no user {}", keep.email);
    };
    let from: Vec<String> = missing.iter().filter_map(|e| id_of(e)).collect();
    if from.is_empty() {
        return Ok(0);
    }
    let from_in = from
        .iter()
        .map(|i| soql_quote(i))
        .collect::<Vec<_>>()
        .join(", ");
    let mut moved = 0u64;
    for sobject in ["Account", "Contact", "Opportunity"] {
        let rows = sf
            .query(
                &format!("SELECT Id FROM {sobject} WHERE OwnerId IN ({from_in})"),
                QueryScope::Live,
            )
            .await
            .with_context(|| format!("reading the {sobject} records to reassign"))?;
        let updates: Vec<(String, crate::crm::salesforce::Fields)> = rows
            .iter()
            .filter_map(|r| r.id())
            .map(|id| {
                let mut f = crate::crm::salesforce::Fields::new();
                f.insert("OwnerId".into(), json!(to));
                (id.to_string(), f)
            })
            .collect();
        for chunk in updates.chunks(200) {
            let res = sf
                .update_many(sobject, chunk, false)
                .await
                .with_context(|| format!("reassigning {sobject} owners"))?;
            if let Some(bad) = res.iter().find(|r| !r.success) {
                bail!("reassigning a {sobject} owner failed: {:?}", bad.errors);
            }
            moved += chunk.len() as u64;
        }
    }
    Ok(moved)
}

/// Runs the backfill (one cycle): wall seconds and counters.
async fn backfill(b: &mut Bed, show_progress: bool) -> anyhow::Result<(f64, RunCounters, Value)> {
    if show_progress {
        b.engine.on_progress(progress_bar());
    }
    let t = Instant::now();
    let r = b.engine.run_cycle().await.context("the backfill cycle")?;
    let secs = t.elapsed().as_secs_f64();
    let failures = failure_groups(
        r.failures
            .iter()
            .map(|f| (f.pair, f.category, f.message.as_str())),
    );
    Ok((secs, r.counters, failures))
}

/// Failures grouped by pair, category and message (ids left out), the ten most frequent.
fn failure_groups<'a>(failures: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Value {
    let mut groups: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (pair, category, message) in failures {
        let msg: String = message.chars().take(160).collect();
        *groups
            .entry(format!("{pair} {category}: {msg}"))
            .or_default() += 1;
    }
    let mut groups: Vec<(String, u64)> = groups.into_iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    Value::Object(
        groups
            .into_iter()
            .take(10)
            .map(|(k, v)| (k, json!(v)))
            .collect(),
    )
}

fn synced(c: &RunCounters) -> u64 {
    (c.created_hubspot + c.updated_hubspot).max(0) as u64
}

fn base_result(
    scenario: Scenario,
    b: &Bed,
    secs: f64,
    c: &RunCounters,
    failures: Value,
) -> ScenarioResult {
    ScenarioResult {
        scenario: scenario.name(),
        records_seeded: b.sizes.total(),
        records_synced: synced(c),
        records_failed: c.failed.max(0) as u64,
        backfill_secs: secs,
        figures: Vec::new(),
        details: json!({
            "seeded": b.sizes,
            "owners_reassigned_before_start": b.reassigned,
            "counters": c,
            "failures": failures,
        }),
    }
}

async fn run_calls(n: u64, feed: Feed, progress: bool) -> anyhow::Result<ScenarioResult> {
    let mut b = bed(Scenario::Calls, n, Limits::Off, 5.0, feed).await?;
    let (secs, c, failures) = backfill(&mut b, progress).await?;
    let sf = b.requests(&b.emu.salesforce_urls.http.clone()).await?;
    let hs = b.requests(&b.emu.hubspot_urls.http.clone()).await?;
    let setup = b.setup_sf.total + b.setup_hs.total;
    let backfill_calls = sf.total + hs.total;
    let total = setup + backfill_calls;
    let mut r = base_result(Scenario::Calls, &b, secs, &c, failures);
    let records = r.records_synced.max(1);
    let per_pair: u64 = b
        .sizes
        .each()
        .iter()
        .map(|k| k.div_ceil(100) + k.div_ceil(2000))
        .sum();
    let minimum = per_pair + setup;
    let per_record = total as f64 / records as f64;
    let min_per_record = minimum as f64 / records as f64;
    let ratio = total as f64 / minimum.max(1) as f64;
    r.figures = vec![
        figure("api_calls_total", total as f64, "calls"),
        figure("api_calls_setup", setup as f64, "calls"),
        figure("api_calls_backfill_salesforce", sf.total as f64, "calls"),
        figure("api_calls_backfill_hubspot", hs.total as f64, "calls"),
        figure("calls_per_record", per_record, "calls/record"),
        figure("batching_minimum", minimum as f64, "calls"),
        figure(
            "batching_minimum_per_record",
            min_per_record,
            "calls/record",
        ),
        figure("naive_calls_per_record", 2.0, "calls/record"),
        target(
            "calls_vs_minimum",
            ratio,
            "x",
            "<= 1.1x the batching minimum".into(),
            ratio <= 1.1,
        ),
    ];
    r.details["minimum_formula"] = json!(
        "sum over accounts, contacts and opportunities of ceil(n/100) HubSpot batch writes + ceil(n/2000) SOQL pages, plus the set-up calls (login, checks, properties, pipelines, owners) counted by the emulators"
    );
    r.details["salesforce_calls"] = sf.by_route();
    r.details["hubspot_calls"] = hs.by_route();
    r.details["setup_salesforce_calls"] = b.setup_sf.by_route();
    r.details["setup_hubspot_calls"] = b.setup_hs.by_route();
    b.finish().await?;
    Ok(r)
}

async fn run_throughput(
    n: u64,
    limits: Limits,
    feed: Feed,
    progress: bool,
) -> anyhow::Result<ScenarioResult> {
    let scenario = match limits {
        Limits::Off => Scenario::Throughput,
        Limits::Real => Scenario::Throttled,
    };
    let mut b = bed(scenario, n, limits, 5.0, feed).await?;
    let cpu_before = process_cpu_secs();
    let (secs, c, failures) = backfill(&mut b, progress).await?;
    let cpu = process_cpu_secs().zip(cpu_before).map(|(a, b)| a - b);
    let hs = b.requests(&b.emu.hubspot_urls.http.clone()).await?;
    let sf = b.requests(&b.emu.salesforce_urls.http.clone()).await?;
    let mut r = base_result(scenario, &b, secs, &c, failures);
    let rate = r.records_synced as f64 / secs.max(1e-9);
    let too_many = hs.with_status(429) + b.setup_hs.with_status(429);
    r.figures = match limits {
        Limits::Off => vec![
            target(
                "records_per_sec",
                rate,
                "records/s",
                ">= 5000 records/s".into(),
                rate >= 5_000.0,
            ),
            figure("backfill_secs", secs, "s"),
            figure("process_cpu_secs", cpu.unwrap_or(0.0), "s"),
        ],
        Limits::Real => {
            let share = rate / 1_900.0;
            vec![
                figure("records_per_sec", rate, "records/s"),
                target(
                    "share_of_ceiling",
                    share * 100.0,
                    "% of 1900/s",
                    ">= 90% of 1,900 records/s (190 calls per 10 s x 100 per batch)".into(),
                    share >= 0.9,
                ),
                target(
                    "http_429",
                    too_many as f64,
                    "responses",
                    "0 unplanned 429".into(),
                    too_many == 0,
                ),
                figure("hubspot_calls", hs.total as f64, "calls"),
                figure("backfill_secs", secs, "s"),
            ]
        }
    };
    r.details["salesforce_calls"] = sf.by_route();
    r.details["hubspot_calls"] = hs.by_route();
    b.finish().await?;
    Ok(r)
}

/// CPU seconds (user + system) this process used so far, all threads (the engine and the
/// in-process emulators): beside a wall-clock rate, it shows how much of the machine the
/// run had.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `Vm...:` line of `/proc/<pid>/status`, in KiB.
fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The engine alone: `dealbridge sync --once --json` in a child process against the
/// emulators of this one, its peak resident set (`VmHWM`) polled from `/proc` every 20 ms
/// until it exits (the peak is a high-water mark: the last reading holds it, unless the
/// process grew in its final 20 ms).
async fn run_memory(n: u64, feed: Feed, progress: bool) -> anyhow::Result<ScenarioResult> {
    let Seeded {
        emu,
        http: _,
        sizes,
        reassigned,
    } = seeded(n, Limits::Off).await?;
    let dir = scenario_dir(Scenario::Memory)?;
    let config = dir.join("tenant.toml");
    std::fs::write(
        &config,
        bench_config(&emu, &sqlite_url(&dir), Limits::Off, 5.0, feed),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let out_path = dir.join("sync.jsonl");
    let out = std::fs::File::create(&out_path)
        .with_context(|| format!("creating {}", out_path.display()))?;
    let env = demo_env(&emu);
    let mut cmd = std::process::Command::new(
        std::env::current_exe().context("locating the dealbridge binary")?,
    );
    cmd.args(["sync", "--once", "--json", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(std::process::Stdio::inherit());
    for k in [
        "DEMO_SF_CLIENT_ID",
        "DEMO_SF_CLIENT_SECRET",
        "DEMO_SF_USERNAME",
        "DEMO_SF_PASSWORD",
        "DEMO_HS_TOKEN",
        "DEMO_HS_WEBHOOK_SECRET",
        "DEMO_HS_DEVELOPER_KEY",
    ] {
        cmd.env(k, env(k).unwrap_or_default());
    }
    let spinner = progress.then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message("engine (child process) backfilling");
        s
    });
    let mut child = cmd.spawn().context("starting `dealbridge sync`")?;
    let pid = child.id();
    let mut peak = 0u64;
    let status = loop {
        if let Some(k) = vm_kib(pid, "VmHWM:") {
            peak = peak.max(k);
        }
        if let Some(status) = child.try_wait().context("waiting for `dealbridge sync`")? {
            break status;
        }
        if let Some(s) = &spinner {
            s.tick();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let text = std::fs::read_to_string(&out_path)
        .with_context(|| format!("reading {}", out_path.display()))?;
    let report: CycleReportLine = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("counters").is_some())
        .map(serde_json::from_value)
        .transpose()?
        .with_context(|| format!("`dealbridge sync` ({status}) printed no cycle report"))?;
    if peak == 0 {
        bail!("VmHWM of the engine process was not readable from /proc (not Linux?)");
    }
    let secs = report.millis as f64 / 1000.0;
    let failures = failure_groups(
        report
            .failures
            .iter()
            .map(|f| (f.pair.as_str(), f.category.as_str(), f.message.as_str())),
    );
    let mib = |k: u64| k as f64 / 1024.0;
    let mut r = ScenarioResult {
        scenario: Scenario::Memory.name(),
        records_seeded: sizes.total(),
        records_synced: synced(&report.counters),
        records_failed: report.counters.failed.max(0) as u64,
        backfill_secs: secs,
        figures: vec![target(
            "peak_rss",
            mib(peak),
            "MiB",
            "<= 256 MiB (the engine process)".into(),
            mib(peak) <= 256.0,
        )],
        details: json!({
            "seeded": sizes,
            "owners_reassigned_before_start": reassigned,
            "counters": report.counters,
            "failures": failures,
            "engine_exit": status.to_string(),
        }),
    };
    r.details["method"] = json!(
        "the engine runs as `dealbridge sync --once --json` in its own process (set-up, then the backfill cycle), the emulators in the bench process; VmHWM of the engine process polled every 20 ms"
    );
    emu.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r)
}

/// The parts of a cycle report line the memory scenario reads.
#[derive(serde::Deserialize)]
struct CycleReportLine {
    counters: RunCounters,
    #[serde(default)]
    failures: Vec<FailureLineIn>,
    #[serde(default)]
    millis: u64,
}

#[derive(serde::Deserialize)]
struct FailureLineIn {
    pair: String,
    category: String,
    message: String,
}

/// One edit made for the latency scenario.
struct Edit {
    /// True: made in Salesforce, watched in HubSpot.
    from_sf: bool,
    /// The id watched on the other side.
    watch_id: String,
    /// The value that shows it arrived.
    want: String,
    made: Option<Instant>,
    arrived: Option<Duration>,
}

/// Clients that read (and edit) the emulators beside the engine; `as_person`: the HubSpot
/// client edits as a person in HubSpot's UI, not as dealbridge's app.
fn observer_clients(
    emu: &RunningEmulators,
    as_person: bool,
) -> anyhow::Result<(SalesforceClient, HubSpotClient)> {
    let env = demo_env(emu);
    let var = |k: &str| env(k).unwrap_or_default();
    let mut c = SalesforceConfig::new(
        emu.salesforce_urls.http.clone(),
        SalesforceCredentials::Password {
            client_id: var("DEMO_SF_CLIENT_ID"),
            client_secret: Secret::new(var("DEMO_SF_CLIENT_SECRET")),
            username: var("DEMO_SF_USERNAME"),
            password: Secret::new(var("DEMO_SF_PASSWORD")),
        },
    );
    c.transport = TransportOptions::default();
    let sf = SalesforceClient::new(c)?;
    let token = if as_person {
        emu.hubspot_credentials.user_token.clone()
    } else {
        var("DEMO_HS_TOKEN")
    };
    let mut h = HubSpotConfig::new(emu.hubspot_urls.http.clone(), Secret::new(token));
    h.limits = HubSpotLimits {
        requests_per_interval: 1_000_000,
        interval: Duration::from_secs(10),
        search_per_second: 1_000_000,
        daily_cap: None,
    };
    let hs = HubSpotClient::new(h)?;
    Ok((sf, hs))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_latency(
    n: u64,
    k: u64,
    poll: f64,
    timeout: f64,
    feed: Feed,
    progress: bool,
) -> anyhow::Result<ScenarioResult> {
    if !(poll > 0.0 && poll <= 3_600.0) {
        bail!("--poll must be within (0, 3600] seconds, not {poll}");
    }
    if !(timeout > 0.0 && timeout <= 3_600.0) {
        bail!("--arrival-timeout must be within (0, 3600] seconds, not {timeout}");
    }
    let mut b = bed(Scenario::Latency, n, Limits::Off, poll, feed).await?;
    let (secs, c, failures) = backfill(&mut b, progress).await?;
    let (sf, hs) = observer_clients(&b.emu, false)?;
    // HubSpot edits are a person's (with the feed, HubSpot delivers them; dealbridge's own
    // writes never come back through it).
    let (_, hs_editor) = observer_clients(&b.emu, true)?;
    // Opportunities with a blank Description: a HubSpot description reaches them under
    // the default rule (prefer Salesforce unless blank).
    let rows = sf
        .query(
            &format!(
                "SELECT Id FROM Opportunity WHERE Description = null ORDER BY Id LIMIT {}",
                2 * k
            ),
            QueryScope::Live,
        )
        .await?;
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect();
    let tenant = TenantId::new("bench")?;
    let links = b
        .engine
        .store()
        .links_by_salesforce_ids(&tenant, ObjectPair::OpportunityDeal, &ids)
        .await?;
    if (links.len() as u64) < 2 * k {
        bail!(
            "only {} synced opportunities with a blank Description for {} edits a side; seed more (--records)",
            links.len(),
            k
        );
    }
    let mut edits = Vec::new();
    for (i, l) in links.iter().take(2 * k as usize).enumerate() {
        // Alternate sides so that both see every phase of the poll cycle.
        let from_sf = i % 2 == 0;
        edits.push(Edit {
            from_sf,
            watch_id: if from_sf {
                l.hubspot_id.clone()
            } else {
                l.salesforce_id.clone()
            },
            want: if from_sf {
                format!("{}", 7_000_000 + i)
            } else {
                format!("bench latency edit {i}")
            },
            made: None,
            arrived: None,
        });
    }
    let src: Vec<String> = links
        .iter()
        .take(2 * k as usize)
        .enumerate()
        .map(|(i, l)| {
            if i % 2 == 0 {
                l.salesforce_id.clone()
            } else {
                l.hubspot_id.clone()
            }
        })
        .collect();
    let edits = Mutex::new(edits);
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(2 * k);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message("edits arrived");
        Some(bar)
    } else {
        None
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut cycle_errors = Vec::new();
    let interval = Duration::from_secs_f64(poll);
    // Edits spread over the poll cycle's phases (a gap that does not divide it).
    let gap = interval.mul_f64(1.0 / 7.0).max(Duration::from_millis(10));
    let lost_after = Duration::from_secs_f64(timeout);
    let driver = async {
        let editor = async {
            let n_edits = edits.lock().map(|e| e.len()).unwrap_or(0);
            for i in 0..n_edits {
                let (from_sf, want) = {
                    let e = edits
                        .lock()
                        .map_err(|_| anyhow::anyhow!("edit list poisoned"))?;
                    (e[i].from_sf, e[i].want.clone())
                };
                let t = Instant::now();
                if from_sf {
                    let mut f = crate::crm::salesforce::Fields::new();
                    f.insert("Amount".into(), json!(7_000_000 + i));
                    sf.update("Opportunity", &src[i], &f).await?;
                } else {
                    hs_editor
                        .batch_update(
                            "deals",
                            &[UpdateInput {
                                id: src[i].clone(),
                                properties: [("description".to_string(), want)]
                                    .into_iter()
                                    .collect(),
                            }],
                            None,
                        )
                        .await?;
                }
                if let Ok(mut e) = edits.lock() {
                    e[i].made = Some(t);
                }
                tokio::time::sleep(gap).await;
            }
            anyhow::Ok(())
        };
        let observer = async {
            loop {
                let (hs_ids, sf_ids, done, oldest) = {
                    let e = edits
                        .lock()
                        .map_err(|_| anyhow::anyhow!("edit list poisoned"))?;
                    let pending = |from_sf: bool| -> Vec<String> {
                        e.iter()
                            .filter(|x| {
                                x.from_sf == from_sf && x.made.is_some() && x.arrived.is_none()
                            })
                            .map(|x| x.watch_id.clone())
                            .collect()
                    };
                    let done = e.iter().all(|x| {
                        x.arrived.is_some() || x.made.is_some_and(|m| m.elapsed() > lost_after)
                    });
                    let oldest = e
                        .iter()
                        .filter(|x| x.arrived.is_none())
                        .filter_map(|x| x.made)
                        .min();
                    (pending(true), pending(false), done, oldest)
                };
                if done {
                    break;
                }
                let _ = oldest;
                let mut seen: Vec<(bool, String, String)> = Vec::new();
                if !hs_ids.is_empty() {
                    let out = hs.batch_read("deals", &hs_ids, &["amount"], None).await?;
                    for o in out.items.into_iter().flatten() {
                        if let Some(a) = o.prop("amount") {
                            seen.push((true, o.id.clone(), a.to_string()));
                        }
                    }
                }
                if !sf_ids.is_empty() {
                    let list: Vec<String> = sf_ids.iter().map(|s| soql_quote(s)).collect();
                    let rows = sf
                        .query(
                            &format!(
                                "SELECT Id, Description FROM Opportunity WHERE Id IN ({})",
                                list.join(", ")
                            ),
                            QueryScope::Live,
                        )
                        .await?;
                    for r in rows {
                        if let (Some(id), Some(d)) = (r.id(), r.str_field("Description")) {
                            seen.push((false, id.to_string(), d.to_string()));
                        }
                    }
                }
                let now = Instant::now();
                if let Ok(mut e) = edits.lock() {
                    for (from_sf, id, val) in seen {
                        for x in e.iter_mut().filter(|x| {
                            x.from_sf == from_sf && x.watch_id == id && x.arrived.is_none()
                        }) {
                            let same = if from_sf {
                                val.parse::<f64>().ok() == x.want.parse::<f64>().ok()
                            } else {
                                val == x.want
                            };
                            if same && let Some(m) = x.made {
                                x.arrived = Some(now.duration_since(m));
                                if let Some(bar) = &bar {
                                    bar.inc(1);
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        };
        let (a, o) = tokio::join!(editor, observer);
        let _ = stop_tx.send(());
        a.and(o)
    };
    let stop = async {
        let _ = stop_rx.await;
    };
    let poller = b.engine.poll(
        interval,
        |r| {
            if let Err(e) = r {
                cycle_errors.push(e.to_string());
            }
        },
        stop,
    );
    let (p, d) = tokio::join!(poller, driver);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    p.context("the poll loop")?;
    d?;
    let edits = edits
        .into_inner()
        .map_err(|_| anyhow::anyhow!("edit list poisoned"))?;
    let lat = |from_sf: Option<bool>| -> Vec<Duration> {
        let mut v: Vec<Duration> = edits
            .iter()
            .filter(|e| from_sf.is_none_or(|s| e.from_sf == s))
            .filter_map(|e| e.arrived)
            .collect();
        v.sort();
        v
    };
    let all = lat(None);
    let lost = edits.iter().filter(|e| e.arrived.is_none()).count() as u64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = percentile(&all, 95.0);
    let mut r = base_result(Scenario::Latency, &b, secs, &c, failures);
    r.figures = vec![
        figure("latency_p50", ms(percentile(&all, 50.0)), "ms"),
        target(
            "latency_p95",
            ms(p95),
            "ms",
            "p95 <= 2000 ms (with a 1 s poll), none lost".into(),
            p95 <= Duration::from_secs(2) && lost == 0,
        ),
        figure(
            "latency_max",
            ms(all.last().copied().unwrap_or_default()),
            "ms",
        ),
        figure(
            "latency_sf_to_hs_p95",
            ms(percentile(&lat(Some(true)), 95.0)),
            "ms",
        ),
        figure(
            "latency_hs_to_sf_p95",
            ms(percentile(&lat(Some(false)), 95.0)),
            "ms",
        ),
        figure("edits", edits.len() as f64, "edits"),
        figure("edits_lost", lost as f64, "edits"),
    ];
    r.details["poll_secs"] = json!(poll);
    r.details["cycle_errors"] = json!(cycle_errors);
    r.details["method"] = json!(
        "edits alternate sides, one every poll/7; each is timed from just before its write until an observer (polling the destination every 20 ms over HTTP) sees the value"
    );
    b.finish().await?;
    Ok(r)
}

fn print_table(results: &[ScenarioResult]) {
    let line = format!(
        "+{}+{}+{}+{}+",
        "-".repeat(34),
        "-".repeat(18),
        "-".repeat(52),
        "-".repeat(6)
    );
    for r in results {
        println!(
            "\n{}: {} records seeded, {} synced, {} failed, backfill {:.2} s",
            r.scenario, r.records_seeded, r.records_synced, r.records_failed, r.backfill_secs
        );
        println!("{line}");
        println!(
            "| {:<32} | {:>16} | {:<50} | {:<4} |",
            "figure", "value", "target", "met"
        );
        println!("{line}");
        for f in &r.figures {
            let v = if f.value.fract() == 0.0 && f.value.abs() < 1e12 {
                format!("{} {}", f.value as i64, short_unit(f.unit))
            } else {
                format!("{:.3} {}", f.value, short_unit(f.unit))
            };
            let met = match f.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            println!(
                "| {:<32} | {:>16} | {:<50} | {:<4} |",
                f.name, v, f.target, met
            );
        }
        println!("{line}");
    }
}

fn short_unit(u: &str) -> &str {
    match u {
        "calls/record" => "c/rec",
        "records/s" => "rec/s",
        "% of 1900/s" => "%",
        "responses" => "",
        other => other,
    }
}

/// Runs `dealbridge bench ...`.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        BenchCommand::Sync(args) => run_sync(args),
        BenchCommand::Tenants(args) => super::bench_service::tenants::run(args),
        BenchCommand::Api(args) => super::bench_service::api::run(args),
    }
}

fn run_sync(args: SyncBenchArgs) -> anyhow::Result<ExitStatus> {
    let mut list: Vec<Scenario> = if args.scenario.contains(&Scenario::All) {
        vec![
            Scenario::Calls,
            Scenario::Throughput,
            Scenario::Throttled,
            Scenario::Latency,
            Scenario::Memory,
        ]
    } else {
        args.scenario.clone()
    };
    list.sort();
    list.dedup();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let progress = !args.json;
    let mut results = Vec::new();
    for s in list {
        let n = args.records.unwrap_or(s.default_records() as u64);
        if progress {
            eprintln!("== {} ({} opportunities) ==", s.name(), n);
        }
        let r = rt
            .block_on(async {
                match s {
                    Scenario::Calls => run_calls(n, args.feed, progress).await,
                    Scenario::Throughput => {
                        run_throughput(n, Limits::Off, args.feed, progress).await
                    }
                    Scenario::Throttled => {
                        run_throughput(n, Limits::Real, args.feed, progress).await
                    }
                    Scenario::Latency => {
                        run_latency(
                            n,
                            args.edits,
                            args.poll,
                            args.arrival_timeout,
                            args.feed,
                            progress,
                        )
                        .await
                    }
                    Scenario::Memory => run_memory(n, args.feed, progress).await,
                    Scenario::All => unreachable!("expanded above"),
                }
            })
            .with_context(|| format!("scenario {}", s.name()))?;
        results.push(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"bench": "sync", "scenarios": results}))?
        );
    } else {
        print_table(&results);
    }
    let all_synced = results
        .iter()
        .all(|r| r.records_synced == r.records_seeded && r.records_failed == 0);
    Ok(if all_synced {
        ExitStatus::Success
    } else {
        ExitStatus::Failures
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&v, 95.0), Duration::from_millis(19));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(20));
        assert_eq!(percentile(&[], 95.0), Duration::ZERO);
    }

    #[test]
    fn sizes_follow_the_opportunities() {
        let s = Sizes::of(10_000);
        assert_eq!((s.accounts, s.contacts, s.total()), (1_000, 3_333, 14_333));
        assert_eq!(Sizes::of(5).each(), [1, 1, 5]);
    }

    #[test]
    fn accounting_counts_429s() {
        let r = Requests {
            total: 3,
            calls: vec![
                CallCount {
                    method: "POST".into(),
                    route: "/x".into(),
                    status: 429,
                    count: 2,
                },
                CallCount {
                    method: "POST".into(),
                    route: "/x".into(),
                    status: 200,
                    count: 1,
                },
            ],
        };
        assert_eq!(r.with_status(429), 2);
        assert_eq!(r.with_status(500), 0);
    }
}
