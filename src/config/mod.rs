//! Typed configuration: one struct for every setting, its defaults, and validation.
//!
//! Loading (figment layers, `${VAR}` substitution, environment names) lives in `load`; this
//! file is the operator reference: every field carries a `///` that the README mirrors.

mod load;
mod subst;

pub use load::{ConfigError, ENV_KEYS, LoadOptions, Loaded, load, source_name};
pub use subst::{UnsetVar, expand, substitute_tree};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A secret value: never printed by `Debug`, and serialized redacted (for `config show`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret, when one is set (empty counts as unset).
    pub fn get(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// The whole effective configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Identity and binding of the service.
    pub service: ServiceConfig,
    /// Other Lucid services (accepted for compatibility; the store is embedded).
    pub dependencies: serde_json::Value,
    /// Where blocks are kept.
    pub storage: StorageConfig,
    /// Chain rules and genesis.
    pub chain: ChainConfig,
    /// Console logging level and format (handlers come from the logging file).
    pub logging: LoggingConfig,
    /// Follower mode.
    pub synchronization: SyncConfig,
    /// HTTP API limits.
    pub api: ApiConfig,
    /// Per-client rate limiting.
    pub rate_limits: RateLimitConfig,
    /// API keys.
    pub security: SecurityConfig,
    /// Metrics and host sampling.
    pub monitoring: MonitoringConfig,
    /// Cross-origin requests.
    pub cors: CorsConfig,
    /// `block-manager healthcheck` and health thresholds.
    pub healthcheck: HealthcheckConfig,
    /// Resilience policy, from the errors file.
    pub error_handling: ErrorHandling,
    /// Error code → message, from the errors file (defaults: spec §7).
    pub error_codes: BTreeMap<String, String>,
    /// Error code → severity, or severity → list of codes, from the errors file.
    pub severity: serde_json::Value,
    /// The logging file (Python dictConfig), nested here by the loader.
    pub logging_config: LoggingFile,
}

/// `service` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Service name reported by `/health`.
    pub name: String,
    /// Version string of the Lucid file (informational; `/health` reports the binary's).
    pub version: Option<String>,
    /// Address to bind (`BLOCK_MANAGER_HOST`): IPv4, IPv6 or a hostname.
    pub host: String,
    /// Port to bind (`BLOCK_MANAGER_PORT`); 0 picks a free port and logs it.
    pub port: u16,
    /// Advertised address other services use (`BLOCK_MANAGER_URL`); never bound.
    pub url: String,
    /// Deployment environment (`LUCID_ENV`).
    pub environment: String,
    /// Target platform label (`LUCID_PLATFORM`).
    pub platform: String,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "block-manager".into(),
            version: None,
            host: "0.0.0.0".into(),
            port: 8086,
            url: "http://block-manager:8086".into(),
            environment: "production".into(),
            platform: "arm64".into(),
            shutdown_grace_seconds: 10.0,
        }
    }
}

/// `storage` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Folder of the block store (`BLOCK_STORAGE_PATH`); relative to the working directory.
    pub blocks_path: String,
    /// Page cache of the store, in MiB (bounded: hosts are small).
    pub cache_size_mb: u64,
    /// Below this many free bytes on the data volume, health reports degraded.
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            blocks_path: "data/blocks".into(),
            cache_size_mb: 16,
            min_free_bytes: 100 * 1024 * 1024,
        }
    }
}

/// `chain` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainConfig {
    /// Network name recorded in the store and reported by `/chain/info`.
    pub network: String,
    /// Timestamp of the genesis block created on first start in standalone mode (else: now).
    pub genesis_timestamp: Option<String>,
    /// Most transactions one block may carry.
    pub max_transactions_per_block: usize,
    /// Largest stored block, in bytes of its canonical JSON.
    pub max_block_size_bytes: usize,
    /// How far in the future a block's timestamp may be.
    pub max_future_skew_seconds: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            network: "lucid_blocks".into(),
            genesis_timestamp: None,
            max_transactions_per_block: 1000,
            max_block_size_bytes: 1024 * 1024,
            max_future_skew_seconds: 300,
        }
    }
}

/// `logging` section of the main file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// Root level (`LOG_LEVEL`): TRACE, DEBUG, INFO, WARNING, ERROR.
    pub level: String,
    /// Console format when the logging file does not name one: standard, detailed or json.
    pub format: String,
    /// Name of the logging file, in the main file's folder.
    pub config_file: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format: "standard".into(),
            config_file: "block-manager-logging.yaml".into(),
        }
    }
}

/// `synchronization` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// Upstream engine or block-manager (`BLOCKCHAIN_ENGINE_URL`); set → follower mode.
    pub engine_url: Option<String>,
    /// Seconds between polls once caught up.
    pub poll_interval_seconds: f64,
    /// Blocks fetched per range request (1-1000).
    pub fetch_batch_size: u32,
    /// Upstream request timeout in seconds (`SYNC_TIMEOUT`).
    pub sync_timeout_seconds: f64,
    /// Deepest fork sync rolls back; deeper stops sync in state `diverged`.
    pub max_reorg_depth: u64,
    /// Key sent upstream as `X-API-Key` (`BLOCKCHAIN_ENGINE_API_KEY`).
    pub engine_api_key: Secret,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            engine_url: None,
            poll_interval_seconds: 5.0,
            fetch_batch_size: 100,
            sync_timeout_seconds: 30.0,
            max_reorg_depth: 100,
            engine_api_key: Secret::default(),
        }
    }
}

/// `api` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a request may take before it answers 408.
    pub request_timeout_seconds: f64,
    /// Seconds a client has to send a complete request head (request line and headers) on a
    /// new connection, or once it starts the next request on a kept-alive one; past it the
    /// connection is closed (slow or half-sent requests never hold a connection for long).
    pub header_timeout_seconds: f64,
    /// Seconds a kept-alive connection may sit between requests before it is closed; also how
    /// long a client may read nothing of its answer before the connection is closed.
    pub idle_timeout_seconds: f64,
    /// Connections served at once. Never more than the process's open-file limit minus a
    /// reserve for the store, log files and the upstream client (the soft limit is raised to
    /// the hard one at start). At the cap the oldest connections that have not sent a complete
    /// request head are closed to make room; when every connection is busy with a request,
    /// new requests answer 503 SRV_003 with Retry-After, and `/health*` is still served.
    pub max_connections: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_seconds: 30.0,
            header_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            max_connections: 1024,
        }
    }
}

/// `rate_limits` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Off → no limit.
    pub enabled: bool,
    /// Requests one client (IP) may make per window.
    pub requests: u32,
    /// Window length in seconds.
    pub window_seconds: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests: 500,
            window_seconds: 60,
        }
    }
}

/// `security` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Write key (`BLOCK_MANAGER_API_KEY`); unset → writes answer 403.
    pub api_key: Secret,
    /// Read key (`BLOCK_MANAGER_READ_API_KEY`); the write key also reads.
    pub read_api_key: Secret,
    /// Require a key for reads too.
    pub require_read_auth: bool,
}

/// `monitoring` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringConfig {
    /// Collect metrics.
    pub metrics_enabled: bool,
    /// Serve `/metrics` (off → 404).
    pub expose_metrics: bool,
    /// Seconds between host samples (CPU, memory, disk, network).
    pub system_sample_interval_seconds: f64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            expose_metrics: true,
            system_sample_interval_seconds: 5.0,
        }
    }
}

/// `cors` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser; empty → CORS off. `*` allows any.
    pub allowed_origins: Vec<String>,
}

/// `healthcheck` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthcheckConfig {
    /// Seconds `block-manager healthcheck` waits for an answer.
    pub timeout_seconds: f64,
}

impl Default for HealthcheckConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 5.0,
        }
    }
}

/// `error_handling` (errors file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorHandling {
    /// Retries of upstream calls.
    pub retry: RetryPolicy,
    /// Upstream timeouts and circuit breaker.
    pub blockchain_engine: EnginePolicy,
    /// Quarantine of rejected blocks.
    pub validation: ValidationPolicy,
    /// Lucid sections we accept but do not use.
    pub mongodb: serde_json::Value,
    /// Accepted for compatibility.
    pub block_storage: serde_json::Value,
    /// Accepted for compatibility.
    pub synchronization: serde_json::Value,
    /// Accepted for compatibility.
    pub recovery: serde_json::Value,
    /// Accepted for compatibility.
    pub reporting: serde_json::Value,
    /// Accepted for compatibility.
    pub degradation: serde_json::Value,
}

/// `error_handling.retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts per upstream call, first one included.
    pub max_attempts: u32,
    /// Delay before the first retry, seconds.
    pub initial_delay_seconds: f64,
    /// Longest delay between retries, seconds.
    pub max_delay_seconds: f64,
    /// Growth of the delay per retry.
    pub exponential_base: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay_seconds: 0.5,
            max_delay_seconds: 30.0,
            exponential_base: 2.0,
        }
    }
}

/// `error_handling.blockchain_engine`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EnginePolicy {
    /// Upstream request timeout, seconds (`SYNC_TIMEOUT` sets it too).
    pub request_timeout_seconds: f64,
    /// Circuit breaker.
    pub circuit_breaker: CircuitPolicy,
}

impl Default for EnginePolicy {
    fn default() -> Self {
        Self {
            request_timeout_seconds: 30.0,
            circuit_breaker: CircuitPolicy::default(),
        }
    }
}

/// `error_handling.blockchain_engine.circuit_breaker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitPolicy {
    /// Consecutive failed rounds that open the circuit.
    pub failure_threshold: u32,
    /// Seconds the circuit stays open before a trial call.
    pub recovery_timeout_seconds: f64,
    /// Trial calls allowed while half-open.
    pub half_open_max_calls: u32,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout_seconds: 30.0,
            half_open_max_calls: 1,
        }
    }
}

/// `error_handling.validation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationPolicy {
    /// Folder for rejected blocks (JSON with reason and time).
    pub quarantine_path: String,
    /// Most files kept in quarantine; the oldest go first.
    pub quarantine_max_files: usize,
    /// Most bytes kept in quarantine.
    pub quarantine_max_bytes: u64,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            quarantine_path: "data/quarantine".into(),
            quarantine_max_files: 1000,
            quarantine_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The logging file: Python's dictConfig shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingFile {
    /// Named formatters (`format`, optional `class`).
    pub formatters: BTreeMap<String, Formatter>,
    /// Named handlers.
    pub handlers: BTreeMap<String, Handler>,
    /// Per-module levels (`block_manager.sync: {level: DEBUG}`).
    pub loggers: BTreeMap<String, LoggerConfig>,
    /// The root logger.
    pub root: Option<LoggerConfig>,
}

/// A dictConfig formatter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Formatter {
    /// Python format string (only its flavour matters here).
    pub format: Option<String>,
    /// Formatter class; one naming json selects JSON lines.
    #[serde(rename = "class", alias = "()")]
    pub class: Option<String>,
}

/// A dictConfig handler.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Handler {
    /// Handler class (StreamHandler, RotatingFileHandler, ...).
    #[serde(rename = "class")]
    pub class: Option<String>,
    /// Least level this handler writes.
    pub level: Option<String>,
    /// Formatter name.
    pub formatter: Option<String>,
    /// File to write (relative to the working directory); none → console.
    pub filename: Option<String>,
    /// Rotate when the file reaches this size.
    #[serde(rename = "maxBytes")]
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    #[serde(rename = "backupCount")]
    pub backup_count: Option<usize>,
}

/// A dictConfig logger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerConfig {
    /// Level of this module and below.
    pub level: Option<String>,
    /// Handlers (informational: every handler receives every module's events).
    pub handlers: Vec<String>,
}

impl Config {
    /// Follower mode: an upstream URL is configured.
    pub fn upstream(&self) -> Option<&str> {
        self.synchronization
            .engine_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// Absolute-or-relative path of the store file.
    pub fn store_file(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.storage.blocks_path).join("blocks.redb")
    }

    /// Upstream request timeout: the shorter of `SYNC_TIMEOUT` and the errors file's value.
    pub fn upstream_timeout(&self) -> std::time::Duration {
        let secs = self.synchronization.sync_timeout_seconds.min(
            self.error_handling
                .blockchain_engine
                .request_timeout_seconds,
        );
        std::time::Duration::from_secs_f64(secs.max(0.001))
    }
}
