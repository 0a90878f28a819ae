//! Where repository objects live: a narrow [`BlobStore`] with an S3
//! implementation and an in-memory one (unit tests).

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {0} already exists")]
    Exists(String),
    #[error("object store unavailable: {0}")]
    Unavailable(String),
}

/// Immutable objects by key.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Writes an object that must not exist yet (objects are immutable).
    async fn put_new(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Bytes `[offset, offset + len)` of an object.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError>;
    /// Keys under a prefix, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Keys under a prefix with their sizes in bytes, in lexical order.
    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// Removes an object; removing one that is not there is not an error.
    /// Only erasure (purge) removes repository objects: they are otherwise immutable.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// An S3 bucket (path-style addressing works against emulators too).
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// GET an object, or a byte range of it.
    async fn fetch(&self, key: &str, range: Option<String>) -> Result<Bytes, StoreError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(unavailable(e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("read {key}: {e}")))?;
        Ok(body.into_bytes())
    }
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_s3::error::SdkError<E, R>) -> StoreError {
    StoreError::Unavailable(aws_sdk_s3::error::DisplayErrorContext(e).to_string())
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put_new(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(body.into())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Err(StoreError::Exists(key.to_string()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.fetch(key, None).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some(format!("bytes={}-{}", offset, offset + len - 1)))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_sized(prefix).await?.into_iter().map(|(k, _)| k).collect())
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(unavailable)?;
            keys.extend(page.contents().iter().filter_map(|o| {
                let size = u64::try_from(o.size().unwrap_or(0)).unwrap_or(0);
                o.key().map(|k| (k.to_string(), size))
            }));
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Objects in memory, for unit tests.
#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object's bytes (tests of tamper detection).
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.lock();
        if let Some(body) = objects.get(key) {
            let mut bytes = body.to_vec();
            f(&mut bytes);
            objects.insert(key.to_string(), Bytes::from(bytes));
        }
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn total_bytes(&self) -> usize {
        self.lock().values().map(Bytes::len).sum()
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn put_new(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let mut objects = self.lock();
        if objects.contains_key(key) {
            return Err(StoreError::Exists(key.to_string()));
        }
        objects.insert(key.to_string(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let body = self.get(key).await?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(body.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(body.len());
        Ok(body.slice(start..end))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }
}
