//! Runs `examples/chat.rs` as a child process and talks to it over real
//! sockets: the page, the room streams, posting, replay with
//! `Last-Event-ID`, the stats, and a graceful exit on SIGINT.

mod common;

use common::{describe, http, wait_for, Example, Resp, Run, Sse, LONG_WAIT};
use stdsse::parser::{Item, MessageEvent};
use stdsse::Received;

/// The chat's `MAX_MESSAGE`: the largest body it accepts.
const MAX_MESSAGE: usize = 64 * 1024;

/// A message of exactly [`MAX_MESSAGE`] bytes (64 lines of 1024 bytes:
/// unicode, then ASCII, then LF), the one the interop suite sends too.
fn largest_message() -> String {
    let line = format!("h\u{e9}llo \u{2713} \u{1f600}{}\n", "x".repeat(1008));
    line.repeat(64)
}

/// The chat example running on 127.0.0.1:0; killed if still running when
/// dropped.
struct Chat(Example);

impl Chat {
    fn start() -> Chat {
        Chat(Example::start("chat", &[]))
    }

    fn get(&self, target: &str) -> Resp {
        http(self.0.addr, "GET", target, &[], b"")
    }

    fn post(&self, room: &str, body: &[u8]) -> Resp {
        http(self.0.addr, "POST", &format!("/messages?room={room}"), &[], body)
    }

    fn sse(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.0.addr, target, headers)
    }

    /// The hub's subscriber count from `/stats`.
    fn subscribers(&self) -> u64 {
        let stats = self.get("/stats").text();
        let hub = &stats[stats.find("\"hub\":").expect("a hub object")..];
        let count = &hub[hub.find("\"subscribers\":").expect("subscribers") + 14..];
        let end = count.find(|c: char| !c.is_ascii_digit()).unwrap_or(count.len());
        count[..end].parse().expect("a number")
    }

    fn wait_subscribers(&self, n: u64) {
        wait_for(LONG_WAIT, &format!("{n} subscribers"), || self.subscribers(), |&s| s == n);
    }
}

fn message(sse: &mut Sse) -> MessageEvent {
    let event = sse.next_event();
    assert_eq!(event.event_type, "message", "{event:?}");
    assert!(!event.id.is_empty(), "no id: {event:?}");
    event
}

#[test]
fn chat_endpoints_over_real_sockets() {
    let chat = Chat::start();

    let page = chat.get("/");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.head.to_ascii_lowercase().contains("content-type: text/html"), "{}", page.head);
    let html = page.text();
    assert!(html.contains("<html") && html.contains("new EventSource("), "not the chat page");

    let mut room_a = chat.sse("/events?room=a", &[]);
    let mut room_b = chat.sse("/events?room=b", &[]);
    chat.wait_subscribers(2);

    // Posted text arrives exactly: line breaks, leading spaces, unicode.
    let texts = [
        "  two leading spaces\n    four on the second line\nünïcödé ✓ 日本語 🚀\n\n  after an empty line",
        " one line ending with a line break\n",
        "\n",
    ];
    for text in texts {
        let reply = chat.post("a", text.as_bytes());
        assert_eq!(reply.status, 204, "{reply:?}");
        assert_eq!(message(&mut room_a).data, text);
    }
    // Room b got none of it: its first event is its own.
    assert_eq!(chat.post("b", b"for b").status, 204);
    assert_eq!(message(&mut room_b).data, "for b");

    // A client that posts the moment its stream opened, perhaps before its
    // subscription reached the hub, still sees its own message.
    let mut room_c = chat.sse("/events?room=c", &[]);
    assert_eq!(chat.post("c", b"mine").status, 204);
    assert_eq!(message(&mut room_c).data, "mine");

    // Refused messages: a status and a text saying why; nothing broadcast.
    let refused: [(&str, Vec<u8>, u16, &str); 3] = [
        ("empty", Vec::new(), 400, "empty"),
        ("invalid UTF-8", b"ok \xff\xfe".to_vec(), 400, "utf-8"),
        ("65 KiB", vec![b'x'; 65 * 1024], 413, "too large"),
    ];
    for (name, body, status, says) in &refused {
        let reply = chat.post("a", body);
        assert_eq!(reply.status, *status, "{name}: {reply:?}");
        assert!(reply.text().to_lowercase().contains(says), "{name}: body {:?}", reply.text());
        assert!(reply.head.to_ascii_lowercase().contains("content-type: text/plain"), "{name}");
    }
    // Exactly 64 KiB is accepted.
    let largest = "y".repeat(64 * 1024);
    assert_eq!(chat.post("a", largest.as_bytes()).status, 204);
    assert_eq!(message(&mut room_a).data, largest);

    // Room a gets m1..m3 next: nothing of the refused posts or of room b.
    let mut ids = Vec::new();
    for m in ["m1", "m2", "m3"] {
        assert_eq!(chat.post("a", m.as_bytes()).status, 204);
        let event = message(&mut room_a);
        assert_eq!(event.data, m);
        ids.push(event.id);
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");

    // Reconnecting with the last id seen gives only the later messages,
    // then the live ones.
    let mut by_header = chat.sse("/events?room=a", &[("Last-Event-ID", &ids[0])]);
    let mut by_query = chat.sse(&format!("/events?room=a&lastEventId={}", ids[1]), &[]);
    assert_eq!(
        (message(&mut by_header).data, message(&mut by_header).data),
        ("m2".into(), "m3".into())
    );
    assert_eq!(message(&mut by_query).data, "m3");
    chat.wait_subscribers(5);
    assert_eq!(chat.post("a", b"m4").status, 204);
    for sse in [&mut by_header, &mut by_query, &mut room_a] {
        assert_eq!(message(sse).data, "m4");
    }

    let stats = chat.get("/stats");
    assert_eq!(stats.status, 200, "{stats:?}");
    assert!(
        stats.head.to_ascii_lowercase().contains("content-type: application/json"),
        "{}",
        stats.head
    );
    let json = stats.text();
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'), "{json}");
    assert!(json.contains("\"hub\":{") && json.contains("\"server\":{"), "{json}");
    assert!(json.contains("\"published\":10,"), "{json}");
    assert!(json.contains("\"open_streams\":5,"), "{json}");

    let metrics = chat.get("/metrics");
    assert_eq!(
        (metrics.status, metrics.header("Content-Type")),
        (200, Some("text/plain; version=0.0.4; charset=utf-8"))
    );
    let text = metrics.text();
    assert!(
        text.contains("# TYPE stdsse_server_streams_open gauge\nstdsse_server_streams_open 5\n"),
        "{text}"
    );
    // And the hub's, after the server's.
    assert!(
        text.contains("# TYPE stdsse_hub_published_total counter\nstdsse_hub_published_total 10\n"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn sigint_ends_the_streams_and_exits_0() {
    let mut chat = Chat::start();
    let mut streams = [chat.sse("/events", &[]), chat.sse("/events?room=a", &[])];
    chat.wait_subscribers(2);
    assert_eq!(chat.post("lobby", b"hello").status, 204);
    assert_eq!(message(&mut streams[0]).data, "hello");

    chat.0.interrupt();
    for sse in &mut streams {
        // The goodbye is a retry: hint of 0.5 to 2 s, then the end.
        let items = sse.until_eof();
        assert!(items.iter().all(|i| matches!(i, Item::Comment(_))), "{items:?}");
        let retry = sse.retry().expect("a retry: hint");
        assert!((500..=2000).contains(&retry.as_millis()), "{retry:?}");
        assert!(sse.is_chunked(), "{:?}", sse.head);
        assert!(sse.last_chunk_seen(), "the body ended without the last chunk");
    }
    let status = chat.0.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", chat.0.log_so_far());
}

/// The largest message the chat accepts reaches stdsse's own `Client`
/// byte-exact (one byte more is refused with 413), and the client reads the
/// chat's stream as written: keep-alive comments and retry hints are lines
/// with no empty line after them, and the close retry at shutdown is the
/// delay the client then waits.
#[cfg(unix)]
#[test]
fn largest_message_reaches_the_crate_client_and_retry_lines_are_followed() {
    let mut chat = Chat(Example::start("chat", &["--keep-alive-ms", "50"]));
    let url = format!("http://{}/events", chat.0.addr);
    let client = stdsse::Client::builder(&url).comments(true).states(true).build().unwrap();
    let run = Run::new(client);
    assert_eq!(run.next_str(), "connected");
    chat.wait_subscribers(1);
    // The next item that is not a keep-alive comment.
    let next = || loop {
        match run.next() {
            Some(Ok(Received::Comment(text))) => assert_eq!(text, ""),
            other => return other,
        }
    };

    let text = largest_message();
    assert_eq!(text.len(), MAX_MESSAGE);
    assert_eq!(chat.post("lobby", format!("{text}x").as_bytes()).status, 413);
    assert_eq!(chat.post("lobby", text.as_bytes()).status, 204);
    match next() {
        Some(Ok(Received::Event(event))) => {
            assert!(event.data == text, "{} bytes", event.data.len())
        }
        other => panic!("expected the message, got {}", describe(&other)),
    }

    chat.0.interrupt();
    assert_eq!(describe(&next()), "disconnected ended");
    match next() {
        // The hub's close retry: 500 ms plus up to 1500 ms of jitter.
        Some(Ok(Received::Retrying(delay))) => {
            assert!((500..=2000).contains(&delay.as_millis()), "{delay:?}")
        }
        other => panic!("expected Retrying, got {}", describe(&other)),
    }
    assert_eq!(chat.0.wait_exit().code(), Some(0));
}
