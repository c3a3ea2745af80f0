//! `dealbridge bench sync` as a user runs it, on a tiny org: the built binary's `--json`
//! output carries every scenario and every figure, and every seeded record synced.
//! Correctness only: no figure is compared with its target (timings vary by machine).

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["bench", "sync"])
        .args(args)
        .output()
        .expect("run dealbridge bench sync");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn figure<'a>(scenario: &'a Value, name: &str) -> &'a Value {
    scenario["figures"]
        .as_array()
        .expect("figures is a list")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{} has no figure {name}: {scenario}", scenario["scenario"]))
}

#[test]
fn every_scenario_reports_every_figure_and_syncs_every_record() {
    let (status, stdout, stderr) = bench(&["--records", "40", "--edits", "2", "--json"]);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let doc: Value = serde_json::from_str(&stdout).expect("--json prints one JSON document");
    assert_eq!(doc["bench"], "sync");
    let scenarios = doc["scenarios"].as_array().expect("scenarios is a list");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["calls", "throughput", "throttled", "latency", "memory"]
    );
    let expected: &[(&str, &[&str])] = &[
        (
            "calls",
            &[
                "api_calls_total",
                "api_calls_setup",
                "calls_per_record",
                "batching_minimum",
                "naive_calls_per_record",
                "calls_vs_minimum",
            ],
        ),
        ("throughput", &["records_per_sec", "backfill_secs"]),
        (
            "throttled",
            &[
                "records_per_sec",
                "share_of_ceiling",
                "http_429",
                "hubspot_calls",
            ],
        ),
        (
            "latency",
            &[
                "latency_p50",
                "latency_p95",
                "latency_max",
                "edits",
                "edits_lost",
            ],
        ),
        ("memory", &["peak_rss"]),
    ];
    for (s, (name, figures)) in scenarios.iter().zip(expected) {
        assert_eq!(s["scenario"], *name);
        // 40 opportunities, 4 accounts, 13 contacts.
        assert_eq!(s["records_seeded"], 57, "{name}: {s}");
        assert_eq!(
            s["records_synced"], s["records_seeded"],
            "{name}: every seeded record syncs: {s}"
        );
        assert_eq!(s["records_failed"], 0, "{name}: {s}");
        for f in *figures {
            let v = figure(s, f)["value"].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v >= 0.0),
                "{name}.{f} is a number: {s}"
            );
        }
    }
    // Figures that must hold whatever the machine.
    let calls = &scenarios[0];
    assert_eq!(figure(calls, "naive_calls_per_record")["value"], 2.0);
    assert!(
        figure(calls, "api_calls_total")["value"].as_f64()
            >= figure(calls, "api_calls_setup")["value"].as_f64()
    );
    let latency = &scenarios[3];
    assert_eq!(figure(latency, "edits")["value"], 4.0);
    assert_eq!(figure(latency, "edits_lost")["value"], 0.0, "{latency}");
    let memory = &scenarios[4];
    assert!(figure(memory, "peak_rss")["value"].as_f64() > Some(0.0));
}

#[test]
fn a_bad_scenario_is_refused_with_the_valid_names() {
    let (status, _, stderr) = bench(&["--scenario", "speed"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("throughput"), "{stderr}");
}
