//! Shared set-up of the end-to-end tests: both emulators in process on 127.0.0.1, a
//! seeded org of a chosen size, a tenant config pointing at them (credentials through
//! variable names resolved in memory, never the process environment), a fresh SQLite
//! store, and API clients for making edits and reading results.
//!
//! Nothing here may talk to anything but the in-process emulators.

use std::path::PathBuf;

use dealbridge::cli::demo::{demo_config, demo_env, with_webhook_feed};
use dealbridge::crm::hubspot::{HubSpotClient, HubSpotConfig};
use dealbridge::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use dealbridge::crm::{Secret, TransportOptions};
use dealbridge::sync::Engine;
use dealbridge::sync::TenantConfig;
use dealbridge::sync::start::{StartOptions, bind_webhooks, start};
use dealbridge_emulator::RunningEmulators;

/// One test's world.
pub struct World {
    /// The emulators.
    pub emu: RunningEmulators,
    /// The store directory (deleted at drop).
    pub dir: tempfile::TempDir,
    /// A Salesforce client for edits.
    pub sf: SalesforceClient,
    /// A HubSpot client for edits.
    pub hs: HubSpotClient,
}

/// Starts the emulators with `opportunities` seeded opportunities (and the demo portal's
/// own companies, contacts and deals in HubSpot).
pub async fn world(opportunities: usize) -> World {
    world_from(dealbridge_emulator::Seed::Demo, opportunities).await
}

/// Like [`world`], with a HubSpot portal that holds no company, contact or deal.
pub async fn world_empty_portal(opportunities: usize) -> World {
    world_from(dealbridge_emulator::Seed::Empty, opportunities).await
}

async fn world_from(seed: dealbridge_emulator::Seed, opportunities: usize) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = dealbridge_emulator::start(dealbridge_emulator::EmulatorOptions {
        seed,
        ..Default::default()
    })
    .await
    .expect("emulators start");
    reqwest::Client::new()
        .post(format!("{}/__emulator/seed", emu.salesforce_urls.http))
        .json(&serde_json::json!({"seed": 7, "accounts": (opportunities / 10).max(5), "contacts": (opportunities / 3).max(10), "opportunities": opportunities}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("seeding");
    let env = demo_env(&emu);
    let transport = TransportOptions {
        ca_cert_pem: Some(emu.ca_cert_path.clone()),
        ..TransportOptions::default()
    };
    let mut sc = SalesforceConfig::new(
        emu.salesforce_urls.https.clone(),
        SalesforceCredentials::Password {
            client_id: env("DEMO_SF_CLIENT_ID").unwrap(),
            client_secret: Secret::new(env("DEMO_SF_CLIENT_SECRET").unwrap()),
            username: env("DEMO_SF_USERNAME").unwrap(),
            password: Secret::new(env("DEMO_SF_PASSWORD").unwrap()),
        },
    );
    sc.transport = transport.clone();
    let mut hc = HubSpotConfig::new(
        emu.hubspot_urls.https.clone(),
        Secret::new(env("DEMO_HS_TOKEN").unwrap()),
    );
    hc.transport = transport;
    World {
        sf: SalesforceClient::new(sc).unwrap(),
        hs: HubSpotClient::new(hc).unwrap(),
        emu,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl World {
    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("sync.db")
    }

    /// The demo config's text for this world (its emulators, its store, a 1 s poll).
    fn demo_config_text(&self) -> String {
        let store = format!("sqlite://{}?mode=rwc", self.store_path().display());
        demo_config(
            &self.emu.salesforce_urls.https,
            &self.emu.hubspot_urls.https,
            &self.emu.ca_cert_path,
            &store,
            1.0,
        )
    }

    /// The tenant config, with `extra` TOML appended.
    pub fn config(&self, extra: &str) -> TenantConfig {
        let text = self.demo_config_text();
        TenantConfig::parse(&format!("{text}\n{extra}")).expect("test config parses")
    }

    /// An engine for the config (holder `name`, short lease).
    pub async fn engine(&self, cfg: &TenantConfig, name: &str) -> Engine {
        self.engine_with_report(cfg, name).await.0
    }

    /// Clears the request accounting of both emulators.
    pub async fn reset_accounting(&self) {
        let c = reqwest::Client::new();
        for base in [&self.emu.salesforce_urls.http, &self.emu.hubspot_urls.http] {
            c.delete(format!("{base}/__emulator/requests"))
                .send()
                .await
                .unwrap();
        }
    }
}

impl World {
    /// Salesforce user ids by lower-case email.
    pub async fn sf_users(&self) -> std::collections::HashMap<String, String> {
        self.sf
            .users()
            .await
            .expect("users readable")
            .into_iter()
            .filter_map(|u| Some((u.email?.to_lowercase(), u.id)))
            .collect()
    }

    /// HubSpot owner ids by lower-case email.
    pub async fn hs_owners(&self) -> std::collections::HashMap<String, String> {
        self.hs
            .list_owners()
            .await
            .expect("owners readable")
            .into_iter()
            .filter_map(|o| Some((o.email?.to_lowercase(), o.id)))
            .collect()
    }

    /// The tenant config with the rules component at `plugin_path` instead of the default
    /// rules.
    pub fn config_with_plugin(&self, plugin_path: &str) -> TenantConfig {
        self.config_replacing(
            "[plugin]\n",
            &format!("[plugin]\npath = {plugin_path:?}\n"),
            "",
        )
    }

    /// The demo config with its first `header` line replaced by `replacement`, and `extra`
    /// TOML appended.
    fn config_replacing(&self, header: &str, replacement: &str, extra: &str) -> TenantConfig {
        let store = format!("sqlite://{}?mode=rwc", self.store_path().display());
        let text = demo_config(
            &self.emu.salesforce_urls.https,
            &self.emu.hubspot_urls.https,
            &self.emu.ca_cert_path,
            &store,
            1.0,
        );
        assert!(
            text.contains(header),
            "the demo config no longer has {header:?}"
        );
        let text = text.replacen(header, replacement, 1);
        TenantConfig::parse(&format!("{text}\n{extra}")).expect("test config parses")
    }

    /// The tenant config with `opportunity_rules` (TOML lines such as `Amount = "two-way"`)
    /// added to the opportunity ↔ deal sync rules of the demo config (which already sets
    /// `Type`), and `extra` TOML appended (e.g. `[plugin.config]` keys or stage tables).
    pub fn config_with_rules(&self, opportunity_rules: &str, extra: &str) -> TenantConfig {
        let header = "[plugin.config.rules.opportunity-deal]\n";
        self.config_replacing(header, &format!("{header}{opportunity_rules}\n"), extra)
    }
}

/// Starts the emulators and seeds Salesforce with exactly these sizes (seed 7).
pub async fn world_sized(accounts: usize, contacts: usize, opportunities: usize) -> World {
    let w = world(0).await;
    reqwest::Client::new()
        .post(format!("{}/__emulator/seed", w.emu.salesforce_urls.http))
        .json(&serde_json::json!({"seed": 7, "accounts": accounts, "contacts": contacts, "opportunities": opportunities}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("seeding");
    w
}

/// Which emulator a control call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emu {
    /// The Salesforce emulator.
    Salesforce,
    /// The HubSpot emulator.
    HubSpot,
}

impl World {
    fn control_base(&self, emu: Emu) -> &str {
        match emu {
            Emu::Salesforce => &self.emu.salesforce_urls.http,
            Emu::HubSpot => &self.emu.hubspot_urls.http,
        }
    }

    /// `PUT /__emulator/faults` (the whole profile; `{}` clears every fault).
    pub async fn set_faults(&self, emu: Emu, profile: serde_json::Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/__emulator/faults", self.control_base(emu)))
            .json(&profile)
            .send()
            .await
            .expect("fault profile sent");
        assert!(
            r.status().is_success(),
            "fault profile refused: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// `GET /__emulator/requests`: `{"total": N, "calls": [{method, route, status, count}]}`.
    pub async fn requests(&self, emu: Emu) -> serde_json::Value {
        reqwest::get(format!("{}/__emulator/requests", self.control_base(emu)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Calls answered with `status` whose route contains `route_part`.
    pub async fn calls_with(&self, emu: Emu, route_part: &str, status: u16) -> u64 {
        let v = self.requests(emu).await;
        v["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["status"].as_u64() == Some(u64::from(status))
                    && c["route"].as_str().is_some_and(|r| r.contains(route_part))
            })
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Switches the HubSpot emulator's rate limits off (or sets them: the JSON of
    /// `PUT /__emulator/rate-limits`).
    pub async fn hubspot_rate_limits(&self, settings: serde_json::Value) {
        let r = reqwest::Client::new()
            .put(format!(
                "{}/__emulator/rate-limits",
                self.emu.hubspot_urls.http
            ))
            .json(&settings)
            .send()
            .await
            .expect("rate limits sent");
        assert!(r.status().is_success(), "rate limits refused");
    }

    /// The Salesforce snapshot (`GET /__emulator/snapshot`).
    pub async fn salesforce_snapshot(&self) -> serde_json::Value {
        reqwest::get(format!(
            "{}/__emulator/snapshot",
            self.emu.salesforce_urls.http
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    /// Replaces the Salesforce org with a snapshot (`PUT /__emulator/snapshot`).
    pub async fn put_salesforce_snapshot(&self, snapshot: &serde_json::Value) {
        let r = reqwest::Client::new()
            .put(format!(
                "{}/__emulator/snapshot",
                self.emu.salesforce_urls.http
            ))
            .json(snapshot)
            .send()
            .await
            .expect("snapshot sent");
        assert!(
            r.status().is_success(),
            "snapshot refused: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// The tenant config with the engine's HubSpot governor opened up (for bulk tests with
    /// the emulator's limits switched off), with `extra` appended to `[sync]`.
    pub fn config_unthrottled(&self, extra: &str) -> TenantConfig {
        let store = format!("sqlite://{}?mode=rwc", self.store_path().display());
        let text = demo_config(
            &self.emu.salesforce_urls.https,
            &self.emu.hubspot_urls.https,
            &self.emu.ca_cert_path,
            &store,
            1.0,
        )
        .replace(
            "requests_per_10s = 190",
            "requests_per_10s = 100000\nsearch_per_second = 10000",
        );
        TenantConfig::parse(&format!("{text}\n{extra}")).expect("test config parses")
    }

    /// A HubSpot client without client-side throttling (for bulk seeding).
    pub fn hubspot_unthrottled(&self) -> HubSpotClient {
        let env = demo_env(&self.emu);
        let mut hc = HubSpotConfig::new(
            self.emu.hubspot_urls.https.clone(),
            Secret::new(env("DEMO_HS_TOKEN").unwrap()),
        );
        hc.transport = TransportOptions {
            ca_cert_pem: Some(self.emu.ca_cert_path.clone()),
            ..TransportOptions::default()
        };
        hc.limits = dealbridge::crm::governor::HubSpotLimits {
            requests_per_interval: 100_000,
            interval: std::time::Duration::from_secs(10),
            search_per_second: 100_000,
            daily_cap: None,
        };
        HubSpotClient::new(hc).unwrap()
    }

    /// The tenant config with the HubSpot webhook feed on (`[hubspot.webhooks]`: a
    /// receiver on a free loopback port, the emulated app's client secret and developer
    /// key, so set-up points the app at the receiver and subscribes), `extra` appended.
    pub fn config_with_feed(&self, extra: &str) -> TenantConfig {
        let text = with_webhook_feed(&self.demo_config_text());
        TenantConfig::parse(&format!("{text}\n{extra}")).expect("test config parses")
    }

    /// An engine for a config with the webhook feed on: its receiver bound first, then
    /// set-up (which points HubSpot at it), then served for the engine.
    pub async fn engine_with_feed(&self, cfg: &TenantConfig, name: &str) -> Engine {
        let env = demo_env(&self.emu);
        let listener = bind_webhooks(cfg, &env)
            .await
            .expect("the receiver binds")
            .expect("the config has [hubspot.webhooks]");
        let (mut e, _) = start(
            cfg,
            &env,
            StartOptions {
                webhook_public_url: Some(listener.public_url().to_string()),
                ..test_start_options(name)
            },
        )
        .await
        .expect("engine starts");
        listener.serve(&mut e).expect("the receiver serves");
        e
    }

    /// A HubSpot client that edits as a person in HubSpot's UI (the emulator attributes
    /// its changes to a user, not to dealbridge's app).
    pub fn hubspot_person(&self) -> HubSpotClient {
        let mut hc = HubSpotConfig::new(
            self.emu.hubspot_urls.https.clone(),
            Secret::new(self.emu.hubspot_credentials.user_token.clone()),
        );
        hc.transport = TransportOptions {
            ca_cert_pem: Some(self.emu.ca_cert_path.clone()),
            ..TransportOptions::default()
        };
        HubSpotClient::new(hc).unwrap()
    }

    /// Waits until the HubSpot emulator delivered every webhook event it queued.
    pub async fn webhooks_delivered(&self) {
        assert!(
            self.emu
                .hubspot
                .wait_webhooks_idle(std::time::Duration::from_secs(30))
                .await,
            "the HubSpot emulator delivered its webhooks within 30 s: {:?}",
            self.emu.hubspot.webhook_stats()
        );
    }

    /// An engine and its set-up report.
    pub async fn engine_with_report(
        &self,
        cfg: &TenantConfig,
        name: &str,
    ) -> (Engine, dealbridge::sync::setup::SetupReport) {
        let env = demo_env(&self.emu);
        start(cfg, &env, test_start_options(name))
            .await
            .expect("engine starts")
    }
}

/// How the tests start an engine: holder `name`, a short lease.
fn test_start_options(name: &str) -> StartOptions {
    StartOptions {
        dry_run: false,
        holder: Some(name.into()),
        lease_ttl_ms: 1_000,
        ..StartOptions::default()
    }
}
