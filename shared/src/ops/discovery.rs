//! Discovery: enumerate a connection's mailboxes, OneDrives and sites, upsert
//! them as entities, mark vanished ones `gone` (their data stays), activate new
//! ones when the account says so, and record the run. Idempotent under
//! redelivery: each request is claimed once (`State::claim_request`).

use crate::context::Context;
use crate::model::{
    AccountId, Activity, ActivityId, Connection, ConnectionId, DiscoveryCounts, DiscoveryState, Entity, EntityId,
    EntityKind, EntityStatus,
};
use crate::ops::connections::graph_client;
use crate::source::graph::RetryPolicy;
use crate::source::{Directory, DirectoryUser, SourceError};
use crate::state::{RequestClaim, State, StateError};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Probes in flight at once (the client's own limits apply beneath).
const PROBE_CONCURRENCY: usize = 16;
/// Entity writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Progress is saved every this many users.
const PROGRESS_EVERY_USERS: usize = 250;
/// How long a claimed request stays ours before a redelivery may take it over.
const REQUEST_LEASE: Duration = Duration::from_secs(20 * 60);

/// A message of the discovery queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscoveryMessage {
    /// The daily schedule: fan out one message per connection.
    AllConnections,
    /// Discover one connection; with `backup`, then back up its active entities (the daily run).
    Connection {
        account_id: AccountId,
        connection_id: ConnectionId,
        request_id: String,
        #[serde(default)]
        backup: bool,
    },
}

/// Errors of discovery.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot open the connection's secret: {0}")]
    Secret(#[from] crate::secrets::SealError),
    #[error("cannot enqueue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("another discovery of this request is running")]
    Busy,
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl DiscoveryError {
    /// Whether SQS should deliver the message again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::State(e) => e.is_retryable(),
            Self::Source(e) => e.is_retryable(),
            Self::Queue(_) | Self::Busy => true,
            Self::Secret(crate::secrets::SealError::Kms(_)) => true,
            Self::Secret(_) => false,
            // Malformed messages are retried so that they end in the dead-letter queue.
            Self::Malformed(_) => true,
        }
    }
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    FannedOut(usize),
    Discovered(DiscoveryCounts),
    /// A redelivered message whose work is done.
    AlreadyDone,
    /// The connection no longer exists.
    ConnectionGone,
    /// The run failed for a reason a retry will not fix; recorded on the connection.
    Failed(String),
}

/// The Lambda handler: every record on its own; failed ones are reported for redelivery.
pub async fn handle_batch(ctx: &Context, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let started = Instant::now();
        let result = match serde_json::from_str::<DiscoveryMessage>(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => handle_message(ctx, message, &id).await,
            Err(e) => Err(DiscoveryError::Malformed(e.to_string())),
        };
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(outcome) => info!(message_id = %id, ms, outcome = ?outcome, "discovery message handled"),
            Err(e) if e.is_retryable() => {
                warn!(message_id = %id, ms, error = %e, "discovery message failed; will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            Err(e) => warn!(message_id = %id, ms, error = %e, "discovery message dropped"),
        }
    }
    response
}

/// Handles one message of the discovery queue.
pub async fn handle_message(
    ctx: &Context,
    message: DiscoveryMessage,
    message_id: &str,
) -> Result<Outcome, DiscoveryError> {
    match message {
        DiscoveryMessage::AllConnections => fan_out(ctx, message_id).await,
        DiscoveryMessage::Connection {
            account_id,
            connection_id,
            request_id,
            backup,
        } => {
            let Some(connection) = ctx.state.connection(&account_id, &connection_id).await? else {
                return Ok(Outcome::ConnectionGone);
            };
            let claim = ctx.state.claim_request(&account_id, &request_id, REQUEST_LEASE).await?;
            match claim {
                RequestClaim::AlreadyDone => return Ok(Outcome::AlreadyDone),
                RequestClaim::Busy => return Err(DiscoveryError::Busy),
                RequestClaim::Claimed => {}
            }
            let result: Result<DiscoveryCounts, DiscoveryError> = async {
                let client = graph_client(&ctx.http, ctx.sealer.as_ref(), &connection, RetryPolicy::default()).await?;
                let counts = discover(&ctx.state, &client, &connection, &request_id).await?;
                if backup {
                    enqueue_backups(ctx, &connection, &request_id).await?;
                }
                Ok(counts)
            }
            .await;
            let done = match &result {
                Ok(_) => true,
                Err(e) => !e.is_retryable(),
            };
            ctx.state.finish_request(&account_id, &request_id, done).await?;
            match result {
                Err(e) if !e.is_retryable() => Ok(Outcome::Failed(e.to_string())),
                other => other.map(Outcome::Discovered),
            }
        }
    }
}

/// The daily schedule: one discovery request per connection of every account.
async fn fan_out(ctx: &Context, message_id: &str) -> Result<Outcome, DiscoveryError> {
    let connections = ctx.state.all_connections().await?;
    for (account_id, connection_id) in &connections {
        // Derived from the schedule's message: a redelivered fan-out asks for the same runs.
        let request_id = format!("sched-{message_id}-{connection_id}");
        let message = DiscoveryMessage::Connection {
            account_id: account_id.clone(),
            connection_id: connection_id.clone(),
            request_id,
            backup: true,
        };
        ctx.discovery_queue
            .send(&serde_json::to_value(&message).unwrap_or_default())
            .await?;
    }
    Ok(Outcome::FannedOut(connections.len()))
}

/// One backup request per active entity of the connection (paused and gone ones are skipped).
/// Request ids derive from the discovery's, so a redelivery asks for the same backups.
async fn enqueue_backups(ctx: &Context, connection: &Connection, request_id: &str) -> Result<usize, DiscoveryError> {
    let Some(queue) = &ctx.backup_queue else {
        return Ok(0);
    };
    let entities = ctx
        .state
        .entities_of_connection(&connection.account_id, &connection.id)
        .await?;
    let mut sent = 0;
    for (entity, _) in entities.iter().filter(|(e, _)| e.status == EntityStatus::Active) {
        let message = crate::ops::backup::BackupMessage {
            account_id: connection.account_id.clone(),
            entity_id: entity.id.clone(),
            request_id: format!("{request_id}-{}", entity.id),
        };
        queue.send(&serde_json::to_value(&message).unwrap_or_default()).await?;
        sent += 1;
    }
    Ok(sent)
}

/// One entity as the source shows it now.
#[derive(Debug, Clone)]
struct Found {
    kind: EntityKind,
    source_id: String,
    display_name: String,
    address: Option<String>,
    details: Map<String, Value>,
}

/// Discovers one connection and reconciles its entities. Progress and the
/// result are written on the connection; an activity record tells the story.
pub async fn discover(
    state: &State,
    directory: &dyn Directory,
    connection: &Connection,
    request_id: &str,
) -> Result<DiscoveryCounts, DiscoveryError> {
    let started_at = Utc::now();
    let started = Instant::now();
    let (account_id, connection_id) = (&connection.account_id, &connection.id);
    let request = request_id.to_string();
    state
        .update_connection(account_id, connection_id, move |c| {
            c.discovery.state = DiscoveryState::Running;
            c.discovery.request_id = Some(request.clone());
            c.discovery.started_at = Some(started_at);
            c.discovery.finished_at = None;
            c.discovery.users_done = 0;
            c.discovery.users_total = 0;
            c.discovery.error = None;
            true
        })
        .await?;
    let result = scan_and_reconcile(state, directory, connection).await;
    let finished_at = Utc::now();
    let stats = directory.stats();
    let (status, summary, details, error) = match &result {
        Ok(counts) => {
            let mut counts = counts.clone();
            counts.requests = stats.requests;
            counts.throttled = stats.throttled;
            let summary = format!(
                "{} mailboxes, {} OneDrives, {} sites; {} new, {} gone, {} activated",
                counts.mailboxes, counts.onedrives, counts.sites, counts.new, counts.gone, counts.activated
            );
            (
                "succeeded",
                summary,
                json!({ "counts": counts, "request_id": request_id }),
                None,
            )
        }
        Err(e) => (
            "failed",
            format!("discovery failed: {e}"),
            json!({ "error": e.to_string(), "request_id": request_id }),
            Some(e.to_string()),
        ),
    };
    let counts = result.as_ref().ok().cloned().map(|mut c| {
        c.requests = stats.requests;
        c.throttled = stats.throttled;
        c
    });
    let final_counts = counts.clone();
    state
        .update_connection(account_id, connection_id, move |c| {
            c.discovery.state = if error.is_none() {
                DiscoveryState::Succeeded
            } else {
                DiscoveryState::Failed
            };
            c.discovery.finished_at = Some(finished_at);
            c.discovery.result = final_counts.clone().or_else(|| c.discovery.result.clone());
            c.discovery.error = error.clone();
            true
        })
        .await?;
    let mut details = details;
    if let Some(obj) = details.as_object_mut() {
        obj.insert("duration_ms".into(), json!(started.elapsed().as_millis() as u64));
    }
    let activity = Activity {
        id: ActivityId::random(),
        account_id: account_id.clone(),
        at: finished_at,
        kind: "discovery".into(),
        connection_id: Some(connection_id.clone()),
        // Discovery runs on Microsoft 365 connections only, so far.
        service: Some(crate::model::Service::M365),
        status: status.into(),
        summary,
        details,
    };
    state.put_activity(&activity).await?;
    result.map(|_| counts.unwrap_or_default())
}

async fn save_progress(state: &State, connection: &Connection, done: usize, total: usize) -> Result<(), StateError> {
    state
        .update_connection(&connection.account_id, &connection.id, move |c| {
            c.discovery.users_done = done as u64;
            c.discovery.users_total = total as u64;
            true
        })
        .await
        .map(drop)
}

async fn scan_and_reconcile(
    state: &State,
    directory: &dyn Directory,
    connection: &Connection,
) -> Result<DiscoveryCounts, DiscoveryError> {
    let users = directory.users().await?;
    let total = users.len();
    save_progress(state, connection, 0, total).await?;
    let mut counts = DiscoveryCounts {
        users: total as u64,
        ..Default::default()
    };
    let mut found: Vec<Found> = Vec::new();
    // Users whose mailbox or drive could not be determined: their entities are left as they are.
    let mut undetermined: HashSet<String> = HashSet::new();
    let mut probes =
        futures::stream::iter(users.into_iter().map(|user| probe(directory, user))).buffer_unordered(PROBE_CONCURRENCY);
    let mut done = 0usize;
    while let Some((user, result)) = probes.next().await {
        done += 1;
        match result {
            Ok(mut entities) => found.append(&mut entities),
            Err(e) => {
                warn!(user = %user.id, error = %e, "could not determine mailbox or OneDrive");
                undetermined.insert(user.id.clone());
            }
        }
        if done.is_multiple_of(PROGRESS_EVERY_USERS) {
            save_progress(state, connection, done, total).await?;
        }
    }
    drop(probes);
    save_progress(state, connection, done, total).await?;
    let sites_known = match directory.sites().await {
        Ok(sites) => {
            found.extend(sites.into_iter().map(|s| Found {
                kind: EntityKind::Site,
                address: s.web_url,
                display_name: s.display_name,
                source_id: s.id,
                details: Map::new(),
            }));
            true
        }
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "cannot list sites; site entities left as they are");
            false
        }
    };
    counts.undetermined = undetermined.len() as u64;
    for f in &found {
        match f.kind {
            EntityKind::Mailbox => counts.mailboxes += 1,
            EntityKind::Onedrive => counts.onedrives += 1,
            EntityKind::Site => counts.sites += 1,
        }
    }
    let account = state
        .account(&connection.account_id)
        .await?
        .ok_or(StateError::NotFound("account"))?;
    let existing = state
        .entities_of_connection(&connection.account_id, &connection.id)
        .await?;
    let now = Utc::now();
    let writes = reconcile(
        connection,
        existing,
        found,
        &undetermined,
        sites_known,
        account.auto_activate,
        now,
        &mut counts,
    );
    futures::stream::iter(
        writes
            .into_iter()
            .map(|(entity, version)| async move { state.put_entity(&entity, version).await }),
    )
    .buffer_unordered(WRITE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(counts)
}

async fn probe(directory: &dyn Directory, user: DirectoryUser) -> (DirectoryUser, Result<Vec<Found>, SourceError>) {
    // Guests have no mailbox or OneDrive that the API can reach (§A3): no probe.
    if user.guest {
        return (user, Ok(Vec::new()));
    }
    let result = async {
        let mut found = Vec::new();
        if directory.has_mailbox(&user.id).await? {
            let mailbox_type = if user.exchange_licensed { "user" } else { "shared" };
            let mut details = Map::new();
            details.insert("mailbox_type".into(), json!(mailbox_type));
            details.insert("account_enabled".into(), json!(user.account_enabled));
            details.insert("user_principal_name".into(), json!(user.user_principal_name));
            found.push(Found {
                kind: EntityKind::Mailbox,
                source_id: user.id.clone(),
                display_name: user.display_name.clone(),
                address: user.mail.clone().or_else(|| Some(user.user_principal_name.clone())),
                details,
            });
        }
        if let Some(drive) = directory.drive_of(&user.id).await? {
            let mut details = Map::new();
            details.insert("owner_user_id".into(), json!(user.id));
            details.insert("account_enabled".into(), json!(user.account_enabled));
            if let Some(url) = &drive.web_url {
                details.insert("web_url".into(), json!(url));
            }
            found.push(Found {
                kind: EntityKind::Onedrive,
                source_id: drive.id,
                display_name: user.display_name.clone(),
                address: Some(user.user_principal_name.clone()),
                details,
            });
        }
        Ok(found)
    }
    .await;
    (user, result)
}

/// The user an entity belongs to, if any.
fn owner_of(entity: &Entity) -> Option<String> {
    match entity.kind {
        EntityKind::Mailbox => Some(entity.source_id.clone()),
        EntityKind::Onedrive => entity
            .details
            .get("owner_user_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        EntityKind::Site => None,
    }
}

/// Computes the entity writes: new ones, changed ones, vanished ones (`gone`).
#[allow(clippy::too_many_arguments)]
fn reconcile(
    connection: &Connection,
    existing: Vec<(Entity, u64)>,
    found: Vec<Found>,
    undetermined: &HashSet<String>,
    sites_known: bool,
    auto_activate: bool,
    now: DateTime<Utc>,
    counts: &mut DiscoveryCounts,
) -> Vec<(Entity, u64)> {
    let mut existing: HashMap<EntityId, (Entity, u64)> =
        existing.into_iter().map(|(e, v)| (e.id.clone(), (e, v))).collect();
    let mut writes = Vec::new();
    for f in found {
        let id = EntityId::derive(&connection.id, f.kind, &f.source_id);
        match existing.remove(&id) {
            None => {
                let status = if auto_activate {
                    EntityStatus::Active
                } else {
                    EntityStatus::Discovered
                };
                counts.new += 1;
                if auto_activate {
                    counts.activated += 1;
                }
                writes.push((
                    Entity {
                        id,
                        account_id: connection.account_id.clone(),
                        connection_id: connection.id.clone(),
                        kind: f.kind,
                        source_id: f.source_id,
                        display_name: f.display_name,
                        address: f.address,
                        details: f.details,
                        status,
                        status_before_gone: None,
                        discovered_at: now,
                        last_seen_at: now,
                        activated_at: auto_activate.then_some(now),
                        gone_at: None,
                        last_backup_at: None,
                    },
                    0,
                ));
            }
            Some((mut entity, version)) => {
                let mut changed =
                    entity.display_name != f.display_name || entity.address != f.address || entity.details != f.details;
                if entity.status == EntityStatus::Gone {
                    entity.status = entity.status_before_gone.take().unwrap_or(EntityStatus::Discovered);
                    entity.gone_at = None;
                    changed = true;
                }
                if changed {
                    counts.updated += 1;
                } else {
                    counts.unchanged += 1;
                }
                entity.display_name = f.display_name;
                entity.address = f.address;
                entity.details = f.details;
                entity.last_seen_at = now;
                writes.push((entity, version));
            }
        }
    }
    for (_, (mut entity, version)) in existing {
        if entity.status == EntityStatus::Gone {
            continue;
        }
        let keep = match entity.kind {
            EntityKind::Site => !sites_known,
            _ => owner_of(&entity).is_some_and(|owner| undetermined.contains(&owner)),
        };
        if keep {
            continue;
        }
        counts.gone += 1;
        entity.status_before_gone = Some(entity.status);
        entity.status = EntityStatus::Gone;
        entity.gone_at = Some(now);
        writes.push((entity, version));
    }
    writes
}

#[cfg(test)]
mod tests;
