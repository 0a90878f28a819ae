//! Point-in-time browse and granular search over the catalog (issue 4).
//!
//! The catalog is a chain of segments, one per run; replaying it for every
//! question would read every segment ever written. Instead each entity has a
//! *history*: every version of every item (its metadata and content hash)
//! with the range of snapshots that hold it. A history is a derived object
//! (`<account>/views/<entity>/<snapshot count>`, sealed like the rest):
//! rebuilt from the segments when missing or stale, extended with the
//! segments of newer snapshots, and saved again. The view at snapshot `k` is
//! the versions with `first <= k < until`. Search scans histories (never
//! DynamoDB), keeping only the page it will answer.

use crate::repo::{Change, Repo, RepoError, SnapshotCounts};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

pub const HISTORY_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("snapshot {0} not found")]
    NoSnapshot(String),
    #[error("invalid query: {0}")]
    Invalid(String),
}

/// One snapshot as the browse API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// The id to browse it by (`<time>-<run>`).
    pub id: String,
    pub time: DateTime<Utc>,
    /// The run stopped early and a continuation followed.
    pub partial: bool,
    /// Items in the entity as of this snapshot.
    pub items: u64,
    #[schema(value_type = Object)]
    pub counts: SnapshotCounts,
}

/// One version of one item: constant metadata and content over a range of snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    #[serde(rename = "i")]
    pub item: String,
    /// Index into [`History::folders`].
    #[serde(rename = "f")]
    pub folder: u32,
    #[serde(rename = "s", default)]
    pub subject: String,
    #[serde(rename = "fr", default)]
    pub from: String,
    #[serde(rename = "to", default)]
    pub to: Vec<String>,
    /// Received time, seconds since the epoch.
    #[serde(rename = "r", default)]
    pub received: Option<i64>,
    #[serde(rename = "z")]
    pub size: u64,
    #[serde(rename = "a", default)]
    pub attachments: bool,
    /// SHA-256 of the content.
    #[serde(rename = "h")]
    pub sha256: [u8; 32],
    /// Index of the first snapshot that holds this version.
    #[serde(rename = "b")]
    pub first: u32,
    /// Index of the first snapshot that no longer holds it (changed, moved or deleted).
    #[serde(rename = "e", default)]
    pub until: Option<u32>,
}

impl Version {
    fn alive_at(&self, k: u32) -> bool {
        self.first <= k && self.until.is_none_or(|u| u > k)
    }
}

/// Every version of every item of an entity, and the snapshots they span.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub version: u32,
    pub entity: String,
    /// Snapshot keys, oldest first (what this history covers).
    pub keys: Vec<String>,
    pub snapshots: Vec<SnapshotInfo>,
    /// Folder paths, each once: rows name them by index.
    pub folders: Vec<String>,
    pub rows: Vec<Version>,
}

fn meta_str(meta: &Value, key: &str) -> String {
    meta.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}

impl History {
    /// Appends one snapshot's segment.
    fn apply(&mut self, key: String, snapshot: &crate::repo::Snapshot, segment: crate::repo::CatalogSegment) {
        let k = u32::try_from(self.snapshots.len()).unwrap_or(u32::MAX);
        let mut open: HashMap<&str, usize> = HashMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            if row.until.is_none() {
                open.insert(row.item.as_str(), i);
            }
        }
        let mut folder_index: HashMap<String, u32> = self
            .folders
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let mut closing = Vec::new();
        let mut new_rows = Vec::new();
        for entry in segment.entries {
            if let Some(i) = open.remove(entry.item.as_str()) {
                closing.push(i);
            }
            if entry.change == Change::Deleted {
                continue;
            }
            let meta = &entry.meta;
            let path = meta_str(meta, "folder");
            let folder = match folder_index.get(&path) {
                Some(i) => *i,
                None => {
                    let i = u32::try_from(self.folders.len()).unwrap_or(u32::MAX);
                    self.folders.push(path.clone());
                    folder_index.insert(path, i);
                    i
                }
            };
            let mut sha256 = [0u8; 32];
            let _ = hex::decode_to_slice(&entry.sha256, &mut sha256);
            new_rows.push(Version {
                folder,
                subject: meta_str(meta, "subject"),
                from: meta_str(meta, "from"),
                to: meta
                    .get("to")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default(),
                received: meta.get("received").and_then(Value::as_str).and_then(parse_time),
                attachments: meta.get("has_attachments").and_then(Value::as_bool).unwrap_or(false),
                size: entry.size,
                sha256,
                item: entry.item,
                first: k,
                until: None,
            });
        }
        drop(open);
        for i in closing {
            self.rows[i].until = Some(k);
        }
        self.rows.extend(new_rows);
        let items = self.rows.iter().filter(|r| r.until.is_none()).count() as u64;
        let id = key.rsplit('/').next().unwrap_or_default().to_string();
        self.keys.push(key);
        self.snapshots.push(SnapshotInfo {
            id,
            time: snapshot.time,
            partial: snapshot.partial,
            items,
            counts: snapshot.counts.clone(),
        });
    }

    /// The index of a snapshot by id; the latest when `None`.
    pub fn snapshot_index(&self, id: Option<&str>) -> Result<u32, BrowseError> {
        let index = match id {
            None | Some("latest") => self.snapshots.len().checked_sub(1),
            Some(id) => self.snapshots.iter().position(|s| s.id == id),
        };
        index
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .ok_or_else(|| BrowseError::NoSnapshot(id.unwrap_or("latest").to_string()))
    }

    /// Folders as of snapshot `k`, with their item counts (parents included).
    /// The path of a row's folder.
    pub fn folder_of(&self, row: &Version) -> &str {
        self.folders.get(row.folder as usize).map_or("", String::as_str)
    }

    pub fn folders(&self, k: u32) -> Vec<FolderInfo> {
        let mut out: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for row in self.rows.iter().filter(|r| r.alive_at(k)) {
            let e = out.entry(self.folder_of(row)).or_default();
            e.0 += 1;
            e.1 += row.size;
            let mut path = self.folder_of(row);
            while let Some((parent, _)) = path.rsplit_once('/') {
                out.entry(parent).or_default();
                path = parent;
            }
        }
        out.into_iter()
            .map(|(path, (items, bytes))| FolderInfo {
                path: path.to_string(),
                items,
                bytes,
            })
            .collect()
    }

    /// The items of a folder as of snapshot `k`, newest first.
    pub fn items_in(&self, k: u32, folder: &str) -> Vec<&Version> {
        let mut rows: Vec<&Version> = self
            .rows
            .iter()
            .filter(|r| r.alive_at(k) && self.folder_of(r) == folder)
            .collect();
        rows.sort_by(|a, b| b.received.cmp(&a.received).then_with(|| a.item.cmp(&b.item)));
        rows
    }
}

/// A folder of the tree at a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FolderInfo {
    pub path: String,
    /// Items directly in this folder.
    pub items: u64,
    pub bytes: u64,
}

/// The entity's history, brought up to date (and saved when it moved on).
pub async fn history(repo: &Repo, entity: &str) -> Result<History, BrowseError> {
    let keys = repo.snapshot_keys(entity).await?;
    history_from(repo, entity, keys).await
}

/// Histories kept between requests of a warm API function: a question
/// costs a listing of the entity's snapshots when nothing changed. Bounded
/// by rows (the oldest entries go first); keyed by account and entity.
pub struct HistoryCache {
    max_rows: usize,
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<String, std::sync::Arc<History>>,
    order: std::collections::VecDeque<String>,
    rows: usize,
}

impl HistoryCache {
    pub fn new(max_rows: usize) -> Self {
        Self {
            max_rows,
            inner: std::sync::Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entity's history: from memory when its snapshots did not change.
    pub async fn get(&self, repo: &Repo, entity: &str) -> Result<std::sync::Arc<History>, BrowseError> {
        let key = format!("{}/{entity}", repo.account());
        let keys = repo.snapshot_keys(entity).await?;
        if let Some(h) = self.lock().map.get(&key).filter(|h| h.keys == keys) {
            return Ok(h.clone());
        }
        let history = std::sync::Arc::new(history_from(repo, entity, keys).await?);
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.rows -= old.rows.len();
            inner.order.retain(|k| *k != key);
        }
        if history.rows.len() <= self.max_rows {
            while inner.rows + history.rows.len() > self.max_rows {
                let Some(oldest) = inner.order.pop_front() else { break };
                if let Some(old) = inner.map.remove(&oldest) {
                    inner.rows -= old.rows.len();
                }
            }
            inner.rows += history.rows.len();
            inner.order.push_back(key.clone());
            inner.map.insert(key, history.clone());
        }
        Ok(history)
    }
}

async fn history_from(repo: &Repo, entity: &str, keys: Vec<String>) -> Result<History, BrowseError> {
    let mut history = match repo.latest_derived::<History>(entity).await {
        Ok(Some((_, h)))
            if h.version == HISTORY_VERSION
                && h.entity == entity
                && h.keys.len() <= keys.len()
                && keys[..h.keys.len()] == h.keys[..] =>
        {
            h
        }
        // Missing, older format, unreadable or out of step: rebuilt from the segments.
        _ => History {
            version: HISTORY_VERSION,
            entity: entity.to_string(),
            ..History::default()
        },
    };
    let covered = history.keys.len();
    for key in &keys[covered..] {
        let snapshot = repo.snapshot_at(key).await?;
        let segment = repo.segment(&snapshot.catalog).await?;
        history.apply(key.clone(), &snapshot, segment);
    }
    if history.keys.len() > covered {
        repo.put_derived(entity, &format!("{:010}", history.keys.len()), &history)
            .await?;
    }
    Ok(history)
}

/// What to look for. Text filters are case-insensitive substrings.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// One entity; all entities of `kind` (or all) when absent.
    pub entity_id: Option<String>,
    /// `mailbox`, `onedrive`, `site`.
    pub kind: Option<String>,
    /// As of this snapshot (with `entity_id`); every version ever backed up when absent.
    pub snapshot: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub subject: Option<String>,
    /// A folder path; its subfolders match too.
    pub folder: Option<String>,
    /// RFC 3339.
    pub received_after: Option<String>,
    pub received_before: Option<String>,
    pub has_attachment: Option<bool>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Free text over subject and sender.
    pub q: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// A search compiled once: lower-cased needles, parsed dates.
pub struct Matcher {
    sender: Option<String>,
    recipient: Option<String>,
    subject: Option<String>,
    folder: Option<String>,
    after: Option<i64>,
    before: Option<i64>,
    has_attachment: Option<bool>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    q: Option<String>,
}

fn contains(haystack: &str, needle: &str) -> bool {
    // Most text is ASCII: compare without allocating when possible.
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

impl Matcher {
    pub fn new(q: &SearchQuery) -> Result<Self, BrowseError> {
        let lower = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).map(|s| s.to_lowercase());
        let time = |v: &Option<String>, name: &str| {
            v.as_ref()
                .map(|s| parse_time(s).ok_or_else(|| BrowseError::Invalid(format!("{name} must be an RFC 3339 time"))))
                .transpose()
        };
        Ok(Self {
            sender: lower(&q.sender),
            recipient: lower(&q.recipient),
            subject: lower(&q.subject),
            folder: q.folder.clone().filter(|s| !s.is_empty()),
            after: time(&q.received_after, "received_after")?,
            before: time(&q.received_before, "received_before")?,
            has_attachment: q.has_attachment,
            min_size: q.min_size,
            max_size: q.max_size,
            q: lower(&q.q),
        })
    }

    /// Whether a folder path passes the folder filter (asked once per folder, not per row).
    pub fn folder_matches(&self, path: &str) -> bool {
        self.folder
            .as_ref()
            .is_none_or(|f| path == f || (path.starts_with(f.as_str()) && path.as_bytes().get(f.len()) == Some(&b'/')))
    }

    /// Whether a row matches; `folder_ok` holds [`Matcher::folder_matches`] of each folder of its history.
    pub fn matches(&self, r: &Version, folder_ok: &[bool]) -> bool {
        self.has_attachment.is_none_or(|a| r.attachments == a)
            && self.min_size.is_none_or(|m| r.size >= m)
            && self.max_size.is_none_or(|m| r.size <= m)
            && self.after.is_none_or(|t| r.received.is_some_and(|x| x >= t))
            && self.before.is_none_or(|t| r.received.is_some_and(|x| x < t))
            && folder_ok.get(r.folder as usize).copied().unwrap_or(false)
            && self.sender.as_ref().is_none_or(|s| contains(&r.from, s))
            && self.subject.as_ref().is_none_or(|s| contains(&r.subject, s))
            && self
                .recipient
                .as_ref()
                .is_none_or(|s| r.to.iter().any(|t| contains(t, s)))
            && self
                .q
                .as_ref()
                .is_none_or(|s| contains(&r.subject, s) || contains(&r.from, s))
    }
}

/// One version of a found item, with the snapshots that hold it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FoundVersion {
    pub folder: String,
    pub subject: String,
    pub size: u64,
    pub sha256: String,
    /// The first snapshot that holds it.
    pub first_snapshot: String,
    /// The last snapshot that holds it (the latest while it still exists).
    pub last_snapshot: String,
    /// How many snapshots hold it.
    pub snapshots: u32,
    /// It is in the latest snapshot.
    pub current: bool,
}

/// A found item: where it is (as of the snapshot asked, or its latest version) and every version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub entity_id: String,
    pub item: String,
    pub folder: String,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    pub received: Option<DateTime<Utc>>,
    pub size: u64,
    pub has_attachments: bool,
    pub versions: Vec<FoundVersion>,
}

impl Found {
    fn sort_key(&self) -> (std::cmp::Reverse<Option<DateTime<Utc>>>, &str, &str) {
        (std::cmp::Reverse(self.received), &self.entity_id, &self.item)
    }
}

/// Searches one history: the items with a matching version (alive at `at`
/// when given), each with all its versions.
pub fn search_history(history: &History, matcher: &Matcher, at: Option<u32>) -> Vec<Found> {
    let folder_ok: Vec<bool> = history.folders.iter().map(|f| matcher.folder_matches(f)).collect();
    let mut hits: HashMap<&str, usize> = HashMap::new();
    for (i, row) in history.rows.iter().enumerate() {
        if at.is_none_or(|k| row.alive_at(k)) && matcher.matches(row, &folder_ok) {
            // The latest matching version speaks for the item.
            hits.insert(row.item.as_str(), i);
        }
    }
    if hits.is_empty() {
        return Vec::new();
    }
    let wanted: HashSet<&str> = hits.keys().copied().collect();
    let mut versions: HashMap<&str, Vec<&Version>> = HashMap::new();
    for row in history.rows.iter().filter(|r| wanted.contains(r.item.as_str())) {
        versions.entry(row.item.as_str()).or_default().push(row);
    }
    let last = history.snapshots.len().saturating_sub(1);
    let snapshot_id = |i: usize| history.snapshots.get(i).map(|s| s.id.clone()).unwrap_or_default();
    hits.into_iter()
        .map(|(item, i)| {
            let row = &history.rows[i];
            Found {
                entity_id: history.entity.clone(),
                item: item.to_string(),
                folder: history.folder_of(row).to_string(),
                subject: row.subject.clone(),
                from: row.from.clone(),
                to: row.to.clone(),
                received: row.received.and_then(|t| DateTime::from_timestamp(t, 0)),
                size: row.size,
                has_attachments: row.attachments,
                versions: versions
                    .remove(item)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        let end = v.until.map_or(last, |u| (u as usize).saturating_sub(1));
                        FoundVersion {
                            folder: history.folder_of(v).to_string(),
                            subject: v.subject.clone(),
                            size: v.size,
                            sha256: hex::encode(v.sha256),
                            first_snapshot: snapshot_id(v.first as usize),
                            last_snapshot: snapshot_id(end),
                            snapshots: u32::try_from(end + 1).unwrap_or(u32::MAX).saturating_sub(v.first),
                            current: v.until.is_none(),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Keeps the best `keep` results, in answer order.
pub fn merge_results(mut acc: Vec<Found>, more: Vec<Found>, keep: usize) -> Vec<Found> {
    acc.extend(more);
    acc.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    acc.truncate(keep);
    acc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::repo::{CatalogEntry, CatalogSegment, Snapshot};
    use serde_json::json;

    fn entry(item: &str, change: Change, folder: &str, subject: &str, sha: &str) -> CatalogEntry {
        CatalogEntry {
            item: item.into(),
            change,
            meta: json!({"folder": folder, "subject": subject, "from": "alice@contoso.com", "to": ["bob@contoso.com"],
                         "received": "2026-11-01T10:00:00Z", "has_attachments": item == "m2"}),
            size: 100,
            sha256: sha.into(),
            chunks: vec![],
        }
    }

    fn apply(h: &mut History, n: u32, entries: Vec<CatalogEntry>) {
        let snapshot = Snapshot {
            version: 1,
            entity: "e".into(),
            run: format!("r{n}"),
            time: Utc::now(),
            partial: false,
            catalog: String::new(),
            index: None,
            counts: SnapshotCounts::default(),
        };
        let segment = CatalogSegment {
            version: 1,
            entity: "e".into(),
            run: format!("r{n}"),
            entries,
        };
        h.apply(format!("a/snapshots/e/t{n}-r{n}"), &snapshot, segment);
    }

    #[test]
    fn versions_span_the_snapshots_that_hold_them() {
        let mut h = History {
            entity: "e".into(),
            ..History::default()
        };
        apply(
            &mut h,
            0,
            vec![
                entry("m1", Change::Added, "Inbox", "Quarterly report", &"aa".repeat(32)),
                entry("m2", Change::Added, "Inbox/Projects", "Plans", &"bb".repeat(32)),
            ],
        );
        apply(
            &mut h,
            1,
            vec![entry(
                "m1",
                Change::Updated,
                "Archive",
                "Quarterly report",
                &"aa".repeat(32),
            )],
        );
        apply(&mut h, 2, vec![entry("m2", Change::Deleted, "", "", "")]);
        // As of the first snapshot: both in their first folders.
        assert_eq!(h.items_in(0, "Inbox").len(), 1);
        assert_eq!(h.items_in(0, "Inbox/Projects").len(), 1);
        let folders: Vec<String> = h.folders(0).into_iter().map(|f| f.path).collect();
        assert_eq!(folders, vec!["Inbox", "Inbox/Projects"]);
        // Later: m1 moved, m2 gone.
        assert!(h.items_in(2, "Inbox").is_empty());
        assert!(h.items_in(2, "Inbox/Projects").is_empty());
        assert_eq!(h.items_in(2, "Archive").len(), 1);
        // Search over all history finds the deleted message, with the snapshots that hold it.
        let m = Matcher::new(&SearchQuery {
            subject: Some("PLANS".into()),
            ..SearchQuery::default()
        })
        .unwrap();
        let found = search_history(&h, &m, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].versions[0].first_snapshot, "t0-r0");
        assert_eq!(found[0].versions[0].last_snapshot, "t1-r1");
        assert_eq!(found[0].versions[0].snapshots, 2);
        assert!(!found[0].versions[0].current);
        assert!(search_history(&h, &m, Some(2)).is_empty());
        // Folder filter takes subfolders, not prefixes of names.
        let m = Matcher::new(&SearchQuery {
            folder: Some("Inbox".into()),
            ..SearchQuery::default()
        })
        .unwrap();
        assert_eq!(search_history(&h, &m, Some(0)).len(), 2);
        let m = Matcher::new(&SearchQuery {
            folder: Some("Inb".into()),
            ..SearchQuery::default()
        })
        .unwrap();
        assert!(search_history(&h, &m, Some(0)).is_empty());
        // Moved message: two versions, one current.
        let m = Matcher::new(&SearchQuery {
            q: Some("quarterly".into()),
            has_attachment: Some(false),
            ..SearchQuery::default()
        })
        .unwrap();
        let found = search_history(&h, &m, None);
        assert_eq!(found[0].folder, "Archive");
        assert_eq!(found[0].versions.len(), 2);
        assert!(
            Matcher::new(&SearchQuery {
                received_after: Some("yesterday".into()),
                ..SearchQuery::default()
            })
            .is_err()
        );
    }
}
