//! The chain writer's transactions ([`crate::store::WriteTxn`]): what the ledger relies on when
//! it validates and commits a group inside one of them.

use super::{Engine, blocks, record, start, totals_of};
use crate::store::StoreError;

pub(crate) fn a_dropped_transaction_writes_nothing(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 3);
    store.append(&kept).unwrap();
    {
        let mut txn = store.begin().unwrap();
        txn.append(blocks(3, 6)).unwrap();
        assert_eq!(txn.tip().map(|m| m.height), Some(5), "the staged tip moves");
        // Dropped here, without a commit.
    }
    assert_eq!(store.tip().unwrap(), kept.last().map(|r| r.meta.clone()));
    assert_eq!(store.totals().unwrap(), totals_of(&kept));
    assert_eq!(store.meta_at(3).unwrap(), None);
    // The chain is not left locked: the next transaction goes through.
    let mut txn = store.begin().unwrap();
    txn.append(blocks(3, 4)).unwrap();
    let done = txn.commit().unwrap();
    assert_eq!(done.tip.map(|m| m.height), Some(3));
}

pub(crate) fn a_transaction_commits_its_appends_at_once_and_says_what_it_left(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let all = blocks(0, 6);
    let mut txn = store.begin().unwrap();
    assert_eq!(txn.tip(), None, "an empty chain has no tip");
    txn.append(all[..2].to_vec()).unwrap();
    txn.append(all[2..].to_vec()).unwrap();
    // Staged, not written: the store's reads do not see it yet.
    assert_eq!(txn.meta_at(1).unwrap(), None);
    assert_eq!(store.tip().unwrap(), None);
    let done = txn.commit().unwrap();
    assert_eq!(done.tip, all.last().map(|r| r.meta.clone()));
    assert_eq!(done.appended, all);
    assert!(done.removed.is_empty());
    assert_eq!(store.tip().unwrap(), done.tip);
    assert_eq!(store.totals().unwrap(), totals_of(&all));
    for r in &all {
        assert_eq!(store.body_at(r.meta.height).unwrap(), Some(r.body.clone()));
    }
}

pub(crate) fn a_transaction_refuses_blocks_that_do_not_continue_its_tip(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    store.append(&blocks(0, 2)).unwrap();
    let mut txn = store.begin().unwrap();
    assert!(matches!(
        txn.append(blocks(3, 4)),
        Err(StoreError::NotContiguous {
            expected: 2,
            got: 3
        })
    ));
    // Nothing was staged by the refusal: the right block still goes on.
    txn.append(blocks(2, 3)).unwrap();
    assert_eq!(txn.commit().unwrap().tip.map(|m| m.height), Some(2));
}

pub(crate) fn a_transaction_looks_up_a_groups_transaction_ids_at_once(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let kept = blocks(0, 3);
    store.append(&kept).unwrap();
    let txn = store.begin().unwrap();
    let stored = txn
        .stored_tx_ids(&[&kept[1].tx_ids[0], "tx-never", &kept[2].tx_ids[2]])
        .unwrap();
    let mut stored: Vec<String> = stored.into_iter().collect();
    stored.sort();
    assert_eq!(
        stored,
        vec![kept[1].tx_ids[0].clone(), kept[2].tx_ids[2].clone()]
    );
    assert_eq!(txn.meta_at(2).unwrap(), Some(kept[2].meta.clone()));
    assert_eq!(txn.body_at(2).unwrap(), Some(kept[2].body.clone()));
}

pub(crate) fn genesis_in_a_transaction_is_idempotent(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let genesis = record(0, super::GENESIS_MICROS, 0);
    let mut txn = store.begin().unwrap();
    assert!(txn.genesis("testnet", genesis.clone()).unwrap());
    let done = txn.commit().unwrap();
    assert_eq!(done.tip, Some(genesis.meta.clone()));
    assert_eq!(store.chain_info().unwrap().network, "testnet");
    // The same genesis again (a restart, another replica): nothing to do.
    let mut txn = store.begin().unwrap();
    assert!(!txn.genesis("testnet", genesis.clone()).unwrap());
    assert_eq!(txn.commit().unwrap().tip, Some(genesis.meta));
    assert_eq!(store.totals().unwrap().blocks, 1);
}

pub(crate) fn a_rollback_in_a_transaction_hands_back_what_it_removed(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let all = blocks(0, 6);
    store.append(&all).unwrap();
    let mut txn = store.begin().unwrap();
    txn.rollback_above(3).unwrap();
    // A rollback is a transaction of its own.
    assert!(txn.append(blocks(4, 5)).is_err());
    let done = txn.commit().unwrap();
    assert_eq!(done.removed, all[4..].to_vec());
    assert_eq!(done.tip, Some(all[3].meta.clone()));
    assert_eq!(store.tip().unwrap(), Some(all[3].meta.clone()));
}
