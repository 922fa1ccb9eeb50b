//! The event-stream parser against the rules of the WHATWG standard (9.2.6),
//! fed whole, byte by byte and split at every position; a round trip with
//! the encoder; and random bytes.

use std::time::Duration;

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;
use stdsse::parser::{Item, MessageEvent, ParseError, Parser};
use stdsse::Event;

type Output = Result<Item, ParseError>;

/// An expected event: type, data, id.
fn ev(event_type: &str, data: &str, id: &str) -> Output {
    Ok(Item::Event(MessageEvent {
        event_type: event_type.into(),
        data: data.into(),
        id: id.into(),
    }))
}

/// An expected `message` event with no id.
fn msg(data: &str) -> Output {
    ev("message", data, "")
}

fn comment(text: &str) -> Output {
    Ok(Item::Comment(text.into()))
}

fn line_err(limit: usize) -> Output {
    Err(ParseError::LineTooLong { limit })
}

fn size_err(limit: usize) -> Output {
    Err(ParseError::EventTooLarge { limit })
}

/// What one case starts with and expects besides the items.
struct Case {
    input: &'static [u8],
    items: Vec<Output>,
    /// The starting last event ID.
    start_id: Option<&'static str>,
    /// The final last event ID (default: the starting one, or "").
    last_id: Option<&'static str>,
    /// The final retry in milliseconds (default: none).
    retry: Option<Option<u64>>,
    line: Option<usize>,
    event: Option<usize>,
}

impl Case {
    fn parser(&self) -> Parser {
        let mut parser = Parser::new();
        if let Some(id) = self.start_id {
            parser = parser.last_event_id(id);
        }
        if let Some(limit) = self.line {
            parser = parser.max_line_len(limit);
        }
        if let Some(limit) = self.event {
            parser = parser.max_event_size(limit);
        }
        parser
    }

    /// Feeds the chunks, pulling items after each one (or only at the end),
    /// then finishes the stream.
    fn run(&self, chunks: &[&[u8]], pull_each: bool) -> (Vec<Output>, String, Option<Duration>) {
        let mut parser = self.parser();
        let mut items = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            if pull_each {
                items.extend(parser.by_ref());
            }
        }
        parser.finish();
        items.extend(parser.by_ref());
        assert_eq!(parser.buffered(), 0, "buffered after finish");
        (items, parser.get_last_event_id().to_owned(), parser.retry())
    }

    fn check(&self, name: &str) {
        let expected = (
            self.items.clone(),
            self.last_id.or(self.start_id).unwrap_or("").to_owned(),
            self.retry.unwrap_or(None).map(Duration::from_millis),
        );
        let input = self.input;
        let check = |chunks: &[&[u8]], pull_each: bool, how: &str| {
            let got = self.run(chunks, pull_each);
            assert_eq!(got, expected, "{name}: {how}, chunks {chunks:?}");
        };
        check(&[input], true, "whole");
        check(&input.chunks(1).collect::<Vec<_>>(), true, "byte by byte");
        check(&input.chunks(1).collect::<Vec<_>>(), false, "bytes, pulled at the end");
        for i in 0..=input.len() {
            check(&[&input[..i], &input[i..]], true, "two chunks");
        }
        if input.len() <= 80 {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    check(&[&input[..i], &input[i..j], &input[j..]], true, "three chunks");
                }
            }
        }
    }
}

/// One line per case: `name: b"input" => [items], key = value, ...;`
/// Keys: `start_id`, `last_id`, `retry` (`Some(ms)`), `line` and `event`
/// (the limits).
macro_rules! cases {
    ($($name:ident: $input:expr => [$($item:expr),* $(,)?] $(, $key:ident = $value:expr)*;)*) => {$(
        #[test]
        fn $name() {
            #[allow(unused_mut)]
            let mut case = Case {
                input: $input,
                items: vec![$($item),*],
                start_id: None,
                last_id: None,
                retry: None,
                line: None,
                event: None,
            };
            $(case.$key = Some($value);)*
            case.check(stringify!($name));
        }
    )*};
}

cases! {
    // The examples of the standard (9.2.6).
    spec_yhoo: b"data: YHOO\ndata: +2\ndata: 10\n\n" => [msg("YHOO\n+2\n10")];
    spec_four_blocks: b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n" => [comment("test stream"), ev("message", "first event", "1"), msg("second event")];
    spec_four_blocks_ended: b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n" => [comment("test stream"), ev("message", "first event", "1"), msg("second event"), msg(" third event")];
    spec_two_events: b"data\n\ndata\ndata\n\ndata:" => [msg(""), msg("\n")];
    spec_identical: b"data:test\n\ndata: test\n\n" => [msg("test"), msg("test")];

    // Byte order mark: one stripped at offset 0, split or whole.
    bom_stripped: b"\xEF\xBB\xBFdata: x\n\n" => [msg("x")];
    bom_only: b"\xEF\xBB\xBF" => [];
    bom_then_empty_line: b"\xEF\xBB\xBF\ndata: x\n\n" => [msg("x")];
    bom_second_is_content: b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n" => [msg("y")];
    bom_not_at_start: b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n" => [msg("a"), msg("c")];
    bom_in_value_kept: b"data: \xEF\xBB\xBFx\n\n" => [msg("\u{FEFF}x")];
    bom_partial_is_replacement: b"\xEF\xBB:x\n\ndata: y\n\n" => [msg("y")];
    bom_partial_not_stripped: b"\xEF\xBBdata: x\n\n" => [];
    bom_lone_ef: b"\xEF\n\ndata: x\n\n" => [msg("x")];
    bom_partial_in_value: b"data: \xEF\xBBx\n\n" => [msg("\u{FFFD}x")];
    bom_then_comment: b"\xEF\xBB\xBF: hi\n" => [comment("hi")];

    // Line endings: LF, CR, CRLF, mixed.
    lf: b"data: x\n\n" => [msg("x")];
    cr: b"data: x\r\r" => [msg("x")];
    crlf: b"data: x\r\n\r\n" => [msg("x")];
    mixed: b"data: a\rdata: b\ndata: c\r\n\r\n" => [msg("a\nb\nc")];
    crlf_is_one_ending: b"data: a\r\ndata: b\r\n\r\n" => [msg("a\nb")];
    cr_cr_lf: b"data: x\r\r\ndata: y\n\n" => [msg("x"), msg("y")];
    lf_cr: b"data: x\n\rdata: y\n\n" => [msg("x"), msg("y")];
    crlf_then_lf: b"data: x\r\n\n" => [msg("x")];
    cr_then_lf_lf: b"data: x\r\n\ndata: y\r\r" => [msg("x"), msg("y")];
    only_line_endings: b"\n\r\n\r\r\n\n" => [];
    empty_stream: b"" => [];

    // Fields: colon, one space, names.
    data_no_colon: b"data\n\n" => [msg("")];
    data_empty: b"data:\n\n" => [msg("")];
    data_two_empty: b"data\ndata\n\n" => [msg("\n")];
    data_three_lines: b"data: a\ndata:\ndata: c\n\n" => [msg("a\n\nc")];
    data_no_space: b"data:x\n\n" => [msg("x")];
    one_space_removed: b"data:  x\n\n" => [msg(" x")];
    only_space: b"data: \n\n" => [msg("")];
    tab_kept: b"data:\tx\n\n" => [msg("\tx")];
    trailing_space_kept: b"data: x \n\n" => [msg("x ")];
    split_at_first_colon: b"data: a: b:c\n\n" => [msg("a: b:c")];
    nul_in_data: b"data: \0\n\n" => [msg("\0")];
    unknown_field: b"foo: bar\ndata: x\nbar\n\n" => [msg("x")];
    names_case_sensitive: b"Data: a\nDATA: b\nEVENT: c\nID: d\nRetry: 5\n\n" => [];
    names_exact: b" data: a\ndata : b\ndata\t: c\ndatas: d\n\n" => [];
    unicode: b"event: \xC3\xA9v\ndata: h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80\n\n" => [ev("év", "héllo ✓ 😀", "")];

    // event
    event_type: b"event: tick\ndata: x\n\n" => [ev("tick", "x", "")];
    event_after_data: b"data: x\nevent: tick\n\n" => [ev("tick", "x", "")];
    event_overwritten: b"event: a\nevent: b\ndata: x\n\n" => [ev("b", "x", "")];
    event_empty_is_message: b"event:\ndata: x\n\n" => [msg("x")];
    event_bare_is_message: b"event: a\nevent\ndata: x\n\n" => [msg("x")];
    event_only_fires_nothing: b"event: a\n\ndata: x\n\n" => [msg("x")];
    event_reset_after_dispatch: b"event: a\ndata: 1\n\ndata: 2\n\n" => [ev("a", "1", ""), msg("2")];
    event_space_kept: b"event:  a \ndata: x\n\n" => [ev(" a ", "x", "")];

    // id
    id_set: b"id: 1\ndata: x\n\n" => [ev("message", "x", "1")], last_id = "1";
    id_after_data: b"data: x\nid: 1\n\n" => [ev("message", "x", "1")], last_id = "1";
    id_persists: b"id: 1\ndata: a\n\ndata: b\n\n" => [ev("message", "a", "1"), ev("message", "b", "1")], last_id = "1";
    id_reset_empty: b"id: 1\ndata: a\n\nid:\ndata: b\n\n" => [ev("message", "a", "1"), msg("b")], last_id = "";
    id_reset_bare: b"id: 1\ndata: a\n\nid\ndata: b\n\n" => [ev("message", "a", "1"), msg("b")];
    id_spaces: b"id:  7 \ndata: x\n\n" => [ev("message", "x", " 7 ")], last_id = " 7 ";
    id_nul_nul: b"id: \0\0\ndata: x\n\n" => [msg("x")];
    id_x_nul: b"id: x\0\ndata: x\n\n" => [msg("x")];
    id_nul_x: b"id: \0x\ndata: x\n\n" => [msg("x")];
    id_x_nul_x: b"id: x\0x\ndata: x\n\n" => [msg("x")];
    id_space_nul: b"id:  \0\ndata: x\n\n" => [msg("x")];
    id_nul_keeps_previous: b"id: 1\n\nid: \0\ndata: x\n\n" => [ev("message", "x", "1")], last_id = "1";
    id_only_commits: b"id: 5\n\n" => [], last_id = "5";
    id_only_then_event: b"id: 5\n\ndata: x\n\n" => [ev("message", "x", "5")], last_id = "5";
    id_last_wins: b"id: 1\nid: 2\ndata: x\n\n" => [ev("message", "x", "2")], last_id = "2";
    id_unterminated_not_committed: b"id: 1\n\nid: 2\ndata: x\n" => [], last_id = "1";
    id_unicode: b"id: \xE2\x9C\x93\xFF\n\n" => [], last_id = "✓\u{FFFD}";
    start_id_carried: b"data: x\n\n" => [ev("message", "x", "7")], start_id = "7";
    start_id_replaced: b"id: 8\ndata: x\n\ndata: y\n\n" => [ev("message", "x", "8"), ev("message", "y", "8")], start_id = "7", last_id = "8";
    start_id_reset: b"id\n\ndata: x\n\n" => [msg("x")], start_id = "7", last_id = "";
    start_id_kept_on_eof: b"id: 8\n" => [], start_id = "7";

    // retry
    retry_set: b"retry: 2000\n\n" => [], retry = Some(2000);
    retry_leading_zero: b"retry: 02000\n" => [], retry = Some(2000);
    retry_zero: b"retry:0\n" => [], retry = Some(0);
    retry_unterminated_line_ignored: b"retry: 5" => [];
    retry_takes_effect_at_once: b"retry: 5\ndata: x\n" => [], retry = Some(5);
    retry_with_event: b"retry: 5\ndata: x\n\n" => [msg("x")], retry = Some(5);
    retry_plus: b"retry: +5\n\n" => [];
    retry_suffix: b"retry: 5s\n\n" => [];
    retry_two_spaces: b"retry:  5\n\n" => [];
    retry_decimal: b"retry: 1.5\n\n" => [];
    retry_negative: b"retry: -1\n\n" => [];
    retry_trailing_space: b"retry: 5 \n\n" => [];
    retry_empty: b"retry:\nretry\n\n" => [];
    retry_fullwidth_digit: b"retry: \xEF\xBC\x95\n\n" => [];
    retry_invalid_keeps_last: b"retry: 1000\nretry: 1000x\n\n" => [], retry = Some(1000);
    retry_last_valid_wins: b"retry: 1\nretry: 2\n\n" => [], retry = Some(2);
    retry_u64_max: b"retry: 18446744073709551615\n" => [], retry = Some(u64::MAX);
    retry_overflow_saturates: b"retry: 99999999999999999999999999999\n" => [], retry = Some(u64::MAX);

    // Comments
    comment_text: b": hello\n" => [comment("hello")];
    comment_no_space: b":hello\n" => [comment("hello")];
    comment_two_spaces: b":  hello \n" => [comment(" hello ")];
    comment_empty: b":\n" => [comment("")];
    comment_colons: b": a: b\n" => [comment("a: b")];
    comment_unterminated: b": a" => [];
    comment_invalid_utf8: b": \xFFa\n" => [comment("\u{FFFD}a")];
    comments_in_event: b": a\ndata: x\n: b\n\n" => [comment("a"), comment("b"), msg("x")];
    comment_does_not_dispatch: b"data: x\n:\n" => [comment("")];

    // End of stream: an unended event is dropped.
    eof_no_empty_line: b"data: x\n" => [];
    eof_partial_line: b"data: x" => [];
    eof_after_event: b"data: x\n\ndata: y" => [msg("x")];
    eof_after_cr: b"data: x\r\r" => [msg("x")];
    eof_typed: b"event: a\ndata: x\n" => [];

    // UTF-8 decoding: U+FFFD per maximal subpart.
    utf8_invalid_byte: b"data: \xFF\n\n" => [msg("\u{FFFD}")];
    utf8_truncated_at_eol: b"data: a\xC3\ndata: b\n\n" => [msg("a\u{FFFD}\nb")];
    utf8_truncated_three: b"data: \xE2\x82\rx\n\n" => [msg("\u{FFFD}")];
    utf8_truncated_four: b"data: \xF0\x9F\x98.\n\n" => [msg("\u{FFFD}.")];
    utf8_overlong: b"data: \xC0\x80\n\n" => [msg("\u{FFFD}\u{FFFD}")];
    utf8_surrogate: b"data: \xED\xA0\x80\n\n" => [msg("\u{FFFD}\u{FFFD}\u{FFFD}")];
    utf8_in_event_type: b"event: \x80\ndata: x\n\n" => [ev("\u{FFFD}", "x", "")];
    utf8_split_anywhere: b"data: a\xC3\xA9\xE2\x9C\x93\xF0\x9F\x98\x80\xEF\xBB\xBFz\n\n" => [msg("a\u{e9}\u{2713}\u{1F600}\u{FEFF}z")];
    utf8_invalid_split_anywhere: b"data: \xF0\x9F\x98a\xE2\x82\xFF\xC3\xEF\xBB\n\n" => [msg("\u{FFFD}a\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}")];
    utf8_lossy_per_maximal_subpart: b"data: a\xEF\xBBb\xFF\xC3\xA9\n\n" => [msg("a\u{FFFD}b\u{FFFD}\u{e9}")];
    utf8_name_invalid: b"dat\xE1: x\n\n" => [];

    // Limits: a line of 8 bytes is fine, 9 is one too many.
    line_at_limit: b"data: 12\n\n" => [msg("12")], line = 8;
    line_over_limit: b"data: 123\n\ndata: x\n\n" => [line_err(8), msg("x")], line = 8;
    line_over_limit_cr: b"data: 123\r\rdata: x\r\r" => [line_err(8), msg("x")], line = 8;
    line_over_limit_crlf: b"data: 123\r\n\r\ndata: x\r\n\r\n" => [line_err(8), msg("x")], line = 8;
    line_over_limit_eof: b"data: 123456789" => [line_err(8)], line = 8;
    line_over_limit_drops_event: b"data: a\ndata: 123\ndata: b\n\ndata: c\n\n" => [line_err(8), msg("c")], line = 8;
    line_over_limit_skips_comments: b": 12345678\n: ok\n\n: next\n" => [line_err(8), comment("next")], line = 8;
    line_over_limit_twice_one_error: b"data: 123\ndata: 456\n\ndata: x\n\n" => [line_err(8), msg("x")], line = 8;
    line_over_limit_each_event: b"data: 123\n\ndata: 456\n\n" => [line_err(8), line_err(8)], line = 8;
    line_over_limit_id_not_committed: b"id: 1\n\nid: 2\ndata: 12345\n\ndata: y\n\n" => [line_err(8), ev("message", "y", "1")], line = 8, last_id = "1";
    line_over_limit_retry_after_ignored: b"data: 123456789\nretry: 5\n\n" => [line_err(8)], line = 8;
    line_over_limit_retry_before_kept: b"retry: 5\ndata: 123456789\n\n" => [line_err(8)], line = 8, retry = Some(5);
    line_limit_zero: b"\n\nx\n\n\n" => [line_err(0)], line = 0;
    line_limit_bom_not_counted: b"\xEF\xBB\xBFdata: 12\n\n" => [msg("12")], line = 8;
    // The limit counts the data as dispatched (no LF after the last line)
    // plus the event type.
    event_at_limit: b"data: 123\n\n" => [msg("123")], event = 4;
    event_data_exactly_at_limit: b"data: 1234\n\n" => [msg("1234")], event = 4;
    event_over_limit: b"data: 12345\n\ndata: x\n\n" => [size_err(4), msg("x")], event = 4;
    event_lines_at_limit: b"data: 1\ndata: 2\n\n" => [msg("1\n2")], event = 4;
    event_lines_data_exactly_at_limit: b"data: 1\ndata: 23\n\n" => [msg("1\n23")], event = 4;
    event_empty_lines_at_limit: b"data\ndata\ndata\ndata\ndata\n\n" => [msg("\n\n\n\n")], event = 4;
    event_empty_lines_over_limit: b"data\ndata\ndata\ndata\ndata\ndata\n\n" => [size_err(4)], event = 4;
    event_lines_over_limit: b"data: 1\ndata: 23\ndata\n\n" => [size_err(4)], event = 4;
    event_type_counts: b"event: ab\ndata: 12\n\nevent: abc\ndata: 12\n\n" => [ev("ab", "12", ""), size_err(4)], event = 4;
    event_type_alone_over: b"event: abcde\n\ndata: x\n\n" => [size_err(4), msg("x")], event = 4;
    event_over_limit_id_dropped: b"id: 9\ndata: 12345\n\n" => [size_err(4)], event = 4;
    event_over_limit_eof: b"data: 12345\ndata: 6" => [size_err(4)], event = 4;
    event_size_after_decoding: b"data: \xFF\n\n" => [size_err(2)], event = 2;
}

/// Runs a parser over chunks, pulling after each one; no finish.
fn pull_all(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<Output> {
    let mut items = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        while let Some(item) = parser.next_item() {
            items.push(item);
        }
    }
    items
}

#[test]
fn cr_at_end_of_chunk_ends_the_line_at_once() {
    let mut parser = Parser::new();
    // No more input is needed to see the CR-ended empty line.
    assert_eq!(pull_all(&mut parser, &[b"data: x\r\r"]), [msg("x")]);
    // The LF that follows completes the CRLF: it is not another empty line.
    assert_eq!(pull_all(&mut parser, &[b"\ndata: y\r", b"\n", b"\r"]), [msg("y")]);
    assert_eq!(pull_all(&mut parser, &[b": c\r"]), [comment("c")]);
}

#[test]
fn compaction_keeps_the_partial_line() {
    let mut parser = Parser::new();
    assert_eq!(pull_all(&mut parser, &[b"data: a\n\ndata: b"]), [msg("a")]);
    assert_eq!(parser.buffered(), "data: b".len());
    assert_eq!(pull_all(&mut parser, &[b"\n\n"]), [msg("b")]);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn reset_rearms_bom_and_keeps_id_and_retry() {
    let mut parser = Parser::new();
    let items =
        pull_all(&mut parser, &[b"\xEF\xBB\xBFid: 3\nretry: 10\ndata: a\n\nid: 4\ndata: b\r"]);
    assert_eq!(items, [ev("message", "a", "3")]);
    parser.reset();
    // The pending event (with its id 4) and the CR are forgotten.
    let items = pull_all(&mut parser, &[b"\xEF", b"\xBB\xBF", b"\ndata: c\n\n"]);
    assert_eq!(items, [ev("message", "c", "3")]);
    assert_eq!(parser.get_last_event_id(), "3");
    assert_eq!(parser.retry(), Some(Duration::from_millis(10)));
    // Without reset, a BOM is content.
    let items = pull_all(&mut parser, &[b"\xEF\xBB\xBFdata: d\n\ndata: e\n\n"]);
    assert_eq!(items, [ev("message", "e", "3")]);
}

#[test]
fn reset_forgets_pending_cr() {
    let mut parser = Parser::new();
    assert_eq!(pull_all(&mut parser, &[b"data: a\n\ndata: b\r"]), [msg("a")]);
    parser.reset();
    // This LF is an empty line of the new stream, not the end of a CRLF.
    assert_eq!(pull_all(&mut parser, &[b"\ndata: c\n\n"]), [msg("c")]);
}

#[test]
fn reset_drops_a_skipped_event() {
    let mut parser = Parser::new().max_line_len(4);
    assert_eq!(pull_all(&mut parser, &[b"data: 12345"]), [line_err(4)]);
    parser.reset();
    assert_eq!(pull_all(&mut parser, &[b"data\n\n"]), [msg("")]);
}

#[test]
fn finish_parses_lines_fed_before_it() {
    let mut parser = Parser::new();
    parser.feed(b"data: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n");
    parser.finish();
    // More input after finish continues without a BOM being stripped.
    parser.feed(b"\xEF\xBB\xBF: x\n:y\n");
    let items: Vec<_> = parser.by_ref().collect();
    assert_eq!(items, [msg("a"), ev("message", "b", "2"), comment("y")]);
    assert_eq!(parser.get_last_event_id(), "2");
    // Calling finish twice is harmless.
    parser.finish();
    parser.finish();
    assert_eq!(parser.next_item(), None);
}

#[test]
fn builder_defaults_and_traits() {
    let parser = Parser::default();
    assert_eq!(parser.get_last_event_id(), "");
    assert_eq!(parser.retry(), None);
    assert_eq!(parser.buffered(), 0);
    let mut a = Parser::new().last_event_id("x").max_line_len(10).max_event_size(20);
    a.feed(b"data: 1\n");
    let mut b = a.clone();
    b.feed(b"\n");
    assert_eq!(b.next_item(), Some(ev("message", "1", "x")));
    assert_eq!(a.next_item(), None);
    assert!(format!("{a:?}").contains("Parser"));
    // Setting the event limit moves the line limit with it, unless the
    // line limit was set explicitly.
    let mut p = Parser::new().max_event_size(10);
    p.feed(&[b'a'; 75]);
    assert_eq!(p.next_item(), Some(line_err(74)));
    let mut p = Parser::new().max_line_len(5).max_event_size(10);
    p.feed(&[b'a'; 6]);
    assert_eq!(p.next_item(), Some(line_err(5)));
}

const MIB16: usize = 16 * 1024 * 1024;

#[test]
fn the_default_limit_takes_16_mib_of_data_and_refuses_one_byte_more() {
    // Lines may be 64 bytes longer than the event limit (room for the field
    // name), so one `data:` line can carry a whole event's worth.
    let mut p = Parser::new();
    p.feed(&vec![b'a'; MIB16 + 64]);
    assert_eq!(p.next_item(), None);
    p.feed(b"a");
    assert_eq!(p.next_item(), Some(line_err(MIB16 + 64)));
    // Data of exactly the limit, in one line or in two (joined by LF).
    let value = "v".repeat(MIB16);
    for input in [
        format!("data: {value}\n\n"),
        format!("data: {}\ndata: {}\n\n", &value[..1000], &value[1001..]),
    ] {
        let mut p = Parser::new();
        p.feed(input.as_bytes());
        assert!(matches!(p.next_item(), Some(Ok(Item::Event(e))) if e.data.len() == MIB16));
        // One byte more is refused, and the stream goes on.
        p.feed(input.replacen("data: ", "data: w", 1).as_bytes());
        p.feed(b"data: next\n\n");
        assert_eq!(p.next_item(), Some(size_err(MIB16)));
        assert_eq!(p.next_item(), Some(msg("next")));
        assert_eq!(p.next_item(), None);
    }
}

#[test]
fn errors_display() {
    let e = ParseError::LineTooLong { limit: 5 };
    assert_eq!(e.to_string(), "event stream line longer than 5 bytes");
    let e: Box<dyn std::error::Error> = Box::new(ParseError::EventTooLarge { limit: 6 });
    assert_eq!(e.to_string(), "event larger than 6 bytes (data and event type)");
}

#[test]
fn endless_line_stays_bounded() {
    let mut parser = Parser::new();
    let chunk = [b'x'; 8192];
    let mut errors = 0;
    for _ in 0..2100 {
        // 16.4 MiB without a line ending.
        parser.feed(&chunk);
        assert!(parser.buffered() <= MIB16 + 64 + chunk.len());
        while let Some(item) = parser.next_item() {
            assert_eq!(item, line_err(MIB16 + 64));
            errors += 1;
        }
        assert!(parser.buffered() <= MIB16 + 64);
    }
    assert_eq!(errors, 1);
    parser.feed(b"\ndata: ok\n\n\ndata: ok\n\n");
    assert_eq!(parser.next_item(), Some(msg("ok")));
    assert_eq!(parser.next_item(), None);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn endless_event_stays_bounded() {
    let mut parser = Parser::new();
    let mut errors = 0;
    let line = format!("data: {}\n", "x".repeat(1017));
    for _ in 0..17_000 {
        // 17 MB of data lines.
        parser.feed(line.as_bytes());
        while let Some(item) = parser.next_item() {
            assert_eq!(item, size_err(MIB16));
            errors += 1;
        }
        assert!(parser.buffered() <= MIB16);
    }
    assert_eq!(errors, 1);
}

/// Random text of up to `max` pieces.
fn text(rng: &mut Rng, pieces: &[&str], max: usize) -> String {
    let len = rng.below(max + 1);
    (0..len).map(|_| *rng.pick(pieces)).collect()
}

/// Splits `bytes` into chunks of random sizes (1 to `max`).
fn random_chunks<'a>(rng: &mut Rng, bytes: &'a [u8], max: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// The comment lines and the lines of data as a client sees them: CRLF and
/// CR become LF.
fn lines(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n").replace('\r', "\n").split('\n').map(String::from).collect()
}

#[test]
fn round_trip_random_events() {
    const TEXT: &[&str] = &[
        "a", "b", "z", " ", "  ", ":", "\r", "\n", "\r\n", "\n\r", "é", "✓", "😀", "\u{FEFF}",
        "\0", "\t", "data: x", "id", "event:",
    ];
    const NAME: &[&str] = &["a", "tick", " ", ":", "é", "😀", "\t", "\0", "message"];
    const ID: &[&str] = &["1", "42", " ", ":", "é", "x y", "\u{FEFF}"];
    let mut rng = Rng::new(0x5EED);
    for round in 0..20 {
        let start = if round % 2 == 0 { "" } else { "start" };
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut id = start.to_owned();
        let mut retry = None;
        for _ in 0..300 {
            let mut event = Event::new();
            for _ in 0..rng.below(3) {
                let text = text(&mut rng, TEXT, 6);
                expected.extend(lines(&text).into_iter().map(|line| Ok(Item::Comment(line))));
                event = event.comment(text);
            }
            let event_type = rng.chance(50).then(|| text(&mut rng, NAME, 3));
            if let Some(name) = &event_type {
                event = event.event(name.clone()).unwrap();
            }
            if rng.chance(40) {
                // Spaces inside only: an id starts and ends with neither (see `Event::id`).
                let new_id = text(&mut rng, ID, 3).trim_matches(' ').to_owned();
                event = event.id(new_id.clone()).unwrap();
                id = new_id;
            }
            if rng.chance(10) {
                let ms = rng.next_u64() % 100_000;
                event = event.retry(Duration::from_millis(ms));
                retry = Some(Duration::from_millis(ms));
            }
            if rng.chance(85) {
                let data = text(&mut rng, TEXT, 12);
                expected.push(Ok(Item::Event(MessageEvent {
                    event_type: match event_type {
                        Some(name) if !name.is_empty() => name,
                        _ => "message".to_owned(),
                    },
                    data: lines(&data).join("\n"),
                    id: id.clone(),
                })));
                event = event.data(data);
            }
            event.encode_into(&mut wire);
        }
        let mut parser = Parser::new().last_event_id(start);
        let max_chunk = 1 + rng.below(200);
        let chunks = random_chunks(&mut rng, &wire, max_chunk);
        let items = pull_all(&mut parser, &chunks);
        assert_eq!(items.len(), expected.len(), "round {round}");
        for (n, (got, want)) in items.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "round {round}, item {n}");
        }
        assert_eq!(parser.get_last_event_id(), id);
        assert_eq!(parser.retry(), retry);
        assert_eq!(parser.buffered(), 0);
    }
}

#[test]
fn random_bytes_never_panic_and_stay_bounded() {
    const BYTES: &[u8] = b"\r\n\r\n::  \xEF\xBB\xBF\0\x80\xC3\xFFad9";
    const WORDS: &[&[u8]] = &[b"data", b"id", b"event", b"retry", b"123", b": ", b"\r\n"];
    let mut rng = Rng::new(7);
    let (max_line, max_event) = (24, 40);
    let mut input = Vec::new();
    for n in 0..200_000 {
        input.clear();
        let len = rng.below(48);
        while input.len() < len {
            if rng.chance(30) {
                let word = *rng.pick(WORDS);
                input.extend_from_slice(word);
            } else if rng.chance(80) {
                input.push(*rng.pick(BYTES));
            } else {
                input.push(rng.next_u64() as u8);
            }
        }
        let max_chunk = 1 + rng.below(16);
        let chunks = random_chunks(&mut rng, &input, max_chunk);
        let mut parser = Parser::new().max_line_len(max_line).max_event_size(max_event);
        let mut items = Vec::new();
        // Decoding can turn one invalid byte into the three of U+FFFD.
        let bound = max_line + max_event + 3;
        for chunk in &chunks {
            parser.feed(chunk);
            assert!(parser.buffered() <= bound + 3 * chunk.len());
            while let Some(item) = parser.next_item() {
                items.push(item);
                assert!(parser.buffered() <= bound + 3 * chunk.len());
            }
            assert!(parser.buffered() <= bound);
        }
        parser.finish();
        items.extend(parser.by_ref());
        // Same result as feeding the input whole.
        let mut whole = Parser::new().max_line_len(max_line).max_event_size(max_event);
        whole.feed(&input);
        whole.finish();
        let expected: Vec<_> = whole.by_ref().collect();
        assert_eq!(items, expected, "input {n}: {input:?} in {chunks:?}");
        assert_eq!(parser.get_last_event_id(), whole.get_last_event_id());
        assert_eq!(parser.retry(), whole.retry());
    }
}
