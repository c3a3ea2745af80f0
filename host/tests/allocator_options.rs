//! The `dealbridge` binary sets two mimalloc options before the allocator starts (see
//! `host/src/main.rs`): memory is purged at once and arenas are committed as used, which
//! keeps the engine's 100k-record peak under its ceiling. The option numbers are taken
//! from mimalloc's header, so a mimalloc upgrade that renumbers them would silently set
//! other options: these tests read back what mimalloc itself reports.

use std::process::Command;

/// What `MIMALLOC_VERBOSE=1 dealbridge --help` reports for `option`, plus the run's stderr.
fn reported_option(option: &str, extra_env: &[(&str, &str)]) -> (Option<String>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("--help")
        .env("MIMALLOC_VERBOSE", "1")
        .envs(extra_env.iter().copied())
        .output()
        .expect("the dealbridge binary runs");
    assert!(output.status.success(), "--help exits 0");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr);
    let prefix = format!("option '{option}':");
    let value = all
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(|rest| rest.trim().to_string());
    (value, all)
}

#[test]
fn the_binary_purges_at_once_and_commits_arenas_as_used() {
    for option in ["purge_delay", "arena_eager_commit"] {
        let (value, output) = reported_option(option, &[]);
        assert_eq!(
            value.as_deref(),
            Some("0"),
            "mimalloc should report {option} = 0; it printed:\n{output}"
        );
    }
}

#[test]
fn an_operators_mimalloc_variable_still_wins() {
    let (value, output) = reported_option("purge_delay", &[("MIMALLOC_PURGE_DELAY", "25")]);
    assert_eq!(
        value.as_deref(),
        Some("25"),
        "MIMALLOC_PURGE_DELAY=25 should be kept; mimalloc printed:\n{output}"
    );
}
