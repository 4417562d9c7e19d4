//! What only the PostgreSQL engine does, end to end against a real server: the `/health` store
//! check of a database, `config show` / `config check` and the start-up log with a URL that
//! holds a password, `block-manager verify` and `POST /api/v1/chain/verify` on a chain whose row
//! was corrupted with SQL, and follower mode writing its batches into PostgreSQL — from an
//! embedded block-manager upstream, through a fork rollback and the quarantine of a rejected
//! block.
//!
//! Each test takes a fresh database on the server `scripts/lib.sh` `pg_start` runs
//! (`BLOCK_MANAGER_TEST_DATABASE_URL`); without one they skip, unless
//! `BLOCK_MANAGER_REQUIRE_POSTGRES=1`.

// The sync tests' chains and stand-in; this file uses some of each.
#[allow(dead_code)]
#[path = "sync/chains.rs"]
mod chains;
mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;

use block_manager::chain::Block;
use block_manager::config::{Config, StorageBackend};
use common::*;
use serde_json::{Value, json};
use standin::StandIn;
use std::path::Path;
use std::time::Duration;

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// A password no output may ever show.
const PASSWORD: &str = "Xq7pgSecretPw";

/// Puts the chain in database `url`.
fn on_database(c: &mut Config, url: &str) {
    c.storage.backend = Some(StorageBackend::Postgres);
    c.storage.postgres.url = Some(url.to_string());
}

/// Keeps the chain in the embedded files, whatever engine this test run uses for the others.
fn embedded(c: &mut Config) {
    c.storage.backend = None;
    c.storage.postgres.url = None;
}

/// `url` with `PASSWORD` as the user's password. The test server trusts loopback clients, so
/// the password is sent and ignored: the URL is real and works.
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a user in the URL");
    format!("{scheme}://{user}:{PASSWORD}@{host}")
}

/// Short timeouts and polls so sync plays out in well under a second.
fn fast_follower(c: &mut Config, upstream: &str) {
    c.synchronization.engine_url = Some(upstream.to_string());
    c.synchronization.poll_interval_seconds = 0.05;
    c.synchronization.sync_timeout_seconds = 2.0;
    c.error_handling.retry.max_retries = 1;
    c.error_handling.retry.retry_delay_seconds = 0.02;
    c.error_handling.retry.max_backoff_seconds = 0.1;
    let breaker = &mut c.error_handling.blockchain_engine.circuit_breaker;
    breaker.failure_threshold = 1000;
    breaker.recovery_timeout_seconds = 0.3;
}

/// A follower of `upstream` keeping its chain in database `url`.
async fn pg_follower(url: &str, upstream: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let (url, upstream) = (url.to_string(), upstream.to_string());
    spawn_app(move |c| {
        on_database(c, &url);
        fast_follower(c, &upstream);
        tweak(c);
    })
    .await
}

/// Runs `sql` on database `url`; the rows it returns.
async fn sql(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let client = common::pg::connect(url).await;
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::pg::describe(&e)))
}

/// The hashes the database keeps, by height.
async fn stored_hashes(url: &str) -> Vec<String> {
    sql(url, "SELECT hash FROM bm_blocks ORDER BY height")
        .await
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn hashes_of(chain: &[Block]) -> Vec<String> {
    chain.iter().map(|b| b.hash.clone()).collect()
}

/// Every hash from 0 to the tip, read through `/blocks/headers` pages.
async fn served_hashes(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let (code, body) = app
            .get_json(&format!(
                "/api/v1/blocks/headers?from={}&limit=2000",
                out.len()
            ))
            .await;
        assert_eq!(code, 200, "{body}");
        let page = body["headers"].as_array().expect("headers").clone();
        if page.is_empty() {
            return out;
        }
        out.extend(
            page.iter()
                .map(|h| h["hash"].as_str().expect("hash").to_string()),
        );
    }
}

/// Waits until the follower reports `state` at `height`.
async fn reaches(app: &TestApp, state: &str, height: u64) -> Value {
    let what = format!("sync state {state} at height {height}");
    eventually(LIMIT, &what, || async {
        let (code, s) = app.get_json("/api/v1/sync/status").await;
        assert_eq!(code, 200, "{s}");
        (s["state"] == state && s["local_height"] == height).then_some(s)
    })
    .await
}

/// `POST /api/v1/chain/verify` on the whole chain.
async fn chain_verify(app: &TestApp) -> Value {
    let (code, body) = app.post("/api/v1/chain/verify", &json!({})).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The quarantined entries of `app` whose reason contains `reason`.
fn quarantined(app: &TestApp, url: &str, reason: &str) -> Vec<Value> {
    // On PostgreSQL the quarantine is a table: replicas keep nothing on local disk.
    quarantine_entries(app.dir.path(), Some(url))
        .into_iter()
        .filter(|d| d["reason"].as_str().is_some_and(|r| r.contains(reason)))
        .collect()
}

/// Runs the binary with `args` in `dir` and only `env` (plus PATH): exit code, stderr + stdout.
fn run_binary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(binary())
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

#[tokio::test]
async fn health_store_check_shows_the_postgres_engine_its_latency_and_the_height() {
    let Some(url) = pg::fresh_database() else {
        return;
    };
    let app = spawn_app(|c| on_database(c, &url)).await;
    // A database slow to answer at start-up (a loaded machine) leaves the store not ready for
    // a moment, by design; it readies itself in the background.
    let health = eventually(LIMIT, "the store check to pass", || async {
        let (code, h) = app.get_json("/health").await;
        (code == 200).then_some(h)
    })
    .await;
    let store = &health["checks"]["store"];
    assert_eq!(store["status"], "healthy", "{health}");
    assert_eq!(store["engine"], "postgres", "{health}");
    assert_eq!(store["message"], "store open and writable", "{health}");
    assert_eq!(store["height"], 0, "{health}");
    let latency = store["latency_ms"]
        .as_f64()
        .expect("latency_ms is a number");
    // The check runs a query (reachable) and a write (writable) on the database: it takes time.
    assert!(latency > 0.0 && latency < 5_000.0, "{health}");

    app.create_block("one", 1).await;
    app.create_block("two", 1).await;
    // Health results are cached for a second.
    eventually(LIMIT, "health to show height 2", || async {
        let (_, h) = app.get_json("/health").await;
        (h["checks"]["store"]["height"] == 2).then_some(())
    })
    .await;
    // The writable probe is a real write into the database.
    let probes = sql(&url, "SELECT count(*) FROM bm_probe").await;
    assert!(probes[0].get::<_, i64>(0) >= 1, "no probe row written");
    app.stop().await;
}

#[test]
fn config_show_check_and_the_running_service_never_print_the_database_password() {
    let Some(url) = pg::fresh_database() else {
        return;
    };
    let secret_url = with_password(&url);
    let work = tempfile::tempdir().expect("temp dir");
    let env = [
        ("BLOCK_MANAGER_DATABASE_URL", secret_url.as_str()),
        ("BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP", GENESIS_TS),
    ];
    let (code, out) = run_binary(work.path(), &["config", "show"], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains(PASSWORD),
        "config show printed the password: {out}"
    );
    assert!(
        out.contains("storage.postgres.url = \"postgres://postgres:***@127.0.0.1:"),
        "{out}"
    );
    let (code, out) = run_binary(work.path(), &["config", "check"], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains(PASSWORD),
        "config check printed the password: {out}"
    );

    // The service connects with it, and neither its log nor its answers show it.
    let p = spawn_process(work.path(), &env);
    let (status, created) =
        http_post(p.port, "/api/v1/blocks", &create_body("pw", 1)).expect("create answered");
    assert_eq!(status, 201, "{created}");
    for path in [
        "/health",
        "/api/v1/chain/info",
        "/api/v1/chain/status",
        "/metrics",
    ] {
        let body = http_get_body(p.port, path);
        assert!(
            !body.contains(PASSWORD),
            "{path} shows the password: {body}"
        );
    }
    let (code, out) = run_binary(work.path(), &["verify"], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains(PASSWORD),
        "verify printed the password: {out}"
    );
    let log_file = p.log.clone();
    drop(p);
    let log = std::fs::read_to_string(log_file).expect("the service's log");
    assert!(log.contains("block store opened"), "{log}");
    assert!(!log.contains(PASSWORD), "the log shows the password: {log}");
}

/// A blocking GET over a plain socket: the whole answer.
fn http_get_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer read");
    answer
}

#[test]
fn verify_and_chain_verify_report_a_body_corrupted_in_the_database() {
    let Some(url) = pg::fresh_database() else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let env = [("BLOCK_MANAGER_DATABASE_URL", url.as_str())];
    let p = spawn_process(work.path(), &env);
    for i in 1..=5 {
        let (status, body) = http_post(
            p.port,
            "/api/v1/blocks",
            &create_body(&format!("blk{i}"), 2),
        )
        .expect("create answered");
        assert_eq!(status, 201, "{body}");
    }
    // Read while the service runs: the database is shared, nothing needs stopping.
    let (code, report) = run_verify(work.path(), &env);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("checked 6 blocks"), "{report}");
    assert!(report.contains("consistent"), "{report}");

    // Block 3's stored bytes now name another transaction than the one its merkle root covers.
    let changed = block_on_sql(
        &url,
        "UPDATE bm_blocks SET body = convert_to(replace(convert_from(body, 'UTF8'), 'blk3-0', 'blk3-X'), 'UTF8') WHERE height = 3",
    );
    assert_eq!(changed, 1);
    let (code, report) = run_verify(work.path(), &env);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("INCONSISTENT"), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("error: height 3")),
        "{report}"
    );
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("error: height") && !l.starts_with("error: height 3")),
        "only block 3 is at fault: {report}"
    );

    let (status, body) =
        http_post(p.port, "/api/v1/chain/verify", &json!({})).expect("chain/verify answered");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("chain/verify JSON");
    assert_eq!(body["is_valid"], false, "{body}");
    assert!(body["error_count"].as_u64() >= Some(1), "{body}");
    assert!(
        body.to_string().contains("height 3"),
        "the error names block 3: {body}"
    );
}

/// Runs one statement on database `url` from a plain test: the rows it changed.
fn block_on_sql(url: &str, statement: &str) -> u64 {
    let (url, statement) = (url.to_string(), statement.to_string());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let client = common::pg::connect(&url).await;
                client
                    .execute(statement.as_str(), &[])
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {}", common::pg::describe(&e)))
            })
    })
    .join()
    .expect("SQL thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_into_postgres_copies_an_embedded_upstream_in_batches_and_resumes_after_a_restart()
{
    let Some(url) = pg::fresh_database() else {
        return;
    };
    let upstream = spawn_app(embedded).await;
    let (_, health) = upstream.get_json("/health").await;
    assert_eq!(health["checks"]["store"]["engine"], "embedded", "{health}");
    for i in 0..100 {
        upstream.create_block(&format!("up-{i}"), 1).await;
    }
    // Batches of 70: the engine writes batches of 64 blocks or more with COPY, smaller ones
    // with unnest; both paths run here.
    let app = pg_follower(&url, &upstream.base, |c| {
        c.synchronization.fetch_batch_size = 70;
    })
    .await;
    let s = reaches(&app, "synced", 100).await;
    assert_eq!(s["blocks_synced"], 101, "{s}");
    let theirs = served_hashes(&upstream).await;
    assert_eq!(served_hashes(&app).await, theirs);
    assert_eq!(
        stored_hashes(&url).await,
        theirs,
        "the database holds the chain"
    );
    let v = chain_verify(&app).await;
    assert_eq!(
        (v["is_valid"].clone(), v["blocks_checked"].clone()),
        (json!(true), json!(101)),
        "{v}"
    );
    let (code, out) = run_verify(
        app.dir.path(),
        &[("BLOCK_MANAGER_DATABASE_URL", url.as_str())],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checked 101 blocks"), "{out}");
    let (code, body) = app.post("/api/v1/blocks", &create_body("local", 1)).await;
    assert_eq!(code, 409, "a follower refuses local writes: {body}");
    let dir = app.stop().await;

    // Restarted on the same database (another process dir: nothing local is needed), it resumes
    // from the stored tip rather than copying again.
    drop(dir);
    for i in 100..110 {
        upstream.create_block(&format!("up-{i}"), 1).await;
    }
    let app = pg_follower(&url, &upstream.base, |_| {}).await;
    let s = reaches(&app, "synced", 110).await;
    assert_eq!(
        s["blocks_synced"], 10,
        "only the new blocks are copied: {s}"
    );
    assert_eq!(stored_hashes(&url).await, served_hashes(&upstream).await);
    app.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn follower_into_postgres_rolls_back_a_fork_and_quarantines_orphans_and_a_rejected_block() {
    let Some(url) = pg::fresh_database() else {
        return;
    };
    let a = chains::chain(10, "a");
    let up = StandIn::start(&a).await;
    let app = pg_follower(&url, &up.url(), |_| {}).await;
    reaches(&app, "synced", 10).await;
    assert_eq!(stored_hashes(&url).await, hashes_of(&a));

    // Same height, the last three blocks different: rolled back to 7 in the database.
    let b = chains::branch(&a, 8, 3, "b");
    up.chain(&b);
    let s = eventually(LIMIT, "the fork to be resolved", || async {
        let (_, s) = app.get_json("/api/v1/sync/status").await;
        (s["reorgs"] == 1 && s["state"] == "synced").then_some(s)
    })
    .await;
    assert_eq!(s["last_reorg"]["common_ancestor"], 7, "{s}");
    assert_eq!(s["last_reorg"]["depth"], 3, "{s}");
    assert_eq!(stored_hashes(&url).await, hashes_of(&b));
    assert_eq!(served_hashes(&app).await, hashes_of(&b));
    let rollbacks = sql(&url, "SELECT count(*) FROM bm_rollbacks").await;
    assert_eq!(rollbacks[0].get::<_, i64>(0), 1, "the rollback is logged");
    let orphans = quarantined(&app, &url, "orphaned by fork");
    let mut heights: Vec<u64> = orphans
        .iter()
        .map(|o| o["block"]["height"].as_u64().expect("height"))
        .collect();
    heights.sort();
    assert_eq!(heights, [8, 9, 10]);
    // A transaction of an orphan is no longer found; one of the branch is.
    let (code, _) = app.get_json("/api/v1/transactions/a-9-0").await;
    assert_eq!(code, 404);
    let (code, _) = app.get_json("/api/v1/transactions/b-9-0").await;
    assert_eq!(code, 200);

    // Block 11 claims a hash that is not its own: refused, filed once, never stored.
    let mut bad = b.clone();
    chains::grow(&mut bad, 2, "bad", 1);
    let mut docs: Vec<Value> = bad.iter().map(standin::served).collect();
    let forged = "f".repeat(64);
    docs[11]["hash"] = json!(forged);
    docs[11]["block_id"] = json!(forged);
    docs[12]["previous_hash"] = json!(forged);
    up.documents(docs);
    let s = reaches(&app, "stalled", 10).await;
    assert_eq!(s["last_error"]["code"], "SYNC_001", "{s}");
    let filed = quarantined(&app, &url, "invalid upstream block");
    assert_eq!(filed.len(), 1, "filed once however often it is retried");
    assert_eq!(filed[0]["block"]["hash"], forged);
    let stored = sql(&url, "SELECT count(*) FROM bm_blocks WHERE height > 10").await;
    assert_eq!(
        stored[0].get::<_, i64>(0),
        0,
        "the invalid block was never stored"
    );
    let keys = sql(&url, "SELECT count(*) FROM bm_quarantined").await;
    assert_eq!(
        keys[0].get::<_, i64>(0),
        4,
        "three orphans and the rejected block"
    );

    let mut good = b.clone();
    chains::grow(&mut good, 3, "good", 1);
    up.chain(&good);
    reaches(&app, "synced", 13).await;
    assert_eq!(stored_hashes(&url).await, hashes_of(&good));
    let v = chain_verify(&app).await;
    assert_eq!(v["is_valid"], true, "{v}");
    app.stop().await;
}
