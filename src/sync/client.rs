//! The upstream HTTP client: the four requests a follower makes of a block-manager or engine
//! (tip height, block ranges, single blocks, headers), each with the request timeout, retries
//! with backoff, a latency metric, and failures mapped onto the SYNC_00x codes.

use super::error::{SyncError, code};
use super::retry::{Backoff, RetryOn};
use crate::metrics::Metrics;
use bytes::Bytes;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The upstream's tip, from `GET /api/v1/chain/height`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpstreamTip {
    /// Height of the upstream tip.
    pub height: u64,
    /// Hash of the upstream tip.
    #[serde(rename = "block_hash")]
    pub hash: String,
}

/// Raw block documents as the upstream sent them, not yet decoded.
pub enum Bodies {
    /// One `{"blocks": [...]}` range response.
    Range(Bytes),
    /// Single-block responses, in height order (upstreams without a range route).
    Single(Vec<Bytes>),
}

impl Bodies {
    /// Decodes the documents into JSON values in height order. CPU work: run it off the async
    /// threads.
    pub fn decode(self) -> Result<Vec<Value>, SyncError> {
        #[derive(Deserialize)]
        struct Range {
            blocks: Vec<Value>,
        }
        let malformed = |what: &str, e: serde_json::Error| {
            SyncError::new(code::FAILED, format!("upstream sent malformed {what}: {e}"))
        };
        match self {
            Bodies::Range(bytes) => serde_json::from_slice::<Range>(&bytes)
                .map(|r| r.blocks)
                .map_err(|e| malformed("block range JSON", e)),
            Bodies::Single(list) => list
                .iter()
                .map(|b| serde_json::from_slice(b).map_err(|e| malformed("block JSON", e)))
                .collect(),
        }
    }
}

/// Which request (the `kind` label of the fetch-duration metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Height,
    Range,
    Block,
    Headers,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Height => "height",
            Kind::Range => "range",
            Kind::Block => "block",
            Kind::Headers => "headers",
        }
    }
}

/// Why one request failed.
#[derive(Debug)]
enum Failed {
    Timeout,
    Unreachable(String),
    Status(StatusCode, Bytes),
}

impl Failed {
    /// Worth trying again under `on`: a timeout (`retry_on_timeout`), a failing or overloaded
    /// upstream (`retry_on_5xx`, 429 included), or a connection that could not be made (no
    /// request reached the upstream, so trying again is always safe). Other answers are the
    /// upstream's considered reply and are not retried.
    fn retryable(&self, on: RetryOn) -> bool {
        match self {
            Failed::Timeout => on.timeout,
            Failed::Unreachable(_) => true,
            Failed::Status(s, _) => {
                on.server_error && (s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS)
            }
        }
    }

    /// The `reason` label of the retry counter.
    fn reason(&self) -> &'static str {
        match self {
            Failed::Timeout => "timeout",
            Failed::Unreachable(_) => "unreachable",
            Failed::Status(..) => "server_error",
        }
    }

    fn into_sync(self, kind: Kind, what: &str, timeout: Duration) -> SyncError {
        let unavailable = match kind {
            Kind::Height => code::UPSTREAM_UNAVAILABLE,
            _ => code::FETCH,
        };
        match self {
            Failed::Timeout => SyncError::new(
                code::TIMEOUT,
                format!(
                    "upstream did not answer {what} within {:.3} s",
                    timeout.as_secs_f64()
                ),
            ),
            Failed::Unreachable(e) => {
                SyncError::new(unavailable, format!("upstream unreachable for {what}: {e}"))
            }
            Failed::Status(s, body) => SyncError::new(
                unavailable,
                format!(
                    "upstream answered {what} with {s}{}",
                    upstream_message(&body)
                ),
            ),
        }
    }
}

/// The upstream's own error text, when it sent the Lucid error shape.
fn upstream_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/detail/error")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map_or_else(String::new, |m| format!(": {m}"))
}

/// Whether a body is block-manager's "not found" (BM_001), as opposed to a missing route.
fn is_block_not_found(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/detail/error_code")
                .and_then(Value::as_str)
                .map(|c| c == "BM_001")
        })
        .unwrap_or(false)
}

/// Client for one upstream. Cheap to share behind an `Arc`.
pub struct Upstream {
    http: reqwest::Client,
    base: String,
    shown: String,
    timeout: Duration,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    // Learnt once: an engine without these routes is asked block by block instead.
    no_range: AtomicBool,
    no_headers: AtomicBool,
}

impl Upstream {
    /// A client for `url` with this request timeout, retry policy and optional API key.
    pub fn connect(
        url: &str,
        timeout: Duration,
        backoff: Backoff,
        api_key: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SyncError> {
        let invalid = |why: String| SyncError::new(code::FAILED, why);
        let parsed =
            reqwest::Url::parse(url).map_err(|e| invalid(format!("invalid upstream URL: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key)
                .map_err(|_| invalid("the upstream API key is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .default_headers(headers)
            .user_agent(concat!(
                "block-manager/",
                env!("CARGO_PKG_VERSION"),
                " follower"
            ))
            .build()
            .map_err(|e| invalid(format!("cannot build the upstream client: {e}")))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_string(),
            shown: without_credentials(&parsed),
            timeout,
            backoff,
            metrics,
            no_range: AtomicBool::new(false),
            no_headers: AtomicBool::new(false),
        })
    }

    /// The upstream URL without any user name or password in it (for status and logs).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether ranges are fetched block by block because the upstream has no range route.
    pub fn per_block(&self) -> bool {
        self.no_range.load(Ordering::Relaxed)
    }

    /// One attempt: the body of a 2xx answer, or why not.
    async fn get_once(&self, kind: Kind, path: &str) -> Result<Bytes, Failed> {
        let started = Instant::now();
        let result = async {
            let res = self
                .http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .map_err(classify)?;
            let status = res.status();
            let body = res.bytes().await.map_err(classify)?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(Failed::Status(status, body))
            }
        }
        .await;
        self.metrics
            .fetch_duration
            .with_label_values(&[kind.label()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// `get_once` under the retry policy.
    async fn get(&self, kind: Kind, path: &str) -> Result<Bytes, Failed> {
        let on = self.backoff.retry_on();
        // Asked only when another attempt is left, so `true` means a retry follows.
        let retry = |f: &Failed| {
            let again = f.retryable(on);
            if again {
                self.metrics
                    .sync_retries
                    .with_label_values(&[f.reason()])
                    .inc();
            }
            again
        };
        self.backoff.run(|| self.get_once(kind, path), retry).await
    }

    /// The upstream tip; `None` while the upstream chain is empty.
    pub async fn tip(&self) -> Result<Option<UpstreamTip>, SyncError> {
        let what = "the chain height";
        match self.get(Kind::Height, "/api/v1/chain/height").await {
            Ok(body) => serde_json::from_slice(&body).map(Some).map_err(|e| {
                SyncError::new(
                    code::FAILED,
                    format!("upstream sent a malformed chain height: {e}"),
                )
            }),
            Err(Failed::Status(StatusCode::NOT_FOUND, body)) if is_block_not_found(&body) => {
                Ok(None)
            }
            Err(e) => Err(e.into_sync(Kind::Height, what, self.timeout)),
        }
    }

    /// Up to `limit` blocks ascending from `from`; fewer when the upstream has fewer.
    pub async fn blocks(&self, from: u64, limit: u32) -> Result<Bodies, SyncError> {
        if !self.no_range.load(Ordering::Relaxed) {
            let path = format!("/api/v1/blocks/range?from={from}&limit={limit}");
            match self.get(Kind::Range, &path).await {
                Ok(body) => return Ok(Bodies::Range(body)),
                Err(Failed::Status(s, _))
                    if s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED =>
                {
                    if !self.no_range.swap(true, Ordering::Relaxed) {
                        tracing::info!(upstream = %self.shown, "upstream has no block range route; fetching block by block");
                    }
                }
                Err(e) => {
                    return Err(e.into_sync(
                        Kind::Range,
                        &format!("blocks from {from}"),
                        self.timeout,
                    ));
                }
            }
        }
        let mut bodies = Vec::with_capacity(limit as usize);
        for height in from..from.saturating_add(u64::from(limit)) {
            match self.block_at(height).await? {
                Some(body) => bodies.push(body),
                None => break,
            }
        }
        Ok(Bodies::Single(bodies))
    }

    /// The block at `height`, or `None` when the upstream has none there.
    async fn block_at(&self, height: u64) -> Result<Option<Bytes>, SyncError> {
        let path = format!("/api/v1/blocks/height/{height}");
        match self.get(Kind::Block, &path).await {
            Ok(body) => Ok(Some(body)),
            Err(Failed::Status(StatusCode::NOT_FOUND, _)) => Ok(None),
            Err(e) => Err(e.into_sync(Kind::Block, &format!("block {height}"), self.timeout)),
        }
    }

    /// `(height, hash)` of the upstream's blocks in `from..=to` that it has, ascending.
    pub async fn hashes(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, SyncError> {
        #[derive(Deserialize)]
        struct Header {
            height: u64,
            hash: String,
        }
        #[derive(Deserialize)]
        struct Headers {
            headers: Vec<Header>,
        }
        let what = format!("headers {from}-{to}");
        if !self.no_headers.load(Ordering::Relaxed) {
            let limit = to.saturating_sub(from).saturating_add(1);
            let path = format!("/api/v1/blocks/headers?from={from}&limit={limit}");
            match self.get(Kind::Headers, &path).await {
                Ok(body) => {
                    let page: Headers = serde_json::from_slice(&body).map_err(|e| {
                        SyncError::new(code::FAILED, format!("upstream sent malformed {what}: {e}"))
                    })?;
                    return Ok(page
                        .headers
                        .into_iter()
                        .filter(|h| (from..=to).contains(&h.height))
                        .map(|h| (h.height, h.hash))
                        .collect());
                }
                Err(Failed::Status(s, _))
                    if s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED =>
                {
                    self.no_headers.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into_sync(Kind::Headers, &what, self.timeout)),
            }
        }
        // No headers route: the hashes come from whole blocks, which are few (a reorg depth).
        let mut out = Vec::new();
        for height in from..=to {
            let Some(body) = self.block_at(height).await? else {
                break;
            };
            let hash = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| {
                    SyncError::new(code::FAILED, format!("upstream block {height} has no hash"))
                })?;
            out.push((height, hash));
        }
        Ok(out)
    }
}

fn classify(e: reqwest::Error) -> Failed {
    if e.is_timeout() {
        Failed::Timeout
    } else {
        // Keep the root cause ("connection refused"), not just "error sending request".
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = s.to_string();
            source = s.source();
        }
        Failed::Unreachable(text)
    }
}

fn without_credentials(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.as_str().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_drops_user_and_password() {
        let url = reqwest::Url::parse("http://bob:secret@127.0.0.1:9000/base/").unwrap();
        assert_eq!(without_credentials(&url), "http://127.0.0.1:9000/base");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let all = RetryOn {
            timeout: true,
            server_error: true,
        };
        assert!(Failed::Timeout.retryable(all));
        assert!(Failed::Unreachable("refused".into()).retryable(all));
        assert!(Failed::Status(StatusCode::BAD_GATEWAY, Bytes::new()).retryable(all));
        assert!(Failed::Status(StatusCode::TOO_MANY_REQUESTS, Bytes::new()).retryable(all));
        assert!(!Failed::Status(StatusCode::UNAUTHORIZED, Bytes::new()).retryable(all));
    }

    #[test]
    fn retry_on_timeout_and_retry_on_5xx_choose_what_is_retried() {
        let none = RetryOn {
            timeout: false,
            server_error: false,
        };
        assert!(!Failed::Timeout.retryable(none));
        assert!(!Failed::Status(StatusCode::BAD_GATEWAY, Bytes::new()).retryable(none));
        assert!(!Failed::Status(StatusCode::TOO_MANY_REQUESTS, Bytes::new()).retryable(none));
        assert!(Failed::Unreachable("refused".into()).retryable(none));
        let only_timeouts = RetryOn {
            timeout: true,
            server_error: false,
        };
        assert!(Failed::Timeout.retryable(only_timeouts));
        assert!(
            !Failed::Status(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()).retryable(only_timeouts)
        );
    }

    #[test]
    fn failures_map_onto_the_sync_codes() {
        let t = Duration::from_secs(1);
        let down = || Failed::Unreachable("refused".into());
        assert_eq!(
            down().into_sync(Kind::Height, "h", t).code,
            code::UPSTREAM_UNAVAILABLE
        );
        assert_eq!(down().into_sync(Kind::Range, "r", t).code, code::FETCH);
        assert_eq!(
            Failed::Timeout.into_sync(Kind::Range, "r", t).code,
            code::TIMEOUT
        );
        let body = Bytes::from_static(br#"{"detail":{"error":"boom","error_code":"SRV_001"}}"#);
        let e =
            Failed::Status(StatusCode::INTERNAL_SERVER_ERROR, body).into_sync(Kind::Height, "h", t);
        assert_eq!(e.code, code::UPSTREAM_UNAVAILABLE);
        assert!(e.message.ends_with("boom"), "{}", e.message);
    }

    #[test]
    fn range_bodies_decode_in_order_and_malformed_ones_are_sync_001() {
        let ok = Bodies::Range(Bytes::from_static(
            br#"{"blocks":[{"height":1},{"height":2}]}"#,
        ));
        let values = ok.decode().unwrap();
        assert_eq!(values[1]["height"], 2);
        let bad = Bodies::Range(Bytes::from_static(b"{\"blocks\": [")).decode();
        assert_eq!(bad.unwrap_err().code, code::FAILED);
        let single = Bodies::Single(vec![Bytes::from_static(b"{\"height\":7}")]);
        assert_eq!(single.decode().unwrap()[0]["height"], 7);
    }

    #[test]
    fn only_block_managers_not_found_means_an_empty_chain() {
        assert!(is_block_not_found(br#"{"detail":{"error_code":"BM_001"}}"#));
        assert!(!is_block_not_found(b"Not Found"));
    }
}
