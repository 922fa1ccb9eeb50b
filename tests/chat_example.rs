//! Runs `examples/chat.rs` as a child process and talks to it over real
//! sockets: the page, the room streams, posting, replay with
//! `Last-Event-ID`, the stats, and a graceful exit on SIGINT.

mod common_hub;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common_hub::{http, wait_for, Reply, Sse, WAIT};
use stdsse::parser::{Item, MessageEvent};

/// Builds the example once (`cargo build --example chat`) and returns the
/// path of its binary: next to this test binary's directory, in the same
/// target directory and profile (`target/<profile>/deps/chat_example-*` →
/// `target/<profile>/examples/chat`).
fn chat_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("the test binary is in <target>/<profile>/deps");
            let mut build = Command::new(env!("CARGO"));
            build
                .args(["build", "--quiet", "--example", "chat"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "cargo build --example chat: {status}");
            let binary = profile_dir
                .join("examples")
                .join(format!("chat{}", std::env::consts::EXE_SUFFIX));
            assert!(binary.is_file(), "no chat binary at {}", binary.display());
            binary
        })
        .clone()
}

/// The chat example running on 127.0.0.1:0; killed if still running when
/// dropped.
struct Chat {
    child: Child,
    addr: SocketAddr,
    /// The rest of its stderr (the access log), line by line.
    log: mpsc::Receiver<String>,
}

impl Chat {
    fn start() -> Chat {
        let mut child = Command::new(chat_binary())
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the chat example");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        // Always drained, so that the example never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let mut chat = Chat {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log,
        };
        let first = chat.log.recv_timeout(WAIT).expect("the first stderr line");
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first stderr line {first:?}"));
        chat.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad address in {first:?}"));
        assert_ne!(chat.addr.port(), 0, "{first}");
        chat
    }

    fn get(&self, target: &str) -> Reply {
        http(self.addr, "GET", target, &[], b"")
    }

    fn post(&self, room: &str, body: &[u8]) -> Reply {
        http(
            self.addr,
            "POST",
            &format!("/messages?room={room}"),
            &[],
            body,
        )
    }

    fn sse(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, target, headers)
    }

    /// The hub's subscriber count from `/stats`.
    fn subscribers(&self) -> u64 {
        let stats = self.get("/stats").text();
        let hub = &stats[stats.find("\"hub\":").expect("a hub object")..];
        let count = &hub[hub.find("\"subscribers\":").expect("subscribers") + 14..];
        let end = count
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(count.len());
        count[..end].parse().expect("a number")
    }

    fn wait_subscribers(&self, n: u64) {
        wait_for(
            &format!("{n} subscribers"),
            || self.subscribers(),
            |&s| s == n,
        );
    }

    /// Whatever the example wrote to stderr since start (for messages).
    fn log_so_far(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    assert!(
        page.head
            .to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{}",
        page.head
    );
    let html = page.text();
    assert!(
        html.contains("<html") && html.contains("new EventSource("),
        "not the chat page"
    );

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

    // Refused messages: a status and a text saying why; nothing broadcast.
    let refused: [(&str, Vec<u8>, u16, &str); 3] = [
        ("empty", Vec::new(), 400, "empty"),
        ("invalid UTF-8", b"ok \xff\xfe".to_vec(), 400, "utf-8"),
        ("65 KiB", vec![b'x'; 65 * 1024], 413, "too large"),
    ];
    for (name, body, status, says) in &refused {
        let reply = chat.post("a", body);
        assert_eq!(reply.status, *status, "{name}: {reply:?}");
        assert!(
            reply.text().to_lowercase().contains(says),
            "{name}: body {:?}",
            reply.text()
        );
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{name}"
        );
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
    chat.wait_subscribers(4);
    assert_eq!(chat.post("a", b"m4").status, 204);
    for sse in [&mut by_header, &mut by_query, &mut room_a] {
        assert_eq!(message(sse).data, "m4");
    }

    let stats = chat.get("/stats");
    assert_eq!(stats.status, 200, "{stats:?}");
    assert!(
        stats
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        stats.head
    );
    let json = stats.text();
    assert!(
        json.starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    assert!(
        json.contains("\"hub\":{") && json.contains("\"server\":{"),
        "{json}"
    );
    assert!(json.contains("\"published\":9,"), "{json}");
    assert!(json.contains("\"open_streams\":4,"), "{json}");
}

#[cfg(unix)]
#[test]
fn sigint_ends_the_streams_and_exits_0() {
    let mut chat = Chat::start();
    let mut streams = [chat.sse("/events", &[]), chat.sse("/events?room=a", &[])];
    chat.wait_subscribers(2);
    assert_eq!(chat.post("lobby", b"hello").status, 204);
    assert_eq!(message(&mut streams[0]).data, "hello");

    let status = Command::new("kill")
        .args(["-INT", &chat.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    for sse in &mut streams {
        // The goodbye is a retry: hint of 0.5 to 2 s, then the end.
        let items = sse.until_eof();
        assert!(
            items.iter().all(|i| matches!(i, Item::Comment(_))),
            "{items:?}"
        );
        let retry = sse.retry().expect("a retry: hint");
        assert!((500..=2000).contains(&retry.as_millis()), "{retry:?}");
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = chat.child.try_wait().expect("wait for the example") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGINT: {:?}",
            chat.log_so_far()
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{:?}", chat.log_so_far());
}
