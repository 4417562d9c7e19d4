//! Paged listings of block summaries, by height and by time.

use std::collections::BinaryHeap;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::failure::Outcome;
use super::tables;
use super::{BlockMeta, Order, StoreError, codec};

/// Most `(timestamp, height)` keys a time-sorted page of a narrow window keeps in memory
/// (16 bytes each, so 4 MiB). A deeper page walks the time index instead: slower on a long
/// chain, but in constant memory.
const MAX_SELECTED: u64 = 1 << 18;

/// The window `from..=to` clipped to the stored heights, or `None` when it holds no block.
fn clip(
    metas: &ReadOnlyTable<u64, &'static [u8]>,
    from: u64,
    to: u64,
) -> Outcome<Option<(u64, u64)>> {
    let Some((tip, _)) = metas.last()? else {
        return Ok(None);
    };
    let to = to.min(tip.value());
    Ok((from <= to).then_some((from, to)))
}

/// Summaries of `from..=to` by height. Heights are stored as `0..=tip` without gaps, so the
/// page's bounds are computed rather than skipped to: O(log n + limit) at any offset.
pub(super) fn by_height(
    txn: &ReadTransaction,
    from: u64,
    to: u64,
    order: Order,
    offset: u64,
    limit: usize,
) -> Outcome<Vec<BlockMeta>> {
    let metas = txn.open_table(tables::METAS)?;
    let Some((from, to)) = clip(&metas, from, to)? else {
        return Ok(Vec::new());
    };
    let span = to - from + 1;
    if limit == 0 || offset >= span {
        return Ok(Vec::new());
    }
    let count = (span - offset).min(u64::try_from(limit).unwrap_or(u64::MAX));
    let (lo, hi) = match order {
        Order::Asc => (from + offset, from + offset + count - 1),
        Order::Desc => (to - offset - (count - 1), to - offset),
    };
    let rows = metas.range(lo..=hi)?;
    let rows: Box<dyn Iterator<Item = _>> = match order {
        Order::Asc => Box::new(rows),
        Order::Desc => Box::new(rows.rev()),
    };
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for row in rows {
        let (k, v) = row?;
        out.push(codec::decode_meta(k.value(), v.value())?);
    }
    Ok(out)
}

/// Summaries of `from..=to` sorted by `(timestamp_micros, height)`.
pub(super) fn by_time(
    txn: &ReadTransaction,
    from: u64,
    to: u64,
    order: Order,
    offset: u64,
    limit: usize,
) -> Outcome<Vec<BlockMeta>> {
    by_time_counted(txn, from, to, order, offset, limit, &mut 0)
}

/// [`by_time`], adding to `visited` every row it reads (window rows, time index entries, the
/// page's metas), so tests can hold its cost to the window rather than the chain.
///
/// The cost is O(window) either way: a window under half the chain is read by height (its
/// rows are adjacent) and sorted in memory, keeping only the page and what precedes it from
/// the nearer end; a wider one walks the time index, at most the whole chain, which is then
/// under twice the window.
pub(super) fn by_time_counted(
    txn: &ReadTransaction,
    from: u64,
    to: u64,
    order: Order,
    offset: u64,
    limit: usize,
    visited: &mut u64,
) -> Outcome<Vec<BlockMeta>> {
    let metas = txn.open_table(tables::METAS)?;
    let Some((from, to)) = clip(&metas, from, to)? else {
        return Ok(Vec::new());
    };
    let span = to - from + 1;
    if limit == 0 || offset >= span {
        return Ok(Vec::new());
    }
    let chain = match metas.last()? {
        Some((tip, _)) => tip.value() + 1,
        None => return Ok(Vec::new()),
    };
    let page_end = offset
        .saturating_add(u64::try_from(limit).unwrap_or(u64::MAX))
        .min(span);
    // Keys kept when selecting from the nearer end: the page and everything before it
    let kept = page_end.min(span - offset);
    let heights = if span.saturating_mul(2) < chain && kept <= MAX_SELECTED {
        select_in_window(&metas, from, to, order, offset, page_end, visited)?
    } else {
        walk_time_index(txn, from, to, order, offset, limit, visited)?
    };
    *visited += heights.len() as u64;
    metas_at(&metas, heights.into_iter())
}

/// Heights at sorted positions `offset..page_end` of the window, read by height.
fn select_in_window(
    metas: &ReadOnlyTable<u64, &'static [u8]>,
    from: u64,
    to: u64,
    order: Order,
    offset: u64,
    page_end: u64,
    visited: &mut u64,
) -> Outcome<Vec<u64>> {
    let span = to - from + 1;
    // From the nearer end: the first `page_end` in `order`, or the last `span - offset` (the
    // first in the opposite order), whichever is fewer
    let from_start = page_end <= span - offset;
    let ascending = (order == Order::Asc) == from_start;
    let (count, skip) = if from_start {
        (page_end, offset)
    } else {
        (span - offset, span - page_end)
    };
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    // A max-heap of the `count` first keys seen so far, in the direction read
    let mut heap = BinaryHeap::with_capacity(count.saturating_add(1));
    for row in metas.range(from..=to)? {
        let (k, v) = row?;
        *visited += 1;
        let key = sort_key(codec::meta_timestamp(v.value())?, k.value());
        heap.push(if ascending { key } else { !key });
        if heap.len() > count {
            heap.pop();
        }
    }
    let mut page: Vec<u64> = heap
        .into_sorted_vec()
        .into_iter()
        .skip(skip)
        .map(|key| {
            let key = if ascending { key } else { !key };
            // The low half is the height (truncation intended)
            key as u64
        })
        .collect();
    if !from_start {
        page.reverse();
    }
    Ok(page)
}

/// `(timestamp, height)` as one integer of the same order: the timestamp with its sign bit
/// flipped (so negative times sort first) above the height.
fn sort_key(micros: i64, height: u64) -> u128 {
    let time = (micros as u64) ^ (1 << 63);
    (u128::from(time) << 64) | u128::from(height)
}

/// Heights at sorted positions `offset..offset + limit` of the window, from the time index.
fn walk_time_index(
    txn: &ReadTransaction,
    from: u64,
    to: u64,
    order: Order,
    offset: u64,
    limit: usize,
    visited: &mut u64,
) -> Outcome<Vec<u64>> {
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let times = txn.open_table(tables::TIME_INDEX)?;
    let entries = times.iter()?;
    let keys: Box<dyn Iterator<Item = _>> = match order {
        Order::Asc => Box::new(entries),
        Order::Desc => Box::new(entries.rev()),
    };
    let mut heights = Vec::with_capacity(limit.min(1024));
    let mut skipped = 0usize;
    for entry in keys {
        *visited += 1;
        let (_, height) = entry?.0.value();
        if height < from || height > to {
            continue;
        }
        if skipped < skip {
            skipped += 1;
            continue;
        }
        heights.push(height);
        if heights.len() == limit {
            break;
        }
    }
    Ok(heights)
}

/// The metas at `heights`, each of which an index says is stored.
fn metas_at(
    metas: &ReadOnlyTable<u64, &'static [u8]>,
    heights: impl Iterator<Item = u64>,
) -> Outcome<Vec<BlockMeta>> {
    let mut out = Vec::with_capacity(heights.size_hint().0);
    for height in heights {
        match tables::read_meta(metas, height)? {
            Some(meta) => out.push(meta),
            None => {
                let why = format!("an index lists height {height}, which is not stored");
                return Err(StoreError::Corrupt(why).into());
            }
        }
    }
    Ok(out)
}

/// Entries of the time index at or after `since_micros`, at most `cap`.
pub(super) fn count_since(txn: &ReadTransaction, since_micros: i64, cap: u64) -> Outcome<u64> {
    let times = txn.open_table(tables::TIME_INDEX)?;
    let mut n = 0u64;
    for entry in times.range((since_micros, 0u64)..)? {
        entry?;
        n += 1;
        if n >= cap {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::super::database::{connect, initialise, write_in};
    use super::super::{BlockMeta, BlockRecord};
    use super::*;

    fn must<T>(outcome: Outcome<T>) -> T {
        match outcome {
            Ok(v) => v,
            Err(_) => panic!("store operation failed"),
        }
    }

    /// Blocks `0..n` whose times run backwards every third block, so time order is not
    /// height order.
    fn chain(n: u64) -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = connect(&dir.path().join("blocks.redb"), 1 << 20, true).unwrap();
        must(initialise(&db));
        must(write_in(&db, |t| {
            for h in 0..n {
                let micros = (h as i64) * 10_000_000 - if h % 3 == 0 { 15_000_000 } else { 0 };
                let record = BlockRecord {
                    meta: BlockMeta {
                        height: h,
                        hash: format!("{h:064x}"),
                        previous_hash: format!("{:064x}", h.saturating_sub(1)),
                        merkle_root: "ab".repeat(32),
                        timestamp: format!("t{micros}"),
                        timestamp_micros: micros,
                        producer: "p".into(),
                        transaction_count: 0,
                        block_size_bytes: 2,
                    },
                    tx_ids: Vec::new(),
                    body: b"{}".to_vec(),
                };
                t.insert_block(&record)?;
            }
            Ok(())
        }));
        (dir, db)
    }

    /// The window's heights sorted by (time, height): what every page must agree with.
    fn expected(txn: &ReadTransaction, from: u64, to: u64, order: Order) -> Vec<u64> {
        let metas = txn.open_table(tables::METAS).unwrap();
        let mut keys: Vec<(i64, u64)> = (from..=to)
            .map(|h| {
                let m = must(tables::read_meta(&metas, h)).unwrap();
                (m.timestamp_micros, h)
            })
            .collect();
        keys.sort_unstable();
        if order == Order::Desc {
            keys.reverse();
        }
        keys.into_iter().map(|(_, h)| h).collect()
    }

    #[test]
    fn a_time_sorted_page_of_a_height_window_reads_the_window_not_the_chain() {
        let (_dir, db) = chain(12_000);
        let txn = db.begin_read().unwrap();
        // A 5,000-block window at the end of a 12,000-block chain, ascending: walking the
        // time index from the start would pass 7,000 entries outside it first.
        let (from, to) = (7_000, 11_999);
        for order in [Order::Asc, Order::Desc] {
            for offset in [0, 20, 2_490, 4_980] {
                let mut visited = 0;
                let page = must(by_time_counted(
                    &txn,
                    from,
                    to,
                    order,
                    offset,
                    20,
                    &mut visited,
                ));
                let heights: Vec<u64> = page.iter().map(|m| m.height).collect();
                let all = expected(&txn, from, to, order);
                assert_eq!(heights, all[offset as usize..offset as usize + 20]);
                assert!(
                    visited <= 5_000 + 20,
                    "{order:?} offset {offset}: visited {visited} rows for a 5,000-block window"
                );
            }
        }
    }

    #[test]
    fn a_whole_chain_page_walks_the_time_index_only_to_the_page() {
        let (_dir, db) = chain(3_000);
        let txn = db.begin_read().unwrap();
        let mut visited = 0;
        let page = must(by_time_counted(
            &txn,
            0,
            u64::MAX,
            Order::Desc,
            100,
            20,
            &mut visited,
        ));
        let heights: Vec<u64> = page.iter().map(|m| m.height).collect();
        assert_eq!(heights, expected(&txn, 0, 2_999, Order::Desc)[100..120]);
        assert_eq!(visited, 120 + 20);
        // Small windows and the page past the end
        for (from, to, offset) in [(10, 12, 0), (10, 12, 2), (0, 0, 0), (5, 2_999, 2_994)] {
            let page = must(by_time(&txn, from, to, Order::Asc, offset, 20));
            let heights: Vec<u64> = page.iter().map(|m| m.height).collect();
            let all = expected(&txn, from, to, Order::Asc);
            assert_eq!(
                heights,
                all[(offset as usize).min(all.len())..]
                    .iter()
                    .take(20)
                    .copied()
                    .collect::<Vec<_>>()
            );
        }
        assert!(must(by_time(&txn, 0, 10, Order::Asc, 11, 5)).is_empty());
    }
}
