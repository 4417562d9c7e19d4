//! The redb file itself: opening it with the store's settings, checking or initialising its
//! format, and the durable write transaction every change goes through.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Builder, Database, Durability, ReadableDatabase, WriteTransaction};

use super::failure::{Op, Outcome, classify};
use super::tables::{self, WriteTables};
use super::{DEFAULT_NETWORK, FORMAT_VERSION, StoreError, Totals, codec};

/// Opens (or, with `create`, creates) the redb file; reports whether a full repair ran.
pub(super) fn connect(
    path: &Path,
    cache_bytes: usize,
    create: bool,
) -> Result<(Database, bool), StoreError> {
    let repaired = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let mut builder = Builder::new();
    builder
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |_| seen.store(true, Ordering::Relaxed));
    let opened = if create {
        builder.create(path)
    } else {
        builder.open(path)
    };
    let db = opened.map_err(|e| classify(e.into(), Op::Open, path))?;
    Ok((db, repaired.load(Ordering::Relaxed)))
}

/// Checks the format version of an existing store, or initialises a new one. Returns whether
/// the file was new.
pub(super) fn initialise(db: &Database) -> Outcome<bool> {
    let txn = db.begin_read()?;
    match txn.open_table(tables::META) {
        Ok(meta) => {
            let found = match meta.get(tables::KEY_FORMAT_VERSION)? {
                Some(v) => codec::decode_u32(v.value(), "format version")?,
                None => return Err(StoreError::Corrupt("no format version".into()).into()),
            };
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: FORMAT_VERSION,
                }
                .into());
            }
            if found < FORMAT_VERSION {
                let why = format!("unknown format version {found}");
                return Err(StoreError::Corrupt(why).into());
            }
            Ok(false)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {
            if txn.list_tables()?.next().is_some() {
                let why = "a redb file, but not a block store (no meta table)";
                return Err(StoreError::Corrupt(why.into()).into());
            }
            drop(txn);
            // Tables, version and defaults in one commit: a crash leaves either none or all
            write_in(db, |t| {
                t.meta.insert(
                    tables::KEY_FORMAT_VERSION,
                    FORMAT_VERSION.to_le_bytes().as_slice(),
                )?;
                t.meta
                    .insert(tables::KEY_NETWORK, DEFAULT_NETWORK.as_bytes())?;
                t.set_totals(&Totals::default())
            })?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `f` in one durable write transaction: committed when it returns `Ok`, aborted (so
/// nothing is written) when it returns `Err`.
pub(super) fn write_in<T>(
    db: &Database,
    f: impl FnOnce(&mut WriteTables<'_>) -> Outcome<T>,
) -> Outcome<T> {
    let txn = begin_durable(db)?;
    let value = {
        let mut t = WriteTables::open(&txn)?;
        f(&mut t)
    };
    match value {
        Ok(v) => {
            txn.commit()?;
            Ok(v)
        }
        Err(e) => {
            // The error that made us abort is the one worth reporting
            let _ = txn.abort();
            Err(e)
        }
    }
}

fn begin_durable(db: &Database) -> Outcome<WriteTransaction> {
    let mut txn = db.begin_write()?;
    // Immediate is redb's default; spelled out because a 2xx must mean "fsync'd"
    txn.set_durability(Durability::Immediate)?;
    // Saves the allocator state in every commit (and commits in two phases), so the open after a
    // crash loads it instead of walking every page of the file
    txn.set_quick_repair(true);
    Ok(txn)
}
