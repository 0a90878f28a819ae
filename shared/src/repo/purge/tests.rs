use super::super::{BlobStore, Change, MemoryStore, Repo, StoreError, TestKeys};
use super::*;
use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const ACCOUNT: &str = "acct_1";
const KEYS: TestKeys = TestKeys([7u8; 32]);

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A message: its own headers, then an attachment.
fn mail(from: &str, n: usize, attachment: &[u8]) -> Vec<u8> {
    let mut m = format!("From: {from}@contoso.test\r\nSubject: report {n}\r\n\r\n").into_bytes();
    m.extend_from_slice(attachment);
    m
}

/// Two mailboxes that share an attachment, each with content of its own, over
/// four runs: `ent_b`'s first run deduplicates against the pack of `ent_a`'s,
/// `ent_a` deletes an item in its second run (the first snapshot keeps it),
/// and `ent_a` has a pass working state and a browse history.
async fn seed(store: Arc<MemoryStore>) -> Repo {
    let repo = Repo::open(store, &KEYS, ACCOUNT).await.expect("open");
    let attachment = random_bytes(1, 400_000);

    let mut w = repo.writer("ent_a", "run_a1").await.expect("writer");
    w.add_item(
        "a1",
        Change::Added,
        json!({"subject": "a1"}),
        &mail("alice", 1, &attachment)[..],
    )
    .await
    .expect("add");
    w.add_item("a2", Change::Added, json!({}), &random_bytes(2, 200_000)[..])
        .await
        .expect("add");
    w.commit(false).await.expect("commit");

    let mut w = repo.writer("ent_b", "run_b1").await.expect("writer");
    w.add_item(
        "b1",
        Change::Added,
        json!({"subject": "b1"}),
        &mail("bob", 1, &attachment)[..],
    )
    .await
    .expect("add");
    w.add_item("b2", Change::Added, json!({}), &random_bytes(3, 120_000)[..])
        .await
        .expect("add");
    w.commit(false).await.expect("commit");

    let mut w = repo.writer("ent_a", "run_a2").await.expect("writer");
    w.add_item("a3", Change::Added, json!({}), &random_bytes(4, 80_000)[..])
        .await
        .expect("add");
    w.delete_item("a2");
    w.commit(false).await.expect("commit");
    repo.put_work("ent_a", "run_a2", &json!({"seen": "AAAA"}))
        .await
        .expect("work");
    repo.put_derived("ent_a", "0000000002", &vec![1u32, 2])
        .await
        .expect("view");
    repo.put_derived("ent_b", "0000000001", &vec![3u32])
        .await
        .expect("view");

    let mut w = repo.writer("ent_b", "run_b2").await.expect("writer");
    w.add_item("b3", Change::Added, json!({}), &mail("bob", 3, &attachment)[..])
        .await
        .expect("add");
    let b1 = repo.view("ent_b", None).await.expect("view")["b1"].clone();
    w.update_item(&b1, json!({"subject": "b1", "folder": "Archive"}));
    w.commit(false).await.expect("commit");
    repo
}

/// Every chunk the entity's items use, every version (from its segments).
async fn chunks_of(repo: &Repo, entity: &str) -> HashSet<ChunkId> {
    let mut out = HashSet::new();
    for (_, snapshot) in repo.snapshots(entity).await.expect("snapshots") {
        for entry in repo.segment(&snapshot.catalog).await.expect("segment").entries {
            out.extend(entry.chunks);
        }
    }
    out
}

/// Every item of the entity at every snapshot, with its content.
async fn contents(repo: &Repo, entity: &str) -> BTreeMap<(String, String), Vec<u8>> {
    let index = repo.load_index().await.expect("index");
    let mut out = BTreeMap::new();
    for key in repo.snapshot_keys(entity).await.expect("keys") {
        for (item, entry) in repo.view(entity, Some(&key)).await.expect("view") {
            let bytes = repo.read(&entry, &index).await.expect("read");
            out.insert((key.clone(), item), bytes);
        }
    }
    out
}

/// 32 bytes (nonce and the start of the ciphertext) of each chunk's sealed blob, wherever stored.
async fn fingerprints(store: &MemoryStore, repo: &Repo, ids: &HashSet<ChunkId>) -> HashSet<[u8; 32]> {
    let mut out = HashSet::new();
    for key in store.keys().into_iter().filter(|k| k.contains("/packs/")) {
        let bytes = store.get(&key).await.expect("pack");
        for blob in repo.pack_header(&key, &bytes).expect("header").blobs {
            if ids.contains(&blob.id) {
                let start = usize::try_from(blob.offset).expect("offset");
                let mut f = [0u8; 32];
                f.copy_from_slice(&bytes[start + 1..start + 33]);
                out.insert(f);
            }
        }
    }
    out
}

/// What must hold after a purge of `ent_a`: no pack header lists a doomed
/// chunk, no object holds a doomed chunk's sealed bytes, nothing of `ent_a`
/// is left, and the repository checks.
async fn assert_erased(store: &MemoryStore, repo: &Repo, doomed: &HashSet<ChunkId>, sealed: &HashSet<[u8; 32]>) {
    for key in store.keys() {
        let bytes = store.get(&key).await.expect("get");
        if key.contains("/packs/") {
            let header = repo.pack_header(&key, &bytes).expect("header");
            assert!(
                !header.blobs.iter().any(|b| doomed.contains(&b.id)),
                "{key} still lists a doomed chunk"
            );
        }
        assert!(
            !bytes.windows(32).any(|w| sealed.contains(w)),
            "{key} holds a doomed chunk's sealed bytes"
        );
        for part in ["/snapshots/ent_a/", "/catalog/ent_a/", "/work/ent_a/", "/views/ent_a/"] {
            assert!(!key.contains(part), "{key} is left");
        }
    }
    let check = repo.check().await.expect("check passes");
    assert_eq!(check.snapshots, 2, "ent_b's snapshots only");
    assert!(repo.snapshot_keys("ent_a").await.expect("keys").is_empty());
}

#[tokio::test]
async fn purge_erases_only_the_chunks_no_other_entity_uses() {
    let store = Arc::new(MemoryStore::default());
    let repo = seed(store.clone()).await;
    let a = chunks_of(&repo, "ent_a").await;
    let b = chunks_of(&repo, "ent_b").await;
    let doomed: HashSet<ChunkId> = a.difference(&b).copied().collect();
    let shared: HashSet<ChunkId> = a.intersection(&b).copied().collect();
    assert!(shared.len() >= 10, "the attachment is shared: {} chunks", shared.len());
    assert!(
        doomed.len() >= 10,
        "each has content of its own: {} chunks",
        doomed.len()
    );
    let sealed = fingerprints(&store, &repo, &doomed).await;
    assert_eq!(sealed.len(), doomed.len());
    let b_before = contents(&repo, "ent_b").await;
    assert_eq!(b_before.len(), 2 + 3, "two items, then three");
    let views_of_b: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.contains("/views/ent_b/"))
        .collect();

    let plan = repo.purge_plan("ent_a").await.expect("plan");
    assert_eq!(
        (
            plan.snapshots,
            plan.segments,
            plan.items,
            plan.chunks_doomed,
            plan.chunks_shared
        ),
        (2, 2, 3, doomed.len() as u64, shared.len() as u64)
    );
    assert!(plan.stored_bytes > 200_000, "{plan:?}");
    let logical = mail("alice", 1, &random_bytes(1, 400_000)).len() + 200_000 + 80_000;
    assert_eq!(
        plan.logical_bytes, logical as u64,
        "every version of every item: {plan:?}"
    );

    let report = repo.purge_entity("ent_a").await.expect("purge");
    assert_eq!(report.snapshots_deleted, 2);
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(report.items_deleted, 3);
    assert_eq!(report.chunks_deleted, doomed.len() as u64);
    assert_eq!(report.chunks_kept, shared.len() as u64);
    // ent_a's first pack held the attachment too: rewritten; its second held only a3: deleted.
    assert_eq!((report.packs_rewritten, report.packs_deleted), (1, 2), "{report:?}");
    assert_eq!(report.indexes_replaced, 2, "{report:?}");
    assert_eq!(report.other_objects_deleted, 2, "the working state and the history");
    assert!(
        report.bytes_before - report.bytes_after >= plan.stored_bytes,
        "{report:?} {plan:?}"
    );
    assert_eq!(
        report.bytes_after,
        store.total_bytes() as u64,
        "the account's objects are the store's"
    );

    assert_erased(&store, &repo, &doomed, &sealed).await;
    // The shared chunks are still there, indexed in packs that exist.
    let index = repo.load_index().await.expect("index");
    for id in &shared {
        let (pack, _) = index.get(id).expect("shared chunk indexed");
        assert!(store.get(pack).await.is_ok(), "{pack}");
    }
    assert_eq!(
        contents(&repo, "ent_b").await,
        b_before,
        "ent_b reads back byte for byte"
    );
    let views_after: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.contains("/views/ent_b/"))
        .collect();
    assert_eq!(views_after, views_of_b, "ent_b's history is left alone");

    // A second purge finds nothing left to do.
    let again = repo.purge_entity("ent_a").await.expect("again");
    assert_eq!(
        PurgeReport {
            bytes_before: 0,
            bytes_after: 0,
            ..again.clone()
        },
        PurgeReport::default()
    );
    assert_eq!(again.bytes_before, again.bytes_after);
}

#[tokio::test]
async fn purging_an_entity_without_data_changes_nothing() {
    let store = Arc::new(MemoryStore::default());
    let repo = seed(store.clone()).await;
    let before: Vec<(String, Bytes)> = {
        let mut v = Vec::new();
        for key in store.keys() {
            let bytes = store.get(&key).await.expect("get");
            v.push((key, bytes));
        }
        v
    };
    let plan = repo.purge_plan("ent_none").await.expect("plan");
    assert_eq!(plan, PurgePlan::default());
    let report = repo.purge_entity("ent_none").await.expect("purge");
    assert_eq!(report.bytes_before, report.bytes_after);
    assert_eq!(
        PurgeReport {
            bytes_before: 0,
            bytes_after: 0,
            ..report
        },
        PurgeReport::default()
    );
    let mut after = Vec::new();
    for key in store.keys() {
        let bytes = store.get(&key).await.expect("get");
        after.push((key, bytes));
    }
    assert_eq!(before, after, "not one object changed");
    assert!(repo.purge_entity("ent/../a").await.is_err(), "not an entity id");
}

/// A store that fails its `fail_at`-th write or delete (1-based), as a crash there would stop the purge.
struct FailingStore {
    inner: Arc<MemoryStore>,
    fail_at: usize,
    mutations: AtomicUsize,
    done: Mutex<Vec<String>>,
}

impl FailingStore {
    fn new(inner: Arc<MemoryStore>, fail_at: usize) -> Self {
        Self {
            inner,
            fail_at,
            mutations: AtomicUsize::new(0),
            done: Mutex::new(Vec::new()),
        }
    }

    fn mutate(&self, key: &str) -> Result<(), StoreError> {
        if self.mutations.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(StoreError::Unavailable(format!("injected failure at {key}")));
        }
        self.done.lock().expect("lock").push(key.to_string());
        Ok(())
    }
}

#[async_trait]
impl BlobStore for FailingStore {
    async fn put_new(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.mutate(key)?;
        self.inner.put_new(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list_sized(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.mutate(key)?;
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn a_purge_interrupted_at_any_step_checks_and_finishes_when_run_again() {
    // How many writes and deletes an uninterrupted purge makes.
    let store = Arc::new(MemoryStore::default());
    seed(store.clone()).await;
    let counting = Arc::new(FailingStore::new(store.clone(), usize::MAX));
    let repo = Repo::open(counting.clone(), &KEYS, ACCOUNT).await.expect("open");
    repo.purge_entity("ent_a").await.expect("purge");
    let steps = counting.done.lock().expect("lock").clone();
    assert!(steps.len() >= 10, "{steps:?}");

    for fail_at in 1..=steps.len() {
        let store = Arc::new(MemoryStore::default());
        let repo = seed(store.clone()).await;
        let a = chunks_of(&repo, "ent_a").await;
        let b = chunks_of(&repo, "ent_b").await;
        let doomed: HashSet<ChunkId> = a.difference(&b).copied().collect();
        let sealed = fingerprints(&store, &repo, &doomed).await;
        let b_before = contents(&repo, "ent_b").await;

        let failing = Arc::new(FailingStore::new(store.clone(), fail_at));
        let interrupted = Repo::open(failing.clone(), &KEYS, ACCOUNT).await.expect("open");
        let err = interrupted.purge_entity("ent_a").await.expect_err("interrupted");
        assert!(err.is_retryable(), "{err}");
        let at = &steps[fail_at - 1];

        // Whatever step it stopped at, the repository checks and ent_b reads back.
        repo.check()
            .await
            .unwrap_or_else(|e| panic!("check after stopping at write {fail_at} ({at}): {e}"));
        assert_eq!(contents(&repo, "ent_b").await, b_before, "stopped at {at}");
        // Once the purge's index exists, the loaded index sends readers only to packs that stay.
        let purge_index = store.keys().into_iter().any(|k| k.contains("/index/~purge-"));
        let read_from: HashSet<String> = if purge_index {
            let index = repo.load_index().await.expect("index");
            b.iter().map(|id| index[id].0.to_string()).collect()
        } else {
            HashSet::new()
        };

        let report = repo
            .purge_entity("ent_a")
            .await
            .unwrap_or_else(|e| panic!("rerun after stopping at write {fail_at} ({at}): {e}"));
        assert!(report.chunks_deleted <= doomed.len() as u64);
        assert_erased(&store, &repo, &doomed, &sealed).await;
        assert_eq!(contents(&repo, "ent_b").await, b_before, "stopped at {at}");
        for pack in &read_from {
            assert!(store.get(pack).await.is_ok(), "stopped at {at}: {pack} was deleted");
        }
    }
}
