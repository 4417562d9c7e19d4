//! A bounded in-process cache of block bodies by height, so the hot top of the chain is
//! served without a round trip to the database.
//!
//! A body at a height changes only when a rollback removes it; every rollback this process
//! makes (and, with several replicas, every one it hears of) drops the heights above the kept
//! tip, so the cache never serves a body the database no longer holds. Eviction is oldest
//! insertion first: the newest blocks, the ones clients ask for most, stay longest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// The cache; cheap to share.
pub struct BodyCache {
    limit: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Bumped by every rollback, so a read begun before one never caches what it removed.
    generation: u64,
    bytes: usize,
    by_height: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
}

impl BodyCache {
    /// A cache of at most `limit` bytes of bodies (0: nothing is cached).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The body at `height`, when cached.
    pub fn get(&self, height: u64) -> Option<Bytes> {
        self.lock().by_height.get(&height).cloned()
    }

    /// The current generation: take it before reading a body from the database, and give it
    /// to [`BodyCache::put_read`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps a body read from the database, unless a rollback happened since `generation`
    /// was taken (the body read may be one it removed).
    pub fn put_read(&self, generation: u64, height: u64, body: Bytes) {
        let mut e = self.lock();
        if e.generation == generation {
            self.keep(&mut e, height, body);
        }
    }

    /// Keeps `body` as the body at `height`, evicting the oldest entries past the limit. A body
    /// larger than a quarter of the cache is not kept: it would evict too much.
    pub fn put(&self, height: u64, body: Bytes) {
        let mut e = self.lock();
        self.keep(&mut e, height, body);
    }

    fn keep(&self, e: &mut Entries, height: u64, body: Bytes) {
        if body.len() > self.limit / 4 {
            return;
        }
        let size = body.len();
        match e.by_height.insert(height, body) {
            Some(old) => e.bytes = e.bytes - old.len() + size,
            None => {
                e.bytes += size;
                e.order.push_back(height);
            }
        }
        while e.bytes > self.limit {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            if let Some(gone) = e.by_height.remove(&oldest) {
                e.bytes -= gone.len();
            }
        }
    }

    /// Forgets every body above `height` (a rollback kept `height` as the tip).
    pub fn forget_above(&self, height: u64) {
        let mut e = self.lock();
        e.generation += 1;
        let above: Vec<u64> = e
            .by_height
            .keys()
            .copied()
            .filter(|h| *h > height)
            .collect();
        for h in above {
            if let Some(gone) = e.by_height.remove(&h) {
                e.bytes -= gone.len();
            }
        }
        let Entries {
            order, by_height, ..
        } = &mut *e;
        order.retain(|h| by_height.contains_key(h));
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_go_first_and_the_limit_holds() {
        let cache = BodyCache::new(100);
        for h in 0..10 {
            cache.put(h, Bytes::from(vec![b'x'; 20]));
        }
        assert!(cache.bytes() <= 100);
        assert!(cache.get(0).is_none());
        assert_eq!(cache.get(9).map(|b| b.len()), Some(20));
    }

    #[test]
    fn a_rollback_forgets_every_height_above_the_kept_tip() {
        let cache = BodyCache::new(1000);
        for h in 0..10 {
            cache.put(h, Bytes::from(vec![b'x'; 10]));
        }
        cache.forget_above(4);
        assert!(cache.get(5).is_none());
        assert!(cache.get(4).is_some());
        assert_eq!(cache.bytes(), 50);
        // Heights forgotten are not evicted twice later
        for h in 10..100 {
            cache.put(h, Bytes::from(vec![b'y'; 10]));
        }
        assert!(cache.bytes() <= 1000);
    }

    #[test]
    fn a_body_too_large_for_the_cache_is_not_kept() {
        let cache = BodyCache::new(100);
        cache.put(1, Bytes::from(vec![b'x'; 26]));
        assert!(cache.get(1).is_none());
    }
}
