//! Fuzz loops of the robustness suite (built as an example; see
//! Cargo.toml): a bounded, deterministic run, not an example to copy.
//!
//! ```text
//! cargo run --release --example fuzz -- [--seed 1] [--inputs 1000000]
//! ```
//!
//! Four loops, `--inputs` inputs each, on their own threads, each with its
//! own xorshift generator derived from `--seed` (the same seed gives the
//! same inputs):
//!
//! * **request heads**: random bytes (a quarter) and mutated valid requests
//!   into [`parse_head`], with the default and with small [`Limits`]. No
//!   panic, and: `Partial` is never the answer for more than `max_head`
//!   bytes (so a server's buffer stays bounded); a complete head is at most
//!   `max_head` bytes, parses the same on its own, and every prefix of it is
//!   `Partial`; an error stays the same error whatever bytes follow; the
//!   request's accessors and its body framing work, and a chunked body that
//!   follows goes through the chunked check below.
//! * **chunked bodies**: mutated chunked bodies and random bytes into
//!   [`ChunkedDecoder`], once whole and once in random pieces: the same
//!   result either way, the decoded body never above `max_body`, and a
//!   finished or failed decoder stays so.
//! * **event streams**: random bytes and random event-stream text into
//!   [`Parser`], once whole and once in random pieces (items pulled after
//!   every piece): the same items either way; after each piece
//!   [`Parser::buffered`] is within `max_line_len + max_event_size + 3`; no
//!   dispatched id holds NUL, CR or LF, no type or comment CR or LF, no data
//!   CR.
//! * **RESP replies**: random bytes, and the same with every byte of 0x80 or
//!   more turned into a RESP token (`*2\r\n`, `$3\r\n`, ...), into the
//!   Redis reply parser with the default and small limits
//!   (`tests/common/fuzz.rs`): no panic, `Partial` never past the
//!   bound, an error the same whatever follows.
//!
//! Every input runs under `catch_unwind`: a panic (in the library or in a
//! check) prints the loop, the input number and the input in hex, and fails
//! the loop. One line per loop, `PASS ...` or `FAIL ...`, then
//! `N passed, M failed`; the exit status is 1 if a loop failed.

#[path = "../../examples/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::Instant;

use stdsse::http::{parse_head, ChunkedDecoder, Error, Framing, Limits, Status};
use stdsse::parser::{Item, Parser};

// The generator and the mutator the fuzz-style tests use too.
#[path = "../common/fuzz.rs"]
mod fuzzing;
use fuzzing::{mutate, Rng};

const USAGE: &str = "fuzz [--seed 1] [--inputs 1000000]";

/// Random bytes: mostly tokens from `alphabet`, some arbitrary bytes.
fn random_input(rng: &mut Rng, alphabet: &[&[u8]], max_pieces: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(max_pieces + 1) {
        if rng.chance(25) {
            out.push(rng.next_u64() as u8);
        } else {
            let token = rng.pick(alphabet);
            out.extend_from_slice(token);
        }
    }
    out
}

/// Splits `input` into random pieces (some empty, mostly small).
fn pieces<'a>(rng: &mut Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let len = match rng.below(10) {
            0 => 0,
            1..=6 => 1 + rng.below(4),
            7 | 8 => 1 + rng.below(64),
            _ => 1 + rng.below(input.len()),
        };
        let end = (at + len).min(input.len());
        out.push(&input[at..end]);
        at = end;
    }
    if rng.chance(10) {
        out.push(&input[input.len()..]);
    }
    out
}

/// What one loop counts.
#[derive(Default)]
struct Tally {
    inputs: u64,
    outcomes: BTreeMap<String, u64>,
    failure: Option<String>,
}

impl Tally {
    fn count(&mut self, outcome: impl Into<String>) {
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        parts.join(", ")
    }
}

/// Runs `inputs` inputs made by `make` through `check` under
/// `catch_unwind`; stops at the first failure.
fn run_loop<M, C>(name: &str, inputs: u64, seed: u64, mut make: M, mut check: C) -> Tally
where
    M: FnMut(&mut Rng) -> (Vec<u8>, &'static str),
    C: FnMut(&[u8], &mut Rng, &mut Tally),
{
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    for n in 0..inputs {
        let (input, kind) = make(&mut rng);
        tally.count(kind);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            check(&input, &mut rng, &mut tally);
        }));
        tally.inputs += 1;
        if result.is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            tally.failure = Some(format!(
                "{name}: panic on input #{n} (seed {seed}, {} bytes): {hex}",
                input.len()
            ));
            break;
        }
    }
    tally
}

// ---------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------

const REQUESTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /events?topic=a&lastEventId=7 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: text/event-stream\r\nLast-Event-ID: 41\r\n\r\n",
    b"\r\n\r\nHEAD /files/exact HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\nOrigin: https://ok.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
    b"PUT /item HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3, 3\r\nConnection: close, keep-alive\r\n\r\nabc",
    b"GET /caf%C3%A9?q=a+b&x HTTP/1.1\r\nHost: t\r\nX-Name: caf\xc3\xa9\r\nCookie: a=1; b=2\r\n\r\n",
];

const HTTP_TOKENS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"OPTIONS",
    b" ",
    b"/",
    b"*",
    b"?a=1",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"Host: t\r\n",
    b"Host:",
    b":",
    b"Content-Length: ",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"0",
    b"18446744073709551616",
    b"ffffffffffffffff\r\n",
    b"\t",
    b"\0",
    b"\x7f",
    b"\xff",
    b"\xc3\xa9",
    b"X-A: ",
    b"a",
];

/// Small limits, so that every bound is reached with short inputs.
const SMALL: Limits = Limits {
    max_request_line: 48,
    max_header_line: 40,
    max_headers: 6,
    max_head: 200,
    max_body: 24,
};

fn make_head(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    if rng.chance(25) {
        (random_input(rng, HTTP_TOKENS, 40), "random")
    } else {
        let seed = rng.pick(REQUESTS);
        (mutate(rng, seed, HTTP_TOKENS, REQUESTS), "mutated")
    }
}

fn check_head(input: &[u8], rng: &mut Rng, tally: &mut Tally) {
    let limits = if rng.chance(25) { SMALL } else { Limits::default() };
    match parse_head(input, &limits) {
        Ok(Status::Partial) => {
            assert!(input.len() <= limits.max_head, "Partial past max_head");
            tally.count("partial");
        }
        Ok(Status::Complete((request, consumed))) => {
            tally.count("complete");
            assert!(consumed <= input.len() && consumed <= limits.max_head);
            // The head alone parses the same; every prefix needs more.
            let again = parse_head(&input[..consumed], &limits);
            assert_eq!(again, Ok(Status::Complete((request.clone(), consumed))));
            for cut in [consumed - 1, rng.below(consumed)] {
                assert_eq!(parse_head(&input[..cut], &limits), Ok(Status::Partial));
            }
            // The accessors work on anything the parser accepts.
            let _ = (request.method(), request.target(), request.path());
            let _ = (request.query(), request.query_params(), request.version());
            assert!(request.headers().count() <= limits.max_headers);
            let _ = (request.keep_alive(), request.expects_continue());
            let _ = (request.header("host"), request.query_param("a"));
            match request.body_framing(&limits) {
                Ok(Framing::Chunked) => {
                    tally.count("chunked body");
                    let mut nested = Tally::default();
                    check_chunked_with(&input[consumed..], limits.max_body, rng, &mut nested);
                }
                Ok(Framing::Length(n)) => assert!(n <= limits.max_body as u64),
                Ok(Framing::None) => {}
                Err(e) => {
                    assert!(matches!(e.status(), 400 | 413 | 501));
                    tally.count(format!("framing {}", e.status()));
                }
            }
        }
        Err(error) => {
            tally.count(format!("error {}", error.status()));
            assert!(matches!(error.status(), 400 | 414 | 431 | 505));
            // More bytes never change the verdict.
            let mut longer = input.to_vec();
            longer.extend_from_slice(&random_input(rng, HTTP_TOKENS, 8));
            assert_eq!(parse_head(&longer, &limits), Err(error));
        }
    }
}

// ---------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------

const CHUNKED: &[&[u8]] = &[
    b"5\r\nhello\r\n0\r\n\r\n",
    b"3;name=value\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n",
    b"0\r\n\r\n",
    b"0000000000000001\r\nx\r\n0;e\r\nA: b\r\nC: d\r\n\r\n",
    b"A \t;x=\"y\"\r\n0123456789\r\n0\r\n\r\n",
];

const CHUNK_TOKENS: &[&[u8]] = &[
    b"0",
    b"1",
    b"f",
    b"F",
    b"\r\n",
    b"\r",
    b"\n",
    b";",
    b"=",
    b" ",
    b"\t",
    b"x",
    b"\0",
    b"\xff",
    b"ffffffffffffffff",
];

fn make_chunked(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    if rng.chance(25) {
        (random_input(rng, CHUNK_TOKENS, 40), "random")
    } else {
        let seed = rng.pick(CHUNKED);
        (mutate(rng, seed, CHUNK_TOKENS, CHUNKED), "mutated")
    }
}

fn check_chunked(input: &[u8], rng: &mut Rng, tally: &mut Tally) {
    let max_body = *rng.pick(&[0, 1, 5, 16, 64, 1 << 20, usize::MAX]);
    check_chunked_with(input, max_body, rng, tally);
}

/// What a decoder made of a whole input: the result (with `Complete`
/// counted from the start of the input) and the body.
type Decoded = (Result<Status<usize>, Error>, Vec<u8>);

fn check_chunked_with(input: &[u8], max_body: usize, rng: &mut Rng, tally: &mut Tally) {
    let mut whole = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let result = whole.decode(input, &mut body);
    assert!(body.len() <= max_body, "decoded past max_body");
    let once: Decoded = (result, body);

    let mut split = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let mut offset = 0;
    let mut result = Ok(Status::Partial);
    for piece in pieces(rng, input) {
        result = match split.decode(piece, &mut body) {
            Ok(Status::Complete(n)) => {
                assert!(n <= piece.len());
                Ok(Status::Complete(offset + n))
            }
            other => other,
        };
        offset += piece.len();
        if !matches!(result, Ok(Status::Partial)) {
            break;
        }
    }
    assert_eq!(once, (result, body), "whole and split decoding differ");
    // A finished decoder stays finished, a failed one failed.
    let mut scratch = Vec::new();
    match once.0 {
        Ok(Status::Complete(_)) => {
            tally.count("complete");
            assert_eq!(split.decode(b"5\r\n", &mut scratch), Ok(Status::Complete(0)));
        }
        Err(e) => {
            tally.count(format!("error {}", e.status()));
            assert!(matches!(e.status(), 400 | 413));
            assert_eq!(split.decode(b"0\r\n\r\n", &mut scratch), Err(e));
        }
        Ok(Status::Partial) => tally.count("partial"),
    }
    assert!(scratch.is_empty());
}

// ---------------------------------------------------------------------------
// Event streams
// ---------------------------------------------------------------------------

const STREAM_TOKENS: &[&[u8]] = &[
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"id:",
    b"id: ",
    b"retry:",
    b"retry: 1000",
    b"retry: 99999999999999999999999",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xa9",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b"x",
    b"1234",
    b"hello world",
    b"data: hello\n",
    b"id: 7\n",
    b"event: ping\n",
    b"\n\n",
    b"\r\n\r\n",
];

fn make_stream(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    if rng.chance(20) {
        let len = rng.below(300);
        ((0..len).map(|_| rng.next_u64() as u8).collect(), "random bytes")
    } else {
        (random_input(rng, STREAM_TOKENS, 80), "random stream")
    }
}

/// Pulls every item, checking the standard's invariants on each.
fn pull(parser: &mut Parser, items: &mut Vec<String>, tally: &mut Tally) {
    while let Some(item) = parser.next_item() {
        match &item {
            Ok(Item::Event(event)) => {
                assert!(!event.id.contains(['\0', '\r', '\n']), "bad id {event:?}");
                assert!(!event.event_type.contains(['\r', '\n']), "bad type {event:?}");
                assert!(!event.event_type.is_empty(), "empty type {event:?}");
                assert!(!event.data.contains('\r'), "CR in data {event:?}");
                tally.count("events");
            }
            Ok(Item::Comment(text)) => {
                assert!(!text.contains(['\r', '\n']), "bad comment {text:?}");
                tally.count("comments");
            }
            Err(_) => tally.count("limit errors"),
        }
        items.push(format!("{item:?}"));
    }
}

fn check_stream(input: &[u8], rng: &mut Rng, tally: &mut Tally) {
    let (max_line, max_event) =
        if rng.chance(50) { (rng.below(64), rng.below(128)) } else { (64 * 1024, 64 * 1024) };
    let new = || Parser::new().max_line_len(max_line).max_event_size(max_event);
    let bound = max_line + max_event + 3;

    let mut whole = new();
    let mut once = Vec::new();
    whole.feed(input);
    pull(&mut whole, &mut once, &mut Tally::default());
    assert!(whole.buffered() <= bound, "buffered past the bound");
    whole.finish();
    pull(&mut whole, &mut once, &mut Tally::default());

    let mut split = new();
    let mut items = Vec::new();
    for piece in pieces(rng, input) {
        split.feed(piece);
        pull(&mut split, &mut items, tally);
        assert!(split.buffered() <= bound, "buffered {} past {bound}", split.buffered());
    }
    split.finish();
    pull(&mut split, &mut items, tally);
    assert_eq!(once, items, "whole and split parsing differ");
    assert_eq!(whole.get_last_event_id(), split.get_last_event_id());
    assert_eq!(whole.retry(), split.retry());
}

// ---------------------------------------------------------------------------

fn main() {
    let options = common::Options::parse(&["seed", "inputs"], USAGE);
    let seed = options.number("seed", 1);
    let inputs = options.number("inputs", 1_000_000);
    // Failures are reported with their input; the default hook adds where.
    let started = Instant::now();
    let loops: Vec<(&str, thread::JoinHandle<Tally>)> = vec![
        (
            "request heads (parse_head)",
            thread::spawn(move || run_loop("heads", inputs, seed, make_head, check_head)),
        ),
        (
            "chunked bodies (ChunkedDecoder)",
            thread::spawn(move || {
                run_loop("chunked", inputs, seed ^ 0xC4C4, make_chunked, check_chunked)
            }),
        ),
        (
            "event streams (Parser)",
            thread::spawn(move || {
                run_loop("stream", inputs, seed ^ 0x5E5E, make_stream, check_stream)
            }),
        ),
        (
            "RESP replies (redis)",
            thread::spawn(move || {
                run_loop(
                    "resp",
                    inputs,
                    seed ^ 0x4E5B,
                    |rng| {
                        let len = rng.below(300);
                        ((0..len).map(|_| rng.next_u64() as u8).collect(), "random bytes")
                    },
                    |input, _, tally| tally.count(fuzzing::resp_reply(input)),
                )
            }),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, handle) in loops {
        let tally = handle.join().expect("a fuzz loop's thread panicked");
        match &tally.failure {
            None if tally.inputs >= inputs => {
                passed += 1;
                println!(
                    "PASS fuzz {name}: {} inputs, no panic ({})",
                    tally.inputs,
                    tally.summary()
                );
            }
            None => {
                failed += 1;
                println!("FAIL fuzz {name}: only {} inputs", tally.inputs);
            }
            Some(failure) => {
                failed += 1;
                println!("FAIL fuzz {failure}");
            }
        }
    }
    println!("fuzz: seed {seed}, {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
