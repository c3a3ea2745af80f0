//! The read side of syncs over real HTTP: run history, a record's link and history, the
//! sync-health view, the open-error export (CSV and JSON) and `/metrics`. Runs, links,
//! history and errors are seeded through the store API. Each behaviour runs on SQLite and,
//! when `DATABASE_URL` is set, on PostgreSQL (a fresh schema each; skipped loudly
//! otherwise). Every refusal must be a 4xx with the JSON error shape.

mod api_support;

use api_support::{Db, OPERATOR, Reply, TestServer, assert_error};
use dealbridge::store::{
    CommitBatch, CommittedRecord, Direction, ErrorCategory, EventKind, Lease, LinkState,
    NewRecordEvent, NewSyncError, ObjectPair, RecordKey, RunCounters, RunStatus, RunTrigger, Side,
    Store, TenantId,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PAIR: ObjectPair = ObjectPair::OpportunityDeal;
const SF_15: &str = "006000000000001";
const HS_ID: &str = "9001";

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn lease(store: &dyn Store, tenant: &TenantId) -> Lease {
    store
        .try_acquire_lease(tenant, "test-replica", 60_000, 1_000)
        .await
        .unwrap()
        .expect("a fresh tenant's lease is free")
}

fn sf18() -> String {
    dealbridge::crm::salesforce::types::id18(SF_15).unwrap()
}

fn sync_error(side: Side, id: &str, category: ErrorCategory, message: &str) -> NewSyncError {
    NewSyncError {
        object_pair: PAIR,
        record: RecordKey {
            side,
            id: id.into(),
        },
        category,
        message: message.into(),
        payload: json!({"errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Amount"]}),
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = super::TestServer::start_on(super::Db::Sqlite, stringify!($name))
                        .await
                        .unwrap();
                    super::$name(&s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(s) =
                        super::TestServer::start_on(super::Db::Postgres, stringify!($name)).await
                    else {
                        return;
                    };
                    super::$name(&s).await;
                }
            )*
        }
    };
}

on_both_backends!(
    runs_list_page_and_get,
    record_link_and_history_by_either_id,
    sync_health_groups_counts_and_pages,
    export_csv_and_json_escape_and_negotiate,
    export_streams_many_pages,
);

async fn runs_list_page_and_get(s: &TestServer) {
    let token = s.tenant("acme").await;
    let t = tid("acme");
    let store = &*s.store;
    let l = lease(store, &t).await;
    let first = store
        .start_run(&l, RunTrigger::Backfill, 1_000)
        .await
        .unwrap();
    store
        .add_run_counters(
            &t,
            first.id,
            &RunCounters {
                read_salesforce: 12,
                created_hubspot: 10,
                skipped: 2,
                api_calls_salesforce: 3,
                ..RunCounters::default()
            },
        )
        .await
        .unwrap();
    store
        .finish_run(&t, first.id, RunStatus::Succeeded, None, 4_500)
        .await
        .unwrap();
    let second = store
        .start_run(&l, RunTrigger::Manual, 5_000)
        .await
        .unwrap();
    store
        .finish_run(
            &t,
            second.id,
            RunStatus::PartiallyFailed,
            Some("2 records failed"),
            6_000,
        )
        .await
        .unwrap();
    let third = store
        .start_run(&l, RunTrigger::Scheduled, 7_000)
        .await
        .unwrap();

    let r = s
        .call(Method::GET, "/v1/tenants/acme/runs", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let runs = r.body["runs"].as_array().unwrap();
    let ids: Vec<i64> = runs.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![third.id, second.id, first.id], "newest first");
    assert!(r.body["next_after"].is_null());
    assert_eq!(runs[0]["status"], "running");
    assert!(runs[0]["finished_at_ms"].is_null() && runs[0]["duration_ms"].is_null());
    assert_eq!(runs[1]["status"], "partially_failed");
    assert_eq!(runs[1]["message"], "2 records failed");
    assert_eq!(runs[2]["trigger"], "backfill");
    assert_eq!(runs[2]["duration_ms"], 3_500);
    assert_eq!(runs[2]["counters"]["created_hubspot"], 10);
    assert_eq!(runs[2]["counters"]["read_salesforce"], 12);
    assert_eq!(runs[2]["counters"]["api_calls_salesforce"], 3);
    assert_eq!(runs[2]["counters"]["failed"], 0);

    // Paging: two, then the rest.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/runs?limit=2",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["runs"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["next_after"], second.id);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/runs?limit=2&after={}", second.id),
            Some(&token),
            None,
        )
        .await;
    let rest: Vec<i64> = r.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(rest, vec![first.id]);
    assert!(r.body["next_after"].is_null());

    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/runs/{}", first.id),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["id"], first.id);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["counters"]["skipped"], 2);

    // Bad input.
    for (path, status, code) in [
        (
            "/v1/tenants/acme/runs/999999",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/tenants/acme/runs/abc",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/runs?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "/v1/tenants/acme/runs?limit=1001",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "/v1/tenants/acme/runs?limit=many",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/runs?after=x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/runs?page=2",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let r = s.call(Method::GET, path, Some(&token), None).await;
        assert_error(&r, status, code);
    }
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/runs",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let r = s
        .call(Method::GET, "/v1/tenants/acme/runs", None, None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn record_link_and_history_by_either_id(s: &TestServer) {
    let token = s.tenant("acme").await;
    let t = tid("acme");
    let store = &*s.store;
    let l = lease(store, &t).await;
    let run = store
        .start_run(&l, RunTrigger::Manual, 1_000)
        .await
        .unwrap();
    let event = |kind: EventKind, version: &str, at_ms: i64| NewRecordEvent {
        object_pair: PAIR,
        salesforce_id: Some(sf18()),
        hubspot_id: Some(HS_ID.into()),
        kind,
        direction: Direction::SalesforceToHubSpot,
        source_version: version.into(),
        run_id: Some(run.id),
        at_ms,
        fields: json!({"amount": {"from": "1.00", "to": "2.50"}}),
        message: None,
    };
    let batch = CommitBatch {
        batch_key: "b1".into(),
        lease: l.clone(),
        object_pair: PAIR,
        records: vec![CommittedRecord {
            salesforce_id: sf18(),
            hubspot_id: HS_ID.into(),
            state: LinkState::Active,
            snapshot: None,
            events: vec![
                event(EventKind::Created, "v1", 2_000),
                event(EventKind::Updated, "v2", 3_000),
                event(EventKind::Updated, "v3", 4_000),
            ],
        }],
        checkpoints: vec![],
        counters: None,
        now_ms: 4_000,
        settled_hubspot_changes: vec![],
    };
    store.commit_batch(&t, &batch).await.unwrap();
    // A record that failed before it was ever linked: history, no link.
    let unlinked = "006000000000002AAA";
    store
        .append_events(
            &t,
            &[NewRecordEvent {
                salesforce_id: Some(unlinked.into()),
                hubspot_id: None,
                kind: EventKind::Failed,
                direction: Direction::None,
                message: Some("REQUIRED_FIELD_MISSING".into()),
                ..event(EventKind::Failed, "v9", 5_000)
            }],
        )
        .await
        .unwrap();

    // The link, by the 18-character id, the 15-character id and the HubSpot id.
    for path in [
        format!(
            "/v1/tenants/acme/records/opportunity_deal/salesforce/{}/link",
            sf18()
        ),
        format!("/v1/tenants/acme/records/opportunity_deal/salesforce/{SF_15}/link"),
        format!("/v1/tenants/acme/records/opportunity_deal/hubspot/{HS_ID}/link"),
    ] {
        let r = s.call(Method::GET, &path, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(r.body["salesforce_id"], sf18());
        assert_eq!(r.body["hubspot_id"], HS_ID);
        assert_eq!(r.body["state"], "active");
        assert_eq!(r.body["object_pair"], "opportunity_deal");
        assert!(r.body.get("tenant").is_none());
    }

    // History, newest first, paged; the same by the HubSpot id.
    let base = format!("/v1/tenants/acme/records/opportunity_deal/salesforce/{SF_15}/history");
    let r = s.call(Method::GET, &base, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["record_id"], sf18());
    let kinds: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source_version"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["v3", "v2", "v1"]);
    assert_eq!(r.body["events"][2]["kind"], "created");
    assert_eq!(r.body["events"][0]["direction"], "sf_to_hs");
    assert_eq!(r.body["events"][0]["run_id"], run.id);
    assert_eq!(r.body["events"][0]["fields"]["amount"]["to"], "2.50");
    let r = s
        .call(Method::GET, &format!("{base}?limit=2"), Some(&token), None)
        .await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 2);
    let next = r.body["next_after"].as_i64().expect("a next page");
    let r = s
        .call(
            Method::GET,
            &format!("{base}?limit=2&after={next}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["events"][0]["source_version"], "v1");
    assert!(r.body["next_after"].is_null());
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/records/opportunity_deal/hubspot/{HS_ID}/history"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 3, "{}", r.text);

    // A record with history but no link: its history shows, its link is a 404.
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/records/opportunity_deal/salesforce/{unlinked}/history"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["events"][0]["kind"], "failed");
    assert_eq!(r.body["events"][0]["message"], "REQUIRED_FIELD_MISSING");
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/records/opportunity_deal/salesforce/{unlinked}/link"),
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Bad input and unknown records.
    let rec = "/v1/tenants/acme/records";
    for (path, status, code) in [
        (
            format!("{rec}/opportunity_deal/hubspot/424242/link"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("{rec}/opportunity_deal/hubspot/424242/history"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // The right id under another pair is another record.
        (
            format!("{rec}/account_company/hubspot/{HS_ID}/link"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("{rec}/deals/hubspot/{HS_ID}/link"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("{rec}/opportunity_deal/zoho/{HS_ID}/link"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("{rec}/opportunity_deal/hubspot/12ab/link"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            format!("{rec}/opportunity_deal/salesforce/0060000/history"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            format!("{base}?limit=0"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            format!("{base}?limit=-3"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("{base}?sort=asc"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let r = s.call(Method::GET, &path, Some(&token), None).await;
        assert_error(&r, status, code);
    }
}

/// Seeds open errors: two records in validation, one of them also a picklist mismatch,
/// one plugin error, and a resolved rate-limit error. Returns the open errors' ids.
async fn seed_errors(store: &dyn Store, t: &TenantId) -> Vec<i64> {
    let mut open = Vec::new();
    for (side, id, category, message) in [
        (
            Side::Salesforce,
            "006000000000001AAA",
            ErrorCategory::Validation,
            "Amount is required",
        ),
        (
            Side::Salesforce,
            "006000000000002AAA",
            ErrorCategory::Validation,
            "Close date, \"quoted\", and more",
        ),
        (
            Side::Salesforce,
            "006000000000001AAA",
            ErrorCategory::PicklistMismatch,
            "=cmd|' /C calc'!A0",
        ),
        (
            Side::HubSpot,
            "777",
            ErrorCategory::PluginError,
            "line one\nline two",
        ),
    ] {
        open.push(
            store
                .record_error(t, &sync_error(side, id, category, message), 10_000)
                .await
                .unwrap()
                .id,
        );
    }
    let resolved = store
        .record_error(
            t,
            &sync_error(Side::HubSpot, "778", ErrorCategory::RateLimit, "429"),
            10_000,
        )
        .await
        .unwrap();
    assert!(store.resolve_error(t, resolved.id, 11_000).await.unwrap());
    // A second failure of the same record and group counts as one error, two attempts.
    store
        .record_error(
            t,
            &sync_error(
                Side::Salesforce,
                "006000000000001AAA",
                ErrorCategory::Validation,
                "Amount is required",
            ),
            12_000,
        )
        .await
        .unwrap();
    open
}

async fn sync_health_groups_counts_and_pages(s: &TestServer) {
    let token = s.tenant("acme").await;
    let t = tid("acme");
    let open = seed_errors(&*s.store, &t).await;

    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/sync-health",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["open_errors"], 4);
    let groups = r.body["categories"].as_array().unwrap();
    assert_eq!(
        groups.len(),
        ErrorCategory::ALL.len(),
        "every group, zeros included"
    );
    let group = |name: &str| {
        groups
            .iter()
            .find(|g| g["category"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {}", r.text))
            .clone()
    };
    assert_eq!(group("validation")["open_errors"], 2);
    assert_eq!(group("validation")["affected_records"], 2);
    assert_eq!(group("picklist_mismatch")["open_errors"], 1);
    assert_eq!(group("plugin_error")["affected_records"], 1);
    assert_eq!(
        group("rate_limit")["open_errors"],
        0,
        "resolved errors are not open"
    );
    assert_eq!(group("duplicate")["open_errors"], 0);

    // The affected records, oldest first; one group; paged.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/sync-health/errors",
            Some(&token),
            None,
        )
        .await;
    let ids: Vec<i64> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, open);
    let first = &r.body["errors"][0];
    assert_eq!(first["record_side"], "salesforce");
    assert_eq!(first["record_id"], "006000000000001AAA");
    assert_eq!(first["attempts"], 2);
    assert_eq!(
        first["payload"]["errorCode"],
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    );
    assert!(first["next_retry_at_ms"].as_i64().unwrap() > 12_000);

    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/sync-health/errors?category=validation&limit=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["errors"][0]["category"], "validation");
    let next = r.body["next_after"].as_i64().expect("a second page");
    let r = s
        .call(
            Method::GET,
            &format!(
                "/v1/tenants/acme/sync-health/errors?category=validation&limit=1&after={next}"
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["errors"][0]["record_id"], "006000000000002AAA");
    let r = s
        .call(
            Method::GET,
            &format!(
                "/v1/tenants/acme/sync-health/errors?category=validation&limit=1&after={}",
                open[1]
            ),
            Some(&token),
            None,
        )
        .await;
    assert!(r.body["errors"].as_array().unwrap().is_empty());
    assert!(r.body["next_after"].is_null());

    for (path, status, code) in [
        (
            "/v1/tenants/acme/sync-health/errors?category=bogus",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/sync-health/errors?limit=5000",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "/v1/tenants/acme/sync-health/errors?after=1.5",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/sync-health/errors?resolved=true",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/sync-health/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let r = s.call(Method::GET, path, Some(&token), None).await;
        assert_error(&r, status, code);
    }
    let r = s
        .call(
            Method::DELETE,
            "/v1/tenants/acme/sync-health",
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// A GET with an `Accept` header.
async fn get_accept(s: &TestServer, path: &str, token: &str, accept: Option<&str>) -> Reply {
    let mut req = s.client.get(s.url(path)).bearer_auth(token);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    TestServer::reply(req.send().await.unwrap()).await
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

async fn export_csv_and_json_escape_and_negotiate(s: &TestServer) {
    let token = s.tenant("acme").await;
    let t = tid("acme");
    let open = seed_errors(&*s.store, &t).await;
    let export = "/v1/tenants/acme/sync-health/errors/export";

    // CSV by query parameter: a real CSV parser reads back every message exactly.
    let r = get_accept(s, &format!("{export}?format=csv"), &token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    let mut reader = csv::Reader::from_reader(r.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "object_pair",
            "record_side",
            "record_id",
            "category",
            "message",
            "attempts",
            "first_seen",
            "last_seen",
            "next_retry_at",
            "payload"
        ]
    );
    let rows = csv_rows(&r.text);
    assert_eq!(rows.len(), 4);
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(ids, open);
    assert_eq!(rows[1][5], "Close date, \"quoted\", and more");
    assert!(
        r.text.contains("\"Close date, \"\"quoted\"\", and more\""),
        "{}",
        r.text
    );
    assert_eq!(rows[3][5], "line one\nline two");
    assert_eq!(
        rows[2][5], "'=cmd|' /C calc'!A0",
        "a formula cell is defused"
    );
    assert_eq!(rows[0][6], "2");
    assert_eq!(rows[0][7], "1970-01-01T00:00:10.000Z");
    assert_eq!(rows[0][8], "1970-01-01T00:00:12.000Z");
    let payload: Value = serde_json::from_str(&rows[0][10]).unwrap();
    assert_eq!(payload["fields"][0], "Amount");

    // CSV by Accept; JSON by Accept, by default and by parameter (which wins over Accept).
    let r = get_accept(s, export, &token, Some("text/csv")).await;
    assert!(r.content_type.starts_with("text/csv"));
    assert_eq!(csv_rows(&r.text).len(), 4);
    for (path, accept) in [
        (export.to_string(), None),
        (export.to_string(), Some("application/json")),
        (export.to_string(), Some("text/html, */*;q=0.1")),
        (format!("{export}?format=json"), Some("text/csv")),
    ] {
        let r = get_accept(s, &path, &token, accept).await;
        assert_eq!(r.status, StatusCode::OK, "{accept:?}: {}", r.text);
        assert!(r.content_type.starts_with("application/json"), "{accept:?}");
        let list = r.body.as_array().unwrap_or_else(|| panic!("{}", r.text));
        let ids: Vec<i64> = list.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, open);
        assert_eq!(list[3]["message"], "line one\nline two");
        assert_eq!(
            list[2]["message"], "=cmd|' /C calc'!A0",
            "JSON keeps the text as it is"
        );
    }
    let r = get_accept(
        s,
        &format!("{export}?format=csv&category=picklist_mismatch"),
        &token,
        None,
    )
    .await;
    let rows = csv_rows(&r.text);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][4], "picklist_mismatch");
    let resp = s
        .client
        .get(s.url(&format!("{export}?format=csv")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"sync-errors-acme.csv\""
    );

    // Refusals.
    let r = get_accept(s, export, &token, Some("application/xml")).await;
    assert_error(&r, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
    let r = get_accept(s, export, &token, Some("text/csv;q=0")).await;
    assert_error(&r, StatusCode::NOT_ACCEPTABLE, "not_acceptable");
    let r = get_accept(s, export, &token, Some("text/csv;q=high")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    for path in [
        format!("{export}?format=xlsx"),
        format!("{export}?category=nope"),
        format!("{export}?limit=5"),
    ] {
        let r = get_accept(s, &path, &token, None).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    }

    // An empty export is still well-formed.
    let empty = s.tenant("empty").await;
    let path = "/v1/tenants/empty/sync-health/errors/export";
    let r = get_accept(s, path, &empty, None).await;
    assert_eq!(r.body, json!([]));
    let r = get_accept(s, &format!("{path}?format=csv"), &empty, None).await;
    assert_eq!(r.text.lines().count(), 1, "the header only: {}", r.text);
}

async fn export_streams_many_pages(s: &TestServer) {
    // 1,000 errors: two full store pages and an empty third, across chunk boundaries.
    let token = s.tenant("acme").await;
    let t = tid("acme");
    let total = 1_000;
    for i in 0..total {
        s.store
            .record_error(
                &t,
                &sync_error(
                    Side::HubSpot,
                    &(100_000 + i).to_string(),
                    ErrorCategory::Duplicate,
                    "dup, \"x\"",
                ),
                20_000,
            )
            .await
            .unwrap();
    }
    let export = "/v1/tenants/acme/sync-health/errors/export";
    let r = get_accept(s, export, &token, None).await;
    let list = r.body.as_array().unwrap_or_else(|| {
        panic!(
            "not a JSON array: {}",
            &r.text[r.text.len().saturating_sub(200)..]
        )
    });
    assert_eq!(list.len(), total);
    let ids: Vec<&str> = list
        .iter()
        .map(|e| e["record_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), total, "no row twice");
    let r = get_accept(s, export, &token, Some("text/csv")).await;
    let rows = csv_rows(&r.text);
    assert_eq!(rows.len(), total);
    assert!(rows.iter().all(|r| r[5] == "dup, \"x\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_operator_and_count_api_crm_and_plugin_work() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;

    let r = s.call(Method::GET, "/metrics", None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = s.call(Method::GET, "/metrics", Some(&token), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let scrape = || async {
        let r = s.call(Method::GET, "/metrics", Some(OPERATOR), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
        r.text
    };

    // API requests, by route template (never by path).
    let before = scrape().await;
    let runs_ok = "dealbridge_http_requests_total{method=\"GET\",route=\"/v1/tenants/{tenant}/runs\",status=\"200\"}";
    s.call(Method::GET, "/v1/tenants/acme/runs", Some(&token), None)
        .await;
    let after = scrape().await;
    assert!(
        value(&after, runs_ok) >= value(&before, runs_ok) + 1.0,
        "{after}"
    );
    assert!(
        !after.contains("/v1/tenants/acme/"),
        "a path reached a label"
    );
    // A client's own method token never becomes a label.
    let brew = Method::from_bytes(b"BREW").unwrap();
    let r = s
        .call(brew, "/v1/tenants/acme/runs", Some(&token), None)
        .await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let after = scrape().await;
    assert!(!after.contains("BREW"), "{after}");
    assert!(after.contains("method=\"OTHER\""), "{after}");
    assert!(after.contains("# TYPE dealbridge_http_request_duration_seconds histogram"));

    // Plugin invocations: an upload calls `describe` once.
    let ok = "dealbridge_plugin_invocations_total{export=\"describe\",outcome=\"ok\"}";
    let fuel = "dealbridge_plugin_fuel_used_count{export=\"describe\"}";
    let before = scrape().await;
    s.default_rules_version("acme", &token).await;
    let after = scrape().await;
    assert!(value(&after, ok) >= value(&before, ok) + 1.0, "{after}");
    assert!(value(&after, fuel) >= value(&before, fuel) + 1.0, "{after}");
    assert!(after.contains("dealbridge_plugin_invocation_duration_seconds_bucket{"));

    // CRM calls, by CRM, endpoint and status, counted where the client completes them.
    let emu = dealbridge_emulator::start(dealbridge_emulator::EmulatorOptions::default())
        .await
        .expect("emulators");
    let hs =
        dealbridge::crm::hubspot::HubSpotClient::new(dealbridge::crm::hubspot::HubSpotConfig::new(
            emu.hubspot_urls.http.clone(),
            emu.hubspot_credentials.private_app_token.clone(),
        ))
        .unwrap();
    let owners = "dealbridge_crm_api_calls_total{crm=\"hubspot\",endpoint=\"hs.owners.list\",status=\"200\"}";
    let missing =
        "dealbridge_crm_api_calls_total{crm=\"hubspot\",endpoint=\"hs.object.get\",status=\"404\"}";
    let before = scrape().await;
    hs.list_owners().await.unwrap();
    assert!(hs.get("deals", "987654321", &[], &[]).await.is_err());
    let after = scrape().await;
    assert!(
        value(&after, owners) >= value(&before, owners) + 1.0,
        "{after}"
    );
    assert!(
        value(&after, missing) >= value(&before, missing) + 1.0,
        "{after}"
    );
}
