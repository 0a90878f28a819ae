//! Every persisted format of the repository, each with a version field
//! (docs/design.md §3). All but the key file are sealed before storage.

use super::crypto::ChunkId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

/// `<account>/keys/data-key` (plain JSON: it holds only the KMS-wrapped key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    /// Base64 of the KMS ciphertext of the account's data key.
    pub wrapped_key: String,
    pub created_at: DateTime<Utc>,
}

/// Where a chunk lives inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub id: ChunkId,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u64,
    /// Length of the chunk's plaintext.
    pub raw_length: u64,
}

/// The header sealed at the end of every pack, so a pack describes itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackHeader {
    pub version: u32,
    pub blobs: Vec<BlobLocation>,
}

/// `<account>/index/<run>`: the packs a run wrote and their blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexFile {
    pub version: u32,
    pub run: String,
    pub packs: Vec<IndexedPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexedPack {
    /// Object key of the pack.
    pub key: String,
    pub blobs: Vec<BlobLocation>,
}

/// What happened to an item in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    /// New content.
    Changed,
    /// Same content, new metadata (moved, read, flagged).
    Updated,
    /// Gone from the source; earlier snapshots keep it.
    Deleted,
}

/// One item of a catalog segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The item's stable id in the source (an immutable Graph id).
    pub item: String,
    pub change: Change,
    /// Service-specific metadata: folder path, subject, from, to, dates, flags, file name.
    pub meta: serde_json::Value,
    /// Size of the content in bytes.
    pub size: u64,
    /// SHA-256 of the content (hex), to check a restore byte for byte.
    pub sha256: String,
    /// The content, in order.
    pub chunks: Vec<ChunkId>,
}

/// `<account>/catalog/<entity>/<run>`: what a run saw change in an entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogSegment {
    pub version: u32,
    pub entity: String,
    pub run: String,
    pub entries: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCounts {
    pub added: u64,
    pub changed: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Bytes of content the run read.
    pub logical_bytes: u64,
    /// Bytes of packs the run wrote (after dedup, compression, encryption).
    pub stored_bytes: u64,
    pub new_chunks: u64,
    pub packs: u64,
}

/// `<account>/snapshots/<entity>/<time>-<run>`: the commit point of a run, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub entity: String,
    pub run: String,
    pub time: DateTime<Utc>,
    /// The run stopped early (time budget); a continuation follows.
    pub partial: bool,
    pub catalog: String,
    pub index: Option<String>,
    pub counts: SnapshotCounts,
}
