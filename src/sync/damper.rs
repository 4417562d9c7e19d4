//! Reorg damping. A flapping upstream (serving one branch, then another, then the first again)
//! turns every round into a rollback, a re-fetch and quarantine writes: a hot loop. At most
//! `synchronization.max_reorgs_per_window` rollbacks happen within
//! `synchronization.reorg_window_seconds`; a fork beyond that is not rolled back, sync reports
//! `stalled`, and rounds back off until the oldest rollback leaves the window (or the upstream
//! returns to our chain, which needs no rollback at all).

use super::retry::Backoff;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rollbacks within the window, and the backoff of forks refused meanwhile.
pub struct Damper {
    max: usize,
    window: Duration,
    /// When the rollbacks still inside the window happened, oldest first (at most `max`).
    recent: VecDeque<Instant>,
    /// Forks refused since the last rollback: the backoff's step.
    refusals: u32,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// Shortest wait between damped rounds, whatever the backoff and the window say.
const MIN_WAIT: Duration = Duration::from_millis(10);

impl Damper {
    /// At most `max` rollbacks within `window` (a zero window: no limit).
    pub fn new(max: u32, window: Duration, backoff: Backoff, metrics: Arc<Metrics>) -> Self {
        Self {
            max: (max as usize).max(1),
            window,
            recent: VecDeque::new(),
            refusals: 0,
            backoff,
            metrics,
        }
    }

    /// `None` when a rollback may happen at `now`; else how long until the window has room.
    pub fn check(&mut self, now: Instant) -> Option<Duration> {
        if self.window.is_zero() {
            return None;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() < self.max {
            return None;
        }
        let oldest = self.recent.front().copied().unwrap_or(now);
        Some((oldest + self.window).saturating_duration_since(now))
    }

    /// Records a rollback made at `now`.
    pub fn rolled_back(&mut self, now: Instant) {
        self.refusals = 0;
        if self.window.is_zero() {
            return;
        }
        self.recent.push_back(now);
        while self.recent.len() > self.max {
            self.recent.pop_front();
        }
    }

    /// Records a fork that was not rolled back, `room` before the window allows one; returns
    /// the wait before the next round: the retry backoff, never past the window's room.
    pub fn refused(&mut self, room: Duration) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        self.metrics.reorgs_damped.inc();
        self.backoff.delay(self.refusals).min(room).max(MIN_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErrorHandling;

    fn damper(max: u32, window: u64) -> Damper {
        let backoff = Backoff::for_rounds(&ErrorHandling::default());
        Damper::new(
            max,
            Duration::from_secs(window),
            backoff,
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn more_rollbacks_than_allowed_within_the_window_are_refused_until_it_has_room() {
        let mut d = damper(5, 600);
        let t = Instant::now();
        for i in 0..5 {
            let at = t + Duration::from_secs(i);
            assert_eq!(d.check(at), None, "rollback {i}");
            d.rolled_back(at);
        }
        let room = d
            .check(t + Duration::from_secs(10))
            .expect("the sixth is refused");
        assert_eq!(room, Duration::from_secs(590));
        assert!(d.refused(room) <= room);
        assert_eq!(d.metrics.reorgs_damped.get(), 1);
        // The first rollback leaves the window at t + 600: one more is allowed, then not.
        assert_eq!(d.check(t + Duration::from_secs(600)), None);
        d.rolled_back(t + Duration::from_secs(600));
        assert!(d.check(t + Duration::from_secs(600)).is_some());
    }

    #[test]
    fn a_zero_window_never_refuses() {
        let mut d = damper(1, 0);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(d.check(t), None);
            d.rolled_back(t);
        }
    }
}
