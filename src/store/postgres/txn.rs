//! The PostgreSQL [`WriteTxn`]: for now a thin shim that stages the group in memory and, on
//! commit, writes it with the one-shot writes (`writes::append` locks the chain row and
//! re-checks contiguity in one database transaction, so a tip that moved meanwhile is refused,
//! never forked). The tip comes from memory. Kept small on purpose: a transaction held open
//! across the group replaces it.

use std::collections::HashSet;

use super::PgStore;
use crate::store::engine::Engine;
use crate::store::writes::{Change, HeldChain, Staged, WriteTxn};
use crate::store::{BlockMeta, BlockRecord, StoreError};

/// Begins a staged transaction on `store`.
pub(super) fn begin(store: &PgStore) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
    Ok(Box::new(Staged::begin(Held(store))?))
}

struct Held<'a>(&'a PgStore);

impl HeldChain for Held<'_> {
    fn meta_at(&self, height: u64) -> Result<Option<BlockMeta>, StoreError> {
        Engine::meta_at(self.0, height)
    }

    fn body_at(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Engine::body_at(self.0, height)
    }

    fn stored_tx_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        Engine::stored_tx_ids(self.0, ids)
    }

    fn write(&self, change: Change) -> Result<Vec<BlockRecord>, StoreError> {
        match change {
            Change::Append(blocks) => match Engine::append(self.0, &blocks) {
                Ok(()) => Ok(blocks),
                // The group was built on the tip this process knew; a refusal means the chain
                // moved on first (another replica's commit, or one of ours whose answer was
                // lost). Nothing was written and the engine has reloaded its tip, so a retry is
                // safe: an outage for the caller, not a fault.
                Err(StoreError::NotContiguous { expected, got }) => {
                    Err(StoreError::Unavailable(format!(
                        "the chain moved on under this write (expected height {expected}, built {got}); nothing was written, retry"
                    )))
                }
                Err(e) => Err(e),
            },
            Change::Rollback(height) => Engine::rollback_above(self.0, height),
            Change::Genesis(network, genesis) => {
                Engine::set_genesis(self.0, &network, genesis).map(|()| Vec::new())
            }
            Change::RaiseFloor(height) => {
                Engine::raise_finality_floor(self.0, height).map(|_| Vec::new())
            }
        }
    }

    fn tip(&self) -> Result<Option<BlockMeta>, StoreError> {
        Engine::tip(self.0)
    }

    fn finality_floor(&self) -> Result<u64, StoreError> {
        Engine::finality_floor(self.0)
    }
}
