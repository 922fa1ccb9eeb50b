//! A flushing writer of events.
//!
//! The standard warns that "block buffering or line buffering with different
//! expected line endings can cause delays in event dispatch" (9.2.7).
//! [`EventWriter`] therefore encodes each event into one buffer, hands it to
//! the inner writer with a single `write_all`, and flushes at once, so an
//! event never waits in a buffer (a `BufWriter`, a pipe, stdout) for the next
//! one.

use std::io::{self, Write};
use std::time::Duration;

use crate::event::{Event, Frame};

/// Writes events, comments and retry hints to any [`io::Write`], flushing
/// after each one.
///
/// ```
/// use stdsse::{Event, EventWriter};
///
/// let mut out = EventWriter::new(Vec::new());
/// out.comment("connected")?;
/// out.send(&Event::new().data("hello"))?;
/// assert_eq!(out.get_ref(), b": connected\ndata: hello\n\n");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Errors from the inner writer are returned as they are; after an error the
/// stream may hold part of an event, so the usual answer is to drop it (for
/// a socket, the client sees the connection end and reconnects).
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> EventWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> EventWriter<W> {
        EventWriter {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }

    /// Encodes and writes one event, then flushes.
    pub fn send(&mut self, event: &Event) -> io::Result<()> {
        self.buf.clear();
        event.encode_into(&mut self.buf);
        self.flush_buf()
    }

    /// Writes an event that was encoded once (for example by a broadcast),
    /// then flushes.
    pub fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_flush(frame.as_bytes())
    }

    /// Writes comment lines (`: text`, several lines if the text has line
    /// breaks), then flushes. Clients ignore them; proxies see traffic. No
    /// empty line follows: it would dispatch nothing (see [`Event`]).
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        self.send(&Event::new().comment(text))
    }

    /// Writes the keep-alive, an empty comment line (`:`), then flushes.
    pub fn keep_alive(&mut self) -> io::Result<()> {
        self.write_flush(b":\n")
    }

    /// Writes a retry hint on its own line (`retry: <ms>`, no empty line
    /// after it, see [`Event`]), then flushes. It sets the client's
    /// reconnection time when the line is read.
    pub fn retry(&mut self, delay: Duration) -> io::Result<()> {
        self.send(&Event::new().retry(delay))
    }

    /// Bytes handed to the inner writer so far (whole events only).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably. Writing to it directly can break the
    /// stream's framing; it is meant for settings such as timeouts.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the inner writer. Nothing is buffered here, so nothing is lost.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_flush(&buf);
        self.buf = buf;
        result
    }

    fn write_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.inner.flush()
    }
}
