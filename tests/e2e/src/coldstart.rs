//! Cold starts of the function binaries, measured as Lambda sees them: a
//! minimal Lambda Runtime API on loopback hands the freshly started process
//! one event; the time from spawning the process to its response is the cold
//! start (init included: configuration, SDK clients, the first AWS call).

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Default)]
struct Runtime {
    event: Mutex<Option<Value>>,
    outcome: Mutex<Option<Result<Value, String>>>,
    done: Notify,
}

async fn next(State(rt): State<Arc<Runtime>>) -> (StatusCode, HeaderMap, String) {
    let event = rt.event.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(event) = event else {
        // One event per process: the next poll waits until the process is killed.
        std::future::pending::<()>().await;
        unreachable!("pending never resolves");
    };
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 + 60_000);
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_static("cold-start-1"),
    );
    headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    (StatusCode::OK, headers, event.to_string())
}

async fn respond(State(rt): State<Arc<Runtime>>, Path(_id): Path<String>, body: String) -> StatusCode {
    *rt.outcome.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Ok(serde_json::from_str(&body).unwrap_or(Value::String(body))));
    rt.done.notify_one();
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Arc<Runtime>>, body: String) -> StatusCode {
    *rt.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(body));
    rt.done.notify_one();
    StatusCode::ACCEPTED
}

/// Starts `binary` with `env` under a fresh Runtime API, gives it `event`,
/// and returns the time to its response and the response.
pub async fn cold_start(
    binary: &std::path::Path,
    env: &BTreeMap<String, String>,
    event: Value,
) -> Result<(Duration, Value)> {
    let rt = Arc::new(Runtime::default());
    *rt.event.lock().unwrap_or_else(|p| p.into_inner()) = Some(event);
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let waited = tokio::time::timeout(Duration::from_secs(30), rt.done.notified()).await;
    let took = started.elapsed();
    let _ = child.kill().await;
    server.abort();
    if waited.is_err() {
        bail!("{} answered no event within 30 s", binary.display());
    }
    let outcome = rt.outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
    match outcome {
        Some(Ok(v)) => Ok((took, v)),
        Some(Err(e)) => bail!("{} failed its event: {e}", binary.display()),
        None => bail!("{} sent no response", binary.display()),
    }
}
