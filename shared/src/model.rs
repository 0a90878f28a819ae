//! Domain types of the control plane, with newtype ids that keep them apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(format!(concat!($prefix, "_{}"), uuid::Uuid::new_v4().simple()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// One customer organisation; every key and query is scoped by it.
    AccountId, "acct");
id_type!(
    /// An admin of an account.
    AdminId, "adm");
id_type!(
    /// A connection to a SaaS tenant.
    ConnectionId, "conn");
id_type!(
    /// A protected entity (mailbox, OneDrive, site).
    EntityId, "ent");
id_type!(
    /// One activity record.
    ActivityId, "act");
id_type!(
    /// A restore or export job.
    JobId, "job");
id_type!(
    /// An API key (its secret is shown once and stored hashed).
    ApiKeyId, "key");
id_type!(
    /// One audit-log record.
    AuditId, "aud");

impl EntityId {
    /// The id of an entity is derived from where it comes from, so the same
    /// mailbox found twice is the same entity (discovery upserts are idempotent).
    pub fn derive(connection: &ConnectionId, kind: EntityKind, source_id: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(connection.0.as_bytes());
        hasher.update([0]);
        hasher.update(kind.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(source_id.as_bytes());
        let digest = hasher.finalize();
        Self(format!("ent_{}", hex::encode(&digest[..12])))
    }
}

/// An account (one customer organisation) and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    /// Activate newly discovered users automatically.
    pub auto_activate: bool,
    pub created_at: DateTime<Utc>,
    /// The daily report: a summary (default), exceptions only, or none.
    #[serde(default)]
    pub report_mode: ReportMode,
    /// The hour (0 to 23, in `timezone`) at which the daily report goes out.
    #[serde(default = "default_report_hour")]
    pub report_hour: u8,
    /// IANA time zone of the account (`Europe/Paris`); the report hour and days are in it.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Who receives the daily report (the owner's address when empty).
    #[serde(default)]
    pub notification_addresses: Vec<String>,
    /// Every admin must have two-factor authentication on before doing anything else.
    #[serde(default)]
    pub require_2fa: bool,
    /// The account's own price table; the deployment's default when absent.
    #[serde(default)]
    pub price_table: Option<PriceTable>,
}

fn default_report_hour() -> u8 {
    7
}

fn default_timezone() -> String {
    "UTC".into()
}

impl Account {
    /// A new account with the default settings.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            id: AccountId::random(),
            name: name.into(),
            auto_activate: false,
            created_at: Utc::now(),
            report_mode: ReportMode::default(),
            report_hour: default_report_hour(),
            timezone: default_timezone(),
            notification_addresses: Vec::new(),
            require_2fa: false,
            price_table: None,
        }
    }
}

/// What the daily report e-mail says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportMode {
    /// Every day: what was protected, backed up, failed, added, and the exceptions.
    #[default]
    Summary,
    /// Only on a day with exceptions or failed backups, listing them.
    Exceptions,
    /// No report.
    Off,
}

/// The monthly price of protecting one entity of a kind, in cents of the table's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    pub service: Service,
    pub kind: EntityKind,
    /// An active entity (backed up daily), per month.
    pub active_cents: u64,
    /// A paused (archived) entity, per month: its data is kept and restorable.
    pub paused_cents: u64,
}

/// What protection costs, per service and kind of entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PriceTable {
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    pub prices: Vec<Price>,
}

impl PriceTable {
    pub fn price(&self, kind: EntityKind) -> Option<&Price> {
        self.prices.iter().find(|p| p.kind == kind)
    }
}

/// The role of an admin (or an API key): the most it may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, and what only the owner may do: require 2FA, purge data.
    Owner,
    /// Everything but the owner's own rights.
    Admin,
    /// Backups and recovery: manage backups, restore, download.
    Operator,
    /// Read only.
    Viewer,
}

/// What an admin may change; reading is open to every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Connections, discovery, activation, pause, backups.
    ManageBackups,
    Restore,
    /// Exports and their download links.
    Download,
    /// The billing projection and the price table.
    Billing,
    /// Invite, change, suspend and remove admins; API keys; the audit log.
    ManageAdmins,
    /// The account's settings (name, report, time zone, notification addresses).
    Settings,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Self::ManageBackups,
        Self::Restore,
        Self::Download,
        Self::Billing,
        Self::ManageAdmins,
        Self::Settings,
    ];
}

impl Role {
    /// The permissions this role may hold (and gets by default).
    pub fn allowed(self) -> &'static [Permission] {
        match self {
            Self::Owner | Self::Admin => &Permission::ALL,
            Self::Operator => &[Permission::ManageBackups, Permission::Restore, Permission::Download],
            Self::Viewer => &[],
        }
    }

    /// The permissions an admin of this role has, given the set chosen for
    /// them: the owner has all; others what was chosen, within the role.
    pub fn effective(self, chosen: &[Permission]) -> Vec<Permission> {
        match self {
            Self::Owner => Permission::ALL.to_vec(),
            _ => self.allowed().iter().copied().filter(|p| chosen.contains(p)).collect(),
        }
    }
}

/// Where an admin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminStatus {
    #[default]
    Active,
    /// Invited by e-mail, not yet accepted.
    Invited,
    /// Cannot sign in; their sessions and nothing else end.
    Suspended,
}

/// An admin of an account. Secrets (password hash, sealed TOTP seed) are kept
/// apart in [`AdminSecrets`] so that this type can be returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Admin {
    pub id: AdminId,
    pub account_id: AccountId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// The permissions chosen for the admin (within the role; the owner has all).
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub status: AdminStatus,
    pub totp_enabled: bool,
    pub created_at: DateTime<Utc>,
    /// Who invited them (none for the owner who signed up).
    #[serde(default)]
    pub invited_by: Option<AdminId>,
    #[serde(default)]
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl Admin {
    /// What this admin may change.
    pub fn effective_permissions(&self) -> Vec<Permission> {
        self.role.effective(&self.permissions)
    }
}

/// What proves an admin's identity; never serialized into an API response.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AdminSecrets {
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// KMS-sealed TOTP seed, once two-factor authentication is on.
    pub totp_sealed: Option<String>,
    /// KMS-sealed TOTP seed being set up, not yet confirmed.
    pub totp_pending_sealed: Option<String>,
    /// The last TOTP time step accepted, so a code cannot be replayed.
    pub totp_last_step: Option<u64>,
    /// Failed sign-ins since the last success.
    pub failed_signins: u32,
    pub locked_until: Option<DateTime<Utc>>,
    /// Sessions of an older generation are over (bumped by a password change).
    #[serde(default)]
    pub session_generation: u64,
    /// SHA-256 (hex) of the pending invitation's token, and until when it holds.
    #[serde(default)]
    pub invite_token_sha256: Option<String>,
    #[serde(default)]
    pub invite_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for AdminSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSecrets")
            .field("failed_signins", &self.failed_signins)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

/// The SaaS services Strata protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    M365,
}

/// A connection to a Microsoft 365 tenant: where to reach it and the sealed secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub account_id: AccountId,
    pub service: Service,
    pub display_name: String,
    pub tenant_id: String,
    pub client_id: String,
    /// The client secret sealed with KMS (bound to the account); never returned.
    pub client_secret_sealed: String,
    pub login_url: String,
    pub graph_url: String,
    pub created_at: DateTime<Utc>,
    pub discovery: DiscoveryStatus,
}

/// Where discovery of a connection stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct DiscoveryStatus {
    pub state: DiscoveryState,
    pub request_id: Option<String>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Users looked at so far, out of `users_total` (progress while running).
    pub users_done: u64,
    pub users_total: u64,
    pub result: Option<DiscoveryCounts>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryState {
    #[default]
    Never,
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// What one discovery found and changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
pub struct DiscoveryCounts {
    pub users: u64,
    pub mailboxes: u64,
    pub onedrives: u64,
    pub sites: u64,
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub gone: u64,
    pub activated: u64,
    /// Users whose mailbox or OneDrive could not be determined this time (left as they were).
    pub undetermined: u64,
    pub requests: u64,
    pub throttled: u64,
}

/// The kinds of protected entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Mailbox,
    Onedrive,
    Site,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mailbox => "mailbox",
            Self::Onedrive => "onedrive",
            Self::Site => "site",
        }
    }
}

/// The life of an entity: found, backed up, paused (archived), vanished from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityStatus {
    Discovered,
    Active,
    Paused,
    /// No longer in the source; its backed-up data is kept.
    Gone,
}

/// A protected entity: a mailbox, a OneDrive or a SharePoint site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entity {
    pub id: EntityId,
    pub account_id: AccountId,
    pub connection_id: ConnectionId,
    pub kind: EntityKind,
    /// The id in the source (Graph user id, drive id, site id).
    pub source_id: String,
    pub display_name: String,
    /// E-mail address, UPN or web URL: what an admin recognises.
    pub address: Option<String>,
    /// Kind-specific facts, e.g. `mailbox_type` (user, shared), `account_enabled`.
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
    pub status: EntityStatus,
    /// The status before it went `gone`, restored if it comes back.
    pub status_before_gone: Option<EntityStatus>,
    pub discovered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub gone_at: Option<DateTime<Utc>>,
    /// Set by later backup runs.
    pub last_backup_at: Option<DateTime<Utc>>,
}

/// One entry of the account's activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    pub id: ActivityId,
    pub account_id: AccountId,
    pub at: DateTime<Utc>,
    /// e.g. `discovery`.
    pub kind: String,
    pub connection_id: Option<ConnectionId>,
    /// The service of the connection.
    #[serde(default)]
    pub service: Option<Service>,
    pub status: String,
    pub summary: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// An API key for scripts and integrations: it acts with its role's
/// permissions; the secret is shown once and only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub name: String,
    /// Admin, operator or viewer (never owner).
    pub role: Role,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_by: AdminId,
    pub created_at: DateTime<Utc>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    Admin {
        admin_id: AdminId,
        email: String,
    },
    ApiKey {
        key_id: ApiKeyId,
        name: String,
    },
    /// Not signed in (a failed sign-in, a download by e-mailed link).
    Anonymous {
        email: Option<String>,
    },
}

/// One entry of the audit log: append-only, never changed or deleted by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: AuditId,
    pub account_id: AccountId,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// The client's address (`X-Forwarded-For`'s first hop, or the peer).
    pub ip: Option<String>,
    /// e.g. `sign_in`, `activate`, `restore`, `admin_invite`.
    pub action: String,
    /// What it acted on (an entity, admin, key or job id), when one thing.
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// What a recovery job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Restore,
    Export,
    /// Erasure of an entity's backed-up data (right to erasure).
    Purge,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    /// Every item was handled (some may have failed: see `failed`).
    Done,
    /// The job could not go on (e.g. the snapshot is gone, the target refused access).
    Failed,
}

/// Items of one entity as of one snapshot: chosen items, chosen folders (with
/// their subfolders), or, when both are empty, the whole entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Selection {
    pub entity_id: EntityId,
    /// A snapshot id (from the snapshot list); the latest when absent.
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub items: Vec<String>,
    #[serde(default)]
    pub folders: Vec<String>,
}

/// One item a job could not handle; the job goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobFailure {
    pub entity_id: EntityId,
    pub item: String,
    pub folder: String,
    pub error: String,
}

/// The outcome of an export: where the zip is and how to fetch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportResult {
    /// Object key of the zip in the data bucket.
    pub key: String,
    pub bytes: u64,
    pub entries: u64,
    /// Entries whose names were changed to be safe, with their original names (in the manifest too).
    pub renamed: u64,
    /// Until when the download link works.
    pub expires_at: DateTime<Utc>,
    /// SHA-256 (hex) of the e-mailed link's token: the link itself is not stored.
    pub token_sha256: String,
}

/// A restore or export job with its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    pub account_id: AccountId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub created_by: AdminId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub selections: Vec<Selection>,
    /// Restore: the mailbox to restore into (the selection's own when absent).
    pub target_entity_id: Option<EntityId>,
    /// Restore: the folder created to hold what is restored (`Restored <date time>` by default).
    pub folder_name: Option<String>,
    /// Export: how long the download link is valid.
    pub link_expiry_secs: u64,
    /// Export: who gets the link by e-mail.
    pub notify: Vec<String>,
    /// Items to handle (known once the job has started).
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// Bytes restored or exported so far.
    pub bytes: u64,
    /// The first failures (at most [`Job::MAX_FAILURES`]).
    pub failures: Vec<JobFailure>,
    pub error: Option<String>,
    pub result: Option<ExportResult>,
    /// Purge: what was erased (`ops::purge::PurgeOutcome`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<serde_json::Value>,
    /// Invocations that worked on the job.
    pub invocations: u32,
    /// While an invocation works on the job; a crashed one's lease lapses.
    pub lease_until: Option<DateTime<Utc>>,
}

impl Job {
    pub const MAX_FAILURES: usize = 100;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_id_is_stable_and_distinguishes_kinds() {
        let conn = ConnectionId("conn_1".into());
        let a = EntityId::derive(&conn, EntityKind::Mailbox, "user-1");
        assert_eq!(a, EntityId::derive(&conn, EntityKind::Mailbox, "user-1"));
        assert_ne!(a, EntityId::derive(&conn, EntityKind::Onedrive, "user-1"));
        assert_ne!(
            a,
            EntityId::derive(&ConnectionId("conn_2".into()), EntityKind::Mailbox, "user-1")
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = AdminSecrets {
            password_hash: "$argon2id$secret".into(),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("argon2id"));
    }
}
