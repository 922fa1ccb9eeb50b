//! The `clock` example behaves as documented: it prints where it listens,
//! serves `/events` and `/`, resumes after `Last-Event-ID`, and exits with
//! status 0 on Ctrl+C (SIGINT).

mod common;

#[cfg(unix)]
#[test]
fn clock_example_works_as_documented() {
    use common::{Client, Example};

    /// `YYYY-MM-DDTHH:MM:SS(.f+)?Z`
    fn is_rfc3339_utc(s: &str) -> bool {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let fixed = b.len() >= 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19);
        let rest = s.get(19..).unwrap_or("");
        let fraction_ok = match rest.strip_suffix('Z') {
            Some("") => true,
            Some(f) => {
                f.len() > 1 && f.starts_with('.') && f[1..].bytes().all(|c| c.is_ascii_digit())
            }
            None => false,
        };
        fixed && fraction_ok
    }

    /// Reads one event (up to its empty line) and returns its lines.
    fn event_lines(client: &mut Client) -> Vec<String> {
        let raw = client.read_until(b"\n\n");
        let text = String::from_utf8(raw).expect("UTF-8 stream");
        let text = text.strip_suffix("\n\n").expect("an empty line ends it");
        text.split('\n').map(str::to_string).collect()
    }

    /// Checks one `time` event and returns its id.
    fn time_event(client: &mut Client) -> String {
        let lines = event_lines(client);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "event: time");
        let id = lines[1].strip_prefix("id: ").expect("an id line").to_string();
        let data = lines[2].strip_prefix("data: ").expect("a data line");
        assert!(is_rfc3339_utc(data), "not RFC 3339 UTC: {data:?}");
        id
    }

    // The example's binary runs directly so that the signal reaches it and
    // not cargo.
    let mut clock = Example::start("clock", &["--interval-ms", "50"]);
    let addr = clock.addr;

    // The stream: a comment line (no empty line after it: it would only
    // dispatch nothing), then evt-1, evt-2, ...
    let mut events = Client::connect(addr);
    events.send(b"GET /events HTTP/1.1\r\nHost: clock\r\nAccept: text/event-stream\r\n\r\n");
    // 200, text/event-stream; the chunked body is decoded from here on.
    let head = events.stream_head();
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(events.read_exact(12), b": connected\n");
    for n in 1..=3 {
        assert_eq!(time_event(&mut events), format!("evt-{n}"));
    }

    // A reconnect after evt-K continues at evt-(K+1); the ids stop at the
    // largest u64 (no wrap to evt-0); an id the clock did not make (not a
    // u64 after `evt-`) starts again at evt-1.
    let max = u64::MAX;
    for (last_id, next) in [
        ("evt-41", ["evt-42", "evt-43"].map(String::from)),
        (&format!("evt-{}", max - 1), [max, max].map(|n| format!("evt-{n}"))),
        (&format!("evt-{max}"), [max, max].map(|n| format!("evt-{n}"))),
        ("evt-18446744073709551616", ["evt-1", "evt-2"].map(String::from)),
        ("evt-x", ["evt-1", "evt-2"].map(String::from)),
        ("42", ["evt-1", "evt-2"].map(String::from)),
    ] {
        let mut resumed = Client::connect(addr);
        let request =
            format!("GET /events HTTP/1.1\r\nHost: clock\r\nLast-Event-ID: {last_id}\r\n\r\n");
        resumed.send(request.as_bytes());
        resumed.stream_head();
        assert_eq!(resumed.read_exact(12), b": connected\n");
        let got = [time_event(&mut resumed), time_event(&mut resumed)];
        assert_eq!(got, next, "after Last-Event-ID {last_id}");
    }

    // The page.
    let mut page = Client::connect(addr);
    page.send(b"GET / HTTP/1.1\r\nHost: clock\r\nConnection: close\r\n\r\n");
    let resp = page.response();
    assert_eq!(resp.status, 200);
    assert!(resp.header("Content-Type").unwrap_or("").starts_with("text/html"));
    assert!(resp.body_str().contains("EventSource"));

    // Ctrl+C with a stream still open: graceful shutdown, status 0.
    clock.interrupt();
    let status = clock.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The open stream was ended by the shutdown (events until then, then
    // the last chunk: `read_to_end` checks it).
    let rest = events.read_to_end();
    assert!(rest.ends_with(b"\n\n") || rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// The harness takes the `listening on` line only once its LF arrived: a
/// line written in pieces (as `eprintln!` writes it, one `write(2)` per
/// piece) is read whole, and a line the end of output cuts short is refused.
#[cfg(unix)]
#[test]
fn listening_line_is_taken_only_when_complete() {
    use std::process::{Command, Stdio};
    for (script, want) in [
        (
            "printf 'listening on http://127'; sleep 0.05; printf '.0'; sleep 0.05; \
             printf '.0.1:8'; sleep 0.05; printf '080\\n'",
            Ok("127.0.0.1:8080"),
        ),
        ("printf 'listening on http://127.0.0.1:8'", Err(())),
        ("printf 'listening on http://127.0'; sleep 0.05", Err(())),
    ] {
        let mut child =
            Command::new("sh").args(["-c", script]).stdout(Stdio::piped()).spawn().expect("run sh");
        let lines = common::complete_lines(child.stdout.take().unwrap());
        let got = common::listening_addr(&lines);
        let _ = child.wait();
        match want {
            Ok(addr) => assert_eq!(got.map(|a| a.to_string()), Ok(addr.to_string()), "{script}"),
            Err(()) => assert!(got.is_err(), "{script}: {got:?}"),
        }
    }
}
