//! One connection: the connect thread, the request, the response head and
//! the body as it arrives.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ClientBuilder, Disconnect, Failure, Hop, Url, MIN_TIMEOUT};
use crate::http::{
    parse_response_head, unfold, ChunkedDecoder, Error, Framing, Limits, ResponseHead, Status,
};
use crate::parser::Parser;
use crate::util::{lock, spawn, wait_until};

/// The largest response head accepted, interim `1xx` heads included.
const MAX_HEAD: usize = 64 * 1024;
/// What a request to another origin does not carry (Fetch, HTTP-redirect
/// fetch, step 14), and the fields that describe a body a redirect dropped
/// (step 13).
const CREDENTIALS: [&str; 4] = ["authorization", "cookie", "proxy-authorization", "host"];
const BODY_FIELDS: [&str; 4] =
    ["content-type", "content-encoding", "content-language", "content-location"];

/// What the client and its close handles share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    /// Signalled by `close`, `restart` and a finished connection attempt.
    wake: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) closed: bool,
    /// `restart` was called and `next` has not acted on it yet.
    pub(super) restart: bool,
    /// The current connection, so that `close` can shut it down.
    stream: Option<Arc<TcpStream>>,
}

impl State {
    pub(super) fn interrupted(&self) -> bool {
        self.closed || self.restart
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Applies `change` and wakes the client wherever it blocks: shuts the
    /// connection down and ends a sleep or the wait for a connection attempt.
    pub(super) fn interrupt(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        if let Some(stream) = state.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.wake.notify_all();
    }

    /// Sleeps up to `delay`, less if the client is closed or restarted;
    /// whether it was not.
    pub(super) fn sleep(&self, delay: Duration) -> bool {
        let deadline = Instant::now().checked_add(delay);
        let mut state = self.lock();
        while !state.interrupted() {
            let Ok(woken) = wait_until(&self.wake, state, deadline) else { return true };
            state = woken;
        }
        false
    }

    /// Resolves and connects on a helper thread, so that `timeout` bounds a
    /// slow name lookup too and `close` interrupts the wait. The result of
    /// an attempt given up goes to its own slot, dropped with it.
    #[inline(never)]
    pub(super) fn connect(
        self: &Arc<Shared>,
        url: &Url,
        timeout: Duration,
    ) -> Result<Connection, Failure> {
        let failed = |e| Failure::Retry(Disconnect::Connect(e));
        let deadline = Instant::now().checked_add(timeout);
        let slot = Arc::new(Mutex::new(None));
        let (shared, result) = (Arc::clone(self), Arc::clone(&slot));
        let address = format!("{}:{}", url.host, url.port);
        let spawned = spawn("stdsse-connect".into(), None, move || {
            *lock(&result) = Some(connect_to(&address, deadline));
            let _state = shared.lock(); // the waiter is waiting, or has not looked yet
            shared.wake.notify_all();
        });
        spawned.map_err(failed)?;
        let mut state = self.lock();
        loop {
            if state.interrupted() {
                return Err(Failure::Retry(Disconnect::Restart)); // dropped: `next` acts on it
            }
            if let Some(result) = lock(&slot).take() {
                let stream = Arc::new(result.map_err(failed)?);
                state.stream = Some(Arc::clone(&stream));
                return Ok(Connection { stream, shared: Arc::clone(self) });
            }
            state = wait_until(&self.wake, state, deadline).map_err(|_| {
                let why = format!("connect timed out after {} ms", timeout.as_millis());
                failed(io::Error::new(ErrorKind::TimedOut, why))
            })?;
        }
    }
}

/// A connection, registered so that `close` can shut it down; dropping it
/// unregisters it (the socket closes with the last reference).
#[derive(Debug)]
pub(super) struct Connection {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.lock().stream.take_if(|s| Arc::ptr_eq(s, &self.stream));
    }
}

/// Resolves `address` and tries each of its addresses until `deadline`.
fn connect_to(address: &str, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, format!("no address found for {address}"));
    for addr in address.to_socket_addrs()? {
        let stream = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(Duration::ZERO) => break,
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match stream {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends the request and reads up to the end of the final (non-1xx)
/// response head, within the head timeout and [`MAX_HEAD`] bytes for all
/// heads together. Returns the head and the body bytes read with it.
pub(super) fn exchange(
    config: &ClientBuilder,
    connection: &Connection,
    hop: &Hop,
    last_event_id: &str,
) -> Result<(ResponseHead, Vec<u8>), Disconnect> {
    let (idle, timeout, mut stream) =
        (config.idle_timeout, config.head_timeout, &*connection.stream);
    stream.set_write_timeout(idle).map_err(Disconnect::Io)?;
    let request = request_bytes(config, hop, last_event_id);
    stream.write_all(&request).map_err(|e| io_failure(e, idle))?;
    let deadline = Instant::now().checked_add(timeout);
    let (mut buf, mut chunk) = (Vec::new(), [0; 4096]);
    let mut limits = Limits { max_headers: usize::MAX, max_head: MAX_HEAD, ..Limits::default() };
    (limits.max_request_line, limits.max_header_line) = (MAX_HEAD, MAX_HEAD);
    loop {
        unfold(&mut buf);
        match parse_response_head(&buf, &limits) {
            // Interim answers (100 Continue, 103 Early Hints) come before the
            // real one; 101 Switching Protocols is final (and unwanted).
            Ok(Status::Complete((head, end))) => {
                buf.drain(..end);
                if !(100..200).contains(&head.status()) || head.status() == 101 {
                    stream.set_read_timeout(idle).map_err(Disconnect::Io)?;
                    return Ok((head, buf));
                }
                limits.max_head -= end;
                continue;
            }
            Ok(Status::Partial) => {}
            Err(Error::HeadTooLarge) => return Err(Disconnect::HeadTooLarge { limit: MAX_HEAD }),
            Err(error) => return Err(Disconnect::Protocol(error)),
        }
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(Disconnect::HeadTimeout(timeout));
        }
        // Wait until the idle timeout or the deadline, whichever comes first
        // (the deadline's timeout loops to the check above).
        let wait = idle.map_or(left, |idle| idle.min(left)).max(MIN_TIMEOUT);
        stream.set_read_timeout(Some(wait)).map_err(Disconnect::Io)?;
        match read_some(stream, &mut chunk, Some(wait), Some("the response head")) {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Disconnect::IdleTimeout(_)) if idle.is_none_or(|idle| idle >= left) => {}
            Err(e) => return Err(e),
        }
    }
}

fn request_bytes(config: &ClientBuilder, hop: &Hop, last_event_id: &str) -> Vec<u8> {
    let body = config.body.as_deref().filter(|_| hop.send_body);
    let any = |name: &str, names: &[&str]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    let custom: Vec<&(String, String)> = config
        .headers
        .iter()
        .filter(|(name, _)| !(hop.cross_origin && any(name, &CREDENTIALS)))
        .filter(|(name, _)| hop.send_body || !any(name, &BODY_FIELDS))
        .collect();
    let mut out = format!("{} {} HTTP/1.1\r\n", hop.method, hop.url.target);
    let authority = hop.url.authority();
    for (name, value) in
        [("Host", &*authority), ("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
    {
        if !custom.iter().any(|(custom, _)| custom.eq_ignore_ascii_case(name)) {
            out += &format!("{name}: {value}\r\n");
        }
    }
    if !last_event_id.is_empty() {
        out += &format!("Last-Event-ID: {last_event_id}\r\n");
    }
    for (name, value) in custom {
        out += &format!("{name}: {value}\r\n");
    }
    if body.is_some() || !matches!(hop.method.as_str(), "GET" | "HEAD") {
        out += &format!("Content-Length: {}\r\n", body.map_or(0, <[u8]>::len));
    }
    [(out + "\r\n").as_bytes(), body.unwrap_or_default()].concat()
}

fn io_failure(error: io::Error, idle: Option<Duration>) -> Disconnect {
    match (error.kind(), idle) {
        (ErrorKind::WouldBlock | ErrorKind::TimedOut, Some(idle)) => Disconnect::IdleTimeout(idle),
        _ => Disconnect::Io(error),
    }
}

/// Reads one read's worth from `stream`, retrying on EINTR; `what` names
/// what a close now would cut (`None`: a close is the end).
fn read_some(
    mut stream: &TcpStream,
    buf: &mut [u8],
    idle: Option<Duration>,
    what: Option<&str>,
) -> Result<usize, Disconnect> {
    loop {
        match stream.read(buf) {
            Ok(0) => {
                return Err(what.map_or(Disconnect::Ended, |what| {
                    let why = format!("the server closed the connection before the end of {what}");
                    Disconnect::Io(io::Error::new(ErrorKind::UnexpectedEof, why))
                }))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e, idle)),
        }
    }
}

/// The body of an open event stream, read incrementally.
#[derive(Debug)]
pub(super) struct Body {
    connection: Connection,
    /// `None`: until the server closes; `Length`: this many bytes left.
    framing: Framing,
    /// Chunked, unbounded: an event stream is endless (4 GiB on 32-bit targets).
    decoder: ChunkedDecoder,
    idle: Option<Duration>,
    /// Set when the body ended or broke: returned by the next read, after
    /// the items already fed have been pulled.
    end: Option<Disconnect>,
}

impl Body {
    pub(super) fn new(connection: Connection, framing: Framing, idle: Option<Duration>) -> Body {
        Body { connection, framing, decoder: ChunkedDecoder::new(usize::MAX), idle, end: None }
    }

    /// Feeds the next bytes from the socket to `parser`; `Err` once the body ended.
    pub(super) fn read_into(&mut self, parser: &mut Parser) -> Result<(), Disconnect> {
        self.end.take().map_or(Ok(()), Err)?;
        let cut = (self.framing != Framing::None).then_some("the body");
        let mut buf = [0; 16 * 1024];
        let n = read_some(&self.connection.stream, &mut buf, self.idle, cut)?;
        self.feed(&buf[..n], parser);
        Ok(())
    }

    /// Feeds the body bytes in `input` to `parser` (an empty body ends here).
    pub(super) fn feed(&mut self, input: &[u8], parser: &mut Parser) {
        match &mut self.framing {
            Framing::None => parser.feed(input),
            Framing::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                parser.feed(&input[..take]);
                *left -= take as u64;
                self.end = (*left == 0).then_some(Disconnect::Ended);
            }
            Framing::Chunked => {
                let mut decoded = Vec::new();
                let result = self.decoder.decode(input, &mut decoded);
                parser.feed(&decoded);
                self.end = match result {
                    Ok(Status::Partial) => None,
                    Ok(Status::Complete(_)) => Some(Disconnect::Ended),
                    Err(e) => Some(Disconnect::Protocol(e)),
                };
            }
        }
    }
}
