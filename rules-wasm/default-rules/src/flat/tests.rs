//! Tests of the flat form: `flatten` keeps every content, the flat planner nests to the nested
//! plan wherever the batch's lists put things, and bad flat input is a specific error, never a
//! panic.

use super::*;
use crate::Rules;
use crate::bindings::dealbridge::rules::types::{
    Direction, Lookups, ObjectPair, Owner, PairAssociations, Pipeline, RecordPair, Snapshot, Stage,
    Trigger,
};
use crate::bindings::exports::dealbridge::rules::flat_rules::FlatWrites;
use crate::bindings::exports::dealbridge::rules::rules::{Inclusion, Skip};

fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn fv(field: u32, value: Value) -> FieldValue {
    FieldValue { field, value }
}

fn rec(id: &str, modified_at: i64, fields: Vec<FieldValue>) -> CrmRecord {
    CrmRecord {
        id: id.to_string(),
        modified_at,
        fields,
    }
}

fn rel(kind: RelatedKind, sf: Option<&str>, hs: Option<&str>, role: Option<&str>) -> Related {
    Related {
        kind,
        salesforce_id: sf.map(str::to_string),
        hubspot_id: hs.map(str::to_string),
        role: role.map(str::to_string),
        primary: role.is_some(),
    }
}

fn pair(
    salesforce: Option<CrmRecord>,
    hubspot: Option<CrmRecord>,
    snapshot: Option<Snapshot>,
    changed: (&[u32], &[u32]),
) -> RecordPair {
    RecordPair {
        salesforce,
        hubspot,
        snapshot,
        salesforce_changed: changed.0.to_vec(),
        hubspot_changed: changed.1.to_vec(),
        associations: PairAssociations {
            salesforce: Vec::new(),
            hubspot: Vec::new(),
        },
    }
}

fn with_assoc(mut p: RecordPair, salesforce: Vec<Related>, hubspot: Vec<Related>) -> RecordPair {
    p.associations = PairAssociations {
        salesforce,
        hubspot,
    };
    p
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn lookups() -> Lookups {
    Lookups {
        owners: vec![
            Owner {
                email: "ada@example.com".into(),
                salesforce_user_id: Some("005A".into()),
                hubspot_owner_id: Some("101".into()),
            },
            Owner {
                email: "only.sf@example.com".into(),
                salesforce_user_id: Some("005B".into()),
                hubspot_owner_id: None,
            },
        ],
        pipelines: vec![Pipeline {
            id: "default".into(),
            label: "Salesforce - Default pipeline".into(),
            record_type_id: None,
            record_type_name: "Default".into(),
            stages: vec![
                Stage {
                    id: "appointmentscheduled".into(),
                    label: "Prospecting".into(),
                },
                Stage {
                    id: "closedwon".into(),
                    label: "Closed Won".into(),
                },
            ],
        }],
    }
}

const OPP_CONFIG: &str = r#"{
    "stage_map": {"Default": {"Prospecting": "appointmentscheduled", "Closed Won": "closedwon"}},
    "custom_mappings": [
        {"salesforce_field": "Colors__c", "hubspot_field": "colors", "rule": "two-way"}
    ]
}"#;

/// Salesforce: Name 0, Amount 1, CloseDate 2, StageName 3, OwnerId 4, Colors__c 5, Type 6.
/// HubSpot: dealname 0, amount 1, closedate 2, dealstage 3, pipeline 4, hubspot_owner_id 5,
/// colors 6 (no `dealtype`).
fn opp_batch(direction: Direction) -> Batch {
    use RelatedKind::*;
    let multi = |o: &[&str]| Value::Multi(names(o));
    let snapshot = Snapshot {
        salesforce: vec![fv(0, t("Old")), fv(4, t("005A"))],
        hubspot: vec![fv(0, t("Old")), fv(6, multi(&["red"]))],
        synced_at: 5,
    };
    let sf = |name: &str, owner: &str| {
        rec(
            "006A",
            2_000,
            vec![
                fv(0, t(name)),
                fv(
                    1,
                    Value::Decimal(Decimal {
                        digits: 123_450,
                        scale: 2,
                    }),
                ),
                fv(
                    2,
                    Value::Date(Date {
                        year: 2026,
                        month: 5,
                        day: 20,
                    }),
                ),
                fv(3, t("Prospecting")),
                fv(4, t(owner)),
                fv(5, multi(&["red", "grün"])),
                fv(6, t("New Business")),
            ],
        )
    };
    let hs = |name: &str, pipeline: &str| {
        rec(
            "9001",
            1_000,
            vec![
                fv(0, t(name)),
                fv(1, Value::Integer(1234)),
                fv(2, Value::Datetime(1_779_235_200_000)),
                fv(3, t("appointmentscheduled")),
                fv(4, t(pipeline)),
                fv(5, Value::Integer(101)),
                fv(6, multi(&["grün", "red"])),
            ],
        )
    };
    Batch {
        object_pair: ObjectPair::OpportunityDeal,
        direction,
        trigger: Trigger::Incremental,
        salesforce_fields: names(&[
            "Name",
            "Amount",
            "CloseDate",
            "StageName",
            "OwnerId",
            "Colors__c",
            "Type",
        ]),
        hubspot_fields: names(&[
            "dealname",
            "amount",
            "closedate",
            "dealstage",
            "pipeline",
            "hubspot_owner_id",
            "colors",
        ]),
        pairs: vec![
            // Both sides, a snapshot, changes on both sides, associations that differ.
            with_assoc(
                pair(
                    Some(sf("Ünïcode deal ✓", "005A")),
                    Some(hs("Other", "default")),
                    Some(snapshot.clone()),
                    (&[0, 5], &[6, 1]),
                ),
                vec![
                    rel(Company, Some("001A"), Some("c1"), None),
                    rel(Contact, Some("003A"), Some("k1"), Some("Decision Maker")),
                ],
                vec![
                    rel(Contact, Some("003A"), Some("k1"), None),
                    rel(Contact, None, Some("k-hs-only"), Some("Champion")),
                    rel(Company, Some("001B"), Some("c2"), Some("Primary")),
                ],
            ),
            // A new deal: Salesforce only.
            pair(Some(sf("New", "005A")), None, None, (&[0], &[])),
            // A new opportunity: HubSpot only.
            pair(None, Some(hs("From HubSpot", "default")), None, (&[], &[0])),
            // Neither record: an error.
            pair(None, None, None, (&[], &[])),
            // An owner without a HubSpot counterpart: an error.
            pair(
                Some(sf("Owner", "005B")),
                Some(hs("Owner", "default")),
                Some(snapshot),
                (&[4], &[]),
            ),
            // A deal in an unsynced pipeline: a skip.
            pair(
                Some(sf("Skip", "005A")),
                Some(hs("Skip", "elsewhere")),
                None,
                (&[], &[0]),
            ),
            // Already equal: up to date.
            pair(
                Some(rec("006C", 1, vec![fv(0, t("Same"))])),
                Some(rec("9003", 2, vec![fv(0, t("Same")), fv(4, t("default"))])),
                None,
                (&[], &[]),
            ),
            // A field position outside the table: an error for this pair only.
            pair(
                Some(rec("006D", 1, vec![fv(0, t("x"))])),
                Some(rec("9004", 2, vec![])),
                None,
                (&[77], &[]),
            ),
        ],
        lookups: lookups(),
    }
}

/// Account and contact batches: integers, decimals, booleans, and a HubSpot table without some
/// of the fields written to it (the plan names them).
fn other_batches() -> Vec<Batch> {
    let account = Batch {
        object_pair: ObjectPair::AccountCompany,
        direction: Direction::SalesforceToHubspot,
        trigger: Trigger::Backfill,
        salesforce_fields: names(&["Name", "Website", "NumberOfEmployees", "AnnualRevenue"]),
        hubspot_fields: names(&["name", "numberofemployees"]),
        pairs: vec![
            pair(
                Some(rec(
                    "001A",
                    3,
                    vec![
                        fv(0, t("Acme")),
                        fv(1, t("acme.example")),
                        fv(2, Value::Integer(250)),
                        fv(
                            3,
                            Value::Decimal(Decimal {
                                digits: 10_000_000,
                                scale: 0,
                            }),
                        ),
                    ],
                )),
                None,
                None,
                (&[], &[]),
            ),
            pair(
                Some(rec("001B", 3, vec![fv(0, t("Beta")), fv(1, Value::Null)])),
                Some(rec(
                    "77",
                    4,
                    vec![fv(0, t("Beta Inc")), fv(1, Value::Integer(250))],
                )),
                None,
                (&[0], &[1]),
            ),
        ],
        lookups: Lookups {
            owners: Vec::new(),
            pipelines: Vec::new(),
        },
    };
    let contact = Batch {
        object_pair: ObjectPair::ContactContact,
        direction: Direction::HubspotToSalesforce,
        trigger: Trigger::Resync,
        salesforce_fields: names(&["FirstName", "Title", "Email"]),
        hubspot_fields: names(&["firstname", "jobtitle", "email", "hs_flag"]),
        pairs: vec![
            pair(
                Some(rec("003A", 1, vec![fv(0, t("Ada")), fv(1, t(""))])),
                Some(rec(
                    "501",
                    2,
                    vec![
                        fv(0, t("Ada")),
                        fv(1, t("CTO")),
                        fv(2, t("ada@example.com")),
                        fv(3, Value::Boolean(true)),
                    ],
                )),
                None,
                (&[], &[1, 2]),
            ),
            pair(
                None,
                Some(rec("502", 2, vec![fv(0, t("Grace")), fv(2, Value::Null)])),
                None,
                (&[], &[0]),
            ),
        ],
        lookups: Lookups {
            owners: Vec::new(),
            pipelines: Vec::new(),
        },
    };
    vec![account, contact]
}

/// Every batch of the tests, with the config to plan it with.
fn batches() -> Vec<(Batch, &'static str)> {
    let mut all = vec![
        (opp_batch(Direction::SalesforceToHubspot), OPP_CONFIG),
        (opp_batch(Direction::HubspotToSalesforce), OPP_CONFIG),
        (
            opp_batch(Direction::SalesforceToHubspot),
            r#"{"condition": {"min_amount": "2000", "stages": ["Prospecting"]}}"#,
        ),
    ];
    all.extend(other_batches().into_iter().map(|b| (b, "{}")));
    all
}

/// The nested batch that a flat batch stands for, read back through the planner's view.
fn unflatten(flat: &FlatBatch) -> Batch {
    let view = FlatView::new(flat).unwrap();
    let values = |span: Span| -> Vec<FieldValue> {
        view.fields(span)
            .unwrap()
            .iter()
            .map(|f| fv(f.field, view.value(&f.value).unwrap().to_value()))
            .collect()
    };
    let record = |r: &FlatRecord| CrmRecord {
        id: view.text(r.id).unwrap().to_string(),
        modified_at: r.modified_at,
        fields: values(r.fields),
    };
    let related = |span: Span| -> Vec<Related> {
        view.related(span)
            .unwrap()
            .iter()
            .map(|r| view.related_ref(r).unwrap().to_related())
            .collect()
    };
    Batch {
        object_pair: flat.object_pair,
        direction: flat.direction,
        trigger: flat.trigger,
        salesforce_fields: flat.salesforce_fields.clone(),
        hubspot_fields: flat.hubspot_fields.clone(),
        pairs: flat
            .pairs
            .iter()
            .map(|p| RecordPair {
                salesforce: p.salesforce.as_ref().map(record),
                hubspot: p.hubspot.as_ref().map(record),
                snapshot: p.snapshot.as_ref().map(|s| Snapshot {
                    salesforce: values(s.salesforce),
                    hubspot: values(s.hubspot),
                    synced_at: s.synced_at,
                }),
                salesforce_changed: view.changed(p.salesforce_changed).unwrap().to_vec(),
                hubspot_changed: view.changed(p.hubspot_changed).unwrap().to_vec(),
                associations: PairAssociations {
                    salesforce: related(p.salesforce_related),
                    hubspot: related(p.hubspot_related),
                },
            })
            .collect(),
        lookups: flat.lookups.clone(),
    }
}

/// The same flat batch with junk in front of every list (which the planner must never read)
/// and every span moved past it, as a host that lays out its lists otherwise might send it.
fn shifted(mut flat: FlatBatch) -> FlatBatch {
    const JUNK: &str = "junk ✗ ";
    let text = JUNK.len() as u32;
    let by = |s: &mut Span, n: u32| s.start += n;
    let shift_value = |v: &mut FlatValue| match v {
        FlatValue::Text(s) => by(s, text),
        FlatValue::Multi(s) => by(s, 1),
        _ => {}
    };
    flat.text.splice(0..0, JUNK.bytes());
    for o in &mut flat.options {
        by(o, text);
    }
    flat.options.insert(0, Span { start: 0, len: 4 });
    for f in &mut flat.fields {
        shift_value(&mut f.value);
    }
    flat.fields.insert(
        0,
        FlatField {
            field: 9_999,
            value: FlatValue::Text(Span { start: 0, len: 4 }),
        },
    );
    flat.changed.insert(0, 9_999);
    for r in &mut flat.related {
        for id in [&mut r.salesforce_id, &mut r.hubspot_id, &mut r.role]
            .into_iter()
            .flatten()
        {
            by(id, text);
        }
    }
    flat.related.insert(
        0,
        FlatRelated {
            kind: RelatedKind::Company,
            salesforce_id: Some(Span { start: 0, len: 4 }),
            hubspot_id: None,
            role: None,
            primary: true,
        },
    );
    for p in &mut flat.pairs {
        for r in [&mut p.salesforce, &mut p.hubspot].into_iter().flatten() {
            by(&mut r.id, text);
            by(&mut r.fields, 1);
        }
        if let Some(s) = &mut p.snapshot {
            by(&mut s.salesforce, 1);
            by(&mut s.hubspot, 1);
        }
        by(&mut p.salesforce_changed, 1);
        by(&mut p.hubspot_changed, 1);
        by(&mut p.salesforce_related, 1);
        by(&mut p.hubspot_related, 1);
    }
    flat
}

#[test]
fn flatten_keeps_every_text_value_and_association() {
    for (batch, _) in batches() {
        let flat = flatten(&batch);
        assert_eq!(unflatten(&flat), batch);
        assert_eq!(unflatten(&shifted(flat)), batch, "read through the spans");
    }
}

#[test]
fn flatten_puts_text_in_one_list_and_values_in_another() {
    let batch = opp_batch(Direction::SalesforceToHubspot);
    let flat = flatten(&batch);
    let view = FlatView::new(&flat).unwrap();
    let first = flat.pairs[0].salesforce.as_ref().unwrap();
    assert_eq!(view.text(first.id).unwrap(), "006A");
    let values = view.fields(first.fields).unwrap();
    assert_eq!(values.len(), 7);
    assert!(matches!(
        view.value(&values[0].value).unwrap(),
        ValueRef::Text("Ünïcode deal ✓")
    ));
    let ValueRef::Multi(colors) = view.value(&values[5].value).unwrap() else {
        panic!("a multi-select");
    };
    assert_eq!(colors.iter().collect::<Vec<_>>(), ["red", "grün"]);
    let record_values: usize = batch
        .pairs
        .iter()
        .flat_map(|p| [&p.salesforce, &p.hubspot])
        .flatten()
        .map(|r| r.fields.len())
        .sum();
    let snapshot_values: usize = batch
        .pairs
        .iter()
        .filter_map(|p| p.snapshot.as_ref())
        .map(|s| s.salesforce.len() + s.hubspot.len())
        .sum();
    assert_eq!(flat.fields.len(), record_values + snapshot_values);
}

/// `Rules::plan` is flatten, plan, nest: the case that can tell anything is the flat batch
/// whose lists carry junk before every item the spans point at.
#[test]
fn the_flat_plan_nests_to_the_nested_plan() {
    for (batch, config) in batches() {
        let rules = Rules::from_json(config).unwrap();
        let nested = rules.plan(&batch).unwrap();
        assert_eq!(nested.len(), batch.pairs.len());
        {
            let flat = shifted(flatten(&batch));
            let plan = rules.plan_flat(&flat).unwrap();
            assert_eq!(plan.outcomes.len(), batch.pairs.len());
            let back = nest(&batch.salesforce_fields, &batch.hubspot_fields, plan).unwrap();
            assert_eq!(back, nested, "{:?} {config}", batch.object_pair);
            assert_eq!(rules.condition_flat(&flat), rules.condition(&batch));
        }
    }
}

#[test]
fn the_test_batches_cover_writes_skips_errors_and_associations() {
    let mut seen = [false; 5];
    for (batch, config) in batches() {
        for o in Rules::from_json(config).unwrap().plan(&batch).unwrap() {
            match o {
                PairOutcome::Write(w) => {
                    seen[0] = true;
                    seen[1] |= w.salesforce_associations.is_some();
                    seen[2] |= w.hubspot_associations.is_some();
                }
                PairOutcome::Skip(_) => seen[3] = true,
                PairOutcome::Error(_) => seen[4] = true,
            }
        }
    }
    assert_eq!(seen, [true; 5]);
    let mut batch = opp_batch(Direction::SalesforceToHubspot);
    let rules = Rules::from_json(r#"{"condition": {"min_amount": "2000"}}"#).unwrap();
    let e = rules.condition(&batch).unwrap_err();
    says(&e, &["pair 7: ", "Salesforce field index 77"]);
    batch.pairs.pop();
    let conditions = rules.condition(&batch).unwrap();
    assert!(conditions.contains(&Inclusion::Include));
    assert!(
        conditions
            .iter()
            .any(|i| matches!(i, Inclusion::Exclude(r) if r.contains("below the minimum")))
    );
}

#[test]
fn writes_name_a_field_by_position_when_the_batch_has_it() {
    let account = other_batches().remove(0);
    let plan = Rules::from_json("{}")
        .unwrap()
        .plan_flat(&flatten(&account))
        .unwrap();
    let FlatOutcome::Write(FlatWrites { hubspot, .. }) = &plan.outcomes[0] else {
        panic!("a new company gets writes: {:?}", plan.outcomes[0]);
    };
    let fields: Vec<&FieldRef> = plan.writes
        [hubspot.start as usize..(hubspot.start + hubspot.len) as usize]
        .iter()
        .map(|w| &w.field)
        .collect();
    // `name` and `numberofemployees` are in the HubSpot table; `domain` and `annualrevenue` are not.
    assert!(fields.contains(&&FieldRef::Known(0)));
    assert!(fields.contains(&&FieldRef::Known(1)));
    assert!(fields.contains(&&FieldRef::Named("domain".into())));
    assert!(fields.contains(&&FieldRef::Named("annualrevenue".into())));
    assert_eq!(fields.len(), 4);
}

#[test]
fn stage_writes_name_their_fields_by_position_too() {
    let mut batch = opp_batch(Direction::SalesforceToHubspot);
    batch.pairs.truncate(2);
    let plan = Rules::from_json(OPP_CONFIG)
        .unwrap()
        .plan_flat(&flatten(&batch))
        .unwrap();
    let FlatOutcome::Write(w) = &plan.outcomes[1] else {
        panic!("a new deal gets writes");
    };
    let hubspot = &plan.writes[w.hubspot.start as usize..][..w.hubspot.len as usize];
    let field = |i: u32| hubspot.iter().find(|w| w.field == FieldRef::Known(i));
    assert_eq!(field(4).map(|w| &w.value), Some(&t("default")), "pipeline");
    assert_eq!(
        field(3).map(|w| &w.value),
        Some(&t("appointmentscheduled")),
        "dealstage"
    );
    let named: Vec<_> = hubspot
        .iter()
        .filter_map(|w| match &w.field {
            FieldRef::Named(name) => Some(name.as_str()),
            FieldRef::Known(_) => None,
        })
        .collect();
    assert_eq!(named, ["dealtype"], "the one field the HubSpot table lacks");
}

// ---- bad flat input ----

/// A valid flat batch of one opportunity pair with both records and a snapshot, a multi-select
/// and associations on both sides, and a second, untouched pair.
fn good() -> FlatBatch {
    let mut batch = opp_batch(Direction::SalesforceToHubspot);
    batch.pairs.truncate(2);
    flatten(&batch)
}

/// The first pair's error after `spoil` changed the batch; the second pair still plans.
fn pair_error(spoil: impl FnOnce(&mut FlatBatch)) -> RuleError {
    let mut flat = good();
    spoil(&mut flat);
    let plan = Rules::from_json(OPP_CONFIG)
        .unwrap()
        .plan_flat(&flat)
        .unwrap();
    assert!(
        matches!(plan.outcomes[1], FlatOutcome::Write(_)),
        "the other pair is planned: {:?}",
        plan.outcomes[1]
    );
    match &plan.outcomes[0] {
        FlatOutcome::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Other);
            assert!(e.message.starts_with("pair 0: "), "{}", e.message);
            e.clone()
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn says(e: &RuleError, parts: &[&str]) {
    for part in parts {
        assert!(e.message.contains(part), "`{part}` in {}", e.message);
    }
}

fn sf_record(flat: &mut FlatBatch) -> &mut FlatRecord {
    flat.pairs[0].salesforce.as_mut().unwrap()
}

#[test]
fn a_record_id_outside_the_text_is_a_pair_error() {
    let e = pair_error(|f| {
        let end = f.text.len() as u32;
        sf_record(f).id = Span { start: end, len: 1 };
    });
    let bytes = format!("outside the batch's `text` ({} bytes)", good().text.len());
    says(&e, &["Salesforce record's id", &bytes]);
}

#[test]
fn a_span_that_overflows_is_a_pair_error() {
    let e = pair_error(|f| {
        sf_record(f).id = Span {
            start: u32::MAX,
            len: u32::MAX,
        }
    });
    says(
        &e,
        &[
            "Salesforce record's id",
            &format!("{}+{}", u32::MAX, u32::MAX),
        ],
    );
}

#[test]
fn text_split_inside_a_character_is_a_pair_error() {
    // The first value is the deal name "Ünïcode deal ✓": `Ü` is two bytes.
    let e = pair_error(|f| {
        let fields = sf_record(f).fields.start as usize;
        let FlatValue::Text(s) = &mut f.fields[fields].value else {
            panic!("text");
        };
        s.start += 1;
    });
    says(
        &e,
        &[
            "value 0 (field 0) of the Salesforce record",
            "character boundary",
        ],
    );
}

#[test]
fn record_values_outside_the_fields_list_are_a_pair_error() {
    let e = pair_error(|f| {
        f.pairs[0].hubspot.as_mut().unwrap().fields.len += 1_000;
    });
    says(
        &e,
        &["HubSpot record's values", "outside the batch's `fields`"],
    );
}

#[test]
fn multi_select_options_outside_their_lists_are_a_pair_error() {
    let colors = |f: &mut FlatBatch| -> Span {
        let fields = sf_record(f).fields.start as usize;
        let FlatValue::Multi(s) = f.fields[fields + 5].value else {
            panic!("multi");
        };
        s
    };
    let e = pair_error(|f| {
        let s = colors(f);
        let fields = sf_record(f).fields.start as usize;
        f.fields[fields + 5].value = FlatValue::Multi(Span {
            start: s.start,
            len: f.options.len() as u32 + 1,
        });
    });
    says(&e, &["value 5 (field 5)", "outside the batch's `options`"]);
    let e = pair_error(|f| {
        let s = colors(f);
        f.options[s.start as usize].len = f.text.len() as u32 + 1;
    });
    says(&e, &["value 5 (field 5)", "`text`"]);
}

#[test]
fn changed_fields_outside_their_list_or_table_are_a_pair_error() {
    let e = pair_error(|f| f.pairs[0].salesforce_changed.start = f.changed.len() as u32);
    says(
        &e,
        &["Salesforce changed fields", "outside the batch's `changed`"],
    );
    let e = pair_error(|f| {
        let at = f.pairs[0].hubspot_changed.start as usize;
        f.changed[at] = 40;
    });
    says(
        &e,
        &[
            "HubSpot field index 40",
            "HubSpot field table has 7 entries",
        ],
    );
}

#[test]
fn a_value_for_a_field_outside_the_table_is_a_pair_error() {
    let e = pair_error(|f| {
        let fields = sf_record(f).fields.start as usize;
        f.fields[fields + 2].field = 7;
    });
    says(
        &e,
        &[
            "Salesforce field index 7",
            "Salesforce field table has 7 entries",
        ],
    );
}

#[test]
fn snapshot_values_outside_their_lists_are_a_pair_error() {
    let e = pair_error(|f| {
        f.pairs[0].snapshot.as_mut().unwrap().hubspot.start = u32::MAX - 1;
    });
    says(&e, &["snapshot's HubSpot values", "`fields`"]);
    let e = pair_error(|f| {
        let at = f.pairs[0].snapshot.as_ref().unwrap().salesforce.start as usize;
        f.fields[at].value = FlatValue::Text(Span {
            start: f.text.len() as u32,
            len: 3,
        });
    });
    says(
        &e,
        &[
            "value 0 (field 0) of the snapshot's Salesforce values",
            "`text`",
        ],
    );
}

#[test]
fn a_snapshot_value_for_a_field_outside_the_table_is_a_pair_error() {
    let e = pair_error(|f| {
        let at = f.pairs[0].snapshot.as_ref().unwrap().hubspot.start as usize;
        f.fields[at + 1].field = 7;
    });
    says(
        &e,
        &[
            "HubSpot field index 7 in the snapshot",
            "HubSpot field table has 7 entries",
        ],
    );
}

#[test]
fn associations_outside_their_lists_are_a_pair_error() {
    let e = pair_error(|f| f.pairs[0].hubspot_related.len = f.related.len() as u32 + 1);
    says(
        &e,
        &["HubSpot associations", "outside the batch's `related`"],
    );
    let e = pair_error(|f| {
        let at = f.pairs[0].salesforce_related.start as usize + 1;
        f.related[at].role = Some(Span {
            start: 1 << 30,
            len: 2,
        });
    });
    says(&e, &["Salesforce association 1", "`text`"]);
}

#[test]
fn text_that_is_not_utf8_fails_the_whole_call() {
    let mut flat = good();
    flat.text.push(0xff);
    let rules = Rules::from_json(OPP_CONFIG).unwrap();
    for e in [
        rules.plan_flat(&flat).unwrap_err(),
        rules.condition_flat(&flat).unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.message.contains("`text` is not UTF-8"), "{}", e.message);
    }
}

#[test]
fn bad_input_in_a_condition_fails_the_whole_call() {
    let mut flat = good();
    flat.pairs[1].salesforce.as_mut().unwrap().fields.start = u32::MAX;
    let e = Rules::from_json("{}")
        .unwrap()
        .condition_flat(&flat)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Other);
    says(&e, &["pair 1: ", "Salesforce record's values", "`fields`"]);
}

#[test]
fn nest_refuses_a_plan_that_does_not_resolve() {
    let batch = opp_batch(Direction::SalesforceToHubspot);
    let rules = Rules::from_json(OPP_CONFIG).unwrap();
    let plan = rules.plan_flat(&flatten(&batch)).unwrap();
    fn first(plan: &mut FlatPlan) -> &mut FlatWrites {
        match &mut plan.outcomes[0] {
            FlatOutcome::Write(w) => w,
            other => panic!("writes: {other:?}"),
        }
    }
    let nest_err =
        |plan: FlatPlan| nest(&batch.salesforce_fields, &batch.hubspot_fields, plan).unwrap_err();

    let mut bad = plan.clone();
    first(&mut bad).hubspot.len = 10_000;
    says(&nest_err(bad), &["outcome 0", "HubSpot writes", "`writes`"]);

    let mut bad = plan.clone();
    let hubspot = first(&mut bad).hubspot;
    bad.writes[hubspot.start as usize].field = FieldRef::Known(99);
    says(
        &nest_err(bad),
        &["outcome 0", "field 99", "HubSpot field table has 7 entries"],
    );

    let mut bad = plan.clone();
    let w = first(&mut bad);
    w.salesforce = w.hubspot;
    says(&nest_err(bad), &["outcome 0", "share entries"]);

    let mut bad = plan.clone();
    first(&mut bad).hubspot_associations = Some(Span {
        start: 0,
        len: 1_000,
    });
    says(
        &nest_err(bad),
        &["outcome 0", "HubSpot associations", "`related`"],
    );

    assert_eq!(
        nest(&batch.salesforce_fields, &batch.hubspot_fields, plan).unwrap(),
        rules.plan(&batch).unwrap()
    );
}

#[test]
fn skips_and_errors_pass_through_nest() {
    let batch = opp_batch(Direction::SalesforceToHubspot);
    let plan = Rules::from_json(OPP_CONFIG)
        .unwrap()
        .plan_flat(&flatten(&batch))
        .unwrap();
    assert!(matches!(
        &plan.outcomes[5],
        FlatOutcome::Skip(Skip::UnsyncedPipeline(r)) if r.contains("`elsewhere`")
    ));
    assert!(matches!(
        &plan.outcomes[6],
        FlatOutcome::Skip(Skip::UpToDate)
    ));
    assert!(matches!(&plan.outcomes[3], FlatOutcome::Error(e) if e.message.contains("neither")));
    let nested = nest(&batch.salesforce_fields, &batch.hubspot_fields, plan).unwrap();
    assert!(matches!(&nested[6], PairOutcome::Skip(Skip::UpToDate)));
}

// ---- allocation per record ----

/// The system allocator, counting the allocations of the threads that ask it to.
struct Counting;

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(block, layout) }
    }

    unsafe fn realloc(
        &self,
        block: *mut u8,
        layout: std::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { std::alloc::System.realloc(block, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING_ALLOCATOR: Counting = Counting;

/// How many allocations (and reallocations) `plan_flat` makes on this thread.
fn allocations_of_plan(rules: &Rules, flat: &FlatBatch) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let plan = rules.plan_flat(flat);
    COUNTING.with(|c| c.set(false));
    assert!(plan.is_ok());
    ALLOCATIONS.with(|a| a.get())
}

/// `n` copies of the first pair of the opportunity batch (text, a decimal, a date, a
/// multi-select, an owner, a snapshot and associations on both sides), made `up_to_date` or
/// with a number written each.
fn copies(n: usize, up_to_date: bool) -> FlatBatch {
    let mut batch = opp_batch(Direction::SalesforceToHubspot);
    let mut first = batch.pairs.swap_remove(0);
    let sf = first.salesforce.as_mut().unwrap();
    sf.fields.retain(|v| v.field != 6);
    let same = |i: usize| sf.fields[i].value.clone();
    let hs = first.hubspot.as_mut().unwrap();
    hs.fields = vec![
        fv(0, same(0)),
        fv(
            1,
            if up_to_date {
                same(1)
            } else {
                Value::Integer(1)
            },
        ),
        fv(2, Value::Datetime(1_779_235_200_000)),
        fv(3, t("appointmentscheduled")),
        fv(4, t("default")),
        fv(5, t("101")),
        fv(6, Value::Multi(names(&["grün", "red"]))),
    ];
    first.associations.hubspot = first.associations.salesforce.clone();
    batch.pairs = vec![first; n];
    flatten(&batch)
}

#[test]
fn planning_allocates_nothing_per_record_for_input_data() {
    let rules = Rules::from_json(OPP_CONFIG).unwrap();
    let plan = rules.plan_flat(&copies(1, true)).unwrap();
    assert!(
        matches!(plan.outcomes[0], FlatOutcome::Skip(Skip::UpToDate)),
        "{:?}",
        plan.outcomes[0]
    );
    let small = allocations_of_plan(&rules, &copies(100, true));
    let large = allocations_of_plan(&rules, &copies(1_000, true));
    assert!(small > 0, "the per-batch tables are counted");
    assert_eq!(small, large, "up-to-date pairs allocate nothing");

    let plan = rules.plan_flat(&copies(1, false)).unwrap();
    let FlatOutcome::Write(w) = &plan.outcomes[0] else {
        panic!("writes: {:?}", plan.outcomes[0]);
    };
    assert_eq!((w.salesforce.len, w.hubspot.len), (0, 1), "{plan:?}");
    let small = allocations_of_plan(&rules, &copies(100, false));
    let large = allocations_of_plan(&rules, &copies(1_000, false));
    // A number written allocates nothing; only the plan's `writes` list grows (by doubling).
    assert!(
        large - small <= 4,
        "{small} allocations for 100 pairs, {large} for 1000"
    );
}
