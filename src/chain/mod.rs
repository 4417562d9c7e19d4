//! The pure chain core: timestamps, the block model and its JSON forms, hashing, validation
//! and genesis. No I/O, no async, no clock reads, nothing from the rest of the crate.

pub mod amount;
pub mod genesis;
pub mod hash;
pub mod model;
mod parse;
pub mod timestamp;
pub mod validate;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod properties;

pub use genesis::genesis_block;
pub use model::{Block, Header, Summary, Transaction};
pub use timestamp::{Timestamp, TimestampError};
pub use validate::{
    ChainView, Failure, Flags, Limits, add_raw_failures, check_block, parse_block,
    parse_block_json, parse_transactions, validate_block,
};

/// The previous hash of genesis and the merkle root of an empty block: 64 `'0'`.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
