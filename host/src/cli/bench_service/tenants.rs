//! `dealbridge bench tenants [--tenants N] [--json]`: N tenants in one service process,
//! each with its own plugin version.
//!
//! Every tenant gets a distinct component: the default rules with a custom section naming
//! the tenant, so each has its own sha256 and its own compiled artefact. Two phases:
//!
//! 1. **Prepare** (this process): every tenant's component is loaded once through a
//!    [`Runtime`] whose compile cache is a persistent directory (by default
//!    `bench-cache/tenant-components` beside the `dealbridge` executable, i.e. under the
//!    cargo target dir), so only the first run compiles (minutes for 1,000; a progress
//!    bar shows it) and later runs find every artefact there.
//! 2. **Measure** (a fresh child process, `--measure-only`, so that nothing of phase 1
//!    is resident): an in-process service (`AppState` over a new SQLite file, the API on
//!    127.0.0.1) with N tenants; each tenant uploads its component over HTTP (size cap,
//!    validation, load from the compiled cache, `InstancePre`, `describe`, stored by
//!    content address), attaches one rule-test fixture and activates the version (the
//!    test runs, the activation is stored). Upload plus activate is the activation time.
//!    Then every tenant's active version is fetched the way the scheduler does (the
//!    service's plugin cache) and invoked once, to show that each is live and distinct.
//!    Resident memory is read before, after the activations and after the invocations.
//!
//! The measured phase must compile nothing: it counts the cache directory's artefacts
//! before and after and reports any that appeared.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiClient, Latency, Resident, random_hex};
use crate::api::plugins::loaded;
use crate::api::{self, ApiConfig, AppState};
use crate::cli::ExitStatus;
use crate::runtime::{Invocation, LoadSource, Runtime, RuntimeConfig};
use crate::store::TenantId;

/// The rule-test fixture every tenant attaches before activating (one of the default
/// rules' own fixtures).
const FIXTURE: &str =
    include_str!("../../../../rules-wasm/default-rules/fixtures/condition-met-included.json");

/// The custom section that makes each tenant's component distinct.
const TENANT_SECTION: &str = "dealbridge-bench-tenant";

/// `bench tenants`
#[derive(Debug, Args)]
pub struct TenantsBenchArgs {
    /// Tenants, each with its own plugin version.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub tenants: usize,
    /// The persistent compile cache (default: `bench-cache/tenant-components` beside the
    /// executable).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run the measured phase only, in this process, and print its JSON (used by the
    /// benchmark itself for its child process).
    #[arg(long, hide = true)]
    pub measure_only: bool,
}

/// What the prepare phase did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    /// Components compiled now (and written to the cache).
    pub compiled: usize,
    /// Components whose artefact was already in the cache.
    pub cached: usize,
    /// How long the phase took, in seconds.
    pub seconds: f64,
}

/// The figures of the measured phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Tenants.
    pub tenants: usize,
    /// Upload + activate per tenant (the activation time).
    pub activation: Latency,
    /// The upload alone (validate, load from the compiled cache, `InstancePre`,
    /// `describe`, store).
    pub upload: Latency,
    /// The activate call alone (run the version's rule test, store the activation).
    pub activate: Latency,
    /// Wall time of all N activations, in seconds.
    pub activation_total_seconds: f64,
    /// One invocation (`describe`) per tenant of its active version.
    pub invocation: Latency,
    /// Distinct component digests among the active versions (N when every tenant has
    /// its own).
    pub distinct_active_digests: usize,
    /// Artefacts that appeared in the compile cache during this phase (0: nothing was
    /// compiled).
    pub compiled_during_measure: usize,
    /// Resident set before the first upload (service, store and N tenants set up).
    pub rss_before: Resident,
    /// Resident set after the last activation.
    pub rss_after_activation: Resident,
    /// Resident set after one invocation of each tenant.
    pub rss_after_invocations: Resident,
    /// `(rss_after_invocations - rss_before) / tenants`, KiB.
    pub rss_per_tenant_kib: f64,
    /// The same for anonymous memory alone, KiB.
    pub rss_anon_per_tenant_kib: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantsReport {
    /// The compile cache used.
    pub cache_dir: PathBuf,
    /// The prepare phase.
    pub prepare: Prepared,
    /// The measured phase (its own process).
    pub measured: Measured,
}

/// Runs the benchmark.
pub fn run(args: TenantsBenchArgs) -> anyhow::Result<ExitStatus> {
    ensure!(args.tenants >= 1, "--tenants must be at least 1");
    let cache_dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => default_cache_dir()?,
    };
    if args.measure_only {
        let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let measured = rt.block_on(measure(args.tenants, &cache_dir))?;
        println!("{}", serde_json::to_string(&measured)?);
        return Ok(ExitStatus::Success);
    }
    if !args.json {
        println!(
            "bench tenants: {} tenants, compile cache {}",
            args.tenants,
            cache_dir.display()
        );
    }
    let prepare = prepare(args.tenants, &cache_dir, !args.json)?;
    if !args.json {
        println!(
            "prepared: {} compiled now, {} already cached ({:.1} s); measuring in a fresh process",
            prepare.compiled, prepare.cached, prepare.seconds
        );
    }
    let measured = measure_in_child(args.tenants, &cache_dir)?;
    let report = TenantsReport {
        cache_dir,
        prepare,
        measured,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report.measured);
    }
    Ok(ExitStatus::Success)
}

fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the executable")?;
    let dir = exe
        .parent()
        .context("the executable has no directory")?
        .join("bench-cache")
        .join("tenant-components");
    Ok(dir)
}

fn print_human(m: &Measured) {
    println!("tenants:                 {}", m.tenants);
    println!("activation (upload + activate): {}", m.activation.human());
    println!("  upload:                {}", m.upload.human());
    println!("  activate:              {}", m.activate.human());
    println!(
        "all activations:         {:.2} s",
        m.activation_total_seconds
    );
    println!("one invocation each:     {}", m.invocation.human());
    println!(
        "distinct active digests: {} of {}; compiled while measuring: {}",
        m.distinct_active_digests, m.tenants, m.compiled_during_measure
    );
    println!("RSS before:              {}", m.rss_before.human());
    println!(
        "RSS after activations:   {}",
        m.rss_after_activation.human()
    );
    println!(
        "RSS after invocations:   {}",
        m.rss_after_invocations.human()
    );
    println!(
        "RSS per tenant:          {:.1} KiB ({:.1} KiB anonymous)",
        m.rss_per_tenant_kib, m.rss_anon_per_tenant_kib
    );
}

/// Tenant `i`'s id.
fn tenant_id(i: usize) -> String {
    format!("bench-t{i:05}")
}

/// The default rules with a custom section naming `tenant` appended: a valid component
/// with its own digest.
pub fn tenant_component(tenant: &str) -> Vec<u8> {
    let base = crate::sync::start::default_rules();
    let mut payload = Vec::new();
    leb128(&mut payload, TENANT_SECTION.len());
    payload.extend_from_slice(TENANT_SECTION.as_bytes());
    payload.extend_from_slice(tenant.as_bytes());
    let mut out = Vec::with_capacity(base.len() + payload.len() + 8);
    out.extend_from_slice(base);
    out.push(0); // custom section id
    leb128(&mut out, payload.len());
    out.extend_from_slice(&payload);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn runtime_with_cache(cache_dir: &Path) -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.to_path_buf()),
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e}"))
}

/// Phase 1: every tenant's artefact in the persistent cache.
fn prepare(tenants: usize, cache_dir: &Path, progress: bool) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let runtime = runtime_with_cache(cache_dir)?;
    let bar = if progress {
        indicatif::ProgressBar::new(tenants as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("compiling");
    let (mut compiled, mut cached) = (0, 0);
    for i in 0..tenants {
        let plugin = runtime
            .load(&tenant_component(&tenant_id(i)))
            .map_err(|e| anyhow::anyhow!("loading tenant {i}'s component: {e}"))?;
        match plugin.source() {
            LoadSource::Compiled => compiled += 1,
            LoadSource::Cache => cached += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Prepared {
        compiled,
        cached,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn measure_in_child(tenants: usize, cache_dir: &Path) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("locating the executable")?;
    let out = std::process::Command::new(exe)
        .args(["bench", "tenants", "--measure-only", "--tenants"])
        .arg(tenants.to_string())
        .arg("--cache-dir")
        .arg(cache_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the measuring process")?;
    if !out.status.success() {
        bail!("the measuring process failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the measuring process printed no result")?;
    serde_json::from_str(line).context("reading the measuring process's result")
}

fn cached_artefacts(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    })
}

/// Phase 2, in its own process.
async fn measure(tenants: usize, cache_dir: &Path) -> anyhow::Result<Measured> {
    let db_dir = tempfile::tempdir().context("a temporary directory")?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        db_dir.path().join("bench.db").display()
    );
    let store = crate::store::open(&url)
        .await
        .context("opening the store")?;
    let operator = random_hex(24);
    let config = ApiConfig {
        // Every tenant's version stays compiled in memory, as for tenants that all sync.
        plugin_cache_entries: tenants + 16,
        ..ApiConfig::default()
    };
    let state = AppState::new(
        Arc::clone(&store),
        runtime_with_cache(cache_dir)?,
        &operator,
        &random_hex(32),
        config,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let client = ApiClient {
        http: reqwest::Client::new(),
        base,
    };

    let bar = indicatif::ProgressBar::new(tenants as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("tenants");
    let mut tokens = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let created = client
            .json(
                Method::POST,
                "/v1/admin/tenants",
                &operator,
                &json!({"id": tenant_id(i), "name": format!("Bench tenant {i}")}),
            )
            .await?;
        let token = created["token"]["token"]
            .as_str()
            .context("no token in the tenant creation answer")?
            .to_string();
        tokens.push(token);
        bar.inc(1);
    }
    let fixture: Value = serde_json::from_str(FIXTURE).context("the bench fixture")?;
    let artefacts_before = cached_artefacts(cache_dir);
    let rss_before = Resident::now();

    bar.reset();
    bar.set_message("activating");
    let (mut uploads, mut activates, mut activations) = (Vec::new(), Vec::new(), Vec::new());
    let mut versions = Vec::with_capacity(tenants);
    let all = Instant::now();
    let mut attach_time = Duration::ZERO;
    for (i, token) in tokens.iter().enumerate() {
        let t = tenant_id(i);
        let bytes = tenant_component(&t);
        let started = Instant::now();
        let uploaded = client
            .send(
                Method::POST,
                &format!("/v1/tenants/{t}/plugins?label=bench"),
                token,
                Some(("application/wasm", bytes)),
            )
            .await?;
        let upload = started.elapsed();
        let id = uploaded["version"]["id"]
            .as_i64()
            .context("no version id in the upload answer")?;
        let attach = Instant::now();
        client
            .json(
                Method::POST,
                &format!("/v1/tenants/{t}/plugins/{id}/fixtures"),
                token,
                &json!({"name": "condition-met-included", "fixture": fixture}),
            )
            .await?;
        attach_time += attach.elapsed();
        let started = Instant::now();
        client
            .send(
                Method::POST,
                &format!("/v1/tenants/{t}/plugins/{id}/activate"),
                token,
                None,
            )
            .await?;
        let activate = started.elapsed();
        uploads.push(upload);
        activates.push(activate);
        activations.push(upload + activate);
        versions.push(id);
        bar.inc(1);
    }
    let activation_total = all.elapsed().saturating_sub(attach_time);
    let rss_after_activation = Resident::now();

    bar.reset();
    bar.set_message("invoking");
    let mut invocations = Vec::with_capacity(tenants);
    let mut digests = std::collections::HashSet::new();
    for (i, id) in versions.iter().enumerate() {
        let tenant = TenantId::new(tenant_id(i))?;
        let version = store
            .plugin_version(&tenant, *id)
            .await?
            .context("an uploaded version vanished")?;
        ensure!(
            version.active,
            "tenant {tenant}'s version {id} is not active"
        );
        let started = Instant::now();
        let plugin = loaded(&state, &tenant, &version).await?;
        let described = plugin.describe(&Invocation::with_defaults(), &[]).await;
        invocations.push(started.elapsed());
        described
            .result
            .map_err(|e| anyhow::anyhow!("tenant {tenant}'s plugin: {e}"))?;
        ensure!(
            plugin.digest() == version.sha256,
            "tenant {tenant} got another tenant's plugin"
        );
        digests.insert(version.sha256);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rss_after_invocations = Resident::now();
    let compiled_during_measure = cached_artefacts(cache_dir).saturating_sub(artefacts_before);
    let _ = stop.send(());
    let _ = server.await;
    Ok(Measured {
        tenants,
        activation: Latency::of(activations),
        upload: Latency::of(uploads),
        activate: Latency::of(activates),
        activation_total_seconds: activation_total.as_secs_f64(),
        invocation: Latency::of(invocations),
        distinct_active_digests: digests.len(),
        compiled_during_measure,
        rss_per_tenant_kib: rss_after_invocations
            .total_kib
            .saturating_sub(rss_before.total_kib) as f64
            / tenants as f64,
        rss_anon_per_tenant_kib: rss_after_invocations
            .anon_kib
            .saturating_sub(rss_before.anon_kib) as f64
            / tenants as f64,
        rss_before,
        rss_after_activation,
        rss_after_invocations,
    })
}
