//! The engine's write transactions. Each takes the chain's row lock first (`bm_chain FOR
//! UPDATE`), so writers in any number of processes are serialised by the database and every
//! one sees the tip it continues; a commit is durable on the primary before it returns.
//!
//! A batch goes in as a few set-based statements, never one round trip per block or per
//! transaction id: `unnest` arrays for small groups (the creates of one group commit), binary
//! `COPY` for large ones (catch-up, `copy`), where it is several times faster.

use std::pin::pin;

use bytes::Bytes;
use deadpool_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::fault::Outcome;
use super::{Inner, META, meta_of, sql, to_u64};
use crate::store::{BlockRecord, Position, Rollback, StoreError, floor_for_tip};

/// From this many blocks a batch is written with `COPY`.
const COPY_FROM: usize = 64;

/// The statement that locks the chain row.
async fn lock_statement(txn: &Transaction<'_>) -> Outcome<tokio_postgres::Statement> {
    Ok(txn
        .prepare_cached("SELECT tip, finality_floor FROM bm_chain WHERE id = 1 FOR UPDATE")
        .await?)
}

/// The chain row, locked: the stored tip and the floor.
async fn lock_chain(txn: &Transaction<'_>) -> Outcome<(Option<u64>, u64)> {
    let st = lock_statement(txn).await?;
    locked(txn.query_one(&st, &[]).await?)
}

fn locked(row: tokio_postgres::Row) -> Outcome<(Option<u64>, u64)> {
    let tip: Option<i64> = row.get(0);
    Ok((tip.map(to_u64), to_u64(row.get(1))))
}

fn not_contiguous(expected: u64, got: u64) -> StoreError {
    StoreError::NotContiguous { expected, got }
}

/// Replaces the in-memory chain state with the database's. On failure the old state stays: the
/// next write that finds the tip moved tries again.
async fn reload(inner: &Inner) {
    match inner.load().await {
        Ok(chain) => {
            tracing::warn!(
                tip = ?chain.tip.as_ref().map(|t| t.height),
                "the database's tip was not the one this process knew; chain state reloaded"
            );
            *inner
                .chain
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(chain);
        }
        Err(e) => {
            tracing::warn!(error = %e.into_store(false), "cannot reload the chain state yet");
        }
    }
}

/// Appends genesis into an empty chain and records the network, in one commit.
pub(super) async fn set_genesis(
    inner: &Inner,
    network: &str,
    genesis: &BlockRecord,
) -> Outcome<()> {
    let mut client = inner.pool.get().await?;
    let txn = client.transaction().await?;
    set_genesis_locked(inner, txn, network, genesis).await
}

/// [`set_genesis`] in `txn`, which may hold the chain's lock already.
pub(super) async fn set_genesis_locked(
    inner: &Inner,
    txn: Transaction<'_>,
    network: &str,
    genesis: &BlockRecord,
) -> Outcome<()> {
    let (tip, _) = lock_chain(&txn).await?;
    if let Some(tip) = tip {
        return Err(not_contiguous(tip + 1, genesis.meta.height).into());
    }
    if genesis.meta.height != 0 {
        return Err(not_contiguous(0, genesis.meta.height).into());
    }
    insert(&txn, std::slice::from_ref(genesis)).await?;
    txn.execute(
        "INSERT INTO bm_settings (key, value) VALUES ('network', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&network],
    )
    .await?;
    let tx_count = i64::from(genesis.meta.transaction_count);
    txn.execute(
        "UPDATE bm_chain SET seq = seq + 1, tip = 0, blocks = 1, transactions = $1, bytes = $2 WHERE id = 1",
        &[&tx_count, &sql(genesis.meta.block_size_bytes)],
    )
    .await?;
    notify(&txn, inner, "append", 0).await?;
    txn.commit().await?;
    inner.cache.put(0, Bytes::copy_from_slice(&genesis.body));
    Ok(())
}

/// Appends `blocks` (continuing the tip one by one) in one durable commit.
pub(super) async fn append(inner: &Inner, blocks: &[BlockRecord]) -> Outcome<()> {
    let mut client = inner.pool.get().await?;
    let txn = client.transaction().await?;
    // A small group's rows are sent right behind the lock, in one round trip (the server runs
    // them in order, so they are written under the lock): the lock is held until the commit's
    // WAL flush, and every round trip inside it delays the next commit too. If the tip moved,
    // the rows fail or are rolled back with the transaction, and the check below says why.
    let (chain_row, inserted) = if blocks.len() < COPY_FROM {
        // Prepared first, so the lock is the first of them on the wire: a future sends its
        // statement when first polled, and `join!` polls the lock's first.
        let lock = lock_statement(&txn).await?;
        let (row, inserted) = tokio::join!(txn.query_one(&lock, &[]), insert(&txn, blocks));
        (row.map_err(Into::into).and_then(locked), inserted)
    } else {
        let chain_row = lock_chain(&txn).await;
        let inserted = match &chain_row {
            Ok(_) => insert(&txn, blocks).await,
            Err(_) => Ok(()),
        };
        (chain_row, inserted)
    };
    let (tip, _) = chain_row?;
    let next = tip.map_or(0, |t| t + 1);
    // Checked before anything is written, so a gap anywhere in the batch writes nothing.
    for (expected, block) in (next..).zip(blocks) {
        if block.meta.height != expected {
            let known = inner.snapshot().and_then(|c| c.tip.map(|t| t.height));
            if known != tip {
                // The database moved on without this process knowing: a commit whose answer
                // was lost with the connection (it committed, the caller heard an outage), or
                // another writer. The writer builds on the in-memory tip, so without a reload
                // every later write would fail the same way until a restart.
                drop(txn);
                drop(client);
                reload(inner).await;
            }
            return Err(not_contiguous(expected, block.meta.height).into());
        }
    }
    inserted?;
    let row = record_append(&txn, inner, blocks).await?;
    commit_append(inner, txn, blocks, row).await
}

/// Appends `blocks` in `txn`, which holds the chain's lock and found the tip at `tip` (see
/// [`super::txn`]), and commits.
pub(super) async fn append_locked(
    inner: &Inner,
    txn: Transaction<'_>,
    tip: Option<u64>,
    blocks: &[BlockRecord],
) -> Outcome<()> {
    let next = tip.map_or(0, |t| t + 1);
    for (expected, block) in (next..).zip(blocks) {
        if block.meta.height != expected {
            return Err(not_contiguous(expected, block.meta.height).into());
        }
    }
    let row = if blocks.len() < COPY_FROM {
        // The rows and the chain row's update in one round trip: under the lock the tip is
        // known, so nothing waits for the insert's answer (a failed insert fails the update
        // too, and its error is the one told).
        let (inserted, recorded) =
            tokio::join!(insert(&txn, blocks), record_append(&txn, inner, blocks));
        inserted?;
        recorded?
    } else {
        insert(&txn, blocks).await?;
        record_append(&txn, inner, blocks).await?
    };
    commit_append(inner, txn, blocks, row).await
}

/// Moves the chain row on past `blocks` and tells the listening replicas; the row as updated:
/// blocks, transactions, bytes, floor, seq.
async fn record_append(
    txn: &Transaction<'_>,
    inner: &Inner,
    blocks: &[BlockRecord],
) -> Outcome<tokio_postgres::Row> {
    let Some(last) = blocks.last().map(|b| b.meta.height) else {
        return Err(StoreError::Write("an append of no blocks".into()).into());
    };
    let added_txs: i64 = blocks
        .iter()
        .map(|b| i64::from(b.meta.transaction_count))
        .sum();
    let added_bytes: i64 = blocks.iter().map(|b| sql(b.meta.block_size_bytes)).sum();
    // In this commit, so no reader ever sees a tip whose buried blocks are not final.
    let floor = inner
        .spec
        .finality_depth
        .map_or(0, |depth| floor_for_tip(last, depth));
    let st = txn
        .prepare_cached(
            "UPDATE bm_chain SET seq = seq + 1, tip = $1, blocks = blocks + $2, \
             transactions = transactions + $3, bytes = bytes + $4, \
             finality_floor = GREATEST(finality_floor, $5) WHERE id = 1 \
             RETURNING blocks, transactions, bytes, finality_floor, seq",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 5] = [
        &sql(last),
        &(blocks.len() as i64),
        &added_txs,
        &added_bytes,
        &sql(floor),
    ];
    // One round trip for both; the commit is sent only once both answered (a COMMIT of a
    // failed transaction rolls back, and must never be taken for a durable write).
    let (row, notified) = tokio::join!(
        txn.query_one(&st, &params),
        notify(txn, inner, "append", last)
    );
    let row = row?;
    notified?;
    Ok(row)
}

/// Commits an append and installs what it made the chain. A connection lost during the
/// COMMIT leaves its outcome unknown: the last block is looked up on another connection
/// before answering, so a commit that happened is never told as a failure.
async fn commit_append(
    inner: &Inner,
    txn: Transaction<'_>,
    blocks: &[BlockRecord],
    row: tokio_postgres::Row,
) -> Outcome<()> {
    if let Err(e) = txn.commit().await {
        let last = blocks.last().map(|b| &b.meta);
        if e.code().is_some() || last.is_none() {
            // The server answered: the transaction did not commit.
            return Err(e.into());
        }
        let last = last.expect("checked above");
        match stored_hash(inner, last.height).await {
            Ok(Some(hash)) if hash == last.hash => {
                tracing::warn!(
                    height = last.height,
                    error = %super::fault::Fault::Db(e).into_store(true),
                    "the connection was lost during a commit, which the database shows happened"
                );
            }
            Ok(_) => return Err(e.into()),
            Err(lookup) => {
                tracing::warn!(
                    height = last.height,
                    error = %lookup.into_store(false),
                    "the connection was lost during a commit and the outcome cannot be looked up yet"
                );
                return Err(e.into());
            }
        }
    }
    for b in blocks {
        inner
            .cache
            .put(b.meta.height, Bytes::copy_from_slice(&b.body));
    }
    let tip = blocks.last().map(|b| b.meta.clone());
    let genesis = blocks
        .first()
        .filter(|b| b.meta.height == 0)
        .map(|b| b.meta.hash.clone());
    inner.committed(row.get(4), |c| {
        c.tip = tip;
        if genesis.is_some() {
            c.genesis_hash = genesis;
        }
        c.totals.blocks = to_u64(row.get(0));
        c.totals.transactions = to_u64(row.get(1));
        c.totals.bytes = to_u64(row.get(2));
        c.floor = c.floor.max(to_u64(row.get(3)));
    });
    Ok(())
}

/// The hash stored at `height`, read on a connection of its own.
async fn stored_hash(inner: &Inner, height: u64) -> Outcome<Option<String>> {
    let client = inner.pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT hash FROM bm_blocks WHERE height = $1",
            &[&sql(height)],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Tells every replica listening (`super::listen`) what this commit did, when it commits:
/// `append <tip>` or `rollback <kept tip>`, with this process's token so it can skip its own.
async fn notify(txn: &Transaction<'_>, inner: &Inner, kind: &str, height: u64) -> Outcome<()> {
    let payload = format!("{kind} {height} {}", inner.token);
    let st = txn
        .prepare_cached("SELECT pg_notify('bm_chain', $1)")
        .await?;
    txn.execute(&st, &[&payload]).await?;
    Ok(())
}

/// Writes the rows of `blocks` and their transaction ids.
async fn insert(txn: &Transaction<'_>, blocks: &[BlockRecord]) -> Outcome<()> {
    if blocks.len() >= COPY_FROM {
        return copy_in(txn, blocks).await;
    }
    let heights: Vec<i64> = blocks.iter().map(|b| sql(b.meta.height)).collect();
    let hashes: Vec<&str> = blocks.iter().map(|b| b.meta.hash.as_str()).collect();
    let previous: Vec<&str> = blocks
        .iter()
        .map(|b| b.meta.previous_hash.as_str())
        .collect();
    let roots: Vec<&str> = blocks.iter().map(|b| b.meta.merkle_root.as_str()).collect();
    let stamps: Vec<&str> = blocks.iter().map(|b| b.meta.timestamp.as_str()).collect();
    let micros: Vec<i64> = blocks.iter().map(|b| b.meta.timestamp_micros).collect();
    let producers: Vec<&str> = blocks.iter().map(|b| b.meta.producer.as_str()).collect();
    let counts: Vec<i32> = blocks
        .iter()
        .map(|b| i32::try_from(b.meta.transaction_count).unwrap_or(i32::MAX))
        .collect();
    let sizes: Vec<i64> = blocks
        .iter()
        .map(|b| sql(b.meta.block_size_bytes))
        .collect();
    let bodies: Vec<&[u8]> = blocks.iter().map(|b| b.body.as_slice()).collect();
    if let Some(genesis) = blocks.first().filter(|b| b.meta.height == 0) {
        record_genesis(txn, &genesis.meta.hash).await?;
    }
    let st = txn
        .prepare_cached(
            "INSERT INTO bm_blocks (height, hash, previous_hash, merkle_root, ts, ts_micros, producer, transaction_count, size_bytes, body) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::int4[], $9::int8[], $10::bytea[])",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 10] = [
        &heights, &hashes, &previous, &roots, &stamps, &micros, &producers, &counts, &sizes,
        &bodies,
    ];
    let blocks_written = txn.execute(&st, &params);
    let mut ids = Vec::new();
    let mut at = Vec::new();
    let mut positions = Vec::new();
    for b in blocks {
        for (i, id) in b.tx_ids.iter().enumerate() {
            ids.push(id.as_str());
            at.push(sql(b.meta.height));
            positions.push(i32::try_from(i).unwrap_or(i32::MAX));
        }
    }
    if ids.is_empty() {
        blocks_written.await?;
        return Ok(());
    }
    let txs_written = async {
        let st = txn
            .prepare_cached(
                "INSERT INTO bm_transactions (tx_id, height, position) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[])",
            )
            .await?;
        txn.execute(&st, &[&ids, &at, &positions]).await
    };
    // Both in one round trip.
    let (b, t) = tokio::join!(blocks_written, txs_written);
    b?;
    t?;
    Ok(())
}

/// Records the hash of the chain's first block, as the chain's identity.
async fn record_genesis(txn: &Transaction<'_>, hash: &str) -> Outcome<()> {
    txn.execute(
        "INSERT INTO bm_settings (key, value) VALUES ('genesis_hash', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&hash],
    )
    .await?;
    Ok(())
}

/// [`insert`] by binary `COPY`.
async fn copy_in(txn: &Transaction<'_>, blocks: &[BlockRecord]) -> Outcome<()> {
    if let Some(genesis) = blocks.first().filter(|b| b.meta.height == 0) {
        record_genesis(txn, &genesis.meta.hash).await?;
    }
    let sink = txn
        .copy_in(
            "COPY bm_blocks (height, hash, previous_hash, merkle_root, ts, ts_micros, producer, transaction_count, size_bytes, body) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::INT4,
        Type::INT8,
        Type::BYTEA,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for b in blocks {
        let count = i32::try_from(b.meta.transaction_count).unwrap_or(i32::MAX);
        writer
            .as_mut()
            .write(&[
                &sql(b.meta.height),
                &b.meta.hash,
                &b.meta.previous_hash,
                &b.meta.merkle_root,
                &b.meta.timestamp,
                &b.meta.timestamp_micros,
                &b.meta.producer,
                &count,
                &sql(b.meta.block_size_bytes),
                &b.body.as_slice(),
            ])
            .await?;
    }
    writer.finish().await?;
    let sink = txn
        .copy_in("COPY bm_transactions (tx_id, height, position) FROM STDIN BINARY")
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::INT8, Type::INT4]
    ));
    for b in blocks {
        for (i, id) in b.tx_ids.iter().enumerate() {
            let position = i32::try_from(i).unwrap_or(i32::MAX);
            writer
                .as_mut()
                .write(&[id, &sql(b.meta.height), &position])
                .await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

/// Removes every block above `height` in one commit, logging the rollback in it; returns the
/// removed blocks ascending.
pub(super) async fn rollback_above(inner: &Inner, height: u64) -> Outcome<Vec<BlockRecord>> {
    let mut client = inner.pool.get().await?;
    let txn = client.transaction().await?;
    rollback_locked(inner, txn, height).await
}

/// [`rollback_above`] in `txn`, which may hold the chain's lock already.
pub(super) async fn rollback_locked(
    inner: &Inner,
    txn: Transaction<'_>,
    height: u64,
) -> Outcome<Vec<BlockRecord>> {
    let (tip, floor) = lock_chain(&txn).await?;
    let Some(tip) = tip.filter(|t| *t > height) else {
        return Ok(Vec::new());
    };
    // Checked here, not only by sync: whoever asks, final blocks stay.
    if height < floor {
        return Err(StoreError::BelowFinalityFloor { height, floor }.into());
    }
    let rows = txn
        .query(
            &format!("SELECT {META}, body FROM bm_blocks WHERE height > $1 ORDER BY height"),
            &[&sql(height)],
        )
        .await?;
    let mut removed: Vec<BlockRecord> = rows
        .iter()
        .map(|r| BlockRecord {
            meta: meta_of(r),
            tx_ids: Vec::new(),
            body: r.get(9),
        })
        .collect();
    if removed.len() as u64 != tip - height {
        let why = format!("heights {}..={tip} are not all stored", height + 1);
        return Err(StoreError::Corrupt(why).into());
    }
    let ids = txn
        .query(
            "SELECT height, tx_id FROM bm_transactions WHERE height > $1 ORDER BY height, position",
            &[&sql(height)],
        )
        .await?;
    for r in &ids {
        let at = to_u64(r.get(0));
        if let Some(b) = at
            .checked_sub(height + 1)
            .and_then(|i| removed.get_mut(i as usize))
        {
            b.tx_ids.push(r.get(1));
        }
    }
    txn.execute(
        "DELETE FROM bm_transactions WHERE height > $1",
        &[&sql(height)],
    )
    .await?;
    txn.execute("DELETE FROM bm_blocks WHERE height > $1", &[&sql(height)])
        .await?;
    let ancestor: String = txn
        .query_one(
            "SELECT hash FROM bm_blocks WHERE height = $1",
            &[&sql(height)],
        )
        .await?
        .get(0);
    let mut logged = None;
    if let Some(last) = removed.last() {
        let entry = Rollback {
            ancestor: Position::new(height, ancestor),
            old_tip: Position::new(last.meta.height, last.meta.hash.clone()),
            orphaned: removed.iter().map(|b| b.meta.hash.clone()).collect(),
        };
        let entry = serde_json::to_string(&entry)
            .map_err(|e| StoreError::Write(format!("cannot encode a rollback log entry: {e}")))?;
        // Logged in the same commit as the removal: whoever sees the blocks gone can also find
        // where they went. Bounded: the oldest entries are forgotten first.
        let row = txn
            .query_one(
                "INSERT INTO bm_rollbacks (entry) VALUES ($1) RETURNING id",
                &[&entry],
            )
            .await?;
        logged = Some(row.get::<_, i64>(0));
        txn.execute(
            "DELETE FROM bm_rollbacks WHERE id <= (SELECT id FROM bm_rollbacks ORDER BY id DESC OFFSET $1 LIMIT 1)",
            &[&(crate::store::ROLLBACK_LOG_MAX as i64)],
        )
        .await?;
    }
    let txs: i64 = removed
        .iter()
        .map(|b| i64::from(b.meta.transaction_count))
        .sum();
    let bytes: i64 = removed.iter().map(|b| sql(b.meta.block_size_bytes)).sum();
    let row = txn
        .query_one(
            "UPDATE bm_chain SET seq = seq + 1, tip = $1, blocks = blocks - $2, \
             transactions = transactions - $3, bytes = bytes - $4 WHERE id = 1 \
             RETURNING blocks, transactions, bytes, seq",
            &[&sql(height), &(removed.len() as i64), &txs, &bytes],
        )
        .await?;
    let kept = txn
        .query_one(
            &format!("SELECT {META} FROM bm_blocks WHERE height = $1"),
            &[&sql(height)],
        )
        .await?;
    notify(&txn, inner, "rollback", height).await?;
    // Forgotten before the commit too: from here until it, a read may miss, never see stale.
    inner.cache.forget_above(height);
    txn.commit().await?;
    inner.cache.forget_above(height);
    let tip = meta_of(&kept);
    inner.standbys.note_rewritten(row.get(3));
    inner.committed(row.get(3), |c| {
        c.tip = Some(tip);
        c.totals.blocks = to_u64(row.get(0));
        c.totals.transactions = to_u64(row.get(1));
        c.totals.bytes = to_u64(row.get(2));
        c.rollbacks = logged.unwrap_or(c.rollbacks);
    });
    Ok(removed)
}

/// Raises the finality floor to `height` (never above the tip) in `txn`, which holds the
/// chain's lock, and commits.
pub(super) async fn raise_floor_locked(
    inner: &Inner,
    txn: Transaction<'_>,
    height: u64,
) -> Outcome<u64> {
    let row = txn
        .query_one(
            "UPDATE bm_chain SET finality_floor = GREATEST(finality_floor, LEAST($1, COALESCE(tip, 0))) WHERE id = 1 RETURNING finality_floor",
            &[&sql(height)],
        )
        .await?;
    txn.commit().await?;
    let floor = to_u64(row.get(0));
    inner.update(|c| c.floor = c.floor.max(floor));
    Ok(floor)
}
