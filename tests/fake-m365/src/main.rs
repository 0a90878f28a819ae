//! `fake-m365`: serve a fake Microsoft 365 tenant until killed.

use clap::Parser;
use fake_m365::{FakeM365, Options, Sizes, Tenant};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A fake Microsoft 365 (Entra ID token endpoint + Graph) on loopback")]
struct Args {
    /// Generate a tenant of this many users (default: the small demo tenant).
    #[arg(long)]
    users: Option<usize>,
    #[arg(long, default_value_t = 10)]
    sites: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Read the tenant from a directory of <user>/<folder>/<n>.eml.
    #[arg(long)]
    from_dir: Option<PathBuf>,
    /// 1.0 is real time; 0.01 makes the 10-minute throttling window 6 s.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[arg(long)]
    no_throttle: bool,
    /// Fault rules as JSON, e.g. '{"rules":[{"path_contains":"/users","kind":{"type":"status","status":503},"probability":0.1}]}'
    /// (also settable at run time: POST /_fake/faults).
    #[arg(long)]
    faults: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tenant = match (&args.from_dir, args.users) {
        (Some(dir), _) => Tenant::from_dir(dir)?,
        (None, Some(users)) => Tenant::generate(
            args.seed,
            Sizes {
                users,
                sites: args.sites,
            },
        ),
        (None, None) => Tenant::small_demo(),
    };
    let options = Options {
        time_scale: args.time_scale,
        throttle: !args.no_throttle,
        seed: args.seed,
        ..Options::default()
    };
    let fake = FakeM365::start(tenant, options).await?;
    println!(
        "{}",
        serde_json::json!({"url": fake.url(), "tenant_id": fake.tenant_id(), "client_id": fake.client_id(), "client_secret": fake.client_secret()})
    );
    tokio::signal::ctrl_c().await?;
    fake.stop().await;
    Ok(())
}
