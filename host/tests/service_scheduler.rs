//! The scheduler's reaction to the API and its engine cache, in process (emulators, the
//! API over a SQLite file, the scheduler): a sync now wakes an idle worker at once and
//! its run is recorded as `manual`; on PostgreSQL a sync now or a resume asked for on
//! one replica wakes an idle worker of another; with room for one engine, a tenant's
//! engine dropped for another's is rebuilt on its next run and syncs; a failing tenant
//! asking for runs again and again does not starve another sharing its one worker.

mod api_support;
mod service_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::{Db, KEY_HEX, OPERATOR, TestServer};
use dealbridge::api::{ApiConfig, AppState};
use dealbridge::runtime::{Runtime, RuntimeConfig};
use dealbridge::service::{Scheduler, listen_to_replicas};
use dealbridge::store::{Page, Run, RunStatus, RunTrigger, Store, TenantId};
use reqwest::{Method, StatusCode};
use service_support::{
    a_run_with_status, assert_converged, call, emulators, eventually, put_unreachable_hubspot,
    set_up_tenant, test_scheduler,
};

/// A scheduler of one worker on `state`.
fn one_worker(state: &AppState, idle_poll: Duration, engine_cache_entries: usize) -> Scheduler {
    test_scheduler(state, 1, |c| {
        c.idle_poll = idle_poll;
        c.engine_cache_entries = engine_cache_entries;
    })
}

/// `POST /v1/tenants/{tenant}/sync/{action}`.
async fn sync_action(base: &str, tenant: &str, token: &str, action: &str) {
    let (status, body) = call(
        base,
        Method::POST,
        &format!("/v1/tenants/{tenant}/sync/{action}"),
        token,
        None,
    )
    .await;
    assert!(status.is_success(), "{action}: {status} {body}");
}

/// Waits until the tenant has `n` finished runs and its lease is given up; returns its
/// runs, newest first.
async fn finished_runs(store: &Arc<dyn Store>, tenant: &str, n: usize) -> Vec<Run> {
    let tenant = TenantId::new(tenant).unwrap();
    eventually(
        &format!("{n} finished runs of {tenant}"),
        Duration::from_secs(120),
        || {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                let runs = store.runs(&tenant, Page::first(20)).await.unwrap();
                let job = store.sync_job(&tenant).await.unwrap()?;
                let done = runs
                    .iter()
                    .filter(|r| r.status != RunStatus::Running)
                    .count();
                (done >= n && job.lease_holder.is_none()).then_some(runs)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_now_wakes_an_idle_worker_and_its_run_is_recorded_as_manual() {
    let emu = emulators(2, 4, 6).await;
    let s = TestServer::start().await;
    // An idle worker would look for due tenants again only after an hour: a run within
    // the test's limits can only come from the wake-up.
    let scheduler = one_worker(&s.state, Duration::from_secs(3600), 256);
    let token = s.tenant("acme").await;
    sync_action(&s.base, "acme", &token, "pause").await;
    set_up_tenant(&s.base, &emu, "acme", &token).await;
    // Asked for while paused, so that the one run starts at the resume.
    sync_action(&s.base, "acme", &token, "trigger").await;
    sync_action(&s.base, "acme", &token, "resume").await;
    let runs = finished_runs(&s.store, "acme", 1).await;
    assert_eq!(runs[0].trigger, RunTrigger::Backfill, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");

    // The worker is idle again (the lease is given up and the tenant is not due for an
    // hour); sync now wakes it, and the run says who asked for it.
    sync_action(&s.base, "acme", &token, "trigger").await;
    let runs = finished_runs(&s.store, "acme", 2).await;
    assert_eq!(runs[0].trigger, RunTrigger::Manual, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");
    let job = s
        .store
        .sync_job(&TenantId::new("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!job.sync_now_requested, "the request was consumed: {job:?}");

    scheduler.shutdown().await;
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}

/// Another replica on `s`'s PostgreSQL database, listening for `NOTIFY`, with a
/// scheduler of one worker (idle poll of an hour) that has had its first look: from then
/// on only a wake-up makes it look again. Returns the scheduler and the listener.
async fn idle_worker_of_another_replica(
    s: &TestServer,
) -> (Scheduler, tokio::task::JoinHandle<()>) {
    let url = std::env::var("DATABASE_URL").unwrap();
    let other = AppState::new(
        s.store.clone(),
        Runtime::new(RuntimeConfig::default()).unwrap(),
        OPERATOR,
        KEY_HEX,
        ApiConfig::default(),
    )
    .unwrap();
    let listening = listen_to_replicas(&url, other.clone()).await.unwrap();
    // A tenant without connections shows when the worker has had its first look (it
    // leases the tenant, finds nothing to sync and gives the lease back).
    let idle = s.tenant("idle-probe").await;
    let (status, body) = call(
        &s.base,
        Method::PUT,
        "/v1/tenants/idle-probe/sync/schedule",
        &idle,
        Some(serde_json::json!({"interval_secs": 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scheduler = one_worker(&other, Duration::from_secs(3600), 256);
    let probe = TenantId::new("idle-probe").unwrap();
    eventually("the worker's first look", Duration::from_secs(60), || {
        let (store, probe) = (s.store.clone(), probe.clone());
        async move {
            let job = store.sync_job(&probe).await.unwrap()?;
            (job.fencing_token >= 1 && job.lease_holder.is_none()).then_some(())
        }
    })
    .await;
    (scheduler, listening)
}

/// Two replicas on one PostgreSQL database: the API of one, the scheduler (one worker,
/// idle poll of an hour) of the other. A sync now asked for on the first wakes the
/// second's idle worker through `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_now_on_one_replica_wakes_an_idle_worker_of_another_on_postgresql() {
    let Some(s) = TestServer::start_on(Db::Postgres, "wake").await else {
        return;
    };
    let emu = emulators(2, 4, 6).await;
    let (scheduler, listening) = idle_worker_of_another_replica(&s).await;

    let token = s.tenant("acme").await;
    sync_action(&s.base, "acme", &token, "pause").await;
    set_up_tenant(&s.base, &emu, "acme", &token).await;
    sync_action(&s.base, "acme", &token, "resume").await;
    // Only the NOTIFY of this sync now can wake the other replica's worker.
    sync_action(&s.base, "acme", &token, "trigger").await;
    let runs = finished_runs(&s.store, "acme", 1).await;
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");

    scheduler.shutdown().await;
    listening.abort();
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}

/// Two replicas on one PostgreSQL database, as above. A tenant paused before the other
/// replica's worker starts is due all along; resuming it on the first replica wakes the
/// second's idle worker through `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_on_one_replica_wakes_an_idle_worker_of_another_on_postgresql() {
    let Some(s) = TestServer::start_on(Db::Postgres, "resume").await else {
        return;
    };
    let emu = emulators(2, 4, 6).await;
    let token = s.tenant("acme").await;
    sync_action(&s.base, "acme", &token, "pause").await;
    set_up_tenant(&s.base, &emu, "acme", &token).await;
    // The worker's first look skips the paused tenant.
    let (scheduler, listening) = idle_worker_of_another_replica(&s).await;

    // Only the NOTIFY of this resume can wake the other replica's worker.
    sync_action(&s.base, "acme", &token, "resume").await;
    let runs = finished_runs(&s.store, "acme", 1).await;
    assert_eq!(runs[0].trigger, RunTrigger::Backfill, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");

    scheduler.shutdown().await;
    listening.abort();
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_dropped_from_the_cache_is_rebuilt_and_syncs() {
    let emu_a = emulators(2, 4, 6).await;
    let emu_b = emulators(2, 4, 6).await;
    let s = TestServer::start().await;
    let scheduler = one_worker(&s.state, Duration::from_millis(100), 1);
    let mut tokens = Vec::new();
    for (name, emu) in [("a", &emu_a), ("b", &emu_b)] {
        let token = s.tenant(name).await;
        sync_action(&s.base, name, &token, "pause").await;
        set_up_tenant(&s.base, emu, name, &token).await;
        tokens.push(token);
    }
    let (token_a, token_b) = (&tokens[0], &tokens[1]);

    // Sync now asked for while paused: one run, at the resume.
    for action in ["trigger", "resume"] {
        sync_action(&s.base, "a", token_a, action).await;
    }
    finished_runs(&s.store, "a", 1).await;
    let stats = scheduler.engine_cache_stats();
    assert_eq!((stats.built, stats.entries, stats.evicted), (1, 1, 0));

    // b's engine takes the only place: a's is dropped.
    for action in ["trigger", "resume"] {
        sync_action(&s.base, "b", token_b, action).await;
    }
    finished_runs(&s.store, "b", 1).await;
    let stats = scheduler.engine_cache_stats();
    assert_eq!((stats.built, stats.entries, stats.evicted), (2, 1, 1));

    // a's next run builds its engine again, and it syncs.
    sync_action(&s.base, "a", token_a, "trigger").await;
    let runs = finished_runs(&s.store, "a", 2).await;
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:?}");
    let stats = scheduler.engine_cache_stats();
    assert_eq!(
        (stats.built, stats.reused, stats.entries, stats.evicted),
        (3, 0, 1, 2)
    );
    assert_converged(&emu_a, s.store.as_ref(), &TenantId::new("a").unwrap()).await;
    let (status, _) = call(&s.base, Method::GET, "/v1/tenants/a/sync", token_a, None).await;
    assert_eq!(status, StatusCode::OK);

    scheduler.shutdown().await;
    s.shutdown().await;
    emu_a.shutdown().await.unwrap();
    emu_b.shutdown().await.unwrap();
}

/// Fair ordering with one worker: a tenant whose HubSpot cannot be reached, and whose
/// runs are asked for again and again (every 50 ms), shares the worker with a quiet
/// tenant. Each run of the failing tenant is stopped by the run budget; since a run is
/// picked by how long it has been due, and the failing tenant is due anew only after
/// each request, the quiet tenant's run starts after at most one more run of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_tenant_asking_for_runs_again_and_again_does_not_starve_another() {
    let emu = emulators(2, 4, 6).await;
    let s = TestServer::start().await;
    let mut tokens = Vec::new();
    for name in ["noisy", "quiet"] {
        let token = s.tenant(name).await;
        sync_action(&s.base, name, &token, "pause").await;
        set_up_tenant(&s.base, &emu, name, &token).await;
        tokens.push(token);
    }
    let (noisy_token, quiet_token) = (tokens[0].clone(), tokens[1].clone());
    put_unreachable_hubspot(&s.base, "noisy", &noisy_token).await;
    let scheduler = test_scheduler(&s.state, 1, |c| c.run_budget = Duration::from_secs(2));
    sync_action(&s.base, "noisy", &noisy_token, "resume").await;
    let asking = tokio::spawn({
        let base = s.base.clone();
        async move {
            loop {
                sync_action(&base, "noisy", &noisy_token, "trigger").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // The failing tenant has the worker: one failed run, the next asked for already.
    let noisy = TenantId::new("noisy").unwrap();
    let long = Duration::from_secs(120);
    a_run_with_status(s.store.as_ref(), &noisy, RunStatus::Failed, long).await;

    let quiet_due_from = chrono::Utc::now().timestamp_millis();
    sync_action(&s.base, "quiet", &quiet_token, "resume").await;
    let quiet = TenantId::new("quiet").unwrap();
    let quiet_run = a_run_with_status(s.store.as_ref(), &quiet, RunStatus::Succeeded, long).await;
    asking.abort();
    let noisy_runs = s.store.runs(&noisy, Page::first(100)).await.unwrap();
    assert!(
        noisy_runs.iter().all(|r| r.status != RunStatus::Succeeded),
        "{noisy_runs:?}"
    );
    let between = noisy_runs
        .iter()
        .filter(|r| r.started_at_ms > quiet_due_from && r.started_at_ms < quiet_run.started_at_ms)
        .count();
    assert!(
        between <= 1,
        "{between} runs of the failing tenant started before the quiet one's: {noisy_runs:?}"
    );

    scheduler.shutdown().await;
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}
