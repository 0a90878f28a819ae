//! Items, keys, conditions and queries of the control-plane store.

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Errors of the store; `retryable` ones may succeed on a second try.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("condition failed on {pk}/{sk}")]
    ConditionFailed { pk: String, sk: String },
    #[error("invalid paging cursor")]
    BadCursor,
    #[error("stored item {pk}/{sk} is corrupt: {reason}")]
    Corrupt { pk: String, sk: String, reason: String },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// One stored item: keys, optional index keys and TTL, a version for
/// optimistic concurrency, and the document itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub gsi1pk: Option<String>,
    pub gsi1sk: Option<String>,
    /// Epoch seconds after which the store may delete the item.
    pub ttl: Option<i64>,
    /// Bumped by every versioned write.
    pub version: u64,
    pub doc: serde_json::Value,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>, doc: serde_json::Value) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
            gsi1pk: None,
            gsi1sk: None,
            ttl: None,
            version: 0,
            doc,
        }
    }

    pub fn with_index(mut self, gsi1pk: impl Into<String>, gsi1sk: impl Into<String>) -> Self {
        self.gsi1pk = Some(gsi1pk.into());
        self.gsi1sk = Some(gsi1sk.into());
        self
    }

    pub fn with_ttl(mut self, epoch_secs: i64) -> Self {
        self.ttl = Some(epoch_secs);
        self
    }

    /// Decodes the document into a domain type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_value(self.doc.clone()).map_err(|e| StoreError::Corrupt {
            pk: self.pk.clone(),
            sk: self.sk.clone(),
            reason: e.to_string(),
        })
    }
}

/// When a put may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Always (last writer wins).
    None,
    /// Only if no item has this key.
    NotExists,
    /// Only if the stored item has this version (0: does not exist yet).
    Version(u64),
}

/// Which key a query walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Primary,
    Gsi1,
}

/// A query: one partition, an optional sort-key prefix, a page.
#[derive(Debug, Clone)]
pub struct Query {
    pub index: Index,
    pub partition: String,
    pub sk_prefix: Option<String>,
    pub limit: usize,
    pub start: Option<Cursor>,
    pub descending: bool,
}

impl Query {
    pub fn partition(partition: impl Into<String>) -> Self {
        Self {
            index: Index::Primary,
            partition: partition.into(),
            sk_prefix: None,
            limit: 100,
            start: None,
            descending: false,
        }
    }
    pub fn gsi1(partition: impl Into<String>) -> Self {
        Self {
            index: Index::Gsi1,
            ..Self::partition(partition)
        }
    }
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.sk_prefix = Some(prefix.into());
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }
    pub fn start(mut self, start: Option<Cursor>) -> Self {
        self.start = start;
        self
    }
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }
}

/// Where a page ended: the keys of its last item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub pk: String,
    pub sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1sk: Option<String>,
}

impl Cursor {
    /// An opaque token for API clients.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(token: &str) -> Result<Self, StoreError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| StoreError::BadCursor)?;
        serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)
    }

    pub(crate) fn of(item: &Item) -> Self {
        Self {
            pk: item.pk.clone(),
            sk: item.sk.clone(),
            gsi1pk: item.gsi1pk.clone(),
            gsi1sk: item.gsi1sk.clone(),
        }
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<Cursor>,
}

/// The narrow edge of the control-plane store.
#[async_trait]
pub trait ItemStore: Send + Sync {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;
    /// Writes the item under its condition. With `Version(v)` the stored item
    /// must have version `v` (0: absent) and is replaced by one with version
    /// `v + 1`; `NotExists` stores version 1; `None` stores the item as given.
    async fn put(&self, item: Item, condition: PutCondition) -> Result<(), StoreError>;
    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError>;
    async fn query(&self, query: Query) -> Result<Page, StoreError>;
    /// Writes every item or none (each under its condition).
    async fn put_all(&self, items: Vec<(Item, PutCondition)>) -> Result<(), StoreError>;
}
