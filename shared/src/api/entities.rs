//! Protected entities: list with filters and paging, activate (one or all),
//! pause and resume; and the account's activity log.

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, QueryParams};
use crate::model::{Activity, ConnectionId, Entity, EntityId, EntityKind, EntityStatus};
use crate::state::EntityFilter;
use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    pub kind: Option<EntityKind>,
    pub status: Option<EntityStatus>,
    pub connection_id: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EntityList {
    pub items: Vec<Entity>,
    pub next_cursor: Option<String>,
}

/// The account's entities.
#[utoipa::path(get, path = "/v1/entities", tag = "entities", params(ListQuery), responses((status = 200, body = EntityList)), security(("session" = [])))]
pub async fn list(
    State(ctx): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<EntityList>, ApiError> {
    let filter = EntityFilter {
        kind: q.kind,
        status: q.status,
        connection_id: q.connection_id.map(ConnectionId),
    };
    let page = ctx
        .state
        .entities(
            &principal.account_id,
            &filter,
            q.limit.unwrap_or(100),
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(EntityList {
        items: page.items,
        next_cursor: page.next,
    }))
}

/// One entity.
#[utoipa::path(get, path = "/v1/entities/{id}", tag = "entities", params(("id" = String, Path)), responses((status = 200, body = Entity), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn get_one(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Entity>, ApiError> {
    let entity = ctx
        .state
        .entity(&principal.account_id, &EntityId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("entity"))?;
    Ok(Json(entity))
}

#[derive(Clone, Copy)]
enum Transition {
    Activate,
    Pause,
    Resume,
}

impl Transition {
    /// The new status, or why the move is not allowed. `Ok(None)`: already there.
    fn apply(self, from: EntityStatus) -> Result<Option<EntityStatus>, &'static str> {
        use EntityStatus::*;
        match (self, from) {
            (Self::Activate, Discovered | Paused) => Ok(Some(Active)),
            (Self::Activate, Active) | (Self::Pause, Paused) | (Self::Resume, Active) => Ok(None),
            (Self::Pause, Active) => Ok(Some(Paused)),
            (Self::Resume, Paused) => Ok(Some(Active)),
            (_, Gone) => Err("the entity is gone from the source; its backed-up data stays restorable"),
            (Self::Pause, Discovered) => Err("only an active entity can be paused"),
            (Self::Resume, Discovered) => Err("only a paused entity can be resumed; activate it instead"),
        }
    }
}

async fn transition(
    ctx: &AppState,
    principal: &Principal,
    id: String,
    t: Transition,
) -> Result<Json<Entity>, ApiError> {
    let now = Utc::now();
    // Unknown ids answer 404 (StateError::NotFound); a refused move changes nothing.
    let entity = ctx
        .state
        .update_entity(&principal.account_id, &EntityId(id), |e| match t.apply(e.status) {
            Ok(Some(status)) => {
                if status == EntityStatus::Active && e.activated_at.is_none() {
                    e.activated_at = Some(now);
                }
                e.status = status;
                true
            }
            Ok(None) | Err(_) => false,
        })
        .await?;
    // After a move the entity is where it was asked to go; otherwise this names why not.
    t.apply(entity.status)
        .map_err(|why| ApiError::conflict("invalid_transition", why))?;
    Ok(Json(entity))
}

/// Starts protecting an entity.
#[utoipa::path(post, path = "/v1/entities/{id}/activate", tag = "entities", params(("id" = String, Path)), responses((status = 200, body = Entity), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn activate(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Entity>, ApiError> {
    transition(&ctx, &principal, id, Transition::Activate).await
}

/// Pauses (archives) an entity: backups stop, its data stays restorable.
#[utoipa::path(post, path = "/v1/entities/{id}/pause", tag = "entities", params(("id" = String, Path)), responses((status = 200, body = Entity), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn pause(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Entity>, ApiError> {
    transition(&ctx, &principal, id, Transition::Pause).await
}

/// Resumes backups of a paused entity.
#[utoipa::path(post, path = "/v1/entities/{id}/resume", tag = "entities", params(("id" = String, Path)), responses((status = 200, body = Entity), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn resume(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Entity>, ApiError> {
    transition(&ctx, &principal, id, Transition::Resume).await
}

#[derive(Serialize, ToSchema)]
pub struct BackupQueued {
    pub entity_id: EntityId,
    pub request_id: String,
}

/// Backs up an active entity now ("back up now").
#[utoipa::path(post, path = "/v1/entities/{id}/backup", tag = "entities", params(("id" = String, Path)), responses((status = 202, body = BackupQueued), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn backup_now(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(axum::http::StatusCode, Json<BackupQueued>), ApiError> {
    let entity = ctx
        .state
        .entity(&principal.account_id, &EntityId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("entity"))?;
    if entity.status != EntityStatus::Active {
        return Err(ApiError::conflict(
            "not_active",
            "only an active entity is backed up; activate or resume it first",
        ));
    }
    let queue = ctx
        .backup_queue
        .as_ref()
        .ok_or_else(|| ApiError::internal("backup queue", &"BACKUP_QUEUE_URL is not configured"))?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let message = crate::ops::backup::BackupMessage {
        account_id: principal.account_id.clone(),
        entity_id: entity.id.clone(),
        request_id: request_id.clone(),
    };
    queue
        .send(&serde_json::to_value(&message).unwrap_or_default())
        .await
        .map_err(|e| ApiError::unavailable("backup queue", &e))?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(BackupQueued {
            entity_id: entity.id,
            request_id,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct BackupAllQueued {
    /// Backups queued: one per active entity.
    pub queued: u64,
}

/// Backs up every active entity now (optionally of one kind or connection);
/// paused and gone ones are skipped.
#[utoipa::path(post, path = "/v1/entities/backup-all", tag = "entities", request_body = ActivateAll, responses((status = 202, body = BackupAllQueued)), security(("session" = [])))]
pub async fn backup_all(
    State(ctx): State<AppState>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<BackupAllQueued>), ApiError> {
    let req = optional_body(&body)?;
    let queue = ctx
        .backup_queue
        .as_ref()
        .ok_or_else(|| ApiError::internal("backup queue", &"BACKUP_QUEUE_URL is not configured"))?;
    let filter = EntityFilter {
        kind: req.kind,
        status: Some(EntityStatus::Active),
        connection_id: req.connection_id.map(ConnectionId),
    };
    let request = uuid::Uuid::new_v4().simple().to_string();
    let (mut queued, mut cursor) = (0u64, None);
    loop {
        let page = ctx
            .state
            .entities(&principal.account_id, &filter, 1000, cursor.as_deref())
            .await?;
        for entity in page.items {
            let message = crate::ops::backup::BackupMessage {
                account_id: principal.account_id.clone(),
                request_id: format!("{request}-{}", entity.id),
                entity_id: entity.id,
            };
            queue
                .send(&serde_json::to_value(&message).unwrap_or_default())
                .await
                .map_err(|e| ApiError::unavailable("backup queue", &e))?;
            queued += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((axum::http::StatusCode::ACCEPTED, Json(BackupAllQueued { queued })))
}

/// An optional JSON body: none (or blank) means no filter.
fn optional_body(body: &[u8]) -> Result<ActivateAll, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(ActivateAll::default())
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
    }
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ActivateAll {
    pub kind: Option<EntityKind>,
    pub connection_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ActivateAllResult {
    pub activated: u64,
}

/// Activates every discovered entity (optionally of one kind or connection).
#[utoipa::path(post, path = "/v1/entities/activate-all", tag = "entities", request_body = ActivateAll, responses((status = 200, body = ActivateAllResult)), security(("session" = [])))]
pub async fn activate_all(
    State(ctx): State<AppState>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<Json<ActivateAllResult>, ApiError> {
    // The body is optional: no body activates everything discovered.
    let req = optional_body(&body)?;
    let filter = EntityFilter {
        kind: req.kind,
        status: Some(EntityStatus::Discovered),
        connection_id: req.connection_id.map(ConnectionId),
    };
    let now = Utc::now();
    let activated = ctx
        .state
        .update_entities(&principal.account_id, &filter, |e| {
            e.status = EntityStatus::Active;
            e.activated_at = Some(now);
            true
        })
        .await?;
    Ok(Json(ActivateAllResult { activated }))
}

#[derive(Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// `discovery` or `backup`.
    pub kind: Option<String>,
    /// Only the runs of this entity.
    pub entity_id: Option<String>,
    /// Only this day (UTC), `YYYY-MM-DD`.
    pub day: Option<chrono::NaiveDate>,
    /// `ok`, `partial` (exceptions, or continues), `failed`; discovery: `succeeded`, `failed`.
    pub status: Option<String>,
    pub service: Option<crate::model::Service>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ActivityList {
    pub items: Vec<Activity>,
    pub next_cursor: Option<String>,
}

/// The account's activity, newest first.
#[utoipa::path(get, path = "/v1/activity", tag = "activity", params(ActivityQuery), responses((status = 200, body = ActivityList)), security(("session" = [])))]
pub async fn activity(
    State(ctx): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<ActivityQuery>,
) -> Result<Json<ActivityList>, ApiError> {
    let (items, next_cursor) = ctx
        .state
        .activities(
            &principal.account_id,
            &crate::state::ActivityFilter {
                kind: q.kind,
                entity_id: q.entity_id.map(EntityId),
                day: q.day,
                status: q.status,
                service: q.service,
            },
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(ActivityList { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_entity_life() {
        use EntityStatus::*;
        assert_eq!(Transition::Activate.apply(Discovered), Ok(Some(Active)));
        assert_eq!(Transition::Pause.apply(Active), Ok(Some(Paused)));
        assert_eq!(Transition::Resume.apply(Paused), Ok(Some(Active)));
        assert_eq!(Transition::Activate.apply(Active), Ok(None));
        assert!(Transition::Activate.apply(Gone).is_err());
        assert!(Transition::Pause.apply(Discovered).is_err());
    }
}
