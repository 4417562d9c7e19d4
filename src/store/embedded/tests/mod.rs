//! Tests of what is the embedded engine's own: its redb file (format version, foreign and
//! corrupt files, locking, file modes, the write probe's file), [`body_log`] beside it, and
//! [`processes`], a second process for locking, crash recovery and a full volume. What every
//! engine does is in [`super::conformance`].

mod body_log;
mod processes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::ReadableDatabase;
use tempfile::TempDir;

use super::conformance::blocks;
use super::tables;
use super::*;
use crate::store::{BlockReads, ChainWriter, DEFAULT_CACHE_BYTES, StoreProbe, free_space};

fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("blocks").join("blocks.redb")
}

fn open(dir: &TempDir) -> RedbStore {
    RedbStore::open(&store_path(dir), DEFAULT_CACHE_BYTES).expect("open store")
}

#[test]
fn a_new_store_file_is_reported_created_with_its_path_and_size() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert!(store.open_report().created);
    assert!(!store.open_report().full_repair);
    assert!(store.file_size().unwrap() > 0);
    assert_eq!(store.path(), store_path(&dir));
}

#[test]
fn a_clean_reopen_is_reported_neither_created_nor_repaired() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        store.append(&blocks(0, 50)).unwrap();
        store.close().unwrap();
    }
    let store = open(&dir);
    let report = store.open_report();
    assert!(!report.created && !report.full_repair);
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(49));
}

#[test]
fn the_write_probe_succeeds_and_leaves_nothing_behind() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for _ in 0..3 {
        store.check_writable().unwrap();
    }
    let folder = store_path(&dir).parent().unwrap().to_path_buf();
    let mut names: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected = [
        "blocks.redb",
        "blocks.redb.bodies",
        "blocks.redb.bodies-index",
    ];
    assert_eq!(names, expected);
}

#[test]
fn the_write_probe_reports_a_volume_it_cannot_write_to() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // A folder where the probe file goes makes its creation fail, as a read-only volume would
    std::fs::create_dir(super::files::probe_path(&store_path(&dir))).unwrap();
    assert!(matches!(store.check_writable(), Err(StoreError::Write(_))));
    // Reads and writes of blocks are unaffected
    store.append(&blocks(0, 1)).unwrap();
}

#[test]
fn free_space_reports_the_volume_of_a_store_that_does_not_exist_yet() {
    let dir = TempDir::new().unwrap();
    let (available, total) = free_space(&store_path(&dir)).unwrap();
    assert!(total > 0 && available <= total);
    let (_, relative_total) = free_space(Path::new("no/such/folder/blocks.redb")).unwrap();
    assert!(relative_total > 0);
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = TempDir::new().unwrap();
    open(&dir).close().unwrap();
    {
        let db = redb::Database::create(store_path(&dir)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::META)
            .unwrap()
            .insert(tables::KEY_FORMAT_VERSION, 2u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&store_path(&dir), DEFAULT_CACHE_BYTES).err();
    assert!(
        matches!(
            err,
            Some(StoreError::NewerFormat {
                found: 2,
                supported: 1
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_redb_file_of_another_program_is_refused_untouched() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let other: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("other");
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path, DEFAULT_CACHE_BYTES).err();
    assert!(matches!(err, Some(StoreError::Corrupt(_))), "{err:?}");
    let db = redb::Database::open(&path).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert_eq!(names, vec!["other".to_string()]);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_as_corrupt() {
    let dir = TempDir::new().unwrap();
    let path = store_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = RedbStore::open(&path, DEFAULT_CACHE_BYTES).err();
    assert!(matches!(err, Some(StoreError::Corrupt(_))), "{err:?}");
}

#[test]
fn a_second_open_in_the_same_process_fails_fast_with_already_open() {
    let dir = TempDir::new().unwrap();
    let _first = open(&dir);
    let started = Instant::now();
    let second = RedbStore::open(&store_path(&dir), DEFAULT_CACHE_BYTES).err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&second, Some(StoreError::AlreadyOpen { path }) if *path == store_path(&dir)),
        "{second:?}"
    );
}

#[test]
fn store_files_and_their_folder_are_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.append(&blocks(0, 3)).unwrap();
    drop(store);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = store_path(&dir);
    assert_eq!(mode(path.parent().unwrap()), 0o700, "store folder");
    assert_eq!(mode(&path), 0o600, "redb file");
    let logs: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".bodies"))
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in logs {
        assert_eq!(mode(&log), 0o600, "{}", log.display());
    }
}

/// Blocks whose hashes spread over the hints' slots (the conformance chain's hashes all
/// share their leading bits), each body opening with its id as a served document does.
fn spread_blocks(from: u64, to: u64, salt: u64) -> Vec<crate::store::BlockRecord> {
    let mut chain = blocks(from, to);
    for b in &mut chain {
        let hash = blake3::hash(format!("{}-{salt}", b.meta.height).as_bytes())
            .to_hex()
            .to_string();
        b.body = format!(r#"{{"block_id":"{hash}","height":{}}}"#, b.meta.height).into_bytes();
        b.meta.hash = hash;
        b.tx_ids = vec![format!("t-{}-{salt}", b.meta.height)];
        b.meta.transaction_count = 1;
    }
    chain
}

#[test]
fn lookups_by_hash_follow_appends_rollbacks_and_reopens_through_the_hints() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let genesis = blocks(0, 1);
    store.append(&genesis).unwrap();
    let chain = spread_blocks(1, 400, 0);
    store.append(&chain).unwrap();
    for b in &chain {
        assert_eq!(
            store.height_of_hash(&b.meta.hash).unwrap(),
            Some(b.meta.height)
        );
    }
    store.rollback_above(200).unwrap();
    let fork = spread_blocks(201, 300, 1);
    store.append(&fork).unwrap();
    // Heights above 200 now hold the fork's blocks: the first chain's hashes there name none.
    let after_fork = |store: &RedbStore| {
        for b in &chain {
            let want = (b.meta.height <= 200).then_some(b.meta.height);
            assert_eq!(store.height_of_hash(&b.meta.hash).unwrap(), want);
        }
        for b in &fork {
            assert_eq!(
                store.height_of_hash(&b.meta.hash).unwrap(),
                Some(b.meta.height)
            );
        }
    };
    after_fork(&store);
    // Reopened, the hints are filled again in the background; answers are the same meanwhile
    // and after.
    drop(store);
    let store = open(&dir);
    after_fork(&store);
    store.wait_for_hints();
    after_fork(&store);
    // The fill's read transaction does not outlive the store: it opens again at once.
    drop(store);
    let _again = open(&dir);
}

#[test]
fn a_lookup_by_hash_sees_every_write_after_an_earlier_lookup() {
    // The hash index is kept open with the shared snapshot: each write must retire it.
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 10);
    store.append(&chain[..5]).unwrap();
    assert_eq!(store.height_of_hash(&chain[4].meta.hash).unwrap(), Some(4));
    assert_eq!(store.height_of_hash(&chain[5].meta.hash).unwrap(), None);
    store.append(&chain[5..]).unwrap();
    assert_eq!(store.height_of_hash(&chain[5].meta.hash).unwrap(), Some(5));
    assert_eq!(store.height_of_hash(&chain[9].meta.hash).unwrap(), Some(9));
    store.rollback_above(6).unwrap();
    assert_eq!(store.height_of_hash(&chain[9].meta.hash).unwrap(), None);
    assert_eq!(store.height_of_hash(&chain[6].meta.hash).unwrap(), Some(6));
}
