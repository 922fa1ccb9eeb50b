//! For the client tests: a scripted server that misbehaves on purpose, and
//! a runner that drives a `stdsse::client::Client` on its own thread.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use stdsse::client::{ClientError, CloseHandle, Disconnect, Received};
use stdsse::http::{Framing, Limits, Status};

use super::*;

/// One request as the scripted server read it (with the project's strict
/// request parser, so a malformed request fails the test).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl Req {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    /// Every value of the headers named `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }
}

type Script = dyn Fn(usize, &Req, &mut TcpStream) + Send + Sync;

/// A server on 127.0.0.1 that gives each connection to a script, on a
/// thread of its own, with the connection's number (from 0) and its
/// request. The script writes whatever bytes it likes; the connection
/// closes when the script returns.
pub struct Scripted {
    pub addr: SocketAddr,
    requests: Receiver<Req>,
}

impl Scripted {
    pub fn start(script: impl Fn(usize, &Req, &mut TcpStream) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Scripted::on(listener, script)
    }

    /// The same on a listener bound by the caller (IPv6, say).
    pub fn on(
        listener: TcpListener,
        script: impl Fn(usize, &Req, &mut TcpStream) + Send + Sync + 'static,
    ) -> Scripted {
        let addr = listener.local_addr().expect("local address");
        let script: Arc<Script> = Arc::new(script);
        let (tx, requests) = mpsc::channel();
        // The accept thread lives as long as the test process; the test's
        // client is closed when the test ends, so it stays idle.
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let script = Arc::clone(&script);
                let tx = tx.clone();
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(WAIT));
                    let Some(req) = read_request(&mut stream) else {
                        return;
                    };
                    let _ = tx.send(req.clone());
                    script(n, &req, &mut stream);
                });
            }
        });
        Scripted { addr, requests }
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, waiting up to [`WAIT`].
    pub fn request(&self) -> Req {
        self.requests.recv_timeout(WAIT).expect("the client sent no request in time")
    }

    /// The requests that have arrived so far.
    pub fn received(&self) -> Vec<Req> {
        self.requests.try_iter().collect()
    }
}

/// Reads a request head and its `Content-Length` body.
fn read_request(stream: &mut TcpStream) -> Option<Req> {
    use stdsse::http::parse_head;
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Ok(Status::Complete((request, used))) = parse_head(&buf, &limits) {
            let mut body = buf.split_off(used);
            if let Ok(Framing::Length(n)) = request.body_framing(&limits) {
                while body.len() < n as usize {
                    let got = stream.read(&mut chunk).ok().filter(|&g| g > 0)?;
                    body.extend_from_slice(&chunk[..got]);
                }
            }
            return Some(Req {
                method: request.method().to_string(),
                target: request.target().to_string(),
                headers: request.headers().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                body,
                at: Instant::now(),
            });
        }
        if let Err(e) = parse_head(&buf, &limits) {
            panic!("invalid request from the client: {e:?}: {buf:?}");
        }
        let got = stream.read(&mut chunk).ok().filter(|&g| g > 0)?;
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Writes `bytes` and flushes; errors are ignored (the client may be gone).
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
}

/// The head of a `200` event stream, close-delimited, plus `extra` header
/// lines (each ending with CRLF).
pub fn stream_head(extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{extra}\r\n").into_bytes()
}

/// Waits until the client closes the connection (or [`WAIT`] passes):
/// holds a stream open and silent.
pub fn hold(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut sink = [0; 256];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

/// Closes the connection at once (both directions).
pub fn cut(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// The project's client, driven on its own thread
// ---------------------------------------------------------------------------

/// What the client yielded.
pub type ClientItem = Option<Result<Received, ClientError>>;

/// A client iterating on its own thread; each item is waited for with a
/// bound. Dropping the runner closes the client.
pub struct Run {
    items: Receiver<ClientItem>,
    close: CloseHandle,
}

impl Run {
    pub fn new(client: stdsse::client::Client) -> Run {
        let close = client.close_handle();
        let (tx, items) = mpsc::channel();
        thread::spawn(move || {
            for item in client {
                if tx.send(Some(item)).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        Run { items, close }
    }

    /// The next item (`None`: the iterator ended), waiting up to [`WAIT`].
    pub fn next(&self) -> ClientItem {
        match self.items.recv_timeout(WAIT) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => panic!("the client yielded nothing in {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next item, described (see [`describe`]).
    pub fn next_str(&self) -> String {
        describe(&self.next())
    }

    /// The next `n` items, described.
    pub fn take(&self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next_str()).collect()
    }

    /// The next item, which must be `Retrying`: its delay.
    pub fn retrying(&self) -> Duration {
        match self.next() {
            Some(Ok(Received::Retrying(delay))) => delay,
            other => panic!("expected Retrying, got {}", describe(&other)),
        }
    }

    /// Whether the iterator ends within `within`.
    pub fn ends_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.items.recv_timeout(left) {
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return true,
                Ok(Some(_)) => {}
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    pub fn close_handle(&self) -> CloseHandle {
        self.close.clone()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.close.close();
    }
}

/// A short text for an item: `event TYPE:DATA:ID`, `comment TEXT`,
/// `connected`, `disconnected KIND`, `retrying MSms`, `error MESSAGE`,
/// `end`.
pub fn describe(item: &ClientItem) -> String {
    match item {
        None => "end".into(),
        Some(Err(e)) => format!("error {e}"),
        Some(Ok(Received::Event(e))) => format!("event {}:{}:{}", e.event_type, e.data, e.id),
        Some(Ok(Received::Comment(c))) => format!("comment {c}"),
        Some(Ok(Received::Connected(_))) => "connected".into(),
        Some(Ok(Received::Disconnected(why))) => {
            let kind = match why {
                Disconnect::Ended => "ended",
                Disconnect::NoContent => "no content",
                Disconnect::Connect(_) => "connect",
                Disconnect::Io(_) => "io",
                Disconnect::IdleTimeout(_) => "idle",
                Disconnect::Protocol(_) => "protocol",
                _ => "other",
            };
            format!("disconnected {kind}")
        }
        Some(Ok(Received::Retrying(d))) => format!("retrying {}ms", d.as_millis()),
        Some(Ok(_)) => "other".into(),
    }
}
