//! Deterministic randomness for the fuzz-style tests and for
//! `tests/robustness/fuzz.rs` (which includes this file by path): one
//! generator and one mutator, so every fuzzer draws its inputs the same way.

#![allow(dead_code)] // each user takes part of it

/// xorshift64*, seeded through splitmix64 so that any seed (0 too) works.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A byte: half the time one of [`SPECIAL`], else any byte.
    pub fn byte(&mut self) -> u8 {
        if self.chance(50) {
            *self.pick(SPECIAL)
        } else {
            self.next_u64() as u8
        }
    }
}

/// Bytes that matter to the HTTP and event-stream parsers.
pub const SPECIAL: &[u8] = b"\r\n \t:;,=?/%\0\x7f\x80\xff\xc3\xa9#*0123456789aAfFzZ-.";

/// One to four edits of `input`: overwrite, insert, delete, truncate,
/// repeat a slice (long lines, many fields, big numbers), splice in a
/// token or a piece of another seed.
pub fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&[u8]], seeds: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        let byte = rng.byte();
        match rng.below(7) {
            0 if at < out.len() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                let most = if rng.chance(10) { 1000 } else { 40 };
                for _ in 0..1 + rng.below(most) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if !seeds.is_empty() => {
                let seed = rng.pick(seeds);
                let from = rng.below(seed.len() + 1);
                out.splice(at..at, seed[from..].iter().copied());
            }
            _ if !tokens.is_empty() => {
                let token = rng.pick(tokens);
                out.splice(at..at, token.iter().copied());
            }
            _ => out.insert(at, byte),
        }
    }
    out
}

/// One fuzz input of the Redis reply parser: parses `input` and the RESP
/// its bytes spell (`0x80..`: tokens) with default and small limits, and
/// asserts the parser's invariants. Returns the outcome.
pub fn resp_reply(input: &[u8]) -> &'static str {
    use stdsse::http::Status;
    use stdsse::redis::{parse_reply, ReplyLimits, LIMITS};
    let tokens = b"\r\n * $ : + - -1 *1\r\n *2\r\n $1\r\nx\r\n $-1\r\n :-42\r\n +OK\r\n 99999999999999999999 % _";
    let tokens: Vec<&[u8]> = tokens.split(|&b| b == b' ').collect();
    let token = |b: &u8| if *b < 0x80 { vec![*b] } else { tokens[usize::from(*b) % 16].to_vec() };
    let spelt: Vec<u8> = input.iter().flat_map(token).collect();
    let small = ReplyLimits { bulk: 8, array: 4, depth: 2, line: 40, total: 64 };
    let mut outcome = "";
    for (data, lim) in [input, &spelt].map(|d| [(d, small), (d, LIMITS)]).concat() {
        outcome = match parse_reply(data, &lim) {
            Ok(Status::Complete((reply, len))) => {
                assert_eq!(parse_reply(&data[..len], &lim), Ok(Status::Complete((reply, len))));
                assert_eq!(parse_reply(&data[..len - 1], &lim), Ok(Status::Partial));
                "complete"
            }
            Ok(Status::Partial) if data.len() < lim.total => "partial",
            Ok(Status::Partial) => panic!("Partial past the bound"),
            Err(e) => {
                assert_eq!(parse_reply(&[data, b"\r\n+OK\r\n"].concat(), &lim), Err(e));
                "error"
            }
        };
    }
    outcome
}
