//! Right to erasure, in two steps: `POST /v1/entities/{id}/purge` says what
//! would be deleted and gives a confirmation token (valid 10 minutes, only
//! its SHA-256 stored); `POST /v1/entities/{id}/purge/confirm` with that
//! token queues a purge job (`functions/purge`, `ops::purge`, docs/design.md
//! §3.9) whose outcome says what was erased. The owner only.

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::model::{EntityId, Job, JobKind, Selection};
use crate::ops::purge::{self, PurgeError};
use crate::repo::PurgePlan;
use crate::secrets::{constant_time_eq, random_token, sha256_hex};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long a confirmation token holds.
pub const PURGE_CONFIRM_MINUTES: i64 = 10;

impl From<PurgeError> for ApiError {
    fn from(e: PurgeError) -> Self {
        match e {
            PurgeError::NotFound => ApiError::not_found("entity"),
            PurgeError::Active => ApiError::conflict("entity_active", e.to_string()),
            PurgeError::BackupRunning(_) | PurgeError::JobRunning(_) => {
                let mut busy = ApiError::conflict("busy", e.to_string());
                busy.retry_after_secs = Some(30);
                busy
            }
            PurgeError::State(e) => e.into(),
            PurgeError::Repo(e) if e.is_retryable() => ApiError::unavailable("purge", &e),
            PurgeError::Repo(e) => ApiError::internal("purge", &e),
        }
    }
}

/// What a purge would delete, and the token that confirms it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeRequested {
    pub entity_id: EntityId,
    pub would_delete: PurgePlan,
    /// Send it to `POST /v1/entities/{id}/purge/confirm` before `expires_at`.
    pub confirmation_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PurgeConfirm {
    /// The `confirmation_token` of `POST /v1/entities/{id}/purge`.
    pub token: String,
}

/// Asks to purge an entity's backed-up data: what would be deleted, and a
/// confirmation token valid 10 minutes. The entity must not be active.
#[utoipa::path(post, path = "/v1/entities/{id}/purge", tag = "entities", params(("id" = String, Path)), responses((status = 200, body = PurgeRequested), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("session" = [])))]
pub async fn request(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PurgeRequested>, ApiError> {
    let entity = EntityId(id);
    let would_delete = purge::preview(&ctx, &principal.account_id, &entity).await?;
    let token = random_token();
    let expires_at = Utc::now() + Duration::minutes(PURGE_CONFIRM_MINUTES);
    ctx.state
        .put_purge_token(&principal.account_id, &entity, &sha256_hex(&token), expires_at)
        .await?;
    Ok(Json(PurgeRequested {
        entity_id: entity,
        would_delete,
        confirmation_token: token,
        expires_at,
    }))
}

/// Confirms the purge: a purge job erases the entity's backed-up data (its
/// snapshots, catalog and every chunk no other entity uses, and the exports
/// that held it; irreversible); follow it at `GET /v1/jobs/{id}`.
#[utoipa::path(post, path = "/v1/entities/{id}/purge/confirm", tag = "entities", params(("id" = String, Path)), request_body = PurgeConfirm, responses((status = 202, body = Job, description = "the purge job; its `outcome` says what was erased"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("session" = [])))]
pub async fn confirm(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PurgeConfirm>,
) -> Result<Response, ApiError> {
    let entity = EntityId(id);
    if ctx.state.entity(&principal.account_id, &entity).await?.is_none() {
        return Err(ApiError::not_found("entity"));
    }
    let Some((expected, expires_at)) = ctx.state.purge_token(&principal.account_id, &entity).await? else {
        return Err(ApiError::bad_request(
            "no_purge_requested",
            "ask for the purge first: POST /v1/entities/{id}/purge",
        ));
    };
    if !constant_time_eq(expected.as_bytes(), sha256_hex(&req.token).as_bytes()) {
        return Err(ApiError::bad_request(
            "invalid_token",
            "the confirmation token does not match the last purge request",
        ));
    }
    if expires_at <= Utc::now() {
        return Err(ApiError::bad_request(
            "token_expired",
            "the confirmation token has expired; ask for the purge again",
        ));
    }
    purge::purgeable(&ctx, &principal.account_id, &entity).await?;
    let selection = Selection {
        entity_id: entity.clone(),
        snapshot: None,
        items: Vec::new(),
        folders: Vec::new(),
    };
    let job = super::recover::new_job(&principal, JobKind::Purge, vec![selection]);
    super::recover::enqueue(&ctx, &job).await?;
    // Used: a second confirmation needs a new request.
    if let Err(e) = ctx.state.delete_purge_token(&principal.account_id, &entity).await {
        tracing::warn!(error = %e, entity = %entity, "purge token not deleted; it expires");
    }
    let note = serde_json::json!({ "job_id": job.id });
    Ok(super::audit::noted((StatusCode::ACCEPTED, Json(job)), note))
}
