//! The audit log: who did what, when, from where, with what outcome. Records
//! are written by the access layer for every audited route (and by the
//! handlers of the public ones: sign-up, sign-in, invitations, e-mailed
//! download links), appended and never changed; listed with filters.

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, QueryParams};
use crate::model::{AccountId, Actor, AuditId, AuditRecord};
use crate::state::AuditFilter;
use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

/// What a handler adds to its action's audit record (a response extension).
#[derive(Debug, Clone)]
pub struct AuditNote(pub serde_json::Value);

/// Attaches an audit note to a response.
pub fn noted<R: axum::response::IntoResponse>(response: R, note: serde_json::Value) -> axum::response::Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(AuditNote(note));
    response
}

/// Appends a record; a failure to write it is logged (the action happened).
#[allow(clippy::too_many_arguments)]
pub async fn record(
    ctx: &AppState,
    account: &AccountId,
    actor: Actor,
    ip: Option<String>,
    action: &str,
    target: Option<String>,
    outcome: &str,
    details: serde_json::Value,
) {
    let record = AuditRecord {
        id: AuditId::random(),
        account_id: account.clone(),
        at: Utc::now(),
        actor,
        ip,
        action: action.to_string(),
        target,
        outcome: outcome.to_string(),
        details,
    };
    info!(account = %account, action, outcome, "audit");
    if let Err(e) = ctx.state.put_audit(&record).await {
        warn!(error = %e, action, "could not write the audit record");
    }
}

/// Appends a record of what a principal did.
pub async fn record_for(
    ctx: &AppState,
    principal: &Principal,
    action: &str,
    target: Option<String>,
    outcome: &str,
    details: serde_json::Value,
) {
    record(
        ctx,
        &principal.account_id,
        principal.actor.clone(),
        principal.ip.clone(),
        action,
        target,
        outcome,
        details,
    )
    .await;
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// e.g. `sign_in`, `restore`, `admin_invite`.
    pub action: Option<String>,
    /// An admin or API key id.
    pub actor: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// The entity, admin, key or job acted on.
    pub target: Option<String>,
    /// Only this day (UTC), `YYYY-MM-DD`.
    pub day: Option<chrono::NaiveDate>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "admins", params(AuditQuery), responses((status = 200, body = AuditList)), security(("session" = [])))]
pub async fn list(
    State(ctx): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = AuditFilter {
        action: q.action,
        actor: q.actor,
        outcome: q.outcome,
        target: q.target,
        day: q.day,
    };
    let (items, next_cursor) = ctx
        .state
        .audit_log(
            &principal.account_id,
            &filter,
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(AuditList { items, next_cursor }))
}
