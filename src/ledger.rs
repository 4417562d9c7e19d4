//! The one write path: a dedicated writer thread that validates against the current tip,
//! groups whatever requests are waiting into one durable commit, and only then answers.
//!
//! Serialising every append through one thread is what makes concurrent creates get
//! consecutive heights without forking; grouping them is what makes that fast, because the
//! fsync of a commit is paid once per group, not once per block.

use crate::chain::{self, Block, ChainView, Failure, Limits, Timestamp, Transaction};
use crate::metrics::Metrics;
use crate::store::tip::TipWatch;
use crate::store::{BlockMeta, BlockRecord, ChainWriter, Committed, StoreError, WriteTxn};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// Where an append came from (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/v1/blocks` or `/blocks/submit`.
    Api,
    /// The follower loop.
    Sync,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Sync => "sync",
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The block failed validation; every failure is listed.
    #[error("block failed validation")]
    Invalid(Vec<Failure>),
    /// The height already holds a different block.
    #[error("height {height} already holds block {existing}")]
    Conflict {
        /// The contested height.
        height: u64,
        /// Hash of the stored block there.
        existing: String,
    },
    /// The store failed; nothing of this request was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (shutdown).
    #[error("the writer has stopped")]
    Closed,
}

/// What `submit` did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Newly stored: its summary and stored document.
    Stored(BlockMeta, Vec<u8>),
    /// The identical block was already stored: its summary and stored document.
    AlreadyStored(BlockMeta, Vec<u8>),
}

/// What a sync batch append did: how many blocks (a prefix) were committed, and why the
/// first rejected block was rejected.
#[derive(Debug)]
pub struct Appended {
    /// Blocks committed, from the front of the batch.
    pub committed: usize,
    /// Index in the batch and failures of the first invalid block.
    pub rejected: Option<(usize, Box<Block>, Vec<Failure>)>,
}

/// A block whose stored form is already built, so the writer only validates and commits it.
/// The stored form is a pure function of the block: building it on the caller's (blocking)
/// thread takes serialization off the single writer, the bottleneck of a catch-up.
pub struct Prepared {
    block: Block,
    record: Option<BlockRecord>,
}

impl Prepared {
    /// Builds the stored form of `block` (CPU work: call it off the async threads).
    pub fn new(block: Block) -> Self {
        let record = Some(record_of(&block));
        Self { block, record }
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

enum Op {
    /// Finish what was queued before it, then stop (shutdown).
    Stop,
    Create {
        producer: String,
        signature: String,
        transactions: Vec<Transaction>,
        at: Timestamp,
        reply: Reply<Submitted>,
    },
    Submit {
        block: Box<Block>,
        reply: Reply<Submitted>,
    },
    Append {
        blocks: Vec<Prepared>,
        reply: Reply<Appended>,
    },
    Rollback {
        above: u64,
        reply: Reply<Vec<BlockRecord>>,
    },
}

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Op>,
    /// The one source of the committed tip (see [`TipWatch`]).
    changes: Arc<TipWatch>,
}

/// The stored form of a validated block.
pub fn record_of(block: &Block) -> BlockRecord {
    let body = block.served_json();
    BlockRecord {
        meta: BlockMeta {
            height: block.height,
            hash: block.hash.clone(),
            previous_hash: block.previous_hash.clone(),
            merkle_root: block.merkle_root.clone(),
            timestamp: block.timestamp.to_string(),
            timestamp_micros: block.timestamp.unix_micros(),
            producer: block.producer.clone(),
            transaction_count: block.transaction_count(),
            block_size_bytes: block.size_bytes() as u64,
        },
        tx_ids: block.transactions.iter().map(|t| t.tx_id.clone()).collect(),
        body,
    }
}

/// The current time as a chain timestamp.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

impl Ledger {
    /// Starts the writer thread over `store`. It stops when every handle is dropped; join the
    /// returned handle to know the last commit has finished.
    pub fn start(
        store: Arc<dyn ChainWriter>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> (Ledger, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let changes = Arc::new(TipWatch::new());
        let engine_sets_tip = store.follow_changes(changes.clone());
        let writer = Writer {
            store,
            limits,
            metrics,
            changes: changes.clone(),
            engine_sets_tip,
        };
        // An empty transaction: the tip and floor as the store has them now.
        match writer.store.begin().and_then(|txn| txn.commit()) {
            Ok(now) => writer.publish(&now),
            // A database not ready yet sets the tip itself once it is.
            Err(StoreError::Unavailable(_)) if engine_sets_tip => {}
            Err(e) => tracing::error!(error = %e, "cannot read the tip at start"),
        }
        let handle = std::thread::Builder::new()
            .name("block-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the writer thread only fails when the OS is out of threads");
        (Ledger { tx, changes }, handle)
    }

    /// Wakes after every durable commit and rollback (event streams wait on it).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Height of the committed tip, without touching the store (`None` while empty).
    pub fn tip_height(&self) -> Option<u64> {
        self.changes.height()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// Creates the next block on the tip from these transactions. A create whose transactions
    /// exactly match a stored block's is a retry whose first answer was lost (spec §13): it
    /// gets that block, [`Submitted::AlreadyStored`], and stores nothing.
    pub async fn create(
        &self,
        producer: String,
        signature: String,
        transactions: Vec<Transaction>,
        at: Timestamp,
    ) -> Result<Submitted, WriteError> {
        self.call(|reply| Op::Create {
            producer,
            signature,
            transactions,
            at,
            reply,
        })
        .await
    }

    /// Appends a complete block produced elsewhere.
    pub async fn submit(&self, block: Block) -> Result<Submitted, WriteError> {
        self.call(|reply| Op::Submit {
            block: Box::new(block),
            reply,
        })
        .await
    }

    /// Appends a batch from upstream: validates each block on the one before; commits the
    /// valid prefix in one transaction.
    pub async fn append(&self, blocks: Vec<Block>) -> Result<Appended, WriteError> {
        let blocks = blocks
            .into_iter()
            .map(|block| Prepared {
                block,
                record: None,
            })
            .collect();
        self.append_prepared(blocks).await
    }

    /// [`Ledger::append`] for blocks whose stored form the caller already built.
    pub async fn append_prepared(&self, blocks: Vec<Prepared>) -> Result<Appended, WriteError> {
        self.call(|reply| Op::Append { blocks, reply }).await
    }

    /// Removes every block above `height`, atomically; returns them.
    /// Stops the writer once what is queued is committed. Handles still held elsewhere (a
    /// connection that outlived the grace period) then get `Closed`; this is what lets
    /// shutdown finish without waiting for every handle to be dropped.
    pub async fn stop(&self) {
        let _ = self.tx.send(Op::Stop).await;
    }

    pub async fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, WriteError> {
        self.call(|reply| Op::Rollback {
            above: height,
            reply,
        })
        .await
    }
}

/// Tip and contents of the group being built, on top of the store's write transaction.
struct Pending<'a> {
    txn: &'a dyn WriteTxn,
    tip: Option<(u64, String, Timestamp)>,
    hashes: HashMap<u64, String>,
    txs: HashSet<String>,
    /// Which of the group's transaction ids the store holds, looked up once for the whole
    /// group before validating it (on an engine across a network, one round trip instead of
    /// one per transaction).
    stored_txs: HashSet<String>,
    records: Vec<BlockRecord>,
    /// A store read failed while validating: the group cannot be trusted.
    read_error: RefCell<Option<StoreError>>,
}

impl ChainView for Pending<'_> {
    fn hash_at(&self, height: u64) -> Option<String> {
        if let Some(h) = self.hashes.get(&height) {
            return Some(h.clone());
        }
        match self.txn.meta_at(height) {
            Ok(m) => m.map(|m| m.hash),
            Err(e) => {
                self.read_error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn tx_exists(&self, tx_id: &str) -> bool {
        // Every id of the group was looked up before validating it.
        self.txs.contains(tx_id) || self.stored_txs.contains(tx_id)
    }
}

/// Every transaction id a group carries.
fn group_tx_ids(ops: &[Op]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for op in ops {
        match op {
            Op::Create { transactions, .. } => {
                ids.extend(transactions.iter().map(|t| t.tx_id.as_str()));
            }
            Op::Submit { block, .. } => {
                ids.extend(block.transactions.iter().map(|t| t.tx_id.as_str()));
            }
            Op::Append { blocks, .. } => {
                for p in blocks {
                    ids.extend(p.block.transactions.iter().map(|t| t.tx_id.as_str()));
                }
            }
            Op::Rollback { .. } | Op::Stop => {}
        }
    }
    ids
}

impl<'a> Pending<'a> {
    fn new(txn: &'a dyn WriteTxn, ids: &[&str]) -> Result<Self, StoreError> {
        // The tip as the transaction locked it: what the group's first block continues.
        let tip = txn.tip().map(|m| {
            let ts = Timestamp::from_unix_micros(m.timestamp_micros);
            (m.height, m.hash.clone(), ts)
        });
        let stored_txs = txn.stored_tx_ids(ids)?;
        // The tip's hash is what the group's first block links to: no lookup for it.
        let hashes = tip.iter().map(|(h, hash, _)| (*h, hash.clone())).collect();
        Ok(Self {
            txn,
            tip,
            hashes,
            txs: HashSet::new(),
            stored_txs,
            records: Vec::new(),
            read_error: RefCell::new(None),
        })
    }

    fn take_read_error(&self) -> Result<(), StoreError> {
        self.read_error.borrow_mut().take().map_or(Ok(()), Err)
    }

    /// Validates `block` on the pending tip and adds it to the group, with its stored form
    /// when the caller built it already.
    fn push(
        &mut self,
        block: &Block,
        record: Option<BlockRecord>,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<BlockMeta, WriteError> {
        let failures = chain::check_block(block, &*self, limits, now);
        self.take_read_error()?;
        if !failures.is_empty() {
            return Err(WriteError::Invalid(failures));
        }
        let record = record.unwrap_or_else(|| record_of(block));
        let meta = record.meta.clone();
        self.hashes.insert(block.height, block.hash.clone());
        self.txs.extend(record.tx_ids.iter().cloned());
        self.tip = Some((block.height, block.hash.clone(), block.timestamp));
        self.records.push(record);
        Ok(meta)
    }

    /// The stored block a create of `transactions` (made at `at`) repeats, when its first
    /// transaction is stored and every one matches the stored block's, in order. A
    /// transaction the client gave no time of its own carries `at`, and then any stored time
    /// matches it: the first attempt's block gave it that block's time.
    fn stored_create(
        &self,
        transactions: &[Transaction],
        at: Timestamp,
    ) -> Result<Option<Submitted>, WriteError> {
        let Some(first) = transactions.first() else {
            return Ok(None);
        };
        if !self.stored_txs.contains(&first.tx_id) {
            return Ok(None);
        }
        let Some(height) = self.txn.tx_height(&first.tx_id)? else {
            return Ok(None);
        };
        let (Some(meta), Some(body)) = (self.txn.meta_at(height)?, self.txn.body_at(height)?)
        else {
            return Ok(None);
        };
        let Ok(stored) = chain::parse_block_json(&body) else {
            return Ok(None);
        };
        let same = stored.transactions.len() == transactions.len()
            && stored.transactions.iter().zip(transactions).all(|(s, t)| {
                let mut t = t.clone();
                if t.timestamp == at {
                    t.timestamp = s.timestamp;
                }
                *s == t
            });
        Ok(same.then_some(Submitted::AlreadyStored(meta, body)))
    }

    /// When `block`'s height is already taken: the same block (byte for byte) or a conflict.
    fn existing(&self, block: &Block) -> Result<Option<Submitted>, WriteError> {
        let taken = self
            .tip
            .as_ref()
            .is_some_and(|(h, _, _)| block.height <= *h);
        if !taken {
            return Ok(None);
        }
        let (meta, body) = match self.records.iter().find(|r| r.meta.height == block.height) {
            Some(r) => (r.meta.clone(), r.body.clone()),
            None => match (
                self.txn.meta_at(block.height)?,
                self.txn.body_at(block.height)?,
            ) {
                (Some(m), Some(b)) => (m, b),
                _ => return Ok(None),
            },
        };
        // A matching claimed hash is not enough: the hash does not cover every field.
        if meta.hash == block.hash && body == block.served_json() {
            return Ok(Some(Submitted::AlreadyStored(meta, body)));
        }
        Err(WriteError::Conflict {
            height: block.height,
            existing: meta.hash,
        })
    }
}

struct Writer {
    store: Arc<dyn ChainWriter>,
    limits: Limits,
    metrics: Arc<Metrics>,
    changes: Arc<TipWatch>,
    /// The engine sets the tip in `changes` itself, in its commit order (a shared engine):
    /// setting it here too could put an older tip over a newer one.
    engine_sets_tip: bool,
}

/// An answer waiting for its group's commit.
enum Waiting {
    Created(Reply<Submitted>, BlockRecord),
    /// The flag says whether the answer depends on this group's commit.
    Submitted(Reply<Submitted>, Submitted, bool),
    Appended(Reply<Appended>, Appended),
}

/// Most requests folded into one commit; bounds a commit's size and the latency of the first.
const MAX_GROUP: usize = 512;

/// Longest a group waits for writers that were active at the last commit to come back.
const GATHER_WAIT: Duration = Duration::from_micros(400);

/// Takes what is queued into `ops`. With fewer than `active` requests, waits (at most
/// [`GATHER_WAIT`]) for the rest: clients answered by the last commit send their next request
/// a moment later, and without the wait they would split into two cohorts that commit in
/// turn, each waiting out the other's fsync. One client never waits.
fn gather(rx: &mut mpsc::Receiver<Op>, ops: &mut Vec<Op>, active: usize) {
    let mut deadline = None;
    while ops.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {
                if ops.len() >= active {
                    return;
                }
                let until = *deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
                if Instant::now() >= until {
                    return;
                }
                std::thread::sleep(Duration::from_micros(40));
            }
        }
    }
}

impl Writer {
    /// Publishes what a commit left: the tip into the tip watch (unless the engine sets it
    /// there itself) and the tip gauges from the same commit, before subscribers are woken.
    fn publish(&self, now: &Committed) {
        if !self.engine_sets_tip {
            self.changes.set(now.tip.as_ref().map(|t| t.height));
        }
        if let Some(t) = &now.tip {
            self.metrics.set_tip(t.height, t.timestamp_micros);
        }
        self.metrics
            .finality_floor
            .set(now.finality_floor.min(1 << 53) as i64);
        // After the tip is published: a woken subscriber reads what was committed.
        self.changes.notify();
    }

    fn run(self, mut rx: mpsc::Receiver<Op>) {
        // How many writers were about at the last commit: the requests it carried plus those
        // that queued up while it ran.
        let mut active = 1;
        while let Some(first) = rx.blocking_recv() {
            let mut ops = vec![first];
            gather(&mut rx, &mut ops, active);
            let carried = ops.len();
            let mut group = Vec::new();
            for op in ops {
                match op {
                    Op::Stop => {
                        self.commit(group);
                        // Anything queued after Stop is answered `Closed` as `rx` drops.
                        return;
                    }
                    // A rollback commits on its own, after everything queued before it.
                    Op::Rollback { above, reply } => {
                        self.commit(std::mem::take(&mut group));
                        let started = Instant::now();
                        let result = self
                            .store
                            .begin()
                            .and_then(|mut txn| {
                                txn.rollback_above(above)?;
                                txn.commit()
                            })
                            .map_err(WriteError::from);
                        let result = result.map(|mut done| {
                            self.metrics
                                .observe_rollback(done.removed.len(), started.elapsed());
                            let txs: u64 = done
                                .removed
                                .iter()
                                .map(|r| u64::from(r.meta.transaction_count))
                                .sum();
                            self.metrics.transactions_stored.sub(txs as i64);
                            self.publish(&done);
                            std::mem::take(&mut done.removed)
                        });
                        let _ = reply.send(result);
                    }
                    op => group.push(op),
                }
            }
            self.commit(group);
            active = (carried + rx.len()).min(MAX_GROUP);
        }
    }

    /// Answers a refused request. A store failure is returned: it refuses the whole group.
    fn refuse<T>(&self, reply: Reply<T>, e: WriteError) -> Option<StoreError> {
        match e {
            WriteError::Store(e) => {
                let _ = reply.send(Err(WriteError::Store(e.clone())));
                Some(e)
            }
            e => {
                if let WriteError::Invalid(failures) = &e {
                    self.metrics.observe_failures(failures);
                }
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    /// Validates a group in order, commits the valid ones in one transaction, then answers.
    fn commit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        // The group is validated and written inside one transaction: the tip it continues
        // and the lookups it validates with are the transaction's.
        let ids = group_tx_ids(&ops);
        let mut txn = match self.store.begin_for(&ids) {
            Ok(txn) => txn,
            Err(e) => return fail_all(ops, &e),
        };
        let pending = Pending::new(&*txn, &ids);
        drop(ids);
        let mut pending = match pending {
            Ok(p) => p,
            Err(e) => return fail_all(ops, &e),
        };
        let now = now();
        let mut waiting = Vec::with_capacity(ops.len());
        let mut sources = (0usize, 0usize);
        let mut ops = ops.into_iter();
        // A store read failing mid-group leaves the pending state untrustworthy: the whole
        // group is then refused and nothing of it is committed.
        let mut abort: Option<StoreError> = None;
        while let Some(op) = ops.next() {
            match op {
                Op::Create {
                    producer,
                    signature,
                    mut transactions,
                    at,
                    reply,
                } => {
                    match pending.stored_create(&transactions, at) {
                        Ok(Some(done)) => {
                            waiting.push(Waiting::Submitted(reply, done, false));
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            abort = self.refuse(reply, e);
                            if let Some(e) = &abort {
                                tracing::error!(error = %e, "store read failed while validating; this group is refused");
                                fail_all(ops.collect(), e);
                                return answer(waiting, Some(e));
                            }
                            continue;
                        }
                    }
                    let (height, prev, block_at) = match &pending.tip {
                        // Never go back in time: a block is never older than its parent.
                        Some((h, hash, ts)) => (h + 1, hash.clone(), at.max(*ts)),
                        None => (0, chain::ZERO_HASH.to_string(), at),
                    };
                    // Transactions given no time of their own carry the block's.
                    if block_at != at {
                        for tx in transactions.iter_mut().filter(|t| t.timestamp == at) {
                            tx.timestamp = block_at;
                        }
                    }
                    let at = block_at;
                    let block = Block::build(height, prev, at, producer, signature, transactions);
                    match pending.push(&block, None, &self.limits, now) {
                        Ok(_) => {
                            sources.0 += 1;
                            let record =
                                pending.records.last().cloned().expect("push just added it");
                            waiting.push(Waiting::Created(reply, record));
                        }
                        Err(e) => abort = self.refuse(reply, e),
                    }
                }
                Op::Submit { block, reply } => {
                    let in_group = pending
                        .records
                        .iter()
                        .any(|r| r.meta.height == block.height);
                    let result = pending.existing(&block).and_then(|done| match done {
                        Some(done) => Ok(done),
                        None => pending.push(&block, None, &self.limits, now).map(|meta| {
                            let body = pending
                                .records
                                .last()
                                .map(|r| r.body.clone())
                                .unwrap_or_default();
                            Submitted::Stored(meta, body)
                        }),
                    });
                    match result {
                        Ok(done) => {
                            let depends = match &done {
                                Submitted::Stored(..) => {
                                    sources.0 += 1;
                                    true
                                }
                                Submitted::AlreadyStored(..) => in_group,
                            };
                            waiting.push(Waiting::Submitted(reply, done, depends));
                        }
                        Err(e) => abort = self.refuse(reply, e),
                    }
                }
                Op::Append { blocks, reply } => {
                    let mut outcome = Appended {
                        committed: 0,
                        rejected: None,
                    };
                    let mut error = None;
                    for (i, Prepared { block, record }) in blocks.into_iter().enumerate() {
                        match pending.push(&block, record, &self.limits, now) {
                            Ok(_) => outcome.committed += 1,
                            Err(WriteError::Invalid(f)) => {
                                self.metrics.observe_failures(&f);
                                outcome.rejected = Some((i, Box::new(block), f));
                                break;
                            }
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                    match error {
                        Some(WriteError::Store(e)) => {
                            let _ = reply.send(Err(WriteError::Store(e.clone())));
                            abort = Some(e);
                        }
                        Some(e) => {
                            let _ = reply.send(Err(e));
                        }
                        None => {
                            sources.1 += outcome.committed;
                            waiting.push(Waiting::Appended(reply, outcome));
                        }
                    }
                }
                Op::Rollback { .. } | Op::Stop => unreachable!("taken out of groups by run()"),
            }
            if let Some(e) = &abort {
                tracing::error!(error = %e, "store read failed while validating; this group is refused");
                fail_all(ops.collect(), e);
                return answer(waiting, Some(e));
            }
        }
        let records = std::mem::take(&mut pending.records);
        if records.is_empty() {
            return answer(waiting, None);
        }
        let blocks = records.len();
        let started = Instant::now();
        let result = txn.append(records).and_then(|()| txn.commit());
        match result {
            Ok(done) => {
                self.metrics
                    .observe_commit(&done.appended, started.elapsed(), sources);
                self.publish(&done);
                answer(waiting, None)
            }
            Err(e) => {
                tracing::error!(error = %e, blocks, "commit failed; nothing of this group was stored");
                answer(waiting, Some(&e))
            }
        }
    }
}

fn answer(waiting: Vec<Waiting>, failed: Option<&StoreError>) {
    for w in waiting {
        match (w, failed) {
            (Waiting::Created(r, m), None) => {
                drop(r.send(Ok(Submitted::Stored(m.meta, m.body))));
            }
            (Waiting::Submitted(r, s, _), None) => drop(r.send(Ok(s))),
            (Waiting::Appended(r, a), None) => drop(r.send(Ok(a))),
            // Already stored before this group: true whatever the group's commit did.
            (Waiting::Submitted(r, s, false), Some(_)) => drop(r.send(Ok(s))),
            (Waiting::Created(r, _), Some(e)) => drop(r.send(Err(e.clone().into()))),
            (Waiting::Submitted(r, _, true), Some(e)) => drop(r.send(Err(e.clone().into()))),
            (Waiting::Appended(r, _), Some(e)) => drop(r.send(Err(e.clone().into()))),
        }
    }
}

fn fail_all(ops: Vec<Op>, e: &StoreError) {
    for op in ops {
        match op {
            Op::Create { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Op::Submit { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Op::Append { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Op::Rollback { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Op::Stop => {}
        }
    }
}
