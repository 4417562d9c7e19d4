//! Forks: when the upstream's block at a height we hold differs from ours, find the highest
//! block both chains share by walking back through upstream headers, and — when that loses at
//! most `max_reorg_depth` of our blocks and none at or below the store's finality floor — roll
//! back to it in one atomic step and quarantine the orphans. A deeper fork is reported, never
//! rolled back; so is one that comes while reorgs are damped.

use super::client::Upstream;
use super::error::{SyncError, code};
use crate::chain;
use crate::ledger::Ledger;
use crate::quarantine::Quarantine;
use crate::store::reads::off_runtime;
use crate::store::{BlockReads, BlockRecord, Order};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Headers compared per upstream request while walking back.
const PAGE: u64 = 500;

/// What resolving a fork did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Our blocks above `ancestor` were removed and quarantined.
    RolledBack {
        /// The highest height both chains share.
        ancestor: u64,
        /// Blocks removed.
        depth: u64,
    },
    /// Upstream holds our tip after all (it changed meanwhile): nothing to undo.
    NoFork,
    /// No shared block within `max_reorg_depth` of our tip, or above the finality floor:
    /// nothing was changed.
    Diverged(SyncError),
    /// A rollback was due but reorgs are damped: nothing was changed.
    Damped(SyncError),
}

/// Everything fork resolution touches.
pub struct Forks<'a> {
    /// The upstream.
    pub client: &'a Upstream,
    /// Our blocks (read).
    pub store: &'a Arc<dyn BlockReads>,
    /// The write path (rollback).
    pub ledger: &'a Ledger,
    /// Where orphans go.
    pub quarantine: &'a Arc<Quarantine>,
    /// Deepest rollback allowed.
    pub max_depth: u64,
    /// `Some(room)` while reorgs are damped: a fork is found but not rolled back, and the
    /// damping window has room again after `room`.
    pub damped: Option<std::time::Duration>,
}

impl Forks<'_> {
    /// Resolves a fork noticed at height `at` (ours there differs from upstream's, or
    /// upstream's next block does not link to it), with our tip at `tip`.
    pub async fn resolve(&self, tip: u64, at: u64) -> Result<Resolution, SyncError> {
        let finality = self.finality_floor().await?;
        // Never below the floor, however the fork is reached: several reorgs each within
        // max_reorg_depth of a lower tip would otherwise sink below a block served immutable.
        let floor = tip.saturating_sub(self.max_depth).max(finality);
        let ancestor = self.common_ancestor(at.min(tip), floor).await?;
        let Some(ancestor) = ancestor else {
            let why = if finality > tip.saturating_sub(self.max_depth) {
                format!(
                    "it would replace final blocks: nothing at or below the finality floor \
                     ({finality}) is ever rolled back"
                )
            } else {
                format!(
                    "the fork is deeper than synchronization.max_reorg_depth ({})",
                    self.max_depth
                )
            };
            return Ok(Resolution::Diverged(SyncError::new(
                code::DIVERGED,
                format!(
                    "upstream {} shares no block with ours between heights {floor} and {at}: \
                     {why}; sync stopped, nothing was rolled back",
                    self.client.shown(),
                ),
            )));
        };
        if ancestor >= tip {
            return Ok(Resolution::NoFork);
        }
        if let Some(room) = self.damped {
            return Ok(Resolution::Damped(SyncError::new(
                code::FAILED,
                format!(
                    "upstream {} forked again above height {ancestor}: more than \
                     synchronization.max_reorgs_per_window rollbacks within \
                     synchronization.reorg_window_seconds, so this one is not made (the window \
                     has room again in {:.0} s); sync stalled, nothing was rolled back",
                    self.client.shown(),
                    room.as_secs_f64()
                ),
            )));
        }
        let orphans = self
            .ledger
            .rollback_above(ancestor)
            .await
            .map_err(|e| SyncError::new(code::FAILED, format!("fork rollback failed: {e}")))?;
        let depth = orphans.len() as u64;
        tracing::warn!(ancestor, depth, upstream = %self.client.shown(), "fork resolved: rolled back to the common ancestor");
        self.quarantine_orphans(orphans, ancestor).await;
        Ok(Resolution::RolledBack { ancestor, depth })
    }

    /// The highest height in `floor..=from` where both chains hold the same block.
    async fn common_ancestor(&self, from: u64, floor: u64) -> Result<Option<u64>, SyncError> {
        if from < floor {
            return Ok(None);
        }
        let mut hi = from;
        loop {
            let lo = hi.saturating_sub(PAGE - 1).max(floor);
            let theirs: HashMap<u64, String> =
                self.client.hashes(lo, hi).await?.into_iter().collect();
            let ours = self.our_hashes(lo, hi).await?;
            // Equal hashes are not proof of equal blocks (the hash does not cover every
            // field): a height counts as shared once upstream's block there is ours byte for
            // byte. Only heights whose hashes match are fetched, so this costs a block or two.
            for h in (lo..=hi).rev() {
                if ours.get(&h).is_some_and(|o| theirs.get(&h) == Some(o))
                    && same_block(self.client, self.store, h).await?
                {
                    return Ok(Some(h));
                }
            }
            if lo <= floor {
                return Ok(None);
            }
            hi = lo - 1;
        }
    }

    async fn finality_floor(&self) -> Result<u64, SyncError> {
        off_runtime(self.store, |store| store.finality_floor())
            .await
            .map_err(|e| {
                SyncError::new(code::FAILED, format!("cannot read the finality floor: {e}"))
            })
    }

    async fn our_hashes(&self, lo: u64, hi: u64) -> Result<HashMap<u64, String>, SyncError> {
        let n = (hi - lo + 1) as usize;
        let metas = off_runtime(self.store, move |store| {
            store.metas(lo, hi, Order::Asc, 0, n)
        })
        .await
        .map_err(|e| SyncError::new(code::FAILED, format!("cannot read our blocks: {e}")))?;
        Ok(metas.into_iter().map(|m| (m.height, m.hash)).collect())
    }

    async fn quarantine_orphans(&self, orphans: Vec<BlockRecord>, ancestor: u64) {
        let quarantine = self.quarantine.clone();
        let upstream = self.client.shown().to_string();
        let depth = orphans.len();
        let written = tokio::task::spawn_blocking(move || {
            for record in orphans {
                let body: Value = serde_json::from_slice(&record.body).unwrap_or(Value::Null);
                quarantine.put(
                    &format!(
                        "orphaned by fork: upstream replaced the blocks above height {ancestor}"
                    ),
                    json!({"common_ancestor": ancestor, "depth": depth, "upstream": upstream}),
                    &body,
                );
            }
        })
        .await;
        if written.is_err() {
            tracing::warn!("quarantining orphaned blocks failed");
        }
    }
}

/// Whether upstream's block at `height` is the block we store there, compared by its stored
/// form (every field, every transaction, every amount as written), not by its claimed hash.
/// `false` when upstream has no block there; an error when what it serves there is not a
/// block we could store (it is not ours, and not a reason to roll ours back either).
pub(super) async fn same_block(
    client: &Upstream,
    store: &Arc<dyn BlockReads>,
    height: u64,
) -> Result<bool, SyncError> {
    let Some(theirs) = client.block(height).await? else {
        return Ok(false);
    };
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let invalid = |why: String| {
            SyncError::new(
                code::FAILED,
                format!("upstream block {height} cannot be compared with ours: {why}"),
            )
        };
        let value: Value = serde_json::from_slice(theirs.bytes())
            .map_err(|e| invalid(format!("it is not JSON ({e})")))?;
        let block = chain::parse_block(&value).map_err(|failures| {
            let summary: Vec<String> = failures.iter().map(ToString::to_string).collect();
            invalid(summary.join("; "))
        })?;
        if block.height != height {
            return Err(invalid(format!("it claims height {}", block.height)));
        }
        if !chain::amount::check_written_amounts(theirs.bytes(), &block.transactions).is_empty() {
            // Its amounts are not numbers ours could hold, so they are not ours.
            return Ok(false);
        }
        let ours = store
            .body_at(height)
            .map_err(|e| SyncError::new(code::FAILED, format!("cannot read our blocks: {e}")))?;
        Ok(ours.is_some_and(|ours| ours == block.served_json()))
    })
    .await
    .map_err(|e| SyncError::new(code::FAILED, format!("block comparison task failed: {e}")))?
}
