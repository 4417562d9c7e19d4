//! Throwaway databases for the engine's own tests, on the server named by
//! `BLOCK_MANAGER_TEST_DATABASE_URL` (`scripts/test.sh` starts one). Without it the PostgreSQL
//! tests say they were skipped; with `BLOCK_MANAGER_REQUIRE_POSTGRES=1` a missing server fails.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{PgOptions, Tls};

/// Options for a new, empty database of its own, or `None` when no test server is set.
pub fn fresh() -> Option<PgOptions> {
    let Ok(url) = std::env::var("BLOCK_MANAGER_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("BLOCK_MANAGER_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "BLOCK_MANAGER_REQUIRE_POSTGRES=1 but BLOCK_MANAGER_TEST_DATABASE_URL is unset"
        );
        eprintln!("postgres: skipped (BLOCK_MANAGER_TEST_DATABASE_URL unset)");
        return None;
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "bm_unit_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let admin = tokio_postgres::Config::from_str(&url).expect("BLOCK_MANAGER_TEST_DATABASE_URL");
    let create = format!("CREATE DATABASE {name}");
    with_client(&admin, |client| async move {
        client
            .batch_execute(&create)
            .await
            .expect("create a test database");
    });
    let mut pg = admin;
    pg.dbname(&name);
    Some(PgOptions::new(
        pg,
        Tls::Disable,
        format!("postgres://test/{name}"),
    ))
}

/// Runs `f` with a session of its own on the database of `config` (outside any engine, as an
/// operator's `psql` would be), on a runtime of its own.
pub fn with_client<T, Fut>(
    config: &tokio_postgres::Config,
    f: impl FnOnce(tokio_postgres::Client) -> Fut,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(conn);
        f(client).await
    })
}

/// The network a test database records, once a chain was opened on it (a reopen must name
/// the same one, as a restarted replica's configuration does).
pub fn recorded_network(options: &PgOptions) -> Option<String> {
    with_client(&options.pg, |client| async move {
        let exists: bool = client
            .query_one("SELECT to_regclass('bm_settings') IS NOT NULL", &[])
            .await
            .expect("query")
            .get(0);
        if !exists {
            return None;
        }
        client
            .query_opt("SELECT value FROM bm_settings WHERE key = 'network'", &[])
            .await
            .expect("query")
            .map(|r| r.get(0))
    })
}

/// The database of `options` on the streaming hot standby named by
/// `BLOCK_MANAGER_TEST_STANDBY_URL`, once the standby has replayed its creation; `None` (saying
/// the test was skipped) when no standby is set, a failure with `BLOCK_MANAGER_REQUIRE_POSTGRES=1`.
pub fn standby_of(options: &PgOptions) -> Option<super::connect::ReadTarget> {
    let Ok(url) = std::env::var("BLOCK_MANAGER_TEST_STANDBY_URL") else {
        assert!(
            std::env::var("BLOCK_MANAGER_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "BLOCK_MANAGER_REQUIRE_POSTGRES=1 but BLOCK_MANAGER_TEST_STANDBY_URL is unset (pg_start --standby)"
        );
        eprintln!("postgres standby: skipped (BLOCK_MANAGER_TEST_STANDBY_URL unset)");
        return None;
    };
    let admin = tokio_postgres::Config::from_str(&url).expect("BLOCK_MANAGER_TEST_STANDBY_URL");
    let name = options
        .pg
        .get_dbname()
        .expect("a test database has a name")
        .to_string();
    let wanted = name.clone();
    with_client(&admin, |client| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let rows = client
                .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&wanted])
                .await
                .expect("ask the standby for the test database");
            if !rows.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby has not replayed CREATE DATABASE {wanted} within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let mut pg = admin;
    pg.dbname(&name);
    Some(super::connect::ReadTarget {
        pg,
        tls: Tls::Disable,
        display: format!("postgres://standby/{name}"),
    })
}
