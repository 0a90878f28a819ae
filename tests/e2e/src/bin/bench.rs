//! `make bench`: the mail backup through the local stack (moto over HTTP, the
//! fake Microsoft 365 over HTTP, the real handlers), printing each figure on
//! a line of its own as `name: value unit`. Not a test: nothing is asserted.
//!
//! A mailbox of 10,000 messages (about 60 KB on average; a fifth with an
//! attachment from a pool that another mailbox shares) is backed up for the
//! first time, then again unchanged, then after 1% of its messages changed;
//! last, a mailbox holding one 150 MB message.
//!
//! Memory is the peak of the heap (a counting allocator) above what the
//! process held before the run: the fake's mailboxes are allocated before
//! and do not count. CPU is this process's (the handlers, the runner and the
//! fake serving the mail); moto runs in its own process.

use anyhow::{Context as _, Result};
use peak_alloc::PeakAlloc;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};
use std::time::Instant;
use strata_e2e::{Api, World, WorldOptions};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";
const ALEX: &str = "alex.wilber@contoso.onmicrosoft.com";
const DIEGO: &str = "diego.siciliani@contoso.onmicrosoft.com";

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "figures",
    "budget",
    "meeting",
    "project",
    "deadline",
    "review",
    "contract",
    "customer",
    "invoice",
    "please",
    "find",
    "attached",
    "regards",
    "thanks",
    "update",
    "status",
    "team",
    "schedule",
    "next",
    "week",
    "report",
    "sales",
    "forecast",
    "approval",
    "draft",
    "version",
    "final",
    "call",
    "tomorrow",
    "agenda",
    "notes",
    "action",
    "items",
    "follow",
    "up",
    "on",
    "our",
    "discussion",
    "about",
    "the",
    "proposal",
    "and",
    "its",
    "pricing",
    "we",
    "should",
    "align",
    "with",
    "finance",
    "before",
    "Friday",
    "Contoso",
    "Fabrikam",
    "Northwind",
];

fn figure(name: &str, value: f64, unit: &str) {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        println!("{name}: {value:.0} {unit}");
    } else {
        println!("{name}: {value:.3} {unit}");
    }
}

/// CPU seconds (user + system) of this process so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn text(rng: &mut StdRng, size: usize) -> String {
    let mut out = String::with_capacity(size + 100);
    while out.len() < size {
        for _ in 0..12 {
            out.push_str(WORDS.choose(rng).copied().unwrap_or("the"));
            out.push(' ');
        }
        out.push_str("\r\n");
    }
    out
}

fn message(rng: &mut StdRng, i: usize, owner: &str, attachment: Option<&[u8]>) -> Vec<u8> {
    let size = rng.gen_range(10_000..60_000);
    let body = text(rng, size);
    let head = format!(
        "From: Megan <megan@contoso.test>\r\nTo: {owner}\r\nSubject: Message {i} about the budget\r\n\
         Date: Thu, 5 Nov 2026 10:{:02}:00 +0000\r\nMessage-ID: <b{i}.{owner}>\r\nMIME-Version: 1.0\r\n",
        i % 60
    );
    match attachment {
        None => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").into_bytes(),
        Some(bytes) => {
            let mut mime = strata_e2e::mail_with_attachment(i, bytes);
            // The message's own text before the attachment makes each one distinct.
            let mut out = format!("{head}X-Body: {}\r\n", &body[..200.min(body.len())]).into_bytes();
            out.append(&mut mime);
            out
        }
    }
}

/// Objects under the account's prefix: the repository writes each object once, so new objects are PUTs.
async fn objects(world: &World, account: &str) -> Result<u64> {
    let mut pages = strata_local::provision::s3_client(&world.stack.sdk_config())
        .list_objects_v2()
        .bucket(world.stack.physical_id("DataBucket").context("bucket")?)
        .prefix(format!("{account}/"))
        .into_paginator()
        .send();
    let mut n = 0u64;
    while let Some(page) = pages.next().await {
        n += page?.contents().len() as u64;
    }
    Ok(n)
}

struct Measured {
    runs: Vec<Value>,
    secs: f64,
    cpu: f64,
    heap_peak: f64,
    puts: u64,
    requests: usize,
    content_fetches: usize,
}

impl Measured {
    fn sum(&self, key: &str) -> f64 {
        self.runs.iter().map(|r| r[key].as_f64().unwrap_or(0.0)).sum()
    }
}

async fn measure(world: &World, admin: &Api, account: &str, entity: &str) -> Result<Measured> {
    let before_runs = admin.backup_runs(entity).await.len();
    let before_objects = objects(world, account).await?;
    world.fake.clear_requests();
    let base = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let (cpu, started) = (cpu_secs(), Instant::now());
    world.back_up(admin, entity).await;
    let secs = started.elapsed().as_secs_f64();
    let runs = admin.backup_runs(entity).await.split_off(before_runs);
    for failed in runs.iter().filter(|r| r["status"] == "failed") {
        eprintln!("bench: a run failed: {failed}");
    }
    let cpu = cpu_secs() - cpu;
    let heap_peak = HEAP.peak_usage().saturating_sub(base) as f64 / 1e6;
    let log = world.fake.requests();
    Ok(Measured {
        runs,
        secs,
        cpu,
        heap_peak,
        puts: objects(world, account).await? - before_objects,
        requests: log.iter().filter(|r| r.throttle_scope.is_some()).count(),
        content_fetches: log.iter().filter(|r| r.path.ends_with("/$value")).count(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    // BENCH_MESSAGES makes a quicker run (the recorded figures use the default).
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rng = StdRng::seed_from_u64(2026);
    eprintln!("bench: seeding {messages} messages and starting the local stack ...");
    let pool: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let mut a = vec![0u8; rng.gen_range(20_000..200_000)];
            rng.fill_bytes(&mut a);
            a
        })
        .collect();
    // The fake answers at full speed here: this measures Strata, not Graph's
    // 10,000-requests-per-10-minutes mailbox budget (which a first backup of
    // this mailbox would meet: it then commits and resumes after the
    // Retry-After, as tests/e2e/tests/backup_resilience.rs shows).
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.fake.throttle = false;
    let world = World::start(opts).await?;
    const FOLDERS: &[&str] = &["Inbox", "Inbox", "Inbox", "Inbox/Projects", "Sent Items", "Archive"];
    let mut logical_seeded = 0usize;
    for i in 0..messages {
        let attachment = (i % 5 == 0).then(|| pool[rng.gen_range(0..pool.len())].as_slice());
        let mime = message(&mut rng, i, ADELE, attachment);
        logical_seeded += mime.len();
        world
            .fake
            .add_message(ADELE, FOLDERS[i % FOLDERS.len()], mime)
            .context("seed")?;
    }
    // Another mailbox got some of the same attachments.
    for (i, a) in pool.iter().enumerate().take(100) {
        let mime = message(&mut rng, 100_000 + i, ALEX, Some(a));
        world.fake.add_message(ALEX, "Inbox", mime).context("seed")?;
    }
    let onboarded = world.onboard().await?;
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    admin
        .post("/v1/entities/activate-all", json!({"kind": "mailbox"}))
        .await?;
    let adele = admin.entity_id("mailbox", ADELE).await?;
    let alex = admin.entity_id("mailbox", ALEX).await?;
    let diego = admin.entity_id("mailbox", DIEGO).await?;
    world.back_up(&admin, &alex).await;

    // 1. The first backup.
    let first = measure(&world, &admin, &account, &adele).await?;
    let items = first.sum("added");
    let logical = first.sum("logical_bytes");
    let stored = first.sum("stored_bytes");
    figure("mailbox_messages", items, "items");
    figure("mailbox_average_message", logical / items.max(1.0) / 1e3, "KB");
    figure("first_backup_invocations", first.runs.len() as f64, "invocations");
    figure("first_backup_seconds", first.secs, "s");
    figure("first_backup_items_per_sec", items / first.secs, "items/s");
    figure("first_backup_throughput", logical / first.secs / 1e6, "MB/s");
    figure("first_backup_cpu_per_gb", first.cpu / (logical / 1e9), "CPU s/GB");
    figure("first_backup_peak_heap", first.heap_peak, "MB");
    figure(
        "first_backup_s3_puts_per_1000_items",
        first.puts as f64 * 1000.0 / items.max(1.0),
        "PUTs",
    );
    figure(
        "first_backup_source_requests_per_item",
        first.requests as f64 / items.max(1.0),
        "requests/item",
    );
    figure("first_backup_logical", logical / 1e6, "MB");
    figure("first_backup_stored", stored / 1e6, "MB");
    figure("first_backup_stored_per_logical", stored / logical.max(1.0), "ratio");
    if (logical as usize) != logical_seeded {
        eprintln!("bench: logical bytes {logical} differ from the seeded {logical_seeded}");
    }

    // 2. Unchanged.
    let unchanged = measure(&world, &admin, &account, &adele).await?;
    figure("unchanged_backup_seconds", unchanged.secs, "s");
    figure(
        "unchanged_backup_source_requests",
        unchanged.requests as f64,
        "requests",
    );
    figure(
        "unchanged_backup_content_fetches",
        unchanged.content_fetches as f64,
        "requests",
    );
    figure("unchanged_backup_s3_puts", unchanged.puts as f64, "PUTs");
    figure("unchanged_backup_stored", unchanged.sum("stored_bytes") / 1e3, "KB");

    // 3. 1% changed: 50 new messages, 50 read or flagged.
    let mailbox = world.fake.mailbox(ADELE).context("mailbox")?;
    for m in mailbox.items.iter().step_by(messages / 50).take(50) {
        world.fake.set_read(ADELE, &m.id, true);
    }
    for i in 0..50 {
        let attachment = (i % 5 == 0).then(|| pool[rng.gen_range(0..pool.len())].as_slice());
        let mime = message(&mut rng, 200_000 + i, ADELE, attachment);
        world.fake.add_message(ADELE, "Inbox", mime).context("seed")?;
    }
    let changed = measure(&world, &admin, &account, &adele).await?;
    figure("changed_1pct_backup_seconds", changed.secs, "s");
    figure("changed_1pct_added", changed.sum("added"), "items");
    figure("changed_1pct_metadata_updates", changed.sum("updated"), "items");
    figure("changed_1pct_source_requests", changed.requests as f64, "requests");
    figure(
        "changed_1pct_content_fetches",
        changed.content_fetches as f64,
        "requests",
    );
    figure("changed_1pct_s3_puts", changed.puts as f64, "PUTs");
    figure("changed_1pct_stored", changed.sum("stored_bytes") / 1e6, "MB");

    // 4. One 150 MB message (Exchange's largest).
    let mut big = vec![0u8; 104 * 1024 * 1024];
    rng.fill_bytes(&mut big);
    let mime = strata_e2e::mail_with_attachment(1, &big);
    drop(big);
    let big_size = mime.len();
    world.fake.add_message(DIEGO, "Inbox", mime).context("seed")?;
    let huge = measure(&world, &admin, &account, &diego).await?;
    figure("large_message_size", big_size as f64 / 1e6, "MB");
    figure("large_message_backup_seconds", huge.secs, "s");
    figure("large_message_peak_heap", huge.heap_peak, "MB");
    figure(
        "large_message_stored_per_logical",
        huge.sum("stored_bytes") / huge.sum("logical_bytes").max(1.0),
        "ratio",
    );
    functions(&world).await?;
    world.stop().await;
    Ok(())
}

/// The packaged bootstraps (`make package`): their sizes, and their cold
/// starts when they are built for this machine's CPU (5 each, the median).
async fn functions(world: &World) -> Result<()> {
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    };
    for (name, logical) in [
        ("api", "ApiFunction"),
        ("discovery", "DiscoveryFunction"),
        ("backup", "BackupFunction"),
        ("restore", "RestoreFunction"),
        ("export", "ExportFunction"),
    ] {
        let binary = std::path::Path::new(".aws-sam/build").join(logical).join("bootstrap");
        let Ok(bytes) = std::fs::read(&binary) else {
            eprintln!("bench: {} is missing: run `make package` first", binary.display());
            continue;
        };
        // ELF e_machine: 0x3e x86_64, 0xb7 aarch64.
        let arch = match bytes.get(18) {
            Some(0x3e) => "x86_64",
            Some(0xb7) => "arm64",
            _ => "unknown",
        };
        figure(&format!("bootstrap_size_{name}_{arch}"), bytes.len() as f64 / 1e6, "MB");
        if arch != host {
            eprintln!("bench: {name} is built for {arch}; cold starts are measured on {host} builds");
            continue;
        }
        let mut env = world.stack.function_env(logical)?;
        env.extend(strata_local::wire::local_overrides());
        let sqs = |body: Value| {
            json!({"Records": [{"messageId": "cold-1", "receiptHandle": "r", "body": body.to_string(),
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}]})
        };
        let event = match name {
            "api" => json!({
                "version": "2.0", "routeKey": "$default", "rawPath": "/v1/health", "rawQueryString": "",
                "headers": {"host": "bench.local"}, "isBase64Encoded": false,
                "requestContext": {"accountId": "123456789012", "apiId": "bench", "domainName": "bench.local",
                    "domainPrefix": "bench", "requestId": "cold-1", "routeKey": "$default", "stage": "$default",
                    "time": "25/Nov/2026:00:00:00 +0000", "timeEpoch": 1_795_564_800_000_i64,
                    "http": {"method": "GET", "path": "/v1/health", "protocol": "HTTP/1.1",
                        "sourceIp": "127.0.0.1", "userAgent": "bench"}}
            }),
            // Requests for things that do not exist: each reads the table once and is done.
            "discovery" => sqs(
                json!({"type": "connection", "account_id": "acct_bench", "connection_id": "conn_bench",
                "request_id": "cold", "backup": false}),
            ),
            "restore" | "export" => sqs(json!({"account_id": "acct_bench", "job_id": "job_bench"})),
            _ => sqs(json!({"account_id": "acct_bench", "entity_id": "ent_bench", "request_id": "cold"})),
        };
        let mut times = Vec::new();
        for _ in 0..5 {
            let (took, _) = strata_e2e::coldstart::cold_start(&binary, &env, event.clone()).await?;
            times.push(took.as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        figure(&format!("cold_start_{name}"), times[2], "ms");
    }
    Ok(())
}
