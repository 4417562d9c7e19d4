//! How the engine reaches PostgreSQL: the connection settings, TLS, and the pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};

pub use crate::config::Tls;
use crate::config::{DatabaseUrl, PostgresConfig};

/// Everything the engine needs to connect, with the bounds of every call.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Host, port, user, password and database (TLS mode is ours: see `tls`).
    pub pg: tokio_postgres::Config,
    /// TLS to the server.
    pub tls: Tls,
    /// The URL with its credentials removed, for logs and health.
    pub display: String,
    /// Most connections the pool keeps.
    pub pool_size: usize,
    /// Longest wait for a new connection (and for a free one from the pool).
    pub connect_timeout: Duration,
    /// Longest a statement may run (the server cancels it).
    pub statement_timeout: Duration,
    /// Longest a statement waits for a lock, the chain's write lock included.
    pub lock_timeout: Duration,
    /// Bytes of immutable block bodies cached in memory.
    pub cache_bytes: usize,
    /// Hot standbys that serve reads (`storage.postgres.read_urls`), in the configured order.
    pub read: Vec<ReadTarget>,
    /// Longest a read at or below the known tip waits for a standby to replay it before it is
    /// read from the primary (`storage.postgres.replay_wait_ms`).
    pub replay_wait: Duration,
}

/// One hot standby: where it is and how to reach it. Its pool takes the primary's size and
/// timeouts.
#[derive(Clone, Debug)]
pub struct ReadTarget {
    /// Host, port, user, password and database.
    pub pg: tokio_postgres::Config,
    /// TLS to the server.
    pub tls: Tls,
    /// The URL with its credentials removed, for logs and health.
    pub display: String,
}

impl PgOptions {
    /// Options with the documented defaults for `pg`.
    pub fn new(pg: tokio_postgres::Config, tls: Tls, display: String) -> Self {
        Self {
            pg,
            tls,
            display,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(2),
            cache_bytes: 64 * 1024 * 1024,
            read: Vec::new(),
            replay_wait: Duration::from_millis(20),
        }
    }

    /// These options with reads going to the standbys at `urls`.
    pub fn with_read_urls(mut self, urls: &[DatabaseUrl]) -> Self {
        self.read = urls
            .iter()
            .map(|url| ReadTarget {
                pg: pg_config(url),
                tls: url.tls.clone(),
                display: url.redacted(),
            })
            .collect();
        self
    }

    /// The options a standby's pool is built with: the primary's bounds, the standby's
    /// address.
    pub fn for_standby(&self, target: &ReadTarget) -> PgOptions {
        PgOptions {
            pg: target.pg.clone(),
            tls: target.tls.clone(),
            display: target.display.clone(),
            read: Vec::new(),
            ..self.clone()
        }
    }

    /// Options for the database at `url` with the `storage.postgres` settings.
    /// The standbys of `settings.read_urls` are not included (see [`PgOptions::with_read_urls`]).
    pub fn from_config(url: &DatabaseUrl, settings: &PostgresConfig) -> Self {
        let pg = pg_config(url);
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
        Self {
            pg,
            tls: url.tls.clone(),
            display: url.redacted(),
            pool_size: settings.pool_size,
            connect_timeout: secs(settings.connect_timeout_seconds),
            statement_timeout: secs(settings.statement_timeout_seconds),
            lock_timeout: secs(settings.lock_timeout_seconds),
            cache_bytes: usize::try_from(settings.cache_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            read: Vec::new(),
            replay_wait: Duration::from_millis(settings.replay_wait_ms),
        }
    }

    /// Longest any one engine operation may take before it is answered as an outage: a
    /// connection, then a statement. Every call is bounded, even one on a connection whose
    /// peer vanished without closing it.
    pub fn call_limit(&self) -> Duration {
        self.connect_timeout + self.statement_timeout + self.lock_timeout
    }
}

/// The connection settings of the server at `url`.
fn pg_config(url: &DatabaseUrl) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&url.host)
        .port(url.port)
        .user(&url.user)
        .dbname(&url.dbname);
    if let Some(password) = &url.password {
        pg.password(password);
    }
    if let Some(name) = &url.application_name {
        pg.application_name(name);
    }
    pg
}

/// The pool, with every session's timeouts set at connect time.
pub fn pool(options: &PgOptions) -> Result<Pool, String> {
    let mut pg = session_config(options);
    pg.connect_timeout(options.connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(10));
    if pg.get_application_name().is_none() {
        pg.application_name("block-manager");
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &options.tls {
        Tls::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        }
        Tls::Require { root_cert } => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(root_cert)?);
            Manager::from_config(pg, tls, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(options.connect_timeout),
            create: Some(options.connect_timeout),
            recycle: Some(options.connect_timeout),
        })
        .build()
        .map_err(|e| format!("cannot build the database pool: {e}"))
}

/// Connection settings every session of the engine uses: timeouts, keep-alives, its name.
fn session_config(options: &PgOptions) -> tokio_postgres::Config {
    let mut pg = options.pg.clone();
    pg.connect_timeout(options.connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(10));
    if pg.get_application_name().is_none() {
        pg.application_name("block-manager");
    }
    // Session defaults, so no statement on any connection can hang past its bound.
    //
    // And no sequential scans where an index serves: every statement is prepared once per
    // session and may keep the plan of its sixth run for good, so a session that planned a
    // lookup by key while its table was small (autovacuum analyses a young chain's tables
    // early) would scan the whole table for that lookup, under the chain's lock, long after
    // the chain had grown. No statement of the engine wants a table read from end to end.
    pg.options(format!(
        "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} \
         -c enable_seqscan=off",
        millis(options.statement_timeout),
        millis(options.lock_timeout),
        millis(options.statement_timeout * 2),
    ));
    pg
}

/// A session of its own (not pooled) whose notifications arrive on the returned channel, for
/// `LISTEN`. The session ends when the client is dropped or the connection is lost (the
/// channel then closes).
pub async fn listening_session(
    options: &PgOptions,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    super::fault::Fault,
> {
    let mut pg = session_config(options);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = match &options.tls {
        Tls::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(forward(conn, tx));
            client
        }
        Tls::Require { root_cert } => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                client_config(root_cert).map_err(super::fault::Fault::Pool)?,
            );
            let (client, conn) = pg.connect(tls).await?;
            tokio::spawn(forward(conn, tx));
            client
        }
    };
    Ok((client, rx))
}

/// Drives a connection, handing its notifications on.
async fn forward<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = std::future::poll_fn(|cx| conn.poll_message(cx)).await;
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                if tx.send(n).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// rustls with ring, verifying the chain and the host name: against the platform's roots, or
/// only the private CA when one is named (a private CA is all such a server's certificate
/// chains to).
fn client_config(root_cert: &Option<PathBuf>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    match root_cert {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                ));
            }
            Ok(builder.with_root_certificates(roots).with_no_client_auth())
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("cannot load the platform's TLS roots: {e}"))?;
            Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth())
        }
    }
}
