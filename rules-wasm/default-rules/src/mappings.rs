//! The standard field mappings of HubSpot's native connector, and value helpers (blank, equal,
//! id text) over the borrowed values of a flat batch ([`ValueRef`]).
//!
//! This module is data plus pure comparisons: it must never decide who wins (that is `plan`)
//! and never convert a value's type or amount.

use std::borrow::Cow;

use crate::bindings::dealbridge::rules::types::{Crm, ObjectPair};
use crate::bindings::exports::dealbridge::rules::rules::SyncRule;
use crate::decimal::{self, Dec};
use crate::flat::ValueRef;

/// How a mapping is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// A value copied as it is.
    Plain,
    /// `OwnerId` ↔ `hubspot_owner_id`, translated through `lookups.owners`, always two-way.
    Owner,
    /// `StageName` ↔ `dealstage`, planned together with the record type / pipeline.
    Stage,
    /// `RecordTypeId` ↔ `pipeline`: listed for `describe`, planned as part of `Stage`.
    Pipeline,
}

/// One mapping of the checked config.
#[derive(Debug, PartialEq)]
pub struct MappingSpec {
    /// The Salesforce field's API name (borrowed for the standard mappings, so a config that
    /// copies a standard table to change its rules allocates no names).
    pub sf: Cow<'static, str>,
    /// The HubSpot property's internal name.
    pub hs: Cow<'static, str>,
    /// The rule shown to the tenant (owner mappings behave two-way whatever it says).
    pub rule: SyncRule,
    /// How it is evaluated.
    pub kind: MappingKind,
    /// True for a custom mapping from the config (type-checked by `describe`).
    pub custom: bool,
}

impl Clone for MappingSpec {
    /// Copies a standard mapping's borrowed names without a call per name: a tenant's rules
    /// copy a whole standard table on every invocation.
    #[inline]
    fn clone(&self) -> Self {
        let name = |n: &Cow<'static, str>| match n {
            Cow::Borrowed(s) => Cow::Borrowed(*s),
            Cow::Owned(s) => Cow::Owned(s.clone()),
        };
        MappingSpec {
            sf: name(&self.sf),
            hs: name(&self.hs),
            rule: self.rule,
            kind: self.kind,
            custom: self.custom,
        }
    }
}

const fn spec(sf: &'static str, hs: &'static str, kind: MappingKind) -> MappingSpec {
    MappingSpec {
        sf: Cow::Borrowed(sf),
        hs: Cow::Borrowed(hs),
        rule: SyncRule::PreferSalesforceUnlessBlank,
        kind,
        custom: false,
    }
}

/// Byte equality that a constant can use.
const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The row of `name` on `side` of a standard table, computed when compiling (a name that is not
/// in the table does not compile).
const fn row_of(table: &[MappingSpec], side: Crm, name: &str) -> usize {
    let mut i = 0;
    while i < table.len() {
        let field = match side {
            Crm::Salesforce => &table[i].sf,
            Crm::Hubspot => &table[i].hs,
        };
        if let Cow::Borrowed(field) = field
            && same_text(field, name)
        {
            return i;
        }
        i += 1;
    }
    panic!("the name is not in the standard table");
}

/// Declares one pair's standard table and, for each side, the function from a field name to
/// its row. The functions are `match`es on the names, which compile to a switch on the length
/// and integer compares: resolving a batch's fields calls no `memcmp`.
macro_rules! standard_table {
    ($(#[$doc:meta])* $table:ident, $sf_row:ident, $hs_row:ident:
     $(($sf:literal, $hs:literal, $kind:ident)),* $(,)?) => {
        $(#[$doc])*
        static $table: [MappingSpec; [$($sf),*].len()] = [$(spec($sf, $hs, $kind)),*];

        fn $sf_row(name: &str) -> Option<usize> {
            match name {
                $($sf => Some(const { row_of(&$table, Crm::Salesforce, $sf) }),)*
                _ => None,
            }
        }

        fn $hs_row(name: &str) -> Option<usize> {
            match name {
                $($hs => Some(const { row_of(&$table, Crm::Hubspot, $hs) }),)*
                _ => None,
            }
        }
    };
}

use MappingKind::{Owner, Pipeline, Plain, Stage};

standard_table! {
    /// The opportunity ↔ deal mappings of a multi-currency org; other orgs' end before the last.
    OPPORTUNITY_DEAL, opportunity_sf_row, opportunity_hs_row:
    ("Name", "dealname", Plain),
    ("Amount", "amount", Plain),
    ("CloseDate", "closedate", Plain),
    ("StageName", "dealstage", Stage),
    ("RecordTypeId", "pipeline", Pipeline),
    ("Type", "dealtype", Plain),
    ("Description", "description", Plain),
    ("OwnerId", "hubspot_owner_id", Owner),
    ("CurrencyIsoCode", "deal_currency_code", Plain),
}

standard_table! {
    /// The account ↔ company mappings.
    ACCOUNT_COMPANY, account_sf_row, account_hs_row:
    ("Name", "name", Plain),
    ("Website", "domain", Plain),
    ("Phone", "phone", Plain),
    ("BillingStreet", "address", Plain),
    ("BillingCity", "city", Plain),
    ("BillingState", "state", Plain),
    ("BillingPostalCode", "zip", Plain),
    ("BillingCountry", "country", Plain),
    ("Industry", "industry", Plain),
    ("NumberOfEmployees", "numberofemployees", Plain),
    ("AnnualRevenue", "annualrevenue", Plain),
    ("Description", "description", Plain),
    ("OwnerId", "hubspot_owner_id", Owner),
}

standard_table! {
    /// The contact ↔ contact mappings.
    CONTACT_CONTACT, contact_sf_row, contact_hs_row:
    ("FirstName", "firstname", Plain),
    ("LastName", "lastname", Plain),
    ("Email", "email", Plain),
    ("Phone", "phone", Plain),
    ("MobilePhone", "mobilephone", Plain),
    ("Title", "jobtitle", Plain),
    ("MailingStreet", "address", Plain),
    ("MailingCity", "city", Plain),
    ("MailingState", "state", Plain),
    ("MailingPostalCode", "zip", Plain),
    ("MailingCountry", "country", Plain),
    ("OwnerId", "hubspot_owner_id", Owner),
}

/// The most rows a standard table has.
pub const MAX_STANDARD_ROWS: usize = {
    let (a, b, c) = (
        OPPORTUNITY_DEAL.len(),
        ACCOUNT_COMPANY.len(),
        CONTACT_CONTACT.len(),
    );
    let ab = if a > b { a } else { b };
    if ab > c { ab } else { c }
};

/// The standard mappings of an object pair, all with the default rule: static tables, so that a
/// config that keeps them as they are builds nothing on each invocation. A config's mappings of
/// a pair start with these rows, in this order; custom mappings follow.
pub fn standard(pair: ObjectPair, multi_currency: bool) -> &'static [MappingSpec] {
    match pair {
        ObjectPair::OpportunityDeal if multi_currency => &OPPORTUNITY_DEAL,
        ObjectPair::OpportunityDeal => &OPPORTUNITY_DEAL[..OPPORTUNITY_DEAL.len() - 1],
        ObjectPair::AccountCompany => &ACCOUNT_COMPANY,
        ObjectPair::ContactContact => &CONTACT_CONTACT,
    }
}

/// The row of a field name in the pair's standard table (of a multi-currency org), if it has one.
#[inline]
pub fn standard_row(pair: ObjectPair, side: Crm, name: &str) -> Option<usize> {
    match (pair, side) {
        (ObjectPair::OpportunityDeal, Crm::Salesforce) => opportunity_sf_row(name),
        (ObjectPair::OpportunityDeal, Crm::Hubspot) => opportunity_hs_row(name),
        (ObjectPair::AccountCompany, Crm::Salesforce) => account_sf_row(name),
        (ObjectPair::AccountCompany, Crm::Hubspot) => account_hs_row(name),
        (ObjectPair::ContactContact, Crm::Salesforce) => contact_sf_row(name),
        (ObjectPair::ContactContact, Crm::Hubspot) => contact_hs_row(name),
    }
}

/// The row of an opportunity ↔ deal field, for the planner's own uses of a standard field
/// (computed when compiling).
pub const fn opportunity_row(side: Crm, name: &str) -> usize {
    row_of(&OPPORTUNITY_DEAL, side, name)
}

/// True for a blank value: absent, `null`, empty text, or no chosen options.
#[inline]
pub fn is_blank(v: Option<ValueRef<'_>>) -> bool {
    match v {
        None | Some(ValueRef::Null) => true,
        Some(ValueRef::Text(t)) => t.is_empty(),
        Some(ValueRef::Multi(m)) => m.is_empty(),
        Some(_) => false,
    }
}

/// The number in a decimal or integer value.
#[inline]
pub fn as_dec(v: ValueRef<'_>) -> Option<Dec> {
    match v {
        ValueRef::Decimal(d) => Some(Dec {
            digits: d.digits,
            scale: d.scale,
        }),
        ValueRef::Integer(i) => Some(Dec {
            digits: i,
            scale: 0,
        }),
        _ => None,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether two values are the same under sync: blanks are equal, decimals and integers compare
/// by value, a date equals a point in time on that UTC day (Salesforce `CloseDate` is a date,
/// HubSpot `closedate` a datetime), multi-selects compare as sets, text exactly.
pub fn values_equal(a: Option<ValueRef<'_>>, b: Option<ValueRef<'_>>) -> bool {
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) if !is_blank(Some(a)) && !is_blank(Some(b)) => (a, b),
        _ => return is_blank(a) && is_blank(b),
    };
    match (a, b) {
        (ValueRef::Text(x), ValueRef::Text(y)) => x == y,
        (ValueRef::Boolean(x), ValueRef::Boolean(y)) => x == y,
        (ValueRef::Datetime(x), ValueRef::Datetime(y)) => x == y,
        (ValueRef::Date(x), ValueRef::Date(y)) => x == y,
        (ValueRef::Date(d), ValueRef::Datetime(t)) | (ValueRef::Datetime(t), ValueRef::Date(d)) => {
            let day = days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day));
            t.div_euclid(86_400_000) == day
        }
        (ValueRef::Multi(x), ValueRef::Multi(y)) => {
            x.len() == y.len() && x.iter().all(|o| y.contains(o)) && y.iter().all(|o| x.contains(o))
        }
        _ => match (as_dec(a), as_dec(b)) {
            (Some(x), Some(y)) => decimal::cmp(x, y).is_eq(),
            _ => false,
        },
    }
}

/// The text of an id-like value: borrowed text, or an integer (as HubSpot ids sometimes are)
/// written into a buffer of its own, so reading an id never allocates.
#[derive(Debug, Clone, Copy)]
pub enum IdText<'a> {
    /// Non-empty text of the batch.
    Text(&'a str),
    /// The decimal digits of an integer id (with its sign), right-aligned in the buffer.
    Integer { buf: [u8; 20], start: u8 },
}

impl<'a> IdText<'a> {
    fn integer(i: i64) -> Self {
        let mut buf = [0u8; 20];
        let mut n = i.unsigned_abs();
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if i < 0 {
            start -= 1;
            buf[start] = b'-';
        }
        IdText::Integer {
            buf,
            start: start as u8,
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match self {
            IdText::Text(t) => t,
            // The buffer holds ASCII digits and a sign only.
            IdText::Integer { buf, start } => {
                std::str::from_utf8(&buf[usize::from(*start)..]).unwrap_or_default()
            }
        }
    }
}

/// The text of an id-like value (non-empty text, or an integer), or none when it is blank or of
/// another type.
pub fn id_text(v: Option<ValueRef<'_>>) -> Option<IdText<'_>> {
    match v {
        Some(ValueRef::Text(t)) if !t.is_empty() => Some(IdText::Text(t)),
        Some(ValueRef::Integer(i)) => Some(IdText::integer(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::dealbridge::rules::flat_types::FlatBatch;
    use crate::bindings::dealbridge::rules::types::{Date, Decimal, Value};
    use crate::flat::{FlatView, values_batch};

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    /// The values as the planner sees them, from a flat batch that holds them.
    fn refs(batch: &FlatBatch) -> Vec<ValueRef<'_>> {
        let view = FlatView::new(batch).unwrap();
        batch
            .fields
            .iter()
            .map(|f| view.value(&f.value).unwrap())
            .collect()
    }

    #[test]
    fn blanks() {
        let b = values_batch(&[
            Value::Null,
            text(""),
            Value::Multi(vec![]),
            text(" "),
            Value::Boolean(false),
            Value::Integer(0),
        ]);
        let v = refs(&b);
        assert!(is_blank(None));
        for blank in &v[..3] {
            assert!(is_blank(Some(*blank)), "{blank:?}");
        }
        for value in &v[3..] {
            assert!(!is_blank(Some(*value)), "{value:?}");
        }
    }

    #[test]
    fn equality_is_by_value() {
        let b = values_batch(&[
            Value::Decimal(Decimal {
                digits: 100000,
                scale: 2,
            }),
            Value::Decimal(Decimal {
                digits: 1000,
                scale: 0,
            }),
            Value::Integer(1000),
            Value::Integer(1001),
            text(""),
            text("x"),
            text("1000"),
            Value::Multi(vec!["a".into(), "b".into()]),
            Value::Multi(vec!["b".into(), "a".into()]),
            Value::Multi(vec!["a".into()]),
            Value::Multi(vec!["a".into(), "a".into()]),
        ]);
        let v = refs(&b);
        let eq = |x: usize, y: usize| values_equal(Some(v[x]), Some(v[y]));
        assert!(eq(0, 1));
        assert!(eq(0, 2));
        assert!(!eq(0, 3));
        assert!(values_equal(None, Some(v[4])));
        assert!(!values_equal(None, Some(v[5])));
        assert!(!eq(6, 2));
        assert!(eq(7, 8));
        assert!(!eq(7, 9));
        assert!(!eq(7, 10));
    }

    #[test]
    fn a_date_equals_a_datetime_on_that_utc_day() {
        // 2026-05-20, then 2026-05-20T00:00:00Z, 2026-05-20T20:49:32Z and a millisecond before
        // the day.
        let b = values_batch(&[
            Value::Date(Date {
                year: 2026,
                month: 5,
                day: 20,
            }),
            Value::Datetime(1_779_235_200_000),
            Value::Datetime(1_779_310_172_000),
            Value::Datetime(1_779_235_200_000 - 1),
        ]);
        let v = refs(&b);
        assert!(values_equal(Some(v[0]), Some(v[1])));
        assert!(values_equal(Some(v[2]), Some(v[0])));
        assert!(!values_equal(Some(v[0]), Some(v[3])));
    }

    #[test]
    fn id_text_borrows_text_and_writes_integers() {
        let b = values_batch(&[
            text("101"),
            text(""),
            Value::Integer(0),
            Value::Integer(-42),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Boolean(true),
        ]);
        let v = refs(&b);
        let id = |i: usize| id_text(Some(v[i])).map(|t| t.as_str().to_string());
        assert_eq!(id(0).as_deref(), Some("101"));
        assert_eq!(id(1), None);
        assert_eq!(id(2).as_deref(), Some("0"));
        assert_eq!(id(3).as_deref(), Some("-42"));
        assert_eq!(id(4), Some(i64::MIN.to_string()));
        assert_eq!(id(5), Some(i64::MAX.to_string()));
        assert_eq!(id(6), None);
        assert_eq!(id_text(None).map(|t| t.as_str().len()), None);
    }

    #[test]
    fn every_standard_name_resolves_to_its_own_row_and_nothing_else_does() {
        for pair in [
            ObjectPair::OpportunityDeal,
            ObjectPair::AccountCompany,
            ObjectPair::ContactContact,
        ] {
            let table = standard(pair, true);
            for (row, m) in table.iter().enumerate() {
                assert_eq!(
                    standard_row(pair, Crm::Salesforce, &m.sf),
                    Some(row),
                    "{}",
                    m.sf
                );
                assert_eq!(
                    standard_row(pair, Crm::Hubspot, &m.hs),
                    Some(row),
                    "{}",
                    m.hs
                );
            }
            for other in ["", "name ", "NAME", "Amount__c", "dealname2", "Owner"] {
                let on_sf = standard_row(pair, Crm::Salesforce, other);
                let on_hs = standard_row(pair, Crm::Hubspot, other);
                assert!(
                    on_sf.is_none_or(|r| table[r].sf == other)
                        && on_hs.is_none_or(|r| table[r].hs == other),
                    "{other:?}"
                );
            }
            // The sides do not mix: a HubSpot name is not a Salesforce field.
            assert_eq!(
                standard_row(pair, Crm::Salesforce, "hubspot_owner_id"),
                None
            );
        }
        assert_eq!(opportunity_row(Crm::Salesforce, "Amount"), 1);
        assert_eq!(opportunity_row(Crm::Hubspot, "pipeline"), 4);
    }

    #[test]
    fn standard_tables_match_the_spec() {
        let opp = standard(ObjectPair::OpportunityDeal, false);
        let pairs: Vec<(&str, &str)> = opp.iter().map(|m| (&*m.sf, &*m.hs)).collect();
        for p in [
            ("Name", "dealname"),
            ("Amount", "amount"),
            ("CloseDate", "closedate"),
            ("StageName", "dealstage"),
            ("RecordTypeId", "pipeline"),
            ("Type", "dealtype"),
            ("Description", "description"),
            ("OwnerId", "hubspot_owner_id"),
        ] {
            assert!(pairs.contains(&p), "{p:?}");
        }
        assert!(!pairs.contains(&("CurrencyIsoCode", "deal_currency_code")));
        let acc = standard(ObjectPair::AccountCompany, true);
        assert!(acc.iter().any(|m| m.sf == "Website" && m.hs == "domain"));
        assert!(!acc.iter().any(|m| m.sf == "CurrencyIsoCode"));
        let con = standard(ObjectPair::ContactContact, false);
        assert!(con.iter().any(|m| m.sf == "Title" && m.hs == "jobtitle"));
    }
}
