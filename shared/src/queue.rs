//! Sending work to a queue: SQS, and an in-memory queue for unit tests.

use async_trait::async_trait;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error("queue unavailable: {0}")]
pub struct QueueError(pub String);

/// A queue that accepts JSON messages.
#[async_trait]
pub trait Enqueue: Send + Sync {
    async fn send(&self, body: &serde_json::Value) -> Result<(), QueueError>;

    /// Sends a message that becomes visible after `delay` (SQS allows up to 15 minutes).
    async fn send_delayed(&self, body: &serde_json::Value, delay: std::time::Duration) -> Result<(), QueueError> {
        let _ = delay;
        self.send(body).await
    }
}

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

impl SqsQueue {
    async fn send_with_delay(&self, body: &serde_json::Value, delay_seconds: Option<i32>) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body.to_string())
            .set_delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

#[async_trait]
impl Enqueue for SqsQueue {
    async fn send(&self, body: &serde_json::Value) -> Result<(), QueueError> {
        self.send_with_delay(body, None).await
    }

    async fn send_delayed(&self, body: &serde_json::Value, delay: std::time::Duration) -> Result<(), QueueError> {
        // SQS delays a message by at most 15 minutes.
        let secs = i32::try_from(delay.as_secs().min(900)).unwrap_or(900);
        self.send_with_delay(body, Some(secs)).await
    }
}

/// Keeps sent messages in memory (unit tests).
#[derive(Default)]
pub struct MemoryQueue {
    pub sent: Mutex<Vec<serde_json::Value>>,
}

impl MemoryQueue {
    pub fn take(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Enqueue for MemoryQueue {
    async fn send(&self, body: &serde_json::Value) -> Result<(), QueueError> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(body.clone());
        Ok(())
    }
}
