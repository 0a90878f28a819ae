//! Recovery through the local stack (issue 4): point-in-time browse and
//! search, zip export read back by `unzip -t` and Python's `zipfile`, safe
//! entry names, download links, and tenant isolation.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use strata_e2e::{Api, World, WorldOptions};

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";

/// Real `.eml` files: the fake tenant's and this suite's (encoded words,
/// quoted-printable, multipart/alternative and related, a forwarded message).
fn eml_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["../fake-m365/fixtures/tenant", "fixtures/mail"] {
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).expect("fixtures").flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if e.path().extension().is_some_and(|x| x == "eml") {
                    out.push((e.path().display().to_string(), std::fs::read(e.path()).expect("eml")));
                }
            }
        }
    }
    out.sort();
    assert!(out.len() >= 6, "fixtures: {}", out.len());
    out
}

fn subject_mail(subject: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Odd <odd@contoso.test>\r\nTo: Adele <{ADELE}>\r\nSubject: {subject}\r\nDate: Fri, 6 Nov 2026 12:{:02}:00 +0000\r\nMessage-ID: <odd{n}@contoso.test>\r\n\r\nbody {n}\r\n",
        n % 60
    )
    .into_bytes()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn export(world: &World, admin: &Api, selections: Value) -> (Value, Vec<u8>) {
    let job = world
        .run_job(admin, "/v1/exports", json!({"selections": selections}))
        .await;
    assert_eq!(job["status"], "done", "{job}");
    let (status, link) = admin
        .get(&format!("/v1/jobs/{}/download", job["id"].as_str().expect("id")))
        .await
        .expect("link");
    assert_eq!(status, 200, "{link}");
    let zip = reqwest::get(link["url"].as_str().expect("url"))
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    (job, zip)
}

/// What `unzip -t` and Python's `zipfile` say of an archive: every entry's
/// SHA-256 (computed by Python) and the manifest rows.
fn inspect_zip(bytes: &[u8]) -> (HashMap<String, String>, Vec<HashMap<String, String>>) {
    let dir = std::env::temp_dir().join(format!("strata-zip-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("export.zip");
    std::fs::write(&path, bytes).expect("write");
    let unzip = std::process::Command::new("unzip")
        .arg("-t")
        .arg(&path)
        .output()
        .expect("unzip");
    assert!(
        unzip.status.success(),
        "unzip -t: {}{}",
        String::from_utf8_lossy(&unzip.stdout),
        String::from_utf8_lossy(&unzip.stderr)
    );
    let script = r#"
import csv, hashlib, io, json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
bad = z.testzip()
assert bad is None, bad
sums = {i.filename: hashlib.sha256(z.read(i)).hexdigest() for i in z.infolist()}
rows = list(csv.DictReader(io.TextIOWrapper(z.open("manifest.csv"), encoding="utf-8", newline="")))
print(json.dumps({"sums": sums, "rows": rows}))
"#;
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python");
    assert!(
        py.status.success(),
        "python zipfile: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let out: Value = serde_json::from_slice(&py.stdout).expect("json");
    let _ = std::fs::remove_dir_all(&dir);
    (
        serde_json::from_value(out["sums"].clone()).expect("sums"),
        serde_json::from_value(out["rows"].clone()).expect("rows"),
    )
}

fn assert_safe_name(name: &str) {
    assert!(!name.starts_with('/') && !name.contains('\\'), "{name}");
    for part in name.split('/') {
        assert!(!part.is_empty() && part != "." && part != "..", "{name}");
        assert!(part.len() <= 255, "{} bytes: {name}", part.len());
        assert!(!part.chars().any(char::is_control), "{name:?}");
        assert!(!part.ends_with(['.', ' ']), "{name}");
        let stem = part.split('.').next().unwrap_or_default().to_ascii_uppercase();
        let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&stem.as_str())
            || ((stem.starts_with("COM") || stem.starts_with("LPT")) && stem.len() == 4);
        assert!(!reserved, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_browse_and_search_as_of_any_snapshot() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin.clone();
    let adele = admin.entity_id("mailbox", ADELE).await.expect("adele");

    // Sources: real .eml files, attachments, and hostile subjects.
    let mut sources: HashMap<String, Vec<u8>> = HashMap::new();
    for (i, (_, eml)) in eml_fixtures().into_iter().enumerate() {
        let folder = ["Inbox", "Inbox/Projects", "Archive/2025"][i % 3];
        let id = world.fake.add_message(ADELE, folder, eml.clone()).expect("seed");
        sources.insert(id, eml);
    }
    let attachment: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    for i in 0..3 {
        let mime = strata_e2e::mail_with_attachment(i, &attachment);
        sources.insert(
            world.fake.add_message(ADELE, "Inbox", mime.clone()).expect("seed"),
            mime,
        );
    }
    let long = "L".repeat(400);
    let hostile = [
        "../../etc/passwd",
        "CON",
        long.as_str(),
        "bell\u{7} and\ttab\u{1b}[31m",
        "Duplicate",
        "duplicate",
    ];
    for (n, subject) in hostile.iter().enumerate() {
        let mime = subject_mail(subject, n);
        sources.insert(
            world.fake.add_message(ADELE, "Inbox", mime.clone()).expect("seed"),
            mime,
        );
    }
    let first = world.back_up(&admin, &adele).await;
    assert_eq!(first["status"], "ok", "{first}");
    let sent_before = ses_sent(&world).await;

    // The source loses two messages; the next backup records it.
    let mailbox = world.fake.mailbox(ADELE).expect("mailbox");
    let gone: Vec<String> = mailbox
        .items
        .iter()
        .filter(|m| {
            String::from_utf8_lossy(&m.mime).contains("Subject: Report 1")
                || String::from_utf8_lossy(&m.mime).contains("Site photos")
        })
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(gone.len(), 2);
    for id in &gone {
        assert!(world.fake.delete_message(ADELE, id));
    }
    let second = world.back_up(&admin, &adele).await;
    assert_eq!(second["deleted"], 2, "{second}");

    // Snapshots, and the folder tree and items as of each.
    let (status, snaps) = admin
        .get(&format!("/v1/entities/{adele}/snapshots"))
        .await
        .expect("snapshots");
    assert_eq!(status, 200, "{snaps}");
    let snaps = snaps["items"].as_array().expect("items").clone();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (s1, s2) = (
        snaps[0]["id"].as_str().expect("id"),
        snaps[1]["id"].as_str().expect("id"),
    );
    assert_eq!(snaps[0]["items"].as_u64(), Some(sources.len() as u64));
    assert_eq!(snaps[1]["items"].as_u64(), Some(sources.len() as u64 - 2));
    let (_, tree) = admin
        .get(&format!("/v1/entities/{adele}/snapshots/{s1}/folders"))
        .await
        .expect("folders");
    let paths: Vec<&str> = tree["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    for p in ["Inbox", "Inbox/Projects", "Archive", "Archive/2025"] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    let inbox_ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["item"].as_str().expect("item").to_string())
            .collect()
    };
    // Paging: pages of 4 cover the folder once.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, page) = admin
            .get(&format!(
                "/v1/entities/{adele}/snapshots/{s1}/items?folder=Inbox&limit=4{q}"
            ))
            .await
            .expect("items");
        assert_eq!(status, 200, "{page}");
        paged.extend(inbox_ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let (_, latest_inbox) = admin
        .get(&format!(
            "/v1/entities/{adele}/snapshots/latest/items?folder=Inbox&limit=1000"
        ))
        .await
        .expect("items");
    let report1 = gone
        .iter()
        .find(|id| paged.contains(id))
        .expect("deleted message browsable in the first snapshot");
    assert!(!inbox_ids(&latest_inbox).contains(report1));
    assert_eq!(paged.len(), inbox_ids(&latest_inbox).len() + 1);

    // Search: the deleted message as of the first snapshot, not the second; every version listed.
    let search = |q: String| {
        let admin = admin.clone();
        async move {
            let (status, body) = admin.get(&format!("/v1/search?{q}")).await.expect("search");
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let found = search(format!("entity_id={adele}&snapshot={s1}&subject=report%201")).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["item"].as_str(), Some(report1.as_str()));
    assert_eq!(found["items"][0]["versions"][0]["first_snapshot"].as_str(), Some(s1));
    let found = search(format!("entity_id={adele}&snapshot={s2}&subject=report%201")).await;
    assert_eq!(found["total"], 0, "{found}");
    let found = search("kind=mailbox&subject=report%201".to_string()).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["versions"][0]["current"], false);
    let found = search("sender=finance@contoso&has_attachment=true&min_size=100000".to_string()).await;
    assert_eq!(found["total"], 3, "{found}");
    let found = search(format!(
        "entity_id={adele}&q=r%C3%A9union&received_after=2026-11-01T00:00:00Z&received_before=2026-11-03T00:00:00Z"
    ))
    .await;
    assert_eq!(found["total"], 1, "{found}");
    let found = search("recipient=lee@contoso&folder=Inbox".to_string()).await;
    assert!(
        found["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["folder"].as_str().unwrap_or_default().starts_with("Inbox")),
        "{found}"
    );
    let (status, _) = admin.get("/v1/search?received_after=yesterday").await.expect("search");
    assert_eq!(status, 400);

    // Export of the first snapshot: every message, byte for byte, safe unique names.
    let (first_job, zip) = export(&world, &admin, json!([{"entity_id": adele, "snapshot": s1}])).await;
    let job = first_job.clone();
    let (sums, rows) = inspect_zip(&zip);
    assert_eq!(job["done"].as_u64(), Some(sources.len() as u64), "{job}");
    assert_eq!(job["result"]["entries"].as_u64(), Some(sources.len() as u64 + 1));
    assert_eq!(rows.len(), sources.len());
    let mut lower = std::collections::HashSet::new();
    for row in &rows {
        let path = &row["path"];
        assert_safe_name(path);
        assert!(lower.insert(path.to_lowercase()), "duplicate entry {path}");
        let source = sources
            .get(&row["item"])
            .unwrap_or_else(|| panic!("unknown item {}", row["item"]));
        assert_eq!(sums.get(path), Some(&sha(source)), "{path}: not the backed-up MIME");
        assert_eq!(row["sha256"], sha(source));
        assert_eq!(row["status"], "ok");
        assert!(path.starts_with(&format!("{ADELE}/{}/", row["folder"])), "{path}");
    }
    let renamed: Vec<&HashMap<String, String>> = rows.iter().filter(|r| !r["original_name"].is_empty()).collect();
    for subject in [
        "../../etc/passwd",
        "CON",
        long.as_str(),
        "bell\u{7} and\ttab\u{1b}[31m",
        "duplicate",
    ] {
        assert!(
            renamed
                .iter()
                .any(|r| r["original_name"].ends_with(&format!("{subject}.eml"))),
            "{subject:?} not listed as renamed"
        );
    }

    // Export of the second snapshot: the deleted messages are not in it.
    let (_, zip) = export(&world, &admin, json!([{"entity_id": adele, "snapshot": s2}])).await;
    let (_, rows) = inspect_zip(&zip);
    assert_eq!(rows.len(), sources.len() - 2);
    assert!(rows.iter().all(|r| !gone.contains(&r["item"])));

    // Only a folder: Inbox/Projects and below.
    let (_, zip) = export(
        &world,
        &admin,
        json!([{"entity_id": adele, "folders": ["Inbox/Projects"]}]),
    )
    .await;
    let (_, rows) = inspect_zip(&zip);
    assert!(!rows.is_empty() && rows.iter().all(|r| r["folder"] == "Inbox/Projects"));

    // Each export e-mailed its link through SES (the emulator's count of sent mail).
    assert_eq!(ses_sent(&world).await - sent_before, 3.0);
    // A link whose token is wrong (or whose job is not this account's) is a 404, like a missing one.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let forged = format!(
        "{}/v1/downloads/{}/{}?token=forged",
        world.api.base,
        onboarded.account_id,
        job["id"].as_str().expect("id")
    );
    assert_eq!(no_redirect.get(&forged).send().await.expect("forged").status(), 404);

    world.stop().await;
}

/// How many e-mails the emulator's SES sent (SES v1 `GetSendQuota`; moto
/// does not check signatures).
async fn ses_sent(world: &World) -> f64 {
    let body = reqwest::Client::new()
        .post(world.stack.endpoint())
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[("Action", "GetSendQuota"), ("Version", "2010-12-01")])
        .send()
        .await
        .expect("ses")
        .text()
        .await
        .expect("text");
    let count = body
        .split("<SentLast24Hours>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_else(|| panic!("GetSendQuota: {body}"));
    count.parse().expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_account_cannot_search_restore_or_export() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.env.insert("OPEN_SIGNUP".into(), "true".into());
    let world = World::start(opts).await.expect("world");
    let a = world
        .sign_up("Contoso", "a@contoso.test", "correct horse battery staple", Some(""))
        .await
        .expect("A");
    let b = world
        .sign_up("Fabrikam", "b@fabrikam.test", "correct horse battery staple", Some(""))
        .await
        .expect("B");
    let (_, conn) = a
        .post("/v1/connections", world.connection_body(&world.fake.client_secret()))
        .await
        .expect("connect");
    a.wait_discovery(conn["id"].as_str().expect("id"), Duration::from_secs(120))
        .await
        .expect("discovery");
    world.settle().await.expect("settle");
    a.post("/v1/entities/activate-all", json!({})).await.expect("activate");
    let adele = a.entity_id("mailbox", ADELE).await.expect("adele");
    world
        .fake
        .add_message(ADELE, "Inbox", subject_mail("Secret plans", 1))
        .expect("seed");
    world.back_up(&a, &adele).await;
    let (_, found) = a.get("/v1/search?q=secret").await.expect("search");
    assert_eq!(found["total"], 1, "{found}");
    let (_, job) = a
        .post("/v1/exports", json!({"selections": [{"entity_id": adele}]}))
        .await
        .expect("export");
    let job = world.wait_job(&a, job["id"].as_str().expect("id")).await.expect("job");
    let job_id = job["id"].as_str().expect("id");

    // B sees nothing of A's backups and cannot act on them.
    let (_, found) = b.get("/v1/search?q=secret").await.expect("search");
    assert_eq!(
        (found["total"].as_u64(), found["entities"].as_u64()),
        (Some(0), Some(0)),
        "{found}"
    );
    for path in [
        format!("/v1/search?entity_id={adele}"),
        format!("/v1/entities/{adele}/snapshots"),
        format!("/v1/entities/{adele}/snapshots/latest/folders"),
        format!("/v1/entities/{adele}/snapshots/latest/items?folder=Inbox"),
        format!("/v1/jobs/{job_id}"),
        format!("/v1/jobs/{job_id}/download"),
    ] {
        assert_eq!(b.get(&path).await.expect("get").0, 404, "{path}");
    }
    assert_eq!(b.get("/v1/jobs").await.expect("jobs").1["items"], json!([]));
    let (status, _) = b
        .post("/v1/restores", json!({"entity_id": adele}))
        .await
        .expect("restore");
    assert_eq!(status, 404);
    let (status, _) = b
        .post("/v1/exports", json!({"selections": [{"entity_id": adele}]}))
        .await
        .expect("export");
    assert_eq!(status, 404);
    // B's own export job can never name A's entity: refused before it is queued.
    assert_eq!(b.get("/v1/jobs").await.expect("jobs").1["items"], json!([]));
    world.stop().await;
}

/// A damaged repository: the export finishes, names each item it could not
/// read (job failures and manifest), and every other item is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_reports_damaged_items_and_keeps_the_rest() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin.clone();
    let adele = admin.entity_id("mailbox", ADELE).await.expect("adele");
    for i in 0..6 {
        world
            .fake
            .add_message(ADELE, "Inbox", subject_mail(&format!("before {i}"), i))
            .expect("seed");
    }
    world.back_up(&admin, &adele).await;
    // A second run writes its own pack; that pack is then overwritten with garbage.
    let s3 = strata_local::provision::s3_client(&world.stack.sdk_config());
    let bucket = world.stack.physical_id("DataBucket").expect("bucket").to_string();
    let list = |prefix: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let out = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .expect("list");
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let packs_before = list(format!("{}/packs/", onboarded.account_id)).await;
    let mut damaged = Vec::new();
    for i in 0..3 {
        let mime = subject_mail(&format!("after {i}"), 100 + i);
        damaged.push(world.fake.add_message(ADELE, "Inbox/Projects", mime).expect("seed"));
    }
    world.back_up(&admin, &adele).await;
    let new_pack = list(format!("{}/packs/", onboarded.account_id))
        .await
        .into_iter()
        .find(|k| !packs_before.contains(k))
        .expect("the second run's pack");
    s3.put_object()
        .bucket(&bucket)
        .key(&new_pack)
        .body(vec![0u8; 4096].into())
        .send()
        .await
        .expect("overwrite");

    let (status, job) = admin
        .post("/v1/exports", json!({"selections": [{"entity_id": adele}]}))
        .await
        .expect("export");
    assert_eq!(status, 202, "{job}");
    let job = world
        .wait_job(&admin, job["id"].as_str().expect("id"))
        .await
        .expect("job");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        (job["done"].as_u64(), job["failed"].as_u64()),
        (Some(6), Some(3)),
        "{job}"
    );
    let failed: Vec<&str> = job["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["item"].as_str())
        .collect();
    for id in &damaged {
        assert!(failed.contains(&id.as_str()), "{id} not reported");
    }
    let (_, link) = admin
        .get(&format!("/v1/jobs/{}/download", job["id"].as_str().expect("id")))
        .await
        .expect("link");
    let zip = reqwest::get(link["url"].as_str().expect("url"))
        .await
        .expect("zip")
        .bytes()
        .await
        .expect("bytes");
    let (sums, rows) = inspect_zip(&zip);
    assert_eq!(rows.len(), 9);
    for row in &rows {
        if damaged.contains(&row["item"]) {
            assert!(row["status"].starts_with("failed: "), "{row:?}");
            assert!(
                !sums.contains_key(&row["path"]),
                "a damaged item is in the zip: {row:?}"
            );
        } else {
            assert_eq!(row["status"], "ok");
            assert_eq!(sums.get(&row["path"]), Some(&row["sha256"]));
        }
    }
    world.stop().await;
}
