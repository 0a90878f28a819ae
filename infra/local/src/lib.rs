//! The local stack: Strata without an AWS account. An AWS emulator (moto),
//! the resources of `infra/template.yaml` created in it, the queues polled
//! with the Lambda event-source semantics calling the real handlers, the
//! schedules fired, and the HTTP API served on loopback.
//!
//! Every [`Stack`] is independent (its own emulator on its own port), and
//! handlers get their configuration from [`Stack::function_env`], never from
//! the process environment, so tests run in parallel.

pub mod emulator;
pub mod provision;
pub mod runner;
pub mod schedule;
pub mod template;
pub mod wire;

use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use runner::{Handler, Running, SqsHandler, Stats};
pub use template::{Physical, Template};

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The repository root: `infra/template.yaml` and `.venv` are found from it.
    pub repo_root: PathBuf,
    /// Names the resources the template leaves unnamed (`<stack>-<LogicalId>`).
    pub stack_name: String,
    /// Use this AWS endpoint (LocalStack, a running moto) instead of starting moto.
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
    /// Defaults for the CLI: stack `strata-local`, the endpoint of
    /// `AWS_ENDPOINT_URL` when set (read once, here).
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

/// The SDK configuration of an endpoint, region `us-east-1`. With
/// `emulated` (an emulator this process started) the credentials are static
/// test ones; otherwise those of the environment when it has some.
pub async fn sdk_config(endpoint: &str, emulated: bool) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(template::REGION))
        .endpoint_url(endpoint);
    if emulated || std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
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

/// What a provisioned stack is, apart from its template: written to
/// `.strata-local/stack.json` by `strata-local up` so that `fire` and `env`
/// find the running stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackState {
    pub stack_name: String,
    pub endpoint: String,
    /// Whether the endpoint is an emulator started by `strata-local` (test credentials).
    #[serde(default)]
    pub emulated: bool,
    /// The parameter values in force.
    pub parameters: BTreeMap<String, String>,
    /// Logical id to what `Ref`/`GetAtt` answer.
    pub physical: BTreeMap<String, Physical>,
    /// The HTTP API, when served.
    #[serde(default)]
    pub api_url: Option<String>,
}

impl StackState {
    /// Resolves the template's values against this provisioned stack.
    pub fn resolver<'a>(&'a self, template: &'a Template) -> template::Resolver<'a> {
        template::Resolver {
            stack_name: &self.stack_name,
            parameters: &self.parameters,
            physical: &self.physical,
            conditions: &template.conditions,
        }
    }

    /// A function's environment as Lambda would give it: the template's
    /// `Globals` and own variables resolved, plus the endpoint and region.
    pub fn function_env(&self, template: &Template, function: &str) -> Result<BTreeMap<String, String>> {
        let mut env = template.function_env(function, &self.resolver(template))?;
        env.insert("AWS_ENDPOINT_URL".into(), self.endpoint.clone());
        env.insert("AWS_REGION".into(), template::REGION.into());
        Ok(env)
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint, self.emulated).await
    }

    /// Reads the state `strata-local up` wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "no running stack ({} is missing): start `strata-local up` first",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?).with_context(|| format!("write {}", path.display()))
    }
}

/// A provisioned stack.
pub struct Stack {
    pub options: StackOptions,
    template: Template,
    state: StackState,
    sdk: aws_config::SdkConfig,
    emulator: emulator::Emulator,
}

impl Stack {
    /// Starts (or reaches) the emulator and creates every resource of the template.
    pub async fn start(options: StackOptions) -> Result<Self> {
        let template = Template::load(&options.repo_root.join("infra/template.yaml"))?;
        let parameters = template.parameter_values(&options.parameters)?;
        let emulator = emulator::Emulator::start(&options.repo_root, options.endpoint.clone()).await?;
        let sdk = sdk_config(&emulator.endpoint, emulator.owned()).await;
        let physical = provision::provision(&sdk, &template, &options.stack_name, &parameters)
            .await
            .with_context(|| format!("provision the template's resources at {}", emulator.endpoint))?;
        let state = StackState {
            stack_name: options.stack_name.clone(),
            endpoint: emulator.endpoint.clone(),
            emulated: emulator.owned(),
            parameters,
            physical,
            api_url: None,
        };
        Ok(Self {
            options,
            template,
            state,
            sdk,
            emulator,
        })
    }

    /// The AWS endpoint (`AWS_ENDPOINT_URL`) of the stack.
    pub fn endpoint(&self) -> &str {
        &self.emulator.endpoint
    }

    /// SDK configuration for the stack's endpoint (region, credentials, endpoint).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk.clone()
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The stack as `stack.json` records it.
    pub fn state(&self) -> &StackState {
        &self.state
    }

    /// The template parameters in force (given values over defaults).
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        &self.state.parameters
    }

    pub fn physical(&self) -> &BTreeMap<String, Physical> {
        &self.state.physical
    }

    /// `Ref` of a resource: table or bucket name, queue URL, key id, secret ARN, schedule name.
    pub fn physical_id(&self, logical_id: &str) -> Option<&str> {
        self.state.physical.get(logical_id).map(|p| p.id.as_str())
    }

    /// A function's environment as Lambda would give it: the template's
    /// `Globals` and own variables resolved, plus `AWS_ENDPOINT_URL` and `AWS_REGION`.
    pub fn function_env(&self, function: &str) -> Result<BTreeMap<String, String>> {
        self.state.function_env(&self.template, function)
    }

    /// The template's schedules, resolved.
    pub fn schedules(&self) -> Result<Vec<schedule::Schedule>> {
        schedule::schedules(&self.template, &self.state)
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

    /// Delivers a schedule's `Target.Input` to its target now.
    pub async fn fire(&self, schedule: &str) -> Result<()> {
        schedule::find(&self.template, &self.state, schedule)?
            .fire(&self.sdk)
            .await
    }

    /// Stops the emulator if this stack started it (dropping the stack does too).
    pub async fn stop(mut self) {
        self.emulator.stop().await;
    }
}
