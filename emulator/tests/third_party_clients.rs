//! The emulators checked with widely used third-party CRM clients, unchanged
//! but for the base URL: Python `simple-salesforce` and HubSpot's official
//! `hubspot-api-client` (pinned in `tests/clients/requirements.txt`), and as a
//! second opinion `jsforce` and `@hubspot/api-client` (pinned in
//! `tests/clients/node/package-lock.json`).
//!
//! Each test starts both emulators in process, prepares (or reuses) the
//! clients under the cargo target directory, runs one script of
//! `tests/clients/` against the emulators' HTTPS listeners and fails with the
//! script's output when any check fails.
//!
//! Without python3/npm or the package registries the tests print a loud
//! SKIPPED message and pass, except under `CI=true`, where CI machines have
//! both and a skip is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed, start};

/// The folder with the scripts and the pinned requirements.
fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// Why a client toolchain could not be prepared.
struct Unavailable(String);

/// Fails under CI, otherwise says loudly that the check did not run.
fn skip_or_fail(test: &str, why: &Unavailable) {
    let message = format!(
        "third-party client check `{test}` SKIPPED: {}. It needs python3 (with venv) and npm, and access to PyPI and the npm registry.",
        why.0
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a skip is a failure)");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and a skip must not go unseen.
    let banner = "=".repeat(78);
    let _ = writeln!(std::io::stderr(), "\n{banner}\n{message}\n{banner}\n");
}

fn describe_failure(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(what: &str, cmd: &mut Command) -> Result<(), Unavailable> {
    let out = cmd
        .output()
        .map_err(|e| Unavailable(format!("{what} could not start: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Unavailable(describe_failure(what, &out)))
    }
}

fn read(path: &Path) -> Result<String, Unavailable> {
    std::fs::read_to_string(path)
        .map_err(|e| Unavailable(format!("cannot read {}: {e}", path.display())))
}

/// The folder `name` under the cargo target directory, reused when its stamp
/// equals `pins`, otherwise built by `install` into a fresh folder that is
/// renamed into place once complete (so a half-built one is never reused).
fn prepared_dir(
    name: &str,
    pins: &str,
    install: impl FnOnce(&Path) -> Result<(), Unavailable>,
) -> Result<PathBuf, Unavailable> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(name);
    let stamp = |d: &Path| d.join("pins.stamp");
    if std::fs::read_to_string(stamp(&dir)).is_ok_and(|s| s == pins) {
        return Ok(dir);
    }
    let fresh = root.join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh)
        .map_err(|e| Unavailable(format!("cannot create {}: {e}", fresh.display())))?;
    if let Err(why) = install(&fresh) {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(why);
    }
    std::fs::write(stamp(&fresh), pins)
        .map_err(|e| Unavailable(format!("cannot write the stamp: {e}")))?;
    if std::fs::read_to_string(stamp(&dir)).is_ok_and(|s| s == pins) {
        // Another test process finished first and may be using its copy: keep it.
        let _ = std::fs::remove_dir_all(&fresh);
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&fresh, &dir)
        .map_err(|e| Unavailable(format!("cannot move {name} into place: {e}")))?;
    Ok(dir)
}

/// A Python virtual environment with `requirements.txt` installed.
fn build_venv() -> Result<PathBuf, Unavailable> {
    let requirements = clients_dir().join("requirements.txt");
    prepared_dir("client-check-venv", &read(&requirements)?, |fresh| {
        let venv = fresh.join("venv");
        run(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        run(
            "pip install -r tests/clients/requirements.txt",
            Command::new(venv.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet"])
                .args(["--disable-pip-version-check", "-r"])
                .arg(&requirements),
        )
    })
    .map(|dir| dir.join("venv/bin/python"))
}

/// A folder with the pinned JavaScript clients installed by `npm ci`.
fn build_node_modules() -> Result<PathBuf, Unavailable> {
    let source = clients_dir().join("node");
    let lock = read(&source.join("package-lock.json"))?;
    prepared_dir("client-check-node", &lock, |fresh| {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), fresh.join(file))
                .map_err(|e| Unavailable(format!("cannot copy {file}: {e}")))?;
        }
        run(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--silent", "--no-audit", "--no-fund"])
                .current_dir(fresh),
        )
    })
}

/// The venv's python, prepared once per test binary.
fn python() -> Result<PathBuf, &'static Unavailable> {
    static VENV: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    VENV.get_or_init(build_venv).as_ref().cloned()
}

/// The script, copied next to its `node_modules` (ES modules resolve packages
/// from the script's own folder).
fn node_script(script: &str) -> Result<PathBuf, Unavailable> {
    static MODULES: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    let dir = MODULES
        .get_or_init(build_node_modules)
        .as_ref()
        .map_err(|e| Unavailable(e.0.clone()))?;
    let target = dir.join(script);
    std::fs::copy(clients_dir().join("node").join(script), &target)
        .map_err(|e| Unavailable(format!("cannot copy {script}: {e}")))?;
    Ok(target)
}

async fn emulators() -> RunningEmulators {
    start(EmulatorOptions {
        seed: Seed::Demo,
        ..Default::default()
    })
    .await
    .expect("the emulators start")
}

/// The Salesforce login facts every Salesforce script reads.
fn salesforce_env(emu: &RunningEmulators) -> Vec<(&'static str, String)> {
    let sf = &emu.salesforce_credentials;
    vec![
        ("SF_BASE_URL", emu.salesforce_urls.https.clone()),
        ("SF_CONTROL_URL", emu.salesforce_urls.http.clone()),
        ("SF_USERNAME", sf.username.clone()),
        ("SF_PASSWORD", sf.password.clone()),
        ("SF_SECURITY_TOKEN", sf.security_token.clone()),
        ("SF_CLIENT_ID", sf.client_id.clone()),
        ("SF_CLIENT_SECRET", sf.client_secret.clone()),
    ]
}

/// The HubSpot facts every HubSpot script reads.
fn hubspot_env(emu: &RunningEmulators) -> Vec<(&'static str, String)> {
    vec![
        ("HS_BASE_URL", emu.hubspot_urls.https.clone()),
        ("HS_CONTROL_URL", emu.hubspot_urls.http.clone()),
        (
            "HS_TOKEN",
            emu.hubspot_credentials.private_app_token.clone(),
        ),
        (
            "HS_DEVELOPER_API_KEY",
            emu.hubspot_credentials.developer_api_key.clone(),
        ),
        ("HS_APP_ID", emu.hubspot_credentials.app_id.to_string()),
    ]
}

/// Runs `program script` with `env`, panicking with its output when it fails.
async fn run_script(program: &Path, script: &Path, env: Vec<(&str, String)>) {
    let out = tokio::process::Command::new(program)
        .arg(script)
        .current_dir(clients_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env)
        .output()
        .await
        .expect("the script starts");
    if !out.status.success() {
        panic!("{}", describe_failure(&script.display().to_string(), &out));
    }
    println!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Runs one Python script of `tests/clients/` against fresh emulators.
async fn check_with_python(
    test: &str,
    script: &str,
    env: fn(&RunningEmulators) -> Vec<(&'static str, String)>,
) {
    let python = match tokio::task::spawn_blocking(python)
        .await
        .expect("venv task")
    {
        Ok(p) => p,
        Err(why) => return skip_or_fail(test, why),
    };
    let emu = emulators().await;
    let mut vars = env(&emu);
    let ca = emu.ca_cert_path.display().to_string();
    vars.extend([("REQUESTS_CA_BUNDLE", ca.clone()), ("HS_CA_CERT", ca)]);
    run_script(&python, &clients_dir().join(script), vars).await;
    emu.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_works_unchanged() {
    check_with_python(
        "simple_salesforce_works_unchanged",
        "simple_salesforce_check.py",
        salesforce_env,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_api_client_works_unchanged() {
    check_with_python(
        "hubspot_api_client_works_unchanged",
        "hubspot_client_check.py",
        hubspot_env,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsforce_and_hubspot_js_client_work_unchanged() {
    let test = "jsforce_and_hubspot_js_client_work_unchanged";
    let script = match tokio::task::spawn_blocking(|| node_script("js_clients_check.mjs"))
        .await
        .expect("npm task")
    {
        Ok(s) => s,
        Err(why) => return skip_or_fail(test, &why),
    };
    let emu = emulators().await;
    let mut vars = salesforce_env(&emu);
    vars.extend(hubspot_env(&emu));
    vars.push((
        "NODE_EXTRA_CA_CERTS",
        emu.ca_cert_path.display().to_string(),
    ));
    run_script(Path::new("node"), &script, vars).await;
    emu.shutdown().await.expect("shutdown");
}
