//! A fault-injecting stand-in upstream: a small axum server speaking the follower protocol over
//! a chain the test sets, whose behaviour can be switched while it runs (down, slow, 5xx,
//! malformed JSON, no range route).

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
    /// Requests received, on every route.
    pub requests: u64,
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
            requests: 0,
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

    /// Requests received so far.
    #[allow(dead_code)] // not every test file that includes the stand-in counts requests
    pub fn requests(&self) -> u64 {
        self.served.lock().unwrap().requests
    }

    /// Serves these documents (possibly invalid) from now on.
    pub fn documents(&self, docs: Vec<Value>) {
        self.served.lock().unwrap().chain = docs;
    }
}

fn router(served: Shared) -> Router {
    Router::new()
        .route("/api/v1/chain/height", get(height))
        .route("/api/v1/blocks/range", get(range))
        .route("/api/v1/blocks/headers", get(headers))
        .route("/api/v1/blocks/height/{height}", get(at_height))
        .with_state(served)
}

/// Applies the fault; `Some` is the answer to give instead of the normal one.
async fn fault(served: &Shared, headers: &HeaderMap) -> Option<Response> {
    let fault = {
        let mut s = served.lock().unwrap();
        s.requests += 1;
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
            axum::Json(json!({"height": tip["height"], "block_hash": tip["hash"]})).into_response()
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
    axum::Json(json!({"blocks": slice(&s.chain, p.from, p.limit)})).into_response()
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
        Some(b) => axum::Json(b.clone()).into_response(),
        None => not_found(),
    }
}
