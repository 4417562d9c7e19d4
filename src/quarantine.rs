//! Quarantine: blocks rejected from outside (API submits, upstream blocks, fork orphans) are
//! kept as JSON with the reason and time, bounded in count and bytes (oldest go first), so an
//! operator can see what was refused without it ever entering the store.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Mutex;

/// The quarantine folder and its bounds.
pub struct Quarantine {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
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
    /// A quarantine at `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>, max_files: usize, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_files: max_files.max(1),
            max_bytes,
            lock: Mutex::new(()),
            rejects: Rejects::default(),
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

    fn file(&self, reason: &str, errors: Value, block: &Value, log: bool) {
        let _guard = self.lock.lock().expect("quarantine lock");
        let now = crate::ledger::now();
        let height = block
            .get("height")
            .and_then(Value::as_u64)
            .map_or_else(|| "x".into(), |h| h.to_string());
        let hash: String = block
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or("nohash")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        let name = format!("{:020}-{height}-{hash}.json", now.unix_micros());
        let doc = json!({"quarantined_at": now.to_string(), "reason": reason, "errors": errors, "block": block});
        let result = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let bytes = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
            std::fs::write(self.dir.join(&name), bytes)
        });
        match result {
            Ok(()) if log => tracing::warn!(file = %name, reason, "block quarantined"),
            Ok(()) => tracing::debug!(file = %name, reason, "block quarantined"),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write to quarantine")
            }
        }
        self.prune();
    }

    /// Files in the quarantine, oldest first (names start with the time).
    pub fn list(&self) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len())))
            .collect();
        files.sort();
        files
    }

    fn prune(&self) {
        let mut files = self.list();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let mut i = 0;
        while i < files.len() && (files.len() - i > self.max_files || total > self.max_bytes) {
            let _ = std::fs::remove_file(&files[i].0);
            total -= files[i].1;
            i += 1;
        }
        files.drain(..i);
    }
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
}
