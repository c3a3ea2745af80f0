//! The Salesforce emulator: REST API version v62.0, OAuth token endpoint and
//! SOAP login, with a control API under `/__emulator/`.
//!
//! State lives in one [`store::Org`] behind a `parking_lot::RwLock` that is
//! never held across an `.await`; reads (SOQL pages included) take it for
//! reading only. Open query cursors live apart in [`cursors`]. Objects: Opportunity, Account, Contact and
//! OpportunityContactRole (read/write), User, RecordType and OpportunityStage
//! (read-only). The external-id field is
//! [`schema::EXTERNAL_ID_FIELD`] (`dealbridge_id__c`).
//!
//! Control API (besides `/__emulator/faults` and `/__emulator/requests`):
//! - `POST /__emulator/seed` `{"seed":7,"accounts":300,"contacts":1000,"opportunities":3000}`
//!   replaces the org with a freshly seeded one (all keys optional).
//! - `POST /__emulator/reset`: an empty org (metadata and users only).
//! - `GET /__emulator/snapshot` exports everything; `PUT` imports such a document.
//! - `PUT /__emulator/settings` `{"multi_currency":true}`.
//! - `POST /__emulator/purge-deleted`: empties the recycle bin (moves `earliestDateAvailable`).
//!
//! This module must never answer an error in a non-Salesforce shape, and never
//! bind or talk to anything itself (see [`crate::start`]).

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use parking_lot::{Mutex, RwLock};

use crate::Seed;
use crate::control::{Accounting, Faults};

pub mod auth;
pub mod cursors;
pub mod errors;
pub mod ids;
mod routes;
pub mod schema;
pub mod seed;
pub mod soql;
pub mod store;
pub mod value;

/// The one API version the emulator speaks.
pub const API_VERSION: &str = "v62.0";
/// The default daily API request limit.
pub const DEFAULT_DAILY_LIMIT: u64 = 1_000_000;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub multi_currency: bool,
    /// Daily API request limit (overridden by a fault profile's `rate_limit`).
    pub daily_limit: u64,
    /// Sizes of the seeded data.
    pub sizes: seed::SeedSizes,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            multi_currency: false,
            daily_limit: DEFAULT_DAILY_LIMIT,
            sizes: seed::SeedSizes::default(),
        }
    }
}

/// What clients log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub security_token: String,
    /// A refresh token for the integration user (as if from an earlier web-server flow).
    pub refresh_token: String,
}

/// The base URL of the listener a request came in on (set by [`crate::start`]).
#[derive(Debug, Clone)]
pub struct InstanceUrl(pub String);

pub(crate) struct Usage {
    window_start: Instant,
    used: u64,
    generation: u64,
}

pub struct Inner {
    pub org: RwLock<store::Org>,
    /// Open SOQL cursors, under their own lock so query pages read the org
    /// under its read lock.
    pub cursors: cursors::QueryCursors,
    pub sessions: Mutex<auth::Sessions>,
    pub faults: Faults,
    pub accounting: Accounting,
    pub credentials: Credentials,
    pub org_id: String,
    pub integration_user_id: String,
    pub schema: Arc<schema::Schema>,
    pub(crate) usage: Mutex<Usage>,
    pub daily_limit: u64,
    pub sizes: seed::SeedSizes,
}

/// Shared handle to the emulator state.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

impl Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Shared {
    pub fn multi_currency(&self) -> bool {
        self.org.read().multi_currency
    }

    /// Counts one API request against the limit; returns (used, limit, allowed).
    pub fn count_request(&self) -> (u64, u64, bool) {
        let (limit, window) = match self.faults.rate_limit() {
            Some(rl) => (
                rl.max_requests,
                Duration::from_secs(rl.window_secs.unwrap_or(86_400)),
            ),
            None => (self.daily_limit, Duration::from_secs(86_400)),
        };
        let generation = self.faults.generation();
        let mut u = self.usage.lock();
        if u.generation != generation || u.window_start.elapsed() >= window {
            *u = Usage {
                window_start: Instant::now(),
                used: 0,
                generation,
            };
        }
        if u.used >= limit {
            return (u.used, limit, false);
        }
        u.used += 1;
        (u.used, limit, true)
    }

    /// Current (used, limit) without counting.
    pub fn usage(&self) -> (u64, u64) {
        let limit = self
            .faults
            .rate_limit()
            .map(|r| r.max_requests)
            .unwrap_or(self.daily_limit);
        (self.usage.lock().used, limit)
    }
}

/// The Salesforce emulator.
#[derive(Clone)]
pub struct Salesforce {
    shared: Shared,
}

fn new_org(
    schema: &Arc<schema::Schema>,
    seed: Option<u64>,
    sizes: seed::SeedSizes,
    multi_currency: bool,
) -> store::Org {
    let mut org = store::Org::new(schema.clone(), multi_currency);
    seed::seed(&mut org, seed, sizes);
    org
}

impl Salesforce {
    /// A new emulator seeded with `seed`.
    pub fn new(seed: &Seed, config: Config) -> Self {
        let schema = Arc::new(schema::Schema::new());
        let org = new_org(&schema, seed.number(), config.sizes, config.multi_currency);
        Self::with_org(org, schema, config)
    }

    fn with_org(org: store::Org, schema: Arc<schema::Schema>, config: Config) -> Self {
        let integration_user_id = ids::make_id("005", 1);
        let credentials = Credentials {
            client_id: "dealbridge-emulator-client-id".into(),
            client_secret: "dealbridge-emulator-client-secret".into(),
            username: seed::INTEGRATION_USERNAME.into(),
            password: "emulator-password".into(),
            security_token: "EMULATORTOKEN".into(),
            refresh_token: "5Aep861dealbridgeEmulatorRefreshToken".into(),
        };
        let mut sessions = auth::Sessions::default();
        sessions.refresh.insert(
            credentials.refresh_token.clone(),
            integration_user_id.clone(),
        );
        Salesforce {
            shared: Shared(Arc::new(Inner {
                org: RwLock::new(org),
                cursors: Default::default(),
                sessions: Mutex::new(sessions),
                faults: Faults::default(),
                accounting: Accounting::default(),
                credentials,
                org_id: ids::make_id("00D", 1),
                integration_user_id,
                schema,
                usage: Mutex::new(Usage {
                    window_start: Instant::now(),
                    used: 0,
                    generation: 0,
                }),
                daily_limit: config.daily_limit,
                sizes: config.sizes,
            })),
        }
    }

    /// An emulator serving the org of a snapshot taken with [`Salesforce::snapshot`].
    pub fn from_snapshot(v: &serde_json::Value, config: Config) -> Result<Self, String> {
        let schema = Arc::new(schema::Schema::new());
        let org = store::Org::import(schema.clone(), v)?;
        Ok(Self::with_org(org, schema, config))
    }

    /// Every record as JSON (also `GET /__emulator/snapshot`).
    pub fn snapshot(&self) -> serde_json::Value {
        self.shared.org.read().export()
    }

    pub fn credentials(&self) -> Credentials {
        self.shared.credentials.clone()
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn accounting(&self) -> &Accounting {
        &self.shared.accounting
    }

    /// Number of live records of `object`.
    pub fn count(&self, object: &str) -> usize {
        let org = self.shared.org.read();
        match org.schema.object_index(object) {
            Some(o) => org.tables[o]
                .rows
                .iter()
                .filter(|r| r.deleted_at.is_none())
                .count(),
            None => 0,
        }
    }

    /// Replaces the org with a freshly seeded one.
    pub fn reseed(&self, seed: Option<u64>, sizes: seed::SeedSizes) {
        let multi = self.shared.multi_currency();
        let org = new_org(&self.shared.schema, seed, sizes, multi);
        *self.shared.org.write() = org;
    }

    /// The HTTP routes (REST API, OAuth, SOAP login, control API).
    pub fn router(&self) -> Router {
        routes::router(self.shared.clone())
    }
}
