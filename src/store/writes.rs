//! [`ChainWriter`]: the chain's writes, held by the ledger alone. [`ChainWriter::begin`] gives
//! a [`WriteTxn`]: the chain's write lock, the tip as of that lock, the lookups validation
//! needs (batched: one per group, never a round trip per transaction), and the change
//! (append, rollback, genesis, finality floor), written by [`WriteTxn::commit`] in one durable
//! commit. Dropping a transaction writes nothing.
//!
//! Both engines stage the change in [`Staged`] and write it at commit through [`HeldChain`]:
//! the embedded engine holds its writer lock from `begin` to `commit`, so the tip cannot move
//! under the group; the PostgreSQL engine re-checks contiguity under its chain row lock in the
//! commit itself.
//!
//! Also here: [`QuarantineIndex`], the one write that is not the chain's.

use std::collections::HashSet;
use std::sync::Arc;

use super::tip::TipWatch;

use super::{BlockMeta, BlockRecord, StoreError};

/// The chain's writes: only the ledger holds it.
pub trait ChainWriter: Send + Sync + 'static {
    /// Begins a write transaction (see the module documentation).
    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError>;
    /// Begins a write transaction for a group whose transaction ids are `tx_ids`: an engine
    /// across a network looks them up in the round trip that takes the lock, so the
    /// transaction's [`WriteTxn::stored_tx_ids`] of them costs the lock's holder no wait.
    fn begin_for(&self, tx_ids: &[&str]) -> Result<Box<dyn WriteTxn + '_>, StoreError>;
    /// Appends the genesis block (height 0, into an empty store) and records `network`, in one
    /// commit; a transaction of its own.
    fn set_genesis(&self, network: &str, genesis: BlockRecord) -> Result<(), StoreError>;
    /// Appends `blocks` in one durable commit; a transaction of its own (see
    /// [`super::engine::Engine::append`]).
    fn append(&self, blocks: &[BlockRecord]) -> Result<(), StoreError>;
    /// Removes every block above `height` in one commit and returns them ascending; a
    /// transaction of its own (see [`super::engine::Engine::rollback_above`]).
    fn rollback_above(&self, height: u64) -> Result<Vec<BlockRecord>, StoreError>;
    /// Raises the finality floor to `height` in one durable commit; returns the floor now in
    /// force.
    fn raise_finality_floor(&self, height: u64) -> Result<u64, StoreError>;
    /// Hands the engine the service's tip watch. Returns `true` when the engine then sets the
    /// tip in it itself, for every commit it installs in its commit order, other processes'
    /// and this one's (an engine shared by several replicas); `false` when the writer sets it
    /// after each of its commits (see [`super::engine::Engine::follow_changes`]).
    fn follow_changes(&self, watch: Arc<TipWatch>) -> bool;
}

/// Records which rejected blocks the quarantine filed. Its own face, not the chain writer's:
/// the quarantine files blocks from the API and sync as they are refused, outside the
/// ledger's groups, and it must not be able to append to or roll back the chain; the index
/// lives in the store so that replicas sharing a database file each block once.
pub trait QuarantineIndex: Send + Sync + 'static {
    /// `true` when `key` was not recorded before (see [`super::engine::Engine::record_quarantined`]).
    fn record_quarantined(&self, key: &str) -> Result<bool, StoreError>;
    /// Whether the engine keeps the quarantine's entries itself (see
    /// [`super::engine::Engine::keeps_quarantine`]).
    fn keeps_quarantine(&self) -> bool;
    /// Files one quarantine entry (see [`super::engine::Engine::put_quarantined`]).
    fn put_quarantined(
        &self,
        name: &str,
        entry: &[u8],
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<(), StoreError>;
    /// The quarantine entries the engine keeps, oldest first: names and sizes.
    fn quarantined(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// What a committed transaction left: the chain's tip and floor as of the commit, and the
/// blocks a rollback removed. The ledger publishes these; it never re-reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The tip after the commit.
    pub tip: Option<BlockMeta>,
    /// The finality floor after the commit.
    pub finality_floor: u64,
    /// Blocks removed by a rollback, ascending.
    pub removed: Vec<BlockRecord>,
    /// Blocks appended, handed back so the caller can account for them without a copy.
    pub appended: Vec<BlockRecord>,
}

/// One write transaction on the chain (see the module documentation).
pub trait WriteTxn {
    /// The tip as of [`ChainWriter::begin`], moved by the appends staged since.
    fn tip(&self) -> Option<&BlockMeta>;
    /// The finality floor as of [`ChainWriter::begin`].
    fn finality_floor(&self) -> u64;
    /// The stored block summary at `height` (committed blocks only, not staged ones).
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError>;
    /// The stored body at `height` (committed blocks only).
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Which of the `ids` are stored, in one lookup.
    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError>;
    /// The height of the stored block holding transaction `tx_id`.
    fn tx_height(&self, tx_id: &str) -> Result<Option<u64>, StoreError>;
    /// Stages `blocks`; their heights must continue the tip one by one, else
    /// [`StoreError::NotContiguous`] and nothing is staged.
    fn append(&mut self, blocks: Vec<BlockRecord>) -> Result<(), StoreError>;
    /// Stages the removal of every block above `height`, alone in its transaction; the
    /// removed blocks come back in [`Committed::removed`].
    fn rollback_above(&mut self, height: u64) -> Result<(), StoreError>;
    /// Stages the genesis block and `network` into an empty chain, alone in its transaction;
    /// `Ok(false)` and nothing staged when this very genesis is stored already.
    fn genesis(&mut self, network: &str, genesis: BlockRecord) -> Result<bool, StoreError>;
    /// Stages raising the finality floor to `height`, alone in its transaction.
    fn raise_finality_floor(&mut self, height: u64) -> Result<(), StoreError>;
    /// Writes what was staged in one durable commit and releases the lock.
    fn commit(self: Box<Self>) -> Result<Committed, StoreError>;
}

/// A change staged by a [`WriteTxn`].
#[derive(Debug)]
pub enum Change {
    /// Blocks continuing the tip.
    Append(Vec<BlockRecord>),
    /// Remove every block above this height.
    Rollback(u64),
    /// The first block and the chain's network.
    Genesis(String, BlockRecord),
    /// Raise the finality floor to this height.
    RaiseFloor(u64),
}

/// What an engine does while it holds the chain for a [`Staged`] transaction: the reads the
/// ledger validates with, and writing one change in one commit.
pub trait HeldChain {
    /// See [`WriteTxn::meta_at`].
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError>;
    /// See [`WriteTxn::body_at`].
    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// See [`WriteTxn::stored_tx_ids`].
    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError>;
    /// See [`WriteTxn::tx_height`].
    fn tx_height(&self, tx_id: &str) -> Result<Option<u64>, StoreError>;
    /// Writes `change` in one durable commit; returns the blocks a rollback removed, or the
    /// blocks appended.
    fn write(&self, change: Change) -> Result<Vec<BlockRecord>, StoreError>;
    /// The tip as committed now.
    fn tip(&self) -> Result<Option<BlockMeta>, StoreError>;
    /// The finality floor as committed now.
    fn finality_floor(&self) -> Result<u64, StoreError>;
}

/// A [`WriteTxn`] that stages its change in memory and writes it at commit through `H`.
pub struct Staged<H: HeldChain> {
    held: H,
    tip: Option<BlockMeta>,
    floor: u64,
    change: Option<Change>,
}

impl<H: HeldChain> Staged<H> {
    /// A transaction on `held`, reading the tip and the floor now.
    pub fn begin(held: H) -> Result<Self, StoreError> {
        Ok(Self {
            tip: held.tip()?,
            floor: held.finality_floor()?,
            held,
            change: None,
        })
    }

    /// Stages `change` when nothing else is staged: a rollback, a genesis or a floor is a
    /// transaction of its own, as the ledger writes them.
    fn stage_alone(&mut self, change: Change) -> Result<(), StoreError> {
        if self.change.is_some() {
            return Err(StoreError::Write(
                "a write transaction already holds another change".into(),
            ));
        }
        self.change = Some(change);
        Ok(())
    }
}

impl<H: HeldChain> WriteTxn for Staged<H> {
    fn tip(&self) -> Option<&BlockMeta> {
        self.tip.as_ref()
    }

    fn finality_floor(&self) -> u64 {
        self.floor
    }

    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        self.held.meta_at(height)
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.held.body_at(height)
    }

    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        self.held.stored_tx_ids(ids)
    }

    fn tx_height(&self, tx_id: &str) -> Result<Option<u64>, StoreError> {
        self.held.tx_height(tx_id)
    }

    fn append(&mut self, blocks: Vec<BlockRecord>) -> Result<(), StoreError> {
        let next = self.tip.as_ref().map_or(0, |m| m.height + 1);
        for (expected, block) in (next..).zip(&blocks) {
            if block.meta.height != expected {
                return Err(StoreError::NotContiguous {
                    expected,
                    got: block.meta.height,
                });
            }
        }
        let Some(last) = blocks.last() else {
            return Ok(());
        };
        let last = last.meta.clone();
        match &mut self.change {
            Some(Change::Append(staged)) => staged.extend(blocks),
            None => self.change = Some(Change::Append(blocks)),
            Some(_) => {
                return Err(StoreError::Write(
                    "a write transaction already holds another change".into(),
                ));
            }
        }
        self.tip = Some(last);
        Ok(())
    }

    fn rollback_above(&mut self, height: u64) -> Result<(), StoreError> {
        self.stage_alone(Change::Rollback(height))
    }

    fn genesis(&mut self, network: &str, genesis: BlockRecord) -> Result<bool, StoreError> {
        if self.tip.is_some() && self.change.is_none() {
            // Idempotent: the same genesis stored by an earlier start (or another replica).
            if let Some(stored) = self.held.meta_at(0)?
                && stored.hash == genesis.meta.hash
            {
                return Ok(false);
            }
        }
        self.stage_alone(Change::Genesis(network.to_string(), genesis))?;
        Ok(true)
    }

    fn raise_finality_floor(&mut self, height: u64) -> Result<(), StoreError> {
        self.stage_alone(Change::RaiseFloor(height))
    }

    fn commit(self: Box<Self>) -> Result<Committed, StoreError> {
        let Staged {
            held, tip, change, ..
        } = *self;
        let Some(change) = change else {
            return Ok(Committed {
                tip,
                finality_floor: held.finality_floor()?,
                ..Committed::default()
            });
        };
        let moves_tip_back = matches!(change, Change::Rollback(_));
        let genesis = match &change {
            Change::Genesis(_, g) => Some(g.meta.clone()),
            _ => None,
        };
        let written = held.write(change)?;
        // An append's tip is its last block and a genesis is the tip; only a rollback needs
        // the store to say where the chain ends now.
        let (tip, removed, appended) = if moves_tip_back {
            (held.tip()?, written, Vec::new())
        } else {
            (genesis.or(tip), Vec::new(), written)
        };
        Ok(Committed {
            tip,
            finality_floor: held.finality_floor()?,
            removed,
            appended,
        })
    }
}
