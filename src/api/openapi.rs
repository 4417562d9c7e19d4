//! The OpenAPI 3 document served at `/api/v1/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

/// GET /api/v1/openapi.json
pub async fn document() -> Json<Value> {
    Json(
        json!({"openapi": "3.0.3", "info": {"title": "block-manager", "version": env!("CARGO_PKG_VERSION")}, "paths": {}}),
    )
}
