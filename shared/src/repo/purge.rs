//! Erasure of one entity's backed-up data (docs/design.md §3.9): its
//! snapshots, catalog segments, pass working states and browse histories,
//! and every chunk that no other entity uses, wherever it is stored. The one
//! sanctioned exception to "objects are immutable".
//!
//! Chunks are deduplicated across the account, so a pack written by the
//! entity's runs may hold chunks that other entities' items use, and the
//! entity's items may use chunks in other entities' packs. A pack that holds
//! a doomed chunk is therefore *rewritten*: its other blobs are copied, still
//! sealed (a blob's associated data is its chunk id, not where it lies), into
//! a new pack, and the old pack goes.
//!
//! Crash safety: the steps run in this order, so that a crash anywhere
//! leaves a repository that [`Repo::check`] passes and that a rerun of the
//! purge finishes (every step is idempotent and the rerun recomputes what is
//! left from what is stored):
//!
//! 1. The entity's snapshots are deleted. A run without a snapshot does not
//!    exist, so the entity is gone for every reader at once; its segments,
//!    still stored, keep naming its chunks for a rerun.
//! 2. The doomed chunks are computed: the chunks of every segment of the
//!    entity (committed or not) less those of every segment of every other
//!    entity, of every run (their point-in-time views must still read).
//! 3. The packs that hold a doomed blob are found: through every index
//!    object (not the merged index map, which keeps one place per chunk),
//!    and by reading the headers of the packs that no index names (a crashed
//!    earlier attempt's, or a dead backup run's).
//! 4. Each indexed one is rewritten: its surviving blobs into a new pack,
//!    named by their bytes (a rerun writes the same pack again).
//! 5. A new index object names the new packs. Its key, `~purge-<time>-<entity>`,
//!    sorts after every run's index (`~` follows every character of a run
//!    id), so wherever an index names a surviving chunk in both the old and
//!    the new pack, the new place wins in the loaded map.
//! 6. Every index object naming a rewritten pack is replaced: a copy without
//!    those packs is written under a new key (`<old>~<digest>`, the same on a
//!    rerun), then the old one is deleted. From here on no index names an old
//!    pack, and every surviving chunk is indexed in a pack that exists.
//! 7. The old packs are deleted (and unindexed packs holding a doomed blob:
//!    nothing indexed needs them). No index ever names a deleted pack.
//! 8. The entity's working states and browse histories are deleted, and its
//!    catalog segments last: until then a rerun still knows which chunks
//!    were the entity's.
//!
//! Writers must be kept out while a purge runs: a backup of another entity
//! that loaded the index before step 6 could deduplicate against a doomed
//! chunk and commit a snapshot that names it. `ops::purge` holds every
//! backup lease of the account for the duration, so no writer runs.

use super::{
    BlobLocation, CatalogSegment, ChunkId, FORMAT_VERSION, IndexFile, IndexedPack, PackHeader, Repo, RepoError,
};
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use utoipa::ToSchema;

/// Segments, indexes and pack headers read at once.
const PURGE_READ_CONCURRENCY: usize = 8;
/// Packs (up to 8 MiB each, held twice while rewritten) rewritten at once.
const PURGE_PACK_CONCURRENCY: usize = 4;

/// What purging an entity would delete, computed without changing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurgePlan {
    /// Snapshots of the entity.
    pub snapshots: u64,
    /// Catalog segments of the entity (committed or not).
    pub segments: u64,
    /// Items (distinct ids) the segments name, every version.
    pub items: u64,
    /// Content bytes of every version of those items.
    pub logical_bytes: u64,
    /// Chunks that only the entity uses: erased.
    pub chunks_doomed: u64,
    /// Chunks that other entities use too: kept.
    pub chunks_shared: u64,
    /// Sealed bytes of the doomed chunks in their packs (what the bucket loses, at least).
    pub stored_bytes: u64,
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PurgeReport {
    pub snapshots_deleted: u64,
    pub segments_deleted: u64,
    /// Items (distinct ids) of the deleted segments.
    pub items_deleted: u64,
    /// Distinct doomed chunks removed from the packs that held them.
    pub chunks_deleted: u64,
    /// Chunks of the entity that other entities use: kept.
    pub chunks_kept: u64,
    /// Packs whose surviving blobs were copied into a new pack.
    pub packs_rewritten: u64,
    /// Packs deleted (rewritten ones, ones with nothing left, unindexed ones holding a doomed chunk).
    pub packs_deleted: u64,
    /// Index objects replaced by a copy without the deleted packs (or removed when nothing was left).
    pub indexes_replaced: u64,
    /// Working states of unfinished passes and browse histories deleted.
    pub other_objects_deleted: u64,
    /// Bytes of the account's repository before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The entity's footprint: what its segments name and what only it uses.
struct Footprint {
    snapshots: Vec<String>,
    segments: Vec<String>,
    items: u64,
    logical_bytes: u64,
    mine: HashSet<ChunkId>,
    doomed: HashSet<ChunkId>,
}

/// Every index object with what it names.
struct Indexes {
    files: Vec<(String, IndexFile)>,
    /// Pack key → its blobs (as the first index naming it lists them).
    packs: HashMap<String, Vec<BlobLocation>>,
}

fn check_entity(entity: &str) -> Result<(), RepoError> {
    if entity.is_empty() || entity.contains('/') {
        return Err(RepoError::corrupt(entity, "not an entity id"));
    }
    Ok(())
}

impl Repo {
    /// What purging `entity` would delete (nothing is changed).
    pub async fn purge_plan(&self, entity: &str) -> Result<PurgePlan, RepoError> {
        check_entity(entity)?;
        let footprint = self.footprint(entity).await?;
        let indexes = if footprint.doomed.is_empty() {
            Indexes {
                files: Vec::new(),
                packs: HashMap::new(),
            }
        } else {
            self.indexes().await?
        };
        // One copy of each doomed chunk (the first place found; duplicates only add to it).
        let mut seen = HashSet::new();
        let mut stored_bytes = 0;
        for blob in indexes.packs.values().flatten() {
            if footprint.doomed.contains(&blob.id) && seen.insert(blob.id) {
                stored_bytes += blob.length;
            }
        }
        Ok(PurgePlan {
            snapshots: footprint.snapshots.len() as u64,
            segments: footprint.segments.len() as u64,
            items: footprint.items,
            logical_bytes: footprint.logical_bytes,
            chunks_doomed: footprint.doomed.len() as u64,
            chunks_shared: (footprint.mine.len() - footprint.doomed.len()) as u64,
            stored_bytes,
        })
    }

    /// Erases `entity`'s backed-up data (see the module doc for the order and
    /// why). Idempotent: a rerun after a crash at any point finishes the
    /// work; purging an entity with no data changes nothing. The caller keeps
    /// every writer of the account out meanwhile.
    pub async fn purge_entity(&self, entity: &str) -> Result<PurgeReport, RepoError> {
        check_entity(entity)?;
        let mut report = PurgeReport {
            bytes_before: self.bytes().await?,
            ..PurgeReport::default()
        };

        // 1. The entity stops existing for readers.
        for key in self.store.list(&self.prefix("snapshots", entity)).await? {
            self.store.delete(&key).await?;
            report.snapshots_deleted += 1;
        }

        // 2. What only the entity uses.
        let footprint = self.footprint(entity).await?;
        report.segments_deleted = footprint.segments.len() as u64;
        report.items_deleted = footprint.items;
        report.chunks_kept = (footprint.mine.len() - footprint.doomed.len()) as u64;
        let doomed = &footprint.doomed;

        if !doomed.is_empty() {
            // 3. The packs holding a doomed blob: indexed ones, then the others.
            let indexes = self.indexes().await?;
            let mut rewrite: Vec<String> = indexes
                .packs
                .iter()
                .filter(|(_, blobs)| blobs.iter().any(|b| doomed.contains(&b.id)))
                .map(|(key, _)| key.clone())
                .collect();
            rewrite.sort();
            let unindexed = self.unindexed_packs_holding(&indexes, doomed).await?;
            let mut erased: HashSet<ChunkId> = HashSet::new();
            for (_, blobs) in &unindexed {
                erased.extend(blobs.iter().map(|b| b.id).filter(|id| doomed.contains(id)));
            }

            // 4. Surviving blobs into new packs.
            let rewritten: Vec<(Option<IndexedPack>, Vec<ChunkId>)> = futures::stream::iter(rewrite.clone())
                .map(|key| async move { self.rewrite_pack(&key, doomed).await })
                .buffered(PURGE_PACK_CONCURRENCY)
                .try_collect()
                .await?;
            let mut new_packs = Vec::new();
            for (pack, removed) in rewritten {
                erased.extend(removed);
                if let Some(pack) = pack {
                    report.packs_rewritten += 1;
                    new_packs.push(pack);
                }
            }

            // 5. An index of the new packs, which sorts after every other.
            if !new_packs.is_empty() {
                let key = format!(
                    "{}/index/~purge-{}-{entity}",
                    self.account,
                    Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
                );
                let file = IndexFile {
                    version: FORMAT_VERSION,
                    run: format!("purge-{entity}"),
                    packs: new_packs,
                };
                self.put_sealed(&key, &file).await?;
            }

            // 6. No index names an old pack any more.
            let old: HashSet<&str> = rewrite.iter().map(|k| k.as_str()).collect();
            for (key, file) in indexes.files {
                if !file.packs.iter().any(|p| old.contains(p.key.as_str())) {
                    continue;
                }
                let kept: Vec<IndexedPack> = file
                    .packs
                    .into_iter()
                    .filter(|p| !old.contains(p.key.as_str()))
                    .collect();
                if !kept.is_empty() {
                    let mut names = blake3::Hasher::new();
                    for pack in &kept {
                        names.update(pack.key.as_bytes());
                        names.update(b"\n");
                    }
                    let digest = names.finalize().to_hex();
                    let replacement = format!("{key}~{}", &digest[..16]);
                    let file = IndexFile {
                        version: FORMAT_VERSION,
                        run: file.run,
                        packs: kept,
                    };
                    self.put_sealed(&replacement, &file).await?;
                }
                self.store.delete(&key).await?;
                report.indexes_replaced += 1;
            }

            // 7. The old packs.
            for key in rewrite.iter().chain(unindexed.iter().map(|(k, _)| k)) {
                self.store.delete(key).await?;
                report.packs_deleted += 1;
            }
            report.chunks_deleted = erased.len() as u64;
        }

        // 8. The rest of the entity, its segments last.
        for kind in ["work", "views"] {
            for key in self.store.list(&self.prefix(kind, entity)).await? {
                self.store.delete(&key).await?;
                report.other_objects_deleted += 1;
            }
        }
        for key in &footprint.segments {
            self.store.delete(key).await?;
        }
        report.bytes_after = self.bytes().await?;
        Ok(report)
    }

    /// The blobs a pack's header lists (what a pack holds, for operators and
    /// tests; the header is authenticated, so a pack cannot lie about it).
    pub async fn pack_blobs(&self, key: &str) -> Result<Vec<BlobLocation>, RepoError> {
        self.check_own(key)?;
        let bytes = self.store.get(key).await?;
        Ok(self.pack_header(key, &bytes)?.blobs)
    }

    fn prefix(&self, kind: &str, entity: &str) -> String {
        format!("{}/{kind}/{entity}/", self.account)
    }

    /// Bytes of the account's repository objects.
    async fn bytes(&self) -> Result<u64, RepoError> {
        Ok(self
            .store
            .list_sized(&format!("{}/", self.account))
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum())
    }

    fn segments(&self, keys: Vec<String>) -> impl futures::Stream<Item = Result<CatalogSegment, RepoError>> + '_ {
        futures::stream::iter(keys)
            .map(move |key| async move { self.get_sealed::<CatalogSegment>(&key).await })
            .buffer_unordered(PURGE_READ_CONCURRENCY)
    }

    async fn footprint(&self, entity: &str) -> Result<Footprint, RepoError> {
        let own_prefix = self.prefix("catalog", entity);
        let snapshots = self.store.list(&self.prefix("snapshots", entity)).await?;
        let segments = self.store.list(&own_prefix).await?;
        let mut items = BTreeSet::new();
        let mut logical_bytes = 0;
        let mut mine = HashSet::new();
        let mut own = self.segments(segments.clone());
        while let Some(segment) = own.next().await {
            for entry in segment?.entries {
                if matches!(entry.change, super::Change::Added | super::Change::Changed) {
                    logical_bytes += entry.size;
                }
                mine.extend(entry.chunks);
                items.insert(entry.item);
            }
        }
        drop(own);
        let mut doomed = mine.clone();
        if !doomed.is_empty() {
            let others: Vec<String> = self
                .store
                .list(&format!("{}/catalog/", self.account))
                .await?
                .into_iter()
                .filter(|k| !k.starts_with(&own_prefix))
                .collect();
            let mut others = self.segments(others);
            while let Some(segment) = others.next().await {
                for entry in segment?.entries {
                    for id in &entry.chunks {
                        doomed.remove(id);
                    }
                }
            }
        }
        Ok(Footprint {
            snapshots,
            segments,
            items: items.len() as u64,
            logical_bytes,
            mine,
            doomed,
        })
    }

    async fn indexes(&self) -> Result<Indexes, RepoError> {
        let keys = self.store.list(&format!("{}/index/", self.account)).await?;
        let files: Vec<(String, IndexFile)> = futures::stream::iter(keys)
            .map(|key| async move {
                let file = self.get_sealed::<IndexFile>(&key).await?;
                Ok::<_, RepoError>((key, file))
            })
            .buffered(PURGE_READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut packs = HashMap::new();
        for (_, file) in &files {
            for pack in &file.packs {
                packs.entry(pack.key.clone()).or_insert_with(|| pack.blobs.clone());
            }
        }
        Ok(Indexes { files, packs })
    }

    /// Packs that no index names and that hold a doomed blob, with their blobs.
    async fn unindexed_packs_holding(
        &self,
        indexes: &Indexes,
        doomed: &HashSet<ChunkId>,
    ) -> Result<Vec<(String, Vec<BlobLocation>)>, RepoError> {
        let unindexed: Vec<(String, u64)> = self
            .store
            .list_sized(&format!("{}/packs/", self.account))
            .await?
            .into_iter()
            .filter(|(key, _)| !indexes.packs.contains_key(key))
            .collect();
        let headers: Vec<(String, PackHeader)> = futures::stream::iter(unindexed)
            .map(|(key, size)| async move {
                let header = self.pack_header_at(&key, size).await?;
                Ok::<_, RepoError>((key, header))
            })
            .buffered(PURGE_READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(headers
            .into_iter()
            .filter(|(_, h)| h.blobs.iter().any(|b| doomed.contains(&b.id)))
            .map(|(key, h)| (key, h.blobs))
            .collect())
    }

    /// A pack's header, read by two ranged GETs (its length, then itself).
    async fn pack_header_at(&self, key: &str, size: u64) -> Result<PackHeader, RepoError> {
        if size < 4 {
            return Err(RepoError::corrupt(key, "too short for a pack"));
        }
        let tail = self.store.get_range(key, size - 4, 4).await?;
        let len = <[u8; 4]>::try_from(tail.as_ref())
            .map(u32::from_le_bytes)
            .map_err(|_| RepoError::corrupt(key, "ranged read shorter than asked"))?;
        let start = (size - 4)
            .checked_sub(u64::from(len))
            .ok_or_else(|| RepoError::corrupt(key, "header length past the start"))?;
        let mut bytes = self.store.get_range(key, start, u64::from(len)).await?.to_vec();
        bytes.extend_from_slice(&tail);
        self.pack_header(key, &bytes)
    }

    /// Writes a pack of `key`'s blobs that are not doomed (their sealed bytes
    /// as they are) and returns it with the doomed chunks it left out; `None`
    /// for the pack when nothing survives. The new pack is named, like every
    /// pack, by the hash of its blobs: a rerun writes the same one.
    async fn rewrite_pack(
        &self,
        key: &str,
        doomed: &HashSet<ChunkId>,
    ) -> Result<(Option<IndexedPack>, Vec<ChunkId>), RepoError> {
        let bytes = self.store.get(key).await?;
        let header = self.pack_header(key, &bytes)?;
        let mut body = Vec::with_capacity(bytes.len());
        let mut blobs = Vec::new();
        let mut removed = Vec::new();
        for blob in header.blobs {
            if doomed.contains(&blob.id) {
                removed.push(blob.id);
                continue;
            }
            let start = usize::try_from(blob.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(blob.length).unwrap_or(usize::MAX));
            let sealed = bytes
                .get(start..end)
                .ok_or_else(|| RepoError::corrupt(key, "blob past the end of the pack"))?;
            blobs.push(BlobLocation {
                offset: body.len() as u64,
                ..blob
            });
            body.extend_from_slice(sealed);
        }
        if blobs.is_empty() {
            return Ok((None, removed));
        }
        let name = hex::encode(blake3::hash(&body).as_bytes());
        let new_key = format!("{}/packs/{}/{name}", self.account, &name[..2]);
        let header = serde_json::to_vec(&PackHeader {
            version: FORMAT_VERSION,
            blobs: blobs.clone(),
        })
        .map_err(|e| RepoError::corrupt(&new_key, e.to_string()))?;
        let sealed_header = self.keys.seal(&header, new_key.as_bytes());
        body.extend_from_slice(&sealed_header);
        body.extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
        match self.store.put_new(&new_key, Bytes::from(body)).await {
            Ok(()) | Err(super::StoreError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok((Some(IndexedPack { key: new_key, blobs }), removed))
    }
}

#[cfg(test)]
mod tests;
