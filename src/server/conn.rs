//! One connection: its requests in order, their bodies, the answers, an
//! event stream's head, and the staged close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Accept, App, LogEntry, LogKind, Shared};
use crate::event::{push_lines, push_retry};
use crate::http::{self, ChunkedDecoder, Framing, Request, Response, Status, Version};
use crate::stream::{EventStream, SendError};
use crate::util::{later, lock};

/// One accepted connection, shared by its thread, its stream and the
/// registry.
pub(super) struct Conn {
    pub(super) socket: TcpStream,
    pub(super) remote: SocketAddr,
    pub(super) server: Arc<Shared>,
}

impl AsRef<TcpStream> for Conn {
    fn as_ref(&self) -> &TcpStream {
        &self.socket
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The connection thread lingered already; other owners must not wait.
        close_staged(&self.socket, Duration::ZERO);
        lock(&self.server.stats).open_connections -= 1;
        let _guard = lock(&self.server.closed_lock);
        self.server.closed.notify_all();
    }
}

/// A request the server refuses itself: the status, and why (for the log).
type Refusal = (u16, &'static str);

/// How long a client may pause before what it sent is parsed anyway.
const PARSE_PAUSE: Duration = Duration::from_millis(50);

/// Most bytes a staged close reads and drops.
const LINGER_BYTES: usize = 1024 * 1024;

/// Serves one connection, then closes it in stages, unless a stream handed
/// to another thread still uses it (its last owner closes it then).
#[inline(never)]
pub(super) fn serve(app: &Arc<App>, conn: Arc<Conn>) {
    let _ = conn.socket.set_write_timeout(Some(app.config.write_timeout));
    let mut session = Session { app: app.clone(), conn, buf: Vec::new(), started: Instant::now() };
    let mut first = true;
    while !app.shared.shutting_down.load(Ordering::SeqCst) {
        session.started = Instant::now();
        let (req, consumed) = match session.read_head(first) {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err((status, why)) => {
                // Counted before the answer, which a client may act on.
                app.shared.count(|s| &mut s.requests);
                app.shared.count(|s| &mut s.bad_requests);
                let response = Response::error(status, http::reason_phrase(status));
                let bytes = response.send(&session.conn.socket, Version::Http11, false, true);
                session.log(("-", "-"), (status, bytes), LogKind::Request, Some(why));
                break;
            }
        };
        if !session.handle(req, consumed) {
            break;
        }
        first = false;
    }
    if Arc::strong_count(&session.conn) == 1 {
        close_staged(&session.conn.socket, app.config.linger_timeout);
    }
}

/// Closes in stages (RFC 9112 9.6: "half-close by closing only the write
/// side", then "continue to read ... until it receives a corresponding
/// close"): drops at most [`LINGER_BYTES`] for at most `linger` (zero: what
/// has arrived, without blocking).
pub(super) fn close_staged(socket: &TcpStream, linger: Duration) {
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_nonblocking(linger.is_zero());
    let (deadline, mut sink, mut left) = (later(linger), [0u8; 4096], LINGER_BYTES);
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if !linger.is_zero() && (wait.is_zero() || socket.set_read_timeout(Some(wait)).is_err()) {
            break;
        }
        match (&*socket).read(&mut sink) {
            Ok(n @ 1..) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
}

fn refusal(e: http::Error) -> Refusal {
    (e.status(), e.description())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The message of a caught panic, for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    format!("handler panicked: {}", text.unwrap_or("(no message)"))
}

/// A connection's thread: the bytes received and not used yet (pipelining),
/// and when the current request started.
struct Session {
    app: Arc<App>,
    conn: Arc<Conn>,
    buf: Vec<u8>,
    started: Instant,
}

impl Session {
    fn log(&self, name: (&str, &str), sent: (u16, u64), kind: LogKind, error: Option<&str>) {
        let ((method, path), (status, bytes)) = (name, sent);
        let (remote, duration) = (Some(self.conn.remote), self.started.elapsed());
        self.app.log(LogEntry { remote, method, path, status, bytes, duration, kind, error });
    }

    /// Reads a complete head (`Ok(None)`: closed or idle). It is parsed
    /// after a read with an LF or a KiB more, or a [`PARSE_PAUSE`]: a byte
    /// per packet cannot make the server re-parse 64 KiB per byte.
    fn read_head(&mut self, first: bool) -> Result<Option<(Request, usize)>, Refusal> {
        let app = self.app.clone();
        let config = &app.config;
        let mut deadline = later(if first { config.head_timeout } else { config.idle_timeout });
        let (mut idle, mut parsed_len, mut new_line) = (!first, 0, true);
        loop {
            if !self.buf.is_empty() {
                // Empty lines before a request are ignored (RFC 9112 2.2), its clock too.
                if idle && self.buf.iter().any(|b| !b"\r\n".contains(b)) {
                    idle = false;
                    deadline = later(config.head_timeout);
                }
                if new_line || self.buf.len() >= parsed_len + 1024 {
                    parsed_len = self.buf.len();
                    let parsed = http::parse_head(&self.buf, &config.limits).map_err(refusal)?;
                    if let Status::Complete(head) = parsed {
                        return Ok(Some(head));
                    }
                }
            }
            let (before, unparsed) = (self.buf.len(), self.buf.len() > parsed_len);
            let wait = if unparsed { deadline.min(Instant::now() + PARSE_PAUSE) } else { deadline };
            let read = self.fill(wait);
            let timeout = read.as_ref().is_err_and(is_timeout);
            match read {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(self.cut_off("closed in the request head")),
                Ok(_) => new_line = self.buf[before..].contains(&b'\n'),
                Err(_) if timeout && unparsed && Instant::now() < deadline => new_line = true,
                Err(_) if timeout && !self.buf.is_empty() => {
                    return Err((408, "request head too slow"))
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// One read of up to 8 KiB, waiting no later than `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.socket.set_read_timeout(Some(left))?;
        let len = self.buf.len();
        self.buf.resize(len + 8192, 0);
        let result = (&self.conn.socket).read(&mut self.buf[len..]);
        self.buf.truncate(len + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Reads the body after a head of `at` bytes.
    fn read_body(&mut self, framing: Framing, at: usize) -> Result<Vec<u8>, Refusal> {
        let deadline = later(self.app.config.body_timeout);
        self.buf.drain(..at);
        let mut decoder = match framing {
            Framing::None => return Ok(Vec::new()),
            Framing::Length(n) => {
                let n = n as usize; // bounded by max_body
                while self.buf.len() < n {
                    self.fill_body(deadline)?;
                }
                return Ok(self.buf.drain(..n).collect());
            }
            Framing::Chunked => ChunkedDecoder::new(self.app.config.limits.max_body),
        };
        let mut body = Vec::new();
        loop {
            if let Status::Complete(used) = decoder.decode(&self.buf, &mut body).map_err(refusal)? {
                self.buf.drain(..used);
                return Ok(body);
            }
            self.buf.clear();
            self.fill_body(deadline)?;
        }
    }

    /// A request cut off by the client (400), or by the shutdown's closing
    /// of the read side (503: not the client's fault).
    fn cut_off(&self, why: &'static str) -> Refusal {
        match self.app.shared.shutting_down.load(Ordering::SeqCst) {
            true => (503, "shutting down"),
            false => (400, why),
        }
    }

    fn fill_body(&mut self, deadline: Instant) -> Result<(), Refusal> {
        match self.fill(deadline) {
            Ok(0) => Err(self.cut_off("closed in the request body")),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err((408, "request body too slow")),
            Err(_) => Err((400, "read error in the request body")),
        }
    }

    /// Answers one request with a head of `consumed` bytes; returns whether
    /// the connection stays open.
    fn handle(&mut self, mut req: Request, consumed: usize) -> bool {
        let app = self.app.clone();
        req.remote_addr = Some(self.conn.remote);
        app.shared.count(|s| &mut s.requests);
        let keep = req.keep_alive() && !app.shared.shutting_down.load(Ordering::SeqCst);
        // A body that cannot be delimited or an unmet expectation ends it.
        let (framing, expect) = match (req.body_framing(&app.config.limits), req.expects_continue())
        {
            (Ok(framing), Ok(expect)) => (framing, expect),
            (Err(e), _) | (_, Err(e)) => return self.refuse(&req, refusal(e)),
        };
        let has_body = !matches!(framing, Framing::None | Framing::Length(0));
        let route = match app.route_for(&req) {
            Ok(route) => route,
            // OPTIONS, 404 and 405 leave a body unread: the connection then ends.
            Err(response) => {
                self.buf.drain(..consumed);
                return self.respond(&req, response, keep && !has_body, None);
            }
        };
        if has_body && expect && req.version() == Version::Http11 {
            let _ = (&self.conn.socket).write_all(http::CONTINUE);
        }
        match self.read_body(framing, consumed) {
            Ok(body) => req.body = body,
            Err(refusal) => return self.refuse(&req, refusal),
        }
        match panic::catch_unwind(AssertUnwindSafe(|| (route.handler)(&req))) {
            Ok(Ok(accept)) if accept.head.is_valid() => self.serve_stream(&req, accept),
            // An invalid accept is a 500, as an invalid response is.
            Ok(Ok(accept)) => self.respond(&req, accept.head, keep, None),
            Ok(Err(response)) => self.respond(&req, response, keep, None),
            Err(payload) => {
                app.shared.count(|s| &mut s.panics);
                let response = Response::error(500, "Internal Server Error");
                self.respond(&req, response, false, Some(&panic_message(&*payload)))
            }
        }
    }

    /// Writes and logs a response; returns whether the connection stays open.
    fn respond(&self, req: &Request, response: Response, keep: bool, error: Option<&str>) -> bool {
        let response = self.app.with_cors(req, response);
        let (socket, head_only) = (&self.conn.socket, req.method() == "HEAD");
        let bytes = response.send(socket, req.version(), head_only, !keep);
        let status = response.invalid_reason().map_or(response.status(), |_| 500);
        let error = error.or(response.invalid_reason());
        self.log((req.method(), req.path()), (status, bytes), LogKind::Request, error);
        bytes > 0 && keep
    }

    /// Answers a request the server refuses itself; the connection ends.
    fn refuse(&self, req: &Request, (status, why): Refusal) -> bool {
        self.app.shared.count(|s| &mut s.bad_requests);
        self.respond(req, Response::error(status, why), false, Some(why))
    }

    /// Sends the event-stream head and runs the accepted body on this
    /// thread; the connection ends with it.
    fn serve_stream(&self, req: &Request, accept: Accept) -> bool {
        let (config, chunked, head_only) =
            (&self.app.config, req.version() == Version::Http11, req.method() == "HEAD");
        let mut first = Vec::new();
        if let Some(text) = config.connected_comment.as_ref().filter(|_| !head_only) {
            push_lines(&mut first, b"", text);
        }
        if let Some(delay) = config.initial_retry.filter(|_| !head_only) {
            push_retry(&mut first, delay);
        }
        let _ = self.conn.socket.set_nodelay(true);
        // Before the write: a client may react to the head before it returns.
        let head_sent = Instant::now();
        let head = self.app.with_cors(req, accept.head);
        let bytes = head.write_stream_head(&self.conn.socket, chunked, &first);
        self.log((req.method(), req.path()), (200, bytes), LogKind::Request, None);
        if bytes == 0 || head_only {
            return false;
        }
        let id = req.header("Last-Event-ID").map(str::to_string);
        let id = id.or_else(|| req.query_param("lastEventId"));
        let (method, path) = (req.method().to_string(), req.path().to_string());
        let (app, remote, started) = (self.app.clone(), self.conn.remote, self.started);
        let on_end = Box::new(move |bytes, error: Option<&str>| {
            lock(&app.shared.stats).open_streams -= 1;
            let (method, path, duration) = (&*method, &*path, started.elapsed());
            let (remote, status, kind) = (Some(remote), 200, LogKind::StreamEnd);
            app.log(LogEntry { remote, method, path, status, bytes, duration, kind, error });
        });
        let stream =
            EventStream::new(self.conn.clone(), remote, chunked, (head_sent, bytes), id, on_end);
        // Kept until the body returns, to record why it ended.
        let shared = stream.shared().clone();
        let server = &self.app.shared;
        lock(&server.stats).open_streams += 1;
        lock(&server.streams).push(Arc::downgrade(&shared));
        if server.shutting_down.load(Ordering::SeqCst) {
            shared.close_with(&[], Duration::from_millis(100));
        }
        let ended_by = match panic::catch_unwind(AssertUnwindSafe(|| (accept.body)(stream))) {
            Ok(Ok(())) => None,
            // A client that left is the normal end.
            Ok(Err(e)) if e.is::<SendError>() => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(payload) => {
                server.count(|s| &mut s.panics);
                shared.fail();
                Some(panic_message(&*payload))
            }
        };
        shared.set_ended_by(ended_by);
        false
    }
}
