//! [`AppState`]: the handles every handler and middleware shares. Here, beside the routes,
//! so that api/ depends on the handles it uses and not on start-up (`app` builds it).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::chain::Limits;
use crate::config::Config;
use crate::error::Catalog;
use crate::health::Health;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;

/// Everything handlers share, behind one `Arc`: extractors and middleware clone the state
/// several times per request, and one reference count is far cheaper than a dozen (the
/// profile of the read path showed cloning and dropping a struct of handles as its top cost).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state over `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The shared handles; each owns its locking.
pub struct Shared {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// The block store's reads: what every handler reads the chain through.
    pub reads: Arc<dyn crate::store::BlockReads>,
    /// The whole store, only for the event streams (`api/events.rs`), which still name it;
    /// they read nothing through it that `reads` lacks, and move to `reads` with their next
    /// change. Nothing else in api/ may use it.
    pub store: Arc<dyn crate::store::BlockStore>,
    /// The write path.
    pub ledger: Ledger,
    /// Error messages and severities.
    pub catalog: Arc<Catalog>,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Health checks.
    pub health: Health,
    /// Rejected blocks.
    pub quarantine: Arc<Quarantine>,
    /// Validation limits from the config.
    pub limits: Limits,
    /// When the process started.
    pub started: Instant,
    /// False until start-up is done and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// Follower state, when following an upstream.
    pub sync: Option<crate::sync::SyncHandle>,
    /// Per-client request counters.
    pub limiter: Arc<crate::api::access::RateLimiter>,
    /// Latest host sample.
    pub system: crate::monitoring::SystemView,
    /// The last `/blocks/stats` answer, reused briefly.
    pub stats: crate::api::StatsCache,
    /// Open connections and the cap (long-lived responses claim their place here).
    pub connections: Arc<crate::server::ConnectionTracker>,
    /// Open event streams, ended by shutdown.
    pub events: Arc<crate::api::events::Hub>,
    /// This replica's `service.instance_id` (or host name), worked out once.
    pub instance_id: String,
}
