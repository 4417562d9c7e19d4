//! The PostgreSQL [`WriteTxn`]: a database transaction held from `begin` to `commit`. `begin`
//! locks the chain row (`bm_chain FOR UPDATE`, bounded by `lock_timeout`) and reads the tip
//! the database holds, so every replica's ledger validates its group on the tip it will
//! continue: writers in any number of processes take turns, and concurrent creates get
//! consecutive heights instead of refusals.
//!
//! A transaction borrows its connection, so it lives in one task on the engine's runtime that
//! answers the ledger's requests in order and ends with the commit; dropping the
//! [`WriteTxn`] closes the request channel, and the task's end rolls the transaction back and
//! releases the lock.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::timeout;

use super::fault::{Fault, Outcome};
use super::{Inner, META, PgStore, STORED_TX_IDS, meta_of, sql, to_u64, writes};
use crate::store::engine::Engine;
use crate::store::writes::{Change, HeldChain, Staged, WriteTxn};
use crate::store::{BlockMeta, BlockRecord, StoreError};

/// The chain row, locked.
const LOCK: &str = "SELECT finality_floor, tip FROM bm_chain WHERE id = 1 FOR UPDATE";

/// The tip block's summary. A statement of its own, sent right behind the lock: a statement's
/// snapshot is taken when it starts, so it sees the commit the lock waited for (a join in the
/// locking statement would read the block table as of before that wait).
fn tip_block() -> String {
    format!("SELECT {META} FROM bm_blocks WHERE height = (SELECT tip FROM bm_chain WHERE id = 1)")
}

/// Begins a transaction on `store`: waits for the chain's lock and reads the tip under it, and
/// which of `tx_ids` are stored.
pub(super) fn begin(
    store: &PgStore,
    tx_ids: Vec<String>,
) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
    let held = Held::begin(store, tx_ids)?;
    Ok(Box::new(Staged::begin(held)?))
}

/// The tip and the floor as the lock found them.
struct Head {
    tip: Option<BlockMeta>,
    floor: u64,
    /// The transaction ids looked up with the lock, and those of them that are stored.
    looked_up: HashSet<String>,
    stored: HashSet<String>,
}

type Answer<T> = SyncSender<Result<T, StoreError>>;

/// What the ledger asks of the transaction's task.
enum Request {
    Meta(u64, Answer<Option<BlockMeta>>),
    Body(u64, Answer<Option<Vec<u8>>>),
    TxIds(Vec<String>, Answer<HashSet<String>>),
    TxHeight(String, Answer<Option<u64>>),
    Write(Change, Answer<Vec<BlockRecord>>),
}

struct Held<'a> {
    store: &'a PgStore,
    requests: UnboundedSender<Request>,
    head: Head,
    /// How long an answer may take: the task bounds each step by the call limit itself.
    wait: Duration,
    /// The change was handed to the task, which ends with its commit.
    written: std::cell::Cell<bool>,
}

impl<'a> Held<'a> {
    fn begin(store: &'a PgStore, tx_ids: Vec<String>) -> Result<Self, StoreError> {
        let inner = &store.inner;
        if inner.snapshot().is_none() {
            return Err(StoreError::Unavailable(inner.waiting()));
        }
        let Some(runtime) = &store.runtime.0 else {
            return Err(super::stopped());
        };
        let (requests, rx) = unbounded_channel();
        let (ready, head) = sync_channel(1);
        inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.spawn(serve(inner.clone(), tx_ids, rx, ready));
        let wait = inner.options.call_limit() + Duration::from_secs(1);
        let head = head
            .recv_timeout(wait)
            .unwrap_or_else(|_| Err(super::stopped()))?;
        Ok(Held {
            store,
            requests,
            head,
            wait,
            written: std::cell::Cell::new(false),
        })
    }

    fn ask<T>(&self, make: impl FnOnce(Answer<T>) -> Request) -> Result<T, StoreError> {
        if self.written.get() {
            return Err(StoreError::Write(
                "the write transaction has already committed".into(),
            ));
        }
        let (tx, rx) = sync_channel(1);
        self.store
            .inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.requests.send(make(tx)).map_err(|_| ended())?;
        rx.recv_timeout(self.wait).unwrap_or_else(|_| Err(ended()))
    }
}

/// The task is gone: it timed out or the connection failed, and the transaction rolled back.
fn ended() -> StoreError {
    StoreError::Unavailable(
        "the database transaction ended before its commit; nothing was written, retry".into(),
    )
}

impl HeldChain for Held<'_> {
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.ask(|a| Request::Meta(height, a))
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        // Bodies are immutable below the locked tip: the cache answers for the transaction.
        if let Some(body) = self.store.inner.cache.get(height) {
            return Ok(Some(body.to_vec()));
        }
        self.ask(|a| Request::Body(height, a))
    }

    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        // Looked up with the lock already, as the group's ids usually are.
        if ids.iter().all(|id| self.head.looked_up.contains(*id)) {
            return Ok(ids
                .iter()
                .filter(|id| self.head.stored.contains(**id))
                .map(|id| id.to_string())
                .collect());
        }
        let ids = ids.iter().map(|s| s.to_string()).collect();
        self.ask(|a| Request::TxIds(ids, a))
    }

    fn tx_height(&self, tx_id: &str) -> Result<Option<u64>, StoreError> {
        let id = tx_id.to_string();
        self.ask(|a| Request::TxHeight(id, a))
    }

    fn write(&self, change: Change) -> Result<Vec<BlockRecord>, StoreError> {
        let written = self.ask(|a| Request::Write(change, a));
        self.written.set(true);
        written
    }

    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        // Before the write: the locked tip. After it: the state the commit installed.
        if self.written.get() {
            Engine::tip(self.store)
        } else {
            Ok(self.head.tip.clone())
        }
    }

    fn finality_floor(&self) -> Result<u64, StoreError> {
        if self.written.get() {
            Engine::finality_floor(self.store)
        } else {
            Ok(self.head.floor)
        }
    }
}

/// The transaction's task: locks the chain, answers `rx` in order, and ends with the write (or
/// when the ledger drops the transaction, which rolls it back).
async fn serve(
    inner: Arc<Inner>,
    tx_ids: Vec<String>,
    rx: UnboundedReceiver<Request>,
    ready: Answer<Head>,
) {
    let limit = inner.options.call_limit();
    let mut client = match timeout(limit, inner.pool.get()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return drop(ready.send(Err(Fault::from(e).into_store(true)))),
        Err(_) => return drop(ready.send(Err(timed_out(limit)))),
    };
    if let Stalled::Yes = run(&inner, &mut client, tx_ids, rx, ready).await {
        // A peer that stopped answering leaves this connection open: back in the pool, it
        // would be handed to the next transaction, which would wait the whole limit on it
        // again. It is closed instead, with the idle ones, so the next call connects afresh
        // and fails within the connect timeout while the database stays silent.
        drop(deadpool_postgres::Object::take(client));
        inner.pool.retain(|_, _| false);
    }
}

/// Whether a step of the transaction outlived the call limit.
enum Stalled {
    Yes,
    No,
}

/// The transaction on `client`, from its lock to its commit or rollback.
async fn run(
    inner: &Inner,
    client: &mut deadpool_postgres::Object,
    tx_ids: Vec<String>,
    mut rx: UnboundedReceiver<Request>,
    ready: Answer<Head>,
) -> Stalled {
    let limit = inner.options.call_limit();
    let txn = match timeout(limit, client.transaction()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            drop(ready.send(Err(Fault::from(e).into_store(true))));
            return Stalled::No;
        }
        Err(_) => {
            drop(ready.send(Err(timed_out(limit))));
            return Stalled::Yes;
        }
    };
    let head = match timeout(limit, lock_head(&txn, tx_ids)).await {
        Ok(r) => r.map_err(|f| f.into_store(true)),
        Err(_) => {
            drop(ready.send(Err(timed_out(limit))));
            return Stalled::Yes;
        }
    };
    let tip = match head {
        Ok(head) => {
            let tip = head.tip.as_ref().map(|t| t.height);
            if ready.send(Ok(head)).is_err() {
                return Stalled::No;
            }
            tip
        }
        Err(e) => {
            drop(ready.send(Err(e)));
            return Stalled::No;
        }
    };
    while let Some(request) = rx.recv().await {
        macro_rules! answer {
            ($reply:expr, $work:expr) => {
                match timeout(limit, $work).await {
                    Ok(r) => drop($reply.send(r.map_err(|f: Fault| f.into_store(true)))),
                    Err(_) => {
                        drop($reply.send(Err(timed_out(limit))));
                        return Stalled::Yes;
                    }
                }
            };
        }
        match request {
            Request::Meta(height, reply) => answer!(reply, async {
                let st = txn
                    .prepare_cached(&format!("SELECT {META} FROM bm_blocks WHERE height = $1"))
                    .await?;
                Ok(txn
                    .query_opt(&st, &[&sql(height)])
                    .await?
                    .map(|r| meta_of(&r)))
            }),
            Request::Body(height, reply) => answer!(reply, async {
                let st = txn
                    .prepare_cached("SELECT body FROM bm_blocks WHERE height = $1")
                    .await?;
                Ok(txn
                    .query_opt(&st, &[&sql(height)])
                    .await?
                    .map(|r| r.get::<_, Vec<u8>>(0)))
            }),
            Request::TxIds(ids, reply) => answer!(reply, async {
                let st = txn.prepare_cached(STORED_TX_IDS).await?;
                let rows = txn.query(&st, &[&ids]).await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }),
            Request::TxHeight(id, reply) => answer!(reply, async {
                let st = txn
                    .prepare_cached("SELECT height FROM bm_transactions WHERE tx_id = $1")
                    .await?;
                Ok(txn.query_opt(&st, &[&id]).await?.map(|r| to_u64(r.get(0))))
            }),
            Request::Write(change, reply) => {
                // A follower's chain is written by the sync leader alone: checked in the
                // transaction itself, so a replica that lost the lease cannot append.
                if inner.spec.mode == Some("follower") && !matches!(change, Change::RaiseFloor(_)) {
                    let fenced = match timeout(limit, super::lease::holds_lease(&txn)).await {
                        Ok(Ok(true)) => Ok(()),
                        Ok(Ok(false)) => Err(StoreError::Unavailable(
                            "this replica does not hold the sync lease; nothing was written".into(),
                        )),
                        Ok(Err(f)) => Err(f.into_store(true)),
                        Err(_) => {
                            drop(reply.send(Err(timed_out(limit))));
                            return Stalled::Yes;
                        }
                    };
                    if let Err(e) = fenced {
                        drop(reply.send(Err(e)));
                        return Stalled::No;
                    }
                }
                let written = match change {
                    Change::Append(blocks) => {
                        timeout(limit, async {
                            writes::append_locked(inner, txn, tip, &blocks).await?;
                            Ok(blocks)
                        })
                        .await
                    }
                    Change::Rollback(height) => {
                        timeout(limit, writes::rollback_locked(inner, txn, height)).await
                    }
                    Change::Genesis(network, genesis) => {
                        timeout(limit, async {
                            writes::set_genesis_locked(inner, txn, &network, &genesis).await?;
                            let chain = inner.load().await?;
                            inner.install(chain);
                            Ok(Vec::new())
                        })
                        .await
                    }
                    Change::RaiseFloor(height) => {
                        timeout(limit, async {
                            writes::raise_floor_locked(inner, txn, height).await?;
                            Ok(Vec::new())
                        })
                        .await
                    }
                };
                let (written, stalled) = match written {
                    Ok(r) => (r.map_err(|f| f.into_store(true)), Stalled::No),
                    Err(_) => (Err(timed_out(limit)), Stalled::Yes),
                };
                drop(reply.send(written));
                return stalled;
            }
        }
    }
    // The ledger dropped the transaction: dropping `txn` rolls it back.
    Stalled::No
}

/// Locks the chain row and reads the tip block's summary and which of `tx_ids` are stored, in
/// one round trip.
async fn lock_head(txn: &deadpool_postgres::Transaction<'_>, tx_ids: Vec<String>) -> Outcome<Head> {
    let lock = txn.prepare_cached(LOCK).await?;
    let block = txn.prepare_cached(&tip_block()).await?;
    let stored = txn.prepare_cached(STORED_TX_IDS).await?;
    // The lock's future is polled first, so it is the first on the wire; the statements
    // behind it start once it holds the lock, so they see every commit it waited for.
    let lookup = async {
        if tx_ids.is_empty() {
            Ok(Vec::new())
        } else {
            txn.query(&stored, &[&tx_ids]).await
        }
    };
    let (row, block, found) = tokio::join!(
        txn.query_one(&lock, &[]),
        txn.query_opt(&block, &[]),
        lookup
    );
    let row = row?;
    let block = block?;
    let stored = found?.iter().map(|r| r.get(0)).collect();
    let floor = to_u64(row.get(0));
    let tip = match (row.get::<_, Option<i64>>(1).map(to_u64), block) {
        (None, _) => None,
        (Some(t), Some(b)) if meta_of(&b).height == t => Some(meta_of(&b)),
        (Some(t), _) => {
            return Err(StoreError::Corrupt(format!(
                "the chain's tip is height {t}, which holds no block"
            ))
            .into());
        }
    };
    Ok(Head {
        tip,
        floor,
        looked_up: tx_ids.into_iter().collect(),
        stored,
    })
}

/// A step of the transaction did not finish in time.
fn timed_out(limit: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "the database did not answer within {} ms; nothing was written",
        limit.as_millis()
    ))
}
