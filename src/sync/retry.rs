//! Retries with backoff, as `error_handling.retry` and `error_handling.blockchain_engine`
//! describe them: a call is tried once and then retried up to `max_retries` times
//! (`blockchain_engine.max_retries` overrides `retry.max_retries` for the upstream; none when
//! `retry.enabled` is off), only for the failures `retry_on_timeout` / `retry_on_5xx` allow,
//! waiting `retry_delay × multiplier^(n-1)` (capped; constant without `exponential_backoff`)
//! before the n-th retry. The same curve, starting at `synchronization.sync_backoff_seconds`,
//! spaces out failed rounds.

use crate::config::{ErrorHandling, MAX_SECONDS, RetryPolicy};
use std::future::Future;
use std::time::Duration;

/// Which failures of an upstream call are worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// A call that timed out.
    pub timeout: bool,
    /// A call answered with a 5xx (or 429, the upstream's own "overloaded").
    pub server_error: bool,
}

/// A sanitised retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    attempts: u32,
    initial: f64,
    max: f64,
    base: f64,
    retry_on: RetryOn,
}

impl Backoff {
    /// The curve of `p` with `retries` retries after the first try, nonsense values made
    /// harmless (no negative or endless delays, no shrinking curve).
    fn new(p: &RetryPolicy, first_delay: f64, retries: u32, retry_on: RetryOn) -> Self {
        let initial = finite_or(first_delay, 0.5).clamp(0.0, MAX_SECONDS);
        let base = if p.exponential_backoff {
            finite_or(p.backoff_multiplier, 2.0).max(1.0)
        } else {
            1.0
        };
        Self {
            attempts: retries.saturating_add(1),
            initial,
            max: finite_or(p.max_backoff_seconds, 30.0).clamp(initial, MAX_SECONDS.max(initial)),
            base,
            retry_on,
        }
    }

    /// The policy for one upstream call, from the errors file.
    pub fn for_upstream(e: &ErrorHandling) -> Self {
        let p = &e.retry;
        let engine = &e.blockchain_engine;
        let retries = if p.enabled {
            engine.max_retries.unwrap_or(p.max_retries)
        } else {
            0
        };
        let on = RetryOn {
            timeout: engine.retry_on_timeout,
            server_error: engine.retry_on_5xx,
        };
        Self::new(p, p.retry_delay_seconds, retries, on)
    }

    /// The spacing of failed sync rounds: `synchronization.sync_backoff_seconds` first (else
    /// the retry delay), growing as the retry settings say. Rounds always go on, so this
    /// holds whether or not single calls are retried.
    pub fn for_rounds(e: &ErrorHandling) -> Self {
        let p = &e.retry;
        let first = e
            .synchronization
            .sync_backoff_seconds
            .unwrap_or(p.retry_delay_seconds);
        let none = RetryOn {
            timeout: false,
            server_error: false,
        };
        Self::new(p, first, 0, none)
    }

    /// Tries per call, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Which failures are retried.
    pub fn retry_on(&self) -> RetryOn {
        self.retry_on
    }

    /// The wait before retry `n` (1 = the first retry), capped at the maximum delay.
    pub fn delay(&self, n: u32) -> Duration {
        let exponent = n.saturating_sub(1).min(64) as i32;
        let secs = (self.initial * self.base.powi(exponent)).min(self.max);
        crate::config::duration(finite_or(secs, self.max))
    }

    /// Runs `call` until it succeeds, fails with an error `retryable` refuses, or the attempts
    /// are used up; returns the last outcome.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut call: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < self.attempts && retryable(&e) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }
}

fn finite_or(x: f64, fallback: f64) -> f64 {
    if x.is_finite() { x } else { fallback }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(attempts: u32, initial: f64, max: f64, base: f64) -> Backoff {
        let e = ErrorHandling {
            retry: RetryPolicy {
                enabled: true,
                max_retries: attempts.saturating_sub(1),
                retry_delay_seconds: initial,
                exponential_backoff: true,
                backoff_multiplier: base,
                max_backoff_seconds: max,
            },
            ..ErrorHandling::default()
        };
        Backoff::for_upstream(&e)
    }

    #[test]
    fn delays_grow_by_the_base_and_stop_at_the_cap() {
        let b = policy(5, 0.5, 3.0, 2.0);
        let secs: Vec<f64> = (1..=5).map(|n| b.delay(n).as_secs_f64()).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn nonsense_values_are_made_harmless() {
        let b = policy(1, -1.0, f64::NAN, 0.1);
        assert_eq!(b.attempts(), 1);
        assert_eq!(b.delay(1), Duration::ZERO);
        assert_eq!(b.delay(40), Duration::ZERO);
        let huge = policy(3, 1.0, 10.0, 1e300);
        assert_eq!(huge.delay(60), Duration::from_secs(10));
        // Past a year (or infinite) is a year, never a panic.
        let endless = policy(3, 1e20, f64::INFINITY, 2.0);
        assert_eq!(endless.delay(1), Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn max_retries_counts_retries_and_the_engine_value_overrides_it() {
        let mut e = ErrorHandling::default();
        e.retry.max_retries = 1;
        assert_eq!(Backoff::for_upstream(&e).attempts(), 2);
        e.retry.max_retries = 0;
        assert_eq!(Backoff::for_upstream(&e).attempts(), 1);
        e.blockchain_engine.max_retries = Some(4);
        assert_eq!(Backoff::for_upstream(&e).attempts(), 5);
        e.retry.enabled = false;
        assert_eq!(Backoff::for_upstream(&e).attempts(), 1, "retries off");
    }

    #[test]
    fn without_exponential_backoff_the_delay_is_constant() {
        let mut e = ErrorHandling::default();
        e.retry.retry_delay_seconds = 0.25;
        e.retry.exponential_backoff = false;
        let b = Backoff::for_upstream(&e);
        assert_eq!(b.delay(1), b.delay(5));
        assert_eq!(b.delay(5), Duration::from_millis(250));
    }

    #[test]
    fn failed_rounds_start_at_sync_backoff_seconds() {
        let mut e = ErrorHandling::default();
        e.retry.retry_delay_seconds = 0.5;
        e.retry.backoff_multiplier = 3.0;
        let b = Backoff::for_rounds(&e);
        assert_eq!(b.delay(1), Duration::from_millis(500));
        e.synchronization.sync_backoff_seconds = Some(2.0);
        let b = Backoff::for_rounds(&e);
        assert_eq!(
            (b.delay(1), b.delay(2)),
            (Duration::from_secs(2), Duration::from_secs(6))
        );
        e.retry.enabled = false;
        assert_eq!(
            Backoff::for_rounds(&e).delay(1),
            Duration::from_secs(2),
            "rounds always back off"
        );
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_the_attempts_are_used_up() {
        let b = policy(3, 0.001, 0.001, 2.0);
        let calls = AtomicU32::new(0);
        let out: Result<(), &str> = b
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("down")
                },
                |_| true,
            )
            .await;
        assert_eq!(out, Err("down"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_the_first_success_or_a_final_error() {
        let b = policy(5, 0.001, 0.001, 2.0);
        let calls = AtomicU32::new(0);
        let out: Result<u32, &str> = b
            .run(
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 1 { Err("flaky") } else { Ok(n) }
                },
                |_| true,
            )
            .await;
        assert_eq!(out, Ok(1));
        let calls = AtomicU32::new(0);
        let out: Result<(), &str> = b
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("bad request")
                },
                |_| false,
            )
            .await;
        assert_eq!(out, Err("bad request"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
