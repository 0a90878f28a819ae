//! Creating the template's resources in the emulator through the AWS SDK,
//! reading every setting from the template: KMS keys and aliases, Secrets
//! Manager secrets, DynamoDB tables, S3 buckets, SQS queues, SES identities,
//! EventBridge Scheduler schedules.
//!
//! Resources are created in dependency order (a resource is created once its
//! properties resolve, so a queue follows its dead-letter queue). Resources
//! with no local counterpart (IAM roles, functions, APIs, log groups, alarms,
//! bucket policies) are only *declared*: they get the names and ARNs that
//! `Ref`/`Fn::GetAtt` answer, so that references to them resolve.
//!
//! Provisioning is idempotent: against an endpoint that already holds the
//! stack (a LocalStack kept running, a second `up`), existing resources are
//! adopted and their settings applied again.

use crate::template::{ACCOUNT_ID, Physical, REGION, Resolver, Resource, Template, scalar_string};
use anyhow::{Context as _, Result, anyhow, bail};
use aws_sdk_dynamodb::types as ddb;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use rand::Rng;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// The resource types created in the emulator.
pub const PROVISIONED: &[&str] = &[
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::SecretsManager::Secret",
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::SES::EmailIdentity",
    "AWS::Scheduler::Schedule",
];

/// For each provisioned type: the properties applied, then those deliberately
/// not applied locally. A property in neither list is drift (see
/// [`unhandled_properties`]), caught by the test suite rather than ignored.
const PROPERTIES: &[(&str, &[&str], &[&str])] = &[
    (
        "AWS::KMS::Key",
        &[
            "Description",
            "EnableKeyRotation",
            "RotationPeriodInDays",
            "KeyPolicy",
            "KeyUsage",
            "KeySpec",
            "Tags",
        ],
        // Multi-region replicas and pending windows mean nothing on one emulator.
        &[
            "MultiRegion",
            "PendingWindowInDays",
            "Enabled",
            "Origin",
            "BypassPolicyLockoutSafetyCheck",
        ],
    ),
    ("AWS::KMS::Alias", &["AliasName", "TargetKeyId"], &[]),
    (
        "AWS::SecretsManager::Secret",
        &[
            "Name",
            "Description",
            "KmsKeyId",
            "SecretString",
            "GenerateSecretString",
            "Tags",
        ],
        // Cross-region replicas: one emulator, one region.
        &["ReplicaRegions"],
    ),
    (
        "AWS::DynamoDB::Table",
        &[
            "TableName",
            "AttributeDefinitions",
            "KeySchema",
            "BillingMode",
            "ProvisionedThroughput",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "SSESpecification",
            "TimeToLiveSpecification",
            "PointInTimeRecoverySpecification",
            "StreamSpecification",
            "DeletionProtectionEnabled",
            "TableClass",
            "Tags",
        ],
        // Kinesis streaming and contributor insights have no local consumer.
        &["KinesisStreamSpecification", "ContributorInsightsSpecification"],
    ),
    (
        "AWS::S3::Bucket",
        &[
            "BucketName",
            "PublicAccessBlockConfiguration",
            "BucketEncryption",
            "VersioningConfiguration",
            "OwnershipControls",
            "LifecycleConfiguration",
            "ObjectLockEnabled",
            "ObjectLockConfiguration",
            "Tags",
        ],
        // Access logs, notifications and replication need other accounts or services.
        &[
            "LoggingConfiguration",
            "NotificationConfiguration",
            "ReplicationConfiguration",
        ],
    ),
    (
        "AWS::SQS::Queue",
        &[
            "QueueName",
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "MaximumMessageSize",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
            "SqsManagedSseEnabled",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
            "RedrivePolicy",
            "RedriveAllowPolicy",
            "Tags",
        ],
        &[],
    ),
    (
        "AWS::SES::EmailIdentity",
        &["EmailIdentity"],
        // Sending configuration (DKIM, MAIL FROM, feedback) is DNS and reputation.
        &[
            "ConfigurationSetAttributes",
            "DkimAttributes",
            "DkimSigningAttributes",
            "FeedbackAttributes",
            "MailFromAttributes",
        ],
    ),
    (
        "AWS::Scheduler::Schedule",
        &[
            "Name",
            "GroupName",
            "Description",
            "ScheduleExpression",
            "ScheduleExpressionTimezone",
            "FlexibleTimeWindow",
            "Target",
            "State",
            "StartDate",
            "EndDate",
        ],
        &["KmsKeyArn"],
    ),
];

/// `(logical id, property)` of every property of a provisioned resource that
/// the local stack neither applies nor deliberately skips: drift.
pub fn unhandled_properties(template: &Template) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in template.resources.values() {
        let Some((_, applied, skipped)) = PROPERTIES.iter().find(|(kind, _, _)| *kind == r.kind) else {
            continue;
        };
        for (name, _) in r.properties.as_mapping().into_iter().flatten() {
            let name = scalar_string(name);
            if !applied.contains(&name.as_str()) && !skipped.contains(&name.as_str()) {
                out.push((r.logical_id.clone(), name));
            }
        }
    }
    out
}

/// A physical name where the template gives none: `<stack>-<LogicalId>`,
/// reduced to the characters and length the resource type allows (S3 buckets
/// lowercased). CloudFormation appends a random suffix; locally each stack
/// name is one stack, so the name is stable across restarts.
pub fn physical_name(stack: &str, logical_id: &str, kind: &str) -> String {
    let (max_len, lowercase, extra): (usize, bool, &[char]) = match kind {
        "AWS::S3::Bucket" => (63, true, &['-']),
        "AWS::SQS::Queue" => (75, false, &['-', '_']),
        "AWS::DynamoDB::Table" => (255, false, &['-', '_', '.']),
        "AWS::IAM::Role" => (64, false, &['-', '_', '+', '=', ',', '.', '@']),
        "AWS::Scheduler::Schedule" => (64, false, &['-', '_', '.']),
        "AWS::SecretsManager::Secret" => (256, false, &['-', '_', '/', '+', '=', '.', '@']),
        "AWS::Serverless::Function" => (64, false, &['-', '_']),
        _ => (128, false, &['-', '_']),
    };
    let mut name: String = format!("{stack}-{logical_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || extra.contains(&c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if lowercase {
        name = name.to_lowercase();
    }
    name.truncate(max_len);
    name.trim_matches('-').to_string()
}

fn text(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(scalar_string)
}

fn int(v: Option<&Value>) -> Result<Option<i64>> {
    text(v)
        .map(|s| s.parse::<i64>().with_context(|| format!("expected a number, got {s}")))
        .transpose()
}

fn flag(v: Option<&Value>) -> Option<bool> {
    v.and_then(|v| match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

fn to_json(v: &Value) -> Result<String> {
    Ok(serde_json::to_string(&serde_json::to_value(v).context("to JSON")?)?)
}

fn tags(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((text(t.get("Key"))?, text(t.get("Value")).unwrap_or_default())))
        .collect()
}

/// An SDK error with its service error code and message.
fn sdk_err<E>(what: impl Into<String>) -> impl FnOnce(E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let what = what.into();
    move |e| anyhow!("{what}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

fn code<E: ProvideErrorMetadata>(e: &E) -> &str {
    e.code().unwrap_or_default()
}

struct Clients {
    kms: aws_sdk_kms::Client,
    secrets: aws_sdk_secretsmanager::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    ses: aws_sdk_sesv2::Client,
    scheduler: aws_sdk_scheduler::Client,
}

impl Clients {
    fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            kms: aws_sdk_kms::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: s3_client(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            ses: aws_sdk_sesv2::Client::new(sdk),
            scheduler: aws_sdk_scheduler::Client::new(sdk),
        }
    }
}

/// An S3 client for a loopback endpoint (path-style addressing).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build())
}

/// Creates (or adopts) every provisionable resource and declares the others;
/// returns what `Ref`/`Fn::GetAtt` resolve to, by logical id.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    stack: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Physical>> {
    let clients = Clients::new(sdk);
    let mut physical: BTreeMap<String, Physical> = BTreeMap::new();
    let mut pending: Vec<&Resource> = template.resources.values().collect();
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut first_error = None;
        let before = pending.len();
        for r in pending {
            let resolver = Resolver {
                stack_name: stack,
                parameters,
                physical: &physical,
                conditions: &template.conditions,
            };
            let resolved = if PROVISIONED.contains(&r.kind.as_str()) {
                resolver.resolve(&r.properties)
            } else {
                declared_names(r, &resolver)
            };
            match resolved {
                Ok(props) => {
                    let p = if PROVISIONED.contains(&r.kind.as_str()) {
                        create(&clients, stack, r, &props)
                            .await
                            .with_context(|| format!("create {} ({})", r.logical_id, r.kind))?
                    } else {
                        declare(stack, r, &props)
                    };
                    physical.insert(r.logical_id.clone(), p);
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{}: {e:#}", r.logical_id));
                    waiting.push(r);
                }
            }
        }
        if waiting.len() == before {
            let names: Vec<_> = waiting.iter().map(|r| r.logical_id.as_str()).collect();
            bail!(
                "cannot resolve the properties of {names:?} (a cycle, or an unsupported reference): {}",
                first_error.unwrap_or_default()
            );
        }
        pending = waiting;
    }
    Ok(physical)
}

/// The naming properties of a declared (not provisioned) resource, resolved.
fn declared_names(r: &Resource, resolver: &Resolver<'_>) -> Result<Value> {
    let mut out = serde_yaml::Mapping::new();
    for name in ["RoleName", "LogGroupName", "FunctionName", "AlarmName", "Name"] {
        if let Some(v) = r.prop(name) {
            out.insert(Value::String(name.into()), Value::String(resolver.string(v)?));
        }
    }
    Ok(Value::Mapping(out))
}

/// What `Ref`/`GetAtt` answer for a resource with no local counterpart.
fn declare(stack: &str, r: &Resource, names: &Value) -> Physical {
    let named = |prop: &str| text(names.get(prop)).unwrap_or_else(|| physical_name(stack, &r.logical_id, &r.kind));
    let (id, attrs) = match r.kind.as_str() {
        "AWS::IAM::Role" => {
            let name = named("RoleName");
            let arn = format!("arn:aws:iam::{ACCOUNT_ID}:role/{name}");
            (name.clone(), vec![("Arn", arn), ("RoleId", format!("AROA{name}"))])
        }
        "AWS::Logs::LogGroup" => {
            let name = named("LogGroupName");
            let arn = format!("arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*");
            (name, vec![("Arn", arn)])
        }
        "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
            let name = named("FunctionName");
            let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}");
            (name, vec![("Arn", arn)])
        }
        "AWS::CloudWatch::Alarm" => {
            let name = named("AlarmName");
            let arn = format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{name}");
            (name, vec![("Arn", arn)])
        }
        _ => (physical_name(stack, &r.logical_id, &r.kind), vec![]),
    };
    Physical {
        id,
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

async fn create(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    match r.kind.as_str() {
        "AWS::KMS::Key" => create_key(clients, stack, r, props).await,
        "AWS::KMS::Alias" => create_alias(clients, props).await,
        "AWS::SecretsManager::Secret" => create_secret(clients, stack, r, props).await,
        "AWS::DynamoDB::Table" => create_table(clients, stack, r, props).await,
        "AWS::S3::Bucket" => create_bucket(clients, stack, r, props).await,
        "AWS::SQS::Queue" => create_queue(clients, stack, r, props).await,
        "AWS::SES::EmailIdentity" => create_identity(clients, props).await,
        "AWS::Scheduler::Schedule" => create_schedule(clients, stack, r, props).await,
        other => Err(anyhow!("{other} is not provisioned locally")),
    }
}

/// The tags that find a stack's key again (keys have no name).
const TAG_STACK: &str = "strata-local:stack";
const TAG_LOGICAL_ID: &str = "strata-local:logical-id";

async fn find_key(kms: &aws_sdk_kms::Client, stack: &str, logical_id: &str) -> Result<Option<String>> {
    let keys = kms
        .list_keys()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(sdk_err("kms list-keys"))?;
    for key in keys {
        let Some(id) = key.key_id() else { continue };
        let Ok(tags) = kms.list_resource_tags().key_id(id).send().await else {
            continue;
        };
        let has = |k: &str, v: &str| tags.tags().iter().any(|t| t.tag_key() == k && t.tag_value() == v);
        if has(TAG_STACK, stack) && has(TAG_LOGICAL_ID, logical_id) {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

async fn create_key(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let kms = &clients.kms;
    let p = |name: &str| props.get(name);
    let key_id = match find_key(kms, stack, &r.logical_id).await? {
        Some(id) => id,
        None => {
            let mut request = kms
                .create_key()
                .set_description(text(p("Description")))
                .set_key_usage(text(p("KeyUsage")).map(|u| u.as_str().into()))
                .set_key_spec(text(p("KeySpec")).map(|s| s.as_str().into()))
                .set_policy(p("KeyPolicy").map(to_json).transpose()?);
            for (k, v) in tags(p("Tags")).into_iter().chain([
                (TAG_STACK.into(), stack.into()),
                (TAG_LOGICAL_ID.into(), r.logical_id.clone()),
            ]) {
                request = request.tags(aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build()?);
            }
            let out = request.send().await.map_err(sdk_err("kms create-key"))?;
            out.key_metadata().context("key metadata")?.key_id().to_string()
        }
    };
    if flag(p("EnableKeyRotation")) == Some(true) {
        kms.enable_key_rotation()
            .key_id(&key_id)
            .set_rotation_period_in_days(int(p("RotationPeriodInDays"))?.map(|d| d as i32))
            .send()
            .await
            .map_err(sdk_err("kms enable-key-rotation"))?;
    }
    let meta = kms
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .map_err(sdk_err("kms describe-key"))?;
    let arn = meta
        .key_metadata()
        .and_then(|m| m.arn())
        .map(str::to_string)
        .unwrap_or_else(|| format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{key_id}"));
    Ok(Physical {
        id: key_id.clone(),
        attrs: BTreeMap::from([("Arn".into(), arn), ("KeyId".into(), key_id)]),
    })
}

async fn create_alias(clients: &Clients, props: &Value) -> Result<Physical> {
    let alias = text(props.get("AliasName")).context("AliasName")?;
    let target = text(props.get("TargetKeyId")).context("TargetKeyId")?;
    let created = clients
        .kms
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&target)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if code(&e) == "AlreadyExistsException" => {
            clients
                .kms
                .update_alias()
                .alias_name(&alias)
                .target_key_id(&target)
                .send()
                .await
                .map_err(sdk_err(format!("kms update-alias {alias}")))?;
        }
        Err(e) => return Err(sdk_err(format!("kms create-alias {alias}"))(e)),
    }
    Ok(Physical {
        id: alias.clone(),
        attrs: BTreeMap::from([("AliasArn".into(), format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"))]),
    })
}

/// Secrets Manager's punctuation set (`GetRandomPassword`).
const PUNCTUATION: &str = r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"##;

/// A value as `GenerateSecretString` describes it (the same options as
/// `GetRandomPassword`, plus `SecretStringTemplate`/`GenerateStringKey`).
pub fn generate_secret(spec: &Value) -> Result<String> {
    let length = int(spec.get("PasswordLength"))?.unwrap_or(32);
    let length = usize::try_from(length).context("PasswordLength")?;
    let excluded: Vec<char> = text(spec.get("ExcludeCharacters"))
        .unwrap_or_default()
        .chars()
        .collect();
    let on = |name: &str| flag(spec.get(name)) == Some(true);
    let mut classes: Vec<Vec<char>> = Vec::new();
    for (skip, chars) in [
        (on("ExcludeLowercase"), ('a'..='z').collect::<String>()),
        (on("ExcludeUppercase"), ('A'..='Z').collect::<String>()),
        (on("ExcludeNumbers"), ('0'..='9').collect::<String>()),
        (on("ExcludePunctuation"), PUNCTUATION.to_string()),
        (!on("IncludeSpace"), " ".to_string()),
    ] {
        let class: Vec<char> = chars.chars().filter(|c| !excluded.contains(c)).collect();
        if !skip && !class.is_empty() {
            classes.push(class);
        }
    }
    let alphabet: Vec<char> = classes.concat();
    if alphabet.is_empty() {
        bail!("GenerateSecretString excludes every character");
    }
    let require_each = flag(spec.get("RequireEachIncludedType")).unwrap_or(true);
    if require_each && length < classes.len() {
        bail!(
            "PasswordLength {length} cannot hold one of each of {} character types",
            classes.len()
        );
    }
    let mut rng = rand::thread_rng();
    let value = loop {
        let candidate: String = (0..length)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        if !require_each
            || classes
                .iter()
                .all(|class| candidate.chars().any(|c| class.contains(&c)))
        {
            break candidate;
        }
    };
    match (
        text(spec.get("SecretStringTemplate")),
        text(spec.get("GenerateStringKey")),
    ) {
        (Some(template), Some(key)) => {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&template).context("SecretStringTemplate must be a JSON object")?;
            object.insert(key, serde_json::Value::String(value));
            Ok(serde_json::Value::Object(object).to_string())
        }
        (None, None) => Ok(value),
        _ => bail!("SecretStringTemplate and GenerateStringKey go together"),
    }
}

async fn create_secret(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let sm = &clients.secrets;
    let p = |name: &str| props.get(name);
    let name = text(p("Name")).unwrap_or_else(|| physical_name(stack, &r.logical_id, "AWS::SecretsManager::Secret"));
    let value = match (text(p("SecretString")), p("GenerateSecretString")) {
        (Some(v), _) => v,
        (None, Some(spec)) => generate_secret(spec)?,
        (None, None) => generate_secret(&Value::Null)?,
    };
    let mut request = sm
        .create_secret()
        .name(&name)
        .set_description(text(p("Description")))
        .set_kms_key_id(text(p("KmsKeyId")))
        .secret_string(value);
    for (k, v) in tags(p("Tags")) {
        request = request.tags(aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build());
    }
    let arn = match request.send().await {
        Ok(out) => out.arn().unwrap_or_default().to_string(),
        // Adopted: the value stays what it was (a bootstrap token must not change under a running stack).
        Err(e) if code(&e) == "ResourceExistsException" => sm
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .map_err(sdk_err(format!("secretsmanager describe-secret {name}")))?
            .arn()
            .unwrap_or_default()
            .to_string(),
        Err(e) => return Err(sdk_err(format!("secretsmanager create-secret {name}"))(e)),
    };
    Ok(Physical {
        id: arn.clone(),
        attrs: BTreeMap::from([("Arn".into(), arn), ("Name".into(), name)]),
    })
}

fn key_schema(v: Option<&Value>) -> Result<Vec<ddb::KeySchemaElement>> {
    let items = v.and_then(Value::as_sequence).context("KeySchema")?;
    items
        .iter()
        .map(|k| {
            let key_type = match text(k.get("KeyType")).as_deref() {
                Some("HASH") => ddb::KeyType::Hash,
                Some("RANGE") => ddb::KeyType::Range,
                other => bail!("KeyType {other:?}"),
            };
            Ok(ddb::KeySchemaElement::builder()
                .attribute_name(text(k.get("AttributeName")).context("AttributeName")?)
                .key_type(key_type)
                .build()?)
        })
        .collect()
}

fn projection(v: Option<&Value>) -> ddb::Projection {
    let kind = match v.and_then(|p| text(p.get("ProjectionType"))).as_deref() {
        Some("KEYS_ONLY") => ddb::ProjectionType::KeysOnly,
        Some("INCLUDE") => ddb::ProjectionType::Include,
        _ => ddb::ProjectionType::All,
    };
    let non_key: Option<Vec<String>> = v
        .and_then(|p| p.get("NonKeyAttributes"))
        .and_then(Value::as_sequence)
        .map(|attrs| attrs.iter().map(scalar_string).collect());
    ddb::Projection::builder()
        .projection_type(kind)
        .set_non_key_attributes(non_key)
        .build()
}

fn throughput(v: Option<&Value>) -> Result<Option<ddb::ProvisionedThroughput>> {
    let Some(v) = v else { return Ok(None) };
    Ok(Some(
        ddb::ProvisionedThroughput::builder()
            .read_capacity_units(int(v.get("ReadCapacityUnits"))?.unwrap_or(5))
            .write_capacity_units(int(v.get("WriteCapacityUnits"))?.unwrap_or(5))
            .build()?,
    ))
}

async fn create_table(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    let client = &clients.dynamodb;
    let p = |name: &str| props.get(name);
    let name = text(p("TableName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, &r.kind));
    let on_demand = text(p("BillingMode")).as_deref() == Some("PAY_PER_REQUEST");
    let mut request = client
        .create_table()
        .table_name(&name)
        .set_key_schema(Some(key_schema(p("KeySchema"))?))
        .set_table_class(text(p("TableClass")).map(|c| c.as_str().into()))
        .set_deletion_protection_enabled(flag(p("DeletionProtectionEnabled")));
    for a in p("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .context("AttributeDefinitions")?
    {
        let kind = match text(a.get("AttributeType")).as_deref() {
            Some("S") => ddb::ScalarAttributeType::S,
            Some("N") => ddb::ScalarAttributeType::N,
            Some("B") => ddb::ScalarAttributeType::B,
            other => bail!("AttributeType {other:?}"),
        };
        request = request.attribute_definitions(
            ddb::AttributeDefinition::builder()
                .attribute_name(text(a.get("AttributeName")).context("AttributeName")?)
                .attribute_type(kind)
                .build()?,
        );
    }
    if on_demand {
        request = request.billing_mode(ddb::BillingMode::PayPerRequest);
    } else {
        request = request
            .billing_mode(ddb::BillingMode::Provisioned)
            .set_provisioned_throughput(throughput(p("ProvisionedThroughput"))?.or(throughput(Some(&Value::Null))?));
    }
    for g in p("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let mut index = ddb::GlobalSecondaryIndex::builder()
            .index_name(text(g.get("IndexName")).context("IndexName")?)
            .set_key_schema(Some(key_schema(g.get("KeySchema"))?))
            .projection(projection(g.get("Projection")));
        if !on_demand {
            index = index.set_provisioned_throughput(
                throughput(g.get("ProvisionedThroughput"))?.or(throughput(Some(&Value::Null))?),
            );
        }
        request = request.global_secondary_indexes(index.build()?);
    }
    for l in p("LocalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        request = request.local_secondary_indexes(
            ddb::LocalSecondaryIndex::builder()
                .index_name(text(l.get("IndexName")).context("IndexName")?)
                .set_key_schema(Some(key_schema(l.get("KeySchema"))?))
                .projection(projection(l.get("Projection")))
                .build()?,
        );
    }
    if let Some(sse) = p("SSESpecification") {
        request = request.sse_specification(
            ddb::SseSpecification::builder()
                .enabled(flag(sse.get("SSEEnabled")).unwrap_or(false))
                .set_sse_type(text(sse.get("SSEType")).map(|t| ddb::SseType::from(t.as_str())))
                .set_kms_master_key_id(text(sse.get("KMSMasterKeyId")))
                .build(),
        );
    }
    if let Some(stream) = p("StreamSpecification") {
        request = request.stream_specification(
            ddb::StreamSpecification::builder()
                .stream_enabled(true)
                .set_stream_view_type(text(stream.get("StreamViewType")).map(|t| t.as_str().into()))
                .build()?,
        );
    }
    for (k, v) in tags(p("Tags")) {
        request = request.tags(ddb::Tag::builder().key(k).value(v).build()?);
    }
    let arn = match request.send().await {
        Ok(out) => out.table_description().and_then(|d| d.table_arn()).map(str::to_string),
        Err(e) if code(&e) == "ResourceInUseException" => client
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .map_err(sdk_err(format!("dynamodb describe-table {name}")))?
            .table()
            .and_then(|t| t.table_arn())
            .map(str::to_string),
        Err(e) => return Err(sdk_err(format!("dynamodb create-table {name}"))(e)),
    }
    .unwrap_or_else(|| format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"));
    if let Some(ttl) = p("TimeToLiveSpecification").filter(|t| flag(t.get("Enabled")) == Some(true)) {
        let attribute = text(ttl.get("AttributeName")).context("TTL AttributeName")?;
        let current = client
            .describe_time_to_live()
            .table_name(&name)
            .send()
            .await
            .map_err(sdk_err(format!("dynamodb describe-time-to-live {name}")))?;
        let enabled = current.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(attribute.as_str())
                && d.time_to_live_status() == Some(&ddb::TimeToLiveStatus::Enabled)
        });
        if !enabled {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    ddb::TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(sdk_err(format!("dynamodb update-time-to-live {name}")))?;
        }
    }
    if let Some(pitr) = p("PointInTimeRecoverySpecification") {
        client
            .update_continuous_backups()
            .table_name(&name)
            .point_in_time_recovery_specification(
                ddb::PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(flag(pitr.get("PointInTimeRecoveryEnabled")).unwrap_or(false))
                    .build()?,
            )
            .send()
            .await
            .map_err(sdk_err(format!("dynamodb update-continuous-backups {name}")))?;
    }
    let stream_arn = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .ok()
        .and_then(|d| d.table().and_then(|t| t.latest_stream_arn()).map(str::to_string));
    let mut attrs = BTreeMap::from([("Arn".to_string(), arn)]);
    if let Some(stream_arn) = stream_arn {
        attrs.insert("StreamArn".into(), stream_arn);
    }
    Ok(Physical { id: name, attrs })
}

async fn create_bucket(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    use aws_sdk_s3::types as s3t;
    let s3 = &clients.s3;
    let p = |name: &str| props.get(name);
    let name = text(p("BucketName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, &r.kind));
    let object_lock = flag(p("ObjectLockEnabled")).unwrap_or(false);
    match s3
        .create_bucket()
        .bucket(&name)
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if code(&e) == "BucketAlreadyOwnedByYou" => {}
        Err(e) => return Err(sdk_err(format!("s3 create-bucket {name}"))(e)),
    }
    if let Some(retention) = p("ObjectLockConfiguration")
        .and_then(|c| c.get("Rule"))
        .and_then(|r| r.get("DefaultRetention"))
    {
        let mode = text(retention.get("Mode")).context("ObjectLockConfiguration DefaultRetention Mode")?;
        let mut default = s3t::DefaultRetention::builder().mode(mode.as_str().into());
        if let Some(days) = int(retention.get("Days"))? {
            default = default.days(days as i32);
        }
        if let Some(years) = int(retention.get("Years"))? {
            default = default.years(years as i32);
        }
        s3.put_object_lock_configuration()
            .bucket(&name)
            .object_lock_configuration(
                s3t::ObjectLockConfiguration::builder()
                    .object_lock_enabled(s3t::ObjectLockEnabled::Enabled)
                    .rule(
                        s3t::ObjectLockRule::builder()
                            .default_retention(default.build())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-object-lock-configuration {name}")))?;
    }
    if let Some(block) = p("PublicAccessBlockConfiguration") {
        let f = |k: &str| flag(block.get(k));
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(
                s3t::PublicAccessBlockConfiguration::builder()
                    .set_block_public_acls(f("BlockPublicAcls"))
                    .set_block_public_policy(f("BlockPublicPolicy"))
                    .set_ignore_public_acls(f("IgnorePublicAcls"))
                    .set_restrict_public_buckets(f("RestrictPublicBuckets"))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-public-access-block {name}")))?;
    }
    let rules = p("BucketEncryption")
        .and_then(|e| e.get("ServerSideEncryptionConfiguration"))
        .and_then(Value::as_sequence);
    if let Some(rules) = rules {
        let mut config = s3t::ServerSideEncryptionConfiguration::builder();
        for rule in rules {
            let by_default = rule.get("ServerSideEncryptionByDefault");
            let default = by_default
                .map(|d| {
                    s3t::ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(
                            text(d.get("SSEAlgorithm"))
                                .unwrap_or_else(|| "AES256".into())
                                .as_str()
                                .into(),
                        )
                        .set_kms_master_key_id(text(d.get("KMSMasterKeyID")))
                        .build()
                })
                .transpose()?;
            config = config.rules(
                s3t::ServerSideEncryptionRule::builder()
                    .set_apply_server_side_encryption_by_default(default)
                    .set_bucket_key_enabled(flag(rule.get("BucketKeyEnabled")))
                    .build(),
            );
        }
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(config.build()?)
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-bucket-encryption {name}")))?;
    }
    if let Some(status) = p("VersioningConfiguration").and_then(|v| text(v.get("Status"))) {
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(
                s3t::VersioningConfiguration::builder()
                    .status(status.as_str().into())
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-bucket-versioning {name}")))?;
    }
    if let Some(rules) = p("OwnershipControls")
        .and_then(|o| o.get("Rules"))
        .and_then(Value::as_sequence)
    {
        let mut controls = s3t::OwnershipControls::builder();
        for rule in rules {
            let ownership = text(rule.get("ObjectOwnership")).context("ObjectOwnership")?;
            controls = controls.rules(
                s3t::OwnershipControlsRule::builder()
                    .object_ownership(ownership.as_str().into())
                    .build()?,
            );
        }
        s3.put_bucket_ownership_controls()
            .bucket(&name)
            .ownership_controls(controls.build()?)
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-bucket-ownership-controls {name}")))?;
    }
    if let Some(rules) = p("LifecycleConfiguration")
        .and_then(|l| l.get("Rules"))
        .and_then(Value::as_sequence)
    {
        let mut config = s3t::BucketLifecycleConfiguration::builder();
        for rule in rules {
            config = config.rules(lifecycle_rule(rule)?);
        }
        s3.put_bucket_lifecycle_configuration()
            .bucket(&name)
            .lifecycle_configuration(config.build()?)
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-bucket-lifecycle-configuration {name}")))?;
    }
    let tag_set = tags(p("Tags"));
    if !tag_set.is_empty() {
        let mut tagging = s3t::Tagging::builder();
        for (k, v) in tag_set {
            tagging = tagging.tag_set(s3t::Tag::builder().key(k).value(v).build()?);
        }
        s3.put_bucket_tagging()
            .bucket(&name)
            .tagging(tagging.build()?)
            .send()
            .await
            .map_err(sdk_err(format!("s3 put-bucket-tagging {name}")))?;
    }
    Ok(Physical {
        id: name.clone(),
        attrs: BTreeMap::from([
            ("Arn".into(), format!("arn:aws:s3:::{name}")),
            ("DomainName".into(), format!("{name}.s3.amazonaws.com")),
            ("RegionalDomainName".into(), format!("{name}.s3.{REGION}.amazonaws.com")),
        ]),
    })
}

/// One `LifecycleConfiguration.Rules` entry. Rule fields the local stack does
/// not know are refused rather than dropped (a dropped expiry is drift).
fn lifecycle_rule(rule: &Value) -> Result<aws_sdk_s3::types::LifecycleRule> {
    use aws_sdk_s3::types as s3t;
    const KNOWN: &[&str] = &[
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "NoncurrentVersionExpirationInDays",
        "NoncurrentVersionExpiration",
        "AbortIncompleteMultipartUpload",
    ];
    for (k, _) in rule.as_mapping().into_iter().flatten() {
        let k = scalar_string(k);
        if !KNOWN.contains(&k.as_str()) {
            bail!("lifecycle rule property {k} is not provisioned locally: add it to infra/local/src/provision.rs");
        }
    }
    let mut out = s3t::LifecycleRule::builder()
        .set_id(text(rule.get("Id")))
        .status(
            text(rule.get("Status"))
                .context("lifecycle rule Status")?
                .as_str()
                .into(),
        )
        .filter(
            s3t::LifecycleRuleFilter::builder()
                .prefix(text(rule.get("Prefix")).unwrap_or_default())
                .build(),
        );
    if let Some(days) = int(rule.get("ExpirationInDays"))? {
        out = out.expiration(s3t::LifecycleExpiration::builder().days(days as i32).build());
    }
    let noncurrent = match int(rule.get("NoncurrentVersionExpirationInDays"))? {
        Some(days) => Some(days),
        None => int(rule
            .get("NoncurrentVersionExpiration")
            .and_then(|n| n.get("NoncurrentDays")))?,
    };
    if let Some(days) = noncurrent {
        out = out.noncurrent_version_expiration(
            s3t::NoncurrentVersionExpiration::builder()
                .noncurrent_days(days as i32)
                .build(),
        );
    }
    if let Some(days) = int(rule
        .get("AbortIncompleteMultipartUpload")
        .and_then(|a| a.get("DaysAfterInitiation")))?
    {
        out = out.abort_incomplete_multipart_upload(
            s3t::AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(days as i32)
                .build(),
        );
    }
    Ok(out.build()?)
}

async fn create_queue(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = &clients.sqs;
    let p = |name: &str| props.get(name);
    let fifo = flag(p("FifoQueue")) == Some(true);
    let mut name = text(p("QueueName")).unwrap_or_else(|| physical_name(stack, &r.logical_id, &r.kind));
    if fifo && !name.ends_with(".fifo") {
        name.push_str(".fifo");
    }
    let mut attributes = std::collections::HashMap::new();
    for (prop, attr) in [
        ("VisibilityTimeout", A::VisibilityTimeout),
        ("MessageRetentionPeriod", A::MessageRetentionPeriod),
        ("DelaySeconds", A::DelaySeconds),
        ("ReceiveMessageWaitTimeSeconds", A::ReceiveMessageWaitTimeSeconds),
        ("MaximumMessageSize", A::MaximumMessageSize),
        ("KmsMasterKeyId", A::KmsMasterKeyId),
        ("KmsDataKeyReusePeriodSeconds", A::KmsDataKeyReusePeriodSeconds),
        ("SqsManagedSseEnabled", A::SqsManagedSseEnabled),
        ("FifoQueue", A::FifoQueue),
        ("ContentBasedDeduplication", A::ContentBasedDeduplication),
        ("DeduplicationScope", A::DeduplicationScope),
        ("FifoThroughputLimit", A::FifoThroughputLimit),
    ] {
        if let Some(v) = text(p(prop)) {
            attributes.insert(attr, v);
        }
    }
    for (prop, attr) in [
        ("RedrivePolicy", A::RedrivePolicy),
        ("RedriveAllowPolicy", A::RedriveAllowPolicy),
    ] {
        match p(prop) {
            Some(Value::String(json)) => {
                attributes.insert(attr, json.clone());
            }
            Some(policy) => {
                let mut json: serde_json::Value = serde_json::to_value(policy)?;
                // CloudFormation takes the count as a number or a string; SQS wants a number.
                if let Some(count) = json.get("maxReceiveCount").and_then(|c| c.as_str()).map(str::to_string) {
                    json["maxReceiveCount"] = serde_json::Value::from(count.parse::<u64>().context("maxReceiveCount")?);
                }
                attributes.insert(attr, json.to_string());
            }
            None => {}
        }
    }
    let mut request = sqs
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attributes.clone()));
    for (k, v) in tags(p("Tags")) {
        request = request.tags(k, v);
    }
    let url = match request.send().await {
        Ok(out) => out.queue_url().context("queue url")?.to_string(),
        // The queue exists with other attributes: apply the template's.
        Err(e) if code(&e).contains("QueueAlreadyExists") || code(&e) == "QueueNameExists" => {
            let url = sqs
                .get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .map_err(sdk_err(format!("sqs get-queue-url {name}")))?
                .queue_url()
                .context("queue url")?
                .to_string();
            attributes.remove(&A::FifoQueue);
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(sdk_err(format!("sqs set-queue-attributes {name}")))?;
            url
        }
        Err(e) => return Err(sdk_err(format!("sqs create-queue {name}"))(e)),
    };
    let out = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .map_err(sdk_err(format!("sqs get-queue-attributes {name}")))?;
    let arn = out
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

async fn create_identity(clients: &Clients, props: &Value) -> Result<Physical> {
    let identity = text(props.get("EmailIdentity")).context("EmailIdentity")?;
    match clients
        .ses
        .create_email_identity()
        .email_identity(&identity)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if code(&e) == "AlreadyExistsException" => {}
        Err(e) => return Err(sdk_err(format!("sesv2 create-email-identity {identity}"))(e)),
    }
    Ok(Physical {
        id: identity,
        attrs: BTreeMap::new(),
    })
}

async fn create_schedule(clients: &Clients, stack: &str, r: &Resource, props: &Value) -> Result<Physical> {
    use aws_sdk_scheduler::types as sch;
    let p = |name: &str| props.get(name);
    let name = text(p("Name")).unwrap_or_else(|| physical_name(stack, &r.logical_id, &r.kind));
    let group = text(p("GroupName")).unwrap_or_else(|| "default".into());
    let window = p("FlexibleTimeWindow").context("FlexibleTimeWindow")?;
    let window = sch::FlexibleTimeWindow::builder()
        .mode(
            text(window.get("Mode"))
                .context("FlexibleTimeWindow.Mode")?
                .as_str()
                .into(),
        )
        .set_maximum_window_in_minutes(int(window.get("MaximumWindowInMinutes"))?.map(|m| m as i32))
        .build()?;
    let target = p("Target").context("Target")?;
    let retry = target
        .get("RetryPolicy")
        .map(|r| -> Result<sch::RetryPolicy> {
            Ok(sch::RetryPolicy::builder()
                .set_maximum_event_age_in_seconds(int(r.get("MaximumEventAgeInSeconds"))?.map(|v| v as i32))
                .set_maximum_retry_attempts(int(r.get("MaximumRetryAttempts"))?.map(|v| v as i32))
                .build())
        })
        .transpose()?;
    let dead_letter = target
        .get("DeadLetterConfig")
        .map(|d| sch::DeadLetterConfig::builder().set_arn(text(d.get("Arn"))).build());
    let sqs_parameters = target.get("SqsParameters").map(|s| {
        sch::SqsParameters::builder()
            .set_message_group_id(text(s.get("MessageGroupId")))
            .build()
    });
    let target = sch::Target::builder()
        .arn(text(target.get("Arn")).context("Target.Arn")?)
        .role_arn(text(target.get("RoleArn")).context("Target.RoleArn")?)
        .set_input(text(target.get("Input")))
        .set_retry_policy(retry)
        .set_dead_letter_config(dead_letter)
        .set_sqs_parameters(sqs_parameters)
        .build()?;
    let expression = text(p("ScheduleExpression")).context("ScheduleExpression")?;
    let timezone = text(p("ScheduleExpressionTimezone"));
    let state = text(p("State")).map(|s| sch::ScheduleState::from(s.as_str()));
    let date = |prop: &str| -> Result<Option<aws_sdk_scheduler::primitives::DateTime>> {
        text(p(prop))
            .map(|d| {
                aws_sdk_scheduler::primitives::DateTime::from_str(
                    &d,
                    aws_sdk_scheduler::primitives::DateTimeFormat::DateTime,
                )
                .with_context(|| format!("{prop} {d}"))
            })
            .transpose()
    };
    let (start, end) = (date("StartDate")?, date("EndDate")?);
    let created = clients
        .scheduler
        .create_schedule()
        .name(&name)
        .group_name(&group)
        .set_description(text(p("Description")))
        .schedule_expression(&expression)
        .set_schedule_expression_timezone(timezone.clone())
        .flexible_time_window(window.clone())
        .target(target.clone())
        .set_state(state.clone())
        .set_start_date(start)
        .set_end_date(end)
        .send()
        .await;
    let arn = match created {
        Ok(out) => out.schedule_arn().to_string(),
        Err(e) if code(&e) == "ConflictException" => clients
            .scheduler
            .update_schedule()
            .name(&name)
            .group_name(&group)
            .set_description(text(p("Description")))
            .schedule_expression(&expression)
            .set_schedule_expression_timezone(timezone)
            .flexible_time_window(window)
            .target(target)
            .set_state(state)
            .set_start_date(start)
            .set_end_date(end)
            .send()
            .await
            .map_err(sdk_err(format!("scheduler update-schedule {name}")))?
            .schedule_arn()
            .to_string(),
        Err(e) => return Err(sdk_err(format!("scheduler create-schedule {name}"))(e)),
    };
    Ok(Physical {
        id: name,
        attrs: BTreeMap::from([("Arn".into(), arn), ("GroupName".into(), group)]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn generated_secrets_follow_the_template_options() {
        let v = generate_secret(&spec("{PasswordLength: 32, ExcludePunctuation: true}")).expect("secret");
        assert_eq!(v.len(), 32);
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric()), "{v}");
        assert!(
            v.chars().any(|c| c.is_ascii_digit()),
            "each included type is present: {v}"
        );
        assert!(v.chars().any(|c| c.is_ascii_uppercase()), "{v}");

        let v = generate_secret(&spec("{PasswordLength: 64, ExcludeCharacters: 'abc\"@/\\'}")).expect("secret");
        assert_eq!(v.len(), 64);
        assert!(!v.contains(['a', 'b', 'c', '"', '@', '/', '\\']), "{v}");
        assert!(
            v.chars().any(|c| PUNCTUATION.contains(c)),
            "punctuation is included by default: {v}"
        );

        let v = generate_secret(&spec(
            "{ExcludeUppercase: true, ExcludeNumbers: true, ExcludePunctuation: true, PasswordLength: 8}",
        ))
        .expect("secret");
        assert!(v.chars().all(|c| c.is_ascii_lowercase()), "{v}");

        let v = generate_secret(&spec(
            r#"{SecretStringTemplate: '{"user":"admin"}', GenerateStringKey: password, PasswordLength: 12}"#,
        ))
        .expect("secret");
        let json: serde_json::Value = serde_json::from_str(&v).expect("json");
        assert_eq!(json["user"], "admin");
        assert_eq!(json["password"].as_str().map(str::len), Some(12));

        assert_eq!(generate_secret(&Value::Null).expect("defaults").len(), 32);
        assert!(
            generate_secret(&spec(
                "{ExcludeLowercase: true, ExcludeUppercase: true, ExcludeNumbers: true, ExcludePunctuation: true}"
            ))
            .is_err()
        );
    }

    #[test]
    fn physical_names_follow_each_type_s_rules() {
        assert_eq!(
            physical_name("strata-local", "StateTable", "AWS::DynamoDB::Table"),
            "strata-local-StateTable"
        );
        assert_eq!(
            physical_name("Strata Local", "DataBucket", "AWS::S3::Bucket"),
            "strata-local-databucket"
        );
        let long = "x".repeat(100);
        assert_eq!(physical_name(&long, "DataBucket", "AWS::S3::Bucket").len(), 63);
        assert!(
            physical_name(&long, "Q", "AWS::SQS::Queue").len() <= 75,
            "room for .fifo"
        );
        assert_eq!(
            physical_name("s", "BootstrapSecret", "AWS::SecretsManager::Secret"),
            "s-BootstrapSecret"
        );
    }

    #[test]
    fn every_property_of_the_project_template_is_provisioned_or_deliberately_skipped() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let template = Template::load(&path).expect("template");
        assert_eq!(
            unhandled_properties(&template),
            Vec::<(String, String)>::new(),
            "the local stack would silently drift from these template properties"
        );
    }
}
