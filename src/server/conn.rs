//! One connection's life: where it stands (waiting for a request head, busy with a request,
//! idle between requests, shed), the socket wrapper that enforces the header and idle
//! timeouts while hyper waits for bytes, and the rewrite of hyper's own bodiless error
//! answers (400/414/431 to a head it could not parse) into the one JSON error shape.

use crate::error::Catalog;
use bytes::Bytes;
use prometheus::IntCounter;
use serde_json::json;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// Phases, kept in the top two bits of the state word; the rest is when the phase began, in
/// milliseconds since the tracker's epoch. One word, so a phase and its start change together.
pub(crate) const HEAD: u64 = 0;
pub(crate) const BUSY: u64 = 1;
pub(crate) const IDLE: u64 = 2;
pub(crate) const SHED: u64 = 3;
const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

fn word(phase: u64, since: u64) -> u64 {
    (phase << PHASE_SHIFT) | (since & SINCE_MASK)
}

/// Where one connection stands, shared by its socket, its requests and the tracker.
pub(crate) struct Conn {
    state: AtomicU64,
    epoch: Instant,
    /// Wakes the connection's task when the tracker sheds it.
    pub(crate) shed: Notify,
}

impl Conn {
    /// A new connection: waiting for its first request head from now on.
    pub(crate) fn new(epoch: Instant) -> Self {
        let c = Self {
            state: AtomicU64::new(0),
            epoch,
            shed: Notify::new(),
        };
        c.state.store(word(HEAD, c.now()), Ordering::Release);
        c
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The phase and when it began (ms since the epoch).
    pub(crate) fn phase(&self) -> (u64, u64) {
        split(self.state.load(Ordering::Acquire))
    }

    /// True while a request is being served (head read, response not yet all written).
    pub(crate) fn is_busy(&self) -> bool {
        self.phase().0 == BUSY
    }

    fn transition(&self, from: &[u64], to: u64) -> bool {
        let next = word(to, self.now());
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                from.contains(&split(w).0).then_some(next)
            })
            .is_ok()
    }

    /// A complete request head reached the service.
    pub(crate) fn begin_request(&self) {
        self.transition(&[HEAD, IDLE], BUSY);
    }

    /// The response is done with (written, or abandoned).
    pub(crate) fn end_request(&self) {
        self.transition(&[BUSY], IDLE);
    }

    /// The first bytes of the next request arrived on an idle connection.
    fn start_head(&self) {
        if split(self.state.load(Ordering::Acquire)).0 == IDLE {
            self.transition(&[IDLE], HEAD);
        }
    }

    /// Sheds the connection unless a request has begun; true when it was shed.
    pub(crate) fn try_shed(&self) -> bool {
        let shed = self.transition(&[HEAD, IDLE], SHED);
        if shed {
            self.shed.notify_one();
        }
        shed
    }

    /// When the current wait (for a head, or idle) runs out.
    fn deadline(&self, since: u64, timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(since) + timeout)
    }
}

fn split(w: u64) -> (u64, u64) {
    (w >> PHASE_SHIFT, w & SINCE_MASK)
}

/// Marks the request done when hyper lets go of the response body (after its last byte, or
/// when the client goes away).
pub(crate) struct RequestDone(pub(crate) Arc<Conn>);

impl RequestDone {
    pub(crate) fn begin(conn: Arc<Conn>) -> Self {
        conn.begin_request();
        Self(conn)
    }
}

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that ends its request when dropped.
pub(crate) struct TrackedBody {
    pub(crate) inner: axum::body::Body,
    pub(crate) _done: RequestDone,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The timeouts a socket enforces.
#[derive(Clone)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) header_timeouts: IntCounter,
}

/// The socket as hyper sees it. hyper polls it for bytes whenever it waits for a request head
/// or sits idle between requests, so the two deadlines live here and fire only then (hyper's
/// own header timer also runs while a kept-alive connection is idle, which would close it at
/// the header timeout rather than the idle one).
pub(crate) struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    /// When the timer runs out: at or before the deadline of the phase the connection is in.
    armed: Option<tokio::time::Instant>,
    catalog: Arc<Catalog>,
    /// Our answer in place of hyper's bodiless one, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// Runs while a write waits on a client that does not read: after the idle timeout
    /// without progress the connection closes, so a client cannot hold a slot by not reading.
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl Watched {
    pub(crate) fn new(
        io: TcpStream,
        conn: Arc<Conn>,
        timeouts: Timeouts,
        catalog: Arc<Catalog>,
    ) -> Self {
        Self {
            io,
            conn,
            timeouts,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            catalog,
            replacement: None,
            stall: Box::pin(tokio::time::sleep(Duration::ZERO)),
            stalled: false,
        }
    }

    /// Passes on a write's outcome, closing the connection once writes have made no progress
    /// for the idle timeout.
    fn watch_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        if !self.stalled {
            self.stalled = true;
            let at = tokio::time::Instant::now() + self.timeouts.idle;
            self.stall.as_mut().reset(at);
        }
        if self.stall.as_mut().poll(cx).is_ready() {
            tracing::debug!("closing a connection: the client stopped reading its answer");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client read nothing for api.idle_timeout_seconds",
            )));
        }
        Poll::Pending
    }

    /// Writes what is left of the replacement answer.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written)) = &mut self.replacement else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes over `buf` when it is hyper's own answer to a head it could not parse; true when
    /// it did (the caller then reports `buf` as written).
    fn intercept(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> io::Result<bool> {
        if self.replacement.is_some() {
            // Whatever hyper still sends of its own answer is dropped; ours goes out instead.
            if let Poll::Ready(r) = self.drive(cx) {
                r?;
            }
            return Ok(true);
        }
        if self.conn.is_busy() {
            return Ok(false);
        }
        let Some(status) = automatic_answer(buf) else {
            return Ok(false);
        };
        self.replacement = Some((render_answer(&self.catalog, status), 0));
        if let Poll::Ready(r) = self.drive(cx) {
            r?;
        }
        Ok(true)
    }
}

/// The status of hyper's automatic answer to an unparsable head, if `buf` starts one: a 400,
/// 414 or 431 without a body, written while no request was being served. Our own error
/// answers always carry a JSON body, so they never match.
fn automatic_answer(buf: &[u8]) -> Option<u16> {
    let head = buf.get(..buf.len().min(512))?;
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let status = match rest.get(..4)? {
        b"400 " => 400,
        b"414 " => 414,
        b"431 " => 431,
        _ => return None,
    };
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.contains("\r\ncontent-length: 0\r\n").then_some(status)
}

/// Our answer for a head hyper refused, in the error shape; the connection closes after it.
fn render_answer(catalog: &Catalog, status: u16) -> Vec<u8> {
    let (reason, code, info) = match status {
        414 => (
            "URI Too Long",
            super::head::URI_TOO_LONG,
            json!({"max_uri_bytes": super::head::MAX_URI_BYTES}),
        ),
        431 => (
            "Request Header Fields Too Large",
            super::head::HEADERS_TOO_LARGE,
            json!({"max_header_bytes": super::head::MAX_HEADER_BYTES, "max_headers": super::head::MAX_HEADERS}),
        ),
        _ => (
            "Bad Request",
            "REQ_001",
            json!({"reason": "the request line or a header is not valid HTTP/1.1"}),
        ),
    };
    let body = serde_json::to_vec(&catalog.body(code, None, &info))
        .expect("a JSON value always serializes");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if r.is_ok() && buf.filled().len() > before {
                this.conn.start_head();
            }
            return Poll::Ready(r);
        }
        let w = this.conn.state.load(Ordering::Acquire);
        let (phase, since) = split(w);
        let at = match phase {
            HEAD => this.conn.deadline(since, this.timeouts.header),
            IDLE => this.conn.deadline(since, this.timeouts.idle),
            SHED => return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into())),
            // A request is being served: its own timeout applies, not ours. The timer stays
            // armed no later than the idle timeout from now, so when hyper does not read again
            // after the request ends, the timer's wake-up finds the connection idle and holds
            // it to the idle deadline. (The end of each request used to wake this reader
            // instead: a task woken in its own poll, and with it, on an otherwise idle
            // runtime, another worker thread, once per request.)
            _ => tokio::time::Instant::now() + this.timeouts.idle,
        };
        // The timer may run early, never late: it is moved only to an earlier deadline, and
        // when it runs out before the deadline of the phase now it is set again. A kept-alive
        // connection thus sets it about once per idle timeout, not once per request (each
        // setting takes the runtime's timer lock).
        if this.armed.is_none_or(|armed| at < armed) {
            this.timer.as_mut().reset(at);
            this.armed = Some(at);
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            if this.armed.is_some_and(|armed| armed < at) {
                this.timer.as_mut().reset(at);
                this.armed = Some(at);
                continue;
            }
            if phase == BUSY {
                // Not reached (a busy deadline lies ahead of the timer when it fires), but a
                // busy connection is never closed here.
                return Poll::Pending;
            }
            if phase == HEAD {
                this.timeouts.header_timeouts.inc();
                tracing::debug!("closing a connection: no complete request head in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within api.header_timeout_seconds",
                )));
            }
            // Idle: end it like a client that went away; hyper closes without an answer.
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.intercept(cx, buf)? {
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.intercept(cx, first)? {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_move_only_along_the_allowed_edges() {
        let c = Conn::new(Instant::now());
        assert_eq!(c.phase().0, HEAD);
        c.begin_request();
        assert!(c.is_busy());
        assert!(!c.try_shed(), "a busy connection is never shed");
        c.end_request();
        assert_eq!(c.phase().0, IDLE);
        c.start_head();
        assert_eq!(c.phase().0, HEAD);
        assert!(c.try_shed());
        c.begin_request();
        assert_eq!(c.phase().0, SHED, "a shed connection stays shed");
    }

    #[test]
    fn only_bodiless_parse_error_answers_are_taken_over() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_answer(hyper_431), Some(431));
        let ours = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(automatic_answer(ours), None);
        assert_eq!(
            automatic_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        let text = String::from_utf8(render_answer(&Catalog::default(), 414)).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["detail"]["error_code"], "REQ_007");
    }
}
