//! The engine choice (`storage.backend`) and the PostgreSQL engine's settings, checked once at
//! load: conflicts between the engine and the URLs, each URL by its own rules, the bounds.

use super::database_url::{DatabaseUrl, Tls, shown};
use super::load::{ConfigError, invalid, is_env_name, seconds, source_name};
use super::{Config, StorageBackend};
use figment::Figment;

/// Most connections one process may keep to the primary.
const MAX_POOL_SIZE: usize = 256;
/// Longest PostgreSQL statement or lock timeout, in seconds: the server keeps them as
/// milliseconds in a 32-bit integer.
const MAX_PG_TIMEOUT_SECONDS: f64 = 2_147_483.0;
/// Shortest PostgreSQL statement or lock timeout: the server counts whole milliseconds, and a
/// value that rounds to 0 would turn the timeout off instead.
const MIN_PG_TIMEOUT_SECONDS: f64 = 0.001;
/// Longest wait for a standby's replay, in milliseconds: past it a read goes to the primary.
const MAX_REPLAY_WAIT_MS: u64 = 60_000;
/// Largest body cache of the postgres engine, in MiB.
const MAX_PG_CACHE_MB: u64 = 4096;
/// Most hot standbys one process reads from.
const MAX_READ_URLS: usize = 16;

const READ_URLS: &str = "storage.postgres.read_urls";

/// A problem with `storage.postgres.read_urls` (entry `index`, when one entry is at fault):
/// an env variable is named with the key it sets, since it holds the whole list.
fn invalid_read_urls(f: &Figment, index: Option<usize>, value: &str, why: &str) -> ConfigError {
    let key = match index {
        Some(i) => format!("{READ_URLS}[{i}]"),
        None => READ_URLS.to_string(),
    };
    let value = super::redact::url(value);
    let source = source_name(f, READ_URLS);
    if is_env_name(&source) {
        ConfigError(format!("invalid {source} ({key}) '{value}': {why}"))
    } else {
        ConfigError(format!("invalid {key} '{value}' (from {source}): {why}"))
    }
}

/// The engine choice, the database URLs and the postgres engine's bounds.
pub(super) fn validate(c: &Config, f: &Figment) -> Result<(), ConfigError> {
    let p = &c.storage.postgres;
    let url = p.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    match (c.storage.backend, url) {
        (Some(StorageBackend::Embedded), Some(_)) => {
            return Err(invalid(
                f,
                "storage.backend",
                "embedded",
                &format!(
                    "conflicts with storage.postgres.url (from {}): the embedded engine takes no database URL; unset one of them",
                    source_name(f, "storage.postgres.url")
                ),
            ));
        }
        (Some(StorageBackend::Postgres), None) => {
            return Err(invalid(
                f,
                "storage.backend",
                "postgres",
                "the postgres engine needs storage.postgres.url (BLOCK_MANAGER_DATABASE_URL)",
            ));
        }
        _ => {}
    }
    if url.is_none() && !p.read_urls.is_empty() {
        return Err(invalid_read_urls(
            f,
            None,
            &p.read_urls.join(","),
            "hot standbys need a primary: set storage.postgres.url (BLOCK_MANAGER_DATABASE_URL) too",
        ));
    }
    if let Some(url) = url
        && let Err(why) = DatabaseUrl::parse(url)
    {
        return Err(invalid(f, "storage.postgres.url", &shown(url), &why));
    }
    if p.read_urls.len() > MAX_READ_URLS {
        return Err(invalid_read_urls(
            f,
            None,
            &format!("{} URLs", p.read_urls.len()),
            &format!("expected at most {MAX_READ_URLS} hot standbys"),
        ));
    }
    for (i, read) in p.read_urls.iter().enumerate() {
        if read.trim().is_empty() {
            return Err(invalid_read_urls(
                f,
                Some(i),
                "",
                "expected a postgres:// URL",
            ));
        }
        if let Err(why) = DatabaseUrl::parse(read) {
            return Err(invalid_read_urls(f, Some(i), &shown(read), &why));
        }
    }
    if !(1..=MAX_POOL_SIZE).contains(&p.pool_size) {
        return Err(invalid(
            f,
            "storage.postgres.pool_size",
            &p.pool_size.to_string(),
            &format!("expected 1-{MAX_POOL_SIZE}"),
        ));
    }
    seconds(
        f,
        "storage.postgres.connect_timeout_seconds",
        p.connect_timeout_seconds,
        false,
    )?;
    for (key, v) in [
        (
            "storage.postgres.statement_timeout_seconds",
            p.statement_timeout_seconds,
        ),
        (
            "storage.postgres.lock_timeout_seconds",
            p.lock_timeout_seconds,
        ),
    ] {
        seconds(f, key, v, false)?;
        if !(MIN_PG_TIMEOUT_SECONDS..=MAX_PG_TIMEOUT_SECONDS).contains(&v) {
            return Err(invalid(
                f,
                key,
                &v.to_string(),
                "expected seconds from 0.001 to 2147483",
            ));
        }
    }
    if p.replay_wait_ms > MAX_REPLAY_WAIT_MS {
        return Err(invalid(
            f,
            "storage.postgres.replay_wait_ms",
            &p.replay_wait_ms.to_string(),
            &format!("expected 0-{MAX_REPLAY_WAIT_MS}"),
        ));
    }
    if p.cache_mb > MAX_PG_CACHE_MB {
        return Err(invalid(
            f,
            "storage.postgres.cache_mb",
            &p.cache_mb.to_string(),
            &format!("expected 0-{MAX_PG_CACHE_MB}"),
        ));
    }
    Ok(())
}

/// One warning per database URL that asks for cleartext to another machine: allowed (the
/// operator asked), but passwords and blocks then cross the network unencrypted.
pub(super) fn cleartext_warnings(c: &Config, f: &Figment) -> Vec<String> {
    let p = &c.storage.postgres;
    let primary = p
        .url
        .iter()
        .map(|u| ("storage.postgres.url".to_string(), u));
    let standbys = p
        .read_urls
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("{READ_URLS}[{i}]"), u));
    primary
        .chain(standbys)
        .filter_map(|(key, raw)| {
            let url = DatabaseUrl::parse(raw).ok()?;
            (url.tls == Tls::Disable && !url.is_loopback()).then(|| {
                let source = source_name(f, key.split('[').next().unwrap_or(&key));
                format!(
                    "{key} (from {source}) connects to {} in cleartext (sslmode=disable): the password and every block cross the network unencrypted",
                    url.host
                )
            })
        })
        .collect()
}
