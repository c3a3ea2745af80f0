//! Starting an engine: [`start`] from a `tenant.toml` (the store, both clients, the rules
//! component — the tenant's file or the embedded default rules —, the set-up and the
//! lease), and [`assemble`], the part shared with the service's scheduler, which builds
//! its engines from stored connections and the tenant's active plugin version.
//!
//! With `[hubspot.webhooks]`, [`bind_webhooks`] binds the webhook receiver's socket before
//! anything else (a port in use is a config error) and [`WebhookListener::serve`] serves the
//! receiver for the started engine, which then wakes on the deliveries it stores.
//!
//! This is the one place that turns configuration into running parts; [`start`] must never
//! read a credential other than from the environment variables the config names.

use std::sync::Arc;

use super::config::{StageMapMode, SyncSection, TenantConfig};
use super::engine::{Engine, EngineOptions};
use super::error::SyncError;
use super::setup::{self, SetupOptions, SetupReport, WebhookSetup};
use super::webhook_receiver::{WebhookReceiver, WebhookReceiverConfig};
use crate::crm::Secret;
use crate::crm::hubspot::{HubSpotClient, HubSpotConfig};
use crate::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use crate::runtime::allowance::CrmAllowances;
use crate::runtime::gateway::{CredentialProvider, CrmBaseUrls, CrmTarget, GatewayError};
use crate::runtime::{
    CrmGateway, HttpGateway, LoadedPlugin, ReadOnlyGateway, Runtime, RuntimeConfig,
};
use crate::store::{self, Lease, RetrySchedule, Store, StoreConfig, TenantId};

/// How to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Plan only: create no metadata, write nothing.
    pub dry_run: bool,
    /// The lease holder name (default: host name and process id).
    pub holder: Option<String>,
    /// Lease time to live.
    pub lease_ttl_ms: i64,
    /// The URL HubSpot calls for webhooks when it is not the config's: the bound
    /// receiver's ([`WebhookListener::public_url`], e.g. for `listen` port 0).
    pub webhook_public_url: Option<String>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            dry_run: false,
            holder: None,
            lease_ttl_ms: 60_000,
            webhook_public_url: None,
        }
    }
}

/// The embedded default rules component.
pub fn default_rules() -> &'static [u8] {
    dealbridge_guests::DEFAULT_RULES_WASM
}

/// Everything an engine is built from, however it was obtained.
pub struct EngineParts {
    /// The tenant.
    pub tenant: TenantId,
    /// The Salesforce client's settings, credentials included.
    pub salesforce: SalesforceConfig,
    /// The HubSpot client's settings, token included.
    pub hubspot: HubSpotConfig,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The loaded rules component.
    pub plugin: LoadedPlugin,
    /// The plugin's config (JSON).
    pub plugin_config: serde_json::Value,
    /// What syncs, batch size, look-back, sweep.
    pub sync: SyncSection,
    /// The Salesforce external-id field.
    pub external_id_field: String,
    /// The HubSpot cross-reference property.
    pub xref_property: String,
    /// Fill identity stage tables into the plugin config (see [`StageMapMode::Identity`]).
    pub identity_stage_map: bool,
    /// Plan only: create no metadata, write nothing.
    pub dry_run: bool,
    /// The lease holder name.
    pub holder: String,
    /// Lease time to live.
    pub lease_ttl_ms: i64,
    /// The HubSpot webhook change feed to set up (`[hubspot.webhooks]`), if any.
    pub webhooks: Option<WebhookSetup>,
}

/// Starts an engine. Set-up failures (a missing permission, a missing external-id field)
/// stop it with [`SyncError::Precondition`] naming every failed check; the report is
/// returned with the engine otherwise.
pub async fn start(
    cfg: &TenantConfig,
    env: &dyn Fn(&str) -> Option<String>,
    opts: StartOptions,
) -> Result<(Engine, SetupReport), SyncError> {
    let salesforce = cfg.salesforce_client_config(env)?;
    let hubspot = cfg.hubspot_client_config(env)?;
    let webhooks = match (&cfg.hubspot.webhooks, cfg.webhook_credentials(env)?) {
        (Some(w), Some(credentials)) => Some(WebhookSetup {
            app_id: w.app_id,
            public_url: opts
                .webhook_public_url
                .clone()
                .unwrap_or_else(|| w.public_url()),
            developer_api_key: credentials.developer_api_key,
        }),
        _ => None,
    };
    let retry = RetrySchedule {
        delays_ms: vec![(cfg.sync.retry_interval_secs as i64).saturating_mul(1000)],
        max_attempts: None,
    };
    let store = store::open_with(
        &cfg.store,
        StoreConfig {
            retry,
            ..StoreConfig::default()
        },
    )
    .await?;
    let bytes = match &cfg.plugin.path {
        Some(p) => std::fs::read(p)
            .map_err(|e| SyncError::Config(format!("plugin.path {}: {e}", p.display())))?,
        None => default_rules().to_vec(),
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime.load(&bytes)?;
    let holder = opts.holder.unwrap_or_else(|| {
        format!(
            "dealbridge-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        )
    });
    let parts = EngineParts {
        tenant: TenantId::new(cfg.tenant.clone()).map_err(|e| SyncError::Config(e.to_string()))?,
        salesforce,
        hubspot,
        store,
        plugin,
        plugin_config: cfg.plugin_config_json(),
        sync: cfg.sync.clone(),
        external_id_field: cfg.salesforce.external_id_field.clone(),
        xref_property: cfg.hubspot.cross_reference_property.clone(),
        identity_stage_map: cfg.plugin.stage_map == StageMapMode::Identity,
        dry_run: opts.dry_run,
        holder,
        lease_ttl_ms: opts.lease_ttl_ms,
        webhooks,
    };
    assemble(parts, None).await
}

/// Connects the clients, runs the set-up (creating missing metadata unless a dry run)
/// and builds the engine: under `lease` when the caller holds the tenant's lease, else
/// taking it (waiting up to its TTL for a dead holder's lease to expire). Set-up failures
/// are one [`SyncError::Precondition`] naming every failed check.
pub async fn assemble(
    parts: EngineParts,
    lease: Option<Lease>,
) -> Result<(Engine, SetupReport), SyncError> {
    let username = match &parts.salesforce.credentials {
        SalesforceCredentials::Password { username, .. } => Some(username.clone()),
        _ => None,
    };
    let sf_transport = parts.salesforce.transport.clone();
    let hs_transport = parts.hubspot.transport.clone();
    let hs_base = parts.hubspot.base_url.clone();
    let hs_token = parts.hubspot.token.clone();
    let sf = SalesforceClient::new(parts.salesforce)?;
    let hs = HubSpotClient::new(parts.hubspot)?;
    let setup_opts = SetupOptions {
        external_id_field: parts.external_id_field.clone(),
        xref_property: parts.xref_property.clone(),
        company_sync: parts.sync.company_sync,
        contact_sync: parts.sync.contact_sync,
        deal_sync: parts.sync.deal_sync,
        identity_stage_map: parts.identity_stage_map,
        create_missing: !parts.dry_run,
        username,
        webhooks: parts.webhooks,
    };
    let setup = setup::run(&sf, &hs, &parts.plugin, parts.plugin_config, &setup_opts).await?;
    let failed: Vec<String> = setup
        .report
        .failures()
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    if !failed.is_empty() {
        return Err(SyncError::Precondition(failed.join("; ")));
    }
    let report = setup.report.clone();
    let eopts = EngineOptions {
        tenant: parts.tenant,
        external_id_field: parts.external_id_field,
        xref_property: parts.xref_property,
        batch_size: parts.sync.batch_size,
        lookback_ms: (parts.sync.lookback_secs as i64) * 1000,
        dry_run: parts.dry_run,
        match_contacts_by_email: parts.sync.match_contacts_by_email,
        holder: parts.holder,
        lease_ttl_ms: parts.lease_ttl_ms,
        association_sweep_every: parts.sync.association_sweep_every,
    };
    let gateway = plugin_gateway(
        &sf,
        &hs,
        PluginEgress {
            hubspot_base: &hs_base,
            hubspot_token: hs_token,
            salesforce_transport: &sf_transport,
            hubspot_transport: &hs_transport,
            dry_run: parts.dry_run,
        },
    )
    .await?;
    let engine = match lease {
        Some(lease) => Engine::under_lease(
            sf,
            hs,
            parts.store,
            parts.plugin,
            gateway,
            setup,
            eopts,
            lease,
        ),
        None => Engine::new(sf, hs, parts.store, parts.plugin, gateway, setup, eopts).await?,
    };
    Ok((engine, report))
}

/// What the plugin's way out to the CRMs is built from, besides the sync's clients.
struct PluginEgress<'a> {
    hubspot_base: &'a str,
    hubspot_token: Secret,
    salesforce_transport: &'a crate::crm::TransportOptions,
    hubspot_transport: &'a crate::crm::TransportOptions,
    dry_run: bool,
}

/// The `crm` import's gateway for an engine: real HTTP to the tenant's two CRMs, with the
/// sync clients' credentials (the Salesforce session, refreshed by the sync client) and
/// their allowances (the HubSpot governor, the Salesforce budget), so that a plugin's calls
/// and the sync's share one set of limits. A dry run lets the plugin read, never write.
async fn plugin_gateway(
    sf: &SalesforceClient,
    hs: &HubSpotClient,
    egress: PluginEgress<'_>,
) -> Result<Arc<dyn CrmGateway>, SyncError> {
    let (instance_url, _) = sf.session_access().await?;
    let hubspot = url::Url::parse(egress.hubspot_base).map_err(|e| {
        SyncError::Config(format!("HubSpot base URL {:?}: {e}", egress.hubspot_base))
    })?;
    let bases = CrmBaseUrls {
        salesforce: Some(instance_url),
        hubspot: Some(hubspot),
    };
    let credentials = Arc::new(SyncCredentials {
        salesforce: sf.clone(),
        hubspot_token: egress.hubspot_token,
    });
    let http = HttpGateway::with_transports(
        bases,
        credentials,
        CrmAllowances::of_clients(sf, hs),
        egress.salesforce_transport,
        egress.hubspot_transport,
    )
    .map_err(|e| SyncError::Config(format!("plugin gateway: {e}")))?;
    Ok(if egress.dry_run {
        Arc::new(ReadOnlyGateway(http))
    } else {
        Arc::new(http)
    })
}

/// The sync clients' credentials, lent to the gateway: the token reaches the wire, never
/// the plugin.
struct SyncCredentials {
    salesforce: SalesforceClient,
    hubspot_token: Secret,
}

#[async_trait::async_trait]
impl CredentialProvider for SyncCredentials {
    async fn bearer_token(&self, target: CrmTarget) -> Result<String, GatewayError> {
        match target {
            CrmTarget::Salesforce => self
                .salesforce
                .session_access()
                .await
                .map(|(_, token)| token.expose().to_string())
                .map_err(|e| GatewayError::Credential(format!("salesforce session: {e}"))),
            CrmTarget::Hubspot => Ok(self.hubspot_token.expose().to_string()),
        }
    }
}

/// The webhook receiver's bound socket, before the engine it feeds exists.
#[derive(Debug)]
pub struct WebhookListener {
    listener: tokio::net::TcpListener,
    public_url: String,
    client_secret: Secret,
}

/// Binds the webhook receiver's socket (`[hubspot.webhooks] listen`) and reads the client
/// secret; `None` when webhooks are not configured. A socket that cannot be bound is a
/// [`SyncError::Config`] naming the address.
pub async fn bind_webhooks(
    cfg: &TenantConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<WebhookListener>, SyncError> {
    let (Some(w), Some(credentials)) = (&cfg.hubspot.webhooks, cfg.webhook_credentials(env)?)
    else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(w.listen).await.map_err(|e| {
        SyncError::Config(format!(
            "hubspot.webhooks.listen: cannot listen on {}: {e}",
            w.listen
        ))
    })?;
    // Without a public URL of its own, HubSpot calls the receiver where it listens (its
    // real port when `listen` asked for any free one).
    let public_url = match (&w.public_url, listener.local_addr()) {
        (None, Ok(addr)) => format!("http://{addr}{}", super::webhook_receiver::HOOK_PATH),
        _ => w.public_url(),
    };
    Ok(Some(WebhookListener {
        listener,
        public_url,
        client_secret: credentials.client_secret,
    }))
}

impl WebhookListener {
    /// The address it is bound to.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The URL HubSpot calls.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Serves the receiver for `engine` (its store and tenant, and the app its set-up
    /// found, whose own writes are dropped) on a task of the current runtime, and makes the
    /// engine wake on the changes it stores. Fails if the set-up established no webhook
    /// feed.
    pub fn serve(self, engine: &mut Engine) -> Result<tokio::task::JoinHandle<()>, SyncError> {
        let Some(feed) = engine.setup().webhook_feed else {
            return Err(SyncError::Config(
                "hubspot.webhooks is set but the set-up established no webhook feed".into(),
            ));
        };
        let receiver = WebhookReceiver::new(WebhookReceiverConfig {
            store: engine.store().clone(),
            tenant: engine.lease().tenant.clone(),
            client_secret: self.client_secret,
            app_id: feed.app_id,
            portal_id: feed.hub_id,
            public_url: self.public_url,
        });
        engine.on_hubspot_changes(receiver.changes_arrived());
        engine.on_feed_health(receiver.health());
        let router = receiver.router();
        let listener = self.listener;
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the HubSpot webhook receiver stopped");
            }
        }))
    }
}
