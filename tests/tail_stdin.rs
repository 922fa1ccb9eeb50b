//! Runs `examples/tail.rs` on standard input.

mod common;

use std::process::Output;

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
    // Over the parser's default line limit (64 KiB + 64): reported on stderr, skipped.
    input.extend_from_slice(b"\ndata: ");
    input.extend_from_slice(&[b'x'; 70_000]);
    input.extend_from_slice(b"\n\ndata: after\n\ndata: not ended\n");
    let out = tail(&["--last-event-id", "start", "-"], &input);
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

    for args in [&["--bogus", "-"][..], &["--last-event-id"], &[]] {
        let out = tail(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}
