//! Followers sharing one PostgreSQL chain: exactly one replica holds the sync lease and syncs,
//! the others answer `state: "standby"` naming it and mirror its health; when the leader stops,
//! or its lease session is ended by the database, another replica takes over within seconds and
//! goes on from the stored tip. Skipped without a server (`tests/common/pg.rs`).

#[allow(dead_code)]
#[path = "sync/chains.rs"]
mod chains;
mod common;
#[allow(dead_code)]
#[path = "sync/standin.rs"]
mod standin;

use common::pg::{connect, fresh_database};
use common::*;
use serde_json::Value;
use standin::StandIn;
use std::time::{Duration, Instant};

/// Generous: the machine may be shared; a passing run takes a fraction of it.
const LIMIT: Duration = Duration::from_secs(60);

/// The advisory lock that is the lease, as `pg_locks` shows a bigint key: high and low halves.
const LEASE_CLASSID: i64 = 0x626d;
const LEASE_OBJID: i64 = 0x5f73_796e;

/// A follower of `upstream` on the chain in `db`, named `name`.
async fn replica(db: &str, upstream: &str, name: &str) -> TestApp {
    let (db, upstream, name) = (db.to_string(), upstream.to_string(), name.to_string());
    spawn_app(move |c| {
        c.storage.postgres.url = Some(db);
        c.synchronization.engine_url = Some(upstream);
        c.synchronization.poll_interval_seconds = 0.1;
        c.service.url = format!("http://{name}.example:8086");
        c.service.instance_id = Some(name);
    })
    .await
}

async fn status(app: &TestApp) -> Value {
    let (code, s) = app.get_json("/api/v1/sync/status").await;
    assert_eq!(code, 200, "{s}");
    s
}

/// Waits until exactly one of `apps` leads and every other stands by naming it; returns the
/// leader's index.
async fn one_leader(apps: &[&TestApp]) -> usize {
    eventually(
        LIMIT,
        "exactly one leader, the others standing by",
        || async {
            let mut statuses = Vec::new();
            for a in apps {
                statuses.push(status(a).await);
            }
            let leaders: Vec<usize> = (0..apps.len())
                .filter(|i| statuses[*i]["leader"]["self"] == true)
                .collect();
            let [leader] = leaders[..] else { return None };
            let name = statuses[leader]["leader"]["instance_id"].clone();
            let others_agree = statuses.iter().enumerate().all(|(i, s)| {
                i == leader
                    || (s["state"] == "standby"
                        && s["leader"]["instance_id"] == name
                        && s["leader"]["self"] == false)
            });
            (others_agree && statuses[leader]["state"] != "standby").then_some(leader)
        },
    )
    .await
}

/// Two followers of one stand-in upstream (serving `chain`) on a fresh database, once exactly
/// one of them leads: the database, the upstream, the replicas and the leader's index. `None`
/// without a server.
async fn two_replicas(
    chain: &[block_manager::chain::Block],
) -> Option<(String, StandIn, TestApp, TestApp, usize)> {
    let db = fresh_database()?;
    let up = StandIn::start(chain).await;
    let a = replica(&db, &up.url(), "replica-a").await;
    let b = replica(&db, &up.url(), "replica-b").await;
    let leader = one_leader(&[&a, &b]).await;
    Some((db, up, a, b, leader))
}

/// Waits until each of `apps` serves the chain up to `h`.
async fn at_height(apps: &[&TestApp], h: u64) {
    for app in apps {
        eventually(
            LIMIT,
            &format!("height {h} through each replica"),
            || async { (height(app).await == Some(h)).then_some(()) },
        )
        .await;
    }
}

async fn height(app: &TestApp) -> Option<u64> {
    app.get_json("/api/v1/chain/height").await.1["height"].as_u64()
}

#[tokio::test]
async fn one_replica_syncs_the_others_stand_by_naming_it_and_one_takes_over_when_it_stops() {
    let mut chain = chains::chain(5, "a");
    let Some((_, up, a, b, leader)) = two_replicas(&chain).await else {
        return;
    };
    at_height(&[&a, &b], 5).await;
    let (lead, stand) = if leader == 0 { (a, b) } else { (b, a) };
    let s = status(&stand).await;
    assert_eq!(
        s["leader"]["address"],
        status(&lead).await["leader"]["address"]
    );
    // The standby's health mirrors the leader's own verdict.
    eventually(
        LIMIT,
        "the standby to mirror the leader's verdict",
        || async {
            let (code, h) = stand.get_json("/health").await;
            let sync = &h["checks"]["sync"];
            (code == 200
                && sync["status"] == "healthy"
                && sync["state"] == "standby"
                && sync["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("reports: in step")))
            .then_some(())
        },
    )
    .await;

    // The leader stops: the standby takes over and follows the upstream on from the stored tip.
    let stopped = Instant::now();
    lead.stop().await;
    eventually(LIMIT, "the standby to take the lease", || async {
        (status(&stand).await["leader"]["self"] == true).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "took over after {took:?}");
    chains::grow(&mut chain, 3, "a", 1);
    up.chain(&chain);
    eventually(LIMIT, "the new leader to sync the new blocks", || async {
        (height(&stand).await == Some(8)).then_some(())
    })
    .await;
    let (code, b) = stand.get_json("/api/v1/blocks/height/8").await;
    assert_eq!(code, 200);
    assert_eq!(b["hash"], chain[8].hash.as_str());
    stand.stop().await;
}

#[tokio::test]
async fn a_leader_whose_lease_session_the_database_ends_stops_and_one_replica_leads_again() {
    let mut chain = chains::chain(3, "a");
    let Some((db, up, a, b, _)) = two_replicas(&chain).await else {
        return;
    };
    let sql = connect(&db).await;
    let ended = sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = $1::bigint::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND objid = $2::bigint::oid AND granted",
            &[&LEASE_CLASSID, &LEASE_OBJID],
        )
        .await
        .expect("the lease's session is found");
    assert_eq!(ended.get::<_, i64>(0), 1, "one session holds the lease");
    let cut = Instant::now();
    // The old leader notices first (its next renewal fails), and nobody leads until the
    // handover is over: never two leaders at once, then one again within seconds.
    let deadline = cut + LIMIT;
    let mut noticed = false;
    let again = loop {
        let (sa, sb) = (status(&a).await, status(&b).await);
        let leading: Vec<usize> = [&sa, &sb]
            .iter()
            .enumerate()
            .filter(|(_, s)| s["leader"]["self"] == true)
            .map(|(i, _)| i)
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {sa} {sb}");
        noticed |= leading.is_empty();
        if noticed && leading.len() == 1 {
            break leading[0];
        }
        assert!(Instant::now() < deadline, "nobody leads again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "led again after {:?}",
        cut.elapsed()
    );
    let leader = one_leader(&[&a, &b]).await;
    assert_eq!(leader, again);
    chains::grow(&mut chain, 2, "a", 1);
    up.chain(&chain);
    at_height(&[&a, &b], 5).await;
    a.stop().await;
    b.stop().await;
}
