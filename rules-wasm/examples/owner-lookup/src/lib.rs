//! Example rules plugin: syncs a deal's name and owner, resolving the owner through the host's
//! CRM egress instead of `lookups.owners`, to show how a plugin calls its tenant's CRMs.
//!
//! Salesforce → HubSpot: `OwnerId` → SOQL `SELECT Email FROM User WHERE Id = '…'` →
//! HubSpot `GET /crm/v3/owners?email=…` → `hubspot_owner_id`.
//! HubSpot → Salesforce: `hubspot_owner_id` → `GET /crm/v3/owners/{id}` → email →
//! SOQL `SELECT Id FROM User WHERE Email = '…' AND IsActive = true` → `OwnerId`.
//! Each owner is looked up once per batch. The plugin never sees a token or a URL: it names the
//! CRM and a path, and the host does the rest. It must never build a query from unchecked input.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

/// A per-batch cache with a fixed hasher (no random seed: the component imports no WASI).
type Cache = HashMap<String, Result<String, RuleError>, BuildHasherDefault<DefaultHasher>>;

mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        // Built against the frozen 0.1.0 contract on purpose: the host's tests run it as the
        // proof that a component of an older 0.1.x release keeps running unchanged.
        path: "../../../wit/compat/0.1.0",
        additional_derives: [PartialEq],
    });
}

use bindings::dealbridge::rules::crm::{Method, Request, RequestError, Response};
use bindings::dealbridge::rules::types::{Batch, Crm, CrmRecord, Direction, ObjectPair, Value};
use bindings::exports::dealbridge::rules::rules::{
    Description, ErrorKind, FieldMapping, FieldWrite, PairOutcome, PairWrites, RuleError, Skip,
    SyncRule,
};

/// The Salesforce REST API version the example speaks.
pub const SF_API: &str = "/services/data/v62.0";

/// Sends one request to a CRM: the `crm` import in the component, a fake in tests.
pub trait Transport {
    /// Sends the request and returns the CRM's answer.
    fn send(&mut self, req: &Request) -> Result<Response, RequestError>;
}

fn error(kind: ErrorKind, field: &str, message: String) -> RuleError {
    RuleError {
        kind,
        field: Some(field.to_string()),
        message,
    }
}

/// A SOQL query result page (only the rows are read).
#[derive(serde::Deserialize)]
struct QueryPage<T> {
    records: Vec<T>,
}

/// `SELECT Email FROM User ...`
#[derive(serde::Deserialize)]
struct UserEmail {
    #[serde(rename = "Email")]
    email: Option<String>,
}

/// `SELECT Id FROM User ...`
#[derive(serde::Deserialize)]
struct UserId {
    #[serde(rename = "Id")]
    id: String,
}

/// One HubSpot owner (`/crm/v3/owners`).
#[derive(serde::Deserialize)]
struct HubSpotOwner {
    id: String,
    email: Option<String>,
}

/// A page of HubSpot owners.
#[derive(serde::Deserialize)]
struct HubSpotOwners {
    results: Vec<HubSpotOwner>,
}

fn get<T: serde::de::DeserializeOwned>(
    t: &mut dyn Transport,
    target: Crm,
    path: String,
    query: Vec<(String, String)>,
) -> Result<T, String> {
    let req = Request {
        target,
        method: Method::Get,
        path: path.clone(),
        query,
        headers: vec![("accept".to_string(), "application/json".to_string())],
        body: None,
    };
    let resp = t
        .send(&req)
        .map_err(|e| format!("GET {path} was not delivered: {e:?}"))?;
    if resp.status != 200 {
        return Err(format!("GET {path} answered HTTP {}", resp.status));
    }
    serde_json::from_slice(&resp.body).map_err(|e| format!("GET {path} returned bad JSON: {e}"))
}

/// True for a 15- or 18-character alphanumeric Salesforce id (safe inside a SOQL literal).
fn is_sf_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Escapes a value for a single-quoted SOQL string literal.
fn soql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn soql<T: serde::de::DeserializeOwned>(
    t: &mut dyn Transport,
    q: String,
) -> Result<Option<T>, String> {
    let page: QueryPage<T> = get(
        t,
        Crm::Salesforce,
        format!("{SF_API}/query"),
        vec![("q".to_string(), q)],
    )?;
    Ok(page.records.into_iter().next())
}

/// Resolves owners across the CRMs, caching each answer for the batch.
pub struct OwnerResolver<'t> {
    transport: &'t mut dyn Transport,
    sf_to_hs: Cache,
    hs_to_sf: Cache,
}

impl<'t> OwnerResolver<'t> {
    /// A resolver with an empty cache.
    pub fn new(transport: &'t mut dyn Transport) -> Self {
        OwnerResolver {
            transport,
            sf_to_hs: Cache::default(),
            hs_to_sf: Cache::default(),
        }
    }

    /// The HubSpot owner id of a Salesforce user id.
    pub fn hubspot_owner(&mut self, user_id: &str) -> Result<String, RuleError> {
        if let Some(hit) = self.sf_to_hs.get(user_id) {
            return hit.clone();
        }
        let r = self.lookup_hubspot_owner(user_id);
        self.sf_to_hs.insert(user_id.to_string(), r.clone());
        r
    }

    fn lookup_hubspot_owner(&mut self, user_id: &str) -> Result<String, RuleError> {
        let other = |m: String| error(ErrorKind::Other, "OwnerId", m);
        if !is_sf_id(user_id) {
            return Err(error(
                ErrorKind::InvalidValue,
                "OwnerId",
                format!("`{user_id}` is not a Salesforce id"),
            ));
        }
        let user: Option<UserEmail> = soql(
            self.transport,
            format!(
                "SELECT Email FROM User WHERE Id = {}",
                soql_literal(user_id)
            ),
        )
        .map_err(other)?;
        let Some(email) = user.and_then(|u| u.email).filter(|e| !e.is_empty()) else {
            return Err(error(
                ErrorKind::MissingOwner,
                "OwnerId",
                format!("Salesforce user `{user_id}` was not found or has no email"),
            ));
        };
        let owners: HubSpotOwners = get(
            self.transport,
            Crm::Hubspot,
            "/crm/v3/owners".to_string(),
            vec![("email".to_string(), email.clone())],
        )
        .map_err(other)?;
        owners
            .results
            .into_iter()
            .next()
            .map(|o| o.id)
            .ok_or_else(|| {
                error(
                    ErrorKind::MissingOwner,
                    "OwnerId",
                    format!(
                        "no HubSpot owner has the email {email} of Salesforce user `{user_id}`"
                    ),
                )
            })
    }

    /// The Salesforce user id of a HubSpot owner id.
    pub fn salesforce_user(&mut self, owner_id: &str) -> Result<String, RuleError> {
        if let Some(hit) = self.hs_to_sf.get(owner_id) {
            return hit.clone();
        }
        let r = self.lookup_salesforce_user(owner_id);
        self.hs_to_sf.insert(owner_id.to_string(), r.clone());
        r
    }

    fn lookup_salesforce_user(&mut self, owner_id: &str) -> Result<String, RuleError> {
        let other = |m: String| error(ErrorKind::Other, "hubspot_owner_id", m);
        if owner_id.is_empty() || !owner_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(
                ErrorKind::InvalidValue,
                "hubspot_owner_id",
                format!("`{owner_id}` is not a HubSpot owner id"),
            ));
        }
        let owner: HubSpotOwner = get(
            self.transport,
            Crm::Hubspot,
            format!("/crm/v3/owners/{owner_id}"),
            Vec::new(),
        )
        .map_err(other)?;
        let Some(email) = owner.email.filter(|e| !e.is_empty()) else {
            return Err(error(
                ErrorKind::MissingOwner,
                "hubspot_owner_id",
                format!("HubSpot owner `{owner_id}` has no email"),
            ));
        };
        let user: Option<UserId> = soql(
            self.transport,
            format!(
                "SELECT Id FROM User WHERE Email = {} AND IsActive = true",
                soql_literal(&email)
            ),
        )
        .map_err(other)?;
        user.map(|u| u.id).ok_or_else(|| {
            error(
                ErrorKind::MissingOwner,
                "hubspot_owner_id",
                format!(
                    "no active Salesforce user has the email {email} of HubSpot owner `{owner_id}`"
                ),
            )
        })
    }
}

/// The value of field `idx` in a record (the last one given wins).
fn field(rec: &Option<CrmRecord>, idx: Option<u32>) -> Option<&Value> {
    let idx = idx?;
    rec.as_ref()?
        .fields
        .iter()
        .rev()
        .find(|f| f.field == idx)
        .map(|f| &f.value)
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::Text(t)) if !t.is_empty() => Some(t),
        _ => None,
    }
}

/// The plugin's description.
pub fn describe() -> Description {
    let m = |sf: &str, hs: &str, rule| FieldMapping {
        object_pair: ObjectPair::OpportunityDeal,
        salesforce_field: sf.to_string(),
        hubspot_field: hs.to_string(),
        rule,
    };
    Description {
        name: "example-owner-lookup".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        object_pairs: vec![ObjectPair::OpportunityDeal],
        mappings: vec![
            m("Name", "dealname", SyncRule::PreferSalesforceUnlessBlank),
            m("OwnerId", "hubspot_owner_id", SyncRule::TwoWay),
        ],
        extra_fields: Vec::new(),
    }
}

/// Plans a batch: the deal name from Salesforce, the owner from the side whose batch it is.
pub fn plan(batch: &Batch, transport: &mut dyn Transport) -> Vec<PairOutcome> {
    let pos = |t: &[String], n: &str| t.iter().position(|f| f == n).map(|i| i as u32);
    let (sf_name, sf_owner) = (
        pos(&batch.salesforce_fields, "Name"),
        pos(&batch.salesforce_fields, "OwnerId"),
    );
    let (hs_name, hs_owner) = (
        pos(&batch.hubspot_fields, "dealname"),
        pos(&batch.hubspot_fields, "hubspot_owner_id"),
    );
    let mut owners = OwnerResolver::new(transport);
    batch
        .pairs
        .iter()
        .map(|pair| {
            let mut w = PairWrites {
                salesforce: Vec::new(),
                hubspot: Vec::new(),
                salesforce_associations: None,
                hubspot_associations: None,
            };
            let name = text(field(&pair.salesforce, sf_name));
            if let Some(n) = name
                && text(field(&pair.hubspot, hs_name)) != Some(n)
            {
                w.hubspot.push(FieldWrite {
                    field: "dealname".to_string(),
                    value: Value::Text(n.to_string()),
                });
            }
            let sf_o = text(field(&pair.salesforce, sf_owner));
            let hs_o = text(field(&pair.hubspot, hs_owner));
            let owner = match batch.direction {
                Direction::SalesforceToHubspot => sf_o.map(|u| {
                    owners.hubspot_owner(u).map(|h| {
                        (hs_o != Some(h.as_str())).then(|| {
                            w.hubspot.push(FieldWrite {
                                field: "hubspot_owner_id".to_string(),
                                value: Value::Text(h),
                            })
                        });
                    })
                }),
                Direction::HubspotToSalesforce => hs_o.map(|h| {
                    owners.salesforce_user(h).map(|u| {
                        (sf_o != Some(u.as_str())).then(|| {
                            w.salesforce.push(FieldWrite {
                                field: "OwnerId".to_string(),
                                value: Value::Text(u),
                            })
                        });
                    })
                }),
            };
            if let Some(Err(e)) = owner {
                return PairOutcome::Error(e);
            }
            if w.salesforce.is_empty() && w.hubspot.is_empty() {
                PairOutcome::Skip(Skip::UpToDate)
            } else {
                PairOutcome::Write(w)
            }
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::bindings::dealbridge::rules::crm::{self, Request, RequestError, Response};
    use super::bindings::dealbridge::rules::types::{Batch, FieldInfo};
    use super::bindings::exports::dealbridge::rules::rules::{
        Description, Guest, Inclusion, PairOutcome, RuleError,
    };

    struct HostCrm;

    impl super::Transport for HostCrm {
        fn send(&mut self, req: &Request) -> Result<Response, RequestError> {
            crm::send(req)
        }
    }

    struct OwnerLookup;

    impl Guest for OwnerLookup {
        fn describe(_schema: Vec<FieldInfo>) -> Result<Description, RuleError> {
            Ok(super::describe())
        }

        fn condition(batch: Batch) -> Result<Vec<Inclusion>, RuleError> {
            Ok(batch.pairs.iter().map(|_| Inclusion::Include).collect())
        }

        fn plan(batch: Batch) -> Result<Vec<PairOutcome>, RuleError> {
            Ok(super::plan(&batch, &mut HostCrm))
        }
    }

    super::bindings::export!(OwnerLookup with_types_in super::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindings::dealbridge::rules::types::{
        FieldValue, Lookups, PairAssociations, RecordPair, Trigger,
    };

    /// Answers from a script of (path, query value, status, body) and records every request.
    struct Fake {
        script: Vec<(&'static str, &'static str, u16, &'static str)>,
        seen: Vec<String>,
    }

    impl Transport for Fake {
        fn send(&mut self, req: &Request) -> Result<Response, RequestError> {
            let q = req.query.first().map(|(_, v)| v.as_str()).unwrap_or("");
            self.seen.push(format!("{} {q}", req.path));
            let hit = self
                .script
                .iter()
                .find(|(p, qv, _, _)| *p == req.path && *qv == q)
                .ok_or_else(|| RequestError::Denied(format!("unmocked {} {q}", req.path)))?;
            Ok(Response {
                status: hit.2,
                headers: Vec::new(),
                body: hit.3.as_bytes().to_vec(),
            })
        }
    }

    const USER: &str = "005000000000001AAA";

    fn batch(direction: Direction, sf_owner: &str, hs_owner: &str, pairs: usize) -> Batch {
        let rec = |id: &str, v: &str| CrmRecord {
            id: id.to_string(),
            modified_at: 0,
            fields: vec![FieldValue {
                field: 0,
                value: Value::Text(v.to_string()),
            }],
        };
        Batch {
            object_pair: ObjectPair::OpportunityDeal,
            direction,
            trigger: Trigger::Incremental,
            salesforce_fields: vec!["OwnerId".to_string()],
            hubspot_fields: vec!["hubspot_owner_id".to_string()],
            pairs: (0..pairs)
                .map(|_| RecordPair {
                    salesforce: Some(rec("006000000000001AAA", sf_owner)),
                    hubspot: Some(rec("9001", hs_owner)),
                    snapshot: None,
                    salesforce_changed: Vec::new(),
                    hubspot_changed: Vec::new(),
                    associations: PairAssociations {
                        salesforce: Vec::new(),
                        hubspot: Vec::new(),
                    },
                })
                .collect(),
            lookups: Lookups {
                owners: Vec::new(),
                pipelines: Vec::new(),
            },
        }
    }

    #[test]
    fn salesforce_owner_resolves_to_hubspot_owner_once_per_batch() {
        let mut fake = Fake {
            script: vec![
                (
                    "/services/data/v62.0/query",
                    "SELECT Email FROM User WHERE Id = '005000000000001AAA'",
                    200,
                    r#"{"totalSize":1,"done":true,"records":[{"Email":"ada@example.com"}]}"#,
                ),
                (
                    "/crm/v3/owners",
                    "ada@example.com",
                    200,
                    r#"{"results":[{"id":"101","email":"ada@example.com"}]}"#,
                ),
            ],
            seen: Vec::new(),
        };
        let out = plan(
            &batch(Direction::SalesforceToHubspot, USER, "7", 3),
            &mut fake,
        );
        assert_eq!(fake.seen.len(), 2, "{:?}", fake.seen);
        for o in out {
            let PairOutcome::Write(w) = o else {
                panic!("{o:?}")
            };
            assert_eq!(w.hubspot[0].field, "hubspot_owner_id");
            assert_eq!(w.hubspot[0].value, Value::Text("101".into()));
        }
    }

    #[test]
    fn hubspot_owner_resolves_to_salesforce_user() {
        let mut fake = Fake {
            script: vec![
                (
                    "/crm/v3/owners/101",
                    "",
                    200,
                    r#"{"id":"101","email":"o'brien@example.com"}"#,
                ),
                (
                    "/services/data/v62.0/query",
                    "SELECT Id FROM User WHERE Email = 'o\\'brien@example.com' AND IsActive = true",
                    200,
                    r#"{"totalSize":1,"done":true,"records":[{"Id":"005000000000009AAA"}]}"#,
                ),
            ],
            seen: Vec::new(),
        };
        let out = plan(
            &batch(Direction::HubspotToSalesforce, USER, "101", 1),
            &mut fake,
        );
        let PairOutcome::Write(w) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            w.salesforce[0].value,
            Value::Text("005000000000009AAA".into())
        );
    }

    #[test]
    fn unknown_owner_is_missing_owner_and_transport_errors_are_reported() {
        let mut fake = Fake {
            script: vec![
                (
                    "/services/data/v62.0/query",
                    "SELECT Email FROM User WHERE Id = '005000000000001AAA'",
                    200,
                    r#"{"totalSize":1,"done":true,"records":[{"Email":"ada@example.com"}]}"#,
                ),
                (
                    "/crm/v3/owners",
                    "ada@example.com",
                    200,
                    r#"{"results":[]}"#,
                ),
            ],
            seen: Vec::new(),
        };
        let out = plan(
            &batch(Direction::SalesforceToHubspot, USER, "7", 1),
            &mut fake,
        );
        let PairOutcome::Error(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(e.kind, ErrorKind::MissingOwner);
        let mut empty = Fake {
            script: Vec::new(),
            seen: Vec::new(),
        };
        let out = plan(
            &batch(Direction::SalesforceToHubspot, USER, "7", 1),
            &mut empty,
        );
        let PairOutcome::Error(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.message.contains("not delivered"), "{}", e.message);
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_query() {
        let mut empty = Fake {
            script: Vec::new(),
            seen: Vec::new(),
        };
        let out = plan(
            &batch(Direction::SalesforceToHubspot, "x' OR Id != '", "7", 1),
            &mut empty,
        );
        let PairOutcome::Error(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert!(empty.seen.is_empty());
        assert_eq!(soql_literal(r"a\'b"), r"'a\\\'b'");
    }
}
