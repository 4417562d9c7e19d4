//! [`RedbStore`]: the [`BlockStore`] on one redb file.
//!
//! Every write is one durable commit (fsync, two-phase) with redb's quick repair on, so a crash
//! costs the next start-up a header check, not a scan of the whole file. Reads take their own
//! snapshot and run beside the one writer.
//!
//! redb latches the first I/O failure: every later operation on that handle fails until the file
//! is reopened. So after an I/O failure (a full disk, say) the next operation reopens the file,
//! and the store recovers by itself once the cause is gone.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::body_log::BodyLog;
use super::database::{connect, initialise, write_in};
use super::engine::Engine;
use super::failure::{Fault, Op, Outcome, classify, io_error, is_latched, settle};
use super::files::probe_path;
use super::hash_hints::HashHints;
use super::listing;
use super::tables::{self, WriteTables};
use super::writes::{Change, HeldChain, Staged, WriteTxn};
use super::{
    BlockMeta, BlockRecord, ChainInfo, DEFAULT_NETWORK, Order, Position, Rollback, StoreError,
    Totals, codec, floor_for_tip,
};
use crate::chain::model::DOCUMENT_ID_PREFIX;

/// How the store's file was opened; worth a log line at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The file was new (or empty) and has been initialised.
    pub created: bool,
    /// redb had to rebuild its allocator by walking the whole file (a crash without quick
    /// repair's saved state); with quick repair on this stays `false` after a crash.
    pub full_repair: bool,
    /// Time the open took, repair included.
    pub duration: Duration,
}

/// The block store on a redb file: durable quick-repair commits, concurrent snapshot reads, and
/// a reopen after redb latches an I/O failure.
pub struct RedbStore {
    path: PathBuf,
    cache_bytes: usize,
    /// `None` only while a reopen after an I/O failure has not succeeded yet.
    db: RwLock<Option<Database>>,
    /// Serialises writers, so that a reopen never races a write transaction.
    writer: Mutex<()>,
    /// Set when redb has latched an I/O failure on the current handle.
    reopen_needed: AtomicBool,
    /// The read snapshot of the latest commit, shared by every read until the next write.
    snapshot: RwLock<SharedSnapshot>,
    /// A copy of the bodies for fast reads by height; `None` when its files cannot be opened.
    log: Option<BodyLog>,
    report: OpenReport,
    /// The finality floor as of the last commit (kept in the meta table), so that every read
    /// that asks whether a block is final costs an atomic load.
    floor: AtomicU64,
    /// Blocks this far below the tip become final as appends raise the tip; `None`: only
    /// [`BlockStore::raise_finality_floor`] raises the floor.
    finality_depth: Option<u64>,
    /// Where reads by hash look first (checked against the body log; see `hash_hints`).
    hints: Arc<HashHints>,
    /// The thread filling `hints` from the hash index after open; joined on drop, so its read
    /// transaction never outlives the store.
    hint_fill: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Beginning a read transaction goes through redb's transaction tracker; under a read-heavy
/// load that was a visible part of a block read. Reads therefore share one snapshot, which
/// every write (commit or not) retires.
#[derive(Default)]
struct SharedSnapshot {
    /// Bumped by every write, so that a snapshot begun before it is never published after it.
    generation: u64,
    current: Option<Arc<ReadTransaction>>,
    /// The hash index as `current` sees it, opened once per snapshot: opening a table per
    /// lookup was a third of a lookup by hash.
    hashes: Option<Arc<HashIndex>>,
}

type HashIndex = redb::ReadOnlyTable<&'static str, u64>;

impl RedbStore {
    /// Opens the store at `path`, creating its parent folders and the file when missing, with a
    /// page cache of `cache_bytes`. A file of a newer format is refused with
    /// [`StoreError::NewerFormat`]; one held by another process with
    /// [`StoreError::AlreadyOpen`], at once.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let started = Instant::now();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Blocks may carry data only this service should read: folders it creates are 0700
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    io_error(&e, Op::Open, &format!("cannot create {}", parent.display()))
                })?;
        }
        // redb creates a missing file with the umask's mode (0644 as a rule); made here first,
        // it is 0600. An existing file keeps its mode: redb initialises an empty one in place.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error(&e, Op::Open, &path.display().to_string()))?;
        let (db, full_repair) = connect(path, cache_bytes, true)?;
        let created = initialise(&db).map_err(|f| settle(f, Op::Open, path))?;
        let log = open_log(&db, path).map_err(|f| settle(f, Op::Open, path))?;
        let floor = read_floor(&db).map_err(|f| settle(f, Op::Open, path))?;
        let hints = Arc::new(HashHints::new());
        // Without a body log there is nothing to check a hint against: no hints.
        let hint_fill = log
            .as_ref()
            .and_then(|_| db.begin_read().ok())
            .and_then(|txn| {
                let hints = Arc::clone(&hints);
                std::thread::Builder::new()
                    .name("hash-hints".into())
                    .spawn(move || fill_hints(&txn, &hints))
                    .ok()
            });
        Ok(Self {
            path: path.to_path_buf(),
            cache_bytes,
            db: RwLock::new(Some(db)),
            writer: Mutex::new(()),
            reopen_needed: AtomicBool::new(false),
            snapshot: RwLock::new(SharedSnapshot::default()),
            log,
            report: OpenReport {
                created,
                full_repair,
                duration: started.elapsed(),
            },
            floor: AtomicU64::new(floor),
            finality_depth: None,
            hints,
            hint_fill: Mutex::new(hint_fill),
        })
    }

    /// Makes every append raise the finality floor to the height buried deeper than `depth`
    /// below the new tip, in the same commit. A floor behind the current tip (a store written
    /// before the floor existed, or a smaller depth than last time) is raised here at once.
    pub fn with_finality_depth(mut self, depth: u64) -> Result<Self, StoreError> {
        self.finality_depth = Some(depth);
        if let Some(tip) = self.tip()? {
            let due = floor_for_tip(tip.height, depth);
            if due > self.floor.load(Ordering::Acquire) {
                self.raise_finality_floor(due)?;
            }
        }
        Ok(self)
    }

    /// How the file was opened.
    pub fn open_report(&self) -> OpenReport {
        self.report
    }

    /// The body log watermark stored in the meta table, as the next open would read it.
    #[cfg(test)]
    pub(super) fn stored_body_log_watermark(&self) -> Option<u64> {
        self.read(|txn| {
            Ok(tables::read_body_log_watermark(
                &txn.open_table(tables::META)?,
            ))
        })
        .unwrap()
    }

    /// Heights the body log serves (`0..n`); `None` without a log.
    #[cfg(test)]
    pub(super) fn body_log_trusted(&self) -> Option<u64> {
        self.log.as_ref().map(BodyLog::trusted)
    }

    /// [`BodyLog::data_mapped`], when the log is open.
    #[cfg(test)]
    pub(super) fn body_log_mapped(&self) -> Option<(u64, u64)> {
        self.log.as_ref().map(BodyLog::data_mapped)
    }

    /// Closes the file, reporting any error a drop would ignore. Call it last at shutdown.
    pub fn close(self) -> Result<(), StoreError> {
        self.settle_log();
        self.retire_snapshot();
        let slot = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match slot {
            Some(db) => db
                .close()
                .map_err(|e| classify(e.into(), Op::Write, &self.path)),
            None => Ok(()),
        }
    }

    /// Runs `f` on the snapshot of the latest commit.
    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Outcome<T>) -> Result<T, StoreError> {
        let txn = self.snapshot()?;
        f(&txn).map_err(|e| self.settle(e, Op::Read))
    }

    /// The shared snapshot, begun now if the last write retired it.
    fn snapshot(&self) -> Result<Arc<ReadTransaction>, StoreError> {
        if self.reopen_needed.load(Ordering::Acquire) {
            let writer = self.lock_writer();
            self.recover(&writer)?;
        }
        self.shared_snapshot()
    }

    /// [`Self::read`] by the holder of the writer lock, which recovers with the lock it holds
    /// (taking it again would deadlock).
    fn read_held<T>(
        &self,
        writer: &MutexGuard<'_, ()>,
        f: impl FnOnce(&ReadTransaction) -> Outcome<T>,
    ) -> Result<T, StoreError> {
        self.recover(writer)?;
        let txn = self.shared_snapshot()?;
        f(&txn).map_err(|e| self.settle(e, Op::Read))
    }

    /// The shared snapshot of the latest commit, begun now if the last write retired it.
    fn shared_snapshot(&self) -> Result<Arc<ReadTransaction>, StoreError> {
        let generation = {
            let shared = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(snap) = &shared.current {
                return Ok(Arc::clone(snap));
            }
            shared.generation
        };
        let snap = {
            let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
            let db = slot.as_ref().ok_or_else(closed)?;
            Arc::new(
                db.begin_read()
                    .map_err(|e| self.settle(e.into(), Op::Read))?,
            )
        };
        let mut shared = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // A write since `generation` was read may have committed after this snapshot began.
        if shared.generation == generation && shared.current.is_none() {
            shared.current = Some(Arc::clone(&snap));
        }
        Ok(snap)
    }

    /// Retires the shared snapshot: reads from now on see this write.
    fn retire_snapshot(&self) {
        let mut shared = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shared.generation = shared.generation.wrapping_add(1);
        shared.current = None;
        shared.hashes = None;
    }

    /// The hash index of the shared snapshot, opened now if this snapshot has not yet.
    fn hash_index(&self) -> Result<Arc<HashIndex>, StoreError> {
        if !self.reopen_needed.load(Ordering::Acquire)
            && let Some(hashes) = &self
                .snapshot
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .hashes
        {
            return Ok(Arc::clone(hashes));
        }
        let txn = self.snapshot()?;
        let open = || -> Outcome<HashIndex> { Ok(txn.open_table(tables::HASH_INDEX)?) };
        let hashes = Arc::new(open().map_err(|e| self.settle(e, Op::Read))?);
        let mut shared = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Only beside the snapshot it was opened in: a write may have retired that one since.
        if shared
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &txn))
        {
            shared.hashes = Some(Arc::clone(&hashes));
        }
        Ok(hashes)
    }

    /// Runs `f` in one durable write transaction: committed when it returns `Ok`, aborted (so
    /// nothing is written) when it returns `Err`.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTables<'_>) -> Outcome<T>,
    ) -> Result<T, StoreError> {
        self.write_then(f, |_| ())
    }

    /// [`Self::write`], then `after` on the committed value while still the only writer. Each
    /// commit also stores the body log's watermark when it has moved.
    fn write_then<T>(
        &self,
        f: impl FnOnce(&mut WriteTables<'_>) -> Outcome<T>,
        after: impl FnOnce(&T),
    ) -> Result<T, StoreError> {
        let writer = self.lock_writer();
        self.write_held(&writer, f, after)
    }

    /// [`Self::write_then`] by the holder of the writer lock.
    fn write_held<T>(
        &self,
        writer: &MutexGuard<'_, ()>,
        f: impl FnOnce(&mut WriteTables<'_>) -> Outcome<T>,
        after: impl FnOnce(&T),
    ) -> Result<T, StoreError> {
        self.recover(writer)?;
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = slot.as_ref().ok_or_else(closed)?;
        let mut watermark = None;
        let result = write_in(db, |t| {
            let value = f(t)?;
            watermark = self.log.as_ref().and_then(BodyLog::to_persist);
            if let Some(w) = watermark {
                t.set_body_log_watermark(w)?;
            }
            Ok(value)
        })
        .map_err(|e| self.settle(e, Op::Write));
        if let Ok(value) = &result {
            if let (Some(log), Some(w)) = (&self.log, watermark) {
                log.persisted(w);
            }
            after(value);
        }
        self.retire_snapshot();
        result
    }

    /// Blocks committed at `first..`, preceded by `repaired` (the bodies of the log's gap below
    /// `first`), go to the body log.
    fn log_committed(&self, repaired: &Repaired, blocks: &[BlockRecord]) {
        let Some(log) = &self.log else { return };
        self.hints
            .insert(blocks.iter().map(|b| (b.meta.hash.as_str(), b.meta.height)));
        let mut bodies: Vec<&[u8]> = repaired.bodies.iter().map(Vec::as_slice).collect();
        if repaired.closes_gap {
            bodies.extend(blocks.iter().map(|b| b.body.as_slice()));
        }
        log.record(repaired.from, bodies);
    }

    /// Inside a commit appending at `first`: the bodies the log is missing below `first`, as
    /// many as one commit rewrites.
    fn repair_gap(&self, t: &WriteTables<'_>, first: u64) -> Outcome<Repaired> {
        let Some(log) = &self.log else {
            return Ok(Repaired::default());
        };
        let gap = log.gap(first);
        let mut bodies = Vec::with_capacity(gap.end.saturating_sub(gap.start) as usize);
        for h in gap.clone() {
            // A body that cannot be read stops the repair here, never the append
            match t.body(h) {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Repaired {
            from: gap.start,
            closes_gap: gap.start + bodies.len() as u64 == first,
            bodies,
        })
    }

    /// Fsyncs the body log and stores its final watermark (in an otherwise empty commit), so
    /// that the next open trusts it whole. Best effort: a failure only means more reads from
    /// redb after the next open. Not after a latched I/O failure: no reopen on the way out.
    fn settle_log(&self) {
        let Some(log) = &self.log else { return };
        log.flush();
        if log.to_persist().is_some() && !self.reopen_needed.load(Ordering::Acquire) {
            let _ = self.write(|_| Ok(()));
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panicked writer leaves nothing inconsistent behind
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reopens the file if redb latched an I/O failure. Holding the writer lock guarantees no
    /// write transaction is alive; reads still in flight see `DatabaseClosed` and fail once.
    fn recover(&self, _writer: &MutexGuard<'_, ()>) -> Result<(), StoreError> {
        if !self.reopen_needed.load(Ordering::Acquire) {
            return Ok(());
        }
        // A snapshot of the failed handle must not outlive it.
        self.retire_snapshot();
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.take() {
            // Closing reports the latched failure again; this reopen is what clears it
            let _ = old.close();
        }
        // `open`, not `create`: a file deleted underneath us must not come back as an empty chain
        let (db, _) = connect(&self.path, self.cache_bytes, false)?;
        *slot = Some(db);
        self.reopen_needed.store(false, Ordering::Release);
        Ok(())
    }

    fn settle(&self, fault: Fault, op: Op) -> StoreError {
        if is_latched(&fault) {
            self.reopen_needed.store(true, Ordering::Release);
        }
        settle(fault, op, &self.path)
    }
}

impl Engine for RedbStore {
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        self.read(|txn| tables::read_tip(&txn.open_table(tables::METAS)?))
    }

    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.read(|txn| tables::read_meta(&txn.open_table(tables::METAS)?, height))
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(body) = self.log.as_ref().and_then(|log| log.get(height)) {
            return Ok(Some(body));
        }
        self.read(|txn| {
            let bodies = txn.open_table(tables::BODIES)?;
            Ok(tables::read_body(&bodies, height)?.map(|(body, _)| body))
        })
    }

    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        if hash.len() == 64
            && let (Some(log), Some(height)) = (&self.log, self.hints.get(hash))
        {
            // The body stored there opens with its own id: `{"block_id":"<hash>"`.
            const OPEN: usize = DOCUMENT_ID_PREFIX.len();
            let mut id = [0u8; OPEN + 64];
            id[..OPEN].copy_from_slice(DOCUMENT_ID_PREFIX);
            id[OPEN..].copy_from_slice(hash.as_bytes());
            if log.opens_with(height, &id) {
                return Ok(Some(height));
            }
        }
        let hashes = self.hash_index()?;
        let get = || -> Outcome<Option<u64>> { Ok(hashes.get(hash)?.map(|v| v.value())) };
        get().map_err(|e| self.settle(e, Op::Read))
    }

    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        self.read(|txn| {
            let txs = txn.open_table(tables::TX_INDEX)?;
            Ok(txs.get(tx_id)?.map(|v| v.value()))
        })
    }

    fn metas(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        self.read(|txn| listing::by_height(txn, from, to, order, offset, limit))
    }

    fn metas_by_time(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        self.read(|txn| listing::by_time(txn, from, to, order, offset, limit))
    }

    fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|txn| read_bodies(txn, from, limit, max_bytes))
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(tables::META)?;
            match meta.get(tables::KEY_TOTALS)? {
                Some(v) => Ok(codec::decode_totals(v.value())?),
                None => Ok(Totals::default()),
            }
        })
    }

    fn chain_info(&self) -> Result<ChainInfo, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(tables::META)?;
            let text = |key: &str| -> Outcome<Option<String>> {
                Ok(meta
                    .get(key)?
                    .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
            };
            let format_version = match meta.get(tables::KEY_FORMAT_VERSION)? {
                Some(v) => codec::decode_u32(v.value(), "format version")?,
                None => return Err(StoreError::Corrupt("no format version".into()).into()),
            };
            Ok(ChainInfo {
                format_version,
                network: text(tables::KEY_NETWORK)?.unwrap_or_else(|| DEFAULT_NETWORK.into()),
                genesis_hash: text(tables::KEY_GENESIS_HASH)?,
            })
        })
    }

    fn set_genesis(&self, network: &str, genesis: BlockRecord) -> Result<(), StoreError> {
        self.set_genesis_held(&self.lock_writer(), network, genesis)
    }

    fn append(&self, blocks: &[BlockRecord]) -> Result<(), StoreError> {
        self.append_held(&self.lock_writer(), blocks)
    }

    fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, StoreError> {
        self.rollback_above_held(&self.lock_writer(), height)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        // The redb handle: recovers a latched I/O failure, or reports why it cannot
        self.read(|_| Ok(()))?;
        // The volume: a new small file, fsync'd and removed. A redb commit would do as a probe
        // but costs far more: with quick repair every commit rewrites the allocator state, which
        // grows with the file (~90 KiB per commit at 100k blocks), too much wear on an SD card
        // every few seconds. A new file also needs a free block, so a full volume fails it.
        let probe = probe_path(&self.path);
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|mut file| {
                file.write_all(&[0x5a; 4096])?;
                file.sync_data()
            });
        // Removed even after a failed write, so a probe never leaves anything behind for long
        let removed = fs::remove_file(&probe);
        let context = probe.display().to_string();
        written.map_err(|e| io_error(&e, Op::Write, &context))?;
        removed.map_err(|e| io_error(&e, Op::Write, &context))
    }

    fn file_size(&self) -> Result<u64, StoreError> {
        fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| io_error(&e, Op::Read, &self.path.display().to_string()))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn finality_floor(&self) -> Result<u64, StoreError> {
        Ok(self.floor.load(Ordering::Acquire))
    }

    fn raise_finality_floor(&self, height: u64) -> Result<u64, StoreError> {
        self.raise_finality_floor_held(&self.lock_writer(), height)
    }

    fn record_quarantined(&self, key: &str) -> Result<bool, StoreError> {
        self.write(|t| t.record_quarantined(key))
    }

    fn blocks_since(&self, since_micros: i64, cap: u64) -> Result<u64, StoreError> {
        self.read(|txn| listing::count_since(txn, since_micros, cap))
    }

    fn rollback_log(&self) -> Result<Vec<Rollback>, StoreError> {
        self.read(tables::read_rollback_log)
    }

    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        // The writer lock is held until the commit, so the tip read here is the one the
        // group's first block must continue. The change is still written by today's one
        // commit per group (`append_held`), which keeps that path's measured speed.
        let held = Held {
            store: self,
            writer: self.lock_writer(),
        };
        Ok(Box::new(Staged::begin(held)?))
    }
}

/// The embedded engine while a [`WriteTxn`] holds its writer lock.
struct Held<'a> {
    store: &'a RedbStore,
    writer: MutexGuard<'a, ()>,
}

impl HeldChain for Held<'_> {
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.store.read_held(&self.writer, |txn| {
            tables::read_meta(&txn.open_table(tables::METAS)?, height)
        })
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(body) = self.store.log.as_ref().and_then(|log| log.get(height)) {
            return Ok(Some(body));
        }
        self.store.read_held(&self.writer, |txn| {
            let bodies = txn.open_table(tables::BODIES)?;
            Ok(tables::read_body(&bodies, height)?.map(|(body, _)| body))
        })
    }

    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        self.store.read_held(&self.writer, |txn| {
            let txs = txn.open_table(tables::TX_INDEX)?;
            let mut stored = HashSet::new();
            for id in ids {
                if txs.get(*id)?.is_some() {
                    stored.insert((*id).to_string());
                }
            }
            Ok(stored)
        })
    }

    fn tx_height(&self, tx_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(crate::store::engine::Engine::tx_location(self.store, tx_id)?.map(|(height, _)| height))
    }

    fn write(&self, change: Change) -> Result<Vec<BlockRecord>, StoreError> {
        let (store, writer) = (self.store, &self.writer);
        match change {
            Change::Append(blocks) => store.append_held(writer, &blocks).map(|()| blocks),
            Change::Rollback(height) => store.rollback_above_held(writer, height),
            Change::Genesis(network, genesis) => store
                .set_genesis_held(writer, &network, genesis)
                .map(|()| Vec::new()),
            Change::RaiseFloor(height) => store
                .raise_finality_floor_held(writer, height)
                .map(|_| Vec::new()),
        }
    }

    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        self.store.read_held(&self.writer, |txn| {
            tables::read_tip(&txn.open_table(tables::METAS)?)
        })
    }

    fn finality_floor(&self) -> Result<u64, StoreError> {
        Ok(self.store.floor.load(Ordering::Acquire))
    }
}

/// The writes, by the holder of the writer lock: [`Engine`]'s one-shot writes take the lock
/// for one commit, a [`WriteTxn`] holds it from `begin` to `commit`.
impl RedbStore {
    fn set_genesis_held(
        &self,
        writer: &MutexGuard<'_, ()>,
        network: &str,
        genesis: BlockRecord,
    ) -> Result<(), StoreError> {
        let blocks = std::slice::from_ref(&genesis);
        self.write_held(
            writer,
            |t| {
                if let Some(tip) = t.tip()? {
                    return Err(not_contiguous(tip.height + 1, genesis.meta.height));
                }
                if genesis.meta.height != 0 {
                    return Err(not_contiguous(0, genesis.meta.height));
                }
                let mut totals = t.totals()?;
                t.insert_block(&genesis)?;
                tables::adjust(&mut totals, &genesis.meta, true);
                t.set_totals(&totals)?;
                t.meta.insert(tables::KEY_NETWORK, network.as_bytes())?;
                self.repair_gap(t, 0)
            },
            |repaired| self.log_committed(repaired, blocks),
        )
        .map(drop)
    }

    fn append_held(
        &self,
        writer: &MutexGuard<'_, ()>,
        blocks: &[BlockRecord],
    ) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        self.write_held(
            writer,
            |t| {
                let next = t.tip()?.map_or(0, |m| m.height + 1);
                // Checked before the first insert, so a gap anywhere in the batch writes nothing
                for (expected, block) in (next..).zip(blocks) {
                    if block.meta.height != expected {
                        return Err(not_contiguous(expected, block.meta.height));
                    }
                }
                let repaired = self.repair_gap(t, next)?;
                let mut totals = t.totals()?;
                for block in blocks {
                    t.insert_block(block)?;
                    tables::adjust(&mut totals, &block.meta, true);
                }
                t.set_totals(&totals)?;
                // In this commit, so no reader ever sees a tip whose buried blocks are not final
                let floor = match (self.finality_depth, blocks.last()) {
                    (Some(depth), Some(last)) => {
                        Some(t.raise_finality_floor(floor_for_tip(last.meta.height, depth))?)
                    }
                    _ => None,
                };
                Ok((repaired, floor))
            },
            |(repaired, floor)| {
                self.log_committed(repaired, blocks);
                if let Some(floor) = floor {
                    self.floor.store(*floor, Ordering::Release);
                }
            },
        )
        .map(drop)
    }

    fn rollback_above_held(
        &self,
        writer: &MutexGuard<'_, ()>,
        height: u64,
    ) -> Result<Vec<BlockRecord>, StoreError> {
        self.write_held(
            writer,
            |t| {
                let tip = match t.tip()? {
                    Some(tip) if tip.height > height => tip.height,
                    _ => return Ok(Vec::new()),
                };
                // Checked here, not only by sync: whoever asks, final blocks stay
                let floor = t.finality_floor()?;
                if height < floor {
                    return Err(StoreError::BelowFinalityFloor { height, floor }.into());
                }
                // The lowered watermark is stored with the removal, so that no later open trusts a
                // log entry this rollback voids: by `write_then` when there is a log, and here when
                // this run has none (it could not be opened), since the next one may.
                match &self.log {
                    // Before the commit: from now on these heights are read from redb, which still
                    // has them until the commit and not after.
                    Some(log) => log.rollback(height),
                    None => {
                        let stored = tables::read_body_log_watermark(&t.meta).unwrap_or(0);
                        t.set_body_log_watermark(stored.min(height.saturating_add(1)))?;
                    }
                }
                let mut totals = t.totals()?;
                let mut removed = Vec::new();
                for h in (height + 1..=tip).rev() {
                    let Some(block) = t.remove_block(h)? else {
                        let why = format!("height {h} is missing below the tip {tip}");
                        return Err(StoreError::Corrupt(why).into());
                    };
                    tables::adjust(&mut totals, &block.meta, false);
                    removed.push(block);
                }
                t.set_totals(&totals)?;
                removed.reverse();
                // Logged in the same commit as the removal: whoever sees the blocks gone can
                // also find where they went.
                let ancestor = t.tip()?.map(|m| Position::new(m.height, m.hash));
                if let (Some(ancestor), Some(last)) = (ancestor, removed.last()) {
                    t.record_rollback(&Rollback {
                        ancestor,
                        old_tip: Position::new(last.meta.height, last.meta.hash.clone()),
                        orphaned: removed.iter().map(|b| b.meta.hash.clone()).collect(),
                    })?;
                }
                Ok(removed)
            },
            |_| (),
        )
    }

    fn raise_finality_floor_held(
        &self,
        writer: &MutexGuard<'_, ()>,
        height: u64,
    ) -> Result<u64, StoreError> {
        self.write_held(
            writer,
            |t| {
                let tip = t.tip()?.map_or(0, |m| m.height);
                t.raise_finality_floor(height.min(tip))
            },
            |floor| self.floor.store(*floor, Ordering::Release),
        )
    }
}

impl RedbStore {
    /// Waits until the background fill of the hash hints has ended (filled, or stopped).
    fn join_hint_fill(&self) {
        let fill = self
            .hint_fill
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(fill) = fill {
            let _ = fill.join();
        }
    }

    /// Waits until the hash hints are filled from the index.
    #[cfg(test)]
    pub(super) fn wait_for_hints(&self) {
        self.join_hint_fill();
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.hints.stop.store(true, Ordering::Relaxed);
        self.join_hint_fill();
        self.settle_log();
    }
}

/// Hints every hash of the index as `txn` sees it, a thousand at a time, until the store
/// closes. A hash committed meanwhile is hinted by its commit (and if this puts an older
/// block of the same leading bits over it, its reads ask redb, as before).
fn fill_hints(txn: &redb::ReadTransaction, hints: &HashHints) {
    use redb::ReadableTable;
    let Ok(table) = txn.open_table(tables::HASH_INDEX) else {
        return;
    };
    let Ok(rows) = table.iter() else { return };
    let mut batch: Vec<(String, u64)> = Vec::with_capacity(1024);
    for row in rows {
        if hints.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok((hash, height)) = row else { return };
        batch.push((hash.value().to_owned(), height.value()));
        if batch.len() == batch.capacity() {
            hints.insert(batch.iter().map(|(h, n)| (h.as_str(), *n)));
            batch.clear();
        }
    }
    hints.insert(batch.iter().map(|(h, n)| (h.as_str(), *n)));
}

/// The body log's gap below a commit, read inside it, for [`RedbStore::log_committed`].
#[derive(Default)]
struct Repaired {
    from: u64,
    bodies: Vec<Vec<u8>>,
    /// The gap ends where the commit's blocks begin, so they may follow it into the log.
    closes_gap: bool,
}

/// Opens the body log beside `path`, trusting it as far as redb's meta table says. A log that
/// cannot be opened costs speed, not correctness: reads go to redb, with a warning.
fn open_log(db: &Database, path: &Path) -> Outcome<Option<BodyLog>> {
    let txn = db.begin_read()?;
    let persisted = tables::read_body_log_watermark(&txn.open_table(tables::META)?).unwrap_or(0);
    let next = tables::read_tip(&txn.open_table(tables::METAS)?)?.map_or(0, |m| m.height + 1);
    match BodyLog::open(path, persisted, next) {
        Ok(log) => Ok(Some(log)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the body log; block reads go to the store");
            Ok(None)
        }
    }
}

/// The finality floor stored in the meta table.
fn read_floor(db: &Database) -> Outcome<u64> {
    let txn = db.begin_read()?;
    tables::read_finality_floor(&txn.open_table(tables::META)?)
}

fn not_contiguous(expected: u64, got: u64) -> Fault {
    Fault::Store(StoreError::NotContiguous { expected, got })
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store file could not be reopened after an I/O failure".into())
}

/// [`BlockStore::bodies`] inside a read transaction.
pub(super) fn read_bodies(
    txn: &ReadTransaction,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> Outcome<Vec<Vec<u8>>> {
    let bodies = txn.open_table(tables::BODIES)?;
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(limit.min(1024));
    let mut current = None;
    // Bytes of the bodies before the last one in `out`.
    let mut kept = 0usize;
    for row in bodies.range((from, 0)..)? {
        let (key, chunk) = row?;
        let (height, _) = key.value();
        if current != Some(height) {
            if out.len() == limit {
                break;
            }
            kept += out.last().map_or(0, Vec::len);
            current = Some(height);
            out.push(Vec::new());
        }
        if let Some(body) = out.last_mut() {
            body.extend_from_slice(chunk.value());
            // Over the budget: drop the body being read (unless it is the first, which is
            // served whatever its size) and read no further.
            if kept + body.len() > max_bytes && out.len() > 1 {
                out.pop();
                break;
            }
        }
    }
    Ok(out)
}
