//! Inbound events: an incremental `text/event-stream` parser.
//!
//! [`Parser`] implements WHATWG HTML 9.2.6 "Interpreting an event stream",
//! whose rules the [crate docs](crate#the-wire-format-in-one-page) teach.
//! Where the standard leaves a choice:
//!
//! * Decoding never fails: one leading BOM is stripped, invalid UTF-8 becomes
//!   U+FFFD per maximal subpart (as [`String::from_utf8_lossy`]).
//! * A CR that ends a fed chunk ends its line at once; an LF that starts the
//!   next chunk completes that CRLF, not an empty line.
//! * Comments are reported ([`Item::Comment`]); a `retry` too large for a
//!   `u64` saturates; [`Parser::max_event_size`] bounds the memory held.
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

/// U+FEFF in UTF-8, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The default for [`Parser::max_event_size`].
const DEFAULT_LIMIT: usize = 16 * 1024 * 1024;

/// The capacity a buffer keeps once emptied, so that one large event does
/// not pin its size in memory for the rest of the stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What [`Parser::max_line_len`]'s default adds to the event limit.
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
    /// (the inverse of [`Event::comment`](crate::Event::comment)).
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

error_display!(ParseError(e, f) => match e {
    ParseError::LineTooLong { limit } => write!(f, "event stream line longer than {limit} bytes"),
    ParseError::EventTooLarge { limit } => {
        write!(f, "event larger than {limit} bytes (data and event type)")
    }
});

builder! {
    /// An incremental event-stream parser: [`feed`](Parser::feed) it bytes as
    /// they arrive and pull [`Item`]s with [`next_item`](Parser::next_item), or
    /// iterate (not fused: `None` means "feed me more").
    ///
    /// A limit error is returned once, as soon as it is known (a long line
    /// before its end arrives). The rest of the event, up to the next empty
    /// line, is skipped unread, and its earlier fields are dropped but for a
    /// `retry`, which the standard applies at once.
    #[derive(Clone)]
    pub struct Parser {
        /// The input as fed, decoded; `buf[..pos]` is parsed.
        buf: String = String::new(),
        /// The start of a UTF-8 sequence split at the end of the input fed.
        tail: Vec<u8> = Vec::new(),
        pos: usize = 0,
        /// `buf[pos..scanned]` holds no CR or LF (a long line is scanned once).
        scanned: usize = 0,
        /// Still at the start of the stream: a BOM may come.
        at_start: bool = true,
        /// The last line ended with CR: an LF next belongs to it.
        after_cr: bool = false,
        skip: Skip = Skip::No,
        /// Items parsed by `finish` that were not pulled yet.
        ready: VecDeque<Result<Item, ParseError>> = VecDeque::new(),
        fields: Fields = Fields { max_event: DEFAULT_LIMIT, ..Fields::default() },
    }
}

/// Skipping the lines of an event dropped after a limit error, to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    No,
    /// At the start of a line of the dropped event.
    Lines,
    /// Inside a line whose start was dropped: its end is no empty line.
    RestOfLine,
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
    /// `None`: the event limit plus [`LINE_SLACK`].
    max_line: Option<usize>,
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("last_event_id", &self.fields.last_id)
            .field("retry", &self.fields.retry)
            .field("buffered", &self.buffered())
            .field("max_line_len", &self.fields.max_line())
            .field("max_event_size", &self.fields.max_event)
            .finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser at the start of a stream with the default limits (it
    /// allocates nothing until input is fed).
    #[must_use]
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Starts from this last event ID, as a client reconnecting with
    /// `Last-Event-ID` does.
    #[must_use]
    pub fn last_event_id(mut self, id: impl Into<String>) -> Parser {
        self.fields.last_id = id.into();
        self.fields.id.clone_from(&self.fields.last_id);
        self
    }

    /// The longest line, in bytes after UTF-8 decoding, line ending not
    /// counted: bounds the unended line held. Default: the event limit plus
    /// 64, so one `data:` line can carry a whole event.
    #[must_use]
    pub fn max_line_len(mut self, bytes: usize) -> Parser {
        self.fields.max_line = Some(bytes);
        self
    }

    /// The largest event, in bytes after UTF-8 decoding: its data as
    /// dispatched plus its event type. Protects against a peer that sends an
    /// endless event. Default 16 MiB.
    #[must_use]
    pub fn max_event_size(mut self, bytes: usize) -> Parser {
        self.fields.max_event = bytes;
        self
    }

    /// Appends input, split anywhere.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Decoded a chunk at a time (a line at a time costs a third more).
        let joined;
        let mut input = bytes;
        if !self.tail.is_empty() {
            self.tail.extend_from_slice(bytes);
            joined = std::mem::take(&mut self.tail);
            input = &joined;
        }
        loop {
            match std::str::from_utf8(input) {
                Ok(text) => return self.buf.push_str(text),
                Err(e) => {
                    let (valid, rest) = input.split_at(e.valid_up_to());
                    self.buf.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    let Some(bad) = e.error_len() else { return self.tail.extend_from_slice(rest) };
                    self.buf.push(char::REPLACEMENT_CHARACTER);
                    input = &rest[bad..];
                }
            }
        }
    }

    /// The next item, or `None` when more input is needed.
    pub fn next_item(&mut self) -> Option<Result<Item, ParseError>> {
        self.ready.pop_front().or_else(|| self.parse_next())
    }

    fn parse_next(&mut self) -> Option<Result<Item, ParseError>> {
        loop {
            if self.pos >= self.buf.len() {
                self.compact();
                return None;
            }
            let bytes = self.buf.as_bytes();
            if self.at_start {
                let rest = &bytes[self.pos..];
                if rest.len() < BOM.len() && BOM.starts_with(rest) {
                    return None; // A BOM may be coming.
                }
                self.at_start = false;
                if rest.starts_with(BOM) {
                    self.pos += BOM.len();
                    continue;
                }
            }
            if std::mem::take(&mut self.after_cr) && bytes[self.pos] == b'\n' {
                self.pos += 1;
                continue;
            }
            let from = self.scanned.max(self.pos);
            let Some(offset) = find_eol(&bytes[from..]) else {
                return self.partial_line();
            };
            let (start, end) = (self.pos, from + offset);
            (self.pos, self.scanned) = (end + 1, end + 1);
            self.after_cr = bytes[end] == b'\r';
            match self.skip {
                Skip::No => {
                    if let Some(item) = self.fields.line(&self.buf[start..end]) {
                        return Some(item.map_err(|error| self.drop_event(error)));
                    }
                }
                Skip::Lines if start == end => self.skip = Skip::No,
                _ => self.skip = Skip::Lines,
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
        self.reset();
        self.at_start = false;
    }

    /// Starts a new stream (after reconnecting): drops unparsed input and the
    /// pending event, and strips a BOM again; keeps the last event ID, the
    /// retry time and the items `finish` parsed.
    pub fn reset(&mut self) {
        self.pos = self.buf.len();
        self.compact();
        self.tail.clear();
        (self.at_start, self.after_cr, self.skip) = (true, false, Skip::No);
        self.fields.drop_event();
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
        self.buf.len() + self.fields.data.len() + self.fields.event_type.len()
    }

    /// No line ending in the rest: keep the partial line, or drop it when
    /// skipping or too long.
    fn partial_line(&mut self) -> Option<Result<Item, ParseError>> {
        let limit = self.fields.max_line();
        let too_long = self.skip == Skip::No && self.buf.len() - self.pos > limit;
        let error = too_long.then(|| Err(self.drop_event(ParseError::LineTooLong { limit })));
        if self.skip == Skip::No {
            self.scanned = self.buf.len();
        } else {
            self.pos = self.buf.len();
            self.skip = Skip::RestOfLine;
        }
        self.compact();
        error
    }

    /// Drops the pending event after a limit error and skips to its end.
    fn drop_event(&mut self, error: ParseError) -> ParseError {
        self.fields.drop_event();
        self.skip = Skip::Lines;
        error
    }

    /// Moves the unparsed input to the front of the buffer.
    fn compact(&mut self) {
        self.buf.drain(..self.pos);
        if self.buf.is_empty() {
            self.buf.shrink_to(KEEP_CAPACITY);
        }
        self.scanned = self.scanned.saturating_sub(self.pos);
        self.pos = 0;
    }
}

impl Iterator for Parser {
    type Item = Result<Item, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item()
    }
}

impl Fields {
    fn max_line(&self) -> usize {
        self.max_line.unwrap_or(self.max_event.saturating_add(LINE_SLACK))
    }

    /// Interprets one line (without its end) by the [rules](crate#the-wire-format-in-one-page).
    fn line(&mut self, line: &str) -> Option<Result<Item, ParseError>> {
        let limit = self.max_line();
        if line.len() > limit {
            return Some(Err(ParseError::LineTooLong { limit }));
        }
        let (name, value) = match line.bytes().position(|b| b == b':') {
            None if line.is_empty() => return self.dispatch().map(Ok),
            None => (line, ""),
            Some(0) => return Some(Ok(Item::Comment(strip_space(&line[1..]).to_owned()))),
            Some(colon) => (&line[..colon], strip_space(&line[colon + 1..])),
        };
        match name {
            "data" => {
                if std::mem::replace(&mut self.has_data, true) {
                    self.data.push('\n'); // The LF appended to the previous value.
                }
                self.data.push_str(value);
            }
            "event" => value.clone_into(&mut self.event_type),
            "id" if !value.contains('\0') => value.clone_into(&mut self.id),
            "retry" if is_digits(value) => {
                self.retry = Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        let limit = self.max_event;
        (self.data.len() + self.event_type.len() > limit)
            .then_some(Err(ParseError::EventTooLarge { limit }))
    }

    /// The standard's "dispatch the event" steps, at an empty line.
    fn dispatch(&mut self) -> Option<Item> {
        self.last_id.clone_from(&self.id);
        // Copied out, not moved: exact-size strings, and the buffers keep
        // their capacity (up to KEEP_CAPACITY).
        let event_type = if self.event_type.is_empty() { "message" } else { &self.event_type };
        let event = self.has_data.then(|| MessageEvent {
            event_type: event_type.to_owned(),
            data: self.data.clone(),
            id: self.last_id.clone(),
        });
        self.drop_event();
        event.map(Item::Event)
    }

    /// Forgets the pending event: data, type and an uncommitted `id`.
    fn drop_event(&mut self) {
        self.data.clear();
        self.data.shrink_to(KEEP_CAPACITY);
        self.has_data = false;
        self.event_type.clear();
        self.id.clone_from(&self.last_id);
    }
}

/// Removes one leading U+0020 SPACE.
fn strip_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
