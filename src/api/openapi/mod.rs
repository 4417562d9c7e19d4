//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, built once from code: `paths`
//! describes every route of `router()`, `schemas` the wire shapes and the error answers.
//!
//! [`ROUTES`] is the route table the document must cover; tests check it against the
//! document and against the `.route(...)` calls in `api/mod.rs`, so a route cannot be added
//! without being documented.

mod operation;
mod paths;
mod schemas;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Every (method, path) that `router()` serves, as written in the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/blocks"),
    ("get", "/api/v1/blocks/"),
    ("post", "/api/v1/blocks"),
    ("get", "/api/v1/blocks/latest"),
    ("get", "/api/v1/blocks/range"),
    ("get", "/api/v1/blocks/headers"),
    ("get", "/api/v1/blocks/height/{height}"),
    ("get", "/api/v1/blocks/stats"),
    ("get", "/api/v1/blocks/{block_id}"),
    ("post", "/api/v1/blocks/submit"),
    ("post", "/api/v1/blocks/validate"),
    ("get", "/api/v1/transactions/{tx_id}"),
    ("get", "/api/v1/chain/info"),
    ("get", "/api/v1/chain/status"),
    ("get", "/api/v1/chain/height"),
    ("post", "/api/v1/chain/verify"),
    ("get", "/api/v1/sync/status"),
    ("post", "/api/v1/sync"),
    ("get", "/api/v1/monitoring/system"),
    ("get", "/api/v1/monitoring/health"),
    ("get", "/health"),
    ("get", "/api/v1/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/blocks/events"),
    ("get", "/"),
    ("get", "/explorer"),
    ("get", "/explorer.js"),
    ("get", "/explorer.css"),
    ("get", "/favicon.ico"),
];

const DESCRIPTION: &str = "Block store of the Lucid stack (lucid_blocks chain, PoOT consensus).\n\n\
Every non-2xx answer has one JSON shape, `{\"detail\": {\"error\", \"error_code\", \"severity\", \"additional_info\"}}` (schema `Error`). \
An unknown path answers 404 (REQ_005); a method a path does not take answers 405 with `Allow` (REQ_004). \
Reads are open unless `security.require_read_auth` is on; writes need the write key as `X-API-Key` or `Authorization: Bearer`. \
Single-block reads carry `ETag` (the block hash for final blocks, a digest of the served bytes above the finality floor) and answer 304 to a matching `If-None-Match`. \
Every answer carries `X-Request-Id`; a caller's short printable `X-Request-Id` is kept.";

/// The document (built on first use).
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "block-manager",
                "version": env!("CARGO_PKG_VERSION"),
                "description": DESCRIPTION,
                "license": {"name": "MIT", "identifier": "MIT"}
            },
            "tags": [
                {"name": "blocks", "description": "Blocks and transactions"},
                {"name": "chain", "description": "The chain as a whole"},
                {"name": "sync", "description": "Follower sync"},
                {"name": "monitoring", "description": "Metrics and host monitoring"},
                {"name": "health", "description": "Probes"},
                {"name": "meta", "description": "This document"},
                {"name": "events", "description": "Server-Sent Events of new blocks and reorgs"},
                {"name": "explorer", "description": "The explorer page"}
            ],
            "paths": paths::paths(),
            "components": schemas::components(),
        })
    })
}

/// GET /api/v1/openapi.json
pub async fn document() -> Response {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    let body = BODY.get_or_init(|| serde_json::to_vec(spec()).unwrap_or_default());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.as_slice(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in spec()["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.clone(), path.clone()));
            }
        }
        out
    }

    fn table() -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect()
    }

    /// The `(method, path)` pairs of every `.route("path", get(..).post(..))` in `api/mod.rs`.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("../mod.rs");
        let mut out = BTreeSet::new();
        // A call rustfmt broke over lines starts its path on the next line.
        for call in source.split(".route(").skip(1) {
            let Some(call) = call.trim_start().strip_prefix('"') else {
                continue;
            };
            let (path, rest) = call.split_once('"').unwrap();
            let args = &rest[..rest.find("))").unwrap()];
            for method in ["get", "post", "put", "patch", "delete"] {
                let direct =
                    args.contains(&format!(" {method}(")) || args.contains(&format!(",{method}("));
                if direct || args.contains(&format!(".{method}(")) {
                    out.insert((method.to_string(), path.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_routed_path_is_in_the_route_table() {
        assert_eq!(routed(), table());
    }

    #[test]
    fn the_document_describes_exactly_the_route_table() {
        assert_eq!(documented(), table());
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let mut all = Vec::new();
        refs(spec(), &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(spec().pointer(pointer).is_some(), "dangling {r}");
        }
    }

    #[test]
    fn operation_ids_are_unique_and_links_name_real_operations() {
        let mut ids = BTreeSet::new();
        for item in spec()["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
        let mut linked = Vec::new();
        for item in spec()["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for response in op["responses"].as_object().unwrap().values() {
                    if let Some(links) = response.get("links").and_then(Value::as_object) {
                        linked.extend(
                            links
                                .values()
                                .map(|l| l["operationId"].as_str().unwrap().to_string()),
                        );
                    }
                }
            }
        }
        assert!(!linked.is_empty());
        for id in linked {
            assert!(ids.contains(&id), "link to unknown operation {id}");
        }
    }

    #[test]
    fn writes_require_a_key_and_reads_make_it_optional() {
        for (method, path, op) in paths::operations() {
            let security = op["security"].as_array().unwrap();
            let write = method == "post" && path != "/api/v1/blocks/validate";
            if write {
                assert!(
                    !security.is_empty() && security.iter().all(|s| s != &json!({})),
                    "{method} {path}"
                );
                for status in ["401", "403"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            } else if path.starts_with("/api/v1/")
                && path != "/api/v1/openapi.json"
                && path != "/api/v1/health"
            {
                assert!(
                    security.contains(&json!({})),
                    "{method} {path}: reads are open by default"
                );
            }
        }
    }

    #[test]
    fn query_bounds_match_the_handlers() {
        let param = |path: &str, name: &str| -> Value {
            spec()["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]
                .clone()
        };
        assert_eq!(param("/api/v1/blocks", "limit")["maximum"], 100);
        assert_eq!(param("/api/v1/blocks", "limit")["default"], 20);
        assert_eq!(param("/api/v1/blocks", "page")["minimum"], 1);
        assert_eq!(param("/api/v1/blocks/range", "limit")["maximum"], 1000);
        assert_eq!(param("/api/v1/blocks/range", "limit")["default"], 100);
        assert_eq!(param("/api/v1/blocks/headers", "limit")["maximum"], 2000);
        assert_eq!(
            param("/api/v1/blocks", "sort")["enum"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
}
