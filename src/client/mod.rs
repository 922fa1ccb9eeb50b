//! The client: a blocking `EventSource` that reconnects and resumes.
//!
//! [`Client`] checks the answer as a browser's `EventSource` does, parses
//! the body with [`Parser`], and is an [`Iterator`] over what it receives.
//! Beyond the crate docs' wire rules (WHATWG HTML 9.2.2, 9.2.3):
//!
//! * `200` with a `text/event-stream` essence is the stream; another type
//!   "fails the connection". `204` stops. `301`/`302`/`303`/`307`/`308` are
//!   followed as Fetch does (a `303`, or a `301`/`302` to a `POST`, becomes a
//!   body-less `GET`; another origin loses `Authorization`, `Cookie`,
//!   `Proxy-Authorization` and a custom `Host`). `1xx` is skipped; `5xx` and
//!   `429` are retried, honouring `Retry-After`.
//! * A server's id that no `Last-Event-ID` header can carry (see
//!   [`Event::id`](crate::Event::id)) ends the client with
//!   [`ClientError::Header`]: it is never sent, nor dropped silently.
//! * Every transient problem reconnects to the **original** URL after the
//!   reconnection time, `× 2ⁿ` after n failures in a row (capped, with equal
//!   jitter: "optionally, wait some more").
//!
//! ```no_run
//! use stdsse::client::{Client, Received, Refusal};
//! use std::time::Duration;
//!
//! let client = Client::builder("http://127.0.0.1:8080/events")
//!     .header("Authorization", "Bearer 0123")
//!     .retry(Duration::from_secs(1))
//!     .check_response(|answer| match answer.header("x-api-version") {
//!         Some("2") => Ok(()),
//!         other => Err(Refusal::fatal(format!("API version {other:?}, not 2"))),
//!     })
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
use crate::parser::{Item, Parser};
use crate::scan::parse_decimal;
use connect::{exchange, Body, Shared};
pub use error::{ClientError, Connected, Disconnect, Received, Refusal};
use url::Url;

mod connect;
mod error;
mod url;

/// Why `id` cannot be sent as the `Last-Event-ID` (what [`Event::id`](crate::Event::id) refuses).
fn unsendable(id: &str) -> Option<ClientError> {
    let reason = "an id that the header cannot carry (see Event::id)";
    let error = ClientError::Header { name: "Last-Event-ID".into(), reason };
    crate::event::check(crate::Field::Id, id.to_owned()).err().map(|_| error)
}

/// The shortest socket timeout (the standard library refuses zero).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

builder! {
    /// Settings for a [`Client`], from [`Client::builder`]. Setters never fail:
    /// [`build`](ClientBuilder::build) reports the first invalid value.
    #[derive(Clone)]
    pub struct ClientBuilder {
        url: String = String::new(),
        method: String = "GET".into(),
        headers: Vec<(String, String)> = Vec::new(),
        body: Option<Vec<u8>> = None,
        last_event_id: String = String::new(),
        connect_timeout: Duration = Duration::from_secs(10),
        idle_timeout: Option<Duration> = Some(Duration::from_secs(45)),
        head_timeout: Duration = Duration::from_secs(30),
        retry: Duration = Duration::from_secs(3),
        retry_floor: Duration = Duration::from_millis(100),
        retry_ceiling: Duration = Duration::from_secs(60),
        retry_server_errors: bool = true,
        max_redirects: u32 = 10,
        max_event_size: usize = 16 * 1024 * 1024,
        comments: bool = false,
        states: bool = false,
        check: Option<Check> = None,
        error: Option<ClientError> = None,
    }
}

type Check = Arc<dyn Fn(&Connected) -> Result<(), Refusal> + Send + Sync>;

impl fmt::Debug for ClientBuilder {
    /// Only the URL: headers and the body may hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder").field("url", &self.url).finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Adds a request header (repeats are all sent, in order); `Accept`,
    /// `Cache-Control` or `Host` replace the client's own. `build` fails with
    /// [`ClientError::Header`] for a field line a server would refuse (nothing
    /// can be injected), and for `Content-Length`, `Transfer-Encoding` and
    /// `Last-Event-ID`, which the client sets.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> ClientBuilder {
        let reason = match name.to_ascii_lowercase().as_str() {
            _ if !http::valid_field(name, value) => "not a field line a server accepts",
            "content-length" | "transfer-encoding" => "set by the client from the body",
            "last-event-id" => "set by the client: use last_event_id()",
            "host" if self.headers.iter().any(|h| h.0.eq_ignore_ascii_case(name)) => "given twice",
            _ => {
                self.headers.push((name.to_owned(), value.to_owned()));
                return self;
            }
        };
        self.error.get_or_insert(ClientError::Header { name: name.to_owned(), reason });
        self
    }

    /// The request method, a token. Default `GET`.
    #[must_use]
    pub fn method(mut self, method: &str) -> ClientBuilder {
        if !http::is_token(method) {
            self.error.get_or_insert(ClientError::Method { method: method.to_owned() });
        }
        self.method = method.to_owned();
        self
    }

    /// The last event ID to start from. Default empty.
    #[must_use]
    pub fn last_event_id(mut self, id: &str) -> ClientBuilder {
        self.error = self.error.take().or(unsendable(id));
        self.last_event_id = id.to_owned();
        self
    }

    setters! {
        /// How long resolving and connecting may take together. Default 10 s;
        /// at least 1 ms.
        connect_timeout(timeout: Duration) { connect_timeout: timeout }
        /// The connection is taken for dead after this long without a byte,
        /// keep-alives included; also bounds each blocked write. Protects
        /// against half-open connections. Default 45 s (three missed 15 s
        /// keep-alives); `None` waits forever; at least 1 ms.
        idle_timeout(timeout: Option<Duration>) { idle_timeout: timeout }
        /// How long the whole response head may take, `1xx` answers included.
        /// Protects against a head dripped a byte at a time or endless `1xx`
        /// (which the idle timeout never sees). Default 30 s; at least 1 ms.
        head_timeout(timeout: Duration) { head_timeout: timeout }
        /// The reconnection time until the server sends `retry:`. Default 3 s,
        /// as in browsers; used as given (zero reconnects at once).
        retry(delay: Duration) { retry: delay }
        /// Whether `5xx` and `429` are retried (honouring `Retry-After`), not final
        /// as in browsers (the standard fails on any status but 200). Default `true`.
        retry_server_errors(retry: bool) { retry_server_errors: retry }
        /// How many redirects are followed in a row. Protects against loops.
        /// Default 10; 0 follows none.
        max_redirects(n: u32) { max_redirects: n }
        /// The largest event, as [`Parser::max_event_size`] counts; a larger
        /// one is skipped. Protects against an endless event. Default 16 MiB.
        max_event_size(bytes: usize) { max_event_size: bytes }
        /// Also yield comments. Default off.
        comments(on: bool) { comments: on }
        /// Also yield the connection states. Default off.
        states(on: bool) { states: on }
        /// The bounds of a server's `retry:` and the ceiling of the backoff.
        /// Protects against `retry: 0` (a tight loop) and a typo (an hour-long
        /// sleep). Default 100 ms to 60 s; a floor above the ceiling raises it.
        retry_bounds(floor: Duration, ceiling: Duration) {
            retry_floor: floor, retry_ceiling: ceiling
        }
        /// A body, sent with its `Content-Length` on every connection. Default
        /// none (`Content-Length: 0` for methods but `GET` and `HEAD`).
        body(body: impl Into<Vec<u8>>) { body: Some(body.into()) }
        /// A check of each event stream's head, after the client's own (as in
        /// the [module example](self)). Default none.
        check_response(check: impl Fn(&Connected) -> Result<(), Refusal> + Send + Sync + 'static) {
            check: Some(Arc::new(check))
        }
    }

    /// Checks the settings and the URL (`https://` is [`ClientError::Https`]);
    /// nothing is sent before the first [`Iterator::next`].
    pub fn build(mut self) -> Result<Client, ClientError> {
        let url = Url::parse(&self.url)?;
        self.error.take().map_or(Ok(()), Err)?;
        self.connect_timeout = self.connect_timeout.max(MIN_TIMEOUT);
        self.head_timeout = self.head_timeout.max(MIN_TIMEOUT);
        self.idle_timeout = self.idle_timeout.map(|t| t.max(MIN_TIMEOUT));
        self.retry_ceiling = self.retry_ceiling.max(self.retry_floor);
        let parser = Parser::new()
            .last_event_id(self.last_event_id.clone())
            .max_event_size(self.max_event_size);
        let (shared, queue) = (Arc::default(), VecDeque::new());
        Ok(Client {
            url,
            config: self,
            shared,
            parser,
            queue,
            phase: Phase::Wait(Duration::ZERO),
            failures: 0,
        })
    }
}

/// A blocking event-stream client (see the [module docs](self)). The
/// iterator ends after a final error, a `204`, or [`CloseHandle::close`];
/// it is fused.
#[derive(Debug)]
pub struct Client {
    config: ClientBuilder,
    url: Url,
    shared: Arc<Shared>,
    parser: Parser,
    /// Items to yield before doing anything else.
    queue: VecDeque<Result<Received, ClientError>>,
    phase: Phase,
    /// Failed attempts since the last successful connection.
    failures: u32,
}

/// Stops or restarts a [`Client`] from another thread.
#[derive(Clone, Debug)]
pub struct CloseHandle {
    shared: Arc<Shared>,
}

impl CloseHandle {
    /// Closes the client: whatever it blocks on is cut short, and the
    /// iterator returns `None` from then on.
    pub fn close(&self) {
        self.shared.interrupt(|state| state.closed = true);
    }

    /// Drops the connection (or the attempt, or the sleep) and connects
    /// again at once, with `Last-Event-ID` and a fresh backoff; a cut event
    /// is dropped. Shows as [`Disconnect::Restart`]; no-op once stopped.
    pub fn restart(&self) {
        self.shared.interrupt(|state| state.restart |= !state.closed);
    }

    /// Whether [`close`](CloseHandle::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Client {
    /// Starts building a client for an `http://` `url` (checked by `build`).
    #[must_use]
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder { url: url.to_owned(), ..ClientBuilder::default() }
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
        let (floor, ceiling) = (self.config.retry_floor, self.config.retry_ceiling);
        self.parser.retry().map_or(self.config.retry, |server| server.clamp(floor, ceiling))
    }

    /// Sleeps `delay`, then connects and sets up what comes next.
    #[inline(never)]
    fn connect(&mut self, delay: Duration) {
        let result = self.shared.sleep(delay).then(|| self.open());
        let Some(result) = result.filter(|_| !self.shared.lock().interrupted()) else {
            return; // whatever the attempt gave: `next` closes or restarts
        };
        match result {
            Ok((mut body, rest, connected)) => {
                self.failures = 0;
                self.parser.reset();
                body.feed(&rest, &mut self.parser);
                self.phase = Phase::Streaming(body);
                self.state(Received::Connected(connected));
                self.drain();
            }
            Err(Failure::NoContent) => {
                self.state(Received::Disconnected(Disconnect::NoContent));
                self.phase = Phase::Done;
            }
            Err(Failure::Final(error)) => {
                self.queue.push_back(Err(error));
                self.phase = Phase::Done;
            }
            Err(Failure::Retry(reason)) => {
                self.failures = self.failures.saturating_add(1);
                self.lost(reason);
            }
        }
    }

    /// One connection attempt, redirects included; the bytes read with the
    /// head come with the body.
    #[inline(never)]
    fn open(&self) -> Result<(Body, Vec<u8>, Connected), Failure> {
        let config = &self.config;
        let (url, method) = (self.url.clone(), config.method.clone());
        let mut hop = Hop { url, method, send_body: true, cross_origin: false };
        unsendable(self.parser.get_last_event_id()).map(Failure::Final).map_or(Ok(()), Err)?;
        for _ in 0..=config.max_redirects {
            let connection = self.shared.connect(&hop.url, config.connect_timeout)?;
            let (head, rest) = exchange(config, &connection, &hop, self.parser.get_last_event_id())
                .map_err(Failure::Retry)?;
            if let Some((framing, connected)) = judge(config, head, &mut hop)? {
                return Ok((Body::new(connection, framing, config.idle_timeout), rest, connected));
            }
        }
        Err(Failure::Final(ClientError::TooManyRedirects { limit: config.max_redirects }))
    }

    /// The connection or the attempt is gone: drops a partial event, queues
    /// what was parsed and the state items, and waits next: the backoff, or
    /// longer if a `Retry-After` (within the retry bounds) asks; nothing
    /// after a restart.
    fn lost(&mut self, reason: Disconnect) {
        self.parser.finish();
        self.drain();
        let (floor, ceiling) = (self.config.retry_floor, self.config.retry_ceiling);
        let random = crate::util::random_u64();
        let grown = backoff(self.reconnection_time(), self.failures, ceiling, random);
        let delay = match reason {
            Disconnect::Restart => Duration::ZERO,
            Disconnect::Status { retry_after: Some(a), .. } => grown.max(a.clamp(floor, ceiling)),
            _ => grown,
        };
        self.state(Received::Disconnected(reason));
        self.state(Received::Retrying(delay));
        self.phase = Phase::Wait(delay);
    }

    fn state(&mut self, item: Received) {
        if self.config.states {
            self.queue.push_back(Ok(item));
        }
    }

    fn drain(&mut self) {
        while let Some(item) = self.parser.next_item() {
            self.queue.push_back(match item {
                Ok(Item::Event(event)) => Ok(Received::Event(event)),
                Ok(Item::Comment(text)) if self.config.comments => Ok(Received::Comment(text)),
                Ok(Item::Comment(_)) => continue,
                Err(_) => Err(ClientError::EventTooLarge { limit: self.config.max_event_size }),
            });
        }
    }
}

impl Iterator for Client {
    type Item = Result<Received, ClientError>;

    /// The next item, blocking until there is one; `None` once stopped.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.shared.lock().closed {
                self.phase = Phase::Done;
                self.queue.clear();
                return None;
            }
            if std::mem::take(&mut self.shared.lock().restart) && !matches!(self.phase, Phase::Done)
            {
                self.failures = 0;
                self.lost(Disconnect::Restart);
            }
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match &mut self.phase {
                Phase::Done => return None,
                &mut Phase::Wait(delay) => self.connect(delay),
                Phase::Streaming(body) => match body.read_into(&mut self.parser) {
                    Ok(()) => self.drain(),
                    Err(reason) if !self.shared.lock().interrupted() => self.lost(reason),
                    Err(_) => {} // `next` closes or restarts
                },
            }
        }
    }
}

impl FusedIterator for Client {}

#[derive(Debug)]
enum Phase {
    /// Sleep this long, then connect.
    Wait(Duration),
    Streaming(Body),
    /// Stopped for good.
    Done,
}

/// Why a connection attempt gave no stream.
enum Failure {
    Retry(Disconnect),
    Final(ClientError),
    NoContent,
}

/// The request as it stands after the redirects so far.
struct Hop {
    url: Url,
    method: String,
    /// False once a redirect turned the request into a `GET`.
    send_body: bool,
    /// True once a redirect went to another host or port.
    cross_origin: bool,
}

/// Judges a final response head to `hop`: the stream, or `None` when `hop`
/// now follows a redirect (the caller counts them).
fn judge(
    config: &ClientBuilder,
    head: ResponseHead,
    hop: &mut Hop,
) -> Result<Option<(Framing, Connected)>, Failure> {
    let content_type = head.header("content-type").map(str::to_owned);
    match head.status() {
        200 if !content_type.as_deref().is_some_and(is_event_stream) => {
            Err(Failure::Final(ClientError::ContentType { content_type }))
        }
        200 => {
            let framing = head
                .body_framing(&hop.method)
                .map_err(|e| Failure::Retry(Disconnect::Protocol(e)))?;
            let connected = Connected { head, url: hop.url.to_string() };
            match config.check.as_ref().map_or(Ok(()), |check| check(&connected)) {
                Ok(()) => Ok(Some((framing, connected))),
                Err(r) if r.is_retry() => Err(Failure::Retry(Disconnect::Refused(r))),
                Err(r) => Err(Failure::Final(ClientError::Refused(r))),
            }
        }
        204 => Err(Failure::NoContent),
        status @ (301 | 302 | 303 | 307 | 308) => {
            let location = head.header("location").unwrap_or("").trim();
            let next = match hop.url.join(location) {
                _ if location.is_empty() => Err(ClientError::MissingLocation { status }),
                Err(ClientError::Url { .. }) => {
                    Err(ClientError::InvalidLocation { status, location: location.to_owned() })
                }
                joined => joined,
            };
            let next = next.map_err(Failure::Final)?;
            // Fetch, HTTP-redirect fetch, steps 11 and 13.
            if (matches!(status, 301 | 302) && hop.method == "POST")
                || (status == 303 && !matches!(hop.method.as_str(), "GET" | "HEAD"))
            {
                hop.method = "GET".into();
                hop.send_body = false;
            }
            hop.cross_origin |= (&next.host, next.port) != (&hop.url.host, hop.url.port);
            hop.url = next;
            Ok(None)
        }
        status @ (429 | 500..=599) if config.retry_server_errors => {
            let retry_after =
                head.header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now()));
            Err(Failure::Retry(Disconnect::Status { status, retry_after }))
        }
        status => Err(Failure::Final(ClientError::Status { status, content_type })),
    }
}

fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim_matches([' ', '\t']).eq_ignore_ascii_case("text/event-stream")
}

/// A `Retry-After` value (RFC 9110 10.2.3: "HTTP-date / delay-seconds") as
/// a delay from `now`: `1*DIGIT` seconds, or the IMF-fixdate that senders
/// must use (5.6.7); a date past is no delay. `None` when invalid.
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
        parse_decimal::<u64>(text).filter(|&n| text.len() == len && n <= max)
    };
    DAYS.contains(&day_name).then_some(())?;
    let month = MONTHS.iter().position(|&m| m == month)? as i64 + 1;
    let day = digits(day, 2, 31).filter(|&d| d > 0)? as i64;
    let year = digits(year, 4, 9999)? as i64;
    let time = digits(hour, 2, 23)? * 3600 + digits(minute, 2, 59)? * 60 + digits(second, 2, 60)?;
    // Days since 1970-01-01 (H. Hinnant's days_from_civil), years from March.
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let days =
        365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) + (153 * m + 2) / 5 + day
            - 719_469;
    let secs = u64::try_from(days).map_or(0, |days| days * 86_400 + time);
    Some((UNIX_EPOCH + Duration::from_secs(secs)).duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before the next attempt: `base` after a success; after `n`
/// failures in a row, `base × 2ⁿ` capped at `max(ceiling, base)`, with equal
/// jitter (between half of it and all of it, from `random`).
fn backoff(base: Duration, failures: u32, ceiling: Duration, random: u64) -> Duration {
    if failures == 0 {
        return base;
    }
    let target = base.saturating_mul(1 << failures.min(31)).min(ceiling.max(base));
    let half = target / 2;
    // Below `random`, so it fits in a u64.
    let jitter = u128::from(random) % ((target - half).as_nanos() + 1);
    half + Duration::from_nanos(jitter as u64)
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
