//! The one place that chooses the engine: the embedded files under `storage.blocks_path`, or
//! a PostgreSQL database shared by every replica.

use std::sync::Arc;

use super::lease::{Holder, Lease};
use super::postgres::{ChainSpec, ConnectError, PgOptions, PgStore};
use super::{BlockRecord, BlockStore, RedbStore, StoreError};
use crate::config::{Config, DatabaseUrl, StorageBackend};
use tokio_util::sync::CancellationToken;

/// Opens the configured engine's store; the error is the one line start-up stops with.
/// `genesis` is what a standalone service starts an empty chain with: the PostgreSQL engine
/// creates it itself once its database is ready (the embedded store is ready at once, and its
/// caller does).
pub fn open(config: &Config, genesis: Option<BlockRecord>) -> Result<Arc<dyn BlockStore>, String> {
    match config.storage.engine() {
        StorageBackend::Embedded => open_embedded(config),
        StorageBackend::Postgres => open_postgres(config, genesis, Some(mode_of(config))),
    }
}

/// Opens the configured engine's store as it is found, creating no genesis: for `verify`, and
/// tools that fill a store before a service opens it. On PostgreSQL it takes the chain the
/// database keeps in whichever mode recorded it (and records none): a follower's chain is
/// checked with the database URL alone, without the follower's upstream settings.
pub fn open_as_found(config: &Config) -> Result<Arc<dyn BlockStore>, String> {
    match config.storage.engine() {
        StorageBackend::Embedded => open_embedded(config),
        StorageBackend::Postgres => open_postgres(config, None, None),
    }
}

/// On a shared engine in follower mode: the sync lease, and the task that holds it (to spawn;
/// it ends with `shutdown`, handing the lease back). `None` on the embedded engine, whose one
/// process always syncs.
pub fn sync_lease(
    config: &Config,
    me: Holder,
    shutdown: CancellationToken,
) -> Option<(Lease, impl Future<Output = ()> + Send + 'static)> {
    if !matches!(config.storage.engine(), StorageBackend::Postgres) || config.upstream().is_none() {
        return None;
    }
    // Already checked at load (and by `open`, which ran first).
    let url =
        DatabaseUrl::parse(config.storage.postgres.url.as_deref().unwrap_or_default()).ok()?;
    let options = PgOptions::from_config(&url, &config.storage.postgres);
    let (lease, feed) = super::lease::channel();
    Some((
        lease,
        super::postgres::lease::hold(options, me, feed, shutdown),
    ))
}

/// The mode the configuration runs the chain in.
fn mode_of(config: &Config) -> &'static str {
    if config.upstream().is_some() {
        "follower"
    } else {
        "standalone"
    }
}

/// `mode`: the mode the database must keep; `None` takes the recorded one.
fn open_postgres(
    config: &Config,
    genesis: Option<BlockRecord>,
    mode: Option<&'static str>,
) -> Result<Arc<dyn BlockStore>, String> {
    let raw = config.storage.postgres.url.as_deref().unwrap_or_default();
    // Already checked at load; a failure here names the key all the same.
    let url =
        DatabaseUrl::parse(raw).map_err(|why| format!("invalid storage.postgres.url: {why}"))?;
    let mut standbys = Vec::with_capacity(config.storage.postgres.read_urls.len());
    for (i, raw) in config.storage.postgres.read_urls.iter().enumerate() {
        standbys.push(DatabaseUrl::parse(raw).map_err(|why| {
            format!(
                "invalid storage.postgres.read_urls[{i}] (BLOCK_MANAGER_DATABASE_READ_URLS): {why}"
            )
        })?);
    }
    let options = PgOptions::from_config(&url, &config.storage.postgres).with_read_urls(&standbys);
    let pinned = config
        .chain
        .genesis_timestamp
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    let spec = ChainSpec {
        network: config.chain.network.clone(),
        mode,
        genesis_pinned: pinned && genesis.is_some(),
        genesis,
        finality_depth: Some(config.synchronization.max_reorg_depth),
    };
    match PgStore::connect(options, spec) {
        Ok(store) => {
            tracing::info!(
                engine = "postgres",
                database = %url.redacted(),
                standbys = standbys.len(),
                ready = store.is_ready(),
                "block store opened"
            );
            Ok(Arc::new(store))
        }
        Err(ConnectError::Configuration(why)) => Err(format!(
            "{why} (storage.postgres.url / BLOCK_MANAGER_DATABASE_URL)"
        )),
    }
}

fn open_embedded(config: &Config) -> Result<Arc<dyn BlockStore>, String> {
    let path = config.store_file();
    let cache = (config.storage.cache_size_mb as usize)
        .saturating_mul(1024 * 1024)
        .max(1024 * 1024);
    // Blocks buried deeper than any fork sync may roll back become final as the tip rises
    let depth = config.synchronization.max_reorg_depth;
    match RedbStore::open(&path, cache).and_then(|s| s.with_finality_depth(depth)) {
        Ok(s) => {
            let r = s.open_report();
            tracing::info!(
                engine = "embedded",
                path = %path.display(),
                created = r.created,
                full_repair = r.full_repair,
                took_ms = r.duration.as_secs_f64() * 1e3,
                "block store opened"
            );
            Ok(Arc::new(s))
        }
        Err(StoreError::AlreadyOpen { .. }) => Err(format!(
            "cannot open block store {}: it is in use by another running block-manager (storage.blocks_path / BLOCK_STORAGE_PATH)",
            path.display()
        )),
        // A host folder given to another user is the usual cause in a container: name the
        // chown that fixes it; else (root on a read-only volume, say) the generic advice.
        Err(e @ StoreError::PermissionDenied(_)) => {
            Err(match crate::ownership::chown_hint(&path) {
                Some(hint) => format!("cannot open block store {}: {e}; {hint}", path.display()),
                None => format!(
                    "cannot open block store {}: {e}; make the data folder writable by this user",
                    path.display()
                ),
            })
        }
        Err(e) => Err(format!("cannot open block store {}: {e}", path.display())),
    }
}
