//! The tenant's configuration of the default rules: the JSON schema, its parsing and validation.
//!
//! The config arrives as JSON text (from the `config` import inside the component, or as a
//! parameter natively). Unknown keys are refused (`deny_unknown_fields`) and every error names
//! the offending key as a dotted path in `rule-error.field`, with kind `config`. This module
//! only reads and checks the config: it must never look at records or CRM data.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bindings::dealbridge::rules::types::ObjectPair;
use crate::bindings::exports::dealbridge::rules::rules::{ErrorKind, RuleError, SyncRule};
use crate::decimal::{self, Dec};
use crate::mappings::{self, MappingKind, MappingSpec};

/// A sync rule as it is spelled in the config (the WIT enum's kebab-case names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleName {
    /// `prefer-salesforce-unless-blank`
    PreferSalesforceUnlessBlank,
    /// `always-salesforce`
    AlwaysSalesforce,
    /// `two-way`
    TwoWay,
    /// `dont-sync`
    DontSync,
}

impl From<RuleName> for SyncRule {
    fn from(r: RuleName) -> Self {
        match r {
            RuleName::PreferSalesforceUnlessBlank => SyncRule::PreferSalesforceUnlessBlank,
            RuleName::AlwaysSalesforce => SyncRule::AlwaysSalesforce,
            RuleName::TwoWay => SyncRule::TwoWay,
            RuleName::DontSync => SyncRule::DontSync,
        }
    }
}

/// An object pair as it is spelled in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PairName {
    /// `opportunity-deal` (the default for custom mappings)
    #[default]
    OpportunityDeal,
    /// `account-company`
    AccountCompany,
    /// `contact-contact`
    ContactContact,
}

impl PairName {
    fn pair(self) -> ObjectPair {
        match self {
            PairName::OpportunityDeal => ObjectPair::OpportunityDeal,
            PairName::AccountCompany => ObjectPair::AccountCompany,
            PairName::ContactContact => ObjectPair::ContactContact,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    multi_currency: bool,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    stage_map: OrderedMap<OrderedMap<String>>,
    #[serde(default)]
    custom_mappings: Vec<RawCustom>,
    #[serde(default)]
    condition: Option<RawCondition>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default, rename = "opportunity-deal")]
    opportunity_deal: BTreeMap<String, RuleName>,
    #[serde(default, rename = "account-company")]
    account_company: BTreeMap<String, RuleName>,
    #[serde(default, rename = "contact-contact")]
    contact_contact: BTreeMap<String, RuleName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    #[serde(default)]
    object_pair: PairName,
    salesforce_field: String,
    hubspot_field: String,
    #[serde(default)]
    rule: Option<RuleName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default)]
    record_types: Option<Vec<String>>,
    #[serde(default)]
    stages: Option<Vec<String>>,
    #[serde(default)]
    min_amount: Option<String>,
    #[serde(default)]
    flag_field: Option<String>,
}

/// A JSON object read as a list of entries in document order (no hashing, so the component
/// needs no random seed; later duplicate keys are kept and shadowed by earlier ones on lookup).
#[derive(Debug, Default)]
struct OrderedMap<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, val)) = m.next_entry::<String, V>()? {
                    v.push((k, val));
                }
                Ok(OrderedMap(v))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The sync condition for opportunities, checked config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    /// Record types (ids or developer names; `Default` for no record type) that sync; none = all.
    pub record_types: Option<Vec<String>>,
    /// Stage names (`StageName`) that sync; none = all.
    pub stages: Option<Vec<String>>,
    /// The minimum `Amount`, inclusive, with its config text for messages.
    pub min_amount: Option<(Dec, String)>,
    /// A Salesforce checkbox field that must be checked.
    pub flag_field: Option<String>,
}

impl Condition {
    /// True when the condition lets every record through.
    pub fn is_open(&self) -> bool {
        self.record_types.is_none()
            && self.stages.is_none()
            && self.min_amount.is_none()
            && self.flag_field.is_none()
    }
}

/// One pipeline's stage table: Salesforce `StageName` → HubSpot stage id or label, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTable {
    /// The key that names the pipeline: a pipeline id, a record type id or a record type name.
    pub key: String,
    /// `(StageName, HubSpot stage id or label)` in the order the config gave them.
    pub entries: Vec<(String, String)>,
}

/// A checked config, ready to plan with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether `CurrencyIsoCode` ↔ `deal_currency_code` is mapped.
    pub multi_currency: bool,
    /// Mappings of each object pair, standard ones first, then custom ones (the static standard
    /// table itself while the config changes nothing in it).
    pub opportunity_deal: Cow<'static, [MappingSpec]>,
    /// Account ↔ company mappings.
    pub account_company: Cow<'static, [MappingSpec]>,
    /// Contact ↔ contact mappings.
    pub contact_contact: Cow<'static, [MappingSpec]>,
    /// The stage tables, one per pipeline key.
    pub stage_map: Vec<StageTable>,
    /// The opportunity sync condition.
    pub condition: Condition,
}

impl Config {
    /// The config of `{}`: the standard mappings with their default rules, no stage tables, no
    /// condition. What `build` makes of an empty config, without the work.
    fn defaults() -> Self {
        Config {
            multi_currency: false,
            opportunity_deal: Cow::Borrowed(mappings::standard(ObjectPair::OpportunityDeal, false)),
            account_company: Cow::Borrowed(mappings::standard(ObjectPair::AccountCompany, false)),
            contact_contact: Cow::Borrowed(mappings::standard(ObjectPair::ContactContact, false)),
            stage_map: Vec::new(),
            condition: Condition::default(),
        }
    }

    /// The mappings of one object pair.
    pub fn mappings(&self, pair: ObjectPair) -> &[MappingSpec] {
        match pair {
            ObjectPair::OpportunityDeal => &self.opportunity_deal,
            ObjectPair::AccountCompany => &self.account_company,
            ObjectPair::ContactContact => &self.contact_contact,
        }
    }
}

/// A config error naming the key it is about.
pub fn config_error(field: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError {
        kind: ErrorKind::Config,
        field: Some(field.into()),
        message: message.into(),
    }
}

/// Parses and checks the tenant's config JSON (`{}` or empty text gives the defaults).
pub fn parse(json: &str) -> Result<Config, RuleError> {
    if is_empty_object(json) || json.trim().is_empty() {
        return Ok(Config::defaults());
    }
    if !json.trim_start().starts_with('{') {
        return Err(config_error(
            ".",
            "invalid plugin config: it must be a JSON object, like `{}`",
        ));
    }
    // The plain parse is the common case and cheap; only a refused config is parsed again to
    // name the offending key.
    let raw: RawConfig = serde_json::from_str(json).map_err(|_| explain(json))?;
    build(raw)
}

/// True for blank text and for `{}` with any JSON whitespace around or inside: the defaults,
/// which most tenants run, so they skip the parser.
fn is_empty_object(json: &str) -> bool {
    let mut rest = json
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match rest.next() {
        None => true,
        Some(b'{') => rest.next() == Some(b'}') && rest.next().is_none(),
        Some(_) => false,
    }
}

/// The error of a config that does not parse, naming the offending key as a dotted path.
fn explain(json: &str) -> RuleError {
    let mut de = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, RawConfig>(&mut de) {
        // The path names the offending key itself (serde_path_to_error includes unknown keys).
        Err(e) => {
            let key = e.path().to_string();
            let inner = e.inner().to_string();
            config_error(
                key.clone(),
                format!("invalid plugin config at `{key}`: {inner}"),
            )
        }
        Ok(_) => match de.end() {
            Err(e) => config_error(
                ".",
                format!("invalid plugin config: text after the JSON object: {e}"),
            ),
            Ok(()) => config_error(".", "invalid plugin config"),
        },
    }
}

fn build(raw: RawConfig) -> Result<Config, RuleError> {
    let mut opp = Cow::Borrowed(mappings::standard(
        ObjectPair::OpportunityDeal,
        raw.multi_currency,
    ));
    let mut acc = Cow::Borrowed(mappings::standard(ObjectPair::AccountCompany, false));
    let mut con = Cow::Borrowed(mappings::standard(ObjectPair::ContactContact, false));

    apply_rules(
        &mut opp,
        &raw.rules.opportunity_deal,
        "opportunity-deal",
        raw.multi_currency,
    )?;
    apply_rules(
        &mut acc,
        &raw.rules.account_company,
        "account-company",
        false,
    )?;
    apply_rules(
        &mut con,
        &raw.rules.contact_contact,
        "contact-contact",
        false,
    )?;

    for (i, c) in raw.custom_mappings.into_iter().enumerate() {
        let at = format!("custom_mappings[{i}]");
        let sf = c.salesforce_field.trim();
        let hs = c.hubspot_field.trim();
        if sf.is_empty() {
            return Err(config_error(
                format!("{at}.salesforce_field"),
                format!("`{at}.salesforce_field` is empty"),
            ));
        }
        if hs.is_empty() {
            return Err(config_error(
                format!("{at}.hubspot_field"),
                format!("`{at}.hubspot_field` is empty"),
            ));
        }
        let list = match c.object_pair.pair() {
            ObjectPair::OpportunityDeal => &mut opp,
            ObjectPair::AccountCompany => &mut acc,
            ObjectPair::ContactContact => &mut con,
        };
        if let Some(m) = list.iter().find(|m| m.sf == sf) {
            return Err(config_error(
                format!("{at}.salesforce_field"),
                format!(
                    "`{at}`: Salesforce field `{sf}` is already mapped to HubSpot property `{}`",
                    m.hs
                ),
            ));
        }
        if let Some(m) = list.iter().find(|m| m.hs == hs) {
            return Err(config_error(
                format!("{at}.hubspot_field"),
                format!(
                    "`{at}`: HubSpot property `{hs}` is already mapped to Salesforce field `{}`",
                    m.sf
                ),
            ));
        }
        list.to_mut().push(MappingSpec {
            sf: Cow::Owned(sf.to_string()),
            hs: Cow::Owned(hs.to_string()),
            rule: c
                .rule
                .map(SyncRule::from)
                .unwrap_or(SyncRule::PreferSalesforceUnlessBlank),
            kind: MappingKind::Plain,
            custom: true,
        });
    }

    let mut stage_map = Vec::with_capacity(raw.stage_map.0.len());
    for (key, table) in raw.stage_map.0 {
        let mut entries = Vec::with_capacity(table.0.len());
        for (stage, target) in table.0 {
            if target.trim().is_empty() {
                return Err(config_error(
                    format!("stage_map.{key}.{stage}"),
                    format!(
                        "`stage_map.{key}.{stage}` must be a HubSpot stage id or label, not empty"
                    ),
                ));
            }
            entries.push((stage, target));
        }
        stage_map.push(StageTable { key, entries });
    }

    let condition = match raw.condition {
        None => Condition::default(),
        Some(c) => {
            let min_amount = match c.min_amount {
                None => None,
                Some(text) => {
                    let d = decimal::parse(&text).map_err(|e| {
                        config_error(
                            "condition.min_amount",
                            format!(
                                "`condition.min_amount` must be a decimal number as a string, like \"1000.00\": {e}"
                            ),
                        )
                    })?;
                    Some((d, text))
                }
            };
            let flag_field = match c.flag_field {
                Some(f) if f.trim().is_empty() => {
                    return Err(config_error(
                        "condition.flag_field",
                        "`condition.flag_field` is empty",
                    ));
                }
                other => other,
            };
            Condition {
                record_types: c.record_types,
                stages: c.stages,
                min_amount,
                flag_field,
            }
        }
    };

    Ok(Config {
        multi_currency: raw.multi_currency,
        opportunity_deal: opp,
        account_company: acc,
        contact_contact: con,
        stage_map,
        condition,
    })
}

fn apply_rules(
    list: &mut Cow<'static, [MappingSpec]>,
    rules: &BTreeMap<String, RuleName>,
    pair: &str,
    multi_currency: bool,
) -> Result<(), RuleError> {
    if rules.is_empty() {
        return Ok(());
    }
    let at = |field: &str| format!("rules.{pair}.{field}");
    // The tenant changes rules: the config gets its own copy of the standard table.
    let list = list.to_mut();
    let mut stage_rule = None;
    for (field, rule) in rules {
        if field == "RecordTypeId" {
            return Err(config_error(
                at(field),
                "`RecordTypeId` follows the rule of `StageName` (stage and pipeline sync together): set the rule on `StageName`",
            ));
        }
        if field == "CurrencyIsoCode" && !multi_currency {
            return Err(config_error(
                at(field),
                "`CurrencyIsoCode` is mapped only in multi-currency orgs: set `multi_currency: true` first",
            ));
        }
        match list.iter_mut().find(|m| m.sf == *field) {
            Some(m) => {
                m.rule = (*rule).into();
                if m.kind == MappingKind::Stage {
                    let rule = m.rule;
                    stage_rule = Some(rule);
                }
            }
            None => {
                let known: Vec<&str> = list
                    .iter()
                    .filter(|m| m.kind != MappingKind::Pipeline)
                    .map(|m| &*m.sf)
                    .collect();
                let at = at(field);
                return Err(config_error(
                    at.clone(),
                    format!(
                        "`{at}`: `{field}` is not a standard {pair} mapping (known: {}); map other fields with `custom_mappings`",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(rule) = stage_rule {
        for m in list.iter_mut().filter(|m| m.kind == MappingKind::Pipeline) {
            m.rule = rule;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> RuleError {
        parse(json).expect_err("config must be refused")
    }

    #[test]
    fn empty_and_blank_config_give_the_defaults() {
        for json in ["{}", "", "  ", "{ }", "\n\t{\r\n}\n"] {
            let c = parse(json).unwrap();
            assert!(!c.multi_currency);
            assert!(c.condition.is_open());
            assert!(
                c.opportunity_deal
                    .iter()
                    .all(|m| m.rule == SyncRule::PreferSalesforceUnlessBlank)
            );
            assert!(!c.opportunity_deal.iter().any(|m| m.sf == "CurrencyIsoCode"));
        }
        // The fast path for `{}` takes nothing but an empty object.
        for json in ["{}}", "{{}", "{} x", "}{", "{"] {
            let e = err(json);
            assert_eq!(e.kind, ErrorKind::Config, "{json}");
        }
    }

    #[test]
    fn multi_currency_adds_the_currency_mapping() {
        let c = parse(r#"{"multi_currency": true}"#).unwrap();
        let m = c
            .opportunity_deal
            .iter()
            .find(|m| m.sf == "CurrencyIsoCode")
            .unwrap();
        assert_eq!(m.hs, "deal_currency_code");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = err(r#"{"multi_curency": true}"#);
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(e.field.as_deref(), Some("multi_curency"));
        assert!(e.message.contains("multi_curency"), "{}", e.message);
    }

    #[test]
    fn unknown_nested_key_is_named_with_its_path() {
        let e = err(r#"{"condition": {"min_amout": "5"}}"#);
        assert_eq!(e.field.as_deref(), Some("condition.min_amout"));
        let e = err(
            r#"{"custom_mappings": [{"salesforce_field": "A__c", "hubspot_field": "a", "rul": "two-way"}]}"#,
        );
        assert_eq!(e.field.as_deref(), Some("custom_mappings[0].rul"));
    }

    #[test]
    fn bad_rule_name_is_refused_with_its_key() {
        let e = err(r#"{"rules": {"opportunity-deal": {"Amount": "sometimes"}}}"#);
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(e.field.as_deref(), Some("rules.opportunity-deal.Amount"));
        assert!(e.message.contains("sometimes"), "{}", e.message);
    }

    #[test]
    fn rule_overrides_apply_per_mapping() {
        let c = parse(r#"{"rules": {"opportunity-deal": {"Amount": "two-way", "Description": "dont-sync"}, "contact-contact": {"Email": "always-salesforce"}}}"#).unwrap();
        let rule = |l: &[MappingSpec], f: &str| l.iter().find(|m| m.sf == f).unwrap().rule;
        assert_eq!(rule(&c.opportunity_deal, "Amount"), SyncRule::TwoWay);
        assert_eq!(rule(&c.opportunity_deal, "Description"), SyncRule::DontSync);
        assert_eq!(
            rule(&c.opportunity_deal, "Name"),
            SyncRule::PreferSalesforceUnlessBlank
        );
        assert_eq!(
            rule(&c.contact_contact, "Email"),
            SyncRule::AlwaysSalesforce
        );
    }

    #[test]
    fn stage_rule_also_governs_record_type() {
        let c = parse(r#"{"rules": {"opportunity-deal": {"StageName": "two-way"}}}"#).unwrap();
        let rt = c
            .opportunity_deal
            .iter()
            .find(|m| m.sf == "RecordTypeId")
            .unwrap();
        assert_eq!(rt.rule, SyncRule::TwoWay);
        let e = err(r#"{"rules": {"opportunity-deal": {"RecordTypeId": "two-way"}}}"#);
        assert_eq!(
            e.field.as_deref(),
            Some("rules.opportunity-deal.RecordTypeId")
        );
    }

    #[test]
    fn rule_for_unknown_or_unavailable_field_is_refused() {
        let e = err(r#"{"rules": {"opportunity-deal": {"Probability": "two-way"}}}"#);
        assert_eq!(
            e.field.as_deref(),
            Some("rules.opportunity-deal.Probability")
        );
        assert!(e.message.contains("custom_mappings"));
        let e = err(r#"{"rules": {"opportunity-deal": {"CurrencyIsoCode": "two-way"}}}"#);
        assert!(e.message.contains("multi_currency"));
    }

    #[test]
    fn custom_mapping_defaults_and_duplicates() {
        let c = parse(r#"{"custom_mappings": [{"salesforce_field": "Priority__c", "hubspot_field": "priority"}]}"#).unwrap();
        let m = c.opportunity_deal.last().unwrap();
        assert_eq!(
            (&*m.sf, &*m.hs, m.rule, m.custom),
            (
                "Priority__c",
                "priority",
                SyncRule::PreferSalesforceUnlessBlank,
                true
            )
        );
        let e = err(r#"{"custom_mappings": [{"salesforce_field": "Name", "hubspot_field": "x"}]}"#);
        assert_eq!(
            e.field.as_deref(),
            Some("custom_mappings[0].salesforce_field")
        );
        let e = err(
            r#"{"custom_mappings": [{"object_pair": "account-company", "salesforce_field": "X__c", "hubspot_field": "domain"}]}"#,
        );
        assert_eq!(e.field.as_deref(), Some("custom_mappings[0].hubspot_field"));
        assert!(e.message.contains("Website"));
        let e = err(r#"{"custom_mappings": [{"salesforce_field": " ", "hubspot_field": "x"}]}"#);
        assert_eq!(
            e.field.as_deref(),
            Some("custom_mappings[0].salesforce_field")
        );
    }

    #[test]
    fn stage_map_keeps_order_and_checks_shape() {
        let c = parse(r#"{"stage_map": {"Default": {"Prospecting": "appointmentscheduled", "Qualification": "qualifiedtobuy"}}}"#).unwrap();
        assert_eq!(c.stage_map[0].key, "Default");
        assert_eq!(
            c.stage_map[0].entries[1],
            ("Qualification".to_string(), "qualifiedtobuy".to_string())
        );
        let e = err(r#"{"stage_map": {"Default": ["x"]}}"#);
        assert_eq!(e.field.as_deref(), Some("stage_map.Default"));
        let e = err(r#"{"stage_map": {"Default": {"Prospecting": 3}}}"#);
        assert_eq!(e.field.as_deref(), Some("stage_map.Default.Prospecting"));
    }

    #[test]
    fn condition_amount_must_be_decimal_text() {
        let c = parse(r#"{"condition": {"min_amount": "1000.50", "stages": ["Prospecting"]}}"#)
            .unwrap();
        assert_eq!(c.condition.min_amount.as_ref().unwrap().1, "1000.50");
        let e = err(r#"{"condition": {"min_amount": "lots"}}"#);
        assert_eq!(e.field.as_deref(), Some("condition.min_amount"));
        let e = err(r#"{"condition": {"min_amount": 1000.5}}"#);
        assert_eq!(e.field.as_deref(), Some("condition.min_amount"));
    }

    #[test]
    fn not_json_is_a_config_error() {
        let e = err("{not json");
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(err("[]").kind, ErrorKind::Config);
        assert!(err("{} {}").message.contains("after the JSON"));
    }

    #[test]
    fn a_configs_mappings_start_with_the_standard_rows_in_order() {
        let configs = [
            "{}",
            r#"{"multi_currency": true}"#,
            r#"{"rules": {"opportunity-deal": {"StageName": "two-way", "Amount": "dont-sync"},
                          "contact-contact": {"Email": "always-salesforce"}},
                "custom_mappings": [
                    {"salesforce_field": "Priority__c", "hubspot_field": "deal_priority"},
                    {"object_pair": "account-company", "salesforce_field": "Tier__c",
                     "hubspot_field": "tier"}]}"#,
        ];
        for json in configs {
            let c = parse(json).unwrap();
            for pair in [
                ObjectPair::OpportunityDeal,
                ObjectPair::AccountCompany,
                ObjectPair::ContactContact,
            ] {
                let standard = mappings::standard(pair, c.multi_currency);
                let list = c.mappings(pair);
                assert!(list.len() >= standard.len(), "{json}");
                for (m, s) in list.iter().zip(standard) {
                    assert_eq!(
                        (&m.sf, &m.hs, m.kind, m.custom),
                        (&s.sf, &s.hs, s.kind, false)
                    );
                }
                assert!(list[standard.len()..].iter().all(|m| m.custom), "{json}");
            }
        }
        // The tenant's rules land in the config's copy, never in the static tables.
        let c = parse(configs[2]).unwrap();
        let rule = |sf: &str| {
            c.opportunity_deal
                .iter()
                .find(|m| m.sf == sf)
                .map(|m| m.rule)
        };
        assert_eq!(rule("Amount"), Some(SyncRule::DontSync));
        assert_eq!(rule("RecordTypeId"), Some(SyncRule::TwoWay));
        assert!(
            mappings::standard(ObjectPair::OpportunityDeal, false)
                .iter()
                .all(|m| m.rule == SyncRule::PreferSalesforceUnlessBlank)
        );
    }

    #[test]
    fn the_defaults_are_what_an_empty_config_builds() {
        let built = build(RawConfig::default()).unwrap();
        let defaults = Config::defaults();
        assert_eq!(built.multi_currency, defaults.multi_currency);
        assert_eq!(built.stage_map, defaults.stage_map);
        assert_eq!(built.condition, defaults.condition);
        for pair in [
            ObjectPair::OpportunityDeal,
            ObjectPair::AccountCompany,
            ObjectPair::ContactContact,
        ] {
            assert_eq!(built.mappings(pair), defaults.mappings(pair));
        }
    }
}
