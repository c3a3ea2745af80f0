//! `dealbridge demo --once`: the README's main command, run to completion on a
//! small seeded org. It must back-fill, show an edit from each side arriving on
//! the other, and exit 0 only when both arrived.

use std::process::Command;

#[test]
fn demo_once_backfills_and_shows_edits_arriving_both_ways() {
    let out = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .args(["demo", "--once", "--opportunities", "30"])
        .output()
        .expect("run dealbridge demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let arrived: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with("arrived"))
        .collect();
    assert_eq!(
        arrived.len(),
        2,
        "one edit from each side must arrive:\n{stdout}"
    );
    assert!(
        arrived
            .iter()
            .any(|l| l.contains("HubSpot deal") && l.contains("123456.78")),
        "{stdout}"
    );
    assert!(
        arrived
            .iter()
            .any(|l| l.contains("Salesforce opp") && l.contains("Description")),
        "{stdout}"
    );
    assert!(!stdout.contains("NOT YET"), "{stdout}");
    assert!(stdout.contains("What to look at next"), "{stdout}");
}
