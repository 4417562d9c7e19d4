//! The circuit breaker in front of the upstream: after `failure_threshold` consecutive failed
//! rounds it opens and no call is made for `recovery_timeout_seconds`; then it lets
//! `half_open_max_calls` trial rounds through, closing on the first success and opening again
//! on a failure. With `circuit_breaker.enabled: false` it never opens (failures are still
//! counted). Pure state: callers pass the clock in, so it is tested without waiting.

use crate::config::CircuitPolicy;
use std::time::{Duration, Instant};

/// What the breaker currently allows (the `circuit.state` of `/sync/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// A limited number of trial calls go through.
    HalfOpen,
    /// No calls until the recovery time is over.
    Open,
}

impl CircuitState {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }

    /// The `sync_circuit_state` gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

/// Consecutive-failure circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    recovery: Duration,
    half_open_max: u32,
    phase: Phase,
    failures: u32,
    enabled: bool,
}

impl Breaker {
    /// A closed breaker with this policy (a zero threshold or trial count counts as one).
    pub fn new(policy: &CircuitPolicy) -> Self {
        let recovery = if policy.recovery_timeout_seconds.is_finite() {
            policy.recovery_timeout_seconds
        } else {
            30.0
        };
        Self {
            threshold: policy.failure_threshold.max(1),
            recovery: crate::config::duration(recovery),
            half_open_max: policy.half_open_max_calls.max(1),
            phase: Phase::Closed,
            failures: 0,
            enabled: policy.enabled,
        }
    }

    /// Asks to make a call at `now`: `Ok` to go ahead, or how long until the next trial.
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.phase {
            Phase::Closed => Ok(()),
            Phase::Open { until } if now >= until => {
                self.phase = Phase::HalfOpen { trials: 1 };
                Ok(())
            }
            Phase::Open { until } => Err(until - now),
            Phase::HalfOpen { trials } if trials < self.half_open_max => {
                self.phase = Phase::HalfOpen { trials: trials + 1 };
                Ok(())
            }
            // Every trial is out and none has answered yet.
            Phase::HalfOpen { .. } => Err(self.recovery),
        }
    }

    /// A call succeeded: close.
    pub fn on_success(&mut self) {
        self.phase = Phase::Closed;
        self.failures = 0;
    }

    /// A call failed at `now`: open once the threshold is reached, or again after a failed
    /// trial.
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let open = self.enabled
            && match self.phase {
                Phase::HalfOpen { .. } => true,
                Phase::Closed => self.failures >= self.threshold,
                Phase::Open { .. } => false,
            };
        if open {
            // `recovery` is at most a year (config::duration), so this cannot overflow.
            self.phase = Phase::Open {
                until: now + self.recovery,
            };
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, recovery: f64, trials: u32) -> Breaker {
        Breaker::new(&CircuitPolicy {
            failure_threshold: threshold,
            recovery_timeout_seconds: recovery,
            half_open_max_calls: trials,
            enabled: true,
        })
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let mut b = Breaker::new(&CircuitPolicy {
            failure_threshold: 1,
            recovery_timeout_seconds: 60.0,
            half_open_max_calls: 1,
            enabled: false,
        });
        let t = Instant::now();
        for _ in 0..10 {
            b.on_failure(t);
            assert!(b.allow(t).is_ok());
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 10);
    }

    #[test]
    fn stays_closed_below_the_threshold_and_resets_on_success() {
        let mut b = breaker(3, 10.0, 1);
        let t = Instant::now();
        b.on_failure(t);
        b.on_failure(t);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        assert!(b.allow(t).is_ok());
        b.on_success();
        assert_eq!(b.consecutive_failures(), 0);
        b.on_failure(t);
        b.on_failure(t);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn opens_at_the_threshold_and_refuses_calls_until_recovery() {
        let mut b = breaker(3, 10.0, 1);
        let t = Instant::now();
        for _ in 0..3 {
            b.on_failure(t);
        }
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.allow(t + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn half_opens_after_recovery_and_allows_only_the_trial_calls() {
        let mut b = breaker(1, 10.0, 2);
        let t = Instant::now();
        b.on_failure(t);
        let later = t + Duration::from_secs(10);
        assert!(b.allow(later).is_ok());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.allow(later).is_ok());
        assert!(b.allow(later).is_err(), "only two trials");
    }

    #[test]
    fn a_successful_trial_closes_it() {
        let mut b = breaker(2, 1.0, 1);
        let t = Instant::now();
        b.on_failure(t);
        b.on_failure(t);
        assert!(b.allow(t + Duration::from_secs(1)).is_ok());
        b.on_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert!(b.allow(t + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_failed_trial_opens_it_again_for_a_full_recovery_time() {
        let mut b = breaker(2, 5.0, 1);
        let t = Instant::now();
        b.on_failure(t);
        b.on_failure(t);
        let trial = t + Duration::from_secs(5);
        assert!(b.allow(trial).is_ok());
        b.on_failure(trial);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.allow(trial + Duration::from_secs(1)),
            Err(Duration::from_secs(4))
        );
        assert_eq!(b.consecutive_failures(), 3);
    }

    #[test]
    fn zero_threshold_and_trials_count_as_one() {
        let mut b = breaker(0, 0.0, 0);
        let t = Instant::now();
        assert!(b.allow(t).is_ok());
        b.on_failure(t);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.allow(t).is_ok());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.allow(t).is_err());
    }

    #[test]
    fn gauge_values_follow_the_metric_contract() {
        assert_eq!(CircuitState::Closed.gauge(), 0);
        assert_eq!(CircuitState::HalfOpen.gauge(), 1);
        assert_eq!(CircuitState::Open.gauge(), 2);
        assert_eq!(CircuitState::HalfOpen.as_str(), "half_open");
    }
}
