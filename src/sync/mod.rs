//! Follower sync: catch up from an upstream block-manager or engine and stay in step.

use crate::config::Config;
use crate::health::{Check, Outcome, Status};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::store::BlockStore;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handle to the follower loop.
#[derive(Clone)]
pub struct SyncHandle {
    url: String,
}

impl SyncHandle {
    /// Starts the follower loop.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        _config: &Config,
        url: &str,
        _store: Arc<dyn BlockStore>,
        _ledger: Ledger,
        _quarantine: Arc<Quarantine>,
        _metrics: Arc<Metrics>,
        _tracker: &TaskTracker,
        _shutdown: CancellationToken,
    ) -> SyncHandle {
        SyncHandle {
            url: url.to_string(),
        }
    }

    /// The health check.
    pub fn check(&self) -> SyncCheck {
        SyncCheck
    }

    /// `GET /api/v1/sync/status` body.
    pub fn status(&self) -> Value {
        json!({"state": "idle", "upstream": self.url})
    }

    /// Summary for `/chain/status`.
    pub fn summary(&self) -> Value {
        self.status()
    }

    /// Runs a round now.
    pub async fn run_now(&self) -> Value {
        self.status()
    }
}

/// The `sync` health check.
pub struct SyncCheck;

impl Check for SyncCheck {
    fn name(&self) -> &'static str {
        "sync"
    }
    fn run(&self) -> Outcome {
        Outcome::new(Status::Degraded, "sync not running yet")
    }
}
