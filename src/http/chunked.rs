//! Chunked bodies (RFC 9112 7.1): the incremental decoder and the framing
//! of a body in chunks.

use super::{Error, Status, TCHAR, VALUE};

/// Most bytes of chunk extensions on one chunk-size line: bounds the work
/// on bytes that carry no data.
const MAX_CHUNK_EXT: usize = 1024;
/// Most bytes of the trailer section (its final CRLF not counted).
const MAX_TRAILER: usize = 8 * 1024;
/// Most hex digits in a chunk size, leading zeros included (`1*HEXDIG`; the
/// value must fit a `u64`).
const MAX_SIZE_DIGITS: u8 = 64;

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

/// An incremental decoder for a `Transfer-Encoding: chunked` body.
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
/// Feed it bytes split anywhere. Extensions and trailers are checked and
/// discarded; an error is returned again on every later call.
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
    /// The size being read and its digits.
    size: u64,
    digits: u8,
    /// Bytes of the current line's extensions, then of the trailer section.
    extra: usize,
    decoded: u64,
    max_body: u64,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `max_body` decoded bytes.
    #[must_use]
    pub fn new(max_body: usize) -> ChunkedDecoder {
        let max_body = max_body as u64;
        ChunkedDecoder { state: Chunk::Size, size: 0, digits: 0, extra: 0, decoded: 0, max_body }
    }

    /// Consumes bytes of `input`, appends decoded data to `body`.
    ///
    /// `Complete(n)`: the body ended after `n` bytes of `input` (the rest is
    /// the next pipelined request). A size over `max_body` is
    /// [`Error::BodyTooLarge`] as soon as it is read.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Status<usize>, Error> {
        let mut i = 0;
        loop {
            match self.state {
                Chunk::Done => return Ok(Status::Complete(i)),
                Chunk::Failed(error) => return Err(error),
                _ if i == input.len() => return Ok(Status::Partial),
                Chunk::Data(left @ 1..) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    body.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.state = Chunk::Data(left - take as u64);
                }
                _ => {
                    i += 1;
                    self.state = self.step(input[i - 1]).unwrap_or_else(Chunk::Failed);
                }
            }
        }
    }

    /// The state after byte `b` (not called in `Data(1..)`, `Done`, `Failed`).
    fn step(&mut self, b: u8) -> Result<Chunk, Error> {
        use Chunk::*;
        if let (Size, Some(digit)) = (self.state, char::from(b).to_digit(16)) {
            if self.digits == MAX_SIZE_DIGITS || self.size >> 60 != 0 {
                return Err(Error::ChunkSize);
            }
            self.digits += 1;
            self.size = self.size << 4 | u64::from(digit);
            if self.size > self.max_body - self.decoded {
                return Err(Error::BodyTooLarge);
            }
            return Ok(Size);
        }
        let value = VALUE[b as usize];
        let next = match (self.state, b) {
            (Size, _) if self.digits == 0 => return Err(Error::ChunkSize),
            (Size | Ext, b'\r') => SizeLf,
            (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
            (Size | SizeSpace, b';') | (ExtQuoted, b'"') => Ext,
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            (Ext, b'"') | (ExtEscape, _) if value => ExtQuoted,
            (ExtQuoted, b'\\') => ExtEscape,
            (Ext, _) if value => Ext,
            (ExtQuoted, _) if value => ExtQuoted,
            (SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                (self.digits, self.extra, self.decoded) = (0, 0, self.decoded + size);
                Some(size).filter(|&size| size > 0).map_or(TrailerStart, Data)
            }
            (Data(0), b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if TCHAR[b as usize] => TrailerName,
            (TrailerName, b':') | (Trailer, _) if value => Trailer,
            (Trailer, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(Error::ChunkSize),
        };
        // Extension bytes: those in its states; trailer bytes: its field lines, CRLF included.
        let max = match (self.state, next) {
            (_, SizeSpace | Ext | ExtQuoted | ExtEscape) => MAX_CHUNK_EXT,
            (TrailerName | Trailer | TrailerLf, _) | (_, TrailerName) => MAX_TRAILER,
            _ => return Ok(next),
        };
        self.extra += 1;
        if self.extra > max {
            return Err(Error::ChunkSize);
        }
        Ok(next)
    }
}

/// The line that starts a chunk of `len` (not 0) bytes, the size in hex and
/// CRLF, written to the start of `out`; returns its length.
fn chunk_head(len: usize, out: &mut [u8; 18]) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4) as usize; // 1 to 16: len > 0
    for (i, digit) in out[..digits].iter_mut().rev().enumerate() {
        *digit = b"0123456789abcdef"[len >> (4 * i) & 15];
    }
    out[digits..digits + 2].copy_from_slice(CHUNK_END);
    digits + 2
}

const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// `data` as body bytes: in a chunked body, one chunk (none if empty).
pub(crate) fn framed<'a>(head: &'a mut [u8; 18], data: &'a [u8], chunked: bool) -> [&'a [u8]; 3] {
    if !chunked || data.is_empty() {
        return [&[], data, &[]];
    }
    let n = chunk_head(data.len(), head);
    [&head[..n], data, CHUNK_END]
}

/// [`framed`] in one buffer.
pub(crate) fn body_bytes(data: &[u8], chunked: bool) -> Vec<u8> {
    framed(&mut [0; 18], data, chunked).concat()
}

/// The length of [`framed`] `len` (not 0) bytes.
pub(crate) fn framed_len(len: usize, chunked: bool) -> usize {
    len + if chunked { chunk_head(len, &mut [0; 18]) + CHUNK_END.len() } else { 0 }
}

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
}
