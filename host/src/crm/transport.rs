//! HTTP plumbing shared by both CRM clients: building a rustls `reqwest` client (with an
//! optional extra CA certificate for the emulators' self-signed HTTPS), timeouts, the retry
//! policy, and [`Secret`], the wrapper that keeps credentials out of logs.
//!
//! This module must never print a [`Secret`]'s contents and never install a crypto backend
//! other than ring.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::governor::Backoff;
use super::metrics::CallOutcome;

/// A credential or token. `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// How the HTTP client connects.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Whole-request timeout (connect, send, read the body). A timeout is retried like a 5xx
    /// for idempotent requests.
    pub request_timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// A PEM file with an extra root CA to trust (the emulators write theirs to a file).
    pub ca_cert_pem: Option<PathBuf>,
    /// Trust only `ca_cert_pem` and not the platform's roots (useful in tests and when the
    /// machine has no system trust store).
    pub ca_cert_only: bool,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            ca_cert_pem: None,
            ca_cert_only: false,
            user_agent: concat!("dealbridge/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// How often and how patiently a client retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after a 5xx or a timeout (on top of the first attempt).
    pub max_transient_retries: u32,
    /// Waits after a 429 before giving up with a rate-limit error.
    pub max_throttle_retries: u32,
    /// The longest single wait a 429's `Retry-After` may impose; longer ones fail at once
    /// with a rate-limit error so the caller can checkpoint instead of hanging.
    pub max_throttle_wait: Duration,
    /// Jittered exponential backoff between transient retries.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_transient_retries: 4,
            max_throttle_retries: 8,
            max_throttle_wait: Duration::from_secs(120),
            backoff: Backoff::default(),
        }
    }
}

/// Failure to build an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The CA certificate file could not be read.
    #[error("cannot read CA certificate {path}: {source}")]
    ReadCa {
        /// The file named in the options.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA certificate file is not a PEM certificate.
    #[error("CA certificate {path} is not a valid PEM certificate: {reason}")]
    BadCa {
        /// The file named in the options.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Builds a rustls (ring) HTTP client from the options.
pub(crate) fn build_http_client(
    opts: &TransportOptions,
) -> Result<reqwest::Client, TransportError> {
    http_client_builder(opts)?
        .build()
        .map_err(TransportError::Build)
}

/// A client builder with the options applied (timeouts, user agent, the extra root CA),
/// for callers that add settings of their own (the plugin gateway turns off redirects and
/// proxies).
pub fn http_client_builder(
    opts: &TransportOptions,
) -> Result<reqwest::ClientBuilder, TransportError> {
    // reqwest is built without a provider: make sure ring is the process default. An error
    // only means some provider is installed already, which is what we need.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .connect_timeout(opts.connect_timeout)
        .user_agent(opts.user_agent.clone())
        .tls_backend_rustls();
    if let Some(path) = &opts.ca_cert_pem {
        let pem = std::fs::read(path).map_err(|source| TransportError::ReadCa {
            path: path.clone(),
            source,
        })?;
        // reqwest accepts any bytes here and fails later at handshake time; parse the PEM
        // ourselves so that a wrong file is a clear error now.
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if ders.is_empty() {
            return Err(TransportError::BadCa {
                path: path.clone(),
                reason: "no PEM certificate in the file".into(),
            });
        }
        let mut certs = Vec::with_capacity(ders.len());
        for der in ders {
            certs.push(reqwest::Certificate::from_der(der.as_ref()).map_err(|e| {
                TransportError::BadCa {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?);
        }
        builder = if opts.ca_cert_only {
            builder.tls_certs_only(certs)
        } else {
            builder.tls_certs_merge(certs)
        };
    }
    Ok(builder)
}

/// The metrics label of a failed request.
pub(crate) fn transport_outcome(err: &reqwest::Error) -> CallOutcome {
    if err.is_timeout() {
        CallOutcome::Timeout
    } else if err.is_connect() {
        CallOutcome::Connect
    } else {
        CallOutcome::Transport
    }
}

/// Whether a failed request may be sent again: always when no connection was made (the
/// server never saw it); after a timeout or a broken connection only when the request is
/// idempotent.
pub(crate) fn transport_retryable(err: &reqwest::Error, idempotent: bool) -> bool {
    err.is_connect() || (idempotent && (err.is_timeout() || err.is_request() || err.is_body()))
}

/// Parses a `Retry-After` header given in seconds (HTTP dates are not used by either CRM).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A short, printable excerpt of a response body for error messages.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_redact() {
        let s = Secret::new("00Dxx!supersecret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert!(!format!("{:?}", Some(s.clone())).contains("supersecret"));
        assert_eq!(s.expose(), "00Dxx!supersecret");
    }

    #[test]
    fn retry_after_parses_seconds() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let opts = TransportOptions {
            ca_cert_pem: Some("/nonexistent/dealbridge-ca.pem".into()),
            ..TransportOptions::default()
        };
        let err = build_http_client(&opts).unwrap_err();
        assert!(matches!(err, TransportError::ReadCa { .. }), "{err}");
    }

    #[test]
    fn garbage_ca_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("dealbridge-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let opts = TransportOptions {
            ca_cert_pem: Some(path),
            ca_cert_only: true,
            ..TransportOptions::default()
        };
        let err = build_http_client(&opts).unwrap_err();
        assert!(matches!(err, TransportError::BadCa { .. }), "{err}");
    }

    #[test]
    fn body_excerpt_is_bounded() {
        let long = "x".repeat(1000);
        let e = body_excerpt(long.as_bytes());
        assert!(e.chars().count() <= 301);
    }
}
