//! An event-stream reader on a raw socket, parsed with
//! `stdsse::parser::Parser` after the chunked framing (if any) is removed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use stdsse::parser::{Item, MessageEvent, Parser};

use super::*;

/// Connects and sends `GET target` with `Accept: text/event-stream` and
/// `headers`; nothing is read.
pub fn send_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> TcpStream {
    let headers = [&[("Accept", "text/event-stream")], headers].concat();
    let mut stream = connect(addr);
    stream.write_all(&request_bytes("GET", target, &headers, b"")).expect("send the request");
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
            panic!("{target}: malformed head {:?}", String::from_utf8_lossy(&buf[..end]))
        });
        assert!(head.status_line.starts_with("HTTP/1.1 200 "), "{target}: {}", head.head);
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
