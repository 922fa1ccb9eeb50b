//! The hub on Redis Streams ([`HubBuilder::redis`]), whose design is
//! told here once.
//!
//! - Publishing: `publish` queues the frame without its id (bounded like
//!   the inbox); the writer thread pipelines each batch as `XADD <stream>
//!   MAXLEN ~ <history events> * d <frame> t <topics>` and keeps it until
//!   Redis acknowledged it, across reconnects. Redis is up only while the
//!   writer's own connection answers (a `PING` on connect and after 1 s
//!   idle, each acknowledged batch): only the writer marks it up, either
//!   thread down on losing its connection; `publish` fails while it is down.
//! - Delivering: only what the reader thread reads back (`XREAD BLOCK 1000
//!   COUNT 15` after the last entry it delivered) goes through the history
//!   and the fan-out, as in-process: every hub delivers Redis's order, ids
//!   `<epoch>-<entry id>`.
//! - The epoch: each round also sends `SET <stream>:epoch <random> NX`,
//!   `GET`. A new value means the stream was lost (flushed, or Redis
//!   restarted empty): the history is cleared (its ids become unknown: the
//!   gap signal), every live subscriber gets the gap signal before any new
//!   event (also one the history served just before the reader noticed),
//!   and the stream is read from its start.
//! - Resuming: an id of the epoch the history lacks (any id before the
//!   epoch is known) goes to the reader: `XRANGE` from it (or from the last
//!   delivered, if older), at most the history's count. If that holds its
//!   entry and reaches the last delivered, the entries not delivered yet
//!   are delivered first and those after the id are its replay, which ends
//!   where the live events start; otherwise (trimmed, Redis down, the
//!   reader's queue full) the gap signal.
//! - Redis down: each thread reconnects after a jittered back-off (100 ms
//!   doubling to 5 s); the reader goes on after the last entry it
//!   delivered. Each change goes to the log hook ([`HubLogKind::Redis`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::fanout::{ShardCommand, Sink, Subscriber};
use super::history::{Coordinator, Entry, History, BATCH};
use super::{Command, Event, HubBuilder, HubLogKind, PublishError, PublishErrorKind, Subscription};
use crate::event::Frame;
use crate::redis::{Conn, RedisError, RedisUrl, Reply};
use crate::util::{jittered, random_u64};

/// What [`HubLogKind::Redis`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisLog<'a> {
    /// The reader's or the writer's connection is up (again).
    Connected {
        /// The writer's, not the reader's.
        writer: bool,
    },
    /// It was lost, or could not be made; retried after a back-off.
    Lost {
        /// The writer's, not the reader's.
        writer: bool,
        /// Why (never holding the password).
        error: &'a RedisError,
    },
    /// The stream's epoch changed: what it held before is lost.
    EpochChanged {
        /// The new epoch.
        epoch: &'a str,
    },
}

/// How long connecting, and each answer, may take (the reader's, blocked
/// in `XREAD`, a second more); the writer sends a `PING` when idle `IDLE`.
const TIMEOUT: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(1);
/// The reconnect back-off: the first wait and the longest (then jittered).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// The largest event published through Redis, as encoded (16 MiB, the
/// parsers' default event bound): 15 (`COUNT`) fit a reply (256 MiB).
const MAX_FRAME: usize = 16 << 20;

/// An event on its way to Redis: its topics and its frame without an id.
type Post = (Vec<String>, Vec<u8>);

/// What the reader tells the coordinator.
pub(super) enum Msg {
    Epoch(String),
    Entries(Vec<Entry>),
    /// A resume the history could not place, and its replay (`None`: gap).
    Resume(Sink, Subscription, Option<Vec<Entry>>),
}

/// The hub handles' side; the threads end once it is dropped.
pub(super) struct Link {
    posts: SyncSender<Post>,
    up: Arc<AtomicBool>,
}

/// The coordinator's side.
pub(super) struct Engine {
    requests: SyncSender<(Sink, Subscription)>,
    up: Weak<AtomicBool>,
    /// While the reader's answer to a resume subscribes: its replay.
    answer: Option<Option<Vec<Entry>>>,
}

/// Starts the reader and the writer if the hub is on Redis; the writer
/// connects first, so that `publish` works at once if Redis is up.
pub(super) fn start(
    config: &Arc<HubBuilder>,
    tx: &SyncSender<Command>,
) -> io::Result<Option<(Link, Engine)>> {
    let Some((url, stream)) = config.redis.clone() else { return Ok(None) };
    let url = url.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let up = Arc::new(AtomicBool::new(false));
    let side = |writer| {
        let (url, config, up) = (url.clone(), config.clone(), Arc::downgrade(&up));
        Side { writer, url, config, up, backoff: None }
    };
    let (posts, posts_rx) = mpsc::sync_channel(config.inbox);
    let (requests, rx) = mpsc::sync_channel(config.inbox);
    let (tx, last, stream2) = (tx.clone(), "0-0".into(), stream.clone());
    let reader = Reader { side: side(false), tx, rx, stream, epoch: String::new(), last };
    let mut writer = side(true);
    let conn = writer.connect();
    let write = move || write(writer, conn, &posts_rx, &stream2);
    thread::Builder::new().name("stdsse-redis-read".into()).spawn(move || reader.run())?;
    thread::Builder::new().name("stdsse-redis-write".into()).spawn(write)?;
    let engine = Engine { requests, up: Arc::downgrade(&up), answer: None };
    Ok(Some((Link { posts, up }, engine)))
}

impl Link {
    /// Queues an event for the writer (waiting while the queue is full);
    /// fails at once while Redis is down.
    pub(super) fn publish(&self, topics: Vec<String>, event: Event) -> Result<(), PublishError> {
        let frame = event.clone().without_id().encode();
        let kind = match () {
            () if !self.up.load(SeqCst) => PublishErrorKind::Unavailable,
            () if frame.len() > MAX_FRAME => PublishErrorKind::TooLarge,
            () => match self.posts.send((topics, frame)) {
                Ok(()) => return Ok(()),
                Err(_) => PublishErrorKind::Closed,
            },
        };
        Err(PublishError(event, kind))
    }
}

/// One thread's connection: how it (re)connects, and what it logs.
struct Side {
    writer: bool,
    url: RedisUrl,
    config: Arc<HubBuilder>,
    /// Whether Redis is up; gone once the hub is.
    up: Weak<AtomicBool>,
    /// The wait before the next attempt; `None` while connected.
    backoff: Option<Duration>,
}

impl Side {
    fn log(&self, what: RedisLog<'_>) {
        self.config.emit(HubLogKind::Redis(what), None);
    }

    fn set_up(&self, up: bool) {
        if let Some(flag) = self.up.upgrade() {
            flag.store(up, SeqCst);
        }
    }

    /// A connection that answered a `PING`, after the back-off if the last
    /// attempt failed.
    fn connect(&mut self) -> Option<Conn> {
        if let Some(wait) = self.backoff {
            thread::sleep(jittered((wait / 2, wait)));
        }
        let timeout = TIMEOUT + Duration::from_secs(u64::from(!self.writer));
        let conn =
            Conn::connect(&self.url, timeout).and_then(|mut c| c.call(&[b"PING"]).map(|_| c));
        match conn {
            Ok(conn) => {
                self.backoff = None;
                if self.writer {
                    self.set_up(true);
                }
                self.log(RedisLog::Connected { writer: self.writer });
                Some(conn)
            }
            Err(error) => self.lost(&error),
        }
    }

    /// Marks Redis down and logs why, once an outage; a longer back-off.
    fn lost<T>(&mut self, error: &RedisError) -> Option<T> {
        if self.backoff.is_none() {
            self.set_up(false);
            self.log(RedisLog::Lost { writer: self.writer, error });
        }
        self.backoff = Some(self.backoff.map_or(BACKOFF.0, |b| (b * 2).min(BACKOFF.1)));
        None
    }
}

/// The writer thread: until the hub is gone, one round trip for each batch
/// (or a `PING` when idle).
fn write(mut side: Side, mut conn: Option<Conn>, posts: &Receiver<Post>, stream: &str) {
    let (s, n) = (stream.as_bytes(), side.config.history_events.max(1).to_string());
    let mut batch = VecDeque::new();
    loop {
        let Some(c) = conn.as_mut() else {
            if side.up.strong_count() == 0 {
                return;
            }
            conn = side.connect();
            continue;
        };
        match posts.recv_timeout(if batch.is_empty() { IDLE } else { Duration::ZERO }) {
            Ok(post) => batch.extend(std::iter::once(post).chain(posts.try_iter().take(BATCH))),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if batch.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => {}
        }
        for (topics, frame) in &batch {
            let (n, t) = (n.as_bytes(), topics.join("\n"));
            c.send(&[b"XADD", s, b"MAXLEN", b"~", n, b"*", b"d", frame, b"t", t.as_bytes()]);
        }
        if batch.is_empty() {
            c.send(&[b"PING"]);
        }
        let n = batch.len().max(1);
        let acked = c
            .flush()
            .and_then(|()| (0..n).try_for_each(|_| c.recv().map(|_| drop(batch.pop_front()))));
        match acked {
            Ok(()) => side.set_up(true),
            Err(error) => conn = side.lost(&error),
        }
    }
}

struct Reader {
    side: Side,
    tx: SyncSender<Command>,
    rx: Receiver<(Sink, Subscription)>,
    stream: String,
    epoch: String,
    /// The newest entry id delivered.
    last: String,
}

impl Reader {
    /// The reader thread: rounds of `XREAD`, the epoch and the resumes
    /// waiting, until the hub is gone.
    fn run(mut self) {
        let mut conn = None;
        while self.side.up.strong_count() > 0 {
            let Some(c) = conn.as_mut() else {
                // No replay while Redis is down: the gap signal.
                while let Some((sink, sub)) =
                    self.side.backoff.and_then(|_| self.rx.try_recv().ok())
                {
                    self.send(Msg::Resume(sink, sub, None));
                }
                conn = self.side.connect();
                continue;
            };
            match self.round(c) {
                Ok(true) => {}
                Ok(false) => return, // the hub closed
                Err(error) => conn = self.side.lost(&error),
            }
        }
    }

    /// Whether the coordinator took `msg` (else the hub is closed).
    fn send(&self, msg: Msg) -> bool {
        self.tx.send(Command::Redis(msg)).is_ok()
    }

    fn round(&mut self, c: &mut Conn) -> Result<bool, RedisError> {
        let (s, key) = (self.stream.as_bytes(), format!("{}:epoch", self.stream));
        c.send(&[
            b"XREAD",
            b"COUNT",
            b"15",
            b"BLOCK",
            b"1000",
            b"STREAMS",
            s,
            self.last.as_bytes(),
        ]);
        c.send(&[b"SET", key.as_bytes(), format!("{:016x}", random_u64()).as_bytes(), b"NX"]);
        c.send(&[b"GET", key.as_bytes()]);
        c.flush()?;
        let (read, _, epoch) = (c.recv()?, c.recv()?, text(c.recv()?));
        let open = if epoch.is_empty() {
            true // flushed between `SET` and `GET`: set next round
        } else if epoch != self.epoch {
            if !self.epoch.is_empty() {
                self.side.log(RedisLog::EpochChanged { epoch: &epoch });
            }
            (self.epoch, self.last) = (epoch.clone(), "0-0".into());
            self.send(Msg::Epoch(epoch)) // what was read is of the old one
        } else {
            // `[[stream, [entry, ...]]]`
            let read = items(read).into_iter().next().and_then(|s| items(s).into_iter().nth(1));
            let read = self.entries(read.map_or(Vec::new(), items));
            self.deliver(read)
        };
        while let Some((sink, sub)) = open.then(|| self.rx.try_recv().ok()).flatten() {
            self.resume(c, sink, sub)?;
        }
        Ok(open)
    }

    /// Delivers the entries after the last delivered.
    fn deliver(&mut self, read: Vec<(String, Entry)>) -> bool {
        let read: Vec<_> = read.into_iter().filter(|e| key(&e.0) > key(&self.last)).collect();
        self.last = read.last().map_or(self.last.clone(), |e| e.0.clone());
        self.send(Msg::Entries(read.into_iter().map(|e| e.1).collect()))
    }

    /// Answers a resume (see the module docs).
    fn resume(&mut self, c: &mut Conn, sink: Sink, sub: Subscription) -> Result<(), RedisError> {
        let id = sub.last_event_id.as_deref().unwrap_or_default();
        let rid = id.strip_prefix(self.epoch.as_str()).and_then(|r| r.strip_prefix('-'));
        let Some(rid) = rid.filter(|r| key(r).is_some()).map(str::to_string) else {
            self.send(Msg::Resume(sink, sub, None));
            return Ok(());
        };
        let start = if key(&rid) < key(&self.last) { &rid } else { &self.last };
        let (s, n) = (self.stream.as_bytes(), (self.side.config.history_events + 1).to_string());
        let (got, error) =
            match c.call(&[b"XRANGE", s, start.as_bytes(), b"+", b"COUNT", n.as_bytes()]) {
                Ok(got) => (self.entries(items(got)), Ok(())),
                Err(error) => (Vec::new(), Err(error)),
            };
        let whole = got.iter().any(|e| e.0 == rid)
            && got.last().is_some_and(|e| key(&e.0) >= key(&self.last));
        let replay = got.iter().filter(|e| key(&e.0) > key(&rid)).map(|e| e.1.clone()).collect();
        let replay = (whole && self.deliver(got)).then_some(replay);
        self.send(Msg::Resume(sink, sub, replay));
        error
    }

    /// Stream entries, `[[id, [field, value, ...]], ...]`, as the hub's
    /// (numbered once delivered): `d` is the frame without an id (comments,
    /// then `event:` if it has a type), which gets `id: <epoch>-<entry id>`
    /// first; `t` holds the topics, one a line.
    fn entries(&self, replies: Vec<Reply>) -> Vec<(String, Entry)> {
        let entry = |reply| {
            let mut parts = items(reply).into_iter();
            let rid = parts.next().map_or(String::new(), text);
            let mut fields = parts.next().map_or(Vec::new(), items).into_iter().map(bytes);
            let (mut d, mut t) = (Vec::new(), Vec::new());
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                *(if name == b"d" {
                    &mut d
                } else if name == b"t" {
                    &mut t
                } else {
                    continue;
                }) = value;
            }
            let first = d.split(|&b| b == b'\n').find(|l| !l.starts_with(b":"));
            let event_type = first.and_then(|l| l.strip_prefix(b"event: "));
            let event_type = event_type.map(|t| String::from_utf8_lossy(t).into_owned());
            let id = format!("{}-{rid}", self.epoch);
            let mut frame = [format!("id: {id}\n").as_bytes(), &d].concat();
            if !frame.ends_with(b"\n\n") {
                frame.push(b'\n');
            }
            let topics = String::from_utf8_lossy(&t)
                .split('\n')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            let (frame, at) = (Frame::from_encoded(frame), Instant::now());
            (rid, Entry { seq: 0, offset: 0, id, topics, event_type, frame, at })
        };
        replies.into_iter().map(entry).collect()
    }
}

fn items(reply: Reply) -> Vec<Reply> {
    if let Reply::Array(Some(items)) = reply {
        items
    } else {
        Vec::new()
    }
}

fn bytes(reply: Reply) -> Vec<u8> {
    if let Reply::Bulk(Some(bytes)) = reply {
        bytes
    } else {
        Vec::new()
    }
}

fn text(reply: Reply) -> String {
    String::from_utf8_lossy(&bytes(reply)).into_owned()
}

/// An entry id `<ms>-<seq>` as numbers, to compare.
fn key(rid: &str) -> Option<(u64, u64)> {
    let (ms, seq) = rid.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Coordinator {
    /// What the reader said.
    pub(super) fn redis(&mut self, msg: Msg) {
        match msg {
            // Lost: the history's ids are unknown from now on, and the live
            // get the gap signal before the new events.
            Msg::Epoch(epoch) => {
                if std::mem::replace(&mut self.epoch, epoch).is_empty() {
                    return;
                }
                self.history = History::new(&self.config);
                self.forward();
                for shard in &self.shards {
                    shard.send(ShardCommand::Gap("unknown-id"), 0, usize::MAX);
                }
            }
            Msg::Entries(entries) => {
                for entry in entries {
                    self.push(Entry { seq: self.next_seq, offset: self.next_offset, ..entry });
                }
            }
            Msg::Resume(sink, sub, replay) => {
                // The replay comes just before what was delivered last.
                let (seq, end) = (self.next_seq - 1, self.next_offset);
                let at =
                    |e: Entry| Entry { seq, offset: end.saturating_sub(e.frame.len() as u64), ..e };
                let replay = replay.map(|r| r.into_iter().map(at).collect());
                if let Some(engine) = &mut self.redis {
                    engine.answer = Some(replay);
                }
                self.subscribe(sink, sub);
                if let Some(engine) = &mut self.redis {
                    engine.answer = None;
                }
            }
        }
    }

    /// Where a resume answered with a replay from Redis starts: after
    /// everything delivered.
    pub(super) fn replayed(&self) -> Option<u64> {
        let answer = self.redis.as_ref().and_then(|e| e.answer.as_ref());
        answer.is_some_and(Option::is_some).then(|| self.next_seq - 1)
    }

    /// A new subscriber, with the replay from Redis queued if the reader
    /// answered one; `None` if its resume went to the reader (see the module
    /// docs; only while Redis is up).
    pub(super) fn subscriber(&mut self, sink: Sink, sub: Subscription) -> Option<Subscriber> {
        let unplaced = |id: &str| {
            (self.epoch.is_empty() || self.is_hub_id(id)) && self.history.seq_of(id).is_none()
        };
        let deferred = match &self.redis {
            Some(Engine { requests, up, answer: None })
                if up.upgrade().is_some_and(|up| up.load(SeqCst))
                    && sub.last_event_id.as_deref().is_some_and(unplaced) =>
            {
                requests.try_send((sink, sub))
            }
            _ => Err(TrySendError::Full((sink, sub))),
        };
        let (sink, sub) = match deferred {
            Ok(()) => return None,
            Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => back,
        };
        let mut new = Subscriber::new(sink, sub, &self.config);
        for entry in self.redis.iter().flat_map(|e| e.answer.iter().flatten().flatten()) {
            let want = new.wants(entry, &self.config);
            new.offer(entry, want, want);
        }
        Some(new)
    }
}
