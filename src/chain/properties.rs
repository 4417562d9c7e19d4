//! Property tests across the chain module: sealed blocks validate, tampering is caught with the
//! right codes, JSON forms round-trip, and no input makes parsing panic.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use super::fixtures::MemoryChain;
use super::{
    Block, Limits, Timestamp, Transaction, ZERO_HASH, check_block, parse_block, parse_block_json,
};

const FIELD_NAMES: &[&str] = &[
    "height",
    "previous_hash",
    "timestamp",
    "merkle_root",
    "producer",
    "signature",
    "transactions",
    "hash",
    "tx_id",
    "id",
    "type",
    "from_address",
    "to_address",
    "value",
    "fee",
    "data",
];

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.unix_micros()..=Timestamp::MAX.unix_micros())
        .prop_map(Timestamp::from_unix_micros)
}

/// Non-negative amounts written either as integers or as two-decimal floats (which JSON parses
/// back exactly, so round-trip equality holds).
fn amount() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<u64>().prop_map(Number::from),
        (0u64..100_000_000_000)
            .prop_filter_map("finite", |cents| Number::from_f64(cents as f64 / 100.0)),
    ]
}

fn hex64() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn transaction(tx_id: String) -> impl Strategy<Value = Transaction> {
    (
        prop::sample::select(vec![
            "system",
            "session_anchor",
            "data_storage",
            "consensus_vote",
        ]),
        "[a-z0-9]{1,42}",
        "[a-z0-9]{1,42}",
        amount(),
        amount(),
        "\\PC{0,24}",
        timestamp(),
        "[A-Za-z0-9+/=]{1,24}",
    )
        .prop_map(
            move |(tx_type, from, to, value, fee, data, ts, sig)| Transaction {
                tx_id: tx_id.clone(),
                tx_type: tx_type.to_owned(),
                from_address: from,
                to_address: to,
                value,
                fee,
                data,
                timestamp: ts,
                signature: sig,
            },
        )
}

fn transactions() -> impl Strategy<Value = Vec<Transaction>> {
    prop::collection::hash_set("\\PC{1,20}", 0..10)
        .prop_flat_map(|ids| ids.into_iter().map(transaction).collect::<Vec<_>>())
}

/// A sealed block and a chain view it links to.
fn linked_block() -> impl Strategy<Value = (Block, MemoryChain)> {
    (
        0u64..1_000_000_000,
        hex64(),
        timestamp(),
        "\\PC{1,20}",
        "[A-Za-z0-9]{1,24}",
        transactions(),
    )
        .prop_map(|(height, parent_hash, ts, producer, sig, txs)| {
            let (previous_hash, view) = match height.checked_sub(1) {
                None => (ZERO_HASH.to_owned(), MemoryChain::default()),
                Some(parent) => (
                    parent_hash.clone(),
                    MemoryChain::with_block(parent, &parent_hash),
                ),
            };
            (
                Block::build(height, previous_hash, ts, producer, sig, txs),
                view,
            )
        })
}

fn codes_of(block: &Block, view: &MemoryChain) -> Vec<&'static str> {
    check_block(block, view, &Limits::default(), Timestamp::MAX)
        .into_iter()
        .map(|f| f.code)
        .collect()
}

/// An id that no transaction of `block` has.
fn fresh_id(block: &Block) -> String {
    let taken: HashSet<&str> = block
        .transactions
        .iter()
        .map(|tx| tx.tx_id.as_str())
        .collect();
    let mut id = "fresh".to_owned();
    while taken.contains(id.as_str()) {
        id.push('~');
    }
    id
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        "\\PC{0,16}".prop_map(Value::String),
        hex64().prop_map(Value::String),
        timestamp().prop_map(|ts| Value::String(ts.to_string())),
    ];
    let key = prop_oneof![
        prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        "\\PC{0,8}"
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..10)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn any_sealed_and_linked_block_is_valid((block, view) in linked_block()) {
        prop_assert_eq!(codes_of(&block, &view), Vec::<&str>::new());
    }

    #[test]
    fn canonical_and_served_json_parse_back_to_the_same_block((block, _view) in linked_block()) {
        prop_assert_eq!(parse_block_json(&block.canonical_json()), Ok(block.clone()));
        prop_assert_eq!(parse_block_json(&block.served_json()), Ok(block.clone()));
        prop_assert_eq!(block.size_bytes(), block.canonical_json().len());
    }

    #[test]
    fn changing_the_height_breaks_hash_and_linkage(
        (block, view) in linked_block(),
        delta in 1u64..1000,
    ) {
        let mut tampered = block.clone();
        tampered.height = block.height + delta;
        prop_assert_eq!(codes_of(&tampered, &view), ["BM_006", "BM_005"]);
        if let Some(lower) = block.height.checked_sub(delta) {
            tampered.height = lower;
            prop_assert_eq!(codes_of(&tampered, &view), ["BM_006", "BM_005"]);
        }
    }

    #[test]
    fn changing_the_previous_hash_breaks_hash_and_linkage(
        (block, view) in linked_block(),
        other in hex64(),
    ) {
        prop_assume!(other != block.previous_hash);
        let tampered = Block { previous_hash: other, ..block };
        prop_assert_eq!(codes_of(&tampered, &view), ["BM_006", "BM_005"]);
    }

    #[test]
    fn changing_the_timestamp_breaks_the_hash(
        (block, view) in linked_block(),
        other in timestamp(),
    ) {
        prop_assume!(other != block.timestamp);
        let tampered = Block { timestamp: other, ..block };
        prop_assert_eq!(codes_of(&tampered, &view), ["BM_006"]);
    }

    #[test]
    fn changing_the_merkle_root_breaks_root_and_hash(
        (block, view) in linked_block(),
        other in hex64(),
    ) {
        prop_assume!(other != block.merkle_root);
        let tampered = Block { merkle_root: other, ..block };
        prop_assert_eq!(codes_of(&tampered, &view), ["VAL_003", "BM_006"]);
    }

    #[test]
    fn changing_the_producer_breaks_the_hash(
        (block, view) in linked_block(),
        other in "\\PC{1,
        20}",
    ) {
        prop_assume!(other != block.producer);
        let tampered = Block { producer: other, ..block };
        prop_assert_eq!(codes_of(&tampered, &view), ["BM_006"]);
    }

    #[test]
    fn changing_a_transaction_id_breaks_only_the_root(
        (block, view) in linked_block(),
        pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!block.transactions.is_empty());
        let mut tampered = block.clone();
        let i = pick.index(block.transactions.len());
        tampered.transactions[i].tx_id = fresh_id(&block);
        // The hash covers the block's own root field and the count, neither of which changed.
        prop_assert_eq!(codes_of(&tampered, &view), ["VAL_003"]);
    }

    #[test]
    fn adding_a_transaction_breaks_root_and_hash(
        (block, view) in linked_block(),
        extra in transaction("placeholder".to_owned()),
    ) {
        let mut tampered = block.clone();
        tampered.transactions.push(Transaction { tx_id: fresh_id(&block), ..extra });
        prop_assert_eq!(codes_of(&tampered, &view), ["VAL_003", "BM_006"]);
    }

    #[test]
    fn removing_a_transaction_breaks_root_and_hash(
        (block, view) in linked_block(),
        pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!block.transactions.is_empty());
        let mut tampered = block.clone();
        tampered.transactions.remove(pick.index(block.transactions.len()));
        prop_assert_eq!(codes_of(&tampered, &view), ["VAL_003", "BM_006"]);
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(v in json_value()) {
        if let Ok(block) = parse_block(&v) {
            let view = MemoryChain::default();
            let _ = check_block(&block, &view, &Limits::default(), Timestamp::MIN);
        }
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_block_json(&bytes);
    }

    #[test]
    fn replacing_any_field_of_a_real_block_never_panics(
        (block, view) in linked_block(),
        key in prop::sample::select(FIELD_NAMES),
        replacement in json_value(),
        in_transaction in any::<bool>(),
    ) {
        let mut raw: Value =
            serde_json::from_slice(&block.canonical_json()).expect("canonical JSON");
        let target = match raw["transactions"].get_mut(0) {
            Some(tx) if in_transaction => tx,
            _ => &mut raw,
        };
        target[key] = replacement;
        if let Ok(parsed) = parse_block(&raw) {
            let _ = check_block(&parsed, &view, &Limits::default(), Timestamp::MAX);
        }
    }
}
