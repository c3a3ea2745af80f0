//! Salesforce emulator over real HTTP(S), second part: REST calls over HTTPS,
//! the control API's state handling (snapshot round-trip, reset, the
//! multi-currency switch, the recycle-bin horizon behind
//! `earliestDateAvailable`) and `Sforce-Query-Options: batchSize`.

use chrono::{Duration, Utc};
use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const V: &str = "/services/data/v62.0";

struct Sf {
    emu: RunningEmulators,
    client: Client,
    base: String,
    token: String,
}

async fn boot_with(options: EmulatorOptions, https: bool) -> Sf {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = start(options).await.unwrap();
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = if https {
        emu.salesforce_urls.https.clone()
    } else {
        emu.salesforce_urls.http.clone()
    };
    let c = &emu.salesforce_credentials;
    let resp = client
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
            ("username", c.username.as_str()),
            ("password", c.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tok: Value = resp.json().await.unwrap();
    let token = tok["access_token"].as_str().unwrap().to_string();
    Sf {
        emu,
        client,
        base,
        token,
    }
}

async fn boot(seed: Seed) -> Sf {
    boot_with(
        EmulatorOptions {
            seed,
            ..Default::default()
        },
        false,
    )
    .await
}

impl Sf {
    /// An authenticated REST call; the body is parsed as JSON when there is one.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, v)
    }

    async fn query(&self, q: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{V}/query", self.base))
            .query(&[("q", q)])
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{q}: {v}");
        v
    }

    /// Every record of a query, following `nextRecordsUrl`.
    async fn query_all_pages(&self, endpoint: &str, q: &str) -> Vec<Value> {
        let resp = self
            .client
            .get(format!("{}{V}/{endpoint}", self.base))
            .query(&[("q", q)])
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut page: Value = resp.json().await.unwrap();
        let mut out = Vec::new();
        loop {
            out.extend(page["records"].as_array().unwrap().iter().cloned());
            match page["nextRecordsUrl"].as_str() {
                Some(next) => {
                    let next = next.to_string();
                    let (s, v) = self.call(Method::GET, &next, None).await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                    page = v;
                }
                None => break,
            }
        }
        out
    }

    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(
            method,
            format!("{}/__emulator/{path}", self.emu.salesforce_urls.http),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, v)
    }

    async fn count(&self, object: &str) -> u64 {
        self.query(&format!("SELECT COUNT() FROM {object}")).await["totalSize"]
            .as_u64()
            .unwrap()
    }
}

fn sf_datetime(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.000+0000").to_string()
}

fn opp(name: &str) -> Value {
    json!({"Name": name, "StageName": "Prospecting", "CloseDate": "2026-06-30"})
}

#[tokio::test]
async fn rest_calls_work_over_https_with_http2() {
    let sf = boot_with(
        EmulatorOptions {
            seed: Seed::Number(11),
            ..Default::default()
        },
        true,
    )
    .await;
    assert!(sf.base.starts_with("https://localhost:"), "{}", sf.base);

    // Plain GETs, with the limit header, over TLS (HTTP/2 by ALPN).
    let resp = sf
        .client
        .get(format!("{}{V}/sobjects/Opportunity/describe", sf.base))
        .bearer_auth(&sf.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(
        resp.headers()["sforce-limit-info"]
            .to_str()
            .unwrap()
            .starts_with("api-usage=")
    );
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["name"], "Opportunity");

    // Create, update, read back, upsert by external id, delete.
    let (s, created) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(opp("tls deal")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (s, _) = sf
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/{id}"),
            Some(json!({"Amount": 4321})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, r) = sf
        .call(
            Method::GET,
            &format!("{V}/sobjects/Opportunity/{id}?fields=Name,Amount"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["Name"], "tls deal");
    assert_eq!(r["Amount"], 4321.0);
    let (s, u) = sf
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/dealbridge_id__c/hs-123"),
            Some(opp("upserted over tls")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["created"], true);

    // Collections.
    let records: Vec<Value> = (0..5)
        .map(|i| {
            let mut r = opp(&format!("batch {i}"));
            r["attributes"] = json!({"type": "Opportunity"});
            r["dealbridge_id__c"] = json!(format!("hs-b{i}"));
            r
        })
        .collect();
    let (s, v) = sf
        .call(
            Method::PATCH,
            &format!("{V}/composite/sobjects/Opportunity/dealbridge_id__c"),
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert!(
        v.as_array().unwrap().iter().all(|r| r["success"] == true),
        "{v}"
    );

    // A paged query, the locator followed over TLS.
    let rows = sf
        .query_all_pages(
            "query",
            "SELECT Id, Name FROM Opportunity ORDER BY SystemModstamp, Id",
        )
        .await;
    assert_eq!(rows.len(), 3000 + 1 + 1 + 5);

    let (s, _) = sf
        .call(
            Method::DELETE,
            &format!("{V}/sobjects/Opportunity/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = sf
        .call(Method::GET, &format!("{V}/sobjects/Opportunity/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v[0]["errorCode"], "ENTITY_IS_DELETED");
    sf.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn snapshot_round_trip_restores_the_same_data() {
    let sf = boot(Seed::Empty).await;
    let (s, _) = sf
        .control(
            Method::POST,
            "seed",
            Some(json!({"seed": 5, "accounts": 30, "contacts": 60, "opportunities": 300})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Some state that only the snapshot can carry: a deleted row and an external id.
    let all = "SELECT Id, Name, Amount, StageName, CloseDate, AccountId, IsDeleted, dealbridge_id__c, SystemModstamp FROM Opportunity ORDER BY Id";
    let first = sf.query(all).await["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = sf
        .call(
            Method::DELETE,
            &format!("{V}/sobjects/Opportunity/{first}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = sf
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/dealbridge_id__c/hs-777"),
            Some(opp("linked")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, exported) = sf.control(Method::GET, "snapshot", None).await;
    assert_eq!(s, StatusCode::OK);
    let before = sf.query_all_pages("queryAll", all).await;
    assert_eq!(before.len(), 301);
    let contacts_before = sf.count("Contact").await;

    let (s, _) = sf.control(Method::POST, "reset", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(sf.count("Opportunity").await, 0);

    // A broken document is refused and changes nothing.
    let (s, v) = sf
        .control(
            Method::PUT,
            "snapshot",
            Some(json!({"objects": {"Nope": {"records": []}}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("unknown object Nope"),
        "{v}"
    );
    assert_eq!(sf.count("Opportunity").await, 0);

    let (s, _) = sf
        .control(Method::PUT, "snapshot", Some(exported.clone()))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let after = sf.query_all_pages("queryAll", all).await;
    assert_eq!(after, before);
    assert_eq!(sf.count("Contact").await, contacts_before);
    let (_, exported_again) = sf.control(Method::GET, "snapshot", None).await;
    assert_eq!(exported_again, exported);

    // Indexes and id sequences come back too.
    let (s, r) = sf
        .call(
            Method::GET,
            &format!("{V}/sobjects/Opportunity/dealbridge_id__c/hs-777"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["Name"], "linked");
    let (s, v) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(opp("new")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let new_id = v["id"].as_str().unwrap();
    assert!(
        before.iter().all(|r| r["Id"] != new_id),
        "fresh id {new_id}"
    );
    sf.emu.shutdown().await.unwrap();
}

/// Creates a HubSpot deal over HTTP and returns its id.
async fn create_hubspot_deal(sf: &Sf, name: &str) -> String {
    let resp = sf
        .client
        .post(format!("{}/crm/v3/objects/deals", sf.emu.hubspot_urls.http))
        .bearer_auth(&sf.emu.hubspot_credentials.private_app_token)
        .json(&json!({"properties": {"dealname": name, "dealstage": "appointmentscheduled", "pipeline": "default"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// The HubSpot deal `id` as served over HTTP (status, body).
async fn hubspot_deal(sf: &Sf, id: &str) -> (StatusCode, Value) {
    let resp = sf
        .client
        .get(format!(
            "{}/crm/v3/objects/deals/{id}?properties=dealname",
            sf.emu.hubspot_urls.http
        ))
        .bearer_auth(&sf.emu.hubspot_credentials.private_app_token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn snapshot_file_keeps_both_emulators_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("dealbridge-sf-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("org.json");
    let _ = std::fs::remove_file(&path);
    let options = || EmulatorOptions {
        seed: Seed::Empty,
        snapshot: Some(path.clone()),
        ..Default::default()
    };
    let sf = boot_with(options(), false).await;
    let (s, _) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(opp("persisted")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let deal = create_hubspot_deal(&sf, "persisted deal").await;
    let portal_before = sf.emu.hubspot.snapshot();
    sf.emu.shutdown().await.unwrap();
    assert!(path.exists());

    let sf = boot_with(options(), false).await;
    let v = sf.query("SELECT Name FROM Opportunity").await;
    assert_eq!(v["totalSize"], 1);
    assert_eq!(v["records"][0]["Name"], "persisted");
    let (s, v) = hubspot_deal(&sf, &deal).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["dealname"], "persisted deal");
    assert_eq!(sf.emu.hubspot.snapshot(), portal_before);
    // Ids keep counting from where the saved portal left off.
    let next = create_hubspot_deal(&sf, "after restart").await;
    assert_ne!(next, deal);
    sf.emu.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn salesforce_only_snapshot_file_loads_and_hubspot_starts_from_the_seed() {
    let dir = std::env::temp_dir().join(format!("dealbridge-sf-only-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("org.json");
    let sf = boot_with(
        EmulatorOptions {
            seed: Seed::Empty,
            ..Default::default()
        },
        false,
    )
    .await;
    let (s, _) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(opp("older format")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    std::fs::write(&path, sf.emu.salesforce.snapshot().to_string()).unwrap();
    let empty_portal = sf.emu.hubspot.snapshot();
    sf.emu.shutdown().await.unwrap();

    let sf = boot_with(
        EmulatorOptions {
            seed: Seed::Empty,
            snapshot: Some(path.clone()),
            ..Default::default()
        },
        false,
    )
    .await;
    let v = sf.query("SELECT Name FROM Opportunity").await;
    assert_eq!(v["records"][0]["Name"], "older format");
    assert_eq!(sf.emu.hubspot.snapshot(), empty_portal);
    sf.emu.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn snapshot_file_with_a_broken_portal_is_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("dealbridge-bad-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("org.json");
    let sf = boot_with(
        EmulatorOptions {
            seed: Seed::Empty,
            ..Default::default()
        },
        false,
    )
    .await;
    let doc = json!({"salesforce": sf.emu.salesforce.snapshot(), "hubspot": {"objects": 7}});
    sf.emu.shutdown().await.unwrap();
    std::fs::write(&path, doc.to_string()).unwrap();
    let err = start(EmulatorOptions {
        snapshot: Some(path.clone()),
        ..Default::default()
    })
    .await
    .err()
    .expect("a broken portal is refused");
    let text = err.to_string();
    assert!(text.starts_with("invalid snapshot"), "{text}");
    assert!(text.contains("hubspot"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn reset_empties_the_org_and_clears_faults_and_counters() {
    let sf = boot(Seed::Demo).await;
    assert!(sf.count("Opportunity").await > 0);
    let (s, _) = sf
        .control(
            Method::PUT,
            "faults",
            Some(json!({"error_rates": [{"status": 503, "rate": 1.0, "path_prefix": "/services/data/v62.0/limits"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = sf.call(Method::GET, &format!("{V}/limits"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    let (s, _) = sf.control(Method::POST, "reset", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, faults) = sf.control(Method::GET, "faults", None).await;
    assert_eq!(faults["error_rates"], json!([]));
    let (_, acc) = sf.control(Method::GET, "requests", None).await;
    assert_eq!(acc["total"], 0);
    assert_eq!(acc["calls"], json!([]));

    // Data gone, metadata and users kept, the session still valid.
    for object in [
        "Opportunity",
        "Account",
        "Contact",
        "OpportunityContactRole",
    ] {
        assert_eq!(sf.count(object).await, 0, "{object}");
    }
    assert!(sf.count("User").await > 1);
    assert_eq!(
        sf.query("SELECT Id FROM RecordType WHERE SobjectType = 'Opportunity'")
            .await["totalSize"],
        2
    );
    assert!(sf.count("OpportunityStage").await >= 10);
    let (s, _) = sf.call(Method::GET, &format!("{V}/limits"), None).await;
    assert_eq!(s, StatusCode::OK);
    sf.emu.shutdown().await.unwrap();
}

fn field_names(describe: &Value) -> Vec<String> {
    describe["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn currency_iso_code_exists_only_with_multi_currency_on() {
    let sf = boot(Seed::Demo).await;
    let describe = format!("{V}/sobjects/Opportunity/describe");
    let (_, d) = sf.call(Method::GET, &describe, None).await;
    assert!(!field_names(&d).contains(&"CurrencyIsoCode".to_string()));
    let some = sf.query("SELECT Id FROM Opportunity LIMIT 1").await["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let record = format!("{V}/sobjects/Opportunity/{some}");
    let (_, r) = sf.call(Method::GET, &record, None).await;
    assert!(r.get("CurrencyIsoCode").is_none(), "{r}");
    let (s, v) = sf
        .call(
            Method::GET,
            &format!("{V}/query?q=SELECT+CurrencyIsoCode+FROM+Opportunity"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_FIELD");
    let mut with_currency = opp("euro deal");
    with_currency["CurrencyIsoCode"] = json!("EUR");
    let (s, v) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(with_currency.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_FIELD");

    // Switched on: the field is described, rendered, queryable and writable.
    let (s, v) = sf
        .control(
            Method::PUT,
            "settings",
            Some(json!({"multi_currency": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["multi_currency"], true);
    let (_, d) = sf.call(Method::GET, &describe, None).await;
    let field = d["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "CurrencyIsoCode")
        .expect("CurrencyIsoCode described")
        .clone();
    assert_eq!(field["type"], "picklist");
    assert!(
        field["picklistValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["value"] == "EUR")
    );
    let (_, r) = sf.call(Method::GET, &record, None).await;
    assert_eq!(r["CurrencyIsoCode"], "USD");
    let (s, v) = sf
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(with_currency),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let q = sf
        .query(&format!(
            "SELECT CurrencyIsoCode FROM Opportunity WHERE Id = '{id}'"
        ))
        .await;
    assert_eq!(q["records"][0]["CurrencyIsoCode"], "EUR");
    let (s, v) = sf
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/{id}"),
            Some(json!({"CurrencyIsoCode": "XXX"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");

    // And off again.
    sf.control(
        Method::PUT,
        "settings",
        Some(json!({"multi_currency": false})),
    )
    .await;
    let (_, d) = sf.call(Method::GET, &describe, None).await;
    assert!(!field_names(&d).contains(&"CurrencyIsoCode".to_string()));
    let (s, v) = sf
        .control(
            Method::PUT,
            "settings",
            Some(json!({"multi_curency": true})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("multi_curency"),
        "{v}"
    );
    sf.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn multi_currency_start_option_describes_currency_from_the_start() {
    let sf = boot_with(
        EmulatorOptions {
            seed: Seed::Demo,
            salesforce_multi_currency: true,
            ..Default::default()
        },
        false,
    )
    .await;
    let (_, d) = sf
        .call(Method::GET, &format!("{V}/sobjects/Account/describe"), None)
        .await;
    assert!(field_names(&d).contains(&"CurrencyIsoCode".to_string()));
    let v = sf
        .query("SELECT Id, CurrencyIsoCode FROM Opportunity LIMIT 5")
        .await;
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["CurrencyIsoCode"] == "USD"),
        "{v}"
    );
    sf.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleted_reports_earliest_date_available_and_purge_moves_it() {
    let sf = boot(Seed::Empty).await;
    sf.control(
        Method::POST,
        "seed",
        Some(json!({"seed": 9, "accounts": 5, "contacts": 5, "opportunities": 20})),
    )
    .await;
    // Deletions seen by `deleted/` are from past minutes only, so put one
    // two days back (and the recycle-bin horizon five days back) through a snapshot.
    let (_, mut snap) = sf.control(Method::GET, "snapshot", None).await;
    let now = Utc::now();
    let deleted_at = sf_datetime(now - Duration::days(2));
    let horizon = sf_datetime(now - Duration::days(5));
    let rec = &mut snap["objects"]["Opportunity"]["records"][3];
    let victim = rec["Id"].as_str().unwrap().to_string();
    rec["IsDeleted"] = json!(true);
    rec["__deletedAt"] = json!(deleted_at);
    snap["earliestDeletedAvailable"] = json!(horizon);
    let (s, _) = sf.control(Method::PUT, "snapshot", Some(snap)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let deleted = |start: chrono::DateTime<Utc>| {
        let url = format!("{}{V}/sobjects/Opportunity/deleted/", sf.base);
        let req = sf
            .client
            .get(url)
            .query(&[
                ("start", sf_datetime(start)),
                ("end", sf_datetime(now + Duration::minutes(5))),
            ])
            .bearer_auth(&sf.token);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    let v = deleted(now - Duration::days(3)).await;
    assert_eq!(v["earliestDateAvailable"], horizon);
    assert_eq!(
        v["deletedRecords"],
        json!([{"id": victim, "deletedDate": deleted_at}])
    );
    // The window is cut at now, in whole minutes.
    let covered = v["latestDateCovered"].as_str().unwrap();
    assert!(covered.ends_with(":00.000+0000"), "{covered}");
    assert!(covered <= sf_datetime(Utc::now()).as_str());
    // A window starting before the horizon: earliestDateAvailable is later than the
    // start, which tells the client to reconcile in full.
    let v = deleted(now - Duration::days(6)).await;
    assert_eq!(v["earliestDateAvailable"], horizon);
    assert!(
        v["earliestDateAvailable"].as_str().unwrap()
            > sf_datetime(now - Duration::days(6)).as_str()
    );

    // Emptying the recycle bin forgets the row and moves the horizon to now.
    let (s, _) = sf.control(Method::POST, "purge-deleted", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let v = deleted(now - Duration::days(3)).await;
    assert_eq!(v["deletedRecords"], json!([]));
    let earliest = v["earliestDateAvailable"].as_str().unwrap();
    assert!(earliest >= sf_datetime(now).as_str(), "{earliest}");
    let all = sf
        .query_all_pages(
            "queryAll",
            &format!("SELECT Id FROM Opportunity WHERE Id = '{victim}'"),
        )
        .await;
    assert!(all.is_empty());
    sf.emu.shutdown().await.unwrap();
}

async fn paged(sf: &Sf, options: Option<&str>) -> Vec<usize> {
    let mut req = sf
        .client
        .get(format!("{}{V}/query", sf.base))
        .query(&[("q", "SELECT Id FROM Opportunity ORDER BY Id")])
        .bearer_auth(&sf.token);
    if let Some(o) = options {
        req = req.header("Sforce-Query-Options", o);
    }
    let mut page: Value = req.send().await.unwrap().json().await.unwrap();
    let mut sizes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let records = page["records"].as_array().unwrap();
        sizes.push(records.len());
        for r in records {
            assert!(
                seen.insert(r["Id"].as_str().unwrap().to_string()),
                "no repeats"
            );
        }
        match page["nextRecordsUrl"].as_str() {
            Some(next) => {
                let next = next.to_string();
                page = sf.call(Method::GET, &next, None).await.1;
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 3000);
    sizes
}

#[tokio::test]
async fn query_options_batch_size_sets_the_page_size() {
    let sf = boot(Seed::Number(4)).await;
    assert_eq!(paged(&sf, None).await, vec![2000, 1000]);
    assert_eq!(paged(&sf, Some("batchSize=500")).await, vec![500; 6]);
    // Salesforce bounds it to 200..=2000.
    assert_eq!(paged(&sf, Some("batchSize=100")).await, vec![200; 15]);
    assert_eq!(paged(&sf, Some("batchSize=5000")).await, vec![2000, 1000]);
    // Not a number: ignored, default pages.
    assert_eq!(paged(&sf, Some("batchSize=lots")).await, vec![2000, 1000]);
    // The locator carries the page size: nextRecordsUrl counts in batches.
    let resp = sf
        .client
        .get(format!("{}{V}/query", sf.base))
        .query(&[("q", "SELECT Id FROM Opportunity")])
        .header("Sforce-Query-Options", "batchSize=750")
        .bearer_auth(&sf.token)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["nextRecordsUrl"].as_str().unwrap().ends_with("-750"),
        "{v}"
    );
    assert_eq!(v["totalSize"], 3000);
    sf.emu.shutdown().await.unwrap();
}
