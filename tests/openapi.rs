//! The served OpenAPI document against the running service: every documented route is
//! routed, and what it answers is a documented status.

mod common;
use common::*;
use serde_json::{Value, json};

/// The document as served.
async fn served_doc(app: &TestApp) -> Value {
    let (status, doc) = app.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// `path` with its parameters filled from `values`, plus the query `query`.
fn concrete(path: &str, values: &[(&str, String)], query: &str) -> String {
    let mut out = path.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    if query.is_empty() {
        out
    } else {
        format!("{out}?{query}")
    }
}

fn documented(doc: &Value, method: &str, path: &str, status: u16) -> bool {
    doc["paths"][path][method]["responses"]
        .get(status.to_string())
        .is_some()
}

#[tokio::test]
async fn every_documented_get_answers_with_a_documented_status() {
    let app = spawn_app(|_| {}).await;
    let block = app.create_block("doc", 2).await;
    app.create_block("doc2", 1).await;
    let doc = served_doc(&app).await;
    let values = [
        ("height", "1".to_string()),
        ("block_id", block["hash"].as_str().unwrap().to_string()),
        ("tx_id", "doc-0".to_string()),
    ];
    let queries = [
        "",
        "page=1&limit=100&sort=timestamp_asc&height_from=0&height_to=2",
        "from=1&limit=1000",
        "limit=0",
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        for query in queries {
            let url = concrete(path, &values, query);
            let res = app.get(&url).await;
            let status = res.status().as_u16();
            assert!(
                documented(&doc, "get", path, status),
                "GET {url} answered {status}, which the document does not list for GET {path}"
            );
            if status >= 400 {
                let body: Value = res.json().await.unwrap();
                assert!(body["detail"]["error_code"].is_string(), "{url}: {body}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * 20, "only {checked} requests");
    app.stop().await;
}

#[tokio::test]
async fn every_documented_route_is_routed() {
    let app = spawn_app(|_| {}).await;
    let doc = served_doc(&app).await;
    let values = [
        ("height", "0".to_string()),
        ("block_id", "0".to_string()),
        ("tx_id", "none".to_string()),
    ];
    for (method, path) in block_manager::api::openapi::ROUTES {
        assert!(
            doc["paths"][path].get(*method).is_some(),
            "{method} {path} is not documented"
        );
        let url = app.url(&concrete(path, &values, ""));
        let req = match *method {
            "get" => app.client.get(&url),
            _ => app.client.post(&url).json(&json!({})),
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        // An event stream never ends: its status and headers are the answer.
        let stream = res
            .headers()
            .get("content-type")
            .is_some_and(|t| t == "text/event-stream");
        let body: Value = if stream {
            Value::Null
        } else {
            res.json().await.unwrap_or(Value::Null)
        };
        assert_ne!(
            body["detail"]["error_code"], "REQ_005",
            "{method} {path} fell through to the 404 fallback"
        );
        assert_ne!(status, 405, "{method} {path} is not routed for {method}");
        assert!(
            documented(&doc, method, path, status),
            "{method} {path} without a key answered {status}, not documented"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_outside_the_document_are_refused() {
    let app = spawn_app(|_| {}).await;
    for (body, path) in [
        (json!([1]), "/api/v1/blocks/validate"),
        (json!({"block_data": 5}), "/api/v1/blocks/validate"),
        (json!(null), "/api/v1/chain/verify"),
        (json!([]), "/api/v1/chain/verify"),
    ] {
        let (status, answer) = app.post(path, &body).await;
        assert_eq!(status, 400, "POST {path} {body}: {answer}");
    }
    for (url, want) in [
        ("/api/v1/blocks/height/%2B0", 400),
        ("/api/v1/blocks/height/99999999999999999999999", 404),
        ("/api/v1/blocks/99999999999999999999999", 404),
        ("/api/v1/blocks?limit=%205", 400),
        ("/api/v1/blocks/range?limit=5%0C", 400),
        ("/api/v1/blocks/headers?from=%2B1", 400),
    ] {
        let (status, answer) = app.get_json(url).await;
        assert_eq!(status, want, "GET {url}: {answer}");
    }
    let (status, _) = app.post("/api/v1/chain/verify", &json!({})).await;
    assert_eq!(status, 200, "an empty object checks the whole chain");
    app.stop().await;
}

#[tokio::test]
async fn blocks_stats_is_routed_ahead_of_block_id_and_answers_its_schema() {
    let app = spawn_app(|_| {}).await;
    app.create_block("stats", 1).await;
    let doc = served_doc(&app).await;
    let op = &doc["paths"]["/api/v1/blocks/stats"]["get"];
    assert_eq!(op["operationId"], "getBlockStats", "{op}");
    let schema = &doc["components"]["schemas"]["BlockStats"];
    assert_eq!(schema["additionalProperties"], false);
    let (status, body) = app.get_json("/api/v1/blocks/stats").await;
    assert_eq!(status, 200, "taken for a block id? {body}");
    let mut served: Vec<&String> = body.as_object().unwrap().keys().collect();
    let mut listed: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    served.sort();
    listed.sort();
    assert_eq!(
        served, listed,
        "the answer and the schema list the same fields"
    );
    app.stop().await;
}
