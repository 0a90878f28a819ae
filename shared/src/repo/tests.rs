use super::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

async fn repo() -> (Arc<MemoryStore>, Repo) {
    let store = Arc::new(MemoryStore::default());
    let repo = Repo::open(store.clone(), &TestKeys([7u8; 32]), "acct_1")
        .await
        .expect("open");
    (store, repo)
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

#[tokio::test]
async fn items_read_back_byte_for_byte() {
    let (_, repo) = repo().await;
    let items: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("small".into(), b"From: a@b\r\nSubject: hi\r\n\r\nhello".to_vec()),
        ("large".into(), random_bytes(1, 3 * 1024 * 1024 + 17)),
        ("text".into(), "line of mail text\r\n".repeat(20_000).into_bytes()),
    ];
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    for (id, content) in &items {
        w.add_item(id, Change::Added, json!({"subject": id}), &content[..])
            .await
            .expect("add");
    }
    let (_, snapshot) = w.commit(false).await.expect("commit");
    assert_eq!(snapshot.counts.added, 4);
    let view = repo.view("ent_1", None).await.expect("view");
    let index = repo.load_index().await.expect("index");
    for (id, content) in &items {
        let entry = &view[id];
        assert_eq!(entry.size, content.len() as u64);
        assert_eq!(&repo.read(entry, &index).await.expect("read"), content, "{id}");
    }
    assert_eq!(repo.check().await.expect("check").items, 4);
}

#[tokio::test]
async fn a_shared_attachment_is_stored_once() {
    let (store, repo) = repo().await;
    let attachment = random_bytes(2, 1024 * 1024);
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    for i in 0..50 {
        let mut message = format!("From: sender{i}@x\r\nSubject: report {i}\r\n\r\n").into_bytes();
        message.extend_from_slice(&attachment);
        w.add_item(&format!("m{i}"), Change::Added, json!({}), &message[..])
            .await
            .expect("add");
    }
    w.commit(false).await.expect("commit");
    let stored = store.total_bytes();
    // Each copy costs at most the chunk where its own headers meet the attachment.
    let bound = attachment.len() + 50 * 2 * CHUNK_AVG_BYTES as usize;
    assert!(
        stored < bound,
        "50 copies of 1 MiB stored in {stored} bytes (bound {bound})"
    );
}

#[tokio::test]
async fn an_unchanged_run_writes_no_pack_and_deletions_keep_history() {
    let (store, repo) = repo().await;
    let content = random_bytes(3, 200_000);
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    w.add_item("m1", Change::Added, json!({"folder": "Inbox"}), &content[..])
        .await
        .expect("add");
    w.add_item("m2", Change::Added, json!({"folder": "Inbox"}), &b"second"[..])
        .await
        .expect("add");
    let (first, _) = w.commit(false).await.expect("commit");
    let packs_before = store.keys().iter().filter(|k| k.contains("/packs/")).count();

    let mut w = repo.writer("ent_1", "run_2").await.expect("writer");
    w.add_item("m1", Change::Changed, json!({"folder": "Archive"}), &content[..])
        .await
        .expect("same content again");
    w.delete_item("m2");
    let (_, snapshot) = w.commit(false).await.expect("commit");
    assert_eq!(
        (
            snapshot.counts.packs,
            snapshot.counts.new_chunks,
            snapshot.counts.stored_bytes
        ),
        (0, 0, 0),
        "nothing new stored"
    );
    assert!(snapshot.index.is_none());
    assert_eq!(
        store.keys().iter().filter(|k| k.contains("/packs/")).count(),
        packs_before
    );

    let then = repo.view("ent_1", Some(&first)).await.expect("view");
    let now = repo.view("ent_1", None).await.expect("view");
    assert!(
        then.contains_key("m2") && !now.contains_key("m2"),
        "the earlier snapshot still holds the deleted item"
    );
    assert_eq!(now["m1"].meta["folder"], "Archive");
    repo.check().await.expect("check");
}

#[tokio::test]
async fn nothing_is_readable_in_plaintext() {
    let (store, repo) = repo().await;
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    let mime = b"From: ceo@contoso.test\r\nSubject: Confidential merger plan\r\n\r\nThe body of the secret".to_vec();
    w.add_item(
        "m1",
        Change::Added,
        json!({"subject": "Confidential merger plan", "from": "ceo@contoso.test"}),
        &mime[..],
    )
    .await
    .expect("add");
    w.commit(false).await.expect("commit");
    for key in store.keys() {
        let body = store.get(&key).await.expect("get");
        for needle in [&b"Confidential"[..], b"ceo@contoso", b"secret"] {
            assert!(
                !body.windows(needle.len()).any(|w| w == needle),
                "{key} holds plaintext"
            );
        }
    }
}

#[tokio::test]
async fn tampering_is_detected_and_names_the_object() {
    let (store, repo) = repo().await;
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    w.add_item("m1", Change::Added, json!({}), &random_bytes(4, 100_000)[..])
        .await
        .expect("add");
    w.commit(false).await.expect("commit");
    let pack = store.keys().into_iter().find(|k| k.contains("/packs/")).expect("pack");
    store.tamper(&pack, |b| b[10] ^= 0x40);
    let index = repo.load_index().await.expect("index");
    let entry = repo.view("ent_1", None).await.expect("view")["m1"].clone();
    match repo.read(&entry, &index).await {
        Err(RepoError::Corrupt { object, .. }) => assert_eq!(object, pack),
        other => panic!("expected corruption of {pack}, got {other:?}"),
    }
    assert!(matches!(repo.check().await, Err(RepoError::Corrupt { .. })));
}

#[tokio::test]
async fn another_account_cannot_read_the_repository() {
    let (store, repo) = repo().await;
    let mut w = repo.writer("ent_1", "run_1").await.expect("writer");
    w.add_item("m1", Change::Added, json!({}), &b"x"[..])
        .await
        .expect("add");
    w.commit(false).await.expect("commit");
    // The same store and master key, another account: its own key, nothing of acct_1 visible.
    let other = Repo::open(store.clone(), &TestKeys([7u8; 32]), "acct_2")
        .await
        .expect("open");
    assert!(other.view("ent_1", None).await.expect("view").is_empty());
    assert!(other.load_index().await.expect("index").is_empty());
}
