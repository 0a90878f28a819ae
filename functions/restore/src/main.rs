//! The restore Lambda: SQS batches of restore jobs; a large job goes on in continuations (`strata::ops::jobs`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata::ops::jobs::serve(strata::model::JobKind::Restore).await
}
