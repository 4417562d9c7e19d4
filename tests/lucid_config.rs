//! Lucid's own files (tests/fixtures/lucid, written from the key list of every Lucid
//! block-manager file): every honoured key changes behaviour, every checked key refuses a
//! wrong value with exit 2, and every unused key is named once at start-up.

// figment's Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;

use block_manager::config::{Config, LoadOptions, Loaded, load};
use figment::Jail;
use serde_json::Value;
use standin::{Fault, StandIn};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lucid");
const MAIN_YAML: &str = "block-manager-config.yaml";
const MAIN_JSON: &str = "block-manager-config.json";
const ERRORS: &str = "block-manager-errors.yaml";
const LOGGING: &str = "block-manager-logging.yaml";
const LIMIT: Duration = Duration::from_secs(30);

/// Keys of Lucid's main file (YAML form) and errors file that are accepted and unused.
const UNUSED_COMMON: [&str; 37] = [
    "dependencies.mongodb_url",
    "dependencies.redis_url",
    "storage.cache_path",
    "storage.ensure_permissions",
    "storage.owner",
    "security.read_only_root",
    "monitoring.expose_health",
    "monitoring.expose_metrics",
    "error_handling.mongodb.connection_timeout_seconds",
    "error_handling.mongodb.operation_timeout_seconds",
    "error_handling.mongodb.retry_on_connection_error",
    "error_handling.mongodb.retry_on_timeout",
    "error_handling.mongodb.max_connection_retries",
    "error_handling.block_storage.retry_on_write_failure",
    "error_handling.block_storage.retry_on_read_failure",
    "error_handling.block_storage.max_storage_retries",
    "error_handling.block_storage.verify_after_write",
    "error_handling.block_storage.verify_after_read",
    "error_handling.synchronization.retry_on_sync_failure",
    "error_handling.synchronization.max_sync_retries",
    "error_handling.synchronization.continue_on_partial_failure",
    "error_handling.validation.reject_invalid_blocks",
    "error_handling.validation.strict_mode",
    "error_handling.recovery.enabled",
    "error_handling.recovery.auto_recovery",
    "error_handling.recovery.recovery_timeout_seconds",
    "error_handling.recovery.verify_integrity_on_recovery",
    "error_handling.recovery.rebuild_indexes_on_recovery",
    "error_handling.recovery.notify_on_critical_error",
    "error_handling.reporting.log_all_errors",
    "error_handling.reporting.log_error_stack_traces",
    "error_handling.reporting.error_summary_interval_seconds",
    "error_handling.reporting.max_errors_per_summary",
    "error_handling.degradation.enabled",
    "error_handling.degradation.read_only_mode_on_critical_error",
    "error_handling.degradation.disable_sync_on_engine_error",
    "error_handling.degradation.cache_only_mode_on_storage_error",
];
/// Checked softly: named once when the process runs as another uid / gid than the file's.
const SOFT_CHECKED: [(&str, &str); 2] = [("security.user", "Uid:"), ("security.group", "Gid:")];
const UNUSED_YAML_ONLY: [&str; 3] = [
    "dependencies.healthcheck.interval_seconds",
    "dependencies.healthcheck.retries",
    "dependencies.healthcheck.start_period_seconds",
];
const UNUSED_JSON_ONLY: [&str; 3] = [
    "healthcheck.interval_seconds",
    "healthcheck.retries",
    "healthcheck.start_period_seconds",
];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture")
}

/// `text` with `from` replaced once by `to` (which must be there: a fixture edit that
/// silently missed would test nothing).
fn patch(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture has no {from:?}");
    text.replacen(from, to, 1)
}

/// The fixture set of a YAML deployment, with edits.
fn yaml_files(main: &[(&str, &str)], errors: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut m = fixture(MAIN_YAML);
    for (from, to) in main {
        m = patch(&m, from, to);
    }
    let mut e = fixture(ERRORS);
    for (from, to) in errors {
        e = patch(&e, from, to);
    }
    vec![(MAIN_YAML, m), (ERRORS, e), (LOGGING, fixture(LOGGING))]
}

/// Writes `files` into `config/` of a jail, sets the test environment plus `env`, loads with
/// `main` as `--config`, and hands the result to `f` (still inside the jail: its folder is
/// the working directory, so relative data paths land there).
fn in_jail<T>(
    files: &[(&str, String)],
    main: &str,
    env: &[(&str, &str)],
    f: impl FnOnce(Result<Loaded, String>, &Path) -> T,
) -> T {
    let mut out = None;
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        for (name, text) in files {
            jail.create_file(format!("config/{name}"), text)?;
        }
        jail.set_env("BLOCK_MANAGER_HOST", "127.0.0.1");
        jail.set_env("BLOCK_MANAGER_PORT", "0");
        jail.set_env("BLOCK_STORAGE_PATH", "data/blocks");
        jail.set_env("BLOCK_MANAGER_API_KEY", common::WRITE_KEY);
        jail.set_env(
            "BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP",
            common::GENESIS_TS,
        );
        for (k, v) in env {
            jail.set_env(k, v);
        }
        let loaded = load(&LoadOptions {
            config_path: Some(jail.directory().join("config").join(main)),
            ..LoadOptions::default()
        })
        .map_err(|e| e.to_string());
        out = Some(f(loaded, jail.directory()));
        Ok(())
    });
    out.expect("jail ran")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A running app from a loaded config.
async fn start(config: Config) -> (String, block_manager::app::Running) {
    let running = block_manager::app::start(config)
        .await
        .expect("server starts");
    (format!("http://{}", running.addr), running)
}

async fn stop(running: block_manager::app::Running) {
    running.shutdown.cancel();
    let _ = running.done.await;
}

async fn get_json(url: &str) -> (u16, Value) {
    let res = reqwest::get(url).await.expect("answered");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Every line the loader will log once at start-up.
fn start_up_lines(l: &Loaded) -> Vec<String> {
    l.warnings.iter().chain(&l.notices).cloned().collect()
}

/// How many lines name `key` as a word of their own.
fn naming(lines: &[String], key: &str) -> usize {
    lines
        .iter()
        .filter(|line| {
            line.split_whitespace().any(|w| {
                w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '.') == key
            })
        })
        .count()
}

fn assert_each_unused_key_named_once(lines: &[String], extra: &[&str]) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let soft = SOFT_CHECKED.iter().filter(|(_, field)| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|ids| ids.split_whitespace().nth(1))
            != Some("65532")
    });
    let expected: Vec<&str> = UNUSED_COMMON
        .iter()
        .chain(extra)
        .copied()
        .chain(soft.map(|(key, _)| *key))
        .collect();
    for key in &expected {
        assert_eq!(naming(lines, key), 1, "{key} named once in {lines:#?}");
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "no other start-up line: {lines:#?}"
    );
}

#[test]
fn every_unused_key_of_the_yaml_files_is_named_once_and_nothing_else_is() {
    in_jail(&yaml_files(&[], &[]), MAIN_YAML, &[], |l, _| {
        let l = l.expect("Lucid's files load");
        assert_eq!(l.files.len(), 3, "{:?}", l.files);
        assert_each_unused_key_named_once(&start_up_lines(&l), &UNUSED_YAML_ONLY);
    });
}

#[test]
fn every_unused_key_of_the_json_file_is_named_once_and_nothing_else_is() {
    let files = vec![
        (MAIN_JSON, fixture(MAIN_JSON)),
        (ERRORS, fixture(ERRORS)),
        (LOGGING, fixture(LOGGING)),
    ];
    in_jail(&files, MAIN_JSON, &[], |l, _| {
        let l = l.expect("Lucid's files load");
        // Its top-level retry keys that disagree with the errors file (which wins) are named
        // once each too; the two that agree are not.
        let conflicts = [
            "error_handling.max_retries",
            "error_handling.retry_delay_seconds",
            "error_handling.backoff_multiplier",
            "error_handling.max_backoff_seconds",
        ];
        let extra: Vec<&str> = UNUSED_JSON_ONLY.iter().chain(&conflicts).copied().collect();
        assert_each_unused_key_named_once(&start_up_lines(&l), &extra);
    });
}

#[test]
fn json_top_level_retry_keys_apply_unless_the_errors_file_sets_them() {
    let alone = vec![(MAIN_JSON, fixture(MAIN_JSON)), (LOGGING, fixture(LOGGING))];
    in_jail(&alone, MAIN_JSON, &[], |l, _| {
        let c = serde_json::to_value(l.expect("loads").config).unwrap();
        let r = &c["error_handling"]["retry"];
        assert_eq!(r["max_retries"], 2);
        assert_eq!(r["retry_delay_seconds"], 0.5);
        assert_eq!(r["backoff_multiplier"], 3.0);
        assert_eq!(r["max_backoff_seconds"], 20.0);
        assert_eq!(c["healthcheck"]["timeout_seconds"], 10.0);
    });
    let both = vec![
        (MAIN_JSON, fixture(MAIN_JSON)),
        (ERRORS, fixture(ERRORS)),
        (LOGGING, fixture(LOGGING)),
    ];
    in_jail(&both, MAIN_JSON, &[], |l, _| {
        let c = serde_json::to_value(l.expect("loads").config).unwrap();
        let r = &c["error_handling"]["retry"];
        assert_eq!(
            (&r["max_retries"], &r["retry_delay_seconds"]),
            (&3.into(), &1.0.into())
        );
    });
}

#[test]
fn max_requests_answers_429_on_the_sixth_request_in_the_window() {
    let files = yaml_files(&[("max_requests: 100", "max_requests: 5")], &[]);
    in_jail(&files, MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let url = format!("{base}/api/v1/chain/height");
            for n in 1..=5 {
                assert_eq!(get_json(&url).await.0, 200, "request {n}");
            }
            let (status, body) = get_json(&url).await;
            assert_eq!(status, 429, "{body}");
            stop(running).await;
        });
    });
}

/// Runs a follower of a failing stand-in under Lucid's files with `errors` edits; returns
/// the requests the stand-in saw once `done` holds for the follower's sync status.
fn follow_failing_upstream(
    errors: &[(&str, &str)],
    done: impl Fn(&Value, u64) -> bool,
) -> (u64, Value, String) {
    follow_upstream(Fault::ServerError, &[], errors, done)
}

/// Like [`follow_failing_upstream`], for a stand-in with `fault` and main-file `main` edits.
fn follow_upstream(
    fault: Fault,
    main: &[(&str, &str)],
    errors: &[(&str, &str)],
    done: impl Fn(&Value, u64) -> bool,
) -> (u64, Value, String) {
    let mut edits = vec![
        ("retry_delay_seconds: 1", "retry_delay_seconds: 0.01"),
        ("sync_backoff_seconds: 5", "sync_backoff_seconds: 0.01"),
        ("max_backoff_seconds: 30", "max_backoff_seconds: 0.05"),
    ];
    edits.extend_from_slice(errors);
    let files = yaml_files(main, &edits);
    let rt = runtime();
    let upstream = rt.block_on(async {
        let upstream = StandIn::start(&[]).await;
        upstream.fault(fault);
        upstream
    });
    let url = upstream.url();
    let env = [("BLOCKCHAIN_ENGINE_URL", url.as_str())];
    in_jail(&files, MAIN_YAML, &env, |l, _| {
        rt.block_on(async {
            let (base, running) = start(l.expect("loads").config).await;
            let deadline = Instant::now() + LIMIT;
            let status = loop {
                let (_, status) = get_json(&format!("{base}/api/v1/sync/status")).await;
                if done(&status, upstream.requests()) {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out: {status}, {} requests",
                    upstream.requests()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let seen = upstream.requests();
            let metrics = reqwest::get(format!("{base}/metrics"))
                .await
                .expect("metrics answered")
                .text()
                .await
                .unwrap_or_default();
            stop(running).await;
            (seen, status, metrics)
        })
    })
}

fn circuit_open(status: &Value, _: u64) -> bool {
    status["circuit"]["state"] == "open"
}

const OPEN_AFTER_ONE_ROUND: [(&str, &str); 2] = [
    ("failure_threshold: 5", "failure_threshold: 1"),
    (
        "recovery_timeout_seconds: 60",
        "recovery_timeout_seconds: 3600",
    ),
];

#[test]
fn engine_max_retries_one_makes_exactly_two_attempts() {
    let mut edits = OPEN_AFTER_ONE_ROUND.to_vec();
    edits.push((
        "    max_retries: 3\n    circuit_breaker",
        "    max_retries: 1\n    circuit_breaker",
    ));
    let (requests, _, metrics) = follow_failing_upstream(&edits, circuit_open);
    assert_eq!(requests, 2, "one try and one retry");
    assert!(
        metrics.contains("block_manager_sync_retries_total{reason=\"server_error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn retry_on_5xx_false_makes_one_attempt_on_a_500() {
    let mut edits = OPEN_AFTER_ONE_ROUND.to_vec();
    edits.push(("retry_on_5xx: true", "retry_on_5xx: false"));
    let (requests, _, _) = follow_failing_upstream(&edits, circuit_open);
    assert_eq!(requests, 1);
}

#[test]
fn retry_disabled_makes_one_attempt() {
    let mut edits = OPEN_AFTER_ONE_ROUND.to_vec();
    edits.push((
        "  retry:\n    enabled: true",
        "  retry:\n    enabled: false",
    ));
    let (requests, _, _) = follow_failing_upstream(&edits, circuit_open);
    assert_eq!(requests, 1);
}

#[test]
fn circuit_breaker_disabled_never_opens() {
    let edits = [
        (
            "enabled: true\n      failure_threshold: 5",
            "enabled: false\n      failure_threshold: 1",
        ),
        (
            "    max_retries: 3\n    circuit_breaker",
            "    max_retries: 0\n    circuit_breaker",
        ),
    ];
    let (requests, status, _) = follow_failing_upstream(&edits, |s, n| {
        n >= 6 && s["circuit"]["consecutive_failures"].as_u64() >= Some(6)
    });
    assert!(requests >= 6);
    assert_eq!(status["circuit"]["state"], "closed", "{status}");
    assert_eq!(status["state"], "stalled", "{status}");
}

#[test]
fn metrics_follow_metrics_enabled_and_not_expose_metrics() {
    // Lucid's file says expose_metrics: false while its Prometheus scrapes: still served.
    in_jail(&yaml_files(&[], &[]), MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
            assert_eq!(res.status(), 200);
            stop(running).await;
        });
    });
    let off = yaml_files(&[("metrics_enabled: true", "metrics_enabled: false")], &[]);
    in_jail(&off, MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let (status, body) = get_json(&format!("{base}/metrics")).await;
            assert_eq!(status, 404);
            assert_eq!(body["detail"]["error_code"], "MON_001", "{body}");
            stop(running).await;
        });
    });
}

#[test]
fn quarantine_invalid_blocks_false_keeps_rejected_blocks_out_of_quarantine() {
    for (keep, files_expected) in [("true", 1), ("false", 0)] {
        let files = yaml_files(
            &[],
            &[(
                "quarantine_invalid_blocks: true",
                &format!("quarantine_invalid_blocks: {keep}"),
            )],
        );
        in_jail(&files, MAIN_YAML, &[], |l, dir| {
            let config = l.expect("loads").config;
            runtime().block_on(async {
                let (base, running) = start(config).await;
                let res = reqwest::Client::new()
                    .post(format!("{base}/api/v1/blocks/submit"))
                    .header("X-API-Key", common::WRITE_KEY)
                    .json(&serde_json::json!({"height": -1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 422);
                stop(running).await;
            });
            let kept = std::fs::read_dir(dir.join("data/quarantine"))
                .map(|d| d.count())
                .unwrap_or(0);
            assert_eq!(kept, files_expected, "quarantine_invalid_blocks: {keep}");
        });
    }
}

#[test]
fn engine_url_of_dependencies_makes_a_follower() {
    let files = yaml_files(
        &[(
            "blockchain_engine_url: ${BLOCKCHAIN_ENGINE_URL:-}",
            "blockchain_engine_url: http://127.0.0.1:9",
        )],
        &[],
    );
    in_jail(&files, MAIN_YAML, &[], |l, _| {
        let c = l.expect("loads").config;
        assert_eq!(c.upstream(), Some("http://127.0.0.1:9"));
    });
}

/// `block-manager <args>` in `dir` with only `env`: exit code and stderr+stdout.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(common::binary())
        .current_dir(dir)
        .env_clear()
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

fn write_files(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join("config").join(name), text).unwrap();
    }
}

#[test]
fn checked_keys_with_wrong_values_stop_config_check_with_exit_2() {
    for (from, to, key) in [
        ("base_path: /api/v1", "base_path: /api/v2", "api.base_path"),
        (
            "latest: /blocks/latest",
            "latest: /blocks/newest",
            "api.blocks.latest",
        ),
        (
            "by_height: /blocks/height/{height}",
            "by_height: /blocks/at/{height}",
            "api.blocks.by_height",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &yaml_files(&[(from, to)], &[]));
        let (code, out) = run(dir.path(), &["config", "check"], &[]);
        assert_eq!(code, Some(2), "{key}: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| !l.starts_with("warning:")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(
            errors[0].contains(key) && errors[0].contains(MAIN_YAML),
            "{out}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &yaml_files(&[], &[]));
    let (code, out) = run(dir.path(), &["config", "check"], &[]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn config_show_names_the_file_of_each_lucid_key_and_redacts_credentials() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &yaml_files(
            &[
                ("max_requests: 100", "max_requests: 7"),
                (
                    "  redis_url:",
                    "  auth_token: tok-123\n  engine_api_key: key-456\n  admin_password: pw-789\n  redis_url:",
                ),
            ],
            &[],
        ),
    );
    let (code, out) = run(dir.path(), &["config", "show"], &[]);
    assert_eq!(code, Some(0), "{out}");
    for secret in [
        "lucid-db-pass",
        "redis-pass",
        "authSource",
        "tok-123",
        "key-456",
        "pw-789",
    ] {
        assert!(!out.contains(secret), "{secret} shown: {out}");
    }
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} not shown: {out}"))
            .to_string()
    };
    // Shown by Lucid's name, which it was written as.
    assert!(
        line("rate_limits.max_requests").contains("= 7")
            && line("rate_limits.max_requests").contains(MAIN_YAML)
    );
    assert!(line("error_handling.retry.max_retries").contains(ERRORS));
    assert!(line("dependencies.mongodb_url").contains("lucid-mongodb:27017"));
}

#[test]
fn healthcheck_probes_the_path_and_timeout_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let port_s = port.to_string();
    let env = [
        ("BLOCK_MANAGER_HOST", "127.0.0.1"),
        ("BLOCK_MANAGER_PORT", port_s.as_str()),
        (
            "BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP",
            common::GENESIS_TS,
        ),
        ("BLOCK_STORAGE_PATH", "data/blocks"),
    ];
    write_files(dir.path(), &yaml_files(&[], &[]));
    let mut server = common::Proc {
        child: Command::new(common::binary())
            .current_dir(dir.path())
            .env_clear()
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("server starts"),
        port,
        log: dir.path().join("none"),
    };
    let deadline = Instant::now() + LIMIT;
    while common::http_status(port, "/health/ready") != Some(200) {
        assert!(Instant::now() < deadline, "server not ready");
        assert!(server.child.try_wait().unwrap().is_none(), "server exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out) = run(dir.path(), &["healthcheck"], &env);
    assert_eq!(code, Some(0), "{out}");
    // A path the service does not serve: the probe must ask it, and fail.
    write_files(
        dir.path(),
        &yaml_files(&[("    path: /health\n", "    path: /health/none\n")], &[]),
    );
    let (code, out) = run(dir.path(), &["healthcheck"], &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("404"), "{out}");
}

#[test]
fn log_validation_errors_logs_each_rejected_block_once_at_warning() {
    for (log, expected) in [("true", 1), ("false", 0)] {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &yaml_files(
                &[],
                &[(
                    "log_validation_errors: true",
                    &format!("log_validation_errors: {log}"),
                )],
            ),
        );
        let mut p = common::spawn_process(dir.path(), &[]);
        let bad = serde_json::json!({"height": 7, "hash": "not-a-hash"});
        let (status, _) =
            common::http_post(p.port, "/api/v1/blocks/submit", &bad).expect("answered");
        assert_eq!(status, 422);
        // Stopping flushes the log.
        common::signal(&p, "TERM");
        assert_eq!(common::wait_exit(&mut p, LIMIT), Some(0));
        let out = std::fs::read_to_string(&p.log).unwrap();
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("invalid block rejected"))
            .collect();
        assert_eq!(lines.len(), expected, "log_validation_errors: {log}: {out}");
        if let Some(line) = lines.first() {
            assert!(line.contains("WARN"), "{line}");
            assert!(
                line.contains("height=7") && line.contains("not-a-hash"),
                "{line}"
            );
        }
    }
}

/// A fixture main file (`MAIN_YAML` or `MAIN_JSON`) with each `(dotted key, value)` set; the
/// key must already be in the file (an edit that missed would test nothing).
fn main_file_with(name: &str, edits: &[(&str, Value)]) -> String {
    let text = fixture(name);
    let mut doc: Value = if name == MAIN_JSON {
        serde_json::from_str(&text).expect("JSON fixture")
    } else {
        yaml_serde::from_str(&text).expect("YAML fixture")
    };
    for (key, value) in edits {
        let mut at = &mut doc;
        for part in key.split('.') {
            at = at
                .get_mut(part)
                .unwrap_or_else(|| panic!("{name} has no {key}"));
        }
        *at = value.clone();
    }
    if name == MAIN_JSON {
        serde_json::to_string_pretty(&doc).expect("JSON")
    } else {
        yaml_serde::to_string(&doc).expect("YAML")
    }
}

/// Loads `files` with `main` as `--config` and no environment at all.
fn load_alone(files: &[(&str, String)], main: &str) -> Loaded {
    let mut out = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        for (name, text) in files {
            jail.create_file(format!("config/{name}"), text)?;
        }
        out = Some(
            load(&LoadOptions {
                config_path: Some(jail.directory().join("config").join(main)),
                ..LoadOptions::default()
            })
            .unwrap_or_else(|e| panic!("{main} loads: {e}")),
        );
        Ok(())
    });
    out.expect("jail ran")
}

/// The value at a dotted path of the effective settings.
fn setting<'a>(config: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(config, |at, part| &at[part])
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn every_honoured_key_of_the_main_file_reaches_its_setting_in_yaml_and_in_json() {
    let url = "http://127.0.0.1:7";
    // (key in Lucid's file, value unlike the fixture's and the default, where it lands)
    let common: Vec<(&str, Value, &str)> = vec![
        ("service.name", "bm-lucid".into(), "service.name"),
        ("service.host", "127.0.0.2".into(), "service.host"),
        ("service.port", 8099.into(), "service.port"),
        (
            "service.url",
            "http://bm.example:8099".into(),
            "service.url",
        ),
        (
            "service.environment",
            "staging".into(),
            "service.environment",
        ),
        ("service.platform", "amd64".into(), "service.platform"),
        (
            "storage.blocks_path",
            "elsewhere/blocks".into(),
            "storage.blocks_path",
        ),
        ("logging.directory", "lg".into(), "logging.directory"),
        ("logging.level", "DEBUG".into(), "logging.level"),
        ("logging.format", "json".into(), "logging.format"),
        (
            "logging.rotate.enabled",
            false.into(),
            "logging.rotate.enabled",
        ),
        (
            "logging.rotate.max_size_mb",
            3.into(),
            "logging.rotate.max_size_mb",
        ),
        ("logging.rotate.backups", 2.into(), "logging.rotate.backups"),
        (
            "synchronization.engine_url",
            url.into(),
            "synchronization.engine_url",
        ),
        (
            "dependencies.blockchain_engine_url",
            url.into(),
            "synchronization.engine_url",
        ),
        (
            "synchronization.sync_timeout_seconds",
            7.into(),
            "synchronization.sync_timeout_seconds",
        ),
        (
            "synchronization.fetch_batch_size",
            11.into(),
            "synchronization.fetch_batch_size",
        ),
        ("rate_limits.enabled", false.into(), "rate_limits.enabled"),
        (
            "rate_limits.window_seconds",
            9.into(),
            "rate_limits.window_seconds",
        ),
        (
            "rate_limits.max_requests",
            13.into(),
            "rate_limits.requests",
        ),
        (
            "monitoring.metrics_enabled",
            false.into(),
            "monitoring.metrics_enabled",
        ),
    ];
    for (name, healthcheck) in [
        (MAIN_YAML, "dependencies.healthcheck"),
        (MAIN_JSON, "healthcheck"),
    ] {
        let path = format!("{healthcheck}.path");
        let timeout = format!("{healthcheck}.timeout_seconds");
        let mut keys = common.clone();
        keys.push((&path, "/health/live".into(), "healthcheck.path"));
        keys.push((&timeout, 3.into(), "healthcheck.timeout_seconds"));
        let edits: Vec<(&str, Value)> = keys.iter().map(|(k, v, _)| (*k, v.clone())).collect();
        let files = vec![
            (name, main_file_with(name, &edits)),
            (ERRORS, fixture(ERRORS)),
        ];
        let l = load_alone(&files, name);
        let c = serde_json::to_value(&l.config).unwrap();
        for (key, want, lands) in &keys {
            let got = setting(&c, lands);
            assert!(
                same_value(got, want),
                "{name}: {key} = {want} gave {lands} = {got}"
            );
        }
        assert_eq!(l.config.upstream(), Some(url), "{name}");
    }
}

#[test]
fn every_honoured_key_of_the_errors_file_reaches_its_setting() {
    let edits = [
        (
            "  retry:\n    enabled: true",
            "  retry:\n    enabled: false",
        ),
        (
            "    max_retries: 3\n    retry_delay",
            "    max_retries: 4\n    retry_delay",
        ),
        ("retry_delay_seconds: 1", "retry_delay_seconds: 0.25"),
        ("exponential_backoff: true", "exponential_backoff: false"),
        ("backoff_multiplier: 2", "backoff_multiplier: 1.5"),
        ("max_backoff_seconds: 30", "max_backoff_seconds: 12"),
        ("request_timeout_seconds: 30", "request_timeout_seconds: 6"),
        (
            "    retry_on_timeout: true\n    retry_on_5xx",
            "    retry_on_timeout: false\n    retry_on_5xx",
        ),
        ("retry_on_5xx: true", "retry_on_5xx: false"),
        (
            "    max_retries: 3\n    circuit_breaker",
            "    max_retries: 2\n    circuit_breaker",
        ),
        (
            "enabled: true\n      failure_threshold: 5",
            "enabled: false\n      failure_threshold: 4",
        ),
        (
            "recovery_timeout_seconds: 60",
            "recovery_timeout_seconds: 45",
        ),
        ("half_open_max_calls: 3", "half_open_max_calls: 2"),
        ("sync_backoff_seconds: 5", "sync_backoff_seconds: 3"),
        ("log_failed_blocks: true", "log_failed_blocks: false"),
        (
            "quarantine_invalid_blocks: true",
            "quarantine_invalid_blocks: false",
        ),
        (
            "quarantine_path: data/quarantine",
            "quarantine_path: q-lucid",
        ),
        (
            "log_validation_errors: true",
            "log_validation_errors: false",
        ),
        (
            "BM_002: Block validation failed",
            "BM_002: Block refused here",
        ),
        ("critical: [BM_003, ", "critical: ["),
        ("warning: [SYNC_002", "warning: [BM_003, SYNC_002"),
    ];
    let files = vec![
        (MAIN_YAML, fixture(MAIN_YAML)),
        (ERRORS, {
            let mut e = fixture(ERRORS);
            for (from, to) in edits {
                e = patch(&e, from, to);
            }
            e
        }),
    ];
    let l = load_alone(&files, MAIN_YAML);
    let c = serde_json::to_value(&l.config).unwrap();
    let e = &c["error_handling"];
    for (path, want) in [
        ("retry.enabled", Value::from(false)),
        ("retry.max_retries", 4.into()),
        ("retry.retry_delay_seconds", 0.25.into()),
        ("retry.exponential_backoff", false.into()),
        ("retry.backoff_multiplier", 1.5.into()),
        ("retry.max_backoff_seconds", 12.into()),
        ("blockchain_engine.request_timeout_seconds", 6.into()),
        ("blockchain_engine.retry_on_timeout", false.into()),
        ("blockchain_engine.retry_on_5xx", false.into()),
        ("blockchain_engine.max_retries", 2.into()),
        ("blockchain_engine.circuit_breaker.enabled", false.into()),
        (
            "blockchain_engine.circuit_breaker.failure_threshold",
            4.into(),
        ),
        (
            "blockchain_engine.circuit_breaker.recovery_timeout_seconds",
            45.into(),
        ),
        (
            "blockchain_engine.circuit_breaker.half_open_max_calls",
            2.into(),
        ),
        ("synchronization.sync_backoff_seconds", 3.into()),
        ("synchronization.log_failed_blocks", false.into()),
        ("validation.quarantine_invalid_blocks", false.into()),
        ("validation.quarantine_path", "q-lucid".into()),
        ("validation.log_validation_errors", false.into()),
    ] {
        let got = setting(e, path);
        assert!(
            same_value(got, &want),
            "error_handling.{path}: {got}, wanted {want}"
        );
    }
    let catalog = block_manager::error::Catalog::from_config(&l.config);
    assert_eq!(catalog.message("BM_002"), "Block refused here");
    assert_eq!(catalog.message("BM_001"), "Block not found (Lucid)");
    assert_eq!(catalog.severity("BM_003"), "warning");
    assert_eq!(catalog.severity("SYNC_004"), "critical");
}

#[test]
fn rate_limits_enabled_false_and_window_seconds_change_the_limit() {
    let off = yaml_files(
        &[
            ("max_requests: 100", "max_requests: 5"),
            (
                "rate_limits:\n  enabled: true",
                "rate_limits:\n  enabled: false",
            ),
        ],
        &[],
    );
    in_jail(&off, MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let url = format!("{base}/api/v1/chain/height");
            for n in 1..=8 {
                assert_eq!(get_json(&url).await.0, 200, "request {n} with limits off");
            }
            stop(running).await;
        });
    });
    let short = yaml_files(
        &[
            ("max_requests: 100", "max_requests: 5"),
            ("window_seconds: 60", "window_seconds: 1"),
        ],
        &[],
    );
    in_jail(&short, MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let url = format!("{base}/api/v1/chain/height");
            for _ in 1..=5 {
                get_json(&url).await;
            }
            assert_eq!(get_json(&url).await.0, 429);
            // A one-second window lets the client in again long before a minute has passed.
            let deadline = Instant::now() + Duration::from_secs(10);
            while get_json(&url).await.0 == 429 {
                assert!(Instant::now() < deadline, "still refused after 10 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stop(running).await;
        });
    });
}

#[test]
fn json_max_requests_answers_429_on_the_sixth_request() {
    let files = vec![
        (
            MAIN_JSON,
            main_file_with(MAIN_JSON, &[("rate_limits.max_requests", 5.into())]),
        ),
        (ERRORS, fixture(ERRORS)),
        (LOGGING, fixture(LOGGING)),
    ];
    in_jail(&files, MAIN_JSON, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let url = format!("{base}/api/v1/chain/height");
            for n in 1..=5 {
                assert_eq!(get_json(&url).await.0, 200, "request {n}");
            }
            assert_eq!(get_json(&url).await.0, 429);
            stop(running).await;
        });
    });
}

#[test]
fn error_codes_severity_and_service_name_shape_the_answers() {
    let files = yaml_files(
        &[("  name: block-manager", "  name: bm-lucid")],
        &[
            ("error: [BM_001, ", "error: ["),
            ("warning: [SYNC_002", "warning: [BM_001, SYNC_002"),
        ],
    );
    in_jail(&files, MAIN_YAML, &[], |l, _| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let (status, body) = get_json(&format!("{base}/api/v1/blocks/height/999")).await;
            assert_eq!(status, 404, "{body}");
            let d = &body["detail"];
            assert_eq!(d["error_code"], "BM_001", "{body}");
            assert_eq!(d["error"], "Block not found (Lucid): 999", "{body}");
            assert_eq!(d["severity"], "warning", "{body}");
            let (_, health) = get_json(&format!("{base}/health")).await;
            assert_eq!(health["service"], "bm-lucid", "{health}");
            stop(running).await;
        });
    });
}

#[test]
fn quarantine_path_is_where_rejected_blocks_are_filed() {
    let files = yaml_files(
        &[],
        &[(
            "quarantine_path: data/quarantine",
            "quarantine_path: q-lucid",
        )],
    );
    in_jail(&files, MAIN_YAML, &[], |l, dir| {
        let config = l.expect("loads").config;
        runtime().block_on(async {
            let (base, running) = start(config).await;
            let res = reqwest::Client::new()
                .post(format!("{base}/api/v1/blocks/submit"))
                .header("X-API-Key", common::WRITE_KEY)
                .json(&serde_json::json!({"height": -1}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 422);
            stop(running).await;
        });
        let filed = |p: &str| {
            std::fs::read_dir(dir.join(p))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        assert_eq!(filed("q-lucid"), 1);
        assert_eq!(filed("data/quarantine"), 0);
    });
}

const ONE_RETRY: (&str, &str) = (
    "    max_retries: 3\n    circuit_breaker",
    "    max_retries: 1\n    circuit_breaker",
);

/// A stand-in slower than either timeout key: the call times out (SYNC_005) and is retried
/// as `retry_on_timeout` says.
#[test]
fn each_timeout_key_bounds_the_upstream_call_and_retry_on_timeout_chooses_the_retry() {
    let slow = || Fault::Slow(Duration::from_secs(20));
    let short_sync = [("${SYNC_TIMEOUT:-30}", "${SYNC_TIMEOUT:-0.2}")];
    let mut errors = OPEN_AFTER_ONE_ROUND.to_vec();
    errors.push(ONE_RETRY);
    let started = Instant::now();
    let (requests, status, _) = follow_upstream(slow(), &short_sync, &errors, circuit_open);
    assert_eq!(status["last_error"]["code"], "SYNC_005", "{status}");
    assert_eq!(requests, 2, "a timeout retried once: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sync_timeout_seconds: 0.2 waited"
    );

    let mut short_request = errors.clone();
    short_request.push((
        "request_timeout_seconds: 30",
        "request_timeout_seconds: 0.2",
    ));
    let (requests, status, _) = follow_upstream(slow(), &[], &short_request, circuit_open);
    assert_eq!(status["last_error"]["code"], "SYNC_005", "{status}");
    assert_eq!(requests, 2, "{status}");

    let mut no_retry = errors.clone();
    no_retry.push((
        "    retry_on_timeout: true\n    retry_on_5xx",
        "    retry_on_timeout: false\n    retry_on_5xx",
    ));
    let (requests, status, _) = follow_upstream(slow(), &short_sync, &no_retry, circuit_open);
    assert_eq!(status["last_error"]["code"], "SYNC_005", "{status}");
    assert_eq!(requests, 1, "retry_on_timeout: false: {status}");
}

#[test]
fn recovery_timeout_seconds_lets_a_trial_round_through_after_the_circuit_opened() {
    let errors = [
        ("failure_threshold: 5", "failure_threshold: 1"),
        (
            "recovery_timeout_seconds: 60",
            "recovery_timeout_seconds: 0.2",
        ),
        (
            "    max_retries: 3\n    circuit_breaker",
            "    max_retries: 0\n    circuit_breaker",
        ),
    ];
    // One call per round: the third call is a trial after the circuit opened twice.
    let (requests, _, metrics) = follow_failing_upstream(&errors, |_, n| n >= 3);
    assert!(requests >= 3);
    assert!(
        metrics.contains("block_manager_sync_circuit_state"),
        "{metrics}"
    );
}

#[test]
fn healthcheck_timeout_seconds_bounds_the_probe() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let env = [
        ("BLOCK_MANAGER_HOST", "127.0.0.1"),
        ("BLOCK_MANAGER_PORT", port.as_str()),
        ("BLOCK_STORAGE_PATH", "data/blocks"),
    ];
    for (timeout, at_least, below) in [("0.3", 0.25, 6.0), ("2", 1.9, 8.0)] {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &yaml_files(
                &[(
                    "    timeout_seconds: 10\n",
                    &format!("    timeout_seconds: {timeout}\n"),
                )],
                &[],
            ),
        );
        let started = Instant::now();
        let (code, out) = run(dir.path(), &["healthcheck"], &env);
        let took = started.elapsed().as_secs_f64();
        assert_eq!(code, Some(1), "{out}");
        assert!(
            took >= at_least && took < below,
            "timeout_seconds: {timeout} took {took} s: {out}"
        );
    }
}

#[test]
fn every_checked_route_key_and_the_json_file_refuse_a_wrong_value_with_exit_2() {
    for (from, to, key) in [
        ("list: /blocks/\n", "list: /blocks/all\n", "api.blocks.list"),
        (
            "by_id: /blocks/{block_id}",
            "by_id: /blocks/id/{block_id}",
            "api.blocks.by_id",
        ),
        (
            "validate: /blocks/validate",
            "validate: /blocks/check",
            "api.blocks.validate",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &yaml_files(&[(from, to)], &[]));
        let (code, out) = run(dir.path(), &["config", "check"], &[]);
        assert_eq!(code, Some(2), "{key}: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| !l.starts_with("warning:")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(
            errors[0].contains(key) && errors[0].contains(MAIN_YAML),
            "{out}"
        );
    }
    for (key, value) in [
        ("api.base_path", "/api/v2"),
        ("api.blocks.latest", "/blocks/newest"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            (MAIN_JSON, main_file_with(MAIN_JSON, &[(key, value.into())])),
            (ERRORS, fixture(ERRORS)),
            (LOGGING, fixture(LOGGING)),
        ];
        write_files(dir.path(), &files);
        let config = format!("config/{MAIN_JSON}");
        let (code, out) = run(dir.path(), &["config", "check", "--config", &config], &[]);
        assert_eq!(code, Some(2), "{key}: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| !l.starts_with("warning:")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(
            errors[0].contains(key) && errors[0].contains(MAIN_JSON),
            "{out}"
        );
    }
}

/// Each honoured key of Lucid's files as `config show` names it (Lucid's name where it is
/// the field's, else the field it sets), with the file it must say it came from.
fn honoured_as_shown(main: &'static str) -> Vec<(String, &'static str)> {
    let mut keys: Vec<(String, &str)> = [
        "service.name",
        "service.host",
        "service.port",
        "service.url",
        "service.environment",
        "service.platform",
        "storage.blocks_path",
        "logging.directory",
        "logging.level",
        "logging.format",
        "logging.rotate.enabled",
        "logging.rotate.max_size_mb",
        "logging.rotate.backups",
        "synchronization.engine_url",
        "synchronization.sync_timeout_seconds",
        "synchronization.fetch_batch_size",
        "rate_limits.enabled",
        "rate_limits.window_seconds",
        "rate_limits.max_requests",
        "monitoring.metrics_enabled",
        "healthcheck.path",
        "healthcheck.timeout_seconds",
        "api.base_path",
        "api.blocks.list",
        "api.blocks.by_id",
        "api.blocks.by_height",
        "api.blocks.latest",
        "api.blocks.validate",
        "security.user",
        "security.group",
    ]
    .into_iter()
    .map(|k| (k.to_string(), main))
    .collect();
    let errors = [
        "retry.enabled",
        "retry.max_retries",
        "retry.retry_delay_seconds",
        "retry.exponential_backoff",
        "retry.backoff_multiplier",
        "retry.max_backoff_seconds",
        "blockchain_engine.request_timeout_seconds",
        "blockchain_engine.retry_on_timeout",
        "blockchain_engine.retry_on_5xx",
        "blockchain_engine.max_retries",
        "blockchain_engine.circuit_breaker.enabled",
        "blockchain_engine.circuit_breaker.failure_threshold",
        "blockchain_engine.circuit_breaker.recovery_timeout_seconds",
        "blockchain_engine.circuit_breaker.half_open_max_calls",
        "synchronization.sync_backoff_seconds",
        "synchronization.log_failed_blocks",
        "validation.quarantine_invalid_blocks",
        "validation.log_validation_errors",
        "validation.quarantine_path",
    ];
    keys.extend(
        errors
            .iter()
            .map(|k| (format!("error_handling.{k}"), ERRORS)),
    );
    keys.extend(
        ["critical", "error", "warning"]
            .iter()
            .map(|k| (format!("severity.{k}"), ERRORS)),
    );
    keys.extend(
        fixture(ERRORS)
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(k, _)| {
                ["BM_", "ST_", "SYNC_", "VAL_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .map(|(k, _)| (format!("error_codes.{k}"), ERRORS)),
    );
    for k in [
        "formatters.standard.format",
        "formatters.detailed.datefmt",
        "handlers.console.stream",
        "handlers.file.filename",
        "handlers.file.maxBytes",
        "handlers.file.backupCount",
        "handlers.error_file.level",
        "loggers.blockchain.api.level",
        "root.level",
    ] {
        keys.push((format!("logging_config.{k}"), LOGGING));
    }
    keys
}

#[test]
fn config_show_names_the_file_of_every_honoured_key_in_yaml_and_in_json() {
    for main in [MAIN_YAML, MAIN_JSON] {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            (main, fixture(main)),
            (ERRORS, fixture(ERRORS)),
            (LOGGING, fixture(LOGGING)),
        ];
        write_files(dir.path(), &files);
        let config = format!("config/{main}");
        let (code, out) = run(dir.path(), &["config", "show", "--config", &config], &[]);
        assert_eq!(code, Some(0), "{out}");
        let keys = honoured_as_shown(main);
        assert!(
            keys.iter()
                .filter(|(k, _)| k.starts_with("error_codes."))
                .count()
                == 21
        );
        for (key, file) in keys {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{main}: {key} not shown:\n{out}"));
            assert!(
                line.ends_with(&format!("# config/{file}")),
                "{main}: {key} not from {file}: {line}"
            );
        }
    }
}

#[test]
fn the_running_service_logs_each_unused_key_once_in_yaml_and_in_json() {
    for (main, only) in [(MAIN_YAML, UNUSED_YAML_ONLY), (MAIN_JSON, UNUSED_JSON_ONLY)] {
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &[
                (main, fixture(main)),
                (ERRORS, fixture(ERRORS)),
                (LOGGING, fixture(LOGGING)),
            ],
        );
        let config = format!("config/{main}");
        let mut p = common::spawn_process(
            dir.path(),
            &[
                ("BLOCK_MANAGER_CONFIG", config.as_str()),
                ("BLOCK_STORAGE_PATH", "data/blocks"),
            ],
        );
        common::signal(&p, "TERM");
        assert_eq!(common::wait_exit(&mut p, LIMIT), Some(0));
        let out = std::fs::read_to_string(&p.log).unwrap();
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        let keys = UNUSED_COMMON
            .iter()
            .chain(&only)
            .chain(&["loggers.motor", "loggers.pymongo"]);
        for key in keys {
            assert_eq!(naming(&lines, key), 1, "{main}: {key} in\n{out}");
        }
    }
}

#[test]
fn fetch_batch_size_is_the_number_of_blocks_asked_per_range_request() {
    let rt = runtime();
    let upstream = rt.block_on(StandIn::start(&[]));
    upstream.documents(
        (0..30)
            .map(|h| serde_json::json!({"height": h, "hash": format!("{h:064x}")}))
            .collect(),
    );
    let url = upstream.url();
    let files = yaml_files(&[("fetch_batch_size: 100", "fetch_batch_size: 7")], &[]);
    in_jail(
        &files,
        MAIN_YAML,
        &[("BLOCKCHAIN_ENGINE_URL", url.as_str())],
        |l, _| {
            rt.block_on(async {
                let (_, running) = start(l.expect("loads").config).await;
                let deadline = Instant::now() + LIMIT;
                while upstream.requests_to("/api/v1/blocks/range").is_empty() {
                    assert!(Instant::now() < deadline, "no range asked");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                stop(running).await;
            });
        },
    );
    let asked = upstream.requests_to("/api/v1/blocks/range");
    // Ranges go out several at a time, in any order; none asks for more than the batch.
    assert!(
        asked.iter().any(|r| r.ends_with("from=0&limit=7")),
        "{asked:?}"
    );
    let limits = asked
        .iter()
        .filter_map(|r| r.rsplit_once("limit=")?.1.parse::<u32>().ok());
    assert!(
        limits.clone().count() == asked.len() && limits.into_iter().all(|n| n <= 7),
        "{asked:?}"
    );
}

#[test]
fn blocks_path_logging_directory_and_url_of_the_file_are_what_the_service_uses() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &yaml_files(
            &[
                ("${BLOCK_STORAGE_PATH:-/app/data/blocks}", "lucid-store"),
                ("  directory: logs", "  directory: lucid-logs"),
                (
                    "${BLOCK_MANAGER_URL:-http://block-manager:8086}",
                    "http://bm.lucid.test:8086",
                ),
            ],
            &[],
        ),
    );
    let mut p = common::spawn_process(dir.path(), &[]);
    common::signal(&p, "TERM");
    assert_eq!(common::wait_exit(&mut p, LIMIT), Some(0));
    // On the postgres engine the chain is in the database: blocks_path holds nothing.
    if !common::on_postgres() {
        assert!(dir.path().join("lucid-store/blocks.redb").is_file());
    }
    let log = std::fs::read_to_string(dir.path().join("lucid-logs/block-manager.log")).unwrap();
    assert!(log.contains("block-manager listening"), "{log}");
    assert!(
        log.contains("advertised=http://bm.lucid.test:8086"),
        "{log}"
    );
    assert!(!dir.path().join("logs").exists() && !dir.path().join("data/blocks").exists());
}

#[test]
fn json_top_level_enabled_and_exponential_backoff_apply_without_an_errors_file() {
    let main = main_file_with(
        MAIN_JSON,
        &[
            ("error_handling.enabled", false.into()),
            ("error_handling.exponential_backoff", false.into()),
        ],
    );
    let l = load_alone(&[(MAIN_JSON, main)], MAIN_JSON);
    let r = &l.config.error_handling.retry;
    assert!(!r.enabled && !r.exponential_backoff, "{r:?}");
}
