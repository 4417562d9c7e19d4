//! Start-up time with a large store: builds a valid chain of N blocks (default 1,000,000)
//! straight through the store, then starts the release binary on it and times how long
//! `/health/ready` takes to answer 200. Also times a restart after SIGKILL (crash recovery).
//!
//! `cargo bench --bench startup [-- BLOCKS]`

use block_manager::chain::{Block, Timestamp, Transaction, genesis_block};
use block_manager::ledger::record_of;
use block_manager::store::{ChainWriter, RedbStore};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tx(h: u64) -> Transaction {
    Transaction {
        tx_id: format!("s-{h}"),
        tx_type: "system".into(),
        from_address: "0xaaaa".into(),
        to_address: "0xbbbb".into(),
        value: 1.into(),
        fee: 0.into(),
        data: String::new(),
        timestamp: Timestamp::from_unix_micros(1_704_067_200_000_000 + h as i64 * 1_000_000),
        signature: "s".into(),
    }
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = write!(
        s,
        "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn start(dir: &std::path::Path, port: u16) -> (Child, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_block-manager"))
        .current_dir(dir)
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    while !ready(port) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready in 60 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    (child, started.elapsed())
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data/blocks/blocks.redb");
    let t = Instant::now();
    {
        let store = RedbStore::open(&path, 64 << 20).expect("store opens");
        let genesis = genesis_block(Timestamp::parse("2024-01-01T00:00:00+00:00").expect("valid"));
        let mut prev = genesis.hash.clone();
        store
            .set_genesis("lucid_blocks", record_of(&genesis))
            .expect("genesis");
        let mut h = 1;
        while h < n {
            let end = (h + 5000).min(n);
            let mut batch = Vec::with_capacity((end - h) as usize);
            for height in h..end {
                let ts =
                    Timestamp::from_unix_micros(1_704_067_200_000_000 + height as i64 * 1_000_000);
                let b = Block::build(height, prev.clone(), ts, "bench", "sig", vec![tx(height)]);
                prev = b.hash.clone();
                batch.push(record_of(&b));
            }
            store.append(&batch).expect("append");
            h = end;
        }
    }
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {n} blocks in {:.1} s; store file {} MB",
        t.elapsed().as_secs_f64(),
        file >> 20
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let runs = five_starts(dir.path(), port);
    println!(
        "start-up to /health/ready, {n} blocks, clean shutdown before: median {:.1} ms (min {:.1}, max {:.1})",
        runs[2].as_secs_f64() * 1e3,
        runs[0].as_secs_f64() * 1e3,
        runs[4].as_secs_f64() * 1e3
    );
    // The same on a store holding only genesis: start-up should not grow with the chain.
    let empty = tempfile::tempdir().expect("temp dir");
    let small = five_starts(empty.path(), port);
    println!(
        "start-up to /health/ready, genesis only: median {:.1} ms; ratio {n} blocks / genesis only: {:.2}",
        small[2].as_secs_f64() * 1e3,
        runs[2].as_secs_f64() / small[2].as_secs_f64()
    );
    let (mut child, _) = start(dir.path(), port);
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, took) = start(dir.path(), port);
    println!(
        "start-up to /health/ready after SIGKILL: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Five starts and clean stops on `dir`; the start-up times, sorted.
fn five_starts(dir: &std::path::Path, port: u16) -> Vec<Duration> {
    let mut runs = Vec::new();
    for _ in 0..5 {
        let (mut child, took) = start(dir, port);
        runs.push(took);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
    runs.sort();
    runs
}
