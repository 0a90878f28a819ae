//! The Entra ID client-credentials token endpoint (§A1):
//! `POST /{tenant}/oauth2/v2.0/token`.

use crate::faults::FaultKind;
use crate::server::{Flight, Outcome, Shared, Token, aad_error, hold};
use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;

pub(crate) async fn handle(
    shared: &Shared,
    method: &Method,
    tenant: &str,
    path: &str,
    body: &[u8],
    flight: &mut Flight,
) -> Outcome {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    flight.entry.client_id = form.get("client_id").cloned();
    let fault = shared.lock().faults.pick(path);
    match fault {
        Some(FaultKind::Status {
            status,
            retry_after_secs,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut outcome = aad_error(
                status,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
            outcome.retry_after = retry_after_secs;
            return outcome;
        }
        Some(FaultKind::Timeout { secs }) => {
            hold(secs, flight).await;
            return aad_error(
                StatusCode::GATEWAY_TIMEOUT,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
        }
        Some(FaultKind::Truncate) | None => {}
    }
    let mut outcome = if *method == Method::POST {
        issue(shared, tenant, &form)
    } else {
        aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        )
    };
    outcome.truncate = fault == Some(FaultKind::Truncate);
    outcome
}

fn missing(name: &str) -> Outcome {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// The checks in Entra ID's order: tenant, grant, client, secret, scope.
fn issue(shared: &Shared, tenant: &str, form: &HashMap<String, String>) -> Outcome {
    let mut inner = shared.lock();
    let t = &inner.tenant;
    if !tenant.eq_ignore_ascii_case(&t.tenant_id) && !tenant.eq_ignore_ascii_case(&t.domain) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    }
    match form.get("grant_type").map(String::as_str) {
        None => return missing("grant_type"),
        Some("client_credentials") => {}
        Some(_) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
    }
    let Some(client) = form.get("client_id") else {
        return missing("client_id");
    };
    if !client.eq_ignore_ascii_case(&t.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                t.domain
            ),
        );
    }
    match form.get("client_secret") {
        None => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        Some(secret) if *secret != t.client_secret => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    t.client_id
                ),
            );
        }
        Some(_) => {}
    }
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    if !scope.ends_with("/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    // Opaque, unique across fakes, JWT-looking (three dot-separated parts).
    let random = |_| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let parts: Vec<String> = (0..3).map(random).collect();
    let access = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}{}.{}",
        parts[0], parts[1], parts[2]
    );
    let lifetime = shared.options.token_lifetime;
    let client_id = t.client_id.clone();
    inner.tokens.insert(
        access.clone(),
        Token {
            client_id,
            expires: Instant::now() + lifetime,
        },
    );
    let secs = lifetime.as_secs_f64().ceil() as u64;
    let mut outcome = Outcome::ok(json!({
        "token_type": "Bearer",
        "expires_in": secs,
        "ext_expires_in": secs,
        "access_token": access,
    }));
    outcome.content_type = "application/json; charset=utf-8";
    outcome
}
