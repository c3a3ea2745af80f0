//! Applying planned writes: batched upserts keyed on cross-reference ids (HubSpot
//! `batch/upsert` on the unique property that holds the Salesforce id, 100 a call;
//! Salesforce collections upsert on the external-id field that holds the HubSpot id, 200
//! a call), and batched updates by linked id. Into a portal known to hold none of the
//! records (a backfill's first look), HubSpot records are created by `batch/create` with
//! their associations in the same call, still keyed on the unique property (HubSpot refuses
//! a second record with one Salesforce id; whatever the create did not acknowledge is
//! upserted).
//!
//! Every input gets its own result. A whole call refused for one bad input (HubSpot
//! answers some validation errors for the whole batch) is split in halves and retried
//! until the bad input stands alone, so a record's failure never blocks its batch.
//! Failures carry the CRM's error class for the sync-health view.
//!
//! This module must never create a record other than keyed on a cross-reference value
//! the CRM holds unique (an upsert, or a HubSpot create that sets the unique property),
//! and never report a write as done that the CRM did not acknowledge.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value as Json;

use crate::crm::ErrorClass;
use crate::crm::hubspot::types::{AssociationSpec, CreateInput, UpdateInput};
use crate::crm::hubspot::{HsObject, HubSpotClient, HubSpotError};
use crate::crm::salesforce::types::Fields;
use crate::crm::salesforce::{SalesforceClient, SalesforceError};
use crate::store::ErrorCategory;

/// Why one input failed.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteFailure {
    /// The CRM's class of the error.
    pub class: ErrorClass,
    /// The vendor's message (with its code).
    pub message: String,
}

impl WriteFailure {
    /// The sync-health group of the failure.
    pub fn category(&self) -> ErrorCategory {
        category_of(self.class)
    }
}

/// The sync-health group of a CRM error class.
pub fn category_of(class: ErrorClass) -> ErrorCategory {
    match class {
        ErrorClass::Validation | ErrorClass::BadRequest => ErrorCategory::Validation,
        ErrorClass::Duplicate => ErrorCategory::Duplicate,
        ErrorClass::Permission | ErrorClass::Auth => ErrorCategory::Permission,
        ErrorClass::PicklistMismatch => ErrorCategory::PicklistMismatch,
        ErrorClass::RateLimit => ErrorCategory::RateLimit,
        ErrorClass::Transient | ErrorClass::RolledBack => ErrorCategory::CrmUnavailable,
        ErrorClass::NotFound | ErrorClass::Other => ErrorCategory::Other,
    }
}

/// How a HubSpot batch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsMode<'a> {
    /// `batch/upsert` keyed on this unique property.
    Upsert(&'a str),
    /// `batch/update` by record id.
    Update,
}

/// One result per input, in input order.
pub type HsResults = Vec<Result<HsObject, WriteFailure>>;

/// One answer per Salesforce input, in input order.
pub type SfResults = Vec<Result<SfAck, WriteFailure>>;

fn hs_failure(e: &HubSpotError) -> WriteFailure {
    WriteFailure {
        class: e.class(),
        message: e.to_string(),
    }
}

/// Writes HubSpot inputs, splitting a refused call until every input has its own answer.
pub fn hs_write<'a>(
    hs: &'a HubSpotClient,
    object: &'a str,
    mode: HsMode<'a>,
    inputs: &'a [UpdateInput],
) -> Pin<Box<dyn Future<Output = HsResults> + Send + 'a>> {
    Box::pin(async move {
        if inputs.is_empty() {
            return Vec::new();
        }
        let r = match mode {
            HsMode::Upsert(p) => hs.batch_upsert(object, p, inputs).await,
            HsMode::Update => hs.batch_update(object, inputs, None).await,
        };
        match r {
            Ok(outcome) => {
                let mut out: HsResults = outcome
                    .items
                    .into_iter()
                    .map(|i| {
                        i.map_err(|e| WriteFailure {
                            class: e.class(),
                            message: e.message().to_string(),
                        })
                    })
                    .collect();
                out.resize(
                    inputs.len(),
                    Err(WriteFailure {
                        class: ErrorClass::Other,
                        message: "HubSpot gave no result for this input".into(),
                    }),
                );
                out
            }
            Err(e) if inputs.len() > 1 && !e.class().is_retryable() && e.status().is_some() => {
                let mid = inputs.len() / 2;
                let mut a = hs_write(hs, object, mode, &inputs[..mid]).await;
                a.extend(hs_write(hs, object, mode, &inputs[mid..]).await);
                a
            }
            Err(e) => vec![Err(hs_failure(&e)); inputs.len()],
        }
    })
}

/// A record to create in HubSpot: its upsert input (the cross-reference value as the id,
/// the properties carrying it too) and the associations to create with it.
#[derive(Debug, Clone)]
pub struct HsNew {
    /// The upsert form of the record.
    pub input: UpdateInput,
    /// Associations created in the same call.
    pub associations: Vec<AssociationSpec>,
    /// Properties only the create sets: what holds for a new record but must not overwrite
    /// an existing one (a contact's lifecycle stage). The upsert of an unacknowledged
    /// create leaves them out.
    pub create_only: crate::crm::hubspot::Properties,
}

/// What became of one [`HsNew`]: the record (or why not) and whether its associations were
/// created with it.
pub type HsNewResult = (Result<HsObject, WriteFailure>, bool);

/// Creates records in HubSpot with their associations (batch create, 100 a call), for a
/// portal known to hold none of them. Each carries its cross-reference value in the unique
/// property `xref`, so HubSpot refuses a record whose Salesforce id another record holds:
/// a create cannot duplicate. Every input the create did not acknowledge (a conflict, a
/// refused call, a lost answer) is written again by the upsert on `xref`, without its
/// associations and its create-only properties; one result per input, in order (the flag
/// is true when the create itself was acknowledged).
pub async fn hs_create(
    hs: &HubSpotClient,
    object: &str,
    xref: &str,
    news: &[HsNew],
) -> Vec<HsNewResult> {
    let mut out: Vec<Option<HsNewResult>> = vec![None; news.len()];
    for (c, chunk) in news
        .chunks(crate::crm::hubspot::client::BATCH_LIMIT)
        .enumerate()
    {
        let inputs: Vec<CreateInput> = chunk
            .iter()
            .map(|n| {
                let mut properties = n.input.properties.clone();
                properties.extend(n.create_only.clone());
                CreateInput {
                    properties,
                    associations: n.associations.clone(),
                }
            })
            .collect();
        if let Ok(outcome) = hs.batch_create_keyed(object, xref, &inputs).await {
            let base = c * crate::crm::hubspot::client::BATCH_LIMIT;
            for (i, item) in outcome.items.into_iter().enumerate() {
                if let Ok(o) = item {
                    out[base + i] = Some((Ok(o), true));
                }
            }
        }
    }
    let open: Vec<usize> = (0..news.len()).filter(|i| out[*i].is_none()).collect();
    if !open.is_empty() {
        let upserts: Vec<UpdateInput> = open.iter().map(|i| news[*i].input.clone()).collect();
        let res = hs_write(hs, object, HsMode::Upsert(xref), &upserts).await;
        for (i, r) in open.into_iter().zip(res) {
            out[i] = Some((r, false));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                (
                    Err(WriteFailure {
                        class: ErrorClass::Other,
                        message: "HubSpot gave no result for this input".into(),
                    }),
                    false,
                )
            })
        })
        .collect()
}

/// How a Salesforce batch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfMode<'a> {
    /// Collections upsert on this external-id field (every record carries it).
    Upsert(&'a str),
    /// Collections update by id.
    Update,
}

/// A Salesforce input: the id (updates) and the fields.
#[derive(Debug, Clone)]
pub struct SfInput {
    /// The record id (updates only).
    pub id: Option<String>,
    /// The fields to write.
    pub fields: Fields,
}

/// What Salesforce acknowledged for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct SfAck {
    /// The record id.
    pub id: String,
    /// Whether the record was created.
    pub created: bool,
}

fn sf_failure(e: &SalesforceError) -> WriteFailure {
    WriteFailure {
        class: e.class(),
        message: e.to_string(),
    }
}

/// Writes Salesforce inputs (`allOrNone: false`: one result per record), splitting a
/// refused call until every input has its own answer.
pub fn sf_write<'a>(
    sf: &'a SalesforceClient,
    sobject: &'a str,
    mode: SfMode<'a>,
    inputs: &'a [SfInput],
) -> Pin<Box<dyn Future<Output = SfResults> + Send + 'a>> {
    Box::pin(async move {
        if inputs.is_empty() {
            return Vec::new();
        }
        let r = match mode {
            SfMode::Upsert(ext) => {
                let recs: Vec<Fields> = inputs.iter().map(|i| i.fields.clone()).collect();
                sf.upsert_many(sobject, ext, &recs, false).await
            }
            SfMode::Update => {
                let recs: Vec<(String, Fields)> = inputs
                    .iter()
                    .map(|i| (i.id.clone().unwrap_or_default(), i.fields.clone()))
                    .collect();
                sf.update_many(sobject, &recs, false).await
            }
        };
        match r {
            Ok(results) => results
                .into_iter()
                .zip(inputs)
                .map(|(r, input)| {
                    if r.success {
                        Ok(SfAck {
                            id: r.id.or(input.id.clone()).unwrap_or_default(),
                            created: r.created.unwrap_or(false),
                        })
                    } else {
                        let first = r.errors.first();
                        Err(WriteFailure {
                            class: r.error_class().unwrap_or(ErrorClass::Other),
                            message: first
                                .map(|e| {
                                    format!(
                                        "{}: {}{}",
                                        e.status_code,
                                        e.message,
                                        if e.fields.is_empty() {
                                            String::new()
                                        } else {
                                            format!(" ({})", e.fields.join(", "))
                                        }
                                    )
                                })
                                .unwrap_or_else(|| {
                                    "Salesforce refused the record without a reason".into()
                                }),
                        })
                    }
                })
                .collect(),
            Err(e) if inputs.len() > 1 && !e.class().is_retryable() && e.status().is_some() => {
                let mid = inputs.len() / 2;
                let mut a = sf_write(sf, sobject, mode, &inputs[..mid]).await;
                a.extend(sf_write(sf, sobject, mode, &inputs[mid..]).await);
                a
            }
            Err(e) => vec![Err(sf_failure(&e)); inputs.len()],
        }
    })
}

/// A HubSpot property map from JSON-free pairs.
pub fn hs_props(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> crate::crm::hubspot::Properties {
    pairs.into_iter().collect()
}

/// Salesforce fields from pairs.
pub fn sf_fields(pairs: impl IntoIterator<Item = (String, Json)>) -> Fields {
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_class_has_a_health_group() {
        assert_eq!(
            category_of(ErrorClass::Validation),
            ErrorCategory::Validation
        );
        assert_eq!(
            category_of(ErrorClass::PicklistMismatch),
            ErrorCategory::PicklistMismatch
        );
        assert_eq!(category_of(ErrorClass::RateLimit), ErrorCategory::RateLimit);
        assert_eq!(
            category_of(ErrorClass::Transient),
            ErrorCategory::CrmUnavailable
        );
        assert_eq!(category_of(ErrorClass::Duplicate), ErrorCategory::Duplicate);
        assert_eq!(category_of(ErrorClass::Auth), ErrorCategory::Permission);
    }
}
