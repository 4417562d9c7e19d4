//! `GET /api/v1/blocks/stats`: chain statistics — totals, first and last block time, averages,
//! and blocks in the last hour and day. Totals are O(1) in the store, the recent counts walk
//! only the recent end of the time index, and the answer is reused briefly while the tip
//! stays the same, so polling it never costs a walk of the chain.

use super::off_runtime;
use crate::api::state::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is reused while the tip is unchanged: the hour and day counts drift by
/// at most this much.
const REUSE_FOR: Duration = Duration::from_secs(2);

/// Most blocks counted for the day (and hour) figures: a bound on one computation's cost,
/// above any real chain's rate (over 11 blocks a second).
const RECENT_CAP: u64 = 1_000_000;

const HOUR_MICROS: i64 = 3_600 * 1_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// One computed answer: when, at which tip (hash), and the body.
struct Computed {
    at: Instant,
    tip: Option<String>,
    body: Arc<Value>,
}

/// The last answer, for the tip it was computed at.
#[derive(Default)]
pub struct StatsCache {
    last: Mutex<Option<Computed>>,
}

impl StatsCache {
    fn fresh(&self, tip: Option<&str>) -> Option<Arc<Value>> {
        let last = self.last.lock().expect("stats cache lock");
        last.as_ref()
            .filter(|c| c.at.elapsed() < REUSE_FOR && c.tip.as_deref() == tip)
            .map(|c| c.body.clone())
    }

    fn keep(&self, tip: Option<String>, body: Arc<Value>) {
        *self.last.lock().expect("stats cache lock") = Some(Computed {
            at: Instant::now(),
            tip,
            body,
        });
    }
}

/// GET /api/v1/blocks/stats
pub async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tip = off_runtime(&state.reads, |store| store.tip()).await?;
    let tip_hash = tip.as_ref().map(|t| t.hash.clone());
    if let Some(v) = state.stats.fresh(tip_hash.as_deref()) {
        return Ok(axum::Json(&*v).into_response());
    }
    let now = crate::ledger::now();
    let now_micros = now.unix_micros();
    let (totals, first, day, hour) = off_runtime(&state.reads, move |store| {
        let day = store.blocks_since(now_micros - DAY_MICROS, RECENT_CAP)?;
        // Every block of the last hour is one of the day's: no need to look further.
        let hour = if day == 0 {
            0
        } else {
            store.blocks_since(now_micros - HOUR_MICROS, day)?
        };
        Ok((store.totals()?, store.meta_at(0)?, day, hour))
    })
    .await?;
    let per_block = |sum: u64| (totals.blocks > 0).then(|| sum as f64 / totals.blocks as f64);
    let average_block_time = match (&tip, &first) {
        (Some(t), Some(g)) if t.height > 0 => {
            Some((t.timestamp_micros - g.timestamp_micros) as f64 / 1e6 / t.height as f64)
        }
        _ => None,
    };
    let body = Arc::new(json!({
        "height": tip.as_ref().map(|t| t.height),
        "total_blocks": totals.blocks,
        "total_transactions": totals.transactions,
        "total_size_bytes": totals.bytes,
        "first_block_time": first.as_ref().map(|g| g.timestamp.clone()),
        "last_block_time": tip.as_ref().map(|t| t.timestamp.clone()),
        "average_block_time_seconds": average_block_time,
        "average_block_size_bytes": per_block(totals.bytes),
        "average_transactions_per_block": per_block(totals.transactions),
        "blocks_last_hour": hour,
        "blocks_last_24h": day,
        "computed_at": now.to_string(),
    }));
    state.stats.keep(tip_hash, body.clone());
    Ok(axum::Json(&*body).into_response())
}
