//! HTTP tests of the HubSpot emulator's associations v4, contact rollups,
//! rate limits, fault profiles, request accounting and control API.

mod hubspot_support;

use std::time::Instant;

use dealbridge_emulator::Seed;
use hubspot_support::{is_iso, start};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn v4_default_and_labeled_associations() {
    let h = start(Seed::Empty).await;
    let deal = h.create("deals", json!({"dealname": "D"})).await;
    let contact = h.create("contacts", json!({"email": "c@x.com"})).await;
    let company = h.create("companies", json!({"name": "Co"})).await;
    let before = h.props_of("deals", &deal, "hs_lastmodifieddate").await;

    let r = h
        .call(
            Method::PUT,
            &format!("/crm/v4/objects/deals/{deal}/associations/default/contacts/{contact}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "COMPLETE");
    let types: Vec<u64> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["associationSpec"]["associationTypeId"].as_u64().unwrap())
        .collect();
    assert_eq!(types, vec![3, 4]);
    assert_eq!(r.body["results"][0]["from"]["id"], deal.as_str());

    let r = h
        .put(
            &format!("/crm/v4/objects/deals/{deal}/associations/companies/{company}"),
            json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["fromObjectTypeId"], "0-3");
    assert_eq!(r.body["toObjectTypeId"], "0-2");
    assert_eq!(r.body["toObjectId"].as_u64().unwrap().to_string(), company);
    assert_eq!(r.body["labels"], json!(["Primary"]));

    let r = h
        .get(&format!(
            "/crm/v4/objects/deals/{deal}/associations/companies"
        ))
        .await;
    let res = &r.body["results"][0];
    assert_eq!(res["toObjectId"].as_u64().unwrap().to_string(), company);
    let specs = res["associationTypes"].as_array().unwrap();
    assert!(
        specs.contains(&json!({"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"})),
        "{specs:?}"
    );
    assert!(
        specs.contains(&json!({"category": "HUBSPOT_DEFINED", "typeId": 341, "label": null})),
        "{specs:?}"
    );
    let r = h
        .get(&format!(
            "/crm/v4/objects/companies/{company}/associations/deals"
        ))
        .await;
    assert_eq!(
        r.body["results"][0]["toObjectId"]
            .as_u64()
            .unwrap()
            .to_string(),
        deal
    );

    // v3 read with associations
    let r = h
        .get(&format!(
            "/crm/v3/objects/deals/{deal}?associations=contacts,companies"
        ))
        .await;
    assert_eq!(
        r.body["associations"]["contacts"]["results"][0],
        json!({"id": contact, "type": "deal_to_contact"})
    );

    // association changes do not bump hs_lastmodifieddate
    assert_eq!(
        h.props_of("deals", &deal, "hs_lastmodifieddate").await,
        before
    );

    // labels
    let r = h
        .post(
            "/crm/v4/associations/deals/contacts/labels",
            json!({"label": "Decision maker", "name": "decision_maker"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let label_id = r.body["results"][0]["typeId"].as_u64().unwrap();
    assert_eq!(r.body["results"][0]["category"], "USER_DEFINED");
    h.post(
        "/crm/v4/associations/deals/contacts/labels",
        json!({"label": "Decision maker", "name": "decision_maker"}),
    )
    .await
    .assert_error(409, "CONFLICT");
    let all = h.get("/crm/v4/associations/deals/contacts/labels").await;
    assert!(
        all.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["typeId"] == 3)
    );
    let r = h
        .put(
            &format!("/crm/v4/objects/deals/{deal}/associations/contacts/{contact}"),
            json!([{"associationCategory": "USER_DEFINED", "associationTypeId": label_id}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["labels"], json!(["Decision maker"]));
    let r = h
        .put(
            &format!("/crm/v4/objects/deals/{deal}/associations/contacts/{contact}"),
            json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 999}]),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    h.put(
        &format!("/crm/v4/objects/deals/{deal}/associations/contacts/77777"),
        json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    let r = h.post("/crm/v4/associations/deals/contacts/batch/labels/archive", json!({"inputs": [{"from": {"id": deal}, "to": {"id": contact}, "types": [{"associationCategory": "USER_DEFINED", "associationTypeId": label_id}]}]})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .get(&format!(
            "/crm/v4/objects/deals/{deal}/associations/contacts"
        ))
        .await;
    assert_eq!(
        r.body["results"][0]["associationTypes"],
        json!([{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": null}])
    );

    assert_eq!(
        h.delete(&format!(
            "/crm/v4/objects/deals/{deal}/associations/contacts/{contact}"
        ))
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.get(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/deals"
        ))
        .await
        .body["results"],
        json!([])
    );
    h.get("/crm/v4/objects/deals/xyz/associations/contacts")
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn v4_batch_associations() {
    let h = start(Seed::Empty).await;
    let d1 = h.create("deals", json!({})).await;
    let d2 = h.create("deals", json!({})).await;
    let c1 = h.create("contacts", json!({})).await;
    let c2 = h.create("contacts", json!({})).await;
    let t = json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]);
    let r = h
        .post(
            "/crm/v4/associations/deals/contacts/batch/create",
            json!({"inputs": [
                {"from": {"id": d1}, "to": {"id": c1}, "types": t},
                {"from": {"id": d1}, "to": {"id": c2}, "types": t},
                {"from": {"id": d1}, "to": {"id": "5"}, "types": t}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["numErrors"], 1);
    let r = h
        .post(
            "/crm/v4/associations/deals/contacts/batch/associate/default",
            json!({"inputs": [{"from": {"id": d2}, "to": {"id": c1}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .post(
            "/crm/v4/associations/contacts/deals/batch/read",
            json!({"inputs": [{"id": c1}, {"id": c2}, {"id": "999"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    let first = &r.body["results"][0];
    assert_eq!(first["from"]["id"], c1.as_str());
    let to: Vec<String> = first["to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["toObjectId"].as_u64().unwrap().to_string())
        .collect();
    assert_eq!(to, vec![d1.clone(), d2.clone()]);
    assert_eq!(first["to"][0]["associationTypes"][0]["typeId"], 4);
    assert_eq!(r.body["errors"][0]["context"]["ids"], json!(["999"]));
    let r = h
        .post(
            "/crm/v4/associations/deals/contacts/batch/archive",
            json!({"inputs": [{"from": {"id": d1}, "to": [{"id": c1}, {"id": c2}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .get(&format!("/crm/v4/objects/deals/{d1}/associations/contacts"))
        .await;
    assert_eq!(r.body["results"], json!([]));
    h.post(
        "/crm/v4/associations/deals/contacts/batch/read",
        json!({"inputs": "nope"}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn contact_rollups_stay_right() {
    let h = start(Seed::Empty).await;
    let c = h.create("contacts", json!({"email": "roll@x.com"})).await;
    let contact_modified = h.props_of("contacts", &c, "lastmodifieddate").await;
    let won = h
        .create(
            "deals",
            json!({"amount": "1000", "dealstage": "closedwon", "closedate": "2026-03-01"}),
        )
        .await;
    let open = h
        .create(
            "deals",
            json!({"amount": "300", "dealstage": "qualifiedtobuy", "closedate": "2026-04-01"}),
        )
        .await;
    for d in [&won, &open] {
        h.call(
            Method::PUT,
            &format!("/crm/v4/objects/contacts/{c}/associations/default/deals/{d}"),
            None,
        )
        .await;
    }
    let props = "num_associated_deals,first_deal_created_date,recent_deal_close_date,recent_deal_amount,total_revenue,lastmodifieddate";
    let p = h.props_of("contacts", &c, props).await;
    assert_eq!(p["num_associated_deals"], "2");
    assert_eq!(
        p["recent_deal_amount"], "300",
        "the most recently created deal"
    );
    assert_eq!(p["total_revenue"], "1000");
    assert_eq!(p["recent_deal_close_date"], "2026-03-01T00:00:00.000Z");
    assert!(is_iso(&p["first_deal_created_date"]));
    assert_eq!(p["lastmodifieddate"], contact_modified["lastmodifieddate"]);
    // edit amount/stage/closedate of the open deal
    h.patch(&format!("/crm/v3/objects/deals/{open}"), json!({"properties": {"amount": "500", "dealstage": "closedwon", "closedate": "2026-05-01"}})).await;
    let p = h.props_of("contacts", &c, props).await;
    assert_eq!(
        (
            p["total_revenue"].clone(),
            p["recent_deal_amount"].clone(),
            p["recent_deal_close_date"].clone()
        ),
        (
            json!("1500"),
            json!("500"),
            json!("2026-05-01T00:00:00.000Z")
        )
    );
    // archive a deal
    h.delete(&format!("/crm/v3/objects/deals/{open}")).await;
    let p = h.props_of("contacts", &c, props).await;
    assert_eq!(
        (
            p["num_associated_deals"].clone(),
            p["total_revenue"].clone(),
            p["recent_deal_amount"].clone()
        ),
        (json!("1"), json!("1000"), json!("1000"))
    );
    // remove the association
    h.delete(&format!(
        "/crm/v4/objects/deals/{won}/associations/contacts/{c}"
    ))
    .await;
    let p = h.props_of("contacts", &c, props).await;
    assert_eq!(p["num_associated_deals"], "0");
    assert_eq!(p["total_revenue"], serde_json::Value::Null);
    assert_eq!(p["first_deal_created_date"], serde_json::Value::Null);
    // creating a deal with associations updates rollups too
    let r = h
        .post("/crm/v3/objects/deals", json!({"properties": {"amount": "42", "dealstage": "closedwon"}, "associations": [{"to": {"id": c}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        h.props_of("contacts", &c, props).await["total_revenue"],
        "42"
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let h = start(Seed::Empty).await;
    let r = h.control(Method::PUT, "/__emulator/rate-limits", Some(json!({"ten_secondly": 3, "interval_ms": 10000, "search_per_second": 1, "daily": 1000}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let first = h.get("/crm/v3/objects/deals").await;
    assert_eq!(
        first.header("x-hubspot-ratelimit-max").as_deref(),
        Some("3")
    );
    assert_eq!(
        first.header("x-hubspot-ratelimit-remaining").as_deref(),
        Some("2")
    );
    assert_eq!(
        first
            .header("x-hubspot-ratelimit-interval-milliseconds")
            .as_deref(),
        Some("10000")
    );
    assert_eq!(
        first.header("x-hubspot-ratelimit-daily").as_deref(),
        Some("1000")
    );
    assert_eq!(
        first
            .header("x-hubspot-ratelimit-daily-remaining")
            .as_deref(),
        Some("999")
    );
    h.get("/crm/v3/objects/deals").await;
    h.get("/crm/v3/objects/deals").await;
    let r = h.get("/crm/v3/objects/deals").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["status"], "error");
    assert_eq!(r.body["errorType"], "RATE_LIMIT");
    assert_eq!(r.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(r.body["correlationId"].is_string());
    assert_eq!(
        r.header("x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    // search has its own limit and no headers
    let s = h.post("/crm/v3/objects/deals/search", json!({})).await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(s.header("x-hubspot-ratelimit-max").is_none());
    let s = h.post("/crm/v3/objects/deals/search", json!({})).await;
    assert_eq!(s.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.body["errorType"], "RATE_LIMIT");
    // daily limit
    h.control(
        Method::PUT,
        "/__emulator/rate-limits",
        Some(json!({"ten_secondly": null, "search_per_second": null, "daily": 2})),
    )
    .await;
    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    let r = h.get("/crm/v3/owners").await;
    assert_eq!(
        (r.status, r.body["policyName"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("DAILY"))
    );
    // switched off
    h.control(
        Method::PUT,
        "/__emulator/rate-limits",
        Some(json!({"ten_secondly": null, "search_per_second": null, "daily": null})),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    }
    let r = h
        .control(
            Method::PUT,
            "/__emulator/rate-limits",
            Some(json!({"ten_secondly": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .control(
            Method::PUT,
            "/__emulator/rate-limits",
            Some(json!({"tenSecondly": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fault_profiles_inject_errors_latency_and_validation() {
    let h = start(Seed::Empty).await;
    let r = h.control(Method::PUT, "/__emulator/faults", Some(json!({"error_rates": [{"status": 503, "rate": 1.0, "path_prefix": "/crm/v3/objects/deals"}]}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    h.get("/crm/v3/objects/deals")
        .await
        .assert_error(503, "INTERNAL_ERROR");
    assert_eq!(
        h.get("/crm/v3/objects/contacts").await.status,
        StatusCode::OK,
        "prefix limits the fault"
    );
    h.control(
        Method::PUT,
        "/__emulator/faults",
        Some(json!({"error_rates": [{"status": 429, "rate": 1.0}]})),
    )
    .await;
    let r = h.get("/crm/v3/owners").await;
    assert_eq!(
        (r.status, r.body["errorType"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("RATE_LIMIT"))
    );

    h.control(
        Method::PUT,
        "/__emulator/faults",
        Some(json!({"latency_ms": 150})),
    )
    .await;
    let t = Instant::now();
    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    assert!(t.elapsed().as_millis() >= 150, "latency applied");

    h.control(Method::PUT, "/__emulator/faults", Some(json!({"validation_failures": [{"object": "deals", "field": "amount", "equals": "13", "message": "Unlucky amounts are refused"}]})))
        .await;
    let r = h
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"amount": 13}}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["message"], "Unlucky amounts are refused");
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/create",
            json!({"inputs": [{"properties": {"amount": "13"}}, {"properties": {"amount": "14"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        r.body["errors"][0]["message"],
        "Unlucky amounts are refused"
    );
    // an update that leaves the trigger value in place also fails
    let id = r.body["results"][0]["id"].as_str().unwrap().to_string();
    h.patch(
        &format!("/crm/v3/objects/deals/{id}"),
        json!({"properties": {"amount": "13"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.control(
        Method::PUT,
        "/__emulator/faults",
        Some(json!({"error_rates": [{"status": 200, "rate": 1.0}]})),
    )
    .await;
    assert_eq!(
        h.control(
            Method::PUT,
            "/__emulator/faults",
            Some(json!({"nonsense": 1}))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );

    let acc = h.control(Method::GET, "/__emulator/requests", None).await;
    let calls = acc.body["calls"].as_array().unwrap();
    let c = calls
        .iter()
        .find(|c| c["route"] == "/crm/v3/objects/{object_type}" && c["status"] == 503)
        .expect("503 counted");
    assert_eq!(c["count"], 1);
    assert!(
        calls
            .iter()
            .all(|c| !c["route"].as_str().unwrap().starts_with("/__emulator"))
    );
}

#[tokio::test]
async fn control_api_seeds_resets_and_snapshots() {
    let h = start(Seed::Empty).await;
    assert_eq!(
        h.get("/crm/v3/objects/deals").await.body["results"],
        json!([])
    );
    let r = h
        .control(Method::POST, "/__emulator/seed", Some(json!({"seed": 5})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["counts"]["deals"], 30);
    let snap1 = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    h.create("deals", json!({"dealname": "extra"})).await;
    let r = h.control(Method::POST, "/__emulator/reset", None).await;
    assert_eq!(r.body["counts"]["deals"], 30);
    let path = std::env::temp_dir().join(format!("hubspot-snapshot-{}.json", std::process::id()));
    let snap2 = h
        .control(
            Method::GET,
            &format!("/__emulator/snapshot?path={}", path.display()),
            None,
        )
        .await
        .body;
    assert_eq!(snap1, snap2, "reset gives back the same seeded portal");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, snap2);
    let _ = std::fs::remove_file(&path);
    for key in [
        "owners",
        "pipelines",
        "properties",
        "objects",
        "associations",
    ] {
        assert!(snap2.get(key).is_some(), "snapshot has {key}");
    }
    let other = HubSpotPair::snapshot_of(5);
    assert_eq!(other, snap2, "deterministic by seed across instances");
    assert_eq!(
        h.control(
            Method::POST,
            "/__emulator/seed",
            Some(json!({"seed": "lots"}))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.control(
            Method::POST,
            "/__emulator/seed",
            Some(json!({"seed": "empty"}))
        )
        .await
        .body["counts"]["deals"],
        0
    );
    assert_eq!(
        h.control(Method::GET, "/__emulator/token", None).await.body["token"],
        h.token.as_str()
    );
}

#[tokio::test]
async fn snapshot_import_round_trips_and_keeps_rollups_live() {
    let h = start(Seed::Number(9)).await;
    // Richer state than the seed: a unique custom property, a label, an edit, an archive.
    let prop = json!({"name": "dealbridge_sf_id", "label": "SF id", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true});
    assert_eq!(
        h.post("/crm/v3/properties/deals", prop).await.status,
        StatusCode::CREATED
    );
    let label = h
        .post(
            "/crm/v4/associations/deals/contacts/labels",
            json!({"label": "Champion", "name": "champion"}),
        )
        .await;
    assert!(label.status.is_success(), "{}", label.body);
    let deal = h.create("deals", json!({"dealname": "Imported", "amount": "700", "dealstage": "closedwon", "dealbridge_sf_id": "006X"})).await;
    let contact = h
        .create("contacts", json!({"email": "snap@example.com"}))
        .await;
    let r = h
        .put(
            &format!("/crm/v4/objects/deals/{deal}/associations/default/contacts/{contact}"),
            json!({}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let gone = h.create("deals", json!({"dealname": "to archive"})).await;
    assert_eq!(
        h.delete(&format!("/crm/v3/objects/deals/{gone}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let exported = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    let r = h
        .control(
            Method::POST,
            "/__emulator/seed",
            Some(json!({"seed": "empty"})),
        )
        .await;
    assert_eq!(r.body["counts"]["deals"], 0);
    let r = h
        .control(Method::PUT, "/__emulator/snapshot", Some(exported.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["loaded"], true);
    let again = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    assert_eq!(
        again, exported,
        "export -> import -> export is the identity"
    );

    // The imported portal is live: unique values, archived records, rollups, ids.
    assert_eq!(
        h.props_of("contacts", &contact, "num_associated_deals,total_revenue")
            .await["num_associated_deals"],
        "1"
    );
    assert_eq!(
        h.props_of("contacts", &contact, "total_revenue").await["total_revenue"],
        "700"
    );
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"dealbridge_sf_id": "006X"}}),
    )
    .await
    .assert_error(409, "CONFLICT");
    h.get(&format!("/crm/v3/objects/deals/{gone}"))
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    assert_eq!(
        h.get(&format!("/crm/v3/objects/deals/{gone}?archived=true"))
            .await
            .status,
        StatusCode::OK
    );
    let r = h
        .patch(
            &format!("/crm/v3/objects/deals/{deal}"),
            json!({"properties": {"amount": "900"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        h.props_of("contacts", &contact, "total_revenue").await["total_revenue"],
        "900"
    );
    let fresh = h.create("deals", json!({"dealname": "after import"})).await;
    let max_before = exported["objects"]["deals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(
        fresh.parse::<u64>().unwrap() > max_before,
        "new ids never reuse imported ones"
    );
    // Keyset search sees the imported records through the rebuilt index.
    let r = h
        .post("/crm/v3/objects/deals/search", json!({"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}], "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "limit": 200}))
        .await;
    assert_eq!(
        r.body["total"],
        exported["objects"]["deals"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["archived"] == false)
            .count()
            + 1
    );
}

#[tokio::test]
async fn snapshot_import_rejects_bad_snapshots_and_changes_nothing() {
    let h = start(Seed::Number(4)).await;
    let good = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    let mut bad_value = good.clone();
    bad_value["objects"]["deals"][0]["properties"]["amount"] = json!("lots");
    let mut dup = good.clone();
    let first = dup["objects"]["deals"][0].clone();
    dup["objects"]["deals"].as_array_mut().unwrap().push(first);
    let mut dangling = good.clone();
    dangling["associations"][0]["toObjectId"] = json!(1);
    let mut unknown = good.clone();
    unknown["objects"]["deals"][0]["properties"]["nope"] = json!("1");
    for (snap, needle) in [
        (bad_value, "objects.deals[0].properties.amount"),
        (dup, "duplicate deal id"),
        (dangling, "associations[0]"),
        (unknown, "not a defined property"),
        (json!({"owners": []}), "pipelines"),
        (json!([1, 2]), "JSON object"),
    ] {
        let r = h
            .control(Method::PUT, "/__emulator/snapshot", Some(snap))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let msg = r.body["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    let after = h
        .control(Method::GET, "/__emulator/snapshot", None)
        .await
        .body;
    assert_eq!(after, good, "a failed import leaves the portal as it was");
    let path = std::env::temp_dir().join(format!("hubspot-import-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&good).unwrap()).unwrap();
    let r = h
        .control(
            Method::POST,
            "/__emulator/seed",
            Some(json!({"seed": "empty"})),
        )
        .await;
    assert_eq!(r.body["counts"]["deals"], 0);
    let r = h
        .control(
            Method::PUT,
            &format!("/__emulator/snapshot?path={}", path.display()),
            None,
        )
        .await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["counts"]["deals"], 30);
}

struct HubSpotPair;

impl HubSpotPair {
    fn snapshot_of(n: u64) -> serde_json::Value {
        dealbridge_emulator::hubspot::HubSpot::new(&Seed::Number(n)).snapshot()
    }
}
