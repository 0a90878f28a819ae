//! The export Lambda: SQS batches of export jobs, each a zip streamed into S3 (`strata::ops::jobs`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    strata::ops::jobs::serve(strata::model::JobKind::Export).await
}
