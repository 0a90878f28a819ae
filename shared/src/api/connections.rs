//! Connections: create (credentials checked at once, the secret sealed with
//! KMS and never shown again), list, delete; discovery on request.

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, JsonBody};
use crate::model::{Connection, ConnectionId, DiscoveryState, DiscoveryStatus, EntityStatus, Service};
use crate::ops::connections::secret_context;
use crate::ops::discovery::DiscoveryMessage;
use crate::secrets::Secret;
use crate::source::graph::{GraphClient, GraphCredentials, RetryPolicy};
use crate::source::{Directory, SourceError};
use crate::state::EntityFilter;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

#[derive(Deserialize, ToSchema)]
pub struct CreateConnection {
    /// Only `m365` for now.
    #[serde(default = "default_service")]
    pub service: Service,
    pub display_name: Option<String>,
    /// Directory (tenant) id or verified domain.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Client secret of the app registration; stored sealed, never shown again.
    #[schema(value_type = String, format = Password)]
    pub client_secret: Secret,
    /// Entra ID endpoint override (national clouds), default `https://login.microsoftonline.com`.
    pub login_url: Option<String>,
    /// Graph endpoint override (national clouds), default `https://graph.microsoft.com`.
    pub graph_url: Option<String>,
}

fn default_service() -> Service {
    Service::M365
}

/// A connection as the API shows it: no secret.
#[derive(Serialize, ToSchema)]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub service: Service,
    pub display_name: String,
    pub tenant_id: String,
    pub client_id: String,
    pub login_url: String,
    pub graph_url: String,
    pub created_at: DateTime<Utc>,
    pub discovery: DiscoveryStatus,
}

impl From<Connection> for ConnectionView {
    fn from(c: Connection) -> Self {
        Self {
            id: c.id,
            service: c.service,
            display_name: c.display_name,
            tenant_id: c.tenant_id,
            client_id: c.client_id,
            login_url: c.login_url,
            graph_url: c.graph_url,
            created_at: c.created_at,
            discovery: c.discovery,
        }
    }
}

fn endpoint(given: Option<String>, default: &str, field: &'static str, allow_http: bool) -> Result<String, ApiError> {
    let Some(given) = given.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
        return Ok(default.to_string());
    };
    let invalid = |why: &str| ApiError::bad_request("invalid_endpoint", format!("{field}: {why}"));
    let url = url::Url::parse(&given).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(invalid("must be an https:// URL")),
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.host_str().is_none()
    {
        return Err(invalid("must be a plain base URL (no credentials, query or fragment)"));
    }
    Ok(given.trim_end_matches('/').to_string())
}

fn valid_id(value: &str, field: &'static str) -> Result<String, ApiError> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be a GUID or domain name"),
        ));
    }
    Ok(value.to_string())
}

fn source_refusal(e: SourceError) -> ApiError {
    match e {
        SourceError::Auth { code, description } => ApiError::bad_request(
            "invalid_credentials",
            format!("Microsoft Entra ID refused the credentials ({code}): {description}"),
        ),
        SourceError::Forbidden { .. } => ApiError::bad_request(
            "missing_permission",
            "the credentials work, but the app registration cannot read the directory: grant the application permissions User.Read.All, Sites.Read.All, Files.Read.All and Mail.Read with admin consent",
        ),
        SourceError::NotFound { code, message } | SourceError::Api { code, message, .. } => ApiError::bad_request(
            "invalid_credentials",
            format!("the tenant refused the check ({code}): {message}"),
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "source_unreachable",
            format!("could not reach the tenant to check the credentials: {other}"),
        ),
    }
}

/// Enqueues a discovery of a connection and marks it queued.
async fn enqueue_discovery(ctx: &AppState, connection: &Connection) -> Result<Connection, ApiError> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let message = DiscoveryMessage::Connection {
        account_id: connection.account_id.clone(),
        connection_id: connection.id.clone(),
        request_id: request_id.clone(),
        backup: false,
    };
    let queued_at = Utc::now();
    let updated = ctx
        .state
        .update_connection(&connection.account_id, &connection.id, |c| {
            c.discovery.state = DiscoveryState::Queued;
            c.discovery.request_id = Some(request_id.clone());
            c.discovery.queued_at = Some(queued_at);
            true
        })
        .await?;
    ctx.discovery_queue
        .send(&serde_json::to_value(&message).unwrap_or_default())
        .await
        .map_err(|e| ApiError::unavailable("discovery queue", &e))?;
    Ok(updated)
}

/// Connects a Microsoft 365 tenant. The credentials are checked before anything is stored.
#[utoipa::path(post, path = "/v1/connections", request_body = CreateConnection, tag = "connections",
    responses((status = 201, body = ConnectionView), (status = 400, body = super::error::ErrorBody, description = "invalid_credentials, missing_permission, invalid_endpoint"), (status = 409, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)),
    security(("session" = [])))]
pub async fn create(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<CreateConnection>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let allow_http = ctx.config.allow_insecure_endpoints;
    let tenant_id = valid_id(&req.tenant_id, "tenant_id")?;
    let client_id = valid_id(&req.client_id, "client_id")?;
    if req.client_secret.expose().trim().is_empty() {
        return Err(ApiError::bad_request("invalid_field", "client_secret is required"));
    }
    let login_url = endpoint(req.login_url, DEFAULT_LOGIN_URL, "login_url", allow_http)?;
    let graph_url = endpoint(req.graph_url, DEFAULT_GRAPH_URL, "graph_url", allow_http)?;
    let existing = ctx.state.connections(&principal.account_id).await?;
    if existing
        .iter()
        .any(|c| c.tenant_id.eq_ignore_ascii_case(&tenant_id) && c.client_id.eq_ignore_ascii_case(&client_id))
    {
        return Err(ApiError::conflict(
            "connection_exists",
            "this tenant is already connected with this app",
        ));
    }
    let creds = GraphCredentials {
        tenant_id: tenant_id.clone(),
        client_id: client_id.clone(),
        client_secret: req.client_secret.clone(),
        login_url: login_url.clone(),
        graph_url: graph_url.clone(),
    };
    let client = GraphClient::new(ctx.http.clone(), creds, RetryPolicy::interactive());
    client.verify().await.map_err(source_refusal)?;
    let sealed = ctx
        .sealer
        .seal(
            req.client_secret.expose().as_bytes(),
            &secret_context(&principal.account_id),
        )
        .await
        .map_err(|e| ApiError::unavailable("seal client secret", &e))?;
    let connection = Connection {
        id: ConnectionId::random(),
        account_id: principal.account_id.clone(),
        service: req.service,
        display_name: req
            .display_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("Microsoft 365 ({tenant_id})")),
        tenant_id,
        client_id,
        client_secret_sealed: sealed,
        login_url,
        graph_url,
        created_at: Utc::now(),
        discovery: DiscoveryStatus::default(),
    };
    ctx.state.put_connection(&connection).await?;
    info!(account = %principal.account_id, connection = %connection.id, "connection created");
    let connection = enqueue_discovery(&ctx, &connection).await?;
    Ok((StatusCode::CREATED, Json(connection.into())))
}

/// The account's connections.
#[utoipa::path(get, path = "/v1/connections", tag = "connections", responses((status = 200, body = [ConnectionView])), security(("session" = [])))]
pub async fn list(State(ctx): State<AppState>, principal: Principal) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    let connections = ctx.state.connections(&principal.account_id).await?;
    Ok(Json(connections.into_iter().map(Into::into).collect()))
}

async fn load(ctx: &AppState, principal: &Principal, id: String) -> Result<Connection, ApiError> {
    ctx.state
        .connection(&principal.account_id, &ConnectionId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))
}

/// One connection.
#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path)), responses((status = 200, body = ConnectionView), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn get_one(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    Ok(Json(load(&ctx, &principal, id).await?.into()))
}

/// Deletes a connection and its sealed secret. Its entities and their backed-up
/// data stay; active ones are paused, since they can no longer be reached.
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections", params(("id" = String, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn remove(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let connection = load(&ctx, &principal, id).await?;
    let filter = EntityFilter {
        connection_id: Some(connection.id.clone()),
        status: Some(EntityStatus::Active),
        kind: None,
    };
    ctx.state
        .update_entities(&principal.account_id, &filter, |e| {
            e.status = EntityStatus::Paused;
            true
        })
        .await?;
    ctx.state
        .delete_connection(&principal.account_id, &connection.id)
        .await?;
    info!(account = %principal.account_id, connection = %connection.id, "connection deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a discovery now.
#[utoipa::path(post, path = "/v1/connections/{id}/discover", tag = "connections", params(("id" = String, Path)), responses((status = 202, body = DiscoveryStatus), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn discover(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DiscoveryStatus>), ApiError> {
    let connection = load(&ctx, &principal, id).await?;
    let connection = enqueue_discovery(&ctx, &connection).await?;
    Ok((StatusCode::ACCEPTED, Json(connection.discovery)))
}

/// Progress and result of the connection's latest discovery.
#[utoipa::path(get, path = "/v1/connections/{id}/discovery", tag = "connections", params(("id" = String, Path)), responses((status = 200, body = DiscoveryStatus), (status = 404, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn discovery(
    State(ctx): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DiscoveryStatus>, ApiError> {
    Ok(Json(load(&ctx, &principal, id).await?.discovery))
}
