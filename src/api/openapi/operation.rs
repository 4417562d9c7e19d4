//! The operation builder behind `paths`: who may call an operation, the statuses every
//! operation shares, and the response objects several operations use.

use super::schemas::{ERROR_RESPONSES, request_id_header, response_ref, schema_ref};
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Probes, metrics and this document: no key, no rate limit for health and metrics.
    Public {
        /// Health and metrics are exempt so probes never fail.
        rate_limited: bool,
    },
    /// Open unless `security.require_read_auth` is on; a wrong key is always a 401.
    Read,
    /// Needs the write key.
    Write,
}

/// One operation, before it is written out.
pub(super) struct Op {
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    params: Vec<Value>,
    body: Option<(Value, bool)>,
    ok: Vec<(&'static str, Value)>,
    errors: &'static [u16],
}

impl Op {
    /// An operation with its id, tag, one-line summary and access.
    pub(super) fn new(
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
        access: Access,
    ) -> Self {
        Self {
            id,
            tag,
            summary,
            access,
            params: Vec::new(),
            body: None,
            ok: Vec::new(),
            errors: &[],
        }
    }
    /// Its parameters.
    pub(super) fn params(mut self, params: Vec<Value>) -> Self {
        self.params = params;
        self
    }
    /// A JSON body with `schema`; `required` false when it may be left out.
    pub(super) fn body(mut self, schema: Value, required: bool) -> Self {
        self.body = Some((schema, required));
        self
    }
    /// A success answer for `status`.
    pub(super) fn ok(mut self, status: &'static str, response: Value) -> Self {
        self.ok.push((status, response));
        self
    }
    /// Error statuses this operation's handler answers with (access, timeout, rate limit and
    /// 500 are added from `access`).
    pub(super) fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }

    /// The OpenAPI operation object.
    pub(super) fn build(self) -> Value {
        let mut statuses: Vec<u16> = self.errors.to_vec();
        statuses.extend([408, 500]);
        match self.access {
            Access::Public { rate_limited } => statuses.extend(rate_limited.then_some(429)),
            Access::Read => statuses.extend([401, 429]),
            Access::Write => statuses.extend([401, 403, 429]),
        }
        if self.body.is_some() {
            statuses.extend([400, 413, 415]);
        }
        statuses.sort_unstable();
        statuses.dedup();
        let mut responses = Map::new();
        for (status, response) in self.ok {
            responses.insert(status.into(), response);
        }
        for status in statuses {
            if let Some((name, ..)) = ERROR_RESPONSES.iter().find(|(_, s, _)| *s == status) {
                responses.insert(status.to_string(), response_ref(name));
            }
        }
        let mut op = json!({
            "operationId": self.id,
            "tags": [self.tag],
            "summary": self.summary,
            "responses": responses,
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some((schema, required)) = self.body {
            op["requestBody"] =
                json!({"required": required, "content": {"application/json": {"schema": schema}}});
        }
        match self.access {
            Access::Public { .. } => op["security"] = json!([]),
            Access::Read => {
                op["security"] = json!([{}, {"ApiKeyHeader": []}, {"BearerAuth": []}]);
            }
            Access::Write => op["security"] = json!([{"ApiKeyHeader": []}, {"BearerAuth": []}]),
        }
        op
    }
}

/// An optional query parameter.
pub(super) fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// A path parameter.
pub(super) fn path_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema, "description": description})
}

/// A JSON answer with `schema` and the request id header, plus `headers`.
pub(super) fn json_response(description: &str, schema: Value, headers: Value) -> Value {
    let mut all = Map::new();
    all.insert("X-Request-Id".into(), request_id_header());
    if let Value::Object(extra) = headers {
        all.extend(extra);
    }
    json!({"description": description, "headers": all, "content": {"application/json": {"schema": schema}}})
}

/// A 200 JSON answer with the component schema `schema`.
pub(super) fn ok_json(schema: &str) -> Value {
    json_response("OK", schema_ref(schema), json!({}))
}

/// The `Cache-Control` header of block reads and listings.
pub(super) fn cache_control() -> Value {
    json!({"description": "Long and immutable for final blocks (at or below the finality floor: the highest height ever buried deeper than synchronization.max_reorg_depth below the tip); a few seconds otherwise", "required": true, "schema": {"type": "string"}})
}

/// The `ETag` header of single-block reads.
pub(super) fn etag() -> Value {
    json!({"description": "For a final block its hash, quoted; above the finality floor \"b3-\" and 32 hex digits of the BLAKE3 digest of the served bytes. Send it back as If-None-Match for a 304", "required": true, "schema": {"type": "string", "pattern": "^\"([0-9a-f]{64}|b3-[0-9a-f]{32})\"$"}})
}

/// The answers of a single-block read: the block with its `ETag`, or 304 for `If-None-Match`.
pub(super) fn block_read(op: Op) -> Op {
    op.ok(
        "200",
        json_response(
            "The block (a superset of Lucid's BlockDetails)",
            schema_ref("Block"),
            json!({"ETag": etag(), "Cache-Control": cache_control()}),
        ),
    )
    .ok(
        "304",
        json!({"description": "Not modified: If-None-Match named this block's ETag", "headers": {
            "X-Request-Id": request_id_header(), "ETag": etag(), "Cache-Control": cache_control()}}),
    )
}

/// A stored block with its `Location`.
pub(super) fn stored_block(description: &str) -> Value {
    json_response(
        description,
        schema_ref("Block"),
        json!({"Location": {"description": "/api/v1/blocks/{hash}", "required": true,
                            "schema": {"type": "string", "pattern": "^/api/v1/blocks/[0-9a-f]{64}$"}}}),
    )
}

/// Links from a stored block to the reads that fetch it again.
pub(super) fn links() -> Value {
    json!({
        "GetBlockByHash": {"operationId": "getBlock", "parameters": {"block_id": "$response.body#/hash"}},
        "GetBlockAtHeight": {"operationId": "getBlockAtHeight", "parameters": {"height": "$response.body#/height"}}
    })
}

/// `response` with [`links`].
pub(super) fn with_links(mut response: Value) -> Value {
    response["links"] = links();
    response
}
