//! The hub on Redis Streams ([`HubBuilder::redis`]): a writer thread
//! pipelines `XADD`s; a reader thread reads the stream back (`XREAD`) and
//! hands it to the coordinator, so every instance delivers the same events
//! in Redis's order, through the same history and fan-out as in-process.
//! A resume that the local history cannot place is answered by the reader
//! from `XRANGE`, in its order of reading, so the hand-over to the live
//! events has no gap and no duplicate.
//!
//! Ids are `<epoch>-<entry id>`: the stream's epoch is a random value at
//! `<stream>:epoch`, set if absent (`SET NX`) and read on every round trip.
//! A new epoch means the stream was lost (flushed, or Redis restarted
//! without persistence): a resume from an older id gets the gap signal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use super::fanout::{Sink, Subscriber};
use super::history::{Coordinator, Entry};
use super::{Command, HubBuilder, HubLogKind, PublishError, PublishErrorKind};
use super::{Event, Subscription};
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
    /// It was lost, or could not be made; retried with a back-off.
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

/// How long connecting, and each answer, may take; the reader's `XREAD`
/// blocks 1 s within its own limit of 3 s.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The reconnect back-off: the first wait and the longest (then jittered).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// The largest event published through Redis, as encoded (16 MiB, the
/// parsers' default event bound), so that `COUNT` entries fit in a reply.
const MAX_FRAME: usize = 16 << 20;
/// Entries per `XREAD`: 15 of the largest fit the reply bound (256 MiB).
const COUNT: &str = "15";

/// An event read from Redis: its id, its topics and its frame.
pub(super) type Raw = (String, Vec<String>, Frame);

/// What the reader tells the coordinator.
pub(super) enum Msg {
    Epoch(String),
    Entries(Vec<Raw>),
    /// A resume the local history could not place, with the events after
    /// its id through the newest delivered (`None`: they are not all there).
    Resume(Sink, Subscription, Option<Vec<Raw>>),
}

/// The publishing side, held by the hub's handles.
pub(super) struct Link {
    tx: SyncSender<(Vec<String>, Vec<u8>)>,
    up: Arc<AtomicBool>,
    /// The threads end once this is dropped.
    _alive: Arc<()>,
}

/// The coordinator's side.
pub(super) struct Engine {
    requests: SyncSender<(Sink, Subscription)>,
    /// While the reader's answer to a resume subscribes: its replay.
    staged: Option<Option<Vec<Raw>>>,
}

/// Starts the reader and the writer.
pub(super) fn start(
    config: &Arc<HubBuilder>,
    url: RedisUrl,
    stream: String,
    tx: SyncSender<Command>,
) -> std::io::Result<(Link, Engine)> {
    let (up, alive) = (Arc::new(AtomicBool::new(true)), Arc::new(()));
    let (publish_tx, publish_rx) = mpsc::sync_channel(config.inbox);
    let (requests, requests_rx) = mpsc::sync_channel(config.inbox);
    let mut reader = Reader {
        tx,
        config: config.clone(),
        requests: requests_rx,
        key: format!("{stream}:epoch"),
        stream: stream.clone(),
        epoch: String::new(),
        last: "0-0".into(),
        replay_count: (config.history_events + 1).to_string(),
        alive: Arc::downgrade(&alive),
    };
    let mut writer = Writer {
        rx: publish_rx,
        batch: VecDeque::new(),
        stream,
        maxlen: config.history_events.max(1).to_string(),
        alive: Arc::downgrade(&alive),
    };
    let (c, u) = (config.clone(), up.clone());
    let url2 = url.clone();
    thread::Builder::new()
        .name("stdsse-redis-read".into())
        .spawn(move || supervise(&mut reader, &url2, &c, &u))?;
    let (c, u) = (config.clone(), up.clone());
    thread::Builder::new()
        .name("stdsse-redis-write".into())
        .spawn(move || supervise(&mut writer, &url, &c, &u))?;
    let link = Link { tx: publish_tx, up, _alive: alive };
    let staged = None;
    Ok((link, Engine { requests, staged }))
}

impl Link {
    /// Queues an event for the writer (waiting while the queue is full);
    /// fails at once while Redis is known to be down.
    pub(super) fn publish(&self, topics: Vec<String>, event: Event) -> Result<(), PublishError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(PublishError(event, PublishErrorKind::Unavailable));
        }
        let frame = event.clone().without_id().encode();
        if frame.len() > MAX_FRAME {
            return Err(PublishError(event, PublishErrorKind::TooLarge));
        }
        let sent = self.tx.send((topics, frame));
        sent.map_err(|_| PublishError(event, PublishErrorKind::Closed))
    }
}

/// A thread's work on one connection, and what it does between them.
trait Session {
    const WRITER: bool;
    /// Works until the connection fails, or `Ok` when the hub is gone.
    fn run(&mut self, conn: &mut Conn) -> Result<(), RedisError>;
    /// Between connections: whether to go on.
    fn down(&mut self) -> bool;
}

/// Connects and runs `session` until the hub is gone, reconnecting after a
/// jittered back-off (100 ms doubling to 5 s); each change goes to the log.
fn supervise<S: Session>(session: &mut S, url: &RedisUrl, config: &HubBuilder, up: &AtomicBool) {
    let (mut backoff, mut logged) = (BACKOFF.0, false);
    let writer = S::WRITER;
    let timeout = TIMEOUT + Duration::from_secs(if writer { 0 } else { 1 });
    loop {
        let result = Conn::connect(url, timeout).and_then(|mut conn| {
            up.store(true, Ordering::SeqCst);
            config.emit(HubLogKind::Redis(RedisLog::Connected { writer }), None);
            (backoff, logged) = (BACKOFF.0, false);
            session.run(&mut conn)
        });
        let Err(error) = result else { return };
        up.store(false, Ordering::SeqCst);
        if !std::mem::replace(&mut logged, true) {
            let lost = RedisLog::Lost { writer, error: &error };
            config.emit(HubLogKind::Redis(lost), None);
        }
        if !session.down() {
            return;
        }
        thread::sleep(jittered((backoff / 2, backoff)));
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

struct Writer {
    rx: Receiver<(Vec<String>, Vec<u8>)>,
    /// Taken from the queue, not yet acknowledged by Redis: kept across a
    /// reconnect, so an event whose `publish` succeeded is not lost.
    batch: VecDeque<(Vec<String>, Vec<u8>)>,
    stream: String,
    maxlen: String,
    alive: Weak<()>,
}

impl Session for Writer {
    const WRITER: bool = true;

    fn run(&mut self, conn: &mut Conn) -> Result<(), RedisError> {
        loop {
            if self.batch.is_empty() {
                let Ok(first) = self.rx.recv() else {
                    return Ok(());
                };
                self.batch.push_back(first);
                self.batch.extend(self.rx.try_iter().take(super::history::BATCH));
            }
            for (topics, frame) in &self.batch {
                let (s, n, t) = (self.stream.as_bytes(), self.maxlen.as_bytes(), topics.join("\n"));
                conn.send(&[b"XADD", s, b"MAXLEN", b"~", n, b"*", b"d", frame, b"t", t.as_bytes()]);
            }
            conn.flush()?;
            for _ in 0..self.batch.len() {
                recv(conn)?;
                self.batch.pop_front();
            }
        }
    }

    fn down(&mut self) -> bool {
        self.alive.strong_count() > 0
    }
}

struct Reader {
    tx: SyncSender<Command>,
    config: Arc<HubBuilder>,
    requests: Receiver<(Sink, Subscription)>,
    stream: String,
    key: String,
    epoch: String,
    /// The newest entry id delivered.
    last: String,
    replay_count: String,
    alive: Weak<()>,
}

impl Session for Reader {
    const WRITER: bool = false;

    fn run(&mut self, conn: &mut Conn) -> Result<(), RedisError> {
        while self.alive.strong_count() > 0 {
            let (s, last) = (self.stream.as_bytes(), self.last.as_bytes());
            conn.send(&[
                b"XREAD",
                b"COUNT",
                COUNT.as_bytes(),
                b"BLOCK",
                b"1000",
                b"STREAMS",
                s,
                last,
            ]);
            let candidate = format!("{:016x}", random_u64());
            conn.send(&[b"SET", self.key.as_bytes(), candidate.as_bytes(), b"NX"]);
            conn.send(&[b"GET", self.key.as_bytes()]);
            conn.flush()?;
            let (read, _, epoch) = (recv(conn)?, recv(conn)?, recv(conn)?);
            let epoch = String::from_utf8_lossy(&bytes(epoch)).into_owned();
            let sent = if epoch != self.epoch {
                // Read the new stream from its start; drop what was read.
                if !self.epoch.is_empty() {
                    let log = RedisLog::EpochChanged { epoch: &epoch };
                    self.config.emit(HubLogKind::Redis(log), None);
                }
                (self.epoch, self.last) = (epoch.clone(), "0-0".into());
                self.send(Msg::Epoch(epoch))
            } else {
                let read = items(read).into_iter().next().map(items);
                let entries = read.and_then(|s| s.into_iter().nth(1)).map(items);
                let entries = entries.unwrap_or_default().into_iter();
                let entries: Vec<_> = entries.map(|e| entry(&self.epoch, e)).collect();
                self.last = entries.last().map_or(self.last.clone(), |e| e.0.clone());
                self.send(Msg::Entries(entries.into_iter().map(|e| e.1).collect()))
            };
            if !sent {
                return Ok(());
            }
            while let Ok((sink, sub)) = self.requests.try_recv() {
                self.resume(conn, sink, sub)?;
            }
        }
        Ok(())
    }

    /// No replay while Redis is down: those waiting get the gap signal.
    fn down(&mut self) -> bool {
        let mut alive = self.alive.strong_count() > 0;
        while let Ok((sink, sub)) = self.requests.try_recv() {
            alive &= self.send(Msg::Resume(sink, sub, None));
        }
        alive
    }
}

impl Reader {
    /// Whether the coordinator took `msg` (else the hub is closed).
    fn send(&self, msg: Msg) -> bool {
        self.tx.send(Command::Redis(msg)).is_ok()
    }

    /// Answers a resume with the entries from its id through the newest
    /// read, if Redis still holds them all (its id first: nothing before
    /// was trimmed); those newer than the last delivered are delivered
    /// first, so the replay ends where the live events start.
    fn resume(&mut self, conn: &mut Conn, sink: Sink, sub: Subscription) -> Result<(), RedisError> {
        let id = sub.last_event_id.as_deref().unwrap_or_default();
        let rid = (id.strip_prefix(self.epoch.as_str()))
            .and_then(|r| r.strip_prefix('-'))
            .filter(|r| key(r).is_some())
            .unwrap_or("-");
        let (s, n) = (self.stream.as_bytes(), self.replay_count.as_bytes());
        let got = conn.call(&[b"XRANGE", s, rid.as_bytes(), b"+", b"COUNT", n])?;
        let got: Vec<_> = (items(got).into_iter()).map(|e| entry(&self.epoch, e)).collect();
        let whole = got.first().is_some_and(|e| e.0 == rid)
            && got.last().is_some_and(|e| key(&e.0) >= key(&self.last));
        if !whole {
            self.send(Msg::Resume(sink, sub, None));
            return Ok(());
        }
        let newer = got.iter().filter(|e| key(&e.0) > key(&self.last));
        let newer: Vec<_> = newer.map(|e| e.1.clone()).collect();
        self.last = got.last().map_or(self.last.clone(), |e| e.0.clone());
        let replay = got.into_iter().skip(1).map(|e| e.1).collect();
        let _ = self.send(Msg::Entries(newer)) && self.send(Msg::Resume(sink, sub, Some(replay)));
        Ok(())
    }
}

/// The next reply; an error reply is an error.
fn recv(conn: &mut Conn) -> Result<Reply, RedisError> {
    match conn.recv()? {
        Reply::Error(text) => Err(RedisError::Server(text)),
        reply => Ok(reply),
    }
}

fn items(reply: Reply) -> Vec<Reply> {
    match reply {
        Reply::Array(Some(items)) => items,
        _ => Vec::new(),
    }
}

fn bytes(reply: Reply) -> Vec<u8> {
    match reply {
        Reply::Bulk(Some(bytes)) => bytes,
        _ => Vec::new(),
    }
}

/// An entry id `<ms>-<seq>` as numbers, to compare.
fn key(rid: &str) -> Option<(u64, u64)> {
    let (ms, seq) = rid.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A stream entry, `[id, [field, value, ...]]`: its entry id, and the
/// event with the id `<epoch>-<entry id>` put before `d` (the frame
/// without an id) and `t` its topics (one a line).
fn entry(epoch: &str, reply: Reply) -> (String, Raw) {
    let mut parts = items(reply).into_iter();
    let rid = String::from_utf8_lossy(&parts.next().map(bytes).unwrap_or_default()).into_owned();
    let mut fields = parts.next().map(items).unwrap_or_default().into_iter().map(bytes);
    let (mut d, mut t) = (Vec::new(), Vec::new());
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match &name[..] {
            b"d" => d = value,
            b"t" => t = value,
            _ => {}
        }
    }
    let id = format!("{epoch}-{rid}");
    let mut frame = format!("id: {id}\n").into_bytes();
    frame.extend(d);
    if !frame.ends_with(b"\n\n") {
        frame.push(b'\n');
    }
    let topics = String::from_utf8_lossy(&t);
    let topics = topics.split('\n').filter(|t| !t.is_empty());
    let raw = (id, topics.map(str::to_string).collect(), Frame::from_encoded(frame));
    (rid, raw)
}

impl Coordinator {
    /// What the reader said.
    pub(super) fn redis(&mut self, msg: Msg) {
        match msg {
            Msg::Epoch(epoch) => self.epoch = epoch,
            Msg::Entries(raws) => {
                for raw in &raws {
                    self.push(self.entry(raw, self.next_seq, self.next_offset));
                }
            }
            Msg::Resume(sink, sub, replay) => {
                self.prune_history();
                let id = sub.last_event_id.as_deref().unwrap_or_default();
                let local = self.history.seq_of(id).is_some();
                self.set_staged(Some(replay.filter(|_| !local)));
                self.subscribe(sink, sub);
                self.set_staged(None);
            }
        }
    }

    fn set_staged(&mut self, staged: Option<Option<Vec<Raw>>>) {
        if let Some(engine) = &mut self.redis {
            engine.staged = staged;
        }
    }

    /// Hands a resume of this epoch that the local history cannot place to
    /// the reader; gives the subscription back otherwise (or if the reader
    /// is too far behind: then it gets the gap signal).
    pub(super) fn defer(&mut self, sink: Sink, sub: Subscription) -> Option<(Sink, Subscription)> {
        let Some(engine) = &self.redis else {
            return Some((sink, sub));
        };
        let id = sub.last_event_id.as_deref();
        let unplaced = id.is_some_and(|id| self.is_hub_id(id) && self.history.seq_of(id).is_none());
        if engine.staged.is_some() || !unplaced {
            return Some((sink, sub));
        }
        match engine.requests.try_send((sink, sub)) {
            Ok(()) => None,
            Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => Some(back),
        }
    }

    /// Where a resume starts on Redis: after its retained event of this
    /// epoch, or, with a replay from Redis, after everything delivered.
    pub(super) fn redis_resume_seq(&self, engine: &Engine, id: &str) -> Option<u64> {
        let local = self.is_hub_id(id).then(|| self.history.seq_of(id)).flatten();
        let replayed = matches!(engine.staged, Some(Some(_)));
        local.or(replayed.then(|| self.next_seq - 1))
    }

    /// Queues the replay from Redis (it comes before any retained event).
    pub(super) fn offer_replay(&self, sub: &mut Subscriber) {
        let Some(Engine { staged: Some(Some(replay)), .. }) = &self.redis else {
            return;
        };
        for raw in replay {
            let offset = self.next_offset.saturating_sub(raw.2.len() as u64);
            let entry = self.entry(raw, self.next_seq - 1, offset);
            let want = sub.wants(&entry, &self.config);
            sub.offer(&entry, want, want);
        }
    }

    fn entry(&self, (id, topics, frame): &Raw, seq: u64, offset: u64) -> Entry {
        // The frame is `id:`, comments, then `event:` if it has a type.
        let lines = frame.as_bytes().split(|&b| b == b'\n').skip(1);
        let first = lines.into_iter().find(|l| !l.starts_with(b":"));
        let event_type = first.and_then(|l| l.strip_prefix(b"event: "));
        Entry {
            seq,
            offset,
            id: id.clone(),
            topics: topics.clone(),
            event_type: event_type.map(|t| String::from_utf8_lossy(t).into_owned()),
            frame: frame.clone(),
            at: std::time::Instant::now(),
        }
    }
}
