//! [`StoreProbe`]: what health and the sampler hold. Is the store writable, is its database
//! reachable, and which local files and volume does it use.

use std::path::Path;

use super::StoreError;

/// The store as health checks and the host sampler see it. Every method is blocking.
pub trait StoreProbe: Send + Sync + 'static {
    /// The tip's height, read as any read would be: proves the store can be read now.
    fn check_readable(&self) -> Result<Option<u64>, StoreError>;
    /// A cheap write probe, safe to call every few seconds (see [`super::engine::Engine::check_writable`]).
    fn check_writable(&self) -> Result<(), StoreError>;
    /// Whether the engine can reach its storage now (see [`super::engine::Engine::check_reachable`]).
    fn check_reachable(&self) -> Result<(), StoreError>;
    /// Size of the store file in bytes.
    fn file_size(&self) -> Result<u64, StoreError>;
    /// The local path whose volume holds the store; `None` when not on a local volume.
    fn volume(&self) -> Option<&Path>;
    /// The store file.
    fn path(&self) -> &Path;
    /// The engine's name, as health shows it: `embedded` or `postgres`.
    fn engine(&self) -> &'static str;
    /// The hot standbys serving reads (none on the embedded engine, or without `read_urls`).
    fn standbys(&self) -> Vec<StandbyState>;
    /// Reads answered by a standby and by the primary so far; `None` when the engine has no
    /// standbys configured.
    fn reads_served(&self) -> Option<(u64, u64)>;
}

/// A hot standby that serves the engine's reads, as health and metrics show it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StandbyState {
    /// Its place in `storage.postgres.read_urls`, from 0 (metrics label it so: never the URL).
    pub index: usize,
    /// Its URL without credentials.
    pub database: String,
    /// Whether reads go there now (else to the primary, until a background check succeeds).
    pub up: bool,
    /// Blocks the known tip is ahead of what it has replayed (`None` while down).
    pub lag_blocks: Option<u64>,
    /// Seconds its replay is behind the primary's last commit (`None` while down or unknown).
    pub lag_seconds: Option<f64>,
    /// Why it is down.
    pub error: Option<String>,
}
