//! Reads from a hot standby (`BLOCK_MANAGER_TEST_STANDBY_URL`, `pg_start --standby`): every
//! write is read at once through another replica whose reads go to the standby, a true miss
//! stays a miss without asking the primary, and a standby that is down or silent sends reads to
//! the primary without making each one wait. Skipped without a standby.

use std::time::{Duration, Instant};

use super::connect::ReadTarget;
use super::tests::{open, record};
use super::*;
use crate::store::StandbyState;

/// Generous: the machine may be shared.
const LIMIT: Duration = Duration::from_secs(20);

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A replica of the chain of `options` whose reads go to `standby`.
fn reading_from(options: &PgOptions, standby: ReadTarget) -> PgStore {
    let mut options = options.clone();
    options.read = vec![standby];
    open(&options)
}

/// The database of `options` on loopback port `port` (`Config::host` adds a host rather than
/// replacing it, hence a new one).
fn elsewhere(options: &PgOptions, port: u16) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(port)
        .user(options.pg.get_user().unwrap_or("postgres"));
    if let Some(db) = options.pg.get_dbname() {
        pg.dbname(db);
    }
    pg
}

fn only_standby(store: &PgStore) -> StandbyState {
    let mut all = store.standbys();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Waits until the standby is up and has replayed the known tip.
fn caught_up(store: &PgStore) {
    until("the standby to be up and caught up", || {
        let s = only_standby(store);
        (s.up && s.lag_blocks == Some(0)).then_some(())
    });
}

#[test]
fn every_write_through_one_replica_is_read_at_once_through_another_reading_a_standby() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let Some(standby) = testdb::standby_of(&options) else {
        return;
    };
    let writer = open(&options);
    let reader = reading_from(&options, standby);
    caught_up(&reader);
    const PAIRS: u64 = 1_000;
    let mut misses = Vec::new();
    let started = Instant::now();
    for h in 1..=PAIRS {
        let block = record(h, 0, 1);
        writer.append(std::slice::from_ref(&block)).expect("append");
        // By height first: the height is the client's causal token.
        if reader.body_at(h).expect("body").as_deref() != Some(&block.body[..]) {
            misses.push(format!("body at {h}"));
        }
        if reader.meta_at(h).expect("meta").map(|m| m.hash) != Some(block.meta.hash.clone()) {
            misses.push(format!("meta at {h}"));
        }
        if reader.height_of_hash(&block.meta.hash).expect("by hash") != Some(h) {
            misses.push(format!("hash of {h}"));
        }
        if reader.tx_location(&block.tx_ids[0]).expect("by tx") != Some((h, 0)) {
            misses.push(format!("tx of {h}"));
        }
        // A list up to the tip the reader knows of ends at that tip.
        if let Some(tip) = reader.tip().expect("tip").map(|t| t.height) {
            let page = reader.metas(0, tip, Order::Desc, 0, 1).expect("list");
            if page.first().map(|m| m.height) != Some(tip) {
                misses.push(format!("list to {tip} (after {h})"));
            }
        }
    }
    let took = started.elapsed();
    let (by_standby, by_primary) = reader.reads_served().expect("standbys configured");
    eprintln!(
        "{PAIRS} write-then-read pairs in {took:?}: {by_standby} reads answered by the standby, {by_primary} by the primary"
    );
    assert!(misses.is_empty(), "{} misses: {misses:?}", misses.len());
    // Most reads were the standby's to answer (else this proved nothing about it).
    assert!(
        by_standby > by_primary,
        "standby {by_standby}, primary {by_primary}"
    );

    // A hash or transaction no block has is a plain miss once the standby has caught up.
    caught_up(&reader);
    assert_eq!(
        reader.height_of_hash(&"f".repeat(64)).expect("by hash"),
        None
    );
    assert_eq!(reader.tx_location("no-such-tx").expect("by tx"), None);
    assert_eq!(
        reader
            .heights_of_hashes(&[&block_hash(1), &"e".repeat(64)])
            .expect("batch"),
        vec![Some(1), None]
    );
}

fn block_hash(height: u64) -> String {
    record(height, 0, 1).meta.hash
}

#[test]
fn a_block_is_found_by_hash_at_once_through_a_standby_before_its_height_is_asked_for() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let Some(standby) = testdb::standby_of(&options) else {
        return;
    };
    let writer = open(&options);
    let reader = reading_from(&options, standby);
    caught_up(&reader);
    let mut misses = Vec::new();
    for h in 1..=300u64 {
        let block = record(h, 0, 1);
        writer.append(std::slice::from_ref(&block)).expect("append");
        // No causal token: the reader may not have heard of the commit yet.
        if reader.height_of_hash(&block.meta.hash).expect("by hash") != Some(h) {
            misses.push(format!("hash of {h}"));
        }
        if reader.tx_location(&block.tx_ids[0]).expect("by tx") != Some((h, 0)) {
            misses.push(format!("tx of {h}"));
        }
    }
    assert!(misses.is_empty(), "{} misses: {misses:?}", misses.len());
}

#[test]
fn a_standby_that_is_down_sends_reads_to_the_primary_and_health_says_so() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let pg = elsewhere(&options, closed);
    let store = reading_from(
        &options,
        ReadTarget {
            pg,
            tls: Tls::Disable,
            display: format!("postgres://standby@127.0.0.1:{closed}/x"),
        },
    );
    let blocks: Vec<BlockRecord> = (1..=5).map(|h| record(h, 0, 1)).collect();
    store.append(&blocks).expect("append");
    for b in &blocks {
        assert_eq!(
            store.body_at(b.meta.height).expect("body").as_deref(),
            Some(&b.body[..])
        );
        assert_eq!(
            store.height_of_hash(&b.meta.hash).expect("hash"),
            Some(b.meta.height)
        );
    }
    let s = only_standby(&store);
    assert!(!s.up, "{s:?}");
    assert!(s.error.is_some(), "{s:?}");
    // The lookups by hash at least (bodies this replica wrote may come from its cache).
    let (by_standby, by_primary) = store.reads_served().expect("counts");
    assert_eq!(by_standby, 0);
    assert!(by_primary >= blocks.len() as u64, "{by_primary}");

    let check = crate::health::StoreCheck {
        store: Arc::new(store),
        min_free_bytes: 0,
    };
    let out = crate::health::Check::run(&check);
    assert_eq!(out.status, crate::health::Status::Degraded, "{out:?}");
    assert!(out.message.contains("standby 0 is down"), "{}", out.message);
    assert_eq!(out.details["standbys"][0]["state"], "down", "{out:?}");
}

#[test]
fn a_silent_standby_costs_one_read_the_connect_timeout_not_every_read() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    // Accepts connections and never answers: a standby whose host stopped responding.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let mut options = options;
    options.connect_timeout = Duration::from_millis(500);
    let pg = elsewhere(&options, port);
    let store = reading_from(
        &options,
        ReadTarget {
            pg,
            tls: Tls::Disable,
            display: format!("postgres://standby@127.0.0.1:{port}/x"),
        },
    );
    let block = record(1, 0, 1);
    store.append(std::slice::from_ref(&block)).expect("append");
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(
            store.height_of_hash(&block.meta.hash).expect("hash"),
            Some(1)
        );
    }
    let took = started.elapsed();
    // At most one read (the background check may be first) waits the connect timeout.
    assert!(
        took < Duration::from_millis(1_500),
        "50 reads took {took:?}"
    );
    assert!(!only_standby(&store).up);
}

#[test]
fn a_standby_of_another_chain_is_never_read() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let Some(other) = testdb::fresh() else {
        return;
    };
    // Another chain (another genesis) in another database, streamed to the standby too.
    drop(
        PgStore::connect(other.clone(), super::tests::spec(Some(record(0, 9, 1))))
            .expect("connect"),
    );
    let Some(wrong) = testdb::standby_of(&other) else {
        return;
    };
    let store = reading_from(&options, wrong);
    let s = until("the standby to be refused", || {
        let s = only_standby(&store);
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("another chain"))
            .then_some(s)
    });
    assert!(!s.up, "{s:?}");
    // Its genesis is another block: only the primary's is served.
    let genesis = record(0, 0, 1);
    assert_eq!(
        store.height_of_hash(&genesis.meta.hash).expect("by hash"),
        Some(0)
    );
    assert_eq!(
        store
            .height_of_hash(&record(0, 9, 1).meta.hash)
            .expect("by hash"),
        None
    );
    assert_eq!(store.reads_served().expect("counts").0, 0);
}

/// Resumes the standby's replay when dropped, so a failing test leaves it replaying.
struct ReplayPaused(tokio_postgres::Config);

impl ReplayPaused {
    fn on(standby: &ReadTarget) -> ReplayPaused {
        testdb::with_client(&standby.pg, |c| async move {
            c.batch_execute("SELECT pg_wal_replay_pause()")
                .await
                .expect("pause replay on the standby")
        });
        ReplayPaused(standby.pg.clone())
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        testdb::with_client(&self.0, |c| async move {
            let _ = c.batch_execute("SELECT pg_wal_replay_resume()").await;
        });
    }
}

/// Rolls the chain of `old` (heights 1 to 5) back to height 3 and appends another block 4 and 5.
fn new_branch_above_3(writer: &PgStore, old: &[BlockRecord]) -> Vec<BlockRecord> {
    writer.rollback_above(3).expect("rollback");
    let mut new: Vec<BlockRecord> = (4..6).map(|h| record(h, 9, 1)).collect();
    new[0].meta.previous_hash = old[2].meta.hash.clone();
    writer.append(&new).expect("append the new branch");
    new
}

#[test]
fn blocks_a_rollback_removed_are_never_served_by_a_standby_that_has_not_replayed_it() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let Some(standby) = testdb::standby_of(&options) else {
        return;
    };
    let writer = open(&options);
    let reader = reading_from(&options, standby.clone());
    let old: Vec<BlockRecord> = (1..6).map(|h| record(h, 0, 1)).collect();
    writer.append(&old).expect("append");
    until("the reader to know of the old branch", || {
        (reader.tip().expect("tip").map(|t| t.height) == Some(5)).then_some(())
    });
    caught_up(&reader);
    // The standby keeps the old branch while the primary replaces it.
    let paused = ReplayPaused::on(&standby);
    let new = new_branch_above_3(&writer, &old);
    until("the reader to hear of the new branch", || {
        (reader.tip().expect("tip").map(|t| t.hash) == Some(new[1].meta.hash.clone())).then_some(())
    });
    let by_old_hash = reader.height_of_hash(&old[4].meta.hash).expect("by hash");
    let old_tx = reader.tx_location(&old[3].tx_ids[0]).expect("by tx");
    let at_5 = reader.meta_at(5).expect("meta").map(|m| m.hash);
    let body_4 = reader.body_at(4).expect("body");
    drop(paused);
    assert_eq!(by_old_hash, None, "a removed block found by its hash");
    assert_eq!(old_tx, None, "a removed block's transaction found");
    assert_eq!(
        at_5,
        Some(new[1].meta.hash.clone()),
        "height 5 of the old branch"
    );
    assert_eq!(
        body_4.as_deref(),
        Some(&new[0].body[..]),
        "body 4 of the old branch"
    );
}

#[test]
fn a_replica_that_never_heard_of_a_rollback_does_not_trust_a_standby_that_has_not_replayed_it() {
    let Some(options) = testdb::fresh() else {
        return;
    };
    let Some(standby) = testdb::standby_of(&options) else {
        return;
    };
    let writer = open(&options);
    let old: Vec<BlockRecord> = (1..6).map(|h| record(h, 0, 1)).collect();
    writer.append(&old).expect("append");
    {
        let early = reading_from(&options, standby.clone());
        until("the standby to replay the old branch", || {
            (early.tip().expect("tip").map(|t| t.height) == Some(5)).then_some(())
        });
        caught_up(&early);
    }
    // The rollback and the new branch as high as the old one, while the standby keeps the old
    // branch; the reader starts after them, so no notification of the rollback reaches it (as
    // when its listening session was down), and its tip never went down.
    let paused = ReplayPaused::on(&standby);
    let new = new_branch_above_3(&writer, &old);
    let reader = reading_from(&options, standby.clone());
    until("the reader to load the new branch", || {
        (reader.tip().expect("tip").map(|t| t.hash) == Some(new[1].meta.hash.clone())).then_some(())
    });
    until("the reader to find the standby up", || {
        only_standby(&reader).up.then_some(())
    });
    let by_old_hash = reader.height_of_hash(&old[4].meta.hash).expect("by hash");
    let at_5 = reader.meta_at(5).expect("meta").map(|m| m.hash);
    drop(paused);
    assert_eq!(by_old_hash, None, "a removed block found by its hash");
    assert_eq!(
        at_5,
        Some(new[1].meta.hash.clone()),
        "height 5 of the old branch"
    );
}
