//! Mail backup through the local stack (issue 3, first slice): a mailbox
//! seeded from `.eml` files reads back byte for byte; an unchanged mailbox
//! fetches no content and writes no pack; deletions, moves and read changes
//! are recorded without re-fetching content; an expired delta token resyncs
//! without false additions.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use strata_e2e::{World, WorldOptions};

fn eml_fixtures() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fake-m365/fixtures/tenant");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("fixtures").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "eml") {
                out.push(std::fs::read(e.path()).expect("eml"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mailbox_backup_is_byte_exact_incremental_and_keeps_history() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let adele = "adele.vance@contoso.onmicrosoft.com";
    let mut sources = Vec::new();
    for (i, eml) in eml_fixtures().into_iter().enumerate() {
        let folder = ["Inbox", "Inbox/Projects", "Archive/2025"][i % 3];
        sources.push(world.fake.add_message(adele, folder, eml).expect("seed"));
    }
    let attachment: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for i in 0..5 {
        sources.push(
            world
                .fake
                .add_message(adele, "Inbox", strata_e2e::mail_with_attachment(i, &attachment))
                .expect("seed"),
        );
    }
    sources.push(
        world
            .fake
            .add_message(
                adele,
                "Conversation History",
                b"Subject: hidden folder\r\n\r\nteams chat".to_vec(),
            )
            .expect("hidden"),
    );

    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", adele).await.expect("adele's mailbox");

    // First backup: every message, byte for byte.
    let first = world.back_up(&admin, &entity).await;
    assert_eq!(
        (first["status"].as_str(), first["added"].as_u64()),
        (Some("ok"), Some(sources.len() as u64)),
        "{first}"
    );
    let repo = world.repo(&account).await;
    let index = repo.load_index().await.expect("index");
    let view = repo.view(&entity, None).await.expect("view");
    let mailbox = world.fake.mailbox(adele).expect("mailbox");
    for m in &mailbox.items {
        let entry = view.get(&m.id).unwrap_or_else(|| panic!("message {} backed up", m.id));
        let restored = repo.read(entry, &index).await.expect("read");
        assert_eq!(
            hex::encode(Sha256::digest(&restored)),
            hex::encode(Sha256::digest(&m.mime)),
            "{} byte for byte",
            m.id
        );
    }
    assert!(
        view.values().any(|e| e.meta["folder"] == "Conversation History"),
        "hidden folders are backed up"
    );
    assert!(
        first["stored_bytes"].as_u64().expect("stored") < 5 * 600_000,
        "the shared attachment is stored about once: {first}"
    );
    repo.check().await.expect("check");

    // Unchanged: no content fetched, no pack written.
    world.fake.clear_requests();
    let unchanged = world.back_up(&admin, &entity).await;
    assert_eq!(
        (unchanged["added"].as_u64(), unchanged["stored_bytes"].as_u64()),
        (Some(0), Some(0)),
        "{unchanged}"
    );
    assert_eq!(world.content_fetches(), 0);
    let folders = mailbox.folders.len();
    let deltas = world
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages/delta"))
        .count();
    assert_eq!(deltas, folders, "one delta request per folder");
    let listing = world
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/mailFolders") && !r.path.ends_with("/messages/delta"))
        .count();
    assert_eq!(
        world
            .fake
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1.0/"))
            .count(),
        folders + listing,
        "an unchanged mailbox costs its folder listing and one delta per folder (and a token)"
    );

    // Ten new messages: ten content fetches.
    for i in 0..10 {
        world
            .fake
            .add_message(adele, "Inbox", strata_e2e::plain_mail(900 + i, 4_000))
            .expect("seed");
    }
    world.fake.clear_requests();
    let ten = world.back_up(&admin, &entity).await;
    assert_eq!(
        (ten["added"].as_u64(), world.content_fetches()),
        (Some(10), 10),
        "{ten}"
    );

    // Deleted, moved, read: recorded without fetching content; history kept.
    let (snapshots_before, _) = (repo.snapshots(&entity).await.expect("snapshots"), ());
    let before_key = snapshots_before.last().expect("snapshot").0.clone();
    world.fake.clear_requests();
    assert!(world.fake.delete_message(adele, &sources[0]));
    assert!(world.fake.move_message(adele, &sources[1], "Archive/2025"));
    assert!(world.fake.set_read(adele, &sources[2], true));
    let changed = world.back_up(&admin, &entity).await;
    assert_eq!(
        world.content_fetches(),
        0,
        "moves and read changes are metadata: {changed}"
    );
    assert_eq!(changed["deleted"].as_u64(), Some(1), "{changed}");
    let now = repo.view(&entity, None).await.expect("view");
    assert!(!now.contains_key(&sources[0]), "deleted from the latest view");
    assert_eq!(now[&sources[1]].meta["folder"], "Archive/2025", "moved");
    assert_eq!(now[&sources[2]].meta["is_read"], true, "read state updated");
    let then = repo.view(&entity, Some(&before_key)).await.expect("view");
    assert!(
        then.contains_key(&sources[0]),
        "the earlier snapshot still holds the deleted message"
    );

    // An expired delta token: a full resync, no false additions, one new message fetched.
    world.fake.expire_sync_states(adele);
    world
        .fake
        .add_message(adele, "Inbox", b"Subject: after the resync\r\n\r\nnew".to_vec())
        .expect("new");
    world.fake.clear_requests();
    let resync = world.back_up(&admin, &entity).await;
    assert_eq!(
        (resync["added"].as_u64(), resync["deleted"].as_u64()),
        (Some(1), Some(0)),
        "{resync}"
    );
    assert_eq!(world.content_fetches(), 1, "nothing stored twice");
    assert!(
        world.fake.requests().iter().any(|r| r.status == 410),
        "the expired token was seen"
    );
    repo.check().await.expect("check");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_schedule_backs_up_active_mailboxes_once_each() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    for user in [
        "adele.vance@contoso.onmicrosoft.com",
        "alex.wilber@contoso.onmicrosoft.com",
        "info@contoso.onmicrosoft.com",
    ] {
        for eml in eml_fixtures() {
            world.fake.add_message(user, "Inbox", eml).expect("seed");
        }
    }
    let admin = world.onboard_active().await.expect("onboard").admin;
    let mailboxes = admin.all_entities("&kind=mailbox").await.expect("mailboxes");
    let paused = admin
        .entity_id("mailbox", "alex.wilber@contoso.onmicrosoft.com")
        .await
        .expect("alex");
    admin
        .post(&format!("/v1/entities/{paused}/pause"), json!({}))
        .await
        .expect("pause");

    world.stack.fire("DiscoverySchedule").await.expect("fire");
    world.settle().await.expect("settle");

    let (_, activity) = admin.get("/v1/activity?limit=100").await.expect("activity");
    let runs: Vec<&Value> = activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["kind"] == "backup")
        .collect();
    let backed_up: std::collections::BTreeSet<String> = runs
        .iter()
        .map(|a| a["details"]["entity_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        runs.len(),
        mailboxes.len() - 1,
        "one run per active mailbox: {activity}"
    );
    assert!(!backed_up.contains(&paused), "the paused mailbox is skipped");
    let after = admin.all_entities("&kind=mailbox").await.expect("mailboxes");
    for e in &after {
        assert_eq!(
            e["last_backup_at"].is_string(),
            e["id"] != paused.as_str(),
            "last backup shown in the entity list: {e}"
        );
    }

    // The activity log by entity, kind and day.
    let one = after.iter().find(|e| e["id"] != paused.as_str()).expect("active")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_, runs_of_one) = admin
        .get(&format!("/v1/activity?kind=backup&entity_id={one}"))
        .await
        .expect("activity");
    let items = runs_of_one["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{runs_of_one}");
    assert!(items[0]["details"]["run"]["added"].is_u64() && items[0]["details"]["run"]["exceptions"].is_array());
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let (_, discoveries) = admin
        .get(&format!("/v1/activity?kind=discovery&day={today}"))
        .await
        .expect("activity");
    assert!(!discoveries["items"].as_array().expect("items").is_empty());
    let (_, long_ago) = admin.get("/v1/activity?day=2000-01-01").await.expect("activity");
    assert_eq!(long_ago["items"], json!([]));
    assert_eq!(admin.get("/v1/activity?day=yesterday").await.expect("activity").0, 400);

    // A redelivered backup request does nothing.
    let (_, me) = admin.get("/v1/me").await.expect("me");
    let active = after.iter().find(|e| e["id"] != paused.as_str()).expect("active")["id"].clone();
    let message = json!({"account_id": me["account_id"], "entity_id": active, "request_id": "same-request"});
    let sqs = aws_sdk_sqs::Client::new(&world.stack.sdk_config());
    let url = world.stack.physical_id("BackupQueue").expect("queue").to_string();
    for _ in 0..2 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(message.to_string())
            .send()
            .await
            .expect("send");
        world.settle().await.expect("settle");
    }
    let (_, activity) = admin.get("/v1/activity?limit=100").await.expect("activity");
    let runs = activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["kind"] == "backup")
        .count();
    assert_eq!(runs, mailboxes.len(), "the same request ran once");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_message_is_recorded_and_tried_again_next_run() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let adele = "adele.vance@contoso.onmicrosoft.com";
    let good = world
        .fake
        .add_message(adele, "Inbox", b"Subject: fine\r\n\r\nok".to_vec())
        .expect("seed");
    let bad = world
        .fake
        .add_message(
            adele,
            "Inbox",
            b"Subject: broken\r\n\r\nthe server fails on this one".to_vec(),
        )
        .expect("seed");
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", adele).await.expect("adele");

    // Every read of the broken message's content fails with a 500.
    world.fake.set_faults(fake_m365::Faults {
        rules: vec![fake_m365::FaultRule::status(
            format!("{bad}/$value"),
            500,
            None,
            1.0,
            None,
        )],
    });
    let first = world.back_up(&admin, &entity).await;
    assert_eq!(
        (
            first["status"].as_str(),
            first["added"].as_u64(),
            first["failed"].as_u64()
        ),
        (Some("partial"), Some(1), Some(1)),
        "{first}"
    );
    assert_eq!(
        first["exceptions"][0]["item"],
        bad.as_str(),
        "the exception names the message: {first}"
    );

    // The source recovers: the next run fetches the message it missed, and only that one.
    world.fake.set_faults(fake_m365::Faults::default());
    world.fake.clear_requests();
    let second = world.back_up(&admin, &entity).await;
    assert_eq!(
        (second["status"].as_str(), second["added"].as_u64()),
        (Some("ok"), Some(1)),
        "{second}"
    );
    assert_eq!(world.content_fetches(), 1);
    let repo = world.repo(&account).await;
    let view = repo.view(&entity, None).await.expect("view");
    assert!(
        view.contains_key(&good) && view.contains_key(&bad),
        "both messages are in the catalog now"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_messages_are_kept_byte_for_byte_and_broken_reads_do_not_fail_the_run() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let adele = "adele.vance@contoso.onmicrosoft.com";
    let mut binary: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    binary.extend_from_slice(b"\0\xff\xfe not UTF-8");
    let odd: Vec<Vec<u8>> = vec![
        Vec::new(),                                                           // 0 bytes
        binary,                                                               // not MIME at all, not UTF-8
        b"no headers, no blank line, just text".to_vec(),                     // malformed MIME
        format!("Subject: {}\r\n\r\nbody", "x".repeat(100_000)).into_bytes(), // a 100 KB header line
        b"Subject: =?utf-8?B?broken encoded word\r\nContent-Type: multipart/mixed; boundary=\"never\"\r\n\r\nno parts"
            .to_vec(),
    ];
    for mime in &odd {
        world.fake.add_message(adele, "Inbox", mime.clone()).expect("seed");
    }
    let truncated = world
        .fake
        .add_message(adele, "Inbox", strata_e2e::plain_mail(1, 200_000))
        .expect("seed");
    let missing = world
        .fake
        .add_message(adele, "Inbox", strata_e2e::plain_mail(2, 5_000))
        .expect("seed");
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", adele).await.expect("adele");

    // One body breaks midway twice (then arrives whole); one message answers 404 every time.
    world.fake.set_faults(fake_m365::Faults {
        rules: vec![
            fake_m365::FaultRule {
                path_contains: Some(format!("{truncated}/$value")),
                kind: fake_m365::FaultKind::Truncate,
                probability: 1.0,
                remaining: Some(2),
            },
            fake_m365::FaultRule::status(format!("{missing}/$value"), 404, None, 1.0, None),
        ],
    });
    let first = world.back_up(&admin, &entity).await;
    assert_eq!(
        (
            first["status"].as_str(),
            first["added"].as_u64(),
            first["failed"].as_u64()
        ),
        (Some("partial"), Some(odd.len() as u64 + 1), Some(1)),
        "{first}"
    );
    assert_eq!(first["exceptions"][0]["item"], missing.as_str(), "{first}");
    let view = world.repo(&account).await.view(&entity, None).await.expect("view");
    assert!(
        view.contains_key(&truncated),
        "the broken body was fetched again and stored"
    );
    assert!(!view.contains_key(&missing));

    // Next run: the 404 is gone; everything is in the catalog, byte for byte.
    world.fake.set_faults(fake_m365::Faults::default());
    let second = world.back_up(&admin, &entity).await;
    assert_eq!(
        (second["status"].as_str(), second["added"].as_u64()),
        (Some("ok"), Some(1)),
        "{second}"
    );
    let mismatches = world.catalog_mismatches(&account, &entity, adele).await;
    assert!(mismatches.is_empty(), "{mismatches:?}");
    let repo = world.repo(&account).await;
    let index = repo.load_index().await.expect("index");
    let view = repo.view(&entity, None).await.expect("view");
    let mut read_back: Vec<Vec<u8>> = Vec::new();
    for entry in view.values() {
        read_back.push(repo.read(entry, &index).await.expect("read"));
    }
    for mime in &odd {
        assert!(
            read_back.contains(mime),
            "a message of {} bytes reads back whole",
            mime.len()
        );
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renamed_and_deleted_folders_are_followed_without_fetching_content() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let adele = "adele.vance@contoso.onmicrosoft.com";
    let mut n = 0;
    for (folder, count) in [("Projects/Alpha", 3), ("Projects/Beta", 2), ("Old", 2), ("Inbox", 1)] {
        for _ in 0..count {
            n += 1;
            world
                .fake
                .add_message(adele, folder, strata_e2e::plain_mail(n, 2_000))
                .expect("seed");
        }
    }
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", adele).await.expect("adele");
    let first = world.back_up(&admin, &entity).await;
    assert_eq!(first["added"], 8, "{first}");
    let first_snapshot = first["snapshot"].as_str().expect("snapshot").to_string();

    assert!(world.fake.rename_folder(adele, "Projects", "Programmes"));
    assert!(world.fake.delete_folder(adele, "Old"));
    world.fake.clear_requests();
    let second = world.back_up(&admin, &entity).await;
    assert_eq!(
        (
            second["added"].as_u64(),
            second["updated"].as_u64(),
            second["deleted"].as_u64()
        ),
        (Some(0), Some(5), Some(2)),
        "five messages under a renamed folder, two in a deleted one: {second}"
    );
    assert_eq!(world.content_fetches(), 0, "no content fetched");
    let mismatches = world.catalog_mismatches(&account, &entity, adele).await;
    assert!(mismatches.is_empty(), "{mismatches:?}");
    let repo = world.repo(&account).await;
    let view = repo.view(&entity, None).await.expect("view");
    assert!(
        view.values().any(|e| e.meta["folder"] == "Programmes/Alpha"),
        "paths follow the rename"
    );
    let before = repo.view(&entity, Some(&first_snapshot)).await.expect("view");
    assert_eq!(
        before.values().filter(|e| e.meta["folder"] == "Old").count(),
        2,
        "the earlier snapshot still holds the deleted folder's messages"
    );
    world.stop().await;
}
