//! Encryption of CRM connections at rest: AES-256-GCM (`ring::aead`) with a 32-byte key
//! from the environment (`DEALBRIDGE_SECRET_KEY`, 64 hex characters or base64).
//!
//! Every write draws a fresh random 96-bit nonce; the sealed bytes are `nonce ‖ ciphertext
//! ‖ tag`. The associated data binds a ciphertext to its tenant and CRM, so a row copied
//! to another tenant or CRM does not open. The key id (a truncated SHA-256 of the key,
//! which says nothing about the key) is stored beside the ciphertext. Random nonces are
//! safe for far more writes than a connection table sees (the bound for GCM is about 2^32
//! messages per key).
//!
//! Key rotation: the cipher holds the current key and any number of previous keys
//! (`DEALBRIDGE_PREVIOUS_SECRET_KEYS`, separated by commas or white space). It always
//! seals with the current key and opens with whichever key the stored key id names; a
//! connection sealed with a key it does not hold is [`CipherError::WrongKey`], naming key
//! ids only. [`super::reseal`] seals every stored connection again under the current key,
//! after which the previous keys can be retired.
//!
//! What this module must never do: log, format or return a key or a plaintext; reuse a
//! nonce on purpose; open a ciphertext with a key it was not sealed with; seal with
//! anything but the current key.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::store::{Side, TenantId};

/// Why a secret key from the environment is refused. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// Neither 64 hex characters nor base64 of 32 bytes.
    #[error(
        "the secret key must be 32 bytes, written as 64 hex characters or as base64 (got {0} characters that decode to neither)"
    )]
    Malformed(usize),
    /// One of the previous keys is neither.
    #[error(
        "previous key number {position} must be 32 bytes, written as 64 hex characters or as base64 (got {len} characters that decode to neither)"
    )]
    MalformedPrevious {
        /// Its position in the list, from 1.
        position: usize,
        /// Its length in characters.
        len: usize,
    },
}

/// Why sealing or opening failed. Carries no key or plaintext material.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The ciphertext was sealed with a key this server does not hold.
    #[error(
        "the connection was sealed with key `{stored}`, which this server does not hold (current key `{current}`; previous keys: {})",
        list_or_none(previous)
    )]
    WrongKey {
        /// The key id stored with the ciphertext.
        stored: String,
        /// The id of this server's current key.
        current: String,
        /// The ids of this server's previous keys.
        previous: Vec<String>,
    },
    /// Authentication failed: tampered, truncated, or moved to another tenant or CRM.
    #[error("the sealed connection does not authenticate under its key")]
    Tampered,
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One AES-256-GCM key and its id.
struct Key {
    aead: LessSafeKey,
    id: String,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Key {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes 32-byte keys");
        let mut h = Sha256::new();
        h.update(b"dealbridge-connection-key-id-v1");
        h.update(bytes);
        Key {
            aead: LessSafeKey::new(unbound),
            id: format!("aes256gcm:{}", &hex::encode(h.finalize())[..16]),
        }
    }
}

/// The connection cipher: the current key, the previous keys, a random source.
pub struct ConnectionCipher {
    current: Key,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for ConnectionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionCipher")
            .field("key_id", &self.current.id)
            .field("previous_key_ids", &self.previous_key_ids())
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

    /// A fresh random key, written as [`ConnectionCipher::from_key_text`] reads it
    /// (64 hex characters): what an operator puts in the environment.
    pub fn generate_key_text() -> Result<String, CipherError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| CipherError::Random)?;
        Ok(hex::encode(key))
    }

    /// A cipher from 32 key bytes.
    pub fn from_key_bytes(bytes: &[u8; 32]) -> Self {
        ConnectionCipher {
            current: Key::new(bytes),
            previous: Vec::new(),
            rng: SystemRandom::new(),
        }
    }

    /// The same cipher, also opening what the previous keys in `text` sealed: keys as
    /// [`ConnectionCipher::from_key_text`] reads them, separated by commas or white space
    /// (empty: none). The current key and repeated keys are kept once.
    pub fn with_previous_keys_text(mut self, text: &str) -> Result<Self, SecretKeyError> {
        let entries = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let bytes = decode_key(entry).ok_or(SecretKeyError::MalformedPrevious {
                position: i + 1,
                len: entry.len(),
            })?;
            self = self.with_previous_key_bytes(&bytes);
        }
        Ok(self)
    }

    /// The same cipher, also opening what `bytes` sealed.
    pub fn with_previous_key_bytes(mut self, bytes: &[u8; 32]) -> Self {
        let key = Key::new(bytes);
        if !self.holds(&key.id) {
            self.previous.push(key);
        }
        self
    }

    /// The id of the current key (safe to store and show).
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// The ids of the previous keys, in the order given.
    pub fn previous_key_ids(&self) -> Vec<String> {
        self.previous.iter().map(|k| k.id.clone()).collect()
    }

    /// Whether this cipher holds the key of `key_id` (current or previous).
    pub fn holds(&self, key_id: &str) -> bool {
        self.key(key_id).is_some()
    }

    fn key(&self, key_id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
    }

    /// Seals `plaintext` for one tenant's connection to one CRM, with the current key.
    pub fn seal(
        &self,
        tenant: &TenantId,
        crm: Side,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.current
            .aead
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

    /// Opens what [`ConnectionCipher::seal`] sealed for the same tenant and CRM, with the
    /// key `key_id` names (current or previous).
    pub fn open(
        &self,
        tenant: &TenantId,
        crm: Side,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let key = self.key(key_id).ok_or_else(|| CipherError::WrongKey {
            stored: key_id.to_string(),
            current: self.current.id.clone(),
            previous: self.previous_key_ids(),
        })?;
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CipherError::Tampered);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Tampered)?;
        let mut in_out = body.to_vec();
        let plain = key
            .aead
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
        let wrong = other
            .open(&t, Side::HubSpot, c.key_id(), &sealed)
            .unwrap_err();
        assert!(matches!(wrong, CipherError::WrongKey { .. }));
        let message = wrong.to_string();
        assert!(
            message.contains(c.key_id()) && message.contains(other.key_id()),
            "{message}"
        );
        assert!(message.contains("previous keys: none"), "{message}");
        assert!(matches!(
            other.open(&t, Side::HubSpot, other.key_id(), &sealed),
            Err(CipherError::Tampered)
        ));
    }

    #[test]
    fn previous_keys_open_what_they_sealed_and_only_the_current_key_seals() {
        let (old_bytes, new_bytes) = ([1u8; 32], [2u8; 32]);
        let t = tenant("acme");
        let old = ConnectionCipher::from_key_bytes(&old_bytes);
        let sealed_old = old.seal(&t, Side::Salesforce, b"old secret").unwrap();
        let rotated = ConnectionCipher::from_key_text(&hex::encode(new_bytes))
            .unwrap()
            .with_previous_keys_text(&format!(
                " {} ,\n{}",
                hex::encode(old_bytes),
                base64::engine::general_purpose::STANDARD.encode(old_bytes)
            ))
            .unwrap();
        assert_eq!(rotated.previous_key_ids(), [old.key_id()], "kept once");
        assert!(rotated.holds(old.key_id()) && rotated.holds(rotated.key_id()));
        let opened = rotated
            .open(&t, Side::Salesforce, old.key_id(), &sealed_old)
            .unwrap();
        assert_eq!(opened, b"old secret");
        // New writes are sealed with the current key: the old key alone cannot open them.
        let sealed_new = rotated.seal(&t, Side::Salesforce, b"new secret").unwrap();
        assert!(
            old.open(&t, Side::Salesforce, old.key_id(), &sealed_new)
                .is_err()
        );
        let opened = rotated
            .open(&t, Side::Salesforce, rotated.key_id(), &sealed_new)
            .unwrap();
        assert_eq!(opened, b"new secret");
        // The current key given as a previous key changes nothing.
        let same = ConnectionCipher::from_key_bytes(&new_bytes)
            .with_previous_keys_text(&hex::encode(new_bytes))
            .unwrap();
        assert!(same.previous_key_ids().is_empty());
        assert!(format!("{rotated:?}").contains(old.key_id()));
    }

    #[test]
    fn a_malformed_previous_key_is_named_by_position_never_quoted() {
        let c = ConnectionCipher::from_key_bytes(&[1u8; 32]);
        let good = hex::encode([3u8; 32]);
        let err = c
            .with_previous_keys_text(&format!("{good}, not-a-key-SECRETISH"))
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("previous key number 2"), "{message}");
        assert!(!message.contains("SECRETISH"), "{message}");
        let none = ConnectionCipher::from_key_bytes(&[1u8; 32])
            .with_previous_keys_text(" , \n")
            .unwrap();
        assert!(none.previous_key_ids().is_empty());
    }
}
