//! A size-rotated log file as Python's `RotatingFileHandler` keeps one: before a line would
//! take the file past `maxBytes`, `name.log` becomes `name.log.1`, `.1` becomes `.2`, ... and the
//! oldest beyond `backupCount` is dropped. Lines are never split across files.

use super::queue::Destination;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only log file, rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// `(max bytes, backups)`; `None` → never rotated.
    limit: Option<(u64, usize)>,
    rotations: prometheus::IntCounter,
    /// Lines of the current batch not yet written (see [`Destination`]).
    pending: Vec<u8>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    /// Opens (creating its folder) `path` for appending. As in Python, a `max_bytes` or
    /// `backups` of 0 means the file is never rotated.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        backups: usize,
        rotate: bool,
        rotations: prometheus::IntCounter,
    ) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let limit = (rotate && max_bytes > 0 && backups > 0).then_some((max_bytes, backups));
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            limit,
            rotations,
            pending: Vec::new(),
        })
    }

    fn rotate(&mut self, backups: usize) -> io::Result<()> {
        for n in (1..backups).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        self.rotations.inc();
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((max, backups)) = self.limit
            && self.size > 0
            && self.size + buf.len() as u64 > max
        {
            // A failed rotation (a backup made read-only, say) keeps the line in the current
            // file rather than losing it.
            let _ = self.rotate(backups);
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Batched: the lines of a batch go out in one write per file they land in.
impl Destination for RotatingFile {
    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        let held = self.size + self.pending.len() as u64;
        if let Some((max, backups)) = self.limit
            && held > 0
            && held + line.len() as u64 > max
        {
            // What the batch holds so far belongs to the file before the rotation.
            Destination::flush(self)?;
            let _ = self.rotate(backups);
        }
        self.pending.extend_from_slice(line);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending);
        if r.is_ok() {
            self.size += self.pending.len() as u64;
        }
        self.pending.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_before_a_line_would_pass_the_limit_and_keeps_the_backups_asked_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("logs/x.log");
        let counter = prometheus::IntCounter::new("r", "r").expect("valid");
        let mut f = RotatingFile::open(&path, 25, 2, true, counter.clone()).expect("opens");
        for i in 0..10 {
            f.write_all(format!("line {i:04}\n").as_bytes())
                .expect("writes");
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("reads");
        // Ten-byte lines, 25 bytes at most: two lines a file.
        assert_eq!(read(path.clone()), "line 0008\nline 0009\n");
        assert_eq!(read(numbered(&path, 1)), "line 0006\nline 0007\n");
        assert_eq!(read(numbered(&path, 2)), "line 0004\nline 0005\n");
        assert!(!numbered(&path, 3).exists());
        assert_eq!(counter.get(), 4);
    }

    #[test]
    fn batched_lines_rotate_at_the_same_places_as_single_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("y.log");
        let counter = prometheus::IntCounter::new("r", "r").expect("valid");
        let mut f = RotatingFile::open(&path, 25, 2, true, counter.clone()).expect("opens");
        for batch in [0..3, 3..10] {
            for i in batch {
                Destination::line(&mut f, format!("line {i:04}\n").as_bytes()).expect("takes");
            }
            Destination::flush(&mut f).expect("writes");
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("reads");
        assert_eq!(read(path.clone()), "line 0008\nline 0009\n");
        assert_eq!(read(numbered(&path, 1)), "line 0006\nline 0007\n");
        assert_eq!(read(numbered(&path, 2)), "line 0004\nline 0005\n");
        assert_eq!(counter.get(), 4);
    }

    #[test]
    fn never_rotates_when_rotation_is_off_or_a_limit_is_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, max, backups, on) in [("a", 10, 2, false), ("b", 0, 2, true), ("c", 10, 0, true)]
        {
            let path = dir.path().join(name);
            let counter = prometheus::IntCounter::new("r", "r").expect("valid");
            let mut f = RotatingFile::open(&path, max, backups, on, counter).expect("opens");
            for _ in 0..5 {
                f.write_all(b"0123456789\n").expect("writes");
            }
            assert_eq!(std::fs::metadata(&path).expect("exists").len(), 55);
            assert!(!numbered(&path, 1).exists());
        }
    }
}
