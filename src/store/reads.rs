//! [`BlockReads`]: every read of the chain, what api/, sync/ and verify hold. Reads never
//! block the async runtime: an engine whose reads are page-cache reads says so
//! ([`BlockReads::reads_inline`]), and every other read goes through [`off_runtime`].

use std::collections::HashSet;
use std::sync::Arc;

use super::{BlockMeta, ChainInfo, Order, Rollback, StoreError, StoreFuture, Totals};

/// The reads of the block store. Every method is blocking (see [`off_runtime`]); reads run
/// concurrently with the one writer and see only committed blocks.
pub trait BlockReads: Send + Sync + 'static {
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
    /// `max_bytes` together; the first is returned whatever its size.
    fn bodies(&self, from: u64, limit: usize, max_bytes: usize)
    -> Result<Vec<Vec<u8>>, StoreError>;
    /// Block, transaction and byte totals, in O(1).
    fn totals(&self) -> Result<Totals, StoreError>;
    /// Format version, network and genesis hash.
    fn chain_info(&self) -> Result<ChainInfo, StoreError>;
    /// The finality floor: blocks at or below it are final (see [`super::engine::Engine::finality_floor`]).
    fn finality_floor(&self) -> Result<u64, StoreError>;
    /// Blocks whose timestamp is at or after `since_micros`, counting at most `cap`.
    fn blocks_since(&self, since_micros: i64, cap: u64) -> Result<u64, StoreError>;
    /// The rollback log, newest first (see [`super::engine::Engine::rollback_log`]).
    fn rollback_log(&self) -> Result<Vec<Rollback>, StoreError>;
    /// Which of the `ids` are stored, in one lookup.
    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError>;
    /// The engine's name: `embedded` or `postgres`.
    fn engine(&self) -> &'static str;
    /// Whether reads are local page-cache reads that may run on the async threads (spec §12).
    fn reads_inline(&self) -> bool;
    /// [`BlockReads::body_at`] for an async caller: an engine whose reads wait on a network
    /// answers it without tying up a thread (see [`super::engine::Engine::body_at_async`]).
    fn body_at_async(&self, height: u64) -> StoreFuture<Option<Vec<u8>>>;
    /// [`BlockReads::height_of_hash`] for an async caller, as [`BlockReads::body_at_async`].
    fn height_of_hash_async(&self, hash: &str) -> StoreFuture<Option<u64>>;

    /// [`BlockReads::height_of_hash`] of each of `hashes`, in their order, in one lookup
    /// (`verify` checks a page of blocks at once: never a round trip each across a network).
    fn heights_of_hashes(&self, hashes: &[&str]) -> Result<Vec<Option<u64>>, StoreError>;

    /// [`BlockReads::tx_location`] of each of `ids`, in their order, in one lookup.
    fn tx_locations(&self, ids: &[&str]) -> Result<Vec<Option<(u64, u32)>>, StoreError>;

    /// [`BlockReads::body_at`] of the `count` heights from `from`: what reads by height serve.
    fn served_bodies(&self, from: u64, count: usize) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
}

/// Runs the store read `f` on a blocking thread: the one way async code reads the store
/// when the read may wait (a network, a B-tree walk). A read that panicked is a read error.
pub async fn off_runtime<T: Send + 'static>(
    reads: &Arc<dyn BlockReads>,
    f: impl FnOnce(&dyn BlockReads) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let reads = Arc::clone(reads);
    tokio::task::spawn_blocking(move || f(&*reads))
        .await
        .map_err(|_| StoreError::Read("a store read panicked".into()))?
}
