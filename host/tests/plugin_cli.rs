//! `dealbridge plugin check|run|test` through the built binary: output,
//! exit codes and the refusal message for every kind of bad component.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn dealbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(args)
        .output()
        .expect("running dealbridge")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../rules-wasm/default-rules/fixtures"
);
const OWNER_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../rules-wasm/examples/owner-lookup/fixtures"
);

#[test]
fn check_prints_the_world_and_the_mappings() {
    let o = dealbridge(&["plugin", "check", dealbridge_guests::DEFAULT_RULES]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("dealbridge:rules@0.1.1"), "{out}");
    assert!(out.contains("dealbridge:rules/rules@0.1.1"), "{out}");
    assert!(out.contains("Amount") && out.contains("amount"), "{out}");
    assert!(out.contains("prefer-salesforce-unless-blank"), "{out}");
}

#[test]
fn check_json_is_machine_readable() {
    let o = dealbridge(&[
        "plugin",
        "check",
        "--json",
        dealbridge_guests::DEFAULT_RULES,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["contract_version"], "0.1.1");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(!v["description"]["mappings"].as_array().unwrap().is_empty());
}

#[test]
fn check_refuses_each_bad_component_with_a_clear_message() {
    use dealbridge_guests as g;
    let cases: &[(&str, &str)] = &[
        (g::INPUT_EMPTY, "the file is empty"),
        (g::INPUT_NOT_WASM, "not a WebAssembly file"),
        (
            g::INPUT_CORE_MODULE,
            "a core WebAssembly module, not a component",
        ),
        (
            g::INPUT_WRONG_VERSION,
            "built against `dealbridge:rules/rules@0.2.0`",
        ),
        (g::INPUT_WRONG_WORLD, "does not target the world"),
        (g::INPUT_CORRUPT, "invalid component"),
        (g::INPUT_TRUNCATED, "invalid component"),
        (g::HOSTILE_FILESYSTEM, "wasi:filesystem/"),
        (g::HOSTILE_SOCKETS, "wasi:sockets/"),
        (g::HOSTILE_HTTP, "wasi:http/"),
        (
            g::INPUT_WRONG_SIGNATURES,
            "the component does not fit the contract: `dealbridge:rules/rules` exports `describe` with a type other than the contract's",
        ),
        (
            g::INPUT_WRONG_FLAT_SIGNATURE,
            "the component does not fit the contract: `dealbridge:rules/flat-rules` exports `plan` with a type other than the contract's",
        ),
    ];
    for (path, message) in cases {
        let o = dealbridge(&["plugin", "check", path]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{path}: {out}{err}");
        assert!(
            err.contains(message),
            "{path}: expected {message:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // For a component that loads but does not fit, the summary's first line says why, not
        // just that `describe` failed.
        if message.starts_with("the component does not fit the contract") {
            assert!(
                out.lines()
                    .next()
                    .is_some_and(|l| l.ends_with(": does not fit the contract")),
                "{path}: {out}"
            );
        }
    }
}

#[test]
fn check_refuses_an_oversized_file_before_reading_it() {
    let o = dealbridge(&[
        "plugin",
        "check",
        "--max-bytes",
        "1000",
        dealbridge_guests::DEFAULT_RULES,
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("the limit is 1000 bytes"), "{err}");
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let o = dealbridge(&["plugin", "check", "/nonexistent/x.wasm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/nonexistent/x.wasm"));
}

#[test]
fn run_prints_output_fuel_memory_time_and_the_http_trace() {
    let fixture = format!("{OWNER_FIXTURES}/salesforce-owner-resolved-through-crm.json");
    let o = dealbridge(&[
        "plugin",
        "run",
        dealbridge_guests::OWNER_LOOKUP,
        "--fixture",
        &fixture,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("\"outcomes\""), "{out}");
    for label in [
        "fuel used",
        "peak memory",
        "wall time",
        "http          2 request(s)",
    ] {
        assert!(out.contains(label), "{label}: {out}");
    }
    assert!(out.contains("/services/data/v62.0/query"), "{out}");
}

#[test]
fn run_json_carries_the_report() {
    let fixture = format!("{FIXTURES}/prefer-sf-salesforce-change-overwrites-hubspot.json");
    let o = dealbridge(&[
        "plugin",
        "run",
        "--json",
        dealbridge_guests::DEFAULT_RULES,
        "--fixture",
        &fixture,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["output"]["outcomes"].is_array());
    assert!(v["report"]["fuel_used"].as_u64().unwrap() > 0);
    assert!(v["report"]["peak_memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn run_config_flag_replaces_the_fixture_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(&config, r#"{"attack": "trap"}"#).unwrap();
    let fixture = format!(
        "{}/../rules-wasm/hostile/fixtures/behaves-without-attack.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = dealbridge(&[
        "plugin",
        "run",
        dealbridge_guests::HOSTILE,
        "--fixture",
        &fixture,
        "--config",
        config.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("\"trap\""), "{out}");
}

fn count_json(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[test]
fn test_runs_a_folder_and_closes_with_the_counts() {
    let o = dealbridge(&["plugin", "test", dealbridge_guests::DEFAULT_RULES, FIXTURES]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let n = count_json(FIXTURES);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        n,
        "{out}"
    );
    assert_eq!(out.lines().last().unwrap(), format!("{n} passed, 0 failed"));
}

#[test]
fn test_fails_on_a_wrong_expectation_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(format!(
        "{FIXTURES}/prefer-sf-salesforce-change-overwrites-hubspot.json"
    ))
    .unwrap();
    std::fs::write(dir.path().join("a-good.json"), &good).unwrap();
    let mut bad: Value = serde_json::from_str(&good).unwrap();
    bad["expect"] = serde_json::json!({ "outcomes": [ { "skip": "up-to-date" } ] });
    std::fs::write(dir.path().join("b-bad.json"), bad.to_string()).unwrap();
    std::fs::write(
        dir.path().join("c-broken.json"),
        r#"{"batch": {"pairz": []}}"#,
    )
    .unwrap();
    let o = dealbridge(&[
        "plugin",
        "test",
        dealbridge_guests::DEFAULT_RULES,
        dir.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ok ") && lines[0].contains("a-good.json"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("FAIL ")
            && lines[1].contains("b-bad.json")
            && lines[1].contains("outcomes[0]"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("FAIL ") && lines[2].contains("pairz"),
        "{out}"
    );
    assert_eq!(lines[3], "1 passed, 2 failed");
}

#[test]
fn the_hostile_suite_fixtures_pass_and_the_host_survives() {
    let dir = format!(
        "{}/../rules-wasm/hostile/fixtures",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(Path::new(&dir).is_dir());
    let o = dealbridge(&["plugin", "test", dealbridge_guests::HOSTILE, &dir]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.ends_with(&format!("{} passed, 0 failed\n", count_json(&dir))),
        "{out}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["check", "run", "test"] {
        let o = dealbridge(&["plugin", sub, "--help"]);
        assert_eq!(o.status.code(), Some(0));
        let out = text(&o).0;
        assert!(
            out.contains("--json") && out.contains("Print JSON"),
            "{out}"
        );
    }
}

#[test]
fn check_reports_the_contract_version_and_the_planning_path_of_each_component() {
    let json = |path: &str| -> Value {
        let o = dealbridge(&["plugin", "check", "--json", path]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // Built against the frozen 0.1.0 contract: it runs, and says so.
    let v = json(dealbridge_guests::OWNER_LOOKUP);
    assert_eq!(v["contract_version"], "0.1.0");
    assert_eq!(v["world"], "plugin");
    assert_eq!(v["flat_rules"], false);
    let v = json(dealbridge_guests::HOSTILE);
    assert_eq!(v["contract_version"], "0.1.1");
    assert_eq!(v["world"], "flat-plugin");
    assert_eq!(v["flat_rules"], true);

    let o = dealbridge(&["plugin", "check", dealbridge_guests::OWNER_LOOKUP]);
    let out = text(&o).0;
    assert!(
        out.contains("dealbridge:rules@0.1.0 (world `plugin`)"),
        "{out}"
    );
    assert!(out.contains("planning   nested (`rules`)"), "{out}");
    let o = dealbridge(&["plugin", "check", dealbridge_guests::HOSTILE]);
    let out = text(&o).0;
    assert!(out.contains("(world `flat-plugin`)"), "{out}");
    assert!(out.contains("planning   flat (`flat-rules`"), "{out}");
}

#[test]
fn run_names_the_export_and_takes_a_path() {
    let fixture = format!(
        "{}/../rules-wasm/hostile/fixtures/behaves-without-attack.json",
        env!("CARGO_MANIFEST_DIR")
    );
    for (path, export) in [
        (None, "flat-rules.plan"),
        (Some("flat"), "flat-rules.plan"),
        (Some("nested"), "rules.plan"),
    ] {
        let mut args = vec![
            "plugin",
            "run",
            dealbridge_guests::HOSTILE,
            "--fixture",
            &fixture,
        ];
        if let Some(p) = path {
            args.extend(["--path", p]);
        }
        let o = dealbridge(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        assert!(
            out.lines().any(|l| l == format!("export        {export}")),
            "{out}"
        );
    }
    // The flat path of a component without `flat-rules` is refused before anything runs.
    let o = dealbridge(&[
        "plugin",
        "run",
        "--json",
        dealbridge_guests::OWNER_LOOKUP,
        "--fixture",
        &format!("{OWNER_FIXTURES}/salesforce-owner-resolved-through-crm.json"),
        "--path",
        "flat",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "nothing ran");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--path flat: the component does not export `flat-rules` (it plans on rules)"),
        "{err}"
    );
}

#[test]
fn test_runs_each_case_on_every_path_and_names_the_path_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(format!(
        "{}/../rules-wasm/hostile/fixtures/behaves-without-attack.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    std::fs::write(dir.path().join("a-good.json"), &good).unwrap();
    // Only the flat plan of this config points outside its lists.
    let mut flat_only: Value = serde_json::from_str(&good).unwrap();
    flat_only["config"] = serde_json::json!({ "attack": "flat-write-span-out-of-range" });
    std::fs::write(dir.path().join("b-flat-broken.json"), flat_only.to_string()).unwrap();
    // Wrong on both paths.
    let mut both: Value = serde_json::from_str(&good).unwrap();
    both["config"] = serde_json::json!({ "attack": "wrong-outcome-count" });
    std::fs::write(dir.path().join("c-both-broken.json"), both.to_string()).unwrap();
    // A case that expects the invalid output passes: both paths return one.
    let mut expected: Value = serde_json::from_str(&good).unwrap();
    expected["config"] = serde_json::json!({ "attack": "wrong-outcome-count" });
    expected["expect"] = serde_json::json!({ "invalid_output": "outcomes for a batch of" });
    std::fs::write(dir.path().join("d-expected.json"), expected.to_string()).unwrap();

    let o = dealbridge(&[
        "plugin",
        "test",
        dealbridge_guests::HOSTILE,
        dir.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ok ")
            && lines[0].contains("(rules: fuel")
            && lines[0].contains("flat-rules: fuel"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("FAIL ")
            && lines[1].contains("flat-rules: unexpected")
            && lines[1].contains("writes span")
            && !lines[1].contains(": rules: "),
        "{out}"
    );
    assert!(
        lines[2].starts_with("FAIL ")
            && lines[2].contains(": rules: unexpected")
            && lines[2].contains("flat-rules: unexpected"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("ok ") && lines[3].contains("d-expected.json"),
        "{out}"
    );
    assert_eq!(lines[4], "2 passed, 2 failed");
}
