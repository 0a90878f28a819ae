//! EventBridge Scheduler schedules of the template: fired on demand, or on
//! their timetable (`cron(...)` in its time zone, `rate(...)`, `at(...)`).
//! The emulator holds the schedules (see `provision`) but never fires them;
//! this module does, as Scheduler would: `Target.Input` sent to the target.

use crate::StackState;
use crate::template::Template;
use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use std::str::FromStr;
use std::time::Duration;

/// One schedule whose target is an SQS queue.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub logical_id: String,
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    /// The target queue's logical id and URL.
    pub queue_logical_id: String,
    pub queue_url: String,
    /// `Target.SqsParameters.MessageGroupId`, for FIFO queues.
    pub message_group_id: Option<String>,
    pub input: String,
    /// `State: DISABLED` schedules are not fired on their timetable (`fire` still sends).
    pub enabled: bool,
}

/// The template's schedules, resolved against a provisioned stack.
pub fn schedules(template: &Template, state: &StackState) -> Result<Vec<Schedule>> {
    let resolver = state.resolver(template);
    let mut out = Vec::new();
    for r in template.of_kind("AWS::Scheduler::Schedule") {
        let id = &r.logical_id;
        let target = r.prop("Target").with_context(|| format!("{id} has no Target"))?;
        let arn = resolver
            .string(target.get("Arn").with_context(|| format!("{id} has no Target.Arn"))?)
            .with_context(|| format!("{id}: Target.Arn"))?;
        let queue = state
            .physical
            .iter()
            .find(|(_, p)| p.attrs.get("Arn") == Some(&arn) && p.attrs.contains_key("QueueUrl"));
        let Some((queue_logical_id, queue)) = queue else {
            bail!("{id}: only SQS queue targets are run locally; the target is {arn}");
        };
        let timezone_name = r
            .prop("ScheduleExpressionTimezone")
            .map(|v| resolver.string(v))
            .transpose()?
            .unwrap_or_else(|| "UTC".into());
        out.push(Schedule {
            logical_id: id.clone(),
            expression: resolver.string(r.prop("ScheduleExpression").context("ScheduleExpression")?)?,
            timezone: chrono_tz::Tz::from_str(&timezone_name)
                .map_err(|e| anyhow!("{id}: time zone {timezone_name}: {e}"))?,
            queue_logical_id: queue_logical_id.clone(),
            queue_url: queue.id.clone(),
            message_group_id: target
                .get("SqsParameters")
                .and_then(|p| p.get("MessageGroupId"))
                .map(|v| resolver.string(v))
                .transpose()?,
            input: target
                .get("Input")
                .map(|v| resolver.string(v))
                .transpose()?
                .unwrap_or_else(|| "{}".into()),
            enabled: r
                .prop("State")
                .map(|v| resolver.string(v))
                .transpose()?
                .is_none_or(|s| s != "DISABLED"),
        });
    }
    Ok(out)
}

/// One schedule by logical id, with the template's schedules named when it is not one.
pub fn find(template: &Template, state: &StackState, logical_id: &str) -> Result<Schedule> {
    let all = schedules(template, state)?;
    let names: Vec<String> = all.iter().map(|s| s.logical_id.clone()).collect();
    all.into_iter()
        .find(|s| s.logical_id == logical_id)
        .with_context(|| format!("no schedule {logical_id}; the template has {names:?}"))
}

/// Scheduler's context attribute for the time a schedule was due.
pub const SCHEDULED_TIME: &str = "<aws.scheduler.scheduled-time>";

/// The target input as Scheduler sends it: context attributes replaced by
/// their values (the scheduled time in RFC 3339, UTC, whole seconds).
pub fn input_at(input: &str, scheduled: DateTime<Utc>) -> String {
    input.replace(
        SCHEDULED_TIME,
        &scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

impl Schedule {
    /// Delivers the target input now, as Scheduler does when the schedule is due.
    pub async fn fire(&self, sdk: &aws_config::SdkConfig) -> Result<()> {
        self.fire_at(sdk, Utc::now()).await
    }

    /// Delivers the target input as the firing due at `scheduled` would.
    pub async fn fire_at(&self, sdk: &aws_config::SdkConfig, scheduled: DateTime<Utc>) -> Result<()> {
        aws_sdk_sqs::Client::new(sdk)
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(input_at(&self.input, scheduled))
            .set_message_group_id(self.message_group_id.clone())
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "fire {}: {}",
                    self.logical_id,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    /// The next time the schedule fires after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
        next_fire(&self.expression, self.timezone, after)
    }
}

/// The next firing of an AWS schedule expression after `after`.
///
/// `cron(min hour day-of-month month day-of-week year)` in the time zone
/// (days of the week 1-7 = SUN-SAT, `?` as "any"; `L`, `W` and `#` are not
/// supported); `rate(N unit)` from `after`; `at(yyyy-mm-ddThh:mm:ss)` once.
pub fn next_fire(expression: &str, tz: chrono_tz::Tz, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let expression = expression.trim();
    if let Some(body) = expression.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let (n, unit) = body.trim().split_once(' ').context("rate(N unit)")?;
        let n: i64 = n.parse().context("rate value")?;
        if n < 1 {
            bail!("rate({body}): the value must be positive");
        }
        let secs = match unit.trim().trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            other => bail!("rate unit {other}: minutes, hours or days"),
        };
        return Ok(after + chrono::Duration::seconds(n * secs));
    }
    if let Some(body) = expression.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        let fields: Vec<&str> = body.split_whitespace().collect();
        if fields.len() != 6 {
            bail!("AWS cron needs 6 fields (minutes hours day-of-month month day-of-week year): {expression}");
        }
        if fields.iter().any(|f| f.contains(['L', 'W', '#'])) {
            bail!("{expression}: L, W and # are not supported by the local schedules");
        }
        if (fields[2] == "?") == (fields[4] == "?") {
            bail!("{expression}: exactly one of day-of-month and day-of-week must be ?");
        }
        // AWS: min hour dom month dow year; the cron crate: sec min hour dom month dow year.
        let converted: Vec<&str> = fields.iter().map(|f| if *f == "?" { "*" } else { f }).collect();
        let spec = format!("0 {}", converted.join(" "));
        let schedule = cron::Schedule::from_str(&spec).map_err(|e| anyhow!("{expression}: {e}"))?;
        let next = schedule
            .after(&after.with_timezone(&tz))
            .next()
            .with_context(|| format!("{expression} never fires again"))?;
        return Ok(next.with_timezone(&Utc));
    }
    if let Some(body) = expression.strip_prefix("at(").and_then(|s| s.strip_suffix(')')) {
        let naive =
            chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S").context("at(yyyy-mm-ddThh:mm:ss)")?;
        let at = naive
            .and_local_timezone(tz)
            .earliest()
            .context("that local time does not exist in the time zone")?
            .with_timezone(&Utc);
        if at > after {
            return Ok(at);
        }
        bail!("at({body}) is in the past");
    }
    bail!("unsupported schedule expression {expression}")
}

/// Sleeps until the schedule is due and fires it, until its expression has no next time.
pub async fn run_timetable(schedule: Schedule, sdk: aws_config::SdkConfig, report: impl Fn(String)) {
    if !schedule.enabled {
        report(format!(
            "schedule   {} is DISABLED in the template",
            schedule.logical_id
        ));
        return;
    }
    loop {
        let now = Utc::now();
        let next = match schedule.next_after(now) {
            Ok(next) => next,
            Err(e) => {
                report(format!("schedule   {}: {e:#}", schedule.logical_id));
                return;
            }
        };
        report(format!(
            "schedule   {} next at {} ({})",
            schedule.logical_id,
            next.with_timezone(&schedule.timezone).to_rfc3339(),
            schedule.expression
        ));
        tokio::time::sleep((next - now).to_std().unwrap_or(Duration::ZERO)).await;
        match schedule.fire_at(&sdk, next).await {
            Ok(()) => report(format!(
                "schedule   {} fired: {} -> {}",
                schedule.logical_id,
                input_at(&schedule.input, next),
                schedule.queue_logical_id
            )),
            Err(e) => report(format!("schedule   {}: {e:#}", schedule.logical_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("time")
    }

    #[test]
    fn aws_cron_honours_the_time_zone() {
        let after = at(2026, 11, 25, 12, 0);
        assert_eq!(
            next_fire("cron(0 2 * * ? *)", chrono_tz::UTC, after).expect("next"),
            at(2026, 11, 26, 2, 0)
        );
        assert_eq!(
            next_fire("cron(0 2 * * ? *)", chrono_tz::Europe::Paris, after).expect("next"),
            at(2026, 11, 26, 1, 0),
            "02:00 in Paris is 01:00 UTC in winter"
        );
        assert_eq!(
            next_fire("cron(0 2 * * ? *)", chrono_tz::Europe::Paris, at(2026, 7, 1, 12, 0)).expect("next"),
            at(2026, 7, 2, 0, 0),
            "and 00:00 UTC in summer"
        );
    }

    #[test]
    fn aws_cron_days_of_the_week_start_on_sunday() {
        // 2026-11-25 is a Wednesday; the next Monday (2 in AWS cron) is the 30th.
        let after = at(2026, 11, 25, 12, 0);
        assert_eq!(
            next_fire("cron(30 6 ? * 2 *)", chrono_tz::UTC, after).expect("next"),
            at(2026, 11, 30, 6, 30)
        );
        assert_eq!(
            next_fire("cron(30 6 ? * MON-FRI *)", chrono_tz::UTC, after).expect("next"),
            at(2026, 11, 26, 6, 30)
        );
    }

    #[test]
    fn rate_and_at_expressions() {
        let after = at(2026, 11, 25, 12, 0);
        assert_eq!(
            next_fire("rate(5 minutes)", chrono_tz::UTC, after).expect("rate"),
            after + chrono::Duration::minutes(5)
        );
        assert_eq!(
            next_fire("rate(1 day)", chrono_tz::UTC, after).expect("rate"),
            after + chrono::Duration::days(1)
        );
        assert_eq!(
            next_fire("at(2026-12-01T09:00:00)", chrono_tz::Europe::Paris, after).expect("at"),
            at(2026, 12, 1, 8, 0)
        );
        assert!(next_fire("at(2020-01-01T00:00:00)", chrono_tz::UTC, after).is_err());
    }

    #[test]
    fn the_scheduled_time_is_put_into_the_input() {
        let scheduled = at(2026, 11, 26, 7, 0) + chrono::Duration::milliseconds(250);
        assert_eq!(
            input_at(r#"{"scheduled_time":"<aws.scheduler.scheduled-time>"}"#, scheduled),
            r#"{"scheduled_time":"2026-11-26T07:00:00Z"}"#
        );
        assert_eq!(
            input_at(r#"{"type":"all_connections"}"#, scheduled),
            r#"{"type":"all_connections"}"#
        );
    }

    #[test]
    fn malformed_expressions_are_refused() {
        let after = at(2026, 11, 25, 12, 0);
        for bad in [
            "cron(0 2 * *)",
            "cron(0 2 * * * *)",
            "cron(0 2 L * ? *)",
            "rate(0 minutes)",
            "rate(5 weeks)",
            "every day",
        ] {
            assert!(next_fire(bad, chrono_tz::UTC, after).is_err(), "{bad}");
        }
    }
}
