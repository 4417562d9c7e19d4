//! Submit benchmark (`cargo bench --bench submit`): one client POSTs a pre-built chain of N
//! blocks of about 2 KB, one block per request, to `/api/v1/blocks/submit` of a standalone
//! block-manager on 127.0.0.1 (real redb file, durable commits), then submits the first
//! blocks again, which the node answers 200 (already stored) without writing.
//!
//! `SUBMIT_BLOCKS=10000` overrides the chain length.

#[path = "fixture.rs"]
mod fixture;

use fixture::{KEY, chain, config};
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("SUBMIT_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Bytes, so that sending a body shares it instead of copying it on the client.
        let blocks: Vec<bytes::Bytes> = chain(n)
            .iter()
            .skip(1)
            .map(|b| b.canonical_json().into())
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let node = block_manager::app::start(config(dir.path(), None))
            .await
            .expect("node starts");
        let url = format!("http://{}/api/v1/blocks/submit", node.addr);
        let client = reqwest::Client::new();
        println!(
            "submit bench: {} cores, {n} blocks of ~{} B (request body), one client",
            std::thread::available_parallelism().map_or(0, |k| k.get()),
            blocks[0].len()
        );
        let new = submit(&client, &url, &blocks, 201).await;
        println!(
            "new blocks (201):            {:>7.0} blocks/s, p50 {:.2} ms, p99 {:.2} ms",
            new.rate, new.p50_ms, new.p99_ms
        );
        let again = &blocks[..blocks.len().min(5_000)];
        let same = submit(&client, &url, again, 200).await;
        println!(
            "already stored (200):        {:>7.0} blocks/s, p50 {:.2} ms, p99 {:.2} ms",
            same.rate, same.p50_ms, same.p99_ms
        );
        println!("ratio new / already stored:  {:.2}", new.rate / same.rate);
        node.shutdown.cancel();
        let _ = node.done.await;
    });
}

struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// POSTs every body in order, one at a time; each must answer `expect`.
async fn submit(client: &reqwest::Client, url: &str, bodies: &[bytes::Bytes], expect: u16) -> Run {
    let mut latencies = Vec::with_capacity(bodies.len());
    let started = Instant::now();
    for body in bodies {
        let sent = Instant::now();
        let res = client
            .post(url)
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("submit answered");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(status, expect, "{text}");
        latencies.push(sent.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e3
    };
    Run {
        rate: bodies.len() as f64 / secs,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}
