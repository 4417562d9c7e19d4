//! Test harness: real servers on 127.0.0.1:0 with real redb files in temp dirs, either
//! in-process (`spawn_app`) or as a child process of the real binary (`spawn_process`).
//!
//! With `BLOCK_MANAGER_TEST_ENGINE=postgres` every test's chain lives in a PostgreSQL database
//! of its own instead (see [`database_for`]); the temp dir still holds everything else.
#![allow(dead_code)]

use block_manager::config::{Config, Secret, StorageBackend};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The write key every test app is configured with.
pub const WRITE_KEY: &str = "test-write-key";
/// The read key every test app is configured with.
pub const READ_KEY: &str = "test-read-key";
/// The genesis timestamp of the spec's vectors.
pub const GENESIS_TS: &str = "2024-01-01T00:00:00+00:00";
/// The genesis hash for `GENESIS_TS`.
pub const GENESIS_HASH: &str = "82888e4d5293ba78f665b99b731981ae9a077ada2a7ccbc53543380a8f258b06";

/// A config for tests: loopback, port 0, data in `dir`, keys set, generous rate limit.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.service.host = "127.0.0.1".into();
    c.service.port = 0;
    c.service.shutdown_grace_seconds = 5.0;
    c.storage.blocks_path = dir.join("blocks").display().to_string();
    c.storage.min_free_bytes = 0;
    c.chain.genesis_timestamp = Some(GENESIS_TS.into());
    c.security.api_key = Secret::new(WRITE_KEY);
    c.security.read_api_key = Secret::new(READ_KEY);
    c.rate_limits.requests = 1_000_000;
    c.error_handling.validation.quarantine_path = dir.join("quarantine").display().to_string();
    if let Some(url) = database_for(dir) {
        c.storage.postgres.url = Some(url);
    }
    c
}

/// A running in-process server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub done: Option<tokio::task::JoinHandle<()>>,
    /// Whether its chain is in PostgreSQL (nothing local to let go of when it stops).
    pub on_postgres: bool,
}

/// Starts a server with the test config, adjusted by `tweak`.
pub async fn spawn_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(dir, tweak).await
}

/// Starts a server on an existing data folder (restarts keep their data).
pub async fn spawn_app_in(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let on_postgres = config.storage.engine() == StorageBackend::Postgres;
    let running = block_manager::app::start(config)
        .await
        .expect("server starts");
    let base = format!("http://{}", running.addr);
    TestApp {
        addr: running.addr,
        base,
        client: reqwest::Client::new(),
        dir,
        shutdown: running.shutdown,
        done: Some(running.done),
        on_postgres,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET answered")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON with the write key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .header("X-API-Key", WRITE_KEY)
            .json(body)
            .send()
            .await
            .expect("POST answered");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates the next block with `n` transactions; returns the created block.
    pub async fn create_block(&self, tag: &str, n: usize) -> Value {
        let (status, body) = self.post("/api/v1/blocks", &create_body(tag, n)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Graceful stop; waits until the store is closed.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            done.await.expect("server task ends");
        }
        // Tests reopen the store in this process next. The server lets go of it as its
        // connection tasks end, which on a loaded machine can trail the server task. A
        // PostgreSQL database has no file lock to wait for.
        if self.on_postgres {
            return self.dir;
        }
        let config = test_config(self.dir.path());
        eventually(Duration::from_secs(10), "the store to close", || async {
            block_manager::app::open_store(&config).ok().map(drop)
        })
        .await;
        self.dir
    }
}

/// A create-next-block body with `n` transactions whose ids start with `tag`.
pub fn create_body(tag: &str, n: usize) -> Value {
    let txs: Vec<Value> = (0..n)
        .map(|i| {
            json!({"tx_id": format!("{tag}-{i}"), "type": "data_storage", "from_address": "0xaaaa", "to_address": "0xbbbb",
                   "value": i, "fee": 0.01, "data": "x".repeat(200), "signature": format!("sig-{tag}-{i}")})
        })
        .collect();
    json!({"transactions": txs, "producer": "node-test", "signature": format!("block-sig-{tag}")})
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_block-manager"))
}

/// A child process of the real binary, killed on drop.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound then released; the child binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `block-manager` in `workdir` (no config files there unless the test writes them)
/// with the test environment plus `env`, and waits until `/health/ready` answers 200.
pub fn spawn_process(workdir: &Path, env: &[(&str, &str)]) -> Proc {
    spawn_process_on(workdir, free_port(), env)
}

/// [`spawn_process`] on `port` (a restart in place of a killed process keeps its address).
pub fn spawn_process_on(workdir: &Path, port: u16, env: &[(&str, &str)]) -> Proc {
    let log = workdir.join(format!("stdout-{port}-{}.log", unique_suffix()));
    let out = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(binary());
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", port.to_string())
        .env("BLOCK_MANAGER_API_KEY", WRITE_KEY)
        .env("BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP", GENESIS_TS)
        .env("BLOCK_MANAGER__RATE_LIMITS__ENABLED", "false")
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .stdin(Stdio::null());
    if let Some(url) = database_for(workdir) {
        cmd.env("BLOCK_MANAGER_DATABASE_URL", url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("binary starts");
    let mut p = Proc { child, port, log };
    wait_ready(&mut p, Duration::from_secs(20));
    p
}

/// Blocks until `/health/ready` is 200 on the process's port, or panics with its log.
pub fn wait_ready(p: &mut Proc, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!(
                "block-manager exited early with {status}: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        if http_status(p.port, "/health/ready") == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready in time: {}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking GET over a plain socket: the status code, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends a signal to a child.
pub fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.child.id().to_string())
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Waits for a child to exit; returns its code.
pub fn wait_exit(p: &mut Proc, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            return status.code();
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A blocking POST of JSON with the write key over a plain socket: status and body.
pub fn http_post(port: u16, path: &str, body: &serde_json::Value) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let body = serde_json::to_vec(body).ok()?;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(&body).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        answer
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}

/// Runs `block-manager verify` on the store under `workdir`: exit code and its report.
pub fn run_verify(workdir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(binary());
    cmd.current_dir(workdir).arg("verify");
    if let Some(url) = database_for(workdir) {
        cmd.env("BLOCK_MANAGER_DATABASE_URL", url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("verify runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// PostgreSQL databases for the tests of the postgres engine.
pub mod pg;

/// Picks the engine the end-to-end tests run on: `postgres`, or unset / `embedded` for the
/// embedded files.
pub const ENGINE_ENV: &str = "BLOCK_MANAGER_TEST_ENGINE";

/// The file inside a test's dir that remembers its database, so a restart on the same dir finds
/// the same chain.
const DATABASE_URL_FILE: &str = "postgres-database-url";

/// True when this run puts the tests' chains in PostgreSQL (`BLOCK_MANAGER_TEST_ENGINE=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var(ENGINE_ENV).as_deref() {
        Ok("postgres") => true,
        Ok("") | Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("{ENGINE_ENV}={other}: expected postgres or embedded"),
    }
}

/// The database of the chain kept under `dir` on the postgres engine; `None` on the embedded
/// engine. The first call for a dir creates a fresh database and writes its URL into the dir;
/// later calls (a restart, a child process, `verify`) read it back.
pub fn database_for(dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let file = dir.join(DATABASE_URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url.trim().to_string());
    }
    // Asked for explicitly, so a missing server is a failure, not a silent run on files.
    let url = pg::fresh_database().unwrap_or_else(|| {
        panic!(
            "{ENGINE_ENV}=postgres but {} is unset: start a server first (source scripts/lib.sh; pg_start)",
            pg::DATABASE_URL_ENV
        )
    });
    std::fs::create_dir_all(dir).expect("test dir");
    std::fs::write(&file, &url).expect("database URL file");
    Some(url)
}

/// Skips the calling test on the postgres engine, saying why: for tests whose subject is the
/// embedded engine's local files. True when skipped (`if skip_on_postgres("...") { return; }`).
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        println!("postgres engine: skipped ({why})");
        return true;
    }
    false
}

/// The quarantine's entries for the chain kept under `dir`, oldest first: the files of its
/// folder on the embedded engine, the rows of `bm_quarantine` when the chain is in `database`
/// (on PostgreSQL replicas share one quarantine there). Callable from async tests: the query
/// runs on a thread and runtime of its own.
pub fn quarantine_entries(dir: &Path, database: Option<&str>) -> Vec<Value> {
    let Some(url) = database.map(str::to_string) else {
        let Ok(entries) = std::fs::read_dir(dir.join("quarantine")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        return files
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .collect();
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let client = pg::connect(&url).await;
            client
                .query("SELECT entry FROM bm_quarantine ORDER BY id", &[])
                .await
                .expect("read bm_quarantine")
                .iter()
                .filter_map(|r| serde_json::from_slice::<Value>(r.get::<_, &[u8]>(0)).ok())
                .collect()
        })
    })
    .join()
    .expect("quarantine query thread")
}

/// A suffix no earlier call in this process returned: log files of restarts stay apart.
fn unique_suffix() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
