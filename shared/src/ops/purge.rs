//! Right to erasure (docs/design.md §3.9): the owner purges an entity's
//! backed-up data. The entity must not be active (paused, discovered or
//! gone: no backup of it is scheduled). While the purge runs it holds the
//! backup lease of *every* entity of the account, so that no backup writes
//! to the repository meanwhile: a backup of another entity that loaded the
//! index before the purge could otherwise deduplicate against a chunk the
//! purge erases and commit a snapshot naming it. Backups that ask for their
//! lease meanwhile find it busy and are retried by SQS later.
//!
//! Then the repository erases the entity's objects and the chunks only it
//! used (`Repo::purge_entity`, every version of each object: the bucket is
//! versioned); its backup cursor goes (a later activation backs it up
//! afresh); the zips of exports that held it are erased and their links
//! expire; the entity record stays, `discovered` (no longer protected), so
//! that discovery does not take it for a new one.

use crate::context::Context;
use crate::model::{AccountId, Entity, EntityId, EntityStatus, JobId, JobKind, JobStatus};
use crate::repo::{BlobStore, PurgePlan, PurgeReport, Repo, RepoError, StoreError};
use crate::state::{EntityFilter, RequestClaim, StateError};
use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{info, warn};
use utoipa::ToSchema;

/// How often a purge job looks again while a backup or job of the account runs.
pub const BUSY_POLL: Duration = Duration::from_secs(2);
/// How long a purge holds the account's backup leases: longer than the purge
/// function's timeout (15 minutes), so a purge never outlives them; backups
/// resume that long after a purge that crashed.
pub const PURGE_LEASE: Duration = Duration::from_secs(16 * 60);
/// Leases claimed (and released) at once.
const LEASE_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("entity not found")]
    NotFound,
    #[error("the entity is active: pause it first, so that no backup of it runs during or after the purge")]
    Active,
    #[error("a backup of {0} (or another purge) is running; try again when it has finished")]
    BackupRunning(EntityId),
    #[error("a restore or export ({0}) is reading the repository; try again when it has finished")]
    JobRunning(JobId),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl PurgeError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::BackupRunning(_) | Self::JobRunning(_) => true,
            Self::State(e) => e.is_retryable(),
            Self::Repo(e) => e.is_retryable(),
            Self::NotFound | Self::Active => false,
        }
    }
}

impl From<StoreError> for PurgeError {
    fn from(e: StoreError) -> Self {
        Self::Repo(RepoError::Store(e))
    }
}

/// What a purge did: in the repository, to exports, and to old object versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PurgeOutcome {
    pub entity_id: EntityId,
    pub repository: PurgeReport,
    /// Zips of exports that held the entity, erased (their links now answer 410).
    pub exports_deleted: u64,
    /// Object versions erased (current and older ones of every deleted object).
    pub versions_erased: u64,
    /// Versions that S3 Object Lock keeps until their retention ends (then the
    /// bucket's lifecycle removes them); 0 without Object Lock.
    pub versions_retained: u64,
}

/// What purging the entity would delete; changes nothing.
pub async fn preview(ctx: &Context, account: &AccountId, entity: &EntityId) -> Result<PurgePlan, PurgeError> {
    let entity = purgeable(ctx, account, entity).await?;
    let repo = Repo::open(ctx.repo_store.clone(), ctx.repo_keys.as_ref(), account.as_str()).await?;
    Ok(repo.purge_plan(entity.id.as_str()).await?)
}

/// A purge job (`functions/purge`, fed by the purge queue once the owner
/// confirmed): erases the job's entity and finishes the job with the outcome.
/// While a backup, restore or export runs, it waits (trying again every
/// [`BUSY_POLL`]) until its time budget ends, then leaves the job to SQS's
/// next delivery; an entity gone or active again fails the job.
pub async fn run_job(
    ctx: &Context,
    job: &crate::model::Job,
    budget: &crate::ops::backup::Budget,
) -> Result<(), crate::ops::jobs::JobError> {
    let Some(selection) = job.selections.first() else {
        return Err(crate::ops::jobs::JobError::Invalid(
            "a purge job names its entity".into(),
        ));
    };
    let outcome = loop {
        match purge_entity(ctx, &job.account_id, &selection.entity_id).await {
            Err(e @ (PurgeError::BackupRunning(_) | PurgeError::JobRunning(_)))
                if std::time::Instant::now() + BUSY_POLL < budget.deadline =>
            {
                info!(job = %job.id, reason = %e, "purge waits");
                tokio::time::sleep(BUSY_POLL).await;
            }
            other => break other?,
        }
    };
    info!(job = %job.id, entity = %selection.entity_id, versions = outcome.versions_erased, "purge done");
    let value = serde_json::to_value(&outcome).unwrap_or_default();
    let now = Utc::now();
    ctx.state
        .update_job(&job.account_id, &job.id, |j| {
            j.total = 1;
            j.done = 1;
            j.status = JobStatus::Done;
            j.outcome = Some(value.clone());
            j.lease_until = None;
            j.updated_at = now;
            true
        })
        .await?;
    Ok(())
}

/// Purges the entity's backed-up data (see the module doc); run by a purge
/// job in `functions/purge` (docs/design.md §3.9).
pub async fn purge_entity(ctx: &Context, account: &AccountId, entity: &EntityId) -> Result<PurgeOutcome, PurgeError> {
    purgeable(ctx, account, entity).await?;
    let now = Utc::now();
    // A job reading the repository could find a pack gone under it (and an
    // export of this entity would write its data into a new zip).
    if let Some(job) = ctx.state.jobs(account).await?.into_iter().find(|j| {
        j.kind != JobKind::Purge
            && matches!(j.status, JobStatus::Queued | JobStatus::Running)
            && j.lease_until.is_some_and(|l| l > now)
    }) {
        return Err(PurgeError::JobRunning(job.id));
    }
    let leases = hold_backup_leases(ctx, account).await?;
    // Activated between the first look and the leases? Then it is not ours to purge.
    let result = match purgeable(ctx, account, entity).await {
        Ok(entity) => erase(ctx, account, &entity).await,
        Err(e) => Err(e),
    };
    release(ctx, account, &leases).await;
    result
}

/// The entity, if it exists in the account and is not active.
pub async fn purgeable(ctx: &Context, account: &AccountId, id: &EntityId) -> Result<Entity, PurgeError> {
    let entity = ctx.state.entity(account, id).await?.ok_or(PurgeError::NotFound)?;
    if entity.status == EntityStatus::Active {
        return Err(PurgeError::Active);
    }
    Ok(entity)
}

/// Claims the backup lease of every entity of the account; if one is held
/// (a backup runs), gives back what it claimed and says which.
async fn hold_backup_leases(ctx: &Context, account: &AccountId) -> Result<Vec<String>, PurgeError> {
    let ids = ctx
        .state
        .all_entities(account, &EntityFilter::default())
        .await?
        .into_iter()
        .map(|e| e.id);
    let claims: Vec<(EntityId, Result<RequestClaim, StateError>)> = futures::stream::iter(ids)
        .map(|id| async move {
            let claim = ctx.state.claim_request(account, &lease_of(&id), PURGE_LEASE).await;
            (id, claim)
        })
        .buffer_unordered(LEASE_CONCURRENCY)
        .collect()
        .await;
    let mut held = Vec::new();
    let mut refusal = None;
    for (id, claim) in claims {
        match claim {
            Ok(RequestClaim::Claimed) => held.push(lease_of(&id)),
            Ok(_) => refusal = refusal.or(Some(PurgeError::BackupRunning(id))),
            Err(e) => refusal = refusal.or(Some(e.into())),
        }
    }
    if let Some(refusal) = refusal {
        release(ctx, account, &held).await;
        return Err(refusal);
    }
    Ok(held)
}

fn lease_of(entity: &EntityId) -> String {
    format!("lease-backup-{entity}")
}

/// Gives the leases back; one that cannot be lapses with [`PURGE_LEASE`].
async fn release(ctx: &Context, account: &AccountId, leases: &[String]) {
    futures::stream::iter(leases)
        .for_each_concurrent(LEASE_CONCURRENCY, |lease| async move {
            if let Err(e) = ctx.state.finish_request(account, lease, false).await {
                warn!(lease = %lease, error = %e, "purge lease not released; it lapses");
            }
        })
        .await;
}

async fn erase(ctx: &Context, account: &AccountId, entity: &Entity) -> Result<PurgeOutcome, PurgeError> {
    let store = Arc::new(ErasingStore::new(
        ctx.repo_store.clone(),
        ctx.s3.clone(),
        ctx.config.data_bucket.clone(),
    ));
    let repo = Repo::open(store.clone(), ctx.repo_keys.as_ref(), account.as_str()).await?;
    let repository = repo.purge_entity(entity.id.as_str()).await?;
    // The cursor points past data that is gone: if the entity is ever
    // activated again, its first backup reads it whole.
    ctx.state.delete_cursor(account, &entity.id).await?;

    let mut exports_deleted = 0;
    let now = Utc::now();
    let exports = ctx
        .state
        .jobs(account)
        .await?
        .into_iter()
        .filter(|j| j.kind == JobKind::Export && j.selections.iter().any(|s| s.entity_id == entity.id));
    for job in exports {
        let key = job
            .result
            .as_ref()
            .map_or_else(|| format!("exports/{account}/{}.zip", job.id), |r| r.key.clone());
        let existed = store.exists(&key).await?;
        store.delete(&key).await?;
        if existed {
            exports_deleted += 1;
        }
        if job.result.as_ref().is_some_and(|r| r.expires_at > now) {
            // Its links now answer "expired" rather than a missing object.
            ctx.state
                .update_job(account, &job.id, |j| match &mut j.result {
                    Some(r) if r.expires_at > now => {
                        r.expires_at = now;
                        true
                    }
                    _ => false,
                })
                .await?;
        }
    }

    ctx.state
        .update_entity(account, &entity.id, |e| {
            e.last_backup_at = None;
            match e.status {
                // Activated meanwhile: left as the admin wants it (its next backup starts afresh).
                EntityStatus::Active => {}
                // If it comes back to the source, it comes back unprotected.
                EntityStatus::Gone => e.status_before_gone = Some(EntityStatus::Discovered),
                EntityStatus::Discovered | EntityStatus::Paused => e.status = EntityStatus::Discovered,
            }
            true
        })
        .await?;
    let outcome = PurgeOutcome {
        entity_id: entity.id.clone(),
        repository,
        exports_deleted,
        versions_erased: store.erased.load(Ordering::Relaxed),
        versions_retained: store.retained.load(Ordering::Relaxed),
    };
    info!(
        account = %account,
        entity = %entity.id,
        chunks_deleted = outcome.repository.chunks_deleted,
        packs_rewritten = outcome.repository.packs_rewritten,
        versions_erased = outcome.versions_erased,
        "entity purged"
    );
    Ok(outcome)
}

/// The data bucket is versioned (old versions of replaced or deleted
/// objects stay 30 days): a plain DELETE only hides an object behind a
/// delete marker. For erasure, deleting an object deletes every version of
/// it: the older ones first and the current one last, so that an object
/// stays listed (and a rerun finds it) until it is wholly gone. A version
/// that S3 Object Lock protects cannot be deleted: it is counted, and the
/// object is hidden behind a delete marker; the lifecycle removes it once
/// its retention ends.
struct ErasingStore {
    inner: Arc<dyn BlobStore>,
    s3: aws_sdk_s3::Client,
    bucket: String,
    erased: AtomicU64,
    retained: AtomicU64,
}

impl ErasingStore {
    fn new(inner: Arc<dyn BlobStore>, s3: aws_sdk_s3::Client, bucket: String) -> Self {
        Self {
            inner,
            s3,
            bucket,
            erased: AtomicU64::new(0),
            retained: AtomicU64::new(0),
        }
    }

    /// Every version (and delete marker) of exactly `key`: its id and whether it is the current one.
    async fn versions(&self, key: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker)
                .set_version_id_marker(version_marker)
                .send()
                .await
                .map_err(|e| unavailable(key, e))?;
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id(), v.is_latest()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id(), m.is_latest()));
            for (k, id, latest) in versions.chain(markers) {
                if let (Some(k), Some(id)) = (k, id)
                    && k == key
                {
                    out.push((id.to_string(), latest.unwrap_or(false)));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.inner.list(key).await?.iter().any(|k| k == key))
    }
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    key: &str,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> StoreError {
    StoreError::Unavailable(format!("erase {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
}

#[async_trait]
impl BlobStore for ErasingStore {
    async fn put_new(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.inner.put_new(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list_sized(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut versions = self.versions(key).await?;
        if versions.is_empty() {
            // Nothing stored under the key (or a store without versions).
            return self.inner.delete(key).await;
        }
        // Older versions first, the current one last.
        versions.sort_by_key(|(_, current)| *current);
        let mut kept = false;
        for (id, _) in versions {
            match self
                .s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .version_id(&id)
                .send()
                .await
            {
                Ok(_) => {
                    self.erased.fetch_add(1, Ordering::Relaxed);
                }
                // Object Lock: kept until its retention ends.
                Err(e) if e.code() == Some("AccessDenied") => {
                    warn!(key, version = %id, "version kept by object lock");
                    self.retained.fetch_add(1, Ordering::Relaxed);
                    kept = true;
                }
                Err(e) => return Err(unavailable(key, e)),
            }
        }
        if kept {
            // At least gone for every reader.
            self.inner.delete(key).await?;
        }
        Ok(())
    }
}
