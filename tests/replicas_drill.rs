//! The replica drills (spec §13), on a real primary and its streaming hot standby: three
//! block-manager processes on one chain.
//!
//! - Writers: eight clients create and submit round-robin across the three while every
//!   acknowledged block is read at once through another replica (its reads from the standby).
//!   Meanwhile one replica is SIGKILLed and restarted, every database session of the chain is
//!   ended by `pg_terminate_backend`, and the standby is restarted. The chain must stay gapless
//!   and linked, every acknowledged block present and readable through every replica, and no
//!   answer a 5xx except the documented 503 `ST_001` of a write caught by a disturbance; a
//!   write whose answer was lost is retried through another replica and must then be answered
//!   201 or, when the first attempt had stored it, 200 with the same block.
//! - Followers: three followers of one upstream; the leader is SIGKILLed, then the new
//!   leader's sessions are ended: never two leaders at once, a new one within 5 s each time,
//!   and the chain goes on from the stored tip.
//!
//! Skipped without a server (`tests/common/pg.rs`); `REPLICA_DRILL_SECONDS` (default 6) is how
//! long the writers run between disturbances.

#[allow(dead_code)]
#[path = "sync/chains.rs"]
mod chains;
mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;

use block_manager::chain::{Block, Timestamp, Transaction};
use common::pg::{connect, database_name, fresh_database, standby_url_for};
use common::*;
use serde_json::Value;
use standin::StandIn;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
const WRITERS: usize = 8;
/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

fn drill_time() -> Duration {
    let secs = std::env::var("REPLICA_DRILL_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs)
}

/// The replicas, each restartable on its own port.
struct Replicas {
    dirs: Vec<tempfile::TempDir>,
    ports: Vec<u16>,
    procs: Mutex<Vec<Option<Proc>>>,
    env: Vec<(String, String)>,
    /// While set, a write may be answered 503 ST_001 (a replica or the database is being
    /// disturbed on purpose).
    disturbed: AtomicBool,
}

impl Replicas {
    fn start(env: Vec<(String, String)>) -> Replicas {
        let dirs: Vec<_> = (0..REPLICAS)
            .map(|_| tempfile::tempdir().expect("dir"))
            .collect();
        let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
        let r = Replicas {
            dirs,
            ports,
            procs: Mutex::new((0..REPLICAS).map(|_| None).collect()),
            env,
            disturbed: AtomicBool::new(false),
        };
        for i in 0..REPLICAS {
            r.restart(i);
        }
        r
    }

    fn restart(&self, i: usize) {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let name = format!("replica-{i}");
        env.push(("BLOCK_MANAGER__SERVICE__INSTANCE_ID", &name));
        let p = spawn_process_on(self.dirs[i].path(), self.ports[i], &env);
        self.procs.lock().expect("procs")[i] = Some(p);
    }

    fn kill(&self, i: usize) {
        let mut procs = self.procs.lock().expect("procs");
        if let Some(p) = procs[i].as_mut() {
            signal(p, "KILL");
            wait_exit(p, LIMIT);
        }
        procs[i] = None;
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i % REPLICAS])
    }

    fn log_of(&self, i: usize) -> String {
        self.procs.lock().expect("procs")[i]
            .as_ref()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// What the writers saw: acknowledged blocks by height, and every broken promise.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<u64, String>,
    faults: Vec<String>,
    /// 503 ST_001 answers during a disturbance (documented, counted).
    unavailable: u64,
    /// Writes retried after a lost answer and then answered 200 with the stored block.
    retried_already_stored: u64,
    reads: u64,
}

fn client() -> reqwest::Client {
    // The process's TLS provider, which the service installs at start; tests build clients first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A block built on `parent` (as served) by writer `w`'s `n`th submit.
fn next_block(parent: &Value, tag: &str) -> Value {
    let parent = block_manager::chain::parse_block(parent).expect("latest parses");
    let at = Timestamp::from_unix_micros(
        parent
            .timestamp
            .unix_micros()
            .max(block_manager::ledger::now().unix_micros()),
    );
    let txs = (0..2)
        .map(|i| Transaction {
            tx_id: format!("{tag}-{i}"),
            tx_type: "data_storage".into(),
            from_address: "0x1111".into(),
            to_address: "0x2222".into(),
            value: serde_json::Number::from(i),
            fee: serde_json::Number::from(0),
            data: "d".repeat(100),
            timestamp: at,
            signature: format!("sig-{tag}-{i}"),
        })
        .collect();
    let block = Block::build(
        parent.height + 1,
        parent.hash.clone(),
        at,
        "drill",
        format!("sig-{tag}"),
        txs,
    );
    serde_json::from_slice(&block.served_json()).expect("served JSON")
}

/// Writer `w`: creates (and every fourth write a submit) round-robin, each acknowledged block
/// read at once through the next replica by height and by hash.
async fn writer(w: usize, replicas: Arc<Replicas>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let http = client();
    let mut turn = w;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let tag = format!("w{w}-{n}");
        let submit = n.is_multiple_of(4);
        let (path, body) = if submit {
            let latest = http
                .get(replicas.url(turn, "/api/v1/blocks/latest"))
                .send()
                .await;
            let Ok(latest) = latest else {
                turn += 1;
                continue;
            };
            if latest.status() != 200 {
                turn += 1;
                continue;
            }
            let parent: Value = latest.json().await.expect("latest JSON");
            ("/api/v1/blocks/submit", next_block(&parent, &tag))
        } else {
            ("/api/v1/blocks", create_body(&tag, 2))
        };
        // A write whose answer is lost (the replica died, the database session ended) is sent
        // again through the next replica, as a client behind the gateway would.
        let mut lost_before = false;
        let mut acked = None;
        for _attempt in 0..20 {
            turn += 1;
            let res = http
                .post(replicas.url(turn, path))
                .header("X-API-Key", WRITE_KEY)
                .json(&body)
                .send()
                .await;
            let res = match res {
                Ok(r) => r,
                Err(_) => {
                    lost_before = true;
                    continue;
                }
            };
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match status {
                201 => {
                    acked = Some(doc);
                    break;
                }
                200 if lost_before || submit => {
                    if !submit {
                        seen.lock().expect("seen").retried_already_stored += 1;
                    }
                    acked = Some(doc);
                    break;
                }
                // A submit built on a tip another writer moved on: a refusal, not a fault
                // (had an earlier attempt stored it, this one would be answered 200).
                409 | 422 if submit => break,
                503 if doc["detail"]["error_code"] == "ST_001"
                    && replicas.disturbed.load(Ordering::Relaxed) =>
                {
                    seen.lock().expect("seen").unavailable += 1;
                    lost_before = true;
                    continue;
                }
                _ => {
                    seen.lock().expect("seen").faults.push(format!(
                        "{path} {tag} via {}: {status} {text}",
                        turn % REPLICAS
                    ));
                    break;
                }
            }
        }
        let Some(doc) = acked else { continue };
        let (Some(height), Some(hash)) = (doc["height"].as_u64(), doc["hash"].as_str()) else {
            seen.lock().expect("seen").faults.push(format!(
                "{tag}: an acknowledgement without height and hash: {doc}"
            ));
            continue;
        };
        {
            let mut s = seen.lock().expect("seen");
            if let Some(other) = s.acked.insert(height, hash.to_string())
                && other != hash
            {
                s.faults.push(format!(
                    "height {height} acknowledged twice: {other} and {hash}"
                ));
            }
        }
        // Read-your-writes through another replica than the one that answered the write.
        for path in [
            format!("/api/v1/blocks/height/{height}"),
            format!("/api/v1/blocks/{hash}"),
        ] {
            let mut tries = 0;
            loop {
                tries += 1;
                let reader = turn + 1 + tries;
                match http.get(replicas.url(reader, &path)).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let got: Value = r.json().await.unwrap_or(Value::Null);
                        let mut s = seen.lock().expect("seen");
                        s.reads += 1;
                        // A read in flight when the database ended its session: the
                        // documented 503, during that disturbance only.
                        if status == 503
                            && got["detail"]["error_code"] == "ST_001"
                            && replicas.disturbed.load(Ordering::Relaxed)
                            && tries < 10
                        {
                            s.unavailable += 1;
                            continue;
                        }
                        if status != 200 || got["hash"] != hash {
                            s.faults.push(format!(
                                "{path} via {} after the write via {}: {status} {got}",
                                reader % REPLICAS,
                                turn % REPLICAS
                            ));
                        }
                        break;
                    }
                    // That replica is down (killed on purpose): read through the next one.
                    Err(_) if tries < 10 => continue,
                    Err(e) => {
                        seen.lock()
                            .expect("seen")
                            .faults
                            .push(format!("{path}: no replica answered: {e}"));
                        break;
                    }
                }
            }
        }
    }
}

/// Ends every session on database `name` but the caller's.
async fn terminate_sessions(primary: &str, name: &str) -> i64 {
    let admin = connect(primary).await;
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .expect("pg_terminate_backend");
    rows.len() as i64
}

/// Restarts the streaming standby `scripts/lib.sh` started (`PG_DIR`, `PG_BIN`), as its owner.
/// `false` (and a note) when this server was not started that way.
fn restart_standby() -> bool {
    let (Ok(dir), Ok(bin)) = (std::env::var("PG_DIR"), std::env::var("PG_BIN")) else {
        eprintln!("replica drill: PG_DIR/PG_BIN unset, the standby restart is left out");
        return false;
    };
    let data = format!("{dir}/standby");
    let ctl = format!("{bin}/pg_ctl");
    let args = [
        "-D",
        &data,
        "-l",
        &format!("{dir}/standby.log"),
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "restart",
    ];
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let status = if root {
        // In the server's folder: the owner may not enter the caller's working directory.
        std::process::Command::new("runuser")
            .current_dir(&dir)
            .args(["-u", "postgres", "--", &ctl])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
    } else {
        std::process::Command::new(&ctl)
            .current_dir(&dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
    };
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "pg_ctl restart of the standby: {status:?}"
    );
    true
}

/// The chain as the primary holds it: hash and previous hash by height.
async fn stored_chain(db: &str) -> Vec<(i64, String, String)> {
    let c = connect(db).await;
    c.query(
        "SELECT height, hash, previous_hash FROM bm_blocks ORDER BY height",
        &[],
    )
    .await
    .expect("read the chain")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_take_writes_and_reads_through_kills_terminations_and_a_standby_restart() {
    let Some(db) = fresh_database() else { return };
    let mut env = vec![
        ("BLOCK_MANAGER_DATABASE_URL".to_string(), db.clone()),
        // Writes caught by a disturbance answer within a second or two, not the default 5 s.
        (
            "BLOCK_MANAGER__STORAGE__POSTGRES__CONNECT_TIMEOUT_SECONDS".to_string(),
            "2".to_string(),
        ),
    ];
    match standby_url_for(&db) {
        Some(standby) => env.push(("BLOCK_MANAGER_DATABASE_READ_URLS".to_string(), standby)),
        None => eprintln!("replica drill: no standby configured, reads go to the primary"),
    }
    let replicas = Arc::new(tokio::task::block_in_place(|| Replicas::start(env)));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, replicas.clone(), seen.clone(), stop.clone())))
        .collect();
    let phase = drill_time() / 4;
    let acked = |seen: &Mutex<Seen>| seen.lock().expect("seen").acked.len();
    tokio::time::sleep(phase).await;
    let before_kill = acked(&seen);

    // A replica dies mid-run (SIGKILL, writes in flight) and comes back on its port.
    replicas.disturbed.store(true, Ordering::Relaxed);
    tokio::task::block_in_place(|| replicas.kill(2));
    tokio::time::sleep(phase / 2).await;
    tokio::task::block_in_place(|| replicas.restart(2));
    replicas.disturbed.store(false, Ordering::Relaxed);
    tokio::time::sleep(phase).await;

    // Every session of the chain's database ends (the writers' pooled connections, the
    // change-notification sessions): writes in flight may answer 503, then all goes on.
    replicas.disturbed.store(true, Ordering::Relaxed);
    let ended = terminate_sessions(&db, database_name(&db)).await;
    assert!(ended >= REPLICAS as i64, "sessions ended: {ended}");
    let after_terminate = acked(&seen);
    eventually(
        LIMIT,
        "writes to go on after the sessions ended",
        || async { (acked(&seen) > after_terminate + 20).then_some(()) },
    )
    .await;
    replicas.disturbed.store(false, Ordering::Relaxed);

    // The standby restarts: reads fall back to the primary meanwhile, never a 5xx.
    let restarted = tokio::task::block_in_place(restart_standby);
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("writers done")
        .into_inner()
        .expect("seen");
    assert!(
        seen.faults.is_empty(),
        "{} faults, first: {:#?}\nlog of replica 0: {}",
        seen.faults.len(),
        &seen.faults[..seen.faults.len().min(10)],
        replicas.log_of(0)
    );
    assert!(before_kill > 20, "writes before the kill: {before_kill}");
    assert!(seen.acked.len() > 100, "acknowledged: {}", seen.acked.len());

    // One linear chain: gapless, each block linked to the one below, every acknowledged block
    // there as acknowledged.
    let chain = stored_chain(&db).await;
    for (i, (height, hash, previous)) in chain.iter().enumerate() {
        assert_eq!(*height, i as i64, "gapless");
        if i > 0 {
            assert_eq!(
                previous,
                &chain[i - 1].1,
                "height {height} links to the one below"
            );
        }
        let _ = hash;
    }
    for (height, hash) in &seen.acked {
        assert_eq!(
            chain.get(*height as usize).map(|c| &c.1),
            Some(hash),
            "acknowledged block {height} is stored"
        );
    }
    // Every acknowledged block readable through every replica.
    let http = client();
    let tip = chain.len() as u64 - 1;
    for i in 0..REPLICAS {
        eventually(LIMIT, "each replica to know the tip", || async {
            (chain_height(&http, &replicas, i).await == Some(tip)).then_some(())
        })
        .await;
        let mut from = 0u64;
        while from <= tip {
            let page: Value = http
                .get(replicas.url(i, &format!("/api/v1/blocks/range?from={from}&limit=1000")))
                .send()
                .await
                .expect("range")
                .json()
                .await
                .expect("range JSON");
            let blocks = page["blocks"].as_array().expect("blocks");
            assert!(!blocks.is_empty(), "range from {from} via {i}");
            for b in blocks {
                let h = b["height"].as_u64().expect("height");
                assert_eq!(
                    b["hash"],
                    chain[h as usize].1.as_str(),
                    "height {h} via {i}"
                );
            }
            from += blocks.len() as u64;
        }
    }
    eprintln!(
        "replica drill: {} blocks acknowledged ({} reads through another replica), {} writes \
         and reads answered 503 ST_001 during disturbances, {} retried creates answered 200 with the \
         stored block; standby restarted: {restarted}",
        seen.acked.len(),
        seen.reads,
        seen.unavailable,
        seen.retried_already_stored
    );
}

/// The chain height replica `i` reports, or `None` while it does not answer.
async fn chain_height(http: &reqwest::Client, replicas: &Replicas, i: usize) -> Option<u64> {
    let v: Value = http
        .get(replicas.url(i, "/api/v1/chain/height"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["height"].as_u64()
}

/// The sync status of follower `i`, or `None` while it does not answer.
async fn status_of(http: &reqwest::Client, replicas: &Replicas, i: usize) -> Option<Value> {
    http.get(replicas.url(i, "/api/v1/sync/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The replicas that say they lead now.
async fn leaders(http: &reqwest::Client, replicas: &Replicas) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..REPLICAS {
        if let Some(s) = status_of(http, replicas, i).await
            && s["leader"]["self"] == true
        {
            out.push(i);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_followers_keep_one_leader_through_a_kill_and_ended_sessions() {
    let Some(db) = fresh_database() else { return };
    let mut chain = chains::chain(5, "a");
    let up = StandIn::start(&chain).await;
    let env = vec![
        ("BLOCK_MANAGER_DATABASE_URL".to_string(), db.clone()),
        ("BLOCKCHAIN_ENGINE_URL".to_string(), up.url()),
        (
            "BLOCK_MANAGER__SYNCHRONIZATION__POLL_INTERVAL_SECONDS".to_string(),
            "0.1".to_string(),
        ),
    ];
    let replicas = Arc::new(tokio::task::block_in_place(|| Replicas::start(env)));
    let http = client();
    // Sampled all along: never two replicas saying they lead at once.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (replicas, stop, samples) = (replicas.clone(), stop.clone(), samples.clone());
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let now = leaders(&http, &replicas).await;
                assert!(now.len() <= 1, "two leaders at once: {now:?}");
                samples.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let one_leader = || async {
        eventually(LIMIT, "exactly one leader", || async {
            let l = leaders(&http, &replicas).await;
            (l.len() == 1).then(|| l[0])
        })
        .await
    };
    let at = |h: u64| {
        let http = http.clone();
        let replicas = replicas.clone();
        async move {
            for i in 0..REPLICAS {
                eventually(
                    LIMIT,
                    &format!("height {h} through replica {i}"),
                    || async { (chain_height(&http, &replicas, i).await == Some(h)).then_some(()) },
                )
                .await;
            }
        }
    };
    let first = one_leader().await;
    at(5).await;

    // The leader is SIGKILLed: its session dies with it, and another takes over within 5 s.
    tokio::task::block_in_place(|| replicas.kill(first));
    let killed = Instant::now();
    chains::grow(&mut chain, 5, "b", 2);
    up.chain(&chain);
    let second = one_leader().await;
    assert_ne!(second, first);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took over in {:?}",
        killed.elapsed()
    );
    tokio::task::block_in_place(|| replicas.restart(first));
    at(10).await;

    // The new leader's database sessions are ended: one leads again within 5 s.
    let name = database_name(&db).to_string();
    let admin = connect(&db).await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = $1))",
            &[&name],
        )
        .await
        .expect("end the lease's session");
    assert_eq!(ended.len(), 1, "the lease's one session");
    let ended_at = Instant::now();
    chains::grow(&mut chain, 5, "c", 2);
    up.chain(&chain);
    eventually(LIMIT, "a leader again", || async {
        (leaders(&http, &replicas).await.len() == 1).then_some(())
    })
    .await;
    assert!(
        ended_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        ended_at.elapsed()
    );
    at(15).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("never two leaders");
    assert!(samples.load(Ordering::Relaxed) > 10);
    let stored = stored_chain(&db).await;
    assert_eq!(stored.len(), 16);
    for (h, b) in chain.iter().enumerate() {
        assert_eq!(stored[h].1, b.hash, "height {h} is the upstream's");
    }
}
