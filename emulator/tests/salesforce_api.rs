//! Salesforce emulator over real HTTP(S): auth, CRUD, query paging,
//! collections, describe, limits, replication and fault profiles.

use dealbridge_emulator::{EmulatorOptions, RunningEmulators, Seed, start};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const V: &str = "/services/data/v62.0";

async fn boot(seed: Seed) -> (RunningEmulators, Client, String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = start(EmulatorOptions {
        seed,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = emu.salesforce_urls.http.clone();
    let token = password_login(&client, &emu, &base).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    (emu, client, base, token)
}

async fn password_login(client: &Client, emu: &RunningEmulators, base: &str) -> Value {
    let c = &emu.salesforce_credentials;
    let password = format!("{}{}", c.password, c.security_token);
    let resp = client
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("username", &c.username),
            ("password", &password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

#[tokio::test]
async fn oauth_grants_and_https() {
    let (emu, client, _base, _token) = boot(Seed::Empty).await;
    let https = emu.salesforce_urls.https.clone();
    let tok = password_login(&client, &emu, &https).await;
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["instance_url"], https);
    assert!(tok["issued_at"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(tok["signature"].as_str().is_some_and(|s| !s.is_empty()));
    let c = &emu.salesforce_credentials;
    let cc: Value = client
        .post(format!("{https}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cc["access_token"].is_string());
    let rt = client
        .post(format!("{https}/services/oauth2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &c.client_id),
            ("refresh_token", &c.refresh_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(rt.status(), StatusCode::OK);
    let bad = client
        .post(format!("{https}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("username", &c.username),
            ("password", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    // No token / wrong token: INVALID_SESSION_ID.
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{https}{V}/limits"),
        "garbage",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v[0]["errorCode"], "INVALID_SESSION_ID");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn identity_url_and_token_revocation() {
    let (emu, client, _base, _token) = boot(Seed::Empty).await;
    let https = emu.salesforce_urls.https.clone();
    let tok = password_login(&client, &emu, &https).await;
    let id_url = tok["id"].as_str().unwrap().to_string();
    let access = tok["access_token"].as_str().unwrap();
    assert!(id_url.starts_with(&format!("{https}/id/00D")), "{id_url}");
    let (s, who) = call(&client, reqwest::Method::GET, id_url.clone(), access, None).await;
    assert_eq!(s, StatusCode::OK, "{who}");
    assert_eq!(who["id"], json!(id_url));
    assert_eq!(who["username"], json!(emu.salesforce_credentials.username));
    assert!(id_url.ends_with(who["user_id"].as_str().unwrap()));
    assert_eq!(who["active"], true);
    assert_eq!(
        who["urls"]["rest"],
        json!(format!("{https}/services/data/v{{version}}/"))
    );
    let (_, latest) = call(
        &client,
        reqwest::Method::GET,
        format!("{id_url}?version=latest"),
        access,
        None,
    )
    .await;
    assert_eq!(latest["urls"]["rest"], json!(format!("{https}{V}/")));
    for (url, token, refusal) in [
        (id_url.clone(), "garbage", "Bad_OAuth_Token"),
        (
            format!(
                "{https}/id/00D000000000000AAA/{}",
                who["user_id"].as_str().unwrap()
            ),
            access,
            "Bad_Id",
        ),
    ] {
        let resp = client.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.text().await.unwrap(), refusal);
    }
    // Revoking the access token ends the session; revoking it again is invalid_token.
    for status in [StatusCode::OK, StatusCode::BAD_REQUEST] {
        let resp = client
            .post(format!("{https}/services/oauth2/revoke"))
            .form(&[("token", access)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        if status == StatusCode::BAD_REQUEST {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"], "invalid_token");
        }
    }
    let after = client.get(id_url).bearer_auth(access).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::FORBIDDEN);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn soap_login_returns_session_and_server_url() {
    let (emu, client, base, _) = boot(Seed::Empty).await;
    let c = &emu.salesforce_credentials;
    let env = format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>{}</n1:username><n1:password>{}{}</n1:password></n1:login></env:Body></env:Envelope>"#,
        c.username, c.password, c.security_token
    );
    let resp = client
        .post(format!("{base}/services/Soap/u/62.0"))
        .header("SOAPAction", "login")
        .header("content-type", "text/xml")
        .body(env)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = resp.text().await.unwrap();
    let session = xml
        .split("<sessionId>")
        .nth(1)
        .unwrap()
        .split("</sessionId>")
        .next()
        .unwrap()
        .to_string();
    assert!(xml.contains(&format!("<serverUrl>{base}/services/Soap/u/62.0/")));
    let (s, _) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &session,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let bad = client
        .post(format!("{base}/services/Soap/u/62.0"))
        .body("<login><username>x</username><password>y</password></login>")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>")
    );
    // `logout` ends the session named in the SessionHeader; a second one is a fault.
    let logout = format!(
        r#"<se:Envelope xmlns:se="http://schemas.xmlsoap.org/soap/envelope/"><se:Header><SessionHeader xmlns="urn:partner.soap.sforce.com"><sessionId>{session}</sessionId></SessionHeader></se:Header><se:Body><logout xmlns="urn:partner.soap.sforce.com"/></se:Body></se:Envelope>"#
    );
    for (status, needle) in [
        (StatusCode::OK, "<logoutResponse/>"),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<sf:exceptionCode>INVALID_SESSION_ID</sf:exceptionCode>",
        ),
    ] {
        let resp = client
            .post(format!("{base}/services/Soap/u/62.0"))
            .header("content-type", "text/xml")
            .body(logout.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        assert!(resp.text().await.unwrap().contains(needle));
    }
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &session,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v[0]["errorCode"], "INVALID_SESSION_ID");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn versions_resources_limits_and_limit_header() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let v: Value = client
        .get(format!("{base}/services/data/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["version"], "62.0");
    assert_eq!(v[0]["url"], V);
    let resp = client
        .get(format!("{base}{V}/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let info = resp
        .headers()
        .get("sforce-limit-info")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(info.starts_with("api-usage=1/"), "{info}");
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["query"], format!("{V}/query"));
    let (_, l) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &token,
        None,
    )
    .await;
    assert_eq!(l["DailyApiRequests"]["Max"], 1_000_000);
    assert_eq!(l["DailyApiRequests"]["Remaining"], 1_000_000 - 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn crud_validation_and_upsert() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let url = |p: &str| format!("{base}{V}{p}");
    let (s, v) = call(
        &client,
        reqwest::Method::POST,
        url("/sobjects/Account/"),
        &token,
        Some(json!({"Name": "Acme", "dealbridge_id__c": "hs-1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acc = v["id"].as_str().unwrap().to_string();
    assert!(acc.starts_with("001") && acc.len() == 18);
    let (s, v) = call(&client, reqwest::Method::POST, url("/sobjects/Opportunity"), &token, Some(json!({"Name": "Big", "StageName": "Closed Won", "CloseDate": "2026-05-20", "AccountId": acc, "Amount": 1000}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let opp = v["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        url(&format!("/sobjects/Opportunity/{opp}")),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["IsClosed"], true);
    assert_eq!(v["IsWon"], true);
    assert_eq!(v["Probability"], 100.0);
    assert_eq!(v["attributes"]["type"], "Opportunity");
    assert!(v["SystemModstamp"].as_str().unwrap().ends_with(".000+0000"));
    assert!(v.get("CurrencyIsoCode").is_none(), "single-currency org");
    // 15-char id works too.
    let (s, _) = call(
        &client,
        reqwest::Method::GET,
        url(&format!("/sobjects/Opportunity/{}?fields=Name", &opp[..15])),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let cases = [
        (
            json!({"Name": "x", "CloseDate": "2026-01-01"}),
            "REQUIRED_FIELD_MISSING",
        ),
        (
            json!({"Name": "x", "StageName": "Nope", "CloseDate": "2026-01-01"}),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "2026-01-01", "Bogus__c": 1}),
            "INVALID_FIELD",
        ),
        (
            json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "not a date"}),
            "JSON_PARSER_ERROR",
        ),
        (
            json!({"Name": "x".repeat(121), "StageName": "Prospecting", "CloseDate": "2026-01-01"}),
            "STRING_TOO_LONG",
        ),
        (
            json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "2026-01-01", "IsWon": true}),
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            json!({"Id": opp, "Name": "x", "StageName": "Prospecting", "CloseDate": "2026-01-01"}),
            "INVALID_FIELD",
        ),
        (
            json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "2026-01-01", "Amount": "lots"}),
            "JSON_PARSER_ERROR",
        ),
    ];
    for (body, code) in cases {
        let (s, v) = call(
            &client,
            reqwest::Method::POST,
            url("/sobjects/Opportunity/"),
            &token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v[0]["errorCode"], code, "{body} -> {v}");
    }
    // Bad JSON.
    let resp = client
        .post(url("/sobjects/Opportunity/"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v[0]["errorCode"], "JSON_PARSER_ERROR");

    // Update, upsert, delete.
    let (s, _) = call(
        &client,
        reqwest::Method::PATCH,
        url(&format!("/sobjects/Opportunity/{opp}")),
        &token,
        Some(json!({"StageName": "Prospecting"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = call(
        &client,
        reqwest::Method::GET,
        url(&format!(
            "/sobjects/Opportunity/{opp}?fields=IsClosed,Probability"
        )),
        &token,
        None,
    )
    .await;
    assert_eq!(v["IsClosed"], false);
    assert_eq!(v["Probability"], 10.0);
    let (s, v) = call(
        &client,
        reqwest::Method::PATCH,
        url("/sobjects/Opportunity/dealbridge_id__c/hs-9"),
        &token,
        Some(json!({"Name": "U", "StageName": "Prospecting", "CloseDate": "2026-02-02"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["created"], true);
    let (s, v2) = call(
        &client,
        reqwest::Method::PATCH,
        url("/sobjects/Opportunity/dealbridge_id__c/hs-9"),
        &token,
        Some(json!({"Amount": 5})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v2["created"], false);
    assert_eq!(v2["id"], v["id"]);
    let (s, _) = call(
        &client,
        reqwest::Method::DELETE,
        url(&format!("/sobjects/Opportunity/{opp}")),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        url(&format!("/sobjects/Opportunity/{opp}")),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v[0]["errorCode"], "ENTITY_IS_DELETED");
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        url("/sobjects/Opportunity/006000000000000"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v[0]["errorCode"], "NOT_FOUND");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_primary_contact_role_per_opportunity() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let url = |p: &str| format!("{base}{V}{p}");
    let (_, o) = call(
        &client,
        reqwest::Method::POST,
        url("/sobjects/Opportunity/"),
        &token,
        Some(json!({"Name": "R", "StageName": "Prospecting", "CloseDate": "2026-01-01"})),
    )
    .await;
    let opp = o["id"].as_str().unwrap();
    let mut roles = Vec::new();
    for last in ["A", "B"] {
        let (_, c) = call(
            &client,
            reqwest::Method::POST,
            url("/sobjects/Contact/"),
            &token,
            Some(json!({"LastName": last})),
        )
        .await;
        let (s, r) = call(
            &client,
            reqwest::Method::POST,
            url("/sobjects/OpportunityContactRole/"),
            &token,
            Some(json!({"OpportunityId": opp, "ContactId": c["id"], "IsPrimary": true})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        roles.push(r["id"].as_str().unwrap().to_string());
    }
    let q = format!(
        "SELECT Id, IsPrimary FROM OpportunityContactRole WHERE OpportunityId = '{opp}' AND IsPrimary = true"
    );
    let (_, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{}?q={}", url("/query"), urlencode(&q)),
        &token,
        None,
    )
    .await;
    assert_eq!(v["totalSize"], 1);
    assert_eq!(v["records"][0]["Id"], roles[1]);
    // OpportunityId is fixed after create.
    let (s, v) = call(
        &client,
        reqwest::Method::PATCH,
        url(&format!("/sobjects/OpportunityContactRole/{}", roles[0])),
        &token,
        Some(json!({"OpportunityId": opp})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    emu.shutdown().await.unwrap();
}

fn urlencode(s: &str) -> String {
    form_urlencoded_encode(s)
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn query_pages_with_next_records_url_and_query_all() {
    let (emu, client, base, token) = boot(Seed::Number(7)).await;
    let q = "SELECT Id, Name, StageName, Account.Name, SystemModstamp FROM Opportunity ORDER BY SystemModstamp, Id";
    let (s, first) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/query/?q={}", urlencode(q)),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["totalSize"], 3000);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 2000);
    assert!(first["records"][0]["Account"]["Name"].is_string());
    let next = first["nextRecordsUrl"].as_str().unwrap().to_string();
    assert!(
        next.starts_with(&format!("{V}/query/01g")) && next.ends_with("-2000"),
        "{next}"
    );
    let (s, second) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{next}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(second["done"], true);
    assert!(second.get("nextRecordsUrl").is_none());
    // Positions outside the result, and a cursor of an org whose deleted
    // rows were purged since, are refused.
    let locator = next.rsplit_once('-').unwrap().0.to_string();
    for stale in [format!("{locator}-0"), format!("{locator}-3000")] {
        let (s, v) = call(
            &client,
            reqwest::Method::GET,
            format!("{base}{stale}"),
            &token,
            None,
        )
        .await;
        assert_eq!(
            (s, &v[0]["errorCode"]),
            (StatusCode::BAD_REQUEST, &json!("INVALID_QUERY_LOCATOR")),
            "{stale}: {v}"
        );
    }
    let (s, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/__emulator/purge-deleted"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{next}"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        (s, &v[0]["errorCode"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_QUERY_LOCATOR")),
        "{v}"
    );
    let mut stamps: Vec<(String, String)> = Vec::new();
    for page in [&first, &second] {
        for r in page["records"].as_array().unwrap() {
            stamps.push((
                r["SystemModstamp"].as_str().unwrap().to_string(),
                r["Id"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(stamps.len(), 3000);
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "ordered by (SystemModstamp, Id)"
    );
    // Counting, filters, deleted rows in queryAll only.
    let (_, c) = call(
        &client,
        reqwest::Method::GET,
        format!(
            "{base}{V}/query?q={}",
            urlencode("SELECT COUNT() FROM Opportunity WHERE IsWon = true")
        ),
        &token,
        None,
    )
    .await;
    let won = c["totalSize"].as_u64().unwrap();
    assert!(won > 100 && won < 600, "{won}");
    let victim = stamps[0].1.clone();
    call(
        &client,
        reqwest::Method::DELETE,
        format!("{base}{V}/sobjects/Opportunity/{victim}"),
        &token,
        None,
    )
    .await;
    let q = format!("SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{victim}'");
    let (_, live) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/query?q={}", urlencode(&q)),
        &token,
        None,
    )
    .await;
    assert_eq!(live["totalSize"], 0);
    let (_, all) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/queryAll?q={}", urlencode(&q)),
        &token,
        None,
    )
    .await;
    assert_eq!(all["totalSize"], 1);
    assert_eq!(all["records"][0]["IsDeleted"], true);
    // Errors.
    for (q, code) in [
        ("SELECT Nope FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        ("SELECT Id FROM Opportunity WHERE", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Opportunity WHERE CloseDate = '2026-01-01'",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
    ] {
        let (s, v) = call(
            &client,
            reqwest::Method::GET,
            format!("{base}{V}/query?q={}", urlencode(q)),
            &token,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(v[0]["errorCode"], code, "{q}: {v}");
    }
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/query/01gBOGUS-2000"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_QUERY_LOCATOR");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn collections_with_all_or_none() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let url = format!("{base}{V}/composite/sobjects");
    let rec = |name: &str, stage: &str| json!({"attributes": {"type": "Opportunity"}, "Name": name, "StageName": stage, "CloseDate": "2026-03-01"});
    let (s, v) = call(&client, reqwest::Method::POST, url.clone(), &token, Some(json!({"allOrNone": false, "records": [rec("a", "Prospecting"), rec("b", "Bad"), rec("c", "Closed Lost")]}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["success"], true);
    assert_eq!(v[1]["success"], false);
    assert_eq!(
        v[1]["errors"][0]["statusCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(v[2]["success"], true);
    let (_, v) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        &token,
        Some(json!({"allOrNone": true, "records": [rec("d", "Prospecting"), rec("e", "Bad")]})),
    )
    .await;
    assert_eq!(
        v[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(emu.salesforce.count("Opportunity"), 2, "rolled back");
    // Oversized batch.
    let many: Vec<Value> = (0..201)
        .map(|i| rec(&format!("n{i}"), "Prospecting"))
        .collect();
    let (s, v) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        &token,
        Some(json!({"records": many})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    // Upsert by external id, retrieve and delete.
    let ups: Vec<Value> = (0..3).map(|i| json!({"attributes": {"type": "Opportunity"}, "dealbridge_id__c": format!("x{i}"), "Name": "u", "StageName": "Prospecting", "CloseDate": "2026-03-01"})).collect();
    let (_, v) = call(
        &client,
        reqwest::Method::PATCH,
        format!("{url}/Opportunity/dealbridge_id__c"),
        &token,
        Some(json!({"allOrNone": false, "records": ups.clone()})),
    )
    .await;
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|r| r["created"] == true && r["success"] == true),
        "{v}"
    );
    let (_, v) = call(
        &client,
        reqwest::Method::PATCH,
        format!("{url}/Opportunity/dealbridge_id__c"),
        &token,
        Some(json!({"records": ups})),
    )
    .await;
    assert!(
        v.as_array().unwrap().iter().all(|r| r["created"] == false),
        "{v}"
    );
    let ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let (_, v) = call(
        &client,
        reqwest::Method::GET,
        format!(
            "{url}/Opportunity?ids={}&fields=Name,dealbridge_id__c",
            ids.join(",")
        ),
        &token,
        None,
    )
    .await;
    assert_eq!(v[2]["dealbridge_id__c"], "x2");
    let upd =
        json!({"records": [{"attributes": {"type": "Opportunity"}, "id": ids[0], "Amount": 7}]});
    let (_, v) = call(
        &client,
        reqwest::Method::PATCH,
        url.clone(),
        &token,
        Some(upd),
    )
    .await;
    assert_eq!(v[0]["success"], true);
    let (_, v) = call(
        &client,
        reqwest::Method::DELETE,
        format!("{url}?ids={},{}&allOrNone=false", ids[0], ids[0]),
        &token,
        None,
    )
    .await;
    assert_eq!(v[0]["success"], true);
    assert_eq!(v[1]["success"], false);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn describe_shows_stage_picklist_and_external_id() {
    let (emu, client, base, token) = boot(Seed::Demo).await;
    let (s, d) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects/Opportunity/describe"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let fields = d["fields"].as_array().unwrap();
    let stage = fields.iter().find(|f| f["name"] == "StageName").unwrap();
    assert_eq!(stage["restrictedPicklist"], true);
    assert_eq!(stage["picklistValues"].as_array().unwrap().len(), 10);
    let ext = fields
        .iter()
        .find(|f| f["name"] == "dealbridge_id__c")
        .unwrap();
    assert_eq!(ext["externalId"], true);
    assert_eq!(ext["unique"], true);
    assert_eq!(d["keyPrefix"], "006");
    assert_eq!(d["recordTypeInfos"].as_array().unwrap().len(), 3);
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects/Nope/describe"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v[0]["errorCode"], "NOT_FOUND");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_profiles_errors_latency_tokens_validation_and_limits() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let faults = format!("{base}/__emulator/faults");
    // Injected errors: every request under /services/data gets a 503 in Salesforce's shape.
    let r = client.put(&faults).json(&json!({"error_rates": [{"status": 503, "rate": 1.0, "path_prefix": "/services/data/v62.0/limits"}]})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v[0]["errorCode"], "SERVER_UNAVAILABLE");
    let (s, _) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A bad profile is refused.
    let r = client
        .put(&faults)
        .json(&json!({"latency": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Latency.
    client
        .put(&faults)
        .json(&json!({"latency_ms": 150}))
        .send()
        .await
        .unwrap();
    let t = std::time::Instant::now();
    call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &token,
        None,
    )
    .await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    // Token lifetime 0: new tokens are dead at once.
    client
        .put(&faults)
        .json(&json!({"token_lifetime_secs": 0}))
        .send()
        .await
        .unwrap();
    let dead = password_login(&client, &emu, &base).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/limits"),
        &dead,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v[0]["errorCode"], "INVALID_SESSION_ID");
    // Forced validation.
    client.put(&faults).json(&json!({"validation_failures": [{"object": "Opportunity", "field": "Name", "equals": "poison", "message": "Poisoned"}]})).send().await.unwrap();
    let (s, v) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}{V}/sobjects/Opportunity"),
        &token,
        Some(json!({"Name": "poison", "StageName": "Prospecting", "CloseDate": "2026-01-01"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(v[0]["message"], "Poisoned");
    // Daily limit.
    client
        .put(&faults)
        .json(&json!({"rate_limit": {"max_requests": 2}}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let (s, _) = call(
            &client,
            reqwest::Method::GET,
            format!("{base}{V}/sobjects"),
            &token,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let resp = client
        .get(format!("{base}{V}/sobjects"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=2/2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    // Request accounting by route template and status.
    let acc: Value = client
        .get(format!("{base}/__emulator/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls = acc["calls"].as_array().unwrap();
    let forbidden = calls
        .iter()
        .find(|c| c["route"] == format!("{V}/sobjects") && c["status"] == 403)
        .unwrap();
    assert_eq!(forbidden["count"], 1);
    assert!(acc["total"].as_u64().unwrap() >= 8);
    let r = client
        .delete(format!("{base}/__emulator/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn seed_control_and_updated_deleted() {
    let (emu, client, base, token) = boot(Seed::Empty).await;
    let r: Value = client
        .post(format!("{base}/__emulator/seed"))
        .json(&json!({"seed": 3, "opportunities": 500, "accounts": 50, "contacts": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["seeded"]["Opportunity"], 500);
    let a = emu.salesforce.count("Opportunity");
    assert_eq!(a, 500);
    let bad = client
        .post(format!("{base}/__emulator/seed"))
        .json(&json!({"sead": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let start = (chrono_like_now_minus_days(10)).to_string();
    let end = chrono_like_now_minus_days(-1);
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects/Opportunity/updated/?start={start}&end={end}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let n = v["ids"].as_array().unwrap().len();
    assert!(n > 100 && n < 500, "{n}");
    assert!(
        v["latestDateCovered"]
            .as_str()
            .unwrap()
            .ends_with(":00.000+0000")
    );
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects/Opportunity/updated/?start=2001-01-01T00:00:00Z&end={end}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v[0]["errorCode"], "INVALID_REPLICATION_DATE");
    emu.shutdown().await.unwrap();
}

/// An ISO datetime `days` days before now (negative: in the future), without chrono.
fn chrono_like_now_minus_days(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now - days * 86_400;
    let (d, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

/// Every record of a SOQL query, following `nextRecordsUrl`.
async fn query_all_pages(client: &Client, base: &str, token: &str, q: &str) -> Vec<Value> {
    let (s, mut page) = call(
        client,
        reqwest::Method::GET,
        format!("{base}{V}/query/?q={}", urlencode(q)),
        token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{q}: {page}");
    let mut out: Vec<Value> = page["records"].as_array().unwrap().clone();
    while let Some(next) = page["nextRecordsUrl"].as_str().map(str::to_string) {
        let (s, p) = call(
            client,
            reqwest::Method::GET,
            format!("{base}{next}"),
            token,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        out.extend(p["records"].as_array().unwrap().iter().cloned());
        page = p;
    }
    out
}

#[tokio::test]
async fn keyset_paging_by_id_reads_every_record_once() {
    let (emu, client, base, token) = boot(Seed::Number(7)).await;
    let ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["Id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ids(&query_all_pages(
        &client,
        &base,
        &token,
        "SELECT Id FROM Opportunity ORDER BY Id",
    )
    .await);
    assert_eq!(all.len(), 3000);
    // Ids mix cases: a case-insensitive `>` would disagree with the case-sensitive sort.
    assert!(
        all.iter()
            .any(|i| i.chars().any(|c| c.is_ascii_lowercase()))
    );
    let mut paged: Vec<String> = Vec::new();
    loop {
        let after = paged.last().cloned().unwrap_or_default();
        let q = format!("SELECT Id FROM Opportunity WHERE Id > '{after}' ORDER BY Id LIMIT 250");
        let page = ids(&query_all_pages(&client, &base, &token, &q).await);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, all);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_lists_by_id_and_by_opportunity_match_a_scan() {
    let (emu, client, base, token) = boot(Seed::Number(7)).await;
    let roles = query_all_pages(
        &client,
        &base,
        &token,
        "SELECT Id, OpportunityId FROM OpportunityContactRole ORDER BY Id",
    )
    .await;
    let opps = query_all_pages(
        &client,
        &base,
        &token,
        "SELECT Id FROM Opportunity ORDER BY Id",
    )
    .await;
    let some: Vec<String> = opps
        .iter()
        .step_by(37)
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    let list = some
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let by_id = query_all_pages(
        &client,
        &base,
        &token,
        &format!("SELECT Id FROM Opportunity WHERE Id IN ({list}) ORDER BY Id"),
    )
    .await;
    let got: Vec<&str> = by_id.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    assert_eq!(got, some.iter().map(String::as_str).collect::<Vec<_>>());
    let by_opp = query_all_pages(
        &client,
        &base,
        &token,
        &format!(
            "SELECT Id FROM OpportunityContactRole WHERE OpportunityId IN ({list}) ORDER BY Id"
        ),
    )
    .await;
    let want: Vec<&str> = roles
        .iter()
        .filter(|r| {
            some.iter()
                .any(|o| Some(o.as_str()) == r["OpportunityId"].as_str())
        })
        .map(|r| r["Id"].as_str().unwrap())
        .collect();
    assert!(!want.is_empty());
    let got: Vec<&str> = by_opp.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    assert_eq!(got, want);
    // An 18-character id in another case is the same id (its checksum restores the case).
    let lower = some[0].to_lowercase();
    let rows = query_all_pages(
        &client,
        &base,
        &token,
        &format!("SELECT Id FROM Opportunity WHERE Id IN ('{lower}')"),
    )
    .await;
    assert_eq!(rows.len(), 1);
    emu.shutdown().await.unwrap();
}

async fn soql(client: &Client, base: &str, token: &str, q: &str) -> (StatusCode, Value) {
    call(
        client,
        reqwest::Method::GET,
        format!("{base}{V}/query/?q={}", urlencode(q)),
        token,
        None,
    )
    .await
}

#[tokio::test]
async fn child_relationship_subqueries_nest_records_or_null() {
    let (_emu, client, base, token) = boot(Seed::Number(7)).await;
    // Every role, by opportunity, to check the nested results against.
    let roles = query_all_pages(
        &client,
        &base,
        &token,
        "SELECT OpportunityId, ContactId, Role, IsPrimary FROM OpportunityContactRole",
    )
    .await;
    let mut by_opp: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for r in &roles {
        by_opp
            .entry(r["OpportunityId"].as_str().unwrap().to_string())
            .or_default()
            .push(r.clone());
    }
    let opps = query_all_pages(
        &client,
        &base,
        &token,
        "SELECT Id, Name, (SELECT ContactId, Role, IsPrimary, Contact.Email FROM OpportunityContactRoles ORDER BY ContactId) FROM Opportunity",
    )
    .await;
    assert_eq!(opps.len(), 3000);
    let (mut with, mut without) = (0, 0);
    for o in &opps {
        let id = o["Id"].as_str().unwrap();
        let nested = &o["OpportunityContactRoles"];
        match by_opp.get(id) {
            None => {
                assert!(nested.is_null(), "{o}");
                without += 1;
            }
            Some(expected) => {
                with += 1;
                assert_eq!(nested["totalSize"], expected.len(), "{o}");
                assert_eq!(nested["done"], true);
                let records = nested["records"].as_array().unwrap();
                let mut want: Vec<&str> = expected
                    .iter()
                    .map(|r| r["ContactId"].as_str().unwrap())
                    .collect();
                want.sort_unstable();
                let got: Vec<&str> = records
                    .iter()
                    .map(|r| r["ContactId"].as_str().unwrap())
                    .collect();
                assert_eq!(got, want);
                for r in records {
                    assert_eq!(r["attributes"]["type"], "OpportunityContactRole");
                    assert!(
                        r["attributes"]["url"]
                            .as_str()
                            .unwrap()
                            .contains("/sobjects/OpportunityContactRole/00K")
                    );
                    assert!(r["IsPrimary"].is_boolean() && r.get("Role").is_some());
                    assert_eq!(r["Contact"]["attributes"]["type"], "Contact");
                }
            }
        }
    }
    assert!(
        with > 100 && without > 100,
        "{with} with roles, {without} without"
    );

    // WHERE and LIMIT inside the subquery; another relationship.
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT Id, (SELECT Id FROM OpportunityContactRoles WHERE IsPrimary = true LIMIT 1) FROM Opportunity LIMIT 300",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for o in v["records"].as_array().unwrap() {
        let primaries = by_opp
            .get(o["Id"].as_str().unwrap())
            .map_or(0, |r| r.iter().filter(|r| r["IsPrimary"] == true).count());
        match primaries {
            0 => assert!(o["OpportunityContactRoles"].is_null(), "{o}"),
            _ => assert_eq!(o["OpportunityContactRoles"]["totalSize"], 1, "{o}"),
        }
    }
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT Name, (SELECT LastName FROM Contacts), (SELECT Name, Amount FROM Opportunities ORDER BY Amount DESC NULLS LAST LIMIT 2) FROM Account LIMIT 20",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["Contacts"]["totalSize"].as_u64() > Some(0)),
        "{v}"
    );

    for (q, code) in [
        (
            "SELECT Id, (SELECT Id FROM Nonsense) FROM Opportunity",
            "INVALID_TYPE",
        ),
        (
            "SELECT Id, (SELECT Bogus FROM OpportunityContactRoles) FROM Opportunity",
            "INVALID_FIELD",
        ),
        (
            "SELECT Id, (SELECT Id, (SELECT Id FROM Contacts) FROM OpportunityContactRoles) FROM Opportunity",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id, (SELECT Id FROM OpportunityContactRoles FROM Opportunity",
            "MALFORMED_QUERY",
        ),
    ] {
        let (s, v) = soql(&client, &base, &token, q).await;
        assert_eq!(
            (s, &v[0]["errorCode"]),
            (StatusCode::BAD_REQUEST, &json!(code)),
            "{q}: {v}"
        );
        assert!(v[0]["message"].is_string());
    }
}

#[tokio::test]
async fn aggregate_functions_answer_aggregate_results() {
    let (_emu, client, base, token) = boot(Seed::Number(7)).await;
    let rows = query_all_pages(
        &client,
        &base,
        &token,
        "SELECT StageName, Amount, CloseDate FROM Opportunity",
    )
    .await;
    let mut stages: std::collections::BTreeMap<String, (u64, u64, f64, Option<String>)> =
        Default::default();
    for r in &rows {
        let e = stages
            .entry(r["StageName"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        if let Some(a) = r["Amount"].as_f64() {
            e.1 += 1;
            e.2 += a;
        }
        let close = r["CloseDate"].as_str().unwrap().to_string();
        if e.3.as_ref().is_none_or(|c| close > *c) {
            e.3 = Some(close);
        }
    }
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT StageName, COUNT(Id), COUNT(Amount) priced, SUM(Amount) total, MAX(CloseDate) FROM Opportunity GROUP BY StageName ORDER BY StageName",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["done"], true);
    let records = v["records"].as_array().unwrap();
    assert_eq!(v["totalSize"], records.len());
    assert_eq!(
        records
            .iter()
            .map(|r| r["StageName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        stages.keys().cloned().collect::<Vec<_>>()
    );
    for r in records {
        assert_eq!(r["attributes"], json!({"type": "AggregateResult"}));
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "attributes",
                "StageName",
                "expr0",
                "priced",
                "total",
                "expr1"
            ]
        );
        let (count, priced, sum, max_close) = &stages[r["StageName"].as_str().unwrap()];
        assert_eq!(r["expr0"], *count);
        assert_eq!(r["priced"], *priced);
        let total = r["total"].as_f64().unwrap();
        assert!(
            (total - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "{total} vs {sum}"
        );
        assert_eq!(r["expr1"].as_str(), max_close.as_deref());
    }

    // Without GROUP BY: one row, also when nothing matches.
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT COUNT(Id), COUNT_DISTINCT(StageName), MIN(Amount) FROM Opportunity",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totalSize"], 1);
    assert_eq!(v["records"][0]["expr0"], rows.len());
    assert_eq!(v["records"][0]["expr1"], stages.len());
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT COUNT(Id), MAX(Amount) FROM Opportunity WHERE Name = 'no such opportunity'",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["records"][0]["expr0"], 0);
    assert!(v["records"][0]["expr1"].is_null());

    for q in [
        "SELECT Name, COUNT(Id) FROM Opportunity GROUP BY StageName",
        "SELECT SUM(Name) FROM Opportunity",
        "SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName HAVING COUNT(Id) > 1",
        "SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName ORDER BY Name",
        "SELECT CALENDAR_YEAR(CloseDate) FROM Opportunity",
    ] {
        let (s, v) = soql(&client, &base, &token, q).await;
        assert_eq!(
            (s, &v[0]["errorCode"]),
            (StatusCode::BAD_REQUEST, &json!("MALFORMED_QUERY")),
            "{q}: {v}"
        );
    }
    let (s, v) = soql(&client, &base, &token, "SELECT MAX(Nope) FROM Opportunity").await;
    assert_eq!(
        (s, &v[0]["errorCode"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_FIELD")),
        "{v}"
    );
}

#[tokio::test]
async fn the_organization_is_one_read_only_record() {
    let (_emu, client, base, token) = boot(Seed::Empty).await;
    let (s, v) = soql(
        &client,
        &base,
        &token,
        "SELECT Id, Name, IsSandbox, OrganizationType, InstanceName FROM Organization",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totalSize"], 1);
    let org = &v["records"][0];
    assert_eq!(org["attributes"]["type"], "Organization");
    let id = org["Id"].as_str().unwrap();
    assert!(id.starts_with("00D") && id.len() == 18, "{id}");
    assert_eq!(org["IsSandbox"], false);
    assert_eq!(org["OrganizationType"], "Developer Edition");
    let (s, v) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}{V}/sobjects/Organization/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["Id"], id);
    let (s, v) = call(
        &client,
        reqwest::Method::PATCH,
        format!("{base}{V}/sobjects/Organization/{id}"),
        &token,
        Some(json!({"Name": "renamed"})),
    )
    .await;
    assert!(s.is_client_error(), "{s} {v}");
    assert!(v[0]["errorCode"].is_string(), "{v}");
    let (s, v) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}{V}/sobjects/Organization/"),
        &token,
        Some(json!({"Name": "second"})),
    )
    .await;
    assert!(s.is_client_error(), "{s} {v}");
    let (_, v) = soql(&client, &base, &token, "SELECT COUNT() FROM Organization").await;
    assert_eq!(v["totalSize"], 1);
}
