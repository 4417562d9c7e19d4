//! The ceiling of the HTTP stack on this machine: axum on tokio's default runtime with no
//! middleware, answering every GET with one document prebuilt in memory. `bench/ceiling.sh`
//! runs it beside block-manager so the service's figures can be read as a share of it.
//!
//! Usage: `bare <port> [body file]` — without a file the body is a made-up 2.9 KB JSON
//! document; the script passes a block the service stored, so both answer the same bytes.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use bytes::Bytes;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: bare <port> [body file]"))?;
    let body = match args.next() {
        Some(path) => Bytes::from(std::fs::read(path)?),
        None => Bytes::from(format!(
            "{{\"height\":1,\"data\":\"{}\"}}",
            "x".repeat(2900)
        )),
    };
    // Every path answers, as a catch-all: the router does no more work than one match.
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(CONTENT_TYPE, "application/json")], body).into_response() }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
