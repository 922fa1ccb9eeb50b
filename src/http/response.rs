//! Responses: the builder and writer the server uses, and the head parser
//! the client uses.

use super::{
    body_bytes, crlf, declared_framing, find, line_bound, parse_fields, scan, valid_field,
    within_head, Error, Framing, Limits, Status, Version, VALUE,
};
use std::io::Write;

/// The headers the server writes itself (first: a stream's `Content-Type`).
const OWNED: [&str; 4] = ["content-type", "content-length", "transfer-encoding", "connection"];

/// A response with a complete body.
///
/// ```
/// use stdsse::http::Response;
///
/// let response = Response::text(404, "no such room").header("Cache-Control", "no-store");
/// assert_eq!(response.status(), 404);
/// assert_eq!(response.get_header("content-type"), Some("text/plain; charset=utf-8"));
/// // A header that would split the response is never written.
/// assert!(!Response::new(200).header("X-Evil", "a\r\nSet-Cookie: x").is_valid());
/// ```
///
/// The server writes `Content-Length` and `Connection` itself and drops
/// those and `Transfer-Encoding` set here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why it cannot be written as it is.
    invalid: Option<&'static str>,
}

impl Response {
    /// An empty response; a status outside 200..=599 (a 1xx is not final) makes it invalid.
    #[must_use]
    pub fn new(status: u16) -> Response {
        let invalid = (!(200..=599).contains(&status)).then_some("invalid response status");
        Response { status, headers: Vec::new(), body: Vec::new(), invalid }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::typed(status, "text/plain; charset=utf-8", body.into())
    }

    /// A `text/html; charset=utf-8` response.
    pub fn html(status: u16, body: impl Into<String>) -> Response {
        Response::typed(status, "text/html; charset=utf-8", body.into())
    }

    /// An `application/json` response; `body` is already-serialised JSON.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::typed(status, "application/json", body.into())
    }

    fn typed(status: u16, content_type: &str, body: String) -> Response {
        Response::new(status).header("Content-Type", content_type).body(body)
    }

    /// Appends a header. A name that is not a token or a value that is not a
    /// `field-value` (RFC 9110 5.1, 5.5) would split the response: it is not
    /// stored, and the server writes `500` instead.
    #[must_use]
    pub fn header(self, name: &str, value: &str) -> Response {
        self.checked_header(name, value, false)
    }

    /// [`header`](Response::header), also refusing `OWNED` on a `stream`'s head.
    pub(crate) fn checked_header(mut self, name: &str, value: &str, stream: bool) -> Response {
        if stream && OWNED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            self.invalid = self.invalid.or(Some("reserved response header"));
        } else if valid_field(name, value) {
            self.headers.push((name.to_owned(), value.to_owned()));
        } else {
            self.invalid = self.invalid.or(Some("invalid response header"));
        }
        self
    }

    setters! {
        /// Sets the body.
        body(body: impl Into<Vec<u8>>) { body: body.into() }
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The value of the first header named `name` (ignoring case).
    #[must_use]
    pub fn get_header(&self, name: &str) -> Option<&str> {
        find(pairs(&self.headers), name).next()
    }

    /// The body.
    #[must_use]
    pub fn get_body(&self) -> &[u8] {
        &self.body
    }

    /// Whether the response can be written as built (else a `500` is).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.invalid.is_none()
    }

    /// Why the response is invalid (the body of the `500`).
    pub(crate) fn invalid_reason(&self) -> Option<&'static str> {
        self.invalid
    }

    /// A server's own `text/plain` answer: `text` and a newline.
    pub(crate) fn error(status: u16, text: &str) -> Response {
        Response::text(status, format!("{text}\n"))
    }

    /// Writes the response (an invalid one as a `500`) in one write, without
    /// the body if `head`; returns the bytes written (0 if it failed); as 1.1
    /// (RFC 9110 2.5). 204 and 304 have no `Content-Length` or body (8.6).
    pub(crate) fn send(&self, mut w: impl Write, version: Version, head: bool, close: bool) -> u64 {
        if let Some(why) = self.invalid {
            return Response::text(500, why).send(w, version, head, close);
        }
        let mut out = Vec::with_capacity(256 + self.body.len());
        // Writing to a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        self.write_headers(&mut out);
        let has_body = !matches!(self.status, 204 | 304);
        if has_body {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if has_body && !head {
            out.extend_from_slice(&self.body);
        }
        w.write_all(&out).map_or(0, |()| out.len() as u64)
    }

    /// Appends the header lines but the framing ones.
    fn write_headers(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.headers {
            if !OWNED[1..].iter().any(|n| name.eq_ignore_ascii_case(n)) {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
    }

    /// Writes an event stream's head with these headers (see [the server's
    /// docs](crate::server#event-streams)), then `first` framed, as `send`
    /// does.
    pub(crate) fn write_stream_head(&self, mut w: impl Write, chunked: bool, first: &[u8]) -> u64 {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n".to_vec();
        for (name, default) in [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")] {
            if self.get_header(name).is_none() {
                let _ = write!(out, "{name}: {default}\r\n");
            }
        }
        out.extend_from_slice(b"Connection: close\r\n");
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        self.write_headers(&mut out);
        out.extend_from_slice(b"\r\n");
        out.extend(body_bytes(first, chunked));
        w.write_all(&out).map_or(0, |()| out.len() as u64)
    }
}

/// A parsed response head (bytes that are not UTF-8 as U+FFFD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    status: u16,
    headers: Vec<(String, String)>,
}

/// Parses a response head from the start of `buf`, as
/// [`parse_head`](super::parse_head) does (`max_request_line` bounds the
/// status line).
///
/// ```
/// use stdsse::http::{parse_response_head, Limits, Status};
///
/// let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n";
/// let Ok(Status::Complete((head, consumed))) = parse_response_head(wire, &Limits::default()) else {
///     panic!("a valid head");
/// };
/// assert_eq!((head.status(), head.header("content-type")), (200, Some("text/event-stream")));
/// assert_eq!(&wire[consumed..], b"data: x\n\n");
/// ```
pub fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Status<(ResponseHead, usize)>, Error> {
    within_head(buf, limits, |view| {
        // status-line = "HTTP/1." DIGIT SP 3DIGIT [ SP reason-phrase ] CRLF
        let (line, long) = line_bound(view, 0, limits.max_request_line);
        let line_end = scan(line, 0, &VALUE);
        match line.get(line_end) {
            None => return Err(long.then_some(Error::RequestLineTooLong)),
            Some(_) if !status_line(&line[..line_end]) => return Err(Some(Error::StatusLine)),
            Some(_) => crlf(view, line_end)?,
        }
        let mut fields = Vec::new();
        let end = parse_fields(view, line_end + 2, 0, limits, &mut fields)?;
        let text = |(from, to): (u32, u32)| {
            String::from_utf8_lossy(&view[from as usize..to as usize]).into_owned()
        };
        let status = line[9..12].iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'));
        let headers = fields.into_iter().map(|f| (text(f.name), text(f.value))).collect();
        Ok((ResponseHead { status, headers }, end))
    })
}

/// Replaces each obs-fold (CRLF, then SP or HTAB) in the head at the start of `buf` with SP, as
/// a user agent must (RFC 9112 5.2); [`parse_response_head`] refuses it, as a server does.
pub(crate) fn unfold(buf: &mut [u8]) {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(buf.len());
    for i in 0..end.saturating_sub(2) {
        if matches!(buf[i..i + 3], [b'\r', b'\n', b' ' | b'\t']) {
            buf[i..i + 2].copy_from_slice(b"  ");
        }
    }
}

fn pairs(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// Whether `line` is `HTTP/1.` DIGIT SP 3DIGIT [ SP reason ], code >= 100.
fn status_line(line: &[u8]) -> bool {
    match line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, b' ', code @ ..] if code.len() >= 3 => {
            minor.is_ascii_digit()
                && code[..3].iter().all(u8::is_ascii_digit)
                && code[0] != b'0'
                && code.get(3).is_none_or(|&b| b == b' ')
        }
        _ => false,
    }
}

impl ResponseHead {
    /// The status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The fields, in order.
    #[must_use]
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    lookups!(|head| pairs(&head.headers));

    /// How the body of this answer to `method` is delimited (RFC 9112 6.3;
    /// none for `HEAD`).
    pub fn body_framing(&self, method: &str) -> Result<Framing, Error> {
        if method == "HEAD" {
            return Ok(Framing::Length(0));
        }
        declared_framing(|name| self.header_all(name))
    }
}

/// The interim answer to `Expect: 100-continue` (RFC 9110 10.1.1).
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for a status code (RFC 9110 15, RFC 6585), or `"Unknown"`.
#[must_use]
#[rustfmt::skip]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue", 101 => "Switching Protocols",
        200 => "OK", 201 => "Created", 202 => "Accepted", 203 => "Non-Authoritative Information",
        204 => "No Content", 205 => "Reset Content", 206 => "Partial Content",
        300 => "Multiple Choices", 301 => "Moved Permanently", 302 => "Found", 303 => "See Other",
        304 => "Not Modified", 305 => "Use Proxy", 307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request", 401 => "Unauthorized", 402 => "Payment Required", 403 => "Forbidden",
        404 => "Not Found", 405 => "Method Not Allowed", 406 => "Not Acceptable",
        407 => "Proxy Authentication Required", 408 => "Request Timeout", 409 => "Conflict",
        410 => "Gone", 411 => "Length Required", 412 => "Precondition Failed",
        413 => "Content Too Large", 414 => "URI Too Long", 415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable", 417 => "Expectation Failed", 421 => "Misdirected Request",
        422 => "Unprocessable Content", 426 => "Upgrade Required", 428 => "Precondition Required",
        429 => "Too Many Requests", 431 => "Request Header Fields Too Large",
        500 => "Internal Server Error", 501 => "Not Implemented", 502 => "Bad Gateway",
        503 => "Service Unavailable", 504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per case: the response, how it is written, the exact bytes.
    macro_rules! writes {
        ($($name:ident: $response:expr, $version:ident, head_only: $head:expr, close: $close:expr => $wire:expr;)*) => {$(
            #[test]
            fn $name() {
                let response: Response = $response;
                let mut out = b"before|".to_vec();
                response.send(&mut out, Version::$version, $head, $close);
                assert_eq!(String::from_utf8_lossy(&out), format!("before|{}", $wire));
            }
        )*};
    }

    writes! {
        text_200: Response::text(200, "hello"), Http11, head_only: false, close: false => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
        head_keeps_length_drops_body: Response::text(200, "hello"), Http11, head_only: true, close: false => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\n";
        empty_200: Response::new(200), Http11, head_only: false, close: false => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        no_content_204: Response::new(204).body("ignored"), Http11, head_only: false, close: false => "HTTP/1.1 204 No Content\r\n\r\n";
        not_modified_304: Response::new(304).header("ETag", "\"x\""), Http11, head_only: false, close: false => "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n";
        close: Response::json(404, "{}"), Http11, head_only: false, close: true => "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        http10_keep_alive: Response::html(200, "<p>"), Http10, head_only: false, close: false => "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n<p>";
        http10_close: Response::new(200), Http10, head_only: false, close: true => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        framing_headers_dropped: Response::text(200, "ab").header("content-length", "99").header("Transfer-Encoding", "chunked").header("CONNECTION", "upgrade").header("X-Kept", "1").header("X-Kept", "2"), Http11, head_only: false, close: false => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Kept: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nab";
        unknown_status: Response::new(299), Http11, head_only: false, close: false => "HTTP/1.1 299 Unknown\r\nContent-Length: 0\r\n\r\n";
        invalid_header_value_is_500: Response::text(200, "secret").header("X", "a\r\nSet-Cookie: s=1"), Http11, head_only: false, close: false => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\ninvalid response header";
        invalid_header_name_is_500: Response::new(200).header("Bad Name", "v"), Http11, head_only: false, close: true => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\nConnection: close\r\n\r\ninvalid response header";
        invalid_header_nul_head_only: Response::new(200).header("X", "\0"), Http11, head_only: true, close: false => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\n";
        invalid_status_is_500: Response::new(42), Http11, head_only: false, close: false => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\ninvalid response status";
    }
}
