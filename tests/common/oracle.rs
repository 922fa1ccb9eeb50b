//! Raw HTTP on the client side, independent of the library: the requests
//! a raw client sends, and a parser of the responses it reads (an outside
//! oracle for the server's response writer).

use super::*;

/// The values of the headers named `name` (case-insensitive), in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// The status line, without CRLF.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    /// The whole head as received, up to and including the empty line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    /// Every header named `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The body, which must be UTF-8.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses a response head ending with CRLF CRLF: `HTTP/1.x NNN reason`,
/// then `name: value` lines. `None` if it is not well formed.
pub fn parse_head(head: &[u8]) -> Option<Resp> {
    let whole = std::str::from_utf8(head).ok()?;
    let text = whole.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = parse_status_line(status_line)?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return None;
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(Resp {
        status,
        status_line: status_line.to_string(),
        headers,
        head: whole.to_string(),
        body: Vec::new(),
    })
}

/// The status of `HTTP/1.x NNN Reason phrase`, or `None`.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || reason.is_empty() {
        return None;
    }
    if reason.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    code.parse().ok()
}

/// A GET request for `path`, HTTP/1.1, with `Host`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// A request `method target HTTP/1.1` with `Host: test`, `headers`, a
/// `Content-Length` when there is a body or the method is POST, and `body`.
pub fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
