//! A flushing writer of events. The standard warns that "block buffering or
//! line buffering with different expected line endings can cause delays in
//! event dispatch" (9.2.7), so each event is one `write_all` and one flush.

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
/// After an error from the inner writer the stream may hold part of an
/// event: drop it (a client then reconnects).
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> EventWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> EventWriter<W> {
        EventWriter { inner, buf: Vec::new(), written: 0 }
    }

    /// Encodes and writes one event, then flushes.
    pub fn send(&mut self, event: &Event) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        event.encode_into(&mut buf);
        let result = self.write_flush(&buf);
        self.buf = buf;
        result
    }

    /// Writes an event encoded once, then flushes.
    pub fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_flush(frame.as_bytes())
    }

    /// Writes comment lines (`: text`), then flushes.
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        self.send(&Event::new().comment(text))
    }

    /// Writes the keep-alive (`:`), then flushes.
    pub fn keep_alive(&mut self) -> io::Result<()> {
        self.write_flush(b":\n")
    }

    /// Writes a `retry: <ms>` line, then flushes.
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

    /// The inner writer, mutably (for settings; writing can break framing).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the inner writer (nothing is buffered).
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn write_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.inner.flush()
    }
}
