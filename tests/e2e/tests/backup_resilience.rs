//! The backup under pressure (issue 3): a time budget that forces
//! continuations, invocations killed at random points, the fake at its real
//! throttling limits, and one attachment sent to fifty mailboxes.

use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use strata::model::{AccountId, EntityId};
use strata::ops::backup::{BackupMessage, Budget, backup};
use strata_e2e::{World, WorldOptions};

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_first_backup_spans_invocations_and_fetches_nothing_twice() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    // Each invocation works half a second, then commits and hands over to a continuation.
    opts.env.insert("BACKUP_TIME_BUDGET_SECS".into(), "0.5".into());
    let world = World::start(opts).await.expect("world");
    const FOLDERS: &[&str] = &["Inbox", "Inbox", "Inbox/Projects", "Archive", "Sent Items"];
    for i in 0..5_000 {
        world
            .fake
            .add_message(ADELE, FOLDERS[i % FOLDERS.len()], strata_e2e::plain_mail(i, 1_200))
            .expect("seed");
    }
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", ADELE).await.expect("adele");
    world.fake.clear_requests();

    let started = Instant::now();
    world.back_up(&admin, &entity).await;
    let runs = admin.backup_runs(&entity).await;
    println!(
        "5,000 messages in {} invocations, {:.1} s",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(runs.len() >= 3, "at least three invocations: {}", runs.len());
    let (last, earlier) = runs.split_last().expect("runs");
    assert!(
        earlier
            .iter()
            .all(|r| r["continues"] == true && r["status"] == "partial"),
        "every run but the last handed over: {earlier:?}"
    );
    assert_eq!(
        (last["continues"].as_bool(), last["status"].as_str()),
        (Some(false), Some("ok")),
        "{last}"
    );
    let added: u64 = runs.iter().map(|r| r["added"].as_u64().unwrap_or(0)).sum();
    let other: u64 = runs
        .iter()
        .map(|r| r["changed"].as_u64().unwrap_or(0) + r["deleted"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((added, other), (5_000, 0), "every message added once, nothing else");

    // No message content fetched twice.
    let mut fetched: HashMap<String, usize> = HashMap::new();
    for r in world.fake.requests().iter().filter(|r| r.path.ends_with("/$value")) {
        *fetched.entry(r.path.clone()).or_default() += 1;
    }
    assert_eq!(fetched.len(), 5_000);
    let twice: Vec<_> = fetched.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "fetched more than once: {:?}",
        &twice[..twice.len().min(3)]
    );

    // The same catalog as one uninterrupted run: every message once, in its folder, byte for byte.
    let mismatches = world.catalog_mismatches(&account, &entity, ADELE).await;
    assert!(mismatches.is_empty(), "{:?}", &mismatches[..mismatches.len().min(5)]);
    let repo = world.repo(&account).await;
    let snapshots = repo.snapshots(&entity).await.expect("snapshots");
    assert_eq!(snapshots.len(), runs.len(), "one snapshot per invocation");
    assert!(snapshots[..snapshots.len() - 1].iter().all(|(_, s)| s.partial));
    assert!(!snapshots[snapshots.len() - 1].1.partial);
    repo.check().await.expect("check");

    // And the mailbox is now up to date: the next run fetches nothing.
    world.fake.clear_requests();
    let unchanged = world.back_up(&admin, &entity).await;
    assert_eq!(unchanged["added"], 0, "{unchanged}");
    assert_eq!(world.content_fetches(), 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_killed_at_random_points_always_recovers() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", ADELE).await.expect("adele");
    // The backup function's own context; the test plays the runner, so continuations are not queued.
    let mut ctx = strata_local::wire::context(&world.stack, "BackupFunction", &strata_local::wire::local_overrides())
        .expect("context");
    ctx.backup_queue = None;
    let ctx = std::sync::Arc::new(ctx);
    let (account_id, entity_id) = (AccountId(account.clone()), EntityId(entity.clone()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261125);
    let mut message_no = 0usize;
    let kills = 12;
    for kill in 0..kills {
        // New mail each round, enough that packs fill during the run (each message its own 300 KB).
        for _ in 0..30 {
            message_no += 1;
            let attachment: Vec<u8> = (0..300_000).map(|_| rng.r#gen::<u8>()).collect();
            let mime = if message_no.is_multiple_of(3) {
                strata_e2e::plain_mail(message_no, 20_000)
            } else {
                strata_e2e::mail_with_attachment(message_no, &attachment)
            };
            world.fake.add_message(ADELE, "Inbox", mime).expect("seed");
        }
        if kill % 4 == 3 {
            // Some deletions and moves too, so that the kill can land between their records.
            let mailbox = world.fake.mailbox(ADELE).expect("mailbox");
            let ids: Vec<String> = mailbox.items.iter().map(|m| m.id.clone()).collect();
            world.fake.delete_message(ADELE, &ids[kill]);
            world.fake.move_message(ADELE, &ids[kill + 1], "Archive");
        }
        let msg = BackupMessage {
            account_id: account_id.clone(),
            entity_id: entity_id.clone(),
            request_id: format!("crash-{kill}"),
        };
        let delay = Duration::from_millis(rng.gen_range(20..1_500));
        let before = world
            .repo(&account)
            .await
            .snapshots(&entity)
            .await
            .expect("snapshots")
            .len();
        let task = {
            let (ctx, msg) = (ctx.clone(), msg.clone());
            tokio::spawn(async move {
                let budget = Budget::new(Instant::now() + Duration::from_secs(60), None);
                backup(&ctx, &msg, &budget).await
            })
        };
        tokio::time::sleep(delay).await;
        task.abort();
        let finished = matches!(task.await, Ok(Ok(_)));
        let after = world
            .repo(&account)
            .await
            .snapshots(&entity)
            .await
            .expect("snapshots")
            .len();
        println!(
            "kill {kill}: after {} ms, run {}",
            delay.as_millis(),
            if finished {
                "had finished"
            } else if after > before {
                "killed after its snapshot"
            } else {
                "killed before its snapshot"
            }
        );
        // The killed run's claims lapse (as its lease would, at its deadline).
        for request in [format!("lease-backup-{entity}"), msg.request_id.clone()] {
            ctx.state
                .finish_request(&account_id, &request, false)
                .await
                .expect("release");
        }
        // The repository is sound whatever the moment of the kill.
        world.repo(&account).await.check().await.expect("check after the kill");

        // Restarted: the next run completes the catalog.
        let restart = BackupMessage {
            request_id: format!("restart-{kill}"),
            ..msg
        };
        let budget = Budget::new(Instant::now() + Duration::from_secs(120), None);
        let record = backup(&ctx, &restart, &budget).await.expect("restart").expect("ran");
        assert_eq!(record.status, "ok", "{record:?}");
        let repo = world.repo(&account).await;
        let report = repo.check().await.expect("check after the restart");
        let mismatches = world.catalog_mismatches(&account, &entity, ADELE).await;
        assert!(
            mismatches.is_empty(),
            "kill {kill}: {:?}",
            &mismatches[..mismatches.len().min(5)]
        );
        assert!(report.items > 0);
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_keeps_to_the_mailbox_limits_and_retry_after() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.fake = fake_m365::Options {
        throttle: true,
        seed: 5,
        faults: fake_m365::Faults {
            rules: vec![
                fake_m365::FaultRule::status("/$value", 429, Some(1), 0.05, Some(8)),
                fake_m365::FaultRule::status("/messages/delta", 429, Some(2), 0.2, Some(2)),
                fake_m365::FaultRule::status("/$value", 503, None, 0.05, Some(6)),
            ],
        },
        ..fake_m365::Options::default()
    };
    let world = World::start(opts).await.expect("world");
    let users = [
        "adele.vance@contoso.onmicrosoft.com",
        "alex.wilber@contoso.onmicrosoft.com",
    ];
    for user in users {
        for i in 0..300 {
            world
                .fake
                .add_message(
                    user,
                    if i % 2 == 0 { "Inbox" } else { "Archive" },
                    strata_e2e::plain_mail(i, 3_000),
                )
                .expect("seed");
        }
    }
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    world.fake.clear_requests();
    let (status, body) = admin
        .post("/v1/entities/backup-all", json!({"kind": "mailbox"}))
        .await
        .expect("backup all");
    assert_eq!(status, 202, "{body}");
    world.settle().await.expect("settle");

    let log = world.fake.requests();
    let throttled = log.iter().filter(|r| r.status == 429).count();
    assert!(throttled >= 5, "the backups were throttled ({throttled} times)");
    let most = strata_e2e::max_mailbox_concurrency(&log);
    assert!(most <= 4, "{most} requests of one mailbox in flight at once");
    let violations = strata_e2e::retry_after_violations(&log);
    assert!(
        violations.is_empty(),
        "{} requests ignored a Retry-After: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    for user in users {
        let entity = admin.entity_id("mailbox", user).await.expect("entity");
        let mismatches = world.catalog_mismatches(&account, &entity, user).await;
        assert!(
            mismatches.is_empty(),
            "{user}: {:?}",
            &mismatches[..mismatches.len().min(5)]
        );
        let runs = admin.backup_runs(&entity).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(
            (runs[0]["status"].as_str(), runs[0]["failed"].as_u64()),
            (Some("ok"), Some(0))
        );
    }
    println!("throttled {throttled} times, at most {most} requests of a mailbox in flight");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_attachment_sent_to_fifty_mailboxes_is_stored_once() {
    let tenant = fake_m365::Tenant::generate(3, strata_e2e::sizes(80, 1));
    let mailboxes: Vec<String> = tenant
        .users
        .iter()
        .filter(|u| u.kind.has_mailbox())
        .map(|u| u.user_principal_name.clone())
        .take(50)
        .collect();
    assert_eq!(mailboxes.len(), 50);
    let world = World::start(WorldOptions::new(tenant)).await.expect("world");
    let mut rng = rand::rngs::StdRng::seed_from_u64(50);
    let attachment: Vec<u8> = (0..5 * 1024 * 1024).map(|_| rng.r#gen::<u8>()).collect();
    for (i, user) in mailboxes.iter().enumerate() {
        world
            .fake
            .add_message(user, "Inbox", strata_e2e::mail_with_attachment(i, &attachment))
            .expect("seed");
    }
    let onboarded = world.onboard().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    admin
        .post("/v1/entities/activate-all", json!({"kind": "mailbox"}))
        .await
        .expect("activate");
    let (status, body) = admin
        .post("/v1/entities/backup-all", json!({"kind": "mailbox"}))
        .await
        .expect("backup all");
    assert_eq!(status, 202, "{body}");
    world.settle().await.expect("settle");

    let repo = world.repo(&account).await;
    let (mut logical, mut stored, mut backed_up) = (0u64, 0u64, 0usize);
    for entity in repo.entities().await.expect("entities") {
        for (_, s) in repo.snapshots(&entity).await.expect("snapshots") {
            logical += s.counts.logical_bytes;
            stored += s.counts.stored_bytes;
            backed_up += usize::try_from(s.counts.added).unwrap_or(0);
        }
    }
    // What the bucket holds under packs/, measured from S3 itself.
    let listed = strata_local::provision::s3_client(&world.stack.sdk_config())
        .list_objects_v2()
        .bucket(world.stack.physical_id("DataBucket").expect("bucket"))
        .prefix(format!("{account}/packs/"))
        .send()
        .await
        .expect("list");
    let in_bucket: i64 = listed.contents().iter().filter_map(|o| o.size()).sum();
    println!(
        "50 mailboxes × 5 MiB attachment: {backed_up} messages, logical {:.1} MB, packs {:.1} MB (snapshots say {:.1} MB)",
        logical as f64 / 1e6,
        in_bucket as f64 / 1e6,
        stored as f64 / 1e6
    );
    assert!(backed_up >= 50, "every message backed up: {backed_up}");
    assert!(logical > 250 * 1024 * 1024, "the mailboxes hold 50 copies: {logical}");
    assert!(
        (in_bucket as u64) < 8 * 1024 * 1024,
        "about one compressed copy is stored, not fifty: {in_bucket} bytes"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spent_mailbox_budget_ends_the_run_and_the_continuation_waits_for_it() {
    // Graph's 10,000 requests per 10 minutes per mailbox, with the window
    // scaled to 60 s: a first backup of 10,050 messages needs more than one window.
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.fake.time_scale = 0.1;
    let world = World::start(opts).await.expect("world");
    for i in 0..10_050 {
        world
            .fake
            .add_message(
                ADELE,
                if i % 2 == 0 { "Inbox" } else { "Archive" },
                format!("Subject: {i}\r\n\r\n{i}").into_bytes(),
            )
            .expect("seed");
    }
    let onboarded = world.onboard_active().await.expect("onboard");
    let (admin, account) = (onboarded.admin, onboarded.account_id);
    let entity = admin.entity_id("mailbox", ADELE).await.expect("adele");
    world.fake.clear_requests();
    let (status, body) = admin
        .post(&format!("/v1/entities/{entity}/backup"), json!({}))
        .await
        .expect("backup");
    assert_eq!(status, 202, "{body}");
    world.settle().await.expect("settle");

    let runs = admin.backup_runs(&entity).await;
    for r in &runs {
        println!(
            "run: {} added, continues {}, resume after {}, {} requests",
            r["added"], r["continues"], r["resume_after_secs"], r["requests"]
        );
    }
    let (last, earlier) = runs.split_last().expect("runs");
    assert!(!earlier.is_empty(), "the budget ended the first run: {runs:?}");
    assert!(
        earlier
            .iter()
            .all(|r| r["continues"] == true && r["resume_after_secs"].as_u64() > Some(0)),
        "{earlier:?}"
    );
    assert_eq!(
        (last["status"].as_str(), last["continues"].as_bool()),
        (Some("ok"), Some(false)),
        "{last}"
    );
    let log = world.fake.requests();
    let refused = log.iter().filter(|r| r.status == 429).count();
    assert!(refused >= 1, "the budget was met");
    assert!(
        refused <= 3,
        "the backup stopped asking once refused ({refused} refusals)"
    );
    assert!(strata_e2e::retry_after_violations(&log).is_empty());
    let mut fetched: HashMap<&str, usize> = HashMap::new();
    for r in log.iter().filter(|r| r.path.ends_with("/$value") && r.status == 200) {
        *fetched.entry(r.path.as_str()).or_default() += 1;
    }
    assert_eq!(fetched.len(), 10_050);
    assert!(fetched.values().all(|n| *n == 1), "no content fetched twice");
    let mismatches = world.catalog_mismatches(&account, &entity, ADELE).await;
    assert!(mismatches.is_empty(), "{:?}", &mismatches[..mismatches.len().min(5)]);
    println!(
        "10,050 messages: {} runs, {refused} refusals, resumed after {:?} s",
        runs.len(),
        earlier
            .iter()
            .map(|r| r["resume_after_secs"].clone())
            .collect::<Vec<_>>()
    );
    world.stop().await;
}
