//! Unit tests of the planning rules, in both directions, built from the spec's sentences.

use super::*;
use crate::Rules;
use crate::bindings::dealbridge::rules::types::{
    Batch, CrmRecord, Date, Decimal, FieldValue, Lookups, Owner, PairAssociations, RecordPair,
    Related, Snapshot, Stage, Trigger,
};
use crate::bindings::exports::dealbridge::rules::rules::{PairOutcome, PairWrites};

const SF_USER: &str = "005000000000001AAA";
const HS_OWNER: &str = "101";
const RT_ENT: &str = "012000000000001AAA";

fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn dec(digits: i64, scale: u8) -> Value {
    Value::Decimal(Decimal { digits, scale })
}

fn stage(id: &str, label: &str) -> Stage {
    Stage {
        id: id.to_string(),
        label: label.to_string(),
    }
}

fn lookups() -> Lookups {
    Lookups {
        owners: vec![
            Owner {
                email: "ada@example.com".into(),
                salesforce_user_id: Some(SF_USER.into()),
                hubspot_owner_id: Some(HS_OWNER.into()),
            },
            Owner {
                email: "only.sf@example.com".into(),
                salesforce_user_id: Some("005000000000002AAA".into()),
                hubspot_owner_id: None,
            },
            Owner {
                email: "only.hs@example.com".into(),
                salesforce_user_id: None,
                hubspot_owner_id: Some("202".into()),
            },
        ],
        pipelines: vec![
            Pipeline {
                id: "default".into(),
                label: "Salesforce - Default pipeline".into(),
                record_type_id: None,
                record_type_name: "Default".into(),
                stages: vec![
                    stage("appointmentscheduled", "Prospecting"),
                    stage("qualifiedtobuy", "Qualification"),
                    stage("presentationscheduled", "Proposal"),
                    stage("closedwon", "Closed Won"),
                ],
            },
            Pipeline {
                id: "p-ent".into(),
                label: "Salesforce - Enterprise".into(),
                record_type_id: Some(RT_ENT.into()),
                record_type_name: "Enterprise".into(),
                stages: vec![stage("ent-1", "Discovery"), stage("ent-2", "Won")],
            },
        ],
    }
}

const STAGES: &str = r#""stage_map": {
    "Default": {"Prospecting": "appointmentscheduled", "Qualification": "Qualification",
                "Proposal": "presentationscheduled", "Negotiation": "presentationscheduled",
                "Closed Won": "closedwon", "Broken": "no-such-stage"},
    "Enterprise": {"Discovery": "ent-1", "Closed Won": "Won"}
}"#;

/// A side of a test pair: modification time and fields by name.
type Side<'a> = Option<(i64, Vec<(&'a str, Value)>)>;

struct Tb {
    batch: Batch,
}

impl Tb {
    fn new(pair: ObjectPair, direction: Direction) -> Self {
        Tb {
            batch: Batch {
                object_pair: pair,
                direction,
                trigger: Trigger::Incremental,
                salesforce_fields: Vec::new(),
                hubspot_fields: Vec::new(),
                pairs: Vec::new(),
                lookups: lookups(),
            },
        }
    }

    fn opp(direction: Direction) -> Self {
        Tb::new(ObjectPair::OpportunityDeal, direction)
    }

    fn idx(table: &mut Vec<String>, name: &str) -> u32 {
        match table.iter().position(|f| f == name) {
            Some(i) => i as u32,
            None => {
                table.push(name.to_string());
                (table.len() - 1) as u32
            }
        }
    }

    fn rec(table: &mut Vec<String>, id: &str, side: Side) -> Option<CrmRecord> {
        side.map(|(modified_at, fields)| CrmRecord {
            id: id.to_string(),
            modified_at,
            fields: fields
                .into_iter()
                .map(|(n, value)| FieldValue {
                    field: Tb::idx(table, n),
                    value,
                })
                .collect(),
        })
    }

    fn pair(mut self, sf: Side, hs: Side, sf_changed: &[&str], hs_changed: &[&str]) -> Self {
        let b = &mut self.batch;
        let salesforce = Tb::rec(&mut b.salesforce_fields, "006000000000001AAA", sf);
        let hubspot = Tb::rec(&mut b.hubspot_fields, "9001", hs);
        let salesforce_changed = sf_changed
            .iter()
            .map(|n| Tb::idx(&mut b.salesforce_fields, n))
            .collect();
        let hubspot_changed = hs_changed
            .iter()
            .map(|n| Tb::idx(&mut b.hubspot_fields, n))
            .collect();
        let snapshot = (salesforce.is_some() && hubspot.is_some()).then(|| Snapshot {
            salesforce: Vec::new(),
            hubspot: Vec::new(),
            synced_at: 1,
        });
        b.pairs.push(RecordPair {
            salesforce,
            hubspot,
            snapshot,
            salesforce_changed,
            hubspot_changed,
            associations: PairAssociations {
                salesforce: Vec::new(),
                hubspot: Vec::new(),
            },
        });
        self
    }

    fn assoc(mut self, sf: Vec<Related>, hs: Vec<Related>) -> Self {
        let p = self.batch.pairs.last_mut().expect("a pair");
        p.associations = PairAssociations {
            salesforce: sf,
            hubspot: hs,
        };
        self
    }

    fn plan(&self, config: &str) -> Vec<PairOutcome> {
        Rules::from_json(config).unwrap().plan(&self.batch).unwrap()
    }

    fn one(&self, config: &str) -> PairOutcome {
        let mut v = self.plan(config);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }
}

fn writes(o: &PairOutcome) -> &PairWrites {
    match o {
        PairOutcome::Write(w) => w,
        other => panic!("expected writes, got {other:?}"),
    }
}

fn hs_w<'a>(o: &'a PairOutcome, f: &str) -> Option<&'a Value> {
    writes(o)
        .hubspot
        .iter()
        .find(|w| w.field == f)
        .map(|w| &w.value)
}

fn sf_w<'a>(o: &'a PairOutcome, f: &str) -> Option<&'a Value> {
    writes(o)
        .salesforce
        .iter()
        .find(|w| w.field == f)
        .map(|w| &w.value)
}

fn rule_cfg(field: &str, rule: &str) -> String {
    format!(r#"{{"rules": {{"opportunity-deal": {{"{field}": "{rule}"}}}}}}"#)
}

fn is_up_to_date(o: &PairOutcome) -> bool {
    matches!(o, PairOutcome::Skip(Skip::UpToDate))
}

fn err(o: &PairOutcome) -> &RuleError {
    match o {
        PairOutcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const SF_T: i64 = 2_000;
const HS_T: i64 = 1_000;

// ---- decide(): the rule table itself ----

#[test]
fn decide_covers_every_rule() {
    let f = |sf_blank, hs_blank, sf_changed, hs_changed, hs_newer| Facts {
        sf_blank,
        hs_blank,
        equal: false,
        sf_changed,
        hs_changed,
        hs_newer,
    };
    use SyncRule::*;
    use Winner::*;
    // prefer-salesforce-unless-blank
    assert_eq!(
        decide(
            PreferSalesforceUnlessBlank,
            f(false, false, false, true, true)
        ),
        Salesforce
    );
    assert_eq!(
        decide(
            PreferSalesforceUnlessBlank,
            f(true, false, false, true, true)
        ),
        HubSpot
    );
    assert_eq!(
        decide(
            PreferSalesforceUnlessBlank,
            f(true, false, true, false, false)
        ),
        Salesforce
    );
    // always-salesforce
    assert_eq!(
        decide(AlwaysSalesforce, f(true, false, false, true, true)),
        Neither
    );
    assert_eq!(
        decide(AlwaysSalesforce, f(false, true, false, true, true)),
        Salesforce
    );
    assert_eq!(
        decide(AlwaysSalesforce, f(true, false, true, false, false)),
        Salesforce
    );
    // two-way
    assert_eq!(
        decide(TwoWay, f(false, false, true, false, true)),
        Salesforce
    );
    assert_eq!(decide(TwoWay, f(false, false, false, true, false)), HubSpot);
    assert_eq!(decide(TwoWay, f(false, false, true, true, true)), HubSpot);
    assert_eq!(
        decide(TwoWay, f(false, false, true, true, false)),
        Salesforce
    );
    assert_eq!(
        decide(TwoWay, f(false, true, false, false, true)),
        Salesforce
    );
    assert_eq!(decide(TwoWay, f(true, false, false, false, false)), HubSpot);
    // dont-sync
    assert_eq!(
        decide(DontSync, f(false, true, true, false, false)),
        Neither
    );
    // equal values never move
    let mut e = f(false, false, true, true, true);
    e.equal = true;
    assert_eq!(decide(TwoWay, e), Neither);
}

// ---- prefer-salesforce-unless-blank (the default) ----

#[test]
fn prefer_sf_salesforce_change_overwrites_hubspot() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Name", t("Big deal"))])),
            Some((HS_T, vec![("dealname", t("Old"))])),
            &["Name"],
            &[],
        )
        .one("{}");
    assert_eq!(hs_w(&o, "dealname"), Some(&t("Big deal")));
    assert!(writes(&o).salesforce.is_empty());
}

#[test]
fn prefer_sf_hubspot_change_is_overwritten_by_salesforce_value() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((HS_T - 500, vec![("Description", t("SF text"))])),
            Some((HS_T, vec![("description", t("HS edit"))])),
            &[],
            &["description"],
        )
        .one("{}");
    assert_eq!(hs_w(&o, "description"), Some(&t("SF text")));
    assert_eq!(sf_w(&o, "Description"), None);
}

#[test]
fn prefer_sf_hubspot_fills_a_blank_salesforce_field() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Type", Value::Null)])),
            Some((HS_T, vec![("dealtype", t("newbusiness"))])),
            &[],
            &["dealtype"],
        )
        .one("{}");
    assert_eq!(sf_w(&o, "Type"), Some(&t("newbusiness")));
    assert!(writes(&o).hubspot.is_empty());
}

#[test]
fn prefer_sf_salesforce_clear_clears_hubspot() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Description", t(""))])),
            Some((HS_T, vec![("description", t("was here"))])),
            &["Description"],
            &[],
        )
        .one("{}");
    assert_eq!(hs_w(&o, "description"), Some(&Value::Null));
    assert_eq!(sf_w(&o, "Description"), None);
}

#[test]
fn prefer_sf_hubspot_clear_is_restored_from_salesforce() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Name", t("Keep"))])),
            Some((HS_T, vec![("dealname", Value::Null)])),
            &[],
            &["dealname"],
        )
        .one("{}");
    assert_eq!(hs_w(&o, "dealname"), Some(&t("Keep")));
    assert_eq!(sf_w(&o, "Name"), None);
}

// ---- always-salesforce ----

#[test]
fn always_sf_hubspot_never_writes_salesforce_even_when_blank() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Type", Value::Null)])),
            Some((HS_T, vec![("dealtype", t("newbusiness"))])),
            &[],
            &["dealtype"],
        )
        .one(&rule_cfg("Type", "always-salesforce"));
    assert!(is_up_to_date(&o), "{o:?}");
}

#[test]
fn always_sf_salesforce_value_and_clear_go_to_hubspot() {
    let cfg = rule_cfg("Type", "always-salesforce");
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Type", t("Renewal"))])),
            Some((HS_T, vec![("dealtype", t("newbusiness"))])),
            &["Type"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "dealtype"), Some(&t("Renewal")));
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Type", Value::Null)])),
            Some((HS_T, vec![("dealtype", t("newbusiness"))])),
            &["Type"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "dealtype"), Some(&Value::Null));
}

#[test]
fn always_sf_new_hubspot_deal_creates_opportunity_without_that_field() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            None,
            Some((
                HS_T,
                vec![("dealname", t("From HS")), ("dealtype", t("newbusiness"))],
            )),
            &[],
            &["dealname", "dealtype"],
        )
        .one(&rule_cfg("Type", "always-salesforce"));
    assert_eq!(sf_w(&o, "Name"), Some(&t("From HS")));
    assert_eq!(sf_w(&o, "Type"), None);
}

// ---- two-way ----

#[test]
fn two_way_the_side_that_changed_wins_in_both_directions() {
    let cfg = rule_cfg("Description", "two-way");
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Description", t("sf"))])),
            Some((HS_T, vec![("description", t("hs new"))])),
            &[],
            &["description"],
        )
        .one(&cfg);
    assert_eq!(sf_w(&o, "Description"), Some(&t("hs new")));
    assert!(writes(&o).hubspot.is_empty());
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((HS_T, vec![("Description", t("sf new"))])),
            Some((SF_T, vec![("description", t("hs"))])),
            &["Description"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "description"), Some(&t("sf new")));
}

#[test]
fn two_way_both_changed_newer_modification_time_wins() {
    let cfg = rule_cfg("Description", "two-way");
    let mk = |sf_t, hs_t| {
        Tb::opp(Direction::SalesforceToHubspot)
            .pair(
                Some((sf_t, vec![("Description", t("sf"))])),
                Some((hs_t, vec![("description", t("hs"))])),
                &["Description"],
                &["description"],
            )
            .one(&cfg)
    };
    let o = mk(1_000, 2_000);
    assert_eq!(sf_w(&o, "Description"), Some(&t("hs")));
    let o = mk(2_000, 1_000);
    assert_eq!(hs_w(&o, "description"), Some(&t("sf")));
    // A tie goes to Salesforce.
    let o = mk(1_500, 1_500);
    assert_eq!(hs_w(&o, "description"), Some(&t("sf")));
}

#[test]
fn two_way_clears_propagate_both_ways() {
    let cfg = rule_cfg("Amount", "two-way");
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((HS_T, vec![("Amount", dec(500, 0))])),
            Some((SF_T, vec![("amount", Value::Null)])),
            &[],
            &["amount"],
        )
        .one(&cfg);
    assert_eq!(sf_w(&o, "Amount"), Some(&Value::Null));
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Amount", Value::Null)])),
            Some((HS_T, vec![("amount", dec(500, 0))])),
            &["Amount"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "amount"), Some(&Value::Null));
}

#[test]
fn two_way_unchanged_blank_never_overwrites_a_value() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((HS_T, vec![("Name", t("x")), ("Description", t("keep"))])),
            Some((SF_T, vec![("dealname", t("x"))])),
            &["Name"],
            &[],
        )
        .one(&rule_cfg("Description", "two-way"));
    assert_eq!(hs_w(&o, "description"), Some(&t("keep")));
}

// ---- dont-sync ----

#[test]
fn dont_sync_moves_nothing_either_way_clears_included() {
    let cfg = rule_cfg("Description", "dont-sync");
    for (dir, sf, hs, sfc, hsc) in [
        (
            Direction::SalesforceToHubspot,
            t("a"),
            t("b"),
            "Description",
            "",
        ),
        (
            Direction::HubspotToSalesforce,
            t("a"),
            t("b"),
            "",
            "description",
        ),
        (
            Direction::SalesforceToHubspot,
            Value::Null,
            t("b"),
            "Description",
            "",
        ),
        (
            Direction::HubspotToSalesforce,
            t("a"),
            Value::Null,
            "",
            "description",
        ),
    ] {
        let sfc: Vec<&str> = [sfc].into_iter().filter(|s| !s.is_empty()).collect();
        let hsc: Vec<&str> = [hsc].into_iter().filter(|s| !s.is_empty()).collect();
        let o = Tb::opp(dir)
            .pair(
                Some((SF_T, vec![("Description", sf)])),
                Some((HS_T, vec![("description", hs)])),
                &sfc,
                &hsc,
            )
            .one(&cfg);
        assert!(is_up_to_date(&o), "{o:?}");
    }
}

// ---- blanks, equality, creates ----

#[test]
fn equal_decimals_of_different_scale_are_up_to_date() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Amount", dec(100000, 2))])),
            Some((HS_T, vec![("amount", dec(1000, 0))])),
            &["Amount"],
            &[],
        )
        .one("{}");
    assert!(is_up_to_date(&o), "{o:?}");
}

#[test]
fn blank_text_and_null_are_the_same() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Description", Value::Null)])),
            Some((HS_T, vec![("description", t(""))])),
            &["Description"],
            &[],
        )
        .one("{}");
    assert!(is_up_to_date(&o), "{o:?}");
}

#[test]
fn close_date_equals_hubspot_datetime_on_that_day() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![(
                    "CloseDate",
                    Value::Date(Date {
                        year: 2026,
                        month: 5,
                        day: 20,
                    }),
                )],
            )),
            Some((
                HS_T,
                vec![("closedate", Value::Datetime(1_779_235_200_000))],
            )),
            &["CloseDate"],
            &[],
        )
        .one("{}");
    assert!(is_up_to_date(&o), "{o:?}");
}

#[test]
fn new_deal_gets_every_non_blank_salesforce_value_and_no_clears() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![
                    ("Name", t("New")),
                    ("Amount", dec(12345, 2)),
                    ("Description", Value::Null),
                    ("OwnerId", t(SF_USER)),
                    ("StageName", t("Prospecting")),
                ],
            )),
            None,
            &["Name", "Amount", "Description"],
            &[],
        )
        .one(&format!("{{{STAGES}}}"));
    assert_eq!(hs_w(&o, "dealname"), Some(&t("New")));
    assert_eq!(hs_w(&o, "amount"), Some(&dec(12345, 2)));
    assert_eq!(hs_w(&o, "hubspot_owner_id"), Some(&t(HS_OWNER)));
    assert_eq!(hs_w(&o, "pipeline"), Some(&t("default")));
    assert_eq!(hs_w(&o, "dealstage"), Some(&t("appointmentscheduled")));
    assert_eq!(hs_w(&o, "description"), None);
}

#[test]
fn nothing_changed_is_up_to_date() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Name", t("Same")), ("OwnerId", t(SF_USER))])),
            Some((
                HS_T,
                vec![("dealname", t("Same")), ("hubspot_owner_id", t(HS_OWNER))],
            )),
            &["Name"],
            &[],
        )
        .one("{}");
    assert!(is_up_to_date(&o), "{o:?}");
}

// ---- owner ----

#[test]
fn owner_is_translated_by_email_in_both_directions_whatever_the_rule() {
    let cfg = r#"{"rules": {"opportunity-deal": {"OwnerId": "always-salesforce"}}}"#;
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("OwnerId", t("005000000000002AAA"))])),
            Some((HS_T, vec![("hubspot_owner_id", t(HS_OWNER))])),
            &[],
            &["hubspot_owner_id"],
        )
        .one(cfg);
    assert_eq!(sf_w(&o, "OwnerId"), Some(&t(SF_USER)));
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("OwnerId", t(SF_USER))])),
            Some((HS_T, vec![("hubspot_owner_id", t("202"))])),
            &["OwnerId"],
            &[],
        )
        .one(cfg);
    assert_eq!(hs_w(&o, "hubspot_owner_id"), Some(&t(HS_OWNER)));
}

#[test]
fn missing_owner_is_an_error_never_a_silent_drop() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![("OwnerId", t("005000000000002AAA")), ("Name", t("n"))],
            )),
            Some((HS_T, vec![("hubspot_owner_id", t(HS_OWNER))])),
            &["OwnerId"],
            &[],
        )
        .one("{}");
    let e = err(&o);
    assert_eq!(e.kind, ErrorKind::MissingOwner);
    assert_eq!(e.field.as_deref(), Some("OwnerId"));
    assert!(e.message.contains("only.sf@example.com"), "{}", e.message);
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("OwnerId", t(SF_USER))])),
            Some((HS_T, vec![("hubspot_owner_id", t("999"))])),
            &[],
            &["hubspot_owner_id"],
        )
        .one("{}");
    let e = err(&o);
    assert_eq!(e.kind, ErrorKind::MissingOwner);
    assert_eq!(e.field.as_deref(), Some("hubspot_owner_id"));
}

#[test]
fn cleared_hubspot_owner_is_restored_from_salesforce() {
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((HS_T, vec![("OwnerId", t(SF_USER))])),
            Some((SF_T, vec![("hubspot_owner_id", Value::Null)])),
            &[],
            &["hubspot_owner_id"],
        )
        .one("{}");
    assert_eq!(hs_w(&o, "hubspot_owner_id"), Some(&t(HS_OWNER)));
    assert_eq!(sf_w(&o, "OwnerId"), None);
}

// ---- currency ----

#[test]
fn currency_code_and_amount_pass_through_unconverted_in_multi_currency_orgs() {
    let tb = Tb::opp(Direction::SalesforceToHubspot).pair(
        Some((
            SF_T,
            vec![("Amount", dec(123456789, 3)), ("CurrencyIsoCode", t("EUR"))],
        )),
        Some((
            HS_T,
            vec![("amount", dec(1, 0)), ("deal_currency_code", t("USD"))],
        )),
        &["Amount", "CurrencyIsoCode"],
        &[],
    );
    let o = tb.one(r#"{"multi_currency": true}"#);
    assert_eq!(hs_w(&o, "amount"), Some(&dec(123456789, 3)));
    assert_eq!(hs_w(&o, "deal_currency_code"), Some(&t("EUR")));
    let o = tb.one("{}");
    assert_eq!(hs_w(&o, "amount"), Some(&dec(123456789, 3)));
    assert_eq!(hs_w(&o, "deal_currency_code"), None);
}

// ---- pipeline and stage ----

#[test]
fn stage_goes_to_hubspot_through_the_pipeline_table_by_id_or_label() {
    let cfg = format!("{{{STAGES}}}");
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("StageName", t("Qualification"))])),
            Some((
                HS_T,
                vec![
                    ("pipeline", t("default")),
                    ("dealstage", t("appointmentscheduled")),
                ],
            )),
            &["StageName"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "dealstage"), Some(&t("qualifiedtobuy")));
    assert_eq!(hs_w(&o, "pipeline"), Some(&t("default")));
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![("StageName", t("Closed Won")), ("RecordTypeId", t(RT_ENT))],
            )),
            Some((
                HS_T,
                vec![("pipeline", t("p-ent")), ("dealstage", t("ent-1"))],
            )),
            &["StageName"],
            &[],
        )
        .one(&cfg);
    assert_eq!(hs_w(&o, "dealstage"), Some(&t("ent-2")));
    assert_eq!(hs_w(&o, "pipeline"), Some(&t("p-ent")));
}

#[test]
fn stage_comes_back_to_salesforce_with_record_type() {
    let cfg =
        format!(r#"{{{STAGES}, "rules": {{"opportunity-deal": {{"StageName": "two-way"}}}}}}"#);
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("StageName", t("Prospecting"))])),
            Some((
                HS_T,
                vec![("pipeline", t("p-ent")), ("dealstage", t("ent-2"))],
            )),
            &[],
            &["pipeline", "dealstage"],
        )
        .one(&cfg);
    assert_eq!(sf_w(&o, "StageName"), Some(&t("Closed Won")));
    assert_eq!(sf_w(&o, "RecordTypeId"), Some(&t(RT_ENT)));
}

#[test]
fn many_salesforce_stages_to_one_hubspot_stage_is_up_to_date() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("StageName", t("Negotiation"))])),
            Some((
                HS_T,
                vec![
                    ("pipeline", t("default")),
                    ("dealstage", t("presentationscheduled")),
                ],
            )),
            &["StageName"],
            &[],
        )
        .one(&format!("{{{STAGES}}}"));
    assert!(is_up_to_date(&o), "{o:?}");
}

#[test]
fn unmapped_stage_is_a_typed_error_both_ways() {
    let cfg = format!("{{{STAGES}}}");
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("StageName", t("Id. Decision Makers"))])),
            Some((
                HS_T,
                vec![
                    ("pipeline", t("default")),
                    ("dealstage", t("appointmentscheduled")),
                ],
            )),
            &["StageName"],
            &[],
        )
        .one(&cfg);
    let e = err(&o);
    assert_eq!(e.kind, ErrorKind::UnmappedStage);
    assert_eq!(e.field.as_deref(), Some("StageName"));
    assert!(e.message.contains("Id. Decision Makers"), "{}", e.message);
    // A table entry that names no stage of the pipeline.
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("StageName", t("Broken"))])),
            None,
            &[],
            &[],
        )
        .one(&cfg);
    assert!(err(&o).message.contains("no-such-stage"));
    // HubSpot stage without a Salesforce stage.
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            None,
            Some((
                HS_T,
                vec![("pipeline", t("p-ent")), ("dealstage", t("ent-9"))],
            )),
            &[],
            &["dealstage"],
        )
        .one(&cfg);
    let e = err(&o);
    assert_eq!(e.kind, ErrorKind::UnmappedStage);
    assert_eq!(e.field.as_deref(), Some("dealstage"));
    // No table at all.
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("StageName", t("Prospecting"))])),
            None,
            &[],
            &[],
        )
        .one("{}");
    assert_eq!(err(&o).kind, ErrorKind::UnmappedStage);
}

#[test]
fn deal_in_an_unsynced_pipeline_is_skipped_both_ways() {
    for dir in [
        Direction::SalesforceToHubspot,
        Direction::HubspotToSalesforce,
    ] {
        let o = Tb::opp(dir)
            .pair(
                Some((SF_T, vec![("Name", t("a"))])),
                Some((
                    HS_T,
                    vec![("pipeline", t("partners")), ("dealname", t("b"))],
                )),
                &["Name"],
                &["dealname"],
            )
            .one(&format!("{{{STAGES}}}"));
        match o {
            PairOutcome::Skip(Skip::UnsyncedPipeline(r)) => assert!(r.contains("partners"), "{r}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn record_type_without_pipeline_is_unmapped_pipeline() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![
                    ("StageName", t("Prospecting")),
                    ("RecordTypeId", t("012000000000009AAA")),
                ],
            )),
            None,
            &[],
            &[],
        )
        .one(&format!("{{{STAGES}}}"));
    let e = err(&o);
    assert_eq!(e.kind, ErrorKind::UnmappedPipeline);
    assert_eq!(e.field.as_deref(), Some("RecordTypeId"));
}

// ---- condition ----

#[test]
fn condition_excludes_with_a_reason_for_each_criterion() {
    let cfg = r#"{"condition": {"record_types": ["Enterprise"], "stages": ["Discovery"], "min_amount": "1000", "flag_field": "Sync__c"}}"#;
    let ok = vec![
        ("RecordTypeId", t(RT_ENT)),
        ("StageName", t("Discovery")),
        ("Amount", dec(100000, 2)),
        ("Sync__c", Value::Boolean(true)),
    ];
    let with = |k: &str, v: Value| {
        let mut f = ok.clone();
        f.iter_mut().find(|(n, _)| *n == k).unwrap().1 = v;
        f
    };
    let tb = Tb::opp(Direction::SalesforceToHubspot)
        .pair(Some((SF_T, ok.clone())), None, &[], &[])
        .pair(
            Some((SF_T, with("RecordTypeId", Value::Null))),
            None,
            &[],
            &[],
        )
        .pair(Some((SF_T, with("StageName", t("Won")))), None, &[], &[])
        .pair(Some((SF_T, with("Amount", dec(99999, 2)))), None, &[], &[])
        .pair(Some((SF_T, with("Amount", Value::Null))), None, &[], &[])
        .pair(
            Some((SF_T, with("Sync__c", Value::Boolean(false)))),
            None,
            &[],
            &[],
        );
    let inc = Rules::from_json(cfg).unwrap().condition(&tb.batch).unwrap();
    assert_eq!(inc[0], Inclusion::Include);
    let reason = |i: usize| match &inc[i] {
        Inclusion::Exclude(r) => r.clone(),
        Inclusion::Include => panic!("pair {i} included"),
    };
    assert!(reason(1).contains("Default"), "{}", reason(1));
    assert!(reason(2).contains("Won"));
    assert!(
        reason(3).contains("999.99") && reason(3).contains("1000"),
        "{}",
        reason(3)
    );
    assert!(reason(4).contains("blank"));
    assert!(reason(5).contains("Sync__c"));
    // plan agrees with condition
    let plan = tb.plan(cfg);
    assert!(matches!(&plan[3], PairOutcome::Skip(Skip::Excluded(r)) if r.contains("999.99")));
    assert!(!matches!(&plan[0], PairOutcome::Skip(Skip::Excluded(_))));
}

#[test]
fn record_type_condition_accepts_ids_and_names() {
    let tb = Tb::opp(Direction::SalesforceToHubspot).pair(
        Some((SF_T, vec![("RecordTypeId", t(RT_ENT))])),
        None,
        &[],
        &[],
    );
    for cfg in [
        r#"{"condition": {"record_types": ["Enterprise"]}}"#,
        r#"{"condition": {"record_types": ["012000000000001AAA"]}}"#,
    ] {
        let inc = Rules::from_json(cfg).unwrap().condition(&tb.batch).unwrap();
        assert_eq!(inc, vec![Inclusion::Include]);
    }
}

// ---- associations ----

fn rel(kind: RelatedKind, sf: Option<&str>, hs: Option<&str>) -> Related {
    Related {
        kind,
        salesforce_id: sf.map(str::to_string),
        hubspot_id: hs.map(str::to_string),
        role: None,
        primary: false,
    }
}

#[test]
fn salesforce_to_hubspot_associations_are_account_plus_contact_roles() {
    use RelatedKind::*;
    let sf = vec![
        rel(Company, Some("001A"), Some("c1")),
        rel(Contact, Some("003A"), Some("k1")),
        rel(Contact, Some("003B"), Some("k2")),
    ];
    let hs = vec![
        rel(Contact, Some("003A"), Some("k1")),
        rel(Contact, Some("003Z"), Some("k9")),
        rel(Contact, None, Some("k-hs-only")),
    ];
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(Some((SF_T, vec![])), Some((HS_T, vec![])), &[], &[])
        .assoc(sf.clone(), hs)
        .one("{}");
    let want = writes(&o)
        .hubspot_associations
        .as_ref()
        .expect("associations");
    assert_eq!(want.len(), 4);
    assert_eq!(
        &want[..3],
        &sf[..],
        "the account and the contact roles, in order"
    );
    assert_eq!(want[3].hubspot_id.as_deref(), Some("k-hs-only"));
    assert!(writes(&o).salesforce_associations.is_none());
}

#[test]
fn hubspot_to_salesforce_adds_contact_roles_and_removes_nothing() {
    use RelatedKind::*;
    let sf = vec![
        rel(Contact, Some("003A"), Some("k1")),
        rel(Contact, Some("003Q"), None),
    ];
    let hs = vec![
        rel(Contact, Some("003A"), Some("k1")),
        rel(Contact, Some("003B"), Some("k2")),
        rel(Company, Some("001A"), Some("c1")),
    ];
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(Some((SF_T, vec![])), Some((HS_T, vec![])), &[], &[])
        .assoc(sf, hs)
        .one("{}");
    let want = writes(&o)
        .salesforce_associations
        .as_ref()
        .expect("associations");
    let ids: Vec<_> = want.iter().map(|r| r.salesforce_id.as_deref()).collect();
    assert_eq!(
        ids,
        vec![Some("003A"), Some("003Q"), Some("003B"), Some("001A")]
    );
    assert!(writes(&o).hubspot_associations.is_none());
}

#[test]
fn matching_associations_are_up_to_date() {
    use RelatedKind::*;
    let both = vec![
        rel(Company, Some("001A"), Some("c1")),
        rel(Contact, Some("003A"), Some("k1")),
    ];
    for dir in [
        Direction::SalesforceToHubspot,
        Direction::HubspotToSalesforce,
    ] {
        let o = Tb::opp(dir)
            .pair(Some((SF_T, vec![])), Some((HS_T, vec![])), &[], &[])
            .assoc(both.clone(), both.iter().rev().cloned().collect())
            .one("{}");
        assert!(is_up_to_date(&o), "{o:?}");
    }
}

// ---- other pairs, custom mappings, bad input ----

#[test]
fn account_and_contact_pairs_use_their_own_mappings() {
    let o = Tb::new(ObjectPair::AccountCompany, Direction::SalesforceToHubspot)
        .pair(
            Some((
                SF_T,
                vec![("Website", t("acme.com")), ("BillingCity", t("Paris"))],
            )),
            Some((HS_T, vec![("domain", t("old.com"))])),
            &["Website", "BillingCity"],
            &[],
        )
        .one(r#"{"condition": {"min_amount": "5"}}"#);
    assert_eq!(hs_w(&o, "domain"), Some(&t("acme.com")));
    assert_eq!(hs_w(&o, "city"), Some(&t("Paris")));
    let o = Tb::new(ObjectPair::ContactContact, Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Title", Value::Null), ("Email", t("a@b.c"))])),
            Some((HS_T, vec![("jobtitle", t("CTO")), ("email", t("x@y.z"))])),
            &[],
            &["jobtitle", "email"],
        )
        .one("{}");
    assert_eq!(sf_w(&o, "Title"), Some(&t("CTO")));
    assert_eq!(hs_w(&o, "email"), Some(&t("a@b.c")));
}

#[test]
fn custom_mapping_follows_its_rule() {
    let cfg = r#"{"custom_mappings": [{"salesforce_field": "Tier__c", "hubspot_field": "tier", "rule": "two-way"}]}"#;
    let o = Tb::opp(Direction::HubspotToSalesforce)
        .pair(
            Some((SF_T, vec![("Tier__c", t("Gold"))])),
            Some((HS_T, vec![("tier", t("Silver"))])),
            &[],
            &["tier"],
        )
        .one(cfg);
    assert_eq!(sf_w(&o, "Tier__c"), Some(&t("Silver")));
}

#[test]
fn bad_field_index_is_a_pair_error_not_a_panic() {
    let mut tb = Tb::opp(Direction::SalesforceToHubspot).pair(
        Some((SF_T, vec![("Name", t("a"))])),
        None,
        &[],
        &[],
    );
    tb.batch.pairs[0].salesforce_changed.push(77);
    let o = tb.one("{}");
    assert_eq!(err(&o).kind, ErrorKind::Other);
    assert!(err(&o).message.contains("77"));
}

#[test]
fn outcomes_keep_the_order_of_the_pairs() {
    let o = Tb::opp(Direction::SalesforceToHubspot)
        .pair(
            Some((SF_T, vec![("Name", t("a"))])),
            Some((HS_T, vec![("dealname", t("a"))])),
            &[],
            &[],
        )
        .pair(
            Some((SF_T, vec![("Name", t("b"))])),
            Some((HS_T, vec![("dealname", t("x"))])),
            &["Name"],
            &[],
        )
        .plan("{}");
    assert!(is_up_to_date(&o[0]));
    assert_eq!(hs_w(&o[1], "dealname"), Some(&t("b")));
}

#[test]
fn field_index_finds_the_first_position_in_small_and_large_tables() {
    for len in [3, LINEAR_FIELD_TABLE_MAX + 1, 200] {
        let mut table: Vec<String> = (0..len).map(|i| format!("Field{i}__c")).collect();
        table.push("Field1__c".to_string());
        let index = FieldIndex::new(&table);
        assert_eq!(
            matches!(index, FieldIndex::Hashed(_)),
            table.len() > LINEAR_FIELD_TABLE_MAX
        );
        assert_eq!(index.get("Field0__c"), Some(0));
        assert_eq!(
            index.get("Field1__c"),
            Some(1),
            "the first of a repeated name"
        );
        assert_eq!(
            index.get(&format!("Field{}__c", len - 1)),
            Some(len as u32 - 1)
        );
        assert_eq!(index.get("Missing"), None);
    }
}
