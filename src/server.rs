//! The HTTP/1.1 server: a thread per connection, routing, SSE streams,
//! limits and graceful shutdown.
//!
//! # Threads
//!
//! One thread accepts connections and gives each its own thread (with a
//! small, configurable stack). Past [`Server::max_connections`] the accept
//! thread answers `503 Service Unavailable` with `Retry-After` itself, and no
//! thread is spawned for the rejected connection. The accept thread keeps
//! one descriptor in reserve (a file open on `/dev/null`): when `accept`
//! fails because the process is out of descriptors, it frees it for one
//! accept and answers that client `503` at once, so a flood past the
//! descriptor limit cannot leave clients waiting in the listen backlog.
//! One more thread, the
//! ticker, sends keep-alive comments on idle event streams and notices
//! clients that went away.
//!
//! # Every wait is bounded
//!
//! | setting | default | protects against |
//! |---|---|---|
//! | [`head_timeout`](Server::head_timeout) | 10 s | a client trickling a request head byte by byte (slowloris): it is a total deadline, not a per-read timeout; past it, `408` |
//! | [`idle_timeout`](Server::idle_timeout) | 30 s | idle persistent connections holding threads |
//! | [`body_timeout`](Server::body_timeout) | 30 s | a slow request body (total deadline) |
//! | [`write_timeout`](Server::write_timeout) | 10 s | a client that stops reading: a blocked write fails after this and the connection closes |
//! | [`max_connections`](Server::max_connections) | 1024, less under a low descriptor limit | thread and descriptor exhaustion |
//! | [`linger_timeout`](Server::linger_timeout) | 2 s | a client that neither reads nor closes holding a closing connection (and its reading is bounded to 1 MiB) |
//! | [`limits`](Server::limits) | see [`Limits`] | huge heads and bodies (414, 431, 413) |
//!
//! # Closing
//!
//! Every connection is closed in stages (RFC 9112 9.6): the write side is
//! shut first, so the client sees the end of the response, then what the
//! client still sends is read and dropped until it closes, for at most
//! [`linger_timeout`](Server::linger_timeout) and 1 MiB. Closing at once
//! with unread bytes (a pipelined request after `Connection: close`, a
//! stray CRLF, an unread body) would send a reset, which destroys the part
//! of the response the client has not received yet. The accept thread's
//! `503` and a stream closed by a hub's fan-out thread do not wait: they
//! drain only what has already arrived (the `503` is small and sent at
//! once; a hub closes streams whose client is gone).
//!
//! # Event streams
//!
//! An SSE route's handler decides first, before anything is written: it
//! refuses with a [`Response`], or returns an [`Accept`], whose body gets an
//! [`EventStream`] after the response head has been sent and flushed:
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: text/event-stream
//! Cache-Control: no-cache           (unless the Accept sets it)
//! X-Accel-Buffering: no             (unless the Accept sets it)
//! Connection: close
//! Transfer-Encoding: chunked        (HTTP/1.1 requests only)
//! ...the Accept's headers and the CORS headers
//! ```
//!
//! Body framing:
//!
//! * For HTTP/1.1 the body is **chunked, one chunk per event** (and per
//!   keep-alive). Every event is complete in its chunk, and the chunk is
//!   written and flushed at once. A stream that ends cleanly sends the last
//!   chunk (`0`), so the client sees the body end rather than break.
//! * For HTTP/1.0, which has no chunked coding, the body ends when the
//!   connection closes. nginx's default `proxy_http_version` 1.0 upstream
//!   is such a peer.
//!
//! Why not close-delimited for everyone, as the standard suggests ("authors
//! can turn chunking off")? Common HTTP clients read a body without framing
//! in fixed-size blocks and wait for each block to fill. Python's
//! `requests` with urllib3, and therefore `sseclient-py` used as its README
//! shows, waits for 128 bytes, so a short event would sit in its buffer
//! until more traffic came. With one chunk per event, every client hands
//! each event on as it arrives. `TCP_NODELAY` is set on streams.
//!
//! The body owns the `EventStream` and may keep it on the connection's
//! thread or hand it to another thread (a broadcast hub does that); the
//! connection stays open until the stream is dropped.
//!
//! A dead client is noticed in two ways: a send fails, or the ticker finds
//! the connection closed (it checks without blocking, at least every
//! second) or sends a keep-alive that fails. [`EventStream::is_closed`] and
//! [`EventStream::sleep`] report it without sending.
//!
//! # Graceful shutdown
//!
//! [`ShutdownHandle::shutdown`] stops accepting, ends every stream (after an
//! optional final event and a jittered `retry:` hint, so that clients do not
//! all reconnect in the same instant), lets requests in progress finish,
//! waits for connection threads up to [`Server::shutdown_timeout`], and
//! makes [`Server::run`] return.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::event::{Event, Frame};
use crate::http::{self, ChunkedDecoder, Framing, Limits, Request, Response, Status, Version};
use crate::writer::EventWriter;

/// What an event-stream handler may return: any error ends the stream (and
/// is shown in the access log), exactly as `Ok(())` does.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type PlainFn = dyn Fn(&Request) -> Response + Send + Sync;
type StreamFn = dyn Fn(&Request) -> Result<Accept, Response> + Send + Sync;
type BodyFn = dyn FnOnce(EventStream) -> Result<(), HandlerError> + Send;
type LogFn = dyn Fn(&LogEntry<'_>) + Send + Sync;

enum Handler {
    Plain(Box<PlainFn>),
    Stream(Box<StreamFn>),
}

/// An event-stream handler's yes: the body that runs on the stream, and
/// extra headers for the stream's response head.
///
/// The head is written only once the handler has returned, so everything it
/// decided (who the user is) moves into the body closure.
pub struct Accept {
    /// A `200` that carries the extra headers (and the reason, if one was
    /// invalid): validated as [`Response::header`] validates.
    head: Response,
    body: Box<BodyFn>,
}

/// Headers an [`Accept`] may not set: the server writes them, and another
/// value would break the stream (its type, or its framing).
const STREAM_OWNED: &[&str] = &[
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
];

impl Accept {
    /// Accepts the request: `body` runs on the connection's thread once the
    /// head is sent, and owns the [`EventStream`] (the stream ends when it
    /// is dropped).
    pub fn new<F>(body: F) -> Accept
    where
        F: FnOnce(EventStream) -> Result<(), HandlerError> + Send + 'static,
    {
        Accept {
            head: Response::new(200),
            body: Box::new(body),
        }
    }

    /// Adds a header to the stream's response head. `Cache-Control` and
    /// `X-Accel-Buffering` replace the server's defaults. A header that
    /// [`Response::header`] refuses, or one of `Content-Type`,
    /// `Content-Length`, `Transfer-Encoding` and `Connection` (the server
    /// owns the stream's type and framing), makes the server answer `500`
    /// instead of streaming, and log why.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Accept {
        self.head = self.head.checked_header(name, value, STREAM_OWNED);
        self
    }
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept").field("head", &self.head).finish()
    }
}

struct Route {
    method: String,
    path: String,
    prefix: bool,
    handler: Handler,
}

/// Cross-origin resource sharing: which web pages on other origins may use
/// the server.
///
/// Requests with an allowed `Origin` get `Access-Control-Allow-Origin`
/// (echoing the origin) and `Vary: Origin`; preflight `OPTIONS` requests are
/// answered with the route's methods and the allowed request headers, which
/// include `Last-Event-ID` (a polyfilled `EventSource` sends it). Other
/// origins get no `Access-Control-*` header (and a preflight from one gets
/// `403`).
///
/// ```
/// use stdsse::server::Cors;
///
/// // Pages on app.example may connect with their cookies, and send a token.
/// let cors = Cors::origins(["https://app.example"])
///     .credentials()
///     .allow_headers("Authorization, Last-Event-ID");
/// # let _ = cors;
/// ```
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Option<Vec<String>>,
    allow_headers: String,
    max_age: Duration,
    credentials: bool,
}

impl Cors {
    /// Allows every origin.
    #[must_use]
    pub fn any() -> Cors {
        Cors {
            origins: None,
            allow_headers: "Last-Event-ID, Content-Type, Cache-Control".into(),
            max_age: Duration::from_secs(600),
            credentials: false,
        }
    }

    /// Allows exactly these origins (for example `https://example.com`).
    pub fn origins<I, S>(origins: I) -> Cors
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cors {
            origins: Some(origins.into_iter().map(Into::into).collect()),
            ..Cors::any()
        }
    }

    /// The request headers a page may send (default `Last-Event-ID,
    /// Content-Type, Cache-Control`), as one comma-separated list.
    #[must_use]
    pub fn allow_headers(mut self, headers: &str) -> Cors {
        self.allow_headers = headers.into();
        self
    }

    /// How long a browser may cache a preflight answer (default 10 min).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Cors {
        self.max_age = max_age;
        self
    }

    /// Lets pages send credentials (cookies, `Authorization`; the
    /// `withCredentials` of an `EventSource`): answers to an allowed origin
    /// carry `Access-Control-Allow-Credentials: true` (Fetch standard, CORS
    /// check: with credentials, `Access-Control-Allow-Origin` must be the
    /// exact origin, never `*`, and the server echoes it). Only for a list
    /// of [`origins`](Cors::origins): with [`Cors::any`] it is ignored, so
    /// that no page on any site can read a user's authenticated stream.
    #[must_use]
    pub fn credentials(mut self) -> Cors {
        self.credentials = true;
        self
    }

    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// What the [log hook](Server::log) is told: once per request, once more
/// when an event stream ends, and once per refused connection and failed
/// `accept`.
#[derive(Debug)]
#[non_exhaustive]
pub struct LogEntry<'a> {
    /// The client's address (`None` for [`LogKind::AcceptError`]: there is
    /// no client).
    pub remote: Option<SocketAddr>,
    /// The request method, or `-` when there is no parsed request.
    pub method: &'a str,
    /// The request path, or `-` when there is no parsed request.
    pub path: &'a str,
    /// The response status (`0` when nothing was answered).
    pub status: u16,
    /// Bytes of the response (for a stream: everything sent on it).
    pub bytes: u64,
    /// From the start of the request to the response (for a stream: to its
    /// end).
    pub duration: Duration,
    /// What the entry is about.
    pub kind: LogKind,
    /// Why: the error a stream's body returned, a handler's panic message,
    /// why a request was refused as bad (`400`, `408`, `413`...) or why a
    /// response was invalid (`500`), the `accept` error.
    pub error: Option<&'a str>,
}

/// The kinds of [`LogEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogKind {
    /// A request was answered (for an event stream: the head was sent).
    Request,
    /// An event stream ended.
    StreamEnd,
    /// A connection was refused by the accept thread: `503` (at
    /// `max_connections`, out of descriptors, or no thread could be
    /// spawned).
    Rejected,
    /// `accept` failed (interruptions aside); the server backs off and
    /// goes on.
    AcceptError,
}

/// A snapshot of the server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (each has a thread or an open event stream).
    pub open_connections: usize,
    /// Event streams open now.
    pub open_streams: usize,
    /// Requests answered since start.
    pub requests: u64,
    /// Connections refused with 503 because of `max_connections` (or a
    /// failed thread spawn).
    pub rejected: u64,
    /// Handler panics caught.
    pub panics: u64,
    /// Requests the server refused itself as malformed, too large or too
    /// slow (`400`, `408`, `413`, `414`, `431`, `417`, `501`).
    pub bad_requests: u64,
    /// Failed `accept` calls.
    pub accept_errors: u64,
}

impl Stats {
    /// The counters as a JSON object.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"open_connections\":{},\"open_streams\":{},\"requests\":{},\"rejected\":{},\"panics\":{},\"bad_requests\":{},\"accept_errors\":{}}}",
            self.open_connections,
            self.open_streams,
            self.requests,
            self.rejected,
            self.panics,
            self.bad_requests,
            self.accept_errors
        )
    }

    /// The counters in the Prometheus text exposition format 0.0.4, for a
    /// `/metrics` route (content type `text/plain; version=0.0.4`).
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let metrics: [(&str, &str, &str, u64); 7] = [
            (
                "connections_open",
                "gauge",
                "Connections open now.",
                self.open_connections as u64,
            ),
            (
                "streams_open",
                "gauge",
                "Event streams open now.",
                self.open_streams as u64,
            ),
            (
                "requests_total",
                "counter",
                "Requests answered.",
                self.requests,
            ),
            (
                "rejected_total",
                "counter",
                "Connections refused with 503.",
                self.rejected,
            ),
            (
                "panics_total",
                "counter",
                "Handler panics caught.",
                self.panics,
            ),
            (
                "bad_requests_total",
                "counter",
                "Requests refused as malformed, too large or too slow.",
                self.bad_requests,
            ),
            (
                "accept_errors_total",
                "counter",
                "Failed accept calls.",
                self.accept_errors,
            ),
        ];
        for (name, kind, help, value) in metrics {
            push_metric(
                &mut out,
                &format!("stdsse_server_{name}"),
                kind,
                help,
                value,
            );
        }
        out
    }
}

/// Appends one metric in the Prometheus text format 0.0.4: its `# HELP`
/// and `# TYPE` lines, then `name value`. `help` must not hold a backslash
/// or a line break (the format would need them escaped).
pub(crate) fn push_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

struct Config {
    limits: Limits,
    head_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    linger_timeout: Duration,
    stack_size: usize,
    keep_alive: Option<Duration>,
    connected_comment: Option<String>,
    initial_retry: Option<Duration>,
    shutdown_timeout: Duration,
    shutdown_event: Option<Event>,
    shutdown_retry: Option<(Duration, Duration)>,
    cors: Option<Cors>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
            linger_timeout: Duration::from_secs(2),
            stack_size: 128 * 1024,
            keep_alive: Some(Duration::from_secs(15)),
            connected_comment: None,
            initial_retry: None,
            shutdown_timeout: Duration::from_secs(5),
            shutdown_event: None,
            shutdown_retry: None,
            cors: None,
        }
    }
}

/// State shared by the accept thread, connection threads, the ticker,
/// streams and handles.
struct Shared {
    local_addr: SocketAddr,
    shutting_down: AtomicBool,
    open_connections: AtomicUsize,
    open_streams: AtomicUsize,
    requests: AtomicU64,
    rejected: AtomicU64,
    panics: AtomicU64,
    bad_requests: AtomicU64,
    accept_errors: AtomicU64,
    next_id: AtomicU64,
    /// Every open connection, so shutdown can wake threads blocked reading.
    connections: Mutex<HashMap<u64, Weak<Conn>>>,
    /// Every open event stream, for keep-alives and shutdown.
    streams: Mutex<Vec<Weak<StreamShared>>>,
    /// Signalled when a connection closes (shutdown waits on it).
    closed: Condvar,
    closed_lock: Mutex<()>,
    /// Signalled at shutdown (the ticker sleeps on it).
    stop: Condvar,
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            open_connections: self.open_connections.load(Ordering::SeqCst),
            open_streams: self.open_streams.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::SeqCst),
            rejected: self.rejected.load(Ordering::SeqCst),
            panics: self.panics.load(Ordering::SeqCst),
            bad_requests: self.bad_requests.load(Ordering::SeqCst),
            accept_errors: self.accept_errors.load(Ordering::SeqCst),
        }
    }
}

/// One accepted connection: the one file descriptor it has, shared by
/// reference count between the connection thread, its event stream and the
/// server's registry (`&TcpStream` reads and writes, so no `try_clone`).
struct Conn {
    socket: TcpStream,
    id: u64,
    remote: SocketAddr,
    server: Arc<Shared>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The connection thread has closed in stages already, waiting for
        // the client; any other last owner (a hub's fan-out thread, the
        // accept thread) must not wait.
        close_staged(&self.socket, Duration::ZERO);
        lock(&self.server.connections).remove(&self.id);
        self.server.open_connections.fetch_sub(1, Ordering::SeqCst);
        let _guard = lock(&self.server.closed_lock);
        self.server.closed.notify_all();
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves
/// the data consistent, and a panicking handler must not take the server
/// down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP/1.1 server that gives every connection its own thread.
///
/// An event-stream handler decides before the first byte is sent: it
/// returns a [`Response`] to refuse (`401`, `403`, `404`, `204` to tell an
/// `EventSource` to stop...) or an [`Accept`] whose body then runs on the
/// stream, with what the handler learned moved into it.
///
/// ```no_run
/// use stdsse::{Accept, Event, Request, Response, Server};
/// use std::time::Duration;
///
/// fn authenticate(req: &Request) -> Option<String> {
///     req.header("Authorization")?.strip_prefix("Bearer ").map(str::to_string)
/// }
///
/// let mut server = Server::bind("127.0.0.1:8080")?;
/// server.get("/", |_req| Response::text(200, "hello"));
/// server.sse("/events", |req| {
///     let user = authenticate(req).ok_or_else(|| {
///         Response::text(401, "who are you?").header("WWW-Authenticate", "Bearer")
///     })?;
///     Ok(Accept::new(move |mut stream| {
///         stream.send(&Event::new().data(format!("hello {user}")))?;
///         for n in 1.. {
///             stream.send(&Event::new().id(n.to_string())?.data("tick"))?;
///             stream.sleep(Duration::from_secs(1))?;
///         }
///         Ok(())
///     })
///     .header("Cache-Control", "no-store"))
/// });
/// eprintln!("listening on http://{}", server.local_addr());
/// server.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    config: Config,
    routes: Vec<Route>,
    log: Option<Box<LogFn>>,
}

impl Server {
    /// Binds the listening socket now, so the real address (port 0 picks a
    /// free port) is known before [`run`](Server::run).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                local_addr,
                shutting_down: AtomicBool::new(false),
                open_connections: AtomicUsize::new(0),
                open_streams: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                bad_requests: AtomicU64::new(0),
                accept_errors: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
                connections: Mutex::new(HashMap::new()),
                streams: Mutex::new(Vec::new()),
                closed: Condvar::new(),
                closed_lock: Mutex::new(()),
                stop: Condvar::new(),
            }),
            config: Config::default(),
            routes: Vec::new(),
            log: None,
        })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle that can stop the server and read its stats from any thread.
    #[must_use]
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// The server's counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Routes `method` requests for exactly `path` to a handler that returns
    /// a response. A `GET` route also answers `HEAD` (without the body).
    pub fn route<F>(&mut self, method: &str, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.add(method, path, false, Handler::Plain(Box::new(handler)))
    }

    /// Like [`route`](Server::route), for every path that starts with
    /// `prefix`. Exact routes win over prefix routes, longer prefixes over
    /// shorter ones.
    pub fn route_prefix<F>(&mut self, method: &str, prefix: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.add(method, prefix, true, Handler::Plain(Box::new(handler)))
    }

    /// Shorthand for `route("GET", path, handler)`.
    pub fn get<F>(&mut self, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.route("GET", path, handler)
    }

    /// Shorthand for `route("POST", path, handler)`.
    pub fn post<F>(&mut self, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.route("POST", path, handler)
    }

    /// Serves an event stream on `GET path` (and `HEAD`: the head only).
    /// The handler runs on the connection's thread, after the request body
    /// (if any) was read, and before anything is written: `Err(response)`
    /// is sent as any plain response is (keep-alive rules included), and
    /// nothing of a stream; `Ok(accept)` sends the stream's head with the
    /// accept's headers, then runs its body (see [`Accept`]).
    pub fn sse<F>(&mut self, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static,
    {
        self.sse_route("GET", path, handler)
    }

    /// Like [`sse`](Server::sse) for another method, for APIs that answer
    /// a `POST` with an event stream (the request body is read first).
    pub fn sse_route<F>(&mut self, method: &str, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static,
    {
        self.add(method, path, false, Handler::Stream(Box::new(handler)))
    }

    fn add(&mut self, method: &str, path: &str, prefix: bool, handler: Handler) -> &mut Server {
        self.routes.push(Route {
            method: method.to_string(),
            path: path.to_string(),
            prefix,
            handler,
        });
        self
    }

    /// The log hook: called once per request, once when an event stream
    /// ends, and once per connection refused and per failed `accept` (see
    /// [`LogKind`]). It runs on the connection's thread (the accept
    /// thread's for the last two): keep it quick.
    pub fn log<F>(&mut self, log: F) -> &mut Server
    where
        F: Fn(&LogEntry<'_>) + Send + Sync + 'static,
    {
        self.log = Some(Box::new(log));
        self
    }

    /// Enables CORS (off by default: no cross-origin headers are sent).
    pub fn cors(&mut self, cors: Cors) -> &mut Server {
        self.config.cors = Some(cors);
        self
    }

    /// Request head and body size limits (defaults in [`Limits`]).
    pub fn limits(&mut self, limits: Limits) -> &mut Server {
        self.config.limits = limits;
        self
    }

    /// Total time allowed to receive a request head, counted from the
    /// connection's start (first request) or the request's first byte
    /// (later requests). Default 10 s. Past it: `408` and close.
    pub fn head_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.head_timeout = timeout;
        self
    }

    /// How long a persistent connection may wait for its next request.
    /// Default 30 s; then it is closed.
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.idle_timeout = timeout;
        self
    }

    /// Total time allowed to receive a request body. Default 30 s.
    pub fn body_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.body_timeout = timeout;
        self
    }

    /// How long one write may block on a client that does not read.
    /// Default 10 s; then the connection (or stream) is closed.
    pub fn write_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.write_timeout = timeout;
        self
    }

    /// The most connections open at once. Past it, new connections get
    /// `503` with `Retry-After: 1` from the accept thread.
    ///
    /// Each connection holds one descriptor, so the default fits the
    /// process's soft limit on open files: that limit minus 64 (room for the
    /// listener, the spare descriptor, standard streams, a hub and the
    /// application's own files), at most 1024 (threads). On Linux the limit
    /// is read from `/proc/self/limits`; where it cannot be read, 1024 is
    /// assumed (so the default is 960). Set more only after raising the
    /// limit (`ulimit -n`); past it the server still answers `503`, using
    /// its spare descriptor.
    pub fn max_connections(&mut self, max: usize) -> &mut Server {
        self.config.max_connections = max;
        self
    }

    /// How long closing a connection may wait for the client to close its
    /// side (default 2 s): see [Closing](crate::server#closing). Protects
    /// the response's tail from a reset without letting a client that
    /// neither reads nor closes hold the connection's thread.
    pub fn linger_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.linger_timeout = timeout;
        self
    }

    /// The stack size of connection threads (default 128 KiB). Measured:
    /// the server's own request handling and event streams run in 16 KiB,
    /// and printing a handler panic's backtrace (`RUST_BACKTRACE=1`) needs
    /// up to 32 KiB; the rest is for handlers. Raise it if handlers recurse
    /// deeply or keep large arrays on the stack.
    pub fn stack_size(&mut self, bytes: usize) -> &mut Server {
        self.config.stack_size = bytes;
        self
    }

    /// The keep-alive interval of event streams: after this long without a
    /// write, a comment (`:`) is sent. Default 15 s, the standard's advice;
    /// `None` disables it (dead clients are then found only by a failing
    /// send or a closed connection).
    pub fn keep_alive(&mut self, interval: Option<Duration>) -> &mut Server {
        self.config.keep_alive = interval;
        self
    }

    /// A comment sent as the first bytes of every event stream, in the same
    /// write as the response head (for example `connected`). Default none.
    pub fn connected_comment(&mut self, text: Option<&str>) -> &mut Server {
        self.config.connected_comment = text.map(str::to_string);
        self
    }

    /// A `retry:` hint sent as the first bytes of every event stream.
    /// Default none (clients keep their own default, about 3 s in browsers).
    pub fn initial_retry(&mut self, delay: Option<Duration>) -> &mut Server {
        self.config.initial_retry = delay;
        self
    }

    /// How long shutdown waits for connection threads. Default 5 s.
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Server {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// An event sent to every open stream at shutdown. Default none.
    pub fn shutdown_event(&mut self, event: Option<Event>) -> &mut Server {
        self.config.shutdown_event = event;
        self
    }

    /// A `retry:` hint sent to every open stream at shutdown: `base` plus a
    /// random part of up to `jitter`, different per stream, so that clients
    /// spread their reconnects. Default none.
    pub fn shutdown_retry(&mut self, base: Duration, jitter: Duration) -> &mut Server {
        self.config.shutdown_retry = Some((base, jitter));
        self
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called, then shuts down
    /// gracefully and returns.
    pub fn run(self) -> io::Result<()> {
        let Server {
            listener,
            shared,
            config,
            routes,
            log,
        } = self;
        let app = Arc::new(App {
            config,
            routes,
            log,
            shared: shared.clone(),
        });
        let ticker = {
            let app = app.clone();
            thread::Builder::new()
                .name("stdsse-ticker".into())
                .stack_size(64 * 1024)
                .spawn(move || ticker(&app))?
        };
        accept_loop(&listener, &app);
        drop(listener);
        shutdown_connections(&app);
        let deadline = Instant::now() + app.config.shutdown_timeout;
        let mut guard = lock(&shared.closed_lock);
        while shared.open_connections.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = shared
                .closed
                .wait_timeout(guard, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(guard);
        shared.stop.notify_all();
        let _ = ticker.join();
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.shared.local_addr)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// Stops a server and reads its stats; cheap to clone, usable from any
/// thread, obtainable before [`Server::run`].
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("local_addr", &self.shared.local_addr)
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl ShutdownHandle {
    /// Starts a graceful shutdown and returns at once; [`Server::run`]
    /// returns when it is done. Calling it again does nothing.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.stop.notify_all();
        // The accept thread is blocked in accept(): connect once to wake it.
        let mut addr = self.shared.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }

    /// Whether shutdown has started.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// The server's counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }
}

/// Everything a connection thread needs, frozen when `run` starts.
struct App {
    config: Config,
    routes: Vec<Route>,
    log: Option<Box<LogFn>>,
    shared: Arc<Shared>,
}

impl App {
    fn log(&self, entry: &LogEntry<'_>) {
        if let Some(log) = &self.log {
            log(entry);
        }
    }
}

/// The canned answer of the accept thread when the server is full.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nserver at capacity\r\n";

/// What the spare descriptor is opened on.
const SPARE: &str = if cfg!(windows) { "NUL" } else { "/dev/null" };

/// Descriptors left for the listener, the spare descriptor, standard
/// streams, a hub and the application's files by the default
/// `max_connections`.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The default `max_connections`: see [`Server::max_connections`].
fn default_max_connections() -> usize {
    let limit = descriptor_limit().unwrap_or(1024);
    limit.saturating_sub(RESERVED_DESCRIPTORS).clamp(1, 1024) as usize
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), from
/// `/proc/self/limits` (Linux): `None` elsewhere, or when unlimited.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// EMFILE or ENFILE (Linux, the BSDs, macOS), WSAEMFILE (Windows).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 10024))
}

fn accept_loop(listener: &TcpListener, app: &Arc<App>) {
    let shared = &app.shared;
    let mut backoff = Duration::from_millis(5);
    let mut spare = std::fs::File::open(SPARE).ok();
    while !shared.shutting_down.load(Ordering::SeqCst) {
        let (socket, remote) = match listener.accept() {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                count(&shared.accept_errors);
                let why = e.to_string();
                log_accept(app, LogKind::AcceptError, None, 0, 0, &why);
                if out_of_descriptors(&e) && spare.is_some() {
                    // Free the spare for one accept: the client gets its
                    // 503 now rather than waiting in the backlog for a
                    // descriptor.
                    drop(spare.take());
                    if let Ok((socket, remote)) = listener.accept() {
                        reject(socket, remote, app, "out of descriptors");
                    }
                    spare = std::fs::File::open(SPARE).ok();
                } else {
                    // ENOBUFS, ECONNABORTED, descriptors short with no
                    // spare...: the condition is usually temporary; back
                    // off instead of spinning or dying.
                    spare = spare.or_else(|| std::fs::File::open(SPARE).ok());
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                continue;
            }
        };
        if shared.shutting_down.load(Ordering::SeqCst) {
            break;
        }
        if shared.open_connections.load(Ordering::SeqCst) >= app.config.max_connections {
            reject(socket, remote, app, "max_connections reached");
            continue;
        }
        shared.open_connections.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            socket,
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            remote,
            server: shared.clone(),
        });
        lock(&shared.connections).insert(conn.id, Arc::downgrade(&conn));
        let app2 = app.clone();
        let spawned = thread::Builder::new()
            .name("stdsse-conn".into())
            .stack_size(app.config.stack_size)
            .spawn(move || serve_connection(&app2, conn));
        if let Err(e) = spawned {
            // The closure (and the connection) was dropped with the error;
            // the client sees the connection close. Count it as rejected.
            count(&shared.rejected);
            let why = format!("no thread: {e}");
            log_accept(app, LogKind::Rejected, Some(remote), 0, 0, &why);
        }
    }
}

/// Answers 503 without a thread: a non-blocking write of the canned
/// response (it fits any socket buffer, so it is on its way at once), then
/// a staged close that drains only what has arrived: the accept thread
/// never waits, so a flood cannot hold it.
fn reject(socket: TcpStream, remote: SocketAddr, app: &App, why: &str) {
    count(&app.shared.rejected);
    let _ = socket.set_nonblocking(true);
    let bytes = (&socket).write(FULL).unwrap_or(0) as u64;
    close_staged(&socket, Duration::ZERO);
    log_accept(app, LogKind::Rejected, Some(remote), 503, bytes, why);
}

/// Logs what the accept thread did: there is no request.
fn log_accept(
    app: &App,
    kind: LogKind,
    remote: Option<SocketAddr>,
    status: u16,
    bytes: u64,
    why: &str,
) {
    app.log(&LogEntry {
        remote,
        method: "-",
        path: "-",
        status,
        bytes,
        duration: Duration::ZERO,
        kind,
        error: Some(why),
    });
}

/// Adds one to a counter, stopping at its maximum rather than wrapping.
fn count(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1));
}

/// Ends every stream and wakes every connection thread blocked reading.
fn shutdown_connections(app: &App) {
    let streams: Vec<_> = lock(&app.shared.streams).drain(..).collect();
    for stream in streams.iter().filter_map(Weak::upgrade) {
        let mut goodbye = Vec::new();
        if let Some(event) = &app.config.shutdown_event {
            event.encode_into(&mut goodbye);
        }
        if let Some((base, jitter)) = app.config.shutdown_retry {
            crate::event::push_retry(&mut goodbye, base + jitter.mul_f64(random_unit()));
        }
        stream.close_with(&goodbye);
    }
    let conns: Vec<_> = lock(&app.shared.connections).values().cloned().collect();
    for conn in conns.iter().filter_map(Weak::upgrade) {
        // Read side only: a response being written still completes.
        let _ = conn.socket.shutdown(Shutdown::Read);
    }
}

/// A random number in [0, 1), for jitter.
pub(crate) fn random_unit() -> f64 {
    (crate::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends keep-alives to idle streams and closes streams whose client went
/// away, at least once a second.
fn ticker(app: &App) {
    let shared = &app.shared;
    let tick = app
        .config
        .keep_alive
        .map_or(Duration::from_secs(1), |k| k / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut guard = lock(&shared.closed_lock);
    while !shared.shutting_down.load(Ordering::SeqCst) {
        guard = shared
            .stop
            .wait_timeout(guard, tick)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        drop(guard);
        let streams: Vec<_> = {
            let mut list = lock(&shared.streams);
            list.retain(|s| s.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for stream in streams {
            if stream.detached.load(Ordering::SeqCst) {
                continue;
            }
            // A stream whose lock is held is being written to: not idle,
            // and its writer learns of a dead client itself. Waiting for it
            // could stall every other stream for a whole write timeout.
            let mut state = match stream.state.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            stream.check(&mut state, app.config.keep_alive);
        }
        guard = lock(&shared.closed_lock);
    }
}

/// Serves one connection, then closes it in stages, unless a stream handed
/// to another thread still uses it (its last owner closes it then).
fn serve_connection(app: &Arc<App>, conn: Arc<Conn>) {
    serve_requests(app, &conn);
    if Arc::strong_count(&conn) == 1 {
        close_staged(&conn.socket, app.config.linger_timeout);
    }
}

/// Reads requests from one connection and answers them, in order, until
/// one ends the connection.
fn serve_requests(app: &Arc<App>, conn: &Arc<Conn>) {
    let mut reader = Reader {
        conn,
        buf: Vec::new(),
    };
    let _ = conn
        .socket
        .set_write_timeout(Some(app.config.write_timeout));
    let mut first = true;
    loop {
        if app.shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        match reader.read_request(&app.config, first) {
            Ok(ReadOutcome::Closed) => return,
            Ok(ReadOutcome::Request(req, consumed)) => {
                first = false;
                if !handle_request(app, conn, &mut reader, req, consumed, started) {
                    return;
                }
            }
            Err((status, why)) => {
                let response = Response::text(status, format!("{}\n", http::reason_phrase(status)));
                // Counted before the answer is written, as in
                // `handle_request`: a client that has its answer sees it
                // in the stats.
                count(&app.shared.requests);
                count(&app.shared.bad_requests);
                let bytes = write_response(conn, &response, Version::Http11, false, true);
                app.log(&LogEntry {
                    remote: Some(conn.remote),
                    method: "-",
                    path: "-",
                    status,
                    bytes,
                    duration: started.elapsed(),
                    kind: LogKind::Request,
                    error: Some(why),
                });
                return;
            }
        }
    }
}

/// A request the server refuses itself: the status, and why (for the log).
type Refusal = (u16, &'static str);

enum ReadOutcome {
    /// A parsed head and the number of buffered bytes it took.
    Request(Request, usize),
    /// The client closed, or the idle timeout passed with no new request.
    Closed,
}

/// How long a client may pause before the bytes it sent are parsed even
/// though they hold no line end and add up to less than a KiB.
const PARSE_PAUSE: Duration = Duration::from_millis(50);

/// The connection's read side: a buffer of received bytes not yet used
/// (pipelined requests stay in it for the next round).
struct Reader<'a> {
    conn: &'a Conn,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// Reads until a complete head is buffered. `Err` answers a bad or slow
    /// request.
    ///
    /// The head is parsed again from its start after a read that may have
    /// completed a line (it holds an LF) or added another KiB, and when the
    /// client pauses for [`PARSE_PAUSE`] with bytes not parsed yet: a client
    /// sending one byte per packet cannot make the server re-parse 64 KiB
    /// for every byte, and a head that is already invalid is answered at
    /// once.
    fn read_request(&mut self, config: &Config, first: bool) -> Result<ReadOutcome, Refusal> {
        let idle = if first {
            config.head_timeout
        } else {
            config.idle_timeout
        };
        let mut deadline = Instant::now() + idle;
        let mut head_started = false;
        let mut parsed_len = 0;
        let mut new_line = true; // leftover pipelined bytes: parse at once
        loop {
            if !self.buf.is_empty() {
                if !head_started {
                    head_started = true;
                    if !first {
                        deadline = Instant::now() + config.head_timeout;
                    }
                }
                if new_line || self.buf.len() >= parsed_len + 1024 {
                    parsed_len = self.buf.len();
                    match http::parse_head(&self.buf, &config.limits) {
                        Ok(Status::Complete((req, consumed))) => {
                            return Ok(ReadOutcome::Request(req, consumed))
                        }
                        Ok(Status::Partial) => {}
                        Err(e) => return Err((e.status(), e.description())),
                    }
                }
            }
            let before = self.buf.len();
            // Bytes not parsed yet are parsed as soon as the client pauses,
            // so that a head already known to be bad (binary junk, a line
            // past its limit without its line end) is answered at once, not
            // at the deadline.
            let unparsed = self.buf.len() > parsed_len;
            let wait = if unparsed {
                deadline.min(Instant::now() + PARSE_PAUSE)
            } else {
                deadline
            };
            match self.fill(wait) {
                Ok(0) if self.buf.is_empty() => return Ok(ReadOutcome::Closed),
                Ok(0) => return Err((400, "closed in the request head")),
                Ok(_) => new_line = self.buf[before..].contains(&b'\n'),
                Err(e) if is_timeout(&e) && unparsed && Instant::now() < deadline => {
                    new_line = true
                }
                Err(e) if is_timeout(&e) && self.buf.is_empty() => return Ok(ReadOutcome::Closed),
                Err(e) if is_timeout(&e) => return Err((408, "request head too slow")),
                Err(_) => return Ok(ReadOutcome::Closed),
            }
        }
    }

    /// One read of up to 8 KiB, waiting no later than `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.socket.set_read_timeout(Some(left))?;
        let len = self.buf.len();
        self.buf.resize(len + 8192, 0);
        let result = (&self.conn.socket).read(&mut self.buf[len..]);
        self.buf.truncate(len + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Reads the body that follows a head of `consumed` bytes; afterwards
    /// the buffer starts at the next request.
    fn read_body(
        &mut self,
        framing: Framing,
        consumed: usize,
        config: &Config,
    ) -> Result<Vec<u8>, Refusal> {
        let deadline = Instant::now() + config.body_timeout;
        self.buf.drain(..consumed);
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => {
                let n = n as usize; // body_framing bounds it by max_body
                while self.buf.len() < n {
                    self.fill_body(deadline)?;
                }
                Ok(self.buf.drain(..n).collect())
            }
            Framing::Chunked => {
                let mut decoder = ChunkedDecoder::new(config.limits.max_body);
                let mut body = Vec::new();
                loop {
                    match decoder.decode(&self.buf, &mut body) {
                        Ok(Status::Complete(used)) => {
                            self.buf.drain(..used);
                            return Ok(body);
                        }
                        Ok(Status::Partial) => {
                            self.buf.clear();
                            self.fill_body(deadline)?;
                        }
                        Err(e) => return Err((e.status(), e.description())),
                    }
                }
            }
        }
    }

    fn fill_body(&mut self, deadline: Instant) -> Result<(), Refusal> {
        match self.fill(deadline) {
            Ok(0) => Err((400, "closed in the request body")),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err((408, "request body too slow")),
            Err(_) => Err((400, "read error in the request body")),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes a response; returns the bytes written (0 if the write failed).
fn write_response(
    conn: &Conn,
    response: &Response,
    version: Version,
    head_only: bool,
    close: bool,
) -> u64 {
    let mut out = Vec::with_capacity(256 + response.get_body().len());
    response.write_to(&mut out, version, head_only, close);
    match (&conn.socket).write_all(&out) {
        Ok(()) => out.len() as u64,
        Err(_) => 0,
    }
}

/// Most bytes a staged close reads and drops: bounds the work a client
/// that keeps sending can cause.
const LINGER_BYTES: usize = 1024 * 1024;

/// Closes a connection in stages (RFC 9112 9.6: "half-close by closing only
/// the write side of the read/write connection", then "continue to read
/// from the connection until it receives a corresponding close from the
/// client"), so that the close is not a reset that destroys what the client
/// has not received yet. Reads and drops until the client closes,
/// [`LINGER_BYTES`] have been read or `linger` has passed; with `linger`
/// zero, drains only what has arrived, without blocking. The caller drops
/// the socket afterwards.
fn close_staged(socket: &TcpStream, linger: Duration) {
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_nonblocking(linger.is_zero());
    let deadline = Instant::now() + linger;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        if !linger.is_zero() {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() || socket.set_read_timeout(Some(wait)).is_err() {
                break;
            }
        }
        match (&*socket).read(&mut sink) {
            Ok(0) => break,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// What routing found for a method and path.
enum Lookup<'a> {
    Route(&'a Route),
    /// The path exists, for these other methods.
    WrongMethod(Vec<&'a str>),
    Missing,
}

impl App {
    fn find(&self, method: &str, path: &str) -> Lookup<'_> {
        let matches = |r: &&Route| {
            if r.prefix {
                path.starts_with(&r.path)
            } else {
                path == r.path
            }
        };
        // Exact routes first, then the longest prefix.
        let mut candidates: Vec<&Route> = self.routes.iter().filter(matches).collect();
        if candidates.is_empty() {
            return Lookup::Missing;
        }
        candidates.sort_by_key(|r| (r.prefix, std::cmp::Reverse(r.path.len())));
        let best = (candidates[0].prefix, candidates[0].path.len());
        candidates.retain(|r| (r.prefix, r.path.len()) == best);
        let wanted = |m: &str| candidates.iter().find(|r| r.method == m).copied();
        if let Some(route) = wanted(method) {
            return Lookup::Route(route);
        }
        if method == "HEAD" {
            if let Some(route) = wanted("GET") {
                return Lookup::Route(route);
            }
        }
        let mut allowed: Vec<&str> = candidates.iter().map(|r| r.method.as_str()).collect();
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        allowed.push("OPTIONS");
        allowed.sort_unstable();
        allowed.dedup();
        Lookup::WrongMethod(allowed)
    }

    /// Adds the CORS headers for a request's `Origin` (none without CORS
    /// or without `Origin`).
    fn with_cors(&self, req: &Request, mut response: Response) -> Response {
        if let (Some(cors), Some(origin)) = (&self.config.cors, req.header("Origin")) {
            if cors.allows(origin) {
                response = response.header("Access-Control-Allow-Origin", origin);
                if cors.credentials && cors.origins.is_some() {
                    response = response.header("Access-Control-Allow-Credentials", "true");
                }
            }
            response = response.header("Vary", "Origin");
        }
        response
    }

    /// Answers `OPTIONS` (a CORS preflight or a plain one).
    fn options(&self, req: &Request) -> Response {
        let allowed = if req.target() == "*" {
            let mut all: Vec<&str> = self.routes.iter().map(|r| r.method.as_str()).collect();
            all.extend(["HEAD", "OPTIONS"]);
            all.sort_unstable();
            all.dedup();
            all
        } else {
            match self.find("OPTIONS", req.path()) {
                Lookup::WrongMethod(allowed) => allowed,
                Lookup::Route(_) => vec!["OPTIONS"],
                Lookup::Missing => return Response::text(404, "Not Found\n"),
            }
        };
        let allow = allowed.join(", ");
        let preflight = req.header("Access-Control-Request-Method").is_some();
        // `Access-Control-Allow-Origin` and `Vary` are added by `respond`
        // (`with_cors`), as for every response: adding them here too would
        // send them twice, and browsers reject a doubled
        // `Access-Control-Allow-Origin`.
        match (&self.config.cors, req.header("Origin")) {
            (Some(cors), Some(origin)) if preflight => {
                if !cors.allows(origin) {
                    return Response::text(403, "origin not allowed\n");
                }
                Response::new(204)
                    .header("Access-Control-Allow-Methods", &allow)
                    .header("Access-Control-Allow-Headers", &cors.allow_headers)
                    .header(
                        "Access-Control-Max-Age",
                        &cors.max_age.as_secs().to_string(),
                    )
                    .header("Allow", &allow)
            }
            _ => Response::new(204).header("Allow", &allow),
        }
    }
}

/// Writes a response to a request, logs it (with `error`, or why the
/// response was invalid), and says whether the connection stays open.
fn respond(
    app: &App,
    conn: &Conn,
    req: &Request,
    response: Response,
    keep: bool,
    started: Instant,
    error: Option<&str>,
) -> bool {
    let response = app.with_cors(req, response);
    let head_only = req.method() == "HEAD";
    let bytes = write_response(conn, &response, req.version(), head_only, !keep);
    app.log(&LogEntry {
        remote: Some(conn.remote),
        method: req.method(),
        path: req.path(),
        status: if response.is_valid() {
            response.status()
        } else {
            500
        },
        bytes,
        duration: started.elapsed(),
        kind: LogKind::Request,
        error: error.or(response.invalid_reason()),
    });
    bytes > 0 && keep
}

/// Answers a request the server refuses itself (it is malformed, too large
/// or too slow), and ends the connection.
fn refuse(app: &App, conn: &Conn, req: &Request, (status, why): Refusal, started: Instant) -> bool {
    count(&app.shared.bad_requests);
    let response = error_response(status, why);
    respond(app, conn, req, response, false, started, Some(why));
    false
}

fn error_response(status: u16, text: &str) -> Response {
    Response::text(status, format!("{text}\n"))
}

/// The message of a caught panic (what `panic!` was given), for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    format!("handler panicked: {}", text.unwrap_or("(no message)"))
}

/// Answers one request. Returns whether the connection stays open for the
/// next one.
fn handle_request(
    app: &Arc<App>,
    conn: &Arc<Conn>,
    reader: &mut Reader<'_>,
    mut req: Request,
    consumed: usize,
    started: Instant,
) -> bool {
    req.set_remote_addr(conn.remote);
    count(&app.shared.requests);
    let keep = req.keep_alive() && !app.shared.shutting_down.load(Ordering::SeqCst);

    // Errors in the head that parse_head leaves to us: the body cannot be
    // delimited or the expectation cannot be met, so the connection ends.
    let framing = req.body_framing(&app.config.limits);
    let expect = req.expects_continue();
    let (framing, expect) = match (framing, expect) {
        (Ok(framing), Ok(expect)) => (framing, expect),
        (Err(e), _) | (_, Err(e)) => {
            return refuse(app, conn, &req, (e.status(), e.description()), started)
        }
    };
    // `Content-Length: 0` is no body: nothing to read, the connection stays.
    let has_body = !matches!(framing, Framing::None | Framing::Length(0));

    // Answers that need no body: OPTIONS, 404 and 405. An unread body
    // cannot be skipped safely, so such a connection then ends.
    let early = match app.find(req.method(), req.path()) {
        Lookup::Route(_) if req.method() != "OPTIONS" || has_body => None,
        Lookup::Route(_) if app.routes.iter().any(|r| r.method == "OPTIONS") => None,
        _ if req.method() == "OPTIONS" => Some(app.options(&req)),
        _ => None,
    };
    let route = match early {
        Some(response) => Err(response),
        None => match app.find(req.method(), req.path()) {
            Lookup::Route(route) => Ok(route),
            Lookup::WrongMethod(allowed) => {
                Err(error_response(405, "Method Not Allowed").header("Allow", &allowed.join(", ")))
            }
            Lookup::Missing => Err(error_response(404, "Not Found")),
        },
    };
    let route = match route {
        Ok(route) => route,
        Err(response) => {
            let keep = keep && !has_body;
            if keep {
                reader.buf.drain(..consumed);
            }
            return respond(app, conn, &req, response, keep, started, None);
        }
    };

    if has_body && expect && req.version() == Version::Http11 {
        let _ = (&conn.socket).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    match reader.read_body(framing, consumed, &app.config) {
        Ok(body) => req.set_body(body),
        Err(refusal) => return refuse(app, conn, &req, refusal, started),
    }

    let answer = panic::catch_unwind(AssertUnwindSafe(|| match &route.handler {
        Handler::Plain(handler) => Err(handler(&req)),
        Handler::Stream(handler) => handler(&req),
    }));
    match answer {
        Ok(Ok(accept)) if accept.head.is_valid() => {
            serve_stream(app, conn, &req, accept, started);
            false
        }
        // An invalid accept is a 500, as an invalid response is.
        Ok(Ok(accept)) => respond(app, conn, &req, accept.head, keep, started, None),
        Ok(Err(response)) => respond(app, conn, &req, response, keep, started, None),
        Err(payload) => {
            count(&app.shared.panics);
            let why = panic_message(&*payload);
            let response = error_response(500, "Internal Server Error");
            respond(app, conn, &req, response, false, started, Some(&why))
        }
    }
}

/// Sends the event-stream head and runs the accepted body on this thread.
fn serve_stream(app: &Arc<App>, conn: &Arc<Conn>, req: &Request, accept: Accept, started: Instant) {
    // HTTP/1.1 clients get one chunk per event; HTTP/1.0 ones (nginx's
    // default upstream requests among them) a body that ends with the
    // connection. See the module docs for why.
    let chunked = req.version() == Version::Http11;
    let head = app.with_cors(req, accept.head);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n");
    for default in ["Cache-Control: no-cache\r\n", "X-Accel-Buffering: no\r\n"] {
        let name = &default[..default.find(':').unwrap_or(0)];
        if head.get_header(name).is_none() {
            out.extend_from_slice(default.as_bytes());
        }
    }
    out.extend_from_slice(b"Connection: close\r\n");
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    head.write_headers(&mut out);
    out.extend_from_slice(b"\r\n");
    let head_only = req.method() == "HEAD";
    if !head_only {
        let mut first = Vec::new();
        if let Some(text) = &app.config.connected_comment {
            crate::event::push_lines(&mut first, b"", text);
        }
        if let Some(delay) = app.config.initial_retry {
            crate::event::push_retry(&mut first, delay);
        }
        push_body(&mut out, &first, chunked);
    }
    let _ = conn.socket.set_nodelay(true);
    // Before the write: a client may react to the head (post an event of
    // its own) before `write_all` returns here.
    let head_sent = Instant::now();
    let sent = (&conn.socket).write_all(&out).is_ok();
    app.log(&LogEntry {
        remote: Some(conn.remote),
        method: req.method(),
        path: req.path(),
        status: 200,
        bytes: if sent { out.len() as u64 } else { 0 },
        duration: started.elapsed(),
        kind: LogKind::Request,
        error: None,
    });
    if !sent || head_only {
        return;
    }
    let shared = Arc::new(StreamShared {
        conn: conn.clone(),
        app: app.clone(),
        state: Mutex::new(StreamState {
            writer: EventWriter::new(SocketWriter {
                conn: conn.clone(),
                chunked,
                framing_bytes: 0,
            }),
            last_write: Instant::now(),
            error: None,
            keep_alive_bytes: 0,
            ended_by: None,
        }),
        wake: Condvar::new(),
        closed: AtomicBool::new(false),
        detached: AtomicBool::new(false),
        chunked,
        head_sent,
        method: req.method().to_string(),
        path: req.path().to_string(),
        started,
        head_bytes: out.len() as u64,
        last_event_id: crate::hub::last_event_id(req),
    });
    app.shared.open_streams.fetch_add(1, Ordering::SeqCst);
    lock(&app.shared.streams).push(Arc::downgrade(&shared));
    if app.shared.shutting_down.load(Ordering::SeqCst) {
        shared.close_with(b"");
    }
    // Keep a reference until the handler returns, to record why it ended;
    // the stream closes when the last reference goes (here, or later if the
    // handler handed the stream to another thread).
    let keep = shared.clone();
    let stream = EventStream { shared };
    let ended_by = match panic::catch_unwind(AssertUnwindSafe(|| (accept.body)(stream))) {
        Ok(Ok(())) => None,
        // A send that failed because the client left is the normal end.
        Ok(Err(e)) if e.is::<SendError>() => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(payload) => {
            count(&app.shared.panics);
            // No last chunk: the client must see a broken body, not an end.
            let state = lock(&keep.state);
            keep.mark_closed();
            drop(state);
            Some(panic_message(&*payload))
        }
    };
    lock(&keep.state).ended_by = ended_by;
}

/// `Write` for the shared socket of a stream. In a chunked body every call
/// writes one whole chunk (`EventWriter` calls it once per event), so an
/// event is never split over chunks and nothing waits for more data.
struct SocketWriter {
    conn: Arc<Conn>,
    chunked: bool,
    /// Bytes of chunk framing written (chunk-size lines and CRLFs), which
    /// the writer's own count leaves out.
    framing_bytes: u64,
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let socket = &self.conn.socket;
        if !self.chunked || buf.is_empty() {
            return (&*socket).write(buf);
        }
        let mut head = [0u8; 18];
        let n = http::chunk_head(buf.len(), &mut head);
        let mut slices = [
            io::IoSlice::new(&head[..n]),
            io::IoSlice::new(buf),
            io::IoSlice::new(http::CHUNK_END),
        ];
        let mut left = &mut slices[..];
        while !left.is_empty() {
            match (&*socket).write_vectored(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => io::IoSlice::advance_slices(&mut left, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.framing_bytes = self
            .framing_bytes
            .saturating_add((n + http::CHUNK_END.len()) as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends `data` to a stream's body: as one chunk when it is chunked.
fn push_body(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let mut head = [0u8; 18];
        let n = http::chunk_head(data.len(), &mut head);
        out.extend_from_slice(&head[..n]);
    }
    out.extend_from_slice(data);
    if chunked {
        out.extend_from_slice(http::CHUNK_END);
    }
}

struct StreamState {
    writer: EventWriter<SocketWriter>,
    last_write: Instant,
    error: Option<io::ErrorKind>,
    /// Bytes written besides the writer's (keep-alives, fan-out writes,
    /// the goodbye, the last chunk).
    keep_alive_bytes: u64,
    ended_by: Option<String>,
}

/// One open event stream, shared by its [`EventStream`] handle and the
/// server's registry (which keeps it alive only while the handle lives).
struct StreamShared {
    conn: Arc<Conn>,
    app: Arc<App>,
    /// The write lock: every write to the socket takes it, so keep-alives,
    /// the shutdown goodbye and the handler's events never interleave.
    state: Mutex<StreamState>,
    wake: Condvar,
    closed: AtomicBool,
    /// Handed to a hub, whose fan-out thread writes, probes and sends
    /// keep-alives itself: the ticker leaves the stream alone.
    detached: AtomicBool,
    /// Each write is one chunk of a chunked body (HTTP/1.1), rather than
    /// bytes of a body that ends when the connection closes (HTTP/1.0).
    chunked: bool,
    /// When the response head was sent.
    head_sent: Instant,
    method: String,
    path: String,
    started: Instant,
    head_bytes: u64,
    last_event_id: Option<String>,
}

impl StreamShared {
    fn write(
        &self,
        write: impl FnOnce(&mut EventWriter<SocketWriter>) -> io::Result<()>,
    ) -> Result<(), SendError> {
        let mut state = lock(&self.state);
        if self.closed.load(Ordering::SeqCst) {
            return Err(SendError(state.error));
        }
        match write(&mut state.writer) {
            Ok(()) => {
                state.last_write = Instant::now();
                Ok(())
            }
            Err(e) => {
                state.error = Some(e.kind());
                self.mark_closed();
                Err(SendError(state.error))
            }
        }
    }

    /// Marks the stream closed, shuts the socket's write side (the client
    /// sees the end; the staged close reads what it still sends) and wakes
    /// sleepers. Called with the state locked, so no write is in progress.
    fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.conn.socket.shutdown(Shutdown::Write);
        self.wake.notify_all();
    }

    /// Ends the stream after writing `goodbye` (if any), waiting at most
    /// 100 ms for a client that does not read.
    fn close_with(&self, goodbye: &[u8]) {
        let mut state = lock(&self.state);
        if !self.closed.load(Ordering::SeqCst) {
            let mut bytes = Vec::new();
            push_body(&mut bytes, goodbye, self.chunked);
            if self.chunked {
                bytes.extend_from_slice(http::LAST_CHUNK);
            }
            if !bytes.is_empty() {
                let _ = self
                    .conn
                    .socket
                    .set_write_timeout(Some(Duration::from_millis(100)));
                if (&self.conn.socket).write_all(&bytes).is_ok() {
                    state.keep_alive_bytes =
                        state.keep_alive_bytes.saturating_add(bytes.len() as u64);
                }
            }
        }
        self.mark_closed();
    }

    /// Ends a chunked body cleanly (the last chunk), without blocking, if
    /// the stream is still open; then closes it. Call only between chunks.
    fn end(&self) {
        let mut state = lock(&self.state);
        if self.chunked && !self.closed.load(Ordering::SeqCst) {
            let socket = &self.conn.socket;
            if socket.set_nonblocking(true).is_ok() {
                if let Ok(n) = (&*socket).write(http::LAST_CHUNK) {
                    state.keep_alive_bytes = state.keep_alive_bytes.saturating_add(n as u64);
                }
            }
        }
        self.mark_closed();
    }

    /// The ticker's visit, and `is_closed`: checks without blocking whether
    /// the client closed or reset the connection, and (with `keep_alive`)
    /// sends a keep-alive comment if the stream was idle that long. Runs with
    /// the state locked, so the socket can be switched to non-blocking mode
    /// for a moment without disturbing a writer. Returns whether the stream
    /// is closed.
    fn check(&self, state: &mut StreamState, keep_alive: Option<Duration>) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return true;
        }
        let socket = &self.conn.socket;
        if socket.set_nonblocking(true).is_err() {
            self.mark_closed();
            return true;
        }
        let mut byte = [0u8; 1];
        let mut gone = match socket.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false, // the client sent bytes: ignored, it is alive
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        if let Some(interval) = keep_alive.filter(|_| !gone) {
            if state.last_write.elapsed() >= interval {
                let frame: &[u8] = if self.chunked {
                    b"2\r\n:\n\r\n"
                } else {
                    b":\n"
                };
                match (&*socket).write(frame) {
                    Ok(n) if n == frame.len() => {
                        state.last_write = Instant::now();
                        state.keep_alive_bytes = state.keep_alive_bytes.saturating_add(n as u64);
                    }
                    // A full socket buffer: the client is not reading. The
                    // next send blocks and times out; nothing to do now.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Part of a keep-alive, or an error: the framing cannot
                    // be repaired without blocking, so the stream ends (the
                    // client reconnects).
                    _ => gone = true,
                }
            }
        }
        let _ = socket.set_nonblocking(false);
        if gone {
            self.mark_closed();
        }
        gone
    }
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        // A stream whose handler (or hub) let go of it between events ends
        // its body cleanly; one closed by an error was closed already.
        self.end();
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let bytes = [
            state.writer.bytes_written(),
            state.writer.get_ref().framing_bytes,
            state.keep_alive_bytes,
        ]
        .iter()
        .fold(self.head_bytes, |sum, &n| sum.saturating_add(n));
        self.app.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
        let _ = self.conn.socket.shutdown(Shutdown::Write);
        self.app.log(&LogEntry {
            remote: Some(self.conn.remote),
            method: &self.method,
            path: &self.path,
            status: 200,
            bytes,
            duration: self.started.elapsed(),
            kind: LogKind::StreamEnd,
            error: state.ended_by.as_deref(),
        });
    }
}

/// An open `text/event-stream` response: send events until the client goes
/// away or the server shuts down.
///
/// Every send is one write of the whole event followed by a flush; a send
/// blocks at most the server's [`write_timeout`](Server::write_timeout).
/// Once a send fails, or the stream is found closed, every later call fails
/// with [`SendError`]. Dropping the `EventStream` closes the connection.
pub struct EventStream {
    shared: Arc<StreamShared>,
}

impl EventStream {
    /// Sends one event.
    pub fn send(&mut self, event: &Event) -> Result<(), SendError> {
        self.shared.write(|w| w.send(event))
    }

    /// Sends an event encoded once for many streams.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), SendError> {
        self.shared.write(|w| w.send_frame(frame))
    }

    /// Sends a comment (clients ignore it).
    pub fn comment(&mut self, text: &str) -> Result<(), SendError> {
        self.shared.write(|w| w.comment(text))
    }

    /// Sends a `retry:` hint: the client's reconnection delay.
    pub fn retry(&mut self, delay: Duration) -> Result<(), SendError> {
        self.shared.write(|w| w.retry(delay))
    }

    /// Whether the stream has ended: a send failed, the server is shutting
    /// down, or the client closed the connection (checked now, without
    /// blocking and without sending anything).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        let mut state = lock(&self.shared.state);
        self.shared.check(&mut state, None)
    }

    /// Sleeps for `duration`, returning early with an error as soon as the
    /// stream is found closed (by the server's ticker, at least once a
    /// second, or by shutdown).
    pub fn sleep(&self, duration: Duration) -> Result<(), SendError> {
        let deadline = Instant::now() + duration;
        let mut state = lock(&self.shared.state);
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(SendError(state.error));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            state = self
                .shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The `Last-Event-ID` header of the request, if it had one: where a
    /// reconnecting client wants to resume.
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        self.shared.last_event_id.as_deref()
    }

    /// The client's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.conn.remote
    }

    /// Bytes sent on this stream so far (events only, not the head).
    #[must_use]
    pub fn bytes_sent(&self) -> u64 {
        lock(&self.shared.state).writer.bytes_written()
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("peer", &self.shared.conn.remote)
            .field("path", &self.shared.path)
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish()
    }
}

/// A send on an [`EventStream`] failed: the stream is closed (the client
/// went away, a write timed out, or the server is shutting down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendError(Option<io::ErrorKind>);

impl SendError {
    /// The I/O error that closed the stream, if it was closed by one (rather
    /// than by shutdown or by the client closing the connection).
    #[must_use]
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.0
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(kind) => write!(f, "event stream closed: {kind}"),
            None => f.write_str("event stream closed"),
        }
    }
}

impl std::error::Error for SendError {}

impl EventStream {
    /// Hands the stream to a fan-out thread that writes to many streams
    /// without blocking: the socket becomes non-blocking for good, and the
    /// server's ticker stops visiting it.
    pub(crate) fn detach(self) -> Detached {
        let state = lock(&self.shared.state);
        self.shared.detached.store(true, Ordering::SeqCst);
        if self.shared.conn.socket.set_nonblocking(true).is_err() {
            self.shared.mark_closed();
        }
        drop(state);
        Detached {
            shared: self.shared,
        }
    }
}

/// A stream owned by a fan-out thread: non-blocking writes, possibly
/// partial, that the owner tracks itself.
pub(crate) struct Detached {
    shared: Arc<StreamShared>,
}

impl Detached {
    /// One non-blocking vectored write (`WouldBlock` when the client's
    /// socket buffer is full).
    pub(crate) fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut state = lock(&self.shared.state);
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match (&self.shared.conn.socket).write_vectored(bufs) {
            Ok(n) => {
                state.keep_alive_bytes = state.keep_alive_bytes.saturating_add(n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) => {
                state.error = Some(e.kind());
                self.shared.mark_closed();
                Err(e)
            }
        }
    }

    /// Whether the client closed or reset the connection (checked without
    /// blocking), or the stream was closed by the server.
    pub(crate) fn is_gone(&self) -> bool {
        let _state = lock(&self.shared.state);
        if self.shared.closed.load(Ordering::SeqCst) {
            return true;
        }
        let mut byte = [0u8; 1];
        let gone = match self.shared.conn.socket.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        if gone {
            self.shared.mark_closed();
        }
        gone
    }

    /// Closes the connection now. `between_frames`: nothing was written in
    /// part, so a chunked body can be ended cleanly with the last chunk.
    pub(crate) fn close(&self, between_frames: bool) {
        if between_frames {
            self.shared.end();
        } else {
            let _state = lock(&self.shared.state);
            self.shared.mark_closed();
        }
    }

    /// Whether every frame must be sent as one chunk of a chunked body.
    pub(crate) fn chunked(&self) -> bool {
        self.shared.chunked
    }

    /// The server's write timeout, which the socket still carries.
    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.shared.conn.socket.write_timeout().ok().flatten()
    }

    /// When the response head was sent: events published since then are
    /// the stream's to receive.
    pub(crate) fn head_sent(&self) -> Instant {
        self.shared.head_sent
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn stats_to_prometheus_exact_text() {
        let stats = Stats {
            open_connections: 3,
            open_streams: 2,
            requests: 10,
            rejected: 1,
            panics: 0,
            bad_requests: 4,
            accept_errors: 5,
        };
        let expected = "\
# HELP stdsse_server_connections_open Connections open now.
# TYPE stdsse_server_connections_open gauge
stdsse_server_connections_open 3
# HELP stdsse_server_streams_open Event streams open now.
# TYPE stdsse_server_streams_open gauge
stdsse_server_streams_open 2
# HELP stdsse_server_requests_total Requests answered.
# TYPE stdsse_server_requests_total counter
stdsse_server_requests_total 10
# HELP stdsse_server_rejected_total Connections refused with 503.
# TYPE stdsse_server_rejected_total counter
stdsse_server_rejected_total 1
# HELP stdsse_server_panics_total Handler panics caught.
# TYPE stdsse_server_panics_total counter
stdsse_server_panics_total 0
# HELP stdsse_server_bad_requests_total Requests refused as malformed, too large or too slow.
# TYPE stdsse_server_bad_requests_total counter
stdsse_server_bad_requests_total 4
# HELP stdsse_server_accept_errors_total Failed accept calls.
# TYPE stdsse_server_accept_errors_total counter
stdsse_server_accept_errors_total 5
";
        assert_eq!(stats.to_prometheus(), expected);
    }
}
