//! Follower catch-up benchmark (`cargo bench --bench catchup`): a standalone block-manager
//! holding N blocks of about 2 KB (seeded through the ledger, not timed) and a follower that
//! starts empty; timed from the follower's start until it holds the upstream tip. Both run
//! in this process on one multi-threaded runtime, over HTTP on 127.0.0.1, with real redb
//! files and durable commits.
//!
//! `CATCHUP_SIZES=10000,100000` and `CATCHUP_BATCHES=100,1000` override what is measured.

#[path = "fixture.rs"]
mod fixture;

use block_manager::chain::{Block, Limits};
use block_manager::ledger::Ledger;
use block_manager::metrics::Metrics;
use block_manager::store::{ChainWriter, RedbStore};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixture::{chain, config};

fn main() {
    let sizes = list("CATCHUP_SIZES", &[10_000, 100_000]);
    let batches = list("CATCHUP_BATCHES", &[100, 1000]);
    let runs = list("CATCHUP_RUNS", &[1])[0];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        println!(
            "catch-up bench: {} cores, blocks of ~{} B",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            chain(1)[1].served_json().len()
        );
        for &n in &sizes {
            let blocks = chain(n);
            let upstream_dir = tempfile::tempdir().expect("temp dir");
            let started = Instant::now();
            let writer_seconds = seed(upstream_dir.path(), &blocks).await;
            let seed_secs = started.elapsed().as_secs_f64();
            // Seeding appends plain blocks, so the writer also builds their stored form: the
            // comparison with the follower's prepared appends.
            println!(
                "seeded {n} blocks in {seed_secs:.1} s through Ledger::append ({:.1} µs of block-writer CPU per block)",
                writer_seconds * 1e6 / n as f64
            );
            let direct = (n + 1) as f64 / seed_secs;
            let upstream = block_manager::app::start(config(upstream_dir.path(), None))
                .await
                .expect("upstream starts");
            let url = format!("http://{}", upstream.addr);
            for &batch in &batches {
                for _ in 0..runs {
                    let r = follow(&url, n as u64, batch as u32).await;
                    println!(
                        "catch-up {n:>7} blocks, fetch_batch_size {batch:>4}: {:>8.0} blocks/s \
                         (CPU per block: {:.1} µs in all, {:.1} µs of it on the block writer); \
                         {:.2}x the direct append rate",
                        r.rate,
                        r.cpu_us,
                        r.writer_us,
                        r.rate / direct
                    );
                }
            }
            upstream.shutdown.cancel();
            let _ = upstream.done.await;
        }
    });
}

/// What one catch-up measured.
struct Run {
    /// Blocks per second, wall clock.
    rate: f64,
    /// CPU time of the whole process (upstream, follower, writers) per block.
    cpu_us: f64,
    /// CPU time of the block-writer threads (validation and commits) per block.
    writer_us: f64,
}

/// Starts an empty follower of `url` and times it until it holds height `tip`.
async fn follow(url: &str, tip: u64, batch: u32) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(dir.path(), Some(url));
    c.synchronization.fetch_batch_size = batch;
    let started = Instant::now();
    let (cpu0, writers0) = cpu_seconds();
    let follower = block_manager::app::start(c).await.expect("follower starts");
    let status = format!("http://{}/api/v1/chain/height", follower.addr);
    let client = reqwest::Client::new();
    loop {
        let height = match client.get(&status).send().await {
            Ok(res) => res
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["height"].as_u64()),
            Err(_) => None,
        };
        if height == Some(tip) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no catch-up in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, writers1) = cpu_seconds();
    follower.shutdown.cancel();
    let _ = follower.done.await;
    let blocks = (tip + 1) as f64;
    Run {
        rate: blocks / secs,
        cpu_us: (cpu1 - cpu0) * 1e6 / blocks,
        writer_us: (writers1 - writers0) * 1e6 / blocks,
    }
}

/// CPU seconds used so far by this process and by its block-writer threads (Linux; zero
/// elsewhere).
fn cpu_seconds() -> (f64, f64) {
    // utime and stime are fields 14 and 15 of /proc/.../stat, in clock ticks (100 per second
    // on Linux); the command name before them is in parentheses and may hold spaces.
    fn ticks(stat: &str) -> Option<f64> {
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    }
    let all = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .unwrap_or(0.0);
    let writers = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                .filter(|s| s.contains("(block-writer)"))
                .filter_map(|s| ticks(&s))
                .sum()
        })
        .unwrap_or(0.0);
    (all, writers)
}

/// Writes `blocks` through the ledger into the store an app on `dir` opens; returns the CPU
/// seconds its writer thread used.
async fn seed(dir: &Path, blocks: &[Block]) -> f64 {
    let path = dir.join("blocks").join("blocks.redb");
    let store: Arc<dyn ChainWriter> =
        Arc::new(RedbStore::open(&path, 16 * 1024 * 1024).expect("open"));
    let (ledger, writer) = Ledger::start(store, Limits::default(), Arc::new(Metrics::new()));
    let (_, before) = cpu_seconds();
    for part in blocks.chunks(1000) {
        let done = ledger.append(part.to_vec()).await.expect("append");
        assert_eq!(done.committed, part.len(), "{:?}", done.rejected);
    }
    // Read before the writer thread ends and its CPU account goes with it.
    let (_, after) = cpu_seconds();
    drop(ledger);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    after - before
}

fn list(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}
