//! The genesis block a standalone node creates on first start (spec §2).

use serde_json::Number;

use super::ZERO_HASH;
use super::model::{Block, Transaction};
use super::timestamp::Timestamp;

/// Producer and signature Lucid gives the genesis block and its transaction.
const GENESIS_PRODUCER: &str = "genesis";
const GENESIS_SIGNATURE: &str = "genesis_signature";
/// `0x` followed by 40 zeros: the null address on both sides of the genesis transaction.
const NULL_ADDRESS: &str = "0x0000000000000000000000000000000000000000";

/// The genesis block created at `ts`: height 0, one `system` transaction `genesis_<unix seconds>`.
pub fn genesis_block(ts: Timestamp) -> Block {
    // Python's json.dumps spacing (", " and ": "): the data text is part of the stored block,
    // so it must match what Lucid wrote byte for byte.
    let data = format!(
        r#"{{"type": "genesis", "network": "lucid_blocks", "version": "1.0.0", "consensus": "PoOT", "created_at": "{ts}"}}"#
    );
    let tx = Transaction {
        tx_id: format!("genesis_{}", ts.unix_seconds()),
        tx_type: "system".to_owned(),
        from_address: NULL_ADDRESS.to_owned(),
        to_address: NULL_ADDRESS.to_owned(),
        value: Number::from(0u8),
        fee: Number::from(0u8),
        data,
        timestamp: ts,
        signature: GENESIS_SIGNATURE.to_owned(),
    };
    Block::build(
        0,
        ZERO_HASH,
        ts,
        GENESIS_PRODUCER,
        GENESIS_SIGNATURE,
        vec![tx],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::fixtures::{EmptyChain, vectors};
    use crate::chain::{Limits, check_block, parse_block};

    fn vector_genesis() -> Block {
        let ts = vectors()["genesis"]["timestamp"]
            .as_str()
            .expect("timestamp");
        genesis_block(Timestamp::parse(ts).expect("valid timestamp"))
    }

    #[test]
    fn genesis_vector_matches() {
        let expected = &vectors()["genesis"];
        let block = vector_genesis();
        assert_eq!(
            block.transactions[0].tx_id,
            expected["tx_id"].as_str().expect("tx_id")
        );
        assert_eq!(
            block.merkle_root,
            expected["merkle_root"].as_str().expect("root")
        );
        assert_eq!(
            block.producer,
            expected["producer"].as_str().expect("producer")
        );
        assert_eq!(block.hash, expected["hash"].as_str().expect("hash"));
        assert_eq!(
            block.hash,
            "82888e4d5293ba78f665b99b731981ae9a077ada2a7ccbc53543380a8f258b06"
        );
    }

    #[test]
    fn genesis_data_is_python_json_text() {
        let block = vector_genesis();
        assert_eq!(
            block.transactions[0].data,
            r#"{"type": "genesis", "network": "lucid_blocks", "version": "1.0.0", "consensus": "PoOT", "created_at": "2024-01-01T00:00:00+00:00"}"#
        );
        let data: serde_json::Value =
            serde_json::from_str(&block.transactions[0].data).expect("data is JSON");
        assert_eq!(data["network"], "lucid_blocks");
    }

    #[test]
    fn genesis_passes_validation_on_an_empty_chain() {
        let block = vector_genesis();
        let now = block.timestamp;
        assert_eq!(
            check_block(&block, &EmptyChain, &Limits::default(), now),
            vec![]
        );
        let reparsed = parse_block(&serde_json::from_slice(&block.canonical_json()).expect("json"));
        assert_eq!(reparsed, Ok(block));
    }

    #[test]
    fn genesis_with_fraction_names_its_tx_after_whole_seconds() {
        let ts = Timestamp::parse("2024-01-01T00:00:00.999999Z").expect("valid");
        let block = genesis_block(ts);
        assert_eq!(block.transactions[0].tx_id, "genesis_1704067200");
        assert!(
            block.transactions[0]
                .data
                .contains("2024-01-01T00:00:00.999999+00:00")
        );
    }
}
