//! block-manager: the block-store service of the Lucid stack.
//!
//! Modules in dependency order:
//! - `config`: typed settings, figment layers, `${VAR:-default}` substitution.
//! - `telemetry`: logging per the logging file (console, rotated files).
//! - `chain`: pure chain rules — model, canonical JSON, hashing, validation, genesis.
//! - `store`: the redb block store, the only code that touches the database.
//! - `ledger`: the single writer: validates against the tip, group-commits durably.
//! - `quarantine`: rejected blocks kept for operators, bounded.
//! - `verify`: integrity check of a stored range.
//! - `metrics`: Prometheus registry and handles.
//! - `monitoring`: background host sampler.
//! - `health`: the check registry behind `/health`.
//! - `sync`: follower loop against an upstream.
//! - `error`: the error catalog and the one JSON error shape.
//! - `api`: routes and middleware.
//! - `server`: the accept loop: connection cap, header and idle timeouts, request head limits.
//! - `app`: start-up, serving, graceful shutdown.
//! - `signals`: SIGTERM/SIGINT caught from the first instant.
//! - `cli`: the command line.

pub mod api;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod error;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod monitoring;
pub mod quarantine;
pub mod server;
pub mod signals;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod verify;
