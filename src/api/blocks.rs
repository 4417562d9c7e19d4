//! `/api/v1/blocks...` and `/api/v1/transactions/{tx_id}`: reads served straight from the
//! stored documents, and the write routes (create, submit) and validate.

use super::request::{IfNoneMatch, JsonText, Params, bad_param};
use super::{access, invalid, off_runtime, store_error, write_error};
use crate::api::state::AppState;
use crate::chain::model::DOCUMENT_ID_PREFIX;
use crate::chain::{self, ChainView, Flags};
use crate::error::ApiError;
use crate::ledger::Submitted;
use crate::store::{BlockMeta, BlockReads, Order};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// Chain reads validation needs, straight from the store.
pub struct StoreView<'a>(pub &'a dyn BlockReads);

impl ChainView for StoreView<'_> {
    fn hash_at(&self, height: u64) -> Option<String> {
        self.0.meta_at(height).ok().flatten().map(|m| m.hash)
    }
    fn tx_exists(&self, tx_id: &str) -> bool {
        self.0.tx_location(tx_id).ok().flatten().is_some()
    }
}

/// A block summary (list items), from the stored meta.
#[derive(Serialize)]
pub struct SummaryOut<'a> {
    block_id: &'a str,
    height: u64,
    hash: &'a str,
    previous_hash: &'a str,
    timestamp: &'a str,
    transaction_count: u32,
    block_size_bytes: u64,
    validator: &'a str,
    producer: &'a str,
}

impl<'a> From<&'a BlockMeta> for SummaryOut<'a> {
    fn from(m: &'a BlockMeta) -> Self {
        Self {
            block_id: &m.hash,
            height: m.height,
            hash: &m.hash,
            previous_hash: &m.previous_hash,
            timestamp: &m.timestamp,
            transaction_count: m.transaction_count,
            block_size_bytes: m.block_size_bytes,
            validator: &m.producer,
            producer: &m.producer,
        }
    }
}

/// A block header (light clients), from the stored meta.
#[derive(Serialize)]
pub struct HeaderOut<'a> {
    height: u64,
    hash: &'a str,
    previous_hash: &'a str,
    merkle_root: &'a str,
    timestamp: &'a str,
    producer: &'a str,
    transaction_count: u32,
}

impl<'a> From<&'a BlockMeta> for HeaderOut<'a> {
    fn from(m: &'a BlockMeta) -> Self {
        Self {
            height: m.height,
            hash: &m.hash,
            previous_hash: &m.previous_hash,
            merkle_root: &m.merkle_root,
            timestamp: &m.timestamp,
            producer: &m.producer,
            transaction_count: m.transaction_count,
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    // Built directly: `(status, Vec<u8>)` would set `application/octet-stream` first.
    let mut res = Response::new(axum::body::Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The hash of a stored document with the quotes around it in the document (`"<hash>"`),
/// which is the entity tag of a final block.
fn quoted_hash(body: &[u8]) -> Option<&[u8]> {
    let start = DOCUMENT_ID_PREFIX.len() - 1;
    let quoted = body.get(start..start + 66)?;
    (body.starts_with(DOCUMENT_ID_PREFIX) && quoted[65] == b'"').then_some(quoted)
}

/// A stored block with caching headers. A block at or below the store's finality floor never
/// changes: it may be cached for long, tagged by its hash. Above the floor a fork may still
/// replace it, and a replacement can even carry the same hash (the hash preimage joins fields
/// without separators), so it is cached briefly and tagged by a digest of the bytes served: a
/// 304 only ever confirms those bytes.
///
/// `is_final` must be learnt before the body is read: a body read first could be one a
/// rollback replaced just before the block became final.
fn block_response(is_final: bool, body: Vec<u8>, if_none_match: Option<&HeaderValue>) -> Response {
    let mut digest_tag = [0u8; BODY_ETAG_LEN];
    let (etag, cache): (&[u8], _) = match quoted_hash(&body).filter(|_| is_final) {
        Some(quoted) => (quoted, "public, max-age=31536000, immutable"),
        None => {
            body_etag(&body, &mut digest_tag);
            (&digest_tag, "public, max-age=2")
        }
    };
    // A header that is not visible ASCII matches nothing, as when it was read as text.
    let matches = if_none_match.is_some_and(|inm| {
        inm.to_str().is_ok()
            && inm
                .as_bytes()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|t| t == etag || t == b"*")
    });
    // Made before the body moves into the response; both tags are visible ASCII.
    let tag = HeaderValue::from_bytes(etag).ok();
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, body)
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(tag) = tag {
        h.insert(header::ETAG, tag);
    }
    res
}

/// Length of [`body_etag`]'s tag: `"b3-` and 32 hex digits and `"`.
const BODY_ETAG_LEN: usize = 37;

/// A strong ETag naming the exact bytes of `body`: 128 bits of its BLAKE3 digest, written
/// into `out` as `"b3-<32 hex digits>"`.
fn body_etag(body: &[u8], out: &mut [u8; BODY_ETAG_LEN]) {
    let digest = blake3::hash(body).to_hex();
    out[..4].copy_from_slice(b"\"b3-");
    out[4..36].copy_from_slice(&digest.as_bytes()[..32]);
    out[36..].copy_from_slice(b"\"");
}

/// A decimal height: digits only (no sign, no spaces); more than a u64 holds names no block.
fn parse_height(raw: &str) -> Result<u64, ApiError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_param("height", raw, "expected a decimal height"));
    }
    raw.parse::<u64>()
        .map_err(|_| ApiError::block_not_found(raw))
}

async fn by_height(
    state: &AppState,
    height: u64,
    shown: &str,
    if_none_match: Option<&HeaderValue>,
) -> Result<Response, ApiError> {
    let reads = &state.reads;
    let is_final = reads.finality_floor().is_ok_and(|floor| height <= floor);
    // Page-cache reads are answered in place: the boxed future would only cost an allocation.
    let body = if reads.reads_inline() {
        reads.body_at(height)
    } else {
        reads.body_at_async(height).await
    };
    match body.map_err(store_error)? {
        Some(body) => Ok(block_response(is_final, body, if_none_match)),
        None => Err(ApiError::block_not_found(shown)),
    }
}

/// A store read: inline on an engine whose reads are page-cache reads, else on a blocking
/// thread (a body the engine holds in memory is still served inline).
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn BlockReads) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    if state.reads.reads_inline() {
        return f(&*state.reads).map_err(store_error);
    }
    off_runtime(&state.reads, f).await
}

/// GET /api/v1/blocks/latest
pub async fn latest(
    State(state): State<AppState>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    let tip = state.ledger.tip_height().ok_or_else(|| {
        ApiError::block_not_found("latest").msg("The chain is empty: no block yet")
    })?;
    by_height(&state, tip, "latest", if_none_match.as_ref()).await
}

/// GET /api/v1/blocks/height/{height}
pub async fn at_height(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    let height = parse_height(&raw)?;
    by_height(&state, height, &raw, if_none_match.as_ref()).await
}

/// GET /api/v1/blocks/{block_id}: a 64-hex hash, or a decimal height.
pub async fn by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    if chain::hash::is_hash_hex(&id) {
        let reads = &state.reads;
        let height = if reads.reads_inline() {
            reads.height_of_hash(&id)
        } else {
            reads.height_of_hash_async(&id).await
        };
        let height = height
            .map_err(store_error)?
            .ok_or_else(|| ApiError::block_not_found(&id))?;
        return by_height(&state, height, &id, if_none_match.as_ref()).await;
    }
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        return by_height(&state, parse_height(&id)?, &id, if_none_match.as_ref()).await;
    }
    Err(bad_param(
        "block_id",
        &id,
        "expected a 64-character lowercase hex hash or a decimal height",
    ))
}

/// GET /api/v1/blocks: paginated summaries.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let page = p.int("page", 1, 1, 1_000_000_000)?;
    let limit = p.int("limit", 20, 1, 100)?;
    let from = p.opt_int("height_from", u64::MAX)?.unwrap_or(0);
    let to = p.opt_int("height_to", u64::MAX)?;
    let sort = p.get("sort").unwrap_or("height_desc");
    let (by_time, order) = match sort {
        "height_asc" => (false, Order::Asc),
        "height_desc" => (false, Order::Desc),
        "timestamp_asc" => (true, Order::Asc),
        "timestamp_desc" => (true, Order::Desc),
        other => {
            return Err(bad_param(
                "sort",
                other,
                "expected height_asc, height_desc, timestamp_asc or timestamp_desc",
            ));
        }
    };
    if let Some(to) = to
        && to < from
    {
        return Err(bad_param(
            "height_to",
            &to.to_string(),
            "must not be below height_from",
        ));
    }
    let tip = state.ledger.tip_height();
    // Heights are contiguous from 0, so the filtered count is arithmetic: no scan.
    let (lo, hi, total) = match tip {
        Some(tip) if from <= tip => {
            let hi = to.map_or(tip, |t| t.min(tip));
            (from, hi, hi - from + 1)
        }
        _ => (0, 0, 0),
    };
    let offset = (page - 1).saturating_mul(limit);
    let metas = if total == 0 || offset >= total {
        Vec::new()
    } else {
        off_runtime(&state.reads, move |store| {
            if by_time {
                store.metas_by_time(lo, hi, order, offset, limit as usize)
            } else {
                store.metas(lo, hi, order, offset, limit as usize)
            }
        })
        .await?
    };
    let blocks: Vec<SummaryOut> = metas.iter().map(SummaryOut::from).collect();
    let body = json!({"blocks": blocks, "pagination": {"page": page, "limit": limit, "total": total, "pages": total.div_ceil(limit)}});
    Ok(short_cache(axum::Json(body).into_response()))
}

fn short_cache(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=2"),
    );
    res
}

/// What a page of blocks adds around its bodies: `{"blocks":[`, `]}` and a comma between two.
fn envelope_bytes(bodies: usize) -> usize {
    b"{\"blocks\":[]}".len() + bodies.saturating_sub(1)
}

/// GET /api/v1/blocks/range?from=H&limit=N: full blocks ascending (followers use it).
///
/// A page stops adding bodies at `api.max_response_bytes` and holds the blocks that fit, always
/// at least one: `limit` × 1 MiB blocks would otherwise be read into memory per request. A
/// short page is a valid page; the follower asks again from the height after its last block.
pub async fn range(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let from = p.int("from", 0, 0, u64::MAX)?;
    let limit = p.int("limit", 100, 1, 1000)? as usize;
    let budget = state
        .config
        .api
        .max_response_bytes
        .saturating_sub(envelope_bytes(limit));
    // Read before the bodies: a block at or below this height existed when they were read, so
    // a page that ends before it was cut by the budget, not by the tip.
    let tip = state.ledger.tip_height();
    let bodies = off_runtime(&state.reads, move |store| store.bodies(from, limit, budget)).await?;
    let next = from.saturating_add(bodies.len() as u64);
    if bodies.len() < limit && tip.is_some_and(|t| next <= t) {
        state
            .metrics
            .http_responses_truncated
            .with_label_values(&[crate::metrics::RANGE_ROUTE])
            .inc();
    }
    let size = bodies.iter().map(Vec::len).sum::<usize>() + envelope_bytes(bodies.len());
    // Streamed as the stored bodies themselves, not joined into one buffer: a page costs
    // its size once, not twice, while it is sent.
    let mut parts = std::collections::VecDeque::with_capacity(2 * bodies.len() + 1);
    parts.push_back(bytes::Bytes::from_static(b"{\"blocks\":["));
    for (i, b) in bodies.into_iter().enumerate() {
        if i > 0 {
            parts.push_back(bytes::Bytes::from_static(b","));
        }
        parts.push_back(bytes::Bytes::from(b));
    }
    parts.push_back(bytes::Bytes::from_static(b"]}"));
    let stream = tokio_util::io::ReaderStream::with_capacity(Parts(parts), 64 * 1024);
    let mut res = (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(short_cache(res))
}

/// A page's pieces read out in order; each is freed once sent.
struct Parts(std::collections::VecDeque<bytes::Bytes>);

impl tokio::io::AsyncRead for Parts {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        while let Some(front) = self.0.front_mut() {
            if front.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            break;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// GET /api/v1/blocks/headers?from=H&limit=N: headers ascending.
pub async fn headers(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let from = p.int("from", 0, 0, u64::MAX)?;
    let limit = p.int("limit", 100, 1, 2000)? as usize;
    let metas = off_runtime(&state.reads, move |store| {
        store.metas(from, u64::MAX, Order::Asc, 0, limit)
    })
    .await?;
    let headers: Vec<HeaderOut> = metas.iter().map(HeaderOut::from).collect();
    Ok(short_cache(
        axum::Json(json!({"headers": headers})).into_response(),
    ))
}

/// GET /api/v1/transactions/{tx_id}
pub async fn transaction(
    State(state): State<AppState>,
    Path(tx_id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(StatusCode::NOT_FOUND, "TX_001")
            .msg(format!("Transaction not found: {tx_id}"))
            .info(json!({"tx_id": tx_id}))
    };
    let id = tx_id.clone();
    let found = read(&state, move |s| {
        let Some((height, index)) = s.tx_location(&id)? else {
            return Ok(None);
        };
        Ok(s.body_at(height)?.map(|body| (height, index, body)))
    })
    .await?;
    let (height, index, body) = found.ok_or_else(not_found)?;
    let block: Value = serde_json::from_slice(&body)
        .map_err(|e| store_error(crate::store::StoreError::Corrupt(e.to_string())))?;
    let mut tx = block["transactions"]
        .get(index as usize)
        .cloned()
        .ok_or_else(not_found)?;
    if let Value::Object(map) = &mut tx {
        map.insert("block_height".into(), json!(height));
        map.insert("block_hash".into(), block["hash"].clone());
        map.insert("index".into(), json!(index));
    }
    Ok(axum::Json(tx).into_response())
}

fn created(record_body: Vec<u8>, hash: &str, status: StatusCode) -> Response {
    let mut res = json_response(status, record_body);
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/blocks/{hash}")) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

/// POST /api/v1/blocks: create the next block from `{transactions, producer, signature}`.
pub async fn create(
    State(state): State<AppState>,
    JsonText { value: v, bytes }: JsonText,
) -> Result<Response, ApiError> {
    access::writable(&state)?;
    let Value::Object(obj) = &v else {
        return Err(ApiError::bad_request(
            "Expected a JSON object {transactions, producer, signature}",
        ));
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let reject = |failures: Vec<chain::Failure>| {
        state.metrics.observe_failures(&failures);
        invalid(failures)
    };
    let producer = text("producer")
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            reject(vec![
                chain::Failure::new("VAL_001", "producer is required: a non-empty string")
                    .at("producer"),
            ])
        })?;
    let signature = text("signature").unwrap_or_default();
    if signature.is_empty() {
        return Err(reject(vec![
            chain::Failure::new("VAL_002", "Block signature is missing").at("signature"),
        ]));
    }
    let at = crate::ledger::now();
    let txs = obj
        .get("transactions")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let transactions = chain::parse_transactions(&txs, at).map_err(&reject)?;
    let inexact = chain::amount::check_written_amounts(&bytes, &transactions);
    if !inexact.is_empty() {
        return Err(reject(inexact));
    }
    match state
        .ledger
        .create(producer, signature, transactions, at)
        .await
        .map_err(write_error)?
    {
        Submitted::Stored(meta, body) => Ok(created(body, &meta.hash, StatusCode::CREATED)),
        // A retry of a create already stored: the stored block, as a repeated submit gets it.
        Submitted::AlreadyStored(meta, body) => Ok(created(body, &meta.hash, StatusCode::OK)),
    }
}

/// The block inside `{"block_data": {...}}`, or a bare block.
fn unwrap_block(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.get("block_data").is_some_and(Value::is_object) => {
            m.remove("block_data").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// POST /api/v1/blocks/submit: append a complete block produced elsewhere.
pub async fn submit(
    State(state): State<AppState>,
    JsonText { value: v, bytes }: JsonText,
) -> Result<Response, ApiError> {
    access::writable(&state)?;
    let v = unwrap_block(v);
    let parsed = chain::parse_block(&v).and_then(|b| {
        let inexact = chain::amount::check_written_amounts(&bytes, &b.transactions);
        if inexact.is_empty() {
            Ok(b)
        } else {
            Err(inexact)
        }
    });
    let block = match parsed {
        Ok(b) => b,
        Err(mut failures) => {
            chain::add_raw_failures(&v, &mut failures);
            state.metrics.observe_failures(&failures);
            return Err(quarantined(&state, &v, failures).await);
        }
    };
    match state.ledger.submit(block).await {
        Ok(Submitted::Stored(meta, body)) => Ok(created(body, &meta.hash, StatusCode::CREATED)),
        Ok(Submitted::AlreadyStored(_, body)) => Ok(json_response(StatusCode::OK, body)),
        Err(crate::ledger::WriteError::Invalid(failures)) => {
            Err(quarantined(&state, &v, failures).await)
        }
        Err(e) => Err(write_error(e)),
    }
}

async fn quarantined(state: &AppState, block: &Value, failures: Vec<chain::Failure>) -> ApiError {
    let errors = serde_json::to_value(&failures).unwrap_or_default();
    let (q, block) = (state.quarantine.clone(), block.clone());
    let _ = tokio::task::spawn_blocking(move || {
        q.reject(
            crate::quarantine::Origin::Api,
            "rejected by POST /api/v1/blocks/submit",
            errors,
            &block,
        )
    })
    .await;
    invalid(failures)
}

/// POST /api/v1/blocks/validate: full validation against the stored chain; changes nothing.
pub async fn validate(
    State(state): State<AppState>,
    JsonText { value: v, bytes }: JsonText,
) -> Result<Response, ApiError> {
    // What is wrong inside a block is the answer; a body that holds no block at all is a
    // malformed request, as the document says.
    let wrapped = v.get("block_data");
    if !v.is_object() || wrapped.is_some_and(|b| !b.is_object()) {
        return Err(ApiError::bad_request(
            "Expected a JSON object: {\"block_data\": {...}} or a bare block",
        ));
    }
    let v = unwrap_block(v);
    let limits = state.limits;
    let (parsed, failures) = off_runtime(&state.reads, move |store| {
        let (parsed, mut failures) =
            chain::validate_block(&v, &StoreView(store), &limits, crate::ledger::now());
        if let Some(block) = &parsed {
            failures.extend(chain::amount::check_written_amounts(
                &bytes,
                &block.transactions,
            ));
        }
        Ok((parsed, failures))
    })
    .await?;
    let mut flags = Flags::from_failures(&failures);
    if parsed.is_none() {
        // Hash and merkle root could not be recomputed from a block that did not parse.
        flags.integrity_valid = false;
        flags.merkle_root_valid = false;
    }
    let body = json!({
        "valid": failures.is_empty(),
        "validation_results": flags,
        "errors": failures.iter().map(|f| f.message.as_str()).collect::<Vec<_>>(),
        "error_codes": failures.iter().map(|f| f.code).collect::<Vec<_>>(),
        "warnings": Vec::<String>::new(),
    });
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quoted_hash_is_read_from_the_leading_block_id() {
        let body = format!("{{\"block_id\":\"{}\",\"height\":1}}", "a".repeat(64));
        let quoted = format!("\"{}\"", "a".repeat(64));
        assert_eq!(quoted_hash(body.as_bytes()), Some(quoted.as_bytes()));
        assert_eq!(quoted_hash(b"{\"height\":1}"), None);
        let short = format!("{{\"block_id\":\"{}\"}}", "a".repeat(63));
        assert_eq!(quoted_hash(short.as_bytes()), None);
    }

    #[test]
    fn body_tags_are_the_digest_in_quotes() {
        let mut tag = [0u8; BODY_ETAG_LEN];
        body_etag(b"{}", &mut tag);
        let digest = blake3::hash(b"{}").to_hex();
        assert_eq!(
            tag.as_slice(),
            format!("\"b3-{}\"", &digest[..32]).as_bytes()
        );
    }
}
