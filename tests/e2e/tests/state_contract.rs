//! The control-plane store's contract, against DynamoDB in the emulator
//! (the same suite runs against the in-memory store in unit tests).

use std::collections::BTreeMap;
use strata::state::{DynamoItems, contract};
use strata_local::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_keeps_the_contract() {
    let stack = Stack::start(StackOptions {
        repo_root: strata_e2e::repo_root(),
        stack_name: "strata-contract".into(),
        endpoint: None,
        parameters: BTreeMap::new(),
        failed_visibility_secs: None,
        quiet: true,
    })
    .await
    .expect("stack");
    let table = stack.physical_id("StateTable").expect("table").to_string();
    let store = DynamoItems::new(aws_sdk_dynamodb::Client::new(&stack.sdk_config()), table);
    contract::run(&store, "contract").await;
}
