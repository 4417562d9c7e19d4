//! The follower loop: bounded rounds against the upstream, each one poll of its tip and then
//! either nothing (level), a catch-up of at most [`ROUND_MAX_BLOCKS`], or a fork resolution.
//!
//! Catch-up overlaps fetching with committing: up to [`PIPELINE`] range requests (each decoded
//! and parsed on a blocking thread) run while the ledger commits the batches before them, and
//! batches that are already waiting when a commit ends are merged into the next one, so the
//! store's fsync is paid per large group when committing is the bottleneck.

use super::breaker::{Breaker, CircuitState};
use super::client::Upstream;
use super::error::{SyncError, code};
use super::fork::{Forks, Resolution};
use super::retry::Backoff;
use super::status::{Shared, State};
use crate::chain::{self, Failure};
use crate::ledger::{Ledger, Prepared, WriteError};
use crate::quarantine::Quarantine;
use crate::store::{BlockMeta, BlockStore};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// Most blocks one round catches up before it polls the upstream tip again.
pub const ROUND_MAX_BLOCKS: u64 = 50_000;
/// Range requests in flight while committing.
pub const PIPELINE: usize = 4;
/// Most blocks merged into one ledger append.
const MAX_COMMIT: usize = 1000;

/// How the loop and `POST /api/v1/sync` meet: a wake-up and round counters.
#[derive(Debug)]
pub struct Rounds {
    /// Ends the wait between rounds.
    pub wake: Notify,
    /// Rounds begun.
    pub started: AtomicU64,
    /// Rounds finished (the number of the last one).
    pub finished: watch::Sender<u64>,
}

impl Rounds {
    /// Counters at zero.
    pub fn new() -> Self {
        Self {
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
        }
    }
}

impl Default for Rounds {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings the loop reads, from the `synchronization` and `error_handling` sections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wait between rounds once level.
    pub poll: Duration,
    /// Blocks per range request (1-1000).
    pub batch: u32,
    /// Deepest rollback.
    pub max_reorg_depth: u64,
    /// Spacing of failed rounds.
    pub backoff: Backoff,
}

/// How a round ended, when it reached the upstream.
enum Round {
    /// Level with upstream.
    Level,
    /// Moved forward (or back, past a fork); go again at once.
    Progress,
    /// A fork deeper than allowed.
    Diverged(SyncError),
}

/// A fetched and parsed batch: consecutive blocks from `first`, their stored form already
/// built, possibly cut short by a block that does not even parse.
struct Fetched {
    first: u64,
    asked: u64,
    blocks: Vec<Prepared>,
    unparsable: Option<(Value, Vec<Failure>)>,
}

impl Fetched {
    fn end(&self) -> u64 {
        self.first + self.blocks.len() as u64
    }

    /// Every asked block arrived and parsed: the next batch may be merged into this one.
    fn complete(&self) -> bool {
        self.unparsable.is_none() && self.blocks.len() as u64 == self.asked
    }
}

type Pending = AbortOnDropHandle<Result<Fetched, SyncError>>;

/// The loop's own state. Only this task writes blocks in follower mode.
pub struct Follower {
    /// The client, or why none could be built (reported every round).
    pub client: Result<Arc<Upstream>, SyncError>,
    /// Our blocks (read).
    pub store: Arc<dyn BlockStore>,
    /// The write path.
    pub ledger: Ledger,
    /// Where invalid upstream blocks and orphans go.
    pub quarantine: Arc<Quarantine>,
    /// What is reported.
    pub shared: Arc<Shared>,
    /// Meeting point with `run_now`.
    pub rounds: Arc<Rounds>,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// Settings.
    pub settings: Settings,
    /// Hash of the last block quarantined as invalid, so a retried round does not file it
    /// again.
    pub last_quarantined: Option<String>,
}

impl Follower {
    /// Runs rounds until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Ok(client) = &self.client {
            tracing::info!(upstream = %client.shown(), "following upstream");
        }
        loop {
            let number = self.rounds.started.fetch_add(1, Ordering::SeqCst) + 1;
            let wait = tokio::select! {
                _ = shutdown.cancelled() => break,
                wait = self.step() => wait,
            };
            self.rounds.finished.send_replace(number);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.rounds.wake.notified() => {}
            }
        }
        tracing::info!("sync stopped");
    }

    /// One round under the breaker; returns how long to wait before the next.
    async fn step(&mut self) -> Duration {
        let now = Instant::now();
        if let Err(wait) = self.breaker.allow(now) {
            self.shared.set_state(State::CircuitOpen);
            self.publish_circuit();
            return wait;
        }
        self.publish_circuit();
        self.shared.round_started(now);
        let outcome = self.round().await;
        if let Ok(client) = &self.client {
            self.shared.set_per_block(client.per_block());
        }
        let wait = match outcome {
            Ok(Round::Level) => {
                self.succeeded(State::Synced);
                self.settings.poll
            }
            Ok(Round::Progress) => {
                self.succeeded(State::Syncing);
                Duration::ZERO
            }
            Ok(Round::Diverged(e)) => {
                // The upstream answered: not a failure of the link, so the breaker closes.
                self.breaker.on_success();
                if self.shared.state() != State::Diverged {
                    self.shared.record_error(&e);
                    self.shared.set_state(State::Diverged);
                }
                self.settings.poll
            }
            Err(e) => {
                self.shared.record_error(&e);
                self.breaker.on_failure(Instant::now());
                if self.breaker.state() == CircuitState::Open {
                    self.shared.set_state(State::CircuitOpen);
                    Duration::ZERO
                } else {
                    self.shared.set_state(State::Stalled);
                    self.settings
                        .backoff
                        .delay(self.breaker.consecutive_failures())
                }
            }
        };
        self.publish_circuit();
        wait
    }

    fn succeeded(&mut self, state: State) {
        self.breaker.on_success();
        self.shared.record_success();
        self.shared.set_state(state);
    }

    fn publish_circuit(&self) {
        self.shared
            .set_circuit(self.breaker.state(), self.breaker.consecutive_failures());
    }

    async fn round(&mut self) -> Result<Round, SyncError> {
        let client = self.client.clone()?;
        let upstream = client.tip().await?;
        self.shared
            .set_upstream_height(upstream.as_ref().map(|t| t.height));
        let Some(upstream) = upstream else {
            return Ok(Round::Level);
        };
        let local = self.read(|s| s.tip()).await?;
        match local {
            None => self.catch_up(&client, None, upstream.height).await,
            Some(tip) if tip.height >= upstream.height => {
                let ours = if tip.height == upstream.height {
                    Some(tip.hash.clone())
                } else {
                    let at = upstream.height;
                    self.read(move |s| s.meta_at(at)).await?.map(|m| m.hash)
                };
                if ours.as_deref() == Some(upstream.hash.as_str()) {
                    // Level, or upstream is behind on our own chain: wait for it.
                    Ok(Round::Level)
                } else {
                    self.fork(&client, tip.height, upstream.height).await
                }
            }
            Some(tip) => self.catch_up(&client, Some(tip), upstream.height).await,
        }
    }

    async fn fork(&mut self, client: &Upstream, tip: u64, at: u64) -> Result<Round, SyncError> {
        let forks = Forks {
            client,
            store: &self.store,
            ledger: &self.ledger,
            quarantine: &self.quarantine,
            max_depth: self.settings.max_reorg_depth,
        };
        match forks.resolve(tip, at).await? {
            Resolution::RolledBack { ancestor, depth } => {
                self.shared.record_reorg(ancestor, depth);
                Ok(Round::Progress)
            }
            Resolution::NoFork => Ok(Round::Progress),
            Resolution::Diverged(e) => Ok(Round::Diverged(e)),
        }
    }

    /// Fetches and commits from above `tip` towards `target`, pipelined.
    async fn catch_up(
        &mut self,
        client: &Arc<Upstream>,
        tip: Option<BlockMeta>,
        target: u64,
    ) -> Result<Round, SyncError> {
        let first = tip.as_ref().map_or(0, |t| t.height + 1);
        let last = target.min(first + ROUND_MAX_BLOCKS - 1);
        let mut linked: Option<(u64, String)> = tip.map(|t| (t.height, t.hash));
        let mut next = first;
        let mut requested = first;
        let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(PIPELINE);
        let mut carried: Option<Result<Fetched, SyncError>> = None;
        // Where a catch-up spends its time, for the debug log: waiting on upstream (fetch and
        // parse) versus waiting on the ledger (validation and durable commits).
        let round_started = Instant::now();
        let (mut on_fetch, mut on_commit, mut commits) = (Duration::ZERO, Duration::ZERO, 0u32);
        loop {
            while inflight.len() < PIPELINE && requested <= last {
                let n = u64::from(self.settings.batch).min(last - requested + 1);
                inflight.push_back(fetch(client.clone(), requested, n));
                requested += n;
            }
            let waited = Instant::now();
            let result = match carried.take() {
                Some(r) => r,
                None => match inflight.pop_front() {
                    Some(pending) => joined(pending).await,
                    None => break,
                },
            };
            on_fetch += waited.elapsed();
            let mut batch = result?;
            while batch.complete() && batch.blocks.len() < MAX_COMMIT {
                match inflight.front() {
                    Some(p) if p.is_finished() => {}
                    _ => break,
                }
                let Some(pending) = inflight.pop_front() else {
                    break;
                };
                match joined(pending).await {
                    Ok(more) if more.first == batch.end() => {
                        batch.asked += more.asked;
                        batch.blocks.extend(more.blocks);
                        batch.unparsable = more.unparsable;
                    }
                    other => {
                        carried = Some(other);
                        break;
                    }
                }
            }
            if batch.first != next {
                // A short batch earlier left the requests in flight misaligned: refetch.
                inflight.clear();
                carried = None;
                requested = next;
                continue;
            }
            if let (Some(block), Some((height, hash))) = (batch.blocks.first(), &linked)
                && block.block().previous_hash != *hash
            {
                // Upstream's next block builds on a different block at our tip: a fork.
                tracing::info!(
                    height = *height,
                    "upstream's next block does not link to our tip"
                );
                drop(inflight);
                return self.fork(client, *height, *height).await;
            }
            let complete = batch.complete();
            let got = batch.blocks.len() as u64;
            let waited = Instant::now();
            self.commit(&mut batch, &mut linked).await?;
            on_commit += waited.elapsed();
            commits += 1;
            next += got;
            if let Some((body, failures)) = batch.unparsable.take() {
                return Err(self.invalid(next, body, failures).await);
            }
            if !complete {
                if got == 0 && next == first {
                    return Err(SyncError::new(
                        code::FETCH,
                        format!(
                            "upstream {} reports height {target} but served no block at {next}",
                            client.shown()
                        ),
                    ));
                }
                if got == 0 {
                    return Ok(Round::Progress);
                }
                // Upstream sent fewer than asked (a smaller range cap, or its tip moved back):
                // continue from what arrived.
                inflight.clear();
                carried = None;
                requested = next;
            }
        }
        tracing::debug!(
            from = first,
            to = next.saturating_sub(1),
            seconds = round_started.elapsed().as_secs_f64(),
            waiting_on_upstream = on_fetch.as_secs_f64(),
            waiting_on_commits = on_commit.as_secs_f64(),
            commits,
            "catch-up round done"
        );
        Ok(if next > target {
            Round::Level
        } else {
            Round::Progress
        })
    }

    /// Appends a batch through the ledger; an invalid block ends the round after its valid
    /// prefix is stored.
    async fn commit(
        &mut self,
        batch: &mut Fetched,
        linked: &mut Option<(u64, String)>,
    ) -> Result<(), SyncError> {
        if batch.blocks.is_empty() {
            return Ok(());
        }
        let hashes: Vec<(u64, String)> = batch
            .blocks
            .iter()
            .map(|p| (p.block().height, p.block().hash.clone()))
            .collect();
        let blocks = std::mem::take(&mut batch.blocks);
        let appended = self
            .ledger
            .append_prepared(blocks)
            .await
            .map_err(|e| match e {
                WriteError::Closed => SyncError::new(code::FAILED, "the block writer has stopped"),
                e => SyncError::new(code::FAILED, format!("cannot store upstream blocks: {e}")),
            })?;
        if appended.committed > 0 {
            *linked = hashes.get(appended.committed - 1).cloned();
            self.shared
                .record_commit(appended.committed, Instant::now());
        }
        if let Some((_, block, failures)) = appended.rejected {
            let body: Value = serde_json::from_slice(&block.served_json()).unwrap_or(Value::Null);
            return Err(self.invalid(block.height, body, failures).await);
        }
        Ok(())
    }

    /// Quarantines an invalid upstream block (once per block) and says why the round stopped.
    async fn invalid(&mut self, height: u64, body: Value, failures: Vec<Failure>) -> SyncError {
        let summary: Vec<String> = failures.iter().map(ToString::to_string).collect();
        let error = SyncError::new(
            code::FAILED,
            format!(
                "upstream block {height} is invalid and was not stored ({})",
                summary.join("; ")
            ),
        );
        let key = body
            .get("hash")
            .and_then(Value::as_str)
            .map_or_else(|| format!("height {height}"), str::to_owned);
        if self.last_quarantined.as_deref() != Some(key.as_str()) {
            self.last_quarantined = Some(key);
            let quarantine = self.quarantine.clone();
            let errors = json!(failures);
            let reason = format!("invalid upstream block at height {height}");
            let _ =
                tokio::task::spawn_blocking(move || quarantine.put(&reason, errors, &body)).await;
        }
        error
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlockStore) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| SyncError::new(code::FAILED, format!("store read task failed: {e}")))?
            .map_err(|e| SyncError::new(code::FAILED, format!("cannot read our blocks: {e}")))
    }
}

/// Starts fetching `n` blocks from `from` in the background; dropping the handle cancels it.
fn fetch(client: Arc<Upstream>, from: u64, n: u64) -> Pending {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let limit = u32::try_from(n).unwrap_or(u32::MAX);
        let bodies = client.blocks(from, limit).await?;
        tokio::task::spawn_blocking(move || parse(bodies.decode()?, from, n))
            .await
            .map_err(|e| SyncError::new(code::FAILED, format!("block parsing task failed: {e}")))?
    }))
}

/// Parses decoded documents into blocks and builds their stored form, stopping at the first
/// that does not parse.
fn parse(values: Vec<Value>, from: u64, asked: u64) -> Result<Fetched, SyncError> {
    let mut fetched = Fetched {
        first: from,
        asked,
        blocks: Vec::with_capacity(values.len()),
        unparsable: None,
    };
    for (value, expected) in values.into_iter().zip(from..from + asked) {
        match chain::parse_block(&value) {
            Ok(block) if block.height == expected => fetched.blocks.push(Prepared::new(block)),
            Ok(block) => {
                return Err(SyncError::new(
                    code::FAILED,
                    format!(
                        "upstream answered blocks from {from} with height {} where {expected} was due",
                        block.height
                    ),
                ));
            }
            Err(failures) => {
                fetched.unparsable = Some((value, failures));
                break;
            }
        }
    }
    Ok(fetched)
}

async fn joined(pending: Pending) -> Result<Fetched, SyncError> {
    pending
        .await
        .map_err(|e| SyncError::new(code::FAILED, format!("block fetch task failed: {e}")))?
}
