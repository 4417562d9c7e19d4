//! Our limits on the request head, enforced as middleware so that a too-long URI answers 414
//! and too-large headers 431 in the one JSON error shape. hyper's own limits are set well
//! above these (hyper would answer with an empty body); what hyper still refuses beyond them
//! is rewritten into the same shape by the connection (see `conn`).

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Longest request target (path and query, with the authority when one is sent).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section: every name and value, plus 4 bytes of framing per header.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 100;
/// hyper's read buffer bound, above our limits so that a head just over them still reaches
/// the middleware; also the most one connection can make the server buffer for a head.
pub(crate) const HYPER_MAX_BUF: usize = 128 * 1024;
/// hyper's header count bound, likewise above ours.
pub(crate) const HYPER_MAX_HEADERS: usize = 512;

/// Catalog code of 414 answers.
pub const URI_TOO_LONG: &str = "REQ_007";
/// Catalog code of 431 answers.
pub const HEADERS_TOO_LARGE: &str = "REQ_008";

/// The answer refusing a request whose head is over our limits; `None` when it is within them.
pub fn over_limits(req: &Request) -> Option<Response> {
    let uri = req.uri();
    let uri_bytes = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Some(
            ApiError::new(StatusCode::URI_TOO_LONG, URI_TOO_LONG)
                .info(json!({"uri_bytes": uri_bytes, "max_uri_bytes": MAX_URI_BYTES}))
                .into_response(),
        );
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                HEADERS_TOO_LARGE,
            )
            .info(json!({
                "headers": headers.len(),
                "header_bytes": header_bytes,
                "max_headers": MAX_HEADERS,
                "max_header_bytes": MAX_HEADER_BYTES,
            }))
            .into_response(),
        );
    }
    None
}
