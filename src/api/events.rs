//! `GET /api/v1/events` (also `/api/v1/blocks/events`): a Server-Sent Events stream of the
//! chain — `block` events in chain order, a `reorg` when a rollback replaces blocks already
//! sent, `resync` when a client's position cannot be placed.
//!
//! Every stream reads its blocks from the store, in bounded pages, from the position it last
//! sent; the ledger's commit notifications only wake it. So a replay, a live tail and a slow
//! subscriber catching up are one code path, the writer never waits for a subscriber, and no
//! event is ever lost: the store is the log. A fork is noticed when the block last sent is no
//! longer at its height, and placed through the store's rollback log. Live streams share the
//! newest blocks' frames (`tail`): one store read per change serves all of them.

use crate::api::request::{Params, bad_param};
use crate::api::state::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{BlockStore, Order, Position, StoreError};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod tail;
use tail::Tail;

/// Reconnection delay advised to clients (`retry:`), in milliseconds.
const RETRY_MS: u64 = 2000;
/// Full blocks read per page; a page is also cut at [`PAGE_BYTES`] (or `api.max_response_bytes`
/// when lower), and always holds at least one block.
const PAGE_BLOCKS: usize = 100;
/// Bytes of bodies one stream reads per page. Smaller than a `range` page: every open stream
/// may be catching up at once, and each holds its page while the client reads it.
const PAGE_BYTES: usize = 1024 * 1024;
/// Headers read per page of a `?thin=1` stream.
const PAGE_HEADERS: usize = 500;
/// Frames queued between a stream's reader and the connection. Small: the backlog of a slow
/// client stays in the store, not in memory.
const QUEUED_FRAMES: usize = 8;
/// How far behind the tip a live subscriber may fall before it counts as lagging.
const LAG_BLOCKS: u64 = PAGE_BLOCKS as u64;

/// The streams open in this process, the newest blocks they share, and what ends them.
pub struct Hub {
    open: AtomicUsize,
    shutdown: CancellationToken,
    full: Arc<Tail>,
    thin: Arc<Tail>,
}

impl Hub {
    /// A hub whose streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            open: AtomicUsize::new(0),
            shutdown,
            full: Arc::default(),
            thin: Arc::default(),
        }
    }

    /// Takes a stream slot, or `None` at `max` streams.
    fn admit(self: &Arc<Self>, max: usize, metrics: &Arc<Metrics>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics.event_streams_open.inc();
        Some(Slot {
            hub: self.clone(),
            metrics: metrics.clone(),
        })
    }
}

/// One open stream; frees its slot when dropped.
struct Slot {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.event_streams_open.dec();
    }
}

/// Where a new stream begins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// After this block (`Last-Event-ID`).
    After(Position),
    /// At this height, inclusive (`?from=`).
    From(u64),
    /// With the next block committed.
    Live,
}

/// The next block a stream sends, and the block it must link to (when known).
#[derive(Debug, Clone)]
struct Cursor {
    next: u64,
    prev: Option<Position>,
}

/// Parses `<height>:<hash>` (a 64-character lowercase hex hash).
fn parse_position(raw: &str) -> Option<Position> {
    let (height, hash) = raw.split_once(':')?;
    let height_ok = !height.is_empty() && height.bytes().all(|b| b.is_ascii_digit());
    let hash_ok = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !height_ok || !hash_ok {
        return None;
    }
    Some(Position::new(height.parse().ok()?, hash))
}

/// The stream's start from the `Last-Event-ID` header and the `from` parameter; the header
/// wins, since it is what a reconnecting client sends.
fn start_of(headers: &HeaderMap, p: &Params) -> Result<Start, ApiError> {
    let from = p.opt_int("from", u64::MAX)?;
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(from.map_or(Start::Live, Start::From));
    };
    let malformed = |value: &str| {
        ApiError::bad_request(format!(
            "Invalid Last-Event-ID '{value}': expected <height>:<64 hex hash>"
        ))
        .info(json!({"header": "Last-Event-ID", "value": value}))
    };
    let text = raw.to_str().map_err(|_| malformed("(not text)"))?.trim();
    if text.is_empty() {
        // What a client without a position sends: treated as absent.
        return Ok(from.map_or(Start::Live, Start::From));
    }
    parse_position(text)
        .map(Start::After)
        .ok_or_else(|| malformed(text))
}

/// `thin=1` (or `true`): header-only block events.
fn thin_of(p: &Params) -> Result<bool, ApiError> {
    match p.get("thin") {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") | Some("") => Ok(true),
        Some(other) => Err(bad_param("thin", other, "expected 1, true, 0 or false")),
    }
}

/// GET /api/v1/events
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let thin = thin_of(&p)?;
    let start = start_of(&headers, &p)?;
    let max = state.config.api.max_event_streams;
    let Some(slot) = state.events.admit(max, &state.metrics) else {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SRV_003")
            .msg(format!(
                "Too many event streams open ({max}, api.max_event_streams); retry later"
            ))
            .info(json!({"max_event_streams": max}));
        e.retry_after = Some(1);
        return Err(e);
    };
    // A stream holds its connection for as long as it runs, so it also claims one of the
    // connection slots kept for long-lived answers: short requests and probes keep the rest.
    let Some(connection) = state.connections.try_stream_slot() else {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SRV_003")
            .msg("Too many connections held by event streams (api.max_connections); retry later")
            .info(json!({"max_connections": state.connections.capacity()}));
        e.retry_after = Some(1);
        return Err(e);
    };
    let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
    let feed = Feed {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        ledger: state.ledger.clone(),
        tail: if thin {
            state.events.thin.clone()
        } else {
            state.events.full.clone()
        },
        thin,
        budget: state.config.api.max_response_bytes.min(PAGE_BYTES),
        keepalive: Duration::from_secs_f64(state.config.api.event_keepalive_seconds),
        shutdown: state.events.shutdown.clone(),
        tx,
    };
    tokio::spawn(async move {
        let _slots = (slot, connection);
        if let Err(e) = feed.run(start).await {
            // The stream ends; the client resumes by Last-Event-ID once the store answers.
            tracing::error!(error = %e, "event stream ended: the store could not be read");
        }
    });
    let mut res = Response::new(Body::from_stream(Frames(rx)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise hold events back to fill a buffer.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// The connection's side of a stream's queue.
struct Frames(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Frames {
    type Item = Result<Bytes, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// Why a stream's feed stopped early.
enum Stop {
    /// The client left or the service is shutting down: nothing to report.
    Gone,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// One event, ready to send.
#[derive(Clone)]
struct Event {
    kind: &'static str,
    /// Its id: the block, or a reorg's ancestor.
    at: Position,
    frame: Bytes,
}

fn event(kind: &'static str, id: &Position, data: &[u8]) -> Event {
    let mut f = Vec::with_capacity(data.len() + 100);
    f.extend_from_slice(format!("id: {}:{}\nevent: {kind}\ndata: ", id.height, id.hash).as_bytes());
    f.extend_from_slice(data);
    f.extend_from_slice(b"\n\n");
    Event {
        kind,
        at: id.clone(),
        frame: f.into(),
    }
}

/// A page read from the store.
enum Page {
    /// Block events from the cursor on (empty at the tip), and the cursor after them.
    Blocks(Vec<Event>, Cursor),
    /// The block last sent is no longer on the chain.
    Forked(Position),
}

/// The fields a block event needs from a stored body.
#[derive(Deserialize)]
struct Link {
    height: u64,
    hash: String,
    previous_hash: String,
}

/// Reads the next page after `cursor`. Each block must link to the one before it, which
/// also catches a rollback that happens between the reads.
fn read_page(
    store: &dyn BlockStore,
    cursor: &Cursor,
    thin: bool,
    budget: usize,
) -> Result<Page, StoreError> {
    if let Some(prev) = &cursor.prev {
        match store.meta_at(prev.height)? {
            Some(m) if m.hash == prev.hash => {}
            _ => return Ok(Page::Forked(prev.clone())),
        }
    }
    let mut events = Vec::new();
    let mut after = cursor.clone();
    let mut take = |link: &Link, data: &[u8]| -> bool {
        let linked = after
            .prev
            .as_ref()
            .is_none_or(|p| p.height + 1 == link.height && p.hash == link.previous_hash);
        if !linked || link.height != after.next {
            return false;
        }
        let at = Position::new(link.height, link.hash.clone());
        events.push(event("block", &at, data));
        after = Cursor {
            next: link.height + 1,
            prev: Some(at),
        };
        true
    };
    if thin {
        let metas = store.metas(cursor.next, u64::MAX, Order::Asc, 0, PAGE_HEADERS)?;
        for m in &metas {
            let data = serde_json::to_vec(&crate::api::blocks::HeaderOut::from(m))
                .map_err(|e| StoreError::Read(format!("cannot encode a header: {e}")))?;
            let link = Link {
                height: m.height,
                hash: m.hash.clone(),
                previous_hash: m.previous_hash.clone(),
            };
            if !take(&link, &data) {
                break;
            }
        }
    } else {
        for body in store.bodies(cursor.next, PAGE_BLOCKS, budget)? {
            let link: Link = serde_json::from_slice(&body)
                .map_err(|e| StoreError::Corrupt(format!("a stored body is unreadable: {e}")))?;
            if !take(&link, &body) {
                break;
            }
        }
    }
    if events.is_empty() && cursor.prev.is_some() {
        // Nothing linked on: either the tip, or the block sent was replaced after the check.
        if let Some(prev) = &cursor.prev
            && store
                .meta_at(prev.height)?
                .is_none_or(|m| m.hash != prev.hash)
        {
            return Ok(Page::Forked(prev.clone()));
        }
    }
    Ok(Page::Blocks(events, after))
}

/// What the rollback log says about a position that is not on the chain.
enum Placed {
    /// Its chain and ours part at `ancestor`, which is on the chain.
    Reorg {
        ancestor: Position,
        old_tip: Position,
    },
    /// It is on the chain after all.
    OnChain,
    /// The log does not know it.
    Unknown,
}

/// Follows the rollback log from `lost` down to a block that is still on the chain.
fn place(store: &dyn BlockStore, lost: &Position) -> Result<Placed, StoreError> {
    let log = store.rollback_log()?;
    let mut at = lost.clone();
    let mut old_tip = None;
    // Each step moves below a rollback's ancestor, so at most one step per entry.
    for _ in 0..=log.len() {
        if store.meta_at(at.height)?.is_some_and(|m| m.hash == at.hash) {
            return Ok(match old_tip {
                Some(old_tip) => Placed::Reorg {
                    ancestor: at,
                    old_tip,
                },
                // Back on the chain already (a flapping upstream restored it): nothing to undo.
                None => Placed::OnChain,
            });
        }
        let Some(entry) = log.iter().find(|r| {
            at.height > r.ancestor.height
                && r.orphaned
                    .get((at.height - r.ancestor.height - 1) as usize)
                    .is_some_and(|h| *h == at.hash)
        }) else {
            return Ok(Placed::Unknown);
        };
        old_tip.get_or_insert_with(|| entry.old_tip.clone());
        at = entry.ancestor.clone();
    }
    Ok(Placed::Unknown)
}

/// A resolved position that is not on the chain: the event to send and where to go on from.
fn resolve(
    store: &dyn BlockStore,
    lost: &Position,
    past_tip_is_live: bool,
) -> Result<(Option<Event>, Cursor), StoreError> {
    let placed = place(store, lost)?;
    let tip = store.tip()?;
    let tip_pos = tip
        .as_ref()
        .map(|t| Position::new(t.height, t.hash.clone()));
    match placed {
        Placed::OnChain => Ok((
            None,
            Cursor {
                next: lost.height + 1,
                prev: Some(lost.clone()),
            },
        )),
        Placed::Reorg { ancestor, old_tip } => {
            let new_tip = tip_pos.unwrap_or_else(|| ancestor.clone());
            let data = json!({
                "ancestor": {"height": ancestor.height, "hash": ancestor.hash},
                "depth": old_tip.height.saturating_sub(ancestor.height),
                "old_tip": {"height": old_tip.height, "hash": old_tip.hash},
                "new_tip": {"height": new_tip.height, "hash": new_tip.hash},
            });
            let ev = event("reorg", &ancestor, data.to_string().as_bytes());
            let cursor = Cursor {
                next: ancestor.height + 1,
                prev: Some(ancestor),
            };
            Ok((Some(ev), cursor))
        }
        Placed::Unknown
            if past_tip_is_live && tip_pos.as_ref().is_none_or(|t| lost.height > t.height) =>
        {
            // A position past the tip: stream live from there.
            Ok((
                None,
                Cursor {
                    next: lost.height.saturating_add(1),
                    prev: None,
                },
            ))
        }
        Placed::Unknown => {
            // Nothing to link to: the stream goes on from the next block, and the client
            // rebuilds what is below it (`/blocks/range`).
            let from_height = tip_pos.as_ref().map_or(0, |t| t.height + 1);
            let data = json!({"reason": "unknown position", "from_height": from_height});
            let id = tip_pos
                .clone()
                .unwrap_or_else(|| Position::new(0, crate::chain::ZERO_HASH));
            let mut ev = event("resync", &id, data.to_string().as_bytes());
            if tip_pos.is_none() {
                // No block to name yet: a resync without an id.
                let text = format!("event: resync\ndata: {data}\n\n");
                ev.frame = text.into_bytes().into();
            }
            Ok((
                Some(ev),
                Cursor {
                    next: from_height,
                    prev: tip_pos,
                },
            ))
        }
    }
}

/// One stream's reader: pages from the store to the connection.
struct Feed {
    store: Arc<dyn BlockStore>,
    metrics: Arc<Metrics>,
    ledger: crate::ledger::Ledger,
    tail: Arc<Tail>,
    thin: bool,
    budget: usize,
    keepalive: Duration,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Bytes>,
}

impl Feed {
    async fn run(self, start: Start) -> Result<(), StoreError> {
        match self.feed(start).await {
            Ok(()) | Err(Stop::Gone) => Ok(()),
            Err(Stop::Store(e)) => Err(e),
        }
    }

    /// Queues `frame`, unless the client left or the service is stopping.
    async fn send(&self, frame: Bytes) -> Result<(), Stop> {
        tokio::select! {
            sent = self.tx.send(frame) => sent.map_err(|_| Stop::Gone),
            _ = self.shutdown.cancelled() => Err(Stop::Gone),
        }
    }

    async fn send_event(&self, ev: Event) -> Result<(), Stop> {
        let kind = ev.kind;
        self.send(ev.frame).await?;
        self.metrics.events_sent.with_label_values(&[kind]).inc();
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlockStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Stop> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|_| Stop::Store(StoreError::Read("a store read panicked".into())))?
            .map_err(Stop::Store)
    }

    async fn feed(self, start: Start) -> Result<(), Stop> {
        let mut changes = self.ledger.changes();
        changes.borrow_and_update();
        self.send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await?;
        let mut cursor = match start {
            Start::Live => {
                let tip = self
                    .blocking(|s| Ok(s.tip()?.map(|m| Position::new(m.height, m.hash))))
                    .await?;
                Cursor {
                    next: tip.as_ref().map_or(0, |t| t.height + 1),
                    prev: tip,
                }
            }
            Start::From(h) => Cursor {
                next: h,
                prev: None,
            },
            Start::After(pos) => {
                let p = pos.clone();
                let on_chain = self
                    .blocking(move |s| Ok(s.meta_at(p.height)?.is_some_and(|m| m.hash == p.hash)))
                    .await?;
                if on_chain {
                    Cursor {
                        next: pos.height + 1,
                        prev: Some(pos),
                    }
                } else {
                    let (ev, cursor) = self.blocking(move |s| resolve(s, &pos, true)).await?;
                    if let Some(ev) = ev {
                        self.send_event(ev).await?;
                    }
                    cursor
                }
            }
        };
        // Live: at the tip since the last page. A live subscriber that falls behind is counted
        // once each time (it then catches up from the store like a replay).
        let mut live = false;
        loop {
            changes.borrow_and_update();
            loop {
                let now = *changes.borrow();
                let shared = self
                    .tail
                    .after(&self.store, &cursor, now, self.thin, self.budget)
                    .await?;
                let page = match shared {
                    Some(page) => page,
                    None => {
                        let (c, thin, budget) = (cursor.clone(), self.thin, self.budget);
                        self.blocking(move |s| read_page(s, &c, thin, budget))
                            .await?
                    }
                };
                match page {
                    Page::Blocks(events, after) if events.is_empty() => {
                        cursor = after;
                        live = true;
                        break;
                    }
                    Page::Blocks(events, after) => {
                        for ev in events {
                            self.send_event(ev).await?;
                        }
                        cursor = after;
                        let behind = self
                            .ledger
                            .tip_height()
                            .map_or(0, |t| t.saturating_sub(cursor.next));
                        if live && behind > LAG_BLOCKS {
                            live = false;
                            self.metrics.event_subscribers_lagged.inc();
                        }
                    }
                    Page::Forked(lost) => {
                        let (ev, next) = self.blocking(move |s| resolve(s, &lost, false)).await?;
                        if let Some(ev) = ev {
                            self.send_event(ev).await?;
                        }
                        cursor = next;
                    }
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The writer stopped: the service is shutting down.
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep(self.keepalive) => {
                    self.send(Bytes::from_static(b": keep-alive\n\n")).await?;
                }
                _ = self.tx.closed() => return Err(Stop::Gone),
                _ = self.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChainWriter;

    const H: &str = "9f2c0000000000000000000000000000000000000000000000000000000000ab";

    #[test]
    fn positions_parse_only_in_their_one_form() {
        assert_eq!(
            parse_position(&format!("1042:{H}")),
            Some(Position::new(1042, H))
        );
        for bad in [
            "",
            "1042",
            &format!("-1:{H}"),
            &format!("+1:{H}"),
            &format!(":{H}"),
            "1:abc",
            &format!("1:{}", H.to_uppercase()),
            &format!("1:{H}0"),
            &format!("99999999999999999999999:{H}"),
        ] {
            assert_eq!(parse_position(bad), None, "{bad}");
        }
    }

    fn record(height: u64, salt: u64) -> crate::store::BlockRecord {
        let hash = |h: u64| format!("{h:032x}{salt:032x}");
        let body = format!(r#"{{"height":{height},"salt":{salt}}}"#);
        crate::store::BlockRecord {
            meta: crate::store::BlockMeta {
                height,
                hash: hash(height),
                previous_hash: height.checked_sub(1).map_or("0".repeat(64), hash),
                merkle_root: "ab".repeat(32),
                timestamp: "t".into(),
                timestamp_micros: height as i64,
                producer: "p".into(),
                transaction_count: 0,
                block_size_bytes: body.len() as u64,
            },
            tx_ids: Vec::new(),
            body: body.into_bytes(),
        }
    }

    fn blocks(from: u64, to: u64, salt: u64) -> Vec<crate::store::BlockRecord> {
        (from..=to).map(|h| record(h, salt)).collect()
    }

    #[test]
    fn a_lost_position_is_placed_through_stacked_rollbacks_to_a_block_on_the_chain() {
        let dir = tempfile::TempDir::new().unwrap();
        let store =
            crate::store::RedbStore::open(&dir.path().join("b.redb"), 1 << 20).expect("open");
        store.append(&blocks(0, 10, 0)).unwrap();
        store.rollback_above(7).unwrap();
        store.append(&blocks(8, 9, 1)).unwrap();
        store.rollback_above(5).unwrap();
        store.append(&blocks(6, 12, 2)).unwrap();
        let at = |h: u64, salt: u64| Position::new(h, record(h, salt).meta.hash);

        // Orphaned by the first rollback, whose ancestor the second one orphaned in turn.
        match place(&store, &at(10, 0)).unwrap() {
            Placed::Reorg { ancestor, old_tip } => {
                assert_eq!(ancestor, at(5, 0));
                assert_eq!(old_tip, at(10, 0));
            }
            _ => panic!("not placed"),
        }
        match place(&store, &at(9, 1)).unwrap() {
            Placed::Reorg { ancestor, old_tip } => {
                assert_eq!((ancestor, old_tip), (at(5, 0), at(9, 1)));
            }
            _ => panic!("not placed"),
        }
        assert!(matches!(
            place(&store, &at(11, 2)).unwrap(),
            Placed::OnChain
        ));
        assert!(matches!(place(&store, &at(4, 9)).unwrap(), Placed::Unknown));

        // Resolved: the reorg event names the ancestor, the depth from the old tip, both tips.
        let (ev, cursor) = resolve(&store, &at(10, 0), false).unwrap();
        let ev = ev.expect("a reorg");
        assert_eq!(ev.kind, "reorg");
        let text = String::from_utf8(ev.frame.to_vec()).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(text.split("data: ").nth(1).unwrap().trim()).unwrap();
        assert_eq!(data["depth"], 5);
        assert_eq!(data["new_tip"]["height"], 12);
        assert_eq!((cursor.next, cursor.prev), (6, Some(at(5, 0))));
        // An unknown position at or below the tip: resync, going on after the tip.
        let (ev, cursor) = resolve(&store, &at(4, 9), true).unwrap();
        assert_eq!(ev.expect("a resync").kind, "resync");
        assert_eq!(cursor.next, 13);
        // Past the tip: live, no event.
        let (ev, cursor) = resolve(&store, &at(40, 9), true).unwrap();
        assert!(ev.is_none());
        assert_eq!((cursor.next, cursor.prev), (41, None));
    }

    #[test]
    fn an_event_frame_names_its_id_and_type_then_one_data_line() {
        let ev = event("block", &Position::new(7, H), br#"{"height":7}"#);
        assert_eq!(
            std::str::from_utf8(&ev.frame).unwrap(),
            format!("id: 7:{H}\nevent: block\ndata: {{\"height\":7}}\n\n")
        );
    }
}
