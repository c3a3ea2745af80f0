//! Runtime benchmarks (figures printed, not timed tests):
//! - instantiate + call of the default rules: p50 / p99 (target p50 <= 10 µs), and the host's
//!   floor for the same component without its planning (`floor`), which splits that figure
//!   between the host and the rules;
//! - records/s through the component in batches, on each path it plans on (`rules`, and
//!   `flat-rules` when it exports it), vs the same rules in native Rust, in one run (targets: at
//!   least 1M records/s on one core, a ratio of at most 3); on `flat-rules` also flat in, flat
//!   out (`flat in/out`: the batch flattened beforehand and the flat plan not nested, as the
//!   native flat planner is measured);
//! - compile time and cached-artefact load time;
//! - resident memory per live instance.
//!
//! Run: `cargo bench -p dealbridge --bench runtime`; name sections to run only those
//! (`-- latency throughput`; sections: compile, memory, latency, floor, throughput).
//! `DEALBRIDGE_BENCH_POOL=N` shrinks the instance pool to N slots, so that the process fits in
//! the address space of a profiler such as `valgrind --tool=callgrind` (the memory section needs
//! at least 251). `DEALBRIDGE_BENCH_RULES=path.wasm` benches another build of the default rules.
//! `DEALBRIDGE_BENCH_FIGURE=TEXT` runs only the latency and floor figures whose label contains
//! TEXT. `DEALBRIDGE_BENCH_PATH=rules|flat-rules` runs the throughput section on that path only (for a
//! profiler). `DEALBRIDGE_BENCH_SAMPLES=N` measures N calls per latency figure instead of 20,000 (after
//! N / 10 unmeasured ones), for runs under a profiler. `DEALBRIDGE_BENCH_KEEP_RESIDENT=BYTES`
//! sets how much dirtied memory a pool slot keeps resident (`RuntimeConfig::keep_resident_bytes`).
//!
//! The bench allocates with mimalloc, as the `dealbridge` binary does, so that the host's
//! allocations (the nested outcomes, above all) cost what they cost in the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dealbridge::runtime::gateway::{
    CrmGateway, GatewayError, GuestRequest, GuestResponse, SendBudget,
};
use dealbridge::runtime::{Invocation, Limits, PlanPath, Runtime, RuntimeConfig};
use serde_json::json;

#[macro_use]
mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Holds every request until released, so that invocations stay alive.
struct Hold {
    waiting: AtomicUsize,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl CrmGateway for Hold {
    async fn send(&self, _r: &GuestRequest, _b: SendBudget) -> Result<GuestResponse, GatewayError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Each released permit lets exactly one request through (and is used up), so the
        // requests that find none stay held.
        self.release
            .acquire()
            .await
            .map_err(|e| GatewayError::Transport(e.to_string()))?
            .forget();
        Ok(GuestResponse {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        })
    }
}

/// Whether a section was asked for (all of them when none is named).
fn wanted(section: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == section)
}

/// Whether a latency figure was asked for: `DEALBRIDGE_BENCH_FIGURE=TEXT` runs only the latency
/// and floor figures whose label contains TEXT (so that a profiler sees one kind of call).
fn figure_wanted(label: &str) -> bool {
    std::env::var("DEALBRIDGE_BENCH_FIGURE").map_or(true, |only| label.contains(only.as_str()))
}

/// A tenant config of the size real tenants have (the README's example): rules, a stage table,
/// a custom mapping and a sync condition that every record of the bench batches passes.
fn tenant_config() -> serde_json::Value {
    json!({
        "multi_currency": false,
        "rules": {
            "opportunity-deal": { "Amount": "two-way", "Description": "dont-sync" },
            "account-company": { "Phone": "always-salesforce" },
            "contact-contact": { "Title": "two-way" }
        },
        "stage_map": {
            "Default": { "Prospecting": "appointmentscheduled", "Closed Won": "closedwon" },
            "Enterprise": { "Discovery": "ent-discovery" }
        },
        "custom_mappings": [
            { "object_pair": "opportunity-deal", "salesforce_field": "Priority__c",
              "hubspot_field": "deal_priority", "rule": "two-way" }
        ],
        "condition": { "min_amount": "10.00" }
    })
}

/// Limits that a large batch fits in.
fn large_batch_limits() -> Limits {
    Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 60_000,
        input_bytes: 1 << 30,
        output_bytes: 1 << 30,
        memory_bytes: 256 << 20,
        ..Limits::default()
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rules = std::env::var("DEALBRIDGE_BENCH_RULES")
        .unwrap_or_else(|_| dealbridge_guests::DEFAULT_RULES.to_string());
    let bytes = std::fs::read(&rules).unwrap();
    println!(
        "dealbridge runtime benchmarks (default rules: {rules}, {} bytes)",
        bytes.len()
    );
    let cache = tempfile::tempdir().unwrap();
    let defaults = RuntimeConfig::default();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().into()),
        max_concurrent_instances: std::env::var("DEALBRIDGE_BENCH_POOL")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(defaults.max_concurrent_instances),
        keep_resident_bytes: std::env::var("DEALBRIDGE_BENCH_KEEP_RESIDENT")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(defaults.keep_resident_bytes),
        ..defaults
    };
    println!(
        "pool slots {}, kept resident per slot {} KiB",
        config.max_concurrent_instances,
        config.keep_resident_bytes >> 10
    );
    if wanted("compile") {
        compile_and_load(&config, &bytes);
    }
    let rt = Runtime::new(config).unwrap();
    let plugin = rt.load(&bytes).unwrap();
    let hostile = rt
        .load(&std::fs::read(dealbridge_guests::HOSTILE).unwrap())
        .unwrap();
    if wanted("memory") {
        memory_per_live_instance(&tokio, &rt, &hostile);
    }
    if wanted("latency") {
        latency(&tokio, &plugin);
    }
    if wanted("floor") {
        let floor = rt
            .load(&std::fs::read(dealbridge_guests::DEFAULT_RULES_FLOOR).unwrap())
            .unwrap();
        host_floor(
            &tokio,
            &floor,
            "host floor (default rules, no planning, 1 pair)",
        );
        host_floor(
            &tokio,
            &hostile,
            "host floor (trivial wasip2 guest, 1 pair)",
        );
    }
    if wanted("throughput") {
        throughput(&tokio, &plugin);
    }
}

/// Compile time and cached-artefact load time.
fn compile_and_load(config: &RuntimeConfig, bytes: &[u8]) {
    let rt = Runtime::new(config.clone()).unwrap();
    let t = Instant::now();
    rt.load(bytes).unwrap();
    let compile = t.elapsed();
    let mut loads = Vec::new();
    for _ in 0..20 {
        let rt2 = Runtime::new(config.clone()).unwrap();
        let t = Instant::now();
        let p = rt2.load(bytes).unwrap();
        loads.push(t.elapsed());
        assert_eq!(p.source(), dealbridge::runtime::LoadSource::Cache);
    }
    loads.sort();
    println!(
        "compile (Cranelift, incl. validation + cache write): {:>10.2} ms",
        compile.as_secs_f64() * 1e3
    );
    println!(
        "cached artefact load (p50 of 20):                    {:>10.2} ms",
        percentile(&loads, 0.5).as_secs_f64() * 1e3
    );
}

/// Resident memory per live instance: K invocations of the hostile component held inside a CRM
/// call at once (the default rules make no CRM call, so they cannot be held open), the process's
/// RSS before and while they are alive; then what the pool keeps resident once they are gone.
fn memory_per_live_instance(
    tokio: &tokio::runtime::Runtime,
    rt: &Runtime,
    hostile: &dealbridge::runtime::LoadedPlugin,
) {
    let k = 250usize;
    let hold = Arc::new(Hold {
        waiting: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let inv = Invocation::new(
        Limits::default(),
        &json!({"attack": "request-flood", "count": 1}),
        hold.clone(),
    )
    .unwrap();
    let batch = make_batch!(dealbridge::runtime, 1);
    tokio.block_on(async {
        // Warm the allocator and one pool slot.
        hold.release.add_permits(1);
        let warm = hostile.plan(&inv, &batch).await;
        assert_eq!(warm.report.http.len(), 1, "{:?}", warm.result);
        hold.waiting.store(0, Ordering::SeqCst);
        let before = rss_bytes();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for _ in 0..k {
                    let (h, i, b) = (hostile.clone(), inv.clone(), batch.clone());
                    tasks.push(tokio::task::spawn_local(
                        async move { h.plan(&i, &b).await },
                    ));
                }
                while hold.waiting.load(Ordering::SeqCst) < k {
                    tokio::task::yield_now().await;
                }
                let during = rss_bytes();
                let live = rt
                    .engine()
                    .pooling_allocator_metrics()
                    .map_or(0, |m| m.memories());
                println!(
                    "resident memory per live instance ({k} live, {live} pooled memories in use, hostile component): {:>8.1} KiB",
                    during.saturating_sub(before) as f64 / k as f64 / 1024.0
                );
                hold.release.add_permits(k);
                for t in tasks {
                    let r = t.await.unwrap();
                    assert_eq!(r.report.http.len(), 1, "{:?}", r.result);
                }
            })
            .await;
        let after = rss_bytes();
        let kept = rt
            .engine()
            .pooling_allocator_metrics()
            .map_or(0, |m| m.unused_memory_bytes_resident());
        println!(
            "after they ended: RSS {:+.1} KiB per instance vs before; pool keeps {:.1} KiB of linear memory resident in {} warm slots",
            (after as f64 - before as f64) / k as f64 / 1024.0,
            kept as f64 / 1024.0,
            rt.engine()
                .pooling_allocator_metrics()
                .map_or(0, |m| m.unused_warm_memories())
        );
    });
}

/// Measured calls per latency figure (`DEALBRIDGE_BENCH_SAMPLES`, default 20,000).
fn samples() -> usize {
    std::env::var("DEALBRIDGE_BENCH_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Samples `n` calls of `call` after `warm` unmeasured ones; sorted durations.
fn sample<F, Fut>(
    tokio: &tokio::runtime::Runtime,
    warm: usize,
    n: usize,
    mut call: F,
) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    tokio.block_on(async {
        for _ in 0..warm {
            call().await;
        }
        for _ in 0..n {
            let t = Instant::now();
            call().await;
            samples.push(t.elapsed());
        }
    });
    samples.sort();
    samples
}

fn print_latency(label: &str, samples: &[Duration], extra: &str) {
    println!(
        "{label:<44} p50 {:>8.2} µs   p99 {:>8.2} µs   (n = {}){extra}",
        percentile(samples, 0.5).as_secs_f64() * 1e6,
        percentile(samples, 0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

/// Instantiate + call of the default rules: one pair and an empty batch, with the default config
/// and with a tenant-sized one.
fn latency(tokio: &tokio::runtime::Runtime, plugin: &dealbridge::runtime::LoadedPlugin) {
    let gateway: Arc<dyn CrmGateway> = Arc::new(dealbridge::runtime::DenyAllGateway);
    for (config_label, config) in [("{}", json!({})), ("tenant config", tenant_config())] {
        let inv = Invocation::new(Limits::default(), &config, gateway.clone()).unwrap();
        for (label, pairs) in [("1 pair", 1usize), ("empty batch", 0)] {
            let figure = format!("instantiate + plan({label}), {config_label}");
            if !figure_wanted(&figure) {
                continue;
            }
            let batch = make_batch!(dealbridge::runtime, pairs);
            let fuel = tokio.block_on(plugin.plan(&inv, &batch)).report.fuel_used;
            let samples = sample(tokio, samples() / 10, samples(), || async {
                let r = plugin.plan(&inv, &batch).await;
                assert!(r.result.is_ok(), "{:?}", r.result);
            });
            print_latency(&figure, &samples, &format!("   fuel {fuel}"));
        }
    }
}

/// The host's own floor: a component that answers one skip per pair with almost no guest work.
/// Two of them: the default rules built with `bench-floor` (the same component as the default
/// rules, minus the config and the planning: what the host costs this very component), and the
/// hostile component with `{}` (a `wasm32-wasip2` guest, so it also instantiates WASI imports).
fn host_floor(
    tokio: &tokio::runtime::Runtime,
    floor: &dealbridge::runtime::LoadedPlugin,
    label: &str,
) {
    if !figure_wanted(label) {
        return;
    }
    let batch = make_batch!(dealbridge::runtime, 1);
    let inv = Invocation::with_defaults();
    let fuel = tokio.block_on(floor.plan(&inv, &batch)).report.fuel_used;
    let samples = sample(tokio, samples() / 10, samples(), || async {
        let r = floor.plan(&inv, &batch).await;
        assert!(r.result.is_ok(), "{:?}", r.result);
    });
    print_latency(label, &samples, &format!("   fuel {fuel}"));
}

/// Records/s: component vs native, same rules, same batches, same config.
///
/// Native runs the rules as an rlib two ways: its nested API (`Rules::plan`, which flattens the
/// batch, plans and nests the plan) and the flat planner alone (`Rules::plan_flat` over a batch
/// flattened beforehand). Two ratios are printed:
/// - against the faster of the two (the flat planner): the component's encoding and decoding
///   count against it, while native does none;
/// - against the nested API: the same function as the component call, nested batch in and
///   nested outcomes out.
fn throughput(tokio: &tokio::runtime::Runtime, plugin: &dealbridge::runtime::LoadedPlugin) {
    for batch_size in [100usize, 1_000, 10_000] {
        let batch = make_batch!(dealbridge::runtime, batch_size);
        let native_batch = make_batch!(dealbridge_default_rules::types, batch_size);
        let native_flat_batch = dealbridge_default_rules::flat::flatten(&native_batch);
        let rounds = (200_000 / batch_size).max(5);
        let t = Instant::now();
        for _ in 0..rounds {
            let rules = dealbridge_default_rules::Rules::from_json("{}").unwrap();
            let out = rules.plan(std::hint::black_box(&native_batch)).unwrap();
            assert_eq!(out.len(), batch_size);
            std::hint::black_box(out);
        }
        let native_nested = t.elapsed();
        let t = Instant::now();
        for _ in 0..rounds {
            let rules = dealbridge_default_rules::Rules::from_json("{}").unwrap();
            let out = rules
                .plan_flat(std::hint::black_box(&native_flat_batch))
                .unwrap();
            assert_eq!(out.outcomes.len(), batch_size);
            std::hint::black_box(out);
        }
        let native_flat = t.elapsed();
        let records = (rounds * batch_size) as f64;
        let native_rps = records / native_nested.min(native_flat).as_secs_f64();
        let native_nested_rps = records / native_nested.as_secs_f64();
        println!(
            "batch {batch_size:>6} native    : nested API {:>10.0} rec/s   flat planner {:>10.0} rec/s",
            native_nested_rps,
            records / native_flat.as_secs_f64(),
        );
        // Every path the component plans on: `rules`, and `flat-rules` when it exports it.
        let only = std::env::var("DEALBRIDGE_BENCH_PATH").ok();
        if let Some(p) = &only {
            assert!(
                plugin.plan_paths().iter().any(|path| path.interface() == p),
                "DEALBRIDGE_BENCH_PATH={p}: the component plans on {:?}",
                plugin
                    .plan_paths()
                    .iter()
                    .map(|path| path.interface())
                    .collect::<Vec<_>>()
            );
        }
        for &path in plugin.plan_paths() {
            if only.as_deref().is_some_and(|p| p != path.interface()) {
                continue;
            }
            let inv = Invocation::new(
                large_batch_limits(),
                &json!({}),
                Arc::new(dealbridge::runtime::DenyAllGateway),
            )
            .unwrap()
            .on_path(path);
            let mut fuel = 0;
            let mut peak = 0;
            let mut input_bytes = 0;
            let wasm = tokio.block_on(async {
                let check = plugin.plan(&inv, &batch).await;
                let outcomes = check.result.unwrap();
                assert_eq!(outcomes.len(), batch_size);
                fuel = check.report.fuel_used;
                peak = check.report.peak_memory_bytes;
                input_bytes = check.report.input_bytes;
                let t = Instant::now();
                for _ in 0..rounds {
                    plugin.plan(&inv, &batch).await.result.unwrap();
                }
                t.elapsed()
            });
            let wasm_rps = records / wasm.as_secs_f64();
            println!(
                "batch {batch_size:>6} {:<10}: wasm {:>10.0} rec/s   native (faster) {:>10.0} rec/s   wasm/native time ratio {:>5.2}   vs nested API {:>5.2}   fuel/record {:>6}   peak memory/record {:>5} B   input/record {:>5} B",
                path.interface(),
                wasm_rps,
                native_rps,
                native_rps / wasm_rps,
                native_nested_rps / wasm_rps,
                fuel / batch_size as u64,
                peak / batch_size as u64,
                input_bytes / batch_size as u64
            );
            if path == PlanPath::Flat {
                let native_flat_rps = records / native_flat.as_secs_f64();
                flat_in_flat_out(tokio, plugin, &inv, &batch, rounds, native_flat_rps);
            }
        }
    }
}

/// The component on the same terms as the native flat planner: the batch flattened before the
/// clock starts, and the checked flat plan taken as it is, never nested
/// (`LoadedPlugin::plan_flat`). What a sync engine that built the flat batch itself and read
/// the flat plan would pay.
fn flat_in_flat_out(
    tokio: &tokio::runtime::Runtime,
    plugin: &dealbridge::runtime::LoadedPlugin,
    inv: &Invocation,
    batch: &dealbridge::runtime::Batch,
    rounds: usize,
    native_rps: f64,
) {
    let flat_batch = dealbridge::runtime::flatten(batch).unwrap();
    let pairs = batch.pairs.len();
    let wasm = tokio.block_on(async {
        let t = Instant::now();
        for _ in 0..rounds {
            let checked = plugin.plan_flat(inv, &flat_batch).await.result.unwrap();
            assert_eq!(checked.flat().outcomes.len(), pairs);
        }
        t.elapsed()
    });
    let records = (rounds * pairs) as f64;
    let wasm_rps = records / wasm.as_secs_f64();
    println!(
        "batch {pairs:>6} flat in/out: wasm {wasm_rps:>10.0} rec/s   flat planner {native_rps:>10.0} rec/s   ratio against the flat planner {:>5.2}",
        native_rps / wasm_rps
    );
}
