//! Block validation (spec §3): failures with catalog codes, limits, semantic checks and flags.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use super::ZERO_HASH;
use super::model::Block;
use super::timestamp::Timestamp;

pub use super::parse::{parse_block, parse_block_json, parse_transactions};

/// The error-catalog codes validation reports (spec §7).
pub mod code {
    /// Block structure invalid: missing/mistyped fields, malformed hashes, too large.
    pub const STRUCTURE: &str = "VAL_001";
    /// Block signature invalid (missing).
    pub const SIGNATURE: &str = "VAL_002";
    /// Merkle root does not match the transactions.
    pub const MERKLE_ROOT: &str = "VAL_003";
    /// A transaction is malformed, duplicated or already stored; or there are too many.
    pub const TRANSACTION: &str = "VAL_004";
    /// Block or transaction timestamp unparsable, not UTC, or too far in the future.
    pub const TIMESTAMP: &str = "VAL_005";
    /// Block does not link to the chain (bad height / previous hash).
    pub const LINKAGE: &str = "BM_005";
    /// Block hash missing or not equal to the recomputed hash.
    pub const HASH: &str = "BM_006";
}

/// One reason a block is invalid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Error-catalog code (see [`code`]).
    pub code: &'static str,
    /// Human-readable message (Lucid's wording where Lucid has one).
    pub message: String,
    /// The offending field, e.g. `previous_hash` or `transactions[2].fee`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Failure {
    /// A failure not tied to one field.
    pub fn new(code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The same failure, pointing at `field`.
    pub fn at(mut self, field: impl Into<String>) -> Failure {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Configurable validation limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most transactions a block may carry (default 1000).
    pub max_transactions: usize,
    /// Largest canonical block size in bytes (default 1 MiB).
    pub max_block_bytes: usize,
    /// How far past `now` a block timestamp may be, in microseconds (default 5 minutes).
    pub max_future_skew_micros: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transactions: 1000,
            max_block_bytes: 1024 * 1024,
            max_future_skew_micros: 5 * 60 * 1_000_000,
        }
    }
}

/// What validation needs to know about the stored chain; implemented by the caller over its store.
pub trait ChainView {
    /// Hash of the stored block at `height`, if any.
    fn hash_at(&self, height: u64) -> Option<String>;
    /// Whether a transaction with this id is already stored.
    fn tx_exists(&self, tx_id: &str) -> bool;
}

impl<T: ChainView + ?Sized> ChainView for &T {
    fn hash_at(&self, height: u64) -> Option<String> {
        (**self).hash_at(height)
    }

    fn tx_exists(&self, tx_id: &str) -> bool {
        (**self).tx_exists(tx_id)
    }
}

/// Every semantic failure of a structurally valid block, in a fixed order: signature,
/// transactions, merkle root, hash, linkage, future timestamp, size.
pub fn check_block(
    b: &Block,
    view: &impl ChainView,
    limits: &Limits,
    now: Timestamp,
) -> Vec<Failure> {
    let mut out = Vec::new();
    if b.signature.is_empty() {
        out.push(Failure::new(code::SIGNATURE, "Block signature is missing").at("signature"));
    }
    check_transactions(b, view, limits, &mut out);
    if b.computed_merkle_root() != b.merkle_root {
        out.push(Failure::new(code::MERKLE_ROOT, "Merkle root mismatch").at("merkle_root"));
    }
    if b.hash.is_empty() || b.computed_hash() != b.hash {
        out.push(Failure::new(code::HASH, "Block hash mismatch").at("hash"));
    }
    check_link(b, view, &mut out);
    let latest_allowed = now
        .unix_micros()
        .saturating_add(limits.max_future_skew_micros);
    if b.timestamp.unix_micros() > latest_allowed {
        out.push(Failure::new(code::TIMESTAMP, "Block timestamp is in the future").at("timestamp"));
    }
    let size = b.size_bytes();
    if size > limits.max_block_bytes {
        out.push(Failure::new(
            code::STRUCTURE,
            format!("Block too large: {size} bytes"),
        ));
    }
    // The producer is in every summary and header: unbounded, 2000 headers of a 1 MiB
    // producer would be a 2 GB answer.
    if b.producer.chars().count() > MAX_PRODUCER_CHARS {
        out.push(
            Failure::new(
                code::STRUCTURE,
                format!("Field producer must be at most {MAX_PRODUCER_CHARS} characters"),
            )
            .at("producer"),
        );
    }
    out
}

/// Longest accepted producer, in characters.
pub const MAX_PRODUCER_CHARS: usize = 256;

fn check_transactions(b: &Block, view: &impl ChainView, limits: &Limits, out: &mut Vec<Failure>) {
    let n = b.transactions.len();
    if n > limits.max_transactions {
        out.push(
            Failure::new(
                code::TRANSACTION,
                format!(
                    "Too many transactions: {n} (max {})",
                    limits.max_transactions
                ),
            )
            .at("transactions"),
        );
    }
    // Past the limit the block is refused whatever else is wrong with its transactions:
    // looking each one up in the store would only let an oversized block cost one read per
    // entry. Repeats inside the block cost no read and are still reported.
    let look_up = n <= limits.max_transactions;
    let mut seen = HashSet::with_capacity(n);
    for (i, tx) in b.transactions.iter().enumerate() {
        let id = tx.tx_id.as_str();
        let problem = if !seen.insert(id) {
            format!("Transaction {i}: duplicate tx_id {id}")
        } else if look_up && view.tx_exists(id) {
            format!("Transaction {i}: tx_id {id} already stored")
        } else {
            continue;
        };
        out.push(Failure::new(code::TRANSACTION, problem).at(format!("transactions[{i}].tx_id")));
    }
}

fn check_link(b: &Block, view: &impl ChainView, out: &mut Vec<Failure>) {
    let mismatch = || Failure::new(code::LINKAGE, "Previous hash mismatch").at("previous_hash");
    let Some(parent) = b.height.checked_sub(1) else {
        if b.previous_hash != ZERO_HASH {
            out.push(mismatch());
        }
        return;
    };
    match view.hash_at(parent) {
        None => out.push(
            Failure::new(
                code::LINKAGE,
                format!("Previous block not found for height {parent}"),
            )
            .at("previous_hash"),
        ),
        Some(hash) if hash != b.previous_hash => out.push(mismatch()),
        Some(_) => {}
    }
}

/// Parses then checks a raw block: the block (when its structure is sound) and every failure.
pub fn validate_block(
    v: &serde_json::Value,
    view: &impl ChainView,
    limits: &Limits,
    now: Timestamp,
) -> (Option<Block>, Vec<Failure>) {
    match parse_block(v) {
        Ok(block) => {
            let failures = check_block(&block, view, limits, now);
            (Some(block), failures)
        }
        Err(mut failures) => {
            add_raw_failures(v, &mut failures);
            (None, failures)
        }
    }
}

/// For a block that did not parse: the semantic checks need a parsed block, but two of them
/// only need the raw value; run those so a malformed block still gets every failure it can.
pub fn add_raw_failures(v: &serde_json::Value, failures: &mut Vec<Failure>) {
    if !v.is_object() {
        return;
    }
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    let has = |fs: &[Failure], c: &str| fs.iter().any(|f| f.code == c);
    if text("signature").is_empty() && !has(failures, code::SIGNATURE) {
        failures.push(Failure::new(code::SIGNATURE, "Block signature is missing").at("signature"));
    }
    if text("hash").is_empty() && !has(failures, code::HASH) {
        failures.push(Failure::new(code::HASH, "Block hash mismatch").at("hash"));
    }
}

/// The per-aspect verdicts of the validate endpoint, derived from failure codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Flags {
    /// No `VAL_001`.
    pub structure_valid: bool,
    /// No `BM_006` and no `BM_005`.
    pub integrity_valid: bool,
    /// No `VAL_002`.
    pub signature_valid: bool,
    /// No `VAL_003`.
    pub merkle_root_valid: bool,
    /// No `VAL_005`.
    pub timestamp_valid: bool,
    /// No `VAL_004`.
    pub transactions_valid: bool,
}

impl Flags {
    /// Derives the flags from the codes of `failures`.
    pub fn from_failures(failures: &[Failure]) -> Flags {
        let clear = |codes: &[&str]| !failures.iter().any(|f| codes.contains(&f.code));
        Flags {
            structure_valid: clear(&[code::STRUCTURE]),
            integrity_valid: clear(&[code::HASH, code::LINKAGE]),
            signature_valid: clear(&[code::SIGNATURE]),
            merkle_root_valid: clear(&[code::MERKLE_ROOT]),
            timestamp_valid: clear(&[code::TIMESTAMP]),
            transactions_valid: clear(&[code::TRANSACTION]),
        }
    }

    /// True when every aspect is valid.
    pub fn all_valid(&self) -> bool {
        self.structure_valid
            && self.integrity_valid
            && self.signature_valid
            && self.merkle_root_valid
            && self.timestamp_valid
            && self.transactions_valid
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::chain::fixtures::{EmptyChain, MemoryChain, vectors};
    use crate::chain::genesis_block;

    const GENESIS_HASH: &str = "82888e4d5293ba78f665b99b731981ae9a077ada2a7ccbc53543380a8f258b06";

    fn chain_block_json() -> Value {
        vectors()["chain"]["block"].clone()
    }

    fn chain_block() -> Block {
        parse_block(&chain_block_json()).expect("chain vector parses")
    }

    fn genesis_only() -> MemoryChain {
        MemoryChain::with_block(0, GENESIS_HASH)
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("valid timestamp")
    }

    fn messages(failures: &[Failure]) -> Vec<&str> {
        failures.iter().map(|f| f.message.as_str()).collect()
    }

    fn codes(failures: &[Failure]) -> Vec<&str> {
        failures.iter().map(|f| f.code).collect()
    }

    fn check(b: &Block, view: &impl ChainView) -> Vec<Failure> {
        check_block(b, view, &Limits::default(), b.timestamp)
    }

    #[test]
    fn chain_vector_block_is_valid_on_top_of_the_genesis_vector() {
        let genesis = genesis_block(at("2024-01-01T00:00:00+00:00"));
        assert_eq!(genesis.hash, GENESIS_HASH);
        let (block, failures) = validate_block(
            &chain_block_json(),
            &genesis_only(),
            &Limits::default(),
            at("2024-01-01T00:00:11+00:00"),
        );
        assert_eq!(failures, vec![]);
        let block = block.expect("block");
        assert_eq!(
            block.hash,
            "413d5b8c7dd71cbca797bab1652a1d1da9ec4b018bff440d7827bf5e3edb5dcd"
        );
        assert_eq!(block.computed_hash(), block.hash);
        assert_eq!(
            block.merkle_root,
            vectors()["chain"]["block"]["merkle_root"]
        );
    }

    #[test]
    fn wrong_merkle_root_fails_root_and_hash_like_the_example() {
        let mut raw = chain_block_json();
        raw["merkle_root"] = json!("1".repeat(64));
        let (_, failures) = validate_block(
            &raw,
            &genesis_only(),
            &Limits::default(),
            at("2024-01-01T00:00:11Z"),
        );
        assert_eq!(
            messages(&failures),
            ["Merkle root mismatch", "Block hash mismatch"]
        );
        assert_eq!(codes(&failures), ["VAL_003", "BM_006"]);
        let flags = serde_json::to_value(Flags::from_failures(&failures)).expect("json");
        assert_eq!(
            flags,
            json!({"structure_valid": true, "integrity_valid": false, "signature_valid": true,
                   "merkle_root_valid": false, "timestamp_valid": true, "transactions_valid": true})
        );
    }

    #[test]
    fn missing_signature_is_reported_alone_because_it_is_not_hashed() {
        let mut block = chain_block();
        block.signature.clear();
        let failures = check(&block, &genesis_only());
        assert_eq!(messages(&failures), ["Block signature is missing"]);
        assert_eq!(codes(&failures), ["VAL_002"]);
    }

    #[test]
    fn empty_or_wrong_hash_is_a_hash_mismatch() {
        let mut block = chain_block();
        block.hash.clear();
        assert_eq!(codes(&check(&block, &genesis_only())), ["BM_006"]);
        block.hash = "a".repeat(64);
        assert_eq!(
            messages(&check(&block, &genesis_only())),
            ["Block hash mismatch"]
        );
    }

    #[test]
    fn rejects_block_with_unknown_parent() {
        let block = chain_block();
        let failures = check(&block, &EmptyChain);
        assert_eq!(
            messages(&failures),
            ["Previous block not found for height 0"]
        );
        assert_eq!(codes(&failures), ["BM_005"]);
        let other = MemoryChain::with_block(0, &"f".repeat(64));
        assert_eq!(messages(&check(&block, &other)), ["Previous hash mismatch"]);
    }

    #[test]
    fn height_zero_must_follow_the_zero_hash() {
        let genesis = genesis_block(at("2024-01-01T00:00:00Z"));
        assert_eq!(check(&genesis, &EmptyChain), vec![]);
        let orphan = Block::build(0, "a".repeat(64), genesis.timestamp, "p", "s", vec![]);
        assert_eq!(
            messages(&check(&orphan, &EmptyChain)),
            ["Previous hash mismatch"]
        );
    }

    #[test]
    fn reports_duplicate_and_already_stored_transaction_ids() {
        let base = chain_block();
        let mut txs = base.transactions.clone();
        txs.push(txs[0].clone());
        let block = Block::build(1, GENESIS_HASH, base.timestamp, "node-1", "sig", txs);
        let mut view = genesis_only();
        view.tx_ids.insert("store-19bc".to_owned());
        let failures = check(&block, &view);
        assert_eq!(
            messages(&failures),
            [
                "Transaction 1: tx_id store-19bc already stored",
                "Transaction 2: duplicate tx_id anchor-7f3a"
            ]
        );
        assert_eq!(failures[1].field.as_deref(), Some("transactions[2].tx_id"));
        assert!(!Flags::from_failures(&failures).transactions_valid);
    }

    #[test]
    fn enforces_configured_limits() {
        let block = chain_block();
        let limits = Limits {
            max_transactions: 1,
            max_block_bytes: 100,
            ..Limits::default()
        };
        let failures = check_block(&block, &genesis_only(), &limits, block.timestamp);
        let size = block.size_bytes();
        assert_eq!(
            messages(&failures),
            [
                "Too many transactions: 2 (max 1)".to_owned(),
                format!("Block too large: {size} bytes")
            ]
        );
        assert_eq!(codes(&failures), ["VAL_004", "VAL_001"]);
    }

    #[test]
    fn allows_five_minutes_of_clock_skew_and_no_more() {
        let block = chain_block();
        let now = |offset_micros: i64| {
            Timestamp::from_unix_micros(block.timestamp.unix_micros() - offset_micros)
        };
        let five_minutes = 5 * 60 * 1_000_000;
        let limits = Limits::default();
        assert_eq!(
            check_block(&block, &genesis_only(), &limits, now(five_minutes)),
            vec![]
        );
        let failures = check_block(&block, &genesis_only(), &limits, now(five_minutes + 1));
        assert_eq!(messages(&failures), ["Block timestamp is in the future"]);
        assert_eq!(codes(&failures), ["VAL_005"]);
    }

    #[test]
    fn lists_every_semantic_failure_in_the_documented_order() {
        let mut block = chain_block();
        block.signature.clear();
        block.transactions.push(block.transactions[0].clone());
        block.merkle_root = "1".repeat(64);
        let limits = Limits {
            max_transactions: 2,
            max_block_bytes: 10,
            max_future_skew_micros: 0,
        };
        let failures = check_block(&block, &EmptyChain, &limits, Timestamp::MIN);
        assert_eq!(
            codes(&failures),
            [
                "VAL_002", "VAL_004", "VAL_004", "VAL_003", "BM_006", "BM_005", "VAL_005",
                "VAL_001"
            ]
        );
        let flags = Flags::from_failures(&failures);
        assert!(!flags.structure_valid && !flags.integrity_valid && !flags.signature_valid);
        assert!(!flags.merkle_root_valid && !flags.timestamp_valid && !flags.transactions_valid);
        assert!(!flags.all_valid());
    }

    #[test]
    fn structural_failures_stop_before_the_semantic_checks() {
        let mut raw = chain_block_json();
        raw["height"] = json!(-1);
        raw["merkle_root"] = json!("1".repeat(64));
        let (block, failures) =
            validate_block(&raw, &genesis_only(), &Limits::default(), Timestamp::MAX);
        assert_eq!(block, None);
        assert_eq!(codes(&failures), ["VAL_001"]);
        let flags = Flags::from_failures(&failures);
        assert!(!flags.structure_valid && flags.integrity_valid);
    }

    #[test]
    fn flags_are_all_valid_without_failures() {
        assert!(Flags::from_failures(&[]).all_valid());
        let linkage = [Failure::new(code::LINKAGE, "Previous hash mismatch")];
        assert!(!Flags::from_failures(&linkage).integrity_valid);
    }

    #[test]
    fn failures_serialize_with_code_message_and_field() {
        let failure = Failure::new(code::HASH, "Block hash mismatch").at("hash");
        assert_eq!(
            serde_json::to_value(&failure).expect("json"),
            json!({"code": "BM_006", "message": "Block hash mismatch", "field": "hash"})
        );
        let plain = serde_json::to_value(Failure::new(code::STRUCTURE, "x")).expect("json");
        assert_eq!(plain, json!({"code": "VAL_001", "message": "x"}));
        assert_eq!(failure.to_string(), "BM_006: Block hash mismatch");
    }
}

#[cfg(test)]
mod lookup_tests {
    use std::cell::Cell;

    use super::*;
    use crate::chain::fixtures::{MemoryChain, vectors};

    /// A chain view that counts its transaction lookups (each one a store read in service).
    struct Counting {
        chain: MemoryChain,
        lookups: Cell<usize>,
    }

    impl ChainView for Counting {
        fn hash_at(&self, height: u64) -> Option<String> {
            self.chain.hash_at(height)
        }
        fn tx_exists(&self, tx_id: &str) -> bool {
            self.lookups.set(self.lookups.get() + 1);
            self.chain.tx_exists(tx_id)
        }
    }

    #[test]
    fn too_many_transactions_stops_before_any_per_transaction_lookup() {
        let mut block = parse_block(&vectors()["chain"]["block"]).expect("chain vector parses");
        let template = block.transactions[0].clone();
        block.transactions = (0..50)
            .map(|i| {
                let mut tx = template.clone();
                tx.tx_id = format!("many-{i}");
                tx
            })
            .collect();
        let view = Counting {
            chain: MemoryChain::default(),
            lookups: Cell::new(0),
        };
        let limits = Limits {
            max_transactions: 10,
            ..Limits::default()
        };
        let failures = check_block(&block, &view, &limits, Timestamp::MIN);
        assert!(
            failures
                .iter()
                .any(|f| f.message == "Too many transactions: 50 (max 10)"),
            "{failures:?}"
        );
        assert_eq!(view.lookups.get(), 0, "no lookups past the limit");
        // Within the limit every transaction is looked up once.
        let limits = Limits::default();
        check_block(&block, &view, &limits, Timestamp::MIN);
        assert_eq!(view.lookups.get(), 50);
    }

    #[test]
    fn a_producer_longer_than_256_characters_is_refused() {
        let mut block = parse_block(&vectors()["chain"]["block"]).expect("chain vector parses");
        let view = MemoryChain::default();
        let limits = Limits::default();
        block.producer = "p".repeat(257);
        let failures = check_block(&block, &view, &limits, Timestamp::MIN);
        assert!(
            failures.iter().any(
                |f| f.message == "Field producer must be at most 256 characters"
                    && f.code == "VAL_001"
            ),
            "{failures:?}"
        );
        block.producer = "é".repeat(256);
        let failures = check_block(&block, &view, &limits, Timestamp::MIN);
        assert!(
            !failures
                .iter()
                .any(|f| f.field.as_deref() == Some("producer"))
        );
    }
}
