//! The sync engine: one cycle reads as its stages, **capture → plan → apply → commit**,
//! run per object pair in dependency order (accounts ↔ companies and contacts ↔ contacts
//! first, then opportunities ↔ deals, then roles ↔ associations).
//!
//! - [`config`]: the tenant's `tenant.toml`.
//! - [`values`]: CRM wire values ↔ the contract's typed values; money stays exact.
//! - [`setup`]: preconditions (permissions, cross-reference keys, pipelines, owners) and
//!   the field tables of each object pair.
//! - [`capture`]: what changed on each side since the checkpoint, with `(time, id)` cursors.
//! - [`plan`]: record pairs with links, snapshots and echo-free change lists; the plugin
//!   calls (condition, plan), a fresh instance per batch.
//! - [`apply`]: batched upserts keyed on cross-reference ids, per-record failures split out.
//! - [`associations`]: deal ↔ company / contact associations and contact roles.
//! - [`commit`]: links, snapshots, history and checkpoints of acknowledged writes.
//! - [`engine`]: the cycle, the poll loop, resync, dry run and the crash-test fault point.
//! - [`start`]: an engine from a `tenant.toml`, and `assemble`, the part shared with the
//!   service (clients, set-up, the engine under a lease taken or given).
//! - [`webhook_receiver`]: the HubSpot webhook receiver, which stores the changes other
//!   users and apps made (the change feed) and wakes the engine.
//!
//! What this module must never do: mark a record synced before the CRM acknowledged it;
//! create a record other than keyed on a unique cross-reference value (an upsert, a
//! HubSpot create that sets the unique property, or an update by a linked id); send a
//! change back that it wrote itself (echo); let one record's failure stop its batch;
//! apply an exchange rate; hold every record of a backfill in memory (an opportunity
//! backfill holds every contact role's ids, a small fraction of it).

pub mod apply;
pub mod associations;
pub mod capture;
pub mod commit;
pub mod config;
pub mod engine;
mod error;
pub mod plan;
pub mod setup;
pub mod start;
pub mod values;
pub mod webhook_receiver;

pub use config::TenantConfig;
pub use engine::{CycleReport, Engine, EngineOptions, FaultPoint, Resync};
pub use error::SyncError;
