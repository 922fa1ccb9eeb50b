//! A small Redis client (RESP2) for the hub: timeouts, `AUTH`, `SELECT`,
//! pipelining; URLs show the password as `***`. "Clients send commands to a
//! Redis server as an array of bulk strings" (RESP), so no data can start
//! one; replies are parsed without I/O, bounded. No TLS (std has none): run
//! Redis on a private network or behind a TLS tunnel (stunnel, spiped).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::Status;
use crate::scan::{find_eol, is_digits, parse_decimal};

type Parsed = Result<(Reply, usize), Option<RedisError>>;

/// Where Redis is: `redis://[user:password@]host[:port][/db]` (port 6379 and
/// db 0 by default; the userinfo percent-decoded, as in RFC 3986).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) host: String, // as written: `[::1]` for IPv6
    pub(crate) port: u16,
    pub(crate) db: u32,
}

impl RedisUrl {
    /// Parses one; `user:password@` is an ACL user, `:password@` the default.
    pub fn parse(url: &str) -> Result<RedisUrl, RedisError> {
        let rest = url.strip_prefix("redis://").ok_or(Url("not redis://"))?;
        let (auth, rest) = rest.rsplit_once('@').map_or((None, rest), |(a, r)| (Some(a), r));
        let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, parse_decimal(p).ok_or(Url("bad port"))?),
            _ => (host, 6379),
        };
        let (user, password) = match auth.map(|a| a.split_once(':')) {
            None => (None, None),
            Some(None) => return Err(Url("userinfo is not user:password")),
            Some(Some((u, p))) => (Some(decode(u)?).filter(|u| !u.is_empty()), Some(decode(p)?)),
        };
        let db = if db.is_empty() { 0 } else { parse_decimal(db).ok_or(Url("bad db"))? };
        let host = Some(host).filter(|h| !h.is_empty()).ok_or(Url("no host"))?.into();
        Ok(RedisUrl { user, password, host, port, db })
    }
}

fn decode(s: &str) -> Result<String, RedisError> {
    let mut parts = s.split('%');
    let mut out = parts.next().unwrap_or_default().as_bytes().to_vec();
    for part in parts {
        let hex = part.get(..2).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
        out.push(hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(Url("bad %-escape"))?);
        out.extend_from_slice(&part.as_bytes()[2..]);
    }
    String::from_utf8(out).map_err(|_| Url("userinfo is not UTF-8"))
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth =
            self.password.as_ref().map(|_| format!("{}:***@", self.user.as_deref().unwrap_or("")));
        write!(f, "redis://{}{}:{}/{}", auth.unwrap_or_default(), self.host, self.port, self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Why talking to Redis failed. The text never holds the password.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not `redis://[user:password@]host[:port][/db]`.
    Url(&'static str),
    /// Connecting, reading or writing failed (`UnexpectedEof`: Redis closed).
    Io(io::ErrorKind),
    /// No connection or answer within the timeout.
    Timeout,
    /// The server broke RESP2 or a bound of the reply parser.
    Protocol(&'static str),
    /// The server answered with an error reply (`-ERR ...`): its text.
    Server(String),
}
use RedisError::{Protocol, Url};

error_display!(RedisError(e, f) => match e {
    Url(why) => write!(f, "bad Redis URL: {why}"),
    RedisError::Io(kind) => write!(f, "Redis I/O: {kind}"),
    RedisError::Timeout => f.write_str("Redis timed out"),
    Protocol(why) => write!(f, "Redis protocol: {why}"),
    RedisError::Server(text) => write!(f, "Redis: {text}"),
});

impl From<io::Error> for RedisError {
    fn from(e: io::Error) -> RedisError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RedisError::Timeout,
            kind => RedisError::Io(kind),
        }
    }
}

/// A RESP2 reply (`$-1`, `*-1`: `None`); a RESP3 type is a protocol error.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// The bounds of one reply, so a broken or hostile server cannot make the
/// client allocate without limit or recurse without end. Defaults: `bulk`
/// 64 MiB (a 16 MiB event's frame with its `data: ` prefixes), `array`
/// 1,048,576 elements, `depth` 8 nested arrays (`XREAD` needs 5), `line`
/// 64 KiB (so a line that never ends is not rescanned up to `total`),
/// `total` 256 MiB (the read buffer; `XREAD`'s `COUNT` is sized to fit).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct ReplyLimits {
    pub bulk: usize,
    pub array: usize,
    pub depth: usize,
    pub line: usize,
    pub total: usize,
}

#[doc(hidden)]
pub const LIMITS: ReplyLimits =
    ReplyLimits { bulk: 64 << 20, array: 1 << 20, depth: 8, line: 64 << 10, total: 256 << 20 };

/// Parses one reply at the start of `buf`: the reply and its length, or
/// `Partial` (never for more than `limits.total` bytes). Two passes: the
/// first only measures (no copies while a big reply arrives piece by piece).
#[doc(hidden)]
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Status<(Reply, usize)>, RedisError> {
    let parsed = parse_at(buf, 0, 0, limits, false).and_then(|_| parse_at(buf, 0, 0, limits, true));
    parsed.map(Status::Complete).or_else(|e| e.map_or(Ok(Status::Partial), Err))
}

/// The reply at `buf[at..]` in `depth` arrays, built if `build`, and its end
/// (`Err(None)`: not all there yet).
fn parse_at(buf: &[u8], at: usize, depth: usize, lim: &ReplyLimits, build: bool) -> Parsed {
    // Whether a reply ending at `end` has arrived; an error past the bound.
    let has = |end: usize| (end <= lim.total).then_some(end <= buf.len());
    let has = |end| has(end).ok_or(Some(Protocol("reply too large")));
    let &kind = buf.get(at).ok_or(None)?;
    let line = &buf[at + 1..];
    let eol = find_eol(&line[..line.len().min(lim.line + 1)]);
    if eol.is_none() && line.len() > lim.line {
        return Err(Protocol("line too long").into());
    }
    let next = at + 1 + eol.unwrap_or(line.len()) + 2;
    has(next)?; // first: the same error whatever the next bytes are
    let eol = eol.ok_or(None)?;
    match (line[eol], line.get(eol + 1)) {
        (b'\n', _) => return Err(Protocol("bare LF").into()),
        (_, None) => return Err(None),
        (_, Some(b'\n')) => {}
        _ => return Err(Protocol("CR without LF").into()),
    }
    let line = &line[..eol];
    let mut end = next;
    let text = || String::from_utf8_lossy(if build { line } else { b"" }).into_owned();
    let len = |max: usize| match int(line).filter(|&n| n >= -1).map(|n| usize::try_from(n).ok()) {
        None => Err(Protocol("bad length")),
        Some(n) => n.filter(|&n| n > max).map_or(Ok(n), |_| Err(Protocol("length over the limit"))),
    };
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(int(line).ok_or(Protocol("bad integer"))?),
        b'$' => match len(lim.bulk)? {
            None => Reply::Bulk(None),
            Some(n) if !has(next.saturating_add(n).saturating_add(2))? => return Err(None),
            Some(n) => {
                end = next + n + 2;
                if &buf[next + n..end] != b"\r\n" {
                    return Err(Protocol("bulk string without CRLF").into());
                }
                Reply::Bulk(build.then(|| buf[next..next + n].to_vec()))
            }
        },
        b'*' => match len(lim.array)? {
            None => Reply::Array(None),
            Some(_) if depth >= lim.depth => return Err(Protocol("arrays nested too deep").into()),
            Some(n) => {
                has(next.saturating_add(n.saturating_mul(3)))?; // 3 bytes an element at least
                let mut items = Vec::with_capacity(if build { n } else { 0 });
                for _ in 0..n {
                    let (item, after) = parse_at(buf, end, depth + 1, lim, build)?;
                    items.extend(build.then_some(item));
                    end = after;
                }
                Reply::Array(Some(items))
            }
        },
        _ => return Err(Protocol("unknown reply type (RESP3?)").into()),
    };
    Ok((reply, end))
}

/// `[ "-" ] 1*DIGIT` as an `i64`.
fn int(line: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(line).ok()?;
    is_digits(s.strip_prefix('-').unwrap_or(s)).then(|| s.parse().ok())?
}

/// A connection to Redis: pipelining is [`send`](Conn::send)s, a
/// [`flush`](Conn::flush), [`recv`](Conn::recv)s; after an error, drop it
/// (it may be out of step). The timeout bounds each reply as a whole.
#[doc(hidden)]
#[allow(missing_debug_implementations)] // its buffers may hold an AUTH
pub struct Conn {
    stream: TcpStream,
    timeout: Duration,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects within `timeout` (each address in turn), which bounds every
    /// read and write, then sends `AUTH [user] password`, `SELECT db` if set.
    pub fn connect(url: &RedisUrl, timeout: Duration) -> Result<Conn, RedisError> {
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        let mut connect = |a| TcpStream::connect_timeout(&a, timeout).map_err(|e| last = e).ok();
        let addrs = format!("{}:{}", url.host, url.port).to_socket_addrs()?;
        let stream = addrs.into_iter().find_map(&mut connect).ok_or(last)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn { stream, timeout, out: Vec::new(), buf: Vec::new() };
        if let Some(password) = &url.password {
            let user = url.user.as_deref().map(str::as_bytes);
            conn.call(&[&[b"AUTH".as_slice()], user.as_slice(), &[password.as_bytes()]].concat())?;
        }
        if url.db != 0 {
            conn.call(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        Ok(conn)
    }

    /// Queues a command, `*N\r\n$len\r\narg\r\n...`, for [`flush`](Conn::flush).
    pub fn send(&mut self, args: &[&[u8]]) {
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "*{}", args.len());
        for arg in args {
            let _ = write!(self.out, "\r\n${}\r\n", arg.len());
            self.out.extend_from_slice(arg);
        }
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes every queued command.
    pub fn flush(&mut self) -> Result<(), RedisError> {
        let written = self.stream.write_all(&self.out);
        self.out.clear();
        Ok(written?)
    }

    /// Reads the next reply (an error reply: [`RedisError::Server`]).
    pub fn recv(&mut self) -> Result<Reply, RedisError> {
        let deadline = crate::util::later(self.timeout);
        loop {
            if let Status::Complete((reply, len)) = parse_reply(&self.buf, &LIMITS)? {
                self.buf.drain(..len);
                return match reply {
                    Reply::Error(text) => Err(RedisError::Server(text)),
                    reply => Ok(reply),
                };
            }
            let mut chunk = [0; 64 << 10];
            let read = self.stream.read(&mut chunk)?;
            self.buf.extend_from_slice(&chunk[..read]);
            if read == 0 {
                return Err(RedisError::Io(io::ErrorKind::UnexpectedEof));
            } else if Instant::now() > deadline {
                return Err(RedisError::Timeout);
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.send(args);
        self.flush()?;
        self.recv()
    }
}
