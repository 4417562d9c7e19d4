//! Reads from hot standbys (`storage.postgres.read_urls`): one pool per standby, and the rules
//! that keep read-your-writes across replicas when a standby replays a few milliseconds behind
//! the primary (spec §13: the height is the causal token).
//!
//! The known tip is this process's chain state (its own commits and every other replica's,
//! heard of on the primary's `LISTEN` session), raised by any block the primary served above
//! it. A standby's answer is trusted as follows:
//! - a block by height that it has: served; one it misses at or below the known tip is replay
//!   lag: its replayed tip is polled for up to `replay_wait`, then the primary is read; one above
//!   the known tip is asked of the primary (another replica may have committed it a moment ago).
//! - a lookup by hash or transaction id that it misses: while it is behind the known tip, its
//!   replay is waited for as above and it is asked again; a miss on a standby that has replayed
//!   the known tip is confirmed by the primary (measured here: another replica's notification
//!   trails the client's next request often enough, 2-15% of reads by hash right after a create
//!   through another replica, that the standby's miss cannot pass for a 404 on its own), and is
//!   the answer while the primary cannot be reached.
//! - a list up to a height: read there only once the standby has replayed that height (or the
//!   known tip, whichever is lower), waiting for it as above; else read from the primary, so a
//!   list never stops short of what `latest` advertises.
//!
//! A standby that fails a read (connection refused or lost, no answer within
//! `connect_timeout`, no schema yet) is marked down: reads go to the primary at once, and only
//! the background check (every [`CHECK_EVERY`]) tries it again, so no read waits on a dead
//! standby twice.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::fault::{Fault, Outcome};
use super::{Inner, PgOptions, connect, to_u64};
use crate::store::StandbyState;

/// How often each standby's replay position is read (for lag, health and metrics), and how
/// soon a standby marked down is tried again.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a read waiting for replay asks the standby how far it got: replay takes about
/// half a millisecond on a healthy standby.
const POLL: Duration = Duration::from_millis(1);

/// Replay further behind than this (at the last check) is lag, not the usual milliseconds:
/// reads stop waiting for it.
const LAGGING: Duration = Duration::from_secs(1);

/// A connection shared by the statements of one read.
pub(super) type Conn = Arc<deadpool_postgres::Client>;

/// What a read needs of a standby's answer before it is served.
#[derive(Clone, Copy, Debug)]
pub(super) enum Wants {
    /// The block at this height.
    At(u64),
    /// Blocks found by hash or transaction id.
    Lookup,
    /// Blocks up to this height.
    UpTo(u64),
}

/// What a standby's answer is worth.
enum Verdict<T> {
    /// Served as it is.
    Serve(T),
    /// Not trusted: the primary is asked.
    Primary,
    /// A miss on a standby that has replayed the known tip: the primary is asked all the same
    /// (another replica's commit may not have been heard of yet: the notification can trail
    /// the client's next request), and this is the answer while the primary cannot be reached.
    Confirm(T),
}

/// How long reads stop asking an unreachable primary to confirm a standby's miss.
const PRIMARY_RETRY: Duration = Duration::from_secs(1);

/// A lookup on `client`, with the standby's replayed tip as of a moment before it ran.
async fn lookup<T, F, Fut>(standby: &Standby, client: &Conn, query: &F) -> Outcome<(Option<u64>, T)>
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = Outcome<T>>,
{
    // The replayed tip is asked for first, in the same round trip: the lookup then runs on a
    // snapshot at least as new, so a standby that had replayed a height and still misses does
    // not have the block below it. (Asked after, the tip could count a commit replayed between
    // the two statements.)
    let mut tip = std::pin::pin!(standby.replayed(client));
    // Its first poll queues the statement on the connection, ahead of the lookup's.
    let early = std::future::poll_fn(|cx| Poll::Ready(tip.as_mut().poll(cx))).await;
    let answer = query(client.clone()).await?;
    let replayed = match early {
        Poll::Ready(r) => r?,
        Poll::Pending => tip.await?,
    };
    Ok((replayed, answer))
}

/// One hot standby.
pub(super) struct Standby {
    index: usize,
    display: String,
    pool: Pool,
    state: Mutex<Health>,
}

/// What the last contact with a standby found.
#[derive(Clone, Debug)]
struct Health {
    /// Reads may go there.
    up: bool,
    /// Why it is down.
    error: Option<String>,
    /// The chain's tip as the standby has replayed it (`None`: an empty chain, or not read yet).
    replayed: Option<u64>,
    /// The chain's commit number as replayed there.
    replayed_seq: Option<i64>,
    /// Seconds since the last transaction it replayed committed on the primary, while it has
    /// received WAL it has not replayed (else 0).
    replay_age: Option<f64>,
}

/// The standbys of one engine, and what they served.
pub(super) struct Standbys {
    list: Vec<Arc<Standby>>,
    next: AtomicUsize,
    replay_wait: Duration,
    /// 1 + the highest height heard of or served by the primary above the chain state's tip
    /// (0: none).
    observed: AtomicU64,
    /// Reads answered by a standby.
    by_standby: AtomicU64,
    /// Reads answered by the primary (no standby up, or the standby could not answer).
    by_primary: AtomicU64,
    /// Until when a standby's miss is served without asking the primary, which just failed.
    primary_down_until: Mutex<Option<Instant>>,
    /// The chain's commit number as of the last rollback known here (0: none; [`REWRITING`]:
    /// another replica's rollback was heard of and the chain state is being reloaded). A
    /// standby that has not replayed it may still hold the removed blocks, so its answers are
    /// served only once it has.
    rewritten: AtomicI64,
}

/// [`Standbys::rewritten`] while the commit number of a rollback just heard of is not known.
pub(super) const REWRITING: i64 = i64::MAX;

impl Standbys {
    /// A pool for each standby of `options` (built lazily: nothing connects yet).
    pub(super) fn new(options: &PgOptions) -> Result<Standbys, String> {
        let mut list = Vec::with_capacity(options.read.len());
        for (index, target) in options.read.iter().enumerate() {
            let pool = connect::pool(&options.for_standby(target)).map_err(|e| {
                format!(
                    "storage.postgres.read_urls[{index}] ({}): {e}",
                    target.display
                )
            })?;
            list.push(Arc::new(Standby {
                index,
                display: target.display.clone(),
                pool,
                // Down until the first check (at once) finds it keeps this chain.
                state: Mutex::new(Health {
                    up: false,
                    error: Some("not checked yet".into()),
                    replayed: None,
                    replayed_seq: None,
                    replay_age: None,
                }),
            }));
        }
        Ok(Standbys {
            list,
            next: AtomicUsize::new(0),
            replay_wait: options.replay_wait,
            observed: AtomicU64::new(0),
            by_standby: AtomicU64::new(0),
            by_primary: AtomicU64::new(0),
            primary_down_until: Mutex::new(None),
            rewritten: AtomicI64::new(0),
        })
    }

    /// Whether any standby is configured.
    pub(super) fn configured(&self) -> bool {
        !self.list.is_empty()
    }

    /// The next standby that is up, round robin.
    fn pick(&self) -> Option<Arc<Standby>> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.list[(start + i) % n])
            .find(|s| s.health().up)
            .cloned()
    }

    /// Forgets the heights the primary served above the known tip (a rollback may have
    /// removed them).
    pub(super) fn forget_observed(&self) {
        self.observed.store(0, Ordering::Relaxed);
    }

    /// A rollback committed as the chain's commit number `seq` (or, with [`REWRITING`], heard
    /// of from another replica before the reload that tells its number).
    pub(super) fn note_rewritten(&self, seq: i64) {
        self.rewritten.fetch_max(seq, Ordering::Relaxed);
    }

    /// The chain state reloaded after a rollback was heard of is of commit number `seq`: at
    /// or after that rollback's.
    pub(super) fn settle_rewritten(&self, seq: i64) {
        let _ =
            self.rewritten
                .compare_exchange(REWRITING, seq, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Raises the known tip to `height`, committed by another replica (its notification
    /// arrived; the chain state follows once reloaded).
    pub(super) fn note_committed(&self, height: u64) {
        self.observed
            .fetch_max(height.saturating_add(1), Ordering::Relaxed);
    }

    fn primary_down(&self) -> bool {
        self.primary_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn primary_failed(&self) {
        *self
            .primary_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + PRIMARY_RETRY);
    }

    fn primary_answered(&self) {
        *self
            .primary_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Reads answered by a standby and by the primary so far.
    pub(super) fn served(&self) -> (u64, u64) {
        (
            self.by_standby.load(Ordering::Relaxed),
            self.by_primary.load(Ordering::Relaxed),
        )
    }
}

impl Standby {
    fn health(&self) -> Health {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn with_health(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    fn mark_down(&self, why: String) {
        let before = self.health();
        // Said once per change, not at every check of a standby that stays down.
        let news = before.up || before.error.as_deref() != Some(why.as_str());
        self.with_health(|h| {
            h.up = false;
            h.error = Some(why.clone());
        });
        // Its idle connections may be to a server that went away: the next try connects anew.
        self.pool.retain(|_, _| false);
        if news {
            tracing::warn!(standby = self.index, database = %self.display, error = %why, "standby down; reads go to the primary until it answers again");
        }
    }

    fn mark_up(&self) {
        let was_up = self.health().up;
        self.with_health(|h| {
            h.up = true;
            h.error = None;
        });
        if !was_up {
            tracing::info!(standby = self.index, database = %self.display, "standby answers again; reads go there");
        }
    }

    /// Whether the last check found it behind the chain state of commit `seq` by more than
    /// [`LAGGING`].
    fn lagging(&self, seq: Option<i64>) -> bool {
        let h = self.health();
        let behind = match (seq, h.replayed_seq) {
            (Some(known), Some(replayed)) => replayed < known,
            _ => false,
        };
        behind && h.replay_age.is_some_and(|age| age > LAGGING.as_secs_f64())
    }

    /// The chain's tip as this standby has replayed it (its commit number is kept too).
    async fn replayed(&self, client: &Conn) -> Outcome<Option<u64>> {
        // The simple protocol: one message, sent when this is first polled (see the lookup).
        let rows = client
            .simple_query("SELECT tip, seq FROM bm_chain WHERE id = 1")
            .await?;
        let row = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let tip = row
            .and_then(|r| r.get(0))
            .and_then(|t| t.parse::<u64>().ok());
        let seq = row
            .and_then(|r| r.get(1))
            .and_then(|s| s.parse::<i64>().ok());
        self.with_health(|h| {
            h.replayed = tip;
            h.replayed_seq = seq.or(h.replayed_seq);
        });
        Ok(tip)
    }

    /// Whether the standby has replayed the last rollback known here (waiting for it until
    /// `deadline`): until it has, it may still serve blocks that rollback removed.
    async fn replayed_rewrite(
        &self,
        client: &Conn,
        rewritten: i64,
        deadline: Instant,
    ) -> Outcome<bool> {
        if rewritten == 0 || self.health().replayed_seq.is_some_and(|s| s >= rewritten) {
            return Ok(true);
        }
        if rewritten == REWRITING {
            return Ok(false);
        }
        loop {
            self.replayed(client).await?;
            if self.health().replayed_seq.is_some_and(|s| s >= rewritten) {
                return Ok(true);
            }
            if Instant::now() + POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (polling) until the standby has replayed `height`, at most until `deadline`.
    async fn replayed_up_to(&self, client: &Conn, height: u64, deadline: Instant) -> Outcome<bool> {
        loop {
            if self.replayed(client).await?.is_some_and(|t| t >= height) {
                return Ok(true);
            }
            if Instant::now() + POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One check of the standby: that it keeps the chain whose genesis is `genesis` (the
    /// primary's, when known), its replay position and how old it is.
    async fn check(&self, genesis: Option<String>) -> Outcome<Result<(), String>> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                // Behind only while WAL it received is not replayed yet (a standby of an idle
                // primary has an old last replayed commit and is not behind at all).
                "SELECT c.tip, c.seq, \
                 CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                 ELSE EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8 END, \
                 (SELECT value FROM bm_settings WHERE key = 'genesis_hash') \
                 FROM bm_chain c WHERE c.id = 1",
                &[],
            )
            .await?;
        let tip = row.get::<_, Option<i64>>(0).map(to_u64);
        let seq: i64 = row.get(1);
        let age: Option<f64> = row.get(2);
        let kept: Option<String> = row.get(3);
        if let Some(genesis) = genesis
            && kept.as_deref() != Some(genesis.as_str())
        {
            // Serving it would answer another chain's blocks (a read URL of another database),
            // or none at all.
            return Ok(Err(match kept {
                Some(kept) => {
                    format!("it keeps another chain (genesis {kept}; the primary's is {genesis})")
                }
                None => "it has not replayed the chain's genesis yet".into(),
            }));
        }
        self.with_health(|h| {
            h.replayed = tip;
            h.replayed_seq = Some(seq);
            h.replay_age = age.map(|a| a.max(0.0));
        });
        Ok(Ok(()))
    }
}

/// Whether a failed standby read means the standby cannot serve for now (rather than this one
/// statement failing, as a query cancelled by a recovery conflict does).
fn is_down(fault: &Fault) -> bool {
    match fault {
        Fault::Pool(_) => true,
        Fault::Db(e) => match e.code() {
            // The connection itself failed (refused, closed, reset).
            None => true,
            Some(code) => {
                let c = code.code();
                // No schema replayed yet or no such database (class 42, 3D), or a server that
                // is shutting down or starting up (class 57).
                c.starts_with("42")
                    || c.starts_with("3D")
                    || c.starts_with("57")
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || *code == SqlState::INVALID_PASSWORD
            }
        },
        Fault::Refused(_) | Fault::Store(_) => false,
    }
}

/// Checks each standby every [`CHECK_EVERY`] until the engine stops: a standby marked down is
/// marked up once it answers, and the replay position behind lag, health and metrics stays
/// fresh.
pub(super) async fn watch(inner: Arc<Inner>) {
    let mut tasks = Vec::new();
    for standby in &inner.standbys.list {
        let standby = standby.clone();
        let limit = inner.options.connect_timeout;
        let inner = inner.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let genesis = inner.snapshot().and_then(|c| c.genesis_hash);
                match tokio::time::timeout(limit, standby.check(genesis)).await {
                    Ok(Ok(Ok(()))) => standby.mark_up(),
                    Ok(Ok(Err(why))) => standby.mark_down(why),
                    Ok(Err(fault)) => standby.mark_down(fault.into_store(false).to_string()),
                    Err(_) => {
                        standby.mark_down(format!("no answer within {} ms", limit.as_millis()))
                    }
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

impl Inner {
    /// The highest height known to be committed: the chain state's tip, or a block the primary
    /// served above it.
    pub(super) fn known_tip(&self) -> Option<u64> {
        let tip = self.snapshot().and_then(|c| c.tip.map(|t| t.height));
        let observed = self.standbys.observed.load(Ordering::Relaxed);
        match observed.checked_sub(1) {
            Some(seen) => Some(tip.map_or(seen, |t| t.max(seen))),
            None => tip,
        }
    }

    /// A read that a standby may answer under `wants`' rule, else the primary. `misses` says
    /// whether an answer lacks a block it asked for.
    pub(super) async fn read<T, F, Fut>(
        self: &Arc<Self>,
        wants: Wants,
        misses: fn(&T) -> bool,
        query: F,
    ) -> Outcome<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        // A standby's miss the primary is asked to confirm, served when the primary cannot be.
        let mut fallback = None;
        if let Some(standby) = self.standbys.pick() {
            // Bounded so a standby that stopped answering costs one read the connect timeout,
            // not the whole call limit; the wait for replay comes on top.
            let limit = self.options.connect_timeout + self.standbys.replay_wait;
            match tokio::time::timeout(limit, self.on_standby(&standby, wants, misses, &query))
                .await
            {
                Ok(Ok(Verdict::Serve(answer))) => {
                    self.standbys.by_standby.fetch_add(1, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Ok(Verdict::Confirm(answer))) => {
                    if self.standbys.primary_down() {
                        self.standbys.by_standby.fetch_add(1, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    fallback = Some(answer);
                }
                Ok(Ok(Verdict::Primary)) => {}
                Ok(Err(fault)) => {
                    if is_down(&fault) {
                        standby.mark_down(fault.into_store(false).to_string());
                    } else {
                        tracing::debug!(standby = standby.index, error = %fault.into_store(false), "standby read failed; reading the primary");
                    }
                }
                Err(_) => standby.mark_down(format!("no answer within {} ms", limit.as_millis())),
            }
        }
        let primary = async { query(Arc::new(self.pool.get().await?)).await };
        let answer = match primary.await {
            Ok(answer) => {
                self.standbys.primary_answered();
                answer
            }
            Err(fault) => {
                let Some(answer) = fallback else {
                    return Err(fault);
                };
                if is_down(&fault) {
                    self.standbys.primary_failed();
                }
                self.standbys.by_standby.fetch_add(1, Ordering::Relaxed);
                return Ok(answer);
            }
        };
        self.standbys.by_primary.fetch_add(1, Ordering::Relaxed);
        if let Wants::At(height) = wants
            && !misses(&answer)
            && self.known_tip().is_none_or(|t| height > t)
        {
            // The primary has it: the chain reached it, whatever this process heard so far.
            self.standbys
                .observed
                .fetch_max(height.saturating_add(1), Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// The standby's answer when `wants`' rule lets it be served; `None`: ask the primary.
    async fn on_standby<T, F, Fut>(
        &self,
        standby: &Standby,
        wants: Wants,
        misses: fn(&T) -> bool,
        query: &F,
    ) -> Outcome<Verdict<T>>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Outcome<T>>,
    {
        // Read before the standby is asked: whatever the standby misses, the known tip it is
        // compared with is no newer than the read.
        let known = self.known_tip();
        // A standby seconds behind will not replay a missing block within the wait: its misses
        // go to the primary at once instead of each paying the wait.
        let seq = self.snapshot().map(|c| c.seq);
        let wait = if standby.lagging(seq) {
            Duration::ZERO
        } else {
            self.standbys.replay_wait
        };
        let deadline = Instant::now() + wait;
        let rewritten = self.standbys.rewritten.load(Ordering::Relaxed);
        let client: Conn = Arc::new(standby.pool.get().await?);
        // Checked before the read: replay only moves forward, so the read sees that state too.
        if !standby
            .replayed_rewrite(&client, rewritten, deadline)
            .await?
        {
            return Ok(Verdict::Primary);
        }
        match wants {
            Wants::At(height) => {
                let answer = query(client.clone()).await?;
                if !misses(&answer) {
                    return Ok(Verdict::Serve(answer));
                }
                if known.is_none_or(|k| height > k) {
                    return Ok(Verdict::Primary);
                }
                if standby.replayed_up_to(&client, height, deadline).await? {
                    let answer = query(client).await?;
                    if !misses(&answer) {
                        return Ok(Verdict::Serve(answer));
                    }
                }
                Ok(Verdict::Primary)
            }
            Wants::Lookup => {
                let (replayed, answer) = lookup(standby, &client, query).await?;
                if !misses(&answer) {
                    return Ok(Verdict::Serve(answer));
                }
                let Some(known) = known else {
                    return Ok(Verdict::Confirm(answer));
                };
                if replayed.is_some_and(|r| r >= known) {
                    return Ok(Verdict::Confirm(answer));
                }
                // Behind the known tip: the block may be on its way. Waited for, then asked
                // again here, rather than at once of the primary.
                if !standby.replayed_up_to(&client, known, deadline).await? {
                    return Ok(Verdict::Primary);
                }
                let answer = query(client).await?;
                if misses(&answer) {
                    Ok(Verdict::Confirm(answer))
                } else {
                    Ok(Verdict::Serve(answer))
                }
            }
            Wants::UpTo(height) => {
                let need = match known {
                    Some(k) => height.min(k),
                    None => return Ok(Verdict::Serve(query(client).await?)),
                };
                if standby.replayed_up_to(&client, need, deadline).await? {
                    return Ok(Verdict::Serve(query(client).await?));
                }
                Ok(Verdict::Primary)
            }
        }
    }

    /// Each standby as health and metrics show it.
    pub(super) fn standby_states(&self) -> Vec<StandbyState> {
        let (known, seq) = match self.snapshot() {
            Some(c) => (self.known_tip(), Some(c.seq)),
            None => (None, None),
        };
        self.standbys
            .list
            .iter()
            .map(|s| {
                let h = s.health();
                let lag_blocks = match (known, h.replayed) {
                    (Some(k), Some(r)) => Some(k.saturating_sub(r)),
                    (Some(k), None) => h.replayed_seq.map(|_| k + 1),
                    (None, _) => h.replayed_seq.map(|_| 0),
                };
                // A standby that replayed the last commit this process knows of is not behind,
                // however long ago that commit was.
                let lag_seconds = match (seq, h.replayed_seq) {
                    (Some(known), Some(replayed)) if replayed >= known => Some(0.0),
                    _ => h.replay_age,
                };
                StandbyState {
                    index: s.index,
                    database: s.display.clone(),
                    up: h.up,
                    lag_blocks: if h.up { lag_blocks } else { None },
                    lag_seconds: if h.up { lag_seconds } else { None },
                    error: h.error,
                }
            })
            .collect()
    }
}
