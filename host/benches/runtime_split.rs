//! Where a record's time goes when the default rules plan it inside the component: the same
//! component and batches as the `runtime` bench's throughput section, on engines that differ
//! only in the instrumentation that enforces the fuel and deadline limits, and the host-side
//! work around a call (building the contract's batch, sizing input and output).
//!
//! This bench links the component itself (unknown WASI imports trap; the default rules never
//! call WASI) and calls it synchronously, so that engine settings can be varied; production
//! always runs with fuel and epoch interruption, through `dealbridge::runtime`.
//!
//! Run: `cargo bench -p dealbridge --bench runtime_split`.
//! - `DEALBRIDGE_SPLIT_VARIANT=fuel+epoch|fuel|epoch|none` runs one engine variant only, one
//!   planned batch after a warm-up, for an instruction count:
//!   `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*call_plan*' <bench> `
//!   counts only the call (lowering, guest, lifting, post-return);
//!   `DEALBRIDGE_SPLIT_NO_SNAPSHOT=1` plans the same pairs without their (empty) snapshots.
//! - `DEALBRIDGE_SPLIT_PERFMAP=1` writes `/tmp/perf-<pid>.map`, naming the guest's compiled
//!   functions for profilers (callgrind shows them as bare addresses).
//! - `DEALBRIDGE_BENCH_RULES=path.wasm` benches another build of the default rules.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};

#[macro_use]
mod common;

/// Host bindings of the contract, with plain synchronous imports.
mod wit {
    wasmtime::component::bindgen!({ world: "plugin", path: "../wit" });
}

use wit::dealbridge::rules::{config, crm, log, types};

/// The host side of the imports: a `{}` config, no CRM, logs dropped.
struct Host;

impl types::Host for Host {}

impl config::Host for Host {
    fn get(&mut self) -> String {
        "{}".into()
    }
}

impl log::Host for Host {
    fn write(&mut self, _level: log::Level, _message: String) {}
}

impl crm::Host for Host {
    fn send(&mut self, _req: crm::Request) -> Result<crm::Response, crm::RequestError> {
        Err(crm::RequestError::Denied("no CRM in this bench".into()))
    }
}

/// One engine setting: which limit instrumentation is compiled into the guest.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    fuel: bool,
    epoch: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "fuel+epoch",
        fuel: true,
        epoch: true,
    },
    Variant {
        name: "fuel",
        fuel: true,
        epoch: false,
    },
    Variant {
        name: "epoch",
        fuel: false,
        epoch: true,
    },
    Variant {
        name: "none",
        fuel: false,
        epoch: false,
    },
];

struct Loaded {
    variant: Variant,
    engine: Engine,
    pre: InstancePre<Host>,
}

fn load(variant: Variant, bytes: &[u8], perfmap: bool) -> Loaded {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(variant.fuel)
        .epoch_interruption(variant.epoch);
    if perfmap {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker: Linker<Host> = Linker::new(&engine);
    wit::Plugin::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h).unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    Loaded {
        variant,
        engine,
        pre,
    }
}

/// Instantiates and plans one batch; returns the fuel used (0 without fuel).
fn plan(l: &Loaded, batch: &types::Batch) -> u64 {
    let mut store = Store::new(&l.engine, Host);
    if l.variant.fuel {
        store.set_fuel(u64::MAX / 2).unwrap();
    }
    if l.variant.epoch {
        // The epoch never advances here: the checks run, the deadline callback never does.
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let instance = l.pre.instantiate(&mut store).unwrap();
    let plugin = wit::Plugin::new(&mut store, &instance).unwrap();
    let out = call_plan(&plugin, &mut store, batch);
    assert_eq!(out.len(), batch.pairs.len());
    if l.variant.fuel {
        u64::MAX / 2 - store.get_fuel().unwrap()
    } else {
        0
    }
}

/// The call alone (lowering, guest, lifting, post-return): the region that callgrind counts.
#[inline(never)]
fn call_plan(
    plugin: &wit::Plugin,
    store: &mut Store<Host>,
    batch: &types::Batch,
) -> Vec<wit::exports::dealbridge::rules::rules::PairOutcome> {
    plugin
        .dealbridge_rules_rules()
        .call_plan(&mut *store, batch)
        .unwrap()
        .unwrap()
}

fn main() {
    let rules = std::env::var("DEALBRIDGE_BENCH_RULES")
        .unwrap_or_else(|_| dealbridge_guests::DEFAULT_RULES.to_string());
    let bytes = std::fs::read(&rules).unwrap();
    let perfmap = std::env::var_os("DEALBRIDGE_SPLIT_PERFMAP").is_some();
    let batch_size = 1_000usize;
    let batch = make_batch!(wit::dealbridge::rules::types, batch_size);
    println!("default rules: {rules}; batches of {batch_size} pairs");

    if let Ok(name) = std::env::var("DEALBRIDGE_SPLIT_VARIANT") {
        let variant = *VARIANTS
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("unknown variant `{name}`"));
        let l = load(variant, &bytes, perfmap);
        let mut batch = batch;
        if std::env::var_os("DEALBRIDGE_SPLIT_NO_SNAPSHOT").is_some() {
            for pair in &mut batch.pairs {
                pair.snapshot = None;
            }
        }
        plan(&l, &batch);
        let fuel = plan(&l, &batch);
        println!(
            "{name}: one batch planned, fuel/record {}",
            fuel / batch_size as u64
        );
        return;
    }

    let loaded: Vec<Loaded> = VARIANTS.iter().map(|v| load(*v, &bytes, perfmap)).collect();
    // The same pairs without a snapshot: two empty lists fewer to lower per record (two
    // crossings into the guest's allocator), and almost no other difference in work.
    let mut no_snapshot = batch.clone();
    for pair in &mut no_snapshot.pairs {
        pair.snapshot = None;
    }
    let cases: Vec<(String, &Loaded, &types::Batch)> = loaded
        .iter()
        .map(|l| (l.variant.name.to_string(), l, &batch))
        .chain([(
            "fuel+epoch, no snapshot".to_string(),
            &loaded[0],
            &no_snapshot,
        )])
        .collect();
    // Alternate the cases round by round so that the machine's load hits them alike; keep
    // each case's best round.
    let rounds = 40;
    let reps = 7;
    let mut best = vec![Duration::MAX; cases.len()];
    let fuel: Vec<u64> = cases.iter().map(|(_, l, b)| plan(l, b)).collect();
    for _ in 0..reps {
        for (i, (_, l, b)) in cases.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..rounds {
                plan(l, b);
            }
            best[i] = best[i].min(t.elapsed());
        }
    }
    let records = (rounds * batch_size) as f64;
    let ns: Vec<f64> = best
        .iter()
        .map(|d| d.as_secs_f64() / records * 1e9)
        .collect();
    for (i, (name, _, _)) in cases.iter().enumerate() {
        println!(
            "{name:<24} {:>10.0} rec/s   {:>7.1} ns/record   {:+6.1}% vs none   fuel/record {}",
            1e9 / ns[i],
            ns[i],
            (ns[i] / ns[VARIANTS.len() - 1] - 1.0) * 100.0,
            fuel[i] / batch_size as u64
        );
    }
    println!(
        "two empty lists fewer per record: {:.1} ns/record ({:.1} ns per crossing), fuel {}",
        ns[0] - ns[VARIANTS.len()],
        (ns[0] - ns[VARIANTS.len()]) / 2.0,
        (fuel[0] as i64 - fuel[VARIANTS.len()] as i64) / batch_size as i64
    );

    // Host-side work around a call, per record: a batch built afresh (a deep copy, as the sync
    // engine's `record_pair` copies a pair's values into the contract's types), and the input
    // and output sizes that the runtime computes for its limits.
    let runtime_batch = make_batch!(dealbridge::runtime, batch_size);
    let per_record = |d: Duration| d.as_secs_f64() / records * 1e9;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(std::hint::black_box(&runtime_batch).clone());
    }
    let copy = per_record(t.elapsed());
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(dealbridge::runtime::WireSize::wire_size(
            std::hint::black_box(&runtime_batch),
        ));
    }
    let size = per_record(t.elapsed());
    let native_batch = make_batch!(dealbridge_default_rules::types, batch_size);
    let rules = dealbridge_default_rules::Rules::from_json("{}").unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(rules.plan(std::hint::black_box(&native_batch)).unwrap());
    }
    let native = per_record(t.elapsed());
    println!(
        "host per record: batch copy {copy:.1} ns, input size {size:.1} ns; native plan {native:.1} ns"
    );
}
