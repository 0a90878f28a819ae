//! `make demo`: a fake Microsoft 365 tenant and the local stack; then the
//! product as an admin uses it — sign-up, connect, discover, activate all —
//! printing what happened and the protected entities as a table.

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use strata_e2e::{World, WorldOptions};

#[derive(Parser)]
#[command(about = "Run Strata end to end on a fake Microsoft 365 tenant")]
struct Args {
    /// Generate a tenant of this many users instead of the small demo tenant.
    #[arg(long)]
    users: Option<usize>,
    /// Seed of the generated tenant.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rows of the entity table to print.
    #[arg(long, default_value_t = 40)]
    rows: usize,
}

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let tenant = match args.users {
        Some(users) => fake_m365::Tenant::generate(args.seed, strata_e2e::sizes(users, (users / 100).max(3))),
        None => fake_m365::Tenant::small_demo(),
    };
    step("starting a fake Microsoft 365 tenant and the local stack (moto, resources from infra/template.yaml)");
    let mut opts = WorldOptions::new(tenant);
    opts.quiet = false;
    let world = World::start(opts).await?;
    let seeded = seed_mail(&world.fake);
    println!(
        "    fake tenant   {}  (tenant {})",
        world.fake.url(),
        world.fake.tenant_id()
    );
    println!("    AWS emulator  {}", world.stack.endpoint());
    println!("    HTTP API      {}", world.api.base);

    step("signing up the first account with the deployment's one-time bootstrap token");
    let password = "demo password, not for production";
    let admin = world
        .sign_up("Contoso (demo)", "admin@contoso.example", password, None)
        .await?;
    let (_, me) = admin.get("/v1/me").await?;
    println!(
        "    owner {} of account {}",
        me["email"].as_str().unwrap_or("?"),
        me["account_id"].as_str().unwrap_or("?")
    );

    step("connecting the tenant with a wrong client secret (refused, nothing stored)");
    let (status, body) = admin
        .post("/v1/connections", world.connection_body("not-the-secret"))
        .await?;
    println!(
        "    {status}: {}",
        body["error"]["message"].as_str().unwrap_or_default()
    );

    step("connecting the tenant with the right client secret");
    let (status, conn) = admin
        .post("/v1/connections", world.connection_body(&world.fake.client_secret()))
        .await?;
    if status != 201 {
        bail!("connection refused ({status}): {conn}");
    }
    let conn_id = conn["id"].as_str().context("connection id")?.to_string();
    println!("    connection {conn_id} created; discovery queued");

    step("discovering mailboxes, OneDrives and sites");
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("    users {pos}/{len} {wide_bar} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let discovery = loop {
        let (_, d) = admin.get(&format!("/v1/connections/{conn_id}/discovery")).await?;
        bar.set_length(d["users_total"].as_u64().unwrap_or(0));
        bar.set_position(d["users_done"].as_u64().unwrap_or(0));
        match d["state"].as_str() {
            Some("succeeded") | Some("failed") => break d,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    bar.finish_and_clear();
    let r = &discovery["result"];
    println!(
        "    {}: {} users -> {} mailboxes, {} OneDrives, {} sites ({} requests, {} throttled)",
        discovery["state"].as_str().unwrap_or("?"),
        r["users"],
        r["mailboxes"],
        r["onedrives"],
        r["sites"],
        r["requests"],
        r["throttled"]
    );

    step("activating all");
    let (_, activated) = admin.post("/v1/entities/activate-all", json!({})).await?;
    println!("    {} entities activated", activated["activated"]);
    world.settle().await?;

    step(&format!(
        "backing up every active mailbox now ({seeded} messages in the tenant)"
    ));
    let mailboxes = admin.all_entities("&kind=mailbox&status=active").await?;
    for m in &mailboxes {
        let id = m["id"].as_str().unwrap_or_default();
        admin.post(&format!("/v1/entities/{id}/backup"), json!({})).await?;
    }
    world.settle().await?;
    step("backing up again: unchanged mailboxes fetch no content");
    world.fake.clear_requests();
    for m in &mailboxes {
        let id = m["id"].as_str().unwrap_or_default();
        admin.post(&format!("/v1/entities/{id}/backup"), json!({})).await?;
    }
    world.settle().await?;
    let fetched = world
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/$value"))
        .count();
    println!("    {} mailboxes, {fetched} messages fetched", mailboxes.len());

    // The daily report, as the hourly schedule sends it at the account's hour.
    // (Read before the export: moto's /moto-api/data.json fails once an S3
    // multipart upload of several parts has been made on the same server.)
    let now = chrono::Utc::now();
    let hour = chrono::Timelike::hour(&now);
    admin
        .patch(
            "/v1/account",
            json!({"report_hour": hour, "timezone": "UTC", "notification_addresses": ["it@contoso.test"]}),
        )
        .await?;
    world.fire_at("ReportSchedule", now).await?;
    world.settle().await?;
    step("daily report (ReportSchedule fired at the account's hour; read back from the emulator's SES)");
    for mail in world
        .sent_mail()
        .await?
        .iter()
        .filter(|m| m.subject.contains("daily report"))
    {
        println!("    To: {}\n    Subject: {}", mail.to.join(", "), mail.subject);
        for line in mail.text.lines().filter(|l| !l.trim().is_empty()).take(14) {
            println!("    | {line}");
        }
        println!("    (and an HTML part of {} bytes)", mail.html.len());
    }

    // Recovery: search, browse a snapshot, restore into a new folder, export a zip.
    let first = mailboxes.first().context("a mailbox")?;
    let (first_id, first_address) = (
        first["id"].as_str().unwrap_or_default().to_string(),
        first["address"].as_str().unwrap_or_default().to_string(),
    );
    step("searching every mailbox for \"quarterly\" with an attachment");
    let (_, found) = admin
        .get("/v1/search?kind=mailbox&q=quarterly&has_attachment=true")
        .await?;
    println!(
        "    {} messages found in {} mailboxes",
        found["total"], found["entities"]
    );
    let (_, snaps) = admin.get(&format!("/v1/entities/{first_id}/snapshots")).await?;
    let (_, tree) = admin
        .get(&format!("/v1/entities/{first_id}/snapshots/latest/folders"))
        .await?;
    step(&format!(
        "{first_address}: {} snapshots; folders as of the latest",
        snaps["items"].as_array().map_or(0, Vec::len)
    ));
    for f in tree["items"].as_array().cloned().unwrap_or_default() {
        println!("    {:<24} {} items", f["path"].as_str().unwrap_or(""), f["items"]);
    }
    step(&format!(
        "restoring {first_address}'s Inbox into a new folder (nothing existing is touched)"
    ));
    let (_, job) = admin
        .post("/v1/restores", json!({"entity_id": first_id, "folders": ["Inbox"]}))
        .await?;
    let job = world.wait_job(&admin, job["id"].as_str().unwrap_or_default()).await?;
    println!(
        "    job {}: {} of {} messages restored into \"{}\", {} failed, {} invocation(s)",
        job["status"].as_str().unwrap_or(""),
        job["done"],
        job["total"],
        job["folder_name"].as_str().unwrap_or(""),
        job["failed"],
        job["invocations"]
    );
    step("exporting every mailbox as a zip (mail as .eml, a manifest)");
    let selections: Vec<Value> = mailboxes.iter().map(|m| json!({"entity_id": m["id"]})).collect();
    let (_, job) = admin.post("/v1/exports", json!({"selections": selections})).await?;
    let job = world.wait_job(&admin, job["id"].as_str().unwrap_or_default()).await?;
    let (_, link) = admin
        .get(&format!("/v1/jobs/{}/download", job["id"].as_str().unwrap_or("")))
        .await?;
    let zip = reqwest::get(link["url"].as_str().unwrap_or("")).await?.bytes().await?;
    println!(
        "    job {}: {} messages, {} entries, {} bytes downloaded; link e-mailed, valid until {}",
        job["status"].as_str().unwrap_or(""),
        job["done"],
        job["result"]["entries"],
        zip.len(),
        job["result"]["expires_at"].as_str().unwrap_or("")
    );

    step("protected entities");
    let entities = admin.all_entities("").await?;
    print_table(&entities, args.rows);

    let (_, activity) = admin.get("/v1/activity").await?;
    step("activity log");
    for a in activity["items"].as_array().cloned().unwrap_or_default() {
        println!(
            "    {}  {:<10} {:<10} {}",
            a["at"].as_str().unwrap_or(""),
            a["kind"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["summary"].as_str().unwrap_or("")
        );
    }
    let (_, bill) = admin.get("/v1/billing").await?;
    step("billing projection (GET /v1/billing, the deployment's default price table)");
    for service in bill["services"].as_array().cloned().unwrap_or_default() {
        for line in service["lines"].as_array().cloned().unwrap_or_default() {
            println!(
                "    {:<9} {:>3} active x {:>5.2} + {:>3} paused x {:>5.2} = {:>8.2} {}",
                line["kind"].as_str().unwrap_or(""),
                line["active"],
                line["active_cents"].as_f64().unwrap_or(0.0) / 100.0,
                line["paused"],
                line["paused_cents"].as_f64().unwrap_or(0.0) / 100.0,
                line["monthly_cents"].as_f64().unwrap_or(0.0) / 100.0,
                bill["currency"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "    projected: {:.2} {} a month; S3 holds {:.1} KB for this account (about {:.6} USD a month)",
        bill["monthly_cents"].as_f64().unwrap_or(0.0) / 100.0,
        bill["currency"].as_str().unwrap_or(""),
        bill["storage"]["total_bytes"].as_f64().unwrap_or(0.0) / 1e3,
        bill["storage"]["estimated_monthly_usd"].as_f64().unwrap_or(0.0)
    );

    let (_, audit) = admin.get("/v1/audit?limit=500").await?;
    step("audit log (GET /v1/audit): who did what, from where");
    let mut actions: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for r in audit["items"].as_array().cloned().unwrap_or_default() {
        *actions
            .entry(format!(
                "{} ({})",
                r["action"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            ))
            .or_default() += 1;
    }
    for (action, n) in &actions {
        println!("    {n:>3} x {action}");
    }

    println!(
        "\ndone in {:.1} s: {} entities protected. Next: `make test`.",
        started.elapsed().as_secs_f64(),
        entities.len()
    );
    world.stop().await;
    Ok(())
}

fn cell(v: &Value, width: usize) -> String {
    let text = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| if v.is_null() { String::new() } else { v.to_string() });
    let mut text: String = text.chars().take(width).collect();
    if v.as_str().is_some_and(|s| s.chars().count() > width) {
        text.pop();
        text.push('…');
    }
    format!("{text:<width$}")
}

fn print_table(entities: &[Value], rows: usize) {
    println!(
        "    {} {} {} {} TYPE",
        cell(&json!("KIND"), 9),
        cell(&json!("STATUS"), 10),
        cell(&json!("NAME"), 24),
        cell(&json!("ADDRESS"), 40),
    );
    let mut sorted: Vec<&Value> = entities.iter().collect();
    sorted.sort_by_key(|e| {
        (
            e["kind"].as_str().unwrap_or("").to_string(),
            e["display_name"].as_str().unwrap_or("").to_string(),
        )
    });
    for e in sorted.iter().take(rows) {
        let mut kind_detail = e["details"]["mailbox_type"].as_str().unwrap_or("").to_string();
        if e["details"]["account_enabled"] == json!(false) {
            kind_detail = format!("{kind_detail} (sign-in blocked)").trim().to_string();
        }
        println!(
            "    {} {} {} {} {}",
            cell(&e["kind"], 9),
            cell(&e["status"], 10),
            cell(&e["display_name"], 24),
            cell(&e["address"], 40),
            kind_detail
        );
    }
    if entities.len() > rows {
        println!("    ... and {} more", entities.len() - rows);
    }
}

/// A few messages in every mailbox of the demo tenant, one with an attachment shared by all.
fn seed_mail(fake: &fake_m365::FakeM365) -> usize {
    let attachment: String = (0..40_000u32)
        .map(|i| char::from(b'A' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let mut count = 0;
    for user in fake.tenant().users.iter().filter(|u| u.kind.has_mailbox()) {
        let address = &user.user_principal_name;
        for (i, folder) in ["Inbox", "Inbox/Projects", "Archive/2025"].iter().enumerate() {
            let mime = format!(
                "From: Alex Wilber <alex.wilber@contoso.example>\r\nTo: {address}\r\nSubject: Demo message {i}\r\nDate: Mon, 2 Nov 2026 09:0{i}:00 +0000\r\nMessage-ID: <demo{i}.{}@contoso.example>\r\n\r\nHello from the demo.\r\n",
                user.id
            );
            if fake.add_message(address, folder, mime.into_bytes()).is_some() {
                count += 1;
            }
        }
        let shared = format!(
            "From: Finance <finance@contoso.example>\r\nTo: {address}\r\nSubject: Quarterly report\r\nMessage-ID: <q.{}@contoso.example>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b--\r\n",
            user.id
        );
        if fake.add_message(address, "Inbox", shared.into_bytes()).is_some() {
            count += 1;
        }
    }
    count
}
