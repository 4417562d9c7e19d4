//! Health, metrics, monitoring and sync-control routes.

use crate::api::state::AppState;
use crate::error::ApiError;
use crate::health::Status;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

fn health_body(state: &AppState, report: &crate::health::Report) -> Value {
    json!({
        "status": report.status,
        "service": state.config.service.name,
        "version": env!("CARGO_PKG_VERSION"),
        // Lucid's `service.environment` / `service.platform` (LUCID_ENV, LUCID_PLATFORM): which
        // deployment answered, for operators and dashboards that watch several.
        "environment": state.config.service.environment,
        "platform": state.config.service.platform,
        // Which replica answered, when a balancer spreads requests over several.
        "instance_id": state.instance_id,
        "uptime_seconds": (state.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "checks": report.checks,
    })
}

/// GET /health and /api/v1/health: 200 healthy or degraded, 503 unhealthy.
pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health.report().await;
    let body = health_body(&state, &report);
    if report.status == Status::Unhealthy {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SRV_002")
            .info(body)
            .into_response();
    }
    axum::Json(body).into_response()
}

/// GET /health/live: the process answers.
pub async fn live() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"alive"}"#,
    )
        .into_response()
}

/// GET /health/ready: 503 until the store is open and state loaded, and again while stopping.
pub async fn ready(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::SeqCst) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SRV_003")
            .msg("Not ready: starting or stopping")
            .into_response();
    }
    // The store's chain state is loaded (in memory: no wait): a database that is still being
    // reached keeps the service out of a balancer's rotation.
    if let Err(e) = state.reads.tip() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ST_001")
            .msg(format!("Not ready: {e}"))
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ready"}"#,
    )
        .into_response()
}

/// GET /metrics: Prometheus text format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.config.monitoring;
    // Only metrics_enabled decides: Lucid's file sets expose_metrics: false while its
    // Prometheus scrapes the service, so that key is accepted and unused.
    if !m.metrics_enabled {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "MON_001")
            .msg("Metrics are disabled (monitoring.metrics_enabled)"));
    }
    let mut res = state.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(res)
}

/// GET /api/v1/monitoring/system: the latest host sample (never measured on the request).
/// 404 when host sampling is off (`monitoring.metrics_enabled: false`).
pub async fn monitoring_system(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.system.enabled() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "MON_001")
            .msg("Host monitoring is disabled (monitoring.metrics_enabled)"));
    }
    Ok(axum::Json(state.system.snapshot()).into_response())
}

/// GET /api/v1/monitoring/health: every check with status, message and latency.
pub async fn monitoring_health(State(state): State<AppState>) -> Response {
    let report = state.health.report().await;
    axum::Json(health_body(&state, &report)).into_response()
}

/// GET /api/v1/sync/status
pub async fn sync_status(State(state): State<AppState>) -> Response {
    match &state.sync {
        Some(sync) => axum::Json(sync.status()).into_response(),
        None => axum::Json(json!({
            "state": "disabled",
            "mode": "standalone",
            "message": if state.config.synchronization.enabled {
                "No upstream configured (BLOCKCHAIN_ENGINE_URL / synchronization.engine_url)"
            } else {
                "Sync is switched off (synchronization.enabled: false), whatever the engine URL"
            },
            "local_height": state.ledger.tip_height(),
            // Nothing is followed, so there is no transport to name.
            "transport": null,
        }))
        .into_response(),
    }
}

/// POST /api/v1/sync: run a round now.
pub async fn sync_now(State(state): State<AppState>) -> Result<Response, ApiError> {
    match &state.sync {
        Some(sync) => Ok(axum::Json(sync.run_now().await).into_response()),
        None => Err(ApiError::new(StatusCode::CONFLICT, "SYNC_001")
            .msg("Sync is disabled: this node is standalone; set BLOCKCHAIN_ENGINE_URL to follow an upstream")),
    }
}
