//! `dealbridge bench tenants` and `dealbridge bench api` as a user runs them, tiny: the
//! built binary's `--json` output carries the figures, every tenant got its own active
//! version loaded from the compiled cache, and every API request was answered with a
//! 2xx. Correctness only: no timing is compared with anything.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run dealbridge bench");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout).expect("--json prints one JSON document")
}

#[test]
fn tenants_each_get_their_own_version_from_the_compiled_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let first = bench(&["tenants", "--tenants", "3", "--cache-dir", dir, "--json"]);
    assert_eq!(first["prepare"]["compiled"], 3, "{first}");
    let m = &first["measured"];
    assert_eq!(m["tenants"], 3);
    assert_eq!(m["distinct_active_digests"], 3, "{m}");
    assert_eq!(m["compiled_during_measure"], 0, "{m}");
    for figure in ["activation", "upload", "activate", "invocation"] {
        assert_eq!(m[figure]["count"], 3, "{figure}: {m}");
    }
    assert!(m["rss_after_invocations"]["total_kib"].as_u64().unwrap() > 0);
    // A later run finds every artefact in the cache.
    let again = bench(&["tenants", "--tenants", "3", "--cache-dir", dir, "--json"]);
    assert_eq!(
        (&again["prepare"]["compiled"], &again["prepare"]["cached"]),
        (&Value::from(0), &Value::from(3)),
        "{again}"
    );
}

#[test]
fn api_load_gets_every_route_answered() {
    let r = bench(&[
        "api",
        "--tenants",
        "2",
        "--runs",
        "3",
        "--errors",
        "5",
        "--concurrency",
        "2",
        "--duration-secs",
        "1",
        "--json",
    ]);
    assert_eq!(r["transport_errors"], 0, "{r}");
    assert_eq!(r["overall"]["non_2xx"], 0, "{r}");
    let routes = r["routes"].as_object().unwrap();
    assert_eq!(routes.len(), 9, "{r}");
    for (name, figures) in routes {
        assert!(
            figures["requests"].as_u64().unwrap() > 0,
            "{name} was never asked: {r}"
        );
    }
}
