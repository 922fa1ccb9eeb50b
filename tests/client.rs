//! The client against the project's server and against scripted servers
//! that misbehave on purpose, over real sockets on 127.0.0.1.
//!
//! Timing is checked with short configured delays and bounded windows: a
//! lower bound where the client must wait, a generous upper bound only to
//! tell "the configured delay" from "some much longer default".

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use stdsse::client::{Client, ClientError, Connected, Disconnect, Received, Refusal};
use stdsse::{Accept, Event};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client for `url` with short delays and state items on.
fn quick(url: &str) -> stdsse::client::ClientBuilder {
    Client::builder(url).retry(ms(20)).idle_timeout(Some(WAIT)).states(true)
}

// ---------------------------------------------------------------------------
// Against the project's server
// ---------------------------------------------------------------------------

#[test]
fn project_server_stream_then_resume_with_last_event_id() {
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Arc::new(Mutex::new(seen_tx));
    let server = TestServer::start(move |s| {
        s.sse("/events", move |_req| {
            let seen_tx = seen_tx.clone();
            Ok(Accept::new(move |mut stream| {
                let _ = seen_tx.lock().unwrap().send(stream.last_event_id().map(str::to_string));
                if stream.last_event_id().is_none() {
                    stream.send(&Event::new().id("1")?.data("one"))?;
                    stream.send(&Event::new().event("tick")?.id("2")?.data("two\nlines"))?;
                    return Ok(()); // ends the stream: the client reconnects
                }
                stream.send(&Event::new().id("3")?.data("three"))?;
                stream.sleep(WAIT)?;
                Ok(())
            }))
        });
    });
    let run = Run::new(quick(&server.url("/events")).build().unwrap());
    assert_eq!(
        run.take(7),
        [
            "connected",
            "event message:one:1",
            "event tick:two\nlines:2",
            "disconnected ended",
            "retrying 20ms",
            "connected",
            "event message:three:3",
        ]
    );
    run.close_handle().close();
    assert_eq!(run.next_str(), "end");
    let ids: Vec<Option<String>> = (0..2).map(|_| seen.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(ids, [None, Some("2".to_string())]);
}

#[test]
fn post_body_and_custom_headers_are_sent_on_every_connection() {
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let server = TestServer::start(move |s| {
        s.sse_route("POST", "/llm", move |req| {
            let auth = req.header("authorization").unwrap_or("-").to_string();
            let traces: Vec<&str> = req.header_all("x-trace").collect();
            let line = format!(
                "{} {} {} {} {}",
                String::from_utf8_lossy(req.body()),
                req.header("content-type").unwrap_or("-"),
                auth,
                traces.join("+"),
                req.header("accept").unwrap_or("-"),
            );
            let _ = seen_tx.lock().unwrap().send(line.clone());
            Ok(Accept::new(move |mut stream| {
                stream.send(&Event::new().data(line))?;
                Ok(())
            }))
        });
    });
    let client = quick(&server.url("/llm"))
        .method("POST")
        .body(r#"{"q":1}"#)
        .header("Content-Type", "application/json")
        .header("Authorization", "Bearer t0k")
        .header("X-Trace", "a")
        .header("X-Trace", "b")
        .build()
        .unwrap();
    let run = Run::new(client);
    let expected = r#"{"q":1} application/json Bearer t0k a+b text/event-stream"#;
    assert_eq!(
        run.take(7),
        [
            "connected".to_string(),
            format!("event message:{expected}:"),
            "disconnected ended".into(),
            "retrying 20ms".into(),
            "connected".into(),
            format!("event message:{expected}:"),
            "disconnected ended".into(),
        ]
    );
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), expected);
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), expected);
}

// ---------------------------------------------------------------------------
// Reconnecting
// ---------------------------------------------------------------------------

#[test]
fn a_partial_event_is_discarded_and_the_client_resumes() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        if n == 0 {
            bytes.extend_from_slice(b"id: 1\ndata: a\n\nid: 2\ndata: cut off");
            send(stream, &bytes);
            cut(stream);
        } else {
            bytes.extend_from_slice(b"data: b\n\n");
            send(stream, &bytes);
            hold(stream);
        }
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(
        run.take(6),
        [
            "connected",
            "event message:a:1",
            "disconnected ended",
            "retrying 20ms",
            "connected",
            // The id 2 of the cut event was never committed.
            "event message:b:1",
        ]
    );
    let first = server.request();
    assert_eq!((first.method.as_str(), first.target.as_str()), ("GET", "/"));
    assert_eq!(first.header("last-event-id"), None);
    assert_eq!(first.header("accept"), Some("text/event-stream"));
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    assert_eq!(first.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(first.header("content-length"), None);
    assert_eq!(server.request().header("last-event-id"), Some("1"));
}

#[test]
fn the_server_retry_sets_the_delay() {
    let closed_at = Arc::new(Mutex::new(None));
    let closed = Arc::clone(&closed_at);
    let server = Scripted::start(move |n, _req, stream| {
        let mut bytes = stream_head("");
        if n == 0 {
            bytes.extend_from_slice(b"retry: 300\ndata: x\n\n");
            send(stream, &bytes);
            *closed.lock().unwrap() = Some(Instant::now());
            cut(stream);
        } else {
            send(stream, &bytes);
            hold(stream);
        }
    });
    // Without the server's retry the client would wait 5 s.
    let client = quick(&server.url("/")).retry(Duration::from_secs(5)).build().unwrap();
    let run = Run::new(client);
    assert_eq!(run.take(3), ["connected", "event message:x:", "disconnected ended"]);
    assert_eq!(run.retrying(), ms(300));
    assert_eq!(run.next_str(), "connected");
    server.request();
    let second = server.request();
    let waited = second.at - closed_at.lock().unwrap().expect("closed");
    assert!(waited >= ms(300), "reconnected after {waited:?}");
    assert!(waited < Duration::from_secs(3), "reconnected after {waited:?}");
}

#[test]
fn server_retry_is_clamped_but_the_callers_zero_is_honoured() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        match n {
            0 => bytes.extend_from_slice(b"retry: 0\ndata: a\n\n"),
            1 => bytes.extend_from_slice(b"retry: 99999999999\ndata: b\n\n"),
            _ => {
                send(stream, &bytes);
                return hold(stream);
            }
        }
        send(stream, &bytes);
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(run.take(3), ["connected", "event message:a:", "disconnected ended"]);
    assert_eq!(run.retrying(), ms(100), "retry: 0 is raised to the floor");
    assert_eq!(run.take(3), ["connected", "event message:b:", "disconnected ended"]);
    assert_eq!(run.retrying(), Duration::from_secs(60), "a huge retry is capped");
    drop(run);

    // The caller's zero is used as given; the server's zero is floored to
    // the caller's bounds.
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        if n == 0 {
            bytes.extend_from_slice(b"data: a\n\n");
        } else if n == 1 {
            bytes.extend_from_slice(b"retry: 0\ndata: b\n\n");
        } else {
            send(stream, &bytes);
            return hold(stream);
        }
        send(stream, &bytes);
    });
    let client =
        quick(&server.url("/")).retry(Duration::ZERO).retry_bounds(ms(5), ms(50)).build().unwrap();
    let run = Run::new(client);
    assert_eq!(
        run.take(9),
        [
            "connected",
            "event message:a:",
            "disconnected ended",
            "retrying 0ms",
            "connected",
            "event message:b:",
            "disconnected ended",
            "retrying 5ms",
            "connected",
        ]
    );
}

/// A user agent replaces each obs-fold in a response with SP (RFC 9112 5.2)
/// instead of failing the connection; the body after the head is untouched.
#[test]
fn a_folded_response_header_is_unfolded_not_refused() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("X-Long: a\r\n b\r\n\tc\r\nX-Next: d\r\n");
        bytes.extend_from_slice(b"data: x\r\n y\n\n");
        send(stream, &bytes);
        if n > 0 {
            hold(stream);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let check = move |answer: &stdsse::client::Connected| {
        let headers =
            [answer.header("x-long"), answer.header("x-next")].map(|h| h.map(String::from));
        tx.lock().unwrap().send(headers).unwrap();
        Ok(())
    };
    let run = Run::new(quick(&server.url("/")).check_response(check).build().unwrap());
    // Unfolded in the body, the data would be `x   y`.
    assert_eq!(run.take(2), ["connected", "event message:x:"]);
    let headers = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(headers, [Some("a   b  \tc".to_string()), Some("d".to_string())]);
}

/// An id is any text without CR, LF or NUL (WHATWG), but a request header
/// carries no other control character (RFC 9110 5.5), and SP or HTAB at
/// either end is stripped: such an id cannot be sent back, so the client
/// stops with an error instead of sending a request a server refuses, or
/// resuming from an id that is not the one it was given.
#[test]
fn a_server_id_that_no_header_can_carry_back_ends_the_client() {
    for id in ["a\x01b", "7 ", "\t7", "\x7f"] {
        let server = Scripted::start(move |n, _req, stream| {
            let mut bytes = stream_head("");
            bytes.extend_from_slice(format!("id: {id}\ndata: a\n\n").as_bytes());
            if n > 0 {
                return hold(stream);
            }
            send(stream, &bytes);
        });
        let run = Run::new(quick(&server.url("/")).build().unwrap());
        let event = format!("event message:a:{}", id.strip_prefix(' ').unwrap_or(id));
        let error = "error invalid request header \"Last-Event-ID\": an id that the header cannot \
                     carry (see Event::id)";
        let items = ["connected", &event, "disconnected ended", "retrying 20ms", error, "end"];
        assert_eq!(run.take(6), items, "{id:?}");
        assert_eq!(server.request().header("last-event-id"), None);
        assert!(server.received().is_empty(), "{id:?}: a second request was sent");
    }
    // The same rule for an id given to the builder.
    for id in ["a\x01b", " 7", "7\t", "\0"] {
        let built = Client::builder("http://h/").last_event_id(id).build();
        assert!(matches!(built, Err(ClientError::Header { .. })), "{id:?}");
    }
    assert!(Client::builder("http://h/").last_event_id("a b\té").build().is_ok());
}

#[test]
fn an_empty_id_removes_the_last_event_id_header() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        match n {
            0 => bytes.extend_from_slice(b"id: x\ndata: a\n\n"),
            1 => bytes.extend_from_slice(b"id:\ndata: b\n\n"),
            _ => {
                send(stream, &bytes);
                return hold(stream);
            }
        }
        send(stream, &bytes);
    });
    let client = quick(&server.url("/")).last_event_id("41").build().unwrap();
    let run = Run::new(client);
    assert_eq!(
        run.take(9),
        [
            "connected",
            "event message:a:x",
            "disconnected ended",
            "retrying 20ms",
            "connected",
            "event message:b:",
            "disconnected ended",
            "retrying 20ms",
            "connected",
        ]
    );
    let ids: Vec<Option<String>> =
        (0..3).map(|_| server.request().header("last-event-id").map(str::to_string)).collect();
    assert_eq!(ids, [Some("41".into()), Some("x".into()), None]);
}

#[test]
fn backoff_grows_on_failures_in_a_row_and_resets_after_a_success() {
    let server = Scripted::start(|n, _req, stream| match n {
        // Failures: closed before any answer.
        0..=2 | 4 => cut(stream),
        3 => {
            let mut bytes = stream_head("");
            bytes.extend_from_slice(b"data: ok\n\n");
            send(stream, &bytes);
        }
        _ => {
            send(stream, &stream_head(""));
            hold(stream);
        }
    });
    let base = ms(40);
    let client = quick(&server.url("/")).retry(base).build().unwrap();
    let run = Run::new(client);
    let within = |d: Duration, low: Duration, high: Duration| {
        assert!(d >= low && d <= high, "{d:?} not in {low:?}..={high:?}");
    };
    for failures in 1..=3u32 {
        assert_eq!(run.next_str(), "disconnected io");
        let target = base * 2u32.pow(failures);
        within(run.retrying(), target / 2, target);
    }
    assert_eq!(run.take(3), ["connected", "event message:ok:", "disconnected ended"]);
    assert_eq!(run.retrying(), base, "a success resets the backoff");
    assert_eq!(run.next_str(), "disconnected io");
    within(run.retrying(), base, base * 2);
    assert_eq!(run.next_str(), "connected");
}

#[test]
fn a_refused_connection_is_retried() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = Run::new(quick(&format!("http://127.0.0.1:{port}/")).build().unwrap());
    for _ in 0..3 {
        assert_eq!(run.next_str(), "disconnected connect");
        run.retrying();
    }
}

#[test]
fn the_idle_timeout_finds_a_silent_connection() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        bytes.extend_from_slice(format!("data: {n}\n\n").as_bytes());
        send(stream, &bytes);
        hold(stream); // silent, until the client gives up
    });
    let client = quick(&server.url("/")).idle_timeout(Some(ms(300))).build().unwrap();
    let run = Run::new(client);
    let started = Instant::now();
    assert_eq!(
        run.take(4),
        ["connected", "event message:0:", "disconnected idle", "retrying 20ms",]
    );
    assert!(started.elapsed() >= ms(300));
    // The client reconnects. (On a machine loaded by other work, the short
    // idle timeout may also fire while waiting for an answer: retried too.)
    for _ in 0..10 {
        match run.next_str().as_str() {
            "connected" => {
                assert!(run.next_str().starts_with("event message:"));
                return;
            }
            "disconnected idle" => assert!(run.next_str().starts_with("retrying ")),
            other => panic!("unexpected {other}"),
        }
    }
    panic!("no reconnect");
}

// ---------------------------------------------------------------------------
// Status, content type, redirects
// ---------------------------------------------------------------------------

#[test]
fn no_content_ends_the_stream_for_good() {
    let server = Scripted::start(|_n, _req, stream| {
        send(stream, b"HTTP/1.1 204 No Content\r\n\r\n");
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(run.take(2), ["disconnected no content", "end"]);
    let run = Run::new(Client::builder(&server.url("/")).build().unwrap());
    assert_eq!(run.next_str(), "end");
    assert_eq!(server.received().len(), 2, "one request per client, no retry");
}

#[test]
fn a_wrong_status_or_content_type_fails_for_good() {
    let cases = [
        // (5xx answers are retried by default: see
        // overload_answers_are_retried_honouring_retry_after.)
        ("410 Gone", Some("text/plain"), "410 Gone"),
        ("404 Not Found", Some("text/html; charset=utf-8"), "404 Not Found"),
        ("200 OK", Some("text/html"), "200 OK"),
        ("200 OK", None, "200 OK"),
        ("201 Created", Some("text/event-stream"), "201 Created"),
    ];
    for (status, content_type, shown) in cases {
        let server = Scripted::start(move |_n, _req, stream| {
            let content_type =
                content_type.map(|t| format!("Content-Type: {t}\r\n")).unwrap_or_default();
            let head = format!("HTTP/1.1 {status}\r\n{content_type}Content-Length: 4\r\n\r\noops");
            send(stream, head.as_bytes());
        });
        let run = Run::new(quick(&server.url("/")).build().unwrap());
        let error = match run.next() {
            Some(Err(error)) => error,
            other => panic!("{status}: {}", describe(&other)),
        };
        assert!(error.is_final());
        match (&error, status) {
            (ClientError::ContentType { content_type: got }, "200 OK") => {
                assert_eq!(got.as_deref(), content_type);
            }
            (ClientError::Status { status: code, content_type: got }, _) => {
                assert_eq!(code.to_string(), status[..3]);
                assert_eq!(got.as_deref(), content_type);
            }
            _ => panic!("{status}: {error:?}"),
        }
        let message = error.to_string();
        assert!(message.contains(shown), "{message}");
        assert!(message.contains(content_type.unwrap_or("no Content-Type")), "{message}");
        assert!(!message.contains('\n'));
        assert_eq!(run.next_str(), "end");
        assert_eq!(server.received().len(), 1, "{status}: no reconnect");
    }
}

#[test]
fn content_type_parameters_and_case_are_accepted() {
    for content_type in [
        "text/event-stream; charset=utf-8",
        "Text/Event-Stream;",
        "text/event-stream;charset=windows-1252",
    ] {
        let server = Scripted::start(move |_n, _req, stream| {
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\r\ndata: é\n\n");
            send(stream, head.as_bytes());
            hold(stream);
        });
        let run = Run::new(quick(&server.url("/")).build().unwrap());
        assert_eq!(run.take(2), ["connected", "event message:é:"], "{content_type}");
    }
}

#[test]
fn interim_responses_are_skipped() {
    let server = Scripted::start(|_n, _req, stream| {
        let mut bytes =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n".to_vec();
        bytes.extend_from_slice(&stream_head(""));
        bytes.extend_from_slice(b"data: after interim\n\n");
        send(stream, &bytes);
        hold(stream);
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(run.take(2), ["connected", "event message:after interim:"]);
}

/// The next item; a `Disconnected` shows its message, which `describe`
/// does not for the newer reasons.
fn said(run: &Run) -> String {
    match run.next() {
        Some(Ok(Received::Disconnected(why))) => format!("disconnected: {why}"),
        other => describe(&other),
    }
}

#[test]
fn endless_interim_responses_end_by_the_head_limit_and_are_retried() {
    let server = Scripted::start(|_n, _req, stream| {
        let heads = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000);
        // Up to 2.5 MB per connection, or until the client hangs up.
        for _ in 0..100 {
            if std::io::Write::write_all(stream, &heads).is_err() {
                return;
            }
        }
        hold(stream);
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    for _ in 0..3 {
        assert_eq!(said(&run), "disconnected: response head larger than 65536 bytes");
        run.retrying();
    }
    // Three attempts ended, and the server saw a fourth.
    for _ in 0..4 {
        server.request();
    }
}

#[test]
fn a_dripped_head_fails_by_the_head_deadline_and_is_retried() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head("");
        bytes.extend_from_slice(b"data: ok\n\n");
        if n > 0 {
            send(stream, &bytes);
            return hold(stream);
        }
        // One byte every 30 ms: the idle timeout never fires.
        for byte in bytes {
            send(stream, &[byte]);
            thread::sleep(ms(30));
        }
    });
    let client = quick(&server.url("/")).head_timeout(ms(300)).build().unwrap();
    let run = Run::new(client);
    let asked = server.request().at;
    assert_eq!(said(&run), "disconnected: no complete response head in 300 ms");
    let took = asked.elapsed();
    assert!(took >= ms(290) && took < WAIT, "{took:?}");
    run.retrying();
    assert_eq!(run.take(2), ["connected", "event message:ok:"]);
}

#[test]
fn overload_answers_are_retried_honouring_retry_after() {
    let far = "Fri, 31 Dec 9999 23:59:59 GMT";
    // (status, Retry-After, ceiling of the retry bounds, retry 5xx, expected
    // delay range in ms or None for a final error).
    type Case = (u16, &'static str, u64, bool, Option<(u64, u64)>);
    let cases: [Case; 8] = [
        (503, "1", 5000, true, Some((1000, 1000))),
        (503, "1", 200, true, Some((200, 200))),
        (503, far, 300, true, Some((300, 300))),
        (503, "soon", 5000, true, Some((20, 40))),
        (429, "", 5000, true, Some((20, 40))),
        (500, "", 5000, true, Some((20, 40))),
        (404, "1", 5000, true, None),
        (503, "1", 5000, false, None),
    ];
    for (status, retry_after, ceiling, retried, delay) in cases {
        let server = Scripted::start(move |n, _req, stream| {
            if n == 0 {
                let header = match retry_after {
                    "" => String::new(),
                    value => format!("Retry-After: {value}\r\n"),
                };
                let head = format!("HTTP/1.1 {status} x\r\n{header}Content-Length: 0\r\n\r\n");
                return send(stream, head.as_bytes());
            }
            let mut bytes = stream_head("");
            bytes.extend_from_slice(b"data: ok\n\n");
            send(stream, &bytes);
            hold(stream);
        });
        let client = quick(&server.url("/"))
            .retry_bounds(ms(10), ms(ceiling))
            .retry_server_errors(retried)
            .build()
            .unwrap();
        let case = format!("{status} {retry_after:?} {ceiling} {retried}");
        let run = Run::new(client);
        let Some((low, high)) = delay else {
            match run.next() {
                Some(Err(e @ ClientError::Status { .. })) => {
                    assert!(e.is_final() && e.to_string().contains(&status.to_string()), "{case}")
                }
                other => panic!("{case}: {}", describe(&other)),
            }
            assert_eq!(run.next_str(), "end", "{case}");
            assert_eq!(server.received().len(), 1, "{case}: no retry");
            continue;
        };
        match run.next() {
            Some(Ok(Received::Disconnected(Disconnect::Status { status: got, .. }))) => {
                assert_eq!(got, status, "{case}")
            }
            other => panic!("{case}: {}", describe(&other)),
        }
        let waited = run.retrying();
        assert!(waited >= ms(low) && waited <= ms(high), "{case}: {waited:?}");
        assert_eq!(run.take(2), ["connected", "event message:ok:"], "{case}");
        let (first, second) = (server.request(), server.request());
        assert!(second.at - first.at >= ms(low), "{case}");
    }
}

#[test]
fn restart_reconnects_at_once_from_the_body_the_head_and_the_backoff() {
    // What connection 0 does: in the body, in the head (no answer), or
    // ending the stream so that the client waits out a 60 s retry.
    for state in ["body", "head", "backoff"] {
        let server = Scripted::start(move |n, req, stream| {
            let id = req.header("last-event-id").unwrap_or("-").to_string();
            let mut bytes = stream_head("");
            match (n, state) {
                (0, "head") => return hold(stream),
                (0, _) => bytes.extend_from_slice(b"id: 1\ndata: a\n\n"),
                _ => bytes.extend_from_slice(format!("data: b {id}\n\n").as_bytes()),
            }
            send(stream, &bytes);
            if (n, state) != (0, "backoff") {
                hold(stream);
            }
        });
        let client = quick(&server.url("/"))
            .retry(Duration::from_secs(60))
            .last_event_id("0")
            .build()
            .unwrap();
        let restart = client.close_handle();
        let run = Run::new(client);
        server.request();
        let id = match state {
            "head" => "0",
            _ => {
                assert_eq!(run.take(2), ["connected", "event message:a:1"], "{state}");
                "1"
            }
        };
        if state == "backoff" {
            assert_eq!(run.take(2), ["disconnected ended", "retrying 60000ms"], "{state}");
        }
        thread::sleep(ms(50)); // let the client block
        restart.restart();
        assert_eq!(said(&run), "disconnected: restart requested", "{state}");
        assert_eq!(run.retrying(), Duration::ZERO, "{state}");
        let again = Instant::now();
        assert_eq!(run.take(2), ["connected", &format!("event message:b {id}:{id}")], "{state}");
        assert!(again.elapsed() < WAIT, "{state}");
        assert_eq!(server.request().header("last-event-id"), Some(id), "{state}");
        assert!(!restart.is_closed());
    }
    // Once the client has stopped, a restart does nothing.
    let client = Client::builder("http://127.0.0.1:9/").build().unwrap();
    let handle = client.close_handle();
    handle.close();
    handle.restart();
    assert_eq!(client.count(), 0);
}

#[test]
fn redirects_are_followed_and_reconnects_go_to_the_original_url() {
    for status in [301, 302, 303, 307, 308] {
        let server = Scripted::start(move |_n, req, stream| {
            if req.target == "/start/here" {
                let port = stream.local_addr().unwrap().port();
                // Each status with another form of Location.
                let location = match status {
                    301 => "/moved/abs".to_string(),
                    302 => "relative?x=1".to_string(),
                    303 => format!("http://127.0.0.1:{port}/full"),
                    307 => "?query".to_string(),
                    _ => format!("//127.0.0.1:{port}/../scheme-relative"),
                };
                let head = format!(
                    "HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                );
                return send(stream, head.as_bytes());
            }
            let mut bytes = stream_head("");
            let data = format!(
                "data: {} {} {}\n\n",
                req.method,
                req.target,
                String::from_utf8_lossy(&req.body)
            );
            bytes.extend_from_slice(data.as_bytes());
            send(stream, &bytes);
        });
        let client = quick(&server.url("/start/here"))
            .method("POST")
            .body("b")
            .header("Content-Type", "text/plain")
            .build()
            .unwrap();
        let run = Run::new(client);
        let expected = match status {
            301 => "GET /moved/abs ",
            302 => "GET /start/relative?x=1 ",
            303 => "GET /full ",
            307 => "POST /start/here?query b",
            _ => "POST /scheme-relative b",
        };
        assert_eq!(
            run.take(5),
            [
                "connected".to_string(),
                format!("event message:{expected}:"),
                "disconnected ended".into(),
                "retrying 20ms".into(),
                "connected".into(),
            ],
            "{status}"
        );
        let requests: Vec<Req> = (0..3).map(|_| server.request()).collect();
        assert_eq!(requests[0].target, "/start/here");
        assert_eq!(requests[2].target, "/start/here", "reconnect to the original URL");
        assert_eq!((requests[2].method.as_str(), &requests[2].body[..]), ("POST", &b"b"[..]));
        let redirected = &requests[1];
        if (301..=303).contains(&status) {
            assert_eq!(redirected.header("content-length"), None, "{status}");
            assert_eq!(redirected.header("content-type"), None, "{status}");
        } else {
            assert_eq!(redirected.header("content-length"), Some("1"), "{status}");
            assert_eq!(redirected.header("content-type"), Some("text/plain"), "{status}");
        }
    }
}

#[test]
fn a_redirect_without_location_is_an_error_not_a_loop() {
    for location in ["", "Location: \r\n", "Location:   \r\n"] {
        let server = Scripted::start(move |_n, _req, stream| {
            let head = format!("HTTP/1.1 302 Found\r\n{location}Content-Length: 0\r\n\r\n");
            send(stream, head.as_bytes());
        });
        let run = Run::new(quick(&server.url("/")).build().unwrap());
        let item = run.next();
        assert!(
            matches!(item, Some(Err(ClientError::MissingLocation { status: 302 }))),
            "{}",
            describe(&item)
        );
        assert!(describe(&item).contains("302 Found without a Location"));
        assert_eq!(run.next_str(), "end");
        assert_eq!(server.received().len(), 1);
    }
}

#[test]
fn a_redirect_loop_stops_at_the_limit() {
    let server = Scripted::start(|n, _req, stream| {
        let head = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: /loop/{n}\r\n\r\n");
        send(stream, head.as_bytes());
    });
    let run = Run::new(quick(&server.url("/")).max_redirects(3).build().unwrap());
    let item = run.next();
    assert!(
        matches!(item, Some(Err(ClientError::TooManyRedirects { limit: 3 }))),
        "{}",
        describe(&item)
    );
    assert_eq!(run.next_str(), "end");
    let targets: Vec<String> = server.received().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/", "/loop/0", "/loop/1", "/loop/2"]);
}

#[test]
fn a_redirect_to_https_or_another_scheme_is_an_error() {
    for (location, https) in [("https://127.0.0.1/", true), ("ftp://x/", false)] {
        let server = Scripted::start(move |_n, _req, stream| {
            let head = format!("HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\n\r\n");
            send(stream, head.as_bytes());
        });
        let run = Run::new(quick(&server.url("/")).build().unwrap());
        match run.next() {
            Some(Err(ClientError::Https { url })) if https => assert_eq!(url, location),
            Some(Err(ClientError::InvalidLocation { status: 301, location: l })) if !https => {
                assert_eq!(l, location)
            }
            other => panic!("{location}: {}", describe(&other)),
        }
        assert_eq!(run.next_str(), "end");
    }
}

#[test]
fn a_cross_origin_redirect_drops_credentials() {
    let target = Scripted::start(|_n, _req, stream| {
        let mut bytes = stream_head("");
        bytes.extend_from_slice(b"data: there\n\n");
        send(stream, &bytes);
        hold(stream);
    });
    let location = target.url("/there");
    let origin = Scripted::start(move |_n, _req, stream| {
        let head = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\n\r\n");
        send(stream, head.as_bytes());
    });
    let client = quick(&origin.url("/"))
        .header("Authorization", "Bearer secret")
        .header("Cookie", "s=1")
        .header("X-Kept", "yes")
        .build()
        .unwrap();
    let run = Run::new(client);
    assert_eq!(run.take(2), ["connected", "event message:there:"]);
    assert_eq!(origin.request().header("authorization"), Some("Bearer secret"));
    let redirected = target.request();
    assert_eq!(redirected.header("authorization"), None);
    assert_eq!(redirected.header("cookie"), None);
    assert_eq!(redirected.header("x-kept"), Some("yes"));
    assert_eq!(redirected.header("host"), Some(target.addr.to_string().as_str()));
}

// ---------------------------------------------------------------------------
// Body framing
// ---------------------------------------------------------------------------

#[test]
fn chunked_bodies_split_anywhere_and_events_come_out_at_once() {
    let (go_tx, go) = mpsc::channel::<()>();
    let go = Mutex::new(go);
    let server = Scripted::start(move |n, _req, stream| {
        if n > 0 {
            send(stream, &stream_head(""));
            return hold(stream);
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        let mut bytes = head.as_bytes().to_vec();
        // "data: café\r\n\r\n" in chunks that split the é and both CRLFs.
        for piece in [&b"data: caf\xC3"[..], b"\xA9\r", b"\n\r", b"\n"] {
            bytes.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            bytes.extend_from_slice(piece);
            bytes.extend_from_slice(b"\r\n");
        }
        send(stream, &bytes);
        // Nothing more until the test has seen the first event.
        if go.lock().unwrap().recv_timeout(WAIT).is_err() {
            return;
        }
        let mut rest = Vec::new();
        for piece in [&b"id: 7\ndata: \xE2\x9C"[..], b"\x93 done\n", b"\n"] {
            rest.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
            rest.extend_from_slice(piece);
            rest.extend_from_slice(b"\r\n");
        }
        rest.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        send(stream, &rest);
        hold(stream); // the last chunk ends the body, not the close
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(run.take(2), ["connected", "event message:café:"]);
    go_tx.send(()).unwrap();
    assert_eq!(
        run.take(4),
        ["event message:✓ done:7", "disconnected ended", "retrying 20ms", "connected"]
    );
}

#[test]
fn invalid_chunked_framing_is_a_protocol_error_and_a_reconnect() {
    let server = Scripted::start(|n, _req, stream| {
        let mut bytes = stream_head(if n == 0 { "Transfer-Encoding: chunked\r\n" } else { "" });
        if n == 0 {
            bytes.extend_from_slice(b"9\r\ndata: a\n\n\r\nzz\r\n");
        }
        send(stream, &bytes);
        hold(stream);
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(
        run.take(5),
        [
            "connected",
            "event message:a:",
            "disconnected protocol",
            // The connection had succeeded: no backoff.
            "retrying 20ms",
            "connected",
        ]
    );
}

#[test]
fn content_length_bodies_end_after_their_length() {
    let server = Scripted::start(|n, _req, stream| {
        let body = format!("data: a{n}\n\ndata: b{n}\n\n");
        let mut bytes = stream_head(&format!("Content-Length: {}\r\n", body.len()));
        bytes.extend_from_slice(body.as_bytes());
        // Past the length: never part of the stream.
        bytes.extend_from_slice(b"data: beyond\n\n");
        send(stream, &bytes);
        hold(stream); // the connection stays open; the length ends the body
    });
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    assert_eq!(
        run.take(8),
        [
            "connected",
            "event message:a0:",
            "event message:b0:",
            "disconnected ended",
            "retrying 20ms",
            "connected",
            "event message:a1:",
            "event message:b1:",
        ]
    );
}

#[test]
fn an_empty_content_length_body_ends_at_once() {
    let server = Scripted::start(|n, _req, stream| {
        // Nothing after the head, and the connection stays open: only the
        // length ends the body.
        send(stream, &stream_head(if n == 0 { "Content-Length: 0\r\n" } else { "" }));
        hold(stream);
    });
    // The idle timeout (5 s) would say "idle" and take long.
    let run = Run::new(quick(&server.url("/")).build().unwrap());
    let started = Instant::now();
    assert_eq!(run.take(4), ["connected", "disconnected ended", "retrying 20ms", "connected"]);
    assert!(started.elapsed() < WAIT);
}

// ---------------------------------------------------------------------------
// Comments, limits, close, URLs
// ---------------------------------------------------------------------------

#[test]
fn comments_and_oversized_events() {
    let server = Scripted::start(|_n, _req, stream| {
        let mut bytes = stream_head("");
        // A comment-only block after an id dispatches nothing (r3labs #163).
        bytes.extend_from_slice(b": hi\n\nid: 5\ndata: first\n\n: keep-alive\n\n");
        bytes.extend_from_slice(b"data: ");
        bytes.extend_from_slice(&[b'x'; 300]);
        bytes.extend_from_slice(b"\n\ndata: after\n\n");
        send(stream, &bytes);
        hold(stream);
    });
    let client = quick(&server.url("/")).comments(true).max_event_size(100).build().unwrap();
    let run = Run::new(client);
    assert_eq!(
        run.take(5),
        [
            "connected",
            "comment hi",
            "event message:first:5",
            "comment keep-alive",
            "error skipped an event larger than 100 bytes"
        ]
    );
    assert_eq!(run.next_str(), "event message:after:5", "the stream goes on");

    // Without comments and states: events only.
    let run = Run::new(Client::builder(&server.url("/")).max_event_size(100).build().unwrap());
    assert_eq!(run.next_str(), "event message:first:5");
    match run.next() {
        Some(Err(e)) => assert!(!e.is_final() && e == ClientError::EventTooLarge { limit: 100 }),
        other => panic!("{}", describe(&other)),
    }
    assert_eq!(run.next_str(), "event message:after:5");
}

#[test]
fn the_default_event_limit_takes_16_mib_of_data_and_refuses_one_byte_more() {
    const LIMIT: usize = 16 * 1024 * 1024;
    let server = Scripted::start(|_n, _req, stream| {
        send(stream, &stream_head(""));
        let data = vec![b'x'; LIMIT + 1];
        for size in [LIMIT, LIMIT + 1] {
            send(stream, b"data: ");
            send(stream, &data[..size]);
            send(stream, b"\n\n");
        }
        send(stream, b"data: after\n\n");
        hold(stream);
    });
    let run = Run::new(Client::builder(&server.url("/")).build().unwrap());
    match run.next() {
        Some(Ok(Received::Event(e))) => assert_eq!(e.data.len(), LIMIT),
        other => panic!("{}", describe(&other)),
    }
    match run.next() {
        Some(Err(e)) => assert_eq!(e, ClientError::EventTooLarge { limit: LIMIT }),
        other => panic!("{}", describe(&other)),
    }
    assert_eq!(run.next_str(), "event message:after:");
}

#[test]
fn the_close_handle_ends_a_blocked_read() {
    let server = Scripted::start(|_n, _req, stream| {
        send(stream, &stream_head(""));
        hold(stream);
    });
    let client = quick(&server.url("/")).idle_timeout(None).build().unwrap();
    let close = client.close_handle();
    let run = Run::new(client);
    assert_eq!(run.next_str(), "connected");
    thread::sleep(ms(50)); // let the client block in its read
    let closer = thread::spawn(move || close.close());
    assert!(run.ends_within(WAIT));
    closer.join().unwrap();
}

#[test]
fn the_close_handle_ends_the_sleep_before_a_reconnect() {
    let server = Scripted::start(|_n, _req, stream| {
        send(stream, &stream_head(""));
    });
    let client = quick(&server.url("/")).retry(Duration::from_secs(60)).build().unwrap();
    let run = Run::new(client);
    assert_eq!(run.take(3), ["connected", "disconnected ended", "retrying 60000ms"]);
    thread::sleep(ms(50));
    let started = Instant::now();
    run.close_handle().close();
    assert!(run.ends_within(WAIT));
    assert!(started.elapsed() < WAIT);
    assert!(run.close_handle().is_closed());
}

#[test]
fn a_closed_client_yields_nothing() {
    let client = Client::builder("http://127.0.0.1:9/").build().unwrap();
    let close = client.close_handle();
    close.close();
    let items: Vec<_> = client.collect();
    assert!(items.is_empty());
}

#[test]
fn urls_are_checked_when_building() {
    let error = Client::builder("https://example.com/events").build().unwrap_err();
    assert!(matches!(error, ClientError::Https { .. }));
    let message = error.to_string();
    for part in ["https", "no TLS", "stunnel", "nginx", "http://"] {
        assert!(message.contains(part), "{message}");
    }
    for bad in
        ["example.com/events", "ws://h/", "http://h:99999/", "http://user:pw@h/", "http://[::1/"]
    {
        assert!(matches!(Client::builder(bad).build(), Err(ClientError::Url { .. })), "{bad}");
    }
    let error = Client::builder("http://h/").header("X", "a\r\nInjected: 1").build().unwrap_err();
    assert!(matches!(error, ClientError::Header { .. }), "{error:?}");
}

#[test]
fn ipv6_literals_work() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let server = Scripted::on(listener, |_n, _req, stream| {
        let mut bytes = stream_head("");
        bytes.extend_from_slice(b"data: six\n\n");
        send(stream, &bytes);
        hold(stream);
    });
    let url = format!("http://[::1]:{}/v6?q", server.addr.port());
    let run = Run::new(quick(&url).build().unwrap());
    assert_eq!(run.take(2), ["connected", "event message:six:"]);
    let req = server.request();
    assert_eq!(req.target, "/v6?q");
    assert_eq!(req.header("host"), Some(format!("[::1]:{}", server.addr.port()).as_str()));
}

// ---------------------------------------------------------------------------
// What the client connected to, and the caller's check of it
// ---------------------------------------------------------------------------

/// A server whose `/start` redirects (`307`) to `/final?x=1`, which answers
/// a `200` event stream with `X-Ready: no` on connection 1, `yes` later,
/// and repeated, oddly cased fields.
fn redirecting_server() -> Scripted {
    Scripted::start(|n, req, stream| {
        if req.target == "/start" {
            let head = "HTTP/1.1 307 Temporary Redirect\r\nLocation: /final?x=1\r\n\r\n";
            return send(stream, head.as_bytes());
        }
        let ready = if n == 1 { "no" } else { "yes" };
        let extra = format!("X-Ready: {ready}\r\nx-two:  1 \r\nX-TWO: 2\r\n");
        let mut bytes = stream_head(&extra);
        bytes.extend_from_slice(format!("data: {n}\n\n").as_bytes());
        send(stream, &bytes);
        hold(stream);
    })
}

/// The `Connected` of the next item, which must be one.
fn connected(run: &Run) -> Connected {
    match run.next() {
        Some(Ok(Received::Connected(to))) => to,
        other => panic!("expected Connected, got {}", describe(&other)),
    }
}

#[test]
fn connected_shows_the_status_headers_and_url_after_a_redirect() {
    let server = redirecting_server();
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let client = quick(&server.url("/start"))
        .check_response(move |to| {
            let _ = seen_tx.lock().unwrap().send(to.clone());
            Ok(())
        })
        .build()
        .unwrap();
    let run = Run::new(client);
    let to = connected(&run);
    assert_eq!(to.status(), 200);
    assert_eq!(to.url(), server.url("/final?x=1"));
    assert_eq!(
        to.headers(),
        [("Content-Type", "text/event-stream"), ("X-Ready", "no"), ("x-two", "1"), ("X-TWO", "2"),]
            .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    for (name, value) in [
        ("x-ready", Some("no")),
        ("CONTENT-TYPE", Some("text/event-stream")),
        ("X-Two", Some("1")), // the first of repeated fields, as every lookup reads them
        ("Location", None),   // the redirect's, not this answer's
    ] {
        assert_eq!(to.header(name), value, "{name}");
    }
    // The check saw the same answer; accepting it lets the events through.
    let checked = seen.recv_timeout(WAIT).unwrap();
    assert_eq!((checked.url(), checked.headers()), (to.url(), to.headers()));
    assert_eq!(run.next_str(), "event message:1:");
}

#[test]
fn a_fatal_refusal_ends_the_client_with_the_callers_reason() {
    let server = redirecting_server();
    let client = quick(&server.url("/start"))
        .check_response(|to| {
            let ready = to.header("x-ready").unwrap_or("-");
            Err(Refusal::fatal(format!("ready: {ready}\nat {}", to.url())))
        })
        .build()
        .unwrap();
    let run = Run::new(client);
    let error = match run.next() {
        Some(Err(error)) => error,
        other => panic!("expected an error, got {}", describe(&other)),
    };
    let reason = format!("ready: no\nat {}", server.url("/final?x=1"));
    assert_eq!(error, ClientError::Refused(Refusal::fatal(&*reason)));
    assert!(error.is_final());
    let message = error.to_string();
    assert!(message.contains(&format!("{reason:?}")), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(run.next_str(), "end", "no event, no reconnect");
    assert_eq!(server.received().len(), 2, "the redirect and the answer");
}

#[test]
fn a_retry_refusal_backs_off_and_reconnects() {
    let server = redirecting_server();
    let client = quick(&server.url("/start"))
        .check_response(|to| match to.header("x-ready") {
            Some("yes") => Ok(()),
            other => Err(Refusal::retry(format!("not ready: {other:?}"))),
        })
        .build()
        .unwrap();
    let run = Run::new(client);
    match run.next() {
        Some(Ok(Received::Disconnected(Disconnect::Refused(refusal)))) => {
            assert!(refusal.is_retry());
            assert_eq!(refusal.reason(), "not ready: Some(\"no\")");
            assert!(refusal.to_string().contains("not ready"), "{refusal}");
        }
        other => panic!("expected a refusal, got {}", describe(&other)),
    }
    // A failed attempt: the backoff of the first failure, 20 to 40 ms.
    let delay = run.retrying();
    assert!(delay >= ms(20) && delay <= ms(40), "{delay:?}");
    assert_eq!(connected(&run).header("x-ready"), Some("yes"));
    assert_eq!(run.next_str(), "event message:3:");
    let targets: Vec<String> = (0..4).map(|_| server.request().target).collect();
    assert_eq!(targets, ["/start", "/final?x=1", "/start", "/final?x=1"]);
}

// ---------------------------------------------------------------------------
// The tail example
// ---------------------------------------------------------------------------

/// Runs `examples/tail.rs` with `args`, killed if it takes longer than
/// `limit`.
fn tail(args: &[&str], limit: Duration) -> Output {
    run_example("tail", args, b"", Some(limit))
}

#[test]
fn the_tail_example_follows_a_url() {
    let server = TestServer::start(|s| {
        s.sse("/events", |_req| {
            Ok(Accept::new(move |mut stream| {
                stream.comment("hello")?;
                for n in 1..=3 {
                    stream.send(&Event::new().id(n.to_string())?.data(format!("n\"{n}")))?;
                }
                stream.sleep(WAIT)?;
                Ok(())
            }))
        });
    });
    let limit = Duration::from_secs(60); // the first run may build the example
    let out = tail(&[&server.url("/events"), "--max-events", "2", "--comments"], limit);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!(
            r#"{"comment":"hello"}"#,
            "\n",
            r#"{"type":"message","data":"n\"1","id":"1"}"#,
            "\n",
            r#"{"type":"message","data":"n\"2","id":"2"}"#,
            "\n",
        )
    );

    let out = tail(&[&server.url("/missing")], limit);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("404 Not Found"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = tail(&["https://127.0.0.1:1/events"], limit);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no TLS"), "{stderr}");
}

#[test]
fn the_tail_example_shows_the_overload_answer_and_the_wait() {
    let server = Scripted::start(|n, _req, stream| match n {
        0 => {
            let mut bytes = stream_head("");
            bytes.extend_from_slice(b"retry: 200\n\n");
            send(stream, &bytes);
        }
        1 => send(
            stream,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
        ),
        _ => {
            let mut bytes = stream_head("");
            bytes.extend_from_slice(b"data: ok\n\n");
            send(stream, &bytes);
            hold(stream);
        }
    });
    let out = tail(&[&server.url("/"), "--max-events", "1"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"type\":\"message\",\"data\":\"ok\",\"id\":\"\"}\n"
    );
    let connected = format!("tail: connected: 200 {}\n", server.url("/"));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{connected}\
             tail: the server ended the stream; reconnecting in 200 ms\n\
             tail: the server answered 503 Service Unavailable (Retry-After: 1 s); \
             reconnecting in 1000 ms\n\
             {connected}"
        )
    );
}

#[test]
fn the_tail_example_shows_the_status_and_url_it_connected_to() {
    let server = redirecting_server();
    let out = tail(&[&server.url("/start"), "--max-events", "1"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"type\":\"message\",\"data\":\"1\",\"id\":\"\"}\n",
        "standard output has the events only"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("tail: connected: 200 {}\n", server.url("/final?x=1"))
    );
}

#[test]
fn the_tail_example_exits_zero_on_no_content_and_sends_options() {
    let server = Scripted::start(|_n, req, stream| {
        if req.method == "PUT" {
            let mut bytes = stream_head("");
            let data = format!(
                "id: {}\ndata: {} {}\n\n",
                req.header("x-a").unwrap_or("-"),
                req.header("last-event-id").unwrap_or("-"),
                String::from_utf8_lossy(&req.body),
            );
            bytes.extend_from_slice(data.as_bytes());
            send(stream, &bytes);
        } else {
            send(stream, b"HTTP/1.1 204 No Content\r\n\r\n");
        }
    });
    let limit = Duration::from_secs(60);
    let out = tail(&[&server.url("/")], limit);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty());

    let args = [
        &server.url("/")[..],
        "--method",
        "PUT",
        "--data",
        "body text",
        "--header",
        "X-A: 9",
        "--last-event-id",
        "4",
        "--max-events",
        "1",
    ];
    let out = tail(&args, limit);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"type\":\"message\",\"data\":\"4 body text\",\"id\":\"9\"}\n"
    );
}

/// What the builder lets through is exactly what the server's parser
/// accepts: the same byte tables check both sides.
#[test]
fn the_builder_refuses_the_header_bytes_the_server_refuses() {
    use stdsse::http::{parse_head, Limits, Status};
    let server_accepts = |name: &str, value: &str| {
        let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{name}: {value}\r\n\r\n");
        let head = head.replace("Host: h\r\nHost:", "Host:");
        match parse_head(head.as_bytes(), &Limits::default()) {
            Ok(Status::Complete((request, _))) => request.header(name) == Some(value),
            _ => false,
        }
    };
    let mut cases: Vec<(String, String)> = (0..0x80u8)
        .map(char::from)
        .flat_map(|c| [(format!("X{c}"), "v".into()), ("X".into(), format!("a{c}b"))])
        .collect();
    cases.extend(
        [("Host", "a b"), ("Host", "h:1"), ("X", "\u{e9}")].map(|(n, v)| (n.into(), v.into())),
    );
    for (name, value) in cases {
        let built = Client::builder("http://h/").header(&name, &value).build();
        assert!(built.is_ok() || matches!(built, Err(ClientError::Header { .. })));
        assert_eq!(built.is_ok(), server_accepts(&name, &value), "{name:?}: {value:?}");
    }
}

#[test]
fn the_builder_checks_headers_method_id_and_url() {
    let header = |name: &str, value: &str| Client::builder("http://h/").header(name, value).build();
    assert!(header("X-Ok", "tab\tand ünicode").is_ok());
    for (name, value) in [
        ("X", "a\r\nEvil: 1"),
        ("X", "a\nb"),
        ("X", "a\0"),
        ("Bad Name", "v"),
        ("", "v"),
        ("X:", "v"),
        ("content-length", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Last-Event-ID", "1"),
    ] {
        assert!(
            matches!(header(name, value), Err(ClientError::Header { .. })),
            "{name:?}: {value:?}"
        );
    }
    assert!(matches!(
        Client::builder("http://h/").method("GE T").build(),
        Err(ClientError::Method { .. })
    ));
    assert!(matches!(
        Client::builder("http://h/").last_event_id("a\nb").build(),
        Err(ClientError::Header { .. })
    ));
    // Two Host lines are a 400 (RFC 9112 3.2); one replaces the client's own.
    let twice = Client::builder("http://h/").header("Host", "a").header("host", "b").build();
    assert!(matches!(twice, Err(ClientError::Header { reason: "given twice", .. })), "{twice:?}");
    assert!(Client::builder("http://h/").header("Host", "a").build().is_ok());
    let error = Client::builder("http://h/").header("A\r\nB", "x").build().unwrap_err();
    assert!(!error.to_string().contains('\n'), "{error}");
    assert!(matches!(Client::builder("nope").build(), Err(ClientError::Url { .. })));
}
