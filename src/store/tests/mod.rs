//! Tests of the block store against real redb files in temporary folders; [`listing`] covers
//! paging, [`processes`] adds a second process for locking, crash recovery and a full volume.

mod body_log;
mod finality;
mod listing;
mod processes;
mod rollback_log;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::ReadableDatabase;
use tempfile::TempDir;

use super::tables;
use super::*;

const GENESIS_MICROS: i64 = 1_704_067_200_000_000;

fn hash_of(height: u64, salt: u64) -> String {
    format!("{:032x}{:032x}", height, salt)
}

fn record(height: u64, micros: i64, salt: u64) -> BlockRecord {
    let tx_ids: Vec<String> = (0..3).map(|i| format!("tx-{height}-{salt}-{i}")).collect();
    let body = format!(r#"{{"height":{height},"salt":{salt},"transactions":{tx_ids:?}}}"#);
    BlockRecord {
        meta: BlockMeta {
            height,
            hash: hash_of(height, salt),
            previous_hash: if height == 0 {
                "0".repeat(64)
            } else {
                hash_of(height - 1, salt)
            },
            merkle_root: "ab".repeat(32),
            timestamp: format!("t{micros}"),
            timestamp_micros: micros,
            producer: "node-1".into(),
            transaction_count: 3,
            block_size_bytes: body.len() as u64,
        },
        tx_ids,
        body: body.into_bytes(),
    }
}

/// Blocks `from..to`, ten seconds apart.
fn blocks(from: u64, to: u64) -> Vec<BlockRecord> {
    (from..to)
        .map(|h| record(h, GENESIS_MICROS + h as i64 * 10_000_000, 0))
        .collect()
}

fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("blocks").join("blocks.redb")
}

fn open(dir: &TempDir) -> RedbStore {
    RedbStore::open(&store_path(dir), DEFAULT_CACHE_BYTES).expect("open store")
}

fn heights(metas: &[BlockMeta]) -> Vec<u64> {
    metas.iter().map(|m| m.height).collect()
}

fn totals_of(records: &[BlockRecord]) -> Totals {
    let mut t = Totals::default();
    for r in records {
        tables::adjust(&mut t, &r.meta, true);
    }
    t
}

#[test]
fn a_new_store_is_empty_with_default_chain_info() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert!(store.open_report().created);
    assert!(!store.open_report().full_repair);
    assert_eq!(store.tip().unwrap(), None);
    assert_eq!(store.totals().unwrap(), Totals::default());
    let info = store.chain_info().unwrap();
    assert_eq!(info.format_version, FORMAT_VERSION);
    assert_eq!(info.network, DEFAULT_NETWORK);
    assert_eq!(info.genesis_hash, None);
    assert!(
        store
            .metas(0, u64::MAX, Order::Asc, 0, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .metas_by_time(0, u64::MAX, Order::Desc, 0, 10)
            .unwrap()
            .is_empty()
    );
    assert!(store.file_size().unwrap() > 0);
    assert_eq!(store.path(), store_path(&dir));
}

#[test]
fn appended_blocks_read_back_verbatim_through_every_index() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 5);
    store.append(&chain).unwrap();

    assert_eq!(store.tip().unwrap(), Some(chain[4].meta.clone()));
    for r in &chain {
        let h = r.meta.height;
        assert_eq!(store.meta_at(h).unwrap(), Some(r.meta.clone()));
        assert_eq!(store.body_at(h).unwrap(), Some(r.body.clone()));
        assert_eq!(store.height_of_hash(&r.meta.hash).unwrap(), Some(h));
        for (i, id) in r.tx_ids.iter().enumerate() {
            assert_eq!(store.tx_location(id).unwrap(), Some((h, i as u32)));
        }
    }
    assert_eq!(store.meta_at(5).unwrap(), None);
    assert_eq!(store.body_at(5).unwrap(), None);
    assert_eq!(store.height_of_hash(&hash_of(9, 9)).unwrap(), None);
    assert_eq!(store.tx_location("nope").unwrap(), None);
    let bodies: Vec<Vec<u8>> = chain[1..4].iter().map(|r| r.body.clone()).collect();
    assert_eq!(store.bodies(1, 3, usize::MAX).unwrap(), bodies);
    assert_eq!(store.bodies(3, 100, usize::MAX).unwrap().len(), 2);
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    assert_eq!(
        store.chain_info().unwrap().genesis_hash,
        Some(chain[0].meta.hash.clone())
    );
}

#[test]
fn bodies_of_every_size_round_trip_through_append_reads_and_rollback() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chunk = tables::BODY_CHUNK_BYTES;
    let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 2_500, 3 * chunk, 100_003];
    let mut chain = blocks(0, sizes.len() as u64);
    for (r, size) in chain.iter_mut().zip(sizes) {
        r.body = (0..size).map(|i| (i * 31 + size) as u8).collect();
    }
    store.append(&chain).unwrap();
    for r in &chain {
        assert_eq!(
            store.body_at(r.meta.height).unwrap().as_ref(),
            Some(&r.body)
        );
    }
    let all: Vec<Vec<u8>> = chain.iter().map(|r| r.body.clone()).collect();
    assert_eq!(store.bodies(0, 100, usize::MAX).unwrap(), all);
    assert_eq!(store.bodies(2, 3, usize::MAX).unwrap(), all[2..5].to_vec());
    assert!(store.bodies(0, 0, usize::MAX).unwrap().is_empty());
    assert!(store.bodies(99, 5, usize::MAX).unwrap().is_empty());
    assert_eq!(store.rollback_above(0).unwrap(), chain[1..].to_vec());
    assert_eq!(store.body_at(0).unwrap(), Some(Vec::new()));
    assert_eq!(store.body_at(1).unwrap(), None);
    assert_eq!(
        store.bodies(0, 10, usize::MAX).unwrap(),
        vec![Vec::<u8>::new()]
    );
}

#[test]
fn bodies_stop_before_the_body_that_would_pass_the_byte_budget() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut chain = blocks(0, 6);
    for (i, r) in chain.iter_mut().enumerate() {
        r.body = vec![b'a' + i as u8; 10_000];
    }
    store.append(&chain).unwrap();
    let all: Vec<Vec<u8>> = chain.iter().map(|r| r.body.clone()).collect();
    // Exactly two fit; a third would be over by one byte.
    assert_eq!(store.bodies(1, 100, 20_000).unwrap(), all[1..3].to_vec());
    assert_eq!(store.bodies(1, 100, 29_999).unwrap(), all[1..3].to_vec());
    assert_eq!(store.bodies(1, 100, 30_000).unwrap(), all[1..4].to_vec());
    // The first body is served whatever its size: a page is never empty below the tip.
    assert_eq!(store.bodies(2, 100, 10).unwrap(), all[2..3].to_vec());
    assert_eq!(store.bodies(2, 1, 1_000_000).unwrap(), all[2..3].to_vec());
}

#[test]
fn set_genesis_records_the_network_and_only_works_on_an_empty_store() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let genesis = blocks(0, 1).remove(0);
    let err = store.set_genesis("testnet", record(1, 0, 0)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 0,
            got: 1
        }
    ));
    store.set_genesis("testnet", genesis.clone()).unwrap();
    let info = store.chain_info().unwrap();
    assert_eq!(info.network, "testnet");
    assert_eq!(info.genesis_hash, Some(genesis.meta.hash.clone()));
    assert_eq!(
        store.totals().unwrap(),
        totals_of(std::slice::from_ref(&genesis))
    );
    let again = store.set_genesis("testnet", genesis).unwrap_err();
    assert!(matches!(
        again,
        StoreError::NotContiguous {
            expected: 1,
            got: 0
        }
    ));
}

#[test]
fn a_batch_with_a_gap_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.append(&blocks(0, 2)).unwrap();
    let before = store.totals().unwrap();
    let mut batch = blocks(2, 4);
    batch.push(record(5, GENESIS_MICROS, 0));
    let err = store.append(&batch).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 4,
            got: 5
        }
    ));

    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(1));
    assert_eq!(store.totals().unwrap(), before);
    for r in &batch {
        assert_eq!(store.height_of_hash(&r.meta.hash).unwrap(), None);
        assert_eq!(store.tx_location(&r.tx_ids[0]).unwrap(), None);
        assert_eq!(store.body_at(r.meta.height).unwrap(), None);
    }
    assert_eq!(
        store
            .metas_by_time(0, 100, Order::Asc, 0, 100)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_batch_that_does_not_continue_the_tip_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let err = store.append(&blocks(1, 3)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 0,
            got: 1
        }
    ));
    store.append(&blocks(0, 2)).unwrap();
    let err = store.append(&blocks(1, 2)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 2,
            got: 1
        }
    ));
    store.append(&[]).unwrap();
}

#[test]
fn a_transaction_id_already_stored_aborts_the_whole_batch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.append(&blocks(0, 2)).unwrap();
    let mut batch = blocks(2, 4);
    batch[1].tx_ids[2] = blocks(1, 2)[0].tx_ids[0].clone();
    assert!(matches!(store.append(&batch), Err(StoreError::Write(_))));
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(1));
    assert_eq!(store.height_of_hash(&batch[0].meta.hash).unwrap(), None);
    assert_eq!(store.tx_location(&batch[0].tx_ids[0]).unwrap(), None);
    assert_eq!(
        store.tx_location(&batch[1].tx_ids[2]).unwrap(),
        Some((1, 0))
    );
}

#[test]
fn rollback_removes_blocks_with_their_index_entries_and_totals() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 10);
    store.append(&chain).unwrap();

    let removed = store.rollback_above(6).unwrap();
    assert_eq!(removed, chain[7..].to_vec());
    assert_eq!(store.tip().unwrap(), Some(chain[6].meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&chain[..7]));
    for r in &removed {
        assert_eq!(store.meta_at(r.meta.height).unwrap(), None);
        assert_eq!(store.body_at(r.meta.height).unwrap(), None);
        assert_eq!(store.height_of_hash(&r.meta.hash).unwrap(), None);
        for id in &r.tx_ids {
            assert_eq!(store.tx_location(id).unwrap(), None);
        }
    }
    let by_time = store
        .metas_by_time(0, u64::MAX, Order::Asc, 0, 100)
        .unwrap();
    assert_eq!(heights(&by_time), (0..=6).collect::<Vec<_>>());
    assert_eq!(store.bodies(5, 100, usize::MAX).unwrap().len(), 2);

    // The freed heights, hashes and transaction ids can be taken by a fork's blocks
    let mut fork = chain[7].clone();
    fork.meta.hash = hash_of(7, 1);
    store.append(&[fork.clone()]).unwrap();
    assert_eq!(store.height_of_hash(&fork.meta.hash).unwrap(), Some(7));
    assert_eq!(store.tx_location(&fork.tx_ids[0]).unwrap(), Some((7, 0)));
}

#[test]
fn rollback_at_or_above_the_tip_removes_nothing_and_genesis_stays() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert!(store.rollback_above(0).unwrap().is_empty());
    let chain = blocks(0, 3);
    store.append(&chain).unwrap();
    assert!(store.rollback_above(2).unwrap().is_empty());
    assert!(store.rollback_above(99).unwrap().is_empty());
    assert_eq!(store.rollback_above(0).unwrap().len(), 2);
    assert_eq!(store.tip().unwrap(), Some(chain[0].meta.clone()));
    assert_eq!(
        store.chain_info().unwrap().genesis_hash,
        Some(chain[0].meta.hash.clone())
    );
}

#[test]
fn reopening_keeps_every_block_index_and_total() {
    let dir = TempDir::new().unwrap();
    let chain = blocks(0, 50);
    {
        let store = open(&dir);
        store.set_genesis("testnet", chain[0].clone()).unwrap();
        store.append(&chain[1..]).unwrap();
        store.close().unwrap();
    }
    let store = open(&dir);
    let report = store.open_report();
    assert!(!report.created && !report.full_repair);
    assert_eq!(store.tip().unwrap(), Some(chain[49].meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    assert_eq!(store.chain_info().unwrap().network, "testnet");
    assert_eq!(
        store.height_of_hash(&chain[17].meta.hash).unwrap(),
        Some(17)
    );
    assert_eq!(
        store.tx_location(&chain[33].tx_ids[2]).unwrap(),
        Some((33, 2))
    );
    assert_eq!(store.body_at(42).unwrap(), Some(chain[42].body.clone()));
    assert_eq!(
        heights(&store.metas_by_time(0, 3, Order::Desc, 0, 2).unwrap()),
        vec![3, 2]
    );
    store.append(&blocks(50, 51)).unwrap();
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
    std::fs::create_dir(super::redb_store::probe_path(&store_path(&dir))).unwrap();
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
fn reads_see_every_write_at_once_though_they_share_a_snapshot() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 3);
    store.append(&chain[..1]).unwrap();
    // Reads before the next write establish the shared snapshot.
    assert!(store.body_at(1).unwrap().is_none());
    assert!(store.meta_at(1).unwrap().is_none());
    store.append(&chain[1..3]).unwrap();
    assert_eq!(
        store.body_at(2).unwrap().as_deref(),
        Some(&chain[2].body[..])
    );
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(2));
    // A failed write retires it too, and a rollback shows at once.
    assert!(store.append(&chain[1..2]).is_err());
    store.rollback_above(0).unwrap();
    assert!(store.body_at(1).unwrap().is_none());
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(0));
    store.close().unwrap();
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
