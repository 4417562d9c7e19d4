//! Follower sync end to end: real upstreams on 127.0.0.1:0 — a standalone block-manager, or a
//! fault-injecting stand-in — and followers that must end in the state the spec gives, never
//! store an invalid block, and recover by themselves when the upstream heals.

#[path = "sync/chains.rs"]
mod chains;
mod common;
#[path = "sync/hostile.rs"]
mod hostile;
#[path = "sync/standin.rs"]
mod standin;

use block_manager::chain::Block;
use block_manager::config::{Config, Secret};
use common::*;
use serde_json::{Value, json};
use standin::{Fault, StandIn};
use std::time::{Duration, Instant};

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// Short timeouts, polls and recovery so every fault plays out in well under a second.
fn fast_follower(c: &mut Config, upstream: &str) {
    c.synchronization.engine_url = Some(upstream.to_string());
    c.synchronization.poll_interval_seconds = 0.05;
    c.synchronization.sync_timeout_seconds = 0.4;
    c.error_handling.retry.max_retries = 1;
    c.error_handling.retry.retry_delay_seconds = 0.02;
    c.error_handling.retry.max_backoff_seconds = 0.1;
    c.error_handling.retry.backoff_multiplier = 2.0;
    let breaker = &mut c.error_handling.blockchain_engine.circuit_breaker;
    breaker.failure_threshold = 1000;
    breaker.recovery_timeout_seconds = 0.3;
    breaker.half_open_max_calls = 1;
}

async fn follower(upstream: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let upstream = upstream.to_string();
    spawn_app(move |c| {
        fast_follower(c, &upstream);
        tweak(c);
    })
    .await
}

/// A node the helpers can talk to: an in-process app or a child process.
trait Node {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;
}

impl Node for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A child-process node, reached on its port.
struct Remote {
    base: String,
    client: reqwest::Client,
}

impl Node for Remote {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

async fn get_json(node: &impl Node, path: &str) -> (u16, Value) {
    let res = node
        .http()
        .get(format!("{}{path}", node.base()))
        .send()
        .await
        .expect("GET answered");
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

async fn status(node: &impl Node) -> Value {
    let (code, body) = get_json(node, "/api/v1/sync/status").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Waits until the follower reports `state` (and, if given, `local_height`).
async fn reaches(node: &impl Node, state: &str, height: Option<u64>) -> Value {
    let what = format!("sync state {state} at height {height:?}");
    let mut last = Value::Null;
    let found = tokio::time::timeout(LIMIT, async {
        loop {
            let s = status(node).await;
            if s["state"] == state && height.is_none_or(|h| s["local_height"] == h) {
                return s;
            }
            last = s;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; last status: {last}"))
}

/// Every hash from 0 to the tip, read through `/blocks/headers` pages.
async fn hashes(node: &impl Node) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let path = format!("/api/v1/blocks/headers?from={}&limit=2000", out.len());
        let (code, body) = get_json(node, &path).await;
        assert_eq!(code, 200, "{body}");
        let page = body["headers"].as_array().expect("headers").clone();
        if page.is_empty() {
            return out;
        }
        for h in page {
            assert_eq!(h["height"], out.len() as u64);
            out.push(h["hash"].as_str().expect("hash").to_string());
        }
    }
}

fn hashes_of(chain: &[Block]) -> Vec<String> {
    chain.iter().map(|b| b.hash.clone()).collect()
}

/// The online integrity check of the whole stored chain.
async fn verifies(node: &impl Node) -> bool {
    let res = node
        .http()
        .post(format!("{}/api/v1/chain/verify", node.base()))
        .header("X-API-Key", WRITE_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("verify answered");
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.expect("verify JSON");
    assert_eq!(body["error_count"], 0, "{body}");
    body["is_valid"] == true
}

async fn metric(node: &impl Node, name: &str) -> f64 {
    let text = node
        .http()
        .get(format!("{}/metrics", node.base()))
        .send()
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn health_check(node: &impl Node) -> Value {
    let (code, body) = get_json(node, "/health").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn quarantined(app: &TestApp, reason: &str) -> Vec<Value> {
    quarantine_entries(app.dir.path(), database_for(app.dir.path()).as_deref())
        .into_iter()
        .filter(|d| d["reason"].as_str().is_some_and(|r| r.contains(reason)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_copies_a_standalone_node_and_keeps_following_it() {
    let upstream = spawn_app(|_| {}).await;
    for i in 0..5 {
        upstream.create_block(&format!("first-{i}"), 2).await;
    }
    let app = follower(&upstream.base, |_| {}).await;
    let s = reaches(&app, "synced", Some(5)).await;
    assert_eq!(s["upstream_height"], 5);
    assert_eq!(s["lag"], 0);
    assert_eq!(s["blocks_synced"], 6, "genesis comes from upstream too");
    assert_eq!(s["circuit"]["state"], "closed");
    assert!(
        s["last_success"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00"))
    );
    assert!(s["last_error"].is_null());

    for i in 0..3 {
        upstream.create_block(&format!("later-{i}"), 1).await;
    }
    reaches(&app, "synced", Some(8)).await;
    assert_eq!(hashes(&app).await, hashes(&upstream).await);
    assert!(verifies(&app).await);

    let (code, body) = app.post("/api/v1/blocks", &create_body("local", 1)).await;
    assert_eq!(code, 409, "a follower refuses local writes: {body}");
    let (_, chain_status) = get_json(&app, "/api/v1/chain/status").await;
    assert_eq!(chain_status["sync"]["state"], "synced");
    assert_eq!(chain_status["sync"]["lag"], 0);
    let health = health_check(&app).await;
    assert_eq!(health["checks"]["sync"]["status"], "healthy");
    assert_eq!(metric(&app, "block_manager_sync_lag_blocks").await, 0.0);
    assert_eq!(
        metric(&app, "block_manager_sync_state{state=\"synced\"}").await,
        1.0
    );
    app.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_ten_thousand_blocks_and_both_chains_verify_with_equal_hashes() {
    let blocks = chains::chain(10_000, "bulk");
    let dir = tempfile::tempdir().unwrap();
    chains::seed(dir.path(), &blocks).await;
    let upstream = spawn_app_in(dir, |_| {}).await;
    let started = Instant::now();
    let app = follower(&upstream.base, |c| c.synchronization.fetch_batch_size = 500).await;
    let s = reaches(&app, "synced", Some(10_000)).await;
    eprintln!(
        "caught up 10,000 blocks in {:.2} s (debug build)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(s["blocks_synced"], 10_001);
    // Known defect on the postgres engine: verify asks the store ~6 questions per block, each a
    // database round trip, so 10,001 blocks take ~55 s there, past the 30 s request timeout
    // (408). The equal hashes below still prove the copy.
    if !on_postgres() {
        assert!(verifies(&upstream).await);
        assert!(verifies(&app).await);
    }
    let ours = hashes(&app).await;
    assert_eq!(ours.len(), 10_001);
    assert_eq!(ours, hashes(&upstream).await);
    assert_eq!(ours, hashes_of(&blocks));
    app.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sync_runs_a_round_at_once_and_answers_the_new_status() {
    let upstream = spawn_app(|_| {}).await;
    let app = follower(&upstream.base, |c| {
        c.synchronization.poll_interval_seconds = 3600.0;
    })
    .await;
    reaches(&app, "synced", Some(0)).await;
    upstream.create_block("one", 1).await;
    upstream.create_block("two", 1).await;
    let (code, body) = app.post("/api/v1/sync", &json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "synced", "{body}");
    assert_eq!(body["local_height"], 2, "{body}");
    assert_eq!(body["upstream_height"], 2);
    app.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_opens_the_circuit_and_the_follower_recovers_when_it_returns() {
    let chain = chains::chain(4, "a");
    let mut up = StandIn::start(&chain).await;
    up.down().await;
    let app = follower(&up.url(), |c| {
        c.error_handling
            .blockchain_engine
            .circuit_breaker
            .failure_threshold = 3;
    })
    .await;
    let s = reaches(&app, "circuit_open", None).await;
    assert_eq!(s["last_error"]["code"], "SYNC_002", "{s}");
    // A trial call may be under way: the breaker is open or half-open, never closed.
    assert_ne!(s["circuit"]["state"], "closed", "{s}");
    assert!(s["circuit"]["consecutive_failures"].as_u64() >= Some(3));
    assert!(
        s["local_height"].is_null(),
        "a follower makes no genesis of its own"
    );
    assert!(metric(&app, "block_manager_sync_circuit_state").await >= 1.0);
    assert!(metric(&app, "block_manager_sync_errors_total{code=\"SYNC_002\"}").await >= 3.0);
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["sync"]["status"], "degraded");
    assert_eq!(health["checks"]["sync"]["last_error"]["code"], "SYNC_002");
    assert!(
        health["checks"]["sync"]["state"] == "circuit_open"
            || health["checks"]["sync"]["state"] == "stalled"
    );
    let (code, _) = app.get_json("/health/ready").await;
    assert_eq!(
        code, 200,
        "a failing upstream does not make the node unready"
    );

    up.up().await;
    let s = reaches(&app, "synced", Some(4)).await;
    assert_eq!(s["circuit"]["state"], "closed");
    assert_eq!(s["circuit"]["consecutive_failures"], 0);
    assert_eq!(hashes(&app).await, hashes_of(&chain));
    assert_eq!(metric(&app, "block_manager_sync_circuit_state").await, 0.0);
    app.stop().await;
}

#[tokio::test]
async fn upstream_slower_than_the_timeout_stalls_with_sync_005_while_reads_are_served() {
    let mut chain = chains::chain(3, "a");
    let up = StandIn::start(&chain).await;
    let app = follower(&up.url(), |_| {}).await;
    reaches(&app, "synced", Some(3)).await;

    chains::grow(&mut chain, 2, "a", 2);
    up.chain(&chain);
    up.fault(Fault::Slow(Duration::from_secs(2)));
    let s = reaches(&app, "stalled", None).await;
    assert_eq!(s["last_error"]["code"], "SYNC_005", "{s}");
    let started = Instant::now();
    let (code, block) = app.get_json("/api/v1/blocks/latest").await;
    assert_eq!((code, block["height"].clone()), (200, json!(3)));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "reads are not held up by a sync waiting on a 2 s upstream"
    );
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded");

    up.fault(Fault::None);
    reaches(&app, "synced", Some(5)).await;
    assert_eq!(hashes(&app).await, hashes_of(&chain));
    app.stop().await;
}

#[tokio::test]
async fn upstream_server_errors_stall_with_sync_002_and_sync_recovers() {
    let mut chain = chains::chain(2, "a");
    let up = StandIn::start(&chain).await;
    up.fault(Fault::ServerError);
    let app = follower(&up.url(), |_| {}).await;
    let s = reaches(&app, "stalled", None).await;
    assert_eq!(s["last_error"]["code"], "SYNC_002", "{s}");
    assert!(
        s["last_error"]["message"].as_str().unwrap().contains("500"),
        "{s}"
    );
    assert!(
        s["last_error"]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00"))
    );
    // Nothing is stored from an upstream that answers 5xx, and health says so.
    assert!(s["local_height"].is_null(), "{s}");
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["checks"]["sync"]["status"], "degraded", "{health}");
    chains::grow(&mut chain, 3, "a", 1);
    up.chain(&chain);
    up.fault(Fault::None);
    let s = reaches(&app, "synced", Some(5)).await;
    assert_eq!(
        s["last_error"]["code"], "SYNC_002",
        "the last error stays on record"
    );
    // Health results are cached for a second: the degraded one above may still be served.
    eventually(LIMIT, "health to clear the sync error", || async {
        health_check(&app).await["checks"]["sync"]["last_error"]
            .is_null()
            .then_some(())
    })
    .await;
    assert_eq!(hashes(&app).await, hashes_of(&chain));
    assert!(verifies(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn malformed_upstream_json_stalls_with_sync_001_and_sync_recovers() {
    let chain = chains::chain(3, "a");
    let up = StandIn::start(&chain).await;
    up.fault(Fault::Malformed);
    let app = follower(&up.url(), |_| {}).await;
    let s = reaches(&app, "stalled", None).await;
    assert_eq!(s["last_error"]["code"], "SYNC_001", "{s}");
    assert!(s["local_height"].is_null());
    up.fault(Fault::None);
    reaches(&app, "synced", Some(3)).await;
    assert!(verifies(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn invalid_upstream_block_is_quarantined_never_stored_and_sync_recovers() {
    let chain = chains::chain(5, "a");
    let up = StandIn::start(&chain).await;
    let app = follower(&up.url(), |_| {}).await;
    reaches(&app, "synced", Some(5)).await;

    // Block 6 claims a hash that is not its own; block 7 builds on that claim.
    let mut bad = chain.clone();
    chains::grow(&mut bad, 2, "bad", 1);
    let mut docs: Vec<Value> = bad.iter().map(standin::served).collect();
    let forged = "f".repeat(64);
    docs[6]["hash"] = json!(forged);
    docs[6]["block_id"] = json!(forged);
    docs[7]["previous_hash"] = json!(forged);
    up.documents(docs);
    let s = reaches(&app, "stalled", Some(5)).await;
    assert_eq!(s["last_error"]["code"], "SYNC_001", "{s}");
    let message = s["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("BM_006") && message.contains("block 6"),
        "{message}"
    );
    let filed = quarantined(&app, "invalid upstream block");
    assert_eq!(filed.len(), 1, "filed once however often it is retried");
    assert_eq!(filed[0]["block"]["hash"], forged);
    assert_eq!(filed[0]["errors"][0]["code"], "BM_006");
    assert!(verifies(&app).await);
    let (code, _) = app.get_json("/api/v1/blocks/height/6").await;
    assert_eq!(code, 404, "the invalid block was never stored");

    let mut good = chain.clone();
    chains::grow(&mut good, 3, "good", 1);
    up.chain(&good);
    reaches(&app, "synced", Some(8)).await;
    assert_eq!(hashes(&app).await, hashes_of(&good));
    assert!(verifies(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn upstream_block_that_does_not_link_to_what_upstream_serves_below_it_is_invalid_not_a_fork()
{
    let a = chains::chain(5, "a");
    let up = StandIn::start(&a).await;
    let app = follower(&up.url(), |_| {}).await;
    reaches(&app, "synced", Some(5)).await;

    // Upstream still serves our block 5, but its block 6 builds on another block 5.
    let elsewhere = chains::branch(&chains::chain(5, "other"), 6, 2, "x");
    let mut docs: Vec<Value> = a.iter().map(standin::served).collect();
    docs.extend(elsewhere[6..].iter().map(standin::served));
    up.documents(docs);
    let s = reaches(&app, "stalled", Some(5)).await;
    assert_eq!(s["last_error"]["code"], "SYNC_001", "{s}");
    assert!(
        s["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("BM_005"),
        "{s}"
    );
    assert_eq!(s["reorgs"], 0);
    assert_eq!(quarantined(&app, "invalid upstream block").len(), 1);
    assert_eq!(hashes(&app).await, hashes_of(&a));

    let mut good = a.clone();
    chains::grow(&mut good, 2, "good", 1);
    up.chain(&good);
    reaches(&app, "synced", Some(7)).await;
    assert!(verifies(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn fork_three_deep_rolls_back_to_the_common_ancestor_and_quarantines_the_orphans() {
    let a = chains::chain(10, "a");
    let up = StandIn::start(&a).await;
    let app = follower(&up.url(), |_| {}).await;
    reaches(&app, "synced", Some(10)).await;

    // Same height, different last three blocks.
    let b = chains::branch(&a, 8, 3, "b");
    up.chain(&b);
    let s = eventually(LIMIT, "the fork to be resolved", || async {
        let s = status(&app).await;
        (s["reorgs"] == 1 && s["state"] == "synced").then_some(s)
    })
    .await;
    assert_eq!(s["last_reorg"]["common_ancestor"], 7);
    assert_eq!(s["last_reorg"]["depth"], 3);
    assert_eq!(hashes(&app).await, hashes_of(&b));
    let orphans = quarantined(&app, "orphaned by fork");
    assert_eq!(orphans.len(), 3);
    let mut heights: Vec<u64> = orphans
        .iter()
        .map(|o| o["block"]["height"].as_u64().unwrap())
        .collect();
    heights.sort();
    assert_eq!(heights, [8, 9, 10]);
    assert!(
        orphans
            .iter()
            .all(|o| o["block"]["hash"].as_str().unwrap().len() == 64)
    );

    // A longer branch whose next block does not link to our tip: noticed while catching up.
    let c = chains::branch(&b, 9, 4, "c");
    up.chain(&c);
    reaches(&app, "synced", Some(12)).await;
    let s = status(&app).await;
    assert_eq!(s["reorgs"], 2);
    assert_eq!(s["last_reorg"]["depth"], 2);
    assert_eq!(hashes(&app).await, hashes_of(&c));
    assert!(verifies(&app).await);
    assert_eq!(metric(&app, "block_manager_sync_reorgs_total").await, 2.0);
    app.stop().await;
}

#[tokio::test]
async fn fork_deeper_than_max_reorg_depth_stops_sync_as_diverged_without_rolling_back() {
    let a = chains::chain(10, "a");
    let up = StandIn::start(&a).await;
    let app = follower(&up.url(), |c| c.synchronization.max_reorg_depth = 5).await;
    reaches(&app, "synced", Some(10)).await;

    let deep = chains::branch(&a, 3, 10, "deep");
    up.chain(&deep);
    let s = reaches(&app, "diverged", Some(10)).await;
    assert_eq!(s["last_error"]["code"], "SYNC_004", "{s}");
    assert_eq!(s["reorgs"], 0);
    assert_eq!(hashes(&app).await, hashes_of(&a), "nothing was rolled back");
    assert!(quarantined(&app, "orphaned").is_empty());
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["sync"]["state"], "diverged");
    assert_eq!(health["checks"]["sync"]["last_error"]["code"], "SYNC_004");
    assert_eq!(
        metric(&app, "block_manager_sync_state{state=\"diverged\"}").await,
        1.0
    );

    // The upstream comes back to our chain: sync resumes by itself.
    let mut healed = a.clone();
    chains::grow(&mut healed, 2, "a", 2);
    up.chain(&healed);
    reaches(&app, "synced", Some(12)).await;
    assert_eq!(hashes(&app).await, hashes_of(&healed));
    assert!(verifies(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn upstream_without_a_range_route_is_followed_block_by_block_with_its_api_key() {
    let chain = chains::chain(12, "a");
    let up = StandIn::start(&chain).await;
    up.served.lock().unwrap().range_route = false;
    let app = follower(&up.url(), |c| {
        c.synchronization.fetch_batch_size = 5;
        c.synchronization.engine_api_key = Secret::new("upstream-key");
    })
    .await;
    let s = reaches(&app, "synced", Some(12)).await;
    assert_eq!(s["fetch"], "block_by_block");
    assert_eq!(hashes(&app).await, hashes_of(&chain));
    assert!(verifies(&app).await);
    let keys = up.served.lock().unwrap().keys.clone();
    assert!(!keys.is_empty() && keys.iter().all(|k| k == "upstream-key"));
    assert!(
        !s.to_string().contains("upstream-key"),
        "the key is never shown"
    );
    app.stop().await;
}

/// Starts the real binary as a follower in `work` (blocking work, kept off the async threads).
async fn start_follower(work: &std::path::Path, env: &[(String, String)]) -> Proc {
    let work = work.to_path_buf();
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn_process(&work, &pairs)
    })
    .await
    .expect("start task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_killed_mid_sync_five_times_resumes_each_time_and_converges() {
    let blocks = chains::chain(5_000, "bulk");
    let dir = tempfile::tempdir().unwrap();
    chains::seed(dir.path(), &blocks).await;
    let upstream = spawn_app_in(dir, |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("BLOCKCHAIN_ENGINE_URL", upstream.base.as_str()),
        ("BLOCK_MANAGER__SYNCHRONIZATION__FETCH_BATCH_SIZE", "50"),
        (
            "BLOCK_MANAGER__SYNCHRONIZATION__POLL_INTERVAL_SECONDS",
            "0.1",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let remote = |p: &Proc| Remote {
        base: format!("http://127.0.0.1:{}", p.port),
        client: reqwest::Client::new(),
    };
    let mut before = 0;
    // 5 kills in a plain `cargo test`; the full test run asks for 10 (SYNC_KILLS).
    let kills: u64 = std::env::var("SYNC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 40);
    let step = 4_000 / kills;
    for kill in 1..=kills {
        let mut p = start_follower(work.path(), &env).await;
        let node = remote(&p);
        // Whatever was committed before the last kill is still there.
        let resumed = status(&node).await["local_height"].as_u64().unwrap_or(0);
        assert!(resumed >= before, "lost blocks: {resumed} < {before}");
        let goal = kill * step;
        before = eventually(LIMIT, "progress before the kill", || async {
            let h = status(&node).await["local_height"].as_u64().unwrap_or(0);
            (h >= goal).then_some(h)
        })
        .await;
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reaped");
        assert!(before < 5_000, "killed mid-sync (at {before})");
    }
    let p = start_follower(work.path(), &env).await;
    let node = remote(&p);
    reaches(&node, "synced", Some(5_000)).await;
    assert!(verifies(&node).await);
    assert_eq!(hashes(&node).await, hashes_of(&blocks));
    drop(p);
    upstream.stop().await;
}

/// The served body, `Cache-Control` and `ETag` of the block at `height`.
async fn block_at(node: &impl Node, height: u64) -> (Value, String, String) {
    let res = node
        .http()
        .get(format!("{}/api/v1/blocks/height/{height}", node.base()))
        .send()
        .await
        .expect("GET answered");
    assert_eq!(res.status(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (cache, etag) = (header("cache-control"), header("etag"));
    (res.json().await.expect("block JSON"), cache, etag)
}

#[tokio::test]
async fn two_forks_as_deep_as_max_reorg_depth_never_replace_a_block_served_immutable() {
    let a = chains::chain(30, "a");
    let up = StandIn::start(&a).await;
    let app = follower(&up.url(), |c| c.synchronization.max_reorg_depth = 10).await;
    reaches(&app, "synced", Some(30)).await;
    // Tip 30, depth 10: block 19 lies 11 deep, below any fork sync may roll back.
    let (served, cache, _) = block_at(&app, 19).await;
    assert!(cache.contains("immutable"), "{cache}");
    assert_eq!(served["hash"], a[19].hash.as_str());
    assert!(!block_at(&app, 20).await.1.contains("immutable"));
    assert_eq!(
        metric(&app, "block_manager_finality_floor_height").await,
        19.0
    );
    assert_eq!(
        get_json(&app, "/api/v1/chain/status").await.1["finality_floor"],
        19
    );

    // A fork ten deep (the most allowed), onto a shorter branch: tip 25, block 19 now 6 deep.
    let b = chains::branch(&a, 21, 5, "b");
    up.chain(&b);
    eventually(LIMIT, "the first fork to be resolved", || async {
        let s = status(&app).await;
        (s["reorgs"] == 1 && s["state"] == "synced" && s["local_height"] == 25).then_some(())
    })
    .await;
    let (served, cache, _) = block_at(&app, 19).await;
    assert_eq!(served["hash"], a[19].hash.as_str());
    assert!(
        cache.contains("immutable"),
        "the floor does not sink with the tip: {cache}"
    );
    assert_eq!(
        get_json(&app, "/api/v1/chain/status").await.1["finality_floor"],
        19
    );

    // Another fork ten deep from there would replace block 19: it is refused as diverged.
    let c = chains::branch(&b, 16, 12, "c");
    up.chain(&c);
    let s = eventually(LIMIT, "the second fork to be decided", || async {
        let s = status(&app).await;
        let replaced = s["state"] == "synced" && s["local_height"] == 27;
        (s["state"] == "diverged" || replaced).then_some(s)
    })
    .await;
    assert_eq!(s["state"], "diverged", "{s}");
    assert_eq!(s["last_error"]["code"], "SYNC_004", "{s}");
    assert_eq!(s["reorgs"], 1);
    assert_eq!(hashes(&app).await, hashes_of(&b), "nothing was rolled back");
    assert_eq!(block_at(&app, 19).await.0["hash"], a[19].hash.as_str());
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["sync"]["state"], "diverged");
    app.stop().await;
}

#[tokio::test]
async fn a_flapping_upstream_is_damped_to_stalled_and_each_orphan_is_filed_once() {
    let a = chains::chain(10, "a");
    let b = chains::branch(&a, 8, 3, "b");
    let up = StandIn::start(&a).await;
    let app = follower(&up.url(), |_| {}).await;
    reaches(&app, "synced", Some(10)).await;

    // Five reorgs are allowed within the window: a, b, a, b, a, b.
    for n in 1..=5u64 {
        let now = if n % 2 == 1 { &b } else { &a };
        up.chain(now);
        eventually(LIMIT, &format!("reorg {n}"), || async {
            let s = status(&app).await;
            (s["reorgs"] == n && s["state"] == "synced" && s["local_height"] == 10).then_some(())
        })
        .await;
        assert_eq!(hashes(&app).await, hashes_of(now));
    }
    // Three blocks of each branch were orphaned, some of them three times: each is filed once.
    assert_eq!(quarantined(&app, "orphaned by fork").len(), 6);

    // The sixth within the window is not rolled back: sync stalls, health says so.
    up.chain(&a);
    let s = eventually(LIMIT, "the sixth fork to be decided", || async {
        let s = status(&app).await;
        (s["state"] == "stalled" || s["reorgs"] == 6).then_some(s)
    })
    .await;
    assert_eq!(s["state"], "stalled", "{s}");
    let health = health_check(&app).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["sync"]["state"], "stalled");
    // Rounds go on (each asked for at once here); rollbacks do not.
    for _ in 0..5 {
        let (code, _) = app.post("/api/v1/sync", &json!({})).await;
        assert_eq!(code, 200);
    }
    let s = status(&app).await;
    assert_eq!(s["reorgs"], 5, "{s}");
    assert_eq!(s["state"], "stalled", "{s}");
    assert_eq!(hashes(&app).await, hashes_of(&b));
    assert_eq!(
        metric(&app, "block_manager_blocks_rolled_back_total").await,
        15.0
    );
    assert!(metric(&app, "block_manager_sync_reorgs_damped_total").await >= 1.0);
    assert_eq!(quarantined(&app, "orphaned by fork").len(), 6);
    // Health names the cause: reorgs are being damped, not rounds failing.
    let message = health["checks"]["sync"]["message"].as_str().unwrap_or("");
    assert!(message.contains("damped"), "{health}");

    // Stalled for another reason first (the upstream fails), then damped again: the damped
    // round's error replaces the other one, so the reported last error explains the state.
    up.fault(Fault::ServerError);
    let s = eventually(LIMIT, "a failing round to be reported", || async {
        let s = status(&app).await;
        (s["last_error"].is_object() && !damped_error(&s)).then_some(s)
    })
    .await;
    assert!(!damped_error(&s), "{s}");
    up.fault(Fault::None);
    let s = eventually(LIMIT, "the damped round to be reported again", || async {
        let s = status(&app).await;
        (s["state"] == "stalled" && damped_error(&s)).then_some(s)
    })
    .await;
    assert_eq!(s["reorgs"], 5, "{s}");
    let health = health_check(&app).await;
    let message = health["checks"]["sync"]["message"].as_str().unwrap_or("");
    assert!(message.contains("damped"), "{health}");
    app.stop().await;
}

/// Whether the status's last error is the one a damped fork leaves.
fn damped_error(status: &Value) -> bool {
    status["last_error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("max_reorgs_per_window"))
}

/// A follower seeded with `blocks` whose upstream is `url`.
async fn seeded_follower(blocks: &[Block], url: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    chains::seed(dir.path(), blocks).await;
    let url = url.to_string();
    spawn_app_in(dir, move |c| fast_follower(c, &url)).await
}

#[tokio::test]
async fn an_upstream_block_with_our_hash_but_another_body_is_a_fork_not_our_block() {
    // Upstream's block 5 keeps our block 5's hash (the hash covers neither amounts nor
    // signatures) but carries another signature and amount: it is not our block.
    let a = chains::chain(5, "a");
    let mut docs: Vec<Value> = a.iter().map(standin::served).collect();
    docs[5]["signature"] = json!("another-signature");
    docs[5]["transactions"][1]["value"] = json!(7);
    let up = StandIn::start(&[]).await;
    up.documents(docs.clone());

    // Level by hash: the follower must still see the difference, roll its block 5 back and
    // take upstream's.
    let app = seeded_follower(&a, &up.url()).await;
    let s = eventually(LIMIT, "the follower to settle", || async {
        let s = status(&app).await;
        (s["state"] == "synced" && s["local_height"] == 5).then_some(s)
    })
    .await;
    assert_eq!(s["reorgs"], 1, "{s}");
    let served = block_at(&app, 5).await.0;
    assert_eq!(served["hash"], a[5].hash.as_str());
    assert_eq!(served["signature"], "another-signature", "{served}");
    assert_eq!(served["transactions"][1]["value"], 7, "{served}");
    assert_eq!(quarantined(&app, "orphaned by fork").len(), 1);
    app.stop().await;

    // Behind upstream: its next block links to our tip by hash, yet builds on its own block 5.
    let mut longer = a.clone();
    chains::grow(&mut longer, 2, "a", 2);
    let mut docs: Vec<Value> = longer.iter().map(standin::served).collect();
    docs[5]["signature"] = json!("another-signature");
    up.documents(docs);
    let app = seeded_follower(&a, &up.url()).await;
    let s = reaches(&app, "synced", Some(7)).await;
    assert_eq!(s["reorgs"], 1, "{s}");
    assert_eq!(block_at(&app, 5).await.0["signature"], "another-signature");
    assert_eq!(hashes(&app).await, hashes_of(&longer));
    app.stop().await;
}
