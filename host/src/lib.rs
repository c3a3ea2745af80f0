//! dealbridge: keeps Salesforce Opportunities and HubSpot deals in sync both ways,
//! with the sync policy supplied by a tenant's WebAssembly component.
//!
//! The host owns the mechanism; the plugin owns the policy. See `ARCHITECTURE.md`
//! at the repository root for the bird's-eye view and the invariants.
//!
//! - [`runtime`]: the wasmtime sandbox that runs rules components, with limits,
//!   the compile cache and the guest's capabilities (`crm`, `log`, `config`).
//! - [`crm`]: the Salesforce and HubSpot clients, their rate governors and budgets.
//! - [`api`]: the multi-tenant HTTP service (`dealbridge serve`).
//! - [`cli`]: the subcommands of the `dealbridge` binary.
//! - [`service`]: the scheduler inside `dealbridge serve` (leases due tenants, runs their
//!   engines from stored connections and plugins, across replicas).
//! - [`store`]: durable state (links, snapshots, checkpoints, errors, runs, leases,
//!   tenants, plugin versions) on SQLite or PostgreSQL.
//! - [`sync`]: the sync engine (capture → plan → apply → commit), set-up and checks.
//! - [`telemetry`]: process-wide Prometheus metrics (CRM calls, plugin invocations,
//!   runs, records, errors, API requests), served at `/metrics`.

pub mod api;
pub mod cli;
pub mod crm;
pub mod runtime;
pub mod service;
pub mod store;
pub mod sync;
pub mod telemetry;
