//! Per-request observation: request id (accepted or made), one log line per request with
//! method, route template, status, latency and client address, HTTP metrics, the error
//! shape, and caught panics (one layer for all of them: each layer of its own cost every
//! request its own future and a move of the request and response through it).

use crate::api::state::AppState;
use crate::error::ApiError;
use crate::telemetry::{self, Value, context::InRequest};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tower::{Layer, Service};

/// The method as a label: any method outside the standard set is `OTHER`, so made-up methods
/// cannot create new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// One request in the in-flight gauge; leaving on drop also covers requests whose client went
/// away, whose futures are dropped mid-way.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Where the access line is logged: the logger `blockchain.api`, and this module and line for
/// formats that show them.
static ACCESS_LINE: telemetry::Site = telemetry::Site {
    target: "block_manager::http",
    module_path: Some(module_path!()),
    file: Some(file!()),
    line: Some(line!()),
};

/// The request id header, made once: a name given as text is parsed (and allocated) per use.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's id is kept when it is short printable ASCII; otherwise we make one. Returned as
/// the header value it is sent back in (checked once, copied once).
fn request_id(req: &Request) -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(v) = req.headers().get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
    // `{nanos:016x}-{n:06x}`, written without the formatting machinery.
    let mut id = [b'-'; 23];
    hex(nanos, &mut id[..16]);
    hex(n, &mut id[17..]);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `v` in lower-case hex, zero-padded to fill `out`.
fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Outermost middleware but compression: request id, metrics, the access log line, the one
/// error shape of every non-2xx/3xx answer, and caught panics.
///
/// A service of its own rather than `middleware::from_fn`, which cloned the whole stack below
/// it for every request (and dropped the clone after); this calls the inner service in place.
#[derive(Clone)]
pub struct ObserveLayer {
    state: AppState,
}

impl ObserveLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            state: self.state.clone(),
            inner,
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    state: AppState,
    inner: S,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let state = self.state.clone();
        let id = request_id(&req);
        // Worked out once here; the rate limit reads it from the request.
        let client = super::access::client_addr(&state, &req);
        // Behind trusted proxies the forwarding headers were read for it: the rate limit reads
        // the answer from the request. Without them the client is the peer, which the rate
        // limit reads as cheaply as an extension (and an extension costs an allocation).
        if !state.limiter.trusted_proxies().is_empty() {
            req.extensions_mut()
                .insert(super::access::ClientAddr(client));
        }
        // A clone of a standard method copies no bytes; the log shows the method as sent.
        let method_sent = req.method().clone();
        // Layers added with `Router::layer` run after routing, so the template is known here.
        // A fixed label stands in when no route matched: the raw path would put ids into
        // labels.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let started = Instant::now();
        let in_flight = InFlight::enter(state.metrics.http_in_flight.clone());
        // A panic while the request is handed on or answered becomes an opaque 500, logged
        // with the request's id.
        let call = panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        let answer = async move {
            let caught = match call {
                Ok(answer) => AssertUnwindSafe(answer).catch_unwind().await,
                Err(panicked) => Err(panicked),
            };
            match caught {
                Ok(Ok(res)) => res,
                Err(panicked) => panic_response(panicked),
            }
        };
        // Whatever is logged while the request is answered carries its id.
        let answer = InRequest::new(id, answer);
        Box::pin(async move {
            let (res, id) = answer.await;
            let mut res = crate::error::shape(&state.catalog, res).await;
            drop(in_flight);
            let elapsed = started.elapsed();
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            let method = method_label(&method_sent);
            let status = res.status();
            count(&state.metrics, method, route, status, elapsed);
            let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
            let request_id = id.to_str().unwrap_or("-");
            let mut client_buf = [0; 15];
            let client = client_text(client, &mut client_buf);
            // The access line, as the `tracing::info!` below writes it, without tracing's
            // machinery when the subscriber is ours.
            let written = telemetry::write_info(&ACCESS_LINE, "request", |f| {
                f.extend([
                    ("method", Value::Str(method_sent.as_str().into())),
                    ("route", Value::Str(route.into())),
                    ("status", Value::U64(status.as_u16().into())),
                    ("latency_ms", Value::F64(latency_ms)),
                    ("request_id", Value::Str(request_id.into())),
                    ("client", Value::Str((*client).into())),
                ]);
            });
            if !written {
                tracing::info!(
                    target: ACCESS_LINE.target,
                    method = method_sent.as_str(),
                    route,
                    status = status.as_u16(),
                    latency_ms,
                    request_id,
                    client = &*client,
                    "request"
                );
            }
            res.headers_mut().insert(X_REQUEST_ID, id);
            Ok(res)
        })
    }
}

/// One series of the request counter and the latency histogram, resolved once.
struct Series {
    /// [`crate::metrics::Metrics::id`] of the metrics the handles belong to.
    metrics: u64,
    method: &'static str,
    route: Box<str>,
    status: StatusCode,
    requests: IntCounter,
    duration: Histogram,
}

/// Series a thread keeps resolved: every route with the statuses it answers fits.
const SERIES_PER_THREAD: usize = 128;

thread_local! {
    /// This thread's resolved series; looking one up by its labels (hashing them, taking the
    /// vector's lock) was a noticeable part of a request.
    static SERIES: std::cell::RefCell<Vec<Series>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Counts a request in `http_requests_total` and its latency in the histogram.
fn count(
    m: &crate::metrics::Metrics,
    method: &'static str,
    route: &str,
    status: StatusCode,
    elapsed: std::time::Duration,
) {
    let secs = elapsed.as_secs_f64();
    let counted = SERIES.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return false;
        };
        let id = m.id();
        let at = cache.iter().position(|s| {
            s.status == status && s.method == method && *s.route == *route && s.metrics == id
        });
        let series = match at {
            Some(i) => &cache[i],
            None if cache.len() < SERIES_PER_THREAD => {
                cache.push(Series {
                    metrics: id,
                    method,
                    route: route.into(),
                    status,
                    requests: m
                        .http_requests
                        .with_label_values(&[method, route, status.as_str()]),
                    duration: m.http_duration.with_label_values(&[method, route]),
                });
                &cache[cache.len() - 1]
            }
            None => return false,
        };
        series.requests.inc();
        series.duration.observe(secs);
        true
    });
    if !counted {
        m.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[method, route])
            .observe(secs);
    }
}

/// The client's address as the log shows it (`Display`); an IPv4 address is written into
/// `buf` by hand, as the formatting machinery cost a noticeable share of a request.
fn client_text(ip: std::net::IpAddr, buf: &mut [u8; 15]) -> std::borrow::Cow<'_, str> {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string().into();
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    String::from_utf8_lossy(&buf[..n])
}

/// A panic in a handler or a layer below observation: logged once here, with the id of the
/// request being answered (named in the event itself, so any subscriber shows it), and
/// answered with an opaque 500.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    crate::telemetry::context::with_current(|id| {
        tracing::error!(
            panic = what,
            request_id = id.unwrap_or("-"),
            "handler panicked"
        )
    });
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "SRV_001").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_read_as_display_prints_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "255.9.99.1",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("address");
            assert_eq!(client_text(ip, &mut [0; 15]), ip.to_string());
        }
    }
}
