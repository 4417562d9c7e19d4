//! Structural parsing of raw JSON into `Block`/`Transaction`, reporting every problem at once.

use serde_json::{Map, Number, Value};

use super::hash::is_hash_hex;
use super::model::{Block, Transaction};
use super::timestamp::Timestamp;
use super::validate::{Failure, code};

/// Longest accepted transaction id, in characters.
const MAX_TX_ID_CHARS: usize = 128;

/// Parses a block's structure (types, shapes, required fields), collecting every failure.
///
/// Unknown fields are ignored, so served documents (`block_id`, `validator`, `size_bytes`, ...)
/// parse too. A missing or empty `signature`/`hash` is accepted here as `""` because
/// [`super::check_block`] reports those with their own codes.
pub fn parse_block(v: &Value) -> Result<Block, Vec<Failure>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Failure::new(
            code::STRUCTURE,
            "Block must be a JSON object",
        )]);
    };
    let mut errs = Vec::new();
    let height = parse_height(obj, &mut errs);
    let previous_hash = required_hash(obj, "previous_hash", &mut errs);
    let timestamp = parse_block_timestamp(obj, &mut errs);
    let merkle_root = required_hash(obj, "merkle_root", &mut errs);
    let producer = required_text(obj, "producer", &mut errs);
    let signature = optional_text(obj, "signature", &mut errs);
    let transactions = match present(obj, "transactions") {
        None => {
            errs.push(missing("transactions"));
            None
        }
        // A bad block timestamp is already reported; MIN only stands in so the transactions
        // can still be checked.
        Some(list) => parse_list(list, timestamp.unwrap_or(Timestamp::MIN), &mut errs),
    };
    let hash = parse_claimed_hash(obj, &mut errs);

    // Every `None` above pushed its failure, so a block is built exactly when nothing failed.
    let assemble = || {
        Some(Block {
            height: height?,
            previous_hash: previous_hash?,
            timestamp: timestamp?,
            merkle_root: merkle_root?,
            producer: producer?,
            signature: signature?,
            transactions: transactions?,
            hash: hash?,
        })
    };
    match assemble() {
        Some(block) if errs.is_empty() => Ok(block),
        _ => Err(errs),
    }
}

/// Parses raw bytes as a block: invalid JSON is a single `VAL_001`, then [`parse_block`], then
/// every amount must be stored as the number written ([`super::amount`]).
pub fn parse_block_json(bytes: &[u8]) -> Result<Block, Vec<Failure>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        vec![Failure::new(
            code::STRUCTURE,
            format!("Block is not valid JSON: {e}"),
        )]
    })?;
    let block = parse_block(&value)?;
    let failures = super::amount::check_written_amounts(bytes, &block.transactions);
    if failures.is_empty() {
        Ok(block)
    } else {
        Err(failures)
    }
}

/// Parses the `transactions` of a create-next-block request; `null` means none.
/// Transactions without a timestamp get `block_ts`.
pub fn parse_transactions(
    v: &Value,
    block_ts: Timestamp,
) -> Result<Vec<Transaction>, Vec<Failure>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let mut errs = Vec::new();
    match parse_list(v, block_ts, &mut errs) {
        Some(txs) if errs.is_empty() => Ok(txs),
        _ => Err(errs),
    }
}

fn parse_list(v: &Value, block_ts: Timestamp, errs: &mut Vec<Failure>) -> Option<Vec<Transaction>> {
    let Some(items) = v.as_array() else {
        errs.push(
            Failure::new(code::STRUCTURE, "Field transactions must be an array").at("transactions"),
        );
        return None;
    };
    let before = errs.len();
    let txs: Vec<Transaction> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_transaction(i, item, block_ts, errs))
        .collect();
    (errs.len() == before).then_some(txs)
}

fn parse_transaction(
    i: usize,
    v: &Value,
    block_ts: Timestamp,
    errs: &mut Vec<Failure>,
) -> Option<Transaction> {
    let Some(obj) = v.as_object() else {
        errs.push(tx_failure(i, "", "must be a JSON object"));
        return None;
    };
    let tx_id = parse_tx_id(i, obj, errs);
    let tx_type = tx_text(i, obj, "type", Some("system"), errs);
    let from_address = tx_text(i, obj, "from_address", None, errs);
    let to_address = tx_text(i, obj, "to_address", None, errs);
    let value = tx_amount(i, obj, "value", errs);
    let fee = tx_amount(i, obj, "fee", errs);
    let data = tx_data(i, obj, errs);
    let timestamp = match present(obj, "timestamp") {
        None => Some(block_ts),
        Some(raw) => parse_timestamp(raw)
            .map_err(|why| {
                errs.push(
                    Failure::new(
                        code::TIMESTAMP,
                        format!("Transaction {i}: invalid timestamp: {why}"),
                    )
                    .at(format!("transactions[{i}].timestamp")),
                );
            })
            .ok(),
    };
    let signature = tx_text(i, obj, "signature", None, errs);
    // Each helper returns `None` only after recording why.
    Some(Transaction {
        tx_id: tx_id?,
        tx_type: tx_type?,
        from_address: from_address?,
        to_address: to_address?,
        value: value?,
        fee: fee?,
        data: data?,
        timestamp: timestamp?,
        signature: signature?,
    })
}

fn parse_tx_id(i: usize, obj: &Map<String, Value>, errs: &mut Vec<Failure>) -> Option<String> {
    // Lucid clients send `tx_id`; some older ones send `id`.
    let key = if present(obj, "tx_id").is_some() {
        "tx_id"
    } else {
        "id"
    };
    let id = tx_text(i, obj, key, None, errs)?;
    let chars = id.chars().count();
    if chars > MAX_TX_ID_CHARS {
        errs.push(tx_failure(
            i,
            "tx_id",
            format!("tx_id must be 1-{MAX_TX_ID_CHARS} characters, got {chars}"),
        ));
        return None;
    }
    if id.chars().any(char::is_control) {
        errs.push(tx_failure(i, "tx_id", "tx_id contains control characters"));
        return None;
    }
    Some(id)
}

/// A transaction string field; `default` makes it optional, otherwise it must be non-empty.
fn tx_text(
    i: usize,
    obj: &Map<String, Value>,
    key: &str,
    default: Option<&str>,
    errs: &mut Vec<Failure>,
) -> Option<String> {
    let name = if key == "id" { "tx_id" } else { key };
    match (present(obj, key), default) {
        (None, Some(default)) => Some(default.to_owned()),
        (None, None) => {
            errs.push(tx_failure(i, name, format!("{name} is required")));
            None
        }
        (Some(Value::String(s)), _) if s.is_empty() && default.is_none() => {
            errs.push(tx_failure(i, name, format!("{name} must not be empty")));
            None
        }
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(_), _) => {
            errs.push(tx_failure(i, name, format!("{name} must be a string")));
            None
        }
    }
}

/// `value`/`fee`: a non-negative JSON number, 0 when absent.
fn tx_amount(
    i: usize,
    obj: &Map<String, Value>,
    key: &str,
    errs: &mut Vec<Failure>,
) -> Option<Number> {
    match present(obj, key) {
        None => Some(Number::from(0u8)),
        // `-0` and `-0.0` parse as a negative zero, which `< 0.0` lets through
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f < 0.0 || f.is_sign_negative()) => {
            errs.push(tx_failure(i, key, format!("{key} must be non-negative")));
            None
        }
        Some(Value::Number(n)) => Some(n.clone()),
        Some(_) => {
            errs.push(tx_failure(i, key, format!("{key} must be a number")));
            None
        }
    }
}

/// `data`: text as given; a JSON object/array is kept as its compact JSON text.
fn tx_data(i: usize, obj: &Map<String, Value>, errs: &mut Vec<Failure>) -> Option<String> {
    match present(obj, "data") {
        None => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(structured @ (Value::Object(_) | Value::Array(_))) => Some(structured.to_string()),
        Some(_) => {
            errs.push(tx_failure(i, "data", "data must be a string"));
            None
        }
    }
}

fn parse_height(obj: &Map<String, Value>, errs: &mut Vec<Failure>) -> Option<u64> {
    let Some(raw) = present(obj, "height") else {
        errs.push(missing("height"));
        return None;
    };
    let height = raw.as_u64();
    if height.is_none() {
        errs.push(
            Failure::new(
                code::STRUCTURE,
                "Field height must be a non-negative integer",
            )
            .at("height"),
        );
    }
    height
}

fn required_hash(obj: &Map<String, Value>, key: &str, errs: &mut Vec<Failure>) -> Option<String> {
    let Some(raw) = present(obj, key) else {
        errs.push(missing(key));
        return None;
    };
    match raw.as_str() {
        Some(s) if is_hash_hex(s) => Some(s.to_owned()),
        _ => {
            errs.push(not_hash_hex(key));
            None
        }
    }
}

/// `hash`: absent or empty becomes `""` so `check_block` reports `Block hash mismatch`.
fn parse_claimed_hash(obj: &Map<String, Value>, errs: &mut Vec<Failure>) -> Option<String> {
    match present(obj, "hash") {
        None => Some(String::new()),
        Some(Value::String(s)) if s.is_empty() || is_hash_hex(s) => Some(s.clone()),
        Some(_) => {
            errs.push(not_hash_hex("hash"));
            None
        }
    }
}

fn parse_block_timestamp(obj: &Map<String, Value>, errs: &mut Vec<Failure>) -> Option<Timestamp> {
    let Some(raw) = present(obj, "timestamp") else {
        errs.push(missing("timestamp"));
        return None;
    };
    parse_timestamp(raw)
        .map_err(|why| {
            errs.push(
                Failure::new(code::TIMESTAMP, format!("Invalid block timestamp: {why}"))
                    .at("timestamp"),
            );
        })
        .ok()
}

fn parse_timestamp(raw: &Value) -> Result<Timestamp, String> {
    match raw.as_str() {
        Some(s) => Timestamp::parse(s).map_err(|e| e.to_string()),
        None => Err("expected a string".to_owned()),
    }
}

/// A required, non-empty block-level string (`producer`).
fn required_text(obj: &Map<String, Value>, key: &str, errs: &mut Vec<Failure>) -> Option<String> {
    match present(obj, key) {
        None => {
            errs.push(missing(key));
            None
        }
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            errs.push(
                Failure::new(
                    code::STRUCTURE,
                    format!("Field {key} must be a non-empty string"),
                )
                .at(key),
            );
            None
        }
    }
}

/// An optional block-level string (`signature`): absent means `""`.
fn optional_text(obj: &Map<String, Value>, key: &str, errs: &mut Vec<Failure>) -> Option<String> {
    match present(obj, key) {
        None => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errs.push(
                Failure::new(code::STRUCTURE, format!("Field {key} must be a string")).at(key),
            );
            None
        }
    }
}

/// A field's value, treating JSON `null` like an absent key (as Lucid's Optional fields do).
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn missing(key: &str) -> Failure {
    Failure::new(code::STRUCTURE, format!("Missing required field: {key}")).at(key)
}

fn not_hash_hex(key: &str) -> Failure {
    Failure::new(
        code::STRUCTURE,
        format!("Field {key} must be 64 lowercase hex characters"),
    )
    .at(key)
}

fn tx_failure(i: usize, field: &str, what: impl std::fmt::Display) -> Failure {
    let at = if field.is_empty() {
        format!("transactions[{i}]")
    } else {
        format!("transactions[{i}].{field}")
    };
    Failure::new(code::TRANSACTION, format!("Transaction {i}: {what}")).at(at)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chain::fixtures::vectors;

    fn chain_block_json() -> Value {
        vectors()["chain"]["block"].clone()
    }

    fn failures_of(v: &Value) -> Vec<Failure> {
        parse_block(v).expect_err("should not parse")
    }

    fn messages(failures: &[Failure]) -> Vec<&str> {
        failures.iter().map(|f| f.message.as_str()).collect()
    }

    fn minimal_tx() -> Value {
        json!({"tx_id": "t", "from_address": "a", "to_address": "b", "signature": "s"})
    }

    #[test]
    fn collects_every_structural_failure_at_once() {
        let raw = json!({
            "height": -3,
            "previous_hash": "ABC",
            "timestamp": "2024-01-01T00:00:00+02:00",
            "producer": "",
            "transactions": [{"tx_id": "", "value": -1}],
            "hash": 7
        });
        let failures = failures_of(&raw);
        assert_eq!(
            messages(&failures),
            [
                "Field height must be a non-negative integer",
                "Field previous_hash must be 64 lowercase hex characters",
                "Invalid block timestamp: timestamp must be UTC (+00:00 or Z)",
                "Missing required field: merkle_root",
                "Field producer must be a non-empty string",
                "Transaction 0: tx_id must not be empty",
                "Transaction 0: from_address is required",
                "Transaction 0: to_address is required",
                "Transaction 0: value must be non-negative",
                "Transaction 0: signature is required",
                "Field hash must be 64 lowercase hex characters",
            ]
        );
        let codes: Vec<&str> = failures.iter().map(|f| f.code).collect();
        assert_eq!(codes[2], code::TIMESTAMP);
        assert!(codes[5..10].iter().all(|c| *c == code::TRANSACTION));
    }

    #[test]
    fn rejects_heights_that_are_not_unsigned_integers() {
        for height in [json!(-1), json!(1.0), json!(1.5), json!("1"), json!(1e30)] {
            let mut raw = chain_block_json();
            raw["height"] = height.clone();
            let failures = failures_of(&raw);
            assert_eq!(
                messages(&failures),
                ["Field height must be a non-negative integer"],
                "{height}"
            );
            assert_eq!(failures[0].code, code::STRUCTURE);
        }
    }

    #[test]
    fn rejects_non_object_blocks_and_invalid_json() {
        assert_eq!(
            messages(&failures_of(&json!([1, 2]))),
            ["Block must be a JSON object"]
        );
        let failures = parse_block_json(b"{\"height\": 1").expect_err("truncated");
        assert_eq!(failures[0].code, code::STRUCTURE);
        assert!(failures[0].message.starts_with("Block is not valid JSON"));
    }

    #[test]
    fn missing_signature_and_hash_parse_as_empty_for_the_semantic_check() {
        let mut raw = chain_block_json();
        let obj = raw.as_object_mut().expect("object");
        obj.remove("signature");
        obj.insert("hash".to_owned(), Value::Null);
        let block = parse_block(&raw).expect("parses");
        assert_eq!(block.signature, "");
        assert_eq!(block.hash, "");
        raw["hash"] = json!("");
        assert!(parse_block(&raw).is_ok());
        raw["signature"] = json!(42);
        assert_eq!(
            messages(&failures_of(&raw)),
            ["Field signature must be a string"]
        );
    }

    #[test]
    fn ignores_unknown_fields_of_served_documents() {
        let mut raw = chain_block_json();
        raw["block_id"] = raw["hash"].clone();
        raw["nonce"] = json!(0);
        raw["difficulty"] = json!(0.0);
        raw["transactions"][0]["size_bytes"] = json!(300);
        assert_eq!(parse_block(&raw), parse_block(&chain_block_json()));
    }

    #[test]
    fn fills_transaction_defaults() {
        let block_ts = Timestamp::parse("2024-05-05T05:05:05Z").expect("valid");
        let txs = parse_transactions(&json!([minimal_tx()]), block_ts).expect("parses");
        let tx = &txs[0];
        assert_eq!(tx.tx_type, "system");
        assert_eq!(
            (tx.value.to_string(), tx.fee.to_string()),
            ("0".to_owned(), "0".to_owned())
        );
        assert_eq!(tx.data, "");
        assert_eq!(tx.timestamp, block_ts);
    }

    #[test]
    fn accepts_id_as_an_alias_and_structured_data() {
        let raw = json!([{
            "id": "legacy-1", "from_address": "a", "to_address": "b", "signature": "s",
            "data": {"session_id": "s-42"}, "value": 2.5, "timestamp": "2024-01-01T00:00:01.25Z"
        }]);
        let txs = parse_transactions(&raw, Timestamp::MIN).expect("parses");
        assert_eq!(txs[0].tx_id, "legacy-1");
        assert_eq!(txs[0].data, r#"{"session_id":"s-42"}"#);
        assert_eq!(txs[0].value.to_string(), "2.5");
        assert_eq!(
            txs[0].timestamp.to_string(),
            "2024-01-01T00:00:01.250000+00:00"
        );
    }

    #[test]
    fn rejects_malformed_transaction_fields() {
        let cases = [
            (
                "tx_id",
                json!("x".repeat(129)),
                "Transaction 0: tx_id must be 1-128 characters, got 129",
            ),
            (
                "tx_id",
                json!("a\u{7}b"),
                "Transaction 0: tx_id contains control characters",
            ),
            ("tx_id", json!(12), "Transaction 0: tx_id must be a string"),
            (
                "fee",
                json!(-0.5),
                "Transaction 0: fee must be non-negative",
            ),
            ("value", json!("5"), "Transaction 0: value must be a number"),
            ("data", json!(true), "Transaction 0: data must be a string"),
            (
                "signature",
                json!(""),
                "Transaction 0: signature must not be empty",
            ),
            ("type", json!(1), "Transaction 0: type must be a string"),
        ];
        for (key, value, expected) in cases {
            let mut tx = minimal_tx();
            tx[key] = value;
            let failures = parse_transactions(&json!([tx]), Timestamp::MIN).expect_err(expected);
            assert_eq!(messages(&failures), [expected]);
            assert_eq!(failures[0].code, code::TRANSACTION);
        }
        assert!(
            parse_transactions(
                &json!([{"tx_id": "x".repeat(128), "from_address": "a",
            "to_address": "b", "signature": "s"}]),
                Timestamp::MIN
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_transaction_timestamp_is_a_timestamp_failure() {
        let mut tx = minimal_tx();
        tx["timestamp"] = json!("2024-01-01T00:00:00+01:00");
        let failures =
            parse_transactions(&json!([minimal_tx(), tx]), Timestamp::MIN).expect_err("offset");
        assert_eq!(
            messages(&failures),
            ["Transaction 1: invalid timestamp: timestamp must be UTC (+00:00 or Z)"]
        );
        assert_eq!(failures[0].code, code::TIMESTAMP);
        assert_eq!(
            failures[0].field.as_deref(),
            Some("transactions[1].timestamp")
        );
    }

    #[test]
    fn transaction_list_must_be_an_array_of_objects() {
        assert_eq!(parse_transactions(&Value::Null, Timestamp::MIN), Ok(vec![]));
        let failures = parse_transactions(&json!({}), Timestamp::MIN).expect_err("object");
        assert_eq!(messages(&failures), ["Field transactions must be an array"]);
        let failures =
            parse_transactions(&json!([minimal_tx(), "tx"]), Timestamp::MIN).expect_err("string");
        assert_eq!(
            messages(&failures),
            ["Transaction 1: must be a JSON object"]
        );
        let mut raw = chain_block_json();
        raw.as_object_mut().expect("object").remove("transactions");
        assert_eq!(
            messages(&failures_of(&raw)),
            ["Missing required field: transactions"]
        );
    }
}
