//! The tenant's sync configuration (`tenant.toml`): where the two CRMs are, which
//! environment variables hold their credentials, the rules plugin and its config, the
//! poll interval and the budgets.
//!
//! Every struct refuses unknown keys (`deny_unknown_fields`) so a typo is an error, and
//! every option carries a doc comment. This module only parses and checks: it must
//! never read a credential's value into the config itself (only the *name* of the
//! environment variable that holds it), and never talk to a CRM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::SyncError;
use crate::crm::governor::{Allocation, BudgetConfig, HubSpotLimits};
use crate::crm::hubspot::HubSpotConfig;
use crate::crm::salesforce::{SalesforceConfig, SalesforceCredentials};
use crate::crm::{Secret, TransportOptions};

/// The whole `tenant.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's id in the store (1–64 characters of `A-Z a-z 0-9 _ -`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The store URL: `sqlite://path.db?mode=rwc` (default `sqlite://dealbridge.db?mode=rwc`)
    /// or `postgres://...`.
    #[serde(default = "default_store")]
    pub store: String,
    /// The Salesforce org.
    pub salesforce: SalesforceSection,
    /// The HubSpot portal.
    pub hubspot: HubSpotSection,
    /// The rules plugin.
    #[serde(default)]
    pub plugin: PluginSection,
    /// What syncs and how often.
    #[serde(default)]
    pub sync: SyncSection,
}

fn default_tenant() -> String {
    "default".into()
}
fn default_store() -> String {
    "sqlite://dealbridge.db?mode=rwc".into()
}

/// How dealbridge logs in to Salesforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// OAuth username-password flow (needs `username_env` and `password_env`).
    Password,
    /// OAuth client-credentials flow (the connected app's run-as user).
    ClientCredentials,
    /// OAuth refresh-token flow (needs `refresh_token_env`).
    RefreshToken,
}

/// `[salesforce]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSection {
    /// The login URL (`https://login.salesforce.com`, a My Domain, or an emulator).
    pub login_url: String,
    /// The OAuth grant.
    pub grant: Grant,
    /// Environment variable holding the connected app's consumer key.
    pub client_id_env: String,
    /// Environment variable holding the consumer secret.
    pub client_secret_env: String,
    /// Environment variable holding the integration user's username (password grant).
    #[serde(default)]
    pub username_env: Option<String>,
    /// Environment variable holding the password + security token (password grant).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Environment variable holding a refresh token (refresh-token grant).
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    /// REST API version.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The external-id field on Opportunity, Account and Contact that holds the HubSpot id.
    #[serde(default = "default_external_id")]
    pub external_id_field: String,
    /// An extra CA certificate (PEM) to trust, e.g. the emulators' CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The share of the org's daily API limit the sync may use (0–1); none: no own budget.
    /// Background retries stop at 75% of it.
    #[serde(default)]
    pub api_budget_fraction: Option<f64>,
}

fn default_api_version() -> String {
    "v62.0".into()
}
fn default_external_id() -> String {
    "dealbridge_id__c".into()
}

/// `[hubspot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotSection {
    /// The API base URL (`https://api.hubapi.com` or an emulator).
    pub base_url: String,
    /// Environment variable holding the private-app token.
    pub token_env: String,
    /// The unique property (on deals, companies and contacts) that holds the Salesforce id;
    /// created with `hasUniqueValue` when missing.
    #[serde(default = "default_xref")]
    pub cross_reference_property: String,
    /// An extra CA certificate (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Requests per 10 seconds the app may make (190 Professional/Enterprise, 100 free/starter).
    #[serde(default = "default_hs_rate")]
    pub requests_per_10s: u32,
    /// Search requests per second (HubSpot documents 4–5).
    #[serde(default = "default_search_rate")]
    pub search_per_second: u32,
    /// Calls per day the sync may make; none: only what HubSpot's headers say.
    #[serde(default)]
    pub daily_cap: Option<u64>,
    /// The webhook change feed (`[hubspot.webhooks]`); none: HubSpot changes are found by
    /// search only.
    #[serde(default)]
    pub webhooks: Option<WebhooksSection>,
}

/// `[hubspot.webhooks]`: HubSpot delivers the changes other users and apps make to a
/// receiver that `dealbridge sync` runs, so the sync reads only the records they changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// The socket address the receiver binds, e.g. `127.0.0.1:8787` (behind a proxy that
    /// HubSpot reaches) or `0.0.0.0:8787`.
    pub listen: SocketAddr,
    /// The URL HubSpot calls (the app's webhook target URL): `http(s)://...` ending in
    /// `/hooks/hubspot`. Default: `http://<listen>/hooks/hubspot`. Signatures are checked
    /// against it, so it must be exactly what HubSpot is set to call.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Environment variable holding the app's client secret (it signs deliveries).
    pub client_secret_env: String,
    /// Environment variable holding the developer account's API key, with which set-up
    /// points the app's webhooks at `public_url` and creates missing subscriptions; none:
    /// they are not checked (reported as a warning).
    #[serde(default)]
    pub developer_api_key_env: Option<String>,
    /// The app's id; none: learnt from HubSpot's access-token info of the private-app token.
    #[serde(default)]
    pub app_id: Option<u64>,
}

impl WebhooksSection {
    /// The URL HubSpot calls.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| {
            format!(
                "http://{}{}",
                self.listen,
                super::webhook_receiver::HOOK_PATH
            )
        })
    }

    fn validate(&self) -> Result<(), SyncError> {
        let public = self.public_url();
        let url = url::Url::parse(&public).map_err(|e| {
            SyncError::Config(format!("hubspot.webhooks.public_url {public:?}: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SyncError::Config(format!(
                "hubspot.webhooks.public_url {public:?} must be an http:// or https:// URL"
            )));
        }
        if !url.path().ends_with(super::webhook_receiver::HOOK_PATH)
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(SyncError::Config(format!(
                "hubspot.webhooks.public_url {public:?} must end in {} (no query or fragment)",
                super::webhook_receiver::HOOK_PATH
            )));
        }
        if self.client_secret_env.is_empty() {
            return Err(SyncError::Config(
                "hubspot.webhooks.client_secret_env must name an environment variable".into(),
            ));
        }
        if self.developer_api_key_env.as_deref() == Some("") {
            return Err(SyncError::Config(
                "hubspot.webhooks.developer_api_key_env must name an environment variable".into(),
            ));
        }
        if self.app_id == Some(0) {
            return Err(SyncError::Config(
                "hubspot.webhooks.app_id must be a HubSpot app id, not 0".into(),
            ));
        }
        Ok(())
    }
}

/// The webhook feed's credentials, read from the environment.
#[derive(Debug, Clone)]
pub struct WebhookCredentials {
    /// The app's client secret.
    pub client_secret: Secret,
    /// The developer account's API key, when configured.
    pub developer_api_key: Option<Secret>,
}

fn default_xref() -> String {
    "dealbridge_sf_id".into()
}
fn default_hs_rate() -> u32 {
    190
}
fn default_search_rate() -> u32 {
    4
}

/// What the host does for stage tables the plugin config does not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageMapMode {
    /// Nothing: the plugin config's `stage_map` is used as written.
    #[default]
    None,
    /// For every synced pipeline without a table in `plugin.config.stage_map`, add one that
    /// maps each Salesforce stage to the pipeline stage of the same label (the pipelines
    /// that set-up creates have exactly those stages). Only for plugins that read
    /// `stage_map`, such as the default rules.
    Identity,
}

/// `[plugin]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The rules component (`.wasm`); none: the built-in default rules.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The plugin's config (any TOML table; passed to the plugin as JSON).
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Stage tables the host fills in (see [`StageMapMode`]).
    #[serde(default)]
    pub stage_map: StageMapMode,
}

/// `[sync]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Seconds between polls.
    #[serde(default = "default_poll")]
    pub poll_interval_secs: f64,
    /// Record pairs per plugin call (and per commit).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seconds read again behind each checkpoint (clock skew, late commits).
    #[serde(default = "default_lookback")]
    pub lookback_secs: u64,
    /// Seconds between automatic retries of a failed record (HubSpot's connector: 30
    /// minutes, the default).
    #[serde(default = "default_retry_secs")]
    pub retry_interval_secs: u64,
    /// Account ↔ company sync. Must be on (and accounts imported) before deal sync for deals
    /// to get their company association.
    #[serde(default = "yes")]
    pub company_sync: bool,
    /// Contact ↔ contact sync (contact roles become deal associations only with it).
    #[serde(default = "yes")]
    pub contact_sync: bool,
    /// Opportunity ↔ deal sync. Must be on before an opportunity import.
    #[serde(default = "yes")]
    pub deal_sync: bool,
    /// Match unlinked contacts by email before creating them.
    #[serde(default = "yes")]
    pub match_contacts_by_email: bool,
    /// Match unlinked accounts by website domain before creating companies.
    #[serde(default = "yes")]
    pub match_companies_by_domain: bool,
    /// Ask HubSpot for every deal's associations every this many cycles (their changes do
    /// not bump modification times); 0 switches the sweep off.
    #[serde(default = "default_sweep")]
    pub association_sweep_every: u32,
}

fn default_poll() -> f64 {
    5.0
}
fn default_batch() -> usize {
    200
}
fn default_lookback() -> u64 {
    5
}
fn default_retry_secs() -> u64 {
    1_800
}
fn default_sweep() -> u32 {
    0
}
fn yes() -> bool {
    true
}

impl Default for SyncSection {
    fn default() -> Self {
        toml::from_str("").expect("every sync option has a default")
    }
}

impl TenantConfig {
    /// Reads and checks a `tenant.toml`.
    pub fn load(path: &Path) -> Result<Self, SyncError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            SyncError::Config(m) => SyncError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, SyncError> {
        let cfg: TenantConfig =
            toml::from_str(text).map_err(|e| SyncError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), SyncError> {
        let bad = |m: String| Err(SyncError::Config(m));
        if !(self.sync.poll_interval_secs > 0.0 && self.sync.poll_interval_secs <= 86_400.0) {
            return bad(format!(
                "sync.poll_interval_secs must be within (0, 86400], not {}",
                self.sync.poll_interval_secs
            ));
        }
        if self.sync.batch_size == 0 || self.sync.batch_size > 2_000 {
            return bad(format!(
                "sync.batch_size must be 1 to 2000, not {}",
                self.sync.batch_size
            ));
        }
        if self.sync.retry_interval_secs == 0 {
            return bad("sync.retry_interval_secs must be at least 1".into());
        }
        if let Some(f) = self.salesforce.api_budget_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return bad(format!(
                "salesforce.api_budget_fraction must be within (0, 1], not {f}"
            ));
        }
        match self.salesforce.grant {
            Grant::Password
                if self.salesforce.username_env.is_none()
                    || self.salesforce.password_env.is_none() =>
            {
                return bad(
                    "salesforce.grant = \"password\" needs username_env and password_env".into(),
                );
            }
            Grant::RefreshToken if self.salesforce.refresh_token_env.is_none() => {
                return bad("salesforce.grant = \"refresh_token\" needs refresh_token_env".into());
            }
            _ => {}
        }
        if self.hubspot.requests_per_10s == 0 || self.hubspot.search_per_second == 0 {
            return bad(
                "hubspot.requests_per_10s and hubspot.search_per_second must be at least 1".into(),
            );
        }
        if let Some(w) = &self.hubspot.webhooks {
            w.validate()?;
        }
        crate::store::TenantId::new(self.tenant.clone())
            .map_err(|e| SyncError::Config(e.to_string()))?;
        Ok(())
    }

    /// The webhook feed's credentials from the environment; `None` when
    /// `[hubspot.webhooks]` is not configured.
    pub fn webhook_credentials(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<WebhookCredentials>, SyncError> {
        let Some(w) = &self.hubspot.webhooks else {
            return Ok(None);
        };
        let var = |name: &str, key: &str| {
            env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                SyncError::Config(format!(
                    "environment variable {name} (hubspot.webhooks.{key}) is not set"
                ))
            })
        };
        Ok(Some(WebhookCredentials {
            client_secret: Secret::new(var(&w.client_secret_env, "client_secret_env")?),
            developer_api_key: w
                .developer_api_key_env
                .as_deref()
                .map(|name| var(name, "developer_api_key_env").map(Secret::new))
                .transpose()?,
        }))
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.sync.poll_interval_secs)
    }

    /// The plugin config as JSON (`{}` when none).
    pub fn plugin_config_json(&self) -> serde_json::Value {
        match &self.plugin.config {
            Some(t) => serde_json::to_value(t).unwrap_or_else(|_| serde_json::json!({})),
            None => serde_json::json!({}),
        }
    }

    /// The Salesforce client config, reading the credentials from the environment.
    pub fn salesforce_client_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SalesforceConfig, SyncError> {
        let s = &self.salesforce;
        let var = |name: &str| {
            env(name).ok_or_else(|| {
                SyncError::Config(format!(
                    "environment variable {name} (named in [salesforce]) is not set"
                ))
            })
        };
        let credentials = match s.grant {
            Grant::Password => SalesforceCredentials::Password {
                client_id: var(&s.client_id_env)?,
                client_secret: Secret::new(var(&s.client_secret_env)?),
                username: var(s.username_env.as_deref().unwrap_or_default())?,
                password: Secret::new(var(s.password_env.as_deref().unwrap_or_default())?),
            },
            Grant::ClientCredentials => SalesforceCredentials::ClientCredentials {
                client_id: var(&s.client_id_env)?,
                client_secret: Secret::new(var(&s.client_secret_env)?),
            },
            Grant::RefreshToken => SalesforceCredentials::RefreshToken {
                client_id: var(&s.client_id_env)?,
                client_secret: Some(Secret::new(var(&s.client_secret_env)?)),
                refresh_token: Secret::new(var(s
                    .refresh_token_env
                    .as_deref()
                    .unwrap_or_default())?),
            },
        };
        let mut c = SalesforceConfig::new(s.login_url.clone(), credentials);
        c.api_version = s.api_version.clone();
        c.transport = TransportOptions {
            ca_cert_pem: s.ca_file.clone(),
            ..TransportOptions::default()
        };
        if let Some(f) = s.api_budget_fraction {
            c.budget = BudgetConfig {
                allocation: Allocation::FractionOfOrgLimit(f),
                ..BudgetConfig::default()
            };
        }
        Ok(c)
    }

    /// The HubSpot client config, reading the token from the environment.
    pub fn hubspot_client_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HubSpotConfig, SyncError> {
        let h = &self.hubspot;
        let token = env(&h.token_env).ok_or_else(|| {
            SyncError::Config(format!(
                "environment variable {} (hubspot.token_env) is not set",
                h.token_env
            ))
        })?;
        let mut c = HubSpotConfig::new(h.base_url.clone(), Secret::new(token));
        c.transport = TransportOptions {
            ca_cert_pem: h.ca_file.clone(),
            ..TransportOptions::default()
        };
        c.limits = HubSpotLimits {
            requests_per_interval: h.requests_per_10s,
            interval: Duration::from_secs(10),
            search_per_second: h.search_per_second,
            daily_cap: h.daily_cap,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[salesforce]
login_url = "https://login.example.test"
grant = "client_credentials"
client_id_env = "SF_ID"
client_secret_env = "SF_SECRET"

[hubspot]
base_url = "https://api.example.test"
token_env = "HS_TOKEN"
"#;

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let c = TenantConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.sync.poll_interval_secs, 5.0);
        assert_eq!(c.sync.retry_interval_secs, 1_800);
        assert_eq!(c.hubspot.cross_reference_property, "dealbridge_sf_id");
        assert_eq!(c.salesforce.external_id_field, "dealbridge_id__c");
        assert!(c.sync.company_sync && c.sync.deal_sync);
        assert_eq!(c.plugin_config_json(), serde_json::json!({}));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{MINIMAL}\n[sync]\npoll_intervall_secs = 3\n");
        let err = TenantConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("poll_intervall_secs"), "{err}");
    }

    #[test]
    fn credentials_come_from_the_named_variables_only() {
        let c = TenantConfig::parse(MINIMAL).unwrap();
        let env = |k: &str| match k {
            "SF_ID" => Some("id".to_string()),
            "SF_SECRET" => Some("s3cret".to_string()),
            _ => None,
        };
        assert!(c.salesforce_client_config(&env).is_ok());
        let err = c.hubspot_client_config(&env).unwrap_err().to_string();
        assert!(err.contains("HS_TOKEN"), "{err}");
        assert!(!format!("{:?}", c.salesforce_client_config(&env).unwrap()).contains("s3cret"));
    }

    #[test]
    fn bad_values_are_specific_errors() {
        let text = format!("{MINIMAL}\n[sync]\npoll_interval_secs = 0\n");
        assert!(
            TenantConfig::parse(&text)
                .unwrap_err()
                .to_string()
                .contains("poll_interval_secs")
        );
        let text = MINIMAL.replace("client_credentials", "password");
        assert!(
            TenantConfig::parse(&text)
                .unwrap_err()
                .to_string()
                .contains("username_env")
        );
    }

    #[test]
    fn webhooks_take_their_defaults_and_credentials_from_the_environment() {
        assert!(
            TenantConfig::parse(MINIMAL)
                .unwrap()
                .hubspot
                .webhooks
                .is_none()
        );
        let text = format!(
            "{MINIMAL}\n[hubspot.webhooks]\nlisten = \"127.0.0.1:8787\"\nclient_secret_env = \"HS_SECRET\"\n"
        );
        let c = TenantConfig::parse(&text).unwrap();
        let w = c.hubspot.webhooks.as_ref().unwrap();
        assert_eq!(w.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(w.public_url(), "http://127.0.0.1:8787/hooks/hubspot");
        assert_eq!((w.app_id, w.developer_api_key_env.as_deref()), (None, None));
        let err = c.webhook_credentials(&|_| None).unwrap_err().to_string();
        assert!(err.contains("HS_SECRET"), "{err}");
        let creds = c
            .webhook_credentials(&|k| (k == "HS_SECRET").then(|| "s3cret".to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(creds.client_secret.expose(), "s3cret");
        assert!(creds.developer_api_key.is_none());
        assert!(!format!("{creds:?}").contains("s3cret"));

        let text = format!(
            "{MINIMAL}\n[hubspot.webhooks]\nlisten = \"0.0.0.0:9000\"\npublic_url = \"https://sync.example.test/x/hooks/hubspot\"\nclient_secret_env = \"HS_SECRET\"\ndeveloper_api_key_env = \"HS_DEV\"\napp_id = 54321\n"
        );
        let c = TenantConfig::parse(&text).unwrap();
        let w = c.hubspot.webhooks.as_ref().unwrap();
        assert_eq!(w.public_url(), "https://sync.example.test/x/hooks/hubspot");
        assert_eq!(w.app_id, Some(54321));
        let err = c
            .webhook_credentials(&|k| (k == "HS_SECRET").then(|| "s".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HS_DEV"), "{err}");
    }

    #[test]
    fn bad_webhook_settings_are_specific_errors() {
        let with = |body: &str| {
            TenantConfig::parse(&format!("{MINIMAL}\n[hubspot.webhooks]\n{body}\n"))
                .unwrap_err()
                .to_string()
        };
        let base = "client_secret_env = \"S\"";
        let err = with(&format!("listen = \"localhost\"\n{base}"));
        assert!(err.contains("listen"), "{err}");
        let err = with(&format!(
            "listen = \"127.0.0.1:1\"\npublic_url = \"ftp://x.test/hooks/hubspot\"\n{base}"
        ));
        assert!(err.contains("http:// or https://"), "{err}");
        let err = with(&format!(
            "listen = \"127.0.0.1:1\"\npublic_url = \"https://x.test/hooks\"\n{base}"
        ));
        assert!(err.contains("must end in /hooks/hubspot"), "{err}");
        let err = with(&format!(
            "listen = \"127.0.0.1:1\"\npublic_url = \"not a url\"\n{base}"
        ));
        assert!(err.contains("public_url"), "{err}");
        let err = with("listen = \"127.0.0.1:1\"");
        assert!(err.contains("client_secret_env"), "{err}");
        let err = with(&format!("listen = \"127.0.0.1:1\"\n{base}\nsecret = \"x\""));
        assert!(err.contains("secret"), "{err}");
        let err = with(&format!("listen = \"127.0.0.1:1\"\n{base}\napp_id = 0"));
        assert!(err.contains("app_id"), "{err}");
    }

    #[test]
    fn plugin_config_tables_become_json() {
        let text = format!(
            "{MINIMAL}\n[plugin.config]\nmulti_currency = true\n[plugin.config.rules.opportunity-deal]\nAmount = \"two-way\"\n"
        );
        let c = TenantConfig::parse(&text).unwrap();
        assert_eq!(
            c.plugin_config_json()["rules"]["opportunity-deal"]["Amount"],
            "two-way"
        );
        assert_eq!(c.plugin_config_json()["multi_currency"], true);
    }
}
