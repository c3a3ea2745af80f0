//! A throw-away certificate authority for the emulators' HTTPS listeners.
//!
//! At start the emulators generate a CA and a server certificate for
//! `localhost` and `127.0.0.1` signed by it, and write the CA certificate (PEM)
//! to a file that clients can trust. Nothing here is ever meant to protect
//! anything: the keys live in memory only and are never written to disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not build the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("could not write the CA certificate to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The CA and server certificate the HTTPS listeners use.
pub struct TlsMaterial {
    /// The CA certificate in PEM, for clients to trust.
    pub ca_pem: String,
    /// The server configuration (HTTP/2 and HTTP/1.1 by ALPN).
    pub server_config: Arc<ServerConfig>,
}

impl TlsMaterial {
    /// Generates a fresh CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Result<Self, TlsError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "dealbridge emulator local CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        leaf_params.distinguished_name = dn;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            ca_pem: ca.pem(),
            server_config: Arc::new(config),
        })
    }

    /// Writes the CA certificate to `path` (creating parent directories).
    pub fn write_ca(&self, path: &Path) -> Result<(), TlsError> {
        let err = |source| TlsError::WriteCa {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::write(path, &self.ca_pem).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_ca_and_writes_it() {
        let m = TlsMaterial::generate().unwrap();
        assert!(m.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = std::env::temp_dir().join(format!("dealbridge-tls-test-{}", std::process::id()));
        let path = dir.join("ca.pem");
        m.write_ca(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.ca_pem);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
