//! The redb tables of the block store and the row-level work on them: writing and removing one
//! block with all its index entries, and reading typed rows back.
//!
//! Everything here runs inside a transaction the caller opened; nothing commits.

use redb::{
    ReadOnlyTable, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};

use super::codec;
use super::failure::{Fault, Outcome};
use super::{BlockMeta, BlockRecord, StoreError, Totals};

/// (height, chunk number) → a slice of at most [`BODY_CHUNK_BYTES`] of the served JSON body.
pub(super) const BODIES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("body_chunks");
/// Height → compact [`BlockMeta`] (see [`codec`]); kept apart from bodies so listings read
/// small rows only.
pub(super) const METAS: TableDefinition<u64, &[u8]> = TableDefinition::new("metas");
/// Height → the block's transaction ids, so a rollback can remove their index entries.
pub(super) const BLOCK_TX_IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_tx_ids");
/// Block hash → height.
pub(super) const HASH_INDEX: TableDefinition<&str, u64> = TableDefinition::new("hash_index");
/// Transaction id → (height, index in block).
pub(super) const TX_INDEX: TableDefinition<&str, (u64, u32)> = TableDefinition::new("tx_index");
/// (timestamp µs, height) → (): listings sorted by time without sorting the chain.
pub(super) const TIME_INDEX: TableDefinition<(i64, u64), ()> = TableDefinition::new("time_index");
/// Named values: format version, network, genesis hash, totals, finality floor.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `<block hash>:<body digest>` → its number in [`QUARANTINE_ORDER`]: what the quarantine has
/// already filed, so the same block is never filed twice.
pub(super) const QUARANTINED: TableDefinition<&str, u64> = TableDefinition::new("quarantined");
/// Number → key of [`QUARANTINED`], oldest first, so the index stays bounded.
pub(super) const QUARANTINE_ORDER: TableDefinition<u64, &str> =
    TableDefinition::new("quarantine_order");
/// Most keys [`QUARANTINED`] keeps; the oldest are forgotten first. Far more than the
/// quarantine folder holds (1000 files by default), at about 150 bytes a key.
pub(super) const QUARANTINE_INDEX_MAX: u64 = 65_536;
/// Number → one [`Rollback`](super::Rollback) as JSON, oldest first: the rollback log that lets
/// an event stream resumed from an orphaned block find where its chain and ours part.
pub(super) const ROLLBACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("rollback_log");

/// Bodies are stored in chunks of this size. redb fills its 4 KiB leaf pages with whole
/// entries: a 2.2 KiB body stored whole leaves 1.8 KiB of its page empty, and a 5 KiB one takes
/// an 8 KiB page, while chunks this small pack pages about 80% full. Measured on 100k blocks of
/// 2.2 KB: 352 MiB of pages in use instead of 485 MiB.
pub(super) const BODY_CHUNK_BYTES: usize = 1000;

pub(super) const KEY_FORMAT_VERSION: &str = "format_version";
pub(super) const KEY_NETWORK: &str = "network";
pub(super) const KEY_GENESIS_HASH: &str = "genesis_hash";
pub(super) const KEY_TOTALS: &str = "totals";
/// Heights below this have a body in the body log that was fsync'd before the commit that
/// wrote this value (see [`super::body_log`]).
pub(super) const KEY_BODY_LOG: &str = "body_log_trusted";
/// The finality floor: no rollback ever removes this height or one below it (see
/// [`super::BlockStore::finality_floor`]). Absent in a store that never raised it: 0.
pub(super) const KEY_FINALITY_FLOOR: &str = "finality_floor";

/// Every table, opened for writing in one transaction.
pub(super) struct WriteTables<'t> {
    txn: &'t WriteTransaction,
    bodies: Table<'t, (u64, u32), &'static [u8]>,
    metas: Table<'t, u64, &'static [u8]>,
    tx_ids: Table<'t, u64, &'static [u8]>,
    hashes: Table<'t, &'static str, u64>,
    txs: Table<'t, &'static str, (u64, u32)>,
    times: Table<'t, (i64, u64), ()>,
    pub(super) meta: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    /// Opens (creating on first use) every table of the store.
    pub(super) fn open(txn: &'t WriteTransaction) -> Outcome<Self> {
        Ok(Self {
            txn,
            bodies: txn.open_table(BODIES)?,
            metas: txn.open_table(METAS)?,
            tx_ids: txn.open_table(BLOCK_TX_IDS)?,
            hashes: txn.open_table(HASH_INDEX)?,
            txs: txn.open_table(TX_INDEX)?,
            times: txn.open_table(TIME_INDEX)?,
            meta: txn.open_table(META)?,
        })
    }

    /// The tip as seen inside this transaction.
    pub(super) fn tip(&self) -> Outcome<Option<BlockMeta>> {
        match self.metas.last()? {
            Some((h, v)) => Ok(Some(codec::decode_meta(h.value(), v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes one block and its index entries. Refuses (so the caller aborts) a hash or
    /// transaction id that is already indexed: overwriting it would orphan the other block's
    /// entry, and validation upstream should have caught it.
    pub(super) fn insert_block(&mut self, block: &BlockRecord) -> Outcome<()> {
        let meta = &block.meta;
        let h = meta.height;
        if let Some(other) = self.hashes.insert(meta.hash.as_str(), h)? {
            return Err(duplicate("block hash", &meta.hash, other.value()));
        }
        for (i, id) in block.tx_ids.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| {
                StoreError::Write(format!("block {h} has more than 2^32 transactions"))
            })?;
            if let Some(other) = self.txs.insert(id.as_str(), (h, index))? {
                return Err(duplicate("transaction id", id, other.value().0));
            }
        }
        // An empty body still gets its (empty) first chunk, so that "stored" stays visible
        let mut chunks = block.body.chunks(BODY_CHUNK_BYTES).peekable();
        if chunks.peek().is_none() {
            self.bodies.insert((h, 0), [].as_slice())?;
        }
        for (i, chunk) in (0u32..).zip(chunks) {
            self.bodies.insert((h, i), chunk)?;
        }
        self.metas.insert(h, codec::encode_meta(meta).as_slice())?;
        self.tx_ids
            .insert(h, codec::encode_tx_ids(&block.tx_ids).as_slice())?;
        self.times.insert((meta.timestamp_micros, h), ())?;
        if h == 0 {
            self.meta.insert(KEY_GENESIS_HASH, meta.hash.as_bytes())?;
        }
        Ok(())
    }

    /// Removes the block at `height` with all its index entries and returns it.
    pub(super) fn remove_block(&mut self, height: u64) -> Outcome<Option<BlockRecord>> {
        let Some(meta_row) = self.metas.remove(height)? else {
            return Ok(None);
        };
        let meta = codec::decode_meta(height, meta_row.value())?;
        drop(meta_row);
        let Some((body, chunks)) = read_body(&self.bodies, height)? else {
            return Err(missing_row("body", height));
        };
        for i in 0..chunks {
            self.bodies.remove((height, i))?;
        }
        let tx_ids = match self.tx_ids.remove(height)? {
            Some(v) => codec::decode_tx_ids(v.value())?,
            None => return Err(missing_row("transaction ids", height)),
        };
        self.hashes.remove(meta.hash.as_str())?;
        for id in &tx_ids {
            self.txs.remove(id.as_str())?;
        }
        self.times.remove((meta.timestamp_micros, height))?;
        Ok(Some(BlockRecord { meta, tx_ids, body }))
    }

    /// The body stored at `height`, as this transaction sees it.
    pub(super) fn body(&self, height: u64) -> Outcome<Option<Vec<u8>>> {
        Ok(read_body(&self.bodies, height)?.map(|(body, _)| body))
    }

    /// Current totals (zero when never written).
    pub(super) fn totals(&self) -> Outcome<Totals> {
        match self.meta.get(KEY_TOTALS)? {
            Some(v) => Ok(codec::decode_totals(v.value())?),
            None => Ok(Totals::default()),
        }
    }

    pub(super) fn set_totals(&mut self, totals: &Totals) -> Outcome<()> {
        self.meta
            .insert(KEY_TOTALS, codec::encode_totals(totals).as_slice())?;
        Ok(())
    }

    /// Stores the body log's watermark ([`KEY_BODY_LOG`]).
    pub(super) fn set_body_log_watermark(&mut self, watermark: u64) -> Outcome<()> {
        self.meta
            .insert(KEY_BODY_LOG, watermark.to_le_bytes().as_slice())?;
        Ok(())
    }
}

impl WriteTables<'_> {
    /// The finality floor as this transaction sees it.
    pub(super) fn finality_floor(&self) -> Outcome<u64> {
        read_finality_floor(&self.meta)
    }

    /// Raises the finality floor to `height` unless it is already higher; returns the floor.
    pub(super) fn raise_finality_floor(&mut self, height: u64) -> Outcome<u64> {
        let floor = self.finality_floor()?;
        if height <= floor {
            return Ok(floor);
        }
        self.meta
            .insert(KEY_FINALITY_FLOOR, height.to_le_bytes().as_slice())?;
        Ok(height)
    }

    /// Records `key` in the quarantine index; `false` when it was there already. The tables
    /// are opened here, not with the others, so block commits never touch them.
    pub(super) fn record_quarantined(&mut self, key: &str) -> Outcome<bool> {
        let mut keys = self.txn.open_table(QUARANTINED)?;
        if keys.get(key)?.is_some() {
            return Ok(false);
        }
        let mut order = self.txn.open_table(QUARANTINE_ORDER)?;
        let number = order.last()?.map_or(0, |(n, _)| n.value() + 1);
        order.insert(number, key)?;
        keys.insert(key, number)?;
        while order.len()? > QUARANTINE_INDEX_MAX {
            let Some((_, oldest)) = order.pop_first()? else {
                break;
            };
            keys.remove(oldest.value())?;
        }
        Ok(true)
    }

    /// Appends `entry` to the rollback log, forgetting the oldest entries past
    /// [`ROLLBACK_LOG_MAX`](super::ROLLBACK_LOG_MAX). Opened here, like the quarantine index,
    /// so block commits never touch the table.
    pub(super) fn record_rollback(&mut self, entry: &super::Rollback) -> Outcome<()> {
        let row = serde_json::to_vec(entry)
            .map_err(|e| StoreError::Write(format!("cannot encode a rollback log entry: {e}")))?;
        let mut log = self.txn.open_table(ROLLBACKS)?;
        let number = log.last()?.map_or(0, |(n, _)| n.value() + 1);
        log.insert(number, row.as_slice())?;
        while log.len()? > super::ROLLBACK_LOG_MAX as u64 {
            if log.pop_first()?.is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// The rollback log, newest first; empty when nothing was ever rolled back.
pub(super) fn read_rollback_log(txn: &redb::ReadTransaction) -> Outcome<Vec<super::Rollback>> {
    let log = match txn.open_table(ROLLBACKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in log.iter()?.rev() {
        let (n, v) = row?;
        let entry = serde_json::from_slice(v.value()).map_err(|e| {
            StoreError::Corrupt(format!(
                "rollback log entry {} is unreadable: {e}",
                n.value()
            ))
        })?;
        out.push(entry);
    }
    Ok(out)
}

/// The finality floor ([`KEY_FINALITY_FLOOR`]); 0 when never raised.
pub(super) fn read_finality_floor(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Outcome<u64> {
    match meta.get(KEY_FINALITY_FLOOR)? {
        Some(v) => Ok(codec::decode_u64(v.value(), "finality floor")?),
        None => Ok(0),
    }
}

/// The body log's watermark ([`KEY_BODY_LOG`]); `None` when absent or unreadable, which callers
/// treat as "trust nothing".
pub(super) fn read_body_log_watermark(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Option<u64> {
    let value = meta.get(KEY_BODY_LOG).ok()??;
    codec::decode_u64(value.value(), "body log watermark").ok()
}

/// Adds `meta`'s block to `totals`, or (`add` false) takes it away.
pub(super) fn adjust(totals: &mut Totals, meta: &BlockMeta, add: bool) {
    let txs = u64::from(meta.transaction_count);
    if add {
        totals.blocks += 1;
        totals.transactions += txs;
        totals.bytes += meta.block_size_bytes;
    } else {
        totals.blocks = totals.blocks.saturating_sub(1);
        totals.transactions = totals.transactions.saturating_sub(txs);
        totals.bytes = totals.bytes.saturating_sub(meta.block_size_bytes);
    }
}

/// Reads and decodes the meta row at `height`.
pub(super) fn read_meta(
    metas: &ReadOnlyTable<u64, &'static [u8]>,
    height: u64,
) -> Outcome<Option<BlockMeta>> {
    match metas.get(height)? {
        Some(v) => Ok(Some(codec::decode_meta(height, v.value())?)),
        None => Ok(None),
    }
}

/// The highest stored meta.
pub(super) fn read_tip(metas: &ReadOnlyTable<u64, &'static [u8]>) -> Outcome<Option<BlockMeta>> {
    match metas.last()? {
        Some((h, v)) => Ok(Some(codec::decode_meta(h.value(), v.value())?)),
        None => Ok(None),
    }
}

/// The body stored at `height`, reassembled, with its number of chunks.
pub(super) fn read_body(
    bodies: &impl ReadableTable<(u64, u32), &'static [u8]>,
    height: u64,
) -> Outcome<Option<(Vec<u8>, u32)>> {
    let mut body = Vec::new();
    let mut chunks = 0u32;
    for row in bodies.range((height, 0)..=(height, u32::MAX))? {
        body.extend_from_slice(row?.1.value());
        chunks += 1;
    }
    Ok((chunks > 0).then_some((body, chunks)))
}

fn duplicate(what: &str, value: &str, height: u64) -> Fault {
    Fault::Store(StoreError::Write(format!(
        "{what} {value} is already stored at height {height}"
    )))
}

fn missing_row(what: &str, height: u64) -> Fault {
    Fault::Store(StoreError::Corrupt(format!(
        "block {height} has a meta row but no {what} row"
    )))
}
