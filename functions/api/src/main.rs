//! The API Lambda: the `strata::api` router behind API Gateway (HTTP API).

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    strata::telemetry::init();
    let ctx = Arc::new(strata::Context::from_env().await?);
    lambda_http::run(strata::api::router(ctx)).await
}
