//! `Config`: the environment the SAM template gives every function, read and
//! checked once at cold start. Handlers never read environment variables.

use std::time::Duration;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The typed configuration of every Strata function.
#[derive(Debug, Clone)]
pub struct Config {
    /// DynamoDB control-plane table (`STATE_TABLE`).
    pub state_table: String,
    /// S3 bucket of the backup repository (`DATA_BUCKET`).
    pub data_bucket: String,
    /// KMS key that seals secrets and wraps data keys (`KMS_KEY_ID`).
    pub kms_key_id: String,
    /// Queue of discovery requests (`DISCOVERY_QUEUE_URL`).
    pub discovery_queue_url: String,
    /// Queue of backup requests (`BACKUP_QUEUE_URL`).
    pub backup_queue_url: Option<String>,
    /// Secrets Manager secret holding the one-time bootstrap token (`BOOTSTRAP_SECRET_ARN`).
    pub bootstrap_secret_arn: String,
    /// Whether anyone may sign up without the bootstrap token (`OPEN_SIGNUP`).
    pub open_signup: bool,
    /// Sender address of e-mail (`SES_FROM_ADDRESS`).
    pub ses_from_address: String,
    /// Lifetime of an admin session (`SESSION_TTL_SECS`, default 12 h).
    pub session_ttl: Duration,
    /// Failed sign-ins before sign-in is locked (`SIGNIN_MAX_FAILURES`, default 5).
    pub signin_max_failures: u32,
    /// How long sign-in stays locked (`SIGNIN_LOCK_SECS`, default 15 min).
    pub signin_lock: Duration,
    /// Allow `http://` endpoint overrides on connections (`ALLOW_INSECURE_ENDPOINTS`):
    /// only the local stack sets it, for the fake SaaS servers on loopback.
    pub allow_insecure_endpoints: bool,
    /// The most one backup invocation works before it commits a partial
    /// snapshot and re-enqueues a continuation (`BACKUP_TIME_BUDGET_SECS`;
    /// unset: the Lambda deadline less a reserve for the commit).
    pub backup_time_budget: Option<Duration>,
    /// Caps the working time of one restore or export invocation (`JOB_TIME_BUDGET_SECS`, tests).
    pub job_time_budget: Option<Duration>,
    /// Queue of restore jobs (`RESTORE_QUEUE_URL`), when the function sends them.
    pub restore_queue_url: Option<String>,
    /// Queue of export jobs (`EXPORT_QUEUE_URL`), when the function sends them.
    pub export_queue_url: Option<String>,
    /// Queue of purge jobs (`PURGE_QUEUE_URL`), when the function sends them.
    pub purge_queue_url: Option<String>,
    /// The public base URL of the API (`API_BASE_URL`): download links in e-mails point there.
    pub api_base_url: Option<String>,
    /// Default validity of an export's download link (`EXPORT_LINK_DAYS`, 7 days).
    pub export_link_ttl: Duration,
    /// Endpoint of the AWS APIs (`AWS_ENDPOINT_URL`): the emulator locally, unset in AWS.
    pub aws_endpoint_url: Option<String>,
    /// AWS region (`AWS_REGION`).
    pub aws_region: Option<String>,
}

impl Config {
    /// Reads the configuration from the process environment (a Lambda's cold start).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from any lookup, e.g. the environment the local
    /// stack resolved from the template for one function.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| -> Result<String, ConfigError> {
            match lookup(name) {
                Some(value) if !value.trim().is_empty() => Ok(value),
                _ => Err(ConfigError::Missing(name)),
            }
        };
        let optional = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let flag = |name: &'static str| -> Result<bool, ConfigError> {
            match optional(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("false") | Some("0") | Some("no") => Ok(false),
                Some("true") | Some("1") | Some("yes") => Ok(true),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    reason: format!("expected true or false, got {other:?}"),
                }),
            }
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match optional(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!("expected a whole number, got {v:?}"),
                }),
            }
        };
        let signin_max_failures =
            u32::try_from(number("SIGNIN_MAX_FAILURES", 5)?).map_err(|_| ConfigError::Invalid {
                name: "SIGNIN_MAX_FAILURES",
                reason: "too large".into(),
            })?;
        Ok(Self {
            state_table: required("STATE_TABLE")?,
            data_bucket: required("DATA_BUCKET")?,
            kms_key_id: required("KMS_KEY_ID")?,
            discovery_queue_url: required("DISCOVERY_QUEUE_URL")?,
            bootstrap_secret_arn: required("BOOTSTRAP_SECRET_ARN")?,
            backup_queue_url: optional("BACKUP_QUEUE_URL"),
            open_signup: flag("OPEN_SIGNUP")?,
            ses_from_address: optional("SES_FROM_ADDRESS").unwrap_or_else(|| "strata@example.com".into()),
            session_ttl: Duration::from_secs(number("SESSION_TTL_SECS", 12 * 3600)?),
            signin_max_failures,
            signin_lock: Duration::from_secs(number("SIGNIN_LOCK_SECS", 15 * 60)?),
            allow_insecure_endpoints: flag("ALLOW_INSECURE_ENDPOINTS")?,
            backup_time_budget: seconds(optional("BACKUP_TIME_BUDGET_SECS"), "BACKUP_TIME_BUDGET_SECS")?,
            job_time_budget: seconds(optional("JOB_TIME_BUDGET_SECS"), "JOB_TIME_BUDGET_SECS")?,
            restore_queue_url: optional("RESTORE_QUEUE_URL"),
            export_queue_url: optional("EXPORT_QUEUE_URL"),
            purge_queue_url: optional("PURGE_QUEUE_URL"),
            api_base_url: optional("API_BASE_URL").map(|u| u.trim_end_matches('/').to_string()),
            export_link_ttl: Duration::from_secs(number("EXPORT_LINK_DAYS", 7)?.clamp(1, 365) * 86_400),
            aws_endpoint_url: optional("AWS_ENDPOINT_URL"),
            aws_region: optional("AWS_REGION").or_else(|| optional("AWS_DEFAULT_REGION")),
        })
    }
}

/// A positive number of seconds, when set.
fn seconds(value: Option<String>, name: &'static str) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("expected a positive number of seconds, got {v:?}"),
                })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("STATE_TABLE", "t"),
            ("DATA_BUCKET", "b"),
            ("KMS_KEY_ID", "k"),
            ("DISCOVERY_QUEUE_URL", "http://q"),
            ("BOOTSTRAP_SECRET_ARN", "arn:s"),
        ])
    }

    #[test]
    fn reads_required_and_defaults() {
        let vars = base();
        let config = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).expect("config");
        assert_eq!(config.state_table, "t");
        assert!(!config.open_signup);
        assert_eq!(config.session_ttl, Duration::from_secs(43_200));
        assert_eq!(config.signin_max_failures, 5);
    }

    #[test]
    fn missing_variable_is_named() {
        let mut vars = base();
        vars.remove("KMS_KEY_ID");
        let err = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).expect_err("must fail");
        assert_eq!(err.to_string(), "missing environment variable KMS_KEY_ID");
    }

    #[test]
    fn bad_flag_is_refused() {
        let mut vars = base();
        vars.insert("OPEN_SIGNUP", "maybe");
        assert!(Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).is_err());
    }
}
