//! Health: the check registry behind `/health`, `/health/live`, `/health/ready` and
//! `/api/v1/monitoring/health`. Later parts (store, sync, disk) add checks to it.

use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Status of one check or of the whole service, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// All good.
    Healthy,
    /// Serving, but something needs attention (reads still work).
    Degraded,
    /// Not able to serve.
    Unhealthy,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Status.
    pub status: Status,
    /// What it found, for people.
    pub message: String,
    /// Check-specific fields (height, free bytes, sync state...).
    #[serde(flatten)]
    pub details: Map<String, Value>,
    /// How long the check took.
    pub latency_ms: f64,
}

impl Outcome {
    /// An outcome with no details.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Map::new(),
            latency_ms: 0.0,
        }
    }
    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// One named check. `run` may block (it is called on a blocking thread) but must be quick.
pub trait Check: Send + Sync + 'static {
    /// Name in the `checks` map.
    fn name(&self) -> &'static str;
    /// Runs the check.
    fn run(&self) -> Outcome;
}

/// The registry, with a short cache so probes hammering `/health` cannot turn into a write
/// load on the store.
#[derive(Clone)]
pub struct Health {
    checks: Arc<Vec<Box<dyn Check>>>,
    // An async lock held across the refresh: concurrent probes wait for one run of the checks
    // instead of each running them (the store probe must not race itself).
    cache: Arc<tokio::sync::Mutex<Option<(Instant, Report)>>>,
    ttl: Duration,
}

/// Every check's outcome and the overall status (the worst).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Worst of the checks.
    pub status: Status,
    /// By name.
    pub checks: std::collections::BTreeMap<&'static str, Outcome>,
}

impl Health {
    /// A registry over `checks`; results are reused for `ttl`.
    pub fn new(checks: Vec<Box<dyn Check>>, ttl: Duration) -> Self {
        Self {
            checks: Arc::new(checks),
            cache: Arc::new(tokio::sync::Mutex::new(None)),
            ttl,
        }
    }

    /// Runs every check (or returns the cached report), off the async threads.
    pub async fn report(&self) -> Report {
        let mut cache = self.cache.lock().await;
        if let Some((at, report)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return report.clone();
        }
        let this = self.clone();
        let report = tokio::task::spawn_blocking(move || this.run_all())
            .await
            .unwrap_or_else(|_| Report {
                status: Status::Unhealthy,
                checks: [(
                    "health",
                    Outcome::new(Status::Unhealthy, "a health check panicked"),
                )]
                .into_iter()
                .collect(),
            });
        *cache = Some((Instant::now(), report.clone()));
        report
    }

    fn run_all(&self) -> Report {
        let mut checks = std::collections::BTreeMap::new();
        let mut status = Status::Healthy;
        for check in self.checks.iter() {
            let started = Instant::now();
            let mut outcome = check.run();
            outcome.latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            status = status.max(outcome.status);
            checks.insert(check.name(), outcome);
        }
        Report { status, checks }
    }
}

/// The `store` check: open, writable, and enough free space on the data volume.
pub struct StoreCheck {
    /// The store.
    pub store: Arc<dyn crate::store::StoreProbe>,
    /// Below this, degraded.
    pub min_free_bytes: u64,
}

impl Check for StoreCheck {
    fn name(&self) -> &'static str {
        "store"
    }

    fn run(&self) -> Outcome {
        let height = match self.store.check_readable() {
            Ok(height) => height,
            Err(e) => return Outcome::new(Status::Unhealthy, format!("store cannot be read: {e}")),
        };
        let engine = self.store.engine();
        let standbys = self.store.standbys();
        // A database across a network that cannot be reached: a balancer must drop us, unless
        // a hot standby still serves the reads (writes answer 503 meanwhile).
        if let Err(e) = self.store.check_reachable() {
            let serving: Vec<usize> = standbys.iter().filter(|s| s.up).map(|s| s.index).collect();
            let out = match serving.first() {
                Some(index) => Outcome::new(
                    Status::Degraded,
                    format!(
                        "the primary database is unreachable ({e}); reads are served by the standby {index}, writes are refused"
                    ),
                )
                .with("height", height.map_or(Value::Null, Value::from)),
                None => Outcome::new(Status::Unhealthy, format!("store cannot be reached: {e}")),
            };
            return with_standbys(out.with("engine", engine), &standbys);
        }
        let free = self
            .store
            .volume()
            .and_then(|v| crate::store::free_space(v).ok());
        let mut out = match self.store.check_writable() {
            Err(e) => Outcome::new(Status::Degraded, format!("store is read-only for now: {e}")),
            Ok(()) => match free {
                Some((avail, _)) if avail < self.min_free_bytes => Outcome::new(
                    Status::Degraded,
                    format!(
                        "data volume has {avail} bytes free (minimum {})",
                        self.min_free_bytes
                    ),
                ),
                _ => Outcome::new(Status::Healthy, "store open and writable"),
            },
        };
        out = out
            .with("engine", engine)
            .with("height", height.map_or(Value::Null, Value::from));
        if let Some((avail, total)) = free {
            out = out
                .with("disk_free_bytes", avail)
                .with("disk_total_bytes", total);
        }
        // A standby that cannot serve: reads still work (from the primary), but someone should
        // look at it.
        if let Some(down) = standbys.iter().find(|s| !s.up)
            && out.status == Status::Healthy
        {
            out.status = Status::Degraded;
            out.message = format!(
                "store open and writable; standby {} is down ({}): its reads go to the primary",
                down.index,
                down.error.as_deref().unwrap_or("not answering")
            );
        }
        with_standbys(out, &standbys)
    }
}

/// Adds each hot standby's state and replay lag to the store check (nothing without any).
fn with_standbys(out: Outcome, standbys: &[crate::store::StandbyState]) -> Outcome {
    if standbys.is_empty() {
        return out;
    }
    let list: Vec<Value> = standbys
        .iter()
        .map(|s| {
            serde_json::json!({
                "index": s.index,
                "database": s.database,
                "state": if s.up { "up" } else { "down" },
                "lag_blocks": s.lag_blocks,
                "lag_seconds": s.lag_seconds,
                "error": s.error,
            })
        })
        .collect();
    out.with("standbys", list)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Status);
    impl Check for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn run(&self) -> Outcome {
            Outcome::new(self.1, "fixed")
        }
    }

    #[tokio::test]
    async fn overall_status_is_the_worst_check() {
        let h = Health::new(
            vec![
                Box::new(Fixed("a", Status::Healthy)),
                Box::new(Fixed("b", Status::Degraded)),
            ],
            Duration::ZERO,
        );
        let r = h.report().await;
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.checks.len(), 2);
    }
}
