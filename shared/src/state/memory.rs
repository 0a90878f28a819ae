//! In-memory [`ItemStore`] for unit tests: same semantics as DynamoDB's.

use super::items::{Cursor, Index, Item, ItemStore, Page, PutCondition, Query, StoreError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryItems {
    items: Mutex<BTreeMap<(String, String), Item>>,
}

impl MemoryItems {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Item>> {
        // A panic while holding the lock cannot leave a half-written item: recover the map.
        self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn check(existing: Option<&Item>, item: &Item, condition: PutCondition) -> Result<Item, StoreError> {
    let failed = || StoreError::ConditionFailed {
        pk: item.pk.clone(),
        sk: item.sk.clone(),
    };
    let mut stored = item.clone();
    match condition {
        PutCondition::None => {}
        PutCondition::NotExists => {
            if existing.is_some() {
                return Err(failed());
            }
            stored.version = 1;
        }
        PutCondition::Version(expected) => {
            let current = existing.map_or(0, |e| e.version);
            if current != expected {
                return Err(failed());
            }
            stored.version = expected + 1;
        }
    }
    Ok(stored)
}

#[async_trait]
impl ItemStore for MemoryItems {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.lock().get(&(pk.to_string(), sk.to_string())).cloned())
    }

    async fn put(&self, item: Item, condition: PutCondition) -> Result<(), StoreError> {
        let mut items = self.lock();
        let key = (item.pk.clone(), item.sk.clone());
        let stored = check(items.get(&key), &item, condition)?;
        items.insert(key, stored);
        Ok(())
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.lock().remove(&(pk.to_string(), sk.to_string()));
        Ok(())
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let items = self.lock();
        let sort_key = |item: &Item| -> Option<(String, String, String)> {
            match query.index {
                Index::Primary => {
                    (item.pk == query.partition).then(|| (item.sk.clone(), item.pk.clone(), item.sk.clone()))
                }
                Index::Gsi1 => match (&item.gsi1pk, &item.gsi1sk) {
                    (Some(p), Some(s)) if *p == query.partition => Some((s.clone(), item.pk.clone(), item.sk.clone())),
                    _ => None,
                },
            }
        };
        let mut matching: Vec<((String, String, String), &Item)> = items
            .values()
            .filter_map(|item| sort_key(item).map(|k| (k, item)))
            .filter(|((s, _, _), _)| query.sk_prefix.as_ref().is_none_or(|p| s.starts_with(p.as_str())))
            .collect();
        matching.sort_by(|a, b| a.0.cmp(&b.0));
        if query.descending {
            matching.reverse();
        }
        if let Some(start) = &query.start {
            let start_key = match query.index {
                Index::Primary => (start.sk.clone(), start.pk.clone(), start.sk.clone()),
                Index::Gsi1 => (
                    start.gsi1sk.clone().ok_or(StoreError::BadCursor)?,
                    start.pk.clone(),
                    start.sk.clone(),
                ),
            };
            matching.retain(|(k, _)| {
                if query.descending {
                    *k < start_key
                } else {
                    *k > start_key
                }
            });
        }
        let more = matching.len() > query.limit;
        let page: Vec<Item> = matching
            .into_iter()
            .take(query.limit)
            .map(|(_, item)| item.clone())
            .collect();
        let next = if more { page.last().map(Cursor::of) } else { None };
        Ok(Page { items: page, next })
    }

    async fn put_all(&self, batch: Vec<(Item, PutCondition)>) -> Result<(), StoreError> {
        let mut items = self.lock();
        let mut staged = Vec::with_capacity(batch.len());
        for (item, condition) in &batch {
            let key = (item.pk.clone(), item.sk.clone());
            staged.push((key.clone(), check(items.get(&key), item, *condition)?));
        }
        for (key, item) in staged {
            items.insert(key, item);
        }
        Ok(())
    }
}
