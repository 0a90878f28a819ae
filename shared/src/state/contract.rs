//! The contract every [`ItemStore`] keeps. Run against the in-memory store in
//! unit tests and against DynamoDB (the emulator) in the end-to-end suite.

use super::items::{Item, ItemStore, PutCondition, Query, StoreError};
use serde_json::json;

/// Runs every check; panics (with the failing step) on the first broken promise.
/// `ns` keeps the keys of one run apart from another's in a shared table.
pub async fn run(store: &dyn ItemStore, ns: &str) {
    conditions(store, ns).await;
    paging(store, ns).await;
    index_and_order(store, ns).await;
    atomic_batches(store, ns).await;
}

async fn conditions(store: &dyn ItemStore, ns: &str) {
    let pk = format!("{ns}#C");
    assert!(store.get(&pk, "a").await.expect("get").is_none(), "absent item");
    store
        .put(Item::new(&pk, "a", json!({"n": 1})), PutCondition::NotExists)
        .await
        .expect("first put");
    let again = store
        .put(Item::new(&pk, "a", json!({"n": 2})), PutCondition::NotExists)
        .await;
    assert!(
        matches!(again, Err(StoreError::ConditionFailed { .. })),
        "NotExists on an existing item fails"
    );
    let stored = store.get(&pk, "a").await.expect("get").expect("stored");
    assert_eq!(stored.doc, json!({"n": 1}), "failed put changed nothing");
    assert_eq!(stored.version, 1, "NotExists stores version 1");
    store
        .put(Item::new(&pk, "a", json!({"n": 3})), PutCondition::Version(1))
        .await
        .expect("versioned put");
    let stale = store
        .put(Item::new(&pk, "a", json!({"n": 4})), PutCondition::Version(1))
        .await;
    assert!(
        matches!(stale, Err(StoreError::ConditionFailed { .. })),
        "stale version fails"
    );
    let stored = store.get(&pk, "a").await.expect("get").expect("stored");
    assert_eq!((stored.version, stored.doc), (2, json!({"n": 3})));
    store
        .put(Item::new(&pk, "b", json!({})), PutCondition::Version(0))
        .await
        .expect("Version(0) creates");
    let stale = store
        .put(Item::new(&pk, "b", json!({})), PutCondition::Version(0))
        .await;
    assert!(stale.is_err(), "Version(0) on an existing item fails");
    store
        .put(
            Item::new(&pk, "c", json!({"x": "y"})).with_ttl(4_000_000_000),
            PutCondition::None,
        )
        .await
        .expect("plain put");
    assert_eq!(
        store.get(&pk, "c").await.expect("get").expect("c").ttl,
        Some(4_000_000_000)
    );
    store.delete(&pk, "c").await.expect("delete");
    assert!(store.get(&pk, "c").await.expect("get").is_none(), "deleted");
    store
        .delete(&pk, "never")
        .await
        .expect("deleting an absent item is fine");
}

async fn paging(store: &dyn ItemStore, ns: &str) {
    let pk = format!("{ns}#P");
    for i in 0..25 {
        store
            .put(Item::new(&pk, format!("X#{i:03}"), json!({"i": i})), PutCondition::None)
            .await
            .expect("put");
    }
    store
        .put(Item::new(&pk, "Y#1", json!({})), PutCondition::None)
        .await
        .expect("put other prefix");
    let mut seen = Vec::new();
    let mut start = None;
    loop {
        let page = store
            .query(Query::partition(&pk).prefix("X#").limit(7).start(start))
            .await
            .expect("query");
        assert!(page.items.len() <= 7, "page within limit");
        seen.extend(page.items.iter().map(|i| i.sk.clone()));
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("X#{i:03}")).collect();
    assert_eq!(
        seen, expected,
        "paging returns every item once, in order, and only the prefix"
    );
    let newest = store
        .query(Query::partition(&pk).prefix("X#").limit(2).descending())
        .await
        .expect("query");
    let newest: Vec<_> = newest.items.iter().map(|i| i.sk.as_str()).collect();
    assert_eq!(newest, ["X#024", "X#023"], "descending order");
}

async fn index_and_order(store: &dyn ItemStore, ns: &str) {
    let index = format!("{ns}#IDX");
    for (i, pk) in ["B", "A", "C"].iter().enumerate() {
        let item = Item::new(format!("{ns}#{pk}"), "row", json!({"i": i})).with_index(&index, format!("k{pk}"));
        store.put(item, PutCondition::None).await.expect("put indexed");
    }
    let mut seen = Vec::new();
    let mut start = None;
    loop {
        let page = store
            .query(Query::gsi1(&index).limit(2).start(start))
            .await
            .expect("gsi query");
        seen.extend(page.items.iter().map(|i| i.gsi1sk.clone().unwrap_or_default()));
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["kA", "kB", "kC"], "index query walks the index keys in order");
}

async fn atomic_batches(store: &dyn ItemStore, ns: &str) {
    let pk = format!("{ns}#T");
    store
        .put(Item::new(&pk, "taken", json!({})), PutCondition::NotExists)
        .await
        .expect("put");
    let batch = vec![
        (Item::new(&pk, "new", json!({})), PutCondition::NotExists),
        (Item::new(&pk, "taken", json!({})), PutCondition::NotExists),
    ];
    let result = store.put_all(batch).await;
    match result {
        Err(StoreError::ConditionFailed { sk, .. }) => assert_eq!(sk, "taken", "the failing item is named"),
        other => panic!("a batch with a failing condition must fail, got {other:?}"),
    }
    assert!(
        store.get(&pk, "new").await.expect("get").is_none(),
        "nothing of a failed batch is written"
    );
    let batch = vec![
        (Item::new(&pk, "n1", json!({})), PutCondition::NotExists),
        (Item::new(&pk, "n2", json!({})), PutCondition::None),
    ];
    store.put_all(batch).await.expect("batch");
    assert!(store.get(&pk, "n1").await.expect("get").is_some() && store.get(&pk, "n2").await.expect("get").is_some());
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        super::run(&crate::state::MemoryItems::new(), "t").await;
    }
}
