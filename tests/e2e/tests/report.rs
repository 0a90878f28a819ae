//! The daily report (issue 5) through the local stack: the backups of a night
//! run against the fake tenant, the report schedule's message is delivered
//! with a scheduled time at the account's report hour in its time zone, and
//! the e-mail is read back from the emulator's sent mail (both MIME parts).

use chrono::{DateTime, Duration, FixedOffset, SubsecRound, Timelike, Utc};
use serde_json::json;
use strata_e2e::{Api, SentMail, World, WorldOptions};

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";
const ALEX: &str = "alex.wilber@contoso.onmicrosoft.com";

/// A scheduled time just past (whole seconds, after every run so far): the
/// report window, the 24 hours before it, holds what ran until now.
async fn scheduled_now() -> DateTime<Utc> {
    let at = Utc::now().trunc_subsecs(0) + Duration::seconds(1);
    while Utc::now() <= at {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    at
}

/// Time zones without daylight saving time, so that the test knows their
/// offsets (the unit tests of `ops::report` cover daylight saving time).
fn tokyo() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("offset")
}
fn kolkata() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).expect("offset")
}

/// The hour of `at` at that offset.
fn local_hour(at: DateTime<Utc>, tz: FixedOffset) -> u32 {
    at.with_timezone(&tz).hour()
}

async fn set_report(admin: &Api, settings: serde_json::Value) {
    let (status, body) = admin.patch("/v1/account", settings.clone()).await.expect("patch");
    assert_eq!(status, 200, "PATCH /v1/account {settings}: {body}");
}

async fn back_up_all(world: &World, admin: &Api) {
    let (status, body) = admin
        .post("/v1/entities/backup-all", json!({}))
        .await
        .expect("backup-all");
    assert_eq!(status, 202, "{body}");
    world.settle().await.expect("settle");
}

async fn reports(world: &World) -> Vec<SentMail> {
    world
        .sent_mail()
        .await
        .expect("sent mail")
        .into_iter()
        .filter(|m| m.subject.starts_with("Strata daily report") || m.subject.starts_with("Strata exceptions"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_summary_names_the_failing_mailbox_and_its_exceptions_and_is_sent_once() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    world
        .fake
        .add_message(ADELE, "Inbox", b"Subject: fine\r\n\r\nok".to_vec())
        .expect("seed");
    let broken: Vec<String> = [("Inbox", "broken one"), ("Inbox/Projects", "broken two")]
        .into_iter()
        .map(|(folder, subject)| {
            world
                .fake
                .add_message(
                    ADELE,
                    folder,
                    format!("Subject: {subject}\r\n\r\nserver error").into_bytes(),
                )
                .expect("seed")
        })
        .collect();
    world
        .fake
        .add_message(ALEX, "Inbox", b"Subject: hello\r\n\r\nall good".to_vec())
        .expect("seed");
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin;

    // Tonight the content of Adele's two broken messages cannot be read.
    world.fake.set_faults(fake_m365::Faults {
        rules: broken
            .iter()
            .map(|id| fake_m365::FaultRule::status(format!("{id}/$value"), 500, None, 1.0, None))
            .collect(),
    });
    back_up_all(&world, &admin).await;
    world.fake.set_faults(fake_m365::Faults::default());

    let scheduled = scheduled_now().await;
    set_report(
        &admin,
        json!({"report_hour": local_hour(scheduled, tokyo()), "timezone": "Asia/Tokyo"}),
    )
    .await;
    assert!(
        reports(&world).await.is_empty(),
        "nothing sent before the schedule fires"
    );

    // The same trigger delivered twice (at once): one report.
    world.fire_at("ReportSchedule", scheduled).await.expect("fire");
    world.fire_at("ReportSchedule", scheduled).await.expect("fire again");
    world.settle().await.expect("settle");
    let sent = reports(&world).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let report = &sent[0];
    assert_eq!(
        report.to,
        vec!["owner@contoso.test".to_string()],
        "the owner, as no address is set"
    );
    // Every other mailbox was backed up; OneDrives and sites are not backed up yet (not run).
    let mailboxes = admin.all_entities("&kind=mailbox").await.expect("entities").len();
    let others = admin.all_entities("").await.expect("entities").len() - mailboxes;
    let day = scheduled.with_timezone(&tokyo()).format("%Y-%m-%d").to_string();
    assert_eq!(
        report.subject,
        format!(
            "Strata daily report for Contoso, {day}: 1 failed, {} backed up, {others} not run",
            mailboxes - 1
        )
    );
    for (part, body) in [("text", &report.text), ("html", &report.html)] {
        for needle in [
            "Adele Vance",
            ADELE,
            broken[0].as_str(),
            broken[1].as_str(),
            "Inbox/Projects",
            "Storage used",
            "Microsoft 365 Mailboxes",
        ] {
            assert!(body.contains(needle), "the {part} part lacks {needle:?}:\n{body}");
        }
    }
    assert!(report.text.contains("FAILED (1)"), "{}", report.text);
    assert!(report.text.contains("EXCEPTIONS (2)"), "{}", report.text);
    assert!(
        report
            .html
            .contains("<h2 style=\"font-size: 16px; color: #cf222e;\">Failed (1)</h2>")
    );
    let failed_section = report.text.split("FAILED (1)").nth(1).expect("failed section");
    assert!(
        !failed_section.contains("Alex Wilber"),
        "Alex was backed up:\n{}",
        report.text
    );

    // Redelivered later that day (another hour's trigger too): nothing more.
    world.fire_at("ReportSchedule", scheduled).await.expect("fire");
    world
        .fire_at("ReportSchedule", scheduled + Duration::hours(1))
        .await
        .expect("fire");
    world.settle().await.expect("settle");
    assert_eq!(reports(&world).await.len(), 1);

    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exception_mode_sends_nothing_after_a_clean_night_and_one_mail_after_a_failing_one() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    for user in [ADELE, ALEX] {
        world
            .fake
            .add_message(user, "Inbox", b"Subject: hello\r\n\r\nall good".to_vec())
            .expect("seed");
    }
    let onboarded = world.onboard_active().await.expect("onboard");
    let admin = onboarded.admin;
    // India has no daylight saving time: the same report hour tomorrow is 24 hours later.

    // A clean night: nothing is sent.
    back_up_all(&world, &admin).await;
    let first = scheduled_now().await;
    set_report(
        &admin,
        json!({
            "report_mode": "exceptions",
            "report_hour": local_hour(first, kolkata()),
            "timezone": "Asia/Kolkata",
            "notification_addresses": ["it@contoso.test", "noc@contoso.test"],
        }),
    )
    .await;
    world.fire_at("ReportSchedule", first).await.expect("fire");
    world.settle().await.expect("settle");
    assert!(reports(&world).await.is_empty(), "a clean night sends nothing");

    // A failing night: Alex's mailbox refuses access (403 on every request for it).
    let alex = world
        .fake
        .tenant()
        .users
        .iter()
        .find(|u| u.user_principal_name == ALEX)
        .expect("alex")
        .id
        .clone();
    world.fake.set_faults(fake_m365::Faults {
        rules: vec![fake_m365::FaultRule::status(alex, 403, None, 1.0, None)],
    });
    back_up_all(&world, &admin).await;
    world.fake.set_faults(fake_m365::Faults::default());
    let second = first + Duration::hours(24);
    world.fire_at("ReportSchedule", second).await.expect("fire");
    world.settle().await.expect("settle");
    let sent = reports(&world).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let report = &sent[0];
    let mut to = report.to.clone();
    to.sort();
    assert_eq!(to, vec!["it@contoso.test".to_string(), "noc@contoso.test".to_string()]);
    let day = second.with_timezone(&kolkata()).format("%Y-%m-%d").to_string();
    assert_eq!(
        report.subject,
        format!("Strata exceptions for Contoso, {day}: 1 failed, 1 exception")
    );
    for (part, body) in [("text", &report.text), ("html", &report.html)] {
        for needle in ["Alex Wilber", ALEX, "backup failed: permission denied"] {
            assert!(body.contains(needle), "the {part} part lacks {needle:?}:\n{body}");
        }
        for summary_only in ["Adele Vance", "Storage used", "Discovered"] {
            assert!(
                !body.contains(summary_only),
                "the {part} part shows {summary_only:?}:\n{body}"
            );
        }
    }

    world.stop().await;
}
