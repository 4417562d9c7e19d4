//! The sync lease: which of several replicas of one shared chain follows the upstream.
//!
//! Replicas on a shared engine all serve and write the one chain, but in follower mode only
//! one may fetch from the upstream at a time (two would fetch everything twice and race each
//! other's commits). The engine holds the lease in the database, where it is released when the
//! holder's session dies; this module is the engine-neutral view of it that sync reads.

use serde_json::Value;
use tokio::sync::watch;

/// Who a replica is, as other replicas show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `service.instance_id` (default: the host name).
    pub instance_id: String,
    /// The replica's advertised URL (`service.url`).
    pub address: String,
}

/// The leader as a standby sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    /// Who holds the lease.
    pub holder: Holder,
    /// When it took the lease (RFC 3339, the database's clock).
    pub since: String,
    /// Seconds since it last renewed the lease.
    pub seen_seconds_ago: f64,
    /// Its own sync health verdict, as it last published it (`status`, `message`, `state`).
    pub health: Option<Value>,
}

/// This replica's part in the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Leadership {
    /// Not known yet: the lease has not been asked for.
    Pending,
    /// This replica holds the lease and syncs.
    Leader,
    /// Another replica holds it (or none is known to: `None`); this one only serves.
    Standby(Option<Leader>),
}

/// The follower's side of a lease: what it is, and where it publishes its health verdict so
/// that standbys can mirror it.
pub struct Lease {
    /// This replica's part, kept current by the engine.
    pub part: watch::Receiver<Leadership>,
    /// The verdict the leader publishes with each renewal.
    pub verdict: watch::Sender<Option<Value>>,
}

/// The engine's side: where it reports the part, and the verdict to publish.
pub struct LeaseFeed {
    /// This replica's part.
    pub part: watch::Sender<Leadership>,
    /// The follower's latest verdict, published while leading.
    pub verdict: watch::Receiver<Option<Value>>,
}

/// A lease not yet asked for, as its two sides.
pub fn channel() -> (Lease, LeaseFeed) {
    let (part_tx, part_rx) = watch::channel(Leadership::Pending);
    let (verdict_tx, verdict_rx) = watch::channel(None);
    (
        Lease {
            part: part_rx,
            verdict: verdict_tx,
        },
        LeaseFeed {
            part: part_tx,
            verdict: verdict_rx,
        },
    )
}
