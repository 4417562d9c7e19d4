//! Hostile and broken clients: half-sent request heads time out, idle kept-alive connections
//! close, at the connection cap probes still answer while the oldest half-sent connections are
//! shed and excess requests get 503 SRV_003, and oversized request heads answer in the one
//! JSON error shape.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads (and discards) until the server closes the connection; the time that took, or
/// `None` when it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One answer read off `s`: status, head (lower-cased) and body, framed by Content-Length.
async fn read_answer(s: &mut TcpStream) -> (u16, String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]).into_owned();
                return (status, head, body);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a full answer: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

/// Sends `request` on a new connection and reads the answer.
async fn exchange(app: &TestApp, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(request).await.expect("send");
    read_answer(&mut s).await
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Asserts the Lucid error shape; returns the code.
fn code_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let d = &v["detail"];
    assert!(
        d["error"].is_string() && d["severity"].is_string() && d["additional_info"].is_object(),
        "not the error shape: {body}"
    );
    d["error_code"].as_str().unwrap().to_string()
}

async fn half_sent(app: &TestApp) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("send");
    s
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_closed_after_header_timeout() {
    let app = spawn_app(|c| {
        c.api.header_timeout_seconds = 1.0;
        c.api.idle_timeout_seconds = 30.0;
    })
    .await;
    let mut slow = half_sent(&app).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    for s in [&mut slow, &mut silent] {
        closed_within(s, Duration::from_secs(4))
            .await
            .expect("closed within the header timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800),
            "closed too early: {took:?}"
        );
    }
    assert!(metric(&app, "block_manager_http_header_timeouts_total").await >= 2.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_closes_after_idle_timeout_not_header_timeout() {
    let app = spawn_app(|c| {
        c.api.header_timeout_seconds = 1.0;
        c.api.idle_timeout_seconds = 2.5;
    })
    .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let req = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(read_answer(&mut s).await.0, 200);
    // Idle past the header timeout: the header clock only runs once a request starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(req).await.unwrap();
    assert_eq!(read_answer(&mut s).await.0, 200);
    let took = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("idle connection closed");
    assert!(
        took >= Duration::from_millis(2200) && took < Duration::from_millis(4500),
        "closed after {took:?}, idle timeout 2.5 s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_probes_answer_at_once_and_the_oldest_half_sent_connections_are_shed() {
    let app = spawn_app(|c| {
        c.api.max_connections = 16;
        c.api.header_timeout_seconds = 60.0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(half_sent(&app).await);
    }
    let started = Instant::now();
    let (status, _, _) = exchange(&app, &get("/health/live")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut held[0], Duration::from_secs(2))
            .await
            .is_some(),
        "the oldest half-sent connection is shed"
    );
    // Five more half-sent connections: the first takes the probe's freed slot, the others
    // and the next probe take the places of the next five oldest.
    for _ in 0..5 {
        held.push(half_sent(&app).await);
    }
    let started = Instant::now();
    let (status, _, _) = exchange(&app, &get("/health/live")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for (i, s) in held.iter_mut().enumerate().take(6).skip(1) {
        assert!(
            closed_within(s, Duration::from_secs(2)).await.is_some(),
            "connection {i} shed"
        );
    }
    for (i, s) in held.iter_mut().enumerate().skip(6) {
        assert!(
            closed_within(s, Duration::from_millis(100)).await.is_none(),
            "connection {i} is younger and stays"
        );
    }
    drop(held);
    assert!(metric(&app, "block_manager_http_connections_shed_total").await >= 6.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_requests_get_503_srv_003_and_probes_still_answer() {
    let app = spawn_app(|c| {
        c.api.max_connections = 4;
        c.api.request_timeout_seconds = 30.0;
    })
    .await;
    // Four requests in flight: each head is read and its handler waits for a body that never
    // comes. The 100 Continue says the handler is running.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(
            format!(
                "POST /api/v1/blocks HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 100"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        busy.push(s);
    }
    let started = Instant::now();
    let (status, head, body) = exchange(&app, &get("/api/v1/chain/height")).await;
    assert_eq!(status, 503, "{head}{body}");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(code_of(&body), "SRV_003");
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    let (status, _, _) = exchange(&app, &get("/health/live")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(busy);
    eventually(Duration::from_secs(5), "a free slot", || async {
        (exchange(&app, &get("/api/v1/chain/height")).await.0 == 200).then_some(())
    })
    .await;
    assert!(metric(&app, "block_manager_http_connections_refused_total").await >= 1.0);
    assert!(metric(&app, "block_manager_http_connections_open").await >= 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_request_heads_answer_in_the_error_shape() {
    let app = spawn_app(|_| {}).await;
    let many = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "URI over our limit",
            get(&format!("/api/v1/blocks/{}", "a".repeat(10_000))),
            414,
            "REQ_007",
        ),
        (
            "URI over hyper's own limit",
            get(&format!("/api/v1/blocks/{}", "a".repeat(70_000))),
            414,
            "REQ_007",
        ),
        (
            "one huge header",
            format!(
                "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "b".repeat(70_000)
            )
            .into_bytes(),
            431,
            "REQ_008",
        ),
        (
            "too many headers",
            format!(
                "GET /health/live HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                many(150)
            )
            .into_bytes(),
            431,
            "REQ_008",
        ),
        (
            "more headers than hyper parses",
            format!(
                "GET /health/live HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                many(600)
            )
            .into_bytes(),
            431,
            "REQ_008",
        ),
        (
            "not HTTP at all",
            b"HELLO THERE\r\n\r\n".to_vec(),
            400,
            "REQ_001",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, head, body) = exchange(&app, &request).await;
        assert_eq!(got, status, "{what}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert_eq!(code_of(&body), code, "{what}");
    }
    // Within the limits nothing changes.
    let (status, _, _) = exchange(
        &app,
        format!(
            "GET /health/live HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            many(90)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_closed_after_idle_timeout() {
    let app = spawn_app(|c| c.api.idle_timeout_seconds = 1.0).await;
    // Eight blocks of ~800 KB: a range answer far larger than the socket buffers hold.
    for b in 0..8 {
        let txs: Vec<Value> = (0..8)
            .map(|i| {
                serde_json::json!({"tx_id": format!("big-{b}-{i}"), "type": "data_storage",
                    "from_address": "a", "to_address": "b", "value": i, "fee": 0.0,
                    "data": "x".repeat(100_000), "signature": "s"})
            })
            .collect();
        let body = serde_json::json!({"transactions": txs, "producer": "p", "signature": "s"});
        let (status, b) = app.post("/api/v1/blocks", &body).await;
        assert_eq!(status, 201, "{b}");
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(app.addr).await.unwrap();
    s.write_all(&get("/api/v1/blocks/range?from=1&limit=8"))
        .await
        .unwrap();
    // Never read: the server's writes stall, and after the idle timeout it gives up.
    let started = Instant::now();
    let up = app.get("/health/live").await.status();
    assert_eq!(up, 200);
    // Left open: the pooled connection the metrics are read on.
    eventually(
        Duration::from_secs(10),
        "the stalled connection to close",
        || async {
            (metric(&app, "block_manager_http_connections_open").await <= 1.0).then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}
