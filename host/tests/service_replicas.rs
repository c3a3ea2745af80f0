//! Two `dealbridge serve` processes on one PostgreSQL database: replica A is killed
//! (SIGKILL) in the middle of a tenant's sync, replica B takes the tenant over once A's
//! lease expires, and the end state has every record exactly once on both CRMs.
//!
//! Needs `DATABASE_URL` (a PostgreSQL database; the test works in a fresh schema and
//! drops it). Without it the test says so loudly and returns, except under `CI=true`,
//! where a missing database is a failure.

mod pg_schema;
mod service_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dealbridge::store::{ObjectPair, Page, PostgresStore, RunStatus, Store, StoreConfig, TenantId};
use pg_schema::FreshSchema;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_support::{
    assert_converged, call, create_tenant, emulators, eventually, put_json, set_up_tenant,
};

const OPERATOR: &str = "operator-token-for-the-replica-test-0123456789";
const KEY_HEX: &str = "0f0e0d0c0b0a090807060504030201000f0e0d0c0b0a09080706050403020100";
const TENANT: &str = "replicated";

/// A running replica; killed (SIGKILL) when dropped.
struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dealbridge serve` as `name` on `database_url` and waits until it listens.
/// Its log is drained on a thread (a full pipe would stall it).
fn replica(name: &str, database_url: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .args(["--replica-id", name, "--lease-ttl-secs", "3"])
        .args(["--idle-poll-ms", "100", "--shutdown-grace-secs", "1"])
        .env("DEALBRIDGE_DATABASE_URL", database_url)
        .env("DEALBRIDGE_OPERATOR_TOKEN", OPERATOR)
        .env("DEALBRIDGE_SECRET_KEY", KEY_HEX)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{name} exited before listening"))
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Replica {
        child,
        base: format!("http://{addr}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_s_tenant_is_finished_by_the_other_without_duplicates() {
    assert!(
        std::env::var("DATABASE_URL").is_ok() || std::env::var("CI").as_deref() != Ok("true"),
        "DATABASE_URL must be set in CI: the replica test needs PostgreSQL"
    );
    let Some(schema) =
        FreshSchema::create("replicas", "kill", "the two-replica PostgreSQL test").await
    else {
        return;
    };
    let schema_url = schema.url.clone();
    let emu = emulators(20, 60, 240).await;
    // Every HubSpot call takes a while, so the backfill lasts long enough to be cut.
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({"latency_ms": 150}),
    )
    .await;

    let a = replica("replica-a", &schema_url);
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with(schema.options.clone(), StoreConfig::default())
            .await
            .expect("the test's own store"),
    );
    let tenant = TenantId::new(TENANT).unwrap();
    let token = create_tenant(&a.base, OPERATOR, TENANT).await;
    let (status, body) = call(
        &a.base,
        Method::POST,
        &format!("/v1/tenants/{TENANT}/sync/pause"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    set_up_tenant(&a.base, &emu, TENANT, &token).await;
    for route in ["resume", "trigger"] {
        let (status, body) = call(
            &a.base,
            Method::POST,
            &format!("/v1/tenants/{TENANT}/sync/{route}"),
            &token,
            None,
        )
        .await;
        assert!(status.is_success(), "{route}: {body}");
    }

    // A is mid-sync: it holds the lease, its run is going on and has committed something.
    let killed_run = eventually("replica A mid-sync", Duration::from_secs(120), || {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let job = store.sync_job(&tenant).await.unwrap()?;
            if job.lease_holder.as_deref() != Some("replica-a") {
                return None;
            }
            let run = store
                .runs(&tenant, Page::first(5))
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.status == RunStatus::Running && r.fencing_token == job.fencing_token)?;
            let companies = store
                .links(&tenant, ObjectPair::AccountCompany, None, 10)
                .await
                .unwrap();
            (!companies.is_empty()).then_some(run)
        }
    })
    .await;
    let b = replica("replica-b", &schema_url);
    drop(a); // SIGKILL

    // B takes over after the lease expires and finishes the work.
    let finished = eventually("replica B's run", Duration::from_secs(180), || {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let runs = store.runs(&tenant, Page::first(20)).await.unwrap();
            runs.into_iter().find(|r| {
                r.id > killed_run.id
                    && matches!(r.status, RunStatus::Succeeded | RunStatus::PartiallyFailed)
            })
        }
    })
    .await;
    assert!(finished.fencing_token > killed_run.fencing_token);
    let killed = store.run(&tenant, killed_run.id).await.unwrap().unwrap();
    assert_eq!(killed.status, RunStatus::Abandoned, "{killed:?}");
    // B's run may have ended while the lease was still B's; wait for B to give it up.
    eventually("B gives the lease up", Duration::from_secs(30), || {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let job = store.sync_job(&tenant).await.unwrap()?;
            job.lease_holder.is_none().then_some(())
        }
    })
    .await;
    let open = store
        .open_errors(&tenant, None, Page::first(100))
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({}),
    )
    .await;
    assert_converged(&emu, store.as_ref(), &tenant).await;

    drop(b);
    emu.shutdown().await.unwrap();
    drop(schema);
}
