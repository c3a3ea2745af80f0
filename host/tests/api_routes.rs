//! Each API route's happy path and its bad-input cases, over real HTTP against a server
//! on 127.0.0.1:0 with a fresh SQLite store. Every refusal must be a 4xx with the JSON
//! error shape `{"error": {"code", "message"}}`.

mod api_support;

use std::time::Duration;

use api_support::{OPERATOR, Reply, TestServer, assert_error, default_fixtures};
use dealbridge::api::ApiConfig;
use dealbridge::cli::bench_service::tenants::tenant_component;
use dealbridge::store::{RunTrigger, Side, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_openapi_and_fallbacks() {
    let s = TestServer::start().await;
    let r = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let r = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/v1/admin/tenants",
        "/v1/admin/tenants/{id}/disable",
        "/v1/admin/tenants/{id}/enable",
        "/v1/admin/tenants/{id}/tokens",
        "/v1/admin/tenants/{id}/tokens/{token_id}",
        "/v1/tenants/{tenant}/connections/{crm}",
        "/v1/tenants/{tenant}/plugins",
        "/v1/tenants/{tenant}/plugins/{version}",
        "/v1/tenants/{tenant}/plugins/{version}/fixtures",
        "/v1/tenants/{tenant}/plugins/{version}/tests",
        "/v1/tenants/{tenant}/plugins/{version}/activate",
        "/v1/tenants/{tenant}/activation",
        "/v1/tenants/{tenant}/activation/rollback",
        "/v1/tenants/{tenant}/invocations",
        "/v1/tenants/{tenant}/invocations/{id}",
        "/v1/tenants/{tenant}/runs",
        "/v1/tenants/{tenant}/runs/{run}",
        "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/link",
        "/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/history",
        "/v1/tenants/{tenant}/sync-health",
        "/v1/tenants/{tenant}/sync-health/errors",
        "/v1/tenants/{tenant}/sync-health/errors/export",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let schemes = &r.body["components"]["securitySchemes"];
    assert_eq!(schemes["operator_token"]["scheme"], "bearer");
    assert_eq!(schemes["tenant_token"]["scheme"], "bearer");
    assert!(r.body["components"]["schemas"]["ErrorBody"].is_object());
    let schemas = &r.body["components"]["schemas"];
    for schema in [
        "RunView",
        "RunCounters",
        "LinkView",
        "SyncHealth",
        "SyncErrorView",
    ] {
        assert!(schemas[schema].is_object(), "{schema} missing");
    }
    let categories = schemas["ErrorCategory"]["enum"].as_array().unwrap();
    assert!(
        categories.contains(&json!("picklist_mismatch")),
        "{categories:?}"
    );
    let pair = &r.body["paths"]["/v1/tenants/{tenant}/records/{pair}/{side}/{record_id}/link"]["get"]
        ["parameters"][1];
    assert_eq!(pair["name"], "pair");
    assert_eq!(pair["schema"]["$ref"], "#/components/schemas/ObjectPair");
    let metrics = &r.body["paths"]["/metrics"]["get"];
    assert!(
        metrics["security"][0]["operator_token"].is_array(),
        "{metrics}"
    );

    let r = s.call(Method::GET, "/nope", None, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s.call(Method::DELETE, "/healthz", None, None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // Readiness turns 503 when shutdown starts; the server then stops gracefully.
    s.state.begin_shutdown();
    let r = s.call(Method::GET, "/readyz", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_create_list_disable_enable() {
    let s = TestServer::start().await;
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tenant"]["id"], "acme");
    assert_eq!(r.body["tenant"]["disabled"], false);
    let token = r.body["token"]["token"].as_str().unwrap().to_string();
    let token_id = r.body["token"]["token_id"].as_str().unwrap().to_string();
    assert!(token.starts_with("dbt.acme."));
    // The store keeps a hash, not the token.
    let stored = s
        .store
        .api_token(&TenantId::new("acme").unwrap(), &token_id)
        .await
        .unwrap()
        .unwrap();
    let secret = token.rsplit('.').next().unwrap();
    assert!(!stored.hash.contains(secret));
    assert!(stored.hash.starts_with("sha256:"));

    // The token works on the tenant's own routes.
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!([]));

    // Duplicates, bad ids and names, bad JSON, bad content type, unknown fields.
    let dup = s
        .call(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            Some(json!({"id": "acme", "name": "x"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "already_exists");
    for body in [
        json!({"id": "bad id", "name": "x"}),
        json!({"id": "", "name": "x"}),
        json!({"id": "ok", "name": ""}),
        json!({"id": "ok", "name": "a\u{0}b"}),
        json!({"id": "ok", "name": "x", "extra": 1}),
        json!({"id": 5, "name": "x"}),
        json!(["not", "an", "object"]),
    ] {
        let r = s
            .call(
                Method::POST,
                "/v1/admin/tenants",
                Some(OPERATOR),
                Some(body.clone()),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    let r = s
        .raw(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            Some("application/json"),
            b"{\"id\": ".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = s
        .raw(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let r = s
        .raw(
            Method::POST,
            "/v1/admin/tenants",
            Some(OPERATOR),
            None,
            b"{}".to_vec(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    // Listing pages by id.
    s.tenant("beta").await;
    s.tenant("gamma").await;
    let r = s
        .call(
            Method::GET,
            "/v1/admin/tenants?limit=2",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<&str> = r.body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    assert_eq!(r.body["next_after"], "beta");
    let r = s
        .call(
            Method::GET,
            "/v1/admin/tenants?after=beta&limit=2",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.body["tenants"][0]["id"], "gamma");
    assert_eq!(r.body["next_after"], Value::Null);
    let r = s
        .call(
            Method::GET,
            "/v1/admin/tenants?limit=abc",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    let r = s
        .call(
            Method::GET,
            "/v1/admin/tenants?limit=0",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r = s
        .call(
            Method::GET,
            "/v1/admin/tenants?after=a%20b",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");

    // Disable: the tenant's token is refused; enable: accepted again.
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants/acme/disable",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["disabled"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{}",
        r.text
    );
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "tenant_disabled");
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants/acme/enable",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.body["disabled"], false);
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for path in [
        "/v1/admin/tenants/nobody/disable",
        "/v1/admin/tenants/bad%20id/enable",
    ] {
        let r = s.call(Method::POST, path, Some(OPERATOR), None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }

    // A second token; revoking the first refuses it, the second still works.
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants/acme/tokens",
            Some(OPERATOR),
            Some(json!({"label": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let second = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["label"], "ci");
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/tenants/acme/tokens/{token_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/tenants/acme/tokens/{token_id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&second), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants/nobody/tokens",
            Some(OPERATOR),
            Some(json!({"label": "x"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_json_401_or_403() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;
    // No header, wrong scheme, garbage, a forged secret: 401 with WWW-Authenticate.
    let resp = s
        .client
        .get(s.url("/v1/tenants/acme/plugins"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let r = TestServer::reply(resp).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = s
        .client
        .get(s.url("/v1/tenants/acme/plugins"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_error(
        &TestServer::reply(resp).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in ["garbage", forged.as_str()] {
        let r = s
            .call(Method::GET, "/v1/tenants/acme/plugins", Some(bad), None)
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let r = s
            .call(Method::GET, "/v1/admin/tenants", Some(bad), None)
            .await;
        assert!(matches!(r.status.as_u16(), 401 | 403), "{}", r.text);
    }
    // The operator token is not a tenant token, and a tenant token is not the operator's.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/plugins",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = s
        .call(Method::GET, "/v1/admin/tenants", Some(&token), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = s.call(Method::GET, "/v1/admin/tenants", None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_sealed_and_never_returned() {
    let s = TestServer::start_with(ApiConfig {
        max_json_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let token = s.tenant("acme").await;
    let path = "/v1/tenants/acme/connections/salesforce";
    let body = json!({
        "base_url": "https://login.salesforce.com",
        "client_id": "3MVG-consumer-key",
        "client_secret": "SF-CLIENT-SECRET-123",
        "refresh_token": "SF-REFRESH-TOKEN-456"
    });
    let r = s.call(Method::PUT, path, Some(&token), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for secret in [
        "SF-CLIENT-SECRET-123",
        "SF-REFRESH-TOKEN-456",
        "3MVG-consumer-key",
    ] {
        assert!(
            !r.text.contains(secret),
            "PUT echoed a credential: {}",
            r.text
        );
    }
    assert_eq!(
        r.body["credentials_set"],
        json!(["client_id", "client_secret", "refresh_token"])
    );
    let key_id = r.body["key_id"].as_str().unwrap().to_string();
    assert!(key_id.starts_with("aes256gcm:"));

    let r = s.call(Method::GET, path, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["base_url"], "https://login.salesforce.com");
    assert_eq!(r.body["crm"], "salesforce");
    assert!(!r.text.contains("SECRET") && !r.text.contains("REFRESH"));

    // At rest: ciphertext with the key id, no plaintext.
    let sealed = s
        .store
        .connection(&TenantId::new("acme").unwrap(), Side::Salesforce)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sealed.key_id, key_id);
    let needle = b"SF-CLIENT-SECRET-123";
    assert!(!sealed.ciphertext.windows(needle.len()).any(|w| w == needle));

    // Replacing it draws a new nonce: different ciphertext for the same plaintext.
    let hubspot = json!({"base_url": "https://api.hubapi.com", "access_token": "pat-na1-xyz"});
    let r1 = s
        .call(
            Method::PUT,
            "/v1/tenants/acme/connections/hubspot",
            Some(&token),
            Some(hubspot.clone()),
        )
        .await;
    assert_eq!(r1.status, StatusCode::OK);
    let c1 = s
        .store
        .connection(&TenantId::new("acme").unwrap(), Side::HubSpot)
        .await
        .unwrap()
        .unwrap();
    s.call(
        Method::PUT,
        "/v1/tenants/acme/connections/hubspot",
        Some(&token),
        Some(hubspot),
    )
    .await;
    let c2 = s
        .store
        .connection(&TenantId::new("acme").unwrap(), Side::HubSpot)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(c1.ciphertext, c2.ciphertext);

    // Bad input.
    for (body, code) in [
        (
            json!({"base_url": "ftp://x", "access_token": "t"}),
            "invalid_input",
        ),
        (
            json!({"base_url": "https://x", "client_id": "only-an-id"}),
            "invalid_input",
        ),
        (
            json!({"base_url": "https://x", "access_token": "t", "api_key": "?"}),
            "invalid_input",
        ),
        (json!({"access_token": "t"}), "invalid_input"),
    ] {
        let r = s.call(Method::PUT, path, Some(&token), Some(body)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    let r = s
        .call(
            Method::PUT,
            "/v1/tenants/acme/connections/zoho",
            Some(&token),
            Some(json!({"base_url": "https://x", "access_token": "t"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .raw(
            Method::PUT,
            path,
            Some(&token),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = s
        .raw(
            Method::PUT,
            path,
            Some(&token),
            Some("application/x-www-form-urlencoded"),
            b"a=b".to_vec(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = json!({"base_url": "https://x", "access_token": "t".repeat(10_000)});
    let r = s.call(Method::PUT, path, Some(&token), Some(huge)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(r.message().contains("4096"), "{}", r.message());

    // Delete, then it is gone.
    let r = s.call(Method::DELETE, path, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.call(Method::DELETE, path, Some(&token), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s.call(Method::GET, path, Some(&token), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_upload_validates_like_plugin_check() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;
    let r = s
        .upload("acme", &token, dealbridge_guests::DEFAULT_RULES)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["created"], true);
    assert!(
        r.body["contract_version"]
            .as_str()
            .unwrap()
            .starts_with("0.1.")
    );
    assert_eq!(r.body["flat_rules"], true);
    let bytes = std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(r.body["version"]["sha256"], sha.as_str());
    assert_eq!(r.body["version"]["size_bytes"], bytes.len() as i64);
    assert!(
        r.body["description"]["mappings"].is_array(),
        "{}",
        r.body["description"]
    );
    let id = r.body["version"]["id"].as_i64().unwrap();

    // Content address: the same bytes again give the same version.
    let again = s
        .upload("acme", &token, dealbridge_guests::DEFAULT_RULES)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["version"]["id"], id);

    // Every input `plugin check` refuses is a 422 naming the reason.
    for (name, path) in dealbridge_guests::REFUSED_AT_LOAD {
        let r = s.upload("acme", &token, path).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_component");
        let m = r.message().to_lowercase();
        let needle = match *name {
            "hostile-filesystem" => "wasi:filesystem",
            "hostile-sockets" => "wasi:sockets",
            "hostile-http" => "wasi:http",
            "core-module" => "core webassembly module",
            "wrong-version" => "dealbridge:rules/rules@0.2.0",
            "wrong-world" => "example:other/api",
            "empty" => "empty",
            "not-wasm" => "not a webassembly file",
            _ => "invalid",
        };
        assert!(m.contains(needle), "{name}: {m}");
    }
    // Ones that load but whose exports lack the contract's types: refused too, and stored not.
    for (path, wrong) in [
        (
            dealbridge_guests::INPUT_WRONG_SIGNATURES,
            "rules/rules` exports `describe`",
        ),
        (
            dealbridge_guests::INPUT_WRONG_FLAT_SIGNATURE,
            "rules/flat-rules` exports `plan`",
        ),
    ] {
        let r = s.upload("acme", &token, path).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_component");
        assert!(
            r.message()
                .contains(&format!("{wrong} with a type other than the contract's")),
            "{path}: {}",
            r.message()
        );
    }
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_eq!(
        r.body.as_array().unwrap().len(),
        1,
        "refused uploads stored nothing"
    );

    // Content type and labels.
    let r = s
        .raw(
            Method::POST,
            "/v1/tenants/acme/plugins",
            Some(&token),
            Some("application/json"),
            bytes.clone(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let r = s
        .raw(
            Method::POST,
            "/v1/tenants/acme/plugins?label=",
            Some(&token),
            Some("application/octet-stream"),
            bytes.clone(),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r = s
        .raw(
            Method::POST,
            "/v1/tenants/acme/plugins?colour=red",
            Some(&token),
            Some("application/wasm"),
            bytes.clone(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");

    // List and get; unknown and malformed ids.
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/plugins/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["label"], "test");
    assert_eq!(r.body["active"], false);
    assert!(r.body.get("component_path").is_none());
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/plugins/999999",
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/plugins/abc",
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_upload_over_the_cap_is_413() {
    let s = TestServer::start_with(ApiConfig {
        max_component_bytes: 1000,
        ..ApiConfig::default()
    })
    .await;
    let token = s.tenant("acme").await;
    let r = s
        .upload("acme", &token, dealbridge_guests::DEFAULT_RULES)
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(r.message().contains("1000"), "{}", r.message());
    // Chunked, without a Content-Length: the cap still holds.
    let head = chunked_upload(&s.base, &token, 4096).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    let r = s
        .call(Method::GET, "/v1/tenants/acme/plugins", Some(&token), None)
        .await;
    assert_eq!(r.body, json!([]));
}

/// An upload far over the cap, with its Content-Length declared: the server reads the
/// body on and throws it away before it answers, so the client can send all of it and
/// then reads a JSON 413 (a server that answered and closed early would reset the
/// connection under the client's writes). The connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_gets_a_json_413_not_a_connection_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(ApiConfig {
        max_component_bytes: 64 << 10,
        ..ApiConfig::default()
    })
    .await;
    let token = s.tenant("acme").await;
    let total: usize = 32 << 20;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/tenants/acme/plugins HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {total}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0u8; 64 << 10];
    for sent in (0..total).step_by(chunk.len()) {
        sock.write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("the server cut the upload off after {sent} bytes: {e}"));
    }
    // The answer, then the same connection serves the next request.
    let list = format!(
        "GET /v1/tenants/acme/plugins HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    sock.write_all(list.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"payload_too_large\""), "{out}");
    assert!(out.contains("65536"), "the message names the cap: {out}");
    assert!(
        out.contains("HTTP/1.1 200"),
        "the connection was kept: {out}"
    );

    // Chunked, without a Content-Length: the same.
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/tenants/acme/plugins HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
    for sent in (0..total).step_by(chunk.len()) {
        sock.write_all(&frame)
            .await
            .unwrap_or_else(|e| panic!("the server cut the upload off after {sent} bytes: {e}"));
    }
    sock.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"payload_too_large\""), "{out}");

    // The same through an ordinary client.
    let r = s
        .raw(
            Method::POST,
            "/v1/tenants/acme/plugins",
            Some(&token),
            Some("application/wasm"),
            vec![0u8; total],
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

/// Sends `total` bytes of a component upload with `Transfer-Encoding: chunked` (no
/// Content-Length) over a raw socket; returns what the server answered.
async fn chunked_upload(base: &str, token: &str, total: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/tenants/acme/plugins HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 256];
    let mut sent = 0;
    while sent < total {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if sock.write_all(&frame).await.is_err() {
            break; // the server answered and closed early
        }
        sent += chunk.len();
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_tests_activation_and_rollback() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;
    let v1 = s.default_rules_version("acme", &token).await;
    let base = format!("/v1/tenants/acme/plugins/{v1}");

    // No fixtures: tests run empty, activation is refused.
    let r = s
        .call(Method::POST, &format!("{base}/tests"), Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["passed"].as_u64(), r.body["all_passed"].as_bool()),
        (Some(0), Some(false))
    );
    let r = s
        .call(
            Method::POST,
            &format!("{base}/activate"),
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "no_rule_tests");

    // Attach the default rules' own fixtures.
    let fixtures = default_fixtures();
    for (name, fx) in &fixtures {
        let r = s
            .call(
                Method::POST,
                &format!("{base}/fixtures"),
                Some(&token),
                Some(json!({"name": name, "fixture": fx})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
        assert_eq!(r.body["expected"], fx["expect"]);
        assert!(r.body["input"].get("expect").is_none());
    }
    let (name0, fx0) = &fixtures[0];
    let r = s
        .call(
            Method::POST,
            &format!("{base}/fixtures"),
            Some(&token),
            Some(json!({"name": name0, "fixture": fx0})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "already_exists");
    // Not fixtures: the message names the JSON path.
    let mut bad = fx0.clone();
    bad["batch"]["pairs"][0]["salesforce"]["colour"] = json!("red");
    for (body, needle) in [
        (json!({"name": "bad", "fixture": bad}), "colour"),
        (json!({"name": "bad", "fixture": {"call": "sing"}}), "call"),
        (json!({"name": "bad", "fixture": [1]}), "object"),
        (json!({"name": "", "fixture": {}}), "name"),
        (json!({"fixture": {}}), "name"),
    ] {
        let r = s
            .call(
                Method::POST,
                &format!("{base}/fixtures"),
                Some(&token),
                Some(body),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        assert!(r.message().contains(needle), "{}", r.message());
    }
    let r = s
        .call(Method::GET, &format!("{base}/fixtures"), Some(&token), None)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), fixtures.len());
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/plugins/424242/fixtures",
            Some(&token),
            Some(json!({"name": "x", "fixture": {}})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Tests on demand: every default fixture passes, and the result is stored.
    let r = s
        .call(Method::POST, &format!("{base}/tests"), Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["passed"].as_u64().unwrap() as usize,
        fixtures.len(),
        "{}",
        r.text
    );
    assert_eq!(r.body["all_passed"], true);
    assert!(r.body["cases"][0]["fuel_used"].as_u64().unwrap() > 0);
    let ran_at = r.body["ran_at_ms"].clone();
    let got = s.call(Method::GET, &base, Some(&token), None).await;
    assert_eq!(got.body["test_results"]["ran_at_ms"], ran_at);

    // Activation runs the tests again and activates.
    let r = s
        .call(
            Method::POST,
            &format!("{base}/activate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["activation"]["version_id"], v1);
    assert_eq!(r.body["test_results"]["all_passed"], true);
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/activation",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["active"]["id"], v1);

    // A failing fixture blocks activation; the failed results are stored and shown.
    let v2 = {
        let r = s
            .upload("acme", &token, dealbridge_guests::OWNER_LOOKUP)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["version"]["id"].as_i64().unwrap()
    };
    let base2 = format!("/v1/tenants/acme/plugins/{v2}");
    let r = s
        .call(
            Method::POST,
            &format!("{base2}/activate"),
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "no_rule_tests");
    let describe_ok = json!({"call": "describe"});
    let describe_wrong = json!({"call": "describe", "expect": {"error": {"kind": "config"}}});
    for (name, fx) in [
        ("describes", describe_ok),
        ("expects-an-error", describe_wrong),
    ] {
        let r = s
            .call(
                Method::POST,
                &format!("{base2}/fixtures"),
                Some(&token),
                Some(json!({"name": name, "fixture": fx})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = s
        .call(
            Method::POST,
            &format!("{base2}/activate"),
            Some(&token),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "tests_failed");
    assert!(r.message().contains("expects-an-error"), "{}", r.message());
    let got = s.call(Method::GET, &base2, Some(&token), None).await;
    assert_eq!(got.body["test_results"]["all_passed"], false);
    assert_eq!(got.body["test_results"]["failed"], 1);
    assert_eq!(got.body["active"], false);
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/activation",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["active"]["id"], v1, "still the tested version");

    // A third version that passes, activated, then rolled back in one call.
    let ok_version = {
        // Re-attach a passing-only fixture set on a fresh upload of the hostile
        // component (which behaves with `{}`): a different digest.
        let r = s.upload("acme", &token, dealbridge_guests::HOSTILE).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["version"]["id"].as_i64().unwrap()
    };
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/acme/plugins/{ok_version}/fixtures"),
            Some(&token),
            Some(json!({"name": "describes", "fixture": {"call": "describe"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/acme/plugins/{ok_version}/activate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/activation/rollback",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["version_id"], v1);
    assert_eq!(r.body["is_rollback"], true);
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/activation",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["active"]["id"], v1);
    assert!(r.body["history"].as_array().unwrap().len() >= 3);
    // Rolling back further ends at "nothing to roll back", never a 5xx.
    let mut last = StatusCode::OK;
    for _ in 0..4 {
        let r = s
            .call(
                Method::POST,
                "/v1/tenants/acme/activation/rollback",
                Some(&token),
                None,
            )
            .await;
        last = r.status;
        if r.status != StatusCode::OK {
            assert_error(&r, StatusCode::CONFLICT, "nothing_to_roll_back");
            break;
        }
    }
    assert_eq!(last, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_reports_list_and_get() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;
    let t = TenantId::new("acme").unwrap();
    let lease = s
        .store
        .try_acquire_lease(&t, "test", 60_000, 1)
        .await
        .unwrap()
        .unwrap();
    let run_id = s
        .store
        .start_run(&lease, RunTrigger::Manual, 1)
        .await
        .unwrap()
        .id;
    let mut ids = Vec::new();
    for (run, fuel) in [(Some(run_id), 100), (Some(run_id), 200), (None, 300)] {
        let r = s
            .store
            .add_invocation_report(&t, run, None, &json!({"fuel_used": fuel}), 1000 + fuel)
            .await
            .unwrap();
        ids.push(r.id);
    }
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/invocations",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let got: Vec<i64> = r.body["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[2], ids[1], ids[0]]);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/invocations?run_id={run_id}&limit=1"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["reports"][0]["id"], ids[1]);
    assert_eq!(r.body["next_after"], ids[1]);
    let r = s
        .call(
            Method::GET,
            &format!(
                "/v1/tenants/acme/invocations?run_id={run_id}&limit=1&after={}",
                ids[1]
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.body["reports"][0]["id"], ids[0]);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/acme/invocations/{}", ids[1]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["report"]["fuel_used"], 200);
    assert_eq!(r.body["run_id"], run_id);
    for (path, status, code) in [
        (
            "/v1/tenants/acme/invocations/999999",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &format!("/v1/tenants/acme/invocations/{}", i64::MAX) as &str,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/tenants/acme/invocations/x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/tenants/acme/invocations?limit=5000",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "/v1/tenants/acme/invocations?run_id=seven",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let r = s.call(Method::GET, path, Some(&token), None).await;
        assert_error(&r, status, code);
    }
}

/// `GET /v1/tenants/acme/sync` on `server` with `token`.
async fn status(server: &TestServer, token: &str) -> Reply {
    server
        .call(Method::GET, "/v1/tenants/acme/sync", Some(token), None)
        .await
}

/// A tenant token found valid is kept for a while instead of being read from the store
/// on every request. A revoke or a disable is honoured at once by the replica that made
/// it; another replica honours it once its kept entry is older than its TTL (zero: at
/// once; an hour: not yet), or at once when it is asked to revoke or disable too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revokes_and_disables_are_honoured_at_once_here_and_within_the_ttl_elsewhere() {
    let s = TestServer::start().await;
    let ttl = |secs| ApiConfig {
        token_cache_ttl: Duration::from_secs(secs),
        ..ApiConfig::default()
    };
    let fresh = s.another_replica(ttl(0)).await;
    let stale = s.another_replica(ttl(3600)).await;
    let first = s.tenant("acme").await;
    let first_id = first.split('.').nth(2).unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            "/v1/admin/tenants/acme/tokens",
            Some(OPERATOR),
            Some(json!({"label": "second"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let second = r.body["token"].as_str().unwrap().to_string();
    for server in [&s, &fresh, &stale] {
        for token in [&first, &second] {
            let r = status(server, token).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
    }
    // A kept token's secret is still checked.
    let mut forged = first.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    for server in [&s, &stale] {
        assert_error(
            &status(server, &forged).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }

    let revoke = format!("/v1/admin/tenants/acme/tokens/{first_id}");
    let r = s.call(Method::DELETE, &revoke, Some(OPERATOR), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    for server in [&s, &fresh] {
        assert_error(
            &status(server, &first).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    let r = status(&stale, &first).await;
    assert_eq!(r.status, StatusCode::OK, "kept for its TTL: {}", r.text);
    // Asked to revoke it too (already revoked: 404), the stale replica forgets it.
    let r = stale
        .call(Method::DELETE, &revoke, Some(OPERATOR), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &status(&stale, &first).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    let disable = "/v1/admin/tenants/acme/disable";
    let r = s.call(Method::POST, disable, Some(OPERATOR), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for server in [&s, &fresh] {
        assert_error(
            &status(server, &second).await,
            StatusCode::FORBIDDEN,
            "tenant_disabled",
        );
    }
    let r = status(&stale, &second).await;
    assert_eq!(r.status, StatusCode::OK, "kept for its TTL: {}", r.text);
    let r = stale
        .call(Method::POST, disable, Some(OPERATOR), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_error(
        &status(&stale, &second).await,
        StatusCode::FORBIDDEN,
        "tenant_disabled",
    );

    stale.shutdown().await;
    fresh.shutdown().await;
    s.shutdown().await;
}

/// With room for two compiled plugins, a third drops the least recently used one (not
/// all of them), and a dropped plugin is loaded again when next needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_cache_drops_the_least_recently_used_and_reloads_it_on_demand() {
    let s = TestServer::start_with(ApiConfig {
        plugin_cache_entries: 2,
        ..ApiConfig::default()
    })
    .await;
    let token = s.tenant("acme").await;
    let mut versions = Vec::new();
    let upload = |name: &'static str| {
        let (s, token) = (&s, token.clone());
        async move {
            let r = s
                .raw(
                    Method::POST,
                    "/v1/tenants/acme/plugins?label=test",
                    Some(&token),
                    Some("application/wasm"),
                    tenant_component(name),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let v = &r.body["version"];
            (
                v["id"].as_i64().unwrap(),
                v["sha256"].as_str().unwrap().to_string(),
            )
        }
    };
    let tests = |id: i64| {
        let (s, token) = (&s, token.clone());
        async move {
            let path = format!("/v1/tenants/acme/plugins/{id}/tests");
            let r = s.call(Method::POST, &path, Some(&token), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r
        }
    };
    for name in ["one", "two"] {
        versions.push(upload(name).await);
    }
    let [(v1, d1), (v2, d2)] = [versions[0].clone(), versions[1].clone()];
    assert_eq!(s.state.cached_plugin_digests(), [d1.clone(), d2.clone()]);
    // Testing `one` uses its kept plugin: `two` becomes the least recently used.
    tests(v1).await;
    assert_eq!(s.state.cached_plugin_digests(), [d2.clone(), d1.clone()]);
    let (_, d3) = upload("three").await;
    assert_eq!(s.state.cached_plugin_digests(), [d1.clone(), d3.clone()]);

    // `two` was dropped: testing it loads it again, and it runs.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/tenants/acme/plugins/{v2}/fixtures"),
            Some(&token),
            Some(json!({"name": "describes", "fixture": {"call": "describe"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = tests(v2).await;
    assert_eq!(
        (r.body["passed"].as_u64(), r.body["failed"].as_u64()),
        (Some(1), Some(0)),
        "{}",
        r.text
    );
    assert_eq!(s.state.cached_plugin_digests(), [d3, d2]);
    s.shutdown().await;
}

/// A request refused before its body was read leaves that body on the connection, which the
/// server then closes: the answer says so (`Connection: close`), so that a client never sends
/// its next request on a connection that is going away. A request whose body was taken, and a
/// request without a body, keep their connection.
#[tokio::test]
async fn a_refused_upload_says_its_connection_closes() {
    let s = TestServer::start().await;
    let token = s.tenant("acme").await;
    let bytes = std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap();
    let refused = s
        .client
        .post(s.url("/v1/tenants/acme/plugins"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(refused.headers()["connection"], "close");
    let accepted = s
        .client
        .post(s.url("/v1/tenants/acme/plugins"))
        .bearer_auth(&token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
    assert!(accepted.headers().get("connection").is_none());
    let listed = s
        .client
        .get(s.url("/v1/tenants/acme/plugins"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert!(listed.headers().get("connection").is_none());
}
