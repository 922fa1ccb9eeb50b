//! Byte scanners and decimal numbers shared by the encoder, the parser and
//! the HTTP layer (private: below all three).

use std::io::Write;

/// The offset of the first CR or LF, eight bytes at a time.
pub(crate) fn find_eol(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = bytes.chunks_exact(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let (lf, cr) = (word ^ (ONES * u64::from(b'\n')), word ^ (ONES * u64::from(b'\r')));
        // A zero byte of `lf` or `cr` is an LF or CR. Borrows can flag a byte
        // above a real match, never below, so the lowest flagged byte is real.
        let found = (lf.wrapping_sub(ONES) & !lf | cr.wrapping_sub(ONES) & !cr) & (ONES * 0x80);
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let offset = bytes.len() - chunks.remainder().len();
    chunks.remainder().iter().position(|&b| b == b'\r' || b == b'\n').map(|at| offset + at)
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u128) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Whether `s` is `1*DIGIT`.
pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `1*DIGIT` as an unsigned number, or `None` (empty, other characters, overflow).
pub(crate) fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    is_digits(s).then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_eol_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for eol in [b'\n', b'\r'] {
                    // Bytes near CR/LF and 0x80-heavy ones must not confuse
                    // the word scan; an LF after the match must not either.
                    let fill = [b'a', 0x0B, 0x0C, 0x0E, 0x8A, 0x8D, 0x00, 0xFF];
                    let mut bytes: Vec<u8> = (0..len).map(|i| fill[i % 8]).collect();
                    bytes[at] = eol;
                    if let Some(next) = bytes.get_mut(at + 1) {
                        *next = b'\n';
                    }
                    assert_eq!(find_eol(&bytes), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(find_eol(&vec![0x8Bu8; len]), None);
        }
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n.into());
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_decimal(&n.to_string()), Some(n));
        }
        for bad in ["", "18446744073709551616", "+1", "1 "] {
            assert_eq!(parse_decimal::<u64>(bad), None);
        }
    }
}
