//! The HTTP/1.1 server: a thread per connection, routing, event streams,
//! limits and graceful shutdown.
//!
//! One thread accepts; past [`Server::max_connections`], or out of
//! descriptors (it keeps a spare one to accept with), it answers `503`
//! itself. A ticker thread sends keep-alives and notices clients that left.
//! Every wait and size is bounded by a setting of [`Server`].
//!
//! A connection closes in stages (RFC 9112 9.6), so that unread bytes do
//! not turn the close into a reset that destroys the response.
//!
//! # Event streams
//!
//! The head is `200`, `Content-Type: text/event-stream`, `Connection:
//! close`, `Cache-Control: no-cache` and `X-Accel-Buffering: no` unless the
//! [`Accept`] sets them. An HTTP/1.1 body has one chunk per event (clients
//! such as `sseclient-py` read an unframed body in blocks); an HTTP/1.0
//! body ends with the connection.

mod conn;
mod route;

use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use std::{io, thread};

use crate::event::Event;
use crate::http::{Limits, Request, Response, Version};
use crate::stream::{goodbye, tick, StreamShared};
use crate::util::{later, lock, spawn, wait_until};
use conn::Conn;
use route::{Boxed, Route};

pub use crate::stream::{EventStream, SendError};
pub use route::Cors;

/// What an event-stream body may return: an error ends the stream as
/// `Ok(())` does, and is logged.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A plain route's handler: any `Fn(&Request) -> Response + Send + Sync + 'static`.
pub trait Handler: Fn(&Request) -> Response + Send + Sync + 'static {}
impl<F: Fn(&Request) -> Response + Send + Sync + 'static> Handler for F {}

/// An event-stream route's handler: any `Fn(&Request) -> Result<Accept,
/// Response> + Send + Sync + 'static`.
pub trait SseHandler: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static {}
impl<F: Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static> SseHandler for F {}

type BodyFn = dyn FnOnce(EventStream) -> Result<(), HandlerError> + Send;
type LogFn = dyn Fn(&LogEntry<'_>) + Send + Sync;

/// An event-stream handler's yes: the body that runs on the stream, and
/// extra headers for its head.
pub struct Accept {
    head: Response,
    body: Box<BodyFn>,
}

impl Accept {
    /// Accepts: `body` runs on the connection's thread once the head is sent.
    pub fn new(
        body: impl FnOnce(EventStream) -> Result<(), HandlerError> + Send + 'static,
    ) -> Accept {
        Accept { head: Response::new(200), body: Box::new(body) }
    }

    /// Adds a header (`Cache-Control`, `X-Accel-Buffering` replace the
    /// defaults); one [`Response::header`] refuses, or a framing header the
    /// server owns, makes the answer a `500`.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Accept {
        self.head = self.head.checked_header(name, value, true);
        self
    }
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept").field("head", &self.head).finish_non_exhaustive()
    }
}

/// What the [log hook](Server::log) is told: once per request, stream end,
/// refused connection and failed `accept`.
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
    /// From the request's start to the response (for a stream: to its end).
    pub duration: Duration,
    /// What the entry is about.
    pub kind: LogKind,
    /// Why: a body's error, a panic, a refusal's or `500`'s reason.
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
    /// The accept thread refused a connection (`503`, or no thread).
    Rejected,
    /// `accept` failed (interruptions aside); the server backs off.
    AcceptError,
}

stats! {
    /// A snapshot of the server's counters.
    pub struct Stats("stdsse_server_") {
        /// Each has a thread or an open event stream.
        open_connections: usize, "connections_open", "gauge", "Connections open now.";
        open_streams: usize, "streams_open", "gauge", "Event streams open now.";
        requests: u64, "requests_total", "counter", "Requests answered.";
        /// `max_connections`, or a failed spawn.
        rejected: u64, "rejected_total", "counter", "Connections refused with 503.";
        panics: u64, "panics_total", "counter", "Handler panics caught.";
        bad_requests: u64, "bad_requests_total", "counter", "Requests refused as malformed, too large or too slow.";
        accept_errors: u64, "accept_errors_total", "counter", "Failed accept calls.";
    }
}

/// State shared by all the server's threads and handles.
#[derive(Debug, Default)]
struct Shared {
    local_addr: Option<SocketAddr>,
    shutting_down: AtomicBool,
    stats: Mutex<Stats>,
    /// Both pruned by the ticker (and the connections when twice the limit).
    connections: Mutex<Vec<Weak<Conn>>>,
    streams: Mutex<Vec<Weak<StreamShared>>>,
    /// Signalled when a connection closes; `stop` at shutdown.
    closed: Condvar,
    closed_lock: Mutex<()>,
    stop: Condvar,
}

impl Shared {
    /// Adds one to a counter, stopping at its maximum rather than wrapping.
    fn count(&self, counter: fn(&mut Stats) -> &mut u64) {
        let mut stats = lock(&self.stats);
        let n = counter(&mut stats);
        *n = n.saturating_add(1);
    }
}

/// An HTTP/1.1 server that gives every connection its own thread,
/// configured through `&mut self` methods as `std::process::Command` is
/// (example in [the crate docs](crate#serving-events)).
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
    fn log(&self, entry: LogEntry<'_>) {
        if let Some(log) = &self.log {
            log(&entry);
        }
    }

    /// For the accept thread: no request, no duration.
    fn log_refusal(&self, remote: Option<SocketAddr>, sent: (u16, u64), kind: LogKind, why: &str) {
        let ((status, bytes), duration, error) = (sent, Duration::ZERO, Some(why));
        self.log(LogEntry { remote, method: "-", path: "-", status, bytes, duration, kind, error });
    }
}

/// Declares `Config` and its defaults, and for each field a `Server` setter:
/// `(T => f)` takes a `T` and stores `f(value)`; `()`: no setter.
macro_rules! config {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr $(, $set:tt)?;)*) => {
        builder! { struct Config { $($name: $ty = $default,)* } }

        impl Server {
            $(config!(@set $(#[$doc])* $name: $ty $(, $set)?);)*
        }
    };
    (@set $(#[$doc:meta])* $name:ident: $ty:ty) => {
        config!(@set $(#[$doc])* $name: $ty, ($ty => std::convert::identity));
    };
    (@set $(#[$doc:meta])* $name:ident: $ty:ty, ()) => {};
    (@set $(#[$doc:meta])* $name:ident: $ty:ty, ($param:ty => $map:expr)) => {
        $(#[$doc])*
        pub fn $name(&mut self, value: $param) -> &mut Server {
            self.app.config.$name = $map(value);
            self
        }
    };
}

config! {
    /// Request head and body size limits (see [`Limits`]; past one, `413`, `414` or `431`).
    limits: Limits = Limits::default();
    /// Total time for a request head from the connection's start or the
    /// request's first byte (default 10 s), against slowloris; then `408`.
    head_timeout: Duration = Duration::from_secs(10);
    /// How long a persistent connection may hold a thread waiting for its
    /// next request (default 30 s).
    idle_timeout: Duration = Duration::from_secs(30);
    /// Total time for a request body (default 30 s; past it, `408`).
    body_timeout: Duration = Duration::from_secs(30);
    /// How long one write may block on a client that does not read (default
    /// 10 s); then the connection closes.
    write_timeout: Duration = Duration::from_secs(10);
    /// The most connections open at once, against thread and descriptor
    /// exhaustion; default: the soft limit on open files
    /// (`/proc/self/limits`, else 1024) minus 64, at most 1024.
    max_connections: usize = default_max_connections();
    /// How long a staged close waits for a client that neither reads nor
    /// closes (default 2 s; it reads at most 1 MiB).
    linger_timeout: Duration = Duration::from_secs(2);
    /// Connection threads' stack size (default 128 KiB; raise it for
    /// handlers that recurse deeply or keep large arrays on the stack).
    stack_size: usize = 128 * 1024;
    /// After this long without a write, a stream gets a `:` comment
    /// (default 15 s, the standard's advice; `None`: never).
    keep_alive: Option<Duration> = Some(Duration::from_secs(15));
    /// A `retry:` sent first on every stream (default none).
    initial_retry: Option<Duration> = None;
    /// How long shutdown waits for connection threads (default 5 s).
    shutdown_timeout: Duration = Duration::from_secs(5);
    /// An event sent to every open stream at shutdown (default none).
    shutdown_event: Option<Event> = None;
    /// A comment sent first on every stream, with the head (default none).
    connected_comment: Option<String> = None,
        (Option<&str> => |text: Option<&str>| text.map(str::to_string));
    /// Enables CORS (off by default: no cross-origin headers are sent).
    cors: Option<Cors> = None, (Cors => Some);
    shutdown_retry: Option<(Duration, Duration)> = None, ();
}

impl Server {
    /// Binds now, so the address (port 0 picks one) is known before `run`.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let shared = Shared { local_addr: Some(listener.local_addr()?), ..Shared::default() };
        let (config, shared) = (Config::default(), Arc::new(shared));
        let app = App { config, routes: Vec::new(), log: None, shared };
        Ok(Server { listener, app })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    /// A handle to stop the server and read its stats.
    #[must_use]
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle { shared: self.app.shared.clone() }
    }

    /// The server's counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        *lock(&self.app.shared.stats)
    }

    /// Routes `method` requests for exactly `path`; `GET` also answers `HEAD`.
    pub fn route(&mut self, method: &str, path: &str, handler: impl Handler) -> &mut Server {
        self.add(method, path, false, Box::new(move |req| Err(handler(req))))
    }

    /// Like [`route`](Server::route) for every path starting with `prefix`;
    /// exact routes win, then the longest prefix.
    pub fn route_prefix(
        &mut self,
        method: &str,
        prefix: &str,
        handler: impl Handler,
    ) -> &mut Server {
        self.add(method, prefix, true, Box::new(move |req| Err(handler(req))))
    }

    /// Shorthand for `route("GET", path, handler)`.
    pub fn get(&mut self, path: &str, handler: impl Handler) -> &mut Server {
        self.route("GET", path, handler)
    }

    /// Shorthand for `route("POST", path, handler)`.
    pub fn post(&mut self, path: &str, handler: impl Handler) -> &mut Server {
        self.route("POST", path, handler)
    }

    /// Serves an event stream on `GET path` (`HEAD`: the head only); the
    /// handler runs once the body is read: `Err` is sent, `Ok` streams.
    pub fn sse(&mut self, path: &str, handler: impl SseHandler) -> &mut Server {
        self.sse_route("GET", path, handler)
    }

    /// Like [`sse`](Server::sse) for another method.
    pub fn sse_route(&mut self, method: &str, path: &str, handler: impl SseHandler) -> &mut Server {
        self.add(method, path, false, Box::new(handler))
    }

    fn add(&mut self, method: &str, path: &str, prefix: bool, handler: Boxed) -> &mut Server {
        self.app.routes.push(Route { method: method.into(), path: path.into(), prefix, handler });
        self
    }

    /// The log hook; it runs on the connection's thread: keep it quick.
    pub fn log(&mut self, log: impl Fn(&LogEntry<'_>) + Send + Sync + 'static) -> &mut Server {
        self.app.log = Some(Box::new(log));
        self
    }

    /// A `retry:` sent to every stream at shutdown: `base` plus up to
    /// `jitter`, random per stream (default none).
    pub fn shutdown_retry(&mut self, base: Duration, jitter: Duration) -> &mut Server {
        self.app.config.shutdown_retry = Some((base, jitter));
        self
    }

    /// Serves until [`ShutdownHandle::shutdown`], then shuts down gracefully.
    pub fn run(self) -> io::Result<()> {
        let app = Arc::new(self.app);
        let shared = &app.shared;
        let ticker_app = app.clone();
        let ticker = spawn("stdsse-ticker".into(), Some(64 * 1024), move || ticker(&ticker_app))?;
        accept_loop(&self.listener, &app);
        drop(self.listener);
        let deadline = later(app.config.shutdown_timeout);
        shutdown_connections(&app, deadline);
        let mut guard = lock(&shared.closed_lock);
        while lock(&shared.stats).open_connections > 0 && Instant::now() < deadline {
            guard = wait_until(&shared.closed, guard, Some(deadline)).unwrap_or_else(|g| g);
        }
        drop(guard);
        shared.stop.notify_all();
        let _ = ticker.join();
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr()).finish_non_exhaustive()
    }
}

/// Stops a server and reads its stats, from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown and returns: stops accepting, ends every
    /// stream (after the shutdown event and `retry:`; one a write is blocked
    /// on, or a hub's, is cut: close the hub first), lets requests that have
    /// arrived finish (one still arriving gets 503) and waits up to
    /// [`Server::shutdown_timeout`] for them, in all.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.stop.notify_all();
        // The accept thread is blocked in accept(): connect once to wake it.
        let mut addr = self.local_addr();
        if addr.ip().is_unspecified() {
            let v4 = addr.is_ipv4();
            addr.set_ip(if v4 { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
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
        *lock(&self.shared.stats)
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr.expect("set by bind")
    }
}

const SPARE: &str = if cfg!(windows) { "NUL" } else { "/dev/null" };

fn default_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"));
    let limit = line.and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(1024);
    u64::saturating_sub(limit, 64).clamp(1, 1024) as usize
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
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.count(|s| &mut s.accept_errors);
                app.log_refusal(None, (0, 0), LogKind::AcceptError, &e.to_string());
                if out_of_descriptors(&e) && spare.is_some() {
                    // Free the spare for one accept: its client gets a 503 now.
                    drop(spare.take());
                    if let Ok((socket, remote)) = listener.accept() {
                        reject(socket, remote, app, "out of descriptors");
                    }
                } else {
                    // ENOBUFS, ECONNABORTED...: usually temporary.
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                spare = spare.or_else(|| std::fs::File::open(SPARE).ok());
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        if shared.shutting_down.load(Ordering::SeqCst) {
            break;
        }
        if lock(&shared.stats).open_connections >= app.config.max_connections {
            reject(socket, remote, app, "max_connections reached");
            continue;
        }
        lock(&shared.stats).open_connections += 1;
        let conn = Arc::new(Conn { socket, remote, server: shared.clone() });
        let mut conns = lock(&shared.connections);
        if conns.len() >= 2 * app.config.max_connections {
            conns.retain(|c| c.strong_count() > 0);
        }
        conns.push(Arc::downgrade(&conn));
        drop(conns);
        let (app2, stack) = (app.clone(), Some(app.config.stack_size));
        if let Err(e) = spawn("stdsse-conn".into(), stack, move || conn::serve(&app2, conn)) {
            // The connection was dropped with the closure: it closes.
            shared.count(|s| &mut s.rejected);
            app.log_refusal(Some(remote), (0, 0), LogKind::Rejected, &format!("no thread: {e}"));
        }
    }
}

/// Answers 503 on the accept thread without blocking (the answer fits any
/// socket buffer; the close drops only what has arrived), so a flood
/// cannot hold it.
fn reject(socket: TcpStream, remote: SocketAddr, app: &App, why: &str) {
    app.shared.count(|s| &mut s.rejected);
    let _ = socket.set_nonblocking(true);
    let response = Response::error(503, "server at capacity").header("Retry-After", "1");
    let bytes = response.send(&socket, Version::Http11, false, true);
    conn::close_staged(&socket, Duration::ZERO);
    app.log_refusal(Some(remote), (503, bytes), LogKind::Rejected, why);
}

/// Ends every stream (the goodbye may take 100 ms each, until `deadline`)
/// and wakes every connection thread blocked reading.
fn shutdown_connections(app: &App, deadline: Instant) {
    let streams: Vec<_> = lock(&app.shared.streams).drain(..).collect();
    let (event, retry) = (app.config.shutdown_event.as_ref(), app.config.shutdown_retry);
    for stream in streams.iter().filter_map(Weak::upgrade) {
        let wait =
            deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        stream.shut_down(&goodbye(event, retry), wait);
    }
    let conns = lock(&app.shared.connections).clone();
    for conn in conns.iter().filter_map(Weak::upgrade) {
        // Read side only: a response being written still completes.
        let _ = conn.socket.shutdown(Shutdown::Read);
    }
}

/// Visits every stream at least once a second (see [`StreamShared::tick`]).
fn ticker(app: &App) {
    let shared = &app.shared;
    let tick = tick(app.config.keep_alive);
    let mut guard = lock(&shared.closed_lock);
    while !shared.shutting_down.load(Ordering::SeqCst) {
        drop(wait_until(&shared.stop, guard, Some(Instant::now() + tick)));
        let mut streams = Vec::new();
        lock(&shared.streams).retain(|s| s.upgrade().map(|s| streams.push(s)).is_some());
        lock(&shared.connections).retain(|c| c.strong_count() > 0);
        for stream in streams {
            stream.tick(app.config.keep_alive);
        }
        guard = lock(&shared.closed_lock);
    }
}
