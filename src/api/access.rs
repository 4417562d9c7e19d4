//! Access control and per-client limits: API keys (constant-time), the rate limit, and the
//! follower read-only rule.

use crate::app::AppState;
use crate::config::RateLimitConfig;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The credential a request carries: `X-API-Key`, else `Authorization: Bearer`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in constant time: both sides are hashed and blake3's `Hash` equality is
/// constant-time, so neither content nor length leaks through timing.
fn same_key(given: &str, configured: &str) -> bool {
    blake3::hash(given.as_bytes()) == blake3::hash(configured.as_bytes())
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
}

fn grant(state: &AppState, headers: &HeaderMap) -> Result<Option<Grant>, ApiError> {
    let Some(given) = credential(headers) else {
        return Ok(None);
    };
    let sec = &state.config.security;
    if sec.api_key.get().is_some_and(|k| same_key(given, k)) {
        return Ok(Some(Grant::Write));
    }
    if sec.read_api_key.get().is_some_and(|k| same_key(given, k)) {
        return Ok(Some(Grant::Read));
    }
    state
        .metrics
        .auth_failures
        .with_label_values(&["invalid"])
        .inc();
    Err(ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_002").msg("Invalid API key"))
}

/// Route layer for read routes: open unless `security.require_read_auth` is on.
pub async fn require_read(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.security.require_read_auth && grant(&state, req.headers())?.is_none() {
        state
            .metrics
            .auth_failures
            .with_label_values(&["missing"])
            .inc();
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_001")
            .msg("Authentication required: send X-API-Key or Authorization: Bearer with a read or write key"));
    }
    Ok(next.run(req).await)
}

/// Route layer for write routes: a configured write key must be presented.
pub async fn require_write(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.security.api_key.get().is_none() {
        state
            .metrics
            .auth_failures
            .with_label_values(&["writes_disabled"])
            .inc();
        return Err(ApiError::new(StatusCode::FORBIDDEN, "AUTH_004")
            .msg("Writes are disabled: set BLOCK_MANAGER_API_KEY (or security.api_key) to a secret and send it as X-API-Key"));
    }
    match grant(&state, req.headers())? {
        Some(Grant::Write) => Ok(next.run(req).await),
        Some(Grant::Read) => {
            state
                .metrics
                .auth_failures
                .with_label_values(&["insufficient"])
                .inc();
            Err(ApiError::new(StatusCode::FORBIDDEN, "AUTH_003")
                .msg("This key may only read; writes need the write key (BLOCK_MANAGER_API_KEY)"))
        }
        None => {
            state
                .metrics
                .auth_failures
                .with_label_values(&["missing"])
                .inc();
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_001").msg(
                "Authentication required: send the write key as X-API-Key or Authorization: Bearer",
            ))
        }
    }
}

/// Fixed-window request counters per client address.
pub struct RateLimiter {
    enabled: bool,
    limit: u32,
    window: Duration,
    epoch: Instant,
    clients: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RateLimiter {
    /// A limiter per `rate_limits`.
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            limit: cfg.requests.max(1),
            window: Duration::from_secs(cfg.window_seconds.max(1)),
            epoch: Instant::now(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request; `Err(seconds)` when over the limit, with when to retry.
    pub fn hit(&self, client: IpAddr) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let elapsed = self.epoch.elapsed();
        let window = elapsed.as_secs() / self.window.as_secs();
        let mut clients = self.clients.lock().expect("rate limiter lock");
        // Forget clients from past windows now and then so the map stays small.
        if clients.len() > 10_000 {
            clients.retain(|_, (w, _)| *w == window);
        }
        let entry = clients.entry(client).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit {
            let next = (window + 1) * self.window.as_secs();
            return Err(next.saturating_sub(elapsed.as_secs()).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Middleware: the per-client rate limit; health and metrics are exempt so probes never fail.
pub async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    // Exactly the probe routes: an unknown `/healthz` is an ordinary request.
    if matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/api/v1/health" | "/metrics"
    ) {
        return Ok(next.run(req).await);
    }
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
    if let Err(retry) = state.limiter.hit(client) {
        state.metrics.rate_limited.inc();
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_001").msg(format!(
            "Rate limit exceeded: at most {} requests per {} s; retry in {retry} s",
            state.config.rate_limits.requests, state.config.rate_limits.window_seconds
        ));
        e.retry_after = Some(retry);
        return Err(e);
    }
    Ok(next.run(req).await)
}

/// Refuses local writes on a follower: its chain comes only from upstream.
pub fn writable(state: &AppState) -> Result<(), ApiError> {
    match state.config.upstream() {
        Some(url) => Err(ApiError::new(StatusCode::CONFLICT, "SYNC_006")
            .msg(format!("This node follows {}: its chain comes only from upstream, so local writes are refused; send writes to the upstream", crate::sync::shown_url(url)))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_refuses_past_the_limit_with_a_retry_time() {
        let l = RateLimiter::new(&RateLimitConfig {
            enabled: true,
            requests: 2,
            window_seconds: 60,
        });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(l.hit(ip).is_ok());
        assert!(l.hit(ip).is_ok());
        let retry = l.hit(ip).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(
            l.hit(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).is_ok(),
            "limits are per client"
        );
    }

    #[test]
    fn bearer_and_header_credentials_are_read() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credential(&h), Some("abc"));
        h.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(credential(&h), Some("xyz"));
        assert!(same_key("k", "k") && !same_key("k", "kk"));
    }
}
