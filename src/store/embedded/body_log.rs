//! [`BodyLog`]: a second copy of every stored body in two flat files beside the redb file, so
//! that a read by height is one 16-byte index read and one copy of the body, both from read-only
//! memory maps of the two files (no system call per read).
//!
//! Why: read through redb, a body sits at the end of a B-tree walk whose leaves (350 MiB of
//! pages at 100k blocks of 2 KB) cannot stay in the store's bounded page cache, so most reads
//! paid a cache miss, a `pread` and an eviction inside redb: about a third of the cost of a block
//! read over HTTP. Here both reads come from the OS page cache, which is not this process's
//! memory, and nothing is walked.
//!
//! redb stays the record; the log is only ever a faster way to the same bytes:
//! - It is written after each commit, under the store's writer lock, and a height is served
//!   from it only below `trusted`, which covers entries already written.
//! - The watermark kept in redb's meta table ([`super::tables::KEY_BODY_LOG`]) covers only
//!   entries fsync'd before the commit that wrote it, so after any crash (of the OS too) nothing
//!   unsynced is trusted. Heights above it are read from redb until later commits rewrite them
//!   ([`BodyLog::gap`]).
//! - A rollback lowers both watermarks in its own transaction.
//! - Every entry carries a CRC-32 of its height, length and body, so a damaged entry (a zeroed
//!   one included), one copied to another height, or one a rollback is rewriting under a read,
//!   is never served: the read falls back to redb.
//! - After a failed fsync the synced watermark never rises again in this process: Linux may
//!   report such a failure once and then call the lost pages clean.
//!
//! Reads go through shared read-only maps ([`Maps`]) rather than `pread`: at the HTTP ceiling
//! the two `pread`s were 11 % of a block read's CPU (system call entry and the page-cache
//! lookups), the copy out of a map is about 2 % (mostly the cache misses the kernel's copy paid
//! before). The maps reach past the files' ends, so that appends rarely need a new map, but
//! only bytes already written (below `data_end` and `trusted`) are ever read, and the files
//! never shrink while open (a rollback only lowers the marks), so a read never touches a page
//! past the end of its file. What a map cannot do is turn a failing disk's read error into an
//! error: the kernel raises SIGBUS instead, which stops the process, where `pread` would have
//! fallen back to redb (which reads the same disk). Mapped pages the service has read show in
//! its resident memory (`RssFile`), though they are the same page cache `pread` read from, and
//! the kernel reclaims them alike. When a file cannot be mapped (address space limits), reads
//! fall back to `pread`.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use memmap2::{Mmap, MmapOptions};

use super::files::sibling;

/// Bytes of one index entry: data offset (u64), body length (u32), [`checksum`] (u32).
const ENTRY: u64 = 16;
/// How often a background thread fsyncs the log, so that the watermark commits persist can
/// advance. It bounds how many heights are read from redb (and rewritten) after a crash. The
/// fsync is kept off the writer: inline, it cost 8-client creates about 4 %.
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// The smallest map of either file: a map is made at least twice as long as what it must cover,
/// so that a growing log is mapped again only at each doubling. (Small in tests, so that their
/// appends cross map ends.)
#[cfg(not(test))]
const MIN_MAP: u64 = 64 << 20;
#[cfg(test)]
const MIN_MAP: u64 = 4096;
/// Untrusted heights one commit rewrites from redb, so that catching up after a crash never
/// makes a single commit slow.
pub(super) const REPAIR_PER_COMMIT: u64 = 512;

/// The body log of one store: `<store file>.bodies` and `<store file>.bodies-index`.
pub(super) struct BodyLog {
    files: Arc<Files>,
    tail: Mutex<Tail>,
    syncer: Option<JoinHandle<()>>,
    data_path: PathBuf,
}

/// What readers, the writer and the syncing thread share.
struct Files {
    data: File,
    index: File,
    /// Heights below this are served from the log.
    trusted: AtomicU64,
    /// Bytes of the data file in use: the next body goes here (changed only under the `tail`
    /// lock), and no entry reaching past it is read, so a damaged one cannot make a read
    /// allocate much.
    data_end: AtomicU64,
    marks: Mutex<Marks>,
    /// Wakes the syncing thread early, to stop.
    wake: Condvar,
    /// Read-only maps of `data` and `index` that readers copy from; replaced (under the `tail`
    /// lock) by longer ones when the written part outgrows them.
    maps: RwLock<Maps>,
}

/// A map of each file, each covering at least the file's written part, or `None` where mapping
/// failed (reads then use `pread`).
struct Maps {
    data: Option<Mmap>,
    index: Option<Mmap>,
}

struct Marks {
    /// `trusted` as of the last fsync of both files: what a commit may persist.
    synced: u64,
    /// An fsync failed: what was written before it may never reach the disk, so `synced` stays.
    frozen: bool,
    /// Bumped by every rollback, so that an fsync begun before one never raises `synced` after
    /// it to heights the rollback voided.
    epoch: u64,
    stop: bool,
}

/// The writer's side; every change happens under the store's writer lock.
struct Tail {
    /// The watermark stored in redb by the last commit.
    persisted: u64,
    /// The last write failed (a warning was logged); the next success logs once more.
    failing: bool,
}

impl BodyLog {
    /// Opens (creating when missing) the log of the store at `store`, trusting it below
    /// `persisted` (from redb) but never at or above `next` (the height after redb's tip).
    pub(super) fn open(store: &Path, persisted: u64, next: u64) -> io::Result<Self> {
        let data_path = sibling(store, "bodies");
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
        };
        let data = open(&data_path)?;
        let index = open(&sibling(store, "bodies-index"))?;
        Self::over(data, index, data_path, persisted, next, true)
    }

    /// Opens an existing log for reads only (no file is created or written, no thread
    /// started), trusting it as [`BodyLog::open`] would.
    pub(super) fn open_read_only(store: &Path, persisted: u64, next: u64) -> io::Result<Self> {
        let data_path = sibling(store, "bodies");
        let data = File::open(&data_path)?;
        let index = File::open(sibling(store, "bodies-index"))?;
        Self::over(data, index, data_path, persisted, next, false)
    }

    fn over(
        data: File,
        index: File,
        data_path: PathBuf,
        persisted: u64,
        next: u64,
        syncing: bool,
    ) -> io::Result<Self> {
        // The last trusted entry decides where new bodies go, so it must be sound; files cut,
        // replaced or damaged there are not trusted at all (later commits rebuild them).
        let mut trusted = persisted.min(next);
        let mut end = 0;
        if trusted > 0 {
            let data_len = data.metadata()?.len();
            match sound_body(
                Source::file(&index),
                Source::file(&data),
                trusted - 1,
                data_len,
            ) {
                Some((_, last_end)) => end = last_end,
                None => trusted = 0,
            }
        }
        let maps = RwLock::new(Maps {
            data: map(&data, end, None),
            index: map(&index, trusted * ENTRY, None),
        });
        let files = Arc::new(Files {
            data,
            index,
            maps,
            trusted: AtomicU64::new(trusted),
            data_end: AtomicU64::new(end),
            marks: Mutex::new(Marks {
                synced: trusted,
                frozen: false,
                epoch: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let syncer = if syncing {
            let files = Arc::clone(&files);
            Some(
                std::thread::Builder::new()
                    .name("body-log-sync".into())
                    .spawn(move || files.sync_until_stopped())?,
            )
        } else {
            None
        };
        Ok(Self {
            files,
            tail: Mutex::new(Tail {
                persisted,
                failing: false,
            }),
            syncer,
            data_path,
        })
    }

    /// The body at `height`, when the log holds a sound copy of it; `None` sends the caller to
    /// redb.
    pub(super) fn get(&self, height: u64) -> Option<Vec<u8>> {
        self.read_at(height, |index, data, data_end| {
            sound_body(index, data, height, data_end).map(|(body, _)| body)
        })
    }

    /// Whether the body the log holds at `height` opens with `prefix` (its leading bytes only,
    /// unchecked by the CRC: a hint's check, which a full read then confirms).
    pub(super) fn opens_with(&self, height: u64, prefix: &[u8]) -> bool {
        self.read_at(height, |index, data, data_end| {
            let (offset, len, _) = entry(index, height)?;
            let mut head = [0u8; 128];
            let head = head.get_mut(..prefix.len())?;
            let end = offset.checked_add(prefix.len() as u64)?;
            (prefix.len() as u64 <= u64::from(len) && end <= data_end).then_some(())?;
            data.read_exact_at(head, offset).ok()?;
            (head == prefix).then_some(())
        })
        .is_some()
    }

    /// `f` over the log's two files (through their maps where mapped) and the written end of the
    /// data, when the log holds a trusted copy at `height`.
    fn read_at<R>(
        &self,
        height: u64,
        f: impl FnOnce(Source<'_>, Source<'_>, u64) -> Option<R>,
    ) -> Option<R> {
        let files = &*self.files;
        if height >= files.trusted.load(Ordering::Acquire) {
            return None;
        }
        let data_end = files.data_end.load(Ordering::Acquire);
        let maps = files.maps.read().unwrap_or_else(PoisonError::into_inner);
        let index = Source::new(&files.index, maps.index.as_ref());
        let data = Source::new(&files.data, maps.data.as_ref());
        f(index, data, data_end)
    }

    /// Heights below `first` (where a commit appends) that the log does not hold yet, as many as
    /// one commit should rewrite.
    pub(super) fn gap(&self, first: u64) -> Range<u64> {
        let from = self.files.trusted.load(Ordering::Acquire);
        from..first.min(from.saturating_add(REPAIR_PER_COMMIT))
    }

    /// Writes `bodies`, committed at heights `first..`, and trusts them. Call it after the
    /// commit, under the writer lock. Bodies that would leave a hole are not written: a later
    /// commit fills the hole first ([`Self::gap`]).
    pub(super) fn record<'b>(&self, first: u64, bodies: impl IntoIterator<Item = &'b [u8]>) {
        let files = &*self.files;
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if first != files.trusted.load(Ordering::Acquire) {
            return;
        }
        let end = files.data_end.load(Ordering::Acquire);
        let mut data = Vec::new();
        let mut entries = Vec::new();
        for (height, body) in (first..).zip(bodies) {
            let offset = end + data.len() as u64;
            entries.extend_from_slice(&offset.to_le_bytes());
            // Bodies are capped far below 4 GiB by the request limit
            entries.extend_from_slice(&(body.len() as u32).to_le_bytes());
            entries.extend_from_slice(&checksum(height, body).to_le_bytes());
            data.extend_from_slice(body);
        }
        let count = entries.len() as u64 / ENTRY;
        if count == 0 {
            return;
        }
        let written = files
            .data
            .write_all_at(&data, end)
            .and_then(|()| files.index.write_all_at(&entries, first * ENTRY));
        match written {
            Ok(()) => {
                // The maps must cover what the new marks let readers reach before they move
                files.cover(end + data.len() as u64, (first + count) * ENTRY);
                files
                    .data_end
                    .store(end + data.len() as u64, Ordering::Release);
                files.trusted.store(first + count, Ordering::Release);
                if tail.failing {
                    tail.failing = false;
                    tracing::info!(path = %self.data_path.display(), "body log writable again");
                }
            }
            Err(e) => {
                if !tail.failing {
                    tail.failing = true;
                    tracing::warn!(
                        path = %self.data_path.display(),
                        error = %e,
                        "cannot write the body log; block reads go to the store until it can"
                    );
                }
            }
        }
    }

    /// A rollback to `height` is about to commit: heights above it stop being served from the
    /// log at once, their space is reused, and the synced watermark (what the rollback's commit
    /// stores, see [`Self::to_persist`]) drops below them.
    pub(super) fn rollback(&self, height: u64) {
        let files = &*self.files;
        let _tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let keep = height.saturating_add(1);
        // Under the marks lock, so that an fsync in flight sees both or neither
        let mut marks = files.marks();
        marks.epoch += 1;
        if keep < files.trusted.load(Ordering::Acquire) {
            files.trusted.store(keep, Ordering::Release);
            // Reads already past the watermark check may still fetch the old bytes; the CRC
            // sends any that are overwritten meanwhile to redb.
            let data_end = files.data_end.load(Ordering::Acquire);
            let (index, data) = (Source::file(&files.index), Source::file(&files.data));
            if let Some((_, last_end)) = sound_body(index, data, height, data_end) {
                files.data_end.store(last_end, Ordering::Release);
            }
        }
        marks.synced = marks.synced.min(keep);
    }

    /// The watermark a commit should write, when it differs from the one stored.
    pub(super) fn to_persist(&self) -> Option<u64> {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let synced = self.files.marks().synced;
        (synced != tail.persisted).then_some(synced)
    }

    /// A commit has stored `watermark`.
    pub(super) fn persisted(&self, watermark: u64) {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .persisted = watermark;
    }

    /// Fsyncs the log now (at close), so that the final watermark covers every entry.
    pub(super) fn flush(&self) {
        let _tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        self.files.sync();
    }

    /// Heights served from the log: `0..trusted()`.
    #[cfg(test)]
    pub(super) fn trusted(&self) -> u64 {
        self.files.trusted.load(Ordering::Acquire)
    }

    /// Bytes of the data file in use, and how many of them reads copy from its map.
    #[cfg(test)]
    pub(super) fn data_mapped(&self) -> (u64, u64) {
        let files = &*self.files;
        let maps = files.maps.read().unwrap_or_else(PoisonError::into_inner);
        let mapped = maps.data.as_ref().map_or(0, |m| m.len() as u64);
        (files.data_end.load(Ordering::Acquire), mapped)
    }
}

impl Drop for BodyLog {
    fn drop(&mut self) {
        self.files.marks().stop = true;
        self.files.wake.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

impl Files {
    /// Maps the files again where their maps end before `data_end` / `index_end`; a map that
    /// cannot be made leaves that file to `pread`. Called by the writer only (under the `tail`
    /// lock), so what it reads under the read lock still holds when it takes the write lock.
    fn cover(&self, data_end: u64, index_end: u64) {
        let short = |m: &Option<Mmap>, end: u64| m.as_ref().is_some_and(|m| (m.len() as u64) < end);
        let (data_short, index_short) = {
            let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
            (short(&maps.data, data_end), short(&maps.index, index_end))
        };
        if !(data_short || index_short) {
            return;
        }
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        if data_short {
            maps.data = map(&self.data, data_end, maps.data.take());
        }
        if index_short {
            maps.index = map(&self.index, index_end, maps.index.take());
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The syncing thread: an fsync every [`SYNC_EVERY`] while entries are unsynced.
    fn sync_until_stopped(&self) {
        let mut marks = self.marks();
        while !marks.stop {
            marks = self
                .wake
                .wait_timeout(marks, SYNC_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if !marks.stop && !marks.frozen && marks.synced != self.trusted.load(Ordering::Acquire)
            {
                drop(marks);
                self.sync();
                marks = self.marks();
            }
        }
    }

    /// Fsyncs both files and advances `synced` to the entries written before, unless a rollback
    /// came in between or an fsync has ever failed.
    fn sync(&self) {
        let (trusted, epoch) = {
            let marks = self.marks();
            (self.trusted.load(Ordering::Acquire), marks.epoch)
        };
        let synced = self.data.sync_data().and_then(|()| self.index.sync_data());
        let mut marks = self.marks();
        match synced {
            Ok(()) if !marks.frozen && marks.epoch == epoch => {
                // Two syncs may finish out of order: keep the higher mark
                marks.synced = marks.synced.max(trusted);
            }
            Ok(()) => {}
            Err(e) => {
                if !marks.frozen {
                    tracing::warn!(error = %e, "body log fsync failed; after a restart its newer entries are read from the store and rewritten");
                }
                marks.frozen = true;
            }
        }
    }
}

/// The entry's checksum: its height and length are in it, so that a zeroed entry or one copied
/// to another height does not pass.
pub(super) fn checksum(height: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&height.to_le_bytes());
    hasher.update(&(body.len() as u64).to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A read-only map of `file` at least twice as long as `covers` (and [`MIN_MAP`]); `old` when a
/// new one cannot be made: it still serves what it covers, and `pread` the rest.
fn map(file: &File, covers: u64, old: Option<Mmap>) -> Option<Mmap> {
    let len = covers.saturating_mul(2).max(MIN_MAP);
    let Ok(len) = usize::try_from(len) else {
        return old;
    };
    // SAFETY: the map is only read, and only below the written end of the file (see `Source`),
    // which never shrinks while the log is open. Bytes a rollback rewrites under a read are
    // copied out raw and then checked by their CRC, as with `pread`.
    match unsafe { MmapOptions::new().len(len).map(file) } {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::debug!(error = %e, "cannot map the body log; reading it with pread");
            old
        }
    }
}

/// Where a read of one of the log's files comes from: its map where that covers the bytes, else
/// the file.
#[derive(Clone, Copy)]
struct Source<'a> {
    file: &'a File,
    map: Option<&'a Mmap>,
}

impl<'a> Source<'a> {
    fn new(file: &'a File, map: Option<&'a Mmap>) -> Self {
        Self { file, map }
    }

    fn file(file: &'a File) -> Self {
        Self { file, map: None }
    }

    /// Where the map holds `len` bytes from `offset`, which the caller knows to be written
    /// bytes of the file.
    fn mapped(self, offset: u64, len: usize) -> Option<*const u8> {
        let map = self.map?;
        let end = offset.checked_add(len as u64)?;
        // SAFETY: `offset..end` lies inside the map
        (end <= map.len() as u64).then(|| unsafe { map.as_ptr().add(offset as usize) })
    }

    /// Fills `buf` from `offset` (written bytes of the file).
    fn read_exact_at(self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.mapped(offset, buf.len()) {
            // A raw copy rather than a slice of the map: the bytes may change under it (a
            // rollback rewriting them), which the CRC then catches.
            // SAFETY: the source lies inside the map, and `buf` does not overlap it.
            Some(src) => unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) },
            None => return self.file.read_exact_at(buf, offset),
        }
        Ok(())
    }

    /// `len` bytes from `offset` (written bytes of the file), copied out of the map without
    /// zeroing the buffer first.
    fn read_vec_at(self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let Some(src) = self.mapped(offset, len) else {
            let mut buf = vec![0; len];
            self.file.read_exact_at(&mut buf, offset)?;
            return Ok(buf);
        };
        let mut buf = Vec::with_capacity(len);
        // SAFETY: as in `read_exact_at`; the copy initialises all `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        Ok(buf)
    }
}

/// The index entry at `height`: the body's offset in the data file, its length and its CRC.
fn entry(index: Source<'_>, height: u64) -> Option<(u64, u32, u32)> {
    let mut raw = [0u8; ENTRY as usize];
    index.read_exact_at(&mut raw, height * ENTRY).ok()?;
    let offset = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(raw[12..].try_into().expect("4 bytes"));
    Some((offset, len, crc))
}

/// The body at `height` and where it ends in the data file, when its entry is sound: it ends
/// inside the first `data_end` bytes and its checksum matches.
fn sound_body(
    index: Source<'_>,
    data: Source<'_>,
    height: u64,
    data_end: u64,
) -> Option<(Vec<u8>, u64)> {
    let (offset, len, crc) = entry(index, height)?;
    // A damaged offset may overflow
    let end = offset
        .checked_add(u64::from(len))
        .filter(|&end| end <= data_end)?;
    let body = data.read_vec_at(len as usize, offset).ok()?;
    (checksum(height, &body) == crc).then_some((body, end))
}
