//! `dealbridge serve` as a process: it refuses to start without its secrets, listens on
//! 127.0.0.1:0, logs JSON lines (without secrets, with `tenant_id` and `run_id` on the
//! request span) or text lines with `--log-format text`, serves the API, and stops
//! gracefully on SIGTERM with exit status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const OPERATOR: &str = "operator-token-for-the-serve-test-0123456789";
const KEY_HEX: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn serve_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}?mode=rwc",
            dir.join("serve.db").display()
        ))
        .env_remove("DEALBRIDGE_OPERATOR_TOKEN")
        .env_remove("DEALBRIDGE_SECRET_KEY")
        .env_remove("DEALBRIDGE_DATABASE_URL")
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn serve_refuses_to_start_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_command(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEALBRIDGE_OPERATOR_TOKEN"));

    let out = serve_command(dir.path())
        .env("DEALBRIDGE_OPERATOR_TOKEN", "short")
        .env("DEALBRIDGE_SECRET_KEY", KEY_HEX)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));

    let out = serve_command(dir.path())
        .env("DEALBRIDGE_OPERATOR_TOKEN", OPERATOR)
        .env("DEALBRIDGE_SECRET_KEY", "not-a-key")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEALBRIDGE_SECRET_KEY"), "{err}");
    assert!(
        !err.contains("not-a-key"),
        "the key text must not be echoed: {err}"
    );
}

#[test]
fn serve_listens_logs_json_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_command(dir.path())
        .env("DEALBRIDGE_OPERATOR_TOKEN", OPERATOR)
        .env("DEALBRIDGE_SECRET_KEY", KEY_HEX)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        log.push(line);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("serve.db").display()
    );
    let (token, run_id) = rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client
            .post(format!("http://{addr}/v1/admin/tenants"))
            .bearer_auth(OPERATOR)
            .json(&json!({"id": "acme", "name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        let token = body["token"]["token"].as_str().unwrap().to_string();
        let r = client
            .get(format!("http://{addr}/v1/tenants/acme/plugins"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A run seeded through the store; its route names it, so its log line does too.
        let store = dealbridge::store::open(&db_url).await.unwrap();
        let tenant = dealbridge::store::TenantId::new("acme").unwrap();
        let lease = store
            .try_acquire_lease(&tenant, "serve-test", 60_000, 1)
            .await
            .unwrap()
            .unwrap();
        let run = store
            .start_run(&lease, dealbridge::store::RunTrigger::Manual, 2)
            .await
            .unwrap();
        let r = client
            .get(format!("http://{addr}/v1/tenants/acme/runs/{}", run.id))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (token, run.id)
    });

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Stdout closes when the process exits; then reap it.
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let code = child.wait().ok().and_then(|s| s.code());
        let _ = tx.send((rest, code));
    });
    let (rest, exit) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("serve did not stop within 60 s of SIGTERM");
        });
    log.extend(rest);
    assert_eq!(exit, Some(0), "log: {log:#?}");

    let all = log.join("\n");
    assert!(all.contains("\"stopped\""), "{all}");
    // Structured request lines carry the route and the tenant, never secrets.
    let request_line = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["route"] == "/v1/tenants/{tenant}/plugins")
        .unwrap_or_else(|| panic!("no request line for the plugins route: {all}"));
    assert_eq!(request_line["span"]["tenant_id"], "acme");
    assert_eq!(request_line["fields"]["status"], 200);
    let run_line = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["route"] == "/v1/tenants/{tenant}/runs/{run}")
        .unwrap_or_else(|| panic!("no request line for the run route: {all}"));
    assert_eq!(run_line["span"]["tenant_id"], "acme");
    assert_eq!(run_line["span"]["run_id"], run_id);
    assert_eq!(run_line["spans"][0]["run_id"], run_id, "the span list too");
    for secret in [
        OPERATOR,
        KEY_HEX,
        token.as_str(),
        token.rsplit('.').next().unwrap(),
    ] {
        assert!(!all.contains(secret), "a secret reached the log");
    }
}

#[test]
fn serve_logs_text_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_command(dir.path())
        .arg("--log-format")
        .arg("text")
        .env("DEALBRIDGE_OPERATOR_TOKEN", OPERATOR)
        .env("DEALBRIDGE_SECRET_KEY", KEY_HEX)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if line.contains("listening") {
            break line;
        }
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "not JSON: {line}"
    );
    assert!(
        line.contains("INFO") && line.contains("addr=127.0.0.1:"),
        "{line}"
    );

    let out = serve_command(dir.path())
        .arg("--log-format")
        .arg("yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("json"));
}
