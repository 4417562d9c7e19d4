//! Retries with exponential backoff, as `error_handling.retry` describes them: up to
//! `max_attempts` tries per upstream call, waiting `initial × base^(n-1)` (capped) before the
//! n-th retry. The same curve spaces out failed rounds.

use crate::config::RetryPolicy;
use std::future::Future;
use std::time::Duration;

/// A sanitised retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    attempts: u32,
    initial: f64,
    max: f64,
    base: f64,
}

impl Backoff {
    /// The policy from the errors file, with nonsense values made harmless (at least one
    /// attempt, no negative delays, no shrinking curve).
    pub fn from_policy(p: &RetryPolicy) -> Self {
        let initial = finite_or(p.initial_delay_seconds, 0.5).max(0.0);
        Self {
            attempts: p.max_attempts.max(1),
            initial,
            max: finite_or(p.max_delay_seconds, 30.0).max(initial),
            base: finite_or(p.exponential_base, 2.0).max(1.0),
        }
    }

    /// Tries per call, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before retry `n` (1 = the first retry), capped at the maximum delay.
    pub fn delay(&self, n: u32) -> Duration {
        let exponent = n.saturating_sub(1).min(64) as i32;
        let secs = (self.initial * self.base.powi(exponent)).min(self.max);
        Duration::from_secs_f64(finite_or(secs, self.max))
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
        Backoff::from_policy(&RetryPolicy {
            max_attempts: attempts,
            initial_delay_seconds: initial,
            max_delay_seconds: max,
            exponential_base: base,
        })
    }

    #[test]
    fn delays_grow_by_the_base_and_stop_at_the_cap() {
        let b = policy(5, 0.5, 3.0, 2.0);
        let secs: Vec<f64> = (1..=5).map(|n| b.delay(n).as_secs_f64()).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn nonsense_values_are_made_harmless() {
        let b = policy(0, -1.0, f64::NAN, 0.1);
        assert_eq!(b.attempts(), 1);
        assert_eq!(b.delay(1), Duration::ZERO);
        assert_eq!(b.delay(40), Duration::ZERO);
        let huge = policy(3, 1.0, 10.0, 1e300);
        assert_eq!(huge.delay(60), Duration::from_secs(10));
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
