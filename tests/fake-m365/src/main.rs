//! `fake-m365`: serve a fake Microsoft 365 tenant until killed.
//!
//! Prints one JSON line on start: `{"url","tenant_id","client_id","client_secret"}`.

use anyhow::Context as _;
use clap::Parser;
use fake_m365::{FakeM365, Faults, Options, Sizes, Tenant};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "A fake Microsoft 365 (Entra ID token endpoint + Graph) on loopback")]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of the generated tenant and of the fault decisions.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Generate a tenant of this many users (default: the small demo tenant).
    #[arg(long, conflicts_with_all = ["from_dir", "demo"])]
    users: Option<usize>,
    /// Sites of a generated tenant (root site included).
    #[arg(long, default_value_t = 10)]
    sites: usize,
    /// Messages in each mailbox of a generated tenant.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// Read the tenant from a directory of <user>/<folder>/<n>.eml (and an optional tenant.json).
    #[arg(long, conflicts_with = "demo")]
    from_dir: Option<PathBuf>,
    /// The small hand-written demo tenant (the default).
    #[arg(long)]
    demo: bool,
    /// 1.0 is real time; 0.01 makes the 10-minute throttling window 6 s.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Turn throttling off.
    #[arg(long)]
    no_throttle: bool,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3599.0)]
    token_lifetime: f64,
    /// Fault rules as JSON, e.g. '{"rules":[{"path_contains":"/users","kind":{"type":"status","status":503},"probability":0.1}]}'
    /// (also settable at run time: POST /_fake/faults).
    #[arg(long)]
    faults: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let tenant = match (&args.from_dir, args.users) {
        (Some(dir), _) => Tenant::from_dir(dir)?,
        (None, Some(users)) => Tenant::generate(
            args.seed,
            Sizes {
                users,
                sites: args.sites,
            },
        )
        .with_generated_mail(args.seed, args.messages),
        (None, None) => Tenant::small_demo(),
    };
    let faults: Faults = match &args.faults {
        Some(json) => serde_json::from_str(json).context("--faults")?,
        None => Faults::default(),
    };
    faults.validate().map_err(anyhow::Error::msg).context("--faults")?;
    let options = Options {
        time_scale: args.time_scale,
        throttle: !args.no_throttle,
        seed: args.seed,
        token_lifetime: Duration::try_from_secs_f64(args.token_lifetime).context("--token-lifetime")?,
        faults,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let fake = FakeM365::start_on(tenant, options, addr).await?;
    println!(
        "{}",
        serde_json::json!({"url": fake.url(), "tenant_id": fake.tenant_id(), "client_id": fake.client_id(), "client_secret": fake.client_secret()})
    );
    tokio::signal::ctrl_c().await?;
    fake.stop().await;
    Ok(())
}
