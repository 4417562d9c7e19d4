//! Amounts (`value`, `fee`) are stored as the number the client wrote, or refused.
//!
//! A JSON number is held as an `f64` once parsed, so a 30-digit integer would silently become
//! `1.2345678901234568e29`. The parsed value alone cannot tell that anything was lost, so the
//! text of each amount is read again from the request bytes and compared, as an exact decimal,
//! with what would be stored. Notation may differ (`1e-05` is stored as `1e-5`, `1.50` as
//! `1.5`); the number never does: an amount the store cannot keep exactly is a VAL_004.

use serde::Deserialize;
use serde_json::Number;
use serde_json::value::RawValue;

use super::model::Transaction;
use super::validate::{Failure, code};

/// The fields of a body that lead to its transactions: a bare block (or create request), or
/// one wrapped in `block_data`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    block_data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    transactions: Option<&'a RawValue>,
}

/// The amounts of one transaction, as written.
#[derive(Deserialize)]
struct Written<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fee: Option<&'a RawValue>,
}

/// Every transaction amount in `bytes` (the JSON text `txs` were parsed from) that `txs` do not
/// hold exactly. A body whose transactions cannot be located again (a repeated key, which
/// the parsed value resolved silently) is refused as ambiguous.
pub fn check_written_amounts(bytes: &[u8], txs: &[Transaction]) -> Vec<Failure> {
    match written_amounts(bytes) {
        Ok(written) => {
            let mut out = Vec::new();
            for (i, (tx, w)) in txs.iter().zip(written).enumerate() {
                for (name, text, kept) in [("value", w.value, &tx.value), ("fee", w.fee, &tx.fee)] {
                    if let Some(text) = text.map(RawValue::get)
                        && !same_decimal(text, kept)
                    {
                        out.push(
                            Failure::new(
                                code::TRANSACTION,
                                format!(
                                    "Transaction {i}: {name} {text} cannot be stored exactly (it \
                                     would become {kept}): an amount is a whole number up to \
                                     18446744073709551615 or has at most 15 significant digits"
                                ),
                            )
                            .at(format!("transactions[{i}].{name}")),
                        );
                    }
                }
            }
            out
        }
        Err(e) => vec![Failure::new(
            code::STRUCTURE,
            format!("Block JSON is ambiguous: {e}"),
        )],
    }
}

fn written_amounts(bytes: &[u8]) -> Result<Vec<Written<'_>>, serde_json::Error> {
    let mut env: Envelope<'_> = serde_json::from_slice(bytes)?;
    // The same rule as the handlers: a `block_data` object holds the block.
    if let Some(inner) = env.block_data.filter(|b| b.get().starts_with('{')) {
        env = serde_json::from_str(inner.get())?;
    }
    let Some(list) = env.transactions.filter(|t| t.get().starts_with('[')) else {
        return Ok(Vec::new());
    };
    let items: Vec<&RawValue> = serde_json::from_str(list.get())?;
    items
        .into_iter()
        .map(|item| {
            if item.get().starts_with('{') {
                serde_json::from_str(item.get())
            } else {
                Ok(Written {
                    value: None,
                    fee: None,
                })
            }
        })
        .collect()
}

/// Whether the JSON number `text` and `kept` are the same decimal number.
fn same_decimal(text: &str, kept: &Number) -> bool {
    match (decimal(text), decimal(&kept.to_string())) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A JSON number as `(negative, digits, exponent)` with value `0.digits × 10^exponent`, the
/// digits without leading or trailing zeros (none for zero, whose sign is kept apart).
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    if digits.is_empty() {
        return Some((negative, digits, 0));
    }
    let point = i64::try_from(int.len()).ok()? - i64::try_from(leading).ok()?;
    Some((negative, digits, exp.checked_add(point)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txs_of(body: &serde_json::Value) -> Vec<Transaction> {
        let v = body.get("block_data").unwrap_or(body);
        crate::chain::parse_transactions(&v["transactions"], crate::chain::Timestamp::MIN).unwrap()
    }

    fn tx_text(value: &str, fee: &str) -> String {
        format!(
            r#"{{"transactions":[{{"tx_id":"a","from_address":"x","to_address":"y","signature":"s","value":{value},"fee":{fee}}}]}}"#
        )
    }

    #[test]
    fn decimals_compare_by_value_not_by_notation() {
        assert_eq!(decimal("1.50"), decimal("1.5"));
        assert_eq!(decimal("1e-05"), decimal("0.00001"));
        assert_eq!(decimal("100"), decimal("1e2"));
        assert_eq!(decimal("0.0"), decimal("0"));
        assert_ne!(decimal("0.1"), decimal("0.10000000000000001"));
        assert_ne!(decimal("-0"), decimal("0"));
        assert_eq!(decimal("1x"), None);
    }

    #[test]
    fn an_amount_past_f64_precision_is_refused_and_exact_ones_pass() {
        let cases = [
            ("123456789012345678901234567890", "0", Some("value")),
            ("1", "0.10000000000000000001", Some("fee")),
            ("18446744073709551615", "0", None),
            ("2.50", "1e-05", None),
            ("0.1", "0", None),
        ];
        for (value, fee, refused) in cases {
            let text = tx_text(value, fee);
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            let failures = check_written_amounts(text.as_bytes(), &txs_of(&body));
            match refused {
                Some(field) => {
                    assert_eq!(failures.len(), 1, "{value} {fee}: {failures:?}");
                    assert_eq!(failures[0].code, "VAL_004");
                    assert_eq!(
                        failures[0].field.as_deref(),
                        Some(format!("transactions[0].{field}").as_str())
                    );
                    assert!(failures[0].message.contains("cannot be stored exactly"));
                }
                None => assert!(failures.is_empty(), "{value} {fee}: {failures:?}"),
            }
        }
    }

    #[test]
    fn amounts_inside_block_data_are_found_and_repeated_keys_are_ambiguous() {
        let inner = tx_text("123456789012345678901234567890", "0");
        let text = format!(r#"{{"block_data":{inner}}}"#);
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            check_written_amounts(text.as_bytes(), &txs_of(&body)).len(),
            1
        );
        let twice = r#"{"transactions":[],"transactions":[{"value":1}]}"#;
        let failures = check_written_amounts(twice.as_bytes(), &[]);
        assert_eq!(failures[0].code, "VAL_001", "{failures:?}");
    }
}
