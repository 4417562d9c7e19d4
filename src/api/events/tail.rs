//! The newest blocks' event frames, shared by every stream of one kind (full or `?thin=1`).
//!
//! Without it each live stream read its own page from the store after every commit, and
//! encoded its own copy of each event: a thousand subscribers cost a thousand store reads, a
//! thousand blocking-pool hand-offs and a thousand encodings per block. With it the first
//! stream woken by a change reads the new blocks once, under the tail's lock, and every other
//! stream takes the same frames (reference-counted bytes) from memory.
//!
//! The store stays the log: the tail only answers a stream whose last block is one of its
//! entries, and anything else (a stream behind the tail, a fork, a replay by height) is read
//! from the store as before. The tail is refreshed whenever the ledger's change counter has
//! moved past the value it was read at, reading that value *before* the store, so a change that
//! lands during a refresh leaves the tail marked stale rather than wrongly current.

use super::{Cursor, Event, Page, read_page};
use crate::store::{BlockStore, Position, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;

/// Blocks kept: enough for any burst a live stream sees between two wake-ups.
const TAIL_BLOCKS: u64 = 256;

/// One kind's tail.
#[derive(Default)]
pub(super) struct Tail {
    inner: tokio::sync::Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The change counter the entries were read at (`None`: never read, or to be re-read).
    read_at: Option<u64>,
    /// A hash-linked run of the newest blocks, ascending, ending at the tip as of `read_at`.
    blocks: VecDeque<Event>,
}

/// What a refresh read from the store.
enum Refill {
    /// Blocks that link on to the tail's newest one.
    Extend(Vec<Event>),
    /// The tail's newest block is gone or too far behind: these replace it all.
    Replace(Vec<Event>),
    /// The chain moved under the read (a rollback): the tail is emptied, and the next stream
    /// to look reads it afresh.
    Moved,
}

impl Tail {
    /// The blocks after `cursor`'s last block (empty: it is at the tip), or `None` when the tail
    /// does not hold that block and the stream must read the store itself. `now` is the
    /// ledger's change counter as the stream sees it.
    pub(super) async fn after(
        &self,
        store: &Arc<dyn BlockStore>,
        cursor: &Cursor,
        now: u64,
        thin: bool,
        budget: usize,
    ) -> Result<Option<Page>, StoreError> {
        let Some(last) = &cursor.prev else {
            return Ok(None);
        };
        let mut tail = self.inner.lock().await;
        // A counter older than the one the tail was read at is a stream that has not yet seen
        // the latest change: the tail is fresher than it needs, not stale.
        if tail.read_at.is_none_or(|at| now > at) {
            tail.read_at = Some(now);
            let top = tail.blocks.back().map(|e| e.at.clone());
            let store = store.clone();
            let refill = tokio::task::spawn_blocking(move || refill(&*store, top, thin, budget))
                .await
                .map_err(|_| StoreError::Read("a store read panicked".into()))?;
            match refill {
                Ok(Refill::Extend(new)) => tail.blocks.extend(new),
                Ok(Refill::Replace(new)) => tail.blocks = new.into(),
                Ok(Refill::Moved) => {
                    tail.read_at = None;
                    tail.blocks.clear();
                }
                Err(e) => {
                    tail.read_at = None;
                    tail.blocks.clear();
                    return Err(e);
                }
            }
            while tail.blocks.len() as u64 > TAIL_BLOCKS {
                tail.blocks.pop_front();
            }
        }
        let Some(i) = tail.blocks.iter().rposition(|e| e.at == *last) else {
            return Ok(None);
        };
        let events: Vec<Event> = tail.blocks.iter().skip(i + 1).cloned().collect();
        let after = Cursor {
            next: events.last().map_or(last.height, |e| e.at.height) + 1,
            prev: Some(events.last().map_or_else(|| last.clone(), |e| e.at.clone())),
        };
        Ok(Some(Page::Blocks(events, after)))
    }
}

/// Reads the blocks after `top` up to the tip, or the newest [`TAIL_BLOCKS`] when `top` is no
/// longer on the chain (or far behind it).
fn refill(
    store: &dyn BlockStore,
    top: Option<Position>,
    thin: bool,
    budget: usize,
) -> Result<Refill, StoreError> {
    let Some(tip) = store.tip()? else {
        return Ok(Refill::Replace(Vec::new()));
    };
    let linked = match top {
        Some(t)
            if t.height <= tip.height
                && tip.height - t.height <= TAIL_BLOCKS
                && store.meta_at(t.height)?.is_some_and(|m| m.hash == t.hash) =>
        {
            Some(t)
        }
        _ => None,
    };
    let mut cursor = match &linked {
        Some(t) => Cursor {
            next: t.height + 1,
            prev: Some(t.clone()),
        },
        None => Cursor {
            next: (tip.height + 1).saturating_sub(TAIL_BLOCKS),
            prev: None,
        },
    };
    let mut read = Vec::new();
    while cursor.next <= tip.height {
        match read_page(store, &cursor, thin, budget)? {
            Page::Blocks(events, after) if !events.is_empty() => {
                read.extend(events);
                cursor = after;
            }
            Page::Blocks(..) | Page::Forked(_) => return Ok(Refill::Moved),
        }
    }
    Ok(match linked {
        Some(_) => Refill::Extend(read),
        None => Refill::Replace(read),
    })
}
