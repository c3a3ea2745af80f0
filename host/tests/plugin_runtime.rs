//! The plugin runtime against real components: the default rules, the
//! owner-lookup example and the hostile suite (from `dealbridge-guests`).
//! Every hostile component gets its own specific error, the host survives,
//! and a good plugin still runs right after (and at the same time).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dealbridge::runtime::gateway::{
    CrmGateway, GatewayError, GuestRequest, GuestResponse, SendBudget,
};
use dealbridge::runtime::{
    Batch, DenyAllGateway, FieldRef, Inclusion, Invocation, InvokeError, LimitKind, Limits,
    LoadError, LoadSource, LoadedPlugin, PairOutcome, PlanPath, Runtime, RuntimeConfig, Skip,
    TraceOutcome, fixture, flatten, lowered_size,
};
use serde_json::json;

mod plugin_support;

use plugin_support::{batch_from_fixture, load, runtime};

fn default_rules() -> &'static LoadedPlugin {
    static P: OnceLock<LoadedPlugin> = OnceLock::new();
    P.get_or_init(|| load(dealbridge_guests::DEFAULT_RULES))
}

fn hostile() -> &'static LoadedPlugin {
    static P: OnceLock<LoadedPlugin> = OnceLock::new();
    P.get_or_init(|| load(dealbridge_guests::HOSTILE))
}

fn batch(pairs: usize) -> Batch {
    let pair = json!({
        "salesforce": {
            "id": "006000000000001AAA",
            "modified_at": "2026-05-20T20:49:32.000+0000",
            "fields": { "Name": "Big deal", "Amount": { "decimal": "1000.00" }, "CloseDate": { "date": "2026-06-30" } }
        },
        "hubspot": { "id": "9001", "modified_at": "2026-05-19T10:00:00Z", "fields": { "dealname": "Old name" } },
        "salesforce_changed": ["Name", "Amount"]
    });
    batch_from_fixture(json!({ "pairs": vec![pair; pairs] }))
}

fn inv(config: serde_json::Value, limits: Limits, gateway: Arc<dyn CrmGateway>) -> Invocation {
    Invocation::new(limits, &config, gateway).unwrap()
}

/// Asserts that an invocation ended at `limit` set to `limit_value`; the figure it reached.
fn limit_reached<T: std::fmt::Debug>(
    result: &Result<T, InvokeError>,
    limit: LimitKind,
    limit_value: u64,
) -> u64 {
    match result {
        Err(InvokeError::Limit {
            limit: hit,
            limit_value: value,
            reached,
        }) if *hit == limit && *value == limit_value => *reached,
        other => panic!("expected the `{limit}` limit at {limit_value}, got {other:?}"),
    }
}

/// Answers every request with 200 and counts what reached it.
#[derive(Default)]
struct AnswerAll {
    seen: AtomicU32,
    delay: Option<Duration>,
}

#[async_trait::async_trait]
impl CrmGateway for AnswerAll {
    async fn send(
        &self,
        _req: &GuestRequest,
        _b: SendBudget,
    ) -> Result<GuestResponse, GatewayError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        Ok(GuestResponse {
            status: 200,
            headers: vec![],
            body: br#"{"results":[]}"#.to_vec(),
        })
    }
}

async fn assert_good_plugin_still_runs() {
    let i = Invocation::with_defaults();
    let r = default_rules().plan(&i, &batch(3)).await;
    let outcomes = r
        .result
        .expect("the default rules run after a hostile plugin");
    assert_eq!(outcomes.len(), 3);
}

#[tokio::test]
async fn default_rules_describe_and_plan() {
    let p = default_rules();
    assert_eq!(
        p.world().contract_version,
        dealbridge::runtime::inspect::CONTRACT_VERSION
    );
    let d = p
        .describe(&Invocation::with_defaults(), &[])
        .await
        .result
        .unwrap();
    assert!(!d.mappings.is_empty());
    let r = p.plan(&Invocation::with_defaults(), &batch(2)).await;
    let outcomes = r.result.unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(r.report.fuel_used > 0);
    assert!(r.report.peak_memory_bytes > 0);
    assert!(r.report.input_bytes > 0 && r.report.output_bytes > 0);
}

#[test]
fn every_bad_input_is_refused_at_load_with_its_own_error() {
    use dealbridge_guests as g;
    let rt = runtime();
    let err = |path: &str| match rt.load(&std::fs::read(path).unwrap()) {
        Ok(_) => panic!("{path} loaded"),
        Err(e) => e,
    };
    for (path, import) in [
        (g::HOSTILE_FILESYSTEM, "wasi:filesystem/"),
        (g::HOSTILE_SOCKETS, "wasi:sockets/"),
        (g::HOSTILE_HTTP, "wasi:http/"),
    ] {
        match err(path) {
            LoadError::ForbiddenImports { imports } => {
                assert!(
                    imports.iter().any(|i| i.starts_with(import)),
                    "{path}: {imports:?}"
                );
                assert!(
                    imports.iter().all(|i| !i.starts_with("dealbridge:")),
                    "{imports:?}"
                );
            }
            other => panic!("{path}: {other}"),
        }
    }
    assert!(matches!(err(g::INPUT_CORE_MODULE), LoadError::CoreModule));
    match err(g::INPUT_WRONG_VERSION) {
        LoadError::WrongVersion { found } => assert!(found.contains("@0.2.0"), "{found}"),
        other => panic!("{other}"),
    }
    match err(g::INPUT_WRONG_WORLD) {
        LoadError::WrongWorld { exports } => {
            assert_eq!(exports, vec!["example:other/api@1.0.0".to_string()])
        }
        other => panic!("{other}"),
    }
    assert!(matches!(err(g::INPUT_EMPTY), LoadError::Empty));
    assert!(matches!(err(g::INPUT_TRUNCATED), LoadError::Invalid(_)));
    assert!(matches!(err(g::INPUT_CORRUPT), LoadError::Invalid(_)));
    assert!(matches!(err(g::INPUT_NOT_WASM), LoadError::NotWasm));
    let big = vec![0u8; (rt.config().max_component_bytes + 1) as usize];
    assert!(matches!(rt.load(&big), Err(LoadError::TooLarge { .. })));
}

async fn attack(
    config: serde_json::Value,
    limits: Limits,
) -> dealbridge::runtime::Invoked<Vec<PairOutcome>> {
    hostile()
        .plan(&inv(config, limits, Arc::new(DenyAllGateway)), &batch(1))
        .await
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let r = attack(
        json!({"attack": "infinite-loop"}),
        Limits {
            fuel: 5_000_000,
            ..Limits::default()
        },
    )
    .await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::Fuel,
            limit_value: 5_000_000,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(r.report.fuel_used, 5_000_000);
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_when_fuel_is_plenty() {
    let started = Instant::now();
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 200,
        ..Limits::default()
    };
    let r = attack(json!({"attack": "infinite-loop"}), limits).await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::Deadline,
            limit_value: 200,
            reached,
        }) => assert!(reached >= 200),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let r = attack(json!({"attack": "deep-recursion"}), Limits::default()).await;
    assert!(
        matches!(r.result, Err(InvokeError::StackOverflow)),
        "{:?}",
        r.result
    );
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let r = attack(
        json!({"attack": "memory-bomb"}),
        Limits {
            memory_bytes: 8 << 20,
            ..Limits::default()
        },
    )
    .await;
    assert!(limit_reached(&r.result, LimitKind::Memory, 8 << 20) > 8 << 20);
    assert!(r.report.peak_memory_bytes <= 8 << 20);
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn huge_output_hits_the_output_limit() {
    let r = attack(
        json!({"attack": "huge-output", "bytes": 2 << 20}),
        Limits::default(),
    )
    .await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::OutputBytes,
            limit_value,
            reached,
        }) => {
            assert_eq!(limit_value, 1 << 20);
            assert!(reached > 2 << 20);
        }
        other => panic!("{other:?}"),
    }
    assert_good_plugin_still_runs().await;
}

/// 64 strings sharing one MiB of guest memory would take the host 64 MiB to copy: the host
/// stops at its lift budget (8 × the output limit, plus a small floor), on both paths, and
/// says so as the output limit.
#[tokio::test]
async fn strings_sharing_guest_memory_are_refused_before_the_host_copies_them() {
    let limits = Limits::default();
    let budget = limits.lift_budget();
    assert!(budget < 64 << 20, "the attack must outgrow the budget");
    for path in [PlanPath::Flat, PlanPath::Nested] {
        let r = hostile()
            .plan(
                &inv(
                    json!({"attack": "shared-output", "copies": 64, "bytes": 1 << 20}),
                    limits.clone(),
                    Arc::new(DenyAllGateway),
                )
                .on_path(path),
                &batch(1),
            )
            .await;
        let reached = limit_reached(&r.result, LimitKind::OutputBytes, limits.output_bytes);
        // Copying stopped at the budget: had the host copied every string first, the figure
        // would be the 64 MiB they measure.
        assert_eq!(reached, budget, "{path:?}");
    }
    assert_good_plugin_still_runs().await;
}

/// The same trick on a host call's arguments: 64 header values sharing one MiB. The request is
/// never built or sent, and the error names the host call, not the output.
#[tokio::test]
async fn a_request_whose_strings_share_guest_memory_is_refused_and_never_sent() {
    let gateway = Arc::new(AnswerAll::default());
    let limits = Limits::default();
    let r = hostile()
        .plan(
            &inv(
                json!({"attack": "shared-request", "copies": 64, "bytes": 1 << 20}),
                limits.clone(),
                gateway.clone(),
            ),
            &batch(1),
        )
        .await;
    match &r.result {
        Err(InvokeError::HostCallTooLarge { budget }) => assert_eq!(*budget, limits.lift_budget()),
        other => panic!("expected HostCallTooLarge, got {other:?}"),
    }
    assert_eq!(gateway.seen.load(Ordering::SeqCst), 0, "nothing was sent");
    assert!(r.report.http.is_empty(), "{:?}", r.report.http);
    // A few such headers fit the budget: the request is made.
    let r = hostile()
        .plan(
            &inv(
                json!({"attack": "shared-request", "copies": 2, "bytes": 1024}),
                limits,
                gateway.clone(),
            ),
            &batch(1),
        )
        .await;
    match &r.result {
        Err(InvokeError::Rule(e)) => assert!(e.message.contains("Ok(200)"), "{}", e.message),
        other => panic!("expected the attack's own error, got {other:?}"),
    }
    assert_eq!(gateway.seen.load(Ordering::SeqCst), 1);
    assert_good_plugin_still_runs().await;
}

/// A well-formed plan exactly at the output limit passes: the lift budget refuses nothing
/// that the output limit would let through. (The plan is large enough that its budget is set
/// by the limit, not by the budget's small floor.)
#[tokio::test]
async fn a_plan_exactly_at_the_output_limit_still_passes_on_both_paths() {
    let batch = batch(1000);
    for path in [PlanPath::Flat, PlanPath::Nested] {
        let measured = default_rules()
            .plan(&Invocation::with_defaults().on_path(path), &batch)
            .await;
        measured.result.as_ref().expect("the plan runs");
        let tight = Limits {
            output_bytes: measured.report.output_bytes,
            ..Limits::default()
        };
        let r = default_rules()
            .plan(
                &inv(json!({}), tight.clone(), Arc::new(DenyAllGateway)).on_path(path),
                &batch,
            )
            .await;
        assert_eq!(r.result.expect("fits").len(), 1000, "{path:?}");
        // The budget's floor is at most an eighth of it here.
        assert!(
            tight.output_bytes > dealbridge::runtime::LIFT_BUDGET_FLOOR,
            "{}",
            tight.output_bytes
        );
        let over = Limits {
            output_bytes: measured.report.output_bytes - 1,
            ..tight
        };
        let r = default_rules()
            .plan(
                &inv(json!({}), over.clone(), Arc::new(DenyAllGateway)).on_path(path),
                &batch,
            )
            .await;
        limit_reached(&r.result, LimitKind::OutputBytes, over.output_bytes);
    }
}

#[tokio::test]
async fn huge_log_is_capped_dropped_and_counted() {
    let limits = Limits {
        log_bytes: 10 * 1024,
        ..Limits::default()
    };
    let r = attack(json!({"attack": "huge-log", "bytes": 1 << 20}), limits).await;
    assert!(
        matches!(r.result, Err(InvokeError::Rule(_))),
        "{:?}",
        r.result
    );
    let kept: usize = r.report.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 10 * 1024, "{kept}");
    assert_eq!(r.report.logs.len(), 10);
    assert_eq!(r.report.log_dropped_lines, 1024 - 10);
    let hit = r
        .report
        .limits_hit
        .iter()
        .find(|h| h.limit == LimitKind::LogBytes)
        .expect("log limit recorded");
    assert_eq!(hit.limit_value, 10 * 1024);
    assert_eq!(hit.reached, 1 << 20);
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn trap_and_panic_are_traps_with_the_panic_message() {
    let r = attack(json!({"attack": "trap"}), Limits::default()).await;
    match r.result {
        Err(InvokeError::Trap(m)) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("{other:?}"),
    }
    let r = attack(json!({"attack": "panic"}), Limits::default()).await;
    match r.result {
        Err(InvokeError::Trap(m)) => {
            assert!(m.contains("hostile component panics on purpose"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(r.report.stderr.contains("panicked"), "{}", r.report.stderr);
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn crm_escapes_are_all_denied_before_anything_leaves() {
    let gw = Arc::new(AnswerAll::default());
    let i = inv(
        json!({"attack": "crm-escape"}),
        Limits::default(),
        gw.clone(),
    );
    let r = hostile().plan(&i, &batch(1)).await;
    match r.result {
        Err(InvokeError::Rule(e)) => assert!(
            e.message.starts_with("crm escapes: all") && e.message.ends_with("denied"),
            "{}",
            e.message
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gw.seen.load(Ordering::SeqCst),
        0,
        "a request reached the gateway"
    );
    assert!(r.report.http.len() >= 18);
    assert!(
        r.report
            .http
            .iter()
            .all(|h| h.outcome == TraceOutcome::Denied && h.detail.is_some())
    );
    assert!(
        r.report
            .http
            .iter()
            .all(|h| !h.path.contains('\r') && !h.path.contains('\n'))
    );
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn request_flood_stops_at_the_outbound_limit() {
    let gw = Arc::new(AnswerAll::default());
    let i = inv(
        json!({"attack": "request-flood", "count": 100}),
        Limits {
            outbound_requests: 5,
            ..Limits::default()
        },
        gw.clone(),
    );
    let r = hostile().plan(&i, &batch(1)).await;
    match r.result {
        Err(InvokeError::Rule(e)) => {
            assert!(
                e.message.starts_with("request 6 of 100 refused")
                    && e.message.contains("LimitExceeded"),
                "{}",
                e.message
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.seen.load(Ordering::SeqCst), 5);
    let hit = r
        .report
        .limits_hit
        .iter()
        .find(|h| h.limit == LimitKind::OutboundRequests)
        .unwrap();
    assert_eq!((hit.limit_value, hit.reached), (5, 6));
    assert_eq!(r.report.http.last().unwrap().outcome, TraceOutcome::Limit);
}

#[tokio::test]
async fn the_deadline_covers_time_spent_in_crm_calls() {
    let gw = Arc::new(AnswerAll {
        delay: Some(Duration::from_secs(30)),
        ..AnswerAll::default()
    });
    let i = inv(
        json!({"attack": "request-flood", "count": 1}),
        Limits {
            deadline_ms: 300,
            ..Limits::default()
        },
        gw.clone(),
    );
    let started = Instant::now();
    let r = hostile().plan(&i, &batch(1)).await;
    assert!(
        matches!(
            r.result,
            Err(InvokeError::Limit {
                limit: LimitKind::Deadline,
                limit_value: 300,
                ..
            })
        ),
        "{:?}",
        r.result
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.seen.load(Ordering::SeqCst), 1);
    assert_good_plugin_still_runs().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_does_not_disturb_another() {
    let bad = tokio::spawn(async {
        let limits = Limits {
            fuel: u64::MAX / 2,
            deadline_ms: 1_000,
            ..Limits::default()
        };
        attack(json!({"attack": "infinite-loop"}), limits)
            .await
            .result
    });
    let good = tokio::spawn(async {
        let mut ok = 0;
        for _ in 0..20 {
            let r = default_rules()
                .plan(&Invocation::with_defaults(), &batch(5))
                .await;
            if r.result.is_ok() {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(good.await.unwrap(), 20);
    assert!(matches!(
        bad.await.unwrap(),
        Err(InvokeError::Limit {
            limit: LimitKind::Deadline,
            ..
        })
    ));
}

#[tokio::test]
async fn input_over_the_limit_is_refused_before_the_call() {
    let i = inv(
        json!({}),
        Limits {
            input_bytes: 100,
            ..Limits::default()
        },
        Arc::new(DenyAllGateway),
    );
    let r = default_rules().plan(&i, &batch(3)).await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::InputBytes,
            limit_value: 100,
            reached,
        }) => assert!(reached > 100),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.report.fuel_used, 0);
}

#[tokio::test]
async fn a_rule_error_is_typed() {
    let r = default_rules()
        .plan(
            &inv(
                json!({"no_such_option": 1}),
                Limits::default(),
                Arc::new(DenyAllGateway),
            ),
            &batch(1),
        )
        .await;
    match r.result {
        Err(InvokeError::Rule(e)) => assert_eq!(e.kind, dealbridge::runtime::ErrorKind::Config),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn hostile_none_behaves() {
    let r = attack(json!({}), Limits::default()).await;
    assert!(matches!(
        r.result.unwrap().as_slice(),
        [PairOutcome::Skip(Skip::UpToDate)]
    ));
}

#[test]
fn the_compile_cache_is_keyed_by_digest_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().into()),
        max_concurrent_instances: 2,
        ..RuntimeConfig::default()
    };
    let bytes = std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap();
    let rt = Runtime::new(config.clone()).unwrap();
    let first = rt.load(&bytes).unwrap();
    assert_eq!(first.source(), LoadSource::Compiled);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].starts_with(first.digest()) && files[0].ends_with(".cwasm"),
        "{files:?}"
    );
    let second = Runtime::new(config).unwrap().load(&bytes).unwrap();
    assert_eq!(second.source(), LoadSource::Cache);
    assert_eq!(second.digest(), first.digest());
    // A corrupt artefact is ignored and rebuilt, never trusted blindly. (It is
    // replaced by rename, as `cache::store` does: a loaded artefact is
    // memory-mapped, so a file must never be rewritten in place.)
    drop(second);
    let tmp = dir.path().join("tmp");
    std::fs::write(&tmp, b"garbage").unwrap();
    std::fs::rename(&tmp, dir.path().join(&files[0])).unwrap();
    let third = rt.load(&bytes).unwrap();
    assert_eq!(third.source(), LoadSource::Compiled);
}

#[tokio::test]
async fn instance_and_table_counts_are_limited_at_instantiation() {
    let i = inv(
        json!({}),
        Limits {
            instances: 1,
            ..Limits::default()
        },
        Arc::new(DenyAllGateway),
    );
    let r = default_rules().plan(&i, &batch(1)).await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::Instances,
            limit_value: 1,
            reached,
        }) => assert_eq!(reached, 2),
        other => panic!("{other:?}"),
    }
    let i = inv(
        json!({}),
        Limits {
            tables: 0,
            ..Limits::default()
        },
        Arc::new(DenyAllGateway),
    );
    let r = default_rules().plan(&i, &batch(1)).await;
    match r.result {
        Err(InvokeError::Limit {
            limit: LimitKind::Tables,
            limit_value: 0,
            reached,
        }) => assert!(reached >= 1),
        other => panic!("{other:?}"),
    }
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn crm_calls_are_traced_with_status_and_bytes() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules-wasm/examples/owner-lookup/fixtures/salesforce-owner-resolved-through-crm.json"
    ))
    .unwrap();
    let fx = fixture::parse(&text).unwrap();
    let owner = load(dealbridge_guests::OWNER_LOOKUP);
    let run = fixture::run(&owner, &fx, &Limits::default(), None)
        .await
        .unwrap();
    assert!(run.error.is_none(), "{}", run.output);
    assert!(fixture::check(&fx, &run).is_empty());
    assert!(!run.report.http.is_empty());
    for h in &run.report.http {
        assert_eq!(h.outcome, TraceOutcome::Ok);
        assert_eq!(h.status, Some(200));
        assert!(h.response_bytes > 0 && h.ms >= 0.0);
    }
}

/// The default rules are built without WASI and never call `crm`: they import neither, and
/// their limits hold as for any other component.
#[tokio::test]
async fn default_rules_run_without_wasi_and_keep_their_fuel_and_memory_limits() {
    let imports = &default_rules().world().imports;
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("wasi:") || i.starts_with("dealbridge:rules/crm")),
        "{imports:?}"
    );
    let gateway: Arc<dyn CrmGateway> = Arc::new(DenyAllGateway);

    let few_fuel = Limits {
        fuel: 1_000,
        ..Limits::default()
    };
    let r = default_rules()
        .plan(&inv(json!({}), few_fuel, gateway.clone()), &batch(1))
        .await;
    limit_reached(&r.result, LimitKind::Fuel, 1_000);
    assert_eq!(r.report.fuel_used, 1_000);

    let little_memory = Limits {
        memory_bytes: 64 << 10,
        ..Limits::default()
    };
    let r = default_rules()
        .plan(&inv(json!({}), little_memory, gateway.clone()), &batch(1))
        .await;
    assert!(limit_reached(&r.result, LimitKind::Memory, 64 << 10) > 64 << 10);

    let r = default_rules()
        .plan(&inv(json!({}), Limits::default(), gateway), &batch(1))
        .await;
    assert_eq!(r.result.unwrap().len(), 1);
    assert!(r.report.fuel_used > 0);
}

/// The linear memory a component's core modules declare at instantiation, in bytes.
fn initial_memory_bytes(component: &[u8]) -> u64 {
    let mut pages = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::MemorySection(memories) = payload.unwrap() {
            for memory in memories {
                pages += memory.unwrap().initial;
            }
        }
    }
    pages * (64 << 10)
}

/// The default rules start with a small linear memory: the host's work per invocation grows
/// with it (resetting the pool slot scans all of it), so their build gives them a 128 KiB stack
/// instead of Rust's 1 MiB (`rules-wasm/artifacts/build.rs`), which took about 0.5 µs off every
/// invocation. With Rust's stack the component starts with 1,179,648 bytes.
#[test]
fn default_rules_start_with_a_small_linear_memory() {
    let initial = initial_memory_bytes(&std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap());
    assert!(initial > 0);
    assert!(
        initial <= 256 << 10,
        "the default rules declare {initial} bytes of initial linear memory"
    );
}

/// A small batch fits in the memory the default rules start with: they never call `memory.grow`,
/// which would cost the host two `mprotect` calls per invocation (one to grow the slot, one to
/// shrink it back when its next instance starts; see BENCHMARKS.md, Plugin runtime).
#[tokio::test]
async fn default_rules_plan_a_small_batch_without_growing_memory() {
    let initial = initial_memory_bytes(&std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap());
    assert!(initial > 0);
    let tenant_config = json!({
        "rules": { "opportunity-deal": { "Amount": "two-way", "Description": "dont-sync" } },
        "stage_map": { "Default": { "Prospecting": "appointmentscheduled" } },
        "condition": { "min_amount": "10.00" }
    });
    for config in [json!({}), tenant_config] {
        for pairs in [0, 1, 3] {
            let r = default_rules()
                .plan(
                    &inv(config.clone(), Limits::default(), Arc::new(DenyAllGateway)),
                    &batch(pairs),
                )
                .await;
            assert_eq!(r.result.unwrap().len(), pairs);
            assert_eq!(
                r.report.peak_memory_bytes, initial,
                "{pairs} pairs with {config} grew memory"
            );
        }
    }
}

/// This thread's minor page faults so far (`minflt`, field 10 of `/proc/thread-self/stat`).
fn thread_minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux's procfs");
    // The fields after the command name, which ends at the last `)`, start at field 3.
    let fields = &stat[stat.rfind(')').expect("a command name") + 2..];
    fields
        .split(' ')
        .nth(10 - 3)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no minflt in {stat}"))
}

/// A freed pool slot keeps the pages its instance dirtied resident up to
/// `keep_resident_bytes` and resets them in place, so that the slot's next instance does not
/// fault them in again; with nothing kept, the next instance faults in every page it writes,
/// the pages the host lowers the batch into among them. The instances run on this thread (a
/// current-thread runtime and one pool slot), so the thread's fault count sees them. The
/// default setting keeps all of the default rules' pages for the sync engine's largest batch,
/// 2,000 pairs.
#[tokio::test(flavor = "current_thread")]
async fn a_freed_slot_keeps_its_dirtied_pages_resident_up_to_the_setting() {
    let pairs = batch(2_000);
    let component = std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap();
    let mut second_call_faults = Vec::new();
    let (mut peak, mut input_bytes) = (0, 0);
    for keep_resident_bytes in [
        0,
        64 << 20,
        dealbridge::runtime::DEFAULT_KEEP_RESIDENT_BYTES,
    ] {
        let rt = Runtime::new(RuntimeConfig {
            max_concurrent_instances: 1,
            keep_resident_bytes,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let plugin = rt.load(&component).unwrap();
        let invocation = Invocation::with_defaults();
        let first = plugin.plan(&invocation, &pairs).await;
        assert_eq!(first.result.unwrap().len(), 2_000);
        (peak, input_bytes) = (first.report.peak_memory_bytes, first.report.input_bytes);
        let before = thread_minor_faults();
        let second = plugin.plan(&invocation, &pairs).await;
        let after = thread_minor_faults();
        assert_eq!(second.result.unwrap().len(), 2_000);
        assert_eq!(second.report.peak_memory_bytes, peak);
        second_call_faults.push(after - before);
    }
    let [none_kept, all_kept, default_kept] = second_call_faults[..] else {
        unreachable!()
    };
    let input_pages = input_bytes / 4096;
    assert!(input_pages > 100, "{input_bytes}");
    for (kept, faults) in [("all", all_kept), ("the default", default_kept)] {
        assert!(
            none_kept >= faults + input_pages,
            "second call's page faults: {none_kept} with nothing kept resident, {faults} with \
             {kept} kept; the batch alone takes {input_pages} pages"
        );
    }
    assert!(
        peak <= dealbridge::runtime::DEFAULT_KEEP_RESIDENT_BYTES as u64,
        "the default rules peak at {peak} bytes for 2,000 pairs, above the default kept resident"
    );
}

/// A guest that imports nothing (so never yields in a host call) and spins while it is
/// instantiated: the deadline stops it, and other tasks of the same thread run meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_without_imports_ends_at_the_deadline_and_leaves_the_thread_free() {
    let spin = load(dealbridge_guests::INPUT_SPIN_AT_START);
    assert!(spin.world().imports.is_empty(), "{:?}", spin.world());
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 300,
        ..Limits::default()
    };
    let invocation = inv(json!({}), limits, Arc::new(DenyAllGateway));
    let ticks = Arc::new(AtomicU32::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let started = Instant::now();
    let r = spin.plan(&invocation, &batch(1)).await;
    let elapsed = started.elapsed();
    ticker.abort();
    assert!(limit_reached(&r.result, LimitKind::Deadline, 300) >= 300);
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // 300 ms of 5 ms sleeps: about 60 ticks if the thread was free, none if the guest held it.
    let ticked = ticks.load(Ordering::SeqCst);
    assert!(
        ticked >= 10,
        "the other task ran only {ticked} times in {elapsed:?}"
    );
    assert_good_plugin_still_runs().await;
}

/// A memory-copy bomb: a loop of 8 MiB `memory.copy`s, a handful of instructions each. Bulk
/// memory work is charged fuel per byte, so the fuel limit stops it (after about 60 copies),
/// long before the deadline; were a copy charged as one instruction, it would run until the
/// deadline instead.
#[tokio::test]
async fn a_memory_copy_bomb_runs_out_of_fuel_counted_per_byte() {
    let bomb = load(dealbridge_guests::INPUT_COPY_LOOP_AT_START);
    let limits = Limits {
        deadline_ms: 30_000,
        ..Limits::default()
    };
    let invocation = inv(json!({}), limits.clone(), Arc::new(DenyAllGateway));
    let r = bomb.plan(&invocation, &batch(1)).await;
    limit_reached(&r.result, LimitKind::Fuel, limits.fuel);
    assert_eq!(r.report.fuel_used, limits.fuel);
    assert_good_plugin_still_runs().await;
}

/// Impostors: the contract's interface and function names, not all of its types. Loading sees
/// only names, so they load; the first instance is refused, naming the first export whose type
/// is wrong, for every export called, and none of their exports runs. One has no right type
/// at all (its `describe` is named; it has no code but that export, so it spends no fuel); the
/// other fits the contract in every export but `flat-rules.plan`, so it passes every export
/// check before that one. The second one's exports all trap, so that an export that ran would
/// end the call with a trap, not with the contract error; its empty initializer, which
/// instantiation runs, is all the fuel it spends.
#[tokio::test]
async fn exports_with_the_right_names_but_the_wrong_types_are_refused_by_name() {
    let cases = [
        (
            dealbridge_guests::INPUT_WRONG_SIGNATURES,
            "`dealbridge:rules/rules` exports `describe` with a type other than the contract's",
            true,
        ),
        (
            dealbridge_guests::INPUT_WRONG_FLAT_SIGNATURE,
            "`dealbridge:rules/flat-rules` exports `plan` with a type other than the contract's",
            false,
        ),
    ];
    for (path, expected, has_no_initializer) in cases {
        let impostor = load(path);
        let invocation = inv(json!({}), Limits::default(), Arc::new(DenyAllGateway));
        let described = impostor.describe(&invocation, &[]).await;
        let planned = impostor.plan(&invocation, &batch(1)).await;
        for result in [described.result.map(drop), planned.result.map(drop)] {
            match result {
                Err(InvokeError::Contract(m)) => assert!(m.starts_with(expected), "{path}: {m}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        if has_no_initializer {
            assert_eq!(planned.report.fuel_used, 0, "{path}: nothing of it ran");
        }
    }
    assert!(
        load(dealbridge_guests::INPUT_WRONG_FLAT_SIGNATURE)
            .world()
            .flat_rules,
        "the stub exports `flat-rules`, so its plan goes the flat path"
    );
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn a_component_of_the_0_1_0_contract_loads_and_runs_on_this_host() {
    // The owner-lookup example is built against the frozen `wit/compat/0.1.0/rules.wit`: its
    // imports and its `rules` export carry `@0.1.0`, and the host links and finds them through
    // their semver-compatible `@0.1.1` definitions.
    let owner = load(dealbridge_guests::OWNER_LOOKUP);
    let world = owner.world();
    assert_eq!(world.contract_version, "0.1.0");
    assert!(!world.flat_rules);
    assert!(
        world
            .exports
            .contains(&"dealbridge:rules/rules@0.1.0".to_string()),
        "{:?}",
        world.exports
    );
    assert!(
        world
            .imports
            .iter()
            .any(|i| i.starts_with("dealbridge:rules/") && i.ends_with("@0.1.0")),
        "{:?}",
        world.imports
    );
    assert_eq!(owner.plan_paths(), [PlanPath::Nested]);
    let d = owner
        .describe(&Invocation::with_defaults(), &[])
        .await
        .result
        .unwrap();
    assert!(!d.mappings.is_empty());
    let folder = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules-wasm/examples/owner-lookup/fixtures"
    );
    let files = fixture::collect(&[folder.into()]).unwrap();
    assert!(!files.is_empty());
    for file in files {
        let fx = fixture::load(&file).unwrap();
        let runs = fixture::run_every_path(&owner, &fx, &Limits::default())
            .await
            .unwrap();
        assert_eq!(runs.len(), 1, "{}", file.display());
        assert_eq!(runs[0].run.report.export, "rules.plan");
        let failures = fixture::check_every_path(&fx, &runs);
        assert!(failures.is_empty(), "{}: {failures:?}", file.display());
    }
    // A 0.1.0 component has no flat path to ask for.
    let flat = Invocation::with_defaults().on_path(PlanPath::Flat);
    assert_eq!(owner.default_path(), PlanPath::Nested);
    let refused = owner.plan(&flat, &batch(1)).await;
    match refused.result {
        Err(InvokeError::Input(m)) => assert!(m.contains("flat-rules"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The report of the refused call still names what was asked for.
    assert_eq!(refused.report.export, "flat-rules.plan");
}

#[tokio::test]
async fn the_hostile_component_plans_on_both_paths_and_the_report_names_the_export() {
    let p = hostile();
    assert!(p.world().flat_rules);
    assert_eq!(p.world().world_name(), "flat-plugin");
    assert_eq!(p.plan_paths(), [PlanPath::Nested, PlanPath::Flat]);
    assert_eq!(p.default_path(), PlanPath::Flat);
    for (path, plan_export, condition_export) in [
        (None, "flat-rules.plan", "flat-rules.condition"),
        (
            Some(PlanPath::Flat),
            "flat-rules.plan",
            "flat-rules.condition",
        ),
        (Some(PlanPath::Nested), "rules.plan", "rules.condition"),
    ] {
        let mut i = Invocation::with_defaults();
        i.path = path;
        let r = p.plan(&i, &batch(3)).await;
        assert_eq!(r.report.export, plan_export);
        assert_eq!(
            r.result.unwrap(),
            vec![PairOutcome::Skip(Skip::UpToDate); 3]
        );
        let c = p.condition(&i, &batch(3)).await;
        assert_eq!(c.report.export, condition_export);
        assert_eq!(c.result.unwrap(), vec![Inclusion::Include; 3]);
    }
}

#[tokio::test]
async fn limits_measure_the_same_figures_on_both_paths() {
    let b = batch(4);
    let run = |path: PlanPath, limits: Limits| {
        let b = b.clone();
        async move {
            hostile()
                .plan(
                    &inv(json!({}), limits, Arc::new(DenyAllGateway)).on_path(path),
                    &b,
                )
                .await
        }
    };
    let nested = run(PlanPath::Nested, Limits::default()).await;
    let flat = run(PlanPath::Flat, Limits::default()).await;
    assert_eq!(nested.result.unwrap(), flat.result.unwrap());
    assert_eq!(nested.report.input_bytes, flat.report.input_bytes);
    assert_eq!(nested.report.output_bytes, flat.report.output_bytes);
    assert!(nested.report.output_bytes > 0);

    // Just below each figure, both paths stop at the same limit with the same figure.
    let input = nested.report.input_bytes;
    let output = nested.report.output_bytes;
    for path in [PlanPath::Nested, PlanPath::Flat] {
        let r = run(
            path,
            Limits {
                input_bytes: input - 1,
                ..Limits::default()
            },
        )
        .await;
        assert_eq!(
            limit_reached(&r.result, LimitKind::InputBytes, input - 1),
            input
        );
        let r = run(
            path,
            Limits {
                output_bytes: output - 1,
                ..Limits::default()
            },
        )
        .await;
        assert_eq!(
            limit_reached(&r.result, LimitKind::OutputBytes, output - 1),
            output
        );
    }
}

/// Runs the hostile `plan` with an attack on the output on `path`.
async fn output_attack(
    attack: &str,
    path: PlanPath,
) -> dealbridge::runtime::Invoked<Vec<PairOutcome>> {
    hostile()
        .plan(
            &inv(
                json!({ "attack": attack }),
                Limits::default(),
                Arc::new(DenyAllGateway),
            )
            .on_path(path),
            &batch(2),
        )
        .await
}

/// The reason of an `InvalidOutput` of `export`.
fn invalid_output<T: std::fmt::Debug>(result: &Result<T, InvokeError>, export: &str) -> String {
    match result {
        Err(InvokeError::InvalidOutput { export: e, reason }) if *e == export => reason.clone(),
        other => panic!("expected an invalid output of `{export}`, got {other:?}"),
    }
}

#[tokio::test]
async fn a_flat_plan_pointing_outside_its_lists_is_refused_with_its_own_error() {
    // `batch(..)` names one HubSpot field (`dealname`): its HubSpot field table has 1 entry.
    for (attack, reason) in [
        (
            "flat-write-span-out-of-range",
            "outcome 0: salesforce writes span (start 0, len 2) reaches past the plan's 1 items (`writes`)",
        ),
        (
            "flat-related-span-out-of-range",
            "outcome 0: hubspot associations span (start 3, len 0) reaches past the plan's 0 items (`related`)",
        ),
        (
            "flat-field-index-out-of-table",
            "outcome 0: write 0 (hubspot) names field index 8, outside the batch's 1 hubspot fields",
        ),
    ] {
        let r = output_attack(attack, PlanPath::Flat).await;
        assert_eq!(
            invalid_output(&r.result, "flat-rules.plan"),
            reason,
            "{attack}"
        );
        let message = r.result.unwrap_err().to_string();
        assert!(
            message.starts_with(
                "the plugin's `flat-rules.plan` returned an invalid output: outcome 0:"
            ),
            "{message}"
        );
        assert!(r.report.fuel_used > 0, "{attack}: the plugin ran");
        // The nested path of the same component behaves.
        let nested = output_attack(attack, PlanPath::Nested).await;
        assert_eq!(nested.result.unwrap().len(), 2, "{attack}");
        assert_good_plugin_still_runs().await;
    }
}

#[tokio::test]
async fn a_flat_batch_plans_to_a_checked_flat_plan_that_decodes_to_the_flat_paths_outcomes() {
    let b = batch(3);
    let flat_batch = flatten(&b).unwrap();
    let i = inv(json!({}), Limits::default(), Arc::new(DenyAllGateway));
    let nested = default_rules()
        .plan(&i.clone().on_path(PlanPath::Flat), &b)
        .await;
    let r = default_rules().plan_flat(&i, &flat_batch).await;
    assert_eq!(r.report.export, "flat-rules.plan");
    assert_eq!(r.report.input_bytes, lowered_size(&flat_batch));
    assert_eq!(r.report.fuel_used, nested.report.fuel_used);
    assert_eq!(
        r.report.output_bytes, nested.report.output_bytes,
        "the output limit counts the same on both"
    );
    let checked = r.result.unwrap();
    let plan = checked.flat();
    assert_eq!(plan.outcomes.len(), 3);
    assert!(
        plan.writes
            .iter()
            .any(|w| matches!(w.field, FieldRef::Known(0))),
        "the plan writes `dealname` by its position: {:?}",
        plan.writes
    );
    assert_eq!(checked.decode(&b).unwrap(), nested.result.unwrap());
}

#[tokio::test]
async fn a_flat_batch_is_refused_over_the_input_limit_and_by_a_component_without_flat_rules() {
    let flat_batch = flatten(&batch(3)).unwrap();
    let size = lowered_size(&flat_batch);
    let tight = inv(
        json!({}),
        Limits {
            input_bytes: size - 1,
            ..Limits::default()
        },
        Arc::new(DenyAllGateway),
    );
    let r = default_rules().plan_flat(&tight, &flat_batch).await;
    assert_eq!(
        limit_reached(&r.result, LimitKind::InputBytes, size - 1),
        size
    );
    assert_eq!(r.report.fuel_used, 0, "nothing ran");

    let owner = load(dealbridge_guests::OWNER_LOOKUP);
    let r = owner
        .plan_flat(&Invocation::with_defaults(), &flat_batch)
        .await;
    match &r.result {
        Err(InvokeError::Input(message)) => assert!(
            message.contains("does not export `flat-rules`"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.report.export, "flat-rules.plan");
}

#[tokio::test]
async fn a_flat_plan_of_a_flat_batch_is_checked_as_on_the_flat_path() {
    let flat_batch = flatten(&batch(2)).unwrap();
    for (attack, reason) in [
        ("wrong-outcome-count", "3 outcomes for a batch of 2 pairs"),
        (
            "flat-field-index-out-of-table",
            "outcome 0: write 0 (hubspot) names field index 8, outside the batch's 1 hubspot fields",
        ),
    ] {
        let i = inv(
            json!({ "attack": attack }),
            Limits::default(),
            Arc::new(DenyAllGateway),
        );
        let r = hostile().plan_flat(&i, &flat_batch).await;
        assert_eq!(
            invalid_output(&r.result, "flat-rules.plan"),
            reason,
            "{attack}"
        );
    }
    assert_good_plugin_still_runs().await;
}

#[tokio::test]
async fn a_wrong_number_of_outcomes_is_refused_on_both_paths() {
    for (path, export) in [
        (PlanPath::Flat, "flat-rules.plan"),
        (PlanPath::Nested, "rules.plan"),
    ] {
        let r = output_attack("wrong-outcome-count", path).await;
        assert_eq!(
            invalid_output(&r.result, export),
            "3 outcomes for a batch of 2 pairs"
        );
        let c = hostile()
            .condition(
                &inv(
                    json!({ "attack": "wrong-outcome-count" }),
                    Limits::default(),
                    Arc::new(DenyAllGateway),
                )
                .on_path(path),
                &batch(2),
            )
            .await;
        let export = export.replace("plan", "condition");
        assert_eq!(
            invalid_output(&c.result, &export),
            "3 inclusions for a batch of 2 pairs"
        );
        assert_good_plugin_still_runs().await;
    }
}

#[tokio::test]
async fn every_shipped_fixture_gives_the_same_output_on_both_paths() {
    let p = default_rules();
    assert!(
        p.world().flat_rules,
        "the default rules export `flat-rules`"
    );
    assert_eq!(p.plan_paths(), [PlanPath::Nested, PlanPath::Flat]);
    let folder = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules-wasm/default-rules/fixtures"
    );
    let files = fixture::collect(&[folder.into()]).unwrap();
    let mut compared = 0;
    for file in &files {
        let name = file.display();
        let fx = fixture::load(file).unwrap();
        let runs = fixture::run_every_path(p, &fx, &Limits::default())
            .await
            .unwrap();
        let failures = fixture::check_every_path(&fx, &runs);
        assert!(failures.is_empty(), "{name}: {failures:?}");
        if fx.call == fixture::CallKind::Describe {
            assert_eq!(runs.len(), 1, "{name}");
            continue;
        }
        let [nested, flat] = &runs[..] else {
            panic!("{name}: {} runs", runs.len())
        };
        assert_eq!((nested.path, flat.path), (PlanPath::Nested, PlanPath::Flat));
        assert!(flat.run.report.export.starts_with("flat-rules."), "{name}");
        assert!(nested.run.report.export.starts_with("rules."), "{name}");
        assert_eq!(nested.run.output, flat.run.output, "{name}");
        assert_eq!(
            nested.run.report.input_bytes, flat.run.report.input_bytes,
            "{name}"
        );
        assert_eq!(
            nested.run.report.output_bytes, flat.run.report.output_bytes,
            "{name}"
        );
        compared += 1;
    }
    assert!(compared >= files.len() / 2, "{compared} of {}", files.len());
}

/// Every kind of value, an empty and a missing record, a snapshot and associations cross the
/// flat path (its lowering of the batch's lists as images and its lifting of the plan's
/// writes) and plan exactly as on the nested path, where wasmtime lowers and lifts every
/// element itself; each value written to HubSpot is the Salesforce one.
#[tokio::test]
async fn every_kind_of_value_plans_the_same_on_both_paths() {
    let kinds = [
        ("Text__c", "text_x", json!("Grüße – ünïcode")),
        ("Dec__c", "dec_x", json!({ "decimal": "-12.50" })),
        ("Int__c", "int_x", json!(-9_000_000_000_i64)),
        ("Flag__c", "flag_x", json!(true)),
        ("Off__c", "off_x", json!(false)),
        ("Day__c", "day_x", json!({ "date": "1969-12-31" })),
        (
            "At__c",
            "at_x",
            json!({ "datetime": "2026-05-20T20:49:32.123Z" }),
        ),
        ("Tags__c", "tags_x", json!({ "multi": ["a", "", "ccc"] })),
        ("None__c", "none_x", json!({ "multi": [] })),
    ];
    let config = json!({
        "custom_mappings": kinds.iter().map(|(sf, hs, _)| json!({
            "salesforce_field": sf, "hubspot_field": hs, "rule": "two-way"
        })).collect::<Vec<_>>()
    });
    let sf_fields: serde_json::Map<String, serde_json::Value> = kinds
        .iter()
        .map(|(sf, _, v)| (sf.to_string(), v.clone()))
        .collect();
    let changed: Vec<&str> = kinds.iter().map(|(sf, _, _)| *sf).collect();
    let related = json!([
        { "kind": "company", "salesforce_id": "001000000000001AAA", "hubspot_id": "5001", "role": null, "primary": true },
        { "kind": "contact", "salesforce_id": "003000000000001AAA", "hubspot_id": null, "role": "Evaluator", "primary": false }
    ]);
    let pair = json!({
        "salesforce": { "id": "006000000000001AAA", "modified_at": "2026-05-20T20:49:32.000Z", "fields": sf_fields },
        "hubspot": { "id": "9001", "modified_at": "2026-05-19T10:00:00Z", "fields": { "text_x": "old", "int_x": 7 } },
        "snapshot": { "synced_at": "2026-05-17T00:00:00Z", "salesforce": { "Int__c": 1 }, "hubspot": { "int_x": 1 } },
        "salesforce_changed": changed,
        "associations": { "salesforce": related, "hubspot": [] }
    });
    let missing = json!({
        "salesforce": null,
        "hubspot": { "id": "9002", "modified_at": "2026-05-19T10:00:00Z", "fields": {} },
        "hubspot_changed": []
    });
    let b = batch_from_fixture(json!({ "pairs": [pair, missing] }));
    let p = default_rules();
    let mut outputs = Vec::new();
    for path in [PlanPath::Nested, PlanPath::Flat] {
        let inv = inv(config.clone(), Limits::default(), Arc::new(DenyAllGateway)).on_path(path);
        let r = p.plan(&inv, &b).await;
        let report = r.report.clone();
        outputs.push((r.result.unwrap(), report.input_bytes, report.output_bytes));
    }
    assert_eq!(outputs[0], outputs[1], "both paths plan the same");
    let PairOutcome::Write(w) = &outputs[1].0[0] else {
        panic!("the first pair writes: {:?}", outputs[1].0[0])
    };
    let sf = &b.pairs[0].salesforce.as_ref().unwrap().fields;
    for (k, (_, hs, _)) in kinds.iter().enumerate() {
        let written = w.hubspot.iter().find(|f| f.field == *hs);
        let want = sf
            .iter()
            .find(|f| b.salesforce_fields[f.field as usize] == kinds[k].0)
            .map(|f| &f.value);
        match written {
            Some(f) => assert_eq!(Some(&f.value), want, "{hs}"),
            // A blank Salesforce value is only written to clear a HubSpot one.
            None => assert_eq!(*hs, "none_x", "{hs} was written"),
        }
    }
}
