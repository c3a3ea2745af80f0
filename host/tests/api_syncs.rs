//! The sync write-side routes over real HTTP (server on 127.0.0.1:0, fresh SQLite, no
//! scheduler): schedule, plugin config, sync now, pause, resume, dry run refusals and
//! resyncs, each with its bad-input cases as 4xx JSON errors, and their OpenAPI entries.
//! The dry run's plan against the emulators is covered in `service_e2e.rs`; cross-tenant
//! refusals in the `api_authz.rs` matrix.

mod api_support;

use api_support::{Reply, TestServer, assert_error};
use dealbridge::store::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// [`assert_error`], and the message names `needle`.
fn assert_error_naming(r: &Reply, status: StatusCode, code: &str, needle: &str) {
    assert_error(r, status, code);
    assert!(r.message().contains(needle), "{needle:?} in {}", r.text);
}

/// Sends each body to `path` and expects each to be refused as invalid input naming its
/// needle.
async fn assert_each_invalid(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    cases: &[(serde_json::Value, &str)],
) {
    for (body, needle) in cases {
        let r = s
            .call(method.clone(), path, token, Some(body.clone()))
            .await;
        assert_error_naming(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            needle,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_plugin_config_trigger_pause_and_resume() {
    let s = TestServer::start().await;
    let token = s.tenant("t1").await;
    let t = Some(token.as_str());
    let r = s.call(Method::GET, "/v1/tenants/t1/sync", t, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["interval_secs"], 60);
    assert_eq!(r.body["paused"], false);
    assert_eq!(r.body["running"], false);
    assert_eq!(r.body["plugin_config"], json!({}));

    let r = s
        .call(
            Method::PUT,
            "/v1/tenants/t1/sync/schedule",
            t,
            Some(json!({"interval_secs": 300})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["interval_secs"], 300);
    assert_each_invalid(
        &s,
        Method::PUT,
        "/v1/tenants/t1/sync/schedule",
        t,
        &[
            (json!({"interval_secs": 0}), "1 to 86400"),
            (json!({"interval_secs": 86_401}), "1 to 86400"),
            (json!({"interval_secs": 1.5}), "interval_secs"),
            (json!({"interval_secs": -3}), "interval_secs"),
            (json!({"interval_secs": "60"}), "interval_secs"),
            (json!({}), "interval_secs"),
            (json!({"interval_secs": 60, "cron": "* * *"}), "cron"),
        ],
    )
    .await;
    let r = s
        .raw(
            Method::PUT,
            "/v1/tenants/t1/sync/schedule",
            t,
            Some("application/json"),
            b"{\"interval_secs\": ".to_vec(),
        )
        .await;
    assert_error_naming(&r, StatusCode::BAD_REQUEST, "invalid_json", "");
    let r = s
        .raw(
            Method::PUT,
            "/v1/tenants/t1/sync/schedule",
            t,
            Some("text/plain"),
            b"60".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);

    let config = json!({"rules": {"opportunity-deal": {"Amount": "two-way"}}});
    let r = s
        .call(
            Method::PUT,
            "/v1/tenants/t1/sync/plugin-config",
            t,
            Some(config.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["plugin_config"], config);
    assert_each_invalid(
        &s,
        Method::PUT,
        "/v1/tenants/t1/sync/plugin-config",
        t,
        &[
            (json!([1, 2]), "object"),
            (json!("x"), "object"),
            (json!(null), "object"),
        ],
    )
    .await;

    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/pause", t, None)
        .await;
    assert_eq!(
        (r.status, r.body["paused"].clone()),
        (StatusCode::OK, json!(true))
    );
    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/pause", t, None)
        .await;
    assert_eq!(r.body["paused"], true, "pausing twice is fine");
    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/trigger", t, None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["run_requested"], true);
    assert_eq!(r.body["paused"], true, "a trigger does not resume");
    assert!(
        r.body["next_due_at_ms"].as_i64().unwrap() <= dealbridge_now(),
        "due now"
    );
    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/resume", t, None)
        .await;
    assert_eq!(
        (r.status, r.body["paused"].clone()),
        (StatusCode::OK, json!(false))
    );
    // What the API said is what the store holds.
    let job = s
        .store
        .sync_job(&TenantId::new("t1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.interval_ms, job.paused, job.run_requested),
        (300_000, false, true)
    );
    assert_eq!(job.plugin_config, config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_is_refused_without_connections_or_while_a_run_holds_the_lease() {
    let s = TestServer::start().await;
    let token = s.tenant("t1").await;
    let t = Some(token.as_str());
    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/dry-run", t, None)
        .await;
    assert_error_naming(&r, StatusCode::CONFLICT, "not_connected", "salesforce");
    // The dry run gave its lease back.
    let tenant = TenantId::new("t1").unwrap();
    let job = s.store.sync_job(&tenant).await.unwrap().unwrap();
    assert!(job.lease_holder.is_none(), "{job:?}");

    let lease = s
        .store
        .try_acquire_lease(&tenant, "a-replica", 60_000, dealbridge_now())
        .await
        .unwrap()
        .unwrap();
    let r = s
        .call(Method::POST, "/v1/tenants/t1/sync/dry-run", t, None)
        .await;
    assert_error_naming(&r, StatusCode::CONFLICT, "sync_running", "running");
    let r = s.call(Method::GET, "/v1/tenants/t1/sync", t, None).await;
    assert_eq!(r.body["running"], true);
    // The run's lease is untouched.
    s.store
        .renew_lease(&lease, 60_000, dealbridge_now())
        .await
        .expect("the run still holds its lease");
}

fn dealbridge_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resyncs_are_stored_for_the_scheduler_and_bad_ones_refused() {
    let s = TestServer::start().await;
    let token = s.tenant("t1").await;
    let t = Some(token.as_str());
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/t1/resyncs",
            t,
            Some(json!({"scope": "all"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["request"], json!({"scope": "all"}));
    let all = r.body["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/t1/resyncs",
            t,
            Some(json!({"scope": "records", "object_pair": "contact_contact",
                "side": "hubspot", "ids": ["101", "102"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["request"]["ids"], json!(["101", "102"]));
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/t1/resyncs/{all}"),
            t,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["id"].as_i64(), r.body["status"].as_str()),
        (Some(all), Some("pending"))
    );
    // The scheduler will find both, and the tenant is due with a run asked for.
    let tenant = TenantId::new("t1").unwrap();
    assert_eq!(s.store.pending_resyncs(&tenant, 10).await.unwrap().len(), 2);
    assert!(
        s.store
            .sync_job(&tenant)
            .await
            .unwrap()
            .unwrap()
            .run_requested
    );

    let r = s
        .call(Method::GET, "/v1/tenants/t1/resyncs/999999", t, None)
        .await;
    assert_error_naming(&r, StatusCode::NOT_FOUND, "not_found", "resync");
    let r = s
        .call(Method::GET, "/v1/tenants/t1/resyncs/latest", t, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "bad_request");
    let ids101: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    assert_each_invalid(
        &s,
        Method::POST,
        "/v1/tenants/t1/resyncs",
        t,
        &[
        (json!({}), "scope"),
        (json!({"scope": "some"}), "scope"),
        (json!({"scope": "all", "ids": ["1"]}), "takes no"),
        (
            json!({"scope": "records", "side": "hubspot", "ids": ["1"]}),
            "needs",
        ),
        (
            json!({"scope": "records", "object_pair": "deals", "side": "hubspot", "ids": ["1"]}),
            "object_pair",
        ),
        (
            json!({"scope": "records", "object_pair": "opportunity_deal", "side": "sap", "ids": ["1"]}),
            "side",
        ),
        (
            json!({"scope": "records", "object_pair": "opportunity_deal", "side": "hubspot", "ids": ids101}),
            "1 to 100",
        ),
        (
            json!({"scope": "records", "object_pair": "opportunity_deal", "side": "salesforce",
                "ids": ["006' OR Name != '"]}),
            "not a salesforce record id",
        ),
        (
            json!({"scope": "records", "object_pair": "opportunity_deal", "side": "hubspot", "ids": ["12a"]}),
            "not a hubspot record id",
        ),
        (json!({"scope": "all", "extra": 1}), "extra"),
        ],
    )
    .await;
    assert_eq!(
        s.store.pending_resyncs(&tenant, 10).await.unwrap().len(),
        2,
        "no refused resync was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_routes_are_documented() {
    let doc = serde_json::to_value(dealbridge::api::openapi()).unwrap();
    for (path, method) in [
        ("/v1/tenants/{tenant}/sync", "get"),
        ("/v1/tenants/{tenant}/sync/schedule", "put"),
        ("/v1/tenants/{tenant}/sync/plugin-config", "put"),
        ("/v1/tenants/{tenant}/sync/trigger", "post"),
        ("/v1/tenants/{tenant}/sync/pause", "post"),
        ("/v1/tenants/{tenant}/sync/resume", "post"),
        ("/v1/tenants/{tenant}/sync/dry-run", "post"),
        ("/v1/tenants/{tenant}/resyncs", "post"),
        ("/v1/tenants/{tenant}/resyncs/{resync}", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["tags"], json!(["syncs"]), "{method} {path}");
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    for schema in [
        "SyncStatus",
        "ScheduleInput",
        "ResyncInput",
        "ResyncView",
        "DryRunReport",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} in the document"
        );
    }
}
