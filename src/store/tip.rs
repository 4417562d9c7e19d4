//! The tip watch: the height of the last committed tip, and a change counter bumped after
//! every durable commit and every rollback. Subscribers read what changed from the store
//! itself (the store is the log), so a slow subscriber holds nothing up and can never miss a
//! block; it only learns later.
//!
//! This is the service's one source of the committed tip's height: the API, sync and the
//! status read it here ([`TipWatch::height`]) and never ask the store. It is set by whoever
//! installs a commit in order: the ledger after its own commits on an engine of one process
//! (the embedded file), or the engine itself on an engine shared by several processes, which
//! sets it from its commit-ordered state for every replica's commits, its own included (see
//! [`crate::store::ChainWriter::follow_changes`]).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// `height` while the chain is empty.
const NO_TIP: u64 = u64::MAX;

/// The sending side; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TipWatch {
    changes: watch::Sender<u64>,
    height: AtomicU64,
}

impl Default for TipWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl TipWatch {
    /// A watch nobody has notified yet.
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            changes,
            height: AtomicU64::new(NO_TIP),
        }
    }

    /// Sets the committed tip's height (`None`: the chain is empty). Wakes nobody: the
    /// commit's [`TipWatch::notify`] follows once everything it changed is visible.
    pub fn set(&self, height: Option<u64>) {
        self.height
            .store(height.unwrap_or(NO_TIP), Ordering::Release);
    }

    /// The committed tip's height, without touching the store (`None` while empty).
    pub fn height(&self) -> Option<u64> {
        Some(self.height.load(Ordering::Acquire)).filter(|h| *h != NO_TIP)
    }

    /// Tells every subscriber the chain changed (a commit or a rollback is durable).
    /// Never blocks and never waits for a subscriber.
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes after the next [`TipWatch::notify`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_wakes_after_a_notification() {
        let w = TipWatch::new();
        let mut rx = w.subscribe();
        assert!(!rx.has_changed().unwrap());
        w.notify();
        w.notify();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn the_height_is_what_was_set_last() {
        let w = TipWatch::new();
        assert_eq!(w.height(), None);
        w.set(Some(7));
        assert_eq!(w.height(), Some(7));
        w.set(Some(3));
        assert_eq!(w.height(), Some(3));
        w.set(None);
        assert_eq!(w.height(), None);
    }
}
