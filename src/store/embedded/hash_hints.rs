//! Where to look first for a block by its hash: a table in memory from the leading 32 bits of
//! each stored block's hash to its height (8 bytes a slot, at most half the slots in use until
//! the table reaches its largest size, 4 MiB).
//!
//! Only a hint. A height it names is taken only once the body the log holds there is seen to
//! carry the hash asked for; a miss, a hint the body contradicts (a rollback replaced the block,
//! or two hashes share their leading bits) and a store without a body log all ask redb's hash
//! index, as every lookup did before. So nothing here needs to survive a crash or follow a
//! rollback: the table is filled from the hash index in the background at open and by each
//! commit after it.
//!
//! Why: a lookup in redb's B-tree takes, for each page it reads, a lock of redb's page cache
//! and a count on the page, memory that every thread serving reads writes to. With two threads
//! serving, a read by hash cost 1.9 µs more CPU than a read by height; a lookup here reads one
//! slot and writes nothing shared.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Slots of a new table; it doubles whenever it would be more than half full, up to
/// [`MAX_SLOTS`].
const FIRST_SLOTS: usize = 1 << 12;

/// The most slots a table grows to: 4 MiB, every block hinted up to about 260,000 of them
/// (the hosts are small). Past that a new hint whose neighbourhood is full takes the place of
/// an older one there: the newest blocks, the ones most asked for, stay hinted, and the others
/// are read through redb as before.
const MAX_SLOTS: usize = 1 << 19;

/// Slots looked at from a prefix's own, by lookups and by inserts.
const PROBES: usize = 16;

/// Heights from here on are not hinted (a slot keeps height + 1 in 32 bits).
const MAX_HEIGHT: u64 = u32::MAX as u64 - 1;

struct Table {
    /// `prefix << 32 | (height + 1)`; 0 is an empty slot.
    slots: Box<[AtomicU64]>,
    /// Slots in use; only the inserting thread (holding `HashHints::insert`) changes it.
    used: AtomicU64,
}

impl Table {
    fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            used: AtomicU64::new(0),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Puts `entry` in the first of its prefix's [`PROBES`] slots that is empty or hints the
    /// same prefix; when there is none, over the prefix's own slot.
    fn put(&self, entry: u64) {
        let prefix = entry >> 32;
        let home = prefix as usize & self.mask();
        for i in 0..PROBES {
            let slot = &self.slots[(home + i) & self.mask()];
            let old = slot.load(Ordering::Relaxed);
            if old == 0 || old >> 32 == prefix {
                slot.store(entry, Ordering::Release);
                if old == 0 {
                    self.used.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        self.slots[home].store(entry, Ordering::Release);
    }

    fn get(&self, prefix: u32) -> Option<u64> {
        let prefix = u64::from(prefix);
        let home = prefix as usize & self.mask();
        for i in 0..PROBES {
            let entry = self.slots[(home + i) & self.mask()].load(Ordering::Acquire);
            if entry == 0 {
                return None;
            }
            if entry >> 32 == prefix {
                return Some((entry & 0xffff_ffff) - 1);
            }
        }
        None
    }
}

/// The hints of one store.
pub(super) struct HashHints {
    /// Tells the tables of this store from another's in a thread's cache.
    id: u64,
    table: RwLock<Arc<Table>>,
    /// Bumped when `table` is replaced by a larger one.
    generation: AtomicU64,
    /// Held by whoever inserts (the background fill and commits).
    insert: Mutex<()>,
    /// Tells the background fill to stop (the store is closing).
    pub(super) stop: AtomicBool,
}

thread_local! {
    /// The table this thread last read, by store id and generation: reading it again takes
    /// no lock and no count.
    static CACHED: RefCell<Option<(u64, u64, Arc<Table>)>> = const { RefCell::new(None) };
}

/// The leading 32 bits of a hash written as lowercase hex.
pub(super) fn prefix(hash: &str) -> Option<u32> {
    u32::from_str_radix(hash.get(..8)?, 16).ok()
}

impl HashHints {
    pub(super) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            table: RwLock::new(Arc::new(Table::new(FIRST_SLOTS))),
            generation: AtomicU64::new(0),
            insert: Mutex::new(()),
            stop: AtomicBool::new(false),
        }
    }

    /// The height hinted for `hash`, if any: to be checked against the body stored there.
    pub(super) fn get(&self, hash: &str) -> Option<u64> {
        let prefix = prefix(hash)?;
        let generation = self.generation.load(Ordering::Acquire);
        CACHED.with(|cached| {
            let mut cached = cached.try_borrow_mut().ok()?;
            match &*cached {
                Some((id, g, table)) if *id == self.id && *g == generation => table.get(prefix),
                _ => {
                    let table =
                        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
                    let found = table.get(prefix);
                    *cached = Some((self.id, generation, table));
                    found
                }
            }
        })
    }

    /// Hints `(hash, height)` for each pair (a later pair of the same prefix wins).
    pub(super) fn insert<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, u64)>) {
        let _inserting = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
        for (hash, height) in pairs {
            let Some(prefix) = prefix(hash).filter(|_| height <= MAX_HEIGHT) else {
                continue;
            };
            if (table.used.load(Ordering::Relaxed) as usize + 1) * 2 > table.slots.len()
                && table.slots.len() < MAX_SLOTS
            {
                table = self.grow(&table);
            }
            table.put(u64::from(prefix) << 32 | (height + 1));
        }
    }

    /// A table twice the size holding every hint of `old`, put in its place.
    fn grow(&self, old: &Table) -> Arc<Table> {
        let bigger = Table::new(old.slots.len() * 2);
        for slot in old.slots.iter() {
            let entry = slot.load(Ordering::Relaxed);
            if entry != 0 {
                bigger.put(entry);
            }
        }
        let bigger = Arc::new(bigger);
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&bigger);
        self.generation.fetch_add(1, Ordering::Release);
        bigger
    }

    /// Slots of the current table (memory is 8 bytes each).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.table.read().unwrap().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> String {
        blake3::hash(&n.to_le_bytes()).to_hex().to_string()
    }

    #[test]
    fn every_inserted_hash_is_hinted_at_its_height_across_growth() {
        let hints = HashHints::new();
        let hashes: Vec<String> = (0..20_000).map(hash).collect();
        // In batches, reading between them, so a thread's cached table goes stale.
        for (i, batch) in hashes.chunks(3_000).enumerate() {
            hints.insert(
                batch
                    .iter()
                    .enumerate()
                    .map(|(j, h)| (h.as_str(), (i * 3_000 + j) as u64)),
            );
            assert_eq!(hints.get(&hashes[i * 3_000]), Some((i * 3_000) as u64));
        }
        let mut wrong = 0;
        for (h, hash) in hashes.iter().enumerate() {
            // Two hashes may share their leading 32 bits (the later one is hinted), and a hint
            // gives way to a newer one in a crowded neighbourhood: those read through redb.
            match hints.get(hash) {
                Some(at) if at == h as u64 => {}
                Some(other) => assert!(hash[..8] == hashes[other as usize][..8], "{h}"),
                None => wrong += 1,
            }
        }
        assert!(wrong <= hashes.len() / 200, "{wrong} hashes not hinted");
        assert!(
            hints.slots() >= 40_000 && hints.slots() <= 65_536,
            "{}",
            hints.slots()
        );
        assert_eq!(hints.get(&hash(99_999_999)), None);
        assert_eq!(hints.get("not hex at all"), None);
    }

    #[test]
    fn the_table_stops_growing_at_its_largest_size_and_keeps_the_newest_hints() {
        let hints = HashHints::new();
        let n = MAX_SLOTS as u64; // twice what the largest table holds half full
        let hashes: Vec<String> = (0..n).map(hash).collect();
        for chunk in hashes.chunks(65_536).enumerate() {
            let (i, batch) = chunk;
            hints.insert(
                batch
                    .iter()
                    .enumerate()
                    .map(|(j, h)| (h.as_str(), (i * 65_536 + j) as u64)),
            );
        }
        assert_eq!(hints.slots(), MAX_SLOTS);
        let newest = &hashes[hashes.len() - 1_000..];
        let hinted = newest.iter().filter(|h| hints.get(h).is_some()).count();
        assert!(hinted >= 990, "{hinted} of the newest 1,000 hinted");
    }

    #[test]
    fn a_full_neighbourhood_gives_its_home_slot_to_the_newest_hint() {
        let table = Table::new(64);
        // Twenty prefixes with the same home slot: the window holds sixteen.
        for i in 0..20u64 {
            table.put(((i << 6) << 32) | (i + 1));
        }
        assert_eq!(table.get(19 << 6), Some(19), "the newest is hinted");
        assert_eq!(table.get(0), None, "the oldest home occupant gave way");
        for i in 1..16u64 {
            assert_eq!(table.get((i << 6) as u32), Some(i));
        }
        assert_eq!(table.get(17 << 6), None);
    }

    #[test]
    fn a_later_hint_replaces_one_of_the_same_prefix_and_stores_do_not_mix() {
        let (a, b) = (HashHints::new(), HashHints::new());
        let h = hash(1);
        a.insert([(h.as_str(), 5)]);
        assert_eq!(a.get(&h), Some(5));
        assert_eq!(b.get(&h), None, "another store's table is not this one's");
        a.insert([(h.as_str(), 9)]);
        assert_eq!(a.get(&h), Some(9));
        a.insert([(h.as_str(), MAX_HEIGHT + 1)]);
        assert_eq!(a.get(&h), Some(9), "heights past 32 bits are not hinted");
    }
}
