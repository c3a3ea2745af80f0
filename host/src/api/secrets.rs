//! Encryption of CRM connections at rest: AES-256-GCM (`ring::aead`) with a 32-byte key
//! from the environment (`DEALBRIDGE_SECRET_KEY`, 64 hex characters or base64).
//!
//! Every write draws a fresh random 96-bit nonce; the sealed bytes are `nonce ‖ ciphertext
//! ‖ tag`. The associated data binds a ciphertext to its tenant and CRM, so a row copied
//! to another tenant or CRM does not open. The key id (a truncated SHA-256 of the key,
//! which says nothing about the key) is stored beside the ciphertext for key rotation.
//! Random nonces are safe for far more writes than a connection table sees (the bound for
//! GCM is about 2^32 messages per key).
//!
//! What this module must never do: log, format or return a key or a plaintext; reuse a
//! nonce on purpose; open a ciphertext with a key it was not sealed with.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::store::{Side, TenantId};

/// Why the secret key from the environment is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// Neither 64 hex characters nor base64 of 32 bytes.
    #[error(
        "the secret key must be 32 bytes, written as 64 hex characters or as base64 (got {0} characters that decode to neither)"
    )]
    Malformed(usize),
}

/// Why sealing or opening failed. Carries no key or plaintext material.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The ciphertext was sealed with another key.
    #[error("sealed with key `{stored}`; this server holds key `{current}`")]
    WrongKey {
        /// The key id stored with the ciphertext.
        stored: String,
        /// The key id of this server.
        current: String,
    },
    /// Authentication failed: tampered, truncated, or moved to another tenant or CRM.
    #[error("the sealed connection does not authenticate")]
    Tampered,
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// The connection cipher: one key, its id, a random source.
pub struct ConnectionCipher {
    key: LessSafeKey,
    key_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for ConnectionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionCipher")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ConnectionCipher {
    /// A cipher from the key text (64 hex characters, or standard or URL-safe base64,
    /// padded or not, of 32 bytes).
    pub fn from_key_text(text: &str) -> Result<Self, SecretKeyError> {
        let text = text.trim();
        let bytes = decode_key(text).ok_or(SecretKeyError::Malformed(text.len()))?;
        Ok(Self::from_key_bytes(&bytes))
    }

    /// A cipher from 32 key bytes.
    pub fn from_key_bytes(bytes: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes 32-byte keys");
        let mut h = Sha256::new();
        h.update(b"dealbridge-connection-key-id-v1");
        h.update(bytes);
        let key_id = format!("aes256gcm:{}", &hex::encode(h.finalize())[..16]);
        ConnectionCipher {
            key: LessSafeKey::new(unbound),
            key_id,
            rng: SystemRandom::new(),
        }
    }

    /// The id of this key (safe to store and show).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plaintext` for one tenant's connection to one CRM.
    pub fn seal(
        &self,
        tenant: &TenantId,
        crm: Side,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, crm)),
                &mut in_out,
            )
            .map_err(|_| CipherError::Tampered)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens what [`ConnectionCipher::seal`] sealed for the same tenant and CRM.
    pub fn open(
        &self,
        tenant: &TenantId,
        crm: Side,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if key_id != self.key_id {
            return Err(CipherError::WrongKey {
                stored: key_id.to_string(),
                current: self.key_id.clone(),
            });
        }
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CipherError::Tampered);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Tampered)?;
        let mut in_out = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(tenant, crm)), &mut in_out)
            .map_err(|_| CipherError::Tampered)?;
        Ok(plain.to_vec())
    }
}

fn aad(tenant: &TenantId, crm: Side) -> Vec<u8> {
    format!("dealbridge-connection-v1\0{tenant}\0{crm}").into_bytes()
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(text).ok()?.try_into().ok();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .and_then(|v| v.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn keys_in_hex_and_base64_give_the_same_key_id() {
        let bytes = [7u8; 32];
        let hex_key = hex::encode(bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let a = ConnectionCipher::from_key_text(&hex_key).unwrap();
        let b = ConnectionCipher::from_key_text(&format!(" {b64}\n")).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(!a.key_id().contains(&hex_key[..16]));
        for bad in ["", "abc", &hex::encode([1u8; 31]), &"z".repeat(64)] {
            assert!(ConnectionCipher::from_key_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let c = ConnectionCipher::from_key_bytes(&[1u8; 32]);
        let t = tenant("acme");
        let a = c.seal(&t, Side::Salesforce, b"secret-token").unwrap();
        let b = c.seal(&t, Side::Salesforce, b"secret-token").unwrap();
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(!a.windows(12).any(|w| w == b"secret-token"));
        let opened = c.open(&t, Side::Salesforce, c.key_id(), &a).unwrap();
        assert_eq!(opened, b"secret-token");
    }

    #[test]
    fn moved_tampered_or_foreign_key_ciphertexts_do_not_open() {
        let c = ConnectionCipher::from_key_bytes(&[1u8; 32]);
        let t = tenant("acme");
        let sealed = c.seal(&t, Side::HubSpot, b"x").unwrap();
        assert!(matches!(
            c.open(&tenant("other"), Side::HubSpot, c.key_id(), &sealed),
            Err(CipherError::Tampered)
        ));
        assert!(matches!(
            c.open(&t, Side::Salesforce, c.key_id(), &sealed),
            Err(CipherError::Tampered)
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(c.open(&t, Side::HubSpot, c.key_id(), &flipped).is_err());
        assert!(
            c.open(&t, Side::HubSpot, c.key_id(), &sealed[..10])
                .is_err()
        );
        let other = ConnectionCipher::from_key_bytes(&[2u8; 32]);
        assert!(matches!(
            other.open(&t, Side::HubSpot, c.key_id(), &sealed),
            Err(CipherError::WrongKey { .. })
        ));
        assert!(matches!(
            other.open(&t, Side::HubSpot, other.key_id(), &sealed),
            Err(CipherError::Tampered)
        ));
    }
}
