//! Paged listings of block summaries, by height and by time.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::failure::Outcome;
use super::tables;
use super::{BlockMeta, Order, StoreError, codec};

/// Height windows up to this many blocks are sorted by time in memory (reading only each row's
/// timestamp): cheaper than walking the time index of a long chain to pick out a narrow window.
const IN_MEMORY_TIME_SORT_SPAN: u64 = 4096;

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
    let metas = txn.open_table(tables::METAS)?;
    let Some((from, to)) = clip(&metas, from, to)? else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    if to - from < IN_MEMORY_TIME_SORT_SPAN {
        let mut keys = Vec::new();
        for row in metas.range(from..=to)? {
            let (k, v) = row?;
            keys.push((codec::meta_timestamp(v.value())?, k.value()));
        }
        keys.sort_unstable();
        if order == Order::Desc {
            keys.reverse();
        }
        let page = keys.into_iter().skip(skip).take(limit).map(|(_, h)| h);
        return metas_at(&metas, page);
    }
    // A wide window: walk the time index in order, keeping the heights inside the window
    let times = txn.open_table(tables::TIME_INDEX)?;
    let entries = times.iter()?;
    let keys: Box<dyn Iterator<Item = _>> = match order {
        Order::Asc => Box::new(entries),
        Order::Desc => Box::new(entries.rev()),
    };
    let mut heights = Vec::with_capacity(limit.min(1024));
    let mut skipped = 0usize;
    for entry in keys {
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
    metas_at(&metas, heights.into_iter())
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
