//! The standard field mappings of HubSpot's native connector, and value helpers (blank, equal).
//!
//! This module is data plus pure comparisons: it must never decide who wins (that is `plan`)
//! and never convert a value's type or amount.

use std::borrow::Cow;

use crate::bindings::dealbridge::rules::types::{ObjectPair, Value};
use crate::bindings::exports::dealbridge::rules::rules::SyncRule;
use crate::decimal::{self, Dec};

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
#[derive(Debug, Clone, PartialEq)]
pub struct MappingSpec {
    /// The Salesforce field's API name (borrowed for the standard mappings, so building the
    /// tables on every invocation allocates nothing).
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

fn spec(sf: &'static str, hs: &'static str, kind: MappingKind) -> MappingSpec {
    MappingSpec {
        sf: Cow::Borrowed(sf),
        hs: Cow::Borrowed(hs),
        rule: SyncRule::PreferSalesforceUnlessBlank,
        kind,
        custom: false,
    }
}

/// The standard mappings of an object pair, all with the default rule.
pub fn standard(pair: ObjectPair, multi_currency: bool) -> Vec<MappingSpec> {
    use MappingKind::*;
    let mut v = match pair {
        ObjectPair::OpportunityDeal => vec![
            spec("Name", "dealname", Plain),
            spec("Amount", "amount", Plain),
            spec("CloseDate", "closedate", Plain),
            spec("StageName", "dealstage", Stage),
            spec("RecordTypeId", "pipeline", Pipeline),
            spec("Type", "dealtype", Plain),
            spec("Description", "description", Plain),
            spec("OwnerId", "hubspot_owner_id", Owner),
        ],
        ObjectPair::AccountCompany => vec![
            spec("Name", "name", Plain),
            spec("Website", "domain", Plain),
            spec("Phone", "phone", Plain),
            spec("BillingStreet", "address", Plain),
            spec("BillingCity", "city", Plain),
            spec("BillingState", "state", Plain),
            spec("BillingPostalCode", "zip", Plain),
            spec("BillingCountry", "country", Plain),
            spec("Industry", "industry", Plain),
            spec("NumberOfEmployees", "numberofemployees", Plain),
            spec("AnnualRevenue", "annualrevenue", Plain),
            spec("Description", "description", Plain),
            spec("OwnerId", "hubspot_owner_id", Owner),
        ],
        ObjectPair::ContactContact => vec![
            spec("FirstName", "firstname", Plain),
            spec("LastName", "lastname", Plain),
            spec("Email", "email", Plain),
            spec("Phone", "phone", Plain),
            spec("MobilePhone", "mobilephone", Plain),
            spec("Title", "jobtitle", Plain),
            spec("MailingStreet", "address", Plain),
            spec("MailingCity", "city", Plain),
            spec("MailingState", "state", Plain),
            spec("MailingPostalCode", "zip", Plain),
            spec("MailingCountry", "country", Plain),
            spec("OwnerId", "hubspot_owner_id", Owner),
        ],
    };
    if multi_currency && pair == ObjectPair::OpportunityDeal {
        v.push(spec("CurrencyIsoCode", "deal_currency_code", Plain));
    }
    v
}

/// True for a blank value: absent, `null`, empty text, or no chosen options.
#[inline]
pub fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Text(t)) => t.is_empty(),
        Some(Value::Multi(m)) => m.is_empty(),
        Some(_) => false,
    }
}

#[inline]
fn as_dec(v: &Value) -> Option<Dec> {
    match v {
        Value::Decimal(d) => Some(Dec {
            digits: d.digits,
            scale: d.scale,
        }),
        Value::Integer(i) => Some(Dec {
            digits: *i,
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
pub fn values_equal(a: Option<&Value>, b: Option<&Value>) -> bool {
    let (ba, bb) = (is_blank(a), is_blank(b));
    if ba || bb {
        return ba && bb;
    }
    let (a, b) = (a.expect("not blank"), b.expect("not blank"));
    match (a, b) {
        (Value::Text(x), Value::Text(y)) => x == y,
        (Value::Boolean(x), Value::Boolean(y)) => x == y,
        (Value::Datetime(x), Value::Datetime(y)) => x == y,
        (Value::Date(x), Value::Date(y)) => x == y,
        (Value::Date(d), Value::Datetime(t)) | (Value::Datetime(t), Value::Date(d)) => {
            let day = days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day));
            t.div_euclid(86_400_000) == day
        }
        (Value::Multi(x), Value::Multi(y)) => {
            x.len() == y.len() && x.iter().all(|o| y.contains(o)) && y.iter().all(|o| x.contains(o))
        }
        _ => match (as_dec(a), as_dec(b)) {
            (Some(x), Some(y)) => decimal::cmp(x, y).is_eq(),
            _ => false,
        },
    }
}

/// The text of an id-like value (text, or an integer as HubSpot ids sometimes are).
pub fn id_text(v: Option<&Value>) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Some(Value::Text(t)) if !t.is_empty() => Some(std::borrow::Cow::Borrowed(t.as_str())),
        Some(Value::Integer(i)) => Some(std::borrow::Cow::Owned(i.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::dealbridge::rules::types::{Date, Decimal};

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    #[test]
    fn blanks() {
        assert!(is_blank(None));
        assert!(is_blank(Some(&Value::Null)));
        assert!(is_blank(Some(&text(""))));
        assert!(is_blank(Some(&Value::Multi(vec![]))));
        assert!(!is_blank(Some(&text(" "))));
        assert!(!is_blank(Some(&Value::Boolean(false))));
        assert!(!is_blank(Some(&Value::Integer(0))));
    }

    #[test]
    fn equality_is_by_value() {
        let a = Value::Decimal(Decimal {
            digits: 100000,
            scale: 2,
        });
        let b = Value::Decimal(Decimal {
            digits: 1000,
            scale: 0,
        });
        let c = Value::Integer(1000);
        assert!(values_equal(Some(&a), Some(&b)));
        assert!(values_equal(Some(&a), Some(&c)));
        assert!(!values_equal(Some(&a), Some(&Value::Integer(1001))));
        assert!(values_equal(None, Some(&text(""))));
        assert!(!values_equal(None, Some(&text("x"))));
        assert!(!values_equal(Some(&text("1000")), Some(&c)));
        let m1 = Value::Multi(vec!["a".into(), "b".into()]);
        let m2 = Value::Multi(vec!["b".into(), "a".into()]);
        assert!(values_equal(Some(&m1), Some(&m2)));
        assert!(!values_equal(
            Some(&m1),
            Some(&Value::Multi(vec!["a".into()]))
        ));
    }

    #[test]
    fn a_date_equals_a_datetime_on_that_utc_day() {
        let d = Value::Date(Date {
            year: 2026,
            month: 5,
            day: 20,
        });
        // 2026-05-20T00:00:00Z and 2026-05-20T20:49:32Z
        assert!(values_equal(
            Some(&d),
            Some(&Value::Datetime(1_779_235_200_000))
        ));
        assert!(values_equal(
            Some(&Value::Datetime(1_779_310_172_000)),
            Some(&d)
        ));
        assert!(!values_equal(
            Some(&d),
            Some(&Value::Datetime(1_779_235_200_000 - 1))
        ));
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
