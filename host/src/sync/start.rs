//! Starting an engine from a `tenant.toml`: the store, both clients, the rules component
//! (the tenant's file or the embedded default rules), the set-up and the lease.
//!
//! This is the one place that turns configuration into running parts; it must never read a
//! credential other than from the environment variables the config names.

use std::sync::Arc;

use super::config::{StageMapMode, TenantConfig};
use super::engine::{Engine, EngineOptions};
use super::error::SyncError;
use super::setup::{self, SetupOptions, SetupReport};
use crate::crm::hubspot::HubSpotClient;
use crate::crm::salesforce::{SalesforceClient, SalesforceCredentials};
use crate::runtime::{DenyAllGateway, Runtime, RuntimeConfig};
use crate::store::{self, RetrySchedule, StoreConfig, TenantId};

/// How to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Plan only: create no metadata, write nothing.
    pub dry_run: bool,
    /// The lease holder name (default: host name and process id).
    pub holder: Option<String>,
    /// Lease time to live.
    pub lease_ttl_ms: i64,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            dry_run: false,
            holder: None,
            lease_ttl_ms: 60_000,
        }
    }
}

/// The embedded default rules component.
pub fn default_rules() -> &'static [u8] {
    dealbridge_guests::DEFAULT_RULES_WASM
}

/// Starts an engine. Set-up failures (a missing permission, a missing external-id field)
/// stop it with [`SyncError::Precondition`] naming every failed check; the report is
/// returned with the engine otherwise.
pub async fn start(
    cfg: &TenantConfig,
    env: &dyn Fn(&str) -> Option<String>,
    opts: StartOptions,
) -> Result<(Engine, SetupReport), SyncError> {
    let sf_cfg = cfg.salesforce_client_config(env)?;
    let username = match &sf_cfg.credentials {
        SalesforceCredentials::Password { username, .. } => Some(username.clone()),
        _ => None,
    };
    let sf = SalesforceClient::new(sf_cfg)?;
    let hs = HubSpotClient::new(cfg.hubspot_client_config(env)?)?;
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
    let setup_opts = SetupOptions {
        external_id_field: cfg.salesforce.external_id_field.clone(),
        xref_property: cfg.hubspot.cross_reference_property.clone(),
        company_sync: cfg.sync.company_sync,
        contact_sync: cfg.sync.contact_sync,
        deal_sync: cfg.sync.deal_sync,
        identity_stage_map: cfg.plugin.stage_map == StageMapMode::Identity,
        create_missing: !opts.dry_run,
        username,
    };
    let setup = setup::run(&sf, &hs, &plugin, cfg.plugin_config_json(), &setup_opts).await?;
    let failed: Vec<String> = setup
        .report
        .failures()
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    if !failed.is_empty() {
        return Err(SyncError::Precondition(failed.join("; ")));
    }
    let report = setup.report.clone();
    let holder = opts.holder.unwrap_or_else(|| {
        format!(
            "dealbridge-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        )
    });
    let eopts = EngineOptions {
        tenant: TenantId::new(cfg.tenant.clone()).map_err(|e| SyncError::Config(e.to_string()))?,
        external_id_field: cfg.salesforce.external_id_field.clone(),
        xref_property: cfg.hubspot.cross_reference_property.clone(),
        batch_size: cfg.sync.batch_size,
        lookback_ms: (cfg.sync.lookback_secs as i64) * 1000,
        dry_run: opts.dry_run,
        match_contacts_by_email: cfg.sync.match_contacts_by_email,
        holder,
        lease_ttl_ms: opts.lease_ttl_ms,
        association_sweep_every: cfg.sync.association_sweep_every,
    };
    let engine = Engine::new(
        sf,
        hs,
        store,
        plugin,
        Arc::new(DenyAllGateway),
        setup,
        eopts,
    )
    .await?;
    Ok((engine, report))
}
