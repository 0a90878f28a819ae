//! EventBridge Scheduler schedules of the template: fired on demand, or on
//! their timetable (`cron(...)` with its time zone, `rate(...)`).

use crate::Stack;
use crate::template::referenced_id;
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
    pub queue_url: String,
    pub input: String,
}

/// The template's schedules, resolved.
pub fn schedules(stack: &Stack) -> Result<Vec<Schedule>> {
    let resolver = crate::template::Resolver {
        stack_name: &stack.options.stack_name,
        parameters: &stack_parameters(stack),
        physical: stack.physical(),
    };
    let mut out = Vec::new();
    for r in stack.template().of_kind("AWS::Scheduler::Schedule") {
        let target = r
            .prop("Target")
            .with_context(|| format!("{} has no Target", r.logical_id))?;
        let target_id = target
            .get("Arn")
            .and_then(referenced_id)
            .with_context(|| format!("{}: target must reference a resource", r.logical_id))?;
        let target_resource = stack
            .template()
            .resources
            .get(&target_id)
            .with_context(|| format!("{}: no resource {target_id}", r.logical_id))?;
        if target_resource.kind != "AWS::SQS::Queue" {
            bail!(
                "{}: only SQS targets are run locally (target {target_id} is {})",
                r.logical_id,
                target_resource.kind
            );
        }
        let tz_name = r
            .prop("ScheduleExpressionTimezone")
            .map(|v| resolver.string(v))
            .transpose()?
            .unwrap_or_else(|| "UTC".into());
        out.push(Schedule {
            logical_id: r.logical_id.clone(),
            expression: resolver.string(r.prop("ScheduleExpression").context("ScheduleExpression")?)?,
            timezone: chrono_tz::Tz::from_str(&tz_name)
                .map_err(|e| anyhow!("{}: time zone {tz_name}: {e}", r.logical_id))?,
            queue_url: stack
                .physical_id(&target_id)
                .context("target queue provisioned")?
                .to_string(),
            input: target
                .get("Input")
                .map(|v| resolver.string(v))
                .transpose()?
                .unwrap_or_else(|| "{}".into()),
        });
    }
    Ok(out)
}

fn stack_parameters(stack: &Stack) -> std::collections::BTreeMap<String, String> {
    stack
        .template()
        .parameters
        .iter()
        .filter_map(|(k, d)| {
            stack
                .options
                .parameters
                .get(k)
                .or(d.as_ref())
                .map(|v| (k.clone(), v.clone()))
        })
        .collect()
}

impl Schedule {
    pub async fn fire(&self, sdk: &aws_config::SdkConfig) -> Result<()> {
        aws_sdk_sqs::Client::new(sdk)
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&self.input)
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
pub fn next_fire(expression: &str, tz: chrono_tz::Tz, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let expression = expression.trim();
    if let Some(body) = expression.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let (n, unit) = body.trim().split_once(' ').context("rate(N unit)")?;
        let n: i64 = n.parse().context("rate value")?;
        let secs = match unit.trim().trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            other => bail!("rate unit {other}"),
        };
        return Ok(after + chrono::Duration::seconds(n * secs));
    }
    if let Some(body) = expression.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        let fields: Vec<&str> = body.split_whitespace().collect();
        if fields.len() != 6 {
            bail!("AWS cron needs 6 fields (minutes hours day-of-month month day-of-week year): {expression}");
        }
        // AWS: min hour dom month dow year; the cron crate: sec min hour dom month dow year.
        let converted: Vec<String> = fields
            .iter()
            .map(|f| if *f == "?" { "*".to_string() } else { f.to_string() })
            .collect();
        let spec = format!("0 {}", converted.join(" "));
        let schedule = cron::Schedule::from_str(&spec).map_err(|e| anyhow!("cron {expression}: {e}"))?;
        let local = after.with_timezone(&tz);
        let next = schedule
            .after(&local)
            .next()
            .context("the schedule never fires again")?;
        return Ok(next.with_timezone(&Utc));
    }
    if let Some(body) = expression.strip_prefix("at(").and_then(|s| s.strip_suffix(')')) {
        let naive =
            chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S").context("at(yyyy-mm-ddThh:mm:ss)")?;
        let at = naive
            .and_local_timezone(tz)
            .single()
            .context("ambiguous local time")?
            .with_timezone(&Utc);
        if at > after {
            return Ok(at);
        }
        bail!("at({body}) is in the past");
    }
    bail!("unsupported schedule expression {expression}")
}

/// Sleeps until each schedule is due and fires it, forever.
pub async fn run_timetable(schedule: Schedule, sdk: aws_config::SdkConfig, quiet: bool) {
    loop {
        let now = Utc::now();
        let next = match schedule.next_after(now) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("schedule {}: {e}", schedule.logical_id);
                return;
            }
        };
        if !quiet {
            println!("schedule   {} next at {}", schedule.logical_id, next.to_rfc3339());
        }
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match schedule.fire(&sdk).await {
            Ok(()) if !quiet => println!("schedule   {} fired", schedule.logical_id),
            Ok(()) => {}
            Err(e) => eprintln!("schedule {}: {e}", schedule.logical_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn aws_cron_honours_the_time_zone() {
        let after = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().expect("time");
        let next = next_fire("cron(0 2 * * ? *)", chrono_tz::UTC, after).expect("next");
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).single().expect("time")
        );
        let paris = next_fire("cron(0 2 * * ? *)", chrono_tz::Europe::Paris, after).expect("next");
        assert_eq!(
            paris,
            Utc.with_ymd_and_hms(2026, 11, 26, 1, 0, 0).single().expect("time"),
            "02:00 in Paris is 01:00 UTC in winter"
        );
        assert_eq!(
            next_fire("rate(5 minutes)", chrono_tz::UTC, after).expect("rate"),
            after + chrono::Duration::minutes(5)
        );
        assert!(next_fire("cron(0 2 * *)", chrono_tz::UTC, after).is_err());
    }
}
