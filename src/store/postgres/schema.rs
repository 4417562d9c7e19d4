//! The schema, created on first start and versioned under a lock so that replicas starting
//! together migrate once.
//!
//! The database itself enforces the chain, whatever any process does: a height holds one
//! block (the primary key), and every block but genesis links to the stored block below it by
//! `(height - 1, previous_hash)` (statement-level triggers, checked like a foreign key but once
//! per statement), so neither a fork nor a gap can ever be stored. Bodies are the
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
    merkle_root text NOT NULL,
    ts text NOT NULL,
    ts_micros bigint NOT NULL,
    producer text NOT NULL,
    transaction_count integer NOT NULL CHECK (transaction_count >= 0),
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    body bytea NOT NULL,
    CHECK (height > 0 OR previous_hash = repeat('0', 64))
);
CREATE INDEX bm_blocks_by_time ON bm_blocks (ts_micros, height);
-- The link to the block below, as a foreign key would keep it but checked once per statement
-- over all the rows it wrote: a foreign key runs a query of its own per row, which was a bulk
-- load's largest server cost after the transactions' key had gone. A row whose block below is
-- the statement's own previous row is linked already (one sort of the statement's rows, no
-- lookup); only the others, normally just the lowest, are looked up by primary key and locked
-- as a foreign key locks them, so a concurrent removal waits for this transaction and fails.
-- Both triggers loop over these few rows on purpose: a join of a transition table (which has
-- no statistics) with the whole table may be planned as a scan of every stored block.
CREATE FUNCTION bm_blocks_linked() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT height, previous_hash FROM (
            SELECT height, previous_hash, lag(height) OVER w AS h, lag(hash) OVER w AS p
            FROM bm_added WINDOW w AS (ORDER BY height)) t
        WHERE height > 0 AND (h IS DISTINCT FROM height - 1 OR p IS DISTINCT FROM previous_hash)
    LOOP
        PERFORM 1 FROM bm_blocks WHERE height = e.height - 1 AND hash = e.previous_hash
            FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'block % does not link to a stored block below it', e.height
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER bm_blocks_linked AFTER INSERT ON bm_blocks
    REFERENCING NEW TABLE AS bm_added FOR EACH STATEMENT EXECUTE FUNCTION bm_blocks_linked();
-- Removing a block that a stored block links to would leave a gap: only the removed rows whose
-- block above was not removed with them need a look.
CREATE FUNCTION bm_blocks_unlinked() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT height, hash FROM (
            SELECT height, hash, lead(height) OVER w AS h FROM bm_removed
            WINDOW w AS (ORDER BY height)) t
        WHERE h IS DISTINCT FROM height + 1
    LOOP
        PERFORM 1 FROM bm_blocks WHERE height = e.height + 1 AND previous_hash = e.hash;
        IF FOUND THEN
            RAISE EXCEPTION 'block % is linked to by a stored block and cannot be removed', e.height
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER bm_blocks_unlinked AFTER DELETE ON bm_blocks
    REFERENCING OLD TABLE AS bm_removed FOR EACH STATEMENT EXECUTE FUNCTION bm_blocks_unlinked();
-- A stored block's place in the chain never changes (rows are inserted and deleted, never
-- moved); the engine never updates these columns, so this costs nothing.
CREATE FUNCTION bm_blocks_fixed() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'a stored block''s height, hash and link cannot change'
        USING ERRCODE = 'foreign_key_violation';
END
$fn$;
CREATE TRIGGER bm_blocks_fixed BEFORE UPDATE OF height, hash, previous_hash ON bm_blocks
    FOR EACH ROW WHEN (OLD.height IS DISTINCT FROM NEW.height OR OLD.hash IS DISTINCT FROM NEW.hash
        OR OLD.previous_hash IS DISTINCT FROM NEW.previous_hash)
    EXECUTE FUNCTION bm_blocks_fixed();
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
    let created = match version(client).await? {
        Some(v) if v > SCHEMA_VERSION => return Err(Refusal::NewerSchema(v).into()),
        Some(_) => false,
        None => {
            let txn = client.transaction().await?;
            txn.batch_execute(V1).await?;
            txn.commit().await?;
            true
        }
    };
    compress_bodies_with_lz4(client).await;
    Ok(created)
}

/// The compression set for new bodies: `l` LZ4, `p` pglz, empty for the server's default.
pub(super) const BODY_COMPRESSION: &str = "SELECT attcompression::text FROM pg_attribute \
    WHERE attrelid = 'bm_blocks'::regclass AND attname = 'body'";

/// Has the server compress new bodies with LZ4 rather than its default pglz, where it can
/// (PostgreSQL 14 and later, built with LZ4). A ~3 KB body is compressed on every insert: pglz
/// took about a quarter of the server's CPU per block in a catch-up, and LZ4 also decompresses
/// faster on reads. Stored rows keep their compression (both stay readable), so this is a
/// setting rather than a schema change, and builds that predate it use such a database as is.
/// Failing it (readers holding the table for more than 200 ms) only costs speed: the next start
/// tries again.
async fn compress_bodies_with_lz4(client: &mut deadpool_postgres::Client) {
    const STATE: &str = "SELECT current_setting('server_version_num')::int >= 140000 \
        AND 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'";
    let result = async {
        let can = client.query_opt(STATE, &[]).await?;
        if !can.is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(false);
        }
        let current: String = client.query_one(BODY_COMPRESSION, &[]).await?.get(0);
        if current == "l" {
            return Ok(false);
        }
        // The ALTER waits for the table's exclusive lock, and while it waits every read of
        // the other replicas queues behind it: it gives up quickly instead.
        let txn = client.transaction().await?;
        txn.batch_execute(
            "SET LOCAL lock_timeout = '200ms'; \
             ALTER TABLE bm_blocks ALTER COLUMN body SET COMPRESSION lz4",
        )
        .await?;
        txn.commit().await.map(|()| true)
    }
    .await;
    match result {
        Ok(true) => tracing::info!("new block bodies are compressed with LZ4"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot set LZ4 compression for block bodies; they keep the server's default")
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
