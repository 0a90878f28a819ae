//! Recovery: snapshots, point-in-time browse, granular search, restore and
//! export jobs, and export downloads. Every read goes through the account of
//! the authenticated principal: its repository, its entities, its jobs.

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, JsonBody, QueryParams};
use crate::model::{EntityId, EntityKind, Job, JobId, JobKind, JobStatus, Selection};
use crate::ops::browse::{self, BrowseError, FolderInfo, Found, History, Matcher, SearchQuery, SnapshotInfo};
use crate::ops::jobs::JobMessage;
use crate::repo::Repo;
use crate::secrets::{constant_time_eq, sha256_hex};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Histories of a warm API function: about 400 bytes a row, so a million rows
/// take some 400 MB (the function has 1.5 GB).
static HISTORIES: std::sync::LazyLock<browse::HistoryCache> =
    std::sync::LazyLock::new(|| browse::HistoryCache::new(1_000_000));

/// How long a presigned link to an export's zip works once handed out.
const PRESIGNED_SECS: u64 = 15 * 60;

impl From<BrowseError> for ApiError {
    fn from(e: BrowseError) -> Self {
        match e {
            BrowseError::NoSnapshot(_) => ApiError::not_found("snapshot"),
            BrowseError::Invalid(m) => ApiError::bad_request("invalid_query", m),
            BrowseError::Repo(e) if e.is_retryable() => ApiError::unavailable("repository", &e),
            BrowseError::Repo(e) => ApiError::internal("repository", &e),
        }
    }
}

async fn repo(ctx: &AppState, principal: &Principal) -> Result<Repo, ApiError> {
    Repo::open(
        ctx.repo_store.clone(),
        ctx.repo_keys.as_ref(),
        principal.account_id.as_str(),
    )
    .await
    .map_err(|e| ApiError::unavailable("repository", &e))
}

/// The entity (it must be the principal's) and its history.
async fn entity_history(ctx: &AppState, principal: &Principal, id: &str) -> Result<std::sync::Arc<History>, ApiError> {
    let entity = ctx
        .state
        .entity(&principal.account_id, &EntityId(id.to_string()))
        .await?
        .ok_or_else(|| ApiError::not_found("entity"))?;
    let repo = repo(ctx, principal).await?;
    Ok(HISTORIES.get(&repo, entity.id.as_str()).await?)
}

fn offset(cursor: Option<&str>) -> Result<usize, ApiError> {
    match cursor {
        None => Ok(0),
        Some(c) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave")),
    }
}

fn next_cursor(offset: usize, taken: usize, total: usize) -> Option<String> {
    (offset + taken < total)
        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode((offset + taken).to_string()))
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    pub items: Vec<SnapshotInfo>,
}

/// The entity's snapshots, oldest first.
#[utoipa::path(get, path = "/v1/entities/{id}/snapshots", tag = "recovery", params(("id" = String, Path)), responses((status = 200, body = SnapshotList)), security(("session" = [])))]
pub async fn snapshots(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SnapshotList>, ApiError> {
    let history = entity_history(&ctx, &principal, &id).await?;
    Ok(Json(SnapshotList {
        items: history.snapshots.clone(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct FolderList {
    pub snapshot: String,
    pub items: Vec<FolderInfo>,
}

/// The folder tree of the entity as of a snapshot (`latest` for the last).
#[utoipa::path(get, path = "/v1/entities/{id}/snapshots/{snapshot}/folders", tag = "recovery", params(("id" = String, Path), ("snapshot" = String, Path)), responses((status = 200, body = FolderList)), security(("session" = [])))]
pub async fn folders(
    State(ctx): State<AppState>,
    principal: Principal,
    Path((id, snapshot)): Path<(String, String)>,
) -> Result<Json<FolderList>, ApiError> {
    let history = entity_history(&ctx, &principal, &id).await?;
    let k = history.snapshot_index(Some(&snapshot))?;
    Ok(Json(FolderList {
        snapshot: history.snapshots[k as usize].id.clone(),
        items: history.folders(k),
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct ItemsQuery {
    /// The folder path, e.g. `Inbox/Projects`.
    pub folder: String,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// One item as browsing shows it.
#[derive(Serialize, ToSchema)]
pub struct ItemInfo {
    pub item: String,
    pub folder: String,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    pub received: Option<chrono::DateTime<Utc>>,
    pub size: u64,
    pub has_attachments: bool,
    pub sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct ItemList {
    pub snapshot: String,
    pub total: usize,
    pub items: Vec<ItemInfo>,
    pub next_cursor: Option<String>,
}

/// The items of a folder as of a snapshot, newest first, with paging.
#[utoipa::path(get, path = "/v1/entities/{id}/snapshots/{snapshot}/items", tag = "recovery", params(("id" = String, Path), ("snapshot" = String, Path), ItemsQuery), responses((status = 200, body = ItemList)), security(("session" = [])))]
pub async fn items(
    State(ctx): State<AppState>,
    principal: Principal,
    Path((id, snapshot)): Path<(String, String)>,
    QueryParams(q): QueryParams<ItemsQuery>,
) -> Result<Json<ItemList>, ApiError> {
    let history = entity_history(&ctx, &principal, &id).await?;
    let k = history.snapshot_index(Some(&snapshot))?;
    let rows = history.items_in(k, &q.folder);
    let start = offset(q.cursor.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items: Vec<ItemInfo> = rows
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| ItemInfo {
            item: r.item.clone(),
            folder: history.folder_of(r).to_string(),
            subject: r.subject.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            received: r.received.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            size: r.size,
            has_attachments: r.attachments,
            sha256: hex::encode(r.sha256),
        })
        .collect();
    Ok(Json(ItemList {
        snapshot: history.snapshots[k as usize].id.clone(),
        total: rows.len(),
        next_cursor: next_cursor(start, items.len(), rows.len()),
        items,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// Items found (over every entity searched).
    pub total: usize,
    pub items: Vec<Found>,
    pub next_cursor: Option<String>,
    /// Entities searched.
    pub entities: usize,
}

/// Granular search over one entity or every entity of a kind.
#[utoipa::path(get, path = "/v1/search", tag = "recovery", params(SearchQuery), responses((status = 200, body = SearchResults)), security(("session" = [])))]
pub async fn search(
    State(ctx): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    let matcher = Matcher::new(&q)?;
    let start = offset(q.cursor.as_deref())?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let entity_ids: Vec<EntityId> = match &q.entity_id {
        Some(id) => {
            let entity = ctx
                .state
                .entity(&principal.account_id, &EntityId(id.clone()))
                .await?
                .ok_or_else(|| ApiError::not_found("entity"))?;
            vec![entity.id]
        }
        None => {
            if q.snapshot.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "snapshot needs entity_id: snapshots belong to one entity",
                ));
            }
            let kind = match q.kind.as_deref() {
                None => None,
                Some(k) => Some(
                    serde_json::from_value::<EntityKind>(serde_json::json!(k))
                        .map_err(|_| ApiError::bad_request("invalid_query", "kind is mailbox, onedrive or site"))?,
                ),
            };
            let filter = crate::state::EntityFilter {
                kind,
                ..Default::default()
            };
            ctx.state
                .all_entities(&principal.account_id, &filter)
                .await?
                .into_iter()
                .map(|e| e.id)
                .collect()
        }
    };
    let repo = repo(&ctx, &principal).await?;
    let keep = start + limit;
    let mut best = Vec::new();
    let mut total = 0;
    // Several histories load at once (their decoding runs on blocking threads).
    let repo = &repo;
    let mut loaded = futures::stream::iter(entity_ids.clone())
        .map(|id: EntityId| async move { HISTORIES.get(repo, id.as_str()).await })
        .buffer_unordered(4);
    while let Some(history) = loaded.next().await {
        let history = history?;
        if history.snapshots.is_empty() {
            continue;
        }
        let at = match &q.snapshot {
            Some(s) => Some(history.snapshot_index(Some(s))?),
            None => None,
        };
        let found = browse::search_history(&history, &matcher, at);
        total += found.len();
        best = browse::merge_results(best, found, keep);
    }
    let items: Vec<Found> = best.into_iter().skip(start).collect();
    Ok(Json(SearchResults {
        total,
        next_cursor: next_cursor(start, items.len(), total),
        items,
        entities: entity_ids.len(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct RestoreRequest {
    pub entity_id: EntityId,
    /// A snapshot id; the latest when absent.
    pub snapshot: Option<String>,
    #[serde(default)]
    pub items: Vec<String>,
    #[serde(default)]
    pub folders: Vec<String>,
    /// Another mailbox of the same connection; the entity itself when absent.
    pub target_entity_id: Option<EntityId>,
    /// The new folder that receives the restore; `Restored <date time>` when absent.
    pub folder_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ExportRequest {
    pub selections: Vec<Selection>,
    /// Who gets the download link by e-mail; the requesting admin when absent.
    pub notify: Option<Vec<String>>,
    /// How long the link works, 1 to 7 days (the deployment's default when absent).
    pub link_days: Option<u64>,
}

async fn check_selection(ctx: &AppState, principal: &Principal, s: &Selection) -> Result<(), ApiError> {
    let entity = ctx
        .state
        .entity(&principal.account_id, &s.entity_id)
        .await?
        .ok_or_else(|| ApiError::not_found("entity"))?;
    if let Some(snapshot) = &s.snapshot {
        let repo = repo(ctx, principal).await?;
        repo.snapshot(entity.id.as_str(), snapshot)
            .await
            .map_err(|_| ApiError::not_found("snapshot"))?;
    }
    Ok(())
}

pub(super) fn new_job(principal: &Principal, kind: JobKind, selections: Vec<Selection>) -> Job {
    let now = Utc::now();
    Job {
        id: JobId::random(),
        account_id: principal.account_id.clone(),
        kind,
        status: JobStatus::Queued,
        created_by: principal.admin_id.clone(),
        created_at: now,
        updated_at: now,
        selections,
        target_entity_id: None,
        folder_name: None,
        link_expiry_secs: 0,
        notify: Vec::new(),
        total: 0,
        done: 0,
        failed: 0,
        bytes: 0,
        failures: Vec::new(),
        error: None,
        result: None,
        outcome: None,
        invocations: 0,
        lease_until: None,
    }
}

/// Stores the job and sends it to its function's queue.
pub(super) async fn enqueue(ctx: &AppState, job: &Job) -> Result<(), ApiError> {
    let queue = match job.kind {
        JobKind::Restore => ctx.restore_queue.as_ref(),
        JobKind::Export => ctx.export_queue.as_ref(),
        JobKind::Purge => ctx.purge_queue.as_ref(),
    }
    .ok_or_else(|| ApiError::internal("job queue", &"the job queue is not configured"))?;
    ctx.state.put_job(job).await?;
    let message = JobMessage {
        account_id: job.account_id.clone(),
        job_id: job.id.clone(),
    };
    queue
        .send(&serde_json::to_value(&message).unwrap_or_default())
        .await
        .map_err(|e| ApiError::unavailable("job queue", &e))
}

/// Starts a restore: into a new folder of the same mailbox or another of the same connection.
#[utoipa::path(post, path = "/v1/restores", tag = "recovery", request_body = RestoreRequest, responses((status = 202, body = Job)), security(("session" = [])))]
pub async fn create_restore(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let selection = Selection {
        entity_id: req.entity_id,
        snapshot: req.snapshot,
        items: req.items,
        folders: req.folders,
    };
    check_selection(&ctx, &principal, &selection).await?;
    let source = ctx
        .state
        .entity(&principal.account_id, &selection.entity_id)
        .await?
        .ok_or_else(|| ApiError::not_found("entity"))?;
    if let Some(target) = &req.target_entity_id {
        let target = ctx
            .state
            .entity(&principal.account_id, target)
            .await?
            .ok_or_else(|| ApiError::not_found("target entity"))?;
        if target.connection_id != source.connection_id || target.kind != source.kind {
            return Err(ApiError::bad_request(
                "invalid_target",
                "the target must be an entity of the same kind and connection",
            ));
        }
    }
    let folder_name = req.folder_name.map(|n| n.trim().to_string());
    if let Some(name) = &folder_name
        && (name.is_empty() || name.len() > 255 || name.contains('/') || name.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_folder_name",
            "the folder name must be 1 to 255 bytes, without '/' or control characters",
        ));
    }
    let mut job = new_job(&principal, JobKind::Restore, vec![selection]);
    job.target_entity_id = req.target_entity_id;
    job.folder_name = Some(folder_name.unwrap_or_else(|| crate::ops::restore::default_folder_name(job.created_at)));
    enqueue(&ctx, &job).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Starts an export: a zip of the selections, its link e-mailed when ready.
#[utoipa::path(post, path = "/v1/exports", tag = "recovery", request_body = ExportRequest, responses((status = 202, body = Job)), security(("session" = [])))]
pub async fn create_export(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<ExportRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    if req.selections.is_empty() || req.selections.len() > 1000 {
        return Err(ApiError::bad_request("invalid_selection", "1 to 1000 selections"));
    }
    for s in &req.selections {
        check_selection(&ctx, &principal, s).await?;
    }
    let notify = match req.notify {
        Some(list) => list,
        None => {
            let (admin, _, _) = ctx
                .state
                .admin(&principal.account_id, &principal.admin_id)
                .await?
                .ok_or_else(|| ApiError::not_found("admin"))?;
            vec![admin.email]
        }
    };
    if notify.len() > 20 || notify.iter().any(|a| !a.contains('@') || a.len() > 254) {
        return Err(ApiError::bad_request("invalid_notify", "up to 20 e-mail addresses"));
    }
    let ttl = match req.link_days {
        Some(d) if (1..=7).contains(&d) => Duration::from_secs(d * 86_400),
        Some(_) => return Err(ApiError::bad_request("invalid_link_days", "link_days is 1 to 7")),
        None => ctx.config.export_link_ttl,
    };
    let mut job = new_job(&principal, JobKind::Export, req.selections);
    job.notify = notify;
    job.link_expiry_secs = ttl.as_secs();
    enqueue(&ctx, &job).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<Job>,
}

/// The account's restore and export jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "recovery", responses((status = 200, body = JobList)), security(("session" = [])))]
pub async fn jobs(State(ctx): State<AppState>, principal: Principal) -> Result<Json<JobList>, ApiError> {
    Ok(Json(JobList {
        items: ctx.state.jobs(&principal.account_id).await?,
    }))
}

/// One job with its progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "recovery", params(("id" = String, Path)), responses((status = 200, body = Job)), security(("session" = [])))]
pub async fn job(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job = ctx
        .state
        .job(&principal.account_id, &JobId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job))
}

#[derive(Serialize, ToSchema)]
pub struct DownloadLink {
    /// A presigned GET of the zip, valid for 15 minutes.
    pub url: String,
    pub expires_at: chrono::DateTime<Utc>,
}

async fn presigned(ctx: &AppState, job: &Job) -> Result<DownloadLink, ApiError> {
    let result = match (&job.kind, &job.status, &job.result) {
        (JobKind::Export, JobStatus::Done, Some(r)) => r,
        _ => return Err(ApiError::conflict("not_ready", "the export is not finished")),
    };
    if result.expires_at <= Utc::now() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "the download link has expired",
        ));
    }
    let secs = PRESIGNED_SECS.min(u64::try_from((result.expires_at - Utc::now()).num_seconds()).unwrap_or(0));
    let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(secs.max(1)))
        .map_err(|e| ApiError::internal("presign", &e))?;
    let request = ctx
        .s3
        .get_object()
        .bucket(&ctx.config.data_bucket)
        .key(&result.key)
        .response_content_disposition(format!("attachment; filename=\"strata-export-{}.zip\"", job.id))
        .presigned(config)
        .await
        .map_err(|e| ApiError::internal("presign", &e))?;
    Ok(DownloadLink {
        url: request.uri().to_string(),
        expires_at: Utc::now() + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(0)),
    })
}

/// A fresh presigned link to a finished export's zip.
#[utoipa::path(get, path = "/v1/jobs/{id}/download", tag = "recovery", params(("id" = String, Path)), responses((status = 200, body = DownloadLink), (status = 409, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn download(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DownloadLink>, ApiError> {
    let job = ctx
        .state
        .job(&principal.account_id, &JobId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(presigned(&ctx, &job).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct TokenQuery {
    pub token: String,
}

/// The link of the export e-mail: checks its token and expiry, then
/// redirects to a short-lived presigned GET of the zip.
#[utoipa::path(get, path = "/v1/downloads/{account}/{job}", tag = "recovery", params(("account" = String, Path), ("job" = String, Path), TokenQuery), responses((status = 302, description = "to the zip"), (status = 404, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)))]
pub async fn download_by_token(
    State(ctx): State<AppState>,
    super::auth::ClientIp(ip): super::auth::ClientIp,
    Path((account, job)): Path<(String, String)>,
    QueryParams(q): QueryParams<TokenQuery>,
) -> Result<Response, ApiError> {
    let job = ctx
        .state
        .job(&crate::model::AccountId(account), &JobId(job))
        .await?
        .ok_or_else(|| ApiError::not_found("download"))?;
    let expected = job.result.as_ref().map(|r| r.token_sha256.clone()).unwrap_or_default();
    let given = sha256_hex(&q.token);
    // Same answer for a wrong token and a missing job: a link reveals nothing.
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(ApiError::not_found("download"));
    }
    let link = presigned(&ctx, &job).await?;
    super::audit::record(
        &ctx,
        &job.account_id,
        crate::model::Actor::Anonymous { email: None },
        ip,
        "download",
        Some(job.id.to_string()),
        "success",
        serde_json::json!({ "via": "e-mailed link" }),
    )
    .await;
    Ok(Redirect::to(&link.url).into_response())
}
