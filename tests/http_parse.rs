//! Integration tests of `stdsse::http`: request heads, body framing, chunked
//! bodies, query strings and responses. No network.

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::{mutate, Rng};
use stdsse::http::{
    decode_query, parse_head, parse_response_head, percent_decode, reason_phrase, ChunkedDecoder,
    Error, Framing, Limits, Request, Response, Status, Version,
};

// ---------------------------------------------------------------------------
// Request heads: one line per case
// ---------------------------------------------------------------------------

/// What a head case expects.
#[derive(Debug)]
enum Want<'a> {
    /// A request head, all bytes consumed: method, target, version, and
    /// some `(name, value)` pairs that `header(name)` must return.
    Head(&'a str, &'a str, Version, &'a [(&'a str, &'a str)]),
    /// A response head: status, every field as `headers()` gives it, and
    /// the bytes after the head.
    Answer(u16, &'a [(&'a str, &'a str)], &'a str),
    /// Partial.
    More,
    /// This error.
    Fail(Error),
}
use Version::{Http10, Http11};
use Want::{Answer, Fail, Head, More};

/// Small limits so that boundary inputs stay short.
const SMALL: Limits = Limits {
    max_request_line: 20,
    max_header_line: 10,
    max_headers: 2,
    max_head: 64,
    max_body: 10,
};

/// Checks one case, and what every shorter prefix gives: a valid head's
/// prefixes are all `Partial`; an invalid head's prefixes are `Partial` or
/// the same error (the verdict never depends on how the bytes arrive).
fn check(input: &[u8], limits: &Limits, want: Want<'_>) {
    let got = parse_head(input, limits);
    match (&got, &want) {
        (Ok(Status::Complete((request, consumed))), Head(method, target, version, headers)) => {
            assert_eq!(*consumed, input.len(), "consumed");
            assert_eq!(request.method(), *method);
            assert_eq!(request.target(), *target);
            assert_eq!(request.version(), *version);
            for (name, value) in *headers {
                assert_eq!(request.header(name), Some(*value), "header {name}");
            }
        }
        (Ok(Status::Partial), More) => {}
        (Err(error), Fail(wanted)) if error == wanted => {}
        _ => panic!("{:?}: got {got:?}, want {want:?}", String::from_utf8_lossy(input)),
    }
    check_prefixes(input, input.len(), got.err(), |part| parse_head(part, limits));
}

/// Every prefix of `input[..end]` parses as `Partial` or as `error`: every
/// one for small inputs, a sample for the big ones.
fn check_prefixes<T: std::fmt::Debug>(
    input: &[u8],
    end: usize,
    error: Option<Error>,
    parse: impl Fn(&[u8]) -> Result<Status<T>, Error>,
) {
    let step = if end > 2048 { 997 } else { 1 };
    for len in (0..end).step_by(step) {
        match parse(&input[..len]) {
            Ok(Status::Partial) => {}
            Err(e) if Some(e) == error => {}
            part => panic!("prefix {len} of {:?}: {part:?}", String::from_utf8_lossy(input)),
        }
    }
}

/// The one table macro: `name: args => wants;` is a test that calls
/// `check(args, wants)`, one test per line.
macro_rules! cases {
    ($check:ident; $($name:ident: $($arg:expr),+ => $($want:expr),+;)*) => {$(
        #[test]
        fn $name() {
            $check($($arg),+, $($want),+);
        }
    )*};
}

/// A request head with the default limits.
fn check_head(input: impl AsRef<[u8]>, want: Want<'_>) {
    check(input.as_ref(), &Limits::default(), want);
}

/// A request head with these limits.
fn check_head_within(input: impl AsRef<[u8]>, limits: Limits, want: Want<'_>) {
    check(input.as_ref(), &limits, want);
}

cases! { check_head;
    // Valid heads.
    get_minimal: b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" => Head("GET", "/", Http11, &[("host", "a")]);
    http10_without_host: b"GET /x HTTP/1.0\r\n\r\n" => Head("GET", "/x", Http10, &[]);
    post_with_query: b"POST /send?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 0\r\n\r\n"
        => Head("POST", "/send?x=1", Http11, &[("content-length", "0")]);
    options_star: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" => Head("OPTIONS", "*", Http11, &[]);
    leading_empty_lines_skipped: b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" => Head("GET", "/", Http11, &[]);
    ows_trimmed: b"GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t \r\n\r\n" => Head("GET", "/", Http11, &[("host", "a"), ("x-a", "v a l")]);
    empty_value: b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n" => Head("GET", "/", Http11, &[("x", "")]);
    whitespace_only_value: b"GET / HTTP/1.1\r\nHost: a\r\nX: \t \r\n\r\n" => Head("GET", "/", Http11, &[("x", "")]);
    obs_text_utf8_value: b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n" => Head("GET", "/", Http11, &[("x", "café")]);
    colon_in_value: b"GET / HTTP/1.1\r\nHost: a:1\r\nX: a: b\r\n\r\n" => Head("GET", "/", Http11, &[("x", "a: b")]);
    method_any_token: b"M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n" => Head("M-SEARCH", "/", Http11, &[]);
    method_all_tchars: b"!#$%&'*+-.^_`|~09azAZ / HTTP/1.0\r\n\r\n" => Head("!#$%&'*+-.^_`|~09azAZ", "/", Http10, &[]);
    method_lowercase_kept: b"get / HTTP/1.0\r\n\r\n" => Head("get", "/", Http10, &[]);
    target_all_allowed: b"GET /a/b;c=d?e=f&g=%20+h:i@j!$'()*,~{|}^`\\[] HTTP/1.0\r\n\r\n"
        => Head("GET", "/a/b;c=d?e=f&g=%20+h:i@j!$'()*,~{|}^`\\[]", Http10, &[]);
    field_name_all_tchars: b"GET / HTTP/1.0\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n" => Head("GET", "/", Http10, &[("!#$%&'*+-.^_`|~09AZaz", "v")]);
    header_case_insensitive: b"GET / HTTP/1.1\r\nhOsT: a\r\nCONTENT-type: t\r\n\r\n" => Head("GET", "/", Http11, &[("Host", "a"), ("content-TYPE", "t")]);
    host_empty_allowed: b"GET / HTTP/1.1\r\nHost:\r\n\r\n" => Head("GET", "/", Http11, &[("host", "")]);
    host_ipv6: b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n" => Head("GET", "/", Http11, &[("host", "[::1]:8080")]);

    // Not complete yet.
    nothing: b"" => More;
    lone_cr: b"\r" => More;
    empty_lines_only: b"\r\n\r\n" => More;
    method_only: b"GET" => More;
    no_final_empty_line: b"GET / HTTP/1.1\r\nHost: a\r\n" => More;
    final_cr_only: b"GET / HTTP/1.1\r\nHost: a\r\n\r" => More;

    // method = token, then exactly one SP.
    method_bad_char: b"G(T / HTTP/1.1\r\n" => Fail(Error::Method);
    method_empty: b" / HTTP/1.1\r\n" => Fail(Error::Method);
    method_then_tab: b"GET\t/ HTTP/1.1\r\n" => Fail(Error::Method);
    method_then_crlf: b"GET\r\n" => Fail(Error::Method);
    method_non_ascii: b"G\xc3\x89T / HTTP/1.1\r\n" => Fail(Error::Method);
    method_nul: b"GET\0 / HTTP/1.1\r\n" => Fail(Error::Method);

    // request-target: origin-form, http absolute-form, or * with OPTIONS.
    target_empty_double_space: b"GET  / HTTP/1.1\r\n" => Fail(Error::Target);
    target_absolute_form: b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n" => Head("GET", "http://a/", Http11, &[]);
    target_authority_form: b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n" => Fail(Error::Target);
    target_star_without_options: b"GET * HTTP/1.1\r\nHost: a\r\n\r\n" => Fail(Error::Target);
    target_star_then_more: b"OPTIONS *x HTTP/1.1\r\n" => Fail(Error::Target);
    target_fragment: b"GET /a#f HTTP/1.1\r\n" => Fail(Error::Target);
    target_space_inside: b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n" => Fail(Error::Target);
    target_trailing_space_after_version: b"GET / HTTP/1.1 \r\n" => Fail(Error::Target);
    target_del: b"GET /a\x7f HTTP/1.1\r\n" => Fail(Error::Target);
    target_non_ascii: b"GET /\xc3\xa9 HTTP/1.1\r\n" => Fail(Error::Target);
    target_angle: b"GET /<script> HTTP/1.1\r\n" => Fail(Error::Target);
    target_quote: b"GET /\" HTTP/1.1\r\n" => Fail(Error::Target);
    target_tab: b"GET /\t HTTP/1.1\r\n" => Fail(Error::Target);
    target_nul: b"GET /\0 HTTP/1.1\r\n" => Fail(Error::Target);

    // HTTP-version = "HTTP/" DIGIT "." DIGIT; 1.0 and 1.1 are served, a
    // higher 1.x is read as 1.1 (RFC 9110 2.5), other well-formed versions
    // are 505, anything else is malformed (400).
    version_2: b"GET / HTTP/2.0\r\n" => Fail(Error::Version);
    version_1_2: b"GET / HTTP/1.2\r\nHost: a\r\n\r\n" => Head("GET", "/", Http11, &[("host", "a")]);
    version_1_9_needs_host: b"GET / HTTP/1.9\r\n\r\n" => Fail(Error::MissingHost);
    version_9_9: b"GET / HTTP/9.9\r\n" => Fail(Error::Version);
    version_lowercase: b"GET / http/1.1\r\n" => Fail(Error::MalformedVersion);
    version_short: b"GET / HTTP/1\r\n" => Fail(Error::MalformedVersion);
    version_long: b"GET / HTTP/1.10\r\n" => Fail(Error::MalformedVersion);
    version_two_digit_major: b"GET / HTTP/10.1\r\n" => Fail(Error::MalformedVersion);
    version_letter: b"GET / HTTP/1.x\r\n" => Fail(Error::MalformedVersion);
    version_garbage: b"GET / GARBAGE\r\n" => Fail(Error::MalformedVersion);
    version_empty: b"GET / \r\n" => Fail(Error::MalformedVersion);
    version_http09: b"GET /\r\n" => Fail(Error::MalformedVersion);

    // CRLF only.
    bare_lf_request_line: b"GET / HTTP/1.1\nHost: a\n\n" => Fail(Error::NewLine);
    bare_lf_field_line: b"GET / HTTP/1.1\r\nHost: a\n\r\n" => Fail(Error::NewLine);
    bare_lf_final: b"GET / HTTP/1.1\r\nHost: a\r\n\n" => Fail(Error::NewLine);
    bare_cr_request_line: b"GET / HTTP/1.1\rHost: a\r\n\r\n" => Fail(Error::NewLine);
    bare_cr_in_value: b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n" => Fail(Error::NewLine);
    bare_cr_final: b"GET / HTTP/1.1\r\nHost: a\r\n\rX" => Fail(Error::NewLine);
    bare_lf_leading: b"\nGET / HTTP/1.1\r\n" => Fail(Error::NewLine);
    bare_cr_leading: b"\rGET / HTTP/1.1\r\n" => Fail(Error::NewLine);
    bare_lf_after_target: b"GET /\n" => Fail(Error::NewLine);
    bare_lf_after_name: b"GET / HTTP/1.1\r\nX\n" => Fail(Error::NewLine);
    obs_fold: b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n" => Fail(Error::NewLine);
    obs_fold_tab: b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n" => Fail(Error::NewLine);
    space_before_first_field: b"GET / HTTP/1.1\r\n Host: a\r\n\r\n" => Fail(Error::NewLine);

    // field-name = token, no whitespace before the colon.
    name_space_before_colon: b"GET / HTTP/1.1\r\nHost : a\r\n\r\n" => Fail(Error::HeaderName);
    name_tab_before_colon: b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n" => Fail(Error::HeaderName);
    name_empty: b"GET / HTTP/1.1\r\n: a\r\n\r\n" => Fail(Error::HeaderName);
    name_bad_char: b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n" => Fail(Error::HeaderName);
    name_no_colon: b"GET / HTTP/1.1\r\nHost\r\n\r\n" => Fail(Error::HeaderName);
    name_non_ascii: b"GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n" => Fail(Error::HeaderName);

    // field-value = *( HTAB / SP / VCHAR / obs-text ), and UTF-8.
    value_nul: b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n" => Fail(Error::HeaderValue);
    value_del: b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n" => Fail(Error::HeaderValue);
    value_control: b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n" => Fail(Error::HeaderValue);
    value_escape: b"GET / HTTP/1.1\r\nX: \x1b[31m\r\n\r\n" => Fail(Error::HeaderValue);
    value_not_utf8: b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n" => Fail(Error::HeaderValue);
    value_truncated_utf8: b"GET / HTTP/1.1\r\nX: \xc3\r\n\r\n" => Fail(Error::HeaderValue);

    // Host: exactly one in HTTP/1.1, at most one in HTTP/1.0, valid.
    host_missing: b"GET / HTTP/1.1\r\n\r\n" => Fail(Error::MissingHost);
    host_missing_other_fields: b"GET / HTTP/1.1\r\nX: a\r\n\r\n" => Fail(Error::MissingHost);
    host_twice: b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n" => Fail(Error::MissingHost);
    host_twice_http10: b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n" => Fail(Error::MissingHost);
    host_with_space: b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" => Fail(Error::MissingHost);
    host_with_path: b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n" => Fail(Error::MissingHost);
    host_with_userinfo: b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n" => Fail(Error::MissingHost);

    // Default limits at their boundaries.
    default_request_line_at_limit: request_line(8192) => Head("GET", target(8192).as_str(), Http11, &[]);
    default_request_line_past_limit: request_line(8193) => Fail(Error::RequestLineTooLong);
    default_request_line_past_limit_partial: &request_line(8193)[..8194] => Fail(Error::RequestLineTooLong);
    default_header_line_at_limit: header_line(8192) => Head("GET", "/", Http11, &[]);
    default_header_line_past_limit: header_line(8193) => Fail(Error::HeaderLineTooLong);
    default_headers_at_limit: many_headers(100) => Head("GET", "/", Http11, &[("h99", "v")]);
    default_headers_past_limit: many_headers(101) => Fail(Error::TooManyHeaders);
    default_head_at_limit: head_of(65536) => Head("GET", "/", Http11, &[]);
    default_head_past_limit: head_of(65537) => Fail(Error::HeadTooLarge);
}

cases! { check_head_within;
    // max_request_line = 20: the line without its CRLF.
    request_line_at_limit: b"GET /234567 HTTP/1.0\r\n\r\n", SMALL => Head("GET", "/234567", Http10, &[]);
    request_line_past_limit: b"GET /2345678 HTTP/1.0\r\n\r\n", SMALL => Fail(Error::RequestLineTooLong);
    request_line_at_limit_no_crlf: b"GET /234567 HTTP/1.0", SMALL => More;
    request_line_at_limit_cr: b"GET /234567 HTTP/1.0\r", SMALL => More;
    request_line_past_limit_no_crlf: b"GET /2345678 HTTP/1.0", SMALL => Fail(Error::RequestLineTooLong);
    request_line_long_target_no_space: b"GET /23456789012345678", SMALL => Fail(Error::RequestLineTooLong);
    request_line_long_method: b"GETGETGETGETGETGETGET", SMALL => Fail(Error::RequestLineTooLong);
    request_line_leading_lines_not_counted: b"\r\n\r\nGET /234567 HTTP/1.0\r\n\r\n", SMALL => Head("GET", "/234567", Http10, &[]);

    // max_header_line = 10: name, colon and value, without CRLF.
    header_line_at_limit: b"GET / HTTP/1.0\r\nX: 1234567\r\n\r\n", SMALL => Head("GET", "/", Http10, &[("x", "1234567")]);
    header_line_past_limit: b"GET / HTTP/1.0\r\nX: 12345678\r\n\r\n", SMALL => Fail(Error::HeaderLineTooLong);
    header_line_past_limit_no_crlf: b"GET / HTTP/1.0\r\nX: 12345678", SMALL => Fail(Error::HeaderLineTooLong);
    header_line_trailing_ows_counts: b"GET / HTTP/1.0\r\nX: 123456  \r\n\r\n", SMALL => Fail(Error::HeaderLineTooLong);
    header_line_long_name: b"GET / HTTP/1.0\r\nXXXXXXXXXXX", SMALL => Fail(Error::HeaderLineTooLong);

    // max_headers = 2.
    headers_at_limit: b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n", SMALL => Head("GET", "/", Http10, &[("a", "1"), ("b", "2")]);
    headers_past_limit: b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", SMALL => Fail(Error::TooManyHeaders);
    headers_past_limit_partial: b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC", SMALL => Fail(Error::TooManyHeaders);

    // max_head = 40: everything from the first byte to the final LF.
    head_at_limit: b"GET / HTTP/1.0\r\nA: 1234567\r\nB: 12345\r\n\r\n", Limits { max_head: 40, ..SMALL } => Head("GET", "/", Http10, &[("b", "12345")]);
    head_past_limit: b"GET / HTTP/1.0\r\nA: 1234567\r\nB: 123456\r\n\r\n", Limits { max_head: 40, ..SMALL } => Fail(Error::HeadTooLarge);
    head_leading_lines_count: b"\r\nGET / HTTP/1.0\r\nA: 1234567\r\nB: 123\r\n\r\n", Limits { max_head: 40, ..SMALL } => Head("GET", "/", Http10, &[]);
    head_leading_lines_count_past: b"\r\nGET / HTTP/1.0\r\nA: 1234567\r\nB: 1234\r\n\r\n", Limits { max_head: 40, ..SMALL } => Fail(Error::HeadTooLarge);
    head_endless_empty_lines: b"\r\n".repeat(33), SMALL => Fail(Error::HeadTooLarge);
    head_at_limit_partial: b"GET / HTTP/1.0\r\nA: 1234567\r\nB:", Limits { max_head: 30, ..SMALL } => More;
    head_past_limit_partial: b"GET / HTTP/1.0\r\nA: 1234567\r\nB: ", Limits { max_head: 30, ..SMALL } => Fail(Error::HeadTooLarge);
}

/// Absolute-form targets (RFC 9112 3.2.2), one line per case: the request
/// line's target and `Host`, then `Ok((path, query, authority))` or the
/// error.
#[test]
fn absolute_form_targets() {
    type Want = Result<(&'static str, Option<&'static str>, &'static str), Error>;
    #[rustfmt::skip]
    let table: &[(&str, &str, Want)] = &[
        ("http://a/", "a", Ok(("/", None, "a"))),
        ("http://a/x/y?q=1", "a", Ok(("/x/y", Some("q=1"), "a"))),
        ("HTTP://a/x", "a", Ok(("/x", None, "a"))),
        ("http://a", "a", Ok(("/", None, "a"))),
        ("http://a?q", "a", Ok(("/", Some("q"), "a"))),
        ("http://a:8080/x", "a:8080", Ok(("/x", None, "a:8080"))),
        ("http://[::1]:80/", "x", Ok(("/", None, "[::1]:80"))),
        // The target's authority wins over a different Host.
        ("http://a/x", "b", Ok(("/x", None, "a"))),
        ("https://a/", "a", Err(Error::Target)),
        ("ftp://a/", "a", Err(Error::Target)),
        ("http:/a", "a", Err(Error::Target)),
        ("http:///x", "a", Err(Error::Target)),
        ("http://u@a/", "a", Err(Error::Target)),
        ("http", "a", Err(Error::Target)),
        ("a:443", "a", Err(Error::Target)),
        // Host must still be present and valid.
        ("http://a/", "a b", Err(Error::MissingHost)),
    ];
    for &(target, host, want) in table {
        let wire = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let got = Request::parse(wire.as_bytes()).map(|r| {
            (r.path().to_owned(), r.query().map(str::to_owned), r.authority().map(str::to_owned))
        });
        let want = want.map(|(p, q, a)| (p.to_owned(), q.map(str::to_owned), Some(a.to_owned())));
        assert_eq!(got, want, "{target} with Host {host}");
    }
    let no_host = Request::parse(b"GET http://a/ HTTP/1.1\r\n\r\n");
    assert_eq!(no_host, Err(Error::MissingHost));
    let http10 = Request::parse(b"GET http://a/x HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!((http10.path(), http10.authority()), ("/x", Some("a")));
    let origin = Request::parse(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(origin.authority(), Some("h"));
}

/// The target that makes `GET <target> HTTP/1.1` exactly `len` bytes.
fn target(len: usize) -> String {
    format!("/{}", "a".repeat(len - 4 - 1 - 9))
}

/// A head whose request line is exactly `len` bytes.
fn request_line(len: usize) -> Vec<u8> {
    format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", target(len)).into_bytes()
}

/// A head with one field line of exactly `len` bytes.
fn header_line(len: usize) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(len - 3)).into_bytes()
}

/// A head with `count` field lines (`Host` and `h1: v`...).
fn many_headers(count: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 1..count {
        head.push_str(&format!("h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A valid head of exactly `total` bytes, padded with field lines that each
/// stay within the default `max_header_line`.
fn head_of(total: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    let mut left = total - head.len() - 2;
    while left > 0 {
        let mut line = left.min(8194);
        if left - line > 0 && left - line < 4 {
            line -= 4;
        }
        head.push_str(&format!("X:{}\r\n", "v".repeat(line - 4)));
        left -= line;
    }
    head.push_str("\r\n");
    assert_eq!(head.len(), total);
    head.into_bytes()
}

// ---------------------------------------------------------------------------
// Request accessors
// ---------------------------------------------------------------------------

fn request(wire: &str) -> Request {
    match Request::parse(wire.as_bytes()) {
        Ok(request) => request,
        Err(error) => panic!("{wire:?}: {error}"),
    }
}

#[test]
fn repeated_headers_kept_in_order() {
    let r = request(
        "GET / HTTP/1.1\r\nHost: a\r\nAccept: x\r\nX-Other: 1\r\naccept: y\r\nACCEPT:z\r\n\r\n",
    );
    assert_eq!(r.header("Accept"), Some("x"));
    assert_eq!(r.header_all("accept").collect::<Vec<_>>(), ["x", "y", "z"]);
    assert_eq!(r.header_all("missing").count(), 0);
    assert_eq!(r.header("missing"), None);
    assert_eq!(
        r.headers().collect::<Vec<_>>(),
        [("Host", "a"), ("Accept", "x"), ("X-Other", "1"), ("accept", "y"), ("ACCEPT", "z")]
    );
}

#[test]
fn path_and_query() {
    let r = request("GET /a/b%20c?x=1&y=%C3%A9&x=2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.target(), "/a/b%20c?x=1&y=%C3%A9&x=2");
    assert_eq!(r.path(), "/a/b%20c");
    assert_eq!(r.query(), Some("x=1&y=%C3%A9&x=2"));
    assert_eq!(r.query_param("x").as_deref(), Some("1"));
    assert_eq!(r.query_param("y").as_deref(), Some("é"));
    assert_eq!(r.query_param("z"), None);
    assert_eq!(r.query_params(), pairs(&[("x", "1"), ("y", "é"), ("x", "2")]));

    let r = request("GET /p? HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.path(), r.query()), ("/p", Some("")));
    let r = request("GET /p HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.path(), r.query()), ("/p", None));
    assert!(r.query_params().is_empty());
    assert_eq!(r.query_param("p"), None);
    let r = request("GET /p?a?b=c?d HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.path(), r.query()), ("/p", Some("a?b=c?d")));
    assert_eq!(r.query_param("a?b").as_deref(), Some("c?d"));
    let r = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.target(), r.path(), r.query()), ("*", "*", None));
}

#[test]
fn pipelined_requests() {
    let wire = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3";
    let limits = Limits::default();
    let Ok(Status::Complete((first, n))) = parse_head(wire, &limits) else { panic!() };
    assert_eq!((first.path(), n), ("/1", 28));
    let Ok(Status::Complete((second, m))) = parse_head(&wire[n..], &limits) else { panic!() };
    assert_eq!((second.path(), m), ("/2", 28));
    assert_eq!(parse_head(&wire[n + m..], &limits), Ok(Status::Partial));
}

#[test]
fn parse_convenience() {
    let r = request("POST /send HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.body(), b"hello");
    assert_eq!(r.remote_addr(), None);
    assert_eq!(Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err(), Error::NewLine);
    assert_eq!(Request::parse(b"GET / HTTP/3\r\n\r\n").unwrap_err(), Error::MalformedVersion);
    let debug = format!("{r:?}");
    assert!(debug.contains("\"POST\"") && debug.contains("Content-Length"), "{debug}");
}

#[test]
fn typical_browser_request() {
    let wire = browser_request();
    assert!(wire.len() > 380, "{}", wire.len());
    let Ok(Status::Complete((r, n))) = parse_head(&wire, &Limits::default()) else { panic!() };
    assert_eq!(n, wire.len());
    assert_eq!(r.headers().count(), 11);
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.query_param("room").as_deref(), Some("general"));
    assert!(r.keep_alive());
    assert_eq!(r.body_framing(&Limits::default()), Ok(Framing::None));
    for end in 0..wire.len() {
        assert_eq!(parse_head(&wire[..end], &Limits::default()), Ok(Status::Partial), "{end}");
    }
}

fn browser_request() -> Vec<u8> {
    b"GET /events?room=general HTTP/1.1\r\n\
      Host: localhost:8080\r\n\
      User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
      Accept: text/event-stream\r\n\
      Accept-Language: en-US,en;q=0.5\r\n\
      Accept-Encoding: gzip, deflate, br, zstd\r\n\
      Referer: http://localhost:8080/chat\r\n\
      Connection: keep-alive\r\n\
      Cookie: session=3f9a1c7e2b\r\n\
      Sec-Fetch-Dest: empty\r\n\
      Sec-Fetch-Mode: cors\r\n\
      Cache-Control: no-cache\r\n\r\n"
        .to_vec()
}

/// Not a test of correctness: prints how long `parse_head` takes on the
/// browser request (best and median of 200 rounds of 50,000 calls, so that
/// other processes on the machine disturb it less).
/// `cargo test --release --test http_parse time_parse_head -- --ignored --nocapture`
#[test]
#[ignore]
fn time_parse_head() {
    let wire = browser_request();
    let limits = Limits::default();
    let iterations = 50_000u32;
    let mut rounds: Vec<f64> = (0..200)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..iterations {
                let result = parse_head(std::hint::black_box(&wire), &limits);
                std::hint::black_box(result.is_ok());
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    let fields = Request::parse(&wire).map_or(0, |r| r.headers().count());
    println!(
        "parse_head of {} bytes, {} fields: best {:.0} ns, median {:.0} ns",
        wire.len(),
        fields,
        rounds[0],
        rounds[rounds.len() / 2]
    );
}

// ---------------------------------------------------------------------------
// keep_alive, expects_continue, body_framing
// ---------------------------------------------------------------------------

/// Builds a request with this version and these extra field lines.
fn with_fields(version: &str, fields: &[(&str, &str)]) -> Request {
    let mut wire = format!("POST / {version}\r\nHost: a\r\n");
    for (name, value) in fields {
        wire.push_str(&format!("{name}: {value}\r\n"));
    }
    wire.push_str("\r\n");
    request(&wire)
}

/// `name: version, [Connection values] => keep_alive;`
fn check_keep_alive<const N: usize>(version: &str, values: [&str; N], want: bool) {
    let fields = values.map(|value| ("Connection", value));
    assert_eq!(with_fields(version, &fields).keep_alive(), want);
}

cases! { check_keep_alive;
    ka_11_default: "HTTP/1.1", [] => true;
    ka_11_close: "HTTP/1.1", ["close"] => false;
    ka_11_close_mixed_case: "HTTP/1.1", ["Close"] => false;
    ka_11_keep_alive: "HTTP/1.1", ["keep-alive"] => true;
    ka_11_keep_alive_upgrade: "HTTP/1.1", ["Keep-Alive, Upgrade"] => true;
    ka_11_upgrade_close: "HTTP/1.1", ["upgrade,close"] => false;
    ka_11_close_in_second_field: "HTTP/1.1", ["Upgrade", " CLOSE "] => false;
    ka_11_closed_is_not_close: "HTTP/1.1", ["closed"] => true;
    ka_10_default: "HTTP/1.0", [] => false;
    ka_10_keep_alive: "HTTP/1.0", ["keep-alive"] => true;
    ka_10_keep_alive_upgrade: "HTTP/1.0", ["Keep-Alive, Upgrade"] => true;
    ka_10_keep_alive_upper: "HTTP/1.0", ["KEEP-ALIVE"] => true;
    ka_10_keep_alive_and_close: "HTTP/1.0", ["keep-alive, close"] => false;
    ka_10_close: "HTTP/1.0", ["close"] => false;
    ka_10_keep_alive_prefix: "HTTP/1.0", ["keep-alive-please"] => false;
}

/// `name: version, [Expect values] => result;`
fn check_expects<const N: usize>(version: &str, values: [&str; N], want: Result<bool, Error>) {
    let fields = values.map(|value| ("Expect", value));
    assert_eq!(with_fields(version, &fields).expects_continue(), want);
}

cases! { check_expects;
    expect_none: "HTTP/1.1", [] => Ok(false);
    expect_continue: "HTTP/1.1", ["100-continue"] => Ok(true);
    expect_continue_mixed_case: "HTTP/1.1", ["100-Continue"] => Ok(true);
    expect_continue_twice: "HTTP/1.1", ["100-continue", "100-continue"] => Ok(true);
    expect_other: "HTTP/1.1", ["200-ok"] => Err(Error::Expectation);
    expect_list: "HTTP/1.1", ["100-continue, foo"] => Err(Error::Expectation);
    expect_empty: "HTTP/1.1", [""] => Err(Error::Expectation);
    expect_continue_then_other: "HTTP/1.1", ["100-continue", "x"] => Err(Error::Expectation);
    expect_ignored_in_http10: "HTTP/1.0", ["100-continue"] => Ok(false);
    expect_other_http10: "HTTP/1.0", ["x"] => Err(Error::Expectation);
}

/// `name: version, [(name, value)...] => framing;` with max_body = 100.
fn check_framing(version: &str, fields: &[(&str, &str)], want: Result<Framing, Error>) {
    let limits = Limits { max_body: 100, ..Limits::default() };
    assert_eq!(with_fields(version, fields).body_framing(&limits), want);
}

cases! { check_framing;
    framing_none: "HTTP/1.1", &[] => Ok(Framing::None);
    framing_length_zero: "HTTP/1.1", &[("Content-Length", "0")] => Ok(Framing::Length(0));
    framing_length_at_limit: "HTTP/1.1", &[("Content-Length", "100")] => Ok(Framing::Length(100));
    framing_length_past_limit: "HTTP/1.1", &[("Content-Length", "101")] => Err(Error::BodyTooLarge);
    framing_length_leading_zeros: "HTTP/1.1", &[("content-length", "007")] => Ok(Framing::Length(7));
    framing_length_same_list: "HTTP/1.1", &[("Content-Length", "5, 5")] => Ok(Framing::Length(5));
    framing_length_same_fields: "HTTP/1.1", &[("Content-Length", "5"), ("Content-Length", "5")] => Ok(Framing::Length(5));
    framing_length_differ_list: "HTTP/1.1", &[("Content-Length", "5, 6")] => Err(Error::ContentLength);
    framing_length_differ_fields: "HTTP/1.1", &[("Content-Length", "5"), ("Content-Length", "6")] => Err(Error::ContentLength);
    framing_length_empty: "HTTP/1.1", &[("Content-Length", "")] => Err(Error::ContentLength);
    framing_length_negative: "HTTP/1.1", &[("Content-Length", "-1")] => Err(Error::ContentLength);
    framing_length_plus: "HTTP/1.1", &[("Content-Length", "+5")] => Err(Error::ContentLength);
    framing_length_hex: "HTTP/1.1", &[("Content-Length", "0x10")] => Err(Error::ContentLength);
    framing_length_inner_space: "HTTP/1.1", &[("Content-Length", "5 5")] => Err(Error::ContentLength);
    framing_length_trailing_comma: "HTTP/1.1", &[("Content-Length", "5,")] => Err(Error::ContentLength);
    framing_length_exponent: "HTTP/1.1", &[("Content-Length", "1e3")] => Err(Error::ContentLength);
    framing_length_overflow: "HTTP/1.1", &[("Content-Length", "18446744073709551616")] => Err(Error::ContentLength);
    framing_length_u64_max: "HTTP/1.1", &[("Content-Length", "18446744073709551615")] => Err(Error::BodyTooLarge);
    framing_chunked: "HTTP/1.1", &[("Transfer-Encoding", "chunked")] => Ok(Framing::Chunked);
    framing_chunked_mixed_case: "HTTP/1.1", &[("transfer-encoding", "Chunked")] => Ok(Framing::Chunked);
    framing_gzip_chunked: "HTTP/1.1", &[("Transfer-Encoding", "gzip, chunked")] => Err(Error::UnsupportedTransferCoding);
    framing_chunked_twice: "HTTP/1.1", &[("Transfer-Encoding", "chunked, chunked")] => Err(Error::UnsupportedTransferCoding);
    framing_chunked_two_fields: "HTTP/1.1", &[("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")] => Err(Error::UnsupportedTransferCoding);
    // Empty list elements are ignored (RFC 9110 5.6.1); a final coding
    // other than chunked leaves the length unknown: 400 (RFC 9112 6.3 rule 4).
    framing_chunked_empty_elements: "HTTP/1.1", &[("Transfer-Encoding", ", chunked ,"), ("Transfer-Encoding", ",")] => Ok(Framing::Chunked);
    framing_gzip_empty_chunked: "HTTP/1.1", &[("Transfer-Encoding", "gzip,,chunked")] => Err(Error::UnsupportedTransferCoding);
    framing_chunked_gzip: "HTTP/1.1", &[("Transfer-Encoding", "chunked, gzip")] => Err(Error::ChunkedNotLast);
    framing_gzip: "HTTP/1.1", &[("Transfer-Encoding", "gzip")] => Err(Error::ChunkedNotLast);
    framing_identity: "HTTP/1.1", &[("Transfer-Encoding", "identity")] => Err(Error::ChunkedNotLast);
    framing_te_empty: "HTTP/1.1", &[("Transfer-Encoding", "")] => Err(Error::ChunkedNotLast);
    framing_te_commas: "HTTP/1.1", &[("Transfer-Encoding", " , ,")] => Err(Error::ChunkedNotLast);
    framing_chunked_and_length: "HTTP/1.1", &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")] => Err(Error::LengthAndChunked);
    framing_length_and_chunked: "HTTP/1.1", &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")] => Err(Error::LengthAndChunked);
    framing_chunked_http10: "HTTP/1.0", &[("Transfer-Encoding", "chunked")] => Err(Error::UnsupportedTransferCoding);
    framing_length_http10: "HTTP/1.0", &[("Content-Length", "3")] => Ok(Framing::Length(3));
}

// ---------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------

/// Feeds `input` in pieces cut at `cuts`; returns the outcome (the absolute
/// offset where the body ended, or `None` for Partial) and the body.
fn feed(input: &[u8], cuts: &[usize], max_body: usize) -> (Result<Option<usize>, Error>, Vec<u8>) {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        match decoder.decode(&input[start..end], &mut body) {
            Ok(Status::Complete(n)) => {
                // Done: further input is not consumed.
                assert_eq!(decoder.decode(b"more", &mut body), Ok(Status::Complete(0)));
                return (Ok(Some(start + n)), body);
            }
            Ok(Status::Partial) => start = end,
            Err(error) => {
                assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body), Err(error), "sticky error");
                return (Err(error), body);
            }
        }
    }
    (Ok(None), body)
}

/// `name: input => Ok(Some(consumed)) | Ok(None) | Err(error), body;` with
/// max_body = 16 (the body is what was decoded, up to an error); every case
/// is also fed in two pieces cut at every position and one byte at a time,
/// with the same outcome.
fn check_chunked(input: impl AsRef<[u8]>, want: Result<Option<usize>, Error>, want_body: &[u8]) {
    let input = input.as_ref();
    let (got, body) = feed(input, &[], 16);
    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
    assert_eq!(body, want_body);
    for cut in 0..=input.len() {
        assert_eq!(feed(input, &[cut], 16), (got, body.clone()), "cut at {cut}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(feed(input, &every, 16), (got, body.clone()), "byte by byte");
}

cases! { check_chunked;
    chunk_one: b"5\r\nhello\r\n0\r\n\r\n" => Ok(Some(15)), b"hello";
    chunk_two: b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n" => Ok(Some(20)), b"hello";
    chunk_empty_body: b"0\r\n\r\n" => Ok(Some(5)), b"";
    chunk_hex_upper: b"A\r\n0123456789\r\n0\r\n\r\n" => Ok(Some(20)), b"0123456789";
    chunk_hex_lower: b"a\r\n0123456789\r\n0\r\n\r\n" => Ok(Some(20)), b"0123456789";
    chunk_at_max_body: b"10\r\n0123456789abcdef\r\n0\r\n\r\n" => Ok(Some(27)), b"0123456789abcdef";
    chunk_extensions: b"5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n" => Ok(Some(32)), b"hello";
    chunk_extension_bws: b"5 \t; a = b\r\nhello\r\n0\r\n\r\n" => Ok(Some(24)), b"hello";
    chunk_trailers: b"2\r\nhi\r\n0\r\nX: a\r\nY-Z: b c\r\n\r\n" => Ok(Some(28)), b"hi";
    chunk_leading_zeros_16: b"0000000000000005\r\nhello\r\n0\r\n\r\n" => Ok(Some(30)), b"hello";
    chunk_last_many_zeros: b"000\r\n\r\n" => Ok(Some(7)), b"";
    chunk_pipelined_rest: b"0\r\n\r\nGET / HTTP/1.1\r\n" => Ok(Some(5)), b"";
    chunk_ext_at_limit: [&b"1;"[..], &[b'a'; 1023], b"\r\nx\r\n0\r\n\r\n"].concat() => Ok(Some(1035)), b"x";
    chunk_trailer_at_limit: [&b"0\r\nX:"[..], &[b'a'; 8188], b"\r\n\r\n"].concat() => Ok(Some(8197)), b"";
    chunk_partial_size: b"5" => Ok(None), b"";
    chunk_partial_data: b"5\r\nhel" => Ok(None), b"hel";
    chunk_partial_trailer: b"0\r\nX: a\r\n" => Ok(None), b"";
    chunk_partial_end: b"0\r\n\r" => Ok(None), b"";
    chunk_bad_size: b"x\r\n" => Err(Error::ChunkSize), b"";
    chunk_empty_size: b"\r\n" => Err(Error::ChunkSize), b"";
    chunk_negative: b"-5\r\n" => Err(Error::ChunkSize), b"";
    chunk_0x: b"0x5\r\n" => Err(Error::ChunkSize), b"";
    // chunk-size = 1*HEXDIG: leading zeros do not count against 64 bits.
    chunk_leading_zeros: b"0000000000000000005\r\nhello\r\n0\r\n\r\n" => Ok(Some(33)), b"hello";
    chunk_64_digits: [&[b'0'; 63][..], b"1\r\nx\r\n0\r\n\r\n"].concat() => Ok(Some(74)), b"x";
    chunk_65_digits: [&[b'0'; 64][..], b"5\r\n"].concat() => Err(Error::ChunkSize), b"";
    chunk_size_bare_lf: b"5\nhello\r\n" => Err(Error::ChunkSize), b"";
    chunk_size_cr_no_lf: b"5\rhello" => Err(Error::ChunkSize), b"";
    chunk_space_no_ext: b"5 \r\nhello\r\n0\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_space_then_junk: b"5 x\r\n" => Err(Error::ChunkSize), b"";
    chunk_ext_control: b"5;a\0\r\n" => Err(Error::ChunkSize), b"";
    chunk_ext_quoted_escapes: b"1;a=\"x\\\"; y\";b\r\nx\r\n0\r\n\r\n" => Ok(Some(24)), b"x";
    chunk_ext_quoted_unterminated: b"1;a=\"x\r\nx\r\n0\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_ext_quoted_escaped_end: b"1;a=\"x\\\"\r\nx\r\n0\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_ext_quoted_control: b"1;a=\"\x01\"\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_no_colon: b"0\r\nNoColon\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_empty_name: b"0\r\n: a\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_space_before_colon: b"0\r\nX : a\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_bad_name: b"0\r\nX(y): a\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_ext_bare_lf: b"5;a\n" => Err(Error::ChunkSize), b"";
    chunk_data_too_long: b"5\r\nhelloX\r\n" => Err(Error::ChunkSize), b"hello";
    chunk_data_bare_lf: b"5\r\nhello\n0\r\n\r\n" => Err(Error::ChunkSize), b"hello";
    chunk_data_cr_cr: b"5\r\nhello\r\r" => Err(Error::ChunkSize), b"hello";
    chunk_end_bare_lf: b"0\r\n\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_bare_lf: b"0\r\nX: a\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_fold: b"0\r\n X: a\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_trailer_nul: b"0\r\nX: \0\r\n\r\n" => Err(Error::ChunkSize), b"";
    chunk_end_cr_junk: b"0\r\n\rX" => Err(Error::ChunkSize), b"";
    chunk_ext_past_limit: [&b"1;"[..], &[b'a'; 1024], b"\r\nx\r\n0\r\n\r\n"].concat() => Err(Error::ChunkSize), b"";
    chunk_trailer_past_limit: [&b"0\r\nX:"[..], &[b'a'; 8189], b"\r\n\r\n"].concat() => Err(Error::ChunkSize), b"";
    chunk_too_large_one: b"11\r\n" => Err(Error::BodyTooLarge), b"";
    chunk_too_large_sum: b"9\r\n123456789\r\n8\r\n" => Err(Error::BodyTooLarge), b"123456789";
    chunk_too_large_huge: b"ffffffffffffffff\r\n" => Err(Error::BodyTooLarge), b"";
}

// ---------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// `name: query => [(name, value)...];`
fn check_query<const N: usize>(query: &str, want: [(&str, &str); N]) {
    assert_eq!(decode_query(query), pairs(&want));
}

cases! { check_query;
    query_mixed: "a=1&b=two+words&c=%41%zz&d&&=x" => [("a", "1"), ("b", "two words"), ("c", "A%zz"), ("d", ""), ("", "x")];
    query_empty: "" => [];
    query_only_separators: "&&&" => [];
    query_unicode: "name=%E2%9C%93%20ok&e=%F0%9F%98%80" => [("name", "✓ ok"), ("e", "😀")];
    query_raw_unicode: "k=é" => [("k", "é")];
    query_repeated: "a=1&a=2&b=3&a=4" => [("a", "1"), ("a", "2"), ("b", "3"), ("a", "4")];
    query_encoded_name: "%61+b=c" => [("a b", "c")];
    query_first_equals_splits: "a=b=c" => [("a", "b=c")];
    query_percent_alone: "a=%&b=%4&c=%%41&d=%4g" => [("a", "%"), ("b", "%4"), ("c", "%A"), ("d", "%4g")];
    query_lower_hex: "a=%c3%a9" => [("a", "é")];
    query_invalid_utf8: "a=%ff&b=%C3" => [("a", "\u{FFFD}"), ("b", "\u{FFFD}")];
    query_encoded_plus_and_amp: "a=%2B%26%3D" => [("a", "+&=")];
    query_bare_equals: "=" => [("", "")];
}

#[test]
fn percent_decode_cases() {
    assert_eq!(percent_decode(""), "");
    assert_eq!(percent_decode("plain"), "plain");
    assert_eq!(percent_decode("a+b%20c"), "a b c");
    assert_eq!(percent_decode("%"), "%");
    assert_eq!(percent_decode("%zz%41"), "%zzA");
    assert_eq!(percent_decode("%00"), "\0");
    assert_eq!(percent_decode("caf%C3%A9"), "café");
}

#[test]
fn query_param_repeated_names_first_wins() {
    let r = request("GET /?a=1&a=2&%62=3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.query_param("a").as_deref(), Some("1"));
    assert_eq!(r.query_param("b").as_deref(), Some("3"));
}

// ---------------------------------------------------------------------------
// Errors and responses
// ---------------------------------------------------------------------------

#[test]
fn error_statuses() {
    let table = [
        (Error::Method, 400),
        (Error::Target, 400),
        (Error::Version, 505),
        (Error::MalformedVersion, 400),
        (Error::HeaderName, 400),
        (Error::HeaderValue, 400),
        (Error::NewLine, 400),
        (Error::RequestLineTooLong, 414),
        (Error::HeaderLineTooLong, 431),
        (Error::TooManyHeaders, 431),
        (Error::HeadTooLarge, 431),
        (Error::MissingHost, 400),
        (Error::ContentLength, 400),
        (Error::LengthAndChunked, 400),
        (Error::UnsupportedTransferCoding, 501),
        (Error::ChunkedNotLast, 400),
        (Error::ChunkSize, 400),
        (Error::BodyTooLarge, 413),
        (Error::Expectation, 417),
    ];
    for (error, status) in table {
        assert_eq!(error.status(), status, "{error:?}");
        assert_ne!(reason_phrase(status), "Unknown");
        assert!(!error.description().is_empty());
        assert!(error.to_string().contains(error.description()));
        let _: &dyn std::error::Error = &error;
    }
}

#[test]
fn reason_phrases() {
    for status in [
        100, 200, 204, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 411, 413, 414,
        417, 429, 431, 500, 501, 503, 505,
    ] {
        assert_ne!(reason_phrase(status), "Unknown", "{status}");
    }
    assert_eq!(reason_phrase(200), "OK");
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    assert_eq!(reason_phrase(599), "Unknown");
    assert_eq!(reason_phrase(0), "Unknown");
}

#[test]
fn response_builders() {
    let r = Response::text(200, "hi").header("X-A", "1").header("x-a", "2");
    assert_eq!(r.status(), 200);
    assert_eq!(r.get_header("CONTENT-TYPE"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.get_header("X-A"), Some("1"));
    assert_eq!(r.get_body(), b"hi");
    assert!(r.is_valid());
    assert_eq!(
        Response::html(200, "<p>").get_header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(Response::json(201, "{}").get_header("content-type"), Some("application/json"));
    assert_eq!(Response::new(204).get_body(), b"");
    assert_eq!(Response::new(200).body(vec![1, 2]).get_body(), [1, 2]);
    assert!(Response::new(200).header("X", "tab\tand obs-text é").is_valid());
}

/// `name: header name, value => is_valid;`
fn check_response_header(name: &str, value: &str, valid: bool) {
    let r = Response::text(200, "x").header(name, value);
    assert_eq!(r.is_valid(), valid);
    if !valid {
        assert_eq!(r.get_header(name), None, "an invalid header is never stored");
    }
}

cases! { check_response_header;
    resp_header_ok: "X-Ok", "value" => true;
    resp_header_empty_value: "X-Ok", "" => true;
    resp_header_cr: "X", "a\rb" => false;
    resp_header_lf: "X", "a\nSet-Cookie: evil" => false;
    resp_header_crlf: "X", "a\r\n\r\n<html>" => false;
    resp_header_nul: "X", "a\0" => false;
    resp_header_control: "X", "\x1b" => false;
    resp_header_del: "X", "\x7f" => false;
    resp_header_name_empty: "", "v" => false;
    resp_header_name_space: "X Y", "v" => false;
    resp_header_name_colon: "X:", "v" => false;
    resp_header_name_crlf: "X\r\nY", "v" => false;
    resp_header_name_non_ascii: "Xé", "v" => false;
}

#[test]
fn response_invalid_status() {
    assert!(!Response::new(42).is_valid());
    assert!(!Response::new(1000).is_valid());
    // A 1xx is never final (RFC 9110 15.2); codes end at 599 (15).
    for status in [100, 101, 103, 199, 600, 999] {
        assert!(!Response::new(status).is_valid(), "{status}");
    }
    assert!(Response::new(200).is_valid() && Response::new(599).is_valid());
}

// ---------------------------------------------------------------------------
// Response heads (what the client reads), with the default limits
// ---------------------------------------------------------------------------

/// `name: input => Answer(status, fields, rest) | More | Fail(error);` and
/// every prefix of the head as for requests.
fn check_response_head(input: &[u8], want: Want<'_>) {
    let got = parse_response_head(input, &Limits::default());
    let mut end = input.len();
    match (&got, &want) {
        (Ok(Status::Complete((head, consumed))), Answer(status, fields, rest)) => {
            end = *consumed;
            assert_eq!(head.status(), *status);
            let fields: Vec<_> =
                fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            assert_eq!(head.headers(), fields);
            assert_eq!(&input[end..], rest.as_bytes());
        }
        (Ok(Status::Partial), More) => {}
        (Err(error), Fail(wanted)) if error == wanted => {}
        _ => panic!("{:?}: got {got:?}, want {want:?}", String::from_utf8_lossy(input)),
    }
    check_prefixes(input, end, got.err(), |part| parse_response_head(part, &Limits::default()));
}

cases! { check_response_head;
    resp_fields: b"HTTP/1.1 200 OK\r\nContent-Type:  text/event-stream \r\nX: 1\r\nx: 2\r\n\r\nbody"
        => Answer(200, &[("Content-Type", "text/event-stream"), ("X", "1"), ("x", "2")], "body");
    resp_no_reason: b"HTTP/1.0 204\r\n\r\n" => Answer(204, &[], "");
    resp_empty_reason: b"HTTP/1.1 999 \r\n\r\n" => Answer(999, &[], "");
    resp_continue: b"HTTP/1.1 100 Continue\r\n\r\ndata" => Answer(100, &[], "data");
    resp_minor_version: b"HTTP/1.9 200 OK\r\n\r\n" => Answer(200, &[], "");
    resp_not_utf8_value: b"HTTP/1.1 200 OK\r\nX: \xff\r\n\r\n" => Answer(200, &[("X", "\u{FFFD}")], "");
    resp_partial_status: b"HTTP/1.1 200" => More;
    resp_partial_fields: b"HTTP/1.1 200 OK\r\nX: 1\r\n" => More;
    resp_bare_lf_field: b"HTTP/1.1 200 OK\r\nX: 1\nx: 2\r\n\r\n" => Fail(Error::NewLine);
    resp_bare_lf_end: b"HTTP/1.0 204\n\n" => Fail(Error::NewLine);
    resp_cr_alone: b"HTTP/1.1 200 OK\rX\r\n\r\n" => Fail(Error::NewLine);
    resp_obs_fold: b"HTTP/1.1 200 OK\r\n folded\r\n\r\n" => Fail(Error::NewLine);
    resp_no_colon: b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n" => Fail(Error::HeaderName);
    resp_space_in_name: b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n" => Fail(Error::HeaderName);
    resp_nul_value: b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n" => Fail(Error::HeaderValue);
    resp_http2: b"HTTP/2 200 OK\r\n\r\n" => Fail(Error::StatusLine);
    resp_lowercase_http: b"http/1.1 200 OK\r\n\r\n" => Fail(Error::StatusLine);
    resp_not_http: b"ICY 200 OK\r\n\r\n" => Fail(Error::StatusLine);
    resp_code_two_digits: b"HTTP/1.1 20 OK\r\n\r\n" => Fail(Error::StatusLine);
    resp_code_four_digits: b"HTTP/1.1 2000\r\n\r\n" => Fail(Error::StatusLine);
    resp_code_below_100: b"HTTP/1.1 099 x\r\n\r\n" => Fail(Error::StatusLine);
    resp_two_spaces: b"HTTP/1.1  200 OK\r\n\r\n" => Fail(Error::StatusLine);
    resp_tab_before_reason: b"HTTP/1.1 200\tOK\r\n\r\n" => Fail(Error::StatusLine);
    resp_leading_empty_line: b"\r\nHTTP/1.1 200 OK\r\n\r\n" => Fail(Error::StatusLine);
}

#[test]
fn response_head_lookup_takes_the_first() {
    let wire = b"HTTP/1.1 200 OK\r\nX: 1\r\nx: 2\r\n\r\n";
    let Ok(Status::Complete((head, _))) = parse_response_head(wire, &Limits::default()) else {
        panic!("a valid head");
    };
    assert_eq!(head.header("x"), Some("1"));
    assert_eq!(head.header_all("X").collect::<Vec<_>>(), ["1", "2"]);
}

/// `name: method, [(name, value)...] => framing;` for a `200` answer.
fn check_response_framing(method: &str, fields: &[(&str, &str)], want: Result<Framing, Error>) {
    let mut wire = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in fields {
        wire.push_str(&format!("{name}: {value}\r\n"));
    }
    wire.push_str("\r\n");
    let Ok(Status::Complete((head, _))) = parse_response_head(wire.as_bytes(), &Limits::default())
    else {
        panic!("{wire:?} is a valid head");
    };
    assert_eq!(head.body_framing(method), want);
}

cases! { check_response_framing;
    resp_framing_close: "GET", &[] => Ok(Framing::None);
    resp_framing_length: "GET", &[("Content-Length", "12")] => Ok(Framing::Length(12));
    resp_framing_chunked_empty_element: "GET", &[("Transfer-Encoding", "chunked,")] => Ok(Framing::Chunked);
    resp_framing_length_same_list: "GET", &[("content-length", "3, 3")] => Ok(Framing::Length(3));
    resp_framing_length_differ_fields: "GET", &[("content-length", "3"), ("Content-Length", "4")] => Err(Error::ContentLength);
    resp_framing_length_negative: "GET", &[("Content-Length", "-1")] => Err(Error::ContentLength);
    resp_framing_chunked_over_length: "GET", &[("Transfer-Encoding", "Chunked"), ("Content-Length", "3")] => Ok(Framing::Chunked);
    resp_framing_gzip_chunked: "GET", &[("Transfer-Encoding", "gzip, chunked")] => Err(Error::UnsupportedTransferCoding);
    resp_framing_head: "HEAD", &[] => Ok(Framing::Length(0));
    resp_framing_head_ignores_length: "HEAD", &[("Content-Length", "12")] => Ok(Framing::Length(0));
}

// ---------------------------------------------------------------------------
// Fuzzing with a deterministic PRNG
// ---------------------------------------------------------------------------

const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nPOST /p?a=1&b=%41 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\n\r\nabc",
    b"OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
    b"GET /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX: caf\xc3\xa9 \r\n\r\n",
    b"PUT /x HTTP/1.1\r\nhost: [::1]\r\nA:\r\nA: 2\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
];

const FUZZ_LIMITS: Limits = Limits {
    max_request_line: 40,
    max_header_line: 30,
    max_headers: 4,
    max_head: 120,
    max_body: 1000,
};

/// Parses `input` whole and at a random prefix, with the default and small
/// limits: no panic, a prefix gives `Partial` or the whole input's result,
/// and a complete head re-parses to the same request.
fn fuzz_one(rng: &mut Rng, input: &[u8]) {
    for limits in [Limits::default(), FUZZ_LIMITS] {
        let whole = parse_head(input, &limits);
        let end = rng.below(input.len() + 1);
        let part = parse_head(&input[..end], &limits);
        assert!(
            part == Ok(Status::Partial) || part == whole,
            "{input:?} prefix {end}: {part:?} vs {whole:?}"
        );
        if let Ok(Status::Complete((request, consumed))) = &whole {
            assert!(*consumed <= input.len() && *consumed <= limits.max_head);
            let again = parse_head(&input[..*consumed], &limits);
            assert_eq!(again, whole, "{input:?}");
            exercise(request, &limits);
        }
    }
}

/// Calls every accessor (none may panic) and checks invariants.
fn exercise(r: &Request, limits: &Limits) {
    assert!(!r.method().is_empty());
    match r.query() {
        Some(q) => assert_eq!(format!("{}?{q}", r.path()), r.target()),
        None => assert_eq!(r.path(), r.target()),
    }
    assert!(r.target().starts_with('/') || r.target() == "*");
    for (name, value) in r.headers() {
        assert!(!name.is_empty() && !name.contains([' ', ':', '\r', '\n']));
        assert!(!value.starts_with([' ', '\t']) && !value.ends_with([' ', '\t']));
        assert!(!value.contains(['\r', '\n', '\0']));
    }
    let _ = r.query_params();
    let _ = r.query_param("a");
    let _ = r.header("host");
    let _ = r.header_all("a").count();
    let _ = r.keep_alive();
    let _ = r.expects_continue();
    let _ = r.body_framing(limits);
    let _ = format!("{r:?}");
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for _ in 0..200_000 {
        let len = rng.below(48);
        let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Half the time, start like a request so that the fuzz gets past
        // the method.
        if rng.chance(50) {
            let mut prefix = b"GET /".to_vec();
            prefix.append(&mut input);
            input = prefix;
        }
        fuzz_one(&mut rng, &input);
    }
}

fn fuzz_mutations(seed: u64, rounds: usize) {
    let mut rng = Rng::new(seed);
    for _ in 0..rounds {
        let seed = *rng.pick(SEEDS);
        let input = mutate(&mut rng, seed, &[], SEEDS);
        fuzz_one(&mut rng, &input);
    }
}

#[test]
fn fuzz_mutations_a() {
    fuzz_mutations(0xD1B5_4A32_D192_ED03, 100_000);
}

#[test]
fn fuzz_mutations_b() {
    fuzz_mutations(0xABCD_EF01_2345_6789, 100_000);
}

#[test]
fn fuzz_seeds_are_valid() {
    for seed in SEEDS {
        let Ok(Status::Complete(_)) = parse_head(seed, &Limits::default()) else {
            panic!("{seed:?}")
        };
    }
}

#[test]
fn fuzz_chunked() {
    const BODIES: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: v\r\n\r\nGET",
        b"A\r\n0123456789\r\n00\r\n\r\n",
    ];
    let mut rng = Rng::new(0x1234_5678_9ABC_DEF1);
    for _ in 0..20_000 {
        let body = *rng.pick(BODIES);
        let input = mutate(&mut rng, body, &[], BODIES);
        let whole = feed(&input, &[], 12);
        let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(input.len() + 1)).collect();
        cuts.sort_unstable();
        assert_eq!(feed(&input, &cuts, 12), whole, "{input:?} cut at {cuts:?}");
        if let (Ok(Some(n)), body) = &whole {
            assert!(*n <= input.len() && body.len() <= 12);
        }
    }
}

/// A `u64::MAX` body limit, and a zero one.
#[test]
fn chunked_extreme_limits() {
    let mut body = Vec::new();
    let mut decoder = ChunkedDecoder::new(usize::MAX);
    assert_eq!(decoder.decode(b"ffffffffffffffff\r\nab", &mut body), Ok(Status::Partial));
    assert_eq!(body, b"ab");
    let mut decoder = ChunkedDecoder::new(0);
    assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body), Ok(Status::Complete(5)));
    let mut decoder = ChunkedDecoder::new(0);
    assert_eq!(decoder.decode(b"1", &mut body), Err(Error::BodyTooLarge));
}

/// Limits of `usize::MAX` and of 0 (a 100-byte head aside).
#[test]
fn huge_and_zero_limits() {
    let limits = |n| Limits {
        max_request_line: n,
        max_header_line: n,
        max_headers: n,
        max_head: n,
        max_body: n,
    };
    let max = limits(usize::MAX);
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
    let Ok(Status::Complete((request, _))) = parse_head(head, &max) else { panic!() };
    assert_eq!(request.body_framing(&max), Ok(Framing::Length(u64::MAX)));
    assert_eq!(parse_head(b"GET / HTTP/1.1", &max), Ok(Status::Partial));
    let zero = limits(0);
    assert_eq!(parse_head(b"", &zero), Ok(Status::Partial));
    assert_eq!(parse_head(b"G", &zero), Err(Error::HeadTooLarge));
    let zero = Limits { max_head: 100, ..zero };
    assert_eq!(parse_head(b"G", &zero), Err(Error::RequestLineTooLong));
}
