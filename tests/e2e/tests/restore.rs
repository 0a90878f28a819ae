//! Restore through the local stack and the fake Graph (issue 4): into a new
//! folder of the same mailbox and of another user's, keeping the folder tree;
//! real messages (not drafts) with their dates, sender, subject, read state
//! and attachments; sources untouched; a redelivered job restores nothing
//! twice; a paused mailbox restores; a large job spans invocations and keeps
//! the mailbox limits; a failing item does not stop the job.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use strata_e2e::{Api, World, WorldOptions};

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";

async fn restore(world: &World, admin: &Api, body: Value) -> Value {
    world.run_job(admin, "/v1/restores", body).await
}

fn header(mime: &[u8], name: &str) -> Option<String> {
    fake_m365::headers_of(mime).get(name).cloned()
}

fn iso_of_date(mime: &[u8]) -> String {
    let date = header(mime, "date").expect("Date header");
    chrono::DateTime::parse_from_rfc2822(&date)
        .expect("rfc 2822 date")
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Every message of a mailbox by id: folder id, MIME digest, read state.
fn fingerprint(world: &World, user: &str) -> BTreeMap<String, (String, String, bool)> {
    world
        .fake
        .mailbox(user)
        .expect("mailbox")
        .items
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                (m.folder_id.clone(), hex::encode(Sha256::digest(&m.mime)), m.is_read),
            )
        })
        .collect()
}

/// The Inbox tree's messages, by path, then the restored copies at `root`.
fn restored_pairs(
    world: &World,
    user: &str,
    target: &str,
    root: &str,
) -> Vec<(fake_m365::MailItem, fake_m365::MailItem)> {
    let mut out = Vec::new();
    for path in ["Inbox", "Inbox/Projects"] {
        let originals = world.fake.messages_in(user, path);
        let copies = world.fake.messages_in(target, &format!("{root}/{path}"));
        assert_eq!(copies.len(), originals.len(), "{root}/{path}");
        for o in originals {
            let subject = header(&o.mime, "subject").unwrap_or_default();
            let copy = copies
                .iter()
                .find(|c| c.composed.as_ref().is_some_and(|x| x.subject == subject))
                .unwrap_or_else(|| panic!("{subject} not restored in {root}/{path}"))
                .clone();
            out.push((o, copy));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_is_real_non_destructive_idempotent_and_crosses_users() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin.clone();
    let adele = admin.entity_id("mailbox", ADELE).await.expect("adele");
    let other = admin
        .all_entities("&kind=mailbox")
        .await
        .expect("mailboxes")
        .into_iter()
        .find(|e| e["address"] != ADELE)
        .expect("another mailbox");
    let (other_id, other_user) = (
        other["id"].as_str().expect("id").to_string(),
        other["address"].as_str().expect("address").to_string(),
    );

    // Inbox and a subfolder: plain mail, read and unread, small and 5 MB attachments.
    let small: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    for i in 0..4 {
        let id = world
            .fake
            .add_message(ADELE, "Inbox", strata_e2e::plain_mail(i, 3_000))
            .expect("seed");
        if i % 2 == 0 {
            assert!(world.fake.set_read(ADELE, &id, true));
        }
    }
    world
        .fake
        .add_message(ADELE, "Inbox/Projects", strata_e2e::mail_with_attachment(1, &small))
        .expect("seed");
    world
        .fake
        .add_message(ADELE, "Inbox/Projects", strata_e2e::mail_with_attachment(2, &big))
        .expect("seed");
    world
        .fake
        .add_message(ADELE, "Archive", strata_e2e::plain_mail(9, 500))
        .expect("seed");
    let run = world.back_up(&admin, &adele).await;
    assert_eq!(run["status"], "ok", "{run}");
    let before = fingerprint(&world, ADELE);
    let inbox_tree =
        world.fake.messages_in(ADELE, "Inbox").len() + world.fake.messages_in(ADELE, "Inbox/Projects").len();

    // 1. Into the same mailbox: a new folder keeping the tree, real messages.
    world.fake.clear_requests();
    let job = restore(&world, &admin, json!({"entity_id": adele, "folders": ["Inbox"]})).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        (job["total"].as_u64(), job["done"].as_u64(), job["failed"].as_u64()),
        (Some(inbox_tree as u64), Some(inbox_tree as u64), Some(0)),
        "{job}"
    );
    let root = job["folder_name"].as_str().expect("folder name").to_string();
    assert!(root.starts_with("Restored 20"), "{root}");
    for (original, copy) in restored_pairs(&world, ADELE, ADELE, &root) {
        let c = copy.composed.as_ref().expect("created from JSON");
        assert!(!copy.is_draft, "restored as a draft: {}", c.subject);
        assert_eq!(
            copy.received.as_deref(),
            Some(iso_of_date(&original.mime).as_str()),
            "{}",
            c.subject
        );
        assert_eq!(copy.sent.as_deref(), Some(iso_of_date(&original.mime).as_str()));
        assert_eq!(copy.is_read, original.is_read, "{}", c.subject);
        let from = header(&original.mime, "from").expect("from");
        assert!(from.contains(&c.from.as_ref().expect("from").address), "{from}");
        let mut parsed = Vec::new();
        if let Some(m) = mail_parser::MessageParser::default().parse(&original.mime[..]) {
            use mail_parser::MimeHeaders;
            for a in m.attachments() {
                parsed.push((
                    a.attachment_name().unwrap_or_default().to_string(),
                    hex::encode(Sha256::digest(a.contents())),
                ));
            }
        }
        let restored: Vec<(String, String)> = copy
            .attachments
            .iter()
            .map(|a| (a.name.clone(), hex::encode(Sha256::digest(&a.bytes))))
            .collect();
        assert_eq!(restored, parsed, "attachments of {}", c.subject);
    }
    // The 5 MB attachment went through an upload session; the others inline.
    let log = world.fake.requests();
    assert!(log.iter().any(|r| r.path.contains("createUploadSession")));
    assert!(log.iter().any(|r| r.method == "PUT" && r.path.contains("/upload/")));
    assert!(strata_e2e::max_mailbox_concurrency(&log) <= 4);
    // Nothing that was there changed.
    let after = fingerprint(&world, ADELE);
    for (id, print) in &before {
        assert_eq!(after.get(id), Some(print), "source message {id} changed");
    }
    assert_eq!(after.len(), before.len() + inbox_tree);

    // 2. Redelivery of the same job: nothing restored twice.
    let sqs = aws_sdk_sqs::Client::new(&world.stack.sdk_config());
    let queue = world.stack.physical_id("RestoreQueue").expect("queue").to_string();
    let message = json!({"account_id": onboarded.account_id, "job_id": job["id"]});
    sqs.send_message()
        .queue_url(&queue)
        .message_body(message.to_string())
        .send()
        .await
        .expect("send");
    // Even a job whose status was lost (a retry after a crash) restores no item twice: items are recorded.
    let ddb_job = reset_job_status(&world, &onboarded.account_id, job["id"].as_str().expect("id")).await;
    assert_eq!(ddb_job, "running");
    sqs.send_message()
        .queue_url(&queue)
        .message_body(message.to_string())
        .send()
        .await
        .expect("send");
    world.settle().await.expect("settle");
    let again = world
        .wait_job(&admin, job["id"].as_str().expect("id"))
        .await
        .expect("job");
    assert_eq!(again["status"], "done", "{again}");
    assert_eq!(
        fingerprint(&world, ADELE).len(),
        before.len() + inbox_tree,
        "a redelivery restored again"
    );

    // 3. Into another user's mailbox, one chosen item, a chosen folder name.
    let archived = world.fake.messages_in(ADELE, "Archive")[0].id.clone();
    let job = restore(
        &world,
        &admin,
        json!({"entity_id": adele, "items": [archived], "target_entity_id": other_id, "folder_name": "From Adele"}),
    )
    .await;
    assert_eq!(
        (job["status"].as_str(), job["done"].as_u64()),
        (Some("done"), Some(1)),
        "{job}"
    );
    let copies = world.fake.messages_in(&other_user, "From Adele/Archive");
    assert_eq!(copies.len(), 1);
    assert!(!copies[0].is_draft);

    // 4. A paused (archived) mailbox restores, to another user, whole.
    let (status, body) = admin
        .post(&format!("/v1/entities/{adele}/pause"), json!({}))
        .await
        .expect("pause");
    assert_eq!(status, 200, "{body}");
    let job = restore(
        &world,
        &admin,
        json!({"entity_id": adele, "target_entity_id": other_id, "folder_name": "Adele (archived)"}),
    )
    .await;
    assert_eq!(
        (job["status"].as_str(), job["done"].as_u64()),
        (Some("done"), Some(before.len() as u64)),
        "{job}"
    );
    let pairs = restored_pairs(&world, ADELE, &other_user, "Adele (archived)");
    assert_eq!(pairs.len(), inbox_tree);
    assert_eq!(world.fake.messages_in(&other_user, "Adele (archived)/Archive").len(), 1);

    // Refused: a target of another kind, a bad folder name, an unknown snapshot.
    let (status, _) = admin
        .post("/v1/restores", json!({"entity_id": adele, "folder_name": "a/b"}))
        .await
        .expect("restore");
    assert_eq!(status, 400);
    let (status, _) = admin
        .post("/v1/restores", json!({"entity_id": adele, "snapshot": "nope"}))
        .await
        .expect("restore");
    assert_eq!(status, 404);
    world.stop().await;
}

/// Puts a finished job back to `running` without a lease, as if its last
/// invocation had died before saying it was done. Returns the new status.
async fn reset_job_status(world: &World, account: &str, job: &str) -> String {
    let ddb = aws_sdk_dynamodb::Client::new(&world.stack.sdk_config());
    let table = world.stack.physical_id("StateTable").expect("table").to_string();
    let items = strata::state::DynamoItems::new(ddb, &table);
    let state = strata::state::State::new(std::sync::Arc::new(items));
    let job = state
        .update_job(
            &strata::model::AccountId(account.into()),
            &strata::model::JobId(job.into()),
            |j| {
                j.status = strata::model::JobStatus::Running;
                j.lease_until = None;
                true
            },
        )
        .await
        .expect("job");
    serde_json::to_value(job.status)
        .expect("status")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_restore_spans_invocations_keeps_the_limits_and_reports_failures() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.fake = strata_e2e::throttling_options();
    opts.env.insert("JOB_TIME_BUDGET_SECS".into(), "0.4".into());
    let world = World::start(opts).await.expect("world");
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin.clone();
    let adele = admin.entity_id("mailbox", ADELE).await.expect("adele");
    let n = 300;
    for i in 0..n {
        world
            .fake
            .add_message(
                ADELE,
                ["Inbox", "Inbox/Projects", "Archive"][i % 3],
                strata_e2e::plain_mail(i, 1_500),
            )
            .expect("seed");
    }
    let run = world.back_up(&admin, &adele).await;
    assert_eq!(run["status"], "ok", "{run}");
    let total = world.fake.mailbox(ADELE).expect("mailbox").items.len();

    // Throttled creates (429 with Retry-After) and three that fail for good (400).
    world.fake.clear_requests();
    world.fake.set_faults(fake_m365::Faults {
        rules: vec![
            fake_m365::FaultRule::status("/messages", 429, Some(1), 0.05, Some(20)),
            fake_m365::FaultRule::status("/childFolders", 503, Some(1), 0.5, Some(2)),
            fake_m365::FaultRule::status("/messages", 400, None, 0.02, Some(3)),
        ],
    });
    let job = restore(&world, &admin, json!({"entity_id": adele, "folder_name": "Bulk"})).await;
    assert_eq!(job["status"], "done", "{job}");
    assert!(
        job["invocations"].as_u64().unwrap_or(0) > 1,
        "one invocation did it all: {job}"
    );
    assert_eq!(job["total"].as_u64(), Some(total as u64));
    let failed = job["failed"].as_u64().expect("failed");
    assert_eq!(failed, 3, "{job}");
    assert_eq!(job["failures"].as_array().map(Vec::len), Some(3));
    assert_eq!(job["done"].as_u64(), Some(total as u64 - failed));

    // Every restored message once, in its folder.
    let mut restored: HashMap<String, usize> = HashMap::new();
    for path in ["Bulk/Inbox", "Bulk/Inbox/Projects", "Bulk/Archive"] {
        for m in world.fake.messages_in(ADELE, path) {
            let subject = m.composed.map(|c| c.subject).unwrap_or_default();
            *restored.entry(format!("{path}/{subject}")).or_default() += 1;
        }
    }
    assert_eq!(restored.values().sum::<usize>() as u64, total as u64 - failed);
    assert!(restored.values().all(|&c| c == 1), "duplicates: {restored:?}");
    let log = world.fake.requests();
    assert!(
        strata_e2e::retry_after_violations(&log).is_empty(),
        "{:?}",
        strata_e2e::retry_after_violations(&log)
    );
    assert!(strata_e2e::max_mailbox_concurrency(&log) <= 4);
    world.stop().await;
}
