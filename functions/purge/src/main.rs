//! The purge Lambda: SQS batches of purge jobs, each the erasure of one entity's backed-up data.

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
            let deadline = strata::ops::jobs::deadline_of(event.context.deadline);
            let cap = ctx.config.job_time_budget;
            Ok::<SqsBatchResponse, lambda_runtime::Error>(
                strata::ops::jobs::handle_batch(&ctx, event.payload, deadline, cap, strata::model::JobKind::Purge)
                    .await,
            )
        }
    }))
    .await
}
