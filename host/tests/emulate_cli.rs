//! `dealbridge emulate` as a user runs it: the built binary, its `--json`
//! line, real requests to every printed base URL with the printed
//! credentials, and a graceful shutdown that writes the snapshot.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// How long the binary may take to print its first line or to exit.
const PATIENCE: Duration = Duration::from_secs(60);

/// The running binary; killed on drop so a failing test leaves nothing behind.
struct Emulate {
    child: Option<Child>,
    facts: Value,
}

impl Drop for Emulate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(extra: &[&str]) -> Emulate {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("emulate")
        .arg("--json")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dealbridge");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    let mut guard = Emulate {
        child: Some(child),
        facts: Value::Null,
    };
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("no JSON line from `dealbridge emulate --json` in time")
        .expect("reading stdout");
    guard.facts = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("first line is not JSON ({e}): {line:?}"));
    guard
}

/// Waits (bounded) for the child to exit and returns its status.
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(PATIENCE)
        .expect("the emulators did not exit in time")
        .expect("wait")
}

fn client(ca_pem: Option<&[u8]>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    b.build().unwrap()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

async fn salesforce_token(client: &reqwest::Client, facts: &Value, base: &str) -> String {
    let sf = &facts["salesforce"];
    let resp = client
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", str_at(sf, &["client_id"])),
            ("client_secret", str_at(sf, &["client_secret"])),
            ("username", str_at(sf, &["username"])),
            ("password", str_at(sf, &["password"])),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tok: Value = resp.json().await.unwrap();
    assert_eq!(tok["instance_url"], base);
    tok["access_token"].as_str().unwrap().to_string()
}

async fn count_opportunities(client: &reqwest::Client, base: &str, token: &str) -> u64 {
    let resp = client
        .get(format!("{base}/services/data/v62.0/query"))
        .query(&[("q", "SELECT COUNT() FROM Opportunity")])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["totalSize"].as_u64().unwrap()
}

#[tokio::test]
async fn json_line_names_urls_and_credentials_that_work() {
    let emu = spawn(&["--seed", "demo"]);
    let f = &emu.facts;
    assert_eq!(f["seed"], "demo");
    let ca_path = str_at(f, &["ca_cert_path"]);
    let ca = std::fs::read(ca_path).expect("the printed CA file exists");
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let sf_http = str_at(f, &["salesforce", "http"]);
    let sf_https = str_at(f, &["salesforce", "https"]);
    let hs_http = str_at(f, &["hubspot", "http"]);
    let hs_https = str_at(f, &["hubspot", "https"]);
    assert!(sf_http.starts_with("http://127.0.0.1:"), "{sf_http}");
    assert!(hs_http.starts_with("http://127.0.0.1:"), "{hs_http}");
    assert_eq!(
        str_at(f, &["salesforce", "control"]),
        format!("{sf_http}/__emulator/")
    );
    let http = client(None);
    let https = client(Some(&ca));

    // Salesforce: OAuth with the printed credentials, then a query, on both listeners.
    for base in [sf_http, sf_https] {
        let client = if base.starts_with("https") {
            &https
        } else {
            &http
        };
        let token = salesforce_token(client, f, base).await;
        let n = count_opportunities(client, base, &token).await;
        assert!(n > 0, "the demo org has opportunities ({base})");
        let resp = client
            .get(format!("{base}/services/data/v62.0/query"))
            .query(&[("q", "SELECT Id, Name FROM Opportunity LIMIT 3")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 3, "{v}");
        assert_eq!(v["records"][0]["attributes"]["type"], "Opportunity");
    }

    // HubSpot: the printed private-app token on both listeners; a wrong one is refused.
    let token = str_at(f, &["hubspot", "private_app_token"]);
    for base in [hs_http, hs_https] {
        let client = if base.starts_with("https") {
            &https
        } else {
            &http
        };
        let resp = client
            .get(format!("{base}/crm/v3/objects/deals"))
            .query(&[("limit", "5"), ("properties", "dealname,amount")])
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{base}");
        let v: Value = resp.json().await.unwrap();
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 5, "{v}");
        assert!(results[0]["properties"]["dealname"].is_string(), "{v}");
    }
    let resp = http
        .get(format!("{hs_http}/crm/v3/objects/deals"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The control API at the printed prefix answers without auth.
    let acc: Value = http
        .get(format!("{}requests", str_at(f, &["salesforce", "control"])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(acc["total"].as_u64().unwrap() >= 4, "{acc}");
}

#[tokio::test]
async fn ctrl_c_writes_the_snapshot_and_the_next_start_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("org.json");
    let snap_arg = snap.to_str().unwrap();
    let http = client(None);

    let mut emu = spawn(&["--seed", "empty", "--snapshot", snap_arg]);
    let base = str_at(&emu.facts, &["salesforce", "http"]).to_string();
    assert_eq!(emu.facts["salesforce"]["loaded_from_snapshot"], false);
    let token = salesforce_token(&http, &emu.facts, &base).await;
    assert_eq!(count_opportunities(&http, &base, &token).await, 0);
    let resp = http
        .post(format!("{base}/services/data/v62.0/sobjects/Opportunity"))
        .bearer_auth(&token)
        .json(&json!({"Name": "Kept across restarts", "StageName": "Prospecting", "CloseDate": "2026-09-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Ctrl-C (SIGINT): graceful shutdown, exit 0, snapshot on disk.
    let child = emu.child.take().unwrap();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = wait_exit(child);
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&snap).expect("snapshot written on Ctrl-C");
    assert!(text.contains("Kept across restarts"));

    // A second start with the same file loads it instead of the seed.
    let emu = spawn(&["--seed", "demo", "--snapshot", snap_arg]);
    assert_eq!(emu.facts["salesforce"]["loaded_from_snapshot"], true);
    let base = str_at(&emu.facts, &["salesforce", "http"]).to_string();
    let token = salesforce_token(&http, &emu.facts, &base).await;
    assert_eq!(count_opportunities(&http, &base, &token).await, 1);
}

#[test]
fn unreadable_snapshot_is_a_usage_error_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("broken.json");
    std::fs::write(&snap, "this is not json").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["emulate", "--json", "--snapshot", snap.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let exit = wait_exit(child);
    assert_eq!(exit.code(), Some(2));
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(err.contains("invalid snapshot"), "{err}");
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(out.is_empty(), "nothing printed on stdout: {out}");
}
