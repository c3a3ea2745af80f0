//! `dealbridge sync --config tenant.toml [--once] [--dry-run] [--resync ...] [--json]`:
//! runs the sync engine for one tenant — the set-up and its checks, the backfill with a
//! progress bar, then incremental cycles on the poll interval — and ends with a summary.
//!
//! Exit codes: 0 everything synced, 1 some records failed (they are stored and retried),
//! 2 the sync could not run (bad config, a failed precondition, a CRM or store outage).
//! This command must never print a credential.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::ExitStatus;
use crate::store::{ObjectPair, Side};
use crate::sync::engine::{CycleReport, FailureLine, ProgressFn};
use crate::sync::setup::{CheckStatus, SetupReport};
use crate::sync::start::{StartOptions, bind_webhooks, start};
use crate::sync::{Resync, SyncError, TenantConfig};

/// Sync one tenant's Salesforce and HubSpot.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The tenant config (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Run one cycle and exit.
    #[arg(long)]
    pub once: bool,
    /// Print the planned creates, updates, deletes and associations; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Resync instead of polling: `all`, `record:<pair>:<side>:<id>` or
    /// `filter:<pair>:<SOQL condition>` (pairs: opportunity_deal, account_company,
    /// contact_contact; sides: salesforce, hubspot).
    #[arg(long)]
    pub resync: Option<String>,
    /// Machine-readable output (one JSON object per cycle, then the summary).
    #[arg(long)]
    pub json: bool,
}

/// Parses a `--resync` value.
pub fn parse_resync(s: &str) -> Result<Resync, String> {
    if s == "all" {
        return Ok(Resync::All);
    }
    let pair = |p: &str| {
        p.parse::<ObjectPair>().map_err(|_| {
            format!(
                "unknown object pair `{p}` (opportunity_deal, account_company, contact_contact)"
            )
        })
    };
    if let Some(rest) = s.strip_prefix("record:") {
        let mut it = rest.splitn(3, ':');
        let (Some(p), Some(side), Some(id)) = (it.next(), it.next(), it.next()) else {
            return Err("--resync record:<pair>:<side>:<id>".into());
        };
        let side = side
            .parse::<Side>()
            .map_err(|_| format!("unknown side `{side}` (salesforce, hubspot)"))?;
        if id.is_empty() {
            return Err("--resync record: the id is empty".into());
        }
        return Ok(Resync::Record {
            pair: pair(p)?,
            side,
            id: id.to_string(),
        });
    }
    if let Some(rest) = s.strip_prefix("filter:") {
        let Some((p, cond)) = rest.split_once(':') else {
            return Err("--resync filter:<pair>:<SOQL condition>".into());
        };
        if cond.trim().is_empty() {
            return Err("--resync filter: the condition is empty".into());
        }
        return Ok(Resync::Filter {
            pair: pair(p)?,
            soql_where: cond.to_string(),
        });
    }
    Err(format!(
        "--resync {s:?}: expected all, record:<pair>:<side>:<id> or filter:<pair>:<condition>"
    ))
}

/// Prints the set-up checks.
pub fn print_setup(report: &SetupReport) {
    println!("Set-up and checks:");
    for c in &report.checks {
        let mark = match c.status {
            CheckStatus::Ok => "ok     ",
            CheckStatus::Created => "created",
            CheckStatus::Warning => "WARN   ",
            CheckStatus::Failed => "FAILED ",
        };
        println!("  [{mark}] {:<40} {}", c.name, c.message);
    }
}

/// Prints the closing summary table of cycles.
pub fn print_summary(reports: &[CycleReport]) {
    let mut t = crate::store::RunCounters::default();
    for r in reports {
        t.add(&r.counters);
    }
    let rows = [
        ("read from Salesforce", t.read_salesforce),
        ("read from HubSpot", t.read_hubspot),
        ("created in HubSpot", t.created_hubspot),
        ("created in Salesforce", t.created_salesforce),
        ("updated in HubSpot", t.updated_hubspot),
        ("updated in Salesforce", t.updated_salesforce),
        ("archived in HubSpot", t.archived_hubspot),
        ("skipped (rules)", t.skipped),
        ("echoes suppressed", t.echoes_suppressed),
        ("failed (stored, retried)", t.failed),
        ("Salesforce API calls", t.api_calls_salesforce),
        ("HubSpot API calls", t.api_calls_hubspot),
    ];
    println!("+----------------------------+------------+");
    println!("| {:<26} | {:>10} |", "summary", "records");
    println!("+----------------------------+------------+");
    for (k, v) in rows {
        println!("| {k:<26} | {v:>10} |");
    }
    println!("+----------------------------+------------+");
    let failures: Vec<&FailureLine> = reports.iter().flat_map(|r| r.failures.iter()).collect();
    if !failures.is_empty() {
        let groups = failure_groups(&failures);
        println!(
            "Failures: {} records, {} reasons (most frequent first; each record is stored as a sync error and retried):",
            failures.len(),
            groups.len()
        );
        for g in groups.iter().take(SHOWN_FAILURE_GROUPS) {
            let others = match g.count - 1 {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            println!(
                "  {:>6} × {:<19} {:<16} {}\n           e.g. {}{others}",
                g.count, g.first.category, g.first.pair, g.first.message, g.first.record
            );
        }
        if groups.len() > SHOWN_FAILURE_GROUPS {
            println!("  ... {} more reasons", groups.len() - SHOWN_FAILURE_GROUPS);
        }
    }
}

/// How many groups of failures the summary prints.
const SHOWN_FAILURE_GROUPS: usize = 10;

/// Failures that share a category, pair and message (the message names the cause, e.g. the
/// owner without a HubSpot user, not the record): how many, and the first one.
struct FailureGroup<'a> {
    count: usize,
    first: &'a FailureLine,
}

/// Groups failures by category, pair and message, the largest group first (ties in the order
/// they were first seen).
fn failure_groups<'a>(failures: &[&'a FailureLine]) -> Vec<FailureGroup<'a>> {
    let mut index: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut groups: Vec<FailureGroup<'a>> = Vec::new();
    for f in failures {
        let key = (f.category, f.pair, f.message.as_str());
        match index.get(&key) {
            Some(&i) => groups[i].count += 1,
            None => {
                index.insert(key, groups.len());
                groups.push(FailureGroup { count: 1, first: f });
            }
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// Prints a dry run's planned operations.
pub fn print_planned(r: &CycleReport) {
    println!(
        "Planned operations (dry run, nothing written): {}",
        r.planned.len()
    );
    for p in &r.planned {
        println!(
            "  {:<9} {:<10} {:<16} {:<20} {}",
            p.op, p.target, p.pair, p.record, p.detail
        );
    }
}

/// A progress bar for the backfill.
pub fn progress_bar() -> ProgressFn {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let bar = Arc::new(bar);
    Arc::new(move |pair: &str, done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_message(pair.to_string());
        bar.set_position(done);
        if total.is_some_and(|t| done >= t) {
            bar.println(format!("{pair}: {done} read"));
        }
    })
}

fn exit_for(reports: &[CycleReport]) -> ExitStatus {
    if reports.iter().any(|r| !r.failures.is_empty()) {
        ExitStatus::Failures
    } else {
        ExitStatus::Success
    }
}

pub fn run(args: SyncArgs) -> anyhow::Result<ExitStatus> {
    let cfg = match TenantConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitStatus::UsageError);
        }
    };
    let resync = match args.resync.as_deref().map(parse_resync).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitStatus::UsageError);
        }
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let env = |k: &str| std::env::var(k).ok();
        // The webhook receiver's socket first: a port in use stops the command before set-up
        // points HubSpot at it. A dry run stores nothing, so it receives nothing.
        let webhooks = if args.dry_run {
            None
        } else {
            match bind_webhooks(&cfg, &env).await {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitStatus::UsageError);
                }
            }
        };
        let (mut engine, setup) = match start(
            &cfg,
            &env,
            StartOptions {
                dry_run: args.dry_run,
                webhook_public_url: webhooks.as_ref().map(|l| l.public_url().to_string()),
                ..StartOptions::default()
            },
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitStatus::UsageError);
            }
        };
        if args.json {
            println!("{}", serde_json::json!({"setup": setup}));
        } else {
            print_setup(&setup);
            engine.on_progress(progress_bar());
        }
        // Served for the command's lifetime (the task ends with the runtime), before the
        // first cycle, so that changes made while a backfill runs are received.
        if let Some(listener) = webhooks {
            let listen = listener.local_addr();
            let public_url = listener.public_url().to_string();
            if let Err(e) = listener.serve(&mut engine) {
                eprintln!("error: {e}");
                let _ = engine.release().await;
                return Ok(ExitStatus::UsageError);
            }
            let feed = engine.setup().webhook_feed;
            let listen = listen.map(|a| a.to_string()).unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"webhooks": {
                        "listen": listen,
                        "public_url": public_url,
                        "app_id": feed.map(|f| f.app_id),
                        "verified": feed.is_some_and(|f| f.verified),
                    }})
                );
            } else {
                println!("HubSpot webhooks: receiving on {listen} (HubSpot calls {public_url})");
            }
        }
        let mut reports = Vec::new();
        let one = |r: Result<CycleReport, SyncError>,
                   reports: &mut Vec<CycleReport>|
         -> Result<(), SyncError> {
            let r = r?;
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if args.dry_run {
                print_planned(&r);
            }
            reports.push(r);
            Ok(())
        };
        let outcome = if let Some(what) = resync {
            one(engine.resync(what).await, &mut reports)
        } else if args.once || args.dry_run {
            one(engine.run_cycle().await, &mut reports)
        } else {
            let interval = cfg.poll_interval();
            let mut last_err = None;
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let r = engine
                .poll(
                    interval,
                    |r| match r {
                        Ok(rep) => {
                            if args.json {
                                println!("{}", serde_json::to_string(rep).unwrap_or_default());
                            } else if rep.counters.read_salesforce + rep.counters.read_hubspot > 0 {
                                println!(
                                    "cycle: {} read, {} written, {} echoes, {} failed ({} ms)",
                                    rep.counters.read_salesforce + rep.counters.read_hubspot,
                                    rep.counters.created_hubspot
                                        + rep.counters.created_salesforce
                                        + rep.counters.updated_hubspot
                                        + rep.counters.updated_salesforce,
                                    rep.counters.echoes_suppressed,
                                    rep.counters.failed,
                                    rep.millis
                                );
                            }
                            reports.push(rep.clone());
                        }
                        Err(e) => {
                            eprintln!("cycle failed: {e}");
                            last_err = Some(e.to_string());
                        }
                    },
                    stop,
                )
                .await;
            let _ = last_err;
            r
        };
        if !args.dry_run {
            let _ = engine.release().await;
        }
        match outcome {
            Ok(()) => {
                if args.json {
                    let mut t = crate::store::RunCounters::default();
                    for r in &reports {
                        t.add(&r.counters);
                    }
                    println!("{}", serde_json::json!({"summary": t}));
                } else {
                    print_summary(&reports);
                }
                Ok(exit_for(&reports))
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitStatus::UsageError)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(record: &str, message: &str) -> FailureLine {
        FailureLine {
            pair: "account_company",
            record: record.to_string(),
            category: "validation",
            message: message.to_string(),
        }
    }

    #[test]
    fn failures_are_grouped_by_reason_the_largest_group_first() {
        let owner = "missing-owner: Salesforce user `005A` has no HubSpot owner";
        let stage = "unmapped-stage: `Won` in pipeline `Renewal`";
        let lines = [
            failure("salesforce:1", stage),
            failure("salesforce:2", owner),
            failure("salesforce:3", owner),
            failure("salesforce:4", owner),
            failure(
                "salesforce:5",
                "missing-owner: Salesforce user `005B` has no HubSpot owner",
            ),
        ];
        let refs: Vec<&FailureLine> = lines.iter().collect();
        let groups = failure_groups(&refs);
        let seen: Vec<(usize, &str, &str)> = groups
            .iter()
            .map(|g| (g.count, g.first.record.as_str(), g.first.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (3, "salesforce:2", owner),
                (1, "salesforce:1", stage),
                (1, "salesforce:5", lines[4].message.as_str()),
            ]
        );
        let other_pair = FailureLine {
            pair: "contact_contact",
            ..failure("salesforce:6", owner)
        };
        let refs = [&lines[1], &other_pair];
        assert_eq!(failure_groups(&refs).len(), 2, "a group is one pair's");
    }

    #[test]
    fn resync_values_parse_or_say_what_is_wrong() {
        assert_eq!(parse_resync("all"), Ok(Resync::All));
        assert_eq!(
            parse_resync("record:opportunity_deal:salesforce:006000000000001AAA"),
            Ok(Resync::Record {
                pair: ObjectPair::OpportunityDeal,
                side: Side::Salesforce,
                id: "006000000000001AAA".into()
            })
        );
        assert_eq!(
            parse_resync("filter:opportunity_deal:StageName = 'Closed Won'"),
            Ok(Resync::Filter {
                pair: ObjectPair::OpportunityDeal,
                soql_where: "StageName = 'Closed Won'".into()
            })
        );
        assert!(
            parse_resync("record:deals:salesforce:1")
                .unwrap_err()
                .contains("unknown object pair")
        );
        assert!(parse_resync("some").is_err());
    }
}
