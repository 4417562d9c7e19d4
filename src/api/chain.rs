//! `/api/v1/chain/...`: what the chain is, where its tip is, and an online integrity check.

use super::request::JsonBody;
use super::{off_runtime, store_error};
use crate::api::state::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn mode(state: &AppState) -> &'static str {
    if state.sync.is_some() {
        "follower"
    } else {
        "standalone"
    }
}

/// GET /api/v1/chain/info
pub async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (info, totals, tip, genesis) = off_runtime(&state.reads, |store| {
        Ok((
            store.chain_info()?,
            store.totals()?,
            store.tip()?,
            store.meta_at(0)?,
        ))
    })
    .await?;
    let height = tip.as_ref().map(|t| t.height);
    let average = match (&tip, &genesis) {
        (Some(t), Some(g)) if t.height > 0 => {
            Some((t.timestamp_micros - g.timestamp_micros) as f64 / 1e6 / t.height as f64)
        }
        _ => None,
    };
    let c = &state.config.chain;
    Ok(axum::Json(json!({
        "network": info.network,
        "consensus": "PoOT",
        "version": env!("CARGO_PKG_VERSION"),
        "format_version": info.format_version,
        "mode": mode(&state),
        "genesis_hash": info.genesis_hash,
        "height": height,
        "tip_hash": tip.as_ref().map(|t| t.hash.clone()),
        "total_blocks": totals.blocks,
        "total_transactions": totals.transactions,
        "total_size_bytes": totals.bytes,
        "average_block_time_seconds": average,
        "limits": {
            "max_transactions_per_block": c.max_transactions_per_block,
            "max_block_size_bytes": c.max_block_size_bytes,
            "max_future_skew_seconds": c.max_future_skew_seconds,
            "max_body_bytes": state.config.api.max_body_bytes,
            "max_range_limit": 1000,
            "max_headers_limit": 2000,
        },
    }))
    .into_response())
}

/// GET /api/v1/chain/status
pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tip = state.reads.tip().map_err(store_error)?;
    let now = crate::ledger::now().unix_micros();
    let since = tip
        .as_ref()
        .map(|t| ((now - t.timestamp_micros) as f64 / 1e6).max(0.0));
    let sync = state.sync.as_ref().map(|s| s.summary());
    let finality_floor = state.reads.finality_floor().map_err(store_error)?;
    let state_name = match (&tip, &sync) {
        (None, _) => "empty".to_string(),
        (_, Some(s)) => s
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("syncing")
            .to_string(),
        (_, None) => "active".to_string(),
    };
    Ok(axum::Json(json!({
        "state": state_name,
        "mode": mode(&state),
        "height": tip.as_ref().map(|t| t.height),
        "tip_hash": tip.as_ref().map(|t| t.hash.clone()),
        "tip_timestamp": tip.as_ref().map(|t| t.timestamp.clone()),
        "seconds_since_last_block": since,
        "sync": sync,
        "finality_floor": finality_floor,
    }))
    .into_response())
}

/// GET /api/v1/chain/height (followers poll it)
pub async fn height(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tip = state.reads.tip().map_err(store_error)?.ok_or_else(|| {
        ApiError::block_not_found("latest").msg("The chain is empty: no block yet")
    })?;
    Ok(axum::Json(json!({
        "height": tip.height,
        "block_hash": tip.hash,
        "timestamp": tip.timestamp,
        "transaction_count": tip.transaction_count,
        "block_size": tip.block_size_bytes,
        "validator": tip.producer,
    }))
    .into_response())
}

/// POST /api/v1/chain/verify with optional `{start_height, end_height}`.
pub async fn verify(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    // An empty body checks the whole chain; a body must be JSON.
    let empty = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0")
        || (req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none()
            && req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .is_none()
            && req
                .headers()
                .get(axum::http::header::TRANSFER_ENCODING)
                .is_none());
    let v = if empty {
        Value::Object(serde_json::Map::new())
    } else {
        <JsonBody as axum::extract::FromRequest<()>>::from_request(req, &())
            .await
            .map(|JsonBody(v)| v)?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "Expected a JSON object {start_height, end_height}, or no body",
        ));
    }
    let field = |k: &str| -> Result<Option<u64>, ApiError> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("{k} must be a non-negative integer"))
            }),
        }
    };
    let from = field("start_height")?.unwrap_or(0);
    let to = field("end_height")?;
    if let Some(to) = to
        && to < from
    {
        return Err(ApiError::bad_request(
            "end_height must not be below start_height",
        ));
    }
    let report = off_runtime(&state.reads, move |store| {
        crate::verify::verify(store, from, to)
    })
    .await?;
    let status = StatusCode::OK;
    Ok((status, axum::Json(report)).into_response())
}
