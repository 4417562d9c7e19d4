//! The event stream on the postgres engine with two replicas of one database: a stream opened
//! on either replica carries every block appended through the other as well as its own, in
//! chain order, each exactly once, with the `<height>:<hash>` ids both replicas serve. The
//! other replica's commits reach the stream through the engine's LISTEN session waking the
//! service's tip watch. Skipped without a server (`tests/common/pg.rs`).

mod common;

use common::pg::fresh_database;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// A replica of the chain in `db`.
async fn replica(db: &str) -> TestApp {
    let db = db.to_string();
    spawn_app(move |c| c.storage.postgres.url = Some(db)).await
}

/// The `block` events of one stream, read frame by frame.
struct Blocks {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl Blocks {
    async fn open(app: &TestApp) -> Blocks {
        let res = app
            .client
            .get(app.url("/api/v1/events"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .expect("the stream answers");
        assert_eq!(res.status(), 200);
        Blocks {
            res,
            buf: Vec::new(),
        }
    }

    /// The next `(event, id, data)` within `limit`; `None` when none came in time.
    async fn next(&mut self, limit: Duration) -> Option<(String, String, Value)> {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..at + 2).collect();
                let raw = String::from_utf8(raw).expect("UTF-8 frames");
                let field = |name: &str| {
                    raw.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                // Comments (keep-alives) and `retry:` advice carry no event.
                if let Some(kind) = field("event: ") {
                    let id = field("id: ").expect("an event has an id");
                    let data = field("data: ").expect("an event has data");
                    let data = serde_json::from_str(&data).expect("data is JSON");
                    return Some((kind, id, data));
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let chunk = match tokio::time::timeout(left, self.res.chunk()).await {
                Err(_) => return None,
                Ok(chunk) => chunk.expect("the stream reads"),
            };
            self.buf
                .extend_from_slice(&chunk.expect("the stream stays open"));
        }
    }
}

/// `<height>:<hash>` of the block at `height` as `app` serves it.
async fn id_at(app: &TestApp, height: u64) -> String {
    let (status, b) = app
        .get_json(&format!("/api/v1/blocks/height/{height}"))
        .await;
    assert_eq!(status, 200, "{b}");
    format!("{height}:{}", b["hash"].as_str().expect("a hash"))
}

#[tokio::test]
async fn a_stream_on_each_of_two_replicas_carries_the_blocks_created_through_the_other() {
    let Some(db) = fresh_database() else { return };
    let a = replica(&db).await;
    let b = replica(&db).await;
    // Both see the one genesis.
    assert_eq!(id_at(&a, 0).await, id_at(&b, 0).await);
    // Opened at the tip: everything they carry comes live, not from a replay.
    let mut on_a = Blocks::open(&a).await;
    let mut on_b = Blocks::open(&b).await;

    // Through A and B in turn. Each create waits until its replica has heard of the one
    // before (through the engine's LISTEN), so both go on one tip: creates racing through two
    // replicas are the next test's subject.
    let mut created: Vec<(String, Value)> = Vec::new();
    for i in 0..16u64 {
        let (via, app) = if i % 2 == 0 { ("a", &a) } else { ("b", &b) };
        eventually(LIMIT, "the replica to hear of the last block", || async {
            let (_, h) = app.get_json("/api/v1/chain/height").await;
            (h["height"] == i).then_some(())
        })
        .await;
        created.push((via.into(), app.create_block(&format!("{via}{i}"), 2).await));
    }
    let heights: Vec<u64> = created
        .iter()
        .map(|(_, b)| b["height"].as_u64().unwrap())
        .collect();
    assert_eq!(heights, (1..=16).collect::<Vec<u64>>(), "one linear chain");

    for (name, stream, app) in [("A", &mut on_a, &a), ("B", &mut on_b, &b)] {
        for (via, block) in &created {
            let height = block["height"].as_u64().unwrap();
            let (kind, id, data) = stream.next(LIMIT).await.unwrap_or_else(|| {
                panic!("the stream on {name} lacks block {height} (created through {via})")
            });
            let want = format!("{height}:{}", block["hash"].as_str().unwrap());
            assert_eq!(
                (kind.as_str(), id.as_str()),
                ("block", want.as_str()),
                "the stream on {name}, at block {height} created through {via}"
            );
            assert_eq!(id, id_at(app, height).await, "the id {name} serves");
            assert_eq!(data["hash"], block["hash"]);
            assert_eq!(data["transactions"], block["transactions"]);
        }
        // Exactly once: nothing follows the last block.
        if let Some(extra) = stream.next(Duration::from_secs(1)).await {
            panic!("the stream on {name} carried more than the 16 blocks: {extra:?}");
        }
    }
    b.stop().await;
    a.stop().await;
}

/// Spec §13: concurrent creates through different replicas get consecutive heights and never
/// fail: each replica's group waits for the chain's lock in the database and is built on the
/// tip it finds there, not on what this process last heard of.
#[tokio::test]
async fn creates_racing_through_two_replicas_all_succeed_and_stream_once_in_order() {
    let Some(db) = fresh_database() else { return };
    let a = replica(&db).await;
    let b = replica(&db).await;
    let mut on_a = Blocks::open(&a).await;
    let burst = |app: &TestApp, via: &'static str| {
        let app = (app.client.clone(), app.url("/api/v1/blocks"));
        async move {
            let mut out = Vec::new();
            for i in 0..10 {
                let res = app
                    .0
                    .post(&app.1)
                    .header("X-API-Key", WRITE_KEY)
                    .json(&create_body(&format!("{via}-burst{i}"), 2))
                    .send()
                    .await
                    .expect("POST answered");
                let status = res.status().as_u16();
                out.push((status, res.json::<Value>().await.expect("JSON")));
            }
            out
        }
    };
    let (from_a, from_b) = tokio::join!(burst(&a, "a"), burst(&b, "b"));
    let mut heights = Vec::new();
    for (status, body) in from_a.iter().chain(&from_b) {
        assert_eq!(*status, 201, "{body}");
        heights.push(body["height"].as_u64().unwrap());
    }
    heights.sort_unstable();
    assert_eq!(heights, (1..=20).collect::<Vec<u64>>(), "one linear chain");
    for height in 1..=20u64 {
        let (kind, id, _) = on_a.next(LIMIT).await.expect("every block streamed");
        assert_eq!(kind, "block");
        assert_eq!(id, id_at(&a, height).await);
    }
    b.stop().await;
    a.stop().await;
}
