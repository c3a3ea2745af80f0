//! Set-up and checks before any record moves: the preconditions of SYNC-SPEC.md (the
//! integration user's permissions, company sync before deal sync, deal sync before an
//! import), the cross-reference keys on both sides (the Salesforce external-id field, the
//! unique HubSpot property, created when missing), one HubSpot pipeline per Opportunity
//! record type with its stages, the owner map by email, and the field tables of each
//! object pair from the plugin's description intersected with what the CRMs describe.
//!
//! When the webhook change feed is configured, set-up also learns the app's id (from the
//! config or the token's access-token info) and the portal's hub id (from the
//! access-token info) and, with a developer API key, points the
//! app's webhooks at the receiver's public URL and makes sure every subscription the
//! synced pairs need exists and is active ([`WebhookFeed`]).
//!
//! Every finding is a [`Check`] in the [`SetupReport`] so the CLI can show it. Set-up
//! creates only metadata (a property, a pipeline, webhook settings and subscriptions),
//! never records, and must never silently drop a mapping: a mapping whose field is missing
//! on one side is reported.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::error::SyncError;
use super::values::{FieldKind, hubspot_kind, salesforce_kind};
use crate::crm::Secret;
use crate::crm::hubspot::HubSpotClient;
use crate::crm::hubspot::types::{NewPipeline, NewProperty, NewStage, PropertyDefinition};
use crate::crm::salesforce::SalesforceClient;
use crate::crm::salesforce::types::{QueryScope, SObjectDescribe, soql_quote};
use crate::runtime::{self, Crm, FieldInfo, Invocation, LoadedPlugin};
use crate::store::ObjectPair;

/// One object pair and the objects it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSpec {
    /// The store's name of the pair.
    pub pair: ObjectPair,
    /// The Salesforce sObject.
    pub sobject: &'static str,
    /// The HubSpot object type.
    pub hs_object: &'static str,
    /// The HubSpot property with the modification time.
    pub hs_modified: &'static str,
}

/// The three pairs, in sync order.
pub const PAIRS: [PairSpec; 3] = [
    PairSpec {
        pair: ObjectPair::AccountCompany,
        sobject: "Account",
        hs_object: "companies",
        hs_modified: "hs_lastmodifieddate",
    },
    PairSpec {
        pair: ObjectPair::ContactContact,
        sobject: "Contact",
        hs_object: "contacts",
        hs_modified: "lastmodifieddate",
    },
    PairSpec {
        pair: ObjectPair::OpportunityDeal,
        sobject: "Opportunity",
        hs_object: "deals",
        hs_modified: "hs_lastmodifieddate",
    },
];

impl PairSpec {
    /// The spec of a pair.
    pub fn of(pair: ObjectPair) -> PairSpec {
        *PAIRS
            .iter()
            .find(|p| p.pair == pair)
            .expect("every pair has a spec")
    }

    /// The contract's name of the pair.
    pub fn wit(&self) -> runtime::ObjectPair {
        wit_pair(self.pair)
    }
}

/// The contract's object pair for the store's.
pub fn wit_pair(p: ObjectPair) -> runtime::ObjectPair {
    match p {
        ObjectPair::OpportunityDeal => runtime::ObjectPair::OpportunityDeal,
        ObjectPair::AccountCompany => runtime::ObjectPair::AccountCompany,
        ObjectPair::ContactContact => runtime::ObjectPair::ContactContact,
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Holds.
    Ok,
    /// Done now (a property or pipeline created).
    Created,
    /// Could not be verified, or holds with a caveat.
    Warning,
    /// Does not hold: the sync cannot run.
    Failed,
}

/// One finding of the set-up.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// What a person should know.
    pub message: String,
}

/// Everything the set-up found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupReport {
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl SetupReport {
    fn push(&mut self, name: impl Into<String>, status: CheckStatus, message: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            status,
            message: message.into(),
        });
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
    }
}

/// The field tables of one pair: what is fetched and sent to the plugin.
#[derive(Debug, Clone)]
pub struct PairSchema {
    /// The pair.
    pub spec: PairSpec,
    /// Salesforce fields of the batch's field table.
    pub sf_fields: Vec<String>,
    /// Their kinds.
    pub sf_kinds: Vec<FieldKind>,
    /// Which of them are formulas (their own changes never trigger a sync).
    pub sf_calculated: Vec<bool>,
    /// HubSpot properties of the batch's field table.
    pub hs_fields: Vec<String>,
    /// Their kinds.
    pub hs_kinds: Vec<FieldKind>,
    /// Every Salesforce field the sync may write (createable or updateable) and its kind.
    pub sf_writable: HashMap<String, FieldKind>,
    /// Every HubSpot property the sync may write and its kind.
    pub hs_writable: HashMap<String, FieldKind>,
}

impl PairSchema {
    /// The position of a Salesforce field in the table.
    pub fn sf_index(&self, name: &str) -> Option<usize> {
        self.sf_fields.iter().position(|f| f == name)
    }
    /// The position of a HubSpot property in the table.
    pub fn hs_index(&self, name: &str) -> Option<usize> {
        self.hs_fields.iter().position(|f| f == name)
    }
}

/// What the set-up established for the engine.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Field tables of each synced pair.
    pub pairs: Vec<PairSchema>,
    /// Salesforce users and HubSpot owners by email.
    pub owners: Vec<runtime::Owner>,
    /// The synced deal pipelines.
    pub pipelines: Vec<runtime::Pipeline>,
    /// The plugin config as the plugin gets it (with host-filled stage tables).
    pub plugin_config: serde_json::Value,
    /// The findings.
    pub report: SetupReport,
    /// Whether the org has multi-currency (`CurrencyIsoCode` on Opportunity).
    pub multi_currency: bool,
    /// The HubSpot webhook change feed, when configured.
    pub webhook_feed: Option<WebhookFeed>,
}

/// What set-up established of the HubSpot webhook change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookFeed {
    /// The app whose own writes the receiver drops.
    pub app_id: u64,
    /// The portal (hub) the token belongs to, from its access-token info; `None` when
    /// that could not be read.
    pub hub_id: Option<u64>,
    /// The app's target URL and every subscription the synced pairs need were confirmed
    /// (false without a developer API key, in a dry run that would have had to change
    /// them, or when HubSpot's developer API could not be read).
    pub verified: bool,
}

/// The webhook change feed's part of the set-up options.
#[derive(Debug, Clone)]
pub struct WebhookSetup {
    /// The app's id, when configured (else learnt from the token's access-token info).
    pub app_id: Option<u64>,
    /// The URL HubSpot must call.
    pub public_url: String,
    /// The developer account's API key, to read and change the app's webhooks.
    pub developer_api_key: Option<Secret>,
}

/// Deliveries HubSpot may have in flight at once to the receiver.
pub const WEBHOOK_MAX_CONCURRENT: u32 = 10;

impl Setup {
    /// The schema of a pair, when it is synced.
    pub fn pair(&self, pair: ObjectPair) -> Option<&PairSchema> {
        self.pairs.iter().find(|p| p.spec.pair == pair)
    }
}

/// What the set-up needs to know of the tenant's choices.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The Salesforce external-id field.
    pub external_id_field: String,
    /// The HubSpot cross-reference property.
    pub xref_property: String,
    /// Account ↔ company sync on.
    pub company_sync: bool,
    /// Contact sync on.
    pub contact_sync: bool,
    /// Deal sync on.
    pub deal_sync: bool,
    /// Fill identity stage tables into the plugin config.
    pub identity_stage_map: bool,
    /// Create missing metadata (false in a dry run: only report).
    pub create_missing: bool,
    /// The integration user's username, when the grant names it (for the permission check).
    pub username: Option<String>,
    /// The webhook change feed, when configured.
    pub webhooks: Option<WebhookSetup>,
}

/// The label of the pipeline for a record type.
pub fn pipeline_label(record_type: Option<&str>) -> String {
    match record_type {
        Some(name) => format!("Salesforce - {name}"),
        None => "Salesforce - Default pipeline".to_string(),
    }
}

/// Runs every check and creates what is missing.
pub async fn run(
    sf: &SalesforceClient,
    hs: &HubSpotClient,
    plugin: &LoadedPlugin,
    plugin_config: serde_json::Value,
    opts: &SetupOptions,
) -> Result<Setup, SyncError> {
    let mut report = SetupReport::default();
    sf.connect().await?;
    report.push(
        "salesforce.connect",
        CheckStatus::Ok,
        "logged in to Salesforce",
    );

    check_permissions(sf, opts.username.as_deref(), &mut report).await;
    if opts.deal_sync && !opts.company_sync {
        report.push(
            "order.company_before_deal",
            CheckStatus::Warning,
            "company sync is off: deals will sync without their company association (turn company sync on and import accounts first)",
        );
    } else {
        report.push(
            "order.company_before_deal",
            CheckStatus::Ok,
            "company sync runs before deal sync",
        );
    }
    if !opts.deal_sync {
        report.push(
            "order.deal_before_import",
            CheckStatus::Warning,
            "deal sync is off: an opportunity import now creates no deals",
        );
    }

    let synced: Vec<PairSpec> = PAIRS
        .iter()
        .copied()
        .filter(|p| match p.pair {
            ObjectPair::AccountCompany => opts.company_sync,
            ObjectPair::ContactContact => opts.contact_sync,
            ObjectPair::OpportunityDeal => opts.deal_sync,
        })
        .collect();

    // Describes of both sides.
    let mut sf_desc: HashMap<ObjectPair, SObjectDescribe> = HashMap::new();
    let mut hs_props: HashMap<ObjectPair, Vec<PropertyDefinition>> = HashMap::new();
    for spec in &synced {
        let d = sf.describe(spec.sobject).await?;
        match d.field(&opts.external_id_field) {
            Some(f) if f.external_id => report.push(
                format!("salesforce.external_id.{}", spec.sobject),
                CheckStatus::Ok,
                format!("{}.{} is an external id", spec.sobject, opts.external_id_field),
            ),
            Some(_) => report.push(
                format!("salesforce.external_id.{}", spec.sobject),
                CheckStatus::Failed,
                format!("{}.{} exists but is not marked External ID: mark it External ID (and Unique) in Setup", spec.sobject, opts.external_id_field),
            ),
            None => report.push(
                format!("salesforce.external_id.{}", spec.sobject),
                CheckStatus::Failed,
                format!(
                    "{}.{} is missing: create a Text(64) field with External ID and Unique ticked on {} (dealbridge writes the HubSpot id there and upserts by it)",
                    spec.sobject, opts.external_id_field, spec.sobject
                ),
            ),
        }
        sf_desc.insert(spec.pair, d);
        let props = ensure_xref_property(
            hs,
            spec,
            &opts.xref_property,
            opts.create_missing,
            &mut report,
        )
        .await?;
        hs_props.insert(spec.pair, props);
    }
    let multi_currency = sf_desc
        .get(&ObjectPair::OpportunityDeal)
        .is_some_and(|d| d.field("CurrencyIsoCode").is_some());

    // Owners by email.
    let owners = owner_map(sf, hs, &mut report).await?;

    // Pipelines.
    let pipelines = if opts.deal_sync {
        ensure_pipelines(sf, hs, opts.create_missing, &mut report).await?
    } else {
        Vec::new()
    };
    let plugin_config = if opts.identity_stage_map {
        with_identity_stage_map(plugin_config, &pipelines)
    } else {
        plugin_config
    };

    // The plugin's description, against the described schema.
    let mut schema_info = Vec::new();
    for spec in &synced {
        for f in &sf_desc[&spec.pair].fields {
            schema_info.push(FieldInfo {
                crm: Crm::Salesforce,
                object_pair: spec.wit(),
                name: f.name.clone(),
                type_name: f.field_type.clone(),
                field_type: None,
            });
        }
        for p in &hs_props[&spec.pair] {
            schema_info.push(FieldInfo {
                crm: Crm::Hubspot,
                object_pair: spec.wit(),
                name: p.name.clone(),
                type_name: p.property_type.clone(),
                field_type: Some(p.field_type.clone()),
            });
        }
    }
    let inv = Invocation::new(
        Default::default(),
        &plugin_config,
        std::sync::Arc::new(runtime::DenyAllGateway),
    )?;
    let description = plugin.describe(&inv, &schema_info).await.result?;
    report.push(
        "plugin.describe",
        CheckStatus::Ok,
        format!(
            "{} {}: {} mappings",
            description.name,
            description.version,
            description.mappings.len()
        ),
    );

    let mut pairs = Vec::new();
    for spec in &synced {
        let desc = &sf_desc[&spec.pair];
        let props = &hs_props[&spec.pair];
        let hs_by_name: HashMap<&str, &PropertyDefinition> =
            props.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut schema = PairSchema {
            spec: *spec,
            sf_fields: Vec::new(),
            sf_kinds: Vec::new(),
            sf_calculated: Vec::new(),
            hs_fields: Vec::new(),
            hs_kinds: Vec::new(),
            sf_writable: desc
                .fields
                .iter()
                .filter(|f| (f.createable || f.updateable) && !f.calculated)
                .map(|f| (f.name.clone(), salesforce_kind(&f.field_type)))
                .collect(),
            hs_writable: props
                .iter()
                .filter(|p| !p.calculated)
                .map(|p| {
                    (
                        p.name.clone(),
                        hubspot_kind(&p.property_type, &p.field_type),
                    )
                })
                .collect(),
        };
        let mut inactive = Vec::new();
        for m in description
            .mappings
            .iter()
            .filter(|m| m.object_pair == spec.wit())
        {
            let sf_f = desc.field(&m.salesforce_field);
            let hs_p = hs_by_name.get(m.hubspot_field.as_str());
            match (sf_f, hs_p) {
                (Some(f), Some(p)) => {
                    if schema.sf_index(&f.name).is_none() {
                        schema.sf_fields.push(f.name.clone());
                        schema.sf_kinds.push(salesforce_kind(&f.field_type));
                        schema.sf_calculated.push(f.calculated);
                    }
                    if schema.hs_index(&p.name).is_none() {
                        schema.hs_fields.push(p.name.clone());
                        schema
                            .hs_kinds
                            .push(hubspot_kind(&p.property_type, &p.field_type));
                    }
                }
                (sf_f, _) => inactive.push(format!(
                    "{} ↔ {} ({})",
                    m.salesforce_field,
                    m.hubspot_field,
                    if sf_f.is_none() {
                        "no such Salesforce field"
                    } else {
                        "no such HubSpot property"
                    }
                )),
            }
        }
        for x in description
            .extra_fields
            .iter()
            .filter(|x| x.object_pair == spec.wit())
        {
            match x.crm {
                Crm::Salesforce => {
                    if let Some(f) = desc.field(&x.name)
                        && schema.sf_index(&f.name).is_none()
                    {
                        schema.sf_fields.push(f.name.clone());
                        schema.sf_kinds.push(salesforce_kind(&f.field_type));
                        schema.sf_calculated.push(f.calculated);
                    }
                }
                Crm::Hubspot => {
                    if let Some(p) = hs_by_name.get(x.name.as_str())
                        && schema.hs_index(&p.name).is_none()
                    {
                        schema.hs_fields.push(p.name.clone());
                        schema
                            .hs_kinds
                            .push(hubspot_kind(&p.property_type, &p.field_type));
                    }
                }
            }
        }
        if inactive.is_empty() {
            report.push(
                format!("mappings.{}", spec.pair),
                CheckStatus::Ok,
                format!(
                    "{} fields ↔ {} properties",
                    schema.sf_fields.len(),
                    schema.hs_fields.len()
                ),
            );
        } else {
            report.push(
                format!("mappings.{}", spec.pair),
                CheckStatus::Warning,
                format!(
                    "inactive mappings (field missing on one side, not synced): {}",
                    inactive.join(", ")
                ),
            );
        }
        pairs.push(schema);
    }

    let webhook_feed = match &opts.webhooks {
        Some(w) => ensure_webhooks(hs, &pairs, w, opts.create_missing, &mut report).await,
        None => None,
    };

    Ok(Setup {
        pairs,
        owners,
        pipelines,
        plugin_config,
        report,
        multi_currency,
        webhook_feed,
    })
}

/// The webhook subscription's object name of a v3 object type (`deals` → `deal`).
fn subscription_object(object_type: &str) -> &str {
    match object_type {
        "deals" => "deal",
        "companies" => "company",
        "contacts" => "contact",
        other => other,
    }
}

/// The subscriptions a pair needs: its object's creations, deletions, restores (a
/// restored record must be read again) and the changes of every HubSpot property the
/// pair reads.
fn wanted_subscriptions(schema: &PairSchema) -> Vec<(String, Option<String>)> {
    let object = subscription_object(schema.spec.hs_object);
    let mut wanted = vec![
        (format!("{object}.creation"), None),
        (format!("{object}.deletion"), None),
        (format!("{object}.restore"), None),
    ];
    wanted.extend(
        schema
            .hs_fields
            .iter()
            .map(|p| (format!("{object}.propertyChange"), Some(p.clone()))),
    );
    wanted
}

/// The webhook feed's set-up: the app id and the portal's hub id (the token's
/// access-token info, read even when the app id is configured), then (with a developer
/// key) the app's target URL and the subscriptions of every synced pair, created or
/// switched on when missing (unless a dry run). `None` (with a failed check) when the
/// app id cannot be learnt.
async fn ensure_webhooks(
    hs: &HubSpotClient,
    pairs: &[PairSchema],
    opts: &WebhookSetup,
    create_missing: bool,
    report: &mut SetupReport,
) -> Option<WebhookFeed> {
    const CHECK: &str = "hubspot.webhooks.app";
    let token_info = hs.access_token_info().await;
    let (app_id, hub_id) = match (opts.app_id, token_info) {
        (Some(id), Ok(info)) => {
            report.push(
                CHECK,
                CheckStatus::Ok,
                format!(
                    "app {id} (from hubspot.webhooks.app_id) of portal {}",
                    info.hub_id
                ),
            );
            (id, Some(info.hub_id))
        }
        (Some(id), Err(e)) => {
            report.push(
                CHECK,
                CheckStatus::Warning,
                format!(
                    "app {id} (from hubspot.webhooks.app_id); the portal's hub id is unknown: cannot read the token's access-token info ({e})"
                ),
            );
            (id, None)
        }
        (None, Ok(info)) => {
            report.push(
                CHECK,
                CheckStatus::Ok,
                format!(
                    "app {} of portal {} (from the token's access-token info)",
                    info.app_id, info.hub_id
                ),
            );
            (info.app_id, Some(info.hub_id))
        }
        (None, Err(e)) => {
            report.push(
                CHECK,
                CheckStatus::Failed,
                format!("cannot learn the private app's id from its token ({e}): set hubspot.webhooks.app_id"),
            );
            return None;
        }
    };
    let Some(key) = &opts.developer_api_key else {
        let events: Vec<String> = pairs
            .iter()
            .map(|p| {
                let o = subscription_object(p.spec.hs_object);
                format!(
                    "{o}.creation, {o}.deletion, {o}.restore, {o}.propertyChange of {}",
                    p.hs_fields.join(", ")
                )
            })
            .collect();
        report.push(
            "hubspot.webhooks.subscriptions",
            CheckStatus::Warning,
            format!(
                "no developer API key (hubspot.webhooks.developer_api_key_env): cannot verify that app {app_id} delivers to {} and subscribes to {}",
                opts.public_url,
                events.join("; ")
            ),
        );
        return Some(WebhookFeed {
            app_id,
            hub_id,
            verified: false,
        });
    };
    let settings_ok = ensure_webhook_target(hs, app_id, key, opts, create_missing, report).await;
    let subscriptions_ok =
        ensure_webhook_subscriptions(hs, app_id, key, pairs, create_missing, report).await;
    Some(WebhookFeed {
        app_id,
        hub_id,
        verified: settings_ok && subscriptions_ok,
    })
}

/// Points the app's webhooks at the public URL; whether they are (now) pointed there.
async fn ensure_webhook_target(
    hs: &HubSpotClient,
    app_id: u64,
    key: &Secret,
    opts: &WebhookSetup,
    create_missing: bool,
    report: &mut SetupReport,
) -> bool {
    const CHECK: &str = "hubspot.webhooks.target_url";
    let current = match hs.webhook_settings(app_id, key).await {
        Ok(s) => s,
        Err(e) => {
            report.push(
                CHECK,
                CheckStatus::Warning,
                format!("cannot read app {app_id}'s webhook settings: {e}"),
            );
            return false;
        }
    };
    match current {
        Some(s) if s.target_url == opts.public_url => {
            report.push(
                CHECK,
                CheckStatus::Ok,
                format!("app {app_id} delivers to {}", opts.public_url),
            );
            true
        }
        current if !create_missing => {
            let now = current.map_or("no target URL".to_string(), |s| {
                format!("delivers to {}", s.target_url)
            });
            report.push(
                CHECK,
                CheckStatus::Warning,
                format!(
                    "app {app_id} {now}, not {} (dry run: not changed)",
                    opts.public_url
                ),
            );
            false
        }
        _ => match hs
            .put_webhook_settings(app_id, key, &opts.public_url, WEBHOOK_MAX_CONCURRENT)
            .await
        {
            Ok(_) => {
                report.push(
                    CHECK,
                    CheckStatus::Created,
                    format!("app {app_id} now delivers to {}", opts.public_url),
                );
                true
            }
            Err(e) => {
                report.push(
                    CHECK,
                    CheckStatus::Warning,
                    format!(
                        "cannot point app {app_id}'s webhooks at {}: {e}",
                        opts.public_url
                    ),
                );
                false
            }
        },
    }
}

/// Makes sure every subscription of every synced pair exists and is active; whether all
/// (now) do. One check per object.
async fn ensure_webhook_subscriptions(
    hs: &HubSpotClient,
    app_id: u64,
    key: &Secret,
    pairs: &[PairSchema],
    create_missing: bool,
    report: &mut SetupReport,
) -> bool {
    let existing = match hs.webhook_subscriptions(app_id, key).await {
        Ok(list) => list,
        Err(e) => {
            report.push(
                "hubspot.webhooks.subscriptions",
                CheckStatus::Warning,
                format!("cannot read app {app_id}'s webhook subscriptions: {e}"),
            );
            return false;
        }
    };
    let mut all_ok = true;
    for schema in pairs {
        let check = format!(
            "hubspot.webhooks.subscriptions.{}",
            subscription_object(schema.spec.hs_object)
        );
        let wanted = wanted_subscriptions(schema);
        let (mut created, mut activated, mut missing, mut failed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (event_type, property) in &wanted {
            let name = match property {
                Some(p) => format!("{event_type}:{p}"),
                None => event_type.clone(),
            };
            let found = existing.iter().find(|s| {
                &s.event_type == event_type && s.property_name.as_deref() == property.as_deref()
            });
            match found {
                Some(s) if s.active => {}
                _ if !create_missing => missing.push(name),
                Some(s) => match hs
                    .set_webhook_subscription_active(app_id, key, &s.id, true)
                    .await
                {
                    Ok(_) => activated.push(name),
                    Err(e) => failed.push(format!("{name} ({e})")),
                },
                None => match hs
                    .create_webhook_subscription(app_id, key, event_type, property.as_deref())
                    .await
                {
                    Ok(_) => created.push(name),
                    Err(e) => failed.push(format!("{name} ({e})")),
                },
            }
        }
        if !failed.is_empty() || !missing.is_empty() {
            all_ok = false;
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!(
                    "missing or paused (dry run: not changed): {}",
                    missing.join(", ")
                ));
            }
            if !failed.is_empty() {
                parts.push(format!("could not be set up: {}", failed.join(", ")));
            }
            report.push(check, CheckStatus::Warning, parts.join("; "));
        } else if created.is_empty() && activated.is_empty() {
            report.push(
                check,
                CheckStatus::Ok,
                format!("{} subscriptions active", wanted.len()),
            );
        } else {
            let mut parts = Vec::new();
            if !created.is_empty() {
                parts.push(format!("created {}", created.join(", ")));
            }
            if !activated.is_empty() {
                parts.push(format!("switched on {}", activated.join(", ")));
            }
            report.push(
                check,
                CheckStatus::Created,
                format!(
                    "{} subscriptions active ({})",
                    wanted.len(),
                    parts.join("; ")
                ),
            );
        }
    }
    all_ok
}

/// "Modify All Data" or "Modify Metadata Through Metadata API Functions" of the
/// integration user, through its permission-set assignments (a profile is an owned
/// permission set, so this covers both). The user is found by its username (password
/// grant); other grants cannot name the user, which is reported as a warning.
async fn check_permissions(
    sf: &SalesforceClient,
    username: Option<&str>,
    report: &mut SetupReport,
) {
    let name = "salesforce.permissions";
    let Some(username) = username else {
        report.push(
            name,
            CheckStatus::Warning,
            "cannot tell which user the OAuth grant runs as: make sure it has \"Modify All Data\" or \"Modify Metadata Through Metadata API Functions\"",
        );
        return;
    };
    let soql = format!(
        "SELECT PermissionSet.PermissionsModifyAllData, PermissionSet.PermissionsModifyMetadata FROM PermissionSetAssignment WHERE Assignee.Username = {}",
        soql_quote(username)
    );
    match sf.query(&soql, QueryScope::Live).await {
        Ok(rows) => {
            let flag = |r: &crate::crm::salesforce::SObject, f: &str| {
                r.fields.get("PermissionSet").and_then(|p| p.get(f)).and_then(|v| v.as_bool()) == Some(true)
            };
            if rows.iter().any(|r| flag(r, "PermissionsModifyAllData") || flag(r, "PermissionsModifyMetadata")) {
                report.push(name, CheckStatus::Ok, format!("{username} has Modify All Data or Modify Metadata Through Metadata API Functions"));
            } else {
                report.push(
                    name,
                    CheckStatus::Failed,
                    format!("{username} has neither \"Modify All Data\" nor \"Modify Metadata Through Metadata API Functions\": grant one in its profile or a permission set"),
                );
            }
        }
        Err(e) => report.push(
            name,
            CheckStatus::Warning,
            format!("could not verify the permissions of {username} (PermissionSetAssignment is not readable: {e}); make sure it has \"Modify All Data\" or \"Modify Metadata Through Metadata API Functions\""),
        ),
    }
}

async fn ensure_xref_property(
    hs: &HubSpotClient,
    spec: &PairSpec,
    name: &str,
    create: bool,
    report: &mut SetupReport,
) -> Result<Vec<PropertyDefinition>, SyncError> {
    let mut props = hs.list_properties(spec.hs_object).await?;
    let check = format!("hubspot.cross_reference.{}", spec.hs_object);
    match props.iter().find(|p| p.name == name) {
        Some(p) if p.has_unique_value => report.push(check, CheckStatus::Ok, format!("{}.{name} has unique values", spec.hs_object)),
        Some(_) => report.push(
            check,
            CheckStatus::Failed,
            format!("{}.{name} exists without unique values: upserts need hasUniqueValue (delete it or choose another hubspot.cross_reference_property)", spec.hs_object),
        ),
        None if !create => report.push(check, CheckStatus::Warning, format!("{}.{name} is missing and would be created", spec.hs_object)),
        None => {
            let group = match spec.hs_object {
                "deals" => "dealinformation",
                "companies" => "companyinformation",
                _ => "contactinformation",
            };
            let created = hs
                .create_property(
                    spec.hs_object,
                    &NewProperty {
                        name: name.to_string(),
                        label: "Salesforce ID (dealbridge)".into(),
                        property_type: "string".into(),
                        field_type: "text".into(),
                        group_name: group.into(),
                        options: Vec::new(),
                        has_unique_value: true,
                    },
                )
                .await?;
            report.push(check, CheckStatus::Created, format!("created {}.{name} with unique values", spec.hs_object));
            props.push(created);
        }
    }
    Ok(props)
}

async fn owner_map(
    sf: &SalesforceClient,
    hs: &HubSpotClient,
    report: &mut SetupReport,
) -> Result<Vec<runtime::Owner>, SyncError> {
    let users = sf.users().await?;
    let owners = hs.list_owners().await?;
    let mut by_email: BTreeMap<String, runtime::Owner> = BTreeMap::new();
    for u in users.iter().filter(|u| u.is_active) {
        if let Some(e) = u.email.as_deref().filter(|e| !e.is_empty()) {
            let e = e.to_lowercase();
            by_email
                .entry(e.clone())
                .or_insert(runtime::Owner {
                    email: e,
                    salesforce_user_id: None,
                    hubspot_owner_id: None,
                })
                .salesforce_user_id = Some(u.id.clone());
        }
    }
    for o in owners.iter().filter(|o| !o.archived) {
        if let Some(e) = o.email.as_deref().filter(|e| !e.is_empty()) {
            let e = e.to_lowercase();
            by_email
                .entry(e.clone())
                .or_insert(runtime::Owner {
                    email: e,
                    salesforce_user_id: None,
                    hubspot_owner_id: None,
                })
                .hubspot_owner_id = Some(o.id.clone());
        }
    }
    let matched = by_email
        .values()
        .filter(|o| o.salesforce_user_id.is_some() && o.hubspot_owner_id.is_some())
        .count();
    let sf_only: Vec<&str> = by_email
        .values()
        .filter(|o| o.salesforce_user_id.is_some() && o.hubspot_owner_id.is_none())
        .map(|o| o.email.as_str())
        .collect();
    let status = if sf_only.is_empty() {
        CheckStatus::Ok
    } else {
        CheckStatus::Warning
    };
    let mut msg = format!("{matched} Salesforce users matched to HubSpot owners by email");
    if !sf_only.is_empty() {
        msg.push_str(&format!(
            "; without a HubSpot owner (their records fail with missing-owner): {}",
            sf_only.join(", ")
        ));
    }
    report.push("owners", status, msg);
    Ok(by_email.into_values().collect())
}

async fn ensure_pipelines(
    sf: &SalesforceClient,
    hs: &HubSpotClient,
    create: bool,
    report: &mut SetupReport,
) -> Result<Vec<runtime::Pipeline>, SyncError> {
    let record_types: Vec<_> = sf
        .record_types("Opportunity")
        .await?
        .into_iter()
        .filter(|r| r.is_active != Some(false))
        .collect();
    let stages: Vec<_> = sf
        .opportunity_stages()
        .await?
        .into_iter()
        .filter(|s| s.is_active != Some(false))
        .collect();
    let existing = hs.list_pipelines("deals").await?;
    // (record type id, developer name, label)
    let wanted: Vec<(Option<String>, String, String)> = if record_types.len() <= 1 {
        vec![(
            record_types.first().map(|r| r.id.clone()),
            record_types
                .first()
                .map_or("Default".into(), |r| r.developer_name.clone()),
            pipeline_label(None),
        )]
    } else {
        record_types
            .iter()
            .map(|r| {
                (
                    Some(r.id.clone()),
                    r.developer_name.clone(),
                    pipeline_label(Some(&r.name)),
                )
            })
            .collect()
    };
    let mut out = Vec::new();
    for (i, (rt_id, rt_name, label)) in wanted.into_iter().enumerate() {
        let check = format!("hubspot.pipeline.{rt_name}");
        let found = existing
            .iter()
            .find(|p| p.label == label && !p.archived)
            .cloned();
        let pipeline = match found {
            Some(p) => {
                let missing: Vec<&str> = stages
                    .iter()
                    .filter(|s| {
                        !p.stages
                            .iter()
                            .any(|x| x.label == s.master_label && !x.archived)
                    })
                    .map(|s| s.master_label.as_str())
                    .collect();
                if missing.is_empty() {
                    report.push(
                        check,
                        CheckStatus::Ok,
                        format!("pipeline `{label}` has every stage"),
                    );
                } else {
                    report.push(check, CheckStatus::Warning, format!("pipeline `{label}` lacks stages {}: records in them fail with unmapped-stage", missing.join(", ")));
                }
                p
            }
            None if !create => {
                report.push(
                    check,
                    CheckStatus::Warning,
                    format!("pipeline `{label}` is missing and would be created"),
                );
                continue;
            }
            None => {
                let new = NewPipeline {
                    label: label.clone(),
                    display_order: 100 + i as i64,
                    stages: stages
                        .iter()
                        .enumerate()
                        .map(|(j, s)| NewStage {
                            label: s.master_label.clone(),
                            display_order: j as i64,
                            metadata: BTreeMap::from([
                                (
                                    "probability".to_string(),
                                    format!("{}", s.default_probability.unwrap_or(0.0) / 100.0),
                                ),
                                ("isClosed".to_string(), s.is_closed.to_string()),
                            ]),
                        })
                        .collect(),
                };
                let p = hs.create_pipeline("deals", &new).await?;
                report.push(
                    check,
                    CheckStatus::Created,
                    format!(
                        "created pipeline `{label}` with {} stages",
                        new.stages.len()
                    ),
                );
                p
            }
        };
        let mut st: Vec<_> = pipeline.stages.iter().filter(|s| !s.archived).collect();
        st.sort_by_key(|s| s.display_order);
        out.push(runtime::Pipeline {
            id: pipeline.id.clone(),
            label: pipeline.label.clone(),
            record_type_id: rt_id,
            record_type_name: rt_name,
            stages: st
                .iter()
                .map(|s| runtime::Stage {
                    id: s.id.clone(),
                    label: s.label.clone(),
                })
                .collect(),
        });
    }
    Ok(out)
}

/// Adds, for every pipeline without a table in `stage_map`, the table that maps each
/// stage label to itself.
pub fn with_identity_stage_map(
    mut config: serde_json::Value,
    pipelines: &[runtime::Pipeline],
) -> serde_json::Value {
    let Some(obj) = config.as_object_mut() else {
        return config;
    };
    let map = obj
        .entry("stage_map")
        .or_insert_with(|| serde_json::json!({}));
    let Some(map) = map.as_object_mut() else {
        return config;
    };
    for p in pipelines {
        let named = map.contains_key(&p.id)
            || p.record_type_id
                .as_ref()
                .is_some_and(|r| map.contains_key(r))
            || map.contains_key(&p.record_type_name);
        if !named {
            let table: serde_json::Map<String, serde_json::Value> = p
                .stages
                .iter()
                .map(|s| (s.label.clone(), serde_json::Value::String(s.label.clone())))
                .collect();
            map.insert(p.id.clone(), serde_json::Value::Object(table));
        }
    }
    config
}

/// Quotes ids for a SOQL `IN (...)`.
pub fn soql_in(ids: &[String]) -> String {
    ids.iter()
        .map(|i| soql_quote(i))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_labels_follow_the_spec() {
        assert_eq!(pipeline_label(None), "Salesforce - Default pipeline");
        assert_eq!(pipeline_label(Some("Renewal")), "Salesforce - Renewal");
    }

    #[test]
    fn identity_stage_map_fills_only_unnamed_pipelines() {
        let p = |id: &str, rt: &str| runtime::Pipeline {
            id: id.into(),
            label: format!("Salesforce - {rt}"),
            record_type_id: Some(format!("012{rt}")),
            record_type_name: rt.into(),
            stages: vec![runtime::Stage {
                id: "s1".into(),
                label: "Prospecting".into(),
            }],
        };
        let cfg = serde_json::json!({"stage_map": {"Renewal": {"Prospecting": "s1"}}});
        let out = with_identity_stage_map(cfg, &[p("p1", "New_Business"), p("p2", "Renewal")]);
        assert_eq!(out["stage_map"]["p1"]["Prospecting"], "Prospecting");
        assert!(out["stage_map"].get("p2").is_none());
        assert_eq!(out["stage_map"]["Renewal"]["Prospecting"], "s1");
    }

    mod webhooks {
        use std::sync::Arc;

        use axum::extract::{Path, Query, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, patch, post};
        use axum::{Json, Router};
        use parking_lot::Mutex;
        use serde_json::{Value, json};

        use super::super::*;
        use crate::crm::hubspot::HubSpotConfig;

        const DEV_KEY: &str = "dev-key";
        const APP: u64 = 777;
        const HUB: u64 = 62515;

        /// The developer API's documented routes, over one app's settings and subscriptions.
        #[derive(Default)]
        struct Portal {
            target_url: Option<String>,
            /// (id, eventType, propertyName, active)
            subscriptions: Vec<(u64, String, Option<String>, bool)>,
            /// Developer calls that came with a Bearer token or a wrong key.
            bad_auth: u32,
            /// The access-token info answers 401.
            token_info_refused: bool,
            writes: u32,
        }

        type Shared = Arc<Mutex<Portal>>;
        type Q = Query<std::collections::HashMap<String, String>>;

        fn authorized(p: &Shared, q: &Q, h: &HeaderMap, app: u64) -> Result<(), StatusCode> {
            if q.get("hapikey").map(String::as_str) != Some(DEV_KEY)
                || h.contains_key("authorization")
                || app != APP
            {
                p.lock().bad_auth += 1;
                return Err(StatusCode::UNAUTHORIZED);
            }
            Ok(())
        }

        fn sub_json(s: &(u64, String, Option<String>, bool)) -> Value {
            let mut v = json!({"id": s.0.to_string(), "eventType": s.1, "active": s.3,
                               "createdAt": "2026-01-01T00:00:00Z"});
            if let Some(p) = &s.2 {
                v["propertyName"] = json!(p);
            }
            v
        }

        fn stub(portal: Shared) -> Router {
            Router::new()
                .route(
                    "/oauth/v2/private-apps/get/access-token-info",
                    post(|State(p): State<Shared>, Json(b): Json<Value>| async move {
                        assert_eq!(b["tokenKey"], "pat-token");
                        if p.lock().token_info_refused {
                            return Err(StatusCode::UNAUTHORIZED);
                        }
                        Ok(Json(json!({"userId": 5, "hubId": HUB, "appId": APP, "scopes": ["crm.objects.deals.read"]})))
                    }),
                )
                .route(
                    "/webhooks/v3/{app}/settings",
                    get(|State(p): State<Shared>, Path(app): Path<u64>, q: Q, h: HeaderMap| async move {
                        authorized(&p, &q, &h, app)?;
                        match p.lock().target_url.clone() {
                            Some(t) => Ok(Json(json!({"targetUrl": t, "throttling": {"maxConcurrentRequests": 10, "period": "SECONDLY"}}))),
                            None => Err(StatusCode::NOT_FOUND),
                        }
                    })
                    .put(|State(p): State<Shared>, Path(app): Path<u64>, q: Q, h: HeaderMap, Json(b): Json<Value>| async move {
                        authorized(&p, &q, &h, app)?;
                        assert_eq!(b["throttling"]["maxConcurrentRequests"], WEBHOOK_MAX_CONCURRENT);
                        let mut g = p.lock();
                        g.writes += 1;
                        g.target_url = b["targetUrl"].as_str().map(str::to_string);
                        Ok::<_, StatusCode>(Json(b))
                    }),
                )
                .route(
                    "/webhooks/v3/{app}/subscriptions",
                    get(|State(p): State<Shared>, Path(app): Path<u64>, q: Q, h: HeaderMap| async move {
                        authorized(&p, &q, &h, app)?;
                        let results: Vec<Value> = p.lock().subscriptions.iter().map(sub_json).collect();
                        Ok::<_, StatusCode>(Json(json!({"results": results})))
                    })
                    .post(|State(p): State<Shared>, Path(app): Path<u64>, q: Q, h: HeaderMap, Json(b): Json<Value>| async move {
                        authorized(&p, &q, &h, app)?;
                        let mut g = p.lock();
                        g.writes += 1;
                        let id = 100 + g.subscriptions.len() as u64;
                        let s = (
                            id,
                            b["eventType"].as_str().unwrap_or_default().to_string(),
                            b["propertyName"].as_str().map(str::to_string),
                            b["active"].as_bool().unwrap_or(false),
                        );
                        g.subscriptions.push(s.clone());
                        Ok::<_, StatusCode>(Json(sub_json(&s)))
                    }),
                )
                .route(
                    "/webhooks/v3/{app}/subscriptions/{id}",
                    patch(|State(p): State<Shared>, Path((app, id)): Path<(u64, u64)>, q: Q, h: HeaderMap, Json(b): Json<Value>| async move {
                        authorized(&p, &q, &h, app)?;
                        let mut g = p.lock();
                        g.writes += 1;
                        let s = g.subscriptions.iter_mut().find(|s| s.0 == id).ok_or(StatusCode::NOT_FOUND)?;
                        s.3 = b["active"].as_bool().unwrap_or(s.3);
                        Ok::<_, StatusCode>(Json(sub_json(s)))
                    }),
                )
                .with_state(portal)
        }

        async fn client(portal: Shared) -> HubSpotClient {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let _ = axum::serve(listener, stub(portal)).await;
            });
            HubSpotClient::new(HubSpotConfig::new(base, "pat-token")).unwrap()
        }

        fn deal_schema(props: &[&str]) -> PairSchema {
            PairSchema {
                spec: PairSpec::of(ObjectPair::OpportunityDeal),
                sf_fields: vec![],
                sf_kinds: vec![],
                sf_calculated: vec![],
                hs_fields: props.iter().map(|p| p.to_string()).collect(),
                hs_kinds: vec![],
                sf_writable: HashMap::new(),
                hs_writable: HashMap::new(),
            }
        }

        const PUBLIC: &str = "https://sync.example.test/hooks/hubspot";

        fn opts(app_id: Option<u64>, key: bool) -> WebhookSetup {
            WebhookSetup {
                app_id,
                public_url: PUBLIC.into(),
                developer_api_key: key.then(|| Secret::new(DEV_KEY)),
            }
        }

        #[tokio::test]
        async fn missing_settings_and_subscriptions_are_made_and_then_confirmed() {
            let portal = Shared::default();
            portal
                .lock()
                .subscriptions
                .push((1, "deal.creation".into(), None, true));
            portal.lock().subscriptions.push((
                2,
                "deal.propertyChange".into(),
                Some("amount".into()),
                false,
            ));
            portal
                .lock()
                .subscriptions
                .push((3, "contact.creation".into(), None, true));
            let hs = client(portal.clone()).await;
            let pairs = [deal_schema(&["amount", "dealname"])];
            let mut report = SetupReport::default();
            let feed = ensure_webhooks(&hs, &pairs, &opts(None, true), true, &mut report).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: APP,
                    hub_id: Some(HUB),
                    verified: true
                }),
                "{report:?}"
            );
            let writes = {
                let g = portal.lock();
                assert_eq!(g.bad_auth, 0);
                assert_eq!(g.target_url.as_deref(), Some(PUBLIC));
                let mut active: Vec<String> = g
                    .subscriptions
                    .iter()
                    .filter(|s| s.3 && s.1.starts_with("deal."))
                    .map(|s| {
                        format!(
                            "{}{}",
                            s.1,
                            s.2.as_deref().map(|p| format!(":{p}")).unwrap_or_default()
                        )
                    })
                    .collect();
                active.sort();
                assert_eq!(
                    active,
                    [
                        "deal.creation",
                        "deal.deletion",
                        "deal.propertyChange:amount",
                        "deal.propertyChange:dealname",
                        "deal.restore"
                    ]
                );
                assert_eq!(
                    g.subscriptions.len(),
                    6,
                    "the paused one was switched on, not duplicated"
                );
                g.writes
            };
            let statuses: Vec<CheckStatus> = report.checks.iter().map(|c| c.status).collect();
            assert_eq!(
                statuses,
                [CheckStatus::Ok, CheckStatus::Created, CheckStatus::Created]
            );

            // Every call is counted; only the token's info counts against the portal's
            // limits (the developer API is the developer account's).
            let m = hs.metrics();
            assert_eq!(m.calls_with("hs.token.info", "200"), 1);
            assert_eq!(m.calls_with("hs.webhooks.settings.get", "404"), 1);
            assert_eq!(m.calls_with("hs.webhooks.settings.put", "200"), 1);
            assert_eq!(m.calls_with("hs.webhooks.subscriptions.create", "200"), 3);
            assert_eq!(m.calls_with("hs.webhooks.subscriptions.update", "200"), 1);
            assert_eq!(m.total_calls(), 8);
            assert_eq!(hs.daily_calls(), 1);

            // Run again: everything holds, nothing is written.
            let mut again = SetupReport::default();
            let feed = ensure_webhooks(&hs, &pairs, &opts(Some(APP), true), true, &mut again).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: APP,
                    hub_id: Some(HUB),
                    verified: true
                })
            );
            assert!(
                again.checks.iter().all(|c| c.status == CheckStatus::Ok),
                "{again:?}"
            );
            assert_eq!(portal.lock().writes, writes);
        }

        #[tokio::test]
        async fn a_dry_run_or_no_developer_key_only_reports() {
            let portal = Shared::default();
            let hs = client(portal.clone()).await;
            let pairs = [deal_schema(&["amount"])];
            let mut report = SetupReport::default();
            let feed = ensure_webhooks(&hs, &pairs, &opts(None, true), false, &mut report).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: APP,
                    hub_id: Some(HUB),
                    verified: false
                })
            );
            assert_eq!(portal.lock().writes, 0);
            let text = format!("{report:?}");
            assert!(
                text.contains("dry run") && text.contains("deal.propertyChange:amount"),
                "{text}"
            );

            let mut report = SetupReport::default();
            let feed =
                ensure_webhooks(&hs, &pairs, &opts(Some(42), false), true, &mut report).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: 42,
                    hub_id: Some(HUB),
                    verified: false
                })
            );
            let last = report.checks.last().unwrap();
            assert_eq!(last.status, CheckStatus::Warning);
            assert!(
                last.message.contains("developer API key"),
                "{}",
                last.message
            );
            assert_eq!(portal.lock().writes, 0);
        }

        #[tokio::test]
        async fn the_portal_is_learnt_with_a_configured_app_and_its_absence_only_warns() {
            let portal = Shared::default();
            let hs = client(portal.clone()).await;
            let pairs = [deal_schema(&[])];
            let mut report = SetupReport::default();
            let feed =
                ensure_webhooks(&hs, &pairs, &opts(Some(42), false), true, &mut report).await;
            assert_eq!(feed.and_then(|f| f.hub_id), Some(HUB));
            assert_eq!(report.checks[0].status, CheckStatus::Ok);
            assert!(
                report.checks[0].message.contains("62515"),
                "{}",
                report.checks[0].message
            );

            portal.lock().token_info_refused = true;
            let mut report = SetupReport::default();
            let feed =
                ensure_webhooks(&hs, &pairs, &opts(Some(42), false), true, &mut report).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: 42,
                    hub_id: None,
                    verified: false
                })
            );
            assert_eq!(report.checks[0].name, "hubspot.webhooks.app");
            assert_eq!(report.checks[0].status, CheckStatus::Warning);
            assert!(report.failures().next().is_none());

            // Without a configured app id, the token must tell it.
            let mut report = SetupReport::default();
            let feed = ensure_webhooks(&hs, &pairs, &opts(None, false), true, &mut report).await;
            assert_eq!(feed, None);
            assert_eq!(report.checks[0].status, CheckStatus::Failed);
        }

        #[tokio::test]
        async fn a_wrong_developer_key_is_a_warning_not_a_failure() {
            let portal = Shared::default();
            let hs = client(portal.clone()).await;
            let mut o = opts(Some(APP), true);
            o.developer_api_key = Some(Secret::new("wrong"));
            let mut report = SetupReport::default();
            let feed = ensure_webhooks(&hs, &[deal_schema(&[])], &o, true, &mut report).await;
            assert_eq!(
                feed,
                Some(WebhookFeed {
                    app_id: APP,
                    hub_id: Some(HUB),
                    verified: false
                })
            );
            assert!(report.failures().next().is_none());
            assert!(
                !format!("{report:?}").contains("wrong"),
                "the key never shows"
            );
        }
    }
}
