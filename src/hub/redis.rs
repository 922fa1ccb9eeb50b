//! The hub on Redis Streams ([`HubBuilder::redis`]), its design told once. `publish` queues the
//! frame without its id (bounded like the inbox); the writer pipelines each batch as `TRIM`
//! scripts of up to 64 entries `d <frame> t <topics>`, then a `PING`, kept until acknowledged.
//! Redis is up while the writer's connection answers (a `PING` also on connect and after 1 s
//! idle). Only what the reader reads back (`XREAD BLOCK 1000 COUNT 15` after the last entry
//! delivered) goes through the history and fan-out: one order on every hub, ids
//! `<epoch>-<entry id>`; what the stream held when the hub was built is history, not news. Each
//! round also sends `SET <stream>:epoch <random> NX` and `GET`: a new epoch (the stream lost)
//! clears the history, gives every live subscriber the gap signal before any new event, and
//! reads the stream from its start; an entry deleted unread does so but for the start. A resume
//! the history cannot place goes to the reader: `XRANGE` from its id (or the last delivered, if
//! older); if its id is there (or a topic's newest lost), none of its topics lost a later one,
//! and the range reaches the last delivered, the rest after the id is its replay; else the gap
//! signal.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use std::{io, thread};

use super::fanout::{ShardCommand, Sink, Subscriber};
use super::history::{drain, Coordinator, Entry, History, BATCH};
use super::{Command, Event, HubBuilder, HubLogKind, PublishError, PublishErrorKind, Subscription};
use crate::event::Frame;
use crate::redis::{Conn, RedisError, RedisUrl, Reply};
use crate::scan::parse_decimal;
use crate::util::{jittered, random_u64, spawn};

/// What [`HubLogKind::Redis`] reports (`writer`: the writer's connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum RedisLog<'a> {
    /// The connection is up (again), verified by a round trip.
    Connected { writer: bool },
    /// Lost, or not made (why: never the password); retried after a back-off.
    Lost { writer: bool, error: &'a RedisError },
    /// The stream's epoch changed: what it held before is lost.
    EpochChanged { epoch: &'a str },
}

/// How long connecting, and each answer, may take (the reader's: 1 s more).
const TIMEOUT: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(1);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Adds entries (`KEYS[1]`: the stream; `ARGV`: the bounds in all and per topic, then frame and
/// topics of each); deletes the oldest past one once 3 s old (every hub has read it; one
/// further behind gets the gap signal), at most 18 more than twice what it adds.
/// `<stream>:lost` keeps the newest deleted of each topic (`""`: everyone's), of all (`"\n"`),
/// and, past twice the count, of all as every topic's (`"\r"`); `:t:<topic>` lists a topic's
/// ids, `:over` the topics past the bound.
const TRIM: &str = r"local s, total, cap, lost = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[1] .. ':lost'
local now = redis.call('TIME'); local limit = now[1] * 1000 + math.floor(now[2] / 1000) - 3000
local budget = #ARGV + 16
local function due(id) return id and budget > 0 and tonumber(id:match('^%d+')) < limit end
local function key(id) return ('%20s%20s'):format(id:match('(%d+)-(%d+)')) end
local function mark(f, id) local m = redis.call('HGET', lost, f)
  if not m or key(id) > key(m) then redis.call('HSET', lost, f, id) end end
local function lose(e)
  budget = budget - 1
  redis.call('XDEL', s, e[1])
  mark('\n', e[1])
  for t in ((e[2][4] or '') .. '\n'):gmatch('([^\n]*)\n') do mark(t, e[1]); redis.call('LREM', s .. ':t:' .. t, 1, e[1]) end
  if redis.call('HLEN', lost) > 2 * math.max(total, 32) then
    local all = redis.call('HGET', lost, '\n'); redis.call('DEL', lost); redis.call('HSET', lost, '\n', all, '\r', all)
  end
end
for i = 3, #ARGV, 2 do
  local id = redis.call('XADD', s, '*', 'd', ARGV[i], 't', ARGV[i + 1])
  for t in ARGV[i + 1]:gmatch('[^\n]+') do
    if redis.call('RPUSH', s .. ':t:' .. t, id) > cap then redis.call('SADD', s .. ':over', t) end
  end
end
for _, t in ipairs(redis.call('SMEMBERS', s .. ':over')) do
  local list = s .. ':t:' .. t
  while redis.call('LLEN', list) > cap and due(redis.call('LINDEX', list, 0)) do
    local old = redis.call('LINDEX', list, 0)
    local e = redis.call('XRANGE', s, old, old)[1]
    if e then lose(e) else redis.call('LPOP', list) end
  end
  if redis.call('LLEN', list) <= cap then redis.call('SREM', s .. ':over', t) end
end
while redis.call('XLEN', s) > total do
  local e = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)[1]
  if due(e[1]) then lose(e) else break end
end";

/// The largest event published through Redis, as encoded (16 MiB, the
/// parsers' default event bound): 15 (`COUNT`) fit a reply (256 MiB).
const MAX_FRAME: usize = 16 << 20;

type Post = (String, Vec<u8>);
type Res<T = bool> = Result<T, RedisError>;
type Started = io::Result<Option<((Link, Receiver<Command>), Engine)>>;

/// From the reader: the epoch, entries read, whether one was deleted unread and (read from the
/// start) the newest deleted before, up to which the history cannot place an id, and how many
/// came before the hub was built (history, not news); or a resume's replay. To the writer: a
/// post.
pub(super) enum Msg {
    Entries(String, Vec<Entry>, bool, Option<String>, usize),
    Resume(Sink, Subscription, Option<Vec<Entry>>),
    Post(String, Vec<u8>),
}

/// The handles' side: the writer's queue, whether Redis is up (the threads end with it).
pub(super) type Link = (SyncSender<Command>, Arc<AtomicBool>);

pub(super) struct Engine {
    /// `Command::Subscribe`s, to the reader.
    requests: SyncSender<Command>,
    up: Weak<AtomicBool>,
    answer: Option<Vec<Entry>>,
    unsure: String,
}

/// Starts the threads if on Redis; the writer connects first (`publish` works).
pub(super) type Start = fn(&Arc<HubBuilder>, &SyncSender<Command>) -> Started;

pub(super) fn start(config: &Arc<HubBuilder>, tx: &SyncSender<Command>) -> Started {
    let Some((url, stream, _)) = config.redis.clone() else { return Ok(None) };
    let url = url.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let up = Arc::new(AtomicBool::new(false));
    let side = |writer| {
        let (url, config, up) = (url.clone(), config.clone(), Arc::downgrade(&up));
        Side { writer, url, config, up, backoff: None }
    };
    let ((posts, posts_rx), (requests, rx), (loaded, loading)) =
        (mpsc::sync_channel(config.inbox), mpsc::sync_channel(config.inbox), mpsc::sync_channel(0));
    let (tx, epoch, last, loaded) = (tx.clone(), String::new(), "0-0".to_string(), Some(loaded));
    let (mut writer, s) = (side(true), stream.as_bytes());
    let mut conn = writer.connect();
    let newest =
        conn.as_mut().and_then(|c| c.call(&[b"XREVRANGE", s, b"+", b"-", b"COUNT", b"1"]).ok());
    let first = |reply| items(reply).into_iter().next(); // `[[id, fields]]`
    let backlog = newest.and_then(first).and_then(first).map_or(String::new(), |id| text(&id));
    let mut reader = Reader { tx, rx, stream: stream.clone(), epoch, last, backlog, loaded };
    let (total, cap) = (config.history_events.max(1), config.topic_bound().0);
    let head = ["EVAL", TRIM, "1", &stream, &total.to_string(), &cap.to_string()].map(Vec::from);
    let mut batch = Vec::<Post>::new();
    // A round: the batch and a `PING`; `false`: the hub gone, queue drained.
    let write = move |side: &Side, c: Option<&mut Conn>| -> Res {
        let Some(c) = c else { return Ok(true) };
        let post = |c| if let Command::Redis(Msg::Post(t, f)) = c { Some((t, f)) } else { None };
        let wait = if batch.is_empty() { IDLE } else { Duration::ZERO };
        // A batch Redis keeps refusing stays, and stays within `BATCH`.
        let (room, add) = (BATCH - batch.len(), |c| Ok(()).map(|()| batch.extend(post(c))));
        let ok = room == 0 || drain(&posts_rx, wait, room, add).is_ok();
        if !ok && batch.is_empty() {
            return Ok(false);
        }
        for posts in batch.chunks(64) {
            let posts = posts.iter().flat_map(|(t, frame)| [frame.as_slice(), t.as_bytes()]);
            c.send(&head.iter().map(Vec::as_slice).chain(posts).collect::<Vec<_>>());
        }
        c.send(&[b"PING"]);
        c.flush()?;
        while !batch.is_empty() {
            c.recv().map(|_| drop(batch.drain(..batch.len().min(64))))?;
        }
        c.recv()?;
        side.set_up(true);
        Ok(true)
    };
    let (reader_side, write) = (side(false), move || writer.run(conn, write));
    let read = move || reader_side.run(None, |side, c| reader.round(side, c));
    spawn("stdsse-redis-read".into(), None, read)?;
    spawn("stdsse-redis-write".into(), None, write)?;
    let engine = Engine { requests, up: Arc::downgrade(&up), answer: None, unsure: String::new() };
    Ok(Some((((posts, up), loading), engine)))
}

/// Queues an event for the writer (waits while the queue is full).
pub(super) fn publish(link: &Link, topics: Vec<String>, e: Event) -> Result<(), PublishError> {
    let frame = Event { id: None, ..e.clone() }.encode();
    let kind = if !link.1.load(SeqCst) {
        PublishErrorKind::Unavailable
    } else if frame.len() > MAX_FRAME {
        PublishErrorKind::TooLarge
    } else {
        let post = Command::Redis(Msg::Post(topics.join("\n"), frame));
        return link.0.send(post).map_err(|_| PublishError(e, PublishErrorKind::Closed));
    };
    Err(PublishError(e, kind))
}

/// One thread's connection; `up` is gone with the hub, `backoff` `None` if connected.
struct Side {
    writer: bool,
    url: RedisUrl,
    config: Arc<HubBuilder>,
    up: Weak<AtomicBool>,
    backoff: Option<Duration>,
}

impl Side {
    /// Sets whether Redis is up; `false`: the hub is gone.
    fn set_up(&self, up: bool) -> bool {
        self.up.upgrade().map(|flag| flag.store(up, SeqCst)).is_some()
    }

    /// Rounds, reconnecting (`None`: not connected), until `false` or the hub is gone.
    #[inline(never)]
    fn run(mut self, mut c: Option<Conn>, mut f: impl FnMut(&Self, Option<&mut Conn>) -> Res) {
        loop {
            match f(&self, c.as_mut()) {
                Ok(false) => return,
                Ok(true) if c.is_some() => {}
                Ok(true) if self.up.strong_count() == 0 => return,
                Ok(true) => c = self.connect(),
                Err(error) => c = self.lost(&error),
            }
        }
    }

    /// A connection that answered a `PING` (after the back-off, if any).
    #[inline(never)]
    fn connect(&mut self) -> Option<Conn> {
        thread::sleep(self.backoff.map_or(Duration::ZERO, |wait| jittered((wait / 2, wait))));
        let timeout = TIMEOUT + Duration::from_secs(u64::from(!self.writer));
        let mut conn = Conn::connect(&self.url, timeout).map_err(|e| self.lost(&e)).ok()?;
        conn.call(&[b"PING"]).map_err(|e| self.lost(&e)).ok()?;
        self.backoff = None;
        let _ = self.writer && self.set_up(true);
        self.config.emit(HubLogKind::Redis(RedisLog::Connected { writer: self.writer }), None);
        Some(conn)
    }

    /// Marks Redis down and logs why, once an outage; a longer back-off.
    fn lost(&mut self, error: &RedisError) -> Option<Conn> {
        if self.backoff.is_none() && self.set_up(false) {
            self.config
                .emit(HubLogKind::Redis(RedisLog::Lost { writer: self.writer, error }), None);
        }
        self.backoff = Some(self.backoff.map_or(BACKOFF.0, |b| (b * 2).min(BACKOFF.1)));
        None
    }
}

/// The reader's state: `last` is the newest entry id delivered, `backlog`
/// the newest when the hub was built; `loaded` ends once that is delivered (`build` waits).
struct Reader {
    tx: SyncSender<Command>,
    rx: Receiver<Command>,
    stream: String,
    epoch: String,
    last: String,
    backlog: String,
    loaded: Option<SyncSender<Command>>,
}

impl Reader {
    /// Whether the coordinator took `msg` (not: the hub is closed).
    fn send(&self, msg: Msg) -> bool {
        self.tx.send(Command::Redis(msg)).is_ok()
    }

    /// `XREAD`, the epoch, the resumes waiting (down: the gap signal).
    #[inline(never)]
    fn round(&mut self, side: &Side, c: Option<&mut Conn>) -> Res {
        self.loaded = self.loaded.take().filter(|_| key(&self.last) < key(&self.backlog));
        let Some(c) = c else {
            while let Some(Command::Subscribe(sink, sub)) =
                side.backoff.and_then(|_| self.rx.try_recv().ok())
            {
                self.send(Msg::Resume(sink, sub, None));
            }
            return Ok(true);
        };
        let (s, epoch_key, last) =
            (self.stream.as_bytes(), format!("{}:epoch", self.stream), &self.last);
        c.send(&[b"XREAD", b"COUNT", b"15", b"BLOCK", b"1000", b"STREAMS", s, last.as_bytes()]);
        c.send(&[b"SET", epoch_key.as_bytes(), format!("{:016x}", random_u64()).as_bytes(), b"NX"]);
        c.send(&[b"GET", epoch_key.as_bytes()]);
        c.send(&[b"HGET", format!("{}:lost", self.stream).as_bytes(), b"\n"]);
        c.flush()?;
        let (mut read, _, epoch, trimmed) =
            (c.recv()?, c.recv()?, text(&c.recv()?), text(&c.recv()?));
        let (from_start, hole) = (self.last == "0-0", key(&trimmed) > key(&self.last));
        if epoch != self.epoch {
            if !self.epoch.is_empty() {
                side.config.emit(HubLogKind::Redis(RedisLog::EpochChanged { epoch: &epoch }), None);
                self.backlog.clear();
            }
            // What was read is of the old stream.
            (self.epoch, self.last, read) = (epoch, "0-0".into(), Reply::Array(None));
        }
        // `[[stream, [entry, ...]]]`
        let read = items(read).into_iter().next().and_then(|s| items(s).into_iter().nth(1));
        let read = self.entries(read.map_or(Vec::new(), items));
        let newer = |a: String, b: &String| if key(&a) > key(b) { a } else { b.clone() };
        let unsure = from_start.then(|| newer(trimmed, &self.backlog)); // Redis places ids up to it
        let open = self.deliver(read, hole && !from_start, unsure);
        while let Some(Command::Subscribe(sink, sub)) =
            open.then(|| self.rx.try_recv().ok()).flatten()
        {
            self.resume(side, c, sink, sub)?;
        }
        Ok(open && side.up.strong_count() > 0)
    }

    fn deliver(&mut self, mut read: Vec<Entry>, hole: bool, unsure: Option<String>) -> bool {
        read.retain(|e| key(&e.id) > key(&self.last));
        let old = read.partition_point(|e| key(&e.id) <= key(&self.backlog));
        if let Some(newest) = read.last() {
            self.last = newest.id[self.epoch.len() + 1..].to_string();
        }
        self.send(Msg::Entries(self.epoch.clone(), read, hole, unsure, old))
    }

    /// Answers a resume; with a replay, after the newest delivered.
    #[inline(never)]
    fn resume(&mut self, side: &Side, c: &mut Conn, sink: Sink, mut sub: Subscription) -> Res<()> {
        let id = sub.last_event_id.clone().unwrap_or_default();
        let rid = id.strip_prefix(self.epoch.as_str()).and_then(|r| r.strip_prefix('-'));
        let Some(rid) = rid.filter(|r| key(r).is_some() && r.split('-').count() == 2) else {
            self.send(Msg::Resume(sink, sub, None));
            return Ok(());
        };
        let start = if key(rid) < key(&self.last) { rid } else { &self.last };
        let (s, n) = (self.stream.as_bytes(), (side.config.history_events + 1).to_string());
        let (lost, everyone) = (format!("{}:lost", self.stream), (!sub.topics_only).then_some(""));
        let topics = sub.topics.iter().map(String::as_str).chain(everyone).map(str::as_bytes);
        let head = [&b"HMGET"[..], lost.as_bytes(), b"\r"];
        c.send(&head.into_iter().chain(topics).collect::<Vec<_>>());
        c.send(&[b"XRANGE", s, start.as_bytes(), b"+", b"COUNT", n.as_bytes()]);
        let mut error = c.flush();
        let mut recv = || c.recv().map_err(|e| error = Err(e)).map_or(Vec::new(), items);
        let (marks, got) = (recv().iter().map(text).collect::<Vec<_>>(), recv());
        let got = self.entries(got);
        let whole = (got.iter().any(|e| e.id == id) || marks.iter().any(|m| m == rid))
            && marks.iter().all(|m| key(m) <= key(rid))
            && got.last().is_some_and(|e| key(&e.id) >= key(&self.last));
        let replay: Vec<_> = got.iter().filter(|e| key(&e.id) > key(rid)).cloned().collect();
        let replay = (whole && self.deliver(got, false, None)).then_some(replay);
        if replay.is_some() {
            sub.last_event_id = Some(format!("{}-{}", self.epoch, self.last));
        }
        self.send(Msg::Resume(sink, sub, replay));
        error
    }

    /// Entries `[[id, [d, frame, t, topics]]]` as the hub's (numbered once
    /// delivered): `id: <epoch>-<id>`, the frame (comments, then `event:`).
    fn entries(&self, replies: Vec<Reply>) -> Vec<Entry> {
        let entry = |reply| {
            let mut parts = items(reply).into_iter();
            let rid = parts.next().map_or(String::new(), |r| text(&r));
            let mut fields = parts.next().map_or(Vec::new(), items).into_iter().map(bytes);
            let (d, t) = (fields.nth(1).unwrap_or_default(), fields.nth(1).unwrap_or_default());
            let first = d.split(|&b| b == b'\n').find(|l| !l.starts_with(b":"));
            let event_type = first.and_then(|l| l.strip_prefix(b"event: "));
            let event_type = event_type.map(|t| String::from_utf8_lossy(t).into_owned());
            let id = format!("{}-{rid}", self.epoch);
            let end: &[u8] = if d.ends_with(b"\n\n") { b"" } else { b"\n" };
            let frame = Frame::from_encoded([format!("id: {id}\n").as_bytes(), &d, end].concat());
            let topics = String::from_utf8_lossy(&t);
            let topics = topics.split('\n').filter(|t| !t.is_empty()).map(str::to_string).collect();
            Entry { seq: 0, offset: 0, id, topics, event_type, frame, at: Instant::now() }
        };
        replies.into_iter().map(entry).collect()
    }
}

fn items(reply: Reply) -> Vec<Reply> {
    let Reply::Array(Some(items)) = reply else { return Vec::new() };
    items
}

fn text(reply: &Reply) -> String {
    let Reply::Bulk(Some(bytes)) = reply else { return String::new() };
    String::from_utf8_lossy(bytes).into_owned()
}

fn bytes(reply: Reply) -> Vec<u8> {
    let Reply::Bulk(Some(bytes)) = reply else { return Vec::new() };
    bytes
}

/// The entry id `<ms>-<seq>` at the end of `id`, as numbers to compare.
fn key(id: &str) -> Option<(u64, u64)> {
    let (rest, seq) = id.rsplit_once('-')?;
    Some((parse_decimal(rest.rsplit('-').next()?)?, parse_decimal(seq)?))
}

impl Coordinator {
    pub(super) fn redis(&mut self, msg: Msg) {
        match msg {
            Msg::Entries(epoch, entries, hole, unsure, old) => {
                // Lost: its ids are unknown, the live get the gap signal.
                let lost =
                    epoch != self.epoch && !std::mem::replace(&mut self.epoch, epoch).is_empty();
                if let (Some(engine), Some(unsure)) = (&mut self.redis, unsure) {
                    engine.unsure = unsure;
                }
                if lost || hole {
                    self.history = History::new(&self.config);
                    self.forward();
                    for shard in &self.shards {
                        shard.send(Command::Shard(ShardCommand::Gap("unknown-id")), 0, usize::MAX);
                    }
                }
                for (n, entry) in entries.into_iter().enumerate() {
                    self.push(Entry { seq: self.next_seq, offset: self.next_offset, ..entry });
                    if n < old {
                        self.outgoing.pop(); // the stream before the hub: history, not news
                    }
                }
            }
            Msg::Resume(sink, mut sub, replay) => {
                // No replay: the gap signal, as for "" (no id of the hub's).
                sub.last_event_id =
                    replay.as_ref().and(sub.last_event_id.take()).or(Some("".into()));
                if let Some(engine) = &mut self.redis {
                    engine.answer = Some(replay.unwrap_or_default());
                }
                self.subscribe(sink, sub);
            }
            Msg::Post(..) => {} // the writer's
        }
    }

    /// A subscriber, with the reader's replay if it answered; `None`: deferred to it.
    pub(super) fn subscriber(&mut self, sink: Sink, sub: Subscription) -> Option<Subscriber> {
        let id = sub.last_event_id.as_deref();
        let unsure = self.redis.as_ref().map_or("", |e| &e.unsure);
        let unplaced = |id| {
            (self.epoch.is_empty() || self.is_hub_id(id))
                && (self.history.seq_of(id).is_none() || key(id) <= key(unsure))
        };
        let defer =
            |e: &&Engine| e.answer.is_none() && e.up.upgrade().is_some_and(|up| up.load(SeqCst));
        let command = match self.redis.as_ref().filter(defer).filter(|_| id.is_some_and(unplaced)) {
            Some(engine) => match engine.requests.try_send(Command::Subscribe(sink, sub)).err()? {
                TrySendError::Full(back) | TrySendError::Disconnected(back) => back,
            },
            None => Command::Subscribe(sink, sub),
        };
        let Command::Subscribe(sink, sub) = command else { return None };
        let (mut new, seq, end) =
            (Subscriber::new(sink, sub, self), self.next_seq - 1, self.next_offset);
        // The replay comes just before what was delivered last.
        for e in self.redis.as_mut().and_then(|e| e.answer.take()).unwrap_or_default() {
            let entry = Entry { seq, offset: end.saturating_sub(e.frame.len() as u64), ..e };
            let want = new.wants(&entry, &self.config);
            new.offer(&entry, want);
        }
        Some(new)
    }
}
