//! The client: a blocking `EventSource` that reconnects and resumes.
//!
//! [`Client`] connects to an `http://` URL over a [`TcpStream`](std::net::TcpStream), checks the
//! answer the way a browser's `EventSource` does, parses the body with the
//! crate's [`Parser`] as its bytes arrive, and is an [`Iterator`] over what
//! it receives. When the connection drops or the body ends, it waits and
//! connects again, sending `Last-Event-ID` so that the server can resume.
//!
//! ```no_run
//! use stdsse::client::{Client, Received};
//! use std::time::Duration;
//!
//! let client = Client::builder("http://127.0.0.1:8080/events")
//!     .header("Authorization", "Bearer 0123")
//!     .retry(Duration::from_secs(1))
//!     .build()?;
//! let stop = client.close_handle(); // stop.close() from any thread ends the loop
//! for item in client {
//!     match item {
//!         Ok(Received::Event(event)) => println!("{} {:?} (id {:?})", event.event_type, event.data, event.id),
//!         Ok(_) => {} // comments and states, when asked for
//!         Err(error) if error.is_final() => return Err(error.into()),
//!         Err(error) => eprintln!("{error}"), // an event over the size limit, skipped
//!     }
//! }
//! # drop(stop);
//! // The loop ended: the server answered 204 No Content, or `stop.close()` was called.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Behaviour (WHATWG HTML 9.2.2, 9.2.3, "reestablish the connection")
//!
//! * The request: `GET` (or [`method`](ClientBuilder::method)) with `Host`,
//!   `Accept: text/event-stream`, `Cache-Control: no-cache`, `Last-Event-ID`
//!   when the last event ID is not empty, the custom headers and the body;
//!   the same on every reconnect.
//! * `200` with a `text/event-stream` essence is the stream
//!   ([`Received::Connected`]); another content type "fails the connection"
//!   ([`ClientError::ContentType`]). `204` means stop. `301`, `302`, `303`,
//!   `307`, `308` are followed as Fetch does (a `303`, or a `301`/`302` to a
//!   `POST`, becomes a `GET` without body; another origin loses
//!   `Authorization`, `Cookie`, `Proxy-Authorization` and a custom `Host`).
//!   `1xx` answers are skipped. `5xx` and `429` are retried, honouring
//!   `Retry-After`; anything else is [`ClientError::Status`].
//! * The body may be close-delimited, `Content-Length` or chunked; each event
//!   comes out as soon as its last byte is read.
//! * Every transient problem (refused, reset, ended, idle or head timeout, a
//!   malformed answer, `5xx`) leads to a reconnect to the **original** URL,
//!   never to the end of the iterator. An event cut by the drop is dropped.
//! * The delay is the reconnection time: the server's `retry:`, clamped to
//!   [`retry_bounds`](ClientBuilder::retry_bounds), or the caller's
//!   [`retry`](ClientBuilder::retry). After the n-th failure in a row it is
//!   `× 2ⁿ`, capped at the ceiling, with equal jitter ("optionally, wait some
//!   more"); a connection that reaches the stream resets the count.
//! * Final errors end the iterator; only [`ClientError::EventTooLarge`] is
//!   not final ([`ClientError::is_final`]). `https://` is refused: the
//!   standard library has no TLS, so put a TLS-terminating proxy on the
//!   local host and give the client its `http://` URL.
//! * [`Client::close_handle`] stops the client from another thread, at once
//!   even while it blocks; [`CloseHandle::restart`] reconnects at once.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::iter::FusedIterator;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{self, reason_phrase, ResponseHead};
use crate::parser::{Item, MessageEvent, ParseError, Parser};
use crate::scan::parse_decimal;
use connect::{exchange, Body, Shared, State};
use url::{Url, UrlError};

mod connect;
mod url;

/// The shortest socket timeout (the standard library refuses zero).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// What the client yields: events, and comments and connection states when
/// asked for ([`ClientBuilder::comments`], [`ClientBuilder::states`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A dispatched event: its type (`message` by default), data and the
    /// last event ID at dispatch.
    Event(MessageEvent),
    /// A comment line (keep-alives are comments), without the colon and one
    /// leading space. Only with [`ClientBuilder::comments`].
    Comment(String),
    /// The server answered `200` with an event stream (which the
    /// [response check](ClientBuilder::check_response), if any, accepted):
    /// its status, headers and URL. Only with [`ClientBuilder::states`].
    Connected(Connected),
    /// The connection ended or could not be made, and why. A
    /// [`Retrying`](Received::Retrying) follows, except after
    /// [`Disconnect::NoContent`], which is the last item. Only with
    /// [`ClientBuilder::states`].
    Disconnected(Disconnect),
    /// The client will connect again after this delay. Only with
    /// [`ClientBuilder::states`].
    Retrying(Duration),
}

/// The answer the client connected to: the head of a `200` event stream
/// and the URL it came from, after redirects. In
/// [`Received::Connected`] and given to the
/// [response check](ClientBuilder::check_response).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Connected {
    head: ResponseHead,
    url: String,
}

impl Connected {
    /// The status code (`200`).
    #[must_use]
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The header fields, in order, names as received and values without
    /// the whitespace around them (RFC 9110 5.5: it "is excluded" from the
    /// field value); invalid UTF-8 is replaced.
    #[must_use]
    pub fn headers(&self) -> &[(String, String)] {
        self.head.headers()
    }

    /// Adds a request header (repeats are all sent, in order); `Accept`,
    /// `Cache-Control` or `Host` replace the client's own. `build` fails with
    /// [`ClientError::Header`] for a field line a server would refuse (the
    /// same tables as [`http::parse_head`]), and for `Content-Length`,
    /// `Transfer-Encoding` and `Last-Event-ID`, which the client sets.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The URL that answered: the original one, or where the redirects led
    /// (normalised, as `http://host[:port]/path?query`).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A [response check](ClientBuilder::check_response) refusing a
/// connection, with the caller's reason: final
/// ([`ClientError::Refused`], the iterator ends) or retried
/// ([`Disconnect::Refused`], the client backs off and reconnects as after a
/// `5xx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
    retry: bool,
}

impl Refusal {
    /// The reconnection time until the server sends `retry:`. Default 3 s,
    /// as in browsers; used as given (zero reconnects at once).
    pub fn retry(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            retry: true,
        }
    }

    /// Refuses this answer for good: the client stops.
    pub fn fatal(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            retry: false,
        }
    }

    /// The caller's reason, as given.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the client retries after it.
    #[must_use]
    pub fn is_retry(&self) -> bool {
        self.retry
    }
}

impl fmt::Display for Refusal {
    /// The reason is quoted and escaped (it may quote the server).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the response check refused the answer: {:?}",
            self.reason
        )
    }
}

/// Why a connection ended or could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum Disconnect {
    /// The server ended the body: it closed a close-delimited body, sent the
    /// last chunk, or sent all the bytes of its `Content-Length`.
    Ended,
    /// The server answered `204 No Content`: stop reconnecting. No retry
    /// follows; this is the last item.
    NoContent,
    /// The connection could not be made: the name did not resolve, the
    /// connection was refused, or [`ClientBuilder::connect_timeout`] passed.
    Connect(io::Error),
    /// Reading or writing failed: the connection was reset, or closed in the
    /// middle of the response head, a chunk or a `Content-Length` body.
    Io(io::Error),
    /// Nothing at all arrived for this long (see
    /// [`ClientBuilder::idle_timeout`]): the connection is taken for dead.
    IdleTimeout(Duration),
    /// The answer was not valid HTTP/1.x: a bad status line, header line or
    /// chunk, or an unsupported `Transfer-Encoding`.
    Protocol(http::Error),
    /// The response head, interim `1xx` answers included, was larger than
    /// this many bytes (64 KiB).
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The response head, interim `1xx` answers included, was not complete
    /// within [`ClientBuilder::head_timeout`].
    HeadTimeout(Duration),
    /// The server answered `5xx` or `429 Too Many Requests`, which
    /// [`ClientBuilder::retry_server_errors`] retries.
    Status {
        /// The status code.
        status: u16,
        /// The wait its `Retry-After` asked for, if it had a valid one.
        retry_after: Option<Duration>,
    },
    /// [`CloseHandle::restart`] was called.
    Restart,
    /// The [response check](ClientBuilder::check_response) refused the
    /// answer with [`Refusal::retry`].
    Refused(Refusal),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Ended => f.write_str("the server ended the stream"),
            Disconnect::NoContent => f.write_str("the server answered 204 No Content (stop)"),
            Disconnect::Connect(e) => write!(f, "could not connect: {e}"),
            Disconnect::Io(e) => write!(f, "connection lost: {e}"),
            Disconnect::IdleTimeout(d) => {
                write!(f, "nothing received for {} ms", d.as_millis())
            }
            Disconnect::Protocol(why) => write!(f, "invalid response: {}", why.description()),
            Disconnect::HeadTooLarge { limit } => {
                write!(f, "invalid response: head larger than {limit} bytes")
            }
            Disconnect::HeadTimeout(d) => {
                write!(f, "no complete response head in {} ms", d.as_millis())
            }
            Disconnect::Status {
                status,
                retry_after,
            } => {
                write!(f, "the server answered {status} {}", reason_phrase(*status))?;
                match retry_after {
                    Some(d) => write!(f, " (Retry-After: {} s)", d.as_secs()),
                    None => Ok(()),
                }
            }
            Disconnect::Restart => f.write_str("restart requested"),
            Disconnect::Refused(refusal) => refusal.fmt(f),
        }
    }
}

/// Why the client failed. Every variant but
/// [`EventTooLarge`](ClientError::EventTooLarge) is final: it comes from
/// [`ClientBuilder::build`], or it is the last item of the iterator.
///
/// Untrusted text (URLs, header names, content types) is shown quoted and
/// escaped, so every message is one line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not a usable `http://` URL.
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `https://` URL (given, or in a redirect's `Location`): the
    /// standard library has no TLS.
    Https {
        /// The URL.
        url: String,
    },
    /// The method is not an HTTP token.
    Method {
        /// The method as given.
        method: String,
    },
    /// A request header (or the initial last event ID) cannot be sent.
    Header {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server answered with a status other than 200, 204, a followed
    /// redirect, or a `5xx` or `429` that
    /// [`retry_server_errors`](ClientBuilder::retry_server_errors) retries.
    Status {
        /// The status code.
        status: u16,
        /// The `Content-Type` of the answer, if it had one.
        content_type: Option<String>,
    },
    /// The server answered 200 with a content type that is not
    /// `text/event-stream`.
    ContentType {
        /// The `Content-Type`, if the answer had one.
        content_type: Option<String>,
    },
    /// A redirect without a `Location` header, or with an empty one.
    MissingLocation {
        /// The redirect status.
        status: u16,
    },
    /// A redirect whose `Location` is not an `http://` URL or a relative
    /// reference.
    InvalidLocation {
        /// The redirect status.
        status: u16,
        /// The `Location` value.
        location: String,
    },
    /// More redirects in a row than [`ClientBuilder::max_redirects`].
    TooManyRedirects {
        /// The limit in force.
        limit: u32,
    },
    /// An event (or one of its lines) was larger than
    /// [`ClientBuilder::max_event_size`]. Not final: the event is skipped
    /// and the stream goes on.
    EventTooLarge {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// The [response check](ClientBuilder::check_response) refused the
    /// answer with [`Refusal::fatal`].
    Refused(Refusal),
}

impl ClientError {
    /// Whether the client stops after this error. Only
    /// [`EventTooLarge`](ClientError::EventTooLarge) is not final.
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(self, ClientError::EventTooLarge { .. })
    }
}

/// `Content-Type: "..."` or `no Content-Type`.
struct ShowType<'a>(&'a Option<String>);

impl fmt::Display for ShowType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(content_type) => write!(f, "Content-Type {content_type:?}"),
            None => f.write_str("no Content-Type"),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Url { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            ClientError::Https { url } => write!(
                f,
                "{url:?}: https is not supported, the Rust standard library has no TLS; \
                 run a local TLS-terminating proxy (such as stunnel or nginx) \
                 and connect to it with http://"
            ),
            ClientError::Method { method } => {
                write!(f, "invalid HTTP method {method:?}: not a token")
            }
            ClientError::Header { name, reason } => {
                write!(f, "invalid request header {name:?}: {reason}")
            }
            ClientError::Status {
                status,
                content_type,
            } => write!(
                f,
                "the server answered {status} {} ({}), not an event stream",
                reason_phrase(*status),
                ShowType(content_type)
            ),
            ClientError::ContentType { content_type } => write!(
                f,
                "the server answered 200 OK with {}, not text/event-stream",
                ShowType(content_type)
            ),
            ClientError::MissingLocation { status } => write!(
                f,
                "the server answered {status} {} without a Location header",
                reason_phrase(*status)
            ),
            ClientError::InvalidLocation { status, location } => write!(
                f,
                "the server answered {status} {} with an unusable Location {location:?}",
                reason_phrase(*status)
            ),
            ClientError::TooManyRedirects { limit } => {
                write!(f, "more than {limit} redirects in a row")
            }
            ClientError::EventTooLarge { limit } => {
                write!(f, "skipped an event larger than {limit} bytes")
            }
            ClientError::Refused(refusal) => refusal.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {}

/// Settings for a [`Client`]; from [`Client::builder`].
///
/// Every setting has a default; [`build`](ClientBuilder::build) checks
/// them all and the URL. Setters never fail: the first invalid value is
/// reported by `build`.
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    last_event_id: String,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    head_timeout: Duration,
    retry: Duration,
    retry_floor: Duration,
    retry_ceiling: Duration,
    retry_server_errors: bool,
    max_redirects: u32,
    max_event_size: usize,
    comments: bool,
    states: bool,
    check: Option<Check>,
    error: Option<ClientError>,
}

/// A [response check](ClientBuilder::check_response).
type Check = Arc<dyn Fn(&Connected) -> Result<(), Refusal> + Send + Sync>;

impl fmt::Debug for ClientBuilder {
    /// Header values and the body are not shown (they may hold secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &HeaderNames(&self.headers))
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("last_event_id", &self.last_event_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("head_timeout", &self.head_timeout)
            .field("retry", &self.retry)
            .field("retry_bounds", &(self.retry_floor, self.retry_ceiling))
            .field("retry_server_errors", &self.retry_server_errors)
            .field("max_redirects", &self.max_redirects)
            .field("max_event_size", &self.max_event_size)
            .field("comments", &self.comments)
            .field("states", &self.states)
            .field("check_response", &self.check.is_some())
            .finish()
    }
}

/// Shows header names only.
struct HeaderNames<'a>(&'a [(String, String)]);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl ClientBuilder {
    /// Adds a request header; call it again for more (repeated names are
    /// all sent, in order). A header named `Accept`, `Cache-Control` or
    /// `Host` replaces the client's own.
    ///
    /// `build` fails with [`ClientError::Header`] if the name is not an
    /// HTTP token or the value contains CR, LF or NUL (so nothing can be
    /// injected into the request), and for `Content-Length`,
    /// `Transfer-Encoding` (the client frames the [body](Self::body)) and
    /// `Last-Event-ID` (use [`last_event_id`](Self::last_event_id)).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> ClientBuilder {
        match check_header(name, value) {
            Ok(()) => self.headers.push((name.to_owned(), value.to_owned())),
            Err(reason) => self.fail(ClientError::Header {
                name: name.to_owned(),
                reason,
            }),
        }
        self
    }

    /// The request method, sent as given. Default `GET`; must be a token.
    #[must_use]
    pub fn method(mut self, method: &str) -> ClientBuilder {
        if !http::is_token(method) {
            self.fail(ClientError::Method {
                method: method.to_owned(),
            });
        }
        self.method = method.to_owned();
        self
    }

    /// A request body, sent with its `Content-Length` on every connection.
    /// Default none (then `Content-Length: 0` for methods but `GET`, `HEAD`).
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> ClientBuilder {
        self.body = Some(body.into());
        self
    }

    /// The last event ID to start from (`Last-Event-ID`). Default empty.
    #[must_use]
    pub fn last_event_id(mut self, id: &str) -> ClientBuilder {
        if !http::valid_field("Last-Event-ID", id) {
            self.fail(ClientError::Header {
                name: "Last-Event-ID".into(),
                reason: "not a valid field value",
            });
        }
        self.last_event_id = id.to_owned();
        self
    }

    /// How long name resolution and the TCP connection may take together.
    /// Default 10 s; at least 1 ms.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout.max(MIN_TIMEOUT);
        self
    }

    /// Taken for dead after this long without a byte (not even a keep-alive),
    /// while waiting for the head or during the stream; also bounds each
    /// blocked write. Protects against half-open connections. Default 45 s
    /// (three missed 15 s keep-alives); `None` waits forever; at least 1 ms.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.idle_timeout = timeout.map(|t| t.max(MIN_TIMEOUT));
        self
    }

    /// How long the whole response head may take, interim `1xx` answers
    /// included ([`Disconnect::HeadTimeout`]). Protects against a server that
    /// drips the head a byte at a time or sends `1xx` without end (which the
    /// idle timeout never sees). Default 30 s; at least 1 ms.
    #[must_use]
    pub fn head_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.head_timeout = timeout.max(MIN_TIMEOUT);
        self
    }

    /// The initial reconnection time: the delay before a reconnect until the
    /// server sends `retry:`. Default 3 s, as in browsers. Used as given,
    /// not clamped: zero reconnects at once (and failures in a row then
    /// retry at once too).
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> ClientBuilder {
        self.retry = delay;
        self
    }

    /// The bounds of a server's `retry:` and the ceiling of the backoff.
    /// Protects against `retry: 0` (a tight loop) and a typo (an hour-long
    /// sleep). Default 100 ms to 60 s; a floor above the ceiling raises it.
    #[must_use]
    pub fn retry_bounds(mut self, floor: Duration, ceiling: Duration) -> ClientBuilder {
        self.retry_floor = floor;
        self.retry_ceiling = ceiling.max(floor);
        self
    }

    /// Whether `5xx` and `429` are retried ([`Disconnect::Status`], at least
    /// as long as `Retry-After` asks, clamped to the retry bounds) rather than
    /// final ([`ClientError::Status`], as in browsers). Default `true`: a fleet
    /// of clients must not stop for good during a brief overload.
    #[must_use]
    pub fn retry_server_errors(mut self, yes: bool) -> ClientBuilder {
        self.retry_server_errors = yes;
        self
    }

    /// How many redirects are followed in a row before
    /// [`ClientError::TooManyRedirects`]. Default 10; 0 follows none.
    #[must_use]
    pub fn max_redirects(mut self, max: u32) -> ClientBuilder {
        self.max_redirects = max;
        self
    }

    /// The largest event, as [`Parser::max_event_size`] counts; a larger one
    /// is skipped as [`ClientError::EventTooLarge`]. Protects against an
    /// endless event. Default 16 MiB.
    #[must_use]
    pub fn max_event_size(mut self, bytes: usize) -> ClientBuilder {
        self.max_event_size = bytes;
        self
    }

    /// Also yield comments as [`Received::Comment`]. Default off.
    #[must_use]
    pub fn comments(mut self, yes: bool) -> ClientBuilder {
        self.comments = yes;
        self
    }

    /// Also yield connection states: [`Received::Connected`],
    /// [`Received::Disconnected`] and [`Received::Retrying`]. Default off.
    #[must_use]
    pub fn states(mut self, yes: bool) -> ClientBuilder {
        self.states = yes;
        self
    }

    /// A check of each `200` event stream's head, after the client's own:
    /// it may refuse for good ([`Refusal::fatal`]) or for now
    /// ([`Refusal::retry`], a reconnect after the backoff). Default none.
    ///
    /// ```
    /// use stdsse::client::{Client, Refusal};
    ///
    /// let client = Client::builder("http://127.0.0.1:8080/events")
    ///     .check_response(|answer| match answer.header("x-api-version") {
    ///         Some("2") => Ok(()),
    ///         other => Err(Refusal::fatal(format!("API version {other:?}, not 2"))),
    ///     })
    ///     .build()?;
    /// # drop(client);
    /// # Ok::<(), stdsse::ClientError>(())
    /// ```
    #[must_use]
    pub fn check_response(
        mut self,
        check: impl Fn(&Connected) -> Result<(), Refusal> + Send + Sync + 'static,
    ) -> ClientBuilder {
        self.check = Some(Arc::new(check));
        self
    }

    /// Checks the settings and the URL and makes the client. Nothing is
    /// sent until the first call to [`Iterator::next`].
    ///
    /// ```
    /// use stdsse::client::{Client, ClientError};
    ///
    /// let error = Client::builder("https://example.com/events").build().unwrap_err();
    /// assert!(matches!(error, ClientError::Https { .. }));
    /// assert!(error.to_string().contains("no TLS"));
    ///
    /// let error = Client::builder("http://example.com/")
    ///     .header("X-Injected", "a\r\nEvil: 1")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, ClientError::Header { .. }));
    /// ```
    pub fn build(self) -> Result<Client, ClientError> {
        let url = Url::parse(&self.url).map_err(|e| e.into_error(&self.url))?;
        if let Some(error) = self.error {
            return Err(error);
        }
        let parser = Parser::new()
            .last_event_id(self.last_event_id.clone())
            .max_event_size(self.max_event_size);
        Ok(Client {
            url,
            config: self,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
            parser,
            body: None,
            queue: VecDeque::new(),
            phase: Phase::Connect,
            failures: 0,
        })
    }

    /// Keeps the first error.
    fn fail(&mut self, error: ClientError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }
}

/// A blocking event-stream client: an [`Iterator`] over what it receives,
/// reconnecting as the standard says. See the [module docs](self).
///
/// The iterator ends (`None`) after a final error, after a `204 No
/// Content`, or once [`CloseHandle::close`] was called; it is fused.
pub struct Client {
    /// The settings, checked.
    config: ClientBuilder,
    url: Url,
    shared: Arc<Shared>,
    parser: Parser,
    body: Option<Body>,
    /// Items to yield before doing anything else.
    queue: VecDeque<Result<Received, ClientError>>,
    phase: Phase,
    /// Failed attempts since the last successful connection.
    failures: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url.to_string())
            .field("method", &self.config.method)
            .field("phase", &self.phase)
            .field("last_event_id", &self.parser.get_last_event_id())
            .field("reconnection_time", &self.reconnection_time())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Stops a [`Client`] from another thread; from [`Client::close_handle`].
#[derive(Clone)]
pub struct CloseHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for CloseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl CloseHandle {
    /// Closes the client: the current connection is shut down, a sleep
    /// before a reconnect or a connection attempt is cut short, and the
    /// iterator returns `None` from then on (at once if it is blocked in
    /// another thread). Calling it again does nothing.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.interrupt(&mut state);
    }

    /// Restarts the client, for when the application knows the stream is
    /// stale: the current connection is dropped now (or the connection
    /// attempt, or the sleep before a reconnect, is cut short) and the
    /// client connects again at once, with `Last-Event-ID`, without ending
    /// the iterator. As on any disconnect, an event cut short is dropped;
    /// the backoff starts over. With [`states`](ClientBuilder::states) on,
    /// it shows as [`Disconnect::Restart`] and `Retrying(0)`. Does nothing
    /// once the client has stopped.
    pub fn restart(&self) {
        let mut state = self.shared.lock();
        if !state.closed {
            state.restart = true;
            self.shared.interrupt(&mut state);
        }
    }

    /// Whether [`close`](CloseHandle::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Client {
    /// Starts building a client for `url`, with these defaults: `GET`, no
    /// custom header, no body, no last event ID, connect timeout 10 s, idle
    /// timeout 45 s, head timeout 30 s, retry 3 s, retry bounds 100 ms to
    /// 60 s, `5xx` and `429` retried, 10 redirects, events up to 16 MiB, no
    /// comments, no states. The URL is checked by
    /// [`ClientBuilder::build`].
    #[must_use]
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            last_event_id: String::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(45)),
            head_timeout: Duration::from_secs(30),
            retry: Duration::from_secs(3),
            retry_floor: Duration::from_millis(100),
            retry_ceiling: Duration::from_secs(60),
            retry_server_errors: true,
            max_redirects: 10,
            max_event_size: 16 * 1024 * 1024,
            comments: false,
            states: false,
            check: None,
            error: None,
        }
    }

    /// A handle that stops this client from any thread.
    #[must_use]
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The last event ID: what the next request sends as `Last-Event-ID`
    /// (nothing when empty). Save it to resume in another process.
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        self.parser.get_last_event_id()
    }

    /// The reconnection time now: the server's last `retry:` clamped to
    /// the bounds, or the caller's [`retry`](ClientBuilder::retry). The
    /// backoff after failures comes on top of it.
    #[must_use]
    pub fn reconnection_time(&self) -> Duration {
        match self.parser.retry() {
            Some(server) => server.clamp(self.config.retry_floor, self.config.retry_ceiling),
            None => self.config.retry,
        }
    }

    /// Connects (following redirects) and sets up what comes next.
    fn connect(&mut self) {
        let result = self.open();
        if self.shared.interrupted() {
            return; // whatever the attempt gave: `next` closes or restarts
        }
        match result {
            Ok(Opened::Stream(body, connected)) => {
                self.failures = 0;
                self.parser.reset();
                self.body = Some(*body);
                self.phase = Phase::Streaming;
                self.state(Received::Connected(connected));
            }
            Ok(Opened::NoContent) => {
                self.state(Received::Disconnected(Disconnect::NoContent));
                self.phase = Phase::Done;
            }
            Err(Failure::Final(error)) => {
                self.queue.push_back(Err(error));
                self.phase = Phase::Done;
            }
            Err(Failure::Retry(reason)) => {
                self.failures = self.failures.saturating_add(1);
                self.schedule(reason);
            }
            // A close or restart: `next` sees it.
            Err(Failure::Interrupted) => {}
        }
    }

    /// One connection attempt: request, redirects, checks.
    fn open(&mut self) -> Result<Opened, Failure> {
        let config = &self.config;
        let mut url = self.url.clone();
        let mut hop = Hop {
            method: config.method.clone(),
            send_body: true,
            cross_origin: false,
        };
        let mut redirects = 0;
        loop {
            let stream = self.shared.connect(&url, config.connect_timeout)?;
            let result = exchange(config, &stream, &url, &hop, self.parser.get_last_event_id());
            let (head, rest) = match result {
                Ok(answer) => answer,
                Err(reason) => {
                    self.shared.release(&stream);
                    return Err(Failure::Retry(reason));
                }
            };
            let content_type = head.header("content-type").map(str::to_owned);
            match head.status() {
                200 => {
                    if !content_type.as_deref().is_some_and(is_event_stream) {
                        self.shared.release(&stream);
                        return Err(Failure::Final(ClientError::ContentType { content_type }));
                    }
                    let framing = match head.body_framing(&hop.method) {
                        Ok(framing) => framing,
                        Err(error) => {
                            self.shared.release(&stream);
                            return Err(Failure::Retry(Disconnect::Protocol(error)));
                        }
                    };
                    let connected = Connected {
                        head,
                        url: url.to_string(),
                    };
                    if let Some(Err(refusal)) = config.check.as_ref().map(|check| check(&connected))
                    {
                        self.shared.release(&stream);
                        return Err(if refusal.retry {
                            Failure::Retry(Disconnect::Refused(refusal))
                        } else {
                            Failure::Final(ClientError::Refused(refusal))
                        });
                    }
                    let body = Body::new(stream, framing, rest, config.idle_timeout);
                    return Ok(Opened::Stream(Box::new(body), connected));
                }
                204 => {
                    self.shared.release(&stream);
                    return Ok(Opened::NoContent);
                }
                301 | 302 | 303 | 307 | 308 => {
                    self.shared.release(&stream);
                    let status = head.status();
                    if redirects == config.max_redirects {
                        return Err(Failure::Final(ClientError::TooManyRedirects {
                            limit: config.max_redirects,
                        }));
                    }
                    redirects += 1;
                    let location = head.header("location").unwrap_or("").trim();
                    if location.is_empty() {
                        return Err(Failure::Final(ClientError::MissingLocation { status }));
                    }
                    let next = url.join(location).map_err(|e| {
                        Failure::Final(match e {
                            UrlError::Https => ClientError::Https {
                                url: location.to_owned(),
                            },
                            UrlError::Invalid(_) => ClientError::InvalidLocation {
                                status,
                                location: location.to_owned(),
                            },
                        })
                    })?;
                    // Fetch, HTTP-redirect fetch, steps 11 and 13.
                    let to_get = (matches!(status, 301 | 302) && hop.method == "POST")
                        || (status == 303 && !matches!(hop.method.as_str(), "GET" | "HEAD"));
                    if to_get {
                        hop.method = "GET".into();
                        hop.send_body = false;
                    }
                    if (next.host.as_str(), next.port) != (url.host.as_str(), url.port) {
                        hop.cross_origin = true;
                    }
                    url = next;
                }
                status => {
                    self.shared.release(&stream);
                    if config.retry_server_errors && (status == 429 || (500..600).contains(&status))
                    {
                        let retry_after = head
                            .header("retry-after")
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        return Err(Failure::Retry(Disconnect::Status {
                            status,
                            retry_after,
                        }));
                    }
                    return Err(Failure::Final(ClientError::Status {
                        status,
                        content_type,
                    }));
                }
            }
        }
    }

    /// The connection is gone: drop what is pending and plan the retry.
    fn lost(&mut self, reason: Disconnect) {
        if let Some(body) = self.body.take() {
            self.shared.release(&body.stream);
        }
        // Lines already fed were parsed; `finish` drops a partial event.
        self.parser.finish();
        while let Some(item) = self.parser.next_item() {
            if let Some(item) = self.map_item(item) {
                self.queue.push_back(item);
            }
        }
        self.schedule(reason);
    }

    /// Queues the state items and waits next: the backoff, or longer if a
    /// `Retry-After` (clamped to the retry bounds) asks for more; nothing
    /// after a restart.
    fn schedule(&mut self, reason: Disconnect) {
        let grown = || {
            backoff(
                self.reconnection_time(),
                self.failures,
                self.config.retry_ceiling,
                crate::util::random_u64(),
            )
        };
        let (floor, ceiling) = (self.config.retry_floor, self.config.retry_ceiling);
        let delay = match reason {
            Disconnect::Restart => Duration::ZERO,
            Disconnect::Status {
                retry_after: Some(asked),
                ..
            } => grown().max(asked.clamp(floor, ceiling)),
            _ => grown(),
        };
        self.state(Received::Disconnected(reason));
        self.state(Received::Retrying(delay));
        self.phase = Phase::Wait(delay);
    }

    /// Queues a state item if states are on.
    fn state(&mut self, item: Received) {
        if self.config.states {
            self.queue.push_back(Ok(item));
        }
    }

    /// A parser item as a client item (`None`: not wanted).
    fn map_item(&self, item: Result<Item, ParseError>) -> Option<Result<Received, ClientError>> {
        match item {
            Ok(Item::Event(event)) => Some(Ok(Received::Event(event))),
            Ok(Item::Comment(text)) => self.config.comments.then_some(Ok(Received::Comment(text))),
            Err(ParseError::EventTooLarge { .. } | ParseError::LineTooLong { .. }) => {
                Some(Err(ClientError::EventTooLarge {
                    limit: self.config.max_event_size,
                }))
            }
        }
    }
}

impl Iterator for Client {
    type Item = Result<Received, ClientError>;

    /// The next event (or comment, state, error), blocking until there is
    /// one; `None` once the client has stopped for good.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.shared.is_closed() {
                self.phase = Phase::Done;
                self.queue.clear();
                if let Some(body) = self.body.take() {
                    self.shared.release(&body.stream);
                }
                return None;
            }
            if self.shared.take_restart() && self.phase != Phase::Done {
                self.failures = 0;
                self.lost(Disconnect::Restart);
            }
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Wait(delay) => {
                    self.phase = Phase::Connect;
                    self.shared.sleep(delay);
                }
                Phase::Connect => self.connect(),
                Phase::Streaming => {
                    if let Some(item) = self.parser.next_item() {
                        if let Some(item) = self.map_item(item) {
                            return Some(item);
                        }
                        continue;
                    }
                    let Some(body) = self.body.as_mut() else {
                        self.phase = Phase::Connect;
                        continue;
                    };
                    if let Err(reason) = body.read_into(&mut self.parser) {
                        if !self.shared.interrupted() {
                            self.lost(reason);
                        }
                    }
                }
            }
        }
    }
}

impl FusedIterator for Client {}

impl Drop for Client {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        self.shared.interrupt(&mut state);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connect next.
    Connect,
    /// Read the body.
    Streaming,
    /// Sleep this long, then connect.
    Wait(Duration),
    /// Stopped for good.
    Done,
}

/// What a connection attempt gave.
enum Opened {
    Stream(Box<Body>, Connected),
    NoContent,
}

/// Why a connection attempt gave nothing.
enum Failure {
    /// Transient: retry after the delay.
    Retry(Disconnect),
    /// Permanent: yield the error and stop.
    Final(ClientError),
    /// The client was closed or restarted meanwhile.
    Interrupted,
}

/// The request as it stands after the redirects so far.
struct Hop {
    method: String,
    /// False once a redirect turned the request into a `GET`.
    send_body: bool,
    /// True once a redirect went to another host or port.
    cross_origin: bool,
}

/// Whether the essence of a `Content-Type` is `text/event-stream`.
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("text/event-stream")
}

/// Why a custom header cannot be sent, if it cannot.
fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    if !http::valid_field(name, value) {
        return Err("not a field line a server accepts");
    }
    let owned = |n: &str| name.eq_ignore_ascii_case(n);
    if owned("content-length") || owned("transfer-encoding") {
        return Err("set by the client from the body");
    }
    if owned("last-event-id") {
        return Err("set by the client: use last_event_id()");
    }
    Ok(())
}

/// A `Retry-After` value (RFC 9110 10.2.3: "HTTP-date / delay-seconds") as
/// a delay from `now`: `delay-seconds` is `1*DIGIT`; of the HTTP-date forms
/// (5.6.7), the IMF-fixdate one that senders must use, such as `Sun, 06 Nov
/// 1994 08:49:37 GMT` (a date past is no delay). `None` when invalid.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if let Some(seconds) = parse_decimal(value) {
        return Some(Duration::from_secs(seconds));
    }
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = value.split([' ', ':']).collect();
    let [day_name, day, month, year, hour, minute, second, "GMT"] = parts[..] else {
        return None;
    };
    let digits = |text: &str, len: usize, max: u64| {
        parse_decimal(text).filter(|&n| text.len() == len && n <= max)
    };
    let month = MONTHS.iter().position(|&m| m == month)? as u64 + 1;
    let (day, year) = (digits(day, 2, 31)?, digits(year, 4, 9999)?);
    let time = digits(hour, 2, 23)? * 3600 + digits(minute, 2, 59)? * 60 + digits(second, 2, 60)?;
    if !DAYS.contains(&day_name) || day == 0 {
        return None;
    }
    // Days since 1970-01-01 (H. Hinnant's days_from_civil), years from March.
    let (y, m) = if month <= 2 {
        (year as i64 - 1, month + 9)
    } else {
        (year as i64, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = ((153 * m + 2) / 5 + day - 1) as i64;
    let days = era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100
        + day_of_year
        - 719_468;
    let at = u64::try_from(days * 86_400).map_or(UNIX_EPOCH, |secs| {
        UNIX_EPOCH + Duration::from_secs(secs + time)
    });
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before the next attempt: `base` after a success; after `n`
/// failures in a row, `base × 2ⁿ` capped at `max(ceiling, base)`, with equal
/// jitter (between half of it and all of it, from `random`).
fn backoff(base: Duration, failures: u32, ceiling: Duration, random: u64) -> Duration {
    if failures == 0 {
        return base;
    }
    let target = base
        .saturating_mul(1 << failures.min(31))
        .min(ceiling.max(base));
    let nanos = target.as_nanos();
    let half = nanos / 2;
    let spread = nanos - half;
    let jitter = u128::from(random) % (spread + 1);
    let total = half + jitter;
    Duration::new(
        u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX),
        (total % 1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in [
            "text/event-stream",
            "TEXT/Event-Stream",
            "text/event-stream;",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;charset=windows-1252",
        ] {
            assert!(is_event_stream(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/event-streams",
            "x bogus",
            "",
            "text/event-stream,text/html",
        ] {
            assert!(!is_event_stream(bad), "{bad}");
        }
    }

    #[test]
    fn request_head() {
        let client = Client::builder("http://h:8080/s?x")
            .header("Accept", "text/event-stream, */*")
            .header("Authorization", "Bearer t")
            .header("Content-Type", "text/plain")
            .header("X-Two", "1")
            .header("x-two", "2")
            .method("POST")
            .body("hi")
            .build()
            .unwrap();
        let config = &client.config;
        let mut hop = Hop {
            method: "POST".into(),
            send_body: true,
            cross_origin: false,
        };
        let text = |hop: &Hop, id: &str| {
            String::from_utf8(connect::request_bytes(config, &client.url, hop, id)).unwrap()
        };
        assert_eq!(
            text(&hop, "7"),
            "POST /s?x HTTP/1.1\r\nHost: h:8080\r\nCache-Control: no-cache\r\n\
             Last-Event-ID: 7\r\nAccept: text/event-stream, */*\r\nAuthorization: Bearer t\r\n\
             Content-Type: text/plain\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
        hop.method = "GET".into();
        hop.send_body = false;
        hop.cross_origin = true;
        assert_eq!(
            text(&hop, ""),
            "GET /s?x HTTP/1.1\r\nHost: h:8080\r\nCache-Control: no-cache\r\n\
             Accept: text/event-stream, */*\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
        );
        // The request parses with the server's strict parser.
        let limits = http::Limits::default();
        hop.send_body = true;
        assert!(matches!(
            http::parse_head(text(&hop, "x").as_bytes(), &limits),
            Ok(http::Status::Complete(_))
        ));
    }

    #[test]
    fn backoff_grows_with_equal_jitter() {
        let base = Duration::from_millis(100);
        let ceiling = Duration::from_secs(1);
        assert_eq!(backoff(base, 0, ceiling, 12345), base);
        for random in [0, 1, 7_777_777, u64::MAX / 3, u64::MAX] {
            for (failures, low, high) in [
                (1, 100, 200),
                (2, 200, 400),
                (3, 400, 800),
                (4, 500, 1000),
                (40, 500, 1000),
            ] {
                let d = backoff(base, failures, ceiling, random);
                assert!(
                    d >= Duration::from_millis(low) && d <= Duration::from_millis(high),
                    "{failures}: {d:?}"
                );
            }
        }
        assert_eq!(backoff(Duration::ZERO, 5, ceiling, 99), Duration::ZERO);
        // A caller's delay above the ceiling is the cap itself.
        let long = Duration::from_secs(120);
        assert!(backoff(long, 3, ceiling, 5) <= long);
        assert!(backoff(Duration::MAX, 3, ceiling, u64::MAX) <= Duration::MAX);
    }

    #[test]
    fn retry_after_values() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let after = |v: &str| parse_retry_after(v, now);
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(after("0"), secs(0));
        assert_eq!(after(" 120 "), secs(120));
        assert_eq!(after("Sun, 06 Nov 1994 08:49:37 GMT"), secs(0));
        assert_eq!(after("Sun, 06 Nov 1994 08:49:39 GMT"), secs(2));
        assert_eq!(after("Mon, 07 Nov 1994 09:50:38 GMT"), secs(86_400 + 3661));
        assert_eq!(after("Thu, 01 Mar 1996 00:00:00 GMT"), secs(41_526_623)); // past 29 Feb
        assert_eq!(
            after("Sat, 05 Nov 1994 08:49:37 GMT"),
            secs(0),
            "a date past"
        );
        assert_eq!(after("Thu, 01 Jan 1970 00:00:00 GMT"), secs(0));
        assert_eq!(after("Mon, 01 Jan 0001 00:00:00 GMT"), secs(0));
        assert!(
            after("Fri, 31 Dec 9999 23:59:60 GMT").is_some_and(|d| d.as_secs() > 252_000_000_000)
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "1 s",
            "99999999999999999999999",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994  08:49:37 GMT",
        ] {
            assert_eq!(after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reconnection_time_is_clamped() {
        let mut client = Client::builder("http://h/")
            .retry(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(client.reconnection_time(), Duration::ZERO);
        client.parser.feed(b"retry: 0\n");
        assert_eq!(client.parser.next_item(), None);
        assert_eq!(client.reconnection_time(), Duration::from_millis(100));
        client.parser.feed(b"retry: 36000000\n");
        assert_eq!(client.parser.next_item(), None);
        assert_eq!(client.reconnection_time(), Duration::from_secs(60));
        client.parser.feed(b"retry: 2500\n");
        assert_eq!(client.parser.next_item(), None);
        assert_eq!(client.reconnection_time(), Duration::from_millis(2500));
    }
}
