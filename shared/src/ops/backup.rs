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
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long after its deadline a crashed invocation still holds its entity.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Attempts at a message whose body breaks midway (statuses are the client's retries).
const ITEM_ATTEMPTS: u32 = 3;
/// How long a throttled backup waits before its continuation when no `Retry-After` was given.
const THROTTLED_PAUSE: Duration = Duration::from_secs(60);

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
    #[error("could not enqueue the continuation: {0}")]
    Continuation(String),
}

impl BackupError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::State(e) => e.is_retryable(),
            Self::Source(e) => e.is_retryable(),
            Self::Repo(e) => e.is_retryable(),
            Self::Secret(crate::secrets::SealError::Kms(_)) | Self::Busy | Self::Continuation(_) => true,
            // Retried so that it ends in the dead-letter queue, where an alarm sees it.
            Self::Malformed(_) => true,
            Self::Secret(_) => false,
        }
    }
}

/// Where each folder's delta stands, messages to try again, and the
/// unfinished pass if a time budget cut the last run short (docs/design.md §2.2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub version: u32,
    /// Folder id → its delta link (where the last complete pass ended).
    pub folders: BTreeMap<String, String>,
    /// Messages whose content could not be read: folder id by message id.
    pub retry: BTreeMap<String, String>,
    /// A pass over the folders that a continuation goes on with.
    #[serde(default)]
    pub pass: Option<Pass>,
    /// How many times the cursor was saved: names continuations.
    #[serde(default)]
    pub seq: u64,
}

/// A pass over every folder, spanning as many invocations as it needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pass {
    /// Folder id → where its round goes on (a next link), or its new delta link once done.
    pub folders: BTreeMap<String, FolderPass>,
    /// Folders enumerated whole in this pass (first backup or resync).
    pub enumerated: BTreeSet<String>,
    /// Messages that failed in this pass: folder id by message id.
    pub failed: BTreeMap<String, String>,
    /// The sealed working state (ids seen and removed so far), in the repository.
    pub work: Option<String>,
    pub invocations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderPass {
    pub link: String,
    pub done: bool,
}

/// What a pass has seen so far, kept in the repository between invocations
/// (it can be large: one 16-byte key per message).
#[derive(Debug, Default, Serialize, Deserialize)]
struct PassWork {
    version: u32,
    /// Keys ([`seen_key`]) of messages present somewhere, base64 of their concatenation.
    seen: String,
    /// Messages that left a folder (deleted, or moved: then also seen).
    removed: BTreeSet<String>,
}

fn seen_key(id: &str) -> [u8; 16] {
    let hash = blake3::hash(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// The time an invocation may work: it stops fetching at `stop_at`, leaving
/// the rest of its deadline to commit.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub deadline: Instant,
    pub stop_at: Instant,
}

impl Budget {
    /// Up to the deadline less a reserve (a quarter of the time, at most 2
    /// minutes), and no longer than `cap`.
    pub fn new(deadline: Instant, cap: Option<Duration>) -> Self {
        let now = Instant::now();
        let remaining = deadline.saturating_duration_since(now);
        let mut work = remaining - (remaining / 4).min(Duration::from_secs(120));
        if let Some(cap) = cap {
            work = work.min(cap);
        }
        Self {
            deadline,
            stop_at: now + work,
        }
    }

    pub fn exhausted(&self) -> bool {
        Instant::now() >= self.stop_at
    }

    /// A lease that outlives this invocation only briefly: a crashed
    /// invocation's lease expires soon after its deadline.
    fn lease(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now()) + LEASE_MARGIN
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `ok`; `partial` (exceptions, or the time budget ran out and a continuation follows); `failed`.
    pub status: String,
    /// The pass goes on in a continuation.
    #[serde(default)]
    pub continues: bool,
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
    /// The cursor's save count after the run.
    #[serde(default)]
    pub cursor_seq: Option<u64>,
    /// The source asked to wait (its request budget is spent): the continuation comes after this.
    #[serde(default)]
    pub resume_after_secs: Option<u64>,
}

/// Handles a batch under the invocation's deadline.
pub async fn handle_batch(ctx: &Context, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let budget = Budget::new(deadline, ctx.config.backup_time_budget);
        let result = match serde_json::from_str::<BackupMessage>(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => backup(ctx, &message, &budget).await.map(|r| r.map(|r| r.status)),
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
pub async fn backup(ctx: &Context, msg: &BackupMessage, budget: &Budget) -> Result<Option<RunRecord>, BackupError> {
    let Some(entity) = ctx.state.entity(&msg.account_id, &msg.entity_id).await? else {
        return Ok(None);
    };
    if entity.status != EntityStatus::Active || entity.kind != EntityKind::Mailbox {
        return Ok(None);
    }
    match ctx
        .state
        .claim_request(&msg.account_id, &msg.request_id, budget.lease())
        .await?
    {
        RequestClaim::AlreadyDone => return Ok(None),
        RequestClaim::Busy => return Err(BackupError::Busy),
        RequestClaim::Claimed => {}
    }
    let lease = format!("lease-backup-{}", msg.entity_id);
    if ctx.state.claim_request(&msg.account_id, &lease, budget.lease()).await? != RequestClaim::Claimed {
        ctx.state
            .finish_request(&msg.account_id, &msg.request_id, false)
            .await?;
        return Err(BackupError::Busy);
    }
    // What comes next, sent once the entity is free: the continuation of an
    // unfinished pass, or this backup again after a throttled start.
    let (mut result, follow_up) = match run(ctx, msg, &entity.connection_id, &entity.source_id, budget).await {
        // Throttled before any work (the folder listing): nothing to commit; the same backup comes back after the wait.
        Err(BackupError::Source(SourceError::Throttled { retry_after, .. })) if ctx.backup_queue.is_some() => {
            let wait = retry_after.unwrap_or(THROTTLED_PAUSE);
            info!(entity = %msg.entity_id, wait_secs = wait.as_secs(), "throttled before any work; deferred");
            let again = BackupMessage {
                request_id: format!("{}-w", msg.request_id),
                ..msg.clone()
            };
            (Ok(None), Some((again, Some(wait))))
        }
        // Without a queue to defer to, a throttled start fails the request and SQS retries it.
        Err(e @ BackupError::Source(SourceError::Throttled { .. })) => (Err(e), None),
        Err(e) => {
            record_failure(ctx, msg, &entity.connection_id, &e).await;
            (Err(e), None)
        }
        Ok(record) => {
            let continuation = record.cursor_seq.filter(|_| record.continues).map(|seq| {
                let next = BackupMessage {
                    account_id: msg.account_id.clone(),
                    entity_id: msg.entity_id.clone(),
                    // Named by the cursor it goes on from: a redelivery asks for the same continuation.
                    request_id: format!("cont-{}-{seq}", msg.entity_id),
                };
                (next, record.resume_after_secs.map(Duration::from_secs))
            });
            (Ok(Some(record)), continuation)
        }
    };
    ctx.state.finish_request(&msg.account_id, &lease, false).await?;
    // If the follow-up cannot be sent, this request is not done and its
    // redelivery goes on from the saved cursor.
    if let (Some((next, delay)), Some(queue)) = (follow_up, &ctx.backup_queue) {
        let body = serde_json::to_value(&next).unwrap_or_default();
        let sent = match delay {
            Some(delay) => queue.send_delayed(&body, delay).await,
            None => queue.send(&body).await,
        };
        if let Err(e) = sent {
            result = Err(BackupError::Continuation(e.to_string()));
        }
    }
    let done = result.as_ref().map_or_else(|e| !e.is_retryable(), |_| true);
    ctx.state.finish_request(&msg.account_id, &msg.request_id, done).await?;
    result
}

/// A run that failed as a whole is in the activity log too.
async fn record_failure(ctx: &Context, msg: &BackupMessage, connection: &crate::model::ConnectionId, e: &BackupError) {
    let activity = Activity {
        id: ActivityId::random(),
        account_id: msg.account_id.clone(),
        at: Utc::now(),
        kind: "backup".into(),
        connection_id: Some(connection.clone()),
        service: Some(crate::model::Service::M365),
        status: "failed".into(),
        summary: format!("backup failed: {e}"),
        details: json!({
            "entity_id": msg.entity_id,
            "run": RunRecord { status: "failed".into(), exceptions: vec![json!({"error": e.to_string(), "retried": e.is_retryable()})], ..RunRecord::default() },
        }),
    };
    if let Err(err) = ctx.state.put_activity(&activity).await {
        warn!(error = %err, "could not record the failed run");
    }
}

async fn run(
    ctx: &Context,
    msg: &BackupMessage,
    connection: &crate::model::ConnectionId,
    user: &str,
    budget: &Budget,
) -> Result<RunRecord, BackupError> {
    let started = Instant::now();
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let entity_id = msg.entity_id.as_str();
    let connection = ctx
        .state
        .connection(&msg.account_id, connection)
        .await?
        .ok_or(StateError::NotFound("connection"))?;
    // Waits longer than this end the invocation: it commits and its continuation comes back after the wait.
    let policy = RetryPolicy {
        max_retry_after: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let graph = graph_client(&ctx.http, ctx.sealer.as_ref(), &connection, policy).await?;
    let repo = Repo::open(ctx.repo_store.clone(), ctx.repo_keys.as_ref(), msg.account_id.as_str()).await?;
    let previous: Cursor = match ctx.state.cursor(&msg.account_id, &msg.entity_id).await? {
        Some(doc) => serde_json::from_value(doc).unwrap_or_default(),
        None => Cursor::default(),
    };
    let mut pass = previous.pass.clone().unwrap_or_default();
    pass.invocations += 1;
    let work: PassWork = match &pass.work {
        Some(key) => repo.get_work(entity_id, key).await?,
        None => PassWork::default(),
    };
    let mut seen: HashSet<[u8; 16]> = base64::engine::general_purpose::STANDARD
        .decode(&work.seen)
        .unwrap_or_default()
        .chunks_exact(16)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok())
        .collect();
    let mut removed = work.removed;
    let view = repo.view(entity_id, None).await?;
    let mut writer = repo.writer(entity_id, &run_id).await?;
    let mut exceptions = Vec::new();
    let folders = graph.mail_folders(user).await?;
    let paths: HashMap<&str, &str> = folders.iter().map(|f| (f.id.as_str(), f.path.as_str())).collect();
    // Messages handled in this invocation (a message can show up twice in a delta).
    let mut touched: HashSet<String> = HashSet::new();
    let mut out_of_time = false;
    // The mailbox's request budget is spent (a long Retry-After): go on after it.
    let mut resume_after: Option<Duration> = None;
    // Every invocation finishes at least one page, however short its budget:
    // a continuation always moves the pass forward.
    let mut pages = 0u32;

    'folders: for folder in &folders {
        let start = GraphClient::delta_start(user, &folder.id);
        let (mut link, mut enumerating) = match pass.folders.get(&folder.id) {
            Some(FolderPass { done: true, .. }) => continue,
            Some(at) => (at.link.clone(), pass.enumerated.contains(&folder.id)),
            None => match previous.folders.get(&folder.id) {
                Some(delta) => (delta.clone(), false),
                None => (start.clone(), true),
            },
        };
        loop {
            if enumerating {
                pass.enumerated.insert(folder.id.clone());
            }
            if pages > 0 && budget.exhausted() {
                pass.folders.insert(folder.id.clone(), FolderPass { link, done: false });
                out_of_time = true;
                break 'folders;
            }
            let page = match graph.message_delta(&link).await {
                Ok(page) => page,
                // An expired delta token: enumerate the folder again; what is stored already is not fetched again.
                Err(SourceError::Resync) if link != start => {
                    link = start.clone();
                    enumerating = true;
                    continue;
                }
                // Deleted since the listing: its messages are gone with it (seen nowhere, deleted at the end).
                Err(SourceError::NotFound { .. }) => continue 'folders,
                Err(SourceError::Throttled { retry_after, .. }) => {
                    resume_after = Some(retry_after.unwrap_or(THROTTLED_PAUSE));
                    pass.folders.insert(folder.id.clone(), FolderPass { link, done: false });
                    out_of_time = true;
                    break 'folders;
                }
                Err(e) => return Err(e.into()),
            };
            let mut stopped = false;
            for change in page.changes {
                let (id, mut meta, is_draft) = match change {
                    MessageChange::Removed { id } => {
                        removed.insert(id);
                        continue;
                    }
                    MessageChange::Present { id, meta, is_draft } => (id, meta, is_draft),
                };
                meta["folder"] = json!(folder.path);
                match view.get(&id) {
                    _ if touched.contains(&id) => {}
                    // Content of a sent or received message does not change: metadata only.
                    Some(prev) if !is_draft => {
                        if prev.meta != meta {
                            writer.update_item(prev, meta);
                        }
                    }
                    _ => {
                        if pages > 0 && budget.exhausted() {
                            // This page is read again by the continuation; what was done is not done twice.
                            stopped = true;
                            break;
                        }
                        let change = if view.contains_key(&id) {
                            Change::Changed
                        } else {
                            Change::Added
                        };
                        match fetch_and_store(&graph, &mut writer, user, &id, change, meta).await {
                            Ok(Ok(())) => {}
                            Ok(Err(f)) => {
                                exceptions.push(
                                    json!({"item": id, "folder": folder.path, "error": f.reason, "attempts": f.attempts}),
                                );
                                pass.failed.insert(id.clone(), folder.id.clone());
                            }
                            // The mailbox's request budget is spent: commit, and go on after the wait.
                            Err(BackupError::Source(SourceError::Throttled { retry_after, .. })) => {
                                resume_after = Some(retry_after.unwrap_or(THROTTLED_PAUSE));
                                stopped = true;
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                seen.insert(seen_key(&id));
                touched.insert(id);
            }
            if stopped {
                pass.folders.insert(folder.id.clone(), FolderPass { link, done: false });
                out_of_time = true;
                break 'folders;
            }
            pages += 1;
            match (page.next_link, page.delta_link) {
                (Some(next), _) => link = next,
                (None, Some(delta)) => {
                    pass.folders.insert(
                        folder.id.clone(),
                        FolderPass {
                            link: delta,
                            done: true,
                        },
                    );
                    break;
                }
                (None, None) => {
                    return Err(SourceError::Protocol("delta page with neither next nor delta link".into()).into());
                }
            }
        }
    }

    let next = if out_of_time {
        // A partial snapshot; the pass goes on in a continuation with what it has seen.
        let mut packed = Vec::with_capacity(seen.len() * 16);
        for key in &seen {
            packed.extend_from_slice(key);
        }
        let work = PassWork {
            version: 1,
            seen: base64::engine::general_purpose::STANDARD.encode(packed),
            removed,
        };
        pass.work = Some(repo.put_work(entity_id, &run_id, &work).await?);
        Cursor {
            version: 2,
            folders: previous.folders.clone(),
            retry: previous.retry.clone(),
            pass: Some(pass),
            seq: previous.seq + 1,
        }
    } else {
        // Messages that failed before and that no delta reported again.
        let mut failed = std::mem::take(&mut pass.failed);
        for (id, folder_id) in &previous.retry {
            if seen.contains(&seen_key(id)) || failed.contains_key(id) {
                continue;
            }
            let meta =
                json!({"folder": paths.get(folder_id.as_str()).copied().unwrap_or_default(), "folder_id": folder_id});
            let change = if view.contains_key(id) {
                Change::Changed
            } else {
                Change::Added
            };
            let outcome = match fetch_and_store(&graph, &mut writer, user, id, change, meta).await {
                // Throttled at the very end: it stays on the retry list.
                Err(BackupError::Source(e @ SourceError::Throttled { .. })) => Err(ItemFailure {
                    reason: e.to_string(),
                    attempts: 1,
                    vanished: false,
                }),
                other => other?,
            };
            match outcome {
                Ok(()) => {}
                // A message that vanished meanwhile is no failure.
                Err(f) if f.vanished => continue,
                Err(f) => {
                    exceptions.push(json!({"item": id, "folder": paths.get(folder_id.as_str()), "error": f.reason, "attempts": f.attempts}));
                    failed.insert(id.clone(), folder_id.clone());
                }
            }
            seen.insert(seen_key(id));
            touched.insert(id.clone());
        }
        // What the catalog holds but the pass did not see: deleted (reported
        // removed, in a folder enumerated whole, or in a folder that is gone);
        // in a renamed folder: its new path, without fetching anything.
        let enumerated: HashSet<&str> = pass
            .enumerated
            .iter()
            .filter_map(|f| paths.get(f.as_str()).copied())
            .collect();
        for (id, entry) in &view {
            if touched.contains(id) || seen.contains(&seen_key(id)) {
                continue;
            }
            let folder_id = entry.meta.get("folder_id").and_then(Value::as_str);
            let gone = removed.contains(id)
                || entry
                    .meta
                    .get("folder")
                    .and_then(Value::as_str)
                    .is_some_and(|p| enumerated.contains(p))
                || folder_id.is_some_and(|f| !paths.contains_key(f));
            if gone {
                writer.delete_item(id);
            } else if let Some(path) = folder_id.and_then(|f| paths.get(f))
                && entry.meta.get("folder").and_then(Value::as_str) != Some(*path)
            {
                let mut meta = entry.meta.clone();
                meta["folder"] = json!(path);
                writer.update_item(entry, meta);
            }
        }
        Cursor {
            version: 2,
            folders: pass
                .folders
                .into_iter()
                .filter(|(id, _)| paths.contains_key(id.as_str()))
                .map(|(id, at)| (id, at.link))
                .collect(),
            retry: failed,
            pass: None,
            seq: previous.seq + 1,
        }
    };

    let (snapshot_key, snapshot) = writer.commit(out_of_time).await?;
    // Invariant 2: the cursors move only after the snapshot that holds their data.
    ctx.state
        .put_cursor(
            &msg.account_id,
            &msg.entity_id,
            &serde_json::to_value(&next).unwrap_or_default(),
        )
        .await?;
    let now = Utc::now();
    if !out_of_time {
        // The browse history moves on with the snapshot (docs/design.md §4.1), so that
        // the first question after a backup does not replay its segment. Derived: a
        // failure here costs that question time, nothing else.
        if let Err(e) = crate::ops::browse::history(&repo, msg.entity_id.as_str()).await {
            warn!(entity = %msg.entity_id, error = %e, "browse history not updated");
        }
        ctx.state
            .update_entity(&msg.account_id, &msg.entity_id, |e| {
                e.last_backup_at = Some(now);
                true
            })
            .await?;
    }
    let c = &snapshot.counts;
    let record = RunRecord {
        run_id,
        status: if exceptions.is_empty() && !out_of_time {
            "ok".into()
        } else {
            "partial".into()
        },
        continues: out_of_time,
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
        cursor_seq: Some(next.seq),
        resume_after_secs: resume_after.map(|d| d.as_secs().max(1)),
    };
    let activity = Activity {
        id: ActivityId::random(),
        account_id: msg.account_id.clone(),
        at: now,
        kind: "backup".into(),
        connection_id: Some(connection.id.clone()),
        service: Some(connection.service),
        status: record.status.clone(),
        summary: format!(
            "{} added, {} changed, {} deleted, {} failed{}",
            record.added,
            record.changed,
            record.deleted,
            record.failed,
            if out_of_time { "; continues" } else { "" }
        ),
        details: json!({ "entity_id": msg.entity_id, "run": record }),
    };
    ctx.state.put_activity(&activity).await?;
    Ok(record)
}

/// Why one message could not be stored.
struct ItemFailure {
    reason: String,
    /// Requests made for it.
    attempts: u32,
    /// It no longer exists (404).
    vanished: bool,
}

/// Fetches a message's MIME as a stream into the repository. A body that
/// breaks midway is fetched again from the start (the client itself retries
/// statuses, throttling and timeouts). `Ok(Err(_))`: the item failed;
/// `Err`: the run cannot go on.
async fn fetch_and_store(
    graph: &GraphClient,
    writer: &mut crate::repo::RunWriter<'_>,
    user: &str,
    id: &str,
    change: Change,
    meta: Value,
) -> Result<Result<(), ItemFailure>, BackupError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match graph.message_mime(user, id).await {
            Ok(stream) => match writer.add_item(id, change, meta.clone(), stream).await {
                Ok(_) => return Ok(Ok(())),
                Err(RepoError::Source(reason)) => reason,
                Err(e) => return Err(e.into()),
            },
            Err(e @ SourceError::NotFound { .. }) => {
                return Ok(Err(ItemFailure {
                    reason: e.to_string(),
                    attempts: attempt,
                    vanished: true,
                }));
            }
            Err(e @ (SourceError::Auth { .. } | SourceError::Resync | SourceError::Throttled { .. })) => {
                return Err(e.into());
            }
            Err(e) => {
                return Ok(Err(ItemFailure {
                    reason: e.to_string(),
                    attempts: (attempt - 1) + RetryPolicy::DEFAULT_ATTEMPTS,
                    vanished: false,
                }));
            }
        };
        if attempt >= ITEM_ATTEMPTS {
            return Ok(Err(ItemFailure {
                reason: failure,
                attempts: attempt,
                vanished: false,
            }));
        }
        graph.backoff(attempt).await;
    }
}
