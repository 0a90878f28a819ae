//! The context every handler borrows: configuration and clients, built once at cold start.

use crate::config::Config;
use crate::queue::{Enqueue, SqsQueue};
use crate::secrets::{BootstrapToken, KmsSealer, Sealer, SecretsManagerToken};
use crate::state::{DynamoItems, ItemStore, State};
use std::sync::Arc;
use std::time::Duration;

/// Configuration plus the clients of the edges (state, sealing, queues, HTTP).
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub state: State,
    pub sealer: Arc<dyn Sealer>,
    pub discovery_queue: Arc<dyn Enqueue>,
    pub bootstrap: Arc<dyn BootstrapToken>,
    /// Where the backup repository lives (the data bucket) and who wraps its keys (KMS).
    pub repo_store: Arc<dyn crate::repo::BlobStore>,
    pub repo_keys: Arc<dyn crate::repo::KeyProvider>,
    /// Queue of backup requests (`BACKUP_QUEUE_URL`), when the function sends them.
    pub backup_queue: Option<Arc<dyn Enqueue>>,
    /// Queues of restore and export jobs, when the function sends them.
    pub restore_queue: Option<Arc<dyn Enqueue>>,
    pub export_queue: Option<Arc<dyn Enqueue>>,
    pub purge_queue: Option<Arc<dyn Enqueue>>,
    /// The data bucket's S3 client (exports: multipart uploads, presigned links).
    pub s3: aws_sdk_s3::Client,
    /// Sends e-mail (SESv2).
    pub mailer: Arc<dyn crate::notify::Mailer>,
    /// The HTTP client of the SaaS connectors.
    pub http: reqwest::Client,
}

impl Context {
    /// A Lambda's cold start: configuration and AWS clients from the environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = Config::from_env()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.aws_region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Ok(Self::from_sdk(config, &sdk)?)
    }

    /// Builds the context on a ready SDK configuration (the local stack's, in tests).
    pub fn from_sdk(config: Config, sdk: &aws_config::SdkConfig) -> Result<Self, reqwest::Error> {
        let items: Arc<dyn ItemStore> = Arc::new(DynamoItems::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.state_table,
        ));
        let sealer = Arc::new(KmsSealer::new(aws_sdk_kms::Client::new(sdk), &config.kms_key_id));
        let discovery_queue = Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(sdk),
            &config.discovery_queue_url,
        ));
        let bootstrap = Arc::new(SecretsManagerToken::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            &config.bootstrap_secret_arn,
        ));
        // Path-style addressing for emulators on loopback; virtual-hosted style in AWS.
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.aws_endpoint_url.is_some())
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_config);
        let repo_store = Arc::new(crate::repo::S3Store::new(s3.clone(), &config.data_bucket));
        let repo_keys = Arc::new(crate::repo::KmsKeys::new(
            aws_sdk_kms::Client::new(sdk),
            &config.kms_key_id,
        ));
        let queue = |url: &Option<String>| {
            url.as_ref()
                .map(|url| Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), url)) as Arc<dyn Enqueue>)
        };
        let mailer = Arc::new(crate::notify::SesMailer::new(
            aws_sdk_sesv2::Client::new(sdk),
            &config.ses_from_address,
        ));
        Ok(Self {
            state: State::new(items),
            sealer,
            discovery_queue,
            bootstrap,
            repo_store,
            repo_keys,
            backup_queue: queue(&config.backup_queue_url),
            restore_queue: queue(&config.restore_queue_url),
            export_queue: queue(&config.export_queue_url),
            purge_queue: queue(&config.purge_queue_url),
            s3,
            mailer,
            http: http_client()?,
            config,
        })
    }
}

/// The HTTP client of the connectors: bounded connect and request times.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
}
