//! The SSE body on a socket, shared by the server and the hub: an
//! [`EventStream`] written on its connection's thread, or [`Detached`] and
//! written by a hub's fan-out thread (one chunk per frame, see [the
//! server's docs](crate::server#event-streams)); the keep-alive and the
//! check for a client that went away.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use crate::event::{Event, Frame};
use crate::http::{body_bytes, framed, framed_len, LAST_CHUNK};
use crate::util::{jittered, later, lock, wait_until};
use crate::writer::EventWriter;

/// The connection a stream is on (its owner's drop does the bookkeeping).
pub(crate) type Conn = Arc<dyn AsRef<TcpStream> + Send + Sync>;

/// Told when a stream ends: bytes sent (head included), the body's error.
pub(crate) type OnEnd = Box<dyn FnOnce(u64, Option<&str>) + Send + Sync>;

/// The most frames one vectored write of a detached stream takes.
pub(crate) const MAX_FRAMES: usize = 64;

/// The keep-alive: an empty comment line.
pub(crate) fn keep_alive_frame() -> Frame {
    static FRAME: OnceLock<Frame> = OnceLock::new();
    FRAME.get_or_init(|| Frame::from(Event::new().comment(""))).clone()
}

/// How often streams are checked for keep-alives and clients that left.
pub(crate) fn tick(keep_alive: Option<Duration>) -> Duration {
    keep_alive
        .map_or(Duration::MAX, |k| k / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// A stream's shutdown goodbye: the event, then `retry:` jittered per stream.
pub(crate) fn goodbye(event: Option<&Event>, retry: Option<(Duration, Duration)>) -> Vec<Frame> {
    let retry = retry.map(|r| Event::new().retry(jittered(r)));
    event.cloned().into_iter().chain(retry).map(Frame::from).collect()
}

/// `Write` for a stream's socket: in a chunked body, one chunk per call
/// (`EventWriter` calls it once per event).
struct SocketWriter {
    conn: Conn,
    chunked: bool,
    /// Every byte sent on the stream, head included.
    sent: u64,
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bytes = body_bytes(buf, self.chunked);
        ((*self.conn).as_ref()).write_all(&bytes)?;
        self.sent = self.sent.saturating_add(bytes.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream's mutable part; its lock is the write lock: keep-alives, the
/// goodbye and events never interleave.
struct State {
    writer: EventWriter<SocketWriter>,
    last_write: Instant,
    /// Once set, every send fails.
    closed: bool,
    /// Handed to a hub, which probes and sends keep-alives itself.
    detached: bool,
    error: Option<io::ErrorKind>,
    ended_by: Option<String>,
}

impl State {
    /// Counts bytes written besides the writer's.
    fn count(&mut self, n: usize) {
        let sent = &mut self.writer.get_mut().sent;
        *sent = sent.saturating_add(n as u64);
    }
}

/// One open event stream, shared by its handle and the registry.
pub(crate) struct StreamShared {
    conn: Conn,
    remote: SocketAddr,
    state: Mutex<State>,
    wake: Condvar,
    chunked: bool,
    head_sent: Instant,
    last_event_id: Option<String>,
    on_end: Option<OnEnd>,
}

impl StreamShared {
    fn socket(&self) -> &TcpStream {
        (*self.conn).as_ref()
    }

    fn write(
        &self,
        write: impl FnOnce(&mut EventWriter<SocketWriter>) -> io::Result<()>,
    ) -> Result<(), SendError> {
        let mut state = lock(&self.state);
        if !state.closed {
            match write(&mut state.writer) {
                Ok(()) => state.last_write = Instant::now(),
                Err(e) => self.mark_closed(&mut state, Some(e.kind())),
            }
        }
        (!state.closed).then_some(()).ok_or(SendError(state.error))
    }

    /// Marks the stream closed (by `error`, if one), shuts the write side
    /// and wakes sleepers.
    fn mark_closed(&self, state: &mut State, error: Option<io::ErrorKind>) {
        (state.closed, state.error) = (true, error.or(state.error));
        let _ = self.socket().shutdown(Shutdown::Write);
        self.wake.notify_all();
    }

    /// Closes at once: the client sees a broken body, not an end.
    pub(crate) fn fail(&self) {
        self.mark_closed(&mut lock(&self.state), None);
    }

    pub(crate) fn set_ended_by(&self, why: Option<String>) {
        lock(&self.state).ended_by = why;
    }

    /// Ends an open stream after `goodbye` and (chunked) the last chunk,
    /// blocking at most `wait` (zero: not at all), then closes it. Call
    /// only between frames.
    pub(crate) fn close_with(&self, goodbye: &[Frame], wait: Duration) {
        self.end(&mut lock(&self.state), goodbye, wait);
    }

    /// The server's shutdown: [`close_with`](Self::close_with), unless a
    /// write holds the stream for all of `wait` (the ticker's visit does
    /// not) or a hub owns it (it may be inside a frame): then cut, so that
    /// the write fails and the client drops the partial event.
    pub(crate) fn shut_down(&self, goodbye: &[Frame], wait: Duration) {
        let deadline = later(wait);
        loop {
            match self.state.try_lock() {
                Ok(mut state) if !state.detached => return self.end(&mut state, goodbye, wait),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => return drop(self.socket().shutdown(Shutdown::Both)),
            }
        }
    }

    fn end(&self, state: &mut State, goodbye: &[Frame], wait: Duration) {
        if !state.closed {
            let data: Vec<u8> = goodbye.iter().flat_map(|f| f.as_bytes()).copied().collect();
            let mut bytes = body_bytes(&data, self.chunked);
            bytes.extend_from_slice(if self.chunked { LAST_CHUNK } else { b"" });
            let mut socket = self.socket();
            let ready = match wait.is_zero() {
                true => socket.set_nonblocking(true),
                false => socket.set_write_timeout(Some(wait)),
            };
            if ready.is_ok() && socket.write_all(&bytes).is_ok() {
                state.count(bytes.len());
            }
        }
        self.mark_closed(state, None);
    }

    /// The ticker's visit, skipped while a write holds the lock (the
    /// writer learns of a dead client itself).
    pub(crate) fn tick(&self, keep_alive: Option<Duration>) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if !state.detached {
            self.check(&mut state, keep_alive);
        }
    }

    /// Checks without blocking whether the client closed or reset the
    /// connection and sends a due keep-alive; returns whether the stream is
    /// closed. A detached socket stays non-blocking.
    fn check(&self, state: &mut State, keep_alive: Option<Duration>) -> bool {
        if state.closed {
            return true;
        }
        let (socket, mut sink) = (self.socket(), [0; 4096]);
        // Bytes after the request mean nothing here: dropped, 64 KiB a check, so that a close shows.
        let mut reads =
            (0..16).map(|_| (&*socket).read(&mut sink)).skip_while(|r| matches!(r, Ok(1..)));
        let mut gone = socket.set_nonblocking(true).is_err()
            || (reads.next()).is_some_and(|r| {
                r.map_or_else(|e| e.kind() != io::ErrorKind::WouldBlock, |n| n == 0)
            });
        if !gone && keep_alive.is_some_and(|i| state.last_write.elapsed() >= i) {
            let bytes = body_bytes(keep_alive_frame().as_bytes(), self.chunked);
            match (&*socket).write(&bytes) {
                Ok(n) if n == bytes.len() => {
                    state.last_write = Instant::now();
                    state.count(n);
                }
                // A full buffer: the next send blocks and times out.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Part of a keep-alive cannot be repaired: the stream ends.
                _ => gone = true,
            }
        }
        let _ = socket.set_nonblocking(state.detached);
        if gone {
            self.mark_closed(state, None);
        }
        gone
    }
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        // A body that let go between events ends cleanly.
        self.close_with(&[], Duration::ZERO);
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(on_end) = self.on_end.take() {
            on_end(state.writer.get_ref().sent, state.ended_by.as_deref());
        }
    }
}

/// An open `text/event-stream` response. Each send is one write, blocking
/// at most the server's [`write_timeout`](crate::Server::write_timeout);
/// once the stream is closed, every send fails. Dropping it closes it.
pub struct EventStream {
    shared: Arc<StreamShared>,
}

impl EventStream {
    /// A stream whose head of `head_bytes` was sent at `head_sent`.
    pub(crate) fn new(
        conn: Conn,
        remote: SocketAddr,
        chunked: bool,
        (head_sent, head_bytes): (Instant, u64),
        last_event_id: Option<String>,
        on_end: OnEnd,
    ) -> EventStream {
        let writer =
            EventWriter::new(SocketWriter { conn: conn.clone(), chunked, sent: head_bytes });
        let (last_write, error, ended_by) = (Instant::now(), None, None);
        let state = State { writer, last_write, closed: false, detached: false, error, ended_by };
        let (state, wake, on_end) = (Mutex::new(state), Condvar::new(), Some(on_end));
        let shared =
            StreamShared { conn, remote, state, wake, chunked, head_sent, last_event_id, on_end };
        EventStream { shared: Arc::new(shared) }
    }

    pub(crate) fn shared(&self) -> &Arc<StreamShared> {
        &self.shared
    }

    /// Sends one event.
    pub fn send(&mut self, event: &Event) -> Result<(), SendError> {
        self.shared.write(|w| w.send(event))
    }

    /// Sends an event encoded once for many streams.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), SendError> {
        self.shared.write(|w| w.send_frame(frame))
    }

    /// Sends a comment (clients ignore it).
    pub fn comment(&mut self, text: &str) -> Result<(), SendError> {
        self.shared.write(|w| w.comment(text))
    }

    /// Sends a `retry:` hint (the client's reconnection delay).
    pub fn retry(&mut self, delay: Duration) -> Result<(), SendError> {
        self.shared.write(|w| w.retry(delay))
    }

    /// Whether the stream has ended (the client is checked now).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.check(&mut lock(&self.shared.state), None)
    }

    /// Sleeps for `duration`, or fails as soon as the stream is found
    /// closed (the ticker checks at least once a second).
    pub fn sleep(&self, duration: Duration) -> Result<(), SendError> {
        let deadline = Instant::now().checked_add(duration);
        let mut state = lock(&self.shared.state);
        while !state.closed {
            let Ok(woken) = wait_until(&self.shared.wake, state, deadline) else { return Ok(()) };
            state = woken;
        }
        Err(SendError(state.error))
    }

    /// Where the client resumes: the `Last-Event-ID` header, else the
    /// `lastEventId` query parameter (for polyfills).
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        self.shared.last_event_id.as_deref()
    }

    /// The client's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.remote
    }

    /// Bytes of events sent so far (not the head).
    #[must_use]
    pub fn bytes_sent(&self) -> u64 {
        lock(&self.shared.state).writer.bytes_written()
    }

    /// Hands the stream to a fan-out thread (the socket becomes
    /// non-blocking for good; the ticker leaves it alone).
    pub(crate) fn detach(self) -> Detached {
        let mut state = lock(&self.shared.state);
        state.detached = true;
        if self.shared.socket().set_nonblocking(true).is_err() {
            self.shared.mark_closed(&mut state, None);
        }
        drop(state);
        Detached { shared: self.shared }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("peer", &self.shared.remote).finish_non_exhaustive()
    }
}

/// A send on an [`EventStream`] failed: the stream is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendError(Option<io::ErrorKind>);

impl SendError {
    /// The I/O error that closed the stream, if one did.
    #[must_use]
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.0
    }
}

error_display!(SendError(SendError(kind), f) => {
    f.write_str("event stream closed")?;
    kind.map_or(Ok(()), |kind| write!(f, ": {kind}"))
});

/// A stream owned by a fan-out thread: non-blocking, possibly partial writes.
pub(crate) struct Detached {
    shared: Arc<StreamShared>,
}

impl Detached {
    /// One non-blocking write of up to [`MAX_FRAMES`] `frames`, framed,
    /// from byte `skip` of the first; returns the bytes written.
    pub(crate) fn write_frames<'a>(
        &self,
        frames: impl Iterator<Item = &'a Frame>,
        mut skip: usize,
    ) -> io::Result<usize> {
        let mut heads = [[0u8; 18]; MAX_FRAMES];
        let mut slices = Vec::with_capacity(3 * MAX_FRAMES);
        for (frame, head) in frames.zip(heads.iter_mut()) {
            for part in framed(head, frame.as_bytes(), self.shared.chunked) {
                slices.push(IoSlice::new(&part[skip.min(part.len())..]));
                skip = skip.saturating_sub(part.len());
            }
        }
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let written = self.shared.socket().write_vectored(&slices);
        match &written {
            Ok(n) => state.count(*n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.shared.mark_closed(&mut state, Some(e.kind())),
        }
        written
    }

    /// The bytes a frame of `len` bytes takes on the wire.
    pub(crate) fn wire_len(&self, len: usize) -> usize {
        framed_len(len, self.shared.chunked)
    }

    /// Whether the client left (checked now) or the stream was closed.
    pub(crate) fn is_gone(&self) -> bool {
        self.shared.check(&mut lock(&self.shared.state), None)
    }

    /// Closes now; `between_frames` ends a chunked body cleanly.
    pub(crate) fn close(&self, between_frames: bool) {
        match between_frames {
            true => self.shared.close_with(&[], Duration::ZERO),
            false => self.shared.fail(),
        }
    }

    /// The server's write timeout, which the socket still carries.
    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.shared.socket().write_timeout().ok().flatten()
    }

    /// When the head was sent: later events are the stream's.
    pub(crate) fn head_sent(&self) -> Instant {
        self.shared.head_sent
    }
}
