//! Sign-up, sign-in (argon2id, TOTP two-factor, lockout after repeated
//! failures), sessions, and the [`Principal`] every other handler requires.

use super::AppState;
use super::error::{ApiError, JsonBody};
use crate::model::{
    Account, AccountId, Actor, Admin, AdminId, AdminSecrets, AdminStatus, Permission, ReportMode, Role,
};
use crate::secrets::{SealContext, Secret, constant_time_eq, random_token, sha256_hex};
use crate::state::Session;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// RFC 6238 parameters: SHA-1, 6 digits, 30-second steps, one step of clock skew.
const TOTP_STEP_SECS: u64 = 30;
const TOTP_DIGITS: usize = 6;
const TOTP_ISSUER: &str = "Strata";

/// The authenticated caller of a request (an admin's session or an API
/// key): the only source of the account id.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: AccountId,
    /// The admin (for an API key: the admin who created it).
    pub admin_id: AdminId,
    pub role: Role,
    /// What the caller may change.
    pub permissions: Vec<Permission>,
    pub actor: Actor,
    pub ip: Option<String>,
    /// Whether the admin has two-factor authentication on (keys: true).
    pub totp_enabled: bool,
    /// The session's token hash (none for an API key).
    token_hash: Option<String>,
}

/// API keys start with this, so that they are told from session tokens (and found by secret scanners).
pub const API_KEY_PREFIX: &str = "stk_";

/// Authenticates a request: `Authorization: Bearer <session token or API key>`.
pub async fn authenticate(ctx: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(token) = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(ApiError::unauthorized(
            "unauthenticated",
            "sign in first: send Authorization: Bearer <session token or API key>",
        ));
    };
    let ip = super::access::client_ip(parts);
    let hash = sha256_hex(token);
    if token.starts_with(API_KEY_PREFIX) {
        return super::admins::authenticate_key(ctx, &hash, ip).await;
    }
    let Some(session) = ctx.state.session(&hash, Utc::now()).await? else {
        return Err(ApiError::unauthorized(
            "session_expired",
            "the session has expired or was ended; sign in again",
        ));
    };
    let Some((admin, secrets, _)) = ctx.state.admin(&session.account_id, &session.admin_id).await? else {
        return Err(ApiError::unauthorized(
            "session_expired",
            "the admin of this session no longer exists",
        ));
    };
    if session.generation != secrets.session_generation {
        return Err(ApiError::unauthorized(
            "session_expired",
            "the session was ended (the password changed); sign in again",
        ));
    }
    if admin.status != AdminStatus::Active {
        return Err(ApiError::unauthorized("admin_suspended", "this admin is suspended"));
    }
    Ok(Principal {
        account_id: session.account_id,
        admin_id: admin.id.clone(),
        role: admin.role,
        permissions: admin.effective_permissions(),
        actor: Actor::Admin {
            admin_id: admin.id.clone(),
            email: admin.email.clone(),
        },
        ip,
        totp_enabled: admin.totp_enabled,
        token_hash: Some(hash),
    })
}

impl Principal {
    /// A principal for an API key (built by [`super::admins`]).
    pub(crate) fn for_key(key: &crate::model::ApiKey, ip: Option<String>) -> Self {
        Self {
            account_id: key.account_id.clone(),
            admin_id: key.created_by.clone(),
            role: key.role,
            permissions: key.role.effective(key.role.allowed()),
            actor: Actor::ApiKey {
                key_id: key.id.clone(),
                name: key.name.clone(),
            },
            ip,
            totp_enabled: true,
            token_hash: None,
        }
    }

    /// The signed-in admin (not an API key), for what only a person does.
    fn session_hash(&self) -> Result<&str, ApiError> {
        self.token_hash.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an API key cannot do this: sign in as an admin",
            )
        })
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// The principal the access layer authenticated and authorized.
    async fn from_request_parts(parts: &mut Parts, ctx: &AppState) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(p.clone()),
            // Every route is behind the access layer; this is only a safety net.
            None => authenticate(ctx, parts).await,
        }
    }
}

/// The client's address, for handlers of public routes (audit records).
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(super::access::client_ip(parts)))
    }
}

// ----- passwords -----

pub(crate) async fn hash_password(password: Secret) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| ApiError::internal("password hashing task", &e))?
    .map_err(|e| ApiError::internal("password hashing", &e))
}

/// Verifies a password against a PHC string off the async executor (argon2 is slow on purpose).
pub(crate) async fn verify_password(password: Secret, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || match PasswordHash::new(&phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .await
    .map_err(|e| ApiError::internal("password check task", &e))
}

/// A hash to verify against when the e-mail is unknown, so the answer takes as long.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ljZ+4p3X0JZ2n3y3u0m2dS8bXx1m0qK4qv2y9d0bC6A";

pub(crate) fn check_password_rules(password: &Secret) -> Result<(), ApiError> {
    if password.expose().chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("the password needs at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::bad_request("invalid_email", "that is not an e-mail address"));
    }
    Ok(email)
}

// ----- sign-up -----

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    /// The deployment's one-time bootstrap token (a stack output); not needed when open sign-up is on.
    #[schema(value_type = Option<String>)]
    pub bootstrap_token: Option<Secret>,
    pub account_name: String,
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    pub display_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignupResponse {
    pub account: Account,
    pub admin: Admin,
}

/// Creates an account and its owner.
#[utoipa::path(post, path = "/v1/signup", request_body = SignupRequest, tag = "auth",
    responses((status = 201, body = SignupResponse), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn signup(
    State(ctx): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<SignupRequest>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    let account_name = req.account_name.trim().to_string();
    if account_name.is_empty() || account_name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_account_name",
            "the account name must have 1 to 200 characters",
        ));
    }
    let email = normalize_email(&req.email)?;
    check_password_rules(&req.password)?;
    let account = Account::new(account_name);
    let bootstrap = !ctx.config.open_signup;
    if bootstrap {
        let expected = ctx
            .bootstrap
            .token()
            .await
            .map_err(|e| ApiError::unavailable("bootstrap secret", &e))?;
        let given = req.bootstrap_token.as_ref().map(Secret::expose).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "signup_closed",
                "sign-up is closed: the first account needs the deployment's bootstrap token",
            ));
        }
        if !ctx.state.claim_bootstrap(&account.id).await? {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "signup_closed",
                "the bootstrap token was already used; ask an owner to invite you",
            ));
        }
    }
    let admin = Admin {
        id: AdminId::random(),
        account_id: account.id.clone(),
        display_name: req
            .display_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| email.clone()),
        email,
        role: Role::Owner,
        permissions: Vec::new(),
        status: AdminStatus::Active,
        totp_enabled: false,
        created_at: Utc::now(),
        invited_by: None,
        last_sign_in_at: None,
    };
    let secrets = AdminSecrets {
        password_hash: hash_password(req.password).await?,
        ..Default::default()
    };
    if let Err(e) = ctx.state.create_account(&account, &admin, &secrets).await {
        if bootstrap {
            ctx.state.release_bootstrap().await?;
        }
        return Err(match e {
            crate::state::StateError::EmailTaken => {
                ApiError::conflict("email_taken", "an admin with this e-mail address already exists")
            }
            other => other.into(),
        });
    }
    info!(account = %account.id, admin = %admin.id, "account created");
    let actor = Actor::Admin {
        admin_id: admin.id.clone(),
        email: admin.email.clone(),
    };
    let details = serde_json::json!({ "account_name": account.name, "bootstrap": bootstrap });
    super::audit::record(
        &ctx,
        &account.id,
        actor,
        ip,
        "signup",
        Some(account.id.to_string()),
        "success",
        details,
    )
    .await;
    Ok((StatusCode::CREATED, Json(SignupResponse { account, admin })))
}

// ----- sign-in -----

#[derive(Deserialize, ToSchema)]
pub struct SignInRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    /// The current code of the authenticator app, when two-factor authentication is on.
    pub totp_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub admin: Admin,
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "wrong e-mail address or password")
}

/// Signs in with e-mail, password and (when enabled) a TOTP code.
#[utoipa::path(post, path = "/v1/sessions", request_body = SignInRequest, tag = "auth",
    responses((status = 201, body = SessionResponse), (status = 401, body = super::error::ErrorBody, description = "invalid_credentials, totp_required, invalid_totp or admin_suspended"), (status = 429, body = super::error::ErrorBody, description = "signin_locked")))]
pub async fn sign_in(
    State(ctx): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<SignInRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let email = req.email.trim().to_lowercase();
    let Some((admin, secrets, version)) = ctx.state.admin_by_email(&email).await? else {
        verify_password(req.password, DUMMY_PHC.to_string()).await?;
        return Err(invalid_credentials());
    };
    let account = admin.account_id.clone();
    let actor = Actor::Anonymous {
        email: Some(admin.email.clone()),
    };
    let target = Some(admin.id.to_string());
    match sign_in_checked(&ctx, req, admin, secrets, version, ip.clone()).await {
        Ok(response) => {
            let actor = Actor::Admin {
                admin_id: response.admin.id.clone(),
                email: response.admin.email.clone(),
            };
            super::audit::record(
                &ctx,
                &account,
                actor,
                ip,
                "sign_in",
                target,
                "success",
                serde_json::json!({}),
            )
            .await;
            Ok((StatusCode::CREATED, Json(response)))
        }
        Err(e) => {
            // Asking for the second factor after a right password is a step, not a failure.
            if e.code != "totp_required" {
                let details = serde_json::json!({ "reason": e.code });
                super::audit::record(&ctx, &account, actor, ip, "sign_in", target, "failure", details).await;
            }
            Err(e)
        }
    }
}

async fn sign_in_checked(
    ctx: &AppState,
    req: SignInRequest,
    mut admin: Admin,
    mut secrets: AdminSecrets,
    version: u64,
    ip: Option<String>,
) -> Result<SessionResponse, ApiError> {
    let now = Utc::now();
    if let Some(until) = secrets.locked_until.filter(|u| *u > now) {
        let secs = u64::try_from((until - now).num_seconds()).unwrap_or(1).max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "signin_locked",
            format!("too many failed sign-ins; try again in {} minutes", secs.div_ceil(60)),
        );
        e.retry_after_secs = Some(secs);
        return Err(e);
    }
    let password_ok = verify_password(req.password, secrets.password_hash.clone()).await?;
    let failure = if !password_ok {
        Some(invalid_credentials())
    } else if admin.totp_enabled {
        match req.totp_code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            // The password was right: asking for the code is not a failure.
            None => {
                return Err(ApiError::unauthorized(
                    "totp_required",
                    "two-factor authentication is on: send totp_code",
                ));
            }
            Some(code) => {
                let sealed = secrets.totp_sealed.clone().unwrap_or_default();
                let seed = ctx
                    .sealer
                    .open(&sealed, &totp_context(&admin.account_id))
                    .await
                    .map_err(|e| ApiError::unavailable("totp seed", &e))?;
                match check_totp(&seed, &admin.email, code, now, secrets.totp_last_step) {
                    Some(step) => {
                        secrets.totp_last_step = Some(step);
                        None
                    }
                    None => Some(ApiError::unauthorized(
                        "invalid_totp",
                        "the two-factor code is wrong or was already used",
                    )),
                }
            }
        }
    } else {
        None
    };
    if let Some(error) = failure {
        secrets.failed_signins += 1;
        if secrets.failed_signins >= ctx.config.signin_max_failures {
            secrets.locked_until =
                Some(now + Duration::from_std(ctx.config.signin_lock).unwrap_or(Duration::minutes(15)));
            secrets.failed_signins = 0;
            info!(admin = %admin.id, "sign-in locked after repeated failures");
        }
        // A lost race only loses one count; the answer stays the same.
        let _ = ctx.state.save_admin(&admin, &secrets, version).await;
        return Err(error);
    }
    match admin.status {
        AdminStatus::Active => {}
        AdminStatus::Suspended => {
            return Err(ApiError::unauthorized("admin_suspended", "this admin is suspended"));
        }
        // An invited admin has no password of their own until they accept.
        AdminStatus::Invited => return Err(invalid_credentials()),
    }
    secrets.failed_signins = 0;
    secrets.locked_until = None;
    admin.last_sign_in_at = Some(now);
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "a concurrent sign-in changed this admin; try again"))?;
    let session = new_session(ctx, &admin, &secrets, ip).await?;
    admin.totp_enabled = admin.totp_enabled && secrets.totp_sealed.is_some();
    info!(admin = %admin.id, "signed in");
    Ok(SessionResponse {
        token: session.0,
        expires_at: session.1,
        admin,
    })
}

/// Makes a session of the admin's current generation: its token and expiry.
async fn new_session(
    ctx: &AppState,
    admin: &Admin,
    secrets: &AdminSecrets,
    ip: Option<String>,
) -> Result<(String, DateTime<Utc>), ApiError> {
    let now = Utc::now();
    let token = random_token();
    let expires_at = now + Duration::from_std(ctx.config.session_ttl).unwrap_or(Duration::hours(12));
    let session = Session {
        account_id: admin.account_id.clone(),
        admin_id: admin.id.clone(),
        created_at: now,
        expires_at,
        generation: secrets.session_generation,
        ip,
    };
    ctx.state.put_session(&sha256_hex(&token), &session).await?;
    Ok((token, expires_at))
}

/// Ends the current session.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "auth", responses((status = 204)), security(("session" = [])))]
pub async fn sign_out(State(ctx): State<AppState>, principal: Principal) -> Result<StatusCode, ApiError> {
    ctx.state.delete_session(principal.session_hash()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in admin.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, body = Admin)), security(("session" = [])))]
pub async fn me(State(ctx): State<AppState>, principal: Principal) -> Result<Json<Admin>, ApiError> {
    let (admin, _, _) = ctx
        .state
        .admin(&principal.account_id, &principal.admin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    Ok(Json(admin))
}

// ----- TOTP (RFC 6238) -----

fn totp_context(account: &AccountId) -> SealContext {
    SealContext::new(account, "totp-seed")
}

fn totp(seed: &[u8], email: &str) -> Option<totp_rs::TOTP> {
    totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        TOTP_DIGITS,
        1,
        TOTP_STEP_SECS,
        seed.to_vec(),
        Some(TOTP_ISSUER.into()),
        email.to_string(),
    )
    .ok()
}

/// The time step a code belongs to (now, or one step either side), if it is
/// valid and newer than the last one accepted (no replay).
fn check_totp(seed: &[u8], email: &str, code: &str, now: DateTime<Utc>, last_step: Option<u64>) -> Option<u64> {
    let totp = totp(seed, email)?;
    let now = u64::try_from(now.timestamp()).ok()?;
    let current = now / TOTP_STEP_SECS;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .find(|step| {
            last_step.is_none_or(|last| *step > last)
                && constant_time_eq(totp.generate(step * TOTP_STEP_SECS).as_bytes(), code.as_bytes())
        })
}

#[derive(Serialize, ToSchema)]
pub struct TotpSetupResponse {
    /// Scan as a QR code, or enter the secret by hand.
    pub otpauth_uri: String,
    pub secret_base32: String,
}

/// Starts two-factor set-up: a new seed, not active until confirmed with a code.
#[utoipa::path(post, path = "/v1/me/totp", tag = "auth", responses((status = 200, body = TotpSetupResponse), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn totp_setup(
    State(ctx): State<AppState>,
    principal: Principal,
) -> Result<Json<TotpSetupResponse>, ApiError> {
    let (admin, mut secrets, version) = ctx
        .state
        .admin(&principal.account_id, &principal.admin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    if admin.totp_enabled {
        return Err(ApiError::conflict(
            "totp_enabled",
            "two-factor authentication is already on",
        ));
    }
    let mut seed = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let totp = totp(&seed, &admin.email).ok_or_else(|| ApiError::internal("totp", &"cannot build TOTP"))?;
    secrets.totp_pending_sealed = Some(
        ctx.sealer
            .seal(&seed, &totp_context(&admin.account_id))
            .await
            .map_err(|e| ApiError::unavailable("seal totp seed", &e))?,
    );
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    Ok(Json(TotpSetupResponse {
        otpauth_uri: totp.get_url(),
        secret_base32: totp.get_secret_base32(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct TotpConfirmRequest {
    pub code: String,
}

/// Turns two-factor authentication on with a code from the new seed.
#[utoipa::path(post, path = "/v1/me/totp/confirm", request_body = TotpConfirmRequest, tag = "auth", responses((status = 200, body = Admin), (status = 400, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn totp_confirm(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<TotpConfirmRequest>,
) -> Result<Json<Admin>, ApiError> {
    let (mut admin, mut secrets, version) = ctx
        .state
        .admin(&principal.account_id, &principal.admin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    let Some(pending) = secrets.totp_pending_sealed.clone() else {
        return Err(ApiError::bad_request(
            "no_totp_setup",
            "start the set-up first (POST /v1/me/totp)",
        ));
    };
    let seed = ctx
        .sealer
        .open(&pending, &totp_context(&admin.account_id))
        .await
        .map_err(|e| ApiError::unavailable("totp seed", &e))?;
    let Some(step) = check_totp(&seed, &admin.email, req.code.trim(), Utc::now(), None) else {
        return Err(ApiError::bad_request(
            "invalid_totp",
            "the code does not match; check the authenticator app's clock",
        ));
    };
    secrets.totp_sealed = Some(pending);
    secrets.totp_pending_sealed = None;
    secrets.totp_last_step = Some(step);
    admin.totp_enabled = true;
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    info!(admin = %admin.id, "two-factor authentication on");
    Ok(Json(admin))
}

// ----- account -----

/// The signed-in admin's account.
#[utoipa::path(get, path = "/v1/account", tag = "account", responses((status = 200, body = Account)), security(("session" = [])))]
pub async fn account(State(ctx): State<AppState>, principal: Principal) -> Result<Json<Account>, ApiError> {
    let account = ctx
        .state
        .account(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(account))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdate {
    pub name: Option<String>,
    /// Activate newly discovered users automatically.
    pub auto_activate: Option<bool>,
    pub report_mode: Option<ReportMode>,
    /// 0 to 23, in the account's time zone.
    pub report_hour: Option<u8>,
    /// IANA time zone, e.g. `Europe/Paris`.
    pub timezone: Option<String>,
    /// Who receives the daily report (at most 20 addresses; empty: the owners).
    pub notification_addresses: Option<Vec<String>>,
}

/// Changes the account's settings.
#[utoipa::path(patch, path = "/v1/account", request_body = AccountUpdate, tag = "account", responses((status = 200, body = Account), (status = 400, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn update_account(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<AccountUpdate>,
) -> Result<axum::response::Response, ApiError> {
    let name = req.name.map(|n| n.trim().to_string());
    if name.as_ref().is_some_and(|n| n.is_empty() || n.chars().count() > 200) {
        return Err(ApiError::bad_request(
            "invalid_account_name",
            "the account name must have 1 to 200 characters",
        ));
    }
    if req.report_hour.is_some_and(|h| h > 23) {
        return Err(ApiError::bad_request(
            "invalid_report_hour",
            "the report hour is 0 to 23",
        ));
    }
    if let Some(tz) = &req.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::bad_request(
            "invalid_timezone",
            format!("{tz:?} is not an IANA time zone (e.g. Europe/Paris)"),
        ));
    }
    let addresses = match req.notification_addresses {
        Some(list) if list.len() > 20 => {
            return Err(ApiError::bad_request(
                "too_many_addresses",
                "at most 20 notification addresses",
            ));
        }
        Some(list) => {
            let mut out: Vec<String> = list.iter().map(|a| normalize_email(a)).collect::<Result<_, _>>()?;
            out.dedup();
            Some(out)
        }
        None => None,
    };
    let mut changed = Vec::new();
    for (field, set) in [
        ("name", name.is_some()),
        ("auto_activate", req.auto_activate.is_some()),
        ("report_mode", req.report_mode.is_some()),
        ("report_hour", req.report_hour.is_some()),
        ("timezone", req.timezone.is_some()),
        ("notification_addresses", addresses.is_some()),
    ] {
        if set {
            changed.push(field);
        }
    }
    let account = ctx
        .state
        .update_account(&principal.account_id, |a| {
            if let Some(n) = &name {
                a.name = n.clone();
            }
            if let Some(v) = req.auto_activate {
                a.auto_activate = v;
            }
            if let Some(v) = req.report_mode {
                a.report_mode = v;
            }
            if let Some(v) = req.report_hour {
                a.report_hour = v;
            }
            if let Some(v) = &req.timezone {
                a.timezone = v.clone();
            }
            if let Some(v) = &addresses {
                a.notification_addresses = v.clone();
            }
        })
        .await?;
    Ok(super::audit::noted(
        Json(account),
        serde_json::json!({ "changed": changed }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityUpdate {
    /// Every admin must turn two-factor authentication on before doing anything else.
    pub require_2fa: bool,
}

/// The owner's security settings: require two-factor authentication of every admin.
#[utoipa::path(put, path = "/v1/account/security", request_body = SecurityUpdate, tag = "account", responses((status = 200, body = Account)), security(("session" = [])))]
pub async fn update_security(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<SecurityUpdate>,
) -> Result<axum::response::Response, ApiError> {
    let account = ctx
        .state
        .update_account(&principal.account_id, |a| a.require_2fa = req.require_2fa)
        .await?;
    Ok(super::audit::noted(
        Json(account),
        serde_json::json!({ "require_2fa": req.require_2fa }),
    ))
}

// ----- the admin's own profile and password -----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    pub display_name: Option<String>,
    /// A new sign-in address (needs `current_password`).
    pub email: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<Secret>,
}

/// Changes the signed-in admin's display name or e-mail address.
#[utoipa::path(patch, path = "/v1/me", request_body = ProfileUpdate, tag = "auth", responses((status = 200, body = Admin), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn update_me(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<ProfileUpdate>,
) -> Result<axum::response::Response, ApiError> {
    principal.session_hash()?;
    let (mut admin, secrets, version) = ctx
        .state
        .admin(&principal.account_id, &principal.admin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    let mut changed = Vec::new();
    if let Some(name) = req.display_name.map(|n| n.trim().to_string()) {
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::bad_request(
                "invalid_display_name",
                "the display name must have 1 to 200 characters",
            ));
        }
        admin.display_name = name;
        changed.push("display_name");
    }
    let old_email = admin.email.clone();
    if let Some(email) = req.email.as_deref().map(normalize_email).transpose()?
        && email != old_email
    {
        let Some(password) = req.current_password else {
            return Err(ApiError::bad_request(
                "current_password_required",
                "changing the e-mail address needs the current password",
            ));
        };
        if !verify_password(password, secrets.password_hash.clone()).await? {
            return Err(ApiError::bad_request("wrong_password", "the current password is wrong"));
        }
        admin.email = email;
        changed.push("email");
    }
    if changed.contains(&"email") {
        ctx.state
            .change_admin_email(&admin, &secrets, version, &old_email)
            .await
            .map_err(|e| match e {
                crate::state::StateError::EmailTaken => {
                    ApiError::conflict("email_taken", "an admin with this e-mail address already exists")
                }
                crate::state::StateError::Contended => {
                    ApiError::conflict("retry", "the admin changed meanwhile; try again")
                }
                other => other.into(),
            })?;
    } else if !changed.is_empty() {
        ctx.state
            .save_admin(&admin, &secrets, version)
            .await
            .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    }
    Ok(super::audit::noted(
        Json(admin),
        serde_json::json!({ "changed": changed }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(value_type = String, format = Password)]
    pub current_password: Secret,
    #[schema(value_type = String, format = Password)]
    pub new_password: Secret,
}

/// Changes the signed-in admin's password: every other session of theirs ends.
#[utoipa::path(post, path = "/v1/me/password", request_body = PasswordChange, tag = "auth", responses((status = 200, body = SessionResponse, description = "a new session; every other session has ended"), (status = 400, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn change_password(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<Json<SessionResponse>, ApiError> {
    let current_hash = principal.session_hash()?.to_string();
    let (admin, mut secrets, version) = ctx
        .state
        .admin(&principal.account_id, &principal.admin_id)
        .await?
        .ok_or_else(|| ApiError::not_found("admin"))?;
    if !verify_password(req.current_password, secrets.password_hash.clone()).await? {
        return Err(ApiError::bad_request("wrong_password", "the current password is wrong"));
    }
    check_password_rules(&req.new_password)?;
    secrets.password_hash = hash_password(req.new_password).await?;
    // Every session of an older generation is over, this one included: the
    // caller gets a new session of the new generation.
    secrets.session_generation += 1;
    ctx.state
        .save_admin(&admin, &secrets, version)
        .await
        .map_err(|_| ApiError::conflict("retry", "the admin changed meanwhile; try again"))?;
    ctx.state.delete_session(&current_hash).await?;
    let (token, expires_at) = new_session(&ctx, &admin, &secrets, principal.ip.clone()).await?;
    info!(admin = %admin.id, "password changed; other sessions ended");
    Ok(Json(SessionResponse {
        token,
        expires_at,
        admin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_accepts_current_code_once() {
        let seed = [7u8; 20];
        let now = Utc::now();
        let t = totp(&seed, "a@b.test").expect("totp");
        let code = t.generate(u64::try_from(now.timestamp()).expect("time"));
        let step = check_totp(&seed, "a@b.test", &code, now, None).expect("valid code");
        assert!(
            check_totp(&seed, "a@b.test", &code, now, Some(step)).is_none(),
            "a code cannot be replayed"
        );
        assert!(check_totp(&seed, "a@b.test", "000000", now, None).is_none() || code == "000000");
        assert!(t.get_url().starts_with("otpauth://totp/Strata:"));
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email(" Ann@Example.COM ").expect("ok"), "ann@example.com");
        assert!(normalize_email("no-at-sign").is_err());
        assert!(normalize_email("a@b").is_err());
    }

    #[tokio::test]
    async fn dummy_hash_parses() {
        assert!(
            PasswordHash::new(DUMMY_PHC).is_ok(),
            "the timing dummy must be a real argon2id hash"
        );
        assert!(
            !verify_password(Secret::new("x"), DUMMY_PHC.into())
                .await
                .expect("verify")
        );
    }
}
