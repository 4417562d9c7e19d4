//! Builds the chain `bench/copy.sh` copies: `cargo bench --bench copy_chain -- DIR BLOCKS`
//! writes genesis and BLOCKS sealed blocks of about 3 KB (six transactions) into the embedded
//! store folder DIR, in durable batches, and raises its finality floor ten blocks below the tip.

use block_manager::chain::{self, Block, Timestamp, Transaction};
use block_manager::ledger::record_of;
use block_manager::store::{ChainWriter, DEFAULT_CACHE_BYTES, RedbStore};
use serde_json::Number;
use std::path::PathBuf;
use std::time::Instant;

const GENESIS_TS: &str = "2024-01-01T00:00:00+00:00";
/// Transactions per block and payload per transaction: about 3 KB stored per block.
const TXS: usize = 6;
const DATA: usize = 150;
const BATCH: usize = 1_000;

fn main() {
    // `cargo bench` passes `--bench` to harness-less targets: only the positional words count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(dir), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: cargo bench --bench copy_chain -- DIR BLOCKS");
        std::process::exit(2);
    };
    let started = Instant::now();
    let file = PathBuf::from(dir).join("blocks.redb");
    let store = RedbStore::open(&file, DEFAULT_CACHE_BYTES).expect("open the store");
    let genesis = chain::genesis_block(Timestamp::parse(GENESIS_TS).expect("timestamp"));
    let mut parent = genesis.clone();
    let genesis_size = record_of(&genesis).body.len();
    store
        .set_genesis("lucid_blocks", record_of(&genesis))
        .expect("genesis");
    let mut batch = Vec::with_capacity(BATCH);
    let mut bytes = genesis_size as u64;
    for height in 1..=n {
        let block = next(&parent, height);
        let record = record_of(&block);
        bytes += record.body.len() as u64;
        batch.push(record);
        parent = block;
        if batch.len() == BATCH || height == n {
            store.append(&batch).expect("append");
            batch.clear();
        }
    }
    store
        .raise_finality_floor(n.saturating_sub(10))
        .expect("floor");
    println!(
        "built {} blocks ({} bytes on average) in {} in {:.1} s",
        n + 1,
        bytes / (n + 1),
        file.display(),
        started.elapsed().as_secs_f64()
    );
}

fn next(parent: &Block, height: u64) -> Block {
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
    Block::build(
        height,
        parent.hash.clone(),
        at,
        "node-bench",
        format!("block-sig-{height}"),
        txs,
    )
}
