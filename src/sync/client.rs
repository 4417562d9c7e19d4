//! The upstream HTTP client: the four requests a follower makes of a block-manager or engine
//! (tip height, block ranges, single blocks, headers), each with the request timeout, retries
//! with backoff, a latency metric, and failures mapped onto the SYNC_00x codes.
//!
//! A hostile upstream can cost us only time: every reply body is read chunk by chunk against
//! one byte budget shared by all requests in flight (refused once over it, never buffered
//! whole), redirects are followed only within the upstream's own origin (so the API key never
//! reaches another), and the upstream's own error text is escaped and truncated before it goes
//! anywhere.

use super::error::{SyncError, code};
use super::retry::{Backoff, RetryOn};
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most characters of upstream text (its error message) we keep.
const MAX_UPSTREAM_TEXT: usize = 200;
/// Most bytes of a non-2xx reply we read: enough for an error message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most redirects followed within the upstream's origin.
const MAX_REDIRECTS: usize = 5;

/// The upstream's tip, from `GET /api/v1/chain/height`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpstreamTip {
    /// Height of the upstream tip.
    pub height: u64,
    /// Hash of the upstream tip.
    #[serde(rename = "block_hash")]
    pub hash: String,
}

/// The bytes all upstream replies in flight may hold together
/// (`synchronization.max_inflight_bytes`). A reply with a `Content-Length` reserves exactly
/// that much before its body is read; one without reserves the whole budget while it streams
/// and gives back what it did not use. Nobody ever holds part of a reservation while waiting
/// for more, so replies cannot wait on each other in a circle.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    limit: u32,
}

impl Budget {
    /// A budget of `bytes` (capped at 4 GiB, the largest reservation a semaphore takes).
    pub fn new(bytes: u64) -> Self {
        let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        u64::from(self.limit)
    }

    async fn reserve(&self, bytes: u32) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_many_owned(bytes.clamp(1, self.limit))
            .await
            .expect("the budget's semaphore is never closed")
    }
}

/// A reply body, holding its share of the byte budget until it is dropped.
pub struct Body {
    bytes: Bytes,
    _held: OwnedSemaphorePermit,
}

impl Body {
    /// The bytes as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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
    /// The reply is larger than the byte budget (`Some`: as its `Content-Length` said).
    TooLarge(Option<u64>, u64),
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
            // Asking again would only bring the same oversized reply.
            Failed::TooLarge(..) => false,
        }
    }

    /// The `reason` label of the retry counter.
    fn reason(&self) -> &'static str {
        match self {
            Failed::Timeout => "timeout",
            Failed::Unreachable(_) => "unreachable",
            Failed::Status(..) => "server_error",
            Failed::TooLarge(..) => "too_large",
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
            Failed::Status(s, _) if s.is_redirection() => SyncError::new(
                unavailable,
                format!(
                    "upstream answered {what} with {s}: a redirect to another origin is not followed (the API key is never sent elsewhere)"
                ),
            ),
            Failed::Status(s, body) => SyncError::new(
                unavailable,
                format!(
                    "upstream answered {what} with {s}{}",
                    upstream_message(&body)
                ),
            ),
            Failed::TooLarge(length, limit) => SyncError::new(
                code::FETCH,
                match length {
                    Some(n) => format!(
                        "upstream's reply to {what} ({n} bytes) is larger than synchronization.max_inflight_bytes ({limit}): refused unread"
                    ),
                    None => format!(
                        "upstream's reply to {what} grew past synchronization.max_inflight_bytes ({limit}) bytes: refused"
                    ),
                },
            ),
        }
    }
}

/// The upstream's own error text, when it sent the Lucid error shape: escaped and truncated.
fn upstream_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(borrow)]
        error: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        detail: Detail<'a>,
    }
    serde_json::from_slice::<Shape>(body).map_or_else(
        |_| String::new(),
        |m| format!(": {}", escaped(&m.detail.error)),
    )
}

/// Text from the upstream made safe to show and log: control characters (newlines, escape
/// sequences) written as escapes, so it cannot forge a log line or drive a terminal, and at
/// most [`MAX_UPSTREAM_TEXT`] characters.
pub fn escaped(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_UPSTREAM_TEXT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a body is block-manager's "not found" (BM_001), as opposed to a missing route.
fn is_block_not_found(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(borrow)]
        error_code: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        detail: Detail<'a>,
    }
    serde_json::from_slice::<Shape>(body).is_ok_and(|s| s.detail.error_code == "BM_001")
}

/// Client for one upstream. Cheap to share behind an `Arc`.
pub struct Upstream {
    http: reqwest::Client,
    base: String,
    query: Option<String>,
    shown: String,
    budget: Budget,
    timeout: Duration,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    // Learnt once: an engine without these routes is asked block by block instead.
    no_range: AtomicBool,
    no_headers: AtomicBool,
    // Most blocks asked per range request: halved whenever a range reply is refused for size,
    // so an upstream with large blocks is asked for fewer at a time instead of never.
    range_cap: AtomicU32,
}

impl Upstream {
    /// A client for `url` with this request timeout, retry policy and optional API key.
    pub fn connect(
        url: &str,
        timeout: Duration,
        backoff: Backoff,
        api_key: Option<&str>,
        budget: Budget,
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
        // reqwest's default policy follows redirects anywhere, default headers (the key)
        // included: stay within the upstream's own scheme, host and port.
        let origin = parsed.origin();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().origin() == origin {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let http = reqwest::Client::builder()
            .redirect(redirects)
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
        // The query string, if any, goes after each request's own path and query.
        let mut base = parsed.clone();
        base.set_query(None);
        base.set_fragment(None);
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_string(),
            query: parsed.query().filter(|q| !q.is_empty()).map(str::to_owned),
            shown: without_credentials(&parsed),
            budget,
            timeout,
            backoff,
            metrics,
            no_range: AtomicBool::new(false),
            no_headers: AtomicBool::new(false),
            range_cap: AtomicU32::new(u32::MAX),
        })
    }

    /// The upstream URL without user name, password or query string (for status and logs).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Most blocks one range request asks for now (lowered by replies refused for size).
    pub fn range_cap(&self) -> u32 {
        self.range_cap.load(Ordering::Relaxed).max(1)
    }

    /// Whether ranges are fetched block by block because the upstream has no range route.
    pub fn per_block(&self) -> bool {
        self.no_range.load(Ordering::Relaxed)
    }

    /// One attempt: the body of a 2xx answer, or why not.
    async fn get_once(&self, kind: Kind, path: &str) -> Result<Body, Failed> {
        let started = Instant::now();
        let result = async {
            let res = self
                .http
                .get(self.url(path))
                .send()
                .await
                .map_err(classify)?;
            let status = res.status();
            if status.is_success() {
                self.read(res).await
            } else {
                Err(Failed::Status(status, error_body(res).await))
            }
        }
        .await;
        if let Err(Failed::TooLarge(..)) = &result {
            self.metrics.sync_replies_refused.inc();
        }
        self.metrics
            .fetch_duration
            .with_label_values(&[kind.label()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn url(&self, path: &str) -> String {
        match &self.query {
            None => format!("{}{path}", self.base),
            Some(q) if path.contains('?') => format!("{}{path}&{q}", self.base),
            Some(q) => format!("{}{path}?{q}", self.base),
        }
    }

    /// Reads a 2xx body under the byte budget, chunk by chunk.
    async fn read(&self, mut res: reqwest::Response) -> Result<Body, Failed> {
        let limit = self.budget.limit();
        let declared = res.content_length();
        let cap = match declared {
            Some(n) if n > limit => return Err(Failed::TooLarge(Some(n), limit)),
            Some(n) => n,
            None => limit,
        };
        // Within the budget, so it fits a u32.
        let mut held = self.budget.reserve(cap as u32).await;
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = res.chunk().await.map_err(classify)? {
            if (buf.len() + chunk.len()) as u64 > cap {
                return Err(Failed::TooLarge(None, limit));
            }
            buf.extend_from_slice(&chunk);
        }
        // A reply without a length held the whole budget while it streamed: keep what it used.
        let used = (buf.len() as u32).max(1);
        if held.num_permits() > used as usize {
            drop(held.split(held.num_permits() - used as usize));
        }
        Ok(Body {
            bytes: buf.freeze(),
            _held: held,
        })
    }

    /// `get_once` under the retry policy.
    async fn get(&self, kind: Kind, path: &str) -> Result<Body, Failed> {
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
            Ok(body) => serde_json::from_slice(body.bytes()).map(Some).map_err(|e| {
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

    /// Up to `limit` blocks ascending from `from` as one `{"blocks": [...]}` reply (fewer
    /// after replies were refused for size); `None` when the upstream has no range route (then
    /// ask [`Upstream::block`] height by height).
    pub async fn range(&self, from: u64, limit: u32) -> Result<Option<Body>, SyncError> {
        if self.no_range.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let limit = limit.min(self.range_cap.load(Ordering::Relaxed)).max(1);
        let path = format!("/api/v1/blocks/range?from={from}&limit={limit}");
        match self.get(Kind::Range, &path).await {
            Ok(body) => Ok(Some(body)),
            Err(e @ Failed::TooLarge(..)) => {
                if limit > 1 {
                    let smaller = limit / 2;
                    self.range_cap.fetch_min(smaller, Ordering::Relaxed);
                    tracing::info!(upstream = %self.shown, blocks = smaller, "range reply too large for synchronization.max_inflight_bytes; asking for fewer blocks per request");
                }
                Err(e.into_sync(Kind::Range, &format!("blocks from {from}"), self.timeout))
            }
            Err(Failed::Status(s, _))
                if s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED =>
            {
                if !self.no_range.swap(true, Ordering::Relaxed) {
                    tracing::info!(upstream = %self.shown, "upstream has no block range route; fetching block by block");
                }
                Ok(None)
            }
            Err(e) => Err(e.into_sync(Kind::Range, &format!("blocks from {from}"), self.timeout)),
        }
    }

    /// The block at `height`, or `None` when the upstream has none there.
    pub async fn block(&self, height: u64) -> Result<Option<Body>, SyncError> {
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
                    let page: Headers = serde_json::from_slice(body.bytes()).map_err(|e| {
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
        #[derive(Deserialize)]
        struct Hashed {
            hash: String,
        }
        let mut out = Vec::new();
        for height in from..=to {
            let Some(body) = self.block(height).await? else {
                break;
            };
            let hash = serde_json::from_slice::<Hashed>(body.bytes())
                .map_err(|_| {
                    SyncError::new(code::FAILED, format!("upstream block {height} has no hash"))
                })?
                .hash;
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

/// At most [`MAX_ERROR_BODY`] bytes of a non-2xx reply (its error message); the rest is not
/// read.
async fn error_body(mut res: reqwest::Response) -> Bytes {
    let mut buf = BytesMut::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = MAX_ERROR_BODY - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    buf.freeze()
}

fn without_credentials(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.as_str().trim_end_matches('/').to_string()
}

/// An upstream URL as it may be shown (health, status, logs, error messages): without user
/// name, password, query string or fragment, which may carry credentials.
pub fn shown_url(url: &str) -> String {
    reqwest::Url::parse(url.trim()).map_or_else(
        |_| "(invalid upstream URL)".to_string(),
        |u| without_credentials(&u),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_drops_user_password_and_query() {
        let url = reqwest::Url::parse("http://bob:secret@127.0.0.1:9000/base/").unwrap();
        assert_eq!(without_credentials(&url), "http://127.0.0.1:9000/base");
        assert_eq!(
            shown_url("https://u:p@engine:8084/?api_key=s3cret#frag"),
            "https://engine:8084"
        );
    }

    #[test]
    fn upstream_text_is_escaped_and_truncated() {
        let text = format!("boom\nINFO forged\x1b[2J{}", "x".repeat(500));
        let shown = escaped(&text);
        assert!(shown.starts_with("boom\\nINFO forged\\u{1b}[2J"), "{shown}");
        assert!(!shown.chars().any(char::is_control));
        // The first MAX_UPSTREAM_TEXT characters are kept (escapes make them longer).
        assert!(shown.ends_with("x…"), "{shown}");
        assert!(shown.chars().count() < MAX_UPSTREAM_TEXT + 10, "{shown}");
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
    fn only_block_managers_not_found_means_an_empty_chain() {
        assert!(is_block_not_found(br#"{"detail":{"error_code":"BM_001"}}"#));
        assert!(!is_block_not_found(b"Not Found"));
    }
}
