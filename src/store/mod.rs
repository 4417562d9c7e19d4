//! The block store's face: the types every engine stores and returns ([`BlockMeta`],
//! [`BlockRecord`], [`Totals`], [`Order`], [`StoreError`]), and the faces holders take, by who
//! may hold what: [`BlockReads`] (api/, sync/, verify), [`ChainWriter`] (the ledger),
//! [`StoreProbe`] (health, the sampler), [`QuarantineIndex`] (the quarantine). It names no
//! engine: `open` is the one place that chooses one, `embedded` (a redb file and body log) or
//! `postgres`; both implement [`engine::Engine`] and pass the same `conformance` suite.
//!
//! Records are opaque, already validated: the served JSON body, a compact [`BlockMeta`] and
//! the block's transaction ids, with the indexes the API needs (hash → height, transaction id
//! → location, timestamp → height) and running totals, all updated in the same atomic commit.
//! The store knows nothing about validation, HTTP or async: callers run it on blocking
//! threads (see [`reads::off_runtime`]).
//!
//! Invariant: the stored heights are always `0..=tip` without gaps — an append only continues
//! the tip and a rollback only removes a suffix — so paging by height is arithmetic rather
//! than a scan.
//!
//! Finality: the store keeps a floor that only rises ([`BlockReads::finality_floor`]) and
//! refuses any rollback that would remove a block at or below it, whoever asks.
//!
//! Also here: `tip` (commit notifications).

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod engine;
pub mod lease;
pub mod open;
pub mod postgres;
pub mod probe;
pub mod reads;
pub mod tip;
pub mod writes;

use std::path::Path;

pub use embedded::{OpenReport, ReadOnlyStore, RedbStore};
pub use postgres::PgStore;
pub use probe::{StandbyState, StoreProbe};
pub use reads::BlockReads;
pub use writes::{ChainWriter, Committed, QuarantineIndex, WriteTxn};

/// Version of the store's own layout (tables and encodings), kept in the meta table. A file
/// written by a newer version is refused rather than misread.
pub const FORMAT_VERSION: u32 = 1;

/// Network recorded when a store file is created, until [`engine::Engine::set_genesis`] names one.
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
    /// Network name recorded at creation or by [`engine::Engine::set_genesis`].
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
        /// The finality floor ([`engine::Engine::finality_floor`]).
        floor: u64,
    },
}

/// The whole store, for the few places that need every face (start-up, `open`, tests).
/// Everything else holds one face: api/, sync/ and verify [`BlockReads`], the ledger
/// [`ChainWriter`], health and the sampler [`StoreProbe`], the quarantine
/// [`QuarantineIndex`].
pub trait BlockStore: BlockReads + ChainWriter + StoreProbe + QuarantineIndex {}

impl<T: BlockReads + ChainWriter + StoreProbe + QuarantineIndex> BlockStore for T {}

/// What the async reads of [`BlockReads`] return.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// Rollbacks the store remembers ([`engine::Engine::rollback_log`]); the oldest are forgotten first.
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
