//! The real handlers of crate `strata`, wired to the template's functions
//! with the environment the template gives them.

use crate::{Handler, Stack};
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the local stack changes in every function's environment: the fake
/// SaaS servers listen on `http://127.0.0.1`, which deployed stacks refuse.
pub fn local_overrides() -> BTreeMap<String, String> {
    BTreeMap::from([("ALLOW_INSECURE_ENDPOINTS".to_string(), "true".to_string())])
}

/// Builds a function's context from its resolved environment plus overrides.
pub fn context(stack: &Stack, function: &str, overrides: &BTreeMap<String, String>) -> Result<strata::Context> {
    let mut env = stack.function_env(function)?;
    env.extend(overrides.clone());
    let config =
        strata::Config::from_lookup(|k| env.get(k).cloned()).with_context(|| format!("configuration of {function}"))?;
    Ok(strata::Context::from_sdk(config, &stack.sdk_config())?)
}

/// One handler per function of the template.
pub async fn handlers(stack: &Stack, overrides: &BTreeMap<String, String>) -> Result<HashMap<String, Handler>> {
    let mut out = HashMap::new();
    for function in stack.template().functions() {
        let ctx = Arc::new(context(stack, &function, overrides)?);
        let handler = match function.as_str() {
            "ApiFunction" => Handler::Http(strata::api::router(ctx)),
            "DiscoveryFunction" => Handler::Sqs(Arc::new(move |event| {
                let ctx = ctx.clone();
                Box::pin(async move { Ok(strata::ops::discovery::handle_batch(&ctx, event).await) })
            })),
            "BackupFunction" => {
                let timeout = std::time::Duration::from_secs(stack.template().function_timeout_secs(&function)?);
                Handler::Sqs(Arc::new(move |event| {
                    let ctx = ctx.clone();
                    // Lambda's deadline: the function timeout from the start of the invocation.
                    let deadline = std::time::Instant::now() + timeout;
                    Box::pin(async move { Ok(strata::ops::backup::handle_batch(&ctx, event, deadline).await) })
                }))
            }
            "ReportFunction" => Handler::Sqs(Arc::new(move |event| {
                let ctx = ctx.clone();
                Box::pin(async move { Ok(strata::ops::report::handle_batch(&ctx, event).await) })
            })),
            "RestoreFunction" | "ExportFunction" | "PurgeFunction" => {
                let timeout = std::time::Duration::from_secs(stack.template().function_timeout_secs(&function)?);
                let kind = match function.as_str() {
                    "RestoreFunction" => strata::model::JobKind::Restore,
                    "ExportFunction" => strata::model::JobKind::Export,
                    _ => strata::model::JobKind::Purge,
                };
                Handler::Sqs(Arc::new(move |event| {
                    let ctx = ctx.clone();
                    let deadline = std::time::Instant::now() + timeout;
                    Box::pin(async move {
                        let cap = ctx.config.job_time_budget;
                        Ok(strata::ops::jobs::handle_batch(&ctx, event, deadline, cap, kind).await)
                    })
                }))
            }
            other => bail!("no local handler for function {other}: wire it in infra/local/src/wire.rs"),
        };
        out.insert(function, handler);
    }
    Ok(out)
}
