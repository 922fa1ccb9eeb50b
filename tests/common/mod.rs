//! Shared by the socket-level server tests: a server on 127.0.0.1:0 in a
//! background thread, and a raw TCP client that sends bytes and reads
//! responses with bounded waits.

#![allow(dead_code)] // each test binary uses part of this module

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use stdsse::{Server, ShutdownHandle};

/// The longest any single wait in a test may take. Generous, so that a
/// loaded machine does not make a test flaky; a test that reaches it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server running in a background thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
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
            .expect("spawn server thread");
        TestServer {
            addr,
            handle,
            join: Some(join),
        }
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

    /// Shuts the server down and waits (bounded) for `run` to return.
    pub fn stop(mut self) {
        self.handle.shutdown();
        self.join_run();
    }

    fn join_run(&mut self) {
        let Some(join) = self.join.take() else { return };
        let deadline = Instant::now() + WAIT * 2;
        while !join.is_finished() {
            if Instant::now() > deadline {
                if !thread::panicking() {
                    panic!("Server::run did not return after shutdown");
                }
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let result = join.join().expect("server thread panicked");
        result.expect("Server::run failed");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.join_run();
    }
}

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// The status line, without CRLF.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// A raw TCP client with a receive buffer (bytes past one response stay
/// for the next, so pipelined answers can be read one by one).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
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

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. Fails
    /// the test when nothing arrives within the read timeout.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
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
    /// the client reads it.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        match self.read_to_close() {
            Ok(all) => all,
            Err(e) => panic!(
                "connection reset instead of closed ({e}); buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Everything until the server closes the connection; `Err` if it was
    /// reset.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
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

/// Parses a response head ending with CRLF CRLF: `HTTP/1.x NNN reason`,
/// then `name: value` lines. `None` if it is not well formed.
pub fn parse_head(head: &[u8]) -> Option<Resp> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
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

/// Polls `condition` until it holds; fails the test after [`WAIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// A GET request for `path`, HTTP/1.1, with `Host`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// A small deterministic random number generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}
