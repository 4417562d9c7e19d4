//! What the HTTP benches share: their node's config and the chain they serve (genesis and
//! sealed blocks of about 2 KB, a second apart).

use block_manager::chain::{self, Block, Timestamp, Transaction};
use block_manager::config::{Config, Secret};
use serde_json::Number;
use std::path::Path;

pub const GENESIS_TS: &str = "2024-01-01T00:00:00+00:00";
/// The write key of the bench nodes.
pub const KEY: &str = "bench-key";
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

/// A node on 127.0.0.1:0 with its data in `dir`, rate limits off, following `upstream` if given.
pub fn config(dir: &Path, upstream: Option<&str>) -> Config {
    let mut c = Config::default();
    c.service.host = "127.0.0.1".into();
    c.service.port = 0;
    c.storage.blocks_path = dir.join("blocks").display().to_string();
    c.storage.min_free_bytes = 0;
    c.chain.genesis_timestamp = Some(GENESIS_TS.into());
    c.security.api_key = Secret::new(KEY);
    c.rate_limits.enabled = false;
    c.error_handling.validation.quarantine_path = dir.join("quarantine").display().to_string();
    c.synchronization.engine_url = upstream.map(str::to_owned);
    c
}
