//! `block-manager copy`: the real binary between real store files and a real PostgreSQL
//! (those parts skip without a server, see `common::pg`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use block_manager::chain::{self, Block, Timestamp, Transaction};
use block_manager::ledger::record_of;
use block_manager::store::{BlockRecord, ChainWriter, ReadOnlyStore, RedbStore};
use common::{GENESIS_TS, pg::fresh_database};
use serde_json::Number;

const CACHE: usize = 4 * 1024 * 1024;

/// Genesis and `n` blocks; `variant` changes the producer from height `fork_at` on, so two
/// chains of different variants share their blocks below `fork_at`.
fn blocks(n: u64, variant: &str, fork_at: u64) -> Vec<Block> {
    let mut c = vec![chain::genesis_block(
        Timestamp::parse(GENESIS_TS).expect("timestamp"),
    )];
    for height in 1..=n {
        let parent = &c[c.len() - 1];
        let at = Timestamp::from_unix_micros(parent.timestamp.unix_micros() + 1_000_000);
        let producer = if height >= fork_at { variant } else { "node-a" };
        let txs = (0..3)
            .map(|i| Transaction {
                tx_id: format!("tx-{producer}-{height}-{i}"),
                tx_type: "data_storage".into(),
                from_address: "0xaaaa".into(),
                to_address: "0xbbbb".into(),
                value: Number::from(i),
                fee: Number::from(0),
                data: "x".repeat(200),
                timestamp: at,
                signature: format!("sig-{height}-{i}"),
            })
            .collect();
        c.push(Block::build(
            height,
            parent.hash.clone(),
            at,
            producer,
            format!("block-sig-{height}"),
            txs,
        ));
    }
    c
}

/// A store folder (`storage.blocks_path`) holding `records`.
fn store_with(dir: &Path, network: &str, records: Vec<BlockRecord>) -> PathBuf {
    let folder = dir.to_path_buf();
    let store = RedbStore::open(&folder.join("blocks.redb"), CACHE).expect("open store");
    let mut records = records.into_iter();
    let genesis = records.next().expect("genesis");
    store.set_genesis(network, genesis).expect("genesis");
    let rest: Vec<_> = records.collect();
    for chunk in rest.chunks(500) {
        store.append(chunk).expect("append");
    }
    folder
}

fn records(chain: &[Block]) -> Vec<BlockRecord> {
    chain.iter().map(record_of).collect()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn copy(from: &str, to: &str) -> Run {
    let out = Command::new(common::binary())
        .args(["copy", "--from", from, "--to", to])
        .env_clear()
        .output()
        .expect("copy runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every body of the store folder `dir`, by height.
fn bodies_of(dir: &Path) -> Vec<Vec<u8>> {
    let store = ReadOnlyStore::open(&dir.join("blocks.redb"), CACHE)
        .expect("open")
        .expect("closed cleanly");
    let tip = store.tip().expect("tip").expect("not empty").height;
    (0..=tip)
        .map(|h| store.body_at(h).expect("read").expect("stored"))
        .collect()
}

fn tip_of(dir: &Path) -> Option<(u64, String)> {
    let store = ReadOnlyStore::open(&dir.join("blocks.redb"), CACHE)
        .expect("open")
        .expect("closed cleanly");
    store.tip().expect("tip").map(|m| (m.height, m.hash))
}

#[test]
fn copies_embedded_to_postgres_and_back_with_identical_bodies_and_hashes() {
    let Some(url) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = blocks(300, "node-a", u64::MAX);
    let source = store_with(&dir.path().join("a"), "lucid_blocks", records(&chain));
    {
        // A finality floor to carry over.
        let store = RedbStore::open(&source.join("blocks.redb"), CACHE).expect("open");
        assert_eq!(store.raise_finality_floor(250).expect("floor"), 250);
    }
    let there = copy(path(&source), &url);
    assert_eq!(there.code, Some(0), "{} {}", there.stdout, there.stderr);
    let tip = format!("tip 300 hash {} on both sides", chain[300].hash);
    assert!(
        there.stdout.contains("copied 301 blocks (heights 0-300)"),
        "{}",
        there.stdout
    );
    assert!(there.stdout.contains(&tip), "{}", there.stdout);

    let back = dir.path().join("b");
    let again = copy(&url, path(&back));
    assert_eq!(again.code, Some(0), "{} {}", again.stdout, again.stderr);
    assert!(again.stdout.contains(&tip), "{}", again.stdout);
    assert_eq!(bodies_of(&back), bodies_of(&source));
    let store = ReadOnlyStore::open(&back.join("blocks.redb"), CACHE)
        .expect("open")
        .expect("clean");
    assert_eq!(store.finality_floor().expect("floor"), 250);
    assert_eq!(store.network().expect("network"), "lucid_blocks");
    drop(store);
    // The copy back is validated too: block-manager's own check finds it consistent.
    let (code, report) = common::run_verify(
        dir.path(),
        &[
            ("BLOCK_STORAGE_PATH", path(&back)),
            ("BLOCK_MANAGER_API_KEY", "k"),
        ],
    );
    assert_eq!(code, Some(0), "{report}");
}

/// Copies `source` to `target`, grows the source with a service running on it, and copies again.
fn resumes_after_the_source_grows(target: &str, reread: impl Fn() -> Option<u64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = store_with(
        &dir.path().join("a"),
        "lucid_blocks",
        records(&blocks(40, "node-a", u64::MAX)),
    );
    let first = copy(path(&source), target);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first.stdout.contains("copied 41 blocks (heights 0-40)"),
        "{}",
        first.stdout
    );
    assert_eq!(reread(), Some(40));

    let mut service = common::spawn_process(dir.path(), &[("BLOCK_STORAGE_PATH", path(&source))]);
    for i in 0..5 {
        let (status, body) = common::http_post(
            service.port,
            "/api/v1/blocks",
            &common::create_body(&format!("grow-{i}"), 2),
        )
        .expect("answered");
        assert_eq!(status, 201, "{body}");
    }
    common::signal(&service, "TERM");
    assert_eq!(
        common::wait_exit(&mut service, Duration::from_secs(20)),
        Some(0)
    );

    let second = copy(path(&source), target);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(
        second.stdout.contains("copied 5 blocks (heights 41-45)"),
        "{}",
        second.stdout
    );
    let tip = tip_of(&source).expect("source tip");
    assert!(
        second
            .stdout
            .contains(&format!("tip 45 hash {} on both sides", tip.1)),
        "{}",
        second.stdout
    );
    assert_eq!(reread(), Some(45));

    let third = copy(path(&source), target);
    assert_eq!(third.code, Some(0), "{}", third.stderr);
    assert!(third.stdout.contains("copied 0 blocks"), "{}", third.stdout);
}

#[test]
fn resumes_an_embedded_copy_after_the_source_grows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("copy");
    resumes_after_the_source_grows(path(&target), || tip_of(&target).map(|t| t.0));
}

#[test]
fn resumes_a_postgres_copy_after_the_source_grows() {
    let Some(url) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mirror = dir.path().join("mirror");
    // Read the database's tip back through a copy of it: it only ever adds what is missing.
    resumes_after_the_source_grows(&url, || {
        let run = copy(&url, path(&mirror));
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        tip_of(&mirror).map(|t| t.0)
    });
}

#[test]
fn refuses_a_diverged_target_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = store_with(
        &dir.path().join("a"),
        "lucid_blocks",
        records(&blocks(30, "node-a", 10)),
    );
    let forked = blocks(20, "node-b", 10);
    let target = store_with(&dir.path().join("b"), "lucid_blocks", records(&forked));
    let run = copy(path(&source), path(&target));
    assert_eq!(run.code, Some(1), "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("differ at height 20"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(tip_of(&target), Some((20, forked[20].hash.clone())));

    // Another network's chain, even with the same blocks, is another chain.
    let other = store_with(
        &dir.path().join("c"),
        "lucid_testnet",
        records(&blocks(5, "node-a", u64::MAX)),
    );
    let run = copy(path(&source), path(&other));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("network 'lucid_testnet'"),
        "{}",
        run.stderr
    );
    assert_eq!(tip_of(&other).map(|t| t.0), Some(5));

    // A target longer than the source is no prefix of it.
    let longer = store_with(
        &dir.path().join("d"),
        "lucid_blocks",
        records(&blocks(40, "node-a", 10)),
    );
    let run = copy(path(&source), path(&longer));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("ahead of the source"), "{}", run.stderr);
    assert_eq!(tip_of(&longer).map(|t| t.0), Some(40));
}

#[test]
fn stops_before_an_invalid_source_block_and_keeps_what_was_copied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut recs = records(&blocks(30, "node-a", u64::MAX));
    // A body that no longer hashes to its hash (the store itself takes what it is given).
    let tampered = String::from_utf8(recs[17].body.clone())
        .expect("utf-8")
        .replace(&recs[17].meta.hash, &"f".repeat(64));
    recs[17].body = tampered.into_bytes();
    let source = store_with(&dir.path().join("a"), "lucid_blocks", recs);
    let target = dir.path().join("b");
    let run = copy(path(&source), path(&target));
    assert_eq!(run.code, Some(1), "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("height 17 is invalid: block hash mismatch"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("heights 0-16 copied and kept"),
        "{}",
        run.stderr
    );
    assert_eq!(tip_of(&target).map(|t| t.0), Some(16));

    // A body whose hash recomputes but that is not the canonical form is refused too.
    let mut recs = records(&blocks(10, "node-a", u64::MAX));
    let spaced = String::from_utf8(recs[4].body.clone())
        .expect("utf-8")
        .replacen(',', ", ", 1);
    recs[4].body = spaced.into_bytes();
    let source = store_with(&dir.path().join("c"), "lucid_blocks", recs);
    let run = copy(path(&source), path(&dir.path().join("d")));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("height 4 is invalid: its stored body is not the canonical form"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_arguments_exit_2_without_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = store_with(
        &dir.path().join("a"),
        "lucid_blocks",
        records(&blocks(3, "node-a", u64::MAX)),
    );
    let target = dir.path().join("b");

    let run = copy(path(&source), "postgres://bm:s3cret@127.0.0.1:notaport/db");
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--to"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);

    let run = copy(
        "postgres://bm:s3cret@127.0.0.1:1/db?sslmode=prefer",
        path(&target),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--from"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);

    // Nothing listens on port 1: unreachable is an error line, not a wait.
    let run = copy(
        path(&source),
        "postgres://bm:s3cret@127.0.0.1:1/db?sslmode=disable",
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--to: cannot reach"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);

    let run = copy(path(&dir.path().join("nothing-here")), path(&target));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--from: no block store"),
        "{}",
        run.stderr
    );

    let run = copy(path(&source), path(&source.join("blocks.redb")));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("the same store"), "{}", run.stderr);

    let run = copy("http://example/x", path(&target));
    assert_eq!(run.code, Some(2), "{}", run.stderr);

    let out = Command::new(common::binary())
        .args(["copy", "--from", path(&source)])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(!target.exists(), "a refused copy created its target");

    // A source in use by a running service is refused, not read under its feet.
    let _service = common::spawn_process(dir.path(), &[("BLOCK_STORAGE_PATH", path(&source))]);
    let run = copy(path(&source), path(&target));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("in use by a running block-manager"),
        "{}",
        run.stderr
    );
}
