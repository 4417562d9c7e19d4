//! The block store: the only code that touches redb.
//!
//! It keeps opaque, already-validated block records — the served JSON body, a compact
//! [`BlockMeta`] and the block's transaction ids — and the indexes the API needs (hash → height,
//! transaction id → location, timestamp → height), plus running totals, all updated in the same
//! atomic commit. It knows nothing about validation, HTTP or async: callers run it on blocking
//! threads.
//!
//! Invariant: the stored heights are always `0..=tip` without gaps — [`BlockStore::append`]
//! only continues the tip and [`BlockStore::rollback_above`] only removes a suffix — so paging
//! by height is arithmetic rather than a scan.
//!
//! Finality: the store keeps a floor that only rises ([`BlockStore::finality_floor`]) and
//! refuses any rollback that would remove a block at or below it, whoever asks.
//!
//! Inside: `redb_store` (the handle, recovery, the trait impl), `database` (opening the file,
//! format check, durable transactions), `tables` (table layout and per-block rows), `listing`
//! (paged listings), `codec` (compact row encodings), `failure` (error classification), `tip`
//! (commit notifications).

mod body_log;
mod codec;
#[cfg(test)]
mod conformance;
mod database;
mod failure;
mod listing;
pub mod open;
pub mod postgres;
mod read_only;
mod redb_store;
mod tables;
#[cfg(test)]
mod tests;
pub mod tip;

use std::collections::HashSet;
use std::path::Path;

pub use postgres::PgStore;
pub use read_only::ReadOnlyStore;
pub use redb_store::{OpenReport, RedbStore};

/// Version of the store's own layout (tables and encodings), kept in the meta table. A file
/// written by a newer version is refused rather than misread.
pub const FORMAT_VERSION: u32 = 1;

/// Network recorded when a store file is created, until [`BlockStore::set_genesis`] names one.
pub const DEFAULT_NETWORK: &str = "lucid_blocks";

/// Suggested page-cache size: small hosts (Raspberry Pi class) cannot spare redb's 1 GiB default.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Everything lists, headers and the tip need, without parsing the body.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockMeta {
    /// Height of the block; 0 is genesis.
    pub height: u64,
    /// Block hash, 64 lowercase hex characters.
    pub hash: String,
    /// Hash of the block at `height - 1` (`"0"×64` for genesis).
    pub previous_hash: String,
    /// Merkle root of the block's transaction ids.
    pub merkle_root: String,
    /// Timestamp in its wire form, e.g. `2024-01-01T00:00:10.500000+00:00`.
    pub timestamp: String,
    /// The same timestamp as microseconds since the Unix epoch: the time index's sort key.
    pub timestamp_micros: i64,
    /// Producer (validator) of the block.
    pub producer: String,
    /// Number of transactions in the block.
    pub transaction_count: u32,
    /// Stored size of the block in bytes, as served.
    pub block_size_bytes: u64,
}

/// One block as handed to the store for appending, and as returned by a rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    /// The block's summary fields.
    pub meta: BlockMeta,
    /// Transaction ids in block order; each is indexed to `(height, index)`.
    pub tx_ids: Vec<String>,
    /// The served JSON document, returned verbatim by reads.
    pub body: Vec<u8>,
}

/// What the store knows about the chain as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    /// Layout version of the open file ([`FORMAT_VERSION`] once opened).
    pub format_version: u32,
    /// Network name recorded at creation or by [`BlockStore::set_genesis`].
    pub network: String,
    /// Hash of the stored block at height 0, once there is one.
    pub genesis_hash: Option<String>,
}

/// Running totals, kept in the meta table and updated in the same commit as the blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Number of stored blocks (tip height + 1, or 0).
    pub blocks: u64,
    /// Sum of the blocks' `transaction_count`.
    pub transactions: u64,
    /// Sum of the blocks' `block_size_bytes`.
    pub bytes: u64,
}

/// Sort direction of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Lowest first.
    Asc,
    /// Highest first.
    Desc,
}

/// Why a store operation failed. The API maps these onto the error catalog (ST_00x, BM_00x).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another handle in this one) holds the store file.
    #[error("block store {path} is already open in another process")]
    AlreadyOpen {
        /// The store file.
        path: std::path::PathBuf,
    },
    /// The file was written by a newer block-manager.
    #[error("block store format version {found} is newer than the supported version {supported}")]
    NewerFormat {
        /// Version found in the file.
        found: u32,
        /// Highest version this build reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// An append did not continue the tip; nothing was written.
    #[error("block height {got} does not continue the chain: expected {expected}")]
    NotContiguous {
        /// The height that would continue the chain.
        expected: u64,
        /// The height that was offered.
        got: u64,
    },
    /// The store cannot be used at all right now (ST_001).
    #[error("block store unavailable: {0}")]
    Unavailable(String),
    /// The volume is full or a quota was hit (ST_004).
    #[error("block store volume is full: {0}")]
    Full(String),
    /// The file or its folder is not writable/readable by us, or the volume is read-only (ST_005).
    #[error("block store permission denied: {0}")]
    PermissionDenied(String),
    /// A write failed for another reason (ST_002).
    #[error("block store write failed: {0}")]
    Write(String),
    /// A read failed for another reason (ST_003).
    #[error("block store read failed: {0}")]
    Read(String),
    /// The file's contents are not what this store wrote.
    #[error("block store is corrupt: {0}")]
    Corrupt(String),
    /// A rollback would remove a block at or below the finality floor; nothing was removed.
    #[error(
        "refusing to roll back above height {height}: blocks up to the finality floor {floor} are final"
    )]
    BelowFinalityFloor {
        /// The height the rollback would have kept as the new tip.
        height: u64,
        /// The finality floor ([`BlockStore::finality_floor`]).
        floor: u64,
    },
}

/// The block store's operations, behind a trait so that a second backend can be added later.
///
/// Every method is blocking; reads run concurrently with the single writer.
pub trait BlockStore: Send + Sync + 'static {
    /// The highest stored block, found by one B-tree descent (never a scan).
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError>;
    /// The block summary at `height`.
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError>;
    /// The stored JSON body at `height`.
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The height of the block with this hash.
    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError>;
    /// Where a transaction is stored: `(block height, index in the block)`.
    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError>;
    /// Summaries of heights in `from..=to`, by height in `order`, skipping `offset`, at most
    /// `limit`.
    fn metas(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError>;
    /// Summaries of heights in `from..=to`, sorted by `(timestamp_micros, height)` in `order`,
    /// skipping `offset`, at most `limit`; served from the time index.
    fn metas_by_time(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError>;
    /// At most `limit` bodies, ascending from height `from`, and no more of them than fit in
    /// `max_bytes` together; the first is returned whatever its size. The read stops at the
    /// budget: a body past it is never read whole.
    fn bodies(&self, from: u64, limit: usize, max_bytes: usize)
    -> Result<Vec<Vec<u8>>, StoreError>;
    /// Block, transaction and byte totals, read from the meta table in O(1).
    fn totals(&self) -> Result<Totals, StoreError>;
    /// Format version, network and genesis hash.
    fn chain_info(&self) -> Result<ChainInfo, StoreError>;
    /// Appends the genesis block (height 0, into an empty store) and records `network`, in one
    /// commit.
    fn set_genesis(&self, network: &str, genesis: BlockRecord) -> Result<(), StoreError>;
    /// Appends `blocks` in one atomic, durable (fsync'd) commit. Their heights must continue the
    /// tip one by one, else [`StoreError::NotContiguous`] and nothing is written.
    fn append(&self, blocks: &[BlockRecord]) -> Result<(), StoreError>;
    /// Atomically removes every block above `height` with all its index entries and returns
    /// them ascending (for quarantine). Genesis is never removed. The whole removal is one
    /// transaction, so callers keep it bounded (a reorg depth). A `height` below the
    /// [finality floor](BlockStore::finality_floor) is refused with
    /// [`StoreError::BelowFinalityFloor`] and nothing is removed.
    fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, StoreError>;
    /// A cheap write probe for the health check, safe to call every few seconds: the store is
    /// usable (a latched I/O failure is recovered first) and its volume takes a new fsync'd write.
    fn check_writable(&self) -> Result<(), StoreError>;
    /// Size of the store file in bytes.
    fn file_size(&self) -> Result<u64, StoreError>;
    /// The store file.
    fn path(&self) -> &Path;
    /// The finality floor: the highest height ever buried deeper than the finality depth
    /// (`synchronization.max_reorg_depth`) below the tip. Blocks at or below it are final: no
    /// rollback removes them, so they may be served as immutable. It only rises, is kept across
    /// restarts, and is raised by [`BlockStore::append`] in the same commit as the blocks when
    /// the engine was opened with a finality depth. Cheap: engines keep it in memory.
    fn finality_floor(&self) -> Result<u64, StoreError>;
    /// Raises the finality floor to `height` (never above the tip, never lowering it) in one
    /// durable commit; returns the floor now in force.
    fn raise_finality_floor(&self, height: u64) -> Result<u64, StoreError>;
    /// Records that the quarantine filed the block named by `key` (its hash and a digest of
    /// its body); `false` when that key was recorded before, so the caller files nothing. The
    /// index is bounded: the oldest keys are forgotten first.
    fn record_quarantined(&self, key: &str) -> Result<bool, StoreError>;
    /// Blocks whose timestamp is at or after `since_micros`, counting at most `cap`. Served
    /// from the time index, so it costs the number of blocks counted, never the chain.
    fn blocks_since(&self, since_micros: i64, cap: u64) -> Result<u64, StoreError>;
    /// The rollback log, newest first: the last [`ROLLBACK_LOG_MAX`] rollbacks, each recorded
    /// by [`BlockStore::rollback_above`] in the same commit as the removal, with the hashes it
    /// orphaned. Event streams resumed from an orphaned block find their way back through it.
    fn rollback_log(&self) -> Result<Vec<Rollback>, StoreError>;

    /// Which of the `ids` are stored, in one lookup (validation needs one per transaction of
    /// a whole group: never a round trip each on an engine across a network).
    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let mut stored = HashSet::new();
        for id in ids {
            if self.tx_location(id)?.is_some() {
                stored.insert((*id).to_string());
            }
        }
        Ok(stored)
    }

    /// Wakes `watch` whenever another process changes the chain (an engine shared by several
    /// replicas); this process's own commits are the writer's to announce.
    fn follow_changes(&self, _watch: std::sync::Arc<tip::TipWatch>) {}

    /// [`BlockStore::body_at`] for an async caller. An engine whose reads wait on a network
    /// answers it without tying up a thread; the default answers at once (page-cache reads).
    fn body_at_async(&self, height: u64) -> StoreFuture<Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.body_at(height)))
    }

    /// [`BlockStore::height_of_hash`] for an async caller, as [`BlockStore::body_at_async`].
    fn height_of_hash_async(&self, hash: &str) -> StoreFuture<Option<u64>> {
        Box::pin(std::future::ready(self.height_of_hash(hash)))
    }

    /// Whether the engine keeps the quarantine's entries itself (a table on PostgreSQL, where
    /// replicas are stateless and share one quarantine), instead of the quarantine folder.
    fn keeps_quarantine(&self) -> bool {
        false
    }

    /// Files one quarantine entry `name` (its bytes, whole), dropping the oldest entries first
    /// until at most `max_entries` and `max_bytes` are kept with it, in one commit.
    fn put_quarantined(
        &self,
        _name: &str,
        _entry: &[u8],
        _max_entries: usize,
        _max_bytes: u64,
    ) -> Result<(), StoreError> {
        Err(StoreError::Write(
            "this engine keeps no quarantine entries: they go to the quarantine folder".into(),
        ))
    }

    /// The quarantine entries the engine keeps, oldest first: names and sizes.
    fn quarantined(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }

    /// The engine's name, as health and logs show it: `embedded` or `postgres`.
    fn engine(&self) -> &'static str {
        "embedded"
    }

    /// Whether reads are local page-cache reads that may run on the async threads. When not,
    /// every read but the in-memory ones (tip, totals, floor,
    /// chain info) goes to a blocking thread.
    fn reads_inline(&self) -> bool {
        true
    }

    /// Whether the engine can reach its storage now (a database across a network); a local
    /// file is always reachable, and its problems show in [`BlockStore::check_writable`].
    fn check_reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The local path whose volume holds the store, for free-space checks; `None` when the
    /// store is not on a local volume.
    fn volume(&self) -> Option<&Path> {
        Some(self.path())
    }

    /// [`BlockStore::height_of_hash`] of each of `hashes`, in their order, in one lookup
    /// (`verify` checks a page of blocks at once: never a round trip each across a network).
    fn heights_of_hashes(&self, hashes: &[&str]) -> Result<Vec<Option<u64>>, StoreError> {
        hashes.iter().map(|h| self.height_of_hash(h)).collect()
    }

    /// [`BlockStore::tx_location`] of each of `ids`, in their order, in one lookup.
    fn tx_locations(&self, ids: &[&str]) -> Result<Vec<Option<(u64, u32)>>, StoreError> {
        ids.iter().map(|id| self.tx_location(id)).collect()
    }

    /// [`BlockStore::body_at`] of the `count` heights from `from`: what reads by height serve.
    fn served_bodies(&self, from: u64, count: usize) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (from..from + count as u64)
            .map(|h| self.body_at(h))
            .collect()
    }
}

/// What the async reads of [`BlockStore`] return.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// Rollbacks the store remembers ([`BlockStore::rollback_log`]); the oldest are forgotten first.
/// Far more than sync's reorg damping lets happen in a window (5 in 600 s by default).
pub const ROLLBACK_LOG_MAX: usize = 64;

/// A block's place in the chain: its height and hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Height of the block.
    pub height: u64,
    /// Hash of the block, 64 lowercase hex characters.
    pub hash: String,
}

impl Position {
    /// The position of the block `hash` at `height`.
    pub fn new(height: u64, hash: impl Into<String>) -> Self {
        Self {
            height,
            hash: hash.into(),
        }
    }
}

/// One entry of the rollback log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollback {
    /// The block kept as the new tip: the common ancestor of the old and new branches.
    pub ancestor: Position,
    /// The tip before the rollback.
    pub old_tip: Position,
    /// Hashes of the removed blocks, ascending from `ancestor.height + 1`.
    pub orphaned: Vec<String>,
}

/// The floor a tip at `tip` implies with a finality depth of `depth`: the highest height
/// buried deeper than `depth` blocks below the tip (0 while the chain is shorter).
pub fn floor_for_tip(tip: u64, depth: u64) -> u64 {
    tip.saturating_sub(depth.saturating_add(1))
}

/// `(available, total)` bytes of the volume holding `path` (which need not exist yet: the
/// nearest existing ancestor is asked).
pub fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut probe = path;
    // The store file or its folder may not exist before the first start; the volume that will
    // hold them is the one holding their nearest existing ancestor.
    while !probe.exists() {
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    let stats = fs4::statvfs(probe)?;
    Ok((stats.available_space(), stats.total_space()))
}
