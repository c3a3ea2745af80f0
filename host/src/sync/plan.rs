//! Planning: record pairs as the plugin sees them, and the plugin calls.
//!
//! A [`Work`] item is one pair being synced in a batch: both sides' current values (by
//! field position), its link and last-synced snapshot, and the fields that changed on each
//! side since that snapshot. A value equal to the snapshot's is not a change, which is
//! how the echoes of our own writes are removed before the plugin sees anything; formula
//! fields never count as changed. [`batch`] builds the contract's `Batch` (field tables
//! once per batch, values by position) and [`call_plugin`] runs the sync condition and the
//! plan, each in a fresh instance.
//!
//! This module decides nothing about who wins (that is the plugin's) and must never write
//! to a CRM or the store.

use std::sync::Arc;

use super::setup::{PairSchema, Setup};
use super::values::{self, FieldKind, ValueError};
use crate::crm::hubspot::HsObject;
use crate::crm::salesforce::SObject;
use crate::runtime::{
    Batch, CrmGateway, CrmRecord, Direction, FieldValue, Inclusion, Invocation, InvokeError,
    LoadedPlugin, Lookups, PairAssociations, PairOutcome, RecordPair, Related, RunReport, Snapshot,
    Trigger, Value,
};
use crate::store::{self, Link};

/// One side of a pair: the record's id, modification time and values by field position.
#[derive(Debug, Clone)]
pub struct SideRecord {
    /// The record id.
    pub id: String,
    /// Its own CRM's modification time (ms).
    pub modified_at: i64,
    /// Values by position in the side's field table.
    pub values: Vec<Value>,
}

/// One pair being synced.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// The Salesforce record, when it exists (or was read).
    pub sf: Option<SideRecord>,
    /// The HubSpot record, when it exists.
    pub hs: Option<SideRecord>,
    /// The Salesforce record's external-id value (a HubSpot id).
    pub sf_ext: Option<String>,
    /// The HubSpot record's cross-reference value (a Salesforce id).
    pub hs_xref: Option<String>,
    /// Salesforce `AccountId` (opportunities).
    pub account_id: Option<String>,
    /// The HubSpot id the pair is linked (or matched) to when the record was not read.
    pub hs_id_hint: Option<String>,
    /// The Salesforce id the pair is linked (or matched) to when the record was not read.
    pub sf_id_hint: Option<String>,
    /// The committed link, if any.
    pub link: Option<Link>,
    /// The last-synced snapshot, if any.
    pub snapshot: Option<store::Snapshot>,
    /// Changed Salesforce fields (positions), echoes removed.
    pub sf_changed: Vec<u32>,
    /// Changed HubSpot fields (positions), echoes removed.
    pub hs_changed: Vec<u32>,
    /// The source record's modification stamp (history de-duplication).
    pub source_version: String,
    /// The pair's associations (opportunities).
    pub assoc: PairAssociations,
    /// The linked HubSpot record is archived or gone.
    pub hs_gone: bool,
}

impl Work {
    /// The Salesforce id, from the record, the link or a match.
    pub fn sf_id(&self) -> Option<&str> {
        self.sf
            .as_ref()
            .map(|r| r.id.as_str())
            .or(self.link.as_ref().map(|l| l.salesforce_id.as_str()))
            .or(self.sf_id_hint.as_deref())
            .or(self.hs_xref.as_deref())
    }

    /// The HubSpot id, from the record, the link or a match.
    pub fn hs_id(&self) -> Option<&str> {
        self.hs
            .as_ref()
            .map(|r| r.id.as_str())
            .or(self.link.as_ref().map(|l| l.hubspot_id.as_str()))
            .or(self.hs_id_hint.as_deref())
            .or(self.sf_ext.as_deref())
    }
}

/// Empty associations.
pub fn no_associations() -> PairAssociations {
    PairAssociations {
        salesforce: Vec::new(),
        hubspot: Vec::new(),
    }
}

impl Default for PairAssociations {
    fn default() -> Self {
        no_associations()
    }
}

/// The Salesforce side of a row.
pub fn sf_side(schema: &PairSchema, row: &SObject) -> Result<SideRecord, (String, ValueError)> {
    let id = row.id().unwrap_or_default().to_string();
    let modified_at = row
        .str_field("LastModifiedDate")
        .or(row.str_field("SystemModstamp"))
        .and_then(values::parse_time_ms)
        .unwrap_or(0);
    let mut vals = Vec::with_capacity(schema.sf_fields.len());
    for (name, kind) in schema.sf_fields.iter().zip(&schema.sf_kinds) {
        let v = row.fields.get(name).unwrap_or(&serde_json::Value::Null);
        vals.push(values::from_salesforce(v, *kind).map_err(|e| (name.clone(), e))?);
    }
    Ok(SideRecord {
        id,
        modified_at,
        values: vals,
    })
}

/// The HubSpot side of a record.
pub fn hs_side(schema: &PairSchema, obj: &HsObject) -> Result<SideRecord, (String, ValueError)> {
    let modified_at = obj
        .prop(schema.spec.hs_modified)
        .and_then(values::parse_time_ms)
        .or_else(|| obj.updated_at.as_deref().and_then(values::parse_time_ms))
        .unwrap_or(0);
    let mut vals = Vec::with_capacity(schema.hs_fields.len());
    for (name, kind) in schema.hs_fields.iter().zip(&schema.hs_kinds) {
        vals.push(values::from_hubspot(obj.prop(name), *kind).map_err(|e| (name.clone(), e))?);
    }
    Ok(SideRecord {
        id: obj.id.clone(),
        modified_at,
        values: vals,
    })
}

fn changed(
    fields: &[String],
    current: &[Value],
    snap: &std::collections::BTreeMap<String, serde_json::Value>,
    skip: &[bool],
) -> Vec<u32> {
    let null = serde_json::Value::Null;
    fields
        .iter()
        .zip(current)
        .enumerate()
        .filter(|(i, (name, v))| {
            !skip.get(*i).copied().unwrap_or(false)
                && values::canonical_json(v) != *snap.get(*name).unwrap_or(&null)
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// Fills the change lists from the snapshot (nothing counts as changed without one: a
/// pair that never synced is decided by the rules' first-link behaviour).
pub fn compute_changes(schema: &PairSchema, w: &mut Work) {
    w.sf_changed.clear();
    w.hs_changed.clear();
    let Some(snap) = &w.snapshot else { return };
    if let Some(sf) = &w.sf {
        w.sf_changed = changed(
            &schema.sf_fields,
            &sf.values,
            &snap.salesforce,
            &schema.sf_calculated,
        );
    }
    if let Some(hs) = &w.hs {
        w.hs_changed = changed(&schema.hs_fields, &hs.values, &snap.hubspot, &[]);
    }
}

/// True when a linked, synced pair has no change on either side: an echo or a re-read.
pub fn is_settled(w: &Work) -> bool {
    w.link.is_some() && w.snapshot.is_some() && w.sf_changed.is_empty() && w.hs_changed.is_empty()
}

fn record(side: &SideRecord) -> CrmRecord {
    CrmRecord {
        id: side.id.clone(),
        modified_at: side.modified_at,
        fields: side
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(i, v)| FieldValue {
                field: i as u32,
                value: v.clone(),
            })
            .collect(),
    }
}

fn snapshot_view(schema: &PairSchema, s: &store::Snapshot) -> Snapshot {
    let side = |fields: &[String],
                kinds: &[FieldKind],
                m: &std::collections::BTreeMap<String, serde_json::Value>| {
        fields
            .iter()
            .zip(kinds)
            .enumerate()
            .filter_map(|(i, (f, k))| {
                m.get(f).filter(|v| !v.is_null()).map(|v| FieldValue {
                    field: i as u32,
                    value: values::from_canonical(v, *k),
                })
            })
            .collect()
    };
    Snapshot {
        salesforce: side(&schema.sf_fields, &schema.sf_kinds, &s.salesforce),
        hubspot: side(&schema.hs_fields, &schema.hs_kinds, &s.hubspot),
        synced_at: s.synced_at_ms,
    }
}

/// The contract's view of a pair.
pub fn record_pair(schema: &PairSchema, w: &Work) -> RecordPair {
    RecordPair {
        salesforce: w.sf.as_ref().map(record),
        hubspot: w.hs.as_ref().filter(|_| !w.hs_gone).map(record),
        snapshot: w.snapshot.as_ref().map(|s| snapshot_view(schema, s)),
        salesforce_changed: w.sf_changed.clone(),
        hubspot_changed: w.hs_changed.clone(),
        associations: PairAssociations {
            salesforce: w.assoc.salesforce.clone(),
            hubspot: w.assoc.hubspot.clone(),
        },
    }
}

/// A batch of pairs for the plugin.
pub fn batch(
    schema: &PairSchema,
    setup: &Setup,
    direction: Direction,
    trigger: Trigger,
    pairs: Vec<RecordPair>,
) -> Batch {
    let opp = schema.spec.pair == store::ObjectPair::OpportunityDeal;
    Batch {
        object_pair: schema.spec.wit(),
        direction,
        trigger,
        salesforce_fields: schema.sf_fields.clone(),
        hubspot_fields: schema.hs_fields.clone(),
        pairs,
        lookups: Lookups {
            owners: setup.owners.clone(),
            pipelines: if opp {
                setup.pipelines.clone()
            } else {
                Vec::new()
            },
        },
    }
}

/// What the plugin decided for a batch, with its run reports.
pub struct Planned {
    /// One outcome per pair of the batch, in order; `None` where the condition excluded
    /// the pair (with the reason).
    pub outcomes: Vec<Result<PairOutcome, String>>,
    /// The reports of the two invocations.
    pub reports: Vec<RunReport>,
}

/// Runs the sync condition, then the plan of the included pairs, each in a fresh instance.
pub async fn call_plugin(
    plugin: &LoadedPlugin,
    config: &serde_json::Value,
    gateway: Arc<dyn CrmGateway>,
    mut batch: Batch,
) -> Result<Planned, InvokeError> {
    let inv = Invocation::new(Default::default(), config, gateway)?;
    let cond = plugin.condition(&inv, &batch).await;
    let mut reports = vec![cond.report];
    let inclusions = cond.result?;
    if inclusions.len() != batch.pairs.len() {
        return Err(InvokeError::Input(format!(
            "the plugin's condition returned {} inclusions for {} pairs",
            inclusions.len(),
            batch.pairs.len()
        )));
    }
    let mut outcomes: Vec<Result<PairOutcome, String>> = Vec::with_capacity(inclusions.len());
    let mut keep = Vec::with_capacity(inclusions.len());
    for inc in inclusions {
        match inc {
            Inclusion::Include => {
                keep.push(true);
                outcomes.push(Err(String::new()));
            }
            Inclusion::Exclude(reason) => {
                keep.push(false);
                outcomes.push(Err(reason));
            }
        }
    }
    let mut i = 0;
    batch.pairs.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
    if !batch.pairs.is_empty() {
        let planned = plugin.plan(&inv, &batch).await;
        reports.push(planned.report);
        let planned = planned.result?;
        if planned.len() != batch.pairs.len() {
            return Err(InvokeError::Input(format!(
                "the plugin's plan returned {} outcomes for {} pairs",
                planned.len(),
                batch.pairs.len()
            )));
        }
        let mut it = planned.into_iter();
        for (slot, k) in outcomes.iter_mut().zip(&keep) {
            if *k {
                *slot = Ok(it.next().expect("counted above"));
            }
        }
    }
    Ok(Planned { outcomes, reports })
}

/// The snapshot after a sync: each side's values with the acknowledged writes applied.
pub fn snapshot_after(
    schema: &PairSchema,
    sf: &[Value],
    hs: &[Value],
    now_ms: i64,
) -> store::Snapshot {
    store::Snapshot {
        salesforce: schema
            .sf_fields
            .iter()
            .zip(sf)
            .map(|(f, v)| (f.clone(), values::canonical_json(v)))
            .collect(),
        hubspot: schema
            .hs_fields
            .iter()
            .zip(hs)
            .map(|(f, v)| (f.clone(), values::canonical_json(v)))
            .collect(),
        synced_at_ms: now_ms,
    }
}

/// A related record, for association lists.
pub fn related(
    kind: crate::runtime::RelatedKind,
    sf: Option<String>,
    hs: Option<String>,
    role: Option<String>,
    primary: bool,
) -> Related {
    Related {
        kind,
        salesforce_id: sf,
        hubspot_id: hs,
        role,
        primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Decimal;
    use crate::sync::setup::{PAIRS, PairSpec};

    fn schema() -> PairSchema {
        PairSchema {
            spec: PairSpec::of(store::ObjectPair::OpportunityDeal),
            sf_fields: vec!["Name".into(), "Amount".into(), "Formula__c".into()],
            sf_kinds: vec![FieldKind::Text, FieldKind::Decimal, FieldKind::Text],
            sf_calculated: vec![false, false, true],
            hs_fields: vec!["dealname".into(), "amount".into()],
            hs_kinds: vec![FieldKind::Text, FieldKind::Decimal],
            sf_writable: Default::default(),
            hs_writable: Default::default(),
        }
    }

    #[test]
    fn a_value_equal_to_the_snapshot_is_not_a_change() {
        let _ = PAIRS;
        let s = schema();
        let sf = vec![
            Value::Text("A".into()),
            Value::Decimal(Decimal {
                digits: 100000,
                scale: 2,
            }),
            Value::Text("f1".into()),
        ];
        let hs = vec![
            Value::Text("A".into()),
            Value::Decimal(Decimal {
                digits: 1000,
                scale: 0,
            }),
        ];
        let snap = snapshot_after(&s, &sf, &hs, 1);
        let mut w = Work {
            sf: Some(SideRecord {
                id: "006".into(),
                modified_at: 2,
                values: sf.clone(),
            }),
            hs: Some(SideRecord {
                id: "1".into(),
                modified_at: 2,
                values: hs,
            }),
            snapshot: Some(snap),
            ..Work::default()
        };
        compute_changes(&s, &mut w);
        assert!(w.sf_changed.is_empty() && w.hs_changed.is_empty());
        // The HubSpot amount changes; the formula changes too but never counts.
        w.hs.as_mut().unwrap().values[1] = Value::Decimal(Decimal {
            digits: 2000,
            scale: 0,
        });
        w.sf.as_mut().unwrap().values[2] = Value::Text("f2".into());
        compute_changes(&s, &mut w);
        assert_eq!(w.hs_changed, vec![1]);
        assert!(w.sf_changed.is_empty());
    }

    #[test]
    fn record_pairs_send_values_by_position_without_blanks() {
        let s = schema();
        let w = Work {
            sf: Some(SideRecord {
                id: "006".into(),
                modified_at: 5,
                values: vec![Value::Text("A".into()), Value::Null, Value::Null],
            }),
            ..Work::default()
        };
        let p = record_pair(&s, &w);
        let rec = p.salesforce.unwrap();
        assert_eq!(rec.fields.len(), 1);
        assert_eq!(rec.fields[0].field, 0);
        assert!(p.hubspot.is_none() && p.snapshot.is_none());
    }
}
