//! `dealbridge emulate`: local Salesforce and HubSpot emulators on loopback.
//!
//! Starts both emulators of [`dealbridge_emulator`] (HTTP and HTTPS each),
//! prints where they listen and how to log in (as text for people, or as one
//! JSON line with `--json` for scripts), then serves until Ctrl-C or SIGTERM,
//! shutting down gracefully and writing the snapshot (both emulators) when asked.
//!
//! This command must never listen on anything but 127.0.0.1, and never talk
//! to the real Salesforce or HubSpot.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dealbridge_emulator::{EmulatorOptions, Ports, RunningEmulators, Seed, start};
use serde_json::{Value, json};

use super::ExitStatus;

/// Run local Salesforce and HubSpot emulators (127.0.0.1 only) until Ctrl-C.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// What data both emulators start with: `demo` (a small realistic org),
    /// `empty` (metadata, users and owners only) or a number (a deterministic
    /// org generated from it).
    #[arg(long, default_value = "demo", value_name = "demo|empty|N")]
    pub seed: Seed,

    /// All four ports at once: SALESFORCE_HTTP,SALESFORCE_HTTPS,HUBSPOT_HTTP,HUBSPOT_HTTPS
    /// (0 picks a free port). Cannot be combined with the single-port flags.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "SF_HTTP,SF_HTTPS,HS_HTTP,HS_HTTPS",
        conflicts_with_all = ["salesforce_port", "salesforce_https_port", "hubspot_port", "hubspot_https_port"]
    )]
    pub ports: Option<Vec<u16>>,

    /// Port of the Salesforce emulator's plain-HTTP listener (0 picks a free port).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub salesforce_port: u16,

    /// Port of the Salesforce emulator's HTTPS listener (0 picks a free port).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub salesforce_https_port: u16,

    /// Port of the HubSpot emulator's plain-HTTP listener (0 picks a free port).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub hubspot_port: u16,

    /// Port of the HubSpot emulator's HTTPS listener (0 picks a free port).
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub hubspot_https_port: u16,

    /// Snapshot of the Salesforce org and the HubSpot portal (JSON): loaded at
    /// start when the file exists (instead of --seed), written back on Ctrl-C.
    /// A file with only a Salesforce org (older format) starts HubSpot from --seed.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,

    /// Where to write the CA certificate that signed the HTTPS certificates
    /// (default: a fresh file under the system temp directory).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Switch on multi-currency in the Salesforce org (`CurrencyIsoCode` exists).
    #[arg(long)]
    pub multi_currency: bool,

    /// Print one JSON object (a single line) with the URLs, credentials and
    /// paths instead of the human-readable text.
    #[arg(long)]
    pub json: bool,
}

/// The four ports to bind, from `--ports` or the single-port flags.
fn ports(args: &EmulateArgs) -> Result<(Ports, Ports), ExitStatus> {
    match &args.ports {
        Some(list) => match list.as_slice() {
            [sf, sfs, hs, hss] => Ok((
                Ports {
                    http: *sf,
                    https: *sfs,
                },
                Ports {
                    http: *hs,
                    https: *hss,
                },
            )),
            other => {
                eprintln!(
                    "error: --ports takes exactly four ports (SF_HTTP,SF_HTTPS,HS_HTTP,HS_HTTPS), got {}",
                    other.len()
                );
                Err(ExitStatus::UsageError)
            }
        },
        None => Ok((
            Ports {
                http: args.salesforce_port,
                https: args.salesforce_https_port,
            },
            Ports {
                http: args.hubspot_port,
                https: args.hubspot_https_port,
            },
        )),
    }
}

/// Runs the emulators until Ctrl-C (or SIGTERM).
pub fn run(args: EmulateArgs) -> Result<ExitStatus> {
    let (salesforce_ports, hubspot_ports) = match ports(&args) {
        Ok(p) => p,
        Err(status) => return Ok(status),
    };
    let options = EmulatorOptions {
        seed: args.seed,
        salesforce_ports,
        hubspot_ports,
        ca_cert_path: args.ca_cert.clone(),
        salesforce_multi_currency: args.multi_currency,
        snapshot: args.snapshot.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        let from_snapshot = args.snapshot.as_deref().is_some_and(|p| p.exists());
        let emu = start(options).await.context("starting the emulators")?;
        let facts = facts(&emu, args.seed, args.snapshot.as_ref(), from_snapshot);
        if args.json {
            println!("{}", serde_json::to_string(&facts)?);
        } else {
            println!("{}", human_text(&facts));
        }
        wait_for_shutdown_signal().await?;
        if !args.json {
            eprintln!("shutting down…");
        }
        emu.shutdown()
            .await
            .context("shutting the emulators down")?;
        if let Some(path) = &args.snapshot
            && !args.json
        {
            eprintln!("snapshot written to {}", path.display());
        }
        Ok(ExitStatus::Success)
    })
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn wait_for_shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("listening for Ctrl-C")
    }
}

/// Everything a client needs, as the JSON object `--json` prints.
fn facts(
    emu: &RunningEmulators,
    seed: Seed,
    snapshot: Option<&PathBuf>,
    from_snapshot: bool,
) -> Value {
    let sf = &emu.salesforce_credentials;
    json!({
        "seed": seed.to_string(),
        "ca_cert_path": emu.ca_cert_path.display().to_string(),
        "salesforce": {
            "http": emu.salesforce_urls.http,
            "https": emu.salesforce_urls.https,
            "api_version": dealbridge_emulator::salesforce::API_VERSION,
            "token_url": format!("{}/services/oauth2/token", emu.salesforce_urls.http),
            "client_id": sf.client_id,
            "client_secret": sf.client_secret,
            "username": sf.username,
            "password": sf.password,
            "security_token": sf.security_token,
            "refresh_token": sf.refresh_token,
            "control": format!("{}/__emulator/", emu.salesforce_urls.http),
            "snapshot": snapshot.map(|p| p.display().to_string()),
            "loaded_from_snapshot": from_snapshot,
        },
        "hubspot": {
            "http": emu.hubspot_urls.http,
            "https": emu.hubspot_urls.https,
            "private_app_token": emu.hubspot_credentials.private_app_token,
            "user_token": emu.hubspot_credentials.user_token,
            "app_id": emu.hubspot_credentials.app_id,
            "client_secret": emu.hubspot_credentials.client_secret,
            "developer_api_key": emu.hubspot_credentials.developer_api_key,
            "control": format!("{}/__emulator/", emu.hubspot_urls.http),
        },
    })
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

/// The text people read: where, how to log in, and how to steer the emulators.
fn human_text(f: &Value) -> String {
    let sf_http = s(f, &["salesforce", "http"]);
    let hs_http = s(f, &["hubspot", "http"]);
    let origin = if f["salesforce"]["loaded_from_snapshot"] == true {
        format!("state from snapshot {}", s(f, &["salesforce", "snapshot"]))
    } else {
        format!("seed: {}", s(f, &["seed"]))
    };
    let snapshot_note = match f["salesforce"]["snapshot"].as_str() {
        Some(p) => {
            format!("\nThe Salesforce org and the HubSpot portal are written to {p} on Ctrl-C.\n")
        }
        None => String::new(),
    };
    format!(
        "\
dealbridge emulators running on 127.0.0.1 ({origin}). Press Ctrl-C to stop.

Salesforce (REST API {api})
  http            {sf_http}
  https           {sf_https}
  token endpoint  {token_url}  (grant_type=password, client_credentials or refresh_token)
  client id       {client_id}
  client secret   {client_secret}
  username        {username}
  password        {password}  (or with the security token appended: {password}{security_token})
  refresh token   {refresh_token}

HubSpot
  http               {hs_http}
  https              {hs_https}
  private-app token  {hs_token}  (Authorization: Bearer <token>)
  user token         {hs_user}  (edits as a person in HubSpot's UI: webhook events say CRM_UI)
  webhooks           app {hs_app}, client secret {hs_secret} (signs deliveries),
                     developer API key {hs_dev} (?hapikey= on /webhooks/v3/{hs_app}/...)

CA certificate for the https URLs: {ca}
{snapshot_note}
Control API (no auth): {sf_http}/__emulator/ and {hs_http}/__emulator/
  (seed, reset, snapshot, faults, requests), for example:
  curl -s -X POST {sf_http}/__emulator/seed -H 'content-type: application/json' -d '{{\"seed\":7,\"opportunities\":10000}}'
  curl -s -X PUT {hs_http}/__emulator/faults -H 'content-type: application/json' -d '{{\"error_rates\":[{{\"status\":503,\"rate\":0.1}}]}}'
  curl -s {sf_http}/__emulator/requests
",
        api = s(f, &["salesforce", "api_version"]),
        sf_https = s(f, &["salesforce", "https"]),
        token_url = s(f, &["salesforce", "token_url"]),
        client_id = s(f, &["salesforce", "client_id"]),
        client_secret = s(f, &["salesforce", "client_secret"]),
        username = s(f, &["salesforce", "username"]),
        password = s(f, &["salesforce", "password"]),
        security_token = s(f, &["salesforce", "security_token"]),
        refresh_token = s(f, &["salesforce", "refresh_token"]),
        hs_https = s(f, &["hubspot", "https"]),
        hs_token = s(f, &["hubspot", "private_app_token"]),
        hs_user = s(f, &["hubspot", "user_token"]),
        hs_app = f["hubspot"]["app_id"],
        hs_secret = s(f, &["hubspot", "client_secret"]),
        hs_dev = s(f, &["hubspot", "developer_api_key"]),
        ca = s(f, &["ca_cert_path"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: EmulateArgs,
    }

    fn parse(argv: &[&str]) -> Result<EmulateArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("emulate").chain(argv.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn defaults_are_demo_on_free_ports() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.seed, Seed::Demo);
        let (sf, hs) = ports(&a).unwrap();
        assert_eq!(sf, Ports::default());
        assert_eq!(hs, Ports::default());
        assert!(!a.json);
    }

    #[test]
    fn seed_and_single_ports_parse() {
        let a = parse(&[
            "--seed",
            "42",
            "--salesforce-port",
            "9001",
            "--hubspot-https-port",
            "9004",
        ])
        .unwrap();
        assert_eq!(a.seed, Seed::Number(42));
        let (sf, hs) = ports(&a).unwrap();
        assert_eq!(
            sf,
            Ports {
                http: 9001,
                https: 0
            }
        );
        assert_eq!(
            hs,
            Ports {
                http: 0,
                https: 9004
            }
        );
    }

    #[test]
    fn comma_ports_give_all_four() {
        let a = parse(&["--ports", "1,2,3,4"]).unwrap();
        let (sf, hs) = ports(&a).unwrap();
        assert_eq!((sf.http, sf.https, hs.http, hs.https), (1, 2, 3, 4));
    }

    #[test]
    fn wrong_number_of_ports_is_a_usage_error() {
        let a = parse(&["--ports", "1,2,3"]).unwrap();
        assert_eq!(ports(&a), Err(ExitStatus::UsageError));
    }

    #[test]
    fn ports_conflict_with_single_port_flags() {
        let err = parse(&["--ports", "1,2,3,4", "--salesforce-port", "5"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bad_seed_is_refused_with_the_reason() {
        let err = parse(&["--seed", "lots"]).unwrap_err();
        assert!(err.to_string().contains("invalid seed"), "{err}");
    }

    #[test]
    fn human_text_names_every_fact() {
        let f = json!({
            "seed": "demo",
            "ca_cert_path": "/tmp/x/ca.pem",
            "salesforce": {"http": "http://127.0.0.1:1", "https": "https://localhost:2",
                "api_version": "v62.0", "token_url": "http://127.0.0.1:1/services/oauth2/token",
                "client_id": "cid", "client_secret": "csec", "username": "u@x", "password": "pw",
                "security_token": "TOK", "refresh_token": "rt", "control": "http://127.0.0.1:1/__emulator/",
                "snapshot": "/tmp/snap.json", "loaded_from_snapshot": false},
            "hubspot": {"http": "http://127.0.0.1:3", "https": "https://localhost:4",
                "private_app_token": "pat-1", "user_token": "user-1", "app_id": 77,
                "client_secret": "hook-secret", "developer_api_key": "dev-key",
                "control": "http://127.0.0.1:3/__emulator/"},
        });
        let t = human_text(&f);
        for needle in [
            "http://127.0.0.1:1",
            "https://localhost:2",
            "http://127.0.0.1:3",
            "https://localhost:4",
            "cid",
            "csec",
            "u@x",
            "pwTOK",
            "pat-1",
            "user-1",
            "app 77",
            "hook-secret",
            "/webhooks/v3/77/",
            "dev-key",
            "/tmp/x/ca.pem",
            "/tmp/snap.json",
            "curl -s -X POST http://127.0.0.1:1/__emulator/seed",
            "curl -s -X PUT http://127.0.0.1:3/__emulator/faults",
            "(seed: demo)",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
    }
}
