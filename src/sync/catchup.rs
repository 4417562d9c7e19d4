//! Catch-up: fetches and commits the blocks between our tip and a target height,
//! overlapping the two. Up to [`PIPELINE`] range requests (each decoded and parsed, and its
//! blocks' stored form built, on a blocking thread) run while the ledger commits the batches
//! before them; batches already waiting when a commit ends are merged into the next one, so
//! the store's fsync is paid per large group whenever committing is the bottleneck.

use super::client::Upstream;
use super::error::{SyncError, code};
use super::follower::{Follower, Round};
use crate::chain::{self, Failure};
use crate::ledger::{Prepared, WriteError};
use crate::quarantine::Origin;
use crate::store::BlockMeta;
use serde_json::{Value, json};
use std::collections::VecDeque;
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
/// built, possibly cut short by a block that does not even parse.
struct Fetched {
    first: u64,
    asked: u64,
    blocks: Vec<Prepared>,
    unparsable: Option<(Value, Vec<Failure>)>,
}

impl Fetched {
    fn end(&self) -> u64 {
        self.first + self.blocks.len() as u64
    }

    /// Every asked block arrived and parsed: the next batch may be merged into this one.
    fn complete(&self) -> bool {
        self.unparsable.is_none() && self.blocks.len() as u64 == self.asked
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
            while inflight.len() < PIPELINE && requested <= last {
                let n = u64::from(self.settings.batch).min(last - requested + 1);
                inflight.push_back(fetch(client.clone(), requested, n));
                requested += n;
            }
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

/// Starts fetching `n` blocks from `from` in the background; dropping the handle cancels it.
fn fetch(client: Arc<Upstream>, from: u64, n: u64) -> Pending {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let limit = u32::try_from(n).unwrap_or(u32::MAX);
        let bodies = client.blocks(from, limit).await?;
        tokio::task::spawn_blocking(move || parse(bodies.decode()?, from, n))
            .await
            .map_err(|e| SyncError::new(code::FAILED, format!("block parsing task failed: {e}")))?
    }))
}

/// Parses decoded documents into blocks and builds their stored form, stopping at the first
/// that does not parse.
fn parse(values: Vec<Value>, from: u64, asked: u64) -> Result<Fetched, SyncError> {
    let mut fetched = Fetched {
        first: from,
        asked,
        blocks: Vec::with_capacity(values.len()),
        unparsable: None,
    };
    for (value, expected) in values.into_iter().zip(from..from + asked) {
        match chain::parse_block(&value) {
            Ok(block) if block.height == expected => fetched.blocks.push(Prepared::new(block)),
            Ok(block) => {
                return Err(SyncError::new(
                    code::FAILED,
                    format!(
                        "upstream answered blocks from {from} with height {} where {expected} was due",
                        block.height
                    ),
                ));
            }
            Err(failures) => {
                fetched.unparsable = Some((value, failures));
                break;
            }
        }
    }
    Ok(fetched)
}

async fn joined(pending: Pending) -> Result<Fetched, SyncError> {
    pending
        .await
        .map_err(|e| SyncError::new(code::FAILED, format!("block fetch task failed: {e}")))?
}
