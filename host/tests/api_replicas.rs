//! Revocations across API replicas on one PostgreSQL database: a token revoked or a
//! tenant disabled on one replica is refused at once by another that listens to the
//! replicas' announcements (`NOTIFY`), long before its token cache's TTL would let it
//! read the store again; a replica whose listening connection was lost forgets every
//! token it verified once it listens again.
//!
//! Every replica here trusts a verified token for an hour, so within the test only an
//! announcement can make a replica refuse a token it verified. A replica that does not
//! listen shows it: it still accepts the token after the listening one refused it.
//!
//! Needs `DATABASE_URL`; without it each test says so loudly and returns.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{Db, OPERATOR, Reply, TestServer};
use dealbridge::api::ApiConfig;
use dealbridge::service::listen_to_replicas;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// How long a replica may take to honour an announcement before the test fails: far
/// below the hour of the token cache's TTL.
const ANNOUNCEMENT_DEADLINE: Duration = Duration::from_secs(15);

fn trusting_for_an_hour() -> ApiConfig {
    ApiConfig {
        token_cache_ttl: Duration::from_secs(3600),
        ..ApiConfig::default()
    }
}

/// `GET /v1/tenants/{tenant}/sync` on `server` with `token`.
async fn status(server: &TestServer, tenant: &str, token: &str) -> Reply {
    server
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/sync"),
            Some(token),
            None,
        )
        .await
}

/// Asks `server` every 20 ms until it refuses `token` with `code`, or fails after
/// [`ANNOUNCEMENT_DEADLINE`].
async fn refused_soon(server: &TestServer, tenant: &str, token: &str, code: &str) {
    let deadline = Instant::now() + ANNOUNCEMENT_DEADLINE;
    loop {
        let r = status(server, tenant, token).await;
        if !r.status.is_success() {
            assert_eq!(r.code(), code, "{}", r.text);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica still accepts the token {ANNOUNCEMENT_DEADLINE:?} after the revoke"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issues another token for `tenant` on `server`: (token, token id).
async fn another_token(server: &TestServer, tenant: &str) -> (String, String) {
    let r = server
        .call(
            Method::POST,
            &format!("/v1/admin/tenants/{tenant}/tokens"),
            Some(OPERATOR),
            Some(json!({"label": "another"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.body["token"].as_str().unwrap().to_string(),
        r.body["token_id"].as_str().unwrap().to_string(),
    )
}

fn assert_ok(r: &Reply) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_or_disable_on_one_replica_is_honoured_at_once_by_the_others_on_postgresql() {
    let Some(s) = TestServer::start_on(Db::Postgres, "revoke_notify").await else {
        return;
    };
    let url = s.database_url.clone().unwrap();
    let listening = s.another_replica(trusting_for_an_hour()).await;
    let listener = listen_to_replicas(&url, listening.state.clone())
        .await
        .expect("listen");
    let deaf = s.another_replica(trusting_for_an_hour()).await;
    // A tenant id of this test only: announcements are database-wide, and other tests
    // may revoke tokens of their own tenants meanwhile.
    let tenant = format!("revoke-{}", std::process::id());
    let first = s.tenant(&tenant).await;
    let first_id = first.split('.').nth(2).unwrap().to_string();
    let (second, _) = another_token(&s, &tenant).await;
    for replica in [&listening, &deaf] {
        for token in [&first, &second] {
            assert_ok(&status(replica, &tenant, token).await);
        }
    }

    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/tenants/{tenant}/tokens/{first_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    refused_soon(&listening, &tenant, &first, "unauthorized").await;
    assert_ok(&status(&listening, &tenant, &second).await);
    // The replica that does not listen still trusts what it verified: the announcement,
    // not the TTL, is what made the other refuse it.
    assert_ok(&status(&deaf, &tenant, &first).await);

    let r = s
        .call(
            Method::POST,
            &format!("/v1/admin/tenants/{tenant}/disable"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_ok(&r);
    refused_soon(&listening, &tenant, &second, "tenant_disabled").await;
    assert_ok(&status(&deaf, &tenant, &second).await);

    listener.abort();
    deaf.shutdown().await;
    listening.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lost_its_listening_connection_forgets_every_verified_token() {
    let Some(s) = TestServer::start_on(Db::Postgres, "listener_lost").await else {
        return;
    };
    let tenant = format!("lost-{}", std::process::id());
    // A name of this test's own listening connection, to end exactly that one.
    let application = format!("dealbridge-test-lost-{}", std::process::id());
    let url = format!(
        "{}&application_name={application}",
        s.database_url.clone().unwrap()
    );
    let listening = s.another_replica(trusting_for_an_hour()).await;
    let listener = listen_to_replicas(&url, listening.state.clone())
        .await
        .expect("listen");
    let token = s.tenant(&tenant).await;
    let token_id = token.split('.').nth(2).unwrap().to_string();
    assert_ok(&status(&listening, &tenant, &token).await);

    // Revoked behind the service's back, so nothing is announced: the replica keeps
    // trusting the token it verified.
    let mut db = PgConnection::connect(s.database_url.as_deref().unwrap())
        .await
        .expect("connect");
    let revoked = sqlx::query(
        "UPDATE api_tokens SET revoked_at_ms = 1 WHERE tenant_id = $1 AND token_id = $2",
    )
    .bind(&tenant)
    .bind(&token_id)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(revoked.rows_affected(), 1);
    assert_ok(&status(&listening, &tenant, &token).await);

    // Its listening connection is cut; once it listens again it cannot know what it
    // missed, so it reads every token from the store again.
    let ended = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&application)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(ended.len(), 1, "one listening connection");
    refused_soon(&listening, &tenant, &token, "unauthorized").await;

    listener.abort();
    listening.shutdown().await;
    s.shutdown().await;
}
