//! Key rotation's last step: seal every stored CRM connection again under the current
//! key, so that the previous keys can be retired: `dealbridge keys reseal`, or the
//! operator route `POST /v1/admin/connections/reseal[?dry_run=true]` (with the keys of
//! the replica that answers).
//!
//! The procedure (also in the README): start every replica with the new key in
//! `DEALBRIDGE_SECRET_KEY` and the old one in `DEALBRIDGE_PREVIOUS_SECRET_KEYS`; run
//! [`reseal_all`] (it opens each connection with whichever key sealed it and seals it
//! with the current key); once it reports nothing left under another key, drop the old
//! key from `DEALBRIDGE_PREVIOUS_SECRET_KEYS` and restart the replicas.
//!
//! Each connection is replaced only if it is still the one that was read
//! ([`crate::store::Store::reseal_connection`]), so a tenant who writes its connection
//! meanwhile (sealed with the current key by the API) is never overwritten; the
//! plaintext and the connection's `updated_at_ms` are unchanged. Running it again is
//! harmless: what the current key sealed is left as it is.
//!
//! It walks the tenants with the operator's listing ([`crate::store::Store::list_tenants`])
//! and reads each tenant's connections with that tenant's id: no query crosses tenants.
//! What it must never do: report or log a key, a plaintext or a ciphertext (a failure
//! names the tenant, the CRM, the key id and what went wrong).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Operator;
use super::error::{ApiError, ApiQuery, ErrorBody};
use super::secrets::{CipherError, ConnectionCipher};
use crate::store::{Side, Store, StoreError, TenantId};

/// Tenants read per page of the operator's listing.
const TENANT_PAGE: u32 = 500;

/// What [`reseal_all`] did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResealReport {
    /// The id of the current key, which seals everything resealed.
    pub current_key_id: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Tenants looked at.
    pub tenants: u64,
    /// Stored connections found.
    pub connections: u64,
    /// How many connections each key sealed before the run, by key id.
    pub by_key_before: BTreeMap<String, u64>,
    /// Connections already sealed with the current key (left as they are).
    pub already_current: u64,
    /// Connections sealed again with the current key (dry run: that would be).
    pub resealed: u64,
    /// Connections written (with the current key) or deleted by their tenant meanwhile,
    /// so left as they are.
    pub changed_meanwhile: u64,
    /// Connections that could not be opened: sealed with a key this process does not
    /// hold, or not authenticating.
    pub failed: Vec<ResealFailure>,
}

impl ResealReport {
    /// Whether every connection is now (dry run: could be) under the current key.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A connection that could not be resealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResealFailure {
    /// Its tenant.
    pub tenant: String,
    /// `salesforce` or `hubspot`.
    pub crm: String,
    /// The key id stored with it.
    pub key_id: String,
    /// What went wrong (key ids only).
    pub error: String,
}

/// Seals every stored connection that another key sealed again with `cipher`'s current
/// key (see the module doc). A connection that cannot be opened is reported, not fatal;
/// only a store failure stops the run.
pub async fn reseal_all(
    store: &dyn Store,
    cipher: &ConnectionCipher,
    dry_run: bool,
) -> Result<ResealReport, StoreError> {
    let mut report = ResealReport {
        current_key_id: cipher.key_id().to_string(),
        dry_run,
        ..ResealReport::default()
    };
    let mut after: Option<TenantId> = None;
    loop {
        let page = store.list_tenants(after.as_ref(), TENANT_PAGE).await?;
        for tenant in &page {
            report.tenants += 1;
            for crm in [Side::Salesforce, Side::HubSpot] {
                reseal_one(store, cipher, &tenant.id, crm, dry_run, &mut report).await?;
            }
        }
        match page.last() {
            Some(last) if page.len() == TENANT_PAGE as usize => after = Some(last.id.clone()),
            _ => return Ok(report),
        }
    }
}

async fn reseal_one(
    store: &dyn Store,
    cipher: &ConnectionCipher,
    tenant: &TenantId,
    crm: Side,
    dry_run: bool,
    report: &mut ResealReport,
) -> Result<(), StoreError> {
    let Some(stored) = store.connection(tenant, crm).await? else {
        return Ok(());
    };
    report.connections += 1;
    *report
        .by_key_before
        .entry(stored.key_id.clone())
        .or_default() += 1;
    if stored.key_id == cipher.key_id() {
        report.already_current += 1;
        return Ok(());
    }
    let failed = |e: CipherError| ResealFailure {
        tenant: tenant.to_string(),
        crm: crm.to_string(),
        key_id: stored.key_id.clone(),
        error: e.to_string(),
    };
    let plain = match cipher.open(tenant, crm, &stored.key_id, &stored.ciphertext) {
        Ok(plain) => plain,
        Err(e) => {
            tracing::warn!(tenant = %tenant, crm = %crm, key_id = %stored.key_id, error = %e, "a connection cannot be resealed");
            report.failed.push(failed(e));
            return Ok(());
        }
    };
    if dry_run {
        report.resealed += 1;
        return Ok(());
    }
    let ciphertext = match cipher.seal(tenant, crm, &plain) {
        Ok(c) => c,
        Err(e) => {
            report.failed.push(failed(e));
            return Ok(());
        }
    };
    if store
        .reseal_connection(tenant, crm, &stored, cipher.key_id(), &ciphertext)
        .await?
    {
        tracing::info!(tenant = %tenant, crm = %crm, from = %stored.key_id, to = %cipher.key_id(), "connection resealed");
        report.resealed += 1;
    } else {
        report.changed_meanwhile += 1;
    }
    Ok(())
}

/// The query of the operator route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResealQuery {
    /// Count only; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reseal_connections))
}

/// Seals every stored connection again under this replica's current key (see
/// `dealbridge keys reseal`); `failed` lists what this replica's keys cannot open.
#[utoipa::path(post, path = "/v1/admin/connections/reseal", tag = "tenants",
    params(ResealQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = ResealReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn reseal_connections(
    _op: Operator,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ResealQuery>,
) -> Result<Json<ResealReport>, ApiError> {
    let shared = state.shared();
    let report = reseal_all(shared.store.as_ref(), &shared.cipher, q.dry_run).await?;
    tracing::info!(
        dry_run = report.dry_run,
        resealed = report.resealed,
        failed = report.failed.len(),
        "connections resealed"
    );
    Ok(Json(report))
}
