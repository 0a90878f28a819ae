use super::*;
use crate::model::{ActivityId, Admin, AdminId, AdminSecrets, ConnectionId, EntityId};
use crate::repo::MemoryStore;
use crate::state::MemoryItems;
use async_trait::async_trait;
use serde_json::json;
use std::sync::{Arc, Mutex};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
}

/// The window of the tests: the 24 hours before 2026-11-26 07:00 UTC.
const SCHEDULED: &str = "2026-11-26T07:00:00Z";

fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (at(SCHEDULED) - Duration::hours(24), at(SCHEDULED))
}

fn account(name: &str) -> Account {
    Account::new(name)
}

fn entity(account: &Account, name: &str, kind: EntityKind, status: EntityStatus) -> Entity {
    let connection = ConnectionId("conn_1".into());
    Entity {
        id: EntityId::derive(&connection, kind, name),
        account_id: account.id.clone(),
        connection_id: connection,
        kind,
        source_id: name.into(),
        display_name: name.into(),
        address: Some(format!("{}@contoso.test", name.to_lowercase())),
        details: serde_json::Map::new(),
        status,
        status_before_gone: None,
        discovered_at: at("2026-10-01T00:00:00Z"),
        last_seen_at: at("2026-11-25T02:00:00Z"),
        activated_at: Some(at("2026-10-01T00:00:00Z")),
        gone_at: None,
        last_backup_at: None,
    }
}

fn run_activity(account: &Account, entity: &Entity, when: &str, run: RunRecord) -> Activity {
    Activity {
        id: ActivityId::random(),
        account_id: account.id.clone(),
        at: at(when),
        kind: "backup".into(),
        connection_id: Some(entity.connection_id.clone()),
        service: Some(Service::M365),
        status: run.status.clone(),
        summary: String::new(),
        details: json!({"entity_id": entity.id, "run": run}),
    }
}

fn ok_run(added: u64, bytes: u64) -> RunRecord {
    RunRecord {
        run_id: format!("run_{}", uuid::Uuid::new_v4().simple()),
        status: "ok".into(),
        added,
        changed: 1,
        deleted: 2,
        logical_bytes: bytes,
        stored_bytes: bytes / 3,
        ..RunRecord::default()
    }
}

fn item_exception(item: &str, folder: &str, error: &str) -> serde_json::Value {
    json!({"item": item, "folder": folder, "error": error, "attempts": 3})
}

/// A night: Alice backed up, Bob with two failed messages, Carol not run,
/// Dave paused, Erin newly discovered, Frank's backup failed three times,
/// Gina's OneDrive backed up.
fn night(account: &Account) -> (Vec<Entity>, Vec<Activity>) {
    let mut alice = entity(account, "Alice", EntityKind::Mailbox, EntityStatus::Active);
    alice.activated_at = Some(at("2026-11-25T09:00:00Z"));
    let bob = entity(account, "Bob", EntityKind::Mailbox, EntityStatus::Active);
    let carol = entity(account, "Carol", EntityKind::Mailbox, EntityStatus::Active);
    let dave = entity(account, "Dave", EntityKind::Mailbox, EntityStatus::Paused);
    let mut erin = entity(account, "Erin", EntityKind::Mailbox, EntityStatus::Discovered);
    erin.discovered_at = at("2026-11-26T02:00:00Z");
    erin.activated_at = None;
    let frank = entity(account, "Frank", EntityKind::Mailbox, EntityStatus::Active);
    let gina = entity(account, "Gina", EntityKind::Onedrive, EntityStatus::Active);
    let mut bob_run = ok_run(5, 5_000);
    bob_run.status = "partial".into();
    bob_run.failed = 2;
    bob_run.exceptions = vec![
        item_exception("AAMkBob1", "Inbox", "graph 500: internal error"),
        item_exception("AAMkBob2", "Inbox/Projects", "body broken midway"),
    ];
    let failed_run = || RunRecord {
        status: "failed".into(),
        exceptions: vec![json!({"error": "graph 403: access denied", "retried": true})],
        ..RunRecord::default()
    };
    let activities = vec![
        run_activity(account, &alice, "2026-11-26T02:10:00Z", ok_run(10, 30_000)),
        run_activity(account, &bob, "2026-11-26T02:11:00Z", bob_run),
        // Before the window: Carol did not run last night.
        run_activity(account, &carol, "2026-11-25T06:59:59Z", ok_run(100, 1_000_000)),
        // At the window's end: tomorrow's report counts it.
        run_activity(account, &alice, SCHEDULED, ok_run(1000, 1_000_000)),
        run_activity(account, &frank, "2026-11-26T02:12:00Z", failed_run()),
        run_activity(account, &frank, "2026-11-26T02:13:00Z", failed_run()),
        run_activity(account, &frank, "2026-11-26T02:14:00Z", failed_run()),
        run_activity(account, &gina, "2026-11-26T02:15:00Z", ok_run(4, 4_000)),
    ];
    (vec![alice, bob, carol, dave, erin, frank, gina], activities)
}

fn storage() -> StorageUsage {
    StorageUsage {
        repository_bytes: 2_500_000,
        repository_objects: 40,
        export_bytes: 0,
        export_objects: 0,
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("day")
}

fn night_report(account: &Account) -> Report {
    let (entities, activities) = night(account);
    Report::compute(
        account,
        chrono_tz::UTC,
        day(),
        window(),
        &entities,
        &activities,
        storage(),
    )
}

#[test]
fn counts_by_kind_what_was_protected_backed_up_failed_and_not_run() {
    let account = account("Contoso");
    let report = night_report(&account);
    let mailboxes = &report.kinds[0];
    assert_eq!(mailboxes.kind, "Mailboxes");
    assert_eq!(mailboxes.service, "Microsoft 365");
    assert_eq!(
        (
            mailboxes.protected,
            mailboxes.paused,
            mailboxes.backed_up,
            mailboxes.failed,
            mailboxes.not_run
        ),
        (5, 1, 1, 2, 1),
        "Alice, Bob, Carol, Frank active and Dave paused; Alice backed up; Bob and Frank failed; Carol not run"
    );
    // Runs in the window only: Alice 10, Bob 5 (not Carol's before it nor Alice's at its end).
    assert_eq!(mailboxes.items_added, 15);
    assert_eq!(mailboxes.logical_bytes, 35_000);
    assert_eq!(mailboxes.stored_bytes, 10_000 + 1_666);
    let onedrive = &report.kinds[1];
    assert_eq!(
        (onedrive.kind.as_str(), onedrive.protected, onedrive.backed_up),
        ("OneDrive", 1, 1)
    );
    assert_eq!(
        (report.total.protected, report.total.backed_up, report.total.items_added),
        (6, 2, 19)
    );
    assert_eq!(report.runs, 6);
    assert_eq!(report.discovered_count, 1);
    assert_eq!(report.discovered[0].name, "Erin");
    assert_eq!(report.activated_count, 1);
    assert_eq!(report.activated[0].name, "Alice");
    assert_eq!(report.storage_bytes, 2_500_000);
    assert_eq!(
        (report.from.as_str(), report.to.as_str()),
        ("2026-11-25 07:00", "2026-11-26 07:00")
    );
}

#[test]
fn exceptions_name_the_entity_folder_item_and_error_once() {
    let account = account("Contoso");
    let report = night_report(&account);
    let failed: Vec<(&str, bool, u64)> = report
        .failed
        .iter()
        .map(|f| (f.name.as_str(), f.run_failed, f.exceptions))
        .collect();
    assert_eq!(failed, vec![("Bob", false, 2), ("Frank", true, 1)]);
    assert_eq!(
        report.exception_count, 3,
        "Frank's three failed attempts are one exception"
    );
    let bob = &report.exceptions[0];
    assert_eq!(
        (
            bob.entity.as_str(),
            bob.address.as_str(),
            bob.folder.as_str(),
            bob.item.as_str(),
            bob.error.as_str(),
            bob.attempts
        ),
        (
            "Bob",
            "bob@contoso.test",
            "Inbox",
            "AAMkBob1",
            "graph 500: internal error",
            3
        )
    );
    let frank = &report.exceptions[2];
    assert_eq!(frank.error, "backup failed: graph 403: access denied");
    assert_eq!((frank.item.as_str(), frank.attempts, frank.times), ("", 0, 3));
    assert!(report.has_problems());
}

#[test]
fn the_subject_tells_the_state_at_a_glance() {
    let account = account("Contoso");
    let report = night_report(&account);
    assert_eq!(
        report.subject(ReportMode::Summary),
        "Strata daily report for Contoso, 2026-11-26: 2 failed, 2 backed up, 1 not run"
    );
    assert_eq!(
        report.subject(ReportMode::Exceptions),
        "Strata exceptions for Contoso, 2026-11-26: 2 failed, 3 exceptions"
    );
    let alice = entity(&account, "Alice", EntityKind::Mailbox, EntityStatus::Active);
    let clean = Report::compute(
        &account,
        chrono_tz::UTC,
        day(),
        window(),
        std::slice::from_ref(&alice),
        &[run_activity(&account, &alice, "2026-11-26T02:00:00Z", ok_run(1, 1))],
        storage(),
    );
    assert!(!clean.has_problems());
    assert_eq!(
        clean.subject(ReportMode::Summary),
        "Strata daily report for Contoso, 2026-11-26: all 1 backed up"
    );
}

#[test]
fn both_bodies_name_the_failing_mailbox_and_its_exceptions() {
    let account = account("Contoso");
    let report = night_report(&account);
    let email = render(&report, ReportMode::Summary, vec!["it@contoso.test".into()]).expect("render");
    assert_eq!(email.to, vec!["it@contoso.test".to_string()]);
    for (part, body) in [("text", &email.text), ("html", &email.html)] {
        for needle in [
            "Bob",
            "bob@contoso.test",
            "AAMkBob1",
            "AAMkBob2",
            "Inbox/Projects",
            "graph 500: internal error",
            "body broken midway",
            "Frank",
            "backup failed: graph 403: access denied",
            "(3 times)",
            "Erin",
            "2.5 MB",
            "Storage used",
            "Microsoft 365 Mailboxes",
        ] {
            assert!(body.contains(needle), "{part} body lacks {needle:?}:\n{body}");
        }
    }
    assert!(
        email.text.contains("Added: 19, changed: 3, deleted: 6 in 6 runs"),
        "{}",
        email.text
    );
    // Line by line as written (the template's whitespace control).
    for lines in [
        "Discovered: 1: Erin <erin@contoso.test> (mailbox)\nActivated: 1: Alice <alice@contoso.test> (mailbox)\n\n",
        "- Frank <frank@contoso.test>\n  backup failed: graph 403: access denied (3 times)\n\nItems that failed",
        "- Bob <bob@contoso.test>, folder Inbox, item AAMkBob1\n  graph 500: internal error (3 attempts)\n- Bob",
    ] {
        assert!(email.text.contains(lines), "text lacks {lines:?}:\n{}", email.text);
    }
    assert!(email.html.starts_with("<!DOCTYPE html>"));
}

#[test]
fn html_escapes_hostile_names_and_the_text_keeps_them() {
    let account = account("<script>alert('acct')</script> & Co");
    let (entities, mut activities) = night(&account);
    let mut run = ok_run(1, 1);
    run.status = "partial".into();
    run.exceptions = vec![item_exception("AAMk\"x", "<img src=x onerror=alert(1)>", "<b>bad</b>")];
    activities.push(run_activity(&account, &entities[0], "2026-11-26T03:00:00Z", run));
    let report = Report::compute(
        &account,
        chrono_tz::UTC,
        day(),
        window(),
        &entities,
        &activities,
        storage(),
    );
    let email = render(&report, ReportMode::Summary, vec!["it@contoso.test".into()]).expect("render");
    for raw in ["<script>", "<img src=x", "<b>bad</b>", "AAMk\"x"] {
        assert!(!email.html.contains(raw), "html holds {raw:?} unescaped");
    }
    for escaped in [
        "&lt;script&gt;alert(&#39;acct&#39;)&lt;/script&gt; &amp; Co",
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;b&gt;bad&lt;/b&gt;",
        "AAMk&quot;x",
    ] {
        assert!(email.html.contains(escaped), "html lacks {escaped:?}:\n{}", email.html);
    }
    assert!(email.text.contains("<img src=x onerror=alert(1)>"));
    assert!(email.subject.contains("<script>alert('acct')</script> & Co"));
}

#[test]
fn exception_mode_renders_only_the_exceptions() {
    let account = account("Contoso");
    let report = night_report(&account);
    let email = render(&report, ReportMode::Exceptions, vec!["it@contoso.test".into()]).expect("render");
    for body in [&email.text, &email.html] {
        assert!(body.contains("AAMkBob1") && body.contains("Frank"), "{body}");
        for summary_only in ["Storage used", "Discovered", "Protected", "PROTECTED", "Erin", "Alice"] {
            assert!(
                !body.contains(summary_only),
                "exception mode shows {summary_only:?}:\n{body}"
            );
        }
    }
}

#[test]
fn the_list_of_exceptions_is_capped_and_says_how_many_more() {
    let account = account("Contoso");
    let bob = entity(&account, "Bob", EntityKind::Mailbox, EntityStatus::Active);
    let mut run = ok_run(0, 0);
    run.status = "partial".into();
    run.exceptions = (0..73)
        .map(|i| item_exception(&format!("item{i:03}"), "Inbox", "graph 500"))
        .collect();
    let activities = [run_activity(&account, &bob, "2026-11-26T02:00:00Z", run)];
    let report = Report::compute(
        &account,
        chrono_tz::UTC,
        day(),
        window(),
        std::slice::from_ref(&bob),
        &activities,
        storage(),
    );
    assert_eq!(
        (report.exceptions.len(), report.exception_count, report.more_exceptions),
        (50, 73, 23)
    );
    let email = render(&report, ReportMode::Summary, vec!["a@b.test".into()]).expect("render");
    assert!(email.text.contains("and 23 more"), "{}", email.text);
    assert!(email.html.contains("and 23 more"));
}

#[test]
fn the_report_is_due_at_the_account_s_hour_in_its_time_zone() {
    let paris = chrono_tz::Europe::Paris;
    // 07:00 in Paris is 06:00 UTC in winter.
    assert_eq!(due_day(paris, 7, at("2026-11-26T06:00:00Z")), Some(day()));
    assert_eq!(due_day(paris, 7, at("2026-11-26T07:00:00Z")), None);
    assert_eq!(due_day(chrono_tz::UTC, 7, at("2026-11-26T07:00:00Z")), Some(day()));
    // The local day, not UTC's: 23:00 in Auckland is 10:00 UTC the same day.
    assert_eq!(
        due_day(chrono_tz::Pacific::Auckland, 23, at("2026-11-26T10:00:00Z")),
        Some(day())
    );
    assert_eq!(
        due_day(chrono_tz::America::Los_Angeles, 0, at("2026-11-26T08:00:00Z")),
        Some(day())
    );
    // Clocks put forward: 02:00 does not exist in New York on 2026-03-08; the report goes at 03:00.
    let ny = chrono_tz::America::New_York;
    let spring = NaiveDate::from_ymd_opt(2026, 3, 8).expect("day");
    assert_eq!(due_day(ny, 2, at("2026-03-08T07:00:00Z")), Some(spring), "03:00 EDT");
    assert_eq!(due_day(ny, 3, at("2026-03-08T07:00:00Z")), Some(spring));
    // Clocks put back: 01:00 happens twice on 2026-11-01, both the same day (one report).
    let fall = NaiveDate::from_ymd_opt(2026, 11, 1).expect("day");
    assert_eq!(due_day(ny, 1, at("2026-11-01T05:00:00Z")), Some(fall));
    assert_eq!(due_day(ny, 1, at("2026-11-01T06:00:00Z")), Some(fall));
}

/// Records what it sends; fails while `fail` is set.
#[derive(Default)]
struct RecordingMailer {
    sent: Mutex<Vec<Email>>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(MailError("throttled".into()));
        }
        self.sent.lock().expect("lock").push(email.clone());
        Ok(())
    }
}

impl RecordingMailer {
    fn sent(&self) -> Vec<Email> {
        self.sent.lock().expect("lock").clone()
    }
}

/// An account with an owner, a suspended owner and an admin, and last night in its state.
async fn seeded(mode: ReportMode, failing: bool) -> (State, MemoryStore, Account) {
    let state = State::new(Arc::new(MemoryItems::new()));
    let mut account = account("Contoso");
    account.report_mode = mode;
    account.timezone = "Europe/Paris".into();
    let admin = |email: &str, role: Role, status: AdminStatus| Admin {
        id: AdminId::random(),
        account_id: account.id.clone(),
        email: email.into(),
        display_name: email.into(),
        role,
        permissions: Vec::new(),
        status,
        totp_enabled: false,
        created_at: Utc::now(),
        invited_by: None,
        last_sign_in_at: None,
    };
    state
        .create_account(
            &account,
            &admin("owner@contoso.test", Role::Owner, AdminStatus::Active),
            &AdminSecrets::default(),
        )
        .await
        .expect("account");
    for (email, role, status) in [
        ("former@contoso.test", Role::Owner, AdminStatus::Suspended),
        ("admin@contoso.test", Role::Admin, AdminStatus::Active),
    ] {
        state
            .create_admin(&admin(email, role, status), &AdminSecrets::default())
            .await
            .expect("admin");
    }
    let (entities, activities) = night(&account);
    for e in &entities {
        state.put_entity(e, 0).await.expect("entity");
    }
    for a in activities {
        let failure = a.details["run"]["status"] == "failed" || a.details["run"]["exceptions"] != json!([]);
        if failing || !failure {
            state.put_activity(&a).await.expect("activity");
        }
    }
    let store = MemoryStore::default();
    store
        .put_new(&format!("{}/packs/00/p", account.id), bytes::Bytes::from(vec![0; 1234]))
        .await
        .expect("pack");
    (state, store, account)
}

/// 07:00 in Paris on 2026-11-26.
const PARIS_SEVEN: &str = "2026-11-26T06:00:00Z";

#[tokio::test]
async fn one_report_per_account_and_day_however_often_triggered() {
    let (state, store, account) = seeded(ReportMode::Summary, true).await;
    let mailer = RecordingMailer::default();
    let message = ReportMessage {
        scheduled_time: at(PARIS_SEVEN),
        account_id: None,
    };
    let outcomes = report_all(&state, &store, &mailer, &message).await.expect("report");
    assert!(matches!(&outcomes[0].1, Outcome::Sent { to: 1, .. }), "{outcomes:?}");
    let sent = mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].to,
        vec!["owner@contoso.test".to_string()],
        "the active owner only"
    );
    assert!(sent[0].text.contains("1.2 kB"), "storage used: {}", sent[0].text);
    // Redelivered, and another hour of the same day: nothing more.
    let again = report_all(&state, &store, &mailer, &message).await.expect("again");
    assert_eq!(again[0].1, Outcome::AlreadySent);
    let later = ReportMessage {
        scheduled_time: at("2026-11-26T07:00:00Z"),
        account_id: Some(account.id.clone()),
    };
    assert_eq!(
        report_all(&state, &store, &mailer, &later).await.expect("later")[0].1,
        Outcome::NotDue
    );
    assert_eq!(mailer.sent().len(), 1);
    // The next day's report goes out.
    let tomorrow = ReportMessage {
        scheduled_time: at(PARIS_SEVEN) + Duration::days(1),
        account_id: None,
    };
    report_all(&state, &store, &mailer, &tomorrow).await.expect("tomorrow");
    assert_eq!(mailer.sent().len(), 2);
}

#[tokio::test]
async fn a_failed_send_is_tried_again_and_then_sent_once() {
    let (state, store, mut account) = seeded(ReportMode::Summary, true).await;
    account.notification_addresses = vec!["it@contoso.test".into(), " noc@contoso.test ".into()];
    let mailer = RecordingMailer::default();
    mailer.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let scheduled = at(PARIS_SEVEN);
    assert!(matches!(
        report_account(&state, &store, &mailer, &account, scheduled).await,
        Err(ReportError::Mail(_))
    ));
    mailer.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let outcome = report_account(&state, &store, &mailer, &account, scheduled)
        .await
        .expect("retry");
    assert!(matches!(outcome, Outcome::Sent { to: 2, .. }), "{outcome:?}");
    assert_eq!(
        mailer.sent()[0].to,
        vec!["it@contoso.test".to_string(), "noc@contoso.test".to_string()]
    );
    assert_eq!(
        report_account(&state, &store, &mailer, &account, scheduled)
            .await
            .expect("again"),
        Outcome::AlreadySent
    );
    assert_eq!(mailer.sent().len(), 1);
}

#[tokio::test]
async fn exception_mode_sends_only_on_a_night_with_exceptions() {
    let mailer = RecordingMailer::default();
    let (state, store, account) = seeded(ReportMode::Exceptions, false).await;
    assert_eq!(
        report_account(&state, &store, &mailer, &account, at(PARIS_SEVEN))
            .await
            .expect("clean"),
        Outcome::NothingToReport
    );
    assert!(mailer.sent().is_empty());

    let (state, store, account) = seeded(ReportMode::Exceptions, true).await;
    let outcome = report_account(&state, &store, &mailer, &account, at(PARIS_SEVEN))
        .await
        .expect("failing");
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    let sent = mailer.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .subject
            .starts_with("Strata exceptions for Contoso, 2026-11-26: 2 failed")
    );
    assert!(sent[0].text.contains("AAMkBob1"));
}

#[tokio::test]
async fn reports_off_or_out_of_hours_send_nothing() {
    let mailer = RecordingMailer::default();
    let (state, store, mut account) = seeded(ReportMode::Off, true).await;
    assert_eq!(
        report_account(&state, &store, &mailer, &account, at(PARIS_SEVEN))
            .await
            .expect("off"),
        Outcome::NotDue
    );
    account.report_mode = ReportMode::Summary;
    account.report_hour = 9;
    assert_eq!(
        report_account(&state, &store, &mailer, &account, at(PARIS_SEVEN))
            .await
            .expect("other hour"),
        Outcome::NotDue
    );
    assert!(mailer.sent().is_empty());
}
