//! `paths` of the document: every route of `router()` with its parameters and their bounds,
//! its request body, and every status it answers with.

use super::operation::{
    Access, Op, block_read, cache_control, json_response, ok_json, path_param, query, stored_block,
    with_links,
};
use super::schemas::{U64_MAX, request_id_header, schema_ref};
use serde_json::{Map, Value, json};

fn height_param(name: &str, description: &str) -> Value {
    query(
        name,
        json!({"type": "integer", "minimum": 0, "maximum": U64_MAX}),
        description,
    )
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "page",
            json!({"type": "integer", "minimum": 1, "maximum": 1_000_000_000, "default": 1}),
            "Page number, from 1",
        ),
        query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
            "Blocks per page",
        ),
        height_param("height_from", "Lowest height listed (default 0)"),
        height_param(
            "height_to",
            "Highest height listed (default the tip); must not be below height_from (400)",
        ),
        query(
            "sort",
            json!({"type": "string", "enum": ["height_asc", "height_desc", "timestamp_asc", "timestamp_desc"], "default": "height_desc"}),
            "Order of the listing",
        ),
    ]
}

fn window_params(max: u64, default: u64) -> Vec<Value> {
    vec![
        height_param("from", "First height (default 0)"),
        query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": max, "default": default}),
            "Most items returned",
        ),
    ]
}

const STORE: &[u16] = &[503];
const STORE_404: &[u16] = &[404, 503];
const STORE_400: &[u16] = &[400, 503];
const STORE_400_404: &[u16] = &[400, 404, 503];

fn block_ops() -> Vec<(&'static str, &'static str, Op)> {
    let list = |id| {
        Op::new(
            id,
            "blocks",
            "List block summaries, paginated and filtered",
            Access::Read,
        )
        .params(list_params())
        .ok(
            "200",
            json_response(
                "A page of summaries",
                schema_ref("BlockList"),
                json!({"Cache-Control": cache_control()}),
            ),
        )
        .errors(STORE_400)
    };
    let block_id = path_param(
        "block_id",
        json!({"type": "string", "pattern": "^(?:[0-9a-f]{64}|[0-9]+)$"}),
        "A 64-character lowercase hex hash, or a decimal height",
    );
    let height = path_param(
        "height",
        json!({"type": "string", "pattern": "^[0-9]+$"}),
        "Decimal height; past u64 it names no block (404)",
    );
    vec![
        ("get", "/api/v1/blocks", list("listBlocks")),
        ("get", "/api/v1/blocks/", list("listBlocksTrailingSlash")),
        (
            "post",
            "/api/v1/blocks",
            Op::new(
                "createBlock",
                "blocks",
                "Create the next block from transactions, producer and signature",
                Access::Write,
            )
            .body(schema_ref("CreateBlockRequest"), true)
            .ok(
                "200",
                json_response(
                    "A retried create: a stored block holds exactly these transactions (the first answer was lost); that block, nothing stored",
                    schema_ref("Block"),
                    json!({}),
                ),
            )
            .ok(
                "201",
                with_links(stored_block("Created and stored (on disk)")),
            )
            .errors(&[409, 422, 503, 507]),
        ),
        (
            "get",
            "/api/v1/blocks/latest",
            block_read(Op::new(
                "getLatestBlock",
                "blocks",
                "The tip block",
                Access::Read,
            ))
            .errors(STORE_404),
        ),
        (
            "get",
            "/api/v1/blocks/range",
            Op::new(
                "getBlockRange",
                "blocks",
                "Full blocks ascending from a height (followers use it)",
                Access::Read,
            )
            .params(window_params(1000, 100))
            .ok(
                "200",
                json_response(
                    "Blocks, ascending",
                    schema_ref("BlockRange"),
                    json!({"Cache-Control": cache_control()}),
                ),
            )
            .errors(STORE_400),
        ),
        (
            "get",
            "/api/v1/blocks/headers",
            Op::new(
                "getBlockHeaders",
                "blocks",
                "Block headers ascending from a height (light clients)",
                Access::Read,
            )
            .params(window_params(2000, 100))
            .ok(
                "200",
                json_response(
                    "Headers, ascending",
                    schema_ref("HeaderList"),
                    json!({"Cache-Control": cache_control()}),
                ),
            )
            .errors(STORE_400),
        ),
        (
            "get",
            "/api/v1/blocks/height/{height}",
            block_read(
                Op::new(
                    "getBlockAtHeight",
                    "blocks",
                    "The block at a height",
                    Access::Read,
                )
                .params(vec![height]),
            )
            .errors(STORE_400_404),
        ),
        (
            "get",
            "/api/v1/blocks/stats",
            Op::new(
                "getBlockStats",
                "blocks",
                "Chain statistics: totals, first and last block time, averages, blocks in the last hour and day (reused for up to 2 s while the tip is unchanged)",
                Access::Read,
            )
            .ok("200", ok_json("BlockStats"))
            .errors(STORE),
        ),
        (
            "get",
            "/api/v1/blocks/{block_id}",
            block_read(
                Op::new(
                    "getBlock",
                    "blocks",
                    "A block by hash or by decimal height",
                    Access::Read,
                )
                .params(vec![block_id]),
            )
            .errors(STORE_400_404),
        ),
        (
            "post",
            "/api/v1/blocks/submit",
            Op::new(
                "submitBlock",
                "blocks",
                "Append a complete block produced elsewhere",
                Access::Write,
            )
            .body(schema_ref("SubmitBlockRequest"), true)
            .ok(
                "200",
                json_response(
                    "The identical block was already stored",
                    schema_ref("Block"),
                    json!({}),
                ),
            )
            .ok(
                "201",
                with_links(stored_block("Validated and stored (on disk)")),
            )
            .errors(&[409, 422, 503, 507]),
        ),
        (
            "post",
            "/api/v1/blocks/validate",
            Op::new(
                "validateBlock",
                "blocks",
                "Validate a block against the stored chain; changes nothing",
                Access::Read,
            )
            .body(schema_ref("ValidateBlockRequest"), true)
            .ok("200", ok_json("ValidationReport"))
            .errors(STORE),
        ),
        (
            "get",
            "/api/v1/transactions/{tx_id}",
            Op::new(
                "getTransaction",
                "blocks",
                "A stored transaction with the height and hash of its block",
                Access::Read,
            )
            .params(vec![path_param(
                "tx_id",
                json!({"type": "string", "minLength": 1}),
                "Transaction id",
            )])
            .ok("200", ok_json("TransactionLookup"))
            .errors(STORE_400_404),
        ),
    ]
}

fn chain_ops() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "get",
            "/api/v1/chain/info",
            Op::new(
                "getChainInfo",
                "chain",
                "Network, consensus, genesis, tip, totals, average block time and limits",
                Access::Read,
            )
            .ok("200", ok_json("ChainInfo"))
            .errors(STORE),
        ),
        (
            "get",
            "/api/v1/chain/status",
            Op::new(
                "getChainStatus",
                "chain",
                "State, tip, time since the last block and the sync summary",
                Access::Read,
            )
            .ok("200", ok_json("ChainStatus"))
            .errors(STORE),
        ),
        (
            "get",
            "/api/v1/chain/height",
            Op::new(
                "getChainHeight",
                "chain",
                "The tip (followers poll it); 404 while the chain is empty",
                Access::Read,
            )
            .ok("200", ok_json("ChainHeight"))
            .errors(STORE_404),
        ),
        (
            "post",
            "/api/v1/chain/verify",
            Op::new(
                "verifyChain",
                "chain",
                "Integrity check of a height range (the whole chain without a body)",
                Access::Write,
            )
            .body(schema_ref("VerifyRequest"), false)
            .ok("200", ok_json("VerifyReport"))
            .errors(STORE),
        ),
        (
            "get",
            "/api/v1/sync/status",
            Op::new(
                "getSyncStatus",
                "sync",
                "Follower state (disabled on a standalone node)",
                Access::Read,
            )
            .ok("200", ok_json("SyncStatus")),
        ),
        (
            "post",
            "/api/v1/sync",
            Op::new(
                "runSync",
                "sync",
                "Run a sync round now; 409 on a standalone node",
                Access::Write,
            )
            .ok("200", ok_json("SyncStatus"))
            .errors(&[409]),
        ),
        (
            "get",
            "/api/v1/monitoring/system",
            Op::new(
                "getSystemMonitoring",
                "monitoring",
                "Latest host sample (never measured on the request)",
                Access::Read,
            )
            .ok("200", ok_json("SystemSnapshot")),
        ),
        (
            "get",
            "/api/v1/monitoring/health",
            Op::new(
                "getHealthMonitoring",
                "monitoring",
                "Every health check with status, message and latency",
                Access::Read,
            )
            .ok("200", ok_json("HealthReport")),
        ),
    ]
}

fn public_ops() -> Vec<(&'static str, &'static str, Op)> {
    let probe = Access::Public {
        rate_limited: false,
    };
    let health = |id| {
        Op::new(
            id,
            "health",
            "Health: 200 healthy or degraded, 503 unhealthy (the report is in additional_info)",
            probe,
        )
        .ok("200", ok_json("HealthReport"))
        .errors(&[503])
    };
    vec![
        ("get", "/health", health("getHealth")),
        ("get", "/api/v1/health", health("getApiHealth")),
        (
            "get",
            "/health/live",
            Op::new(
                "getLiveness",
                "health",
                "Liveness: the process answers",
                probe,
            )
            .ok("200", ok_json("Probe")),
        ),
        (
            "get",
            "/health/ready",
            Op::new(
                "getReadiness",
                "health",
                "Readiness: 503 until the store is open and state loaded, and while stopping",
                probe,
            )
            .ok("200", ok_json("Probe"))
            .errors(&[503]),
        ),
        (
            "get",
            "/metrics",
            Op::new(
                "getMetrics",
                "monitoring",
                "Prometheus text format 0.0.4; 404 when metrics are disabled",
                probe,
            )
            .ok(
                "200",
                json!({"description": "Metrics", "headers": {"X-Request-Id": request_id_header()},
                               "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )
            .errors(&[404]),
        ),
        (
            "get",
            "/api/v1/openapi.json",
            Op::new(
                "getOpenApi",
                "meta",
                "This document",
                Access::Public { rate_limited: true },
            )
            .ok(
                "200",
                json_response("OpenAPI 3.1 document", json!({"type": "object"}), json!({})),
            ),
        ),
    ]
}

/// Every (method, path, operation), in the order the document lists them.
pub(super) fn operations() -> Vec<(&'static str, &'static str, Value)> {
    block_ops()
        .into_iter()
        .chain(chain_ops())
        .chain(public_ops())
        .chain(event_ops())
        .chain(explorer_ops())
        .map(|(method, path, op)| (method, path, op.build()))
        .collect()
}

/// The `paths` object.
pub(super) fn paths() -> Map<String, Value> {
    let mut paths = Map::new();
    for (method, path, op) in operations() {
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        item[method] = op;
    }
    paths
}

const EVENTS: &str = "Server-Sent Events (`text/event-stream`, never compressed) of the chain, in chain order. \
Frames: `retry: 2000` first; `event: block` with `id: <height>:<hash>` and `data:` the block as `/blocks/height/{height}` serves it \
(`?thin=1`: its header: height, hash, previous_hash, merkle_root, timestamp, producer, transaction_count); \
`event: reorg` with the common ancestor as its id and `data: {ancestor:{height,hash}, depth, old_tip:{height,hash}, new_tip:{height,hash}}` \
when blocks already sent are rolled back, followed by the new branch's blocks; \
`event: resync` with `data: {reason, from_height}` when a resumed position is neither on the chain nor in the rollback log \
(the stream goes on from `from_height`); a `: keep-alive` comment when idle (api.event_keepalive_seconds, 15). \
Resume with `Last-Event-ID: <height>:<hash>` (exclusive; wins over `from`) or `?from=<height>` (inclusive); \
without either the stream starts at the next block. A position past the tip streams live. \
At most api.max_event_streams streams per process (503 SRV_003 with Retry-After past it). The stream never ends by itself.";

fn event_op(id: &'static str) -> Op {
    Op::new(id, "events", "Server-Sent Events stream of new blocks and reorgs", Access::Read)
        .params(vec![
            height_param("from", "First height to replay, inclusive (Last-Event-ID wins when both are sent)"),
            query(
                "thin",
                json!({"type": "string", "enum": ["0", "1", "false", "true"]}),
                "1: block events carry the header only",
            ),
            json!({"name": "Last-Event-ID", "in": "header", "required": false,
                   "schema": {"type": "string", "pattern": "^[0-9]+:[0-9a-f]{64}$"},
                   "description": "Resume after this event id, `<height>:<hash>`"}),
        ])
        .ok(
            "200",
            json!({"description": EVENTS, "headers": {
                    "X-Request-Id": request_id_header(),
                    "Cache-Control": {"description": "no-cache", "required": true, "schema": {"type": "string"}},
                    "X-Accel-Buffering": {"description": "no: proxies must not buffer the stream", "required": true, "schema": {"type": "string"}}},
                   "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
        )
        .errors(STORE_400)
}

/// The event stream, under its own path and under `/blocks/` (Lucid's gateway forwards only
/// `/api/v1/blocks/*`).
fn event_ops() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        ("get", "/api/v1/events", event_op("getEvents")),
        ("get", "/api/v1/blocks/events", event_op("getBlockEvents")),
    ]
}

/// The explorer page and its assets.
fn explorer_ops() -> Vec<(&'static str, &'static str, Op)> {
    let asset = |id, summary, media: &str| {
        Op::new(
            id,
            "explorer",
            summary,
            Access::Public { rate_limited: true },
        )
        .ok(
            "200",
            json!({"description": summary, "headers": {"X-Request-Id": request_id_header()},
                   "content": {media: {"schema": {"type": "string"}}}}),
        )
    };
    vec![
        (
            "get",
            "/",
            asset("getExplorer", "The explorer page", "text/html"),
        ),
        (
            "get",
            "/explorer",
            asset("getExplorerPage", "The explorer page", "text/html"),
        ),
        (
            "get",
            "/explorer.js",
            asset(
                "getExplorerScript",
                "The explorer page's script",
                "text/javascript",
            ),
        ),
        (
            "get",
            "/explorer.css",
            asset("getExplorerStyle", "The explorer page's style", "text/css"),
        ),
        (
            "get",
            "/favicon.ico",
            asset("getIcon", "The explorer page's icon (SVG)", "image/svg+xml"),
        ),
    ]
}
