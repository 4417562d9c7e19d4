//! What the follower reports: its state machine's current state, progress counters, the last
//! error, and the metrics that mirror them. The loop writes here; `/sync/status`,
//! `/chain/status` and the `sync` health check read from here, never from the loop itself.

use super::breaker::CircuitState;
use super::error::SyncError;
use super::push::Subscribed;
use crate::chain::Timestamp;
use crate::health::{Outcome, Status};
use crate::ledger::{self, Ledger};
use crate::metrics::Metrics;
use crate::store::lease::{Holder, Leadership, Lease};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the follower stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Before the first round.
    Idle,
    /// Behind upstream and making progress.
    Syncing,
    /// Level with upstream.
    Synced,
    /// Rounds are failing (below the circuit threshold) or making no progress.
    Stalled,
    /// The circuit breaker is open: no upstream calls for now.
    CircuitOpen,
    /// Upstream forked deeper than `max_reorg_depth`: nothing is fetched or rolled back.
    Diverged,
    /// Another replica of the shared chain holds the sync lease and syncs; this one serves.
    Standby,
}

impl State {
    /// Every state, for the one-hot `sync_state` gauge.
    pub const ALL: [State; 7] = [
        State::Idle,
        State::Syncing,
        State::Synced,
        State::Stalled,
        State::CircuitOpen,
        State::Diverged,
        State::Standby,
    ];

    /// The name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Syncing => "syncing",
            State::Synced => "synced",
            State::Stalled => "stalled",
            State::CircuitOpen => "circuit_open",
            State::Diverged => "diverged",
            State::Standby => "standby",
        }
    }

    /// States that make the `sync` health check degraded (reads are still served).
    pub fn is_degraded(self) -> bool {
        matches!(self, State::Stalled | State::CircuitOpen | State::Diverged)
    }
}

/// The one line that tells an operator how to stop following (spec §6).
pub const STANDALONE_HINT: &str = "to run standalone instead, set synchronization.enabled: false (env BLOCK_MANAGER__SYNCHRONIZATION__ENABLED=false in this service's own environment; BLOCKCHAIN_ENGINE_URL may come from a file other services share)";

/// Largest value a gauge shows exactly: Prometheus samples are f64, so larger ones are clamped
/// here and the JSON status carries the exact figure.
const GAUGE_MAX: u64 = 1 << 53;

fn gauge(v: u64) -> i64 {
    v.min(GAUGE_MAX) as i64
}

/// How far back the blocks-per-second figure looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Blocks committed over the last [`RATE_WINDOW`]: samples of the running total.
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn sample(&mut self, at: Instant, total: u64) {
        self.samples.push_back((at, total));
        // Keep exactly one sample older than the window: it anchors the figure.
        while self.samples.len() > 2 && self.samples[1].0 + RATE_WINDOW <= at {
            self.samples.pop_front();
        }
    }

    fn per_second(&self, now: Instant, total: u64) -> f64 {
        let anchor = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t + RATE_WINDOW <= now)
            .or_else(|| self.samples.front());
        match anchor {
            Some((t, base)) if now > *t => {
                (total - base) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The last error, with when it happened.
#[derive(Debug, Clone)]
struct LastError {
    error: SyncError,
    at: Timestamp,
}

#[derive(Debug)]
struct Inner {
    state: State,
    upstream_height: Option<u64>,
    last_success: Option<Timestamp>,
    last_error: Option<LastError>,
    circuit: CircuitState,
    consecutive_failures: u32,
    blocks_synced: u64,
    reorgs: u64,
    last_reorg: Option<Value>,
    per_block: bool,
    rate: Rate,
    /// The first failure since start, kept for the empty-follower verdict.
    first_error: Option<SyncError>,
    /// Why the follower task is not running (it ended or panicked), until a restart succeeds.
    task_down: Option<String>,
    /// The state is `stalled` because a fork was not rolled back (reorgs are damped), not
    /// because rounds fail.
    damped: bool,
}

/// The follower's shared, reportable state. Locks are held only to copy a few fields.
pub struct Shared {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    ledger: Ledger,
    upstream: String,
    started: Instant,
    grace: Duration,
    /// Set by the event stream subscription while it is open: the follower's transport.
    subscribed: Subscribed,
    /// On a shared chain: the sync lease, and who this replica is.
    lease: Option<(Lease, Holder)>,
}

impl Shared {
    /// Idle state for a follower of `upstream` (shown without credentials) that may stay
    /// empty for `grace` before health calls it unhealthy.
    pub fn new(upstream: String, ledger: Ledger, metrics: Arc<Metrics>, grace: Duration) -> Self {
        let shared = Self {
            inner: Mutex::new(Inner {
                state: State::Idle,
                upstream_height: None,
                last_success: None,
                last_error: None,
                circuit: CircuitState::Closed,
                consecutive_failures: 0,
                blocks_synced: 0,
                reorgs: 0,
                last_reorg: None,
                per_block: false,
                rate: Rate::default(),
                first_error: None,
                task_down: None,
                damped: false,
            }),
            metrics,
            ledger,
            upstream,
            started: Instant::now(),
            grace,
            subscribed: Subscribed::default(),
            lease: None,
        };
        shared.publish_state(State::Idle);
        shared.metrics.circuit_state.set(0);
        shared
    }

    /// The same, for a replica of a shared chain that syncs only while it holds `lease`.
    pub fn with_lease(mut self, lease: Lease, me: Holder) -> Self {
        self.lease = Some((lease, me));
        self
    }

    /// This replica's part in the sync lease; `None` when there is no lease (one process owns
    /// the chain) and it always syncs.
    pub fn leadership(&self) -> Option<tokio::sync::watch::Receiver<Leadership>> {
        self.lease.as_ref().map(|(l, _)| l.part.clone())
    }

    /// Publishes this replica's own sync verdict with the lease, for standbys to mirror (only
    /// a change is published: each one is written to the database).
    pub fn publish_verdict(&self) {
        let Some((lease, _)) = &self.lease else {
            return;
        };
        let o = self.health();
        let verdict =
            json!({"status": o.status, "message": o.message, "state": self.state().as_str()});
        lease.verdict.send_if_modified(|v| {
            let changed = v.as_ref() != Some(&verdict);
            if changed {
                *v = Some(verdict);
            }
            changed
        });
    }

    /// `leader` in the status: who syncs the shared chain (this replica included), or null
    /// when none is known to hold the lease.
    fn leader(&self) -> Option<Value> {
        let (lease, me) = self.lease.as_ref()?;
        let part = lease.part.borrow().clone();
        Some(match part {
            Leadership::Leader => json!({
                "instance_id": me.instance_id,
                "address": me.address,
                "self": true,
            }),
            Leadership::Standby(Some(l)) => json!({
                "instance_id": l.holder.instance_id,
                "address": l.holder.address,
                "self": false,
                "since": l.since,
                "seen_seconds_ago": round1(l.seen_seconds_ago),
            }),
            Leadership::Standby(None) | Leadership::Pending => Value::Null,
        })
    }

    /// A standby's health: the leader's own verdict, so every replica tells alike whether the
    /// chain is being followed.
    fn mirrored(&self) -> (Status, String) {
        let part = self.lease.as_ref().map(|(l, _)| l.part.borrow().clone());
        let Some(Leadership::Standby(Some(l))) = part else {
            return (
                Status::Degraded,
                "standby: no replica is known to hold the sync lease, so none may be syncing"
                    .to_string(),
            );
        };
        let who = format!("{} ({})", l.holder.instance_id, l.holder.address);
        // The lease renews every second; a holder silent for this long may be stuck.
        if l.seen_seconds_ago > 10.0 {
            return (
                Status::Degraded,
                format!(
                    "standby: the sync leader {who} last renewed its lease {:.0} s ago",
                    l.seen_seconds_ago
                ),
            );
        }
        let verdict = l.health.as_ref();
        let status = match verdict.and_then(|v| v["status"].as_str()) {
            Some("unhealthy") => Status::Unhealthy,
            Some("degraded") => Status::Degraded,
            _ => Status::Healthy,
        };
        let said = verdict
            .and_then(|v| v["message"].as_str())
            .unwrap_or("no verdict yet");
        (
            status,
            format!("standby; the sync leader {who} reports: {said}"),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data is plain counters: a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_state(&self, state: State) {
        for s in State::ALL {
            self.metrics
                .sync_state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// The flag the event stream subscription sets while open; the status reads its transport
    /// from it, the loop its wait between rounds.
    pub fn subscription(&self) -> Subscribed {
        self.subscribed.clone()
    }

    /// How new upstream blocks reach us now: `push` while the upstream's event stream is open,
    /// `poll` otherwise (an upstream without the route, or between a dropped stream and the
    /// next subscription).
    pub fn transport(&self) -> &'static str {
        if self.subscribed.get() {
            "push"
        } else {
            "poll"
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Moves to `state`.
    pub fn set_state(&self, state: State) {
        let changed = {
            let mut inner = self.lock();
            if state != State::Stalled {
                inner.damped = false;
            }
            std::mem::replace(&mut inner.state, state) != state
        };
        if changed {
            tracing::info!(state = state.as_str(), "sync state changed");
            self.publish_state(state);
        }
    }

    /// Records the upstream tip height (`None`: its chain is empty).
    pub fn set_upstream_height(&self, height: Option<u64>) {
        self.lock().upstream_height = height;
        if let Some(h) = height {
            self.metrics.upstream_height.set(gauge(h));
        }
        self.publish_lag();
    }

    fn lag(&self, upstream: Option<u64>) -> Option<u64> {
        let local = self.ledger.tip_height();
        upstream.map(|u| match local {
            Some(l) => u.saturating_sub(l),
            // Heights 0..=u are missing; an upstream claiming 2^64-1 stays at the top.
            None => u.saturating_add(1),
        })
    }

    fn publish_lag(&self) {
        let upstream = self.lock().upstream_height;
        if let Some(lag) = self.lag(upstream) {
            self.metrics.sync_lag.set(gauge(lag));
        }
    }

    /// Records `n` blocks committed at `at`.
    pub fn record_commit(&self, n: usize, at: Instant) {
        {
            let mut inner = self.lock();
            inner.blocks_synced += n as u64;
            let total = inner.blocks_synced;
            inner.rate.sample(at, total);
        }
        self.publish_lag();
    }

    /// Marks the start of a round, so the rate after an idle spell is measured from here.
    pub fn round_started(&self, at: Instant) {
        let mut inner = self.lock();
        let total = inner.blocks_synced;
        inner.rate.sample(at, total);
    }

    /// Records a round that reached upstream and did what it had to.
    pub fn record_success(&self) {
        self.lock().last_success = Some(ledger::now());
    }

    /// Records a fork not rolled back because reorgs are damped: sync is `stalled` for that
    /// reason. The error is recorded once per damped spell (every round of it would repeat
    /// it), but always when the state was stalled for another reason, so the last error
    /// explains the state.
    pub fn record_damped(&self, error: &SyncError) {
        let already = self.lock().damped;
        if !already {
            self.record_error(error);
        }
        self.set_state(State::Stalled);
        self.lock().damped = true;
    }

    /// Records an error: kept as the last error and counted by code.
    pub fn record_error(&self, error: &SyncError) {
        // Debug formatting: whatever the message holds, it stays one quoted, escaped field.
        tracing::warn!(code = error.code, error = ?error.message, upstream = %self.upstream, "sync round failed");
        self.metrics
            .sync_errors
            .with_label_values(&[error.code])
            .inc();
        let mut inner = self.lock();
        // A failing round ends a damped spell's claim on the state.
        inner.damped = false;
        inner.first_error.get_or_insert_with(|| error.clone());
        inner.last_error = Some(LastError {
            error: error.clone(),
            at: ledger::now(),
        });
    }

    /// Records that the follower task ended or panicked (`Some`), or runs again (`None`).
    pub fn set_task_down(&self, why: Option<String>) {
        self.lock().task_down = why;
    }

    /// Whether the empty-follower grace has run out with still no block stored.
    fn starved(&self) -> bool {
        self.ledger.tip_height().is_none() && self.started.elapsed() >= self.grace
    }

    /// Records the breaker's state.
    pub fn set_circuit(&self, circuit: CircuitState, consecutive_failures: u32) {
        let mut inner = self.lock();
        inner.circuit = circuit;
        inner.consecutive_failures = consecutive_failures;
        self.metrics.circuit_state.set(circuit.gauge());
    }

    /// Records whether blocks are fetched one by one (no range route upstream).
    pub fn set_per_block(&self, per_block: bool) {
        self.lock().per_block = per_block;
    }

    /// Records a fork resolved by rolling back `depth` blocks above `ancestor`.
    pub fn record_reorg(&self, ancestor: u64, depth: u64) {
        self.metrics.reorgs.inc();
        let mut inner = self.lock();
        inner.reorgs += 1;
        inner.last_reorg = Some(json!({
            "common_ancestor": ancestor,
            "depth": depth,
            "at": ledger::now(),
        }));
    }

    /// The `GET /api/v1/sync/status` body.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let inner = self.lock();
        let local = self.ledger.tip_height();
        json!({
            "state": inner.state.as_str(),
            "mode": "follower",
            "upstream": self.upstream,
            "local_height": local,
            "upstream_height": inner.upstream_height,
            "lag": self.lag(inner.upstream_height),
            "last_success": inner.last_success,
            "last_error": inner.last_error.as_ref().map(|e| json!({
                "code": e.error.code,
                "message": e.error.message,
                "at": e.at,
            })),
            "circuit": {
                "state": inner.circuit.as_str(),
                "consecutive_failures": inner.consecutive_failures,
            },
            "blocks_synced": inner.blocks_synced,
            "rate_blocks_per_second": round1(inner.rate.per_second(now, inner.blocks_synced)),
            "reorgs": inner.reorgs,
            "last_reorg": inner.last_reorg,
            "fetch": if inner.per_block { "block_by_block" } else { "range" },
            "transport": self.transport(),
            "leader": self.leader(),
            "task": inner.task_down.as_ref().map_or_else(|| json!({"running": true}), |why| json!({"running": false, "reason": why})),
            "standalone": STANDALONE_HINT,
        })
    }

    /// The smaller view `/api/v1/chain/status` embeds.
    pub fn summary(&self) -> Value {
        let inner = self.lock();
        json!({
            "state": inner.state.as_str(),
            "upstream": self.upstream,
            "upstream_height": inner.upstream_height,
            "lag": self.lag(inner.upstream_height),
            "last_success": inner.last_success,
        })
    }

    /// The `sync` health check's outcome: unhealthy while the follower task is down or an
    /// empty follower's grace has run out; degraded while stalled, circuit-open or diverged.
    pub fn health(&self) -> Outcome {
        let inner = self.lock();
        let lag = self.lag(inner.upstream_height);
        let (status, message) = if inner.state == State::Standby {
            self.mirrored()
        } else if let Some(why) = &inner.task_down {
            (
                Status::Unhealthy,
                format!("the follower task is not running ({why}); restarting it with backoff"),
            )
        } else if !matches!(inner.state, State::Synced | State::Syncing) && self.starved() {
            let cause = inner.first_error.as_ref().map_or_else(
                || "no sync round has finished".to_string(),
                |e| format!("first failure {e}"),
            );
            (
                Status::Unhealthy,
                format!(
                    "no valid block from {} within synchronization.startup_grace_seconds ({} s): {cause}; {STANDALONE_HINT}",
                    self.upstream,
                    self.grace.as_secs_f64()
                ),
            )
        } else if inner.state == State::Stalled && inner.damped {
            (
                Status::Degraded,
                format!(
                    "reorgs are being damped: {} forked again after more than synchronization.max_reorgs_per_window rollbacks within synchronization.reorg_window_seconds, so the fork is not rolled back until the window has room",
                    self.upstream
                ),
            )
        } else {
            self.state_verdict(inner.state)
        };
        // Only an error that explains the current state is shown; history is in /sync/status.
        let last_error = match &inner.last_error {
            Some(e) if status != Status::Healthy => {
                json!({"code": e.error.code, "message": e.error.message})
            }
            _ => Value::Null,
        };
        Outcome::new(status, message)
            .with("state", inner.state.as_str())
            .with("lag", lag.map_or(Value::Null, Value::from))
            .with("last_error", last_error)
    }

    fn state_verdict(&self, state: State) -> (Status, String) {
        match state {
            State::Idle => (Status::Healthy, "starting: no sync round yet".to_string()),
            State::Syncing => (
                Status::Healthy,
                format!("catching up with {}", self.upstream),
            ),
            State::Synced => (Status::Healthy, format!("in step with {}", self.upstream)),
            State::Stalled => (
                Status::Degraded,
                format!("sync rounds with {} are failing", self.upstream),
            ),
            State::CircuitOpen => (
                Status::Degraded,
                format!(
                    "circuit open: {} is not being called for now",
                    self.upstream
                ),
            ),
            State::Diverged => (
                Status::Degraded,
                "upstream chain diverges deeper than max_reorg_depth: sync stopped".to_string(),
            ),
            State::Standby => self.mirrored(),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_measured_over_the_recent_window_and_falls_to_zero_when_idle() {
        let mut r = Rate::default();
        let t = Instant::now();
        r.sample(t, 0);
        r.sample(t + Duration::from_secs(1), 1000);
        r.sample(t + Duration::from_secs(2), 2000);
        let rate = r.per_second(t + Duration::from_secs(2), 2000);
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        let later = t + Duration::from_secs(30);
        assert_eq!(r.per_second(later, 2000), 0.0);
    }

    #[test]
    fn rate_keeps_few_samples() {
        let mut r = Rate::default();
        let t = Instant::now();
        for i in 0..10_000u64 {
            r.sample(t + Duration::from_millis(i * 10), i);
        }
        assert!(r.samples.len() < 1100, "{}", r.samples.len());
    }

    /// Reported state of an empty follower of `http://up` over a fresh store in `dir`.
    fn empty_follower(dir: &std::path::Path, grace: Duration) -> Shared {
        let store = crate::store::RedbStore::open(&dir.join("blocks.redb"), 1 << 20).unwrap();
        let metrics = Arc::new(Metrics::new());
        let (ledger, _writer) = Ledger::start(
            Arc::new(store),
            crate::chain::Limits::default(),
            metrics.clone(),
        );
        Shared::new("http://up".into(), ledger, metrics, grace)
    }

    #[test]
    fn a_follower_task_that_is_down_is_unhealthy_until_it_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let shared = empty_follower(dir.path(), Duration::from_secs(3600));
        shared.set_state(State::Synced);
        assert_eq!(shared.health().status, Status::Healthy);
        shared.set_task_down(Some("it panicked: boom".into()));
        let outcome = shared.health();
        assert_eq!(outcome.status, Status::Unhealthy);
        assert!(
            outcome.message.contains("it panicked: boom"),
            "{}",
            outcome.message
        );
        assert_eq!(shared.status()["task"]["running"], false);
        shared.set_task_down(None);
        assert_eq!(shared.health().status, Status::Healthy);
    }

    #[test]
    fn an_empty_follower_is_degraded_within_the_grace_and_unhealthy_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let failure = SyncError::new("SYNC_002", "upstream answered with 500");
        let patient = empty_follower(dir.path(), Duration::from_secs(3600));
        patient.record_error(&failure);
        patient.set_state(State::Stalled);
        assert_eq!(patient.health().status, Status::Degraded);
        drop(patient);

        let dir = tempfile::tempdir().unwrap();
        let starved = empty_follower(dir.path(), Duration::ZERO);
        starved.record_error(&failure);
        starved.record_error(&SyncError::new("SYNC_005", "later"));
        starved.set_state(State::Stalled);
        let outcome = starved.health();
        assert_eq!(outcome.status, Status::Unhealthy);
        for part in ["http://up", "first failure SYNC_002", STANDALONE_HINT] {
            assert!(
                outcome.message.contains(part),
                "{part}: {}",
                outcome.message
            );
        }
    }

    #[test]
    fn lag_saturates_and_gauges_clamp_at_two_to_the_53() {
        let dir = tempfile::tempdir().unwrap();
        let shared = empty_follower(dir.path(), Duration::ZERO);
        shared.set_upstream_height(Some(u64::MAX));
        assert_eq!(shared.status()["lag"], u64::MAX);
        assert_eq!(shared.status()["upstream_height"], u64::MAX);
        assert_eq!(shared.metrics.upstream_height.get(), 1 << 53);
        assert_eq!(shared.metrics.sync_lag.get(), 1 << 53);
    }

    #[test]
    fn only_failing_states_are_degraded() {
        let degraded: Vec<&str> = State::ALL
            .iter()
            .filter(|s| s.is_degraded())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(degraded, ["stalled", "circuit_open", "diverged"]);
    }
}
