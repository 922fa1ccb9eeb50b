//! `EventWriter`: one write and one flush per event.

use std::io::{self, Write};
use std::time::Duration;
use stdsse::{Event, EventWriter, Frame};

/// Records every call so the tests can count writes and flushes.
#[derive(Default)]
struct Recorder {
    writes: Vec<Vec<u8>>,
    flushes: usize,
    fail: bool,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fail {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
        }
        self.writes.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn one_write_and_one_flush_per_event() {
    let mut w = EventWriter::new(Recorder::default());
    let event = Event::new().data("a\nb\nc").id("1").unwrap();
    w.send(&event).unwrap();
    w.comment("x\ny").unwrap();
    w.retry(Duration::from_secs(2)).unwrap();
    w.keep_alive().unwrap();
    w.send_frame(&Frame::from(&event)).unwrap();
    let r = w.get_ref();
    assert_eq!(r.writes.len(), 5);
    assert_eq!(r.flushes, 5);
    assert_eq!(r.writes[0], b"id: 1\ndata: a\ndata: b\ndata: c\n\n");
    assert_eq!(r.writes[1], b": x\n: y\n");
    assert_eq!(r.writes[2], b"retry: 2000\n");
    assert_eq!(r.writes[3], b":\n");
    assert_eq!(r.writes[4], r.writes[0]);
    let total: usize = r.writes.iter().map(Vec::len).sum();
    assert_eq!(w.bytes_written(), total as u64);
}

#[test]
fn errors_are_returned() {
    let mut w = EventWriter::new(Recorder { fail: true, ..Recorder::default() });
    let err = w.send(&Event::new().data("x")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(w.bytes_written(), 0);
}

#[test]
fn buffered_inner_writer_is_flushed() {
    let mut w = EventWriter::new(io::BufWriter::new(Vec::new()));
    w.send(&Event::new().data("now")).unwrap();
    assert_eq!(w.get_ref().get_ref(), b"data: now\n\n");
    assert_eq!(w.into_inner().into_inner().unwrap(), b"data: now\n\n");
}
