//! The follower loop: bounded rounds against the upstream under the circuit breaker, each one
//! poll of its tip and then either nothing (level), a catch-up of at most
//! [`ROUND_MAX_BLOCKS`](super::catchup::ROUND_MAX_BLOCKS) blocks, or a fork resolution; and
//! the state each outcome leads to.

use super::breaker::{Breaker, CircuitState};
use super::client::Upstream;
use super::damper::Damper;
use super::error::{SyncError, code};
use super::fork::{Forks, Resolution};
use super::retry::Backoff;
use super::status::{Shared, State};
use crate::ledger::Ledger;
use crate::quarantine::Quarantine;
use crate::store::BlockReads;
use crate::store::lease::Leadership;
use crate::supervise::Alive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How often a standby looks at the lease even without a change (the change wakes it sooner).
const LEASE_RECHECK: Duration = Duration::from_secs(1);

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
    /// Wait between rounds once level while subscribed to the upstream's event stream.
    pub push_fallback: Duration,
    /// Whether the upstream's event stream is open now.
    pub subscribed: super::push::Subscribed,
}

impl Settings {
    /// Wait once level: the safety-net interval while the upstream pushes, else the poll.
    fn level_wait(&self) -> Duration {
        if self.subscribed.get() {
            self.push_fallback
        } else {
            self.poll
        }
    }
}

/// How a round ended, when it reached the upstream.
pub(super) enum Round {
    /// Level with upstream.
    Level,
    /// Moved forward (or back, past a fork); go again at once.
    Progress,
    /// A fork deeper than allowed.
    Diverged(SyncError),
    /// A fork not rolled back because reorgs are damped; wait this long.
    Damped(SyncError, Duration),
}

/// The loop's own state. Only this task writes blocks in follower mode.
pub struct Follower {
    /// The client, or why none could be built (reported every round).
    pub client: Result<Arc<Upstream>, SyncError>,
    /// Our blocks (read).
    pub store: Arc<dyn BlockReads>,
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
    /// Limits rollbacks per window (a flapping upstream).
    pub damper: Damper,
    /// `(height, hash)` of our block last found identical (byte for byte) to upstream's, or
    /// fetched from it by this run: an equal hash alone never makes a block "ours".
    pub confirmed: Option<(u64, String)>,
}

impl Follower {
    /// Runs rounds until `shutdown`; each finished round tells `alive` the task works. On a
    /// shared chain, rounds run only while this replica holds the sync lease: a standby waits
    /// for the lease, and a leader that loses it stops mid-round (the ledger finishes or
    /// refuses whatever commit was already handed to it; nothing is half-written).
    pub async fn run(mut self, shutdown: CancellationToken, alive: Alive) {
        let mut lease = self.shared.leadership();
        loop {
            let number = self.rounds.started.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(part) = lease.as_mut()
                && !matches!(*part.borrow_and_update(), Leadership::Leader)
            {
                self.shared.set_state(State::Standby);
                // What a new leader knows of the upstream is fetched afresh.
                self.confirmed = None;
                alive.up();
                self.rounds.finished.send_replace(number);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = part.changed() => {}
                    _ = tokio::time::sleep(LEASE_RECHECK) => {}
                    _ = self.rounds.wake.notified() => {}
                }
                continue;
            }
            let lost = async {
                match lease.clone() {
                    Some(mut part) => {
                        let _ = part.wait_for(|p| !matches!(p, Leadership::Leader)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let wait = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = lost => Duration::ZERO,
                wait = self.step() => wait,
            };
            self.shared.publish_verdict();
            alive.up();
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
                self.settings.level_wait()
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
            Ok(Round::Damped(e, wait)) => {
                // As with a diverged fork: the upstream answered, the link is fine.
                self.breaker.on_success();
                self.shared.record_damped(&e);
                wait
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
                let at = upstream.height;
                if ours.as_deref() == Some(upstream.hash.as_str())
                    && self.confirm(&client, at, &upstream.hash).await?
                {
                    // Level, or upstream is behind on our own chain: wait for it.
                    Ok(Round::Level)
                } else {
                    match self.fork(&client, tip.height, upstream.height).await? {
                        Some(round) => Ok(round),
                        // Its headers hold our block where its tip report did not: it changed
                        // between the two calls, or contradicts itself. Back off and look again.
                        None => Err(SyncError::new(
                            code::FAILED,
                            format!(
                                "upstream reported block {} at height {} but serves ours there",
                                super::client::escaped(&upstream.hash),
                                upstream.height
                            ),
                        )),
                    }
                }
            }
            Some(tip) => {
                // Upstream's next blocks link to our tip by its hash; that is only our tip if
                // upstream's block there is ours byte for byte.
                if !self.confirm(&client, tip.height, &tip.hash).await? {
                    tracing::info!(
                        height = tip.height,
                        "upstream's block at our tip has its hash but other content"
                    );
                    if let Some(round) = self.fork(&client, tip.height, tip.height).await? {
                        return Ok(round);
                    }
                }
                self.catch_up(&client, Some(tip), upstream.height).await
            }
        }
    }

    /// Whether our block `hash` at `height` is upstream's there too, byte for byte; asked of
    /// upstream once per block (blocks this run fetched are upstream's by construction).
    async fn confirm(
        &mut self,
        client: &Upstream,
        height: u64,
        hash: &str,
    ) -> Result<bool, SyncError> {
        if self
            .confirmed
            .as_ref()
            .is_some_and(|(h, c)| *h == height && c == hash)
        {
            return Ok(true);
        }
        let same = super::fork::same_block(client, &self.store, height).await?;
        if same {
            self.confirmed = Some((height, hash.to_string()));
        }
        Ok(same)
    }

    /// Resolves a fork noticed at height `at`, our tip being at `tip`; `None` when upstream
    /// holds our block at `at` after all.
    pub(super) async fn fork(
        &mut self,
        client: &Upstream,
        tip: u64,
        at: u64,
    ) -> Result<Option<Round>, SyncError> {
        let forks = Forks {
            client,
            store: &self.store,
            ledger: &self.ledger,
            quarantine: &self.quarantine,
            max_depth: self.settings.max_reorg_depth,
            damped: self.damper.check(Instant::now()),
        };
        match forks.resolve(tip, at).await? {
            Resolution::RolledBack { ancestor, depth } => {
                self.damper.rolled_back(Instant::now());
                self.shared.record_reorg(ancestor, depth);
                Ok(Some(Round::Progress))
            }
            Resolution::Damped(e) => {
                let room = forks.damped.unwrap_or_default();
                Ok(Some(Round::Damped(e, self.damper.refused(room))))
            }
            Resolution::NoFork => Ok(None),
            Resolution::Diverged(e) => Ok(Some(Round::Diverged(e))),
        }
    }

    /// Runs a store read on a blocking thread.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlockReads) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        crate::store::reads::off_runtime(&self.store, f)
            .await
            .map_err(|e| SyncError::new(code::FAILED, format!("cannot read our blocks: {e}")))
    }
}
