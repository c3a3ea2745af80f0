//! CRM wire values ↔ the contract's typed [`Value`], by each field's described type.
//!
//! Salesforce sends JSON numbers, strings, booleans and `null`; HubSpot sends every
//! property as a string. Both become one [`Value`] case chosen by the field's type
//! ([`FieldKind`]). Money is an exact [`Decimal`] parsed from the number's *text*
//! (serde_json's shortest round-trip form of what Salesforce sent), never by arithmetic on
//! a float; no exchange rate is ever applied. The snapshot form ([`canonical_json`]) is
//! normalised (decimals without trailing zeros, dates as `YYYY-MM-DD`) so that comparing
//! a current value with the last-synced one is an exact JSON comparison.
//!
//! This module is pure: it must never do I/O and never decide who wins.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde_json::Value as Json;

use crate::runtime::{Date, Decimal, Value};

/// How a field's values are typed, derived from the CRM's own description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Strings, picklists, ids, emails, phones, URLs.
    Text,
    /// Currency, percent, double, HubSpot number.
    Decimal,
    /// Salesforce int.
    Integer,
    /// Checkbox.
    Boolean,
    /// A date without time.
    Date,
    /// A point in time.
    Datetime,
    /// Multi-select (`;`-separated on both wires).
    Multi,
}

/// The kind of a Salesforce field by its describe `type`.
pub fn salesforce_kind(describe_type: &str) -> FieldKind {
    match describe_type {
        "currency" | "double" | "percent" => FieldKind::Decimal,
        "int" | "long" => FieldKind::Integer,
        "boolean" => FieldKind::Boolean,
        "date" => FieldKind::Date,
        "datetime" => FieldKind::Datetime,
        "multipicklist" => FieldKind::Multi,
        _ => FieldKind::Text,
    }
}

/// The kind of a HubSpot property by its `type` and `fieldType`.
pub fn hubspot_kind(property_type: &str, field_type: &str) -> FieldKind {
    match (property_type, field_type) {
        ("number", _) => FieldKind::Decimal,
        ("bool", _) => FieldKind::Boolean,
        ("date", _) => FieldKind::Date,
        ("datetime", _) => FieldKind::Datetime,
        ("enumeration", "checkbox") => FieldKind::Multi,
        ("enumeration", "booleancheckbox") => FieldKind::Boolean,
        _ => FieldKind::Text,
    }
}

/// A wire value that does not fit its field's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value {value:?} is not a valid {kind:?}")]
pub struct ValueError {
    /// The value as received.
    pub value: String,
    /// The type it should have had.
    pub kind: FieldKind,
}

fn bad(value: impl ToString, kind: FieldKind) -> ValueError {
    ValueError {
        value: value.to_string(),
        kind,
    }
}

/// Parses decimal text (`-1234.50`, `1e3`, `17`) exactly.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (neg, body) = match mantissa.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        digits = digits.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let mut scale = frac.len() as i32 - exp;
    while scale < 0 {
        digits = digits.checked_mul(10)?;
        scale += 1;
    }
    while scale > 18 {
        if digits % 10 != 0 {
            return None;
        }
        digits /= 10;
        scale -= 1;
    }
    let digits = i64::try_from(if neg { -digits } else { digits }).ok()?;
    Some(Decimal {
        digits,
        scale: scale as u8,
    })
}

/// Formats a decimal as plain text, keeping its scale (`{123450, 2}` → `1234.50`).
pub fn format_decimal(d: &Decimal) -> String {
    let neg = d.digits < 0;
    let abs = d.digits.unsigned_abs().to_string();
    let scale = d.scale as usize;
    let text = if scale == 0 {
        abs
    } else if abs.len() > scale {
        format!(
            "{}.{}",
            &abs[..abs.len() - scale],
            &abs[abs.len() - scale..]
        )
    } else {
        format!("0.{}{}", "0".repeat(scale - abs.len()), abs)
    };
    if neg { format!("-{text}") } else { text }
}

/// The decimal without trailing fractional zeros (`1234.50` → `1234.5`, `100.00` → `100`).
pub fn normalize_decimal(d: &Decimal) -> Decimal {
    let mut d = *d;
    while d.scale > 0 && d.digits % 10 == 0 {
        d.digits /= 10;
        d.scale -= 1;
    }
    d
}

fn date_of(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as u8,
        day: d.day() as u8,
    }
}

fn naive(d: &Date) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(d.year, u32::from(d.month), u32::from(d.day))
}

fn parse_date(s: &str) -> Option<Date> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d")
        .ok()
        .map(date_of)
}

/// Milliseconds since the epoch of a Salesforce (`2026-05-20T20:49:32.000+0000`), ISO-8601
/// or epoch-milliseconds timestamp.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Some(t) = crate::crm::salesforce::types::parse_datetime(s) {
        return Some(t.timestamp_millis());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn date_to_ms(d: &Date) -> Option<i64> {
    naive(d).map(|n| {
        n.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis()
    })
}

fn ms_to_date(ms: i64) -> Option<Date> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| date_of(t.date_naive()))
}

fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn split_multi(s: &str) -> Value {
    Value::Multi(
        s.split(';')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// A Salesforce JSON value as a [`Value`] of `kind`.
pub fn from_salesforce(v: &Json, kind: FieldKind) -> Result<Value, ValueError> {
    Ok(match (v, kind) {
        (Json::Null, _) => Value::Null,
        (Json::String(s), _) if s.is_empty() && kind != FieldKind::Text => Value::Null,
        (Json::Number(n), FieldKind::Decimal) => {
            Value::Decimal(parse_decimal(&n.to_string()).ok_or_else(|| bad(n, kind))?)
        }
        (Json::String(s), FieldKind::Decimal) => {
            Value::Decimal(parse_decimal(s).ok_or_else(|| bad(s, kind))?)
        }
        (Json::Number(n), FieldKind::Integer) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => {
                let d = parse_decimal(&n.to_string())
                    .map(|d| normalize_decimal(&d))
                    .ok_or_else(|| bad(n, kind))?;
                if d.scale != 0 {
                    return Err(bad(n, kind));
                }
                Value::Integer(d.digits)
            }
        },
        (Json::Bool(b), FieldKind::Boolean) => Value::Boolean(*b),
        (Json::String(s), FieldKind::Date) => {
            Value::Date(parse_date(s).ok_or_else(|| bad(s, kind))?)
        }
        (Json::String(s), FieldKind::Datetime) => {
            Value::Datetime(parse_time_ms(s).ok_or_else(|| bad(s, kind))?)
        }
        (Json::String(s), FieldKind::Multi) => split_multi(s),
        (Json::String(s), FieldKind::Text) => Value::Text(s.clone()),
        (Json::Number(n), FieldKind::Text) => Value::Text(n.to_string()),
        (Json::Bool(b), FieldKind::Text) => Value::Text(b.to_string()),
        (other, kind) => return Err(bad(other, kind)),
    })
}

/// A HubSpot property string (or unset) as a [`Value`] of `kind`.
pub fn from_hubspot(v: Option<&str>, kind: FieldKind) -> Result<Value, ValueError> {
    let Some(s) = v else { return Ok(Value::Null) };
    if s.is_empty() {
        return Ok(if kind == FieldKind::Multi {
            Value::Multi(Vec::new())
        } else {
            Value::Null
        });
    }
    Ok(match kind {
        FieldKind::Text => Value::Text(s.to_string()),
        FieldKind::Decimal => Value::Decimal(parse_decimal(s).ok_or_else(|| bad(s, kind))?),
        FieldKind::Integer => match parse_decimal(s).map(|d| normalize_decimal(&d)) {
            Some(d) if d.scale == 0 => Value::Integer(d.digits),
            _ => return Err(bad(s, kind)),
        },
        FieldKind::Boolean => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(bad(s, kind)),
        },
        FieldKind::Date => match parse_date(s) {
            Some(d) if s.len() == 10 => Value::Date(d),
            _ => Value::Date(
                parse_time_ms(s)
                    .and_then(ms_to_date)
                    .ok_or_else(|| bad(s, kind))?,
            ),
        },
        FieldKind::Datetime => match parse_time_ms(s) {
            Some(ms) => Value::Datetime(ms),
            None => Value::Datetime(
                parse_date(s)
                    .and_then(|d| date_to_ms(&d))
                    .ok_or_else(|| bad(s, kind))?,
            ),
        },
        FieldKind::Multi => split_multi(s),
    })
}

/// A [`Value`] as Salesforce JSON for a field of `kind` (dates/datetimes converted across).
pub fn to_salesforce(v: &Value, kind: FieldKind) -> Json {
    match (v, kind) {
        (Value::Null, _) => Json::Null,
        (Value::Text(s), _) => Json::String(s.clone()),
        (Value::Decimal(d), _) => {
            // `Number::from_str` keeps integers exact; fractions travel as the shortest
            // float that prints back to the same text (exact for up to 15 digits).
            let text = format_decimal(&normalize_decimal(d));
            text.parse::<serde_json::Number>()
                .map(Json::Number)
                .unwrap_or(Json::String(text))
        }
        (Value::Integer(i), _) => Json::from(*i),
        (Value::Boolean(b), _) => Json::Bool(*b),
        (Value::Date(d), FieldKind::Datetime) => {
            Json::String(date_to_ms(d).map(iso_ms).unwrap_or_default())
        }
        (Value::Date(d), _) => Json::String(
            naive(d)
                .map(|n| n.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
        ),
        (Value::Datetime(ms), FieldKind::Date) => Json::String(
            ms_to_date(*ms)
                .and_then(|d| naive(&d))
                .map(|n| n.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
        ),
        (Value::Datetime(ms), _) => Json::String(iso_ms(*ms)),
        (Value::Multi(m), _) => Json::String(m.join(";")),
    }
}

/// A [`Value`] as a HubSpot property string for a property of `kind` (`""` clears).
pub fn to_hubspot(v: &Value, kind: FieldKind) -> String {
    match (v, kind) {
        (Value::Null, _) => String::new(),
        (Value::Text(s), _) => s.clone(),
        (Value::Decimal(d), _) => format_decimal(d),
        (Value::Integer(i), _) => i.to_string(),
        (Value::Boolean(b), _) => b.to_string(),
        (Value::Date(d), FieldKind::Datetime) => {
            date_to_ms(d).map(|ms| ms.to_string()).unwrap_or_default()
        }
        (Value::Date(d), _) => naive(d)
            .map(|n| n.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        (Value::Datetime(ms), FieldKind::Date) => ms_to_date(*ms)
            .and_then(|d| naive(&d))
            .map(|n| n.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        (Value::Datetime(ms), _) => ms.to_string(),
        (Value::Multi(m), _) => m.join(";"),
    }
}

/// The normalised JSON form of a value in a snapshot; two values that sync as the same
/// give the same JSON. Blank text and no options are `null`.
pub fn canonical_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Text(s) if s.is_empty() => Json::Null,
        Value::Text(s) => Json::String(s.clone()),
        Value::Decimal(d) => Json::String(format_decimal(&normalize_decimal(d))),
        Value::Integer(i) => Json::String(i.to_string()),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Date(d) => Json::String(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
        Value::Datetime(ms) => Json::from(*ms),
        Value::Multi(m) if m.is_empty() => Json::Null,
        Value::Multi(m) => {
            let mut m = m.clone();
            m.sort();
            Json::from(m)
        }
    }
}

/// A snapshot JSON value back as a [`Value`] of `kind` (for the plugin's snapshot view).
pub fn from_canonical(j: &Json, kind: FieldKind) -> Value {
    match (j, kind) {
        (Json::Null, _) => Value::Null,
        (Json::Bool(b), _) => Value::Boolean(*b),
        (Json::Number(n), _) => Value::Datetime(n.as_i64().unwrap_or_default()),
        (Json::Array(a), _) => Value::Multi(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        (Json::String(s), FieldKind::Decimal) => parse_decimal(s)
            .map(Value::Decimal)
            .unwrap_or(Value::Text(s.clone())),
        (Json::String(s), FieldKind::Integer) => s
            .parse()
            .map(Value::Integer)
            .unwrap_or(Value::Text(s.clone())),
        (Json::String(s), FieldKind::Date) => parse_date(s)
            .map(Value::Date)
            .unwrap_or(Value::Text(s.clone())),
        (Json::String(s), _) => Value::Text(s.clone()),
        (Json::Object(_), _) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(digits: i64, scale: u8) -> Decimal {
        Decimal { digits, scale }
    }

    #[test]
    fn decimals_parse_exactly_from_text() {
        assert_eq!(parse_decimal("1234.50"), Some(dec(123450, 2)));
        assert_eq!(parse_decimal("-0.07"), Some(dec(-7, 2)));
        assert_eq!(parse_decimal("1e3"), Some(dec(1000, 0)));
        assert_eq!(parse_decimal("1.5E-2"), Some(dec(15, 3)));
        assert_eq!(
            parse_decimal("99999999999999.99"),
            Some(dec(9_999_999_999_999_999, 2))
        );
        assert_eq!(parse_decimal("abc"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("1.2.3"), None);
    }

    #[test]
    fn decimals_format_with_their_scale() {
        assert_eq!(format_decimal(&dec(123450, 2)), "1234.50");
        assert_eq!(format_decimal(&dec(-7, 2)), "-0.07");
        assert_eq!(format_decimal(&dec(5, 0)), "5");
        assert_eq!(format_decimal(&normalize_decimal(&dec(100000, 2))), "1000");
    }

    #[test]
    fn salesforce_money_stays_exact_and_unconverted() {
        let v: Json = serde_json::from_str("1234567.89").unwrap();
        assert_eq!(
            from_salesforce(&v, FieldKind::Decimal).unwrap(),
            Value::Decimal(dec(123456789, 2))
        );
        // Round trip to HubSpot: the same digits.
        assert_eq!(
            to_hubspot(
                &from_salesforce(&v, FieldKind::Decimal).unwrap(),
                FieldKind::Decimal
            ),
            "1234567.89"
        );
        assert_eq!(
            to_salesforce(&Value::Decimal(dec(123456789, 2)), FieldKind::Decimal).to_string(),
            "1234567.89"
        );
    }

    #[test]
    fn hubspot_strings_become_typed_values() {
        assert_eq!(
            from_hubspot(Some("17.5"), FieldKind::Decimal).unwrap(),
            Value::Decimal(dec(175, 1))
        );
        assert_eq!(
            from_hubspot(Some(""), FieldKind::Decimal).unwrap(),
            Value::Null
        );
        assert_eq!(from_hubspot(None, FieldKind::Text).unwrap(), Value::Null);
        assert_eq!(
            from_hubspot(Some("a;b"), FieldKind::Multi).unwrap(),
            Value::Multi(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            from_hubspot(Some("2026-05-20T00:00:00.000Z"), FieldKind::Datetime).unwrap(),
            Value::Datetime(1_779_235_200_000)
        );
        assert!(from_hubspot(Some("twelve"), FieldKind::Decimal).is_err());
    }

    #[test]
    fn dates_cross_to_datetimes_at_utc_midnight() {
        let d = Value::Date(Date {
            year: 2026,
            month: 5,
            day: 20,
        });
        assert_eq!(to_hubspot(&d, FieldKind::Datetime), "1779235200000");
        assert_eq!(
            to_salesforce(&Value::Datetime(1_779_310_172_000), FieldKind::Date),
            Json::String("2026-05-20".into())
        );
        assert_eq!(
            from_salesforce(&Json::String("2026-05-20".into()), FieldKind::Date).unwrap(),
            d
        );
    }

    #[test]
    fn canonical_form_compares_by_value() {
        assert_eq!(
            canonical_json(&Value::Decimal(dec(100000, 2))),
            canonical_json(&Value::Decimal(dec(1000, 0)))
        );
        assert_eq!(canonical_json(&Value::Text(String::new())), Json::Null);
        assert_eq!(
            canonical_json(&Value::Multi(vec!["b".into(), "a".into()])),
            canonical_json(&Value::Multi(vec!["a".into(), "b".into()]))
        );
        let d = Value::Decimal(dec(12345, 2));
        assert_eq!(from_canonical(&canonical_json(&d), FieldKind::Decimal), d);
    }
}
