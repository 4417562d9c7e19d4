//! Access control and per-client limits: who the client is (trusted proxies), API keys
//! (constant-time), the rate limit per address or per key, and the follower read-only rule.

pub use super::limiter::RateLimiter;

use super::limiter::KeyId;
use crate::api::state::AppState;
use crate::config::Cidr;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The credential a request carries: a non-empty `X-API-Key`, else `Authorization: Bearer`.
/// An empty `X-API-Key` (some clients always send the header) does not hide the token.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Some(k);
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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

/// Which configured key `given` is, if any.
fn key_of(state: &AppState, given: &str) -> Option<KeyId> {
    let sec = &state.config.security;
    if sec.api_key.get().is_some_and(|k| same_key(given, k)) {
        return Some(KeyId::Write);
    }
    if sec.read_api_key.get().is_some_and(|k| same_key(given, k)) {
        return Some(KeyId::Read);
    }
    None
}

/// A refusal: counted by `reason` and logged once, here, with its code (never the key; the
/// log adds the request's id, see `telemetry::context`).
fn refuse(state: &AppState, reason: &str, e: ApiError) -> ApiError {
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    tracing::warn!(
        code = e.code,
        reason,
        status = e.status.as_u16(),
        "request refused: {}",
        e.message.as_deref().unwrap_or(e.code)
    );
    e
}

fn grant(state: &AppState, headers: &HeaderMap) -> Result<Option<Grant>, ApiError> {
    let Some(given) = credential(headers) else {
        return Ok(None);
    };
    match key_of(state, given) {
        Some(KeyId::Write) => Ok(Some(Grant::Write)),
        Some(KeyId::Read) => Ok(Some(Grant::Read)),
        None => Err(refuse(
            state,
            "invalid",
            ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_002").msg("Invalid API key"),
        )),
    }
}

/// Route layer for read routes: open unless `security.require_read_auth` is on.
pub async fn require_read(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.security.require_read_auth && grant(&state, req.headers())?.is_none() {
        return Err(refuse(&state, "missing", ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_001")
            .msg("Authentication required: send X-API-Key or Authorization: Bearer with a read or write key")));
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
        return Err(refuse(&state, "writes_disabled", ApiError::new(StatusCode::FORBIDDEN, "AUTH_004")
            .msg("Writes are disabled: set BLOCK_MANAGER_API_KEY (or security.api_key) to a secret and send it as X-API-Key")));
    }
    match grant(&state, req.headers())? {
        Some(Grant::Write) => Ok(next.run(req).await),
        Some(Grant::Read) => Err(refuse(
            &state,
            "insufficient",
            ApiError::new(StatusCode::FORBIDDEN, "AUTH_003")
                .msg("This key may only read; writes need the write key (BLOCK_MANAGER_API_KEY)"),
        )),
        None => Err(refuse(
            &state,
            "missing",
            ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_001").msg(
                "Authentication required: send the write key as X-API-Key or Authorization: Bearer",
            ),
        )),
    }
}

/// The limiter for `config`, reporting into `metrics`; a bad `api.trusted_proxies` entry is
/// refused with the reason (the loader refuses it first; this covers configs built in code).
pub fn limiter(
    config: &crate::config::Config,
    metrics: &crate::metrics::Metrics,
) -> Result<RateLimiter, String> {
    let trusted = crate::config::parse_cidrs(&config.api.trusted_proxies)
        .map_err(|(entry, why)| format!("invalid api.trusted_proxies entry '{entry}': {why}"))?;
    Ok(RateLimiter::new(
        &config.rate_limits,
        metrics.rate_limit_buckets.clone(),
        metrics.rate_limit_evictions.clone(),
    )
    .trusting(trusted))
}

/// The client's address, as worked out once per request by [`client_addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Who sent the request: the peer, or, when the peer is a trusted proxy, the right-most
/// address of its forwarding header that is not itself a trusted proxy. Reuses the answer
/// an outer layer already put into the request.
pub fn client_addr(state: &AppState, req: &Request) -> IpAddr {
    if let Some(c) = req.extensions().get::<ClientAddr>() {
        return c.0;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
    resolve(
        peer.to_canonical(),
        req.headers(),
        state.limiter.trusted_proxies(),
    )
}

/// Most forwarding hops looked at, from the right: a longer chain is not believed further.
const MAX_HOPS: usize = 16;

fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    // X-Forwarded-For when present (what common proxies append to), else RFC 7239 Forwarded.
    let hops = if headers.contains_key("x-forwarded-for") {
        hops_from_the_right(headers, "x-forwarded-for", parse_hop)
    } else {
        hops_from_the_right(headers, header::FORWARDED.as_str(), forwarded_for)
    };
    let mut client = peer;
    for hop in hops {
        // An unreadable hop (`unknown`, an obfuscated name, garbage) ends the trail: the last
        // address a trusted proxy vouched for stands.
        let Some(ip) = hop else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The entries of every `name` line, right-most first, at most [`MAX_HOPS`]. Lines further
/// down were added later. A line that is not text ends the list with an unreadable hop, so
/// skipping it can never expose a client-written line above it.
fn hops_from_the_right(
    headers: &HeaderMap,
    name: &str,
    parse: fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for line in headers.get_all(name).iter().rev() {
        let Ok(text) = line.to_str() else {
            out.push(None);
            return out;
        };
        for entry in text.rsplit(',') {
            out.push(parse(entry));
            if out.len() == MAX_HOPS {
                return out;
            }
        }
    }
    out
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let e = entry.trim().trim_matches('"');
    if let Some(rest) = e.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = e.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(v))
            .flatten()
    })
}

/// The rate limit, per valid API key or else per client address: the 429 answer when this
/// request is over it, `None` when it may go on. Health and metrics are exempt so probes never
/// fail.
pub fn rate_limited(state: &AppState, req: &Request) -> Option<Response> {
    let path = req.uri().path();
    // Exactly the probe routes: an unknown `/healthz` is an ordinary request.
    if matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/api/v1/health" | "/metrics"
    ) {
        return None;
    }
    // An unknown key is not refused here (the route's own layer decides that, and logs it):
    // it simply counts against the address like a request without one.
    let outcome = match credential(req.headers()).and_then(|k| key_of(state, k)) {
        Some(key) => state
            .limiter
            .hit_key(key)
            .map_err(|retry| (retry, state.config.rate_limits.per_key_requests, "key")),
        None => state
            .limiter
            .hit(client_addr(state, req))
            .map_err(|retry| (retry, state.config.rate_limits.requests, "client")),
    };
    let (retry, limit, per) = outcome.err()?;
    state.metrics.rate_limited.inc();
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_001").msg(format!(
        "Rate limit exceeded: at most {limit} requests per {} s per {per}; retry in {retry} s",
        state.config.rate_limits.window_seconds
    ));
    e.retry_after = Some(retry);
    Some(e.into_response())
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
    fn bearer_and_header_credentials_are_read() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credential(&h), Some("abc"));
        h.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(credential(&h), Some("xyz"));
        assert!(same_key("k", "k") && !same_key("k", "kk"));
    }

    #[test]
    fn an_empty_x_api_key_falls_back_to_the_bearer_token() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "  ".parse().unwrap());
        assert_eq!(credential(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(credential(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Bearer  ".parse().unwrap());
        assert_eq!(credential(&h), None, "an empty token is no credential");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn trusted(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let t = trusted(&["10.0.0.0/8", "2001:db8:ff::/48"]);
        let gw = ip("10.0.0.5");
        let xff = |v: &str| resolve(gw, &headers(&[("x-forwarded-for", v)]), &t);
        assert_eq!(xff("198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(
            xff("203.0.113.1, 198.51.100.7, 10.0.0.9"),
            ip("198.51.100.7"),
            "the left part is the client's own claim; the trusted hop is skipped"
        );
        assert_eq!(xff("198.51.100.7:5555"), ip("198.51.100.7"));
        assert_eq!(xff("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(xff("::ffff:198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(xff("10.0.0.1, 10.0.0.2"), ip("10.0.0.1"), "all trusted");
        assert_eq!(
            xff("198.51.100.7, garbage"),
            gw,
            "unreadable hop: the proxy stands"
        );
        assert_eq!(xff(""), gw);
        let two_lines = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        assert_eq!(resolve(gw, &two_lines, &t), ip("198.51.100.8"));
        let mut binary = headers(&[("x-forwarded-for", "192.0.2.1")]);
        binary.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"198.51.100.9\xff").unwrap(),
        );
        assert_eq!(
            resolve(gw, &binary, &t),
            gw,
            "a line that is not text is not skipped over to the one above it"
        );
        let fwd = |v: &str| resolve(gw, &headers(&[("forwarded", v)]), &t);
        assert_eq!(
            fwd("for=192.0.2.60;proto=http;by=10.0.0.5"),
            ip("192.0.2.60")
        );
        assert_eq!(
            fwd("for=192.0.2.43, For=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(fwd("for=unknown"), gw);
        assert_eq!(
            resolve(
                gw,
                &headers(&[
                    ("x-forwarded-for", "198.51.100.7"),
                    ("forwarded", "for=192.0.2.1")
                ]),
                &t
            ),
            ip("198.51.100.7"),
            "X-Forwarded-For wins when both are sent"
        );
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=192.0.2.1"),
        ]);
        let peer = ip("203.0.113.50");
        assert_eq!(resolve(peer, &h, &trusted(&["10.0.0.0/8"])), peer);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &[]),
            ip("10.0.0.1"),
            "none trusted"
        );
    }

    #[test]
    fn a_long_forwarding_chain_is_followed_only_so_far() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut chain = vec!["198.51.100.7".to_string()];
        chain.extend((0..40).map(|i| format!("10.0.1.{i}")));
        let h = headers(&[("x-forwarded-for", &chain.join(", "))]);
        let got = resolve(ip("10.0.0.5"), &h, &t);
        assert!(t[0].contains(got), "{got}: stopped inside the trusted hops");
    }
}
