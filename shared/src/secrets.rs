//! Secrets: a wrapper that never prints, KMS sealing of the secrets Strata
//! stores (client secrets, TOTP seeds), and the deployment's bootstrap token.

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;

/// A secret string: `Debug` and `Display` print `***`, and it has no `Serialize`,
/// so it cannot reach a log line or an API response by accident.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Errors of sealing and unsealing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the key service failed: {0}")]
    Kms(String),
    #[error("sealed value is malformed or was sealed for another account or purpose")]
    Mismatch,
}

/// What a sealed value is bound to: opening it under another account or
/// purpose fails (KMS encryption context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext {
    pub account: String,
    pub purpose: &'static str,
}

impl SealContext {
    pub fn new(account: impl std::fmt::Display, purpose: &'static str) -> Self {
        Self {
            account: account.to_string(),
            purpose,
        }
    }
    fn pairs(&self) -> HashMap<String, String> {
        HashMap::from([
            ("account".to_string(), self.account.clone()),
            ("purpose".to_string(), self.purpose.to_string()),
        ])
    }
}

/// Seals small secrets (at most 4 KiB) for storage.
#[async_trait]
pub trait Sealer: Send + Sync {
    async fn seal(&self, plaintext: &[u8], context: &SealContext) -> Result<String, SealError>;
    async fn open(&self, sealed: &str, context: &SealContext) -> Result<Vec<u8>, SealError>;
}

/// KMS `Encrypt`/`Decrypt` under the stack's key, with the seal context as encryption context.
pub struct KmsSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, plaintext: &[u8], context: &SealContext) -> Result<String, SealError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext))
            .set_encryption_context(Some(context.pairs()))
            .send()
            .await
            .map_err(|e| SealError::Kms(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| SealError::Kms("no ciphertext returned".into()))?;
        Ok(b64().encode(blob.as_ref()))
    }

    async fn open(&self, sealed: &str, context: &SealContext) -> Result<Vec<u8>, SealError> {
        let blob = b64().decode(sealed).map_err(|_| SealError::Mismatch)?;
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .set_encryption_context(Some(context.pairs()))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_invalid_ciphertext_exception() => SealError::Mismatch,
                _ => SealError::Kms(aws_sdk_kms::error::DisplayErrorContext(e).to_string()),
            })?;
        Ok(out.plaintext().map(|p| p.as_ref().to_vec()).unwrap_or_default())
    }
}

/// A sealer for unit tests: binds the context, does not encrypt.
#[derive(Default)]
pub struct TestSealer;

#[async_trait]
impl Sealer for TestSealer {
    async fn seal(&self, plaintext: &[u8], context: &SealContext) -> Result<String, SealError> {
        Ok(format!(
            "test:{}:{}:{}",
            context.account,
            context.purpose,
            b64().encode(plaintext)
        ))
    }

    async fn open(&self, sealed: &str, context: &SealContext) -> Result<Vec<u8>, SealError> {
        let prefix = format!("test:{}:{}:", context.account, context.purpose);
        let body = sealed.strip_prefix(&prefix).ok_or(SealError::Mismatch)?;
        b64().decode(body).map_err(|_| SealError::Mismatch)
    }
}

/// Where the one-time bootstrap token (the first sign-up's proof) comes from.
#[async_trait]
pub trait BootstrapToken: Send + Sync {
    async fn token(&self) -> Result<Secret, SealError>;
}

/// The bootstrap token in Secrets Manager (the template's `BootstrapSecret`).
pub struct SecretsManagerToken {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: tokio::sync::OnceCell<Secret>,
}

impl SecretsManagerToken {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            cached: tokio::sync::OnceCell::new(),
        }
    }
}

#[async_trait]
impl BootstrapToken for SecretsManagerToken {
    async fn token(&self) -> Result<Secret, SealError> {
        self.cached
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_secret_value()
                    .secret_id(&self.secret_id)
                    .send()
                    .await
                    .map_err(|e| SealError::Kms(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
                let value = out
                    .secret_string()
                    .ok_or_else(|| SealError::Kms("bootstrap secret has no string value".into()))?;
                Ok(Secret::new(value.trim()))
            })
            .await
            .cloned()
    }
}

/// A fixed bootstrap token, for unit tests.
pub struct FixedToken(pub Secret);

#[async_trait]
impl BootstrapToken for FixedToken {
    async fn token(&self) -> Result<Secret, SealError> {
        Ok(self.0.clone())
    }
}

/// A random bearer token: 32 bytes from the OS, base64url without padding
/// (43 characters). Sessions, invitations, download links and confirmations
/// use it; only its [`sha256_hex`] is stored.
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// SHA-256 (hex) of a token: what is stored in its place.
pub fn sha256_hex(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[tokio::test]
    async fn sealed_value_is_bound_to_its_account() {
        let sealer = TestSealer;
        let a = SealContext::new("acct_a", "connection-secret");
        let sealed = sealer.seal(b"s3cret", &a).await.expect("seal");
        assert_eq!(sealer.open(&sealed, &a).await.expect("open"), b"s3cret");
        let b = SealContext::new("acct_b", "connection-secret");
        assert!(matches!(sealer.open(&sealed, &b).await, Err(SealError::Mismatch)));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
