//! The service end to end, in process: both emulators, the API on 127.0.0.1:0 over a
//! SQLite file, and the scheduler. A tenant is created and set up over HTTP (connections,
//! the default rules uploaded with a rule-test fixture and activated, a plugin config), a
//! forced validation failure in HubSpot makes the first sync record an error, and after
//! the fault is removed a resync asked for over the API fixes it; a dry run then plans a
//! new opportunity's deal without writing, a triggered sync creates it, and both CRMs
//! have converged: every Salesforce record has exactly one HubSpot counterpart, nothing is
//! duplicated, no error is left open.

mod api_support;
mod service_support;

use std::time::Duration;

use api_support::{Reply, TestServer};
use dealbridge::store::{ErrorCategory, Page, RunStatus, TenantId};
use dealbridge_emulator::RunningEmulators;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_support::{
    a_run_with_status, assert_converged, emulators, eventually, hs_records, put_json,
    put_unreachable_hubspot, salesforce_client, set_up_tenant, sf_records, test_scheduler,
};

const TENANT: &str = "acme";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_syncs_through_the_service_and_converges_after_a_fault() {
    let emu = emulators(3, 6, 12).await;
    let s = TestServer::start().await;
    let scheduler = test_scheduler(&s.state, 2, |_| {});
    let token = paused_tenant(&s, &emu, TENANT).await;
    let tenant = TenantId::new(TENANT).unwrap();

    // Before the first sync a dry run creates no metadata either: it plans the companies
    // and contacts, reports the opportunities as waiting for their pipelines (set-up
    // creates those on the first real run), and writes nothing anywhere.
    let opportunities = sf_records(&emu, "Opportunity").await;
    let mut hubspot_before = Vec::new();
    for object in ["deals", "companies", "contacts"] {
        hubspot_before.push((object, hs_records(&emu, object).await.len()));
    }
    let r = sync_action(&s, TENANT, &token, "dry-run").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let planned = r.body["planned"].as_array().unwrap();
    let accounts = sf_records(&emu, "Account").await;
    let contacts = sf_records(&emu, "Contact").await;
    for (pair, n) in [
        ("account_company", accounts.len()),
        ("contact_contact", contacts.len()),
    ] {
        let creates = planned
            .iter()
            .filter(|p| p["pair"] == pair && p["op"] == "create" && p["target"] == "hubspot")
            .count();
        assert_eq!(creates, n, "{pair}: {}", r.text);
    }
    let failures = r.body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), opportunities.len(), "{}", r.text);
    assert!(
        failures
            .iter()
            .all(|f| f["pair"] == "opportunity_deal" && f["category"] == "picklist_mismatch"),
        "{}",
        r.text
    );
    for (object, count) in hubspot_before {
        assert_eq!(
            hs_records(&emu, object).await.len(),
            count,
            "a dry run wrote {object}"
        );
    }
    assert!(
        s.store
            .runs(&tenant, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );

    // HubSpot refuses one deal.
    let victim = opportunities[0].clone();
    let victim_id = victim["Id"].as_str().unwrap().to_string();
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({"validation_failures": [{"object": "deals", "field": "dealname",
            "equals": victim["Name"], "message": "Deal name is reserved"}]}),
    )
    .await;
    // Asked for while paused, so one run starts, at the resume (which wakes a worker).
    for route in ["trigger", "resume"] {
        let r = sync_action(&s, TENANT, &token, route).await;
        assert!(r.status.is_success(), "{route}: {}", r.text);
    }
    let store = s.store.clone();
    let error = eventually(
        "the injected failure in health",
        Duration::from_secs(120),
        || {
            let (store, tenant, victim_id) = (store.clone(), tenant.clone(), victim_id.clone());
            async move {
                let runs = store.runs(&tenant, Page::first(10)).await.unwrap();
                let finished = runs.iter().any(|r| r.status != RunStatus::Running);
                let open = store
                    .open_errors(&tenant, Some(ErrorCategory::Validation), Page::first(100))
                    .await
                    .unwrap();
                open.into_iter()
                    .find(|e| e.record.id == victim_id)
                    .filter(|_| finished)
            }
        },
    )
    .await;
    assert!(error.message.contains("Deal name is reserved"), "{error:?}");
    let health = store.health_summary(&tenant).await.unwrap();
    assert!(!health.is_empty(), "health shows the open error");
    let runs = store.runs(&tenant, Page::first(10)).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::PartiallyFailed, "{runs:?}");
    assert_eq!(
        hs_records(&emu, "deals").await.len(),
        opportunities.len() - 1,
        "every deal but the refused one"
    );

    // Fixed; a resync of the record, asked for over the API, converges.
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({}),
    )
    .await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/resyncs"),
            Some(&token),
            Some(
                json!({"scope": "records", "object_pair": "opportunity_deal",
                "side": "salesforce", "ids": [victim_id]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    let resync_path = format!("/v1/tenants/{TENANT}/resyncs/{}", r.body["id"]);
    let done = eventually("the resync", Duration::from_secs(120), || {
        let s = &s;
        let (path, token) = (resync_path.clone(), token.clone());
        async move {
            let r = s.call(Method::GET, &path, Some(&token), None).await;
            (r.body["status"] == "done").then_some(r.body)
        }
    })
    .await;
    assert_eq!(done["outcome"], "succeeded", "{done}");
    assert!(done["run_id"].as_i64().is_some(), "{done}");

    // The resync's turn goes on with a regular cycle; wait for its end.
    eventually("the end of the run", Duration::from_secs(120), || {
        let s = &s;
        let token = token.clone();
        async move {
            let r = s
                .call(
                    Method::GET,
                    &format!("/v1/tenants/{TENANT}/sync"),
                    Some(&token),
                    None,
                )
                .await;
            (r.body["running"] == false).then_some(())
        }
    })
    .await;
    // A new opportunity: a dry run plans its deal and writes nothing; a sync creates it.
    let sf = salesforce_client(&emu);
    let owner = opportunities[0]["OwnerId"].clone();
    let mut fields = dealbridge::crm::salesforce::Fields::new();
    for (k, v) in [
        ("Name", json!("Planned in a dry run")),
        ("StageName", json!("Prospecting")),
        ("CloseDate", json!("2027-01-15")),
        ("Amount", json!(1234.5)),
        ("OwnerId", owner),
    ] {
        fields.insert(k.into(), v);
    }
    let new_id = sf.create("Opportunity", &fields).await.unwrap();
    let runs_before = store.runs(&tenant, Page::first(100)).await.unwrap().len();
    let deals_before = hs_records(&emu, "deals").await.len();
    let r = sync_action(&s, TENANT, &token, "dry-run").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let planned: Vec<&Value> = r.body["planned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["op"] == "create" && p["target"] == "hubspot")
        .collect();
    assert_eq!(planned.len(), 1, "{}", r.text);
    assert_eq!(planned[0]["pair"], "opportunity_deal", "{}", r.text);
    assert!(
        planned[0]["record"].as_str().unwrap().contains(&new_id),
        "{}",
        r.text
    );
    assert_eq!(
        hs_records(&emu, "deals").await.len(),
        deals_before,
        "a dry run wrote"
    );
    assert_eq!(
        store.runs(&tenant, Page::first(100)).await.unwrap().len(),
        runs_before,
        "a dry run recorded a run"
    );
    let r = sync_action(&s, TENANT, &token, "trigger").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    eventually("the triggered run", Duration::from_secs(120), || {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let runs = store.runs(&tenant, Page::first(100)).await.unwrap();
            (runs.len() > runs_before && runs[0].status != RunStatus::Running).then_some(())
        }
    })
    .await;

    // Converged: no open error, and each pair's records match one to one on both sides.
    let open = store
        .open_errors(&tenant, None, Page::first(100))
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    assert_converged(&emu, store.as_ref(), &tenant).await;
    // The schedule shows a healthy tenant.
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/{TENANT}/sync"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["consecutive_failures"], 0, "{}", r.text);
    assert_eq!(r.body["paused"], false);

    scheduler.shutdown().await;
    s.shutdown().await;
    emu.shutdown().await.unwrap();
}

/// Three tenants on a pool of two workers: one whose HubSpot cannot be reached, one whose
/// HubSpot is so slow that its run exceeds the run budget, and a healthy one. The healthy
/// tenant syncs completely; the other two get failed runs saying why and back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_slow_tenant_does_not_hold_up_the_others() {
    let good_emu = emulators(2, 4, 6).await;
    let slow_emu = emulators(2, 4, 6).await;
    let s = TestServer::start().await;
    let scheduler = test_scheduler(&s.state, 2, |c| c.run_budget = Duration::from_secs(3));
    let mut tokens = Vec::new();
    for (name, emu) in [
        ("broken", &good_emu),
        ("slow", &slow_emu),
        ("good", &good_emu),
    ] {
        let token = paused_tenant(&s, emu, name).await;
        tokens.push((name, token));
    }
    put_unreachable_hubspot(&s.base, "broken", &tokens[0].1).await;
    put_json(
        format!("{}/__emulator/faults", slow_emu.hubspot_urls.http),
        json!({"latency_ms": 2_000}),
    )
    .await;
    let started = now_ms();
    for (name, token) in &tokens {
        for route in ["resume", "trigger"] {
            let r = sync_action(&s, name, token, route).await;
            assert!(r.status.is_success(), "{name} {route}: {}", r.text);
        }
    }

    let store = s.store.clone();
    let good = TenantId::new("good").unwrap();
    let long = Duration::from_secs(120);
    a_run_with_status(store.as_ref(), &good, RunStatus::Succeeded, long).await;
    assert_converged(&good_emu, store.as_ref(), &good).await;

    // An unreachable CRM is retried by its client until the run budget stops it, or
    // fails the run first: either way a failed run says which.
    for (name, why) in [
        ("broken", &["hubspot", "over the run budget of 3 s"][..]),
        ("slow", &["over the run budget of 3 s"][..]),
    ] {
        let tenant = TenantId::new(name).unwrap();
        let run = a_run_with_status(store.as_ref(), &tenant, RunStatus::Failed, long).await;
        let message = run.message.unwrap_or_default();
        assert!(
            why.iter().any(|w| message.to_lowercase().contains(w)),
            "{name}: {message}"
        );
        let job = eventually("the lease given up", Duration::from_secs(30), || {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                let job = store.sync_job(&tenant).await.unwrap()?;
                job.lease_holder.is_none().then_some(job)
            }
        })
        .await;
        assert!(job.consecutive_failures >= 1, "{name}: {job:?}");
        assert!(
            job.next_due_at_ms >= started + job.interval_ms,
            "{name} backs off: {job:?}"
        );
    }

    scheduler.shutdown().await;
    s.shutdown().await;
    good_emu.shutdown().await.unwrap();
    slow_emu.shutdown().await.unwrap();
}

/// `POST /v1/tenants/{tenant}/sync/{action}` with the tenant's token.
async fn sync_action(s: &TestServer, tenant: &str, token: &str, action: &str) -> Reply {
    s.call(
        Method::POST,
        &format!("/v1/tenants/{tenant}/sync/{action}"),
        Some(token),
        None,
    )
    .await
}

/// Creates the tenant `name` (its token returned) and sets it up against `emu` while its
/// sync is paused, so that no run starts half-way through the set-up.
async fn paused_tenant(s: &TestServer, emu: &RunningEmulators, name: &str) -> String {
    let token = s.tenant(name).await;
    let r = sync_action(s, name, &token, "pause").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    set_up_tenant(&s.base, emu, name, &token).await;
    token
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Shutdown while a run is going on: past the grace period the run is stopped and
/// recorded as failed, and the tenant's lease is given up with the tenant due at once,
/// so another replica need not wait for the lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_stops_a_long_run_after_the_grace_period_and_frees_its_tenant() {
    let emu = emulators(2, 4, 6).await;
    let s = TestServer::start().await;
    let scheduler = test_scheduler(&s.state, 1, |c| {
        c.lease_ttl = Duration::from_secs(30);
        c.shutdown_grace = Duration::from_millis(500);
    });
    let token = paused_tenant(&s, &emu, TENANT).await;
    let tenant = TenantId::new(TENANT).unwrap();
    put_json(
        format!("{}/__emulator/faults", emu.hubspot_urls.http),
        json!({"latency_ms": 1_000}),
    )
    .await;
    // Asked for while paused, so one run starts, at the resume (which wakes a worker).
    for route in ["trigger", "resume"] {
        let r = sync_action(&s, TENANT, &token, route).await;
        assert!(r.status.is_success(), "{route}: {}", r.text);
    }
    let store = s.store.clone();
    let limit = Duration::from_secs(60);
    a_run_with_status(store.as_ref(), &tenant, RunStatus::Running, limit).await;
    scheduler.shutdown().await;
    let runs = store.runs(&tenant, Page::first(5)).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed, "{runs:?}");
    assert!(
        runs[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("shut down"),
        "{runs:?}"
    );
    let job = store.sync_job(&tenant).await.unwrap().unwrap();
    assert!(
        job.lease_holder.is_none(),
        "the lease was given up: {job:?}"
    );
    assert!(job.next_due_at_ms <= now_ms(), "due at once: {job:?}");
    assert_eq!(
        job.consecutive_failures, 0,
        "a shutdown is not the tenant's failure"
    );

    s.shutdown().await;
    emu.shutdown().await.unwrap();
}
