//! Reads from a hot standby, end to end: two replicas on one primary, the second reading from
//! the streaming standby (`storage.postgres.read_urls`). A block created through the first is
//! served at once by the second, by height, by hash and by transaction id (in either order); the second's
//! `/health` and `/metrics` show the standby, its lag and the reads it answered.
//!
//! Needs `pg_start --standby` (`BLOCK_MANAGER_TEST_DATABASE_URL`, `BLOCK_MANAGER_TEST_STANDBY_URL`);
//! skips without them, unless `BLOCK_MANAGER_REQUIRE_POSTGRES=1`.

mod common;

use block_manager::config::{Config, StorageBackend};
use common::*;
use serde_json::Value;
use std::time::Duration;

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// Writes then reads through the other replica.
const PAIRS: usize = 300;

fn on_database(c: &mut Config, url: &str) {
    c.storage.backend = Some(StorageBackend::Postgres);
    c.storage.postgres.url = Some(url.to_string());
}

/// The store check once the replica's standby is up.
async fn standby_up(app: &TestApp) -> Value {
    eventually(LIMIT, "the standby to be up", || async {
        let (code, h) = app.get_json("/health").await;
        let store = &h["checks"]["store"];
        (code == 200 && store["standbys"][0]["state"] == "up").then(|| store.clone())
    })
    .await
}

/// The value of the series `series` (name and labels, as exposed) in the text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_created_through_one_replica_is_served_at_once_by_another_reading_a_standby() {
    let Some(db) = pg::fresh_database() else {
        return;
    };
    let Some(standby) = pg::standby_url_for(&db) else {
        return;
    };
    let a = spawn_app(|c| on_database(c, &db)).await;
    let b = spawn_app(|c| {
        on_database(c, &db);
        c.storage.postgres.read_urls = vec![standby.clone()];
    })
    .await;
    let store = standby_up(&b).await;
    assert!(
        !store["standbys"][0]["database"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{store}"
    );

    let mut misses = Vec::new();
    for i in 0..PAIRS {
        let tag = format!("sb{i}");
        let created = a.create_block(&tag, 1).await;
        let height = created["height"].as_u64().expect("height");
        let hash = created["hash"].as_str().expect("hash").to_string();
        let mut paths = vec![
            format!("/api/v1/blocks/height/{height}"),
            format!("/api/v1/blocks/{hash}"),
            format!("/api/v1/transactions/{tag}-0"),
        ];
        // Every other block is asked for by hash and transaction first, without the height a
        // client could carry as its causal token.
        if i % 2 == 1 {
            paths.rotate_left(1);
        }
        for path in paths {
            let (code, body) = b.get_json(&path).await;
            let served = body["hash"].as_str().or(body["block_hash"].as_str());
            if code != 200 || served != Some(hash.as_str()) {
                misses.push(format!("{path}: {code}"));
            }
        }
    }
    assert!(misses.is_empty(), "{} misses: {misses:?}", misses.len());

    // The latest block and the list agree with the height B advertises.
    let (_, height) = b.get_json("/api/v1/chain/height").await;
    let (code, latest) = b.get_json("/api/v1/blocks/latest").await;
    assert_eq!(code, 200, "{latest}");
    let (code, list) = b.get_json("/api/v1/blocks?limit=1").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        list["blocks"][0]["height"], latest["height"],
        "{list} {latest}"
    );
    assert!(
        latest["height"].as_u64() >= height["height"].as_u64(),
        "{latest} {height}"
    );

    let text = b.get("/metrics").await.text().await.expect("metrics");
    let by_standby = sample(
        &text,
        "block_manager_postgres_reads_total{pool=\"standby\"}",
    )
    .expect("reads by the standby exported");
    let by_primary = sample(
        &text,
        "block_manager_postgres_reads_total{pool=\"primary\"}",
    )
    .expect("reads by the primary exported");
    eprintln!("B's reads: {by_standby} by the standby, {by_primary} by the primary");
    assert!(by_standby > by_primary, "{by_standby} vs {by_primary}");
    assert_eq!(
        sample(&text, "block_manager_postgres_standby_up{standby=\"0\"}"),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "block_manager_postgres_standby_lag_blocks{standby=\"0\"}"
        )
        .is_some(),
        "{text}"
    );
    // Labelled by index: no URL in the exposition.
    assert!(!text.contains(&standby), "the standby URL is exported");
    // A's store has no standby: it exports none of it.
    let text = a.get("/metrics").await.text().await.expect("metrics");
    assert!(!text.contains("postgres_standby"), "{text}");

    let store = standby_up(&b).await;
    assert_eq!(store["status"], "healthy", "{store}");
    assert!(store["standbys"][0]["lag_blocks"].is_u64(), "{store}");
    b.stop().await;
    a.stop().await;
}
