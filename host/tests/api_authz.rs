//! The cross-tenant authorization matrix, generated over every tenant-scoped route:
//! tenant A's token against tenant B's routes and B's resource ids is always refused
//! (403 or 404, JSON error, none of B's data), B's state is unchanged afterwards, and
//! operator-only routes refuse tenant tokens. The route table is checked against the
//! OpenAPI document, so a new route cannot slip out of the matrix.

mod api_support;

use std::collections::BTreeSet;

use api_support::{OPERATOR, Reply, TestServer, default_fixtures};
use dealbridge::store::{
    CommitBatch, CommittedRecord, Direction, ErrorCategory, EventKind, LinkState, NewRecordEvent,
    NewSyncError, ObjectPair, RecordKey, ResyncRequest, RunTrigger, Side, TenantId,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What a route's request carries.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    Json(fn() -> Value),
    Wasm,
}

/// Every tenant-scoped route: method, path template (`{tenant}`, `{version}`, `{id}`,
/// `{crm}`, `{run}`, `{pair}`, `{side}`, `{record_id}`, `{resync}` are filled in), body.
const TENANT_ROUTES: &[(&str, &str, Body)] = &[
    (
        "PUT",
        "/v1/tenants/{tenant}/connections/{crm}",
        Body::Json(connection_body),
    ),
    ("GET", "/v1/tenants/{tenant}/connections/{crm}", Body::None),
    (
        "DELETE",
        "/v1/tenants/{tenant}/connections/{crm}",
        Body::None,
    ),
    ("POST", "/v1/tenants/{tenant}/plugins", Body::Wasm),
    ("GET", "/v1/tenants/{tenant}/plugins", Body::None),
    ("GET", "/v1/tenants/{tenant}/plugins/{version}", Body::None),
    (
        "POST",
        "/v1/tenants/{tenant}/plugins/{version}/fixtures",
        Body::Json(fixture_body),
    ),
    (
        "GET",
        "/v1/tenants/{tenant}/plugins/{version}/fixtures",
        Body::None,
    ),
    (
        "POST",
        "/v1/tenants/{tenant}/plugins/{version}/tests",
        Body::None,
    ),
    (
        "POST",
        "/v1/tenants/{tenant}/plugins/{version}/activate",
        Body::None,
    ),
    ("GET", "/v1/tenants/{tenant}/activation", Body::None),
    (
        "POST",
        "/v1/tenants/{tenant}/activation/rollback",
        Body::None,
    ),
    ("GET", "/v1/tenants/{tenant}/invocations", Body::None),
    ("GET", "/v1/tenants/{tenant}/invocations/{id}", Body::None),
    ("GET", "/v1/tenants/{tenant}/runs", Body::None),
    ("GET", "/v1/tenants/{tenant}/runs/{run}", Body::None),
    (
        "GET",
        "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/link",
        Body::None,
    ),
    (
        "GET",
        "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/history",
        Body::None,
    ),
    ("GET", "/v1/tenants/{tenant}/sync-health", Body::None),
    ("GET", "/v1/tenants/{tenant}/sync-health/errors", Body::None),
    (
        "GET",
        "/v1/tenants/{tenant}/sync-health/errors/export",
        Body::None,
    ),
    ("GET", "/v1/tenants/{tenant}/sync", Body::None),
    (
        "PUT",
        "/v1/tenants/{tenant}/sync/schedule",
        Body::Json(schedule_body),
    ),
    (
        "PUT",
        "/v1/tenants/{tenant}/sync/plugin-config",
        Body::Json(plugin_config_body),
    ),
    ("POST", "/v1/tenants/{tenant}/sync/trigger", Body::None),
    ("POST", "/v1/tenants/{tenant}/sync/pause", Body::None),
    ("POST", "/v1/tenants/{tenant}/sync/resume", Body::None),
    ("POST", "/v1/tenants/{tenant}/sync/dry-run", Body::None),
    (
        "POST",
        "/v1/tenants/{tenant}/resyncs",
        Body::Json(resync_body),
    ),
    ("GET", "/v1/tenants/{tenant}/resyncs/{resync}", Body::None),
];

/// Every operator route.
const OPERATOR_ROUTES: &[(&str, &str, Body)] = &[
    ("POST", "/v1/admin/tenants", Body::Json(tenant_body)),
    ("GET", "/v1/admin/tenants", Body::None),
    ("POST", "/v1/admin/tenants/{id}/disable", Body::None),
    ("POST", "/v1/admin/tenants/{id}/enable", Body::None),
    (
        "POST",
        "/v1/admin/tenants/{id}/tokens",
        Body::Json(token_body),
    ),
    (
        "DELETE",
        "/v1/admin/tenants/{id}/tokens/{token_id}",
        Body::None,
    ),
    ("POST", "/v1/admin/connections/reseal", Body::None),
    ("GET", "/metrics", Body::None),
];

fn connection_body() -> Value {
    json!({"base_url": "https://evil.example", "access_token": "attacker"})
}
fn fixture_body() -> Value {
    json!({"name": "intruder", "fixture": {"call": "describe"}})
}
fn schedule_body() -> Value {
    json!({"interval_secs": 1})
}
fn plugin_config_body() -> Value {
    json!({"rules": {"opportunity-deal": {"Amount": "dont-sync"}}})
}
fn resync_body() -> Value {
    json!({"scope": "all"})
}
fn tenant_body() -> Value {
    json!({"id": "intruder", "name": "Intruder"})
}
fn token_body() -> Value {
    json!({"label": "stolen"})
}

/// One tenant's resources.
struct Owned {
    id: &'static str,
    token: String,
    token_id: String,
    version: i64,
    report: i64,
    run: i64,
    /// A linked Salesforce opportunity with history and an open error.
    record: String,
    resync: i64,
}

async fn setup(s: &TestServer, id: &'static str) -> Owned {
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            Some(json!({"id": id, "name": id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.body["token"]["token"].as_str().unwrap().to_string();
    let token_id = r.body["token"]["token_id"].as_str().unwrap().to_string();
    let version = s.default_rules_version(id, &token).await;
    let (name, fx) = default_fixtures().remove(0);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/{id}/plugins/{version}/fixtures"),
            Some(&token),
            Some(json!({"name": name, "fixture": fx})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .call(
            Method::PUT,
            &format!("/v1/tenants/{id}/connections/hubspot"),
            Some(&token),
            Some(json!({"base_url": "https://api.hubapi.com", "access_token": format!("pat-{id}-secret")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let report = s
        .store
        .add_invocation_report(
            &TenantId::new(id).unwrap(),
            None,
            Some(version),
            &json!({"owner": id}),
            5,
        )
        .await
        .unwrap()
        .id;
    let (run, record) = seed_sync_state(s, id).await;
    let resync = s
        .store
        .request_resync(&TenantId::new(id).unwrap(), &ResyncRequest::All, 5)
        .await
        .unwrap()
        .id;
    Owned {
        id,
        token,
        token_id,
        version,
        report,
        run,
        record,
        resync,
    }
}

/// A run, a linked record with history, and an open error of that record, seeded
/// through the store; the record's Salesforce id differs per tenant.
async fn seed_sync_state(s: &TestServer, id: &str) -> (i64, String) {
    let t = TenantId::new(id).unwrap();
    let record = if id.ends_with('a') {
        "006A00000000001AAA"
    } else {
        "006B00000000001AAA"
    }
    .to_string();
    let hubspot_id = if id.ends_with('a') { "501" } else { "502" };
    let lease = s
        .store
        .try_acquire_lease(&t, "authz", 60_000, 1)
        .await
        .unwrap()
        .unwrap();
    let run = s
        .store
        .start_run(&lease, RunTrigger::Manual, 2)
        .await
        .unwrap()
        .id;
    let event = NewRecordEvent {
        object_pair: ObjectPair::OpportunityDeal,
        salesforce_id: Some(record.clone()),
        hubspot_id: Some(hubspot_id.into()),
        kind: EventKind::Created,
        direction: Direction::SalesforceToHubSpot,
        source_version: "v1".into(),
        run_id: Some(run),
        at_ms: 3,
        fields: json!({"owner": id}),
        message: None,
    };
    let batch = CommitBatch {
        batch_key: "authz".into(),
        lease,
        object_pair: ObjectPair::OpportunityDeal,
        records: vec![CommittedRecord {
            salesforce_id: record.clone(),
            hubspot_id: hubspot_id.into(),
            state: LinkState::Active,
            snapshot: None,
            events: vec![event],
        }],
        checkpoints: vec![],
        counters: None,
        now_ms: 3,
        settled_hubspot_changes: vec![],
    };
    s.store.commit_batch(&t, &batch).await.unwrap();
    s.store
        .record_error(
            &t,
            &NewSyncError {
                object_pair: ObjectPair::OpportunityDeal,
                record: RecordKey {
                    side: Side::Salesforce,
                    id: record.clone(),
                },
                category: ErrorCategory::Validation,
                message: format!("\"owner\" {id}"),
                payload: json!({"owner": id}),
            },
            4,
        )
        .await
        .unwrap();
    (run, record)
}

fn fill(template: &str, tenant: &str, owner: &Owned) -> String {
    template
        .replace("{tenant}", tenant)
        .replace("{version}", &owner.version.to_string())
        .replace("{id}", &owner.report.to_string())
        .replace("{resync}", &owner.resync.to_string())
        .replace("{crm}", "hubspot")
        .replace("{run}", &owner.run.to_string())
        .replace("{pair}", "opportunity_deal")
        .replace("{side}", "salesforce")
        .replace("{record_id}", &owner.record)
}

async fn send(s: &TestServer, method: &str, path: &str, token: Option<&str>, body: Body) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    match body {
        Body::None => s.call(method, path, token, None).await,
        Body::Json(f) => s.call(method, path, token, Some(f())).await,
        Body::Wasm => {
            // A small body: a refusal before the body is read closes the connection,
            // and a large unread body could reset it before the client reads the answer.
            let bytes = std::fs::read(dealbridge_guests::OWNER_LOOKUP).unwrap()[..64].to_vec();
            s.raw(method, path, token, Some("application/wasm"), bytes)
                .await
        }
    }
}

/// A refusal: 403 or 404 (401 where asked), the JSON error shape, and none of `victim`'s data.
fn assert_refused(r: &Reply, allowed: &[u16], victim: &Owned, what: &str) {
    assert!(
        allowed.contains(&r.status.as_u16()),
        "{what}: status {} body {}",
        r.status,
        r.text
    );
    assert!(r.body["error"]["code"].is_string(), "{what}: {}", r.text);
    assert_eq!(r.body.as_object().unwrap().len(), 1, "{what}: {}", r.text);
    for leak in [
        format!("pat-{}-secret", victim.id),
        "api.hubapi.com".to_string(),
        "\"owner\"".to_string(),
        "sha256".to_string(),
    ] {
        assert!(!r.text.contains(&leak), "{what}: leaked {leak}: {}", r.text);
    }
}

/// What B owns, read through B's own token: must be the same before and after the attack.
async fn snapshot(s: &TestServer, b: &Owned) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        format!("/v1/tenants/{}/connections/hubspot", b.id),
        format!("/v1/tenants/{}/plugins", b.id),
        format!("/v1/tenants/{}/plugins/{}/fixtures", b.id, b.version),
        format!("/v1/tenants/{}/activation", b.id),
        format!("/v1/tenants/{}/invocations", b.id),
        format!("/v1/tenants/{}/runs", b.id),
        format!("/v1/tenants/{}/runs/{}", b.id, b.run),
        format!(
            "/v1/tenants/{}/records/opportunity_deal/salesforce/{}/link",
            b.id, b.record
        ),
        format!(
            "/v1/tenants/{}/records/opportunity_deal/salesforce/{}/history",
            b.id, b.record
        ),
        format!("/v1/tenants/{}/sync-health", b.id),
        format!("/v1/tenants/{}/sync-health/errors", b.id),
        format!("/v1/tenants/{}/sync", b.id),
        format!("/v1/tenants/{}/resyncs/{}", b.id, b.resync),
    ] {
        let r = s.call(Method::GET, &path, Some(&b.token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        let mut v = r.body;
        // Test runs by B itself are not part of the attack surface; results are compared too.
        if let Some(list) = v.as_array_mut() {
            list.sort_by_key(|x| x["id"].as_i64());
        }
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_table_covers_every_documented_route() {
    let doc = dealbridge::api::openapi();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut tabled = BTreeSet::new();
    for (m, p, _) in TENANT_ROUTES.iter().chain(OPERATOR_ROUTES) {
        tabled.insert((m.to_string(), p.to_string()));
    }
    tabled.insert(("GET".into(), "/healthz".into()));
    tabled.insert(("GET".into(), "/readyz".into()));
    assert_eq!(documented, tabled, "the matrix must list every route");
    for (m, p, _) in TENANT_ROUTES {
        assert!(p.starts_with("/v1/tenants/{tenant}"), "{m} {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_requests_are_always_refused() {
    let s = TestServer::start().await;
    let a = setup(&s, "tenant-a").await;
    let b = setup(&s, "tenant-b").await;
    let before = snapshot(&s, &b).await;

    for (method, template, body) in TENANT_ROUTES {
        // 1. A's token on B's routes with B's ids.
        let path = fill(template, b.id, &b);
        let r = send(&s, method, &path, Some(&a.token), *body).await;
        assert_refused(&r, &[403, 404], &b, &format!("A on {method} {path}"));

        // 2. A's token on A's own routes, naming B's resources (where a route names one).
        if ["{version}", "{id}", "{run}", "{record_id}", "{resync}"]
            .iter()
            .any(|p| template.contains(p))
        {
            let path = fill(template, a.id, &b);
            let r = send(&s, method, &path, Some(&a.token), *body).await;
            assert_refused(
                &r,
                &[404],
                &b,
                &format!("A with B's ids on {method} {path}"),
            );
        }

        // 3. No token, a garbage token, B's token id with a forged secret, the operator.
        let forged = format!("dbt.{}.{}.{}", b.id, b.token_id, "A".repeat(43));
        for (who, token, allowed) in [
            ("nobody", None, &[401u16][..]),
            ("garbage", Some("not-a-token"), &[401][..]),
            ("forged", Some(forged.as_str()), &[401][..]),
            ("operator", Some(OPERATOR), &[403][..]),
        ] {
            let r = send(&s, method, &path_for(template, &b), token, *body).await;
            assert_refused(&r, allowed, &b, &format!("{who} on {method} {template}"));
        }
    }

    // Nothing of B changed, and B's own token still works.
    let after = snapshot(&s, &b).await;
    assert_eq!(before, after, "an attack changed tenant B's state");

    // A's token on a tenant id that does not exist is refused the same way.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/nobody/plugins",
            Some(&a.token),
            None,
        )
        .await;
    assert_refused(&r, &[403], &b, "A on a missing tenant");
}

fn path_for(template: &str, b: &Owned) -> String {
    fill(template, b.id, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_refuse_tenant_tokens() {
    let s = TestServer::start().await;
    let a = setup(&s, "tenant-a").await;
    let b = setup(&s, "tenant-b").await;
    for (method, template, body) in OPERATOR_ROUTES {
        let path = template
            .replace("{id}", b.id)
            .replace("{token_id}", &b.token_id);
        for (who, token, allowed) in [
            ("tenant A", Some(a.token.as_str()), &[403u16][..]),
            ("tenant B", Some(b.token.as_str()), &[403][..]),
            ("nobody", None, &[401][..]),
            ("garbage", Some("x"), &[401][..]),
        ] {
            let r = send(&s, method, &path, token, *body).await;
            assert_refused(&r, allowed, &b, &format!("{who} on {method} {path}"));
        }
    }
    // B's token was not revoked and no tenant was created.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/tenant-b/plugins",
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(Method::GET, "/v1/admin/tenants", Some(OPERATOR), None)
        .await;
    assert_eq!(r.body["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["tenants"][1]["disabled"], false);
}
