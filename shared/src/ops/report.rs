//! The daily report e-mail (docs/design.md §5). An hourly schedule sends
//! `{"scheduled_time"}`; each account whose report hour (in its time zone)
//! that time falls in gets the report of the 24 hours before it: a summary,
//! or only its exceptions (sent only when there are some). One report per
//! account and local day: the request `report-<local yyyy-mm-dd>` is claimed
//! before sending and marked done after, so a redelivered or repeated trigger
//! sends nothing more and a failed send is tried again.

use crate::context::Context;
use crate::model::{
    Account, AccountId, Activity, AdminStatus, Entity, EntityKind, EntityStatus, ReportMode, Role, Service,
};
use crate::notify::{Email, MailError, Mailer};
use crate::ops::backup::RunRecord;
use crate::ops::usage::{StorageUsage, storage_used};
use crate::repo::{BlobStore, StoreError};
use crate::state::{ActivityFilter, EntityFilter, RequestClaim, State, StateError};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use tracing::{info, warn};

/// The most exceptions a report lists (it says how many more there are).
pub const MAX_EXCEPTIONS: usize = 50;
/// The most newly discovered or activated entities a report names.
pub const MAX_NAMED_ENTITIES: usize = 20;
/// How long a claimed report stays ours before a retry may take it over.
const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(300);
/// Accounts reported at once by one invocation.
const ACCOUNTS_AT_ONCE: usize = 8;

/// The schedule's message (`Input` of `ReportSchedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportMessage {
    /// When the schedule fired (`<aws.scheduler.scheduled-time>`): the report
    /// covers the 24 hours before it.
    pub scheduled_time: DateTime<Utc>,
    /// Only this account (every account when absent).
    #[serde(default)]
    pub account_id: Option<AccountId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("malformed report message: {0}")]
    Malformed(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("storage usage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("report not rendered: {0}")]
    Render(String),
    #[error("the report is being sent by another invocation")]
    Busy,
    #[error("{failed} of {total} accounts failed; first: {first}")]
    Accounts { failed: usize, total: usize, first: String },
}

/// What happened to one account's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not this account's report hour, or its reports are off.
    NotDue,
    /// Already sent for that local day (a redelivery or a second trigger).
    AlreadySent,
    /// Exception mode and nothing went wrong: nothing to send.
    NothingToReport,
    /// No notification address and no active owner.
    NoRecipients,
    Sent {
        to: usize,
        subject: String,
    },
}

/// The Lambda handler: every record on its own; a record some account of
/// which failed is redelivered (the accounts already sent are claimed done).
pub async fn handle_batch(ctx: &Context, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let result = match serde_json::from_str::<ReportMessage>(record.body.as_deref().unwrap_or_default()) {
            Ok(message) => report_all(&ctx.state, ctx.repo_store.as_ref(), ctx.mailer.as_ref(), &message).await,
            Err(e) => Err(ReportError::Malformed(e.to_string())),
        };
        match result {
            Ok(outcomes) => {
                let sent = outcomes
                    .iter()
                    .filter(|(_, o)| matches!(o, Outcome::Sent { .. }))
                    .count();
                info!(message_id = %id, accounts = outcomes.len(), sent, "report message handled");
            }
            // Retried, so that a message that keeps failing ends in the dead-letter queue, where an alarm sees it.
            Err(e) => {
                warn!(message_id = %id, error = %e, "report message failed; will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

/// Reports every account the message is for; one account's failure does not
/// stop the others, but fails the whole (so it is retried).
pub async fn report_all(
    state: &State,
    store: &dyn BlobStore,
    mailer: &dyn Mailer,
    message: &ReportMessage,
) -> Result<Vec<(AccountId, Outcome)>, ReportError> {
    let accounts = match &message.account_id {
        Some(id) => state.account(id).await?.into_iter().collect(),
        None => state.all_accounts().await?,
    };
    let total = accounts.len();
    let results: Vec<(AccountId, Result<Outcome, ReportError>)> = futures::stream::iter(accounts)
        .map(|account| async move {
            let result = report_account(state, store, mailer, &account, message.scheduled_time).await;
            (account.id, result)
        })
        .buffer_unordered(ACCOUNTS_AT_ONCE)
        .collect()
        .await;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (account, result) in results {
        match result {
            Ok(outcome) => {
                if outcome != Outcome::NotDue {
                    info!(account = %account, outcome = ?outcome, "daily report");
                }
                outcomes.push((account, outcome));
            }
            Err(e) => {
                warn!(account = %account, error = %e, "daily report failed");
                failures.push(format!("{account}: {e}"));
            }
        }
    }
    if let Some(first) = failures.first() {
        return Err(ReportError::Accounts {
            failed: failures.len(),
            total,
            first: first.clone(),
        });
    }
    Ok(outcomes)
}

/// The account's time zone; UTC when the stored name is not a known one.
fn timezone_of(account: &Account) -> chrono_tz::Tz {
    account.timezone.parse().unwrap_or_else(|_| {
        warn!(account = %account.id, timezone = %account.timezone, "unknown time zone; UTC used");
        chrono_tz::UTC
    })
}

/// The local day whose report is due at `at`, if any: the report hour of
/// that day in the time zone, or the hour after it on a day the report hour
/// does not exist (clocks put forward).
pub fn due_day(tz: chrono_tz::Tz, report_hour: u8, at: DateTime<Utc>) -> Option<NaiveDate> {
    let local = at.with_timezone(&tz);
    let day = local.date_naive();
    let hour = u32::from(report_hour.min(23));
    if local.hour() == hour {
        return Some(day);
    }
    let skipped = day
        .and_hms_opt(hour, 0, 0)
        .is_some_and(|t| tz.from_local_datetime(&t).earliest().is_none());
    (skipped && local.hour() == hour + 1).then_some(day)
}

/// One account's report for the schedule's time: sent at most once per local day.
pub async fn report_account(
    state: &State,
    store: &dyn BlobStore,
    mailer: &dyn Mailer,
    account: &Account,
    scheduled: DateTime<Utc>,
) -> Result<Outcome, ReportError> {
    if account.report_mode == ReportMode::Off {
        return Ok(Outcome::NotDue);
    }
    let tz = timezone_of(account);
    let Some(day) = due_day(tz, account.report_hour, scheduled) else {
        return Ok(Outcome::NotDue);
    };
    let request = format!("report-{}", day.format("%Y-%m-%d"));
    match state.claim_request(&account.id, &request, CLAIM_LEASE).await? {
        RequestClaim::AlreadyDone => return Ok(Outcome::AlreadySent),
        RequestClaim::Busy => return Err(ReportError::Busy),
        RequestClaim::Claimed => {}
    }
    let result = build_and_send(state, store, mailer, account, tz, day, scheduled).await;
    // Done once sent (or when there was nothing to send); released on failure, so a retry sends it.
    state.finish_request(&account.id, &request, result.is_ok()).await?;
    result
}

async fn build_and_send(
    state: &State,
    store: &dyn BlobStore,
    mailer: &dyn Mailer,
    account: &Account,
    tz: chrono_tz::Tz,
    day: NaiveDate,
    scheduled: DateTime<Utc>,
) -> Result<Outcome, ReportError> {
    let window = (scheduled - Duration::hours(24), scheduled);
    let entities = state.all_entities(&account.id, &EntityFilter::default()).await?;
    let runs = backup_activities(state, &account.id, window).await?;
    let storage = storage_used(store, &account.id).await?;
    let report = Report::compute(account, tz, day, window, &entities, &runs, storage);
    if account.report_mode == ReportMode::Exceptions && !report.has_problems() {
        return Ok(Outcome::NothingToReport);
    }
    let to = recipients(state, account).await?;
    if to.is_empty() {
        warn!(account = %account.id, "no notification address and no active owner: report not sent");
        return Ok(Outcome::NoRecipients);
    }
    let email = render(&report, account.report_mode, to)?;
    mailer.send(&email).await?;
    Ok(Outcome::Sent {
        to: email.to.len(),
        subject: email.subject,
    })
}

/// The account's notification addresses, or its active owners' when it has none.
async fn recipients(state: &State, account: &Account) -> Result<Vec<String>, StateError> {
    let mut to: Vec<String> = account
        .notification_addresses
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if to.is_empty() {
        to = state
            .admins(&account.id)
            .await?
            .into_iter()
            .filter(|a| a.role == Role::Owner && a.status == AdminStatus::Active)
            .map(|a| a.email)
            .collect();
    }
    to.sort();
    to.dedup();
    Ok(to)
}

/// The backup activities of the window, read day by day (the day is a prefix
/// of the activity key, so only those days are read).
async fn backup_activities(
    state: &State,
    account: &AccountId,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Activity>, StateError> {
    let mut out = Vec::new();
    let mut day = start.date_naive();
    while day <= end.date_naive() {
        let filter = ActivityFilter {
            kind: Some("backup".into()),
            day: Some(day),
            ..ActivityFilter::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = state.activities(account, &filter, 500, cursor.as_deref()).await?;
            out.extend(page.into_iter().filter(|a| a.at >= start && a.at < end));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    Ok(out)
}

// ----- the report -----

/// What one kind of entity of one service did in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindLine {
    pub service: String,
    pub kind: String,
    /// Active and paused.
    pub protected: u64,
    pub paused: u64,
    /// Active entities with a run in the window that was not failed and had no exceptions.
    pub backed_up: u64,
    /// Entities with a run that failed as a whole, or recorded exceptions.
    pub failed: u64,
    /// Active entities without a run in the window.
    pub not_run: u64,
    pub items_added: u64,
    pub items_changed: u64,
    pub items_deleted: u64,
    /// Bytes of the items added or changed, as read from the source.
    pub logical_bytes: u64,
    /// Bytes written to the repository after deduplication and compression.
    pub stored_bytes: u64,
}

/// An entity named in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityLine {
    pub name: String,
    pub address: String,
    pub kind: String,
}

/// An entity whose backup failed, with its exception count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedLine {
    pub name: String,
    pub address: String,
    pub kind: String,
    /// The last run failed as a whole.
    pub run_failed: bool,
    /// Distinct exceptions (the same one in several runs counts once).
    pub exceptions: u64,
}

/// One exception: an item that could not be backed up, or a run that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionLine {
    pub entity: String,
    pub address: String,
    pub folder: String,
    pub item: String,
    pub error: String,
    /// Requests made for the item (0 for a run that failed as a whole).
    pub attempts: u64,
    /// Runs in the window that recorded it.
    pub times: u64,
}

/// The daily report of one account, computed from its state alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub account: String,
    /// The local day (`yyyy-mm-dd`) and the time zone of the account.
    pub day: String,
    pub timezone: String,
    /// The window, in the account's time zone (`yyyy-mm-dd hh:mm`).
    pub from: String,
    pub to: String,
    pub kinds: Vec<KindLine>,
    pub total: KindLine,
    pub runs: u64,
    pub discovered: Vec<EntityLine>,
    pub discovered_count: usize,
    pub activated: Vec<EntityLine>,
    pub activated_count: usize,
    pub storage_bytes: u64,
    pub storage_objects: u64,
    pub failed: Vec<FailedLine>,
    pub exceptions: Vec<ExceptionLine>,
    pub exception_count: usize,
    /// Exceptions left out of the list (over [`MAX_EXCEPTIONS`]).
    pub more_exceptions: usize,
}

/// The service an entity kind belongs to (every kind is Microsoft 365's today).
fn service_of(kind: EntityKind) -> Service {
    match kind {
        EntityKind::Mailbox | EntityKind::Onedrive | EntityKind::Site => Service::M365,
    }
}

fn service_name(service: Service) -> &'static str {
    match service {
        Service::M365 => "Microsoft 365",
    }
}

fn kind_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Mailbox => "Mailboxes",
        EntityKind::Onedrive => "OneDrive",
        EntityKind::Site => "SharePoint sites",
    }
}

fn entity_line(e: &Entity) -> EntityLine {
    EntityLine {
        name: e.display_name.clone(),
        address: e.address.clone().unwrap_or_default(),
        kind: e.kind.as_str().to_string(),
    }
}

fn text_of(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

impl Report {
    /// The report of the window `[start, end)` from the account's entities,
    /// the backup activities of the window and the storage used.
    pub fn compute(
        account: &Account,
        tz: chrono_tz::Tz,
        day: NaiveDate,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        entities: &[Entity],
        activities: &[Activity],
        storage: StorageUsage,
    ) -> Self {
        let in_window = |t: DateTime<Utc>| t >= start && t < end;
        // The runs of each entity, oldest first.
        let mut runs: HashMap<&str, Vec<(DateTime<Utc>, RunRecord)>> = HashMap::new();
        for a in activities.iter().filter(|a| a.kind == "backup" && in_window(a.at)) {
            let Some(entity) = a.details.get("entity_id").and_then(|v| v.as_str()) else {
                continue;
            };
            let Some(run) = a
                .details
                .get("run")
                .and_then(|r| serde_json::from_value::<RunRecord>(r.clone()).ok())
            else {
                continue;
            };
            runs.entry(entity).or_default().push((a.at, run));
        }
        for list in runs.values_mut() {
            list.sort_by_key(|(at, _)| *at);
        }

        let mut kinds: BTreeMap<(EntityKind, &str), KindLine> = BTreeMap::new();
        let mut failed = Vec::new();
        let mut exceptions: BTreeMap<(String, String, String, String, String), ExceptionLine> = BTreeMap::new();
        let mut run_count = 0u64;
        let mut sorted: Vec<&Entity> = entities.iter().collect();
        sorted.sort_by(|a, b| {
            (a.display_name.to_lowercase(), &a.address, &a.id).cmp(&(b.display_name.to_lowercase(), &b.address, &b.id))
        });
        for e in &sorted {
            let line = kinds
                .entry((e.kind, service_name(service_of(e.kind))))
                .or_insert_with(|| KindLine {
                    service: service_name(service_of(e.kind)).into(),
                    kind: kind_name(e.kind).into(),
                    ..KindLine::default()
                });
            let protected = matches!(e.status, EntityStatus::Active | EntityStatus::Paused);
            if protected {
                line.protected += 1;
            }
            if e.status == EntityStatus::Paused {
                line.paused += 1;
            }
            let entity_runs = runs.get(e.id.as_str()).map(Vec::as_slice).unwrap_or_default();
            run_count += entity_runs.len() as u64;
            let mut distinct = std::collections::HashSet::new();
            for (_, run) in entity_runs {
                line.items_added += run.added;
                line.items_changed += run.changed;
                line.items_deleted += run.deleted;
                line.logical_bytes += run.logical_bytes;
                line.stored_bytes += run.stored_bytes;
                for x in &run.exceptions {
                    let item = text_of(x.get("item"));
                    let folder = text_of(x.get("folder"));
                    let mut error = text_of(x.get("error"));
                    if item.is_empty() && run.status == "failed" {
                        error = format!("backup failed: {error}");
                    }
                    let attempts = x.get("attempts").and_then(|v| v.as_u64()).unwrap_or(0);
                    distinct.insert((folder.clone(), item.clone(), error.clone()));
                    let key = (
                        e.display_name.to_lowercase(),
                        e.id.to_string(),
                        folder.clone(),
                        item.clone(),
                        error.clone(),
                    );
                    let entry = exceptions.entry(key).or_insert_with(|| ExceptionLine {
                        entity: e.display_name.clone(),
                        address: e.address.clone().unwrap_or_default(),
                        folder,
                        item,
                        error,
                        attempts: 0,
                        times: 0,
                    });
                    entry.attempts = entry.attempts.max(attempts);
                    entry.times += 1;
                }
            }
            let any_failed = entity_runs
                .iter()
                .any(|(_, r)| r.status == "failed" || !r.exceptions.is_empty());
            if any_failed {
                line.failed += 1;
                failed.push(FailedLine {
                    name: e.display_name.clone(),
                    address: e.address.clone().unwrap_or_default(),
                    kind: e.kind.as_str().to_string(),
                    run_failed: entity_runs.last().is_some_and(|(_, r)| r.status == "failed"),
                    exceptions: distinct.len() as u64,
                });
            } else if e.status == EntityStatus::Active {
                if entity_runs.is_empty() {
                    line.not_run += 1;
                } else {
                    line.backed_up += 1;
                }
            }
        }

        let mut total = KindLine {
            service: "All services".into(),
            kind: "Total".into(),
            ..KindLine::default()
        };
        for k in kinds.values() {
            total.protected += k.protected;
            total.paused += k.paused;
            total.backed_up += k.backed_up;
            total.failed += k.failed;
            total.not_run += k.not_run;
            total.items_added += k.items_added;
            total.items_changed += k.items_changed;
            total.items_deleted += k.items_deleted;
            total.logical_bytes += k.logical_bytes;
            total.stored_bytes += k.stored_bytes;
        }
        let named = |pick: &dyn Fn(&Entity) -> bool| -> (Vec<EntityLine>, usize) {
            let all: Vec<&&Entity> = sorted.iter().filter(|e| pick(e)).collect();
            let count = all.len();
            (
                all.into_iter()
                    .take(MAX_NAMED_ENTITIES)
                    .map(|e| entity_line(e))
                    .collect(),
                count,
            )
        };
        let (discovered, discovered_count) = named(&|e| in_window(e.discovered_at));
        let (activated, activated_count) = named(&|e| e.activated_at.is_some_and(in_window));
        let exception_count = exceptions.len();
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
        Self {
            account: account.name.clone(),
            day: day.format("%Y-%m-%d").to_string(),
            timezone: tz.name().to_string(),
            from: local(start),
            to: local(end),
            kinds: kinds.into_values().collect(),
            total,
            runs: run_count,
            discovered,
            discovered_count,
            activated,
            activated_count,
            storage_bytes: storage.total_bytes(),
            storage_objects: storage.repository_objects + storage.export_objects,
            failed,
            exceptions: exceptions.into_values().take(MAX_EXCEPTIONS).collect(),
            exception_count,
            more_exceptions: exception_count.saturating_sub(MAX_EXCEPTIONS),
        }
    }

    /// Something failed: what exception mode reports.
    pub fn has_problems(&self) -> bool {
        !self.failed.is_empty() || self.exception_count > 0
    }

    /// A subject that tells the state at a glance.
    pub fn subject(&self, mode: ReportMode) -> String {
        let t = &self.total;
        let mut state = Vec::new();
        if t.failed > 0 {
            state.push(format!("{} failed", t.failed));
        }
        if mode == ReportMode::Exceptions {
            state.push(plural(self.exception_count as u64, "exception", "exceptions"));
            return format!(
                "Strata exceptions for {}, {}: {}",
                self.account,
                self.day,
                state.join(", ")
            );
        }
        if t.failed == 0 && t.not_run == 0 && t.backed_up > 0 {
            state.push(format!("all {} backed up", t.backed_up));
        } else {
            state.push(format!("{} backed up", t.backed_up));
        }
        if t.not_run > 0 {
            state.push(format!("{} not run", t.not_run));
        }
        format!(
            "Strata daily report for {}, {}: {}",
            self.account,
            self.day,
            state.join(", ")
        )
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ----- rendering -----

/// The templates, compiled once: `shared/templates/report.{html,txt}`. Values
/// are escaped in the HTML one (auto-escaping by the `.html` name), never in the text one.
static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // The HTML escaping of the rest of Strata (`& < > " '`), not minijinja's, which also escapes `/`.
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(text) if state.auto_escape() == minijinja::AutoEscape::Html && !value.is_safe() => out
            .write_str(&crate::notify::html_escape(text))
            .map_err(minijinja::Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    });
    env.add_filter("bytes", human_bytes);
    env.add_filter("pad", |s: String, width: usize| format!("{s:<width$}"));
    env.add_filter("rpad", |s: String, width: usize| format!("{s:>width$}"));
    for (name, source) in [
        ("report.html", include_str!("../../templates/report.html")),
        ("report.txt", include_str!("../../templates/report.txt")),
    ] {
        // The templates are part of the build: a broken one fails the unit tests.
        if let Err(e) = env.add_template(name, source) {
            warn!(template = name, error = %e, "report template does not compile");
        }
    }
    env
});

/// Bytes in the units people read (1000-based, like S3's console and the bill).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} {}", if bytes == 1 { "byte" } else { "bytes" });
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The e-mail of a report, both bodies rendered from the templates.
pub fn render(report: &Report, mode: ReportMode, to: Vec<String>) -> Result<Email, ReportError> {
    let subject = report.subject(mode);
    let context = minijinja::context! {
        report => report,
        subject => &subject,
        exceptions_only => mode == ReportMode::Exceptions,
    };
    let render = |name: &str| -> Result<String, ReportError> {
        TEMPLATES
            .get_template(name)
            .and_then(|t| t.render(&context))
            .map_err(|e| ReportError::Render(format!("{name}: {e}")))
    };
    Ok(Email {
        to,
        subject,
        text: render("report.txt")?,
        html: render("report.html")?,
    })
}

#[cfg(test)]
mod tests;
