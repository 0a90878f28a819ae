//! The backup Lambda: SQS batches of backup requests, one entity each, partial batch failures reported.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata::telemetry::init();
    let ctx = Arc::new(strata::Context::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let ctx = ctx.clone();
        async move {
            Ok::<SqsBatchResponse, lambda_runtime::Error>(strata::ops::backup::handle_batch(&ctx, event.payload).await)
        }
    }))
    .await
}
