//! The HubSpot CRM API client (v3 objects, search, pipelines, properties, owners; v4
//! associations) for a private app's Bearer token.
//!
//! - [`client`]: [`HubSpotClient`] and its configuration, the request loop with the
//!   governor, batch calls with per-input outcomes and the keyset change scan.
//! - [`types`]: the wire types (records, batches, search, scan cursor, associations,
//!   pipelines, owners, properties).
//! - [`webhooks`]: webhook deliveries: the v3 signature check and the events, the change
//!   feed that tells the app's own writes from other people's.
//! - [`errors`]: [`HubSpotError`], [`BatchError`] and the mapping of HubSpot categories to
//!   [`ErrorClass`](crate::crm::ErrorClass).
//!
//! Generic over object types: every call takes the object type (`deals`, `companies`,
//! `contacts`...). This module must never hold sync policy.

pub mod client;
pub mod errors;
pub mod types;
pub mod webhooks;

pub use client::{HubSpotClient, HubSpotConfig};
pub use errors::{BatchError, HubSpotError};
pub use types::{
    BatchOutcome, HsObject, Properties, ScanCursor, ScanPage, ScanRequest, TokenInfo, UpdateInput,
    WebhookSettings, WebhookSubscription,
};
pub use webhooks::{
    ChangeEvent, ChangeKind, ParsedDelivery, WebhookRejection, parse_delivery, parse_events,
    sign_v3, verify_signature_v3,
};
