//! Supervision of background tasks: a task that panics or ends while the service runs is
//! reported down (health turns `unhealthy`), restarted with backoff and counted
//! (`block_manager_task_restarts_total`), and reported up again once the new run says it works.

use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First wait before a restart; it doubles per failed run, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Called with why the task is down (`Some`), or `None` once a restart of it works.
pub type Report = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// What a supervised run holds to say it works: the first [`Alive::up`] after a restart ends
/// the `down` report.
#[derive(Clone)]
pub struct Alive {
    down: Arc<AtomicBool>,
    worked: Arc<AtomicBool>,
    report: Report,
    name: &'static str,
    metrics: Arc<Metrics>,
}

impl Alive {
    /// The run did a unit of its work (a sync round, a sample).
    pub fn up(&self) {
        self.worked.store(true, Ordering::Relaxed);
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!(task = self.name, "background task runs again");
            self.metrics
                .task_down
                .with_label_values(&[self.name])
                .set(0);
            (self.report)(None);
        }
    }

    fn down(&self, why: String) {
        self.down.store(true, Ordering::SeqCst);
        self.metrics
            .task_down
            .with_label_values(&[self.name])
            .set(1);
        (self.report)(Some(why));
    }
}

/// Runs `make(alive)` on `tracker` until `shutdown`, starting it again whenever it panics or
/// ends before `shutdown`.
pub fn spawn<F, Fut>(
    name: &'static str,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    report: Report,
    mut make: F,
) where
    F: FnMut(Alive) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let alive = Alive {
        down: Arc::new(AtomicBool::new(false)),
        worked: Arc::new(AtomicBool::new(false)),
        report,
        name,
        metrics: metrics.clone(),
    };
    metrics.task_restarts.with_label_values(&[name]);
    metrics.task_down.with_label_values(&[name]).set(0);
    tracker.spawn(async move {
        let mut failed_runs = 0u32;
        loop {
            alive.worked.store(false, Ordering::Relaxed);
            // Its own task, so a panic ends only that run and reaches us as a JoinError.
            let outcome = tokio::spawn(make(alive.clone())).await;
            if shutdown.is_cancelled() {
                return;
            }
            let why = match outcome {
                Ok(()) => "it ended".to_string(),
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_text(e.into_panic())),
                Err(e) => format!("it was cancelled: {e}"),
            };
            // A run that worked before it failed starts the backoff curve afresh.
            if alive.worked.load(Ordering::Relaxed) {
                failed_runs = 0;
            }
            failed_runs = failed_runs.saturating_add(1);
            let wait = backoff(failed_runs);
            tracing::error!(task = name, reason = %why, retry_in_seconds = wait.as_secs_f64(), "background task stopped; restarting it");
            alive.down(why);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            metrics.task_restarts.with_label_values(&[name]).inc();
        }
    });
}

/// The wait before restart number `n` (1 = the first).
fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The message a panic was raised with, when it is text.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn restarts_back_off_from_a_tenth_of_a_second_to_half_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    /// A task that panics on its first two runs and works from the third.
    #[tokio::test]
    async fn a_task_that_panics_is_reported_down_restarted_and_reported_up_once_it_works() {
        let metrics = Arc::new(Metrics::new());
        let reports: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = reports.clone();
        let report: Report = Arc::new(move |r| seen.lock().unwrap().push(r));
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        spawn(
            "test",
            &tracker,
            shutdown.clone(),
            metrics.clone(),
            report,
            move |alive| {
                let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let stop = stop.clone();
                async move {
                    assert!(run > 2, "run {run} fails");
                    alive.up();
                    stop.cancelled().await;
                }
            },
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reports.lock().unwrap().last() != Some(&None) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reported up again: {:?}",
                reports.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = reports.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "down, down, up: {got:?}");
        assert!(
            got[0].as_deref().unwrap().contains("run 1 fails"),
            "{got:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.task_restarts.with_label_values(&["test"]).get(), 2);
        assert_eq!(metrics.task_down.with_label_values(&["test"]).get(), 0);
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("stops on shutdown");
    }

    #[tokio::test]
    async fn a_task_that_ends_before_shutdown_is_down_until_it_runs_again() {
        let metrics = Arc::new(Metrics::new());
        let reports: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = reports.clone();
        let report: Report = Arc::new(move |r| seen.lock().unwrap().push(r));
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        // Ends at once every time and never works: down stays reported.
        spawn(
            "ends",
            &tracker,
            shutdown.clone(),
            metrics.clone(),
            report,
            |_| async {},
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.task_restarts.with_label_values(&["ends"]).get() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.task_down.with_label_values(&["ends"]).get(), 1);
        let got = reports.lock().unwrap().clone();
        assert!(got.iter().all(Option::is_some), "{got:?}");
        assert!(got[0].as_deref().unwrap().contains("ended"), "{got:?}");
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("stops on shutdown");
    }
}
