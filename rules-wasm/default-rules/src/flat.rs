//! The flat form of a batch and of a plan (`flat-types`, `flat-rules`): the borrowed views that
//! the planner reads, and the two conversions at the edges of the nested API.
//!
//! The planner reads only the flat form. [`FlatView`] checks the batch's `text` as UTF-8 once and
//! resolves spans on demand into borrowed values ([`ValueRef`], [`RelatedRef`]), so reading a
//! record allocates nothing. Every span and list position the host sends is checked before use:
//! bad input is a [`BadSpan`], which the planner turns into a `rule-error` naming the pair and
//! the item, never a panic.
//!
//! The nested API (`rules.plan`, `rules.condition`, [`crate::Rules::plan`]) is
//! [`flatten`] → flat planner → [`nest`]. This module never decides anything about a record.

use std::fmt;

use crate::bindings::dealbridge::rules::flat_types::{
    FlatBatch, FlatField, FlatPair, FlatRecord, FlatRelated, FlatSnapshot, FlatValue, Span,
};
use crate::bindings::dealbridge::rules::types::{
    Batch, CrmRecord, Date, Decimal, FieldValue, Related, RelatedKind, Value,
};
use crate::bindings::exports::dealbridge::rules::flat_rules::{
    FieldRef, FlatOutcome, FlatPlan, FlatWrite,
};
use crate::bindings::exports::dealbridge::rules::rules::{
    ErrorKind, FieldWrite, PairOutcome, PairWrites, RuleError,
};

/// The options of a multi-select value: spans of the batch's text, each checked when the value
/// was resolved.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    spans: &'a [Span],
    text: &'a str,
}

impl<'a> Options<'a> {
    /// How many options are chosen.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when no option is chosen.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The options, in the source's order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let text = self.text;
        // Every span was checked by `FlatView::value`; the fallback only keeps this total.
        self.spans
            .iter()
            .map(move |&s| text_of(text, s).unwrap_or_default())
    }

    /// True when `option` is one of the options.
    #[inline]
    pub fn contains(&self, option: &str) -> bool {
        self.iter().any(|o| o == option)
    }
}

/// One field value of the flat batch, borrowed: the planner's view of a `value`.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// No value.
    Null,
    /// Text.
    Text(&'a str),
    /// An exact decimal.
    Decimal(Decimal),
    /// A whole number.
    Integer(i64),
    /// A checkbox.
    Boolean(bool),
    /// A date.
    Date(Date),
    /// A point in time, in milliseconds since the epoch.
    Datetime(i64),
    /// The chosen options of a multi-select.
    Multi(Options<'a>),
}

impl ValueRef<'_> {
    /// The owned value, for a write.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Text(t) => Value::Text(t.to_owned()),
            ValueRef::Decimal(d) => Value::Decimal(d),
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Boolean(b) => Value::Boolean(b),
            ValueRef::Date(d) => Value::Date(d),
            ValueRef::Datetime(t) => Value::Datetime(t),
            ValueRef::Multi(o) => Value::Multi(o.iter().map(str::to_owned).collect()),
        }
    }
}

/// One association of the flat batch, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelatedRef<'a> {
    /// What the related record is.
    pub kind: RelatedKind,
    /// Its Salesforce id, if known.
    pub salesforce_id: Option<&'a str>,
    /// Its HubSpot id, if known.
    pub hubspot_id: Option<&'a str>,
    /// The contact role or association label.
    pub role: Option<&'a str>,
    /// Whether it is the primary one.
    pub primary: bool,
}

impl RelatedRef<'_> {
    /// The owned association, for a plan.
    pub fn to_related(self) -> Related {
        Related {
            kind: self.kind,
            salesforce_id: self.salesforce_id.map(str::to_owned),
            hubspot_id: self.hubspot_id.map(str::to_owned),
            role: self.role.map(str::to_owned),
            primary: self.primary,
        }
    }
}

/// A span of the host's input that does not resolve: outside its list, or (for `text`) not on
/// character boundaries. Carries no text, so checking a span costs no formatting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadSpan {
    /// The list the span points into.
    pub list: &'static str,
    /// The span.
    pub span: Span,
    /// How many items the list has (bytes for `text`).
    pub available: usize,
}

impl BadSpan {
    /// The error for pair `pair` (counted from 0), naming the item that held the span.
    pub fn error(self, pair: usize, item: impl fmt::Display) -> RuleError {
        let Span { start, len } = self.span;
        let end = u64::from(start) + u64::from(len);
        let message = if self.list == "text" && end <= self.available as u64 {
            format!(
                "pair {pair}: {item} is the span {start}+{len} of the batch's `text`, which does not start and end on a character boundary"
            )
        } else {
            let unit = if self.list == "text" {
                "bytes"
            } else {
                "entries"
            };
            format!(
                "pair {pair}: {item} is the span {start}+{len}, outside the batch's `{}` ({} {unit})",
                self.list, self.available
            )
        };
        RuleError {
            kind: ErrorKind::Other,
            field: None,
            message,
        }
    }
}

#[inline]
fn range(span: Span) -> Option<std::ops::Range<usize>> {
    let start = span.start as usize;
    Some(start..start.checked_add(span.len as usize)?)
}

#[inline]
fn text_of(text: &str, span: Span) -> Option<&str> {
    text.get(range(span)?)
}

#[inline]
fn slice_of<'a, T>(list: &'a [T], name: &'static str, span: Span) -> Result<&'a [T], BadSpan> {
    range(span).and_then(|r| list.get(r)).ok_or(BadSpan {
        list: name,
        span,
        available: list.len(),
    })
}

/// A flat batch with its text checked as UTF-8: resolves spans into borrowed values.
#[derive(Clone, Copy)]
pub struct FlatView<'a> {
    /// The batch.
    pub batch: &'a FlatBatch,
    text: &'a str,
}

impl<'a> FlatView<'a> {
    /// Checks the batch's text once; text that is not UTF-8 is an error for the whole batch.
    pub fn new(batch: &'a FlatBatch) -> Result<Self, RuleError> {
        let text = std::str::from_utf8(&batch.text).map_err(|e| RuleError {
            kind: ErrorKind::Other,
            field: None,
            message: format!(
                "the batch's `text` is not UTF-8: {e} (the text has {} bytes)",
                batch.text.len()
            ),
        })?;
        Ok(FlatView { batch, text })
    }

    /// A span of `text`.
    #[inline]
    pub fn text(&self, span: Span) -> Result<&'a str, BadSpan> {
        text_of(self.text, span).ok_or(BadSpan {
            list: "text",
            span,
            available: self.text.len(),
        })
    }

    /// An optional span of `text`.
    #[inline]
    pub fn opt_text(&self, span: Option<Span>) -> Result<Option<&'a str>, BadSpan> {
        span.map(|s| self.text(s)).transpose()
    }

    /// A span of `fields`.
    #[inline]
    pub fn fields(&self, span: Span) -> Result<&'a [FlatField], BadSpan> {
        slice_of(&self.batch.fields, "fields", span)
    }

    /// A span of `changed`.
    #[inline]
    pub fn changed(&self, span: Span) -> Result<&'a [u32], BadSpan> {
        slice_of(&self.batch.changed, "changed", span)
    }

    /// A span of `related`.
    #[inline]
    pub fn related(&self, span: Span) -> Result<&'a [FlatRelated], BadSpan> {
        slice_of(&self.batch.related, "related", span)
    }

    /// A value, with its text or every option checked.
    #[inline]
    pub fn value(&self, value: &FlatValue) -> Result<ValueRef<'a>, BadSpan> {
        Ok(match *value {
            FlatValue::Null => ValueRef::Null,
            FlatValue::Text(s) => ValueRef::Text(self.text(s)?),
            FlatValue::Decimal(d) => ValueRef::Decimal(d),
            FlatValue::Integer(i) => ValueRef::Integer(i),
            FlatValue::Boolean(b) => ValueRef::Boolean(b),
            FlatValue::Date(d) => ValueRef::Date(d),
            FlatValue::Datetime(t) => ValueRef::Datetime(t),
            FlatValue::Multi(s) => {
                let spans = slice_of(&self.batch.options, "options", s)?;
                for &o in spans {
                    self.text(o)?;
                }
                ValueRef::Multi(Options {
                    spans,
                    text: self.text,
                })
            }
        })
    }

    /// An association, with its ids and role checked.
    #[inline]
    pub fn related_ref(&self, r: &FlatRelated) -> Result<RelatedRef<'a>, BadSpan> {
        Ok(RelatedRef {
            kind: r.kind,
            salesforce_id: self.opt_text(r.salesforce_id)?,
            hubspot_id: self.opt_text(r.hubspot_id)?,
            role: self.opt_text(r.role)?,
            primary: r.primary,
        })
    }
}

/// The lists of a flat batch being built.
#[derive(Default)]
struct Lists {
    text: Vec<u8>,
    options: Vec<Span>,
    fields: Vec<FlatField>,
    changed: Vec<u32>,
    related: Vec<FlatRelated>,
}

/// A list position as a span bound: a batch that fits the component's 32-bit memory fits these.
fn bound(n: usize) -> u32 {
    u32::try_from(n).expect("a batch's lists have fewer than 2^32 items")
}

pub(crate) fn span_from(start: usize, end: usize) -> Span {
    Span {
        start: bound(start),
        len: bound(end - start),
    }
}

impl Lists {
    fn text(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(s.as_bytes());
        span_from(start, self.text.len())
    }

    fn value(&mut self, v: &Value) -> FlatValue {
        match v {
            Value::Null => FlatValue::Null,
            Value::Text(t) => FlatValue::Text(self.text(t)),
            Value::Decimal(d) => FlatValue::Decimal(*d),
            Value::Integer(i) => FlatValue::Integer(*i),
            Value::Boolean(b) => FlatValue::Boolean(*b),
            Value::Date(d) => FlatValue::Date(*d),
            Value::Datetime(t) => FlatValue::Datetime(*t),
            Value::Multi(options) => {
                let start = self.options.len();
                for o in options {
                    let s = self.text(o);
                    self.options.push(s);
                }
                FlatValue::Multi(span_from(start, self.options.len()))
            }
        }
    }

    fn fields(&mut self, values: &[FieldValue]) -> Span {
        let start = self.fields.len();
        for fv in values {
            let value = self.value(&fv.value);
            self.fields.push(FlatField {
                field: fv.field,
                value,
            });
        }
        span_from(start, self.fields.len())
    }

    fn record(&mut self, r: &CrmRecord) -> FlatRecord {
        FlatRecord {
            id: self.text(&r.id),
            modified_at: r.modified_at,
            fields: self.fields(&r.fields),
        }
    }

    fn changed(&mut self, changed: &[u32]) -> Span {
        let start = self.changed.len();
        self.changed.extend_from_slice(changed);
        span_from(start, self.changed.len())
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
        span_from(start, self.related.len())
    }
}

/// The flat form of a nested batch: the same content, every text in one byte list.
pub fn flatten(batch: &Batch) -> FlatBatch {
    let mut lists = Lists::default();
    let pairs = batch
        .pairs
        .iter()
        .map(|p| FlatPair {
            salesforce: p.salesforce.as_ref().map(|r| lists.record(r)),
            hubspot: p.hubspot.as_ref().map(|r| lists.record(r)),
            snapshot: p.snapshot.as_ref().map(|s| FlatSnapshot {
                salesforce: lists.fields(&s.salesforce),
                hubspot: lists.fields(&s.hubspot),
                synced_at: s.synced_at,
            }),
            salesforce_changed: lists.changed(&p.salesforce_changed),
            hubspot_changed: lists.changed(&p.hubspot_changed),
            salesforce_related: lists.related(&p.associations.salesforce),
            hubspot_related: lists.related(&p.associations.hubspot),
        })
        .collect();
    FlatBatch {
        object_pair: batch.object_pair,
        direction: batch.direction,
        trigger: batch.trigger,
        salesforce_fields: batch.salesforce_fields.clone(),
        hubspot_fields: batch.hubspot_fields.clone(),
        text: lists.text,
        options: lists.options,
        fields: lists.fields,
        changed: lists.changed,
        related: lists.related,
        pairs,
        lookups: batch.lookups.clone(),
    }
}

/// The error for a plan that does not resolve, naming the outcome.
fn bad_plan(outcome: usize, what: impl fmt::Display) -> RuleError {
    RuleError {
        kind: ErrorKind::Other,
        field: None,
        message: format!("outcome {outcome} of the plan: {what}"),
    }
}

/// Takes the writes of one span out of the plan, naming each field on the side written to.
fn nest_writes(
    writes: &mut [Option<FlatWrite>],
    span: Span,
    table: &[String],
    side: &str,
    outcome: usize,
) -> Result<Vec<FieldWrite>, RuleError> {
    let len = writes.len();
    let slots = range(span).and_then(|r| writes.get_mut(r)).ok_or_else(|| {
        bad_plan(
            outcome,
            format_args!(
                "the {side} writes are the span {}+{}, outside the plan's `writes` ({len} entries)",
                span.start, span.len
            ),
        )
    })?;
    slots
        .iter_mut()
        .map(|slot| {
            let write = slot.take().ok_or_else(|| {
                bad_plan(
                    outcome,
                    format_args!("the {side} writes share entries of `writes` with another span"),
                )
            })?;
            let field = match write.field {
                FieldRef::Named(name) => name,
                FieldRef::Known(i) => table.get(i as usize).cloned().ok_or_else(|| {
                    bad_plan(
                        outcome,
                        format_args!(
                            "a {side} write names field {i}, but the batch's {side} field table has {} entries",
                            table.len()
                        ),
                    )
                })?,
            };
            Ok(FieldWrite {
                field,
                value: write.value,
            })
        })
        .collect()
}

fn nest_related(
    related: &[Related],
    span: Option<Span>,
    side: &str,
    outcome: usize,
) -> Result<Option<Vec<Related>>, RuleError> {
    span.map(|s| {
        slice_of(related, "related", s)
            .map(<[Related]>::to_vec)
            .map_err(|b| {
                bad_plan(
                    outcome,
                    format_args!(
                        "the {side} associations are the span {}+{}, outside the plan's `related` ({} entries)",
                        s.start, s.len, b.available
                    ),
                )
            })
    })
    .transpose()
}

/// The nested outcomes of a flat plan of this crate's planner, with `known` fields named from
/// the batch's field tables (`salesforce_fields` for Salesforce writes, `hubspot_fields` for
/// HubSpot ones). The planner never points two spans at one write, so each write is moved out,
/// not copied; a write used twice is an error here, though the contract allows it (the host
/// copies it). A span outside its list or a field position outside its table is an error
/// naming the outcome.
pub(crate) fn nest(
    salesforce_fields: &[String],
    hubspot_fields: &[String],
    plan: FlatPlan,
) -> Result<Vec<PairOutcome>, RuleError> {
    let mut writes: Vec<Option<FlatWrite>> = plan.writes.into_iter().map(Some).collect();
    plan.outcomes
        .into_iter()
        .enumerate()
        .map(|(n, outcome)| {
            Ok(match outcome {
                FlatOutcome::Skip(s) => PairOutcome::Skip(s),
                FlatOutcome::Error(e) => PairOutcome::Error(e),
                FlatOutcome::Write(w) => PairOutcome::Write(PairWrites {
                    salesforce: nest_writes(
                        &mut writes,
                        w.salesforce,
                        salesforce_fields,
                        "Salesforce",
                        n,
                    )?,
                    hubspot: nest_writes(&mut writes, w.hubspot, hubspot_fields, "HubSpot", n)?,
                    salesforce_associations: nest_related(
                        &plan.related,
                        w.salesforce_associations,
                        "Salesforce",
                        n,
                    )?,
                    hubspot_associations: nest_related(
                        &plan.related,
                        w.hubspot_associations,
                        "HubSpot",
                        n,
                    )?,
                }),
            })
        })
        .collect()
}

/// A batch with no pairs whose `fields` hold `values` (Salesforce field 0, 1, ...), for tests of
/// the value helpers.
#[cfg(test)]
pub(crate) fn values_batch(values: &[Value]) -> FlatBatch {
    use crate::bindings::dealbridge::rules::types::{Direction, Lookups, ObjectPair, Trigger};
    let mut lists = Lists::default();
    for (i, value) in values.iter().enumerate() {
        let value = lists.value(value);
        lists.fields.push(FlatField {
            field: bound(i),
            value,
        });
    }
    FlatBatch {
        object_pair: ObjectPair::OpportunityDeal,
        direction: Direction::SalesforceToHubspot,
        trigger: Trigger::Incremental,
        salesforce_fields: Vec::new(),
        hubspot_fields: Vec::new(),
        text: lists.text,
        options: lists.options,
        fields: lists.fields,
        changed: Vec::new(),
        related: Vec::new(),
        pairs: Vec::new(),
        lookups: Lookups {
            owners: Vec::new(),
            pipelines: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests;
