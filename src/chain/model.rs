//! The validated block and transaction types and every JSON form they are written in.

use std::io;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Number;

use super::hash;
use super::timestamp::Timestamp;

/// A transaction that passed structural validation (see `validate::parse_transactions`).
///
/// Serializing it (derive order = field order) yields the canonical, stored form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transaction {
    /// Unique id, 1-128 characters without control characters; the merkle leaf input.
    pub tx_id: String,
    /// Lucid transaction type (`session_anchor`, `data_storage`, `consensus_vote`, `system`, ...).
    #[serde(rename = "type")]
    pub tx_type: String,
    /// Sender address, non-empty.
    pub from_address: String,
    /// Recipient address, non-empty.
    pub to_address: String,
    /// Non-negative amount, kept as written (`0` stays `0`, `0.1` stays `0.1`).
    pub value: Number,
    /// Non-negative fee, kept as written.
    pub fee: Number,
    /// Free-form payload, often JSON text.
    pub data: String,
    /// When the transaction was made.
    pub timestamp: Timestamp,
    /// Producer's signature, non-empty.
    pub signature: String,
}

/// A block that passed structural validation; whether it is *valid* is
/// [`check_block`](super::check_block)'s call.
///
/// Serializing it (derive order = field order) yields the canonical, stored form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Position in the chain; genesis is 0.
    pub height: u64,
    /// Hash of the block at `height - 1` (64 `'0'` for genesis).
    pub previous_hash: String,
    /// When the block was produced.
    pub timestamp: Timestamp,
    /// Merkle root of the transaction ids, as claimed by the producer.
    pub merkle_root: String,
    /// Producer (validator) id.
    pub producer: String,
    /// Producer's signature; may be empty here, `check_block` rejects that.
    pub signature: String,
    /// The block's transactions, in merkle order.
    pub transactions: Vec<Transaction>,
    /// Block hash as claimed by the producer; may be empty here, `check_block` rejects that.
    pub hash: String,
}

/// The light-client view of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Block height.
    pub height: u64,
    /// Block hash.
    pub hash: String,
    /// Hash of the parent block.
    pub previous_hash: String,
    /// Merkle root of the transaction ids.
    pub merkle_root: String,
    /// Block timestamp.
    pub timestamp: Timestamp,
    /// Producer id.
    pub producer: String,
    /// Number of transactions.
    pub transaction_count: u32,
}

/// The list-endpoint view of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Same as `hash` (Lucid clients read `block_id`).
    pub block_id: String,
    /// Block height.
    pub height: u64,
    /// Block hash.
    pub hash: String,
    /// Hash of the parent block.
    pub previous_hash: String,
    /// Block timestamp.
    pub timestamp: Timestamp,
    /// Number of transactions.
    pub transaction_count: u32,
    /// Length of the block's canonical JSON.
    pub block_size_bytes: u64,
    /// Same as `producer` (Lucid's name for it).
    pub validator: String,
    /// Producer id.
    pub producer: String,
}

impl Transaction {
    /// Compact canonical JSON: tx_id, type, from_address, to_address, value, fee, data,
    /// timestamp, signature.
    pub fn canonical_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Length of [`Transaction::canonical_json`], computed without allocating it.
    pub fn size_bytes(&self) -> usize {
        json_len(self)
    }
}

impl Block {
    /// Assembles a block and seals it: computes its merkle root and hash from the other fields.
    pub fn build(
        height: u64,
        previous_hash: impl Into<String>,
        timestamp: Timestamp,
        producer: impl Into<String>,
        signature: impl Into<String>,
        transactions: Vec<Transaction>,
    ) -> Block {
        let mut block = Block {
            height,
            previous_hash: previous_hash.into(),
            timestamp,
            merkle_root: String::new(),
            producer: producer.into(),
            signature: signature.into(),
            transactions,
            hash: String::new(),
        };
        block.merkle_root = block.computed_merkle_root();
        block.hash = block.computed_hash();
        block
    }

    /// The merkle root recomputed from the transaction ids.
    pub fn computed_merkle_root(&self) -> String {
        hash::merkle_root_of(self.transactions.iter().map(|tx| tx.tx_id.as_str()))
    }

    /// The hash recomputed from the fields, using the block's own `merkle_root` field.
    pub fn computed_hash(&self) -> String {
        hash::block_hash_with(
            self.height,
            &self.previous_hash,
            self.timestamp,
            &self.merkle_root,
            &self.producer,
            self.transactions.len(),
        )
    }

    /// Number of transactions as the `u32` the wire formats use (saturating; blocks hold ≤ 1000).
    pub fn transaction_count(&self) -> u32 {
        u32::try_from(self.transactions.len()).unwrap_or(u32::MAX)
    }

    /// Compact canonical JSON: height, previous_hash, timestamp, merkle_root, producer,
    /// signature, transactions (each canonical), hash. This is the stored form.
    pub fn canonical_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Length of [`Block::canonical_json`] (`block_size_bytes`, what the size limit checks),
    /// computed without allocating it.
    pub fn size_bytes(&self) -> usize {
        json_len(self)
    }

    /// The document single-block endpoints serve (a superset of Lucid's `BlockDetails`).
    pub fn served_json(&self) -> Vec<u8> {
        to_json(&ServedBlock {
            block_id: &self.hash,
            height: self.height,
            hash: &self.hash,
            previous_hash: &self.previous_hash,
            merkle_root: &self.merkle_root,
            timestamp: self.timestamp,
            producer: &self.producer,
            validator: &self.producer,
            signature: &self.signature,
            nonce: 0,
            difficulty: 0.0,
            transaction_count: self.transactions.len(),
            block_size_bytes: self.size_bytes(),
            transactions: ServedTransactions(&self.transactions),
        })
    }

    /// The light-client header.
    pub fn header(&self) -> Header {
        Header {
            height: self.height,
            hash: self.hash.clone(),
            previous_hash: self.previous_hash.clone(),
            merkle_root: self.merkle_root.clone(),
            timestamp: self.timestamp,
            producer: self.producer.clone(),
            transaction_count: self.transaction_count(),
        }
    }

    /// The list-endpoint summary.
    pub fn summary(&self) -> Summary {
        Summary {
            block_id: self.hash.clone(),
            height: self.height,
            hash: self.hash.clone(),
            previous_hash: self.previous_hash.clone(),
            timestamp: self.timestamp,
            transaction_count: self.transaction_count(),
            block_size_bytes: self.size_bytes() as u64,
            validator: self.producer.clone(),
            producer: self.producer.clone(),
        }
    }
}

/// How every served (and stored) block document opens: its first field is `block_id`, the
/// block's hash, so readers find the hash at a fixed offset.
pub const DOCUMENT_ID_PREFIX: &[u8] = b"{\"block_id\":\"";

/// Served block document; field order is the wire contract.
#[derive(Serialize)]
struct ServedBlock<'a> {
    block_id: &'a str,
    height: u64,
    hash: &'a str,
    previous_hash: &'a str,
    merkle_root: &'a str,
    timestamp: Timestamp,
    producer: &'a str,
    validator: &'a str,
    signature: &'a str,
    nonce: u64,
    difficulty: f64,
    transaction_count: usize,
    block_size_bytes: usize,
    transactions: ServedTransactions<'a>,
}

/// Streams the served transactions without collecting them into a `Vec` first.
struct ServedTransactions<'a>(&'a [Transaction]);

impl Serialize for ServedTransactions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ServedTransaction::from))
    }
}

/// A transaction's canonical fields plus its `size_bytes`.
#[derive(Serialize)]
struct ServedTransaction<'a> {
    tx_id: &'a str,
    #[serde(rename = "type")]
    tx_type: &'a str,
    from_address: &'a str,
    to_address: &'a str,
    value: &'a Number,
    fee: &'a Number,
    data: &'a str,
    timestamp: Timestamp,
    signature: &'a str,
    size_bytes: usize,
}

impl<'a> From<&'a Transaction> for ServedTransaction<'a> {
    fn from(tx: &'a Transaction) -> Self {
        ServedTransaction {
            tx_id: &tx.tx_id,
            tx_type: &tx.tx_type,
            from_address: &tx.from_address,
            to_address: &tx.to_address,
            value: &tx.value,
            fee: &tx.fee,
            data: &tx.data,
            timestamp: tx.timestamp,
            signature: &tx.signature,
            size_bytes: tx.size_bytes(),
        }
    }
}

// These types contain only strings, numbers and timestamps (no maps with non-string keys, no
// failing Serialize impls) and a Vec never refuses bytes, so serialization cannot fail.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("chain types always serialize to JSON")
}

fn json_len<T: Serialize>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value).expect("chain types always serialize to JSON");
    counter.0
}

/// An `io::Write` that only counts, for sizes without buffers.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::chain::fixtures::{top_level_keys_in_order, vectors};
    use crate::chain::parse_block;

    fn chain_vector_block() -> Block {
        parse_block(&vectors()["chain"]["block"]).expect("chain vector parses")
    }

    #[test]
    fn canonical_block_json_has_the_stored_field_order() {
        let block = chain_vector_block();
        let text = String::from_utf8(block.canonical_json()).expect("utf-8");
        assert_eq!(
            top_level_keys_in_order(&text),
            [
                "height",
                "previous_hash",
                "timestamp",
                "merkle_root",
                "producer",
                "signature",
                "transactions",
                "hash"
            ]
        );
        assert!(text.starts_with(r#"{"height":1,"previous_hash":"82888e4d"#));
    }

    #[test]
    fn canonical_transaction_json_keeps_numbers_as_written() {
        let block = chain_vector_block();
        let first = String::from_utf8(block.transactions[0].canonical_json()).expect("utf-8");
        assert_eq!(
            first,
            r#"{"tx_id":"anchor-7f3a","type":"session_anchor","from_address":"0x1111111111111111111111111111111111111111","to_address":"0x2222222222222222222222222222222222222222","value":0,"fee":0.1,"data":"{\"session_id\": \"s-42\"}","timestamp":"2024-01-01T00:00:10.500000+00:00","signature":"c2lnLWFuY2hvcg"}"#
        );
        let second = String::from_utf8(block.transactions[1].canonical_json()).expect("utf-8");
        assert!(second.contains(r#""value":25,"fee":0.05,"#), "{second}");
    }

    #[test]
    fn sizes_are_the_lengths_of_the_canonical_json() {
        let block = chain_vector_block();
        assert_eq!(block.size_bytes(), block.canonical_json().len());
        for tx in &block.transactions {
            assert_eq!(tx.size_bytes(), tx.canonical_json().len());
        }
    }

    #[test]
    fn served_json_matches_the_example_field_order() {
        let block = chain_vector_block();
        let text = String::from_utf8(block.served_json()).expect("utf-8");
        assert_eq!(
            top_level_keys_in_order(&text),
            [
                "block_id",
                "height",
                "hash",
                "previous_hash",
                "merkle_root",
                "timestamp",
                "producer",
                "validator",
                "signature",
                "nonce",
                "difficulty",
                "transaction_count",
                "block_size_bytes",
                "transactions",
            ]
        );
        assert!(
            text.contains(r#""nonce":0,"difficulty":0.0,"transaction_count":2,"#),
            "{text}"
        );
        let served: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(served["block_id"], served["hash"]);
        assert_eq!(served["validator"], "node-1");
        assert_eq!(served["block_size_bytes"], block.size_bytes());
        // The first transaction ends at the `}` after its (last) size_bytes field.
        let tx_start = text.find(r#"{"tx_id":"anchor-7f3a""#).expect("first tx");
        let size_at = tx_start
            + text[tx_start..]
                .find(r#""size_bytes""#)
                .expect("size_bytes");
        let tx_end = size_at + text[size_at..].find('}').expect("end of tx") + 1;
        assert_eq!(
            top_level_keys_in_order(&text[tx_start..tx_end]),
            [
                "tx_id",
                "type",
                "from_address",
                "to_address",
                "value",
                "fee",
                "data",
                "timestamp",
                "signature",
                "size_bytes"
            ]
        );
        assert_eq!(
            served["transactions"][0]["size_bytes"],
            block.transactions[0].size_bytes()
        );
    }

    #[test]
    fn served_json_parses_back_to_the_same_block() {
        let block = chain_vector_block();
        let served: Value = serde_json::from_slice(&block.served_json()).expect("json");
        assert_eq!(parse_block(&served), Ok(block));
    }

    #[test]
    fn header_and_summary_carry_the_wire_names() {
        let block = chain_vector_block();
        let header = serde_json::to_string(&block.header()).expect("json");
        assert_eq!(
            top_level_keys_in_order(&header),
            [
                "height",
                "hash",
                "previous_hash",
                "merkle_root",
                "timestamp",
                "producer",
                "transaction_count"
            ]
        );
        let summary = block.summary();
        assert_eq!(summary.block_id, block.hash);
        assert_eq!(summary.validator, "node-1");
        assert_eq!(summary.block_size_bytes, block.size_bytes() as u64);
        let text = serde_json::to_string(&summary).expect("json");
        assert_eq!(
            top_level_keys_in_order(&text),
            [
                "block_id",
                "height",
                "hash",
                "previous_hash",
                "timestamp",
                "transaction_count",
                "block_size_bytes",
                "validator",
                "producer",
            ]
        );
    }

    #[test]
    fn build_seals_merkle_root_and_hash() {
        let original = chain_vector_block();
        let rebuilt = Block::build(
            original.height,
            original.previous_hash.as_str(),
            original.timestamp,
            original.producer.as_str(),
            original.signature.as_str(),
            original.transactions.clone(),
        );
        assert_eq!(rebuilt, original);
    }
}
