//! `block-manager copy --from SIDE --to SIDE`: moves a chain between engines (an embedded store
//! folder or file, a PostgreSQL database) in batches, resuming after the target's tip.
//!
//! The source is only read: an embedded one through [`ReadOnlyStore`], a PostgreSQL one in
//! place. Before anything is written the target must hold a prefix of the source's chain (same
//! network, same genesis, same hash at the target's tip). Every block is checked on the way
//! (it parses, its merkle root and hash recompute, it links to the block below, and the record
//! rebuilt from it is the stored body byte for byte); the first that fails stops the copy
//! before it, and what was copied stays. Each batch is one atomic append, so an interrupted
//! copy leaves the target at a batch boundary and a rerun continues from there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::chain;
use crate::config::{DatabaseUrl, PostgresConfig};
use crate::ledger::record_of;
use crate::store::postgres::{ChainSpec, ConnectError, PgOptions};
use crate::store::{
    BlockMeta, BlockReads, BlockRecord, BlockStore, PgStore, ReadOnlyStore, RedbStore, StoreError,
};
use crate::verify::Source;

/// Blocks per append: one durable commit each (binary COPY on PostgreSQL).
const BATCH: usize = 2_000;
/// Body bytes read per batch at most, so a chain of 1 MiB blocks never holds 2 GiB at once.
const BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Validated batches waiting for the writer: reading and checking the next batches overlaps
/// writing the current one, while memory stays bounded.
const QUEUE: usize = 2;
/// Threads checking a batch at most.
const CHECKERS: usize = 4;
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Page cache of an embedded side (either way the reads are sequential).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Exit status when an argument or a side cannot be used (nothing was written).
const EXIT_USAGE: u8 = 2;

/// Why the copy stopped.
#[derive(Debug)]
pub enum Failure {
    /// An argument is wrong or a side cannot be opened (exit 2).
    Usage(String),
    /// The chains disagree, a source block is invalid, or a read or write failed (exit 1).
    Refused(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(EXIT_USAGE),
            Failure::Refused(_) => ExitCode::FAILURE,
        }
    }
}

/// One end of a copy, as named on the command line.
#[derive(Debug, Clone)]
pub enum Side {
    /// The embedded store's `blocks.redb`.
    Embedded(PathBuf),
    /// A PostgreSQL database.
    Postgres(DatabaseUrl),
}

impl Side {
    /// A `postgres://`/`postgresql://` URL, else an embedded store: its folder
    /// (`storage.blocks_path`) or its `.redb` file. `flag` names the argument in errors.
    pub fn parse(flag: &str, arg: &str) -> Result<Side, Failure> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(Failure::Usage(format!("{flag}: empty")));
        }
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            // The parser's reason never repeats the URL, so no credential reaches the terminal.
            return DatabaseUrl::parse(arg)
                .map(Side::Postgres)
                .map_err(|why| Failure::Usage(format!("{flag}: invalid PostgreSQL URL: {why}")));
        }
        if lower.contains("://") {
            return Err(Failure::Usage(format!(
                "{flag}: expected a store folder, a .redb file or a postgres:// URL"
            )));
        }
        let path = PathBuf::from(arg);
        let file = if path.extension().is_some_and(|e| e == "redb") || path.is_file() {
            path
        } else {
            path.join("blocks.redb")
        };
        Ok(Side::Embedded(file))
    }

    /// How the side is shown: a path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Side::Embedded(file) => file.display().to_string(),
            Side::Postgres(url) => url.redacted(),
        }
    }
}

/// The source's reads.
enum Origin {
    /// An embedded store opened read-only.
    ReadOnly(ReadOnlyStore),
    /// An embedded store that needed recovery first.
    Recovered(RedbStore),
    /// A PostgreSQL database, read in place.
    Postgres(PgStore),
}

impl Origin {
    fn reads(&self) -> &(dyn Source + Sync) {
        match self {
            Origin::ReadOnly(s) => s,
            Origin::Recovered(s) => s,
            Origin::Postgres(s) => s,
        }
    }

    fn network(&self) -> Result<String, StoreError> {
        match self {
            Origin::ReadOnly(s) => s.network(),
            Origin::Recovered(s) => s.chain_info().map(|c| c.network),
            Origin::Postgres(s) => s.chain_info().map(|c| c.network),
        }
    }

    fn floor(&self) -> Result<u64, StoreError> {
        match self {
            Origin::ReadOnly(s) => s.finality_floor(),
            Origin::Recovered(s) => BlockReads::finality_floor(s),
            Origin::Postgres(s) => BlockReads::finality_floor(s),
        }
    }
}

/// What the copy did, for the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Blocks written to the target.
    pub blocks: u64,
    /// First and last height written.
    pub heights: Option<(u64, u64)>,
    /// The tip both sides now hold.
    pub tip: BlockMeta,
    /// Wall time of the copy.
    pub took: Duration,
}

/// Runs `copy`: the exit status, with the last line on stdout and failures on stderr.
pub fn main(from: &str, to: &str) -> ExitCode {
    match run(from, to) {
        Ok(c) => {
            let secs = c.took.as_secs_f64();
            let rate = if secs > 0.0 {
                c.blocks as f64 / secs
            } else {
                0.0
            };
            let heights = match c.heights {
                Some((a, b)) => format!("heights {a}-{b}"),
                None => "the target was up to date".into(),
            };
            println!(
                "copied {} blocks ({heights}) in {secs:.1} s ({rate:.0} blocks/s); tip {} hash {} on both sides",
                c.blocks, c.tip.height, c.tip.hash
            );
            ExitCode::SUCCESS
        }
        Err(f) => {
            let (Failure::Usage(why) | Failure::Refused(why)) = &f;
            eprintln!("block-manager copy: {why}");
            f.exit_code()
        }
    }
}

/// Copies the chain at `from` onto `to`.
pub fn run(from: &str, to: &str) -> Result<Copied, Failure> {
    let from = Side::parse("--from", from)?;
    let to = Side::parse("--to", to)?;
    if same_side(&from, &to) {
        return Err(Failure::Usage(format!(
            "--from and --to name the same store ({})",
            from.describe()
        )));
    }
    let started = Instant::now();
    let source = open_source(&from)?;
    let refused = |what: &str, e: StoreError| Failure::Refused(format!("{what}: {e}"));
    let reads = source.reads();
    let source_tip = reads
        .tip()
        .map_err(|e| refused("cannot read the source", e))?
        .ok_or_else(|| {
            Failure::Refused(format!("the source {} holds no blocks", from.describe()))
        })?;
    let network = source
        .network()
        .map_err(|e| refused("cannot read the source", e))?;
    let target = open_target(&to)?;
    let start = check_prefix(reads, &network, target.as_ref())?;
    let first = start.as_ref().map_or(0, |m| m.height + 1);
    let mut written = 0u64;
    if first <= source_tip.height {
        written = pump(reads, target.as_ref(), &network, start, source_tip.height)?;
    }
    carry_floor(&source, target.as_ref())?;
    let tip = both_tips(reads, target.as_ref())?;
    Ok(Copied {
        blocks: written,
        heights: (written > 0).then(|| (first, first + written - 1)),
        tip,
        took: started.elapsed(),
    })
}

fn same_side(a: &Side, b: &Side) -> bool {
    match (a, b) {
        (Side::Embedded(x), Side::Embedded(y)) => {
            let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            real(x) == real(y)
        }
        (Side::Postgres(x), Side::Postgres(y)) => {
            x.host == y.host && x.port == y.port && x.dbname == y.dbname
        }
        _ => false,
    }
}

fn open_source(side: &Side) -> Result<Origin, Failure> {
    match side {
        Side::Postgres(url) => connect(url, "--from").map(Origin::Postgres),
        Side::Embedded(file) => {
            // Copying must never create a store where there was none.
            if !file.is_file() {
                return Err(Failure::Usage(format!(
                    "--from: no block store at {}",
                    file.display()
                )));
            }
            match ReadOnlyStore::open(file, CACHE_BYTES) {
                Ok(Some(store)) => Ok(Origin::ReadOnly(store)),
                Ok(None) => {
                    // Not closed cleanly: redb must rewrite its header (its quick repair)
                    // before any read, which only a writable open does; the blocks stay as
                    // they are.
                    eprintln!(
                        "block-manager copy: {} was not closed cleanly; opening it writable to let the store recover first",
                        file.display()
                    );
                    open_embedded(file, "--from").map(Origin::Recovered)
                }
                Err(e) => Err(embedded_error(file, "--from", e)),
            }
        }
    }
}

fn open_target(side: &Side) -> Result<Arc<dyn BlockStore>, Failure> {
    match side {
        Side::Postgres(url) => Ok(Arc::new(connect(url, "--to")?)),
        Side::Embedded(file) => Ok(Arc::new(open_embedded(file, "--to")?)),
    }
}

/// Opens (creating when new) an embedded store, without a finality depth: the floor is
/// carried over from the source, not derived from the tip.
fn open_embedded(file: &Path, flag: &str) -> Result<RedbStore, Failure> {
    match RedbStore::open(file, CACHE_BYTES) {
        Ok(store) => Ok(store),
        Err(e) => Err(embedded_error(file, flag, e)),
    }
}

fn embedded_error(file: &Path, flag: &str, e: StoreError) -> Failure {
    match e {
        StoreError::AlreadyOpen { .. } => Failure::Usage(format!(
            "{flag}: block store {} is in use by a running block-manager; stop it first",
            file.display()
        )),
        e => Failure::Usage(format!(
            "{flag}: cannot open block store {}: {e}",
            file.display()
        )),
    }
}

/// Connects to a database that must be usable now: a copy waits for no outage to end.
fn connect(url: &DatabaseUrl, flag: &str) -> Result<PgStore, Failure> {
    let spec = ChainSpec {
        // Learned from the database; the target's is compared with the source's by
        // `check_prefix`, which says where they differ.
        network: String::new(),
        mode: None,
        genesis: None,
        genesis_pinned: false,
        finality_depth: None,
    };
    let options = PgOptions::from_config(url, &PostgresConfig::default());
    let store = match PgStore::connect(options, spec) {
        Ok(store) => store,
        Err(ConnectError::Configuration(why)) => {
            return Err(Failure::Usage(format!("{flag}: {why}")));
        }
    };
    if !store.is_ready() {
        let why = BlockReads::tip(&store)
            .err()
            .map_or_else(|| "not ready".to_string(), |e| e.to_string());
        return Err(Failure::Usage(format!(
            "{flag}: cannot reach {}: {why}",
            url.redacted()
        )));
    }
    Ok(store)
}

/// The target's tip when its chain is a prefix of the source's (`None`: the target is empty);
/// else where they differ, before anything is written.
fn check_prefix(
    source: &dyn Source,
    network: &str,
    target: &dyn BlockStore,
) -> Result<Option<BlockMeta>, Failure> {
    let refused = |e: StoreError| Failure::Refused(format!("cannot read the target: {e}"));
    let Some(tip) = target.tip().map_err(refused)? else {
        return Ok(None);
    };
    let theirs = target.chain_info().map_err(refused)?.network;
    if theirs != network {
        return Err(Failure::Refused(format!(
            "the target belongs to network '{theirs}', the source to '{network}'; nothing written"
        )));
    }
    let hash_at = |h: u64| -> Result<Option<String>, Failure> {
        source
            .meta_at(h)
            .map(|m| m.map(|m| m.hash))
            .map_err(|e| Failure::Refused(format!("cannot read the source: {e}")))
    };
    let target_genesis = target.meta_at(0).map_err(refused)?.map(|m| m.hash);
    let source_genesis = hash_at(0)?;
    if target_genesis != source_genesis {
        return Err(Failure::Refused(format!(
            "the chains differ at genesis (height 0): target {}, source {}; nothing written",
            target_genesis.as_deref().unwrap_or("none"),
            source_genesis.as_deref().unwrap_or("none")
        )));
    }
    match hash_at(tip.height)? {
        Some(hash) if hash == tip.hash => Ok(Some(tip)),
        Some(hash) => Err(Failure::Refused(format!(
            "the chains differ at height {}: target {}, source {hash}; nothing written",
            tip.height, tip.hash
        ))),
        None => Err(Failure::Refused(format!(
            "the target is ahead of the source: its tip is height {}, past the source's; nothing written",
            tip.height
        ))),
    }
}

/// What the reading thread hands the writer.
enum Step {
    /// Validated records, ascending and contiguous.
    Batch(Vec<BlockRecord>),
    /// The source block at `height` fails; nothing from it on is copied.
    Invalid { height: u64, why: String },
    /// Reading the source failed.
    Unreadable(StoreError),
}

/// Copies heights after `start` up to `end`; returns the number of blocks written.
fn pump(
    source: &(dyn Source + Sync),
    target: &dyn BlockStore,
    network: &str,
    start: Option<BlockMeta>,
    end: u64,
) -> Result<u64, Failure> {
    let first = start.as_ref().map_or(0, |m| m.height + 1);
    let previous = start.map(|m| m.hash);
    let (tx, rx) = sync_channel(QUEUE);
    let (written, reading, writing) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_and_check(source, first, end, previous, tx));
        let (written, writing) = write_batches(target, network, first, end, rx);
        // A panic in the reader is a bug; its batches simply stop coming.
        (written, reader.join().unwrap_or_default(), writing)
    });
    // Where the time went, so a slow copy says which side holds it back.
    eprintln!(
        "copy: phases: reading the source {:.1} s, checking blocks {:.1} s, writing the target {:.1} s, writer waiting for blocks {:.1} s",
        reading.read.as_secs_f64(),
        reading.check.as_secs_f64(),
        writing.write.as_secs_f64(),
        writing.idle.as_secs_f64()
    );
    written
}

/// Time the reading side spent per phase.
#[derive(Debug, Default, Clone, Copy)]
struct Reading {
    read: Duration,
    check: Duration,
}

/// Time the writing side spent appending, and waiting for the reading side.
#[derive(Debug, Default, Clone, Copy)]
struct Writing {
    write: Duration,
    idle: Duration,
}

/// The reading side: bodies in batches, each block checked, sent on in order.
fn read_and_check(
    source: &(dyn Source + Sync),
    mut height: u64,
    end: u64,
    mut previous: Option<String>,
    tx: SyncSender<Step>,
) -> Reading {
    let mut spent = Reading::default();
    while height <= end {
        let count = BATCH.min(usize::try_from(end - height + 1).unwrap_or(BATCH));
        let started = Instant::now();
        let read = source.bodies(height, count, BATCH_BYTES);
        spent.read += started.elapsed();
        let started = Instant::now();
        let bodies = match read {
            Ok(b) if b.is_empty() => {
                let why = "missing from the source".to_string();
                let _ = tx.send(Step::Invalid { height, why });
                return spent;
            }
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Step::Unreadable(e));
                return spent;
            }
        };
        let mut batch = Vec::with_capacity(bodies.len());
        for (at, sound) in (height..).zip(check_all(height, &bodies)) {
            match sound.and_then(|record| linked(record, previous.as_deref())) {
                Ok(record) => {
                    previous = Some(record.meta.hash.clone());
                    batch.push(record);
                }
                Err(why) => {
                    // The valid blocks below it are still copied.
                    if !batch.is_empty() {
                        let _ = tx.send(Step::Batch(batch));
                    }
                    let _ = tx.send(Step::Invalid { height: at, why });
                    return spent;
                }
            }
        }
        height += batch.len() as u64;
        spent.check += started.elapsed();
        // The writer gone (it failed) means there is nobody to read for.
        if tx.send(Step::Batch(batch)).is_err() {
            return spent;
        }
    }
    spent
}

/// [`sound`] for each of `bodies` (heights from `first`), in order. The checks do not depend
/// on each other (the links are checked afterwards, in order), so a batch is split over the
/// cores: with LZ4 bodies, checking on one thread took longer than PostgreSQL's writes.
fn check_all(first: u64, bodies: &[Vec<u8>]) -> Vec<Result<BlockRecord, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(CHECKERS));
    let share = bodies.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (first..)
            .step_by(share)
            .zip(bodies.chunks(share))
            .map(|(from, part)| {
                scope.spawn(move || {
                    (from..)
                        .zip(part)
                        .map(|(height, body)| sound(height, body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                // A check that panics is a bug; its share fails rather than the process.
                part.join()
                    .unwrap_or_else(|_| vec![Err("checking it failed unexpectedly".to_string())])
            })
            .collect()
    })
}

/// The record of the stored `body` at `height`, when it is a sound block: it parses, says that
/// height, its merkle root and hash recompute, and its stored body is its canonical form.
fn sound(height: u64, body: &[u8]) -> Result<BlockRecord, String> {
    let block = chain::parse_block_json(body).map_err(|f| {
        format!(
            "its body does not parse as a block: {}",
            f.first().map_or("?", |f| f.message.as_str())
        )
    })?;
    if block.height != height {
        return Err(format!("its body says height {}", block.height));
    }
    if block.computed_merkle_root() != block.merkle_root {
        return Err("merkle root mismatch".into());
    }
    if block.computed_hash() != block.hash {
        return Err("block hash mismatch".into());
    }
    let record = record_of(&block);
    // The target serves what it stores: only the canonical form of the block may go there.
    if record.body != body {
        return Err("its stored body is not the canonical form of the block".into());
    }
    Ok(record)
}

/// `record` when it links to `previous` (genesis, with none, links to the zero hash).
fn linked(record: BlockRecord, previous: Option<&str>) -> Result<BlockRecord, String> {
    if record.meta.previous_hash != previous.unwrap_or(chain::ZERO_HASH) {
        return Err("its previous hash is not the hash of the block below".into());
    }
    Ok(record)
}

/// The writing side: one append per batch, progress on stderr.
fn write_batches(
    target: &dyn BlockStore,
    network: &str,
    first: u64,
    end: u64,
    rx: Receiver<Step>,
) -> (Result<u64, Failure>, Writing) {
    let mut spent = Writing::default();
    let result = write_all(target, network, first, end, rx, &mut spent);
    (result, spent)
}

fn write_all(
    target: &dyn BlockStore,
    network: &str,
    first: u64,
    end: u64,
    rx: Receiver<Step>,
    spent: &mut Writing,
) -> Result<u64, Failure> {
    let started = Instant::now();
    let mut last_line = started;
    let mut written = 0u64;
    let failed = |height: u64, e: StoreError, written: u64| {
        Failure::Refused(format!(
            "writing height {height} to the target failed: {e}; {}",
            kept(first, written)
        ))
    };
    loop {
        let waited = Instant::now();
        let Ok(step) = rx.recv() else { break };
        spent.idle += waited.elapsed();
        let appending = Instant::now();
        let mut batch = match step {
            Step::Batch(b) => b,
            Step::Invalid { height, why } => {
                return Err(Failure::Refused(format!(
                    "source block at height {height} is invalid: {why}; copy stopped before it, {}",
                    kept(first, written)
                )));
            }
            Step::Unreadable(e) => {
                return Err(Failure::Refused(format!(
                    "cannot read the source: {e}; {}",
                    kept(first, written)
                )));
            }
        };
        if first == 0 && written == 0 && !batch.is_empty() {
            // An empty target starts with genesis, which also records the network.
            let genesis = batch.remove(0);
            target
                .set_genesis(network, genesis)
                .map_err(|e| failed(0, e, written))?;
            written += 1;
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            target
                .append(&batch)
                .map_err(|e| failed(first + written, e, written))?;
            written += n;
        }
        spent.write += appending.elapsed();
        if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            let rate = written as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "copy: height {} of {end}, {rate:.0} blocks/s",
                first + written - 1
            );
        }
    }
    Ok(written)
}

/// What stays on the target after a stop.
fn kept(first: u64, written: u64) -> String {
    match written {
        0 => "nothing written".into(),
        n => format!("heights {first}-{} copied and kept", first + n - 1),
    }
}

/// Raises the target's finality floor to the source's (the engine keeps it at or below the tip).
fn carry_floor(source: &Origin, target: &dyn BlockStore) -> Result<(), Failure> {
    let floor = source
        .floor()
        .map_err(|e| Failure::Refused(format!("cannot read the source's finality floor: {e}")))?;
    if floor > 0 {
        target.raise_finality_floor(floor).map_err(|e| {
            Failure::Refused(format!("cannot raise the target's finality floor: {e}"))
        })?;
    }
    Ok(())
}

/// The target's tip, re-read, once the source holds the same block at that height.
fn both_tips(source: &dyn Source, target: &dyn BlockStore) -> Result<BlockMeta, Failure> {
    let tip = target
        .tip()
        .map_err(|e| Failure::Refused(format!("cannot read the target: {e}")))?
        .ok_or_else(|| Failure::Refused("the target holds no blocks after the copy".into()))?;
    let theirs = source
        .meta_at(tip.height)
        .map_err(|e| Failure::Refused(format!("cannot read the source: {e}")))?;
    match theirs {
        Some(m) if m.hash == tip.hash => Ok(tip),
        _ => Err(Failure::Refused(format!(
            "after the copy the target's tip (height {}, hash {}) is not the source's block at that height",
            tip.height, tip.hash
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: u64) -> Vec<chain::Block> {
        let mut c = vec![chain::genesis_block(
            chain::Timestamp::parse("2024-01-01T00:00:00+00:00").expect("timestamp"),
        )];
        for height in 1..=n {
            let parent = &c[c.len() - 1];
            let at = chain::Timestamp::from_unix_micros(parent.timestamp.unix_micros() + 1_000);
            let tx = chain::Transaction {
                tx_id: format!("tx-{height}"),
                tx_type: "system".into(),
                from_address: "0xa".into(),
                to_address: "0xb".into(),
                value: serde_json::Number::from(1),
                fee: serde_json::Number::from(0),
                data: String::new(),
                timestamp: at,
                signature: "s".into(),
            };
            c.push(chain::Block::build(
                height,
                parent.hash.clone(),
                at,
                "p",
                "sig",
                vec![tx],
            ));
        }
        c
    }

    #[test]
    fn names_sides_by_url_folder_or_file() {
        let Side::Postgres(url) =
            Side::parse("--to", "postgresql://u:pw@h:5433/db?sslmode=disable").expect("url")
        else {
            panic!("not a database");
        };
        assert_eq!((url.host.as_str(), url.port), ("h", 5433));
        assert!(!Side::Postgres(url).describe().contains("pw"));
        let Side::Embedded(file) = Side::parse("--to", "/nowhere/data/blocks").expect("folder")
        else {
            panic!("not a folder");
        };
        assert_eq!(file, Path::new("/nowhere/data/blocks/blocks.redb"));
        let Side::Embedded(file) = Side::parse("--to", "/nowhere/x.redb").expect("file") else {
            panic!("not a file");
        };
        assert_eq!(file, Path::new("/nowhere/x.redb"));
        for bad in ["", "postgres://u:pw@h:x/db", "mysql://h/db"] {
            match Side::parse("--from", bad) {
                Err(Failure::Usage(why)) => {
                    assert!(why.starts_with("--from"), "{why}");
                    assert!(!why.contains("pw"), "{why}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    /// The record of `body` at `height` when it is sound and links to `previous`: what
    /// `read_and_check` decides for each block.
    fn checked(height: u64, body: &[u8], previous: Option<&str>) -> Result<BlockRecord, String> {
        sound(height, body).and_then(|record| linked(record, previous))
    }

    #[test]
    fn checks_each_block_against_the_one_below() {
        let c = chain_of(3);
        let bodies: Vec<Vec<u8>> = c.iter().map(|b| record_of(b).body).collect();
        let genesis = checked(0, &bodies[0], None).expect("genesis");
        assert_eq!(genesis.meta.hash, c[0].hash);
        assert!(checked(1, &bodies[1], Some(&c[0].hash)).is_ok());
        let unlinked = checked(2, &bodies[2], Some(&c[0].hash)).expect_err("unlinked");
        assert!(unlinked.contains("previous hash"), "{unlinked}");
        let misplaced = checked(3, &bodies[2], Some(&c[1].hash)).expect_err("misplaced");
        assert!(misplaced.contains("says height 2"), "{misplaced}");
        let junk = checked(1, b"{\"height\": 1}", Some(&c[0].hash)).expect_err("junk");
        assert!(junk.contains("does not parse"), "{junk}");
    }
}
