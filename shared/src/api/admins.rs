//! The account's admins (invited by e-mail, with a role and permissions,
//! suspended or removed) and its API keys (created with a role, shown once,
//! stored hashed, revocable, listed with their last use).

use super::AppState;
use super::audit::noted;
use super::auth::{API_KEY_PREFIX, ClientIp, Principal, check_password_rules, hash_password, normalize_email};
use super::error::{ApiError, JsonBody};
use crate::model::{Actor, Admin, AdminId, AdminSecrets, AdminStatus, ApiKey, ApiKeyId, Permission, Role};
use crate::notify::{Email, html_escape};
use crate::secrets::{Secret, constant_time_eq, random_token, sha256_hex};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::ToSchema;

/// How long an invitation holds.
pub const INVITATION_DAYS: i64 = 7;
/// The last use of a key is written at most this often.
const KEY_USE_RESOLUTION_SECS: i64 = 60;

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Checks what a caller may hand out: never the owner role, never a
/// permission they do not hold themselves.
fn check_grant(principal: &Principal, role: Role, permissions: &[Permission]) -> Result<(), ApiError> {
    if role == Role::Owner {
        return Err(ApiError::bad_request(
            "invalid_role",
            "an account has one owner; give the role admin, operator or viewer",
        ));
    }
    let granted = role.effective(permissions);
    if let Some(p) = granted.iter().find(|p| !principal.permissions.contains(p)) {
        return Err(forbidden(&format!(
            "you cannot grant a permission you do not hold ({})",
            serde_json::to_value(p).unwrap_or_default().as_str().unwrap_or_default()
        )));
    }
    Ok(())
}

// ----- admins -----

#[derive(Serialize, ToSchema)]
pub struct AdminList {
    pub items: Vec<Admin>,
}

/// The account's admins.
#[utoipa::path(get, path = "/v1/admins", tag = "admins", responses((status = 200, body = AdminList)), security(("session" = [])))]
pub async fn list(State(ctx): State<AppState>, principal: Principal) -> Result<Json<AdminList>, ApiError> {
    Ok(Json(AdminList {
        items: ctx.state.admins(&principal.account_id).await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    pub email: String,
    pub display_name: Option<String>,
    /// `admin`, `operator` or `viewer`.
    pub role: Role,
    /// The permissions, within the role; the role's whole set when absent.
    pub permissions: Option<Vec<Permission>>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationResponse {
    pub admin: Admin,
    /// Until when the e-mailed invitation holds.
    pub expires_at: chrono::DateTime<Utc>,
}

/// Invites an admin by e-mail: they choose their password when they accept.
#[utoipa::path(post, path = "/v1/admins", request_body = Invitation, tag = "admins", responses((status = 201, body = InvitationResponse), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn invite(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<Invitation>,
) -> Result<Response, ApiError> {
    let email = normalize_email(&req.email)?;
    let permissions = req.permissions.unwrap_or_else(|| req.role.allowed().to_vec());
    check_grant(&principal, req.role, &permissions)?;
    let token = random_token();
    let expires_at = Utc::now() + Duration::days(INVITATION_DAYS);
    let admin = Admin {
        id: AdminId::random(),
        account_id: principal.account_id.clone(),
        display_name: req
            .display_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && n.chars().count() <= 200)
            .unwrap_or_else(|| email.clone()),
        email,
        role: req.role,
        permissions: req.role.effective(&permissions),
        status: AdminStatus::Invited,
        totp_enabled: false,
        created_at: Utc::now(),
        invited_by: Some(principal.admin_id.clone()),
        last_sign_in_at: None,
    };
    let secrets = AdminSecrets {
        invite_token_sha256: Some(sha256_hex(&token)),
        invite_expires_at: Some(expires_at),
        ..Default::default()
    };
    ctx.state.create_admin(&admin, &secrets).await.map_err(|e| match e {
        crate::state::StateError::EmailTaken => {
            ApiError::conflict("email_taken", "an admin with this e-mail address already exists")
        }
        other => other.into(),
    })?;
    let account = ctx.state.account(&principal.account_id).await?;
    let account_name = account.map(|a| a.name).unwrap_or_default();
    if let Err(e) = ctx
        .mailer
        .send(&invitation_email(&ctx, &admin, &account_name, &token))
        .await
    {
        warn!(error = %e, admin = %admin.id, "invitation e-mail not sent");
        // The admin exists; without the e-mail nobody can accept: take it back.
        ctx.state.delete_admin(&admin).await?;
        return Err(ApiError::unavailable("invitation e-mail", &e));
    }
    info!(admin = %admin.id, role = ?admin.role, "admin invited");
    let note = serde_json::json!({ "email": admin.email, "role": admin.role, "permissions": admin.permissions });
    Ok(noted(
        (StatusCode::CREATED, Json(InvitationResponse { admin, expires_at })),
        note,
    ))
}

fn invitation_email(ctx: &AppState, admin: &Admin, account_name: &str, token: &str) -> Email {
    let base = ctx.config.api_base_url.as_deref().unwrap_or("").trim_end_matches('/');
    let accept = format!("{base}/v1/invitations/accept");
    let text = format!(
        "You are invited to administer {account_name} in Strata (role: {role}).\n\n\
         Accept within {INVITATION_DAYS} days by sending your e-mail address, this token and the password you choose:\n\n\
         POST {accept}\n{{\"email\": \"{email}\", \"token\": \"{token}\", \"password\": \"...\"}}\n",
        role = serde_json::to_value(admin.role)
            .unwrap_or_default()
            .as_str()
            .unwrap_or_default(),
        email = admin.email,
    );
    let html = format!(
        "<p>You are invited to administer <b>{}</b> in Strata (role: {}).</p>\
         <p>Accept within {INVITATION_DAYS} days: <code>POST {}</code> with your e-mail address, \
         the token <code>{}</code> and the password you choose.</p>",
        html_escape(account_name),
        html_escape(
            serde_json::to_value(admin.role)
                .unwrap_or_default()
                .as_str()
                .unwrap_or_default()
        ),
        html_escape(&accept),
        html_escape(token),
    );
    Email {
        to: vec![admin.email.clone()],
        subject: format!("You are invited to {account_name} in Strata"),
        text,
        html,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    pub email: String,
    /// The token of the invitation e-mail.
    #[schema(value_type = String)]
    pub token: Secret,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    pub display_name: Option<String>,
}

/// Accepts an invitation: sets the password; then sign in as usual.
#[utoipa::path(post, path = "/v1/invitations/accept", request_body = AcceptInvitation, tag = "admins", responses((status = 200, body = Admin), (status = 400, body = super::error::ErrorBody)))]
pub async fn accept(
    State(ctx): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<AcceptInvitation>,
) -> Result<Json<Admin>, ApiError> {
    let invalid = || ApiError::bad_request("invalid_invitation", "the invitation is unknown, used or expired");
    let email = normalize_email(&req.email)?;
    check_password_rules(&req.password)?;
    let Some((mut admin, mut secrets, version)) = ctx.state.admin_by_email(&email).await? else {
        return Err(invalid());
    };
    let expected = secrets.invite_token_sha256.clone().unwrap_or_default();
    let given = sha256_hex(req.token.expose());
    let valid = admin.status == AdminStatus::Invited
        && !expected.is_empty()
        && constant_time_eq(given.as_bytes(), expected.as_bytes())
        && secrets.invite_expires_at.is_some_and(|t| t > Utc::now());
    if !valid {
        return Err(invalid());
    }
    secrets.password_hash = hash_password(req.password).await?;
    secrets.invite_token_sha256 = None;
    secrets.invite_expires_at = None;
    admin.status = AdminStatus::Active;
    if let Some(name) = req.display_name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) {
        admin.display_name = name.chars().take(200).collect();
    }
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    let actor = Actor::Admin {
        admin_id: admin.id.clone(),
        email: admin.email.clone(),
    };
    super::audit::record(
        &ctx,
        &admin.account_id,
        actor,
        ip,
        "invitation_accept",
        Some(admin.id.to_string()),
        "success",
        serde_json::json!({}),
    )
    .await;
    Ok(Json(admin))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdate {
    pub role: Option<Role>,
    pub permissions: Option<Vec<Permission>>,
    /// `active` or `suspended`.
    pub status: Option<AdminStatus>,
}

/// Changes an admin's role, permissions, or suspends / reinstates them.
#[utoipa::path(patch, path = "/v1/admins/{id}", request_body = AdminUpdate, tag = "admins", params(("id" = String, Path)), responses((status = 200, body = Admin), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn update(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AdminUpdate>,
) -> Result<Response, ApiError> {
    let id = AdminId(id);
    let (mut admin, secrets, version) = ctx
        .state
        .admin(&principal.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    if admin.role == Role::Owner {
        return Err(forbidden("the owner's role and status cannot be changed"));
    }
    if admin.id == principal.admin_id {
        return Err(forbidden("ask another admin to change your own role or status"));
    }
    let role = req.role.unwrap_or(admin.role);
    let permissions = match (&req.permissions, req.role) {
        (Some(p), _) => p.clone(),
        // A new role without a set: the new role's whole set.
        (None, Some(r)) => r.allowed().to_vec(),
        (None, None) => admin.permissions.clone(),
    };
    check_grant(&principal, role, &permissions)?;
    admin.role = role;
    admin.permissions = role.effective(&permissions);
    match req.status {
        Some(AdminStatus::Invited) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                "the status is active or suspended",
            ));
        }
        Some(AdminStatus::Active) if admin.status == AdminStatus::Invited => {
            return Err(ApiError::bad_request(
                "invitation_pending",
                "an invited admin becomes active by accepting the invitation",
            ));
        }
        Some(s) => admin.status = s,
        None => {}
    }
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    let note = serde_json::json!({ "role": admin.role, "permissions": admin.permissions, "status": admin.status });
    Ok(noted(Json(admin), note))
}

/// Removes an admin: their sessions end and their e-mail address is free again.
#[utoipa::path(delete, path = "/v1/admins/{id}", tag = "admins", params(("id" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn remove(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (admin, _, _) = ctx
        .state
        .admin(&principal.account_id, &AdminId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    if admin.role == Role::Owner {
        return Err(forbidden("the owner cannot be removed"));
    }
    if admin.id == principal.admin_id {
        return Err(forbidden("ask another admin to remove you"));
    }
    ctx.state.delete_admin(&admin).await?;
    Ok(noted(
        StatusCode::NO_CONTENT,
        serde_json::json!({ "email": admin.email }),
    ))
}

// ----- API keys -----

/// Authenticates an API key by its secret's hash and notes its use.
pub(crate) async fn authenticate_key(ctx: &AppState, hash: &str, ip: Option<String>) -> Result<Principal, ApiError> {
    let Some(key) = ctx.state.api_key_by_hash(hash).await? else {
        return Err(ApiError::unauthorized("invalid_api_key", "the API key is unknown"));
    };
    if key.revoked_at.is_some() {
        return Err(ApiError::unauthorized("api_key_revoked", "the API key was revoked"));
    }
    let now = Utc::now();
    if key
        .last_used_at
        .is_none_or(|t| (now - t).num_seconds() >= KEY_USE_RESOLUTION_SECS)
    {
        let ip_used = ip.clone();
        let noted = ctx
            .state
            .update_api_key(&key.account_id, &key.id, move |k| {
                k.last_used_at = Some(now);
                k.last_used_ip = ip_used.clone();
                true
            })
            .await;
        if let Err(e) = noted {
            warn!(error = %e, key = %key.id, "could not note the key's use");
        }
    }
    Ok(Principal::for_key(&key, ip))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    /// The secret: shown this once. Send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKey>,
}

/// The account's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "admins", responses((status = 200, body = ApiKeyList)), security(("session" = [])))]
pub async fn list_keys(State(ctx): State<AppState>, principal: Principal) -> Result<Json<ApiKeyList>, ApiError> {
    let mut items = ctx.state.api_keys(&principal.account_id).await?;
    items.sort_by_key(|k| k.created_at);
    Ok(Json(ApiKeyList { items }))
}

/// Creates an API key with a role; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/api-keys", request_body = NewApiKey, tag = "admins", responses((status = 201, body = CreatedApiKey)), security(("session" = [])))]
pub async fn create_key(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<NewApiKey>,
) -> Result<Response, ApiError> {
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "the key's name must have 1 to 100 characters",
        ));
    }
    check_grant(&principal, req.role, req.role.allowed())?;
    let secret = format!("{API_KEY_PREFIX}{}", random_token());
    let key = ApiKey {
        id: ApiKeyId::random(),
        account_id: principal.account_id.clone(),
        name,
        role: req.role,
        prefix: secret.chars().take(API_KEY_PREFIX.len() + 6).collect(),
        created_by: principal.admin_id.clone(),
        created_at: Utc::now(),
        last_used_at: None,
        last_used_ip: None,
        revoked_at: None,
    };
    ctx.state.put_api_key(&key, &sha256_hex(&secret)).await?;
    info!(key = %key.id, role = ?key.role, "api key created");
    let note = serde_json::json!({ "key_id": key.id, "name": key.name, "role": key.role });
    Ok(noted((StatusCode::CREATED, Json(CreatedApiKey { key, secret })), note))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "admins", params(("id" = String, Path)), responses((status = 200, body = ApiKey), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn revoke_key(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, ApiError> {
    let id = ApiKeyId(id);
    if ctx.state.api_key(&principal.account_id, &id).await?.is_none() {
        return Err(ApiError::not_found("api key"));
    }
    let now = Utc::now();
    let key = ctx
        .state
        .update_api_key(&principal.account_id, &id, |k| {
            if k.revoked_at.is_some() {
                return false;
            }
            k.revoked_at = Some(now);
            true
        })
        .await?;
    Ok(Json(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        let key = ApiKey {
            id: ApiKeyId("key_1".into()),
            account_id: crate::model::AccountId("acct_1".into()),
            name: "k".into(),
            role,
            prefix: "stk_abc".into(),
            created_by: AdminId("adm_1".into()),
            created_at: Utc::now(),
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
        };
        Principal::for_key(&key, None)
    }

    #[test]
    fn nobody_grants_the_owner_role_or_more_than_they_hold() {
        let admin = principal(Role::Admin);
        assert!(check_grant(&admin, Role::Owner, &[]).is_err());
        assert!(check_grant(&admin, Role::Operator, Role::Operator.allowed()).is_ok());
        let operator = principal(Role::Operator);
        assert!(check_grant(&operator, Role::Admin, Role::Admin.allowed()).is_err());
        assert!(check_grant(&operator, Role::Viewer, &[]).is_ok());
    }
}
