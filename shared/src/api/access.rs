//! Who may call what. Every route has one [`Policy`] in [`POLICIES`]: public,
//! the caller's own things, reading, a [`Permission`], or the owner only. The
//! [`authorize`] layer authenticates the caller (a session or an API key),
//! enforces the account's "2FA required" setting and the policy before any
//! handler or body extractor runs, hands the handler its [`Principal`], and
//! writes the audit record of every audited route with its outcome. A route
//! without a policy is refused (and a unit test keeps the table complete).

use super::AppState;
use super::audit::{self, AuditNote};
use super::error::ApiError;
use crate::model::{Actor, Permission, Role};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tracing::error;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No sign-in: health, the document, sign-up, sign-in, accepting an
    /// invitation, an e-mailed download link (checked by its own token).
    Public,
    /// A signed-in admin's own profile, password, two-factor set-up and
    /// session: open to every role; not for API keys. While the account
    /// requires two-factor authentication and theirs is off, an admin may do
    /// nothing but what `BEFORE_2FA` lists.
    Own,
    /// Reading: every role.
    Read,
    /// Changing something: the caller needs the permission.
    Needs(Permission),
    /// The owner only.
    Owner,
}

/// The rule of one route.
#[derive(Debug, Clone)]
pub struct Policy {
    pub method: Method,
    /// The route as registered (`/v1/entities/{id}`).
    pub path: &'static str,
    pub access: Access,
    /// The audit log's name of the action, when the route is one.
    pub audit: Option<&'static str>,
}

const fn p(method: Method, path: &'static str, access: Access, audit: Option<&'static str>) -> Policy {
    Policy {
        method,
        path,
        access,
        audit,
    }
}

use Access::{Needs, Own, Owner, Public, Read};
use Permission::{Billing, Download, ManageAdmins, ManageBackups, Restore, Settings};

/// Every route of the API and what it requires. Actions audited by the
/// handler itself (sign-up, sign-in, accepting an invitation, a download by
/// e-mailed link: no principal yet) have `None` here.
pub static POLICIES: &[Policy] = &[
    p(Method::GET, "/v1/health", Public, None),
    p(Method::GET, "/v1/openapi.json", Public, None),
    p(Method::POST, "/v1/signup", Public, None),
    p(Method::POST, "/v1/sessions", Public, None),
    p(Method::POST, "/v1/invitations/accept", Public, None),
    p(Method::GET, "/v1/downloads/{account}/{job}", Public, None),
    p(Method::DELETE, "/v1/sessions/current", Own, Some("sign_out")),
    p(Method::GET, "/v1/me", Own, None),
    p(Method::PATCH, "/v1/me", Own, Some("profile_change")),
    p(Method::POST, "/v1/me/password", Own, Some("password_change")),
    p(Method::POST, "/v1/me/totp", Own, Some("totp_setup")),
    p(Method::POST, "/v1/me/totp/confirm", Own, Some("totp_enable")),
    p(Method::GET, "/v1/account", Read, None),
    p(Method::PATCH, "/v1/account", Needs(Settings), Some("settings_change")),
    p(Method::PUT, "/v1/account/security", Owner, Some("security_change")),
    p(Method::GET, "/v1/activity", Read, None),
    p(Method::GET, "/v1/connections", Read, None),
    p(
        Method::POST,
        "/v1/connections",
        Needs(ManageBackups),
        Some("connection_create"),
    ),
    p(Method::GET, "/v1/connections/{id}", Read, None),
    p(
        Method::DELETE,
        "/v1/connections/{id}",
        Needs(ManageBackups),
        Some("connection_delete"),
    ),
    p(
        Method::POST,
        "/v1/connections/{id}/discover",
        Needs(ManageBackups),
        Some("discover"),
    ),
    p(Method::GET, "/v1/connections/{id}/discovery", Read, None),
    p(Method::GET, "/v1/entities", Read, None),
    p(
        Method::POST,
        "/v1/entities/activate-all",
        Needs(ManageBackups),
        Some("activate_all"),
    ),
    p(
        Method::POST,
        "/v1/entities/backup-all",
        Needs(ManageBackups),
        Some("backup_all"),
    ),
    p(Method::GET, "/v1/entities/{id}", Read, None),
    p(
        Method::POST,
        "/v1/entities/{id}/activate",
        Needs(ManageBackups),
        Some("activate"),
    ),
    p(
        Method::POST,
        "/v1/entities/{id}/pause",
        Needs(ManageBackups),
        Some("pause"),
    ),
    p(
        Method::POST,
        "/v1/entities/{id}/resume",
        Needs(ManageBackups),
        Some("resume"),
    ),
    p(
        Method::POST,
        "/v1/entities/{id}/backup",
        Needs(ManageBackups),
        Some("backup_now"),
    ),
    p(Method::POST, "/v1/entities/{id}/purge", Owner, Some("purge_request")),
    p(Method::POST, "/v1/entities/{id}/purge/confirm", Owner, Some("purge")),
    p(Method::GET, "/v1/entities/{id}/snapshots", Read, None),
    p(
        Method::GET,
        "/v1/entities/{id}/snapshots/{snapshot}/folders",
        Read,
        None,
    ),
    p(Method::GET, "/v1/entities/{id}/snapshots/{snapshot}/items", Read, None),
    p(Method::GET, "/v1/search", Read, None),
    p(Method::POST, "/v1/restores", Needs(Restore), Some("restore")),
    p(Method::POST, "/v1/exports", Needs(Download), Some("export")),
    p(Method::GET, "/v1/jobs", Read, None),
    p(Method::GET, "/v1/jobs/{id}", Read, None),
    p(Method::GET, "/v1/jobs/{id}/download", Needs(Download), Some("download")),
    p(Method::GET, "/v1/billing", Needs(Billing), None),
    p(
        Method::PUT,
        "/v1/billing/prices",
        Needs(Billing),
        Some("price_table_change"),
    ),
    p(Method::GET, "/v1/admins", Read, None),
    p(Method::POST, "/v1/admins", Needs(ManageAdmins), Some("admin_invite")),
    p(
        Method::PATCH,
        "/v1/admins/{id}",
        Needs(ManageAdmins),
        Some("admin_change"),
    ),
    p(
        Method::DELETE,
        "/v1/admins/{id}",
        Needs(ManageAdmins),
        Some("admin_remove"),
    ),
    p(Method::GET, "/v1/api-keys", Needs(ManageAdmins), None),
    p(
        Method::POST,
        "/v1/api-keys",
        Needs(ManageAdmins),
        Some("api_key_create"),
    ),
    p(
        Method::DELETE,
        "/v1/api-keys/{id}",
        Needs(ManageAdmins),
        Some("api_key_revoke"),
    ),
    p(Method::GET, "/v1/audit", Needs(ManageAdmins), None),
];

/// What an admin may still do while the account requires two-factor
/// authentication and theirs is off: see who they are, set it up, sign out.
const BEFORE_2FA: [(&str, &str); 4] = [
    ("GET", "/v1/me"),
    ("POST", "/v1/me/totp"),
    ("POST", "/v1/me/totp/confirm"),
    ("DELETE", "/v1/sessions/current"),
];

/// The policy of a route, if it has one.
pub fn policy(method: &Method, path: &str) -> Option<&'static Policy> {
    POLICIES.iter().find(|p| p.method == *method && p.path == path)
}

/// Whether a caller with this role and these permissions passes a rule (2FA aside).
pub fn allows(access: Access, role: Role, permissions: &[Permission], is_key: bool) -> bool {
    match access {
        Public | Read => true,
        Own => !is_key,
        Needs(p) => permissions.contains(&p),
        Owner => role == Role::Owner && !is_key,
    }
}

/// The client's address: the first hop of `X-Forwarded-For` (API Gateway
/// sets it), else the peer of the connection.
pub fn client_ip(parts: &axum::http::request::Parts) -> Option<String> {
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string);
    forwarded.or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
    })
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The path parameter a request acts on (the first one), for the audit log.
fn target_of(template: &str, path: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| t.starts_with('{'))
        .map(|(_, v)| String::from_utf8_lossy(&urlencoding::decode_binary(v.as_bytes())).into_owned())
}

/// The layer over every route (see the module doc).
pub async fn authorize(State(ctx): State<AppState>, request: Request, next: Next) -> Response {
    let Some(matched) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(request).await;
    };
    let Some(policy) = policy(request.method(), &matched) else {
        if POLICIES.iter().any(|p| p.path == matched) {
            // A method the route does not have: the router answers 405.
            return next.run(request).await;
        }
        error!(method = %request.method(), path = %matched, "route without an access policy: refused");
        return forbidden("this route has no access policy".into()).into_response();
    };
    if policy.access == Public {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = match super::auth::authenticate(&ctx, &parts).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let target = target_of(policy.path, parts.uri.path());
    let denial = match check(&ctx, &principal, policy).await {
        Ok(denial) => denial,
        Err(e) => return e.into_response(),
    };
    if let Some(denial) = denial {
        if let Some(action) = policy.audit {
            audit::record_for(&ctx, &principal, action, target, "denied", serde_json::json!({})).await;
        }
        return denial.into_response();
    }
    parts.extensions.insert(principal.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(action) = policy.audit {
        let outcome = if response.status().is_success() || response.status().is_redirection() {
            "success"
        } else {
            "failure"
        };
        let mut details = response
            .extensions()
            .get::<AuditNote>()
            .map(|n| n.0.clone())
            .unwrap_or_else(|| serde_json::json!({}));
        if outcome == "failure"
            && let Some(obj) = details.as_object_mut()
        {
            obj.insert("status".into(), response.status().as_u16().into());
        }
        audit::record_for(&ctx, &principal, action, target, outcome, details).await;
    }
    response
}

/// Why the caller may not go on, if they may not.
async fn check(
    ctx: &AppState,
    principal: &super::auth::Principal,
    policy: &Policy,
) -> Result<Option<ApiError>, ApiError> {
    let is_key = matches!(principal.actor, Actor::ApiKey { .. });
    if policy.access == Own && is_key {
        return Ok(Some(forbidden(
            "an API key cannot do this: it is for a signed-in admin about themselves".into(),
        )));
    }
    if !is_key && !principal.totp_enabled && !BEFORE_2FA.contains(&(policy.method.as_str(), policy.path)) {
        let account = ctx
            .state
            .account(&principal.account_id)
            .await?
            .ok_or_else(|| ApiError::not_found("account"))?;
        if account.require_2fa {
            return Ok(Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "totp_setup_required",
                "this account requires two-factor authentication: set it up first (POST /v1/me/totp)",
            )));
        }
    }
    if allows(policy.access, principal.role, &principal.permissions, is_key) {
        return Ok(None);
    }
    let needed = match policy.access {
        Needs(p) => format!(
            "the {} permission",
            serde_json::to_value(p).unwrap_or_default().as_str().unwrap_or("")
        ),
        _ => "the owner".to_string(),
    };
    Ok(Some(forbidden(format!("only {needed} may do this"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_one_policy_and_every_policy_a_route() {
        let doc = serde_json::to_value(<super::super::openapi::ApiDoc as utoipa::OpenApi>::openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        for (method, path) in &documented {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                POLICIES.iter().filter(|p| p.method == m && p.path == path).count(),
                1,
                "{method} {path} needs exactly one policy"
            );
        }
        for p in POLICIES {
            assert!(
                documented.contains(&(p.method.to_string(), p.path.to_string())),
                "{} {} has a policy but is not in the OpenAPI document",
                p.method,
                p.path
            );
        }
    }

    #[test]
    fn roles_get_what_their_permissions_allow() {
        let viewer = Role::Viewer.effective(&Permission::ALL);
        assert!(viewer.is_empty(), "a viewer holds no permission whatever was chosen");
        let operator = Role::Operator.effective(&Permission::ALL);
        assert!(allows(Needs(Restore), Role::Operator, &operator, false));
        assert!(!allows(Needs(Billing), Role::Operator, &operator, false));
        assert!(!allows(Needs(ManageAdmins), Role::Operator, &operator, false));
        assert!(!allows(Owner, Role::Admin, &Permission::ALL, false));
        assert!(allows(Owner, Role::Owner, &Role::Owner.effective(&[]), false));
        assert!(!allows(Own, Role::Admin, &Permission::ALL, true), "keys have no self");
        assert!(allows(Read, Role::Viewer, &[], true));
    }

    #[test]
    fn the_target_is_the_first_path_parameter() {
        assert_eq!(
            target_of("/v1/entities/{id}/pause", "/v1/entities/ent_1/pause").as_deref(),
            Some("ent_1")
        );
        assert_eq!(
            target_of("/v1/admins/{id}", "/v1/admins/adm%5F1").as_deref(),
            Some("adm_1")
        );
        assert_eq!(target_of("/v1/account", "/v1/account"), None);
    }
}
