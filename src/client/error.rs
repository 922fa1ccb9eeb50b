//! What the client yields, and why it stops or reconnects.

use std::time::Duration;
use std::{fmt, io};

#[cfg(doc)]
use super::{ClientBuilder, CloseHandle};
use crate::http::{self, reason_phrase, ResponseHead};
use crate::parser::MessageEvent;

/// What the client yields. Comments need [`ClientBuilder::comments`]; the
/// connection states need [`ClientBuilder::states`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A dispatched event.
    Event(MessageEvent),
    /// A comment line, without the colon and one leading space.
    Comment(String),
    /// The server answered `200` with an event stream (and the
    /// [response check](ClientBuilder::check_response) accepted it).
    Connected(Connected),
    /// The connection ended or failed; a `Retrying` follows, except after
    /// [`Disconnect::NoContent`], the last item.
    Disconnected(Disconnect),
    /// The client connects again after this delay.
    Retrying(Duration),
}

/// The head of a `200` event stream and the URL it came from, after redirects.
#[derive(Clone, Debug)]
pub struct Connected {
    pub(super) head: ResponseHead,
    pub(super) url: String,
}

impl Connected {
    /// The status code (`200`).
    #[must_use]
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The fields in order, values trimmed (RFC 9110 5.5), bad UTF-8 replaced.
    #[must_use]
    pub fn headers(&self) -> &[(String, String)] {
        self.head.headers()
    }

    /// The first field named `name` (ignoring case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The URL that answered, as `http://host[:port]/path?query`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A [response check](ClientBuilder::check_response)'s refusal, with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
    retry: bool,
}

impl Refusal {
    /// Refuses for now: the client backs off and reconnects ([`Disconnect::Refused`]).
    pub fn retry(reason: impl Into<String>) -> Refusal {
        Refusal { reason: reason.into(), retry: true }
    }

    /// Refuses for good: the client stops ([`ClientError::Refused`]).
    pub fn fatal(reason: impl Into<String>) -> Refusal {
        Refusal { reason: reason.into(), retry: false }
    }

    /// The caller's reason.
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the response check refused the answer: {:?}", self.reason)
    }
}

/// Why a connection ended or could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum Disconnect {
    /// The body ended: closed, last chunk, or all of its `Content-Length`.
    Ended,
    /// `204 No Content`: stop reconnecting. The last item.
    NoContent,
    /// Resolving or connecting failed, or [`ClientBuilder::connect_timeout`] passed.
    Connect(io::Error),
    /// Reading or writing failed, or the server closed mid-answer.
    Io(io::Error),
    /// Nothing arrived for [`ClientBuilder::idle_timeout`].
    IdleTimeout(Duration),
    /// The answer was not valid HTTP/1.x.
    Protocol(http::Error),
    /// The response heads, `1xx` included, were larger than 64 KiB.
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// No complete response head within [`ClientBuilder::head_timeout`].
    HeadTimeout(Duration),
    /// `5xx` or `429`, retried ([`ClientBuilder::retry_server_errors`]).
    Status {
        /// The status code.
        status: u16,
        /// The wait a valid `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// [`CloseHandle::restart`] was called.
    Restart,
    /// The response check refused with [`Refusal::retry`].
    Refused(Refusal),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ended => f.write_str("the server ended the stream"),
            Self::NoContent => f.write_str("the server answered 204 No Content (stop)"),
            Self::Connect(e) => write!(f, "could not connect: {e}"),
            Self::Io(e) => write!(f, "connection lost: {e}"),
            Self::IdleTimeout(d) => write!(f, "nothing received for {} ms", d.as_millis()),
            Self::Protocol(why) => write!(f, "invalid response: {}", why.description()),
            Self::HeadTooLarge { limit } => write!(f, "response head larger than {limit} bytes"),
            Self::HeadTimeout(d) => write!(f, "no complete response head in {} ms", d.as_millis()),
            Self::Status { status, retry_after: None } => f.write_str(&answered(*status)),
            Self::Status { status, retry_after: Some(d) } => {
                write!(f, "{} (Retry-After: {} s)", answered(*status), d.as_secs())
            }
            Self::Restart => f.write_str("restart requested"),
            Self::Refused(refusal) => refusal.fmt(f),
        }
    }
}

/// Why the client failed: from [`ClientBuilder::build`], or the last item
/// of the iterator, except [`EventTooLarge`](ClientError::EventTooLarge).
/// Untrusted text is shown quoted and escaped: every message is one line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// Not a usable `http://` URL.
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `https://` URL, given or in a `Location`: std has no TLS. Run a
    /// local TLS-terminating proxy and connect to it with `http://`.
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
    /// A status other than 200, 204, a redirect or a retried one.
    Status {
        /// The status code.
        status: u16,
        /// Its `Content-Type`.
        content_type: Option<String>,
    },
    /// A `200` whose content type is not `text/event-stream`.
    ContentType {
        /// Its `Content-Type`.
        content_type: Option<String>,
    },
    /// A redirect without a `Location`, or an empty one.
    MissingLocation {
        /// The redirect status.
        status: u16,
    },
    /// A redirect whose `Location` is not `http://` or a relative reference.
    InvalidLocation {
        /// The redirect status.
        status: u16,
        /// The `Location` value.
        location: String,
    },
    /// More than [`ClientBuilder::max_redirects`] redirects in a row.
    TooManyRedirects {
        /// The limit in force.
        limit: u32,
    },
    /// An event over [`ClientBuilder::max_event_size`]; not final, it is skipped.
    EventTooLarge {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// The response check refused with [`Refusal::fatal`].
    Refused(Refusal),
}

impl ClientError {
    /// Whether the client stops after this error (all but `EventTooLarge`).
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(self, ClientError::EventTooLarge { .. })
    }
}

/// `the server answered 404 Not Found`.
fn answered(status: u16) -> String {
    format!("the server answered {status} {}", reason_phrase(status))
}

/// `Content-Type "..."` or `no Content-Type`.
fn show_type(content_type: &Option<String>) -> String {
    content_type.as_ref().map_or("no Content-Type".into(), |t| format!("Content-Type {t:?}"))
}

error_display!(ClientError(e, f) => match e {
    Self::Url { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
    Self::Https { url } => write!(f, "{url:?}: no TLS; use http:// via stunnel or nginx"),
    Self::Method { method } => write!(f, "invalid HTTP method {method:?}: not a token"),
    Self::Header { name, reason } => write!(f, "invalid request header {name:?}: {reason}"),
    Self::Status { status, content_type: t } => {
        write!(f, "{} ({}), not an event stream", answered(*status), show_type(t))
    }
    Self::ContentType { content_type: t } => {
        write!(f, "{} with {}, not text/event-stream", answered(200), show_type(t))
    }
    Self::MissingLocation { status } => {
        write!(f, "{} without a Location header", answered(*status))
    }
    Self::InvalidLocation { status, location } => {
        write!(f, "{} with an unusable Location {location:?}", answered(*status))
    }
    Self::TooManyRedirects { limit } => write!(f, "more than {limit} redirects in a row"),
    Self::EventTooLarge { limit } => write!(f, "skipped an event larger than {limit} bytes"),
    Self::Refused(refusal) => refusal.fmt(f),
});
