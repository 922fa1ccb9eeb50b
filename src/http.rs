//! HTTP/1.1 for the server: request heads, body framing, chunked bodies,
//! query strings and responses.
//!
//! Everything here works on byte slices and owned values; no I/O happens in
//! this module. The server reads bytes from a socket into a buffer, calls
//! [`parse_head`] until it returns [`Status::Complete`], asks the
//! [`Request`] for its [`body_framing`](Request::body_framing), reads the
//! body (with a [`ChunkedDecoder`] when it is chunked), and writes a
//! [`Response`].
//!
//! # What a request head must look like
//!
//! RFC 9112 (HTTP/1.1), sections 2.2, 3 and 5, with tokens from RFC 9110:
//!
//! ```text
//! request-head   = *( CRLF ) request-line *( field-line CRLF ) CRLF
//! request-line   = method SP request-target SP HTTP-version CRLF
//! method         = token
//! request-target = origin-form / absolute-form / "*" ; "*" with OPTIONS only
//! origin-form    = absolute-path [ "?" query ]
//! absolute-form  = "http://" authority path-abempty [ "?" query ]
//! HTTP-version   = "HTTP/" DIGIT "." DIGIT     ; 1.0 and 1.1 served
//! field-line     = field-name ":" OWS field-value OWS
//! field-name     = token
//! field-value    = *( HTAB / SP / VCHAR / obs-text )
//! token          = 1*tchar
//! ```
//!
//! The parser is strict wherever laxness lets two HTTP implementations
//! disagree about a message (request smuggling) or lets a client make the
//! server buffer without end:
//!
//! * **Line ends are CRLF, nothing else.** A bare LF, or a CR followed by
//!   anything but LF, anywhere in the head is [`Error::NewLine`]. RFC 9112
//!   2.2 *allows* a recipient to accept a bare LF but does not require it;
//!   a front proxy that does not split on bare LF and a server that does
//!   would disagree on where a field (or the head) ends, which is exactly
//!   the disagreement request smuggling is built on. Refusing is always
//!   safe.
//! * Empty lines (CRLF) before the request line are skipped (RFC 9112 2.2
//!   SHOULD); they count towards [`Limits::max_head`].
//! * The request line has exactly one SP between its three parts.
//! * The method is any token (case-sensitive; no list of known methods).
//! * The request-target is origin-form: `/` followed by visible ASCII
//!   except `"`, `<`, `>` and `#` (no spaces, controls, DEL or non-ASCII
//!   bytes; a fragment is never sent). `\`, `^`, `` ` ``, `{`, `|` and
//!   `}` are accepted because browsers send them unencoded in query
//!   strings. Percent-encoding is not checked. `*` is accepted only
//!   with `OPTIONS`.
//! * Absolute-form is accepted too (RFC 9112 3.2.2: "a server MUST accept
//!   the absolute-form in requests"): the scheme is `http` (any case), the
//!   authority a valid `uri-host [ ":" port ]`, not empty, without
//!   userinfo; the path and query come from the rest (an empty path is
//!   `/`). Another scheme (`https` included: this server speaks plain
//!   TCP) is [`Error::Target`]. `Host` must still be present and valid,
//!   but when it disagrees with the target's authority the request is
//!   served and the target wins, as RFC 9112 3.2.2 says ("MUST ignore the
//!   received Host header field"): see [`Request::authority`].
//!   Authority-form (`host:port`, for `CONNECT`) is [`Error::Target`]:
//!   this is an origin server, not a proxy.
//! * The version must be `HTTP/` DIGIT `.` DIGIT (RFC 9112 2.3,
//!   case-sensitive): anything else (`http/1.1`, `HTTP/1`, `HTTP/1.10`,
//!   garbage, none at all as in an HTTP/0.9 request) is a malformed request
//!   line, [`Error::MalformedVersion`] (400). A well-formed version other
//!   than `HTTP/1.0` and `HTTP/1.1` (`HTTP/1.2`, `HTTP/2.0`) is
//!   [`Error::Version`] (505). A version field containing a SP means the
//!   line had more than two SP (such as a space inside the target), which
//!   is [`Error::Target`].
//! * Field names are tokens; whitespace between the name and the colon is
//!   [`Error::HeaderName`] (RFC 9112 5.1 MUST reject), and so is a line with
//!   no colon.
//! * A line starting with SP or HTAB (obs-fold, or whitespace before the
//!   first field) is [`Error::NewLine`]: RFC 9112 5.2 lets a server reject
//!   it, and unfolding is another place where implementations disagree.
//! * Field values may hold HTAB, SP, visible ASCII and obs-text (bytes
//!   0x80-0xFF); NUL, the other control characters and DEL are
//!   [`Error::HeaderValue`]. Surrounding SP and HTAB are removed. The whole
//!   head must be UTF-8 so that every accessor returns `&str`: a value whose
//!   obs-text bytes are not UTF-8 is [`Error::HeaderValue`] (found once the
//!   whole head is in, with one UTF-8 check of the head).
//! * An HTTP/1.1 request must have exactly one `Host` field, an HTTP/1.0
//!   request at most one; the value must be a valid `uri-host [ ":" port ]`
//!   (letters, digits, `-._~%!$&'()*+,;=:[]`, possibly empty).
//!   Otherwise: [`Error::MissingHost`] (RFC 9112 3.2: MUST answer 400).
//!
//! Repeated fields are kept, in order ([`Request::header_all`]).
//! `Content-Length`, `Transfer-Encoding` and `Expect` are checked when the
//! server asks for them ([`Request::body_framing`],
//! [`Request::expects_continue`]), not by [`parse_head`].
//!
//! # Limits
//!
//! Every [`Limits`] bound is enforced as soon as the bytes that break it
//! are in the buffer, even when the head is not complete yet, so a client
//! cannot make the server buffer forever: 9 KiB of request line without a
//! line end is [`Error::RequestLineTooLong`], not [`Status::Partial`]. A
//! head at exactly a limit is accepted; one byte more is an error. What
//! each bound counts is documented on its field.
//!
//! [`parse_head`] keeps no state between calls: each call scans the buffer
//! from its start (a few hundred nanoseconds for a typical browser
//! request), so a server should call it again only after new bytes arrive.
//!
//! # Errors and the status the server answers with
//!
//! | [`Error`] | status |
//! |---|---|
//! | `Method`, `Target`, `MalformedVersion`, `HeaderName`, `HeaderValue`, `NewLine`, `MissingHost`, `ContentLength`, `LengthAndChunked`, `ChunkSize` | 400 |
//! | `Version` | 505 |
//! | `RequestLineTooLong` | 414 |
//! | `HeaderLineTooLong`, `TooManyHeaders`, `HeadTooLarge` | 431 |
//! | `UnsupportedTransferCoding` | 501 |
//! | `BodyTooLarge` | 413 |
//! | `Expectation` | 417 |
//!
//! # Example
//!
//! ```
//! use stdsse::http::{parse_head, Limits, Status, Version};
//!
//! let limits = Limits::default();
//! let wire = b"GET /events?room=l%C3%A9on HTTP/1.1\r\nHost: example.com\r\n\
//!              Accept: text/event-stream\r\nLast-Event-ID: 41\r\n\r\n";
//!
//! // Not all bytes have arrived yet: ask for more.
//! assert!(matches!(parse_head(&wire[..20], &limits), Ok(Status::Partial)));
//!
//! let Ok(Status::Complete((request, consumed))) = parse_head(wire, &limits) else {
//!     panic!("a valid head");
//! };
//! assert_eq!(consumed, wire.len());
//! assert_eq!(request.method(), "GET");
//! assert_eq!(request.path(), "/events");
//! assert_eq!(request.query_param("room").as_deref(), Some("léon"));
//! assert_eq!(request.version(), Version::Http11);
//! assert_eq!(request.header("last-event-id"), Some("41"));
//! assert!(request.keep_alive());
//! ```

use std::fmt;
use std::net::SocketAddr;

// ---------------------------------------------------------------------------
// Byte classes
// ---------------------------------------------------------------------------

/// Builds a `[bool; 256]` lookup table at compile time from a predicate on
/// one byte.
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

/// `tchar` (RFC 9110 5.6.2): the characters of a method or a field name.
pub(crate) const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Token characters.
static TCHAR: [bool; 256] = byte_table!(|b| is_tchar(b));

/// Request-target characters: visible ASCII except `"`, `<`, `>` (which
/// browsers always percent-encode) and `#` (a fragment is never sent).
static URI: [bool; 256] =
    byte_table!(|b| b >= 0x21 && b <= 0x7e && !matches!(b, b'"' | b'<' | b'>' | b'#'));

/// `field-value` bytes: HTAB, SP, VCHAR and obs-text (0x80-0xFF).
static VALUE: [bool; 256] = byte_table!(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));

/// `Host` value bytes: `uri-host [ ":" port ]` with a reg-name, IPv4 or
/// IP-literal host (RFC 3986 unreserved, pct-encoded, sub-delims, `:`,
/// `[`, `]`).
static HOST: [bool; 256] = byte_table!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'-' | b'.'
            | b'_'
            | b'~'
            | b'%'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'['
            | b']'
    ));

/// The index of the first byte of `buf[from..]` outside `table`, or
/// `buf.len()`.
#[inline]
fn scan(buf: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let mut i = from;
    // Four bytes per round while all four are in the class.
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

/// `scan(buf, from, &VALUE)`, eight bytes at a time: field values are most
/// of a head.
///
/// Each 8-byte word is tested at once for a byte below 0x20 or equal to
/// 0x7F (the classic "has less than" and "has zero" word tricks). The
/// lowest flagged byte of a word is always a true match (a borrow only
/// moves upwards), so it is the first byte that may stop the scan; if it is
/// an HTAB, which values may hold, the scan goes on after it.
#[inline]
fn scan_value(buf: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = buf.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del;
        let found = (control | del) & HIGH;
        if found == 0 {
            i += 8;
            continue;
        }
        let at = i + (found.trailing_zeros() / 8) as usize;
        if buf.get(at) != Some(&b'\t') {
            return at;
        }
        i = at + 1;
    }
    scan(buf, i, &VALUE)
}

/// Removes the optional whitespace (SP, HTAB) around a list element.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

// ---------------------------------------------------------------------------
// Status, Error, Limits, Version
// ---------------------------------------------------------------------------

/// The result of parsing bytes that may not all have arrived yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// Parsing finished; the value usually says how many bytes were used.
    Complete(T),
    /// Every byte so far is valid but more are needed: read more and call
    /// again (with the whole buffer for [`parse_head`], with the new bytes
    /// only for [`ChunkedDecoder::decode`]).
    Partial,
}

/// Why a request was refused. Each variant names the part that was wrong;
/// [`Error::status`] gives the status code to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The method is not a token, or is not followed by exactly one SP.
    /// (400)
    Method,
    /// The request-target is not origin-form, `http` absolute-form with a
    /// valid authority, or `*` with `OPTIONS`; holds a byte outside the
    /// allowed set; or the request line has more than two SP. (400)
    Target,
    /// The HTTP-version is well-formed (`HTTP/` DIGIT `.` DIGIT) but not
    /// `HTTP/1.0` or `HTTP/1.1`. (505)
    Version,
    /// The HTTP-version is not `HTTP/` DIGIT `.` DIGIT, or is missing: the
    /// request line is malformed. (400)
    MalformedVersion,
    /// A field name is empty, holds a non-token byte, is followed by
    /// whitespace before the colon, or the line has no colon. (400)
    HeaderName,
    /// A field value holds NUL, another control character or DEL, or bytes
    /// above 0x7F that are not UTF-8. (400)
    HeaderValue,
    /// A bare LF, a CR not followed by LF, or a line that starts with
    /// whitespace (obs-fold). (400)
    NewLine,
    /// The request line is longer than [`Limits::max_request_line`]. (414)
    RequestLineTooLong,
    /// A field line is longer than [`Limits::max_header_line`]. (431)
    HeaderLineTooLong,
    /// More field lines than [`Limits::max_headers`]. (431)
    TooManyHeaders,
    /// The head is longer than [`Limits::max_head`]. (431)
    HeadTooLarge,
    /// An HTTP/1.1 request without `Host`, a request with more than one
    /// `Host`, or a `Host` value that is not a valid host. (400)
    MissingHost,
    /// A `Content-Length` that is not a decimal number that fits in 64 bits,
    /// or several different values. (400)
    ContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`, the classic request
    /// smuggling set-up. (400)
    LengthAndChunked,
    /// A `Transfer-Encoding` other than exactly `chunked`, or any
    /// `Transfer-Encoding` in an HTTP/1.0 request. (501)
    UnsupportedTransferCoding,
    /// A malformed chunked body: bad chunk-size line (an unterminated
    /// quoted string in a chunk extension included), chunk data not
    /// followed by CRLF, a trailer line that is not `name:value`, chunk
    /// extensions or trailer section too long. (400)
    ChunkSize,
    /// The body is longer than [`Limits::max_body`]. (413)
    BodyTooLarge,
    /// An `Expect` value other than `100-continue`. (417)
    Expectation,
}

impl Error {
    /// The status code the server answers with.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Error::Version => 505,
            Error::RequestLineTooLong => 414,
            Error::HeaderLineTooLong | Error::TooManyHeaders | Error::HeadTooLarge => 431,
            Error::UnsupportedTransferCoding => 501,
            Error::BodyTooLarge => 413,
            Error::Expectation => 417,
            Error::Method
            | Error::Target
            | Error::MalformedVersion
            | Error::HeaderName
            | Error::HeaderValue
            | Error::NewLine
            | Error::MissingHost
            | Error::ContentLength
            | Error::LengthAndChunked
            | Error::ChunkSize => 400,
        }
    }

    /// A short description, used as the body of the error response.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            Error::Method => "invalid method",
            Error::Target => "invalid request target",
            Error::Version => "unsupported HTTP version",
            Error::MalformedVersion => "malformed HTTP version",
            Error::HeaderName => "invalid header name",
            Error::HeaderValue => "invalid header value",
            Error::NewLine => "invalid line ending",
            Error::RequestLineTooLong => "request line too long",
            Error::HeaderLineTooLong => "header line too long",
            Error::TooManyHeaders => "too many headers",
            Error::HeadTooLarge => "request head too large",
            Error::MissingHost => "missing or invalid Host header",
            Error::ContentLength => "invalid Content-Length",
            Error::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Error::UnsupportedTransferCoding => "unsupported Transfer-Encoding",
            Error::ChunkSize => "invalid chunked body",
            Error::BodyTooLarge => "request body too large",
            Error::Expectation => "unsupported expectation",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.status())
    }
}

impl std::error::Error for Error {}

/// Size bounds on what a client may send. Every bound is checked as soon as
/// the bytes that exceed it arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, in bytes from the first byte of the method to
    /// the last byte of the version (CRLF and leading empty lines not
    /// counted). Protects against huge URLs held in memory. Default 8 KiB.
    pub max_request_line: usize,
    /// Longest field line, in bytes from the first byte of the name to the
    /// last byte before its CRLF (CRLF not counted). Protects against one
    /// enormous header (cookies, tokens). Default 8 KiB.
    pub max_header_line: usize,
    /// Most field lines in one head. Protects against the CPU and memory
    /// cost of thousands of tiny headers. Default 100.
    pub max_headers: usize,
    /// Longest head, in bytes from the first byte received (leading empty
    /// lines included) to the LF of the empty line that ends the head.
    /// Bounds the buffer a connection needs before the head is parsed.
    /// Values above `u32::MAX` act as `u32::MAX`. Default 64 KiB.
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

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

impl Version {
    /// The version as written on the wire: `"HTTP/1.0"` or `"HTTP/1.1"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

/// A byte range of `Request::head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// One field line: name and (trimmed) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldSpan {
    name: Span,
    value: Span,
}

/// A parsed request: the head (owned, one string plus ranges into it), the
/// body once the server has read it, and the peer address.
///
/// Made by [`parse_head`] (or [`Request::parse`] in tests).
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The head from the request line to the final CRLF.
    head: String,
    method: Span,
    target: Span,
    /// Where the path starts in the target (after the authority of an
    /// absolute-form target).
    path_start: u32,
    /// The authority of an absolute-form target.
    authority: Option<Span>,
    /// Index of the `?` in the target, if any.
    query: Option<u32>,
    version: Version,
    fields: Vec<FieldSpan>,
    body: Vec<u8>,
    remote_addr: Option<SocketAddr>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a Request);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.headers()).finish()
            }
        }
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("version", &self.version)
            .field("headers", &Headers(self))
            .field("body_len", &self.body.len())
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Complete((request, consumed))` where `consumed` is the number
/// of bytes of the head, leading empty lines and the final empty line
/// included; the bytes after it (a body, or the next pipelined request)
/// are not looked at. Returns `Partial` when every byte so far is valid but
/// the head has not ended yet, and an [`Error`] as soon as the bytes in
/// `buf` are enough to know the head is invalid or breaks a [`Limits`]
/// bound. The function keeps no state: call it again with the whole,
/// longer buffer.
///
/// ```
/// use stdsse::http::{parse_head, Error, Limits, Status};
///
/// let limits = Limits::default();
/// assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost", &limits), Ok(Status::Partial));
/// assert_eq!(parse_head(b"GET / HTTP/1.1\nHost: a\n\n", &limits), Err(Error::NewLine));
/// assert_eq!(parse_head(b"GET / HTTP/2.0\r\n", &limits), Err(Error::Version));
/// ```
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Status<(Request, usize)>, Error> {
    let max_head = limits.max_head.min(u32::MAX as usize);
    let truncated = buf.len() > max_head;
    let view = if truncated { &buf[..max_head] } else { buf };
    match parse_view(view, limits)? {
        Some(done) => Ok(Status::Complete(done)),
        None if truncated => Err(Error::HeadTooLarge),
        None => Ok(Status::Partial),
    }
}

/// What a scan that stopped at `view[i]` means, when that byte cannot come
/// next: a bare LF or a CR followed by something other than LF is
/// [`Error::NewLine`]; CRLF (the line ended too early) is `at_crlf`; a CR
/// at the end of the buffer needs one more byte; any other byte is `other`.
fn unexpected<T>(view: &[u8], i: usize, at_crlf: Error, other: Error) -> Result<Option<T>, Error> {
    match view.get(i) {
        Some(b'\n') => Err(Error::NewLine),
        Some(b'\r') => match view.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Err(at_crlf),
            Some(_) => Err(Error::NewLine),
        },
        _ => Err(other),
    }
}

/// The part of `view` a line starting at `start` may be scanned in: its
/// `max` content bytes plus one for the CR. The flag says whether `view`
/// holds that many bytes: a scan that runs off the end then means the line
/// is too long, not that more bytes are needed.
fn line_bound(view: &[u8], start: usize, max: usize) -> (&[u8], bool) {
    let cap = start.saturating_add(max).saturating_add(1);
    if view.len() >= cap {
        (&view[..cap], true)
    } else {
        (view, false)
    }
}

/// A scan ran off the end of the line bound: too long, or need more bytes.
fn ran_off<T>(long: bool, error: Error) -> Result<Option<T>, Error> {
    if long {
        Err(error)
    } else {
        Ok(None)
    }
}

/// Parses a head that must lie within `view` (already cut to
/// `max_head`). `None` means more bytes are needed.
fn parse_view(view: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, Error> {
    // Leading empty lines.
    let mut start = 0;
    loop {
        match view.get(start) {
            None => return Ok(None),
            Some(b'\r') => match view.get(start + 1) {
                None => return Ok(None),
                Some(b'\n') => start += 2,
                Some(_) => return Err(Error::NewLine),
            },
            Some(b'\n') => return Err(Error::NewLine),
            Some(_) => break,
        }
    }

    // request-line = method SP request-target SP HTTP-version CRLF
    let (line, long) = line_bound(view, start, limits.max_request_line);
    let method_end = scan(line, start, &TCHAR);
    match line.get(method_end) {
        None => return ran_off(long, Error::RequestLineTooLong),
        Some(b' ') if method_end > start => {}
        Some(_) => return unexpected(view, method_end, Error::Method, Error::Method),
    }
    let target_start = method_end + 1;
    match line.get(target_start) {
        None => return ran_off(long, Error::RequestLineTooLong),
        Some(b) if matches!(b, b'/' | b'*') || b.is_ascii_alphabetic() => {}
        Some(_) => return unexpected(view, target_start, Error::Target, Error::Target),
    }
    let target_end = scan(line, target_start, &URI);
    match line.get(target_end) {
        None => return ran_off(long, Error::RequestLineTooLong),
        Some(b' ') => {}
        Some(_) => return unexpected(view, target_end, Error::MalformedVersion, Error::Target),
    }
    let target = &line[target_start..target_end];
    if target[0] == b'*' && (target != b"*" || &line[start..method_end] != b"OPTIONS") {
        return Err(Error::Target);
    }
    // absolute-form: "http://" authority, then the path (RFC 9112 3.2.2).
    let authority = match target[0] {
        b'/' | b'*' => None,
        _ => {
            let (scheme, rest) = target.split_at(7.min(target.len()));
            let len = rest.iter().take_while(|&&b| b != b'/' && b != b'?').count();
            let host = &rest[..len];
            if !scheme.eq_ignore_ascii_case(b"http://")
                || host.is_empty()
                || !host.iter().all(|&b| HOST[b as usize])
            {
                return Err(Error::Target);
            }
            Some((target_start + 7, target_start + 7 + len))
        }
    };
    let version_start = target_end + 1;
    let version_end = line[version_start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(line.len(), |at| version_start + at);
    match line.get(version_end) {
        None => return ran_off(long, Error::RequestLineTooLong),
        Some(b'\n') => return Err(Error::NewLine),
        Some(_) => match view.get(version_end + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(Error::NewLine),
        },
    }
    // HTTP-version = HTTP-name "/" DIGIT "." DIGIT (RFC 9112 2.3).
    let version = match &line[version_start..version_end] {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        other if other.contains(&b' ') => return Err(Error::Target),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Error::Version)
        }
        _ => return Err(Error::MalformedVersion),
    };

    // *( field-line CRLF ) CRLF
    let mut fields: Vec<FieldSpan> = Vec::with_capacity(16);
    let mut hosts = 0;
    let mut host = 0..0;
    let mut pos = version_end + 2;
    let end = loop {
        match view.get(pos) {
            None => return Ok(None),
            Some(b'\r') => match view.get(pos + 1) {
                None => return Ok(None),
                Some(b'\n') => break pos + 2,
                Some(_) => return Err(Error::NewLine),
            },
            Some(b'\n' | b' ' | b'\t') => return Err(Error::NewLine),
            Some(_) => {}
        }
        if fields.len() >= limits.max_headers {
            return Err(Error::TooManyHeaders);
        }
        let (line, long) = line_bound(view, pos, limits.max_header_line);
        let name_end = scan(line, pos, &TCHAR);
        match line.get(name_end) {
            None => return ran_off(long, Error::HeaderLineTooLong),
            Some(b':') if name_end > pos => {}
            Some(_) => {
                return unexpected(view, name_end, Error::HeaderName, Error::HeaderName);
            }
        }
        let mut value_start = name_end + 1;
        while let Some(b' ' | b'\t') = line.get(value_start) {
            value_start += 1;
        }
        let value_stop = scan_value(line, value_start);
        match line.get(value_stop) {
            None => return ran_off(long, Error::HeaderLineTooLong),
            Some(b'\r') => match view.get(value_stop + 1) {
                None => return Ok(None),
                Some(b'\n') => {}
                Some(_) => return Err(Error::NewLine),
            },
            Some(b'\n') => return Err(Error::NewLine),
            Some(_) => return Err(Error::HeaderValue),
        }
        // The value holds no CR, LF or FF, so ASCII whitespace is SP or HTAB.
        let value_end = value_start + line[value_start..value_stop].trim_ascii_end().len();
        if name_end - pos == 4 && line[pos..name_end].eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = value_start..value_end;
        }
        // Offsets fit in u32: `view` is at most `u32::MAX` bytes long.
        let at = |i: usize| (i - start) as u32;
        fields.push(FieldSpan {
            name: Span {
                start: at(pos),
                end: at(name_end),
            },
            value: Span {
                start: at(value_start),
                end: at(value_end),
            },
        });
        pos = value_stop + 2;
    };

    // Only field values may hold bytes above 0x7F: this is where a value
    // that is not UTF-8 is found.
    let head = std::str::from_utf8(&view[start..end]).map_err(|_| Error::HeaderValue)?;
    // RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0,
    // and a valid value.
    let host_ok = match hosts {
        0 => version == Version::Http10,
        1 => view[host].iter().all(|&b| HOST[b as usize]),
        _ => false,
    };
    if !host_ok {
        return Err(Error::MissingHost);
    }
    let at = |i: usize| (i - start) as u32;
    let request = Request {
        head: head.to_owned(),
        method: Span {
            start: 0,
            end: at(method_end),
        },
        target: Span {
            start: at(target_start),
            end: at(target_end),
        },
        path_start: at(authority.map_or(target_start, |(_, end)| end)),
        authority: authority.map(|(from, to)| Span {
            start: at(from),
            end: at(to),
        }),
        query: target
            .iter()
            .position(|&b| b == b'?')
            .map(|q| at(target_start + q)),
        version,
        fields,
        body: Vec::new(),
        remote_addr: None,
    };
    Ok(Some((request, end)))
}

impl Request {
    /// Parses a whole request head with the default [`Limits`]; any bytes
    /// after the head become the body as they are (no framing is applied).
    ///
    /// Meant for tests and tools that hold a complete request. An incomplete
    /// head (no empty line at its end) is [`Error::NewLine`].
    ///
    /// ```
    /// use stdsse::http::Request;
    ///
    /// let request = Request::parse(b"POST /send HTTP/1.1\r\nHost: a\r\n\r\nhello")?;
    /// assert_eq!(request.body(), b"hello");
    /// # Ok::<(), stdsse::http::Error>(())
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Request, Error> {
        match parse_head(buf, &Limits::default())? {
            Status::Complete((mut request, consumed)) => {
                request.body = buf[consumed..].to_vec();
                Ok(request)
            }
            Status::Partial => Err(Error::NewLine),
        }
    }

    fn span(&self, span: Span) -> &str {
        self.head
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// The method, as sent (methods are case-sensitive: `get` is not `GET`).
    #[must_use]
    pub fn method(&self) -> &str {
        self.span(self.method)
    }

    /// The raw request-target as sent: the path and query, still
    /// percent-encoded (or `*` for `OPTIONS *`, or the whole URL of an
    /// absolute-form target).
    #[must_use]
    pub fn target(&self) -> &str {
        self.span(self.target)
    }

    /// The path: the target up to the first `?`, after the authority of an
    /// absolute-form target, not decoded. An absolute-form target with an
    /// empty path (`http://host?q`) has the path `/` (RFC 9110 4.2.3).
    #[must_use]
    pub fn path(&self) -> &str {
        let end = self.query.unwrap_or(self.target.end);
        match self.span(Span {
            start: self.path_start,
            end,
        }) {
            "" => "/",
            path => path,
        }
    }

    /// The authority the request is for: that of an absolute-form target,
    /// else the `Host` value (RFC 9112 3.2.2: with an absolute-form target
    /// the server "MUST ignore the received Host header field" in favour of
    /// the target's authority). `None` for an HTTP/1.0 request without
    /// either.
    #[must_use]
    pub fn authority(&self) -> Option<&str> {
        self.authority
            .map(|span| self.span(span))
            .or_else(|| self.header("host"))
    }

    /// The raw text after the first `?` (`Some("")` for a bare `?`), or
    /// `None` when the target has no `?`.
    #[must_use]
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| {
            self.span(Span {
                start: q + 1,
                end: self.target.end,
            })
        })
    }

    /// The decoded value of the first query parameter named `name` (names
    /// are compared after decoding, case-sensitively). See [`decode_query`].
    #[must_use]
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(self.query()?)
            .find(|(n, _)| percent_decode(n) == name)
            .map(|(_, v)| percent_decode(v))
    }

    /// All query parameters, decoded, in order. See [`decode_query`].
    #[must_use]
    pub fn query_params(&self) -> Vec<(String, String)> {
        decode_query(self.query().unwrap_or(""))
    }

    /// The HTTP version.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The value of the first field named `name` (case-insensitive), with
    /// surrounding whitespace removed.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| self.span(f.name).eq_ignore_ascii_case(name))
            .map(|f| self.span(f.value))
    }

    /// The values of every field named `name` (case-insensitive), in the
    /// order they were received.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.span(f.name).eq_ignore_ascii_case(name))
            .map(move |f| self.span(f.value))
    }

    /// Every field as `(name, value)`, names as received, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(move |f| (self.span(f.name), self.span(f.value)))
    }

    /// Whether the connection may be used for another request after this one
    /// (RFC 9112 9.3). An HTTP/1.1 connection persists unless a `Connection`
    /// field lists the `close` option; an HTTP/1.0 connection persists only
    /// when it lists `keep-alive` (and not `close`). Options are
    /// comma-separated and case-insensitive, over all `Connection` fields.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for option in self.header_all("connection").flat_map(|v| v.split(',')) {
            let option = trim_ows(option);
            if option.eq_ignore_ascii_case("close") {
                close = true;
            } else if option.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
        match self.version {
            Version::Http11 => !close,
            Version::Http10 => keep_alive && !close,
        }
    }

    /// Whether the client waits for `100 Continue` before it sends the body
    /// (RFC 9110 10.1.1).
    ///
    /// `Expect: 100-continue` (case-insensitive) is `Ok(true)`; no `Expect`
    /// is `Ok(false)`; any other expectation (including a list with
    /// `100-continue` in it) is [`Error::Expectation`] (417). An HTTP/1.0
    /// request's `100-continue` is `Ok(false)`: RFC 9110 says a server MUST
    /// ignore it.
    pub fn expects_continue(&self) -> Result<bool, Error> {
        let mut expects = false;
        for value in self.header_all("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(Error::Expectation);
            }
            expects = true;
        }
        Ok(expects && self.version == Version::Http11)
    }

    /// How the body is delimited (RFC 9112 6.3), checked against `limits`.
    ///
    /// * `Transfer-Encoding` and `Content-Length` together:
    ///   [`Error::LengthAndChunked`] (the classic smuggling set-up; RFC 9112
    ///   lets a server reject it, and it must close the connection anyway).
    /// * `Transfer-Encoding`: over all its fields, the list must be exactly
    ///   `chunked` (case-insensitive), giving [`Framing::Chunked`]; anything
    ///   else, and any `Transfer-Encoding` in an HTTP/1.0 request, is
    ///   [`Error::UnsupportedTransferCoding`] (501).
    /// * `Content-Length`: every comma-separated element of every field must
    ///   be `1*DIGIT` fitting in a `u64`, and all must be equal (`5, 5` is
    ///   5; `5, 6`, `-1`, `+5`, `0x10`, `` and `5,` are
    ///   [`Error::ContentLength`]). A length above [`Limits::max_body`] is
    ///   [`Error::BodyTooLarge`], so the server can answer 413 before
    ///   reading the body.
    /// * Neither: [`Framing::None`], no body.
    pub fn body_framing(&self, limits: &Limits) -> Result<Framing, Error> {
        let chunked = self.header("transfer-encoding").is_some();
        let length = self.header("content-length").is_some();
        if chunked && length {
            return Err(Error::LengthAndChunked);
        }
        if chunked {
            if self.version == Version::Http10 {
                return Err(Error::UnsupportedTransferCoding);
            }
            let mut codings = self
                .header_all("transfer-encoding")
                .flat_map(|v| v.split(','))
                .map(trim_ows);
            return match (codings.next(), codings.next()) {
                (Some(coding), None) if coding.eq_ignore_ascii_case("chunked") => {
                    Ok(Framing::Chunked)
                }
                _ => Err(Error::UnsupportedTransferCoding),
            };
        }
        if length {
            let mut length = None;
            for element in self.header_all("content-length").flat_map(|v| v.split(',')) {
                let n = parse_decimal(trim_ows(element)).ok_or(Error::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::ContentLength);
                }
                length = Some(n);
            }
            let n = length.ok_or(Error::ContentLength)?;
            if n > limits.max_body as u64 {
                return Err(Error::BodyTooLarge);
            }
            return Ok(Framing::Length(n));
        }
        Ok(Framing::None)
    }

    /// The body, once the server has read it (empty before that, and for
    /// requests without a body).
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The peer's address, when the request came from a socket.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Stores the body the server read.
    pub(crate) fn set_body(&mut self, body: Vec<u8>) {
        self.body = body;
    }

    /// Stores the peer's address.
    pub(crate) fn set_remote_addr(&mut self, addr: SocketAddr) {
        self.remote_addr = Some(addr);
    }
}

/// `1*DIGIT` as a `u64`, or `None` (empty, other characters, overflow).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// How a request body is delimited, from [`Request::body_framing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows: decode it with a [`ChunkedDecoder`].
    Chunked,
}

// ---------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------

/// Most bytes of chunk extensions on one chunk-size line (after the size,
/// up to the CR).
const MAX_CHUNK_EXT: usize = 1024;
/// Most bytes of the trailer section (field lines with their CRLFs, not
/// the final CRLF).
const MAX_TRAILER: usize = 8 * 1024;
/// Most hex digits in a chunk size (leading zeros included), so that the
/// size always fits in a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the size and some whitespace: more BWS or a `;` must follow
    /// (`chunk-ext = *( BWS ";" ... )`, so whitespace alone is invalid).
    SizeSpace,
    /// Inside the chunk extensions, up to CR.
    Ext,
    /// Inside a quoted-string of a chunk extension: CR before its closing
    /// `"` is an error.
    ExtQuoted,
    /// After a `\` in a quoted-string: one escaped byte.
    ExtEscape,
    /// CR of the chunk-size line seen, LF next.
    SizeLf,
    /// Reading chunk data: this many bytes left.
    Data(u64),
    /// The CR after chunk data is next.
    DataCr,
    /// The LF after chunk data is next.
    DataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name: token bytes, then `:`.
    TrailerName,
    /// Inside a trailer field value.
    Trailer,
    /// CR of a trailer field line seen, LF next.
    TrailerLf,
    /// CR of the final CRLF seen, LF next.
    EndLf,
    /// The body is complete.
    Done,
    /// The body was invalid; the error is returned again.
    Failed(Error),
}

/// An incremental decoder for a `Transfer-Encoding: chunked` body (RFC 9112
/// 7.1).
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-size   = 1*HEXDIG
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// trailer-section = *( field-line CRLF )
/// ```
///
/// Feed it the bytes as they arrive, split anywhere (one byte at a time
/// works). Chunk sizes have at most 16 hex digits (leading zeros count);
/// chunk extensions (up to 1 KiB per line) and the trailer section (up to
/// 8 KiB) are checked for line syntax and discarded: a quoted-string in an
/// extension must end on its line, and a trailer line must be
/// `field-name ":" field-value`. Line ends are CRLF only.
/// Once an error is returned, every later call returns it again.
///
/// ```
/// use stdsse::http::{ChunkedDecoder, Status};
///
/// let mut decoder = ChunkedDecoder::new(1024);
/// let mut body = Vec::new();
/// assert_eq!(decoder.decode(b"5;name=x\r\nhel", &mut body), Ok(Status::Partial));
/// let rest = b"lo\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n";
/// assert_eq!(decoder.decode(rest, &mut body), Ok(Status::Complete(21)));
/// assert_eq!(body, b"hello");
/// ```
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: Chunk,
    /// Size of the current chunk, while its size line is read.
    size: u64,
    /// Hex digits read of the current size.
    digits: u8,
    /// Bytes of chunk extension on the current size line.
    ext: usize,
    /// Bytes of trailer section so far.
    trailer: usize,
    /// Decoded bytes so far.
    decoded: u64,
    max_body: u64,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `max_body` decoded bytes.
    #[must_use]
    pub fn new(max_body: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::Size,
            size: 0,
            digits: 0,
            ext: 0,
            trailer: 0,
            decoded: 0,
            max_body: max_body as u64,
        }
    }

    /// Consumes bytes of `input`, appends decoded data to `body`.
    ///
    /// `Complete(n)`: the last chunk and the trailer section are done, `n`
    /// bytes of this `input` were used; the rest belongs to the next
    /// pipelined request. `Partial`: all of `input` was used, feed more.
    /// A decoded size above `max_body` is [`Error::BodyTooLarge`] as soon as
    /// the chunk size that exceeds it is read; any syntax error is
    /// [`Error::ChunkSize`]. After `Complete`, further calls return
    /// `Complete(0)`.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Status<usize>, Error> {
        match self.state {
            Chunk::Done => return Ok(Status::Complete(0)),
            Chunk::Failed(error) => return Err(error),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(left) = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            match self.step(b) {
                Ok(Chunk::Done) => {
                    self.state = Chunk::Done;
                    return Ok(Status::Complete(i));
                }
                Ok(next) => self.state = next,
                Err(error) => {
                    self.state = Chunk::Failed(error);
                    return Err(error);
                }
            }
        }
        Ok(Status::Partial)
    }

    /// The state after byte `b` (never called in `Data`, `Done`, `Failed`).
    fn step(&mut self, b: u8) -> Result<Chunk, Error> {
        let bad = Err(Error::ChunkSize);
        match self.state {
            Chunk::Size => {
                if let Some(digit) = hex_value(b) {
                    if self.digits == MAX_SIZE_DIGITS {
                        return bad;
                    }
                    self.digits += 1;
                    self.size = self.size << 4 | u64::from(digit);
                    if self.size > self.max_body - self.decoded {
                        return Err(Error::BodyTooLarge);
                    }
                    return Ok(Chunk::Size);
                }
                if self.digits == 0 {
                    return bad;
                }
                match b {
                    b'\r' => Ok(Chunk::SizeLf),
                    b' ' | b'\t' => self.ext_byte(Chunk::SizeSpace),
                    b';' => self.ext_byte(Chunk::Ext),
                    _ => bad,
                }
            }
            Chunk::SizeSpace => match b {
                b' ' | b'\t' => self.ext_byte(Chunk::SizeSpace),
                b';' => self.ext_byte(Chunk::Ext),
                _ => bad,
            },
            Chunk::Ext => match b {
                b'\r' => Ok(Chunk::SizeLf),
                b'"' => self.ext_byte(Chunk::ExtQuoted),
                _ if VALUE[b as usize] => self.ext_byte(Chunk::Ext),
                _ => bad,
            },
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            Chunk::ExtQuoted => match b {
                b'"' => self.ext_byte(Chunk::Ext),
                b'\\' => self.ext_byte(Chunk::ExtEscape),
                b'\r' => bad,
                _ if VALUE[b as usize] => self.ext_byte(Chunk::ExtQuoted),
                _ => bad,
            },
            Chunk::ExtEscape if VALUE[b as usize] => self.ext_byte(Chunk::ExtQuoted),
            Chunk::SizeLf => {
                if b != b'\n' {
                    return bad;
                }
                let size = self.size;
                self.size = 0;
                self.digits = 0;
                self.ext = 0;
                if size == 0 {
                    return Ok(Chunk::TrailerStart);
                }
                self.decoded += size;
                Ok(Chunk::Data(size))
            }
            Chunk::DataCr if b == b'\r' => Ok(Chunk::DataLf),
            Chunk::DataLf if b == b'\n' => Ok(Chunk::Size),
            Chunk::TrailerStart => match b {
                b'\r' => Ok(Chunk::EndLf),
                b'\n' | b' ' | b'\t' => bad,
                _ => self.trailer_byte(b),
            },
            Chunk::TrailerName | Chunk::Trailer => self.trailer_byte(b),
            Chunk::TrailerLf if b == b'\n' => self.trailer_byte(b),
            Chunk::EndLf if b == b'\n' => Ok(Chunk::Done),
            _ => bad,
        }
    }

    /// Counts one byte of chunk extension.
    fn ext_byte(&mut self, next: Chunk) -> Result<Chunk, Error> {
        self.ext += 1;
        if self.ext > MAX_CHUNK_EXT {
            return Err(Error::ChunkSize);
        }
        Ok(next)
    }

    /// Counts one byte of trailer section and gives the state after it.
    fn trailer_byte(&mut self, b: u8) -> Result<Chunk, Error> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER {
            return Err(Error::ChunkSize);
        }
        match (self.state, b) {
            (Chunk::TrailerLf, b'\n') => Ok(Chunk::TrailerStart),
            (Chunk::TrailerStart | Chunk::TrailerName, _) if TCHAR[b as usize] => {
                Ok(Chunk::TrailerName)
            }
            (Chunk::TrailerName, b':') => Ok(Chunk::Trailer),
            (Chunk::Trailer, b'\r') => Ok(Chunk::TrailerLf),
            (Chunk::Trailer, _) if VALUE[b as usize] => Ok(Chunk::Trailer),
            _ => Err(Error::ChunkSize),
        }
    }
}

/// The value of one hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------

/// The raw `(name, value)` pairs of a query: split on `&`, empty pieces
/// skipped, the first `=` splits name from value (no `=`: empty value).
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// Decodes a query string the way HTML forms encode it
/// (`application/x-www-form-urlencoded`, as the WHATWG URL standard parses
/// it).
///
/// Split on `&`; empty pieces are skipped; the first `=` splits the name
/// from the value (a piece without `=` has an empty value); each part is
/// decoded with [`percent_decode`].
///
/// ```
/// use stdsse::http::decode_query;
///
/// let pairs = decode_query("a=1&b=two+words&c=%41%zz&d&&=x");
/// let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
/// assert_eq!(pairs, [("a", "1"), ("b", "two words"), ("c", "A%zz"), ("d", ""), ("", "x")]);
/// ```
#[must_use]
pub fn decode_query(query: &str) -> Vec<(String, String)> {
    query_pairs(query)
        .map(|(name, value)| (percent_decode(name), percent_decode(value)))
        .collect()
}

/// Decodes one query component: `+` is a space, `%XX` (two hex digits, any
/// case) is that byte, and a `%` not followed by two hex digits is kept as
/// it is. Bytes that are not UTF-8 become U+FFFD.
///
/// ```
/// use stdsse::http::percent_decode;
///
/// assert_eq!(percent_decode("caf%C3%A9+au+lait"), "café au lait");
/// assert_eq!(percent_decode("100%"), "100%");
/// assert_eq!(percent_decode("%FF"), "\u{FFFD}");
/// ```
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => decoded,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

/// A response with a complete body, built by the application and written by
/// the server.
///
/// ```
/// use stdsse::http::Response;
///
/// let response = Response::text(404, "no such room").header("Cache-Control", "no-store");
/// assert_eq!(response.status(), 404);
/// assert_eq!(response.get_header("content-type"), Some("text/plain; charset=utf-8"));
/// assert!(response.is_valid());
///
/// // A header that would split the response is never written.
/// assert!(!Response::new(200).header("X-Evil", "a\r\nSet-Cookie: x").is_valid());
/// ```
///
/// The server owns the framing: it writes `Content-Length` from the body
/// and `Connection` itself, and drops any `Content-Length`,
/// `Transfer-Encoding` or `Connection` set here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why the response cannot be written as it is, if it cannot.
    invalid: Option<&'static str>,
}

impl Response {
    /// A response with this status and an empty body. A status outside
    /// 100..=999 makes the response invalid (see [`Response::is_valid`]).
    #[must_use]
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            invalid: if (100..=999).contains(&status) {
                None
            } else {
                Some("invalid response status")
            },
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// A `text/html; charset=utf-8` response.
    pub fn html(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(body.into())
    }

    /// An `application/json` response; `body` is already-serialised JSON.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body.into())
    }

    /// Appends a header (repeats are kept, in order).
    ///
    /// A name that is not a token (RFC 9110 5.1), or a value that is not a
    /// valid field-value (it holds CR, LF, NUL, another control character
    /// other than HTAB, or DEL) would let the application split the
    /// response. Such a header is not stored; the response is marked
    /// invalid instead, and the server then writes
    /// `500 Internal Server Error` with the body `invalid response header`
    /// in its place. This keeps building infallible while nothing invalid
    /// can reach the wire.
    #[must_use]
    pub fn header(self, name: &str, value: &str) -> Response {
        self.checked_header(name, value, &[])
    }

    /// [`header`](Response::header), also refusing (as invalid) the names
    /// in `reserved`, in any case.
    pub(crate) fn checked_header(mut self, name: &str, value: &str, reserved: &[&str]) -> Response {
        let name_ok = !name.is_empty() && name.bytes().all(|b| TCHAR[b as usize]);
        let value_ok = value.bytes().all(|b| VALUE[b as usize]);
        if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            self.invalid = self.invalid.or(Some("reserved response header"));
        } else if name_ok && value_ok {
            self.headers.push((name.to_owned(), value.to_owned()));
        } else {
            self.invalid = self.invalid.or(Some("invalid response header"));
        }
        self
    }

    /// Sets the body (replacing any earlier body).
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The value of the first header named `name` (case-insensitive).
    #[must_use]
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    #[must_use]
    pub fn get_body(&self) -> &[u8] {
        &self.body
    }

    /// Whether the response can be written as built: false after an invalid
    /// header (or with a status outside 100..=999), in which case the server
    /// writes a `500 Internal Server Error` instead.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.invalid.is_none()
    }

    /// Why the response is invalid, if it is (the body of the `500`).
    pub(crate) fn invalid_reason(&self) -> Option<&'static str> {
        self.invalid
    }

    /// Appends the whole response to `out`.
    ///
    /// The status line uses `version` (`HTTP/1.1 200 OK`), then the headers,
    /// `Content-Length` (always, from the body; 1xx, 204 and 304 get none
    /// and no body), `Connection: close` when `close`, or `Connection:
    /// keep-alive` for an HTTP/1.0 connection that stays open (an HTTP/1.0
    /// client otherwise assumes the server closes), the empty line, then
    /// the body unless `head_only` (a `HEAD` request: same headers,
    /// `Content-Length` included, no body bytes). `Content-Length`,
    /// `Transfer-Encoding` and `Connection` headers set by the application
    /// are dropped: the server owns the framing. An invalid response is
    /// replaced by a `500` with a short text body.
    pub(crate) fn write_to(
        &self,
        out: &mut Vec<u8>,
        version: Version,
        head_only: bool,
        close: bool,
    ) {
        if let Some(why) = self.invalid {
            Response::text(500, why).write_to(out, version, head_only, close);
            return;
        }
        out.reserve(
            64 + self.body.len()
                + self
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        out.extend_from_slice(version.as_str().as_bytes());
        out.push(b' ');
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        self.write_headers(out);
        let has_body = !matches!(self.status, 100..=199 | 204 | 304);
        if has_body {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if has_body && !head_only {
            out.extend_from_slice(&self.body);
        }
    }

    /// Appends the header lines, except the framing ones the server owns
    /// (`Content-Length`, `Transfer-Encoding`, `Connection`).
    pub(crate) fn write_headers(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.headers {
            let owned_by_server = ["content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n));
            if owned_by_server {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The line that starts a chunk of `len` bytes in a chunked response body
/// (RFC 9112 7.1: `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`):
/// the size in hex and CRLF, written to the start of `out`. Returns its
/// length. `len` must not be 0: a chunk of size 0 ends the body.
pub(crate) fn chunk_head(len: usize, out: &mut [u8; 18]) -> usize {
    debug_assert!(len > 0);
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in out[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// What ends every chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and the empty trailer section: the end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The reason phrase for a status code (RFC 9110 section 15, plus 429 from
/// RFC 6585), or `"Unknown"`.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_heads() {
        let mut out = [0u8; 18];
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x1234, "1234\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_head(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }

    /// One line per case: the response, how it is written, the exact bytes.
    macro_rules! writes {
        ($($name:ident: $response:expr, $version:ident, head_only: $head:expr, close: $close:expr => $wire:expr;)*) => {$(
            #[test]
            fn $name() {
                let response: Response = $response;
                let mut out = b"before|".to_vec();
                response.write_to(&mut out, Version::$version, $head, $close);
                assert_eq!(String::from_utf8_lossy(&out), format!("before|{}", $wire));
            }
        )*};
    }

    writes! {
        text_200: Response::text(200, "hello"), Http11, head_only: false, close: false
            => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
        head_keeps_length_drops_body: Response::text(200, "hello"), Http11, head_only: true, close: false
            => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\n";
        empty_200: Response::new(200), Http11, head_only: false, close: false
            => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        no_content_204: Response::new(204).body("ignored"), Http11, head_only: false, close: false
            => "HTTP/1.1 204 No Content\r\n\r\n";
        not_modified_304: Response::new(304).header("ETag", "\"x\""), Http11, head_only: false, close: false
            => "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n";
        continue_100: Response::new(100), Http11, head_only: false, close: false
            => "HTTP/1.1 100 Continue\r\n\r\n";
        close: Response::json(404, "{}"), Http11, head_only: false, close: true
            => "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        http10_keep_alive: Response::html(200, "<p>"), Http10, head_only: false, close: false
            => "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n<p>";
        http10_close: Response::new(200), Http10, head_only: false, close: true
            => "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        framing_headers_dropped: Response::text(200, "ab")
                .header("content-length", "99")
                .header("Transfer-Encoding", "chunked")
                .header("CONNECTION", "upgrade")
                .header("X-Kept", "1")
                .header("X-Kept", "2"), Http11, head_only: false, close: false
            => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Kept: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nab";
        unknown_status: Response::new(299), Http11, head_only: false, close: false
            => "HTTP/1.1 299 Unknown\r\nContent-Length: 0\r\n\r\n";
        invalid_header_value_is_500: Response::text(200, "secret").header("X", "a\r\nSet-Cookie: s=1"), Http11, head_only: false, close: false
            => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\ninvalid response header";
        invalid_header_name_is_500: Response::new(200).header("Bad Name", "v"), Http11, head_only: false, close: true
            => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\nConnection: close\r\n\r\ninvalid response header";
        invalid_header_nul_head_only: Response::new(200).header("X", "\0"), Http11, head_only: true, close: false
            => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\n";
        invalid_status_is_500: Response::new(42), Http11, head_only: false, close: false
            => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\ninvalid response status";
    }

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

    /// The word-at-a-time value scan agrees with the byte table, for every
    /// byte value at every position of a word, and on random input.
    #[test]
    fn scan_value_matches_table() {
        for stop in 0..=255u8 {
            for at in 0..20 {
                let mut buf = vec![b'a'; 24];
                buf[at] = stop;
                for from in 0..4 {
                    assert_eq!(
                        scan_value(&buf, from),
                        scan(&buf, from, &VALUE),
                        "byte {stop:#x} at {at} from {from}"
                    );
                }
            }
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let buf: Vec<u8> = (0..state % 40)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly values, some HTAB, controls, DEL and obs-text.
                    [b'x', b' ', b'\t', (state >> 8) as u8, 0x7f, 0x80][(state % 6) as usize]
                })
                .collect();
            let from = (state % 3) as usize;
            assert_eq!(scan_value(&buf, from), scan(&buf, from, &VALUE), "{buf:?}");
        }
        assert_eq!(scan_value(b"ab", 5), 5);
    }

    #[test]
    fn server_setters() {
        let mut request = Request::parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(request.body(), b"");
        request.set_body(b"data".to_vec());
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        request.set_remote_addr(addr);
        assert_eq!(
            (request.body(), request.remote_addr()),
            (&b"data"[..], Some(addr))
        );
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_decimal(&n.to_string()), Some(n));
        }
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("18446744073709551616"), None);
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let limits = Limits {
            max_request_line: usize::MAX,
            max_header_line: usize::MAX,
            max_headers: usize::MAX,
            max_head: usize::MAX,
            max_body: usize::MAX,
        };
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
        let Ok(Status::Complete((request, _))) = parse_head(head, &limits) else {
            panic!()
        };
        assert_eq!(request.body_framing(&limits), Ok(Framing::Length(u64::MAX)));
        assert_eq!(parse_head(b"GET / HTTP/1.1", &limits), Ok(Status::Partial));
        let mut decoder = ChunkedDecoder::new(usize::MAX);
        let mut body = Vec::new();
        assert_eq!(
            decoder.decode(b"ffffffffffffffff\r\nab", &mut body),
            Ok(Status::Partial)
        );
        assert_eq!(body, b"ab");
    }

    #[test]
    fn zero_limits() {
        let limits = Limits {
            max_request_line: 0,
            max_header_line: 0,
            max_headers: 0,
            max_head: 0,
            max_body: 0,
        };
        assert_eq!(parse_head(b"", &limits), Ok(Status::Partial));
        assert_eq!(parse_head(b"G", &limits), Err(Error::HeadTooLarge));
        let limits = Limits {
            max_head: 100,
            ..limits
        };
        assert_eq!(parse_head(b"G", &limits), Err(Error::RequestLineTooLong));
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(
            decoder.decode(b"0\r\n\r\n", &mut body),
            Ok(Status::Complete(5))
        );
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.decode(b"1", &mut body), Err(Error::BodyTooLarge));
    }
}
