//! [`PgStore`]: the [`BlockStore`](super::BlockStore) on a PostgreSQL database, shared by any number of
//! block-manager processes.
//!
//! The face is blocking, like the embedded engine's; behind it the engine runs its own small
//! tokio runtime that owns the pool and drives every connection, so a call from any thread
//! (a blocking-pool thread, the writer thread) hands its work there and waits. Nothing here
//! may be called on the service's async threads except what is served from memory: the tip,
//! the totals, the finality floor and the chain info are kept in memory (refreshed by every
//! commit this process makes), and cached bodies can be asked for with
//! [`Engine::body_at_async`] (a cached body is answered at once).
//!
//! Outages are not fatal: [`PgStore::connect`] returns a store that is not ready yet when the
//! database cannot be reached, retries with backoff in the background, and becomes ready by
//! itself (schema, chain checks, genesis). Until then every call answers
//! [`StoreError::Unavailable`] (503 `ST_001`).

mod cache;
mod connect;
mod fault;
pub mod lease;
mod listen;
mod schema;
mod standby;
#[cfg(test)]
mod standby_tests;
#[cfg(test)]
pub mod testdb;
#[cfg(test)]
mod tests;
mod txn;
mod writes;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use tokio_postgres::Row;

pub use connect::{PgOptions, Tls};
use fault::{Fault, Outcome, Refusal};

use super::engine::Engine;
use super::writes::WriteTxn;
use super::{
    BlockMeta, BlockRecord, ChainInfo, DEFAULT_NETWORK, Order, Rollback, StoreError, Totals,
};
use cache::BodyCache;
use standby::{Conn, Standbys, Wants};

/// Which of a list of transaction ids are stored: every group commit asks, under the chain's
/// lock.
const STORED_TX_IDS: &str = "SELECT tx_id FROM bm_transactions WHERE tx_id = ANY($1)";

/// What the configuration says the database's chain must be; recorded on first start and
/// checked on every later one.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// `chain.network`; empty: whatever the database records (a reader that learns the
    /// network from the database, as `copy` does with a PostgreSQL source).
    pub network: String,
    /// `standalone` or `follower`; `None`: neither recorded nor checked (`copy` moves a
    /// chain without being either).
    pub mode: Option<&'static str>,
    /// The genesis block to create in an empty database (standalone mode).
    pub genesis: Option<BlockRecord>,
    /// Whether `genesis` is pinned by the configuration (`chain.genesis_timestamp`), so a stored
    /// genesis of another hash is another chain.
    pub genesis_pinned: bool,
    /// Blocks this far below the tip become final as appends raise it.
    pub finality_depth: Option<u64>,
}

/// Why [`PgStore::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Retrying cannot help: the one line start-up stops with.
    Configuration(String),
}

/// The columns a [`BlockMeta`] is read from, in [`meta_of`]'s order.
const META: &str = "height, hash, previous_hash, merkle_root, ts, ts_micros, producer, transaction_count, size_bytes";

/// What the engine keeps in memory of the chain: enough to answer the tip, totals, floor and
/// chain info without a round trip.
#[derive(Clone, Debug, Default)]
struct Chain {
    /// `bm_chain.seq` of this state: a state of a lower number is older and never replaces it.
    seq: i64,
    tip: Option<BlockMeta>,
    totals: Totals,
    floor: u64,
    network: Option<String>,
    genesis_hash: Option<String>,
    /// The newest entry of the rollback log (0: none). A rollback raises it, so a reload sees
    /// that one happened even when its notification was lost and the chain has since grown
    /// back past the old tip (the tip alone would not show it).
    rollbacks: i64,
}

struct Inner {
    pool: Pool,
    options: PgOptions,
    spec: ChainSpec,
    /// `None` until the database is ready (connected, migrated, checked).
    chain: RwLock<Option<Chain>>,
    /// Why the engine is not ready, for the 503 and the health check.
    waiting: Mutex<String>,
    cache: BodyCache,
    /// Sent with this process's notifications, so the listener skips its own.
    token: String,
    /// The service's tip watch: its height set with every chain state installed, woken when
    /// another replica's commit is heard of.
    watch: Mutex<Option<Arc<crate::store::tip::TipWatch>>>,
    /// Operations sent to the database so far (each one or a few round trips), so tests can
    /// hold a caller to batching.
    calls: std::sync::atomic::AtomicU64,
    /// Change-notification sessions that have listened and resynced so far (tests wait for the
    /// first: its resync forgets what was cached before it).
    sessions: std::sync::atomic::AtomicU64,
    /// The hot standbys that serve reads.
    standbys: Standbys,
}

/// The block store on PostgreSQL.
pub struct PgStore {
    inner: Arc<Inner>,
    runtime: EngineRuntime,
    label: PathBuf,
}

/// The engine's runtime, shut down without blocking when dropped: the last handle may be
/// dropped on an async thread, where a blocking shutdown panics.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects and readies the database (schema, chain checks, genesis). A configuration error
    /// fails at once; an outage (refused, timed out, starting up) returns a store that is not
    /// ready and keeps trying in the background.
    pub fn connect(options: PgOptions, spec: ChainSpec) -> Result<PgStore, ConnectError> {
        let runtime = EngineRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("block-store-pg")
                .enable_all()
                .build()
                .map_err(|e| {
                    ConnectError::Configuration(format!("cannot start the database engine: {e}"))
                })?,
        ));
        let Some(handle) = runtime.0.as_ref().map(|r| r.handle().clone()) else {
            unreachable!("the runtime was just built");
        };
        let pool = connect::pool(&options).map_err(ConnectError::Configuration)?;
        let standbys = Standbys::new(&options).map_err(ConnectError::Configuration)?;
        let label = PathBuf::from(options.display.clone());
        let inner = Arc::new(Inner {
            pool,
            cache: BodyCache::new(options.cache_bytes),
            options,
            spec,
            chain: RwLock::new(None),
            waiting: Mutex::new("connecting to the database".into()),
            token: format!("{:x}-{:x}", std::process::id(), {
                // Distinct per engine in one process too (tests open several).
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }),
            watch: Mutex::new(None),
            calls: std::sync::atomic::AtomicU64::new(0),
            sessions: std::sync::atomic::AtomicU64::new(0),
            standbys,
        });
        // Waited for on this thread, which may be one of the caller's async threads (start-up
        // does nothing else meanwhile): hence a channel, not the runtime's `block_on`.
        let first = {
            let inner = inner.clone();
            let limit = inner.options.call_limit();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            handle.spawn(async move {
                let r = match tokio::time::timeout(limit, inner.ready()).await {
                    Ok(r) => r,
                    Err(_) => Err(Fault::Pool("timed out".into())),
                };
                let _ = tx.send(r);
            });
            rx.recv()
                .unwrap_or_else(|_| Err(Fault::Pool("the database engine stopped".into())))
        };
        if let Err(fault) = first {
            if let Some(why) = fault.configuration_error() {
                return Err(ConnectError::Configuration(format!(
                    "cannot use the database {}: {why}",
                    inner.options.display
                )));
            }
            let why = fault.into_store(false).to_string();
            tracing::warn!(database = %inner.options.display, error = %why, "database not reachable yet; retrying in the background");
            inner.set_waiting(why);
            handle.spawn(inner.clone().keep_trying());
        }
        handle.spawn(listen::follow(inner.clone()));
        if inner.standbys.configured() {
            handle.spawn(standby::watch(inner.clone()));
        }
        Ok(PgStore {
            inner,
            runtime,
            label,
        })
    }

    /// The body at `height` when the cache holds it.
    pub fn cached_body(&self, height: u64) -> Option<Vec<u8>> {
        self.inner.cache.get(height).map(|b| b.to_vec())
    }

    /// Operations this engine sent to the database so far.
    #[cfg(test)]
    pub(crate) fn calls(&self) -> u64 {
        self.inner.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the database is connected, migrated and checked.
    pub fn is_ready(&self) -> bool {
        self.inner.snapshot().is_some()
    }

    /// Runs `work` on the engine's runtime and waits for it, bounded by the call limit.
    fn call<T, F, Fut>(&self, writing: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.launch(writing, work, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// [`PgStore::call`] for an async caller: no thread waits, the caller's task is woken.
    fn call_async<T, F, Fut>(&self, writing: bool, work: F) -> super::StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let launched = self.launch(writing, work, move |r| {
            let _ = tx.send(r);
        });
        Box::pin(async move {
            launched?;
            rx.await.unwrap_or_else(|_| Err(stopped()))
        })
    }

    /// Starts `work` on the engine's runtime, bounded by the call limit; `reply` gets its
    /// outcome.
    fn launch<T, F, Fut>(
        &self,
        writing: bool,
        work: F,
        reply: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome<T>> + Send + 'static,
    {
        if self.inner.snapshot().is_none() {
            return Err(StoreError::Unavailable(self.inner.waiting()));
        }
        let Some(runtime) = &self.runtime.0 else {
            return Err(stopped());
        };
        let inner = self.inner.clone();
        inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limit = inner.options.call_limit();
        runtime.spawn(async move {
            // The work (and the connection it holds) is dropped at the end of this statement.
            let outcome = tokio::time::timeout(limit, work(inner.clone())).await;
            let result = match outcome {
                Ok(r) => r.map_err(|f| f.into_store(writing)),
                Err(_) => {
                    // A peer that stopped answering leaves its connections open: the pool would
                    // hand each of them out again, and every call would wait the whole limit.
                    // Dropping the idle ones makes the next call connect afresh, which fails
                    // within the connect timeout while the database stays silent.
                    inner.pool.retain(|_, _| false);
                    Err(StoreError::Unavailable(format!(
                        "the database did not answer within {} ms",
                        limit.as_millis()
                    )))
                }
            };
            reply(result);
        });
        Ok(())
    }

    /// One batched lookup of `keys` (`query` selects the key first, with `= ANY($1)`): for
    /// each key in order, what `value` makes of its row, or `None` where no row has it.
    fn lookup_keys<T: Clone + Send + 'static>(
        &self,
        query: &'static str,
        keys: &[&str],
        value: fn(&tokio_postgres::Row) -> T,
    ) -> Result<Vec<Option<T>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.call(false, move |inner| async move {
            inner
                .read(Wants::Lookup, any_missing, move |client: Conn| {
                    let wanted = wanted.clone();
                    async move {
                        let st = client.prepare_cached(query).await?;
                        let found: std::collections::HashMap<String, T> = client
                            .query(&st, &[&wanted])
                            .await?
                            .iter()
                            .map(|r| (r.get(0), value(r)))
                            .collect();
                        Ok(wanted.iter().map(|k| found.get(k).cloned()).collect())
                    }
                })
                .await
        })
    }

    /// A read answered from the in-memory chain state.
    fn in_memory<T>(&self, f: impl FnOnce(&Chain) -> T) -> Result<T, StoreError> {
        match self.inner.snapshot() {
            Some(chain) => Ok(f(&chain)),
            None => Err(StoreError::Unavailable(self.inner.waiting())),
        }
    }
}

impl Inner {
    fn snapshot(&self) -> Option<Chain> {
        self.chain
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Chain)) {
        let mut guard = self
            .chain
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(chain) = guard.as_mut() {
            f(chain);
            self.set_tip(chain);
        }
    }

    /// Sets the tip watch's height from `chain`, called with the chain state's write lock
    /// held: states are installed in commit order, so the watch never goes back to an older
    /// tip (the service's one source of the tip, see [`crate::store::tip`]).
    fn set_tip(&self, chain: &Chain) {
        let watch = self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = watch.as_ref() {
            w.set(chain.tip.as_ref().map(|t| t.height));
        }
    }

    /// Applies what this process's commit number `seq` made the chain, unless a newer state
    /// (another replica's later commit, heard of first) is held already.
    fn committed(&self, seq: i64, f: impl FnOnce(&mut Chain)) {
        self.update(|c| {
            if c.seq < seq {
                c.seq = seq;
                f(c);
            }
        });
    }

    /// Wakes the service's tip watch (another replica changed the chain).
    fn wake(&self) {
        let watch = self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(w) = watch {
            w.notify();
        }
    }

    fn waiting(&self) -> String {
        let why = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        format!("database not ready: {why}")
    }

    fn set_waiting(&self, why: String) {
        *self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Retries [`Inner::ready`] with backoff until it succeeds.
    async fn keep_trying(self: Arc<Self>) {
        let mut delay = Duration::from_millis(250);
        loop {
            tokio::time::sleep(delay).await;
            let limit = self.options.call_limit();
            let result = match tokio::time::timeout(limit, self.ready()).await {
                Ok(r) => r,
                Err(_) => Err(Fault::Pool("timed out".into())),
            };
            match result {
                Ok(()) => {
                    tracing::info!(database = %self.options.display, "database ready");
                    self.wake();
                    return;
                }
                Err(fault) => {
                    let why = match fault.configuration_error() {
                        Some(why) => {
                            tracing::error!(database = %self.options.display, error = %why, "the database cannot be used by this configuration");
                            why
                        }
                        None => fault.into_store(false).to_string(),
                    };
                    self.set_waiting(why);
                }
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Migrates, checks that the database keeps the configured chain (recording it the first
    /// time), creates genesis when due, and loads the chain state.
    async fn ready(&self) -> Outcome<()> {
        let mut client = self.pool.get().await?;
        let created = schema::migrate(&mut client).await?;
        if created {
            tracing::info!(database = %self.options.display, version = schema::SCHEMA_VERSION, "database schema created");
        }
        self.check_settings(&client).await?;
        if let Some(depth) = self.spec.finality_depth {
            // What the tip implies at once, as the embedded engine does on open.
            client
                .execute(
                    "UPDATE bm_chain SET finality_floor = GREATEST(finality_floor, tip - $1 - 1) WHERE id = 1 AND tip IS NOT NULL",
                    &[&sql(depth)],
                )
                .await?;
        }
        drop(client);
        if let Some(genesis) = &self.spec.genesis {
            match writes::set_genesis(self, &self.spec.network, genesis).await {
                Ok(()) => tracing::info!(hash = %genesis.meta.hash, "genesis block created"),
                Err(Fault::Store(StoreError::NotContiguous { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let chain = self.load().await?;
        if self.spec.genesis_pinned
            && let (Some(stored), Some(ours)) = (&chain.genesis_hash, &self.spec.genesis)
            && *stored != ours.meta.hash
        {
            return Err(Refusal::Mismatch(format!(
                "the database keeps a chain whose genesis is {stored}, but chain.genesis_timestamp makes {}",
                ours.meta.hash
            ))
            .into());
        }
        self.install(chain);
        Ok(())
    }

    /// Records the network and mode on first start; refuses another chain's database.
    async fn check_settings(&self, client: &deadpool_postgres::Client) -> Outcome<()> {
        let network = Some(self.spec.network.as_str()).filter(|n| !n.is_empty());
        let wanted = [("network", network), ("mode", self.spec.mode)];
        for (key, value) in wanted.into_iter().filter_map(|(k, v)| Some((k, v?))) {
            client
                .execute(
                    "INSERT INTO bm_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&key, &value],
                )
                .await?;
            let stored: String = client
                .query_one("SELECT value FROM bm_settings WHERE key = $1", &[&key])
                .await?
                .get(0);
            if stored != value {
                let setting = match key {
                    "network" => "chain.network",
                    _ => "the mode (a follower has synchronization.blockchain_engine_url set)",
                };
                return Err(Refusal::Mismatch(format!(
                    "the database keeps {key} '{stored}' but this replica is configured for '{value}' ({setting})"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Reads the chain state from the database.
    async fn load(&self) -> Outcome<Chain> {
        static LOAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT c.seq, c.blocks, c.transactions, c.bytes, c.finality_floor, \
                 (SELECT value FROM bm_settings WHERE key = 'network'), \
                 (SELECT value FROM bm_settings WHERE key = 'genesis_hash'), \
                 (SELECT coalesce(max(id), 0) FROM bm_rollbacks), \
                 b.height IS NOT NULL, {} \
                 FROM bm_chain c LEFT JOIN bm_blocks b ON b.height = c.tip WHERE c.id = 1",
                META.split(", ")
                    .map(|c| format!("b.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let client = self.pool.get().await?;
        // Prepared once per connection: every other replica's commit reloads the state, so
        // parsing and planning it each time would cost the primary once per commit per replica.
        let st = client.prepare_cached(&LOAD).await?;
        // One statement, so the totals and the tip are of the same commit.
        let row = client.query_one(&st, &[]).await?;
        let tip = row.get::<_, bool>(8).then(|| meta_from(&row, 9));
        Ok(Chain {
            seq: row.get(0),
            totals: Totals {
                blocks: to_u64(row.get(1)),
                transactions: to_u64(row.get(2)),
                bytes: to_u64(row.get(3)),
            },
            floor: to_u64(row.get(4)),
            network: row.get(5),
            genesis_hash: row.get(6),
            rollbacks: row.get(7),
            tip,
        })
    }

    /// Replaces the chain state with `chain` unless the one held is newer.
    fn install(&self, chain: Chain) {
        let mut guard = self
            .chain
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_none_or(|held| held.seq <= chain.seq) {
            // Whether the log shows a rollback this process has not had (every rollback that
            // removes a block logs one, so a lower tip shows here too): its notification may
            // have been lost while the listening session was down, and the chain may have
            // grown back past the old tip since. Before the first state, any rollback counts:
            // standbys may lag behind it.
            let unheard = guard
                .as_ref()
                .map_or(chain.rollbacks > 0, |held| chain.rollbacks > held.rollbacks);
            if unheard {
                // Heights the primary served above the old tip may be gone, and standbys may
                // still hold them; which heights it removed is not known here, none below the
                // floor.
                self.cache.forget_above(chain.floor);
                self.standbys.forget_observed();
                self.standbys.note_rewritten(chain.seq);
            }
            self.set_tip(&chain);
            *guard = Some(chain);
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database engine has stopped".into())
}

/// A height as PostgreSQL's `bigint` (heights past `i64::MAX` name no block).
fn sql(height: u64) -> i64 {
    i64::try_from(height).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn meta_of(row: &Row) -> BlockMeta {
    meta_from(row, 0)
}

/// The [`META`] columns of `row` from column `at` on.
fn meta_from(row: &Row, at: usize) -> BlockMeta {
    BlockMeta {
        height: to_u64(row.get(at)),
        hash: row.get(at + 1),
        previous_hash: row.get(at + 2),
        merkle_root: row.get(at + 3),
        timestamp: row.get(at + 4),
        timestamp_micros: row.get(at + 5),
        producer: row.get(at + 6),
        transaction_count: u32::try_from(row.get::<_, i32>(at + 7)).unwrap_or(0),
        block_size_bytes: to_u64(row.get(at + 8)),
    }
}

fn direction(order: Order) -> &'static str {
    match order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    }
}

/// `LIMIT` and `OFFSET` values.
fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The stored body at `height`, kept in the cache unless a rollback came in between.
async fn read_body(inner: Arc<Inner>, height: u64) -> Outcome<Option<Vec<u8>>> {
    let generation = inner.cache.generation();
    let body = inner
        .read(
            Wants::At(height),
            Option::is_none,
            move |client| async move {
                let st = client
                    .prepare_cached("SELECT body FROM bm_blocks WHERE height = $1")
                    .await?;
                Ok(client
                    .query_opt(&st, &[&sql(height)])
                    .await?
                    .map(|r| r.get::<_, Vec<u8>>(0)))
            },
        )
        .await?;
    if let Some(body) = &body {
        inner
            .cache
            .put_read(generation, height, Bytes::copy_from_slice(body));
    }
    Ok(body)
}

async fn height_of(inner: Arc<Inner>, hash: String) -> Outcome<Option<u64>> {
    inner
        .read(Wants::Lookup, Option::is_none, move |client: Conn| {
            let hash = hash.clone();
            async move {
                let st = client
                    .prepare_cached("SELECT height FROM bm_blocks WHERE hash = $1")
                    .await?;
                Ok(client
                    .query_opt(&st, &[&hash])
                    .await?
                    .map(|r| to_u64(r.get(0))))
            }
        })
        .await
}

impl Engine for PgStore {
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        self.in_memory(|c| c.tip.clone())
    }

    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.call(false, move |inner| async move {
            inner
                .read(
                    Wants::At(height),
                    Option::is_none,
                    move |client| async move {
                        let st = client
                            .prepare_cached(&format!(
                                "SELECT {META} FROM bm_blocks WHERE height = $1"
                            ))
                            .await?;
                        Ok(client
                            .query_opt(&st, &[&sql(height)])
                            .await?
                            .map(|r| meta_of(&r)))
                    },
                )
                .await
        })
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(body) = self.inner.cache.get(height) {
            return Ok(Some(body.to_vec()));
        }
        self.call(false, move |inner| read_body(inner, height))
    }

    fn body_at_async(&self, height: u64) -> super::StoreFuture<Option<Vec<u8>>> {
        if let Some(body) = self.inner.cache.get(height) {
            return Box::pin(std::future::ready(Ok(Some(body.to_vec()))));
        }
        self.call_async(false, move |inner| read_body(inner, height))
    }

    fn height_of_hash_async(&self, hash: &str) -> super::StoreFuture<Option<u64>> {
        let hash = hash.to_string();
        self.call_async(false, move |inner| height_of(inner, hash))
    }

    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        let hash = hash.to_string();
        self.call(false, move |inner| height_of(inner, hash))
    }

    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        let tx_id = tx_id.to_string();
        self.call(false, move |inner| async move {
            inner
                .read(Wants::Lookup, Option::is_none, move |client: Conn| {
                    let tx_id = tx_id.clone();
                    async move {
                        let st = client
                            .prepare_cached(
                                "SELECT height, position FROM bm_transactions WHERE tx_id = $1",
                            )
                            .await?;
                        Ok(client.query_opt(&st, &[&tx_id]).await?.map(|r| {
                            (
                                to_u64(r.get(0)),
                                u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                            )
                        }))
                    }
                })
                .await
        })
    }

    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let st = client.prepare_cached(STORED_TX_IDS).await?;
            let rows = client.query(&st, &[&ids]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
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
        if limit == 0 || to < from {
            return Ok(Vec::new());
        }
        self.call(false, move |inner| async move {
            inner
                .read(Wants::UpTo(to), |_| false, move |client| async move {
                    let st = client
                        .prepare_cached(&format!(
                            "SELECT {META} FROM bm_blocks WHERE height BETWEEN $1 AND $2 ORDER BY height {} OFFSET $3 LIMIT $4",
                            direction(order)
                        ))
                        .await?;
                    let rows = client
                        .query(&st, &[&sql(from), &sql(to), &count(offset), &count(limit)])
                        .await?;
                    Ok(rows.iter().map(meta_of).collect())
                })
                .await
        })
    }

    fn metas_by_time(
        &self,
        from: u64,
        to: u64,
        order: Order,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<BlockMeta>, StoreError> {
        if limit == 0 || to < from {
            return Ok(Vec::new());
        }
        self.call(false, move |inner| async move {
            inner
                .read(Wants::UpTo(to), |_| false, move |client| async move {
                    let dir = direction(order);
                    let st = client
                        .prepare_cached(&format!(
                            "SELECT {META} FROM bm_blocks WHERE height BETWEEN $1 AND $2 ORDER BY ts_micros {dir}, height {dir} OFFSET $3 LIMIT $4"
                        ))
                        .await?;
                    let rows = client
                        .query(&st, &[&sql(from), &sql(to), &count(offset), &count(limit)])
                        .await?;
                    Ok(rows.iter().map(meta_of).collect())
                })
                .await
        })
    }

    fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A page may end anywhere up to the known tip: read where every block of it is.
        let end = from.saturating_add(limit as u64 - 1);
        self.call(false, move |inner| async move {
            inner
                .read(Wants::UpTo(end), |_| false, move |client| async move {
                    // Sizes first, so no body past the budget is ever read: the first always, then as
                    // many as fit.
                    let sizes = client
                        .prepare_cached(
                            "SELECT height, octet_length(body)::int8 FROM bm_blocks WHERE height >= $1 ORDER BY height LIMIT $2",
                        )
                        .await?;
                    let rows = client.query(&sizes, &[&sql(from), &count(limit)]).await?;
                    let mut last = None;
                    let mut total = 0u64;
                    for (i, row) in rows.iter().enumerate() {
                        let size = to_u64(row.get(1));
                        if i > 0 && total.saturating_add(size) > max_bytes as u64 {
                            break;
                        }
                        total = total.saturating_add(size);
                        last = Some(to_u64(row.get(0)));
                    }
                    let Some(last) = last else {
                        return Ok(Vec::new());
                    };
                    let st = client
                        .prepare_cached(
                            "SELECT body FROM bm_blocks WHERE height BETWEEN $1 AND $2 ORDER BY height",
                        )
                        .await?;
                    let rows = client.query(&st, &[&sql(from), &sql(last)]).await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                })
                .await
        })
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        self.in_memory(|c| c.totals)
    }

    fn chain_info(&self) -> Result<ChainInfo, StoreError> {
        self.in_memory(|c| ChainInfo {
            format_version: schema::SCHEMA_VERSION as u32,
            network: c
                .network
                .clone()
                .unwrap_or_else(|| DEFAULT_NETWORK.to_string()),
            genesis_hash: c.genesis_hash.clone(),
        })
    }

    fn set_genesis(&self, network: &str, genesis: BlockRecord) -> Result<(), StoreError> {
        let network = network.to_string();
        self.call(true, move |inner| async move {
            writes::set_genesis(&inner, &network, &genesis).await?;
            let chain = inner.load().await?;
            inner.install(chain);
            Ok(())
        })
    }

    fn append(&self, blocks: &[BlockRecord]) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let blocks = blocks.to_vec();
        self.call(true, move |inner| async move {
            writes::append(&inner, &blocks).await
        })
    }

    fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, StoreError> {
        self.call(true, move |inner| async move {
            writes::rollback_above(&inner, height).await
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.call(true, move |inner| async move {
            let client = inner.pool.get().await?;
            // A real write on the primary; not waited for durably (it is only a probe).
            client
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = off; \
                     INSERT INTO bm_probe (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = now(); \
                     COMMIT",
                )
                .await?;
            Ok(())
        })
    }

    fn check_reachable(&self) -> Result<(), StoreError> {
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    fn file_size(&self) -> Result<u64, StoreError> {
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let row = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?;
            Ok(to_u64(row.get(0)))
        })
    }

    fn path(&self) -> &Path {
        &self.label
    }

    fn volume(&self) -> Option<&Path> {
        None
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn reads_inline(&self) -> bool {
        false
    }

    fn keeps_quarantine(&self) -> bool {
        true
    }

    fn put_quarantined(
        &self,
        name: &str,
        entry: &[u8],
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        let (name, entry) = (name.to_string(), entry.to_vec());
        self.call(true, move |inner| async move {
            let mut client = inner.pool.get().await?;
            let txn = client.transaction().await?;
            // One filing at a time across replicas, so the bounds hold for all of them.
            txn.execute("LOCK TABLE bm_quarantine IN SHARE ROW EXCLUSIVE MODE", &[])
                .await?;
            txn.execute(
                "INSERT INTO bm_quarantine (name, entry) VALUES ($1, $2)",
                &[&name, &entry],
            )
            .await?;
            // The newest entries that fit both bounds stay; the new one always does.
            txn.execute(
                "DELETE FROM bm_quarantine WHERE id IN (SELECT id FROM ( \
                   SELECT id, row_number() OVER w AS n, sum(octet_length(entry)) OVER w AS total \
                   FROM bm_quarantine WINDOW w AS (ORDER BY id DESC)) t \
                 WHERE n > 1 AND (n > $1 OR total > $2))",
                &[
                    &count(max_entries),
                    &i64::try_from(max_bytes).unwrap_or(i64::MAX),
                ],
            )
            .await?;
            txn.commit().await?;
            Ok(())
        })
    }

    fn quarantined(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let rows = client
                .query(
                    "SELECT name, octet_length(entry)::int8 FROM bm_quarantine ORDER BY id",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), to_u64(r.get(1)))).collect())
        })
    }

    fn follow_changes(&self, watch: Arc<crate::store::tip::TipWatch>) -> bool {
        // The chain state's lock first, as `install` takes them, so no state installed
        // meanwhile is missed.
        let chain = self
            .inner
            .chain
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(chain) = chain.as_ref() {
            watch.set(chain.tip.as_ref().map(|t| t.height));
        }
        *self
            .inner
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watch);
        true
    }

    fn finality_floor(&self) -> Result<u64, StoreError> {
        self.in_memory(|c| c.floor)
    }

    fn standbys(&self) -> Vec<crate::store::StandbyState> {
        self.inner.standby_states()
    }

    fn reads_served(&self) -> Option<(u64, u64)> {
        self.inner
            .standbys
            .configured()
            .then(|| self.inner.standbys.served())
    }

    fn raise_finality_floor(&self, height: u64) -> Result<u64, StoreError> {
        self.call(true, move |inner| async move {
            let client = inner.pool.get().await?;
            let row = client
                .query_one(
                    "UPDATE bm_chain SET finality_floor = GREATEST(finality_floor, LEAST($1, COALESCE(tip, 0))) WHERE id = 1 RETURNING finality_floor",
                    &[&sql(height)],
                )
                .await?;
            let floor = to_u64(row.get(0));
            inner.update(|c| c.floor = c.floor.max(floor));
            Ok(floor)
        })
    }

    fn record_quarantined(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.call(true, move |inner| async move {
            let client = inner.pool.get().await?;
            let row = client
                .query_opt(
                    "INSERT INTO bm_quarantined (key) VALUES ($1) ON CONFLICT (key) DO NOTHING RETURNING id",
                    &[&key],
                )
                .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            let id: i64 = row.get(0);
            // Bounded like the embedded index: the oldest keys are forgotten first.
            client
                .execute(
                    "DELETE FROM bm_quarantined WHERE id <= $1",
                    &[&(id - QUARANTINE_INDEX_MAX)],
                )
                .await?;
            Ok(true)
        })
    }

    fn blocks_since(&self, since_micros: i64, cap: u64) -> Result<u64, StoreError> {
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let st = client
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM bm_blocks WHERE ts_micros >= $1 LIMIT $2) t",
                )
                .await?;
            let row = client.query_one(&st, &[&since_micros, &count(cap)]).await?;
            Ok(to_u64(row.get(0)))
        })
    }

    fn rollback_log(&self) -> Result<Vec<Rollback>, StoreError> {
        self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let rows = client
                .query(
                    "SELECT entry FROM bm_rollbacks ORDER BY id DESC LIMIT $1",
                    &[&count(super::ROLLBACK_LOG_MAX)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| {
                        Fault::Store(StoreError::Corrupt(format!(
                            "a rollback log entry cannot be read: {e}"
                        )))
                    })
                })
                .collect()
        })
    }

    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        txn::begin(self, Vec::new())
    }

    fn begin_for(&self, tx_ids: &[&str]) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        txn::begin(self, tx_ids.iter().map(|id| id.to_string()).collect())
    }

    fn heights_of_hashes(&self, hashes: &[&str]) -> Result<Vec<Option<u64>>, StoreError> {
        self.lookup_keys(
            "SELECT hash, height FROM bm_blocks WHERE hash = ANY($1)",
            hashes,
            |r| to_u64(r.get(1)),
        )
    }

    fn tx_locations(&self, ids: &[&str]) -> Result<Vec<Option<(u64, u32)>>, StoreError> {
        self.lookup_keys(
            "SELECT tx_id, height, position FROM bm_transactions WHERE tx_id = ANY($1)",
            ids,
            |r| {
                let position = u32::try_from(r.get::<_, i32>(2)).unwrap_or(0);
                (to_u64(r.get(1)), position)
            },
        )
    }

    fn served_bodies(&self, from: u64, count: usize) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // What `body_at` serves: the cache where it holds the body, else the stored row; the
        // misses are read in one statement, and not cached (a whole-chain check would only
        // push the hot bodies out).
        let mut served: Vec<Option<Vec<u8>>> = (from..from + count as u64)
            .map(|h| self.inner.cache.get(h).map(|b| b.to_vec()))
            .collect();
        let missing: Vec<i64> = (from..)
            .zip(&served)
            .filter(|(_, b)| b.is_none())
            .map(|(h, _)| sql(h))
            .collect();
        if missing.is_empty() {
            return Ok(served);
        }
        let rows = self.call(false, move |inner| async move {
            let client = inner.pool.get().await?;
            let st = client
                .prepare_cached("SELECT height, body FROM bm_blocks WHERE height = ANY($1)")
                .await?;
            let rows = client.query(&st, &[&missing]).await?;
            Ok(rows
                .iter()
                .map(|r| (to_u64(r.get(0)), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        })?;
        for (height, body) in rows {
            if let Some(slot) = height
                .checked_sub(from)
                .and_then(|i| served.get_mut(i as usize))
            {
                *slot = Some(body);
            }
        }
        Ok(served)
    }
}

/// Whether a batched lookup found nothing for some key. A `&Vec`: it is the `misses` test of a
/// read answering a `Vec`.
#[allow(clippy::ptr_arg)]
fn any_missing<T>(found: &Vec<Option<T>>) -> bool {
    found.iter().any(Option::is_none)
}

/// Most keys the quarantine index keeps, as on the embedded engine.
const QUARANTINE_INDEX_MAX: i64 = 65_536;
