//! HTTP/1.1 without I/O, for both directions: request and response heads
//! ([`parse_head`], [`parse_response_head`]) on one field-line scanner and one
//! set of byte tables, one [`Framing`], [`ChunkedDecoder`] and [`Response`].
//!
//! # Grammar (RFC 9112 2-5, tokens from RFC 9110 5.6.2)
//!
//! ```text
//! request-head   = *( CRLF ) request-line *( field-line CRLF ) CRLF
//! request-line   = method SP request-target SP HTTP-version CRLF
//! status-line    = HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF
//! request-target = origin-form / absolute-form / "*" ; "*" with OPTIONS only
//! HTTP-version   = "HTTP/" DIGIT "." DIGIT     ; 1.0 and 1.1 served
//! field-line     = field-name ":" OWS field-value OWS
//! field-value    = *( HTAB / SP / VCHAR / obs-text )
//! ```
//!
//! Strict wherever laxness lets two implementations disagree about a message
//! (request smuggling): CRLF only (2.2 allows bare LF), no obs-fold (5.2) or
//! whitespace before a colon (5.1), one valid `Host` (3.2), a UTF-8 request
//! head. Every [`Limits`] bound is enforced as soon as the bytes that break
//! it are in. The parsers keep no state: call them again with the whole,
//! longer buffer.

/// `header` and `header_all` of a head whose fields are `|$head| $pairs`.
macro_rules! lookups {
    (|$head:ident| $pairs:expr) => {
        /// The value of the first field named `name` (ignoring case).
        #[must_use]
        pub fn header(&self, name: &str) -> Option<&str> {
            self.header_all(name).next()
        }

        /// The values of every field named `name` (ignoring case), in order.
        pub fn header_all<'a, 'n>(
            &'a self,
            name: &'n str,
        ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
            let $head = self;
            super::find($pairs, name)
        }
    };
}

mod chunked;
mod request;
mod response;

pub use chunked::ChunkedDecoder;
pub(crate) use chunked::{body_bytes, framed, framed_len, LAST_CHUNK};
pub use request::{decode_query, parse_head, percent_decode, Request};
pub use response::{parse_response_head, reason_phrase, Response, ResponseHead};
pub(crate) use response::{unfold, CONTINUE};

/// Builds a `[bool; 256]` table at compile time from a predicate on a byte.
macro_rules! byte_table {
    (|$b:ident| $predicate:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            table[i] = $predicate;
            i += 1;
        }
        table
    }};
}

/// `set.contains(&b)` in a `const fn`.
const fn any_of(b: u8, set: &[u8]) -> bool {
    match set {
        [] => false,
        [first, rest @ ..] => *first == b || any_of(b, rest),
    }
}

/// `tchar` (RFC 9110 5.6.2): a method or field name byte.
static TCHAR: [bool; 256] =
    byte_table!(|b| b.is_ascii_alphanumeric() || any_of(b, b"!#$%&'*+-.^_`|~"));

/// Request-target bytes: visible ASCII except `"`, `<`, `>` (which browsers
/// always percent-encode) and `#` (a fragment is never sent).
static URI: [bool; 256] = byte_table!(|b| b >= 0x21 && b <= 0x7e && !any_of(b, b"\"<>#"));

/// `field-value` bytes: HTAB, SP, VCHAR and obs-text (0x80-0xFF).
static VALUE: [bool; 256] = byte_table!(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));

/// `Host` bytes: `uri-host [ ":" port ]` (RFC 3986 unreserved, pct-encoded,
/// sub-delims, `:`, `[`, `]`).
static HOST: [bool; 256] =
    byte_table!(|b| b.is_ascii_alphanumeric() || any_of(b, b"-._~%!$&'()*+,;=:[]"));

/// Whether every byte of `s` is in `table` (and, if `nonempty`, there is one).
fn all_in(s: &[u8], table: &[bool; 256], nonempty: bool) -> bool {
    !(nonempty && s.is_empty()) && s.iter().all(|&b| table[b as usize])
}

/// Whether `name: value` is a field line a recipient accepts (`Host`: valid).
pub(crate) fn valid_field(name: &str, value: &str) -> bool {
    let host = name.eq_ignore_ascii_case("host");
    is_token(name) && all_in(value.as_bytes(), if host { &HOST } else { &VALUE }, false)
}

/// Whether `s` is a token (a method, a field name).
pub(crate) fn is_token(s: &str) -> bool {
    all_in(s.as_bytes(), &TCHAR, true)
}

/// The index of the first byte of `buf[from..]` outside `table`, or `buf.len()`.
#[inline]
fn scan(buf: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let mut i = from;
    while let Some(&[a, b, c, d]) = buf.get(i..i + 4) {
        if !(table[a as usize] & table[b as usize] & table[c as usize] & table[d as usize]) {
            break;
        }
        i += 4;
    }
    while i < buf.len() && table[buf[i] as usize] {
        i += 1;
    }
    i
}

/// Removes the optional whitespace (SP, HTAB) around a list element.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// The result of parsing bytes that may not all have arrived yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// Parsing finished; the value usually says how many bytes were used.
    Complete(T),
    /// Valid so far: call again with more bytes.
    Partial,
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The method is not a token followed by one SP.
    Method,
    /// Not origin-form, `http` absolute-form or `OPTIONS *`, or a third SP.
    Target,
    /// A well-formed HTTP-version other than 1.x.
    Version,
    /// The HTTP-version is not `HTTP/` DIGIT `.` DIGIT, or is missing.
    MalformedVersion,
    /// A field name is not a token, is followed by whitespace, or has no colon.
    HeaderName,
    /// A field value holds a control but HTAB, or (in a request) is not UTF-8.
    HeaderValue,
    /// A bare LF, a CR not followed by LF, or obs-fold.
    NewLine,
    /// The request (or status) line is longer than [`Limits::max_request_line`].
    RequestLineTooLong,
    /// A field line is longer than [`Limits::max_header_line`].
    HeaderLineTooLong,
    /// More field lines than [`Limits::max_headers`].
    TooManyHeaders,
    /// The head is longer than [`Limits::max_head`].
    HeadTooLarge,
    /// An HTTP/1.1 request without `Host`, more than one, or an invalid one.
    MissingHost,
    /// A `Content-Length` not `1*DIGIT` within 64 bits, or different values.
    ContentLength,
    /// A request with both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// Another coding before the final `chunked`, or a `Transfer-Encoding` in HTTP/1.0.
    UnsupportedTransferCoding,
    /// A `Transfer-Encoding` whose final coding is not `chunked` (RFC 9112 6.3 rule 4).
    ChunkedNotLast,
    /// A malformed chunked body.
    ChunkSize,
    /// The body is longer than [`Limits::max_body`].
    BodyTooLarge,
    /// An `Expect` value other than `100-continue`.
    Expectation,
    /// A status line not `HTTP/1.` DIGIT SP 3DIGIT, code >= 100 (answered 502).
    StatusLine,
}

impl Error {
    /// The status code a server answers with.
    #[must_use]
    pub fn status(self) -> u16 {
        self.parts().0
    }

    /// A short description (the body of a server's error response).
    #[must_use]
    pub fn description(self) -> &'static str {
        self.parts().1
    }

    fn parts(self) -> (u16, &'static str) {
        match self {
            Error::Method => (400, "invalid method"),
            Error::Target => (400, "invalid request target"),
            Error::Version => (505, "unsupported HTTP version"),
            Error::MalformedVersion => (400, "malformed HTTP version"),
            Error::HeaderName => (400, "invalid header name"),
            Error::HeaderValue => (400, "invalid header value"),
            Error::NewLine => (400, "invalid line ending"),
            Error::RequestLineTooLong => (414, "request line too long"),
            Error::HeaderLineTooLong => (431, "header line too long"),
            Error::TooManyHeaders => (431, "too many headers"),
            Error::HeadTooLarge => (431, "request head too large"),
            Error::MissingHost => (400, "missing or invalid Host header"),
            Error::ContentLength => (400, "invalid Content-Length"),
            Error::LengthAndChunked => (400, "both Content-Length and Transfer-Encoding"),
            Error::UnsupportedTransferCoding => (501, "unsupported Transfer-Encoding"),
            Error::ChunkedNotLast => (400, "Transfer-Encoding not ending in chunked"),
            Error::ChunkSize => (400, "invalid chunked body"),
            Error::BodyTooLarge => (413, "request body too large"),
            Error::Expectation => (417, "unsupported expectation"),
            Error::StatusLine => (502, "invalid status line"),
        }
    }
}

error_display!(Error(e, f) => write!(f, "{} ({})", e.description(), e.status()));

/// Size bounds on what a peer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request (or status) line, CRLF and leading empty lines not
    /// counted. Protects against huge URLs held in memory. Default 8 KiB.
    pub max_request_line: usize,
    /// Longest field line, CRLF not counted. Protects against one enormous
    /// header (cookies, tokens). Default 8 KiB.
    pub max_header_line: usize,
    /// Most field lines in one head. Protects against the cost of thousands
    /// of tiny headers. Default 100.
    pub max_headers: usize,
    /// Longest head, empty lines and final CRLF included (at most `u32::MAX`).
    /// Bounds a connection's buffer before the head is parsed. Default 64 KiB.
    pub max_head: usize,
    /// Longest body: the `Content-Length`, or the decoded size of a chunked
    /// body. Protects against uploads that fill memory. Default 1 MiB.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: 8 * 1024,
            max_header_line: 8 * 1024,
            max_headers: 100,
            max_head: 64 * 1024,
            max_body: 1024 * 1024,
        }
    }
}

str_enum! {
    /// The HTTP version of a request.
    pub enum Version { Http10 = "HTTP/1.0", Http11 = "HTTP/1.1" }
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    fn as_str;
}

/// How a body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No length is declared: a request has no body (6.3 rule 7), a
    /// response's body runs until the connection closes (rule 8).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows: decode it with a [`ChunkedDecoder`].
    Chunked,
}

/// The framing `Transfer-Encoding` (exactly `chunked`; empty list elements
/// are ignored, RFC 9110 5.6.1) or else every `Content-Length` (all elements
/// equal `1*DIGIT`) declares (6.3 rules 3 and 4); `all` finds a field's values.
fn declared_framing<'a, I>(all: impl Fn(&'static str) -> I) -> Result<Framing, Error>
where
    I: Iterator<Item = &'a str>,
{
    let mut codings = all("transfer-encoding").peekable();
    if codings.peek().is_some() {
        let mut codings =
            codings.flat_map(|v| v.split(',')).map(trim_ows).filter(|c| !c.is_empty());
        let chunked = |c: Option<&str>| c.is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        let (first, last) = (codings.next(), codings.last());
        return match (chunked(first), last) {
            (true, None) => Ok(Framing::Chunked),
            _ if chunked(last.or(first)) => Err(Error::UnsupportedTransferCoding),
            _ => Err(Error::ChunkedNotLast),
        };
    }
    let mut length = None;
    for element in all("content-length").flat_map(|v| v.split(',')) {
        let n = crate::scan::parse_decimal(trim_ows(element)).ok_or(Error::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::ContentLength);
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::None, Framing::Length))
}

/// Every value of the fields named `name` (ignoring case), in order.
fn find<'a, 'n, I>(fields: I, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n, I>
where
    I: Iterator<Item = (&'a str, &'a str)>,
{
    fields.filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// One field line: byte ranges of its name and (trimmed) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// A head parser's result: `Err(None)` while more bytes may complete it.
type Parsed<T> = Result<T, Option<Error>>;

/// The error for an unexpected `view[i]`: bare LF or CR is `NewLine`, CRLF
/// (line ended early) `at_crlf`, other bytes `other`; a final CR needs more.
fn unexpected(view: &[u8], i: usize, at_crlf: Error, other: Error) -> Option<Error> {
    match view.get(i) {
        Some(b'\n') => Some(Error::NewLine),
        Some(b'\r') => view.get(i + 1).map(|&b| if b == b'\n' { at_crlf } else { Error::NewLine }),
        _ => Some(other),
    }
}

fn crlf(view: &[u8], i: usize) -> Parsed<()> {
    match (view.get(i), view.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => Err(None),
        (Some(b'\r'), Some(b'\n')) => Ok(()),
        _ => Err(Some(Error::NewLine)),
    }
}

/// The part of `view` a line at `start` may use (`max` bytes and the CR), and
/// whether `view` holds all of it (then running off the end means too long).
fn line_bound(view: &[u8], start: usize, max: usize) -> (&[u8], bool) {
    let cap = start.saturating_add(max).saturating_add(1);
    (&view[..cap.min(view.len())], view.len() >= cap)
}

/// Runs a head parser on `buf` cut to [`Limits::max_head`]: a head that is
/// not complete within it is [`Error::HeadTooLarge`].
fn within_head<T>(
    buf: &[u8],
    limits: &Limits,
    parse: impl FnOnce(&[u8]) -> Parsed<T>,
) -> Result<Status<T>, Error> {
    let max_head = limits.max_head.min(u32::MAX as usize);
    match parse(&buf[..buf.len().min(max_head)]) {
        Ok(done) => Ok(Status::Complete(done)),
        Err(Some(error)) => Err(error),
        Err(None) if buf.len() > max_head => Err(Error::HeadTooLarge),
        Err(None) => Ok(Status::Partial),
    }
}

/// `*( field-line CRLF ) CRLF` from `view[pos..]`, spans counted from
/// `base`: the offset after the final CRLF.
fn parse_fields(
    view: &[u8],
    mut pos: usize,
    base: usize,
    limits: &Limits,
    fields: &mut Vec<FieldSpan>,
) -> Parsed<usize> {
    loop {
        match view.get(pos) {
            Some(b'\r') => return crlf(view, pos).map(|()| pos + 2),
            Some(b'\n' | b' ' | b'\t') => return Err(Some(Error::NewLine)),
            Some(_) => {}
            None => return Err(None),
        }
        if fields.len() >= limits.max_headers {
            return Err(Some(Error::TooManyHeaders));
        }
        let (line, long) = line_bound(view, pos, limits.max_header_line);
        let name_end = scan(line, pos, &TCHAR);
        match line.get(name_end) {
            None => return Err(long.then_some(Error::HeaderLineTooLong)),
            Some(b':') if name_end > pos => {}
            Some(_) => {
                return Err(unexpected(view, name_end, Error::HeaderName, Error::HeaderName))
            }
        }
        let ows = line[name_end + 1..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        let value_start = name_end + 1 + ows;
        let value_stop = scan(line, value_start, &VALUE);
        match line.get(value_stop) {
            None => return Err(long.then_some(Error::HeaderLineTooLong)),
            Some(b'\r' | b'\n') => crlf(view, value_stop)?,
            Some(_) => return Err(Some(Error::HeaderValue)),
        }
        // The value holds no CR, LF or FF, so ASCII whitespace is SP or HTAB.
        let value_end = value_start + line[value_start..value_stop].trim_ascii_end().len();
        // Offsets fit in u32: `view` is at most `u32::MAX` bytes long.
        let at = |(from, to): (usize, usize)| ((from - base) as u32, (to - base) as u32);
        fields.push(FieldSpan { name: at((pos, name_end)), value: at((value_start, value_end)) });
        pos = value_stop + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let count = |t: &[bool; 256]| t.iter().filter(|&&b| b).count();
        assert_eq!(count(&TCHAR), 26 * 2 + 10 + 15);
        assert_eq!(count(&URI), 94 - 4);
        assert_eq!(count(&VALUE), 256 - 32 - 1 + 1);
        assert!(TCHAR[b'~' as usize] && !TCHAR[b':' as usize] && !TCHAR[b' ' as usize]);
        assert!(URI[b'?' as usize] && !URI[b'#' as usize] && !URI[0x80]);
        assert!(VALUE[b'\t' as usize] && VALUE[0xff] && !VALUE[0x7f] && !VALUE[b'\r' as usize]);
        assert!(HOST[b'[' as usize] && !HOST[b'/' as usize] && !HOST[b'@' as usize]);
    }
}
