//! The local stack: Strata without an AWS account. An AWS emulator (moto),
//! the resources of `infra/template.yaml` created in it, the queues polled
//! with the Lambda event-source semantics calling the real handlers, the
//! schedules fired, and the HTTP API served on loopback.

pub mod emulator;
pub mod provision;
pub mod runner;
pub mod schedule;
pub mod template;
pub mod wire;

use anyhow::{Context as _, Result, anyhow};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use runner::{Handler, Running, SqsHandler};
pub use template::{Physical, Template};

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The repository root: `infra/template.yaml` and `.venv` are found from it.
    pub repo_root: PathBuf,
    pub stack_name: String,
    /// Use this AWS endpoint (LocalStack, AWS) instead of starting moto.
    pub endpoint: Option<String>,
    /// Template parameter values (defaults come from the template).
    pub parameters: BTreeMap<String, String>,
    /// Make a failed message visible again after this many seconds instead of
    /// the queue's visibility timeout (tests need not wait 90 minutes).
    pub failed_visibility_secs: Option<i32>,
    /// No line per message, no progress bar.
    pub quiet: bool,
}

impl StackOptions {
    pub fn new(repo_root: impl Into<PathBuf>) -> Self {
        Self {
            repo_root: repo_root.into(),
            stack_name: "strata-local".into(),
            endpoint: std::env::var("AWS_ENDPOINT_URL").ok().filter(|e| !e.is_empty()),
            parameters: BTreeMap::new(),
            failed_visibility_secs: None,
            quiet: false,
        }
    }
}

/// A provisioned stack.
pub struct Stack {
    pub options: StackOptions,
    template: Template,
    parameters: BTreeMap<String, String>,
    physical: BTreeMap<String, Physical>,
    sdk: aws_config::SdkConfig,
    emulator: emulator::Emulator,
}

/// The SDK configuration of an endpoint: region, test credentials unless the environment has real ones.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(template::REGION))
        .endpoint_url(endpoint);
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "strata-local",
        ));
    }
    loader.load().await
}

impl Stack {
    /// Starts (or reaches) the emulator and creates every resource of the template.
    pub async fn start(options: StackOptions) -> Result<Self> {
        let template = Template::load(&options.repo_root.join("infra/template.yaml"))?;
        let mut parameters = BTreeMap::new();
        for (name, default) in &template.parameters {
            match options.parameters.get(name).or(default.as_ref()) {
                Some(v) => parameters.insert(name.clone(), v.clone()),
                None => return Err(anyhow!("template parameter {name} has no default: give a value")),
            };
        }
        let emulator = emulator::Emulator::start(&options.repo_root, options.endpoint.clone()).await?;
        let sdk = sdk_config(&emulator.endpoint).await;
        let physical = provision::provision(&sdk, &template, &options.stack_name, &parameters)
            .await
            .context("provision the template's resources")?;
        Ok(Self {
            options,
            template,
            parameters,
            physical,
            sdk,
            emulator,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.emulator.endpoint
    }

    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk.clone()
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The template parameters in force (given values over defaults).
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }

    pub fn physical(&self) -> &BTreeMap<String, Physical> {
        &self.physical
    }

    /// `Ref` of a provisioned resource: table or bucket name, queue URL, key id, secret ARN.
    pub fn physical_id(&self, logical_id: &str) -> Option<&str> {
        self.physical.get(logical_id).map(|p| p.id.as_str())
    }

    fn resolver(&self) -> template::Resolver<'_> {
        template::Resolver {
            stack_name: &self.options.stack_name,
            parameters: &self.parameters,
            physical: &self.physical,
        }
    }

    /// A function's environment as Lambda would give it: the template's
    /// `Globals` and own variables resolved, plus the emulator's endpoint.
    pub fn function_env(&self, function: &str) -> Result<BTreeMap<String, String>> {
        let mut env = self.template.function_env(function, &self.resolver())?;
        env.insert("AWS_ENDPOINT_URL".into(), self.endpoint().to_string());
        env.insert("AWS_REGION".into(), template::REGION.into());
        Ok(env)
    }

    /// Starts the queue pollers and, when given an address, the HTTP API.
    pub async fn run(&self, handlers: HashMap<String, Handler>, api_addr: Option<SocketAddr>) -> Result<Running> {
        runner::start(self, handlers, api_addr, false).await
    }

    /// As [`Stack::run`], and fires the schedules on their timetable.
    pub async fn run_with_schedules(
        &self,
        handlers: HashMap<String, Handler>,
        api_addr: Option<SocketAddr>,
    ) -> Result<Running> {
        runner::start(self, handlers, api_addr, true).await
    }

    /// Delivers a schedule's target input now.
    pub async fn fire(&self, schedule: &str) -> Result<()> {
        let schedules = schedule::schedules(self)?;
        let s = schedules.iter().find(|s| s.logical_id == schedule).with_context(|| {
            format!(
                "no schedule {schedule}; the template has {:?}",
                schedules.iter().map(|s| &s.logical_id).collect::<Vec<_>>()
            )
        })?;
        s.fire(&self.sdk).await
    }

    /// Stops the emulator if this stack started it.
    pub async fn stop(mut self) {
        self.emulator.stop().await;
    }

    pub(crate) fn shared_sdk(&self) -> Arc<aws_config::SdkConfig> {
        Arc::new(self.sdk.clone())
    }
}
