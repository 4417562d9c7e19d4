//! The connection cap: which connections are open and where each stands, who gets a slot,
//! who is shed to make room, and the counts behind the connection metrics.

use super::conn::{Conn, HEAD, IDLE, SHED};
use crate::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Connections served beyond the cap while every served one is busy: each gets one answer
/// (503, or a probe's) and closes. They come out of the open-file reserve.
pub const OVERFLOW: usize = 16;

/// Shed connections not yet closed: past this many the accept loop waits for them (they close
/// at once) rather than accept faster than sockets are let go and run out of descriptors.
pub const PENDING_SHEDS: usize = 8;

/// Every open connection, the cap, and the counters behind the connection metrics. Shared in
/// the app state so long-lived responses (event streams) can take part in the accounting.
pub struct ConnectionTracker {
    cap: usize,
    epoch: Instant,
    next_id: AtomicU64,
    served: Mutex<HashMap<u64, Arc<Conn>>>,
    excess: AtomicUsize,
    streams: AtomicUsize,
    open: IntGauge,
    shed: IntCounter,
    refused: IntCounter,
    /// Woken whenever a served connection closes.
    closed: Notify,
}

/// What the accept loop does with a new connection.
pub(crate) enum Admission {
    /// Served normally, in a slot.
    Served(Arc<Conn>, Registration),
    /// Every slot is busy with a request: one answer, then close.
    Excess(Arc<Conn>, ExcessSlot),
    /// Not even the overflow has room: refuse at once.
    Refused,
}

/// Holds a slot; frees it when the connection's task ends.
pub(crate) struct Registration {
    tracker: Arc<ConnectionTracker>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.tracker.lock().remove(&self.id).is_some() {
            self.tracker.open.dec();
        }
        self.tracker.closed.notify_waiters();
    }
}

/// Holds one of the overflow places.
pub(crate) struct ExcessSlot(Arc<ConnectionTracker>);

impl Drop for ExcessSlot {
    fn drop(&mut self) {
        self.0.excess.fetch_sub(1, Ordering::AcqRel);
        self.0.open.dec();
    }
}

/// One long-lived response (an event stream) counted against the cap; released on drop.
pub struct StreamSlot(Arc<ConnectionTracker>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionTracker {
    /// A tracker for at most `cap` served connections, reporting into `metrics`.
    pub fn new(cap: usize, metrics: &Metrics) -> Self {
        let cap = cap.max(1);
        metrics.http_connections_max.set(cap as i64);
        Self {
            cap,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            served: Mutex::new(HashMap::new()),
            excess: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            open: metrics.http_connections_open.clone(),
            shed: metrics.http_connections_shed.clone(),
            refused: metrics.http_connections_refused.clone(),
            closed: Notify::new(),
        }
    }

    /// Waits while too many shed connections are still closing (see [`PENDING_SHEDS`]).
    pub(crate) async fn wait_for_sheds(&self) {
        loop {
            let closed = self.closed.notified();
            if self.lock().len() < self.cap + PENDING_SHEDS {
                return;
            }
            // Each shed one closes as soon as its task runs; the timer is only a backstop.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), closed).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // The map stays consistent whatever a panicking holder was doing: every change is a
        // single insert or remove.
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cap in force (`api.max_connections`, lowered to fit the open-file limit).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Connections open now, served and overflow.
    pub fn open(&self) -> usize {
        self.lock().len() + self.excess.load(Ordering::Acquire)
    }

    /// Claims a place for a long-lived response such as an event stream. Such a response
    /// keeps its connection busy (never shed), so at most three quarters of the slots may be
    /// taken by them: the rest stay for short requests. `None` when none is left (answer 503).
    pub fn try_stream_slot(self: &Arc<Self>) -> Option<StreamSlot> {
        let limit = (self.cap - self.cap / 4).max(1);
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }

    /// Counts one request or connection refused with 503.
    pub(crate) fn count_refused(&self) {
        self.refused.inc();
    }

    /// Decides on a new connection: a free slot, a slot freed by shedding the oldest
    /// connection that has not sent a complete request head, an overflow place, or refusal.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut served = self.lock();
        if served.len() >= self.cap {
            // Shed connections leave the map when their task ends, a moment later.
            let live = served.values().filter(|c| c.phase().0 != SHED).count();
            if live >= self.cap && !self.shed_oldest(&served) {
                return self.overflow();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.epoch));
        served.insert(id, conn.clone());
        self.open.inc();
        Admission::Served(
            conn,
            Registration {
                tracker: self.clone(),
                id,
            },
        )
    }

    fn overflow(self: &Arc<Self>) -> Admission {
        let took = self
            .excess
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < OVERFLOW).then_some(n + 1)
            })
            .is_ok();
        if !took {
            self.refused.inc();
            return Admission::Refused;
        }
        self.open.inc();
        Admission::Excess(Arc::new(Conn::new(self.epoch)), ExcessSlot(self.clone()))
    }

    /// Sheds one connection to free a slot (also when the process runs out of descriptors).
    pub(crate) fn shed_one(&self) -> bool {
        let served = self.lock();
        self.shed_oldest(&served)
    }

    /// Sheds the connection that has waited longest for its request head; failing that, the
    /// one idle the longest. Busy connections are never shed.
    fn shed_oldest(&self, served: &HashMap<u64, Arc<Conn>>) -> bool {
        for wanted in [HEAD, IDLE] {
            // Ids follow the accept order: they break ties within a millisecond.
            let mut candidates: Vec<(u64, u64, &Arc<Conn>)> = served
                .iter()
                .filter_map(|(id, c)| {
                    let (phase, since) = c.phase();
                    (phase == wanted).then_some((since, *id, c))
                })
                .collect();
            candidates.sort_unstable_by_key(|(since, id, _)| (*since, *id));
            // A candidate may start a request between the look and the shed: try the next.
            for (_, _, c) in candidates {
                if c.try_shed() {
                    self.shed.inc();
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(cap: usize) -> Arc<ConnectionTracker> {
        Arc::new(ConnectionTracker::new(cap, &Metrics::new()))
    }

    #[test]
    fn at_the_cap_the_oldest_waiting_connection_is_shed_and_busy_ones_never() {
        let t = tracker(2);
        let Admission::Served(a, _ra) = t.admit() else {
            panic!("slot")
        };
        let Admission::Served(b, _rb) = t.admit() else {
            panic!("slot")
        };
        b.begin_request();
        let Admission::Served(c, _rc) = t.admit() else {
            panic!("slot by shedding")
        };
        assert_eq!(a.phase().0, SHED);
        assert!(b.is_busy());
        c.begin_request();
        let excess = t.admit();
        assert!(matches!(excess, Admission::Excess(..)));
        assert_eq!(
            t.open(),
            4,
            "three served (one shed, leaving) plus one excess"
        );
    }

    #[test]
    fn overflow_is_bounded_and_then_refused() {
        let t = tracker(1);
        let Admission::Served(a, _r) = t.admit() else {
            panic!("slot")
        };
        a.begin_request();
        let excess: Vec<Admission> = (0..OVERFLOW).map(|_| t.admit()).collect();
        assert!(excess.iter().all(|e| matches!(e, Admission::Excess(..))));
        assert!(matches!(t.admit(), Admission::Refused));
        drop(excess);
        assert!(matches!(t.admit(), Admission::Excess(..)));
    }

    #[test]
    fn streams_take_at_most_three_quarters_of_the_slots() {
        let t = tracker(8);
        let slots: Vec<StreamSlot> = (0..6).filter_map(|_| t.try_stream_slot()).collect();
        assert_eq!(slots.len(), 6);
        assert!(t.try_stream_slot().is_none());
        drop(slots);
        assert!(t.try_stream_slot().is_some());
    }
}
