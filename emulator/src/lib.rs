//! Faithful local Salesforce and HubSpot emulators.
//!
//! Every end-to-end test, benchmark and the demo run against these. They speak
//! the vendors' documented wire formats closely enough that third-party client
//! libraries work unchanged but for the base URL; `tests/third_party_clients.rs`
//! checks that with simple-salesforce, hubspot-api-client, jsforce and
//! @hubspot/api-client (scripts in the repository's `tests/clients/`).
//!
//! - [`salesforce`]: the Salesforce REST API (API version v62.0), OAuth and the
//!   minimal SOAP login.
//! - [`hubspot`]: the HubSpot CRM v3/v4 APIs with a private-app token.
//! - [`people`]: the deterministic set of people that both seeds share, so that
//!   Salesforce users and HubSpot owners match by email.
//! - [`control`]: fault profiles and request accounting shared by both.
//! - [`tls`]: the throw-away CA behind the HTTPS listeners.
//! - [`snapshot`]: the file that keeps both emulators' state across restarts.
//!
//! Each emulator also has a control API under `/__emulator/` (seed, reset,
//! snapshot, fault profiles, request accounting).
//!
//! The cross-reference (external-id) field on Salesforce `Opportunity`,
//! `Account` and `Contact` is `dealbridge_id__c` (text(64), external id,
//! unique, case-sensitive): the sync engine writes the HubSpot record id there
//! and upserts by it.
//!
//! [`start`] binds everything to 127.0.0.1 only; nothing here ever listens on
//! another address or talks to the network.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::{Extension, Router};
use tokio::task::JoinHandle;

pub mod control;
pub mod hubspot;
pub mod people;
pub mod salesforce;
pub mod snapshot;
pub mod tls;

/// What data an emulator starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// Only the fixed metadata (users, record types, stages, pipelines, owners).
    Empty,
    /// The demo org: the same as `Number(1)`.
    #[default]
    Demo,
    /// A realistic org generated deterministically from this number.
    Number(u64),
}

impl Seed {
    /// The number the generator uses; `None` for an empty org.
    pub fn number(&self) -> Option<u64> {
        match self {
            Seed::Empty => None,
            Seed::Demo => Some(1),
            Seed::Number(n) => Some(*n),
        }
    }
}

/// A seed that is not `demo`, `empty` or a number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid seed {0:?}: expected `demo`, `empty` or a non-negative number")]
pub struct ParseSeedError(pub String);

impl FromStr for Seed {
    type Err = ParseSeedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "demo" => Ok(Seed::Demo),
            "empty" => Ok(Seed::Empty),
            other => other
                .parse::<u64>()
                .map(Seed::Number)
                .map_err(|_| ParseSeedError(s.to_string())),
        }
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seed::Empty => f.write_str("empty"),
            Seed::Demo => f.write_str("demo"),
            Seed::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Ports of one emulator; 0 picks a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
}

/// How to start the emulators.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    pub seed: Seed,
    pub salesforce_ports: Ports,
    pub hubspot_ports: Ports,
    /// Where to write the CA certificate; default: a fresh file under the temp dir.
    pub ca_cert_path: Option<PathBuf>,
    /// Salesforce org with multi-currency switched on (`CurrencyIsoCode` exists).
    pub salesforce_multi_currency: bool,
    /// Snapshot file of both emulators (see [`snapshot`]): loaded at start
    /// when it exists (instead of the seed), written at
    /// [`RunningEmulators::shutdown`].
    pub snapshot: Option<PathBuf>,
}

/// Why the emulators could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("could not bind 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

/// The base URLs of one emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrls {
    /// e.g. `http://127.0.0.1:41234`
    pub http: String,
    /// e.g. `https://localhost:41235` (the certificate is for `localhost` and `127.0.0.1`)
    pub https: String,
}

/// Credentials for the HubSpot emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpotCredentials {
    pub private_app_token: String,
    /// A token for a person in HubSpot's UI (changes attributed `CRM_UI`).
    pub user_token: String,
    /// The developer API key of the Webhooks v3 API (`?hapikey=`).
    pub developer_api_key: String,
    /// The app's client secret (the key of webhook signatures).
    pub client_secret: String,
    /// The id of the app the private-app token belongs to.
    pub app_id: u64,
    /// The portal (hub) id.
    pub portal_id: u64,
}

/// Both emulators, running until [`RunningEmulators::shutdown`].
pub struct RunningEmulators {
    pub salesforce_urls: BaseUrls,
    pub hubspot_urls: BaseUrls,
    pub salesforce_credentials: salesforce::Credentials,
    pub hubspot_credentials: HubSpotCredentials,
    /// The CA certificate (PEM) that signed the HTTPS certificates.
    pub ca_cert_path: PathBuf,
    pub ca_cert_pem: String,
    /// The Salesforce emulator itself (for in-process inspection).
    pub salesforce: salesforce::Salesforce,
    /// The HubSpot emulator itself (for in-process inspection).
    pub hubspot: hubspot::HubSpot,
    servers: Vec<Server>,
    snapshot: Option<PathBuf>,
}

enum Server {
    Plain(tokio::sync::oneshot::Sender<()>, JoinHandle<()>),
    Tls(axum_server::Handle<SocketAddr>, JoinHandle<()>),
}

impl RunningEmulators {
    /// Stops every listener, and writes the snapshot when one was configured.
    pub async fn shutdown(self) -> Result<(), EmulatorError> {
        for server in self.servers {
            match server {
                Server::Plain(tx, join) => {
                    let _ = tx.send(());
                    let _ = join.await;
                }
                Server::Tls(handle, join) => {
                    handle.shutdown();
                    let _ = join.await;
                }
            }
        }
        if let Some(path) = &self.snapshot {
            snapshot::save(path, &self.salesforce, &self.hubspot)?;
        }
        Ok(())
    }
}

fn bind(port: u16) -> Result<std::net::TcpListener, EmulatorError> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map_err(|source| EmulatorError::Bind { port, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| EmulatorError::Bind { port, source })?;
    Ok(listener)
}

fn serve_plain(listener: std::net::TcpListener, app: Router) -> Result<Server, EmulatorError> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| EmulatorError::Bind { port, source })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Server::Plain(tx, join))
}

fn serve_tls(
    listener: std::net::TcpListener,
    app: Router,
    config: axum_server::tls_rustls::RustlsConfig,
) -> Result<Server, EmulatorError> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let handle = axum_server::Handle::new();
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
        .map_err(|source| EmulatorError::Bind { port, source })?
        .handle(handle.clone());
    let join = tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    Ok(Server::Tls(handle, join))
}

static CA_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Starts both emulators (HTTP and HTTPS each) on 127.0.0.1. Must run inside a
/// tokio runtime.
pub async fn start(options: EmulatorOptions) -> Result<RunningEmulators, EmulatorError> {
    let tls = tls::TlsMaterial::generate()?;
    let ca_cert_path = options.ca_cert_path.clone().unwrap_or_else(|| {
        let n = CA_COUNTER.fetch_add(1, Ordering::SeqCst);
        std::env::temp_dir()
            .join(format!("dealbridge-emulator-{}-{n}", std::process::id()))
            .join("ca.pem")
    });
    tls.write_ca(&ca_cert_path)?;
    let rustls_config =
        axum_server::tls_rustls::RustlsConfig::from_config(tls.server_config.clone());

    let sf_config = salesforce::Config {
        multi_currency: options.salesforce_multi_currency,
        ..Default::default()
    };
    let (salesforce, hubspot) = match &options.snapshot {
        Some(path) if path.exists() => {
            let loaded = snapshot::load(path, sf_config, &options.seed)?;
            let hubspot = loaded
                .hubspot
                .unwrap_or_else(|| hubspot::HubSpot::new(&options.seed));
            (loaded.salesforce, hubspot)
        }
        _ => (
            salesforce::Salesforce::new(&options.seed, sf_config),
            hubspot::HubSpot::new(&options.seed),
        ),
    };

    let sf_http = bind(options.salesforce_ports.http)?;
    let sf_https = bind(options.salesforce_ports.https)?;
    let hs_http = bind(options.hubspot_ports.http)?;
    let hs_https = bind(options.hubspot_ports.https)?;
    let port_of = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    let salesforce_urls = BaseUrls {
        http: format!("http://127.0.0.1:{}", port_of(&sf_http)),
        https: format!("https://localhost:{}", port_of(&sf_https)),
    };
    let hubspot_urls = BaseUrls {
        http: format!("http://127.0.0.1:{}", port_of(&hs_http)),
        https: format!("https://localhost:{}", port_of(&hs_https)),
    };

    let sf_router = salesforce.router();
    let hs_router = hubspot.router();
    let servers = vec![
        serve_plain(
            sf_http,
            sf_router.clone().layer(Extension(salesforce::InstanceUrl(
                salesforce_urls.http.clone(),
            ))),
        )?,
        serve_tls(
            sf_https,
            sf_router.layer(Extension(salesforce::InstanceUrl(
                salesforce_urls.https.clone(),
            ))),
            rustls_config.clone(),
        )?,
        serve_plain(hs_http, hs_router.clone())?,
        serve_tls(hs_https, hs_router, rustls_config)?,
    ];

    Ok(RunningEmulators {
        salesforce_urls,
        hubspot_urls,
        salesforce_credentials: salesforce.credentials(),
        hubspot_credentials: HubSpotCredentials {
            private_app_token: hubspot.private_app_token(),
            user_token: hubspot.user_token(),
            developer_api_key: hubspot.developer_api_key(),
            client_secret: hubspot.client_secret(),
            app_id: hubspot.app_id(),
            portal_id: hubspot.portal_id(),
        },
        ca_cert_path,
        ca_cert_pem: tls.ca_pem,
        salesforce,
        hubspot,
        servers,
        snapshot: options.snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!("demo".parse::<Seed>(), Ok(Seed::Demo));
        assert_eq!("Empty".parse::<Seed>(), Ok(Seed::Empty));
        assert_eq!("42".parse::<Seed>(), Ok(Seed::Number(42)));
        assert!("-1".parse::<Seed>().is_err());
        assert!("lots".parse::<Seed>().is_err());
    }
}
