//! Shared helpers of the HubSpot emulator's HTTP tests: a server on
//! 127.0.0.1:0 and a tiny JSON client. Never talks to any other address.
#![allow(dead_code)]

use dealbridge_emulator::Seed;
use dealbridge_emulator::hubspot::HubSpot;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

pub struct Hs {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub hs: HubSpot,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts HubSpot's error envelope with this status and category.
    pub fn assert_error(&self, status: u16, category: &str) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["status"], "error", "{}", self.body);
        assert_eq!(self.body["category"], category, "{}", self.body);
        assert!(
            self.body["correlationId"]
                .as_str()
                .is_some_and(|c| c.len() == 36),
            "{}",
            self.body
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Starts an emulator with every rate limit off (tests that need limits set them).
pub async fn start(seed: Seed) -> Hs {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hs = HubSpot::new(&seed);
    hs.set_rate_limits(dealbridge_emulator::hubspot::ratelimit::RateLimitSettings::unlimited());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let router = hs.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Hs {
        base: format!("http://{addr}"),
        token: hs.token(),
        http: reqwest::Client::new(),
        hs,
    }
}

impl Hs {
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body {status}: {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.raw(
            method,
            path,
            Some(&self.token.clone()),
            body.map(|b| b.to_string()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Control API call (no token).
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.raw(method, path, None, body.map(|b| b.to_string()))
            .await
    }

    /// Creates a record and returns its id.
    pub async fn create(&self, object: &str, props: Value) -> String {
        let r = self
            .post(
                &format!("/crm/v3/objects/{object}"),
                json!({"properties": props}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }

    pub async fn props_of(&self, object: &str, id: &str, props: &str) -> Value {
        let r = self
            .get(&format!("/crm/v3/objects/{object}/{id}?properties={props}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["properties"].clone()
    }
}

/// True for `2026-05-20T20:49:32.123Z`-shaped strings.
pub fn is_iso(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}
