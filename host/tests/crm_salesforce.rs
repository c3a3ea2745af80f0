//! The Salesforce client against the Salesforce emulator over real HTTP(S): login grants,
//! session refresh and its single retry, SOQL paging, retries of 5xx and none of 4xx,
//! collections with partial failures, upserts, metadata and the API budget.

use std::time::Duration;

use dealbridge::crm::ErrorClass;
use dealbridge::crm::governor::{Allocation, Backoff, BudgetConfig, CallUse};
use dealbridge::crm::salesforce::types::{QueryPage, SObject};
use dealbridge::crm::salesforce::{
    Fields, QueryScope, SalesforceClient, SalesforceConfig, SalesforceCredentials, SalesforceError,
};
use dealbridge::crm::{RetryPolicy, Secret};
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

fn password_creds(emu: &RunningEmulators) -> SalesforceCredentials {
    let c = &emu.salesforce_credentials;
    SalesforceCredentials::Password {
        client_id: c.client_id.clone(),
        client_secret: Secret::new(c.client_secret.clone()),
        username: c.username.clone(),
        password: Secret::new(format!("{}{}", c.password, c.security_token)),
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_transient_retries: 2,
        backoff: Backoff {
            base: Duration::from_millis(2),
            max: Duration::from_millis(10),
        },
        ..RetryPolicy::default()
    }
}

fn client(emu: &RunningEmulators) -> SalesforceClient {
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.http.clone(), password_creds(emu));
    cfg.retry = fast_retries();
    SalesforceClient::new(cfg).expect("client")
}

async fn set_faults(base: &str, profile: Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .put(format!("{base}/__emulator/faults"))
        .json(&profile)
        .send()
        .await
        .expect("fault profile sent");
    assert!(
        resp.status().is_success(),
        "fault profile refused: {}",
        resp.text().await.unwrap_or_default()
    );
}

fn opp(name: &str, stage: Option<&str>) -> Fields {
    let mut f = Fields::new();
    f.insert("Name".into(), json!(name));
    if let Some(stage) = stage {
        f.insert("StageName".into(), json!(stage));
    }
    f.insert("CloseDate".into(), json!("2026-06-30"));
    f
}

#[tokio::test]
async fn sf_query_follows_next_records_url_until_done() {
    let emu = emulators(Seed::Demo).await;
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.http.clone(), password_creds(&emu));
    cfg.query_batch_size = Some(500);
    let sf = SalesforceClient::new(cfg).unwrap();
    let count: QueryPage<SObject> = sf
        .query_page("SELECT COUNT() FROM Opportunity", QueryScope::Live)
        .await
        .unwrap();
    assert!(count.total_size > 1000, "demo org has many opportunities");
    let rows = sf
        .query(
            "SELECT Id, Name, StageName FROM Opportunity",
            QueryScope::Live,
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, count.total_size);
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "no row twice");
    assert!(ids.iter().all(|id| id.len() == 18 && id.starts_with("006")));
    let m = sf.metrics();
    // One COUNT() plus ceil(total / 500) pages.
    let pages = count.total_size.div_ceil(500);
    assert_eq!(m.calls_with("sf.query", "200"), 1 + pages);
    assert_eq!(m.token_refreshes, 1);
    let usage = sf.api_usage().expect("Sforce-Limit-Info parsed");
    assert!(usage.used >= 1 && usage.limit > usage.used);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_expired_session_is_refreshed_and_the_call_retried_once() {
    let emu = emulators(Seed::Demo).await;
    let sf = client(&emu);
    // Tokens issued now expire at once.
    set_faults(
        &emu.salesforce_urls.http,
        json!({ "token_lifetime_secs": 0 }),
    )
    .await;
    sf.connect().await.unwrap();
    // New tokens live long again; the one the client holds is expired.
    set_faults(&emu.salesforce_urls.http, json!({})).await;
    let users = sf.users().await.unwrap();
    assert!(!users.is_empty());
    let m = sf.metrics();
    assert_eq!(m.token_refreshes, 2, "login + one refresh");
    assert_eq!(m.calls_with("sf.query", "401"), 1);
    assert_eq!(m.calls_with("sf.query", "200"), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_session_refresh_is_tried_only_once() {
    let emu = emulators(Seed::Demo).await;
    let sf = client(&emu);
    set_faults(
        &emu.salesforce_urls.http,
        json!({ "token_lifetime_secs": 0 }),
    )
    .await;
    let err = sf.users().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.code(), Some("INVALID_SESSION_ID"));
    assert_eq!(err.class(), ErrorClass::Auth);
    let m = sf.metrics();
    assert_eq!(m.token_refreshes, 2);
    assert_eq!(m.calls_with("sf.query", "401"), 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_bad_credentials_are_an_oauth_error() {
    let emu = emulators(Seed::Empty).await;
    let c = &emu.salesforce_credentials;
    let sf = SalesforceClient::new(SalesforceConfig::new(
        emu.salesforce_urls.http.clone(),
        SalesforceCredentials::ClientCredentials {
            client_id: c.client_id.clone(),
            client_secret: Secret::new("wrong"),
        },
    ))
    .unwrap();
    let err = sf.connect().await.unwrap_err();
    assert!(
        matches!(
            err,
            SalesforceError::OAuth {
                status: 400 | 401,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(!format!("{err:?}").contains(&c.client_secret));
    // The other grants work.
    let sf = SalesforceClient::new(SalesforceConfig::new(
        emu.salesforce_urls.http.clone(),
        SalesforceCredentials::RefreshToken {
            client_id: c.client_id.clone(),
            client_secret: Some(Secret::new(c.client_secret.clone())),
            refresh_token: Secret::new(c.refresh_token.clone()),
        },
    ))
    .unwrap();
    sf.connect().await.unwrap();
    let sf = SalesforceClient::new(SalesforceConfig::new(
        emu.salesforce_urls.http.clone(),
        SalesforceCredentials::ClientCredentials {
            client_id: c.client_id.clone(),
            client_secret: Secret::new(c.client_secret.clone()),
        },
    ))
    .unwrap();
    assert!(sf.limits().await.unwrap().daily_api_requests.max > 0);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_5xx_is_retried_with_backoff_and_4xx_is_not() {
    let emu = emulators(Seed::Empty).await;
    let sf = client(&emu);
    sf.connect().await.unwrap();
    set_faults(
        &emu.salesforce_urls.http,
        json!({ "error_rates": [{ "status": 503, "rate": 1.0, "path_prefix": "/services/data" }] }),
    )
    .await;
    let err = sf.users().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(
        sf.metrics().calls_with("sf.query", "503"),
        3,
        "first try + 2 retries"
    );

    set_faults(
        &emu.salesforce_urls.http,
        json!({ "error_rates": [{ "status": 400, "rate": 1.0, "path_prefix": "/services/data" }] }),
    )
    .await;
    let err = sf.users().await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(
        sf.metrics().calls_with("sf.query", "400"),
        1,
        "a 4xx is not retried"
    );

    // A create (not idempotent) is not resent after a 5xx.
    set_faults(
        &emu.salesforce_urls.http,
        json!({ "error_rates": [{ "status": 500, "rate": 1.0, "path_prefix": "/services/data" }] }),
    )
    .await;
    let err = sf
        .create("Opportunity", &opp("x", Some("Prospecting")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(sf.metrics().calls_to("sf.sobject.create"), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_malformed_query_is_a_bad_request_not_retried() {
    let emu = emulators(Seed::Empty).await;
    let sf = client(&emu);
    let err = sf
        .query("SELECT FROM WHERE", QueryScope::Live)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("MALFORMED_QUERY"));
    assert_eq!(err.class(), ErrorClass::BadRequest);
    let err = sf
        .query("SELECT NoSuchField__c FROM Opportunity", QueryScope::Live)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_FIELD"));
    assert_eq!(sf.metrics().calls_to("sf.query"), 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_collections_report_partial_failures_per_record() {
    let emu = emulators(Seed::Empty).await;
    let sf = client(&emu);
    let results = sf
        .create_many(
            "Opportunity",
            &[
                opp("A", Some("Prospecting")),
                opp("B", None),
                opp("C", Some("No Such Stage")),
                opp("D", Some("Prospecting")),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[0].success && results[3].success);
    assert!(
        results[0]
            .id
            .as_deref()
            .is_some_and(|id| id.len() == 18 && id.starts_with("006"))
    );
    assert_eq!(results[1].errors[0].status_code, "REQUIRED_FIELD_MISSING");
    assert_eq!(results[1].error_class(), Some(ErrorClass::Validation));
    assert_eq!(results[2].error_class(), Some(ErrorClass::PicklistMismatch));

    // All or none: one failure rolls the others back.
    let results = sf
        .create_many(
            "Opportunity",
            &[opp("E", Some("Prospecting")), opp("F", None)],
            true,
        )
        .await
        .unwrap();
    assert!(!results[0].success);
    assert_eq!(results[0].error_class(), Some(ErrorClass::RolledBack));

    // Update, retrieve, delete by id.
    let a = results_id(&sf, "A").await;
    let mut change = Fields::new();
    change.insert("Amount".into(), json!(1234.5));
    let upd = sf
        .update_many("Opportunity", &[(a.clone(), change)], false)
        .await
        .unwrap();
    assert!(upd[0].success, "{upd:?}");
    let rows = sf
        .retrieve_many("Opportunity", std::slice::from_ref(&a), &["Id", "Amount"])
        .await
        .unwrap();
    assert_eq!(rows[0].as_ref().unwrap().fields["Amount"], json!(1234.5));
    let del = sf
        .delete_many(std::slice::from_ref(&a), false)
        .await
        .unwrap();
    assert!(del[0].success);
    let deleted = sf
        .query(
            &format!("SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{a}'"),
            QueryScope::IncludeDeleted,
        )
        .await
        .unwrap();
    assert_eq!(deleted[0].fields["IsDeleted"], json!(true));
    emu.shutdown().await.unwrap();
}

async fn results_id(sf: &SalesforceClient, name: &str) -> String {
    let rows = sf
        .query(
            &format!("SELECT Id FROM Opportunity WHERE Name = '{name}'"),
            QueryScope::Live,
        )
        .await
        .unwrap();
    rows[0].id().unwrap().to_string()
}

#[tokio::test]
async fn sf_upserts_on_an_external_id_do_not_duplicate() {
    let emu = emulators(Seed::Empty).await;
    let sf = client(&emu);
    let first = sf
        .upsert(
            "Opportunity",
            "dealbridge_id__c",
            "hs-1",
            &opp("One", Some("Prospecting")),
        )
        .await
        .unwrap();
    assert!(first.created);
    let again = sf
        .upsert(
            "Opportunity",
            "dealbridge_id__c",
            "hs-1",
            &opp("One v2", Some("Prospecting")),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.id, first.id);

    let mut a = opp("Two", Some("Prospecting"));
    a.insert("dealbridge_id__c".into(), json!("hs-2"));
    let mut b = opp("One v3", Some("Prospecting"));
    b.insert("dealbridge_id__c".into(), json!("hs-1"));
    let results = sf
        .upsert_many("Opportunity", "dealbridge_id__c", &[a, b], false)
        .await
        .unwrap();
    assert_eq!(results[0].created, Some(true));
    assert_eq!(results[1].created, Some(false));
    assert_eq!(results[1].id, Some(first.id.clone()));
    let got = sf
        .get("Opportunity", &first.id, Some(&["Name"]))
        .await
        .unwrap();
    assert_eq!(got.str_field("Name"), Some("One v3"));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_updated_and_deleted_cover_whole_minutes_only() {
    use dealbridge::crm::salesforce::types::parse_datetime;
    let emu = emulators(Seed::Empty).await;
    let sf = client(&emu);
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let id = sf
        .create("Opportunity", &opp("U", Some("Prospecting")))
        .await
        .unwrap();
    let other = sf
        .create("Opportunity", &opp("V", Some("Prospecting")))
        .await
        .unwrap();
    sf.delete("Opportunity", &other).await.unwrap();
    let end = chrono::Utc::now() + chrono::Duration::minutes(1);
    // Salesforce covers whole minutes up to now: changes of the current minute are not
    // reported yet (the engine needs SOQL on SystemModstamp for second-level latency).
    let updated = sf.updated("Opportunity", start, end).await.unwrap();
    let covered = parse_datetime(&updated.latest_date_covered).expect("a Salesforce datetime");
    assert!(covered <= chrono::Utc::now());
    assert_eq!(covered.timestamp() % 60, 0);
    assert!(!updated.ids.contains(&id));
    let deleted = sf.deleted("Opportunity", start, end).await.unwrap();
    assert!(!deleted.deleted_records.iter().any(|d| d.id == other));
    assert!(
        !deleted.needs_full_reconcile(start)
            || parse_datetime(&deleted.earliest_date_available).is_some()
    );
    // A window in the wrong order is the documented error, not retried.
    let err = sf.updated("Opportunity", end, start).await.unwrap_err();
    assert_eq!(err.code(), Some("INVALID_REPLICATION_DATE"));
    assert_eq!(err.class(), ErrorClass::BadRequest);
    assert_eq!(sf.metrics().calls_with("sf.updated", "400"), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_describe_and_metadata_queries() {
    let emu = emulators(Seed::Demo).await;
    let sf = client(&emu);
    let d = sf.describe("Opportunity").await.unwrap();
    let stage = d.field("StageName").expect("StageName");
    assert_eq!(stage.field_type, "picklist");
    assert!(!stage.picklist_values.is_empty());
    assert!(d.field("dealbridge_id__c").is_some_and(|f| f.external_id));
    assert!(!sf.record_types("Opportunity").await.unwrap().is_empty());
    let stages = sf.opportunity_stages().await.unwrap();
    assert!(stages.iter().any(|s| s.is_closed && s.is_won));
    let users = sf.users().await.unwrap();
    assert!(users.iter().all(|u| u.id.starts_with("005")));
    let err = sf.describe("NoSuchObject__c").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_https_with_the_emulator_ca() {
    let emu = emulators(Seed::Empty).await;
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.https.clone(), password_creds(&emu));
    cfg.transport.ca_cert_pem = Some(emu.ca_cert_path.clone());
    cfg.transport.ca_cert_only = true;
    let sf = SalesforceClient::new(cfg).unwrap();
    assert!(sf.limits().await.unwrap().daily_api_requests.max > 0);
    // Without the CA the handshake fails: a transport error, not a panic.
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.https.clone(), password_creds(&emu));
    cfg.retry = fast_retries();
    let err = SalesforceClient::new(cfg)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, SalesforceError::Transport { .. }), "{err}");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sf_budget_refuses_retries_at_75_percent_and_all_calls_at_the_allocation() {
    let emu = emulators(Seed::Empty).await;
    let probe = client(&emu);
    probe.users().await.unwrap();
    let before = probe.api_usage().expect("Sforce-Limit-Info").used;
    let allocation = before + 8;
    let mut cfg = SalesforceConfig::new(emu.salesforce_urls.http.clone(), password_creds(&emu));
    cfg.budget = BudgetConfig {
        allocation: Allocation::Calls(allocation),
        retry_stop_fraction: 0.75,
    };
    let sf = SalesforceClient::new(cfg).unwrap();
    let retry_threshold = (allocation as f64 * 0.75).floor() as u64;
    let mut refused = None;
    for _ in 0..20 {
        match sf.users().await {
            Ok(_) => {
                let used = sf.api_usage().unwrap().used;
                // Retries are allowed exactly while usage is under 75% of the allocation.
                assert_eq!(
                    sf.budget_check(CallUse::Retry).is_ok(),
                    used < retry_threshold,
                    "used {used}, threshold {retry_threshold}"
                );
                assert!(used <= allocation);
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the allocation runs out");
    assert!(matches!(err, SalesforceError::Budget(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::RateLimit);
    assert!(sf.api_usage().unwrap().used >= allocation);
    let calls = sf.metrics().calls_to("sf.query");
    assert!(sf.users().await.is_err());
    assert_eq!(
        sf.metrics().calls_to("sf.query"),
        calls,
        "refused without a request"
    );
    emu.shutdown().await.unwrap();
}
