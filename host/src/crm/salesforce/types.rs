//! Salesforce wire types: sObject rows, query pages, save results, describe, metadata rows,
//! the `Sforce-Limit-Info` header, ids and datetimes.
//!
//! Only shapes and pure parsing live here; this module must never do I/O.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::errors::classify_code;
use crate::crm::ErrorClass;
pub use crate::crm::governor::ApiUsage;

/// The fields of one sObject row, by API name (values as Salesforce sends them).
pub type Fields = Map<String, Value>;

/// The `attributes` of an sObject row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// The sObject type, e.g. `Opportunity`.
    #[serde(rename = "type")]
    pub sobject_type: String,
    /// The record's REST URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One sObject row: its `attributes` and its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SObject {
    /// Type and URL (absent in some aggregate results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    /// Every other key of the row.
    #[serde(flatten)]
    pub fields: Fields,
}

impl SObject {
    /// The `Id` field, when selected.
    pub fn id(&self) -> Option<&str> {
        self.fields.get("Id").and_then(Value::as_str)
    }

    /// A field's value as a string, when it is one.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }
}

/// One page of a SOQL query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage<T = SObject> {
    /// Rows matching the whole query (or the count of `SELECT COUNT()`).
    pub total_size: u64,
    /// True on the last page.
    pub done: bool,
    /// The path of the next page, while not `done`.
    #[serde(default)]
    pub next_records_url: Option<String>,
    /// This page's rows (at most 2,000).
    #[serde(default = "Vec::new")]
    pub records: Vec<T>,
}

/// Whether a query sees deleted rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryScope {
    /// `/query`: live rows only.
    Live,
    /// `/queryAll`: also deleted (and archived) rows, with `IsDeleted = true`.
    IncludeDeleted,
}

/// `GET .../sobjects/{type}/updated/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedIds {
    /// Ids changed in the window (by `SystemModstamp`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// The end of the window Salesforce covered.
    pub latest_date_covered: String,
}

/// One deleted record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecord {
    /// Its id.
    pub id: String,
    /// When it was deleted.
    pub deleted_date: String,
}

/// `GET .../sobjects/{type}/deleted/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecords {
    /// The records deleted in the window.
    #[serde(default)]
    pub deleted_records: Vec<DeletedRecord>,
    /// The oldest date Salesforce still has deletions for.
    pub earliest_date_available: String,
    /// The end of the window Salesforce covered.
    pub latest_date_covered: String,
}

impl DeletedRecords {
    /// True when Salesforce no longer has deletions from the window's start: some may have
    /// been missed and a full reconcile is needed.
    pub fn needs_full_reconcile(&self, window_start: DateTime<Utc>) -> bool {
        parse_datetime(&self.earliest_date_available).is_some_and(|e| e > window_start)
    }
}

/// One error of a collections / save result (`statusCode`, not `errorCode`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordError {
    /// The vendor code, e.g. `REQUIRED_FIELD_MISSING`.
    #[serde(default, alias = "errorCode")]
    pub status_code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Fields involved.
    #[serde(default)]
    pub fields: Vec<String>,
}

impl RecordError {
    /// The sync-health class of this error.
    pub fn class(&self) -> ErrorClass {
        classify_code(&self.status_code)
    }
}

/// The result of saving one record (create, update, upsert, delete), in request order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveResult {
    /// The record's id (absent on some failures).
    #[serde(default)]
    pub id: Option<String>,
    /// Whether this record was saved.
    pub success: bool,
    /// For upserts: whether the record was created (false: updated).
    #[serde(default)]
    pub created: Option<bool>,
    /// Why it failed (empty on success).
    #[serde(default)]
    pub errors: Vec<RecordError>,
}

impl SaveResult {
    /// The class of the first error, when the record failed.
    pub fn error_class(&self) -> Option<ErrorClass> {
        if self.success {
            None
        } else {
            Some(
                self.errors
                    .first()
                    .map(RecordError::class)
                    .unwrap_or(ErrorClass::Other),
            )
        }
    }
}

/// The result of a single upsert on an external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The record's id.
    pub id: String,
    /// Whether it was created (false: an existing record was updated).
    pub created: bool,
}

/// One picklist value of a field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PicklistValue {
    /// The API value.
    pub value: String,
    /// The label.
    #[serde(default)]
    pub label: Option<String>,
    /// Whether it may be used.
    #[serde(default)]
    pub active: bool,
    /// Whether it is the default.
    #[serde(default)]
    pub default_value: bool,
}

/// One field of a describe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Salesforce type: `string`, `picklist`, `currency`, `date`, `datetime`, `reference`...
    #[serde(rename = "type")]
    pub field_type: String,
    /// May be null.
    #[serde(default)]
    pub nillable: bool,
    /// May be set on create.
    #[serde(default)]
    pub createable: bool,
    /// May be updated.
    #[serde(default)]
    pub updateable: bool,
    /// Is a formula or roll-up (changes do not trigger a sync).
    #[serde(default)]
    pub calculated: bool,
    /// Is an external id (usable for upserts).
    #[serde(default)]
    pub external_id: bool,
    /// Has unique values.
    #[serde(default)]
    pub unique: bool,
    /// Maximum length of text fields.
    #[serde(default)]
    pub length: u64,
    /// Referenced sObject types for `reference` fields.
    #[serde(default)]
    pub reference_to: Vec<String>,
    /// Allowed values of picklists.
    #[serde(default)]
    pub picklist_values: Vec<PicklistValue>,
}

/// `GET .../sobjects/{type}/describe`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SObjectDescribe {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// 3-character id prefix.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// The fields.
    #[serde(default)]
    pub fields: Vec<FieldDescribe>,
}

impl SObjectDescribe {
    /// A field by API name.
    pub fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A RecordType row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordType {
    /// 18-character id (prefix `012`).
    pub id: String,
    /// Label.
    pub name: String,
    /// API name.
    pub developer_name: String,
    /// Whether it may be used.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// An OpportunityStage row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpportunityStage {
    /// The stage's label (the `StageName` value).
    pub master_label: String,
    /// Closed stage.
    pub is_closed: bool,
    /// Won stage.
    pub is_won: bool,
    /// Default probability in percent.
    #[serde(default)]
    pub default_probability: Option<f64>,
    /// Order in the picklist.
    #[serde(default)]
    pub sort_order: Option<i64>,
    /// Whether it may be used.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// A User row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    /// 18-character id (prefix `005`).
    pub id: String,
    /// Email, matched with HubSpot owners.
    #[serde(default)]
    pub email: Option<String>,
    /// Full name.
    #[serde(default)]
    pub name: Option<String>,
    /// Active user.
    #[serde(default)]
    pub is_active: bool,
}

/// One limit of `GET .../limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Limit {
    /// The allowance.
    pub max: u64,
    /// What is left.
    pub remaining: u64,
}

/// `GET .../limits` (only what the sync needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OrgLimits {
    /// The daily API allowance.
    pub daily_api_requests: Limit,
}

/// Parses `Sforce-Limit-Info` (`api-usage=USED/LIMIT`, possibly with other comma-separated
/// entries such as `per-app-api-usage=...`).
pub fn parse_limit_info(header: &str) -> Option<ApiUsage> {
    header.split(',').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        if key.trim() != "api-usage" {
            return None;
        }
        let (used, limit) = value.trim().split_once('/')?;
        let limit = limit
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("");
        Some(ApiUsage {
            used: used.trim().parse().ok()?,
            limit: limit.parse().ok()?,
        })
    })
}

/// Formats a datetime the way Salesforce writes them: `2026-05-20T20:49:32.000+0000`.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses a Salesforce datetime (`2026-05-20T20:49:32.000+0000`, also `Z` and `+00:00`).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// Converts a 15-character Salesforce id to its 18-character form (3-character checksum of
/// the case of the first 15); an 18-character id is returned as it is. Anything else is
/// `None`.
pub fn id18(id: &str) -> Option<String> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        18 => Some(id.to_string()),
        15 => {
            const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
            let bytes = id.as_bytes();
            let mut suffix = String::with_capacity(3);
            for chunk in bytes.chunks(5) {
                let mut bits = 0usize;
                for (i, b) in chunk.iter().enumerate() {
                    if b.is_ascii_uppercase() {
                        bits |= 1 << i;
                    }
                }
                suffix.push(ALPHABET[bits] as char);
            }
            Some(format!("{id}{suffix}"))
        }
        _ => None,
    }
}

/// Quotes a string as a SOQL literal (escapes `\` and `'`).
pub fn soql_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_parses_usage_and_ignores_other_entries() {
        assert_eq!(
            parse_limit_info("api-usage=18/5000"),
            Some(ApiUsage {
                used: 18,
                limit: 5000
            })
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=sample), api-usage=25/15000"),
            Some(ApiUsage {
                used: 25,
                limit: 15000
            })
        );
        assert_eq!(parse_limit_info("api-usage=x/5000"), None);
        assert_eq!(parse_limit_info("nothing"), None);
    }

    #[test]
    fn datetimes_round_trip_in_salesforce_format() {
        let t = parse_datetime("2026-05-20T20:49:32.000+0000").unwrap();
        assert_eq!(format_datetime(t), "2026-05-20T20:49:32.000+0000");
        assert_eq!(parse_datetime("2026-05-20T20:49:32Z"), Some(t));
        assert_eq!(parse_datetime("2026-05-20T22:49:32.000+0200"), Some(t));
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn id18_adds_the_case_checksum() {
        // Checksum: for each 5-char chunk, bit i set when char i is uppercase.
        assert_eq!(
            id18("006000000000001").as_deref(),
            Some("006000000000001AAA")
        );
        assert_eq!(
            id18("001Dn00000AbCdE").as_deref(),
            Some("001Dn00000AbCdEIAV")
        );
        assert_eq!(
            id18("006000000000001AAA").as_deref(),
            Some("006000000000001AAA")
        );
        assert_eq!(id18("006'0"), None);
        assert_eq!(id18("0060000000000"), None);
    }

    #[test]
    fn soql_quote_escapes() {
        assert_eq!(soql_quote("O'Brien\\x"), r"'O\'Brien\\x'");
    }

    #[test]
    fn save_results_parse_status_code_errors() {
        let body = r#"[{"id":"006000000000001AAA","success":true,"errors":[]},
            {"success":false,"errors":[{"statusCode":"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST","message":"bad value","fields":["StageName"]}]}]"#;
        let rs: Vec<SaveResult> = serde_json::from_str(body).unwrap();
        assert_eq!(rs[0].error_class(), None);
        assert_eq!(rs[1].error_class(), Some(ErrorClass::PicklistMismatch));
        assert_eq!(rs[1].errors[0].fields, vec!["StageName"]);
    }

    #[test]
    fn sobject_keeps_attributes_apart_from_fields() {
        let row: SObject = serde_json::from_str(
            r#"{"attributes":{"type":"Opportunity","url":"/x"},"Id":"006000000000001AAA","Amount":10.5}"#,
        )
        .unwrap();
        assert_eq!(row.attributes.as_ref().unwrap().sobject_type, "Opportunity");
        assert_eq!(row.id(), Some("006000000000001AAA"));
        assert!(!row.fields.contains_key("attributes"));
    }

    #[test]
    fn deleted_records_flag_a_full_reconcile() {
        let d = DeletedRecords {
            deleted_records: vec![],
            earliest_date_available: "2026-05-10T00:00:00.000+0000".into(),
            latest_date_covered: "2026-05-20T00:00:00.000+0000".into(),
        };
        assert!(d.needs_full_reconcile(parse_datetime("2026-05-01T00:00:00.000+0000").unwrap()));
        assert!(!d.needs_full_reconcile(parse_datetime("2026-05-15T00:00:00.000+0000").unwrap()));
    }
}
