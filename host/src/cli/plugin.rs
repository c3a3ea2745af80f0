//! `dealbridge plugin check|run|test`: local tooling for rules components,
//! on the same runtime and fixture runner that the service uses.
//!
//! Human-readable output by default, `--json` for machines. Exit codes as in
//! [`ExitStatus`]: 0 all good, 1 the plugin or a test failed, 2 the command
//! could not run (missing file, bad fixture, bad arguments). This module must
//! never reach a real CRM: `run` and `test` answer requests from fixtures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use super::ExitStatus;
use crate::runtime::fixture::{self, convert};
use crate::runtime::{
    Invocation, InvokeError, Limits, LoadedPlugin, PlanPath, RunReport, Runtime, RuntimeConfig,
    TraceOutcome,
};

/// Inspect, run and test a rules component locally.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Check that a component fits the contract; print its world version,
    /// imports, exports and declared mappings.
    Check(CheckArgs),
    /// Run one invocation from a fixture; print the output, fuel, peak
    /// memory, wall time and the HTTP trace (CRM responses come from the fixture).
    Run(RunArgs),
    /// Run rule-test fixtures (files or folders of `*.json`) on every path the
    /// component plans on (`rules`, and `flat-rules` when it exports it);
    /// print one line per case and `N passed, N failed`.
    Test(TestArgs),
}

/// Options shared by every plugin subcommand.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Largest component accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub max_bytes: u64,
    /// Cache compiled components in this directory (`<sha256>-<engine>.cwasm`).
    #[arg(long, value_name = "DIR", env = "DEALBRIDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Per-invocation limits as a JSON file (the tenant policy: `fuel`,
    /// `deadline_ms`, `memory_bytes`, ...); unknown keys are refused.
    #[arg(long, value_name = "FILE")]
    pub limits: Option<PathBuf>,
}

/// `plugin check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// The tenant's plugin config (a JSON object) passed to `describe`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `plugin run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// The fixture to run (see docs/fixtures.md).
    #[arg(long, value_name = "FILE")]
    pub fixture: PathBuf,
    /// A plugin config (JSON object) that replaces the fixture's `config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plan on this path: `nested` (`rules`) or `flat` (`flat-rules`, when
    /// the component exports it). Default: the path the host plans on.
    #[arg(long, value_enum, value_name = "PATH")]
    pub path: Option<PathArg>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The `--path` of `plugin run`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PathArg {
    /// `rules`: the batch as nested values.
    Nested,
    /// `flat-rules`: the batch in the flat form.
    Flat,
}

impl From<PathArg> for PlanPath {
    fn from(p: PathArg) -> Self {
        match p {
            PathArg::Nested => PlanPath::Nested,
            PathArg::Flat => PlanPath::Flat,
        }
    }
}

/// `plugin test`
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// Fixture files or folders (searched recursively for `*.json`).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs a plugin subcommand.
pub fn run(cmd: PluginCommand) -> Result<ExitStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async {
        match cmd {
            PluginCommand::Check(a) => check(a).await,
            PluginCommand::Run(a) => run_one(a).await,
            PluginCommand::Test(a) => test(a).await,
        }
    })
}

fn runtime(common: &CommonArgs) -> Result<Runtime> {
    let config = RuntimeConfig {
        cache_dir: common.cache_dir.clone(),
        max_component_bytes: common.max_bytes,
        max_concurrent_instances: 4,
        ..RuntimeConfig::default()
    };
    Runtime::new(config).map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))
}

fn base_limits(common: &CommonArgs) -> Result<Limits> {
    match &common.limits {
        None => Ok(Limits::default()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a limits policy", p.display()))
        }
    }
}

fn read_json_object(p: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let v: Json =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
    anyhow::ensure!(
        v.is_object(),
        "{}: the plugin config must be a JSON object",
        p.display()
    );
    Ok(v)
}

/// Loads a component; a refusal is printed and turned into exit status 1.
fn load(
    rt: &Runtime,
    file: &Path,
    as_json: bool,
) -> Result<std::result::Result<LoadedPlugin, ExitStatus>> {
    let bytes = match std::fs::metadata(file) {
        Ok(m) if m.len() > rt.config().max_component_bytes => {
            // Refuse before reading a huge file into memory.
            let e = crate::runtime::LoadError::TooLarge {
                size: m.len(),
                max: rt.config().max_component_bytes,
            };
            print_refusal(file, &e, as_json);
            return Ok(Err(ExitStatus::Failures));
        }
        _ => std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    };
    match rt.load(&bytes) {
        Ok(p) => Ok(Ok(p)),
        Err(e) => {
            print_refusal(file, &e, as_json);
            Ok(Err(ExitStatus::Failures))
        }
    }
}

fn print_refusal(file: &Path, e: &crate::runtime::LoadError, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({ "file": file.display().to_string(), "ok": false, "error": e.to_string() })
        );
    } else {
        eprintln!("error: {}: {e}", file.display());
    }
}

async fn check(a: CheckArgs) -> Result<ExitStatus> {
    let rt = runtime(&a.common)?;
    let config = match &a.config {
        Some(p) => read_json_object(p)?,
        None => json!({}),
    };
    let plugin = match load(&rt, &a.file, a.common.json)? {
        Ok(p) => p,
        Err(status) => return Ok(status),
    };
    let limits = base_limits(&a.common)?;
    let inv = Invocation::new(
        limits,
        &config,
        std::sync::Arc::new(crate::runtime::DenyAllGateway),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let described = plugin.describe(&inv, &[]).await;
    let world = plugin.world();
    let description = described
        .result
        .as_ref()
        .ok()
        .map(convert::description_to_json);
    if a.common.json {
        let mut out = json!({
            "file": a.file.display().to_string(),
            "ok": described.result.is_ok(),
            "sha256": plugin.digest(),
            "package": "dealbridge:rules",
            "world": world.world_name(),
            "contract_version": world.contract_version,
            "flat_rules": world.flat_rules,
            "exports": world.exports,
            "imports": world.imports,
            "description": description,
        });
        if let Err(e) = &described.result {
            out["error"] = json!(e.to_string());
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {}",
            a.file.display(),
            match &described.result {
                Ok(_) => "ok",
                Err(InvokeError::Contract(_)) => "does not fit the contract",
                Err(_) => "describe failed",
            }
        );
        println!("  sha256     {}", plugin.digest());
        println!(
            "  contract   dealbridge:rules@{} (world `{}`)",
            world.contract_version,
            world.world_name()
        );
        println!(
            "  planning   {}",
            if world.flat_rules {
                "flat (`flat-rules`; `rules` too)"
            } else {
                "nested (`rules`)"
            }
        );
        println!("  exports    {}", world.exports.join(", "));
        println!("  imports    {}", world.imports.join(", "));
        match &described.result {
            Ok(d) => {
                println!("  plugin     {} {}", d.name, d.version);
                let pairs: Vec<_> = d
                    .object_pairs
                    .iter()
                    .map(|p| convert::object_pair_name(*p))
                    .collect();
                println!("  pairs      {}", pairs.join(", "));
                println!("  mappings   {}", d.mappings.len());
                for m in &d.mappings {
                    println!(
                        "    {:<18} {:<28} <-> {:<28} {}",
                        convert::object_pair_name(m.object_pair),
                        m.salesforce_field,
                        m.hubspot_field,
                        convert::sync_rule_name(m.rule)
                    );
                }
                for f in &d.extra_fields {
                    println!(
                        "  extra      {} {} {}",
                        convert::crm_name(f.crm),
                        convert::object_pair_name(f.object_pair),
                        f.name
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {}: describe: {e}", a.file.display());
                print_stdio(&described.report);
            }
        }
    }
    Ok(if described.result.is_ok() {
        ExitStatus::Success
    } else {
        ExitStatus::Failures
    })
}

async fn run_one(a: RunArgs) -> Result<ExitStatus> {
    let rt = runtime(&a.common)?;
    let fx = fixture::load(&a.fixture)?;
    let config = a.config.as_deref().map(read_json_object).transpose()?;
    let limits = base_limits(&a.common)?;
    let plugin = match load(&rt, &a.file, a.common.json)? {
        Ok(p) => p,
        Err(status) => return Ok(status),
    };
    let path = a.path.map(PlanPath::from);
    if let Some(asked) = path
        && !plugin.plan_paths().contains(&asked)
    {
        anyhow::bail!(
            "{}: --path {}: the component does not export `{}` (it plans on {})",
            a.file.display(),
            if asked == PlanPath::Flat {
                "flat"
            } else {
                "nested"
            },
            asked.interface(),
            plugin.default_path().interface()
        );
    }
    let run = fixture::run_on(&plugin, &fx, &limits, config.as_ref(), path).await?;
    if a.common.json {
        let out = json!({ "output": run.output, "report": run.report });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&run.output)?);
        print_report(&run.report);
    }
    Ok(if run.error.is_some() {
        ExitStatus::Failures
    } else {
        ExitStatus::Success
    })
}

fn print_report(r: &RunReport) {
    println!("export        {}", r.export);
    println!("fuel used     {} of {}", r.fuel_used, r.fuel_limit);
    println!("peak memory   {} bytes", r.peak_memory_bytes);
    println!("wall time     {:.3} ms", r.wall_time_us as f64 / 1000.0);
    println!("input/output  {} / {} bytes", r.input_bytes, r.output_bytes);
    if r.http.is_empty() {
        println!("http          none");
    } else {
        println!("http          {} request(s)", r.http.len());
        for h in &r.http {
            let status = h.status.map_or("-".to_string(), |s| s.to_string());
            let outcome = match h.outcome {
                TraceOutcome::Ok => String::new(),
                other => format!(
                    "  [{}{}]",
                    serde_json::to_value(other)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    h.detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
            };
            println!(
                "  {:<10} {:<6} {:<48} {:>4} {:>7}B {:>8.2}ms{outcome}",
                h.target.as_str(),
                h.method,
                h.path,
                status,
                h.response_bytes,
                h.ms
            );
        }
    }
    for l in &r.logs {
        println!(
            "log {:<5}     {}",
            format!("{:?}", l.level).to_lowercase(),
            l.message
        );
    }
    if r.log_dropped_lines > 0 {
        println!(
            "log dropped   {} line(s), {} bytes",
            r.log_dropped_lines, r.log_dropped_bytes
        );
    }
    for hit in &r.limits_hit {
        println!("limit         {hit}");
    }
    print_stdio(r);
}

fn print_stdio(r: &RunReport) {
    if !r.stdout.is_empty() {
        println!("stdout:\n{}", r.stdout.trim_end());
    }
    if !r.stderr.is_empty() {
        println!("stderr:\n{}", r.stderr.trim_end());
    }
    if r.stdio_dropped_bytes > 0 {
        println!("stdio dropped {} bytes", r.stdio_dropped_bytes);
    }
}

async fn test(a: TestArgs) -> Result<ExitStatus> {
    let rt = runtime(&a.common)?;
    let limits = base_limits(&a.common)?;
    let files = fixture::collect(&a.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no fixtures (*.json) found in the given paths"
    );
    let plugin = match load(&rt, &a.file, a.common.json)? {
        Ok(p) => p,
        Err(status) => return Ok(status),
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut cases = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        let (failures, runs) = match fixture::load(file) {
            Err(e) => (vec![e.to_string()], Vec::new()),
            Ok(fx) => match fixture::run_every_path(&plugin, &fx, &limits).await {
                Err(e) => (vec![e.to_string()], Vec::new()),
                Ok(runs) => (fixture::check_every_path(&fx, &runs), runs),
            },
        };
        let ok = failures.is_empty();
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
        if a.common.json {
            // `output` and `fuel_used` are those of the path the host plans on.
            let default_path = plugin.default_path();
            let last = runs
                .iter()
                .find(|r| r.path == default_path)
                .or(runs.last())
                .map(|r| &r.run);
            cases.push(json!({
                "case": name,
                "passed": ok,
                "failures": failures,
                "paths": runs.iter().map(|r| json!({
                    "interface": r.path.interface(),
                    "fuel_used": r.run.report.fuel_used,
                    "wall_time_us": r.run.report.wall_time_us,
                })).collect::<Vec<_>>(),
                "output": last.map(|r| r.output.clone()),
                "fuel_used": last.map(|r| r.report.fuel_used),
            }));
        } else if ok {
            let per_path: Vec<String> = runs
                .iter()
                .map(|r| {
                    let prefix = if runs.len() > 1 {
                        format!("{}: ", r.path.interface())
                    } else {
                        String::new()
                    };
                    format!(
                        "{prefix}fuel {}, {:.2} ms",
                        r.run.report.fuel_used,
                        r.run.report.wall_time_us as f64 / 1000.0
                    )
                })
                .collect();
            println!("ok     {name}  ({})", per_path.join("; "));
        } else {
            println!("FAIL   {name}: {}", failures.join("; "));
        }
    }
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "cases": cases, "passed": passed, "failed": failed })
            )?
        );
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failures
    })
}
