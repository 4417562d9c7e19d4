//! Start-up and shutdown: opens the store, makes genesis, assembles the state, binds, serves
//! (see `server`), runs background tasks, and on SIGTERM/SIGINT drains requests and closes the
//! store last. A signal during start-up ends it the same way, before serving.

pub use crate::api::state::{AppState, Shared};
use crate::chain::{self, Limits, Timestamp};
use crate::config::Config;
use crate::error::Catalog;
use crate::health::{Check, Health, StoreCheck};
use crate::ledger::{self, Ledger};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::store::BlockStore;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the service could not start: exit 2 with this line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Validation limits from the `chain` section.
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_transactions: config.chain.max_transactions_per_block,
        max_block_bytes: config.chain.max_block_size_bytes,
        max_future_skew_micros: (config.chain.max_future_skew_seconds as i64)
            .saturating_mul(1_000_000),
    }
}

/// Opens the configured engine's store, explaining failures in one line. On PostgreSQL the
/// engine itself creates genesis once the database is ready (it may not be yet).
pub fn open_store(config: &Config) -> Result<Arc<dyn BlockStore>, StartError> {
    let genesis = genesis_record(config)?;
    crate::store::open::open(config, genesis).map_err(StartError)
}

/// The genesis block a standalone service starts an empty chain with.
fn genesis_record(config: &Config) -> Result<Option<crate::store::BlockRecord>, StartError> {
    if config.upstream().is_some() {
        return Ok(None);
    }
    let at = match config
        .chain
        .genesis_timestamp
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(ts) => Timestamp::parse(ts)
            .map_err(|e| StartError(format!("invalid chain.genesis_timestamp '{ts}': {e}")))?,
        None => ledger::now(),
    };
    Ok(Some(ledger::record_of(&chain::genesis_block(at))))
}

/// Creates the genesis block in an empty standalone store.
fn ensure_genesis(config: &Config, store: &dyn BlockStore) -> Result<(), StartError> {
    // The PostgreSQL engine creates it itself, once its database is ready.
    if !store.reads_inline() {
        return Ok(());
    }
    let Some(genesis) = genesis_record(config)? else {
        return Ok(());
    };
    if store
        .tip()
        .map_err(|e| StartError(format!("cannot read block store: {e}")))?
        .is_some()
    {
        return Ok(());
    }
    let hash = genesis.meta.hash.clone();
    let timestamp = genesis.meta.timestamp.clone();
    store
        .set_genesis(&config.chain.network, genesis)
        .map_err(|e| StartError(format!("cannot write the genesis block: {e}")))?;
    tracing::info!(hash = %hash, timestamp = %timestamp, "genesis block created");
    Ok(())
}

/// Resolves the bind address (the config already checked that it resolves).
pub fn bind_addr(config: &Config) -> Result<SocketAddr, StartError> {
    (config.service.host.as_str(), config.service.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            StartError(format!(
                "invalid BLOCK_MANAGER_HOST '{}': cannot be resolved",
                config.service.host
            ))
        })
}

/// A running service: its address, a way to stop it, and its completion.
pub struct Running {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Cancel to begin a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Resolves when the server has drained, tasks have stopped and the store is closed.
    pub done: tokio::task::JoinHandle<()>,
}

/// Opens the store (making genesis if needed), starts the writer and background tasks, and
/// assembles the shared state. Join the returned handle after the last state clone is gone.
pub async fn build_state(
    config: Config,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(AppState, std::thread::JoinHandle<()>), StartError> {
    // reqwest is built without a default TLS provider; install ring's once for https upstreams.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let store = open_store(&config)?;
    ensure_genesis(&config, &*store)?;
    let metrics = Arc::new(Metrics::new());
    metrics.watch_standbys(store.clone());
    if let Ok(t) = store.totals() {
        metrics.transactions_stored.set(t.transactions as i64);
    }
    let limits = limits(&config);
    let (ledger, writer) = Ledger::start(store.clone(), limits, metrics.clone());
    let v = &config.error_handling.validation;
    let quarantine = Arc::new(
        Quarantine::new(
            &v.quarantine_path,
            v.quarantine_max_files,
            v.quarantine_max_bytes,
        )
        .with_entry_cap(
            config
                .chain
                .max_block_size_bytes
                .saturating_add(crate::quarantine::ENTRY_SLACK),
        )
        .with_index(store.clone())
        .with_metrics(metrics.clone())
        .with_rejects(crate::quarantine::Rejects {
            keep: v.quarantine_invalid_blocks,
            log: v.log_validation_errors,
            log_upstream: config.error_handling.synchronization.log_failed_blocks,
        }),
    );
    let system = crate::monitoring::SystemView::start(
        &config,
        store.clone(),
        metrics.clone(),
        tracker,
        shutdown.clone(),
    )
    .await;
    let sync = config.upstream().map(|url| {
        let me = crate::store::lease::Holder {
            instance_id: config.service.instance(),
            address: config.service.url.clone(),
        };
        let lease = crate::store::open::sync_lease(&config, me.clone(), shutdown.clone()).map(
            |(lease, hold)| {
                tracker.spawn(hold);
                (lease, me)
            },
        );
        crate::sync::SyncHandle::start(
            &config,
            url,
            store.clone(),
            ledger.clone(),
            quarantine.clone(),
            metrics.clone(),
            lease,
            tracker,
            shutdown.clone(),
        )
    });
    if sync.is_none() {
        // A standalone node says so in the same one-hot gauge a follower's states use.
        metrics.sync_state.with_label_values(&["disabled"]).set(1);
    }
    let mut checks: Vec<Box<dyn Check>> = vec![Box::new(StoreCheck {
        store: store.clone(),
        min_free_bytes: config.storage.min_free_bytes,
    })];
    if let Some(s) = &sync {
        checks.push(Box::new(s.check()));
    }
    if system.enabled() {
        checks.push(Box::new(system.check()));
    }
    let connections = Arc::new(crate::server::ConnectionTracker::new(
        connection_cap(&config),
        &metrics,
    ));
    let state = AppState::new(Shared {
        instance_id: config.service.instance(),
        catalog: Arc::new(Catalog::from_config(&config)),
        limiter: Arc::new(crate::api::access::limiter(&config, &metrics).map_err(StartError)?),
        health: Health::new(checks, Duration::from_secs(1)),
        config,
        reads: store.clone(),
        store,
        ledger,
        metrics,
        quarantine,
        limits,
        started: Instant::now(),
        ready: Arc::new(AtomicBool::new(false)),
        sync,
        system,
        stats: crate::api::StatsCache::default(),
        connections,
        events: Arc::new(crate::api::events::Hub::new(shutdown.clone())),
    });
    Ok((state, writer))
}

/// The connection cap: `api.max_connections` within the open-file limit, which is raised from
/// the soft to the hard limit first.
fn connection_cap(config: &Config) -> usize {
    let files = crate::server::raise_open_file_limit();
    let wanted = config.api.max_connections;
    let cap = crate::server::connection_cap(wanted, files);
    if cap < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = files,
            cap,
            "api.max_connections lowered to fit the open-file limit (raise it with ulimit -n or the container's nofile)"
        );
    } else {
        tracing::info!(
            max_connections = cap,
            open_file_limit = files,
            "connection cap"
        );
    }
    cap
}

/// Opens everything and starts serving; returns once the socket is bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, CancellationToken::new()).await
}

/// As [`start`], stopping when `shutdown` is cancelled, also while still starting: then
/// nothing is served and whatever was opened is closed.
pub async fn start_with(
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    if shutdown.is_cancelled() {
        tracing::info!("stop requested before start-up; nothing opened");
        let addr = bind_addr(&config).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        return Ok(Running {
            addr,
            shutdown,
            done: tokio::spawn(async {}),
        });
    }
    let tracker = TaskTracker::new();
    let (state, writer) = build_state(config, &tracker, shutdown.clone()).await?;
    if shutdown.is_cancelled() {
        tracing::info!("stop requested during start-up; closing without serving");
        let addr =
            bind_addr(&state.config).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let done = tokio::spawn(close(state, writer, tracker, true));
        return Ok(Running {
            addr,
            shutdown,
            done,
        });
    }
    // If start-up fails from here on, the background tasks started above stop (and let go of
    // the store) instead of running on unseen.
    let stop_on_error = shutdown.clone().drop_guard();
    let config = state.config.clone();
    let addr = bind_addr(&config)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        StartError(format!(
            "cannot listen on {addr} (BLOCK_MANAGER_HOST/BLOCK_MANAGER_PORT): {e}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
    tracing::info!(%addr, instance_id = %state.instance_id, advertised = %config.service.url, environment = %config.service.environment, platform = %config.service.platform, mode = if config.upstream().is_some() { "follower" } else { "standalone" }, "block-manager listening");

    stop_on_error.disarm();
    let serve = crate::server::Serve {
        router: crate::api::router(state.clone()),
        tracker: state.connections.clone(),
        catalog: state.catalog.clone(),
        header_timeout: crate::config::duration(config.api.header_timeout_seconds),
        idle_timeout: crate::config::duration(config.api.idle_timeout_seconds),
        header_timeouts: state.metrics.http_header_timeouts.clone(),
    };
    let ready = state.ready.clone();
    ready.store(true, Ordering::SeqCst);
    let grace = crate::config::duration(config.service.shutdown_grace_seconds);
    let token = shutdown.clone();
    let done = tokio::spawn(async move {
        let mut server = tokio::spawn(crate::server::serve(listener, serve, token.clone()));
        token.cancelled().await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "shutting down: no new connections, finishing requests in flight"
        );
        let drained = tokio::time::timeout(grace, &mut server).await.is_ok();
        if !drained {
            tracing::warn!("grace period over; dropping the requests still in flight");
            server.abort();
            let _ = server.await;
        }
        close(state, writer, tracker, drained).await;
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// Stops the background tasks and the writer, and closes the store last.
async fn close(
    state: AppState,
    writer: std::thread::JoinHandle<()>,
    tracker: TaskTracker,
    drained: bool,
) {
    tracker.close();
    tracker.wait().await;
    // Connections that outlived the grace period may still hold handles to the ledger, so
    // the writer is told to stop rather than waited on until every handle is gone.
    state.ledger.stop().await;
    let store = Arc::downgrade(&state.store);
    drop(state);
    let joined = tokio::task::spawn_blocking(move || writer.join());
    if tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .is_err()
    {
        tracing::warn!(
            "block writer did not stop in time; every acknowledged block is already committed"
        );
    }
    // The store closes when its last handle goes; connection tasks let go of theirs just
    // after the server reports them finished, so wait (briefly) to close it last. After
    // an expired grace period abandoned connections keep theirs until exit: no waiting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(if drained { 5 } else { 0 });
    while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if drained && store.strong_count() > 0 {
        tracing::warn!("block store still in use at exit; it is consistent on disk either way");
    }
    tracing::info!("stopped");
}

/// Resolves on SIGTERM or SIGINT (also as PID 1, where default dispositions do nothing), or
/// at once for one caught since start (see `signals`).
pub async fn signal() {
    crate::signals::terminated().await;
}

/// Runs until a signal, then shuts down gracefully. The signal is listened for before
/// start-up begins, so one that arrives while starting stops it cleanly too.
pub async fn run(config: Config) -> Result<(), StartError> {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("signal received");
        stop.cancel();
    });
    // A signal caught before the listener existed stops start-up before anything is opened.
    if crate::signals::received() {
        shutdown.cancel();
    }
    let running = start_with(config, shutdown).await?;
    let _ = running.done.await;
    Ok(())
}
