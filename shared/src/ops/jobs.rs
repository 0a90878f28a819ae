//! What restore and export jobs share: the queue message, the job's lease
//! (one invocation at a time; a crashed one's lease lapses), resolving a
//! selection to catalog entries, and the SQS batch loop.

use crate::context::Context;
use crate::model::{AccountId, Entity, Job, JobFailure, JobId, JobKind, JobStatus, Selection};
use crate::ops::backup::Budget;
use crate::repo::{CatalogEntry, Repo, RepoError};
use crate::state::StateError;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long after its deadline a crashed invocation still holds its job.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A message of the restore or export queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub account_id: AccountId,
    pub job_id: JobId,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("cannot open the connection's secret: {0}")]
    Secret(#[from] crate::secrets::SealError),
    #[error("another invocation is working on this job")]
    Busy,
    #[error("{0}")]
    Invalid(String),
    #[error("object store: {0}")]
    Upload(String),
    #[error("could not enqueue the continuation: {0}")]
    Continuation(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error(transparent)]
    Purge(#[from] crate::ops::purge::PurgeError),
}

impl JobError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::State(e) => e.is_retryable(),
            Self::Repo(e) => e.is_retryable(),
            Self::Source(e) => e.is_retryable(),
            Self::Secret(crate::secrets::SealError::Kms(_)) => true,
            Self::Purge(e) => e.is_retryable(),
            Self::Busy | Self::Upload(_) | Self::Continuation(_) | Self::Malformed(_) => true,
            Self::Secret(_) | Self::Invalid(_) => false,
        }
    }
}

/// Takes the job for this invocation: `None` if it is finished (a redelivery).
pub async fn claim(ctx: &Context, msg: &JobMessage, budget: &Budget) -> Result<Option<Job>, JobError> {
    let Some(job) = ctx.state.job(&msg.account_id, &msg.job_id).await? else {
        return Ok(None);
    };
    if matches!(job.status, JobStatus::Done | JobStatus::Failed) {
        return Ok(None);
    }
    let now = Utc::now();
    if job.lease_until.is_some_and(|l| l > now) {
        return Err(JobError::Busy);
    }
    let lease = budget.deadline.saturating_duration_since(Instant::now()) + LEASE_MARGIN;
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(16));
    // The version check of the update makes two claimants race safely: one wins.
    let claimed = ctx
        .state
        .update_job(&msg.account_id, &msg.job_id, |j| {
            if j.lease_until.is_some_and(|l| l > now) || matches!(j.status, JobStatus::Done | JobStatus::Failed) {
                return false;
            }
            j.lease_until = Some(until);
            j.status = JobStatus::Running;
            j.invocations += 1;
            j.updated_at = now;
            true
        })
        .await?;
    if claimed.lease_until != Some(until) {
        return Err(JobError::Busy);
    }
    Ok(Some(claimed))
}

/// Claims the job and does its work: a retryable error releases it (SQS
/// delivers it again), any other fails the job with its message.
pub async fn run(ctx: &Context, msg: &JobMessage, budget: &Budget, kind: JobKind) -> Result<(), JobError> {
    let Some(job) = claim(ctx, msg, budget).await? else {
        return Ok(());
    };
    let outcome = match kind {
        JobKind::Restore => crate::ops::restore::run(ctx, &job, budget).await,
        JobKind::Export => crate::ops::export::build(ctx, &job).await,
        JobKind::Purge => crate::ops::purge::run_job(ctx, &job, budget).await,
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if e.is_retryable() => {
            release(ctx, &job).await?;
            Err(e)
        }
        Err(e) => {
            warn!(job = %job.id, kind = ?kind, error = %e, "job failed");
            let end = Some((JobStatus::Failed, Some(e.to_string())));
            save_progress(ctx, &job, &mut Progress::default(), end, None).await?;
            Ok(())
        }
    }
}

/// Progress made by an invocation, saved on the job.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: Option<u64>,
    pub done: u64,
    pub failed: u64,
    pub bytes: u64,
    pub failures: Vec<JobFailure>,
}

impl Progress {
    pub fn fail(&mut self, entity: &Entity, entry: &CatalogEntry, error: impl std::fmt::Display) {
        self.failed += 1;
        self.failures.push(JobFailure {
            entity_id: entity.id.clone(),
            item: entry.item.clone(),
            folder: folder_of(entry).to_string(),
            error: error.to_string(),
        });
    }
}

/// Adds an invocation's progress to the job; `end` finishes it (status and
/// error) and releases the lease, otherwise the lease is kept.
pub async fn save_progress(
    ctx: &Context,
    job: &Job,
    progress: &mut Progress,
    end: Option<(JobStatus, Option<String>)>,
    result: Option<crate::model::ExportResult>,
) -> Result<Job, JobError> {
    let failures = std::mem::take(&mut progress.failures);
    let (done, failed, bytes) = (progress.done, progress.failed, progress.bytes);
    progress.done = 0;
    progress.failed = 0;
    progress.bytes = 0;
    let updated = ctx
        .state
        .update_job(&job.account_id, &job.id, |j| {
            if let Some(total) = progress.total {
                j.total = total;
            }
            j.done += done;
            j.failed += failed;
            j.bytes += bytes;
            for f in &failures {
                if j.failures.len() < Job::MAX_FAILURES {
                    j.failures.push(f.clone());
                }
            }
            if let Some((status, error)) = &end {
                j.status = *status;
                j.error.clone_from(error);
                j.lease_until = None;
            }
            if result.is_some() {
                j.result.clone_from(&result);
            }
            j.updated_at = Utc::now();
            true
        })
        .await?;
    Ok(updated)
}

/// Releases the job's lease without finishing it (a continuation follows, or SQS retries).
pub async fn release(ctx: &Context, job: &Job) -> Result<(), JobError> {
    ctx.state
        .update_job(&job.account_id, &job.id, |j| {
            j.lease_until = None;
            true
        })
        .await?;
    Ok(())
}

pub fn folder_of(entry: &CatalogEntry) -> &str {
    entry.meta.get("folder").and_then(|v| v.as_str()).unwrap_or_default()
}

/// The entity of a selection (it must be this account's) and its chosen
/// items as of the chosen snapshot, ordered by folder then item.
pub async fn resolve(
    ctx: &Context,
    repo: &Repo,
    account: &AccountId,
    selection: &Selection,
) -> Result<(Entity, Vec<CatalogEntry>), JobError> {
    let entity = ctx
        .state
        .entity(account, &selection.entity_id)
        .await?
        .ok_or_else(|| JobError::Invalid(format!("entity {} not found", selection.entity_id)))?;
    let until = match &selection.snapshot {
        None => None,
        Some(id) => {
            let keys = repo.snapshot_keys(entity.id.as_str()).await?;
            let key = keys
                .into_iter()
                .find(|k| k.rsplit('/').next() == Some(id.as_str()))
                .ok_or_else(|| JobError::Invalid(format!("snapshot {id} not found")))?;
            Some(key)
        }
    };
    let view = repo.view(entity.id.as_str(), until.as_deref()).await?;
    let whole = selection.items.is_empty() && selection.folders.is_empty();
    let mut entries: Vec<CatalogEntry> = view
        .into_values()
        .filter(|e| {
            whole
                || selection.items.contains(&e.item)
                || selection.folders.iter().any(|f| {
                    let path = folder_of(e);
                    path == f || (path.starts_with(f.as_str()) && path.as_bytes().get(f.len()) == Some(&b'/'))
                })
        })
        .collect();
    entries.sort_by(|a, b| folder_of(a).cmp(folder_of(b)).then_with(|| a.item.cmp(&b.item)));
    Ok((entity, entries))
}

/// A Lambda invocation's deadline (milliseconds since the epoch) as an instant of this process.
pub fn deadline_of(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// The SQS batch loop of a job function: each message is one job; a
/// retryable failure is reported so that SQS delivers it again.
pub async fn handle_batch(
    ctx: &Context,
    event: SqsEvent,
    deadline: Instant,
    cap: Option<Duration>,
    kind: JobKind,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let budget = Budget::new(deadline, cap);
        let result = match serde_json::from_str::<JobMessage>(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => run(ctx, &message, &budget, kind).await,
            Err(e) => Err(JobError::Malformed(e.to_string())),
        };
        match result {
            Ok(()) => info!(message_id = %id, "job message handled"),
            Err(e) if e.is_retryable() => {
                warn!(message_id = %id, error = %e, "job failed; will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            Err(e) => warn!(message_id = %id, error = %e, "job failed for good"),
        }
    }
    response
}

/// The whole `main` of a job Lambda (restore, export, purge): the context
/// built once at cold start, then SQS batches of `kind` jobs, each under the
/// invocation's deadline.
pub async fn serve(kind: JobKind) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let ctx = std::sync::Arc::new(Context::from_env().await?);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
            let ctx = ctx.clone();
            async move {
                let deadline = deadline_of(event.context.deadline);
                let cap = ctx.config.job_time_budget;
                Ok::<SqsBatchResponse, lambda_runtime::Error>(
                    handle_batch(&ctx, event.payload, deadline, cap, kind).await,
                )
            }
        },
    ))
    .await
}
