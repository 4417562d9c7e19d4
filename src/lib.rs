//! block-manager: the block-store service of the Lucid stack.
//!
//! Modules in dependency order:
//! - `config`: typed settings, figment layers, `${VAR:-default}` substitution.
//! - `telemetry`: logging per the logging file (console, rotated files).
//! - `chain`: pure chain rules — model, canonical JSON, hashing, validation, genesis.
//! - `store`: the storage face (reads, the chain writer's transactions, the probe, the tip
//!   watch) and its two engines, embedded (redb and a body log) and PostgreSQL.
//! - `ledger`: the single writer: validates against the tip, group-commits durably.
//! - `quarantine`: rejected blocks kept for operators, bounded.
//! - `verify`: integrity check of a stored range.
//! - `copy`: moves a chain between engines, validated and resumable.
//! - `metrics`: Prometheus registry and handles.
//! - `monitoring`: background host sampler.
//! - `health`: the check registry behind `/health`.
//! - `supervise`: restarts background tasks that panic or end, and reports them down.
//! - `sync`: follower loop against an upstream.
//! - `error`: the error catalog and the one JSON error shape.
//! - `api`: routes and middleware.
//! - `server`: the accept loop: connection cap, header and idle timeouts, request head limits.
//! - `app`: start-up, serving, graceful shutdown.
//! - `signals`: SIGTERM/SIGINT caught from the first instant.
//! - `cli`: the command line.
//! - `ownership`: the `chown` that gives a folder of another user back to the service.

pub mod api;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod copy;
pub mod error;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod monitoring;
pub mod ownership;
pub mod quarantine;
pub mod server;
pub mod signals;
pub mod store;
pub mod supervise;
pub mod sync;
pub mod telemetry;
pub mod verify;
