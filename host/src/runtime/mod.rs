//! The wasmtime sandbox that runs tenants' rules components.
//!
//! Three lifetimes of state, kept apart:
//! - process: [`Runtime`] — one `Engine` (pooling allocator, copy-on-write
//!   memory init, fuel, epoch interruption), one `Linker` holding only the
//!   world's imports and a deny-all WASI subset, the on-disk compile cache,
//!   and a background epoch ticker;
//! - tenant: [`LoadedPlugin`] — a validated component (digest, world,
//!   contract version, whether it plans flat) with its `InstancePre`, so
//!   nothing compiles or resolves imports on the request path;
//! - invocation: the `Store` data (`host::State`) — limits, counters, the
//!   run report — created fresh for every call and dropped after it.
//!
//! This module must never run a plugin without its limits (fuel, deadline,
//! memory, tables, instances, input/output, log, requests, response bytes),
//! never reuse an instance between calls, and never link an import outside
//! the world.

pub mod allowance;
mod bindings;
mod cache;
pub mod egress;
mod error;
pub mod fixture;
mod flat;
pub mod gateway;
mod host;
pub mod inspect;
mod lift;
mod limits;
mod lower;
mod report;
mod size;
mod wasi;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, TypedFunc};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

pub use allowance::{AllowanceRefused, CrmAllowance, CrmAllowances};
pub use bindings::{
    Batch, Crm, CrmRecord, Date, Decimal, Description, Direction, ErrorKind, ExtraField,
    FieldIndex, FieldInfo, FieldMapping, FieldRef, FieldValue, FieldWrite, FlatBatch, FlatField,
    FlatOutcome, FlatPair, FlatPlan, FlatRecord, FlatRelated, FlatSnapshot, FlatValue, FlatWrite,
    FlatWrites, Inclusion, Lookups, ObjectPair, Owner, PairAssociations, PairOutcome, PairWrites,
    Pipeline, RecordPair, Related, RelatedKind, RuleError, Skip, Snapshot, Span, Stage, SyncRule,
    Trigger, Value,
};
pub use error::{InvokeError, LoadError, error_kind_name};
pub use gateway::{CrmGateway, DenyAllGateway, HttpGateway, MockGateway, ReadOnlyGateway};
pub use inspect::WorldInfo;
pub use limits::{LIFT_BUDGET_FLOOR, LIFT_BYTES_PER_OUTPUT_BYTE, LimitHit, LimitKind, Limits};
pub use report::{HttpTraceEntry, LogLevel, LogLine, RunReport, TraceOutcome};
pub use size::WireSize;
pub use wasi::{ALLOWED_CONTRACT, ALLOWED_WASI};

pub use flat::{CheckedPlan, flatten};
pub use lower::lowered_size;

use bindings::FlatPlugin;
use flat::PlanShape;
use host::State;
use lift::LiftedPlan;
use limits::LimitTrap;
use lower::LoweredBatch;

/// Process-wide settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`<sha256>-<engine hash>.cwasm`);
    /// none for no disk cache. The directory must be writable only by the
    /// service: a cached artefact is trusted native code.
    pub cache_dir: Option<PathBuf>,
    /// The largest component accepted, in bytes. Default 16 MiB.
    pub max_component_bytes: u64,
    /// Instances alive at once (the pool size). Default 256.
    pub max_concurrent_instances: u32,
    /// The largest linear memory any tenant may be allowed, in bytes (the
    /// pool's slot size); a tenant's `memory_bytes` is enforced below it.
    /// Default 256 MiB.
    pub max_memory_bytes: u64,
    /// WebAssembly stack per invocation, in bytes. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// The epoch tick: how often a running guest checks its deadline. Default 1 ms.
    pub epoch_tick: Duration,
    /// Bytes of the linear memory (and of the tables) an instance wrote that stay resident in
    /// its pool slot once the instance is freed: those pages are reset in place, so the slot's
    /// next instance takes no page faults on them; the pages past this are given back to the
    /// kernel.
    /// Default [`DEFAULT_KEEP_RESIDENT_BYTES`], which covers the default rules' peak for the
    /// sync engine's largest batch (2,000 pairs).
    ///
    /// It trades resident memory for speed: an idle slot holds up to this much, and a
    /// long-running service keeps about the largest number of instances alive at once plus
    /// wasmtime's 100 unused warm slots (slots kept for the components last run in them).
    /// [`Runtime::new`] refuses more than [`RuntimeConfig::max_memory_bytes`].
    pub keep_resident_bytes: usize,
}

/// [`RuntimeConfig::keep_resident_bytes`]' default, 4 MiB: the default rules peak at 1.8 MB of
/// linear memory for a batch of 2,000 small pairs (the sync engine's largest batch; the runtime
/// test's records), so this leaves room for records about twice that size. Past it, every call
/// takes the pages it writes as fresh page faults: with 2 MiB, a batch of 10,000 lost a fifth of
/// its speed to them (see BENCHMARKS.md).
pub const DEFAULT_KEEP_RESIDENT_BYTES: usize = 4 << 20;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_component_bytes: 16 << 20,
            max_concurrent_instances: 256,
            max_memory_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT_BYTES,
        }
    }
}

struct Inner {
    engine: Engine,
    /// One permit per pool slot: an invocation waits for a slot (within its
    /// deadline) instead of failing when the pool is full.
    slots: tokio::sync::Semaphore,
    linker: Linker<State>,
    config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The process-wide runtime: engine, linker, compile cache, epoch ticker.
/// Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// Where a [`LoadedPlugin`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// Compiled now (and written to the cache, if there is one).
    Compiled,
    /// Loaded from the on-disk cache.
    Cache,
}

/// A validated, compiled component with its imports resolved, ready to
/// instantiate. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    runtime: Runtime,
    pre: InstancePre<State>,
    exports: Arc<RulesExports>,
    digest: String,
    world: WorldInfo,
    source: LoadSource,
}

/// Which export plans a batch (`condition` and `plan`): both must give the same answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPath {
    /// `rules`: the batch as nested values (every component exports it).
    Nested,
    /// `flat-rules`: the batch in the flat form (components of the world `flat-plugin`).
    Flat,
}

impl PlanPath {
    /// The exported interface of the path: `rules` or `flat-rules`.
    pub fn interface(self) -> &'static str {
        match self {
            PlanPath::Nested => "rules",
            PlanPath::Flat => "flat-rules",
        }
    }
}

/// What one invocation gets: its limits, the tenant's plugin config, the
/// way out to the tenant's CRMs, and which export plans.
#[derive(Clone)]
pub struct Invocation {
    /// The limits.
    pub limits: Limits,
    config_json: Arc<str>,
    /// The tenant's CRMs.
    pub gateway: Arc<dyn CrmGateway>,
    /// The export that runs `condition` and `plan`; none for `flat-rules`
    /// when the component exports it and `rules` otherwise. Asking for
    /// [`PlanPath::Flat`] of a component without `flat-rules` is an
    /// [`InvokeError::Input`].
    pub path: Option<PlanPath>,
}

impl Invocation {
    /// An invocation with the given limits, config (a JSON object) and gateway.
    pub fn new(
        limits: Limits,
        config: &serde_json::Value,
        gateway: Arc<dyn CrmGateway>,
    ) -> Result<Self, InvokeError> {
        if !config.is_object() {
            return Err(InvokeError::Input(
                "the plugin config must be a JSON object".into(),
            ));
        }
        Ok(Self {
            limits,
            config_json: config.to_string().into(),
            gateway,
            path: None,
        })
    }

    /// The same invocation on the given path.
    pub fn on_path(mut self, path: PlanPath) -> Self {
        self.path = Some(path);
        self
    }

    /// Default limits, `{}` config, no CRM.
    pub fn with_defaults() -> Self {
        Self {
            limits: Limits::default(),
            config_json: "{}".into(),
            gateway: Arc::new(DenyAllGateway),
            path: None,
        }
    }

    /// The config as JSON text.
    pub fn config_json(&self) -> &str {
        &self.config_json
    }
}

/// The result of one invocation and its run report (kept also on failure:
/// fuel, stdio and the HTTP trace are what a tenant needs to debug one).
#[derive(Debug, Clone)]
pub struct Invoked<T> {
    /// The output, or why there is none.
    pub result: Result<T, InvokeError>,
    /// What was measured.
    pub report: RunReport,
}

impl<T> Invoked<T> {
    /// An invocation refused before it started; the report names the export it asked for.
    fn refused(error: InvokeError, export: &str) -> Self {
        Invoked {
            result: Err(error),
            report: RunReport {
                export: export.to_string(),
                ..RunReport::default()
            },
        }
    }

    /// Maps the output.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Invoked<U> {
        Invoked {
            result: self.result.map(f),
            report: self.report,
        }
    }

    /// `(output, report)`, or the error.
    pub fn into_result(self) -> Result<(T, RunReport), InvokeError> {
        self.result.map(|v| (v, self.report))
    }
}

impl Runtime {
    /// Builds the engine, the linker and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, LoadError> {
        if config.keep_resident_bytes as u64 > config.max_memory_bytes {
            return Err(LoadError::Engine(format!(
                "{} bytes kept resident per slot is more than a slot's largest linear memory \
                 ({} bytes): a slot can keep at most what it holds",
                config.keep_resident_bytes, config.max_memory_bytes
            )));
        }
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        FlatPlugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), config.epoch_tick, stop.clone());
        Ok(Runtime {
            inner: Arc::new(Inner {
                slots: tokio::sync::Semaphore::new(config.max_concurrent_instances.max(1) as usize),
                engine,
                linker,
                config,
                stop_ticker: stop,
            }),
        })
    }

    /// The engine (for tools and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Validates and compiles a component (or loads it from the disk cache)
    /// and resolves its imports.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        inspect::check_header(bytes, self.inner.config.max_component_bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));
        let (component, source) = self.compile_or_cached(bytes, &digest)?;
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        let world = inspect::check_world(imports, exports)?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let exports =
            RulesExports::find(&instance_pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(LoadedPlugin {
            runtime: self.clone(),
            pre: instance_pre,
            exports: Arc::new(exports),
            digest,
            world,
            source,
        })
    }

    fn compile_or_cached(
        &self,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, LoadSource), LoadError> {
        let engine = &self.inner.engine;
        let Some(dir) = &self.inner.config.cache_dir else {
            let c =
                Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            return Ok((c, LoadSource::Compiled));
        };
        let path = dir.join(cache::file_name(engine, digest));
        if let Some(component) = cache::load(engine, &path) {
            return Ok((component, LoadSource::Cache));
        }
        let artefact = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        cache::store(&path, &artefact)
            .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))?;
        // SAFETY: the bytes were produced by `precompile_component` of this
        // very engine just above.
        let component = unsafe { Component::deserialize(engine, &artefact) }
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((component, LoadSource::Compiled))
    }
}

fn engine_config(rc: &RuntimeConfig) -> Config {
    let n = rc.max_concurrent_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(rc.max_memory_bytes as usize)
        .table_elements(100_000)
        // A freed slot is reset by rewriting only the pages the guest dirtied (found with the
        // PAGEMAP_SCAN ioctl, Linux 6.7+) instead of unmapping them, so the next instance in
        // the slot takes no page faults on the stack, data and heap pages it touches again.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(rc.keep_resident_bytes)
        .table_keep_resident(rc.keep_resident_bytes);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(DEEP_STACK_FRAMES + 24))
        .max_wasm_stack(rc.max_wasm_stack)
        .async_stack_size(rc.max_wasm_stack + (1 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // For an operator profiling the guests' own code: `perf` names compiled guest functions
    // from `/tmp/perf-<pid>.map` (component artefacts loaded from the disk cache are not listed).
    if std::env::var_os("DEALBRIDGE_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

fn spawn_ticker(engine: wasmtime::EngineWeak, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("dealbridge-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}

impl LoadedPlugin {
    /// The sha256 of the component's bytes, in hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Its imports, exports and contract version.
    pub fn world(&self) -> &WorldInfo {
        &self.world
    }

    /// Whether it was compiled now or loaded from the cache.
    pub fn source(&self) -> LoadSource {
        self.source
    }

    /// The paths it can plan on: [`PlanPath::Nested`], and [`PlanPath::Flat`] when it exports
    /// `flat-rules`.
    pub fn plan_paths(&self) -> &'static [PlanPath] {
        if self.exports.flat.is_some() {
            &[PlanPath::Nested, PlanPath::Flat]
        } else {
            &[PlanPath::Nested]
        }
    }

    /// The path the host plans on when an invocation asks for none: [`PlanPath::Flat`] when
    /// the component exports `flat-rules`, else [`PlanPath::Nested`].
    pub fn default_path(&self) -> PlanPath {
        if self.exports.flat.is_some() {
            PlanPath::Flat
        } else {
            PlanPath::Nested
        }
    }

    /// The path an invocation plans on: the one it asks for, else the flat one when the
    /// component exports it.
    fn plan_path(&self, inv: &Invocation) -> Result<PlanPath, InvokeError> {
        match inv.path {
            Some(PlanPath::Flat) => self.require_flat().map(|()| PlanPath::Flat),
            Some(path) => Ok(path),
            None => Ok(self.default_path()),
        }
    }

    /// Refuses a flat call to a component without `flat-rules`.
    fn require_flat(&self) -> Result<(), InvokeError> {
        if self.exports.flat.is_none() {
            return Err(InvokeError::Input(
                "the component does not export `flat-rules`, so it cannot plan on the flat path"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Calls `describe`.
    pub async fn describe(&self, inv: &Invocation, schema: &[FieldInfo]) -> Invoked<Description> {
        let input = 8 + schema.iter().map(WireSize::wire_size).sum::<u64>();
        self.invoke(inv, input, Call::Describe(schema))
            .await
            .map(|o| match o {
                Output::Describe(d) => d,
                _ => unreachable!("describe returns a description"),
            })
    }

    /// Calls `condition` (of `flat-rules` or `rules`, see [`Invocation::path`]): one
    /// inclusion per pair.
    pub async fn condition(&self, inv: &Invocation, batch: &Batch) -> Invoked<Vec<Inclusion>> {
        let call = match self.plan_path(inv) {
            Ok(path) => Call::Condition(path, batch),
            Err(e) => return Invoked::refused(e, "flat-rules.condition"),
        };
        self.invoke(inv, batch.wire_size(), call)
            .await
            .map(|o| match o {
                Output::Condition(c) => c,
                _ => unreachable!("condition returns inclusions"),
            })
    }

    /// Calls `plan` (of `flat-rules` or `rules`, see [`Invocation::path`]): one outcome per
    /// pair, in the batch's order.
    pub async fn plan(&self, inv: &Invocation, batch: &Batch) -> Invoked<Vec<PairOutcome>> {
        let call = match self.plan_path(inv) {
            Ok(path) => Call::Plan(path, batch),
            Err(e) => return Invoked::refused(e, "flat-rules.plan"),
        };
        self.invoke(inv, batch.wire_size(), call)
            .await
            .map(|o| match o {
                Output::Plan(p) => p,
                _ => unreachable!("plan returns outcomes"),
            })
    }

    /// Calls `flat-rules.plan` with a batch already in the flat form, and returns the plan
    /// checked (one outcome per pair, every span and `known` index inside its list or table)
    /// but not nested: for a caller that reads the flat plan itself, as the benchmark's
    /// flat-in, flat-out figure does. The input limit counts the bytes lowered
    /// ([`lowered_size`]); the output limit, as on the other paths, the nested outcomes the plan
    /// stands for. A component without `flat-rules` is refused. The batch is the caller's own and
    /// is trusted to be well formed, as [`flatten`] makes it: the host checks what the plugin
    /// returns, not what it is given.
    pub async fn plan_flat(&self, inv: &Invocation, batch: &FlatBatch) -> Invoked<CheckedPlan> {
        if let Err(e) = self.require_flat() {
            return Invoked::refused(e, "flat-rules.plan");
        }
        self.invoke(inv, lowered_size(batch), Call::PlanFlat(batch))
            .await
            .map(|o| match o {
                Output::CheckedFlat(plan) => plan,
                _ => unreachable!("a flat batch's plan comes back checked and flat"),
            })
    }

    /// Runs one invocation and counts it in the process-wide metrics (under the function's
    /// name, whichever path ran it; the report names the export).
    async fn invoke(&self, inv: &Invocation, input_bytes: u64, call: Call<'_>) -> Invoked<Output> {
        let invoked = self.invoke_measured(inv, input_bytes, call).await;
        crate::telemetry::plugin_invocation(call.function(), &invoked.result, &invoked.report);
        invoked
    }

    async fn invoke_measured(
        &self,
        inv: &Invocation,
        input_bytes: u64,
        call: Call<'_>,
    ) -> Invoked<Output> {
        let started = Instant::now();
        let limits = inv.limits.clone();
        let deadline_after = Duration::from_millis(limits.deadline_ms);
        let deadline = started + deadline_after;
        let mut report_only = RunReport {
            export: call.export_name().to_string(),
            fuel_limit: limits.fuel,
            input_bytes,
            ..RunReport::default()
        };
        if input_bytes > limits.input_bytes {
            report_only.wall_time_us = started.elapsed().as_micros() as u64;
            let hit = LimitHit {
                limit: LimitKind::InputBytes,
                limit_value: limits.input_bytes,
                reached: input_bytes,
            };
            return Invoked {
                result: Err(hit.into()),
                report: report_only,
            };
        }
        let encoded;
        let flat_batch = match call {
            Call::Condition(PlanPath::Flat, batch) | Call::Plan(PlanPath::Flat, batch) => {
                if let Err(refused) = flat::check_fits(input_bytes) {
                    report_only.wall_time_us = started.elapsed().as_micros() as u64;
                    return Invoked {
                        result: Err(InvokeError::Input(refused)),
                        report: report_only,
                    };
                }
                encoded = flat::encode(batch);
                Some(&encoded)
            }
            Call::PlanFlat(batch) => Some(batch),
            _ => None,
        };

        let engine = &self.runtime.inner.engine;
        let state = State::new(
            limits.clone(),
            inv.config_json.clone(),
            inv.gateway.clone(),
            deadline,
        );
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Err(e) = store.set_fuel(limits.fuel) {
            return Invoked {
                result: Err(InvokeError::Instantiate(format!("{e:#}"))),
                report: report_only,
            };
        }
        // What wasmtime may copy out of the guest in one lift: the returned value, or one host
        // call's arguments.
        store.set_hostcall_fuel(usize::try_from(limits.lift_budget()).unwrap_or(usize::MAX));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= deadline {
                let limit_value = ctx.data().limits.deadline_ms;
                Err(wasmtime::Error::new(LimitTrap(LimitHit {
                    limit: LimitKind::Deadline,
                    limit_value,
                    reached: started.elapsed().as_millis() as u64,
                })))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let pre = &self.pre;
        let exports = &*self.exports;
        let slots = &self.runtime.inner.slots;
        let run = async {
            let _slot = slots
                .acquire()
                .await
                .map_err(|e| Failure::Instantiate(wasmtime::Error::msg(e.to_string())))?;
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(Failure::Instantiate)?;
            exports.check_once(&mut store, &instance)?;
            let out = match call {
                Call::Describe(schema) => {
                    // SAFETY: `check_once` checked this signature on this component.
                    let f: TypedFunc<DescribeArgs<'_>, DescribeResult> =
                        unsafe { exports.typed(&mut store, &instance, &exports.describe) }?;
                    f.call_async(&mut store, (schema,))
                        .await
                        .map(|(r,)| r.map(Output::Describe))
                }
                Call::Condition(PlanPath::Nested, batch) => {
                    // SAFETY: as above.
                    let f: TypedFunc<BatchArgs<'_>, ConditionResult> =
                        unsafe { exports.typed(&mut store, &instance, &exports.condition) }?;
                    f.call_async(&mut store, (batch,))
                        .await
                        .map(|(r,)| r.map(Output::Condition))
                }
                Call::Plan(PlanPath::Nested, batch) => {
                    // SAFETY: as above.
                    let f: TypedFunc<BatchArgs<'_>, PlanResult> =
                        unsafe { exports.typed(&mut store, &instance, &exports.plan) }?;
                    f.call_async(&mut store, (batch,))
                        .await
                        .map(|(r,)| r.map(Output::Plan))
                }
                Call::Condition(PlanPath::Flat, _)
                | Call::Plan(PlanPath::Flat, _)
                | Call::PlanFlat(_) => {
                    let flat_exports = exports.flat.as_ref().ok_or_else(|| {
                        Failure::Call(wasmtime::format_err!("`flat-rules` is not exported"))
                    })?;
                    let flat_batch = flat_batch.expect("encoded or given above for a flat call");
                    if matches!(call, Call::Condition(..)) {
                        // SAFETY: as above (`check_once` checks `flat-rules` too); a
                        // `LoweredBatch` has the type of `flat-batch` (see `lower.rs`).
                        let f: TypedFunc<(LoweredBatch<'_>,), ConditionResult> = unsafe {
                            exports.typed(&mut store, &instance, &flat_exports.condition)
                        }?;
                        f.call_async(&mut store, (LoweredBatch::new(flat_batch),))
                            .await
                            .map(|(r,)| r.map(Output::Condition))
                    } else {
                        // SAFETY: as above; a `LiftedPlan` has the type of `flat-plan` (see
                        // `lift.rs`).
                        let f: TypedFunc<(LoweredBatch<'_>,), (Result<LiftedPlan, RuleError>,)> =
                            unsafe { exports.typed(&mut store, &instance, &flat_exports.plan) }?;
                        f.call_async(&mut store, (LoweredBatch::new(flat_batch),))
                            .await
                            .map(|(r,)| r.map(|plan| Output::FlatPlan(plan.into())))
                    }
                }
            };
            out.map_err(Failure::Call)
        };
        let outcome = match tokio::time::timeout(deadline_after, run).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(rule))) => Err(Failure::Rule(rule)),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(Failure::Deadline),
        };

        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.data_mut();
        state.finish_stdio();
        let mut report = std::mem::take(&mut state.report);
        report.export = call.export_name().to_string();
        report.input_bytes = input_bytes;
        report.fuel_used = limits.fuel.saturating_sub(fuel_left);
        report.peak_memory_bytes = state.limiter.peak_memory;
        let result = match outcome {
            Ok(value) => checked_output(call, value, &limits, &mut report),
            Err(Failure::Deadline) => Err(InvokeError::Limit {
                limit: LimitKind::Deadline,
                limit_value: limits.deadline_ms,
                reached: started.elapsed().as_millis() as u64,
            }),
            Err(Failure::Instantiate(e)) => Err(classify(e, &limits, &report, true)),
            Err(Failure::Contract(mismatch)) => Err(InvokeError::Contract(mismatch)),
            Err(Failure::Call(e)) => Err(classify(e, &limits, &report, false)),
            Err(Failure::Rule(r)) => {
                let size = r.wire_size();
                report.output_bytes = size;
                if size > limits.output_bytes {
                    Err(LimitHit {
                        limit: LimitKind::OutputBytes,
                        limit_value: limits.output_bytes,
                        reached: size,
                    }
                    .into())
                } else {
                    Err(InvokeError::Rule(r))
                }
            }
        };
        drop(store);
        report.wall_time_us = started.elapsed().as_micros() as u64;
        Invoked { result, report }
    }
}

/// The `rules` exports of a loaded component, and its `flat-rules` exports if it has them.
/// They are found by name once, at load; their signatures are checked against the contract on
/// the first instantiation (checking needs an instance, and costs as much as the rest of an
/// invocation for types as large as `batch`) and trusted for every later instance of the same
/// component.
///
/// The names carry this host's contract version; wasmtime finds an export of any
/// semver-compatible version under them (`@0.1.0` and `@0.1.1` are both found as `@0.1`).
struct RulesExports {
    describe: ComponentExportIndex,
    condition: ComponentExportIndex,
    plan: ComponentExportIndex,
    flat: Option<FlatExports>,
    checked: OnceLock<()>,
}

/// The `flat-rules` exports of a component of the world `flat-plugin`.
struct FlatExports {
    condition: ComponentExportIndex,
    plan: ComponentExportIndex,
}

/// The functions `names` of the exported instance `interface`, by index.
fn export_functions<const N: usize>(
    component: &Component,
    interface: &str,
    names: [&str; N],
) -> wasmtime::Result<Option<[ComponentExportIndex; N]>> {
    let Some(instance) = component.get_export_index(None, interface) else {
        return Ok(None);
    };
    let mut found = Vec::with_capacity(N);
    for name in names {
        found.push(
            component
                .get_export_index(Some(&instance), name)
                .ok_or_else(|| wasmtime::format_err!("`{interface}` does not export `{name}`"))?,
        );
    }
    Ok(Some(
        found
            .try_into()
            .unwrap_or_else(|_| unreachable!("N names, N indices")),
    ))
}

impl RulesExports {
    fn find(pre: &InstancePre<State>) -> wasmtime::Result<Self> {
        let component = pre.component();
        let [describe, condition, plan] = export_functions(
            component,
            RULES_INTERFACE,
            ["describe", "condition", "plan"],
        )?
        .ok_or_else(|| wasmtime::format_err!("no exported instance named `{RULES_INTERFACE}`"))?;
        let flat = export_functions(component, FLAT_RULES_INTERFACE, ["condition", "plan"])?
            .map(|[condition, plan]| FlatExports { condition, plan });
        Ok(Self {
            describe,
            condition,
            plan,
            flat,
            checked: OnceLock::new(),
        })
    }

    /// Checks the signatures of `rules` (and of `flat-rules`) on the first instance of this
    /// component; the error names the first export whose type is not the contract's.
    fn check_once(
        &self,
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
    ) -> Result<(), Failure> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        check_type::<DescribeArgs<'_>, DescribeResult>(
            store,
            instance,
            (RULES_INTERFACE, "describe", &self.describe),
        )?;
        check_type::<BatchArgs<'_>, ConditionResult>(
            store,
            instance,
            (RULES_INTERFACE, "condition", &self.condition),
        )?;
        check_type::<BatchArgs<'_>, PlanResult>(
            store,
            instance,
            (RULES_INTERFACE, "plan", &self.plan),
        )?;
        if let Some(flat) = &self.flat {
            check_type::<(&FlatBatch,), ConditionResult>(
                store,
                instance,
                (FLAT_RULES_INTERFACE, "condition", &flat.condition),
            )?;
            check_type::<(&FlatBatch,), (Result<FlatPlan, RuleError>,)>(
                store,
                instance,
                (FLAT_RULES_INTERFACE, "plan", &flat.plan),
            )?;
        }
        let _ = self.checked.set(());
        Ok(())
    }

    /// The export as a typed function, without checking its type again.
    ///
    /// # Safety
    ///
    /// `check_once` must have succeeded for this component, and `P`/`R` must be the contract's
    /// signature of the export at `index`.
    unsafe fn typed<P, R>(
        &self,
        store: &mut Store<State>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> Result<TypedFunc<P, R>, Failure>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let func = instance
            .get_func(&mut *store, index)
            .ok_or_else(|| Failure::Call(wasmtime::format_err!("the rules export is missing")))?;
        // SAFETY: the caller's contract.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}

// The contract's signatures of the exports, shared by `check_once` and the calls. The flat
// calls pass a `LoweredBatch` and take a `LiftedPlan`, which have the types of `flat-batch` and
// `flat-plan`; their check uses the bindings' `FlatBatch` and `FlatPlan`.
type DescribeArgs<'a> = (&'a [FieldInfo],);
type DescribeResult = (Result<Description, RuleError>,);
type BatchArgs<'a> = (&'a Batch,);
type ConditionResult = (Result<Vec<Inclusion>, RuleError>,);
type PlanResult = (Result<Vec<PairOutcome>, RuleError>,);

/// Checks that the export `(interface, name, index)` has the contract's signature `P -> R`.
fn check_type<P, R>(
    store: &mut Store<State>,
    instance: &wasmtime::component::Instance,
    (interface, name, index): (&str, &str, &ComponentExportIndex),
) -> Result<(), Failure>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    instance
        .get_typed_func::<P, R>(&mut *store, index)
        .map(drop)
        .map_err(|e| {
            let unversioned = interface.split('@').next().unwrap_or(interface);
            Failure::Contract(format!(
                "`{unversioned}` exports `{name}` with a type other than the contract's ({e:#})"
            ))
        })
}

/// The exported interface of every rules component.
const RULES_INTERFACE: &str = "dealbridge:rules/rules@0.1.1";
/// The exported interface of the components that also plan over the flat form of a batch.
const FLAT_RULES_INTERFACE: &str = "dealbridge:rules/flat-rules@0.1.1";

/// Which export to call, with its argument.
#[derive(Clone, Copy)]
enum Call<'a> {
    Describe(&'a [FieldInfo]),
    Condition(PlanPath, &'a Batch),
    Plan(PlanPath, &'a Batch),
    /// `flat-rules.plan` with a batch the caller flattened; the plan comes back checked, not
    /// nested.
    PlanFlat(&'a FlatBatch),
}

impl Call<'_> {
    /// The function's name, as a metrics label: the same on both paths.
    fn function(&self) -> &'static str {
        match self {
            Call::Describe(_) => "describe",
            Call::Condition(..) => "condition",
            Call::Plan(..) | Call::PlanFlat(_) => "plan",
        }
    }

    /// The export that runs, as the run report names it, e.g. `flat-rules.plan`.
    fn export_name(&self) -> &'static str {
        match self {
            Call::Describe(_) => "rules.describe",
            Call::Condition(PlanPath::Nested, _) => "rules.condition",
            Call::Plan(PlanPath::Nested, _) => "rules.plan",
            Call::Condition(PlanPath::Flat, _) => "flat-rules.condition",
            Call::Plan(PlanPath::Flat, _) | Call::PlanFlat(_) => "flat-rules.plan",
        }
    }
}

/// What an export returned.
enum Output {
    Describe(Description),
    Condition(Vec<Inclusion>),
    Plan(Vec<PairOutcome>),
    /// A flat plan, before it is checked (and, for a nested batch, decoded into
    /// [`Output::Plan`]).
    FlatPlan(FlatPlan),
    /// The checked flat plan of a flat batch.
    CheckedFlat(CheckedPlan),
}

/// The output as the caller gets it: checked against the contract (one inclusion or outcome
/// per pair; a flat plan's spans and field indices), decoded from the flat form, and measured
/// against the output limit as the nested outcomes on both paths (a flat plan: the larger of
/// that and what the plugin returned, so that items no outcome points at count too).
fn checked_output(
    call: Call<'_>,
    output: Output,
    limits: &Limits,
    report: &mut RunReport,
) -> Result<Output, InvokeError> {
    let invalid = |reason: String| InvokeError::InvalidOutput {
        export: call.export_name(),
        reason,
    };
    let pairs = match call {
        Call::Describe(_) => 0,
        Call::Condition(_, batch) | Call::Plan(_, batch) => batch.pairs.len(),
        Call::PlanFlat(batch) => batch.pairs.len(),
    };
    let (size, output) = match output {
        Output::Describe(d) => (d.wire_size(), Output::Describe(d)),
        Output::Condition(c) => {
            flat::check_count("inclusions", c.len(), pairs).map_err(invalid)?;
            (c.wire_size(), Output::Condition(c))
        }
        Output::Plan(p) => {
            flat::check_count("outcomes", p.len(), pairs).map_err(invalid)?;
            (p.wire_size(), Output::Plan(p))
        }
        Output::FlatPlan(plan) => {
            let shape = match call {
                Call::Plan(_, batch) => PlanShape::of(batch),
                Call::PlanFlat(batch) => PlanShape::of_flat(batch),
                _ => unreachable!("only `flat-rules.plan` returns a flat plan"),
            };
            // What the plugin returned counts as well as what it decodes to: items that no
            // outcome points at were lifted too, and must not pass the limit unmeasured.
            let measured = flat::measure(plan, shape);
            let lifted = measured.lifted_size();
            report.output_bytes = lifted;
            check_output_size(lifted, limits)?;
            let checked = measured.check(shape).map_err(invalid)?;
            let size = checked.wire_size().max(lifted);
            report.output_bytes = size;
            check_output_size(size, limits)?;
            return match call {
                Call::Plan(_, batch) => checked.decode(batch).map(Output::Plan).map_err(invalid),
                _ => Ok(Output::CheckedFlat(checked)),
            };
        }
        Output::CheckedFlat(_) => unreachable!("an export returns the plan unchecked"),
    };
    report.output_bytes = size;
    check_output_size(size, limits)?;
    Ok(output)
}

/// The output limit.
fn check_output_size(size: u64, limits: &Limits) -> Result<(), InvokeError> {
    if size > limits.output_bytes {
        return Err(LimitHit {
            limit: LimitKind::OutputBytes,
            limit_value: limits.output_bytes,
            reached: size,
        }
        .into());
    }
    Ok(())
}

enum Failure {
    Instantiate(wasmtime::Error),
    /// An export's type is not the contract's.
    Contract(String),
    Call(wasmtime::Error),
    Rule(RuleError),
    Deadline,
}

/// A trap with at least this many frames on the stack counts as recursion.
const DEEP_STACK_FRAMES: usize = 1000;

/// Turns a wasmtime error into the specific [`InvokeError`].
fn classify(
    err: wasmtime::Error,
    limits: &Limits,
    report: &RunReport,
    instantiating: bool,
) -> InvokeError {
    if let Some(LimitTrap(hit)) = err.downcast_ref::<LimitTrap>() {
        return (*hit).into();
    }
    if lift_budget_exhausted(&err) {
        // A host call's arguments are lifted while the guest is on the stack; the returned
        // value after it has returned.
        let in_host_call = err
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .is_some_and(|bt| !bt.frames().is_empty());
        let budget = limits.lift_budget();
        return if in_host_call {
            InvokeError::HostCallTooLarge { budget }
        } else {
            InvokeError::Limit {
                limit: LimitKind::OutputBytes,
                limit_value: limits.output_bytes,
                reached: budget,
            }
        };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Exit(exit.0);
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => {
                return InvokeError::Limit {
                    limit: LimitKind::Fuel,
                    limit_value: limits.fuel,
                    reached: limits.fuel,
                };
            }
            Trap::StackOverflow => return InvokeError::StackOverflow,
            // Rust and C guests keep a shadow stack in linear memory; deep
            // recursion runs it off the bottom of memory. A trap that deep in
            // the call stack is recursion, not a stray pointer.
            Trap::MemoryOutOfBounds
                if err
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .is_some_and(|bt| bt.frames().len() >= DEEP_STACK_FRAMES) =>
            {
                return InvokeError::StackOverflow;
            }
            Trap::Interrupt => {
                return InvokeError::Limit {
                    limit: LimitKind::Deadline,
                    limit_value: limits.deadline_ms,
                    reached: limits.deadline_ms,
                };
            }
            _ => {}
        }
        let panic = panic_message(&report.stderr);
        return InvokeError::Trap(match panic {
            Some(p) => format!("{trap}; {p}"),
            None => trap.to_string(),
        });
    }
    let text = format!("{err:#}");
    if instantiating {
        // Instance/table counts are checked by the limiter at instantiation:
        // wasmtime says "resource limit exceeded: {instance|table|memory} count too high at N".
        if let Some(rest) = text.split("resource limit exceeded: ").nth(1) {
            let reached = rest
                .split("count too high at ")
                .nth(1)
                .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let (limit, limit_value) = if rest.starts_with("table") {
                (LimitKind::Tables, limits.tables as u64)
            } else {
                // Memories are bounded by the instance count (see `Limiter::memories`).
                (LimitKind::Instances, limits.instances as u64)
            };
            return InvokeError::Limit {
                limit,
                limit_value,
                reached,
            };
        }
        return InvokeError::Instantiate(text);
    }
    InvokeError::Trap(text)
}

/// Whether wasmtime stopped lifting a value because it passed the budget set with
/// `Store::set_hostcall_fuel` ([`Limits::lift_budget`]). wasmtime's error type for it is
/// private, so it is known by its message; the hostile `shared-output` and `shared-request`
/// tests (`plugin_runtime.rs`) fail if it changes.
fn lift_budget_exhausted(err: &wasmtime::Error) -> bool {
    err.chain().any(|e| {
        e.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// The panic line a Rust guest writes to stderr before it aborts.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at")?;
    let line_start = stderr[..start].rfind('\n').map_or(0, |i| i + 1);
    let rest = &stderr[line_start..];
    let msg: String = rest.lines().take(2).collect::<Vec<_>>().join(" ");
    Some(msg.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of one pair with one HubSpot field.
    fn one_pair() -> Batch {
        Batch {
            object_pair: ObjectPair::OpportunityDeal,
            direction: Direction::SalesforceToHubspot,
            trigger: Trigger::Incremental,
            salesforce_fields: vec!["Name".into()],
            hubspot_fields: vec!["dealname".into()],
            pairs: vec![RecordPair {
                salesforce: None,
                hubspot: Some(CrmRecord {
                    id: "1".into(),
                    modified_at: 0,
                    fields: vec![],
                }),
                snapshot: None,
                salesforce_changed: vec![],
                hubspot_changed: vec![],
                associations: PairAssociations {
                    salesforce: vec![],
                    hubspot: vec![],
                },
            }],
            lookups: Lookups {
                owners: vec![],
                pipelines: vec![],
            },
        }
    }

    #[test]
    fn items_no_outcome_points_at_count_against_the_output_limit() {
        let batch = one_pair();
        // One outcome that writes nothing, and a megabyte of writes that nothing points at.
        let unused = FlatWrite {
            field: FieldRef::Known(0),
            value: Value::Text("x".repeat(1 << 20)),
        };
        let plan = FlatPlan {
            writes: vec![unused],
            related: vec![],
            outcomes: vec![FlatOutcome::Skip(Skip::UpToDate)],
        };
        let lifted = plan.wire_size();
        let limits = Limits {
            output_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut report = RunReport::default();
        let call = Call::Plan(PlanPath::Flat, &batch);
        match checked_output(call, Output::FlatPlan(plan.clone()), &limits, &mut report) {
            Err(InvokeError::Limit {
                limit: LimitKind::OutputBytes,
                limit_value,
                reached,
            }) => {
                assert_eq!(limit_value, 1 << 20);
                assert_eq!(reached, lifted);
            }
            Err(other) => panic!("the wrong error for a plan of {lifted} bytes: {other:?}"),
            Ok(_) => panic!("a plan of {lifted} bytes passed a 1 MiB output limit"),
        }
        assert_eq!(report.output_bytes, lifted);

        // Under a limit that fits it, the same plan decodes to its one skip.
        let roomy = Limits {
            output_bytes: 2 << 20,
            ..Limits::default()
        };
        let call = Call::Plan(PlanPath::Flat, &batch);
        match checked_output(call, Output::FlatPlan(plan), &roomy, &mut report) {
            Ok(Output::Plan(outcomes)) => {
                assert_eq!(outcomes, vec![PairOutcome::Skip(Skip::UpToDate)]);
            }
            _ => panic!("a plan inside the limit was refused"),
        }
        assert_eq!(report.output_bytes, lifted);
    }

    #[test]
    fn a_slot_cannot_keep_more_resident_than_its_largest_memory() {
        let too_much = RuntimeConfig {
            max_memory_bytes: 1 << 20,
            keep_resident_bytes: (1 << 20) + 4096,
            ..RuntimeConfig::default()
        };
        match Runtime::new(too_much) {
            Err(LoadError::Engine(message)) => {
                assert!(message.contains("1052672 bytes kept resident"), "{message}");
                assert!(message.contains("(1048576 bytes)"), "{message}");
            }
            Err(other) => panic!("the wrong error: {other}"),
            Ok(_) => panic!("a keep-resident size past the slot's memory was taken"),
        }
        let all_of_it = RuntimeConfig {
            max_memory_bytes: 1 << 20,
            keep_resident_bytes: 1 << 20,
            ..RuntimeConfig::default()
        };
        assert!(Runtime::new(all_of_it).is_ok());
    }
}
