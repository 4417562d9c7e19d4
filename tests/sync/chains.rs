//! Valid chains built in memory (genesis of the spec's vectors, then sealed blocks), and a
//! store seeded with one through the real ledger, so large upstreams take a second to make.

use block_manager::chain::{self, Block, Limits, Timestamp, Transaction};
use block_manager::ledger::Ledger;
use block_manager::metrics::Metrics;
use block_manager::store::{ChainWriter, RedbStore};
use serde_json::Number;
use std::path::Path;
use std::sync::Arc;

/// The genesis block every test node makes (`chain.genesis_timestamp` of the test config).
pub fn genesis() -> Block {
    chain::genesis_block(Timestamp::parse(super::common::GENESIS_TS).expect("vector timestamp"))
}

/// A chain of genesis and `n` blocks tagged `tag`.
pub fn chain(n: usize, tag: &str) -> Vec<Block> {
    let mut c = vec![genesis()];
    grow(&mut c, n, tag, 2);
    c
}

/// The first `keep` blocks of `base` (heights `0..keep`) and `n` new blocks tagged `tag`.
pub fn branch(base: &[Block], keep: usize, n: usize, tag: &str) -> Vec<Block> {
    let mut c = base[..keep].to_vec();
    grow(&mut c, n, tag, 2);
    c
}

/// Appends `n` blocks of `txs` transactions, each a second after its parent.
pub fn grow(c: &mut Vec<Block>, n: usize, tag: &str, txs: usize) {
    for _ in 0..n {
        let parent = c.last().expect("a chain starts at genesis");
        let height = parent.height + 1;
        let at = Timestamp::from_unix_micros(parent.timestamp.unix_micros() + 1_000_000);
        let transactions = (0..txs)
            .map(|i| Transaction {
                tx_id: format!("{tag}-{height}-{i}"),
                tx_type: "data_storage".into(),
                from_address: "0x1111".into(),
                to_address: "0x2222".into(),
                value: Number::from(i),
                fee: Number::from(0),
                data: "d".repeat(100),
                timestamp: at,
                signature: format!("sig-{tag}-{height}-{i}"),
            })
            .collect();
        let block = Block::build(
            height,
            parent.hash.clone(),
            at,
            "node-test",
            format!("block-sig-{tag}-{height}"),
            transactions,
        );
        c.push(block);
    }
}

/// Writes `blocks` (from genesis) into the store a test app on `dir` opens, through the ledger
/// so every block is validated on the way in.
pub async fn seed(dir: &Path, blocks: &[Block]) {
    let path = dir.join("blocks").join("blocks.redb");
    let store: Arc<dyn ChainWriter> =
        Arc::new(RedbStore::open(&path, 16 * 1024 * 1024).expect("open the store to seed"));
    let (ledger, writer) = Ledger::start(store, Limits::default(), Arc::new(Metrics::new()));
    for part in blocks.chunks(1000) {
        let done = ledger.append(part.to_vec()).await.expect("seed append");
        assert!(
            done.rejected.is_none(),
            "seed block rejected: {:?}",
            done.rejected
        );
        assert_eq!(done.committed, part.len());
    }
    drop(ledger);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join")
        .expect("the writer ends cleanly");
}
