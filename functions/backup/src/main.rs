//! The backup Lambda: SQS batches of backup requests, one entity each, partial batch failures reported.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata::telemetry::init();
    let ctx = Arc::new(strata::Context::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let ctx = ctx.clone();
        async move {
            // The invocation's deadline (milliseconds since the epoch) as an instant of this process.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let deadline = Instant::now() + left;
            Ok::<SqsBatchResponse, lambda_runtime::Error>(
                strata::ops::backup::handle_batch(&ctx, event.payload, deadline).await,
            )
        }
    }))
    .await
}
