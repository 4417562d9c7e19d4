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

/// POSTs `text` as JSON with the write key: status and body.
async fn post_raw(app: &TestApp, path: &str, text: String) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(path))
        .header("X-API-Key", WRITE_KEY)
        .header("Content-Type", "application/json")
        .body(text)
        .send()
        .await
        .expect("POST answered");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn create_text(tx_id: &str, value: &str, fee: &str) -> String {
    format!(
        r#"{{"transactions":[{{"tx_id":"{tx_id}","from_address":"a","to_address":"b","value":{value},"fee":{fee},"signature":"s"}}],"producer":"p","signature":"s"}}"#
    )
}

#[tokio::test]
async fn amounts_are_stored_as_written_or_refused() {
    let app = spawn_app(|_| {}).await;
    // Past what an f64 holds: refused, never rounded to 1.2345678901234568e+29.
    let (s, e) = post_raw(
        &app,
        "/api/v1/blocks",
        create_text("big", "123456789012345678901234567890", "0"),
    )
    .await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"), "{e}");
    assert_eq!(
        e["detail"]["additional_info"]["error_codes"],
        json!(["VAL_004"])
    );
    let msg = e.to_string();
    assert!(msg.contains("cannot be stored exactly"), "{msg}");
    // A negative zero is not a non-negative amount.
    for zero in ["-0", "-0.0"] {
        let (s, e) = post_raw(&app, "/api/v1/blocks", create_text("nz", zero, "0")).await;
        assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"), "{zero}: {e}");
        assert!(e.to_string().contains("value must be non-negative"), "{e}");
        let (s, e) = post_raw(&app, "/api/v1/blocks", create_text("nzf", "1", zero)).await;
        assert_eq!(
            (s, code_of(&e).as_str()),
            (422, "BM_002"),
            "fee {zero}: {e}"
        );
    }
    // Whole numbers up to u64 and short decimals are kept exactly.
    let (s, b) = post_raw(
        &app,
        "/api/v1/blocks",
        create_text("exact", "18446744073709551615", "0.05"),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let stored = app
        .get("/api/v1/blocks/height/1")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        stored.contains(r#""value":18446744073709551615,"fee":0.05,"#),
        "{stored}"
    );
    // Submit and validate read the amounts the same way.
    let block = app.get_json("/api/v1/blocks/height/1").await.1;
    let text = serde_json::to_string(&json!({"block_data": block}))
        .unwrap()
        .replace("18446744073709551615", "123456789012345678901234567890");
    let (s, e) = post_raw(&app, "/api/v1/blocks/validate", text.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(e["valid"], json!(false), "{e}");
    let inexact = e["errors"].as_array().unwrap().iter().any(|m| {
        m.as_str()
            .unwrap_or("")
            .contains("value 123456789012345678901234567890 cannot be stored exactly")
    });
    assert!(inexact, "{e}");
    let (s, e) = post_raw(&app, "/api/v1/blocks/submit", text).await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"), "{e}");
    app.stop().await;
}

/// The two children of the merkle root of `ids` (which must hold at least two), as hex.
fn root_children(ids: &[String]) -> (String, String) {
    let mut level: Vec<String> = ids
        .iter()
        .map(|id| block_manager::chain::hash::leaf_hash(id))
        .collect();
    while level.len() > 2 {
        level = level
            .chunks(2)
            .map(|pair| {
                let right = pair.get(1).unwrap_or(&pair[0]);
                block_manager::chain::hash::leaf_hash(&format!("{}{right}", pair[0]))
            })
            .collect();
    }
    (level[0].clone(), level[1].clone())
}

/// A complete block at height 1 on the test genesis.
fn block_at_1(producer: &str, tx_ids: &[String]) -> Value {
    let ts = "2024-01-01T00:00:10+00:00";
    let ids: Vec<&str> = tx_ids.iter().map(String::as_str).collect();
    let root = block_manager::chain::hash::merkle_root(&ids);
    let hash =
        block_manager::chain::hash::block_hash(1, GENESIS_HASH, ts, &root, producer, ids.len());
    let txs: Vec<Value> = ids
        .iter()
        .map(|id| json!({"tx_id": id, "type": "system", "from_address": "a", "to_address": "b", "value": 1, "fee": 0, "data": "", "signature": "s"}))
        .collect();
    json!({"height": 1, "previous_hash": GENESIS_HASH, "timestamp": ts, "merkle_root": root,
           "producer": producer, "signature": "block-sig", "transactions": txs, "hash": hash})
}

#[tokio::test]
async fn a_block_with_the_stored_hash_but_another_body_is_a_conflict_not_a_repeat() {
    let app = spawn_app(|_| {}).await;
    // A real collision of the separator-free preimage, both blocks fully valid: producer
    // "node" with 11 transactions and producer "node1" with 1 transaction whose id is the text
    // of the 11-transaction tree's two top children, so both merkle roots are the same
    // blake3(left + right) and both preimages end in "...node11".
    let eleven: Vec<String> = (0..11).map(|i| format!("c-{i}")).collect();
    let (left, right) = root_children(&eleven);
    let one = vec![format!("{left}{right}")];
    let a = block_at_1("node1", &one);
    let b = block_at_1("node", &eleven);
    assert_eq!(a["merkle_root"], b["merkle_root"]);
    assert_eq!(a["hash"], b["hash"], "the two blocks share a hash");
    for block in [&a, &b] {
        let (s, v) = app.post("/api/v1/blocks/validate", block).await;
        assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    }
    let (s, e) = app.post("/api/v1/blocks/submit", &a).await;
    assert_eq!(s, 201, "{e}");
    let (s, e) = app.post("/api/v1/blocks/submit", &b).await;
    assert_eq!((s, code_of(&e).as_str()), (409, "BM_007"), "{e}");
    // The realistic case: the same block with a field outside the preimage changed (an amount
    // or a signature changes neither the merkle root nor the hash).
    for (field, value) in [("value", json!(2)), ("signature", json!("other"))] {
        let mut c = a.clone();
        c["transactions"][0][field] = value;
        let (s, e) = app.post("/api/v1/blocks/submit", &c).await;
        assert_eq!((s, code_of(&e).as_str()), (409, "BM_007"), "{field}: {e}");
    }
    // The identical block is still a repeat.
    assert_eq!(app.post("/api/v1/blocks/submit", &a).await.0, 200);
    let stored = app.get_json("/api/v1/blocks/height/1").await.1;
    assert_eq!(stored["producer"], "node1");
    app.stop().await;
}

/// Every file under `dir`: name, bytes and modification time.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn offline_verify_reads_the_store_without_writing_a_byte() {
    if skip_on_postgres("the bytes compared are the embedded engine's store files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_process(dir.path(), &[]);
    for i in 0..3 {
        let body = create_body(&format!("ro{i}"), 2);
        assert_eq!(
            http_post(p.port, "/api/v1/blocks", &body).map(|r| r.0),
            Some(201)
        );
    }
    signal(&p, "TERM");
    assert_eq!(
        wait_exit(&mut p, std::time::Duration::from_secs(10)),
        Some(0)
    );
    let store = dir.path().join("data/blocks");
    let before = snapshot(&store);
    assert!(
        before.iter().any(|f| f.0 == "blocks.redb"),
        "{:?}",
        before.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let (code, report) = run_verify(dir.path(), &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("checked 4 blocks"), "{report}");
    let after = snapshot(&store);
    let names = |s: &[(String, Vec<u8>, std::time::SystemTime)]| {
        s.iter().map(|f| f.0.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&before),
        names(&after),
        "verify created or removed files"
    );
    for (b, a) in before.iter().zip(&after) {
        assert!(b.1 == a.1, "verify changed the bytes of {}", b.0);
        assert_eq!(b.2, a.2, "verify rewrote {}", b.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_through_short_pages() {
    let upstream = spawn_app(|c| {
        c.chain.max_block_size_bytes = 100_000;
        c.api.max_response_bytes = 200_000;
    })
    .await;
    for i in 0..8 {
        let (s, b) = upstream
            .post("/api/v1/blocks", &big_block(&format!("f{i}"), 60_000))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let base = upstream.base.clone();
    let app = spawn_app(move |c| {
        c.synchronization.engine_url = Some(base);
        c.synchronization.poll_interval_seconds = 0.05;
    })
    .await;
    let tip = upstream.get_json("/api/v1/chain/height").await.1;
    let theirs = tip["block_hash"].clone();
    eventually(
        std::time::Duration::from_secs(30),
        "the follower to reach height 8",
        || async {
            let (_, ours) = app.get_json("/api/v1/chain/height").await;
            (ours["height"] == 8 && ours["block_hash"] == theirs).then_some(())
        },
    )
    .await;
    assert!(truncated_count(&upstream, "/api/v1/blocks/range").await > 0);
    app.stop().await;
    upstream.stop().await;
}
