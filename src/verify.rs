//! Integrity check of a stored height range: every body parses, its merkle root and hash
//! recompute, it links to the block below, the hash and transaction indexes agree, and a read by
//! height serves the stored body.
//! Used offline by `block-manager verify` and online by `POST /api/v1/chain/verify`.

use crate::chain;
use crate::store::{BlockMeta, BlockReads, ReadOnlyStore, StoreError};
use serde::Serialize;

/// The reads a verification makes: the running store's, or a read-only one's (offline).
pub trait Source {
    /// The highest stored block.
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError>;
    /// The block summary at `height`.
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError>;
    /// The body a read by height serves.
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stored bodies ascending from `from`, bounded by count and bytes.
    fn bodies(&self, from: u64, limit: usize, max_bytes: usize)
    -> Result<Vec<Vec<u8>>, StoreError>;
    /// The height of the block with this hash.
    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError>;
    /// Where a transaction is stored.
    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError>;
}

impl<T: BlockReads + ?Sized> Source for T {
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        BlockReads::tip(self)
    }
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        BlockReads::meta_at(self, height)
    }
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        BlockReads::body_at(self, height)
    }
    fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        BlockReads::bodies(self, from, limit, max_bytes)
    }
    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        BlockReads::height_of_hash(self, hash)
    }
    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        BlockReads::tx_location(self, tx_id)
    }
}

impl Source for ReadOnlyStore {
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        ReadOnlyStore::tip(self)
    }
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        ReadOnlyStore::meta_at(self, height)
    }
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        ReadOnlyStore::body_at(self, height)
    }
    fn bodies(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        ReadOnlyStore::bodies(self, from, limit, max_bytes)
    }
    fn height_of_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        ReadOnlyStore::height_of_hash(self, hash)
    }
    fn tx_location(&self, tx_id: &str) -> Result<Option<(u64, u32)>, StoreError> {
        ReadOnlyStore::tx_location(self, tx_id)
    }
}

/// Most problems listed in a report; past that only the count grows.
const MAX_LISTED: usize = 100;
/// Heights read per store call.
const CHUNK: usize = 256;
/// Body bytes read per store call (at least one body is read, whatever its size).
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when nothing was wrong.
    pub is_valid: bool,
    /// Blocks examined.
    pub blocks_checked: u64,
    /// Problems, each naming its height (at most 100 listed).
    pub errors: Vec<String>,
    /// Problems found in all.
    pub error_count: u64,
    /// First height checked.
    pub start_height: u64,
    /// Last height checked.
    pub end_height: u64,
}

/// Checks heights `from..=to` (clamped to the tip). An empty store is valid.
pub fn verify(
    store: &(impl Source + ?Sized),
    from: u64,
    to: Option<u64>,
) -> Result<Report, StoreError> {
    let tip = store.tip()?.map(|t| t.height);
    let end = match (tip, to) {
        (Some(t), Some(to)) => to.min(t),
        (Some(t), None) => t,
        (None, _) => 0,
    };
    let mut report = Report {
        is_valid: true,
        blocks_checked: 0,
        errors: Vec::new(),
        error_count: 0,
        start_height: from,
        end_height: end,
    };
    let Some(_) = tip else { return Ok(report) };
    if from > end {
        return Ok(report);
    }
    let problem = |msg: String, r: &mut Report| {
        r.error_count += 1;
        if r.errors.len() < MAX_LISTED {
            r.errors.push(msg);
        }
    };
    let mut previous: Option<String> = match from {
        0 => None,
        h => store.meta_at(h - 1)?.map(|m| m.hash),
    };
    let mut height = from;
    while height <= end {
        // Bounded by bytes too, so a chunk of 1 MiB blocks never holds 256 MiB.
        let count = CHUNK.min((end - height + 1) as usize);
        let bodies = store.bodies(height, count, CHUNK_BYTES)?;
        if bodies.is_empty() {
            problem(format!("height {height}: missing"), &mut report);
            break;
        }
        for body in bodies {
            report.blocks_checked += 1;
            check_one(store, height, &body, previous.as_deref(), &mut |m| {
                problem(m, &mut report)
            })?;
            previous = store.meta_at(height)?.map(|m| m.hash);
            height += 1;
        }
    }
    report.is_valid = report.error_count == 0;
    Ok(report)
}

fn check_one(
    store: &(impl Source + ?Sized),
    height: u64,
    body: &[u8],
    previous: Option<&str>,
    problem: &mut dyn FnMut(String),
) -> Result<(), StoreError> {
    let block = match chain::parse_block_json(body) {
        Ok(b) => b,
        Err(f) => {
            problem(format!(
                "height {height}: stored body does not parse: {}",
                f.first().map_or("?", |f| f.message.as_str())
            ));
            return Ok(());
        }
    };
    if block.height != height {
        problem(format!(
            "height {height}: body says height {}",
            block.height
        ));
    }
    if block.computed_merkle_root() != block.merkle_root {
        problem(format!("height {height}: merkle root mismatch"));
    }
    if block.computed_hash() != block.hash {
        problem(format!("height {height}: block hash mismatch"));
    }
    let expected_prev = previous.unwrap_or(chain::ZERO_HASH);
    if block.previous_hash != expected_prev {
        problem(format!(
            "height {height}: previous hash does not match the block below"
        ));
    }
    match store.meta_at(height)? {
        Some(meta)
            if meta.hash == block.hash && meta.transaction_count == block.transaction_count() => {}
        Some(_) => problem(format!(
            "height {height}: header record disagrees with the body"
        )),
        None => problem(format!("height {height}: header record missing")),
    }
    // Reads by height may come from a copy of the bodies (the store's body log), not from
    // the record this check reads: what clients are served must be the same bytes.
    if store.body_at(height)?.as_deref() != Some(body) {
        problem(format!(
            "height {height}: a read by height serves a body that differs from the stored one"
        ));
    }
    if store.height_of_hash(&block.hash)? != Some(height) {
        problem(format!("height {height}: hash index does not point here"));
    }
    for (i, tx) in block.transactions.iter().enumerate() {
        if store.tx_location(&tx.tx_id)? != Some((height, i as u32)) {
            problem(format!(
                "height {height}: transaction index entry for {} is wrong",
                tx.tx_id
            ));
        }
    }
    Ok(())
}
