//! The HTTP API v1 as an axum [`Router`]: served by the API Lambda through
//! `lambda_http`, and by `axum::serve` in the local stack. Every handler takes
//! the account from the authenticated [`auth::Principal`], never from the request.

pub mod access;
mod admins;
pub mod audit;
pub mod auth;
mod billing;
mod connections;
mod entities;
mod error;
mod openapi;
mod purge;
mod recover;

use crate::context::Context;
use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use std::sync::Arc;

pub use error::ApiError;

/// The shared state of every handler.
pub type AppState = Arc<Context>;

/// The whole API.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/signup", post(auth::signup))
        .route("/v1/sessions", post(auth::sign_in))
        .route("/v1/sessions/current", delete(auth::sign_out))
        .route("/v1/me", get(auth::me).patch(auth::update_me))
        .route("/v1/me/password", post(auth::change_password))
        .route("/v1/me/totp", post(auth::totp_setup))
        .route("/v1/me/totp/confirm", post(auth::totp_confirm))
        .route("/v1/account", get(auth::account).patch(auth::update_account))
        .route("/v1/account/security", put(auth::update_security))
        .route("/v1/billing", get(billing::billing))
        .route("/v1/billing/prices", put(billing::set_prices))
        .route("/v1/admins", get(admins::list).post(admins::invite))
        .route("/v1/admins/{id}", patch(admins::update).delete(admins::remove))
        .route("/v1/invitations/accept", post(admins::accept))
        .route("/v1/api-keys", get(admins::list_keys).post(admins::create_key))
        .route("/v1/api-keys/{id}", delete(admins::revoke_key))
        .route("/v1/audit", get(audit::list))
        .route("/v1/activity", get(entities::activity))
        .route("/v1/connections", get(connections::list).post(connections::create))
        .route(
            "/v1/connections/{id}",
            get(connections::get_one).delete(connections::remove),
        )
        .route("/v1/connections/{id}/discover", post(connections::discover))
        .route("/v1/connections/{id}/discovery", get(connections::discovery))
        .route("/v1/entities", get(entities::list))
        .route("/v1/entities/activate-all", post(entities::activate_all))
        .route("/v1/entities/backup-all", post(entities::backup_all))
        .route("/v1/entities/{id}", get(entities::get_one))
        .route("/v1/entities/{id}/activate", post(entities::activate))
        .route("/v1/entities/{id}/pause", post(entities::pause))
        .route("/v1/entities/{id}/resume", post(entities::resume))
        .route("/v1/entities/{id}/backup", post(entities::backup_now))
        .route("/v1/entities/{id}/purge", post(purge::request))
        .route("/v1/entities/{id}/purge/confirm", post(purge::confirm))
        .route("/v1/entities/{id}/snapshots", get(recover::snapshots))
        .route("/v1/entities/{id}/snapshots/{snapshot}/folders", get(recover::folders))
        .route("/v1/entities/{id}/snapshots/{snapshot}/items", get(recover::items))
        .route("/v1/search", get(recover::search))
        .route("/v1/restores", post(recover::create_restore))
        .route("/v1/exports", post(recover::create_export))
        .route("/v1/jobs", get(recover::jobs))
        .route("/v1/jobs/{id}", get(recover::job))
        .route("/v1/jobs/{id}/download", get(recover::download))
        .route("/v1/downloads/{account}/{job}", get(recover::download_by_token))
        // Authentication, the 2FA requirement, permissions and the audit log, for every route.
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), access::authorize))
        .fallback(error::not_found)
        .with_state(ctx)
}

#[utoipa::path(get, path = "/v1/health", responses((status = 200, description = "The API is up")))]
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}
