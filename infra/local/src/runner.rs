//! The Lambda event-source mapping for SQS, and the HTTP API server.
//!
//! Like AWS: messages are received in batches of the template's `BatchSize`
//! (long polling) with the queue's visibility timeout; the handler runs under
//! the function's `Timeout`; on success every message is deleted except those
//! the handler lists in `batchItemFailures` (when the function declares
//! `ReportBatchItemFailures`; a list naming a message not in the batch fails
//! the whole batch, as Lambda does); on error, panic or timeout nothing is
//! deleted. What is not deleted comes back after the visibility timeout (or
//! `failed_visibility_secs`), and SQS moves it to the dead-letter queue after
//! `maxReceiveCount` receives.
//!
//! One poller per mapping handles one batch at a time: AWS runs up to the
//! reserved concurrency in parallel, locally the order of work is easier to follow.

use crate::Stack;
use crate::template::{REGION, referenced_id};
use anyhow::{Context as _, Result, anyhow, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use futures::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one receive waits for messages (SQS long polling).
const POLL_WAIT_SECS: i32 = 2;

/// An SQS-triggered handler: the same function the Lambda runs.
pub type SqsHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<'static, anyhow::Result<SqsBatchResponse>> + Send + Sync>;

/// What a function of the template is run with.
pub enum Handler {
    Sqs(SqsHandler),
    Http(axum::Router),
}

/// One SQS event source of a function.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub function: String,
    pub queue_logical_id: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: i32,
    pub report_failures: bool,
    pub visibility_timeout_secs: i32,
    pub function_timeout: Duration,
}

/// The SQS event sources of the template's functions.
pub fn mappings(stack: &Stack) -> Result<Vec<Mapping>> {
    let template = stack.template();
    let mut out = Vec::new();
    for f in template.of_kind("AWS::Serverless::Function") {
        let Some(events) = f.prop("Events").and_then(|e| e.as_mapping()) else {
            continue;
        };
        for (_, event) in events {
            if event.get("Type").and_then(|t| t.as_str()) != Some("SQS") {
                continue;
            }
            let props = event.get("Properties").context("SQS event properties")?;
            let queue_id = props
                .get("Queue")
                .and_then(referenced_id)
                .with_context(|| format!("{}: SQS event needs !GetAtt Queue.Arn", f.logical_id))?;
            let queue = stack
                .physical()
                .get(&queue_id)
                .with_context(|| format!("queue {queue_id} not provisioned"))?;
            let queue_props = &template
                .resources
                .get(&queue_id)
                .context("queue in template")?
                .properties;
            if props.get("Enabled").and_then(|e| e.as_bool()) == Some(false) {
                continue;
            }
            let batch_size = props
                .get("BatchSize")
                .and_then(|b| b.as_i64())
                .unwrap_or(10)
                .clamp(1, 10) as i32;
            let report_failures = props
                .get("FunctionResponseTypes")
                .and_then(|t| t.as_sequence())
                .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
            out.push(Mapping {
                function: f.logical_id.clone(),
                queue_logical_id: queue_id.clone(),
                queue_url: queue.id.clone(),
                queue_arn: queue.attrs.get("Arn").cloned().unwrap_or_default(),
                batch_size,
                report_failures,
                visibility_timeout_secs: queue_props
                    .get("VisibilityTimeout")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(30) as i32,
                function_timeout: Duration::from_secs(template.function_timeout_secs(&f.logical_id)?),
            });
        }
    }
    Ok(out)
}

/// What happens to a received batch after its invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Message ids to leave on the queue (redelivered after the visibility timeout).
    pub failed: HashSet<String>,
    /// Why, when the whole batch failed.
    pub batch_error: Option<String>,
}

/// Lambda's rules for an SQS batch: `Err` fails every message; `Ok` deletes
/// all but the reported failures (with `ReportBatchItemFailures`), and a
/// report naming an empty or unknown id fails the whole batch.
pub fn settle(result: &Result<SqsBatchResponse>, batch: &[String], report_failures: bool) -> Settlement {
    let all = || batch.iter().cloned().collect::<HashSet<_>>();
    match result {
        Err(e) => Settlement {
            failed: all(),
            batch_error: Some(format!("{e:#}")),
        },
        Ok(_) if !report_failures => Settlement {
            failed: HashSet::new(),
            batch_error: None,
        },
        Ok(response) => {
            let listed: Vec<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            match listed
                .iter()
                .find(|id| id.is_empty() || !batch.iter().any(|b| b == *id))
            {
                Some(bad) => Settlement {
                    failed: all(),
                    batch_error: Some(format!(
                        "invalid batchItemFailures: itemIdentifier {bad:?} is not a message of the batch \
                         (Lambda fails the whole batch)"
                    )),
                },
                None => Settlement {
                    failed: listed.into_iter().map(str::to_string).collect(),
                    batch_error: None,
                },
            }
        }
    }
}

/// Runs one invocation as Lambda would: under the function timeout, a panic
/// being a failed invocation rather than a crashed poller.
pub async fn invoke(handler: &SqsHandler, event: SqsEvent, timeout: Duration) -> Result<SqsBatchResponse> {
    let mut task = tokio::spawn(handler(event));
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => Err(anyhow!("the handler panicked")),
        Ok(Err(join)) => Err(anyhow!("the handler was cancelled: {join}")),
        Err(_) => {
            task.abort();
            Err(anyhow!("Task timed out after {:.2} seconds", timeout.as_secs_f64()))
        }
    }
}

/// Counters of a running stack.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches being handled now.
    pub in_flight: AtomicUsize,
    pub batches: AtomicU64,
    /// Messages deleted after their invocation.
    pub messages_ok: AtomicU64,
    /// Messages left on the queue (handler error, timeout, or listed as failed).
    pub messages_failed: AtomicU64,
}

/// Where the per-message lines go: stdout, above the progress bar when there is one.
struct Reporter {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }
}

/// A running stack: pollers, schedules, the API server.
pub struct Running {
    api_url: Option<String>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    queues: Vec<String>,
    sqs: aws_sdk_sqs::Client,
}

/// Messages waiting, in flight or delayed on the given queues.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, queues: &[String]) -> Result<u64> {
    let mut total = 0;
    for url in queues {
        let out = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| anyhow!("queue attributes: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        total += out
            .attributes()
            .into_iter()
            .flat_map(|a| a.values())
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

impl Running {
    pub fn api_url(&self) -> Option<String> {
        self.api_url.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Waits until every polled queue is empty (visible, in flight and
    /// delayed) and no handler runs, twice in a row.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut quiet_checks = 0;
        loop {
            let busy =
                self.stats.in_flight.load(Ordering::SeqCst) > 0 || queue_depth(&self.sqs, &self.queues).await? > 0;
            quiet_checks = if busy { 0 } else { quiet_checks + 1 };
            if quiet_checks >= 2 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the stack did not become idle within {timeout:?} ({} batch(es) running)",
                    self.stats.in_flight.load(Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the pollers, the schedules and the API server.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

pub(crate) async fn start(
    stack: &Stack,
    mut handlers: HashMap<String, Handler>,
    api_addr: Option<SocketAddr>,
    schedules: bool,
) -> Result<Running> {
    let sdk = stack.sdk_config();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let quiet = stack.options.quiet;
    let mappings = mappings(stack)?;
    let queues: Vec<String> = mappings
        .iter()
        .filter(|m| handlers.contains_key(&m.function))
        .map(|m| m.queue_url.clone())
        .collect();
    let bar = (!quiet && std::io::stderr().is_terminal()).then(ProgressBar::new_spinner);
    let reporter = Arc::new(Reporter {
        quiet,
        bar: bar.clone(),
    });
    let mut tasks = Vec::new();
    let mut served = HashSet::new();
    for mapping in mappings {
        let handler = match handlers.get(&mapping.function) {
            Some(Handler::Sqs(handler)) => handler,
            Some(Handler::Http(_)) => bail!(
                "function {} has an SQS event but was given an HTTP handler",
                mapping.function
            ),
            // Not polled (noted below): `strata-local up` insists on a handler per function.
            None => continue,
        };
        served.insert(mapping.function.clone());
        let poller = Poller {
            mapping,
            handler: handler.clone(),
            sqs: sqs.clone(),
            stats: stats.clone(),
            failed_visibility_secs: stack.options.failed_visibility_secs,
            reporter: reporter.clone(),
        };
        tasks.push(tokio::spawn(poller.run(stop_rx.clone())));
    }
    let mut api_url = None;
    if let Some(addr) = api_addr {
        let http: Vec<String> = handlers
            .iter()
            .filter(|(_, h)| matches!(h, Handler::Http(_)))
            .map(|(k, _)| k.clone())
            .collect();
        let [function] = http.as_slice() else {
            bail!("serving the API needs exactly one HTTP handler, got {http:?}");
        };
        let Some(Handler::Http(router)) = handlers.remove(function) else {
            bail!("HTTP handler vanished")
        };
        served.insert(function.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind the API on {addr}"))?;
        api_url = Some(format!("http://{}", listener.local_addr()?));
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            };
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                eprintln!("the API server stopped: {e}");
            }
        }));
    }
    if schedules {
        for s in stack.schedules()? {
            let mut rx = stop_rx.clone();
            let sdk = sdk.clone();
            let reporter = reporter.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = crate::schedule::run_timetable(s, sdk, move |line| reporter.line(line)) => {}
                    _ = rx.wait_for(|stopped| *stopped) => {}
                }
            }));
        }
    }
    if let Some(bar) = bar {
        tasks.push(tokio::spawn(progress(
            bar,
            stats.clone(),
            sqs.clone(),
            queues.clone(),
            stop_rx.clone(),
        )));
    }
    for f in stack.template().functions() {
        if !served.contains(&f) {
            reporter.line(format!(
                "note       {f} has no local handler wired; its events are not run"
            ));
        }
    }
    Ok(Running {
        api_url,
        stats,
        stop,
        tasks,
        queues,
        sqs,
    })
}

/// A bar of the queued work while there is some (terminals only): its length
/// is the most messages seen pending since the queues were last empty.
async fn progress(
    bar: ProgressBar,
    stats: Arc<Stats>,
    sqs: aws_sdk_sqs::Client,
    queues: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    let style = ProgressStyle::with_template("{spinner} queued work {bar:30} {pos}/{len} done  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let mut high_water = 0;
    loop {
        let depth = queue_depth(&sqs, &queues).await.unwrap_or(0);
        let running = stats.in_flight.load(Ordering::SeqCst);
        if depth == 0 && running == 0 {
            high_water = 0;
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        } else {
            if high_water == 0 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            high_water = high_water.max(depth);
            bar.set_length(high_water);
            bar.set_position(high_water - depth);
            bar.set_message(format!(
                "{running} batch(es) running, {} ok, {} failed",
                stats.messages_ok.load(Ordering::Relaxed),
                stats.messages_failed.load(Ordering::Relaxed)
            ));
            bar.tick();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => break,
        }
    }
    bar.finish_and_clear();
}

struct Poller {
    mapping: Mapping,
    handler: SqsHandler,
    sqs: aws_sdk_sqs::Client,
    stats: Arc<Stats>,
    failed_visibility_secs: Option<i32>,
    reporter: Arc<Reporter>,
}

impl Poller {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let received = tokio::select! {
                r = self.receive() => r,
                _ = stop.changed() => return,
            };
            match received {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => self.handle(messages).await,
                Err(e) => {
                    self.reporter
                        .line(format!("poll       {}: {e:#}", self.mapping.queue_logical_id));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn receive(&self) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.mapping.queue_url)
            .max_number_of_messages(self.mapping.batch_size)
            .visibility_timeout(self.mapping.visibility_timeout_secs)
            .wait_time_seconds(POLL_WAIT_SECS)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| anyhow!("receive: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(out.messages.unwrap_or_default())
    }

    fn event(&self, messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        for m in messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.md5_of_body = m.md5_of_body.clone();
            record.md5_of_message_attributes = m.md5_of_message_attributes.clone();
            record.attributes = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                .unwrap_or_default();
            record.message_attributes = m
                .message_attributes()
                .map(|attrs| {
                    attrs
                        .iter()
                        .map(|(k, v)| {
                            let mut value = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
                            value.string_value = v.string_value().map(str::to_string);
                            value.binary_value = v.binary_value().map(|b| {
                                let mut data = aws_lambda_events::encodings::Base64Data::default();
                                data.extend_from_slice(b.as_ref());
                                data
                            });
                            value.data_type = Some(v.data_type().to_string());
                            (k.clone(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(self.mapping.queue_arn.clone());
            record.aws_region = Some(REGION.into());
            event.records.push(record);
        }
        event
    }

    async fn handle(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        self.stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let result = invoke(&self.handler, self.event(&messages), self.mapping.function_timeout).await;
        let ms = started.elapsed().as_millis();
        let ids: Vec<String> = messages.iter().filter_map(|m| m.message_id.clone()).collect();
        let settlement = settle(&result, &ids, self.mapping.report_failures);
        let function = self.mapping.function.trim_end_matches("Function").to_lowercase();
        for m in &messages {
            let id = m.message_id.clone().unwrap_or_default();
            let receipt = m.receipt_handle.clone().unwrap_or_default();
            let receives = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .map(String::as_str)
                .unwrap_or("?");
            let short: String = id.chars().take(8).collect();
            if settlement.failed.contains(&id) {
                self.stats.messages_failed.fetch_add(1, Ordering::Relaxed);
                let mut note = String::new();
                if let Some(secs) = self.failed_visibility_secs {
                    let changed = self
                        .sqs
                        .change_message_visibility()
                        .queue_url(&self.mapping.queue_url)
                        .receipt_handle(&receipt)
                        .visibility_timeout(secs)
                        .send()
                        .await;
                    if let Err(e) = changed {
                        note = format!(
                            " (visibility unchanged: {})",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        );
                    }
                }
                let why = settlement
                    .batch_error
                    .clone()
                    .unwrap_or_else(|| "reported in batchItemFailures".into());
                self.reporter.line(format!(
                    "{function:<10} msg {short}… failed (receive {receives}) {ms}ms: {why}{note}"
                ));
            } else {
                let deleted = self
                    .sqs
                    .delete_message()
                    .queue_url(&self.mapping.queue_url)
                    .receipt_handle(&receipt)
                    .send()
                    .await;
                self.stats.messages_ok.fetch_add(1, Ordering::Relaxed);
                let note = if deleted.is_err() {
                    " (delete failed: it will be redelivered)"
                } else {
                    ""
                };
                self.reporter.line(format!(
                    "{function:<10} msg {short}… ok (receive {receives}) {ms}ms{note}"
                ));
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::BatchItemFailure;

    fn batch() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn failures(ids: &[&str]) -> Result<SqsBatchResponse> {
        let mut response = SqsBatchResponse::default();
        for id in ids {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.to_string();
            response.batch_item_failures.push(f);
        }
        Ok(response)
    }

    #[test]
    fn reported_failures_stay_and_the_rest_is_deleted() {
        let s = settle(&failures(&["b"]), &batch(), true);
        assert_eq!(s.failed, HashSet::from(["b".to_string()]));
        assert_eq!(s.batch_error, None);
    }

    #[test]
    fn without_report_batch_item_failures_a_success_deletes_everything() {
        let s = settle(&failures(&["b"]), &batch(), false);
        assert!(s.failed.is_empty());
    }

    #[test]
    fn an_error_or_an_unknown_item_identifier_fails_the_whole_batch() {
        let all: HashSet<String> = batch().into_iter().collect();
        assert_eq!(settle(&Err(anyhow!("boom")), &batch(), true).failed, all);
        let unknown = settle(&failures(&["b", "zzz"]), &batch(), true);
        assert_eq!(unknown.failed, all);
        assert!(unknown.batch_error.unwrap_or_default().contains("zzz"));
        assert_eq!(settle(&failures(&[""]), &batch(), true).failed, all);
    }

    #[tokio::test]
    async fn a_slow_or_panicking_handler_is_a_failed_invocation() {
        let slow: SqsHandler = Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(SqsBatchResponse::default())
            })
        });
        let err = invoke(&slow, SqsEvent::default(), Duration::from_millis(50))
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("timed out"), "{err}");

        let panics: SqsHandler = Arc::new(|_| Box::pin(async { panic!("handler bug") }));
        let err = invoke(&panics, SqsEvent::default(), Duration::from_secs(5))
            .await
            .expect_err("panic");
        assert!(err.to_string().contains("panicked"), "{err}");

        let ok: SqsHandler = Arc::new(|_| Box::pin(async { Ok(SqsBatchResponse::default()) }));
        assert!(invoke(&ok, SqsEvent::default(), Duration::from_secs(5)).await.is_ok());
    }
}
