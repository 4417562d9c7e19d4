//! Prometheus counters of the log handlers: file rotations, and lines dropped because the
//! log queue was full (its writer fell behind), per handler. Process-wide, as the handlers are.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

static ROTATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "block_manager_log_rotations_total",
            "Log file rotations, by handler of the logging file",
        ),
        &["handler"],
    )
    .expect("static metric definition")
});

static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "block_manager_log_lines_dropped_total",
            "Log lines dropped because the handler's queue was full, by handler",
        ),
        &["handler"],
    )
    .expect("static metric definition")
});

/// Each handler's drop count, as its writer keeps it.
static QUEUES: OnceLock<Vec<(String, Arc<AtomicU64>)>> = OnceLock::new();
/// Drops already added to the counter, per queue: shared, as every registry reads the same.
static SEEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The rotation counter of handler `name` (its series exists from start-up, at zero).
pub fn rotations(name: &str) -> IntCounter {
    ROTATIONS.with_label_values(&[name])
}

/// Starts counting the drops of these handlers' queues.
pub fn watch(queues: Vec<(String, Arc<AtomicU64>)>) {
    for (name, _) in &queues {
        DROPPED.with_label_values(&[name]);
    }
    let _ = QUEUES.set(queues);
}

struct LogMetrics;

impl Collector for LogMetrics {
    fn desc(&self) -> Vec<&Desc> {
        ROTATIONS.desc().into_iter().chain(DROPPED.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(queues) = QUEUES.get()
            && let Ok(mut seen) = SEEN.lock()
        {
            seen.resize(queues.len(), 0);
            for ((name, counter), seen) in queues.iter().zip(seen.iter_mut()) {
                let now = counter.load(Ordering::Relaxed);
                if now > *seen {
                    DROPPED.with_label_values(&[name]).inc_by(now - *seen);
                    *seen = now;
                }
            }
        }
        let mut out = ROTATIONS.collect();
        out.extend(DROPPED.collect());
        out
    }
}

/// Adds the log handlers' counters to `registry`.
pub fn register(registry: &Registry) {
    if let Err(e) = registry.register(Box::new(LogMetrics)) {
        tracing::warn!(error = %e, "log handler metrics unavailable");
    }
}
