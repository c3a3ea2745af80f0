//! `dealbridge bench api [--concurrency C] [--duration-secs D] [--json]`: the service
//! API's latency under load from a second process on loopback.
//!
//! Starts `dealbridge serve` (this executable) as a child process on a new SQLite file in
//! a temporary directory, with its scheduler on, and waits for it to listen. Set-up, over
//! the API: `--tenants` tenants and their tokens, each paused (so the scheduler leaves
//! the seeded data alone). The run history, open sync errors and per-record history the
//! read routes show are written with the store API on the same database file (a run
//! comes only from a sync, which needs CRMs; the rows are the ones a sync writes), under
//! each tenant's lease. Then C tasks of this process, sharing one HTTP client with up
//! to C connections, send requests for D seconds, each task walking a fixed mix of tenant
//! routes (reads of the sync status, runs, one run, sync health, errors and a record's
//! history; `/metrics`; writes of the schedule and sync now) for random tenants.
//!
//! Printed: requests/s, and p50/p95/p99/max and non-2xx counts per route and overall.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiClient, Latency, random_hex};
use crate::api::{OPERATOR_TOKEN_ENV, SECRET_KEY_ENV};
use crate::cli::ExitStatus;
use crate::store::{
    Direction, ErrorCategory, EventKind, Lease, NewRecordEvent, NewSyncError, ObjectPair,
    RecordKey, RunCounters, RunStatus, RunTrigger, Side, Store, TenantId,
};

/// `bench api`
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Requests in flight at once (each on its own connection).
    #[arg(long, default_value_t = 16, value_name = "C")]
    pub concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20, value_name = "D")]
    pub duration_secs: u64,
    /// Tenants.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub tenants: usize,
    /// Runs stored per tenant.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub runs: usize,
    /// Open sync errors stored per tenant.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub errors: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The mix each task walks, in order (reads weigh more than writes); each entry is the
/// route's method and template.
const MIX: &[&str] = &[
    "GET /v1/tenants/{tenant}/sync",
    "GET /v1/tenants/{tenant}/runs",
    "GET /v1/tenants/{tenant}/sync-health",
    "GET /v1/tenants/{tenant}/sync-health/errors",
    "GET /v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/history",
    "GET /v1/tenants/{tenant}/runs/{run}",
    "GET /v1/tenants/{tenant}/sync",
    "GET /v1/tenants/{tenant}/runs",
    "PUT /v1/tenants/{tenant}/sync/schedule",
    "GET /v1/tenants/{tenant}/sync-health",
    "POST /v1/tenants/{tenant}/sync/trigger",
    "GET /metrics",
];

/// Figures of one route (or of all).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteFigures {
    /// Requests answered.
    pub requests: usize,
    /// Answers that were not 2xx.
    pub non_2xx: usize,
    /// Latency of the answered requests.
    pub latency: Latency,
}

/// The report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiReport {
    /// Concurrency.
    pub concurrency: usize,
    /// Seconds of load asked for.
    pub duration_secs: u64,
    /// Tenants, runs and errors per tenant.
    pub tenants: usize,
    /// Runs stored per tenant.
    pub runs_per_tenant: usize,
    /// Errors stored per tenant.
    pub errors_per_tenant: usize,
    /// Requests per second over the measured time.
    pub requests_per_sec: f64,
    /// Requests that got no answer (connection errors, timeouts).
    pub transport_errors: usize,
    /// All routes together.
    pub overall: RouteFigures,
    /// Per route.
    pub routes: BTreeMap<String, RouteFigures>,
    /// The 1-minute load average before and after the load (`/proc/loadavg`).
    pub load_average: (f64, f64),
    /// CPU time the `serve` process used during the load, in seconds.
    pub server_cpu_seconds: f64,
    /// CPU time this (load-generating) process used during the load, in seconds.
    pub client_cpu_seconds: f64,
}

/// Runs the benchmark.
pub fn run(args: ApiBenchArgs) -> anyhow::Result<ExitStatus> {
    ensure!(
        args.concurrency >= 1 && args.duration_secs >= 1 && args.tenants >= 1,
        "--concurrency, --duration-secs and --tenants must be at least 1"
    );
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(bench(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(ExitStatus::Success)
}

fn print_human(r: &ApiReport) {
    println!(
        "{} connections for {} s, {} tenants ({} runs, {} errors each); load average {:.2} -> {:.2}",
        r.concurrency,
        r.duration_secs,
        r.tenants,
        r.runs_per_tenant,
        r.errors_per_tenant,
        r.load_average.0,
        r.load_average.1
    );
    println!(
        "{:.0} requests/s, {} requests, {} non-2xx, {} transport errors",
        r.requests_per_sec, r.overall.requests, r.overall.non_2xx, r.transport_errors
    );
    println!(
        "CPU during the load: serve {:.1} s ({:.0} µs a request), this client {:.1} s",
        r.server_cpu_seconds,
        r.server_cpu_seconds * 1e6 / r.overall.requests.max(1) as f64,
        r.client_cpu_seconds
    );
    println!(
        "{:<72} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "route", "count", "non2xx", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, f: &RouteFigures| {
        println!(
            "{:<72} {:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            f.requests,
            f.non_2xx,
            f.latency.p50_ms,
            f.latency.p95_ms,
            f.latency.p99_ms,
            f.latency.max_ms
        )
    };
    for (name, f) in &r.routes {
        row(name, f);
    }
    row("overall", &r.overall);
}

/// CPU time (user + system) of process `pid` (`self` for this one) so far, in seconds,
/// from `/proc/<pid>/stat`; 0 off Linux.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The `dealbridge serve` child; killed when dropped.
struct ServeProcess {
    child: Child,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dealbridge serve` on 127.0.0.1 (any port) and waits for its "listening" log
/// line; its later log lines are read and dropped.
fn start_serve(database_url: &str, operator: &str) -> anyhow::Result<ServeProcess> {
    let exe = std::env::current_exe().context("locating the executable")?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--database-url")
        .arg(database_url)
        .env(OPERATOR_TOKEN_ENV, operator)
        .env(SECRET_KEY_ENV, random_hex(32))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `dealbridge serve`")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(sender) = &tx
                && let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "listening"
                && let Some(addr) = v["fields"]["addr"].as_str()
            {
                let _ = sender.send(addr.to_string());
                tx = None;
            }
        }
    });
    let mut serve = ServeProcess {
        child,
        base: String::new(),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .context("`dealbridge serve` did not report its address within 60 s")?;
    serve.base = format!("http://{addr}");
    Ok(serve)
}

/// One tenant as the load sees it.
#[derive(Debug, Clone)]
struct SeededTenant {
    id: String,
    token: String,
    run_id: i64,
    record_ids: Vec<String>,
}

async fn bench(args: &ApiBenchArgs) -> anyhow::Result<ApiReport> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("service.db").display()
    );
    let operator = random_hex(24);
    let serve = start_serve(&url, &operator)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = serve.base.clone();
    let client = ApiClient {
        http: http.clone(),
        base: base.clone(),
    };
    client.send(Method::GET, "/readyz", "", None).await?;

    let store = crate::store::open(&url)
        .await
        .context("opening the store")?;
    let mut tenants = Vec::with_capacity(args.tenants);
    for i in 0..args.tenants {
        let id = format!("api-bench-{i:04}");
        let created = client
            .json(
                Method::POST,
                "/v1/admin/tenants",
                &operator,
                &json!({"id": id, "name": format!("API bench tenant {i}")}),
            )
            .await?;
        let token = created["token"]["token"]
            .as_str()
            .context("no token in the tenant creation answer")?
            .to_string();
        client
            .send(
                Method::POST,
                &format!("/v1/tenants/{id}/sync/pause"),
                &token,
                None,
            )
            .await?;
        let (run_id, record_ids) = seed(store.as_ref(), &TenantId::new(&id)?, args).await?;
        tenants.push(SeededTenant {
            id,
            token,
            run_id,
            record_ids,
        });
    }
    drop(store);

    let load_before = load_average();
    let server_pid = serve.child.id().to_string();
    let cpu_before = (cpu_seconds(&server_pid), cpu_seconds("self"));
    let tenants = Arc::new(tenants);
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.concurrency {
        let (http, base, tenants, operator) = (
            http.clone(),
            base.clone(),
            tenants.clone(),
            operator.clone(),
        );
        tasks.spawn(async move {
            let mut samples: Vec<(usize, Duration, Option<u16>)> = Vec::new();
            let mut k = task;
            while Instant::now() < deadline {
                let route = k % MIX.len();
                k += 1;
                let t = &tenants[rand::random_range(0..tenants.len())];
                let req = request(&http, &base, &operator, route, t);
                let sent = Instant::now();
                let status = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        Some(status)
                    }
                    Err(_) => None,
                };
                samples.push((route, sent.elapsed(), status));
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.context("a load task")?);
    }
    let elapsed = started.elapsed();
    let load_after = load_average();
    let cpu = (
        cpu_seconds(&server_pid) - cpu_before.0,
        cpu_seconds("self") - cpu_before.1,
    );
    drop(serve);
    Ok(summarise(
        args,
        samples,
        elapsed,
        (load_before, load_after),
        cpu,
    ))
}

fn request(
    http: &reqwest::Client,
    base: &str,
    operator: &str,
    route: usize,
    t: &SeededTenant,
) -> reqwest::RequestBuilder {
    let tenant = format!("{base}/v1/tenants/{}", t.id);
    let record = &t.record_ids[rand::random_range(0..t.record_ids.len())];
    let token = t.token.as_str();
    let get = |url: String| http.get(url).bearer_auth(token);
    match MIX[route] {
        "GET /v1/tenants/{tenant}/sync" => get(format!("{tenant}/sync")),
        "GET /v1/tenants/{tenant}/runs" => get(format!("{tenant}/runs?limit=20")),
        "GET /v1/tenants/{tenant}/runs/{run}" => get(format!("{tenant}/runs/{}", t.run_id)),
        "GET /v1/tenants/{tenant}/sync-health" => get(format!("{tenant}/sync-health")),
        "GET /v1/tenants/{tenant}/sync-health/errors" => {
            get(format!("{tenant}/sync-health/errors?limit=50"))
        }
        "GET /v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/history" => get(format!(
            "{tenant}/records/opportunity_deal/salesforce/{record}/history"
        )),
        "PUT /v1/tenants/{tenant}/sync/schedule" => http
            .put(format!("{tenant}/sync/schedule"))
            .bearer_auth(token)
            .json(&json!({"interval_secs": 60 + rand::random_range(0..600u64)})),
        "POST /v1/tenants/{tenant}/sync/trigger" => http
            .post(format!("{tenant}/sync/trigger"))
            .bearer_auth(token),
        _ => http.get(format!("{base}/metrics")).bearer_auth(operator),
    }
}

fn summarise(
    args: &ApiBenchArgs,
    samples: Vec<(usize, Duration, Option<u16>)>,
    elapsed: Duration,
    load_average: (f64, f64),
    (server_cpu_seconds, client_cpu_seconds): (f64, f64),
) -> ApiReport {
    let figures = |rows: Vec<&(usize, Duration, Option<u16>)>| {
        let answered: Vec<_> = rows.iter().filter(|r| r.2.is_some()).collect();
        RouteFigures {
            requests: answered.len(),
            non_2xx: answered
                .iter()
                .filter(|r| !r.2.is_some_and(|s| (200..300).contains(&s)))
                .count(),
            latency: Latency::of(answered.iter().map(|r| r.1).collect()),
        }
    };
    let mut routes = BTreeMap::new();
    for name in MIX.iter().copied() {
        if routes.contains_key(name) {
            continue;
        }
        let rows = samples.iter().filter(|s| MIX[s.0] == name).collect();
        routes.insert(name.to_string(), figures(rows));
    }
    let overall = figures(samples.iter().collect());
    ApiReport {
        concurrency: args.concurrency,
        duration_secs: args.duration_secs,
        tenants: args.tenants,
        runs_per_tenant: args.runs,
        errors_per_tenant: args.errors,
        requests_per_sec: overall.requests as f64 / elapsed.as_secs_f64(),
        transport_errors: samples.iter().filter(|s| s.2.is_none()).count(),
        overall,
        routes,
        load_average,
        server_cpu_seconds,
        client_cpu_seconds,
    }
}

/// Writes a tenant's runs, open errors and record history, under its lease. Returns the
/// last run's id and the Salesforce ids that have history.
async fn seed(
    store: &dyn Store,
    tenant: &TenantId,
    args: &ApiBenchArgs,
) -> anyhow::Result<(i64, Vec<String>)> {
    let lease = lease(store, tenant).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut last_run = 0;
    for r in 0..args.runs.max(1) {
        let run = store.start_run(&lease, RunTrigger::Scheduled, now).await?;
        let counters = RunCounters {
            read_salesforce: 100 + r as i64,
            updated_hubspot: 90,
            failed: 3,
            ..RunCounters::default()
        };
        store.add_run_counters(tenant, run.id, &counters).await?;
        store
            .finish_run(tenant, run.id, RunStatus::PartiallyFailed, None, now)
            .await?;
        last_run = run.id;
    }
    let categories = [
        ErrorCategory::Validation,
        ErrorCategory::Duplicate,
        ErrorCategory::PicklistMismatch,
        ErrorCategory::AssociationWaiting,
    ];
    let record_id = |k: usize| format!("006{k:012}AAA");
    for k in 0..args.errors {
        let error = NewSyncError {
            object_pair: ObjectPair::OpportunityDeal,
            record: RecordKey {
                side: Side::Salesforce,
                id: record_id(k),
            },
            category: categories[k % categories.len()],
            message: format!("FIELD_CUSTOM_VALIDATION_EXCEPTION: Amount is required ({k})"),
            payload: json!({"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Amount"]}),
        };
        store.record_error(tenant, &error, now).await?;
    }
    let records: Vec<String> = (0..20).map(record_id).collect();
    let events: Vec<NewRecordEvent> = records
        .iter()
        .flat_map(|id| {
            (0..5).map(move |v| NewRecordEvent {
                object_pair: ObjectPair::OpportunityDeal,
                salesforce_id: Some(id.clone()),
                hubspot_id: Some(format!("{}", 9000 + v)),
                kind: EventKind::Updated,
                direction: Direction::SalesforceToHubSpot,
                source_version: format!("2026-01-0{}T00:00:00Z", v + 1),
                run_id: Some(last_run),
                at_ms: now,
                fields: json!({"amount": {"from": "100", "to": format!("{}", 200 + v)}}),
                message: None,
            })
        })
        .collect();
    store.append_events(tenant, &events).await?;
    store.release_lease(&lease, None).await?;
    Ok((last_run, records))
}

/// The tenant's lease for seeding (the scheduler may hold it for a moment after the
/// tenant was created and before it was paused).
async fn lease(store: &dyn Store, tenant: &TenantId) -> anyhow::Result<Lease> {
    for _ in 0..200 {
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(lease) = store
            .try_acquire_lease(tenant, "api-bench-seed", 60_000, now)
            .await?
        {
            return Ok(lease);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("tenant {tenant}'s lease stayed taken for 10 s")
}
