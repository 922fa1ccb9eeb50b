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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UrlError {
    Https,
    Invalid(&'static str),
}

impl UrlError {
    pub(super) fn into_error(self, url: &str) -> ClientError {
        match self {
            UrlError::Https => ClientError::Https {
                url: url.to_owned(),
            },
            UrlError::Invalid(reason) => ClientError::Url {
                url: url.to_owned(),
                reason,
            },
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.target)
    }
}

impl Url {
    /// Parses an absolute `http://` URL: host (name, IPv4 or `[IPv6]`),
    /// optional port, path, query; a fragment is dropped.
    pub(super) fn parse(text: &str) -> Result<Url, UrlError> {
        let text = text.trim_matches(|c: char| c <= ' ');
        let (scheme, rest) = text
            .split_once("://")
            .ok_or(UrlError::Invalid("not an absolute http:// URL"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Https);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(UrlError::Invalid("only http:// URLs are supported"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::Invalid(
                "credentials in the URL are not supported; send an Authorization header",
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or(UrlError::Invalid("unclosed [ in the host"))?;
            let address: Ipv6Addr = address
                .parse()
                .map_err(|_| UrlError::Invalid("invalid IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or(UrlError::Invalid("invalid port"))?,
                ),
            };
            (format!("[{address}]"), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            if host.is_empty() {
                return Err(UrlError::Invalid("no host"));
            }
            if !host.bytes().all(valid) {
                return Err(UrlError::Invalid(
                    "invalid host (use punycode for non-ASCII names)",
                ));
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None | Some("") => 80,
            Some(port) => parse_decimal(port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or(UrlError::Invalid("invalid port"))?,
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut target = remove_dot_segments(if path.is_empty() { "/" } else { path });
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        Ok(Url {
            host,
            port,
            target: percent_encode(&target),
        })
    }

    /// `host[:port]`, the `Host` header (the port only when it is not 80).
    pub(super) fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `host:port`, to resolve.
    pub(super) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Resolves a `Location` against this URL (RFC 3986 5.2, for the
    /// forms a server sends: absolute, `//authority...`, `/path`, `?query`,
    /// `relative/path`).
    pub(super) fn join(&self, location: &str) -> Result<Url, UrlError> {
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

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn urls() {
        let u = url("http://Example.COM:8080/a/b?x=1&y=é#frag");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 8080, "/a/b?x=1&y=%C3%A9")
        );
        assert_eq!(u.authority(), "example.com:8080");
        assert_eq!(u.to_string(), "http://example.com:8080/a/b?x=1&y=%C3%A9");
        let u = url("HTTP://127.0.0.1");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 80, "/")
        );
        assert_eq!(u.authority(), "127.0.0.1");
        let u = url("http://[::1]:9000?q");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("[::1]", 9000, "/?q")
        );
        assert_eq!(u.address(), "[::1]:9000");
        let u = url("http://[0:0::1]/x y/../z/./a b\"<>");
        assert_eq!(
            (u.host.as_str(), u.target.as_str()),
            ("[::1]", "/z/a%20b%22%3C%3E")
        );
        assert_eq!(url("http://h:/p").port, 80);
        assert_eq!(url(" http://h/a/./b/../c/ ").target, "/a/c/");
        assert_eq!(url("http://h/a/..").target, "/");

        assert_eq!(Url::parse("https://h/"), Err(UrlError::Https));
        assert_eq!(Url::parse("HTTPS://h/"), Err(UrlError::Https));
        for bad in [
            "h/path",
            "ftp://h/",
            "http://",
            "http:///p",
            "http://u:p@h/",
            "http://h:0/",
            "http://h:65536/",
            "http://h:x/",
            "http://h:1:2/",
            "http://[::1/",
            "http://[zz]/",
            "http://[::1]x/",
            "http://exa mple/",
            "http://bücher.de/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(UrlError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn locations() {
        let base = url("http://h:81/a/b/c?q=1");
        let join = |loc: &str| base.join(loc).map(|u| u.to_string());
        assert_eq!(join("/x?y").unwrap(), "http://h:81/x?y");
        assert_eq!(join("d").unwrap(), "http://h:81/a/b/d");
        assert_eq!(join("../d#f").unwrap(), "http://h:81/a/d");
        assert_eq!(join("../../../../d").unwrap(), "http://h:81/d");
        assert_eq!(join("./").unwrap(), "http://h:81/a/b/");
        assert_eq!(join("?z").unwrap(), "http://h:81/a/b/c?z");
        assert_eq!(join("//other/p").unwrap(), "http://other/p");
        assert_eq!(join("http://o:9/").unwrap(), "http://o:9/");
        assert_eq!(join("https://o/"), Err(UrlError::Https));
        assert!(matches!(join("mailto:x"), Err(UrlError::Invalid(_))));
    }
}
