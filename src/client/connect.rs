//! One connection: the connect thread, the request, the response head and
//! the body as it arrives.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::url::Url;
use super::{ClientBuilder, Disconnect, Failure, Hop, MIN_TIMEOUT};
use crate::http::{
    parse_response_head, ChunkedDecoder, Error, Framing, Limits, ResponseHead, Status,
};
use crate::parser::Parser;
use crate::util::wait_until;

/// The largest response head accepted, interim `1xx` heads included.
const MAX_HEAD: usize = 64 * 1024;
/// What a request to another origin does not carry (Fetch, HTTP-redirect
/// fetch, step 14), and the fields that describe a body a redirect dropped
/// (step 13).
const CREDENTIALS: [&str; 4] = ["authorization", "cookie", "proxy-authorization", "host"];
const BODY_FIELDS: [&str; 4] =
    ["content-type", "content-encoding", "content-language", "content-location"];
/// The read buffer of a connection.
const READ_BUF: usize = 16 * 1024;

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
    /// Numbers connection attempts: a late result of an abandoned one is dropped.
    attempt: u64,
    /// The result of the current connection attempt.
    connected: Option<io::Result<TcpStream>>,
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

    /// Applies `change`, then wakes the client wherever it blocks: a running
    /// connection attempt delivers to nobody, the connection is shut down
    /// (ending a blocked read or write), and a sleep or a wait ends.
    pub(super) fn interrupt(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        abandon(&mut state);
        if let Some(stream) = state.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.wake.notify_all();
    }

    /// Sleeps up to `delay`, less if the client is closed or restarted.
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

    /// Resolves and connects on a helper thread, so that `timeout` bounds a
    /// slow name lookup too and `close` interrupts the wait. The stream is
    /// registered for `close`.
    pub(super) fn connect(
        self: &Arc<Shared>,
        url: &Url,
        timeout: Duration,
    ) -> Result<Arc<TcpStream>, Failure> {
        let failed = |e| Failure::Retry(Disconnect::Connect(e));
        let deadline = Instant::now().checked_add(timeout);
        let attempt = abandon(&mut self.lock());
        let (shared, address) = (Arc::clone(self), url.address());
        let spawned = thread::Builder::new().name("stdsse-connect".into()).spawn(move || {
            let result = connect_to(&address, deadline);
            let mut state = shared.lock();
            if state.attempt == attempt && !state.closed {
                state.connected = Some(result);
                shared.wake.notify_all();
            }
        });
        spawned.map_err(failed)?;
        let mut state = self.lock();
        loop {
            if state.closed || state.restart {
                return Err(Failure::Interrupted);
            }
            if let Some(result) = state.connected.take() {
                let stream = Arc::new(result.map_err(failed)?);
                state.stream = Some(Arc::clone(&stream));
                return Ok(stream);
            }
            state = wait_until(&self.wake, state, deadline).map_err(|mut state| {
                abandon(&mut state);
                let why = format!("connect timed out after {} ms", timeout.as_millis());
                failed(io::Error::new(io::ErrorKind::TimedOut, why))
            })?;
        }
    }

    /// Forgets `stream` as the current connection (it closes when the last
    /// reference goes).
    pub(super) fn release(&self, stream: &Arc<TcpStream>) {
        self.lock().stream.take_if(|s| Arc::ptr_eq(s, stream));
    }
}

/// Abandons the running connection attempt: its result goes to nobody.
/// Returns the number of the next attempt.
fn abandon(state: &mut State) -> u64 {
    state.connected = None;
    state.attempt = state.attempt.wrapping_add(1);
    state.attempt
}

/// Resolves `address` and tries each of its addresses until `deadline`.
fn connect_to(address: &str, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let stream = match left {
            Some(left) if left.is_zero() => break,
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match stream {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    let none =
        || io::Error::new(io::ErrorKind::NotFound, format!("no address found for {address}"));
    Err(last.unwrap_or_else(none))
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
    let idle = config.idle_timeout;
    stream.set_write_timeout(idle).map_err(Disconnect::Io)?;
    let mut writer = stream;
    writer
        .write_all(&request_bytes(config, url, hop, last_event_id))
        .and_then(|()| writer.flush())
        .map_err(|e| io_failure(e, idle))?;
    let head = read_head(stream, idle, config.head_timeout)?;
    stream.set_read_timeout(idle).map_err(Disconnect::Io)?;
    Ok(head)
}

/// The request head and body.
fn request_bytes(config: &ClientBuilder, url: &Url, hop: &Hop, last_event_id: &str) -> Vec<u8> {
    let body = config.body.as_deref().filter(|_| hop.send_body);
    let dropped = |name: &str| {
        let any = |names: [&str; 4]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
        (hop.cross_origin && any(CREDENTIALS)) || (!hop.send_body && any(BODY_FIELDS))
    };
    let custom: Vec<(&str, &str)> = config
        .headers
        .iter()
        .filter(|(name, _)| !dropped(name))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let has = |name: &str| custom.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let authority = url.authority();
    let own = [
        ("Host", authority.as_str()),
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
    ];
    let mut fields: Vec<(&str, &str)> = own.into_iter().filter(|(n, _)| !has(n)).collect();
    if !last_event_id.is_empty() {
        fields.push(("Last-Event-ID", last_event_id));
    }
    fields.extend_from_slice(&custom);
    let length = body.map_or(0, <[u8]>::len).to_string();
    if body.is_some() || !matches!(hop.method.as_str(), "GET" | "HEAD") {
        fields.push(("Content-Length", &length));
    }
    let mut out = format!("{} {} HTTP/1.1\r\n", hop.method, url.target);
    for (name, value) in fields {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
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
                    Disconnect::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why))
                }))
            }
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
    let (mut buf, mut chunk) = (Vec::new(), [0; 4096]);
    let mut limits = Limits {
        max_request_line: MAX_HEAD,
        max_header_line: MAX_HEAD,
        max_headers: usize::MAX,
        max_head: MAX_HEAD,
        max_body: 0,
    };
    loop {
        match parse_response_head(&buf, &limits) {
            // Interim answers (100 Continue, 103 Early Hints) come before the
            // real one; 101 Switching Protocols is final (and unwanted).
            Ok(Status::Complete((head, end))) => {
                buf.drain(..end);
                if !(100..200).contains(&head.status()) || head.status() == 101 {
                    return Ok((head, buf));
                }
                limits.max_head -= end;
                continue;
            }
            Ok(Status::Partial) => {}
            Err(Error::HeadTooLarge) => return Err(Disconnect::HeadTooLarge { limit: MAX_HEAD }),
            Err(error) => return Err(Disconnect::Protocol(error)),
        }
        // Wait for the next byte until the idle timeout or the deadline,
        // whichever comes first.
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(Disconnect::HeadTimeout(timeout));
        }
        let (wait, by_deadline) = match idle {
            Some(idle) if idle < left => (idle, false),
            _ => (left.max(MIN_TIMEOUT), true),
        };
        stream.set_read_timeout(Some(wait)).map_err(Disconnect::Io)?;
        let n = match read_some(stream, &mut chunk, Some(wait), Some("the response head")) {
            Err(Disconnect::IdleTimeout(_)) if by_deadline => {
                return Err(Disconnect::HeadTimeout(timeout))
            }
            result => result?,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
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
        Body {
            stream,
            framing,
            decoder: ChunkedDecoder::new(usize::MAX),
            pending,
            buf: vec![0; READ_BUF],
            decoded: Vec::new(),
            idle,
            // An empty body ends at once, whatever the socket does.
            end: (framing == Framing::Length(0)).then_some(Disconnect::Ended),
        }
    }

    /// Reads what the socket has (waiting for at least one byte) and feeds
    /// the body bytes in it to `parser`. `Err` when the body has ended.
    pub(super) fn read_into(&mut self, parser: &mut Parser) -> Result<(), Disconnect> {
        if let Some(end) = self.end.take() {
            return Err(end);
        }
        let pending = std::mem::take(&mut self.pending);
        let input: &[u8] = if pending.is_empty() {
            let cut = (self.framing != Framing::None).then_some("the body");
            let n = read_some(&self.stream, &mut self.buf, self.idle, cut)?;
            &self.buf[..n]
        } else {
            &pending
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
                self.end = match result {
                    Ok(Status::Partial) => None,
                    Ok(Status::Complete(_)) => Some(Disconnect::Ended),
                    Err(e) => Some(Disconnect::Protocol(e)),
                };
            }
        }
        Ok(())
    }
}
