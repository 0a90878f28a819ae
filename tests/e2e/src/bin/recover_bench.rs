//! `make bench` (second part): recovery through the local stack, printing
//! each figure as `name: value unit`. Not a test: nothing is asserted.
//!
//! 1. Search: 1,000,000 catalog entries over the account's mailboxes
//!    (written straight into the repository in moto, as backups write them),
//!    searched through the HTTP API: the first question (histories built from
//!    the catalog segments and saved), then the same and other questions.
//! 2. Export: a 5 GB selection (5,000 unique messages of 1 MB, base64
//!    attachments as mail carries them) zipped into an S3 multipart upload;
//!    throughput and the peak of the heap above what the process held before.
//! 3. Restore: messages back into a mailbox of the fake at Graph's real
//!    limits (4 concurrent requests, 10,000 per 10 minutes per mailbox).

use anyhow::{Context as _, Result, bail};
use peak_alloc::PeakAlloc;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;
use std::time::Instant;
use strata::repo::Change;
use strata_e2e::{Api, World, WorldOptions};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";

fn figure(name: &str, value: f64, unit: &str) {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        println!("{name}: {value:.0} {unit}");
    } else {
        println!("{name}: {value:.3} {unit}");
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const FOLDERS: &[&str] = &["Inbox", "Inbox/Projects", "Sent Items", "Archive/2025"];
const SENDERS: &[&str] = &["megan", "alex", "diego", "lee", "finance", "nestor", "patti", "lynne"];
const TOPICS: &[&str] = &[
    "Quarterly report",
    "Budget review",
    "Contract draft",
    "Site photos",
    "Team offsite",
    "Invoice",
    "Customer escalation",
    "Roadmap",
    "Hiring plan",
    "Release notes",
];

/// 1. Search over a million catalog entries.
async fn search(world: &World, admin: &Api, account: &str) -> Result<()> {
    let total = env_usize("BENCH_SEARCH_ITEMS", 1_000_000);
    let mailboxes: Vec<String> = admin
        .all_entities("&kind=mailbox")
        .await?
        .iter()
        // Adele's mailbox is the export's, Alex's the restore's.
        .filter(|e| e["address"] != ADELE && e["address"] != "alex.wilber@contoso.onmicrosoft.com")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let per = total.div_ceil(mailboxes.len());
    eprintln!(
        "bench: writing {total} catalog entries over {} mailboxes ...",
        mailboxes.len()
    );
    let repo = world.repo(account).await;
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut written = 0usize;
    for entity in &mailboxes {
        let mut writer = repo.writer(entity, &format!("seed-{entity}")).await?;
        for i in 0..per.min(total - written) {
            let sender = SENDERS[rng.gen_range(0..SENDERS.len())];
            let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
            let day = rng.gen_range(1..=28);
            let meta = json!({
                "folder": FOLDERS[i % 4],
                "subject": format!("{topic} {i}"),
                "from": format!("{sender}@contoso.test"),
                "to": [format!("user{}@contoso.test", i % 97)],
                "received": format!("2026-{:02}-{day:02}T10:00:00Z", 1 + i % 11),
                "has_attachments": i % 5 == 0,
            });
            // A small body of its own: a million distinct items.
            let body = format!("Subject: {topic} {i}\r\n\r\nbody {i} {}\r\n", rng.next_u64());
            let id = format!("AAMkAGI2TG93AAA{entity}{i:08}");
            writer.add_item(&id, Change::Added, meta, body.as_bytes()).await?;
            written += 1;
        }
        writer.commit(false).await?;
    }
    figure("search_catalog_entries", written as f64, "items");
    figure("search_catalog_seed_seconds", started.elapsed().as_secs_f64(), "s");
    let queries = [
        ("first_question_subject", "kind=mailbox&subject=budget%20review%2042"),
        ("subject", "kind=mailbox&subject=budget%20review%2042"),
        (
            "sender_and_dates",
            "kind=mailbox&sender=patti&received_after=2026-03-01T00:00:00Z&received_before=2026-03-08T00:00:00Z",
        ),
        ("free_text", "kind=mailbox&q=escalation%2099"),
        (
            "attachment_and_size",
            "kind=mailbox&has_attachment=true&min_size=60&folder=Archive",
        ),
    ];
    for (name, q) in queries {
        let started = Instant::now();
        let (status, body) = admin.get(&format!("/v1/search?{q}&limit=50")).await?;
        let secs = started.elapsed().as_secs_f64();
        if status != 200 {
            bail!("search answered {status}: {body}");
        }
        figure(&format!("search_{name}_seconds"), secs, "s");
        figure(
            &format!("search_{name}_matches"),
            body["total"].as_f64().unwrap_or(0.0),
            "items",
        );
    }
    // A cold API process: every history read from the bucket (saved by the first question), four at once.
    let started = Instant::now();
    let loaded = futures::future::join_all(mailboxes.iter().map(|m| strata::ops::browse::history(&repo, m))).await;
    let rows: usize = loaded.into_iter().map(|h| h.map_or(0, |h| h.rows.len())).sum();
    figure(
        "search_cold_process_load_all_seconds",
        started.elapsed().as_secs_f64(),
        "s",
    );
    figure("search_cold_process_rows", rows as f64, "rows");
    let one = &mailboxes[0];
    // Where a question's time goes: one mailbox's history read from the bucket and decoded.
    let started = Instant::now();
    let loaded = repo.latest_derived::<strata::ops::browse::History>(one).await?;
    let rows = loaded.map_or(0, |(_, h)| h.rows.len());
    figure("search_history_load_seconds", started.elapsed().as_secs_f64(), "s");
    figure("search_history_rows", rows as f64, "rows");
    let started = Instant::now();
    let (_, body) = admin
        .get(&format!(
            "/v1/search?entity_id={one}&snapshot=latest&subject=roadmap&limit=50"
        ))
        .await?;
    figure("search_one_entity_seconds", started.elapsed().as_secs_f64(), "s");
    figure(
        "search_one_entity_matches",
        body["total"].as_f64().unwrap_or(0.0),
        "items",
    );
    let started = Instant::now();
    let (_, body) = admin
        .get(&format!(
            "/v1/entities/{one}/snapshots/latest/items?folder=Inbox&limit=100"
        ))
        .await?;
    figure("browse_folder_page_seconds", started.elapsed().as_secs_f64(), "s");
    figure("browse_folder_items", body["total"].as_f64().unwrap_or(0.0), "items");
    Ok(())
}

/// A message of about 1 MB: headers, a text part, a base64 attachment of its own.
fn big_message(rng: &mut StdRng, i: usize) -> Vec<u8> {
    use base64::Engine;
    let mut attachment = vec![0u8; 740_000];
    rng.fill_bytes(&mut attachment);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&attachment);
    let mut out = format!(
        "From: Finance <finance@contoso.test>\r\nTo: Adele <{ADELE}>\r\nSubject: Statement {i}\r\nDate: Thu, 5 Nov 2026 10:{:02}:00 +0000\r\nMessage-ID: <s{i}@contoso.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nStatement {i} attached.\r\n--b\r\nContent-Type: application/pdf; name=\"statement-{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        i % 60
    )
    .into_bytes();
    for line in b64.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--b--\r\n");
    out
}

/// 2. A 5 GB export.
async fn export(world: &World, admin: &Api, account: &str) -> Result<()> {
    let count = env_usize("BENCH_EXPORT_MESSAGES", 5_000);
    let adele = admin.entity_id("mailbox", ADELE).await?;
    eprintln!("bench: writing {count} messages of 1 MB for the export ...");
    let repo = world.repo(account).await;
    let mut rng = StdRng::seed_from_u64(5);
    let mut writer = repo.writer(&adele, "export-seed").await?;
    let mut logical = 0u64;
    for i in 0..count {
        let mime = big_message(&mut rng, i);
        logical += mime.len() as u64;
        let meta = json!({"folder": FOLDERS[(i % 2) * 3], "subject": format!("Statement {i}"),
                          "from": "finance@contoso.test", "received": "2026-11-05T10:00:00Z"});
        writer
            .add_item(&format!("AAMkStatement{i:06}"), Change::Added, meta, mime.as_slice())
            .await?;
    }
    writer.commit(false).await?;
    drop(repo);
    figure("export_items", count as f64, "items");
    figure("export_logical", logical as f64 / 1e9, "GB");
    let base = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let started = Instant::now();
    let (status, job) = admin
        .post(
            "/v1/exports",
            json!({"selections": [{"entity_id": adele}], "notify": ["owner@contoso.test"]}),
        )
        .await?;
    if status != 202 {
        bail!("export refused ({status}): {job}");
    }
    let job = world.wait_job(admin, job["id"].as_str().context("id")?).await?;
    let secs = started.elapsed().as_secs_f64();
    let peak = HEAP.peak_usage().saturating_sub(base) as f64 / 1e6;
    if job["status"] != "done" {
        bail!("export failed: {job}");
    }
    figure("export_seconds", secs, "s");
    figure("export_throughput", logical as f64 / secs / 1e6, "MB/s");
    figure(
        "export_zip_size",
        job["result"]["bytes"].as_f64().unwrap_or(0.0) / 1e9,
        "GB",
    );
    figure(
        "export_zip_entries",
        job["result"]["entries"].as_f64().unwrap_or(0.0),
        "entries",
    );
    figure("export_peak_heap", peak, "MB");
    Ok(())
}

/// 3. Restore into a mailbox of the fake at Graph's real limits.
async fn restore(world: &World, admin: &Api) -> Result<()> {
    let count = env_usize("BENCH_RESTORE_MESSAGES", 2_000);
    for i in 0..count {
        world
            .fake
            .add_message(
                "alex.wilber@contoso.onmicrosoft.com",
                ["Inbox", "Inbox/Projects"][i % 2],
                strata_e2e::plain_mail(i, 4_000),
            )
            .context("seed")?;
    }
    let alex = admin
        .entity_id("mailbox", "alex.wilber@contoso.onmicrosoft.com")
        .await?;
    world.back_up(admin, &alex).await;
    world.fake.clear_requests();
    let started = Instant::now();
    let (status, job) = admin
        .post("/v1/restores", json!({"entity_id": alex, "folder_name": "Bench"}))
        .await?;
    if status != 202 {
        bail!("restore refused ({status}): {job}");
    }
    let job = world.wait_job(admin, job["id"].as_str().context("id")?).await?;
    let secs = started.elapsed().as_secs_f64();
    if job["status"] != "done" {
        bail!("restore failed: {job}");
    }
    let log = world.fake.requests();
    figure("restore_items", job["done"].as_f64().unwrap_or(0.0), "items");
    figure("restore_seconds", secs, "s");
    figure(
        "restore_items_per_sec",
        job["done"].as_f64().unwrap_or(0.0) / secs,
        "items/s",
    );
    figure("restore_source_requests", log.len() as f64, "requests");
    figure(
        "restore_throttled_answers",
        log.iter().filter(|r| r.status == 429).count() as f64,
        "responses",
    );
    figure(
        "restore_max_mailbox_concurrency",
        strata_e2e::max_mailbox_concurrency(&log) as f64,
        "requests",
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // The fake at Graph's real limits (time scale 1): what a restore meets.
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.fake.throttle = true;
    let world = World::start(opts).await?;
    let onboarded = world.onboard_active().await?;
    let (admin, account) = (onboarded.admin.clone(), onboarded.account_id.clone());
    if only.is_empty() || only == "search" {
        search(&world, &admin, &account).await?;
    }
    if only.is_empty() || only == "export" {
        export(&world, &admin, &account).await?;
    }
    if only.is_empty() || only == "restore" {
        restore(&world, &admin).await?;
    }
    world.stop().await;
    Ok(())
}
