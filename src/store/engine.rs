//! [`Engine`]: what a storage engine implements, in one trait, so that each engine's code
//! stays in one `impl` block. Nothing outside `store/` holds an engine: holders take the
//! faces cut from it by who may hold what ([`BlockReads`], [`ChainWriter`], [`StoreProbe`],
//! [`QuarantineIndex`]), which `store/` implements for every engine by delegation.

use std::collections::HashSet;
use std::path::Path;

use super::tip::TipWatch;
use super::writes::WriteTxn;
use super::{
    BlockMeta, BlockReads, BlockRecord, ChainInfo, ChainWriter, Order, QuarantineIndex, Rollback,
    StoreError, StoreFuture, StoreProbe, Totals,
};

/// A storage engine's operations. Every method is blocking; reads run concurrently with the
/// single writer.
pub trait Engine: Send + Sync + 'static {
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
    /// [finality floor](Engine::finality_floor) is refused with
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
    /// restarts, and is raised by [`Engine::append`] in the same commit as the blocks when
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
    /// by [`Engine::rollback_above`] in the same commit as the removal, with the hashes it
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

    /// The engine's name, as health and logs show it: `embedded` or `postgres`.
    fn engine(&self) -> &'static str {
        "embedded"
    }

    /// Whether reads are local page-cache reads that may run on the async threads. When not,
    /// every read but the in-memory ones (tip, totals, floor, chain info) goes to a blocking
    /// thread.
    fn reads_inline(&self) -> bool {
        true
    }

    /// Wakes `watch` whenever another process changes the chain (an engine shared by several
    /// replicas); this process's own commits are the writer's to announce. Returns whether
    /// the engine sets the tip in `watch` itself, for every commit in its commit order (see
    /// [`TipWatch`]); an engine of one process leaves that to the writer.
    fn follow_changes(&self, _watch: std::sync::Arc<TipWatch>) -> bool {
        false
    }

    /// [`Engine::body_at`] for an async caller. An engine whose reads wait on a network
    /// answers it without tying up a thread; the default answers at once (page-cache reads).
    fn body_at_async(&self, height: u64) -> StoreFuture<Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.body_at(height)))
    }

    /// [`Engine::height_of_hash`] for an async caller, as [`Engine::body_at_async`].
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

    /// Whether the engine can reach its storage now (a database across a network); a local
    /// file is always reachable, and its problems show in [`Engine::check_writable`].
    fn check_reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The local path whose volume holds the store, for free-space checks; `None` when the
    /// store is not on a local volume.
    fn volume(&self) -> Option<&Path> {
        Some(self.path())
    }

    /// [`BlockReads::heights_of_hashes`].
    fn heights_of_hashes(&self, hashes: &[&str]) -> Result<Vec<Option<u64>>, StoreError> {
        hashes.iter().map(|h| self.height_of_hash(h)).collect()
    }

    /// [`BlockReads::tx_locations`].
    fn tx_locations(&self, ids: &[&str]) -> Result<Vec<Option<(u64, u32)>>, StoreError> {
        ids.iter().map(|id| self.tx_location(id)).collect()
    }

    /// [`BlockReads::served_bodies`].
    fn served_bodies(&self, from: u64, count: usize) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (from..from + count as u64)
            .map(|h| self.body_at(h))
            .collect()
    }

    /// Begins a write transaction: the chain's write lock where the engine has one, the tip
    /// as of the lock, and lookups for validating a group. Nothing is written until
    /// [`WriteTxn::commit`]; dropping it writes nothing.
    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError>;

    /// [`ChainWriter::begin_for`].
    fn begin_for(&self, tx_ids: &[&str]) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let _ = tx_ids;
        self.begin()
    }

    /// [`StoreProbe::standbys`].
    fn standbys(&self) -> Vec<super::StandbyState> {
        Vec::new()
    }

    /// [`StoreProbe::reads_served`].
    fn reads_served(&self) -> Option<(u64, u64)> {
        None
    }
}

// Every face, for every engine, by delegation: an engine's code stays in its one `impl Engine`.

impl<T: Engine> BlockReads for T {
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        Engine::tip(self)
    }
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        Engine::meta_at(self, height)
    }
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Engine::body_at(self, height)
    }
    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        Engine::height_of_hash(self, hash)
    }
    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        Engine::tx_location(self, tx_id)
    }
    fn metas(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        Engine::metas(self, from, to, order, offset, limit)
    }
    fn metas_by_time(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        Engine::metas_by_time(self, from, to, order, offset, limit)
    }
    fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Engine::bodies(self, from, limit, max_bytes)
    }
    fn totals(&self) -> Result<Totals, StoreError> {
        Engine::totals(self)
    }
    fn chain_info(&self) -> Result<ChainInfo, StoreError> {
        Engine::chain_info(self)
    }
    fn finality_floor(&self) -> Result<u64, StoreError> {
        Engine::finality_floor(self)
    }
    fn blocks_since(&self, since_micros: i64, cap: u64) -> Result<u64, StoreError> {
        Engine::blocks_since(self, since_micros, cap)
    }
    fn rollback_log(&self) -> Result<Vec<Rollback>, StoreError> {
        Engine::rollback_log(self)
    }
    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        Engine::stored_tx_ids(self, ids)
    }
    fn engine(&self) -> &'static str {
        Engine::engine(self)
    }
    fn reads_inline(&self) -> bool {
        Engine::reads_inline(self)
    }
    fn body_at_async(&self, height: u64) -> StoreFuture<Option<Vec<u8>>> {
        Engine::body_at_async(self, height)
    }
    fn height_of_hash_async(&self, hash: &str) -> StoreFuture<Option<u64>> {
        Engine::height_of_hash_async(self, hash)
    }
    fn heights_of_hashes(&self, hashes: &[&str]) -> Result<Vec<Option<u64>>, StoreError> {
        Engine::heights_of_hashes(self, hashes)
    }
    fn tx_locations(&self, ids: &[&str]) -> Result<Vec<Option<(u64, u32)>>, StoreError> {
        Engine::tx_locations(self, ids)
    }
    fn served_bodies(&self, from: u64, count: usize) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        Engine::served_bodies(self, from, count)
    }
}

impl<T: Engine> ChainWriter for T {
    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        Engine::begin(self)
    }
    fn begin_for(&self, tx_ids: &[&str]) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        Engine::begin_for(self, tx_ids)
    }
    fn set_genesis(&self, network: &str, genesis: BlockRecord) -> Result<(), StoreError> {
        Engine::set_genesis(self, network, genesis)
    }
    fn append(&self, blocks: &[BlockRecord]) -> Result<(), StoreError> {
        Engine::append(self, blocks)
    }
    fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, StoreError> {
        Engine::rollback_above(self, height)
    }
    fn raise_finality_floor(&self, height: u64) -> Result<u64, StoreError> {
        Engine::raise_finality_floor(self, height)
    }
    fn follow_changes(&self, watch: std::sync::Arc<TipWatch>) -> bool {
        Engine::follow_changes(self, watch)
    }
}

impl<T: Engine> QuarantineIndex for T {
    fn record_quarantined(&self, key: &str) -> Result<bool, StoreError> {
        Engine::record_quarantined(self, key)
    }
    fn keeps_quarantine(&self) -> bool {
        Engine::keeps_quarantine(self)
    }
    fn put_quarantined(
        &self,
        name: &str,
        entry: &[u8],
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        Engine::put_quarantined(self, name, entry, max_entries, max_bytes)
    }
    fn quarantined(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Engine::quarantined(self)
    }
}

impl<T: Engine> StoreProbe for T {
    fn check_readable(&self) -> Result<Option<u64>, StoreError> {
        Engine::tip(self).map(|tip| tip.map(|t| t.height))
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        Engine::check_writable(self)
    }
    fn check_reachable(&self) -> Result<(), StoreError> {
        Engine::check_reachable(self)
    }
    fn file_size(&self) -> Result<u64, StoreError> {
        Engine::file_size(self)
    }
    fn volume(&self) -> Option<&Path> {
        Engine::volume(self)
    }
    fn path(&self) -> &Path {
        Engine::path(self)
    }
    fn engine(&self) -> &'static str {
        Engine::engine(self)
    }
    fn standbys(&self) -> Vec<super::StandbyState> {
        Engine::standbys(self)
    }
    fn reads_served(&self) -> Option<(u64, u64)> {
        Engine::reads_served(self)
    }
}
