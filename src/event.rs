//! Outbound events: the `text/event-stream` encoder (the format is in the
//! [crate docs](crate#the-wire-format-in-one-page)).
//!
//! * Fields are written `name: value`, so a value that starts with a space
//!   survives (a parser removes exactly one).
//! * Data and comments are split on CRLF, CR and LF into one line each; empty
//!   data is still one `data:` line, so browsers dispatch it.
//! * Comments and/or a `retry` alone get no empty line: it would dispatch
//!   nothing, and some clients (httpx-sse and the SDKs that copied it) would
//!   take it for an event with empty data.
//! * `event` and `id` are checked when set: CR or LF would start a new field
//!   (injection), and a client ignores an `id` that contains NUL. So encoding
//!   cannot fail.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::scan::{find_eol, push_decimal};

/// One server-sent event: data, event type, id, retry hint and comments.
///
/// [`event`](Event::event) and [`id`](Event::id) are fallible; fields are
/// written in a fixed order: comments, `event`, `id`, `retry`, `data`.
///
/// ```
/// use stdsse::Event;
/// use std::time::Duration;
///
/// let event = Event::new()
///     .event("update")?
///     .id("42")?
///     .retry(Duration::from_secs(3))
///     .data("first line\nsecond line");
/// assert_eq!(
///     event.encode(),
///     b"event: update\nid: 42\nretry: 3000\ndata: first line\ndata: second line\n\n"
/// );
/// # Ok::<(), stdsse::EventError>(())
/// ```
///
/// A builder result left unused is a warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// stdsse::Event::new().data("x");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    comments: Vec<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    data: Option<String>,
}

impl Event {
    /// An empty event (encoded, a lone empty line).
    #[must_use]
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the data; each line becomes a `data:` line.
    #[must_use]
    pub fn data(mut self, data: impl Into<String>) -> Event {
        self.data = Some(data.into());
        self
    }

    /// Sets the event type; fails on CR or LF.
    pub fn event(mut self, event_type: impl Into<String>) -> Result<Event, EventError> {
        self.event = Some(check(Field::Event, event_type.into())?);
        Ok(self)
    }

    /// Sets the id (empty resets the client's); fails on CR, LF or NUL.
    pub fn id(mut self, id: impl Into<String>) -> Result<Event, EventError> {
        self.id = Some(check(Field::Id, id.into())?);
        Ok(self)
    }

    /// Sets the client's reconnection time, in whole milliseconds.
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> Event {
        self.retry = Some(delay);
        self
    }

    /// Adds a comment (one `:` line per line of text).
    #[must_use]
    pub fn comment(mut self, text: impl Into<String>) -> Event {
        self.comments.push(text.into());
        self
    }

    /// Sets an id the crate knows to be valid.
    pub(crate) fn with_valid_id(mut self, id: String) -> Event {
        debug_assert!(check(Field::Id, id.clone()).is_ok());
        self.id = Some(id);
        self
    }

    /// The event without its id (the hub on Redis).
    pub(crate) fn without_id(self) -> Event {
        Event { id: None, ..self }
    }

    /// Sets an event type the crate knows to be valid.
    pub(crate) fn with_valid_event(mut self, event_type: &str) -> Event {
        debug_assert!(check(Field::Event, event_type.to_string()).is_ok());
        self.event = Some(event_type.to_string());
        self
    }

    /// The data, if set.
    #[must_use]
    pub fn get_data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The event type, if set.
    #[must_use]
    pub fn get_event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The id, if set.
    #[must_use]
    pub fn get_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Encodes the event into a new buffer.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded event to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.size_hint());
        for comment in &self.comments {
            push_lines(out, b"", comment);
        }
        if let Some(event) = &self.event {
            push_field(out, b"event", event.as_bytes());
        }
        if let Some(id) = &self.id {
            push_field(out, b"id", id.as_bytes());
        }
        if let Some(retry) = self.retry {
            push_retry(out, retry);
        }
        if let Some(data) = &self.data {
            push_lines(out, b"data", data);
        }
        if self.dispatches() {
            out.push(b'\n');
        }
    }

    /// Whether the encoding ends with the empty line (see the module docs).
    fn dispatches(&self) -> bool {
        let fields = self.data.is_some() || self.event.is_some() || self.id.is_some();
        fields || (self.comments.is_empty() && self.retry.is_none())
    }

    /// The encoded size in the common case (a few lines), to allocate once.
    fn size_hint(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 8);
        let comments: usize = self.comments.iter().map(|c| c.len() + 3).sum();
        comments + text(&self.event) + text(&self.id) + text(&self.data) + 32
    }
}

/// An event encoded once, ready to be written to any number of streams.
///
/// Cloning is a reference count. A `Frame` is made only from an [`Event`],
/// so its bytes are always well formed.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Arc<[u8]>);

impl Frame {
    /// The encoded bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of encoded bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: even an empty event is one empty line.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes encoded already (the hub's events read back from Redis).
    pub(crate) fn from_encoded(bytes: Vec<u8>) -> Frame {
        Frame(bytes.into())
    }
}

impl From<&Event> for Frame {
    fn from(event: &Event) -> Frame {
        Frame(event.encode().into())
    }
}

impl From<Event> for Frame {
    fn from(event: Event) -> Frame {
        Frame::from(&event)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// The fields checked for characters that would corrupt the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `event:`
    Event,
    /// `id:`
    Id,
}

impl Field {
    /// The field's name on the wire.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Field::Event => "event",
            Field::Id => "id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field value holds CR or LF (in `event` or `id`), or NUL (in `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventError {
    field: Field,
    character: char,
    position: usize,
}

impl EventError {
    /// The field whose value was refused.
    #[must_use]
    pub fn field(&self) -> Field {
        self.field
    }

    /// The offending character: `'\r'`, `'\n'` or `'\0'`.
    #[must_use]
    pub fn character(&self) -> char {
        self.character
    }

    /// The byte offset of the first offending character.
    #[must_use]
    pub fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, why) = match self.character {
            '\r' => ("CR", "it would end the field and start another"),
            '\n' => ("LF", "it would end the field and start another"),
            _ => ("NUL", "clients ignore an id that contains it"),
        };
        write!(
            f,
            "invalid character {} (U+{:04X}) at byte {} of the `{}` field: {}",
            name, self.character as u32, self.position, self.field, why
        )
    }
}

impl std::error::Error for EventError {}

/// `InvalidInput`, so that `?` works in a function returning `io::Result`.
impl From<EventError> for std::io::Error {
    fn from(e: EventError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Refuses CR and LF in any single-line field, and NUL in `id`.
fn check(field: Field, value: String) -> Result<String, EventError> {
    let bad = |b: u8| b == b'\r' || b == b'\n' || (b == 0 && field == Field::Id);
    match value.bytes().position(bad) {
        None => Ok(value),
        Some(position) => {
            Err(EventError { field, character: char::from(value.as_bytes()[position]), position })
        }
    }
}

/// Writes `name: value\n` (`name:\n` if empty; a comment has no name).
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(b':');
    if !value.is_empty() {
        out.push(b' ');
        out.extend_from_slice(value);
    }
    out.push(b'\n');
}

/// Writes one `name: line` per line of `text` (at least one).
pub(crate) fn push_lines(out: &mut Vec<u8>, name: &[u8], text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = find_eol(rest) {
        push_field(out, name, &rest[..at]);
        let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
        rest = &rest[at + 1 + usize::from(crlf)..];
    }
    push_field(out, name, rest);
}

/// Writes `retry: <milliseconds>\n`.
pub(crate) fn push_retry(out: &mut Vec<u8>, delay: Duration) {
    out.extend_from_slice(b"retry: ");
    push_decimal(out, delay.as_millis());
    out.push(b'\n');
}
