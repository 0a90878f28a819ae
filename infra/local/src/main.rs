//! `strata-local`: run Strata on this machine (see the README).

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use strata_local::{Stack, StackOptions, wire};

#[derive(Parser)]
#[command(about = "The Strata local stack: AWS emulator, template resources, queue pollers, schedules, HTTP API")]
struct Cli {
    /// Repository root (where infra/template.yaml is).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start everything and serve until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 8787)]
        api_port: u16,
        /// Fire the schedules on their timetable.
        #[arg(long)]
        schedules: bool,
        /// Template parameters, as Name=Value.
        #[arg(long = "parameter", value_parser = parse_pair)]
        parameters: Vec<(String, String)>,
    },
    /// Fire a schedule of a running `up` now.
    Fire { schedule: String },
    /// Print a function's resolved environment (of a running `up`).
    Env { function: String },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected Name=Value, got {s}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StackFile {
    endpoint: String,
    stack_name: String,
    api_url: Option<String>,
    parameters: BTreeMap<String, String>,
    physical: BTreeMap<String, strata_local::Physical>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cli.root.canonicalize().context("repository root")?;
    let state_file = root.join(".strata-local/stack.json");
    match cli.command {
        Command::Up {
            api_port,
            schedules,
            parameters,
        } => {
            strata::telemetry::init();
            let mut options = StackOptions::new(&root);
            options.parameters = parameters.into_iter().collect();
            let stack = Stack::start(options).await?;
            let handlers = wire::handlers(&stack, &wire::local_overrides()).await?;
            let addr = format!("127.0.0.1:{api_port}").parse()?;
            let running = if schedules {
                stack.run_with_schedules(handlers, Some(addr)).await?
            } else {
                stack.run(handlers, Some(addr)).await?
            };
            let file = StackFile {
                endpoint: stack.endpoint().to_string(),
                stack_name: stack.options.stack_name.clone(),
                api_url: running.api_url(),
                parameters: stack.parameters().clone(),
                physical: stack.physical().clone(),
            };
            std::fs::create_dir_all(root.join(".strata-local"))?;
            std::fs::write(&state_file, serde_json::to_vec_pretty(&file)?)?;
            println!("AWS emulator  {}", stack.endpoint());
            println!("HTTP API      {}", running.api_url().unwrap_or_default());
            println!(
                "bootstrap     aws --endpoint-url {} secretsmanager get-secret-value --secret-id {}",
                stack.endpoint(),
                stack.physical_id("BootstrapSecret").unwrap_or("?")
            );
            println!("Ctrl-C stops everything.");
            tokio::signal::ctrl_c().await?;
            running.stop().await;
            stack.stop().await;
            let _ = std::fs::remove_file(&state_file);
        }
        Command::Fire { schedule } => {
            let file: StackFile = serde_json::from_slice(
                &std::fs::read(&state_file).context("no running stack: start `strata-local up` (make dev) first")?,
            )?;
            let mut options = StackOptions::new(&root);
            options.endpoint = Some(file.endpoint.clone());
            let template = strata_local::Template::load(&root.join("infra/template.yaml"))?;
            let resource = template
                .resources
                .get(&schedule)
                .with_context(|| format!("no schedule {schedule} in the template"))?;
            let target = resource
                .prop("Target")
                .and_then(|t| t.get("Arn"))
                .and_then(strata_local::template::referenced_id)
                .context("schedule target")?;
            let queue_url = file
                .physical
                .get(&target)
                .map(|p| p.id.clone())
                .context("target queue")?;
            let input = resource
                .prop("Target")
                .and_then(|t| t.get("Input"))
                .and_then(|i| i.as_str())
                .unwrap_or("{}")
                .to_string();
            let sdk = strata_local::sdk_config(&file.endpoint).await;
            aws_sdk_sqs::Client::new(&sdk)
                .send_message()
                .queue_url(&queue_url)
                .message_body(&input)
                .send()
                .await
                .context("send the schedule's input")?;
            println!("fired {schedule}: {input} -> {target}");
        }
        Command::Env { function } => {
            let file: StackFile = serde_json::from_slice(
                &std::fs::read(&state_file).context("no running stack: start `strata-local up` first")?,
            )?;
            let template = strata_local::Template::load(&root.join("infra/template.yaml"))?;
            let resolver = strata_local::template::Resolver {
                stack_name: &file.stack_name,
                parameters: &file.parameters,
                physical: &file.physical,
            };
            for (k, v) in template.function_env(&function, &resolver)? {
                println!("{k}={v}");
            }
            println!("AWS_ENDPOINT_URL={}", file.endpoint);
        }
    }
    Ok(())
}
