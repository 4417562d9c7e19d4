//! The chain the HTTP benches serve: genesis and sealed blocks of about 2 KB, a second apart.

use block_manager::chain::{self, Block, Timestamp, Transaction};
use serde_json::Number;

pub const GENESIS_TS: &str = "2024-01-01T00:00:00+00:00";
/// Transactions per block and payload per transaction: about 2 KB served per block.
const TXS: usize = 4;
const DATA: usize = 100;

/// Genesis and `n` sealed blocks of [`TXS`] transactions.
pub fn chain(n: usize) -> Vec<Block> {
    let mut c = vec![chain::genesis_block(
        Timestamp::parse(GENESIS_TS).expect("timestamp"),
    )];
    for height in 1..=n as u64 {
        let parent = &c[c.len() - 1];
        let at = Timestamp::from_unix_micros(parent.timestamp.unix_micros() + 1_000_000);
        let txs = (0..TXS)
            .map(|i| Transaction {
                tx_id: format!("tx-{height:08}-{i}"),
                tx_type: "data_storage".into(),
                from_address: "0x3333333333333333333333333333333333333333".into(),
                to_address: "0x4444444444444444444444444444444444444444".into(),
                value: Number::from(i),
                fee: Number::from(0),
                data: "x".repeat(DATA),
                timestamp: at,
                signature: format!("sig-{height}-{i}"),
            })
            .collect();
        c.push(Block::build(
            height,
            parent.hash.clone(),
            at,
            "node-bench",
            format!("block-sig-{height}"),
            txs,
        ));
    }
    c
}
