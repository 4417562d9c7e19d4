//! Lucid's key names: the aliases that map other spellings onto our settings, the keys we
//! accept and do not use (each named once at start-up, with why), the keys that must agree
//! with what we serve, and the soft check of the user and group the process runs as.
//! `lucid-keys.md` of the specification is the list these tables follow.

use super::load::{ConfigError, Layer, invalid, source_name};
use super::{BlockRoutes, Config};
use figment::Figment;
use serde_json::Value;

/// Which name wins when both spellings of a setting are set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Winner {
    /// `from` is Lucid's name for one of our older names: it wins, with a warning.
    From,
    /// Both are Lucid's (or `to` is Lucid's and `from` our older name): `to` wins, with a
    /// warning when they differ.
    To,
}

/// Another spelling `from` of the setting `to`.
struct Alias {
    from: &'static str,
    to: &'static str,
    winner: Winner,
    convert: fn(&Value) -> Result<Value, &'static str>,
}

fn same(v: &Value) -> Result<Value, &'static str> {
    Ok(v.clone())
}

/// `max_attempts` counted the first try; `max_retries` does not.
fn attempts_to_retries(v: &Value) -> Result<Value, &'static str> {
    match v.as_u64() {
        Some(n) if n >= 1 => Ok(Value::from(n - 1)),
        _ => Err("expected attempts ≥ 1 (the first try included; max_retries is attempts - 1)"),
    }
}

const fn alias(from: &'static str, to: &'static str, winner: Winner) -> Alias {
    Alias {
        from,
        to,
        winner,
        convert: same,
    }
}

/// In the order they apply: older names first, so a Lucid spelling elsewhere (the JSON main
/// file's top-level retry keys) sees the errors file's value as set.
const ALIASES: [Alias; 14] = [
    alias(
        "rate_limits.max_requests",
        "rate_limits.requests",
        Winner::From,
    ),
    Alias {
        from: "error_handling.retry.max_attempts",
        to: "error_handling.retry.max_retries",
        winner: Winner::To,
        convert: attempts_to_retries,
    },
    alias(
        "error_handling.retry.initial_delay_seconds",
        "error_handling.retry.retry_delay_seconds",
        Winner::To,
    ),
    alias(
        "error_handling.retry.max_delay_seconds",
        "error_handling.retry.max_backoff_seconds",
        Winner::To,
    ),
    alias(
        "error_handling.retry.exponential_base",
        "error_handling.retry.backoff_multiplier",
        Winner::To,
    ),
    alias(
        "error_handling.enabled",
        "error_handling.retry.enabled",
        Winner::To,
    ),
    alias(
        "error_handling.max_retries",
        "error_handling.retry.max_retries",
        Winner::To,
    ),
    alias(
        "error_handling.retry_delay_seconds",
        "error_handling.retry.retry_delay_seconds",
        Winner::To,
    ),
    alias(
        "error_handling.exponential_backoff",
        "error_handling.retry.exponential_backoff",
        Winner::To,
    ),
    alias(
        "error_handling.backoff_multiplier",
        "error_handling.retry.backoff_multiplier",
        Winner::To,
    ),
    alias(
        "error_handling.max_backoff_seconds",
        "error_handling.retry.max_backoff_seconds",
        Winner::To,
    ),
    alias(
        "dependencies.blockchain_engine_url",
        "synchronization.engine_url",
        Winner::To,
    ),
    alias(
        "dependencies.healthcheck.path",
        "healthcheck.path",
        Winner::To,
    ),
    alias(
        "dependencies.healthcheck.timeout_seconds",
        "healthcheck.timeout_seconds",
        Winner::To,
    ),
];

/// Lucid's name for a setting one of our older field names holds (`rate_limits.requests` is
/// Lucid's `rate_limits.max_requests`), so `config show` names it as Lucid's files do.
pub fn lucid_name(key: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|a| a.to == key && matches!(a.winner, Winner::From))
        .map(|a| a.from)
}

/// The value of `key` when some layer other than the built-in defaults set it (an empty text
/// counts as unset, as it does for `${VAR:-default}`).
fn set_value(f: &Figment, key: &str) -> Option<Value> {
    if source_name(f, key) == "default" {
        return None;
    }
    let v: Value = f.find_value(key).ok()?.deserialize().ok()?;
    match &v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        _ => Some(v),
    }
}

/// Applies every alias: the value of the winning spelling lands on our setting, attributed
/// to the layer it came from. Returns the merged layers and one warning per conflict.
pub(super) fn resolve_aliases(mut f: Figment) -> Result<(Figment, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    for a in &ALIASES {
        let Some(from) = set_value(&f, a.from) else {
            continue;
        };
        let source = source_name(&f, a.from);
        let converted =
            (a.convert)(&from).map_err(|why| invalid(&f, a.from, &display(&from), why))?;
        match set_value(&f, a.to) {
            None => {}
            Some(to) => {
                let to_source = source_name(&f, a.to);
                let (win, lose) = match a.winner {
                    Winner::From => (a.from, a.to),
                    Winner::To => (a.to, a.from),
                };
                if a.winner == Winner::From || to != converted {
                    warnings.push(format!(
                        "both {} (from {source}) and {} (from {to_source}) are set: {win} wins, {lose} is ignored",
                        a.from, a.to
                    ));
                }
                if a.winner == Winner::To {
                    continue;
                }
            }
        }
        f = f.merge(Layer::value(&source, a.to, converted));
    }
    Ok((f, warnings))
}

/// The spelling the operator wrote for setting `key`: the alias its value came from, when
/// it came from one, so an error names the key that is in the file.
pub(super) fn written_as<'k>(f: &Figment, key: &'k str) -> &'k str {
    ALIASES
        .iter()
        .find(|a| {
            a.to == key
                && set_value(f, a.from).is_some()
                && source_name(f, a.from) == source_name(f, a.to)
        })
        .map_or(key, |a| a.from)
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Keys of Lucid's files that change nothing here, and why. `.*` covers every key below.
const UNUSED: [(&str, &str); 22] = [
    (
        "dependencies.healthcheck.interval_seconds",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    (
        "dependencies.healthcheck.retries",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    (
        "dependencies.healthcheck.start_period_seconds",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    (
        "healthcheck.interval_seconds",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    (
        "healthcheck.retries",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    (
        "healthcheck.start_period_seconds",
        "Docker's HEALTHCHECK timing is set in the image and compose file",
    ),
    ("storage.cache_path", "there is no cache folder"),
    (
        "storage.ensure_permissions",
        "a non-root process cannot change ownership; an unwritable folder stops start-up with the chown that fixes it",
    ),
    (
        "storage.owner",
        "a non-root process cannot change ownership; an unwritable folder stops start-up with the chown that fixes it",
    ),
    (
        "security.read_only_root",
        "a read-only root is a property of the container",
    ),
    (
        "monitoring.expose_health",
        "health is always served: probes depend on it",
    ),
    (
        "monitoring.expose_metrics",
        "/metrics follows monitoring.metrics_enabled",
    ),
    ("error_handling.mongodb.*", "there is no MongoDB"),
    (
        "error_handling.block_storage.*",
        "a failed durable commit is never retried blindly; every entry is checksummed; `block-manager verify` is the integrity check",
    ),
    (
        "error_handling.synchronization.retry_on_sync_failure",
        "rounds always continue; the circuit breaker bounds failures",
    ),
    (
        "error_handling.synchronization.max_sync_retries",
        "rounds always continue; the circuit breaker bounds failures",
    ),
    (
        "error_handling.synchronization.continue_on_partial_failure",
        "rounds always continue; the circuit breaker bounds failures",
    ),
    (
        "error_handling.validation.reject_invalid_blocks",
        "an invalid block is never stored",
    ),
    (
        "error_handling.validation.strict_mode",
        "an invalid block is never stored",
    ),
    (
        "error_handling.recovery.*",
        "repair at start-up is automatic and bounded",
    ),
    (
        "error_handling.reporting.*",
        "errors are logged as the logging file says",
    ),
    (
        "error_handling.degradation.*",
        "reads are served whatever sync or the upstream do",
    ),
];

/// Unused keys named at info level: other services' connection strings.
const UNUSED_INFO: [(&str, &str); 2] = [
    (
        "dependencies.mongodb_url",
        "blocks are kept in block-manager's own store",
    ),
    (
        "dependencies.redis_url",
        "blocks are kept in block-manager's own store",
    ),
];

/// Sections read by another part of the program (the logging file and the main file's
/// `logging`), or free-form maps: never reported as unknown here.
const NOT_SCANNED: [&str; 5] = [
    "logging",
    "logging_config",
    "error_codes",
    "severity",
    "dependencies",
];

fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            key.len() > prefix.len()
                && key.starts_with(prefix)
                && key.as_bytes()[prefix.len()] == b'.'
        }
        None => pattern == key,
    }
}

/// Every key the files and environment set, once: unused ones (warnings, or notices for
/// `UNUSED_INFO`) and unknown ones under our own sections (warnings).
pub(super) fn scan(f: &Figment) -> (Vec<String>, Vec<String>) {
    let known = serde_json::to_value(Config::default()).unwrap_or_default();
    let merged: Value = f.extract().unwrap_or_default();
    let mut leaves = Vec::new();
    collect(&merged, String::new(), &mut leaves);
    let (mut warnings, mut notices) = (Vec::new(), Vec::new());
    for key in leaves {
        let source = || source_name(f, &key);
        if let Some((_, why)) = UNUSED_INFO.iter().find(|(p, _)| matches(p, &key)) {
            notices.push(format!(
                "config key {key} (from {}) is accepted and unused: {why}",
                source()
            ));
        } else if let Some((_, why)) = UNUSED.iter().find(|(p, _)| matches(p, &key)) {
            warnings.push(format!(
                "config key {key} (from {}) is accepted and unused: {why}",
                source()
            ));
        } else if ALIASES.iter().any(|a| a.from == key)
            || NOT_SCANNED
                .iter()
                .any(|s| matches(&format!("{s}.*"), &key) || *s == key)
            || is_foreign(&known, &key)
            || is_known(&known, &key)
        {
        } else {
            warnings.push(format!(
                "unknown config key {key} (from {}) is ignored",
                source()
            ));
        }
    }
    (warnings, notices)
}

/// Leaf keys of `v` (objects are walked; anything else, lists included, is a leaf).
fn collect(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect(child, p, out);
            }
        }
        _ if !path.is_empty() => out.push(path),
        _ => {}
    }
}

/// Whether `key` lies in a section that is not ours (shared Lucid tooling may add some):
/// accepted without a word.
fn is_foreign(defaults: &Value, key: &str) -> bool {
    let top = key.split('.').next().unwrap_or(key);
    defaults.get(top).is_none()
}

/// Whether a setting reads `key`: it is one of ours, or lies inside a free-form value of
/// ours. The errors file's pass-through sections are free-form only for Lucid's keys, which
/// `UNUSED` names.
fn is_known(defaults: &Value, key: &str) -> bool {
    let mut node = defaults;
    for part in key.split('.') {
        match node {
            Value::Object(map) => match map.get(part) {
                Some(child) => node = child,
                None => return false,
            },
            _ => return !key.starts_with("error_handling."),
        }
    }
    true
}

/// `/blocks/` and `/blocks` are the same route; `{id}` and `{block_id}` the same parameter.
fn route_shape(path: &str) -> String {
    let trimmed = path.trim();
    let trimmed = trimmed
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(trimmed);
    trimmed
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The checked keys: Lucid's route table must name the routes we serve (clients are written
/// against it, so a file that says otherwise is a deployment mistake worth stopping for).
pub(super) fn check_routes(c: &Config, f: &Figment) -> Result<(), ConfigError> {
    if route_shape(&c.api.base_path) != "/api/v1" {
        return Err(invalid(
            f,
            "api.base_path",
            &c.api.base_path,
            "must be /api/v1, the prefix block-manager serves",
        ));
    }
    let ours = BlockRoutes::default();
    let pairs = [
        ("api.blocks.list", &c.api.blocks.list, &ours.list),
        ("api.blocks.by_id", &c.api.blocks.by_id, &ours.by_id),
        (
            "api.blocks.by_height",
            &c.api.blocks.by_height,
            &ours.by_height,
        ),
        ("api.blocks.latest", &c.api.blocks.latest, &ours.latest),
        (
            "api.blocks.validate",
            &c.api.blocks.validate,
            &ours.validate,
        ),
    ];
    for (key, theirs, served) in pairs {
        if route_shape(theirs) != route_shape(served) {
            return Err(invalid(
                f,
                key,
                theirs,
                &format!("must be {served}, the path block-manager serves"),
            ));
        }
    }
    Ok(())
}

/// `security.user` / `security.group` checked softly: one warning each when the process runs
/// as another uid / gid (nothing else changes: the container decides who runs).
pub(super) fn check_identity(c: &Config, f: &Figment) -> Vec<String> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let effective = |field: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
    };
    let mut out = Vec::new();
    for (key, wanted, field, table, what) in [
        (
            "security.user",
            &c.security.user,
            "Uid:",
            "/etc/passwd",
            "uid",
        ),
        (
            "security.group",
            &c.security.group,
            "Gid:",
            "/etc/group",
            "gid",
        ),
    ] {
        let (Some(wanted), Some(running)) = (wanted.as_deref().map(str::trim), effective(field))
        else {
            continue;
        };
        if wanted.is_empty() {
            continue;
        }
        let id = wanted.parse::<u32>().ok().or_else(|| lookup(table, wanted));
        if id != Some(running) {
            out.push(format!(
                "{key} '{wanted}' (from {}) is not who runs this process ({what} {running}); nothing else changes",
                source_name(f, key)
            ));
        }
    }
    out
}

/// The id of `name` in a passwd/group file (`name:x:id:...`).
fn lookup(table: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(table).ok()?.lines().find_map(|l| {
        let mut parts = l.split(':');
        (parts.next() == Some(name))
            .then(|| parts.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    })
}

/// Deserializes a user or group written as a name or as a number (`user: 65532`).
pub(super) fn name_or_id<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrId {
        Name(String),
        Id(u64),
    }
    Ok(Option::<NameOrId>::deserialize(d)?.map(|v| match v {
        NameOrId::Name(s) => s,
        NameOrId::Id(n) => n.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_keys_below_and_only_below() {
        assert!(matches(
            "error_handling.mongodb.*",
            "error_handling.mongodb.retry_on_timeout"
        ));
        assert!(!matches(
            "error_handling.mongodb.*",
            "error_handling.mongodb"
        ));
        assert!(!matches(
            "error_handling.mongodb.*",
            "error_handling.mongodbx.a"
        ));
        assert!(matches("storage.owner", "storage.owner"));
    }

    #[test]
    fn routes_compare_by_shape() {
        assert_eq!(route_shape("/blocks/"), route_shape("/blocks"));
        assert_eq!(
            route_shape("/blocks/{id}"),
            route_shape("/blocks/{block_id}")
        );
        assert_ne!(
            route_shape("/blocks/at/{h}"),
            route_shape("/blocks/height/{height}")
        );
        assert_eq!(route_shape("/api/v1/"), "/api/v1");
    }

    #[test]
    fn max_attempts_counts_the_first_try() {
        assert_eq!(attempts_to_retries(&Value::from(3)), Ok(Value::from(2)));
        assert!(attempts_to_retries(&Value::from(0)).is_err());
        assert!(attempts_to_retries(&Value::from("x")).is_err());
    }
}
