//! The PostgreSQL test harness itself (`tests/common/pg.rs`): each test gets a database of its
//! own, the standby serves it, and without a server the tests skip — or fail when told to.

mod common;

use common::pg::{self, database_name, fresh_database, standby_url_for, with_database};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child process that `child_calls_fresh_database` runs in.
const CHILD_ENV: &str = "BM_PG_HARNESS_CHILD";

#[tokio::test]
async fn fresh_databases_are_distinct_and_empty() {
    let Some(a) = fresh_database() else { return };
    let Some(b) = fresh_database() else { return };
    assert_ne!(a, b);
    assert_ne!(database_name(&a), database_name(&b));

    let in_a = pg::connect(&a).await;
    let row = in_a
        .query_one("SELECT current_database()", &[])
        .await
        .expect("current_database");
    assert_eq!(row.get::<_, String>(0), database_name(&a));
    in_a.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .expect("create table");

    let in_b = pg::connect(&b).await;
    let row = in_b
        .query_one(
            "SELECT current_database(), to_regclass('only_in_a')::text",
            &[],
        )
        .await
        .expect("look for the table");
    assert_eq!(row.get::<_, String>(0), database_name(&b));
    assert_eq!(row.get::<_, Option<String>>(1), None, "b sees a's table");
}

#[tokio::test]
async fn the_standby_serves_a_fresh_database_read_only() {
    let Some(db) = fresh_database() else { return };
    let Some(standby) = standby_url_for(&db) else {
        return;
    };
    assert_ne!(standby, db);
    assert_eq!(database_name(&standby), database_name(&db));

    let primary = pg::connect(&db).await;
    primary
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await
        .expect("write on the primary");

    let replica = pg::connect(&standby).await;
    let row = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("pg_is_in_recovery");
    assert!(row.get::<_, bool>(0), "the standby URL names a primary");
    // Replay takes milliseconds, not zero: poll for the row.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = replica
            .query("SELECT x FROM t", &[])
            .await
            .map(|rows| rows.first().map(|r| r.get::<_, i32>(0)));
        if let Ok(Some(x)) = seen {
            assert_eq!(x, 42);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never showed the row: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let write = replica.batch_execute("INSERT INTO t VALUES (1)").await;
    assert!(write.is_err(), "the standby took a write");
}

#[test]
fn without_a_server_the_tests_skip() {
    let (ok, out) = run_child(false);
    assert!(ok, "the child failed:\n{out}");
    assert!(
        out.contains("postgres: skipped (BLOCK_MANAGER_TEST_DATABASE_URL unset)"),
        "no skip line:\n{out}"
    );
    assert!(out.contains("fresh_database: None"), "{out}");
}

#[test]
fn without_a_server_the_tests_fail_when_postgres_is_required() {
    let (ok, out) = run_child(true);
    assert!(!ok, "the child passed without a server:\n{out}");
    assert!(
        out.contains(
            "BLOCK_MANAGER_TEST_DATABASE_URL is unset but BLOCK_MANAGER_REQUIRE_POSTGRES=1"
        ),
        "the failure does not say why:\n{out}"
    );
}

/// Runs in a child of the two tests above, with the environment they give it; a no-op otherwise.
#[test]
fn child_calls_fresh_database() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let db = fresh_database();
    println!("fresh_database: {db:?}");
}

/// This test binary, running only `child_calls_fresh_database` with no server configured.
fn run_child(require: bool) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["child_calls_fresh_database", "--exact", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env_remove(pg::DATABASE_URL_ENV)
        .env_remove(pg::STANDBY_URL_ENV);
    if require {
        cmd.env(pg::REQUIRE_ENV, "1");
    } else {
        cmd.env_remove(pg::REQUIRE_ENV);
    }
    let out = cmd.output().expect("the test binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn with_database_replaces_only_the_path() {
    let base = "postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable";
    let url = with_database(base, "bm_test_1");
    assert_eq!(
        url,
        "postgres://postgres@127.0.0.1:5433/bm_test_1?sslmode=disable"
    );
    assert_eq!(database_name(&url), "bm_test_1");
    assert_eq!(
        with_database("postgresql://u:p@h:1", "d"),
        "postgresql://u:p@h:1/d"
    );
    assert_eq!(
        with_database("postgres://h/x?a=b&c=d", "y"),
        "postgres://h/y?a=b&c=d"
    );
    assert_eq!(database_name("postgres://h:1?sslmode=disable"), "");
}
