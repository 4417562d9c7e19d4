//! The behaviour suite every engine passes, written once against [`BlockStore`].
//!
//! An [`Engine`] makes fresh, empty chains ([`Fixture`]s) that can be reopened;
//! [`conformance_suite!`] expands to one `#[test]` per behaviour for one engine. An engine that
//! cannot run here (the PostgreSQL one without a test server) makes no fixture, and each of its
//! tests prints `<engine>: skipped` and passes, so the suite still compiles and runs everywhere.
//!
//! Behaviours by area: [`appends`] (appends, reads through every index, refused batches,
//! genesis, the write probe, reopening), [`rollbacks`] (removal, the rollback log), [`finality`]
//! (the floor, the quarantine index), [`transactions`] (the chain writer's
//! transactions), [`listings`] (pages by height and by time, counts by
//! time) and [`verification`] (`crate::verify` over a stored chain). What is about one engine's
//! files (redb's format, locks, file modes, the body log, crashes) stays beside that engine.

mod appends;
mod finality;
mod listings;
mod rollbacks;
mod transactions;
mod verification;

use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;

use super::{BlockMeta, BlockRecord, BlockStore, DEFAULT_CACHE_BYTES, RedbStore, Totals};

/// A storage engine the suite runs against.
pub(crate) trait Engine {
    /// Printed when the engine is unavailable: `<name>: skipped`.
    fn name(&self) -> &'static str;
    /// A new, empty chain whose appends raise the finality floor `depth` blocks below the tip
    /// (`None`: appends leave the floor, as a copy tool opens a store). `None` when the engine
    /// cannot run here.
    fn fresh(&self, depth: Option<u64>) -> Option<Box<dyn Fixture>>;
}

/// One chain of one engine, open through a handle that can be dropped and opened again.
pub(crate) trait Fixture {
    /// The open handle. Drop every clone before [`Fixture::reopen`].
    fn store(&self) -> Arc<dyn BlockStore>;
    /// Drops the handle and opens the same chain again with the same finality depth, as a
    /// restart does.
    fn reopen(&mut self);
    /// Like [`Fixture::reopen`], but with another finality depth from now on.
    fn reopen_with_depth(&mut self, depth: Option<u64>);
}

/// A fixture for any engine that opens a chain with a closure: the chain stays wherever the
/// closure keeps it (a folder, a database) for as long as the fixture lives.
pub(crate) struct Reopening<F: Fn(Option<u64>) -> Arc<dyn BlockStore>> {
    // Declared first so that it drops before `open` and what `open` keeps alive.
    store: Option<Arc<dyn BlockStore>>,
    depth: Option<u64>,
    open: F,
}

impl<F: Fn(Option<u64>) -> Arc<dyn BlockStore>> Reopening<F> {
    /// Opens the chain with `depth` at once.
    pub(crate) fn new(depth: Option<u64>, open: F) -> Self {
        Self {
            store: Some(open(depth)),
            depth,
            open,
        }
    }
}

impl<F: Fn(Option<u64>) -> Arc<dyn BlockStore>> Fixture for Reopening<F> {
    fn store(&self) -> Arc<dyn BlockStore> {
        Arc::clone(self.store.as_ref().expect("the chain is open"))
    }

    fn reopen(&mut self) {
        self.reopen_with_depth(self.depth);
    }

    fn reopen_with_depth(&mut self, depth: Option<u64>) {
        if let Some(store) = self.store.take() {
            // A clone still held would keep the old handle (a file lock, a pool) alive, and the
            // test would not be testing a restart.
            assert_eq!(
                Arc::strong_count(&store),
                1,
                "a test still holds the store it reopens"
            );
        }
        self.depth = depth;
        self.store = Some((self.open)(depth));
    }
}

/// The embedded engine: a redb file (and its body log) in a temporary folder.
pub(crate) struct Embedded;

impl Engine for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn fresh(&self, depth: Option<u64>) -> Option<Box<dyn Fixture>> {
        let dir = TempDir::new().expect("temporary folder");
        let path: PathBuf = dir.path().join("blocks").join("blocks.redb");
        Some(Box::new(Reopening::new(depth, move |depth| {
            // Owned by the closure, so the folder lives exactly as long as the fixture.
            let _dir = &dir;
            let store = RedbStore::open(&path, DEFAULT_CACHE_BYTES).expect("open the store");
            let store = match depth {
                Some(depth) => store.with_finality_depth(depth).expect("finality depth"),
                None => store,
            };
            Arc::new(store) as Arc<dyn BlockStore>
        })))
    }
}

/// A fresh chain of `engine`, or `None` after printing `<engine>: skipped`.
fn start(engine: &dyn Engine, depth: Option<u64>) -> Option<Box<dyn Fixture>> {
    let fixture = engine.fresh(depth);
    if fixture.is_none() {
        println!("{}: skipped", engine.name());
    }
    fixture
}

/// Timestamp of the test chains' genesis: 2024-01-01T00:00:00Z.
pub(super) const GENESIS_MICROS: i64 = 1_704_067_200_000_000;

/// A distinct 64-hex-character hash for each `(height, salt)`.
pub(super) fn hash_of(height: u64, salt: u64) -> String {
    format!("{:032x}{:032x}", height, salt)
}

/// A block of branch `salt` at `height` with three transactions; its body is small JSON.
pub(super) fn record(height: u64, micros: i64, salt: u64) -> BlockRecord {
    with_transactions(height, micros, salt, 3)
}

/// A block of branch `salt` at `height` with `count` transactions.
pub(super) fn with_transactions(height: u64, micros: i64, salt: u64, count: u32) -> BlockRecord {
    let tx_ids: Vec<String> = (0..count)
        .map(|i| format!("tx-{height}-{salt}-{i}"))
        .collect();
    // Opening with its id, as a served document does (the embedded engine's reads by hash
    // check a hinted height by it).
    let hash = hash_of(height, salt);
    let body = format!(
        r#"{{"block_id":"{hash}","height":{height},"salt":{salt},"transactions":{tx_ids:?}}}"#
    );
    BlockRecord {
        meta: BlockMeta {
            height,
            hash,
            previous_hash: if height == 0 {
                "0".repeat(64)
            } else {
                hash_of(height - 1, salt)
            },
            merkle_root: "ab".repeat(32),
            timestamp: format!("t{micros}"),
            timestamp_micros: micros,
            producer: "node-1".into(),
            transaction_count: count,
            block_size_bytes: body.len() as u64,
        },
        tx_ids,
        body: body.into_bytes(),
    }
}

/// Blocks `from..to`, ten seconds apart.
pub(super) fn blocks(from: u64, to: u64) -> Vec<BlockRecord> {
    (from..to)
        .map(|h| record(h, GENESIS_MICROS + h as i64 * 10_000_000, 0))
        .collect()
}

/// The heights of `metas`, in their order.
pub(super) fn heights(metas: &[BlockMeta]) -> Vec<u64> {
    metas.iter().map(|m| m.height).collect()
}

/// The totals a store holding exactly `records` reports, worked out independently of any engine.
pub(super) fn totals_of(records: &[BlockRecord]) -> Totals {
    records.iter().fold(Totals::default(), |t, r| Totals {
        blocks: t.blocks + 1,
        transactions: t.transactions + u64::from(r.meta.transaction_count),
        bytes: t.bytes + r.meta.block_size_bytes,
    })
}

/// One `#[test]` per behaviour for the engine `$engine` (an expression of a type implementing
/// [`Engine`]), in a module named `$module`.
macro_rules! conformance_suite {
    ($module:ident, $engine:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            conformance_suite!(@each $engine;
                appends::a_new_chain_is_empty_with_default_chain_info,
                appends::appended_blocks_read_back_verbatim_through_every_index,
                appends::bodies_of_every_size_round_trip_through_append_reads_and_rollback,
                appends::bodies_stop_before_the_body_that_would_pass_the_byte_budget,
                appends::set_genesis_records_the_network_and_only_works_on_an_empty_store,
                appends::a_batch_with_a_gap_writes_nothing,
                appends::a_batch_that_does_not_continue_the_tip_is_refused,
                appends::a_transaction_id_already_stored_aborts_the_whole_batch,
                appends::a_transaction_id_twice_in_one_batch_aborts_it,
                appends::a_block_hash_already_stored_aborts_the_whole_batch,
                appends::a_block_with_many_transactions_indexes_each_of_them,
                appends::reads_see_every_write_at_once,
                appends::concurrent_readers_never_see_a_commit_in_part,
                appends::the_write_probe_succeeds_and_changes_nothing,
                appends::reopening_keeps_every_block_index_and_total,
                rollbacks::rollback_removes_blocks_with_their_index_entries_and_totals,
                rollbacks::rollback_at_or_above_the_tip_removes_nothing_and_genesis_stays,
                rollbacks::a_rollback_after_a_reopen_removes_what_the_earlier_run_stored,
                rollbacks::a_rollback_is_logged_with_its_ancestor_old_tip_and_orphans,
                rollbacks::the_rollback_log_forgets_the_oldest_past_its_bound,
                finality::appends_raise_the_finality_floor_and_a_reopen_keeps_it,
                finality::the_finality_floor_only_rises_and_never_passes_the_tip,
                finality::a_rollback_below_the_finality_floor_is_refused_and_removes_nothing,
                finality::the_quarantine_index_files_each_key_once_across_a_reopen,
                listings::metas_page_by_height_in_both_orders_with_offset,
                listings::metas_by_time_sort_by_timestamp_then_height_for_narrow_and_wide_windows,
                listings::metas_by_time_break_equal_timestamps_by_height,
                listings::blocks_since_counts_by_time_up_to_the_cap,
                verification::a_stored_valid_chain_verifies,
                verification::verify_reports_stored_bodies_that_are_not_blocks,
                transactions::a_dropped_transaction_writes_nothing,
                transactions::a_transaction_commits_its_appends_at_once_and_says_what_it_left,
                transactions::a_transaction_refuses_blocks_that_do_not_continue_its_tip,
                transactions::a_transaction_looks_up_a_groups_transaction_ids_at_once,
                transactions::genesis_in_a_transaction_is_idempotent,
                transactions::a_rollback_in_a_transaction_hands_back_what_it_removed,
            );
        }
    };
    (@each $engine:expr; $($group:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::store::conformance::$group::$name(&$engine);
            }
        )*
    };
}

conformance_suite!(embedded, Embedded);
conformance_suite!(postgres, Postgres);

/// The PostgreSQL engine, each chain in a database of its own on the test server (skipped
/// without one: see `postgres::testdb`).
pub(crate) struct Postgres;

impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn fresh(&self, depth: Option<u64>) -> Option<Box<dyn Fixture>> {
        let options = crate::store::postgres::testdb::fresh()?;
        Some(Box::new(Reopening::new(depth, move |depth| {
            let network = crate::store::postgres::testdb::recorded_network(&options)
                .unwrap_or_else(|| super::DEFAULT_NETWORK.to_string());
            let spec = crate::store::postgres::ChainSpec {
                network,
                mode: Some("standalone"),
                genesis: None,
                genesis_pinned: false,
                finality_depth: depth,
            };
            let store = crate::store::PgStore::connect(options.clone(), spec)
                .unwrap_or_else(|e| panic!("connect: {e:?}"));
            Arc::new(store) as Arc<dyn BlockStore>
        })))
    }
}
