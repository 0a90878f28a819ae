//! The local stack against the emulator: every resource of the template
//! exists as the template says (no drift), the SQS event-source semantics
//! (partial batch failure, redelivery, dead-letter queue), schedules, the API.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_local::provision::PROVISIONED;
use strata_local::{Handler, Stack, StackOptions};

fn options(name: &str) -> StackOptions {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut o = StackOptions::new(root);
    o.stack_name = name.into();
    o.endpoint = None;
    o.quiet = true;
    o.failed_visibility_secs = Some(0);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_resource_exists_as_the_template_says() {
    let stack = Stack::start(options("drift")).await.expect("stack");
    let sdk = stack.sdk_config();
    let template = stack.template().clone();
    let mut checked = 0;
    for r in template
        .resources
        .values()
        .filter(|r| PROVISIONED.contains(&r.kind.as_str()))
    {
        let id = stack
            .physical_id(&r.logical_id)
            .unwrap_or_else(|| panic!("{} not provisioned", r.logical_id))
            .to_string();
        match r.kind.as_str() {
            "AWS::DynamoDB::Table" => {
                let d = aws_sdk_dynamodb::Client::new(&sdk)
                    .describe_table()
                    .table_name(&id)
                    .send()
                    .await
                    .expect("describe table");
                let table = d.table().expect("table");
                let keys: Vec<_> = table
                    .key_schema()
                    .iter()
                    .map(|k| k.attribute_name().to_string())
                    .collect();
                let want: Vec<String> = r
                    .prop("KeySchema")
                    .and_then(|k| k.as_sequence())
                    .expect("keys")
                    .iter()
                    .map(|k| k["AttributeName"].as_str().unwrap_or_default().to_string())
                    .collect();
                assert_eq!(keys, want, "{} key schema", r.logical_id);
                let gsis: Vec<_> = table
                    .global_secondary_indexes()
                    .iter()
                    .map(|g| g.index_name().unwrap_or_default().to_string())
                    .collect();
                let want_gsis: Vec<String> = r
                    .prop("GlobalSecondaryIndexes")
                    .and_then(|g| g.as_sequence())
                    .into_iter()
                    .flatten()
                    .map(|g| g["IndexName"].as_str().unwrap_or_default().to_string())
                    .collect();
                assert_eq!(gsis, want_gsis, "{} indexes", r.logical_id);
                if let Some(ttl) = r.prop("TimeToLiveSpecification") {
                    let t = aws_sdk_dynamodb::Client::new(&sdk)
                        .describe_time_to_live()
                        .table_name(&id)
                        .send()
                        .await
                        .expect("ttl");
                    let attr = t
                        .time_to_live_description()
                        .and_then(|d| d.attribute_name())
                        .unwrap_or_default();
                    assert_eq!(
                        attr,
                        ttl["AttributeName"].as_str().unwrap_or_default(),
                        "{} TTL",
                        r.logical_id
                    );
                }
            }
            "AWS::S3::Bucket" => {
                let config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build();
                let s3 = aws_sdk_s3::Client::from_conf(config);
                s3.head_bucket().bucket(&id).send().await.expect("bucket exists");
                let block = s3
                    .get_public_access_block()
                    .bucket(&id)
                    .send()
                    .await
                    .expect("public access block");
                assert_eq!(
                    block
                        .public_access_block_configuration()
                        .and_then(|c| c.block_public_acls()),
                    Some(true)
                );
                let enc = s3.get_bucket_encryption().bucket(&id).send().await.expect("encryption");
                assert!(
                    enc.server_side_encryption_configuration().is_some(),
                    "{} encrypted",
                    r.logical_id
                );
            }
            "AWS::SQS::Queue" => {
                let out = aws_sdk_sqs::Client::new(&sdk)
                    .get_queue_attributes()
                    .queue_url(&id)
                    .attribute_names(QueueAttributeName::All)
                    .send()
                    .await
                    .expect("queue");
                let attrs = out.attributes().expect("attributes");
                if let Some(v) = r.prop("VisibilityTimeout") {
                    assert_eq!(
                        attrs.get(&QueueAttributeName::VisibilityTimeout).map(String::as_str),
                        Some(v.as_i64().expect("number").to_string().as_str())
                    );
                }
                if let Some(redrive) = r.prop("RedrivePolicy") {
                    let policy: serde_json::Value =
                        serde_json::from_str(attrs.get(&QueueAttributeName::RedrivePolicy).expect("redrive"))
                            .expect("json");
                    assert_eq!(policy["maxReceiveCount"].as_u64(), redrive["maxReceiveCount"].as_u64());
                    let dlq = strata_local::template::referenced_id(&redrive["deadLetterTargetArn"]).expect("dlq ref");
                    assert_eq!(
                        policy["deadLetterTargetArn"].as_str(),
                        stack.physical()[&dlq].attrs.get("Arn").map(String::as_str)
                    );
                }
            }
            "AWS::KMS::Key" => {
                aws_sdk_kms::Client::new(&sdk)
                    .describe_key()
                    .key_id(&id)
                    .send()
                    .await
                    .expect("key");
            }
            "AWS::KMS::Alias" => {
                let aliases = aws_sdk_kms::Client::new(&sdk)
                    .list_aliases()
                    .send()
                    .await
                    .expect("aliases");
                assert!(
                    aliases.aliases().iter().any(|a| a.alias_name() == Some(id.as_str())),
                    "alias {id}"
                );
            }
            "AWS::SecretsManager::Secret" => {
                let v = aws_sdk_secretsmanager::Client::new(&sdk)
                    .get_secret_value()
                    .secret_id(&id)
                    .send()
                    .await
                    .expect("secret");
                assert_eq!(v.secret_string().map(str::len), Some(32));
            }
            "AWS::SES::EmailIdentity" => {
                aws_sdk_sesv2::Client::new(&sdk)
                    .get_email_identity()
                    .email_identity(&id)
                    .send()
                    .await
                    .expect("identity");
            }
            other => panic!("unchecked kind {other}"),
        }
        checked += 1;
    }
    assert!(checked >= 8, "checked {checked} resources");
    let env = stack.function_env("DiscoveryFunction").expect("env");
    assert_eq!(
        env.get("STATE_TABLE").map(String::as_str),
        stack.physical_id("StateTable")
    );
    assert_eq!(
        env.get("DISCOVERY_QUEUE_URL").map(String::as_str),
        stack.physical_id("DiscoveryQueue")
    );
    assert_eq!(env.get("KMS_KEY_ID").map(String::as_str), stack.physical_id("DataKey"));
    assert_eq!(
        env.get("OPEN_SIGNUP").map(String::as_str),
        Some("false"),
        "parameter default"
    );
    assert_eq!(env.get("AWS_ENDPOINT_URL").map(String::as_str), Some(stack.endpoint()));
    stack.stop().await;
}

type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_failure_redelivery_and_dead_letter_queue() {
    let stack = Stack::start(options("runner")).await.expect("stack");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let handler: strata_local::SqsHandler = Arc::new(move |event: SqsEvent| {
        let record = record.clone();
        Box::pin(async move {
            let mut response = SqsBatchResponse::default();
            for m in event.records {
                let body = m.body.clone().unwrap_or_default();
                let count = m.attributes.get("ApproximateReceiveCount").cloned().unwrap_or_default();
                record.lock().expect("lock").push((body.clone(), count));
                if body == "poison" {
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = m.message_id.clone().unwrap_or_default();
                    response.batch_item_failures.push(f);
                }
                if body == "crash" {
                    anyhow::bail!("handler crashed");
                }
            }
            Ok(response)
        })
    });
    let mut handlers = HashMap::new();
    handlers.insert("DiscoveryFunction".to_string(), Handler::Sqs(handler));
    // Every other queue-fed function of the template gets a handler that accepts everything.
    for f in stack
        .template()
        .functions()
        .into_iter()
        .filter(|f| f != "DiscoveryFunction" && f != "ApiFunction")
    {
        let accept: strata_local::SqsHandler = Arc::new(|_| Box::pin(async { Ok(SqsBatchResponse::default()) }));
        handlers.insert(f, Handler::Sqs(accept));
    }
    handlers.insert(
        "ApiFunction".to_string(),
        Handler::Http(axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }))),
    );
    let running = stack
        .run(handlers, Some("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("run");

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config());
    let url = stack.physical_id("DiscoveryQueue").expect("queue").to_string();
    for body in ["good-1", "poison", "good-2"] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    running.wait_idle(Duration::from_secs(60)).await.expect("idle");
    let log = seen.lock().expect("lock").clone();
    let count = |b: &str| log.iter().filter(|(body, _)| body == b).count();
    assert_eq!(count("good-1"), 1, "a successful message is deleted: {log:?}");
    assert_eq!(count("good-2"), 1);
    assert_eq!(
        count("poison"),
        3,
        "a failed message is redelivered until maxReceiveCount: {log:?}"
    );
    let receives: Vec<&str> = log
        .iter()
        .filter(|(b, _)| b == "poison")
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(receives, ["1", "2", "3"], "receive counts grow");
    let dlq = stack.physical_id("DiscoveryDeadLetterQueue").expect("dlq").to_string();
    let dead = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive dlq");
    let bodies: Vec<_> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["poison"], "the poison message ends in the dead-letter queue");

    // A handler error redelivers the whole batch.
    seen.lock().expect("lock").clear();
    sqs.send_message()
        .queue_url(&url)
        .message_body("crash")
        .send()
        .await
        .expect("send");
    running.wait_idle(Duration::from_secs(60)).await.expect("idle");
    assert_eq!(
        seen.lock().expect("lock").iter().filter(|(b, _)| b == "crash").count(),
        3
    );

    // Schedules deliver their input to the target queue.
    seen.lock().expect("lock").clear();
    stack.fire("DiscoverySchedule").await.expect("fire");
    running.wait_idle(Duration::from_secs(60)).await.expect("idle");
    assert_eq!(
        seen.lock()
            .expect("lock")
            .iter()
            .map(|(b, _)| b.as_str())
            .collect::<Vec<_>>(),
        [r#"{"type":"all_connections"}"#]
    );

    // The HTTP handler is served.
    let api = running.api_url().expect("api url");
    let pong = tokio::net::TcpStream::connect(api.trim_start_matches("http://")).await;
    assert!(pong.is_ok(), "the API listens on {api}");
    running.stop().await;
    stack.stop().await;
}
