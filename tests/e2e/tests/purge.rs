//! Right to erasure through the local stack (issue 5): two mailboxes share an
//! attachment; one is purged through the two-step API. Afterwards no version
//! of any object of the bucket holds a chunk that only the purged mailbox
//! used (pack headers and raw bytes), the repository checks, the other
//! mailbox reads and exports byte for byte at every snapshot, the purged one
//! has no snapshots, and its export is gone. Only the owner may purge, with
//! a valid token, and not while a backup of the account runs.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use strata::model::{AccountId, Role};
use strata::repo::{ChunkId, Repo};
use strata::state::RequestClaim;
use strata_e2e::{Api, World, WorldOptions};

const ADELE: &str = "adele.vance@contoso.onmicrosoft.com";
const ALEX: &str = "alex.wilber@contoso.onmicrosoft.com";

fn bytes(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8 ^ (seed as u8))
        .collect()
}

/// Every chunk the entity's items use, every version.
async fn chunks_of(repo: &Repo, entity: &str) -> HashSet<ChunkId> {
    let mut out = HashSet::new();
    for (_, snapshot) in repo.snapshots(entity).await.expect("snapshots") {
        for entry in repo.segment(&snapshot.catalog).await.expect("segment").entries {
            out.extend(entry.chunks);
        }
    }
    out
}

/// The SHA-256 of every item of the entity at every snapshot, read from the repository.
async fn contents(repo: &Repo, entity: &str) -> BTreeMap<(String, String), String> {
    let index = repo.load_index().await.expect("index");
    let mut out = BTreeMap::new();
    for key in repo.snapshot_keys(entity).await.expect("keys") {
        for (item, entry) in repo.view(entity, Some(&key)).await.expect("view") {
            let content = repo.read(&entry, &index).await.expect("read");
            out.insert((key.clone(), item), hex::encode(Sha256::digest(&content)));
        }
    }
    out
}

/// Every version of every object of the bucket: key, version id, current or not, delete marker or not.
async fn all_versions(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String, bool, bool)> {
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .expect("list versions");
        for v in page.versions() {
            out.push((
                v.key().unwrap_or_default().to_string(),
                v.version_id().unwrap_or_default().to_string(),
                v.is_latest().unwrap_or(false),
                false,
            ));
        }
        for m in page.delete_markers() {
            out.push((
                m.key().unwrap_or_default().to_string(),
                m.version_id().unwrap_or_default().to_string(),
                m.is_latest().unwrap_or(false),
                true,
            ));
        }
        if page.is_truncated() != Some(true) {
            return out;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, version: Option<&str>) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

async fn export(world: &World, admin: &Api, entity: &str) -> serde_json::Value {
    let job = world
        .run_job(admin, "/v1/exports", json!({"selections": [{"entity_id": entity}]}))
        .await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["failed"], 0, "{job}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_erases_what_only_the_mailbox_used_and_keeps_the_rest() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    // The same large attachment sent to both, and content of each one's own.
    let shared = bytes(1, 500_000);
    world
        .fake
        .add_message(ADELE, "Inbox", strata_e2e::mail_with_attachment(1, &shared))
        .expect("seed");
    world
        .fake
        .add_message(ADELE, "Inbox", strata_e2e::plain_mail(11, 150_000))
        .expect("seed");
    world
        .fake
        .add_message(ADELE, "Inbox", strata_e2e::mail_with_attachment(3, &bytes(3, 200_000)))
        .expect("seed");
    world
        .fake
        .add_message(ALEX, "Inbox", strata_e2e::mail_with_attachment(2, &shared))
        .expect("seed");
    world
        .fake
        .add_message(ALEX, "Inbox", strata_e2e::plain_mail(21, 120_000))
        .expect("seed");

    let onboarded = world.onboard_active().await.expect("onboard");
    let (owner, account) = (onboarded.admin, onboarded.account_id);
    let adele = owner.entity_id("mailbox", ADELE).await.expect("adele");
    let alex = owner.entity_id("mailbox", ALEX).await.expect("alex");
    assert_eq!(world.back_up(&owner, &adele).await["status"], "ok");
    assert_eq!(world.back_up(&owner, &alex).await["status"], "ok");
    // A second snapshot of Adele's with one more message of her own.
    world
        .fake
        .add_message(ADELE, "Inbox", strata_e2e::plain_mail(12, 60_000))
        .expect("seed");
    assert_eq!(world.back_up(&owner, &adele).await["added"], 1);
    let adele_export = export(&world, &owner, &adele).await;
    let adele_zip = adele_export["result"]["key"].as_str().expect("zip key").to_string();
    export(&world, &owner, &alex).await;

    // What only Adele's items use, through the real repository, and those chunks' sealed bytes.
    let sdk = world.stack.sdk_config();
    let s3 = strata_local::provision::s3_client(&sdk);
    let bucket = world.stack.physical_id("DataBucket").expect("bucket").to_string();
    let repo = world.repo(&account).await;
    let adele_chunks = chunks_of(&repo, &adele).await;
    let alex_chunks = chunks_of(&repo, &alex).await;
    let doomed: HashSet<ChunkId> = adele_chunks.difference(&alex_chunks).copied().collect();
    let kept = adele_chunks.intersection(&alex_chunks).count();
    assert!(kept >= 10, "the attachment's chunks are shared: {kept}");
    assert!(doomed.len() >= 10, "Adele has content of her own: {}", doomed.len());
    let index = repo.load_index().await.expect("index");
    let mut sealed: HashSet<[u8; 32]> = HashSet::new();
    for id in &doomed {
        let (pack, at) = &index[id];
        let pack = get(&s3, &bucket, pack, None).await;
        let start = usize::try_from(at.offset).expect("offset");
        sealed.insert(pack[start + 1..start + 33].try_into().expect("32 bytes"));
    }
    let alex_before = contents(&repo, &alex).await;
    assert_eq!(alex_before.len(), 2, "{alex_before:?}");
    let alex_mailbox = world.fake.mailbox(ALEX).expect("mailbox");
    for ((_, item), sha) in &alex_before {
        let m = alex_mailbox
            .items
            .iter()
            .find(|m| &m.id == item)
            .expect("in the source");
        assert_eq!(sha, &hex::encode(Sha256::digest(&m.mime)));
    }

    // Only the owner: another admin (every permission an admin can have) is refused.
    let other = world
        .admin_with_role(&account, "it.admin@contoso.test", Role::Admin)
        .await
        .expect("second admin");
    let (status, body) = other
        .post(&format!("/v1/entities/{adele}/purge"), json!({}))
        .await
        .expect("purge");
    assert_eq!(status, 403, "{body}");

    // Not while the mailbox is active.
    let (status, body) = owner
        .post(&format!("/v1/entities/{adele}/purge"), json!({}))
        .await
        .expect("purge");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("entity_active")),
        "{body}"
    );
    let (status, body) = owner
        .post(&format!("/v1/entities/{adele}/pause"), json!({}))
        .await
        .expect("pause");
    assert_eq!(status, 200, "{body}");

    // Step one: what would go, and the token.
    let (status, asked) = owner
        .post(&format!("/v1/entities/{adele}/purge"), json!({}))
        .await
        .expect("purge");
    assert_eq!(status, 200, "{asked}");
    let plan = &asked["would_delete"];
    assert_eq!(plan["snapshots"], 2, "{asked}");
    assert_eq!(plan["items"], 4, "{asked}");
    assert_eq!(plan["chunks_doomed"], doomed.len(), "{asked}");
    assert_eq!(plan["chunks_shared"], kept, "{asked}");
    assert!(plan["stored_bytes"].as_u64().unwrap_or(0) > 10_000, "{asked}");
    let token = asked["confirmation_token"].as_str().expect("token").to_string();
    let confirm = format!("/v1/entities/{adele}/purge/confirm");

    // Step two, refused: another admin with the token, a wrong token.
    let (status, body) = other.post(&confirm, json!({"token": token})).await.expect("confirm");
    assert_eq!(status, 403, "{body}");
    let (status, body) = owner
        .post(&confirm, json!({"token": format!("{token}x")}))
        .await
        .expect("confirm");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_token")),
        "{body}"
    );
    let state = world.state_store();
    let account_id = AccountId(account.clone());
    let lease = format!("lease-backup-{alex}");
    let claim = state
        .claim_request(&account_id, &lease, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claim, RequestClaim::Claimed, "a backup of Alex holds its lease");

    // Step two: a purge job, which waits while the backup of Alex runs.
    let (status, job) = owner.post(&confirm, json!({"token": token})).await.expect("confirm");
    assert_eq!((status, job["kind"].as_str()), (202, Some("purge")), "{job}");
    let job_id = job["id"].as_str().expect("job id").to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, waiting) = owner.get(&format!("/v1/jobs/{job_id}")).await.expect("job");
    assert_eq!(waiting["status"], "running", "{waiting}");
    assert_eq!(
        repo.snapshot_keys(&adele).await.expect("keys").len(),
        2,
        "nothing is deleted while a backup runs"
    );
    state
        .finish_request(&account_id, &lease, false)
        .await
        .expect("released");
    let finished = world.wait_job(&owner, &job_id).await.expect("purge job");
    assert_eq!(
        (finished["status"].as_str(), finished["done"].as_u64()),
        (Some("done"), Some(1)),
        "{finished}"
    );
    let done = finished["outcome"].clone();
    let report = &done["repository"];
    assert_eq!(report["snapshots_deleted"], 2, "{done}");
    assert_eq!(report["chunks_deleted"], doomed.len(), "{done}");
    assert_eq!(report["chunks_kept"], kept, "{done}");
    assert!(report["packs_deleted"].as_u64().unwrap_or(0) >= 2, "{done}");
    assert!(
        report["bytes_after"].as_u64() < report["bytes_before"].as_u64(),
        "{done}"
    );
    assert_eq!(done["exports_deleted"], 1, "{done}");
    assert!(done["versions_erased"].as_u64().unwrap_or(0) > 5, "{done}");
    assert_eq!(done["versions_retained"], 0, "{done}");
    let (status, body) = owner.post(&confirm, json!({"token": token})).await.expect("confirm");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("no_purge_requested")),
        "a token confirms once: {body}"
    );
    // The audit log holds the request and the purge, once each, by the owner;
    // the refusals are there too.
    let (_, log) = owner
        .get(&format!("/v1/audit?target={adele}&limit=100"))
        .await
        .expect("audit");
    let records = log["items"].as_array().expect("items").clone();
    let count = |action: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("purge", "success"), 1, "{log}");
    assert_eq!(count("purge_request", "success"), 1, "{log}");
    assert_eq!(count("purge", "denied"), 1, "the other admin: {log}");
    let purge = records
        .iter()
        .find(|r| r["action"] == "purge" && r["outcome"] == "success")
        .expect("purge record");
    assert_eq!(purge["details"]["job_id"], job_id.as_str(), "{purge}");

    // No version of any object holds a doomed chunk's sealed bytes; the
    // account keeps no old versions or delete markers; no pack lists one.
    let versions = all_versions(&s3, &bucket).await;
    assert!(
        versions.iter().filter(|(k, ..)| k.contains("/packs/")).count() >= 2,
        "Alex's pack and the rewritten one: {versions:?}"
    );
    for (key, version, current, marker) in &versions {
        if key.starts_with(&format!("{account}/")) || key.starts_with(&format!("exports/{account}/")) {
            assert!(
                *current && !*marker,
                "{key} keeps an old version or a delete marker ({version})"
            );
        }
        if *marker {
            continue;
        }
        let body = get(&s3, &bucket, key, Some(version)).await;
        assert!(
            !body.windows(32).any(|w| sealed.contains(w)),
            "{key} ({version}) holds a doomed chunk"
        );
        if key.starts_with(&format!("{account}/packs/")) {
            let blobs = repo.pack_blobs(key).await.expect("pack header");
            assert!(
                !blobs.iter().any(|b| doomed.contains(&b.id)),
                "{key} lists a doomed chunk"
            );
        }
        assert!(
            !key.contains(&format!("/{adele}/")),
            "{key} of the purged mailbox is left"
        );
    }
    assert!(
        !versions.iter().any(|(k, ..)| *k == adele_zip),
        "the export of the purged mailbox is gone"
    );

    // The repository checks; Alex reads back byte for byte at every snapshot, and exports.
    let check = repo.check().await.expect("check passes");
    assert_eq!(check.snapshots, 1, "{check:?}");
    assert_eq!(contents(&repo, &alex).await, alex_before);
    export(&world, &owner, &alex).await;

    // The purged mailbox: no snapshots, not protected, not found by search, its export link expired.
    let (status, snaps) = owner
        .get(&format!("/v1/entities/{adele}/snapshots"))
        .await
        .expect("snapshots");
    assert_eq!(status, 200, "{snaps}");
    assert_eq!(snaps["items"], json!([]), "{snaps}");
    let (_, entity) = owner.get(&format!("/v1/entities/{adele}")).await.expect("entity");
    assert_eq!(entity["status"], "discovered", "{entity}");
    let (status, found) = owner
        .get("/v1/search?kind=mailbox&subject=Report")
        .await
        .expect("search");
    assert_eq!(status, 200, "{found}");
    let hits: Vec<&str> = found["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|f| f["entity_id"].as_str())
        .collect();
    assert!(
        hits.contains(&alex.as_str()) && !hits.contains(&adele.as_str()),
        "{found}"
    );
    let (status, body) = owner
        .get(&format!(
            "/v1/jobs/{}/download",
            adele_export["id"].as_str().expect("id")
        ))
        .await
        .expect("download");
    assert_eq!(status, 410, "{body}");
    assert!(
        state
            .cursor(&account_id, &strata::model::EntityId(adele.clone()))
            .await
            .expect("cursor")
            .is_none(),
        "the cursor goes with the data"
    );
    world.stop().await;
}
