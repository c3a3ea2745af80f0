//! `dealbridge demo`: the whole product on one machine. Starts both emulators in process
//! with a seeded org (thousands of opportunities over two record types, accounts,
//! contacts, roles and owners, and HubSpot deals of its own), runs the backfill with the
//! default rules and SQLite, makes a few edits on each side and shows them arrive, then
//! keeps syncing (or stops, with `--once`).
//!
//! It listens on 127.0.0.1 only and must never talk to a real CRM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::ExitStatus;
use super::sync::{print_setup, print_summary, progress_bar};
use crate::crm::hubspot::types::UpdateInput;
use crate::crm::hubspot::{HubSpotClient, HubSpotConfig};
use crate::crm::salesforce::{SalesforceClient, SalesforceConfig, SalesforceCredentials};
use crate::crm::{Secret, TransportOptions};
use crate::store::{ObjectPair, Side};
use crate::sync::TenantConfig;
use crate::sync::start::{StartOptions, bind_webhooks, start};

/// Run the end-to-end demo against in-process emulators.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after the backfill and the edits (no polling).
    #[arg(long)]
    pub once: bool,
    /// Opportunities to seed.
    #[arg(long, default_value_t = 3000)]
    pub opportunities: usize,
    /// Seconds between polls.
    #[arg(long, default_value_t = 2.0)]
    pub poll: f64,
    /// Where to keep the SQLite store (default: a temporary directory).
    #[arg(long)]
    pub store: Option<std::path::PathBuf>,
}

/// The emulator-backed tenant config of the demo (credentials through these variable names).
pub fn demo_config(
    sf_url: &str,
    hs_url: &str,
    ca: &std::path::Path,
    store: &str,
    poll: f64,
) -> String {
    format!(
        r#"
tenant = "demo"
store = "{store}"

[salesforce]
login_url = "{sf_url}"
grant = "password"
client_id_env = "DEMO_SF_CLIENT_ID"
client_secret_env = "DEMO_SF_CLIENT_SECRET"
username_env = "DEMO_SF_USERNAME"
password_env = "DEMO_SF_PASSWORD"
ca_file = "{ca}"

[hubspot]
base_url = "{hs_url}"
token_env = "DEMO_HS_TOKEN"
ca_file = "{ca}"
requests_per_10s = 190

[plugin]
stage_map = "identity"

# The seeded org's Opportunity.Type values ("New Customer", ...) are not options of
# HubSpot's dealtype; syncing them would only show picklist mismatches.
[plugin.config.rules.opportunity-deal]
Type = "dont-sync"

[sync]
poll_interval_secs = {poll}
lookback_secs = 2
"#,
        ca = ca.display()
    )
}

/// `config` (a `tenant.toml` text such as [`demo_config`]'s) with the HubSpot webhook
/// feed on: a receiver on a free loopback port, the emulated app's client secret and
/// developer key (from [`demo_env`]), so set-up points the app at the receiver and
/// subscribes it.
pub fn with_webhook_feed(config: &str) -> String {
    const TABLE: &str = "\n[hubspot.webhooks]\nlisten = \"127.0.0.1:0\"\nclient_secret_env = \"DEMO_HS_WEBHOOK_SECRET\"\ndeveloper_api_key_env = \"DEMO_HS_DEVELOPER_KEY\"\n";
    // The table belongs to [hubspot]: before the next table, [plugin].
    config.replacen("\n[plugin]", &format!("{TABLE}\n[plugin]"), 1)
}

/// The environment of the demo config.
pub fn demo_env(
    emu: &dealbridge_emulator::RunningEmulators,
) -> impl Fn(&str) -> Option<String> + use<> {
    let c = emu.salesforce_credentials.clone();
    let hs = emu.hubspot_credentials.clone();
    move |k: &str| match k {
        "DEMO_SF_CLIENT_ID" => Some(c.client_id.clone()),
        "DEMO_SF_CLIENT_SECRET" => Some(c.client_secret.clone()),
        "DEMO_SF_USERNAME" => Some(c.username.clone()),
        "DEMO_SF_PASSWORD" => Some(format!("{}{}", c.password, c.security_token)),
        "DEMO_HS_TOKEN" => Some(hs.private_app_token.clone()),
        "DEMO_HS_WEBHOOK_SECRET" => Some(hs.client_secret.clone()),
        "DEMO_HS_DEVELOPER_KEY" => Some(hs.developer_api_key.clone()),
        _ => None,
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitStatus> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitStatus> {
    println!("Starting the Salesforce and HubSpot emulators on 127.0.0.1 ...");
    let emu = dealbridge_emulator::start(dealbridge_emulator::EmulatorOptions::default())
        .await
        .context("starting the emulators")?;
    let http = reqwest::Client::new();
    let accounts = (args.opportunities / 10).max(10);
    let contacts = (args.opportunities / 3).max(30);
    http.post(format!("{}/__emulator/seed", emu.salesforce_urls.http))
        .json(&json!({"seed": 1, "accounts": accounts, "contacts": contacts, "opportunities": args.opportunities}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("seeding the Salesforce emulator")?;
    println!(
        "  Salesforce: {} ({} opportunities, {accounts} accounts, {contacts} contacts, 2 record types)\n  HubSpot:    {} (with deals, companies and contacts of its own)",
        emu.salesforce_urls.https, args.opportunities, emu.hubspot_urls.https
    );
    let dir = tempfile_dir()?;
    let store_path = args.store.clone().unwrap_or_else(|| dir.join("demo.db"));
    let store_url = format!("sqlite://{}?mode=rwc", store_path.display());
    let text = with_webhook_feed(&demo_config(
        &emu.salesforce_urls.https,
        &emu.hubspot_urls.https,
        &emu.ca_cert_path,
        &store_url,
        args.poll,
    ));
    let cfg = TenantConfig::parse(&text)?;
    let env = demo_env(&emu);

    // The webhook receiver first, so set-up points the emulated HubSpot app at it.
    let listener = match bind_webhooks(&cfg, &env).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitStatus::UsageError);
        }
    };
    let options = StartOptions {
        webhook_public_url: listener.as_ref().map(|l| l.public_url().to_string()),
        ..StartOptions::default()
    };
    let (mut engine, setup) = match start(&cfg, &env, options).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitStatus::UsageError);
        }
    };
    print_setup(&setup);
    if let Some(listener) = listener {
        let url = listener.public_url().to_string();
        listener
            .serve(&mut engine)
            .context("serving the webhook receiver")?;
        println!("  HubSpot webhooks: delivered to {url} (others' changes only)");
    }
    println!(
        "\nBackfill (default rules, SQLite store at {}):",
        store_path.display()
    );
    engine.on_progress(progress_bar());
    let mut reports = vec![engine.run_cycle().await?];
    print_summary(&reports);

    // A few edits on each side.
    let sf = SalesforceClient::new({
        let mut c = SalesforceConfig::new(
            emu.salesforce_urls.https.clone(),
            SalesforceCredentials::Password {
                client_id: env("DEMO_SF_CLIENT_ID").unwrap_or_default(),
                client_secret: Secret::new(env("DEMO_SF_CLIENT_SECRET").unwrap_or_default()),
                username: env("DEMO_SF_USERNAME").unwrap_or_default(),
                password: Secret::new(env("DEMO_SF_PASSWORD").unwrap_or_default()),
            },
        );
        c.transport = TransportOptions {
            ca_cert_pem: Some(emu.ca_cert_path.clone()),
            ..TransportOptions::default()
        };
        c
    })?;
    // HubSpot edits as a person in HubSpot's UI (their changes come through the webhook
    // feed; dealbridge's own writes never do).
    let hs = HubSpotClient::new({
        let mut c = HubSpotConfig::new(
            emu.hubspot_urls.https.clone(),
            Secret::new(emu.hubspot_credentials.user_token.clone()),
        );
        c.transport = TransportOptions {
            ca_cert_pem: Some(emu.ca_cert_path.clone()),
            ..TransportOptions::default()
        };
        c
    })?;
    let rows = sf
        .query(
            "SELECT Id, Name, Amount FROM Opportunity WHERE Amount != null ORDER BY Id LIMIT 200",
            crate::crm::salesforce::QueryScope::Live,
        )
        .await?;
    let links = engine
        .store()
        .links_by_salesforce_ids(
            &crate::store::TenantId::new("demo")?,
            ObjectPair::OpportunityDeal,
            &rows
                .iter()
                .filter_map(|r| r.id().map(str::to_string))
                .collect::<Vec<_>>(),
        )
        .await?;
    println!("\nEdits:");
    let mut checks = Vec::new();
    if let Some(link) = links.first() {
        let first = link.salesforce_id.as_str();
        let mut f = crate::crm::salesforce::Fields::new();
        f.insert("Amount".into(), json!(123456.78));
        sf.update("Opportunity", first, &f).await?;
        println!("  Salesforce: Opportunity {first} Amount := 123456.78");
        checks.push((
            Side::HubSpot,
            link.hubspot_id.clone(),
            "amount",
            "123456.78".to_string(),
        ));
    }
    if let Some(link) = links.get(1) {
        let name = "Renamed in HubSpot (demo)".to_string();
        hs.batch_update(
            "deals",
            &[UpdateInput {
                id: link.hubspot_id.clone(),
                properties: [("description".to_string(), name.clone())]
                    .into_iter()
                    .collect(),
            }],
            None,
        )
        .await?;
        println!(
            "  HubSpot:    deal {} description := {name:?} (by a person in HubSpot)",
            link.hubspot_id
        );
        checks.push((
            Side::Salesforce,
            link.salesforce_id.clone(),
            "Description",
            name,
        ));
    }
    let r = engine.run_cycle().await?;
    println!(
        "  next cycle: {} read, {} updated in HubSpot, {} updated in Salesforce",
        r.counters.read_salesforce + r.counters.read_hubspot,
        r.counters.updated_hubspot,
        r.counters.updated_salesforce
    );
    reports.push(r);
    let mut all_arrived = true;
    for (side, id, field, want) in &checks {
        let got = match side {
            Side::HubSpot => hs
                .get("deals", id, &[field], &[])
                .await?
                .prop(field)
                .map(str::to_string),
            Side::Salesforce => sf
                .get("Opportunity", id, Some(&[field]))
                .await?
                .fields
                .get(*field)
                .and_then(|v| v.as_str().map(str::to_string).or(Some(v.to_string()))),
        };
        let ok = got.as_deref() == Some(want.as_str());
        all_arrived &= ok;
        println!(
            "  {} {id}.{field} = {:?} {}",
            if *side == Side::HubSpot {
                "HubSpot deal"
            } else {
                "Salesforce opp"
            },
            got.unwrap_or_default(),
            if ok { "arrived" } else { "NOT YET" }
        );
    }

    println!(
        "\nWhat to look at next:\n  - HubSpot pipelines: GET {hs}/crm/v3/pipelines/deals (one per record type)\n  - request accounting: GET {sf}/__emulator/requests and {hs}/__emulator/requests\n  - sync health: the sync_errors table in {db} (missing owners, picklist mismatches)\n  - your own tenant: `dealbridge sync --config tenant.toml --dry-run` (see docs)",
        hs = emu.hubspot_urls.http,
        sf = emu.salesforce_urls.http,
        db = store_path.display()
    );
    if args.once {
        engine.release().await?;
        emu.shutdown().await?;
        // With --once the demo is a check: an edit that did not arrive is a failure.
        return Ok(if all_arrived {
            ExitStatus::Success
        } else {
            ExitStatus::Failures
        });
    }
    println!("\nSyncing every {}s; press Ctrl-C to stop.", args.poll);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    engine
        .poll(
            Duration::from_secs_f64(args.poll),
            |r| {
                if let Ok(r) = r
                    && r.counters.created_hubspot
                        + r.counters.updated_hubspot
                        + r.counters.created_salesforce
                        + r.counters.updated_salesforce
                        > 0
                {
                    println!("cycle: {:?}", r.counters);
                }
            },
            stop,
        )
        .await?;
    engine.release().await?;
    emu.shutdown().await?;
    let _ = Arc::new(());
    Ok(ExitStatus::Success)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("dealbridge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
