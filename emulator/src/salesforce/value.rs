//! Typed field values, and their conversion from request JSON and to response JSON
//! in Salesforce's formats (dates `2026-05-20`, datetimes `2026-05-20T20:49:32.000+0000`).
//!
//! Conversions never panic: bad input becomes an [`ApiError`] naming the field.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use serde_json::Value;

use super::errors::ApiError;
use super::schema::{FieldDef, FieldType};

/// One stored field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
    Date(NaiveDate),
    /// Milliseconds since the Unix epoch, UTC.
    Time(i64),
}

impl Val {
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
}

/// Formats epoch milliseconds the way Salesforce does.
pub fn format_datetime(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
        None => "1970-01-01T00:00:00.000+0000".to_string(),
    }
}

/// Parses the datetime forms clients send: `2026-05-20T20:49:32.000+0000`,
/// `...Z`, `...+00:00`, with or without fractions, or a bare date (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().or_else(|| {
        parse_datetime(s)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .map(|t| t.date_naive())
    })
}

/// Renders a stored value as response JSON for a field of type `ty`.
pub fn to_json(v: &Val, ty: FieldType) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Str(s) => Value::String(s.clone()),
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => {
            if ty == FieldType::Int && n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Val::Date(d) => Value::String(d.format("%Y-%m-%d").to_string()),
        Val::Time(ms) => Value::String(format_datetime(*ms)),
    }
}

/// Writes a stored value straight into a JSON response body, exactly as
/// [`to_json`] would render it (no intermediate `Value`).
pub fn write_json(out: &mut Vec<u8>, v: &Val, ty: FieldType) {
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Str(s) => write_json_str(out, s),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Num(n) => {
            // serde_json writes integers with itoa, floats with ryu (as
            // `Number::from_f64` does) and non-finite floats as null.
            let _ = if ty == FieldType::Int && n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::to_writer(&mut *out, &(*n as i64))
            } else {
                serde_json::to_writer(&mut *out, n)
            };
        }
        Val::Date(d) if (0..=9999).contains(&d.year()) => {
            write_date(out, *d);
            out.push(b'"');
        }
        Val::Time(ms) => match Utc.timestamp_millis_opt(*ms).single() {
            Some(t) if (0..=9999).contains(&t.year()) => {
                write_date(out, t.date_naive());
                let digits = [
                    b'T',
                    two(t.hour()).0,
                    two(t.hour()).1,
                    b':',
                    two(t.minute()).0,
                    two(t.minute()).1,
                    b':',
                    two(t.second()).0,
                    two(t.second()).1,
                    b'.',
                ];
                out.extend_from_slice(&digits);
                let ms = t.timestamp_subsec_millis().min(999);
                out.extend_from_slice(&[
                    b'0' + (ms / 100) as u8,
                    b'0' + (ms / 10 % 10) as u8,
                    b'0' + (ms % 10) as u8,
                ]);
                out.extend_from_slice(b"+0000\"");
            }
            _ => write_json_str(out, &format_datetime(*ms)),
        },
        Val::Date(d) => write_json_str(out, &d.format("%Y-%m-%d").to_string()),
    }
}

/// The two ASCII digits of `n` (0..=99).
fn two(n: u32) -> (u8, u8) {
    (b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8)
}

/// Writes `"YYYY-MM-DD` (opening quote, no closing one) for a year in 0..=9999.
fn write_date(out: &mut Vec<u8>, d: NaiveDate) {
    let y = d.year() as u32;
    let (m, day) = (two(d.month()), two(d.day()));
    out.extend_from_slice(&[
        b'"',
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
        m.0,
        m.1,
        b'-',
        day.0,
        day.1,
    ]);
}

/// Writes `s` as a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes `,"name":` — the separator and key of an object member that
/// follows another one.
pub fn write_key(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    write_json_str(out, name);
    out.push(b':');
}

fn type_error(f: &FieldDef, v: &Value) -> ApiError {
    let kind = match v {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    };
    ApiError::bad(
        "JSON_PARSER_ERROR",
        format!("Cannot deserialize instance of {} from {kind} value {v} or request may be missing a required field", f.ty.describe_name()),
    )
    .with_fields(vec![f.name.to_string()])
}

/// Converts request JSON into a value of field `f`, checking type and length.
/// References are only checked for shape here (the store checks they exist).
pub fn from_json(f: &FieldDef, v: &Value) -> Result<Val, ApiError> {
    if v.is_null() {
        return Ok(if f.ty == FieldType::Boolean {
            Val::Bool(false)
        } else {
            Val::Null
        });
    }
    match f.ty {
        FieldType::Id | FieldType::Reference => match v {
            Value::String(s) if s.is_empty() => Ok(Val::Null),
            Value::String(s) => match super::ids::normalize(s) {
                Ok(id) => Ok(Val::Str(id)),
                Err(_) => Err(ApiError::bad(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {s}", f.label),
                )
                .with_fields(vec![f.name.to_string()])),
            },
            _ => Err(type_error(f, v)),
        },
        t if t.is_text() => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(type_error(f, v)),
            };
            if s.is_empty() {
                return Ok(Val::Null);
            }
            let chars = s.chars().count();
            if f.length > 0 && chars > f.length as usize {
                return Err(ApiError::bad(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {} (max length={})",
                        f.label,
                        truncate(&s, 40),
                        f.length
                    ),
                )
                .with_fields(vec![f.name.to_string()]));
            }
            if t == FieldType::Email && (!s.contains('@') || s.contains(' ')) {
                return Err(ApiError::bad(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {s}", f.label),
                )
                .with_fields(vec![f.name.to_string()]));
            }
            Ok(Val::Str(s))
        }
        t if t.is_number() => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
                _ => None,
            };
            match n {
                Some(n) if t == FieldType::Int && n.fract() != 0.0 => Err(type_error(f, v)),
                Some(n) if n.abs() >= 1e18 => Err(ApiError::bad(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    format!(
                        "{}: value outside of valid range on numeric field: {n}",
                        f.label
                    ),
                )
                .with_fields(vec![f.name.to_string()])),
                Some(n) => Ok(Val::Num(n)),
                None => Err(type_error(f, v)),
            }
        }
        FieldType::Boolean => match v {
            Value::Bool(b) => Ok(Val::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Val::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Val::Bool(false)),
            _ => Err(type_error(f, v)),
        },
        FieldType::Date => match v {
            Value::String(s) => parse_date(s).map(Val::Date).ok_or_else(|| type_error(f, v)),
            _ => Err(type_error(f, v)),
        },
        FieldType::DateTime => match v {
            Value::String(s) => parse_datetime(s)
                .map(Val::Time)
                .ok_or_else(|| type_error(f, v)),
            _ => Err(type_error(f, v)),
        },
        _ => Err(type_error(f, v)),
    }
}

fn truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_json_matches_rendered_json() {
        let date = |y, m, d| Val::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let cases = [
            (Val::Null, FieldType::String),
            (
                Val::Str("quote \" and \\ and \u{1} and é".into()),
                FieldType::String,
            ),
            (Val::Bool(true), FieldType::Boolean),
            (Val::Bool(false), FieldType::Boolean),
            (Val::Num(42.0), FieldType::Int),
            (Val::Num(-7.0), FieldType::Int),
            (Val::Num(2.5), FieldType::Int),
            (Val::Num(1e16), FieldType::Int),
            (Val::Num(100.0), FieldType::Currency),
            (Val::Num(1234.5678), FieldType::Double),
            (Val::Num(1e-7), FieldType::Percent),
            (Val::Num(f64::NAN), FieldType::Double),
            (Val::Num(f64::INFINITY), FieldType::Currency),
            (date(2026, 5, 20), FieldType::Date),
            (date(33, 1, 9), FieldType::Date),
            (date(12345, 1, 1), FieldType::Date),
            (
                Val::Time(parse_datetime("2026-05-20T20:49:32.007Z").unwrap()),
                FieldType::DateTime,
            ),
            (Val::Time(0), FieldType::DateTime),
            (Val::Time(-1), FieldType::DateTime),
            (Val::Time(i64::MAX), FieldType::DateTime),
            (Val::Time(300_000_000_000_000), FieldType::DateTime),
        ];
        for (v, ty) in cases {
            let mut out = Vec::new();
            write_json(&mut out, &v, ty);
            let expected = serde_json::to_string(&to_json(&v, ty)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{v:?} as {ty:?}");
        }
    }

    #[test]
    fn datetimes_round_trip_in_salesforce_format() {
        let ms = parse_datetime("2026-05-20T20:49:32.000+0000").unwrap();
        assert_eq!(format_datetime(ms), "2026-05-20T20:49:32.000+0000");
        assert_eq!(parse_datetime("2026-05-20T20:49:32Z"), Some(ms));
        assert_eq!(parse_datetime("2026-05-20T22:49:32+02:00"), Some(ms));
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn dates_parse() {
        assert_eq!(
            parse_date("2026-05-20"),
            NaiveDate::from_ymd_opt(2026, 5, 20)
        );
        assert!(parse_date("2026-13-01").is_none());
    }
}
