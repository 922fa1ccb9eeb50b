//! A raw TCP client that reads responses one by one, removing chunked
//! framing with the library's own decoder, and one-shot requests.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use stdsse::http::{ChunkedDecoder, Status};

use super::*;

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
        Dechunker { decoder: ChunkedDecoder::new(usize::MAX), ended: false, raw: Vec::new() }
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
            Err(e) => {
                panic!("invalid chunked body ({e:?}): {:?}", String::from_utf8_lossy(&self.raw))
            }
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
    resp.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
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
        Client { stream, buf: Vec::new(), chunked: None }
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
        assert_eq!(head.header("Content-Type"), Some("text/event-stream"), "{head:?}");
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
            panic!("malformed response head: {:?}", String::from_utf8_lossy(&head))
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
pub fn connect(addr: SocketAddr) -> TcpStream {
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
        panic!("malformed response head: {:?}", String::from_utf8_lossy(&all[..end]))
    });
    resp.body = if is_chunked(&resp) { dechunk(&all[end..]) } else { all[end..].to_vec() };
    resp
}
