//! Where to look first for a block by its hash: a table in memory from the leading 32 bits of
//! each stored block's hash to its height (4 MiB, 8 bytes a slot).
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
//! serving, a read by hash cost 1.9 µs more CPU than a read by height; a lookup here reads a
//! slot or two and writes nothing shared.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Slots of the table: 4 MiB, allocated once at open and never grown (with a table grown by
/// doubling, a 10-minute soak's anonymous memory crept by 5 MB more than with this one). Every
/// block is hinted up to about 260,000 of them
/// (half the slots); past that a new hint whose neighbourhood is full takes the place of an
/// older one there, so the newest blocks, the ones most asked for, stay hinted and the others
/// are read through redb as before.
const SLOTS: usize = 1 << 19;

/// Slots looked at from a prefix's own, by lookups and by inserts.
const PROBES: usize = 16;

/// Heights from here on are not hinted (a slot keeps height + 1 in 32 bits).
const MAX_HEIGHT: u64 = u32::MAX as u64 - 1;

/// The hints of one store.
pub(super) struct HashHints {
    /// `prefix << 32 | (height + 1)`; 0 is an empty slot.
    slots: Box<[AtomicU64]>,
    /// Held by whoever inserts (the background fill and commits).
    insert: Mutex<()>,
    /// Tells the background fill to stop (the store is closing).
    pub(super) stop: AtomicBool,
}

/// The leading 32 bits of a hash written as lowercase hex.
pub(super) fn prefix(hash: &str) -> Option<u32> {
    u32::from_str_radix(hash.get(..8)?, 16).ok()
}

impl HashHints {
    pub(super) fn new() -> Self {
        Self::with_slots(SLOTS)
    }

    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            insert: Mutex::new(()),
            stop: AtomicBool::new(false),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The height hinted for `hash`, if any: to be checked against the body stored there.
    pub(super) fn get(&self, hash: &str) -> Option<u64> {
        let prefix = u64::from(prefix(hash)?);
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

    /// Hints `(hash, height)` for each pair (a later pair of the same prefix wins).
    pub(super) fn insert<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, u64)>) {
        let _inserting = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        for (hash, height) in pairs {
            if let Some(prefix) = prefix(hash).filter(|_| height <= MAX_HEIGHT) {
                self.put(u64::from(prefix) << 32 | (height + 1));
            }
        }
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
                return;
            }
        }
        self.slots[home].store(entry, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> String {
        blake3::hash(&n.to_le_bytes()).to_hex().to_string()
    }

    #[test]
    fn every_inserted_hash_is_hinted_at_its_height() {
        let hints = HashHints::new();
        let hashes: Vec<String> = (0..20_000).map(hash).collect();
        for (i, batch) in hashes.chunks(3_000).enumerate() {
            hints.insert(
                batch
                    .iter()
                    .enumerate()
                    .map(|(j, h)| (h.as_str(), (i * 3_000 + j) as u64)),
            );
        }
        for (h, hash) in hashes.iter().enumerate() {
            match hints.get(hash) {
                Some(at) if at == h as u64 => {}
                // Two hashes may share their leading 32 bits: the later one is hinted.
                Some(other) => assert!(hash[..8] == hashes[other as usize][..8], "{h}"),
                None => panic!("{h} not hinted"),
            }
        }
        assert_eq!(hints.get(&hash(99_999_999)), None);
        assert_eq!(hints.get("not hex at all"), None);
    }

    #[test]
    fn an_overfull_table_keeps_the_newest_hints() {
        let hints = HashHints::with_slots(1 << 12);
        let hashes: Vec<String> = (0..2 * 4096).map(hash).collect();
        hints.insert(
            hashes
                .iter()
                .enumerate()
                .map(|(h, s)| (s.as_str(), h as u64)),
        );
        let newest = &hashes[hashes.len() - 100..];
        let hinted = newest.iter().filter(|h| hints.get(h).is_some()).count();
        assert!(hinted >= 95, "{hinted} of the newest 100 hinted");
    }

    #[test]
    fn a_full_neighbourhood_gives_its_home_slot_to_the_newest_hint() {
        let hints = HashHints::with_slots(64);
        // Twenty prefixes with the same home slot: the window holds sixteen.
        for i in 0..20u64 {
            hints.put(((i << 6) << 32) | (i + 1));
        }
        let get = |p: u64| hints.get(&format!("{p:08x}{}", "0".repeat(56)));
        assert_eq!(get(19 << 6), Some(19), "the newest is hinted");
        assert_eq!(get(0), None, "the oldest home occupant gave way");
        for i in 1..16u64 {
            assert_eq!(get(i << 6), Some(i));
        }
        assert_eq!(get(17 << 6), None);
    }

    #[test]
    fn a_later_hint_replaces_one_of_the_same_prefix_and_big_heights_are_not_hinted() {
        let hints = HashHints::new();
        let h = hash(1);
        hints.insert([(h.as_str(), 5)]);
        assert_eq!(hints.get(&h), Some(5));
        hints.insert([(h.as_str(), 9)]);
        assert_eq!(hints.get(&h), Some(9));
        hints.insert([(h.as_str(), MAX_HEIGHT + 1)]);
        assert_eq!(
            hints.get(&h),
            Some(9),
            "heights past 32 bits are not hinted"
        );
    }
}
