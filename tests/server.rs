//! The HTTP server over real sockets on 127.0.0.1 (port 0): every status it
//! produces, limits at and past their boundaries, keep-alive, pipelining,
//! bodies, routing, hooks, event streams, shutdown and a fuzz run.
//!
//! Every wait is bounded: client sockets have read timeouts ([`WAIT`]),
//! polls have deadlines, and servers are configured with short timeouts.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::fuzz::{mutate, Rng, SPECIAL};
use common::{find, get, parse_status_line, wait_until, Client, TestServer, WAIT};
use stdsse::http::Limits;
use stdsse::server::{Cors, LogKind};
use stdsse::{Accept, Event, EventStream, Request, Response, SendError, Server};

/// The exact head of every event-stream response to an HTTP/1.1 request:
/// the body is chunked, one chunk per event.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\
    Transfer-Encoding: chunked\r\n\r\n";

/// The exact head of an event-stream response to an HTTP/1.0 request: the
/// body ends when the connection closes.
const SSE_HEAD_10: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n";

/// Small limits, so that each boundary is cheap to reach.
const SMALL: Limits = Limits {
    max_request_line: 64,
    max_header_line: 64,
    max_headers: 10,
    max_head: 512,
    max_body: 16,
};

/// The plain routes most tests use.
fn routes(s: &mut Server) {
    s.get("/", |_| Response::text(200, "hello"))
        .post("/echo", |req| {
            Response::new(200).header("X-Method", req.method()).body(req.body().to_vec())
        })
        .get("/panic", |_| panic!("handler panic (the test expects it)"))
        .get("/files/exact", |_| Response::text(200, "exact"))
        .route_prefix("GET", "/files/", |req| Response::text(200, format!("prefix {}", req.path())))
        .route_prefix("GET", "/files/deep/", |req| {
            Response::text(200, format!("deep {}", req.path()))
        })
        .route_prefix("GET", "/long/", |_| Response::text(200, "long"))
        .route("PUT", "/item", |_| Response::text(200, "put"))
        .route("DELETE", "/item", |_| Response::text(200, "deleted"));
}

/// A server with [`routes`], [`SMALL`] limits and short timeouts.
fn small_server() -> TestServer {
    TestServer::start(|s| {
        routes(s);
        s.limits(SMALL)
            .head_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_millis(300))
            .body_timeout(Duration::from_millis(300));
    })
}

/// A request line of exactly `len` bytes (CRLF not counted) for the
/// `/long/` prefix route.
fn request_line(len: usize) -> String {
    format!("GET /long/{} HTTP/1.1", "a".repeat(len - 19))
}

/// A GET / head of exactly `len` bytes in total (final CRLF included), made
/// of padding fields of at most 64 bytes each.
fn head_of_len(len: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    let mut left = len - head.len() - 2;
    while left > 0 {
        // One field line is 6..=66 bytes with its CRLF.
        let take = match left {
            66 => 66,
            n if n > 72 => 66,
            n if n > 66 => n - 6,
            n => n,
        };
        head.extend_from_slice(b"X-P:");
        head.extend(std::iter::repeat_n(b'p', take - 6));
        head.extend_from_slice(b"\r\n");
        left -= take;
    }
    head.extend_from_slice(b"\r\n");
    assert_eq!(head.len(), len);
    head
}

// ---------------------------------------------------------------------------
// Status codes
// ---------------------------------------------------------------------------

/// One line per case: what is sent on a new connection, and the status it
/// must get. After each, a normal request on a new connection must work.
#[test]
fn every_status_from_a_real_request() {
    let server = small_server();
    #[rustfmt::skip]
    let table: &[(&str, &[u8], u16)] = &[
        ("plain GET", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        ("leading empty lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200),
        ("POST with a body", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", 200),
        ("OPTIONS", b"OPTIONS /echo HTTP/1.1\r\nHost: t\r\n\r\n", 204),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 204),
        ("bad request line: two spaces", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("bad request line: bad method", b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("absolute-form", b"GET http://t/ HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        ("absolute-form, other Host", b"GET http://t/files/exact HTTP/1.1\r\nHost: u\r\n\r\n", 200),
        ("absolute-form https", b"GET https://t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("bad request line: HTTP/0.9", b"GET /\r\n\r\n", 400),
        ("malformed version HTTP/1", b"GET / HTTP/1\r\nHost: t\r\n\r\n", 400),
        ("malformed version HTTP/1.10", b"GET / HTTP/1.10\r\nHost: t\r\n\r\n", 400),
        ("malformed version http/1.1", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("bad header name", b"GET / HTTP/1.1\r\nHost: t\r\nBad(Name): x\r\n\r\n", 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        ("header without colon", b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
        ("bare LF", b"GET / HTTP/1.1\nHost: t\n\n", 400),
        ("bare LF after a field", b"GET / HTTP/1.1\r\nHost: t\n\r\n", 400),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 400),
        ("DEL in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
        ("invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        ("conflicting CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        ("negative CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
        ("chunk ext: unterminated quoted string", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"x\r\nx\r\n0\r\n\r\n", 400),
        ("trailer without colon", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nNoColon\r\n\r\n", 400),
        ("chunk data without CRLF", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
        ("no such path", b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        ("no such path, with a body", b"POST /missing HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 404),
        ("wrong method", b"DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n", 405),
        ("wrong method, with a body", b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 405),
        ("methods are case-sensitive", b"get / HTTP/1.1\r\nHost: t\r\n\r\n", 405),
        ("CL over max_body", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n01234567890123456", 413),
        ("chunked over max_body", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n", 413),
        ("Expect: something-else", b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nhi", 417),
        ("handler panic", b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n", 500),
        ("Transfer-Encoding: gzip", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("Transfer-Encoding: chunked, gzip", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: gzip, chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("chunked in HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/1.2, read as 1.1 (RFC 9110 2.5)", b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 200),
        ("HTTP/1.9 without Host", b"GET / HTTP/1.9\r\n\r\n", 400),
    ];
    for &(name, request, status) in table {
        let mut client = server.client();
        client.send(request);
        let resp = client.response();
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        // The version is ours, 1.1, whatever the request's (RFC 9110 2.5);
        // the reason phrase is the standard one.
        let reason = stdsse::http::reason_phrase(status);
        assert_eq!(resp.status_line, format!("HTTP/1.1 {status} {reason}"), "{name}");
        if status >= 400 && !matches!(status, 404 | 405) {
            // A bad request ends the connection, cleanly.
            assert_eq!(resp.header("Connection"), Some("close"), "{name}");
            client.assert_closed();
        }
        server.assert_alive();
    }
}

/// Each limit of [`SMALL`] exactly at the boundary (accepted) and one byte
/// (or one field) past it (rejected).
#[test]
fn limits_at_and_past_the_boundary() {
    let server = small_server();
    let line = |len: usize| format!("{}\r\nHost: t\r\n\r\n", request_line(len)).into_bytes();
    let field = |len: usize| {
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "v".repeat(len - 7)).into_bytes()
    };
    let fields = |n: usize| {
        let mut head = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 1..n {
            head.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    let length = |n: usize| {
        let mut req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n");
        req.push_str(&"b".repeat(n));
        req.into_bytes()
    };
    let chunked = |n: usize| {
        // Two chunks, so that the second one crosses the limit.
        let (a, b) = (n / 2, n - n / 2);
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             {a:x};ext=1\r\n{}\r\n{b:x}\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n",
            "c".repeat(a),
            "c".repeat(b)
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("request line at max_request_line", line(64), 200),
        ("request line one past", line(65), 414),
        ("field line at max_header_line", field(64), 200),
        ("field line one past", field(65), 431),
        ("fields at max_headers", fields(10), 200),
        ("one field past max_headers", fields(11), 431),
        ("head at max_head", head_of_len(512), 200),
        ("head one past max_head", head_of_len(513), 431),
        ("Content-Length at max_body", length(16), 200),
        ("Content-Length one past", length(17), 413),
        ("chunked body at max_body", chunked(16), 200),
        ("chunked body one past", chunked(17), 413),
    ];
    for (name, request, status) in cases {
        let mut client = server.client();
        client.send(&request);
        let resp = client.response();
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        if status == 200 && request.starts_with(b"POST") {
            assert_eq!(resp.body, vec![if name.contains("chunked") { b'c' } else { b'b' }; 16]);
        }
        if status != 200 {
            assert_eq!(resp.header("Connection"), Some("close"), "{name}");
            client.assert_closed();
        }
        server.assert_alive();
    }
}

#[test]
fn wrong_method_lists_allowed_methods() {
    let server = small_server();
    let resp = server.request(b"GET /item HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("Allow"), Some("DELETE, OPTIONS, PUT"));
    let resp = server.request(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("Allow"), Some("GET, HEAD, OPTIONS"));
}

/// A client trickling one byte every 50 ms never lets a single read wait
/// long, yet the 300 ms head deadline is a total: 408.
#[test]
fn head_deadline_stops_a_trickling_client() {
    let server = small_server();
    let mut client = server.client();
    client.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    client.send(b"GET / HTTP/1.1\r\nX-Slow: ");
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut sent = 0;
    loop {
        assert!(Instant::now() < deadline, "no 408 for a trickling client");
        let mut buf = [0u8; 1024];
        match std::io::Read::read(&mut client.stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if common::is_timeout(&e) => {
                if got.is_empty() && client.try_send(b"a").is_ok() {
                    sent += 1;
                }
            }
            Err(e) => panic!("read: {e}"),
        }
        if find(&got, b"\r\n\r\n").is_some() {
            break;
        }
    }
    assert!(sent > 1, "the client trickled only {sent} bytes");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    server.assert_alive();
}

#[test]
fn head_deadline_stops_a_stalled_head() {
    let server = small_server();
    let mut client = server.client();
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 408);
    assert_eq!(resp.header("Connection"), Some("close"));
    client.assert_closed();
    server.assert_alive();
}

#[test]
fn body_deadline_answers_408() {
    let server = small_server();
    let mut client = server.client();
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let resp = client.response();
    assert_eq!(resp.status, 408);
    client.assert_closed();
    server.assert_alive();
}

/// An answer sent without reading the body (404, 405) ends the
/// connection; the unread body must not turn the close into a reset, which
/// can destroy the answer before the client reads it. (A handler's refusal
/// comes after the body was read: see `handlers_refuse_with_any_response`.)
#[test]
fn early_answer_with_an_unread_body_closes_cleanly() {
    let server = TestServer::start(routes);
    let body = vec![b'x'; 200_000];
    for (target, status) in [("/missing", 404), ("/", 405)] {
        let mut client = server.client();
        let head =
            format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
        client.send(head.as_bytes());
        // The server may answer before it has all of it.
        let _ = client.try_send(&body);
        let resp = client.response();
        assert_eq!(resp.status, status, "{target}");
        assert_eq!(resp.header("Connection"), Some("close"), "{target}");
        client.assert_closed();
    }
    // The same after a panic, with a pipelined request left unread.
    let mut client = server.client();
    let mut pipelined = get("/panic");
    pipelined.extend_from_slice(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    pipelined.extend_from_slice(&body);
    let _ = client.try_send(&pipelined);
    assert_eq!(client.response().status, 500);
    client.assert_closed();
    server.assert_alive();
}

#[test]
fn handler_panic_is_isolated_and_counted() {
    let server = small_server();
    let before = server.handle.stats().panics;
    let resp = server.request(&get("/panic"));
    assert_eq!(resp.status, 500);
    assert_eq!(resp.header("Connection"), Some("close"));
    assert_eq!(server.handle.stats().panics, before + 1);
    server.assert_alive();
}

#[test]
fn max_connections_answers_503_then_recovers() {
    let server = TestServer::start(|s| {
        routes(s);
        s.max_connections(2).keep_alive(Some(Duration::from_millis(100))).sse("/hold", |_req| {
            Ok(Accept::new(move |stream| loop {
                stream.sleep(Duration::from_secs(30))?;
            }))
        });
    });
    let mut first = server.client();
    first.send(&get("/hold"));
    assert_eq!(first.read_until(b"\r\n\r\n"), SSE_HEAD);
    let mut second = server.client();
    second.send(&get("/hold"));
    assert_eq!(second.read_until(b"\r\n\r\n"), SSE_HEAD);
    wait_until("two streams are open", || server.handle.stats().open_streams == 2);
    let stats = server.handle.stats();
    assert_eq!((stats.open_connections, stats.rejected), (2, 0));

    // The third connection: 503 from the accept thread, without a request
    // being read, and with a request already sent.
    let mut third = server.client();
    let resp = third.response();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert_eq!(resp.header("Connection"), Some("close"));
    third.assert_closed();
    let resp = server.request(&get("/"));
    assert_eq!(resp.status, 503);
    let stats = server.handle.stats();
    assert_eq!((stats.open_connections, stats.rejected), (2, 2));

    // One stream ends: new connections are served again.
    drop(first);
    wait_until("the closed stream is noticed", || server.handle.stats().open_connections == 1);
    server.assert_alive();
    assert_eq!(server.handle.stats().rejected, 2);
    drop(second);
}

/// Log entries, owned: kind, status, error.
type Kept = Arc<Mutex<Vec<(LogKind, u16, Option<String>)>>>;

/// A log hook that keeps every entry.
fn keep_log(s: &mut Server) -> Kept {
    let log: Arc<Mutex<Vec<_>>> = Arc::default();
    let kept = log.clone();
    s.log(move |e| {
        assert!(e.kind == LogKind::AcceptError || e.remote.is_some(), "{e:?}");
        let entry = (e.kind, e.status, e.error.map(str::to_string));
        kept.lock().unwrap().push(entry);
    });
    log
}

/// Every refusal, every bad request's reason and every panic's message
/// reach the log hook, and are counted.
#[test]
fn refusals_reasons_and_panics_reach_the_log() {
    let mut log = None;
    let server = TestServer::start(|s| {
        routes(s);
        log = Some(keep_log(s));
        s.limits(SMALL)
            .sse("/boom", |_req| panic!("sse handler panic (the test expects it)"))
            .sse("/body-boom", |_req| {
                Ok(Accept::new(|_stream| panic!("body panic (the test expects it)")))
            });
    });
    let log = log.unwrap();
    let req = LogKind::Request;
    #[rustfmt::skip]
    let table: &[(&[u8], LogKind, u16, &str)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", req, 400, "missing or invalid Host header"),
        (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", req, 400, "invalid request target"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", req, 400, "invalid Content-Length"),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99\r\n\r\n", req, 413, "request body too large"),
        (b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n", req, 500, "handler panicked: handler panic (the test expects it)"),
        (b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n", req, 500, "handler panicked: sse handler panic (the test expects it)"),
        (b"GET /body-boom HTTP/1.1\r\nHost: t\r\n\r\n", LogKind::StreamEnd, 200, "handler panicked: body panic (the test expects it)"),
    ];
    for &(request, kind, status, why) in table {
        log.lock().unwrap().clear();
        let mut client = server.client();
        let _ = client.try_send(request);
        let _ = client.read_to_close();
        let name = String::from_utf8_lossy(request);
        wait_until(&format!("{name}: logged"), || log.lock().unwrap().iter().any(|e| e.0 == kind));
        let logged = log.lock().unwrap().iter().find(|e| e.0 == kind).cloned();
        assert_eq!(logged, Some((kind, status, Some(why.to_string()))), "{name}");
    }
    let stats = server.handle.stats();
    assert_eq!((stats.bad_requests, stats.panics), (4, 3));

    // At capacity: the accept thread's 503 is logged with its reason.
    let mut log = None;
    let full = TestServer::start(|s| {
        log = Some(keep_log(s));
        s.max_connections(1);
    });
    let log = log.unwrap();
    let _held = full.client();
    wait_until("the first connection is open", || full.handle.stats().open_connections == 1);
    assert_eq!(full.client().response().status, 503);
    wait_until("the refusal is logged", || !log.lock().unwrap().is_empty());
    let logged = log.lock().unwrap()[0].clone();
    let why = Some("max_connections reached".to_string());
    assert_eq!(logged, (LogKind::Rejected, 503, why));
}

/// The child role of [`accept_errors_reach_the_log`]: a server under
/// `ulimit -n 64` that prints every log entry as `LOG kind status error`.
fn accept_error_child() {
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(60));
        std::process::exit(1);
    });
    let server = TestServer::start(|s| {
        routes(s);
        s.max_connections(100_000).log(|e| {
            println!("LOG {:?} {} {}", e.kind, e.status, e.error.unwrap_or("-"));
        });
    });
    println!("ADDR {}", server.addr);
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    std::process::exit(0);
}

/// Runs the test `name` again in a child process whose soft descriptor limit
/// is `limit` (`ulimit -n`), with `role` set so that it plays the child's
/// part; returns it and its stdout, line by line.
#[cfg(target_os = "linux")]
fn limited_child(
    limit: u32,
    name: &str,
    role: &str,
) -> (std::process::Child, mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit -n {limit} && exec "$0" "$@""#))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .env(role, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child server");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Out of descriptors, `accept` fails: the error reaches the log, and so
/// does the `503` sent with the spare descriptor.
#[cfg(target_os = "linux")]
#[test]
fn accept_errors_reach_the_log() {
    use std::net::TcpStream;
    const CHILD: &str = "STDSSE_TEST_ACCEPT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return accept_error_child();
    }
    let (mut child, rx) = limited_child(64, "accept_errors_reach_the_log", CHILD);
    let addr = loop {
        let line = rx.recv_timeout(WAIT).expect("the child's address");
        if let Some(addr) = line.strip_prefix("ADDR ") {
            break addr.parse().unwrap();
        }
    };
    let flood: Vec<TcpStream> =
        (0..100).filter_map(|_| TcpStream::connect_timeout(&addr, WAIT).ok()).collect();
    let (mut accept_error, mut rejected) = (false, false);
    while !(accept_error && rejected) {
        let line = rx.recv_timeout(WAIT).expect("more log lines");
        accept_error |= line.starts_with("LOG AcceptError 0 ");
        rejected |= line == "LOG Rejected 503 out of descriptors";
    }
    drop(flood);
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

/// The size of the `/big` route's body: more than the socket buffers hold
/// while the client does not read.
const BIG: usize = 4 << 20;

/// RFC 9112 9.6: a connection the server closes while the client has sent
/// bytes it has not read is closed in stages, so the client gets the whole
/// response and a clean end (FIN), never a reset. One line per case: the
/// request (which ends the connection), the bytes sent after it while the
/// handler runs (so that they arrive after the head was read), and the
/// body length of the response.
#[test]
fn closing_with_unread_bytes_loses_nothing() {
    let (logged_tx, logged) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let logged_tx = Mutex::new(logged_tx);
    let gate = Mutex::new((started_tx, go_rx));
    let server = TestServer::start(|s| {
        routes(s);
        s.get("/gate", move |req| {
            let gate = lock_ok(&gate);
            let _ = gate.0.send(());
            let _ = gate.1.recv_timeout(WAIT);
            let len = if req.query() == Some("big") { BIG } else { 5 };
            Response::new(200).body(vec![b'x'; len])
        })
        .log(move |entry| {
            let _ = lock_ok(&logged_tx).send(entry.path.to_string());
        });
    });
    let pipelined: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    #[rustfmt::skip]
    let table: &[(&str, &[u8], &[u8], usize)] = &[
        ("pipelined request after Connection: close", b"GET /gate HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", pipelined, 5),
        ("stray CRLF after an HTTP/1.0 request", b"GET /gate HTTP/1.0\r\n\r\n", b"\r\n", 5),
        ("large response not read yet, pipelined request", b"GET /gate?big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", pipelined, BIG),
        ("large response not read yet, stray CRLF", b"GET /gate?big HTTP/1.0\r\n\r\n", b"\r\n", BIG),
    ];
    for &(name, request, extra, len) in table {
        while logged.try_recv().is_ok() {}
        let mut client = server.client();
        client.send(request);
        started.recv_timeout(WAIT).expect("the handler runs");
        client.send(extra);
        go.send(()).unwrap();
        // Read nothing until the server has written all it could (the log
        // comes after the write), so that a large response's tail is still
        // in its socket buffer when it closes.
        let _ = logged.recv_timeout(Duration::from_millis(500));
        let resp = client.response();
        assert_eq!((resp.status, resp.body.len()), (200, len), "{name}");
        assert!(resp.body.iter().all(|&b| b == b'x'), "{name}");
        let rest = client.read_to_close().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(rest.is_empty(), "{name}: {rest:?}");
    }
}

fn lock_ok<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Content-Length: 0` is no body: an early answer (404, 405) keeps the
/// connection, as it does without the header.
#[test]
fn content_length_zero_keeps_the_connection() {
    let server = small_server();
    let mut client = server.client();
    for (target, status) in [("/missing", 404), ("/", 405), ("/echo", 200)] {
        client.send(
            format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        let resp = client.response();
        assert_eq!((resp.status, resp.header("Connection")), (status, None), "{target}");
    }
    client.send(&get("/"));
    assert_eq!(client.response().status, 200);
}

/// The child role of [`descriptor_limit_flood_is_answered`]: run under
/// `ulimit -n 1024`, serve with the default `max_connections` and with one
/// far above the descriptor limit, print both addresses, and exit when the
/// parent closes stdin (or after a minute).
fn descriptor_limit_child() {
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(60));
        std::process::exit(1);
    });
    let fits = TestServer::start(routes);
    let above = TestServer::start(|s| {
        routes(s);
        s.max_connections(100_000);
    });
    println!("ADDRS {} {}", fits.addr, above.addr);
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    std::process::exit(0);
}

/// The soft limit on open files of this process (Linux).
fn own_descriptor_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line[14..].split_whitespace().next().unwrap().parse().unwrap_or(u64::MAX)
}

/// A server under the common 1,024-descriptor soft limit, flooded past it:
/// with the default `max_connections` (which must fit the limit) and with
/// a `max_connections` above it (accept then fails with EMFILE), a client
/// past the flood gets `503` with `Retry-After` at once, and once the flood
/// stops a client gets through within a second.
#[cfg(target_os = "linux")]
#[test]
fn descriptor_limit_flood_is_answered() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    const CHILD: &str = "STDSSE_TEST_FD_CHILD";
    const FLOOD: usize = 1100;
    if std::env::var_os(CHILD).is_some() {
        return descriptor_limit_child();
    }
    if own_descriptor_limit() < FLOOD as u64 + 200 {
        eprintln!("skipped: this process may open too few files for the flood (ulimit -n)");
        return;
    }
    let (mut child, rx) = limited_child(1024, "descriptor_limit_flood_is_answered", CHILD);
    let addrs = loop {
        let line = rx.recv_timeout(WAIT).expect("the child's addresses");
        if let Some(addrs) = line.strip_prefix("ADDRS ") {
            break addrs.to_string();
        }
    };
    let addrs: Vec<SocketAddr> = addrs.split(' ').map(|a| a.parse().unwrap()).collect();
    // One request with bounded waits; the status, or 0 for no answer.
    let probe = |addr: SocketAddr, within: Duration| -> u16 {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, within) else {
            return 0;
        };
        stream.set_read_timeout(Some(within)).unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status == 503 {
            assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
        }
        status
    };
    for (name, &addr) in
        ["default max_connections", "max_connections above the limit"].iter().zip(&addrs)
    {
        let flood: Vec<TcpStream> =
            (0..FLOOD).filter_map(|_| TcpStream::connect_timeout(&addr, WAIT).ok()).collect();
        assert_eq!(probe(addr, Duration::from_secs(2)), 503, "{name}: past the flood");
        drop(flood);
        let stopped = Instant::now();
        let mut status = 0;
        while status != 200 && stopped.elapsed() < Duration::from_secs(1) {
            status = probe(addr, Duration::from_secs(1));
        }
        assert_eq!(status, 200, "{name}: after the flood ({:?})", stopped.elapsed());
    }
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[test]
fn http11_keeps_the_connection_alive() {
    let server = small_server();
    let mut client = server.client();
    client.send(&get("/"));
    let resp = client.response();
    assert_eq!((resp.status, resp.body_str()), (200, "hello"));
    assert_eq!(resp.header("Connection"), None);
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let resp = client.response();
    assert_eq!((resp.status, resp.body_str()), (200, "abc"));
    // An idle persistent connection counts as open.
    assert_eq!(server.handle.stats().open_connections, 1);
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let server = small_server();
    let mut client = server.client();
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 200);
    // Our version, 1.1, whatever the request's (RFC 9110 2.5).
    assert!(resp.status_line.starts_with("HTTP/1.1 "), "{resp:?}");
    assert_eq!(resp.header("Connection"), Some("close"));
    client.assert_closed();

    let mut client = server.client();
    client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Connection"), Some("keep-alive"));
    client.send(b"GET /files/exact HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    let resp = client.response();
    assert_eq!((resp.status, resp.body_str()), (200, "exact"));
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.response().header("Connection"), Some("close"));
    client.assert_closed();
}

#[test]
fn connection_close_is_honoured() {
    let server = small_server();
    let mut client = server.client();
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Connection"), Some("close"));
    client.assert_closed();
}

#[test]
fn idle_persistent_connection_is_closed() {
    let server = small_server(); // idle_timeout 300 ms
    let mut client = server.client();
    client.send(&get("/"));
    assert_eq!(client.response().status, 200);
    // No 408 for a connection idle between requests: just a close.
    client.assert_closed();
    wait_until("the connection is gone", || server.handle.stats().open_connections == 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = small_server();
    let mut client = server.client();
    client.send(
        b"GET /files/a HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
          GET /files/exact HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let bodies: Vec<String> = (0..3)
        .map(|_| client.response())
        .map(|r| format!("{} {}", r.status, r.body_str()))
        .collect();
    assert_eq!(bodies, ["200 prefix /files/a", "200 hi", "200 exact"]);
}

#[test]
fn bodies_reach_the_handler_intact() {
    let server = TestServer::start(routes);
    // Content-Length, split over several writes.
    let mut client = server.client();
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    client.send(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    for part in body.chunks(7_000) {
        client.send(part);
    }
    let resp = client.response();
    assert_eq!(resp.status, 200);
    assert!(resp.body == body, "Content-Length body changed");

    // Chunked, with extensions and trailers, then a pipelined request.
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value;flag\r\nhello\r\n1 ; x=\"q\"\r\n \r\nA\r\n0123456789\r\n\
          0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let resp = client.response();
    assert_eq!((resp.status, resp.body_str()), (200, "hello 0123456789"));
    assert_eq!(client.response().body_str(), "hello");

    // A binary chunked body, byte by byte.
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for b in b"4\r\n\0\r\n\xff\r\n0\r\n\r\n" {
        client.send(&[*b]);
    }
    assert_eq!(client.response().body, b"\0\r\n\xff");
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let server = small_server();
    let mut client = server.client();
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    // The body is sent only after the interim answer.
    assert_eq!(client.read_until(b"\r\n\r\n"), b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"hello");
    let resp = client.response();
    assert_eq!((resp.status, resp.body_str()), (200, "hello"));

    // Chunked as well.
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(client.read_until(b"\r\n\r\n"), b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(client.response().body_str(), "abc");

    // Too large: 413 at once, no 100 Continue.
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n",
    );
    assert_eq!(client.response().status, 413);
    client.assert_closed();
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[test]
fn head_on_a_get_route_has_no_body() {
    let server = small_server();
    let mut client = server.client();
    client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /files/exact HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("5"));
    assert_eq!(head.header("Content-Type"), Some("text/plain; charset=utf-8"));
    // The next bytes are the next response: no body was sent.
    let next = client.response();
    assert_eq!((next.status, next.body_str()), (200, "exact"));
}

#[test]
fn options_is_answered_with_allow() {
    let server = small_server();
    let resp = server.request(b"OPTIONS /item HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("Allow"), Some("DELETE, OPTIONS, PUT"));
    assert_eq!(resp.header("Content-Length"), None);
    let resp = server.request(b"OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.header("Allow"), Some("GET, HEAD, OPTIONS"));
    let resp = server.request(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("Allow"), Some("DELETE, GET, HEAD, OPTIONS, POST, PUT"));
    let resp = server.request(b"OPTIONS /missing HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 404);
}

#[test]
fn prefix_routes_and_exact_precedence() {
    let server = small_server();
    let mut client = server.client();
    for (path, body) in [
        ("/files/exact", "exact"),
        ("/files/exact/more", "prefix /files/exact/more"),
        ("/files/a/b?q=1", "prefix /files/a/b"),
        ("/files/", "prefix /files/"),
        ("/files/deep/x", "deep /files/deep/x"),
        ("/files/deeper", "prefix /files/deeper"),
    ] {
        client.send(&get(path));
        let resp = client.response();
        assert_eq!((resp.status, resp.body_str()), (200, body), "{path}");
    }
    client.send(&get("/files"));
    assert_eq!(client.response().status, 404);
}

// ---------------------------------------------------------------------------
// Hooks: guard, CORS, access log
// ---------------------------------------------------------------------------

/// What the routes of a service share: one function that authenticates,
/// and refuses with the response to send.
fn authenticate(req: &Request) -> Result<String, Response> {
    if req.header("X-Rate") == Some("over") {
        return Err(Response::text(429, "slow down").header("Retry-After", "7"));
    }
    req.header("Authorization")
        .map(str::to_string)
        .ok_or_else(|| Response::text(401, "who are you?").header("WWW-Authenticate", "Bearer"))
}

/// Plain and event-stream handlers refuse with any response, before
/// anything of a stream is written, with the normal keep-alive rules; what
/// the handler learned moves into the stream's body.
#[test]
fn handlers_refuse_with_any_response() {
    let server = TestServer::start(|s| {
        routes(s);
        s.post("/private", |req| match authenticate(req) {
            Ok(user) => Response::text(200, user),
            Err(refusal) => refusal,
        })
        .sse("/private/events", |req| {
            let user = authenticate(req)?;
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().data(format!("hello {user}")))?;
                Ok(())
            })
            .header("Cache-Control", "no-store"))
        });
    });
    for target in ["/private/events", "/private"] {
        let mut client = server.client();
        let method = if target == "/private" { "POST" } else { "GET" };
        client.send(format!("{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let resp = client.response();
        assert_eq!((resp.status, resp.body_str()), (401, "who are you?"), "{target}");
        assert_eq!(resp.header("WWW-Authenticate"), Some("Bearer"), "{target}");
        assert_eq!(resp.header("Connection"), None, "{target}: the connection stays");
        client.send(&get("/"));
        assert_eq!(client.response().status, 200, "{target}");
    }

    // Accepted: the head carries the accept's headers, the body what the
    // handler learned.
    let mut client = server.client();
    client.send(b"GET /private/events HTTP/1.1\r\nHost: t\r\nAuthorization: ann\r\n\r\n");
    let head = client.stream_head();
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(head.header_all("Cache-Control"), ["no-store"]);
    assert_eq!(client.read_to_end(), b"data: hello ann\n\n");

    // A refusal after the body was read: the connection stays usable.
    let mut client = server.client();
    client.send(
        b"POST /private HTTP/1.1\r\nHost: t\r\nX-Rate: over\r\nContent-Length: 4\r\n\r\nbody",
    );
    let resp = client.response();
    assert_eq!((resp.status, resp.header("Retry-After")), (429, Some("7")));
    assert_eq!(resp.header("Connection"), None);
    client.send(&get("/"));
    assert_eq!(client.response().status, 200);
}

/// An accept's headers are validated as a response's are, and those that
/// would break the stream are refused: `500` instead of a stream, with the
/// reason in the log.
#[test]
fn invalid_accept_headers_answer_500() {
    let mut log = None;
    let server = TestServer::start(|s| {
        log = Some(keep_log(s));
        s.sse("/h", |req| {
            let name = req.query_param("name").unwrap_or_default();
            let value = req.query_param("value").unwrap_or_default();
            Ok(Accept::new(|_stream| Ok(())).header(&name, &value))
        });
    });
    let log = log.unwrap();
    #[rustfmt::skip]
    let table: &[(&str, u16, Option<&str>)] = &[
        ("name=X-Ok&value=1", 200, None),
        ("name=X-Evil&value=a%0D%0ASet-Cookie:%20s=1", 500, Some("invalid response header")),
        ("name=Bad%20Name&value=1", 500, Some("invalid response header")),
        ("name=Content-Type&value=text/html", 500, Some("reserved response header")),
        ("name=content-length&value=5", 500, Some("reserved response header")),
        ("name=Transfer-Encoding&value=identity", 500, Some("reserved response header")),
        ("name=Connection&value=keep-alive", 500, Some("reserved response header")),
    ];
    for &(query, status, why) in table {
        log.lock().unwrap().clear();
        let mut client = server.client();
        client.send(&get(&format!("/h?{query}")));
        let resp = if status == 200 { client.stream_head() } else { client.response() };
        assert_eq!(resp.status, status, "{query}");
        if status == 500 {
            assert_eq!(resp.body_str(), why.unwrap(), "{query}");
            assert!(resp.header("Set-Cookie").is_none());
        }
        wait_until("the log entry", || log.lock().unwrap().iter().any(|e| e.0 == LogKind::Request));
        let logged = log.lock().unwrap().iter().find(|e| e.0 == LogKind::Request).cloned().unwrap();
        let why = why.map(str::to_string);
        assert_eq!(logged, (LogKind::Request, status, why), "{query}");
    }
}

#[test]
fn cors_headers_and_preflight() {
    let server = TestServer::start(|s| {
        routes(s);
        s.cors(Cors::origins(["https://ok.example"])).sse("/events", |_req| {
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().data("x"))?;
                Ok(())
            }))
        });
    });
    // Allowed origin: echoed once, with Vary.
    let resp = server.request(b"GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header_all("Access-Control-Allow-Origin"), ["https://ok.example"]);
    assert_eq!(resp.header_all("Vary"), ["Origin"]);

    // Other origin: no permission, still Vary.
    let resp = server.request(b"GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), None);
    assert_eq!(resp.header_all("Vary"), ["Origin"]);

    // Preflight of an EventSource with Last-Event-ID.
    let resp = server.request(
        b"OPTIONS /events HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\
          Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n\r\n",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header_all("Access-Control-Allow-Origin"), ["https://ok.example"]);
    assert_eq!(resp.header_all("Vary"), ["Origin"]);
    let methods = resp.header("Access-Control-Allow-Methods").unwrap();
    assert!(methods.split(", ").any(|m| m == "GET"), "{methods}");
    let headers = resp.header("Access-Control-Allow-Headers").unwrap();
    assert!(headers.split(", ").any(|h| h == "Last-Event-ID"), "{headers}");
    assert_eq!(resp.header("Access-Control-Max-Age"), Some("600"));

    // Preflight from another origin.
    let resp = server.request(
        b"OPTIONS /events HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\
          Access-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), None);

    // The event stream's head carries the CORS headers too.
    let mut client = server.client();
    client.send(b"GET /events HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\r\n");
    let head = client.stream_head();
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(head.header_all("Access-Control-Allow-Origin"), ["https://ok.example"]);
    assert_eq!(client.read_to_end(), b"data: x\n\n");
}

/// `Cors::credentials`: with a list of origins, answers to an allowed one
/// (plain, stream, preflight) carry `Access-Control-Allow-Credentials:
/// true`, the exact origin and `Vary: Origin`; other origins get no
/// `Access-Control-*` header; with `Cors::any()` credentials are ignored.
#[test]
fn cors_credentials_table() {
    let start = |cors: Cors| {
        TestServer::start(move |s| {
            routes(s);
            s.cors(cors).sse("/events", |_req| {
                Ok(Accept::new(|mut stream| {
                    stream.send(&Event::new().data("x"))?;
                    Ok(())
                }))
            });
        })
    };
    let listed = start(
        Cors::origins(["https://ok.example"])
            .credentials()
            .allow_headers("Authorization, Last-Event-ID"),
    );
    let any = start(Cors::any().credentials());
    const PREFLIGHT: &str = "OPTIONS /events HTTP/1.1\r\nHost: t\r\nOrigin: ORIGIN\r\n\
        Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n";
    const PLAIN: &str = "GET / HTTP/1.1\r\nHost: t\r\nOrigin: ORIGIN\r\n\r\n";
    const STREAM: &str = "GET /events HTTP/1.1\r\nHost: t\r\nOrigin: ORIGIN\r\n\r\n";
    type Expected<'a> = Option<(&'a str, Option<&'a str>)>;
    // server, request, origin, status, then the Access-Control-Allow-Origin
    // and -Credentials expected (None: no Access-Control-* header at all).
    #[rustfmt::skip]
    let table: &[(&str, &TestServer, &str, &str, u16, Expected)] = &[
        ("listed, plain", &listed, PLAIN, "https://ok.example", 200, Some(("https://ok.example", Some("true")))),
        ("listed, stream", &listed, STREAM, "https://ok.example", 200, Some(("https://ok.example", Some("true")))),
        ("listed, preflight", &listed, PREFLIGHT, "https://ok.example", 204, Some(("https://ok.example", Some("true")))),
        ("listed, other origin, plain", &listed, PLAIN, "https://evil.example", 200, None),
        ("listed, other origin, stream", &listed, STREAM, "https://evil.example", 200, None),
        ("listed, other origin, preflight", &listed, PREFLIGHT, "https://evil.example", 403, None),
        ("any, plain", &any, PLAIN, "https://evil.example", 200, Some(("https://evil.example", None))),
        ("any, stream", &any, STREAM, "https://evil.example", 200, Some(("https://evil.example", None))),
        ("any, preflight", &any, PREFLIGHT, "https://evil.example", 204, Some(("https://evil.example", None))),
    ];
    for &(name, server, request, origin, status, expected) in table {
        let mut client = server.client();
        client.send(request.replace("ORIGIN", origin).as_bytes());
        let resp = if request == STREAM { client.stream_head() } else { client.response() };
        assert_eq!(resp.status, status, "{name}");
        let cors: Vec<_> = resp
            .headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
            .collect();
        let Some((allow_origin, credentials)) = expected else {
            assert!(cors.is_empty(), "{name}: {cors:?}");
            continue;
        };
        assert_eq!(resp.header_all("Access-Control-Allow-Origin"), [allow_origin], "{name}");
        let got: Vec<&str> = resp.header_all("Access-Control-Allow-Credentials");
        assert_eq!(got, credentials.into_iter().collect::<Vec<_>>(), "{name}");
        assert_eq!(resp.header_all("Vary"), ["Origin"], "{name}");
        if request == PREFLIGHT && credentials.is_some() {
            assert_eq!(
                resp.header("Access-Control-Allow-Headers"),
                Some("Authorization, Last-Event-ID"),
                "{name}"
            );
        }
    }
}

#[test]
fn no_cors_headers_without_cors() {
    let server = small_server();
    let resp = server.request(b"GET / HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\r\n");
    assert_eq!(resp.status, 200);
    let cors: Vec<_> = resp
        .headers
        .iter()
        .filter(|(n, _)| {
            n.to_ascii_lowercase().starts_with("access-control-") || n.eq_ignore_ascii_case("vary")
        })
        .collect();
    assert!(cors.is_empty(), "{cors:?}");
    let resp = server.request(
        b"OPTIONS / HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\n\
          Access-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!((resp.status, resp.header("Allow")), (204, Some("GET, HEAD, OPTIONS")));
    assert_eq!(resp.header("Access-Control-Allow-Origin"), None);
}

/// What the access log saw, owned.
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    method: String,
    path: String,
    status: u16,
    bytes: u64,
    kind: LogKind,
    error: Option<String>,
}

#[test]
fn handlers_see_the_peer_address() {
    let server = TestServer::start(|s| {
        s.get("/peer", |req| Response::text(200, format!("{:?}", req.remote_addr())));
    });
    let mut client = server.client();
    client.send(b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n");
    let peer = client.stream.local_addr().unwrap();
    assert_eq!(client.response().body, format!("{:?}", Some(peer)).into_bytes());
}

#[test]
fn access_log_once_per_request_and_stream_end() {
    let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
    let server = TestServer::start({
        let log = log.clone();
        move |s| {
            routes(s);
            s.log(move |e| {
                assert!(e.remote.unwrap().ip().is_loopback());
                log.lock().unwrap().push(Logged {
                    method: e.method.into(),
                    path: e.path.into(),
                    status: e.status,
                    bytes: e.bytes,
                    kind: e.kind,
                    error: e.error.map(str::to_string),
                });
            })
            .sse("/events", |_req| {
                Ok(Accept::new(move |mut stream| {
                    stream.send(&Event::new().data("one"))?;
                    Ok(())
                }))
            })
            .sse("/fails", |_req| Ok(Accept::new(move |_stream| Err("handler gave up".into()))));
        }
    });
    let entries = |n: usize| {
        wait_until(&format!("{n} log entries"), || log.lock().unwrap().len() >= n);
        std::mem::take(&mut *log.lock().unwrap())
    };

    let resp = server.request(b"GET /files/x?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let e = entries(1);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].method.as_str(), e[0].path.as_str(), e[0].status), ("GET", "/files/x", 200));
    assert_eq!(e[0].kind, LogKind::Request);
    assert!(e[0].bytes > resp.body.len() as u64, "{e:?}");

    let mut client = server.client();
    client.send(&get("/events"));
    let all = client.read_to_end();
    let e = entries(2);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].path.as_str(), e[0].status, e[0].kind), ("/events", 200, LogKind::Request));
    assert_eq!(e[0].bytes, SSE_HEAD.len() as u64);
    assert_eq!((e[1].path.as_str(), e[1].status, e[1].kind), ("/events", 200, LogKind::StreamEnd));
    assert_eq!(e[1].bytes, all.len() as u64, "the stream entry counts every byte");
    assert_eq!(e[1].error, None);

    server.client().send(&get("/fails"));
    let e = entries(2);
    assert_eq!(e[1].kind, LogKind::StreamEnd);
    assert_eq!(e[1].error.as_deref(), Some("handler gave up"));

    let resp = server.request(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 400);
    let e = entries(1);
    assert_eq!((e[0].method.as_str(), e[0].path.as_str(), e[0].status), ("-", "-", 400));
    assert!(e[0].bytes > 0);
    thread::sleep(Duration::from_millis(20));
    assert!(log.lock().unwrap().is_empty(), "one entry per request");
}

#[test]
fn stats_follow_requests_and_connections() {
    let server = small_server();
    assert_eq!(server.handle.stats(), Default::default());
    let mut client = server.client();
    client.send(&get("/"));
    client.response();
    client.send(&get("/missing"));
    client.response();
    let stats = server.handle.stats();
    assert_eq!((stats.requests, stats.open_connections, stats.open_streams), (2, 1, 0));
    drop(client);
    wait_until("the connection closed", || server.handle.stats().open_connections == 0);
    server.request(b"GET / HTTP/1.1\r\n\r\n"); // 400 counts as a request
    let stats = server.handle.stats();
    assert_eq!((stats.requests, stats.rejected, stats.panics), (3, 0, 0));
    assert!(stats.to_json().contains("\"requests\":3"));
}

#[test]
fn stats_to_prometheus_exact_text() {
    let mut stats = stdsse::server::Stats::default();
    (stats.open_connections, stats.open_streams, stats.requests) = (3, 2, 10);
    (stats.rejected, stats.panics, stats.bad_requests, stats.accept_errors) = (1, 0, 4, 5);
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

// ---------------------------------------------------------------------------
// Event streams
// ---------------------------------------------------------------------------

/// Sends an HTTP/1.1 `request` and checks the exact event-stream head; the
/// client reads the decoded (dechunked) body from here on.
fn open_stream(server: &TestServer, request: &[u8]) -> Client {
    let mut client = open_raw_stream(server, request);
    client.decode_chunked();
    client
}

/// The same, but the client reads the raw chunk framing.
fn open_raw_stream(server: &TestServer, request: &[u8]) -> Client {
    let mut client = server.client();
    client.send(request);
    assert_eq!(
        String::from_utf8_lossy(&client.read_until(b"\r\n\r\n")),
        String::from_utf8_lossy(SSE_HEAD)
    );
    client
}

/// Reports what a handler saw to the test thread.
fn reporter<T: Send + 'static>() -> (Arc<Mutex<mpsc::Sender<T>>>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    (Arc::new(Mutex::new(tx)), rx)
}

#[test]
fn stream_head_first_bytes_and_last_event_id() {
    let server = TestServer::start(|s| {
        s.connected_comment(Some("connected"))
            .initial_retry(Some(Duration::from_millis(2500)))
            .sse("/events", |_req| {
                Ok(Accept::new(move |mut stream| {
                    let id = stream.last_event_id().unwrap_or("none").to_string();
                    stream.send(&Event::new().id("1")?.data(format!("after {id}")))?;
                    stream.send(&Event::new().event("two")?.data("a\nb"))?;
                    Ok(())
                }))
            });
    });
    let mut client =
        open_stream(&server, b"GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: evt-41\r\n\r\n");
    // The comment and the retry hint are lines of the first event's block
    // (an empty line after them would dispatch nothing).
    assert_eq!(
        client.read_until(b"\n\n"),
        b": connected\nretry: 2500\nid: 1\ndata: after evt-41\n\n"
    );
    assert_eq!(
        client.read_to_end(),
        b"event: two\ndata: a\ndata: b\n\n",
        "the stream ends when the handler returns"
    );

    let mut client = open_stream(&server, &get("/events"));
    let all = client.read_to_end();
    assert!(find(&all, b"data: after none\n\n").is_some());

    // HEAD: the head only.
    let mut client = server.client();
    client.send(b"HEAD /events HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read_to_end(), SSE_HEAD);
}

#[test]
fn events_arrive_while_the_stream_is_open() {
    let (tx, rx) = reporter::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let server = TestServer::start(move |s| {
        s.sse("/events", move |_req| {
            let (tx, go_rx) = (tx.clone(), go_rx.clone());
            Ok(Accept::new(move |mut stream| {
                for n in 0..3 {
                    stream.send(&Event::new().data(format!("tick {n}")))?;
                    tx.lock().unwrap().send(()).unwrap();
                    // The next event only after the client saw this one.
                    go_rx.lock().unwrap().recv_timeout(WAIT)?;
                }
                Ok(())
            }))
        });
    });
    let mut client = open_stream(&server, &get("/events"));
    for n in 0..3 {
        rx.recv_timeout(WAIT).expect("the handler sent");
        assert_eq!(client.read_until(b"\n\n"), format!("data: tick {n}\n\n").as_bytes());
        go_tx.send(()).unwrap();
    }
    client.assert_closed();
}

#[test]
fn keep_alive_comment_when_idle_and_delayed_by_events() {
    let server = TestServer::start(|s| {
        s.keep_alive(Some(Duration::from_millis(250))).sse("/events", |_req| {
            Ok(Accept::new(move |mut stream| {
                // Events every 25 ms for half a second: no keep-alive is due.
                for n in 0..20 {
                    stream.send(&Event::new().data(n.to_string()))?;
                    stream.sleep(Duration::from_millis(25))?;
                }
                // Then idle.
                stream.sleep(Duration::from_secs(30))?;
                Ok(())
            }))
        });
    });
    let mut client = open_stream(&server, &get("/events"));
    let events = client.read_until(b"data: 19\n\n");
    assert!(
        find(&events, b":\n").is_none(),
        "a keep-alive between events: {:?}",
        String::from_utf8_lossy(&events)
    );
    let expected: String = (0..20).map(|n| format!("data: {n}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&events), expected);
    // Idle now: keep-alive comments, and nothing else.
    assert_eq!(client.read_until(b":\n"), b":\n");
    assert_eq!(client.read_until(b":\n"), b":\n");
}

#[test]
fn disconnect_is_noticed_while_the_handler_sleeps() {
    // Default keep-alive (15 s): the ticker still checks the socket at
    // least once a second.
    let (tx, rx) = reporter::<(Result<(), SendError>, bool)>();
    let server = TestServer::start(move |s| {
        s.sse("/sleep", move |_req| {
            let tx = tx.clone();
            Ok(Accept::new(move |stream| {
                let slept = stream.sleep(Duration::from_secs(60));
                tx.lock().unwrap().send((slept, stream.is_closed())).unwrap();
                Ok(())
            }))
        });
    });
    let client = open_stream(&server, &get("/sleep"));
    wait_until("the stream is open", || server.handle.stats().open_streams == 1);
    drop(client);
    let (slept, closed) = rx.recv_timeout(WAIT).expect("sleep returned");
    assert!(slept.is_err(), "sleep returned Ok after the client left");
    assert!(closed);
    wait_until("the stream is gone", || {
        let stats = server.handle.stats();
        stats.open_streams == 0 && stats.open_connections == 0
    });
}

#[test]
fn is_closed_notices_a_disconnect_without_sending() {
    let (tx, rx) = reporter::<u64>();
    let server = TestServer::start(move |s| {
        s.keep_alive(None).sse("/poll", move |_req| {
            let tx = tx.clone();
            Ok(Accept::new(move |stream| {
                let deadline = Instant::now() + WAIT;
                while !stream.is_closed() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                assert!(stream.is_closed());
                tx.lock().unwrap().send(stream.bytes_sent()).unwrap();
                Ok(())
            }))
        });
    });
    let client = open_stream(&server, &get("/poll"));
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT * 2).expect("is_closed became true"), 0);
    wait_until("the stream is gone", || server.handle.stats().open_streams == 0);
}

#[test]
fn a_client_that_never_reads_cannot_pin_the_handler() {
    let (tx, rx) = reporter::<(usize, Option<std::io::ErrorKind>)>();
    let server = TestServer::start(move |s| {
        routes(s);
        s.write_timeout(Duration::from_millis(200)).sse("/flood", move |_req| {
            let tx = tx.clone();
            Ok(Accept::new(move |mut stream| {
                let big = Event::new().data("x".repeat(64 * 1024));
                for n in 0..100_000 {
                    if let Err(e) = stream.send(&big) {
                        tx.lock().unwrap().send((n, e.io_kind())).unwrap();
                        return Err(e.into());
                    }
                }
                Ok(())
            }))
        });
    });
    let client = open_stream(&server, &get("/flood"));
    let (sent, kind) = rx.recv_timeout(WAIT * 2).expect("the send timed out");
    assert!(sent > 0);
    assert!(
        matches!(kind, Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{kind:?}"
    );
    wait_until("the stream is gone", || server.handle.stats().open_streams == 0);
    drop(client);
    server.assert_alive();
}

#[test]
fn stream_handler_panic_after_the_head() {
    let server = TestServer::start(|s| {
        routes(s);
        s.sse("/boom", |_req| {
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().data("before"))?;
                panic!("stream handler panic (the test expects it)");
            }))
        });
    });
    let mut client = open_stream(&server, &get("/boom"));
    // What was sent stays intact and the connection closes, not resets,
    // without the last chunk: the client sees a broken body, not an end.
    let body = client.read_to_close().expect("closed, not reset");
    assert_eq!(String::from_utf8_lossy(&body), "data: before\n\n");
    assert_eq!(client.last_chunk_seen(), Some(false), "a panic must not end the body cleanly");
    wait_until("the panic is counted", || server.handle.stats().panics == 1);
    wait_until("the stream is gone", || server.handle.stats().open_streams == 0);
    server.assert_alive();
}

#[test]
fn post_stream_reads_the_body_first() {
    let server = TestServer::start(|s| {
        s.sse_route("POST", "/upload", |req| {
            let body = String::from_utf8_lossy(req.body()).into_owned();
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().event("got")?.data(body))?;
                Ok(())
            }))
        });
    });
    let mut client = open_stream(
        &server,
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(client.read_to_end(), b"event: got\ndata: hello world\n\n");

    let mut client = server.client();
    client.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(client.read_until(b"\r\n\r\n"), b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"4\r\nline\r\n6\r\n\nbreak\r\n0\r\n\r\n");
    assert_eq!(client.read_until(b"\r\n\r\n"), SSE_HEAD);
    client.decode_chunked();
    assert_eq!(client.read_to_end(), b"event: got\ndata: line\ndata: break\n\n");
}

#[test]
fn stream_moved_to_another_thread_stays_open() {
    let (returned_tx, returned_rx) = reporter::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let server = TestServer::start(move |s| {
        s.sse("/moved", move |_req| {
            let (returned_tx, go_rx) = (returned_tx.clone(), go_rx.clone());
            Ok(Accept::new(move |mut stream: EventStream| {
                let go_rx = go_rx.clone();
                thread::spawn(move || {
                    if go_rx.lock().unwrap().recv_timeout(WAIT).is_err() {
                        return;
                    }
                    for n in 0..3 {
                        if stream.send(&Event::new().data(format!("from thread {n}"))).is_err() {
                            return;
                        }
                    }
                    // Dropping the stream here closes the connection.
                });
                returned_tx.lock().unwrap().send(()).unwrap();
                Ok(())
            }))
        });
    });
    let mut client = open_stream(&server, &get("/moved"));
    returned_rx.recv_timeout(WAIT).expect("the handler returned");
    let stats = server.handle.stats();
    assert_eq!((stats.open_streams, stats.open_connections), (1, 1));
    go_tx.send(()).unwrap();
    let expected: String = (0..3).map(|n| format!("data: from thread {n}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&client.read_to_end()), expected);
    wait_until("the stream is gone", || {
        let stats = server.handle.stats();
        stats.open_streams == 0 && stats.open_connections == 0
    });
}

/// A server whose `/framed` stream sends the first bytes (a comment and a
/// `retry:`), event A, waits for the test (keep-alives come meanwhile),
/// sends event B (more than 255 bytes: a three-digit chunk size) and
/// returns `Ok`. The sender lets the handler go on.
fn framing_server() -> (TestServer, mpsc::Sender<()>) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let server = TestServer::start(move |s| {
        s.connected_comment(Some("connected"))
            .initial_retry(Some(Duration::from_millis(2500)))
            .keep_alive(Some(Duration::from_millis(50)))
            .sse("/framed", move |_req| {
                let go_rx = go_rx.clone();
                Ok(Accept::new(move |mut stream| {
                    stream.send(&Event::new().id("1")?.data("A"))?;
                    go_rx.lock().unwrap().recv_timeout(WAIT)?;
                    stream.send(&Event::new().event("b")?.data(FRAMED_B))?;
                    Ok(())
                }))
            });
    });
    (server, go_tx)
}

/// The data of event B of [`framing_server`]: two lines, 300 bytes.
const FRAMED_B: &str = concat!(
    "0123456789012345678901234567890123456789012345678901234567890123456789",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
    "\n",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
    "0123456789012345678"
);

/// `len` in hex, CRLF, `data`, CRLF: one chunk.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// Reads up to and including `expected`, which only keep-alive frames
/// (`keep_alive`, exactly) may precede: a keep-alive is due whenever the
/// stream was idle long enough, even on a slow test machine.
fn after_keep_alives(client: &mut Client, keep_alive: &str, expected: &str) {
    let got = String::from_utf8(client.read_until(expected.as_bytes())).unwrap();
    let before = got.strip_suffix(expected).unwrap();
    assert_eq!(before.replace(keep_alive, ""), "", "before {expected:?}");
}

#[test]
fn http11_stream_is_chunked_one_chunk_per_event() {
    let (server, go) = framing_server();
    let mut client = open_raw_stream(&server, &get("/framed"));
    // The first bytes are one chunk, and so is each event.
    let first = chunk(": connected\nretry: 2500\n");
    assert_eq!(String::from_utf8_lossy(&client.read_exact(first.len())), first);
    after_keep_alives(&mut client, "2\r\n:\n\r\n", &chunk("id: 1\ndata: A\n\n"));
    // An idle stream: each keep-alive comment is a chunk of its own.
    for _ in 0..2 {
        assert_eq!(client.read_exact(7), b"2\r\n:\n\r\n");
    }
    go.send(()).unwrap();
    let b_event = format!("event: b\ndata: {}\n\n", FRAMED_B.replace('\n', "\ndata: "));
    assert_eq!(b_event.len(), 0x143);
    let b = chunk(&b_event);
    assert!(b.starts_with("143\r\nevent: b\ndata: 0123"), "{b}");
    // Keep-alives may come until B: whole chunks, nothing else.
    after_keep_alives(&mut client, "2\r\n:\n\r\n", &b);
    // The handler returned Ok: the last chunk, then the close.
    assert_eq!(client.read_to_end(), b"0\r\n\r\n");
}

#[test]
fn http10_stream_is_close_delimited() {
    let (server, go) = framing_server();
    let mut client = server.client();
    client.send(b"GET /framed HTTP/1.0\r\n\r\n");
    let head = client.read_until(b"\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(SSE_HEAD_10),
        "no Transfer-Encoding for HTTP/1.0"
    );
    let first = ": connected\nretry: 2500\n";
    assert_eq!(String::from_utf8_lossy(&client.read_exact(first.len())), first);
    after_keep_alives(&mut client, ":\n", "id: 1\ndata: A\n\n");
    for _ in 0..2 {
        assert_eq!(client.read_exact(2), b":\n");
    }
    go.send(()).unwrap();
    let body = String::from_utf8(client.read_to_end()).unwrap();
    let b_event = format!("event: b\ndata: {}\n\n", FRAMED_B.replace('\n', "\ndata: "));
    // Keep-alives may come until B; after it, nothing but the close.
    let keep_alives = body.strip_suffix(&b_event).unwrap_or_else(|| panic!("{body:?}"));
    assert_eq!(keep_alives.replace(":\n", ""), "", "{body:?}");
}

#[test]
fn handler_end_and_errors_end_the_chunked_body() {
    let server = TestServer::start(|s| {
        s.keep_alive(None)
            .sse("/ok", |_req| {
                Ok(Accept::new(move |mut stream| {
                    stream.send(&Event::new().data("x"))?;
                    Ok(())
                }))
            })
            .sse("/nothing", |_req| Ok(Accept::new(move |_stream| Ok(()))))
            .sse("/fails", |_req| {
                Ok(Accept::new(move |mut stream| {
                    stream.send(&Event::new().data("x"))?;
                    Err("handler gave up".into())
                }))
            });
    });
    for (path, body) in [
        ("/ok", "9\r\ndata: x\n\n\r\n0\r\n\r\n"),
        ("/nothing", "0\r\n\r\n"),
        ("/fails", "9\r\ndata: x\n\n\r\n0\r\n\r\n"),
    ] {
        let mut client = open_raw_stream(&server, &get(path));
        assert_eq!(String::from_utf8_lossy(&client.read_to_end()), body, "{path}");
    }
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

#[test]
fn graceful_shutdown_ends_streams_and_idle_connections() {
    let started_streams = Arc::new(AtomicUsize::new(0));
    let ended_cleanly = Arc::new(AtomicBool::new(true));
    let server = TestServer::start({
        let started_streams = started_streams.clone();
        let ended_cleanly = ended_cleanly.clone();
        move |s| {
            routes(s);
            s.shutdown_timeout(Duration::from_secs(3))
                .shutdown_event(Some(Event::new().event("bye").unwrap().data("server stopping")))
                .shutdown_retry(Duration::from_millis(1000), Duration::from_millis(500))
                .sse("/sleep", move |_req| {
                    let (started_streams, ended_cleanly) =
                        (started_streams.clone(), ended_cleanly.clone());
                    Ok(Accept::new(move |stream| {
                        started_streams.fetch_add(1, Ordering::SeqCst);
                        if stream.sleep(Duration::from_secs(60)).is_ok() {
                            ended_cleanly.store(false, Ordering::SeqCst);
                        }
                        Ok(())
                    }))
                });
        }
    });
    let mut streams: Vec<Client> = (0..2).map(|_| open_stream(&server, &get("/sleep"))).collect();
    let mut idle = server.client();
    idle.send(&get("/"));
    assert_eq!(idle.response().status, 200);
    wait_until("both handlers run", || started_streams.load(Ordering::SeqCst) == 2);
    assert_eq!(server.handle.stats().open_connections, 3);

    let handle = server.handle.clone();
    server.stop(); // bounded: fails if run() does not return
    let stats = handle.stats();
    assert_eq!((stats.open_connections, stats.open_streams), (0, 0), "{stats:?}");
    assert!(handle.is_shutting_down());
    assert!(ended_cleanly.load(Ordering::SeqCst), "a sleep was not interrupted");

    let mut retries = Vec::new();
    for client in &mut streams {
        let rest = String::from_utf8(client.read_to_end()).unwrap();
        let retry = rest
            .strip_prefix("event: bye\ndata: server stopping\n\nretry: ")
            .and_then(|r| r.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("unexpected goodbye: {rest:?}"));
        let retry: u64 = retry.parse().unwrap();
        assert!((1000..=1500).contains(&retry), "retry {retry} outside 1000..=1500");
        retries.push(retry);
    }
    idle.assert_closed();
}

/// The goodbye over HTTP/1.1 is chunked and followed by the last chunk;
/// over HTTP/1.0 it is raw and the close ends the body.
#[test]
fn graceful_shutdown_sends_the_goodbye_in_chunks_then_the_last_chunk() {
    let server = TestServer::start(|s| {
        s.shutdown_event(Some(Event::new().event("bye").unwrap().data("stopping")))
            .shutdown_retry(Duration::from_millis(1000), Duration::ZERO)
            .keep_alive(None)
            .sse("/sleep", |_req| {
                Ok(Accept::new(move |stream| {
                    let _ = stream.sleep(Duration::from_secs(60));
                    Ok(())
                }))
            });
    });
    let mut http11 = open_raw_stream(&server, &get("/sleep"));
    let mut http10 = server.client();
    http10.send(b"GET /sleep HTTP/1.0\r\n\r\n");
    assert_eq!(http10.read_until(b"\r\n\r\n"), SSE_HEAD_10);
    wait_until("both streams are open", || server.handle.stats().open_streams == 2);
    server.stop();
    let goodbye = "event: bye\ndata: stopping\n\nretry: 1000\n";
    assert_eq!(String::from_utf8_lossy(&http11.read_to_end()), chunk(goodbye) + "0\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&http10.read_to_end()), goodbye);
}

/// A timeout too long for the clock (`Duration::MAX`) is no timeout, not
/// a panic of the connection's thread.
#[test]
fn timeouts_past_any_clock_are_no_timeouts() {
    let server = TestServer::start(|s| {
        routes(s);
        s.head_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .body_timeout(Duration::MAX)
            .linger_timeout(Duration::MAX)
            .shutdown_timeout(Duration::MAX);
    });
    server.assert_alive();
    let resp = server.request(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hi"[..]));
    server.stop(); // bounded: its connections are closed
}

/// Empty lines before a request are ignored (RFC 9112 2.2), and so is
/// their time: the connection still waits as an idle one, not as a slow
/// head (which gets 408 after the head timeout).
#[test]
fn an_empty_line_after_a_request_keeps_the_connection_idle() {
    let server = TestServer::start(|s| {
        routes(s);
        s.head_timeout(Duration::from_millis(200)).idle_timeout(Duration::from_secs(5));
    });
    let mut client = server.client();
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi\r\n");
    assert_eq!(client.response().status, 200);
    thread::sleep(Duration::from_millis(500)); // past the head timeout
    client.send(&get("/"));
    assert_eq!(client.response().status, 200);
    assert_eq!(server.handle.stats().bad_requests, 0);
}

/// A stream whose write is blocked on a client that stopped reading (the
/// write timeout is long) ends within the shutdown timeout, not after it.
#[test]
fn shutdown_cuts_a_stream_whose_write_is_blocked() {
    let sent = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start({
        let sent = sent.clone();
        move |s| {
            s.write_timeout(Duration::from_secs(8)).shutdown_timeout(Duration::from_millis(300));
            s.sse("/flood", move |_req| {
                let sent = sent.clone();
                Ok(Accept::new(move |mut stream| loop {
                    stream.send(&Event::new().data("x".repeat(1 << 20)))?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }))
            });
        }
    });
    let _reader_that_stopped = open_raw_stream(&server, &get("/flood"));
    // The socket buffers take a few events; then a send blocks.
    let mut last = usize::MAX;
    while last != sent.load(Ordering::SeqCst) {
        last = sent.load(Ordering::SeqCst);
        thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
}

/// A request still arriving when shutdown starts is answered 503 (the
/// server stopped reading), not 400 as if the client had cut it.
#[test]
fn a_request_cut_by_shutdown_gets_503() {
    let server = TestServer::start(routes);
    let mut client = server.client();
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
    wait_until("the request is read", || server.handle.stats().requests == 1);
    server.stop();
    let resp = client.response();
    assert_eq!(resp.status, 503, "{resp:?}");
}

#[test]
fn shutdown_before_any_stream() {
    let server = TestServer::start(routes);
    server.assert_alive();
    let handle = server.handle.clone();
    server.stop();
    handle.shutdown(); // a second call does nothing
    assert_eq!(handle.stats().open_connections, 0);
}

// ---------------------------------------------------------------------------
// Fuzz
// ---------------------------------------------------------------------------

/// Valid requests to mutate.
const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /files/a?x=1&y=%20 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nUser-Agent: fuzz\r\n\r\n",
    b"HEAD /files/exact HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: x\r\n\r\n",
    b"OPTIONS /item HTTP/1.1\r\nHost: t\r\nOrigin: https://ok.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /files/x HTTP/1.0\r\n\r\n",
    b"GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 7\r\n\r\n",
    b"PUT /item HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nxGET /panic HTTP/1.1\r\nHost: t\r\n\r\n",
];

/// What the mutator splices in besides bytes.
const JUNK: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b": ",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: u\r\n",
    b"ffffffffffffffffff\r\n",
    b"\r\n\r\n",
];

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(300);
    (0..len)
        .map(|_| if rng.chance(30) { *rng.pick(SPECIAL) } else { rng.next_u64() as u8 })
        .collect()
}

/// Every answer to `sent` is a sequence of well-formed responses (a status
/// line and headers each), possibly cut short by the close; nothing at all
/// is a clean close.
fn check_answer(sent: &[u8], got: &[u8]) {
    let show = || {
        format!("sent {:?}\ngot {:?}", String::from_utf8_lossy(sent), String::from_utf8_lossy(got))
    };
    if got.is_empty() {
        return;
    }
    let Some(end) = find(got, b"\r\n") else { panic!("no status line\n{}", show()) };
    let line = std::str::from_utf8(&got[..end]).unwrap_or("");
    let status = parse_status_line(line).unwrap_or_else(|| panic!("bad status line\n{}", show()));
    assert!(
        matches!(
            status,
            100 | 200 | 204 | 400 | 404 | 405 | 408 | 413 | 414 | 417 | 431 | 500 | 501 | 505
        ),
        "unexpected status {status}\n{}",
        show()
    );
    if let Some(head_end) = find(got, b"\r\n\r\n") {
        assert!(common::parse_head(&got[..head_end + 4]).is_some(), "malformed head\n{}", show());
    }
}

#[test]
fn fuzz_the_whole_server() {
    let server = TestServer::start(|s| {
        routes(s);
        s.limits(Limits {
            max_body: 4096,
            max_request_line: 512,
            max_header_line: 512,
            max_headers: 20,
            max_head: 4096,
        })
        .cors(Cors::any())
        .head_timeout(Duration::from_millis(500))
        .idle_timeout(Duration::from_millis(500))
        .body_timeout(Duration::from_millis(500))
        .keep_alive(Some(Duration::from_millis(40)))
        .sse("/events", |_req| {
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().data("x"))?;
                Ok(())
            }))
        });
    });
    let addr = server.addr;
    let cases_per_thread = 1000;
    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            thread::spawn(move || {
                let mut rng = Rng::new(0x5eed_0000 + worker);
                for _ in 0..cases_per_thread {
                    let input = match rng.below(10) {
                        0 => random_bytes(&mut rng),
                        1 => SEEDS[rng.below(SEEDS.len())].to_vec(),
                        _ => {
                            let seed = *rng.pick(SEEDS);
                            mutate(&mut rng, seed, JUNK, SEEDS)
                        }
                    };
                    let mut client = Client::connect(addr);
                    // The server may answer and close before everything is
                    // written: that is fine.
                    let _ = client.try_send(&input);
                    client.shutdown_write();
                    let got = client.read_to_end();
                    check_answer(&input, &got);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a fuzz worker failed");
    }
    server.assert_alive();
    wait_until("every fuzz connection is closed", || server.handle.stats().open_connections == 0);
    assert_eq!(server.handle.stats().rejected, 0);
}

/// `?` turns an invalid event into an `io::Error` (InvalidInput) with the
/// event error's message, so a handler or helper returning `io::Result`
/// needs no conversion.
#[test]
fn event_errors_convert_into_io_errors() {
    fn build() -> std::io::Result<stdsse::Event> {
        Ok(stdsse::Event::new().id("a\nb")?)
    }
    let err = build().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = stdsse::Event::new().id("a\nb").unwrap_err();
    assert_eq!(err.to_string(), inner.to_string());
}
