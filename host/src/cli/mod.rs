//! The subcommands of the `dealbridge` binary.
//!
//! Each subcommand lives in its own module and owns its arguments. Exit codes
//! (see [`ExitStatus`]) mean the same thing everywhere.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod bench_service;
pub mod demo;
pub mod emulate;
pub mod keys;
pub mod plugin;
pub mod serve;
pub mod sync;

/// The store a service command works on (`serve`, `keys reseal`).
#[derive(Debug, clap::Args)]
pub struct DatabaseArg {
    /// The store: `sqlite://FILE?mode=rwc` or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        default_value = "sqlite://dealbridge.db?mode=rwc",
        env = "DEALBRIDGE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: String,
}

/// What a finished command tells the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success = 0,
    /// The work ran but found failures (failing rule tests, records that did not sync).
    Failures = 1,
    /// The command could not run: bad arguments, bad config, unusable input.
    UsageError = 2,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

/// dealbridge keeps Salesforce Opportunities and HubSpot deals in sync both ways,
/// with sync rules supplied as WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "dealbridge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, run and test rules components locally.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run local Salesforce and HubSpot emulators.
    Emulate(emulate::EmulateArgs),
    /// Sync one tenant's Salesforce and HubSpot (backfill, then polling).
    Sync(sync::SyncArgs),
    /// The end-to-end demo against in-process emulators.
    Demo(demo::DemoArgs),
    /// Serve the multi-tenant JSON API (OpenAPI at /openapi.json).
    Serve(serve::ServeArgs),
    /// The connection key: generate one, reseal stored connections after a rotation.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Benchmarks against in-process emulators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Emulate(args) => emulate::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match outcome {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitStatus::UsageError.into()
        }
    }
}
