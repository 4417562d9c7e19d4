//! Prometheus registry and the named metric handles, created once at start-up.
//! Every name carries the `block_manager_` prefix and a unit suffix, except the standard
//! `process_*` family (see `process`), which keeps the names generic dashboards expect.

#[cfg(target_os = "linux")]
mod process;

use crate::chain::Failure;
use crate::store::BlockRecord;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

const NS: &str = "block_manager";

/// Where appended blocks come from (`source` label of `blocks_appended_total`).
const SOURCES: [&str; 2] = ["api", "sync"];

/// The codes block validation reports (`code` label of `validation_failures_total`).
const VALIDATION_CODES: [&str; 7] = [
    "VAL_001", "VAL_002", "VAL_003", "VAL_004", "VAL_005", "BM_005", "BM_006",
];

/// Why a request was refused for credentials (`reason` label of `http_auth_failures_total`).
const AUTH_REASONS: [&str; 4] = ["invalid", "missing", "insufficient", "writes_disabled"];

/// The catalog's sync error codes (`code` label of `sync_errors_total`).
const SYNC_CODES: [&str; 5] = ["SYNC_001", "SYNC_002", "SYNC_003", "SYNC_004", "SYNC_005"];

/// Every metric handle. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Tells this set of metrics from any other in the process (tests run several apps in
    /// one): what per-thread caches of its series are keyed by.
    id: u64,
    /// HTTP requests by method, route template and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by method and route template.
    pub http_duration: HistogramVec,
    /// Requests being served.
    pub http_in_flight: IntGauge,
    /// Requests refused by the rate limit.
    pub rate_limited: IntCounter,
    /// Requests refused for missing or wrong credentials.
    pub auth_failures: IntCounterVec,
    /// Height of the tip.
    pub chain_height: IntGauge,
    /// Blocks stored.
    pub blocks_stored: IntGauge,
    /// Transactions stored.
    pub transactions_stored: IntGauge,
    /// Size of appended blocks.
    pub block_size: Histogram,
    /// Unix time of the tip's timestamp.
    pub last_block_timestamp: Gauge,
    /// Blocks appended, by source (api, sync).
    pub appends: IntCounterVec,
    /// Blocks rejected by validation, by error code.
    pub validation_failures: IntCounterVec,
    /// Duration of store commits.
    pub commit_duration: Histogram,
    /// Size of the store file.
    pub store_file_size: IntGauge,
    /// Blocks removed by rollbacks.
    pub rolled_back: IntCounter,
    /// Upstream tip height.
    pub upstream_height: IntGauge,
    /// Blocks behind upstream.
    pub sync_lag: IntGauge,
    /// 1 for the current sync state, 0 for the others.
    pub sync_state: IntGaugeVec,
    /// Sync errors by code.
    pub sync_errors: IntCounterVec,
    /// Circuit breaker: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGauge,
    /// Forks resolved by rolling back.
    pub reorgs: IntCounter,
    /// Upstream fetch latency by request kind.
    pub fetch_duration: HistogramVec,
    /// Host CPU busy ratio (0–1) over the last sampling interval.
    pub host_cpu: Gauge,
    /// Host memory used.
    pub host_memory_used: IntGauge,
    /// Host memory total.
    pub host_memory_total: IntGauge,
    /// Host load averages by period (1m, 5m, 15m).
    pub host_load: GaugeVec,
    /// Free bytes of the data volume.
    pub disk_free: IntGauge,
    /// Total bytes of the data volume.
    pub disk_total: IntGauge,
    /// Network bytes by direction (received, transmitted), all interfaces, counted since boot.
    pub network_bytes: IntCounterVec,
    /// Upstream replies refused for being larger than the sync byte budget.
    pub sync_replies_refused: IntCounter,
    /// Background tasks restarted after they panicked or ended, by task.
    pub task_restarts: IntCounterVec,
    /// 1 while a supervised background task is down (ended or panicked), by task.
    pub task_down: IntGaugeVec,
    /// The finality floor: blocks at or below it are final (clamped to 2^53).
    pub finality_floor: IntGauge,
    /// Forks not rolled back because too many reorgs happened within the window.
    pub reorgs_damped: IntCounter,
    /// Clients (addresses, IPv6 /64s) the rate limiter tracks now.
    pub rate_limit_buckets: IntGauge,
    /// Clients the rate limiter forgot to stay within `rate_limits.max_clients`.
    pub rate_limit_evictions: IntCounter,
    /// Responses that carried fewer blocks than asked for because `api.max_response_bytes`
    /// was reached, by route template.
    pub http_responses_truncated: IntCounterVec,
    /// Blocks offered to the quarantine, by outcome.
    pub quarantine_entries: IntCounterVec,
    /// Upstream calls retried, by the failure that caused the retry.
    pub sync_retries: IntCounterVec,
    /// HTTP connections open now (served and overflow).
    pub http_connections_open: IntGauge,
    /// The connection cap in force.
    pub http_connections_max: IntGauge,
    /// Connections closed at the cap to make room (no complete request head yet, or idle).
    pub http_connections_shed: IntCounter,
    /// Requests and connections refused with 503 at the cap.
    pub http_connections_refused: IntCounter,
    /// Connections closed because their request head did not arrive in time.
    pub http_header_timeouts: IntCounter,
    /// Event streams (`/api/v1/events`) open now.
    pub event_streams_open: IntGauge,
    /// Events written to event streams, by event type (`block`, `reorg`, `resync`).
    pub events_sent: IntCounterVec,
    /// Times a live event subscriber fell behind the tip by more than a page and went on
    /// catching up from the store.
    pub event_subscribers_lagged: IntCounter,
    /// 1 while the follower is subscribed to its upstream's event stream, else 0.
    pub sync_push_subscribed: IntGauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    /// Creates and registers every handle.
    /// Unique per [`Metrics::new`] in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are static and valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let m = Metrics {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            http_requests: reg!(IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests by method, route and status"
                ),
                &["method", "route", "status"]
            )),
            http_duration: reg!(HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .namespace(NS)
                    .buckets(latency.clone()),
                &["method", "route"]
            )),
            http_in_flight: reg!(IntGauge::with_opts(opts(
                "http_requests_in_flight",
                "HTTP requests being served"
            ))),
            rate_limited: reg!(IntCounter::with_opts(opts(
                "http_rate_limited_total",
                "Requests refused by the rate limit"
            ))),
            auth_failures: reg!(IntCounterVec::new(
                opts(
                    "http_auth_failures_total",
                    "Requests refused for credentials"
                ),
                &["reason"]
            )),
            chain_height: reg!(IntGauge::with_opts(opts(
                "chain_height",
                "Height of the chain tip"
            ))),
            blocks_stored: reg!(IntGauge::with_opts(opts(
                "blocks_stored",
                "Blocks in the store"
            ))),
            transactions_stored: reg!(IntGauge::with_opts(opts(
                "transactions_stored",
                "Transactions in the store"
            ))),
            block_size: reg!(Histogram::with_opts(
                HistogramOpts::new("block_size_bytes", "Size of appended blocks")
                    .namespace(NS)
                    .buckets(vec![
                        512.0, 1024.0, 2048.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0
                    ])
            )),
            last_block_timestamp: reg!(Gauge::with_opts(opts(
                "last_block_timestamp_seconds",
                "Unix time of the tip block"
            ))),
            appends: reg!(IntCounterVec::new(
                opts("blocks_appended_total", "Blocks appended by source"),
                &["source"]
            )),
            validation_failures: reg!(IntCounterVec::new(
                opts("validation_failures_total", "Validation failures by code"),
                &["code"]
            )),
            commit_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "store_commit_duration_seconds",
                    "Duration of durable store commits"
                )
                .namespace(NS)
                .buckets(latency.clone())
            )),
            store_file_size: reg!(IntGauge::with_opts(opts(
                "store_file_size_bytes",
                "Size of the store file"
            ))),
            rolled_back: reg!(IntCounter::with_opts(opts(
                "blocks_rolled_back_total",
                "Blocks removed by fork rollbacks"
            ))),
            upstream_height: reg!(IntGauge::with_opts(opts(
                "sync_upstream_height",
                "Height of the upstream tip"
            ))),
            sync_lag: reg!(IntGauge::with_opts(opts(
                "sync_lag_blocks",
                "Blocks behind upstream"
            ))),
            sync_state: reg!(IntGaugeVec::new(
                opts("sync_state", "1 for the current sync state"),
                &["state"]
            )),
            sync_errors: reg!(IntCounterVec::new(
                opts("sync_errors_total", "Sync errors by code"),
                &["code"]
            )),
            circuit_state: reg!(IntGauge::with_opts(opts(
                "sync_circuit_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open"
            ))),
            reorgs: reg!(IntCounter::with_opts(opts(
                "sync_reorgs_total",
                "Forks resolved by rolling back"
            ))),
            fetch_duration: reg!(HistogramVec::new(
                HistogramOpts::new("sync_fetch_duration_seconds", "Upstream request latency")
                    .namespace(NS)
                    .buckets(latency),
                &["kind"]
            )),
            host_cpu: reg!(Gauge::with_opts(opts(
                "host_cpu_usage_ratio",
                "Host CPU busy ratio (0-1) over the last sampling interval"
            ))),
            host_memory_used: reg!(IntGauge::with_opts(opts(
                "host_memory_used_bytes",
                "Host memory in use"
            ))),
            host_memory_total: reg!(IntGauge::with_opts(opts(
                "host_memory_total_bytes",
                "Host memory"
            ))),
            host_load: reg!(GaugeVec::new(
                opts("host_load_average", "Host load average"),
                &["period"]
            )),
            disk_free: reg!(IntGauge::with_opts(opts(
                "data_volume_free_bytes",
                "Free bytes of the data volume"
            ))),
            disk_total: reg!(IntGauge::with_opts(opts(
                "data_volume_total_bytes",
                "Total bytes of the data volume"
            ))),
            network_bytes: reg!(IntCounterVec::new(
                opts(
                    "host_network_bytes_total",
                    "Host network bytes over all interfaces since boot"
                ),
                &["direction"]
            )),
            sync_replies_refused: reg!(IntCounter::with_opts(opts(
                "sync_replies_refused_total",
                "Upstream replies refused for exceeding synchronization.max_inflight_bytes"
            ))),
            task_restarts: reg!(IntCounterVec::new(
                opts(
                    "task_restarts_total",
                    "Background tasks restarted after they panicked or ended"
                ),
                &["task"]
            )),
            task_down: reg!(IntGaugeVec::new(
                opts(
                    "task_down",
                    "1 while a supervised background task is down, by task"
                ),
                &["task"]
            )),
            finality_floor: reg!(IntGauge::with_opts(opts(
                "finality_floor_height",
                "Highest height buried deeper than synchronization.max_reorg_depth: blocks at or below it are final"
            ))),
            reorgs_damped: reg!(IntCounter::with_opts(opts(
                "sync_reorgs_damped_total",
                "Forks not rolled back because more than synchronization.max_reorgs_per_window happened within the window"
            ))),
            rate_limit_buckets: reg!(IntGauge::with_opts(opts(
                "rate_limit_buckets",
                "Clients the rate limiter tracks"
            ))),
            rate_limit_evictions: reg!(IntCounter::with_opts(opts(
                "rate_limit_evictions_total",
                "Clients the rate limiter forgot to stay within rate_limits.max_clients"
            ))),
            http_responses_truncated: reg!(IntCounterVec::new(
                opts(
                    "http_responses_truncated_total",
                    "Responses cut short at api.max_response_bytes, by route"
                ),
                &["route"]
            )),
            quarantine_entries: reg!(IntCounterVec::new(
                opts(
                    "quarantine_entries_total",
                    "Blocks offered to the quarantine, by outcome: filed, filed_without_block, duplicate, failed"
                ),
                &["outcome"]
            )),
            sync_retries: reg!(IntCounterVec::new(
                opts(
                    "sync_retries_total",
                    "Upstream calls retried, by the failure that caused the retry"
                ),
                &["reason"]
            )),
            http_connections_open: reg!(IntGauge::with_opts(opts(
                "http_connections_open",
                "HTTP connections open"
            ))),
            http_connections_max: reg!(IntGauge::with_opts(opts(
                "http_connections_max",
                "Connection cap in force (api.max_connections within the open-file limit)"
            ))),
            http_connections_shed: reg!(IntCounter::with_opts(opts(
                "http_connections_shed_total",
                "Connections closed at the cap to make room"
            ))),
            http_connections_refused: reg!(IntCounter::with_opts(opts(
                "http_connections_refused_total",
                "Requests and connections refused with 503 at the connection cap"
            ))),
            http_header_timeouts: reg!(IntCounter::with_opts(opts(
                "http_header_timeouts_total",
                "Connections closed for not sending a request head within api.header_timeout_seconds"
            ))),
            event_streams_open: reg!(IntGauge::with_opts(opts(
                "event_streams_open",
                "Event streams (/api/v1/events) open now"
            ))),
            events_sent: reg!(IntCounterVec::new(
                opts(
                    "events_sent_total",
                    "Events written to event streams, by type: block, reorg, resync"
                ),
                &["type"]
            )),
            event_subscribers_lagged: reg!(IntCounter::with_opts(opts(
                "event_subscribers_lagged_total",
                "Times a live event subscriber fell behind the tip and went on catching up from the store"
            ))),
            sync_push_subscribed: reg!(IntGauge::with_opts(opts(
                "sync_push_subscribed",
                "1 while the follower is subscribed to its upstream's event stream, else 0"
            ))),
            registry,
        };
        let build = reg_build_info(&m.registry);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.preset_known_labels();
        #[cfg(target_os = "linux")]
        if let Err(e) = m
            .registry
            .register(Box::new(process::ProcessMetrics::new()))
        {
            tracing::warn!(error = %e, "process metrics unavailable");
        }
        // Rotations and dropped lines of the log handlers, counted where lines are written.
        crate::telemetry::register_metrics(&m.registry);
        m
    }

    /// Creates the series whose label values are known in advance at zero, so `rate()` and
    /// `increase()` see the first event and dashboards show a flat line instead of "no data".
    fn preset_known_labels(&self) {
        for kind in ["block", "reorg", "resync"] {
            self.events_sent.with_label_values(&[kind]);
        }
        for source in SOURCES {
            self.appends.with_label_values(&[source]);
        }
        for code in VALIDATION_CODES {
            self.validation_failures.with_label_values(&[code]);
        }
        for direction in ["received", "transmitted"] {
            self.network_bytes.with_label_values(&[direction]);
        }
        for reason in AUTH_REASONS {
            self.auth_failures.with_label_values(&[reason]);
        }
        for code in SYNC_CODES {
            self.sync_errors.with_label_values(&[code]);
        }
        self.http_responses_truncated
            .with_label_values(&[RANGE_ROUTE]);
        for reason in ["timeout", "server_error", "unreachable"] {
            self.sync_retries.with_label_values(&[reason]);
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into a Vec cannot fail");
        out
    }

    /// Records a committed group (durations, counts, sizes).
    pub fn observe_commit(
        &self,
        records: &[BlockRecord],
        took: Duration,
        (api, sync): (usize, usize),
    ) {
        self.commit_duration.observe(took.as_secs_f64());
        if api > 0 {
            self.appends.with_label_values(&["api"]).inc_by(api as u64);
        }
        if sync > 0 {
            self.appends
                .with_label_values(&["sync"])
                .inc_by(sync as u64);
        }
        for r in records {
            self.block_size.observe(r.meta.block_size_bytes as f64);
            self.transactions_stored
                .add(i64::from(r.meta.transaction_count));
        }
        // The tip gauges are set by the ledger from the committed tip (`set_tip`), not here.
    }

    /// Records the tip (start-up, commits, rollbacks).
    pub fn set_tip(&self, height: u64, timestamp_micros: i64) {
        self.chain_height.set(height as i64);
        self.blocks_stored.set(height as i64 + 1);
        self.last_block_timestamp.set(timestamp_micros as f64 / 1e6);
    }

    /// Records a rollback.
    pub fn observe_rollback(&self, removed: usize, took: Duration) {
        self.rolled_back.inc_by(removed as u64);
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// Records validation failures found before a block reaches the ledger (malformed input).
    pub fn observe_failures(&self, failures: &[Failure]) {
        for f in failures {
            self.validation_failures.with_label_values(&[f.code]).inc();
        }
    }
}

fn reg_build_info(registry: &Registry) -> IntGaugeVec {
    let g = IntGaugeVec::new(opts("build_info", "Build information"), &["version"])
        .expect("static metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Route template of `GET /api/v1/blocks/range`, the truncation counter's preset label.
pub const RANGE_ROUTE: &str = "/api/v1/blocks/range";

impl Metrics {
    /// Exports the store's hot standbys (replay lag, whether each is up) and where its reads
    /// were answered, read from the store at every scrape. Nothing shows on an engine without
    /// standbys.
    pub fn watch_standbys(&self, store: std::sync::Arc<dyn crate::store::StoreProbe>) {
        let collector = StandbyCollector::new(store);
        self.registry
            .register(Box::new(collector))
            .expect("the standby metric names are unique");
    }
}

/// The standby figures, taken from the store when scraped (the store keeps them current: its
/// background check reads each standby's replay position every second).
struct StandbyCollector {
    store: std::sync::Arc<dyn crate::store::StoreProbe>,
    up: IntGaugeVec,
    lag_blocks: IntGaugeVec,
    lag_seconds: GaugeVec,
    reads: IntCounterVec,
    /// The store's counts already added to `reads` (standby, primary): a counter only grows.
    counted: std::sync::Mutex<(u64, u64)>,
}

impl StandbyCollector {
    fn new(store: std::sync::Arc<dyn crate::store::StoreProbe>) -> Self {
        let by_standby = |name: &str, help: &str| {
            IntGaugeVec::new(opts(name, help), &["standby"]).expect("static metric")
        };
        Self {
            store,
            up: by_standby(
                "postgres_standby_up",
                "1 while reads go to this hot standby, 0 while it is marked down",
            ),
            lag_blocks: by_standby(
                "postgres_standby_lag_blocks",
                "Blocks the known tip is ahead of what this hot standby has replayed",
            ),
            lag_seconds: GaugeVec::new(
                opts(
                    "postgres_standby_lag_seconds",
                    "Seconds this hot standby's replay is behind the primary's last commit",
                ),
                &["standby"],
            )
            .expect("static metric"),
            reads: IntCounterVec::new(
                opts(
                    "postgres_reads_total",
                    "Reads answered, by pool: a hot standby, or the primary (no standby up, or the standby could not answer yet)",
                ),
                &["pool"],
            )
            .expect("static metric"),
            counted: std::sync::Mutex::new((0, 0)),
        }
    }
}

impl prometheus::core::Collector for StandbyCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [
            self.up.desc(),
            self.lag_blocks.desc(),
            self.lag_seconds.desc(),
            self.reads.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some((standby, primary)) = self.store.reads_served() else {
            return Vec::new();
        };
        {
            let mut counted = self
                .counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.reads
                .with_label_values(&["standby"])
                .inc_by(standby.saturating_sub(counted.0));
            self.reads
                .with_label_values(&["primary"])
                .inc_by(primary.saturating_sub(counted.1));
            *counted = (counted.0.max(standby), counted.1.max(primary));
        }
        for s in self.store.standbys() {
            let label = s.index.to_string();
            self.up.with_label_values(&[&label]).set(i64::from(s.up));
            // A standby that is down has no lag to show: its series go away until it is back.
            match s.lag_blocks {
                Some(lag) => self
                    .lag_blocks
                    .with_label_values(&[&label])
                    .set(i64::try_from(lag).unwrap_or(i64::MAX)),
                None => {
                    let _ = self.lag_blocks.remove_label_values(&[&label]);
                }
            }
            match s.lag_seconds {
                Some(lag) => self.lag_seconds.with_label_values(&[&label]).set(lag),
                None => {
                    let _ = self.lag_seconds.remove_label_values(&[&label]);
                }
            }
        }
        [
            self.up.collect(),
            self.lag_blocks.collect(),
            self.lag_seconds.collect(),
            self.reads.collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    #[test]
    fn every_family_is_prefixed_documented_and_counters_end_in_total() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/api/v1/chain/height", "200"])
            .inc();
        let families = m.registry.gather();
        assert!(families.len() > 20, "{} families", families.len());
        for f in &families {
            let name = f.name();
            assert!(
                name.starts_with("block_manager_") || name.starts_with("process_"),
                "{name}"
            );
            assert!(!f.help().is_empty(), "{name} has no help");
            let is_counter = f.get_field_type() == MetricType::COUNTER;
            assert_eq!(is_counter, name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn known_label_values_start_at_zero() {
        let text = String::from_utf8(Metrics::new().render()).expect("utf-8");
        for line in [
            "block_manager_blocks_appended_total{source=\"api\"} 0",
            "block_manager_blocks_appended_total{source=\"sync\"} 0",
            "block_manager_validation_failures_total{code=\"VAL_003\"} 0",
            "block_manager_host_network_bytes_total{direction=\"received\"} 0",
            "block_manager_http_auth_failures_total{reason=\"invalid\"} 0",
            "block_manager_sync_errors_total{code=\"SYNC_002\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
        assert!(text.contains(&format!(
            "block_manager_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_have_the_standard_names_and_no_prefixed_copies() {
        let text = String::from_utf8(Metrics::new().render()).expect("utf-8");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "missing {name}");
            assert!(
                !text.contains(&format!("block_manager_{name}")),
                "copy of {name}"
            );
        }
    }
}
