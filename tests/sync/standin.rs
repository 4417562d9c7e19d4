//! A fault-injecting stand-in upstream: a small axum server speaking the follower protocol over
//! a chain the test sets, whose behaviour can be switched while it runs (down, slow, 5xx,
//! malformed JSON, no range route) or made hostile (huge replies, redirects to another origin,
//! error text with forged log lines, absurd heights). It records every request it receives.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use block_manager::chain::Block;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the stand-in does to every request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answers normally.
    None,
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// 500 with the Lucid error shape.
    ServerError,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 500 with this text as the Lucid error message.
    ServerErrorText(String),
    /// 302 to the same path on this other base URL.
    RedirectTo(String),
    /// The range route answers 200 with this many bytes of one never-ending JSON document
    /// (with a `Content-Length`; see [`close_delimited`] for one without).
    HugeRange(usize),
    /// Like `HugeRange`, but only for range requests of more than `blocks` blocks.
    HugeRangeAbove { blocks: u64, bytes: usize },
    /// Block replies (range and single) answer with the first text replaced by the second in
    /// their JSON: a number no JSON value can hold, say.
    Rewrite(String, String),
}

/// What the stand-in serves; tests change it while it runs.
pub struct Served {
    /// Served block documents, by height.
    pub chain: Vec<Value>,
    /// Behaviour of every route.
    pub fault: Fault,
    /// Whether `/api/v1/blocks/range` exists.
    pub range_route: bool,
    /// Every `X-API-Key` value received.
    pub keys: Vec<String>,
    /// Path and query of every request received, in order.
    pub requests: Vec<String>,
    /// Height claimed by `/chain/height` instead of the served tip's.
    pub claimed_height: Option<u64>,
}

type Shared = Arc<Mutex<Served>>;

/// The running stand-in; `down()` closes its port, `up()` opens it again.
pub struct StandIn {
    pub addr: SocketAddr,
    pub served: Shared,
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// A block as block-manager serves it.
pub fn served(block: &Block) -> Value {
    serde_json::from_slice(&block.served_json()).expect("served JSON parses")
}

impl StandIn {
    /// Starts serving `chain` on a free loopback port.
    pub async fn start(chain: &[Block]) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(Mutex::new(Served {
            chain: chain.iter().map(served).collect(),
            fault: Fault::None,
            range_route: true,
            keys: Vec::new(),
            requests: Vec::new(),
            claimed_height: None,
        }));
        let mut s = StandIn {
            addr,
            served,
            running: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let app = router(self.served.clone());
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await;
        });
        self.running = Some((stop, task));
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port: connections are refused until `up()`.
    pub async fn down(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Opens the same port again.
    pub async fn up(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the stand-in's port");
        self.serve(listener);
    }

    /// Switches the behaviour.
    pub fn fault(&self, fault: Fault) {
        self.served.lock().unwrap().fault = fault;
    }

    /// Serves another chain from now on.
    pub fn chain(&self, chain: &[Block]) {
        self.served.lock().unwrap().chain = chain.iter().map(served).collect();
    }

    /// Upstream calls received so far: every request but a follower's subscription to the
    /// event stream, which is no call the retry policy governs (and which this stand-in does
    /// not serve, so the follower goes on polling).
    #[allow(dead_code)] // not every test file that includes the stand-in counts requests
    pub fn requests(&self) -> u64 {
        let s = self.served.lock().unwrap();
        s.requests
            .iter()
            .filter(|r| !r.starts_with("/api/v1/events"))
            .count() as u64
    }

    /// Serves these documents (possibly invalid) from now on.
    pub fn documents(&self, docs: Vec<Value>) {
        self.served.lock().unwrap().chain = docs;
    }

    /// The requests received so far whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<String> {
        let s = self.served.lock().unwrap();
        s.requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn router(served: Shared) -> Router {
    Router::new()
        .route("/api/v1/chain/height", get(height))
        .route("/api/v1/blocks/range", get(range))
        .route("/api/v1/blocks/headers", get(headers))
        .route("/api/v1/blocks/height/{height}", get(at_height))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(served.clone(), record))
        .with_state(served)
}

/// Logs the request, and answers every route (known or not) while a redirect or a 500 is set.
async fn record(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    let fault = {
        let mut s = s.lock().unwrap();
        s.requests.push(target.clone());
        s.fault.clone()
    };
    match fault {
        Fault::RedirectTo(base) => {
            if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
                s.lock().unwrap().keys.push(key.to_string());
            }
            (StatusCode::FOUND, [("location", format!("{base}{target}"))]).into_response()
        }
        _ => next.run(req).await,
    }
}

async fn fallback(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Some(r) = fault(&s, &h).await {
        return r;
    }
    (StatusCode::NOT_FOUND, "no such route").into_response()
}

/// Applies the fault; `Some` is the answer to give instead of the normal one.
async fn fault(served: &Shared, headers: &HeaderMap) -> Option<Response> {
    let fault = {
        let mut s = served.lock().unwrap();
        if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            s.keys.push(key.to_string());
        }
        s.fault.clone()
    };
    match fault {
        Fault::None => None,
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::ServerError => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(
                    json!({"detail": {"error": "engine exploded", "error_code": "SRV_001"}}),
                ),
            )
                .into_response(),
        ),
        Fault::ServerErrorText(text) => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"detail": {"error": text, "error_code": "SRV_001"}})),
            )
                .into_response(),
        ),
        // Handled by the recording layer (redirect) or the range route (huge replies).
        Fault::RedirectTo(_)
        | Fault::HugeRange(_)
        | Fault::HugeRangeAbove { .. }
        | Fault::Rewrite(..) => None,
        Fault::Malformed => Some(
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"height\": 3, \"block_hash\": ",
            )
                .into_response(),
        ),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"detail": {"error": "Block not found", "error_code": "BM_001"}})),
    )
        .into_response()
}

async fn height(State(s): State<Shared>, h: HeaderMap) -> Response {
    if let Some(r) = fault(&s, &h).await {
        return r;
    }
    let s = s.lock().unwrap();
    match s.chain.last() {
        Some(tip) => {
            let height = s.claimed_height.map_or(tip["height"].clone(), Value::from);
            axum::Json(json!({"height": height, "block_hash": tip["hash"]})).into_response()
        }
        None => not_found(),
    }
}

#[derive(Deserialize)]
struct Page {
    from: u64,
    limit: u64,
}

fn slice(chain: &[Value], from: u64, limit: u64) -> &[Value] {
    let start = (from as usize).min(chain.len());
    let end = start.saturating_add(limit as usize).min(chain.len());
    &chain[start..end]
}

async fn range(State(s): State<Shared>, h: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Some(r) = fault(&s, &h).await {
        return r;
    }
    let s = s.lock().unwrap();
    if !s.range_route {
        return (StatusCode::NOT_FOUND, "no such route").into_response();
    }
    match s.fault {
        Fault::HugeRange(bytes) => return huge(bytes),
        Fault::HugeRangeAbove { blocks, bytes } if p.limit > blocks => return huge(bytes),
        _ => {}
    }
    rewritten(
        &s.fault,
        &json!({"blocks": slice(&s.chain, p.from, p.limit)}),
    )
}

/// `doc` as JSON, with the text a `Rewrite` fault names replaced.
fn rewritten(fault: &Fault, doc: &Value) -> Response {
    let mut text = doc.to_string();
    if let Fault::Rewrite(from, to) = fault {
        text = text.replace(from.as_str(), to);
    }
    (StatusCode::OK, [("content-type", "application/json")], text).into_response()
}

async fn headers(State(s): State<Shared>, h: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Some(r) = fault(&s, &h).await {
        return r;
    }
    let s = s.lock().unwrap();
    let headers: Vec<Value> = slice(&s.chain, p.from, p.limit)
        .iter()
        .map(|b| json!({"height": b["height"], "hash": b["hash"], "previous_hash": b["previous_hash"]}))
        .collect();
    axum::Json(json!({"headers": headers})).into_response()
}

async fn at_height(State(s): State<Shared>, h: HeaderMap, Path(height): Path<u64>) -> Response {
    if let Some(r) = fault(&s, &h).await {
        return r;
    }
    let s = s.lock().unwrap();
    match s.chain.get(height as usize) {
        Some(b) => rewritten(&s.fault, b),
        None => not_found(),
    }
}

/// `{"blocks": [[[[...` of `bytes` bytes, with a `Content-Length`: valid JSON as far as it
/// goes, and never-ending.
fn huge(bytes: usize) -> Response {
    let mut body = b"{\"blocks\": ".to_vec();
    body.resize(bytes.max(body.len()), b'[');
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// A bare upstream on its own port that answers `/chain/height` with `height` and every other
/// request with `bytes` bytes of `[[[[...`, without a `Content-Length`: the reply ends when it
/// closes the connection, so only reading it tells its size.
pub async fn close_delimited(height: u64, bytes: usize) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /api/v1/chain/height") {
                    let body =
                        format!(r#"{{"height":{height},"block_hash":"{}"}}"#, "a".repeat(64));
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    return;
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"blocks\": ")
                    .await;
                let chunk = vec![b'['; 64 * 1024];
                let mut sent = 0;
                while sent < bytes {
                    let n = chunk.len().min(bytes - sent);
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}
