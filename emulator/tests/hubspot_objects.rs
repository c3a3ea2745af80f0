//! HTTP tests of the HubSpot emulator's CRM objects v3 API: auth, CRUD, list
//! paging, batch calls, search (incl. the 10,000 cap), properties, pipelines,
//! owners and the error envelopes for bad input.

mod hubspot_support;

use dealbridge_emulator::Seed;
use dealbridge_emulator::hubspot::schema::ObjectType;
use hubspot_support::{is_iso, start};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let h = start(Seed::Empty).await;
    h.raw(Method::GET, "/crm/v3/objects/deals", None, None)
        .await
        .assert_error(401, "INVALID_AUTHENTICATION");
    h.raw(
        Method::GET,
        "/crm/v3/objects/deals",
        Some("pat-na1-wrong"),
        None,
    )
    .await
    .assert_error(401, "INVALID_AUTHENTICATION");
    assert_eq!(h.get("/crm/v3/objects/deals").await.status, StatusCode::OK);
}

#[tokio::test]
async fn deal_crud_has_hubspot_shapes() {
    let h = start(Seed::Empty).await;
    let r = h
        .post("/crm/v3/objects/deals", json!({"properties": {"dealname": "Big one", "amount": 1500.5, "closedate": "2026-06-30", "dealstage": "qualifiedtobuy"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok());
    assert!(
        is_iso(&r.body["createdAt"]) && is_iso(&r.body["updatedAt"]),
        "{}",
        r.body
    );
    assert_eq!(r.body["archived"], false);
    let p = &r.body["properties"];
    assert!(
        p.as_object()
            .unwrap()
            .values()
            .all(|v| v.is_string() || v.is_null()),
        "all strings: {p}"
    );
    assert_eq!(p["amount"], "1500.5");
    assert_eq!(p["closedate"], "2026-06-30T00:00:00.000Z");
    assert_eq!(p["pipeline"], "default");
    assert_eq!(p["hs_object_id"], id.as_str());
    assert!(is_iso(&p["hs_lastmodifieddate"]));

    let g = h.get(&format!("/crm/v3/objects/deals/{id}")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["properties"]["dealname"], "Big one");
    assert!(
        g.body["properties"].get("description").is_none(),
        "defaults only"
    );
    let g = h
        .get(&format!(
            "/crm/v3/objects/deals/{id}?properties=description,dealname"
        ))
        .await;
    assert_eq!(
        g.body["properties"]["description"],
        Value::Null,
        "requested but empty is null"
    );

    let u = h
        .patch(
            &format!("/crm/v3/objects/deals/{id}"),
            json!({"properties": {"amount": "2000", "description": "x"}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["properties"]["amount"], "2000");

    assert_eq!(
        h.delete(&format!("/crm/v3/objects/deals/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.get(&format!("/crm/v3/objects/deals/{id}"))
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    let a = h
        .get(&format!("/crm/v3/objects/deals/{id}?archived=True"))
        .await;
    assert_eq!(
        a.body["archived"], true,
        "any letter case, as the Python client sends it"
    );
    assert!(is_iso(&a.body["archivedAt"]));
    h.patch(
        &format!("/crm/v3/objects/deals/{id}"),
        json!({"properties": {"amount": "1"}}),
    )
    .await
    .assert_error(404, "OBJECT_NOT_FOUND");
    assert_eq!(
        h.delete("/crm/v3/objects/deals/999999999").await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn list_pages_with_after_until_done() {
    let h = start(Seed::Empty).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            h.create("companies", json!({"name": format!("C{i}")}))
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut path = "/crm/v3/objects/companies?limit=3".to_string();
    loop {
        let r = h.get(&path).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.extend(
            r.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_string()),
        );
        match r.body["paging"]["next"]["after"].as_str() {
            Some(after) => path = format!("/crm/v3/objects/companies?limit=3&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    h.get("/crm/v3/objects/companies?after=abc")
        .await
        .assert_error(400, "VALIDATION_ERROR");
    h.get("/crm/v3/objects/companies?limit=-1")
        .await
        .assert_error(400, "VALIDATION_ERROR");
    h.get("/crm/v3/objects/tickets")
        .await
        .assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn bad_input_gets_documented_errors() {
    let h = start(Seed::Empty).await;
    let r = h
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"nope": "1"}}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Property values were not valid") && msg.contains("PROPERTY_DOESNT_EXIST"),
        "{msg}"
    );
    let r = h
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"amount": "ten"}}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("INVALID_DECIMAL")
    );
    let r = h
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"closedate": "next tuesday"}}),
        )
        .await;
    assert!(r.body["message"].as_str().unwrap().contains("INVALID_DATE"));
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"dealstage": "nonsense"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"hubspot_owner_id": "1"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"hs_object_id": "5"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.post(
        "/crm/v3/objects/contacts",
        json!({"properties": {"total_revenue": "5"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.raw(
        Method::POST,
        "/crm/v3/objects/deals",
        Some(&h.token),
        Some("{not json".into()),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.raw(
        Method::POST,
        "/crm/v3/objects/deals",
        Some(&h.token),
        Some("[1,2]".into()),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.raw(
        Method::POST,
        "/crm/v3/objects/deals/search",
        Some(&h.token),
        Some("{\"limit\": \"x\"}".into()),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.get("/crm/v3/nothing/here")
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    let r = h
        .call(Method::PUT, "/crm/v3/objects/deals", Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["status"], "error");
    let c = h
        .create("contacts", json!({"email": "Dup@Example.com"}))
        .await;
    let r = h
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "dup@example.com"}}),
        )
        .await;
    r.assert_error(409, "CONFLICT");
    assert!(r.body["message"].as_str().unwrap().contains(&c));
}

#[tokio::test]
async fn batch_calls_report_partial_results() {
    let h = start(Seed::Empty).await;
    let inputs: Vec<Value> = (0..3)
        .map(|i| json!({"properties": {"dealname": format!("D{i}"), "amount": i.to_string()}}))
        .collect();
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/create",
            json!({"inputs": inputs}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "COMPLETE");
    assert!(is_iso(&r.body["startedAt"]) && is_iso(&r.body["completedAt"]));
    let ids: Vec<String> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);

    let r = h
        .post(
            "/crm/v3/objects/deals/batch/read",
            json!({"inputs": [{"id": ids[0]}, {"id": "123"}], "properties": ["amount"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    assert_eq!(r.body["numErrors"], 1);
    assert_eq!(r.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(r.body["errors"][0]["context"]["ids"], json!(["123"]));
    assert_eq!(r.body["results"][0]["properties"]["amount"], "0");

    let r = h.post("/crm/v3/objects/deals/batch/update", json!({"inputs": [{"id": ids[1], "properties": {"amount": "50"}}, {"id": "424242", "properties": {"amount": "1"}}]})).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    assert_eq!(r.body["results"][0]["properties"]["amount"], "50");
    assert_eq!(r.body["errors"][0]["context"]["ids"], json!(["424242"]));

    let r = h
        .post(
            "/crm/v3/objects/deals/batch/update",
            json!({"inputs": [{"id": ids[1], "properties": {"nope": "1"}}]}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    h.post(
        "/crm/v3/objects/deals/batch/update",
        json!({"inputs": [{"id": ids[1], "properties": {}}, {"id": ids[1], "properties": {}}]}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    let big: Vec<Value> = (0..101).map(|_| json!({"properties": {}})).collect();
    let r = h
        .post("/crm/v3/objects/deals/batch/create", json!({"inputs": big}))
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    h.post("/crm/v3/objects/deals/batch/create", json!({"nothing": []}))
        .await
        .assert_error(400, "VALIDATION_ERROR");
    h.post("/crm/v3/objects/deals/batch/explode", json!({"inputs": []}))
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");

    let r = h
        .post(
            "/crm/v3/objects/deals/batch/archive",
            json!({"inputs": [{"id": ids[2]}, {"id": "1"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.get(&format!("/crm/v3/objects/deals/{}", ids[2]))
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
}

#[tokio::test]
async fn unique_properties_and_upsert() {
    let h = start(Seed::Empty).await;
    let prop = json!({"name": "dealbridge_sf_id", "label": "Salesforce id (dealbridge)", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true});
    let r = h.post("/crm/v3/properties/deals", prop.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["hasUniqueValue"], true);
    h.post("/crm/v3/properties/deals", prop)
        .await
        .assert_error(409, "CONFLICT");
    h.post("/crm/v3/properties/deals", json!({"name": "Bad Name", "label": "x", "type": "string", "fieldType": "text", "groupName": "g"}))
        .await
        .assert_error(400, "VALIDATION_ERROR");
    h.post("/crm/v3/properties/deals", json!({"name": "flag", "label": "x", "type": "bool", "fieldType": "text", "groupName": "g"}))
        .await
        .assert_error(400, "VALIDATION_ERROR");
    let got = h.get("/crm/v3/properties/deals/dealbridge_sf_id").await;
    assert_eq!(got.body["type"], "string");
    let std = h
        .get("/crm/v3/properties/deals/hs_salesforceopportunityid")
        .await;
    assert_eq!(std.body["hasUniqueValue"], false);
    let all = h.get("/crm/v3/properties/deals").await;
    let stage = all.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "dealstage")
        .unwrap()
        .clone();
    assert!(
        stage["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["value"] == "closedwon")
    );

    let up = |id: &str, amount: &str| json!({"idProperty": "dealbridge_sf_id", "id": id, "properties": {"dealname": format!("Opp {id}"), "amount": amount}});
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [up("006A", "10"), up("006B", "20")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["new"] == true)
    );
    let first_id = r.body["results"][0]["id"].clone();
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [up("006A", "11"), up("006C", "30")]}),
        )
        .await;
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(
        (
            res[0]["new"].clone(),
            res[0]["id"].clone(),
            res[0]["properties"]["amount"].clone()
        ),
        (json!(false), first_id, json!("11"))
    );
    assert_eq!(res[1]["new"], true);
    let count = h.hs.read(|s| s.table(ObjectType::Deals).records().len());
    assert_eq!(count, 3, "no duplicates");
    let r = h.post("/crm/v3/objects/deals/batch/upsert", json!({"inputs": [{"idProperty": "hs_salesforceopportunityid", "id": "x", "properties": {}}]})).await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert!(r.body["message"].as_str().unwrap().contains("unique"));
    let g = h
        .get("/crm/v3/objects/deals/006B?idProperty=dealbridge_sf_id&properties=amount")
        .await;
    assert_eq!(g.body["properties"]["amount"], "20");
    // A create with a taken unique value conflicts.
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"dealbridge_sf_id": "006A"}}),
    )
    .await
    .assert_error(409, "CONFLICT");
    // An input failing a property check fails alone (207); the others are written.
    let r = h
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [up("006D", "40"), up("006E", "not a number")]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    assert_eq!(r.body["status"], "COMPLETE");
    assert_eq!(r.body["numErrors"], 1);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["results"][0]["properties"]["amount"], "40");
    let e = &r.body["errors"][0];
    assert_eq!(e["category"], "VALIDATION_ERROR");
    assert_eq!(e["context"]["ids"], json!(["006E"]));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Property values were not valid")
    );
    assert_eq!(e["errors"][0]["code"], "INVALID_DECIMAL");
    h.get("/crm/v3/objects/deals/006E?idProperty=dealbridge_sf_id")
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    // Contacts upsert by email.
    let r = h.post("/crm/v3/objects/contacts/batch/upsert", json!({"inputs": [{"idProperty": "email", "id": "a@b.com", "properties": {"firstname": "A"}}]})).await;
    assert_eq!(r.body["results"][0]["properties"]["email"], "a@b.com");
}

#[tokio::test]
async fn concurrent_upserts_never_duplicate() {
    let h = start(Seed::Empty).await;
    h.post("/crm/v3/properties/deals", json!({"name": "xref", "label": "x", "type": "string", "fieldType": "text", "groupName": "g", "hasUniqueValue": true})).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, token) = (h.http.clone(), h.base.clone(), h.token.clone());
        tasks.push(tokio::spawn(async move {
            let inputs: Vec<Value> = (0..20).map(|i| json!({"idProperty": "xref", "id": format!("k{i}"), "properties": {"dealname": "n"}})).collect();
            http.post(format!("{base}/crm/v3/objects/deals/batch/upsert")).bearer_auth(token).json(&json!({"inputs": inputs})).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        h.hs.read(|s| s.table(ObjectType::Deals).records().len()),
        20
    );
}

#[tokio::test]
async fn search_filters_sorts_and_pages() {
    let h = start(Seed::Empty).await;
    for i in 0..30 {
        h.create("deals", json!({"dealname": format!("Deal number {i}"), "amount": (i * 10).to_string(), "dealstage": if i % 2 == 0 { "closedwon" } else { "qualifiedtobuy" }})).await;
    }
    let body = json!({
        "filterGroups": [
            {"filters": [{"propertyName": "amount", "operator": "GTE", "value": "100"}, {"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]},
            {"filters": [{"propertyName": "amount", "operator": "LT", "value": "20"}]}
        ],
        "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
        "properties": ["amount", "dealname"],
        "limit": 5
    });
    let r = h.post("/crm/v3/objects/deals/search", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["total"], 12,
        "10..29 even (10 of them) + amounts 0 and 10"
    );
    let amounts: Vec<i64> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["properties"]["amount"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(amounts, vec![280, 260, 240, 220, 200]);
    assert_eq!(r.body["paging"]["next"]["after"], "5");
    let mut next = body;
    next["after"] = json!("10");
    let r = h.post("/crm/v3/objects/deals/search", next).await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 2);
    assert!(r.body.get("paging").is_none());
    for f in [
        json!({"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": "number"}),
        json!({"propertyName": "amount", "operator": "BETWEEN", "value": "0", "highValue": "290"}),
        json!({"propertyName": "dealstage", "operator": "IN", "values": ["closedwon", "qualifiedtobuy"]}),
        json!({"propertyName": "amount", "operator": "HAS_PROPERTY"}),
    ] {
        let r = h
            .post(
                "/crm/v3/objects/deals/search",
                json!({"filterGroups": [{"filters": [f.clone()]}]}),
            )
            .await;
        assert_eq!(r.body["total"], 30, "{f}");
    }
    let r = h
        .post("/crm/v3/objects/deals/search", json!({"query": "number 7"}))
        .await;
    assert_eq!(r.body["total"], 1);
    for bad in [
        json!({"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]}),
        json!({"filterGroups": [{"filters": [{"propertyName": "amount", "operator": "ROUGHLY", "value": "1"}]}]}),
        json!({"filterGroups": [{"filters": [{"propertyName": "amount", "operator": "EQ", "value": "abc"}]}]}),
        json!({"filterGroups": [{}, {}, {}, {}, {}, {}]}),
        json!({"limit": 201}),
        json!({"after": "x"}),
        json!({"sorts": [{"propertyName": "amount", "direction": "UP"}]}),
    ] {
        h.post("/crm/v3/objects/deals/search", bad)
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn search_stops_at_ten_thousand() {
    let h = start(Seed::Empty).await;
    h.hs.write(|s| {
        for i in 0..10_050 {
            let mut p = Map::new();
            p.insert("dealname".into(), json!(format!("bulk {i}")));
            let ch = s.validate(ObjectType::Deals, None, &p).unwrap();
            s.apply(
                ObjectType::Deals,
                None,
                ch,
                1_700_000_000_000 + (i % 100),
                &Default::default(),
            )
            .unwrap();
        }
    });
    let sorts = json!([{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}, {"propertyName": "hs_object_id", "direction": "ASCENDING"}]);
    let r = h
        .post(
            "/crm/v3/objects/deals/search",
            json!({"sorts": sorts, "limit": 200, "after": "9900"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["total"], 10_050);
    assert_eq!(
        r.body["results"].as_array().unwrap().len(),
        100,
        "the page stops at the cap"
    );
    assert_eq!(r.body["paging"]["next"]["after"], "10000");
    let r = h
        .post(
            "/crm/v3/objects/deals/search",
            json!({"sorts": sorts, "limit": 10, "after": "10000"}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert!(r.body["message"].as_str().unwrap().contains("10000"));

    // The engine's id-range read (counted from the indexes): the same total,
    // page and cap as the general path.
    let first =
        h.hs.read(|s| *s.table(ObjectType::Deals).records().keys().next().unwrap());
    let filters = json!([
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1700000000000"},
        {"propertyName": "hs_object_id", "operator": "GT", "value": first.to_string()},
        {"propertyName": "pipeline", "operator": "IN", "values": ["default"]},
    ]);
    let by_id = json!([{"propertyName": "hs_object_id", "direction": "ASCENDING"}]);
    let r = h
        .post(
            "/crm/v3/objects/deals/search",
            json!({"filterGroups": [{"filters": filters}], "sorts": by_id, "limit": 200, "after": "9900"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["total"], 10_049);
    let ids: Vec<u64> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 100, "the page stops at the cap");
    assert_eq!(r.body["paging"]["next"]["after"], "10000");
    let groups: Vec<Vec<dealbridge_emulator::hubspot::store::Filter>> =
        vec![serde_json::from_value(filters.clone()).unwrap()];
    let sorts = [dealbridge_emulator::hubspot::store::Sort {
        property: "hs_object_id".into(),
        descending: false,
    }];
    let (fast, slow) = h.hs.read(|s| {
        let run = |use_index| {
            s.search_plan(
                ObjectType::Deals,
                &groups,
                &sorts,
                None,
                9900,
                100,
                use_index,
            )
            .unwrap()
        };
        (run(true), run(false))
    });
    assert_eq!(fast.2, dealbridge_emulator::hubspot::store::Plan::Counted);
    assert_eq!((fast.0, &fast.1), (slow.0, &slow.1));
    assert_eq!(fast.1, ids);
    let r = h
        .post(
            "/crm/v3/objects/deals/search",
            json!({"filterGroups": [{"filters": filters}], "sorts": by_id, "limit": 10, "after": "10000"}),
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn pipelines_owners_and_stage_validation() {
    let h = start(Seed::Empty).await;
    let r = h.get("/crm/v3/pipelines/deals").await;
    let default = &r.body["results"][0];
    assert_eq!(default["id"], "default");
    assert_eq!(default["stages"].as_array().unwrap().len(), 7);
    let won = default["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "closedwon")
        .unwrap();
    assert_eq!(
        won["metadata"],
        json!({"isClosed": "true", "probability": "1.0"})
    );
    let r = h
        .post(
            "/crm/v3/pipelines/deals",
            json!({"label": "Salesforce - Default pipeline", "displayOrder": 1, "stages": [
                {"label": "Prospecting", "displayOrder": 0, "metadata": {"probability": "0.1"}},
                {"label": "Won", "displayOrder": 1, "metadata": {"probability": "1.0", "isClosed": "true"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let won_id = r.body["stages"][1]["id"].as_str().unwrap().to_string();
    h.post("/crm/v3/pipelines/deals", json!({"label": "Salesforce - Default pipeline", "displayOrder": 2, "stages": [{"label": "a", "displayOrder": 0, "metadata": {"probability": "0.1"}}]}))
        .await
        .assert_error(409, "CONFLICT");
    h.post(
        "/crm/v3/pipelines/deals",
        json!({"label": "P", "displayOrder": 2, "stages": []}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    h.get("/crm/v3/pipelines/deals/nope")
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    assert_eq!(
        h.get(&format!("/crm/v3/pipelines/deals/{pid}/stages"))
            .await
            .body["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let stage = h
        .get(&format!("/crm/v3/pipelines/deals/{pid}/stages/{won_id}"))
        .await;
    assert_eq!(stage.status, StatusCode::OK, "{}", stage.body);
    assert_eq!(stage.body["id"], json!(won_id));
    assert_eq!(stage.body["metadata"]["isClosed"], "true");
    h.get(&format!("/crm/v3/pipelines/deals/{pid}/stages/nope"))
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    // a default-pipeline stage is not valid in the new pipeline, and vice versa
    h.post(
        "/crm/v3/objects/deals",
        json!({"properties": {"pipeline": pid, "dealstage": "closedwon"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    let d = h
        .create("deals", json!({"pipeline": pid, "dealstage": won_id}))
        .await;
    h.patch(
        &format!("/crm/v3/objects/deals/{d}"),
        json!({"properties": {"pipeline": "default"}}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");
    let ok = h
        .patch(
            &format!("/crm/v3/objects/deals/{d}"),
            json!({"properties": {"pipeline": "default", "dealstage": "contractsent"}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    let o = h.get("/crm/v3/owners").await;
    let owners = o.body["results"].as_array().unwrap();
    assert_eq!(owners.len(), 7);
    for key in [
        "id",
        "email",
        "firstName",
        "lastName",
        "userId",
        "createdAt",
        "updatedAt",
        "archived",
    ] {
        assert!(owners[0].get(key).is_some(), "owner has {key}");
    }
    assert!(owners[0]["userId"].is_u64() && owners[0]["id"].is_string());
    let one = h.get("/crm/v3/owners?email=grace.hopper@example.com").await;
    assert_eq!(one.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.get("/crm/v3/owners?email=frances.allen@example.com")
            .await
            .body["results"],
        json!([])
    );
    let oid = owners[0]["id"].as_str().unwrap();
    assert_eq!(
        h.get(&format!("/crm/v3/owners/{oid}")).await.body["email"],
        owners[0]["email"]
    );
    let d = h.create("deals", json!({"hubspot_owner_id": oid})).await;
    assert_eq!(
        h.props_of("deals", &d, "hubspot_owner_id").await["hubspot_owner_id"],
        oid
    );
}

#[tokio::test]
async fn properties_with_history_lists_written_values_newest_first() {
    let h = start(Seed::Empty).await;
    let r = h
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "History", "amount": "100"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    for amount in ["200", ""] {
        let u = h
            .patch(
                &format!("/crm/v3/objects/deals/{id}"),
                json!({"properties": {"amount": amount}}),
            )
            .await;
        assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    }
    // An unchanged value is no new entry.
    h.patch(
        &format!("/crm/v3/objects/deals/{id}"),
        json!({"properties": {"dealname": "History"}}),
    )
    .await;
    let g = h
        .get(&format!(
            "/crm/v3/objects/deals/{id}?propertiesWithHistory=amount,dealname,hs_object_id,description,nosuch"
        ))
        .await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    let hist = &g.body["propertiesWithHistory"];
    let values = |p: &str| -> Vec<Value> {
        hist[p]
            .as_array()
            .unwrap_or_else(|| panic!("{p}: {hist}"))
            .iter()
            .map(|e| e["value"].clone())
            .collect()
    };
    assert_eq!(
        values("amount"),
        vec![json!(""), json!("200"), json!("100")]
    );
    assert_eq!(values("dealname"), vec![json!("History")]);
    for e in hist["amount"].as_array().unwrap() {
        assert!(is_iso(&e["timestamp"]), "{e}");
        assert_eq!(e["sourceType"], "API");
        assert!(e["sourceId"].is_string());
    }
    let stamps: Vec<&str> = hist["amount"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {stamps:?}"
    );
    // Set by the portal itself: one calculated entry with the current value.
    assert_eq!(values("hs_object_id"), vec![json!(id)]);
    assert_eq!(hist["hs_object_id"][0]["sourceType"], "CALCULATED");
    assert_eq!(values("description"), Vec::<Value>::new());
    assert!(hist.get("nosuch").is_none(), "{hist}");
    // Without the parameter there is no history.
    let g = h.get(&format!("/crm/v3/objects/deals/{id}")).await;
    assert!(g.body.get("propertiesWithHistory").is_none());

    // History is bounded per property.
    for i in 0..30 {
        h.patch(
            &format!("/crm/v3/objects/deals/{id}"),
            json!({"properties": {"amount": (1000 + i).to_string()}}),
        )
        .await;
    }
    let b = h
        .post(
            "/crm/v3/objects/deals/batch/read",
            json!({"inputs": [{"id": id}], "properties": ["dealname"], "propertiesWithHistory": ["amount"]}),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let amounts = b.body["results"][0]["propertiesWithHistory"]["amount"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(amounts.len(), 20);
    assert_eq!(amounts[0]["value"], "1029");
    assert_eq!(amounts[19]["value"], "1010");
    assert_eq!(b.body["results"][0]["properties"]["dealname"], "History");

    h.post(
        "/crm/v3/objects/deals/batch/read",
        json!({"inputs": [{"id": id}], "propertiesWithHistory": "amount"}),
    )
    .await
    .assert_error(400, "VALIDATION_ERROR");

    // The list reads history too, at most 50 records a page.
    for i in 0..60 {
        h.post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": format!("more {i}")}}),
        )
        .await;
    }
    let l = h
        .get("/crm/v3/objects/deals?limit=100&propertiesWithHistory=dealname")
        .await;
    assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    let results = l.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 50);
    assert!(l.body["paging"]["next"]["after"].is_string());
    assert_eq!(
        results[0]["propertiesWithHistory"]["dealname"][0]["value"],
        "History"
    );
    let l = h.get("/crm/v3/objects/deals?limit=100").await;
    assert_eq!(l.body["results"].as_array().unwrap().len(), 61);
}
