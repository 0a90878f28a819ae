//! Connecting to a tenant: checking credentials, sealing the secret, and
//! opening a connector on a stored connection.

use crate::model::{AccountId, Connection};
use crate::secrets::{SealContext, SealError, Sealer, Secret};
use crate::source::graph::{GraphClient, GraphCredentials, RetryPolicy};

/// The seal context of a connection's client secret: bound to its account.
pub fn secret_context(account: &AccountId) -> SealContext {
    SealContext::new(account, "connection-secret")
}

/// A Graph client for a stored connection (unseals its secret).
pub async fn graph_client(
    http: &reqwest::Client,
    sealer: &dyn Sealer,
    connection: &Connection,
    policy: RetryPolicy,
) -> Result<GraphClient, SealError> {
    let secret = sealer
        .open(
            &connection.client_secret_sealed,
            &secret_context(&connection.account_id),
        )
        .await?;
    let secret = String::from_utf8(secret).map_err(|_| SealError::Mismatch)?;
    let creds = GraphCredentials {
        tenant_id: connection.tenant_id.clone(),
        client_id: connection.client_id.clone(),
        client_secret: Secret::new(secret),
        login_url: connection.login_url.clone(),
        graph_url: connection.graph_url.clone(),
    };
    Ok(GraphClient::new(http.clone(), creds, policy))
}
