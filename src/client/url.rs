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
    /// optional port, path, query; a fragment is dropped. The error is
    /// [`ClientError::Https`] or [`ClientError::Url`].
    pub(super) fn parse(text: &str) -> Result<Url, ClientError> {
        let invalid = |reason| ClientError::Url { url: text.to_owned(), reason };
        let trimmed = text.trim_matches(|c: char| c <= ' ');
        let (scheme, rest) =
            trimmed.split_once("://").ok_or(invalid("not an absolute http:// URL"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(ClientError::Https { url: text.to_owned() });
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(invalid("only http:// URLs are supported"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, target) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported; send an Authorization header",
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) =
                bracketed.split_once(']').ok_or(invalid("unclosed [ in the host"))?;
            let address: Ipv6Addr = address.parse().map_err(|_| invalid("invalid IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(invalid("invalid port"))?),
            };
            (format!("[{address}]"), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(invalid("no host"));
            }
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            if !host.bytes().all(valid) {
                return Err(invalid("invalid host (use punycode for non-ASCII names)"));
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None | Some("") => 80,
            Some(port) => parse_decimal(port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or(invalid("invalid port"))?,
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut target = remove_dot_segments(if path.is_empty() { "/" } else { path });
        if let Some(query) = query {
            target = format!("{target}?{query}");
        }
        let target = percent_encode(&target);
        Ok(Url { host, port, target })
    }

    /// `host[:port]`, the `Host` header (the port only when it is not 80).
    pub(super) fn authority(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            _ => self.address(),
        }
    }

    /// `host:port`, to resolve.
    pub(super) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Resolves a `Location` against this URL (RFC 3986 5.2, for the
    /// forms a server sends: absolute, `//authority...`, `/path`, `?query`,
    /// `relative/path`).
    pub(super) fn join(&self, location: &str) -> Result<Url, ClientError> {
        let location = location.split('#').next().unwrap_or_default();
        let has_scheme = location.split_once(':').is_some_and(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        });
        if has_scheme {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!("http:{location}"));
        }
        let base_path = self.target.split('?').next().unwrap_or("/");
        let joined = if location.starts_with('/') {
            location.to_owned()
        } else if location.starts_with('?') {
            format!("{base_path}{location}")
        } else {
            let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Url::parse(&format!("http://{}{joined}", self.authority()))
    }
}

/// RFC 3986 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." | ".." => {
                if segment == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            _ => out.push(segment),
        }
    }
    format!("/{}", out.join("/"))
}

/// Percent-encodes what may not appear raw in a request-target: controls,
/// space, `"`, `<`, `>`, DEL and non-ASCII bytes (as browsers do).
fn percent_encode(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for &b in target.as_bytes() {
        if b > b' ' && b < 0x7f && !matches!(b, b'"' | b'<' | b'>') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (text, (host, port, target), authority) in [
            (
                "http://Example.COM:8080/a/b?x=1&y=é#f",
                ("example.com", 8080, "/a/b?x=1&y=%C3%A9"),
                "example.com:8080",
            ),
            ("HTTP://127.0.0.1", ("127.0.0.1", 80, "/"), "127.0.0.1"),
            ("http://[::1]:9000?q", ("[::1]", 9000, "/?q"), "[::1]:9000"),
            ("http://[0:0::1]/x y/../z/./a b\"<>", ("[::1]", 80, "/z/a%20b%22%3C%3E"), "[::1]"),
            ("http://h:/p", ("h", 80, "/p"), "h"),
            (" http://h/a/./b/../c/ ", ("h", 80, "/a/c/"), "h"),
            ("http://h/a/..", ("h", 80, "/"), "h"),
        ] {
            let u = Url::parse(text).unwrap();
            let got = (u.host.as_str(), u.port, u.target.as_str());
            assert_eq!(got, (host, port, target), "{text}");
            assert_eq!(u.to_string(), format!("http://{authority}{target}"));
        }
        assert!(matches!(Url::parse("HTTPS://h/"), Err(ClientError::Https { .. })));
        let bad = "h/path|ftp://h/|http://|http:///p|http://u:p@h/|http://h:0/|http://h:65536/|\
                   http://h:x/|http://h:1:2/|http://[::1/|http://[zz]/|http://[::1]x/|\
                   http://exa mple/|http://bücher.de/";
        for bad in bad.split('|') {
            let error = Url::parse(bad);
            assert!(matches!(error, Err(ClientError::Url { .. })), "{bad}");
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
            ("//other/p", "http://other/p"),
            ("http://o:9/", "http://o:9/"),
        ] {
            let url = base.join(location).unwrap();
            assert_eq!(url.to_string(), joined, "{location}");
        }
        assert!(matches!(base.join("https://o/"), Err(ClientError::Https { .. })));
        assert!(matches!(base.join("mailto:x"), Err(ClientError::Url { .. })));
    }
}
