//! Hostile clients: responses bounded by bytes, amounts kept exactly as written, equal hashes
//! that are not equal blocks, and a validation that stops at the first hopeless limit.

// figment's Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod common;
use common::*;
use serde_json::{Value, json};

/// A create-next-block body whose one transaction carries `data_bytes` of data.
fn big_block(tag: &str, data_bytes: usize) -> Value {
    json!({
        "transactions": [{"tx_id": format!("{tag}-0"), "type": "data_storage", "from_address": "0xaaaa",
                          "to_address": "0xbbbb", "value": 1, "fee": 0, "data": "d".repeat(data_bytes),
                          "signature": format!("sig-{tag}")}],
        "producer": "node-test",
        "signature": format!("block-sig-{tag}"),
    })
}

fn code_of(body: &Value) -> String {
    body["detail"]["error_code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The value of an unlabelled-but-`route` series in the metrics text, 0 when absent.
async fn truncated_count(app: &TestApp, route: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let series = format!("block_manager_http_responses_truncated_total{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn range_stops_at_max_response_bytes_and_a_follower_pages_on_from_the_next_height() {
    const BUDGET: usize = 200_000;
    let app = spawn_app(|c| {
        c.chain.max_block_size_bytes = 100_000;
        c.api.max_response_bytes = BUDGET;
    })
    .await;
    for i in 0..10 {
        let (s, b) = app
            .post("/api/v1/blocks", &big_block(&format!("big{i}"), 60_000))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let before = truncated_count(&app, "/api/v1/blocks/range").await;
    let mut from = 0u64;
    let mut pages = 0;
    while from <= 10 {
        let res = app
            .get(&format!("/api/v1/blocks/range?from={from}&limit=1000"))
            .await;
        assert_eq!(res.status(), 200);
        let bytes = res.bytes().await.unwrap();
        assert!(
            bytes.len() <= BUDGET,
            "page from {from} is {} bytes, over {BUDGET}",
            bytes.len()
        );
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        let blocks = page["blocks"].as_array().unwrap();
        assert!(!blocks.is_empty(), "a page is never empty below the tip");
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(b["height"].as_u64(), Some(from + i as u64));
        }
        from += blocks.len() as u64;
        pages += 1;
    }
    assert_eq!(from, 11, "every block reached");
    assert!(
        pages >= 4,
        "10 blocks of ~60 kB in pages of 200 kB: {pages} pages"
    );
    assert!(truncated_count(&app, "/api/v1/blocks/range").await >= before + 3);
    // Past the tip the page is empty and whole: not a truncation.
    let (_, b) = app.get_json("/api/v1/blocks/range?from=11").await;
    assert_eq!(b["blocks"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn one_block_over_the_budget_is_still_served_alone() {
    // The start-up check keeps this from happening with a configured block size; a store
    // written under a larger limit may still hold such a block. (The in-process server takes
    // its config as given, without the loader's check.)
    let app = spawn_app(|c| {
        c.chain.max_block_size_bytes = 200_000;
        c.api.max_response_bytes = 50_000;
    })
    .await;
    for i in 0..3 {
        let (s, b) = app
            .post("/api/v1/blocks", &big_block(&format!("huge{i}"), 190_000))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = app.get_json("/api/v1/blocks/range?from=1&limit=3").await;
    assert_eq!(s, 200);
    let heights: Vec<_> = b["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["height"].as_u64().unwrap())
        .collect();
    assert_eq!(heights, vec![1]);
    app.stop().await;
}

#[test]
fn max_response_bytes_below_one_block_plus_slack_stops_start_up() {
    use block_manager::config::{LoadOptions, load};
    figment::Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER__API__MAX_RESPONSE_BYTES", "1048576");
        let e = load(&LoadOptions::default())
            .expect_err("a budget below one block is refused")
            .to_string();
        assert!(
            e.starts_with("invalid BLOCK_MANAGER__API__MAX_RESPONSE_BYTES '1048576'"),
            "{e}"
        );
        assert!(e.contains("chain.max_block_size_bytes"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        jail.set_env("BLOCK_MANAGER__API__MAX_RESPONSE_BYTES", "1114112");
        load(&LoadOptions::default()).expect("1 MiB + 64 KiB is enough");
        Ok(())
    });
}
