//! Clients for the two CRMs (Salesforce and HubSpot), their rate governors and budgets.
//!
//! This module owns every byte dealbridge sends to a CRM. The sync engine calls these
//! clients; it never builds CRM requests itself. Both CRM folders have the same files
//! (`client.rs`, `types.rs`, `errors.rs`, `mod.rs`) so that they read alike:
//!
//! - [`salesforce`]: OAuth (password, client credentials, refresh token) with one refresh
//!   and retry on `INVALID_SESSION_ID`; SOQL paging; updated/deleted; sObject collections;
//!   describe and metadata queries; the `Sforce-Limit-Info` budget.
//! - [`hubspot`]: objects, batch calls with per-input results, a keyset change scan that
//!   never reaches the 10,000-result search cap, associations v4, pipelines, owners,
//!   properties; token buckets for the 10-second window, search and the daily cap.
//! - [`governor`]: the deterministic building blocks of rate limiting and retrying (token
//!   buckets, daily cap, Salesforce budget, jittered backoff). Time is always passed in.
//! - [`metrics`]: per-client call counters (by endpoint kind and status) for the engine and
//!   the benchmarks.
//! - [`transport`]: the shared HTTP plumbing (rustls with a custom CA, timeouts, retry
//!   policy) and [`Secret`], the redacting wrapper every credential lives in.
//!
//! Every error of both clients maps to one [`ErrorClass`], the sync-health category the
//! engine shows to users.
//!
//! This module must never log a credential or a token (they live in [`Secret`], whose
//! `Debug` redacts), never retry a 4xx other than a 401 refresh and a 429, never retry a
//! non-idempotent write after the request may have reached the server (that would make a
//! duplicate), and never page a HubSpot search past the 10,000-result cap.

mod error_class;
pub mod governor;
pub mod hubspot;
pub mod metrics;
pub mod salesforce;
pub mod transport;

pub use error_class::ErrorClass;
pub use metrics::{CrmMetrics, MetricsSnapshot};
pub use transport::{RetryPolicy, Secret, TransportOptions};
