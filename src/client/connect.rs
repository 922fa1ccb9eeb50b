//! One connection: the connect thread, the request, the response head and
//! the body as it arrives.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::util::wait_until;
use std::thread;
use std::time::{Duration, Instant};

use super::url::Url;
use super::{ClientBuilder, Disconnect, Failure, Hop, MIN_TIMEOUT};
use crate::http::{
    parse_response_head, ChunkedDecoder, Error, Framing, Limits, ResponseHead, Status,
};
use crate::parser::Parser;

/// The largest response head accepted, interim `1xx` heads included.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The read buffer of a connection.
const READ_BUF: usize = 16 * 1024;

/// What the client and its close handles share.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Signalled by `close` and by a finished connection attempt.
    pub(super) wake: Condvar,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) closed: bool,
    /// `restart` was called and `next` has not acted on it yet.
    pub(super) restart: bool,
    /// The current connection, so that `close` can shut it down.
    pub(super) stream: Option<Arc<TcpStream>>,
    /// Numbers connection attempts: a late result of an abandoned attempt
    /// is dropped.
    pub(super) attempt: u64,
    /// The result of the current connection attempt.
    pub(super) connected: Option<io::Result<TcpStream>>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        crate::util::lock(&self.state)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closed, or a restart is pending.
    pub(super) fn interrupted(&self) -> bool {
        let state = self.lock();
        state.closed || state.restart
    }

    /// Whether a restart was pending (it is not any more).
    pub(super) fn take_restart(&self) -> bool {
        std::mem::take(&mut self.lock().restart)
    }

    /// Wakes the client wherever it blocks (for `close`, `restart` and
    /// drop): a connection attempt still running delivers to nobody, the
    /// current connection is shut down (which ends a blocked read or
    /// write), and a sleep or a wait for a connection ends.
    pub(super) fn interrupt(&self, state: &mut State) {
        state.attempt = state.attempt.wrapping_add(1);
        state.connected = None;
        if let Some(stream) = state.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.wake.notify_all();
    }

    /// Sleeps up to `delay`, less if the client is closed.
    pub(super) fn sleep(&self, delay: Duration) {
        let deadline = Instant::now().checked_add(delay);
        let mut state = self.lock();
        while !state.closed && !state.restart {
            match wait_until(&self.wake, state, deadline) {
                Ok(woken) => state = woken,
                Err(_) => return,
            }
        }
    }

    /// Resolves and connects on a helper thread, so that a slow name lookup
    /// is bounded by `timeout` too and `close` interrupts the wait. The
    /// stream is registered for `close`.
    pub(super) fn connect(
        self: &Arc<Shared>,
        url: &Url,
        timeout: Duration,
    ) -> Result<Arc<TcpStream>, Failure> {
        let deadline = Instant::now().checked_add(timeout);
        let attempt = {
            let mut state = self.lock();
            state.attempt = state.attempt.wrapping_add(1);
            state.connected = None;
            state.attempt
        };
        let shared = Arc::clone(self);
        let address = url.address();
        let spawned = thread::Builder::new()
            .name("stdsse-connect".into())
            .spawn(move || {
                let result = connect_to(&address, deadline);
                let mut state = shared.lock();
                if state.attempt == attempt && !state.closed {
                    state.connected = Some(result);
                    shared.wake.notify_all();
                }
            });
        if let Err(e) = spawned {
            return Err(Failure::Retry(Disconnect::Connect(e)));
        }
        let mut state = self.lock();
        loop {
            if state.closed || state.restart {
                return Err(Failure::Interrupted);
            }
            if let Some(result) = state.connected.take() {
                let stream = Arc::new(result.map_err(|e| Failure::Retry(Disconnect::Connect(e)))?);
                state.stream = Some(Arc::clone(&stream));
                return Ok(stream);
            }
            state = match wait_until(&self.wake, state, deadline) {
                Ok(woken) => woken,
                Err(mut state) => {
                    state.attempt = state.attempt.wrapping_add(1);
                    return Err(Failure::Retry(Disconnect::Connect(timed_out(timeout))));
                }
            };
        }
    }

    /// Forgets `stream` as the current connection (it closes when the last
    /// reference goes).
    pub(super) fn release(&self, stream: &Arc<TcpStream>) {
        let mut state = self.lock();
        if state
            .stream
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            state.stream = None;
        }
    }
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect timed out after {} ms", timeout.as_millis()),
    )
}

/// Resolves `address` and tries each of its addresses until `deadline`.
fn connect_to(address: &str, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        let stream = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                TcpStream::connect_timeout(&addr, left)
            }
            None => TcpStream::connect(addr),
        };
        match stream {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address found for {address}"),
        )
    }))
}

/// Sends the request on `stream` and reads the final response head.
/// Returns the head and the body bytes read with it.
pub(super) fn exchange(
    config: &ClientBuilder,
    stream: &TcpStream,
    url: &Url,
    hop: &Hop,
    last_event_id: &str,
) -> Result<(ResponseHead, Vec<u8>), Disconnect> {
    stream
        .set_read_timeout(config.idle_timeout)
        .map_err(Disconnect::Io)?;
    stream
        .set_write_timeout(config.idle_timeout)
        .map_err(Disconnect::Io)?;
    let request = request_bytes(config, url, hop, last_event_id);
    let mut writer = stream;
    writer
        .write_all(&request)
        .and_then(|()| writer.flush())
        .map_err(|e| io_failure(e, config.idle_timeout))?;
    let head = read_head(stream, config.idle_timeout, config.head_timeout)?;
    stream
        .set_read_timeout(config.idle_timeout)
        .map_err(Disconnect::Io)?;
    Ok(head)
}

/// The request head and body.
pub(super) fn request_bytes(
    config: &ClientBuilder,
    url: &Url,
    hop: &Hop,
    last_event_id: &str,
) -> Vec<u8> {
    let body = config.body.as_deref().filter(|_| hop.send_body);
    // Headers a redirect to another origin must not carry, and headers that
    // describe a body a redirect dropped (Fetch, HTTP-redirect fetch).
    let dropped = |name: &str| {
        let any = |names: &[&str]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
        (hop.cross_origin && any(&["authorization", "cookie", "proxy-authorization", "host"]))
            || (!hop.send_body
                && any(&[
                    "content-type",
                    "content-encoding",
                    "content-language",
                    "content-location",
                ]))
    };
    let custom: Vec<(&str, &str)> = config
        .headers
        .iter()
        .filter(|(name, _)| !dropped(name))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let has = |name: &str| custom.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let authority = url.authority();
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(custom.len() + 5);
    if !has("host") {
        fields.push(("Host", &authority));
    }
    if !has("accept") {
        fields.push(("Accept", "text/event-stream"));
    }
    if !has("cache-control") {
        fields.push(("Cache-Control", "no-cache"));
    }
    if !last_event_id.is_empty() {
        fields.push(("Last-Event-ID", last_event_id));
    }
    fields.extend_from_slice(&custom);
    let length = body.map_or(0, <[u8]>::len).to_string();
    if body.is_some() || !matches!(hop.method.as_str(), "GET" | "HEAD") {
        fields.push(("Content-Length", &length));
    }

    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(hop.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(url.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.unwrap_or_default());
    out
}

/// A read or write error as a reason to reconnect.
fn io_failure(error: io::Error, idle: Option<Duration>) -> Disconnect {
    match (error.kind(), idle) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(idle)) => {
            Disconnect::IdleTimeout(idle)
        }
        _ => Disconnect::Io(error),
    }
}

/// Reads one read's worth from `stream`, retrying on EINTR.
fn read_some(
    mut stream: &TcpStream,
    buf: &mut [u8],
    idle: Option<Duration>,
) -> Result<usize, Disconnect> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e, idle)),
        }
    }
}

/// Reads up to the end of the final (non-1xx) response head, within
/// `timeout` and [`MAX_HEAD`] bytes for all heads together (leaves the
/// socket's read timeout changed). Returns it and the bytes read after it.
fn read_head(
    stream: &TcpStream,
    idle: Option<Duration>,
    timeout: Duration,
) -> Result<(ResponseHead, Vec<u8>), Disconnect> {
    let deadline = Instant::now().checked_add(timeout);
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    // The bytes of the interim heads already read.
    let mut interim = 0usize;
    loop {
        let limits = Limits {
            max_request_line: MAX_HEAD,
            max_header_line: MAX_HEAD,
            max_headers: usize::MAX,
            max_head: MAX_HEAD - interim,
            max_body: 0,
        };
        match parse_response_head(&buf, &limits) {
            // Interim answers (100 Continue, 103 Early Hints) come before the
            // real one; 101 Switching Protocols is final (and unwanted).
            Ok(Status::Complete((head, end))) => {
                buf.drain(..end);
                if !(100..200).contains(&head.status()) || head.status() == 101 {
                    return Ok((head, buf));
                }
                interim += end;
                continue;
            }
            Ok(Status::Partial) => {}
            Err(Error::HeadTooLarge) => return Err(Disconnect::HeadTooLarge { limit: MAX_HEAD }),
            Err(error) => return Err(Disconnect::Protocol(error)),
        }
        // Wait for the next byte until the idle timeout or the deadline,
        // whichever comes first.
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(Disconnect::HeadTimeout(timeout));
        }
        let (wait, by_deadline) = match idle {
            Some(idle) if idle < left => (idle, false),
            _ => (left.max(MIN_TIMEOUT), true),
        };
        stream
            .set_read_timeout(Some(wait))
            .map_err(Disconnect::Io)?;
        let n = match read_some(stream, &mut chunk, Some(wait)) {
            Err(Disconnect::IdleTimeout(_)) if by_deadline => {
                return Err(Disconnect::HeadTimeout(timeout))
            }
            result => result?,
        };
        if n == 0 {
            return Err(eof("the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server closed the connection before the end of `what`.
fn eof(what: &str) -> Disconnect {
    let why = format!("the server closed the connection before the end of {what}");
    Disconnect::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why))
}

/// The body of an open event stream, read incrementally.
pub(super) struct Body {
    pub(super) stream: Arc<TcpStream>,
    /// `None`: until the server closes; `Length`: this many bytes left.
    framing: Framing,
    /// Chunked (no size limit: an event stream is endless; only 32-bit
    /// targets stop at 4 GiB per connection, which is then a reconnect).
    decoder: ChunkedDecoder,
    /// Body bytes read together with the head, fed first.
    pending: Vec<u8>,
    buf: Vec<u8>,
    /// Chunked: the data decoded from the last read.
    decoded: Vec<u8>,
    idle: Option<Duration>,
    /// Set when the body ended or broke: returned by the next read, after
    /// the items already fed have been pulled.
    end: Option<Disconnect>,
}

impl Body {
    pub(super) fn new(
        stream: Arc<TcpStream>,
        framing: Framing,
        pending: Vec<u8>,
        idle: Option<Duration>,
    ) -> Body {
        // An empty body ends at once, whatever the socket does.
        let end = (framing == Framing::Length(0)).then_some(Disconnect::Ended);
        let (buf, decoded, decoder) = (
            vec![0; READ_BUF],
            Vec::new(),
            ChunkedDecoder::new(usize::MAX),
        );
        Body {
            stream,
            framing,
            decoder,
            pending,
            buf,
            decoded,
            idle,
            end,
        }
    }

    /// Reads what the socket has (waiting for at least one byte) and feeds
    /// the body bytes in it to `parser`. `Err` when the body has ended.
    pub(super) fn read_into(&mut self, parser: &mut Parser) -> Result<(), Disconnect> {
        if let Some(end) = self.end.take() {
            return Err(end);
        }
        let mut input = std::mem::take(&mut self.pending);
        let input: &[u8] = if input.is_empty() {
            let n = read_some(&self.stream, &mut self.buf, self.idle)?;
            if n == 0 {
                return Err(match self.framing {
                    Framing::None => Disconnect::Ended,
                    _ => eof("the body"),
                });
            }
            &self.buf[..n]
        } else {
            input.as_mut_slice()
        };
        match &mut self.framing {
            Framing::None => parser.feed(input),
            Framing::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                parser.feed(&input[..take]);
                *left -= take as u64;
                if *left == 0 {
                    self.end = Some(Disconnect::Ended);
                }
            }
            Framing::Chunked => {
                self.decoded.clear();
                let result = self.decoder.decode(input, &mut self.decoded);
                parser.feed(&self.decoded);
                match result {
                    Ok(Status::Partial) => {}
                    Ok(Status::Complete(_)) => self.end = Some(Disconnect::Ended),
                    Err(e) => self.end = Some(Disconnect::Protocol(e)),
                }
            }
        }
        Ok(())
    }
}
