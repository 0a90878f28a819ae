//! Backup of one mailbox (issue 3, first slice): per-folder message delta,
//! MIME of new messages into the repository, metadata-only updates for
//! messages already stored, deletions recorded (the data stays), an expired
//! delta token answered by a full resync that stores nothing twice. One bad
//! message never fails the run: it is recorded and tried again next run.
//! The snapshot is committed before the cursors move (invariant 2); a lease
//! keeps one backup of an entity at a time, and a redelivered request does
//! nothing (invariant 3).

use crate::context::Context;
use crate::model::{AccountId, Activity, ActivityId, EntityId, EntityKind, EntityStatus};
use crate::ops::connections::graph_client;
use crate::repo::{Change, Repo, RepoError};
use crate::source::SourceError;
use crate::source::graph::{GraphClient, MessageChange, RetryPolicy};
use crate::state::{RequestClaim, StateError};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a backup holds its entity before another may take over.
const LEASE: Duration = Duration::from_secs(30 * 60);
/// Attempts at one message's content within a run (the client's own retries).
const ITEM_ATTEMPTS: u32 = RetryPolicy::DEFAULT_ATTEMPTS;

/// A message of the backup queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupMessage {
    pub account_id: AccountId,
    pub entity_id: EntityId,
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot open the connection's secret: {0}")]
    Secret(#[from] crate::secrets::SealError),
    #[error("another backup of this entity is running")]
    Busy,
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl BackupError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::State(e) => e.is_retryable(),
            Self::Source(e) => e.is_retryable(),
            Self::Repo(e) => e.is_retryable(),
            Self::Secret(crate::secrets::SealError::Kms(_)) | Self::Busy => true,
            // Retried so that it ends in the dead-letter queue, where an alarm sees it.
            Self::Malformed(_) => true,
            Self::Secret(_) => false,
        }
    }
}

/// Where each folder's delta stands, and messages to try again (docs/design.md §2.2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub version: u32,
    /// Folder id → its delta link.
    pub folders: BTreeMap<String, String>,
    /// Messages whose content could not be read: folder id by message id.
    pub retry: BTreeMap<String, String>,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub status: String,
    pub added: u64,
    pub changed: u64,
    pub updated: u64,
    pub deleted: u64,
    pub failed: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub requests: u64,
    pub duration_ms: u64,
    pub exceptions: Vec<Value>,
    pub snapshot: Option<String>,
}

pub async fn handle_batch(ctx: &Context, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let result = match serde_json::from_str::<BackupMessage>(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => backup(ctx, &message).await.map(|r| r.map(|r| r.status)),
            Err(e) => Err(BackupError::Malformed(e.to_string())),
        };
        match result {
            Ok(outcome) => info!(message_id = %id, outcome = ?outcome, "backup message handled"),
            Err(e) if e.is_retryable() => {
                warn!(message_id = %id, error = %e, "backup failed; will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            Err(e) => warn!(message_id = %id, error = %e, "backup failed for good"),
        }
    }
    response
}

/// Backs up one entity once per request; `None` when there was nothing to do.
pub async fn backup(ctx: &Context, msg: &BackupMessage) -> Result<Option<RunRecord>, BackupError> {
    let Some(entity) = ctx.state.entity(&msg.account_id, &msg.entity_id).await? else {
        return Ok(None);
    };
    if entity.status != EntityStatus::Active || entity.kind != EntityKind::Mailbox {
        return Ok(None);
    }
    match ctx.state.claim_request(&msg.account_id, &msg.request_id, LEASE).await? {
        RequestClaim::AlreadyDone => return Ok(None),
        RequestClaim::Busy => return Err(BackupError::Busy),
        RequestClaim::Claimed => {}
    }
    let lease = format!("lease-backup-{}", msg.entity_id);
    if ctx.state.claim_request(&msg.account_id, &lease, LEASE).await? != RequestClaim::Claimed {
        ctx.state
            .finish_request(&msg.account_id, &msg.request_id, false)
            .await?;
        return Err(BackupError::Busy);
    }
    let result = run(ctx, msg, &entity.connection_id, &entity.source_id).await;
    ctx.state.finish_request(&msg.account_id, &lease, false).await?;
    let done = result.as_ref().map_or_else(|e| !e.is_retryable(), |_| true);
    ctx.state.finish_request(&msg.account_id, &msg.request_id, done).await?;
    result.map(Some)
}

async fn run(
    ctx: &Context,
    msg: &BackupMessage,
    connection: &crate::model::ConnectionId,
    user: &str,
) -> Result<RunRecord, BackupError> {
    let started = Instant::now();
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let connection = ctx
        .state
        .connection(&msg.account_id, connection)
        .await?
        .ok_or(StateError::NotFound("connection"))?;
    let graph = graph_client(&ctx.http, ctx.sealer.as_ref(), &connection, RetryPolicy::default()).await?;
    let repo = Repo::open(ctx.repo_store.clone(), ctx.repo_keys.as_ref(), msg.account_id.as_str()).await?;
    let previous: Cursor = match ctx.state.cursor(&msg.account_id, &msg.entity_id).await? {
        Some(doc) => serde_json::from_value(doc).unwrap_or_default(),
        None => Cursor::default(),
    };
    let view = repo.view(msg.entity_id.as_str(), None).await?;
    let mut writer = repo.writer(msg.entity_id.as_str(), &run_id).await?;
    let mut next = Cursor {
        version: 1,
        ..Cursor::default()
    };
    let mut exceptions = Vec::new();
    let folders = graph.mail_folders(user).await?;
    let paths: HashMap<String, String> = folders.iter().map(|f| (f.id.clone(), f.path.clone())).collect();
    // Messages stored in this run (a message can show up twice in a delta).
    let mut stored: HashSet<String> = HashSet::new();

    // Read every folder's round first: a move shows as a removal in one folder
    // and a presence in another, in either order.
    let mut rounds = Vec::with_capacity(folders.len());
    for folder in &folders {
        let start = previous.folders.get(&folder.id).cloned();
        let full = start.is_none();
        let (changes, delta_link, resynced) = match read_delta(&graph, user, &folder.id, start).await {
            Ok(round) => round,
            Err(SourceError::Resync) => {
                let (changes, link, _) = read_delta(&graph, user, &folder.id, None).await?;
                (changes, link, true)
            }
            Err(e) => return Err(e.into()),
        };
        rounds.push((folder, changes, delta_link, full || resynced));
    }
    let present: HashSet<String> = rounds
        .iter()
        .flat_map(|(_, changes, _, _)| changes.iter())
        .filter_map(|c| match c {
            MessageChange::Present { id, .. } => Some(id.clone()),
            MessageChange::Removed { .. } => None,
        })
        .collect();
    let mut deleted: HashSet<String> = HashSet::new();
    for (folder, changes, delta_link, enumerated) in rounds {
        for change in changes {
            match change {
                MessageChange::Removed { id } => {
                    if view.contains_key(&id) && !present.contains(&id) && deleted.insert(id.clone()) {
                        writer.delete_item(&id);
                    }
                }
                MessageChange::Present { id, mut meta, is_draft } => {
                    meta["folder"] = json!(folder.path);
                    if stored.contains(&id) {
                        continue;
                    }
                    match view.get(&id) {
                        // Content of a sent or received message does not change: metadata only.
                        Some(prev) if !is_draft => {
                            if prev.meta != meta {
                                writer.update_item(prev, meta);
                            }
                            stored.insert(id);
                        }
                        _ => {
                            let change = if view.contains_key(&id) {
                                Change::Changed
                            } else {
                                Change::Added
                            };
                            match fetch_and_store(&graph, &mut writer, user, &id, change, meta).await {
                                Ok(()) => {
                                    stored.insert(id);
                                }
                                Err(e) => {
                                    exceptions.push(json!({"item": id, "folder": folder.path, "error": e.to_string(), "attempts": ITEM_ATTEMPTS}));
                                    next.retry.insert(id, folder.id.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        if enumerated && !view.is_empty() {
            // A full enumeration: what the catalog holds in this folder but the source no longer shows anywhere is gone.
            for (id, entry) in &view {
                if entry.meta["folder"] == json!(folder.path) && !present.contains(id) && deleted.insert(id.clone()) {
                    writer.delete_item(id);
                }
            }
        }
        next.folders.insert(folder.id.clone(), delta_link);
    }
    // Messages that failed last time and that no delta reported again.
    for (id, folder_id) in &previous.retry {
        if stored.contains(id) || next.retry.contains_key(id) {
            continue;
        }
        let meta = json!({"folder": paths.get(folder_id).cloned().unwrap_or_default()});
        // A message that vanished meanwhile is no failure; anything else is tried again next run.
        match fetch_and_store(&graph, &mut writer, user, id, Change::Added, meta).await {
            Ok(()) | Err(BackupError::Source(SourceError::NotFound { .. })) => {}
            Err(e) => {
                exceptions.push(json!({"item": id, "error": e.to_string(), "attempts": ITEM_ATTEMPTS}));
                next.retry.insert(id.clone(), folder_id.clone());
            }
        }
    }

    let (snapshot_key, snapshot) = writer.commit(false).await?;
    // Invariant 2: the cursors move only after the snapshot that holds their data.
    ctx.state
        .put_cursor(
            &msg.account_id,
            &msg.entity_id,
            &serde_json::to_value(&next).unwrap_or_default(),
        )
        .await?;
    let now = Utc::now();
    ctx.state
        .update_entity(&msg.account_id, &msg.entity_id, |e| {
            e.last_backup_at = Some(now);
            true
        })
        .await?;
    let c = &snapshot.counts;
    let record = RunRecord {
        run_id,
        status: if exceptions.is_empty() {
            "ok".into()
        } else {
            "partial".into()
        },
        added: c.added,
        changed: c.changed,
        updated: c.updated,
        deleted: c.deleted,
        failed: exceptions.len() as u64,
        logical_bytes: c.logical_bytes,
        stored_bytes: c.stored_bytes,
        requests: graph.stats().requests,
        duration_ms: started.elapsed().as_millis() as u64,
        exceptions,
        snapshot: Some(snapshot_key),
    };
    let activity = Activity {
        id: ActivityId::random(),
        account_id: msg.account_id.clone(),
        at: now,
        kind: "backup".into(),
        connection_id: Some(connection.id.clone()),
        status: record.status.clone(),
        summary: format!(
            "{} added, {} changed, {} deleted, {} failed",
            record.added, record.changed, record.deleted, record.failed
        ),
        details: json!({ "entity_id": msg.entity_id, "run": record }),
    };
    ctx.state.put_activity(&activity).await?;
    Ok(record)
}

/// A whole delta round of a folder: its changes and the next delta link.
async fn read_delta(
    graph: &GraphClient,
    user: &str,
    folder: &str,
    start: Option<String>,
) -> Result<(Vec<MessageChange>, String, bool), SourceError> {
    let mut link = start.unwrap_or_else(|| GraphClient::delta_start(user, folder));
    let mut changes = Vec::new();
    loop {
        let page = graph.message_delta(&link).await?;
        changes.extend(page.changes);
        match (page.next_link, page.delta_link) {
            (Some(next), _) => link = next,
            (None, Some(delta)) => return Ok((changes, delta, false)),
            (None, None) => {
                return Err(SourceError::Protocol(
                    "delta page with neither next nor delta link".into(),
                ));
            }
        }
    }
}

/// Fetches a message's MIME (the client retries 5xx, timeouts and broken bodies) and stores it.
async fn fetch_and_store(
    graph: &GraphClient,
    writer: &mut crate::repo::RunWriter<'_>,
    user: &str,
    id: &str,
    change: Change,
    meta: Value,
) -> Result<(), BackupError> {
    let mime = graph.message_mime(user, id).await?;
    writer.add_item(id, change, meta, &mime[..]).await?;
    Ok(())
}
