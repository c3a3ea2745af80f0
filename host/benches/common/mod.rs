//! What the runtime benchmarks share: the bench batch, built in either binding's types.

/// Builds a batch of `n` opportunity/deal pairs in either binding's types
/// (wasmtime's host bindings and wit-bindgen's guest bindings share names).
macro_rules! make_batch {
    ($t:path, $n:expr) => {{
        use $t as t;
        let fv = |field: u32, value: t::Value| t::FieldValue { field, value };
        let pairs = (0..$n)
            .map(|i: usize| t::RecordPair {
                salesforce: Some(t::CrmRecord {
                    id: format!("006{i:015}"),
                    modified_at: 1_779_278_400_000,
                    fields: vec![
                        fv(0, t::Value::Text(format!("Deal {i}"))),
                        fv(
                            1,
                            t::Value::Decimal(t::Decimal {
                                digits: 100_000 + i as i64,
                                scale: 2,
                            }),
                        ),
                        fv(
                            2,
                            t::Value::Date(t::Date {
                                year: 2026,
                                month: 6,
                                day: 30,
                            }),
                        ),
                    ],
                }),
                hubspot: Some(t::CrmRecord {
                    id: format!("{}", 9000 + i),
                    modified_at: 1_779_105_600_000,
                    fields: vec![
                        fv(0, t::Value::Text("Old name".into())),
                        fv(
                            1,
                            t::Value::Decimal(t::Decimal {
                                digits: 1000,
                                scale: 0,
                            }),
                        ),
                    ],
                }),
                snapshot: Some(t::Snapshot {
                    salesforce: vec![],
                    hubspot: vec![],
                    synced_at: 1_779_000_000_000,
                }),
                salesforce_changed: vec![0, 1, 2],
                hubspot_changed: vec![],
                associations: t::PairAssociations {
                    salesforce: vec![],
                    hubspot: vec![],
                },
            })
            .collect();
        t::Batch {
            object_pair: t::ObjectPair::OpportunityDeal,
            direction: t::Direction::SalesforceToHubspot,
            trigger: t::Trigger::Incremental,
            salesforce_fields: vec!["Name".into(), "Amount".into(), "CloseDate".into()],
            hubspot_fields: vec!["dealname".into(), "amount".into()],
            pairs,
            lookups: t::Lookups {
                owners: vec![],
                pipelines: vec![],
            },
        }
    }};
}
