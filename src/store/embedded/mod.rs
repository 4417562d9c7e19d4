//! The embedded engine: one redb file plus a body log beside it, under
//! `storage.blocks_path`, owned by one process.
//!
//! Inside: `redb_store` (the handle, recovery, the [`Engine`](super::engine::Engine) impl),
//! `database` (opening the file, format check, durable transactions), `tables` (table layout
//! and per-block rows), `listing` (paged listings), `codec` (compact row encodings),
//! `failure` (error classification), `body_log` (the copy of the bodies that reads by height
//! are served from), `hash_hints` (where reads by hash look first), `files` (the names of the files beside the store), `read_only` (the
//! offline reader `verify` uses).

mod body_log;
mod codec;
mod database;
mod failure;
mod files;
mod hash_hints;
mod listing;
mod read_only;
mod redb_store;
mod tables;
#[cfg(test)]
mod tests;

pub use read_only::ReadOnlyStore;
pub use redb_store::{OpenReport, RedbStore};

// The face's types, as the engine's modules name them (`super::BlockMeta`, ...): they were
// written as children of `store/` and moved here unchanged.
#[cfg(test)]
use super::conformance;
use super::{
    BlockMeta, BlockRecord, ChainInfo, DEFAULT_NETWORK, FORMAT_VERSION, Order, Position,
    ROLLBACK_LOG_MAX, Rollback, StoreError, Totals, engine, floor_for_tip, writes,
};
