//! Object types, property definitions and property-value validation of the
//! HubSpot emulator.
//!
//! Values travel as strings on the wire; this module checks a written value
//! against its property's type (number, date, datetime, enumeration, bool,
//! string) and turns it into the one canonical string the emulator stores and
//! returns. It must never accept a value HubSpot would refuse, never panic on
//! any JSON a client sends, and never touch the store (pipelines and owners are
//! checked by the store, which knows them).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The CRM object types the emulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    Contacts,
    Companies,
    Deals,
}

impl ObjectType {
    /// All types, in a fixed order.
    pub const ALL: [ObjectType; 3] = [
        ObjectType::Contacts,
        ObjectType::Companies,
        ObjectType::Deals,
    ];

    /// Parses a path segment: plural, singular or the `0-N` object type id.
    pub fn parse(s: &str) -> Option<ObjectType> {
        match s.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(ObjectType::Contacts),
            "companies" | "company" | "0-2" => Some(ObjectType::Companies),
            "deals" | "deal" | "0-3" => Some(ObjectType::Deals),
            _ => None,
        }
    }

    /// `contacts`, `companies`, `deals`.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contacts",
            ObjectType::Companies => "companies",
            ObjectType::Deals => "deals",
        }
    }

    /// `contact`, `company`, `deal` (used in association type names).
    pub fn singular(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contact",
            ObjectType::Companies => "company",
            ObjectType::Deals => "deal",
        }
    }

    /// The object type id (`0-1` contacts, `0-2` companies, `0-3` deals).
    pub fn type_id(self) -> &'static str {
        match self {
            ObjectType::Contacts => "0-1",
            ObjectType::Companies => "0-2",
            ObjectType::Deals => "0-3",
        }
    }

    /// Upper-case name used in HubSpot's messages (`CONTACT`).
    pub fn upper(self) -> &'static str {
        match self {
            ObjectType::Contacts => "CONTACT",
            ObjectType::Companies => "COMPANY",
            ObjectType::Deals => "DEAL",
        }
    }

    /// The property HubSpot keeps as the last-modified time: contacts use
    /// `lastmodifieddate`, companies and deals `hs_lastmodifieddate`.
    pub fn modified_prop(self) -> &'static str {
        match self {
            ObjectType::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }

    /// Properties returned when a read names none.
    pub fn default_props(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            ObjectType::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            ObjectType::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }

    /// Properties the free-text `query` of a search looks in.
    pub fn query_props(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &["firstname", "lastname", "email", "phone", "company"],
            ObjectType::Companies => &["name", "domain", "phone"],
            ObjectType::Deals => &["dealname", "description"],
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.singular())
    }
}

/// A property's data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropType {
    String,
    Number,
    Date,
    Datetime,
    Enumeration,
    Bool,
    PhoneNumber,
}

impl PropType {
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<PropType> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    /// Field types HubSpot allows with this type.
    pub fn field_types(self) -> &'static [&'static str] {
        match self {
            PropType::String => &["text", "textarea", "html", "file", "phonenumber"],
            PropType::Number => &["number", "calculation_equation"],
            PropType::Date | PropType::Datetime => &["date"],
            PropType::Enumeration => &["select", "radio", "checkbox", "booleancheckbox"],
            PropType::Bool => &["booleancheckbox", "calculation_equation"],
            PropType::PhoneNumber => &["phonenumber"],
        }
    }
}

/// One option of an enumeration property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropOption {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub display_order: i64,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `modificationMetadata` of a property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    pub archivable: bool,
    pub read_only_definition: bool,
    pub read_only_value: bool,
}

/// A property definition, serialized exactly as `GET /crm/v3/properties/{type}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub ty: PropType,
    pub field_type: String,
    pub description: String,
    pub group_name: String,
    pub options: Vec<PropOption>,
    pub display_order: i64,
    pub calculated: bool,
    pub external_options: bool,
    pub has_unique_value: bool,
    pub hidden: bool,
    pub hubspot_defined: bool,
    pub modification_metadata: ModificationMetadata,
    pub form_field: bool,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
}

impl PropertyDef {
    /// Whether clients may write this property.
    pub fn read_only(&self) -> bool {
        self.modification_metadata.read_only_value
    }
}

/// One property that failed validation, in HubSpot's per-property shape.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{name}: {message} ({code})")]
pub struct PropError {
    /// The property name.
    pub name: String,
    /// HubSpot's code: `PROPERTY_DOESNT_EXIST`, `INVALID_DECIMAL`, `INVALID_OPTION`, ...
    pub code: &'static str,
    pub message: String,
}

impl PropError {
    pub fn new(name: &str, code: &'static str, message: impl Into<String>) -> PropError {
        PropError {
            name: name.to_string(),
            code,
            message: message.into(),
        }
    }

    pub fn doesnt_exist(name: &str) -> PropError {
        PropError::new(
            name,
            "PROPERTY_DOESNT_EXIST",
            format!("Property \"{name}\" does not exist"),
        )
    }

    /// The JSON object HubSpot embeds in `Property values were not valid: [...]`.
    pub fn to_json(&self) -> Value {
        json!({
            "isValid": false,
            "message": self.message,
            "error": self.code,
            "name": self.name,
            "localizedErrorMessage": self.message,
        })
    }
}

/// Formats epoch milliseconds as HubSpot's ISO-8601 (`2026-05-20T20:49:32.123Z`).
pub fn iso(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses a datetime as HubSpot accepts it: epoch milliseconds, RFC 3339 /
/// ISO-8601 (with or without zone, zone-less taken as UTC) or a bare date.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// Canonical text of a finite number: integers without a fraction.
pub fn number_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The text of a JSON scalar as HubSpot would read it, or `None` for
/// objects and arrays.
fn scalar_text(raw: &Value) -> Option<String> {
    match raw {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Checks one written value against its definition and returns the canonical
/// stored text, or `None` when the write clears the property (null or "").
/// Enumerations with external options (pipelines, stages, owners) are only
/// checked for shape here.
pub fn normalize(def: &PropertyDef, raw: &Value) -> Result<Option<String>, PropError> {
    let name = def.name.as_str();
    let Some(text) = scalar_text(raw) else {
        return Err(PropError::new(
            name,
            "INVALID_PROPERTY_VALUE",
            format!("{raw} is not a valid value: property values must be strings"),
        ));
    };
    if text.is_empty() {
        return Ok(None);
    }
    match def.ty {
        PropType::String | PropType::PhoneNumber => Ok(Some(text)),
        PropType::Number => match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(number_text(v))),
            _ => Err(PropError::new(
                name,
                "INVALID_DECIMAL",
                format!("{text} was not a valid number."),
            )),
        },
        PropType::Datetime => match parse_datetime_ms(&text) {
            Some(ms) => Ok(Some(iso(ms))),
            None => Err(PropError::new(
                name,
                "INVALID_DATE",
                format!("{text} was not a valid long or ISO-8601 date-time."),
            )),
        },
        PropType::Date => {
            let Some(ms) = parse_datetime_ms(&text) else {
                return Err(PropError::new(
                    name,
                    "INVALID_DATE",
                    format!("{text} was not a valid date."),
                ));
            };
            if ms.rem_euclid(86_400_000) != 0 {
                return Err(PropError::new(
                    name,
                    "INVALID_DATE",
                    format!("{text} is not at midnight UTC: date properties take a date only."),
                ));
            }
            let day = Utc
                .timestamp_millis_opt(ms)
                .single()
                .map(|t| t.format("%Y-%m-%d").to_string());
            day.map(Some).ok_or_else(|| {
                PropError::new(
                    name,
                    "INVALID_DATE",
                    format!("{text} was not a valid date."),
                )
            })
        }
        PropType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Some("true".into())),
            "false" => Ok(Some("false".into())),
            _ => Err(PropError::new(
                name,
                "INVALID_BOOLEAN",
                format!("{text} was not a valid boolean (true or false)."),
            )),
        },
        PropType::Enumeration => {
            if def.external_options {
                return Ok(Some(text));
            }
            let parts: Vec<&str> = if def.field_type == "checkbox" {
                text.split(';').collect()
            } else {
                vec![text.as_str()]
            };
            for part in parts {
                if !def.options.iter().any(|o| o.value == part) {
                    let allowed: Vec<&str> = def.options.iter().map(|o| o.value.as_str()).collect();
                    return Err(PropError::new(
                        name,
                        "INVALID_OPTION",
                        format!(
                            "{part} was not one of the allowed options: [{}]",
                            allowed.join(", ")
                        ),
                    ));
                }
            }
            Ok(Some(text))
        }
    }
}

/// Builder of the standard property definitions.
struct Def {
    name: &'static str,
    label: &'static str,
    ty: PropType,
    field_type: &'static str,
    group: &'static str,
    options: &'static [(&'static str, &'static str)],
    read_only: bool,
    calculated: bool,
    external: bool,
}

const fn d(
    name: &'static str,
    label: &'static str,
    ty: PropType,
    field_type: &'static str,
    group: &'static str,
) -> Def {
    Def {
        name,
        label,
        ty,
        field_type,
        group,
        options: &[],
        read_only: false,
        calculated: false,
        external: false,
    }
}

const fn ro(mut def: Def) -> Def {
    def.read_only = true;
    def
}

const fn calc(mut def: Def) -> Def {
    def.read_only = true;
    def.calculated = true;
    def
}

const fn ext(mut def: Def) -> Def {
    def.external = true;
    def
}

const fn opts(mut def: Def, options: &'static [(&'static str, &'static str)]) -> Def {
    def.options = options;
    def
}

use PropType as T;

const CURRENCIES: &[(&str, &str)] = &[
    ("USD", "US Dollar"),
    ("EUR", "Euro"),
    ("GBP", "British Pound"),
    ("CAD", "Canadian Dollar"),
    ("AUD", "Australian Dollar"),
    ("JPY", "Japanese Yen"),
];

const COMMON: &[Def] = &[
    ro(d("hs_object_id", "Record ID", T::Number, "number", "")),
    d("createdate", "Create Date", T::Datetime, "date", ""),
    ext(d("hubspot_owner_id", "Owner", T::Enumeration, "select", "")),
];

const DEALS: &[Def] = &[
    ro(d(
        "hs_lastmodifieddate",
        "Last Modified Date",
        T::Datetime,
        "date",
        "dealinformation",
    )),
    d(
        "dealname",
        "Deal Name",
        T::String,
        "text",
        "dealinformation",
    ),
    d("amount", "Amount", T::Number, "number", "dealinformation"),
    d(
        "closedate",
        "Close Date",
        T::Datetime,
        "date",
        "dealinformation",
    ),
    ext(d(
        "dealstage",
        "Deal Stage",
        T::Enumeration,
        "radio",
        "dealinformation",
    )),
    ext(d(
        "pipeline",
        "Pipeline",
        T::Enumeration,
        "select",
        "dealinformation",
    )),
    opts(
        d(
            "dealtype",
            "Deal Type",
            T::Enumeration,
            "radio",
            "dealinformation",
        ),
        &[
            ("newbusiness", "New Business"),
            ("existingbusiness", "Existing Business"),
        ],
    ),
    d(
        "description",
        "Deal Description",
        T::String,
        "textarea",
        "dealinformation",
    ),
    opts(
        d(
            "deal_currency_code",
            "Currency",
            T::Enumeration,
            "select",
            "dealinformation",
        ),
        CURRENCIES,
    ),
    d(
        "hs_salesforceopportunityid",
        "Salesforce Opportunity ID",
        T::String,
        "text",
        "salesforceinformation",
    ),
    calc(d(
        "hs_is_closed",
        "Is Deal Closed?",
        T::Bool,
        "booleancheckbox",
        "dealinformation",
    )),
    calc(d(
        "hs_is_closed_won",
        "Is Closed Won",
        T::Bool,
        "booleancheckbox",
        "dealinformation",
    )),
    calc(d(
        "hs_deal_stage_probability",
        "Deal Probability",
        T::Number,
        "number",
        "dealinformation",
    )),
];

const COMPANIES: &[Def] = &[
    ro(d(
        "hs_lastmodifieddate",
        "Last Modified Date",
        T::Datetime,
        "date",
        "companyinformation",
    )),
    d(
        "name",
        "Company Name",
        T::String,
        "text",
        "companyinformation",
    ),
    d(
        "domain",
        "Company Domain Name",
        T::String,
        "text",
        "companyinformation",
    ),
    d(
        "industry",
        "Industry",
        T::String,
        "text",
        "companyinformation",
    ),
    d(
        "phone",
        "Phone Number",
        T::String,
        "phonenumber",
        "companyinformation",
    ),
    d("city", "City", T::String, "text", "companyinformation"),
    d(
        "country",
        "Country/Region",
        T::String,
        "text",
        "companyinformation",
    ),
    d(
        "salesforceaccountid",
        "Salesforce Account ID",
        T::String,
        "text",
        "salesforceinformation",
    ),
];

const LIFECYCLE: &[(&str, &str)] = &[
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
];

const CONTACTS: &[Def] = &[
    ro(d(
        "lastmodifieddate",
        "Last Modified Date",
        T::Datetime,
        "date",
        "contactinformation",
    )),
    d("email", "Email", T::String, "text", "contactinformation"),
    d(
        "firstname",
        "First Name",
        T::String,
        "text",
        "contactinformation",
    ),
    d(
        "lastname",
        "Last Name",
        T::String,
        "text",
        "contactinformation",
    ),
    d(
        "phone",
        "Phone Number",
        T::String,
        "phonenumber",
        "contactinformation",
    ),
    d(
        "company",
        "Company Name",
        T::String,
        "text",
        "contactinformation",
    ),
    d(
        "jobtitle",
        "Job Title",
        T::String,
        "text",
        "contactinformation",
    ),
    opts(
        d(
            "lifecyclestage",
            "Lifecycle Stage",
            T::Enumeration,
            "radio",
            "contactinformation",
        ),
        LIFECYCLE,
    ),
    d(
        "salesforcecontactid",
        "Salesforce Contact ID",
        T::String,
        "text",
        "salesforceinformation",
    ),
    calc(d(
        "num_associated_deals",
        "Number of Associated Deals",
        T::Number,
        "number",
        "deal_information",
    )),
    calc(d(
        "first_deal_created_date",
        "First Deal Created Date",
        T::Datetime,
        "date",
        "deal_information",
    )),
    calc(d(
        "recent_deal_close_date",
        "Recent Deal Close Date",
        T::Datetime,
        "date",
        "deal_information",
    )),
    calc(d(
        "recent_deal_amount",
        "Recent Deal Amount",
        T::Number,
        "number",
        "deal_information",
    )),
    calc(d(
        "total_revenue",
        "Total Revenue",
        T::Number,
        "number",
        "deal_information",
    )),
];

/// The standard (HubSpot-defined) properties of an object type.
pub fn standard_properties(ot: ObjectType, created: &str) -> Vec<PropertyDef> {
    let own = match ot {
        ObjectType::Contacts => CONTACTS,
        ObjectType::Companies => COMPANIES,
        ObjectType::Deals => DEALS,
    };
    let default_group = match ot {
        ObjectType::Contacts => "contactinformation",
        ObjectType::Companies => "companyinformation",
        ObjectType::Deals => "dealinformation",
    };
    COMMON
        .iter()
        .chain(own.iter())
        .enumerate()
        .map(|(i, def)| PropertyDef {
            name: def.name.to_string(),
            label: def.label.to_string(),
            ty: def.ty,
            field_type: def.field_type.to_string(),
            description: String::new(),
            group_name: if def.group.is_empty() {
                default_group.to_string()
            } else {
                def.group.to_string()
            },
            options: def
                .options
                .iter()
                .enumerate()
                .map(|(j, (value, label))| PropOption {
                    label: label.to_string(),
                    value: value.to_string(),
                    display_order: j as i64,
                    hidden: false,
                    description: None,
                })
                .collect(),
            display_order: i as i64,
            calculated: def.calculated,
            external_options: def.external,
            has_unique_value: false,
            hidden: false,
            hubspot_defined: true,
            modification_metadata: ModificationMetadata {
                archivable: false,
                read_only_definition: true,
                read_only_value: def.read_only,
            },
            form_field: !def.read_only,
            created_at: created.to_string(),
            updated_at: created.to_string(),
            archived: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(ot: ObjectType, name: &str) -> PropertyDef {
        standard_properties(ot, "2020-01-01T00:00:00.000Z")
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
    }

    #[test]
    fn numbers_are_validated_and_canonical() {
        let amount = def(ObjectType::Deals, "amount");
        assert_eq!(
            normalize(&amount, &json!("1000.00")).unwrap().as_deref(),
            Some("1000")
        );
        assert_eq!(
            normalize(&amount, &json!(12.5)).unwrap().as_deref(),
            Some("12.5")
        );
        assert_eq!(normalize(&amount, &json!("")).unwrap(), None);
        assert_eq!(normalize(&amount, &Value::Null).unwrap(), None);
        let err = normalize(&amount, &json!("lots")).unwrap_err();
        assert_eq!(err.code, "INVALID_DECIMAL");
        assert_eq!(
            normalize(&amount, &json!("NaN")).unwrap_err().code,
            "INVALID_DECIMAL"
        );
        assert_eq!(
            normalize(&amount, &json!({"a": 1})).unwrap_err().code,
            "INVALID_PROPERTY_VALUE"
        );
    }

    #[test]
    fn datetimes_accept_epoch_ms_iso_and_dates() {
        let close = def(ObjectType::Deals, "closedate");
        assert_eq!(
            normalize(&close, &json!("2026-05-20")).unwrap().unwrap(),
            "2026-05-20T00:00:00.000Z"
        );
        assert_eq!(
            normalize(&close, &json!("1779310172000")).unwrap().unwrap(),
            iso(1_779_310_172_000)
        );
        assert_eq!(
            normalize(&close, &json!("2026-05-20T20:49:32+02:00"))
                .unwrap()
                .unwrap(),
            "2026-05-20T18:49:32.000Z"
        );
        assert_eq!(
            normalize(&close, &json!("yesterday")).unwrap_err().code,
            "INVALID_DATE"
        );
    }

    #[test]
    fn date_properties_need_midnight() {
        let mut p = def(ObjectType::Deals, "closedate");
        p.ty = PropType::Date;
        assert_eq!(
            normalize(&p, &json!("2026-05-20")).unwrap().unwrap(),
            "2026-05-20"
        );
        assert_eq!(
            normalize(&p, &json!("2026-05-20T10:00:00Z"))
                .unwrap_err()
                .code,
            "INVALID_DATE"
        );
    }

    #[test]
    fn enumerations_and_bools() {
        let ty = def(ObjectType::Deals, "dealtype");
        assert!(normalize(&ty, &json!("newbusiness")).is_ok());
        let err = normalize(&ty, &json!("oldbusiness")).unwrap_err();
        assert_eq!(err.code, "INVALID_OPTION");
        assert!(err.message.contains("newbusiness"), "{}", err.message);
        let mut b = def(ObjectType::Deals, "hs_is_closed");
        b.modification_metadata.read_only_value = false;
        assert_eq!(normalize(&b, &json!(true)).unwrap().unwrap(), "true");
        assert_eq!(normalize(&b, &json!("TRUE")).unwrap().unwrap(), "true");
        assert_eq!(
            normalize(&b, &json!("yes")).unwrap_err().code,
            "INVALID_BOOLEAN"
        );
    }

    #[test]
    fn object_types_parse_all_spellings() {
        assert_eq!(ObjectType::parse("0-3"), Some(ObjectType::Deals));
        assert_eq!(ObjectType::parse("Contact"), Some(ObjectType::Contacts));
        assert_eq!(ObjectType::parse("tickets"), None);
        assert_eq!(ObjectType::Contacts.modified_prop(), "lastmodifieddate");
    }
}
