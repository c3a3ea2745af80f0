//! Shared harness of the API tests: a real server on 127.0.0.1:0 over a fresh SQLite
//! file (or, with [`TestServer::start_on`], a fresh PostgreSQL schema when `DATABASE_URL`
//! is set), a reqwest client, and helpers to create tenants and upload the guest
//! components.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dealbridge::api::{self, ApiConfig, AppState};
use dealbridge::runtime::{Runtime, RuntimeConfig};
use dealbridge::store::{PostgresStore, Store, StoreConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[path = "../pg_schema/mod.rs"]
mod pg_schema;
use pg_schema::FreshSchema;

pub const OPERATOR: &str = "operator-token-for-tests-0123456789abcdef";
pub const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A compile cache shared by every test of the binary, so each guest compiles once.
fn cache_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("cache dir"))
        .path()
        .to_path_buf()
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub state: AppState,
    /// On PostgreSQL: a URL of the test's database whose connections work in its schema.
    pub database_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _db: DbGuard,
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh schema in the PostgreSQL of `DATABASE_URL`, dropped afterwards.
    Postgres,
}

/// Keeps a test database alive; dropping it removes it.
enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres(Box<FreshSchema>),
    /// Another server's database (see [`TestServer::another_replica`]).
    Shared,
}

/// A store in a fresh schema of `DATABASE_URL`'s PostgreSQL, and a URL whose connections
/// work in that schema; `None` (said loudly on stderr) when `DATABASE_URL` is not set.
async fn postgres_store(test: &str) -> Option<(Arc<dyn Store>, DbGuard, String)> {
    let schema = FreshSchema::create("api", test, "the PostgreSQL API test").await?;
    let store = PostgresStore::connect_with(schema.options.clone(), StoreConfig::default())
        .await
        .expect("open postgres");
    let url = schema.url.clone();
    Some((Arc::new(store), DbGuard::Postgres(Box::new(schema)), url))
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The error code of a JSON error body (panics with the body if there is none).
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.text))
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(ApiConfig::default()).await
    }

    pub async fn start_with(config: ApiConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("api.db").display());
        let store = dealbridge::store::open(&url).await.expect("store");
        Self::start_with_store(config, store, DbGuard::Sqlite(dir), None).await
    }

    /// A server on `db`; `None` (said loudly) for PostgreSQL without `DATABASE_URL`.
    pub async fn start_on(db: Db, test: &str) -> Option<TestServer> {
        match db {
            Db::Sqlite => Some(Self::start().await),
            Db::Postgres => {
                let (store, guard, url) = postgres_store(test).await?;
                Some(Self::start_with_store(ApiConfig::default(), store, guard, Some(url)).await)
            }
        }
    }

    /// Another replica: a second server on this one's store, with its own state (and so
    /// its own caches). Drop or shut it down before this one.
    pub async fn another_replica(&self, config: ApiConfig) -> TestServer {
        self.another_replica_with_keys(config, KEY_HEX, "").await
    }

    /// Another replica (as [`TestServer::another_replica`]) whose connection cipher has
    /// `current` as its key and the keys listed in `previous` as previous keys.
    pub async fn another_replica_with_keys(
        &self,
        config: ApiConfig,
        current: &str,
        previous: &str,
    ) -> TestServer {
        let url = self.database_url.clone();
        let cipher = api::cipher_from_texts(current, previous).expect("keys");
        Self::start_with_cipher(config, self.store.clone(), DbGuard::Shared, url, cipher).await
    }

    async fn start_with_store(
        config: ApiConfig,
        store: Arc<dyn Store>,
        db: DbGuard,
        database_url: Option<String>,
    ) -> TestServer {
        let cipher = api::ConnectionCipher::from_key_text(KEY_HEX).expect("key");
        Self::start_with_cipher(config, store, db, database_url, cipher).await
    }

    async fn start_with_cipher(
        config: ApiConfig,
        store: Arc<dyn Store>,
        db: DbGuard,
        database_url: Option<String>,
        cipher: api::ConnectionCipher,
    ) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache_dir()),
            max_concurrent_instances: 8,
            max_memory_bytes: 64 << 20,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let state =
            AppState::with_cipher(store.clone(), runtime, OPERATOR, cipher, config).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            client: reqwest::Client::new(),
            store,
            state,
            database_url,
            stop: Some(tx),
            task: Some(task),
            _db: db,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `body` as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.expect("request")).await
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path)).body(bytes);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::reply(req.send().await.expect("request")).await
    }

    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            text,
        }
    }

    /// Creates a tenant; returns its token.
    pub async fn tenant(&self, id: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/v1/admin/tenants",
                Some(OPERATOR),
                Some(json!({"id": id, "name": format!("Tenant {id}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"]["token"].as_str().unwrap().to_string()
    }

    /// Uploads a component file; returns the reply.
    pub async fn upload(&self, tenant: &str, token: &str, path: &str) -> Reply {
        let bytes = std::fs::read(path).expect("guest component");
        self.raw(
            Method::POST,
            &format!("/v1/tenants/{tenant}/plugins?label=test"),
            Some(token),
            Some("application/wasm"),
            bytes,
        )
        .await
    }

    /// Uploads the default rules; returns the version id.
    pub async fn default_rules_version(&self, tenant: &str, token: &str) -> i64 {
        let r = self
            .upload(tenant, token, dealbridge_guests::DEFAULT_RULES)
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        r.body["version"]["id"].as_i64().unwrap()
    }
}

/// Asserts that `r` is a refusal with `status` and `code` in the JSON error shape, with a
/// message.
pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/json"),
        "content type {} for {}",
        r.content_type,
        r.text
    );
    assert_eq!(r.code(), code, "{}", r.text);
    assert!(!r.message().is_empty());
}

/// The default rules' fixtures: `(name, fixture JSON)`, sorted by name.
pub fn default_fixtures() -> Vec<(String, Value)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules-wasm/default-rules/fixtures");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() > 10, "expected the default rules' fixtures");
    out
}
