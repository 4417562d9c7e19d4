//! The HTTP surface: `router()` assembles every route and the middleware stack; one file per
//! resource. Handlers translate between HTTP and the store, ledger and chain; nothing below
//! this module knows axum.

pub mod access;
mod blocks;
mod chain;
mod compress;
pub mod events;
mod explorer;
mod gate;
mod limiter;
mod observe;
pub mod openapi;
mod request;
pub mod state;
mod stats;
mod system;
mod timeout;

pub use stats::StatsCache;

use crate::api::state::AppState;
use crate::chain::Failure;
use crate::error::ApiError;
use crate::ledger::WriteError;
use crate::store::{BlockReads, StoreError};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use serde_json::json;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Every route and the middleware, over `state`.
pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/api/v1/blocks", get(blocks::list))
        .route("/api/v1/blocks/", get(blocks::list))
        .route("/api/v1/blocks/latest", get(blocks::latest))
        .route("/api/v1/blocks/range", get(blocks::range))
        .route("/api/v1/blocks/headers", get(blocks::headers))
        .route("/api/v1/blocks/height/{height}", get(blocks::at_height))
        // A literal segment: matched before the `{block_id}` capture whatever the order here.
        .route("/api/v1/blocks/stats", get(stats::stats))
        .route("/api/v1/blocks/{block_id}", get(blocks::by_id))
        .route(
            "/api/v1/blocks/validate",
            post(blocks::validate).layer(body_limit(&state)),
        )
        .route("/api/v1/transactions/{tx_id}", get(blocks::transaction))
        .route("/api/v1/chain/info", get(chain::info))
        .route("/api/v1/chain/status", get(chain::status))
        .route("/api/v1/chain/height", get(chain::height))
        .route("/api/v1/sync/status", get(system::sync_status))
        .route("/api/v1/monitoring/system", get(system::monitoring_system))
        .route("/api/v1/monitoring/health", get(system::monitoring_health))
        // Event streams: never gzip'd (the compression layer leaves `text/event-stream` alone),
        // and a literal segment, so matched before `{block_id}`.
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/blocks/events", get(events::stream));
    // Open reads skip the layer altogether: on the hottest routes it was a boxed future per
    // request that did nothing.
    let reads = if state.config.security.require_read_auth {
        reads.route_layer(from_fn_with_state(state.clone(), access::require_read))
    } else {
        reads
    };
    let writes = Router::new()
        .route("/api/v1/blocks", post(blocks::create))
        .route("/api/v1/blocks/submit", post(blocks::submit))
        .route("/api/v1/chain/verify", post(chain::verify))
        .route("/api/v1/sync", post(system::sync_now))
        .route_layer(body_limit(&state))
        .route_layer(from_fn_with_state(state.clone(), access::require_write));
    let public = Router::<AppState>::new()
        .route("/health", get(system::health))
        .route("/api/v1/health", get(system::health))
        .route("/health/live", get(system::live))
        .route("/health/ready", get(system::ready))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        // The explorer page only reads the public API, so it is public like the docs.
        .route("/", get(explorer::page))
        .route("/explorer", get(explorer::page))
        .route("/explorer.js", get(explorer::script))
        .route("/explorer.css", get(explorer::style))
        .route("/favicon.ico", get(explorer::icon));

    with_middleware(reads.merge(writes).merge(public), state)
}

/// The middleware stack around `routes`: observation (request id, metrics, the access line,
/// the error shape, caught panics), head limits, CORS, timeout, rate limit, and the 404/405
/// fallbacks. The body limit is on the routes that read bodies (see [`body_limit`]).
///
/// One `Router::layer` of one composed stack, outermost first. Each `Router::layer` call wraps
/// every route in a boxed service of its own, and a request then paid a clone of each box, a
/// boxed future per level and a move of the request through it: seven levels were about a
/// tenth of a block read's CPU. Composed, the stack is one box, cloned once per request, and
/// still runs after routing, so every layer sees the route template, and answers made inside it
/// (a 429, a 408, a caught panic) are counted under their route.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = crate::config::duration(state.config.api.request_timeout_seconds);
    let rate_limit = {
        let state = state.clone();
        move |req: &axum::extract::Request| access::rate_limited(&state, req)
    };
    let stack = ServiceBuilder::new()
        // Outside observation, so the error shape is applied to (and reads) uncompressed bodies.
        .layer(compress::GzipLayer)
        .layer(observe::ObserveLayer::new(state.clone()))
        // Before anything else looks at the request, inside the error shaping.
        .layer(gate::GateLayer::new(crate::server::head::over_limits))
        .option_layer(cors(&state.config.cors.allowed_origins))
        .layer(timeout::TimeoutLayer::new(timeout))
        .layer(gate::GateLayer::new(rate_limit));
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(stack)
        .with_state(state)
}

/// `api.max_body_bytes`, on the routes that read a body (writes and validation) and only
/// there: on every route it cost each read an extension, allocated and dropped, that nothing
/// read.
fn body_limit(state: &AppState) -> DefaultBodyLimit {
    DefaultBodyLimit::max(state.config.api.max_body_bytes)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&String> = origins.iter().filter(|o| !o.trim().is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                "x-api-key".parse().expect("static header"),
                "x-request-id".parse().expect("static header"),
            ])
            .expose_headers([
                "x-request-id".parse().expect("static header"),
                axum::http::header::ETAG,
                axum::http::header::LOCATION,
                axum::http::header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "REQ_005")
        .msg(format!("Not found: {}", uri.path()))
        .info(json!({"path": uri.path()}))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "REQ_004")
        .msg(format!("Method {method} is not allowed on {}", uri.path()))
        .info(json!({"method": method.as_str(), "path": uri.path()}))
}

/// Runs the store read `f` off the async threads (through the one wrapper for that,
/// [`crate::store::reads::off_runtime`]); a failed read is the API's store error.
pub(crate) async fn off_runtime<T: Send + 'static>(
    reads: &std::sync::Arc<dyn BlockReads>,
    f: impl FnOnce(&dyn BlockReads) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    crate::store::reads::off_runtime(reads, f)
        .await
        .map_err(store_error)
}

/// 422 listing every validation failure with its code.
pub(crate) fn invalid(failures: Vec<Failure>) -> ApiError {
    let messages: Vec<&str> = failures.iter().map(|f| f.message.as_str()).collect();
    let codes: Vec<&str> = failures.iter().map(|f| f.code).collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "BM_002")
        .msg(format!("Block validation failed: {}", messages.join("; ")))
        .info(json!({"errors": failures, "error_codes": codes}))
}

/// Storage failures: a 5xx with the catalog's message; the cause is logged once here.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    let (status, code) = match &e {
        StoreError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "ST_004"),
        StoreError::PermissionDenied(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ST_005"),
        StoreError::Unavailable(_) | StoreError::AlreadyOpen { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "ST_001")
        }
        StoreError::Read(_) | StoreError::Corrupt(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "ST_003")
        }
        StoreError::Write(_)
        | StoreError::NotContiguous { .. }
        | StoreError::NewerFormat { .. }
        | StoreError::BelowFinalityFloor { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "ST_002"),
    };
    tracing::error!(code, error = %e, "storage failure");
    ApiError::new(status, code)
}

/// Ledger failures to HTTP.
pub(crate) fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Invalid(f) => invalid(f),
        WriteError::Conflict { height, existing } => ApiError::new(StatusCode::CONFLICT, "BM_007")
            .msg(format!(
                "Height {height} already holds a different block ({existing})"
            ))
            .info(json!({"height": height, "existing_hash": existing})),
        WriteError::Store(e) => store_error(e),
        WriteError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ST_001")
            .msg("The service is shutting down"),
    }
}
