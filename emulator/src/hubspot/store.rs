//! The in-memory portal of the HubSpot emulator: records, unique-value
//! indexes, associations, pipelines, owners, property definitions and the
//! calculated contact properties. Each table keeps, beside its records, the
//! ordered `(last-modified, id)` index and range-counting sets of the active
//! ids and of those keys, which search counts ranges with.
//!
//! Everything here is synchronous and is used under one `RwLock` held only for
//! the duration of a call (never across an `.await`). Every write goes through
//! [`Store::validate`] then [`Store::apply`], so unique values, deal stages,
//! `hs_lastmodifieddate` and the contact rollups can never be bypassed. This
//! module must never panic on client input and never do quadratic work per
//! request (search sorts once, then pages).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::index::{CountedSet, ValueIndex, ValueIndexes};
use super::schema::{
    self, ObjectType, PropError, PropertyDef, iso, number_text, parse_datetime_ms,
};
pub use super::search::{Filter, Plan, Sort};
use crate::control::Faults;

/// When the portal's standard metadata was "created" (2019-08-06T02:43:14.491Z).
pub const PORTAL_EPOCH_MS: i64 = 1_565_059_394_491;

/// One CRM record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: u64,
    pub props: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived: bool,
    pub archived_ms: Option<i64>,
    /// Per property, the values clients wrote, oldest first, at most
    /// [`HISTORY_LIMIT`] each (what `propertiesWithHistory` reads).
    pub history: BTreeMap<String, Vec<HistoryEntry>>,
}

/// The `sourceId` of history entries written through the API.
pub const PRIVATE_APP_SOURCE_ID: &str = "emulator-private-app";

/// Most history entries kept per property of a record.
pub const HISTORY_LIMIT: usize = 20;

/// One past value of a property: what was set (`None`: cleared) and when.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub value: Option<String>,
    pub at_ms: i64,
}

impl Record {
    /// `propertiesWithHistory` of one property, newest first, in HubSpot's
    /// `{value, timestamp, sourceType, sourceId?}` shape. Values written
    /// through the API are `API`; a value the portal set itself (ids, dates,
    /// calculated properties, or anything from before a snapshot load) shows
    /// as one `CALCULATED` entry at the record's last change. A property
    /// never set has no entries.
    pub fn history_json(&self, prop: &str) -> Value {
        let entry = |value: &str, ms: i64, source: &str| {
            let mut e = json!({"value": value, "timestamp": iso(ms), "sourceType": source});
            if source == "API" {
                e["sourceId"] = json!(PRIVATE_APP_SOURCE_ID);
            }
            e
        };
        match self.history.get(prop) {
            Some(list) if !list.is_empty() => Value::Array(
                list.iter()
                    .rev()
                    .map(|h| entry(h.value.as_deref().unwrap_or(""), h.at_ms, "API"))
                    .collect(),
            ),
            _ => Value::Array(
                self.props
                    .get(prop)
                    .map(|v| entry(v, self.updated_ms, "CALCULATED"))
                    .into_iter()
                    .collect(),
            ),
        }
    }
}

/// The records and property definitions of one object type.
#[derive(Clone, Debug)]
pub struct Table {
    pub ot: ObjectType,
    /// Every record by id, archived ones included. Private: only the store
    /// writes records, so the indexes below cannot drift from them.
    records: BTreeMap<u64, Record>,
    /// `(updated_ms, id)` of every active record: the order keyset scans read.
    by_modified: BTreeSet<(i64, u64)>,
    /// The same keys as `by_modified`, countable per range in `O(log n)`.
    modified_counts: CountedSet<(i64, u64)>,
    /// The ids of the active records, countable per range in `O(log n)`.
    active_ids: CountedSet<u64>,
    pub props: Vec<PropertyDef>,
    prop_index: HashMap<String, usize>,
    /// Unique property -> unique key of a value -> record id (active records only).
    unique: HashMap<String, HashMap<String, u64>>,
    /// Unique property -> lowercased value -> record ids (active records
    /// only): what search's case-insensitive EQ/IN on the property look up.
    folded: HashMap<String, HashMap<String, BTreeSet<u64>>>,
    /// Secondary indexes of commonly filtered properties (active records only).
    values: ValueIndexes,
}

impl Table {
    fn new(ot: ObjectType) -> Table {
        let props = schema::standard_properties(ot, &iso(PORTAL_EPOCH_MS));
        let prop_index = props
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let mut unique = HashMap::new();
        let mut folded = HashMap::new();
        if ot == ObjectType::Contacts {
            unique.insert("email".to_string(), HashMap::new());
            folded.insert("email".to_string(), HashMap::new());
        }
        Table {
            ot,
            records: BTreeMap::new(),
            by_modified: BTreeSet::new(),
            modified_counts: CountedSet::default(),
            active_ids: CountedSet::default(),
            values: ValueIndexes::for_table(ot, &props),
            props,
            prop_index,
            unique,
            folded,
        }
    }

    /// Every record by id (archived ones included).
    pub fn records(&self) -> &BTreeMap<u64, Record> {
        &self.records
    }

    /// `(updated_ms, id)` of every active record, in order.
    pub fn modified_index(&self) -> &BTreeSet<(i64, u64)> {
        &self.by_modified
    }

    /// How many active records have an id in `[lo, hi]`, in `O(log n)`.
    pub fn active_in_id_range(&self, lo: u64, hi: u64) -> usize {
        self.active_ids.count(lo, hi)
    }

    /// How many `(updated_ms, id)` keys of active records lie in `[lo, hi]`,
    /// in `O(log n)` (see [`CountedSet`]).
    pub fn modified_in_range(&self, lo: (i64, u64), hi: (i64, u64)) -> usize {
        self.modified_counts.count(lo, hi)
    }

    /// Whether the counted sets hold exactly the active records' ids and
    /// `(updated_ms, id)` keys (for tests).
    pub fn counted_sets_are_consistent(&self) -> bool {
        let ids: Vec<u64> = self
            .records
            .values()
            .filter(|r| !r.archived)
            .map(|r| r.id)
            .collect();
        let keys: Vec<(i64, u64)> = self.by_modified.iter().copied().collect();
        self.active_ids.keys() == ids && self.modified_counts.keys() == keys
    }

    /// Rebuilds the counted sets from the records and the modified index.
    fn recount(&mut self) {
        self.active_ids =
            CountedSet::from_keys(self.records.values().filter(|r| !r.archived).map(|r| r.id));
        self.modified_counts = CountedSet::from_keys(self.by_modified.iter().copied());
    }

    /// The secondary index of a property, if it has one.
    pub fn value_index(&self, prop: &str) -> Option<&ValueIndex> {
        self.values.get(prop)
    }

    /// Every secondary index, rebuilt from the active records (for tests).
    pub fn rebuilt_value_indexes(&self) -> ValueIndexes {
        let mut v = ValueIndexes::for_table(self.ot, &self.props);
        for r in self.records.values().filter(|r| !r.archived) {
            v.insert(r);
        }
        v
    }

    /// The maintained secondary indexes.
    pub fn value_indexes(&self) -> &ValueIndexes {
        &self.values
    }

    /// The definition of a property.
    pub fn prop(&self, name: &str) -> Option<&PropertyDef> {
        self.prop_index.get(name).map(|&i| &self.props[i])
    }

    /// Adds a property definition (the caller checked the name is new).
    pub fn add_prop(&mut self, def: PropertyDef) {
        if def.has_unique_value {
            self.unique.insert(def.name.clone(), HashMap::new());
            self.folded.insert(def.name.clone(), HashMap::new());
        }
        self.prop_index.insert(def.name.clone(), self.props.len());
        self.props.push(def);
    }

    /// Whether `name` may serve as an `idProperty` (record id, contact email, or a unique property).
    pub fn is_id_property(&self, name: &str) -> bool {
        name == "hs_object_id" || self.unique.contains_key(name)
    }

    /// Number of custom unique properties (HubSpot allows 10 per object).
    pub fn unique_count(&self) -> usize {
        self.props.iter().filter(|p| p.has_unique_value).count()
    }

    /// The active record whose `id_property` equals `value`.
    pub fn find_by(&self, id_property: &str, value: &str) -> Option<u64> {
        if id_property == "hs_object_id" {
            let id = value.trim().parse::<u64>().ok()?;
            return self.records.get(&id).filter(|r| !r.archived).map(|r| r.id);
        }
        self.unique
            .get(id_property)?
            .get(&unique_key(id_property, value))
            .copied()
    }

    /// The active records whose unique property `prop` equals `lowercase`
    /// ignoring case (the value lowercased as search lowercases it); `None`
    /// when `prop` is not a unique property.
    pub fn find_folded(&self, prop: &str, lowercase: &str) -> Option<impl Iterator<Item = u64>> {
        let index = self.folded.get(prop)?;
        Some(index.get(lowercase).into_iter().flatten().copied())
    }

    /// An active (not archived) record.
    pub fn active(&self, id: u64) -> Option<&Record> {
        self.records.get(&id).filter(|r| !r.archived)
    }
}

/// Moves record `id` in the case-folded index of one property from its old
/// value to its new one.
fn refold(
    index: &mut HashMap<String, BTreeSet<u64>>,
    id: u64,
    old: Option<&str>,
    new: Option<&str>,
) {
    if let Some(old) = old {
        let key = old.to_lowercase();
        if let Some(ids) = index.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                index.remove(&key);
            }
        }
    }
    if let Some(new) = new {
        index.entry(new.to_lowercase()).or_default().insert(id);
    }
}

fn unique_key(prop: &str, value: &str) -> String {
    if prop == "email" {
        value.trim().to_ascii_lowercase()
    } else {
        value.to_string()
    }
}

/// `HUBSPOT_DEFINED` or `USER_DEFINED`.
pub const HUBSPOT_DEFINED: &str = "HUBSPOT_DEFINED";
pub const USER_DEFINED: &str = "USER_DEFINED";

/// An association type between two object types (one direction).
#[derive(Clone, Debug, PartialEq)]
pub struct AssocType {
    pub from: ObjectType,
    pub to: ObjectType,
    pub type_id: u32,
    pub category: &'static str,
    pub label: Option<String>,
    pub inverse: u32,
    /// The unlabeled type every association between the pair carries.
    pub default: bool,
}

impl AssocType {
    /// `{"category","typeId","label"}` as v4 shows it.
    pub fn spec_json(&self) -> Value {
        json!({"category": self.category, "typeId": self.type_id, "label": self.label})
    }

    /// The v3 type name (`deal_to_contact`, `deal_to_company_unlabeled`, ...).
    pub fn v3_name(&self, has_primary: bool) -> String {
        let base = format!("{}_to_{}", self.from.singular(), self.to.singular());
        match (&self.label, self.category) {
            (None, _) if has_primary => format!("{base}_unlabeled"),
            (None, _) => base,
            (Some(_), HUBSPOT_DEFINED) => base,
            (Some(l), _) => l.to_ascii_lowercase().replace(' ', "_"),
        }
    }
}

fn builtin_assoc_types() -> Vec<AssocType> {
    use ObjectType::*;
    let t = |from, to, type_id, label: Option<&str>, inverse, default| AssocType {
        from,
        to,
        type_id,
        category: HUBSPOT_DEFINED,
        label: label.map(str::to_string),
        inverse,
        default,
    };
    vec![
        t(Contacts, Companies, 279, None, 280, true),
        t(Contacts, Companies, 1, Some("Primary"), 2, false),
        t(Companies, Contacts, 280, None, 279, true),
        t(Companies, Contacts, 2, Some("Primary"), 1, false),
        t(Deals, Contacts, 3, None, 4, true),
        t(Contacts, Deals, 4, None, 3, true),
        t(Deals, Companies, 341, None, 342, true),
        t(Deals, Companies, 5, Some("Primary"), 6, false),
        t(Companies, Deals, 342, None, 341, true),
        t(Companies, Deals, 6, Some("Primary"), 5, false),
    ]
}

/// A deal stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub probability: String,
    pub is_closed: bool,
    pub created_ms: i64,
}

impl Stage {
    /// Closed won: closed with probability 1.
    pub fn is_won(&self) -> bool {
        self.is_closed
            && self
                .probability
                .parse::<f64>()
                .map(|p| p >= 1.0)
                .unwrap_or(false)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "metadata": {"isClosed": self.is_closed.to_string(), "probability": self.probability},
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.created_ms),
            "archived": false,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        })
    }
}

/// A deal pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub stages: Vec<Stage>,
    pub created_ms: i64,
}

impl Pipeline {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "stages": self.stages.iter().map(Stage::to_json).collect::<Vec<_>>(),
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.created_ms),
            "archived": false,
        })
    }
}

/// A HubSpot owner (a user who can own records).
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub user_id: u64,
    pub created_ms: i64,
}

impl Owner {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.created_ms),
            "archived": false,
        })
    }
}

/// Property changes ready to apply: name -> new value (`None` clears).
pub type Changes = Vec<(String, Option<String>)>;

/// Why one record could not be written (after its values validated).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forced(String),
}

/// Why an association could not be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AssocError {
    #[error("{0} {1} was not found")]
    MissingObject(ObjectType, u64),
    #[error("association type {category}/{type_id} is not valid between {from:?} and {to:?}")]
    BadType {
        category: String,
        type_id: u32,
        from: ObjectType,
        to: ObjectType,
    },
}

/// For each object, the objects associated with it and the association type ids
/// between the two (kept in both directions).
type Adjacency = HashMap<(ObjectType, u64), BTreeMap<(ObjectType, u64), BTreeSet<u32>>>;

/// The portal.
#[derive(Clone, Debug)]
pub struct Store {
    tables: [Table; 3],
    adj: Adjacency,
    pub assoc_types: Vec<AssocType>,
    pub pipelines: Vec<Pipeline>,
    pub owners: Vec<Owner>,
    next_id: u64,
    next_meta_id: u64,
    next_type_id: u32,
}

fn tidx(ot: ObjectType) -> usize {
    match ot {
        ObjectType::Contacts => 0,
        ObjectType::Companies => 1,
        ObjectType::Deals => 2,
    }
}

const DEFAULT_STAGES: &[(&str, &str, &str, bool)] = &[
    (
        "appointmentscheduled",
        "Appointment Scheduled",
        "0.2",
        false,
    ),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", false),
    (
        "presentationscheduled",
        "Presentation Scheduled",
        "0.6",
        false,
    ),
    (
        "decisionmakerboughtin",
        "Decision Maker Bought-In",
        "0.8",
        false,
    ),
    ("contractsent", "Contract Sent", "0.9", false),
    ("closedwon", "Closed Won", "1.0", true),
    ("closedlost", "Closed Lost", "0.0", true),
];

impl Store {
    /// An empty portal: standard properties, the default pipeline, the built-in
    /// association types; no owners and no records.
    pub fn new() -> Store {
        let default = Pipeline {
            id: "default".into(),
            label: "Sales Pipeline".into(),
            display_order: 0,
            stages: DEFAULT_STAGES
                .iter()
                .enumerate()
                .map(|(i, (id, label, p, closed))| Stage {
                    id: id.to_string(),
                    label: label.to_string(),
                    display_order: i as i64,
                    probability: p.to_string(),
                    is_closed: *closed,
                    created_ms: PORTAL_EPOCH_MS,
                })
                .collect(),
            created_ms: PORTAL_EPOCH_MS,
        };
        Store {
            tables: [
                Table::new(ObjectType::Contacts),
                Table::new(ObjectType::Companies),
                Table::new(ObjectType::Deals),
            ],
            adj: HashMap::new(),
            assoc_types: builtin_assoc_types(),
            pipelines: vec![default],
            owners: Vec::new(),
            next_id: 1_000_001,
            next_meta_id: 90_000_001,
            next_type_id: 1_000,
        }
    }

    pub fn table(&self, ot: ObjectType) -> &Table {
        &self.tables[tidx(ot)]
    }

    pub fn table_mut(&mut self, ot: ObjectType) -> &mut Table {
        &mut self.tables[tidx(ot)]
    }

    /// A fresh id for pipelines and stages.
    pub fn next_meta_id(&mut self) -> String {
        self.next_meta_id += 1;
        self.next_meta_id.to_string()
    }

    pub fn pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    /// The stage of a deal record, if it is valid.
    fn deal_stage(&self, props: &BTreeMap<String, String>) -> Option<&Stage> {
        let p = self.pipeline(
            props
                .get("pipeline")
                .map(String::as_str)
                .unwrap_or("default"),
        )?;
        let s = props.get("dealstage")?;
        p.stages.iter().find(|st| &st.id == s)
    }

    /// Checks written values against the schema; returns the changes to apply.
    /// `existing` is the record being updated (`None` for a create).
    pub fn validate(
        &self,
        ot: ObjectType,
        existing: Option<&Record>,
        input: &Map<String, Value>,
    ) -> Result<Changes, Vec<PropError>> {
        let table = self.table(ot);
        let mut errors = Vec::new();
        let mut changes: Changes = Vec::with_capacity(input.len() + 2);
        for (name, raw) in input {
            let Some(def) = table.prop(name) else {
                errors.push(PropError::doesnt_exist(name));
                continue;
            };
            if def.read_only() {
                errors.push(PropError::new(
                    name,
                    "READ_ONLY_VALUE",
                    format!("{name} is a read only property; its value cannot be set."),
                ));
                continue;
            }
            match schema::normalize(def, raw) {
                Ok(v) => {
                    if name == "hubspot_owner_id"
                        && let Some(owner) = &v
                        && !self.owners.iter().any(|o| o.id.to_string() == *owner)
                    {
                        errors.push(PropError::new(
                            name,
                            "INVALID_OWNER_ID",
                            format!("{owner} is not a valid owner id"),
                        ));
                        continue;
                    }
                    changes.push((name.clone(), v));
                }
                Err(e) => errors.push(e),
            }
        }
        if ot == ObjectType::Deals && errors.is_empty() {
            self.check_stage(existing, &mut changes, &mut errors);
        }
        if ot == ObjectType::Contacts {
            keep_lifecycle_forward(existing, &mut changes);
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(errors)
        }
    }

    /// Deal pipeline/stage rules: the pipeline must exist, the stage must be
    /// one of its stages; a create defaults to the default pipeline's first stage.
    fn check_stage(
        &self,
        existing: Option<&Record>,
        changes: &mut Changes,
        errors: &mut Vec<PropError>,
    ) {
        let get = |name: &str| {
            changes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let new_pipeline = get("pipeline");
        let new_stage = get("dealstage");
        if matches!(new_pipeline, Some(None)) {
            errors.push(PropError::new(
                "pipeline",
                "INVALID_OPTION",
                "pipeline cannot be cleared",
            ));
            return;
        }
        if matches!(new_stage, Some(None)) {
            errors.push(PropError::new(
                "dealstage",
                "INVALID_OPTION",
                "dealstage cannot be cleared",
            ));
            return;
        }
        let pipeline_id = new_pipeline
            .flatten()
            .or_else(|| existing.and_then(|r| r.props.get("pipeline").cloned()))
            .unwrap_or_else(|| "default".to_string());
        let Some(pipeline) = self.pipeline(&pipeline_id) else {
            let allowed: Vec<&str> = self.pipelines.iter().map(|p| p.id.as_str()).collect();
            errors.push(PropError::new(
                "pipeline",
                "INVALID_OPTION",
                format!(
                    "{pipeline_id} was not one of the allowed options: [{}]",
                    allowed.join(", ")
                ),
            ));
            return;
        };
        let stage = new_stage
            .flatten()
            .or_else(|| existing.and_then(|r| r.props.get("dealstage").cloned()));
        match stage {
            Some(s) if pipeline.stages.iter().any(|st| st.id == s) => {}
            Some(s) => {
                let allowed: Vec<&str> = pipeline.stages.iter().map(|st| st.id.as_str()).collect();
                errors.push(PropError::new(
                    "dealstage",
                    "INVALID_OPTION",
                    format!(
                        "{s} was not one of the allowed options for pipeline {pipeline_id}: [{}]",
                        allowed.join(", ")
                    ),
                ));
            }
            None => {
                if let Some(first) = pipeline.stages.first() {
                    changes.push(("dealstage".into(), Some(first.id.clone())));
                }
            }
        }
        if existing.is_none() && !changes.iter().any(|(k, _)| k == "pipeline") {
            changes.push(("pipeline".into(), Some(pipeline_id)));
        }
    }

    /// Writes validated changes: creates a record (`id == None`) or updates one.
    /// Enforces forced validations, unique values, maintained properties and rollups.
    pub fn apply(
        &mut self,
        ot: ObjectType,
        id: Option<u64>,
        changes: Changes,
        now: i64,
        faults: &Faults,
    ) -> Result<u64, RecordError> {
        let existing = match id {
            Some(id) => Some(
                self.table(ot)
                    .active(id)
                    .ok_or_else(|| RecordError::NotFound(id.to_string()))?,
            ),
            None => None,
        };
        if !faults.current().validation_failures.is_empty() {
            let mut merged: Map<String, Value> = existing
                .map(|r| {
                    r.props
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &changes {
                merged.insert(
                    k.clone(),
                    v.clone().map(Value::String).unwrap_or(Value::Null),
                );
            }
            if let Some(f) = faults
                .forced_validation(ot.plural(), &merged)
                .or_else(|| faults.forced_validation(ot.singular(), &merged))
            {
                return Err(RecordError::Forced(f.message));
            }
        }
        let table = self.table(ot);
        for (k, v) in &changes {
            if let (Some(index), Some(v)) = (table.unique.get(k), v)
                && let Some(&other) = index.get(&unique_key(k, v))
                && Some(other) != id
            {
                return Err(RecordError::Conflict(
                    if ot == ObjectType::Contacts && k == "email" {
                        format!("Contact already exists. Existing ID: {other}")
                    } else {
                        format!(
                            "A {} with the value \"{v}\" for the unique property \"{k}\" already exists. Existing ID: {other}",
                            ot.singular()
                        )
                    },
                ));
            }
        }
        let modified = ot.modified_prop();
        let id_known_before = id.is_some();
        let id = match id {
            Some(id) => id,
            None => {
                self.next_id += 1;
                let id = self.next_id;
                let created = changes
                    .iter()
                    .find(|(k, _)| k == "createdate")
                    .and_then(|(_, v)| v.as_deref())
                    .and_then(parse_datetime_ms)
                    .unwrap_or(now);
                let mut props = BTreeMap::new();
                props.insert("hs_object_id".to_string(), id.to_string());
                props.insert("createdate".to_string(), iso(created));
                props.insert(modified.to_string(), iso(now));
                let rec = Record {
                    id,
                    props,
                    created_ms: created,
                    updated_ms: now,
                    archived: false,
                    archived_ms: None,
                    history: BTreeMap::new(),
                };
                let table = self.table_mut(ot);
                table.records.insert(id, rec);
                table.active_ids.insert(id);
                id
            }
        };
        let table = self.table_mut(ot);
        let Some(rec) = table.records.get_mut(&id) else {
            return Err(RecordError::NotFound(id.to_string()));
        };
        let old_key = (rec.updated_ms, id);
        // Out of the secondary indexes while its values and time change.
        table.values.remove(rec);
        let mut changed = false;
        let at_ms = now.max(rec.updated_ms);
        for (k, v) in changes {
            let old = match v {
                Some(v) => {
                    if rec.props.get(&k) == Some(&v) {
                        continue;
                    }
                    rec.props.insert(k.clone(), v.clone())
                }
                None => match rec.props.remove(&k) {
                    Some(old) => Some(old),
                    None => continue,
                },
            };
            changed = true;
            let history = rec.history.entry(k.clone()).or_default();
            if history.len() >= HISTORY_LIMIT {
                history.remove(0);
            }
            history.push(HistoryEntry {
                value: rec.props.get(&k).cloned(),
                at_ms,
            });
            if let Some(index) = table.unique.get_mut(&k) {
                if let Some(old) = &old {
                    index.remove(&unique_key(&k, old));
                }
                if let Some(new) = rec.props.get(&k) {
                    index.insert(unique_key(&k, new), id);
                }
            }
            if let Some(index) = table.folded.get_mut(&k) {
                refold(
                    index,
                    id,
                    old.as_deref(),
                    rec.props.get(&k).map(String::as_str),
                );
            }
        }
        if changed {
            rec.updated_ms = now.max(rec.updated_ms);
            rec.props.insert(modified.to_string(), iso(rec.updated_ms));
        }
        let new_key = (rec.updated_ms, id);
        table.values.insert(rec);
        if id_known_before {
            if new_key != old_key {
                table.by_modified.remove(&old_key);
                table.by_modified.insert(new_key);
                table.modified_counts.remove(&old_key);
                table.modified_counts.insert(new_key);
            }
        } else {
            table.by_modified.insert(new_key);
            table.modified_counts.insert(new_key);
        }
        if ot == ObjectType::Deals {
            self.derive_deal(id);
            if changed {
                for cid in self.associated_ids((ObjectType::Deals, id), ObjectType::Contacts) {
                    self.recompute_contact(cid);
                }
            }
        }
        Ok(id)
    }

    /// Maintains the deal's calculated stage properties.
    fn derive_deal(&mut self, id: u64) {
        let Some(rec) = self.table(ObjectType::Deals).records.get(&id) else {
            return;
        };
        let (closed, won, prob) = match self.deal_stage(&rec.props) {
            Some(st) => (
                st.is_closed,
                st.is_won(),
                st.probability.parse::<f64>().ok(),
            ),
            None => (false, false, None),
        };
        if let Some(rec) = self.table_mut(ObjectType::Deals).records.get_mut(&id) {
            rec.props.insert("hs_is_closed".into(), closed.to_string());
            rec.props.insert("hs_is_closed_won".into(), won.to_string());
            match prob {
                Some(p) => rec
                    .props
                    .insert("hs_deal_stage_probability".into(), number_text(p)),
                None => rec.props.remove("hs_deal_stage_probability"),
            };
        }
    }

    /// Archives a record (and drops its associations). Returns whether it was active.
    pub fn archive(&mut self, ot: ObjectType, id: u64, now: i64) -> bool {
        let table = self.table_mut(ot);
        let Some(rec) = table.records.get_mut(&id).filter(|r| !r.archived) else {
            return false;
        };
        rec.archived = true;
        rec.archived_ms = Some(now);
        table.by_modified.remove(&(rec.updated_ms, id));
        table.modified_counts.remove(&(rec.updated_ms, id));
        table.active_ids.remove(&id);
        table.values.remove(rec);
        for (k, index) in table.unique.iter_mut() {
            if let Some(v) = rec.props.get(k) {
                index.remove(&unique_key(k, v));
            }
        }
        for (k, index) in table.folded.iter_mut() {
            refold(index, id, rec.props.get(k).map(String::as_str), None);
        }
        let key = (ot, id);
        let partners: Vec<(ObjectType, u64)> = self
            .adj
            .get(&key)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for p in &partners {
            self.remove_pair(key, *p);
        }
        true
    }

    // ---- associations ----

    /// Association types from one object type to another.
    pub fn types_between(
        &self,
        from: ObjectType,
        to: ObjectType,
    ) -> impl Iterator<Item = &AssocType> {
        self.assoc_types
            .iter()
            .filter(move |t| t.from == from && t.to == to)
    }

    fn assoc_type(&self, from: ObjectType, to: ObjectType, type_id: u32) -> Option<&AssocType> {
        self.types_between(from, to).find(|t| t.type_id == type_id)
    }

    /// The default (unlabeled) type id from one type to another.
    pub fn default_type(&self, from: ObjectType, to: ObjectType) -> Option<u32> {
        self.types_between(from, to)
            .find(|t| t.default)
            .map(|t| t.type_id)
    }

    /// Associates two active records with one type (and its inverse, and the
    /// default unlabeled type). Does not touch `hs_lastmodifieddate`.
    pub fn associate(
        &mut self,
        from: (ObjectType, u64),
        to: (ObjectType, u64),
        category: &str,
        type_id: u32,
    ) -> Result<(), AssocError> {
        for (ot, id) in [from, to] {
            if self.table(ot).active(id).is_none() {
                return Err(AssocError::MissingObject(ot, id));
            }
        }
        let bad = || AssocError::BadType {
            category: category.to_string(),
            type_id,
            from: from.0,
            to: to.0,
        };
        let t = self
            .assoc_type(from.0, to.0, type_id)
            .filter(|t| t.category.eq_ignore_ascii_case(category))
            .ok_or_else(bad)?;
        let inverse = t.inverse;
        let default = self.default_type(from.0, to.0).ok_or_else(bad)?;
        let default_inv = self.default_type(to.0, from.0).ok_or_else(bad)?;
        let fwd = self.adj.entry(from).or_default().entry(to).or_default();
        fwd.insert(type_id);
        fwd.insert(default);
        let back = self.adj.entry(to).or_default().entry(from).or_default();
        back.insert(inverse);
        back.insert(default_inv);
        self.after_assoc_change(from, to);
        Ok(())
    }

    /// Removes every association between two records. Returns whether any existed.
    pub fn remove_pair(&mut self, a: (ObjectType, u64), b: (ObjectType, u64)) -> bool {
        let mut existed = false;
        for (x, y) in [(a, b), (b, a)] {
            if let Some(m) = self.adj.get_mut(&x) {
                existed |= m.remove(&y).is_some();
                if m.is_empty() {
                    self.adj.remove(&x);
                }
            }
        }
        if existed {
            self.after_assoc_change(a, b);
        }
        existed
    }

    /// Removes one labeled type (and its inverse) between two records; removing
    /// the default type removes the whole association.
    pub fn remove_type(
        &mut self,
        a: (ObjectType, u64),
        b: (ObjectType, u64),
        type_id: u32,
    ) -> bool {
        let Some(t) = self.assoc_type(a.0, b.0, type_id).cloned() else {
            return false;
        };
        if t.default {
            return self.remove_pair(a, b);
        }
        let mut existed = false;
        if let Some(set) = self.adj.get_mut(&a).and_then(|m| m.get_mut(&b)) {
            existed = set.remove(&type_id);
        }
        if let Some(set) = self.adj.get_mut(&b).and_then(|m| m.get_mut(&a)) {
            set.remove(&t.inverse);
        }
        existed
    }

    /// The type ids from `from` to each associated record of `to_type`, by id.
    pub fn associations(
        &self,
        from: (ObjectType, u64),
        to_type: ObjectType,
    ) -> Vec<(u64, Vec<&AssocType>)> {
        let Some(m) = self.adj.get(&from) else {
            return Vec::new();
        };
        m.range((to_type, 0)..=(to_type, u64::MAX))
            .map(|((ot, id), types)| {
                (
                    *id,
                    types
                        .iter()
                        .filter_map(|t| self.assoc_type(from.0, *ot, *t))
                        .collect(),
                )
            })
            .collect()
    }

    fn associated_ids(&self, from: (ObjectType, u64), to_type: ObjectType) -> Vec<u64> {
        self.adj
            .get(&from)
            .map(|m| {
                m.range((to_type, 0)..=(to_type, u64::MAX))
                    .map(|((_, id), _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Creates a user-defined label between two types (and its inverse).
    /// Returns both new types.
    pub fn create_label(
        &mut self,
        from: ObjectType,
        to: ObjectType,
        label: &str,
        inverse_label: Option<&str>,
    ) -> Vec<AssocType> {
        self.next_type_id += 2;
        let a = self.next_type_id - 1;
        let b = self.next_type_id;
        let fwd = AssocType {
            from,
            to,
            type_id: a,
            category: USER_DEFINED,
            label: Some(label.to_string()),
            inverse: b,
            default: false,
        };
        let back = AssocType {
            from: to,
            to: from,
            type_id: b,
            category: USER_DEFINED,
            label: Some(inverse_label.unwrap_or(label).to_string()),
            inverse: a,
            default: false,
        };
        self.assoc_types.push(fwd.clone());
        self.assoc_types.push(back.clone());
        if from == to {
            vec![fwd]
        } else {
            vec![fwd, back]
        }
    }

    fn after_assoc_change(&mut self, a: (ObjectType, u64), b: (ObjectType, u64)) {
        for (x, y) in [(a, b), (b, a)] {
            if x.0 == ObjectType::Contacts && y.0 == ObjectType::Deals {
                self.recompute_contact(x.1);
            }
        }
    }

    /// Recomputes the five calculated deal properties of a contact from its
    /// associated active deals. Does not bump `lastmodifieddate`.
    pub fn recompute_contact(&mut self, cid: u64) {
        let deals = self.table(ObjectType::Deals);
        let mut count = 0u64;
        let mut first_created: Option<i64> = None;
        let mut recent: Option<(i64, u64)> = None;
        let mut recent_amount: Option<String> = None;
        let mut recent_close: Option<String> = None;
        let mut revenue: Option<f64> = None;
        for did in self.associated_ids((ObjectType::Contacts, cid), ObjectType::Deals) {
            let Some(deal) = deals.active(did) else {
                continue;
            };
            count += 1;
            first_created = Some(first_created.map_or(deal.created_ms, |f| f.min(deal.created_ms)));
            if recent.is_none_or(|r| (deal.created_ms, deal.id) > r) {
                recent = Some((deal.created_ms, deal.id));
                recent_amount = deal.props.get("amount").cloned();
            }
            if self.deal_stage(&deal.props).is_some_and(Stage::is_won) {
                let amount = deal
                    .props
                    .get("amount")
                    .and_then(|a| a.parse::<f64>().ok())
                    .unwrap_or(0.0);
                revenue = Some(revenue.unwrap_or(0.0) + amount);
                if let Some(close) = deal.props.get("closedate")
                    && recent_close.as_ref().is_none_or(|c| close > c)
                {
                    recent_close = Some(close.clone());
                }
            }
        }
        let Some(contact) = self.table_mut(ObjectType::Contacts).records.get_mut(&cid) else {
            return;
        };
        let mut set = |k: &str, v: Option<String>| match v {
            Some(v) => {
                contact.props.insert(k.to_string(), v);
            }
            None => {
                contact.props.remove(k);
            }
        };
        set("num_associated_deals", Some(count.to_string()));
        set("first_deal_created_date", first_created.map(iso));
        set("recent_deal_amount", recent_amount);
        set("recent_deal_close_date", recent_close);
        set("total_revenue", revenue.map(number_text));
    }

    // ---- reads ----

    /// A record as HubSpot returns it. `props`: the requested properties
    /// (`None` = the type's defaults); `assoc`: types whose v3 associations to include.
    pub fn record_json(
        &self,
        ot: ObjectType,
        rec: &Record,
        props: Option<&[String]>,
        assoc: &[ObjectType],
    ) -> Value {
        let table = self.table(ot);
        let mut out = Map::new();
        let mut put = |name: &str| {
            if !out.contains_key(name) && table.prop(name).is_some() {
                out.insert(
                    name.to_string(),
                    rec.props
                        .get(name)
                        .map(|v| Value::String(v.clone()))
                        .unwrap_or(Value::Null),
                );
            }
        };
        match props {
            Some(list) => {
                for name in list {
                    put(name);
                }
                for name in ["createdate", ot.modified_prop(), "hs_object_id"] {
                    put(name);
                }
            }
            None => {
                for name in ot.default_props() {
                    put(name);
                }
            }
        }
        let mut v = json!({
            "id": rec.id.to_string(),
            "properties": Value::Object(out),
            "createdAt": iso(rec.created_ms),
            "updatedAt": iso(rec.updated_ms),
            "archived": rec.archived,
        });
        if let Some(ms) = rec.archived_ms {
            v["archivedAt"] = Value::String(iso(ms));
        }
        if !assoc.is_empty() {
            let mut a = Map::new();
            for to in assoc {
                let results: Vec<Value> = self
                    .associations((ot, rec.id), *to)
                    .into_iter()
                    .flat_map(|(id, types)| {
                        let has_primary = types
                            .iter()
                            .any(|t| t.label.is_some() && t.category == HUBSPOT_DEFINED)
                            || self
                                .types_between(ot, *to)
                                .any(|t| !t.default && t.category == HUBSPOT_DEFINED);
                        types.into_iter().map(
                            move |t| json!({"id": id.to_string(), "type": t.v3_name(has_primary)}),
                        )
                    })
                    .collect();
                if !results.is_empty() {
                    a.insert(to.plural().to_string(), json!({"results": results}));
                }
            }
            if !a.is_empty() {
                v["associations"] = Value::Object(a);
            }
        }
        v
    }

    /// Adds `propertiesWithHistory` for the named properties (unknown names
    /// are skipped, as `properties` skips them) to a record's JSON.
    pub fn add_history(&self, ot: ObjectType, rec: &Record, names: &[String], out: &mut Value) {
        if names.is_empty() {
            return;
        }
        let table = self.table(ot);
        let history: Map<String, Value> = names
            .iter()
            .filter(|n| table.prop(n).is_some())
            .map(|n| (n.clone(), rec.history_json(n)))
            .collect();
        out["propertiesWithHistory"] = Value::Object(history);
    }

    /// A record with every property it has (for create/update answers and snapshots).
    pub fn full_json(&self, ot: ObjectType, rec: &Record) -> Value {
        let names: Vec<String> = rec.props.keys().cloned().collect();
        self.record_json(ot, rec, Some(&names), &[])
    }

    /// Runs a search: returns the total number of matches and the ids of the
    /// page `[after, after + limit)` in order. Keyset-style queries (ranges on
    /// the last-modified time, sorted by it) stream from the ordered index,
    /// and time/id range reads count their `total` from the range-counting
    /// sets; the rest filter every record and sort once (see
    /// [`super::search`]).
    pub fn search(
        &self,
        ot: ObjectType,
        groups: &[Vec<Filter>],
        sorts: &[Sort],
        query: Option<&str>,
        after: usize,
        limit: usize,
    ) -> Result<(usize, Vec<u64>), String> {
        super::search::run(self.table(ot), groups, sorts, query, after, limit, true)
            .map(|(total, ids, _)| (total, ids))
    }

    /// [`Store::search`], also saying which plan answered; `use_index: false`
    /// forces the general path (for comparing the two).
    #[allow(clippy::too_many_arguments)] // `search`'s arguments plus the plan switch
    pub fn search_plan(
        &self,
        ot: ObjectType,
        groups: &[Vec<Filter>],
        sorts: &[Sort],
        query: Option<&str>,
        after: usize,
        limit: usize,
        use_index: bool,
    ) -> Result<(usize, Vec<u64>, Plan), String> {
        super::search::run(
            self.table(ot),
            groups,
            sorts,
            query,
            after,
            limit,
            use_index,
        )
    }

    // ---- snapshot ----

    /// All state as JSON.
    pub fn snapshot(&self) -> Value {
        let mut objects = Map::new();
        let mut properties = Map::new();
        for ot in ObjectType::ALL {
            let t = self.table(ot);
            objects.insert(
                ot.plural().into(),
                Value::Array(t.records.values().map(|r| self.full_json(ot, r)).collect()),
            );
            properties.insert(
                ot.plural().into(),
                serde_json::to_value(&t.props).unwrap_or(Value::Null),
            );
        }
        let mut associations = Vec::new();
        for ((fot, fid), m) in &self.adj {
            for ((tot, tid), types) in m {
                if (fot, fid) < (tot, tid) {
                    associations.push(json!({
                        "fromObjectTypeId": fot.type_id(), "fromObjectId": fid,
                        "toObjectTypeId": tot.type_id(), "toObjectId": tid,
                        "associationTypes": types.iter().filter_map(|t| self.assoc_type(*fot, *tot, *t)).map(AssocType::spec_json).collect::<Vec<_>>(),
                    }));
                }
            }
        }
        associations.sort_by_key(|a| {
            (
                a["fromObjectTypeId"].to_string(),
                a["fromObjectId"].as_u64(),
                a["toObjectTypeId"].to_string(),
                a["toObjectId"].as_u64(),
            )
        });
        json!({
            "owners": self.owners.iter().map(Owner::to_json).collect::<Vec<_>>(),
            "pipelines": {"deals": self.pipelines.iter().map(Pipeline::to_json).collect::<Vec<_>>()},
            "properties": properties,
            "objects": objects,
            "associations": associations,
            "associationLabels": self.assoc_types.iter().filter(|t| t.category == USER_DEFINED).map(|t| json!({
                "fromObjectTypeId": t.from.type_id(), "toObjectTypeId": t.to.type_id(),
                "category": t.category, "typeId": t.type_id, "label": t.label,
                "inverseTypeId": t.inverse,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Why a snapshot could not be loaded: where in the JSON, and what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("snapshot {at}: {message}")]
pub struct SnapshotError {
    /// A JSON path such as `objects.deals[3].updatedAt`.
    pub at: String,
    pub message: String,
}

fn snap_err(at: impl Into<String>, message: impl Into<String>) -> SnapshotError {
    SnapshotError {
        at: at.into(),
        message: message.into(),
    }
}

fn snap_field<'v>(v: &'v Value, at: &str, key: &str) -> Result<&'v Value, SnapshotError> {
    v.get(key)
        .ok_or_else(|| snap_err(format!("{at}.{key}"), "is missing"))
}

fn snap_array<'v>(v: &'v Value, at: &str, key: &str) -> Result<&'v [Value], SnapshotError> {
    snap_field(v, at, key)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| snap_err(format!("{at}.{key}"), "must be an array"))
}

fn snap_str<'v>(v: &'v Value, at: &str, key: &str) -> Result<&'v str, SnapshotError> {
    snap_field(v, at, key)?
        .as_str()
        .ok_or_else(|| snap_err(format!("{at}.{key}"), "must be a string"))
}

/// A number given as a JSON number or a decimal string.
fn snap_u64(v: &Value, at: &str, key: &str) -> Result<u64, SnapshotError> {
    let f = snap_field(v, at, key)?;
    f.as_u64()
        .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| {
            snap_err(
                format!("{at}.{key}"),
                format!("{f} is not a non-negative integer"),
            )
        })
}

fn snap_ms(v: &Value, at: &str, key: &str) -> Result<i64, SnapshotError> {
    let text = snap_str(v, at, key)?;
    parse_datetime_ms(text).ok_or_else(|| {
        snap_err(
            format!("{at}.{key}"),
            format!("{text:?} is not an ISO-8601 datetime"),
        )
    })
}

fn snap_type(v: &Value, at: &str, key: &str) -> Result<ObjectType, SnapshotError> {
    let t = snap_str(v, at, key)?;
    ObjectType::parse(t)
        .ok_or_else(|| snap_err(format!("{at}.{key}"), format!("unknown object type {t:?}")))
}

impl Store {
    /// Rebuilds a portal from [`Store::snapshot`]'s JSON: owners, pipelines,
    /// property definitions, records (archived ones included), user-defined
    /// association labels and associations. Indexes and calculated properties
    /// are rebuilt from the data, never trusted from the file. Any
    /// inconsistency (unknown property, bad value, duplicate id or unique
    /// value, association to a missing or archived record) is an error naming
    /// where it is; nothing is partially loaded.
    pub fn from_snapshot(v: &Value) -> Result<Store, SnapshotError> {
        if !v.is_object() {
            return Err(snap_err("$", "must be a JSON object"));
        }
        let mut s = Store::new();
        s.owners = Vec::new();
        for (i, o) in snap_array(v, "$", "owners")?.iter().enumerate() {
            let at = format!("owners[{i}]");
            s.owners.push(Owner {
                id: snap_u64(o, &at, "id")?,
                email: snap_str(o, &at, "email")?.to_string(),
                first_name: snap_str(o, &at, "firstName")?.to_string(),
                last_name: snap_str(o, &at, "lastName")?.to_string(),
                user_id: snap_u64(o, &at, "userId")?,
                created_ms: snap_ms(o, &at, "createdAt")?,
            });
        }
        let pipelines = snap_field(v, "$", "pipelines")?;
        s.pipelines = Vec::new();
        let mut max_meta = s.next_meta_id;
        for (i, p) in snap_array(pipelines, "pipelines", "deals")?
            .iter()
            .enumerate()
        {
            let at = format!("pipelines.deals[{i}]");
            let mut stages = Vec::new();
            for (j, st) in snap_array(p, &at, "stages")?.iter().enumerate() {
                let sat = format!("{at}.stages[{j}]");
                let meta = snap_field(st, &sat, "metadata")?;
                let mat = format!("{sat}.metadata");
                let probability = snap_str(meta, &mat, "probability")?;
                if probability.parse::<f64>().is_err() {
                    return Err(snap_err(format!("{mat}.probability"), "must be a number"));
                }
                let is_closed = match snap_str(meta, &mat, "isClosed")? {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(snap_err(
                            format!("{mat}.isClosed"),
                            format!("{other:?} is not \"true\" or \"false\""),
                        ));
                    }
                };
                let id = snap_str(st, &sat, "id")?.to_string();
                max_meta = max_meta.max(id.parse().unwrap_or(0));
                stages.push(Stage {
                    id,
                    label: snap_str(st, &sat, "label")?.to_string(),
                    display_order: snap_field(st, &sat, "displayOrder")?.as_i64().ok_or_else(
                        || snap_err(format!("{sat}.displayOrder"), "must be an integer"),
                    )?,
                    probability: probability.to_string(),
                    is_closed,
                    created_ms: snap_ms(st, &sat, "createdAt")?,
                });
            }
            let id = snap_str(p, &at, "id")?.to_string();
            if s.pipelines.iter().any(|q| q.id == id) {
                return Err(snap_err(
                    format!("{at}.id"),
                    format!("duplicate pipeline id {id}"),
                ));
            }
            max_meta = max_meta.max(id.parse().unwrap_or(0));
            s.pipelines.push(Pipeline {
                id,
                label: snap_str(p, &at, "label")?.to_string(),
                display_order: snap_field(p, &at, "displayOrder")?
                    .as_i64()
                    .ok_or_else(|| snap_err(format!("{at}.displayOrder"), "must be an integer"))?,
                stages,
                created_ms: snap_ms(p, &at, "createdAt")?,
            });
        }
        if s.pipeline("default").is_none() {
            return Err(snap_err(
                "pipelines.deals",
                "the default pipeline (id \"default\") is missing",
            ));
        }
        s.next_meta_id = max_meta;
        let properties = snap_field(v, "$", "properties")?;
        for ot in ObjectType::ALL {
            let at = format!("properties.{}", ot.plural());
            let defs: Vec<PropertyDef> =
                serde_json::from_value(snap_field(properties, "properties", ot.plural())?.clone())
                    .map_err(|e| snap_err(&at, e.to_string()))?;
            let standard = Table::new(ot);
            let mut table = Table::new(ot);
            table.props = Vec::new();
            table.prop_index = HashMap::new();
            for (i, def) in defs.into_iter().enumerate() {
                if table.prop_index.contains_key(&def.name) {
                    return Err(snap_err(
                        format!("{at}[{i}]"),
                        format!("duplicate property {}", def.name),
                    ));
                }
                table.add_prop(def);
            }
            table.values = ValueIndexes::for_table(ot, &table.props);
            if let Some(missing) = standard
                .props
                .iter()
                .find(|d| table.prop(&d.name).is_none())
            {
                return Err(snap_err(
                    at,
                    format!("the standard property {} is missing", missing.name),
                ));
            }
            s.tables[tidx(ot)] = table;
        }
        for (i, l) in v
            .get("associationLabels")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("associationLabels[{i}]");
            let type_id = u32::try_from(snap_u64(l, &at, "typeId")?)
                .map_err(|_| snap_err(format!("{at}.typeId"), "is too large"))?;
            let inverse = match l.get("inverseTypeId") {
                Some(_) => u32::try_from(snap_u64(l, &at, "inverseTypeId")?)
                    .map_err(|_| snap_err(format!("{at}.inverseTypeId"), "is too large"))?,
                // Older snapshots: labels are made in pairs (odd id, next even id).
                None if type_id % 2 == 1 => type_id + 1,
                None => type_id - 1,
            };
            if s.assoc_types.iter().any(|t| t.type_id == type_id) || type_id < 1000 {
                return Err(snap_err(
                    format!("{at}.typeId"),
                    format!("{type_id} is not a free user-defined type id"),
                ));
            }
            s.assoc_types.push(AssocType {
                from: snap_type(l, &at, "fromObjectTypeId")?,
                to: snap_type(l, &at, "toObjectTypeId")?,
                type_id,
                category: USER_DEFINED,
                label: l.get("label").and_then(Value::as_str).map(str::to_string),
                inverse,
                default: false,
            });
            s.next_type_id = s.next_type_id.max(type_id.max(inverse));
        }
        for t in s.assoc_types.iter().filter(|t| t.category == USER_DEFINED) {
            if !s
                .assoc_types
                .iter()
                .any(|u| u.type_id == t.inverse && u.from == t.to && u.to == t.from)
            {
                return Err(snap_err(
                    "associationLabels",
                    format!(
                        "label type {} has no inverse type {} from {} to {}",
                        t.type_id,
                        t.inverse,
                        t.to.plural(),
                        t.from.plural()
                    ),
                ));
            }
        }
        let objects = snap_field(v, "$", "objects")?;
        let mut max_id = s.next_id;
        for ot in ObjectType::ALL {
            let modified = ot.modified_prop();
            for (i, o) in snap_array(objects, "objects", ot.plural())?
                .iter()
                .enumerate()
            {
                let at = format!("objects.{}[{i}]", ot.plural());
                let id = snap_u64(o, &at, "id")?;
                let created_ms = snap_ms(o, &at, "createdAt")?;
                let updated_ms = snap_ms(o, &at, "updatedAt")?;
                let archived = match o.get("archived") {
                    None => false,
                    Some(b) => b.as_bool().ok_or_else(|| {
                        snap_err(format!("{at}.archived"), "must be true or false")
                    })?,
                };
                let archived_ms = match o.get("archivedAt") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(snap_ms(o, &at, "archivedAt")?),
                };
                let table = &s.tables[tidx(ot)];
                let mut props = BTreeMap::new();
                let given = snap_field(o, &at, "properties")?
                    .as_object()
                    .ok_or_else(|| snap_err(format!("{at}.properties"), "must be an object"))?;
                for (name, raw) in given {
                    let pat = format!("{at}.properties.{name}");
                    if raw.is_null() {
                        continue;
                    }
                    let def = table
                        .prop(name)
                        .ok_or_else(|| snap_err(&pat, "is not a defined property"))?;
                    if let Some(value) =
                        schema::normalize(def, raw).map_err(|e| snap_err(&pat, e.message))?
                    {
                        props.insert(name.clone(), value);
                    }
                }
                if props
                    .get("hs_object_id")
                    .is_some_and(|v| *v != id.to_string())
                {
                    return Err(snap_err(
                        format!("{at}.properties.hs_object_id"),
                        format!("differs from the record id {id}"),
                    ));
                }
                if props
                    .get(modified)
                    .is_some_and(|v| parse_datetime_ms(v) != Some(updated_ms))
                {
                    return Err(snap_err(
                        format!("{at}.properties.{modified}"),
                        "differs from updatedAt",
                    ));
                }
                props.insert("hs_object_id".into(), id.to_string());
                props.insert(modified.into(), iso(updated_ms));
                props
                    .entry("createdate".into())
                    .or_insert_with(|| iso(created_ms));
                let table = &mut s.tables[tidx(ot)];
                if table.records.contains_key(&id) {
                    return Err(snap_err(
                        format!("{at}.id"),
                        format!("duplicate {} id {id}", ot.singular()),
                    ));
                }
                if !archived {
                    for (k, index) in table.unique.iter_mut() {
                        if let Some(v) = props.get(k)
                            && let Some(other) = index.insert(unique_key(k, v), id)
                        {
                            return Err(snap_err(
                                format!("{at}.properties.{k}"),
                                format!(
                                    "{v:?} is also the value of record {other}, but {k} is unique"
                                ),
                            ));
                        }
                    }
                    for (k, index) in table.folded.iter_mut() {
                        refold(index, id, None, props.get(k).map(String::as_str));
                    }
                    table.by_modified.insert((updated_ms, id));
                }
                let rec = Record {
                    id,
                    props,
                    created_ms,
                    updated_ms,
                    archived,
                    archived_ms,
                    history: BTreeMap::new(),
                };
                if !archived {
                    table.values.insert(&rec);
                }
                table.records.insert(id, rec);
                max_id = max_id.max(id);
            }
        }
        s.next_id = max_id;
        for table in s.tables.iter_mut() {
            table.recount();
        }
        let assocs = v
            .get("associations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, a) in assocs.iter().enumerate() {
            let at = format!("associations[{i}]");
            let from = (
                snap_type(a, &at, "fromObjectTypeId")?,
                snap_u64(a, &at, "fromObjectId")?,
            );
            let to = (
                snap_type(a, &at, "toObjectTypeId")?,
                snap_u64(a, &at, "toObjectId")?,
            );
            for (ot, id) in [from, to] {
                if s.table(ot).active(id).is_none() {
                    return Err(snap_err(
                        &at,
                        format!("{} {id} is not an active record", ot.singular()),
                    ));
                }
            }
            let mut fwd = BTreeSet::new();
            let mut back = BTreeSet::new();
            for (j, t) in snap_array(a, &at, "associationTypes")?.iter().enumerate() {
                let tat = format!("{at}.associationTypes[{j}]");
                let type_id = u32::try_from(snap_u64(t, &tat, "typeId")?)
                    .map_err(|_| snap_err(format!("{tat}.typeId"), "is too large"))?;
                let ty = s.assoc_type(from.0, to.0, type_id).ok_or_else(|| {
                    snap_err(
                        format!("{tat}.typeId"),
                        format!(
                            "{type_id} is not an association type from {} to {}",
                            from.0.plural(),
                            to.0.plural()
                        ),
                    )
                })?;
                fwd.insert(type_id);
                back.insert(ty.inverse);
            }
            if fwd.is_empty() {
                return Err(snap_err(format!("{at}.associationTypes"), "is empty"));
            }
            s.adj.entry(from).or_default().insert(to, fwd);
            s.adj.entry(to).or_default().insert(from, back);
        }
        let deals: Vec<u64> = s
            .table(ObjectType::Deals)
            .by_modified
            .iter()
            .map(|k| k.1)
            .collect();
        for id in deals {
            s.derive_deal(id);
        }
        let contacts: Vec<u64> = s
            .table(ObjectType::Contacts)
            .by_modified
            .iter()
            .map(|k| k.1)
            .filter(|c| {
                !s.associated_ids((ObjectType::Contacts, *c), ObjectType::Deals)
                    .is_empty()
            })
            .collect();
        for c in contacts {
            s.recompute_contact(c);
        }
        Ok(s)
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// HubSpot moves a contact's lifecycle stage only forward through the API: a set to an
/// earlier stage of its default order is ignored, without an error (clear it first to go
/// back). `other` and stages outside the order move freely.
fn keep_lifecycle_forward(existing: Option<&Record>, changes: &mut Changes) {
    const ORDER: [&str; 7] = [
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
    ];
    let rank = |s: &str| ORDER.iter().position(|x| *x == s);
    let Some(current) = existing
        .and_then(|r| r.props.get("lifecyclestage"))
        .and_then(|s| rank(s))
    else {
        return;
    };
    changes.retain(|(name, v)| {
        name != "lifecyclestage" || v.as_deref().and_then(rank).is_none_or(|new| new >= current)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn create(s: &mut Store, ot: ObjectType, v: Value, now: i64) -> u64 {
        let ch = s.validate(ot, None, &props(v)).unwrap();
        s.apply(ot, None, ch, now, &Faults::default()).unwrap()
    }

    fn update(s: &mut Store, ot: ObjectType, id: u64, v: Value, now: i64) {
        let rec = s.table(ot).active(id).cloned();
        let ch = s.validate(ot, rec.as_ref(), &props(v)).unwrap();
        s.apply(ot, Some(id), ch, now, &Faults::default()).unwrap();
    }

    fn prop(s: &Store, ot: ObjectType, id: u64, name: &str) -> Option<String> {
        s.table(ot).records[&id].props.get(name).cloned()
    }

    #[test]
    fn deals_default_to_first_stage_and_reject_foreign_stages() {
        let mut s = Store::new();
        let d = create(&mut s, ObjectType::Deals, json!({"dealname": "A"}), 1000);
        assert_eq!(
            prop(&s, ObjectType::Deals, d, "pipeline").as_deref(),
            Some("default")
        );
        assert_eq!(
            prop(&s, ObjectType::Deals, d, "dealstage").as_deref(),
            Some("appointmentscheduled")
        );
        let errs = s
            .validate(
                ObjectType::Deals,
                None,
                &props(json!({"dealstage": "nope"})),
            )
            .unwrap_err();
        assert_eq!(errs[0].code, "INVALID_OPTION");
        assert_eq!(errs[0].name, "dealstage");
        let errs = s
            .validate(ObjectType::Deals, None, &props(json!({"pipeline": "p9"})))
            .unwrap_err();
        assert_eq!(errs[0].name, "pipeline");
    }

    #[test]
    fn a_contact_lifecycle_stage_moves_back_only_once_cleared() {
        let mut s = Store::new();
        let ct = ObjectType::Contacts;
        let c = create(&mut s, ct, json!({"email": "a@b.example"}), 1000);
        let stage = |s: &Store| prop(s, ct, c, "lifecyclestage");
        update(&mut s, ct, c, json!({"lifecyclestage": "customer"}), 1001);
        update(&mut s, ct, c, json!({"lifecyclestage": "lead"}), 1002);
        assert_eq!(stage(&s).as_deref(), Some("customer"), "ignored, no error");
        update(&mut s, ct, c, json!({"lifecyclestage": "evangelist"}), 1003);
        assert_eq!(stage(&s).as_deref(), Some("evangelist"));
        update(&mut s, ct, c, json!({"lifecyclestage": ""}), 1004);
        update(&mut s, ct, c, json!({"lifecyclestage": "lead"}), 1005);
        assert_eq!(stage(&s).as_deref(), Some("lead"));
        update(&mut s, ct, c, json!({"lifecyclestage": "other"}), 1006);
        update(&mut s, ct, c, json!({"lifecyclestage": "subscriber"}), 1007);
        assert_eq!(
            stage(&s).as_deref(),
            Some("subscriber"),
            "`other` is outside the order"
        );
    }

    #[test]
    fn rollups_follow_associations_and_deal_edits() {
        let mut s = Store::new();
        let c = create(
            &mut s,
            ObjectType::Contacts,
            json!({"email": "a@x.com"}),
            1000,
        );
        let d1 = create(
            &mut s,
            ObjectType::Deals,
            json!({"amount": "100", "dealstage": "closedwon", "closedate": "2026-01-05"}),
            2000,
        );
        let d2 = create(
            &mut s,
            ObjectType::Deals,
            json!({"amount": "50", "dealstage": "qualifiedtobuy", "closedate": "2026-02-01"}),
            3000,
        );
        let before = prop(&s, ObjectType::Contacts, c, "lastmodifieddate");
        s.associate(
            (ObjectType::Contacts, c),
            (ObjectType::Deals, d1),
            HUBSPOT_DEFINED,
            4,
        )
        .unwrap();
        s.associate(
            (ObjectType::Deals, d2),
            (ObjectType::Contacts, c),
            HUBSPOT_DEFINED,
            3,
        )
        .unwrap();
        let p = |s: &Store, n| prop(s, ObjectType::Contacts, c, n);
        assert_eq!(p(&s, "num_associated_deals").as_deref(), Some("2"));
        assert_eq!(p(&s, "first_deal_created_date"), Some(iso(2000)));
        assert_eq!(
            p(&s, "recent_deal_amount").as_deref(),
            Some("50"),
            "from the most recently created deal"
        );
        assert_eq!(p(&s, "total_revenue").as_deref(), Some("100"));
        assert_eq!(
            p(&s, "recent_deal_close_date").as_deref(),
            Some("2026-01-05T00:00:00.000Z")
        );
        assert_eq!(
            p(&s, "lastmodifieddate"),
            before,
            "associations do not bump lastmodifieddate"
        );
        update(
            &mut s,
            ObjectType::Deals,
            d2,
            json!({"dealstage": "closedwon", "amount": "70"}),
            4000,
        );
        assert_eq!(p(&s, "total_revenue").as_deref(), Some("170"));
        assert_eq!(p(&s, "recent_deal_amount").as_deref(), Some("70"));
        assert_eq!(
            p(&s, "recent_deal_close_date").as_deref(),
            Some("2026-02-01T00:00:00.000Z")
        );
        assert!(s.archive(ObjectType::Deals, d2, 5000));
        assert_eq!(p(&s, "num_associated_deals").as_deref(), Some("1"));
        assert_eq!(p(&s, "recent_deal_amount").as_deref(), Some("100"));
        assert!(s.remove_pair((ObjectType::Deals, d1), (ObjectType::Contacts, c)));
        assert_eq!(p(&s, "num_associated_deals").as_deref(), Some("0"));
        assert_eq!(p(&s, "total_revenue"), None);
    }

    #[test]
    fn unique_values_conflict_and_free_on_archive() {
        let mut s = Store::new();
        let a = create(&mut s, ObjectType::Contacts, json!({"email": "A@x.com"}), 1);
        let ch = s
            .validate(
                ObjectType::Contacts,
                None,
                &props(json!({"email": "a@X.com"})),
            )
            .unwrap();
        let err = s
            .apply(
                ObjectType::Contacts,
                None,
                ch.clone(),
                2,
                &Faults::default(),
            )
            .unwrap_err();
        assert!(matches!(err, RecordError::Conflict(m) if m.contains(&a.to_string())));
        assert_eq!(
            s.table(ObjectType::Contacts).find_by("email", "a@x.COM"),
            Some(a)
        );
        s.archive(ObjectType::Contacts, a, 3);
        assert!(
            s.apply(ObjectType::Contacts, None, ch, 4, &Faults::default())
                .is_ok()
        );
    }

    #[test]
    fn modified_date_moves_only_on_real_changes() {
        let mut s = Store::new();
        let d = create(&mut s, ObjectType::Deals, json!({"dealname": "A"}), 1000);
        update(&mut s, ObjectType::Deals, d, json!({"dealname": "A"}), 2000);
        assert_eq!(s.table(ObjectType::Deals).records[&d].updated_ms, 1000);
        update(&mut s, ObjectType::Deals, d, json!({"dealname": "B"}), 3000);
        assert_eq!(s.table(ObjectType::Deals).records[&d].updated_ms, 3000);
        assert_eq!(
            prop(&s, ObjectType::Deals, d, "hs_lastmodifieddate"),
            Some(iso(3000))
        );
    }

    #[test]
    fn search_sorts_pages_and_filters() {
        let mut s = Store::new();
        for i in 0..50 {
            create(
                &mut s,
                ObjectType::Deals,
                json!({"dealname": format!("deal {i}"), "amount": i.to_string()}),
                1000 + (i % 5),
            );
        }
        let f = Filter {
            property_name: "amount".into(),
            operator: "GTE".into(),
            value: Some(json!("10")),
            ..Default::default()
        };
        let sorts = [
            Sort {
                property: "hs_lastmodifieddate".into(),
                descending: false,
            },
            Sort {
                property: "hs_object_id".into(),
                descending: false,
            },
        ];
        let (total, page1) = s
            .search(ObjectType::Deals, &[vec![f.clone()]], &sorts, None, 0, 7)
            .unwrap();
        assert_eq!(total, 40);
        let (_, all) = s
            .search(ObjectType::Deals, &[vec![f]], &sorts, None, 0, 100)
            .unwrap();
        assert_eq!(&all[..7], &page1[..]);
        let key = |id: &u64| (s.table(ObjectType::Deals).records[id].updated_ms, *id);
        assert!(
            all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
            "sorted by (modified, id)"
        );
        let tok = Filter {
            property_name: "dealname".into(),
            operator: "CONTAINS_TOKEN".into(),
            value: Some(json!("4*")),
            ..Default::default()
        };
        let (n, _) = s
            .search(ObjectType::Deals, &[vec![tok]], &[], None, 0, 100)
            .unwrap();
        assert_eq!(n, 11, "4 and 40..49");
        let bad = Filter {
            property_name: "nope".into(),
            operator: "EQ".into(),
            value: Some(json!("1")),
            ..Default::default()
        };
        assert!(
            s.search(ObjectType::Deals, &[vec![bad]], &[], None, 0, 10)
                .is_err()
        );
    }
}
