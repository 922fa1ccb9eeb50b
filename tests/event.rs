//! The encoder: exact bytes for every kind of event, and the errors of
//! the fallible setters.

use std::time::Duration;
use stdsse::{Event, EventError, Field, Frame};

/// One line per case: the event built by the expression, the exact bytes.
macro_rules! encodes {
        ($($name:ident: $event:expr => $wire:expr;)*) => {$(
            #[test]
            fn $name() -> Result<(), EventError> {
                let event: Event = $event;
                assert_eq!(String::from_utf8(event.encode()).unwrap(), $wire);
                Ok(())
            }
        )*};
    }

encodes! {
    empty_event: Event::new() => "\n";
    data_simple: Event::new().data("hello") => "data: hello\n\n";
    data_empty: Event::new().data("") => "data:\n\n";
    data_lf: Event::new().data("a\nb") => "data: a\ndata: b\n\n";
    data_cr: Event::new().data("a\rb") => "data: a\ndata: b\n\n";
    data_crlf_is_one_break: Event::new().data("a\r\nb") => "data: a\ndata: b\n\n";
    data_lf_cr_is_two_breaks: Event::new().data("a\n\rb") => "data: a\ndata:\ndata: b\n\n";
    data_cr_cr_lf: Event::new().data("a\r\r\nb") => "data: a\ndata:\ndata: b\n\n";
    data_trailing_break: Event::new().data("a\n") => "data: a\ndata:\n\n";
    data_only_break: Event::new().data("\r\n") => "data:\ndata:\n\n";
    data_leading_space_kept: Event::new().data(" x") => "data:  x\n\n";
    data_unicode: Event::new().data("héllo ✓ 😀") => "data: héllo ✓ 😀\n\n";
    data_injection_is_data: Event::new().data("x\revent: evil\rdata: y")
        => "data: x\ndata: event: evil\ndata: data: y\n\n";
    event_type: Event::new().event("tick")?.data("1") => "event: tick\ndata: 1\n\n";
    event_type_colon: Event::new().event("a:b")? => "event: a:b\n\n";
    id_field: Event::new().id("7")?.data("x") => "id: 7\ndata: x\n\n";
    id_empty_resets: Event::new().id("")? => "id:\n\n";
    retry_ms: Event::new().retry(Duration::from_millis(2500)) => "retry: 2500\n";
    retry_truncates: Event::new().retry(Duration::from_micros(1999)) => "retry: 1\n";
    retry_zero: Event::new().retry(Duration::ZERO) => "retry: 0\n";
    comment_keep_alive: Event::new().comment("") => ":\n";
    comment_text: Event::new().comment("connected") => ": connected\n";
    comment_multi_line: Event::new().comment("a\r\nb\rc") => ": a\n: b\n: c\n";
    comments_many: Event::new().comment("a").comment("b") => ": a\n: b\n";
    comment_and_retry: Event::new().comment("hi").retry(Duration::from_secs(1))
        => ": hi\nretry: 1000\n";
    event_only_dispatches: Event::new().event("e")? => "event: e\n\n";
    retry_with_data_dispatches: Event::new().retry(Duration::from_secs(1)).data("d")
        => "retry: 1000\ndata: d\n\n";
    all_fields: Event::new().comment("c").data("d").id("i")?.event("e")?
        .retry(Duration::from_secs(1)) => ": c\nevent: e\nid: i\nretry: 1000\ndata: d\n\n";
}

/// One line per case: which setter, the value, the field and character
/// named in the error.
macro_rules! refuses {
        ($($name:ident: $setter:ident($value:expr) => $field:ident, $ch:expr, $pos:expr;)*) => {$(
            #[test]
            fn $name() {
                let err = Event::new().$setter($value).unwrap_err();
                assert_eq!((err.field(), err.character(), err.position()), (Field::$field, $ch, $pos));
                assert!(err.to_string().contains(Field::$field.name()));
            }
        )*};
    }

refuses! {
    event_lf: event("a\nevent: x") => Event, '\n', 1;
    event_cr: event("a\r") => Event, '\r', 1;
    id_lf: id("\n") => Id, '\n', 0;
    id_cr: id("1\r2") => Id, '\r', 1;
    id_nul: id("x\0") => Id, '\0', 1;
    // What a `Last-Event-ID` header cannot carry back (RFC 9110 5.5).
    id_control: id("a\u{1}b") => Id, '\u{1}', 1;
    id_del: id("é\u{7f}") => Id, '\u{7f}', 2;
    id_escape: id("\u{1b}[0m") => Id, '\u{1b}', 0;
    id_leading_space: id(" 7") => Id, ' ', 0;
    id_trailing_space: id("7 ") => Id, ' ', 1;
    id_leading_tab: id("\t7") => Id, '\t', 0;
    id_trailing_tab: id("é\t") => Id, '\t', 2;
    id_only_space: id(" ") => Id, ' ', 0;
}

#[test]
fn an_id_a_header_carries_back_is_fine() {
    for id in ["", "a b", "a\tb", "é€😀", "~!\"#", "\u{80}\u{a0}"] {
        let event = Event::new().id(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        assert_eq!(event.encode(), format!("id: {id}\n\n").replace("id: \n", "id:\n").as_bytes());
    }
    let error = Event::new().id("a\u{1}").unwrap_err().to_string();
    assert!(error.contains("CTL (U+0001) at byte 1 of the `id` field"), "{error}");
}

#[test]
fn nul_is_fine_in_event_type_and_data() {
    let event = Event::new().event("a\0").unwrap().data("\0");
    assert_eq!(event.encode(), b"event: a\0\ndata: \0\n\n");
}

#[test]
fn frame_shares_bytes() {
    let frame = Frame::from(Event::new().data("x"));
    let copy = frame.clone();
    assert_eq!(copy.as_bytes(), b"data: x\n\n");
    assert!(std::ptr::eq(frame.as_bytes(), copy.as_bytes()));
    assert_eq!(frame.len(), 9);
}

#[test]
fn error_message_names_field_and_character() {
    let err = Event::new().id("a\nb").unwrap_err();
    assert_eq!(err.to_string(), "invalid character LF (U+000A) at byte 1 of the `id` field");
}
