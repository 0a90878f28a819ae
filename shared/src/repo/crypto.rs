//! Keys and encryption of the repository (docs/design.md §3.2).
//!
//! One 256-bit data key per account, generated and wrapped by KMS
//! (`GenerateDataKey`, encryption context `{account, purpose: repo-data-key}`).
//! Two keys are derived from it with BLAKE3's key derivation: the key of the
//! keyed chunk ids, and the AES-256-GCM key. Every encrypted object is
//! `[format 0x01][96-bit random nonce][ciphertext + 128-bit tag]`, with
//! associated data binding it to what it is (a chunk id, an object key).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use rand::RngCore;
use std::collections::HashMap;

pub const SEALED_FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 12;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_BYTES + 16;

/// A chunk's id: keyed BLAKE3 of its plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("chunk id must be 64 hex digits"))
    }
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key service failed: {0}")]
    Kms(String),
    #[error("the wrapped key does not open for this account")]
    Mismatch,
}

/// Generates and unwraps account data keys (KMS in production).
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// A new data key: its plaintext and its wrapped form.
    async fn generate(&self, account: &str) -> Result<([u8; 32], Vec<u8>), KeyError>;
    async fn unwrap(&self, account: &str, wrapped: &[u8]) -> Result<[u8; 32], KeyError>;
}

fn context(account: &str) -> HashMap<String, String> {
    HashMap::from([
        ("account".to_string(), account.to_string()),
        ("purpose".to_string(), "repo-data-key".to_string()),
    ])
}

/// KMS `GenerateDataKey` / `Decrypt` under the stack's key.
pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeys {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

#[async_trait]
impl KeyProvider for KmsKeys {
    async fn generate(&self, account: &str) -> Result<([u8; 32], Vec<u8>), KeyError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context(account)))
            .send()
            .await
            .map_err(|e| KeyError::Kms(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
        let plain = out
            .plaintext()
            .ok_or_else(|| KeyError::Kms("no plaintext key".into()))?;
        let key: [u8; 32] = plain
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Kms("data key is not 256 bits".into()))?;
        let wrapped = out
            .ciphertext_blob()
            .ok_or_else(|| KeyError::Kms("no wrapped key".into()))?
            .as_ref()
            .to_vec();
        Ok((key, wrapped))
    }

    async fn unwrap(&self, account: &str, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
            .set_encryption_context(Some(context(account)))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_invalid_ciphertext_exception() => KeyError::Mismatch,
                _ => KeyError::Kms(aws_sdk_kms::error::DisplayErrorContext(e).to_string()),
            })?;
        out.plaintext()
            .and_then(|p| p.as_ref().try_into().ok())
            .ok_or(KeyError::Mismatch)
    }
}

/// A key provider for unit tests: wraps with a fixed master key and the account as associated data.
pub struct TestKeys(pub [u8; 32]);

#[async_trait]
impl KeyProvider for TestKeys {
    async fn generate(&self, account: &str) -> Result<([u8; 32], Vec<u8>), KeyError> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let wrapped = seal_with(&self.0, &key, account.as_bytes());
        Ok((key, wrapped))
    }

    async fn unwrap(&self, account: &str, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        let plain = open_with(&self.0, wrapped, account.as_bytes()).ok_or(KeyError::Mismatch)?;
        plain.try_into().map_err(|_| KeyError::Mismatch)
    }
}

fn seal_with(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.push(SEALED_FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_with(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEALED_FORMAT_V1 {
        return None;
    }
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_BYTES]);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[1 + NONCE_BYTES..],
                aad,
            },
        )
        .ok()
}

/// The keys of one account's repository.
#[derive(Clone)]
pub struct Keys {
    id_key: [u8; 32],
    enc_key: [u8; 32],
}

impl Keys {
    pub fn derive(data_key: &[u8; 32]) -> Self {
        Self {
            id_key: blake3::derive_key("strata repo v1 chunk id", data_key),
            enc_key: blake3::derive_key("strata repo v1 aes-256-gcm", data_key),
        }
    }

    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.enc_key, plaintext, aad)
    }

    /// `None` when the object was altered, or sealed under another key or name.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.enc_key, sealed, aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_binds_its_name() {
        let keys = Keys::derive(&[1u8; 32]);
        let sealed = keys.seal(b"subject: quarterly numbers", b"acct/catalog/e/r");
        assert!(
            !sealed.windows(9).any(|w| w == b"quarterly"),
            "no plaintext in the sealed bytes"
        );
        assert_eq!(
            keys.open(&sealed, b"acct/catalog/e/r").as_deref(),
            Some(&b"subject: quarterly numbers"[..])
        );
        assert!(
            keys.open(&sealed, b"acct/catalog/e/other").is_none(),
            "moved under another name"
        );
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(keys.open(&flipped, b"acct/catalog/e/r").is_none(), "altered");
        assert!(
            Keys::derive(&[2u8; 32]).open(&sealed, b"acct/catalog/e/r").is_none(),
            "another account's key"
        );
    }

    #[test]
    fn chunk_ids_are_keyed_per_account() {
        let a = Keys::derive(&[1u8; 32]);
        let b = Keys::derive(&[2u8; 32]);
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"), "ids reveal nothing across accounts");
        let id = a.chunk_id(b"x");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
    }

    #[tokio::test]
    async fn test_keys_bind_the_account() {
        let keys = TestKeys([9u8; 32]);
        let (key, wrapped) = keys.generate("acct_a").await.expect("generate");
        assert_eq!(keys.unwrap("acct_a", &wrapped).await.expect("unwrap"), key);
        assert!(keys.unwrap("acct_b", &wrapped).await.is_err());
    }
}
