//! Tests that need a second process: this test binary, re-run with [`CHILD_ROLE`] set, opens the
//! same store file to be refused, is killed mid-append, or runs into a file-size limit.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use super::super::conformance::{GENESIS_MICROS, blocks, record, totals_of};
use super::{open, store_path};
use crate::store::{BlockReads, ChainWriter, DEFAULT_CACHE_BYTES, RedbStore, StoreError};

const CHILD_ROLE: &str = "BLOCK_MANAGER_STORE_TEST_ROLE";
const CHILD_PATH: &str = "BLOCK_MANAGER_STORE_TEST_PATH";

#[test]
fn a_second_open_from_another_process_fails_fast_with_already_open() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.append(&blocks(0, 1)).unwrap();
    let output = child("try-open", &store_path(&dir))
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = child_lines(&stdout).next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("already-open"), "child said: {stdout}");
    let millis: u64 = parts.next().and_then(|m| m.parse().ok()).unwrap();
    assert!(millis < 1_000, "took {millis} ms");
    // And the holder is unaffected
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(0));
}

#[test]
fn a_crash_mid_append_keeps_every_acknowledged_block_and_needs_no_full_repair() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    let mut crashing = child("append-until-killed", &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = crashing.stdout.take().expect("piped stdout");
    let mut acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(h) = child_said(&line).and_then(|l| l.strip_prefix("acked ")) {
            acked = Some(h.parse::<u64>().unwrap());
            if acked >= Some(60) {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no clean close, quite possibly mid-commit
    crashing.kill().unwrap();
    crashing.wait().unwrap();
    let acked = acked.expect("child acknowledged nothing");

    let store = RedbStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
    assert!(
        !store.open_report().full_repair,
        "{:?}",
        store.open_report()
    );
    let tip = store.tip().unwrap().expect("a tip").height;
    assert!(tip >= acked, "tip {tip} lost acknowledged block {acked}");
    let chain = blocks(0, tip + 1);
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    for r in &chain {
        assert_eq!(store.body_at(r.meta.height).unwrap(), Some(r.body.clone()));
        assert_eq!(
            store.height_of_hash(&r.meta.hash).unwrap(),
            Some(r.meta.height)
        );
    }
    // Whatever the body log lacks after the crash, the next commit rewrites (fewer heights here
    // than one commit rewrites).
    store.append(&blocks(tip + 1, tip + 2)).unwrap();
    assert_eq!(store.body_log_trusted(), Some(tip + 2));
    for r in &blocks(0, tip + 2) {
        assert_eq!(store.body_at(r.meta.height).unwrap(), Some(r.body.clone()));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_volume_is_reported_as_full_and_reads_recover() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A file-size limit stands in for a full disk: writes past it fail with EFBIG (SIGXFSZ is
    // ignored so that they fail rather than kill the child)
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 8192; exec "$0" "$@""#)
        .arg(exe)
        .args(child_args())
        .env(CHILD_ROLE, "fill-until-full")
        .env(CHILD_PATH, &path)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        child_lines(&stdout).any(|l| l.starts_with("recovered")),
        "child said: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn child_args() -> [&'static str; 4] {
    let full = concat!(
        module_path!(),
        "::acts_as_the_other_process_when_a_test_asks"
    );
    // libtest names tests by their path inside the crate
    let name = full.split_once("::").map_or(full, |(_, rest)| rest);
    [name, "--exact", "--nocapture", "--test-threads=1"]
}

fn child(role: &str, path: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(child_args())
        .env(CHILD_ROLE, role)
        .env(CHILD_PATH, path);
    cmd
}

/// What the child said: libtest may print its own text before ours on the same line.
fn child_lines(stdout: &str) -> impl Iterator<Item = &str> {
    stdout.lines().filter_map(child_said)
}

fn child_said(line: &str) -> Option<&str> {
    const MARK: &str = "child: ";
    line.find(MARK).map(|i| &line[i + MARK.len()..])
}

/// Not a test of its own: the body of the child process the tests above spawn.
#[test]
fn acts_as_the_other_process_when_a_test_asks() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let path = PathBuf::from(std::env::var(CHILD_PATH).unwrap());
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "child: {line}").unwrap();
        out.flush().unwrap();
    };
    match role.as_str() {
        "try-open" => {
            let started = Instant::now();
            match RedbStore::open(&path, DEFAULT_CACHE_BYTES) {
                Err(StoreError::AlreadyOpen { .. }) => {
                    say(format!("already-open {}", started.elapsed().as_millis()))
                }
                other => say(format!("unexpected {:?}", other.err())),
            }
        }
        "append-until-killed" => {
            let store = RedbStore::open(&path, DEFAULT_CACHE_BYTES).unwrap();
            for h in 0..1_000_000 {
                store.append(&blocks(h, h + 1)).unwrap();
                say(format!("acked {h}"));
            }
        }
        "fill-until-full" => fill_until_full(&path, say),
        other => panic!("unknown child role {other}"),
    }
}

fn fill_until_full(path: &Path, say: impl Fn(String)) {
    let store = RedbStore::open(path, DEFAULT_CACHE_BYTES).unwrap();
    let big = |h: u64| {
        let mut r = record(h, GENESIS_MICROS, 0);
        r.body = vec![b'x'; 256 * 1024];
        r
    };
    let mut next = 0;
    let err = loop {
        match store.append(&[big(next)]) {
            Ok(()) => next += 1,
            Err(e) => break e,
        }
        assert!(next < 1_000, "the file size limit never hit");
    };
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    say(format!("full after {next} blocks: {err}"));
    // Reads come back (the handle is reopened) with every acknowledged block
    assert_eq!(store.tip().unwrap().map(|m| m.height + 1), Some(next));
    assert_eq!(
        store.body_at(next - 1).unwrap().map(|b| b.len()),
        Some(256 * 1024)
    );
    // Still full: a write that needs more file fails as Full again, not as a latched error
    let again = store.append(&[big(next)]).unwrap_err();
    assert!(matches!(again, StoreError::Full(_)), "{again:?}");
    assert_eq!(store.totals().unwrap().blocks, next);
    say("recovered".into());
}
