//! One connection: its requests in order, their bodies, the answers, an
//! event stream's head, and the staged close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::route::{find, Lookup};
use super::{Accept, App, LogKind, Shared};
use crate::http::{self, ChunkedDecoder, Framing, Request, Response, Status, Version};
use crate::stream::{last_event_id, push_body, EventStream, SendError};
use crate::util::lock;

/// One accepted connection, shared by its thread, its stream and the
/// registry.
pub(super) struct Conn {
    pub(super) socket: TcpStream,
    pub(super) id: u64,
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
        lock(&self.server.connections).remove(&self.id);
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

/// The connection's read side: bytes received, not used yet (pipelining).
struct Reader<'a> {
    conn: &'a Conn,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// Reads a complete head (`Ok(None)`: closed or idle). It is parsed
    /// after a read with an LF or a KiB more, or a [`PARSE_PAUSE`]: a byte
    /// per packet cannot make the server re-parse 64 KiB per byte.
    fn read_head(&mut self, app: &App, first: bool) -> Result<Option<(Request, usize)>, Refusal> {
        let config = &app.config;
        let mut deadline =
            Instant::now() + if first { config.head_timeout } else { config.idle_timeout };
        let (mut head_started, mut parsed_len, mut new_line) = (false, 0, true);
        loop {
            if !self.buf.is_empty() {
                if !head_started && !first {
                    deadline = Instant::now() + config.head_timeout;
                }
                head_started = true;
                if new_line || self.buf.len() >= parsed_len + 1024 {
                    parsed_len = self.buf.len();
                    match http::parse_head(&self.buf, &config.limits) {
                        Ok(Status::Complete(head)) => return Ok(Some(head)),
                        Ok(Status::Partial) => {}
                        Err(e) => return Err((e.status(), e.description())),
                    }
                }
            }
            let before = self.buf.len();
            let unparsed = self.buf.len() > parsed_len;
            let pause = unparsed.then(|| Instant::now() + PARSE_PAUSE);
            match self.fill(pause.map_or(deadline, |p| p.min(deadline))) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err((400, "closed in the request head")),
                Ok(_) => new_line = self.buf[before..].contains(&b'\n'),
                Err(e) if is_timeout(&e) && unparsed && Instant::now() < deadline => {
                    new_line = true
                }
                Err(e) if is_timeout(&e) && !self.buf.is_empty() => {
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

    /// Reads the body after a head of `consumed` bytes.
    fn read_body(&mut self, framing: Framing, at: usize, app: &App) -> Result<Vec<u8>, Refusal> {
        let deadline = Instant::now() + app.config.body_timeout;
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
            Framing::Chunked => ChunkedDecoder::new(app.config.limits.max_body),
        };
        let mut body = Vec::new();
        loop {
            match decoder.decode(&self.buf, &mut body) {
                Ok(Status::Complete(used)) => {
                    self.buf.drain(..used);
                    return Ok(body);
                }
                Ok(Status::Partial) => {
                    self.buf.clear();
                    self.fill_body(deadline)?;
                }
                Err(e) => return Err((e.status(), e.description())),
            }
        }
    }

    fn fill_body(&mut self, deadline: Instant) -> Result<(), Refusal> {
        match self.fill(deadline) {
            Ok(0) => Err((400, "closed in the request body")),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err((408, "request body too slow")),
            Err(_) => Err((400, "read error in the request body")),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Serves one connection, then closes it in stages, unless a stream handed
/// to another thread still uses it (its last owner closes it then).
pub(super) fn serve(app: &Arc<App>, conn: Arc<Conn>) {
    let buf = Vec::new();
    let mut reader = Reader { conn: &conn, buf };
    let _ = conn.socket.set_write_timeout(Some(app.config.write_timeout));
    let mut first = true;
    while !app.shared.shutting_down.load(Ordering::SeqCst) {
        let started = Instant::now();
        match reader.read_head(app, first) {
            Ok(None) => break,
            Ok(Some((req, consumed))) => {
                first = false;
                if !handle_request(app, &conn, &mut reader, req, consumed, started) {
                    break;
                }
            }
            Err((status, why)) => {
                // Counted before the answer, which a client may act on.
                app.shared.count(|s| &mut s.requests);
                app.shared.count(|s| &mut s.bad_requests);
                let response = error_response(status, http::reason_phrase(status));
                let bytes = write_response(&conn.socket, &response, Version::Http11, false, true);
                app.log_entry(
                    Some(conn.remote),
                    ("-", "-"),
                    (status, bytes),
                    started.elapsed(),
                    LogKind::Request,
                    Some(why),
                );
                break;
            }
        }
    }
    drop(reader);
    if Arc::strong_count(&conn) == 1 {
        close_staged(&conn.socket, app.config.linger_timeout);
    }
}

/// Writes a response; returns the bytes written (0 if the write failed).
pub(super) fn write_response(
    socket: &TcpStream,
    response: &Response,
    version: Version,
    head_only: bool,
    close: bool,
) -> u64 {
    let mut out = Vec::with_capacity(256 + response.get_body().len());
    response.write_to(&mut out, version, head_only, close);
    let sent = (&*socket).write_all(&out).is_ok();
    u64::from(sent) * out.len() as u64
}

/// Closes in stages (RFC 9112 9.6: "half-close by closing only the write
/// side", then "continue to read ... until it receives a corresponding
/// close"): drops at most [`LINGER_BYTES`] for at most `linger` (zero: what
/// has arrived, without blocking).
pub(super) fn close_staged(socket: &TcpStream, linger: Duration) {
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_nonblocking(linger.is_zero());
    let deadline = Instant::now() + linger;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        if !linger.is_zero() {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() || socket.set_read_timeout(Some(wait)).is_err() {
                break;
            }
        }
        match (&*socket).read(&mut sink) {
            Ok(0) => break,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn error_response(status: u16, text: &str) -> Response {
    Response::text(status, format!("{text}\n"))
}

/// The message of a caught panic, for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    format!("handler panicked: {}", text.unwrap_or("(no message)"))
}

/// Answers one request; returns whether the connection stays open.
fn handle_request(
    app: &Arc<App>,
    conn: &Arc<Conn>,
    reader: &mut Reader<'_>,
    mut req: Request,
    consumed: usize,
    started: Instant,
) -> bool {
    req.set_remote_addr(conn.remote);
    app.shared.count(|s| &mut s.requests);
    let keep = req.keep_alive() && !app.shared.shutting_down.load(Ordering::SeqCst);
    let framing = (req.body_framing(&app.config.limits), req.expects_continue());
    let mut x = Exchange { app: app.clone(), conn: conn.clone(), req, started };
    // A body that cannot be delimited or an unmet expectation ends it.
    let (framing, expect) = match framing {
        (Ok(framing), Ok(expect)) => (framing, expect),
        (Err(e), _) | (_, Err(e)) => return x.refuse((e.status(), e.description())),
    };
    let has_body = !matches!(framing, Framing::None | Framing::Length(0));
    // OPTIONS, 404 and 405 leave a body unread: the connection then ends.
    let route = match find(&app.routes, x.req.method(), x.req.path()) {
        Lookup::Route(route) => Ok(route),
        _ if x.req.method() == "OPTIONS" => Err(app.options(&x.req)),
        Lookup::WrongMethod(allowed) => {
            Err(error_response(405, "Method Not Allowed").header("Allow", &allowed.join(", ")))
        }
        Lookup::Missing => Err(error_response(404, "Not Found")),
    };
    let route = match route {
        Ok(route) => route,
        Err(response) => {
            let keep = keep && !has_body;
            if keep {
                reader.buf.drain(..consumed);
            }
            return x.respond(response, keep, None);
        }
    };
    if has_body && expect && x.req.version() == Version::Http11 {
        let go_on = Response::continue_100();
        write_response(&conn.socket, &go_on, Version::Http11, false, false);
    }
    match reader.read_body(framing, consumed, app) {
        Ok(body) => x.req.set_body(body),
        Err(refusal) => return x.refuse(refusal),
    }
    match panic::catch_unwind(AssertUnwindSafe(|| (route.handler)(&x.req))) {
        Ok(Ok(accept)) if accept.head.is_valid() => x.serve_stream(accept),
        // An invalid accept is a 500, as an invalid response is.
        Ok(Ok(accept)) => x.respond(accept.head, keep, None),
        Ok(Err(response)) => x.respond(response, keep, None),
        Err(payload) => {
            app.shared.count(|s| &mut s.panics);
            let response = error_response(500, "Internal Server Error");
            x.respond(response, false, Some(&panic_message(&*payload)))
        }
    }
}

/// One request being answered.
struct Exchange {
    app: Arc<App>,
    conn: Arc<Conn>,
    req: Request,
    started: Instant,
}

impl Exchange {
    fn log(&self, sent: (u16, u64), kind: LogKind, error: Option<&str>) {
        let (remote, name) = (Some(self.conn.remote), (self.req.method(), self.req.path()));
        let elapsed = self.started.elapsed();
        self.app.log_entry(remote, name, sent, elapsed, kind, error);
    }

    /// Writes and logs a response; returns whether the connection stays open.
    fn respond(&self, response: Response, keep: bool, error: Option<&str>) -> bool {
        let (req, socket) = (&self.req, &self.conn.socket);
        let response = self.app.with_cors(req, response);
        let head_only = req.method() == "HEAD";
        let bytes = write_response(socket, &response, req.version(), head_only, !keep);
        let status = response.invalid_reason().map_or(response.status(), |_| 500);
        let error = error.or(response.invalid_reason());
        self.log((status, bytes), LogKind::Request, error);
        bytes > 0 && keep
    }

    /// Answers a request the server refuses itself; the connection ends.
    fn refuse(&self, (status, why): Refusal) -> bool {
        self.app.shared.count(|s| &mut s.bad_requests);
        self.respond(error_response(status, why), false, Some(why))
    }

    /// Sends the event-stream head and runs the accepted body on this
    /// thread; the connection ends with it.
    fn serve_stream(self, accept: Accept) -> bool {
        let (app, conn, req) = (&self.app, &self.conn, &self.req);
        let chunked = req.version() == Version::Http11;
        let mut out = Vec::with_capacity(256);
        let head = app.with_cors(req, accept.head);
        head.write_stream_head(&mut out, chunked);
        let head_only = req.method() == "HEAD";
        if !head_only {
            let mut first = Vec::new();
            if let Some(text) = &app.config.connected_comment {
                crate::event::push_lines(&mut first, b"", text);
            }
            if let Some(delay) = app.config.initial_retry {
                crate::event::push_retry(&mut first, delay);
            }
            push_body(&mut out, &first, chunked);
        }
        let _ = conn.socket.set_nodelay(true);
        // Before the write: a client may react to the head before it returns.
        let head_sent = Instant::now();
        let sent = (&conn.socket).write_all(&out).is_ok();
        let bytes = u64::from(sent) * out.len() as u64;
        self.log((200, bytes), LogKind::Request, None);
        if !sent || head_only {
            return false;
        }
        let (app, shared_conn, remote) = (self.app.clone(), self.conn.clone(), conn.remote);
        let id = last_event_id(req);
        // The stream keeps what its end's log entry needs, not the request.
        let (method, path) = (req.method().to_string(), req.path().to_string());
        let (end_app, started) = (self.app.clone(), self.started);
        let on_end = Box::new(move |bytes, error: Option<&str>| {
            lock(&end_app.shared.stats).open_streams -= 1;
            let (name, elapsed) = ((&*method, &*path), started.elapsed());
            end_app.log_entry(Some(remote), name, (200, bytes), elapsed, LogKind::StreamEnd, error);
        });
        let head = (head_sent, out.len() as u64);
        let stream = EventStream::new(shared_conn, remote, chunked, head, id, on_end);
        // Kept until the body returns, to record why it ended.
        let shared = stream.shared().clone();
        lock(&app.shared.stats).open_streams += 1;
        lock(&app.shared.streams).push(Arc::downgrade(&shared));
        if app.shared.shutting_down.load(Ordering::SeqCst) {
            shared.close_with(&[], Duration::from_millis(100));
        }
        let ended_by = match panic::catch_unwind(AssertUnwindSafe(|| (accept.body)(stream))) {
            Ok(Ok(())) => None,
            // A client that left is the normal end.
            Ok(Err(e)) if e.is::<SendError>() => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(payload) => {
                app.shared.count(|s| &mut s.panics);
                shared.fail();
                Some(panic_message(&*payload))
            }
        };
        shared.set_ended_by(ended_by);
        false
    }
}
