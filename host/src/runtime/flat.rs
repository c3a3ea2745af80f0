//! The flat form of a batch and of a plan (`flat-types`, `flat-rules`):
//! encoding the host's nested [`Batch`] into a [`FlatBatch`], and checking and
//! decoding a plugin's [`FlatPlan`] into the nested outcomes the sync engine
//! reads.
//!
//! The encoder makes one pass over the batch into lists reserved up front
//! (counted in a first pass that reads only lengths); it hashes nothing. The
//! decoder first checks every span and field index against the lists they
//! point into and computes the wire size of the nested outcomes from prefix
//! sums, without building them, so that a plan whose spans overlap cannot make
//! the host materialise more than the output limit allows. It must never
//! index a list with a number that it has not checked.

use super::bindings::*;
use super::size::WireSize;

/// The lengths of a flat batch's lists, counted before it is built.
#[derive(Default)]
struct Capacity {
    text: usize,
    options: usize,
    fields: usize,
    changed: usize,
    related: usize,
}

impl Capacity {
    fn of(batch: &Batch) -> Self {
        let mut c = Capacity::default();
        for pair in &batch.pairs {
            for record in [&pair.salesforce, &pair.hubspot].into_iter().flatten() {
                c.text += record.id.len();
                c.values(&record.fields);
            }
            if let Some(s) = &pair.snapshot {
                c.values(&s.salesforce);
                c.values(&s.hubspot);
            }
            c.changed += pair.salesforce_changed.len() + pair.hubspot_changed.len();
            let associations = &pair.associations;
            for r in associations.salesforce.iter().chain(&associations.hubspot) {
                c.related += 1;
                c.text += [&r.salesforce_id, &r.hubspot_id, &r.role]
                    .into_iter()
                    .flatten()
                    .map(String::len)
                    .sum::<usize>();
            }
        }
        c
    }

    fn values(&mut self, fields: &[FieldValue]) {
        self.fields += fields.len();
        for f in fields {
            match &f.value {
                Value::Text(s) => self.text += s.len(),
                Value::Multi(options) => {
                    self.options += options.len();
                    self.text += options.iter().map(String::len).sum::<usize>();
                }
                _ => {}
            }
        }
    }
}

/// Builds the lists of a flat batch.
struct Encoder {
    text: Vec<u8>,
    options: Vec<Span>,
    fields: Vec<FlatField>,
    changed: Vec<FieldIndex>,
    related: Vec<FlatRelated>,
}

/// The span of the items pushed onto a list since it had `start` items.
fn span_since(start: usize, now: usize) -> Span {
    Span {
        start: start as u32,
        len: (now - start) as u32,
    }
}

impl Encoder {
    fn text(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(s.as_bytes());
        span_since(start, self.text.len())
    }

    fn value(&mut self, value: &Value) -> FlatValue {
        match value {
            Value::Null => FlatValue::Null,
            Value::Text(s) => FlatValue::Text(self.text(s)),
            Value::Decimal(d) => FlatValue::Decimal(*d),
            Value::Integer(i) => FlatValue::Integer(*i),
            Value::Boolean(b) => FlatValue::Boolean(*b),
            Value::Date(d) => FlatValue::Date(*d),
            Value::Datetime(t) => FlatValue::Datetime(*t),
            Value::Multi(options) => {
                let start = self.options.len();
                for option in options {
                    let span = self.text(option);
                    self.options.push(span);
                }
                FlatValue::Multi(span_since(start, self.options.len()))
            }
        }
    }

    fn values(&mut self, fields: &[FieldValue]) -> Span {
        let start = self.fields.len();
        for f in fields {
            let value = self.value(&f.value);
            self.fields.push(FlatField {
                field: f.field,
                value,
            });
        }
        span_since(start, self.fields.len())
    }

    fn record(&mut self, record: &CrmRecord) -> FlatRecord {
        FlatRecord {
            id: self.text(&record.id),
            modified_at: record.modified_at,
            fields: self.values(&record.fields),
        }
    }

    fn changed(&mut self, changed: &[FieldIndex]) -> Span {
        let start = self.changed.len();
        self.changed.extend_from_slice(changed);
        span_since(start, self.changed.len())
    }

    fn related(&mut self, related: &[Related]) -> Span {
        let start = self.related.len();
        for r in related {
            let flat = FlatRelated {
                kind: r.kind,
                salesforce_id: r.salesforce_id.as_deref().map(|s| self.text(s)),
                hubspot_id: r.hubspot_id.as_deref().map(|s| self.text(s)),
                role: r.role.as_deref().map(|s| self.text(s)),
                primary: r.primary,
            };
            self.related.push(flat);
        }
        span_since(start, self.related.len())
    }
}

/// The largest batch the flat form can carry: every span counts in `u32`, and no list of a
/// batch holds more items (or text bytes) than the batch's wire size.
pub const MAX_FLAT_WIRE_SIZE: u64 = u32::MAX as u64;

/// Refuses a batch of `input_bytes` (its wire size) that the flat form cannot carry: its spans
/// would not fit in `u32`. The input limit is checked first and is far below this.
pub fn check_fits(input_bytes: u64) -> Result<(), String> {
    if input_bytes > MAX_FLAT_WIRE_SIZE {
        return Err(format!(
            "a batch of {input_bytes} bytes is too large for the flat form (at most {MAX_FLAT_WIRE_SIZE} bytes)"
        ));
    }
    Ok(())
}

/// The flat form of a batch. The caller makes sure that `batch.wire_size()` fits
/// ([`check_fits`]).
pub fn encode(batch: &Batch) -> FlatBatch {
    let capacity = Capacity::of(batch);
    let mut e = Encoder {
        text: Vec::with_capacity(capacity.text),
        options: Vec::with_capacity(capacity.options),
        fields: Vec::with_capacity(capacity.fields),
        changed: Vec::with_capacity(capacity.changed),
        related: Vec::with_capacity(capacity.related),
    };
    let mut pairs = Vec::with_capacity(batch.pairs.len());
    for pair in &batch.pairs {
        let salesforce = pair.salesforce.as_ref().map(|r| e.record(r));
        let hubspot = pair.hubspot.as_ref().map(|r| e.record(r));
        let snapshot = pair.snapshot.as_ref().map(|s| FlatSnapshot {
            salesforce: e.values(&s.salesforce),
            hubspot: e.values(&s.hubspot),
            synced_at: s.synced_at,
        });
        pairs.push(FlatPair {
            salesforce,
            hubspot,
            snapshot,
            salesforce_changed: e.changed(&pair.salesforce_changed),
            hubspot_changed: e.changed(&pair.hubspot_changed),
            salesforce_related: e.related(&pair.associations.salesforce),
            hubspot_related: e.related(&pair.associations.hubspot),
        });
    }
    FlatBatch {
        object_pair: batch.object_pair,
        direction: batch.direction,
        trigger: batch.trigger,
        salesforce_fields: batch.salesforce_fields.clone(),
        hubspot_fields: batch.hubspot_fields.clone(),
        text: e.text,
        options: e.options,
        fields: e.fields,
        changed: e.changed,
        related: e.related,
        pairs,
        lookups: batch.lookups.clone(),
    }
}

/// The flat form of a batch, for [`super::LoadedPlugin::plan_flat`]: [`encode`] after
/// [`check_fits`], whose message it returns for a batch too large for the flat form.
pub fn flatten(batch: &Batch) -> Result<FlatBatch, String> {
    check_fits(batch.wire_size())?;
    Ok(encode(batch))
}

/// Checks that a list of per-pair results has one entry per pair of the batch.
pub fn check_count(what: &str, got: usize, pairs: usize) -> Result<(), String> {
    if got == pairs {
        Ok(())
    } else {
        Err(format!("{got} {what} for a batch of {pairs} pairs"))
    }
}

/// The side of a pair that a span of writes or associations belongs to.
#[derive(Debug, Clone, Copy)]
enum Side {
    Salesforce,
    Hubspot,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Salesforce => "salesforce",
            Side::Hubspot => "hubspot",
        }
    }
}

/// Running sums over the plan's `writes`, per side of the batch's field tables: the wire size
/// that items `..j` decode to, and how many of them name a field index outside the side's
/// table (index `j` of each list is the sum over the items before item `j`). Built in the
/// same pass that measures the writes as lifted.
struct WriteSums {
    size: [Vec<u64>; 2],
    bad: [Vec<u32>; 2],
}

impl WriteSums {
    /// The sums, and the lifted size of the writes (what `FlatWrite::wire_size` gives summed
    /// over them).
    fn new(writes: &[FlatWrite], tables: [&[String]; 2]) -> (Self, u64) {
        let n = writes.len() + 1;
        let mut size = [Vec::with_capacity(n), Vec::with_capacity(n)];
        let mut bad = [Vec::with_capacity(n), Vec::with_capacity(n)];
        for side in 0..2 {
            size[side].push(0u64);
            bad[side].push(0u32);
        }
        let mut lifted = 0u64;
        let (mut last_size, mut last_bad) = ([0u64; 2], [0u32; 2]);
        for w in writes {
            let value = w.value.wire_size();
            // As lifted: a name, or one scalar for a position (`FieldRef::wire_size`).
            let field_lifted = w.field.wire_size();
            lifted += field_lifted + value;
            for (side, table) in tables.iter().enumerate() {
                let (field, out_of_table) = match &w.field {
                    FieldRef::Named(_) => (field_lifted, 0),
                    FieldRef::Known(i) => match table.get(*i as usize) {
                        Some(name) => (name.wire_size(), 0),
                        None => (0, 1),
                    },
                };
                last_size[side] += field + value;
                last_bad[side] += out_of_table;
                size[side].push(last_size[side]);
                bad[side].push(last_bad[side]);
            }
        }
        (Self { size, bad }, lifted)
    }
}

/// A plan as lifted, measured in one pass over its lists: its lifted size (what
/// `FlatPlan::wire_size` gives) and the running sums that [`MeasuredPlan::check`] uses to
/// measure the nested outcomes without building them.
pub struct MeasuredPlan {
    plan: FlatPlan,
    sums: WriteSums,
    related_sums: Vec<u64>,
    lifted: u64,
}

/// What a plan is checked against: the field tables of the batch it plans (Salesforce, then
/// HubSpot) and its number of pairs. The same for a batch and for its flat form.
#[derive(Clone, Copy)]
pub struct PlanShape<'a> {
    tables: [&'a [String]; 2],
    pairs: usize,
}

impl<'a> PlanShape<'a> {
    /// The shape of a nested batch.
    pub fn of(batch: &'a Batch) -> Self {
        Self {
            tables: [&batch.salesforce_fields, &batch.hubspot_fields],
            pairs: batch.pairs.len(),
        }
    }

    /// The shape of a flat batch.
    pub fn of_flat(batch: &'a FlatBatch) -> Self {
        Self {
            tables: [&batch.salesforce_fields, &batch.hubspot_fields],
            pairs: batch.pairs.len(),
        }
    }
}

/// Measures a flat plan against the batch it plans (nothing is checked yet).
pub fn measure(plan: FlatPlan, shape: PlanShape<'_>) -> MeasuredPlan {
    let (sums, writes_lifted) = WriteSums::new(&plan.writes, shape.tables);
    let mut related_sums = Vec::with_capacity(plan.related.len() + 1);
    related_sums.push(0u64);
    let mut last = 0u64;
    for r in &plan.related {
        last += r.wire_size();
        related_sums.push(last);
    }
    // `FlatPlan::wire_size`: the outcomes as a list, the items of `writes` and `related`.
    let lifted = plan.outcomes.wire_size() + writes_lifted + last;
    MeasuredPlan {
        plan,
        sums,
        related_sums,
        lifted,
    }
}

/// A plan whose spans and field indices are all checked, with the wire size of the nested
/// outcomes it decodes to.
#[derive(Debug)]
pub struct CheckedPlan {
    plan: FlatPlan,
    wire_size: u64,
    /// The lengths of the field tables it was checked against (Salesforce, HubSpot), and the
    /// number of pairs: [`CheckedPlan::decode`] refuses a batch of another shape.
    table_lens: [usize; 2],
    pairs: usize,
}

/// The range of a span of a list of `len` items. `what` names the span (for example
/// `salesforce writes`) and is only formatted when the span is bad: this runs for every outcome.
fn check_span(
    span: &Span,
    len: usize,
    what: impl std::fmt::Display,
) -> Result<std::ops::Range<usize>, String> {
    let start = span.start as u64;
    let end = start + span.len as u64;
    if end > len as u64 {
        return Err(format!(
            "{what} span (start {}, len {}) reaches past the plan's {len} items",
            span.start, span.len
        ));
    }
    Ok(start as usize..end as usize)
}

/// [`measure`], then [`MeasuredPlan::check`].
#[cfg(test)]
fn check_plan(plan: FlatPlan, batch: &Batch) -> Result<CheckedPlan, String> {
    let lifted = plan.wire_size();
    let measured = measure(plan, PlanShape::of(batch));
    assert_eq!(
        measured.lifted_size(),
        lifted,
        "one pass measures as `wire_size`"
    );
    measured.check(PlanShape::of(batch))
}

impl MeasuredPlan {
    /// The size of the plan as lifted, items that no outcome points at included.
    pub fn lifted_size(&self) -> u64 {
        self.lifted
    }

    /// Checks a flat plan against the batch it plans (the one it was measured against): one
    /// outcome per pair, every span inside its list, every `known` field index inside the field
    /// table of the side written to. The error names the outcome and the item.
    pub fn check(self, shape: PlanShape<'_>) -> Result<CheckedPlan, String> {
        check_count("outcomes", self.plan.outcomes.len(), shape.pairs)?;
        let tables = shape.tables;
        // `Vec<PairOutcome>`: the list header, then each outcome's case header and payload.
        let mut total = 8u64;
        for (i, outcome) in self.plan.outcomes.iter().enumerate() {
            total += 8 + match outcome {
                FlatOutcome::Skip(s) => s.wire_size(),
                FlatOutcome::Error(e) => e.wire_size(),
                FlatOutcome::Write(w) => self
                    .writes_size(w, tables)
                    .map_err(|e| format!("outcome {i}: {e}"))?,
            };
        }
        Ok(CheckedPlan {
            plan: self.plan,
            wire_size: total,
            table_lens: [tables[0].len(), tables[1].len()],
            pairs: shape.pairs,
        })
    }

    /// Checks the spans and field indices of one outcome's writes and associations: the wire
    /// size of its nested `PairWrites`.
    fn writes_size(&self, w: &FlatWrites, tables: [&[String]; 2]) -> Result<u64, String> {
        let (plan, sums) = (&self.plan, &self.sums);
        let mut size = 0;
        for (side, span) in [
            (Side::Salesforce, &w.salesforce),
            (Side::Hubspot, &w.hubspot),
        ] {
            let range = check_span(
                span,
                plan.writes.len(),
                format_args!("{} writes", side.name()),
            )
            .map_err(|e| format!("{e} (`writes`)"))?;
            let s = side as usize;
            if sums.bad[s][range.end] != sums.bad[s][range.start] {
                let table = tables[s];
                let (j, index) = range
                    .clone()
                    .find_map(|j| match plan.writes[j].field {
                        FieldRef::Known(k) if k as usize >= table.len() => Some((j, k)),
                        _ => None,
                    })
                    .expect("the sums counted one");
                return Err(format!(
                    "write {j} ({}) names field index {index}, outside the batch's {} {} fields",
                    side.name(),
                    table.len(),
                    side.name()
                ));
            }
            size += 8 + sums.size[s][range.end] - sums.size[s][range.start];
        }
        for (side, span) in [
            (Side::Salesforce, &w.salesforce_associations),
            (Side::Hubspot, &w.hubspot_associations),
        ] {
            size += 8;
            if let Some(span) = span {
                let range = check_span(
                    span,
                    plan.related.len(),
                    format_args!("{} associations", side.name()),
                )
                .map_err(|e| format!("{e} (`related`)"))?;
                size += 8 + self.related_sums[range.end] - self.related_sums[range.start];
            }
        }
        Ok(size)
    }
}

/// The spans of `writes` that an outcome points at.
fn write_spans(o: &FlatOutcome) -> [Option<&Span>; 2] {
    match o {
        FlatOutcome::Write(w) => [Some(&w.salesforce), Some(&w.hubspot)],
        _ => [None, None],
    }
}

/// The spans of `related` that an outcome points at.
fn related_spans(o: &FlatOutcome) -> [Option<&Span>; 2] {
    match o {
        FlatOutcome::Write(w) => [
            w.salesforce_associations.as_ref(),
            w.hubspot_associations.as_ref(),
        ],
        _ => [None, None],
    }
}

/// The items of one of the plan's lists, handed out by span: an item is moved out by the last
/// span that covers it, and cloned for the others.
struct Pool<T> {
    items: Vec<Option<T>>,
    uses_left: Vec<u32>,
}

impl<T: Clone> Pool<T> {
    /// The pool of `items`, with how many of the (checked) `spans` cover each, counted from a
    /// difference array: one pass over the spans, one over the items.
    fn new<'a>(items: Vec<T>, spans: impl Iterator<Item = &'a Span>) -> Self {
        let mut diff = vec![0i64; items.len() + 1];
        for s in spans {
            diff[s.start as usize] += 1;
            diff[s.start as usize + s.len as usize] -= 1;
        }
        let mut running = 0i64;
        let uses_left = diff[..items.len()]
            .iter()
            .map(|d| {
                running += d;
                running as u32
            })
            .collect();
        Self {
            items: items.into_iter().map(Some).collect(),
            uses_left,
        }
    }

    /// The items of a checked span, in order.
    fn span(&mut self, span: &Span) -> impl Iterator<Item = T> + '_ {
        let range = span.start as usize..span.start as usize + span.len as usize;
        range.map(|j| {
            self.uses_left[j] -= 1;
            let item = &mut self.items[j];
            if self.uses_left[j] == 0 {
                item.take()
            } else {
                item.clone()
            }
            .expect("each use of an item was counted")
        })
    }
}

/// The items of one of the plan's lists, handed out by span.
enum Items<T> {
    /// The spans, in outcome order, cover the list in order without overlap (the usual plan:
    /// each outcome's items appended after the last one's): the items move out in one pass.
    InOrder {
        items: std::vec::IntoIter<T>,
        next: usize,
    },
    /// Any other layout of checked spans.
    Shared(Pool<T>),
}

impl<T: Clone> Items<T> {
    fn new<'a>(items: Vec<T>, spans: impl Iterator<Item = &'a Span> + Clone) -> Self {
        let mut end = 0u64;
        let in_order = spans.clone().all(|s| {
            let ok = s.start as u64 >= end;
            end = s.start as u64 + s.len as u64;
            ok
        });
        if in_order {
            Items::InOrder {
                items: items.into_iter(),
                next: 0,
            }
        } else {
            Items::Shared(Pool::new(items, spans))
        }
    }

    /// The items of a checked span, in order, each mapped by `f`.
    fn span<U>(&mut self, span: &Span, f: impl FnMut(T) -> U) -> Vec<U> {
        match self {
            Items::InOrder { items, next } => {
                let start = span.start as usize;
                if start > *next {
                    items.nth(start - *next - 1);
                }
                *next = start + span.len as usize;
                items.by_ref().take(span.len as usize).map(f).collect()
            }
            Items::Shared(pool) => pool.span(span).map(f).collect(),
        }
    }
}

impl CheckedPlan {
    /// The wire size of the nested outcomes (what `Vec<PairOutcome>::wire_size` gives for
    /// them), for the output limit.
    pub fn wire_size(&self) -> u64 {
        self.wire_size
    }

    /// The plan as the plugin returned it, now checked: every span lies inside its list and
    /// every `known` index inside the field table of the side written to.
    pub fn flat(&self) -> &FlatPlan {
        &self.plan
    }

    /// The nested outcomes: a `known` index becomes the name at that position of the field
    /// table of the side written to. `batch` must be the batch the plan was checked against
    /// (for [`super::LoadedPlugin::plan_flat`], the one flattened); one whose field tables or
    /// number of pairs differ is refused, since the plan's indices were checked against those.
    pub fn decode(self, batch: &Batch) -> Result<Vec<PairOutcome>, String> {
        let shape = (
            [batch.salesforce_fields.len(), batch.hubspot_fields.len()],
            batch.pairs.len(),
        );
        if shape != (self.table_lens, self.pairs) {
            return Err(format!(
                "the plan was checked against a batch of {} pairs and {} + {} fields, not this \
                 one of {} pairs and {} + {} fields",
                self.pairs, self.table_lens[0], self.table_lens[1], shape.1, shape.0[0], shape.0[1]
            ));
        }
        let FlatPlan {
            writes,
            related,
            outcomes,
        } = self.plan;
        let mut writes = Items::new(writes, outcomes.iter().flat_map(write_spans).flatten());
        let mut related = Items::new(related, outcomes.iter().flat_map(related_spans).flatten());
        let mut field_writes = |span: &Span, table: &[String]| -> Vec<FieldWrite> {
            writes.span(span, |w| FieldWrite {
                field: match w.field {
                    FieldRef::Known(k) => table[k as usize].clone(),
                    FieldRef::Named(name) => name,
                },
                value: w.value,
            })
        };
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                FlatOutcome::Skip(s) => PairOutcome::Skip(s),
                FlatOutcome::Error(e) => PairOutcome::Error(e),
                FlatOutcome::Write(w) => PairOutcome::Write(PairWrites {
                    salesforce: field_writes(&w.salesforce, &batch.salesforce_fields),
                    hubspot: field_writes(&w.hubspot, &batch.hubspot_fields),
                    salesforce_associations: w
                        .salesforce_associations
                        .map(|s| related.span(&s, |r| r)),
                    hubspot_associations: w.hubspot_associations.map(|s| related.span(&s, |r| r)),
                }),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    fn field(field: u32, value: Value) -> FieldValue {
        FieldValue { field, value }
    }

    fn related(
        kind: RelatedKind,
        sf: Option<&str>,
        hs: Option<&str>,
        role: Option<&str>,
    ) -> Related {
        Related {
            kind,
            salesforce_id: sf.map(str::to_string),
            hubspot_id: hs.map(str::to_string),
            role: role.map(str::to_string),
            primary: role.is_some(),
        }
    }

    /// A batch with every kind of value, a snapshot, associations, empty and missing parts.
    fn batch() -> Batch {
        Batch {
            object_pair: ObjectPair::OpportunityDeal,
            direction: Direction::HubspotToSalesforce,
            trigger: Trigger::Backfill,
            salesforce_fields: vec!["Name".into(), "Amount".into(), "Tags__c".into()],
            hubspot_fields: vec!["dealname".into(), "amount".into(), "tags".into()],
            pairs: vec![
                RecordPair {
                    salesforce: Some(CrmRecord {
                        id: "006000000000001AAA".into(),
                        modified_at: 1_700_000_000_000,
                        fields: vec![
                            field(0, text("Grüße – ünïcode")),
                            field(
                                1,
                                Value::Decimal(Decimal {
                                    digits: 123450,
                                    scale: 2,
                                }),
                            ),
                            field(
                                2,
                                Value::Multi(vec!["a".into(), String::new(), "ccc".into()]),
                            ),
                        ],
                    }),
                    hubspot: Some(CrmRecord {
                        id: "9001".into(),
                        modified_at: -5,
                        fields: vec![
                            field(0, Value::Null),
                            field(1, Value::Integer(-7)),
                            field(2, Value::Multi(Vec::new())),
                        ],
                    }),
                    snapshot: Some(Snapshot {
                        salesforce: vec![field(0, text("")), field(1, Value::Boolean(true))],
                        hubspot: vec![
                            field(
                                0,
                                Value::Date(Date {
                                    year: 2026,
                                    month: 6,
                                    day: 30,
                                }),
                            ),
                            field(1, Value::Datetime(42)),
                        ],
                        synced_at: 7,
                    }),
                    salesforce_changed: vec![0, 2],
                    hubspot_changed: vec![1],
                    associations: PairAssociations {
                        salesforce: vec![related(
                            RelatedKind::Company,
                            Some("001000000000001AAA"),
                            None,
                            None,
                        )],
                        hubspot: vec![
                            related(
                                RelatedKind::Contact,
                                Some("003A"),
                                Some("51"),
                                Some("Buyer"),
                            ),
                            related(RelatedKind::Company, None, Some("77"), None),
                        ],
                    },
                },
                RecordPair {
                    salesforce: None,
                    hubspot: Some(CrmRecord {
                        id: "9002".into(),
                        modified_at: 0,
                        fields: Vec::new(),
                    }),
                    snapshot: None,
                    salesforce_changed: Vec::new(),
                    hubspot_changed: vec![0, 1, 2],
                    associations: PairAssociations {
                        salesforce: Vec::new(),
                        hubspot: Vec::new(),
                    },
                },
            ],
            lookups: Lookups {
                owners: vec![Owner {
                    email: "a@b.c".into(),
                    salesforce_user_id: Some("005A".into()),
                    hubspot_owner_id: None,
                }],
                pipelines: Vec::new(),
            },
        }
    }

    /// The nested batch that a flat batch stands for (what a guest reads from it).
    fn unflatten(f: &FlatBatch) -> Batch {
        let text = |s: &Span| {
            std::str::from_utf8(&f.text[s.start as usize..(s.start + s.len) as usize])
                .expect("spans fall on character boundaries")
                .to_string()
        };
        let slice = |s: &Span| s.start as usize..(s.start + s.len) as usize;
        let values = |s: &Span| -> Vec<FieldValue> {
            f.fields[slice(s)]
                .iter()
                .map(|ff| FieldValue {
                    field: ff.field,
                    value: match &ff.value {
                        FlatValue::Null => Value::Null,
                        FlatValue::Text(s) => Value::Text(text(s)),
                        FlatValue::Decimal(d) => Value::Decimal(*d),
                        FlatValue::Integer(i) => Value::Integer(*i),
                        FlatValue::Boolean(b) => Value::Boolean(*b),
                        FlatValue::Date(d) => Value::Date(*d),
                        FlatValue::Datetime(t) => Value::Datetime(*t),
                        FlatValue::Multi(s) => {
                            Value::Multi(f.options[slice(s)].iter().map(text).collect())
                        }
                    },
                })
                .collect()
        };
        let record = |r: &FlatRecord| CrmRecord {
            id: text(&r.id),
            modified_at: r.modified_at,
            fields: values(&r.fields),
        };
        let related = |s: &Span| -> Vec<Related> {
            f.related[slice(s)]
                .iter()
                .map(|r| Related {
                    kind: r.kind,
                    salesforce_id: r.salesforce_id.as_ref().map(text),
                    hubspot_id: r.hubspot_id.as_ref().map(text),
                    role: r.role.as_ref().map(text),
                    primary: r.primary,
                })
                .collect()
        };
        Batch {
            object_pair: f.object_pair,
            direction: f.direction,
            trigger: f.trigger,
            salesforce_fields: f.salesforce_fields.clone(),
            hubspot_fields: f.hubspot_fields.clone(),
            pairs: f
                .pairs
                .iter()
                .map(|p| RecordPair {
                    salesforce: p.salesforce.as_ref().map(record),
                    hubspot: p.hubspot.as_ref().map(record),
                    snapshot: p.snapshot.as_ref().map(|s| Snapshot {
                        salesforce: values(&s.salesforce),
                        hubspot: values(&s.hubspot),
                        synced_at: s.synced_at,
                    }),
                    salesforce_changed: f.changed[slice(&p.salesforce_changed)].to_vec(),
                    hubspot_changed: f.changed[slice(&p.hubspot_changed)].to_vec(),
                    associations: PairAssociations {
                        salesforce: related(&p.salesforce_related),
                        hubspot: related(&p.hubspot_related),
                    },
                })
                .collect(),
            lookups: f.lookups.clone(),
        }
    }

    #[test]
    fn a_batch_round_trips_through_the_flat_form_in_lists_of_exact_size() {
        let b = batch();
        let f = encode(&b);
        assert_eq!(unflatten(&f), b);
        // The lists were reserved exactly: nothing grew past its first allocation.
        assert_eq!(f.text.capacity(), f.text.len());
        assert_eq!(f.fields.capacity(), f.fields.len());
        assert_eq!(f.options.capacity(), f.options.len());
        assert_eq!(f.changed.capacity(), f.changed.len());
        assert_eq!(f.related.capacity(), f.related.len());
        assert_eq!(f.fields.len(), 3 + 3 + 2 + 2);
        assert_eq!(f.options.len(), 3);
        assert_eq!(f.related.len(), 3);
        assert_eq!(f.changed, vec![0, 2, 1, 0, 1, 2]);

        let empty = Batch {
            pairs: Vec::new(),
            ..batch()
        };
        assert_eq!(unflatten(&encode(&empty)), empty);
    }

    #[test]
    fn a_batch_whose_spans_could_overflow_u32_is_refused_naming_its_size() {
        assert_eq!(check_fits(0), Ok(()));
        assert_eq!(check_fits(MAX_FLAT_WIRE_SIZE), Ok(()));
        let over = MAX_FLAT_WIRE_SIZE + 1;
        let refused = check_fits(over).unwrap_err();
        assert!(
            refused.contains(&over.to_string())
                && refused.contains(&MAX_FLAT_WIRE_SIZE.to_string()),
            "{refused}"
        );
        // What the bound rests on: no list of the flat form holds more items, and the text no
        // more bytes, than the batch's wire size, so a batch that fits has spans that fit.
        let b = batch();
        let f = encode(&b);
        let wire = b.wire_size() as usize;
        for (list, len) in [
            ("text", f.text.len()),
            ("options", f.options.len()),
            ("fields", f.fields.len()),
            ("changed", f.changed.len()),
            ("related", f.related.len()),
            ("pairs", f.pairs.len()),
        ] {
            assert!(len <= wire, "{list}: {len} items, wire size {wire}");
        }
    }

    /// The flat plan of nested outcomes, as a guest would build it: fields of the side's table
    /// by `known` index, the others by name.
    fn flatten_plan(outcomes: &[PairOutcome], b: &Batch) -> FlatPlan {
        let mut plan = FlatPlan {
            writes: Vec::new(),
            related: Vec::new(),
            outcomes: Vec::new(),
        };
        let writes = |plan: &mut FlatPlan, ws: &[FieldWrite], table: &[String]| {
            let start = plan.writes.len();
            for w in ws {
                let field = match table.iter().position(|n| *n == w.field) {
                    Some(i) => FieldRef::Known(i as u32),
                    None => FieldRef::Named(w.field.clone()),
                };
                plan.writes.push(FlatWrite {
                    field,
                    value: w.value.clone(),
                });
            }
            span_since(start, plan.writes.len())
        };
        for o in outcomes {
            let flat = match o {
                PairOutcome::Skip(s) => FlatOutcome::Skip(s.clone()),
                PairOutcome::Error(e) => FlatOutcome::Error(e.clone()),
                PairOutcome::Write(w) => {
                    let salesforce = writes(&mut plan, &w.salesforce, &b.salesforce_fields);
                    let hubspot = writes(&mut plan, &w.hubspot, &b.hubspot_fields);
                    let mut associations = |rs: &Option<Vec<Related>>| {
                        rs.as_ref().map(|rs| {
                            let start = plan.related.len();
                            plan.related.extend(rs.iter().cloned());
                            span_since(start, plan.related.len())
                        })
                    };
                    FlatOutcome::Write(FlatWrites {
                        salesforce,
                        hubspot,
                        salesforce_associations: associations(&w.salesforce_associations),
                        hubspot_associations: associations(&w.hubspot_associations),
                    })
                }
            };
            plan.outcomes.push(flat);
        }
        plan
    }

    fn write(field: &str, value: Value) -> FieldWrite {
        FieldWrite {
            field: field.into(),
            value,
        }
    }

    fn outcomes() -> Vec<PairOutcome> {
        vec![
            PairOutcome::Write(PairWrites {
                salesforce: vec![
                    write("Name", text("A")),
                    write("NotInBatch__c", Value::Null),
                ],
                hubspot: vec![
                    write(
                        "amount",
                        Value::Decimal(Decimal {
                            digits: 5,
                            scale: 0,
                        }),
                    ),
                    write("tags", Value::Multi(vec!["x".into(), "y".into()])),
                ],
                salesforce_associations: None,
                hubspot_associations: Some(vec![related(
                    RelatedKind::Company,
                    None,
                    Some("77"),
                    None,
                )]),
            }),
            PairOutcome::Error(RuleError {
                kind: ErrorKind::MissingOwner,
                field: Some("hubspot_owner_id".into()),
                message: "no owner".into(),
            }),
        ]
    }

    #[test]
    fn a_plan_round_trips_and_measures_as_the_nested_outcomes() {
        let b = batch();
        for nested in [
            outcomes(),
            vec![
                PairOutcome::Skip(Skip::UpToDate),
                PairOutcome::Skip(Skip::Excluded("closed".into())),
            ],
        ] {
            let flat = flatten_plan(&nested, &b);
            // What was lifted never measures more than the outcomes it decodes to, so the
            // output limit stops the same well-formed plans on both paths.
            assert!(flat.wire_size() <= nested.wire_size());
            let checked = check_plan(flat, &b).unwrap();
            assert_eq!(checked.wire_size(), nested.wire_size());
            assert_eq!(checked.decode(&b).unwrap(), nested);
        }
    }

    #[test]
    fn spans_shared_by_outcomes_and_sides_decode_to_copies_named_by_each_side() {
        let b = batch();
        // Both sides and both outcomes point at the same two writes: `known(1)` is `Amount`
        // on the Salesforce side and `amount` on the HubSpot side.
        let both = Span { start: 0, len: 2 };
        let writes = FlatWrites {
            salesforce: both,
            hubspot: both,
            salesforce_associations: Some(Span { start: 0, len: 1 }),
            hubspot_associations: Some(Span { start: 0, len: 1 }),
        };
        let plan = FlatPlan {
            writes: vec![
                FlatWrite {
                    field: FieldRef::Known(1),
                    value: Value::Integer(3),
                },
                FlatWrite {
                    field: FieldRef::Named("x".into()),
                    value: text("t"),
                },
            ],
            related: vec![related(RelatedKind::Contact, Some("003A"), None, None)],
            outcomes: vec![FlatOutcome::Write(writes), FlatOutcome::Write(writes)],
        };
        let pw = PairWrites {
            salesforce: vec![write("Amount", Value::Integer(3)), write("x", text("t"))],
            hubspot: vec![write("amount", Value::Integer(3)), write("x", text("t"))],
            salesforce_associations: Some(vec![related(
                RelatedKind::Contact,
                Some("003A"),
                None,
                None,
            )]),
            hubspot_associations: Some(vec![related(
                RelatedKind::Contact,
                Some("003A"),
                None,
                None,
            )]),
        };
        let want = vec![PairOutcome::Write(pw.clone()), PairOutcome::Write(pw)];
        let checked = check_plan(plan, &b).unwrap();
        assert_eq!(checked.wire_size(), want.wire_size());
        assert_eq!(checked.decode(&b).unwrap(), want);
    }

    #[test]
    fn spans_in_order_with_unused_items_between_them_decode_to_their_own_items() {
        let b = batch();
        let w = |n: i64| FlatWrite {
            field: FieldRef::Known(1),
            value: Value::Integer(n),
        };
        // Items 0, 2 and 5 are used by no span; the spans go forwards through the list, one
        // of them empty.
        let plan = FlatPlan {
            writes: (0..7).map(w).collect(),
            related: vec![],
            outcomes: vec![
                FlatOutcome::Write(FlatWrites {
                    salesforce: Span { start: 1, len: 1 },
                    hubspot: Span { start: 3, len: 2 },
                    salesforce_associations: None,
                    hubspot_associations: None,
                }),
                FlatOutcome::Write(FlatWrites {
                    salesforce: Span { start: 6, len: 0 },
                    hubspot: Span { start: 6, len: 1 },
                    salesforce_associations: None,
                    hubspot_associations: None,
                }),
            ],
        };
        let writes = |side: &str, ns: &[i64]| -> Vec<FieldWrite> {
            ns.iter().map(|&n| write(side, Value::Integer(n))).collect()
        };
        let want = vec![
            PairOutcome::Write(PairWrites {
                salesforce: writes("Amount", &[1]),
                hubspot: writes("amount", &[3, 4]),
                salesforce_associations: None,
                hubspot_associations: None,
            }),
            PairOutcome::Write(PairWrites {
                salesforce: vec![],
                hubspot: writes("amount", &[6]),
                salesforce_associations: None,
                hubspot_associations: None,
            }),
        ];
        let checked = check_plan(plan, &b).unwrap();
        assert_eq!(checked.wire_size(), want.wire_size());
        assert_eq!(checked.decode(&b).unwrap(), want);
    }

    /// A valid flat plan of `outcomes()` for `batch()`, changed by `spoil`; the error.
    fn refused(spoil: impl FnOnce(&mut FlatPlan)) -> String {
        let b = batch();
        let mut plan = flatten_plan(&outcomes(), &b);
        assert!(check_plan(plan.clone(), &b).is_ok());
        spoil(&mut plan);
        match check_plan(plan, &b) {
            Ok(_) => panic!("a spoilt plan was accepted"),
            Err(e) => e,
        }
    }

    fn first_writes(plan: &mut FlatPlan) -> &mut FlatWrites {
        match &mut plan.outcomes[0] {
            FlatOutcome::Write(w) => w,
            _ => unreachable!("outcome 0 writes"),
        }
    }

    #[test]
    fn every_bad_span_index_and_count_is_refused_naming_the_outcome_and_the_item() {
        // The plan of `outcomes()` has 4 writes (2 per side) and 1 related.
        let e = refused(|p| p.outcomes.push(FlatOutcome::Skip(Skip::UpToDate)));
        assert_eq!(e, "3 outcomes for a batch of 2 pairs");
        let e = refused(|p| {
            p.outcomes.pop();
        });
        assert_eq!(e, "1 outcomes for a batch of 2 pairs");

        let e = refused(|p| first_writes(p).salesforce = Span { start: 3, len: 2 });
        assert_eq!(
            e,
            "outcome 0: salesforce writes span (start 3, len 2) reaches past the plan's 4 items (`writes`)"
        );
        let e = refused(|p| first_writes(p).hubspot = Span { start: 5, len: 0 });
        assert!(
            e.starts_with("outcome 0: hubspot writes span (start 5, len 0)"),
            "{e}"
        );
        // A span whose end does not fit in u32 is out of range, not a wrap-around.
        let e = refused(|p| {
            first_writes(p).hubspot = Span {
                start: u32::MAX,
                len: 2,
            }
        });
        assert!(e.contains("reaches past the plan's 4 items"), "{e}");

        let e = refused(|p| first_writes(p).hubspot_associations = Some(Span { start: 1, len: 1 }));
        assert_eq!(
            e,
            "outcome 0: hubspot associations span (start 1, len 1) reaches past the plan's 1 items (`related`)"
        );
        let e =
            refused(|p| first_writes(p).salesforce_associations = Some(Span { start: 2, len: 0 }));
        assert!(
            e.starts_with("outcome 0: salesforce associations span"),
            "{e}"
        );

        // `known` indices are checked against the side the span writes to: 3 fields each.
        let e = refused(|p| p.writes[0].field = FieldRef::Known(3));
        assert_eq!(
            e,
            "outcome 0: write 0 (salesforce) names field index 3, outside the batch's 3 salesforce fields"
        );
        let e = refused(|p| p.writes[3].field = FieldRef::Known(u32::MAX));
        assert_eq!(
            e,
            format!(
                "outcome 0: write 3 (hubspot) names field index {}, outside the batch's 3 hubspot fields",
                u32::MAX
            )
        );
        // An outcome further down is named as such.
        let e = refused(|p| {
            p.outcomes[1] = FlatOutcome::Write(FlatWrites {
                salesforce: Span { start: 0, len: 0 },
                hubspot: Span { start: 4, len: 1 },
                salesforce_associations: None,
                hubspot_associations: None,
            })
        });
        assert!(
            e.starts_with("outcome 1: hubspot writes span (start 4, len 1)"),
            "{e}"
        );
    }

    #[test]
    fn an_unused_bad_item_is_no_error() {
        let b = batch();
        let mut plan = flatten_plan(&outcomes(), &b);
        plan.writes.push(FlatWrite {
            field: FieldRef::Known(99),
            value: Value::Null,
        });
        let checked = check_plan(plan, &b).unwrap();
        assert_eq!(checked.decode(&b).unwrap(), outcomes());
    }

    #[test]
    fn a_checked_plan_decodes_only_against_a_batch_of_the_shape_it_was_checked_against() {
        let b = batch();
        let checked = check_plan(flatten_plan(&outcomes(), &b), &b).unwrap();
        let mut fewer_fields = b.clone();
        fewer_fields.hubspot_fields.pop();
        let (sf, hs, pairs) = (
            b.salesforce_fields.len(),
            b.hubspot_fields.len(),
            b.pairs.len(),
        );
        assert_eq!(
            checked.decode(&fewer_fields).unwrap_err(),
            format!(
                "the plan was checked against a batch of {pairs} pairs and {sf} + {hs} fields, \
                 not this one of {pairs} pairs and {sf} + {} fields",
                hs - 1
            )
        );
    }
}
