//! The Salesforce REST API client (one API version, default `v62.0`).
//!
//! - [`client`]: [`SalesforceClient`] and its configuration: OAuth, SOQL paging,
//!   updated/deleted, sObject CRUD and collections, describe and metadata queries.
//! - [`types`]: the wire types (rows, pages, save results, describe) and pure helpers
//!   (`Sforce-Limit-Info`, datetimes, 18-character ids, SOQL quoting).
//! - [`errors`]: [`SalesforceError`] and the mapping of Salesforce codes to
//!   [`ErrorClass`](crate::crm::ErrorClass).
//!
//! Generic over sObject types: every call takes the sObject name (`Opportunity`, `Account`,
//! `Contact`, `OpportunityContactRole`...). This module must never hold sync policy.

pub mod client;
pub mod errors;
pub mod types;

pub use client::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
pub use errors::SalesforceError;
pub use types::{Fields, QueryPage, QueryScope, SObject, SaveResult};
