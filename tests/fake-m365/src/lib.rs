//! A fake Microsoft 365: the Entra ID client-credentials token endpoint and
//! the Microsoft Graph v1.0 endpoints Strata uses, faithful to
//! `saas-apis.md` §A — error shapes, opaque paging, throttling at the real
//! limits (scaled in time), fault injection, and a request log the tests read.
//!
//! Each [`FakeM365`] is independent and listens on its own loopback port, so
//! tests can run many at once. Both the token endpoint (`login_url`) and Graph
//! (`graph_url`) are served at [`FakeM365::url`].
//!
//! Besides GETs, the fake takes the writes of a mail restore (§A4 "Restore",
//! "Create a folder"): `POST /users/{u}/mailFolders`, `.../childFolders`,
//! `.../mailFolders/{fid}/messages` (base64 MIME as `text/plain`: always a
//! draft; or JSON with `singleValueExtendedProperties`), `POST
//! /messages/{mid}/attachments` (at most 3 MiB), `.../createUploadSession`
//! (then PUT chunks of at most 4 MiB to the pre-authenticated `uploadUrl`,
//! `{url}/upload/outlook/{session}`), and `PATCH /messages/{mid}` (isRead, flag).
//! They pass the same token check, faults and throttling as GETs, plus the
//! Outlook upload budget (150 MB of POST/PUT/PATCH bodies per mailbox per 5 minutes).
//!
//! Control endpoints (never logged, no token needed):
//! - `GET /_fake/faults`, `POST /_fake/faults` (a [`Faults`] JSON);
//! - `GET /_fake/requests` (the [`LoggedRequest`] log), `DELETE /_fake/requests`;
//! - `GET /_fake/tenant` (users with their kinds, sites; no secret);
//! - `POST /_fake/users` (`{"userPrincipalName", "displayName"?, "id"?, "kind"?}`),
//!   `DELETE /_fake/users/{id or UPN}`.

mod compose;
mod faults;
mod graph;
mod mail;
mod restore;
mod server;
mod tenant;
mod throttle;
mod token;
mod upload;

pub use faults::{FaultKind, FaultRule, Faults};
pub use mail::{Address, Attachment, Composed, Folder, MailItem, Mailbox, headers as headers_of};
pub use restore::MAX_ATTACHMENT_BYTES;
pub use tenant::{Message, Site, Sizes, Tenant, User, UserKind};
pub use throttle::{
    MAILBOX_CONCURRENCY, MAILBOX_REQUESTS_PER_WINDOW, MAILBOX_UPLOAD_BYTES_PER_WINDOW, MAILBOX_UPLOAD_WINDOW,
    MAILBOX_WINDOW, RU_WINDOW, ru_per_minute,
};
pub use upload::{MAX_UPLOAD_CHUNK_BYTES, MAX_UPLOAD_SESSION_BYTES};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use server::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// 1.0 is real time; 0.001 makes the 10-minute Outlook window 0.6 s and
    /// the SharePoint minute 60 ms. `Retry-After` stays in whole seconds (at least 1).
    pub time_scale: f64,
    /// Enforce the throttling limits (§A8).
    pub throttle: bool,
    /// Lifetime of an access token (real time, not scaled).
    pub token_lifetime: Duration,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Faults in force from the start.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            throttle: true,
            token_lifetime: Duration::from_secs(3599),
            seed: 0,
            faults: Faults::default(),
        }
    }
}

/// One request as the fake saw it. Never holds a secret or a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Arrival order (1, 2, ...); [`FakeM365::requests`] is sorted by it.
    pub seq: u64,
    /// Arrival.
    pub at: DateTime<Utc>,
    /// When the response was ready (or the client went away).
    pub finished_at: DateTime<Utc>,
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    pub query: Option<String>,
    /// The app of the bearer token (or the `client_id` of a token request).
    pub client_id: Option<String>,
    /// The user id or UPN (as sent, decoded) when the path is under `/users/{id}/...`.
    pub mailbox: Option<String>,
    /// The status answered; 499 when the client went away before the answer.
    pub status: u16,
    pub retry_after_secs: Option<u32>,
    /// What the request counted against: `mailbox:<user id>`, `sharepoint`, or none
    /// (the directory and the token endpoint are not throttled by the fake).
    pub throttle_scope: Option<String>,
}

/// A running fake on a loopback port. Dropping it stops the server.
pub struct FakeM365 {
    shared: Arc<Shared>,
    url: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeM365 {
    /// Serves `tenant` on `127.0.0.1` at a port the system picks.
    pub async fn start(tenant: Tenant, options: Options) -> anyhow::Result<Self> {
        Self::start_on(tenant, options, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves `tenant` on `addr` (port 0: the system picks one).
    pub async fn start_on(tenant: Tenant, options: Options, addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.time_scale.is_finite() && options.time_scale > 0.0,
            "time_scale must be a positive number, not {}",
            options.time_scale
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::new(tenant, options, url.clone()));
        let app = server::router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake-m365 server stopped");
            }
        });
        Ok(Self {
            shared,
            url,
            task: Some(task),
        })
    }

    /// Base URL of both the token endpoint (`login_url`) and Graph (`graph_url`),
    /// e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        self.url.clone()
    }
    pub fn tenant_id(&self) -> String {
        self.shared.lock().tenant.tenant_id.clone()
    }
    pub fn client_id(&self) -> String {
        self.shared.lock().tenant.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.shared.lock().tenant.client_secret.clone()
    }
    /// A copy of the tenant as it is now (users added and removed included).
    pub fn tenant(&self) -> Tenant {
        self.shared.lock().tenant.clone()
    }

    /// The request log, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests()
    }
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Replaces the fault rules (like `POST /_fake/faults`).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults.set(faults);
    }
    /// The fault rules now in force (with their `remaining` counts).
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.get().clone()
    }

    /// Adds a user (or replaces the one with the same id); a user whose kind has
    /// a mailbox gets one, holding its `messages`.
    pub fn add_user(&self, user: User) {
        self.shared.lock().add_user(user);
    }
    /// Removes a user by id or UPN: it disappears from `/users`, and its
    /// mailbox and drive answer 404.
    pub fn remove_user(&self, id: &str) {
        self.shared.lock().remove_user(id);
    }

    fn with_mailbox<T>(&self, user: &str, f: impl FnOnce(&mut Mailbox) -> T) -> Option<T> {
        let mut inner = self.shared.lock();
        let id = inner.find_user(user)?.id.clone();
        inner.mailboxes.get_mut(&id).map(f)
    }

    /// Delivers a message into a folder (created with its parents); returns its id.
    pub fn add_message(&self, user: &str, folder_path: &str, mime: Vec<u8>) -> Option<String> {
        self.with_mailbox(user, |m| m.add(folder_path, mime))
    }
    pub fn delete_message(&self, user: &str, id: &str) -> bool {
        self.with_mailbox(user, |m| m.delete(id)).unwrap_or(false)
    }
    pub fn move_message(&self, user: &str, id: &str, folder_path: &str) -> bool {
        self.with_mailbox(user, |m| m.move_to(id, folder_path)).unwrap_or(false)
    }
    pub fn rename_folder(&self, user: &str, path: &str, new_name: &str) -> bool {
        self.with_mailbox(user, |m| m.rename_folder(path, new_name))
            .unwrap_or(false)
    }
    pub fn delete_folder(&self, user: &str, path: &str) -> bool {
        self.with_mailbox(user, |m| m.delete_folder(path)).unwrap_or(false)
    }
    pub fn set_read(&self, user: &str, id: &str, read: bool) -> bool {
        self.with_mailbox(user, |m| m.set_read(id, read)).unwrap_or(false)
    }
    /// Forgets the mailbox's sync states: the next delta with an old token gets `syncStateNotFound`.
    pub fn expire_sync_states(&self, user: &str) {
        self.with_mailbox(user, Mailbox::expire_sync_states);
    }
    /// The `A/B/C` path of a folder of the user's mailbox.
    pub fn folder_path_of(&self, user: &str, folder_id: &str) -> Option<String> {
        self.with_mailbox(user, |m| m.path_of(folder_id)).flatten()
    }
    /// The messages of the folder at exactly this path (e.g.
    /// `Restored 2026-11-25 10:00/Inbox/Projects`), in arrival order; empty without one.
    pub fn messages_in(&self, user: &str, folder_path: &str) -> Vec<MailItem> {
        self.with_mailbox(user, |m| m.messages_in(folder_path))
            .unwrap_or_default()
    }
    /// A copy of the user's mailbox (folders and messages).
    pub fn mailbox(&self, user: &str) -> Option<Mailbox> {
        self.with_mailbox(user, |m| m.clone())
    }

    /// Ends every access token now (the next Graph request gets 401 and must renew).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.shared.lock().tokens.values_mut() {
            t.expires = now;
        }
    }

    /// Stops the server (in-flight requests are cut).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The task ends with its cancellation; the error says just that.
            let _ = task.await;
        }
    }
}

impl Drop for FakeM365 {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
