//! The org's records and every operation on them: writes with validation and
//! derived fields, undo for allOrNone, SOQL execution and page rendering
//! (the open cursors themselves live in [`super::cursors`]), and the
//! replication (updated/deleted) views.
//!
//! All of it is synchronous: callers hold the org lock only for one call and
//! never across an `.await`. Nothing here may panic on client input.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use chrono::{Duration as ChronoDuration, NaiveTime, Utc};
use serde_json::{Map, Value, json};

use super::API_VERSION;
use super::errors::ApiError;
use super::ids;
use super::schema::CHILD_RELATIONSHIPS;
use super::schema::{EXTERNAL_ID_FIELD, FieldType, ObjectDef, STAGES, Schema, obj};
use super::soql::{self, AggFunc, Cond, Literal, Op, Select, SelectItem};
use super::value::{Val, from_json, to_json, write_json, write_json_str, write_key};
use crate::control::Faults;

/// One stored record; values align with the object's field list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub vals: Vec<Val>,
    /// When the record was deleted (epoch ms), for `deleted/` and queryAll.
    pub deleted_at: Option<i64>,
}

impl Row {
    pub fn id(&self) -> &str {
        self.vals.first().and_then(Val::as_str).unwrap_or("")
    }
}

/// The records of one object.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub rows: Vec<Arc<Row>>,
    pub by_id: HashMap<String, usize>,
    /// External id value -> row (live rows only).
    pub by_ext: HashMap<String, usize>,
    /// OpportunityContactRole only: OpportunityId -> rows.
    pub by_parent: HashMap<String, Vec<usize>>,
    pub next_seq: u64,
}

/// A change to undo when an allOrNone request fails.
enum Undo {
    /// The row at `idx` was appended.
    Appended { obj: usize, idx: usize },
    /// The row at `idx` was replaced; this was its previous version.
    Replaced {
        obj: usize,
        idx: usize,
        prev: Arc<Row>,
    },
}

/// A query's result: the matching rows (shared snapshots) and the columns to
/// render, served in pages of `page_size`. Cheap to clone.
#[derive(Clone)]
pub struct Cursor {
    obj: usize,
    plan: Arc<Vec<Column>>,
    rows: Arc<Vec<Arc<Row>>>,
    page_size: usize,
    /// The [`Org::instance`] that ran the query; other orgs refuse the cursor.
    org_instance: u64,
}

impl Cursor {
    /// Whether rows remain after the first page.
    pub fn has_more_pages(&self) -> bool {
        self.rows.len() > self.page_size
    }
}

/// What a SOQL query returns.
pub enum QueryResult {
    /// `SELECT COUNT() ...`: just the number of matching rows.
    Count(usize),
    Rows(Cursor),
    /// An aggregate query's whole response (`AggregateResult` records).
    Aggregate(Value),
}

/// A child relationship subquery, resolved: the child rows whose reference
/// field `ref_idx` holds the parent's id, filtered, ordered and limited.
struct ChildColumn {
    name: &'static str,
    child: usize,
    ref_idx: usize,
    plan: Vec<Column>,
    filter: Option<Filter>,
    order: Vec<(Accessor, bool, bool)>,
    limit: Option<u64>,
    /// `queryAll`: deleted children too.
    all: bool,
}

impl std::fmt::Debug for ChildColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildColumn")
            .field("name", &self.name)
            .field("child", &self.child)
            .finish_non_exhaustive()
    }
}

/// Child rows by parent id, for the children columns of one page.
type ChildRows<'a> = HashMap<&'a str, Vec<usize>>;

/// A selected column: a field of the row, a field of a parent record, or a
/// child relationship subquery.
#[derive(Debug, Clone)]
enum Column {
    Children(Arc<ChildColumn>),
    Field {
        name: String,
        idx: usize,
        ty: FieldType,
    },
    Parent {
        rel: String,
        ref_idx: usize,
        target: usize,
        fields: Vec<(String, usize, FieldType)>,
    },
}

/// Who does a write, and under which fault profile.
pub struct WriteCtx<'a> {
    pub user_id: &'a str,
    pub now: i64,
    pub faults: &'a Faults,
}

/// The whole org.
pub struct Org {
    pub schema: Arc<Schema>,
    pub tables: Vec<Table>,
    pub multi_currency: bool,
    /// Start of the deleted-records horizon (epoch ms).
    pub earliest_deleted_available: i64,
    /// Identifies this org's rows for query cursors: unique per org, renewed
    /// when deleted rows are purged, so older cursors become invalid.
    instance: u64,
    undo: Option<Vec<Undo>>,
}

fn next_org_instance() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, AtomicOrdering::Relaxed)
}

/// The default and maximum query page size.
pub const PAGE_SIZE: usize = 2000;

/// Current time in epoch ms, truncated to whole seconds as Salesforce stores it.
pub fn now_ms() -> i64 {
    let ms = Utc::now().timestamp_millis();
    ms - ms.rem_euclid(1000)
}

fn field_list(fields: &[String]) -> String {
    fields.join(", ")
}

impl Org {
    pub fn new(schema: Arc<Schema>, multi_currency: bool) -> Org {
        let n = schema.objects.len();
        Org {
            schema,
            tables: vec![Table::default(); n],
            multi_currency,
            earliest_deleted_available: now_ms(),
            instance: next_org_instance(),
            undo: None,
        }
    }

    pub fn object(&self, name: &str) -> Result<usize, ApiError> {
        self.schema.object_index(name).ok_or_else(|| {
            ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!(
                    "The requested resource does not exist: sObject type '{name}' is not supported."
                ),
            )
        })
    }

    fn def(&self, o: usize) -> &ObjectDef {
        &self.schema.objects[o]
    }

    fn fidx(&self, o: usize, name: &str) -> usize {
        self.def(o).field_index(name).unwrap_or(0)
    }

    /// Appends a fully built row (used by seeding and snapshots; no validation).
    pub fn insert_raw(&mut self, o: usize, row: Row) {
        let id = row.id().to_string();
        let idx = self.tables[o].rows.len();
        self.tables[o].rows.push(Arc::new(row));
        self.tables[o].by_id.insert(id, idx);
        self.index_row(o, idx);
    }

    fn index_row(&mut self, o: usize, idx: usize) {
        let row = self.tables[o].rows[idx].clone();
        if row.deleted_at.is_none()
            && let Some(ext) = self.def(o).field_index(EXTERNAL_ID_FIELD)
            && let Some(v) = row.vals[ext].as_str()
        {
            self.tables[o].by_ext.insert(v.to_string(), idx);
        }
        if o == obj::OCR {
            let opp = self.fidx(o, "OpportunityId");
            if let Some(p) = row.vals[opp].as_str() {
                let list = self.tables[o].by_parent.entry(p.to_string()).or_default();
                if !list.contains(&idx) {
                    list.push(idx);
                }
            }
        }
    }

    fn unindex_row(&mut self, o: usize, idx: usize) {
        let row = self.tables[o].rows[idx].clone();
        if let Some(ext) = self.def(o).field_index(EXTERNAL_ID_FIELD)
            && let Some(v) = row.vals[ext].as_str()
            && self.tables[o].by_ext.get(v) == Some(&idx)
        {
            self.tables[o].by_ext.remove(v);
        }
        if o == obj::OCR {
            let opp = self.fidx(o, "OpportunityId");
            if let Some(p) = row.vals[opp].as_str()
                && let Some(list) = self.tables[o].by_parent.get_mut(p)
            {
                list.retain(|i| *i != idx);
            }
        }
    }

    fn replace_row(&mut self, o: usize, idx: usize, row: Row) {
        self.unindex_row(o, idx);
        let prev = std::mem::replace(&mut self.tables[o].rows[idx], Arc::new(row));
        if let Some(u) = &mut self.undo {
            u.push(Undo::Replaced { obj: o, idx, prev });
        }
        self.index_row(o, idx);
    }

    fn append_row(&mut self, o: usize, row: Row) -> usize {
        let idx = self.tables[o].rows.len();
        let id = row.id().to_string();
        self.tables[o].rows.push(Arc::new(row));
        self.tables[o].by_id.insert(id, idx);
        self.index_row(o, idx);
        if let Some(u) = &mut self.undo {
            u.push(Undo::Appended { obj: o, idx });
        }
        idx
    }

    /// Starts recording changes so that [`Org::rollback`] can undo them.
    pub fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Stops recording and keeps the changes.
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Undoes every change since [`Org::begin`].
    pub fn rollback(&mut self) {
        let Some(log) = self.undo.take() else { return };
        for u in log.into_iter().rev() {
            match u {
                Undo::Appended { obj: o, idx } => {
                    self.unindex_row(o, idx);
                    if let Some(row) = self.tables[o].rows.pop() {
                        self.tables[o].by_id.remove(row.id());
                    }
                }
                Undo::Replaced { obj: o, idx, prev } => {
                    self.unindex_row(o, idx);
                    self.tables[o].rows[idx] = prev;
                    self.index_row(o, idx);
                }
            }
        }
    }

    /// Finds a live or deleted row by id.
    pub fn find(&self, o: usize, id: &str) -> Option<usize> {
        let id = ids::normalize(id).ok()?;
        self.tables[o].by_id.get(&id).copied()
    }

    /// The live row with this id, or NOT_FOUND / ENTITY_IS_DELETED.
    pub fn get_live(&self, o: usize, id: &str) -> Result<usize, ApiError> {
        let idx = self.find(o, id).ok_or_else(ApiError::not_found)?;
        if self.tables[o].rows[idx].deleted_at.is_some() {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "ENTITY_IS_DELETED",
                "entity is deleted",
            ));
        }
        Ok(idx)
    }

    /// Whether a reference value points to a live record of one of `targets`.
    fn check_reference(&self, field: &super::schema::FieldDef, id: &str) -> Result<(), ApiError> {
        let target = field
            .reference_to
            .first()
            .and_then(|t| self.schema.object_index(t));
        let Some(t) = target else { return Ok(()) };
        if !id.starts_with(self.def(t).key_prefix) {
            return Err(ApiError::bad(
                "FIELD_INTEGRITY_EXCEPTION",
                format!(
                    "field integrity exception: unknown ({}: id value of incorrect type: {id})",
                    field.label
                ),
            )
            .with_fields(vec![field.name.to_string()]));
        }
        match self.tables[t].by_id.get(id) {
            Some(i) if self.tables[t].rows[*i].deleted_at.is_none() => Ok(()),
            Some(_) => Err(ApiError::bad("ENTITY_IS_DELETED", "entity is deleted")
                .with_fields(vec![field.name.to_string()])),
            None => Err(ApiError::bad(
                "INVALID_CROSS_REFERENCE_KEY",
                format!("invalid cross reference id: {id}"),
            )
            .with_fields(vec![field.name.to_string()])),
        }
    }

    /// Applies a create (`existing` = None) or an update to a record of object `o`.
    /// `body` holds the fields the client sent (`attributes` and, for updates,
    /// `Id`/`id` already removed or ignored).
    fn apply(
        &mut self,
        o: usize,
        existing: Option<usize>,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<usize, ApiError> {
        let schema = self.schema.clone();
        let def = &schema.objects[o];
        if !def.writable {
            return Err(ApiError::bad(
                "INVALID_TYPE_FOR_OPERATION",
                format!(
                    "entity type {} does not support {}",
                    def.name,
                    if existing.is_some() {
                        "update"
                    } else {
                        "insert"
                    }
                ),
            ));
        }
        let mut row: Row = match existing {
            Some(idx) => (*self.tables[o].rows[idx]).clone(),
            None => Row {
                vals: vec![Val::Null; def.fields.len()],
                deleted_at: None,
            },
        };
        let mut touched = vec![false; def.fields.len()];
        let mut not_writable = Vec::new();
        for (key, value) in body {
            if key == "attributes" {
                continue;
            }
            let Some(fi) = def.visible_field(key, self.multi_currency) else {
                return Err(ApiError::bad(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {}", def.name),
                )
                .with_fields(vec![key.clone()]));
            };
            let f = &def.fields[fi];
            if f.name == "Id" {
                if existing.is_none() {
                    return Err(ApiError::bad(
                        "INVALID_FIELD",
                        "Id field should not be specified in the sobject data.",
                    )
                    .with_fields(vec!["Id".into()]));
                }
                // An update may repeat its own id.
                let same = value
                    .as_str()
                    .and_then(|s| ids::normalize(s).ok())
                    .is_some_and(|s| s == row.id());
                if !same {
                    return Err(ApiError::bad(
                        "INVALID_FIELD",
                        "Id in the body does not match the record being updated",
                    )
                    .with_fields(vec!["Id".into()]));
                }
                continue;
            }
            let allowed = if existing.is_some() {
                f.updateable
            } else {
                f.createable
            };
            if !allowed {
                not_writable.push(f.name.to_string());
                continue;
            }
            let v = from_json(f, value)?;
            if f.restricted_picklist
                && let Val::Str(s) = &v
                && !f.picklist.iter().any(|p| p == s)
            {
                return Err(ApiError::bad(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!("{}: bad value for restricted picklist field: {s}", f.label),
                )
                .with_fields(vec![f.name.to_string()]));
            }
            if f.ty == FieldType::Reference
                && let Val::Str(id) = &v
            {
                self.check_reference(f, id)?;
            }
            row.vals[fi] = v;
            touched[fi] = true;
        }
        if !not_writable.is_empty() {
            return Err(ApiError::bad(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    field_list(&not_writable)
                ),
            )
            .with_fields(not_writable));
        }
        // Defaults and derived fields.
        let idx_of = |n: &str| def.field_index(n);
        if existing.is_none() {
            if let Some(i) = idx_of("OwnerId")
                && row.vals[i].is_null()
            {
                row.vals[i] = Val::Str(ctx.user_id.to_string());
            }
            if let Some(i) = idx_of("CurrencyIsoCode")
                && row.vals[i].is_null()
            {
                row.vals[i] = Val::Str(super::schema::CURRENCIES[0].to_string());
            }
            if o == obj::OPPORTUNITY
                && let Some(i) = idx_of("RecordTypeId")
                && row.vals[i].is_null()
                && let Some(rt) = self.default_record_type()
            {
                row.vals[i] = Val::Str(rt);
            }
            if let Some(i) = idx_of("IsPrimary")
                && row.vals[i].is_null()
            {
                row.vals[i] = Val::Bool(false);
            }
        }
        if let Some(i) = idx_of("OwnerId")
            && row.vals[i].is_null()
            && touched[i]
        {
            return Err(ApiError::bad(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [OwnerId]",
            )
            .with_fields(vec!["OwnerId".into()]));
        }
        let missing: Vec<String> = def
            .fields
            .iter()
            .enumerate()
            .filter(|(i, f)| f.required && row.vals[*i].is_null())
            .map(|(_, f)| f.name.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::bad(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", field_list(&missing)),
            )
            .with_fields(missing));
        }
        if o == obj::OPPORTUNITY {
            let stage_i = self.fidx(o, "StageName");
            if let Some(stage) = row.vals[stage_i].as_str()
                && let Some((_, prob, closed, won, forecast)) = STAGES.iter().find(|s| s.0 == stage)
            {
                row.vals[self.fidx(o, "IsClosed")] = Val::Bool(*closed);
                row.vals[self.fidx(o, "IsWon")] = Val::Bool(*won);
                let fc = self.fidx(o, "ForecastCategoryName");
                if touched[stage_i] && !touched[fc] {
                    row.vals[fc] = Val::Str(forecast.to_string());
                }
                let p = self.fidx(o, "Probability");
                if touched[stage_i] && !touched[p] {
                    row.vals[p] = Val::Num(*prob);
                }
            }
        }
        if o == obj::CONTACT {
            let first = row.vals[self.fidx(o, "FirstName")]
                .as_str()
                .unwrap_or("")
                .to_string();
            let last = row.vals[self.fidx(o, "LastName")]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = if first.is_empty() {
                last
            } else {
                format!("{first} {last}")
            };
            row.vals[self.fidx(o, "Name")] = Val::Str(name);
        }
        // Unique external id.
        if let Some(ei) = idx_of(EXTERNAL_ID_FIELD)
            && touched[ei]
            && let Some(v) = row.vals[ei].as_str()
            && let Some(other) = self.tables[o].by_ext.get(v)
            && Some(*other) != existing
        {
            let other_id = self.tables[o].rows[*other].id().to_string();
            return Err(ApiError::bad("DUPLICATE_VALUE", format!("duplicate value found: {EXTERNAL_ID_FIELD} duplicates value on record with id: {other_id}"))
                .with_fields(vec![EXTERNAL_ID_FIELD.to_string()]));
        }
        // Forced validation failures (fault profile), judged on the merged record.
        let profile = ctx.faults.current();
        if !profile.validation_failures.is_empty() {
            let mut merged = Map::new();
            for v in profile
                .validation_failures
                .iter()
                .filter(|v| v.object.eq_ignore_ascii_case(def.name))
            {
                if let Some(fi) = def.field_index(&v.field) {
                    merged.insert(
                        def.fields[fi].name.to_string(),
                        to_json(&row.vals[fi], def.fields[fi].ty),
                    );
                }
            }
            if let Some(v) = ctx.faults.forced_validation(def.name, &merged) {
                return Err(ApiError::bad(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    v.message,
                ));
            }
        }
        // System fields.
        let now = Val::Time(ctx.now);
        let user = Val::Str(ctx.user_id.to_string());
        if existing.is_none() {
            let t = &mut self.tables[o];
            let id = ids::make_id(def.key_prefix, t.next_seq + 1);
            t.next_seq += 1;
            row.vals[0] = Val::Str(id);
            for (n, v) in [
                ("CreatedDate", &now),
                ("CreatedById", &user),
                ("IsDeleted", &Val::Bool(false)),
            ] {
                if let Some(i) = idx_of(n) {
                    row.vals[i] = v.clone();
                }
            }
        }
        for (n, v) in [
            ("LastModifiedDate", &now),
            ("LastModifiedById", &user),
            ("SystemModstamp", &now),
        ] {
            if let Some(i) = idx_of(n) {
                row.vals[i] = v.clone();
            }
        }
        // One primary contact role per opportunity: a new primary demotes the others.
        let demote = if o == obj::OCR && row.vals[self.fidx(o, "IsPrimary")].as_bool() {
            row.vals[self.fidx(o, "OpportunityId")]
                .as_str()
                .map(str::to_string)
        } else {
            None
        };
        let idx = match existing {
            Some(idx) => {
                self.replace_row(o, idx, row);
                idx
            }
            None => self.append_row(o, row),
        };
        if let Some(opp) = demote {
            let primary_i = self.fidx(o, "IsPrimary");
            let others: Vec<usize> = self.tables[o]
                .by_parent
                .get(&opp)
                .cloned()
                .unwrap_or_default();
            for other in others {
                let r = &self.tables[o].rows[other];
                if other != idx && r.deleted_at.is_none() && r.vals[primary_i].as_bool() {
                    let mut r2 = (**r).clone();
                    r2.vals[primary_i] = Val::Bool(false);
                    for n in ["LastModifiedDate", "SystemModstamp"] {
                        r2.vals[self.fidx(o, n)] = now.clone();
                    }
                    self.replace_row(o, other, r2);
                }
            }
        }
        Ok(idx)
    }

    fn default_record_type(&self) -> Option<String> {
        let t = &self.tables[obj::RECORD_TYPE];
        let sobj = self.fidx(obj::RECORD_TYPE, "SobjectType");
        t.rows
            .iter()
            .find(|r| r.vals[sobj].as_str() == Some("Opportunity"))
            .map(|r| r.id().to_string())
    }

    /// Creates a record; returns its id.
    pub fn create(
        &mut self,
        o: usize,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<String, ApiError> {
        let idx = self.apply(o, None, body, ctx)?;
        Ok(self.tables[o].rows[idx].id().to_string())
    }

    /// Updates a live record.
    pub fn update(
        &mut self,
        o: usize,
        id: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<String, ApiError> {
        let idx = self.get_live(o, id)?;
        self.apply(o, Some(idx), body, ctx)?;
        Ok(self.tables[o].rows[idx].id().to_string())
    }

    /// Upserts by external id field; returns (id, created).
    pub fn upsert(
        &mut self,
        o: usize,
        field: &str,
        value: &str,
        body: &Map<String, Value>,
        ctx: &WriteCtx,
    ) -> Result<(String, bool), ApiError> {
        let def = self.def(o);
        let fi = def
            .field_index(field)
            .filter(|i| def.fields[*i].external_id || def.fields[*i].name == "Id");
        let Some(fi) = fi else {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Provided external ID field does not exist or is not accessible: {field}"),
            ));
        };
        if def.fields[fi].name == "Id" {
            return match self.find(o, value) {
                Some(_) => self.update(o, value, body, ctx).map(|id| (id, false)),
                None => self.create(o, body, ctx).map(|id| (id, true)),
            };
        }
        // The body may repeat the key field with the same value, never another one.
        if let Some((k, v)) = body.iter().find(|(k, _)| k.eq_ignore_ascii_case(field))
            && v.as_str() != Some(value)
        {
            return Err(ApiError::bad(
                "INVALID_FIELD",
                format!(
                    "{k} specified in the body does not match the external id value in the URL"
                ),
            )
            .with_fields(vec![k.clone()]));
        }
        let mut body = body.clone();
        body.retain(|k, _| !k.eq_ignore_ascii_case(field));
        match self.tables[o].by_ext.get(value).copied() {
            Some(idx) => {
                let id = self.tables[o].rows[idx].id().to_string();
                self.apply(o, Some(idx), &body, ctx)?;
                Ok((id, false))
            }
            None => {
                body.insert(
                    self.def(o).fields[fi].name.to_string(),
                    Value::String(value.to_string()),
                );
                self.create(o, &body, ctx).map(|id| (id, true))
            }
        }
    }

    /// Deletes a live record (opportunity deletes cascade to its contact roles).
    pub fn delete(
        &mut self,
        id: &str,
        expected: Option<usize>,
        ctx: &WriteCtx,
    ) -> Result<String, ApiError> {
        let norm = ids::normalize(id)
            .map_err(|_| ApiError::bad("MALFORMED_ID", format!("malformed id {id}")))?;
        let o = self
            .schema
            .object_for_id(&norm)
            .ok_or_else(|| ApiError::bad("MALFORMED_ID", format!("malformed id {id}")))?;
        if let Some(e) = expected
            && e != o
        {
            return Err(ApiError::not_found());
        }
        if !self.def(o).writable {
            return Err(ApiError::bad(
                "INVALID_TYPE_FOR_OPERATION",
                format!("entity type {} does not support delete", self.def(o).name),
            ));
        }
        let idx = self.get_live(o, &norm)?;
        self.mark_deleted(o, idx, ctx.now);
        if o == obj::OPPORTUNITY {
            let roles = self.tables[obj::OCR]
                .by_parent
                .get(&norm)
                .cloned()
                .unwrap_or_default();
            for r in roles {
                if self.tables[obj::OCR].rows[r].deleted_at.is_none() {
                    self.mark_deleted(obj::OCR, r, ctx.now);
                }
            }
        }
        Ok(norm)
    }

    fn mark_deleted(&mut self, o: usize, idx: usize, now: i64) {
        let mut row = (*self.tables[o].rows[idx]).clone();
        row.deleted_at = Some(now);
        if let Some(i) = self.def(o).field_index("IsDeleted") {
            row.vals[i] = Val::Bool(true);
        }
        if let Some(i) = self.def(o).field_index("SystemModstamp") {
            row.vals[i] = Val::Time(now);
        }
        self.replace_row(o, idx, row);
        // Deleted rows give up their external id.
        if let Some(ext) = self.def(o).field_index(EXTERNAL_ID_FIELD)
            && let Some(v) = self.tables[o].rows[idx].vals[ext].as_str()
            && self.tables[o].by_ext.get(v) == Some(&idx)
        {
            let v = v.to_string();
            self.tables[o].by_ext.remove(&v);
        }
    }

    /// Renders a record with the `attributes` header, all visible fields or the named ones.
    pub fn render(&self, o: usize, row: &Row, fields: Option<&[usize]>) -> Value {
        let def = self.def(o);
        let mut m = Map::new();
        m.insert(
            "attributes".into(),
            json!({"type": def.name, "url": format!("{}/{}", def.url(), row.id())}),
        );
        let mut put = |i: usize| {
            let f = &def.fields[i];
            m.insert(f.name.to_string(), to_json(&row.vals[i], f.ty));
        };
        match fields {
            Some(list) => list.iter().for_each(|i| put(*i)),
            None => (0..def.fields.len())
                .filter(|i| self.multi_currency || !def.fields[*i].multi_currency_only)
                .for_each(put),
        }
        Value::Object(m)
    }

    /// Resolves a `fields=a,b` list.
    pub fn field_indexes(&self, o: usize, list: &str) -> Result<Vec<usize>, ApiError> {
        let def = self.def(o);
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                def.visible_field(name, self.multi_currency).ok_or_else(|| {
                    ApiError::bad("INVALID_FIELD", format!("No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.", def.name))
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- queries

    /// Runs a SOQL query; render its pages with [`Org::render_page`].
    pub fn query(&self, q: &str, all: bool, page_size: usize) -> Result<QueryResult, ApiError> {
        let parsed =
            soql::parse(q).map_err(|e| ApiError::bad("MALFORMED_QUERY", format!("\n{q}\n{e}")))?;
        let o = self.schema.object_index(&parsed.from).ok_or_else(|| {
            ApiError::bad(
                "INVALID_TYPE",
                format!("\n{q}\nERROR at Row:1:Column:{}\nsObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.", parsed.from_pos, parsed.from),
            )
        })?;
        let invalid_field = |path: &soql::FieldPath| no_such_column(q, path, self.def(o).name);
        let filter = self.resolve_filter(o, parsed.filter.as_ref(), &invalid_field, q)?;
        let order = if parsed.select.has_aggregates() || !parsed.group_by.is_empty() {
            // Aggregate queries order by grouped fields (checked there).
            Vec::new()
        } else {
            self.resolve_order(o, &parsed.order, &invalid_field)?
        };
        if parsed.select.has_aggregates() || !parsed.group_by.is_empty() {
            let rows = self.matching_rows(o, filter.as_ref(), all);
            return self
                .aggregate(o, &parsed, rows, q, &invalid_field)
                .map(QueryResult::Aggregate);
        }
        let mut rows = self.matching_rows(o, filter.as_ref(), all);
        if !order.is_empty() {
            // Only the rows up to OFFSET + LIMIT need to be in order.
            let wanted = parsed
                .limit
                .map(|l| (l as usize).saturating_add(parsed.offset.unwrap_or(0) as usize));
            rows = self.sort_rows(rows, &order, wanted);
        }
        if let Some(off) = parsed.offset {
            if off > 2000 {
                return Err(ApiError::bad(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    format!("\n{q}\nMaximum SOQL offset allowed is 2000"),
                ));
            }
            rows.drain(..(off as usize).min(rows.len()));
        }
        if let Some(limit) = parsed.limit {
            rows.truncate(limit.min(usize::MAX as u64) as usize);
        }
        let rows: Vec<Arc<Row>> = rows.into_iter().cloned().collect();
        let columns = match &parsed.select {
            Select::Count => return Ok(QueryResult::Count(rows.len())),
            Select::Items(items) => {
                let mut cols: Vec<Column> = Vec::new();
                for item in items {
                    match item {
                        SelectItem::Field(path) => {
                            let col = self
                                .resolve_column(o, path)
                                .ok_or_else(|| invalid_field(path))?;
                            push_column(&mut cols, col);
                        }
                        SelectItem::Children(sub) => {
                            let child = self.resolve_children(o, sub, all, q)?;
                            if cols
                                .iter()
                                .any(|c| matches!(c, Column::Children(x) if x.name == child.name))
                            {
                                return Err(ApiError::bad(
                                    "MALFORMED_QUERY",
                                    format!(
                                        "\n{q}\nERROR at Row:1:Column:{}\nduplicate relationship subquery {}",
                                        sub.relationship_pos, child.name
                                    ),
                                ));
                            }
                            cols.push(Column::Children(Arc::new(child)));
                        }
                        // Aggregate queries were answered above.
                        SelectItem::Aggregate(_) => {}
                    }
                }
                cols
            }
        };
        Ok(QueryResult::Rows(Cursor {
            obj: o,
            plan: Arc::new(columns),
            rows: Arc::new(rows),
            page_size: page_size.clamp(1, PAGE_SIZE),
            org_instance: self.instance,
        }))
    }

    /// A WHERE clause of object `o` resolved to accessors.
    fn resolve_filter(
        &self,
        o: usize,
        cond: Option<&Cond>,
        invalid: &dyn Fn(&soql::FieldPath) -> ApiError,
        q: &str,
    ) -> Result<Option<Filter>, ApiError> {
        cond.map(|c| self.resolve_cond(o, c, invalid, q))
            .transpose()
    }

    /// ORDER BY items of object `o`: (accessor, descending, nulls first).
    fn resolve_order(
        &self,
        o: usize,
        items: &[soql::OrderItem],
        invalid: &dyn Fn(&soql::FieldPath) -> ApiError,
    ) -> Result<Vec<(Accessor, bool, bool)>, ApiError> {
        items
            .iter()
            .map(|item| {
                let a = self
                    .resolve_path(o, &item.field)
                    .ok_or_else(|| invalid(&item.field))?;
                Ok((a, item.descending, item.nulls_first))
            })
            .collect()
    }

    /// The rows of object `o` passing `filter` (deleted ones only for
    /// `queryAll`), in table order.
    fn matching_rows(&self, o: usize, filter: Option<&Filter>, all: bool) -> Vec<&Arc<Row>> {
        let today = Utc::now().date_naive();
        let indexed = filter.and_then(|f| self.indexed_rows(o, f));
        let table = &self.tables[o].rows;
        let scanned: Box<dyn Iterator<Item = &Arc<Row>>> = match &indexed {
            Some(idx) => Box::new(idx.iter().map(|i| &table[*i])),
            None => Box::new(table.iter()),
        };
        scanned
            .filter(|r| all || r.deleted_at.is_none())
            .filter(|r| filter.is_none_or(|f| self.eval(f, r, today)))
            .collect()
    }

    /// Resolves a child relationship subquery of object `o`.
    fn resolve_children(
        &self,
        o: usize,
        sub: &soql::SubQuery,
        all: bool,
        q: &str,
    ) -> Result<ChildColumn, ApiError> {
        let parent = self.def(o).name;
        let rel = CHILD_RELATIONSHIPS
            .iter()
            .find(|c| c.parent == parent && c.name.eq_ignore_ascii_case(&sub.relationship))
            .ok_or_else(|| {
                ApiError::bad(
                    "INVALID_TYPE",
                    format!(
                        "\n{q}\nERROR at Row:1:Column:{}\nDidn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.",
                        sub.relationship_pos, sub.relationship
                    ),
                )
            })?;
        let child = self.schema.object_index(rel.child).ok_or_else(|| {
            ApiError::bad(
                "INVALID_TYPE",
                format!("unknown child object {}", rel.child),
            )
        })?;
        let invalid = |path: &soql::FieldPath| no_such_column(q, path, rel.child);
        let mut plan = Vec::new();
        for path in &sub.fields {
            let col = self
                .resolve_column(child, path)
                .ok_or_else(|| invalid(path))?;
            push_column(&mut plan, col);
        }
        let filter = self.resolve_filter(child, sub.filter.as_ref(), &invalid, q)?;
        let order = self.resolve_order(child, &sub.order, &invalid)?;
        Ok(ChildColumn {
            name: rel.name,
            child,
            ref_idx: self.fidx(child, rel.field),
            plan,
            filter,
            order,
            limit: sub.limit,
            all,
        })
    }

    /// Answers an aggregate query (aggregate functions, `GROUP BY`): one
    /// `AggregateResult` record per group (one in all without `GROUP BY`),
    /// groups in order of first appearance unless ordered by grouped fields;
    /// unaliased aggregates are named `expr0`, `expr1`, ...
    fn aggregate(
        &self,
        o: usize,
        parsed: &soql::Query,
        rows: Vec<&Arc<Row>>,
        q: &str,
        invalid: &dyn Fn(&soql::FieldPath) -> ApiError,
    ) -> Result<Value, ApiError> {
        use std::cmp::Ordering;
        let malformed = |pos: usize, m: String| {
            ApiError::bad(
                "MALFORMED_QUERY",
                format!("\n{q}\nERROR at Row:1:Column:{pos}\n{m}"),
            )
        };
        let Select::Items(items) = &parsed.select else {
            return Err(malformed(
                1,
                "COUNT() cannot be combined with GROUP BY".into(),
            ));
        };
        // Grouped fields: accessor and output key (the field's own name).
        let mut groups: Vec<(Accessor, String)> = Vec::new();
        for g in &parsed.group_by {
            let key = match self.resolve_column(o, g).ok_or_else(|| invalid(g))? {
                Column::Field { name, .. } => name,
                Column::Parent { fields, .. } => fields[0].0.clone(),
                Column::Children(_) => return Err(invalid(g)),
            };
            let a = self.resolve_path(o, g).ok_or_else(|| invalid(g))?;
            if a.ty == FieldType::TextArea {
                return Err(malformed(
                    g.pos,
                    format!("field '{}' can not be grouped in a query call", g.display()),
                ));
            }
            groups.push((a, key));
        }
        let grouped = |path: &soql::FieldPath| {
            parsed
                .group_by
                .iter()
                .position(|g| g.display().eq_ignore_ascii_case(&path.display()))
        };
        enum Out {
            Group(usize),
            Agg(AggFunc, Accessor, String),
        }
        let mut outs = Vec::new();
        let mut unnamed = 0;
        for item in items {
            match item {
                SelectItem::Field(path) => {
                    let g = grouped(path).ok_or_else(|| {
                        malformed(
                            path.pos,
                            format!("Field must be grouped or aggregated: {}", path.display()),
                        )
                    })?;
                    outs.push(Out::Group(g));
                }
                SelectItem::Aggregate(agg) => {
                    let a = self
                        .resolve_path(o, &agg.field)
                        .ok_or_else(|| invalid(&agg.field))?;
                    let supported = match agg.func {
                        AggFunc::Sum | AggFunc::Avg => a.ty.is_number(),
                        AggFunc::Min | AggFunc::Max => {
                            !matches!(a.ty, FieldType::Boolean | FieldType::TextArea)
                        }
                        AggFunc::Count | AggFunc::CountDistinct => a.ty != FieldType::TextArea,
                    };
                    if !supported {
                        return Err(malformed(
                            agg.pos,
                            format!(
                                "field {} does not support aggregate operator {}",
                                agg.field.display(),
                                agg.func.name()
                            ),
                        ));
                    }
                    let key = match &agg.alias {
                        Some(alias) => alias.clone(),
                        None => {
                            unnamed += 1;
                            format!("expr{}", unnamed - 1)
                        }
                    };
                    outs.push(Out::Agg(agg.func, a, key));
                }
                SelectItem::Children(sub) => {
                    return Err(malformed(
                        sub.relationship_pos,
                        "relationship subqueries cannot be combined with aggregate functions or GROUP BY".into(),
                    ));
                }
            }
        }
        let mut order = Vec::new();
        for item in &parsed.order {
            let g = grouped(&item.field).ok_or_else(|| {
                malformed(
                    item.field.pos,
                    format!(
                        "Ordered field must be grouped or aggregated: {}",
                        item.field.display()
                    ),
                )
            })?;
            order.push((g, item.descending, item.nulls_first));
        }
        // Rows by group, groups in order of first appearance.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut members: Vec<(Vec<&Val>, Vec<&Arc<Row>>)> = Vec::new();
        for r in rows {
            let vals: Vec<&Val> = groups.iter().map(|(a, _)| self.access(a, r)).collect();
            let key = vals
                .iter()
                .zip(&groups)
                .map(|(v, (a, _))| to_json(v, a.ty).to_string())
                .collect::<Vec<_>>()
                .join("\u{1}");
            let n = *index.entry(key).or_insert_with(|| {
                members.push((vals, Vec::new()));
                members.len() - 1
            });
            members[n].1.push(r);
        }
        if groups.is_empty() && members.is_empty() {
            members.push((Vec::new(), Vec::new()));
        }
        if !order.is_empty() {
            members.sort_by(|(a, _), (b, _)| {
                for (g, desc, nulls_first) in &order {
                    let (x, y) = (a[*g], b[*g]);
                    let o = match (x.is_null(), y.is_null()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => {
                            if *nulls_first {
                                Ordering::Less
                            } else {
                                Ordering::Greater
                            }
                        }
                        (false, true) => {
                            if *nulls_first {
                                Ordering::Greater
                            } else {
                                Ordering::Less
                            }
                        }
                        (false, false) => {
                            let c = compare(x, y);
                            if *desc { c.reverse() } else { c }
                        }
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
        }
        let offset = parsed.offset.unwrap_or(0).min(usize::MAX as u64) as usize;
        let limit = parsed
            .limit
            .map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize);
        let records: Vec<Value> = members
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(vals, rows)| {
                let mut m = Map::new();
                m.insert("attributes".into(), json!({"type": "AggregateResult"}));
                for out in &outs {
                    let (key, v) = match out {
                        Out::Group(g) => (groups[*g].1.clone(), to_json(vals[*g], groups[*g].0.ty)),
                        Out::Agg(func, a, key) => (
                            key.clone(),
                            aggregate_value(*func, a, rows.iter().map(|r| self.access(a, r))),
                        ),
                    };
                    m.insert(key, v);
                }
                Value::Object(m)
            })
            .collect();
        Ok(json!({"totalSize": records.len(), "done": true, "records": records}))
    }

    /// Sorts `rows` by ORDER BY `order` (accessor, descending, nulls first);
    /// rows that tie keep their scan order. With `wanted`, only that many
    /// leading rows are put in order and the rest are dropped.
    fn sort_rows<'a>(
        &'a self,
        rows: Vec<&'a Arc<Row>>,
        order: &[(Accessor, bool, bool)],
        wanted: Option<usize>,
    ) -> Vec<&'a Arc<Row>> {
        use std::cmp::Ordering;
        let width = order.len();
        // One flat buffer of borrowed keys; the scan position breaks ties, so
        // the unstable sorts below give the stable order.
        let keys: Vec<&Val> = rows
            .iter()
            .flat_map(|r| order.iter().map(|(a, _, _)| self.access(a, r)))
            .collect();
        let cmp = |a: &usize, b: &usize| -> Ordering {
            let (ka, kb) = (&keys[a * width..][..width], &keys[b * width..][..width]);
            for ((acc, desc, nulls_first), (x, y)) in order.iter().zip(ka.iter().zip(kb)) {
                let ord = match (x.is_null(), y.is_null()) {
                    (true, true) => Ordering::Equal,
                    (true, false) if *nulls_first => Ordering::Less,
                    (true, false) => Ordering::Greater,
                    (false, true) if *nulls_first => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => {
                        // Ids sort case-sensitively (their case is significant).
                        let c = match (acc.ty, x, y) {
                            (FieldType::Id | FieldType::Reference, Val::Str(a), Val::Str(b)) => {
                                a.cmp(b)
                            }
                            _ => compare(x, y),
                        };
                        if *desc { c.reverse() } else { c }
                    }
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            a.cmp(b)
        };
        let mut positions: Vec<usize> = (0..rows.len()).collect();
        if let Some(n) = wanted
            && n < positions.len()
        {
            if n == 0 {
                return Vec::new();
            }
            positions.select_nth_unstable_by(n - 1, cmp);
            positions.truncate(n);
        }
        positions.sort_unstable_by(cmp);
        positions.into_iter().map(|p| rows[p]).collect()
    }

    /// Renders the page of `cursor` that starts at row `start` as a JSON
    /// response body; `locator` names the cursor in `nextRecordsUrl` and must
    /// be given when rows remain after this page. Fails for a cursor of
    /// another org or a start outside the result.
    pub fn render_page(
        &self,
        cursor: &Cursor,
        start: usize,
        locator: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let total = cursor.rows.len();
        if cursor.org_instance != self.instance || (start > 0 && start >= total) {
            return Err(super::cursors::invalid_locator());
        }
        let end = (start + cursor.page_size).min(total);
        let next = match locator {
            Some(l) if end < total => Some(l),
            _ => None,
        };
        let mut out = Vec::with_capacity(256 + (end - start) * 64 * (cursor.plan.len() + 2));
        out.extend_from_slice(
            format!("{{\"totalSize\":{total},\"done\":{}", next.is_none()).as_bytes(),
        );
        if let Some(l) = next {
            out.extend_from_slice(
                format!(",\"nextRecordsUrl\":\"/services/data/{API_VERSION}/query/{l}-{end}\"")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(b",\"records\":[");
        let page = &cursor.rows[start..end];
        let children = self.child_rows(&cursor.plan, page);
        for (n, row) in page.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            self.write_columns(&mut out, cursor.obj, &cursor.plan, row, &children);
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// Writes `{"attributes":{"type":..,"url":..}` (without the closing brace).
    fn write_attributes(&self, out: &mut Vec<u8>, o: usize, id: &str) {
        let def = self.def(o);
        out.extend_from_slice(b"{\"attributes\":{\"type\":");
        write_json_str(out, def.name);
        out.extend_from_slice(b",\"url\":");
        write_json_str(out, &format!("{}/{id}", def.url()));
        out.push(b'}');
    }

    /// For each children column of `plan` (by position), the child rows of
    /// the page's records by parent id (one pass over the child table).
    fn child_rows<'a>(&'a self, plan: &[Column], page: &'a [Arc<Row>]) -> Vec<ChildRows<'a>> {
        plan.iter()
            .map(|c| {
                let Column::Children(ch) = c else {
                    return ChildRows::new();
                };
                let mut map: ChildRows<'a> = page.iter().map(|r| (r.id(), Vec::new())).collect();
                for (i, child) in self.tables[ch.child].rows.iter().enumerate() {
                    if let Some(list) = child.vals[ch.ref_idx]
                        .as_str()
                        .and_then(|id| map.get_mut(id))
                    {
                        list.push(i);
                    }
                }
                map
            })
            .collect()
    }

    /// Writes one child relationship of a record: `null` without children,
    /// else `{"totalSize","done":true,"records":[...]}`.
    fn write_children(&self, out: &mut Vec<u8>, ch: &ChildColumn, rows: Option<&Vec<usize>>) {
        let today = Utc::now().date_naive();
        let table = &self.tables[ch.child].rows;
        let mut kept: Vec<&Arc<Row>> = rows
            .into_iter()
            .flatten()
            .map(|i| &table[*i])
            .filter(|r| ch.all || r.deleted_at.is_none())
            .filter(|r| ch.filter.as_ref().is_none_or(|f| self.eval(f, r, today)))
            .collect();
        let limit = ch.limit.map(|l| l.min(usize::MAX as u64) as usize);
        if !ch.order.is_empty() {
            kept = self.sort_rows(kept, &ch.order, limit);
        }
        if let Some(l) = limit {
            kept.truncate(l);
        }
        if kept.is_empty() {
            out.extend_from_slice(b"null");
            return;
        }
        out.extend_from_slice(
            format!("{{\"totalSize\":{},\"done\":true,\"records\":[", kept.len()).as_bytes(),
        );
        for (n, r) in kept.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            self.write_columns(out, ch.child, &ch.plan, r, &[]);
        }
        out.extend_from_slice(b"]}");
    }

    fn write_columns(
        &self,
        out: &mut Vec<u8>,
        o: usize,
        plan: &[Column],
        row: &Row,
        children: &[ChildRows<'_>],
    ) {
        self.write_attributes(out, o, row.id());
        for (k, c) in plan.iter().enumerate() {
            match c {
                Column::Children(ch) => {
                    write_key(out, ch.name);
                    self.write_children(out, ch, children.get(k).and_then(|m| m.get(row.id())));
                }
                Column::Field { name, idx, ty } => {
                    write_key(out, name);
                    write_json(out, &row.vals[*idx], *ty);
                }
                Column::Parent {
                    rel,
                    ref_idx,
                    target,
                    fields,
                } => {
                    write_key(out, rel);
                    let parent = row.vals[*ref_idx]
                        .as_str()
                        .and_then(|id| self.tables[*target].by_id.get(id))
                        .map(|i| &self.tables[*target].rows[*i]);
                    match parent {
                        None => out.extend_from_slice(b"null"),
                        Some(p) => {
                            self.write_attributes(out, *target, p.id());
                            for (n, i, ty) in fields {
                                write_key(out, n);
                                write_json(out, &p.vals[*i], *ty);
                            }
                            out.push(b'}');
                        }
                    }
                }
            }
        }
        out.push(b'}');
    }

    fn resolve_column(&self, o: usize, path: &soql::FieldPath) -> Option<Column> {
        let def = self.def(o);
        match path.parts.as_slice() {
            [f] => {
                let i = def.visible_field(f, self.multi_currency)?;
                Some(Column::Field {
                    name: def.fields[i].name.to_string(),
                    idx: i,
                    ty: def.fields[i].ty,
                })
            }
            [rel, f] => {
                let ri = def.relationship(rel)?;
                let target = self
                    .schema
                    .object_index(def.fields[ri].reference_to.first()?)?;
                let tdef = self.def(target);
                let fi = tdef.visible_field(f, self.multi_currency)?;
                Some(Column::Parent {
                    rel: def.fields[ri].relationship_name?.to_string(),
                    ref_idx: ri,
                    target,
                    fields: vec![(tdef.fields[fi].name.to_string(), fi, tdef.fields[fi].ty)],
                })
            }
            _ => None,
        }
    }

    fn resolve_path(&self, o: usize, path: &soql::FieldPath) -> Option<Accessor> {
        match self.resolve_column(o, path)? {
            Column::Field { idx, ty, .. } => Some(Accessor {
                parent: None,
                idx,
                ty,
            }),
            Column::Parent {
                ref_idx,
                target,
                fields,
                ..
            } => fields.first().map(|(_, i, ty)| Accessor {
                parent: Some((ref_idx, target)),
                idx: *i,
                ty: *ty,
            }),
            Column::Children(_) => None,
        }
    }

    /// The value an accessor reads from `row` (null for a missing parent).
    fn access<'a>(&'a self, a: &Accessor, row: &'a Row) -> &'a Val {
        static NULL: Val = Val::Null;
        match a.parent {
            None => &row.vals[a.idx],
            Some((ref_idx, target)) => row.vals[ref_idx]
                .as_str()
                .and_then(|id| self.tables[target].by_id.get(id))
                .map(|i| &self.tables[target].rows[*i].vals[a.idx])
                .unwrap_or(&NULL),
        }
    }

    fn resolve_cond(
        &self,
        o: usize,
        c: &Cond,
        invalid: &dyn Fn(&soql::FieldPath) -> ApiError,
        q: &str,
    ) -> Result<Filter, ApiError> {
        let typed = |a: &Accessor, lit: &Literal, pos: usize| -> Result<Lit, ApiError> {
            coerce_literal(a.ty, lit).ok_or_else(|| type_mismatch(q, pos, a.ty, lit))
        };
        Ok(match c {
            Cond::And(a, b) => Filter::And(
                Box::new(self.resolve_cond(o, a, invalid, q)?),
                Box::new(self.resolve_cond(o, b, invalid, q)?),
            ),
            Cond::Or(a, b) => Filter::Or(
                Box::new(self.resolve_cond(o, a, invalid, q)?),
                Box::new(self.resolve_cond(o, b, invalid, q)?),
            ),
            Cond::Not(a) => Filter::Not(Box::new(self.resolve_cond(o, a, invalid, q)?)),
            Cond::Cmp {
                field,
                op,
                value,
                pos,
            } => {
                let a = self.resolve_path(o, field).ok_or_else(|| invalid(field))?;
                let lit = typed(&a, value, *pos)?;
                if matches!(lit, Lit::Val(Val::Null)) && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(ApiError::bad(
                        "MALFORMED_QUERY",
                        format!(
                            "\n{q}\nERROR at Row:1:Column:{pos}\nnull can only be compared with = or !="
                        ),
                    ));
                }
                Filter::Cmp(a, *op, lit)
            }
            Cond::In {
                field,
                negated,
                values,
                pos,
            } => {
                let a = self.resolve_path(o, field).ok_or_else(|| invalid(field))?;
                let vals = values
                    .iter()
                    .map(|v| typed(&a, v, *pos))
                    .collect::<Result<Vec<_>, _>>()?;
                Filter::In(a, *negated, vals)
            }
            Cond::Like { field, pattern } => {
                let a = self.resolve_path(o, field).ok_or_else(|| invalid(field))?;
                if !a.ty.is_text() && !matches!(a.ty, FieldType::Id | FieldType::Reference) {
                    return Err(ApiError::bad(
                        "INVALID_FIELD",
                        format!(
                            "\n{q}\nERROR at Row:1:Column:{}\ninvalid operator on field: LIKE can only be used with text fields",
                            field.pos
                        ),
                    ));
                }
                Filter::Like(a, pattern.clone())
            }
        })
    }

    /// The rows a filter can only match, from an index, in table order: `Id IN (...)` /
    /// `Id = ...` through `by_id`, and a contact role's `OpportunityId IN (...)` through
    /// `by_parent` (a conjunct of an `AND` is enough). `None`: scan the table. Every id must
    /// be found as written (or, for roles, be an opportunity's id as written), so that the
    /// scan's case-insensitive comparison could match nothing more.
    fn indexed_rows(&self, o: usize, f: &Filter) -> Option<Vec<usize>> {
        let ids = |a: &Accessor, lits: &[Lit]| -> Option<Vec<String>> {
            if a.parent.is_some() {
                return None;
            }
            lits.iter()
                .map(|l| match l {
                    Lit::Val(Val::Str(s)) => Some(s.to_string()),
                    _ => None,
                })
                .collect()
        };
        let wanted = match f {
            Filter::And(a, b) => {
                return self.indexed_rows(o, a).or_else(|| self.indexed_rows(o, b));
            }
            Filter::In(a, false, lits) => (a, ids(a, lits)?),
            Filter::Cmp(a, Op::Eq, lit) => (a, ids(a, std::slice::from_ref(lit))?),
            _ => return None,
        };
        let (a, wanted) = wanted;
        let table = &self.tables[o];
        let mut out: Vec<usize> = if a.idx == 0 {
            wanted
                .iter()
                .map(|id| table.by_id.get(id).copied())
                .collect::<Option<Vec<usize>>>()?
        } else if o == obj::OCR && a.idx == self.fidx(o, "OpportunityId") {
            let opps = &self.tables[obj::OPPORTUNITY].by_id;
            let mut out = Vec::new();
            for id in &wanted {
                match table.by_parent.get(id) {
                    Some(rows) => out.extend(rows.iter().copied()),
                    None if opps.contains_key(id) => {}
                    None => return None,
                }
            }
            out
        } else {
            return None;
        };
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    fn eval(&self, f: &Filter, row: &Row, today: chrono::NaiveDate) -> bool {
        match f {
            Filter::And(a, b) => self.eval(a, row, today) && self.eval(b, row, today),
            Filter::Or(a, b) => self.eval(a, row, today) || self.eval(b, row, today),
            Filter::Not(a) => !self.eval(a, row, today),
            Filter::Cmp(a, op, lit) => {
                let v = self.access(a, row);
                match (a.ty, v, lit) {
                    // Ids order case-sensitively, as `ORDER BY Id` sorts them, so that
                    // keyset paging (`Id > :last ORDER BY Id`) neither skips nor repeats.
                    (FieldType::Id | FieldType::Reference, Val::Str(x), Lit::Val(Val::Str(y)))
                        if !matches!(op, Op::Eq | Op::Ne) =>
                    {
                        cmp_ord(x.as_str().cmp(y.as_str()), *op)
                    }
                    _ => cmp_lit(v, *op, lit, today),
                }
            }
            Filter::In(a, negated, lits) => {
                let v = self.access(a, row);
                let hit = lits.iter().any(|l| cmp_lit(v, Op::Eq, l, today));
                hit != *negated
            }
            Filter::Like(a, p) => match self.access(a, row) {
                Val::Str(s) => soql::like(p, s),
                _ => false,
            },
        }
    }

    // ------------------------------------------------------------ replication

    /// `sobjects/{o}/updated/?start&end`.
    pub fn updated(&self, o: usize, start: i64, end: i64) -> Value {
        let ms_i = self.fidx(o, "SystemModstamp");
        let ids: Vec<&str> = self.tables[o]
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none())
            .filter(|r| matches!(r.vals[ms_i], Val::Time(t) if t >= start && t < end))
            .map(|r| r.id())
            .collect();
        json!({"ids": ids, "latestDateCovered": super::value::format_datetime(end)})
    }

    /// `sobjects/{o}/deleted/?start&end`.
    pub fn deleted(&self, o: usize, start: i64, end: i64) -> Value {
        let recs: Vec<Value> = self.tables[o]
            .rows
            .iter()
            .filter_map(|r| {
                r.deleted_at
                    .filter(|t| *t >= start && *t < end)
                    .map(|t| json!({"id": r.id(), "deletedDate": super::value::format_datetime(t)}))
            })
            .collect();
        json!({"deletedRecords": recs, "earliestDateAvailable": super::value::format_datetime(self.earliest_deleted_available), "latestDateCovered": super::value::format_datetime(end)})
    }

    /// Empties the recycle bin: deleted rows disappear for good and the deleted
    /// horizon moves to now (so `deleted/` callers see they must reconcile).
    pub fn purge_deleted(&mut self) {
        let now = now_ms();
        for o in 0..self.tables.len() {
            let rows: Vec<Arc<Row>> = self.tables[o]
                .rows
                .iter()
                .filter(|r| r.deleted_at.is_none())
                .cloned()
                .collect();
            self.tables[o].rows.clear();
            self.tables[o].by_id.clear();
            self.tables[o].by_ext.clear();
            self.tables[o].by_parent.clear();
            for r in rows {
                self.insert_raw(o, (*r).clone());
            }
        }
        self.earliest_deleted_available = now;
        self.instance = next_org_instance();
    }

    /// Every record (including deleted ones) as JSON, for snapshots.
    pub fn export(&self) -> Value {
        let mut objects = Map::new();
        for (o, t) in self.tables.iter().enumerate() {
            let def = self.def(o);
            let rows: Vec<Value> = t
                .rows
                .iter()
                .map(|r| {
                    let mut v = self.render(o, r, Some(&(0..def.fields.len()).collect::<Vec<_>>()));
                    if let (Value::Object(m), Some(d)) = (&mut v, r.deleted_at) {
                        m.insert(
                            "__deletedAt".into(),
                            json!(super::value::format_datetime(d)),
                        );
                    }
                    v
                })
                .collect();
            objects.insert(
                def.name.to_string(),
                json!({"nextSeq": t.next_seq, "records": rows}),
            );
        }
        json!({"apiVersion": API_VERSION, "multiCurrency": self.multi_currency,
               "earliestDeletedAvailable": super::value::format_datetime(self.earliest_deleted_available), "objects": objects})
    }

    /// Rebuilds an org from [`Org::export`] output.
    pub fn import(schema: Arc<Schema>, v: &Value) -> Result<Org, String> {
        let multi = v
            .get("multiCurrency")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut org = Org::new(schema.clone(), multi);
        if let Some(t) = v
            .get("earliestDeletedAvailable")
            .and_then(Value::as_str)
            .and_then(super::value::parse_datetime)
        {
            org.earliest_deleted_available = t;
        }
        let objects = v
            .get("objects")
            .and_then(Value::as_object)
            .ok_or("snapshot has no `objects`")?;
        for (name, data) in objects {
            let o = schema
                .object_index(name)
                .ok_or_else(|| format!("unknown object {name}"))?;
            let def = &schema.objects[o];
            for rec in data
                .get("records")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let m = rec.as_object().ok_or("record is not an object")?;
                let mut row = Row {
                    vals: vec![Val::Null; def.fields.len()],
                    deleted_at: None,
                };
                for (i, f) in def.fields.iter().enumerate() {
                    if let Some(val) = m.get(f.name) {
                        row.vals[i] = from_json(f, val)
                            .map_err(|e| format!("{name}.{}: {}", f.name, e.message))?;
                    }
                }
                row.deleted_at = m
                    .get("__deletedAt")
                    .and_then(Value::as_str)
                    .and_then(super::value::parse_datetime);
                if row.id().is_empty() {
                    return Err(format!("{name} record without Id"));
                }
                org.insert_raw(o, row);
            }
            org.tables[o].next_seq = data
                .get("nextSeq")
                .and_then(Value::as_u64)
                .unwrap_or(org.tables[o].rows.len() as u64);
        }
        // Snapshots from before the Organization object still get its record.
        let created = org.earliest_deleted_available;
        super::seed::organization(&mut org, created);
        Ok(org)
    }

    /// Record types of Opportunity: (id, name, developer name).
    pub fn opportunity_record_types(&self) -> Vec<(String, String, String)> {
        let o = obj::RECORD_TYPE;
        let (n, d, s) = (
            self.fidx(o, "Name"),
            self.fidx(o, "DeveloperName"),
            self.fidx(o, "SobjectType"),
        );
        self.tables[o]
            .rows
            .iter()
            .filter(|r| r.vals[s].as_str() == Some("Opportunity"))
            .map(|r| {
                (
                    r.id().to_string(),
                    r.vals[n].as_str().unwrap_or("").to_string(),
                    r.vals[d].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Accessor {
    parent: Option<(usize, usize)>,
    idx: usize,
    ty: FieldType,
}

#[derive(Debug, Clone)]
enum Lit {
    Val(Val),
    /// Relative whole-day range [start, end) in days from today.
    Days(i64, i64),
}

enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp(Accessor, Op, Lit),
    In(Accessor, bool, Vec<Lit>),
    Like(Accessor, String),
}

/// `INVALID_FIELD` for a field `entity` does not have.
fn no_such_column(q: &str, path: &soql::FieldPath, entity: &str) -> ApiError {
    ApiError::bad(
        "INVALID_FIELD",
        format!(
            "\n{q}\nERROR at Row:1:Column:{}\nNo such column '{}' on entity '{entity}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            path.pos,
            path.display(),
        ),
    )
}

/// Adds a resolved column to a field list: a parent field joins its
/// relationship's column, a field already listed is not repeated.
fn push_column(cols: &mut Vec<Column>, col: Column) {
    match col {
        Column::Parent {
            rel,
            mut fields,
            ref_idx,
            target,
        } => {
            if let Some(Column::Parent {
                fields: existing, ..
            }) = cols
                .iter_mut()
                .find(|c| matches!(c, Column::Parent { rel: r, .. } if *r == rel))
            {
                existing.append(&mut fields);
            } else {
                cols.push(Column::Parent {
                    rel,
                    ref_idx,
                    target,
                    fields,
                });
            }
        }
        Column::Field { idx, .. }
            if cols
                .iter()
                .any(|x| matches!(x, Column::Field { idx: a, .. } if *a == idx)) => {}
        c => cols.push(c),
    }
}

/// One aggregate function over the values of a group, as JSON: counts are
/// integers, SUM and AVG numbers (null without values), MIN and MAX the
/// field's own rendering.
fn aggregate_value<'a>(
    func: AggFunc,
    a: &Accessor,
    values: impl Iterator<Item = &'a Val>,
) -> Value {
    let present = values.filter(|v| !v.is_null());
    match func {
        AggFunc::Count => json!(present.count()),
        AggFunc::CountDistinct => {
            let distinct: std::collections::HashSet<String> =
                present.map(|v| to_json(v, a.ty).to_string()).collect();
            json!(distinct.len())
        }
        AggFunc::Sum | AggFunc::Avg => {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for v in present {
                if let Val::Num(x) = v {
                    sum += x;
                    n += 1;
                }
            }
            match (func, n) {
                (_, 0) => Value::Null,
                (AggFunc::Sum, _) => to_json(&Val::Num(sum), a.ty),
                _ => to_json(&Val::Num(sum / n as f64), FieldType::Double),
            }
        }
        AggFunc::Min | AggFunc::Max => {
            let best = present.reduce(|x, y| {
                let c = compare(y, x);
                let better = if func == AggFunc::Min {
                    c == std::cmp::Ordering::Less
                } else {
                    c == std::cmp::Ordering::Greater
                };
                if better { y } else { x }
            });
            best.map_or(Value::Null, |v| to_json(v, a.ty))
        }
    }
}

fn type_mismatch(q: &str, pos: usize, ty: FieldType, lit: &Literal) -> ApiError {
    let quoted = matches!(lit, Literal::Str(_));
    let msg = if quoted && matches!(ty, FieldType::Date | FieldType::DateTime) {
        format!(
            "value of filter criterion for field must be of type {} and should not be enclosed in quotes",
            ty.describe_name()
        )
    } else {
        format!(
            "value of filter criterion for field must be of type {}",
            ty.describe_name()
        )
    };
    ApiError::bad(
        "INVALID_QUERY_FILTER_OPERATOR",
        format!("\n{q}\nERROR at Row:1:Column:{pos}\n{msg}"),
    )
}

fn coerce_literal(ty: FieldType, lit: &Literal) -> Option<Lit> {
    Some(match (ty, lit) {
        (_, Literal::Null) => Lit::Val(Val::Null),
        (FieldType::Id | FieldType::Reference, Literal::Str(s)) => {
            Lit::Val(Val::Str(ids::normalize(s).unwrap_or_else(|_| s.clone())))
        }
        (t, Literal::Str(s)) if t.is_text() => Lit::Val(Val::Str(s.clone())),
        (t, Literal::Num(n)) if t.is_number() => Lit::Val(Val::Num(*n)),
        (FieldType::Boolean, Literal::Bool(b)) => Lit::Val(Val::Bool(*b)),
        (FieldType::Date, Literal::Date(d)) => Lit::Val(Val::Date(*d)),
        (FieldType::DateTime, Literal::DateTime(t)) => Lit::Val(Val::Time(*t)),
        (
            FieldType::Date | FieldType::DateTime,
            Literal::DateRange {
                start_offset,
                end_offset,
            },
        ) => Lit::Days(*start_offset, *end_offset),
        _ => return None,
    })
}

/// Whether an ordering satisfies a comparison operator.
fn cmp_ord(o: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
    }
}

fn compare(a: &Val, b: &Val) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x
            .to_lowercase()
            .cmp(&y.to_lowercase())
            .then_with(|| x.cmp(y)),
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::Date(x), Val::Date(y)) => x.cmp(y),
        (Val::Time(x), Val::Time(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn cmp_lit(v: &Val, op: Op, lit: &Lit, today: chrono::NaiveDate) -> bool {
    use std::cmp::Ordering::*;
    match lit {
        Lit::Val(Val::Null) => match op {
            Op::Eq => v.is_null(),
            Op::Ne => !v.is_null(),
            _ => false,
        },
        Lit::Val(l) => {
            if v.is_null() {
                return op == Op::Ne;
            }
            let eq = match (v, l) {
                // ASCII needs no allocation (ids, picklists: the hot path of `IN` scans).
                (Val::Str(a), Val::Str(b)) => {
                    a.eq_ignore_ascii_case(b)
                        || (!(a.is_ascii() && b.is_ascii()) && a.to_lowercase() == b.to_lowercase())
                }
                _ => compare(v, l) == Equal,
            };
            match op {
                Op::Eq => eq,
                Op::Ne => !eq,
                Op::Lt => !eq && compare(v, l) == Less,
                Op::Le => eq || compare(v, l) == Less,
                Op::Gt => !eq && compare(v, l) == Greater,
                Op::Ge => eq || compare(v, l) == Greater,
            }
        }
        Lit::Days(s, e) => {
            let start_day = today + ChronoDuration::days(*s);
            let end_day = today + ChronoDuration::days(*e);
            let (x, lo, hi) = match v {
                Val::Date(d) => (
                    d.and_time(NaiveTime::MIN).and_utc().timestamp_millis(),
                    start_day,
                    end_day,
                ),
                Val::Time(t) => (*t, start_day, end_day),
                _ => return op == Op::Ne && !v.is_null(),
            };
            let lo = lo.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
            let hi = hi.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
            match op {
                Op::Eq => x >= lo && x < hi,
                Op::Ne => !(x >= lo && x < hi),
                Op::Lt => x < lo,
                Op::Le => x < hi,
                Op::Gt => x >= hi,
                Op::Ge => x >= lo,
            }
        }
    }
}
