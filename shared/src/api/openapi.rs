//! The OpenAPI 3.1 document, served at `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct SessionAuth;

impl Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "a session token from POST /v1/sessions, or an API key (`stk_...`) from POST /v1/api-keys",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata API", description = "Self-hosted backup for Microsoft 365: accounts, admins and API keys, connections, discovery, protected entities, recovery, billing, the audit log."),
    paths(
        super::health, document,
        super::auth::signup, super::auth::sign_in, super::auth::sign_out, super::auth::me,
        super::auth::totp_setup, super::auth::totp_confirm, super::auth::account, super::auth::update_account,
        super::auth::update_me, super::auth::change_password, super::auth::update_security,
        super::billing::billing, super::billing::set_prices,
        super::admins::list, super::admins::invite, super::admins::update, super::admins::remove, super::admins::accept,
        super::admins::list_keys, super::admins::create_key, super::admins::revoke_key, super::audit::list,
        super::connections::create, super::connections::list, super::connections::get_one, super::connections::remove,
        super::connections::discover, super::connections::discovery,
        super::entities::list, super::entities::get_one, super::entities::activate, super::entities::pause,
        super::entities::resume, super::entities::backup_now, super::entities::backup_all, super::entities::activate_all, super::entities::activity,
        super::recover::snapshots, super::recover::folders, super::recover::items, super::recover::search,
        super::recover::create_restore, super::recover::create_export, super::recover::jobs, super::recover::job,
        super::recover::download, super::recover::download_by_token,
        super::purge::request, super::purge::confirm,
    ),
    modifiers(&SessionAuth),
    tags((name = "auth"), (name = "account"), (name = "connections"), (name = "entities"), (name = "activity"), (name = "recovery"), (name = "admins"))
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for p in [
            "/v1/signup",
            "/v1/sessions",
            "/v1/connections",
            "/v1/connections/{id}/discovery",
            "/v1/entities/activate-all",
            "/v1/me/totp/confirm",
            "/v1/search",
            "/v1/restores",
            "/v1/exports",
            "/v1/jobs/{id}/download",
            "/v1/entities/{id}/purge",
            "/v1/entities/{id}/purge/confirm",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
        }
        assert!(doc["components"]["schemas"]["Entity"].is_object());
    }
}
