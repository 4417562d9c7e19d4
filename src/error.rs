//! The error catalog and the one JSON error shape every non-2xx answer has:
//! `{"detail": {"error", "error_code", "severity", "additional_info"}}`.
//!
//! Handlers return [`ApiError`], which only tags the response with its code; the
//! `shape_errors` middleware renders every error response — ours, axum's rejections, 404/405
//! from routing, 413 from the body limit, timeouts and caught panics — through the catalog
//! loaded from the errors file, so messages and severities stay configurable in one place.

use crate::config::Config;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Code, default message, default severity and the HTTP status it usually travels with.
const DEFAULTS: &[(&str, &str, &str)] = &[
    ("BM_001", "Block not found", "error"),
    ("BM_002", "Block validation failed", "error"),
    ("BM_003", "Block storage failed", "critical"),
    ("BM_004", "Block retrieval failed", "error"),
    ("BM_005", "Invalid block height", "error"),
    ("BM_006", "Block hash mismatch", "error"),
    (
        "BM_007",
        "Block height already taken by a different block",
        "warning",
    ),
    ("ST_001", "Storage backend unavailable", "critical"),
    ("ST_002", "Storage write failed", "critical"),
    ("ST_003", "Storage read failed", "error"),
    ("ST_004", "Storage quota exceeded", "critical"),
    ("ST_005", "Storage permission denied", "critical"),
    ("SYNC_001", "Synchronization failed", "error"),
    ("SYNC_002", "Remote chain state unavailable", "warning"),
    ("SYNC_003", "Block fetch failed", "warning"),
    ("SYNC_004", "Chain height mismatch", "critical"),
    ("SYNC_005", "Synchronization timeout", "warning"),
    (
        "SYNC_006",
        "Node is a follower: its chain comes only from upstream",
        "warning",
    ),
    ("VAL_001", "Block structure invalid", "error"),
    ("VAL_002", "Block signature invalid", "error"),
    ("VAL_003", "Merkle root invalid", "error"),
    ("VAL_004", "Transaction validation failed", "error"),
    ("VAL_005", "Block timestamp invalid", "error"),
    ("TX_001", "Transaction not found", "warning"),
    ("AUTH_001", "Authentication required", "warning"),
    ("AUTH_002", "Invalid API key", "warning"),
    ("AUTH_003", "Insufficient permissions", "warning"),
    ("AUTH_004", "Writes are not configured", "warning"),
    ("RATE_001", "Rate limit exceeded", "warning"),
    ("REQ_001", "Malformed request", "warning"),
    (
        "REQ_002",
        "Unsupported media type: send Content-Type: application/json",
        "warning",
    ),
    ("REQ_003", "Request body too large", "warning"),
    ("REQ_004", "Method not allowed", "warning"),
    ("REQ_005", "Not found", "warning"),
    ("REQ_006", "Request timed out", "error"),
    ("MON_001", "Metrics are disabled", "info"),
    ("SRV_001", "Internal server error", "critical"),
    ("SRV_002", "Service unhealthy", "critical"),
    ("SRV_003", "Service not ready", "warning"),
    ("REQ_007", "Request URI too long", "warning"),
    ("REQ_008", "Request header fields too large", "warning"),
];

/// Messages and severities by code, defaults overlaid with the errors file.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: HashMap<String, (String, String)>,
}

impl Default for Catalog {
    fn default() -> Self {
        let entries = DEFAULTS
            .iter()
            .map(|(c, m, s)| (c.to_string(), (m.to_string(), s.to_string())))
            .collect();
        Self { entries }
    }
}

impl Catalog {
    /// The defaults overlaid with `error_codes` and `severity` from the errors file.
    /// `severity` may map code → level or level → [codes] (both shapes are in use).
    pub fn from_config(config: &Config) -> Self {
        let mut cat = Self::default();
        for (code, msg) in &config.error_codes {
            let entry = cat
                .entries
                .entry(code.clone())
                .or_insert_with(|| (String::new(), "error".into()));
            entry.0 = msg.clone();
        }
        if let Value::Object(map) = &config.severity {
            for (k, v) in map {
                match v {
                    Value::String(level) => cat.set_severity(k, level),
                    Value::Array(codes) => codes
                        .iter()
                        .filter_map(Value::as_str)
                        .for_each(|c| cat.set_severity(c, k)),
                    _ => {}
                }
            }
        }
        cat
    }

    fn set_severity(&mut self, code: &str, level: &str) {
        if let Some(entry) = self.entries.get_mut(code) {
            entry.1 = level.to_ascii_lowercase();
        }
    }

    /// The catalog message for `code`.
    pub fn message<'a>(&'a self, code: &'a str) -> &'a str {
        self.entries.get(code).map(|e| e.0.as_str()).unwrap_or(code)
    }

    /// The severity for `code` (`error` when unknown).
    pub fn severity(&self, code: &str) -> &str {
        self.entries
            .get(code)
            .map(|e| e.1.as_str())
            .unwrap_or("error")
    }

    /// A specific message in the errors file's words: a message that starts with the
    /// built-in text of its code (`Block not found: 99`) starts with the file's text instead,
    /// so `error_codes` reaches answers that carry details too.
    fn reworded(&self, code: &str, message: &str) -> String {
        let default = DEFAULTS.iter().find(|(c, _, _)| *c == code).map(|e| e.1);
        match default.and_then(|d| message.strip_prefix(d)) {
            Some(rest) if rest.is_empty() || rest.starts_with(':') => {
                format!("{}{rest}", self.message(code))
            }
            _ => message.to_string(),
        }
    }

    /// Renders the error body.
    pub fn body(&self, code: &str, message: Option<&str>, info: &Value) -> Value {
        json!({"detail": {
            "error": message.map_or_else(|| self.message(code).to_string(), |m| self.reworded(code, m)),
            "error_code": code,
            "severity": self.severity(code),
            "additional_info": if info.is_null() { json!({}) } else { info.clone() },
        }})
    }
}

/// An error answer: status, catalog code, optional specific message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Catalog code.
    pub code: &'static str,
    /// Specific message; the catalog's when `None`.
    pub message: Option<String>,
    /// `additional_info` (boxed: errors travel in `Result`s on every hot path).
    pub info: Option<Box<Value>>,
    /// `Retry-After` seconds (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error with the catalog's message.
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self {
            status,
            code,
            message: None,
            info: None,
            retry_after: None,
        }
    }
    /// Sets the specific message.
    pub fn msg(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
    /// Sets `additional_info`.
    pub fn info(mut self, info: Value) -> Self {
        self.info = Some(Box::new(info));
        self
    }
    /// 400 malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "REQ_001").msg(message)
    }
    /// 404 block not found.
    pub fn block_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "BM_001")
            .msg(format!("Block not found: {id}"))
            .info(json!({"block_id": id}))
    }
}

/// Marks a response as already carrying its catalog code (read by `shape_errors`).
#[derive(Debug, Clone)]
struct Tagged(ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.extensions_mut().insert(Tagged(self));
        res
    }
}

/// The code an untagged error response gets, by status.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "AUTH_001",
        403 => "AUTH_003",
        404 => "REQ_005",
        405 => "REQ_004",
        408 => "REQ_006",
        413 => "REQ_003",
        414 => "REQ_007",
        415 => "REQ_002",
        429 => "RATE_001",
        431 => "REQ_008",
        503 => "ST_001",
        s if s >= 500 => "SRV_001",
        _ => "REQ_001",
    }
}

/// Middleware: gives every non-2xx/3xx response the one JSON error shape.
pub async fn shape_errors(
    State(catalog): State<Arc<Catalog>>,
    req: Request,
    next: Next,
) -> Response {
    shape(&catalog, next.run(req).await).await
}

/// Gives a non-2xx/3xx response the one JSON error shape; others pass untouched. The request
/// observation calls it directly, which spares the stack a layer of its own.
pub async fn shape(catalog: &Catalog, res: Response) -> Response {
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let (status, body) = match parts.extensions.remove::<Tagged>() {
        Some(Tagged(e)) => (
            e.status,
            catalog.body(
                e.code,
                e.message.as_deref(),
                e.info.as_deref().unwrap_or(&Value::Null),
            ),
        ),
        None => {
            // axum's own rejections (400/415/422 from extractors, 405 from routing, 413 from
            // the body limit) explain themselves in plain text: keep that text for 4xx.
            // A stray 422 is a malformed request, not a block that failed validation.
            let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                status
            };
            let code = code_for(status);
            let text = if status.is_client_error() {
                axum::body::to_bytes(body, 16 * 1024)
                    .await
                    .ok()
                    .and_then(|b| String::from_utf8(b.to_vec()).ok())
                    .filter(|t| !t.trim().is_empty() && !t.trim_start().starts_with('{'))
            } else {
                None
            };
            (status, catalog.body(code, text.as_deref(), &Value::Null))
        }
    };
    parts.status = status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let bytes = serde_json::to_vec(&body).expect("a JSON value always serializes");
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_file_overrides_message_and_severity_in_both_shapes() {
        let mut config = Config::default();
        config
            .error_codes
            .insert("BM_001".into(), "No such block".into());
        config.severity = json!({"critical": ["BM_002"], "BM_003": "high"});
        let cat = Catalog::from_config(&config);
        assert_eq!(cat.message("BM_001"), "No such block");
        let body = cat.body("BM_001", Some("Block not found: 9"), &Value::Null);
        assert_eq!(body["detail"]["error"], "No such block: 9");
        let other = cat.body("BM_001", Some("Block not foundry"), &Value::Null);
        assert_eq!(other["detail"]["error"], "Block not foundry");
        assert_eq!(cat.severity("BM_002"), "critical");
        assert_eq!(cat.severity("BM_003"), "high");
    }

    #[test]
    fn body_has_the_lucid_shape() {
        let cat = Catalog::default();
        let b = cat.body(
            "BM_001",
            Some("Block not found: 99"),
            &json!({"block_id": "99"}),
        );
        assert_eq!(
            b,
            json!({"detail": {"error": "Block not found: 99", "error_code": "BM_001", "severity": "error", "additional_info": {"block_id": "99"}}})
        );
    }
}
