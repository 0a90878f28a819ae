//! Creating the template's resources in the emulator through the AWS SDK,
//! reading every setting from the template: DynamoDB tables, S3 buckets, SQS
//! queues (dead-letter queues first), KMS keys and aliases, Secrets Manager
//! secrets, SES identities.

use crate::template::{ACCOUNT_ID, Physical, REGION, Resolver, Resource, Template};
use anyhow::{Context as _, Result, anyhow};
use aws_sdk_dynamodb::types as ddb;
use rand::Rng;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// The resource types the local stack creates; others (IAM, alarms, functions,
/// APIs, log groups, bucket policies) have no local counterpart.
pub const PROVISIONED: &[&str] = &[
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::SecretsManager::Secret",
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::SES::EmailIdentity",
];

/// A physical name: `<stack>-<logical id>`, lowercased where AWS needs it.
pub fn physical_name(stack: &str, logical_id: &str, lowercase: bool) -> String {
    let name = format!("{stack}-{logical_id}");
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    if lowercase { name.to_lowercase() } else { name }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.map(|v| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    })
}

fn err<E: std::error::Error + Send + Sync + 'static>(what: String) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e))
}

/// Creates every provisionable resource; returns what `Ref`/`GetAtt` resolve to.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    stack: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Physical>> {
    let mut physical: BTreeMap<String, Physical> = BTreeMap::new();
    for kind in PROVISIONED {
        let mut pending: Vec<&Resource> = template.of_kind(kind).collect();
        // Resources of one kind may depend on each other (a queue on its DLQ): create what resolves first.
        while !pending.is_empty() {
            let mut next = Vec::new();
            let mut progressed = false;
            for r in pending {
                let resolver = Resolver {
                    stack_name: stack,
                    parameters,
                    physical: &physical,
                };
                match resolver.resolve(&r.properties) {
                    Ok(props) => {
                        let p = create(sdk, stack, r, &props)
                            .await
                            .with_context(|| format!("create {} ({})", r.logical_id, r.kind))?;
                        physical.insert(r.logical_id.clone(), p);
                        progressed = true;
                    }
                    Err(_) => next.push(r),
                }
            }
            if !progressed {
                let names: Vec<_> = next.iter().map(|r| r.logical_id.clone()).collect();
                let resolver = Resolver {
                    stack_name: stack,
                    parameters,
                    physical: &physical,
                };
                let why = next.first().and_then(|r| resolver.resolve(&r.properties).err());
                return Err(anyhow!("cannot resolve the properties of {names:?}: {why:?}"));
            }
            pending = next;
        }
    }
    Ok(physical)
}

async fn create(sdk: &aws_config::SdkConfig, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let p = |name: &str| props.get(name);
    match r.kind.as_str() {
        "AWS::KMS::Key" => {
            let kms = aws_sdk_kms::Client::new(sdk);
            let out = kms
                .create_key()
                .set_description(text(p("Description")))
                .send()
                .await
                .map_err(err(format!("kms create-key {}", r.logical_id)))?;
            let meta = out.key_metadata().context("key metadata")?;
            if p("EnableKeyRotation").and_then(Value::as_bool) == Some(true) {
                kms.enable_key_rotation()
                    .key_id(meta.key_id())
                    .send()
                    .await
                    .map_err(err("kms enable-key-rotation".into()))?;
            }
            Ok(Physical {
                id: meta.key_id().to_string(),
                attrs: BTreeMap::from([
                    ("Arn".into(), meta.arn().unwrap_or_default().to_string()),
                    ("KeyId".into(), meta.key_id().to_string()),
                ]),
            })
        }
        "AWS::KMS::Alias" => {
            let kms = aws_sdk_kms::Client::new(sdk);
            let alias = text(p("AliasName")).context("AliasName")?;
            kms.create_alias()
                .alias_name(&alias)
                .target_key_id(text(p("TargetKeyId")).context("TargetKeyId")?)
                .send()
                .await
                .map_err(err(format!("kms create-alias {alias}")))?;
            Ok(Physical {
                id: alias,
                attrs: BTreeMap::new(),
            })
        }
        "AWS::SecretsManager::Secret" => {
            let sm = aws_sdk_secretsmanager::Client::new(sdk);
            let name = text(p("Name")).unwrap_or_else(|| physical_name(stack, &r.logical_id, false));
            let value = match (text(p("SecretString")), p("GenerateSecretString")) {
                (Some(v), _) => v,
                (None, generate) => {
                    let length = generate
                        .and_then(|g| g.get("PasswordLength"))
                        .and_then(Value::as_u64)
                        .unwrap_or(32) as usize;
                    let mut rng = rand::thread_rng();
                    (0..length)
                        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                        .collect()
                }
            };
            let out = sm
                .create_secret()
                .name(&name)
                .set_description(text(p("Description")))
                .set_kms_key_id(text(p("KmsKeyId")))
                .secret_string(value)
                .send()
                .await
                .map_err(err(format!("secretsmanager create-secret {name}")))?;
            let arn = out.arn().unwrap_or_default().to_string();
            Ok(Physical {
                id: arn.clone(),
                attrs: BTreeMap::from([("Arn".into(), arn), ("Name".into(), name)]),
            })
        }
        "AWS::DynamoDB::Table" => create_table(sdk, stack, r, props).await,
        "AWS::S3::Bucket" => create_bucket(sdk, stack, r, props).await,
        "AWS::SQS::Queue" => create_queue(sdk, stack, r, props).await,
        "AWS::SES::EmailIdentity" => {
            let ses = aws_sdk_sesv2::Client::new(sdk);
            let identity = text(p("EmailIdentity")).context("EmailIdentity")?;
            ses.create_email_identity()
                .email_identity(&identity)
                .send()
                .await
                .map_err(err(format!("sesv2 create-email-identity {identity}")))?;
            Ok(Physical {
                id: identity,
                attrs: BTreeMap::new(),
            })
        }
        other => Err(anyhow!("{other} is not provisioned locally")),
    }
}

fn key_schema(v: Option<&Value>) -> Result<Vec<ddb::KeySchemaElement>> {
    let items = v.and_then(Value::as_sequence).context("KeySchema")?;
    items
        .iter()
        .map(|k| {
            let key_type = match text(k.get("KeyType")).as_deref() {
                Some("HASH") => ddb::KeyType::Hash,
                Some("RANGE") => ddb::KeyType::Range,
                other => return Err(anyhow!("KeyType {other:?}")),
            };
            Ok(ddb::KeySchemaElement::builder()
                .attribute_name(text(k.get("AttributeName")).context("AttributeName")?)
                .key_type(key_type)
                .build()?)
        })
        .collect()
}

async fn create_table(sdk: &aws_config::SdkConfig, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let name = text(props.get("TableName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, false));
    let mut request = client
        .create_table()
        .table_name(&name)
        .set_key_schema(Some(key_schema(props.get("KeySchema"))?));
    for a in props
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .context("AttributeDefinitions")?
    {
        let kind = match text(a.get("AttributeType")).as_deref() {
            Some("S") => ddb::ScalarAttributeType::S,
            Some("N") => ddb::ScalarAttributeType::N,
            Some("B") => ddb::ScalarAttributeType::B,
            other => return Err(anyhow!("AttributeType {other:?}")),
        };
        request = request.attribute_definitions(
            ddb::AttributeDefinition::builder()
                .attribute_name(text(a.get("AttributeName")).context("AttributeName")?)
                .attribute_type(kind)
                .build()?,
        );
    }
    match text(props.get("BillingMode")).as_deref() {
        Some("PAY_PER_REQUEST") => request = request.billing_mode(ddb::BillingMode::PayPerRequest),
        _ => {
            request = request.provisioned_throughput(
                ddb::ProvisionedThroughput::builder()
                    .read_capacity_units(5)
                    .write_capacity_units(5)
                    .build()?,
            )
        }
    }
    for g in props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let projection = match g
            .get("Projection")
            .and_then(|p| text(p.get("ProjectionType")))
            .as_deref()
        {
            Some("KEYS_ONLY") => ddb::ProjectionType::KeysOnly,
            Some("INCLUDE") => ddb::ProjectionType::Include,
            _ => ddb::ProjectionType::All,
        };
        request = request.global_secondary_indexes(
            ddb::GlobalSecondaryIndex::builder()
                .index_name(text(g.get("IndexName")).context("IndexName")?)
                .set_key_schema(Some(key_schema(g.get("KeySchema"))?))
                .projection(ddb::Projection::builder().projection_type(projection).build())
                .build()?,
        );
    }
    if let Some(sse) = props.get("SSESpecification") {
        request = request.sse_specification(
            ddb::SseSpecification::builder()
                .enabled(sse.get("SSEEnabled").and_then(Value::as_bool).unwrap_or(false))
                .set_sse_type(text(sse.get("SSEType")).map(|t| ddb::SseType::from(t.as_str())))
                .set_kms_master_key_id(text(sse.get("KMSMasterKeyId")))
                .build(),
        );
    }
    let out = request
        .send()
        .await
        .map_err(err(format!("dynamodb create-table {name}")))?;
    if let Some(ttl) = props
        .get("TimeToLiveSpecification")
        .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
    {
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                ddb::TimeToLiveSpecification::builder()
                    .attribute_name(text(ttl.get("AttributeName")).context("TTL AttributeName")?)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(err(format!("dynamodb update-time-to-live {name}")))?;
    }
    let arn = out
        .table_description()
        .and_then(|d| d.table_arn())
        .map(str::to_string)
        .unwrap_or_else(|| format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"));
    Ok(Physical {
        id: name,
        attrs: BTreeMap::from([("Arn".into(), arn)]),
    })
}

async fn create_bucket(sdk: &aws_config::SdkConfig, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let name = text(props.get("BucketName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, true));
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .map_err(err(format!("s3 create-bucket {name}")))?;
    if let Some(block) = props.get("PublicAccessBlockConfiguration") {
        let flag = |k: &str| block.get(k).and_then(Value::as_bool);
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(
                aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                    .set_block_public_acls(flag("BlockPublicAcls"))
                    .set_block_public_policy(flag("BlockPublicPolicy"))
                    .set_ignore_public_acls(flag("IgnorePublicAcls"))
                    .set_restrict_public_buckets(flag("RestrictPublicBuckets"))
                    .build(),
            )
            .send()
            .await
            .map_err(err(format!("s3 put-public-access-block {name}")))?;
    }
    let rule = props
        .get("BucketEncryption")
        .and_then(|e| e.get("ServerSideEncryptionConfiguration"))
        .and_then(Value::as_sequence)
        .and_then(|rules| rules.first())
        .and_then(|rule| rule.get("ServerSideEncryptionByDefault"));
    if let Some(rule) = rule {
        let algorithm = aws_sdk_s3::types::ServerSideEncryption::from(
            text(rule.get("SSEAlgorithm"))
                .unwrap_or_else(|| "AES256".into())
                .as_str(),
        );
        let default = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
            .sse_algorithm(algorithm)
            .set_kms_master_key_id(text(rule.get("KMSMasterKeyID")))
            .build()?;
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(
                aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                    .rules(
                        aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(default)
                            .build(),
                    )
                    .build()?,
            )
            .send()
            .await
            .map_err(err(format!("s3 put-bucket-encryption {name}")))?;
    }
    if props
        .get("VersioningConfiguration")
        .and_then(|v| text(v.get("Status")))
        .as_deref()
        == Some("Enabled")
    {
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(err(format!("s3 put-bucket-versioning {name}")))?;
    }
    Ok(Physical {
        id: name.clone(),
        attrs: BTreeMap::from([
            ("Arn".into(), format!("arn:aws:s3:::{name}")),
            ("DomainName".into(), format!("{name}.s3.amazonaws.com")),
        ]),
    })
}

async fn create_queue(sdk: &aws_config::SdkConfig, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let fifo = props.get("FifoQueue").and_then(Value::as_bool) == Some(true);
    let mut name = text(props.get("QueueName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, false));
    if fifo && !name.ends_with(".fifo") {
        name.push_str(".fifo");
    }
    let mut request = sqs.create_queue().queue_name(&name);
    for (prop, attr) in [
        ("VisibilityTimeout", A::VisibilityTimeout),
        ("MessageRetentionPeriod", A::MessageRetentionPeriod),
        ("DelaySeconds", A::DelaySeconds),
        ("ReceiveMessageWaitTimeSeconds", A::ReceiveMessageWaitTimeSeconds),
        ("MaximumMessageSize", A::MaximumMessageSize),
        ("KmsMasterKeyId", A::KmsMasterKeyId),
        ("FifoQueue", A::FifoQueue),
        ("ContentBasedDeduplication", A::ContentBasedDeduplication),
    ] {
        if let Some(v) = text(props.get(prop)) {
            request = request.attributes(attr, v);
        }
    }
    if let Some(redrive) = props.get("RedrivePolicy") {
        let policy = serde_json::json!({
            "deadLetterTargetArn": text(redrive.get("deadLetterTargetArn")).context("deadLetterTargetArn")?,
            "maxReceiveCount": redrive.get("maxReceiveCount").and_then(Value::as_u64).context("maxReceiveCount")?,
        });
        request = request.attributes(A::RedrivePolicy, policy.to_string());
    }
    let out = request.send().await.map_err(err(format!("sqs create-queue {name}")))?;
    let url = out.queue_url().context("queue url")?.to_string();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .map_err(err(format!("sqs get-queue-attributes {name}")))?;
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&A::QueueArn))
        .cloned()
        .unwrap_or_else(|| format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"));
    Ok(Physical {
        id: url.clone(),
        attrs: BTreeMap::from([
            ("Arn".into(), arn),
            ("QueueName".into(), name),
            ("QueueUrl".into(), url),
        ]),
    })
}
