//! The purge Lambda: SQS batches of purge jobs, each the erasure of one entity's backed-up data (`strata::ops::jobs`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata::ops::jobs::serve(strata::model::JobKind::Purge).await
}
