//! The block API end to end over HTTP: every route, happy and unhappy, in the one error shape.

mod common;
use common::*;
use serde_json::{Value, json};

fn vectors() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Asserts the Lucid error shape and returns the code.
fn code_of(body: &Value) -> String {
    let d = &body["detail"];
    assert!(
        d["error"].is_string() && d["severity"].is_string() && d["additional_info"].is_object(),
        "not the error shape: {body}"
    );
    d["error_code"].as_str().expect("error_code").to_string()
}

#[tokio::test]
async fn single_block_routes_serve_the_lucid_block_details() {
    let app = spawn_app(|_| {}).await;
    let vector = vectors()["chain"]["block"].clone();
    let (s, created) = app.post("/api/v1/blocks/submit", &vector).await;
    assert_eq!(s, 201, "{created}");
    let hash = "413d5b8c7dd71cbca797bab1652a1d1da9ec4b018bff440d7827bf5e3edb5dcd";
    for path in [
        "/api/v1/blocks/latest",
        "/api/v1/blocks/height/1",
        "/api/v1/blocks/1",
        &format!("/api/v1/blocks/{hash}"),
    ] {
        let (s, b) = app.get_json(path).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(b["block_id"], hash);
        assert_eq!(b["hash"], hash);
        assert_eq!(b["height"], 1);
        assert_eq!(b["previous_hash"], GENESIS_HASH);
        assert_eq!(b["merkle_root"], vector["merkle_root"]);
        assert_eq!(b["timestamp"], "2024-01-01T00:00:10.500000+00:00");
        assert_eq!(b["validator"], "node-1");
        assert_eq!(b["producer"], "node-1");
        assert_eq!(b["nonce"], 0);
        assert_eq!(b["difficulty"], 0.0);
        assert_eq!(b["transaction_count"], 2);
        assert!(b["block_size_bytes"].as_u64().unwrap() > 500);
        let tx = &b["transactions"][0];
        for f in ["tx_id", "type", "size_bytes", "fee", "timestamp"] {
            assert!(!tx[f].is_null(), "{f}");
        }
        assert_eq!(tx["value"], json!(0));
        assert_eq!(tx["fee"], json!(0.1));
    }
    let (s, tx) = app.get_json("/api/v1/transactions/store-19bc").await;
    assert_eq!(s, 200);
    assert_eq!(tx["block_height"], 1);
    assert_eq!(tx["block_hash"], hash);
    assert_eq!(tx["value"], 25);
    let (s, h) = app.get_json("/api/v1/chain/height").await;
    assert_eq!(s, 200);
    assert_eq!(
        h,
        json!({"height": 1, "block_hash": hash, "timestamp": "2024-01-01T00:00:10.500000+00:00", "transaction_count": 2, "block_size": h["block_size"], "validator": "node-1"})
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_bad_heights_answer_404_or_400_in_the_error_shape() {
    let app = spawn_app(|_| {}).await;
    let cases: &[(&str, u16, &str)] = &[
        ("/api/v1/blocks/height/99", 404, "BM_001"),
        ("/api/v1/blocks/99", 404, "BM_001"),
        ("/api/v1/blocks/height/18446744073709551615", 404, "BM_001"),
        ("/api/v1/blocks/height/18446744073709551616", 404, "BM_001"),
        ("/api/v1/blocks/height/-1", 400, "REQ_001"),
        ("/api/v1/blocks/height/abc", 400, "REQ_001"),
        ("/api/v1/blocks/-1", 400, "REQ_001"),
        ("/api/v1/blocks/zz", 400, "REQ_001"),
        (&format!("/api/v1/blocks/{}", "a".repeat(64)), 404, "BM_001"),
        ("/api/v1/transactions/nope", 404, "TX_001"),
        ("/api/v1/nothing/here", 404, "REQ_005"),
    ];
    for (path, status, code) in cases {
        let (s, b) = app.get_json(path).await;
        assert_eq!((s, code_of(&b).as_str()), (*status, *code), "{path}: {b}");
    }
    let (_, b) = app.get_json("/api/v1/blocks/99").await;
    assert_eq!(
        b,
        json!({"detail": {"error": "Block not found: 99", "error_code": "BM_001", "severity": "error", "additional_info": {"block_id": "99"}}})
    );
    app.stop().await;
}

#[tokio::test]
async fn list_paginates_filters_and_sorts_with_total_of_the_filtered_set() {
    let app = spawn_app(|_| {}).await;
    for i in 0..7 {
        app.create_block(&format!("l{i}"), 1).await;
    }
    let (s, b) = app
        .get_json("/api/v1/blocks?page=1&limit=3&sort=height_asc")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["pagination"],
        json!({"page": 1, "limit": 3, "total": 8, "pages": 3})
    );
    let heights: Vec<u64> = b["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["height"].as_u64().unwrap())
        .collect();
    assert_eq!(heights, [0, 1, 2]);
    let summary = &b["blocks"][1];
    for f in [
        "block_id",
        "height",
        "hash",
        "previous_hash",
        "timestamp",
        "transaction_count",
        "block_size_bytes",
        "validator",
        "producer",
    ] {
        assert!(!summary[f].is_null(), "{f}");
    }
    let (_, b) = app
        .get_json("/api/v1/blocks/?page=3&limit=3&sort=height_asc")
        .await;
    assert_eq!(b["blocks"].as_array().unwrap().len(), 2);
    let (_, b) = app
        .get_json("/api/v1/blocks?height_from=2&height_to=5&limit=2")
        .await;
    assert_eq!(
        b["pagination"],
        json!({"page": 1, "limit": 2, "total": 4, "pages": 2})
    );
    assert_eq!(b["blocks"][0]["height"], 5, "default sort is newest first");
    let (_, b) = app
        .get_json("/api/v1/blocks?sort=timestamp_desc&limit=100")
        .await;
    let ts: Vec<String> = b["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["timestamp"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = ts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ts, sorted);
    let (_, b) = app.get_json("/api/v1/blocks?page=50").await;
    assert_eq!(b["blocks"], json!([]));
    assert_eq!(b["pagination"]["total"], 8);
    for q in [
        "limit=0",
        "limit=101",
        "page=0",
        "sort=height",
        "sort=random_asc",
        "height_from=-1",
        "height_from=5&height_to=2",
        "limit=abc",
    ] {
        let (s, b) = app.get_json(&format!("/api/v1/blocks?{q}")).await;
        assert_eq!((s, code_of(&b).as_str()), (400, "REQ_001"), "{q}");
    }
    app.stop().await;
}

#[tokio::test]
async fn range_and_headers_serve_ascending_with_bounds() {
    let app = spawn_app(|_| {}).await;
    for i in 0..5 {
        app.create_block(&format!("r{i}"), 2).await;
    }
    let (s, b) = app.get_json("/api/v1/blocks/range?from=2&limit=2").await;
    assert_eq!(s, 200);
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0]["height"].as_u64(), blocks[1]["height"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(blocks[0]["transactions"].as_array().unwrap().len(), 2);
    let (_, b) = app.get_json("/api/v1/blocks/range?from=100").await;
    assert_eq!(b["blocks"], json!([]));
    let (s, b) = app
        .get_json("/api/v1/blocks/headers?from=0&limit=2000")
        .await;
    assert_eq!(s, 200);
    let headers = b["headers"].as_array().unwrap();
    assert_eq!(headers.len(), 6);
    assert_eq!(headers[1]["previous_hash"], headers[0]["hash"]);
    for f in [
        "height",
        "hash",
        "previous_hash",
        "merkle_root",
        "timestamp",
        "producer",
        "transaction_count",
    ] {
        assert!(!headers[3][f].is_null(), "{f}");
    }
    for q in [
        "/api/v1/blocks/range?limit=1001",
        "/api/v1/blocks/range?limit=0",
        "/api/v1/blocks/range?from=-3",
        "/api/v1/blocks/headers?limit=2001",
    ] {
        let (s, b) = app.get_json(q).await;
        assert_eq!((s, code_of(&b).as_str()), (400, "REQ_001"), "{q}");
    }
    app.stop().await;
}

#[tokio::test]
async fn create_answers_201_with_location_and_links_to_the_tip() {
    let app = spawn_app(|_| {}).await;
    let res = app
        .client
        .post(app.url("/api/v1/blocks"))
        .header("X-API-Key", WRITE_KEY)
        .json(&create_body("c", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let b: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/blocks/{}", b["hash"].as_str().unwrap())
    );
    assert_eq!(b["height"], 1);
    assert_eq!(b["previous_hash"], GENESIS_HASH);
    assert_eq!(b["transaction_count"], 3);
    let (s, again) = app.get_json(&location).await;
    assert_eq!(s, 200);
    assert_eq!(again, b);
    // Repeating a transaction id is refused with every failure listed.
    let (s, e) = app.post("/api/v1/blocks", &create_body("c", 1)).await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"));
    assert_eq!(
        e["detail"]["additional_info"]["error_codes"],
        json!(["VAL_004"])
    );
    let (s, e) = app
        .post(
            "/api/v1/blocks",
            &json!({"transactions": [{"tx_id": "x"}], "producer": "p", "signature": "s"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        e["detail"]["additional_info"]["errors"]
            .as_array()
            .unwrap()
            .len()
            >= 3,
        "{e}"
    );
    let (s, e) = app
        .post(
            "/api/v1/blocks",
            &json!({"transactions": [], "producer": "p"}),
        )
        .await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"));
    app.stop().await;
}

/// Spec §13: a create retried after its answer was lost (a timeout, a connection cut during
/// the commit) is safe: the same transactions get the stored block, 200, and nothing is
/// stored twice. A create that shares only some of them, or changes one, is still refused.
#[tokio::test]
async fn a_retried_create_answers_200_with_the_block_it_stored() {
    let app = spawn_app(|_| {}).await;
    let body = create_body("retry", 3);
    let send = || {
        app.client
            .post(app.url("/api/v1/blocks"))
            .header("X-API-Key", WRITE_KEY)
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let stored: Value = first.json().await.unwrap();
    // Later than the first attempt: the transactions given no time carry a new one, which
    // must not make the retry a different request.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for _ in 0..2 {
        let again = send().await.unwrap();
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["location"], location);
        assert_eq!(again.json::<Value>().await.unwrap(), stored);
    }
    let (_, height) = app.get_json("/api/v1/chain/height").await;
    assert_eq!(height["height"], 1, "{height}");
    // The same ids with one value changed: not a retry.
    let mut changed = body.clone();
    changed["transactions"][1]["value"] = json!(7);
    let (s, e) = app.post("/api/v1/blocks", &changed).await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"), "{e}");
    // A subset, or the same set in another order: not a retry either.
    let mut fewer = body.clone();
    fewer["transactions"].as_array_mut().unwrap().pop();
    assert_eq!(app.post("/api/v1/blocks", &fewer).await.0, 422);
    let mut reordered = body.clone();
    reordered["transactions"].as_array_mut().unwrap().swap(0, 2);
    assert_eq!(app.post("/api/v1/blocks", &reordered).await.0, 422);
    let (_, height) = app.get_json("/api/v1/chain/height").await;
    assert_eq!(height["height"], 1, "{height}");
    app.stop().await;
}

#[tokio::test]
async fn submit_stores_repeats_conflicts_and_rejects_with_quarantine() {
    let app = spawn_app(|_| {}).await;
    let block = vectors()["chain"]["block"].clone();
    assert_eq!(
        app.post("/api/v1/blocks/submit", &json!({"block_data": block}))
            .await
            .0,
        201
    );
    assert_eq!(
        app.post("/api/v1/blocks/submit", &block).await.0,
        200,
        "identical block already stored"
    );
    // A different block at the same height.
    let mut other = block.clone();
    other["producer"] = json!("node-2");
    let (s, e) = app.post("/api/v1/blocks/submit", &other).await;
    assert_eq!((s, code_of(&e).as_str()), (409, "BM_007"), "{e}");
    // An invalid block: wrong root → both failures, quarantined, nothing stored.
    let mut bad = block.clone();
    bad["height"] = json!(2);
    bad["previous_hash"] =
        json!("413d5b8c7dd71cbca797bab1652a1d1da9ec4b018bff440d7827bf5e3edb5dcd");
    bad["merkle_root"] = json!("f".repeat(64));
    bad["transactions"] = json!([{"tx_id": "new-1", "from_address": "a", "to_address": "b", "value": 1, "signature": "s"}]);
    let (s, e) = app.post("/api/v1/blocks/submit", &bad).await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"), "{e}");
    assert_eq!(
        e["detail"]["additional_info"]["error_codes"],
        json!(["VAL_003", "BM_006"])
    );
    let filed = quarantine_entries(app.dir.path(), database_for(app.dir.path()).as_deref());
    assert_eq!(filed.len(), 1);
    assert_eq!(app.get_json("/api/v1/chain/height").await.1["height"], 1);
    let (s, e) = app
        .post("/api/v1/blocks/submit", &json!({"height": -1}))
        .await;
    assert_eq!((s, code_of(&e).as_str()), (422, "BM_002"));
    app.stop().await;
}

#[tokio::test]
async fn validate_reports_flags_from_codes_and_changes_nothing() {
    let app = spawn_app(|_| {}).await;
    let mut block = vectors()["chain"]["block"].clone();
    let (s, v) = app
        .post("/api/v1/blocks/validate", &json!({"block_data": block}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["valid"], true, "{v}");
    block["merkle_root"] = json!("0".repeat(63) + "1");
    let (s, v) = app.post("/api/v1/blocks/validate", &block).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"valid": false,
               "validation_results": {"structure_valid": true, "integrity_valid": false, "signature_valid": true,
                                      "merkle_root_valid": false, "timestamp_valid": true, "transactions_valid": true},
               "errors": ["Merkle root mismatch", "Block hash mismatch"], "error_codes": ["VAL_003", "BM_006"], "warnings": []})
    );
    assert_eq!(
        app.get_json("/api/v1/chain/height").await.1["height"],
        0,
        "validate stores nothing"
    );
    // A block that does not parse still gets every failure that can be found, and the checks
    // that could not run are not reported as passed.
    let (_, v) = app
        .post(
            "/api/v1/blocks/validate",
            &json!({"height": 1, "timestamp": "yesterday"}),
        )
        .await;
    let codes = v["error_codes"].as_array().unwrap();
    assert!(
        codes.contains(&json!("VAL_002"))
            && codes.contains(&json!("BM_006"))
            && codes.contains(&json!("VAL_005")),
        "{v}"
    );
    assert_eq!(v["validation_results"]["integrity_valid"], false);
    assert_eq!(v["validation_results"]["merkle_root_valid"], false);
    // Validation is a read: no key needed.
    let res = app
        .client
        .post(app.url("/api/v1/blocks/validate"))
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_configured_body_limit_holds_on_every_route_that_reads_a_body() {
    let app = spawn_app(|c| c.api.max_body_bytes = 4096).await;
    // JSON, so the size is the only thing wrong with the large ones.
    let body = |len: usize| {
        let mut b = b"{\"pad\":\"".to_vec();
        b.resize(len - 2, b'x');
        b.extend_from_slice(b"\"}");
        b
    };
    for path in [
        "/api/v1/blocks",
        "/api/v1/blocks/submit",
        "/api/v1/blocks/validate",
        "/api/v1/chain/verify",
    ] {
        let post = |len| {
            app.client
                .post(app.url(path))
                .header("X-API-Key", WRITE_KEY)
                .header("content-type", "application/json")
                .body(body(len))
                .send()
        };
        let res = post(4097).await.unwrap();
        assert_eq!(res.status(), 413, "{path}");
        assert_eq!(code_of(&res.json().await.unwrap()), "REQ_003", "{path}");
        let res = post(4096).await.unwrap();
        assert_ne!(res.status(), 413, "{path}: a body at the limit is read");
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused() {
    let app = spawn_app(|_| {}).await;
    let post = |body: Vec<u8>, ct: &'static str| {
        app.client
            .post(app.url("/api/v1/blocks"))
            .header("X-API-Key", WRITE_KEY)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = post(b"{not json".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(code_of(&res.json().await.unwrap()), "REQ_001");
    let res = post(b"{}".to_vec(), "text/plain").await.unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(code_of(&res.json().await.unwrap()), "REQ_002");
    let big = vec![b' '; 2 * 1024 * 1024 + 10];
    let res = post(big, "application/json").await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(code_of(&res.json().await.unwrap()), "REQ_003");
    let res = post(b"[1,2]".to_vec(), "application/json").await.unwrap();
    assert_eq!(res.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let app = spawn_app(|_| {}).await;
    let res = app
        .client
        .delete(app.url("/api/v1/blocks/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.headers()["allow"].to_str().unwrap().contains("GET"));
    assert_eq!(code_of(&res.json().await.unwrap()), "REQ_004");
    let res = app
        .client
        .put(app.url("/api/v1/blocks"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    app.stop().await;
}

#[tokio::test]
async fn write_keys_are_required_and_checked() {
    let app = spawn_app(|_| {}).await;
    let url = app.url("/api/v1/blocks");
    let body = create_body("k", 1);
    let res = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(code_of(&res.json().await.unwrap()), "AUTH_001");
    let res = app
        .client
        .post(&url)
        .header("X-API-Key", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(code_of(&res.json().await.unwrap()), "AUTH_002");
    let res = app
        .client
        .post(&url)
        .header("X-API-Key", READ_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(code_of(&res.json().await.unwrap()), "AUTH_003");
    let res = app
        .client
        .post(&url)
        .bearer_auth(WRITE_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    app.stop().await;

    let app = spawn_app(|c| c.security.api_key = Default::default()).await;
    let res = app
        .client
        .post(app.url("/api/v1/blocks"))
        .header("X-API-Key", "anything")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let e: Value = res.json().await.unwrap();
    assert_eq!(code_of(&e), "AUTH_004");
    assert!(
        e["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("BLOCK_MANAGER_API_KEY")
    );
    app.stop().await;
}

#[tokio::test]
async fn reads_can_require_a_key() {
    let app = spawn_app(|c| c.security.require_read_auth = true).await;
    let (s, e) = app.get_json("/api/v1/blocks/latest").await;
    assert_eq!((s, code_of(&e).as_str()), (401, "AUTH_001"));
    for key in [READ_KEY, WRITE_KEY] {
        let res = app
            .client
            .get(app.url("/api/v1/blocks/latest"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "health stays public"
    );
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_exempts_health_and_metrics() {
    let app = spawn_app(|c| c.rate_limits.requests = 5).await;
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/chain/height").await.status(), 200);
    }
    let res = app.get("/api/v1/chain/height").await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(code_of(&res.json().await.unwrap()), "RATE_001");
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/api/v1/health",
    ] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn follower_refuses_local_writes_with_409() {
    let app = spawn_app(|c| {
        c.synchronization.engine_url = Some(format!("http://127.0.0.1:{}", free_port()))
    })
    .await;
    let (s, e) = app.post("/api/v1/blocks", &create_body("f", 1)).await;
    assert_eq!((s, code_of(&e).as_str()), (409, "SYNC_006"));
    let (s, e) = app
        .post("/api/v1/blocks/submit", &vectors()["chain"]["block"])
        .await;
    assert_eq!((s, code_of(&e).as_str()), (409, "SYNC_006"));
    assert_eq!(
        app.get("/api/v1/blocks/height/0").await.status(),
        404,
        "a follower makes no local genesis"
    );
    app.stop().await;
}

#[tokio::test]
async fn deep_blocks_are_cacheable_and_if_none_match_answers_304() {
    let app = spawn_app(|c| c.synchronization.max_reorg_depth = 2).await;
    for i in 0..4 {
        app.create_block(&format!("e{i}"), 1).await;
    }
    let res = app.get("/api/v1/blocks/height/0").await;
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{GENESIS_HASH}\""));
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let res = app.get("/api/v1/blocks/latest").await;
    assert!(
        !res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let res = app
        .client
        .get(app.url("/api/v1/blocks/height/0"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = app
        .client
        .get(app.url("/api/v1/blocks/height/0"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    app.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_config() {
    let app = spawn_app(|_| {}).await;
    let res = app
        .client
        .get(app.url("/api/v1/chain/height"))
        .header("origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
    let app = spawn_app(|c| c.cors.allowed_origins = vec!["http://ui.example".into()]).await;
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/blocks"))
        .header("origin", "http://ui.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_accepted_and_returned() {
    let app = spawn_app(|_| {}).await;
    let res = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.get("/nope").await;
    assert!(!res.headers()["x-request-id"].to_str().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn chain_info_status_and_verify_describe_the_chain() {
    let app = spawn_app(|_| {}).await;
    app.create_block("i", 2).await;
    let (s, info) = app.get_json("/api/v1/chain/info").await;
    assert_eq!(s, 200);
    assert_eq!(info["network"], "lucid_blocks");
    assert_eq!(info["consensus"], "PoOT");
    assert_eq!(info["genesis_hash"], GENESIS_HASH);
    assert_eq!(info["height"], 1);
    assert_eq!(info["total_blocks"], 2);
    assert_eq!(info["total_transactions"], 3);
    let (s, st) = app.get_json("/api/v1/chain/status").await;
    assert_eq!(s, 200);
    assert_eq!(st["height"], 1);
    assert_eq!(st["mode"], "standalone");
    let (s, v) = app.post("/api/v1/chain/verify", &json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["is_valid"].as_bool(), v["blocks_checked"].as_u64()),
        (Some(true), Some(2))
    );
    let (s, v) = app
        .post(
            "/api/v1/chain/verify",
            &json!({"start_height": 1, "end_height": 1}),
        )
        .await;
    assert_eq!((s, v["blocks_checked"].as_u64()), (200, Some(1)));
    let (s, e) = app
        .post(
            "/api/v1/chain/verify",
            &json!({"start_height": 2, "end_height": 1}),
        )
        .await;
    assert_eq!((s, code_of(&e).as_str()), (400, "REQ_001"));
    let res = app
        .client
        .post(app.url("/api/v1/chain/verify"))
        .header("X-API-Key", WRITE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no body checks everything");
    let (s, sync) = app.get_json("/api/v1/sync/status").await;
    assert_eq!((s, sync["state"].as_str()), (200, Some("disabled")));
    let (s, e) = app.post("/api/v1/sync", &json!({})).await;
    assert_eq!((s, code_of(&e).as_str()), (409, "SYNC_001"));
    app.stop().await;
}

#[tokio::test]
async fn health_reports_checks_and_readiness() {
    let app = spawn_app(|_| {}).await;
    for path in ["/health", "/api/v1/health"] {
        let (s, h) = app.get_json(path).await;
        assert_eq!(s, 200);
        assert_eq!(h["status"], "healthy");
        assert_eq!(h["service"], "block-manager");
        assert!(h["version"].is_string() && h["uptime_seconds"].is_number());
        assert_eq!(h["checks"]["store"]["status"], "healthy");
        assert_eq!(h["checks"]["store"]["height"], 0);
    }
    assert_eq!(
        app.get_json("/health/live").await,
        (200, json!({"status": "alive"}))
    );
    assert_eq!(
        app.get_json("/health/ready").await,
        (200, json!({"status": "ready"}))
    );
    app.stop().await;
}

#[tokio::test]
async fn health_is_degraded_but_200_when_the_data_volume_is_low_on_space() {
    if skip_on_postgres("the free space checked is the embedded engine's data volume") {
        return;
    }
    let app = spawn_app(|c| c.storage.min_free_bytes = u64::MAX).await;
    let (s, h) = app.get_json("/health").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    let store = &h["checks"]["store"];
    assert_eq!(store["status"], "degraded", "{h}");
    assert!(
        store["message"]
            .as_str()
            .is_some_and(|m| m.contains("bytes free (minimum")),
        "{h}"
    );
    assert!(store["disk_free_bytes"].as_u64().is_some(), "{h}");
    // Readiness is about serving, not about free space
    assert_eq!(app.get_json("/health/ready").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn slow_request_times_out_with_408() {
    let app = spawn_app(|c| c.api.request_timeout_seconds = 0.3).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(format!("POST /api/v1/blocks HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("REQ_006"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_block_above_the_finality_floor_has_an_etag_of_its_bytes_and_304s_only_for_them() {
    let app = spawn_app(|c| c.synchronization.max_reorg_depth = 2).await;
    for i in 0..4 {
        app.create_block(&format!("f{i}"), 1).await;
    }
    // Tip 4, depth 2: heights 0 and 1 are final, 2 to 4 may still be replaced by a fork.
    let res = app.get("/api/v1/blocks/height/3").await;
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
    let body = res.bytes().await.unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let digest = blake3::hash(&body).to_hex();
    assert_eq!(etag, format!("\"b3-{}\"", &digest[..32]));
    assert!(!cache.contains("immutable"), "{cache}");
    let with = |tag: String| {
        app.client
            .get(app.url("/api/v1/blocks/height/3"))
            .header("if-none-match", tag)
            .send()
    };
    assert_eq!(with(etag.clone()).await.unwrap().status(), 304);
    // The block hash names the block, not the bytes: it never confirms a cached copy here.
    let by_hash = format!("\"{}\"", doc["hash"].as_str().unwrap());
    assert_eq!(with(by_hash).await.unwrap().status(), 200);

    // At or below the floor the ETag stays the block hash, with the long Cache-Control.
    let res = app.get("/api/v1/blocks/height/1").await;
    let doc: Value = serde_json::from_slice(
        &app.get("/api/v1/blocks/height/1")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", doc["hash"].as_str().unwrap())
    );
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    app.stop().await;
}

#[tokio::test]
async fn health_names_the_environment_and_platform_of_the_deployment() {
    let app = spawn_app(|c| {
        c.service.environment = "staging".into();
        c.service.platform = "amd64".into();
    })
    .await;
    let (code, body) = app.get_json("/health").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["environment"], "staging", "{body}");
    assert_eq!(body["platform"], "amd64", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn health_names_the_replica_that_answered() {
    let app = spawn_app(|c| c.service.instance_id = Some("replica-b".into())).await;
    let (code, body) = app.get_json("/health").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["instance_id"], "replica-b", "{body}");
    app.stop().await;
    // Unset: the host name, which differs per container
    let app = spawn_app(|_| {}).await;
    let (_, body) = app.get_json("/health").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    assert_eq!(body["instance_id"], host.trim(), "{body}");
    app.stop().await;
}
