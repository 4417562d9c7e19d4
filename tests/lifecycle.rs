//! The binary's life: bad configuration exits 2 with one line, signals drain and exit 0,
//! the healthcheck command, binding, log files, and a store held by another process.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(
    workdir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary());
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("BLOCK_MANAGER_PORT", "abc")],
            "invalid BLOCK_MANAGER_PORT 'abc': expected an integer 1-65535",
        ),
        (
            &[("BLOCK_MANAGER_PORT", "70000")],
            "invalid BLOCK_MANAGER_PORT '70000'",
        ),
        (
            &[("BLOCK_MANAGER_HOST", "no-such-host.invalid")],
            "invalid BLOCK_MANAGER_HOST 'no-such-host.invalid'",
        ),
        (
            &[("BLOCK_MANAGER__STORAGE__CACHE_SIZE_MB", "lots")],
            "invalid BLOCK_MANAGER__STORAGE__CACHE_SIZE_MB 'lots'",
        ),
    ];
    for (env, expected) in cases {
        let started = Instant::now();
        let (code, _, stderr) = run(dir.path(), &[], env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/block-manager-config.yaml"),
        "service:\n  port: 1\n  host: [x\n",
    )
    .unwrap();
    let (code, _, stderr) = run(dir.path(), &["config", "check"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("invalid YAML in config/block-manager-config.yaml at line"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("config/block-manager-config.yaml"),
        "service:\n  host: ${UNSET_HOST_VAR}\n",
    )
    .unwrap();
    let (code, _, stderr) = run(dir.path(), &[], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("service.host") && stderr.contains("UNSET_HOST_VAR"),
        "{stderr}"
    );
}

#[test]
fn config_check_and_show_work_on_the_repo_files_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "config",
            "check",
            "--config",
            &format!("{repo}/block-manager-config.yaml"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("configuration is valid"));
    let (code, stdout, _) = run(
        dir.path(),
        &[
            "config",
            "show",
            "--config",
            &format!("{repo}/block-manager-config.yaml"),
        ],
        &[
            ("BLOCK_MANAGER_API_KEY", "supersecret"),
            ("MONGODB_URL", "mongodb://lucid:s3cret@db:27017/x"),
        ],
    );
    assert_eq!(code, Some(0));
    assert!(
        !stdout.contains("supersecret") && !stdout.contains("s3cret"),
        "{stdout}"
    );
    assert!(
        stdout.contains("security.api_key = \"<redacted>\"    # BLOCK_MANAGER_API_KEY"),
        "{stdout}"
    );
    assert!(stdout.contains("service.port = 8086"), "{stdout}");

    // Sections passed through from Lucid's files (never read by us) are shown too, and their
    // credentials are not.
    let file = dir.path().join("passthrough.yaml");
    std::fs::write(
        &file,
        "dependencies:\n  redis:\n    host: cache\n    password: hunter2\n    auth_token: tok-123\n  engine:\n    url: http://engine:8084/api?apikey=qs-secret\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        dir.path(),
        &["config", "show", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    for secret in ["hunter2", "tok-123", "qs-secret"] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
    assert!(stdout.contains("cache"), "{stdout}");
}

#[test]
fn idle_server_exits_0_within_2_seconds_of_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    for sig in ["TERM", "INT"] {
        let mut p = spawn_process(dir.path(), &[]);
        let started = Instant::now();
        signal(&p, sig);
        assert_eq!(
            wait_exit(&mut p, Duration::from_secs(2)),
            Some(0),
            "SIG{sig}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn a_request_in_flight_at_sigterm_still_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_process(dir.path(), &[]);
    let body = serde_json::to_vec(&create_body("inflight", 1)).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    write!(
        s,
        "POST /api/v1/blocks HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..10]).unwrap();
    s.flush().unwrap();
    // The request is now in flight: headers read, body still coming.
    std::thread::sleep(Duration::from_millis(200));
    signal(&p, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)), Some(0));
}

#[test]
fn healthcheck_exits_0_when_healthy_and_1_within_its_timeout_when_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_process(dir.path(), &[("BLOCK_MANAGER_HOST", "0.0.0.0")]);
    let port = p.port.to_string();
    let (code, stdout, _) = run(
        dir.path(),
        &["healthcheck"],
        &[
            ("BLOCK_MANAGER_HOST", "0.0.0.0"),
            ("BLOCK_MANAGER_PORT", &port),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}");
    drop(p);
    let free = free_port().to_string();
    let started = Instant::now();
    let (code, stdout, _) = run(
        dir.path(),
        &["healthcheck", "--timeout", "2"],
        &[("BLOCK_MANAGER_PORT", &free)],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Something that accepts but never answers: still 1, bounded by the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let started = Instant::now();
    let (code, _, _) = run(
        dir.path(),
        &["healthcheck", "--timeout", "1"],
        &[
            ("BLOCK_MANAGER_HOST", "127.0.0.1"),
            ("BLOCK_MANAGER_PORT", &port),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn port_zero_binds_a_free_port_and_logs_it_and_ipv6_loopback_binds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut child = Command::new(binary())
        .current_dir(dir.path())
        .env("BLOCK_MANAGER_HOST", "::1")
        .env("BLOCK_MANAGER_PORT", "0")
        .env("BLOCK_MANAGER_URL", "http://advertised.example:8086")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("listening")) {
            assert!(
                line.contains("advertised") && line.contains("advertised.example"),
                "{line}"
            );
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            break addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
        assert!(Instant::now() < deadline, "no listening line: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(port, 0);
    get_200("::1", port, "/health/live", "");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn request_lines_and_errors_reach_the_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_process(dir.path(), &[]);
    assert_eq!(http_status(p.port, "/api/v1/blocks/height/0"), Some(200));
    assert_eq!(http_status(p.port, "/nope"), Some(404));
    let log = dir.path().join("logs/block-manager.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // The access line reads `GET <route> <status> <latency>ms request_id=...`.
        if text.contains("GET /api/v1/blocks/height/{height} 200 ") && text.contains(" 404 ") {
            assert!(text.contains("request_id="), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "request lines not in {}: {text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.path().join("logs/block-manager-errors.log").exists());
}

/// GETs `path` from `host:port` over a plain socket, with `headers` (each ending in CRLF), and
/// asserts a 200.
fn get_200(host: &str, port: u16, path: &str, headers: &str) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect((host, port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// GETs `path` with an `X-Request-Id`, so that the request's log line can be found.
fn get_with_id(port: u16, path: &str, id: &str) {
    get_200("127.0.0.1", port, path, &format!("X-Request-Id: {id}\r\n"));
}

#[test]
fn json_console_lines_carry_method_route_status_latency_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_process(dir.path(), &[("BLOCK_MANAGER__LOGGING__FORMAT", "json")]);
    get_with_id(p.port, "/api/v1/blocks/height/0", "json-line-1");
    signal(&p, "TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)), Some(0));
    let out = std::fs::read_to_string(&p.log).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|v| v["request_id"] == "json-line-1")
        .unwrap_or_else(|| panic!("no line for the request: {out}"));
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/api/v1/blocks/height/{height}", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
}

#[test]
fn rust_log_and_log_level_decide_what_is_logged() {
    for (env, logged) in [
        (("LOG_LEVEL", "WARNING"), false),
        (("RUST_LOG", "warn,block_manager::http=info"), true),
        (("RUST_LOG", "error"), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn_process(dir.path(), &[env]);
        get_with_id(p.port, "/health/live", "level-probe");
        signal(&p, "TERM");
        assert_eq!(wait_exit(&mut p, Duration::from_secs(5)), Some(0));
        let out = std::fs::read_to_string(&p.log).unwrap();
        assert_eq!(out.contains("level-probe"), logged, "{env:?}: {out}");
    }
}

#[test]
fn unwritable_log_folder_warns_once_and_the_service_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the log folder should be: no user, root included, can create logs under it.
    std::fs::write(dir.path().join("logs"), b"not a folder").unwrap();
    let p = spawn_process(dir.path(), &[]);
    assert_eq!(http_status(p.port, "/health"), Some(200));
    let out = std::fs::read_to_string(&p.log).unwrap();
    let warnings = out
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("log handler"))
        .count();
    assert_eq!(warnings, 1, "{out}");
}

#[test]
fn a_second_process_on_the_same_store_fails_within_a_second_with_a_clear_message() {
    if skip_on_postgres(
        "the lock is the embedded engine's on its file; replicas share a database by design",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _first = spawn_process(dir.path(), &[]);
    let stderr = refused_within_a_second(dir.path());
    assert!(
        stderr.contains("in use by another running block-manager"),
        "{stderr}"
    );
}

/// Starts the service on the store under `dir`, which must refuse it: exit 2 in under a second.
/// Returns what it printed.
fn refused_within_a_second(dir: &std::path::Path) -> String {
    let started = Instant::now();
    let port = free_port().to_string();
    let (code, _, stderr) = run(
        dir,
        &[],
        &[
            ("BLOCK_MANAGER_HOST", "127.0.0.1"),
            ("BLOCK_MANAGER_PORT", &port),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    stderr
}

/// A store under `dir` holding genesis, left by a clean shutdown.
fn genesis_store(dir: &std::path::Path) {
    let mut p = spawn_process(dir, &[]);
    signal(&p, "TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)), Some(0));
}

#[test]
fn a_store_of_a_newer_format_stops_start_up_within_a_second_with_exit_2() {
    if skip_on_postgres("the newer format is written into the embedded engine's redb file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    genesis_store(dir.path());
    // As a later release would leave it: the same file, a higher format version.
    {
        let db = redb::Database::open(dir.path().join("data/blocks/blocks.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("format_version", 99u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let stderr = refused_within_a_second(dir.path());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("format version 99"), "{stderr}");
}

#[test]
fn verify_command_reports_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    genesis_store(dir.path());
    // On the postgres engine the chain is in the test's database, which `run` does not pass on.
    let url = database_for(dir.path());
    let env: Vec<(&str, &str)> = url
        .iter()
        .map(|u| ("BLOCK_MANAGER_DATABASE_URL", u.as_str()))
        .collect();
    let (code, stdout, stderr) = run(dir.path(), &["verify"], &env);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("checked 1 blocks") && stdout.contains("consistent"),
        "{stdout}"
    );
}

#[test]
fn a_request_stuck_past_the_grace_period_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_process(
        dir.path(),
        &[("BLOCK_MANAGER__SERVICE__SHUTDOWN_GRACE_SECONDS", "1")],
    );
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    write!(
        s,
        "POST /api/v1/blocks HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    signal(&p, "TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(4)), Some(0));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

/// Starts the binary without waiting for it, SIGTERM and SIGINT blocked in the child from the
/// first instruction. A blocked signal stays pending until the binary takes it over, just as
/// PID 1 (which has no default action) loses every signal that arrives before its handler:
/// so a round fails exactly when the binary does not handle a signal from its first instant.
fn spawn_with_termination_blocked(workdir: &std::path::Path) -> Proc {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let log = workdir.join(format!("stdout-{port}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(binary());
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", port.to_string())
        .env("BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP", GENESIS_TS)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: sigemptyset, sigaddset and
    // pthread_sigmask, on a local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    Proc { child, port, log }
}

#[test]
fn sigterm_at_any_instant_of_start_up_ends_the_process_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..=20u64 {
        let mut p = spawn_with_termination_blocked(dir.path());
        // 0-20 ms: before main, during config load, store open, binding, or just after.
        std::thread::sleep(Duration::from_millis(round));
        let started = Instant::now();
        signal(&p, "TERM");
        let code = wait_exit(&mut p, Duration::from_secs(5));
        assert_eq!(
            code,
            Some(0),
            "round {round}: exit {code:?} after {:?}: {}",
            started.elapsed(),
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
    }
}
