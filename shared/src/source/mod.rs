//! Connectors to the SaaS services, behind narrow traits. `graph` speaks
//! Microsoft Graph (Entra ID tokens, users, mailboxes, drives, sites).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod graph;

/// Errors of a source. `retryable` ones were still failing after the
/// connector's own retries and may succeed on a later run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The service refused the credentials (wrong tenant, client or secret).
    #[error("the service refused the credentials: {code}: {description}")]
    Auth { code: String, description: String },
    /// The credentials work but lack a permission.
    #[error("permission denied: {code}: {message}")]
    Forbidden { code: String, message: String },
    #[error("not found: {code}: {message}")]
    NotFound { code: String, message: String },
    #[error("request refused ({status}): {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// Throttled too often, or told to wait longer than the client waits in place.
    #[error("still throttled after {attempts} attempts")]
    Throttled {
        attempts: u32,
        /// The last `Retry-After`, if the service gave one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The delta token expired (`syncStateNotFound`, 410 Gone): enumerate again.
    #[error("the sync state expired; a full resync is needed")]
    Resync,
}

impl SourceError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable(_) | Self::Protocol(_))
    }
}

/// A user of the directory, as discovery sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub display_name: String,
    pub account_enabled: bool,
    pub guest: bool,
    /// Has an enabled Exchange plan (a licence); shared mailboxes have none.
    pub exchange_licensed: bool,
}

/// A user's OneDrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryDrive {
    pub id: String,
    pub name: String,
    pub web_url: Option<String>,
}

/// A SharePoint site collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectorySite {
    pub id: String,
    pub display_name: String,
    pub web_url: Option<String>,
}

/// How a connector has used the service so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
}

/// What discovery needs from a tenant.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Checks the credentials and the permission to read the directory.
    async fn verify(&self) -> Result<(), SourceError>;
    async fn users(&self) -> Result<Vec<DirectoryUser>, SourceError>;
    /// Whether the user has a mailbox that the API can reach.
    async fn has_mailbox(&self, user_id: &str) -> Result<bool, SourceError>;
    /// The user's OneDrive, if it was ever provisioned.
    async fn drive_of(&self, user_id: &str) -> Result<Option<DirectoryDrive>, SourceError>;
    async fn sites(&self) -> Result<Vec<DirectorySite>, SourceError>;
    fn stats(&self) -> SourceStats;
}
