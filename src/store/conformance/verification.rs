//! `crate::verify` over a stored chain: what `block-manager verify` and `POST
//! /api/v1/chain/verify` report must not depend on the engine.

use serde_json::Number;

use super::{Engine, blocks, start};
use crate::chain::{Block, Timestamp, Transaction, genesis_block};
use crate::ledger::record_of;
use crate::store::BlockRecord;
use crate::verify::verify;

/// A real chain of `n` sealed blocks on top of genesis, each with `txs` transactions.
fn sealed_chain(n: u64, txs: usize) -> Vec<BlockRecord> {
    let start = Timestamp::from_unix_micros(super::GENESIS_MICROS);
    let mut chain = vec![genesis_block(start)];
    for height in 1..=n {
        let ts = Timestamp::from_unix_micros(super::GENESIS_MICROS + height as i64 * 10_000_000);
        let transactions = (0..txs)
            .map(|i| Transaction {
                tx_id: format!("tx-{height}-{i}"),
                tx_type: "data_storage".to_owned(),
                from_address: "addr-a".to_owned(),
                to_address: "addr-b".to_owned(),
                value: Number::from(i),
                fee: Number::from(0u8),
                data: format!("{{\"n\": {i}}}"),
                timestamp: ts,
                signature: "sig".to_owned(),
            })
            .collect();
        let previous = chain
            .last()
            .map(|b: &Block| b.hash.clone())
            .unwrap_or_default();
        chain.push(Block::build(
            height,
            previous,
            ts,
            "node-1",
            "sig",
            transactions,
        ));
    }
    chain.iter().map(record_of).collect()
}

pub(crate) fn a_stored_valid_chain_verifies(engine: &dyn Engine) {
    let Some(mut fx) = start(engine, None) else {
        return;
    };
    let chain = sealed_chain(40, 4);
    {
        let store = fx.store();
        let empty = verify(&*store, 0, None).unwrap();
        assert!(empty.is_valid && empty.blocks_checked == 0, "{empty:?}");
        store.set_genesis("testnet", chain[0].clone()).unwrap();
        store.append(&chain[1..]).unwrap();
        let report = verify(&*store, 0, None).unwrap();
        assert!(report.is_valid, "{:?}", report.errors);
        assert_eq!((report.blocks_checked, report.end_height), (41, 40));
    }
    fx.reopen();
    let store = fx.store();
    let part = verify(&*store, 10, Some(20)).unwrap();
    assert!(part.is_valid, "{:?}", part.errors);
    assert_eq!(
        (part.start_height, part.end_height, part.blocks_checked),
        (10, 20, 11)
    );
    store.rollback_above(30).unwrap();
    let after = verify(&*store, 0, Some(1_000)).unwrap();
    assert!(after.is_valid, "{:?}", after.errors);
    assert_eq!((after.blocks_checked, after.end_height), (31, 30));
}

pub(crate) fn verify_reports_stored_bodies_that_are_not_blocks(engine: &dyn Engine) {
    let Some(fx) = start(engine, None) else {
        return;
    };
    let store = fx.store();
    // The synthetic records' bodies are JSON but not blocks: every height is a problem.
    store.append(&blocks(0, 5)).unwrap();
    let report = verify(&*store, 0, None).unwrap();
    assert!(!report.is_valid);
    assert_eq!((report.blocks_checked, report.error_count), (5, 5));
    assert!(
        report.errors.iter().all(|e| e.contains("does not parse")),
        "{:?}",
        report.errors
    );
}
