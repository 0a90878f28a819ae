//! The Lambda event-source mapping for SQS, and the HTTP API server.
//!
//! Like AWS: messages are received in batches of the template's `BatchSize`
//! with the queue's visibility timeout; on success every message is deleted
//! except those the handler lists in `batchItemFailures` (when the function
//! declares `ReportBatchItemFailures`); on error nothing is deleted. What is
//! not deleted comes back after the visibility timeout, and SQS moves it to
//! the dead-letter queue after `maxReceiveCount` receives.

use crate::Stack;
use crate::template::referenced_id;
use anyhow::{Context as _, Result, bail};
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
    pub visibility_timeout: i32,
}

/// The SQS event sources of the template's functions.
pub fn mappings(stack: &Stack) -> Result<Vec<Mapping>> {
    let mut out = Vec::new();
    for f in stack.template().of_kind("AWS::Serverless::Function") {
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
            let queue_props = &stack
                .template()
                .resources
                .get(&queue_id)
                .context("queue in template")?
                .properties;
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
                visibility_timeout: queue_props
                    .get("VisibilityTimeout")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(30) as i32,
            });
        }
    }
    Ok(out)
}

/// Counters of a running stack.
#[derive(Debug, Default)]
pub struct Stats {
    pub in_flight: AtomicUsize,
    pub batches: AtomicU64,
    pub messages_ok: AtomicU64,
    pub messages_failed: AtomicU64,
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

impl Running {
    pub fn api_url(&self) -> Option<String> {
        self.api_url.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    async fn queue_depth(&self) -> Result<u64> {
        let mut total = 0;
        for url in &self.queues {
            let out = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("queue attributes: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            for v in out
                .attributes()
                .map(|a| a.values().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                total += v.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Waits until every polled queue is empty and no handler runs (twice in a row).
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut quiet_checks = 0;
        loop {
            let busy = self.stats.in_flight.load(Ordering::SeqCst) > 0 || self.queue_depth().await? > 0;
            quiet_checks = if busy { 0 } else { quiet_checks + 1 };
            if quiet_checks >= 2 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the stack did not become idle within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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
    let sdk = stack.shared_sdk();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let quiet = stack.options.quiet;
    let mut tasks = Vec::new();
    let mut queues = Vec::new();
    let mut served = HashSet::new();
    for mapping in mappings(stack)? {
        let Some(Handler::Sqs(handler)) = handlers.get(&mapping.function) else {
            bail!(
                "function {} has an SQS event but no SQS handler was given",
                mapping.function
            );
        };
        served.insert(mapping.function.clone());
        queues.push(mapping.queue_url.clone());
        let poller = Poller {
            mapping,
            handler: handler.clone(),
            sqs: sqs.clone(),
            stats: stats.clone(),
            failed_visibility: stack.options.failed_visibility_secs,
            quiet,
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
        let local = listener.local_addr()?;
        api_url = Some(format!("http://{local}"));
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                eprintln!("the API server stopped: {e}");
            }
        }));
    }
    if schedules {
        for s in crate::schedule::schedules(stack)? {
            let mut rx = stop_rx.clone();
            let sdk = (*sdk).clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = crate::schedule::run_timetable(s, sdk, quiet) => {}
                    _ = rx.wait_for(|stopped| *stopped) => {}
                }
            }));
        }
    }
    if !quiet && std::io::stderr().is_terminal() {
        tasks.push(tokio::spawn(progress(stats.clone(), stop_rx.clone())));
    }
    for f in stack.template().functions() {
        if !served.contains(&f) && !quiet {
            println!("note       {f} has no local handler wired; its events are not run");
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

/// A spinner while handlers run (long discoveries), on terminals only.
async fn progress(stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    loop {
        let running = stats.in_flight.load(Ordering::SeqCst);
        if running > 0 {
            bar.set_message(format!(
                "{running} batch(es) running; {} messages done, {} failed",
                stats.messages_ok.load(Ordering::Relaxed),
                stats.messages_failed.load(Ordering::Relaxed)
            ));
            bar.tick();
        } else {
            bar.set_message("");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(120)) => {}
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
    failed_visibility: Option<i32>,
    quiet: bool,
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
                    if !self.quiet {
                        eprintln!("poll {}: {e:#}", self.mapping.queue_logical_id);
                    }
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
            .visibility_timeout(self.mapping.visibility_timeout)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receive: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn handle(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        self.stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut records = Vec::with_capacity(messages.len());
        for m in &messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.md5_of_body = m.md5_of_body.clone();
            record.attributes = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                .unwrap_or_default();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(self.mapping.queue_arn.clone());
            record.aws_region = Some(crate::template::REGION.into());
            records.push(record);
        }
        let mut event = SqsEvent::default();
        event.records = records;
        let started = Instant::now();
        let result = (self.handler)(event).await;
        let ms = started.elapsed().as_millis();
        let failed: HashSet<String> = match &result {
            Ok(response) if self.mapping.report_failures => response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect(),
            Ok(_) => HashSet::new(),
            Err(_) => messages.iter().filter_map(|m| m.message_id.clone()).collect(),
        };
        for m in &messages {
            let id = m.message_id.clone().unwrap_or_default();
            let receipt = m.receipt_handle.clone().unwrap_or_default();
            let receives = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .cloned()
                .unwrap_or_else(|| "?".into());
            let short: String = id.chars().take(8).collect();
            if failed.contains(&id) {
                self.stats.messages_failed.fetch_add(1, Ordering::Relaxed);
                if let Some(secs) = self.failed_visibility {
                    let _ = self
                        .sqs
                        .change_message_visibility()
                        .queue_url(&self.mapping.queue_url)
                        .receipt_handle(&receipt)
                        .visibility_timeout(secs)
                        .send()
                        .await;
                }
                if !self.quiet {
                    let why = match &result {
                        Err(e) => format!("{e:#}"),
                        Ok(_) => "reported in batchItemFailures".into(),
                    };
                    println!(
                        "{:<20} msg {short} failed (receive {receives}) {ms} ms: {why}",
                        self.mapping.function
                    );
                }
            } else {
                let deleted = self
                    .sqs
                    .delete_message()
                    .queue_url(&self.mapping.queue_url)
                    .receipt_handle(&receipt)
                    .send()
                    .await;
                self.stats.messages_ok.fetch_add(1, Ordering::Relaxed);
                if !self.quiet {
                    let note = if deleted.is_err() {
                        " (delete failed: will be redelivered)"
                    } else {
                        ""
                    };
                    println!(
                        "{:<20} msg {short} ok (receive {receives}) {ms} ms{note}",
                        self.mapping.function
                    );
                }
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
