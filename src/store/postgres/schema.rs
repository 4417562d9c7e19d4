//! The schema, created on first start and versioned under a lock so that replicas starting
//! together migrate once.
//!
//! The database itself enforces the chain, whatever any process does: a height holds one
//! block (the primary key), and every block but genesis references the stored block below it by
//! `(height - 1, previous_hash)`, so neither a fork nor a gap can ever be stored. Bodies are the
//! exact served bytes (`bytea`: JSONB would reorder keys and change what clients hash).

use super::fault::{Outcome, Refusal};

/// Version of the schema this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Key of the session advisory lock held while migrating (any constant: it only needs to be
/// the same in every block-manager).
const MIGRATION_LOCK: i64 = 0x626d_5f6d_6967; // "bm_mig"

/// Version 1, in one transaction.
const V1: &str = r"
CREATE TABLE bm_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
CREATE TABLE bm_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
-- The chain's one row: totals, the finality floor, and the row every writer locks first, so
-- writes from any number of processes are serialised by the database.
CREATE TABLE bm_chain (
    id integer PRIMARY KEY CHECK (id = 1),
    -- Bumped by every write, so a replica can tell a newer state from an older one.
    seq bigint NOT NULL DEFAULT 0,
    tip bigint,
    blocks bigint NOT NULL DEFAULT 0,
    transactions bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    finality_floor bigint NOT NULL DEFAULT 0
);
INSERT INTO bm_chain (id) VALUES (1);
CREATE TABLE bm_blocks (
    height bigint PRIMARY KEY CHECK (height >= 0),
    hash text NOT NULL UNIQUE,
    previous_hash text NOT NULL,
    below bigint GENERATED ALWAYS AS (CASE WHEN height = 0 THEN NULL ELSE height - 1 END) STORED,
    merkle_root text NOT NULL,
    ts text NOT NULL,
    ts_micros bigint NOT NULL,
    producer text NOT NULL,
    transaction_count integer NOT NULL CHECK (transaction_count >= 0),
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    body bytea NOT NULL,
    UNIQUE (height, hash),
    CHECK (height > 0 OR previous_hash = repeat('0', 64)),
    FOREIGN KEY (below, previous_hash) REFERENCES bm_blocks (height, hash)
);
CREATE INDEX bm_blocks_by_time ON bm_blocks (ts_micros, height);
-- Written and removed in the same transactions as their blocks; no foreign key, whose check
-- per row was most of a catch-up's server time (7 trigger queries per block).
CREATE TABLE bm_transactions (
    tx_id text PRIMARY KEY,
    height bigint NOT NULL,
    position integer NOT NULL
);
CREATE INDEX bm_transactions_by_height ON bm_transactions (height);
CREATE TABLE bm_rollbacks (
    id bigserial PRIMARY KEY,
    entry text NOT NULL
);
CREATE TABLE bm_quarantined (
    key text PRIMARY KEY,
    id bigserial NOT NULL UNIQUE
);
-- The quarantine's entries (compact JSON), bounded by the service like its folder.
CREATE TABLE bm_quarantine (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    entry bytea NOT NULL
);
CREATE TABLE bm_probe (
    id integer PRIMARY KEY,
    at timestamptz NOT NULL
);
-- Who holds the sync lease (a session advisory lock, see lease.rs), for the replicas that do
-- not: written by the holder when it takes the lease and renewed by it every second.
CREATE TABLE bm_leader (
    id integer PRIMARY KEY CHECK (id = 1),
    instance_id text NOT NULL,
    address text NOT NULL,
    since timestamptz NOT NULL,
    seen timestamptz NOT NULL,
    health text
);
INSERT INTO bm_schema (id, version) VALUES (1, 1);
";

/// Creates the schema when the database has none, under the migration lock; refuses a schema
/// newer than this build. Returns whether it created the schema.
pub async fn migrate(client: &mut deadpool_postgres::Client) -> Outcome<bool> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    // Released whatever happened; a lost session releases it by itself.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut deadpool_postgres::Client) -> Outcome<bool> {
    match version(client).await? {
        Some(v) if v > SCHEMA_VERSION => Err(Refusal::NewerSchema(v).into()),
        Some(_) => Ok(false),
        None => {
            let txn = client.transaction().await?;
            txn.batch_execute(V1).await?;
            txn.commit().await?;
            Ok(true)
        }
    }
}

/// The recorded schema version, `None` before the first start.
async fn version(client: &tokio_postgres::Client) -> Outcome<Option<i32>> {
    let exists = client
        .query_one("SELECT to_regclass('bm_schema') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM bm_schema WHERE id = 1", &[])
        .await?;
    Ok(row.map(|r| r.get(0)))
}
