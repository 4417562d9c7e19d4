//! Paged listings: by height with offsets in both orders, and by time through both the
//! in-memory sort of narrow windows and the time-index walk of wide ones.

use tempfile::TempDir;

use super::{GENESIS_MICROS, blocks, heights, open, record};
use crate::store::{BlockRecord, BlockStore, Order};

#[test]
fn metas_page_by_height_in_both_orders_with_offset() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
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

#[test]
fn metas_by_time_sort_by_timestamp_then_height_for_narrow_and_wide_windows() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = shuffled_time_chain(5_000);
    for batch in chain.chunks(1_000) {
        store.append(batch).unwrap();
    }
    // Narrow windows are sorted in memory, wide ones walk the time index: both must agree
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
}
