//! The load side of `bench/replicas.sh`: HTTP clients spread round-robin over several
//! block-manager replicas, which one wrk process cannot do.
//!
//! `cargo bench --bench replicas -- creates SECS CLIENTS URL...`: creates (~2.9 KB, six
//! transactions) through the replicas in turn; prints `creates=<per s> p50_ms= p99_ms=`.
//! `cargo bench --bench replicas -- pairs COUNT CLIENTS URL...`: COUNT write-then-read pairs,
//! each create through one replica and its block read at once by height through the next;
//! prints `pairs= misses= read_p50_ms= read_p99_ms=` (a miss: any answer but 200 with the
//! written hash).
//! `cargo bench --bench replicas -- reads SECS CLIENTS TIP URL...`: GETs by random height in
//! `0..=TIP` through the replicas in turn; prints `reads=<per s> p99_ms=`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "k";

fn body(tag: &str) -> String {
    let txs: Vec<String> = (1..=6)
        .map(|i| {
            format!(
                r#"{{"tx_id":"{tag}-{i}","type":"data_storage","from_address":"0x1111111111111111111111111111111111111111","to_address":"0x2222222222222222222222222222222222222222","value":{i},"fee":0.01,"data":"{}","signature":"sig-{i}"}}"#,
                "d".repeat(120)
            )
        })
        .collect();
    format!(
        r#"{{"producer":"bench","signature":"bench-sig","transactions":[{}]}}"#,
        txs.join(",")
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// `clients` tasks sending requests for `secs`: `request(http, client, n)` sends one (`n`:
/// that client's count so far) and says whether it succeeded. The rate of the successful ones
/// per second and their latencies in ms, sorted.
async fn for_seconds<F, Fut>(secs: f64, clients: usize, request: F) -> (f64, Vec<f64>)
where
    F: Fn(reqwest::Client, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let request = Arc::new(request);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (request, lat) = (request.clone(), lat.clone());
            tokio::spawn(async move {
                let http = client();
                let mut n = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if request(http.clone(), c, n).await {
                        lat.lock()
                            .expect("lat")
                            .push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    let took = started.elapsed().as_secs_f64();
    let lat = sorted(lat.lock().expect("lat").clone());
    (lat.len() as f64 / took, lat)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn create(http: &reqwest::Client, url: &str, tag: &str) -> Option<(u64, String)> {
    let res = http
        .post(format!("{url}/api/v1/blocks"))
        .header("X-API-Key", KEY)
        .header("Content-Type", "application/json")
        .body(body(tag))
        .send()
        .await
        .ok()?;
    if res.status() != 201 {
        eprintln!("create via {url}: {}", res.status());
        return None;
    }
    let v: serde_json::Value = res.json().await.ok()?;
    Some((v["height"].as_u64()?, v["hash"].as_str()?.to_string()))
}

async fn creates(secs: f64, clients: usize, urls: Arc<Vec<String>>) {
    let run = std::process::id();
    let (rate, lat) = for_seconds(secs, clients, move |http, c, n| {
        // Client c's n-th create goes to the replica after its previous one's.
        let k = c + n * clients;
        let url = urls[k % urls.len()].clone();
        async move {
            create(&http, &url, &format!("r{run}-{c}-{k}"))
                .await
                .is_some()
        }
    })
    .await;
    println!(
        "creates={rate:.0} p50_ms={:.2} p99_ms={:.2} n={}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
}

async fn pairs(count: u64, clients: usize, urls: Arc<Vec<String>>) {
    let run = std::process::id();
    let next = Arc::new(AtomicU64::new(0));
    let misses = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (urls, next, misses, reads) =
                (urls.clone(), next.clone(), misses.clone(), reads.clone());
            tokio::spawn(async move {
                let http = client();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return;
                    }
                    let k = n as usize;
                    let Some((height, hash)) =
                        create(&http, &urls[k % urls.len()], &format!("p{run}-{c}-{n}")).await
                    else {
                        misses.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let reader = &urls[(k + 1) % urls.len()];
                    let t = Instant::now();
                    let got = http
                        .get(format!("{reader}/api/v1/blocks/height/{height}"))
                        .send()
                        .await;
                    let ok = match got {
                        Ok(r) if r.status() == 200 => r
                            .json::<serde_json::Value>()
                            .await
                            .is_ok_and(|v| v["hash"] == hash.as_str()),
                        _ => false,
                    };
                    reads
                        .lock()
                        .expect("reads")
                        .push(t.elapsed().as_secs_f64() * 1e3);
                    if !ok {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    let reads = sorted(reads.lock().expect("reads").clone());
    println!(
        "pairs={} misses={} read_p50_ms={:.2} read_p99_ms={:.2}",
        reads.len(),
        misses.load(Ordering::Relaxed),
        percentile(&reads, 0.5),
        percentile(&reads, 0.99)
    );
}

async fn random_reads(secs: f64, clients: usize, tip: u64, urls: Arc<Vec<String>>) {
    let (rate, lat) = for_seconds(secs, clients, move |http, c, n| {
        // A splitmix64 step of (client, count): no dependency for picking heights.
        let mut x = ((c as u64) << 32 ^ n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let h = (x ^ (x >> 31)) % (tip + 1);
        let url = urls[(c + n) % urls.len()].clone();
        async move {
            http.get(format!("{url}/api/v1/blocks/height/{h}"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    println!("reads={rate:.0} p99_ms={:.2}", percentile(&lat, 0.99));
}

fn main() {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: replicas creates SECS CLIENTS URL... | pairs COUNT CLIENTS URL... | reads SECS CLIENTS TIP URL...";
    let Some(mode) = args.first() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let num = |i: usize| -> f64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("{usage}");
            std::process::exit(2)
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match mode.as_str() {
        "creates" => {
            let urls = Arc::new(args[3..].to_vec());
            runtime.block_on(creates(num(1), num(2) as usize, urls));
        }
        "pairs" => {
            let urls = Arc::new(args[3..].to_vec());
            runtime.block_on(pairs(num(1) as u64, num(2) as usize, urls));
        }
        "reads" => {
            let urls = Arc::new(args[4..].to_vec());
            runtime.block_on(random_reads(num(1), num(2) as usize, num(3) as u64, urls));
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
