//! `strata-local`: run Strata on this machine (see the README).
//!
//! `up` starts the emulator, provisions the template, runs the handlers and
//! writes `.strata-local/stack.json`; `fire` and `env` read that file to reach
//! the running stack.

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_local::{Stack, StackOptions, StackState, Template, schedule, wire};

#[derive(Parser)]
#[command(about = "The Strata local stack: AWS emulator, template resources, queue pollers, schedules, HTTP API")]
struct Cli {
    /// Repository root (where infra/template.yaml is); found from the current directory by default.
    #[arg(long)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start everything and serve until Ctrl-C.
    Up {
        /// Port of the HTTP API on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8787)]
        api_port: u16,
        /// Fire the schedules on their timetable.
        #[arg(long)]
        schedules: bool,
        /// Template parameters, as Name=Value (repeatable).
        #[arg(long = "parameter", value_parser = parse_pair)]
        parameters: Vec<(String, String)>,
        /// Names the resources the template leaves unnamed.
        #[arg(long, default_value = "strata-local")]
        stack_name: String,
        /// No line per message, no progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Fire a schedule of the running stack now (its Target.Input to its target).
    Fire { schedule: String },
    /// Print a function's resolved environment in the running stack, as KEY=value lines.
    Env { function: String },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected Name=Value, got {s}"))
}

/// The nearest directory upwards holding `infra/template.yaml`.
fn find_root(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(root) = given {
        return root
            .canonicalize()
            .with_context(|| format!("repository root {}", root.display()));
    }
    let cwd = std::env::current_dir().context("current directory")?;
    cwd.ancestors()
        .find(|dir| dir.join("infra/template.yaml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("no infra/template.yaml in {} or above; pass --root", cwd.display()))
}

/// Whether something listens at an `http://host:port` endpoint.
async fn answers(endpoint: &str) -> bool {
    let authority = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    tokio::net::TcpStream::connect(authority).await.is_ok()
}

async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = find_root(cli.root)?;
    let state_file = root.join(".strata-local/stack.json");
    let template_path = root.join("infra/template.yaml");
    match cli.command {
        Command::Up {
            api_port,
            schedules,
            parameters,
            stack_name,
            quiet,
        } => {
            if let Ok(previous) = StackState::load(&state_file) {
                // A stale file (the emulator gone) is overwritten below.
                let still_running = answers(&previous.endpoint).await;
                if still_running {
                    bail!(
                        "a stack is already running (emulator {}, see {}); stop it first",
                        previous.endpoint,
                        state_file.display()
                    );
                }
            }
            strata::telemetry::init();
            let mut options = StackOptions::new(&root);
            options.parameters = parameters.into_iter().collect();
            options.stack_name = stack_name;
            options.quiet = quiet;
            let stack = Stack::start(options).await?;
            let handlers = wire::handlers(&stack, &wire::local_overrides()).await?;
            if handlers.is_empty() {
                eprintln!("warning: no handlers are wired (infra/local/src/wire.rs): queues are not polled");
            } else {
                let missing: Vec<String> = stack
                    .template()
                    .functions()
                    .into_iter()
                    .filter(|f| !handlers.contains_key(f))
                    .collect();
                if !missing.is_empty() {
                    bail!("no local handler for {missing:?}: wire them in infra/local/src/wire.rs");
                }
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], api_port));
            let api_addr = handlers
                .values()
                .any(|h| matches!(h, strata_local::Handler::Http(_)))
                .then_some(addr);
            let running = if schedules {
                stack.run_with_schedules(handlers, api_addr).await?
            } else {
                stack.run(handlers, api_addr).await?
            };
            let mut state = stack.state().clone();
            state.api_url = running.api_url();
            state.save(&state_file)?;
            println!("AWS emulator  {}", stack.endpoint());
            println!("HTTP API      {}", running.api_url().unwrap_or_else(|| "(none)".into()));
            println!(
                "bootstrap     aws --endpoint-url {} secretsmanager get-secret-value --secret-id {}",
                stack.endpoint(),
                stack.physical_id("BootstrapSecret").unwrap_or("?")
            );
            println!("stack         {}", state_file.display());
            println!("Ctrl-C stops everything.");
            let signal = shutdown_signal().await;
            running.stop().await;
            stack.stop().await;
            let _ = std::fs::remove_file(&state_file);
            signal?;
        }
        Command::Fire { schedule } => {
            let state = StackState::load(&state_file)?;
            let template = Template::load(&template_path)?;
            let s = schedule::find(&template, &state, &schedule)?;
            s.fire(&state.sdk_config().await).await?;
            println!("fired {schedule}: {} -> {}", s.input, s.queue_logical_id);
        }
        Command::Env { function } => {
            let state = StackState::load(&state_file)?;
            let template = Template::load(&template_path)?;
            // What the handlers of `up` see: the template's variables plus the local overrides.
            let mut env: BTreeMap<String, String> = state.function_env(&template, &function)?;
            env.extend(wire::local_overrides());
            for (k, v) in env {
                println!("{k}={v}");
            }
        }
    }
    Ok(())
}
