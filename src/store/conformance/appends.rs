//! Appends and the reads behind them: every index, bodies of every size, refused batches that
//! write nothing, genesis, the write probe and a reopen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{BlockStore, with_transactions};
use super::{Engine, GENESIS_MICROS, blocks, hash_of, heights, record, start, totals_of};
use crate::store::{DEFAULT_NETWORK, FORMAT_VERSION, Order, StoreError, Totals};

pub(crate) fn a_new_chain_is_empty_with_default_chain_info(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    assert_eq!(store.tip().unwrap(), None);
    assert_eq!(store.meta_at(0).unwrap(), None);
    assert_eq!(store.body_at(0).unwrap(), None);
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
    assert!(store.bodies(0, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(store.blocks_since(i64::MIN, 10).unwrap(), 0);
    assert!(store.rollback_log().unwrap().is_empty());
    assert_eq!(store.finality_floor().unwrap(), 0);
}

pub(crate) fn appended_blocks_read_back_verbatim_through_every_index(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
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

pub(crate) fn bodies_of_every_size_round_trip_through_append_reads_and_rollback(
    engine: &dyn Engine,
) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    // Around the embedded engine's 1000-byte body chunks, past a PostgreSQL page (8 KiB, where
    // values move out of line), and a mebibyte.
    let sizes = [
        0,
        1,
        999,
        1_000,
        1_001,
        2_500,
        3_000,
        8_193,
        100_003,
        1 << 20,
    ];
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

pub(crate) fn bodies_stop_before_the_body_that_would_pass_the_byte_budget(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
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

pub(crate) fn set_genesis_records_the_network_and_only_works_on_an_empty_store(
    engine: &dyn Engine,
) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let genesis = blocks(0, 1).remove(0);
    let err = store.set_genesis("testnet", record(1, 0, 0)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 0,
            got: 1
        }
    ));
    assert_eq!(store.chain_info().unwrap().network, DEFAULT_NETWORK);
    store.set_genesis("testnet", genesis.clone()).unwrap();
    let info = store.chain_info().unwrap();
    assert_eq!(info.network, "testnet");
    assert_eq!(info.genesis_hash, Some(genesis.meta.hash.clone()));
    assert_eq!(
        store.totals().unwrap(),
        totals_of(std::slice::from_ref(&genesis))
    );
    let again = store.set_genesis("othernet", genesis).unwrap_err();
    assert!(matches!(
        again,
        StoreError::NotContiguous {
            expected: 1,
            got: 0
        }
    ));
    assert_eq!(store.chain_info().unwrap().network, "testnet");
}

/// Nothing of `batch` is stored, and the chain is still `kept`.
fn assert_nothing_written(
    store: &dyn BlockStore,
    kept: &[crate::store::BlockRecord],
    batch: &[crate::store::BlockRecord],
) {
    assert_eq!(store.tip().unwrap(), kept.last().map(|r| r.meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(kept));
    for r in batch
        .iter()
        .filter(|r| r.meta.height as usize >= kept.len())
    {
        assert_eq!(store.meta_at(r.meta.height).unwrap(), None);
        assert_eq!(store.body_at(r.meta.height).unwrap(), None);
    }
    for r in batch {
        let own = store.height_of_hash(&r.meta.hash).unwrap();
        assert!(own.is_none_or(|h| kept[h as usize].meta.hash == r.meta.hash));
        for id in &r.tx_ids {
            let at = store.tx_location(id).unwrap();
            assert!(
                at.is_none_or(|(h, _)| kept[h as usize].tx_ids.contains(id)),
                "{id}"
            );
        }
    }
    assert_eq!(
        heights(
            &store
                .metas_by_time(0, u64::MAX, Order::Asc, 0, 100)
                .unwrap()
        ),
        (0..kept.len() as u64).collect::<Vec<_>>()
    );
}

pub(crate) fn a_batch_with_a_gap_writes_nothing(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 2);
    store.append(&kept).unwrap();
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
    assert_nothing_written(&*store, &kept, &batch);
}

pub(crate) fn a_batch_that_does_not_continue_the_tip_is_refused(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
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
    assert_nothing_written(&*store, &blocks(0, 2), &blocks(1, 3));
}

pub(crate) fn a_transaction_id_already_stored_aborts_the_whole_batch(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 2);
    store.append(&kept).unwrap();
    let mut batch = blocks(2, 4);
    batch[1].tx_ids[2] = kept[1].tx_ids[0].clone();
    assert!(matches!(store.append(&batch), Err(StoreError::Write(_))));
    assert_nothing_written(&*store, &kept, &batch);
    assert_eq!(
        store.tx_location(&batch[1].tx_ids[2]).unwrap(),
        Some((1, 0))
    );
}

pub(crate) fn a_transaction_id_twice_in_one_batch_aborts_it(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 2);
    store.append(&kept).unwrap();
    let mut batch = blocks(2, 5);
    batch[2].tx_ids[1] = batch[0].tx_ids[0].clone();
    assert!(matches!(store.append(&batch), Err(StoreError::Write(_))));
    assert_nothing_written(&*store, &kept, &batch);
    assert_eq!(store.tx_location(&batch[0].tx_ids[0]).unwrap(), None);
}

pub(crate) fn a_block_hash_already_stored_aborts_the_whole_batch(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 3);
    store.append(&kept).unwrap();
    let mut batch = blocks(3, 5);
    batch[1].meta.hash = kept[1].meta.hash.clone();
    assert!(matches!(store.append(&batch), Err(StoreError::Write(_))));
    assert_nothing_written(&*store, &kept, &batch);
    assert_eq!(store.height_of_hash(&kept[1].meta.hash).unwrap(), Some(1));
}

pub(crate) fn a_block_with_many_transactions_indexes_each_of_them(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let mut chain = blocks(0, 1);
    chain.push(with_transactions(1, GENESIS_MICROS + 10_000_000, 0, 5_000));
    chain.push(with_transactions(2, GENESIS_MICROS + 20_000_000, 0, 0));
    store.append(&chain).unwrap();
    for (i, id) in chain[1].tx_ids.iter().enumerate() {
        assert_eq!(store.tx_location(id).unwrap(), Some((1, i as u32)), "{id}");
    }
    assert_eq!(store.meta_at(1).unwrap(), Some(chain[1].meta.clone()));
    assert_eq!(store.meta_at(2).unwrap().unwrap().transaction_count, 0);
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    assert_eq!(store.totals().unwrap().transactions, 5_003);

    let removed = store.rollback_above(0).unwrap();
    assert_eq!(
        removed,
        chain[1..].to_vec(),
        "tx ids come back in block order"
    );
    for id in &chain[1].tx_ids {
        assert_eq!(store.tx_location(id).unwrap(), None, "{id}");
    }
    assert_eq!(store.totals().unwrap(), totals_of(&chain[..1]));
}

pub(crate) fn reads_see_every_write_at_once(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let chain = blocks(0, 3);
    store.append(&chain[..1]).unwrap();
    // Reads before the next write, which an engine may serve from a snapshot it keeps.
    assert!(store.body_at(1).unwrap().is_none());
    assert!(store.meta_at(1).unwrap().is_none());
    store.append(&chain[1..3]).unwrap();
    assert_eq!(
        store.body_at(2).unwrap().as_deref(),
        Some(&chain[2].body[..])
    );
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(2));
    // A failed write and a rollback show at once too.
    assert!(store.append(&chain[1..2]).is_err());
    store.rollback_above(0).unwrap();
    assert!(store.body_at(1).unwrap().is_none());
    assert_eq!(store.tip().unwrap().map(|m| m.height), Some(0));
}

/// What a reader may see of `store` at any instant: a tip whose meta, body, hash and
/// transaction entries are all there, and totals that are at least that tip's.
fn check_a_consistent_view(store: &dyn BlockStore) -> u64 {
    let Some(tip) = store.tip().unwrap() else {
        return 0;
    };
    let h = tip.height;
    assert_eq!(store.meta_at(h).unwrap(), Some(tip.clone()));
    assert!(store.body_at(h).unwrap().is_some(), "body of tip {h}");
    assert_eq!(store.height_of_hash(&tip.hash).unwrap(), Some(h));
    let first_tx = format!("tx-{h}-0-0");
    assert_eq!(store.tx_location(&first_tx).unwrap(), Some((h, 0)));
    assert!(store.totals().unwrap().blocks > h, "totals behind tip {h}");
    h
}

pub(crate) fn concurrent_readers_never_see_a_commit_in_part(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let chain = blocks(0, 300);
    store.append(&chain[..1]).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = 0;
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let h = check_a_consistent_view(&*store);
                    assert!(h >= seen, "the tip went back from {seen} to {h}");
                    seen = h;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for batch in chain[1..].chunks(7) {
        store.append(batch).unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().expect("reader") > 0);
    }
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
}

pub(crate) fn the_write_probe_succeeds_and_changes_nothing(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    store.check_writable().unwrap();
    let chain = blocks(0, 4);
    store.append(&chain).unwrap();
    for _ in 0..3 {
        store.check_writable().unwrap();
    }
    assert_eq!(store.tip().unwrap(), Some(chain[3].meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    assert!(store.rollback_log().unwrap().is_empty());
    store.append(&blocks(4, 5)).unwrap();
}

pub(crate) fn reopening_keeps_every_block_index_and_total(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    let chain = blocks(0, 50);
    {
        let store = fx.store();
        store.set_genesis("testnet", chain[0].clone()).unwrap();
        store.append(&chain[1..]).unwrap();
    }
    fx.reopen();
    let store = fx.store();
    assert_eq!(store.tip().unwrap(), Some(chain[49].meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    let info = store.chain_info().unwrap();
    assert_eq!(info.network, "testnet");
    assert_eq!(info.genesis_hash, Some(chain[0].meta.hash.clone()));
    assert_eq!(
        store.height_of_hash(&chain[17].meta.hash).unwrap(),
        Some(17)
    );
    assert_eq!(
        store.tx_location(&chain[33].tx_ids[2]).unwrap(),
        Some((33, 2))
    );
    assert_eq!(store.meta_at(21).unwrap(), Some(chain[21].meta.clone()));
    assert_eq!(store.body_at(42).unwrap(), Some(chain[42].body.clone()));
    assert_eq!(
        heights(&store.metas_by_time(0, 3, Order::Desc, 0, 2).unwrap()),
        vec![3, 2]
    );
    let err = store.append(&blocks(49, 50)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotContiguous {
            expected: 50,
            got: 49
        }
    ));
    store.append(&blocks(50, 51)).unwrap();
}
