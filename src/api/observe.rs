//! Per-request observation: request id (accepted or made), one log line per request with
//! method, route template, status, latency and client address, HTTP metrics, and caught
//! panics.

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::IntGauge;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};
use tracing::Instrument;

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
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// A caller's id is kept when it is short printable ASCII; otherwise we make one.
fn request_id(req: &Request) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(id) = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        return id.to_owned();
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{nanos:016x}-{:06x}",
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
    )
}

/// Outermost middleware: request id, metrics and the access log line.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    // Worked out once here; the rate limit reads it from the request.
    let client = super::access::client_addr(&state, &req);
    req.extensions_mut()
        .insert(super::access::ClientAddr(client));
    let method = req.method().clone();
    // Layers added with `Router::layer` run after routing, so the template is known here. A
    // fixed label stands in when no route matched: the raw path would put ids into labels.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let m = &state.metrics;
    let in_flight = InFlight::enter(&m.http_in_flight);
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = next.run(req).instrument(span).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let status = res.status();
    let method_label = method_label(&method);
    m.http_requests
        .with_label_values(&[method_label, route, status.as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[method_label, route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "block_manager::http",
        method = %method,
        route,
        status = status.as_u16(),
        latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        request_id = %id,
        client = %client,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// A panic in a handler: logged once here (inside the request's span, so with its id), and
/// answered with an opaque 500.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "SRV_001").into_response()
}
