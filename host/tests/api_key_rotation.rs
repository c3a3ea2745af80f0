//! Rotating the connection key, on SQLite and PostgreSQL: a replica holding the new key
//! and the old one as a previous key reads connections the old key sealed and seals new
//! writes with the new key; resealing moves every connection to the new key, after which
//! a replica holding the new key alone reads them all (resealing through the operator
//! route, the library call or `dealbridge keys reseal`); a connection sealed with a key the
//! replica does not hold is a clear 409 naming key ids, never a 5xx or a credential; and
//! `dealbridge keys reseal` reports and exits accordingly.

mod api_support;

use std::process::Command;

use api_support::{Db, KEY_HEX, OPERATOR, Reply, TestServer};
use dealbridge::api::reseal::{ResealReport, reseal_all};
use dealbridge::api::{ApiConfig, ConnectionCipher, cipher_from_texts};
use dealbridge::store::{self, EncryptedConnection, Side, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The key the test servers start with (`KEY_HEX`) is the old key; this is the new one.
const NEW_KEY_HEX: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
/// A key nobody configures.
const LOST_KEY_HEX: &str = "5555555555555555555555555555555555555555555555555555555555555555";
const HUBSPOT_TOKEN: &str = "pat-na1-ROTATION-SECRET";

fn key_id(key_hex: &str) -> String {
    ConnectionCipher::from_key_text(key_hex)
        .unwrap()
        .key_id()
        .to_string()
}

async fn put_hubspot(server: &TestServer, tenant: &str, token: &str) -> Reply {
    server
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/connections/hubspot"),
            Some(token),
            Some(json!({"base_url": "https://api.example.test", "access_token": HUBSPOT_TOKEN})),
        )
        .await
}

async fn get_connection(server: &TestServer, tenant: &str, token: &str, crm: &str) -> Reply {
    server
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/connections/{crm}"),
            Some(token),
            None,
        )
        .await
}

fn assert_key(r: &Reply, key_hex: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["key_id"], key_id(key_hex), "{}", r.text);
    assert_eq!(r.body["credentials_set"], json!(["access_token"]));
}

async fn rotation(db: Db, test: &str) {
    let Some(old) = TestServer::start_on(db, test).await else {
        return;
    };
    let (a, b) = ("rot-a", "rot-b");
    let token_a = old.tenant(a).await;
    let token_b = old.tenant(b).await;
    for (tenant, token) in [(a, &token_a), (b, &token_b)] {
        let r = put_hubspot(&old, tenant, token).await;
        assert_key(&r, KEY_HEX);
    }

    // A replica with only the new key cannot open them: a clear conflict, no secret.
    let new_only = old
        .another_replica_with_keys(ApiConfig::default(), NEW_KEY_HEX, "")
        .await;
    let r = get_connection(&new_only, a, &token_a, "hubspot").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "connection_key_unavailable");
    for needle in [key_id(KEY_HEX), key_id(NEW_KEY_HEX)] {
        assert!(r.message().contains(&needle), "{}", r.text);
    }
    for secret in [HUBSPOT_TOKEN, KEY_HEX, NEW_KEY_HEX] {
        assert!(!r.text.contains(secret), "{}", r.text);
    }

    // The rotated replica reads the old key's connections and writes with the new key.
    let rotated = old
        .another_replica_with_keys(ApiConfig::default(), NEW_KEY_HEX, &format!(" {KEY_HEX}, "))
        .await;
    assert_key(
        &get_connection(&rotated, a, &token_a, "hubspot").await,
        KEY_HEX,
    );
    assert_key(&put_hubspot(&rotated, b, &token_b).await, NEW_KEY_HEX);
    assert_key(
        &get_connection(&new_only, b, &token_b, "hubspot").await,
        NEW_KEY_HEX,
    );

    // Resealing: a dry run counts and writes nothing (here through the operator route,
    // with the rotated replica's keys; a tenant may not); the run moves what is left.
    let cipher = cipher_from_texts(NEW_KEY_HEX, KEY_HEX).unwrap();
    let store = old.store.as_ref();
    let route = "/v1/admin/connections/reseal?dry_run=true";
    let r = rotated
        .call(Method::POST, route, Some(&token_a), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = rotated
        .call(Method::POST, route, Some(OPERATOR), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let dry: ResealReport = serde_json::from_value(r.body).unwrap();
    assert!(dry.complete() && dry.dry_run, "{dry:?}");
    assert_eq!(dry.current_key_id, key_id(NEW_KEY_HEX));
    assert_eq!(
        (dry.connections, dry.resealed, dry.already_current),
        (2, 1, 1)
    );
    assert_eq!(dry.by_key_before.get(&key_id(KEY_HEX)), Some(&1));
    assert_key(
        &get_connection(&rotated, a, &token_a, "hubspot").await,
        KEY_HEX,
    );
    let before = store
        .connection(&TenantId::new(a).unwrap(), Side::HubSpot)
        .await
        .unwrap()
        .unwrap();
    let done = reseal_all(store, &cipher, false).await.unwrap();
    assert!(done.complete(), "{done:?}");
    assert_eq!(
        (done.resealed, done.already_current, done.changed_meanwhile),
        (1, 1, 0)
    );
    let after = store
        .connection(&TenantId::new(a).unwrap(), Side::HubSpot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.key_id, key_id(NEW_KEY_HEX));
    assert_eq!(
        after.updated_at_ms, before.updated_at_ms,
        "the tenant wrote nothing"
    );
    assert_ne!(after.ciphertext, before.ciphertext);
    // The old key can be retired: the new key alone reads everything.
    for (tenant, token) in [(a, &token_a), (b, &token_b)] {
        assert_key(
            &get_connection(&new_only, tenant, token, "hubspot").await,
            NEW_KEY_HEX,
        );
    }
    let again = reseal_all(store, &cipher, false).await.unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 2), "{again:?}");

    // A connection sealed with a key nobody holds is reported, and left as it is.
    let lost = ConnectionCipher::from_key_text(LOST_KEY_HEX).unwrap();
    let tenant_a = TenantId::new(a).unwrap();
    let sealed = EncryptedConnection {
        key_id: lost.key_id().to_string(),
        ciphertext: lost
            .seal(
                &tenant_a,
                Side::Salesforce,
                br#"{"base_url":"https://x.example"}"#,
            )
            .unwrap(),
        updated_at_ms: 1,
    };
    store
        .put_connection(&tenant_a, Side::Salesforce, &sealed)
        .await
        .unwrap();
    let report = reseal_all(store, &cipher, false).await.unwrap();
    assert!(!report.complete());
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let failure = &report.failed[0];
    assert_eq!(
        (
            failure.tenant.as_str(),
            failure.crm.as_str(),
            failure.key_id.as_str()
        ),
        (a, "salesforce", lost.key_id())
    );
    assert!(failure.error.contains("does not hold"), "{}", failure.error);
    assert_eq!(
        store.connection(&tenant_a, Side::Salesforce).await.unwrap(),
        Some(sealed)
    );
    let r = get_connection(&new_only, a, &token_a, "salesforce").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "connection_key_unavailable");

    rotated.shutdown().await;
    new_only.shutdown().await;
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_on_sqlite() {
    rotation(Db::Sqlite, "rotation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_on_postgresql() {
    rotation(Db::Postgres, "rotation").await;
}

/// `dealbridge keys reseal` with the keys in `env` (none: no key at all).
fn reseal_cli(db_url: &str, env: &[(&str, &str)], extra: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    cmd.args(["keys", "reseal", "--database-url", db_url])
        .args(extra)
        .env_remove("DEALBRIDGE_SECRET_KEY")
        .env_remove("DEALBRIDGE_PREVIOUS_SECRET_KEYS")
        .env_remove("DEALBRIDGE_DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("dealbridge runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reseal_command_reports_as_json_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
    let store = store::open(&url).await.unwrap();
    let tenant = TenantId::new("cli").unwrap();
    store.create_tenant(&tenant, "cli", 1).await.unwrap();
    let old = ConnectionCipher::from_key_text(KEY_HEX).unwrap();
    let sealed = EncryptedConnection {
        key_id: old.key_id().to_string(),
        ciphertext: old.seal(&tenant, Side::HubSpot, b"{}").unwrap(),
        updated_at_ms: 1,
    };
    store
        .put_connection(&tenant, Side::HubSpot, &sealed)
        .await
        .unwrap();

    let (code, _, stderr) = reseal_cli(&url, &[], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("DEALBRIDGE_SECRET_KEY"), "{stderr}");
    let (code, _, stderr) = reseal_cli(
        &url,
        &[
            ("DEALBRIDGE_SECRET_KEY", NEW_KEY_HEX),
            ("DEALBRIDGE_PREVIOUS_SECRET_KEYS", "not-a-key-SECRETISH"),
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("previous key number 1"), "{stderr}");
    assert!(!stderr.contains("SECRETISH"), "{stderr}");

    // Without the old key: the connection is listed as failed, exit 1, nothing changes.
    let (code, stdout, stderr) =
        reseal_cli(&url, &[("DEALBRIDGE_SECRET_KEY", NEW_KEY_HEX)], &["--json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["failed"][0]["tenant"], "cli", "{report}");
    assert_eq!(report["failed"][0]["key_id"], old.key_id());
    assert!(!stdout.contains(KEY_HEX) && !stdout.contains(NEW_KEY_HEX));

    let with_old = [
        ("DEALBRIDGE_SECRET_KEY", NEW_KEY_HEX),
        ("DEALBRIDGE_PREVIOUS_SECRET_KEYS", KEY_HEX),
    ];
    let (code, stdout, _) = reseal_cli(&url, &with_old, &["--json", "--dry-run"]);
    assert_eq!(code, 0, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["dry_run"].clone(), report["resealed"].clone()),
        (json!(true), json!(1))
    );
    let (code, stdout, _) = reseal_cli(&url, &with_old, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("resealed 1"), "{stdout}");
    let stored = store
        .connection(&tenant, Side::HubSpot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.key_id, key_id(NEW_KEY_HEX));

    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        ConnectionCipher::from_key_text(generated.trim()).is_ok(),
        "{generated}"
    );
    assert_eq!(generated.trim().len(), 64);
}
