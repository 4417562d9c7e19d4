//! The explorer page (`/`, `/explorer`): one HTML file, its script and its style, built into
//! the binary. It reads only the public API (so read auth applies to what it shows), renders
//! chain values as text, and is served under a strict `Content-Security-Policy`: no inline
//! script or style, no request to any other origin.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("explorer/index.html");
const SCRIPT: &str = include_str!("explorer/explorer.js");
const STYLE: &str = include_str!("explorer/explorer.css");
const ICON: &str = include_str!("explorer/explorer.svg");

/// Everything from this origin, nothing inline, never framed.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small, and must change with the binary: revalidated each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// GET / and /explorer
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// GET /explorer.js
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// GET /explorer.css
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// GET /favicon.ico (the page's icon, an SVG; browsers ask for it whatever the page says)
pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}
