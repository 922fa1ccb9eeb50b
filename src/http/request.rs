//! Request heads and query strings.

use std::fmt;
use std::net::SocketAddr;

use crate::scan::find_eol;

use super::{
    crlf, declared_framing, line_bound, parse_fields, scan, trim_ows, unexpected, within_head,
    Error, FieldSpan, Framing, Limits, Parsed, Status, Version, HOST, TCHAR, URI,
};

/// A parsed request: the head (one string plus ranges into it), the body
/// once the server has read it, and the peer address.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The head from the request line to the final CRLF.
    head: String,
    method: (u32, u32),
    target: (u32, u32),
    authority: Option<(u32, u32)>,
    /// The `?` in the target.
    query: Option<u32>,
    version: Version,
    fields: Vec<FieldSpan>,
    /// Set by the server once read.
    pub(crate) body: Vec<u8>,
    pub(crate) remote_addr: Option<SocketAddr>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("version", &self.version)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Complete((request, consumed))`: `consumed` counts the head, leading and
/// final empty lines included.
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
    within_head(buf, limits, |view| parse_view(view, limits))
}

/// Parses a head that must lie within `view`.
#[inline(never)]
fn parse_view(view: &[u8], limits: &Limits) -> Parsed<(Request, usize)> {
    let mut start = 0;
    while let Some(b'\r' | b'\n') = view.get(start) {
        crlf(view, start)?;
        start += 2;
    }

    // request-line = method SP request-target SP HTTP-version CRLF
    let (line, long) = line_bound(view, start, limits.max_request_line);
    let method_end = scan(line, start, &TCHAR);
    match line.get(method_end) {
        None => return Err(long.then_some(Error::RequestLineTooLong)),
        Some(b' ') if method_end > start => {}
        Some(_) => return Err(unexpected(view, method_end, Error::Method, Error::Method)),
    }
    let target_start = method_end + 1;
    match line.get(target_start) {
        None => return Err(long.then_some(Error::RequestLineTooLong)),
        Some(b) if matches!(b, b'/' | b'*') || b.is_ascii_alphabetic() => {}
        Some(_) => return Err(unexpected(view, target_start, Error::Target, Error::Target)),
    }
    let target_end = scan(line, target_start, &URI);
    match line.get(target_end) {
        None => return Err(long.then_some(Error::RequestLineTooLong)),
        Some(b' ') => {}
        Some(_) => {
            return Err(unexpected(view, target_end, Error::MalformedVersion, Error::Target))
        }
    }
    let target = &line[target_start..target_end];
    let authority = match target[0] {
        b'/' => None,
        b'*' if target == b"*" && &line[start..method_end] == b"OPTIONS" => None,
        b'*' => return Err(Some(Error::Target)),
        // absolute-form: "http://" authority, then the path (RFC 9112 3.2.2).
        _ => {
            let (scheme, rest) = target.split_at(7.min(target.len()));
            let len = rest.iter().take_while(|&&b| b != b'/' && b != b'?').count();
            if !scheme.eq_ignore_ascii_case(b"http://") || !super::all_in(&rest[..len], &HOST, true)
            {
                return Err(Some(Error::Target));
            }
            Some((target_start + 7, target_start + 7 + len))
        }
    };
    let version_start = target_end + 1;
    let Some(version_len) = find_eol(&line[version_start..]) else {
        return Err(long.then_some(Error::RequestLineTooLong));
    };
    let version_end = version_start + version_len;
    crlf(view, version_end)?;
    // HTTP-version = HTTP-name "/" DIGIT "." DIGIT (RFC 9112 2.3).
    let version = match &line[version_start..version_end] {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        // A higher minor version is read as the highest we implement (RFC 9110 2.5).
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', y] if y.is_ascii_digit() => Version::Http11,
        other if other.contains(&b' ') => return Err(Some(Error::Target)),
        [b'H', b'T', b'T', b'P', b'/', x, b'.', y] if x.is_ascii_digit() && y.is_ascii_digit() => {
            return Err(Some(Error::Version))
        }
        _ => return Err(Some(Error::MalformedVersion)),
    };

    let mut fields = Vec::with_capacity(16);
    let end = parse_fields(view, version_end + 2, start, limits, &mut fields)?;
    // Only field values may hold bytes above 0x7F: this is where a value
    // that is not UTF-8 is found.
    let head = std::str::from_utf8(&view[start..end]).map_err(|_| Error::HeaderValue)?;
    let at = |i: usize| (i - start) as u32;
    let request = Request {
        head: head.to_owned(),
        method: (0, at(method_end)),
        target: (at(target_start), at(target_end)),
        authority: authority.map(|(from, to)| (at(from), at(to))),
        query: target.iter().position(|&b| b == b'?').map(|q| at(target_start + q)),
        version,
        fields,
        body: Vec::new(),
        remote_addr: None,
    };
    // RFC 9112 3.2: one Host in HTTP/1.1, at most one in HTTP/1.0, valid.
    let mut hosts = request.header_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::Http10 => {}
        (Some(host), None) if super::all_in(host.as_bytes(), &HOST, false) => {}
        _ => return Err(Some(Error::MissingHost)),
    }
    drop(hosts);
    Ok((request, end))
}

impl Request {
    /// Parses a whole head with the default [`Limits`], the bytes after it as
    /// the body (for tests and tools; an incomplete head is [`Error::NewLine`]).
    pub fn parse(buf: &[u8]) -> Result<Request, Error> {
        let Status::Complete((mut request, consumed)) = parse_head(buf, &Limits::default())? else {
            return Err(Error::NewLine);
        };
        request.body = buf[consumed..].to_vec();
        Ok(request)
    }

    fn span(&self, (start, end): (u32, u32)) -> &str {
        self.head.get(start as usize..end as usize).unwrap_or("")
    }

    /// The method, as sent (case-sensitive: `get` is not `GET`).
    #[must_use]
    pub fn method(&self) -> &str {
        self.span(self.method)
    }

    /// The raw request-target, still percent-encoded.
    #[must_use]
    pub fn target(&self) -> &str {
        self.span(self.target)
    }

    /// The path, not decoded; an empty path is `/` (RFC 9110 4.2.3).
    #[must_use]
    pub fn path(&self) -> &str {
        let start = self.authority.map_or(self.target.0, |(_, end)| end);
        match self.span((start, self.query.unwrap_or(self.target.1))) {
            "" => "/",
            path => path,
        }
    }

    /// The authority of an absolute-form target, else `Host` (RFC 9112
    /// 3.2.2: the server "MUST ignore the received Host header field" then).
    #[must_use]
    pub fn authority(&self) -> Option<&str> {
        self.authority.map(|span| self.span(span)).or_else(|| self.header("host"))
    }

    /// The raw text after the first `?`, or `None` without one.
    #[must_use]
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| self.span((q + 1, self.target.1)))
    }

    /// The decoded value of the first query parameter named `name`.
    #[must_use]
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// All query parameters, decoded, in order.
    #[must_use]
    pub fn query_params(&self) -> Vec<(String, String)> {
        decode_query(self.query().unwrap_or(""))
    }

    /// The HTTP version.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    lookups!(|request| request.headers());

    /// Every field as `(name, value)`, names as received, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(move |f| (self.span(f.name), self.span(f.value)))
    }

    /// Whether the connection persists (RFC 9112 9.3): HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `keep-alive` (and no `close`).
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        let has = |option: &str| {
            self.header_all("connection")
                .flat_map(|v| v.split(','))
                .any(|o| trim_ows(o).eq_ignore_ascii_case(option))
        };
        !has("close") && (self.version == Version::Http11 || has("keep-alive"))
    }

    /// Whether the client waits for `100 Continue` (RFC 9110 10.1.1; a server
    /// MUST ignore it in HTTP/1.0); an unknown `Expect` is [`Error::Expectation`].
    pub fn expects_continue(&self) -> Result<bool, Error> {
        if self.header_all("expect").any(|v| !v.eq_ignore_ascii_case("100-continue")) {
            return Err(Error::Expectation);
        }
        Ok(self.header("expect").is_some() && self.version == Version::Http11)
    }

    /// How the body is delimited (RFC 9112 6.3), checked against `limits`.
    /// Both `Transfer-Encoding` and `Content-Length` (the classic smuggling
    /// set-up) is [`Error::LengthAndChunked`]; `5, 5` is 5, `5, 6` an error.
    pub fn body_framing(&self, limits: &Limits) -> Result<Framing, Error> {
        let chunked = self.header("transfer-encoding").is_some();
        if chunked && self.header("content-length").is_some() {
            return Err(Error::LengthAndChunked);
        }
        if chunked && self.version == Version::Http10 {
            return Err(Error::UnsupportedTransferCoding);
        }
        match declared_framing(|name| self.header_all(name))? {
            Framing::Length(n) if n > limits.max_body as u64 => Err(Error::BodyTooLarge),
            framing => Ok(framing),
        }
    }

    /// The body, once the server has read it.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The peer's address, when the request came from a socket.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

/// Decodes a query string as `application/x-www-form-urlencoded` (WHATWG
/// URL): split on `&`, empty pieces skipped, the first `=` splits name from
/// value, each part decoded with [`percent_decode`].
#[must_use]
pub fn decode_query(query: &str) -> Vec<(String, String)> {
    let pairs = query.split('&').filter(|piece| !piece.is_empty());
    let pairs = pairs.map(|piece| piece.split_once('=').unwrap_or((piece, "")));
    pairs.map(|(name, value)| (percent_decode(name), percent_decode(value))).collect()
}

/// Decodes one query component: `+` is a space, `%XX` that byte, a `%`
/// without two hex digits is kept; bytes that are not UTF-8 become U+FFFD.
#[must_use]
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'+', ..) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                out.push((high << 4 | low) as u8);
                i += 2;
            }
            (b, ..) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
