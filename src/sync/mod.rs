//! Follower sync: catch up from an upstream block-manager or engine and stay in step.
//!
//! - `client`: the upstream HTTP client (tip, ranges, single blocks, headers).
//! - `retry`: retries with exponential backoff.
//! - `breaker`: the circuit breaker in front of the upstream.
//! - `follower`: the loop of bounded rounds and the state each round leads to.
//! - `catchup`: the pipelined fetch-and-commit of the blocks we lack.
//! - `fork`: common-ancestor search and bounded rollback.
//! - `damper`: at most so many rollbacks per window, so a flapping upstream cannot loop.
//! - `status`: the reported state, the health check's outcome and the sync metrics.
//!
//! On a shared chain (several replicas of one database) only the replica holding the sync
//! lease (`store::lease`) runs rounds; the others report `standby` and mirror its verdict.
//! - `error`: the SYNC_00x failures.
//!
//! Every block goes through the ledger, which validates it against our tip (linkage included)
//! and commits each batch atomically; sync never writes the store itself. Reads are never
//! blocked: sync runs on its own task and the ledger's writer thread, and a failing upstream
//! only changes the reported state.

mod breaker;
mod catchup;
mod client;
mod damper;
mod error;
mod follower;
mod fork;
mod push;
mod retry;
mod status;

pub use breaker::{Breaker, CircuitState};
pub use client::shown_url;
pub use error::{SyncError, code};
pub use retry::{Backoff, RetryOn};
pub use status::State;

use crate::config::Config;
use crate::health::{Check, Outcome};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::store::BlockReads;
use follower::{Follower, Rounds, Settings};
use serde_json::Value;
use status::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handle to the follower loop; cheap to clone.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<Shared>,
    rounds: Arc<Rounds>,
    run_now_limit: Duration,
}

impl SyncHandle {
    /// Starts the follower loop for `url` on `tracker`, supervised (restarted with backoff if
    /// it panics or ends); it stops when `shutdown` is cancelled.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: &Config,
        url: &str,
        store: Arc<dyn BlockReads>,
        ledger: Ledger,
        quarantine: Arc<Quarantine>,
        metrics: Arc<Metrics>,
        lease: Option<(crate::store::lease::Lease, crate::store::lease::Holder)>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> SyncHandle {
        let sync = &config.synchronization;
        let backoff = Backoff::for_upstream(&config.error_handling);
        let timeout = config.upstream_timeout();
        let client = client::Upstream::connect(
            url,
            timeout,
            backoff,
            sync.engine_api_key.get(),
            client::Budget::new(sync.max_inflight_bytes),
            metrics.clone(),
        )
        .map(Arc::new);
        let shown = match &client {
            Ok(c) => c.shown().to_string(),
            Err(_) => "(invalid upstream URL)".to_string(),
        };
        // Where our chain stands and how to leave follower mode, in one start-up line.
        tracing::info!(upstream = %shown, "following upstream; {}", status::STANDALONE_HINT);
        let grace = seconds(sync.startup_grace_seconds, 120.0);
        let mut shared = Shared::new(shown, ledger.clone(), metrics.clone(), grace);
        if let Some((lease, me)) = lease {
            shared = shared.with_lease(lease, me);
        }
        let shared = Arc::new(shared);
        let rounds = Arc::new(Rounds::new());
        let round_backoff = Backoff::for_rounds(&config.error_handling);
        let settings = Settings {
            poll: seconds(sync.poll_interval_seconds, 5.0).max(Duration::from_millis(10)),
            batch: sync.fetch_batch_size.clamp(1, 1000),
            max_reorg_depth: sync.max_reorg_depth,
            backoff: round_backoff,
            push_fallback: seconds(sync.push_fallback_poll_seconds, 30.0)
                .max(Duration::from_millis(10)),
            // The same flag the status reads, so `transport` is the loop's own view.
            subscribed: shared.subscription(),
        };
        // The upstream's event stream starts rounds as soon as it announces something.
        if client.is_ok()
            && let Some(events) = push::events_url(url)
        {
            let listener = push::Push {
                url: events,
                api_key: sync.engine_api_key.get().map(str::to_owned),
                connect_timeout: timeout,
                max_line_bytes: config.chain.max_block_size_bytes.saturating_add(64 * 1024),
                // As often as polling, at most once a second.
                retry: settings.poll.max(Duration::from_secs(1)),
                rounds: rounds.clone(),
                subscribed: settings.subscribed.clone(),
                metrics: metrics.clone(),
            };
            tracker.spawn(listener.run(shutdown.clone()));
        }
        let circuit = config
            .error_handling
            .blockchain_engine
            .circuit_breaker
            .clone();
        let report_to = shared.clone();
        let report: crate::supervise::Report = Arc::new(move |down| report_to.set_task_down(down));
        let (for_task, rounds_for_task) = (shared.clone(), rounds.clone());
        let (max_reorgs, reorg_window) = (
            sync.max_reorgs_per_window,
            seconds(sync.reorg_window_seconds, 600.0),
        );
        let damper_metrics = metrics.clone();
        crate::supervise::spawn(
            "sync",
            tracker,
            shutdown.clone(),
            metrics,
            report,
            move |alive| {
                // Each run starts afresh (breaker closed, nothing quarantined yet) on the same
                // client, store and reported state.
                let follower = Follower {
                    client: client.clone(),
                    store: store.clone(),
                    ledger: ledger.clone(),
                    quarantine: quarantine.clone(),
                    shared: for_task.clone(),
                    rounds: rounds_for_task.clone(),
                    breaker: Breaker::new(&circuit),
                    settings: settings.clone(),
                    last_quarantined: None,
                    // A restarted run keeps no rollback history: the window starts afresh.
                    damper: damper::Damper::new(
                        max_reorgs,
                        reorg_window,
                        round_backoff,
                        damper_metrics.clone(),
                    ),
                    confirmed: None,
                };
                follower.run(shutdown.clone(), alive)
            },
        );
        // A manual round answers before the API's own request timeout would.
        let api_limit = seconds(config.api.request_timeout_seconds, 30.0).mul_f64(0.9);
        SyncHandle {
            shared,
            rounds,
            run_now_limit: timeout.max(Duration::from_secs(1)).min(api_limit),
        }
    }

    /// The `sync` health check.
    pub fn check(&self) -> SyncCheck {
        SyncCheck {
            shared: self.shared.clone(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// `GET /api/v1/sync/status` body.
    pub fn status(&self) -> Value {
        self.shared.status()
    }

    /// The smaller view embedded in `/api/v1/chain/status`.
    pub fn summary(&self) -> Value {
        self.shared.summary()
    }

    /// Wakes the loop and waits (bounded by the request timeout) for a round that starts
    /// after this call to finish; answers the status either way.
    pub async fn run_now(&self) -> Value {
        let mut finished = self.rounds.finished.subscribe();
        let due = self
            .rounds
            .started
            .load(std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.rounds.wake.notify_one();
        let _ = tokio::time::timeout(self.run_now_limit, finished.wait_for(|n| *n >= due)).await;
        self.status()
    }
}

fn seconds(value: f64, fallback: f64) -> Duration {
    let v = if value.is_finite() && value >= 0.0 {
        value
    } else {
        fallback
    };
    crate::config::duration(v)
}

/// The `sync` health check: healthy while idle, syncing or synced; degraded (still 200)
/// while stalled, circuit-open or diverged; unhealthy (503) while the follower task is down or
/// an empty follower has had no valid block within `synchronization.startup_grace_seconds`.
pub struct SyncCheck {
    shared: Arc<Shared>,
}

impl Check for SyncCheck {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn run(&self) -> Outcome {
        self.shared.health()
    }
}
