//! Planning a batch under the default rules: the sync condition, who wins each mapped field,
//! owner and stage translation, and the desired associations.
//!
//! Everything is a plain function of the batch and the checked config, so it runs natively as
//! well as inside the component. Per-batch work (field positions, owner and pipeline tables) is
//! done once in [`Prepared::new`]; per-record work reuses buffers. This module must never call
//! an import (config, log, crm): it only computes.

use std::collections::HashMap;

/// A map with a fixed, fast hasher (foldhash): no random seed, so the component imports no WASI
/// randomness, and hashing a field name costs a fraction of SipHash (with SipHash, hashing the
/// field tables was about a third of a small batch's fixed cost). Keys come from the batch's own
/// tables and lookups, never from an adversary across tenants.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use crate::bindings::dealbridge::rules::types::{
    Batch, CrmRecord, Direction, FieldValue, ObjectPair, Pipeline, RecordPair, Related,
    RelatedKind, Value,
};
use crate::bindings::exports::dealbridge::rules::rules::{
    ErrorKind, FieldWrite, Inclusion, PairOutcome, PairWrites, RuleError, Skip, SyncRule,
};
use crate::config::Config;
use crate::decimal::{self, Dec};
use crate::mappings::{MappingKind, MappingSpec, id_text, is_blank, values_equal};

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
    vals: Vec<Option<&'a Value>>,
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

    fn load(
        &mut self,
        rec: Option<&'a CrmRecord>,
        changed: &[u32],
        side: &str,
    ) -> Result<(), RuleError> {
        self.vals.fill(None);
        self.changed.fill(false);
        self.exists = rec.is_some();
        self.modified_at = rec.map_or(0, |r| r.modified_at);
        let n = self.vals.len();
        let bad = |i: u32| RuleError {
            kind: ErrorKind::Other,
            field: None,
            message: format!(
                "the host sent {side} field index {i}, but the batch's {side} field table has {n} entries"
            ),
        };
        if let Some(r) = rec {
            for fv in &r.fields {
                *self
                    .vals
                    .get_mut(fv.field as usize)
                    .ok_or_else(|| bad(fv.field))? = Some(&fv.value);
            }
        }
        for &i in changed {
            *self.changed.get_mut(i as usize).ok_or_else(|| bad(i))? = true;
        }
        Ok(())
    }

    #[inline]
    fn get(&self, idx: Option<u32>) -> Option<&'a Value> {
        idx.and_then(|i| self.vals[i as usize])
    }

    #[inline]
    fn changed(&self, idx: Option<u32>) -> bool {
        idx.is_some_and(|i| self.changed[i as usize])
    }

    #[inline]
    fn text(&self, idx: Option<u32>) -> Option<&'a str> {
        match self.get(idx) {
            Some(Value::Text(t)) if !t.is_empty() => Some(t.as_str()),
            _ => None,
        }
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

/// Field positions that the stage/pipeline mapping and the condition read.
#[derive(Default)]
struct OppFields {
    stage_name: Option<u32>,
    record_type: Option<u32>,
    dealstage: Option<u32>,
    pipeline: Option<u32>,
    amount: Option<u32>,
    flag: Option<u32>,
    stage_rule: Option<SyncRule>,
}

/// A batch prepared for planning: everything that is the same for every pair, computed once.
pub struct Prepared<'a> {
    cfg: &'a Config,
    batch: &'a Batch,
    maps: Vec<Bound<'a>>,
    opp: OppFields,
    owner_sf_to_hs: Map<&'a str, &'a str>,
    owner_hs_to_sf: Map<&'a str, &'a str>,
    pipes: Vec<PipeInfo<'a>>,
}

fn position(table: &[String], name: &str) -> Option<u32> {
    table.iter().position(|f| f == name).map(|i| i as u32)
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
    /// Resolves the config against the batch's field tables and lookups.
    pub fn new(cfg: &'a Config, batch: &'a Batch) -> Self {
        let sf_index = FieldIndex::new(&batch.salesforce_fields);
        let hs_index = FieldIndex::new(&batch.hubspot_fields);
        let mut opp = OppFields::default();
        let maps: Vec<Bound<'a>> = cfg
            .mappings(batch.object_pair)
            .iter()
            .map(|spec| {
                let b = Bound {
                    spec,
                    sf: sf_index.get(&spec.sf),
                    hs: hs_index.get(&spec.hs),
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
        if batch.object_pair == ObjectPair::OpportunityDeal {
            opp.amount = sf_index.get("Amount");
            opp.flag = cfg
                .condition
                .flag_field
                .as_deref()
                .and_then(|f| sf_index.get(f));
            opp.stage_name = opp.stage_name.or_else(|| sf_index.get("StageName"));
            opp.record_type = opp.record_type.or_else(|| sf_index.get("RecordTypeId"));
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
        Prepared {
            cfg,
            batch,
            maps,
            opp,
            owner_sf_to_hs,
            owner_hs_to_sf,
            pipes,
        }
    }

    fn slots(&self) -> (Slots<'a>, Slots<'a>) {
        (
            Slots::new(self.batch.salesforce_fields.len()),
            Slots::new(self.batch.hubspot_fields.len()),
        )
    }

    /// The sync condition of every pair, in order.
    pub fn condition(&self) -> Result<Vec<Inclusion>, RuleError> {
        let (mut sf, mut hs) = self.slots();
        let mut out = Vec::with_capacity(self.batch.pairs.len());
        for pair in &self.batch.pairs {
            sf.load(
                pair.salesforce.as_ref(),
                &pair.salesforce_changed,
                "Salesforce",
            )?;
            hs.load(pair.hubspot.as_ref(), &pair.hubspot_changed, "HubSpot")?;
            out.push(match self.exclusion(&sf) {
                Some(reason) => Inclusion::Exclude(reason),
                None => Inclusion::Include,
            });
        }
        Ok(out)
    }

    /// Plans every pair, in order.
    pub fn plan(&self) -> Vec<PairOutcome> {
        let (mut sf, mut hs) = self.slots();
        let mut out = Vec::with_capacity(self.batch.pairs.len());
        for pair in &self.batch.pairs {
            out.push(match self.plan_pair(pair, &mut sf, &mut hs) {
                Ok(o) => o,
                Err(e) => PairOutcome::Error(e),
            });
        }
        out
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
            let amount = match sf.get(self.opp.amount) {
                Some(Value::Decimal(d)) => Some(Dec {
                    digits: d.digits,
                    scale: d.scale,
                }),
                Some(Value::Integer(i)) => Some(Dec {
                    digits: *i,
                    scale: 0,
                }),
                _ => None,
            };
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
            && !matches!(sf.get(self.opp.flag), Some(Value::Boolean(true)))
        {
            return Some(format!("`{flag}` is not checked"));
        }
        None
    }

    fn plan_pair(
        &self,
        pair: &'a RecordPair,
        sf: &mut Slots<'a>,
        hs: &mut Slots<'a>,
    ) -> Result<PairOutcome, RuleError> {
        sf.load(
            pair.salesforce.as_ref(),
            &pair.salesforce_changed,
            "Salesforce",
        )?;
        hs.load(pair.hubspot.as_ref(), &pair.hubspot_changed, "HubSpot")?;
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
            return Ok(PairOutcome::Skip(Skip::UnsyncedPipeline(format!(
                "the deal is in pipeline `{pipe}`, which is not synced"
            ))));
        }
        if let Some(reason) = self.exclusion(sf) {
            return Ok(PairOutcome::Skip(Skip::Excluded(reason)));
        }

        let mut w = PairWrites {
            salesforce: Vec::new(),
            hubspot: Vec::new(),
            salesforce_associations: None,
            hubspot_associations: None,
        };
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
                        Winner::Salesforce => push(&mut w.hubspot, hs.exists, &b.spec.hs, sv),
                        Winner::HubSpot => push(&mut w.salesforce, sf.exists, &b.spec.sf, hv),
                    }
                }
                MappingKind::Owner => self.plan_owner(pair, b, sf, hs, hs_newer, &mut w)?,
                MappingKind::Stage => self.plan_stage(sf, hs, hs_newer, &mut w)?,
                MappingKind::Pipeline => {}
            }
        }
        if is_opp {
            self.plan_associations(pair, sf.exists, hs.exists, &mut w);
        }
        if w.salesforce.is_empty()
            && w.hubspot.is_empty()
            && w.salesforce_associations.is_none()
            && w.hubspot_associations.is_none()
        {
            Ok(PairOutcome::Skip(Skip::UpToDate))
        } else {
            Ok(PairOutcome::Write(w))
        }
    }

    /// Owner: always two-way, translated by email through `lookups.owners`.
    fn plan_owner(
        &self,
        pair: &RecordPair,
        b: &Bound<'a>,
        sf: &Slots<'a>,
        hs: &Slots<'a>,
        hs_newer: bool,
        w: &mut PairWrites,
    ) -> Result<(), RuleError> {
        let sv = id_text(sf.get(b.sf));
        let hv = id_text(hs.get(b.hs));
        let sf_proj = sv.as_deref().map(|s| self.owner_sf_to_hs.get(s).copied());
        let hs_proj = hv.as_deref().map(|h| self.owner_hs_to_sf.get(h).copied());
        let equal = (sv.is_none() && hv.is_none())
            || (sf_proj.flatten().is_some() && sf_proj.flatten() == hv.as_deref())
            || (hs_proj.flatten().is_some() && hs_proj.flatten() == sv.as_deref());
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
            Winner::Salesforce => match (sv.as_deref(), sf_proj.flatten()) {
                (None, _) => push(&mut w.hubspot, hs.exists, &b.spec.hs, None),
                (Some(_), Some(h)) => w.hubspot.push(FieldWrite {
                    field: b.spec.hs.to_string(),
                    value: Value::Text(h.to_string()),
                }),
                // A blank HubSpot owner is not a mismatch: the record went to Salesforce
                // without an owner and Salesforce gave it its default one.
                (Some(_), None) if hv.is_none() && salesforce_default_owner(pair, b, sf) => {}
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
            Winner::HubSpot => match (hv.as_deref(), hs_proj.flatten()) {
                (None, _) => {}
                (Some(_), Some(s)) => w.salesforce.push(FieldWrite {
                    field: b.spec.sf.to_string(),
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
        w: &mut PairWrites,
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
                    w.hubspot.push(FieldWrite {
                        field: "pipeline".to_string(),
                        value: Value::Text(pipe.p.id.clone()),
                    });
                    w.hubspot.push(FieldWrite {
                        field: "dealstage".to_string(),
                        value: Value::Text(id.to_string()),
                    });
                }
            }
            Winner::HubSpot => {
                if let Some(proj) = hs_proj {
                    let (pipe, name) = proj?;
                    w.salesforce.push(FieldWrite {
                        field: "StageName".to_string(),
                        value: Value::Text(name.to_string()),
                    });
                    if let Some(rt) = &pipe.p.record_type_id
                        && s_rt != Some(rt.as_str())
                    {
                        w.salesforce.push(FieldWrite {
                            field: "RecordTypeId".to_string(),
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
    fn plan_associations(
        &self,
        pair: &RecordPair,
        sf_exists: bool,
        hs_exists: bool,
        w: &mut PairWrites,
    ) {
        let a = &pair.associations;
        match self.batch.direction {
            Direction::SalesforceToHubspot => {
                if !sf_exists {
                    return;
                }
                let mut desired: Vec<Related> = a.salesforce.clone();
                for h in &a.hubspot {
                    if h.salesforce_id.is_none() && !desired.iter().any(|d| same(d, h)) {
                        desired.push(h.clone());
                    }
                }
                let unchanged = if hs_exists {
                    same_set(&desired, &a.hubspot)
                } else {
                    desired.is_empty()
                };
                if !unchanged {
                    w.hubspot_associations = Some(desired);
                }
            }
            Direction::HubspotToSalesforce => {
                if !hs_exists {
                    return;
                }
                let mut desired: Vec<Related> = Vec::new();
                for h in &a.hubspot {
                    if h.kind == RelatedKind::Contact
                        && !a.salesforce.iter().any(|s| same(s, h))
                        && !desired.iter().any(|d| same(d, h))
                    {
                        desired.push(h.clone());
                    }
                }
                if !a.salesforce.iter().any(|s| s.kind == RelatedKind::Company) {
                    let companies = a.hubspot.iter().filter(|h| h.kind == RelatedKind::Company);
                    let company = a
                        .hubspot
                        .iter()
                        .find(|h| h.kind == RelatedKind::Company && h.primary)
                        .or_else(|| {
                            let mut c = companies;
                            match (c.next(), c.next()) {
                                (Some(only), None) => Some(only),
                                _ => None,
                            }
                        });
                    if let Some(c) = company {
                        desired.push(c.clone());
                    }
                }
                if !desired.is_empty() {
                    let mut all = a.salesforce.clone();
                    all.append(&mut desired);
                    w.salesforce_associations = Some(all);
                }
            }
        }
    }
}

/// Adds a write of `value` (a clear when blank) unless it would only clear a record that is
/// about to be created.
#[inline]
fn push(list: &mut Vec<FieldWrite>, target_exists: bool, field: &str, value: Option<&Value>) {
    let blank = is_blank(value);
    if blank && !target_exists {
        return;
    }
    list.push(FieldWrite {
        field: field.to_string(),
        value: if blank {
            Value::Null
        } else {
            value.cloned().unwrap_or(Value::Null)
        },
    });
}

/// Two associations name the same record: same kind and the same id on either side.
fn same(a: &Related, b: &Related) -> bool {
    a.kind == b.kind
        && ((a.hubspot_id.is_some() && a.hubspot_id == b.hubspot_id)
            || (a.salesforce_id.is_some() && a.salesforce_id == b.salesforce_id))
}

fn same_set(x: &[Related], y: &[Related]) -> bool {
    x.iter().all(|a| y.iter().any(|b| same(a, b))) && y.iter().all(|b| x.iter().any(|a| same(a, b)))
}

/// Whether a pair's Salesforce owner is the one Salesforce assigned by default to a record
/// synced to it with a blank HubSpot owner: the last sync left the HubSpot owner blank,
/// and the Salesforce owner was blank then (the create's echo) or has not changed since.
fn salesforce_default_owner(pair: &RecordPair, b: &Bound<'_>, sf: &Slots<'_>) -> bool {
    let Some(snap) = &pair.snapshot else {
        return false;
    };
    let blank_in = |vals: &[FieldValue], idx: Option<u32>| {
        let value = |i: u32| vals.iter().find(|v| v.field == i).map(|v| &v.value);
        idx.is_none_or(|i| id_text(value(i)).is_none())
    };
    blank_in(&snap.hubspot, b.hs) && (blank_in(&snap.salesforce, b.sf) || !sf.changed(b.sf))
}

#[cfg(test)]
mod tests;
