//! The event stream (`/api/v1/events`) end to end, read by a Server-Sent Events client over
//! real HTTP: order and ids, resumption by `Last-Event-ID` and `?from`, a fork in between
//! (a follower of a forking stand-in), `resync`, malformed positions, keep-alives, the stream
//! cap, shutdown, and a slow subscriber while ten thousand blocks are appended.

#[allow(dead_code)]
#[path = "sync/chains.rs"]
mod chains;
mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;

use block_manager::config::Config;
use common::*;
use serde_json::Value;
use standin::StandIn;
use std::time::{Duration, Instant};

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// One frame of the stream: its fields, or a comment.
#[derive(Debug, Clone, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data line")).expect("data is JSON")
    }
    fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }
}

/// A minimal SSE client over a streaming reqwest response.
struct Sse {
    res: reqwest::Response,
    buf: Vec<u8>,
}

async fn open(app: &TestApp, query: &str, last_id: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url(&format!("/api/v1/events{query}")))
        .header("Accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.expect("the stream answers")
}

impl Sse {
    async fn connect(app: &TestApp, query: &str, last_id: Option<&str>) -> Sse {
        let res = open(app, query, last_id).await;
        assert_eq!(res.status(), 200);
        Sse {
            res,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `None` when the stream ended.
    async fn frame(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..at + 2).collect();
                return Some(parse(std::str::from_utf8(&raw).expect("UTF-8 frames")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .expect("a frame in time")
                .expect("the stream reads");
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => {
                    assert!(self.buf.is_empty(), "the stream ended mid-frame");
                    return None;
                }
            }
        }
    }

    /// The next event (comments and `retry:` frames skipped).
    async fn event(&mut self) -> Frame {
        loop {
            let f = self.frame().await.expect("the stream is open");
            if f.event.is_some() {
                return f;
            }
        }
    }
}

fn parse(raw: &str) -> Frame {
    let mut f = Frame::default();
    for line in raw.lines().filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix(':') {
            f.comment = Some(c.trim().to_string());
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => f.id = Some(value.into()),
            "event" => f.event = Some(value.into()),
            "data" => {
                assert!(f.data.is_none(), "one data line per event: {raw}");
                f.data = Some(value.into());
            }
            "retry" => f.retry = Some(value.parse().expect("retry in ms")),
            other => panic!("unexpected field {other} in {raw:?}"),
        }
    }
    f
}

/// `<height>:<hash>` of the block at `height`, as served.
async fn id_at(app: &TestApp, height: u64) -> String {
    let (status, b) = app
        .get_json(&format!("/api/v1/blocks/height/{height}"))
        .await;
    assert_eq!(status, 200);
    format!("{height}:{}", b["hash"].as_str().unwrap())
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not exposed"))
}

async fn assert_block(app: &TestApp, f: &Frame, height: u64) {
    assert_eq!(f.kind(), "block", "{f:?}");
    assert_eq!(f.id.as_deref(), Some(id_at(app, height).await.as_str()));
    let served = app
        .get(&format!("/api/v1/blocks/height/{height}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        f.data.as_deref(),
        Some(served.as_str()),
        "the block as served"
    );
}

#[tokio::test]
async fn blocks_stream_in_chain_order_with_height_and_hash_ids_then_live() {
    let app = spawn_app(|_| {}).await;
    for i in 0..3 {
        app.create_block(&format!("b{i}"), 2).await;
    }
    let res = app
        .client
        .get(app.url("/api/v1/events?from=0"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none(), "never compressed");
    let mut s = Sse {
        res,
        buf: Vec::new(),
    };
    let first = s.frame().await.unwrap();
    assert_eq!(first.retry, Some(2000), "retry advice first");
    for height in 0..=3 {
        let f = s.event().await;
        assert_block(&app, &f, height).await;
    }
    // Live: a block created now arrives next.
    app.create_block("live", 1).await;
    let f = s.event().await;
    assert_block(&app, &f, 4).await;

    // The same under its gateway path, header only.
    let res = app
        .client
        .get(app.url("/api/v1/blocks/events?from=3&thin=1"))
        .send()
        .await
        .unwrap();
    let mut thin = Sse {
        res,
        buf: Vec::new(),
    };
    let f = thin.event().await;
    assert_eq!(f.id.as_deref(), Some(id_at(&app, 3).await.as_str()));
    let header = f.json();
    let keys: Vec<&str> = header
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "height",
            "hash",
            "previous_hash",
            "merkle_root",
            "timestamp",
            "producer",
            "transaction_count"
        ]
    );
    assert_eq!(header["height"], 3);
    assert_eq!(thin.event().await.json()["height"], 4);
    assert!(metric(&app, "block_manager_event_streams_open").await >= 2.0);
    assert!(
        metric(&app, "block_manager_events_sent_total{type=\"block\"}").await >= 7.0,
        "counted by type"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_resumes_after_a_disconnect_by_last_event_id_or_by_from() {
    let app = spawn_app(|_| {}).await;
    app.create_block("a", 1).await;
    let mut s = Sse::connect(&app, "?from=0", None).await;
    s.event().await;
    let last = s.event().await.id.unwrap();
    assert_eq!(last, id_at(&app, 1).await);
    drop(s);
    // Blocks appended while the client was away.
    for i in 0..3 {
        app.create_block(&format!("away{i}"), 1).await;
    }
    let mut s = Sse::connect(&app, "", Some(&last)).await;
    for height in 2..=4 {
        assert_block(&app, &s.event().await, height).await;
    }
    drop(s);
    // `from` is inclusive, like range.
    let mut s = Sse::connect(&app, "?from=3", None).await;
    assert_block(&app, &s.event().await, 3).await;
    assert_block(&app, &s.event().await, 4).await;
    drop(s);
    // A position past the tip streams live: nothing until the chain gets there.
    let mut s = Sse::connect(&app, "?from=6", None).await;
    app.create_block("five", 1).await;
    app.create_block("six", 1).await;
    assert_block(&app, &s.event().await, 6).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_position_gets_resync_and_a_malformed_one_answers_400() {
    let app = spawn_app(|_| {}).await;
    app.create_block("a", 1).await;
    let unknown = format!("1:{}", "ab".repeat(32));
    let mut s = Sse::connect(&app, "", Some(&unknown)).await;
    let f = s.event().await;
    assert_eq!(f.kind(), "resync");
    assert_eq!(f.json()["reason"], "unknown position");
    assert_eq!(f.json()["from_height"], 2);
    // It goes on from there.
    app.create_block("b", 1).await;
    assert_block(&app, &s.event().await, 2).await;
    drop(s);

    for (query, id) in [
        ("", Some("12")),
        ("", Some("x:abc")),
        ("", Some(&*format!("1:{}", "AB".repeat(32)))),
        ("?from=abc", None),
        ("?from=-1", None),
        ("?thin=maybe", None),
    ] {
        let res = open(&app, query, id).await;
        assert_eq!(res.status(), 400, "{query} {id:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["detail"]["error_code"], "REQ_001", "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idle_stream_sends_keep_alive_comments_and_ends_cleanly_on_shutdown() {
    let app = spawn_app(|c: &mut Config| c.api.event_keepalive_seconds = 0.1).await;
    let mut s = Sse::connect(&app, "", None).await;
    let mut comments = 0;
    while comments < 2 {
        let f = s.frame().await.unwrap();
        if f.comment.as_deref() == Some("keep-alive") {
            comments += 1;
        }
    }
    // Shutdown ends the stream (well within the grace period) and the server stops.
    let started = Instant::now();
    app.shutdown.cancel();
    while s.frame().await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(4), "ended at once");
    app.stop().await;
}

#[tokio::test]
async fn streams_past_max_event_streams_answer_503_with_retry_after() {
    let app = spawn_app(|c: &mut Config| {
        c.api.max_event_streams = 2;
        c.security.require_read_auth = true;
    })
    .await;
    // Read auth like every read route.
    let res = open(&app, "", None).await;
    assert_eq!(res.status(), 401);
    let keyed = |app: &TestApp| {
        app.client
            .get(app.url("/api/v1/events"))
            .header("X-API-Key", READ_KEY)
            .send()
    };
    let a = keyed(&app).await.unwrap();
    let b = keyed(&app).await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let refused = keyed(&app).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["detail"]["error_code"], "SRV_003");
    // A closed stream frees its slot.
    drop(a);
    eventually(LIMIT, "a slot to free up", || async {
        (keyed(&app).await.unwrap().status() == 200).then_some(())
    })
    .await;
    drop(b);
    app.stop().await;
}

/// A follower of a stand-in whose chain forks three deep under it.
async fn forking_follower() -> (StandIn, TestApp, Vec<block_manager::chain::Block>) {
    let a = chains::chain(10, "a");
    let up = StandIn::start(&a).await;
    let url = up.url();
    let app = spawn_app(move |c| {
        c.synchronization.engine_url = Some(url);
        c.synchronization.poll_interval_seconds = 0.05;
        c.synchronization.sync_timeout_seconds = 2.0;
    })
    .await;
    eventually(LIMIT, "the follower to reach 10", || async {
        (app.get_json("/api/v1/chain/height").await.1["height"] == 10).then_some(())
    })
    .await;
    (up, app, a)
}

#[tokio::test]
async fn a_fork_in_between_is_a_reorg_to_the_ancestor_live_and_on_resume() {
    let (up, app, a) = forking_follower().await;
    let old_tip = format!("10:{}", a[10].hash);
    let mut live = Sse::connect(&app, "?from=0", None).await;
    for height in 0..=10 {
        assert_eq!(
            live.event().await.id.unwrap(),
            format!("{height}:{}", a[height as usize].hash)
        );
    }
    let b = chains::branch(&a, 8, 3, "b");
    up.chain(&b);
    let f = live.event().await;
    assert_eq!(f.kind(), "reorg", "{f:?}");
    assert_eq!(f.id.as_deref(), Some(format!("7:{}", a[7].hash).as_str()));
    let r = f.json();
    assert_eq!(r["ancestor"]["height"], 7);
    assert_eq!(r["ancestor"]["hash"], a[7].hash.as_str());
    assert_eq!(r["depth"], 3);
    assert_eq!(r["old_tip"]["height"], 10);
    assert_eq!(r["old_tip"]["hash"], a[10].hash.as_str());
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["ancestor", "depth", "old_tip", "new_tip"]);
    // Then the new branch whole.
    for height in 8..=10 {
        let f = live.event().await;
        assert_eq!(f.kind(), "block");
        assert_eq!(
            f.id.unwrap(),
            format!("{height}:{}", b[height as usize].hash)
        );
    }
    eventually(LIMIT, "the follower to hold the new branch", || async {
        (app.get_json("/api/v1/chain/height").await.1["block_hash"] == b[10].hash.as_str())
            .then_some(())
    })
    .await;

    // A client that left at the old tip: the reorg first, then the new branch.
    let mut s = Sse::connect(&app, "", Some(&old_tip)).await;
    let f = s.event().await;
    assert_eq!(f.kind(), "reorg");
    assert_eq!(f.json()["ancestor"]["height"], 7);
    assert_eq!(f.json()["new_tip"]["hash"], b[10].hash.as_str());
    for height in 8..=10 {
        assert_eq!(
            s.event().await.id.unwrap(),
            format!("{height}:{}", b[height as usize].hash)
        );
    }
    // Resuming from the reorg's own id replays the new branch whole.
    let mut s = Sse::connect(&app, "", Some(&format!("7:{}", a[7].hash))).await;
    assert_eq!(s.event().await.id.unwrap(), format!("8:{}", b[8].hash));
    app.stop().await;
}

/// The next events are blocks `range` of `chain`, in order (full or thin: both carry the hash).
async fn expect_blocks(
    s: &mut Sse,
    chain: &[block_manager::chain::Block],
    range: std::ops::RangeInclusive<usize>,
) {
    for h in range {
        let f = s.event().await;
        assert_eq!(f.kind(), "block", "{f:?}");
        assert_eq!(f.id, Some(format!("{h}:{}", chain[h].hash)));
        assert_eq!(f.json()["hash"], chain[h].hash.as_str());
    }
}

/// Live streams share the newest blocks' frames: a burst longer than what is shared, then a
/// fork under blocks they were all sent, must reach every one of them, full and thin alike,
/// exactly as it reaches a single stream.
#[tokio::test]
async fn many_live_streams_each_get_a_long_burst_and_a_fork_in_order() {
    let (up, app, mut a) = forking_follower().await;
    let mut streams = Vec::new();
    for i in 0..12 {
        let query = if i % 2 == 0 {
            "?from=0"
        } else {
            "?from=0&thin=1"
        };
        streams.push(Sse::connect(&app, query, None).await);
    }
    for s in &mut streams {
        expect_blocks(s, &a, 0..=10).await;
    }
    // 600 blocks at once: more than the 256 the streams share, so some read the store.
    chains::grow(&mut a, 600, "a", 1);
    up.chain(&a);
    for s in &mut streams {
        expect_blocks(s, &a, 11..=610).await;
    }
    // A fork three deep under the tip every stream was sent.
    let b = chains::branch(&a, 608, 3, "b");
    up.chain(&b);
    for s in &mut streams {
        let f = s.event().await;
        assert_eq!(f.kind(), "reorg", "{f:?}");
        assert_eq!(
            f.id.as_deref(),
            Some(format!("607:{}", a[607].hash).as_str())
        );
        assert_eq!(f.json()["old_tip"]["hash"], a[610].hash.as_str());
        expect_blocks(s, &b, 608..=610).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_gets_each_of_ten_thousand_blocks_once_in_order_without_holding_the_writer()
 {
    const N: u64 = 10_000;
    const WRITERS: u64 = 8;
    let app = spawn_app(|_| {}).await;
    let mut s = Sse::connect(&app, "?thin=1", None).await;
    assert_eq!(s.frame().await.unwrap().retry, Some(2000));
    // Every block is appended while the subscriber reads nothing at all.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, url) = (app.client.clone(), app.url("/api/v1/blocks"));
        tasks.push(tokio::spawn(async move {
            for i in 0..N / WRITERS {
                let body = create_body(&format!("w{w}-{i}"), 1);
                let res = client
                    .post(&url)
                    .header("X-API-Key", WRITE_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let appended = started.elapsed();
    assert_eq!(app.get_json("/api/v1/chain/height").await.1["height"], N);
    let mut expected = 1;
    while expected <= N {
        let f = s.event().await;
        assert_eq!(f.kind(), "block");
        let h = f.json();
        assert_eq!(h["height"], expected, "in order, none missing, none twice");
        let (height, hash) = f.id.as_deref().unwrap().split_once(':').unwrap();
        assert_eq!(
            (height, hash),
            (expected.to_string().as_str(), h["hash"].as_str().unwrap())
        );
        expected += 1;
        if expected % 1000 == 0 {
            // Slow: the stream keeps its place while the client dawdles.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        metric(&app, "block_manager_event_subscribers_lagged_total").await >= 1.0,
        "the subscriber that fell behind is counted"
    );
    eprintln!("appended {N} blocks in {appended:?} with a stalled subscriber");
    app.stop().await;
}

#[tokio::test]
async fn the_explorer_page_and_its_assets_are_served_under_a_strict_csp() {
    let app = spawn_app(|c: &mut Config| c.security.require_read_auth = true).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/explorer", "text/html"),
        ("/explorer.js", "text/javascript"),
        ("/explorer.css", "text/css"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 200, "{path} is public");
        let h = res.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
    let page = app.get("/explorer").await.text().await.unwrap();
    assert!(page.contains(r#"<script src="/explorer.js""#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "nothing inline"
    );
    let script = app.get("/explorer.js").await.text().await.unwrap();
    assert!(!script.contains("innerHTML"), "chain values are text only");
    assert!(
        !script.contains("new EventSource"),
        "fetch, so the key can be sent"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_follower_subscribed_to_its_upstreams_stream_syncs_a_new_block_without_waiting_for_a_poll()
 {
    let upstream = spawn_app(|_| {}).await;
    upstream.create_block("first", 1).await;
    let url = upstream.base.clone();
    // Polls so rare that only the pushed announcement can bring the next block in time.
    let follower = spawn_app(move |c| {
        c.synchronization.engine_url = Some(url);
        c.synchronization.poll_interval_seconds = 120.0;
        c.synchronization.push_fallback_poll_seconds = 120.0;
    })
    .await;
    let height = |app: &TestApp| {
        let app = app.client.get(app.url("/api/v1/chain/height"));
        async move { app.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually(LIMIT, "the follower to copy the upstream", || async {
        (height(&follower).await["height"] == 1).then_some(())
    })
    .await;
    // Subscribed: the upstream counts the follower's stream.
    eventually(LIMIT, "the follower to subscribe", || async {
        (metric(&upstream, "block_manager_event_streams_open").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&follower, "block_manager_sync_push_subscribed").await,
        1.0
    );
    let created = upstream.create_block("pushed", 2).await;
    let started = Instant::now();
    eventually(Duration::from_secs(20), "the pushed block", || async {
        (height(&follower).await["block_hash"] == created["hash"]).then_some(())
    })
    .await;
    eprintln!(
        "pushed block stored by the follower {:?} after it was created",
        started.elapsed()
    );
    // Fetched and validated like a polled block: the same bytes as upstream serves.
    let ours = follower
        .get("/api/v1/blocks/height/2")
        .await
        .text()
        .await
        .unwrap();
    let theirs = upstream
        .get("/api/v1/blocks/height/2")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(ours, theirs);
    follower.stop().await;
    upstream.stop().await;
}

/// An upstream whose event stream is one endless line; everything else is a 404.
async fn endless_line_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = conn.read(&mut head).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                if !head.starts_with("GET /api/v1/events") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ")
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                while conn.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_endless_line_from_the_upstreams_stream_is_cut_and_the_follower_goes_on_polling() {
    let addr = endless_line_upstream().await;
    let follower = spawn_app(move |c| {
        c.synchronization.engine_url = Some(format!("http://{addr}"));
        c.synchronization.poll_interval_seconds = 0.05;
    })
    .await;
    // Subscribed, then dropped once the line passes one block plus slack, then again...
    let gauge = "block_manager_sync_push_subscribed";
    eventually(LIMIT, "a subscription", || async {
        (metric(&follower, gauge).await == 1.0).then_some(())
    })
    .await;
    eventually(LIMIT, "the endless line to be cut", || async {
        (metric(&follower, gauge).await == 0.0).then_some(())
    })
    .await;
    // ...while the process stays up and keeps polling.
    let (status, s) = follower.get_json("/api/v1/sync/status").await;
    assert_eq!(status, 200);
    assert!(s["state"].is_string(), "{s}");
    follower.stop().await;
}

/// A TCP relay in front of an upstream: `cut()` drops every relayed connection and refuses
/// new ones (the follower's stream breaks, its polls fail) until `mend()`.
struct Relay {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (is_open, cuts) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    // Dropped at once: the follower sees the connection closed.
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, open, cut }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn mend(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn transport(app: &TestApp) -> Value {
    let (status, s) = app.get_json("/api/v1/sync/status").await;
    assert_eq!(status, 200, "{s}");
    s["transport"].clone()
}

#[tokio::test]
async fn sync_status_shows_push_while_subscribed_and_poll_from_a_dropped_stream_until_it_resubscribes()
 {
    let upstream = spawn_app(|_| {}).await;
    upstream.create_block("first", 1).await;
    let relay = Relay::start(upstream.addr).await;
    let url = format!("http://{}", relay.addr);
    let follower = spawn_app(move |c| {
        c.synchronization.engine_url = Some(url);
        c.synchronization.poll_interval_seconds = 0.2;
    })
    .await;
    eventually(LIMIT, "transport push", || async {
        (transport(&follower).await == "push").then_some(())
    })
    .await;
    // The stream drops (and the upstream is out of reach): the follower polls.
    relay.cut();
    eventually(LIMIT, "transport poll after the stream dropped", || async {
        (transport(&follower).await == "poll").then_some(())
    })
    .await;
    // Still poll across several subscription attempts (one a second) while it cannot get in.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(transport(&follower).await, "poll");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reachable again: it subscribes again, and the status says so.
    relay.mend();
    eventually(LIMIT, "transport push after resubscribing", || async {
        (transport(&follower).await == "push").then_some(())
    })
    .await;
    let pushed = upstream.create_block("after", 1).await;
    eventually(LIMIT, "the block after resubscribing", || async {
        let (_, h) = follower.get_json("/api/v1/chain/height").await;
        (h["block_hash"] == pushed["hash"]).then_some(())
    })
    .await;
    follower.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn sync_status_shows_poll_on_an_upstream_without_the_events_route_and_null_standalone() {
    let chain = chains::chain(3, "s");
    let standin = StandIn::start(&chain).await;
    let url = standin.url();
    let follower = spawn_app(move |c| {
        c.synchronization.engine_url = Some(url);
        c.synchronization.poll_interval_seconds = 0.2;
    })
    .await;
    // Synced, and the subscription tried (and refused) more than once.
    eventually(LIMIT, "synced with subscriptions refused", || async {
        let (_, s) = follower.get_json("/api/v1/sync/status").await;
        (s["state"] == "synced" && standin.requests_to("/api/v1/events").len() >= 2).then_some(())
    })
    .await;
    assert_eq!(transport(&follower).await, "poll");
    follower.stop().await;

    // Not a follower: no transport.
    let standalone = spawn_app(|_| {}).await;
    let (_, s) = standalone.get_json("/api/v1/sync/status").await;
    assert_eq!(s["mode"], "standalone", "{s}");
    assert!(s.get("transport").is_some_and(Value::is_null), "{s}");
    standalone.stop().await;
}
