//! `http://` URLs: parsing, the request-target, and resolving a `Location`.

use std::fmt;
use std::net::Ipv6Addr;

use super::ClientError;
use crate::scan::parse_decimal;

/// An `http://` URL, split for the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Url {
    /// A lower-case name, an IPv4 address, or an IPv6 address in brackets.
    pub(super) host: String,
    pub(super) port: u16,
    /// The request-target: path and query, percent-encoded where needed,
    /// always starting with `/`.
    pub(super) target: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.target)
    }
}

impl Url {
    /// Parses an absolute `http://` URL: host (name, IPv4 or `[IPv6]`),
    /// optional port, path, query; a fragment is dropped.
    pub(super) fn parse(text: &str) -> Result<Url, ClientError> {
        let invalid = |reason| ClientError::Url { url: text.to_owned(), reason };
        let trimmed = text.trim_matches(|c: char| c <= ' ');
        let (scheme, rest) = trimmed.split_once(':').unwrap_or_default();
        let rest = rest.strip_prefix("//").ok_or(invalid("not an absolute http:// URL"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => return Err(ClientError::Https { url: text.to_owned() }),
            _ => return Err(invalid("only http:// URLs are supported")),
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, target) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(invalid("credentials in the URL: send an Authorization header"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, port) =
                bracketed.split_once(']').ok_or(invalid("unclosed [ in the host"))?;
            let address: Ipv6Addr = address.parse().map_err(|_| invalid("invalid IPv6 address"))?;
            (format!("[{address}]"), port)
        } else {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            if host.is_empty() {
                return Err(invalid("no host"));
            } else if !host.bytes().all(valid) {
                return Err(invalid("invalid host (use punycode for non-ASCII names)"));
            }
            (host.to_ascii_lowercase(), port)
        };
        // `port` is empty or `:` DIGITs.
        let port = match port {
            "" | ":" => Some(80),
            _ => port.strip_prefix(':').and_then(parse_decimal),
        };
        let port = port.filter(|&p| p != 0).ok_or(invalid("invalid port"))?;
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        Ok(Url { host, port, target: percent_encode(&(remove_dot_segments(path) + query)) })
    }

    /// `host[:port]`, the `Host` header (the port only when it is not 80).
    pub(super) fn authority(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }

    /// Resolves a `Location` against this URL (RFC 3986 5.2, for the
    /// forms a server sends: absolute, `//authority...`, `/path`, `?query`,
    /// `relative/path`).
    pub(super) fn join(&self, location: &str) -> Result<Url, ClientError> {
        let location = location.split('#').next().unwrap_or_default();
        // A colon in the first segment is a scheme's (4.2: not a relative path).
        if location.split(['/', '?']).next().is_some_and(|first| first.contains(':')) {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!("http:{location}"));
        }
        let path = self.target.split('?').next().unwrap_or("/");
        // RFC 3986 5.2.2: an empty path keeps the base's, and its query unless one is given.
        let base = match location.as_bytes().first() {
            None => &self.target,
            Some(b'/') => "",
            Some(b'?') => path,
            _ => &path[..path.rfind('/').map_or(0, |i| i + 1)],
        };
        Url::parse(&format!("http://{}{base}{location}", self.authority()))
    }
}

/// RFC 3986 5.2.4 on an absolute path (`""` is `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            ".." => drop(out.pop()),
            "." => {}
            _ => out.push(segment),
        }
    }
    // A dot segment at the end leaves a directory: `/a/..` is `/`.
    if path.ends_with("/.") || path.ends_with("/..") {
        out.push("");
    }
    format!("/{}", out.join("/"))
}

/// Percent-encodes what may not appear raw in a request-target: controls,
/// space, `"`, `<`, `>`, DEL and non-ASCII bytes (as browsers do).
fn percent_encode(target: &str) -> String {
    let raw = |b: u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>');
    target
        .bytes()
        .map(|b| if raw(b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (text, host, port, shown) in [
            ("http://Ex.COM:8080/a?x&y=é#f", "ex.com", 8080, "http://ex.com:8080/a?x&y=%C3%A9"),
            ("HTTP://127.0.0.1", "127.0.0.1", 80, "http://127.0.0.1/"),
            ("http://[::1]:9000?q", "[::1]", 9000, "http://[::1]:9000/?q"),
            ("http://[0:0::1]/x y/../z/./a b\"<>", "[::1]", 80, "http://[::1]/z/a%20b%22%3C%3E"),
            ("http://h:/p", "h", 80, "http://h/p"),
            (" http://h/a/./b/../c/ ", "h", 80, "http://h/a/c/"),
            ("http://h/a/..", "h", 80, "http://h/"),
            ("http://h/a/.", "h", 80, "http://h/a/"),
        ] {
            let u = Url::parse(text).unwrap();
            assert_eq!((u.host.as_str(), u.port, &*u.to_string()), (host, port, shown), "{text}");
        }
        assert!(matches!(Url::parse("HTTPS://h/"), Err(ClientError::Https { .. })));
        let bad = "h/path|ftp://h/|http://|http:///p|http://u:p@h/|http://h:0/|http://h:65536/|\
                   http://h:x/|http://h:1:2/|http://[::1/|http://[zz]/|http://[::1]x/|\
                   http://exa mple/|http://bücher.de/|http:/h|http:h|:|h:80://x";
        for bad in bad.split('|') {
            assert!(matches!(Url::parse(bad), Err(ClientError::Url { .. })), "{bad}");
        }
    }

    #[test]
    fn locations() {
        let base = Url::parse("http://h:81/a/b/c?q=1").unwrap();
        for (location, joined) in [
            ("/x?y", "http://h:81/x?y"),
            ("d", "http://h:81/a/b/d"),
            ("../d#f", "http://h:81/a/d"),
            ("../../../../d", "http://h:81/d"),
            ("./", "http://h:81/a/b/"),
            ("?z", "http://h:81/a/b/c?z"),
            ("", "http://h:81/a/b/c?q=1"),
            ("#f", "http://h:81/a/b/c?q=1"),
            ("//other/p", "http://other/p"),
            ("http://o:9/", "http://o:9/"),
        ] {
            assert_eq!(base.join(location).unwrap().to_string(), joined, "{location}");
        }
        assert!(matches!(base.join("https://o/"), Err(ClientError::Https { .. })));
        assert!(matches!(base.join("mailto:x"), Err(ClientError::Url { .. })));
    }
}
