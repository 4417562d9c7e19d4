mod common;
use common::*;

#[tokio::test]
async fn vector_block_is_accepted_on_the_vector_genesis() {
    let app = spawn_app(|_| {}).await;
    let (status, genesis) = app.get_json("/api/v1/blocks/height/0").await;
    assert_eq!(status, 200);
    assert_eq!(genesis["hash"], GENESIS_HASH);
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let block = &vectors["chain"]["block"];
    let (status, body) = app.post("/api/v1/blocks/submit", block).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["hash"],
        "413d5b8c7dd71cbca797bab1652a1d1da9ec4b018bff440d7827bf5e3edb5dcd"
    );
    let (status, _) = app.post("/api/v1/blocks/submit", block).await;
    assert_eq!(status, 200);
    app.stop().await;
}
