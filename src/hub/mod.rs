//! The broadcast hub: publish from any thread, every subscribed stream
//! receives, in order; a reconnecting client resumes from `Last-Event-ID`.
//!
//! ```text
//! publish() ──mpsc──▶ coordinator ──mpsc──▶ fan-out threads ──non-blocking writev──▶ sockets
//!  (any thread)       ids, encodes once,     (one per core, each   (what a socket does not take
//!                     the history            a share of the         waits in that subscriber's
//!                                            subscribers)           backlog)
//! ```
//!
//! The coordinator alone touches the history, and a subscription travels
//! the same first-in-first-out channels as the events, so the hand-over
//! from replay to live events has no gap and no duplicate. Events from one
//! publishing thread arrive in the order published; ids increase in the
//! order the hub received them. Once a stream is subscribed its connection
//! thread ends: an idle subscriber costs a socket and a few hundred bytes.
//!
//! # Ids and replay
//!
//! An event published without an id gets `<epoch>-<n>` (the epoch is random
//! per hub, so an id from an earlier run is recognised as unknown); ids of
//! that form are the hub's alone. The history is bounded by count, bytes
//! and optionally age, in total and per topic
//! ([`HubBuilder::topic_history`]); each topic remembers the newest event
//! it lost. A client resuming after an id that none of its topics (nor
//! everyone's events, unless [`topics_only`](Subscription::topics_only))
//! lost an event after gets every retained event it wants after it, then
//! the live stream. Otherwise (an id from another epoch, garbage, or a
//! topic lost events) it first gets the gap signal, [`GAP_EVENT`], then the
//! retained events (all, for an id it cannot place) or, with
//! [`UnknownId::LiveOnly`], only the live stream.
//!
//! # Slow clients
//!
//! How far a subscriber may fall behind is bounded ([`HubBuilder::backlog`]).
//! Past it the subscriber is disconnected ([`SlowClient::Disconnect`], while
//! the history still holds all it missed, so it resumes without a gap), or
//! its oldest events give way to the gap signal ([`SlowClient::DropOldest`]).
//! A socket that takes nothing is retried with a back-off, and disconnected
//! after [`HubBuilder::stall_timeout`] without progress.
//!
//! # Closing
//!
//! [`Hub::close`] sends every subscriber the close event and a jittered
//! `retry:` hint (when set), then ends the streams. Close the hub before
//! the server: a server's shutdown waits for the hub to let go of its
//! streams (at most a second). A `publish` racing with `close` may be
//! accepted and discarded, as a value sent on a closing `mpsc` channel is.

mod fanout;
mod history;
mod receiver;
mod redis;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::event::{Event, Frame};
use crate::http::{Request, Response};
use crate::server::{Accept, EventStream};
use crate::util::push_metric;
use fanout::{Room, Shard, ShardHandle, Sink};
use history::{Coordinator, Entry, History};
use receiver::LocalQueue;

pub use receiver::Receiver;
pub use redis::RedisLog;

/// The event type of the gap signal: the subscriber may have missed events.
///
/// Its data is `unknown-id` (the hub cannot place the `Last-Event-ID` the
/// client sent, or no longer holds every event after it that the client
/// would have received) or `lagged` (the client fell behind and events were
/// dropped). It carries no id, so the client's last event id is unchanged.
/// In a browser: `source.addEventListener("stdsse-gap", ...)`.
pub const GAP_EVENT: &str = "stdsse-gap";

/// What [`HubBuilder::log`] is told.
#[derive(Debug)]
#[non_exhaustive]
pub struct HubLog<'a> {
    /// What happened.
    pub kind: HubLogKind<'a>,
    /// The client's address, when the subscriber is an event stream.
    pub peer: Option<SocketAddr>,
}

/// What happened to a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubLogKind<'a> {
    /// Disconnected for falling behind ([`SlowClient::Disconnect`]).
    Evicted {
        /// For making no progress for the stall timeout instead.
        stalled: bool,
    },
    /// Its oldest pending events were dropped ([`SlowClient::DropOldest`]).
    DroppedOldest {
        /// How many.
        events: u64,
    },
    /// Its filter panicked, which ended its subscription.
    FilterPanicked {
        /// The panic's message, if its payload is a string.
        message: Option<&'a str>,
    },
    /// It was sent the gap signal.
    Gap {
        /// The signal's data: `unknown-id` or `lagged` (see [`GAP_EVENT`]).
        reason: &'static str,
    },
    /// Not about a subscriber: the hub's Redis connections
    /// ([`HubBuilder::redis`]).
    Redis(RedisLog<'a>),
}

/// What happens to a subscriber whose backlog passes its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowClient {
    /// Close its connection (the default). It reconnects with
    /// `Last-Event-ID` and the history gives back what it missed.
    Disconnect,
    /// Drop its oldest pending events and send the gap signal instead.
    DropOldest,
}

/// What a subscriber whose `Last-Event-ID` is unknown receives after the
/// gap signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownId {
    /// Every retained event, then the live stream (the default).
    ReplayAll,
    /// Only the live stream.
    LiveOnly,
}

/// The hub's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Subscribers now.
    pub subscribers: u64,
    /// Events published since start.
    pub published: u64,
    /// Events written in full to a subscriber's socket or taken by a
    /// [`Receiver`] (one per subscriber).
    pub delivered: u64,
    /// Subscribers disconnected for falling behind, or for making no
    /// progress for the stall timeout.
    pub evicted: u64,
    /// Events dropped from slow subscribers' backlogs.
    pub dropped: u64,
    /// Subscriptions whose `Last-Event-ID` resumed without a gap: the
    /// history held every event after it that they would have received.
    pub replay_hits: u64,
    /// Subscriptions whose `Last-Event-ID` was unknown, or after which the
    /// history had lost events of their topics (gap signalled).
    pub replay_misses: u64,
    /// Events in the history now.
    pub history_len: u64,
    /// Bytes of the history now.
    pub history_bytes: u64,
}

impl HubStats {
    /// The counters as a JSON object.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"subscribers\":{},\"published\":{},\"delivered\":{},\"evicted\":{},\"dropped\":{},\
             \"replay_hits\":{},\"replay_misses\":{},\"history_len\":{},\"history_bytes\":{}}}",
            self.subscribers,
            self.published,
            self.delivered,
            self.evicted,
            self.dropped,
            self.replay_hits,
            self.replay_misses,
            self.history_len,
            self.history_bytes
        )
    }

    /// The counters in the Prometheus text format (version 0.0.4), named
    /// `stdsse_hub_...`: counters end in `_total`, gauges do not.
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        #[rustfmt::skip]
        let metrics = [
            ("subscribers", "gauge", "Subscribers now.", self.subscribers),
            ("published_total", "counter", "Events published.", self.published),
            ("delivered_total", "counter", "Events delivered to a subscriber.", self.delivered),
            ("evicted_total", "counter", "Subscribers disconnected as slow or stalled.", self.evicted),
            ("dropped_total", "counter", "Events dropped from slow subscribers' backlogs.", self.dropped),
            ("replay_hits_total", "counter", "Resumes without a gap.", self.replay_hits),
            ("replay_misses_total", "counter", "Resumes with the gap signal.", self.replay_misses),
            ("history_events", "gauge", "Events in the history.", self.history_len),
            ("history_bytes", "gauge", "Bytes of the history.", self.history_bytes),
        ];
        for (name, kind, help, value) in metrics {
            push_metric(&mut out, &format!("stdsse_hub_{name}"), kind, help, value);
        }
        out
    }
}

#[derive(Default)]
struct Counters {
    subscribers: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    evicted: AtomicU64,
    dropped: AtomicU64,
    replay_hits: AtomicU64,
    replay_misses: AtomicU64,
    history_len: AtomicU64,
    history_bytes: AtomicU64,
}

/// `publish` failed, and why. The event is given back, as
/// `std::sync::mpsc::SendError` gives back the value.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishError(pub Event, pub PublishErrorKind);

/// Why `publish` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The hub is closed.
    Closed,
    /// Redis is down ([`HubBuilder::redis`]); try again later (an HTTP
    /// server would answer `503` with `Retry-After`).
    Unavailable,
    /// Over 16 MiB encoded: too large to publish through Redis.
    TooLarge,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.1 {
            PublishErrorKind::Closed => "publishing on a closed hub",
            PublishErrorKind::Unavailable => "Redis is unavailable",
            PublishErrorKind::TooLarge => "the event is too large for Redis",
        })
    }
}

impl std::error::Error for PublishError {}

/// `subscribe` or `receiver` failed: the hub is closed (a stream handed to
/// `subscribe` was closed too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeError;

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("subscribing to a closed hub")
    }
}

impl std::error::Error for SubscribeError {}

/// `close` did not finish within its timeout (the hub is closed anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseTimeoutError;

impl fmt::Display for CloseTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hub did not finish closing in time")
    }
}

impl std::error::Error for CloseTimeoutError {}

/// Decides, per subscriber, whether an event is for it (besides topics).
pub type Filter = Arc<dyn Fn(&Published<'_>) -> bool + Send + Sync>;

/// What a subscriber's [`Filter`] sees of a published event.
#[derive(Debug)]
pub struct Published<'a> {
    /// The topics it was published to (empty: published to everyone).
    pub topics: &'a [String],
    /// Its event type, if set.
    pub event_type: Option<&'a str>,
    /// Its id (assigned by the hub if the publisher set none).
    pub id: &'a str,
    /// The encoded event.
    pub frame: &'a Frame,
}

/// How a stream subscribes: topics, where to resume, and a filter.
#[derive(Clone, Default)]
pub struct Subscription {
    topics: Vec<String>,
    topics_only: bool,
    last_event_id: Option<String>,
    recent: usize,
    filter: Option<Filter>,
    /// The client's address, for the log (set by `Hub::subscribe`).
    peer: Option<SocketAddr>,
}

impl Subscription {
    /// A subscription to events published to everyone only.
    #[must_use]
    pub fn new() -> Subscription {
        Subscription::default()
    }

    /// Also receive events published to `topic`.
    #[must_use]
    pub fn topic(mut self, topic: impl Into<String>) -> Subscription {
        self.topics.push(topic.into());
        self
    }

    /// Receive only the events published to its topics, none of those
    /// published to everyone ([`Hub::publish`]).
    #[must_use]
    pub fn topics_only(mut self) -> Subscription {
        self.topics_only = true;
        self
    }

    /// Resume after this id (the client's `Last-Event-ID`); `None` clears
    /// it. An empty id is no id, as in the standard (a browser never sends
    /// one).
    #[must_use]
    pub fn last_event_id(mut self, id: Option<&str>) -> Subscription {
        self.last_event_id = id.filter(|id| !id.is_empty()).map(str::to_string);
        self
    }

    /// On a connect without a last event id, first receive the newest `n`
    /// retained events this subscription would have received (its topics
    /// and filter decide), in order, then the live ones, with no gap or
    /// duplicate between them (default 0). A resume replays what it missed
    /// instead.
    #[must_use]
    pub fn recent(mut self, n: usize) -> Subscription {
        self.recent = n;
        self
    }

    /// Receive only the events `filter` accepts. It runs on the hub's
    /// threads, once per event for each subscriber, so keep it quick; if it
    /// panics, this subscription ends and the others go on.
    #[must_use]
    pub fn filter(
        mut self,
        filter: impl Fn(&Published<'_>) -> bool + Send + Sync + 'static,
    ) -> Subscription {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Whether `entry` is for this subscription's topics (or for everyone,
    /// unless it is topics-only), before the filter.
    fn matches(&self, entry: &Entry) -> bool {
        (entry.topics.is_empty() && !self.topics_only)
            || entry.topics.iter().any(|t| self.topics.contains(t))
    }

    /// Whether `entry` is for this subscription; `Err` with the panic's
    /// message (if it is a string) if the filter panicked.
    fn wants(&self, entry: &Entry) -> Result<bool, Option<String>> {
        match &self.filter {
            Some(filter) if self.matches(entry) => {
                let published = Published {
                    topics: &entry.topics,
                    event_type: entry.event_type.as_deref(),
                    id: &entry.id,
                    frame: &entry.frame,
                };
                panic::catch_unwind(AssertUnwindSafe(|| filter(&published))).map_err(|panic| {
                    (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                })
            }
            _ => Ok(self.matches(entry)),
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("topics_only", &self.topics_only)
            .field("last_event_id", &self.last_event_id)
            .field("recent", &self.recent)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// Builds a [`Hub`]; every setting has a default.
#[derive(Clone, Debug)]
pub struct HubBuilder {
    history_events: usize,
    history_bytes: usize,
    history_age: Option<Duration>,
    topic_history: Option<(usize, usize)>,
    backlog_events: usize,
    backlog_bytes: usize,
    stall_timeout: Option<Duration>,
    slow_client: SlowClient,
    unknown_id: UnknownId,
    keep_alive: Option<Duration>,
    inbox: usize,
    close_event: Option<Event>,
    close_retry: Option<(Duration, Duration)>,
    close_timeout: Duration,
    fanout_threads: usize,
    log: Option<LogHook>,
    redis: Option<(String, String)>,
}

/// The hook of [`HubBuilder::log`].
#[derive(Clone)]
struct LogHook(Arc<dyn Fn(&HubLog<'_>) + Send + Sync>);

impl fmt::Debug for LogHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogHook")
    }
}

impl Default for HubBuilder {
    fn default() -> HubBuilder {
        HubBuilder {
            history_events: 2000,
            history_bytes: 2 << 20,
            history_age: None,
            topic_history: None,
            backlog_events: 1000,
            backlog_bytes: 1 << 20,
            stall_timeout: None,
            slow_client: SlowClient::Disconnect,
            unknown_id: UnknownId::ReplayAll,
            keep_alive: Some(Duration::from_secs(15)),
            inbox: 1024,
            close_event: None,
            close_retry: None,
            close_timeout: Duration::from_secs(2),
            fanout_threads: thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            log: None,
            redis: None,
        }
    }
}

impl HubBuilder {
    /// The history's bounds: at most this many events and encoded bytes
    /// (default 2000, 2 MiB: twice the backlog bound, so an evicted client can
    /// resume). Zero events disables replay.
    #[must_use]
    pub fn history(mut self, events: usize, bytes: usize) -> HubBuilder {
        self.history_events = events;
        self.history_bytes = bytes;
        self
    }

    /// The history's bounds per topic (default: half the total, at least one
    /// event), so a busy topic cannot push a quiet one's events out. Events
    /// published to everyone count against the total only; one published to
    /// several topics counts against each.
    #[must_use]
    pub fn topic_history(mut self, events: usize, bytes: usize) -> HubBuilder {
        self.topic_history = Some((events.max(1), bytes));
        self
    }

    /// The bounds of each topic's history.
    fn topic_bound(&self) -> (usize, usize) {
        let half = ((self.history_events / 2).max(1), self.history_bytes / 2);
        self.topic_history.unwrap_or(half)
    }

    /// Also drop history entries older than this (default: no age limit).
    #[must_use]
    pub fn history_max_age(mut self, age: Option<Duration>) -> HubBuilder {
        self.history_age = age;
        self
    }

    /// Bounds how far a subscriber may fall behind (default 1000 events,
    /// 1 MiB).
    ///
    /// With [`SlowClient::Disconnect`] it is measured in the hub's own sequence:
    /// from the first event the subscriber has not been sent in full through
    /// the newest, whether it wants them or not, capped at half the history's
    /// (and a topic's) bounds unless replay is off. So an evicted client's
    /// resume point is still in the history, and the other half of it is its
    /// time to reconnect. With [`SlowClient::DropOldest`] it counts the
    /// subscriber's own queued frames and bytes.
    #[must_use]
    pub fn backlog(mut self, events: usize, bytes: usize) -> HubBuilder {
        self.backlog_events = events.max(1);
        self.backlog_bytes = bytes.max(1);
        self
    }

    /// How far behind a subscriber may fall with [`SlowClient::Disconnect`]
    /// in events and bytes of the hub's sequence, then of its topics: the
    /// backlog bound, capped at half the history's and half a topic's bounds.
    fn behind_bound(&self) -> [u64; 4] {
        let cap = |backlog: usize, history: usize| match self.history_events {
            0 => backlog as u64,
            _ => backlog.min((history / 2).max(1)) as u64,
        };
        let (topic_events, topic_bytes) = self.topic_bound();
        [
            cap(self.backlog_events, self.history_events),
            cap(self.backlog_bytes, self.history_bytes),
            cap(self.backlog_events, topic_events),
            cap(self.backlog_bytes, topic_bytes),
        ]
    }

    /// A stream whose backlog makes no progress for this long is disconnected
    /// (default: its write timeout, [`Server::write_timeout`](crate::Server::write_timeout)).
    /// Until then it is retried with a back-off of 2 ms doubling to 250 ms.
    /// Receivers are bound by the backlog only.
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> HubBuilder {
        self.stall_timeout = Some(timeout);
        self
    }

    /// What happens past the backlog bound (default
    /// [`SlowClient::Disconnect`]).
    #[must_use]
    pub fn slow_client(mut self, policy: SlowClient) -> HubBuilder {
        self.slow_client = policy;
        self
    }

    /// What follows the gap signal for an unknown `Last-Event-ID` (default
    /// [`UnknownId::ReplayAll`]).
    #[must_use]
    pub fn unknown_id(mut self, policy: UnknownId) -> HubBuilder {
        self.unknown_id = policy;
        self
    }

    /// A keep-alive comment after this long without a write (default 15 s).
    #[must_use]
    pub fn keep_alive(mut self, interval: Option<Duration>) -> HubBuilder {
        self.keep_alive = interval;
        self
    }

    /// How many commands (publishes, subscriptions) may wait for the hub;
    /// past it, `publish`, `subscribe` and `receiver` wait (default 1,024). It
    /// bounds what is on its way when publishers outrun the fan-out (at most
    /// about five times this many events); it counts events, not bytes.
    #[must_use]
    pub fn inbox(mut self, commands: usize) -> HubBuilder {
        self.inbox = commands.max(1);
        self
    }

    /// An event every subscriber receives when the hub closes.
    #[must_use]
    pub fn close_event(mut self, event: Option<Event>) -> HubBuilder {
        self.close_event = event;
        self
    }

    /// A `retry:` hint sent at close: `base` plus up to `jitter`, per subscriber.
    #[must_use]
    pub fn close_retry(mut self, base: Duration, jitter: Duration) -> HubBuilder {
        self.close_retry = Some((base, jitter));
        self
    }

    /// How long `close` may spend delivering the final bytes (default 2 s).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> HubBuilder {
        self.close_timeout = timeout;
        self
    }

    /// How many fan-out threads write to subscribers (default: one per core, at most 4).
    #[must_use]
    pub fn fanout_threads(mut self, threads: usize) -> HubBuilder {
        self.fanout_threads = threads.max(1);
        self
    }

    /// Calls `log` for what the hub does to a subscriber (default: none). It
    /// runs on the hub's threads: keep it quick; a panic in it is caught.
    #[must_use]
    pub fn log(mut self, log: impl Fn(&HubLog<'_>) + Send + Sync + 'static) -> HubBuilder {
        self.log = Some(LogHook(Arc::new(log)));
        self
    }

    /// Shares the hub with every other one on this Redis stream (default:
    /// none, in-process): `url` is `redis://[user:password@]host[:port][/db]`
    /// (checked by [`build`](HubBuilder::build)), `stream` the key. Events
    /// are delivered only as read back from Redis, so every hub delivers
    /// the same events in the same order; each gets the id
    /// `<epoch>-<entry id>` (one a publisher set is replaced), which
    /// resumes on any of them: from the local history, else from Redis,
    /// which keeps about as many events as the history's count (`MAXLEN
    /// ~`; per topic only the local history is bounded). A resume across a
    /// loss (the stream flushed, trimmed past it, or Redis restarted
    /// without persistence) gets the gap signal. While Redis is down,
    /// `publish` fails at once ([`PublishErrorKind::Unavailable`]), streams
    /// stay open, and the hub reconnects (100 ms doubling to 5 s, jittered)
    /// and goes on from the last entry it delivered; an event whose
    /// `publish` succeeded is written once Redis is back (twice, rarely, if
    /// an answer was lost). There is no TLS: see [`crate::redis`].
    #[must_use]
    pub fn redis(mut self, url: &str, stream: &str) -> HubBuilder {
        self.redis = Some((url.into(), stream.into()));
        self
    }

    /// Calls the log hook, if any; a panic in it is caught.
    fn emit(&self, kind: HubLogKind<'_>, peer: Option<SocketAddr>) {
        if let Some(hook) = &self.log {
            let log = HubLog { kind, peer };
            // A hook that panics must not take the hub's thread down.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| (hook.0)(&log)));
        }
    }

    /// Starts the hub's threads: a coordinator and the fan-out threads
    /// (and with Redis a reader and a writer). Fails on a bad Redis URL.
    pub fn build(self) -> io::Result<Hub> {
        let (tx, rx) = mpsc::sync_channel(self.inbox);
        let url = self
            .redis
            .as_ref()
            .map(|(url, _)| crate::redis::RedisUrl::parse(url));
        let url = url
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let counters = Arc::new(Counters::default());
        let epoch = format!("{:08x}", crate::util::random_u64() as u32);
        let config = Arc::new(self);
        let mut shards = Vec::new();
        for n in 0..config.fanout_threads {
            let (shard_tx, shard_rx) = mpsc::channel();
            let load = Arc::new(AtomicU64::new(0));
            let seen = Arc::new(AtomicU64::new(0));
            let queued = Arc::new(Room::default());
            let shard = Shard {
                subscribers: Vec::new(),
                counters: counters.clone(),
                config: config.clone(),
                load: load.clone(),
                seen: seen.clone(),
                queued: queued.clone(),
            };
            thread::Builder::new()
                .name(format!("stdsse-fanout-{n}"))
                .spawn(move || shard.run(shard_rx))?;
            shards.push(ShardHandle {
                tx: shard_tx,
                load,
                seen,
                queued,
            });
        }
        let mut coordinator = Coordinator {
            history: History::new(&config),
            next_seq: 1,
            next_offset: 0,
            epoch: epoch.clone(),
            counters: counters.clone(),
            config,
            shards,
            outgoing: Vec::new(),
            redis: None,
        };
        let mut redis = None;
        if let (Some(url), Some((_, stream))) = (url, coordinator.config.redis.clone()) {
            let (link, engine) = redis::start(&coordinator.config, url, stream, tx.clone())?;
            (redis, coordinator.redis) = (Some(link), Some(engine));
        }
        thread::Builder::new()
            .name("stdsse-hub".into())
            .spawn(move || coordinator.run(rx))?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                tx,
                closed: AtomicBool::new(false),
                counters,
                epoch,
                redis,
            }),
        })
    }
}

struct HubInner {
    tx: SyncSender<Command>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    epoch: String,
    redis: Option<redis::Link>,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        // The last handle is gone: the coordinator sees the channel close
        // and ends every stream.
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// A handle to a broadcast hub; clone it freely, publish from any thread.
///
/// ```no_run
/// use stdsse::hub::{Hub, Subscription};
/// use stdsse::{Event, Request, Response, Server};
///
/// /// Who sent the request, from a session cookie (say).
/// fn authenticate(req: &Request) -> Result<String, Response> {
///     req.header("Cookie")
///         .and_then(|c| c.strip_prefix("user="))
///         .map(str::to_string)
///         .ok_or_else(|| Response::text(401, "log in first"))
/// }
///
/// let hub = Hub::new()?;
/// let mut server = Server::bind("127.0.0.1:8080")?;
/// // Each user reads their own topic, and the topic everyone reads.
/// server.sse("/events", hub.handler(|req| {
///     let user = authenticate(req)?;
///     Ok(Subscription::new().topic(format!("user/{user}")).topic("news"))
/// }));
/// let publisher = hub.clone();
/// std::thread::spawn(move || {
///     publisher.publish_to(&["user/ann"], Event::new().data("for Ann only")).unwrap();
///     publisher.publish_to(&["news"], Event::new().data("hello, everyone")).unwrap();
/// });
/// server.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("epoch", &self.inner.epoch)
            .field("stats", &self.stats())
            .finish()
    }
}

enum Command {
    Publish(Vec<String>, Event),
    Subscribe(Sink, Subscription),
    Close(SyncSender<()>),
    Redis(redis::Msg),
}

impl Hub {
    /// A hub with the default settings (see [`HubBuilder`]).
    pub fn new() -> io::Result<Hub> {
        HubBuilder::default().build()
    }

    /// Settings for a new hub.
    #[must_use]
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// Publishes an event to every subscriber; waits only while the inbox is
    /// full, never on one slow subscriber. The event keeps its id unless it has
    /// none or one of the hub's form (`<epoch>-...`); a resume from a repeated
    /// id resumes after its newest.
    pub fn publish(&self, event: Event) -> Result<(), PublishError> {
        self.send_publish(Vec::new(), event)
    }

    /// Publishes an event to the subscribers of any of `topics` (each gets
    /// it once, however many of its topics match).
    pub fn publish_to<T: AsRef<str>>(
        &self,
        topics: &[T],
        event: Event,
    ) -> Result<(), PublishError> {
        let topics = topics.iter().map(|t| t.as_ref().to_string()).collect();
        self.send_publish(topics, event)
    }

    fn send_publish(&self, topics: Vec<String>, event: Event) -> Result<(), PublishError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(PublishError(event, PublishErrorKind::Closed));
        }
        if let Some(link) = &self.inner.redis {
            return link.publish(topics, event);
        }
        self.inner
            .tx
            .send(Command::Publish(topics, event))
            .map_err(|mpsc::SendError(command)| match command {
                Command::Publish(_, event) => PublishError(event, PublishErrorKind::Closed),
                _ => unreachable!("we sent a publish"),
            })
    }

    /// Hands an open event stream to the hub, which writes to it from now on,
    /// replays from the subscription's last event id, and closes it when it
    /// goes away.
    pub fn subscribe(
        &self,
        stream: EventStream,
        subscription: Subscription,
    ) -> Result<(), SubscribeError> {
        let subscription = Subscription {
            peer: Some(stream.peer_addr()),
            ..subscription
        };
        self.send_subscribe(Sink::Socket(stream.detach()), subscription)
    }

    /// Subscribes in this process, without a socket: the [`Receiver`] gets
    /// the frames a stream with this subscription would be sent, except
    /// keep-alives, under the same backlog bound and slow-client policy.
    /// Unlike a socket it has no kernel buffer in front: size the backlog
    /// for the bursts you publish.
    ///
    /// ```
    /// use stdsse::hub::{Hub, Subscription};
    /// use stdsse::{Event, Item, Parser};
    ///
    /// let hub = Hub::new()?;
    /// let receiver = hub.receiver(Subscription::new()).unwrap();
    /// hub.publish(Event::new().data("hello")).unwrap();
    /// let frame = receiver.recv().unwrap();
    /// assert!(frame.as_bytes().ends_with(b"data: hello\n\n"));
    ///
    /// // A frame is the encoded event; the parser gives its fields back.
    /// let mut parser = Parser::new();
    /// parser.feed(frame.as_bytes());
    /// let Some(Ok(Item::Event(event))) = parser.next_item() else { panic!() };
    /// assert_eq!(event.data, "hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receiver(&self, subscription: Subscription) -> Result<Receiver, SubscribeError> {
        let queue = Arc::new(LocalQueue {
            state: Mutex::default(),
            ready: Condvar::new(),
            counters: self.inner.counters.clone(),
        });
        self.send_subscribe(Sink::Local(queue.clone()), subscription)?;
        Ok(Receiver { queue })
    }

    fn send_subscribe(&self, sink: Sink, subscription: Subscription) -> Result<(), SubscribeError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(SubscribeError);
        }
        let command = Command::Subscribe(sink, subscription);
        self.inner.tx.send(command).map_err(|_| SubscribeError)
    }

    /// A handler for [`Server::sse`](crate::Server::sse) that hands every
    /// stream it accepts to the hub. `map` turns the request into a
    /// [`Subscription`] or a refusal; unless it set one, the client's
    /// [`last_event_id`](EventStream::last_event_id) is applied.
    pub fn handler<F>(
        &self,
        map: F,
    ) -> impl Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static
    where
        F: Fn(&Request) -> Result<Subscription, Response> + Send + Sync + 'static,
    {
        let hub = self.clone();
        move |req| {
            let mut subscription = map(req)?;
            let hub = hub.clone();
            Ok(Accept::new(move |stream: EventStream| {
                if subscription.last_event_id.is_none() {
                    subscription = subscription.last_event_id(stream.last_event_id());
                }
                Ok(hub.subscribe(stream, subscription)?)
            }))
        }
    }

    /// For public topics only: any client reads any topic it names. A
    /// [`handler`](Hub::handler) whose topics are every value of the query
    /// parameter `topic_param` (`?topic=a&topic=b`; none: every event).
    pub fn public_handler(
        &self,
        topic_param: &str,
    ) -> impl Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static {
        let param = topic_param.to_string();
        self.handler(move |req| {
            let topics = req
                .query_params()
                .into_iter()
                .filter(|(name, _)| *name == param);
            Ok(topics.fold(Subscription::new(), |s, (_, topic)| s.topic(topic)))
        })
    }

    /// Ends every stream (after the close event and retry hint, if set) and
    /// stops the hub's threads, waiting at most the close timeout.
    pub fn close(&self) -> Result<(), CloseTimeoutError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // The fan-out threads spend at most the close timeout; allow slack,
        // also for a full inbox ahead of the close.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let mut command = Command::Close(done_tx);
        loop {
            match self.inner.tx.try_send(command) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Ok(()), // threads gone
                Err(TrySendError::Full(_)) if Instant::now() >= deadline => {
                    return Err(CloseTimeoutError)
                }
                // Rare (the hub is far behind): polling is enough.
                Err(TrySendError::Full(back)) => {
                    command = back;
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(CloseTimeoutError),
        }
    }

    /// Whether [`close`](Hub::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// The epoch part of the ids this hub assigns (`<epoch>-<n>`).
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// The hub's counters now.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HubStats {
            subscribers: get(&c.subscribers),
            published: get(&c.published),
            delivered: get(&c.delivered),
            evicted: get(&c.evicted),
            dropped: get(&c.dropped),
            replay_hits: get(&c.replay_hits),
            replay_misses: get(&c.replay_misses),
            history_len: get(&c.history_len),
            history_bytes: get(&c.history_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_in_the_prometheus_text_format() {
        let stats = HubStats {
            subscribers: 3,
            published: 10,
            delivered: 25,
            evicted: 1,
            dropped: 2,
            replay_hits: 4,
            replay_misses: 5,
            history_len: 6,
            history_bytes: 700,
        };
        let expected = "\
# HELP stdsse_hub_subscribers Subscribers now.
# TYPE stdsse_hub_subscribers gauge
stdsse_hub_subscribers 3
# HELP stdsse_hub_published_total Events published.
# TYPE stdsse_hub_published_total counter
stdsse_hub_published_total 10
# HELP stdsse_hub_delivered_total Events delivered to a subscriber.
# TYPE stdsse_hub_delivered_total counter
stdsse_hub_delivered_total 25
# HELP stdsse_hub_evicted_total Subscribers disconnected as slow or stalled.
# TYPE stdsse_hub_evicted_total counter
stdsse_hub_evicted_total 1
# HELP stdsse_hub_dropped_total Events dropped from slow subscribers' backlogs.
# TYPE stdsse_hub_dropped_total counter
stdsse_hub_dropped_total 2
# HELP stdsse_hub_replay_hits_total Resumes without a gap.
# TYPE stdsse_hub_replay_hits_total counter
stdsse_hub_replay_hits_total 4
# HELP stdsse_hub_replay_misses_total Resumes with the gap signal.
# TYPE stdsse_hub_replay_misses_total counter
stdsse_hub_replay_misses_total 5
# HELP stdsse_hub_history_events Events in the history.
# TYPE stdsse_hub_history_events gauge
stdsse_hub_history_events 6
# HELP stdsse_hub_history_bytes Bytes of the history.
# TYPE stdsse_hub_history_bytes gauge
stdsse_hub_history_bytes 700
";
        assert_eq!(stats.to_prometheus(), expected);
    }
}
