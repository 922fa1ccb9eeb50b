//! Chunked bodies (RFC 9112 7.1): the incremental decoder and the framing
//! of one chunk.

use super::{Error, Status, TCHAR, VALUE};

/// Most bytes of chunk extensions on one chunk-size line (after the size,
/// up to the CR).
const MAX_CHUNK_EXT: usize = 1024;
/// Most bytes of the trailer section (field lines with their CRLFs, not
/// the final CRLF).
const MAX_TRAILER: usize = 8 * 1024;
/// Most hex digits in a chunk size (leading zeros included), so that the
/// size always fits in a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the size and some whitespace: more BWS or a `;` must follow
    /// (`chunk-ext = *( BWS ";" ... )`, so whitespace alone is invalid).
    SizeSpace,
    /// Inside the chunk extensions, up to CR.
    Ext,
    /// Inside a quoted-string of a chunk extension: CR before its closing
    /// `"` is an error.
    ExtQuoted,
    /// After a `\` in a quoted-string: one escaped byte.
    ExtEscape,
    /// CR of the chunk-size line seen, LF next.
    SizeLf,
    /// Reading chunk data: this many bytes left.
    Data(u64),
    /// The CR after chunk data is next.
    DataCr,
    /// The LF after chunk data is next.
    DataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name: token bytes, then `:`.
    TrailerName,
    /// Inside a trailer field value.
    Trailer,
    /// CR of a trailer field line seen, LF next.
    TrailerLf,
    /// CR of the final CRLF seen, LF next.
    EndLf,
    /// The body is complete.
    Done,
    /// The body was invalid; the error is returned again.
    Failed(Error),
}

/// An incremental decoder for a `Transfer-Encoding: chunked` body (RFC 9112
/// 7.1).
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-size   = 1*HEXDIG
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// trailer-section = *( field-line CRLF )
/// ```
///
/// Feed it the bytes as they arrive, split anywhere (one byte at a time
/// works). Chunk sizes have at most 16 hex digits (leading zeros count);
/// chunk extensions (up to 1 KiB per line) and the trailer section (up to
/// 8 KiB) are checked for line syntax and discarded: a quoted-string in an
/// extension must end on its line, and a trailer line must be
/// `field-name ":" field-value`. Line ends are CRLF only.
/// Once an error is returned, every later call returns it again.
///
/// ```
/// use stdsse::http::{ChunkedDecoder, Status};
///
/// let mut decoder = ChunkedDecoder::new(1024);
/// let mut body = Vec::new();
/// assert_eq!(decoder.decode(b"5;name=x\r\nhel", &mut body), Ok(Status::Partial));
/// let rest = b"lo\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n";
/// assert_eq!(decoder.decode(rest, &mut body), Ok(Status::Complete(21)));
/// assert_eq!(body, b"hello");
/// ```
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: Chunk,
    /// Size of the current chunk, while its size line is read.
    size: u64,
    /// Hex digits read of the current size.
    digits: u8,
    /// Bytes of chunk extension on the current size line.
    ext: usize,
    /// Bytes of trailer section so far.
    trailer: usize,
    /// Decoded bytes so far.
    decoded: u64,
    max_body: u64,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `max_body` decoded bytes.
    #[must_use]
    pub fn new(max_body: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::Size,
            size: 0,
            digits: 0,
            ext: 0,
            trailer: 0,
            decoded: 0,
            max_body: max_body as u64,
        }
    }

    /// Consumes bytes of `input`, appends decoded data to `body`.
    ///
    /// `Complete(n)`: the last chunk and the trailer section are done, `n`
    /// bytes of this `input` were used; the rest belongs to the next
    /// pipelined request. `Partial`: all of `input` was used, feed more.
    /// A decoded size above `max_body` is [`Error::BodyTooLarge`] as soon as
    /// the chunk size that exceeds it is read; any syntax error is
    /// [`Error::ChunkSize`]. After `Complete`, further calls return
    /// `Complete(0)`.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Status<usize>, Error> {
        match self.state {
            Chunk::Done => return Ok(Status::Complete(0)),
            Chunk::Failed(error) => return Err(error),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(left) = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            match self.step(b) {
                Ok(Chunk::Done) => {
                    self.state = Chunk::Done;
                    return Ok(Status::Complete(i));
                }
                Ok(next) => self.state = next,
                Err(error) => {
                    self.state = Chunk::Failed(error);
                    return Err(error);
                }
            }
        }
        Ok(Status::Partial)
    }

    /// The state after byte `b` (never called in `Data`, `Done`, `Failed`).
    fn step(&mut self, b: u8) -> Result<Chunk, Error> {
        let bad = Err(Error::ChunkSize);
        match self.state {
            Chunk::Size => {
                if let Some(digit) = char::from(b).to_digit(16) {
                    if self.digits == MAX_SIZE_DIGITS {
                        return bad;
                    }
                    self.digits += 1;
                    self.size = self.size << 4 | u64::from(digit);
                    if self.size > self.max_body - self.decoded {
                        return Err(Error::BodyTooLarge);
                    }
                    return Ok(Chunk::Size);
                }
                if self.digits == 0 {
                    return bad;
                }
                match b {
                    b'\r' => Ok(Chunk::SizeLf),
                    b' ' | b'\t' => self.ext_byte(Chunk::SizeSpace),
                    b';' => self.ext_byte(Chunk::Ext),
                    _ => bad,
                }
            }
            Chunk::SizeSpace => match b {
                b' ' | b'\t' => self.ext_byte(Chunk::SizeSpace),
                b';' => self.ext_byte(Chunk::Ext),
                _ => bad,
            },
            Chunk::Ext => match b {
                b'\r' => Ok(Chunk::SizeLf),
                b'"' => self.ext_byte(Chunk::ExtQuoted),
                _ if VALUE[b as usize] => self.ext_byte(Chunk::Ext),
                _ => bad,
            },
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            Chunk::ExtQuoted => match b {
                b'"' => self.ext_byte(Chunk::Ext),
                b'\\' => self.ext_byte(Chunk::ExtEscape),
                b'\r' => bad,
                _ if VALUE[b as usize] => self.ext_byte(Chunk::ExtQuoted),
                _ => bad,
            },
            Chunk::ExtEscape if VALUE[b as usize] => self.ext_byte(Chunk::ExtQuoted),
            Chunk::SizeLf => {
                if b != b'\n' {
                    return bad;
                }
                let size = self.size;
                self.size = 0;
                self.digits = 0;
                self.ext = 0;
                if size == 0 {
                    return Ok(Chunk::TrailerStart);
                }
                self.decoded += size;
                Ok(Chunk::Data(size))
            }
            Chunk::DataCr if b == b'\r' => Ok(Chunk::DataLf),
            Chunk::DataLf if b == b'\n' => Ok(Chunk::Size),
            Chunk::TrailerStart => match b {
                b'\r' => Ok(Chunk::EndLf),
                b'\n' | b' ' | b'\t' => bad,
                _ => self.trailer_byte(b),
            },
            Chunk::TrailerName | Chunk::Trailer => self.trailer_byte(b),
            Chunk::TrailerLf if b == b'\n' => self.trailer_byte(b),
            Chunk::EndLf if b == b'\n' => Ok(Chunk::Done),
            _ => bad,
        }
    }

    /// Counts one byte of chunk extension.
    fn ext_byte(&mut self, next: Chunk) -> Result<Chunk, Error> {
        self.ext += 1;
        if self.ext > MAX_CHUNK_EXT {
            return Err(Error::ChunkSize);
        }
        Ok(next)
    }

    /// Counts one byte of trailer section and gives the state after it.
    fn trailer_byte(&mut self, b: u8) -> Result<Chunk, Error> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER {
            return Err(Error::ChunkSize);
        }
        match (self.state, b) {
            (Chunk::TrailerLf, b'\n') => Ok(Chunk::TrailerStart),
            (Chunk::TrailerStart | Chunk::TrailerName, _) if TCHAR[b as usize] => {
                Ok(Chunk::TrailerName)
            }
            (Chunk::TrailerName, b':') => Ok(Chunk::Trailer),
            (Chunk::Trailer, b'\r') => Ok(Chunk::TrailerLf),
            (Chunk::Trailer, _) if VALUE[b as usize] => Ok(Chunk::Trailer),
            _ => Err(Error::ChunkSize),
        }
    }
}

/// The line that starts a chunk of `len` bytes in a chunked response body
/// (RFC 9112 7.1: `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`):
/// the size in hex and CRLF, written to the start of `out`. Returns its
/// length. `len` must not be 0: a chunk of size 0 ends the body.
pub(crate) fn chunk_head(len: usize, out: &mut [u8; 18]) -> usize {
    debug_assert!(len > 0);
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in out[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// What ends every chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and the empty trailer section: the end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_heads() {
        let mut out = [0u8; 18];
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_head(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }

    #[test]
    fn extreme_limits() {
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::new(usize::MAX);
        assert_eq!(
            decoder.decode(b"ffffffffffffffff\r\nab", &mut body),
            Ok(Status::Partial)
        );
        assert_eq!(body, b"ab");
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(
            decoder.decode(b"0\r\n\r\n", &mut body),
            Ok(Status::Complete(5))
        );
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.decode(b"1", &mut body), Err(Error::BodyTooLarge));
    }
}
