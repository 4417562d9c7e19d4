//! Paged listings: by height with offsets in both orders, by time (sorted by timestamp, ties by
//! height) for narrow and wide windows, and counts of blocks since a time.

use super::{Engine, GENESIS_MICROS, blocks, heights, record, start};
use crate::store::{BlockRecord, Order};

pub(crate) fn metas_page_by_height_in_both_orders_with_offset(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    store.append(&blocks(0, 20)).unwrap();
    let page = |from, to, order, offset, limit| {
        heights(&store.metas(from, to, order, offset, limit).unwrap())
    };

    assert_eq!(page(5, 14, Order::Asc, 2, 3), vec![7, 8, 9]);
    assert_eq!(page(5, 14, Order::Desc, 2, 3), vec![12, 11, 10]);
    assert_eq!(page(5, 14, Order::Asc, 8, 5), vec![13, 14]);
    assert_eq!(page(5, 14, Order::Desc, 8, 5), vec![6, 5]);
    assert_eq!(page(0, u64::MAX, Order::Desc, 0, 3), vec![19, 18, 17]);
    assert_eq!(page(18, u64::MAX, Order::Asc, 0, 10), vec![18, 19]);
    assert_eq!(page(7, 7, Order::Desc, 0, 10), vec![7]);
    assert!(page(5, 14, Order::Asc, 10, 5).is_empty());
    assert!(page(5, 14, Order::Desc, u64::MAX, 5).is_empty());
    assert!(page(5, 14, Order::Asc, 0, 0).is_empty());
    assert!(page(9, 3, Order::Asc, 0, 5).is_empty());
    assert!(page(20, 30, Order::Asc, 0, 5).is_empty());
    let all = store.metas(0, 19, Order::Asc, 0, 100).unwrap();
    assert_eq!(all[3], store.meta_at(3).unwrap().unwrap());
}

/// Timestamps out of height order, with ties, so that time order and height order differ.
fn shuffled_time_chain(n: u64) -> Vec<BlockRecord> {
    (0..n)
        .map(|h| record(h, GENESIS_MICROS + ((h * 7919) % 101) as i64 * 1_000, 0))
        .collect()
}

/// The heights of `chain` in `from..=to`, sorted by `(timestamp, height)` in `order`.
fn expected_by_time(chain: &[BlockRecord], from: u64, to: u64, order: Order) -> Vec<u64> {
    let mut keys: Vec<(i64, u64)> = chain
        .iter()
        .filter(|r| (from..=to).contains(&r.meta.height))
        .map(|r| (r.meta.timestamp_micros, r.meta.height))
        .collect();
    keys.sort_unstable();
    if order == Order::Desc {
        keys.reverse();
    }
    keys.into_iter().map(|(_, h)| h).collect()
}

pub(crate) fn metas_by_time_sort_by_timestamp_then_height_for_narrow_and_wide_windows(
    engine: &dyn Engine,
) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let chain = shuffled_time_chain(5_000);
    for batch in chain.chunks(1_000) {
        store.append(batch).unwrap();
    }
    // An engine may sort narrow windows in memory and walk a time index for wide ones: both
    // must agree.
    for (from, to) in [
        (100, 300),
        (0, 4_999),
        (10, 4_990),
        (4_990, u64::MAX),
        (0, 0),
    ] {
        for order in [Order::Asc, Order::Desc] {
            let all = expected_by_time(&chain, from, to, order);
            for (offset, limit) in [(0, 20), (7, 13), (all.len() as u64 - 1, 5), (0, 10_000)] {
                let got = store.metas_by_time(from, to, order, offset, limit).unwrap();
                let want: Vec<u64> = all
                    .iter()
                    .copied()
                    .skip(offset as usize)
                    .take(limit)
                    .collect();
                assert_eq!(
                    heights(&got),
                    want,
                    "window {from}..={to} {order:?} {offset}+{limit}"
                );
            }
        }
    }
    let first = store.metas_by_time(0, u64::MAX, Order::Asc, 0, 1).unwrap();
    assert_eq!(first[0], store.meta_at(first[0].height).unwrap().unwrap());
    assert!(
        store
            .metas_by_time(0, u64::MAX, Order::Asc, 5_000, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .metas_by_time(0, u64::MAX, Order::Desc, 0, 0)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .metas_by_time(6_000, u64::MAX, Order::Asc, 0, 10)
            .unwrap()
            .is_empty()
    );
}

pub(crate) fn metas_by_time_break_equal_timestamps_by_height(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    // Heights 0..10 all at one instant, 10..20 at an earlier one: by time, the second group
    // comes first, each group in height order.
    let chain: Vec<BlockRecord> = (0..20)
        .map(|h| {
            let micros = if h < 10 {
                GENESIS_MICROS
            } else {
                GENESIS_MICROS - 1
            };
            record(h, micros, 0)
        })
        .collect();
    store.append(&chain).unwrap();
    let page = |from, to, order, offset, limit| {
        heights(&store.metas_by_time(from, to, order, offset, limit).unwrap())
    };
    let asc: Vec<u64> = (10..20).chain(0..10).collect();
    let desc: Vec<u64> = asc.iter().rev().copied().collect();
    assert_eq!(page(0, u64::MAX, Order::Asc, 0, 100), asc);
    assert_eq!(page(0, u64::MAX, Order::Desc, 0, 100), desc);
    assert_eq!(page(0, u64::MAX, Order::Asc, 8, 4), vec![18, 19, 0, 1]);
    assert_eq!(page(0, u64::MAX, Order::Desc, 8, 4), vec![1, 0, 19, 18]);
    assert_eq!(
        page(3, 12, Order::Asc, 0, 100),
        vec![10, 11, 12, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(page(3, 12, Order::Desc, 1, 3), vec![8, 7, 6]);
}

pub(crate) fn blocks_since_counts_by_time_up_to_the_cap(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    let chain = shuffled_time_chain(300);
    store.append(&chain).unwrap();
    for since in [
        i64::MIN,
        GENESIS_MICROS,
        GENESIS_MICROS + 1,
        GENESIS_MICROS + 50_000,
        GENESIS_MICROS + 100_000,
        GENESIS_MICROS + 100_001,
    ] {
        let want = chain
            .iter()
            .filter(|r| r.meta.timestamp_micros >= since)
            .count() as u64;
        assert_eq!(
            store.blocks_since(since, u64::MAX).unwrap(),
            want,
            "since {since}"
        );
        for cap in [1, want.saturating_sub(1).max(1), want.max(1), want + 1] {
            assert_eq!(
                store.blocks_since(since, cap).unwrap(),
                want.min(cap),
                "since {since}, cap {cap}"
            );
        }
    }
    assert_eq!(store.blocks_since(i64::MAX, 10).unwrap(), 0);
    store.rollback_above(149).unwrap();
    let kept = chain[..150]
        .iter()
        .filter(|r| r.meta.timestamp_micros >= GENESIS_MICROS + 50_000)
        .count() as u64;
    assert_eq!(
        store
            .blocks_since(GENESIS_MICROS + 50_000, u64::MAX)
            .unwrap(),
        kept,
        "a rollback leaves the time index"
    );
}
