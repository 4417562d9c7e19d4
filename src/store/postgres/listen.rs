//! Hearing of other replicas' commits: `LISTEN bm_chain` on a session of its own, so the
//! in-memory chain state (tip, totals, floor), the body cache and the service's tip watch follow
//! every commit to the database within milliseconds, not only this process's own.
//!
//! A notification is sent inside each write transaction, so it is delivered when (and only if)
//! that transaction commits, in commit order. A lost session loses notifications: after any
//! reconnect the state is reloaded and the cache above the finality floor forgotten, and a slow
//! poll (every [`POLL`]) reloads the state anyway, the fallback for whatever was missed.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use super::connect;
use super::fault::Outcome;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Notification;

/// How often the state is reloaded even without a notification.
const POLL: Duration = Duration::from_secs(2);

/// Follows the database's commits until the engine stops.
pub(super) async fn follow(inner: Arc<Inner>) {
    let mut delay = Duration::from_millis(100);
    loop {
        if let Err(fault) = session(&inner).await {
            let why = fault.into_store(false);
            tracing::debug!(error = %why, "change notifications lost; listening again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        } else {
            delay = Duration::from_millis(100);
        }
    }
}

/// One listening session: returns when it is lost.
async fn session(inner: &Arc<Inner>) -> Outcome<()> {
    let (client, notes) = connect::listening_session(&inner.options).await?;
    let mut notes = heard_at_once(inner.clone(), notes);
    client.batch_execute("LISTEN bm_chain").await?;
    // Whatever happened while nobody listened: reloaded, and no cached body trusted above
    // what is final.
    resync(inner).await?;
    inner
        .sessions
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    loop {
        let first = match tokio::time::timeout(POLL, notes.recv()).await {
            Ok(Some(note)) => note,
            Ok(None) => return Ok(()),
            Err(_) => {
                // Quiet for a while: the slow poll, which also finds a dead session.
                client.simple_query("SELECT 1").await?;
                refresh(inner).await?;
                continue;
            }
        };
        // Take every notification already here, then reload once for all of them.
        let mut changed = false;
        let mut note = Some(first);
        while let Some(n) = note {
            changed |= apply(inner, n.payload());
            note = notes.try_recv().ok();
        }
        if changed {
            refresh(inner).await?;
        }
    }
}

/// What one notification means for the cache; whether it came from another process.
fn apply(inner: &Inner, payload: &str) -> bool {
    let mut parts = payload.split(' ');
    let (kind, height, token) = (parts.next(), parts.next(), parts.next());
    if token == Some(inner.token.as_str()) {
        return false;
    }
    if kind == Some("rollback") {
        match height.and_then(|h| h.parse::<u64>().ok()) {
            Some(kept) => inner.cache.forget_above(kept),
            None => inner.cache.forget_above(0),
        }
    }
    true
}

/// The notifications of `notes`, each one's new tip made known the moment it arrives (see
/// [`note_tip`]), not when the session loop gets to it after a reload.
fn heard_at_once(
    inner: Arc<Inner>,
    mut notes: UnboundedReceiver<Notification>,
) -> UnboundedReceiver<Notification> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // Ends when the session's connection closes (its sender is dropped) or the session loop
    // that reads `rx` is gone.
    tokio::spawn(async move {
        while let Some(note) = notes.recv().await {
            note_tip(&inner, note.payload());
            if tx.send(note).is_err() {
                return;
            }
        }
    });
    rx
}

/// Raises the known tip to another replica's appended tip (a standby's miss of that block must
/// not pass for a true one while the chain state is still being reloaded); forgets what was
/// heard above the tip on another replica's rollback.
fn note_tip(inner: &Inner, payload: &str) {
    let mut parts = payload.split(' ');
    let (kind, height, token) = (parts.next(), parts.next(), parts.next());
    if token == Some(inner.token.as_str()) {
        return;
    }
    match kind {
        Some("append") => {
            if let Some(tip) = height.and_then(|h| h.parse::<u64>().ok()) {
                inner.standbys.note_committed(tip);
            }
        }
        // Heights heard of or served above the tip may be gone now, and a standby may still
        // serve the removed blocks until it has replayed the rollback.
        Some("rollback") => {
            inner.standbys.forget_observed();
            inner.standbys.note_rewritten(super::standby::REWRITING);
        }
        _ => {}
    }
}

/// Reloads the chain state and wakes the service's subscribers when it moved.
async fn refresh(inner: &Inner) -> Outcome<()> {
    let chain = inner.load().await?;
    let before = inner.snapshot().map(|c| c.seq);
    inner.standbys.settle_rewritten(chain.seq);
    inner.install(chain);
    if inner.snapshot().map(|c| c.seq) != before {
        inner.wake();
    }
    Ok(())
}

async fn resync(inner: &Inner) -> Outcome<()> {
    let floor = inner.snapshot().map_or(0, |c| c.floor);
    inner.cache.forget_above(floor);
    refresh(inner).await
}
