//! The rollback log: written in the rollback's own commit, newest first, bounded, and kept
//! across a reopen.

use super::*;
use crate::store::{Position, ROLLBACK_LOG_MAX, Rollback};

#[test]
fn a_rollback_is_logged_with_its_ancestor_old_tip_and_orphans() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert!(
        store.rollback_log().unwrap().is_empty(),
        "a new store has none"
    );
    let chain = blocks(0, 12);
    store.append(&chain).unwrap();
    store.rollback_above(8).unwrap();
    store.rollback_above(8).unwrap(); // nothing above 8 any more: not logged
    store.rollback_above(5).unwrap();
    let log = store.rollback_log().unwrap();
    let pos = |h: usize| Position::new(h as u64, chain[h].meta.hash.clone());
    let hashes = |r: std::ops::Range<usize>| -> Vec<String> {
        chain[r].iter().map(|b| b.meta.hash.clone()).collect()
    };
    assert_eq!(
        log,
        vec![
            Rollback {
                ancestor: pos(5),
                old_tip: pos(8),
                orphaned: hashes(6..9),
            },
            Rollback {
                ancestor: pos(8),
                old_tip: pos(11),
                orphaned: hashes(9..12),
            },
        ]
    );
    store.close().unwrap();
    assert_eq!(
        open(&dir).rollback_log().unwrap(),
        log,
        "kept across a reopen"
    );
}

#[test]
fn the_rollback_log_forgets_the_oldest_past_its_bound() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let chain = blocks(0, 3);
    store.append(&chain[..2]).unwrap();
    for _ in 0..ROLLBACK_LOG_MAX + 5 {
        store.append(&chain[2..3]).unwrap();
        store.rollback_above(1).unwrap();
    }
    let log = store.rollback_log().unwrap();
    assert_eq!(log.len(), ROLLBACK_LOG_MAX);
    assert!(
        log.iter()
            .all(|r| r.orphaned == vec![chain[2].meta.hash.clone()])
    );
}
