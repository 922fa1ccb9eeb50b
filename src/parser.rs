//! Inbound events: an incremental `text/event-stream` parser.
//!
//! [`Parser`] follows WHATWG HTML 9.2.6 "Interpreting an event stream" (see
//! the [crate docs](crate#the-wire-format-in-one-page)). Where the standard
//! leaves a choice:
//!
//! * Decoding never fails: one leading BOM is stripped, invalid UTF-8 becomes
//!   U+FFFD per maximal subpart (as [`String::from_utf8_lossy`]).
//! * A CR that ends a fed chunk ends its line at once; an LF that starts the
//!   next chunk completes that CRLF, not an empty line.
//! * Comments are reported ([`Item::Comment`]); a `retry` too large for a
//!   `u64` saturates.
//!
//! The standard sets no limit; this parser bounds its memory with
//! [`Parser::max_event_size`] and [`Parser::max_line_len`]. Going over one
//! gives one [`ParseError`] and drops that event; parsing goes on.
//!
//! # Example
//!
//! ```
//! use stdsse::parser::{Item, Parser};
//!
//! let mut parser = Parser::new();
//! // Chunks can split lines, CRLF pairs and UTF-8 sequences anywhere.
//! parser.feed(b": hello\r");
//! parser.feed(b"\nevent: greeting\nid: 1\ndata: caf\xC3");
//! parser.feed(b"\xA9\ndata: au lait\n\nretry: 2500\n");
//! assert_eq!(parser.next_item(), Some(Ok(Item::Comment("hello".into()))));
//! let Some(Ok(Item::Event(event))) = parser.next_item() else { panic!() };
//! assert_eq!((event.event_type.as_str(), event.data.as_str()), ("greeting", "café\nau lait"));
//! assert_eq!((event.id.as_str(), parser.get_last_event_id()), ("1", "1"));
//! assert_eq!((parser.next_item(), parser.retry()), (None, Some(std::time::Duration::from_millis(2500))));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::scan::{find_eol, is_digits};

/// U+FEFF, stripped once at the start of a stream.
const BOM: char = '\u{FEFF}';

/// The default for [`Parser::max_event_size`].
const DEFAULT_LIMIT: usize = 16 * 1024 * 1024;

/// The capacity a buffer keeps once it is emptied, so that one large event
/// does not pin its size in memory for the rest of the stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Room for a field name, its colon and space on top of the event limit, so
/// that one `data:` line can carry a value as large as a whole event.
const LINE_SLACK: usize = 64;

/// A dispatched event, as a browser's `MessageEvent` would show it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageEvent {
    /// The last non-empty `event` field, else `message`.
    pub event_type: String,
    /// The `data` fields joined with LF.
    pub data: String,
    /// The last event ID at dispatch (empty when none, or reset).
    pub id: String,
}

/// What the parser produces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// An event was dispatched (an empty line ended an event with data).
    Event(MessageEvent),
    /// A comment line: the text after the colon, one leading space removed
    /// (the inverse of [`Event::comment`](crate::Event::comment)). Browsers
    /// ignore comments; a client sees keep-alives.
    Comment(String),
}

/// A size limit was exceeded; that event is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// A line was longer than [`Parser::max_line_len`].
    LineTooLong {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// An event was larger than [`Parser::max_event_size`].
    EventTooLarge {
        /// The limit in force, in bytes.
        limit: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::LineTooLong { limit } => {
                write!(f, "event stream line longer than {limit} bytes")
            }
            ParseError::EventTooLarge { limit } => {
                write!(f, "event larger than {limit} bytes (data and event type)")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// An incremental event-stream parser: [`feed`](Parser::feed) it bytes as
/// they arrive and pull [`Item`]s with [`next_item`](Parser::next_item), or
/// iterate (not fused: `None` means "feed me more").
///
/// # Memory
///
/// The parser holds at most one partial line, the pending event and the
/// input fed since `next_item` last returned `None`: feed a chunk, pull items
/// until `None`, and memory stays bounded whatever the peer sends. A buffer
/// emptied after a large event shrinks back to 64 KiB.
///
/// # Errors and recovery
///
/// A limit error is returned once, as soon as it is known (a long line
/// before its end arrives). The rest of the event, up to the next empty
/// line, is skipped unread, and its earlier fields are dropped (an `id` is
/// not committed) but for a `retry`, which the standard applies at once.
#[derive(Clone)]
pub struct Parser {
    // The input, decoded as it is fed, so each line is checked once (CR and
    // LF are never inside a multi-byte sequence); `buf[..pos]` is parsed.
    buf: String,
    pos: usize,
    /// A UTF-8 sequence the last chunk cut short.
    tail: [u8; 4],
    tail_len: usize,
    /// `buf[pos..scanned]` holds no CR or LF (a long line is scanned once).
    scanned: usize,
    /// Still at the start of the stream: a BOM may come.
    at_start: bool,
    /// The last byte fed was a CR ending a line: an LF next belongs to it.
    after_cr: bool,
    /// Skipping the lines of a dropped event up to the next empty line.
    skipping: bool,
    /// While skipping: the current line is not empty.
    skip_mid_line: bool,
    max_line: usize,
    /// Whether `max_line_len` was set (else it follows the event limit).
    line_explicit: bool,
    /// Items parsed by `finish` that were not pulled yet.
    ready: VecDeque<Result<Item, ParseError>>,
    fields: Fields,
}

/// The standard's buffers, apart from the input so a line can borrow it.
#[derive(Clone, Debug, Default)]
struct Fields {
    /// The data buffer without its last LF: the data as dispatched.
    data: String,
    /// The standard's data buffer is not empty (a `data` line came).
    has_data: bool,
    event_type: String,
    /// The last event ID buffer (changed by `id` fields).
    id: String,
    /// The last event ID string (set from the buffer at each dispatch).
    last_id: String,
    retry: Option<Duration>,
    max_event: usize,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new()
    }
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("last_event_id", &self.fields.last_id)
            .field("retry", &self.fields.retry)
            .field("buffered", &self.buffered())
            .field("max_line_len", &self.max_line)
            .field("max_event_size", &self.fields.max_event)
            .finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser at the start of a stream with the default limits (it
    /// allocates nothing until input is fed).
    #[must_use]
    pub fn new() -> Parser {
        Parser {
            buf: String::new(),
            pos: 0,
            tail: [0; 4],
            tail_len: 0,
            scanned: 0,
            at_start: true,
            after_cr: false,
            skipping: false,
            skip_mid_line: false,
            max_line: DEFAULT_LIMIT + LINE_SLACK,
            line_explicit: false,
            ready: VecDeque::new(),
            fields: Fields { max_event: DEFAULT_LIMIT, ..Fields::default() },
        }
    }

    /// Starts from this last event ID, as a client reconnecting with
    /// `Last-Event-ID` does.
    #[must_use]
    pub fn last_event_id(mut self, id: impl Into<String>) -> Parser {
        let id = id.into();
        self.fields.id.clone_from(&id);
        self.fields.last_id = id;
        self
    }

    /// The longest line, in bytes after UTF-8 decoding, line ending not
    /// counted. Bounds the partial line held. Default: the event limit plus
    /// 64 (room for a field name, so one `data:` line can carry a whole event).
    #[must_use]
    pub fn max_line_len(mut self, bytes: usize) -> Parser {
        self.max_line = bytes;
        self.line_explicit = true;
        self
    }

    /// The largest event, in bytes after UTF-8 decoding: its data as
    /// dispatched plus its event type. Protects against a peer that sends an
    /// endless event. Default 16 MiB.
    #[must_use]
    pub fn max_event_size(mut self, bytes: usize) -> Parser {
        self.fields.max_event = bytes;
        if !self.line_explicit {
            self.max_line = bytes.saturating_add(LINE_SLACK);
        }
        self
    }

    /// Appends input, split anywhere.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.tail_len > 0 {
            // Finish the sequence the last chunk cut (four bytes decide it).
            let have = self.tail_len;
            let take = bytes.len().min(self.tail.len() - have);
            let mut joint = self.tail;
            joint[have..have + take].copy_from_slice(&bytes[..take]);
            let used = decode(&mut self.buf, &joint[..have + take]);
            if used >= have {
                bytes = &bytes[used - have..];
                self.tail_len = 0;
            } else {
                // Still cut short: then `take` was all of `bytes`.
                self.set_tail(&joint[used..have + take]);
                return;
            }
        }
        let used = decode(&mut self.buf, bytes);
        self.set_tail(&bytes[used..]);
    }

    fn set_tail(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.tail.len());
        self.tail[..n].copy_from_slice(&bytes[..n]);
        self.tail_len = n;
    }

    /// The next item, or `None` when more input is needed.
    pub fn next_item(&mut self) -> Option<Result<Item, ParseError>> {
        if !self.ready.is_empty() {
            return self.ready.pop_front();
        }
        self.parse_next()
    }

    /// Parses up to the next item.
    fn parse_next(&mut self) -> Option<Result<Item, ParseError>> {
        loop {
            if self.pos >= self.buf.len() {
                self.compact();
                return None;
            }
            let bytes = self.buf.as_bytes();
            if self.at_start {
                self.at_start = false;
                if self.buf[self.pos..].starts_with(BOM) {
                    self.pos += BOM.len_utf8();
                    continue;
                }
            }
            if self.after_cr {
                self.after_cr = false;
                if bytes[self.pos] == b'\n' {
                    self.pos += 1;
                    continue;
                }
            }
            let from = self.scanned.max(self.pos);
            let Some(offset) = find_eol(&bytes[from..]) else {
                return self.partial_line();
            };
            let start = self.pos;
            let end = from + offset;
            self.pos = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(self.pos) {
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.scanned = self.pos;
            let line = &self.buf[start..end];
            if self.skipping {
                if line.is_empty() && !self.skip_mid_line {
                    self.skipping = false;
                }
                self.skip_mid_line = false;
            } else if line.len() > self.max_line {
                return Some(
                    Err(self.drop_event(ParseError::LineTooLong { limit: self.max_line })),
                );
            } else if let Some(item) = self.fields.line(line) {
                if let Err(error) = item {
                    return Some(Err(self.drop_event(error)));
                }
                return Some(item);
            }
        }
    }

    /// Ends the stream: lines fed are still parsed, then "any pending data
    /// must be discarded" (a partial line, an unended event and its `id`).
    /// Later input continues a stream whose start is past; see
    /// [`reset`](Parser::reset).
    pub fn finish(&mut self) {
        while let Some(item) = self.parse_next() {
            self.ready.push_back(item);
        }
        self.reset_stream();
        self.at_start = false;
    }

    /// Starts a new stream (after reconnecting): drops unparsed input and the
    /// pending event, and strips a BOM again; keeps the last event ID, the
    /// retry time and the items `finish` parsed.
    pub fn reset(&mut self) {
        self.reset_stream();
        self.at_start = true;
    }

    /// The last event ID: the `id` in force at the last dispatch (what a
    /// reconnecting client sends).
    #[must_use]
    pub fn get_last_event_id(&self) -> &str {
        &self.fields.last_id
    }

    /// The reconnection time from the last valid `retry` field.
    #[must_use]
    pub fn retry(&self) -> Option<Duration> {
        self.fields.retry
    }

    /// The bytes held (input and pending event): after `next_item` returns
    /// `None`, at most `max_line_len + max_event_size + 3`.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.tail_len + self.fields.data.len() + self.fields.event_type.len()
    }

    /// No line ending in the rest: keep the partial line, or drop it when
    /// skipping or too long.
    fn partial_line(&mut self) -> Option<Result<Item, ParseError>> {
        if self.skipping {
            self.skip_mid_line = true;
            self.pos = self.buf.len();
        } else if self.buf.len() - self.pos > self.max_line {
            self.pos = self.buf.len();
            let error = self.drop_event(ParseError::LineTooLong { limit: self.max_line });
            self.skip_mid_line = true;
            return Some(Err(error));
        } else {
            self.scanned = self.buf.len();
        }
        self.compact();
        None
    }

    /// Drops the pending event after a limit error and skips to its end.
    fn drop_event(&mut self, error: ParseError) -> ParseError {
        self.fields.drop_event();
        self.skipping = true;
        self.skip_mid_line = false;
        error
    }

    /// Moves the unparsed input to the front of the buffer.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos >= self.buf.len() {
            clear(&mut self.buf);
        } else {
            self.buf.drain(..self.pos);
        }
        self.scanned = self.scanned.saturating_sub(self.pos);
        self.pos = 0;
    }

    /// Forgets the input and the pending event; keeps the IDs and retry.
    fn reset_stream(&mut self) {
        clear(&mut self.buf);
        self.pos = 0;
        self.tail_len = 0;
        self.scanned = 0;
        self.after_cr = false;
        self.skipping = false;
        self.skip_mid_line = false;
        self.fields.drop_event();
    }
}

impl Iterator for Parser {
    type Item = Result<Item, ParseError>;

    /// The same as [`Parser::next_item`].
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item()
    }
}

impl Fields {
    /// Interprets one complete line (without its line ending).
    fn line(&mut self, line: &str) -> Option<Result<Item, ParseError>> {
        // The most common line first, without looking for the colon.
        if let Some(value) = line.strip_prefix("data:") {
            return self.data(strip_space(value));
        }
        let (name, value) = match line.bytes().position(|b| b == b':') {
            None if line.is_empty() => return self.dispatch().map(Ok),
            None => (line, ""),
            Some(0) => return Some(Ok(Item::Comment(strip_space(&line[1..]).to_owned()))),
            Some(colon) => (&line[..colon], strip_space(&line[colon + 1..])),
        };
        match name {
            "data" => return self.data(value),
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
                return self.check_size();
            }
            // An id containing NUL is ignored whole.
            "id" if !value.contains('\0') => {
                self.id.clear();
                self.id.push_str(value);
            }
            // ASCII digits only; too large for a u64 saturates.
            "retry" if is_digits(value) => {
                self.retry = Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        None
    }

    fn data(&mut self, value: &str) -> Option<Result<Item, ParseError>> {
        if self.has_data {
            self.data.push('\n');
        }
        self.has_data = true;
        self.data.push_str(value);
        self.check_size()
    }

    /// The standard's "dispatch the event" steps, at an empty line.
    fn dispatch(&mut self) -> Option<Item> {
        self.last_id.clone_from(&self.id);
        // Step 3 (remove the last LF) is built in: `data` never has it.
        if !self.has_data {
            self.event_type.clear();
            return None;
        }
        // Copied out, not moved: exact-size strings, and the buffers keep
        // their capacity (up to KEEP_CAPACITY).
        let event = MessageEvent {
            event_type: if self.event_type.is_empty() {
                String::from("message")
            } else {
                self.event_type.clone()
            },
            data: self.data.clone(),
            id: self.last_id.clone(),
        };
        self.drop_event();
        Some(Item::Event(event))
    }

    fn check_size(&self) -> Option<Result<Item, ParseError>> {
        let limit = self.max_event;
        (self.data.len() + self.event_type.len() > limit)
            .then_some(Err(ParseError::EventTooLarge { limit }))
    }

    /// Forgets the pending event: data, type and an uncommitted `id`.
    fn drop_event(&mut self) {
        clear(&mut self.data);
        self.has_data = false;
        self.event_type.clear();
        if self.id != self.last_id {
            self.id.clone_from(&self.last_id);
        }
    }
}

/// Empties a buffer, giving back memory above [`KEEP_CAPACITY`].
fn clear(buffer: &mut String) {
    buffer.clear();
    buffer.shrink_to(KEEP_CAPACITY);
}

/// Removes one leading U+0020 SPACE.
fn strip_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

/// Appends `bytes` decoded lossily; returns how many it used (all but a
/// sequence cut short at the end).
fn decode(out: &mut String, mut bytes: &[u8]) -> usize {
    let total = bytes.len();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return total;
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                if let Ok(text) = std::str::from_utf8(valid) {
                    out.push_str(text);
                }
                match error.error_len() {
                    Some(invalid) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes = rest.get(invalid..).unwrap_or_default();
                    }
                    None => return total - rest.len(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_decoded_lossily() {
        let mut out = String::new();
        assert_eq!(decode(&mut out, b"a\xEF\xBBb\xFF\xC3\xA9\xF0\x9F\x98"), 7);
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}é");
        assert_eq!(decode(&mut out, b"\xED\xA0\x80\xC3"), 3);
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}é\u{FFFD}\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn utf8_split_anywhere() {
        let text = "aé✓😀\u{FEFF}z".as_bytes();
        let bad = b"\xF0\x9F\x98a\xE2\x82\xFF\xC3\xEF\xBB";
        for input in [text, &bad[..]] {
            let mut whole = Parser::new();
            whole.feed(input);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let mut parser = Parser::new();
                    for chunk in [&input[..i], &input[i..j], &input[j..]] {
                        parser.feed(chunk);
                    }
                    assert_eq!((&parser.buf, parser.tail_len), (&whole.buf, whole.tail_len));
                }
            }
        }
    }

    #[test]
    fn a_16_mib_limit_reserves_nothing_and_big_events_give_memory_back() {
        let capacity = |p: &Parser| p.buf.capacity() + p.fields.data.capacity();
        let mut parser = Parser::new();
        assert_eq!(parser.fields.max_event, 16 * 1024 * 1024);
        assert_eq!(capacity(&parser), 0, "nothing sized by the limit up front");
        parser.feed(b"data: small\n\n");
        assert!(matches!(parser.next_item(), Some(Ok(Item::Event(_)))));
        assert!(capacity(&parser) < 1024);
        // A 1 MiB event fed in 16 KiB reads: memory follows the input, and
        // is given back (down to 64 KiB per buffer) once the event is out.
        parser.feed(b"data: ");
        for _ in 0..64 {
            parser.feed(&[b'x'; 16 * 1024]);
            assert_eq!(parser.next_item(), None);
        }
        parser.feed(b"\n\n");
        assert!(matches!(parser.next_item(), Some(Ok(Item::Event(e))) if e.data.len() == 1 << 20));
        assert_eq!(parser.next_item(), None);
        assert!(capacity(&parser) <= 2 * KEEP_CAPACITY);
    }

    #[test]
    fn compaction_keeps_the_partial_line() {
        let mut parser = Parser::new();
        parser.feed(b"data: a\n\ndata: b");
        assert!(matches!(parser.next_item(), Some(Ok(Item::Event(_)))));
        assert_eq!(parser.next_item(), None);
        assert_eq!(parser.buf, "data: b");
        parser.feed(b"\n\n");
        let Some(Ok(Item::Event(event))) = parser.next_item() else {
            panic!("no event");
        };
        assert_eq!(event.data, "b");
        assert_eq!(parser.next_item(), None);
        assert_eq!(parser.buffered(), 0);
    }
}
