//! Why a sync round failed: an error-catalog code (SYNC_00x) and a message for operators.

use std::fmt;

/// Error-catalog codes sync reports (spec §7).
pub mod code {
    /// Synchronization failed for another reason: malformed upstream JSON, an invalid block.
    pub const FAILED: &str = "SYNC_001";
    /// The upstream's chain height could not be read (unreachable, 5xx, refused).
    pub const UPSTREAM_UNAVAILABLE: &str = "SYNC_002";
    /// Blocks or headers could not be fetched.
    pub const FETCH: &str = "SYNC_003";
    /// The upstream chain diverges deeper than `max_reorg_depth`.
    pub const DIVERGED: &str = "SYNC_004";
    /// An upstream request timed out.
    pub const TIMEOUT: &str = "SYNC_005";
}

/// A failed step of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncError {
    /// Catalog code, one of [`code`].
    pub code: &'static str,
    /// What happened, for operators.
    pub message: String,
}

impl SyncError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for SyncError {}
