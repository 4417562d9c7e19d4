//! The body log beside the redb file: a body is served from it only while it holds exactly what
//! redb holds, whatever happened to its files.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::super::body_log::{REPAIR_PER_COMMIT, checksum};
use super::super::conformance::{GENESIS_MICROS, blocks, record};
use super::super::files::sibling;
use super::super::tables;
use super::{open, store_path};
use crate::store::{BlockReads, BlockRecord, ChainWriter, RedbStore};

fn index_path(dir: &TempDir) -> PathBuf {
    sibling(&store_path(dir), "bodies-index")
}

fn data_path(dir: &TempDir) -> PathBuf {
    sibling(&store_path(dir), "bodies")
}

fn read_entry(index: &Path, height: u64) -> [u8; 16] {
    let mut raw = [0; 16];
    let file = OpenOptions::new().read(true).open(index).unwrap();
    file.read_exact_at(&mut raw, height * 16).unwrap();
    raw
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

/// Stores `watermark` as the log's, as a crash before the log was fsync'd would leave it.
fn set_stored_watermark(dir: &TempDir, watermark: u64) {
    let db = redb::Database::open(store_path(dir)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(tables::META)
        .unwrap()
        .insert(tables::KEY_BODY_LOG, watermark.to_le_bytes().as_slice())
        .unwrap();
    txn.commit().unwrap();
}

/// A store under `dir` holding `chain`, closed cleanly.
fn closed_store(dir: &TempDir, chain: &[BlockRecord]) {
    open(dir).append(chain).unwrap();
}

/// Every block of `records` reads back by height as stored.
fn assert_serves<'r>(store: &RedbStore, records: impl IntoIterator<Item = &'r BlockRecord>) {
    for r in records {
        assert_eq!(store.body_at(r.meta.height).unwrap(), Some(r.body.clone()));
    }
}

/// Blocks `from..to` of another branch (other hashes, times and bodies) than [`blocks`].
fn fork(from: u64, to: u64) -> Vec<BlockRecord> {
    (from..to)
        .map(|h| record(h, GENESIS_MICROS + h as i64 * 7_000_000, 1))
        .collect()
}

#[test]
fn appended_bodies_are_served_from_the_log() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 400);
    store.append(&chain[..1]).unwrap();
    store.append(&chain[1..25]).unwrap();
    store.append(&chain[25..]).unwrap();
    assert_eq!(store.body_log_trusted(), Some(400));
    // The data file has outgrown its first map (4 KiB in tests) and been mapped again
    let (used, mapped) = store.body_log_mapped().unwrap();
    assert!(
        used > 4096 && mapped >= used,
        "{used} bytes in use, {mapped} mapped"
    );
    assert_serves(&store, &chain);
    assert_eq!(store.body_at(400).unwrap(), None);
    // Proof that the log answers: point height 7's entry at height 8's body, with a checksum
    // made for height 7.
    let mut forged = read_entry(&index_path(&dir), 8);
    forged[12..].copy_from_slice(&checksum(7, &chain[8].body).to_le_bytes());
    write_at(&index_path(&dir), 7 * 16, &forged);
    assert_eq!(store.body_at(7).unwrap(), Some(chain[8].body.clone()));
}

#[test]
fn zeroed_copied_and_oversized_entries_are_read_from_the_store() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 20);
    store.append(&chain).unwrap();
    let index = index_path(&dir);
    // Zeroed, as a crash or a failing card leaves blocks: offset 0, length 0, checksum 0
    write_at(&index, 5 * 16, &[0; 16]);
    // Another height's entry, checksum and all
    write_at(&index, 6 * 16, &read_entry(&index, 9));
    // A length far past the data file (no 4 GiB allocation), and an end that overflows
    let mut long = read_entry(&index, 7);
    long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    write_at(&index, 7 * 16, &long);
    let mut wrapping = read_entry(&index, 8);
    wrapping[..8].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
    write_at(&index, 8 * 16, &wrapping);
    assert_serves(&store, &chain[5..9]);
    drop(store);
    // At the next open too; and entries below the damage still come from the log
    let store = open(&dir);
    assert_serves(&store, &chain);
}

#[test]
fn a_damaged_body_in_the_log_is_read_from_the_store_instead() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 20);
    store.append(&chain).unwrap();
    let entry = read_entry(&index_path(&dir), 10);
    let offset = u64::from_le_bytes(entry[..8].try_into().unwrap());
    write_at(&data_path(&dir), offset + 3, b"#");
    assert_eq!(store.body_at(10).unwrap(), Some(chain[10].body.clone()));
    // An entry pointing past the end of the data file as well
    write_at(&index_path(&dir), 11 * 16, &u64::MAX.to_le_bytes());
    assert_eq!(store.body_at(11).unwrap(), Some(chain[11].body.clone()));
}

#[test]
fn a_clean_close_trusts_the_whole_log_at_the_next_open() {
    let dir = TempDir::new().unwrap();
    let chain = blocks(0, 30);
    closed_store(&dir, &chain);
    let store = open(&dir);
    assert_eq!(store.body_log_trusted(), Some(30));
    assert_eq!(store.body_at(29).unwrap(), Some(chain[29].body.clone()));
}

#[test]
fn a_lost_log_is_read_from_the_store_and_rebuilt_by_later_commits() {
    let dir = TempDir::new().unwrap();
    let total = REPAIR_PER_COMMIT + 100;
    let chain = blocks(0, total + 2);
    closed_store(&dir, &chain[..total as usize]);
    std::fs::remove_file(data_path(&dir)).unwrap();
    let store = open(&dir);
    assert_eq!(store.body_log_trusted(), Some(0));
    assert_serves(&store, &chain[..total as usize]);
    // Each commit rewrites a bounded part of the gap; the one that closes it logs its own block.
    store.append(&chain[total as usize..][..1]).unwrap();
    assert_eq!(store.body_log_trusted(), Some(REPAIR_PER_COMMIT));
    store.append(&chain[total as usize + 1..]).unwrap();
    assert_eq!(store.body_log_trusted(), Some(total + 2));
    assert_serves(&store, &chain);
}

#[test]
fn entries_above_the_stored_watermark_are_not_trusted_after_a_crash() {
    let dir = TempDir::new().unwrap();
    let chain = blocks(0, 12);
    closed_store(&dir, &chain);
    // As after a power loss: the watermark stored says only 0..5 were synced, and entry 8 holds
    // a sound but different body (the one of height 9).
    set_stored_watermark(&dir, 5);
    write_at(&index_path(&dir), 8 * 16, &read_entry(&index_path(&dir), 9));
    let store = open(&dir);
    assert_eq!(store.body_log_trusted(), Some(5));
    assert_eq!(store.body_at(8).unwrap(), Some(chain[8].body.clone()));
    store.append(&blocks(12, 13)).unwrap();
    assert_eq!(store.body_log_trusted(), Some(13));
    assert_eq!(store.body_at(8).unwrap(), Some(chain[8].body.clone()));
}

#[test]
fn after_a_rollback_the_new_blocks_at_those_heights_are_served() {
    let dir = TempDir::new().unwrap();
    let chain = blocks(0, 20);
    let fork = fork(11, 20);
    {
        let store = open(&dir);
        store.append(&chain).unwrap();
        store.rollback_above(10).unwrap();
        assert_eq!(store.body_log_trusted(), Some(11));
        assert_eq!(store.body_at(15).unwrap(), None);
        store.append(&fork).unwrap();
        assert_eq!(store.body_log_trusted(), Some(20));
        assert_serves(&store, chain[..11].iter().chain(&fork));
    }
    {
        // The clean close stored 20. A rollback stores its lowered watermark with the removal
        // itself, not only at the next close.
        let store = open(&dir);
        assert_eq!(store.stored_body_log_watermark(), Some(20));
        store.rollback_above(15).unwrap();
        assert_eq!(store.stored_body_log_watermark(), Some(16));
    }
    let store = open(&dir);
    assert_eq!(store.body_log_trusted(), Some(16));
    assert_eq!(store.body_at(15).unwrap(), Some(fork[4].body.clone()));
    assert_eq!(store.body_at(16).unwrap(), None);
}

#[test]
fn commits_store_the_watermark_once_the_log_is_synced_in_the_background() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 200);
    store.append(&chain[..10]).unwrap();
    // Nothing was fsync'd when that commit ran, so it could not raise the stored watermark.
    assert_eq!(store.stored_body_log_watermark(), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = 10;
    while store.stored_body_log_watermark().unwrap_or(0) < 10 {
        assert!(
            Instant::now() < deadline,
            "the stored watermark never advanced"
        );
        std::thread::sleep(Duration::from_millis(20));
        store.append(&chain[next..next + 1]).unwrap();
        next += 1;
    }
}

#[test]
fn a_rollback_in_a_run_without_the_log_still_lowers_the_stored_watermark() {
    let dir = TempDir::new().unwrap();
    let chain = blocks(0, 20);
    let fork = fork(11, 20);
    closed_store(&dir, &chain);
    // The data file cannot be opened in the next run (a folder stands in its place)
    let saved = dir.path().join("saved-bodies");
    std::fs::rename(data_path(&dir), &saved).unwrap();
    std::fs::create_dir(data_path(&dir)).unwrap();
    {
        let store = open(&dir);
        assert_eq!(store.body_log_trusted(), None);
        store.rollback_above(10).unwrap();
        store.append(&fork).unwrap();
        assert_eq!(store.stored_body_log_watermark(), Some(11));
    }
    // The old log comes back: its entries for 11.. hold the orphans, checksums and all
    std::fs::remove_dir(data_path(&dir)).unwrap();
    std::fs::rename(&saved, data_path(&dir)).unwrap();
    let store = open(&dir);
    assert_eq!(store.body_log_trusted(), Some(11));
    assert_serves(&store, chain[..11].iter().chain(&fork));
}
