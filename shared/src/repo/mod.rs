//! The backup repository (docs/design.md §3), in restic's vocabulary:
//! content is cut into chunks (FastCDC), each named by a keyed BLAKE3 hash,
//! compressed (zstd) and sealed (AES-256-GCM), and written into packs of
//! several MiB; a run then writes its pack index, a catalog segment per
//! entity and, last, a snapshot. A run without a snapshot does not exist.

mod crypto;
mod format;
mod purge;
mod store;

pub use crypto::{ChunkId, KeyError, KeyProvider, Keys, KmsKeys, TestKeys};
pub use format::*;
pub use purge::{PurgePlan, PurgeReport};
pub use store::{BlobStore, MemoryStore, S3Store, StoreError};

use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::io::AsyncRead;

/// Where each chunk is: its pack's key (shared) and its place in the pack.
pub type ChunkIndex = HashMap<ChunkId, (Arc<str>, BlobLocation)>;

/// Chunk sizes for mail and files: small enough that an attachment shared by
/// many messages dedups (each copy costs about one chunk where its message's
/// own bytes end), large enough that indexes stay small.
pub const CHUNK_MIN_BYTES: u32 = 4 * 1024;
pub const CHUNK_AVG_BYTES: u32 = 16 * 1024;
pub const CHUNK_MAX_BYTES: u32 = 64 * 1024;
/// A pack is written (one PUT) when it reaches this size.
pub const MAX_PACK_BYTES: usize = 8 * 1024 * 1024;
/// zstd level: fast, with most of the gain.
pub const ZSTD_LEVEL: i32 = 3;

/// Errors of the repository. `Corrupt` names the object that failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{object} is corrupt or was tampered with: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("chunk {0} is in no index")]
    MissingChunk(String),
    #[error("reading the item's content failed: {0}")]
    Source(String),
}

impl RepoError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Unavailable(_)) | Self::Key(KeyError::Kms(_)) | Self::Source(_)
        )
    }
    fn corrupt(object: &str, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            object: object.to_string(),
            reason: reason.into(),
        }
    }
}

/// One account's repository.
pub struct Repo {
    store: Arc<dyn BlobStore>,
    account: String,
    keys: Keys,
}

impl Repo {
    /// Opens the account's repository, creating its data key on first use.
    pub async fn open(store: Arc<dyn BlobStore>, keys: &dyn KeyProvider, account: &str) -> Result<Self, RepoError> {
        let key_object = format!("{account}/keys/data-key");
        let file = match store.get(&key_object).await {
            Ok(bytes) => {
                serde_json::from_slice::<KeyFile>(&bytes).map_err(|e| RepoError::corrupt(&key_object, e.to_string()))?
            }
            Err(StoreError::NotFound(_)) => {
                let (_, wrapped) = keys.generate(account).await?;
                let file = KeyFile {
                    version: FORMAT_VERSION,
                    wrapped_key: base64::engine::general_purpose::STANDARD.encode(wrapped),
                    created_at: Utc::now(),
                };
                let body = serde_json::to_vec(&file).map_err(|e| RepoError::corrupt(&key_object, e.to_string()))?;
                match store.put_new(&key_object, Bytes::from(body)).await {
                    Ok(()) => file,
                    // Another run created it first: use theirs.
                    Err(StoreError::Exists(_)) => serde_json::from_slice(&store.get(&key_object).await?)
                        .map_err(|e| RepoError::corrupt(&key_object, e.to_string()))?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&file.wrapped_key)
            .map_err(|e| RepoError::corrupt(&key_object, e.to_string()))?;
        let data_key = keys.unwrap(account, &wrapped).await?;
        Ok(Self {
            store,
            account: account.to_string(),
            keys: Keys::derive(&data_key),
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    async fn get_sealed<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, RepoError> {
        let sealed = self.store.get(key).await?;
        let plain = self
            .keys
            .open(&sealed, key.as_bytes())
            .ok_or_else(|| RepoError::corrupt(key, "authentication failed"))?;
        serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(key, e.to_string()))
    }

    async fn put_sealed<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), RepoError> {
        let plain = serde_json::to_vec(value).map_err(|e| RepoError::corrupt(key, e.to_string()))?;
        let sealed = self.keys.seal(&plain, key.as_bytes());
        match self.store.put_new(key, Bytes::from(sealed)).await {
            // Immutable and named by content or run: an existing object is ours from an earlier attempt.
            Ok(()) | Err(StoreError::Exists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves the working state of an unfinished backup pass (sealed, like
    /// everything else): `<account>/work/<entity>/<run>`. Returns its key.
    pub async fn put_work<T: serde::Serialize>(&self, entity: &str, run: &str, value: &T) -> Result<String, RepoError> {
        let key = format!("{}/work/{entity}/{run}", self.account);
        self.put_sealed(&key, value).await?;
        Ok(key)
    }

    /// Reads a working state saved by [`Repo::put_work`]; it must belong to this account and entity.
    pub async fn get_work<T: serde::de::DeserializeOwned>(&self, entity: &str, key: &str) -> Result<T, RepoError> {
        if !key.starts_with(&format!("{}/work/{entity}/", self.account)) {
            return Err(RepoError::corrupt(key, "working state of another entity"));
        }
        self.get_sealed(key).await
    }

    /// Every chunk of every index: where to read it.
    pub async fn load_index(&self) -> Result<ChunkIndex, RepoError> {
        self.load_index_where(|_| true).await
    }

    /// Where to read the chunks in `needed` only: what a restore or an export
    /// holds, whatever the size of the rest of the repository.
    pub async fn load_index_for(&self, needed: &HashSet<ChunkId>) -> Result<ChunkIndex, RepoError> {
        self.load_index_where(|id| needed.contains(id)).await
    }

    async fn load_index_where(&self, keep: impl Fn(&ChunkId) -> bool) -> Result<ChunkIndex, RepoError> {
        let mut out = HashMap::new();
        for key in self.store.list(&format!("{}/index/", self.account)).await? {
            let index: IndexFile = self.get_sealed(&key).await?;
            for pack in index.packs {
                // One allocation per pack, shared by its chunks.
                let pack_key: Arc<str> = Arc::from(pack.key.as_str());
                for blob in pack.blobs.into_iter().filter(|b| keep(&b.id)) {
                    out.insert(blob.id, (pack_key.clone(), blob));
                }
            }
        }
        Ok(out)
    }

    /// A writer for one run over one entity.
    pub async fn writer(&self, entity: &str, run: &str) -> Result<RunWriter<'_>, RepoError> {
        let known = self.load_index().await?.into_keys().collect();
        Ok(RunWriter {
            repo: self,
            entity: entity.to_string(),
            run: run.to_string(),
            known,
            pack: Vec::new(),
            pack_blobs: Vec::new(),
            written: Vec::new(),
            entries: Vec::new(),
            counts: SnapshotCounts::default(),
        })
    }

    /// The entity's snapshots, oldest first.
    pub async fn snapshots(&self, entity: &str) -> Result<Vec<(String, Snapshot)>, RepoError> {
        let mut out = Vec::new();
        for key in self
            .store
            .list(&format!("{}/snapshots/{entity}/", self.account))
            .await?
        {
            let snapshot = self.get_sealed(&key).await?;
            out.push((key, snapshot));
        }
        Ok(out)
    }

    /// The entity as of a snapshot (its key; `None`: the latest): every item
    /// present then, with its latest entry. Replays catalog segments in order.
    pub async fn view(&self, entity: &str, until: Option<&str>) -> Result<BTreeMap<String, CatalogEntry>, RepoError> {
        let mut items = BTreeMap::new();
        for (key, snapshot) in self.snapshots(entity).await? {
            let segment: CatalogSegment = self.get_sealed(&snapshot.catalog).await?;
            for entry in segment.entries {
                match entry.change {
                    Change::Deleted => {
                        items.remove(&entry.item);
                    }
                    _ => {
                        items.insert(entry.item.clone(), entry);
                    }
                }
            }
            if until == Some(key.as_str()) {
                break;
            }
        }
        Ok(items)
    }

    /// The content of an item, byte for byte; an error naming the object if
    /// anything was altered (never wrong bytes).
    pub async fn read(&self, entry: &CatalogEntry, index: &ChunkIndex) -> Result<Vec<u8>, RepoError> {
        let mut out = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        let mut reader = self.reader(entry, index);
        while let Some(chunk) = reader.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads an item chunk by chunk, so that an item of any size is never
    /// held whole (see [`ItemReader`]).
    pub fn reader<'a>(&'a self, entry: &'a CatalogEntry, index: &'a ChunkIndex) -> ItemReader<'a> {
        ItemReader {
            repo: self,
            entry,
            index,
            next: 0,
            run: None,
            hasher: Sha256::new(),
            finished: false,
        }
    }

    /// Keys of the entity's snapshots, oldest first (without reading them).
    pub async fn snapshot_keys(&self, entity: &str) -> Result<Vec<String>, RepoError> {
        Ok(self
            .store
            .list(&format!("{}/snapshots/{entity}/", self.account))
            .await?)
    }

    /// One snapshot of the entity, by the last part of its key (`<time>-<run>`).
    pub async fn snapshot(&self, entity: &str, id: &str) -> Result<(String, Snapshot), RepoError> {
        if id.is_empty() || id.contains('/') {
            return Err(RepoError::Store(StoreError::NotFound(id.to_string())));
        }
        let key = format!("{}/snapshots/{entity}/{id}", self.account);
        Ok((key.clone(), self.get_sealed(&key).await?))
    }

    /// Reads a snapshot by its full key (one listed by [`Repo::snapshot_keys`]).
    pub async fn snapshot_at(&self, key: &str) -> Result<Snapshot, RepoError> {
        self.check_own(key)?;
        self.get_sealed(key).await
    }

    /// A catalog segment named by a snapshot of this account.
    pub async fn segment(&self, key: &str) -> Result<CatalogSegment, RepoError> {
        self.check_own(key)?;
        self.get_sealed(key).await
    }

    fn check_own(&self, key: &str) -> Result<(), RepoError> {
        if key.starts_with(&format!("{}/", self.account)) {
            Ok(())
        } else {
            Err(RepoError::corrupt(key, "object of another account"))
        }
    }

    /// Saves a derived, rebuildable object of an entity (a browse
    /// checkpoint): postcard (compact, fast to read), zstd, then sealed.
    /// `<account>/views/<entity>/<name>`.
    pub async fn put_derived<T: serde::Serialize>(&self, entity: &str, name: &str, value: &T) -> Result<(), RepoError> {
        let key = format!("{}/views/{entity}/{name}", self.account);
        let plain = postcard::to_stdvec(value).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
        let packed = zstd::bulk::compress(&plain, ZSTD_LEVEL).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
        let sealed = self.keys.seal(&packed, key.as_bytes());
        match self.store.put_new(&key, Bytes::from(sealed)).await {
            Ok(()) | Err(StoreError::Exists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The last derived object of an entity (by name order), if any. Opening
    /// and decoding run on a blocking thread: several entities decode in parallel.
    pub async fn latest_derived<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        entity: &str,
    ) -> Result<Option<(String, T)>, RepoError> {
        let Some(key) = self
            .store
            .list(&format!("{}/views/{entity}/", self.account))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let sealed = self.store.get(&key).await?;
        let keys = self.keys.clone();
        let value = tokio::task::spawn_blocking(move || {
            let packed = keys
                .open(&sealed, key.as_bytes())
                .ok_or_else(|| RepoError::corrupt(&key, "authentication failed"))?;
            let plain =
                zstd::stream::decode_all(packed.as_slice()).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
            let value: T = postcard::from_bytes(&plain).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
            Ok::<_, RepoError>((key, value))
        })
        .await
        .map_err(|e| RepoError::Source(format!("decoding stopped: {e}")))??;
        Ok(Some(value))
    }

    fn open_chunk(&self, pack: &str, id: ChunkId, sealed: &[u8]) -> Result<Vec<u8>, RepoError> {
        let compressed = self
            .keys
            .open(sealed, &id.0)
            .ok_or_else(|| RepoError::corrupt(pack, format!("chunk {} fails authentication", id.to_hex())))?;
        let plain = zstd::bulk::decompress(&compressed, CHUNK_MAX_BYTES as usize)
            .map_err(|e| RepoError::corrupt(pack, format!("chunk {}: {e}", id.to_hex())))?;
        if self.keys.chunk_id(&plain) != id {
            return Err(RepoError::corrupt(
                pack,
                format!("chunk {} does not hash to its id", id.to_hex()),
            ));
        }
        Ok(plain)
    }

    /// Verifies the repository: every pack readable and every blob in it
    /// sound; every snapshot, segment and index opens; every chunk of every
    /// item is indexed. Returns what it checked, or the first problem found.
    pub async fn check(&self) -> Result<CheckReport, RepoError> {
        let mut report = CheckReport::default();
        let index = self.load_index().await?;
        let mut by_pack: BTreeMap<String, Vec<BlobLocation>> = BTreeMap::new();
        for (pack, blob) in index.values() {
            by_pack.entry(pack.to_string()).or_default().push(*blob);
        }
        for key in self.store.list(&format!("{}/packs/", self.account)).await? {
            let bytes = self.store.get(&key).await?;
            let header = self.pack_header(&key, &bytes)?;
            for blob in &header.blobs {
                let start = usize::try_from(blob.offset).unwrap_or(usize::MAX);
                let end = start.saturating_add(usize::try_from(blob.length).unwrap_or(usize::MAX));
                let sealed = bytes
                    .get(start..end)
                    .ok_or_else(|| RepoError::corrupt(&key, "blob past the end of the pack"))?;
                self.open_chunk(&key, blob.id, sealed)?;
                report.chunks += 1;
            }
            report.packs += 1;
            by_pack.remove(&key);
        }
        if let Some((pack, _)) = by_pack.into_iter().next() {
            return Err(RepoError::corrupt(&pack, "indexed pack is missing"));
        }
        for entity_prefix in self.entities().await? {
            for (_, snapshot) in self.snapshots(&entity_prefix).await? {
                report.snapshots += 1;
                let segment: CatalogSegment = self.get_sealed(&snapshot.catalog).await?;
                for entry in segment.entries.iter().filter(|e| e.change != Change::Deleted) {
                    for id in &entry.chunks {
                        if !index.contains_key(id) {
                            return Err(RepoError::MissingChunk(id.to_hex()));
                        }
                    }
                    report.items += 1;
                }
            }
        }
        Ok(report)
    }

    /// Entities with snapshots.
    pub async fn entities(&self) -> Result<Vec<String>, RepoError> {
        let prefix = format!("{}/snapshots/", self.account);
        let mut out: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_string)
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    fn pack_header(&self, key: &str, bytes: &[u8]) -> Result<PackHeader, RepoError> {
        if bytes.len() < 4 {
            return Err(RepoError::corrupt(key, "too short for a pack"));
        }
        let (body, len) = bytes.split_at(bytes.len() - 4);
        let header_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = body
            .len()
            .checked_sub(header_len)
            .ok_or_else(|| RepoError::corrupt(key, "header length past the start"))?;
        let plain = self
            .keys
            .open(&body[start..], key.as_bytes())
            .ok_or_else(|| RepoError::corrupt(key, "pack header fails authentication"))?;
        serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(key, e.to_string()))
    }
}

/// An item's content, chunk by chunk in order. Chunks that lie next to each
/// other in a pack are fetched by one ranged GET (up to 8 MiB) and opened one
/// at a time. The SHA-256 is checked after the last chunk: on `Err` the
/// caller must discard what it received.
pub struct ItemReader<'a> {
    repo: &'a Repo,
    entry: &'a CatalogEntry,
    index: &'a ChunkIndex,
    /// Index in `entry.chunks` of the next chunk to fetch.
    next: usize,
    /// The fetched run: its pack, its bytes, and the chunks still to open in it.
    run: Option<FetchedRun>,
    hasher: Sha256,
    finished: bool,
}

/// A ranged read of a pack: its key, its bytes, and the chunks (id, start, end) still to open in it.
type FetchedRun = (Arc<str>, Bytes, std::collections::VecDeque<(ChunkId, usize, usize)>);

impl ItemReader<'_> {
    const MAX_RANGE: u64 = 8 * 1024 * 1024;

    /// The next chunk's plaintext; `None` once the whole item was read and verified.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, RepoError> {
        loop {
            if let Some((pack, bytes, pending)) = &mut self.run {
                if let Some((id, from, to)) = pending.pop_front() {
                    let sealed = bytes
                        .get(from..to)
                        .ok_or_else(|| RepoError::corrupt(pack, "ranged read shorter than asked"))?;
                    let plain = self.repo.open_chunk(pack, id, sealed)?;
                    self.hasher.update(&plain);
                    return Ok(Some(plain));
                }
                self.run = None;
            }
            if self.next >= self.entry.chunks.len() {
                if !self.finished {
                    self.finished = true;
                    if hex::encode(self.hasher.clone().finalize()) != self.entry.sha256 {
                        return Err(RepoError::corrupt(
                            &format!("item {}", self.entry.item),
                            "content does not match its SHA-256",
                        ));
                    }
                }
                return Ok(None);
            }
            self.fetch_run().await?;
        }
    }

    /// Fetches the chunks from `next` on that follow each other in one pack.
    async fn fetch_run(&mut self) -> Result<(), RepoError> {
        let first = self.entry.chunks[self.next];
        let (pack, start) = self
            .index
            .get(&first)
            .ok_or_else(|| RepoError::MissingChunk(first.to_hex()))?;
        let mut pending = std::collections::VecDeque::new();
        pending.push_back((first, 0usize, usize::try_from(start.length).unwrap_or(usize::MAX)));
        let mut end = start.offset + start.length;
        while let Some(id) = self.entry.chunks.get(self.next + pending.len()) {
            match self.index.get(id) {
                Some((p, at)) if p == pack && at.offset == end && end + at.length - start.offset <= Self::MAX_RANGE => {
                    let from = usize::try_from(at.offset - start.offset).unwrap_or(usize::MAX);
                    pending.push_back((
                        *id,
                        from,
                        from.saturating_add(usize::try_from(at.length).unwrap_or(usize::MAX)),
                    ));
                    end += at.length;
                }
                _ => break,
            }
        }
        let bytes = self
            .repo
            .store
            .get_range(pack, start.offset, end - start.offset)
            .await?;
        self.next += pending.len();
        self.run = Some((pack.clone(), bytes, pending));
        Ok(())
    }
}

/// What `check` verified.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub packs: u64,
    pub chunks: u64,
    pub snapshots: u64,
    pub items: u64,
}

/// Writes one run: items' chunks into packs, then index, catalog, snapshot.
pub struct RunWriter<'a> {
    repo: &'a Repo,
    entity: String,
    run: String,
    known: HashSet<ChunkId>,
    pack: Vec<u8>,
    pack_blobs: Vec<BlobLocation>,
    written: Vec<IndexedPack>,
    entries: Vec<CatalogEntry>,
    counts: SnapshotCounts,
}

impl RunWriter<'_> {
    /// Chunks, dedups, compresses, seals and packs an item's content,
    /// streaming it (memory stays within a chunk and a pack).
    pub async fn add_item<R: AsyncRead + Unpin>(
        &mut self,
        item: &str,
        change: Change,
        meta: serde_json::Value,
        content: R,
    ) -> Result<&CatalogEntry, RepoError> {
        let mut chunker =
            fastcdc::v2020::AsyncStreamCDC::new(content, CHUNK_MIN_BYTES, CHUNK_AVG_BYTES, CHUNK_MAX_BYTES);
        let mut stream = Box::pin(chunker.as_stream());
        let mut sha = Sha256::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RepoError::Source(e.to_string()))?;
            sha.update(&chunk.data);
            size += chunk.data.len() as u64;
            chunks.push(self.add_chunk(chunk.data).await?);
        }
        drop(stream);
        if size == 0 {
            // An empty item has one empty chunk so that it reads back as empty.
            chunks.push(self.add_chunk(Vec::new()).await?);
        }
        self.counts.logical_bytes += size;
        match change {
            Change::Added => self.counts.added += 1,
            Change::Changed => self.counts.changed += 1,
            Change::Updated => self.counts.updated += 1,
            Change::Deleted => self.counts.deleted += 1,
        }
        self.entries.push(CatalogEntry {
            item: item.to_string(),
            change,
            meta,
            size,
            sha256: hex::encode(sha.finalize()),
            chunks,
        });
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Records new metadata of an item whose content is unchanged (no fetch).
    pub fn update_item(&mut self, previous: &CatalogEntry, meta: serde_json::Value) {
        self.counts.updated += 1;
        self.entries.push(CatalogEntry {
            change: Change::Updated,
            meta,
            ..previous.clone()
        });
    }

    /// Records that an item left the source; earlier snapshots keep it.
    pub fn delete_item(&mut self, item: &str) {
        self.counts.deleted += 1;
        self.entries.push(CatalogEntry {
            item: item.to_string(),
            change: Change::Deleted,
            meta: serde_json::Value::Null,
            size: 0,
            sha256: String::new(),
            chunks: Vec::new(),
        });
    }

    async fn add_chunk(&mut self, data: Vec<u8>) -> Result<ChunkId, RepoError> {
        let id = self.repo.keys.chunk_id(&data);
        if !self.known.insert(id) {
            return Ok(id);
        }
        let keys = &self.repo.keys;
        let raw_length = data.len() as u64;
        let compressed =
            zstd::bulk::compress(&data, ZSTD_LEVEL).map_err(|e| RepoError::Source(format!("compress: {e}")))?;
        let sealed = keys.seal(&compressed, &id.0);
        self.pack_blobs.push(BlobLocation {
            id,
            offset: self.pack.len() as u64,
            length: sealed.len() as u64,
            raw_length,
        });
        self.pack.extend_from_slice(&sealed);
        self.counts.new_chunks += 1;
        if self.pack.len() >= MAX_PACK_BYTES {
            self.flush_pack().await?;
        }
        Ok(id)
    }

    /// Writes the current pack: blobs, then the sealed header and its length.
    async fn flush_pack(&mut self) -> Result<(), RepoError> {
        if self.pack_blobs.is_empty() {
            return Ok(());
        }
        let mut pack = std::mem::take(&mut self.pack);
        let blobs = std::mem::take(&mut self.pack_blobs);
        // The pack is named by the hash of its blobs; the header is sealed under that name.
        let name = hex::encode(blake3::hash(&pack).as_bytes());
        let key = format!("{}/packs/{}/{name}", self.repo.account, &name[..2]);
        let header = serde_json::to_vec(&PackHeader {
            version: FORMAT_VERSION,
            blobs: blobs.clone(),
        })
        .map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
        let sealed_header = self.repo.keys.seal(&header, key.as_bytes());
        pack.extend_from_slice(&sealed_header);
        pack.extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
        self.counts.stored_bytes += pack.len() as u64;
        self.counts.packs += 1;
        match self.repo.store.put_new(&key, Bytes::from(pack)).await {
            Ok(()) | Err(StoreError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.written.push(IndexedPack { key, blobs });
        Ok(())
    }

    /// Commits the run: packs, then index, then catalog, then the snapshot (invariant 1).
    pub async fn commit(mut self, partial: bool) -> Result<(String, Snapshot), RepoError> {
        self.flush_pack().await?;
        let account = &self.repo.account;
        let index = if self.written.is_empty() {
            None
        } else {
            let key = format!("{account}/index/{}", self.run);
            self.repo
                .put_sealed(
                    &key,
                    &IndexFile {
                        version: FORMAT_VERSION,
                        run: self.run.clone(),
                        packs: std::mem::take(&mut self.written),
                    },
                )
                .await?;
            Some(key)
        };
        let catalog = format!("{account}/catalog/{}/{}", self.entity, self.run);
        let segment = CatalogSegment {
            version: FORMAT_VERSION,
            entity: self.entity.clone(),
            run: self.run.clone(),
            entries: std::mem::take(&mut self.entries),
        };
        self.repo.put_sealed(&catalog, &segment).await?;
        let time = Utc::now();
        let snapshot = Snapshot {
            version: FORMAT_VERSION,
            entity: self.entity.clone(),
            run: self.run.clone(),
            time,
            partial,
            catalog,
            index,
            counts: self.counts.clone(),
        };
        let key = format!(
            "{account}/snapshots/{}/{}-{}",
            self.entity,
            time.format("%Y%m%dT%H%M%S%.6fZ"),
            self.run
        );
        self.repo.put_sealed(&key, &snapshot).await?;
        Ok((key, snapshot))
    }
}

#[cfg(test)]
mod tests;
