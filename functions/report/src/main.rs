//! The report Lambda: the hourly schedule's message; each account due at this
//! hour in its time zone gets its daily report e-mail.

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
            Ok::<SqsBatchResponse, lambda_runtime::Error>(strata::ops::report::handle_batch(&ctx, event.payload).await)
        }
    }))
    .await
}
