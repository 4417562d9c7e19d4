//! Block store benchmark (`cargo bench --bench store`): durable append rates (one block per
//! commit and batches of 100), random reads by height and by hash, listing pages, the write
//! probe, space used, and how long the store takes to open cleanly and after a crash.
//!
//! Records are synthetic but shaped like real ones: a ~2 KB JSON body with four transactions,
//! 64-hex hashes, UUID-like transaction ids. Only store calls are timed, not building records.
//! Absolute rates depend on the volume's fsync speed (printed first); compare ratios.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use block_manager::store::{
    BlockMeta, BlockReads, BlockRecord, ChainWriter, DEFAULT_CACHE_BYTES, Order, RedbStore,
    StoreProbe,
};

const CHAIN_BLOCKS: u64 = 100_000;
const SINGLE_COMMITS: u64 = 2_000;
const BATCH: u64 = 100;
const LOOKUPS: usize = 200_000;
const PAGES: usize = 10_000;
const PROBES: usize = 500;
/// Caps on the fsync-bound phases, so that a slow volume cannot stretch the run past ~2 min.
const SINGLE_BUDGET: Duration = Duration::from_secs(15);
const PROBE_BUDGET: Duration = Duration::from_secs(5);
const GENESIS_MICROS: i64 = 1_704_067_200_000_000;
/// Set on the re-run of this program that appends one block and then aborts.
const CRASH_CHILD: &str = "BLOCK_MANAGER_BENCH_CRASH_CHILD";

fn main() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        crash_after_one_append(Path::new(&path));
    }
    let dir = tempfile::TempDir::new().expect("temp dir");
    let body = record(1).body.len();
    let cache = DEFAULT_CACHE_BYTES >> 20;
    println!("store bench: {CHAIN_BLOCKS} blocks, ~{body} B bodies, cache {cache} MiB");

    let fsync_rate = fsync_baseline(&dir.path().join("fsync-probe"));
    line(
        "volume baseline: 4 KiB write + fdatasync",
        fsync_rate,
        "syncs/s",
    );
    let single_rate = single_commits(&dir.path().join("single").join("blocks.redb"));

    let path = dir.path().join("chain").join("blocks.redb");
    let store = RedbStore::open(&path, DEFAULT_CACHE_BYTES).expect("open");
    let (batch_rate, body_bytes) = batched_commits(&store);
    let (by_height, by_hash) = random_reads(&store);
    listings(&store);
    probes(&store);
    let size = store.file_size().expect("size");
    mib("store file size", size);
    // The copy of the bodies that reads by height are served from, beside the store file
    let log_bytes: u64 = ["bodies", "bodies-index"]
        .iter()
        .map(|suffix| {
            let name = format!("blocks.redb.{suffix}");
            std::fs::metadata(path.with_file_name(name)).map_or(0, |m| m.len())
        })
        .sum();
    mib("body log files", log_bytes);
    store.close().expect("close");

    let crash_open = opens(&path);
    let (live, full_walk) = space_and_full_check(&path);

    println!("ratios:");
    ratio("batched / single-commit append", batch_rate / single_rate);
    ratio(
        "fdatasync baseline / single-commit append",
        fsync_rate / single_rate,
    );
    ratio("by-height / by-hash reads", by_height / by_hash);
    ratio(
        "pages in use / raw body bytes",
        live as f64 / body_bytes as f64,
    );
    let walk_vs_crash = full_walk.as_secs_f64() / crash_open.as_secs_f64();
    ratio("full-file check / open after crash", walk_vs_crash);
}

/// One block per durable commit, as a lone `POST /blocks` does.
fn single_commits(path: &Path) -> f64 {
    let store = RedbStore::open(path, DEFAULT_CACHE_BYTES).expect("open");
    let mut timed = Duration::ZERO;
    let mut commits = 0;
    while commits < SINGLE_COMMITS && timed < SINGLE_BUDGET {
        let block = [record(commits)];
        let started = Instant::now();
        store.append(&block).expect("append");
        timed += started.elapsed();
        commits += 1;
    }
    let single_rate = rate(commits as usize, timed);
    line(
        &format!("append, 1 block per commit (x{commits})"),
        single_rate,
        "blocks/s",
    );
    single_rate
}

/// The whole chain in commits of 100, as sync does; returns the rate and the body bytes.
fn batched_commits(store: &RedbStore) -> (f64, u64) {
    let mut timed = Duration::ZERO;
    let mut body_bytes = 0u64;
    for first in (0..CHAIN_BLOCKS).step_by(BATCH as usize) {
        let batch: Vec<BlockRecord> = (first..first + BATCH).map(record).collect();
        body_bytes += batch.iter().map(|r| r.body.len() as u64).sum::<u64>();
        let started = Instant::now();
        store.append(&batch).expect("append batch");
        timed += started.elapsed();
    }
    let batch_rate = rate(CHAIN_BLOCKS as usize, timed);
    line("append, batches of 100", batch_rate, "blocks/s");
    (batch_rate, body_bytes)
}

/// Random single-block reads by height and by hash.
fn random_reads(store: &RedbStore) -> (f64, f64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let heights: Vec<u64> = (0..LOOKUPS).map(|_| rng.below(CHAIN_BLOCKS)).collect();
    let started = Instant::now();
    let mut bytes = 0usize;
    for &h in &heights {
        bytes += store.body_at(h).expect("read").map_or(0, |b| b.len());
    }
    let by_height = rate(LOOKUPS, started.elapsed());
    line("random body_at(height)", by_height, "reads/s");

    let hashes: Vec<String> = heights.iter().map(|&h| block_hash(h)).collect();
    let started = Instant::now();
    for hash in &hashes {
        let h = store.height_of_hash(hash).expect("read").expect("hash");
        bytes += store.body_at(h).expect("read").map_or(0, |b| b.len());
    }
    let by_hash = rate(LOOKUPS, started.elapsed());
    line("random height_of_hash + body_at", by_hash, "reads/s");
    assert!(bytes > 0);
    (by_height, by_hash)
}

/// List pages (by height, by time in a window and over the chain) and the tip.
fn listings(store: &RedbStore) {
    let mut rng = Rng(7);
    let mut rows = 0usize;
    let started = Instant::now();
    for _ in 0..PAGES {
        let offset = rng.below(CHAIN_BLOCKS);
        rows += store
            .metas(0, u64::MAX, Order::Desc, offset, 20)
            .expect("page")
            .len();
    }
    line(
        "metas page of 20, random offset",
        rate(PAGES, started.elapsed()),
        "pages/s",
    );

    let started = Instant::now();
    for _ in 0..PAGES {
        let from = rng.below(CHAIN_BLOCKS - 2_000);
        let page = store.metas_by_time(from, from + 2_000, Order::Asc, 0, 20);
        rows += page.expect("page").len();
    }
    let narrow = rate(PAGES, started.elapsed());
    line(
        "metas_by_time page of 20, 2k-block window",
        narrow,
        "pages/s",
    );

    // Under half the chain, so read by height and sorted in memory, like the 2k window
    let started = Instant::now();
    for _ in 0..PAGES / 10 {
        let from = rng.below(CHAIN_BLOCKS - 10_000);
        let page = store.metas_by_time(from, from + 10_000, Order::Desc, 0, 20);
        rows += page.expect("page").len();
    }
    let mid = rate(PAGES / 10, started.elapsed());
    line(
        "metas_by_time page of 20, 10k window mid-chain",
        mid,
        "pages/s",
    );

    let started = Instant::now();
    for _ in 0..PAGES {
        let page = store.metas_by_time(0, u64::MAX, Order::Desc, 0, 20);
        rows += page.expect("page").len();
    }
    let wide = rate(PAGES, started.elapsed());
    line("metas_by_time page of 20, whole chain", wide, "pages/s");

    let started = Instant::now();
    for _ in 0..PAGES {
        rows += store
            .tip()
            .expect("tip")
            .map_or(0, |m| m.transaction_count as usize);
    }
    line("tip()", rate(PAGES, started.elapsed()), "calls/s");
    assert!(rows > 0);
}

/// The health check's durable write probe.
fn probes(store: &RedbStore) {
    let started = Instant::now();
    let mut probes = 0;
    while probes < PROBES && started.elapsed() < PROBE_BUDGET {
        store.check_writable().expect("probe");
        probes += 1;
    }
    line(
        "check_writable (durable probe)",
        rate(probes, started.elapsed()),
        "probes/s",
    );
}

/// Times an open after a clean close and after a crash; returns the latter.
fn opens(path: &Path) -> Duration {
    let started = Instant::now();
    let reopened = RedbStore::open(path, DEFAULT_CACHE_BYTES).expect("reopen");
    let clean_open = started.elapsed();
    let tip = reopened.tip().expect("tip").map(|m| m.height);
    assert_eq!(tip, Some(CHAIN_BLOCKS - 1));
    drop(reopened);
    millis("open after clean close", clean_open, "");
    open_after_crash(path)
}

/// The pages in use (the file grows in large steps, so its size says less) and the time of
/// redb's integrity check, which walks and verifies every page and rebuilds the allocator as the
/// full repair does: what a crash would cost without quick repair.
fn space_and_full_check(path: &Path) -> (u64, Duration) {
    let mut db = redb::Database::builder()
        .set_cache_size(DEFAULT_CACHE_BYTES)
        .open(path)
        .expect("open raw");
    let txn = db.begin_write().expect("write txn");
    let stats = txn.stats().expect("stats");
    let live = stats.allocated_pages() * stats.page_size() as u64;
    txn.abort().expect("abort");
    mib("pages in use", live);
    let per_block = live as f64 / (CHAIN_BLOCKS + 1) as f64;
    line("pages in use per block", per_block, "B");
    let started = Instant::now();
    let clean = db.check_integrity().expect("integrity check");
    let full_walk = started.elapsed();
    let note = if clean { "" } else { " (repaired)" };
    millis(
        "full-file check (~ repair without quick repair)",
        full_walk,
        note,
    );
    (live, full_walk)
}

/// How many small durable writes per second the volume sustains: the ceiling for commits.
fn fsync_baseline(path: &Path) -> f64 {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::File::create(path).expect("create probe file");
    let page = [0x5au8; 4096];
    let started = Instant::now();
    for _ in 0..PROBES {
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.write_all(&page).expect("write");
        file.sync_data().expect("fdatasync");
    }
    rate(PROBES, started.elapsed())
}

/// Kills a writer mid-life (a child process appends one block and aborts), then times the open.
fn open_after_crash(path: &Path) -> Duration {
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new(exe)
        .env(CRASH_CHILD, path)
        .status()
        .expect("run crash child");
    assert!(!status.success(), "the crash child was meant to abort");
    let started = Instant::now();
    let store = RedbStore::open(path, DEFAULT_CACHE_BYTES).expect("open after crash");
    let took = started.elapsed();
    let tip = store.tip().expect("tip").map(|m| m.height);
    assert_eq!(tip, Some(CHAIN_BLOCKS), "the acknowledged block was lost");
    let how = if store.open_report().full_repair {
        " (full repair)"
    } else {
        " (no full repair)"
    };
    millis("open after a crash", took, how);
    took
}

fn crash_after_one_append(path: &Path) -> ! {
    let store = RedbStore::open(path, DEFAULT_CACHE_BYTES).expect("open in crash child");
    let next = store.tip().expect("tip").map_or(0, |m| m.height + 1);
    store
        .append(&[record(next)])
        .expect("append in crash child");
    // No destructor runs, so the file is left as a crash leaves it
    std::process::abort();
}

fn record(height: u64) -> BlockRecord {
    let hash = block_hash(height);
    let previous_hash = match height {
        0 => "0".repeat(64),
        h => block_hash(h - 1),
    };
    // Ten seconds apart with a little jitter, so time order is not exactly height order
    let micros = GENESIS_MICROS + height as i64 * 10_000_000 + (mix(height) % 3_000_000) as i64;
    let timestamp = wire_time(micros);
    let tx_ids: Vec<String> = (0..4).map(|i| uuid(mix(height * 4 + i + 1))).collect();
    let transactions: Vec<serde_json::Value> = tx_ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "tx_id": id,
                "type": "data_storage",
                "from_address": format!("0x{}", &hex64(mix(height ^ 0xaa))[..40]),
                "to_address": format!("0x{}", &hex64(mix(height ^ 0xbb))[..40]),
                "value": 12.5,
                "fee": 0.01,
                "data": format!("{{\"session_id\": \"{}\", \"chunk\": {height}}}", &id[..8]),
                "timestamp": timestamp,
                "signature": hex64(mix(height ^ 0xcc)),
                "size_bytes": 380,
            })
        })
        .collect();
    let merkle_root = hex64(mix(height ^ 0xee));
    let mut body = serde_json::json!({
        "block_id": hash, "height": height, "hash": hash, "previous_hash": previous_hash,
        "merkle_root": merkle_root, "timestamp": timestamp, "producer": "node-7",
        "validator": "node-7", "signature": hex64(mix(height ^ 0xff)), "nonce": 0,
        "difficulty": 0.0, "transaction_count": 4, "block_size_bytes": 0,
        "transactions": transactions,
    });
    let size = serde_json::to_vec(&body).map_or(0, |b| b.len());
    body["block_size_bytes"] = size.into();
    let body = serde_json::to_vec(&body).expect("serialise body");
    BlockRecord {
        meta: BlockMeta {
            height,
            hash,
            previous_hash,
            merkle_root,
            timestamp,
            timestamp_micros: micros,
            producer: "node-7".into(),
            transaction_count: 4,
            block_size_bytes: body.len() as u64,
        },
        tx_ids,
        body,
    }
}

/// The wire form of a time in January 2024 (where the whole synthetic chain falls).
fn wire_time(micros: i64) -> String {
    let since = micros - GENESIS_MICROS;
    let (secs, us) = (since / 1_000_000, since % 1_000_000);
    let (day, hh, mm, ss) = (
        secs / 86_400 + 1,
        secs / 3_600 % 24,
        secs / 60 % 60,
        secs % 60,
    );
    format!("2024-01-{day:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}+00:00")
}

fn block_hash(height: u64) -> String {
    hex64(mix(height.wrapping_add(0x5151)))
}

/// 64 hex characters derived from `seed`.
fn hex64(seed: u64) -> String {
    let mut s = String::with_capacity(64);
    let mut x = seed;
    for _ in 0..4 {
        x = mix(x);
        s.push_str(&format!("{x:016x}"));
    }
    s
}

/// A UUID-shaped transaction id derived from `seed`.
fn uuid(seed: u64) -> String {
    let h = hex64(seed);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// splitmix64's finaliser: a cheap, well-spread hash of a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = mix(self.0);
        self.0 % n
    }
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

fn line(what: &str, value: f64, unit: &str) {
    println!("{what:<44} {value:>12.0} {unit}");
}

fn mib(what: &str, bytes: u64) {
    println!("{what:<44} {:>12.1} MiB", bytes as f64 / 1_048_576.0);
}

fn millis(what: &str, took: Duration, note: &str) {
    println!("{what:<44} {:>12.1} ms{note}", took.as_secs_f64() * 1e3);
}

fn ratio(what: &str, value: f64) {
    println!("  {what:<42} {value:>12.2}x");
}
