//! The HTTP/1.1 server: a thread per connection, routing, SSE streams,
//! limits and graceful shutdown.
//!
//! # Threads
//!
//! One thread accepts connections and gives each its own thread (with a
//! small stack). Past [`Server::max_connections`] the accept thread answers
//! `503` with `Retry-After` itself, spawning nothing. It keeps one
//! descriptor in reserve: when `accept` fails for lack of descriptors, it
//! frees it for one accept and answers that client `503` at once, so a
//! flood past the descriptor limit cannot leave clients waiting in the
//! listen backlog. One more thread, the ticker, sends keep-alives on idle
//! event streams and notices clients that went away.
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
//! shut first, then what the client still sends is read and dropped until
//! it closes, for at most [`linger_timeout`](Server::linger_timeout) and
//! 1 MiB. Closing at once with unread bytes (a pipelined request after
//! `Connection: close`, an unread body) would send a reset, which destroys
//! the part of the response the client has not received yet. The accept
//! thread's `503` and a stream closed by a hub drain only what has arrived.
//!
//! # Event streams
//!
//! An SSE route's handler decides before anything is written: it refuses
//! with a [`Response`], or returns an [`Accept`], whose body gets an
//! [`EventStream`] once this head is sent:
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
//! For HTTP/1.1 the body is chunked, one chunk per event, written and
//! flushed at once; a clean end sends the last chunk. For HTTP/1.0 (nginx's
//! default upstream) the body ends when the connection closes. Why not
//! close-delimited for everyone, as the standard allows? Common clients
//! read an unframed body in fixed-size blocks (`sseclient-py` over urllib3
//! waits for 128 bytes), so a short event would wait for more traffic.
//!
//! The body may keep the stream on the connection's thread or hand it to
//! another (a hub does); the connection stays open until it is dropped. A
//! dead client is noticed when a send fails, or by the ticker (at least
//! every second, without blocking) or a keep-alive that fails.
//!
//! # Graceful shutdown
//!
//! [`ShutdownHandle::shutdown`] stops accepting, ends every stream (after an
//! optional final event and a jittered `retry:` hint, so that clients do not
//! all reconnect in the same instant), lets requests in progress finish,
//! waits for connection threads up to [`Server::shutdown_timeout`], and
//! makes [`Server::run`] return.

mod conn;
mod route;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::http::{Limits, Request, Response};
use crate::stream::{goodbye, tick, StreamShared};
use crate::util::{lock, push_metric, wait_until};
use conn::Conn;
use route::{Handler, Route};

pub use crate::stream::{EventStream, SendError};
pub use route::Cors;

/// What an event-stream handler may return: any error ends the stream (and
/// is shown in the access log), exactly as `Ok(())` does.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type BodyFn = dyn FnOnce(EventStream) -> Result<(), HandlerError> + Send;
type LogFn = dyn Fn(&LogEntry<'_>) + Send + Sync;

/// An event-stream handler's yes: the body that runs on the stream, and
/// extra headers for its response head. The head is written once the
/// handler has returned, so what it decided moves into the body closure.
pub struct Accept {
    /// A `200` that carries the extra headers, validated as
    /// [`Response::header`] validates.
    head: Response,
    body: Box<BodyFn>,
}

/// Headers the server writes for a stream (its type and framing).
const STREAM_OWNED: &[&str] = &[
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
];

impl Accept {
    /// Accepts the request: `body` runs on the connection's thread once the
    /// head is sent, and owns the [`EventStream`].
    pub fn new<F>(body: F) -> Accept
    where
        F: FnOnce(EventStream) -> Result<(), HandlerError> + Send + 'static,
    {
        Accept {
            head: Response::new(200),
            body: Box::new(body),
        }
    }

    /// Adds a header to the stream's head; `Cache-Control` and
    /// `X-Accel-Buffering` replace the defaults. One that
    /// [`Response::header`] refuses, or `Content-Type`, `Content-Length`,
    /// `Transfer-Encoding`, `Connection` (the server's), makes the server
    /// answer `500` instead of streaming, and log why.
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

/// What the [log hook](Server::log) is told: once per request, once more
/// when an event stream ends, and once per refused connection and failed
/// `accept`.
#[derive(Debug)]
#[non_exhaustive]
pub struct LogEntry<'a> {
    /// The client's address (`None` for [`LogKind::AcceptError`]).
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
    /// why a request was refused (`400`, `408`, `413`...) or a response was
    /// invalid (`500`), the `accept` error.
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
    /// The accept thread refused a connection with `503` (at
    /// `max_connections`, out of descriptors, or no thread could be spawned).
    Rejected,
    /// `accept` failed (interruptions aside); the server backs off.
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
    /// Connections refused with 503 (`max_connections`, a failed spawn).
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
            self.open_connections, self.open_streams, self.requests, self.rejected, self.panics, self.bad_requests, self.accept_errors
        )
    }

    /// The counters in the Prometheus text format 0.0.4, named
    /// `stdsse_server_...`, for a `/metrics` route (content type
    /// `text/plain; version=0.0.4`).
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        #[rustfmt::skip]
        let metrics = [
            ("connections_open", "gauge", "Connections open now.", self.open_connections as u64),
            ("streams_open", "gauge", "Event streams open now.", self.open_streams as u64),
            ("requests_total", "counter", "Requests answered.", self.requests),
            ("rejected_total", "counter", "Connections refused with 503.", self.rejected),
            ("panics_total", "counter", "Handler panics caught.", self.panics),
            ("bad_requests_total", "counter", "Requests refused as malformed, too large or too slow.", self.bad_requests),
            ("accept_errors_total", "counter", "Failed accept calls.", self.accept_errors),
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

/// State shared by the accept thread, connection threads, the ticker,
/// streams and handles.
#[derive(Default)]
struct Shared {
    local_addr: Option<SocketAddr>,
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
    fn local_addr(&self) -> SocketAddr {
        self.local_addr.expect("set by bind")
    }

    fn stats(&self) -> Stats {
        let get = |n: &AtomicU64| n.load(Ordering::SeqCst);
        Stats {
            open_connections: self.open_connections.load(Ordering::SeqCst),
            open_streams: self.open_streams.load(Ordering::SeqCst),
            requests: get(&self.requests),
            rejected: get(&self.rejected),
            panics: get(&self.panics),
            bad_requests: get(&self.bad_requests),
            accept_errors: get(&self.accept_errors),
        }
    }
}

/// Adds one to a counter, stopping at its maximum rather than wrapping.
fn count(counter: &AtomicU64) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1));
}

/// An HTTP/1.1 server that gives every connection its own thread.
///
/// Configured through `&mut self` methods, as `std::process::Command` is:
/// routes and settings are added to a server that owns its bound socket.
/// An event-stream handler decides before the first byte is sent: it
/// returns a [`Response`] to refuse (`401`, `403`, `404`, `204` to tell an
/// `EventSource` to stop...) or an [`Accept`] whose body then runs on the
/// stream.
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
    app: App,
}

/// Everything a connection thread needs, frozen when `run` starts.
struct App {
    config: Config,
    routes: Vec<Route>,
    log: Option<Box<LogFn>>,
    shared: Arc<Shared>,
}

impl App {
    fn log_entry(
        &self,
        remote: Option<SocketAddr>,
        (method, path): (&str, &str),
        (status, bytes): (u16, u64),
        duration: Duration,
        kind: LogKind,
        error: Option<&str>,
    ) {
        if let Some(log) = &self.log {
            let entry = LogEntry {
                remote,
                method,
                path,
                status,
                bytes,
                duration,
                kind,
                error,
            };
            log(&entry);
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&mut self, value: $ty) -> &mut Server {
            self.app.config.$name = value;
            self
        }
    )*};
}

impl Server {
    /// Binds the listening socket now, so the real address (port 0 picks a
    /// free port) is known before [`run`](Server::run).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let shared = Shared {
            local_addr: Some(listener.local_addr()?),
            ..Shared::default()
        };
        let config = Config {
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
        };
        let app = App {
            config,
            routes: Vec::new(),
            log: None,
            shared: Arc::new(shared),
        };
        Ok(Server { listener, app })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.app.shared.local_addr()
    }

    /// A handle that can stop the server and read its stats from any thread.
    #[must_use]
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.app.shared.clone(),
        }
    }

    /// The server's counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.app.shared.stats()
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
    /// The handler runs on the connection's thread after the request body
    /// was read, before anything is written: `Err(response)` is sent as any
    /// plain response is; `Ok(accept)` sends the stream's head with the
    /// accept's headers, then runs its body (see [`Accept`]).
    pub fn sse<F>(&mut self, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static,
    {
        self.sse_route("GET", path, handler)
    }

    /// Like [`sse`](Server::sse) for another method (an API that answers a
    /// `POST` with an event stream).
    pub fn sse_route<F>(&mut self, method: &str, path: &str, handler: F) -> &mut Server
    where
        F: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static,
    {
        self.add(method, path, false, Handler::Stream(Box::new(handler)))
    }

    fn add(&mut self, method: &str, path: &str, prefix: bool, handler: Handler) -> &mut Server {
        let (method, path) = (method.to_string(), path.to_string());
        self.app.routes.push(Route {
            method,
            path,
            prefix,
            handler,
        });
        self
    }

    /// The log hook (see [`LogEntry`]). It runs on the connection's thread
    /// (the accept thread's for refusals and `accept` errors): keep it quick.
    pub fn log<F>(&mut self, log: F) -> &mut Server
    where
        F: Fn(&LogEntry<'_>) + Send + Sync + 'static,
    {
        self.app.log = Some(Box::new(log));
        self
    }

    /// Enables CORS (off by default: no cross-origin headers are sent).
    pub fn cors(&mut self, cors: Cors) -> &mut Server {
        self.app.config.cors = Some(cors);
        self
    }

    setters! {
        /// Request head and body size limits (defaults in [`Limits`]).
        limits: Limits;
        /// Total time allowed to receive a request head, from the
        /// connection's start (first request) or the request's first byte.
        /// Default 10 s; past it, `408` and close.
        head_timeout: Duration;
        /// How long a persistent connection may wait for its next request.
        /// Default 30 s; then it is closed.
        idle_timeout: Duration;
        /// Total time allowed to receive a request body. Default 30 s.
        body_timeout: Duration;
        /// How long one write may block on a client that does not read.
        /// Default 10 s; then the connection (or stream) is closed.
        write_timeout: Duration;
        /// The most connections open at once; past it, new connections get
        /// `503` with `Retry-After: 1` from the accept thread.
        ///
        /// The default fits the process's soft limit on open files (read
        /// from `/proc/self/limits` on Linux, else taken as 1024): that limit
        /// minus 64 (the listener, the spare descriptor, standard streams, a
        /// hub, the application's files), at most 1024. Set more only after
        /// raising the limit (`ulimit -n`).
        max_connections: usize;
        /// How long closing a connection may wait for the client to close
        /// its side (default 2 s): see [Closing](crate::server#closing).
        linger_timeout: Duration;
        /// The stack size of connection threads (default 128 KiB; the
        /// server's own work needs 16 KiB, a panic's backtrace 32 KiB). Raise
        /// it if handlers recurse deeply or keep large arrays on the stack.
        stack_size: usize;
        /// The keep-alive interval of event streams: after this long without
        /// a write, a comment (`:`) is sent. Default 15 s, the standard's
        /// advice; `None` disables it.
        keep_alive: Option<Duration>;
        /// A `retry:` hint sent as the first bytes of every event stream.
        /// Default none.
        initial_retry: Option<Duration>;
        /// How long shutdown waits for connection threads. Default 5 s.
        shutdown_timeout: Duration;
        /// An event sent to every open stream at shutdown. Default none.
        shutdown_event: Option<Event>;
    }

    /// A comment sent as the first bytes of every event stream, in the same
    /// write as the head (for example `connected`). Default none.
    pub fn connected_comment(&mut self, text: Option<&str>) -> &mut Server {
        self.app.config.connected_comment = text.map(str::to_string);
        self
    }

    /// A `retry:` hint sent to every open stream at shutdown: `base` plus a
    /// random part of up to `jitter`, different per stream. Default none.
    pub fn shutdown_retry(&mut self, base: Duration, jitter: Duration) -> &mut Server {
        self.app.config.shutdown_retry = Some((base, jitter));
        self
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called, then shuts down
    /// gracefully and returns.
    pub fn run(self) -> io::Result<()> {
        let Server { listener, app } = self;
        let app = Arc::new(app);
        let shared = app.shared.clone();
        let ticker = {
            let app = app.clone();
            let spawn = thread::Builder::new()
                .name("stdsse-ticker".into())
                .stack_size(64 * 1024);
            spawn.spawn(move || ticker(&app))?
        };
        accept_loop(&listener, &app);
        drop(listener);
        shutdown_connections(&app);
        let deadline = Instant::now() + app.config.shutdown_timeout;
        let mut guard = lock(&shared.closed_lock);
        while shared.open_connections.load(Ordering::SeqCst) > 0 {
            match wait_until(&shared.closed, guard, Some(deadline)) {
                Ok(next) => guard = next,
                Err(last) => {
                    guard = last;
                    break;
                }
            }
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
            .field("local_addr", &self.local_addr())
            .field("routes", &self.app.routes.len())
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
            .field("local_addr", &self.local_addr())
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
        let mut addr = self.local_addr();
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
        self.shared.local_addr()
    }
}

/// The canned answer of the accept thread when the server is full.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nserver at capacity\r\n";

/// What the spare descriptor is opened on.
const SPARE: &str = if cfg!(windows) { "NUL" } else { "/dev/null" };

/// Descriptors the default `max_connections` leaves for everything else.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The default `max_connections`: see [`Server::max_connections`].
fn default_max_connections() -> usize {
    // The soft limit on open descriptors, from `/proc/self/limits` (Linux).
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"));
    let limit = line
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024);
    u64::saturating_sub(limit, RESERVED_DESCRIPTORS).clamp(1, 1024) as usize
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
                app.log_entry(
                    None,
                    ("-", "-"),
                    (0, 0),
                    Duration::ZERO,
                    LogKind::AcceptError,
                    Some(&e.to_string()),
                );
                if out_of_descriptors(&e) && spare.is_some() {
                    // Free the spare for one accept: the client gets its
                    // 503 now rather than waiting in the backlog.
                    drop(spare.take());
                    if let Ok((socket, remote)) = listener.accept() {
                        reject(socket, remote, app, "out of descriptors");
                    }
                } else {
                    // ENOBUFS, ECONNABORTED...: usually temporary; back off
                    // instead of spinning or dying.
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                spare = spare.or_else(|| std::fs::File::open(SPARE).ok());
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
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            socket,
            id,
            remote,
            server: shared.clone(),
        });
        lock(&shared.connections).insert(id, Arc::downgrade(&conn));
        let app2 = app.clone();
        let spawn = thread::Builder::new()
            .name("stdsse-conn".into())
            .stack_size(app.config.stack_size);
        if let Err(e) = spawn.spawn(move || conn::serve(&app2, conn)) {
            // The connection was dropped with the closure: it closes.
            count(&shared.rejected);
            let why = format!("no thread: {e}");
            app.log_entry(
                Some(remote),
                ("-", "-"),
                (0, 0),
                Duration::ZERO,
                LogKind::Rejected,
                Some(&why),
            );
        }
    }
}

/// Answers 503 without a thread: a non-blocking write of the canned answer
/// (it fits any socket buffer), then a staged close that drains only what
/// has arrived, so a flood cannot hold the accept thread.
fn reject(socket: TcpStream, remote: SocketAddr, app: &App, why: &str) {
    count(&app.shared.rejected);
    let _ = socket.set_nonblocking(true);
    let bytes = (&socket).write(FULL).unwrap_or(0) as u64;
    conn::close_staged(&socket, Duration::ZERO);
    app.log_entry(
        Some(remote),
        ("-", "-"),
        (503, bytes),
        Duration::ZERO,
        LogKind::Rejected,
        Some(why),
    );
}

/// Ends every stream and wakes every connection thread blocked reading.
fn shutdown_connections(app: &App) {
    let streams: Vec<_> = lock(&app.shared.streams).drain(..).collect();
    for stream in streams.iter().filter_map(Weak::upgrade) {
        let config = &app.config;
        stream.close_with(&goodbye(
            config.shutdown_event.as_ref(),
            config.shutdown_retry,
        ));
    }
    let conns: Vec<_> = lock(&app.shared.connections).values().cloned().collect();
    for conn in conns.iter().filter_map(Weak::upgrade) {
        // Read side only: a response being written still completes.
        let _ = conn.socket.shutdown(Shutdown::Read);
    }
}

/// Sends keep-alives to idle streams and closes streams whose client went
/// away, at least once a second.
fn ticker(app: &App) {
    let shared = &app.shared;
    let tick = tick(app.config.keep_alive);
    let mut guard = lock(&shared.closed_lock);
    while !shared.shutting_down.load(Ordering::SeqCst) {
        drop(wait_until(&shared.stop, guard, Some(Instant::now() + tick)));
        let streams: Vec<_> = {
            let mut list = lock(&shared.streams);
            list.retain(|s| s.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for stream in streams {
            stream.tick(app.config.keep_alive);
        }
        guard = lock(&shared.closed_lock);
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
