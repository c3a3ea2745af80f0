//! The HubSpot client against the HubSpot emulator over real HTTP(S): objects, batch calls
//! with 207 partial results, upserts on a unique property, the keyset change scan with many
//! records sharing one `hs_lastmodifieddate` past the 10,000 cap, 429 handling, retries of 5xx
//! and none of 4xx, associations, pipelines, owners and properties.

use std::collections::BTreeSet;
use std::time::Duration;

use dealbridge::crm::ErrorClass;
use dealbridge::crm::RetryPolicy;
use dealbridge::crm::governor::{Backoff, HubSpotLimits};
use dealbridge::crm::hubspot::types::{
    AssociationInput, AssociationType, CreateInput, NewPipeline, NewProperty, NewStage,
    SearchRequest,
};
use dealbridge::crm::hubspot::{
    HubSpotClient, HubSpotConfig, HubSpotError, Properties, ScanCursor, ScanRequest, UpdateInput,
};
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed};
use serde_json::{Value, json};

async fn emulators(seed: Seed) -> RunningEmulators {
    dealbridge_emulator::start(EmulatorOptions {
        seed,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulators start")
}

fn config(emu: &RunningEmulators) -> HubSpotConfig {
    let mut cfg = HubSpotConfig::new(
        emu.hubspot_urls.http.clone(),
        emu.hubspot_credentials.private_app_token.clone(),
    );
    cfg.retry = RetryPolicy {
        max_transient_retries: 2,
        backoff: Backoff {
            base: Duration::from_millis(2),
            max: Duration::from_millis(10),
        },
        ..RetryPolicy::default()
    };
    cfg
}

/// A client whose own governor never waits (for tests of bulk work and server 429s).
fn unthrottled(emu: &RunningEmulators) -> HubSpotClient {
    let mut cfg = config(emu);
    cfg.limits = HubSpotLimits {
        requests_per_interval: 100_000,
        interval: Duration::from_secs(10),
        search_per_second: 100_000,
        daily_cap: None,
    };
    HubSpotClient::new(cfg).unwrap()
}

async fn control(base: &str, path: &str, body: Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .put(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("control call sent");
    assert!(
        resp.status().is_success(),
        "control call refused: {}",
        resp.text().await.unwrap_or_default()
    );
}

async fn limits_off(emu: &RunningEmulators) {
    control(
        &emu.hubspot_urls.http,
        "/__emulator/rate-limits",
        json!({"ten_secondly": null, "interval_ms": 10000, "search_per_second": null, "daily": null}),
    )
    .await;
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn hs_objects_crud() {
    let emu = emulators(Seed::Empty).await;
    let hs = HubSpotClient::new(config(&emu)).unwrap();
    let deal = hs
        .create(
            "deals",
            &props(&[("dealname", "Alpha"), ("amount", "100")]),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deal.prop("dealname"), Some("Alpha"));
    let got = hs
        .get("deals", &deal.id, &["dealname", "amount"], &[])
        .await
        .unwrap();
    assert_eq!(got.prop("amount"), Some("100"));
    let upd = hs
        .update("deals", &deal.id, &props(&[("amount", "250.5")]))
        .await
        .unwrap();
    assert_eq!(upd.prop("amount"), Some("250.5"));
    let page = hs
        .list_page("deals", &["dealname"], None, 10)
        .await
        .unwrap();
    assert!(page.results.iter().any(|d| d.id == deal.id));
    hs.archive("deals", &deal.id).await.unwrap();
    let err = hs.get("deals", &deal.id, &[], &[]).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.class(), ErrorClass::NotFound);
    let m = hs.metrics();
    assert_eq!(m.calls_with("hs.object.get", "200"), 1);
    assert_eq!(
        m.calls_with("hs.object.get", "404"),
        1,
        "a 404 is not retried"
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_batch_calls_report_each_input() {
    let emu = emulators(Seed::Empty).await;
    let hs = HubSpotClient::new(config(&emu)).unwrap();
    let created = hs
        .batch_create(
            "deals",
            &[
                CreateInput {
                    properties: props(&[("dealname", "One")]),
                    associations: vec![],
                },
                CreateInput {
                    properties: props(&[("dealname", "Two")]),
                    associations: vec![],
                },
            ],
        )
        .await
        .unwrap();
    assert!(created.all_ok(), "{created:?}");
    assert_eq!(
        created.items[0].as_ref().unwrap().prop("dealname"),
        Some("One")
    );
    assert_eq!(
        created.items[1].as_ref().unwrap().prop("dealname"),
        Some("Two")
    );
    let one = created.items[0].as_ref().unwrap().id.clone();
    let two = created.items[1].as_ref().unwrap().id.clone();

    // A read with a missing id: the others still come back, the missing one is NotFound.
    let read = hs
        .batch_read(
            "deals",
            &[two.clone(), "999999999".into(), one.clone()],
            &["dealname"],
            None,
        )
        .await
        .unwrap();
    assert_eq!(read.items[0].as_ref().unwrap().id, two);
    assert_eq!(
        read.items[1].as_ref().unwrap_err().class(),
        ErrorClass::NotFound
    );
    assert_eq!(read.items[2].as_ref().unwrap().id, one);

    let updated = hs
        .batch_update(
            "deals",
            &[UpdateInput {
                id: one.clone(),
                properties: props(&[("amount", "7")]),
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.items[0].as_ref().unwrap().prop("amount"), Some("7"));

    // Over 100 inputs are split into calls of 100.
    let many: Vec<CreateInput> = (0..150)
        .map(|i| CreateInput {
            properties: props(&[("dealname", &format!("bulk {i}"))]),
            associations: vec![],
        })
        .collect();
    let before = hs.metrics().calls_to("hs.batch.create");
    let out = hs.batch_create("deals", &many).await.unwrap();
    assert!(out.all_ok());
    assert_eq!(out.items.len(), 150);
    assert_eq!(hs.metrics().calls_to("hs.batch.create") - before, 2);

    hs.batch_archive("deals", &[one.clone(), two.clone()])
        .await
        .unwrap();
    let read = hs.batch_read("deals", &[one], &[], None).await.unwrap();
    assert!(read.items[0].is_err());
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_upsert_on_a_unique_property_does_not_duplicate() {
    let emu = emulators(Seed::Empty).await;
    let hs = HubSpotClient::new(config(&emu)).unwrap();
    let prop = hs
        .create_property(
            "deals",
            &NewProperty {
                name: "dealbridge_sf_id".into(),
                label: "Salesforce id (dealbridge)".into(),
                property_type: "string".into(),
                field_type: "text".into(),
                group_name: "dealinformation".into(),
                options: vec![],
                has_unique_value: true,
            },
        )
        .await
        .unwrap();
    assert!(prop.has_unique_value);
    let listed = hs.list_properties("deals").await.unwrap();
    assert!(
        listed
            .iter()
            .any(|p| p.name == "dealbridge_sf_id" && p.has_unique_value)
    );
    assert!(listed.iter().any(|p| p.name == "dealname"));

    let inputs = vec![
        UpdateInput {
            id: "006000000000001AAA".into(),
            properties: props(&[("dealname", "First")]),
        },
        UpdateInput {
            id: "006000000000002AAA".into(),
            properties: props(&[("dealname", "Second")]),
        },
    ];
    let out = hs
        .batch_upsert("deals", "dealbridge_sf_id", &inputs)
        .await
        .unwrap();
    assert!(out.all_ok(), "{out:?}");
    let first_id = out.items[0].as_ref().unwrap().id.clone();
    assert_eq!(
        out.items[0].as_ref().unwrap().prop("dealname"),
        Some("First")
    );
    // The same keys again: updates, no new records.
    let again = hs
        .batch_upsert("deals", "dealbridge_sf_id", &inputs)
        .await
        .unwrap();
    assert_eq!(again.items[0].as_ref().unwrap().id, first_id);
    let all = hs.list_page("deals", &[], None, 100).await.unwrap();
    assert_eq!(all.results.len(), 2);
    // Upserting on a property without unique values is refused by HubSpot.
    let err = hs
        .batch_upsert("deals", "dealname", &inputs[..1])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    emu.shutdown().await.unwrap();
}

/// Creates `batches` batches of 100 deals; each batch shares one `hs_lastmodifieddate`.
async fn create_deals(hs: &HubSpotClient, batches: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for b in 0..batches {
        let inputs: Vec<CreateInput> = (0..100)
            .map(|i| CreateInput {
                properties: props(&[("dealname", &format!("d{b}-{i}"))]),
                associations: vec![],
            })
            .collect();
        let out = hs.batch_create("deals", &inputs).await.unwrap();
        for item in out.items {
            ids.insert(item.unwrap().id);
        }
    }
    ids
}

#[tokio::test]
async fn hs_scan_returns_every_record_once_past_the_10k_cap() {
    let emu = emulators(Seed::Empty).await;
    limits_off(&emu).await;
    let hs = unthrottled(&emu);
    let start = chrono::Utc::now().timestamp_millis() - 1;
    let ids = create_deals(&hs, 101).await;
    assert_eq!(ids.len(), 10_100);
    let until = chrono::Utc::now().timestamp_millis() + 1;

    // An offset search cannot page past 10,000: refused before a request is made.
    let err = hs
        .search(
            "deals",
            &SearchRequest {
                limit: 100,
                after: Some("10000".into()),
                ..SearchRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, HubSpotError::SearchCap { .. }));

    let request = ScanRequest {
        object_type: "deals".into(),
        until_ms: until,
        properties: vec!["dealname".into()],
        modified_property: None,
        extra_filters: vec![],
        page_size: 200,
    };
    let (records, end) = hs
        .scan_modified(&request, ScanCursor::from_ms(start))
        .await
        .unwrap();
    let seen: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 10_100, "no record twice");
    assert_eq!(unique, ids, "every record once");
    let keys: Vec<(i64, u64)> = records
        .iter()
        .map(|r| (r.last_modified_ms().unwrap(), r.numeric_id().unwrap()))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "(time, id) order");
    assert_eq!(end, ScanCursor::from_ms(until));
    assert_eq!(hs.metrics().calls_with("hs.search", "400"), 0);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_scan_pages_one_instant_by_id_and_resumes_from_a_checkpoint() {
    let emu = emulators(Seed::Empty).await;
    limits_off(&emu).await;
    let hs = unthrottled(&emu);
    let start = chrono::Utc::now().timestamp_millis() - 1;
    // 100 deals sharing one hs_lastmodifieddate, pages of 30: the instant is paged by id.
    let ids = create_deals(&hs, 1).await;
    let until = chrono::Utc::now().timestamp_millis() + 1;
    let request = ScanRequest {
        object_type: "deals".into(),
        until_ms: until,
        properties: vec![],
        modified_property: None,
        extra_filters: vec![],
        page_size: 30,
    };
    let mut cursor = ScanCursor::from_ms(start);
    let mut seen = Vec::new();
    let mut tie_pages = 0;
    loop {
        // A fresh client each page: a checkpointed cursor is all that is needed to resume.
        let page = unthrottled(&emu)
            .scan_modified_page(&request, cursor)
            .await
            .unwrap();
        if page.next.after_id.is_some() {
            tie_pages += 1;
        }
        seen.extend(page.records.into_iter().map(|r| r.id));
        cursor = page.next;
        if page.done {
            break;
        }
    }
    assert!(
        tie_pages >= 3,
        "the instant was paged by id ({tie_pages} pages)"
    );
    assert_eq!(seen.len(), 100);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), ids);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_429_is_honoured_and_the_call_succeeds() {
    let emu = emulators(Seed::Empty).await;
    let hs = unthrottled(&emu);
    let deal = hs
        .create("deals", &props(&[("dealname", "x")]), &[])
        .await
        .unwrap();
    // The server allows 2 requests in 4 s. Five requests leave at once, before any answer
    // (and its X-HubSpot-RateLimit headers) can slow our governor: HubSpot answers some with
    // 429, and the client waits and retries each until it passes.
    control(
        &emu.hubspot_urls.http,
        "/__emulator/rate-limits",
        json!({"ten_secondly": 2, "interval_ms": 4000, "search_per_second": null, "daily": null}),
    )
    .await;
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let hs = hs.clone();
            let id = deal.id.clone();
            tokio::spawn(async move { hs.get("deals", &id, &[], &[]).await.map(|d| d.id) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), deal.id);
    }
    let m = hs.metrics();
    assert_eq!(m.calls_with("hs.object.get", "200"), 5);
    assert!(m.calls_with("hs.object.get", "429") >= 1, "{m:?}");
    assert_eq!(m.throttle_waits, m.calls_with("hs.object.get", "429"));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_daily_cap_fails_fast() {
    let emu = emulators(Seed::Empty).await;
    let mut cfg = config(&emu);
    cfg.limits.daily_cap = Some(2);
    let hs = HubSpotClient::new(cfg).unwrap();
    hs.list_page("deals", &[], None, 1).await.unwrap();
    hs.list_page("deals", &[], None, 1).await.unwrap();
    let err = hs.list_page("deals", &[], None, 1).await.unwrap_err();
    assert!(matches!(err, HubSpotError::DailyCap(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::RateLimit);
    assert_eq!(hs.metrics().calls_to("hs.object.list"), 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_5xx_is_retried_and_4xx_is_not() {
    let emu = emulators(Seed::Empty).await;
    let hs = HubSpotClient::new(config(&emu)).unwrap();
    control(
        &emu.hubspot_urls.http,
        "/__emulator/faults",
        json!({"error_rates": [{"status": 502, "rate": 1.0, "path_prefix": "/crm"}]}),
    )
    .await;
    let err = hs.list_page("deals", &[], None, 1).await.unwrap_err();
    assert_eq!(err.status(), Some(502), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(hs.metrics().calls_with("hs.object.list", "502"), 3);
    // Not idempotent: a create is sent once.
    let err = hs
        .create("deals", &props(&[("dealname", "x")]), &[])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(hs.metrics().calls_to("hs.object.create"), 1);

    control(
        &emu.hubspot_urls.http,
        "/__emulator/faults",
        json!({"error_rates": [{"status": 400, "rate": 1.0, "path_prefix": "/crm"}]}),
    )
    .await;
    let err = hs.list_page("deals", &[], None, 1).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(hs.metrics().calls_with("hs.object.list", "400"), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_bad_token_is_an_auth_error() {
    let emu = emulators(Seed::Empty).await;
    let hs = HubSpotClient::new(HubSpotConfig::new(
        emu.hubspot_urls.http.clone(),
        "pat-wrong",
    ))
    .unwrap();
    let err = hs.list_page("deals", &[], None, 1).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.class(), ErrorClass::Auth);
    assert_eq!(hs.metrics().calls_to("hs.object.list"), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_associations_pipelines_and_owners() {
    let emu = emulators(Seed::Demo).await;
    let hs = HubSpotClient::new(config(&emu)).unwrap();
    let deal = hs
        .create("deals", &props(&[("dealname", "A")]), &[])
        .await
        .unwrap();
    let contact = hs
        .create(
            "contacts",
            &props(&[("email", "assoc-test@example.test")]),
            &[],
        )
        .await
        .unwrap();
    let company = hs
        .create("companies", &props(&[("name", "Acme Test")]), &[])
        .await
        .unwrap();
    hs.associate_default("deals", &deal.id, "contacts", &contact.id)
        .await
        .unwrap();
    hs.batch_associate(
        "deals",
        "companies",
        &[AssociationInput {
            from: deal.id.clone(),
            to: company.id.clone(),
            types: vec![AssociationType::DEAL_TO_COMPANY],
        }],
    )
    .await
    .unwrap();
    let read = hs
        .batch_read_associations("deals", "contacts", std::slice::from_ref(&deal.id))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].to[0].to_object_id, contact.id);
    let read = hs
        .batch_read_associations("deals", "companies", std::slice::from_ref(&deal.id))
        .await
        .unwrap();
    assert!(
        read[0].to[0]
            .association_types
            .iter()
            .any(|t| t.type_id == 341)
    );
    hs.batch_archive_associations(
        "deals",
        "contacts",
        &[(deal.id.clone(), vec![contact.id.clone()])],
    )
    .await
    .unwrap();
    let read = hs
        .batch_read_associations("deals", "contacts", std::slice::from_ref(&deal.id))
        .await
        .unwrap();
    assert!(read.iter().all(|r| r.to.is_empty()));

    let pipelines = hs.list_pipelines("deals").await.unwrap();
    assert!(
        pipelines
            .iter()
            .any(|p| p.id == "default" && !p.stages.is_empty())
    );
    let created = hs
        .create_pipeline(
            "deals",
            &NewPipeline {
                label: "Salesforce - Default pipeline".into(),
                display_order: 1,
                stages: vec![NewStage {
                    label: "Prospecting".into(),
                    display_order: 0,
                    metadata: [("probability".to_string(), "0.1".to_string())].into(),
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(created.stages.len(), 1);
    assert!(
        hs.list_pipelines("deals")
            .await
            .unwrap()
            .iter()
            .any(|p| p.id == created.id)
    );

    let owners = hs.list_owners().await.unwrap();
    assert!(!owners.is_empty());
    assert!(owners.iter().all(|o| o.email.is_some()));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn hs_https_with_the_emulator_ca() {
    let emu = emulators(Seed::Empty).await;
    let mut cfg = config(&emu);
    cfg.base_url = emu.hubspot_urls.https.clone();
    cfg.transport.ca_cert_pem = Some(emu.ca_cert_path.clone());
    cfg.transport.ca_cert_only = true;
    let hs = HubSpotClient::new(cfg).unwrap();
    hs.list_page("deals", &[], None, 1).await.unwrap();
    emu.shutdown().await.unwrap();
}

/// The developer API (webhook settings and subscriptions, `?hapikey=`) is the developer
/// account's: its calls take no slot of the portal's limits, so set-up cannot eat into a
/// backfill's 10-second budget.
#[tokio::test]
async fn developer_api_calls_take_nothing_of_the_portals_limits() {
    let emu = emulators(Seed::Empty).await;
    let mut cfg = config(&emu);
    cfg.limits = HubSpotLimits {
        requests_per_interval: 2,
        interval: Duration::from_secs(3_600),
        search_per_second: 1,
        daily_cap: None,
    };
    let hs = HubSpotClient::new(cfg).unwrap();
    let key = dealbridge::crm::Secret::new(emu.hubspot_credentials.developer_api_key.clone());
    let app = emu.hubspot_credentials.app_id;
    // Five developer calls, more than the portal's window holds: none waits for it.
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(60), hs.webhook_subscriptions(app, &key))
            .await
            .expect("a developer call never waits for the portal's window")
            .unwrap();
    }
    assert_eq!(hs.daily_calls(), 0);
    // A CRM call does take a slot.
    hs.list_owners().await.unwrap();
    assert_eq!(hs.daily_calls(), 1);
}
