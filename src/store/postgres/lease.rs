//! The sync lease in the database: a session advisory lock taken on a session of its own, and
//! the holder's row in `bm_leader` (who it is, when it took the lease, its last renewal and its
//! sync health verdict) for the replicas that do not hold it.
//!
//! The lock belongs to the session, so it is released the moment the holder's session ends —
//! a killed process, a lost connection, `pg_terminate_backend` — and another replica takes it
//! at its next try ([`TICK`]). The holder renews every tick on that same session; a renewal
//! that fails or does not answer within [`CALL`] drops the session, and the replica stops
//! syncing before it tries again.
//!
//! So a holder whose session died believes it leads for at most `TICK + CALL` after its last
//! renewal. A replica that takes the lock therefore starts syncing only once the previous
//! holder's last renewal is [`HANDOVER`] old (a holder that hands the lease back on shutdown
//! marks its row so that nobody waits): two replicas never sync at once.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::connect::{self, PgOptions};
use super::fault::{Fault, Outcome};
use crate::store::lease::{Holder, Leader, Leadership, LeaseFeed};

/// Key of the session advisory lock that is the lease (any constant: it only needs to be the
/// same in every block-manager sharing the database; distinct from the migration lock).
const LEASE_LOCK: i64 = 0x626d_5f73_796e; // "bm_syn"

/// How often the lease is tried for or renewed, and the standby's view refreshed.
pub const TICK: Duration = Duration::from_secs(1);

/// Bound of each call on the lease's session once connected.
const CALL: Duration = Duration::from_millis(1500);

/// How old the previous holder's last renewal must be before a new holder syncs: longer than
/// the previous holder can go on believing it leads (`TICK + CALL`).
const HANDOVER: Duration = Duration::from_secs(3);

/// The `application_name` of this process's lease session: distinct per process, so that a
/// write can check that it is this process's session that holds the lease (see
/// [`holds_lease`]).
pub(super) fn session_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "block-manager sync lease {:x}-{nanos:x}",
            std::process::id()
        )
    })
}

/// Whether this process's lease session holds the lease now, asked inside a write transaction
/// of a follower: the fence that keeps a replica whose session died (and which may not know it
/// yet) from appending, whatever the timing (the lock leaves `pg_locks` with the session).
pub(super) async fn holds_lease(txn: &deadpool_postgres::Transaction<'_>) -> Outcome<bool> {
    let st = txn
        .prepare_cached(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::int8 = $1 AND l.objid::int8 = $2 AND a.application_name = $3",
        )
        .await?;
    // A bigint advisory key shows in pg_locks as its high and low halves.
    let (high, low) = ((LEASE_LOCK >> 32) & 0xffff_ffff, LEASE_LOCK & 0xffff_ffff);
    let row = txn.query_one(&st, &[&high, &low, &session_name()]).await?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// Holds or waits for the lease until `shutdown`, reporting this replica's part to `feed`.
pub async fn hold(
    options: PgOptions,
    me: Holder,
    mut feed: LeaseFeed,
    shutdown: CancellationToken,
) {
    let mut delay = TICK;
    loop {
        // The session sees the shutdown itself, to hand the lease back; every call in it is
        // bounded, so it ends soon after.
        let outcome = session(&options, &me, &mut feed, &shutdown).await;
        // Whatever ended the session ended any lease it held: stop syncing first.
        let led = matches!(*feed.part.borrow(), Leadership::Leader);
        feed.part.send_replace(Leadership::Standby(None));
        match outcome {
            Ok(()) => return,
            Err(_) if shutdown.is_cancelled() => return,
            Err(fault) => {
                let why = fault.into_store(false);
                if led {
                    tracing::warn!(error = %why, "sync lease lost; this replica stops syncing and tries for it again");
                } else {
                    tracing::debug!(error = %why, "sync lease session lost; trying again");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One session: tries for the lease each tick, renews it once held. Returns `Ok` on shutdown
/// (the lease released), `Err` when the session is lost or a call overran its bound.
async fn session(
    options: &PgOptions,
    me: &Holder,
    feed: &mut LeaseFeed,
    shutdown: &CancellationToken,
) -> Outcome<()> {
    let limit = CALL;
    let bounded = |what: &'static str| {
        move || {
            Fault::Pool(format!(
                "the sync lease's {what} did not answer within {limit:?}"
            ))
        }
    };
    // Named, so that this process's writes can tell its own lease session (`holds_lease`).
    let mut options = options.clone();
    options.pg.application_name(session_name());
    let (client, _notes) =
        tokio::time::timeout(options.call_limit(), connect::listening_session(&options))
            .await
            .map_err(|_| bounded("connection")())??;
    let mut held = false;
    loop {
        if held {
            let verdict = feed.verdict.borrow().as_ref().map(Value::to_string);
            let renewed = tokio::time::timeout(
                limit,
                client.execute(
                    "UPDATE bm_leader SET seen = now(), health = $2 WHERE id = 1 AND instance_id = $1",
                    &[&me.instance_id, &verdict],
                ),
            )
            .await
            .map_err(|_| bounded("renewal")())??;
            if renewed != 1 {
                // Our row was overwritten: only a holder writes it, so the lock is not ours
                // any more (it cannot be, with this session alive; say so rather than trust it).
                return Err(Fault::Pool(
                    "the sync lease's row names another holder".into(),
                ));
            }
        } else {
            let took: bool = tokio::time::timeout(
                limit,
                client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_LOCK]),
            )
            .await
            .map_err(|_| bounded("try")())??
            .get(0);
            if took {
                // The previous holder may not know yet that its session is gone.
                let before = tokio::time::timeout(limit, leader(&client))
                    .await
                    .map_err(|_| bounded("read")())??;
                if let Some(prev) = before
                    && prev.seen_seconds_ago < HANDOVER.as_secs_f64()
                {
                    let wait = HANDOVER.as_secs_f64() - prev.seen_seconds_ago;
                    feed.part.send_replace(Leadership::Standby(Some(prev)));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
                    }
                }
                let verdict = feed.verdict.borrow().as_ref().map(Value::to_string);
                tokio::time::timeout(
                    limit,
                    client.execute(
                        "INSERT INTO bm_leader (id, instance_id, address, since, seen, health) \
                         VALUES (1, $1, $2, now(), now(), $3) \
                         ON CONFLICT (id) DO UPDATE SET instance_id = $1, address = $2, \
                         since = now(), seen = now(), health = $3",
                        &[&me.instance_id, &me.address, &verdict],
                    ),
                )
                .await
                .map_err(|_| bounded("record")())??;
                held = true;
                tracing::info!(instance_id = %me.instance_id, "sync lease taken: this replica syncs from the upstream");
                feed.part.send_replace(Leadership::Leader);
            } else {
                let leader = tokio::time::timeout(limit, leader(&client))
                    .await
                    .map_err(|_| bounded("read")())??;
                feed.part.send_if_modified(|part| {
                    let next = Leadership::Standby(leader);
                    let changed = *part != next;
                    *part = next;
                    changed
                });
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                if held {
                    // Handed back at once and marked as such, so another replica neither waits
                    // for the session to time out nor for the handover.
                    feed.part.send_replace(Leadership::Standby(None));
                    let _ = tokio::time::timeout(
                        limit,
                        client.batch_execute(&format!(
                            "UPDATE bm_leader SET seen = 'epoch' WHERE id = 1; \
                             SELECT pg_advisory_unlock({LEASE_LOCK})"
                        )),
                    )
                    .await;
                }
                return Ok(());
            }
            _ = tokio::time::sleep(TICK) => {}
            // A new verdict is published at once rather than at the next tick.
            _ = feed.verdict.changed(), if held => {}
        }
    }
}

/// The holder's row, as standbys show it.
async fn leader(client: &tokio_postgres::Client) -> Outcome<Option<Leader>> {
    let row = client
        .query_opt(
            "SELECT instance_id, address, \
                    to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    extract(epoch FROM now() - seen)::float8, health \
             FROM bm_leader WHERE id = 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| Leader {
        holder: Holder {
            instance_id: r.get(0),
            address: r.get(1),
        },
        since: r.get(2),
        seen_seconds_ago: r.get::<_, f64>(3).max(0.0),
        health: r
            .get::<_, Option<String>>(4)
            .and_then(|h| serde_json::from_str(&h).ok()),
    }))
}
