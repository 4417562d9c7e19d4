//! [`ReadOnlyStore`]: a store opened for reading only, for the offline `verify`. Nothing is
//! created, repaired or written — not the redb file, not the body log — so a copy on a
//! read-only volume (or a backup that must stay as it is) can be checked.

use std::path::{Path, PathBuf};

use redb::{Builder, ReadOnlyDatabase, ReadTransaction, ReadableDatabase};

use super::body_log::BodyLog;
use super::failure::{Op, Outcome, classify, settle};
use super::redb_store::read_bodies;
use super::{BlockMeta, FORMAT_VERSION, StoreError, codec, tables};

/// A block store file opened read-only.
pub struct ReadOnlyStore {
    path: PathBuf,
    db: ReadOnlyDatabase,
    /// The body log beside the file, when it can be opened: reads by height come from it, as
    /// when serving, so verify checks the bytes clients get.
    log: Option<BodyLog>,
}

impl ReadOnlyStore {
    /// Opens the existing store at `path` without writing to it; `Ok(None)` when the file was
    /// not closed cleanly (a crash, a kill): redb then needs to rewrite its header before any
    /// read, which only a writable open does.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Option<Self>, StoreError> {
        let db = match Builder::new()
            .set_cache_size(cache_bytes)
            .open_read_only(path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::RepairAborted) => return Ok(None),
            Err(e) => return Err(classify(e.into(), Op::Open, path)),
        };
        let store = Self {
            path: path.to_path_buf(),
            db,
            log: None,
        };
        let (persisted, next) = store.read(|txn| {
            check_format(txn)?;
            let meta = txn.open_table(tables::META)?;
            let persisted = tables::read_body_log_watermark(&meta).unwrap_or(0);
            let next =
                tables::read_tip(&txn.open_table(tables::METAS)?)?.map_or(0, |m| m.height + 1);
            Ok((persisted, next))
        })?;
        let log = match BodyLog::open_read_only(path, persisted, next) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the body log; block reads go to the store");
                None
            }
        };
        Ok(Some(Self { log, ..store }))
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Outcome<T>) -> Result<T, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| classify(e.into(), Op::Read, &self.path))?;
        f(&txn).map_err(|e| settle(e, Op::Read, &self.path))
    }

    /// The highest stored block.
    pub fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        self.read(|txn| tables::read_tip(&txn.open_table(tables::METAS)?))
    }

    /// The block summary at `height`.
    pub fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.read(|txn| tables::read_meta(&txn.open_table(tables::METAS)?, height))
    }

    /// The body a read by height serves: from the body log when it holds a sound copy.
    pub fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(body) = self.log.as_ref().and_then(|log| log.get(height)) {
            return Ok(Some(body));
        }
        self.read(|txn| {
            let bodies = txn.open_table(tables::BODIES)?;
            Ok(tables::read_body(&bodies, height)?.map(|(body, _)| body))
        })
    }

    /// The stored records' bodies, as [`super::BlockStore::bodies`].
    pub fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|txn| read_bodies(txn, from, limit, max_bytes))
    }

    /// The height of the block with this hash.
    pub fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        self.read(|txn| {
            Ok(txn
                .open_table(tables::HASH_INDEX)?
                .get(hash)?
                .map(|v| v.value()))
        })
    }

    /// Where a transaction is stored: `(block height, index in the block)`.
    pub fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        self.read(|txn| {
            Ok(txn
                .open_table(tables::TX_INDEX)?
                .get(tx_id)?
                .map(|v| v.value()))
        })
    }

    /// The network recorded in the file ([`super::DEFAULT_NETWORK`] when none is).
    pub fn network(&self) -> Result<String, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(tables::META)?;
            let network = meta
                .get(tables::KEY_NETWORK)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            Ok(network.unwrap_or_else(|| super::DEFAULT_NETWORK.into()))
        })
    }

    /// The finality floor recorded in the file (0 when never raised).
    pub fn finality_floor(&self) -> Result<u64, StoreError> {
        self.read(|txn| tables::read_finality_floor(&txn.open_table(tables::META)?))
    }
}

/// The file is a block store of a format this build reads.
fn check_format(txn: &ReadTransaction) -> Outcome<()> {
    let meta = match txn.open_table(tables::META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let why = "a redb file, but not a block store (no meta table)";
            return Err(StoreError::Corrupt(why.into()).into());
        }
        Err(e) => return Err(e.into()),
    };
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
        return Err(StoreError::Corrupt(format!("unknown format version {found}")).into());
    }
    Ok(())
}
