//! One writer thread for every log handler. A record is formatted once per formatter by the
//! thread that logs it and appended, with the set of handlers it is for, to one shared batch;
//! the writer thread takes the whole batch at once and writes it with one call per handler.
//! Nothing that logs ever waits for the disk: when the batch already holds [`QUEUED_BYTES`],
//! the new line is dropped and counted against each handler it was for.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes the batch may hold before new lines are dropped: about 60,000 access lines, or a
/// second of requests at full speed with two formatters while a slow disk (or a starved
/// writer thread) catches up. Taken in [`CHUNK`]s only as lines arrive.
pub const QUEUED_BYTES: usize = 16 << 20;

/// The batch grows by chunks of this size (never copied when it grows); up to [`SPARE`]
/// emptied chunks are kept for reuse, so an idle queue holds at most 1 MiB.
const CHUNK: usize = 64 << 10;
const SPARE: usize = 16;

/// A batch larger than this many lines is followed at once by the next, without a pause.
const BUSY: usize = 1024;

/// After writing a batch the writer pauses this long, so that under load batches grow large
/// and the thread wakes seldom; a line waits at most this long for its write. Shutdown skips it.
const GATHER: Duration = Duration::from_millis(5);

/// A handler's destination as the writer thread sees it.
pub trait Destination: Send {
    /// Takes one whole line (already ending with its newline).
    fn line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Writes out what `line` kept back; called once per batch.
    fn flush(&mut self) -> io::Result<()>;
}

/// A stream (the console): the lines of a batch go out in one write.
pub struct Stream<W: Write + Send> {
    out: W,
    pending: Vec<u8>,
}

impl<W: Write + Send> Stream<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::new(),
        }
    }
}

impl<W: Write + Send> Destination for Stream<W> {
    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(line);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self
            .out
            .write_all(&self.pending)
            .and_then(|_| self.out.flush());
        self.pending.clear();
        r
    }
}

#[derive(Default)]
struct Batch {
    /// Each line as `[handlers: u64 LE][length: u32 LE][bytes]`, never split across chunks.
    chunks: Vec<Vec<u8>>,
    bytes: usize,
    lines: usize,
    /// Emptied chunks, for reuse.
    spare: Vec<Vec<u8>>,
    /// The writer thread is parked waiting for a line.
    idle: bool,
    closing: bool,
}

struct Shared {
    batch: Mutex<Batch>,
    wake: Condvar,
    /// Lines dropped, per handler.
    dropped: Vec<Arc<AtomicU64>>,
}

/// Where records are handed to the writer thread. At most 64 handlers (a bit each).
#[derive(Clone)]
pub struct Queue(Arc<Shared>);

/// Stops the writer thread once every queued line is written; held until the process ends.
pub struct Writer {
    queue: Queue,
    thread: Option<JoinHandle<()>>,
}

/// Most handlers one queue serves.
pub const MAX_HANDLERS: usize = 64;

impl Queue {
    /// Starts the writer thread over `destinations` (handler `i` is bit `i`). Returns the
    /// queue, the guard that flushes on drop, and each handler's drop counter.
    pub fn start(
        destinations: Vec<Box<dyn Destination>>,
    ) -> io::Result<(Self, Writer, Vec<Arc<AtomicU64>>)> {
        let dropped: Vec<Arc<AtomicU64>> = destinations
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let shared = Arc::new(Shared {
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            dropped: dropped.clone(),
        });
        let queue = Queue(shared);
        let worker = queue.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || worker.run(destinations))?;
        Ok((
            queue.clone(),
            Writer {
                queue,
                thread: Some(thread),
            },
            dropped,
        ))
    }

    /// Queues `line` for the handlers whose bits are set in `handlers`; never blocks on the
    /// writer (the lock is held only to append).
    #[cfg(test)]
    pub fn push(&self, handlers: u64, line: &[u8]) {
        self.push_each(&[(handlers, 0..line.len())], line);
    }

    /// Queues each `(handlers, range)` of `lines` (one record's line per formatter), as
    /// [`Queue::push`] would one by one but under one taking of the lock.
    pub fn push_each(&self, each: &[(u64, Range<usize>)], lines: &[u8]) {
        let mut wake = false;
        {
            let Ok(mut b) = self.0.batch.lock() else {
                return;
            };
            for (handlers, range) in each {
                let (handlers, line) = (*handlers, &lines[range.clone()]);
                if handlers == 0 {
                    continue;
                }
                let need = 12 + line.len();
                if b.bytes + need > QUEUED_BYTES || b.closing {
                    self.count_dropped(handlers);
                    continue;
                }
                let b = &mut *b;
                let room = b
                    .chunks
                    .last()
                    .is_some_and(|c| c.capacity() - c.len() >= need);
                if !room {
                    let chunk = match b.spare.pop() {
                        Some(c) if c.capacity() >= need => c,
                        _ => Vec::with_capacity(need.max(CHUNK)),
                    };
                    b.chunks.push(chunk);
                }
                if let Some(c) = b.chunks.last_mut() {
                    c.extend_from_slice(&handlers.to_le_bytes());
                    c.extend_from_slice(&(line.len() as u32).to_le_bytes());
                    c.extend_from_slice(line);
                }
                b.bytes += need;
                b.lines += 1;
                wake |= std::mem::take(&mut b.idle);
            }
        }
        // Only a parked writer needs the (system call) wake-up; a busy one finds the line.
        if wake {
            self.0.wake.notify_one();
        }
    }

    fn count_dropped(&self, handlers: u64) {
        for (i, d) in self.0.dropped.iter().enumerate() {
            if handlers & (1 << i) != 0 {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn run(&self, mut destinations: Vec<Box<dyn Destination>>) {
        let mut taken: Vec<Vec<u8>> = Vec::new();
        loop {
            let (closing, lines) = {
                let Ok(mut b) = self.0.batch.lock() else {
                    return;
                };
                while b.lines == 0 && !b.closing {
                    b.idle = true;
                    b = match self.0.wake.wait(b) {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                }
                // The chunks written last time go back for reuse as the full ones are taken.
                for mut c in taken.drain(..) {
                    if b.spare.len() < SPARE && c.capacity() == CHUNK {
                        c.clear();
                        b.spare.push(c);
                    }
                }
                std::mem::swap(&mut taken, &mut b.chunks);
                let lines = std::mem::take(&mut b.lines);
                b.bytes = 0;
                b.idle = false;
                (b.closing, lines)
            };
            for chunk in &taken {
                write_batch(chunk, &mut destinations);
            }
            flush_all(&mut destinations);
            if closing {
                // Lines queued after the last swap are refused (`push` sees `closing`).
                return;
            }
            if lines < BUSY {
                std::thread::sleep(GATHER);
            }
        }
    }
}

/// Splits a chunk into its lines and gives each to its handlers. Write errors are dropped: a
/// log that cannot be written must not stop the service (the line is lost, as with Python).
fn write_batch(mut bytes: &[u8], destinations: &mut [Box<dyn Destination>]) {
    while bytes.len() >= 12 {
        let (head, rest) = bytes.split_at(12);
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&head[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[8..]);
        let (mask, len) = (u64::from_le_bytes(mask), u32::from_le_bytes(len) as usize);
        let (line, rest) = rest.split_at(len.min(rest.len()));
        for (i, d) in destinations.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                let _ = d.line(line);
            }
        }
        bytes = rest;
    }
}

/// Writes out what each destination holds (one write each; nothing when it holds nothing).
fn flush_all(destinations: &mut [Box<dyn Destination>]) {
    for d in destinations.iter_mut() {
        let _ = d.flush();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut b) = self.queue.0.batch.lock() {
            b.closing = true;
        }
        self.queue.0.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as they reach a destination, and how many flushes (batches) carried them.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Destination for Seen {
        fn line(&mut self, line: &[u8]) -> io::Result<()> {
            if let Ok(mut s) = self.0.lock() {
                s.0.extend_from_slice(line);
            }
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            if let Ok(mut s) = self.0.lock() {
                s.1 += 1;
            }
            Ok(())
        }
    }

    #[test]
    fn lines_reach_only_their_handlers_in_order_and_all_are_written_by_shutdown() {
        let (a, b) = (Seen::default(), Seen::default());
        let (q, writer, dropped) =
            Queue::start(vec![Box::new(a.clone()), Box::new(b.clone())]).expect("starts");
        for i in 0..1000 {
            q.push(
                if i % 2 == 0 { 0b11 } else { 0b01 },
                format!("{i}\n").as_bytes(),
            );
        }
        drop(writer);
        let (a, b) = (a.0.lock().expect("a"), b.0.lock().expect("b"));
        let want_a: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let want_b: String = (0..1000).step_by(2).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&a.0), want_a);
        assert_eq!(String::from_utf8_lossy(&b.0), want_b);
        // Batched: far fewer writes than lines.
        assert!(a.1 < 1000, "{} flushes", a.1);
        assert_eq!(dropped[0].load(Ordering::Relaxed), 0);
    }

    /// Never takes a line: holds the writer thread inside its first batch.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);

    impl Destination for Stuck {
        fn line(&mut self, _: &[u8]) -> io::Result<()> {
            let (m, c) = &*self.0;
            let mut go = m.lock().expect("lock");
            while !*go {
                go = c.wait(go).expect("wait");
            }
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (q, writer, dropped) =
            Queue::start(vec![Box::new(Stuck(gate.clone()))]).expect("starts");
        q.push(1, b"first\n");
        // The writer takes the first line and blocks on it; wait until the batch is empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.0.batch.lock().expect("lock").lines != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "writer never took the line"
            );
            std::thread::yield_now();
        }
        let started = std::time::Instant::now();
        // 1,024 bytes a line with its header: the queue takes exactly this many.
        let line = [b'x'; 1012];
        for _ in 0..QUEUED_BYTES / 1024 + 10 {
            q.push(1, &line);
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(dropped[0].load(Ordering::Relaxed), 10);
        *gate.0.lock().expect("lock") = true;
        gate.1.notify_all();
        drop(writer);
    }
}
