//! Commit notifications: a watch of a change counter, bumped after every durable commit and
//! every rollback. Subscribers read what changed from the store itself (the store is the log),
//! so a slow subscriber holds nothing up and can never miss a block; it only learns later.
//! Today the ledger feeds it after its own commits; an engine shared by several processes
//! feeds the same watch from its own notifications.

use tokio::sync::watch;

/// The sending side; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TipWatch {
    changes: watch::Sender<u64>,
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
        Self { changes }
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
}
