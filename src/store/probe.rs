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
}
