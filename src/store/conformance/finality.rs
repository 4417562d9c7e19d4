//! The finality floor: raised by appends, kept across a reopen, never lowered, and enforced by
//! the store itself on rollbacks; and the quarantine index behind it.

use super::{Engine, blocks, start, totals_of};
use crate::store::StoreError;

pub(crate) fn appends_raise_the_finality_floor_and_a_reopen_keeps_it(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, Some(10)) else {
        return;
    };
    {
        let store = fx.store();
        assert_eq!(store.finality_floor().unwrap(), 0);
        store.append(&blocks(0, 11)).unwrap();
        // Tip 10 with depth 10: nothing is deeper than 10 below it but genesis.
        assert_eq!(store.finality_floor().unwrap(), 0);
        store.append(&blocks(11, 31)).unwrap();
        assert_eq!(store.finality_floor().unwrap(), 19);
    }

    // Opened without a depth (as a copy tool would), the floor is still there.
    fx.reopen_with_depth(None);
    {
        let store = fx.store();
        assert_eq!(store.finality_floor().unwrap(), 19);
        store.append(&blocks(31, 40)).unwrap();
        assert_eq!(
            store.finality_floor().unwrap(),
            19,
            "no depth: appends leave it"
        );
    }

    // A depth given at open raises it to what the tip implies at once.
    fx.reopen_with_depth(Some(10));
    assert_eq!(fx.store().finality_floor().unwrap(), 28);
}

pub(crate) fn the_finality_floor_only_rises_and_never_passes_the_tip(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    {
        let store = fx.store();
        assert_eq!(store.raise_finality_floor(5).unwrap(), 0, "no tip yet");
        store.append(&blocks(0, 20)).unwrap();
        assert_eq!(store.raise_finality_floor(12).unwrap(), 12);
        assert_eq!(store.raise_finality_floor(5).unwrap(), 12, "never lowered");
        assert_eq!(store.finality_floor().unwrap(), 12);
        assert_eq!(
            store.raise_finality_floor(1000).unwrap(),
            19,
            "held at the tip"
        );
    }
    fx.reopen_with_depth(Some(2));
    let store = fx.store();
    assert_eq!(store.finality_floor().unwrap(), 19);
    // A rollback is refused, so the floor never sinks below a lower tip either.
    assert!(store.rollback_above(10).is_err());
    assert_eq!(store.finality_floor().unwrap(), 19);
}

pub(crate) fn a_rollback_below_the_finality_floor_is_refused_and_removes_nothing(
    engine: &dyn Engine,
) {
    let Some(mut fx) = start(engine, Some(10)) else {
        return;
    };
    let store = fx.store();
    let chain = blocks(0, 31);
    store.append(&chain).unwrap();
    assert_eq!(store.finality_floor().unwrap(), 19);

    // Ten blocks down to the floor is allowed...
    assert_eq!(store.rollback_above(20).unwrap(), chain[21..].to_vec());
    assert_eq!(
        store.finality_floor().unwrap(),
        19,
        "a rollback leaves the floor"
    );
    // ...and after it, even a short rollback that would remove the floor's block is not.
    store.append(&chain[21..25]).unwrap();
    let log_before = store.rollback_log().unwrap();
    match store.rollback_above(15) {
        Err(StoreError::BelowFinalityFloor { height, floor }) => {
            assert_eq!((height, floor), (15, 19));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(store.tip().unwrap().unwrap().height, 24);
    assert_eq!(store.totals().unwrap(), totals_of(&chain[..25]));
    for h in 16..25 {
        assert_eq!(store.body_at(h).unwrap().unwrap(), chain[h as usize].body);
    }
    assert_eq!(
        store.rollback_log().unwrap(),
        log_before,
        "a refusal is not logged"
    );

    // The refusal holds after a reopen, whoever reopens (no depth given).
    drop(store);
    fx.reopen_with_depth(None);
    let store = fx.store();
    assert!(matches!(
        store.rollback_above(18),
        Err(StoreError::BelowFinalityFloor {
            height: 18,
            floor: 19
        })
    ));
    // Exactly at the floor is allowed: the floor's block stays.
    assert_eq!(store.rollback_above(19).unwrap().len(), 5);
    assert_eq!(store.tip().unwrap().unwrap().height, 19);
}

pub(crate) fn the_quarantine_index_files_each_key_once_across_a_reopen(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    {
        let store = fx.store();
        assert!(store.record_quarantined("aa:01").unwrap());
        assert!(!store.record_quarantined("aa:01").unwrap());
        assert!(
            store.record_quarantined("aa:02").unwrap(),
            "same hash, other bytes"
        );
        // The index is apart from the chain.
        assert!(store.tip().unwrap().is_none());
    }
    fx.reopen();
    let store = fx.store();
    assert!(!store.record_quarantined("aa:01").unwrap());
    assert!(!store.record_quarantined("aa:02").unwrap());
    assert!(store.record_quarantined("bb:01").unwrap());
}
