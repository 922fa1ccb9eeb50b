//! Chunked bodies (RFC 9112 7.1): the incremental decoder and the framing
//! of one chunk.

use super::{Error, Status, TCHAR, VALUE};

/// Most bytes of chunk extensions on one chunk-size line: bounds the work
/// on bytes that carry no data.
const MAX_CHUNK_EXT: usize = 1024;
/// Most bytes of the trailer section (its final CRLF not counted).
const MAX_TRAILER: usize = 8 * 1024;
/// Most hex digits in a chunk size (leading zeros included): fits a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// Where a [`ChunkedDecoder`] is in the body; each `..Lf` state has seen a CR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    /// After the size and whitespace: BWS or `;` must follow.
    SizeSpace,
    Ext,
    ExtQuoted,
    /// After a `\` in a quoted-string.
    ExtEscape,
    SizeLf,
    /// Chunk data: this many bytes left, then CRLF.
    Data(u64),
    DataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerStart,
    TrailerName,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
    /// The error is returned again.
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
/// Feed it bytes split anywhere. Chunk sizes have at most 16 hex digits;
/// chunk extensions (up to 1 KiB a line) and trailers (up to 8 KiB) are
/// checked for syntax and discarded. An error is returned again on every
/// later call.
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
    /// The size being read, its digits and extension bytes.
    size: u64,
    digits: u8,
    ext: usize,
    /// Trailer bytes and decoded bytes so far.
    trailer: usize,
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
    /// `Complete(n)`: the body ended after `n` bytes of `input` (the rest is
    /// the next pipelined request). A size over `max_body` is
    /// [`Error::BodyTooLarge`] as soon as it is read.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Status<usize>, Error> {
        match self.state {
            Chunk::Done => return Ok(Status::Complete(0)),
            Chunk::Failed(error) => return Err(error),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(left @ 1..) = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                self.state = Chunk::Data(left - take as u64);
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

    /// The state after byte `b` (not called in `Data(1..)`, `Done`, `Failed`).
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
            Chunk::Data(0) if b == b'\r' => Ok(Chunk::DataLf),
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

/// The line that starts a chunk of `len` (not 0) bytes, the size in hex and
/// CRLF, written to the start of `out`; returns its length.
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

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_heads() {
        let mut out = [0u8; 18];
        for (len, want) in
            [(1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (usize::MAX, "ffffffffffffffff\r\n")]
        {
            let n = chunk_head(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }

    #[test]
    fn extreme_limits() {
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::new(usize::MAX);
        assert_eq!(decoder.decode(b"ffffffffffffffff\r\nab", &mut body), Ok(Status::Partial));
        assert_eq!(body, b"ab");
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body), Ok(Status::Complete(5)));
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.decode(b"1", &mut body), Err(Error::BodyTooLarge));
    }
}
