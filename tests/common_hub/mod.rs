//! Helpers for the hub and chat tests: a server on 127.0.0.1:0 in a
//! background thread, a raw-socket event-stream client parsed with
//! `stdsse::parser::Parser`, plain HTTP requests, and bounded waits.
//!
//! Every wait here ends at a deadline; reaching one fails the test.

#![allow(dead_code)] // each test binary uses part of this module

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use stdsse::parser::{Item, MessageEvent, Parser};
use stdsse::{Server, ShutdownHandle};

/// The longest one wait may take before the test fails. Generous, so that a
/// loaded machine does not make a test flaky.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `cond` every millisecond until it holds; panics after [`WAIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `get` every millisecond until `ok` holds for its value, which is
/// returned; panics with the last value after [`WAIT`].
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = get();
        if ok(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {value:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A server running `Server::run` in a background thread; shut down and
/// joined (bounded) when dropped.
pub struct BgServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    before_stop: Option<Box<dyn FnOnce()>>,
}

impl BgServer {
    /// Binds 127.0.0.1:0, lets `configure` add routes, runs the server.
    pub fn start(configure: impl FnOnce(&mut Server)) -> BgServer {
        let mut server = Server::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        configure(&mut server);
        let addr = server.local_addr();
        let handle = server.handle();
        let join = thread::Builder::new()
            .name("hub-test-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        BgServer {
            addr,
            handle,
            join: Some(join),
            before_stop: None,
        }
    }

    /// Runs `f` first when the server is dropped (for example to close a
    /// hub that holds detached streams, which shutdown waits for).
    pub fn before_stop(mut self, f: impl FnOnce() + 'static) -> BgServer {
        self.before_stop = Some(Box::new(f));
        self
    }

    /// Opens an event stream on `target` with extra request headers.
    pub fn sse(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, target, headers)
    }
}

impl Drop for BgServer {
    fn drop(&mut self) {
        if let Some(f) = self.before_stop.take() {
            f();
        }
        self.handle.shutdown();
        let Some(join) = self.join.take() else { return };
        let deadline = Instant::now() + WAIT;
        while !join.is_finished() {
            if Instant::now() > deadline {
                assert!(thread::panicking(), "Server::run did not return");
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let result = join.join().expect("the server thread panicked");
        if !thread::panicking() {
            result.expect("Server::run failed");
        }
    }
}

/// Connects and sends `GET target` with `headers`; nothing is read.
pub fn send_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut request =
        format!("GET {target} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
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

/// An event-stream client on a raw socket.
pub struct Sse {
    pub stream: TcpStream,
    parser: Parser,
    eof: bool,
}

impl Sse {
    /// Sends the request and reads the response head, which must be `200`
    /// with `Content-Type: text/event-stream`.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = send_get(addr, target, headers);
        let deadline = Instant::now() + WAIT;
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = read_some(&mut stream, &mut buf, deadline).expect("read the response head");
            assert!(
                n > 0,
                "connection closed before the head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200 "), "{target}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{target}: {head}"
        );
        let mut sse = Sse {
            stream,
            // Above the default 64 KiB: the chat accepts 64 KiB messages,
            // and "data: " comes on top.
            parser: Parser::new().max_line_len(1 << 20).max_event_size(1 << 20),
            eof: false,
        };
        sse.parser.feed(&buf[end..]);
        sse
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
                Ok(_) => self.parser.feed(&buf),
                Err(e) if is_timeout(&e) => return Err(NoItem::Timeout),
                // A reset after the server closed counts as the end.
                Err(_) => {
                    self.parser.finish();
                    self.eof = true;
                }
            }
        }
    }

    /// The next event (comments skipped); panics on EOF or after [`WAIT`].
    pub fn next_event(&mut self) -> MessageEvent {
        loop {
            match self.next_item(WAIT) {
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
    /// came first. Panics after [`WAIT`].
    pub fn until_eof(&mut self) -> Vec<Item> {
        let deadline = Instant::now() + WAIT;
        let mut items = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left) {
                Ok(item) => items.push(item),
                Err(NoItem::Eof) => return items,
                Err(NoItem::Timeout) => panic!("no EOF within {WAIT:?}; got {items:?}"),
            }
        }
    }

    /// The `retry:` value received so far.
    pub fn retry(&self) -> Option<Duration> {
        self.parser.retry()
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

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
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

/// A plain HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `Connection: close` and reads the response to EOF.
/// Write errors are ignored (the server may answer before reading a body
/// it refuses).
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let _ = stream.write_all(&bytes);
    let all = read_to_eof(&mut stream, WAIT);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&all)))
        + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    Reply {
        status,
        head,
        body: all[end..].to_vec(),
    }
}
