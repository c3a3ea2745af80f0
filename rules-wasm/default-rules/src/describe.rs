//! `describe`: the mapping table with its rules, the extra fields the condition reads, and the
//! type check of custom mappings against the host's field schema.
//!
//! Only custom mappings are type-checked (the standard ones are HubSpot's own). A field that the
//! schema does not list is not checked (the schema is empty in `plugin check`). This module must
//! never guess a type it was not given.

use crate::bindings::dealbridge::rules::types::{Crm, FieldInfo, ObjectPair};
use crate::bindings::exports::dealbridge::rules::rules::{
    Description, ErrorKind, ExtraField, FieldMapping, RuleError,
};
use crate::config::Config;
use crate::mappings::MappingSpec;

/// The plugin's name in its description.
pub const NAME: &str = "dealbridge-default-rules";

const PAIRS: [ObjectPair; 3] = [
    ObjectPair::OpportunityDeal,
    ObjectPair::AccountCompany,
    ObjectPair::ContactContact,
];

/// Builds the description, refusing custom mappings of incompatible types.
pub fn describe(cfg: &Config, schema: &[FieldInfo]) -> Result<Description, RuleError> {
    let mut mappings = Vec::new();
    for pair in PAIRS {
        for m in cfg.mappings(pair) {
            if m.custom {
                check(pair, m, schema)?;
            }
            mappings.push(FieldMapping {
                object_pair: pair,
                salesforce_field: m.sf.to_string(),
                hubspot_field: m.hs.to_string(),
                rule: m.rule,
            });
        }
    }
    let extra_fields = cfg
        .condition
        .flag_field
        .iter()
        .map(|f| ExtraField {
            crm: Crm::Salesforce,
            object_pair: ObjectPair::OpportunityDeal,
            name: f.clone(),
        })
        .collect();
    Ok(Description {
        name: NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        object_pairs: PAIRS.to_vec(),
        mappings,
        extra_fields,
    })
}

/// The HubSpot field kind that decides compatibility: the `fieldType`, or one derived from the
/// `type` when the host gave no `fieldType`.
fn hubspot_kind(f: &FieldInfo) -> &str {
    match f.field_type.as_deref() {
        Some(ft) => ft,
        None => match f.type_name.as_str() {
            "string" => "text",
            "number" => "number",
            "bool" => "booleancheckbox",
            "date" | "datetime" => "date",
            "enumeration" => "select",
            other => other,
        },
    }
}

/// The Salesforce types a HubSpot field kind may map to, with the kind's display name.
fn compatible(kind: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match kind {
        "select" | "radio" => ("dropdown/radio select", &["picklist", "reference"]),
        "checkbox" => ("multiple checkboxes", &["multipicklist"]),
        "booleancheckbox" => ("single checkbox", &["boolean"]),
        "number" => ("number", &["double", "int", "long", "currency", "percent"]),
        "text" => (
            "single-line text",
            &["string", "textarea", "email", "phone", "url"],
        ),
        "phonenumber" => ("phone number", &["phone", "string"]),
        "textarea" => ("multi-line text", &["textarea"]),
        "date" => ("date picker", &["date", "datetime"]),
        _ => return None,
    })
}

fn check(pair: ObjectPair, m: &MappingSpec, schema: &[FieldInfo]) -> Result<(), RuleError> {
    let find = |crm: Crm, name: &str| {
        schema
            .iter()
            .find(|f| f.crm == crm && f.object_pair == pair && f.name == name)
    };
    let (Some(sf), Some(hs)) = (find(Crm::Salesforce, &m.sf), find(Crm::Hubspot, &m.hs)) else {
        return Ok(());
    };
    let kind = hubspot_kind(hs);
    let hs_shown = match &hs.field_type {
        Some(ft) => format!("{}/{ft}", hs.type_name),
        None => hs.type_name.clone(),
    };
    let incompatible = |why: String| RuleError {
        kind: ErrorKind::IncompatibleMapping,
        field: Some(m.sf.to_string()),
        message: format!(
            "cannot map HubSpot property `{}` ({hs_shown}) to Salesforce field `{}` ({}): {why}",
            m.hs, m.sf, sf.type_name
        ),
    };
    match compatible(kind) {
        Some((_, sf_types)) if sf_types.contains(&sf.type_name.as_str()) => Ok(()),
        Some((shown, sf_types)) => Err(incompatible(format!(
            "a {shown} property maps only to Salesforce {}",
            sf_types.join(", ")
        ))),
        None => Err(incompatible(format!(
            "HubSpot field type `{kind}` cannot be synced"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::exports::dealbridge::rules::rules::SyncRule;
    use crate::config;

    fn field(crm: Crm, name: &str, type_name: &str, field_type: Option<&str>) -> FieldInfo {
        FieldInfo {
            crm,
            object_pair: ObjectPair::OpportunityDeal,
            name: name.to_string(),
            type_name: type_name.to_string(),
            field_type: field_type.map(str::to_string),
        }
    }

    fn custom(hs_type: &str, hs_ft: Option<&str>, sf_type: &str) -> Result<Description, RuleError> {
        let cfg = config::parse(
            r#"{"custom_mappings": [{"salesforce_field": "X__c", "hubspot_field": "x", "rule": "two-way"}]}"#,
        )
        .unwrap();
        let schema = vec![
            field(Crm::Salesforce, "X__c", sf_type, None),
            field(Crm::Hubspot, "x", hs_type, hs_ft),
        ];
        describe(&cfg, &schema)
    }

    #[test]
    fn lists_standard_and_custom_mappings_with_rules() {
        let cfg = config::parse(
            r#"{"rules": {"opportunity-deal": {"Amount": "two-way"}},
                "custom_mappings": [{"salesforce_field": "Priority__c", "hubspot_field": "priority", "rule": "always-salesforce"}],
                "condition": {"flag_field": "Sync__c"}}"#,
        )
        .unwrap();
        let d = describe(&cfg, &[]).unwrap();
        assert_eq!(d.name, NAME);
        assert_eq!(d.object_pairs.len(), 3);
        let find = |sf: &str| {
            d.mappings
                .iter()
                .find(|m| m.object_pair == ObjectPair::OpportunityDeal && m.salesforce_field == sf)
                .unwrap()
        };
        assert_eq!(find("Amount").rule, SyncRule::TwoWay);
        assert_eq!(find("Amount").hubspot_field, "amount");
        assert_eq!(find("Priority__c").rule, SyncRule::AlwaysSalesforce);
        assert_eq!(find("Name").rule, SyncRule::PreferSalesforceUnlessBlank);
        assert!(
            d.mappings
                .iter()
                .any(|m| m.object_pair == ObjectPair::ContactContact
                    && m.salesforce_field == "Email")
        );
        assert_eq!(d.extra_fields.len(), 1);
        assert_eq!(d.extra_fields[0].name, "Sync__c");
        assert_eq!(d.extra_fields[0].crm, Crm::Salesforce);
    }

    #[test]
    fn compatible_custom_mappings_pass() {
        for (hs_type, ft, sf_type) in [
            ("enumeration", Some("select"), "picklist"),
            ("enumeration", Some("radio"), "reference"),
            ("enumeration", Some("checkbox"), "multipicklist"),
            ("bool", Some("booleancheckbox"), "boolean"),
            ("number", Some("number"), "double"),
            ("number", Some("number"), "int"),
            ("number", Some("number"), "currency"),
            ("number", Some("number"), "percent"),
            ("string", Some("text"), "string"),
            ("string", Some("text"), "textarea"),
            ("string", Some("textarea"), "textarea"),
            ("date", Some("date"), "date"),
            ("datetime", Some("date"), "datetime"),
            ("number", None, "currency"),
        ] {
            assert!(
                custom(hs_type, ft, sf_type).is_ok(),
                "{hs_type}/{ft:?} ↔ {sf_type}"
            );
        }
    }

    #[test]
    fn incompatible_custom_mappings_are_refused_naming_both_sides() {
        for (hs_type, ft, sf_type) in [
            ("enumeration", Some("select"), "multipicklist"),
            ("enumeration", Some("checkbox"), "picklist"),
            ("bool", Some("booleancheckbox"), "string"),
            ("number", Some("number"), "string"),
            ("string", Some("textarea"), "string"),
            ("string", Some("text"), "double"),
            ("date", Some("date"), "boolean"),
            ("string", Some("file"), "string"),
        ] {
            let e = custom(hs_type, ft, sf_type).expect_err("must refuse");
            assert_eq!(e.kind, ErrorKind::IncompatibleMapping);
            assert_eq!(e.field.as_deref(), Some("X__c"));
            assert!(
                e.message.contains("`x`") && e.message.contains("`X__c`"),
                "{}",
                e.message
            );
            assert!(
                e.message.contains(sf_type) && e.message.contains(hs_type),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn fields_missing_from_the_schema_are_not_checked() {
        let cfg = config::parse(
            r#"{"custom_mappings": [{"salesforce_field": "X__c", "hubspot_field": "x"}]}"#,
        )
        .unwrap();
        let schema = vec![field(Crm::Salesforce, "X__c", "boolean", None)];
        assert!(describe(&cfg, &schema).is_ok());
    }
}
