//! PostgreSQL for the end-to-end tests: a fresh, uniquely named database per test on the
//! throwaway server that `scripts/lib.sh` `pg_start` runs (`BLOCK_MANAGER_TEST_DATABASE_URL`),
//! and the same database on its streaming hot standby (`BLOCK_MANAGER_TEST_STANDBY_URL`).
//!
//! Without the env the PostgreSQL tests skip (so a plain `cargo test` passes on a machine with no
//! server), unless `BLOCK_MANAGER_REQUIRE_POSTGRES=1` (what `scripts/test.sh` sets), where a
//! missing server is a failure rather than a silent skip.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The primary's URL, `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable`.
pub const DATABASE_URL_ENV: &str = "BLOCK_MANAGER_TEST_DATABASE_URL";
/// The streaming standby's URL, in the same form.
pub const STANDBY_URL_ENV: &str = "BLOCK_MANAGER_TEST_STANDBY_URL";
/// `1`: a PostgreSQL test without a server fails instead of skipping.
pub const REQUIRE_ENV: &str = "BLOCK_MANAGER_REQUIRE_POSTGRES";

/// How long the standby may take to replay a `CREATE DATABASE` (on loopback replay takes
/// milliseconds; the margin is for a loaded machine).
const STANDBY_REPLAY_LIMIT: Duration = Duration::from_secs(10);

/// Creates an empty database with a name no other test (in this or another test binary, in this
/// or an earlier run) has used, and returns its URL; `None` when no server is configured.
pub fn fresh_database() -> Option<String> {
    let server = server_url(DATABASE_URL_ENV)?;
    let name = unique_name();
    let url = with_database(&server, &name);
    let sql = format!("CREATE DATABASE \"{name}\"");
    block_on(async move {
        let client = connect(&server).await;
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {server}: {}", describe(&e)));
    });
    Some(url)
}

/// The URL of database `db` (a URL from [`fresh_database`], or a bare name) on the standby,
/// returned once the standby has replayed its creation; `None` when no standby is configured.
pub fn standby_url_for(db: &str) -> Option<String> {
    let standby = server_url(STANDBY_URL_ENV)?;
    let name = if db.contains("://") {
        database_name(db).to_string()
    } else {
        db.to_string()
    };
    let probe = standby.clone();
    let wanted = name.clone();
    block_on(async move {
        let client = connect(&probe).await;
        let deadline = Instant::now() + STANDBY_REPLAY_LIMIT;
        loop {
            let rows = client
                .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&wanted])
                .await
                .unwrap_or_else(|e| {
                    panic!("asking the standby {probe} for {wanted}: {}", describe(&e))
                });
            if !rows.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby {probe} has not replayed CREATE DATABASE {wanted} within {STANDBY_REPLAY_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Some(with_database(&standby, &name))
}

/// A client on `url`, its connection driven by a task on the current runtime; panics (naming the
/// URL) when it cannot connect.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {}", describe(&e)));
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here shows in the client's
        // next query, which is where the test notices it.
        let _ = connection.await;
    });
    client
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_end = head
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| head[start..].find('/').map(|slash| start + slash))
        .unwrap_or(head.len());
    let mut out = format!("{}/{name}", &head[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The database a URL names (its path, without the leading `/`); empty when it names none.
pub fn database_name(url: &str) -> &str {
    let head = url.split_once('?').map_or(url, |(head, _)| head);
    let after_scheme = head.find("://").map_or(head, |i| &head[i + 3..]);
    after_scheme.split_once('/').map_or("", |(_, path)| path)
}

/// The server's own words when it answered (tokio-postgres shows only "db error"), else the
/// client's.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The server URL in `var`; `None` (and the skip line) when unset, a panic when required.
fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!(
                    "{var} is unset but {REQUIRE_ENV}=1: start a server first \
                     (source scripts/lib.sh; pg_start --standby), as scripts/test.sh does"
                );
            }
            println!("postgres: skipped ({var} unset)");
            None
        }
    }
}

/// A database name unique across processes and runs: the process id and the clock tell test
/// binaries and runs apart (a long-lived server keeps earlier runs' databases), the counter tells
/// apart the calls within one process. Lower-case, so it needs no quoting to be used.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!(
        "bm_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `work` to completion on a runtime of its own in a thread of its own, so the functions
/// above can be called from plain tests and from inside `#[tokio::test]` alike (a runtime cannot
/// be started on a thread that is already driving one).
fn block_on<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let worker = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(work)
    });
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}
