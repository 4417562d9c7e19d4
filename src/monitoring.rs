//! Host monitoring: a background sampler (CPU, memory, load, the data volume, network, the store
//! file) that publishes each sample to the metrics and keeps the latest for
//! `/api/v1/monitoring/system`. Requests and scrapes only read what was already measured.

mod sampler;

pub use sampler::{HostSample, Memory};

use crate::config::Config;
use crate::health::{Check, Outcome, Status};
use crate::metrics::Metrics;
use crate::store::StoreProbe;
use sampler::Sampler;
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Below this, sysinfo's CPU figure is noise (it needs about 200 ms between two readings).
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// The second sample comes at most this soon after the start-up one, so a real CPU figure
/// (rather than the average since boot) shows up quickly.
const FIRST_REFRESH: Duration = Duration::from_secs(1);

/// The latest host sample, shared; cheap to clone.
#[derive(Clone)]
pub struct SystemView {
    latest: Arc<RwLock<Option<Arc<HostSample>>>>,
    interval: Duration,
    enabled: bool,
    /// Why the sampling task is not running (it ended or panicked), until a restart of it
    /// samples again.
    down: Arc<RwLock<Option<String>>>,
}

impl SystemView {
    /// Takes the first sample (off the async threads) and starts sampling every
    /// `monitoring.system_sample_interval_seconds` in the background until `shutdown`.
    /// With `monitoring.metrics_enabled` off nothing is sampled.
    pub async fn start(
        config: &Config,
        store: Arc<dyn StoreProbe>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let view = Self {
            latest: Arc::new(RwLock::new(None)),
            interval: interval(config.monitoring.system_sample_interval_seconds),
            enabled: config.monitoring.metrics_enabled,
            down: Arc::default(),
        };
        if !view.enabled {
            return view;
        }
        let mut first = view.measure(Sampler::new(store.clone()), &metrics).await;
        let this = view.clone();
        let task_metrics = metrics.clone();
        // Supervised: a sampling run whose measurement panicked ends, and a new run (with a new
        // sampler) starts after a backoff; the host check shows the figures going stale meanwhile.
        crate::supervise::spawn(
            "host_sampler",
            tracker,
            shutdown.clone(),
            metrics,
            view.report(),
            move |alive| {
                let sampler = first.take().unwrap_or_else(|| Sampler::new(store.clone()));
                this.clone()
                    .run(sampler, task_metrics.clone(), shutdown.clone(), alive)
            },
        );
        view
    }

    /// One sample on a blocking thread; the sampler comes back for the next round, or `None`
    /// if the measurement panicked (then this sampling run ends and its supervisor starts
    /// another; the health check shows the figures going stale meanwhile).
    async fn measure(&self, mut sampler: Sampler, metrics: &Metrics) -> Option<Sampler> {
        let done = tokio::task::spawn_blocking(move || {
            let sample = sampler.sample();
            (sampler, sample)
        })
        .await;
        match done {
            Ok((sampler, sample)) => {
                publish(metrics, &sample);
                *self.latest.write().expect("sample lock") = Some(Arc::new(sample));
                Some(sampler)
            }
            Err(e) => {
                tracing::error!(error = %e, "host sampling failed; host figures will go stale");
                None
            }
        }
    }

    async fn run(
        self,
        mut sampler: Sampler,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        alive: crate::supervise::Alive,
    ) {
        let mut wait = self.interval.min(FIRST_REFRESH);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = self.interval;
            match self.measure(sampler, &metrics).await {
                Some(s) => {
                    sampler = s;
                    alive.up();
                }
                None => return,
            }
        }
    }

    /// What the supervisor calls when the sampling task goes down (`Some(why)`) or samples
    /// again (`None`): the host check is unhealthy in between.
    fn report(&self) -> crate::supervise::Report {
        let down = self.down.clone();
        Arc::new(move |why| *down.write().unwrap_or_else(|p| p.into_inner()) = why)
    }

    /// The latest sample, if any was taken.
    pub fn latest(&self) -> Option<Arc<HostSample>> {
        self.latest.read().expect("sample lock").clone()
    }

    /// Whether host sampling runs (`monitoring.metrics_enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The `/api/v1/monitoring/system` body: Lucid's `SystemMetrics` fields, then extras.
    pub fn snapshot(&self) -> Value {
        let now = crate::ledger::now();
        let interval = self.interval.as_secs_f64();
        let Some(s) = self.latest() else {
            return json!({
                "sampled": false,
                "message": if self.enabled { "host not sampled yet" } else { "host sampling is off (monitoring.metrics_enabled)" },
                "timestamp": now.to_string(),
                "sample_interval_seconds": interval,
            });
        };
        let mib = |b: u64| round(b as f64 / (1024.0 * 1024.0), 2);
        let gib = |b: u64| round(b as f64 / (1024.0 * 1024.0 * 1024.0), 2);
        let mem = s.memory;
        // Used = space this process cannot have: blocks reserved for root count as used.
        let disk = s
            .disk
            .map(|(free, total)| (total.saturating_sub(free), free, total));
        json!({
            "cpu_percent": s.cpu_percent.map(|c| round(c, 1)),
            "memory_percent": mem.map(|m| round(percent(m.used, m.total), 1)),
            "memory_used_mb": mem.map(|m| mib(m.used)),
            "memory_available_mb": mem.map(|m| mib(m.available)),
            "disk_usage_percent": disk.map(|(used, _, total)| round(percent(used, total), 1)),
            "disk_used_gb": disk.map(|(used, _, _)| gib(used)),
            "disk_free_gb": disk.map(|(_, free, _)| gib(free)),
            "network_bytes_sent": s.network_totals.1,
            "network_bytes_recv": s.network_totals.0,
            "timestamp": now.to_string(),
            "sampled": true,
            "sampled_at": s.at.to_string(),
            "sample_age_seconds": round(s.taken.elapsed().as_secs_f64(), 3),
            "sample_interval_seconds": interval,
            "sample_duration_ms": round(s.took.as_secs_f64() * 1e3, 3),
            "cpu_count": s.cpu_count,
            "cpu_window_seconds": s.cpu_window.map(|w| round(w.as_secs_f64(), 3)),
            "memory_total_mb": mem.map(|m| mib(m.total)),
            "disk_total_gb": disk.map(|(_, _, total)| gib(total)),
            "load_average": s.load.map(|[one, five, fifteen]| json!({"1m": one, "5m": five, "15m": fifteen})),
            "store_file_bytes": s.store_file_bytes,
        })
    }

    /// The `host` health check: is sampling keeping up?
    pub fn check(&self) -> HostCheck {
        HostCheck(self.clone())
    }
}

/// Writes one sample into the metric handles.
fn publish(m: &Metrics, s: &HostSample) {
    if let Some(cpu) = s.cpu_percent {
        m.host_cpu.set(cpu / 100.0);
    }
    if let Some(mem) = s.memory {
        m.host_memory_used.set(gauge(mem.used));
        m.host_memory_total.set(gauge(mem.total));
    }
    if let Some([one, five, fifteen]) = s.load {
        m.host_load.with_label_values(&["1m"]).set(one);
        m.host_load.with_label_values(&["5m"]).set(five);
        m.host_load.with_label_values(&["15m"]).set(fifteen);
    }
    if let Some((free, total)) = s.disk {
        m.disk_free.set(gauge(free));
        m.disk_total.set(gauge(total));
    }
    let (received, sent) = s.network_delta;
    m.network_bytes
        .with_label_values(&["received"])
        .inc_by(received);
    m.network_bytes
        .with_label_values(&["transmitted"])
        .inc_by(sent);
    if let Some(size) = s.store_file_bytes {
        m.store_file_size.set(gauge(size));
    }
}

/// The `host` health check: degraded when the latest sample is older than three intervals.
pub struct HostCheck(SystemView);

impl Check for HostCheck {
    fn name(&self) -> &'static str {
        "host"
    }

    fn run(&self) -> Outcome {
        let view = &self.0;
        let down = view.down.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(why) = down {
            // Supervised work that is not running makes the service unhealthy (spec §5),
            // whatever the last sample said.
            return Outcome::new(
                Status::Unhealthy,
                format!(
                    "the host sampling task is not running ({why}); restarting it with backoff"
                ),
            );
        }
        let Some(s) = view.latest() else {
            return Outcome::new(Status::Degraded, "host not sampled");
        };
        let age = s.taken.elapsed();
        let stale_after = view.interval * 3 + Duration::from_secs(2);
        let mut out = if age > stale_after {
            Outcome::new(
                Status::Degraded,
                format!(
                    "host sampling has stalled: last sample {:.1} s ago",
                    age.as_secs_f64()
                ),
            )
        } else {
            Outcome::new(Status::Healthy, "host sampled on schedule")
        };
        out = out
            .with("sampled_at", s.at.to_string())
            .with("sample_age_seconds", round(age.as_secs_f64(), 3));
        if let Some(m) = s.memory {
            out = out.with("memory_percent", round(percent(m.used, m.total), 1));
        }
        if let Some(cpu) = s.cpu_percent {
            out = out.with("cpu_percent", round(cpu, 1));
        }
        out
    }
}

/// The configured interval, kept sane even for a config that skipped validation.
fn interval(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds)
        .unwrap_or(Duration::from_secs(5))
        .clamp(MIN_INTERVAL, Duration::from_secs(86_400))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Byte counts as gauge values (no host has 2^63 bytes of anything).
fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_clamped_to_what_sampling_can_measure() {
        assert_eq!(interval(5.0), Duration::from_secs(5));
        assert_eq!(interval(0.01), MIN_INTERVAL);
        assert_eq!(interval(f64::NAN), Duration::from_secs(5));
        assert_eq!(interval(-1.0), Duration::from_secs(5));
    }

    /// A sampling run that panics, under the same supervision `start` sets up: the host check
    /// is unhealthy until a restarted run samples again.
    #[tokio::test]
    async fn the_host_check_is_unhealthy_while_the_sampling_task_is_down() {
        let view = SystemView {
            latest: Arc::default(),
            interval: Duration::from_secs(1),
            enabled: true,
            down: Arc::default(),
        };
        *view.latest.write().unwrap() = Some(Arc::new(HostSample {
            at: crate::ledger::now(),
            taken: std::time::Instant::now(),
            cpu_percent: None,
            cpu_window: None,
            cpu_count: 1,
            memory: None,
            load: None,
            disk: None,
            network_totals: (0, 0),
            network_delta: (0, 0),
            store_file_bytes: None,
            took: Duration::ZERO,
        }));
        assert_ne!(view.check().run().status, Status::Unhealthy);
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (release, released) = tokio::sync::watch::channel(false);
        crate::supervise::spawn(
            "host_sampler",
            &tracker,
            shutdown.clone(),
            Arc::new(Metrics::new()),
            view.report(),
            move |alive| {
                let released = *released.borrow();
                let stop = stop.clone();
                async move {
                    // Panics until released, then samples (says it works) until shutdown.
                    assert!(released, "sampler exploded");
                    alive.up();
                    stop.cancelled().await;
                }
            },
        );
        let outcome = wait_for(&view, Status::Unhealthy).await;
        assert!(
            outcome.message.contains("sampler exploded"),
            "{}",
            outcome.message
        );
        release.send_replace(true);
        wait_for(&view, Status::Healthy).await;
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("stops on shutdown");
    }

    async fn wait_for(view: &SystemView, status: Status) -> Outcome {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let outcome = view.check().run();
            if outcome.status == status {
                return outcome;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "host check never {status:?}: {}",
                outcome.message
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn percent_of_nothing_is_zero() {
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(round(percent(1, 3), 1), 33.3);
    }
}
