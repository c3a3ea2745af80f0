//! Planning a batch under the default rules: the sync condition, who wins each mapped field,
//! owner and stage translation, and the desired associations.
//!
//! Everything is a plain function of the batch and the checked config, so it runs natively as
//! well as inside the component. There is one planner, over the flat form of a batch
//! (`flat-types`, read through [`FlatView`]); the nested API flattens its batch first (see
//! [`crate::flat`]). Per-batch work (the UTF-8 check of the text, field positions, owner and
//! pipeline tables) is done once in [`Prepared::new`]. Per-record work borrows the batch's
//! values ([`ValueRef`]), reuses buffers (`Scratch`), looks fields up by position (no field
//! name is hashed or compared per record), and formats text only for an error, a skip reason or
//! a written value. The plan names a written field by its position in the field table of the side
//! written to (`field-ref::known`) when the batch has it, by name otherwise.
//!
//! Bad input from the host (a span outside its list, a field position outside its table) is a
//! `rule-error` of kind `other` naming the pair and the item: for that pair's outcome in a plan,
//! for the whole call in a condition. This module must never call an import (config, log, crm):
//! it only computes.

use std::collections::HashMap;

/// A map with a fixed, fast hasher (foldhash): no random seed, so the component imports no WASI
/// randomness, and hashing a field name costs a fraction of SipHash (with SipHash, hashing the
/// field tables was about a third of a small batch's fixed cost). Keys come from the batch's own
/// tables and lookups, never from an adversary across tenants.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use crate::bindings::dealbridge::rules::flat_types::{
    FlatBatch, FlatField, FlatPair, FlatRecord, Span,
};
use crate::bindings::dealbridge::rules::types::{
    Crm, Direction, ObjectPair, Pipeline, RelatedKind, Value,
};
use crate::bindings::exports::dealbridge::rules::flat_rules::{
    FieldRef, FlatOutcome, FlatPlan, FlatWrite, FlatWrites,
};
use crate::bindings::exports::dealbridge::rules::rules::{
    ErrorKind, Inclusion, RuleError, Skip, SyncRule,
};
use crate::config::Config;
use crate::decimal;
use crate::flat::{FlatView, RelatedRef, ValueRef, span_from};
use crate::mappings::{
    MAX_STANDARD_ROWS, MappingKind, MappingSpec, as_dec, id_text, is_blank, opportunity_row,
    standard_row, values_equal,
};

/// Which side's value wins for one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// Nothing moves.
    Neither,
    /// The Salesforce value (possibly blank: a clear) goes to HubSpot.
    Salesforce,
    /// The HubSpot value (possibly blank: a clear) goes to Salesforce.
    HubSpot,
}

/// What is known about one mapped field of a pair, for [`decide`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// The Salesforce value is blank (or the record does not exist).
    pub sf_blank: bool,
    /// The HubSpot value is blank (or the record does not exist).
    pub hs_blank: bool,
    /// The two values already agree.
    pub equal: bool,
    /// The Salesforce field changed since the last sync (echoes removed by the host).
    pub sf_changed: bool,
    /// The HubSpot property changed since the last sync.
    pub hs_changed: bool,
    /// The HubSpot record was modified strictly later than the Salesforce one.
    pub hs_newer: bool,
}

/// The sync rules themselves: which side wins for one field.
///
/// - prefer-salesforce-unless-blank: a non-blank Salesforce value wins; a Salesforce clear
///   (the field changed to blank) clears HubSpot; otherwise a blank Salesforce field takes the
///   HubSpot value.
/// - always-salesforce: as above, except that HubSpot never writes to Salesforce.
/// - two-way: the side that changed wins; when both changed, the newer record (by its own CRM's
///   modification time; a tie goes to Salesforce); when neither changed (a new mapping, a first
///   link), a blank never overwrites a value, else the newer record wins. A winning blank is a
///   clear and propagates.
/// - dont-sync: nothing moves.
pub fn decide(rule: SyncRule, f: Facts) -> Winner {
    if f.equal || (f.sf_blank && f.hs_blank) {
        return Winner::Neither;
    }
    match rule {
        SyncRule::DontSync => Winner::Neither,
        SyncRule::PreferSalesforceUnlessBlank | SyncRule::AlwaysSalesforce => {
            if !f.sf_blank || f.sf_changed {
                Winner::Salesforce
            } else if rule == SyncRule::PreferSalesforceUnlessBlank {
                Winner::HubSpot
            } else {
                Winner::Neither
            }
        }
        SyncRule::TwoWay => {
            let newer = if f.hs_newer {
                Winner::HubSpot
            } else {
                Winner::Salesforce
            };
            match (f.sf_changed, f.hs_changed) {
                (true, false) => Winner::Salesforce,
                (false, true) => Winner::HubSpot,
                (true, true) => newer,
                (false, false) if f.sf_blank => Winner::HubSpot,
                (false, false) if f.hs_blank => Winner::Salesforce,
                (false, false) => newer,
            }
        }
    }
}

fn rule_error(kind: ErrorKind, field: &str, message: String) -> RuleError {
    RuleError {
        kind,
        field: Some(field.to_string()),
        message,
    }
}

/// One side's values of the current record, by field position, reused across records.
struct Slots<'a> {
    vals: Vec<Option<ValueRef<'a>>>,
    changed: Vec<bool>,
    exists: bool,
    modified_at: i64,
}

impl<'a> Slots<'a> {
    fn new(n: usize) -> Self {
        Slots {
            vals: vec![None; n],
            changed: vec![false; n],
            exists: false,
            modified_at: 0,
        }
    }

    /// Reads one side of pair `pair`: the record's values (each checked) and the changed fields.
    fn load(
        &mut self,
        view: &FlatView<'a>,
        pair: usize,
        rec: Option<&'a FlatRecord>,
        changed: Span,
        side: &'static str,
    ) -> Result<(), RuleError> {
        self.vals.fill(None);
        self.changed.fill(false);
        self.exists = rec.is_some();
        self.modified_at = rec.map_or(0, |r| r.modified_at);
        let n = self.vals.len();
        let bad = |i: u32| field_index_error(pair, side, i, "", n);
        if let Some(r) = rec {
            view.text(r.id)
                .map_err(|e| e.error(pair, format_args!("the {side} record's id")))?;
            let fields = view
                .fields(r.fields)
                .map_err(|e| e.error(pair, format_args!("the {side} record's values")))?;
            for (k, fv) in fields.iter().enumerate() {
                let value = view.value(&fv.value).map_err(|e| {
                    e.error(
                        pair,
                        format_args!("value {k} (field {}) of the {side} record", fv.field),
                    )
                })?;
                *self
                    .vals
                    .get_mut(fv.field as usize)
                    .ok_or_else(|| bad(fv.field))? = Some(value);
            }
        }
        let changed = view
            .changed(changed)
            .map_err(|e| e.error(pair, format_args!("the {side} changed fields")))?;
        for &i in changed {
            *self.changed.get_mut(i as usize).ok_or_else(|| bad(i))? = true;
        }
        Ok(())
    }

    #[inline]
    fn get(&self, idx: Option<u32>) -> Option<ValueRef<'a>> {
        idx.and_then(|i| self.vals[i as usize])
    }

    #[inline]
    fn changed(&self, idx: Option<u32>) -> bool {
        idx.is_some_and(|i| self.changed[i as usize])
    }

    #[inline]
    fn text(&self, idx: Option<u32>) -> Option<&'a str> {
        match self.get(idx) {
            Some(ValueRef::Text(t)) if !t.is_empty() => Some(t),
            _ => None,
        }
    }
}

/// The writes of the current pair, by side, reused across records.
#[derive(Default)]
struct Writes {
    salesforce: Vec<FlatWrite>,
    hubspot: Vec<FlatWrite>,
}

/// What the planner reads and builds for one pair, reused across records so that reading a
/// record allocates nothing once the buffers have grown.
struct Scratch<'a> {
    sf: Slots<'a>,
    hs: Slots<'a>,
    /// The snapshot's Salesforce and HubSpot values, checked.
    snapshot: Option<(&'a [FlatField], &'a [FlatField])>,
    /// The associations that each side has.
    sf_related: Vec<RelatedRef<'a>>,
    hs_related: Vec<RelatedRef<'a>>,
    /// The associations that the outcome asks for.
    assoc: Vec<RelatedRef<'a>>,
    /// Associations to add (HubSpot to Salesforce), before they join `assoc`.
    added: Vec<RelatedRef<'a>>,
    writes: Writes,
}

/// A pair planned: a skip, or writes (in [`Scratch::writes`]) and possibly the complete set of
/// associations of one side (in [`Scratch::assoc`]).
enum Planned {
    Skip(Skip),
    Write(Option<Crm>),
}

/// Reads one side's associations of pair `pair` into `out`, each checked.
fn load_related<'a>(
    view: &FlatView<'a>,
    pair: usize,
    span: Span,
    side: &'static str,
    out: &mut Vec<RelatedRef<'a>>,
) -> Result<(), RuleError> {
    out.clear();
    let list = view
        .related(span)
        .map_err(|e| e.error(pair, format_args!("the {side} associations")))?;
    for (k, r) in list.iter().enumerate() {
        out.push(
            view.related_ref(r)
                .map_err(|e| e.error(pair, format_args!("{side} association {k}")))?,
        );
    }
    Ok(())
}

/// The error for a field position outside its side's field table of `entries` names.
fn field_index_error(
    pair: usize,
    side: &str,
    index: u32,
    place: &str,
    entries: usize,
) -> RuleError {
    RuleError {
        kind: ErrorKind::Other,
        field: None,
        message: format!(
            "pair {pair}: the host sent {side} field index {index}{place}, but the batch's {side} field table has {entries} entries"
        ),
    }
}

/// Checks one side's snapshot values of pair `pair` against the list, the text and the side's
/// field table of `entries` names.
fn load_snapshot_side<'a>(
    view: &FlatView<'a>,
    pair: usize,
    span: Span,
    side: &'static str,
    entries: usize,
) -> Result<&'a [FlatField], RuleError> {
    let values = view
        .fields(span)
        .map_err(|e| e.error(pair, format_args!("the snapshot's {side} values")))?;
    for (k, fv) in values.iter().enumerate() {
        view.value(&fv.value).map_err(|e| {
            e.error(
                pair,
                format_args!(
                    "value {k} (field {}) of the snapshot's {side} values",
                    fv.field
                ),
            )
        })?;
        if fv.field as usize >= entries {
            return Err(field_index_error(
                pair,
                side,
                fv.field,
                " in the snapshot",
                entries,
            ));
        }
    }
    Ok(values)
}

/// The field a write sets: its position in the table of the side written to, else its name.
#[inline]
fn field_ref(index: Option<u32>, name: &str) -> FieldRef {
    match index {
        Some(i) => FieldRef::Known(i),
        None => FieldRef::Named(name.to_owned()),
    }
}

/// A mapping with its field positions in this batch.
struct Bound<'a> {
    spec: &'a MappingSpec,
    sf: Option<u32>,
    hs: Option<u32>,
}

/// A synced pipeline with its stage table resolved against its stages.
struct PipeInfo<'a> {
    p: &'a Pipeline,
    /// The `stage_map` key that named this pipeline's table, if any.
    key: Option<&'a str>,
    /// `(StageName, Ok(stage id) | Err(unresolvable target))`, in config order.
    forward: Vec<(&'a str, Result<&'a str, &'a str>)>,
}

/// Field positions that the stage/pipeline mapping and the condition read, and those of the
/// fields that stage planning writes by name.
#[derive(Default)]
struct OppFields {
    stage_name: Option<u32>,
    record_type: Option<u32>,
    dealstage: Option<u32>,
    pipeline: Option<u32>,
    amount: Option<u32>,
    flag: Option<u32>,
    stage_rule: Option<SyncRule>,
    /// `pipeline` and `dealstage` in the HubSpot table, `StageName` and `RecordTypeId` in the
    /// Salesforce table.
    write_pipeline: Option<u32>,
    write_dealstage: Option<u32>,
    write_stage_name: Option<u32>,
    write_record_type: Option<u32>,
}

/// A batch prepared for planning: everything that is the same for every pair, computed once.
pub struct Prepared<'a> {
    cfg: &'a Config,
    view: FlatView<'a>,
    batch: &'a FlatBatch,
    maps: Vec<Bound<'a>>,
    opp: OppFields,
    owner_sf_to_hs: Map<&'a str, &'a str>,
    owner_hs_to_sf: Map<&'a str, &'a str>,
    pipes: Vec<PipeInfo<'a>>,
}

fn position(table: &[String], name: &str) -> Option<u32> {
    table.iter().position(|f| f == name).map(|i| i as u32)
}

/// One side's field table of the batch, resolved for the planner: where each row of the pair's
/// standard table sits, found in one pass over the field names, each matched by
/// `mappings::standard_row`; and, for the custom mappings and the condition's flag field, which
/// may name any field, a search by name whose index is built only when a config asks.
/// Both give the first position, should a name repeat.
struct SideFields<'a> {
    table: &'a [String],
    standard: [Option<u32>; MAX_STANDARD_ROWS],
    by_name: Option<FieldIndex<'a>>,
}

impl<'a> SideFields<'a> {
    fn new(pair: ObjectPair, side: Crm, table: &'a [String]) -> Self {
        let mut standard = [None; MAX_STANDARD_ROWS];
        for (i, name) in table.iter().enumerate() {
            if let Some(row) = standard_row(pair, side, name) {
                standard[row].get_or_insert(i as u32);
            }
        }
        SideFields {
            table,
            standard,
            by_name: None,
        }
    }

    /// The position of the standard table's row `row`.
    #[inline]
    fn standard(&self, row: usize) -> Option<u32> {
        self.standard[row]
    }

    /// The position of any field, searched by name.
    fn named(&mut self, name: &str) -> Option<u32> {
        let table = self.table;
        self.by_name
            .get_or_insert_with(|| FieldIndex::new(table))
            .get(name)
    }
}

/// Field tables up to this long are searched linearly: building a hash table costs more than
/// the few lookups a batch makes in a table this small.
const LINEAR_FIELD_TABLE_MAX: usize = 32;

/// The position of each field name in one side's field table (the first, should a name repeat).
enum FieldIndex<'a> {
    Linear(&'a [String]),
    Hashed(Map<&'a str, u32>),
}

impl<'a> FieldIndex<'a> {
    fn new(table: &'a [String]) -> Self {
        if table.len() <= LINEAR_FIELD_TABLE_MAX {
            return FieldIndex::Linear(table);
        }
        let mut map = Map::with_capacity_and_hasher(table.len(), Default::default());
        for (i, f) in table.iter().enumerate() {
            map.entry(f.as_str()).or_insert(i as u32);
        }
        FieldIndex::Hashed(map)
    }

    fn get(&self, name: &str) -> Option<u32> {
        match self {
            FieldIndex::Linear(table) => position(table, name),
            FieldIndex::Hashed(map) => map.get(name).copied(),
        }
    }
}

impl<'a> Prepared<'a> {
    /// Checks the batch's text and resolves the config against its field tables and lookups.
    pub fn new(cfg: &'a Config, batch: &'a FlatBatch) -> Result<Self, RuleError> {
        let view = FlatView::new(batch)?;
        let pair = batch.object_pair;
        let mut sf = SideFields::new(pair, Crm::Salesforce, &batch.salesforce_fields);
        let mut hs = SideFields::new(pair, Crm::Hubspot, &batch.hubspot_fields);
        let mut opp = OppFields::default();
        let maps: Vec<Bound<'a>> = cfg
            .mappings(pair)
            .iter()
            .enumerate()
            .map(|(row, spec)| {
                let b = if spec.custom {
                    Bound {
                        spec,
                        sf: sf.named(&spec.sf),
                        hs: hs.named(&spec.hs),
                    }
                } else {
                    // A config's standard mappings are the rows of the pair's standard table,
                    // in order (`mappings::standard`).
                    debug_assert_eq!(standard_row(pair, Crm::Salesforce, &spec.sf), Some(row));
                    Bound {
                        spec,
                        sf: sf.standard(row),
                        hs: hs.standard(row),
                    }
                };
                match spec.kind {
                    MappingKind::Stage => {
                        opp.stage_name = b.sf;
                        opp.dealstage = b.hs;
                        opp.stage_rule = Some(spec.rule);
                    }
                    MappingKind::Pipeline => {
                        opp.record_type = b.sf;
                        opp.pipeline = b.hs;
                    }
                    _ => {}
                }
                b
            })
            .collect();
        if pair == ObjectPair::OpportunityDeal {
            const AMOUNT: usize = opportunity_row(Crm::Salesforce, "Amount");
            const STAGE_NAME: usize = opportunity_row(Crm::Salesforce, "StageName");
            const RECORD_TYPE: usize = opportunity_row(Crm::Salesforce, "RecordTypeId");
            const PIPELINE: usize = opportunity_row(Crm::Hubspot, "pipeline");
            const DEALSTAGE: usize = opportunity_row(Crm::Hubspot, "dealstage");
            opp.amount = sf.standard(AMOUNT);
            opp.flag = cfg
                .condition
                .flag_field
                .as_deref()
                .and_then(|f| sf.named(f));
            opp.stage_name = opp.stage_name.or(sf.standard(STAGE_NAME));
            opp.record_type = opp.record_type.or(sf.standard(RECORD_TYPE));
            opp.write_pipeline = hs.standard(PIPELINE);
            opp.write_dealstage = hs.standard(DEALSTAGE);
            opp.write_stage_name = sf.standard(STAGE_NAME);
            opp.write_record_type = sf.standard(RECORD_TYPE);
        }
        let mut owner_sf_to_hs =
            Map::with_capacity_and_hasher(batch.lookups.owners.len(), Default::default());
        let mut owner_hs_to_sf =
            Map::with_capacity_and_hasher(batch.lookups.owners.len(), Default::default());
        for o in &batch.lookups.owners {
            if let (Some(s), Some(h)) = (&o.salesforce_user_id, &o.hubspot_owner_id) {
                owner_sf_to_hs.entry(s.as_str()).or_insert(h.as_str());
                owner_hs_to_sf.entry(h.as_str()).or_insert(s.as_str());
            }
        }
        let pipes = batch
            .lookups
            .pipelines
            .iter()
            .map(|p| {
                let table = cfg.stage_map.iter().find(|t| {
                    t.key == p.id
                        || p.record_type_id.as_deref() == Some(t.key.as_str())
                        || t.key == p.record_type_name
                });
                let forward = table
                    .map(|t| {
                        t.entries
                            .iter()
                            .map(|(sf_stage, target)| {
                                let hit = p
                                    .stages
                                    .iter()
                                    .find(|s| s.id == *target)
                                    .or_else(|| p.stages.iter().find(|s| s.label == *target));
                                (
                                    sf_stage.as_str(),
                                    hit.map(|s| s.id.as_str()).ok_or(target.as_str()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                PipeInfo {
                    p,
                    key: table.map(|t| t.key.as_str()),
                    forward,
                }
            })
            .collect();
        Ok(Prepared {
            cfg,
            view,
            batch,
            maps,
            opp,
            owner_sf_to_hs,
            owner_hs_to_sf,
            pipes,
        })
    }

    fn scratch(&self) -> Scratch<'a> {
        Scratch {
            sf: Slots::new(self.batch.salesforce_fields.len()),
            hs: Slots::new(self.batch.hubspot_fields.len()),
            snapshot: None,
            sf_related: Vec::new(),
            hs_related: Vec::new(),
            assoc: Vec::new(),
            added: Vec::new(),
            writes: Writes::default(),
        }
    }

    /// The sync condition of every pair, in order. Bad input in any pair fails the whole call.
    pub fn condition(&self) -> Result<Vec<Inclusion>, RuleError> {
        let mut sf = Slots::new(self.batch.salesforce_fields.len());
        let mut hs = Slots::new(self.batch.hubspot_fields.len());
        let mut out = Vec::with_capacity(self.batch.pairs.len());
        for (p, pair) in self.batch.pairs.iter().enumerate() {
            sf.load(
                &self.view,
                p,
                pair.salesforce.as_ref(),
                pair.salesforce_changed,
                "Salesforce",
            )?;
            hs.load(
                &self.view,
                p,
                pair.hubspot.as_ref(),
                pair.hubspot_changed,
                "HubSpot",
            )?;
            out.push(match self.exclusion(&sf) {
                Some(reason) => Inclusion::Exclude(reason),
                None => Inclusion::Include,
            });
        }
        Ok(out)
    }

    /// Plans every pair, in order: one outcome each, their writes and associations appended to
    /// the plan's lists.
    pub fn plan(&self) -> FlatPlan {
        let mut s = self.scratch();
        let mut plan = FlatPlan {
            writes: Vec::new(),
            related: Vec::new(),
            outcomes: Vec::with_capacity(self.batch.pairs.len()),
        };
        for (p, pair) in self.batch.pairs.iter().enumerate() {
            s.writes.salesforce.clear();
            s.writes.hubspot.clear();
            let outcome = match self.plan_pair(p, pair, &mut s) {
                Err(e) => FlatOutcome::Error(e),
                Ok(Planned::Skip(reason)) => FlatOutcome::Skip(reason),
                Ok(Planned::Write(assoc_side)) => {
                    let start = plan.writes.len();
                    plan.writes.append(&mut s.writes.salesforce);
                    let salesforce = span_from(start, plan.writes.len());
                    let start = plan.writes.len();
                    plan.writes.append(&mut s.writes.hubspot);
                    let hubspot = span_from(start, plan.writes.len());
                    let assoc = assoc_side.map(|side| {
                        let start = plan.related.len();
                        plan.related.extend(s.assoc.iter().map(|r| r.to_related()));
                        (side, span_from(start, plan.related.len()))
                    });
                    let of =
                        |want: Crm| assoc.and_then(|(side, span)| (side == want).then_some(span));
                    FlatOutcome::Write(FlatWrites {
                        salesforce,
                        hubspot,
                        salesforce_associations: of(Crm::Salesforce),
                        hubspot_associations: of(Crm::Hubspot),
                    })
                }
            };
            plan.outcomes.push(outcome);
        }
        plan
    }

    fn pipeline_by_record_type(&self, rt: Option<&str>) -> Option<&PipeInfo<'a>> {
        self.pipes
            .iter()
            .find(|p| p.p.record_type_id.as_deref() == rt)
            .or_else(|| {
                if rt.is_none() && self.pipes.len() == 1 {
                    self.pipes.first()
                } else {
                    None
                }
            })
    }

    fn record_type_name(&self, rt: Option<&str>) -> Option<&'a str> {
        match self
            .pipes
            .iter()
            .find(|p| p.p.record_type_id.as_deref() == rt)
        {
            Some(p) => Some(p.p.record_type_name.as_str()),
            None => None,
        }
    }

    /// Why an opportunity does not meet the sync condition, or none when it does.
    fn exclusion(&self, sf: &Slots<'a>) -> Option<String> {
        let c = &self.cfg.condition;
        if self.batch.object_pair != ObjectPair::OpportunityDeal || !sf.exists || c.is_open() {
            return None;
        }
        if let Some(types) = &c.record_types {
            let rt = sf.text(self.opp.record_type);
            let name =
                self.record_type_name(rt)
                    .or(if rt.is_none() { Some("Default") } else { None });
            let ok = types
                .iter()
                .any(|t| Some(t.as_str()) == rt || Some(t.as_str()) == name);
            if !ok {
                let shown = name.or(rt).unwrap_or("Default");
                return Some(format!(
                    "record type `{shown}` is not a synced record type (synced: {})",
                    types.join(", ")
                ));
            }
        }
        if let Some(stages) = &c.stages {
            match sf.text(self.opp.stage_name) {
                Some(s) if stages.iter().any(|x| x == s) => {}
                Some(s) => {
                    return Some(format!(
                        "stage `{s}` is not a synced stage (synced: {})",
                        stages.join(", ")
                    ));
                }
                None => return Some("the stage is blank".to_string()),
            }
        }
        if let Some((min, text)) = &c.min_amount {
            let amount = sf.get(self.opp.amount).and_then(as_dec);
            match amount {
                None => return Some(format!("the amount is blank (the minimum is {text})")),
                Some(a) if decimal::cmp(a, *min).is_lt() => {
                    return Some(format!(
                        "the amount {} is below the minimum {text}",
                        decimal::format(a)
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(flag) = &c.flag_field
            && !matches!(sf.get(self.opp.flag), Some(ValueRef::Boolean(true)))
        {
            return Some(format!("`{flag}` is not checked"));
        }
        None
    }

    fn plan_pair(
        &self,
        p: usize,
        pair: &'a FlatPair,
        s: &mut Scratch<'a>,
    ) -> Result<Planned, RuleError> {
        let view = &self.view;
        s.sf.load(
            view,
            p,
            pair.salesforce.as_ref(),
            pair.salesforce_changed,
            "Salesforce",
        )?;
        s.hs.load(
            view,
            p,
            pair.hubspot.as_ref(),
            pair.hubspot_changed,
            "HubSpot",
        )?;
        s.snapshot = match &pair.snapshot {
            Some(snap) => Some((
                load_snapshot_side(view, p, snap.salesforce, "Salesforce", s.sf.vals.len())?,
                load_snapshot_side(view, p, snap.hubspot, "HubSpot", s.hs.vals.len())?,
            )),
            None => None,
        };
        load_related(
            view,
            p,
            pair.salesforce_related,
            "Salesforce",
            &mut s.sf_related,
        )?;
        load_related(view, p, pair.hubspot_related, "HubSpot", &mut s.hs_related)?;
        let (sf, hs) = (&s.sf, &s.hs);
        if !sf.exists && !hs.exists {
            return Err(RuleError {
                kind: ErrorKind::Other,
                field: None,
                message: "the pair has neither a Salesforce nor a HubSpot record".to_string(),
            });
        }
        let is_opp = self.batch.object_pair == ObjectPair::OpportunityDeal;
        if is_opp
            && hs.exists
            && let Some(pipe) = hs.text(self.opp.pipeline)
            && !self.pipes.iter().any(|p| p.p.id == pipe)
        {
            return Ok(Planned::Skip(Skip::UnsyncedPipeline(format!(
                "the deal is in pipeline `{pipe}`, which is not synced"
            ))));
        }
        if let Some(reason) = self.exclusion(sf) {
            return Ok(Planned::Skip(Skip::Excluded(reason)));
        }

        let w = &mut s.writes;
        let hs_newer = sf.exists && hs.exists && hs.modified_at > sf.modified_at;
        for b in &self.maps {
            match b.spec.kind {
                MappingKind::Plain => {
                    let (sv, hv) = (sf.get(b.sf), hs.get(b.hs));
                    let f = Facts {
                        sf_blank: is_blank(sv),
                        hs_blank: is_blank(hv),
                        equal: values_equal(sv, hv),
                        sf_changed: sf.changed(b.sf),
                        hs_changed: hs.changed(b.hs),
                        hs_newer,
                    };
                    match decide(b.spec.rule, f) {
                        Winner::Neither => {}
                        Winner::Salesforce => {
                            push(&mut w.hubspot, hs.exists, b.hs, &b.spec.hs, sv);
                        }
                        Winner::HubSpot => {
                            push(&mut w.salesforce, sf.exists, b.sf, &b.spec.sf, hv);
                        }
                    }
                }
                MappingKind::Owner => {
                    self.plan_owner(s.snapshot, b, sf, hs, hs_newer, w)?;
                }
                MappingKind::Stage => self.plan_stage(sf, hs, hs_newer, w)?,
                MappingKind::Pipeline => {}
            }
        }
        let (sf_exists, hs_exists) = (sf.exists, hs.exists);
        let assoc_side = if is_opp {
            self.plan_associations(sf_exists, hs_exists, s)
        } else {
            None
        };
        if s.writes.salesforce.is_empty() && s.writes.hubspot.is_empty() && assoc_side.is_none() {
            Ok(Planned::Skip(Skip::UpToDate))
        } else {
            Ok(Planned::Write(assoc_side))
        }
    }

    /// Owner: always two-way, translated by email through `lookups.owners`.
    fn plan_owner(
        &self,
        snapshot: Option<(&'a [FlatField], &'a [FlatField])>,
        b: &Bound<'a>,
        sf: &Slots<'a>,
        hs: &Slots<'a>,
        hs_newer: bool,
        w: &mut Writes,
    ) -> Result<(), RuleError> {
        let sv_id = id_text(sf.get(b.sf));
        let hv_id = id_text(hs.get(b.hs));
        let sv = sv_id.as_ref().map(|t| t.as_str());
        let hv = hv_id.as_ref().map(|t| t.as_str());
        let sf_proj = sv.map(|s| self.owner_sf_to_hs.get(s).copied());
        let hs_proj = hv.map(|h| self.owner_hs_to_sf.get(h).copied());
        let equal = (sv.is_none() && hv.is_none())
            || (sf_proj.flatten().is_some() && sf_proj.flatten() == hv)
            || (hs_proj.flatten().is_some() && hs_proj.flatten() == sv);
        let f = Facts {
            sf_blank: sv.is_none(),
            hs_blank: hv.is_none(),
            equal,
            sf_changed: sf.changed(b.sf),
            hs_changed: hs.changed(b.hs),
            hs_newer,
        };
        let mut winner = decide(SyncRule::TwoWay, f);
        // Salesforce requires an owner: a blank HubSpot owner is restored from Salesforce.
        if winner == Winner::HubSpot && hv.is_none() && sf.exists {
            winner = Winner::Salesforce;
        }
        match winner {
            Winner::Neither => {}
            Winner::Salesforce => match (sv, sf_proj.flatten()) {
                (None, _) => push(&mut w.hubspot, hs.exists, b.hs, &b.spec.hs, None),
                (Some(_), Some(h)) => w.hubspot.push(FlatWrite {
                    field: field_ref(b.hs, &b.spec.hs),
                    value: Value::Text(h.to_string()),
                }),
                // A blank HubSpot owner is not a mismatch: the record went to Salesforce
                // without an owner and Salesforce gave it its default one.
                (Some(_), None)
                    if hv.is_none() && salesforce_default_owner(&self.view, snapshot, b, sf) => {}
                (Some(s), None) => {
                    let email = self
                        .batch
                        .lookups
                        .owners
                        .iter()
                        .find(|o| o.salesforce_user_id.as_deref() == Some(s))
                        .map(|o| format!(" ({})", o.email))
                        .unwrap_or_default();
                    return Err(rule_error(
                        ErrorKind::MissingOwner,
                        &b.spec.sf,
                        format!(
                            "Salesforce user `{s}`{email} has no HubSpot owner with the same email; add them as a HubSpot user or change the record's owner"
                        ),
                    ));
                }
            },
            Winner::HubSpot => match (hv, hs_proj.flatten()) {
                (None, _) => {}
                (Some(_), Some(s)) => w.salesforce.push(FlatWrite {
                    field: field_ref(b.sf, &b.spec.sf),
                    value: Value::Text(s.to_string()),
                }),
                (Some(h), None) => {
                    let email = self
                        .batch
                        .lookups
                        .owners
                        .iter()
                        .find(|o| o.hubspot_owner_id.as_deref() == Some(h))
                        .map(|o| format!(" ({})", o.email))
                        .unwrap_or_default();
                    return Err(rule_error(
                        ErrorKind::MissingOwner,
                        &b.spec.hs,
                        format!(
                            "HubSpot owner `{h}`{email} has no active Salesforce user with the same email; add the user in Salesforce or change the deal's owner"
                        ),
                    ));
                }
            },
        }
        Ok(())
    }

    fn project_sf_stage(
        &self,
        rt: Option<&str>,
        stage: &str,
    ) -> Result<(&PipeInfo<'a>, &'a str), RuleError> {
        let pipe = self.pipeline_by_record_type(rt).ok_or_else(|| {
            rule_error(
                ErrorKind::UnmappedPipeline,
                "RecordTypeId",
                match rt {
                    Some(rt) => format!("record type `{rt}` has no synced HubSpot pipeline"),
                    None => "the opportunity has no record type and no synced pipeline stands for the default record type".to_string(),
                },
            )
        })?;
        let Some(key) = pipe.key else {
            return Err(rule_error(
                ErrorKind::UnmappedStage,
                "StageName",
                format!(
                    "Salesforce stage `{stage}` cannot be mapped: pipeline `{}` has no stage table (add `stage_map.\"{}\"` to the config)",
                    pipe.p.label, pipe.p.record_type_name
                ),
            ));
        };
        match pipe.forward.iter().find(|(s, _)| *s == stage) {
            Some((_, Ok(id))) => Ok((pipe, id)),
            Some((_, Err(target))) => Err(rule_error(
                ErrorKind::UnmappedStage,
                "StageName",
                format!(
                    "`stage_map.{key}` maps Salesforce stage `{stage}` to `{target}`, which is neither a stage id nor a stage label of pipeline `{}`",
                    pipe.p.label
                ),
            )),
            None => Err(rule_error(
                ErrorKind::UnmappedStage,
                "StageName",
                format!(
                    "Salesforce stage `{stage}` has no entry in the stage table of pipeline `{}` (`stage_map.{key}`)",
                    pipe.p.label
                ),
            )),
        }
    }

    fn project_hs_stage(
        &self,
        pipeline: Option<&str>,
        stage: &str,
    ) -> Result<(&PipeInfo<'a>, &'a str), RuleError> {
        let pipe = match pipeline {
            Some(id) => self.pipes.iter().find(|p| p.p.id == id),
            None if self.pipes.len() == 1 => self.pipes.first(),
            None => None,
        }
        .ok_or_else(|| {
            rule_error(
                ErrorKind::UnmappedPipeline,
                "pipeline",
                format!(
                    "the deal's pipeline `{}` is not a synced pipeline",
                    pipeline.unwrap_or("")
                ),
            )
        })?;
        match pipe.forward.iter().find(|(_, t)| *t == Ok(stage)) {
            Some((sf_stage, _)) => Ok((pipe, sf_stage)),
            None => {
                let label = pipe
                    .p
                    .stages
                    .iter()
                    .find(|s| s.id == stage)
                    .map_or(stage, |s| s.label.as_str());
                Err(rule_error(
                    ErrorKind::UnmappedStage,
                    "dealstage",
                    format!(
                        "HubSpot stage `{label}` (`{stage}`) of pipeline `{}` has no Salesforce stage in `stage_map.{}`",
                        pipe.p.label,
                        pipe.key.unwrap_or(pipe.p.record_type_name.as_str())
                    ),
                ))
            }
        }
    }

    /// Stage and pipeline together, through the per-pipeline stage table.
    fn plan_stage(
        &self,
        sf: &Slots<'a>,
        hs: &Slots<'a>,
        hs_newer: bool,
        w: &mut Writes,
    ) -> Result<(), RuleError> {
        let o = &self.opp;
        let rule = o
            .stage_rule
            .unwrap_or(SyncRule::PreferSalesforceUnlessBlank);
        if rule == SyncRule::DontSync {
            return Ok(());
        }
        let s_stage = sf.text(o.stage_name);
        let s_rt = sf.text(o.record_type);
        let h_stage = hs.text(o.dealstage);
        let h_pipe = hs.text(o.pipeline);
        if s_stage.is_none() && h_stage.is_none() {
            return Ok(());
        }
        let sf_proj = s_stage.map(|s| self.project_sf_stage(s_rt, s));
        let hs_proj = h_stage.map(|h| self.project_hs_stage(h_pipe, h));
        let equal = matches!(&sf_proj, Some(Ok((p, id))) if Some(p.p.id.as_str()) == h_pipe && Some(*id) == h_stage)
            || matches!(&hs_proj, Some(Ok((p, name))) if Some(*name) == s_stage && p.p.record_type_id.as_deref() == s_rt);
        let f = Facts {
            sf_blank: s_stage.is_none(),
            hs_blank: h_stage.is_none(),
            equal,
            sf_changed: sf.changed(o.stage_name) || sf.changed(o.record_type),
            hs_changed: hs.changed(o.dealstage) || hs.changed(o.pipeline),
            hs_newer,
        };
        // Stage and pipeline are required on both sides: a blank never propagates as a clear.
        match decide(rule, f) {
            Winner::Salesforce => {
                if let Some(proj) = sf_proj {
                    let (pipe, id) = proj?;
                    w.hubspot.push(FlatWrite {
                        field: field_ref(o.write_pipeline, "pipeline"),
                        value: Value::Text(pipe.p.id.clone()),
                    });
                    w.hubspot.push(FlatWrite {
                        field: field_ref(o.write_dealstage, "dealstage"),
                        value: Value::Text(id.to_string()),
                    });
                }
            }
            Winner::HubSpot => {
                if let Some(proj) = hs_proj {
                    let (pipe, name) = proj?;
                    w.salesforce.push(FlatWrite {
                        field: field_ref(o.write_stage_name, "StageName"),
                        value: Value::Text(name.to_string()),
                    });
                    if let Some(rt) = &pipe.p.record_type_id
                        && s_rt != Some(rt.as_str())
                    {
                        w.salesforce.push(FlatWrite {
                            field: field_ref(o.write_record_type, "RecordTypeId"),
                            value: Value::Text(rt.clone()),
                        });
                    }
                }
            }
            Winner::Neither => {}
        }
        Ok(())
    }

    /// SF→HS: HubSpot should have the account and every contact role (plus associations to
    /// records that Salesforce has no counterpart for, which it cannot express). HS→SF: every
    /// associated contact becomes a contact role, and the company becomes the account when the
    /// opportunity has none; nothing is removed from Salesforce.
    ///
    /// Reads the pair's associations from `s`, leaves the complete set that one side should have
    /// in `s.assoc`, and says which side, or none when the associations stay as they are.
    fn plan_associations(
        &self,
        sf_exists: bool,
        hs_exists: bool,
        s: &mut Scratch<'a>,
    ) -> Option<Crm> {
        s.assoc.clear();
        match self.batch.direction {
            Direction::SalesforceToHubspot => {
                if !sf_exists {
                    return None;
                }
                s.assoc.extend_from_slice(&s.sf_related);
                for h in &s.hs_related {
                    if h.salesforce_id.is_none() && !s.assoc.iter().any(|d| same(d, h)) {
                        s.assoc.push(*h);
                    }
                }
                let unchanged = if hs_exists {
                    same_set(&s.assoc, &s.hs_related)
                } else {
                    s.assoc.is_empty()
                };
                (!unchanged).then_some(Crm::Hubspot)
            }
            Direction::HubspotToSalesforce => {
                if !hs_exists {
                    return None;
                }
                s.added.clear();
                for h in &s.hs_related {
                    if h.kind == RelatedKind::Contact
                        && !s.sf_related.iter().any(|x| same(x, h))
                        && !s.added.iter().any(|d| same(d, h))
                    {
                        s.added.push(*h);
                    }
                }
                if !s.sf_related.iter().any(|x| x.kind == RelatedKind::Company) {
                    let mut companies = s
                        .hs_related
                        .iter()
                        .filter(|h| h.kind == RelatedKind::Company);
                    let company = s
                        .hs_related
                        .iter()
                        .find(|h| h.kind == RelatedKind::Company && h.primary)
                        .or_else(|| match (companies.next(), companies.next()) {
                            (Some(only), None) => Some(only),
                            _ => None,
                        });
                    if let Some(c) = company {
                        s.added.push(*c);
                    }
                }
                if s.added.is_empty() {
                    return None;
                }
                s.assoc.extend_from_slice(&s.sf_related);
                s.assoc.extend_from_slice(&s.added);
                Some(Crm::Salesforce)
            }
        }
    }
}

/// Adds a write of `value` (a clear when blank) to the field at `index` (or named `name` when
/// the batch does not carry it), unless it would only clear a record that is about to be created.
#[inline]
fn push(
    list: &mut Vec<FlatWrite>,
    target_exists: bool,
    index: Option<u32>,
    name: &str,
    value: Option<ValueRef<'_>>,
) {
    let blank = is_blank(value);
    if blank && !target_exists {
        return;
    }
    list.push(FlatWrite {
        field: field_ref(index, name),
        value: match value {
            Some(v) if !blank => v.to_value(),
            _ => Value::Null,
        },
    });
}

/// Two associations name the same record: same kind and the same id on either side.
fn same(a: &RelatedRef<'_>, b: &RelatedRef<'_>) -> bool {
    a.kind == b.kind
        && ((a.hubspot_id.is_some() && a.hubspot_id == b.hubspot_id)
            || (a.salesforce_id.is_some() && a.salesforce_id == b.salesforce_id))
}

fn same_set(x: &[RelatedRef<'_>], y: &[RelatedRef<'_>]) -> bool {
    x.iter().all(|a| y.iter().any(|b| same(a, b))) && y.iter().all(|b| x.iter().any(|a| same(a, b)))
}

/// Whether a pair's Salesforce owner is the one Salesforce assigned by default to a record
/// synced to it with a blank HubSpot owner: the last sync left the HubSpot owner blank,
/// and the Salesforce owner was blank then (the create's echo) or has not changed since.
fn salesforce_default_owner(
    view: &FlatView<'_>,
    snapshot: Option<(&[FlatField], &[FlatField])>,
    b: &Bound<'_>,
    sf: &Slots<'_>,
) -> bool {
    let Some((snap_sf, snap_hs)) = snapshot else {
        return false;
    };
    let blank_in = |vals: &[FlatField], idx: Option<u32>| {
        // The snapshot's values were checked when the pair was read.
        let value = |i: u32| {
            vals.iter()
                .find(|v| v.field == i)
                .and_then(|v| view.value(&v.value).ok())
        };
        idx.is_none_or(|i| id_text(value(i)).is_none())
    };
    blank_in(snap_hs, b.hs) && (blank_in(snap_sf, b.sf) || !sf.changed(b.sf))
}

#[cfg(test)]
mod tests;
