//! Figment layers: built-in defaults → main YAML/JSON file → errors file → logging file →
//! environment → command-line flags; and the one-line errors that stop start-up.

use super::subst::{UnsetVar, retype, substitute_tree};
use super::{Config, MAX_SECONDS, lucid};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde_json::Value;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

/// Main file names tried, in order, in `config/` under the working directory.
const DEFAULT_MAIN: [&str; 2] = [
    "config/block-manager-config.yaml",
    "config/block-manager-config.json",
];
const ERRORS_FILE: &str = "block-manager-errors.yaml";
/// Keys that must not come out empty (an unset `${VAR}` there is an error, not a default).
const REQUIRED: [&str; 3] = ["service.host", "service.port", "storage.blocks_path"];

/// Environment variables with fixed names → key paths. Later entries win over
/// `BLOCK_MANAGER__SECTION__KEY`, which is read first.
pub const ENV_KEYS: [(&str, &[&str]); 16] = [
    ("BLOCK_MANAGER_HOST", &["service.host"]),
    ("BLOCK_MANAGER_PORT", &["service.port"]),
    ("BLOCK_MANAGER_URL", &["service.url"]),
    ("BLOCK_STORAGE_PATH", &["storage.blocks_path"]),
    ("BLOCKCHAIN_ENGINE_URL", &["synchronization.engine_url"]),
    (
        "SYNC_TIMEOUT",
        &[
            "synchronization.sync_timeout_seconds",
            "error_handling.blockchain_engine.request_timeout_seconds",
        ],
    ),
    ("LUCID_ENV", &["service.environment"]),
    ("LUCID_PLATFORM", &["service.platform"]),
    ("LOG_LEVEL", &["logging.level"]),
    ("BLOCK_MANAGER_API_KEY", &["security.api_key"]),
    ("BLOCK_MANAGER_READ_API_KEY", &["security.read_api_key"]),
    (
        "BLOCKCHAIN_ENGINE_API_KEY",
        &["synchronization.engine_api_key"],
    ),
    ("BLOCK_STORAGE_BACKEND", &["storage.backend"]),
    ("BLOCK_MANAGER_INSTANCE_ID", &["service.instance_id"]),
    // Not `DATABASE_URL`: in Lucid's env files that is MongoDB's.
    ("BLOCK_MANAGER_DATABASE_URL", &["storage.postgres.url"]),
    (
        "BLOCK_MANAGER_DATABASE_READ_URLS",
        &["storage.postgres.read_urls"],
    ),
];

/// What the command line adds on top of files and environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config PATH` (else `BLOCK_MANAGER_CONFIG`, else `config/block-manager-config.yaml|json`).
    pub config_path: Option<PathBuf>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
}

/// A loaded, validated configuration with what start-up should say about it.
#[derive(Debug)]
pub struct Loaded {
    /// The effective settings.
    pub config: Config,
    /// The merged layers, kept to tell where each value came from.
    pub figment: Figment,
    /// Files read, in layer order.
    pub files: Vec<PathBuf>,
    /// Lines to log once at warn level (unknown keys of our own sections).
    pub warnings: Vec<String>,
    /// Lines to log once at info level (ignored variables).
    pub notices: Vec<String>,
}

/// A configuration problem: one line naming the key, its source and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Loads and validates the configuration from files, the process environment and `opts`.
pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    let defaults = serde_json::to_value(Config::default())
        .map_err(|e| ConfigError(format!("built-in defaults: {e}")))?;
    let mut figment = Figment::from(Layer {
        name: "default".into(),
        source: None,
        value: defaults,
        unset: Vec::new(),
    });
    let mut files = Vec::new();
    let mut unset: Vec<(UnsetVar, String)> = Vec::new();

    let main = main_file(opts)?;
    if let Some(path) = &main {
        let layer = Layer::from_file(path, None, &env)?;
        unset.extend(layer.unset.iter().cloned().map(|u| (u, layer.name.clone())));
        figment = figment.merge(layer);
        files.push(path.clone());
    }
    let folder = main
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("config"));
    let logging_name = figment
        .extract_inner::<String>("logging.config_file")
        .unwrap_or_else(|_| "block-manager-logging.yaml".into());
    for (name, nest) in [
        (ERRORS_FILE, None),
        (logging_name.as_str(), Some("logging_config")),
    ] {
        let path = folder.join(name);
        if path.is_file() {
            let layer = Layer::from_file(&path, nest, &env)?;
            unset.extend(layer.unset.iter().cloned().map(|u| (u, layer.name.clone())));
            figment = figment.merge(layer);
            files.push(path);
        }
    }
    for layer in env_layers(&env) {
        figment = figment.merge(layer);
    }
    if let Some(host) = &opts.host {
        figment = figment.merge(Layer::value(
            "--host flag",
            "service.host",
            Value::String(host.clone()),
        ));
    }
    if let Some(port) = opts.port {
        figment = figment.merge(Layer::value(
            "--port flag",
            "service.port",
            Value::from(port),
        ));
    }
    let (figment, mut warnings) = lucid::resolve_aliases(figment)?;

    // An unset `${VAR}` in a required key is an error only if that file's value is what won.
    for (u, source) in &unset {
        if REQUIRED.contains(&u.key.as_str()) && source_name(&figment, &u.key) == *source {
            return Err(ConfigError(format!(
                "missing {}: variable {} is unset in {source} and the key has no default there",
                u.key, u.var
            )));
        }
    }
    let config: Config = figment.extract().map_err(|e| describe(&figment, e))?;
    validate(&config, &figment)?;

    let mut notices = Vec::new();
    for var in ["MONGODB_URL", "REDIS_URL"] {
        if env(var).is_some() {
            notices.push(format!(
                "{var} is set and ignored: block-manager keeps its blocks in its own store (embedded, or PostgreSQL through BLOCK_MANAGER_DATABASE_URL)"
            ));
        }
    }
    if env("DATABASE_URL").is_some() {
        notices.push(
            "DATABASE_URL is set and ignored: in Lucid's env files it is MongoDB's; the PostgreSQL engine reads BLOCK_MANAGER_DATABASE_URL"
                .into(),
        );
    }
    let (unused, unused_notices) = lucid::scan(&figment);
    warnings.extend(unused);
    warnings.extend(lucid::check_identity(&config, &figment));
    warnings.extend(super::storage::cleartext_warnings(&config, &figment));
    notices.extend(unused_notices);
    Ok(Loaded {
        config,
        figment,
        files,
        warnings,
        notices,
    })
}

fn main_file(opts: &LoadOptions) -> Result<Option<PathBuf>, ConfigError> {
    let named = match &opts.config_path {
        Some(path) => Some(("--config", path.clone())),
        None => std::env::var_os("BLOCK_MANAGER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(|v| ("BLOCK_MANAGER_CONFIG", PathBuf::from(v))),
    };
    match named {
        Some((_, path)) if path.is_file() => Ok(Some(path)),
        Some((source, path)) => Err(ConfigError(format!(
            "invalid {source} '{}': no such file",
            path.display()
        ))),
        None => Ok(DEFAULT_MAIN.iter().map(PathBuf::from).find(|p| p.is_file())),
    }
}

/// One parsed source of settings, with the name errors and `config show` use for it.
pub(super) struct Layer {
    name: String,
    source: Option<PathBuf>,
    value: Value,
    unset: Vec<UnsetVar>,
}

impl Layer {
    fn from_file(
        path: &Path,
        nest: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let mut value: Value = if is_json {
            serde_json::from_str(&text).map_err(|e| {
                ConfigError(format!(
                    "invalid JSON in {} at line {}, column {}: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                ))
            })?
        } else {
            yaml_serde::from_str(&text).map_err(|e| match e.location() {
                Some(at) => ConfigError(format!(
                    "invalid YAML in {} at line {}, column {}: {}",
                    path.display(),
                    at.line(),
                    at.column(),
                    first_clause(&e.to_string())
                )),
                None => ConfigError(format!("invalid YAML in {}: {e}", path.display())),
            })?
        };
        if value.is_null() {
            value = Value::Object(Default::default());
        }
        if !value.is_object() {
            return Err(ConfigError(format!(
                "invalid config file {}: the top level must be a mapping",
                path.display()
            )));
        }
        let unset = substitute_tree(&mut value, env, &|path| {
            let full = match nest {
                Some(n) => format!("{n}.{path}"),
                None => path.to_string(),
            };
            is_text_key(&full)
        });
        if let Some(key) = nest {
            value = serde_json::json!({ key: value });
        }
        Ok(Self {
            name: path.display().to_string(),
            source: Some(path.to_path_buf()),
            value,
            unset,
        })
    }

    /// A layer setting only `key`, named `name` (a flag, a variable, or the source of an
    /// alias).
    pub(super) fn value(name: &str, key: &str, leaf: Value) -> Self {
        let mut value = Value::Object(Default::default());
        set_path(&mut value, key, leaf);
        Self {
            name: name.into(),
            source: None,
            value,
            unset: Vec::new(),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let meta = Metadata::named(self.name.clone());
        match &self.source {
            Some(path) => meta.source(Source::File(path.clone())),
            None => meta.source(Source::Custom(self.name.clone())),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.value).data()
    }
}

/// One layer per variable so an error can name the exact variable.
fn env_layers(env: &dyn Fn(&str) -> Option<String>) -> Vec<Layer> {
    let mut layers = Vec::new();
    let mut generic: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BLOCK_MANAGER__"))
        .collect();
    generic.sort();
    for (name, raw) in generic {
        let key = name["BLOCK_MANAGER__".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        // An empty variable counts as unset, as it does for `${VAR:-default}`.
        if !key.is_empty() && !raw.is_empty() {
            layers.push(Layer::value(&name, &key, scalar(&key, &raw)));
        }
    }
    for (name, keys) in ENV_KEYS {
        if let Some(raw) = env(name).filter(|v| !v.is_empty()) {
            for key in keys {
                layers.push(Layer::value(name, key, scalar(key, &raw)));
            }
        }
    }
    layers
}

/// Types an environment value for `key`: text keys take it as it is; lists and maps may be
/// written as YAML/JSON flow (`["http://a", "http://b"]`); others are typed the way YAML
/// would type the same literal text (`8086` is a number, `true` a boolean).
fn scalar(key: &str, raw: &str) -> Value {
    let trimmed = raw.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Ok(v) = yaml_serde::from_str::<Value>(raw)
    {
        return v;
    }
    if is_text_key(key) {
        Value::String(raw.to_string())
    } else {
        retype(raw.to_string())
    }
}

/// Key paths whose built-in default is text (or unset, or a list of text), computed once from
/// the defaults: a value substituted into them stays text even when it looks like a number.
fn text_keys() -> &'static std::collections::HashSet<String> {
    static KEYS: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        fn walk(v: &Value, path: String, out: &mut std::collections::HashSet<String>) {
            match v {
                Value::Object(map) => {
                    for (k, child) in map {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(child, p, out);
                    }
                }
                Value::String(_) | Value::Null | Value::Array(_) => {
                    out.insert(path);
                }
                _ => {}
            }
        }
        let mut out = std::collections::HashSet::new();
        walk(
            &serde_json::to_value(Config::default()).unwrap_or_default(),
            String::new(),
            &mut out,
        );
        out
    })
}

/// Optional numbers: unset by default, so the walk over the defaults cannot tell them from
/// text.
const OPTIONAL_NUMBERS: [&str; 2] = [
    "error_handling.blockchain_engine.max_retries",
    "error_handling.synchronization.sync_backoff_seconds",
];

/// Whether `key` (or a section above it, for free-form sections) holds text.
fn is_text_key(key: &str) -> bool {
    let key = key.split('[').next().unwrap_or(key);
    if OPTIONAL_NUMBERS.contains(&key) {
        return false;
    }
    let keys = text_keys();
    let mut end = key.len();
    loop {
        if keys.contains(&key[..end]) {
            return true;
        }
        match key[..end].rfind('.') {
            Some(i) => end = i,
            None => return false,
        }
    }
}

fn set_path(root: &mut Value, key: &str, leaf: Value) {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = node.as_object_mut().expect("set_path builds objects only");
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), leaf);
            return;
        }
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
    }
}

/// The name of the layer a key's effective value came from ("default" for built-ins).
pub fn source_name(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(meta) if meta.name.contains("Serialized") || meta.name.contains("default") => {
            "default".into()
        }
        Some(meta) => meta.name.to_string(),
        None => "default".into(),
    }
}

/// Like [`source_name`], for a key given as its path segments, so a map key that holds dots
/// (Lucid's logger `blockchain.api`) is one segment, not three.
pub fn source_of(figment: &Figment, path: &[&str]) -> String {
    let Some((first, rest)) = path.split_first() else {
        return "default".into();
    };
    let Ok(mut at) = figment.find_value(first) else {
        return "default".into();
    };
    for segment in rest {
        match at.into_dict().and_then(|mut d| d.remove(*segment)) {
            Some(child) => at = child,
            None => return "default".into(),
        }
    }
    match figment.get_metadata(at.tag()) {
        Some(meta) if meta.name.contains("Serialized") || meta.name.contains("default") => {
            "default".into()
        }
        Some(meta) => meta.name.to_string(),
        None => "default".into(),
    }
}

pub(super) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Phrases a problem with `key` as `invalid <what> '<value>' [in <file>]: <why>`.
pub(super) fn invalid(figment: &Figment, key: &str, value: &str, why: &str) -> ConfigError {
    let written = lucid::written_as(figment, key);
    // An alias is shown as written (`max_attempts: 0`), not as the value it became.
    let as_written = (written != key)
        .then(|| figment.find_value(written).ok().map(|v| display_value(&v)))
        .flatten();
    let value = as_written.as_deref().unwrap_or(value);
    let key = written;
    let source = source_name(figment, key);
    // Never echo a secret back, not even a malformed one.
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let shown;
    let value = if super::redact::is_credential_key(leaf) {
        super::redact::REDACTED
    } else {
        shown = super::redact::url(value);
        shown.as_str()
    };
    if is_env_name(&source) {
        ConfigError(format!("invalid {source} '{value}': {why}"))
    } else {
        ConfigError(format!("invalid {key} '{value}' (from {source}): {why}"))
    }
}

fn describe(figment: &Figment, e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let key = e.path.join(".");
    let value = figment
        .find_value(&key)
        .ok()
        .map(|v| display_value(&v))
        .unwrap_or_default();
    let why = if key == "service.port" {
        "expected an integer 1-65535".to_string()
    } else {
        match &e.kind {
            Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
            Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
            other => other.to_string(),
        }
    };
    if key.is_empty() {
        return ConfigError(format!("invalid configuration: {why}"));
    }
    invalid(figment, &key, &value, &why)
}

fn display_value(v: &figment::value::Value) -> String {
    use figment::value::Value as V;
    match v {
        V::String(_, s) => s.clone(),
        V::Char(_, c) => c.to_string(),
        V::Bool(_, b) => b.to_string(),
        V::Num(_, n) => match n.to_u128() {
            Some(u) => u.to_string(),
            None => n
                .to_i128()
                .map(|i| i.to_string())
                .or_else(|| n.to_f64().map(|f| f.to_string()))
                .unwrap_or_default(),
        },
        V::Empty(..) => String::new(),
        V::Dict(..) => "{...}".into(),
        V::Array(..) => "[...]".into(),
    }
}

fn first_clause(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_string()
}

/// Checks that types alone cannot express; each error names its key and source.
/// The largest `api.max_connections` accepted: beyond any open-file limit a host grants.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

fn validate(c: &Config, f: &Figment) -> Result<(), ConfigError> {
    let host = c.service.host.trim();
    if host.is_empty() {
        return Err(invalid(
            f,
            "service.host",
            host,
            "expected an IP address or hostname",
        ));
    }
    if (host, c.service.port)
        .to_socket_addrs()
        .map(|mut a| a.next().is_none())
        .unwrap_or(true)
    {
        return Err(invalid(
            f,
            "service.host",
            host,
            "cannot be resolved to an address",
        ));
    }
    if c.storage.blocks_path.trim().is_empty() {
        return Err(invalid(
            f,
            "storage.blocks_path",
            "",
            "expected a folder path",
        ));
    }
    if let Some(url) = c.upstream() {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(invalid(
                    f,
                    "synchronization.engine_url",
                    url,
                    "expected an http:// or https:// URL",
                ));
            }
        }
    }
    if super::parse_level(&c.logging.level).is_none() {
        return Err(invalid(
            f,
            "logging.level",
            &c.logging.level,
            "expected one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ));
    }
    if !matches!(c.logging.format.as_str(), "standard" | "detailed" | "json") {
        return Err(invalid(
            f,
            "logging.format",
            &c.logging.format,
            "expected standard, detailed or json",
        ));
    }
    if let Some(ts) = &c.chain.genesis_timestamp
        && !ts.trim().is_empty()
        && crate::chain::Timestamp::parse(ts).is_err()
    {
        return Err(invalid(
            f,
            "chain.genesis_timestamp",
            ts,
            "expected an ISO 8601 UTC timestamp such as 2024-01-01T00:00:00+00:00",
        ));
    }
    let r = &c.error_handling.retry;
    let engine = &c.error_handling.blockchain_engine;
    let positive = [
        (
            "synchronization.poll_interval_seconds",
            c.synchronization.poll_interval_seconds,
        ),
        (
            "synchronization.sync_timeout_seconds",
            c.synchronization.sync_timeout_seconds,
        ),
        ("api.request_timeout_seconds", c.api.request_timeout_seconds),
        ("api.header_timeout_seconds", c.api.header_timeout_seconds),
        ("api.idle_timeout_seconds", c.api.idle_timeout_seconds),
        ("healthcheck.timeout_seconds", c.healthcheck.timeout_seconds),
        (
            "monitoring.system_sample_interval_seconds",
            c.monitoring.system_sample_interval_seconds,
        ),
        (
            "error_handling.blockchain_engine.request_timeout_seconds",
            engine.request_timeout_seconds,
        ),
    ];
    for (key, v) in positive {
        seconds(f, key, v, false)?;
    }
    let zero_allowed = [
        (
            "service.shutdown_grace_seconds",
            c.service.shutdown_grace_seconds,
        ),
        (
            "error_handling.retry.retry_delay_seconds",
            r.retry_delay_seconds,
        ),
        (
            "error_handling.retry.max_backoff_seconds",
            r.max_backoff_seconds,
        ),
        (
            "error_handling.blockchain_engine.circuit_breaker.recovery_timeout_seconds",
            engine.circuit_breaker.recovery_timeout_seconds,
        ),
        (
            "error_handling.synchronization.sync_backoff_seconds",
            c.error_handling
                .synchronization
                .sync_backoff_seconds
                .unwrap_or(0.0),
        ),
    ];
    for (key, v) in zero_allowed {
        seconds(f, key, v, true)?;
    }
    let whole_seconds = [
        ("rate_limits.window_seconds", c.rate_limits.window_seconds),
        (
            "chain.max_future_skew_seconds",
            c.chain.max_future_skew_seconds,
        ),
    ];
    for (key, v) in whole_seconds {
        seconds(f, key, v as f64, true)?;
    }
    if !(r.backoff_multiplier.is_finite() && (1.0..=1000.0).contains(&r.backoff_multiplier)) {
        return Err(invalid(
            f,
            "error_handling.retry.backoff_multiplier",
            &r.backoff_multiplier.to_string(),
            "expected a number from 1 to 1000",
        ));
    }
    for (key, v) in [
        ("error_handling.retry.max_retries", Some(r.max_retries)),
        (
            "error_handling.blockchain_engine.max_retries",
            engine.max_retries,
        ),
    ] {
        if let Some(v) = v.filter(|v| *v > MAX_RETRIES) {
            return Err(invalid(
                f,
                key,
                &v.to_string(),
                &format!("expected at most {MAX_RETRIES} retries"),
            ));
        }
    }
    if !(1..=MAX_CONNECTIONS_LIMIT).contains(&c.api.max_connections) {
        return Err(invalid(
            f,
            "api.max_connections",
            &c.api.max_connections.to_string(),
            "expected 1-1000000",
        ));
    }
    if !(1..=1000).contains(&c.synchronization.fetch_batch_size) {
        return Err(invalid(
            f,
            "synchronization.fetch_batch_size",
            &c.synchronization.fetch_batch_size.to_string(),
            "expected 1-1000",
        ));
    }
    if c.synchronization.max_reorgs_per_window == 0 {
        return Err(invalid(
            f,
            "synchronization.max_reorgs_per_window",
            "0",
            "expected at least 1 rollback per window",
        ));
    }
    // 0 turns damping off.
    seconds(
        f,
        "synchronization.reorg_window_seconds",
        c.synchronization.reorg_window_seconds,
        true,
    )?;
    if c.rate_limits.enabled && c.rate_limits.requests == 0 {
        return Err(invalid(
            f,
            "rate_limits.requests",
            "0",
            "expected requests ≥ 1 (or rate_limits.enabled: false)",
        ));
    }
    if c.rate_limits.enabled && c.rate_limits.window_seconds == 0 {
        return Err(invalid(
            f,
            "rate_limits.window_seconds",
            "0",
            "expected seconds ≥ 1 (or rate_limits.enabled: false)",
        ));
    }
    let sizes = [
        ("api.max_body_bytes", c.api.max_body_bytes as u64, MAX_BYTES),
        (
            "chain.max_block_size_bytes",
            c.chain.max_block_size_bytes as u64,
            MAX_BYTES,
        ),
        (
            "chain.max_transactions_per_block",
            c.chain.max_transactions_per_block as u64,
            1_000_000,
        ),
        (
            "storage.cache_size_mb",
            c.storage.cache_size_mb.max(1),
            MAX_CACHE_MB,
        ),
    ];
    for (key, v, max) in sizes {
        if v == 0 || v > max {
            return Err(invalid(
                f,
                key,
                &v.to_string(),
                &format!("expected 1 to {max}"),
            ));
        }
    }
    // One block must always fit in a page (a page is never empty), with room for the
    // envelope around it.
    let least = c
        .chain
        .max_block_size_bytes
        .saturating_add(RESPONSE_SLACK_BYTES);
    if c.api.max_response_bytes < least {
        return Err(invalid(
            f,
            "api.max_response_bytes",
            &c.api.max_response_bytes.to_string(),
            &format!(
                "must be at least chain.max_block_size_bytes + 64 KiB ({least}), so one block always fits"
            ),
        ));
    }
    if engine.circuit_breaker.failure_threshold == 0 {
        return Err(invalid(
            f,
            "error_handling.blockchain_engine.circuit_breaker.failure_threshold",
            "0",
            "expected failures ≥ 1",
        ));
    }
    if let Err((entry, why)) = super::parse_cidrs(&c.api.trusted_proxies) {
        return Err(invalid(
            f,
            "api.trusted_proxies",
            &entry,
            &format!("expected CIDRs such as 10.0.0.0/8 or 172.18.0.1/32: {why}"),
        ));
    }
    if !(1..=MAX_CLIENTS).contains(&c.rate_limits.max_clients) {
        return Err(invalid(
            f,
            "rate_limits.max_clients",
            &c.rate_limits.max_clients.to_string(),
            &format!("expected 1-{MAX_CLIENTS}"),
        ));
    }
    validate_sync_budget(c, f)?;
    validate_events(c, f)?;
    super::storage::validate(c, f)?;
    if let Err((key, value, why)) = crate::telemetry::check(c) {
        return Err(if is_env_name(&key) {
            ConfigError(format!("invalid {key} '{value}': {why}"))
        } else {
            invalid(f, &key, &value, &why)
        });
    }
    lucid::check_routes(c, f)?;
    Ok(())
}

/// The event stream's bounds.
fn validate_events(c: &Config, f: &Figment) -> Result<(), ConfigError> {
    if !(1..=65_536).contains(&c.api.max_event_streams) {
        return Err(invalid(
            f,
            "api.max_event_streams",
            &c.api.max_event_streams.to_string(),
            "expected 1-65536",
        ));
    }
    let keepalive = c.api.event_keepalive_seconds;
    if !(keepalive.is_finite() && (0.01..=3600.0).contains(&keepalive)) {
        return Err(invalid(
            f,
            "api.event_keepalive_seconds",
            &keepalive.to_string(),
            "expected seconds from 0.01 to 3600",
        ));
    }
    let fallback = c.synchronization.push_fallback_poll_seconds;
    if !(fallback.is_finite() && (0.01..=31_536_000.0).contains(&fallback)) {
        return Err(invalid(
            f,
            "synchronization.push_fallback_poll_seconds",
            &fallback.to_string(),
            "expected seconds from 0.01 to one year",
        ));
    }
    Ok(())
}

/// The follower's byte budget and start-up grace.
fn validate_sync_budget(c: &Config, f: &Figment) -> Result<(), ConfigError> {
    let s = &c.synchronization;
    // The budget is counted in semaphore permits (u32), and one reply must fit a block.
    if !(64 * 1024..=u64::from(u32::MAX)).contains(&s.max_inflight_bytes) {
        return Err(invalid(
            f,
            "synchronization.max_inflight_bytes",
            &s.max_inflight_bytes.to_string(),
            "expected a size from 65536 (64 KiB) to 4294967295 (4 GiB) bytes",
        ));
    }
    let block = c.chain.max_block_size_bytes as u64;
    if c.upstream().is_some() && s.max_inflight_bytes < block.saturating_add(64 * 1024) {
        return Err(invalid(
            f,
            "synchronization.max_inflight_bytes",
            &s.max_inflight_bytes.to_string(),
            &format!(
                "must be at least chain.max_block_size_bytes + 64 KiB ({}), or no block could be fetched",
                block.saturating_add(64 * 1024)
            ),
        ));
    }
    seconds(
        f,
        "synchronization.startup_grace_seconds",
        s.startup_grace_seconds,
        true,
    )?;
    Ok(())
}

/// Most limiter buckets: about 100 bytes each, so this caps the limiter near 1.6 GiB, far
/// beyond any sensible setting, while staying inside the limiter's 32-bit slot numbers.
const MAX_CLIENTS: usize = 16 * 1024 * 1024;

/// Most retries of one call: beyond this a failing upstream would hold a round for hours.
const MAX_RETRIES: u32 = 100;
/// Largest body, block or response size a setting may name: 1 GiB.
const MAX_BYTES: u64 = 1 << 30;
/// Largest store cache, in MiB (64 GiB): more than any host this runs on.
const MAX_CACHE_MB: u64 = 64 * 1024;

/// Checks that `v` seconds is a duration the program can hold: finite, not negative (and
/// not zero unless `zero_ok`), at most a year.
pub(super) fn seconds(f: &Figment, key: &str, v: f64, zero_ok: bool) -> Result<(), ConfigError> {
    let why = if !v.is_finite() {
        "seconds must be a finite number"
    } else if v < 0.0 {
        "seconds must be ≥ 0"
    } else if v == 0.0 && !zero_ok {
        "seconds must be > 0"
    } else if v > MAX_SECONDS {
        "seconds must be at most 31536000 (one year)"
    } else {
        return Ok(());
    };
    Err(invalid(f, key, &v.to_string(), why))
}

/// Room a response needs beyond one block's bytes for its envelope (`{"blocks":[...]}`),
/// checked against `api.max_response_bytes` at start.
pub const RESPONSE_SLACK_BYTES: usize = 64 * 1024;
