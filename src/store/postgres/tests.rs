//! What only the PostgreSQL engine has: start-up against a database that is not there yet, a
//! database of another chain or a newer schema, the chain rules the database itself enforces,
//! and the two bulk write paths. The behaviour every engine shares is in the conformance suite.

use std::str::FromStr;

use super::*;

pub(super) fn record(height: u64, salt: u64, txs: usize) -> BlockRecord {
    let hash = |h: u64| format!("{:032x}{:032x}", h, salt);
    let tx_ids: Vec<String> = (0..txs)
        .map(|i| format!("tx-{height}-{salt}-{i}"))
        .collect();
    let body = format!(r#"{{"height":{height},"salt":{salt},"transactions":{tx_ids:?}}}"#);
    BlockRecord {
        meta: BlockMeta {
            height,
            hash: hash(height),
            previous_hash: if height == 0 {
                "0".repeat(64)
            } else {
                hash(height - 1)
            },
            merkle_root: "ab".repeat(32),
            timestamp: format!("t{height}"),
            timestamp_micros: 1_704_067_200_000_000 + height as i64 * 10_000_000,
            producer: "node-1".into(),
            transaction_count: txs as u32,
            block_size_bytes: body.len() as u64,
        },
        tx_ids,
        body: body.into_bytes(),
    }
}

pub(super) fn spec(genesis: Option<BlockRecord>) -> ChainSpec {
    ChainSpec {
        network: "lucid_blocks".into(),
        mode: Some("standalone"),
        genesis,
        genesis_pinned: true,
        finality_depth: Some(3),
    }
}

pub(super) fn open(options: &PgOptions) -> PgStore {
    PgStore::connect(options.clone(), spec(Some(record(0, 0, 1)))).expect("connect")
}

#[test]
fn a_fresh_database_gets_the_schema_genesis_and_the_chain_settings() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store = open(&options);
    assert!(store.is_ready());
    let tip = store.tip().expect("tip").expect("genesis");
    assert_eq!(tip.height, 0);
    assert_eq!(
        store.chain_info().expect("info").genesis_hash,
        Some(tip.hash)
    );
    assert_eq!(store.engine(), "postgres");
    drop(store);
    // A second start finds everything and creates nothing twice
    let again = open(&options);
    assert_eq!(again.totals().expect("totals").blocks, 1);
}

#[test]
fn small_and_large_batches_store_the_same_rows() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store = open(&options);
    // Below the COPY threshold, then above it
    let small: Vec<BlockRecord> = (1..10).map(|h| record(h, 0, 2)).collect();
    store.append(&small).expect("small batch");
    let large: Vec<BlockRecord> = (10..300).map(|h| record(h, 0, 3)).collect();
    store.append(&large).expect("large batch");
    for h in [1, 9, 10, 299] {
        let want = if h < 10 {
            &small[h as usize - 1]
        } else {
            &large[h as usize - 10]
        };
        assert_eq!(store.meta_at(h).expect("meta").as_ref(), Some(&want.meta));
        assert_eq!(
            store.body_at(h).expect("body").as_deref(),
            Some(want.body.as_slice())
        );
        assert_eq!(
            store.tx_location(&want.tx_ids[1]).expect("tx"),
            Some((h, 1))
        );
    }
    let totals = store.totals().expect("totals");
    assert_eq!(totals.blocks, 300);
    assert_eq!(totals.transactions, 1 + 9 * 2 + 290 * 3);
    // The floor rose with the tip, in the same commits
    assert_eq!(store.finality_floor().expect("floor"), 299 - 4);
    // What memory says is what the database says
    drop(store);
    let again = open(&options);
    assert_eq!(again.totals().expect("totals"), totals);
    assert_eq!(again.tip().expect("tip").map(|t| t.height), Some(299));
}

/// `record` with a body of about 3 KB, long enough that the server compresses it.
fn large(height: u64) -> BlockRecord {
    let mut r = record(height, 0, 1);
    r.body
        .extend(format!(" {}", "lucid block ".repeat(250)).bytes());
    r.meta.block_size_bytes = r.body.len() as u64;
    r
}

/// The compression of the body column ([`schema::BODY_COMPRESSION`]) and of each stored body
/// at `heights`.
fn compression(options: &PgOptions, heights: &[i64]) -> (String, Vec<Option<String>>) {
    let heights = heights.to_vec();
    testdb::with_client(&options.pg, |client| async move {
        let column: String = client
            .query_one(schema::BODY_COMPRESSION, &[])
            .await
            .expect("column")
            .get(0);
        let mut bodies = Vec::new();
        for h in heights {
            let row = client
                .query_one(
                    "SELECT pg_column_compression(body) FROM bm_blocks WHERE height = $1",
                    &[&h],
                )
                .await
                .expect("body");
            bodies.push(row.get(0));
        }
        (column, bodies)
    })
}

/// Sets the body column back to pglz, as a database an earlier build made has it.
fn as_before_lz4(options: &PgOptions) {
    testdb::with_client(&options.pg, |client| async move {
        client
            .batch_execute("ALTER TABLE bm_blocks ALTER COLUMN body SET COMPRESSION pglz")
            .await
            .expect("alter");
    });
}

#[test]
fn bodies_are_compressed_with_lz4_and_a_database_that_had_pglz_keeps_its_rows_readable() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store = open(&options);
    store.append(&[large(1)]).expect("append");
    assert_eq!(
        compression(&options, &[1]),
        ("l".to_string(), vec![Some("lz4".to_string())])
    );
    drop(store);
    // A database as an earlier build left it: bodies compressed by the server's default.
    as_before_lz4(&options);
    let store = open(&options);
    assert_eq!(compression(&options, &[]).0, "l", "not switched on open");
    // A body written while the column said pglz, then one after a reopen: both are served.
    as_before_lz4(&options);
    store.append(&[large(2)]).expect("append");
    drop(store);
    let store = open(&options);
    store.append(&[large(3)]).expect("append");
    assert_eq!(
        compression(&options, &[1, 2, 3]),
        (
            "l".to_string(),
            vec![
                Some("lz4".to_string()),
                Some("pglz".to_string()),
                Some("lz4".to_string())
            ]
        )
    );
    for h in 1..=3 {
        assert_eq!(
            store.body_at(h).expect("read"),
            Some(large(h).body),
            "height {h}"
        );
    }
}

#[test]
fn a_table_busy_with_readers_leaves_the_compression_to_the_next_start_without_holding_this_one() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    drop(open(&options));
    as_before_lz4(&options);
    // A reader in another session holds the table until told to let go.
    let (locked, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let reader = {
        let (pg, locked) = (options.pg.clone(), locked.0);
        std::thread::spawn(move || {
            testdb::with_client(&pg, |client| async move {
                client
                    .batch_execute("BEGIN; LOCK TABLE bm_blocks IN ACCESS SHARE MODE")
                    .await
                    .expect("lock");
                locked.send(()).expect("signal");
                let _ = tokio::task::spawn_blocking(move || release.1.recv()).await;
                client.batch_execute("COMMIT").await.expect("commit");
            })
        })
    };
    locked.1.recv().expect("locked");
    // However long the operator lets other statements wait for locks.
    let patient = PgOptions {
        lock_timeout: std::time::Duration::from_secs(10),
        ..options.clone()
    };
    let started = std::time::Instant::now();
    let store = open(&patient);
    let took = started.elapsed();
    assert!(store.is_ready());
    assert!(
        took < std::time::Duration::from_secs(3),
        "start-up waited {took:?}"
    );
    assert_eq!(
        compression(&options, &[]).0,
        "p",
        "switched under a reader's lock"
    );
    // The session it used is sound: the store still writes.
    store.append(&[large(1)]).expect("append");
    release.0.send(()).expect("release");
    reader.join().expect("reader");
    drop(store);
    drop(open(&options));
    assert_eq!(
        compression(&options, &[]).0,
        "l",
        "not switched at the next start"
    );
}

#[test]
fn the_database_refuses_a_fork_or_a_gap_whoever_writes_it() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store = open(&options);
    store.append(&[record(1, 0, 1)]).expect("append");
    testdb::with_client(&options.pg, |client| async move {
        let insert = "INSERT INTO bm_blocks (height, hash, previous_hash, merkle_root, ts, ts_micros, producer, transaction_count, size_bytes, body) VALUES ($1, $2, $3, 'r', 't', 0, 'p', 0, 2, '{}')";
        // A second block at a stored height
        let fork = client
            .execute(
                insert,
                &[&1i64, &"f".repeat(64), &record(0, 0, 0).meta.hash],
            )
            .await;
        assert!(fork.is_err(), "a fork was stored");
        // A block above a gap
        let gap = client
            .execute(insert, &[&5i64, &"e".repeat(64), &"d".repeat(64)])
            .await;
        assert!(gap.is_err(), "a gap was stored");
        // A block whose previous hash is not the stored block below
        let broken = client
            .execute(insert, &[&2i64, &"c".repeat(64), &"d".repeat(64)])
            .await;
        assert!(broken.is_err(), "a broken link was stored");
        // A gap inside one statement's rows
        let rows = "INSERT INTO bm_blocks (height, hash, previous_hash, merkle_root, ts, ts_micros, producer, transaction_count, size_bytes, body) VALUES \
            (2, $1, $2, 'r', 't', 0, 'p', 0, 2, '{}'), (4, $3, $1, 'r', 't', 0, 'p', 0, 2, '{}')";
        let (two, four) = ("b".repeat(64), "a".repeat(64));
        let inner_gap = client
            .execute(rows, &[&two, &record(1, 0, 1).meta.hash, &four])
            .await;
        assert!(inner_gap.is_err(), "a gap inside a batch was stored");
        // Removing a block a stored block links to, or moving one
        let hole = client
            .execute("DELETE FROM bm_blocks WHERE height = 0", &[])
            .await;
        assert!(hole.is_err(), "a block below a stored one was removed");
        let moved = client
            .execute(
                "UPDATE bm_blocks SET hash = $1 WHERE height = 1",
                &[&"9".repeat(64)],
            )
            .await;
        assert!(moved.is_err(), "a stored block's hash changed");
    });
    assert_eq!(store.tip().expect("tip").map(|t| t.height), Some(1));
}

#[test]
fn a_rollback_is_seen_by_cached_reads_at_once() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store = open(&options);
    // The first listening session's resync forgets the cache: wait it out, so the bodies
    // appended below stay cached.
    let listening = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store
        .inner
        .sessions
        .load(std::sync::atomic::Ordering::Acquire)
        == 0
    {
        assert!(
            std::time::Instant::now() < listening,
            "no listening session"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let blocks: Vec<BlockRecord> = (1..6).map(|h| record(h, 0, 1)).collect();
    store.append(&blocks).expect("append");
    assert!(store.cached_body(5).is_some());
    let removed = store.rollback_above(3).expect("rollback");
    assert_eq!(removed.len(), 2);
    assert_eq!(removed[1].tx_ids, blocks[4].tx_ids);
    assert!(store.cached_body(4).is_none());
    assert_eq!(store.body_at(4).expect("read"), None);
    let replacement: Vec<BlockRecord> = (4..6).map(|h| record(h, 7, 1)).collect();
    // The replacement links to the kept block 3, not to the old branch
    let mut replacement = replacement;
    replacement[0].meta.previous_hash = blocks[2].meta.hash.clone();
    store.append(&replacement).expect("append the new branch");
    assert_eq!(
        store.body_at(5).expect("read").as_deref(),
        Some(replacement[1].body.as_slice())
    );
    let log = store.rollback_log().expect("log");
    assert_eq!(
        log[0].orphaned,
        vec![blocks[3].meta.hash.clone(), blocks[4].meta.hash.clone()]
    );
}

#[test]
fn another_chains_database_or_a_newer_schema_stops_start_up() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    drop(open(&options));
    let mut other = spec(Some(record(0, 0, 1)));
    other.network = "another_net".into();
    match PgStore::connect(options.clone(), other) {
        Err(ConnectError::Configuration(why)) => assert!(why.contains("chain.network"), "{why}"),
        Ok(_) => panic!("another network's database was accepted"),
    }
    let mut follower = spec(None);
    follower.mode = Some("follower");
    assert!(PgStore::connect(options.clone(), follower).is_err());
    let pinned_elsewhere = spec(Some(record(0, 9, 1)));
    assert!(PgStore::connect(options.clone(), pinned_elsewhere).is_err());
    testdb::with_client(&options.pg, |client| async move {
        client
            .execute("UPDATE bm_schema SET version = 99", &[])
            .await
            .expect("update");
    });
    match PgStore::connect(options, spec(None)) {
        Err(ConnectError::Configuration(why)) => assert!(why.contains("version 99"), "{why}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn a_missing_database_or_a_wrong_password_is_a_configuration_error() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let mut missing = options.clone();
    missing.pg.dbname("bm_no_such_database");
    match PgStore::connect(missing, spec(None)) {
        Err(ConnectError::Configuration(why)) => assert!(why.contains("does not exist"), "{why}"),
        Ok(_) => panic!("a missing database was accepted"),
    }
}

#[test]
fn an_unreachable_database_starts_unready_and_answers_unavailable_quickly() {
    if testdb::fresh().is_none() {
        return;
    }
    // A port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let pg = tokio_postgres::Config::from_str(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=x"
    ))
    .expect("config");
    let mut options = PgOptions::new(pg, Tls::Disable, "postgres://nowhere".into());
    options.connect_timeout = std::time::Duration::from_millis(500);
    let started = std::time::Instant::now();
    let store = PgStore::connect(options, spec(Some(record(0, 0, 1)))).expect("starts");
    assert!(!store.is_ready());
    assert!(matches!(store.tip(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        store.append(&[record(1, 0, 1)]),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.check_reachable(),
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// Polls `f` until it holds, for at most five seconds.
pub(super) fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_second_replica_hears_of_every_commit_and_rollback() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let a = open(&options);
    let b = open(&options);
    let watch = Arc::new(crate::store::tip::TipWatch::new());
    let mut woken = watch.subscribe();
    b.follow_changes(watch.clone());
    let blocks: Vec<BlockRecord> = (1..6).map(|h| record(h, 0, 1)).collect();
    // B caches what it reads of the old branch
    a.append(&blocks[..2]).expect("append");
    eventually("B to see height 2", || {
        b.tip().ok().flatten().map(|t| t.height) == Some(2)
    });
    // B's tip watch, the service's one source of the tip, follows A's commits too.
    eventually("B's tip watch to say height 2", || {
        watch.height() == Some(2)
    });
    assert!(
        woken.has_changed().unwrap_or(false),
        "B's watch was not woken"
    );
    woken.mark_unchanged();
    a.append(&blocks[2..]).expect("append");
    eventually("B to see height 5", || {
        b.tip().ok().flatten().map(|t| t.height) == Some(5)
    });
    assert_eq!(
        b.body_at(5).expect("read").as_deref(),
        Some(blocks[4].body.as_slice())
    );
    assert_eq!(b.totals().expect("totals"), a.totals().expect("totals"));
    // A replaces the top: B must never serve the old body from its cache
    a.rollback_above(3).expect("rollback");
    let mut replacement: Vec<BlockRecord> = (4..6).map(|h| record(h, 7, 1)).collect();
    replacement[0].meta.previous_hash = blocks[2].meta.hash.clone();
    a.append(&replacement).expect("append");
    eventually("B to see the new branch", || {
        b.body_at(5).ok().flatten().as_deref() == Some(replacement[1].body.as_slice())
    });
    eventually("B's tip to be the new branch's", || {
        b.tip().ok().flatten().map(|t| t.hash) == Some(replacement[1].meta.hash.clone())
    });
}

#[test]
fn the_quarantine_files_into_the_database_within_its_bounds() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let store: Arc<dyn crate::store::BlockStore> = Arc::new(open(&options));
    let dir = tempfile::tempdir().expect("dir");
    let q = crate::quarantine::Quarantine::new(dir.path().join("q"), 3, 1 << 20)
        .with_index(store.clone());
    for i in 0..5 {
        let block = serde_json::json!({"height": i, "hash": format!("{i:064x}"), "data": "x"});
        q.put("rejected", serde_json::json!(["bad"]), &block);
    }
    // The same block again is not filed twice
    let again = serde_json::json!({"height": 4, "hash": format!("{:064x}", 4), "data": "x"});
    q.put("rejected", serde_json::json!(["bad"]), &again);
    let kept = q.list();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept[2]
            .0
            .to_string_lossy()
            .contains(&format!("{:064x}", 4)[..16]),
        "{kept:?}"
    );
    // Nothing went to the folder: replicas on one database share the quarantine
    assert!(!dir.path().join("q").exists());
}

#[test]
fn a_write_that_finds_the_tip_moved_on_reloads_the_chain_state() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    // Two handles on one database: what `ours` does not hear of is a commit whose answer it
    // lost (it committed, the connection broke before the reply), or another writer's.
    let ours = open(&options);
    let other = open(&options);
    other.append(&[record(1, 0, 1)]).expect("append elsewhere");
    // (`ours` may already have heard of it by notification: the write is refused either way.)
    assert!(matches!(
        ours.append(&[record(1, 7, 1)]),
        Err(StoreError::NotContiguous {
            expected: 2,
            got: 1
        })
    ));
    // The refusal reloaded the state: the next write builds on the database's tip.
    assert_eq!(ours.tip().expect("tip").map(|t| t.height), Some(1));
    assert_eq!(ours.totals().expect("totals").blocks, 2);
    ours.append(&[record(2, 0, 1)])
        .expect("append on the reloaded tip");
    assert_eq!(ours.tip().expect("tip").map(|t| t.height), Some(2));
}

#[test]
fn a_ledger_on_one_replica_reports_the_tip_another_replica_committed() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let a = open(&options);
    let b: Arc<dyn crate::store::BlockStore> = Arc::new(open(&options));
    eventually("B to be ready", || b.tip().is_ok());
    let (ledger, _writer) = crate::ledger::Ledger::start(
        b.clone(),
        crate::chain::Limits::default(),
        Arc::new(crate::metrics::Metrics::new()),
    );
    // The tip watch is the ledger's one source of the tip: fed by B's engine, which hears
    // of A's commits, not only by B's own writer.
    let blocks: Vec<BlockRecord> = (1..5).map(|h| record(h, 0, 1)).collect();
    a.append(&blocks).expect("append");
    eventually("B's ledger to report height 4", || {
        ledger.tip_height() == Some(4)
    });
    a.rollback_above(2).expect("rollback");
    eventually("B's ledger to report height 2", || {
        ledger.tip_height() == Some(2)
    });
}

/// Sessions of the test database waiting for a lock.
fn lock_waiters(options: &PgOptions) -> i64 {
    testdb::with_client(&options.pg, |c| async move {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get::<_, i64>(0)
    })
}

/// A chain of sealed blocks on top of genesis, each with `txs` transactions, as stored.
fn sealed_chain(n: u64, txs: usize) -> Vec<BlockRecord> {
    use crate::chain::{Block, Timestamp, Transaction, genesis_block};
    let start = 1_704_067_200_000_000;
    let mut chain = vec![genesis_block(Timestamp::from_unix_micros(start))];
    for height in 1..=n {
        let ts = Timestamp::from_unix_micros(start + height as i64 * 10_000_000);
        let transactions = (0..txs)
            .map(|i| Transaction {
                tx_id: format!("tx-{height}-{i}"),
                tx_type: "data_storage".to_owned(),
                from_address: "addr-a".to_owned(),
                to_address: "addr-b".to_owned(),
                value: serde_json::Number::from(i),
                fee: serde_json::Number::from(0u8),
                data: String::new(),
                timestamp: ts,
                signature: "sig".to_owned(),
            })
            .collect();
        let previous = chain
            .last()
            .map(|b: &Block| b.hash.clone())
            .unwrap_or_default();
        chain.push(Block::build(
            height,
            previous,
            ts,
            "node-1",
            "sig",
            transactions,
        ));
    }
    chain.iter().map(crate::ledger::record_of).collect()
}

#[test]
fn verify_reads_pages_of_blocks_not_each_block_on_its_own() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let chain = sealed_chain(600, 6);
    let store = PgStore::connect(options.clone(), spec(Some(chain[0].clone()))).expect("connect");
    store.append(&chain[1..]).expect("append");
    let before = store.calls();
    let report = crate::verify::verify(&store, 0, None).expect("verify");
    let calls = store.calls() - before;
    assert!(report.is_valid, "{:?}", report.errors);
    assert_eq!(report.blocks_checked, 601);
    // A few operations per page of a few hundred blocks: a round trip per block (or per
    // transaction) is what made a 10,000-block chain time out.
    assert!(
        calls <= 40,
        "{calls} database operations to verify 601 blocks"
    );
    // Paging keeps every check: an index entry and a served body that disagree with the
    // stored block are still found.
    testdb::with_client(&options.pg, |client| async move {
        client
            .execute(
                "UPDATE bm_transactions SET position = 9 WHERE tx_id = 'tx-300-2'",
                &[],
            )
            .await
            .expect("break an index entry");
    });
    store.inner.cache.put(450, Bytes::from_static(b"{}"));
    let report = crate::verify::verify(&store, 0, None).expect("verify");
    assert_eq!(report.error_count, 2, "{:?}", report.errors);
    assert!(report.errors[0].contains("height 300: transaction index entry for tx-300-2"));
    assert!(report.errors[1].contains("height 450: a read by height serves a body"));
}

/// A TCP relay in front of the database that, once armed, passes one simple-query `COMMIT`
/// on to the server and then throws away the server's answer and cuts the connection: the
/// commit happens and the engine never hears of it, as when a connection breaks mid-commit.
struct CommitCutter {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl CommitCutter {
    fn start(target: (String, u16)) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (a, f) = (armed.clone(), fired.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect((target.0.as_str(), target.1)) else {
                    continue;
                };
                let cut = Arc::new(AtomicBool::new(false));
                Self::relay(client, server, cut, a.clone(), f.clone());
            }
        });
        Self { port, armed, fired }
    }

    fn relay(
        client: std::net::TcpStream,
        server: std::net::TcpStream,
        cut: Arc<std::sync::atomic::AtomicBool>,
        armed: Arc<std::sync::atomic::AtomicBool>,
        fired: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let (mut from_client, mut to_server) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        let (mut from_server, mut to_client) = (server, client);
        let c = cut.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from_server.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if c.load(SeqCst) {
                    // The COMMIT's answer: dropped, and both sides cut.
                    fired.store(true, SeqCst);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                    let _ = from_server.shutdown(std::net::Shutdown::Both);
                    break;
                }
                if to_client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            // The startup message has no type byte: a length (itself included), then the rest.
            let mut len = [0u8; 4];
            if from_client.read_exact(&mut len).is_err() {
                return;
            }
            let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
            if from_client.read_exact(&mut rest).is_err()
                || to_server.write_all(&len).is_err()
                || to_server.write_all(&rest).is_err()
            {
                return;
            }
            loop {
                let mut head = [0u8; 5];
                if from_client.read_exact(&mut head).is_err() {
                    return;
                }
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut body = vec![0u8; len.saturating_sub(4)];
                if from_client.read_exact(&mut body).is_err() {
                    return;
                }
                if head[0] == b'Q' && body.starts_with(b"COMMIT") && armed.swap(false, SeqCst) {
                    cut.store(true, SeqCst);
                }
                if to_server.write_all(&head).is_err() || to_server.write_all(&body).is_err() {
                    return;
                }
            }
        });
    }

    /// `options` with the connection going through this relay.
    fn options(&self, options: &PgOptions) -> PgOptions {
        let mut relayed = options.clone();
        let mut pg = tokio_postgres::Config::new();
        pg.host("127.0.0.1")
            .port(self.port)
            .user(options.pg.get_user().expect("user"))
            .dbname(options.pg.get_dbname().expect("dbname"));
        relayed.pg = pg;
        relayed
    }

    fn target(options: &PgOptions) -> (String, u16) {
        let host = match &options.pg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => {
                panic!("the test database is reached over TCP")
            }
        };
        (
            host,
            options.pg.get_ports().first().copied().unwrap_or(5432),
        )
    }
}

#[test]
fn a_commit_whose_answer_is_lost_is_looked_up_not_told_as_a_failure() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let cutter = CommitCutter::start(CommitCutter::target(&options));
    let store = open(&cutter.options(&options));
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut txn = store.begin().expect("begin");
    txn.append(vec![record(1, 0, 2)]).expect("stage");
    let done = txn
        .commit()
        .expect("the commit happened: its answer must say so");
    assert!(
        cutter.fired.load(std::sync::atomic::Ordering::SeqCst),
        "the relay cut the commit"
    );
    assert_eq!(done.tip.map(|t| t.height), Some(1));
    // The database holds it, and the engine goes on from it.
    let other = open(&options);
    assert_eq!(
        other.meta_at(1).expect("read").map(|m| m.hash),
        Some(record(1, 0, 2).meta.hash)
    );
    let mut txn = store.begin().expect("begin");
    assert_eq!(txn.tip().map(|t| t.height), Some(1));
    txn.append(vec![record(2, 0, 1)]).expect("stage");
    txn.commit().expect("the next commit");
    assert_eq!(store.tip().expect("tip").map(|t| t.height), Some(2));
}

#[test]
fn a_write_transaction_holds_the_chain_and_continues_the_tip_the_database_has() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let a = Arc::new(open(&options));
    let b = Arc::new(open(&options));
    eventually("B to be ready", || b.tip().is_ok());
    // A holds the chain: B's transaction waits for it, then starts from A's commit, whether
    // or not B has heard of that commit yet.
    let mut held = a.begin().expect("begin on A");
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut txn = b.begin().expect("begin on B");
            let waited = started.elapsed();
            let tip = txn.tip().map(|t| t.height);
            txn.append(vec![record(2, 0, 1)]).expect("stage on B");
            txn.commit().expect("commit on B");
            (waited, tip)
        })
    };
    eventually("B's transaction to wait for the chain's lock", || {
        lock_waiters(&options) == 1
    });
    held.append(vec![record(1, 0, 1)]).expect("stage on A");
    held.commit().expect("commit on A");
    let (waited, tip) = waiter.join().expect("B's writer");
    assert!(waited < options.lock_timeout, "{waited:?}");
    assert_eq!(tip, Some(1), "B's transaction continues A's commit");
    // A transaction dropped without a commit writes nothing and frees the chain at once.
    let mut dropped = a.begin().expect("begin");
    dropped.append(vec![record(3, 9, 1)]).expect("stage");
    drop(dropped);
    let started = std::time::Instant::now();
    let txn = b.begin().expect("begin after a drop");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(txn.tip().map(|t| t.height), Some(2));
    drop(txn);
    assert_eq!(
        open(&options).totals().expect("totals").blocks,
        3,
        "nothing of the dropped transaction was stored"
    );
}

#[test]
fn a_follower_appends_only_while_this_process_holds_the_sync_lease() {
    use crate::store::lease::{Holder, Leadership};
    let Some(options) = testdb::fresh() else {
        return;
    };
    let follower = || ChainSpec {
        mode: Some("follower"),
        genesis: None,
        ..spec(None)
    };
    let store = PgStore::connect(options.clone(), follower()).expect("connect");
    eventually("the engine to be ready", || store.is_ready());
    let append = |height: u64| {
        let mut txn = store.begin()?;
        txn.append(vec![record(height, 0, 1)])?;
        txn.commit()
    };
    // No lease held: the write is refused and nothing is stored.
    assert!(
        matches!(append(0), Err(StoreError::Unavailable(why)) if why.contains("sync lease")),
        "a follower without the lease must not append"
    );
    assert_eq!(store.totals().expect("totals").blocks, 0);
    // This process takes the lease: its appends go in.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (mut lease, feed) = crate::store::lease::channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let me = Holder {
        instance_id: "test".into(),
        address: "http://test".into(),
    };
    let held = runtime.spawn(lease::hold(options.clone(), me, feed, stop.clone()));
    runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            lease.part.wait_for(|p| *p == Leadership::Leader),
        )
        .await
        .expect("the lease within 30 s")
        .expect("lease feed");
    });
    append(0).expect("the leader appends");
    append(1).expect("the leader appends again");
    // Its lease session ends (as when the database ends it): the next append is refused even
    // before this process hears of the loss.
    testdb::with_client(&options.pg, |c| async move {
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&lease::session_name()],
        )
        .await
        .expect("end the lease's session");
    });
    // Gone once its lock is: a backend told to end takes a moment to. (The lease tries again
    // only a second after losing its session.)
    eventually("the lease's session to end", || {
        testdb::with_client(&options.pg, |c| async move {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&lease::session_name()],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
                == 0
        })
    });
    assert!(
        matches!(append(2), Err(StoreError::Unavailable(_))),
        "a replica whose lease session ended must not append"
    );
    stop.cancel();
    runtime.block_on(held).expect("the lease task ends");
    assert_eq!(open_follower_totals(&options), 2);
}

/// Blocks stored, read by a fresh handle on the follower database.
fn open_follower_totals(options: &PgOptions) -> u64 {
    let spec = ChainSpec {
        mode: Some("follower"),
        genesis: None,
        ..spec(None)
    };
    PgStore::connect(options.clone(), spec)
        .expect("connect")
        .totals()
        .expect("totals")
        .blocks
}

#[test]
fn lookups_stay_on_the_index_after_the_table_outgrew_the_statistics_they_were_planned_with() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    // A young chain, analysed while small (as autovacuum does a new database's tables): a
    // sequential scan is then the cheapest plan for a lookup by key.
    let store = open(&options);
    let young: Vec<BlockRecord> = (1..=20).map(|h| record(h, 0, 3)).collect();
    store.append(&young).expect("append");
    testdb::with_client(&options.pg, |c| async move {
        c.batch_execute("ANALYZE bm_transactions")
            .await
            .expect("analyze");
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pool = connect::pool(&options).expect("pool");
    let client = runtime.block_on(pool.get()).expect("a session");
    let ids = vec!["tx-3-0-1".to_string(), "none".to_string()];
    let lookup = |client: &deadpool_postgres::Object| {
        runtime.block_on(async {
            let st = client.prepare_cached(STORED_TX_IDS).await.expect("prepare");
            let rows = client.query(&st, &[&ids]).await.expect("lookup");
            assert_eq!(rows.len(), 1);
        })
    };
    // Past the executions after which a prepared statement may keep one plan for good.
    for _ in 0..10 {
        lookup(&client);
    }
    // The chain grows fast (a catch-up) before the statistics are renewed.
    for from in (21..3_021).step_by(500) {
        let batch: Vec<BlockRecord> = (from..from + 500).map(|h| record(h, 0, 10)).collect();
        store.append(&batch).expect("append");
    }
    runtime
        .block_on(client.batch_execute("BEGIN"))
        .expect("begin");
    for _ in 0..5 {
        lookup(&client);
    }
    let scans: i64 = runtime
        .block_on(client.query_one(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'bm_transactions'",
            &[],
        ))
        .expect("the transaction's table statistics")
        .get(0);
    runtime
        .block_on(client.batch_execute("COMMIT"))
        .expect("commit");
    assert_eq!(
        scans, 0,
        "a lookup by key read the whole table of 30,000 transaction ids"
    );
}

#[test]
fn a_groups_transaction_ids_are_looked_up_with_the_lock_and_see_the_commit_it_waited_for() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let a = Arc::new(open(&options));
    let b = Arc::new(open(&options));
    eventually("B to be ready", || b.tip().is_ok());
    let mut held = a.begin().expect("begin on A");
    let waiter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let ids = ["tx-1-0-0", "tx-1-0-1", "tx-9-9-9"];
            let txn = b.begin_for(&ids).expect("begin on B");
            let before = b.calls();
            let stored = txn.stored_tx_ids(&ids).expect("lookup");
            (stored, b.calls() - before)
        })
    };
    eventually("B's transaction to wait for the chain's lock", || {
        lock_waiters(&options) == 1
    });
    // Committed while B waits: B's lookup, sent behind its lock, must see these ids.
    held.append(vec![record(1, 0, 2)]).expect("stage on A");
    held.commit().expect("commit on A");
    let (stored, calls) = waiter.join().expect("B's writer");
    let mut stored: Vec<String> = stored.into_iter().collect();
    stored.sort();
    assert_eq!(stored, ["tx-1-0-0", "tx-1-0-1"]);
    assert_eq!(calls, 0, "the group's ids cost a round trip under the lock");
}
