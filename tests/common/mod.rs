//! Shared by the integration tests:
//!
//! - bounded waits ([`wait_until`], [`wait_for`]);
//! - the project's `Server` on 127.0.0.1:0 in a background thread
//!   ([`TestServer`]);
//! - a raw TCP client that sends bytes and reads responses ([`Client`],
//!   [`Resp`], [`parse_head`]), and one-shot requests ([`http`]);
//! - a decoder for chunked response bodies ([`Dechunker`]), which a
//!   [`Client`] uses after [`Client::stream_head`] or
//!   [`Client::decode_chunked`];
//! - an event-stream reader on a raw socket, parsed with
//!   `stdsse::parser::Parser` after the chunked framing (if any) is removed
//!   ([`Sse`]);
//! - a scripted server that misbehaves on purpose ([`Scripted`]) and a
//!   runner that drives a `stdsse::client::Client` on its own thread
//!   ([`Run`]);
//! - the examples as child processes ([`Example`], [`run_example`]);
//! - a small deterministic random number generator ([`Rng`]).
//!
//! Every wait here ends at a deadline; reaching one fails the test.

#![allow(dead_code)] // each test binary uses part of this module

use std::fmt::Debug;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use stdsse::client::{ClientError, CloseHandle, Disconnect, Received};
use stdsse::http::{ChunkedDecoder, Framing, Limits, Status};
use stdsse::parser::{Item, MessageEvent, Parser};
use stdsse::{Server, ShutdownHandle};

/// The longest any single wait in the server and client tests may take.
/// Generous, so that a loaded machine does not make a test flaky; a test
/// that reaches it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The same for the hub and example tests (many streams, child processes),
/// and for a server's shutdown.
pub const LONG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `get` every millisecond until `ok` holds for its value, which is
/// returned; fails the test with the last value after `limit`.
pub fn wait_for<T: Debug>(
    limit: Duration,
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = get();
        if ok(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting: {what} (last: {value:?})"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `condition` until it holds; fails the test after `limit`.
pub fn wait_until_within(limit: Duration, what: &str, condition: impl FnMut() -> bool) {
    wait_for(limit, what, condition, |&held| held);
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(WAIT, what, condition);
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// The project's server
// ---------------------------------------------------------------------------

/// A server running `Server::run` in a background thread; shut down and
/// joined (bounded) by [`TestServer::stop`] or when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    before_stop: Option<Box<dyn FnOnce()>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0, lets `configure` add routes and settings, and runs
    /// the server in a background thread.
    ///
    /// `STDSSE_TEST_STACK_SIZE` (bytes), when set, overrides the connection
    /// thread stack size: it is how the stack the server needs was measured.
    pub fn start(configure: impl FnOnce(&mut Server)) -> TestServer {
        let mut server = Server::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        if let Some(size) = std::env::var("STDSSE_TEST_STACK_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            server.stack_size(size);
        }
        configure(&mut server);
        let addr = server.local_addr();
        let handle = server.handle();
        let join = thread::Builder::new()
            .name("test-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        TestServer {
            addr,
            handle,
            join: Some(join),
            before_stop: None,
        }
    }

    /// Runs `f` first when the server is stopped or dropped (for example to
    /// close a hub that holds detached streams, which shutdown waits for).
    pub fn before_stop(mut self, f: impl FnOnce() + 'static) -> TestServer {
        self.before_stop = Some(Box::new(f));
        self
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A new client connected to this server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends one request on a new connection and reads the response.
    pub fn request(&self, bytes: &[u8]) -> Resp {
        let mut client = self.client();
        client.send(bytes);
        client.response()
    }

    /// `GET /` on a new connection must answer 200: the server still works.
    pub fn assert_alive(&self) {
        let resp = self.request(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(resp.status, 200, "the server stopped serving: {resp:?}");
    }

    /// Opens an event stream on `target` with extra request headers.
    pub fn sse(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, target, headers)
    }

    /// Shuts the server down and waits (bounded) for `run` to return.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(f) = self.before_stop.take() {
            f();
        }
        self.handle.shutdown();
        let Some(join) = self.join.take() else { return };
        let deadline = Instant::now() + LONG_WAIT;
        while !join.is_finished() {
            if Instant::now() > deadline {
                assert!(
                    thread::panicking(),
                    "Server::run did not return after shutdown"
                );
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let result = join.join();
        if !thread::panicking() {
            result
                .expect("the server thread panicked")
                .expect("Server::run failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP on the client side
// ---------------------------------------------------------------------------

/// The values of the headers named `name` (case-insensitive), in order.
fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// The status line, without CRLF.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    /// The whole head as received, up to and including the empty line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    /// Every header named `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The body, which must be UTF-8.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses a response head ending with CRLF CRLF: `HTTP/1.x NNN reason`,
/// then `name: value` lines. `None` if it is not well formed.
pub fn parse_head(head: &[u8]) -> Option<Resp> {
    let whole = std::str::from_utf8(head).ok()?;
    let text = whole.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = parse_status_line(status_line)?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return None;
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(Resp {
        status,
        status_line: status_line.to_string(),
        headers,
        head: whole.to_string(),
        body: Vec::new(),
    })
}

/// The status of `HTTP/1.x NNN Reason phrase`, or `None`.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || reason.is_empty() {
        return None;
    }
    if reason.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    code.parse().ok()
}

/// A GET request for `path`, HTTP/1.1, with `Host`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// A request `method target HTTP/1.1` with `Host: test`, `headers`, a
/// `Content-Length` when there is a body or the method is POST, and `body`.
pub fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

// ---------------------------------------------------------------------------
// Chunked response bodies
// ---------------------------------------------------------------------------

/// Removes the chunked framing of a response body (`Transfer-Encoding:
/// chunked`) as its bytes arrive, with the library's own decoder; any
/// framing error, and any byte after the last chunk, fails the test.
#[derive(Debug)]
pub struct Dechunker {
    decoder: ChunkedDecoder,
    ended: bool,
    /// Every raw byte so far, for messages.
    raw: Vec<u8>,
}

impl Default for Dechunker {
    fn default() -> Dechunker {
        Dechunker::new()
    }
}

impl Dechunker {
    pub fn new() -> Dechunker {
        Dechunker {
            decoder: ChunkedDecoder::new(usize::MAX),
            ended: false,
            raw: Vec::new(),
        }
    }

    /// Decodes `raw` (split anywhere) and appends the body bytes to `body`.
    pub fn feed(&mut self, raw: &[u8], body: &mut Vec<u8>) {
        if raw.is_empty() {
            return;
        }
        self.raw.extend_from_slice(raw);
        assert!(
            !self.ended,
            "bytes after the last chunk: {:?}",
            String::from_utf8_lossy(&self.raw)
        );
        match self.decoder.decode(raw, body) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete(used)) => {
                self.ended = true;
                assert_eq!(
                    used,
                    raw.len(),
                    "bytes after the last chunk: {:?}",
                    String::from_utf8_lossy(&self.raw)
                );
            }
            Err(e) => panic!(
                "invalid chunked body ({e:?}): {:?}",
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// Whether the last chunk (`0\r\n\r\n`) has arrived: the body ended
    /// cleanly.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Decodes a whole chunked body, which must end with the last chunk.
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut dechunker = Dechunker::new();
    let mut body = Vec::new();
    dechunker.feed(raw, &mut body);
    assert!(
        dechunker.ended(),
        "the chunked body has no last chunk: {:?}",
        String::from_utf8_lossy(raw)
    );
    body
}

/// Whether a response head says its body is chunked.
pub fn is_chunked(resp: &Resp) -> bool {
    resp.header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
}

/// A raw TCP client with a receive buffer (bytes past one response stay
/// for the next, so pipelined answers can be read one by one). Each read
/// waits up to the socket's read timeout, [`WAIT`] unless changed.
///
/// After [`Client::decode_chunked`] (or a [`Client::stream_head`] that says
/// `Transfer-Encoding: chunked`), everything read is the decoded body: the
/// reading methods see the event stream itself, not its chunk framing.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    chunked: Option<Dechunker>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            chunked: None,
        }
    }

    /// From now on, the bytes are a chunked body: decode them (those
    /// already buffered too). Call right after the response head.
    pub fn decode_chunked(&mut self) {
        assert!(self.chunked.is_none(), "already decoding");
        let raw = std::mem::take(&mut self.buf);
        let mut dechunker = Dechunker::new();
        dechunker.feed(&raw, &mut self.buf);
        self.chunked = Some(dechunker);
    }

    /// Whether the body is chunked and its last chunk has arrived; `None`
    /// when the body is not decoded as chunked.
    pub fn last_chunk_seen(&self) -> Option<bool> {
        self.chunked.as_ref().map(Dechunker::ended)
    }

    /// Reads an event-stream head: `200`, `text/event-stream`; the body is
    /// decoded from here on if the head says `Transfer-Encoding: chunked`.
    pub fn stream_head(&mut self) -> Resp {
        let head = self.head();
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(
            head.header("Content-Type"),
            Some("text/event-stream"),
            "{head:?}"
        );
        if is_chunked(&head) {
            self.decode_chunked();
        }
        head
    }

    /// Adds raw bytes from the socket to the buffer (decoded if chunked).
    fn absorb(&mut self, raw: &[u8]) {
        match &mut self.chunked {
            Some(dechunker) => dechunker.feed(raw, &mut self.buf),
            None => self.buf.extend_from_slice(raw),
        }
    }

    /// Writes all of `bytes` (one write call as far as the kernel allows).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Writes, ignoring errors (the server may have closed already).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into the buffer; 0 at end of stream, else the
    /// number of bytes read from the socket (with chunked framing). Fails
    /// the test when nothing arrives within the read timeout.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.absorb(&chunk[..n]);
                n
            }
            Err(e) if is_timeout(&e) => panic!(
                "no data within the read timeout; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads until `pattern` is buffered; returns (and removes) the bytes
    /// up to and including it.
    pub fn read_until(&mut self, pattern: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, pattern) {
                return self.buf.drain(..at + pattern.len()).collect();
            }
            if self.fill() == 0 {
                panic!(
                    "connection closed before {:?}; buffered: {:?}",
                    String::from_utf8_lossy(pattern),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill() == 0 {
                panic!("connection closed after {} of {n} bytes", self.buf.len());
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response head (status line and headers).
    pub fn head(&mut self) -> Resp {
        let head = self.read_until(b"\r\n\r\n");
        parse_head(&head).unwrap_or_else(|| {
            panic!(
                "malformed response head: {:?}",
                String::from_utf8_lossy(&head)
            )
        })
    }

    /// Reads one response: the head, then `Content-Length` bytes of body
    /// (none for 1xx, 204 and 304).
    pub fn response(&mut self) -> Resp {
        let mut resp = self.head();
        if !matches!(resp.status, 100..=199 | 204 | 304) {
            let len: usize = resp
                .header("Content-Length")
                .unwrap_or_else(|| panic!("no Content-Length: {resp:?}"))
                .parse()
                .expect("numeric Content-Length");
            resp.body = self.read_exact(len);
        }
        resp
    }

    /// Everything until the server closes the connection, which must be a
    /// clean close (FIN), not a reset: a reset can destroy an answer before
    /// the client reads it. A chunked body must have ended with the last
    /// chunk before the close.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        match self.read_to_close() {
            Ok(all) => {
                assert_ne!(
                    self.last_chunk_seen(),
                    Some(false),
                    "the connection closed without the last chunk; body: {:?}",
                    String::from_utf8_lossy(&all)
                );
                all
            }
            Err(e) => panic!(
                "connection reset instead of closed ({e}); buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Everything until the server closes the connection; `Err` if it was
    /// reset. (A chunked body's last chunk is not required: see
    /// [`Client::last_chunk_seen`].)
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.absorb(&chunk[..n]),
                Err(e) if is_timeout(&e) => panic!(
                    "connection not closed within the read timeout; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Asserts that the server closes the connection cleanly with nothing
    /// more to read.
    pub fn assert_closed(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Whatever is buffered and not yet returned.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// One read with a deadline. `Ok(0)` is EOF; a timeout is an error for
/// which [`is_timeout`] holds.
pub fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads everything until EOF (a reset counts as the end) into one buffer,
/// as fast as the socket delivers; panics after `limit`.
pub fn read_to_eof(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut all = Vec::new();
    loop {
        match read_some(stream, &mut all, deadline) {
            Ok(0) => return all,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                panic!("no EOF within {limit:?} ({} bytes read)", all.len())
            }
            Err(_) => return all,
        }
    }
}

/// A connection to `addr` whose writes wait up to [`LONG_WAIT`].
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, LONG_WAIT).expect("connect");
    stream.set_write_timeout(Some(LONG_WAIT)).unwrap();
    stream
}

/// Sends one request with `Connection: close` and reads the response to EOF
/// (within [`LONG_WAIT`]); a chunked body is decoded, and must end with the
/// last chunk. Write errors are ignored (the server may answer before
/// reading a body it refuses).
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let headers = [&[("Connection", "close")], headers].concat();
    let mut stream = connect(addr);
    let _ = stream.write_all(&request_bytes(method, target, &headers, body));
    let all = read_to_eof(&mut stream, LONG_WAIT);
    let end = find(&all, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&all)))
        + 4;
    let mut resp = parse_head(&all[..end]).unwrap_or_else(|| {
        panic!(
            "malformed response head: {:?}",
            String::from_utf8_lossy(&all[..end])
        )
    });
    resp.body = if is_chunked(&resp) {
        dechunk(&all[end..])
    } else {
        all[end..].to_vec()
    };
    resp
}

// ---------------------------------------------------------------------------
// An event-stream reader on a raw socket
// ---------------------------------------------------------------------------

/// Connects and sends `GET target` with `Accept: text/event-stream` and
/// `headers`; nothing is read.
pub fn send_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> TcpStream {
    let headers = [&[("Accept", "text/event-stream")], headers].concat();
    let mut stream = connect(addr);
    stream
        .write_all(&request_bytes("GET", target, &headers, b""))
        .expect("send the request");
    stream
}

/// Why [`Sse::next_item`] returned no item.
#[derive(Debug, PartialEq, Eq)]
pub enum NoItem {
    /// The server closed the connection.
    Eof,
    /// Nothing complete arrived before the deadline.
    Timeout,
}

/// An event-stream client on a raw socket. Its waits are bounded by
/// [`LONG_WAIT`]. A chunked body (`Transfer-Encoding: chunked`, what the
/// server sends to HTTP/1.1 requests) is decoded before the parser sees
/// it; a framing error fails the test.
pub struct Sse {
    pub stream: TcpStream,
    /// The response head.
    pub head: Resp,
    parser: Parser,
    chunked: Option<Dechunker>,
    eof: bool,
}

impl Sse {
    /// Sends the request and reads the response head, which must be `200`
    /// with `Content-Type: text/event-stream`.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = send_get(addr, target, headers);
        let deadline = Instant::now() + LONG_WAIT;
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = read_some(&mut stream, &mut buf, deadline).expect("read the response head");
            assert!(
                n > 0,
                "connection closed before the head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        };
        let head = parse_head(&buf[..end]).unwrap_or_else(|| {
            panic!(
                "{target}: malformed head {:?}",
                String::from_utf8_lossy(&buf[..end])
            )
        });
        assert!(
            head.status_line.starts_with("HTTP/1.1 200 "),
            "{target}: {}",
            head.head
        );
        assert_eq!(
            head.header("Content-Type").map(str::to_ascii_lowercase),
            Some("text/event-stream".to_string()),
            "{target}: {}",
            head.head
        );
        let chunked = is_chunked(&head).then(Dechunker::new);
        let mut sse = Sse {
            stream,
            head,
            // Above the default 64 KiB: the chat accepts 64 KiB messages,
            // and "data: " comes on top.
            parser: Parser::new().max_line_len(1 << 20).max_event_size(1 << 20),
            chunked,
            eof: false,
        };
        sse.feed(&buf[end..]);
        sse
    }

    /// Gives bytes from the socket to the parser, without their chunk
    /// framing.
    fn feed(&mut self, raw: &[u8]) {
        match &mut self.chunked {
            Some(dechunker) => {
                let mut body = Vec::new();
                dechunker.feed(raw, &mut body);
                self.parser.feed(&body);
            }
            None => self.parser.feed(raw),
        }
    }

    /// Whether the body is chunked.
    pub fn is_chunked(&self) -> bool {
        self.chunked.is_some()
    }

    /// Whether the last chunk of a chunked body has arrived (the stream
    /// ended cleanly); `false` for a body that is not chunked.
    pub fn last_chunk_seen(&self) -> bool {
        self.chunked.as_ref().is_some_and(Dechunker::ended)
    }

    /// The next item (event or comment) within `timeout`.
    pub fn next_item(&mut self, timeout: Duration) -> Result<Item, NoItem> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.parser.next_item() {
                Some(Ok(item)) => return Ok(item),
                Some(Err(e)) => panic!("parse error: {e}"),
                None if self.eof => return Err(NoItem::Eof),
                None => {}
            }
            let mut buf = Vec::new();
            match read_some(&mut self.stream, &mut buf, deadline) {
                Ok(0) => {
                    self.parser.finish();
                    self.eof = true;
                }
                Ok(_) => self.feed(&buf),
                Err(e) if is_timeout(&e) => return Err(NoItem::Timeout),
                // A reset after the server closed counts as the end.
                Err(_) => {
                    self.parser.finish();
                    self.eof = true;
                }
            }
        }
    }

    /// The next event (comments skipped); panics on EOF or after
    /// [`LONG_WAIT`].
    pub fn next_event(&mut self) -> MessageEvent {
        loop {
            match self.next_item(LONG_WAIT) {
                Ok(Item::Event(event)) => return event,
                Ok(Item::Comment(_)) => {}
                Err(e) => panic!("expected an event, got {e:?}"),
            }
        }
    }

    /// The next `n` events.
    pub fn events(&mut self, n: usize) -> Vec<MessageEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }

    /// Reads until the server closes the connection; returns the items that
    /// came first. Panics after [`LONG_WAIT`].
    pub fn until_eof(&mut self) -> Vec<Item> {
        let deadline = Instant::now() + LONG_WAIT;
        let mut items = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left) {
                Ok(item) => items.push(item),
                Err(NoItem::Eof) => return items,
                Err(NoItem::Timeout) => panic!("no EOF within {LONG_WAIT:?}; got {items:?}"),
            }
        }
    }

    /// The `retry:` value received so far.
    pub fn retry(&self) -> Option<Duration> {
        self.parser.retry()
    }
}

// ---------------------------------------------------------------------------
// A scripted server, for the client tests
// ---------------------------------------------------------------------------

/// One request as the scripted server read it (with the project's strict
/// request parser, so a malformed request fails the test).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl Req {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    /// Every value of the headers named `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }
}

type Script = dyn Fn(usize, &Req, &mut TcpStream) + Send + Sync;

/// A server on 127.0.0.1 that gives each connection to a script, on a
/// thread of its own, with the connection's number (from 0) and its
/// request. The script writes whatever bytes it likes; the connection
/// closes when the script returns.
pub struct Scripted {
    pub addr: SocketAddr,
    requests: Receiver<Req>,
}

impl Scripted {
    pub fn start(script: impl Fn(usize, &Req, &mut TcpStream) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Scripted::on(listener, script)
    }

    /// The same on a listener bound by the caller (IPv6, say).
    pub fn on(
        listener: TcpListener,
        script: impl Fn(usize, &Req, &mut TcpStream) + Send + Sync + 'static,
    ) -> Scripted {
        let addr = listener.local_addr().expect("local address");
        let script: Arc<Script> = Arc::new(script);
        let (tx, requests) = mpsc::channel();
        // The accept thread lives as long as the test process; the test's
        // client is closed when the test ends, so it stays idle.
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let script = Arc::clone(&script);
                let tx = tx.clone();
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(WAIT));
                    let Some(req) = read_request(&mut stream) else {
                        return;
                    };
                    let _ = tx.send(req.clone());
                    script(n, &req, &mut stream);
                });
            }
        });
        Scripted { addr, requests }
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, waiting up to [`WAIT`].
    pub fn request(&self) -> Req {
        self.requests
            .recv_timeout(WAIT)
            .expect("the client sent no request in time")
    }

    /// The requests that have arrived so far.
    pub fn received(&self) -> Vec<Req> {
        self.requests.try_iter().collect()
    }
}

/// Reads a request head and its `Content-Length` body.
fn read_request(stream: &mut TcpStream) -> Option<Req> {
    use stdsse::http::parse_head;
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Ok(Status::Complete((request, used))) = parse_head(&buf, &limits) {
            let mut body = buf.split_off(used);
            if let Ok(Framing::Length(n)) = request.body_framing(&limits) {
                while body.len() < n as usize {
                    let got = stream.read(&mut chunk).ok().filter(|&g| g > 0)?;
                    body.extend_from_slice(&chunk[..got]);
                }
            }
            return Some(Req {
                method: request.method().to_string(),
                target: request.target().to_string(),
                headers: request
                    .headers()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body,
                at: Instant::now(),
            });
        }
        if let Err(e) = parse_head(&buf, &limits) {
            panic!("invalid request from the client: {e:?}: {buf:?}");
        }
        let got = stream.read(&mut chunk).ok().filter(|&g| g > 0)?;
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Writes `bytes` and flushes; errors are ignored (the client may be gone).
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
}

/// The head of a `200` event stream, close-delimited, plus `extra` header
/// lines (each ending with CRLF).
pub fn stream_head(extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{extra}\r\n").into_bytes()
}

/// Waits until the client closes the connection (or [`WAIT`] passes):
/// holds a stream open and silent.
pub fn hold(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut sink = [0; 256];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

/// Closes the connection at once (both directions).
pub fn cut(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// The project's client, driven on its own thread
// ---------------------------------------------------------------------------

/// What the client yielded.
pub type ClientItem = Option<Result<Received, ClientError>>;

/// A client iterating on its own thread; each item is waited for with a
/// bound. Dropping the runner closes the client.
pub struct Run {
    items: Receiver<ClientItem>,
    close: CloseHandle,
}

impl Run {
    pub fn new(client: stdsse::client::Client) -> Run {
        let close = client.close_handle();
        let (tx, items) = mpsc::channel();
        thread::spawn(move || {
            for item in client {
                if tx.send(Some(item)).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        Run { items, close }
    }

    /// The next item (`None`: the iterator ended), waiting up to [`WAIT`].
    pub fn next(&self) -> ClientItem {
        match self.items.recv_timeout(WAIT) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => panic!("the client yielded nothing in {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next item, described (see [`describe`]).
    pub fn next_str(&self) -> String {
        describe(&self.next())
    }

    /// The next `n` items, described.
    pub fn take(&self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next_str()).collect()
    }

    /// The next item, which must be `Retrying`: its delay.
    pub fn retrying(&self) -> Duration {
        match self.next() {
            Some(Ok(Received::Retrying(delay))) => delay,
            other => panic!("expected Retrying, got {}", describe(&other)),
        }
    }

    /// Whether the iterator ends within `within`.
    pub fn ends_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.items.recv_timeout(left) {
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return true,
                Ok(Some(_)) => {}
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    pub fn close_handle(&self) -> CloseHandle {
        self.close.clone()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.close.close();
    }
}

/// A short text for an item: `event TYPE:DATA:ID`, `comment TEXT`,
/// `connected`, `disconnected KIND`, `retrying MSms`, `error MESSAGE`,
/// `end`.
pub fn describe(item: &ClientItem) -> String {
    match item {
        None => "end".into(),
        Some(Err(e)) => format!("error {e}"),
        Some(Ok(Received::Event(e))) => format!("event {}:{}:{}", e.event_type, e.data, e.id),
        Some(Ok(Received::Comment(c))) => format!("comment {c}"),
        Some(Ok(Received::Connected(_))) => "connected".into(),
        Some(Ok(Received::Disconnected(why))) => {
            let kind = match why {
                Disconnect::Ended => "ended",
                Disconnect::NoContent => "no content",
                Disconnect::Connect(_) => "connect",
                Disconnect::Io(_) => "io",
                Disconnect::IdleTimeout(_) => "idle",
                Disconnect::Protocol(_) => "protocol",
                _ => "other",
            };
            format!("disconnected {kind}")
        }
        Some(Ok(Received::Retrying(d))) => format!("retrying {}ms", d.as_millis()),
        Some(Ok(_)) => "other".into(),
    }
}

// ---------------------------------------------------------------------------
// The examples as child processes
// ---------------------------------------------------------------------------

/// Builds example `name` (`cargo build --example NAME`, once per test
/// binary) and returns the path of its binary: in the same target
/// directory and profile as this test binary (`target/<profile>/deps/…` →
/// `target/<profile>/examples/NAME`).
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, binary)) = built.iter().find(|(n, _)| n == name) {
        return binary.clone();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in <target>/<profile>/deps");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--offline", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir
        .file_name()
        .is_some_and(|profile| profile == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name}: {status}");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.is_file(), "no {name} binary at {}", binary.display());
    built.push((name.to_string(), binary.clone()));
    binary
}

/// Runs example `name` with `args` and `input` on its standard input, and
/// returns its output; with a `limit`, kills it and fails the test when it
/// runs longer.
pub fn run_example(name: &str, args: &[&str], input: &[u8], limit: Option<Duration>) -> Output {
    let mut child = Command::new(example_binary(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write to the example");
    drop(stdin);
    if let Some(limit) = limit {
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} {args:?} ran longer than {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    child.wait_with_output().expect("the example's output")
}

/// An example server running as a child process on 127.0.0.1:0, started
/// directly (not through cargo) so that signals reach it; killed when
/// dropped if still running.
pub struct Example {
    pub child: Child,
    /// Where it listens, from its first stderr line.
    pub addr: SocketAddr,
    /// The rest of its stderr (the access log), line by line.
    pub log: Receiver<String>,
    name: String,
}

impl Example {
    /// Starts example `name` with `--addr 127.0.0.1:0` and `args`; its first
    /// stderr line (within [`LONG_WAIT`]) must be
    /// `listening on http://HOST:PORT` with the real port.
    pub fn start(name: &str, args: &[&str]) -> Example {
        let binary = example_binary(name);
        let mut child = Command::new(&binary)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut example = Example {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log: complete_lines(stderr),
            name: name.to_string(),
        };
        example.addr = listening_addr(&example.log).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(example.addr.port(), 0, "the real port is printed");
        example
    }

    /// Whatever the example wrote to stderr since start (for messages).
    pub fn log_so_far(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Sends SIGINT (Ctrl+C) with `kill -INT` (Unix only).
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT: {status}");
    }

    /// Waits up to [`LONG_WAIT`] for the example to exit; its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LONG_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the example") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after SIGINT: {:?}",
                self.name,
                self.log_so_far()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The complete lines `reader` delivers, without their LF, read on a
/// thread that drains it to the end (so a child never blocks on a full
/// pipe). A last line that the end of input cuts short is not a line.
pub fn complete_lines(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok() && line.pop() == Some(b'\n') {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    lines
}

/// The address in the first of `lines` (within [`LONG_WAIT`]), which must
/// be `listening on http://HOST:PORT`, whole: a line is only taken once its
/// LF has arrived.
pub fn listening_addr(lines: &Receiver<String>) -> Result<SocketAddr, String> {
    let first = lines
        .recv_timeout(LONG_WAIT)
        .map_err(|e| format!("no complete first stderr line: {e}"))?;
    first
        .strip_prefix("listening on http://")
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| format!("unexpected first stderr line {first:?}"))
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

pub mod fuzz;
