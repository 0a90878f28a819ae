//! The local stack against the emulator. Each test starts its own stack (its
//! own moto on its own port), so they run in parallel:
//! - every resource of the template exists as the template says (no drift);
//! - the SQS event-source semantics: partial batch failure, redelivery with a
//!   growing receive count, the dead-letter queue, a failed invocation;
//! - a schedule's input reaches its target queue;
//! - the HTTP handler is served;
//! - every function variable resolves to a real, reachable resource;
//! - provisioning twice against one endpoint adopts what exists.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_local::provision::PROVISIONED;
use strata_local::template::referenced_id;
use strata_local::{Handler, SqsHandler, Stack, StackOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options(name: &str) -> StackOptions {
    StackOptions {
        repo_root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        stack_name: name.into(),
        endpoint: None,
        parameters: BTreeMap::new(),
        failed_visibility_secs: Some(0),
        quiet: true,
    }
}

fn str_of(v: &Value) -> String {
    strata_local::template::scalar_string(v)
}

/// The template's properties of a resource with every intrinsic resolved.
fn resolved(stack: &Stack, logical_id: &str) -> Value {
    stack
        .state()
        .resolver(stack.template())
        .resolve(&stack.template().resources[logical_id].properties)
        .expect("resolve")
}

fn yaml_to_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_resource_exists_as_the_template_says() {
    let stack = Stack::start(options("drift")).await.expect("stack");
    let sdk = stack.sdk_config();
    let template = stack.template().clone();
    let mut checked = BTreeMap::<String, usize>::new();
    for r in template
        .resources
        .values()
        .filter(|r| PROVISIONED.contains(&r.kind.as_str()))
    {
        let id = stack
            .physical_id(&r.logical_id)
            .unwrap_or_else(|| panic!("{} not provisioned", r.logical_id))
            .to_string();
        let props = resolved(&stack, &r.logical_id);
        let what = &r.logical_id;
        match r.kind.as_str() {
            "AWS::DynamoDB::Table" => {
                let ddb = aws_sdk_dynamodb::Client::new(&sdk);
                let d = ddb
                    .describe_table()
                    .table_name(&id)
                    .send()
                    .await
                    .expect("describe table");
                let table = d.table().expect("table");
                let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
                    schema
                        .iter()
                        .map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string()))
                        .collect()
                };
                let want_keys = |v: &Value| -> Vec<(String, String)> {
                    v.as_sequence()
                        .expect("key schema")
                        .iter()
                        .map(|k| (str_of(&k["AttributeName"]), str_of(&k["KeyType"])))
                        .collect()
                };
                assert_eq!(
                    keys(table.key_schema()),
                    want_keys(&props["KeySchema"]),
                    "{what} key schema"
                );
                let mut attrs: Vec<(String, String)> = table
                    .attribute_definitions()
                    .iter()
                    .map(|a| (a.attribute_name().to_string(), a.attribute_type().as_str().to_string()))
                    .collect();
                attrs.sort();
                let mut want_attrs: Vec<(String, String)> = props["AttributeDefinitions"]
                    .as_sequence()
                    .expect("attributes")
                    .iter()
                    .map(|a| (str_of(&a["AttributeName"]), str_of(&a["AttributeType"])))
                    .collect();
                want_attrs.sort();
                assert_eq!(attrs, want_attrs, "{what} attribute definitions");
                let gsis: BTreeMap<String, (Vec<(String, String)>, String)> = table
                    .global_secondary_indexes()
                    .iter()
                    .map(|g| {
                        (
                            g.index_name().unwrap_or_default().to_string(),
                            (
                                keys(g.key_schema()),
                                g.projection()
                                    .and_then(|p| p.projection_type())
                                    .map(|t| t.as_str().to_string())
                                    .unwrap_or_default(),
                            ),
                        )
                    })
                    .collect();
                let want_gsis: BTreeMap<String, (Vec<(String, String)>, String)> = props
                    .get("GlobalSecondaryIndexes")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        (
                            str_of(&g["IndexName"]),
                            (want_keys(&g["KeySchema"]), str_of(&g["Projection"]["ProjectionType"])),
                        )
                    })
                    .collect();
                assert_eq!(gsis, want_gsis, "{what} global secondary indexes");
                if props.get("BillingMode").map(str_of).as_deref() == Some("PAY_PER_REQUEST") {
                    assert_eq!(
                        table
                            .billing_mode_summary()
                            .and_then(|b| b.billing_mode())
                            .map(|m| m.as_str()),
                        Some("PAY_PER_REQUEST"),
                        "{what} billing"
                    );
                }
                if let Some(ttl) = props.get("TimeToLiveSpecification") {
                    let t = ddb.describe_time_to_live().table_name(&id).send().await.expect("ttl");
                    let d = t.time_to_live_description().expect("ttl description");
                    assert_eq!(
                        d.attribute_name(),
                        Some(str_of(&ttl["AttributeName"]).as_str()),
                        "{what} TTL"
                    );
                    assert_eq!(
                        d.time_to_live_status().map(|s| s.as_str()),
                        Some("ENABLED"),
                        "{what} TTL on"
                    );
                }
                if props.get("SSESpecification").is_some() {
                    assert_eq!(
                        table.sse_description().and_then(|s| s.status()).map(|s| s.as_str()),
                        Some("ENABLED"),
                        "{what} encrypted"
                    );
                }
                if props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool() == Some(true) {
                    let backups = ddb
                        .describe_continuous_backups()
                        .table_name(&id)
                        .send()
                        .await
                        .expect("backups");
                    let status = backups
                        .continuous_backups_description()
                        .and_then(|c| c.point_in_time_recovery_description())
                        .and_then(|p| p.point_in_time_recovery_status())
                        .map(|s| s.as_str().to_string());
                    assert_eq!(status.as_deref(), Some("ENABLED"), "{what} point-in-time recovery");
                }
            }
            "AWS::S3::Bucket" => {
                let s3 = strata_local::provision::s3_client(&sdk);
                s3.head_bucket().bucket(&id).send().await.expect("bucket exists");
                let block = s3
                    .get_public_access_block()
                    .bucket(&id)
                    .send()
                    .await
                    .expect("public access block");
                let c = block.public_access_block_configuration().expect("configuration");
                let want = &props["PublicAccessBlockConfiguration"];
                assert_eq!(c.block_public_acls(), want["BlockPublicAcls"].as_bool(), "{what}");
                assert_eq!(c.block_public_policy(), want["BlockPublicPolicy"].as_bool(), "{what}");
                assert_eq!(c.ignore_public_acls(), want["IgnorePublicAcls"].as_bool(), "{what}");
                assert_eq!(
                    c.restrict_public_buckets(),
                    want["RestrictPublicBuckets"].as_bool(),
                    "{what}"
                );
                let enc = s3.get_bucket_encryption().bucket(&id).send().await.expect("encryption");
                let rule = enc
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first())
                    .and_then(|r| r.apply_server_side_encryption_by_default())
                    .expect("default encryption");
                let want =
                    &props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
                assert_eq!(rule.sse_algorithm().as_str(), str_of(&want["SSEAlgorithm"]), "{what}");
                assert_eq!(
                    rule.kms_master_key_id(),
                    Some(str_of(&want["KMSMasterKeyID"]).as_str()),
                    "{what} encrypted with the stack's key"
                );
                // moto's GetBucketVersioning reply has a root element the Rust SDK refuses,
                // so versioning is checked by its effect: an overwrite keeps the old version.
                if props["VersioningConfiguration"].get("Status").map(str_of).as_deref() == Some("Enabled") {
                    for body in ["v1", "v2"] {
                        s3.put_object()
                            .bucket(&id)
                            .key("drift-check")
                            .body(body.as_bytes().to_vec().into())
                            .send()
                            .await
                            .expect("put");
                    }
                    let versions = s3
                        .list_object_versions()
                        .bucket(&id)
                        .prefix("drift-check")
                        .send()
                        .await
                        .expect("versions");
                    assert_eq!(versions.versions().len(), 2, "{what} versioning");
                }
                if let Some(rules) = props["OwnershipControls"]["Rules"].as_sequence() {
                    let owned = s3
                        .get_bucket_ownership_controls()
                        .bucket(&id)
                        .send()
                        .await
                        .expect("ownership");
                    let got: Vec<String> = owned
                        .ownership_controls()
                        .map(|o| {
                            o.rules()
                                .iter()
                                .map(|r| r.object_ownership().as_str().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    let want: Vec<String> = rules.iter().map(|r| str_of(&r["ObjectOwnership"])).collect();
                    assert_eq!(got, want, "{what} ownership");
                }
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
                for (prop, attr) in [
                    ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
                    ("MessageRetentionPeriod", QueueAttributeName::MessageRetentionPeriod),
                    ("KmsMasterKeyId", QueueAttributeName::KmsMasterKeyId),
                ] {
                    if let Some(v) = props.get(prop) {
                        assert_eq!(attrs.get(&attr), Some(&str_of(v)), "{what} {prop}");
                    }
                }
                if let Some(redrive) = r.prop("RedrivePolicy") {
                    let policy: serde_json::Value =
                        serde_json::from_str(attrs.get(&QueueAttributeName::RedrivePolicy).expect("redrive"))
                            .expect("json");
                    assert_eq!(
                        policy["maxReceiveCount"].as_u64(),
                        redrive["maxReceiveCount"].as_u64(),
                        "{what} maxReceiveCount"
                    );
                    let dlq = referenced_id(&redrive["deadLetterTargetArn"]).expect("dlq ref");
                    assert_eq!(
                        policy["deadLetterTargetArn"].as_str(),
                        stack.physical()[&dlq].attrs.get("Arn").map(String::as_str),
                        "{what} dead-letter queue"
                    );
                }
            }
            "AWS::KMS::Key" => {
                let kms = aws_sdk_kms::Client::new(&sdk);
                let key = kms.describe_key().key_id(&id).send().await.expect("key");
                assert_eq!(
                    key.key_metadata().and_then(|m| m.arn()),
                    stack.physical()[what].attrs.get("Arn").map(String::as_str)
                );
                if props["EnableKeyRotation"].as_bool() == Some(true) {
                    let rotation = kms
                        .get_key_rotation_status()
                        .key_id(&id)
                        .send()
                        .await
                        .expect("rotation");
                    assert!(rotation.key_rotation_enabled(), "{what} rotation");
                }
                if let Some(policy) = props.get("KeyPolicy") {
                    let got = kms
                        .get_key_policy()
                        .key_id(&id)
                        .policy_name("default")
                        .send()
                        .await
                        .expect("policy");
                    let got: serde_json::Value = serde_json::from_str(got.policy().expect("policy")).expect("json");
                    assert_eq!(got, yaml_to_json(policy), "{what} key policy");
                }
            }
            "AWS::KMS::Alias" => {
                let aliases = aws_sdk_kms::Client::new(&sdk)
                    .list_aliases()
                    .send()
                    .await
                    .expect("aliases");
                let alias = aliases
                    .aliases()
                    .iter()
                    .find(|a| a.alias_name() == Some(id.as_str()))
                    .unwrap_or_else(|| panic!("alias {id}"));
                assert_eq!(
                    alias.target_key_id(),
                    Some(str_of(&props["TargetKeyId"]).as_str()),
                    "{what} target"
                );
            }
            "AWS::SecretsManager::Secret" => {
                let sm = aws_sdk_secretsmanager::Client::new(&sdk);
                let v = sm.get_secret_value().secret_id(&id).send().await.expect("secret");
                let value = v.secret_string().expect("value");
                let generate = &props["GenerateSecretString"];
                if let Some(length) = generate["PasswordLength"].as_u64() {
                    assert_eq!(value.len() as u64, length, "{what} length");
                }
                if generate["ExcludePunctuation"].as_bool() == Some(true) {
                    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()), "{what}: {value}");
                }
                if let Some(key) = props.get("KmsKeyId") {
                    let d = sm.describe_secret().secret_id(&id).send().await.expect("describe");
                    assert_eq!(d.kms_key_id(), Some(str_of(key).as_str()), "{what} key");
                }
            }
            "AWS::SES::EmailIdentity" => {
                assert_eq!(id, str_of(&props["EmailIdentity"]));
                aws_sdk_sesv2::Client::new(&sdk)
                    .get_email_identity()
                    .email_identity(&id)
                    .send()
                    .await
                    .expect("identity");
            }
            "AWS::Scheduler::Schedule" => {
                let s = aws_sdk_scheduler::Client::new(&sdk)
                    .get_schedule()
                    .name(&id)
                    .send()
                    .await
                    .expect("schedule");
                assert_eq!(
                    s.schedule_expression(),
                    Some(str_of(&props["ScheduleExpression"]).as_str())
                );
                assert_eq!(
                    s.schedule_expression_timezone(),
                    props.get("ScheduleExpressionTimezone").map(str_of).as_deref(),
                    "{what} time zone"
                );
                assert_eq!(
                    s.flexible_time_window().map(|w| w.mode().as_str()),
                    Some(str_of(&props["FlexibleTimeWindow"]["Mode"]).as_str())
                );
                let target = s.target().expect("target");
                assert_eq!(target.arn(), str_of(&props["Target"]["Arn"]), "{what} target");
                assert_eq!(target.role_arn(), str_of(&props["Target"]["RoleArn"]));
                assert_eq!(target.input(), props["Target"].get("Input").map(str_of).as_deref());
            }
            other => panic!("unchecked kind {other}"),
        }
        *checked.entry(r.kind.clone()).or_default() += 1;
    }
    for kind in PROVISIONED {
        assert_eq!(
            checked.get(*kind).copied().unwrap_or(0),
            template.of_kind(kind).count(),
            "every {kind} checked"
        );
    }
    assert!(checked.values().sum::<usize>() >= 10, "checked {checked:?}");
    stack.stop().await;
}

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A handler that records (body, receive count), reports `poison` as a
/// failed item, fails the invocation when a body is `crash`.
fn recording_handler(seen: Seen) -> SqsHandler {
    Arc::new(move |event: SqsEvent| {
        let seen = seen.clone();
        Box::pin(async move {
            let mut response = SqsBatchResponse::default();
            let mut crash = false;
            for m in event.records {
                assert_eq!(m.event_source.as_deref(), Some("aws:sqs"));
                assert!(
                    m.event_source_arn
                        .as_deref()
                        .is_some_and(|a| a.starts_with("arn:aws:sqs:")),
                    "event source ARN"
                );
                let body = m.body.clone().unwrap_or_default();
                let count = m.attributes.get("ApproximateReceiveCount").cloned().unwrap_or_default();
                seen.lock().expect("lock").push((body.clone(), count));
                if body == "poison" {
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = m.message_id.clone().unwrap_or_default();
                    response.batch_item_failures.push(f);
                }
                crash |= body == "crash";
            }
            if crash {
                anyhow::bail!("handler crashed");
            }
            Ok(response)
        })
    })
}

async fn send(stack: &Stack, queue: &str, bodies: &[&str]) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config());
    let url = stack.physical_id(queue).expect("queue");
    let mut batch = sqs.send_message_batch().queue_url(url);
    for (i, body) in bodies.iter().enumerate() {
        batch = batch.entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(*body)
                .build()
                .expect("entry"),
        );
    }
    let out = batch.send().await.expect("send");
    assert!(out.failed().is_empty(), "{:?}", out.failed());
}

async fn dead_letters(stack: &Stack, queue: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config());
    let out = sqs
        .receive_message()
        .queue_url(stack.physical_id(queue).expect("dlq"))
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive dlq");
    let mut bodies: Vec<String> = out
        .messages()
        .iter()
        .filter_map(|m| m.body().map(str::to_string))
        .collect();
    bodies.sort();
    bodies
}

fn bodies_seen(seen: &Seen, body: &str) -> Vec<String> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(b, _)| b == body)
        .map(|(_, count)| count.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_item_failure_is_redelivered_until_the_dead_letter_queue_and_the_rest_deleted() {
    let stack = Stack::start(options("partial")).await.expect("stack");
    // Queued before the poller starts, so that the three arrive in one batch.
    send(&stack, "DiscoveryQueue", &["good-1", "poison", "good-2"]).await;
    let seen: Seen = Arc::default();
    let handlers = HashMap::from([(
        "DiscoveryFunction".to_string(),
        Handler::Sqs(recording_handler(seen.clone())),
    )]);
    let running = stack.run(handlers, None).await.expect("run");
    running.wait_idle(Duration::from_secs(30)).await.expect("idle");

    assert_eq!(bodies_seen(&seen, "good-1"), ["1"], "a successful message is deleted");
    assert_eq!(bodies_seen(&seen, "good-2"), ["1"]);
    assert_eq!(
        bodies_seen(&seen, "poison"),
        ["1", "2", "3"],
        "a failed item comes back with a growing receive count, maxReceiveCount times"
    );
    assert_eq!(dead_letters(&stack, "DiscoveryDeadLetterQueue").await, ["poison"]);
    let stats = running.stats();
    assert_eq!(stats.messages_ok.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.messages_failed.load(std::sync::atomic::Ordering::Relaxed), 3);
    running.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invocation_redelivers_the_whole_batch() {
    let stack = Stack::start(options("crash")).await.expect("stack");
    send(&stack, "DiscoveryQueue", &["crash", "innocent"]).await;
    let seen: Seen = Arc::default();
    let handlers = HashMap::from([(
        "DiscoveryFunction".to_string(),
        Handler::Sqs(recording_handler(seen.clone())),
    )]);
    let running = stack.run(handlers, None).await.expect("run");
    running.wait_idle(Duration::from_secs(30)).await.expect("idle");
    assert_eq!(bodies_seen(&seen, "crash"), ["1", "2", "3"]);
    assert_eq!(
        bodies_seen(&seen, "innocent"),
        ["1", "2", "3"],
        "a message of a failed batch is not deleted either"
    );
    assert_eq!(
        dead_letters(&stack, "DiscoveryDeadLetterQueue").await,
        ["crash", "innocent"]
    );
    running.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_a_schedule_puts_its_input_on_the_target_queue() {
    let stack = Stack::start(options("fire")).await.expect("stack");
    let schedule = &stack.template().resources["DiscoverySchedule"];
    let target = referenced_id(&schedule.properties["Target"]["Arn"]).expect("target");
    let input = str_of(&schedule.properties["Target"]["Input"]);
    stack.fire("DiscoverySchedule").await.expect("fire");
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config());
    let out = sqs
        .receive_message()
        .queue_url(stack.physical_id(&target).expect("queue"))
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive");
    let bodies: Vec<&str> = out.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, [input.as_str()]);
    assert_eq!(input, r#"{"type":"all_connections"}"#);
    let err = stack.fire("NoSuchSchedule").await.expect_err("unknown schedule");
    assert!(format!("{err:#}").contains("DiscoverySchedule"), "{err:#}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_handler_is_served_on_the_given_address() {
    let stack = Stack::start(options("api")).await.expect("stack");
    let router = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
    let handlers = HashMap::from([("ApiFunction".to_string(), Handler::Http(router))]);
    let running = stack
        .run(handlers, Some("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("run");
    let url = running.api_url().expect("api url");
    let authority = url.trim_start_matches("http://");
    assert!(!authority.ends_with(":0"), "the real port: {url}");
    let mut conn = tokio::net::TcpStream::connect(authority).await.expect("connect");
    conn.write_all(format!("GET /ping HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("pong"), "{response}");
    running.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_variable_resolves_to_a_real_resource_or_parameter() {
    let mut opts = options("env");
    opts.parameters = BTreeMap::from([
        ("OpenSignup".to_string(), "true".to_string()),
        ("SesFromAddress".to_string(), "backups@example.org".to_string()),
    ]);
    let stack = Stack::start(opts).await.expect("stack");
    let sdk = stack.sdk_config();
    for function in stack.template().functions() {
        let env = stack.function_env(&function).expect("env");
        let template_vars = stack.template().globals_env.as_mapping().into_iter().flatten().chain(
            stack.template().resources[&function]
                .prop("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten(),
        );
        for (name, value) in template_vars {
            let name = str_of(name);
            let got = env.get(&name).unwrap_or_else(|| panic!("{function} {name}"));
            assert!(!got.is_empty() && !got.contains("${"), "{function} {name}={got}");
            if let Some(target) = referenced_id(value) {
                let want = stack
                    .parameters()
                    .get(&target)
                    .map(String::as_str)
                    .or_else(|| stack.physical_id(&target))
                    .unwrap_or_else(|| panic!("{function} {name}: {target}"));
                assert_eq!(got, want, "{function} {name}");
            }
        }
        assert_eq!(env["AWS_ENDPOINT_URL"], stack.endpoint());
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["OPEN_SIGNUP"], "true", "a given parameter");
        assert_eq!(env["SES_FROM_ADDRESS"], "backups@example.org");
        assert_eq!(env["RUST_LOG"], "info");
        // The values reach real resources.
        aws_sdk_dynamodb::Client::new(&sdk)
            .describe_table()
            .table_name(&env["STATE_TABLE"])
            .send()
            .await
            .expect("STATE_TABLE is a table");
        strata_local::provision::s3_client(&sdk)
            .head_bucket()
            .bucket(&env["DATA_BUCKET"])
            .send()
            .await
            .expect("DATA_BUCKET is a bucket");
        aws_sdk_sqs::Client::new(&sdk)
            .get_queue_attributes()
            .queue_url(&env["DISCOVERY_QUEUE_URL"])
            .send()
            .await
            .expect("DISCOVERY_QUEUE_URL is a queue");
        aws_sdk_kms::Client::new(&sdk)
            .describe_key()
            .key_id(&env["KMS_KEY_ID"])
            .send()
            .await
            .expect("KMS_KEY_ID is a key");
        aws_sdk_secretsmanager::Client::new(&sdk)
            .get_secret_value()
            .secret_id(&env["BOOTSTRAP_SECRET_ARN"])
            .send()
            .await
            .expect("BOOTSTRAP_SECRET_ARN is a secret");
        aws_sdk_sesv2::Client::new(&sdk)
            .get_email_identity()
            .email_identity(&env["SES_FROM_ADDRESS"])
            .send()
            .await
            .expect("SES_FROM_ADDRESS is a verified identity");
    }
    let err = stack.function_env("DataBucket").expect_err("not a function");
    assert!(err.to_string().contains("not an AWS::Serverless::Function"), "{err}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_again_against_the_same_endpoint_adopts_the_resources() {
    let first = Stack::start(options("again")).await.expect("first");
    let mut opts = options("again");
    opts.endpoint = Some(first.endpoint().to_string());
    let second = Stack::start(opts)
        .await
        .expect("second start against the same endpoint");
    assert_eq!(first.physical(), second.physical(), "the same resources");
    let sm = aws_sdk_secretsmanager::Client::new(&second.sdk_config());
    let arn = second.physical_id("BootstrapSecret").expect("secret");
    let versions = sm
        .list_secret_version_ids()
        .secret_id(arn)
        .send()
        .await
        .expect("versions");
    assert_eq!(versions.versions().len(), 1, "the bootstrap secret keeps its value");
    let keys = aws_sdk_kms::Client::new(&second.sdk_config())
        .list_keys()
        .send()
        .await
        .expect("keys");
    assert_eq!(
        keys.keys().len(),
        second.template().of_kind("AWS::KMS::Key").count(),
        "no second key"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_is_off_by_default_and_on_when_asked() {
    let plain = Stack::start(options("plain")).await.expect("stack");
    let sdk = plain.sdk_config();
    let s3 = strata_local::provision::s3_client(&sdk);
    let bucket = plain.physical_id("DataBucket").expect("bucket").to_string();
    assert!(
        s3.get_object_lock_configuration().bucket(&bucket).send().await.is_err(),
        "no Object Lock unless asked"
    );
    drop(plain);

    let mut opts = options("locked");
    opts.parameters = BTreeMap::from([
        ("ObjectLockMode".to_string(), "GOVERNANCE".to_string()),
        ("ObjectLockDays".to_string(), "3".to_string()),
    ]);
    let locked = Stack::start(opts).await.expect("stack");
    let sdk = locked.sdk_config();
    let s3 = strata_local::provision::s3_client(&sdk);
    let bucket = locked.physical_id("DataBucket").expect("bucket").to_string();
    let config = s3
        .get_object_lock_configuration()
        .bucket(&bucket)
        .send()
        .await
        .expect("object lock configuration");
    let retention = config
        .object_lock_configuration()
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention())
        .expect("default retention");
    assert_eq!(
        (retention.mode().map(|m| m.as_str().to_string()), retention.days()),
        (Some("GOVERNANCE".to_string()), Some(3))
    );
}
