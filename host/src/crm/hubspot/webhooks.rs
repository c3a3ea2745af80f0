//! HubSpot webhook deliveries: checking a delivery's v3 signature
//! ([`verify_signature_v3`]) and reading its events ([`parse_delivery`]) into
//! [`ChangeEvent`]s, the change feed's unit.
//!
//! A delivery is a JSON array of events; each says which record changed (`objectId` of a
//! `deal.*`, `company.*` or `contact.*` subscription), how (`creation`, `deletion`,
//! `propertyChange`...), when, and who made the change (`changeSource`, `sourceId`: an
//! app's own API writes carry `INTEGRATION` and the app id), which is what lets the sync
//! tell its own writes from other people's ([`ChangeEvent::is_from_app`]).
//!
//! This module must never accept a delivery whose signature does not verify or whose
//! timestamp is older than five minutes, must compare signatures in constant time, and
//! must never fail a whole delivery because of one event: events it does not use
//! (association events, other object types) and events it cannot read (no usable
//! `eventId`, `objectId` or `occurredAt`) are left out, the latter counted
//! ([`ParsedDelivery::skipped`]), because HubSpot does not send a refused delivery again.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::crm::Secret;

/// The header holding the v3 signature.
pub const SIGNATURE_V3_HEADER: &str = "X-HubSpot-Signature-v3";
/// The header holding the delivery's timestamp (milliseconds since the epoch).
pub const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";
/// A delivery older than this (by its timestamp header) is refused.
pub const MAX_TIMESTAMP_AGE_MS: i64 = 5 * 60 * 1000;

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// A header the check needs is absent (or not text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The timestamp header is not a number of milliseconds.
    #[error("the {TIMESTAMP_HEADER} header {0:?} is not a number of milliseconds")]
    InvalidTimestamp(String),
    /// The timestamp is more than five minutes old.
    #[error("the delivery's timestamp is {age_ms} ms old (at most {MAX_TIMESTAMP_AGE_MS} ms)")]
    StaleTimestamp {
        /// How old it is.
        age_ms: i64,
    },
    /// The signature does not match the request (wrong secret, changed body or URL).
    #[error("the v3 signature does not match the request")]
    BadSignature,
    /// The body is not a JSON array of webhook events.
    #[error("the body is not a list of webhook events: {0}")]
    BadBody(String),
    /// The body is larger than the receiver accepts.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
}

/// The percent-encoded characters HubSpot's v3 rule decodes in the URI before signing.
const DECODED_IN_URI: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// The URI as HubSpot signs it: the listed percent-encodings (either case of hex digit)
/// decoded, everything else as it is.
fn signed_uri(uri: &str) -> String {
    let bytes = uri.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Some(c) = DECODED_IN_URI
                .iter()
                .find(|(enc, _)| bytes[i..i + 3].eq_ignore_ascii_case(enc.as_bytes()))
                .map(|(_, c)| *c)
        {
            out.push(c);
            i += 3;
            continue;
        }
        // Copy one character (URIs are ASCII, but never split a UTF-8 sequence).
        let ch = uri[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

type HmacSha256 = Hmac<Sha256>;

fn signature_mac(
    client_secret: &Secret,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(client_secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(method.as_bytes());
    mac.update(signed_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// The v3 signature HubSpot sends for a request: base64 of HMAC-SHA256, keyed with the
/// app's client secret, over method + URI (with HubSpot's decodings) + body + timestamp.
/// For tests and tools that play HubSpot's part.
pub fn sign_v3(
    client_secret: &Secret,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> String {
    let mac = signature_mac(client_secret, method, uri, body, timestamp);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a delivery by HubSpot's v3 rule: the timestamp (ms since the epoch, the
/// `X-HubSpot-Request-Timestamp` header) at most five minutes older than `now_ms`, and the
/// signature (the `X-HubSpot-Signature-v3` header) equal, in constant time, to the
/// HMAC-SHA256 of `method` + `uri` + `body` + `timestamp` under the client secret.
/// `uri` is the full URL HubSpot called (scheme, host, path and query).
pub fn verify_signature_v3(
    client_secret: &Secret,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
    signature: &str,
    now_ms: i64,
) -> Result<(), WebhookRejection> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookRejection::InvalidTimestamp(timestamp.chars().take(40).collect()))?;
    let age_ms = now_ms.saturating_sub(at);
    if age_ms > MAX_TIMESTAMP_AGE_MS {
        return Err(WebhookRejection::StaleTimestamp { age_ms });
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| WebhookRejection::BadSignature)?;
    signature_mac(client_secret, method, uri, body, timestamp)
        .verify_slice(&given)
        .map_err(|_| WebhookRejection::BadSignature)
}

/// What happened to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// `*.creation`.
    Created,
    /// `*.deletion` (and `contact.privacyDeletion`).
    Deleted,
    /// `*.propertyChange` of one property.
    PropertyChanged {
        /// The property's name.
        property: String,
    },
    /// Another event about the record (`merge`, `restore`...), which calls for reading it
    /// again: its suffix. A `restore` brings a deleted record back, so it is never a
    /// deletion.
    Other(String),
}

/// One event of a delivery about a deal, company or contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// HubSpot's id of the event (a redelivery has the same one).
    pub event_id: u64,
    /// The portal (hub) the record is in.
    pub portal_id: u64,
    /// The app whose subscription delivered the event.
    pub app_id: u64,
    /// The v3 object type: `deals`, `companies` or `contacts`.
    pub object_type: String,
    /// The record's id.
    pub object_id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// When, in milliseconds since the epoch.
    pub occurred_at_ms: i64,
    /// Who made the change: `INTEGRATION`, `API`, `CRM_UI`, `IMPORT`, ...
    pub change_source: String,
    /// The source's id (`userId:123`, or an app's id for `INTEGRATION`), when given.
    pub source_id: Option<String>,
}

impl ChangeEvent {
    /// Whether the app `app_id` made this change through the API (its own write).
    pub fn is_from_app(&self, app_id: u64) -> bool {
        matches!(self.change_source.as_str(), "INTEGRATION" | "API")
            && self
                .source_id
                .as_deref()
                .is_some_and(|s| s.trim() == app_id.to_string())
    }
}

/// An event as delivered; every field optional and of any JSON type, so that one event
/// of a kind we do not use, or one malformed event, never fails the delivery.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    event_id: Option<Value>,
    portal_id: Option<Value>,
    app_id: Option<Value>,
    occurred_at: Option<Value>,
    subscription_type: Option<Value>,
    object_id: Option<Value>,
    object_type_id: Option<Value>,
    change_source: Option<Value>,
    source_id: Option<Value>,
    property_name: Option<Value>,
}

/// A JSON number or a string of digits, as a `u64`.
fn number(v: &Option<Value>) -> Option<u64> {
    match v.as_ref()? {
        Value::Number(n) => n.as_u64().or_else(|| n.to_string().parse().ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// [`number`] that also fits an `i64` (what the store keeps).
fn signed_number(v: &Option<Value>) -> Option<i64> {
    number(v).and_then(|n| i64::try_from(n).ok())
}

fn text(v: &Option<Value>) -> Option<String> {
    match v.as_ref()? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The v3 object type of a subscription's object name (`deal`), or of a generic
/// `object.*` event's `objectTypeId` (`0-3`); `None` for objects the sync does not use.
fn object_type(name: &str, object_type_id: Option<&str>) -> Option<&'static str> {
    match name {
        "deal" => Some("deals"),
        "company" => Some("companies"),
        "contact" => Some("contacts"),
        "object" => match object_type_id? {
            "0-3" => Some("deals"),
            "0-2" => Some("companies"),
            "0-1" => Some("contacts"),
            _ => None,
        },
        _ => None,
    }
}

/// A delivery as read by [`parse_delivery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDelivery {
    /// The events about deals, companies and contacts, in the delivery's order.
    pub events: Vec<ChangeEvent>,
    /// Events left out because they could not be read: no subscription type, or an event
    /// about a deal, company or contact without a usable `eventId` (a number up to
    /// `i64::MAX`), `objectId` or `occurredAt`. Events the sync does not use (other
    /// objects, association changes) are not counted.
    pub skipped: usize,
}

/// What became of one event of a delivery.
enum EventReading {
    /// An event the sync uses.
    Read(ChangeEvent),
    /// An event about something the sync does not use.
    Unused,
    /// An event that cannot be read.
    Malformed,
}

fn read_event(r: RawEvent) -> EventReading {
    let Some(Value::String(subscription)) = &r.subscription_type else {
        return EventReading::Malformed;
    };
    let (object, action) = subscription.split_once('.').unwrap_or((subscription, ""));
    let object_type_id = text(&r.object_type_id);
    let Some(object_type) = object_type(object, object_type_id.as_deref()) else {
        return EventReading::Unused;
    };
    // Association changes name two records and no `objectId`; the sync does not use them.
    if action == "associationChange" {
        return EventReading::Unused;
    }
    let (Some(event_id), Some(object_id), Some(occurred_at_ms)) = (
        number(&r.event_id).filter(|&id| i64::try_from(id).is_ok()),
        number(&r.object_id),
        signed_number(&r.occurred_at),
    ) else {
        return EventReading::Malformed;
    };
    let kind = match action {
        "creation" => ChangeKind::Created,
        // A GDPR deletion removes the contact like any deletion.
        "deletion" | "privacyDeletion" => ChangeKind::Deleted,
        "propertyChange" => match text(&r.property_name) {
            Some(p) if !p.is_empty() => ChangeKind::PropertyChanged { property: p },
            _ => ChangeKind::Other(action.to_string()),
        },
        // `restore` (a deleted record is back), `merge`...: read the record again.
        other => ChangeKind::Other(other.to_string()),
    };
    EventReading::Read(ChangeEvent {
        event_id,
        portal_id: number(&r.portal_id).unwrap_or(0),
        app_id: number(&r.app_id).unwrap_or(0),
        object_type: object_type.to_string(),
        object_id: object_id.to_string(),
        kind,
        occurred_at_ms,
        change_source: text(&r.change_source).unwrap_or_default(),
        source_id: text(&r.source_id),
    })
}

/// Reads a delivery: a JSON array of event objects. Events about other objects than
/// deals, companies and contacts, and association changes, are left out; an event that
/// cannot be read (see [`ParsedDelivery::skipped`]) is left out and counted, so that it
/// never costs the others (HubSpot does not send a refused delivery again). Only a body
/// that is not a JSON array of objects is [`WebhookRejection::BadBody`].
pub fn parse_delivery(body: &[u8]) -> Result<ParsedDelivery, WebhookRejection> {
    let raw: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(body).map_err(|e| WebhookRejection::BadBody(e.to_string()))?;
    let mut out = ParsedDelivery {
        events: Vec::with_capacity(raw.len()),
        skipped: 0,
    };
    for fields in raw {
        let reading = match serde_json::from_value::<RawEvent>(Value::Object(fields)) {
            Ok(r) => read_event(r),
            Err(_) => EventReading::Malformed,
        };
        match reading {
            EventReading::Read(e) => out.events.push(e),
            EventReading::Unused => {}
            EventReading::Malformed => out.skipped += 1,
        }
    }
    Ok(out)
}

/// The events of a delivery ([`parse_delivery`] without the count of events left out).
pub fn parse_events(body: &[u8]) -> Result<Vec<ChangeEvent>, WebhookRejection> {
    parse_delivery(body).map(|d| d.events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "https://hooks.example.test/hooks/hubspot";

    #[test]
    fn a_signature_made_by_the_rule_verifies_and_any_change_fails() {
        let secret = Secret::new("client-secret");
        let body = br#"[{"eventId":1}]"#;
        let now = 1_700_000_000_000i64;
        let ts = now.to_string();
        let sig = sign_v3(&secret, "POST", URI, body, &ts);
        assert_eq!(
            verify_signature_v3(&secret, "POST", URI, body, &ts, &sig, now + 1_000),
            Ok(())
        );
        let wrong = Secret::new("other");
        assert_eq!(
            verify_signature_v3(&wrong, "POST", URI, body, &ts, &sig, now),
            Err(WebhookRejection::BadSignature)
        );
        assert_eq!(
            verify_signature_v3(&secret, "POST", URI, br#"[{"eventId":2}]"#, &ts, &sig, now),
            Err(WebhookRejection::BadSignature)
        );
        assert_eq!(
            verify_signature_v3(
                &secret,
                "POST",
                "https://x.test/hooks/hubspot",
                body,
                &ts,
                &sig,
                now
            ),
            Err(WebhookRejection::BadSignature)
        );
        assert_eq!(
            verify_signature_v3(&secret, "POST", URI, body, &ts, "not base64!", now),
            Err(WebhookRejection::BadSignature)
        );
    }

    #[test]
    fn the_signature_is_base64_of_hmac_sha256_over_method_uri_body_timestamp() {
        // Computed independently: HMAC-SHA256(key "secret", "POSThttps://a.test/h[]1") in base64.
        let mac = {
            let mut m = HmacSha256::new_from_slice(b"secret").unwrap();
            m.update(b"POSThttps://a.test/h[]1");
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        };
        assert_eq!(
            sign_v3(
                &Secret::new("secret"),
                "POST",
                "https://a.test/h",
                b"[]",
                "1"
            ),
            mac
        );
    }

    #[test]
    fn stale_and_unreadable_timestamps_are_refused_before_the_signature() {
        let secret = Secret::new("s");
        let now = 1_700_000_000_000i64;
        let old = (now - MAX_TIMESTAMP_AGE_MS - 1).to_string();
        let sig = sign_v3(&secret, "POST", URI, b"[]", &old);
        assert_eq!(
            verify_signature_v3(&secret, "POST", URI, b"[]", &old, &sig, now),
            Err(WebhookRejection::StaleTimestamp {
                age_ms: MAX_TIMESTAMP_AGE_MS + 1
            })
        );
        let edge = (now - MAX_TIMESTAMP_AGE_MS).to_string();
        let sig = sign_v3(&secret, "POST", URI, b"[]", &edge);
        assert!(verify_signature_v3(&secret, "POST", URI, b"[]", &edge, &sig, now).is_ok());
        assert!(matches!(
            verify_signature_v3(&secret, "POST", URI, b"[]", "yesterday", &sig, now),
            Err(WebhookRejection::InvalidTimestamp(_))
        ));
    }

    #[test]
    fn the_listed_percent_encodings_are_decoded_before_signing() {
        assert_eq!(
            signed_uri("https://a.test/h?x=a%3Ab%2fc%2A%20d%3B%7E"),
            "https://a.test/h?x=a:b/c*%20d;%7E"
        );
        // Never splits a character, whatever follows a `%`.
        assert_eq!(signed_uri("https://a.test/é%é%3a"), "https://a.test/é%é:");
        assert_eq!(signed_uri("https://a.test/%"), "https://a.test/%");
        let secret = Secret::new("s");
        let ts = "1000";
        let sig = sign_v3(&secret, "POST", "https://a.test/h?t=a:b", b"[]", ts);
        assert!(
            verify_signature_v3(
                &secret,
                "POST",
                "https://a.test/h?t=a%3Ab",
                b"[]",
                ts,
                &sig,
                1000
            )
            .is_ok()
        );
    }

    #[test]
    fn events_are_read_and_unused_ones_skipped() {
        let body = br#"[
          {"eventId":100,"subscriptionId":1,"portalId":62515,"appId":54321,"occurredAt":1700000000001,
           "subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":123,
           "changeSource":"CRM_UI","sourceId":"userId:7","changeFlag":"UPDATED",
           "propertyName":"amount","propertyValue":"10"},
          {"eventId":101,"portalId":62515,"appId":54321,"occurredAt":1700000000002,
           "subscriptionType":"company.creation","objectId":"456","changeSource":"INTEGRATION","sourceId":"54321"},
          {"eventId":102,"portalId":62515,"appId":54321,"occurredAt":1700000000003,
           "subscriptionType":"contact.deletion","objectId":789,"changeSource":"CRM_UI"},
          {"eventId":103,"subscriptionType":"deal.associationChange","fromObjectId":1,"toObjectId":2,
           "associationType":"DEAL_TO_CONTACT","associationRemoved":false},
          {"eventId":104,"subscriptionType":"ticket.creation","objectId":5},
          {"eventId":105,"occurredAt":5,"subscriptionType":"deal.merge","objectId":9,"changeSource":"CRM_UI","mergedObjectIds":[8]},
          {"eventId":106,"occurredAt":6,"subscriptionType":"object.creation","objectTypeId":"0-3","objectId":10},
          {"eventId":107,"occurredAt":7,"subscriptionType":"something.new","objectId":11},
          {"eventId":108,"occurredAt":8,"subscriptionType":"contact.privacyDeletion","objectId":12},
          {"eventId":109,"occurredAt":9,"subscriptionType":"company.restore","objectId":13},
          {"eventId":110,"occurredAt":10,"subscriptionType":"object.restore","objectTypeId":"0-3","objectId":14},
          {"eventId":111,"occurredAt":11,"subscriptionType":"object.creation","objectTypeId":"2-999","objectId":15}
        ]"#;
        let delivery = parse_delivery(body).unwrap();
        assert_eq!(delivery.skipped, 0, "unused events are not counted");
        let events = delivery.events;
        let ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, [100, 101, 102, 105, 106, 108, 109, 110]);
        assert_eq!(parse_events(body).unwrap(), events);
        assert_eq!(
            events[0],
            ChangeEvent {
                event_id: 100,
                portal_id: 62515,
                app_id: 54321,
                object_type: "deals".into(),
                object_id: "123".into(),
                kind: ChangeKind::PropertyChanged {
                    property: "amount".into()
                },
                occurred_at_ms: 1_700_000_000_001,
                change_source: "CRM_UI".into(),
                source_id: Some("userId:7".into()),
            }
        );
        assert_eq!(events[1].object_type, "companies");
        assert_eq!(events[1].kind, ChangeKind::Created);
        assert!(events[1].is_from_app(54321));
        assert!(!events[1].is_from_app(1));
        assert!(!events[0].is_from_app(54321));
        assert_eq!(events[2].kind, ChangeKind::Deleted);
        assert_eq!(events[2].source_id, None);
        assert_eq!(events[3].kind, ChangeKind::Other("merge".into()));
        assert_eq!(events[4].object_type, "deals");
        assert_eq!(events[5].kind, ChangeKind::Deleted);
        // A restored record is back: read again, never taken for a deletion.
        assert_eq!(
            (events[6].object_type.as_str(), &events[6].kind),
            ("companies", &ChangeKind::Other("restore".into()))
        );
        assert_eq!(
            (events[7].object_type.as_str(), &events[7].kind),
            ("deals", &ChangeKind::Other("restore".into()))
        );
    }

    #[test]
    fn an_event_that_cannot_be_read_is_skipped_and_counted_not_the_delivery() {
        let good = r#"{"eventId":1,"occurredAt":1000,"subscriptionType":"deal.propertyChange","objectId":5,"propertyName":"amount"}"#;
        let bad = [
            // No eventId, or one that is not a number, or too large for the store.
            r#"{"occurredAt":1000,"subscriptionType":"deal.creation","objectId":6}"#,
            r#"{"eventId":"x","occurredAt":1000,"subscriptionType":"deal.creation","objectId":6}"#,
            r#"{"eventId":9223372036854775808,"occurredAt":1000,"subscriptionType":"deal.creation","objectId":6}"#,
            r#"{"eventId":-4,"occurredAt":1000,"subscriptionType":"deal.creation","objectId":6}"#,
            // No objectId, or not a number.
            r#"{"eventId":2,"occurredAt":1000,"subscriptionType":"deal.deletion"}"#,
            r#"{"eventId":2,"occurredAt":1000,"subscriptionType":"deal.deletion","objectId":{"id":6}}"#,
            // No occurredAt, or not a number.
            r#"{"eventId":3,"subscriptionType":"contact.creation","objectId":6}"#,
            r#"{"eventId":3,"occurredAt":"yesterday","subscriptionType":"contact.creation","objectId":6}"#,
            // No subscription type, or not text.
            r#"{"eventId":4,"occurredAt":1000,"objectId":6}"#,
            r#"{"eventId":4,"occurredAt":1000,"subscriptionType":7,"objectId":6}"#,
        ];
        for one in bad {
            let body = format!("[{good},{one},{good}]");
            let delivery = parse_delivery(body.as_bytes()).unwrap_or_else(|e| panic!("{one}: {e}"));
            assert_eq!(delivery.skipped, 1, "{one}");
            let ids: Vec<u64> = delivery.events.iter().map(|e| e.event_id).collect();
            assert_eq!(ids, [1, 1], "{one}");
        }
        // The largest event id the store keeps is read.
        let body = br#"[{"eventId":9223372036854775807,"occurredAt":1,"subscriptionType":"deal.creation","objectId":6}]"#;
        let delivery = parse_delivery(body).unwrap();
        assert_eq!(
            (delivery.events[0].event_id, delivery.skipped),
            (i64::MAX as u64, 0)
        );
        // A property value of another JSON type does not spoil the event.
        let body = br#"[{"eventId":1,"occurredAt":1,"subscriptionType":"deal.propertyChange","objectId":6,"propertyName":"amount","propertyValue":12.5,"changeSource":"CRM_UI"}]"#;
        assert_eq!(parse_delivery(body).unwrap().events.len(), 1);
    }

    #[test]
    fn a_body_that_is_not_a_list_of_events_is_refused_with_the_reason() {
        for body in [
            &b"{}"[..],
            b"not json",
            b"[1]",
            b"[{\"eventId\":1},[]]",
            b"null",
        ] {
            assert!(
                matches!(parse_delivery(body), Err(WebhookRejection::BadBody(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse_delivery(b"[]").unwrap(), ParsedDelivery::default());
        assert_eq!(
            parse_delivery(b"[{\"objectId\":1}]").unwrap(),
            ParsedDelivery {
                events: vec![],
                skipped: 1
            }
        );
    }
}
