//! Runs `examples/tail.rs` on standard input.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Runs the example with `input` on standard input.
fn tail(args: &[&str], input: &[u8]) -> Output {
    common::run_example("tail", args, input, None)
}

#[test]
fn tail_prints_json_lines_and_reports_usage() {
    let input = b"\xEF\xBB\xBF: hello\r\n\
        data: plain\n\n\
        event: odd \"name\"\nid: 7\ndata: a\\b\ndata: \ttab\x01\x7F \xC3\xA9 \xFF\n\n\
        data: keeps id 7\r\r\
        id\ndata: 123456789012345678901234567890123456789012345678901234567890\
        123456789012345678901234567890123456789012345678901234567890\n";
    let mut input = input.to_vec();
    // Over the line limit (64 KiB + 64 with this event limit): reported on
    // stderr, skipped.
    input.extend_from_slice(b"\ndata: ");
    input.extend_from_slice(&[b'x'; 70_000]);
    input.extend_from_slice(b"\n\ndata: after\n\ndata: not ended\n");
    let out = tail(&["--last-event-id", "start", "--max-event-size", "65536", "-"], &input);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!(
            r#"{"type":"message","data":"plain","id":"start"}"#,
            "\n",
            r#"{"type":"odd \"name\"","data":"a\\b\n\ttab\u0001\u007f é �","id":"7"}"#,
            "\n",
            r#"{"type":"message","data":"keeps id 7","id":"7"}"#,
            "\n",
            r#"{"type":"message","data":"123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890","id":""}"#,
            "\n",
            r#"{"type":"message","data":"after","id":""}"#,
            "\n",
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tail: skipped an event: event stream line longer than 65600 bytes\n"
    );

    for args in [&["--bogus", "-"][..], &["--last-event-id"], &[], &["--max-event-size", "1k", "-"]]
    {
        let out = tail(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}

/// Runs the example with a large `input`: written from another thread
/// while the output is read (both pipes would fill otherwise), within a
/// minute.
fn tail_big(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(common::example_binary("tail"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the tail example");
    let mut stdin = child.stdin.take().expect("piped stdin");
    thread::spawn(move || stdin.write_all(&input));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("tail ran longer than a minute")
        .expect("the output of tail")
}

#[test]
fn tail_takes_16_mib_of_data_by_default_and_max_event_size_sets_the_limit() {
    const LIMIT: usize = 16 * 1024 * 1024;
    let mut input = Vec::new();
    for size in [LIMIT, LIMIT + 1] {
        input.extend_from_slice(b"data: ");
        input.resize(input.len() + size, b'x');
        input.extend_from_slice(b"\n\n");
    }
    input.extend_from_slice(b"data: after\n\n");
    let out = tail_big(&["-"], input);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].matches('x').count(), LIMIT);
    assert_eq!(lines[1], r#"{"type":"message","data":"after","id":""}"#);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tail: skipped an event: event larger than 16777216 bytes (data and event type)\n"
    );

    // The limit counts the data as dispatched plus the event type.
    let input = b"data: 12345\n\ndata: 123456\n\nevent: ab\ndata: 1\ndata: 2\n\n";
    let out = tail(&["--max-event-size", "5", "-"], input);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!(
            r#"{"type":"message","data":"12345","id":""}"#,
            "\n",
            r#"{"type":"ab","data":"1\n2","id":""}"#,
            "\n",
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tail: skipped an event: event larger than 5 bytes (data and event type)\n"
    );
}
