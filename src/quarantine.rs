//! Quarantine: blocks rejected from outside (API submits, upstream blocks, fork orphans) are
//! kept as compact JSON with the reason and time, bounded in count and bytes (oldest go first),
//! so an operator can see what was refused without it ever entering the store.
//!
//! Nothing sent to us can make an entry large or flush the others: each entry is capped (a
//! block over the cap is recorded without its body, by size, digest, height and hash), one entry
//! may take at most a quarter of the byte budget, and an entry is written to a temporary file
//! that is renamed into place only once complete, so a full volume leaves nothing partial. With
//! an index (the block store's), a block already filed — same hash, same bytes — is not filed
//! again.

use crate::metrics::Metrics;
use crate::store::QuarantineIndex;
use serde_json::{Value, json};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Default cap of one entry: the default largest block (1 MiB) plus room for the reason and
/// errors. [`Quarantine::with_entry_cap`] sets it from `chain.max_block_size_bytes`.
pub const DEFAULT_ENTRY_CAP: usize = (1 << 20) + ENTRY_SLACK;
/// Room above the largest valid block for the reason, the errors and the framing.
pub const ENTRY_SLACK: usize = 64 * 1024;
/// Validation errors kept in an entry that is over its cap with them all.
const ERRORS_KEPT: usize = 100;
/// Characters of a claimed block hash kept in an entry or a key: a real one has 64.
const HASH_KEPT: usize = 128;

/// The quarantine folder and its bounds.
pub struct Quarantine {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    entry_cap: usize,
    index: Option<Arc<dyn QuarantineIndex>>,
    metrics: Option<Arc<Metrics>>,
    // Serialises writers so pruning never races a write of this process.
    lock: Mutex<()>,
    rejects: Rejects,
}

/// What happens to a block refused as invalid (`error_handling.validation` and
/// `error_handling.synchronization` of the errors file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejects {
    /// Write it to the folder (`quarantine_invalid_blocks`).
    pub keep: bool,
    /// Log it at WARNING with height, hash and reason (`log_validation_errors`).
    pub log: bool,
    /// Log it so when it came from the upstream (`log_failed_blocks`).
    pub log_upstream: bool,
}

impl Default for Rejects {
    fn default() -> Self {
        Self {
            keep: true,
            log: true,
            log_upstream: true,
        }
    }
}

/// Where a refused block came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's submit.
    Api,
    /// The upstream a follower syncs from.
    Upstream,
}

impl Quarantine {
    /// A quarantine at `dir` (created on first use), entries capped at [`DEFAULT_ENTRY_CAP`],
    /// without an index.
    pub fn new(dir: impl Into<PathBuf>, max_files: usize, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_files: max_files.max(1),
            max_bytes,
            entry_cap: DEFAULT_ENTRY_CAP,
            index: None,
            metrics: None,
            lock: Mutex::new(()),
            rejects: Rejects::default(),
        }
    }

    /// Caps each entry at `bytes`; a block that would make it larger is kept without its body.
    pub fn with_entry_cap(mut self, bytes: usize) -> Self {
        self.entry_cap = bytes;
        self
    }

    /// Keeps the index of what was filed in `store`, so a block is filed once, across restarts.
    pub fn with_index(mut self, store: Arc<dyn QuarantineIndex>) -> Self {
        self.index = Some(store);
        self
    }

    /// Counts what becomes of each block offered (`block_manager_quarantine_entries_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.quarantine_entries.with_label_values(&[outcome]).inc();
        }
    }

    /// The same quarantine, handling invalid blocks as `rejects` says.
    pub fn with_rejects(mut self, rejects: Rejects) -> Self {
        self.rejects = rejects;
        self
    }

    /// A block refused as invalid: logged and filed as the errors file says. Blocking.
    pub fn reject(&self, origin: Origin, reason: &str, errors: Value, block: &Value) {
        let r = self.rejects;
        if r.log || (origin == Origin::Upstream && r.log_upstream) {
            // Upstream text is logged as escaped fields, never raw.
            let field = |k: &str| {
                block
                    .get(k)
                    .map_or_else(|| "-".to_string(), Value::to_string)
            };
            tracing::warn!(
                height = %field("height"),
                hash = %field("hash"),
                reason,
                errors = %errors,
                "invalid block rejected"
            );
        }
        if r.keep {
            self.file(reason, errors, block, false);
        }
    }

    /// Writes one rejected block with why it was refused. Blocking; failures are logged, never
    /// raised: quarantine is a courtesy to operators, not part of the write path.
    pub fn put(&self, reason: &str, errors: Value, block: &Value) {
        self.file(reason, errors, block, true);
    }

    /// Files one block; `log` says whether the filing itself is logged (a rejected block was
    /// already logged by [`Quarantine::reject`] when the errors file asks for it).
    fn file(&self, reason: &str, errors: Value, block: &Value, log: bool) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let body = match serde_json::to_vec(block) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a block for the quarantine");
                self.count("failed");
                return;
            }
        };
        let digest = blake3::hash(&body).to_hex();
        let claimed: String = block
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(HASH_KEPT)
            .collect();
        if !self.first_filing(&format!("{claimed}:{}", &digest[..32])) {
            tracing::debug!(hash = ?claimed, reason, "block already quarantined");
            self.count("duplicate");
            return;
        }
        let now = crate::ledger::now();
        let height = block.get("height").and_then(Value::as_u64);
        let (soft, hard) = self.entry_limits();
        let omitted = json!({"bytes": body.len(), "blake3": digest.as_str(), "height": height, "hash": claimed});
        let Some((bytes, whole)) =
            entry(&now.to_string(), reason, errors, body, omitted, soft, hard)
        else {
            tracing::warn!(
                reason,
                hard,
                "quarantine entry over its cap even without the block; not kept"
            );
            self.count("failed");
            return;
        };
        let name = entry_name(now.unix_micros(), height, &claimed, &digest);
        self.prune(bytes.len() as u64);
        match self.write(&name, &bytes) {
            Ok(()) if whole => {
                if log {
                    tracing::warn!(file = %name, reason, "block quarantined");
                }
                self.count("filed");
            }
            Ok(()) => {
                if log {
                    tracing::warn!(file = %name, reason, "block quarantined without its body: over the entry cap");
                }
                self.count("filed_without_block");
            }
            Err(e) => {
                let place = match self.table() {
                    Some(_) => "the database".to_string(),
                    None => self.dir.display().to_string(),
                };
                tracing::warn!(dir = %place, error = %e, "cannot write to quarantine");
                self.count("failed");
            }
        }
    }

    /// The engine that keeps the entries instead of the folder, if it does.
    fn table(&self) -> Option<&Arc<dyn QuarantineIndex>> {
        self.index.as_ref().filter(|s| s.keeps_quarantine())
    }

    /// Files in the quarantine, oldest first (names start with the time). On an engine that
    /// keeps the entries, their names.
    pub fn list(&self) -> Vec<(PathBuf, u64)> {
        if let Some(table) = self.table() {
            return table
                .quarantined()
                .unwrap_or_default()
                .into_iter()
                .map(|(name, size)| (PathBuf::from(name), size))
                .collect();
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter(|e| is_entry(&e.path()))
            .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len())))
            .collect();
        files.sort();
        files
    }

    /// Whether `key` is new to the index (always, without one). An index that cannot be
    /// written does not stop the filing: a duplicate costs less than a lost entry.
    fn first_filing(&self, key: &str) -> bool {
        let Some(index) = &self.index else {
            return true;
        };
        index.record_quarantined(key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot record a quarantine entry in the store's index");
            true
        })
    }

    /// Largest entry kept whole: the cap, and never more than a quarter of the byte budget, so
    /// one entry cannot push every other one out; and the largest kept at all (cut down).
    fn entry_limits(&self) -> (usize, usize) {
        let budget = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        let hard = self.entry_cap.min(budget);
        (hard.min(budget / 4), hard)
    }

    /// Writes `bytes` as entry `name`: into a private temporary file first, synced, then renamed,
    /// so an entry is whole or absent. A failed write removes the temporary file.
    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(table) = self.table() {
            return table
                .put_quarantined(name, bytes, self.max_files, self.max_bytes)
                .map_err(std::io::Error::other);
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let temp = self.dir.join(format!(".{name}.tmp"));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_data()
            })
            .and_then(|()| std::fs::rename(&temp, self.dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Drops the oldest entries until one of `incoming` bytes fits the bounds, and any
    /// temporary file a crash left behind.
    fn prune(&self, incoming: u64) {
        // The engine keeps its bounds in the same commit as each entry.
        if self.table().is_some() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let files = self.list();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let mut count = files.len();
        for (path, size) in files {
            if count < self.max_files && total.saturating_add(incoming) <= self.max_bytes {
                break;
            }
            let _ = std::fs::remove_file(&path);
            total -= size;
            count -= 1;
        }
    }
}

/// The compact bytes of an entry, and whether the block is in it: whole if at most `soft` long; else without the block (what
/// `omitted` says of it instead); else with only the first errors too, if at most `hard`
/// long. `None` if even that is over.
fn entry(
    at: &str,
    reason: &str,
    errors: Value,
    block: Vec<u8>,
    omitted: Value,
    soft: usize,
    hard: usize,
) -> Option<(Vec<u8>, bool)> {
    let head = |errors: &Value, extra: Value| {
        let mut doc = json!({"quarantined_at": at, "reason": reason, "errors": errors});
        if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
            doc.extend(extra);
        }
        serde_json::to_vec(&doc).ok()
    };
    let mut whole = head(&errors, json!({}))?;
    // The block's own bytes, encoded once, go in as they are: `{...,"block":<block>}`
    if whole.len() + block.len() + 10 <= soft {
        whole.pop();
        whole.extend_from_slice(b",\"block\":");
        whole.extend_from_slice(&block);
        whole.push(b'}');
        return Some((whole, true));
    }
    drop(block);
    let without = head(&errors, json!({"block": null, "block_omitted": omitted}))?;
    if without.len() <= soft {
        return Some((without, false));
    }
    let all = errors.as_array().map_or(0, Vec::len);
    let first: Vec<Value> = errors
        .as_array()
        .map(|e| e.iter().take(ERRORS_KEPT).cloned().collect())
        .unwrap_or_default();
    let extra = json!({"errors_omitted": all.saturating_sub(first.len()), "block": null, "block_omitted": omitted});
    let fewer = head(&Value::from(first), extra)?;
    let smallest = if fewer.len() < without.len() {
        fewer
    } else {
        without
    };
    (smallest.len() <= hard).then_some((smallest, false))
}

/// `<time µs>-<height>-<hash prefix>-<digest prefix>.json`: sorted by time, and apart for
/// blocks that share a claimed hash.
fn entry_name(micros: i64, height: Option<u64>, claimed: &str, digest: &str) -> String {
    let short: String = claimed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!(
        "{micros:020}-{}-{}-{}.json",
        height.map_or_else(|| "x".into(), |h| h.to_string()),
        if short.is_empty() { "nohash" } else { &short },
        digest.get(..8).unwrap_or(digest)
    )
}

/// A kept entry (not a temporary file).
fn is_entry(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "json")
        && !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_max_files_dropping_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("q"), 3, u64::MAX);
        for h in 0..5 {
            q.put(
                "test",
                json!([]),
                &json!({"height": h, "hash": format!("h{h}")}),
            );
        }
        let files = q.list();
        assert_eq!(files.len(), 3);
        let doc: Value = serde_json::from_slice(&std::fs::read(&files[2].0).unwrap()).unwrap();
        assert_eq!(doc["block"]["height"], 4);
        assert_eq!(doc["reason"], "test");
    }

    #[test]
    fn keeps_under_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path(), 100, 600);
        for h in 0..10 {
            q.put("big", json!(["x".repeat(100)]), &json!({"height": h}));
        }
        let total: u64 = q.list().iter().map(|f| f.1).sum();
        assert!(total <= 600, "{total}");
        assert!(!q.list().is_empty());
    }

    fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn entries_are_written_compact_so_nesting_cannot_inflate_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path(), 100, u64::MAX);
        // 100 levels of nesting: pretty-printing puts each level on its own, indented line.
        let mut nested = json!([]);
        for _ in 0..100 {
            nested = json!([nested]);
        }
        let block = json!({"height": 1, "x": nested});
        q.put("nested", json!([]), &block);
        let files = entry_files(dir.path());
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0]).unwrap();
        assert!(!bytes.contains(&b'\n'), "pretty-printed");
        assert!(
            bytes.len() < 1_000,
            "{} bytes for 200 bytes of block",
            bytes.len()
        );
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["block"], block);
    }

    #[test]
    fn an_entry_over_the_size_cap_is_kept_without_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path(), 100, u64::MAX);
        let block = json!({"height": 7, "hash": "ab".repeat(32), "data": "x".repeat(5 << 20)});
        q.put("huge", json!(["too big"]), &block);
        let files = entry_files(dir.path());
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0]).unwrap();
        assert!(bytes.len() < 64 * 1024, "{} bytes kept", bytes.len());
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["reason"], "huge");
        assert_eq!(doc["block"], Value::Null);
        assert_eq!(doc["block_omitted"]["height"], 7);
        assert_eq!(doc["block_omitted"]["hash"], "ab".repeat(32));
        assert!(doc["block_omitted"]["bytes"].as_u64().unwrap() > 5 << 20);
    }

    #[test]
    fn one_entry_over_the_byte_budget_never_evicts_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path(), 100, 10_000);
        for h in 0..3 {
            q.put("small", json!([]), &json!({"height": h}));
        }
        q.put(
            "big",
            json!([]),
            &json!({"height": 9, "data": "x".repeat(50_000)}),
        );
        let docs: Vec<Value> = entry_files(dir.path())
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect();
        let reasons: Vec<&str> = docs.iter().map(|d| d["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["small", "small", "small", "big"]);
        let total: u64 = q.list().iter().map(|f| f.1).sum();
        assert!(total <= 10_000, "{total}");
    }

    #[test]
    fn a_full_volume_leaves_no_partial_entry_behind() {
        if !nix_is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("q");
        std::fs::create_dir_all(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(mounted, "mount a 64 KiB tmpfs");
        let q = Quarantine::new(&at, 100, u64::MAX);
        q.put("fits", json!([]), &json!({"height": 1}));
        q.put(
            "too big for the volume",
            json!([]),
            &json!({"height": 2, "data": "x".repeat(200_000)}),
        );
        let files = entry_files(&at);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&at)
            .status();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].extension().is_some_and(|x| x == "json"));
    }

    fn nix_is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    }

    #[test]
    fn entries_and_their_folder_are_private_to_the_service_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("q"), 100, u64::MAX);
        q.put("mode", json!([]), &json!({"height": 1}));
        let folder = std::fs::metadata(dir.path().join("q")).unwrap();
        assert_eq!(folder.permissions().mode() & 0o777, 0o700);
        let files = q.list();
        assert_eq!(files.len(), 1);
        let file = std::fs::metadata(&files[0].0).unwrap();
        assert_eq!(file.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_block_already_filed_is_not_filed_again_but_other_bytes_under_its_hash_are() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::BlockStore> = Arc::new(
            crate::store::RedbStore::open(
                &dir.path().join("blocks.redb"),
                crate::store::DEFAULT_CACHE_BYTES,
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let q = Quarantine::new(dir.path().join("q"), 100, u64::MAX)
            .with_index(store.clone())
            .with_metrics(metrics.clone())
            .with_entry_cap(10_000);
        let block = json!({"height": 3, "hash": "cd".repeat(32)});
        q.put("orphaned", json!({}), &block);
        q.put("orphaned again", json!({}), &block);
        q.put(
            "same hash, other bytes",
            json!({}),
            &json!({"height": 3, "hash": "cd".repeat(32), "x": 1}),
        );
        q.put(
            "too big",
            json!({}),
            &json!({"height": 4, "data": "x".repeat(20_000)}),
        );
        let reasons: Vec<String> = q
            .list()
            .iter()
            .map(|f| {
                let doc: Value = serde_json::from_slice(&std::fs::read(&f.0).unwrap()).unwrap();
                doc["reason"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(reasons, ["orphaned", "same hash, other bytes", "too big"]);
        let counted = |o: &str| metrics.quarantine_entries.with_label_values(&[o]).get();
        assert_eq!(
            (
                counted("filed"),
                counted("duplicate"),
                counted("filed_without_block")
            ),
            (2, 1, 1)
        );
    }

    /// Runs `f` with a subscriber that captures WARN lines; returns them.
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn rejects_are_filed_and_logged_as_the_errors_file_says() {
        let block = json!({"height": 9, "hash": "abc"});
        for (keep, log, log_upstream) in [
            (true, true, true),
            (false, true, false),
            (true, false, true),
            (false, false, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let q = Quarantine::new(dir.path(), 10, u64::MAX).with_rejects(Rejects {
                keep,
                log,
                log_upstream,
            });
            let api = warnings(|| q.reject(Origin::Api, "bad", json!([]), &block));
            let upstream = warnings(|| q.reject(Origin::Upstream, "bad", json!([]), &block));
            assert_eq!(q.list().len(), if keep { 2 } else { 0 });
            assert_eq!(api.len(), usize::from(log), "{api:?}");
            assert_eq!(
                upstream.len(),
                usize::from(log || log_upstream),
                "{upstream:?}"
            );
            for line in api.iter().chain(&upstream) {
                assert!(line.contains("WARN") && line.contains("height=9"), "{line}");
                assert!(
                    line.contains("hash=\"abc\"") && line.contains("reason=\"bad\""),
                    "{line}"
                );
            }
        }
    }
}
