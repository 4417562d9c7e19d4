//! `components` of the document: the wire schemas (served blocks, summaries, headers, request
//! bodies, the one error shape), the shared error responses and the security schemes.
//!
//! Served schemas are closed (`additionalProperties: false`) so a field added to a response
//! without documenting it fails the schema check; request schemas are open because the
//! handlers ignore unknown fields (served documents can be submitted back unchanged).

use serde_json::{Map, Value, json};

/// `u64::MAX`: heights and counts are unsigned 64-bit on the wire.
pub(super) const U64_MAX: u64 = u64::MAX;

/// A 64-character lowercase hex hash.
const HASH_PATTERN: &str = "^[0-9a-f]{64}$";

/// Timestamps as served: Python's `isoformat()` of an aware UTC value (six fraction digits,
/// none when the microseconds are zero).
const SERVED_TIMESTAMP_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?\+00:00$";

/// Timestamps as accepted: a real calendar date in years 0001-9999 (leap days only in leap
/// years), 1-6 fraction digits, and `Z` or `+00:00`. Exact, so that every string the pattern
/// admits parses and every string it refuses is refused by the parser.
const INPUT_TIMESTAMP_PATTERN: &str = concat!(
    "^(?:",
    "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-",
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29",
    ")T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|\\+00:00)$"
);

/// Transaction ids: no control characters (Unicode `Cc`, what Rust's `char::is_control` means).
const TX_ID_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// At least one character that is not Unicode `White_Space` (what `str::trim` removes).
const NOT_BLANK_PATTERN: &str =
    r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// A `$ref` to a component schema.
pub(super) fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A `$ref` to a component response.
pub(super) fn response_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

/// The `X-Request-Id` response header every answer carries.
pub(super) fn request_id_header() -> Value {
    json!({
        "description": "The caller's id when it sent a short printable one, else one made here; also in the log line of the request.",
        "required": true,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128}
    })
}

/// `components`: schemas, responses and security schemes.
pub(super) fn components() -> Value {
    json!({
        "schemas": schemas(),
        "responses": error_responses(),
        "securitySchemes": {
            "ApiKeyHeader": {
                "type": "apiKey", "in": "header", "name": "X-API-Key",
                "description": "The write key (BLOCK_MANAGER_API_KEY) for writes; the read key (BLOCK_MANAGER_READ_API_KEY) or the write key for reads when security.require_read_auth is on."
            },
            "BearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The same keys as X-API-Key, sent as Authorization: Bearer <key>."
            }
        }
    })
}

fn hash(description: &str) -> Value {
    json!({"type": "string", "pattern": HASH_PATTERN, "description": description})
}

fn served_timestamp() -> Value {
    json!({"type": "string", "pattern": SERVED_TIMESTAMP_PATTERN, "description": "UTC, as Python's isoformat() writes it", "examples": ["2024-01-01T00:00:10.500000+00:00", "2024-01-01T00:00:00+00:00"]})
}

fn height() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": U64_MAX})
}

fn count() -> Value {
    json!({"type": "integer", "minimum": 0})
}

/// A closed object: every listed property required, nothing else allowed.
fn closed(properties: Map<String, Value>) -> Value {
    let required: Vec<&String> = properties.keys().collect();
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

fn props(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The served transaction's fields (the canonical ones plus `size_bytes`).
fn transaction_properties() -> Map<String, Value> {
    props(json!({
        "tx_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "type": {"type": "string", "description": "Lucid types: session_anchor, data_storage, consensus_vote, system"},
        "from_address": {"type": "string", "minLength": 1},
        "to_address": {"type": "string", "minLength": 1},
        "value": {"type": "number", "minimum": 0},
        "fee": {"type": "number", "minimum": 0},
        "data": {"type": "string"},
        "timestamp": served_timestamp(),
        "signature": {"type": "string", "minLength": 1},
        "size_bytes": {"type": "integer", "minimum": 0, "description": "Bytes of the transaction's stored JSON"}
    }))
}

fn served_schemas(s: &mut Map<String, Value>) {
    s.insert("Hash".into(), hash("64 lowercase hex characters"));
    s.insert("Timestamp".into(), served_timestamp());
    s.insert("Transaction".into(), closed(transaction_properties()));
    let mut lookup = transaction_properties();
    lookup.insert("block_height".into(), height());
    lookup.insert("block_hash".into(), hash("Hash of the block holding it"));
    lookup.insert(
        "index".into(),
        json!({"type": "integer", "minimum": 0, "description": "Position in the block"}),
    );
    s.insert("TransactionLookup".into(), closed(lookup));
    s.insert("Block".into(), closed(props(json!({
        "block_id": hash("Same as hash (Lucid clients read block_id)"),
        "height": height(),
        "hash": hash("BLAKE3 of height, previous_hash, timestamp, merkle_root, producer and transaction count"),
        "previous_hash": hash("64 zeros for genesis"),
        "merkle_root": hash("64 zeros for a block without transactions"),
        "timestamp": served_timestamp(),
        "producer": {"type": "string", "minLength": 1},
        "validator": {"type": "string", "minLength": 1, "description": "Same as producer"},
        "signature": {"type": "string", "minLength": 1},
        "nonce": {"type": "integer", "const": 0, "description": "Always 0: PoOT has no proof of work"},
        "difficulty": {"type": "number", "const": 0, "description": "Always 0.0"},
        "transaction_count": count(),
        "block_size_bytes": {"type": "integer", "minimum": 0, "description": "Bytes of the block's stored JSON"},
        "transactions": {"type": "array", "items": schema_ref("Transaction")}
    }))));
    s.insert(
        "BlockSummary".into(),
        closed(props(json!({
            "block_id": hash("Same as hash"),
            "height": height(),
            "hash": hash("Block hash"),
            "previous_hash": hash("Parent hash"),
            "timestamp": served_timestamp(),
            "transaction_count": count(),
            "block_size_bytes": count(),
            "validator": {"type": "string", "minLength": 1},
            "producer": {"type": "string", "minLength": 1}
        }))),
    );
    s.insert(
        "BlockHeader".into(),
        closed(props(json!({
            "height": height(),
            "hash": hash("Block hash"),
            "previous_hash": hash("Parent hash"),
            "merkle_root": hash("Merkle root"),
            "timestamp": served_timestamp(),
            "producer": {"type": "string", "minLength": 1},
            "transaction_count": count()
        }))),
    );
    s.insert(
        "Pagination".into(),
        closed(props(json!({
            "page": {"type": "integer", "minimum": 1},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": {"type": "integer", "minimum": 0, "description": "Blocks in the filtered set"},
            "pages": {"type": "integer", "minimum": 0}
        }))),
    );
    s.insert(
        "BlockList".into(),
        closed(props(json!({
            "blocks": {"type": "array", "maxItems": 100, "items": schema_ref("BlockSummary")},
            "pagination": schema_ref("Pagination")
        }))),
    );
    s.insert(
        "BlockRange".into(),
        closed(props(json!({
            "blocks": {"type": "array", "maxItems": 1000, "items": schema_ref("Block")}
        }))),
    );
    s.insert(
        "HeaderList".into(),
        closed(props(json!({
            "headers": {"type": "array", "maxItems": 2000, "items": schema_ref("BlockHeader")}
        }))),
    );
}

fn input_timestamp() -> Value {
    json!({"type": "string", "pattern": INPUT_TIMESTAMP_PATTERN,
           "description": "UTC: YYYY-MM-DDTHH:MM:SS[.ffffff] with Z or +00:00; another offset is refused (VAL_005)"})
}

fn request_schemas(s: &mut Map<String, Value>) {
    s.insert("TransactionInput".into(), json!({
        "type": "object",
        "description": "A transaction as sent. Older clients may send `id` instead of `tx_id`. A null optional field means its default. Unknown fields are ignored.",
        "required": ["tx_id", "from_address", "to_address", "signature"],
        "properties": {
            "tx_id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": TX_ID_PATTERN},
            "type": {"type": ["string", "null"], "default": "system"},
            "from_address": {"type": "string", "minLength": 1},
            "to_address": {"type": "string", "minLength": 1},
            "value": {"type": ["number", "null"], "minimum": 0, "default": 0},
            "fee": {"type": ["number", "null"], "minimum": 0, "default": 0},
            "data": {"type": ["string", "object", "array", "null"], "default": "",
                     "description": "Text; a JSON object or array is stored as its compact JSON text"},
            "timestamp": {"anyOf": [input_timestamp(), {"type": "null"}], "description": "Default: the block's timestamp"},
            "signature": {"type": "string", "minLength": 1}
        }
    }));
    let transactions = json!({"type": "array", "maxItems": 1000, "items": schema_ref("TransactionInput"),
                              "description": "At most 1000 (chain.max_transactions_per_block); ids unique in the block and the chain"});
    s.insert("BlockInput".into(), json!({
        "type": "object",
        "description": "A complete block produced elsewhere. Served block documents are accepted as they are (extra fields are ignored). The hash, merkle root, link to the stored chain, timestamp skew and size are checked by validation (422), not by this schema.",
        "required": ["height", "previous_hash", "timestamp", "merkle_root", "producer", "signature", "transactions", "hash"],
        "properties": {
            "height": height(),
            "previous_hash": hash("Hash of the stored block at height - 1; 64 zeros for height 0"),
            "timestamp": input_timestamp(),
            "merkle_root": hash("Merkle root of the transaction ids"),
            "producer": {"type": "string", "minLength": 1},
            "signature": {"type": "string", "minLength": 1},
            "transactions": transactions.clone(),
            "hash": hash("The block hash")
        }
    }));
    s.insert("CreateBlockRequest".into(), json!({
        "type": "object",
        "description": "The next block's content; the server sets height, previous_hash, timestamp, merkle_root and hash.",
        "required": ["producer", "signature"],
        "properties": {
            "transactions": {"anyOf": [transactions, {"type": "null"}], "description": "Absent or null means none"},
            "producer": {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN, "description": "Not blank"},
            "signature": {"type": "string", "minLength": 1}
        }
    }));
    s.insert("SubmitBlockRequest".into(), json!({
        "description": "A block, bare or wrapped as {\"block_data\": {...}}.",
        "anyOf": [
            schema_ref("BlockInput"),
            {"type": "object", "required": ["block_data"], "properties": {"block_data": schema_ref("BlockInput")}}
        ]
    }));
    s.insert("ValidateBlockRequest".into(), json!({
        "type": "object",
        "description": "{\"block_data\": {...}} or a bare block (see BlockInput). Anything wrong inside the block is reported in the 200 answer, not refused; only a body that is not a JSON object, or a block_data that is not one, is a 400.",
        "properties": {"block_data": {"type": "object", "description": "The block to check (see BlockInput)"}}
    }));
    let bound = json!({"type": ["integer", "null"], "minimum": 0, "maximum": U64_MAX});
    s.insert("VerifyRequest".into(), json!({
        "type": "object",
        "description": "Heights to check, inclusive; end_height is clamped to the tip. end_height below start_height is a 400.",
        "properties": {"start_height": bound.clone(), "end_height": bound}
    }));
}

fn report_schemas(s: &mut Map<String, Value>) {
    let flag = json!({"type": "boolean"});
    s.insert("ValidationReport".into(), closed(props(json!({
        "valid": flag,
        "validation_results": closed(props(json!({
            "structure_valid": flag, "integrity_valid": flag, "signature_valid": flag,
            "merkle_root_valid": flag, "timestamp_valid": flag, "transactions_valid": flag
        }))),
        "errors": {"type": "array", "items": {"type": "string"}},
        "error_codes": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]+_[0-9]{3}$"}},
        "warnings": {"type": "array", "items": {"type": "string"}}
    }))));
    s.insert(
        "VerifyReport".into(),
        closed(props(json!({
            "is_valid": flag,
            "blocks_checked": count(),
            "errors": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
            "error_count": count(),
            "start_height": height(),
            "end_height": height()
        }))),
    );
    let nullable_height = json!({"type": ["integer", "null"], "minimum": 0});
    let nullable_hash = json!({"type": ["string", "null"], "pattern": HASH_PATTERN});
    s.insert("ChainInfo".into(), json!({
        "type": "object",
        "required": ["network", "consensus", "version", "mode", "genesis_hash", "height", "tip_hash",
                     "total_blocks", "total_transactions", "total_size_bytes", "average_block_time_seconds", "limits"],
        "properties": {
            "network": {"type": "string", "examples": ["lucid_blocks"]},
            "consensus": {"type": "string", "const": "PoOT"},
            "version": {"type": "string"},
            "format_version": {"type": "integer"},
            "mode": {"type": "string", "enum": ["standalone", "follower"]},
            "genesis_hash": nullable_hash.clone(),
            "height": nullable_height.clone(),
            "tip_hash": nullable_hash.clone(),
            "total_blocks": count(), "total_transactions": count(), "total_size_bytes": count(),
            "average_block_time_seconds": {"type": ["number", "null"]},
            "limits": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
        }
    }));
    s.insert("ChainStatus".into(), json!({
        "type": "object",
        "required": ["state", "mode", "height", "tip_hash", "tip_timestamp", "seconds_since_last_block", "sync", "finality_floor"],
        "properties": {
            "state": {"type": "string", "description": "empty, active, or the follower's sync state"},
            "mode": {"type": "string", "enum": ["standalone", "follower"]},
            "height": nullable_height,
            "tip_hash": nullable_hash,
            "tip_timestamp": {"anyOf": [served_timestamp(), {"type": "null"}]},
            "seconds_since_last_block": {"type": ["number", "null"], "minimum": 0},
            "sync": {"type": ["object", "null"]},
            "finality_floor": {"type": "integer", "minimum": 0, "description": "Highest height ever buried deeper than synchronization.max_reorg_depth below the tip: blocks at or below it are final (never rolled back, served immutable)"}
        }
    }));
    s.insert(
        "ChainHeight".into(),
        closed(props(json!({
            "height": height(),
            "block_hash": hash("Tip hash"),
            "timestamp": served_timestamp(),
            "transaction_count": count(),
            "block_size": count(),
            "validator": {"type": "string"}
        }))),
    );
    let nullable_time = json!({"anyOf": [served_timestamp(), {"type": "null"}]});
    let nullable_number = json!({"type": ["number", "null"], "minimum": 0});
    s.insert(
        "BlockStats".into(),
        closed(props(json!({
            "height": {"type": ["integer", "null"], "minimum": 0, "maximum": U64_MAX, "description": "Tip height; null while the chain is empty"},
            "total_blocks": count(),
            "total_transactions": count(),
            "total_size_bytes": count(),
            "first_block_time": nullable_time.clone(),
            "last_block_time": nullable_time,
            "average_block_time_seconds": {"type": ["number", "null"], "description": "Seconds between blocks, from genesis to the tip; null below two blocks"},
            "average_block_size_bytes": nullable_number.clone(),
            "average_transactions_per_block": nullable_number,
            "blocks_last_hour": count(),
            "blocks_last_24h": count(),
            "computed_at": served_timestamp()
        }))),
    );
    s.insert("SyncStatus".into(), json!({
        "type": "object", "required": ["state"],
        "properties": {"state": {"type": "string"}, "mode": {"type": "string"}, "upstream": {"type": "string"},
                       "local_height": {"type": ["integer", "null"], "minimum": 0},
                       "transport": {"type": ["string", "null"], "enum": ["push", "poll", null],
                                     "description": "How new upstream blocks reach a follower now: push while subscribed to the upstream's event stream, poll otherwise; null when not a follower"},
                       "leader": {"type": ["object", "null"],
                                  "description": "On a shared PostgreSQL chain: the replica holding the sync lease (instance_id, address; self: whether it is this one); null when none is known or the chain is not shared",
                                  "properties": {"instance_id": {"type": "string"}, "address": {"type": "string"}, "self": {"type": "boolean"},
                                                 "since": {"type": "string"}, "seen_seconds_ago": {"type": "number"}}}}
    }));
    let status = json!({"type": "string", "enum": ["healthy", "degraded", "unhealthy"]});
    s.insert("HealthReport".into(), json!({
        "type": "object",
        "required": ["status", "service", "version", "uptime_seconds", "checks"],
        "properties": {
            "status": status,
            "service": {"type": "string"},
            "version": {"type": "string"},
            "environment": {"type": "string", "description": "service.environment (LUCID_ENV)"},
            "platform": {"type": "string", "description": "service.platform (LUCID_PLATFORM)"},
            "instance_id": {"type": "string", "description": "service.instance_id (BLOCK_MANAGER_INSTANCE_ID; default the host name): which replica answered"},
            "uptime_seconds": {"type": "number", "minimum": 0},
            "checks": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["status", "message", "latency_ms"],
                "properties": {"status": status, "message": {"type": "string"}, "latency_ms": {"type": "number", "minimum": 0}}
            }}
        }
    }));
    s.insert("SystemSnapshot".into(), json!({
        "type": "object", "description": "The latest host sample: CPU, memory, data-volume disk and network counters"
    }));
    s.insert(
        "Probe".into(),
        closed(props(
            json!({"status": {"type": "string", "enum": ["alive", "ready"]}}),
        )),
    );
}

fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    served_schemas(&mut s);
    request_schemas(&mut s);
    report_schemas(&mut s);
    s.insert("Error".into(), json!({
        "type": "object",
        "description": "The one shape of every non-2xx answer",
        "required": ["detail"],
        "additionalProperties": false,
        "properties": {"detail": {
            "type": "object",
            "required": ["error", "error_code", "severity", "additional_info"],
            "additionalProperties": false,
            "properties": {
                "error": {"type": "string", "description": "What went wrong, for people"},
                "error_code": {"type": "string", "pattern": "^[A-Z]+_[0-9]{3}$", "examples": ["BM_001"]},
                "severity": {"type": "string", "examples": ["error", "warning", "critical"]},
                "additional_info": {"type": "object"}
            }
        }},
        "examples": [{"detail": {"error": "Block not found: 99", "error_code": "BM_001", "severity": "error", "additional_info": {"block_id": "99"}}}]
    }));
    s
}

/// The shared error answers, by name, each with its status and meaning.
pub(super) const ERROR_RESPONSES: &[(&str, u16, &str)] = &[
    (
        "BadRequest",
        400,
        "Malformed request: bad JSON, a parameter out of range (REQ_001)",
    ),
    (
        "Unauthorized",
        401,
        "Missing or invalid API key (AUTH_001, AUTH_002)",
    ),
    (
        "Forbidden",
        403,
        "Writes are not configured (AUTH_004) or the key may only read (AUTH_003)",
    ),
    (
        "NotFound",
        404,
        "No such block, transaction or path (BM_001, TX_001, REQ_005)",
    ),
    (
        "MethodNotAllowed",
        405,
        "The path does not take this method; `Allow` lists those it takes (REQ_004)",
    ),
    (
        "RequestTimeout",
        408,
        "The request took longer than api.request_timeout_seconds (REQ_006)",
    ),
    (
        "Conflict",
        409,
        "The height holds a different block (BM_007), or this node is a follower and refuses local writes (SYNC_006), or sync is disabled (SYNC_001)",
    ),
    (
        "PayloadTooLarge",
        413,
        "Body larger than api.max_body_bytes, 2 MiB by default (REQ_003)",
    ),
    (
        "UnsupportedMediaType",
        415,
        "The body is not sent as application/json (REQ_002)",
    ),
    (
        "Unprocessable",
        422,
        "The block failed validation; additional_info lists every failure with its code (BM_002)",
    ),
    (
        "TooManyRequests",
        429,
        "Per-client rate limit exceeded (RATE_001)",
    ),
    (
        "InternalError",
        500,
        "Internal failure; the cause is logged with the request id (SRV_001, ST_002, ST_003, ST_005)",
    ),
    (
        "Unavailable",
        503,
        "Store unavailable or shutting down (ST_001), service unhealthy (SRV_002) or not ready (SRV_003)",
    ),
    (
        "InsufficientStorage",
        507,
        "The data volume is full (ST_004)",
    ),
];

fn error_responses() -> Map<String, Value> {
    let mut out = Map::new();
    for (name, status, description) in ERROR_RESPONSES {
        let mut headers = Map::new();
        headers.insert("X-Request-Id".into(), request_id_header());
        match status {
            405 => {
                headers.insert("Allow".into(), json!({"description": "Methods the path takes", "required": true, "schema": {"type": "string"}}));
            }
            429 => {
                headers.insert("Retry-After".into(), json!({"description": "Seconds until the next window", "required": true, "schema": {"type": "integer", "minimum": 1}}));
            }
            _ => {}
        }
        out.insert(
            (*name).into(),
            json!({
                "description": description,
                "headers": headers,
                "content": {"application/json": {"schema": schema_ref("Error")}}
            }),
        );
    }
    out
}
