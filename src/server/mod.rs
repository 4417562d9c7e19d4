//! Serving HTTP/1 on our own accept loop, so that a hostile or broken client never takes the
//! service down: a request head must arrive within `api.header_timeout_seconds`, an idle
//! kept-alive connection closes after `api.idle_timeout_seconds`, and at most
//! `api.max_connections` (kept below the open-file limit) are served at once. At the cap the
//! loop keeps accepting, so probes never wait behind held sockets in the accept queue: it
//! sheds the oldest connections that have not sent a complete request head, and while every
//! connection is busy with a request it answers new requests 503 SRV_003 with `Retry-After`
//! (`/health*` is still served).

mod conn;
mod fdlimit;
pub mod head;
mod tracker;

pub use fdlimit::{connection_cap, raise_open_file_limit};
pub use tracker::{ConnectionTracker, StreamSlot};

use crate::error::Catalog;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Response, StatusCode, header};
use conn::{Conn, RequestDone, Timeouts, TrackedBody, Watched};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracker::Admission;

/// Seconds a client refused at the cap is told to wait.
const RETRY_AFTER_SECONDS: u64 = 1;

/// What the accept loop needs besides the listener.
pub struct Serve {
    /// The routes with their middleware.
    pub router: Router,
    /// The connection accounting (also in the app state).
    pub tracker: Arc<ConnectionTracker>,
    /// Error messages for the answers written here.
    pub catalog: Arc<Catalog>,
    /// `api.header_timeout_seconds`.
    pub header_timeout: Duration,
    /// `api.idle_timeout_seconds`.
    pub idle_timeout: Duration,
    /// Counts connections closed for a late request head.
    pub header_timeouts: prometheus::IntCounter,
}

/// Accepts and serves until `shutdown`, then stops accepting and resolves once every
/// connection has finished (idle and half-sent ones close at once, requests in flight finish).
/// Dropping the future drops every connection.
pub async fn serve(listener: TcpListener, serve: Serve, shutdown: CancellationToken) {
    let serve = Arc::new(serve);
    let mut tasks = JoinSet::new();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        // Shed connections let go of their sockets moments later; accepting faster than that
        // would run the process out of descriptors.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = serve.tracker.wait_for_sheds() => {}
        }
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small answers go out at once instead of waiting on Nagle.
                let _ = stream.set_nodelay(true);
                match serve.tracker.admit() {
                    Admission::Served(conn, slot) => {
                        let (serve, shutdown) = (serve.clone(), shutdown.clone());
                        tasks.spawn(async move {
                            connection(stream, peer, conn, false, &serve, shutdown).await;
                            drop(slot);
                        });
                    }
                    Admission::Excess(conn, slot) => {
                        let (serve, shutdown) = (serve.clone(), shutdown.clone());
                        tasks.spawn(async move {
                            connection(stream, peer, conn, true, &serve, shutdown).await;
                            drop(slot);
                        });
                    }
                    Admission::Refused => refuse_now(&stream, &serve),
                }
            }
            Err(e) => {
                // Out of descriptors: the connection waits in the backlog, so free one (a
                // connection still waiting for its head) and pause briefly rather than spin.
                let out_of_files = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let shed = out_of_files && serve.tracker.shed_one();
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, shed, "accept failed");
                    last_accept_error = Some(Instant::now());
                }
                if !shed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection until it ends, is shed, times out, or shutdown closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    excess: bool,
    serve: &Arc<Serve>,
    shutdown: CancellationToken,
) {
    let timeouts = Timeouts {
        header: serve.header_timeout,
        idle: serve.idle_timeout,
        header_timeouts: serve.header_timeouts.clone(),
    };
    let io = TokioIo::new(Watched::new(
        stream,
        conn.clone(),
        timeouts,
        serve.catalog.clone(),
    ));
    let service = {
        let (conn, serve) = (conn.clone(), serve.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let done = RequestDone::begin(conn.clone());
            let serve = serve.clone();
            async move {
                let mut req = req.map(Body::new);
                // What `into_make_service_with_connect_info` gave handlers and middleware.
                req.extensions_mut().insert(ConnectInfo(peer));
                let res = if excess && !is_probe(req.uri().path()) {
                    serve.tracker.count_refused();
                    refusal(&serve)
                } else {
                    let router = serve.router.clone();
                    match router.oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    }
                };
                Ok::<_, Infallible>(res.map(|inner| TrackedBody { inner, _done: done }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(head::HYPER_MAX_BUF)
        .max_headers(head::HYPER_MAX_HEADERS)
        // The header and idle timeouts are the socket's (see `conn::Watched`).
        .header_read_timeout(None)
        // An overflow connection gets one answer and closes, freeing its place.
        .keep_alive(!excess);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut draining = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.shed.notified() => {
                tracing::debug!(%peer, "connection shed to make room");
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                // Nothing in flight (a half-sent head, or idle): close now. Otherwise let the
                // request finish and close after its answer.
                if !conn.is_busy() {
                    return;
                }
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Probes are answered even over the cap: they are cheap and say whether we are alive.
fn is_probe(path: &str) -> bool {
    path == "/health" || path.starts_with("/health/") || path == "/api/v1/health"
}

fn refusal_body(serve: &Serve) -> Vec<u8> {
    let body = serve.catalog.body(
        "SRV_003",
        Some("Too many connections: every connection is busy; try again shortly"),
        &json!({
            "max_connections": serve.tracker.capacity(),
            "retry_after_seconds": RETRY_AFTER_SECONDS,
        }),
    );
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

/// 503 SRV_003 with `Retry-After`, for a request beyond the cap.
fn refusal(serve: &Serve) -> Response<Body> {
    let mut res = Response::new(Body::from(refusal_body(serve)));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The same 503 written straight to a socket we cannot afford to serve; whatever does not
/// fit in the socket buffer at once is dropped with the connection.
fn refuse_now(stream: &TcpStream, serve: &Serve) {
    let body = refusal_body(serve);
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECONDS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    let _ = stream.try_write(&out);
}
