//! Outbound events: the encoder of the [wire format](crate#the-wire-format-in-one-page).
//!
//! * Fields are written `name: value`, so a value that starts with a space
//!   survives (a parser removes exactly one).
//! * Data and comments are split on CRLF, CR and LF into one line each; empty
//!   data is still one `data:` line, so browsers dispatch it.
//! * Comments and/or a `retry` alone get no empty line: it would dispatch
//!   nothing, and some clients (httpx-sse) would see an event with empty data.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::scan::{find_eol, push_decimal};

/// `get_` getters (the builders have the plain names) of `Option<String>` fields.
macro_rules! getters {
    ($($get:ident: $field:ident),*) => {$(
        #[doc = concat!("The `", stringify!($field), "` field, if set.")]
        #[must_use]
        pub fn $get(&self) -> Option<&str> {
            self.$field.as_deref()
        }
    )*};
}

/// One server-sent event, written in a fixed order: comments, `event`, `id`,
/// `retry`, `data`.
///
/// ```
/// use stdsse::Event;
/// use std::time::Duration;
///
/// let event = Event::new().event("update")?.id("42")?.retry(Duration::from_secs(3));
/// let wire = b"event: update\nid: 42\nretry: 3000\ndata: first line\ndata: second line\n\n";
/// assert_eq!(event.data("first line\nsecond line").encode(), wire);
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
    // The crate sets `event` and `id` directly only to values `check` passes.
    pub(crate) comments: Vec<String>,
    pub(crate) event: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) retry: Option<Duration>,
    pub(crate) data: Option<String>,
}

impl Event {
    /// An empty event (encoded, a lone empty line).
    #[must_use]
    pub fn new() -> Event {
        Event::default()
    }

    setters! {
        /// Sets the data; each line becomes a `data:` line.
        data(data: impl Into<String>) { data: Some(data.into()) }
        /// Sets the client's reconnection time, in whole milliseconds.
        retry(delay: Duration) { retry: Some(delay) }
    }

    /// Sets the event type; fails on CR or LF.
    pub fn event(mut self, event_type: impl Into<String>) -> Result<Event, EventError> {
        self.event = Some(check(Field::Event, event_type.into())?);
        Ok(self)
    }

    /// Sets the id (empty resets the client's); fails on what a `Last-Event-ID`
    /// cannot carry back (RFC 9110 5.5): a control but HTAB (CR, LF and NUL
    /// included), or SP or HTAB at either end (stripped from a header).
    pub fn id(mut self, id: impl Into<String>) -> Result<Event, EventError> {
        self.id = Some(check(Field::Id, id.into())?);
        Ok(self)
    }

    /// Adds a comment (one `:` line per line of text).
    #[must_use]
    pub fn comment(mut self, text: impl Into<String>) -> Event {
        self.comments.push(text.into());
        self
    }

    getters!(get_data: data, get_event: event, get_id: id);

    /// Encodes the event into a new buffer.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded event to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // The size in the common case (a few lines), to allocate once.
        let texts = self.comments.iter().chain(&self.event).chain(&self.id).chain(&self.data);
        out.reserve(texts.map(|text| text.len() + 8).sum::<usize>() + 32);
        for comment in &self.comments {
            push_lines(out, b"", comment);
        }
        for (name, value) in [("event", &self.event), ("id", &self.id)] {
            if let Some(value) = value {
                push_field(out, name.as_bytes(), value.as_bytes());
            }
        }
        if let Some(retry) = self.retry {
            push_retry(out, retry);
        }
        if let Some(data) = &self.data {
            push_lines(out, b"data", data);
        }
        // No empty line after comments and/or a retry alone (module docs).
        let fields = self.data.is_some() || self.event.is_some() || self.id.is_some();
        if fields || (self.comments.is_empty() && self.retry.is_none()) {
            out.push(b'\n');
        }
    }
}

/// An event encoded once, for any number of streams; cloning is a reference
/// count. Made only from an [`Event`], so its bytes are always well formed.
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

str_enum! {
    /// The fields checked for characters that would corrupt the stream.
    pub enum Field { Event = "event", Id = "id" }
    /// The field's name on the wire.
    fn name;
}

/// A field value holds CR or LF (in `event` or `id`), which would end the
/// field and start another, or (in `id`) NUL, which makes clients ignore it,
/// or another character that a `Last-Event-ID` header cannot carry back.
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

    /// The offending character: `'\r'` or `'\n'`; in an id also another
    /// control character, or `' '` or `'\t'` at either end.
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

error_display!(EventError(e, f) => {
    let names = [('\r', "CR"), ('\n', "LF"), ('\0', "NUL"), (' ', "SP"), ('\t', "HTAB")];
    let name = names.iter().find(|n| n.0 == e.character).map_or("CTL", |n| n.1);
    let (code, at, field) = (e.character as u32, e.position, e.field);
    write!(f, "invalid character {name} (U+{code:04X}) at byte {at} of the `{field}` field")
});

/// `InvalidInput`, so that `?` works in a function returning `io::Result`.
impl From<EventError> for std::io::Error {
    fn from(e: EventError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Refuses CR and LF in any single-line field, and in `id` what [`Event::id`] names.
pub(crate) fn check(field: Field, value: String) -> Result<String, EventError> {
    let end = |at: usize, c: char| (at == 0 || at + 1 == value.len()) && matches!(c, ' ' | '\t');
    let id = |at, c: char| (c.is_ascii_control() && c != '\t') || end(at, c);
    let bad = |&(at, c): &(usize, char)| c == '\r' || c == '\n' || field == Field::Id && id(at, c);
    match value.char_indices().find(bad) {
        None => Ok(value),
        Some((position, character)) => Err(EventError { field, character, position }),
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
