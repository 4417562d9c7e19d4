//! Logging against a Lucid-shaped logging file, through the real binary: line formats per
//! formatter, the precedence of environment, handler and main-file settings, rotation, per-logger
//! levels, and the keys that are warned about or refused.

mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lucid-logging");

/// A working folder with `config/` holding the fixture files, each passed through `edit_main`
/// and `edit_logging` first.
fn lucid_workdir(
    edit_main: impl Fn(String) -> String,
    edit_logging: impl Fn(String) -> String,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let read = |name: &str| std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
    std::fs::write(
        config.join("block-manager-config.yaml"),
        edit_main(read("block-manager-config.yaml")),
    )
    .unwrap();
    std::fs::write(
        config.join("block-manager-logging.yaml"),
        edit_logging(read("block-manager-logging.yaml")),
    )
    .unwrap();
    dir
}

fn same(s: String) -> String {
    s
}

/// GETs `path` with an `X-Request-Id` over a plain socket.
fn get_with_id(port: u16, path: &str, id: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Stops the process with SIGTERM (so every queued line is written) and returns its console.
fn stop(mut p: Proc) -> String {
    signal(&p, "TERM");
    // Generous: on a loaded host the writer's own 5 s stop bound can pass first.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::fs::read_to_string(&p.log).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}: {out}");
    out
}

/// Matches `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d` and returns the rest of the line.
fn after_seconds(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let shape = b"dddd-dd-dd dd:dd:dd";
    if b.len() < shape.len() {
        return None;
    }
    for (c, s) in b.iter().zip(shape) {
        let ok = if *s == b'd' {
            c.is_ascii_digit()
        } else {
            c == s
        };
        if !ok {
            return None;
        }
    }
    Some(&line[shape.len()..])
}

/// A `standard` line: `<date> <time> - <name> - <LEVEL> - <message>`; returns name, level,
/// message.
fn standard(line: &str) -> Option<(&str, &str, &str)> {
    let rest = after_seconds(line)?.strip_prefix(" - ")?;
    let mut parts = rest.splitn(3, " - ");
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A `detailed` line: `<date> <time>,<ms> - <name> - <LEVEL padded to 8> -
/// <module>:<func>:<line> - <message>`; returns name, level, message.
fn detailed(line: &str) -> Option<(&str, &str, &str)> {
    let rest = after_seconds(line)?;
    let ms = rest.strip_prefix(',')?;
    if ms.len() < 3 || !ms.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rest = ms[3..].strip_prefix(" - ")?;
    let mut parts = rest.splitn(4, " - ");
    let (name, level, place, message) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if level.len() < 8 {
        return None;
    }
    let mut place = place.split(':');
    let (module, func, lineno) = (place.next()?, place.next()?, place.next()?);
    if module.is_empty() || func.is_empty() || lineno.parse::<u32>().is_err() {
        return None;
    }
    Some((name, level.trim_end(), message))
}

/// Polls `path` until `done` holds for its text, or panics with what it holds.
fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held the expected lines: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn console_request_lines_follow_the_standard_formatter_with_route_status_and_request_id() {
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "lucid-line-1");
    let out = stop(p);
    let line = out
        .lines()
        .find(|l| l.contains("lucid-line-1"))
        .unwrap_or_else(|| panic!("no request line: {out}"));
    let (name, level, message) = standard(line).unwrap_or_else(|| panic!("not standard: {line}"));
    assert_eq!((name, level), ("blockchain.api", "INFO"), "{line}");
    assert!(
        message.starts_with("GET /api/v1/blocks/latest 200 "),
        "{line}"
    );
    assert!(message.contains("ms request_id=lucid-line-1"), "{line}");
    assert!(
        message.contains(" client=127.0.0.1"),
        "the client address: {line}"
    );
    // Every console line is standard, with Python's level names.
    for l in out.lines() {
        let (_, level, _) = standard(l).unwrap_or_else(|| panic!("not standard: {l}\n{out}"));
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level),
            "{l}"
        );
    }
    assert!(
        out.lines().any(
            |l| standard(l).is_some_and(|(n, lv, m)| n == "blockchain.manager"
                && lv == "INFO"
                && m.starts_with("block-manager listening"))
        ),
        "{out}"
    );
}

#[test]
fn file_lines_follow_the_detailed_formatter_in_the_logging_directory() {
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "lucid-file-1");
    let log = dir.path().join("service-logs/block-manager.log");
    let text = wait_for_file(&log, |t| t.contains("lucid-file-1"));
    let line = text.lines().find(|l| l.contains("lucid-file-1")).unwrap();
    let (name, level, message) = detailed(line).unwrap_or_else(|| panic!("not detailed: {line}"));
    assert_eq!((name, level), ("blockchain.api", "INFO"), "{line}");
    assert!(line.contains(" - observe:observe:"), "{line}");
    assert!(
        message.starts_with("GET /api/v1/blocks/latest 200 "),
        "{line}"
    );
    drop(stop(p));
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        assert!(detailed(l).is_some(), "not detailed: {l}");
    }
    assert!(
        dir.path()
            .join("service-logs/block-manager-errors.log")
            .exists()
    );
    assert!(!dir.path().join("logs").exists());
    // Data and quarantine files are private (0600); log files stay readable by log shippers
    // running as another user (0644 under the usual umask).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o644, 0o644, "log file mode {mode:o}");
}

#[test]
fn logging_files_false_logs_to_the_console_only_and_opens_no_file() {
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[("BLOCK_MANAGER__LOGGING__FILES", "false")]);
    get_with_id(p.port, "/api/v1/blocks/latest", "console-only-1");
    let console = stop(p);
    assert!(
        console.lines().any(|l| l.contains("console-only-1")),
        "the access line on the console: {console}"
    );
    assert!(!console.contains("cannot write"), "{console}");
    assert!(!dir.path().join("service-logs").exists());
    assert!(!dir.path().join("logs").exists());
}

#[test]
fn log_format_json_makes_the_console_json_and_leaves_the_files_detailed() {
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[("LOG_FORMAT", "json")]);
    get_with_id(p.port, "/api/v1/blocks/latest", "lucid-json-1");
    let out = stop(p);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|v| v["request_id"] == "lucid-json-1")
        .unwrap_or_else(|| panic!("no request line: {out}"));
    assert_eq!(line["route"], "/api/v1/blocks/latest", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["name"], "blockchain.api", "{line}");
    let file = std::fs::read_to_string(dir.path().join("service-logs/block-manager.log")).unwrap();
    let in_file = file.lines().find(|l| l.contains("lucid-json-1")).unwrap();
    assert!(detailed(in_file).is_some(), "{in_file}");
}

/// The body of a GET over a plain socket.
fn get_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in: {text}"))
}

/// The log file and its numbered backups, in `folder`, named `block-manager.log*`.
fn log_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("block-manager.log"))
        })
        .collect();
    files.sort();
    files
}

/// Sends requests until the file has rotated `backups` times at least, then stops; asserts the
/// file and exactly `backups` backups exist, each at most `max` bytes and of whole detailed lines.
fn assert_rotates(dir: &Path, env: &[(&str, &str)], max: u64, backups: usize) {
    let p = spawn_process(dir, env);
    let folder = dir.join("service-logs");
    let last = folder.join(format!("block-manager.log.{backups}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while !last.exists() {
        get_with_id(p.port, "/api/v1/blocks/latest", &format!("rotation-{n}"));
        n += 1;
        assert!(
            Instant::now() < deadline,
            "no {} after {n} requests",
            last.display()
        );
    }
    // A few more, so the oldest backup would have been pushed out if more were kept.
    for i in 0..100 {
        get_with_id(p.port, "/api/v1/blocks/latest", &format!("more-{i}"));
    }
    let metrics = get_body(p.port, "/metrics");
    drop(stop(p));
    let rotations = metric(
        &metrics,
        "block_manager_log_rotations_total{handler=\"file\"}",
    );
    assert!(rotations >= backups as f64, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "block_manager_log_rotations_total{handler=\"error_file\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "block_manager_log_lines_dropped_total{handler=\"console\"}"
        ),
        0.0
    );
    let files = log_files(&folder);
    assert_eq!(files.len(), backups + 1, "{files:?}");
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= max, "{}: {size} bytes > {max}", f.display());
        for l in std::fs::read_to_string(f).unwrap().lines() {
            assert!(
                detailed(l).is_some(),
                "{}: not a whole line: {l}",
                f.display()
            );
        }
    }
}

#[test]
fn handler_max_bytes_and_backup_count_rotate_the_file() {
    let dir = lucid_workdir(same, same);
    assert_rotates(dir.path(), &[], 4096, 3);
}

#[test]
fn main_file_rotate_settings_apply_where_the_handler_gives_no_size_or_count() {
    let dir = lucid_workdir(same, |s| {
        s.replace("    maxBytes: 4096\n    backupCount: 3\n", "")
    });
    // rotate.max_size_mb 0.01 is 10485 bytes; rotate.backups 2.
    assert_rotates(dir.path(), &[], 10_485, 2);
}

#[test]
fn rotation_disabled_in_the_main_file_warns_and_never_rotates() {
    let dir = lucid_workdir(|s| s.replace("enabled: true", "enabled: false"), same);
    let p = spawn_process(dir.path(), &[]);
    for i in 0..150 {
        get_with_id(p.port, "/api/v1/blocks/latest", &format!("grow-{i}"));
    }
    let out = stop(p);
    let folder = dir.path().join("service-logs");
    let files = log_files(&folder);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 4096);
    let warned = out
        .lines()
        .filter(|l| l.contains("WARNING") && l.contains("logging.rotate.enabled"))
        .count();
    assert_eq!(warned, 1, "{out}");
}

#[test]
fn api_logger_at_warning_silences_request_lines_while_manager_info_lines_remain() {
    let dir = lucid_workdir(same, |s| {
        s.replace(
            "  blockchain.api:\n    level: INFO",
            "  blockchain.api:\n    level: WARNING",
        )
    });
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "silenced-1");
    let out = stop(p);
    assert!(!out.contains("silenced-1"), "{out}");
    assert!(!out.contains("blockchain.api"), "{out}");
    assert!(
        out.contains(" - blockchain.manager - INFO - block-manager listening"),
        "{out}"
    );
    let file = std::fs::read_to_string(dir.path().join("service-logs/block-manager.log")).unwrap();
    assert!(!file.contains("silenced-1"), "{file}");
}

#[test]
fn log_level_from_the_environment_beats_the_logging_files_logger_levels() {
    // The file sets blockchain.api to INFO; LOG_LEVEL=WARNING is more specific.
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[("LOG_LEVEL", "WARNING")]);
    get_with_id(p.port, "/api/v1/blocks/latest", "env-level-1");
    let out = stop(p);
    assert!(!out.contains("env-level-1"), "{out}");
    assert!(!out.contains(" - INFO - "), "{out}");
    // Warnings still pass.
    assert!(out.contains("loggers.motor"), "{out}");
}

#[test]
fn motor_and_pymongo_loggers_are_warned_about_exactly_once_each() {
    let dir = lucid_workdir(same, same);
    let out = stop(spawn_process(dir.path(), &[]));
    for key in ["loggers.motor", "loggers.pymongo"] {
        let lines: Vec<&str> = out.lines().filter(|l| l.contains(key)).collect();
        assert_eq!(lines.len(), 1, "{key}: {out}");
        assert!(lines[0].contains(" - WARNING - "), "{}", lines[0]);
    }
}

#[test]
fn an_unknown_handler_class_is_warned_about_once_and_skipped() {
    let dir = lucid_workdir(same, |s| {
        s.replace(
            "handlers:\n  console:",
            "handlers:\n  syslog:\n    class: logging.handlers.SysLogHandler\n    level: INFO\n  console:",
        )
        .replace("handlers: [console, file]", "handlers: [syslog, console, file]")
    });
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "after-syslog-1");
    let out = stop(p);
    let warned: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("logging.handlers.SysLogHandler"))
        .collect();
    assert_eq!(warned.len(), 1, "{out}");
    assert!(
        warned[0].contains(" - WARNING - ") && warned[0].contains("syslog"),
        "{out}"
    );
    assert!(out.contains("request_id=after-syslog-1"), "{out}");
}

/// Runs the binary in `dir` with `env`, expecting it to refuse to start: its exit code (None if
/// it was still running after 5 s) and its stderr.
fn refused(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = dir.join("refused.log");
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", free_port().to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().expect("binary runs");
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn logging_file_version_2_stops_start_up_with_exit_2_naming_the_key() {
    let dir = lucid_workdir(same, |s| s.replace("version: 1", "version: 2"));
    let (code, stderr) = refused(dir.path(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("version") && stderr.contains("block-manager-logging.yaml"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_log_format_stops_start_up_with_exit_2_naming_the_variable() {
    let dir = lucid_workdir(same, same);
    let (code, stderr) = refused(dir.path(), &[("LOG_FORMAT", "fancy")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid LOG_FORMAT 'fancy': "), "{stderr}");
}

#[test]
fn a_console_handler_on_ext_sys_stderr_writes_to_stderr_only() {
    let dir = lucid_workdir(same, |s| {
        s.replace("stream: ext://sys.stdout", "stream: ext://sys.stderr")
    });
    let port = free_port();
    let (out_log, err_log) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let child = Command::new(binary())
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", port.to_string())
        .stdout(std::fs::File::create(&out_log).unwrap())
        .stderr(std::fs::File::create(&err_log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("binary runs");
    let mut p = Proc {
        child,
        port,
        log: err_log.clone(),
    };
    wait_ready(&mut p, Duration::from_secs(20));
    get_with_id(port, "/api/v1/blocks/latest", "on-stderr-1");
    let err = stop(p);
    assert!(err.contains("request_id=on-stderr-1"), "{err}");
    let out = std::fs::read_to_string(&out_log).unwrap();
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_handlers_level_keeps_lower_records_out_of_its_file() {
    // blockchain.api writes to console, file and error_file; error_file is at ERROR.
    let dir = lucid_workdir(same, same);
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "below-error-1");
    drop(stop(p));
    let logs = dir.path().join("service-logs");
    let all = std::fs::read_to_string(logs.join("block-manager.log")).unwrap();
    assert!(all.contains("below-error-1"), "{all}");
    let errors = std::fs::read_to_string(logs.join("block-manager-errors.log")).unwrap();
    assert!(
        errors.lines().all(
            |l| detailed(l).is_some_and(|(_, level, _)| ["ERROR", "CRITICAL"].contains(&level))
        ),
        "below ERROR in the errors file: {errors}"
    );
}

#[test]
fn the_formatters_format_and_datefmt_strings_shape_the_lines() {
    let dir = lucid_workdir(same, |s| {
        s.replace(
            "format: \"%(asctime)s - %(name)s - %(levelname)s - %(message)s\"",
            "format: \"%(levelname)s|%(name)s|%(message)s\"",
        )
        .replace(
            "%(module)s:%(funcName)s:%(lineno)d - %(message)s\"",
            "%(module)s:%(funcName)s:%(lineno)d - %(message)s\"\n    datefmt: \"%d.%m.%Y@%H\"",
        )
    });
    let config =
        std::fs::read_to_string(dir.path().join("config/block-manager-logging.yaml")).unwrap();
    assert!(
        config.contains("%(levelname)s|") && config.contains("%d.%m.%Y@%H"),
        "{config}"
    );
    let p = spawn_process(dir.path(), &[]);
    get_with_id(p.port, "/api/v1/blocks/latest", "shaped-1");
    let out = stop(p);
    let line = out
        .lines()
        .find(|l| l.contains("shaped-1"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("INFO|blockchain.api|GET /api/v1/blocks/latest 200 "),
        "{line}"
    );
    let file = std::fs::read_to_string(dir.path().join("service-logs/block-manager.log")).unwrap();
    let line = file
        .lines()
        .find(|l| l.contains("shaped-1"))
        .unwrap_or_else(|| panic!("{file}"));
    let (date, rest) = line.split_once(' ').unwrap();
    let b = date.as_bytes();
    assert!(
        b.len() == 13
            && [2, 5, 10]
                .iter()
                .all(|&i| b[i] == if i == 10 { b'@' } else { b'.' })
            && b.iter()
                .enumerate()
                .all(|(i, c)| [2, 5, 10].contains(&i) || c.is_ascii_digit()),
        "datefmt %d.%m.%Y@%H: {line}"
    );
    assert!(rest.starts_with("- blockchain.api - INFO"), "{line}");
}

#[test]
fn without_a_logging_file_the_main_files_level_and_format_apply() {
    let run = |logging: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/block-manager-config.yaml"),
            format!("service:\n  name: block-manager\nlogging:\n{logging}"),
        )
        .unwrap();
        let p = spawn_process(dir.path(), &[]);
        get_with_id(p.port, "/api/v1/blocks/latest", "main-file-1");
        stop(p)
    };
    let quiet = run("  level: WARNING\n  format: standard\n");
    assert!(!quiet.contains("main-file-1"), "{quiet}");
    assert!(!quiet.contains("block-manager listening"), "{quiet}");
    let json = run("  level: INFO\n  format: json\n");
    let line = json
        .lines()
        .find(|l| l.contains("main-file-1"))
        .unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["request_id"], "main-file-1", "{line}");
}

#[test]
fn the_httpx_logger_sets_the_level_of_the_upstream_client() {
    // A stand-in engine without a range route: the upstream client says so at INFO.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let up = rt.block_on(standin::StandIn::start(&[]));
    // Documents that are no valid blocks (as the Lucid engine's): only the height route
    // needs their height and hash.
    up.documents(
        (0..2)
            .map(|h| serde_json::json!({"height": h, "hash": format!("{h:064x}")}))
            .collect(),
    );
    up.served.lock().unwrap().range_route = false;
    let url = up.url();
    let said = "upstream has no block range route";
    for (level, shown) in [("WARNING", false), ("INFO", true)] {
        let dir = lucid_workdir(same, |s| {
            s.replace(
                "  httpx:\n    level: WARNING",
                &format!("  httpx:\n    level: {level}"),
            )
        });
        let asked = up.requests_to("/api/v1/blocks/height/").len();
        let p = spawn_process(dir.path(), &[("BLOCKCHAIN_ENGINE_URL", url.as_str())]);
        // Once a block is asked for by height, the client has met the missing range route.
        let deadline = Instant::now() + Duration::from_secs(20);
        while up.requests_to("/api/v1/blocks/height/").len() == asked {
            assert!(
                Instant::now() < deadline,
                "the follower never fell back: {:?} {}",
                up.requests_to(""),
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = stop(p);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains(said)).collect();
        assert_eq!(!lines.is_empty(), shown, "httpx at {level}: {out}");
        if let Some(line) = lines.first() {
            assert!(line.contains(" - httpx - INFO - "), "{line}");
        }
    }
}

#[test]
fn an_encoding_other_than_utf_8_is_warned_about_once() {
    let dir = lucid_workdir(same, |s| {
        s.replacen("    encoding: utf-8", "    encoding: latin-1", 1)
    });
    let config =
        std::fs::read_to_string(dir.path().join("config/block-manager-logging.yaml")).unwrap();
    assert!(config.contains("encoding: latin-1"), "{config}");
    let out = stop(spawn_process(dir.path(), &[]));
    let warned: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(".encoding latin-1"))
        .collect();
    assert_eq!(warned.len(), 1, "{out}");
    assert!(
        warned[0].contains(" - WARNING - ") && warned[0].contains("UTF-8"),
        "{out}"
    );
    // Without the edit, nothing is said about encodings.
    let plain = stop(spawn_process(lucid_workdir(same, same).path(), &[]));
    assert!(!plain.contains("encoding"), "{plain}");
}

#[test]
fn a_logger_without_a_level_takes_the_roots() {
    let edit = |root: &'static str| {
        move |s: String| {
            let s = s.replace(
                "  blockchain.api:\n    level: INFO\n",
                "  blockchain.api:\n",
            );
            assert!(!s.contains("  blockchain.api:\n    level:"), "{s}");
            s.replace("root:\n  level: INFO", &format!("root:\n  level: {root}"))
        }
    };
    for (root, shown) in [("WARNING", false), ("INFO", true)] {
        let dir = lucid_workdir(same, edit(root));
        let p = spawn_process(dir.path(), &[]);
        get_with_id(p.port, "/api/v1/blocks/latest", "rooted-1");
        let out = stop(p);
        assert_eq!(out.contains("rooted-1"), shown, "root.level {root}: {out}");
    }
}
