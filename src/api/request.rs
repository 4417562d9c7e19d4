//! Request parsing shared by the handlers: JSON bodies (415/400/413 in the error shape), the
//! `If-None-Match` header, and query parameters with bounds (400 naming the parameter).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;

/// A JSON body, checked for its content type and parsed into a value.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        JsonText::from_request(req, state)
            .await
            .map(|t| JsonBody(t.value))
    }
}

/// The request's `If-None-Match` header, if any: all the block reads look at, taken alone
/// because the `HeaderMap` extractor copies every header of the request.
pub struct IfNoneMatch(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

/// A JSON body as [`JsonBody`], keeping its bytes too: what the parsed value no longer shows
/// (the text of a number) is read from them.
pub struct JsonText {
    /// The parsed body.
    pub value: Value,
    /// The body as received.
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "REQ_002"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "REQ_003")
            } else {
                ApiError::bad_request(format!("Cannot read the request body: {e}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "Malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
            .info(json!({"line": e.line(), "column": e.column()}))
        })?;
        Ok(JsonText { value, bytes })
    }
}

/// Query parameters, read as text and converted with bounds by the handler.
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// Parses a raw query string.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).ok_or_else(|| {
                ApiError::bad_request("Query string is not valid percent-encoded UTF-8")
            })?;
            let v = decode(v).ok_or_else(|| {
                ApiError::bad_request("Query string is not valid percent-encoded UTF-8")
            })?;
            map.insert(k, v);
        }
        Ok(Self(map))
    }

    /// An integer parameter in `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        match self.0.get(name) {
            None => Ok(default),
            // Digits only: `parse` alone would also take a leading `+`, and trimming would
            // take spaces and control characters the documented integer does not allow.
            Some(raw) => Some(raw.as_str())
                .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|r| r.parse::<u64>().ok())
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    bad_param(
                        name,
                        raw,
                        &format!("expected an integer from {min} to {max}"),
                    )
                }),
        }
    }

    /// An optional integer parameter in `0..=max`.
    pub fn opt_int(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        if self.0.contains_key(name) {
            self.int(name, 0, 0, max).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A text parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// 400 naming the parameter, its value and the accepted range.
pub fn bad_param(name: &str, value: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid parameter {name} '{value}': {why}"))
        .info(json!({"parameter": name, "value": value}))
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let p = Params::parse(Some("a=1%202&b=x+y&c")).unwrap();
        assert_eq!(p.get("a"), Some("1 2"));
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.get("c"), Some(""));
    }

    #[test]
    fn integers_outside_bounds_are_rejected() {
        let p = Params::parse(Some("limit=101&page=0&n=-1&a=%2B5&b=%205&c=5%0C")).unwrap();
        assert!(p.int("limit", 20, 1, 100).is_err());
        for signed_or_padded in ["a", "b", "c"] {
            assert!(p.int(signed_or_padded, 1, 0, 10).is_err());
        }
        assert!(p.int("page", 1, 1, u64::MAX).is_err());
        assert!(p.int("n", 0, 0, 5).is_err());
        assert_eq!(p.int("absent", 7, 1, 10).unwrap(), 7);
    }
}
