//! Rollbacks: a suffix removed with all its index entries and totals, genesis kept, and the
//! rollback log written in the rollback's own commit, newest first, bounded, kept across a
//! reopen.

use super::{Engine, blocks, hash_of, heights, start, totals_of};
use crate::store::{Order, Position, ROLLBACK_LOG_MAX, Rollback};

pub(crate) fn rollback_removes_blocks_with_their_index_entries_and_totals(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
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
    assert_eq!(
        store
            .blocks_since(chain[5].meta.timestamp_micros, 100)
            .unwrap(),
        2
    );

    // The freed heights, hashes and transaction ids can be taken by a fork's blocks
    let mut fork = chain[7].clone();
    fork.meta.hash = hash_of(7, 1);
    // A document names its own hash first.
    let body = String::from_utf8(fork.body).unwrap();
    fork.body = body
        .replacen(&chain[7].meta.hash, &fork.meta.hash, 1)
        .into_bytes();
    store.append(std::slice::from_ref(&fork)).unwrap();
    assert_eq!(store.height_of_hash(&fork.meta.hash).unwrap(), Some(7));
    assert_eq!(store.tx_location(&fork.tx_ids[0]).unwrap(), Some((7, 0)));
    assert_eq!(store.height_of_hash(&chain[7].meta.hash).unwrap(), None);
}

pub(crate) fn rollback_at_or_above_the_tip_removes_nothing_and_genesis_stays(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    assert!(store.rollback_above(0).unwrap().is_empty());
    let chain = blocks(0, 3);
    store.append(&chain).unwrap();
    assert!(store.rollback_above(2).unwrap().is_empty());
    assert!(store.rollback_above(99).unwrap().is_empty());
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
    assert_eq!(store.rollback_above(0).unwrap().len(), 2);
    assert_eq!(store.tip().unwrap(), Some(chain[0].meta.clone()));
    assert_eq!(
        store.chain_info().unwrap().genesis_hash,
        Some(chain[0].meta.hash.clone())
    );
    assert!(
        store.rollback_above(0).unwrap().is_empty(),
        "genesis is never removed"
    );
    assert_eq!(store.totals().unwrap(), totals_of(&chain[..1]));
}

pub(crate) fn a_rollback_after_a_reopen_removes_what_the_earlier_run_stored(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    let chain = blocks(0, 20);
    fx.store().append(&chain).unwrap();
    fx.reopen();
    {
        let store = fx.store();
        assert_eq!(store.rollback_above(11).unwrap(), chain[12..].to_vec());
    }
    fx.reopen();
    let store = fx.store();
    assert_eq!(store.tip().unwrap(), Some(chain[11].meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&chain[..12]));
    for r in &chain[12..] {
        assert_eq!(store.meta_at(r.meta.height).unwrap(), None);
        assert_eq!(store.body_at(r.meta.height).unwrap(), None);
        assert_eq!(store.height_of_hash(&r.meta.hash).unwrap(), None);
        assert_eq!(store.tx_location(&r.tx_ids[1]).unwrap(), None);
    }
    assert_eq!(
        store.metas(0, u64::MAX, Order::Desc, 0, 1).unwrap(),
        vec![chain[11].meta.clone()]
    );
    let log = store.rollback_log().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].old_tip,
        Position::new(19, chain[19].meta.hash.clone())
    );
    // The removed heights take new blocks as if they had never been stored.
    store.append(&chain[12..]).unwrap();
    assert_eq!(store.totals().unwrap(), totals_of(&chain));
}

pub(crate) fn a_rollback_is_logged_with_its_ancestor_old_tip_and_orphans(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    assert!(
        store.rollback_log().unwrap().is_empty(),
        "a new store has none"
    );
    let chain = blocks(0, 12);
    store.append(&chain).unwrap();
    store.rollback_above(8).unwrap();
    store.rollback_above(8).unwrap(); // nothing above 8 any more: not logged
    store.rollback_above(5).unwrap();
    let log = store.rollback_log().unwrap();
    let pos = |h: usize| Position::new(h as u64, chain[h].meta.hash.clone());
    let hashes = |r: std::ops::Range<usize>| -> Vec<String> {
        chain[r].iter().map(|b| b.meta.hash.clone()).collect()
    };
    assert_eq!(
        log,
        vec![
            Rollback {
                ancestor: pos(5),
                old_tip: pos(8),
                orphaned: hashes(6..9),
            },
            Rollback {
                ancestor: pos(8),
                old_tip: pos(11),
                orphaned: hashes(9..12),
            },
        ]
    );
    drop(store);
    fx.reopen();
    assert_eq!(
        fx.store().rollback_log().unwrap(),
        log,
        "kept across a reopen"
    );
}

pub(crate) fn the_rollback_log_forgets_the_oldest_past_its_bound(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let chain = blocks(0, 3);
    store.append(&chain[..2]).unwrap();
    for _ in 0..ROLLBACK_LOG_MAX + 5 {
        store.append(&chain[2..3]).unwrap();
        store.rollback_above(1).unwrap();
    }
    // One more of another kind, so that "newest first" is seen at the bound too.
    store.rollback_above(0).unwrap();
    let log = store.rollback_log().unwrap();
    assert_eq!(log.len(), ROLLBACK_LOG_MAX);
    assert_eq!(log[0].orphaned, vec![chain[1].meta.hash.clone()]);
    assert!(
        log[1..]
            .iter()
            .all(|r| r.orphaned == vec![chain[2].meta.hash.clone()])
    );
}
