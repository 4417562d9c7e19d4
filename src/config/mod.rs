//! Typed configuration: one struct for every setting, its defaults, and validation.
//!
//! Loading (figment layers, `${VAR}` substitution, environment names) lives in `load`; this
//! file is the operator reference: every field carries a `///` that the README mirrors.

mod cidr;
pub mod database_url;
mod level;
mod load;
mod lucid;
pub mod redact;
mod storage;
mod subst;

pub use cidr::{Cidr, parse_all as parse_cidrs};
pub use database_url::{DatabaseUrl, Tls};
pub use level::parse_level;
pub use load::source_of;
pub use load::{ConfigError, ENV_KEYS, LoadOptions, Loaded, load, source_name};
pub use lucid::lucid_name;
pub use subst::{UnsetVar, expand, substitute_tree};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The longest duration any setting may ask for: one year. Longer is a typo or a unit
/// mix-up, and it keeps every conversion into a `Duration` or a timer deadline in range.
pub const MAX_SECONDS: f64 = 86_400.0 * 365.0;

/// `secs` as a `Duration`, never panicking: negative or NaN is zero, and anything past
/// [`MAX_SECONDS`] (infinity included) is `MAX_SECONDS`. Validation refuses such values at
/// start-up; this keeps code that converts them safe regardless.
pub fn duration(secs: f64) -> Duration {
    let secs = if secs.is_nan() {
        0.0
    } else {
        secs.clamp(0.0, MAX_SECONDS)
    };
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
}

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
    /// Other Lucid services, passed through: `blockchain_engine_url` and `healthcheck.path` /
    /// `.timeout_seconds` are read (as `synchronization.engine_url` and `healthcheck.*`); the
    /// rest is accepted (MongoDB and Redis URLs: one info line each, the store is embedded).
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
    /// This replica's name (`BLOCK_MANAGER_INSTANCE_ID`), shown in `/health`, the start-up log
    /// and, for the sync leader, other replicas' `/sync/status`; unset = the host name (in a
    /// container, its id: distinct per replica).
    pub instance_id: Option<String>,
}

impl ServiceConfig {
    /// The instance id in force: the configured one, else the host name.
    pub fn instance(&self) -> String {
        match self.instance_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => host_name(),
        }
    }
}

/// The machine's host name, or `block-manager` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "block-manager".to_string())
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
            instance_id: None,
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
    /// Which engine keeps the chain (`BLOCK_STORAGE_BACKEND`): `embedded` or `postgres`; unset =
    /// postgres when `storage.postgres.url` is set, else embedded.
    #[serde(deserialize_with = "empty_as_none")]
    pub backend: Option<StorageBackend>,
    /// The PostgreSQL engine's settings.
    pub postgres: PostgresConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            blocks_path: "data/blocks".into(),
            cache_size_mb: 16,
            min_free_bytes: 100 * 1024 * 1024,
            backend: None,
            postgres: PostgresConfig::default(),
        }
    }
}

impl StorageConfig {
    /// The engine in force (after validation: a conflict was refused at load).
    pub fn engine(&self) -> StorageBackend {
        match self.backend {
            Some(engine) => engine,
            None if self
                .postgres
                .url
                .as_deref()
                .is_some_and(|u| !u.trim().is_empty()) =>
            {
                StorageBackend::Postgres
            }
            None => StorageBackend::Embedded,
        }
    }
}

/// The engines that can keep the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A redb file and body log under `storage.blocks_path`, owned by one process.
    Embedded,
    /// PostgreSQL 15 or newer, shared by any number of block-manager processes.
    Postgres,
}

/// `storage.postgres` section: the PostgreSQL engine.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// The primary (`BLOCK_MANAGER_DATABASE_URL`, never `DATABASE_URL`, which is MongoDB's in
    /// Lucid's env files): `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...`. Setting
    /// it selects the postgres engine. `sslmode`: `disable` (cleartext), `require` or
    /// `verify-full` (TLS with chain and host name verified); unset → `disable` for a
    /// loopback host, else `require`; `prefer`, `allow`, `verify-ca` are refused.
    /// `sslrootcert=PATH` trusts a private CA; `application_name` is passed on.
    #[serde(deserialize_with = "empty_as_none")]
    pub url: Option<String>,
    /// Hot standbys that serve reads (`BLOCK_MANAGER_DATABASE_READ_URLS`, a comma-separated
    /// string there; a list in a file), each a URL as `url`. Needs `url`.
    #[serde(deserialize_with = "list_or_csv")]
    pub read_urls: Vec<String>,
    /// Connections this process keeps to the primary (1-256).
    pub pool_size: usize,
    /// Seconds to establish a connection; past it the store is unreachable (writes answer
    /// 503 `ST_001`, health is unhealthy) rather than hanging.
    pub connect_timeout_seconds: f64,
    /// Seconds one SQL statement may run before the server cancels it (0.001-2147483).
    pub statement_timeout_seconds: f64,
    /// Seconds a statement may wait for a row or table lock, the chain's write lock included,
    /// before it gives up (0.001-2147483).
    pub lock_timeout_seconds: f64,
    /// Milliseconds a read at or below the known tip waits for a standby to replay it before
    /// it is read from the primary (0-60000; 0 goes to the primary at once).
    pub replay_wait_ms: u64,
    /// MiB of the in-process cache of immutable block bodies (0-4096; 0 turns it off).
    pub cache_mb: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            read_urls: Vec::new(),
            pool_size: 8,
            connect_timeout_seconds: 5.0,
            statement_timeout_seconds: 10.0,
            lock_timeout_seconds: 2.0,
            replay_wait_ms: 20,
            cache_mb: 64,
        }
    }
}

// By hand: the URLs may carry passwords, and a derived `Debug` would print them.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(database_url::shown))
            .field(
                "read_urls",
                &self
                    .read_urls
                    .iter()
                    .map(|u| database_url::shown(u))
                    .collect::<Vec<_>>(),
            )
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("statement_timeout_seconds", &self.statement_timeout_seconds)
            .field("lock_timeout_seconds", &self.lock_timeout_seconds)
            .field("replay_wait_ms", &self.replay_wait_ms)
            .field("cache_mb", &self.cache_mb)
            .finish()
    }
}

/// An optional value where empty text (an unset `${VAR}`) counts as unset.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
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
    /// Root level (`LOG_LEVEL`): TRACE, DEBUG, INFO, WARNING, ERROR. The logging file's
    /// `root.level` wins over this one; `LOG_LEVEL` wins over both, and over the file's
    /// `loggers.*.level` too.
    pub level: String,
    /// Formatter of handlers that name none: standard, detailed, json, or a formatter of the
    /// logging file. `LOG_FORMAT` (env) sets the console's formatter over any file.
    pub format: String,
    /// Name of the logging file, in the main file's folder.
    pub config_file: String,
    /// Folder of log files whose `filename` is relative (itself relative to the working
    /// directory); unset → relative names are taken from the working directory.
    pub directory: Option<String>,
    /// Size rotation of the log files, where a handler gives no `maxBytes` / `backupCount`.
    pub rotate: RotateConfig,
    /// Whether file handlers are opened at all. `false` logs to the console only, for replicas
    /// that keep nothing on local disk (their log collector reads the console).
    pub files: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format: "standard".into(),
            config_file: "block-manager-logging.yaml".into(),
            directory: None,
            rotate: RotateConfig::default(),
            files: true,
        }
    }
}

/// `logging.rotate` of the main file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RotateConfig {
    /// Rotate log files by size; false → files are never rotated (and grow without bound),
    /// whatever the handlers' `maxBytes` say.
    pub enabled: bool,
    /// Size at which a file is rotated, in MiB (fractions allowed), where the handler gives no
    /// `maxBytes`.
    pub max_size_mb: f64,
    /// Rotated files kept, where the handler gives no `backupCount`.
    pub backups: usize,
}

impl Default for RotateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size_mb: 10.0,
            backups: 5,
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
    /// Follow the upstream when `engine_url` is set (`BLOCK_MANAGER__SYNCHRONIZATION__ENABLED`,
    /// default true); `false` runs standalone even with an engine URL, for hosts where
    /// `BLOCKCHAIN_ENGINE_URL` comes from an env file other services share.
    pub enabled: bool,
    /// Bytes of upstream replies all fetches in flight may hold together (default 32 MiB,
    /// 64 KiB-4 GiB). A reply over it is refused with SYNC_003 without being read whole.
    pub max_inflight_bytes: u64,
    /// Seconds an empty follower may wait for its first valid block before health turns
    /// `unhealthy` (503), naming the upstream and the first failure (default 120).
    pub startup_grace_seconds: f64,
    /// Most fork rollbacks within `reorg_window_seconds` (≥ 1). One more fork within the
    /// window is not rolled back: sync goes `stalled` (health degraded) and backs off until
    /// the window has room again or the upstream returns to our chain.
    pub max_reorgs_per_window: u32,
    /// Length in seconds of the window `max_reorgs_per_window` counts rollbacks over
    /// (0 turns damping off).
    pub reorg_window_seconds: f64,
    /// Seconds between safety-net polls while subscribed to the upstream's event stream
    /// (`/api/v1/events`), which starts a round as soon as the upstream announces a block.
    /// Without the stream the follower polls every `poll_interval_seconds`.
    pub push_fallback_poll_seconds: f64,
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
            enabled: true,
            max_inflight_bytes: 32 * 1024 * 1024,
            startup_grace_seconds: 120.0,
            max_reorgs_per_window: 5,
            reorg_window_seconds: 600.0,
            push_fallback_poll_seconds: 30.0,
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
    /// Peers (CIDRs such as `10.0.0.0/8` or `172.18.0.1/32`; a bare address is one host) whose
    /// `X-Forwarded-For` / `Forwarded: for=` names the client: the right-most address there
    /// that is not itself a trusted proxy. From any other peer the header is ignored. Empty
    /// (the default): the peer is the client. A list, or one comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub trusted_proxies: Vec<String>,
    /// Most bytes of block bodies one response carries (`/blocks/range`, the event replay):
    /// past it the page ends early, with at least one block, and the client asks again from
    /// the next height. Must be at least `chain.max_block_size_bytes` + 64 KiB.
    pub max_response_bytes: usize,
    /// Lucid's `api.base_path`, checked: it must be `/api/v1`, the prefix we serve.
    pub base_path: String,
    /// Lucid's `api.blocks.*` route table, checked against the routes we serve.
    pub blocks: BlockRoutes,
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
    /// Most event streams (`/api/v1/events`) open at once in this process; past it a new one
    /// answers 503 `SRV_003` with `Retry-After`. Each stream also holds a connection.
    pub max_event_streams: usize,
    /// Seconds between keep-alive comments on an idle event stream, so proxies and clients
    /// can tell a quiet chain from a dead connection.
    pub event_keepalive_seconds: f64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_seconds: 30.0,
            trusted_proxies: Vec::new(),
            max_response_bytes: 8 * 1024 * 1024,
            base_path: "/api/v1".into(),
            blocks: BlockRoutes::default(),
            header_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            max_connections: 1024,
            max_event_streams: 256,
            event_keepalive_seconds: 15.0,
        }
    }
}

/// `api.blocks`: where Lucid's file says the block routes are (below `base_path`). Checked at
/// start-up: clients are written against these, so a file naming other paths is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockRoutes {
    /// The block list (`/blocks/`).
    pub list: String,
    /// One block by hash or height (`/blocks/{block_id}`).
    pub by_id: String,
    /// One block by height (`/blocks/height/{height}`).
    pub by_height: String,
    /// The tip block (`/blocks/latest`).
    pub latest: String,
    /// Validation without storing (`/blocks/validate`).
    pub validate: String,
}

impl Default for BlockRoutes {
    fn default() -> Self {
        Self {
            list: "/blocks/".into(),
            by_id: "/blocks/{block_id}".into(),
            by_height: "/blocks/height/{height}".into(),
            latest: "/blocks/latest".into(),
            validate: "/blocks/validate".into(),
        }
    }
}

/// A list of strings, also written as one comma-separated string (handy in an env file).
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(v) => v,
        Form::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    })
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
    /// Requests one API key may make per window; a request with a valid key counts against
    /// its key, not its address. 0 (the default): keyed requests are not limited, so a
    /// follower holding the engine key is never throttled by its upstream.
    pub per_key_requests: u32,
    /// Most clients (addresses, IPv6 /64s, keys) the limiter tracks at once; past it the
    /// least recently seen is forgotten. Bounds the limiter's memory (about 100 bytes each).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests: 500,
            window_seconds: 60,
            per_key_requests: 0,
            max_clients: 65_536,
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
    /// User the process is meant to run as (name or uid; Lucid's image uses 65532). Checked
    /// softly: running as another user warns once at start-up.
    #[serde(deserialize_with = "lucid::name_or_id")]
    pub user: Option<String>,
    /// Group the process is meant to run as (name or gid); checked softly, as `user`.
    #[serde(deserialize_with = "lucid::name_or_id")]
    pub group: Option<String>,
}

/// `monitoring` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringConfig {
    /// Collect and serve metrics: off → `/metrics` and `/api/v1/monitoring/system` answer
    /// 404 `MON_001` and the host is not sampled.
    pub metrics_enabled: bool,
    /// Seconds between host samples (CPU, memory, disk, network).
    pub system_sample_interval_seconds: f64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
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
    /// Seconds `block-manager healthcheck` waits for an answer (Lucid's
    /// `dependencies.healthcheck.timeout_seconds` sets it too).
    pub timeout_seconds: f64,
    /// Path `block-manager healthcheck` probes; exit 0 only on 200 (Lucid's
    /// `dependencies.healthcheck.path` sets it too).
    pub path: String,
}

impl Default for HealthcheckConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 5.0,
            path: "/health".into(),
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
    /// Spacing of failed sync rounds and logging of the blocks they refuse.
    pub synchronization: SyncErrorPolicy,
    /// Accepted for compatibility.
    pub recovery: serde_json::Value,
    /// Accepted for compatibility.
    pub reporting: serde_json::Value,
    /// Accepted for compatibility.
    pub degradation: serde_json::Value,
}

/// `error_handling.retry` (Lucid's names; our earlier `max_attempts`, `initial_delay_seconds`,
/// `max_delay_seconds`, `exponential_base` are accepted as aliases).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Off → every upstream call is tried once.
    pub enabled: bool,
    /// Retries after the first try (0 = none; attempts = `max_retries` + 1).
    /// `blockchain_engine.max_retries` overrides it for the upstream.
    pub max_retries: u32,
    /// Wait before the first retry, seconds.
    pub retry_delay_seconds: f64,
    /// On → the wait grows by `backoff_multiplier` per retry; off → it stays constant.
    pub exponential_backoff: bool,
    /// Growth of the wait per retry.
    pub backoff_multiplier: f64,
    /// Longest wait between retries, seconds.
    pub max_backoff_seconds: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_retries: 2,
            retry_delay_seconds: 0.5,
            exponential_backoff: true,
            backoff_multiplier: 2.0,
            max_backoff_seconds: 30.0,
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
    /// Retry an upstream call that timed out.
    pub retry_on_timeout: bool,
    /// Retry an upstream call answered with a 5xx (or 429).
    pub retry_on_5xx: bool,
    /// Retries of an upstream call after the first try; unset → `retry.max_retries`.
    pub max_retries: Option<u32>,
}

impl Default for EnginePolicy {
    fn default() -> Self {
        Self {
            request_timeout_seconds: 30.0,
            circuit_breaker: CircuitPolicy::default(),
            retry_on_timeout: true,
            retry_on_5xx: true,
            max_retries: None,
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
    /// Off → the circuit never opens: failed rounds only back off.
    pub enabled: bool,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout_seconds: 30.0,
            half_open_max_calls: 1,
            enabled: true,
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
    /// Off → blocks rejected as invalid (API submits, upstream blocks) are not written to the
    /// quarantine folder; fork orphans still are.
    pub quarantine_invalid_blocks: bool,
    /// Log each rejected block at WARNING with its height, hash and reason.
    pub log_validation_errors: bool,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            quarantine_path: "data/quarantine".into(),
            quarantine_max_files: 1000,
            quarantine_max_bytes: 64 * 1024 * 1024,
            quarantine_invalid_blocks: true,
            log_validation_errors: true,
        }
    }
}

/// `error_handling.synchronization` (errors file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncErrorPolicy {
    /// First wait after a failed sync round, seconds (then growing as `retry` says); unset →
    /// `retry.retry_delay_seconds`.
    pub sync_backoff_seconds: Option<f64>,
    /// Log each invalid upstream block at WARNING with its height, hash and reason (also when
    /// `validation.log_validation_errors` is off).
    pub log_failed_blocks: bool,
}

impl Default for SyncErrorPolicy {
    fn default() -> Self {
        Self {
            sync_backoff_seconds: None,
            log_failed_blocks: true,
        }
    }
}

/// The logging file: Python's dictConfig shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingFile {
    /// Named formatters (`format`, `datefmt`, optional `class`).
    pub formatters: BTreeMap<String, Formatter>,
    /// Named handlers.
    pub handlers: BTreeMap<String, Handler>,
    /// Lucid logger names (`blockchain.api`, `blockchain.manager`, `blockchain.core`, `httpx`)
    /// with their level, handlers and propagation.
    pub loggers: BTreeMap<String, LoggerConfig>,
    /// The root logger.
    pub root: Option<LoggerConfig>,
    /// dictConfig schema version; only 1 exists (anything else stops start-up).
    pub version: Option<i64>,
    /// Accepted for compatibility: there are no loggers configured before this file.
    pub disable_existing_loggers: Option<bool>,
}

/// A dictConfig formatter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Formatter {
    /// Python %-style format string (`%(asctime)s - %(name)s - %(levelname)s - %(message)s`).
    pub format: Option<String>,
    /// strftime format of `%(asctime)s`; unset → `2024-01-01 12:00:00,123`.
    pub datefmt: Option<String>,
    /// Formatter class; one naming json selects JSON lines.
    #[serde(rename = "class", alias = "()")]
    pub class: Option<String>,
}

/// A dictConfig handler.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Handler {
    /// Handler class: `logging.StreamHandler` or `logging.handlers.RotatingFileHandler`
    /// (another class is warned about and skipped).
    #[serde(rename = "class")]
    pub class: Option<String>,
    /// Least level this handler writes.
    pub level: Option<String>,
    /// Formatter name.
    pub formatter: Option<String>,
    /// File to write (relative → under `logging.directory`); none → console.
    pub filename: Option<String>,
    /// Rotate when the file would pass this size (0 → never); unset → `logging.rotate`.
    #[serde(rename = "maxBytes")]
    pub max_bytes: Option<u64>,
    /// Rotated files kept; unset → `logging.rotate.backups`.
    #[serde(rename = "backupCount")]
    pub backup_count: Option<usize>,
    /// Console stream: `ext://sys.stdout` (the default) or `ext://sys.stderr`.
    pub stream: Option<String>,
    /// Text encoding; lines are always written as UTF-8 (another value is warned about).
    pub encoding: Option<String>,
}

/// A dictConfig logger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerConfig {
    /// Level of this logger and its children; unset → the parent's.
    pub level: Option<String>,
    /// Handlers this logger writes to (the root's: every defined handler when it names none).
    pub handlers: Vec<String>,
    /// Also hand records to the parent's handlers (default true, as in Python).
    pub propagate: Option<bool>,
}

impl Config {
    /// Follower mode: an upstream URL is configured and `synchronization.enabled` is not
    /// `false`.
    pub fn upstream(&self) -> Option<&str> {
        if !self.synchronization.enabled {
            return None;
        }
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
        duration(secs).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_in_force_follows_the_backend_else_the_url() {
        let mut s = StorageConfig::default();
        assert_eq!(s.engine(), StorageBackend::Embedded);
        s.postgres.url = Some("  ".into());
        assert_eq!(s.engine(), StorageBackend::Embedded, "blank is unset");
        s.postgres.url = Some("postgres://bm@127.0.0.1/chain".into());
        assert_eq!(s.engine(), StorageBackend::Postgres);
        s.backend = Some(StorageBackend::Embedded);
        assert_eq!(
            s.engine(),
            StorageBackend::Embedded,
            "an explicit backend wins"
        );
        s.backend = Some(StorageBackend::Postgres);
        s.postgres.url = None;
        assert_eq!(s.engine(), StorageBackend::Postgres);
    }

    #[test]
    fn postgres_settings_never_debug_print_a_password() {
        let p = PostgresConfig {
            url: Some("postgres://bm:Hunter2@db.example/chain".into()),
            read_urls: vec!["postgres://bm:Hunter3/x@standby/chain".into()],
            ..PostgresConfig::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("Hunter"), "{shown}");
        assert!(
            shown.contains("db.example") && shown.contains("pool_size: 8"),
            "{shown}"
        );
    }
}
