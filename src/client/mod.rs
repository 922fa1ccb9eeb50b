//! The client: a blocking `EventSource` that reconnects and resumes.
//!
//! [`Client`] connects to an `http://` URL, checks the answer as a
//! browser's `EventSource` does, parses the body with the crate's
//! [`Parser`] as it arrives, and is an [`Iterator`] over what it receives.
//! The wire rules and the reconnect with `Last-Event-ID` are in the crate
//! docs; what this client adds (WHATWG HTML 9.2.2, 9.2.3):
//!
//! * `200` with a `text/event-stream` essence is the stream; another type
//!   "fails the connection". `204` stops. `301`/`302`/`303`/`307`/`308` are
//!   followed as Fetch does (a `303`, or a `301`/`302` to a `POST`, becomes a
//!   body-less `GET`; another origin loses `Authorization`, `Cookie`,
//!   `Proxy-Authorization` and a custom `Host`). `1xx` is skipped; `5xx` and
//!   `429` are retried, honouring `Retry-After`.
//! * Every transient problem reconnects to the **original** URL after the
//!   reconnection time, `× 2ⁿ` after n failures in a row (capped, with equal
//!   jitter: "optionally, wait some more"). Only [`ClientError::EventTooLarge`]
//!   is not final. `https://` is refused: std has no TLS (use a local proxy).
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
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{self, Framing, ResponseHead};
use crate::parser::{Item, ParseError, Parser};
use crate::scan::parse_decimal;
use connect::{exchange, Body, Shared};
pub use error::{ClientError, Connected, Disconnect, Received, Refusal};
use url::Url;

mod connect;
mod error;
mod url;

/// The shortest socket timeout (the standard library refuses zero).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> ClientBuilder {
            self.$name = value;
            self
        }
    )*};
}

/// Settings for a [`Client`], from [`Client::builder`]. Setters never fail:
/// [`build`](ClientBuilder::build) reports the first invalid value.
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
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Adds a request header (repeats are all sent, in order); `Accept`,
    /// `Cache-Control` or `Host` replace the client's own. `build` fails with
    /// [`ClientError::Header`] for a field line a server would refuse (the
    /// same tables as [`http::parse_head`]: nothing can be injected), and for
    /// `Content-Length`, `Transfer-Encoding` and `Last-Event-ID`, which the
    /// client sets.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> ClientBuilder {
        match check_header(name, value) {
            Ok(()) => self.headers.push((name.to_owned(), value.to_owned())),
            Err(reason) => self.fail(ClientError::Header { name: name.to_owned(), reason }),
        }
        self
    }

    /// The request method, a token. Default `GET`.
    #[must_use]
    pub fn method(mut self, method: &str) -> ClientBuilder {
        if !http::is_token(method) {
            self.fail(ClientError::Method { method: method.to_owned() });
        }
        self.method = method.to_owned();
        self
    }

    /// A body, sent with its `Content-Length` on every connection. Default
    /// none (`Content-Length: 0` for methods but `GET` and `HEAD`).
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> ClientBuilder {
        self.body = Some(body.into());
        self
    }

    /// The last event ID to start from. Default empty.
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

    setters! {
        /// How long resolving and connecting may take together. Default 10 s;
        /// at least 1 ms.
        connect_timeout: Duration;
        /// The connection is taken for dead after this long without a byte,
        /// keep-alives included; also bounds each blocked write. Protects
        /// against half-open connections. Default 45 s (three missed 15 s
        /// keep-alives); `None` waits forever; at least 1 ms.
        idle_timeout: Option<Duration>;
        /// How long the whole response head may take, `1xx` answers included.
        /// Protects against a head dripped a byte at a time or endless `1xx`
        /// (which the idle timeout never sees). Default 30 s; at least 1 ms.
        head_timeout: Duration;
        /// The reconnection time until the server sends `retry:`. Default 3 s,
        /// as in browsers; used as given (zero reconnects at once).
        retry: Duration;
        /// Whether `5xx` and `429` are retried (at least as long as
        /// `Retry-After` asks, within the retry bounds) rather than final, as
        /// in browsers. Default `true`: clients must not stop in an overload.
        retry_server_errors: bool;
        /// How many redirects are followed in a row. Protects against loops.
        /// Default 10; 0 follows none.
        max_redirects: u32;
        /// The largest event, as [`Parser::max_event_size`] counts; a larger
        /// one is skipped. Protects against an endless event. Default 16 MiB.
        max_event_size: usize;
        /// Also yield comments. Default off.
        comments: bool;
        /// Also yield the connection states. Default off.
        states: bool;
    }

    /// The bounds of a server's `retry:` and the ceiling of the backoff.
    /// Protects against `retry: 0` (a tight loop) and a typo (an hour-long
    /// sleep). Default 100 ms to 60 s; a floor above the ceiling raises it.
    #[must_use]
    pub fn retry_bounds(mut self, floor: Duration, ceiling: Duration) -> ClientBuilder {
        (self.retry_floor, self.retry_ceiling) = (floor, ceiling);
        self
    }

    /// A check of each event stream's head, after the client's own. Default
    /// none.
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

    /// Checks the settings and the URL; nothing is sent before the first
    /// [`Iterator::next`].
    ///
    /// ```
    /// use stdsse::client::{Client, ClientError};
    ///
    /// let error = Client::builder("https://example.com/events").build().unwrap_err();
    /// assert!(matches!(error, ClientError::Https { .. }));
    /// ```
    pub fn build(mut self) -> Result<Client, ClientError> {
        let url = Url::parse(&self.url)?;
        if let Some(error) = self.error {
            return Err(error);
        }
        self.connect_timeout = self.connect_timeout.max(MIN_TIMEOUT);
        self.head_timeout = self.head_timeout.max(MIN_TIMEOUT);
        self.idle_timeout = self.idle_timeout.map(|t| t.max(MIN_TIMEOUT));
        self.retry_ceiling = self.retry_ceiling.max(self.retry_floor);
        let parser = Parser::new()
            .last_event_id(self.last_event_id.clone())
            .max_event_size(self.max_event_size);
        Ok(Client {
            url,
            config: self,
            shared: Arc::default(),
            parser,
            body: None,
            queue: VecDeque::new(),
            phase: Phase::Connect,
            failures: 0,
        })
    }

    /// Keeps the first error.
    fn fail(&mut self, error: ClientError) {
        self.error.get_or_insert(error);
    }
}

/// A blocking event-stream client (see the [module docs](self)). The
/// iterator ends after a final error, a `204`, or [`CloseHandle::close`];
/// it is fused.
pub struct Client {
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

/// Stops or restarts a [`Client`] from another thread.
#[derive(Clone, Debug)]
pub struct CloseHandle {
    shared: Arc<Shared>,
}

impl CloseHandle {
    /// Closes the client: the connection, a connection attempt or the sleep
    /// before a reconnect is cut short, and the iterator returns `None` from
    /// then on, at once even if it blocks in another thread.
    pub fn close(&self) {
        self.shared.interrupt(|state| state.closed = true);
    }

    /// Drops the connection (or the attempt, or the sleep) and connects
    /// again at once, with `Last-Event-ID`: for when the application knows
    /// the stream is stale. The backoff starts over; a cut event is dropped;
    /// it shows as [`Disconnect::Restart`] and `Retrying(0)`. Does nothing
    /// once the client has stopped.
    pub fn restart(&self) {
        self.shared.interrupt(|state| state.restart |= !state.closed);
    }

    /// Whether [`close`](CloseHandle::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl Client {
    /// Starts building a client for `url` (checked by `build`), with the
    /// defaults each setter documents.
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
        CloseHandle { shared: Arc::clone(&self.shared) }
    }

    /// What the next request sends as `Last-Event-ID` (nothing when empty);
    /// save it to resume in another process.
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        self.parser.get_last_event_id()
    }

    /// The server's last `retry:` within the bounds, or the caller's
    /// [`retry`](ClientBuilder::retry); the backoff comes on top.
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
            Ok(Some((body, connected))) => {
                self.failures = 0;
                self.parser.reset();
                self.body = Some(*body);
                self.phase = Phase::Streaming;
                self.state(Received::Connected(connected));
            }
            Ok(None) => {
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
            Err(Failure::Interrupted) => {} // `next` sees it
        }
    }

    /// One connection attempt, redirects included: the stream, or `None`
    /// for `204 No Content`.
    #[allow(clippy::type_complexity)]
    fn open(&mut self) -> Result<Option<(Box<Body>, Connected)>, Failure> {
        let config = &self.config;
        let mut url = self.url.clone();
        let mut hop = Hop {
            method: config.method.clone(),
            send_body: true,
            cross_origin: false,
            redirects: 0,
        };
        loop {
            let stream = self.shared.connect(&url, config.connect_timeout)?;
            let step = exchange(config, &stream, &url, &hop, self.parser.get_last_event_id())
                .map_err(Failure::Retry)
                .and_then(|(head, rest)| Ok((judge(config, head, &url, &mut hop)?, rest)));
            if let Ok((Step::Stream(framing, connected), rest)) = step {
                let body = Body::new(stream, framing, rest, config.idle_timeout);
                return Ok(Some((Box::new(body), connected)));
            }
            self.shared.release(&stream);
            match step?.0 {
                Step::Redirect(next) => url = next,
                _ => return Ok(None),
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
    /// `Retry-After` (within the retry bounds) asks; nothing after a restart.
    fn schedule(&mut self, reason: Disconnect) {
        let (floor, ceiling) = (self.config.retry_floor, self.config.retry_ceiling);
        let random = crate::util::random_u64();
        let grown = backoff(self.reconnection_time(), self.failures, ceiling, random);
        let delay = match reason {
            Disconnect::Restart => Duration::ZERO,
            Disconnect::Status { retry_after: Some(asked), .. } => {
                grown.max(asked.clamp(floor, ceiling))
            }
            _ => grown,
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
                Some(Err(ClientError::EventTooLarge { limit: self.config.max_event_size }))
            }
        }
    }
}

impl Iterator for Client {
    type Item = Result<Received, ClientError>;

    /// The next item, blocking until there is one; `None` once stopped.
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
        self.shared.interrupt(|_| {});
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connect,
    Streaming,
    /// Sleep this long, then connect.
    Wait(Duration),
    /// Stopped for good.
    Done,
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
    redirects: u32,
}

/// What an answer leads to.
enum Step {
    Stream(Framing, Connected),
    NoContent,
    Redirect(Url),
}

/// Judges a final response head to the request `hop` made to `url`.
fn judge(
    config: &ClientBuilder,
    head: ResponseHead,
    url: &Url,
    hop: &mut Hop,
) -> Result<Step, Failure> {
    let content_type = head.header("content-type").map(str::to_owned);
    let status = head.status();
    match status {
        200 if !content_type.as_deref().is_some_and(is_event_stream) => {
            Err(Failure::Final(ClientError::ContentType { content_type }))
        }
        200 => {
            let framing = head
                .body_framing(&hop.method)
                .map_err(|e| Failure::Retry(Disconnect::Protocol(e)))?;
            let connected = Connected { head, url: url.to_string() };
            match config.check.as_ref().map(|check| check(&connected)) {
                Some(Err(refusal)) if refusal.is_retry() => {
                    Err(Failure::Retry(Disconnect::Refused(refusal)))
                }
                Some(Err(refusal)) => Err(Failure::Final(ClientError::Refused(refusal))),
                _ => Ok(Step::Stream(framing, connected)),
            }
        }
        204 => Ok(Step::NoContent),
        301 | 302 | 303 | 307 | 308 => {
            if hop.redirects == config.max_redirects {
                let limit = config.max_redirects;
                return Err(Failure::Final(ClientError::TooManyRedirects { limit }));
            }
            hop.redirects += 1;
            let location = head.header("location").unwrap_or("").trim();
            if location.is_empty() {
                return Err(Failure::Final(ClientError::MissingLocation { status }));
            }
            let next = url.join(location).map_err(|e| {
                Failure::Final(match e {
                    ClientError::Url { .. } => {
                        ClientError::InvalidLocation { status, location: location.to_owned() }
                    }
                    https => https,
                })
            })?;
            // Fetch, HTTP-redirect fetch, steps 11 and 13.
            if (matches!(status, 301 | 302) && hop.method == "POST")
                || (status == 303 && !matches!(hop.method.as_str(), "GET" | "HEAD"))
            {
                hop.method = "GET".into();
                hop.send_body = false;
            }
            hop.cross_origin |= (next.host.as_str(), next.port) != (url.host.as_str(), url.port);
            Ok(Step::Redirect(next))
        }
        429 | 500..=599 if config.retry_server_errors => {
            let retry_after =
                head.header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now()));
            Err(Failure::Retry(Disconnect::Status { status, retry_after }))
        }
        _ => Err(Failure::Final(ClientError::Status { status, content_type })),
    }
}

/// Whether the essence of a `Content-Type` is `text/event-stream`.
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim_matches([' ', '\t']).eq_ignore_ascii_case("text/event-stream")
}

/// Why a custom header cannot be sent, if it cannot.
fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    let owned = |n: &str| name.eq_ignore_ascii_case(n);
    if !http::valid_field(name, value) {
        Err("not a field line a server accepts")
    } else if owned("content-length") || owned("transfer-encoding") {
        Err("set by the client from the body")
    } else if owned("last-event-id") {
        Err("set by the client: use last_event_id()")
    } else {
        Ok(())
    }
}

/// A `Retry-After` value (RFC 9110 10.2.3: "HTTP-date / delay-seconds") as
/// a delay from `now`: `1*DIGIT` seconds, or the IMF-fixdate that senders
/// must use (5.6.7), such as `Sun, 06 Nov 1994 08:49:37 GMT` (a date past is
/// no delay). `None` when invalid.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if let Some(seconds) = parse_decimal(value) {
        return Some(Duration::from_secs(seconds));
    }
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
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
    let (y, m) = if month <= 2 { (year as i64 - 1, month + 9) } else { (year as i64, month - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = ((153 * m + 2) / 5 + day - 1) as i64;
    let days = era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100
        + day_of_year
        - 719_468;
    let at = u64::try_from(days * 86_400)
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs + time));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before the next attempt: `base` after a success; after `n`
/// failures in a row, `base × 2ⁿ` capped at `max(ceiling, base)`, with equal
/// jitter (between half of it and all of it, from `random`).
fn backoff(base: Duration, failures: u32, ceiling: Duration, random: u64) -> Duration {
    if failures == 0 {
        return base;
    }
    let target = base.saturating_mul(1 << failures.min(31)).min(ceiling.max(base)).as_nanos();
    let half = target / 2;
    let total = half + u128::from(random) % (target - half + 1);
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
        let ok = ["TEXT/Event-Stream", "text/event-stream;", " text/event-stream ;charset=x"];
        let bad = ["text/plain", "text/event-streams", "", "text/event-stream,text/html"];
        assert!(ok.into_iter().all(is_event_stream));
        assert!(!bad.into_iter().any(is_event_stream));
    }

    #[test]
    fn backoff_grows_with_equal_jitter() {
        let (base, ceiling) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(base, 0, ceiling, 12345), base);
        for random in [0, 1, 7_777_777, u64::MAX / 3, u64::MAX] {
            for (n, low, high) in [(1, 100, 200), (3, 400, 800), (4, 500, 1000), (40, 500, 1000)] {
                let d = backoff(base, n, ceiling, random).as_millis();
                assert!(d >= low && d <= high, "{n}: {d}");
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
        let after = |v: &str| parse_retry_after(v, now).map(|d| d.as_secs());
        for (value, secs) in [
            ("0", 0),
            (" 120 ", 120),
            ("Sun, 06 Nov 1994 08:49:37 GMT", 0),
            ("Sun, 06 Nov 1994 08:49:39 GMT", 2),
            ("Mon, 07 Nov 1994 09:50:38 GMT", 86_400 + 3661),
            ("Thu, 01 Mar 1996 00:00:00 GMT", 41_526_623), // past 29 Feb
            ("Sat, 05 Nov 1994 08:49:37 GMT", 0),          // a date past
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Mon, 01 Jan 0001 00:00:00 GMT", 0),
            ("Fri, 31 Dec 9999 23:59:60 GMT", 252_618_189_023),
        ] {
            assert_eq!(after(value), Some(secs), "{value:?}");
        }
        let bad = "|-1|1.5|1 s|99999999999999999999999|Sunday, 06-Nov-94 08:49:37 GMT|\
                   Sun Nov  6 08:49:37 1994|Sun, 06 Nov 1994 08:49:37 UTC|\
                   sun, 06 Nov 1994 08:49:37 GMT|Sun, 6 Nov 1994 08:49:37 GMT|\
                   Sun, 06 nov 1994 08:49:37 GMT|Sun, 06 Nov 94 08:49:37 GMT|\
                   Sun, 00 Nov 1994 08:49:37 GMT|Sun, 06 Nov 1994 24:00:00 GMT|\
                   Sun, 06 Nov 1994 08:60:00 GMT|Sun, 06 Nov 1994 08:49 GMT|\
                   Sun, 06 Nov 1994 08:49:37:00 GMT|Sun, 06 Nov 1994  08:49:37 GMT";
        for bad in bad.split('|') {
            assert_eq!(after(bad), None, "{bad:?}");
        }
    }
}
