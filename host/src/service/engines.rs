//! A tenant's engine from what the service stores: its two sealed connections (opened
//! with the service's [`crate::api::ConnectionCipher`]) and its active plugin version, or
//! the built-in default rules when none is active.
//!
//! The service keeps no `tenant.toml`: the plugin gets the tenant's stored plugin config
//! (`PUT /v1/tenants/{tenant}/sync/plugin-config`, `{}` by default) and the host fills
//! identity stage tables in (`stage_map = "identity"`), which is what the default rules
//! need; every other setting takes the documented default of the `[sync]` section, the
//! external-id field `dealbridge_id__c` and the cross-reference property
//! `dealbridge_sf_id`. The plugin's `crm` import is refused (as in `dealbridge sync`).
//!
//! [`Sources`] is what an engine was built from, as stored (ciphertexts, version id and
//! digest); the scheduler compares it before each run and rebuilds a cached engine
//! whose sources changed. [`EngineCache`] keeps engines between runs, bounded: the least
//! recently used is dropped first and rebuilt on its tenant's next run. This module must
//! never log or return a credential.

use hashlink::LruCache;

use crate::api::connections::{ConnectionInput, open_connection};
use crate::api::plugins::{default_rules_plugin, loaded};
use crate::api::{ApiError, AppState};
use crate::crm::Secret;
use crate::crm::hubspot::HubSpotConfig;
use crate::crm::salesforce::{SalesforceConfig, SalesforceCredentials};
use crate::store::{EncryptedConnection, Lease, Side, TenantId};
use crate::sync::config::SyncSection;
use crate::sync::start::{EngineParts, assemble};
use crate::sync::{Engine, SyncError};

/// What a tenant's engine is built from, as stored. Equal sources build the same engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    salesforce: EncryptedConnection,
    hubspot: EncryptedConnection,
    /// The active version (id, digest); `None`: the default rules.
    plugin: Option<(i64, String)>,
    /// The plugin's config.
    plugin_config: serde_json::Value,
}

/// What the engine cache did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCacheStats {
    /// Engines kept now.
    pub entries: usize,
    /// Runs that reused a kept engine.
    pub reused: u64,
    /// Engines built (first run of a tenant, changed sources, or dropped before).
    pub built: u64,
    /// Engines dropped to stay within the capacity.
    pub evicted: u64,
}

/// Engines (or anything else per tenant) kept between runs: at most `capacity`, the least
/// recently used dropped first (`hashlink::LruCache`). A tenant's entry is taken out for
/// its run and put back after it, which counts as its use.
pub struct EngineCache<V> {
    entries: LruCache<TenantId, V>,
    stats: EngineCacheStats,
}

impl<V> std::fmt::Debug for EngineCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCache")
            .field("capacity", &self.entries.capacity())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<V> EngineCache<V> {
    /// An empty cache of `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        EngineCache {
            entries: LruCache::new(capacity.max(1)),
            stats: EngineCacheStats::default(),
        }
    }

    /// Takes the tenant's entry out, if kept.
    pub fn take(&mut self, tenant: &TenantId) -> Option<V> {
        self.entries.remove(tenant)
    }

    /// Keeps `value` for `tenant` as its most recent use; when full, drops the least
    /// recently used entry and returns its tenant.
    pub fn put(&mut self, tenant: TenantId, value: V) -> Option<TenantId> {
        let mut evicted = None;
        if !self.entries.contains_key(&tenant) && self.entries.len() >= self.entries.capacity() {
            evicted = self.entries.remove_lru().map(|(oldest, _)| oldest);
            if evicted.is_some() {
                self.stats.evicted += 1;
            }
        }
        self.entries.insert(tenant, value);
        evicted
    }

    /// Counts a run that reused a kept engine.
    pub fn note_reused(&mut self) {
        self.stats.reused += 1;
    }

    /// Counts a built engine.
    pub fn note_built(&mut self) {
        self.stats.built += 1;
    }

    /// What the cache did so far.
    pub fn stats(&self) -> EngineCacheStats {
        EngineCacheStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }
}

/// Why a tenant's engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A connection is missing: the tenant cannot sync yet (not a failure of a run).
    #[error("the {0} connection is not set")]
    NotConnected(Side),
    /// The service could not read what it stored (store, cipher, component).
    #[error("{0}")]
    Service(#[from] ApiError),
    /// The connection, the plugin or the set-up is refused.
    #[error("{0}")]
    Sync(#[from] SyncError),
}

/// Reads the tenant's sources (ciphertexts only, nothing opened).
pub async fn sources(state: &AppState, tenant: &TenantId) -> Result<Sources, BuildError> {
    let store = &state.shared().store;
    let sealed = |crm| async move {
        store
            .connection(tenant, crm)
            .await
            .map_err(ApiError::from)?
            .ok_or(BuildError::NotConnected(crm))
    };
    let salesforce = sealed(Side::Salesforce).await?;
    let hubspot = sealed(Side::HubSpot).await?;
    let plugin = store
        .active_plugin(tenant)
        .await
        .map_err(ApiError::from)?
        .map(|v| (v.id, v.sha256));
    let plugin_config = store
        .sync_job(tenant)
        .await
        .map_err(ApiError::from)?
        .map_or_else(|| serde_json::json!({}), |job| job.plugin_config);
    Ok(Sources {
        salesforce,
        hubspot,
        plugin,
        plugin_config,
    })
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The lease holder (this replica, or a dry run's own name).
    pub holder: String,
    /// The lease time to live.
    pub lease_ttl_ms: i64,
    /// Plan only: create no metadata, write nothing.
    pub dry_run: bool,
}

/// Builds the tenant's engine under `lease` (opening its connections, loading its
/// active plugin, running the set-up). Returns the sources it was built from.
pub async fn build(
    state: &AppState,
    lease: Lease,
    opts: &BuildOptions,
) -> Result<(Engine, Sources), BuildError> {
    let tenant = lease.tenant.clone();
    let built_from = sources(state, &tenant).await?;
    let salesforce = salesforce_config(&opened(state, &tenant, Side::Salesforce).await?)?;
    let hubspot = hubspot_config(&opened(state, &tenant, Side::HubSpot).await?)?;
    let plugin = match &built_from.plugin {
        Some((id, _)) => {
            let version = state
                .shared()
                .store
                .plugin_version(&tenant, *id)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::Internal(format!("active plugin version {id} vanished"))
                })?;
            loaded(state, &tenant, &version).await?
        }
        None => default_rules_plugin(state).await?,
    };
    let sync = SyncSection::default();
    let parts = EngineParts {
        tenant,
        salesforce,
        hubspot,
        store: state.shared().store.clone(),
        plugin,
        plugin_config: built_from.plugin_config.clone(),
        sync,
        external_id_field: "dealbridge_id__c".into(),
        xref_property: "dealbridge_sf_id".into(),
        identity_stage_map: true,
        dry_run: opts.dry_run,
        holder: opts.holder.clone(),
        lease_ttl_ms: opts.lease_ttl_ms,
        webhooks: None,
    };
    let (engine, _report) = assemble(parts, Some(lease)).await?;
    Ok((engine, built_from))
}

async fn opened(
    state: &AppState,
    tenant: &TenantId,
    crm: Side,
) -> Result<ConnectionInput, BuildError> {
    Ok(open_connection(state, tenant, crm)
        .await?
        .ok_or(BuildError::NotConnected(crm))?
        .0)
}

fn missing(crm: &str, what: &str) -> SyncError {
    SyncError::Config(format!("the {crm} connection has no `{what}`"))
}

/// The Salesforce client's settings from a stored connection. The grant follows from the
/// credentials given: `username` + `password` the password flow, a `refresh_token` the
/// refresh-token flow, otherwise `client_id` + `client_secret` the client-credentials flow.
fn salesforce_config(c: &ConnectionInput) -> Result<SalesforceConfig, SyncError> {
    let client_id = c
        .client_id
        .as_ref()
        .ok_or_else(|| missing("salesforce", "client_id"))?
        .expose()
        .to_string();
    let secret = c.client_secret.as_ref().map(|s| Secret::new(s.expose()));
    let credentials = match (&c.username, &c.password, &c.refresh_token) {
        (Some(username), Some(password), _) => SalesforceCredentials::Password {
            client_id,
            client_secret: secret.ok_or_else(|| missing("salesforce", "client_secret"))?,
            username: username.expose().to_string(),
            password: Secret::new(password.expose()),
        },
        (_, _, Some(refresh)) => SalesforceCredentials::RefreshToken {
            client_id,
            client_secret: secret,
            refresh_token: Secret::new(refresh.expose()),
        },
        _ => SalesforceCredentials::ClientCredentials {
            client_id,
            client_secret: secret.ok_or_else(|| missing("salesforce", "client_secret"))?,
        },
    };
    Ok(SalesforceConfig::new(c.base_url.clone(), credentials))
}

/// The HubSpot client's settings from a stored connection (a private-app or OAuth access
/// token).
fn hubspot_config(c: &ConnectionInput) -> Result<HubSpotConfig, SyncError> {
    let token = c
        .access_token
        .as_ref()
        .ok_or_else(|| missing("hubspot", "access_token"))?;
    Ok(HubSpotConfig::new(
        c.base_url.clone(),
        Secret::new(token.expose()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> ConnectionInput {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_salesforce_grant_follows_from_the_credentials() {
        let base = "https://login.example.test";
        let c = salesforce_config(&input(serde_json::json!({"base_url": base,
            "client_id": "id", "client_secret": "s", "username": "u", "password": "p"})))
        .unwrap();
        assert!(matches!(
            c.credentials,
            SalesforceCredentials::Password { .. }
        ));
        let c = salesforce_config(&input(serde_json::json!({"base_url": base,
            "client_id": "id", "refresh_token": "r"})))
        .unwrap();
        assert!(matches!(
            c.credentials,
            SalesforceCredentials::RefreshToken { .. }
        ));
        let c = salesforce_config(&input(serde_json::json!({"base_url": base,
            "client_id": "id", "client_secret": "s"})))
        .unwrap();
        assert!(matches!(
            c.credentials,
            SalesforceCredentials::ClientCredentials { .. }
        ));
        let err = salesforce_config(&input(
            serde_json::json!({"base_url": base, "access_token": "t"}),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("client_id"), "{err}");
    }

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).unwrap()
    }

    #[test]
    fn the_engine_cache_drops_the_least_recently_used_entry() {
        let mut cache = EngineCache::new(2);
        assert_eq!(cache.put(tenant("a"), 1), None);
        assert_eq!(cache.put(tenant("b"), 2), None);
        // `a` runs again (taken out and put back): `b` is now the least recently used.
        let a = cache.take(&tenant("a")).unwrap();
        assert_eq!(cache.put(tenant("a"), a), None);
        assert_eq!(cache.put(tenant("c"), 3), Some(tenant("b")));
        assert_eq!(cache.take(&tenant("b")), None);
        assert_eq!(cache.take(&tenant("a")), Some(1));
        assert_eq!(cache.take(&tenant("c")), Some(3));
        // Putting back a kept tenant replaces it and evicts nothing.
        let mut one = EngineCache::new(1);
        one.put(tenant("a"), 1);
        assert_eq!(one.put(tenant("a"), 2), None);
        assert_eq!(one.take(&tenant("a")), Some(2));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evicted), (0, 1));
    }

    #[test]
    fn hubspot_needs_an_access_token() {
        let err = hubspot_config(&input(
            serde_json::json!({"base_url": "https://api.example.test", "refresh_token": "r"}),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("access_token"), "{err}");
    }
}
