//! Catch-up: fetches and commits the blocks between our tip and a target height,
//! overlapping the two. Up to [`PIPELINE`] range requests (each decoded and parsed, and its
//! blocks' stored form built, on a blocking thread) run while the ledger commits the batches
//! before them; batches already waiting when a commit ends are merged into the next one, so
//! the store's fsync is paid per large group whenever committing is the bottleneck.
//!
//! Replies are decoded straight into blocks, one element at a time, never into a JSON tree of
//! the whole reply. A batch stops at the first block that cannot be stored: block by block, a
//! block that fails a check it can fail on its own (hash, merkle root, signature, link to the
//! block before it) ends the fetch there, so an upstream that serves no valid block costs one
//! request per fetch, not one per height.

use super::client::{Body, Upstream};
use super::error::{SyncError, code};
use super::follower::{Follower, Round};
use crate::chain::{self, Failure};
use crate::ledger::{Prepared, WriteError};
use crate::quarantine::Origin;
use crate::store::BlockMeta;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

/// Most blocks one round catches up before it polls the upstream tip again.
pub const ROUND_MAX_BLOCKS: u64 = 50_000;
/// Range requests in flight while committing.
pub const PIPELINE: usize = 4;
/// Most blocks merged into one ledger append.
const MAX_COMMIT: usize = 1000;

/// A fetched and parsed batch: consecutive blocks from `first`, their stored form already
/// built, possibly cut short by a block that does not even parse or cannot be stored.
struct Fetched {
    first: u64,
    asked: u64,
    blocks: Vec<Prepared>,
    unparsable: Option<(Value, Vec<Failure>)>,
    /// The last block fails a check it fails whatever our chain holds: the ledger will refuse
    /// it, so nothing after it was fetched.
    doomed: bool,
}

impl Fetched {
    fn new(first: u64, asked: u64) -> Self {
        Self {
            first,
            asked,
            blocks: Vec::new(),
            unparsable: None,
            doomed: false,
        }
    }

    fn end(&self) -> u64 {
        self.first + self.blocks.len() as u64
    }

    /// Every asked block arrived and parsed: the next batch may be merged into this one.
    fn complete(&self) -> bool {
        self.unparsable.is_none() && !self.doomed && self.blocks.len() as u64 == self.asked
    }

    /// Nothing more belongs in this batch.
    fn stopped(&self) -> bool {
        self.unparsable.is_some() || self.doomed || self.blocks.len() as u64 >= self.asked
    }

    /// Parses the next block document (`value`, parsed from the JSON text `raw`); `alone` also
    /// runs the checks a block fails on its own.
    fn offer(&mut self, raw: &[u8], value: Value, alone: bool) -> Result<(), SyncError> {
        let expected = self.end();
        match chain::parse_block(&value) {
            Ok(block) if block.height == expected => {
                // As for a submitted block: an amount the parsed number does not hold exactly
                // (a 30-digit integer) would be stored as another number, so the block is
                // refused, never stored rounded.
                let inexact = chain::amount::check_written_amounts(raw, &block.transactions);
                if !inexact.is_empty() {
                    self.unparsable = Some((value, inexact));
                    return Ok(());
                }
                self.doomed = alone && self.fails_alone(&block);
                self.blocks.push(Prepared::new(block));
                Ok(())
            }
            Ok(block) => Err(SyncError::new(
                code::FAILED,
                format!(
                    "upstream answered blocks from {} with height {} where {expected} was due",
                    self.first, block.height
                ),
            )),
            Err(failures) => {
                self.unparsable = Some((value, failures));
                Ok(())
            }
        }
    }

    /// Checks that need no chain: the ledger runs them again, with the rest, and refuses.
    fn fails_alone(&self, b: &chain::Block) -> bool {
        let parent = match self.blocks.last() {
            Some(p) => Some(p.block().hash.as_str()),
            None if b.height == 0 => Some(chain::ZERO_HASH),
            None => None,
        };
        b.signature.is_empty()
            || b.hash.is_empty()
            || parent.is_some_and(|p| p != b.previous_hash)
            || b.computed_merkle_root() != b.merkle_root
            || b.computed_hash() != b.hash
    }
}

type Pending = AbortOnDropHandle<Result<Fetched, SyncError>>;

impl Follower {
    /// Fetches and commits from above `tip` towards `target`, pipelined.
    pub(super) async fn catch_up(
        &mut self,
        client: &Arc<Upstream>,
        tip: Option<BlockMeta>,
        target: u64,
    ) -> Result<Round, SyncError> {
        let first = tip.as_ref().map_or(0, |t| t.height + 1);
        let last = target.min(first + ROUND_MAX_BLOCKS - 1);
        let mut linked: Option<(u64, String)> = tip.map(|t| (t.height, t.hash));
        let mut next = first;
        let mut requested = first;
        let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(PIPELINE);
        let mut carried: Option<Result<Fetched, SyncError>> = None;
        // Where a catch-up spends its time, for the debug log: waiting on upstream (fetch and
        // parse) versus waiting on the ledger (validation and durable commits).
        let round_started = Instant::now();
        let (mut on_fetch, mut on_commit, mut commits) = (Duration::ZERO, Duration::ZERO, 0u32);
        loop {
            let size = self.settings.batch.min(client.range_cap());
            top_up(&mut inflight, &mut requested, last, client, size);
            let waited = Instant::now();
            let result = match carried.take() {
                Some(r) => r,
                None => match inflight.pop_front() {
                    Some(pending) => joined(pending).await,
                    None => break,
                },
            };
            on_fetch += waited.elapsed();
            let mut batch = result?;
            while batch.complete() && batch.blocks.len() < MAX_COMMIT {
                match inflight.front() {
                    Some(p) if p.is_finished() => {}
                    _ => break,
                }
                let Some(pending) = inflight.pop_front() else {
                    break;
                };
                match joined(pending).await {
                    Ok(more) if more.first == batch.end() => {
                        batch.asked += more.asked;
                        batch.blocks.extend(more.blocks);
                        batch.unparsable = more.unparsable;
                    }
                    other => {
                        carried = Some(other);
                        break;
                    }
                }
            }
            if batch.first != next {
                // A short batch earlier left the requests in flight misaligned: refetch.
                inflight.clear();
                carried = None;
                requested = next;
                continue;
            }
            if let (Some(block), Some((height, hash))) = (batch.blocks.first(), &linked)
                && block.block().previous_hash != *hash
            {
                // Upstream's next block builds on a different block at our tip: a fork, unless
                // upstream holds our tip too, and then that block is simply invalid.
                tracing::info!(
                    height = *height,
                    "upstream's next block does not link to our tip"
                );
                drop(inflight);
                let (height, block) = (*height, block.block().clone());
                return match self.fork(client, height, height).await? {
                    Some(round) => Ok(round),
                    None => {
                        let failure =
                            Failure::new(chain::validate::code::LINKAGE, "Previous hash mismatch")
                                .at("previous_hash");
                        let body =
                            serde_json::from_slice(&block.served_json()).unwrap_or(Value::Null);
                        Err(self.invalid(block.height, body, vec![failure]).await)
                    }
                };
            }
            let complete = batch.complete();
            if complete {
                // The batches merged into this one left room: refilled now, the fetches run
                // during the commit instead of idling until it returns.
                top_up(&mut inflight, &mut requested, last, client, size);
            }
            let got = batch.blocks.len() as u64;
            let waited = Instant::now();
            self.commit(&mut batch, &mut linked).await?;
            on_commit += waited.elapsed();
            commits += 1;
            next += got;
            if let Some((body, failures)) = batch.unparsable.take() {
                return Err(self.invalid(next, body, failures).await);
            }
            if !complete {
                if got == 0 && next == first {
                    return Err(SyncError::new(
                        code::FETCH,
                        format!(
                            "upstream {} reports height {target} but served no block at {next}",
                            client.shown()
                        ),
                    ));
                }
                if got == 0 {
                    return Ok(Round::Progress);
                }
                // Upstream sent fewer than asked (a smaller range cap, or its tip moved back):
                // continue from what arrived.
                inflight.clear();
                carried = None;
                requested = next;
            }
        }
        tracing::debug!(
            from = first,
            to = next.saturating_sub(1),
            seconds = round_started.elapsed().as_secs_f64(),
            waiting_on_upstream = on_fetch.as_secs_f64(),
            waiting_on_commits = on_commit.as_secs_f64(),
            commits,
            "catch-up round done"
        );
        Ok(if next > target {
            Round::Level
        } else {
            Round::Progress
        })
    }

    /// Appends a batch through the ledger; an invalid block ends the round after its valid
    /// prefix is stored.
    async fn commit(
        &mut self,
        batch: &mut Fetched,
        linked: &mut Option<(u64, String)>,
    ) -> Result<(), SyncError> {
        if batch.blocks.is_empty() {
            return Ok(());
        }
        let hashes: Vec<(u64, String)> = batch
            .blocks
            .iter()
            .map(|p| (p.block().height, p.block().hash.clone()))
            .collect();
        let blocks = std::mem::take(&mut batch.blocks);
        let appended = self
            .ledger
            .append_prepared(blocks)
            .await
            .map_err(|e| match e {
                WriteError::Closed => SyncError::new(code::FAILED, "the block writer has stopped"),
                e => SyncError::new(code::FAILED, format!("cannot store upstream blocks: {e}")),
            })?;
        if appended.committed > 0 {
            *linked = hashes.get(appended.committed - 1).cloned();
            // Fetched from upstream just now: upstream's block, byte for byte.
            self.confirmed.clone_from(linked);
            self.shared
                .record_commit(appended.committed, Instant::now());
        }
        if let Some((_, block, failures)) = appended.rejected {
            let body: Value = serde_json::from_slice(&block.served_json()).unwrap_or(Value::Null);
            return Err(self.invalid(block.height, body, failures).await);
        }
        Ok(())
    }

    /// Quarantines an invalid upstream block (once per block) and says why the round stopped.
    async fn invalid(&mut self, height: u64, body: Value, failures: Vec<Failure>) -> SyncError {
        let summary: Vec<String> = failures.iter().map(ToString::to_string).collect();
        let error = SyncError::new(
            code::FAILED,
            format!(
                "upstream block {height} is invalid and was not stored ({})",
                summary.join("; ")
            ),
        );
        let key = body
            .get("hash")
            .and_then(Value::as_str)
            .map_or_else(|| format!("height {height}"), str::to_owned);
        if self.last_quarantined.as_deref() != Some(key.as_str()) {
            self.last_quarantined = Some(key);
            let quarantine = self.quarantine.clone();
            let errors = json!(failures);
            let reason = format!("invalid upstream block at height {height}");
            let _ = tokio::task::spawn_blocking(move || {
                quarantine.reject(Origin::Upstream, &reason, errors, &body)
            })
            .await;
        }
        error
    }
}

/// Starts fetches of `size` blocks from `requested` until [`PIPELINE`] are in flight or the
/// round's `last` height is asked for.
fn top_up(
    inflight: &mut VecDeque<Pending>,
    requested: &mut u64,
    last: u64,
    client: &Arc<Upstream>,
    size: u32,
) {
    while inflight.len() < PIPELINE && *requested <= last {
        let n = u64::from(size).min(last - *requested + 1);
        inflight.push_back(fetch(client.clone(), *requested, n));
        *requested += n;
    }
}

/// Starts fetching `n` blocks from `from` in the background; dropping the handle cancels it.
fn fetch(client: Arc<Upstream>, from: u64, n: u64) -> Pending {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let limit = u32::try_from(n).unwrap_or(u32::MAX);
        let mut fetched = Fetched::new(from, n);
        if let Some(body) = client.range(from, limit).await? {
            return blocking(move || decode_range(&body, fetched)).await;
        }
        // Block by block: each parsed and checked before the next is asked for.
        for height in from..from.saturating_add(n) {
            let Some(body) = client.block(height).await? else {
                break;
            };
            fetched = blocking(move || {
                let value = serde_json::from_slice(body.bytes())
                    .map_err(|e| malformed("block JSON", &e))?;
                fetched.offer(body.bytes(), value, true)?;
                drop(body);
                Ok(fetched)
            })
            .await?;
            if fetched.stopped() {
                break;
            }
        }
        Ok(fetched)
    }))
}

/// Runs CPU work (decoding, parsing, building stored forms) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::new(code::FAILED, format!("block parsing task failed: {e}")))?
}

fn malformed(what: &str, e: &serde_json::Error) -> SyncError {
    SyncError::new(code::FAILED, format!("upstream sent malformed {what}: {e}"))
}

/// Decodes a `{"blocks": [...]}` reply into `fetched`, one block document at a time (only one
/// is ever held as a JSON value), skipping what follows the first block that does not parse.
fn decode_range(body: &Body, mut fetched: Fetched) -> Result<Fetched, SyncError> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(body.bytes());
    RangeReply {
        fetched: &mut fetched,
        failed: &mut failed,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| malformed("block range JSON", &e))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(fetched),
    }
}

/// The range reply object: its `blocks` go through [`Blocks`], other fields are skipped.
struct RangeReply<'a> {
    fetched: &'a mut Fetched,
    failed: &'a mut Option<SyncError>,
}

impl<'de> DeserializeSeed<'de> for RangeReply<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RangeReply<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a blocks array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "blocks" && !seen {
                seen = true;
                map.next_value_seed(Blocks {
                    fetched: &mut *self.fetched,
                    failed: &mut *self.failed,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if seen {
            Ok(())
        } else {
            Err(serde::de::Error::missing_field("blocks"))
        }
    }
}

/// The `blocks` array, parsed element by element.
struct Blocks<'a> {
    fetched: &'a mut Fetched,
    failed: &'a mut Option<SyncError>,
}

impl<'de> DeserializeSeed<'de> for Blocks<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Blocks<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of blocks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            if self.fetched.stopped() || self.failed.is_some() {
                // The rest is read past without building anything.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                continue;
            }
            // The element's text is kept (borrowed from the reply) for the amount check.
            let Some(raw) = seq.next_element::<&'de RawValue>()? else {
                return Ok(());
            };
            let value: Value = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
            if let Err(e) = self.fetched.offer(raw.get().as_bytes(), value, false) {
                *self.failed = Some(e);
            }
        }
    }
}

async fn joined(pending: Pending) -> Result<Fetched, SyncError> {
    pending
        .await
        .map_err(|e| SyncError::new(code::FAILED, format!("block fetch task failed: {e}")))?
}
