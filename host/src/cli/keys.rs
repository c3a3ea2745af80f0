//! `dealbridge keys`: the operator's side of the connection key (`DEALBRIDGE_SECRET_KEY`)
//! and its rotation.
//!
//! - `keys generate` prints a fresh random key (64 hex characters).
//! - `keys reseal` seals every stored CRM connection again under the current key, opening
//!   each with the current or a previous key (`DEALBRIDGE_PREVIOUS_SECRET_KEYS`), so the
//!   previous keys can be retired ([`crate::api::reseal`]). `--dry-run` only counts.
//!
//! Exit codes: 0 when every connection is (or, in a dry run, can be) under the current
//! key; 1 when some connection cannot be opened with the keys given (they are listed,
//! by tenant, CRM and key id); 2 when the command cannot run (a missing or malformed key,
//! an unreachable store). Keys come from the environment only, never from arguments, and
//! are never printed back (only key ids).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{DatabaseArg, ExitStatus};
use crate::api::reseal::{ResealReport, reseal_all};
use crate::api::secrets::ConnectionCipher;
use crate::api::{PREVIOUS_SECRET_KEYS_ENV, SECRET_KEY_ENV, cipher_from_env};

/// `keys`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh random connection key (64 hex characters) for DEALBRIDGE_SECRET_KEY.
    Generate,
    /// Seal every stored CRM connection again under the current key.
    ///
    /// Opens each connection with DEALBRIDGE_SECRET_KEY or one of
    /// DEALBRIDGE_PREVIOUS_SECRET_KEYS (comma- or space-separated) and seals it with
    /// DEALBRIDGE_SECRET_KEY. Safe to run while the service runs, and again. Once it
    /// reports nothing left under another key, the previous keys can be retired.
    /// Exit status: 0 all connections are under the current key, 1 some could not be
    /// opened with the keys given, 2 the command could not run.
    Reseal(ResealArgs),
}

/// `keys reseal`
#[derive(Debug, Args)]
pub struct ResealArgs {
    #[command(flatten)]
    pub store: DatabaseArg,
    /// Count which key seals each connection and what would be resealed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `keys` command.
pub fn run(cmd: KeysCommand) -> Result<ExitStatus> {
    match cmd {
        KeysCommand::Generate => {
            println!("{}", ConnectionCipher::generate_key_text()?);
            Ok(ExitStatus::Success)
        }
        KeysCommand::Reseal(args) => reseal(args),
    }
}

fn reseal(args: ResealArgs) -> Result<ExitStatus> {
    let cipher = cipher_from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let report = rt.block_on(async {
        let store = crate::store::open(&args.store.database_url)
            .await
            .context("opening the store")?;
        reseal_all(store.as_ref(), &cipher, args.dry_run)
            .await
            .context("resealing the connections")
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.complete() {
        ExitStatus::Success
    } else {
        ExitStatus::Failures
    })
}

fn print_report(r: &ResealReport) {
    let verb = if r.dry_run {
        "would reseal"
    } else {
        "resealed"
    };
    println!(
        "{} connections of {} tenants; current key {}",
        r.connections, r.tenants, r.current_key_id
    );
    for (key_id, n) in &r.by_key_before {
        let which = if *key_id == r.current_key_id {
            "current"
        } else {
            "other"
        };
        println!("  sealed with {key_id} ({which}): {n}");
    }
    println!(
        "{verb} {}, already current {}, changed meanwhile {}, failed {}",
        r.resealed,
        r.already_current,
        r.changed_meanwhile,
        r.failed.len()
    );
    for f in &r.failed {
        println!(
            "  FAILED {} {} (key {}): {}",
            f.tenant, f.crm, f.key_id, f.error
        );
    }
    if !r.failed.is_empty() {
        println!(
            "add the missing keys to {PREVIOUS_SECRET_KEYS_ENV} and run again, or have those tenants put their connections again"
        );
    } else if !r.dry_run {
        println!(
            "every connection is sealed with {SECRET_KEY_ENV}'s key; keys in {PREVIOUS_SECRET_KEYS_ENV} can be retired"
        );
    }
}
