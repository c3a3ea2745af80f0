//! `dealbridge serve`: the multi-tenant JSON API ([`crate::api`]) on one address and the
//! scheduler that syncs the tenants ([`crate::service`]), with their state in SQLite
//! (default) or PostgreSQL (several replicas on one database), logs on stdout and a
//! graceful shutdown on Ctrl-C or SIGTERM: the API finishes its requests, the scheduler
//! stops taking tenants and lets runs finish within the grace period.
//!
//! Logs are JSON lines by default (`--log-format json`): `timestamp`, `level`, `target`,
//! `fields` (the event, e.g. `message`, `status`, `duration_ms`), `span` (the innermost
//! span's fields) and `spans` (every enclosing span, outermost first), so a request line
//! carries `route`, `method`, `tenant_id` and, on routes that name a run, `run_id`; a
//! sync run's lines carry `tenant_id` and `run_id`. `--log-format text` prints the same
//! events for people. `RUST_LOG` sets the filter (default `info`).
//!
//! Secrets come from the environment only (`DEALBRIDGE_OPERATOR_TOKEN`,
//! `DEALBRIDGE_SECRET_KEY`, `DEALBRIDGE_PREVIOUS_SECRET_KEYS`), never from arguments, so they never show in `ps` or
//! `--help`. This module must never log a secret or the database URL (it may hold a
//! password).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::{DatabaseArg, ExitStatus};
use crate::api::{self, ApiConfig, AppState, OPERATOR_TOKEN_ENV, cipher_from_env};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::service::{Scheduler, ServiceConfig, listen_to_replicas, replica_name};
use crate::store::Backend;

/// `serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0: any free port; the log says which).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: DatabaseArg,
    /// Cache compiled components in this directory.
    #[arg(long, value_name = "DIR", env = "DEALBRIDGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The largest component upload, in bytes.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub max_component_bytes: usize,
    /// The largest JSON request body, in bytes.
    #[arg(long, default_value_t = 2 << 20, value_name = "BYTES")]
    pub max_json_bytes: usize,
    /// Bytes of the memory a plugin invocation wrote that stay resident in its instance slot for
    /// the next invocation: more spares large batches page faults; each idle slot holds up to
    /// this much.
    #[arg(long, default_value_t = crate::runtime::DEFAULT_KEEP_RESIDENT_BYTES, value_name = "BYTES")]
    pub plugin_keep_resident_bytes: usize,
    /// Tenant syncs run at the same time by this replica (0: serve the API only).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub workers: usize,
    /// This replica's name as a tenant lease holder (default: `serve-<pid>-<random>`);
    /// must differ between replicas.
    #[arg(long, value_name = "NAME")]
    pub replica_id: Option<String>,
    /// Seconds a tenant's lease lasts without renewal: how soon another replica takes over
    /// the tenants of a replica that died.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub lease_ttl_secs: u64,
    /// The longest one tenant's run may take, in seconds; a run over it is stopped and the
    /// tenant backs off.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub run_budget_secs: u64,
    /// The longest wait between runs of a tenant whose runs keep failing, in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub max_backoff_secs: u64,
    /// Milliseconds an idle worker waits before looking for a due tenant again.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub idle_poll_ms: u64,
    /// Seconds runs going on may take to finish at shutdown before they are stopped.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_grace_secs: u64,
    /// Seconds a tenant token found valid is trusted without reading the store again (0:
    /// read it on every request). A revoke or disable is honoured at once by this replica
    /// and, on PostgreSQL, by every replica that hears its `NOTIFY`; this bounds what a
    /// missed notification costs.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub token_cache_ttl_secs: u64,
    /// The log format on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// How `serve` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
    /// Human-readable lines.
    Text,
}

impl ServeArgs {
    /// The plugin runtime's settings from the flags; the rest are the runtime's defaults.
    fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            cache_dir: self.cache_dir.clone(),
            max_component_bytes: self.max_component_bytes as u64,
            keep_resident_bytes: self.plugin_keep_resident_bytes,
            ..RuntimeConfig::default()
        }
    }

    /// The scheduler's settings, checked.
    fn service_config(&self) -> Result<ServiceConfig> {
        anyhow::ensure!(
            self.lease_ttl_secs >= 1 && self.run_budget_secs >= 1 && self.idle_poll_ms >= 1,
            "--lease-ttl-secs, --run-budget-secs and --idle-poll-ms must be at least 1"
        );
        let holder = match &self.replica_id {
            Some(id) => {
                anyhow::ensure!(
                    !id.trim().is_empty() && id.len() <= 200,
                    "--replica-id must be 1 to 200 characters"
                );
                id.clone()
            }
            None => replica_name(),
        };
        Ok(ServiceConfig {
            workers: self.workers,
            holder,
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
            idle_poll: Duration::from_millis(self.idle_poll_ms),
            run_budget: Duration::from_secs(self.run_budget_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            ..ServiceConfig::default()
        })
    }
}

/// Runs the service until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> Result<ExitStatus> {
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(serve(args))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
}

async fn serve(args: ServeArgs) -> Result<ExitStatus> {
    let operator = std::env::var(OPERATOR_TOKEN_ENV)
        .with_context(|| format!("{OPERATOR_TOKEN_ENV} must hold the operator token"))?;
    let cipher = cipher_from_env()?;
    anyhow::ensure!(
        args.max_component_bytes > 0 && args.max_json_bytes > 0,
        "size limits must be positive"
    );
    let service_config = args.service_config()?;
    let store = crate::store::open(&args.store.database_url)
        .await
        .context("opening the store")?;
    let runtime = Runtime::new(args.runtime_config())
        .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e}"))?;
    let config = ApiConfig {
        max_component_bytes: args.max_component_bytes,
        max_json_bytes: args.max_json_bytes,
        token_cache_ttl: Duration::from_secs(args.token_cache_ttl_secs),
        ..ApiConfig::default()
    };
    tracing::info!(key_id = %cipher.key_id(), previous_key_ids = ?cipher.previous_key_ids(), "connection keys");
    let state = AppState::with_cipher(Arc::clone(&store), runtime, &operator, cipher, config)?;
    drop(operator);
    // On PostgreSQL, what other replicas announce: a run asked for wakes an idle worker
    // here, a revoked token or disabled tenant is forgotten here at once. Listening
    // before serving, so nothing announced after the first request is missed.
    let listening = if store.backend() == Backend::Postgres {
        Some(
            listen_to_replicas(&args.store.database_url, state.clone())
                .await
                .context("listening to the other replicas (PostgreSQL LISTEN)")?,
        )
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(addr = %addr, backend = ?store.backend(), holder = %service_config.holder, "listening");
    let scheduler =
        (service_config.workers > 0).then(|| Scheduler::start(state.clone(), service_config));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
    }
    // The scheduler stops at the signal, while the API finishes its requests.
    let scheduler_done = scheduler.map(|s| {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            stopped(stopping).await;
            s.shutdown().await;
        })
    });
    let served = api::serve(listener, state, stopped(stopping)).await;
    let _ = stop.send(true);
    if let Some(done) = scheduler_done {
        let _ = done.await;
    }
    if let Some(listening) = listening {
        listening.abort();
    }
    served.context("serving")?;
    tracing::info!("stopped");
    Ok(ExitStatus::Success)
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Wrap::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn the_plugin_flags_reach_the_runtime_config() {
        let defaults = parse(&[]).runtime_config();
        assert_eq!(
            defaults.keep_resident_bytes,
            crate::runtime::DEFAULT_KEEP_RESIDENT_BYTES
        );
        assert_eq!(defaults.max_component_bytes, 16 << 20);
        let set = parse(&[
            "--plugin-keep-resident-bytes",
            "65536",
            "--max-component-bytes",
            "1000",
            "--cache-dir",
            "/var/cache/dealbridge",
        ])
        .runtime_config();
        assert_eq!(set.keep_resident_bytes, 65536);
        assert_eq!(set.max_component_bytes, 1000);
        assert_eq!(
            set.cache_dir.as_deref(),
            Some(std::path::Path::new("/var/cache/dealbridge"))
        );
        let runtime_defaults = RuntimeConfig::default();
        assert_eq!(
            set.max_concurrent_instances,
            runtime_defaults.max_concurrent_instances
        );
    }
}
