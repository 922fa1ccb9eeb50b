//! The broadcast hub: publish from any thread, every subscribed stream
//! receives, in order; a reconnecting client resumes from `Last-Event-ID`.
//!
//! # How events travel
//!
//! ```text
//! publish() ──mpsc──▶ coordinator ──mpsc──▶ fan-out threads ──non-blocking writev──▶ sockets
//!  (any thread)       assigns ids,          (one per core;      (what a socket does not take
//!                     encodes once,          each owns a share    stays in that subscriber's
//!                     keeps the history      of the subscribers)  backlog for the next round)
//! ```
//!
//! Publishers hand events to the hub over a bounded `std::sync::mpsc`
//! channel. The coordinator thread takes every queued command in one batch,
//! assigns ids, encodes each event once into a [`Frame`] that every
//! subscriber shares, and appends it to the history; then it passes the
//! batch to the fan-out threads. Each fan-out thread owns a share of the
//! subscribers and writes each one's pending frames with one non-blocking
//! vectored write; nobody waits for a slow client. Connection threads are not
//! involved: once a stream is subscribed its thread ends, so an idle
//! subscriber costs a socket and a few hundred bytes.
//!
//! Writing to sockets is nearly all of the cost of a broadcast (the
//! kernel's work in `writev`), which is why it is spread over the cores. The
//! coordinator alone touches the history, and a subscription travels the
//! same first-in-first-out channels as the events: the hand-over from
//! history to live events has no gap and no duplicate, and no lock is shared
//! between publishers and subscribers.
//!
//! # Ordering
//!
//! Events from one publishing thread reach every subscriber in the order
//! they were published. Events from different threads are ordered as the
//! channel received them; ids increase in that order.
//!
//! # Ids and replay
//!
//! An event published without an id gets `<epoch>-<n>`: `n` counts up from
//! 1, and the epoch is random per hub, so a `Last-Event-ID` from an earlier
//! run of the program is recognised as unknown instead of pointing into the
//! wrong history. Ids of that form (this hub's epoch and a dash) are the
//! hub's alone: an event published with one gets the hub's own instead, so
//! no publisher can make a resume find the wrong place. Other ids are kept;
//! a resume finds the newest event with exactly that id. The history is
//! bounded by a count, by bytes, and optionally by age, in total and per
//! topic ([`HubBuilder::topic_history`]); each topic remembers the newest
//! event it lost. A subscriber that arrives with a `Last-Event-ID`:
//!
//! * after which none of its topics (nor everyone's events, unless it is
//!   [`topics_only`](Subscription::topics_only)) lost an event gets every
//!   retained event after it that it wants, then the live stream; however
//!   busy other topics were, their traffic does not make its resume fail;
//! * that the hub cannot place (from an earlier epoch, garbage), or after
//!   which one of its topics lost an event, may have missed events: it
//!   first gets the gap signal, an event of type [`GAP_EVENT`] whose data
//!   says why, then every retained event after it (all, for an id it cannot
//!   place) or, with [`UnknownId::LiveOnly`], only the live stream. A filter
//!   cannot be asked about events no longer held: any lost event of its
//!   topics counts.
//!
//! # Slow clients
//!
//! How far a subscriber may fall behind is bounded by events and bytes.
//! Past the bound the subscriber is disconnected
//! ([`SlowClient::Disconnect`], the default), or its oldest pending events
//! are dropped and the gap signal takes their place
//! ([`SlowClient::DropOldest`]).
//!
//! With `Disconnect` the bound is measured over the hub's own sequence and
//! is at most half the history (see [`HubBuilder::backlog`]), so a client
//! is disconnected while the history still holds everything it missed: its
//! browser reconnects with `Last-Event-ID` and gets exactly that, with no
//! gap signal, provided it comes back before the hub publishes the other
//! half of the history. With `DropOldest` a client is never disconnected
//! for lagging; it loses events, and the gap signal says where.
//!
//! A socket that takes nothing is tried again after a back-off that grows
//! to 250 ms, so stalled clients cost next to nothing; one that makes no
//! progress for the stall timeout is disconnected
//! ([`HubBuilder::stall_timeout`], counted in [`HubStats::evicted`]).

//! # Subscribers in this process
//!
//! [`Hub::receiver`] subscribes without a socket: a [`Receiver`] takes the
//! frames a stream would be sent from a queue, which is its backlog, under
//! the same bound and slow-client policy. It serves tests, bridges to other
//! transports, and the benchmark that measures the hub's own cost apart
//! from the kernel's.
//!
//! # Closing
//!
//! [`Hub::close`] sends every subscriber the close event and a jittered
//! `retry:` hint (when configured), then ends the streams. Close the hub
//! before shutting the server down: a server's shutdown closes the sockets
//! of hub streams too, but waits for the hub to let go of them, which it
//! notices at its next check (at most a second later). A `publish` that
//! races with `close` may be accepted and then discarded, as a value sent
//! on an `mpsc` channel whose receiver is dropped is.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvError, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::event::{Event, Frame};
use crate::http::{chunk_head, Request, Response, CHUNK_END};
use crate::server::{push_metric, random_unit, Accept, Detached, EventStream};

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

/// `publish` failed: the hub is closed. The event is given back, as
/// `std::sync::mpsc::SendError` gives back the value.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishError(pub Event);

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("publishing on a closed hub")
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
        }
    }
}

impl HubBuilder {
    /// The history keeps at most this many events and this many encoded
    /// bytes, whichever bound is hit first (default 2000 events, 2 MiB: a
    /// few minutes of a busy chat room, cheap to hold and to replay; twice
    /// the backlog bound, so that an evicted client can resume). Zero
    /// events disables replay.
    #[must_use]
    pub fn history(mut self, events: usize, bytes: usize) -> HubBuilder {
        self.history_events = events;
        self.history_bytes = bytes;
        self
    }

    /// The history keeps at most this many events and encoded bytes of
    /// each topic (default: half the [`history`](HubBuilder::history)
    /// bounds, at least one event). It protects a quiet topic's history from
    /// a busy one: a topic over its bound drops its own oldest event, so no
    /// one topic takes more than this of the total, which is the bound that
    /// bites while several topics share the traffic. Events published to
    /// everyone count against the total only. An event published to several
    /// topics counts against each, and goes when one of them drops it.
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
    /// 1 MiB: half the default history). Frames are shared between
    /// subscribers, so this bounds lag more than it bounds memory.
    ///
    /// With [`SlowClient::Disconnect`] it is measured in the hub's own
    /// sequence: the events and bytes published from the first one the
    /// subscriber has not been sent in full (written to its socket, or taken
    /// by its [`Receiver`]) through the newest, whether its topics and
    /// filter want them or not. So a subscriber that gets one event in ten
    /// is evicted as soon as one that gets them all would be. The bound is
    /// capped at half the history bounds (unless replay is off): a client
    /// is disconnected while the history still holds the event after the
    /// last one it saw, and the other half of the history is its time to
    /// reconnect while publishing goes on. The history keeps that event
    /// until every fan-out thread has handled the events after it, so what
    /// is on its way between the hub's threads does not count against that
    /// time. (A subscriber whose last event had already left this span when
    /// something new came for it, one on a rare topic, is measured from
    /// that new event: its resume point was lost to others' traffic, not to
    /// its own slowness.)
    ///
    /// With [`SlowClient::DropOldest`] it counts the subscriber's own
    /// queued frames and bytes, as set.
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

    /// A stream whose backlog makes no progress for this long (nothing of it
    /// is written) is disconnected (default: the stream's write timeout,
    /// [`Server::write_timeout`](crate::Server::write_timeout), 10 s unless
    /// set). It protects the hub from clients that stop reading but stay
    /// under the backlog bound: each such socket is retried with a back-off
    /// (2 ms, doubling to 250 ms, back to 2 ms once it takes bytes), so it
    /// costs next to nothing while it waits, and then it goes. Receivers are
    /// bound by the backlog only: they cost nothing while they wait.
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

    /// A keep-alive comment after this long without a write (default 15 s);
    /// a subscriber that went away is also noticed at least this often.
    #[must_use]
    pub fn keep_alive(mut self, interval: Option<Duration>) -> HubBuilder {
        self.keep_alive = interval;
        self
    }

    /// How many commands (publishes, subscriptions) may wait for the hub;
    /// past it, `publish`, `subscribe` and `receiver` wait until there is
    /// room (default 1,024).
    ///
    /// This bounds the memory of what is on its way when publishers or
    /// subscribers outrun the fan-out (a fan-out thread busy with thousands
    /// of sockets, or a filter that is slow): the hub then holds at most
    /// about five times this many published events and replayed frames in
    /// its queues (this is also the most passed between its threads at a
    /// time, up to 4,096). It counts events, not bytes: with large events,
    /// lower it.
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

    /// A `retry:` hint sent at close: `base` plus a random part of up to
    /// `jitter`, different per subscriber, so reconnects spread out.
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

    /// How many fan-out threads write to subscribers (default: one per
    /// core, at most 4). Each subscriber belongs to one of them.
    #[must_use]
    pub fn fanout_threads(mut self, threads: usize) -> HubBuilder {
        self.fanout_threads = threads.max(1);
        self
    }

    /// Calls `log` for what the hub does to a subscriber: evicts it,
    /// drops its oldest events, ends it for a panicking filter, or sends it
    /// the gap signal (default: no log). It is called on the hub's threads,
    /// so it must be quick (hand the record to a channel if it must do
    /// more); a panic in it is caught.
    #[must_use]
    pub fn log(mut self, log: impl Fn(&HubLog<'_>) + Send + Sync + 'static) -> HubBuilder {
        self.log = Some(LogHook(Arc::new(log)));
        self
    }

    /// Starts the hub's threads: a coordinator and the fan-out threads.
    pub fn build(self) -> io::Result<Hub> {
        let (tx, rx) = mpsc::sync_channel(self.inbox);
        let counters = Arc::new(Counters::default());
        let epoch = format!("{:08x}", (random_unit() * f64::from(u32::MAX)) as u32);
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
        let coordinator = Coordinator {
            history: History::new(&config),
            next_seq: 1,
            next_offset: 0,
            epoch: epoch.clone(),
            counters: counters.clone(),
            config,
            shards,
            outgoing: Vec::new(),
        };
        thread::Builder::new()
            .name("stdsse-hub".into())
            .spawn(move || coordinator.run(rx))?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                tx,
                closed: AtomicBool::new(false),
                counters,
                epoch,
            }),
        })
    }
}

struct HubInner {
    tx: SyncSender<Command>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    epoch: String,
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

    /// Publishes an event to every subscriber. Returns once the event is
    /// queued for the hub. It waits only while the inbox is full, when the
    /// hub as a whole is behind (a fan-out thread busy with many sockets,
    /// or a slow filter); never on one slow subscriber.
    ///
    /// The event keeps its id, unless it has none or one of the form the
    /// hub assigns (`<epoch>-...`, with this hub's [`epoch`](Hub::epoch)):
    /// then the hub gives it `<epoch>-<n>`. Ids you choose should be unique:
    /// a client that resumes from a repeated one resumes after its newest.
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
            return Err(PublishError(event));
        }
        self.inner
            .tx
            .send(Command::Publish(topics, event))
            .map_err(|mpsc::SendError(command)| match command {
                Command::Publish(_, event) => PublishError(event),
                _ => unreachable!("we sent a publish"),
            })
    }

    /// Hands an open event stream to the hub. The stream's connection
    /// thread can end now: the hub writes to it from now on, replays from
    /// the subscription's last event id, and closes it when it goes away.
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
    /// the frames an event stream with this subscription would be sent
    /// (replay, gap signals, events, and on close the close event and retry
    /// hint), except keep-alive comments.
    ///
    /// With a last event id it resumes from the history as a reconnecting
    /// client does; without one it receives the events published after
    /// this call. The backlog bound counts from the first frame it has not
    /// taken yet (see [`HubBuilder::backlog`]): past it, the slow-client
    /// policy applies. With
    /// [`SlowClient::Disconnect`] the subscription ends (`recv` fails after
    /// the frames already queued); with [`SlowClient::DropOldest`] its
    /// oldest events give way to a gap signal. Unlike a socket, a receiver
    /// has no kernel buffer in front of it: a burst longer than the backlog,
    /// published faster than the receiving thread takes it, counts as
    /// falling behind. Size the backlog for the bursts you publish.
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
    /// stream it accepts to the hub. `map` turns the request into the
    /// stream's [`Subscription`] (say, the topics of the user it
    /// authenticated) or a refusal, sent instead of a stream. Unless `map`
    /// set one, the client's [`last_event_id`] is applied.
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
            if subscription.last_event_id.is_none() {
                subscription = subscription.last_event_id(last_event_id(req).as_deref());
            }
            let hub = hub.clone();
            Ok(Accept::new(move |stream| {
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
    /// stops the hub's threads; later `publish` and `subscribe` calls fail.
    /// Waits until the final bytes are written or the close timeout passed.
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

/// A subscriber in this process: takes the hub's frames from a queue (see
/// [`Hub::receiver`]). Dropping it unsubscribes.
///
/// Frames arrive in the order a socket subscriber would be sent them.
/// Once the subscription ends (the hub was closed or its last handle
/// dropped, or the receiver was disconnected as a slow client, which
/// [`HubStats::evicted`] counts), the frames already queued are still
/// received, then `recv` fails.
#[must_use = "dropping a Receiver unsubscribes it"]
pub struct Receiver {
    queue: Arc<LocalQueue>,
}

/// How long [`LocalQueue::take`] waits.
enum Wait {
    No,
    Until(Instant),
    Forever,
}

impl Receiver {
    /// Waits for the next frame.
    pub fn recv(&self) -> Result<Frame, RecvError> {
        self.queue.take(Wait::Forever).map_err(|_| RecvError)
    }

    /// The next frame, if one is waiting.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        self.queue.take(Wait::No).map_err(|ended| match ended {
            true => TryRecvError::Disconnected,
            false => TryRecvError::Empty,
        })
    }

    /// Waits at most `timeout` for the next frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        let wait = Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        self.queue.take(wait).map_err(|ended| match ended {
            true => RecvTimeoutError::Disconnected,
            false => RecvTimeoutError::Timeout,
        })
    }

    /// The frames as they arrive, until the subscription ends.
    pub fn iter(&self) -> impl Iterator<Item = Frame> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queue = self.queue.lock();
        f.debug_struct("Receiver")
            .field("queued", &queue.backlog.frames.len())
            .field("ended", &queue.ended)
            .finish()
    }
}

/// The queue between a fan-out thread and a [`Receiver`]. It is that
/// subscriber's whole backlog: the bound and the slow-client policy act on
/// what the receiving thread has not taken yet.
struct LocalQueue {
    state: Mutex<LocalState>,
    ready: Condvar,
    /// An event counts as delivered when the receiver takes it.
    counters: Arc<Counters>,
}

#[derive(Default)]
struct LocalState {
    backlog: Backlog,
    ended: bool,
    /// Threads waiting on the condition variable (a `Receiver` may be
    /// shared): only then is a push worth a wake-up, which is a system call
    /// even when nobody waits.
    waiting: usize,
}

impl LocalQueue {
    fn lock(&self) -> MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next frame; `Err(true)` once the queue is empty and ended,
    /// `Err(false)` when the wait is over first.
    fn take(&self, wait: Wait) -> Result<Frame, bool> {
        let mut state = self.lock();
        loop {
            if let Some(pending) = state.backlog.pop_front() {
                if matches!(pending.kind, Kind::Event(_)) {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(pending.frame);
            }
            if state.ended {
                return Err(true);
            }
            let left = match wait {
                Wait::No => return Err(false),
                Wait::Forever => None,
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(false);
                    }
                    Some(left)
                }
            };
            state.waiting += 1;
            state = match left {
                None => self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    let waited = self.ready.wait_timeout(state, left);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
            };
            state.waiting -= 1;
        }
    }

    /// Updates the backlog (queues frames, applies the bound) under the
    /// lock, so that the bound sees what the receiver has taken, and wakes
    /// the receiver if it waits and a frame was queued (`wake`).
    fn update(&self, wake: bool, update: impl FnOnce(&mut Backlog) -> Bound) -> Bound {
        let mut state = self.lock();
        let wake = wake && state.waiting > 0;
        let outcome = update(&mut state.backlog);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        outcome
    }

    fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_all();
    }
}

/// The client's last event id: the `Last-Event-ID` header, else the
/// `lastEventId` query parameter.
pub fn last_event_id(req: &Request) -> Option<String> {
    req.header("Last-Event-ID")
        .map(str::to_string)
        .or_else(|| req.query_param("lastEventId"))
}

/// One published event as the history keeps it.
struct Entry {
    seq: u64,
    /// The encoded bytes published before it (so that a span of the
    /// history's bytes is a subtraction).
    offset: u64,
    id: String,
    topics: Vec<String>,
    event_type: Option<String>,
    frame: Frame,
    at: Instant,
}

impl Entry {
    fn position(&self) -> Position {
        Position {
            seq: self.seq,
            offset: self.offset,
            ..Position::default()
        }
    }

    /// Its topics; `None` stands for everyone.
    fn topics(&self) -> impl Iterator<Item = Option<&str>> {
        let everyone = self.topics.is_empty().then_some(None);
        everyone
            .into_iter()
            .chain(self.topics.iter().map(|t| Some(t.as_str())))
    }
}

/// A place in the hub's sequence of published events: an event's number
/// and the bytes published before it; and for one subscriber, the events
/// and bytes published to its topics before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    seq: u64,
    offset: u64,
    topic_seq: u64,
    topic_offset: u64,
    /// Whether the event itself is for one of those topics.
    on_topic: bool,
}

/// Events and bytes: what counts against a bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    events: usize,
    bytes: usize,
}

impl Tally {
    fn add(&mut self, bytes: usize) {
        (self.events, self.bytes) = (self.events + 1, self.bytes + bytes);
    }

    fn sub(&mut self, bytes: usize) {
        (self.events, self.bytes) = (self.events - 1, self.bytes - bytes);
    }

    /// Over `(events, bytes)`; the newest event always stays, however
    /// large, so that a client that saw it can resume.
    fn over(&self, (events, bytes): (usize, usize)) -> bool {
        self.events > events || (self.bytes > bytes && self.events > 1)
    }
}

/// What the history holds of one topic (or of the events published to
/// everyone), and the newest of its events it dropped: a subscriber that
/// saw that one, or a later one, missed nothing of this topic.
#[derive(Clone, Debug, Default)]
struct TopicState {
    counted: Tally,
    lost_seq: u64,
    lost_id: String,
}

/// The retained events, in publish order, bounded in total and per topic.
///
/// An event dropped for any bound (total, its topic's, age) is recorded
/// as lost by each of its topics; a client resuming after event `n` missed
/// nothing iff none of the topics it subscribes to lost an event after `n`.
struct History {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    /// Only entries every fan-out thread has handled (up to this number)
    /// count against the bounds (see `Coordinator::prune_history`).
    counted_through: u64,
    counted: Tally,
    everyone: TopicState,
    topics: HashMap<String, TopicState>,
    /// What the topics forgotten to bound `topics` had lost, at most:
    /// what a topic not in `topics` is taken to have lost.
    floor: u64,
    total: (usize, usize),
    per_topic: (usize, usize),
    age: Option<Duration>,
}

impl History {
    fn new(config: &HubBuilder) -> History {
        History {
            entries: VecDeque::new(),
            bytes: 0,
            counted_through: 0,
            counted: Tally::default(),
            everyone: TopicState::default(),
            topics: HashMap::new(),
            floor: 0,
            total: (config.history_events, config.history_bytes),
            per_topic: config.topic_bound(),
            age: config.history_age,
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        if self.total.0 == 0 {
            // No replay: every event is lost at once.
            return self.lose(&entry, false);
        }
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
    }

    /// The retained entry with number `seq`.
    fn get(&self, seq: u64) -> Option<&Arc<Entry>> {
        let index = self.entries.partition_point(|e| e.seq < seq);
        self.entries.get(index).filter(|e| e.seq == seq)
    }

    /// The number of the newest event with the publisher-chosen `id`,
    /// retained or the newest a topic lost.
    fn seq_of(&self, id: &str) -> Option<u64> {
        let retained = self.entries.iter().rev().find(|e| e.id == id);
        let lost = (self.topics.values().chain([&self.everyone]))
            .filter(|t| t.lost_id == id && t.lost_seq > 0)
            .map(|t| t.lost_seq);
        retained.map(|e| e.seq).into_iter().chain(lost).max()
    }

    /// Whether a topic of `sub` (or everyone's events, unless it is
    /// topics-only) lost an event after `seq`. A filter cannot be asked
    /// about events no longer here: every event of its topics counts.
    fn lost_after(&self, sub: &Subscription, seq: u64) -> bool {
        let lost = |topic: &String| self.topics.get(topic).map_or(self.floor, |t| t.lost_seq);
        (!sub.topics_only && self.everyone.lost_seq > seq)
            || sub.topics.iter().any(|topic| lost(topic) > seq)
    }

    fn topic(&mut self, topic: Option<&str>) -> &mut TopicState {
        let Some(topic) = topic else {
            return &mut self.everyone;
        };
        if !self.topics.contains_key(topic) {
            self.forget_idle_topics();
            let state = TopicState {
                lost_seq: self.floor,
                ..TopicState::default()
            };
            self.topics.insert(topic.to_string(), state);
        }
        self.topics.get_mut(topic).expect("inserted")
    }

    /// Bounds the topics remembered: past twice the history's count, the
    /// older half of those with nothing counted is forgotten, and the floor
    /// rises to what they had lost (a client of such a topic that resumes
    /// from before it gets the gap signal, a false alarm at worst).
    fn forget_idle_topics(&mut self) {
        if self.topics.len() < 2 * self.total.0.max(32) {
            return;
        }
        let mut idle: Vec<u64> = (self.topics.values())
            .filter(|t| t.counted.events == 0)
            .map(|t| t.lost_seq)
            .collect();
        if idle.is_empty() {
            return;
        }
        let middle = idle.len() / 2;
        let threshold = *idle.select_nth_unstable(middle).1;
        self.floor = self.floor.max(threshold);
        (self.topics).retain(|_, t| t.counted.events > 0 || t.lost_seq > threshold);
    }

    /// Records `entry` as lost by its topics, and takes it off the
    /// tallies if it was `counted`.
    fn lose(&mut self, entry: &Entry, counted: bool) {
        let len = entry.frame.len();
        if counted {
            self.counted.sub(len);
        }
        for topic in entry.topics() {
            let state = self.topic(topic);
            if counted {
                state.counted.sub(len);
            }
            if entry.seq > state.lost_seq {
                (state.lost_seq, state.lost_id) = (entry.seq, entry.id.clone());
            }
        }
    }

    fn drop_at(&mut self, index: usize) {
        if let Some(entry) = self.entries.remove(index) {
            self.bytes -= entry.frame.len();
            self.lose(&entry, entry.seq <= self.counted_through);
        }
    }

    /// Counts the entries up to `seen` against the bounds, each topic's
    /// bound first (its oldest event goes), then the total and the age
    /// (the oldest goes). Events published to everyone count against the
    /// total only. Returns whether the history is over its total bound.
    fn prune(&mut self, now: Instant, seen: u64) -> bool {
        loop {
            let index = self
                .entries
                .partition_point(|e| e.seq <= self.counted_through);
            let Some(entry) = self.entries.get(index).filter(|e| e.seq <= seen).cloned() else {
                break;
            };
            self.counted_through = entry.seq;
            self.counted.add(entry.frame.len());
            for topic in entry.topics() {
                self.topic(topic).counted.add(entry.frame.len());
            }
            for topic in &entry.topics {
                while self
                    .topics
                    .get(topic)
                    .is_some_and(|t| t.counted.over(self.per_topic))
                {
                    let oldest = self.entries.iter().position(|e| e.topics.contains(topic));
                    self.drop_at(oldest.expect("a topic with events counted has an oldest"));
                }
            }
        }
        while let Some(oldest) = self.entries.front() {
            let too_old = self
                .age
                .is_some_and(|age| now.duration_since(oldest.at) > age);
            if !too_old && !self.counted.over(self.total) {
                break;
            }
            self.drop_at(0);
        }
        let all = Tally {
            events: self.entries.len(),
            bytes: self.bytes,
        };
        all.over(self.total)
    }
}

/// One frame waiting to be written to a subscriber.
struct Pending {
    frame: Frame,
    kind: Kind,
}

/// What a pending frame is: only events count as delivered or dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A published event, at its place in the hub's sequence.
    Event(Position),
    Gap,
    Control,
}

/// Frames waiting for a subscriber, and their size.
#[derive(Default)]
struct Backlog {
    frames: VecDeque<Pending>,
    bytes: usize,
    /// The first event of the hub's sequence not yet sent in full: the
    /// client's `Last-Event-ID` is the one before it (see
    /// [`HubBuilder::backlog`]).
    next: Position,
    /// The events and bytes published to the subscriber's topics so far.
    topic_end: (u64, u64),
}

impl Backlog {
    fn push(&mut self, frame: Frame, kind: Kind) {
        self.bytes += frame.len();
        self.frames.push_back(Pending { frame, kind });
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let pending = self.frames.pop_front()?;
        let len = pending.frame.len();
        self.bytes -= len;
        if let Kind::Event(at) = pending.kind {
            let on_topic = u64::from(at.on_topic);
            self.next = Position {
                seq: at.seq.saturating_add(1),
                offset: at.offset.saturating_add(len as u64),
                topic_seq: at.topic_seq + on_topic,
                topic_offset: at.topic_offset + on_topic * len as u64,
                on_topic: false,
            };
        }
        Some(pending)
    }

    /// Notes a published event for this subscriber's topics or everyone
    /// (`on_topic`: for one of its topics), and queues it if `wanted`.
    fn offer(&mut self, entry: &Entry, on_topic: bool, wanted: bool) {
        let at = Position {
            topic_seq: self.topic_end.0,
            topic_offset: self.topic_end.1,
            on_topic,
            ..entry.position()
        };
        if on_topic {
            self.topic_end.0 += 1;
            self.topic_end.1 += entry.frame.len() as u64;
        }
        if wanted {
            self.push(entry.frame.clone(), Kind::Event(at));
        }
    }

    fn over_own(&self, max_events: usize, max_bytes: usize) -> bool {
        self.frames.len() > max_events || self.bytes > max_bytes
    }

    /// The place of the first event waiting, if one is.
    fn first_event(&self) -> Option<Position> {
        self.frames.iter().find_map(|p| match p.kind {
            Kind::Event(at) => Some(at),
            _ => None,
        })
    }

    /// Whether the backlog passed its bound once `newest` was published.
    fn over(&self, newest: &Entry, config: &HubBuilder) -> bool {
        if config.slow_client == SlowClient::DropOldest {
            return self.over_own(config.backlog_events, config.backlog_bytes);
        }
        let end = newest.offset.saturating_add(newest.frame.len() as u64);
        let behind = [
            (newest.seq + 1).saturating_sub(self.next.seq),
            end.saturating_sub(self.next.offset),
            self.topic_end.0.saturating_sub(self.next.topic_seq),
            self.topic_end.1.saturating_sub(self.next.topic_offset),
        ];
        let over = behind
            .iter()
            .zip(config.behind_bound())
            .any(|(b, max)| *b > max);
        over && self.first_event().is_some()
    }

    /// Drops the oldest events after the first `keep` frames (a frame
    /// partly written must be finished) until the backlog fits again, and
    /// puts one gap signal in their place. Returns the events dropped.
    fn drop_oldest(&mut self, keep: usize, max_events: usize, max_bytes: usize) -> u64 {
        let gap_queued = self.frames.get(keep).is_some_and(|p| p.kind == Kind::Gap);
        let first_droppable = keep + usize::from(gap_queued);
        let mut dropped = 0;
        while self.over_own(max_events, max_bytes) && self.frames.len() > first_droppable + 1 {
            if let Some(p) = self.frames.remove(first_droppable) {
                self.bytes -= p.frame.len();
                dropped += u64::from(matches!(p.kind, Kind::Event(_)));
            }
        }
        if dropped > 0 && !gap_queued {
            let frame = gap_frame("lagged");
            self.bytes += frame.len();
            self.frames.insert(
                keep,
                Pending {
                    frame,
                    kind: Kind::Gap,
                },
            );
        }
        dropped
    }
}

/// What the backlog bound did when an event was queued.
enum Bound {
    Fits,
    /// Over the bound with [`SlowClient::Disconnect`].
    Evict,
    /// Over the bound with [`SlowClient::DropOldest`]: events dropped, and
    /// whether a new gap signal took their place.
    Dropped {
        events: u64,
        gap: bool,
    },
}

impl Backlog {
    /// Applies the slow-client policy if the backlog is over its bound
    /// once `newest` was published; the first `keep` frames are never
    /// dropped.
    fn enforce(&mut self, keep: usize, newest: &Entry, config: &HubBuilder) -> Bound {
        if !self.over(newest, config) {
            return Bound::Fits;
        }
        let (events, bytes) = (config.backlog_events, config.backlog_bytes);
        match config.slow_client {
            // It had been sent everything it wanted: measure from here.
            SlowClient::Disconnect => match self.first_event() {
                Some(first) if first.seq == newest.seq => {
                    self.next = first;
                    Bound::Fits
                }
                _ => Bound::Evict,
            },
            SlowClient::DropOldest => {
                let gap = self.frames.get(keep).is_none_or(|p| p.kind != Kind::Gap);
                let events = self.drop_oldest(keep, events, bytes);
                Bound::Dropped {
                    events,
                    gap: gap && events > 0,
                }
            }
        }
    }
}

/// Where a subscriber's frames go.
enum Sink {
    /// An event stream, written with non-blocking writes from the
    /// subscriber's own backlog.
    Socket(Detached),
    /// A [`Receiver`] in this process; the queue is the backlog.
    Local(Arc<LocalQueue>),
}

impl Sink {
    /// Whether the other end went away (checked without blocking).
    fn is_gone(&self) -> bool {
        match self {
            Sink::Socket(stream) => stream.is_gone(),
            // Only the fan-out thread's handle is left.
            Sink::Local(queue) => Arc::strong_count(queue) == 1,
        }
    }

    /// Ends the stream.
    fn close(&self, between_frames: bool) {
        match self {
            Sink::Socket(stream) => stream.close(between_frames),
            Sink::Local(queue) => queue.end(),
        }
    }
}

impl Drop for Sink {
    /// A receiver's subscription ends however its subscriber goes, even if
    /// a fan-out thread panics: `recv` must not wait forever.
    fn drop(&mut self) {
        if let Sink::Local(queue) = self {
            queue.end();
        }
    }
}

struct Subscriber {
    sink: Sink,
    /// Frames go out as chunks of a chunked body (HTTP/1.1 clients).
    chunked: bool,
    subscription: Subscription,
    /// What waits to be written to a socket (a receiver's is its queue).
    pending: Backlog,
    /// Bytes of the first pending frame already written.
    offset: usize,
    /// The last write, or when the backlog last filled from empty: the
    /// clock of keep-alives and of the stall timeout.
    last_write: Instant,
    /// When a socket that did not take everything is tried again, and the
    /// back-off that set it (see [`HubBuilder::stall_timeout`]).
    retry_at: Instant,
    backoff: Duration,
    /// The stall timeout (none for a receiver).
    stall: Option<Duration>,
    gone: bool,
}

/// The back-off of a socket that takes nothing: from the first retry to
/// the longest wait between two.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(250));

impl Subscriber {
    /// Whether `entry` is for this subscriber. A filter that panics ends
    /// its own subscription (the panic hook reports it, as it does a
    /// handler's): it must not take down the fan-out thread and every
    /// other subscriber on it.
    fn wants(&mut self, entry: &Entry, config: &HubBuilder) -> bool {
        if self.gone {
            return false;
        }
        self.subscription.wants(entry).unwrap_or_else(|message| {
            self.gone = true;
            let message = message.as_deref();
            self.log(config, HubLogKind::FilterPanicked { message });
            false
        })
    }

    fn log(&self, config: &HubBuilder, kind: HubLogKind<'_>) {
        if let Some(hook) = &config.log {
            let log = HubLog {
                kind,
                peer: self.subscription.peer,
            };
            // A hook that panics must not take the hub's thread down.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| (hook.0)(&log)));
        }
    }

    /// What a subscription counts against a fan-out thread's queue on its
    /// way there: itself and its replay (a receiver's is in its queue).
    fn queued(&self) -> usize {
        1 + self.pending.frames.len()
    }

    /// Queues a frame that does not count against the bound (replay,
    /// gap signal, keep-alive, goodbye).
    fn push(&mut self, frame: Frame, kind: Kind) {
        match &self.sink {
            Sink::Socket(_) => self.pending.push(frame, kind),
            Sink::Local(queue) => {
                queue.update(true, |b| {
                    b.push(frame, kind);
                    Bound::Fits
                });
            }
        }
    }

    /// Offers a replayed event (see [`Backlog::offer`]).
    fn offer(&mut self, entry: &Entry, wanted: bool) {
        let on_topic = !entry.topics.is_empty() && self.subscription.matches(entry);
        match &self.sink {
            Sink::Socket(_) => self.pending.offer(entry, on_topic, wanted),
            Sink::Local(queue) => {
                queue.update(wanted, |b| {
                    b.offer(entry, on_topic, wanted);
                    Bound::Fits
                });
            }
        }
    }

    /// Queues a published event if it is `wanted` (else only notes that it
    /// was published: that too counts against the bound with
    /// [`SlowClient::Disconnect`]) and keeps the backlog within its bound.
    /// Returns the events a flush wrote on the way, and what the bound did.
    fn publish(&mut self, entry: &Entry, wanted: bool, config: &HubBuilder) -> (u64, Bound) {
        let on_topic = !entry.topics.is_empty() && self.subscription.matches(entry);
        match &self.sink {
            // A receiver that was dropped takes nothing more: it is gone,
            // not slow.
            Sink::Local(queue) if Arc::strong_count(queue) == 1 => {
                self.gone = true;
                (0, Bound::Fits)
            }
            Sink::Local(queue) => {
                let bound = queue.update(wanted, |b| {
                    b.offer(entry, on_topic, wanted);
                    b.enforce(0, entry, config)
                });
                (0, bound)
            }
            Sink::Socket(_) => {
                if wanted && self.pending.frames.is_empty() {
                    // Not stalled before it had something to take; and
                    // worth a write at once.
                    self.last_write = self.last_write.max(entry.at);
                    self.retry_at = entry.at;
                }
                self.pending.offer(entry, on_topic, wanted);
                let mut delivered = 0;
                if self.pending.over(entry, config) {
                    // A batch queues many events before any write: let the
                    // socket take what it can first, so that only a client
                    // that does not read counts as slow.
                    delivered = self.flush();
                }
                if self.gone {
                    return (delivered, Bound::Fits);
                }
                // A frame partly written must be finished.
                let keep = usize::from(self.offset > 0);
                (delivered, self.pending.enforce(keep, entry, config))
            }
        }
    }

    /// Writes as much of the backlog as the socket takes now. Returns the
    /// number of events written in full. (A receiver's frames are queued
    /// for it as they are pushed.)
    fn flush(&mut self) -> u64 {
        const MAX_FRAMES: usize = 64;
        let Sink::Socket(stream) = &self.sink else {
            return 0;
        };
        let (mut delivered, mut progress) = (0, false);
        // The chunk-size lines of a chunked body, one per frame, built here
        // so that the shared frames themselves stay as encoded.
        let mut heads = [[0u8; 18]; MAX_FRAMES];
        while !self.pending.frames.is_empty() && !self.gone {
            let count = self.pending.frames.len().min(MAX_FRAMES);
            let mut head_lens = [0usize; MAX_FRAMES];
            if self.chunked {
                for (i, p) in self.pending.frames.iter().take(count).enumerate() {
                    head_lens[i] = chunk_head(p.frame.len(), &mut heads[i]);
                }
            }
            let mut slices = Vec::with_capacity(count * 3);
            let mut skip = self.offset;
            for (i, p) in self.pending.frames.iter().take(count).enumerate() {
                let parts: [&[u8]; 3] = if self.chunked {
                    [&heads[i][..head_lens[i]], p.frame.as_bytes(), CHUNK_END]
                } else {
                    [p.frame.as_bytes(), &[], &[]]
                };
                for part in parts {
                    if skip >= part.len() {
                        skip -= part.len();
                    } else {
                        slices.push(IoSlice::new(&part[skip..]));
                        skip = 0;
                    }
                }
            }
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            match stream.write_vectored(&slices) {
                Ok(written) => {
                    progress |= written > 0;
                    let mut left = written;
                    while left > 0 {
                        let front_left = self.wire_len(&self.pending.frames[0]) - self.offset;
                        if left < front_left {
                            self.offset += left;
                            break;
                        }
                        left -= front_left;
                        self.offset = 0;
                        let done = self
                            .pending
                            .pop_front()
                            .expect("written bytes belong to pending frames");
                        delivered += u64::from(matches!(done.kind, Kind::Event(_)));
                    }
                    if written < offered {
                        break; // the socket buffer is full
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        // One clock read per flush: a socket that took nothing waits
        // longer each time, one that took bytes is tried again soon.
        let now = Instant::now();
        if progress {
            self.last_write = now;
            self.backoff = BACKOFF.0;
        } else {
            self.backoff = (self.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
        }
        self.retry_at = now + self.backoff;
        delivered
    }

    /// Whether a backlog has waited longer than the stall timeout without
    /// a byte written.
    fn stalled(&self, now: Instant) -> bool {
        !self.pending.frames.is_empty()
            && self
                .stall
                .is_some_and(|stall| now.saturating_duration_since(self.last_write) > stall)
    }

    /// The bytes a pending frame takes on the wire (with its chunk framing).
    fn wire_len(&self, pending: &Pending) -> usize {
        let len = pending.frame.len();
        if self.chunked {
            let mut head = [0u8; 18];
            chunk_head(len, &mut head) + len + CHUNK_END.len()
        } else {
            len
        }
    }

    /// Whether nothing is written in part: the body can end cleanly.
    fn between_frames(&self) -> bool {
        self.offset == 0
    }
}

/// The coordinator thread: ids, encoding and the history. It forwards
/// published entries to every shard and each new subscriber (with its
/// replay already queued) to the least loaded shard. Each shard's channel is
/// first in, first out, so a subscriber sees its replay and then exactly the
/// entries published after it: the hand-over has no gap and no duplicate.
struct Coordinator {
    history: History,
    next_seq: u64,
    /// The bytes published so far.
    next_offset: u64,
    epoch: String,
    counters: Arc<Counters>,
    config: Arc<HubBuilder>,
    shards: Vec<ShardHandle>,
    /// Entries published since the last forward; every shard gets them in
    /// one message.
    outgoing: Vec<Arc<Entry>>,
}

struct ShardHandle {
    /// Unbounded as a channel; bounded by `queued`, below.
    tx: mpsc::Sender<ShardCommand>,
    load: Arc<AtomicU64>,
    /// The newest event the fan-out thread has handled (see `prune_history`).
    seen: Arc<AtomicU64>,
    /// What the fan-out thread has not taken yet.
    queued: Arc<Room>,
}

/// How many frames (events of published batches, and a subscriber's
/// replay) wait for a fan-out thread, and a way for the coordinator to wait
/// for that to drop.
#[derive(Default)]
struct Room {
    state: Mutex<RoomState>,
    freed: Condvar,
}

#[derive(Default)]
struct RoomState {
    queued: usize,
    /// The coordinator waits: only then is a wake-up worth a system call.
    waiting: bool,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The coordinator's side: waits while `limit` or more frames are
    /// queued, then counts `n` more. A fan-out thread that ended has
    /// dropped its handle: then nothing is waited for.
    fn reserve(self: &Arc<Room>, n: usize, limit: usize) {
        let mut state = self.lock();
        while state.queued >= limit && Arc::strong_count(self) > 1 {
            state.waiting = true;
            // Bounded, so that a fan-out thread that ends is noticed.
            let wait = self.freed.wait_timeout(state, Duration::from_millis(100));
            state = wait.unwrap_or_else(|e| e.into_inner()).0;
            state.waiting = false;
        }
        state.queued += n;
    }

    /// The fan-out thread's side: `n` frames were taken.
    fn release(&self, n: usize) {
        let mut state = self.lock();
        state.queued -= n;
        if state.waiting {
            self.freed.notify_one();
        }
    }
}

enum ShardCommand {
    Publish(Arc<[Arc<Entry>]>),
    Subscribe(Box<Subscriber>),
    Close(SyncSender<()>),
}

/// The most commands handled before the results are passed on: a batch.
/// The coordinator's batches are also at most the inbox's size.
const BATCH: usize = 4096;

impl Coordinator {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut catching_up = false;
        loop {
            // Entries may age out; and the history is pruned to its bounds
            // once the fan-out threads have handled what it holds.
            let wait = Duration::from_millis(if catching_up { 10 } else { 1000 });
            let command = match rx.recv_timeout(wait) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    catching_up = self.prune_history();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return self.close(None),
            };
            let mut next = Some(command);
            let mut handled = 0;
            while let Some(command) = next.take() {
                match command {
                    Command::Publish(topics, event) => self.publish(topics, event),
                    Command::Subscribe(stream, subscription) => {
                        self.subscribe(stream, subscription)
                    }
                    Command::Close(done) => return self.close(Some(done)),
                }
                handled += 1;
                if handled < BATCH.min(self.config.inbox) {
                    next = rx.try_recv().ok();
                }
            }
            self.forward();
            catching_up = self.prune_history();
        }
    }

    /// Sends what was published since the last call to every shard.
    ///
    /// A fan-out thread that falls behind by an inbox's worth of frames
    /// makes the coordinator wait here (and in `subscribe`); the inbox then
    /// fills and `publish` waits. So events on their way are at most about
    /// five inboxes' worth: the inbox, this batch, what a fan-out thread
    /// has queued (up to one batch past the limit), and the batch it is
    /// fanning out. Bounding by frames, not by batches, lets a fan-out
    /// thread that falls behind take everything queued in one round, which
    /// is what keeps its latency down.
    fn forward(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let batch: Arc<[Arc<Entry>]> = std::mem::take(&mut self.outgoing).into();
        for shard in &self.shards {
            shard.queued.reserve(batch.len(), self.config.inbox);
            let _ = shard.tx.send(ShardCommand::Publish(batch.clone()));
        }
    }

    /// Whether `id` has the form of the ids this hub assigns.
    fn is_hub_id(&self, id: &str) -> bool {
        id.strip_prefix(self.epoch.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }

    fn publish(&mut self, topics: Vec<String>, event: Event) {
        let seq = self.next_seq;
        // Saturates rather than wraps: 2^64 events are beyond any hub.
        self.next_seq = seq.saturating_add(1);
        let (event, id) = match event.get_id() {
            Some(id) if !self.is_hub_id(id) => {
                let id = id.to_string();
                (event, id)
            }
            // An id of the hub's form is the hub's to give: so that its
            // ids stay unique and each resumes from one place.
            _ => {
                let id = format!("{}-{}", self.epoch, seq);
                (event.with_valid_id(id.clone()), id)
            }
        };
        let frame = Frame::from(&event);
        let offset = self.next_offset;
        self.next_offset = offset.saturating_add(frame.len() as u64);
        let entry = Arc::new(Entry {
            seq,
            offset,
            id,
            topics,
            event_type: event.get_event().map(str::to_string),
            frame,
            at: Instant::now(),
        });
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.history.push(entry.clone());
        self.prune_history();
        self.outgoing.push(entry);
    }

    /// Applies the history's bounds (see [`History::prune`]) and publishes
    /// its size. Returns whether more is to go once the fan-out threads
    /// have caught up.
    ///
    /// The bounds are measured up to the newest event that every fan-out
    /// thread has handled, not the newest published: a subscriber is
    /// evicted while it is at most half the history behind what its
    /// fan-out thread has handled (see [`HubBuilder::backlog`]), so what it
    /// missed is still here however far the coordinator runs ahead. Entries
    /// past that are on their way to a fan-out thread and in memory anyway;
    /// that queue is bounded by the inbox.
    fn prune_history(&mut self) -> bool {
        let seen = (self.shards.iter())
            .filter(|shard| Arc::strong_count(&shard.seen) > 1) // not ended
            .map(|shard| shard.seen.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let more = self.history.prune(Instant::now(), seen);
        let (len, bytes) = (self.history.entries.len(), self.history.bytes);
        self.counters
            .history_len
            .store(len as u64, Ordering::Relaxed);
        (self.counters.history_bytes).store(bytes as u64, Ordering::Relaxed);
        more
    }

    /// The number of the event a client that last saw `id` saw last, or
    /// `None` when the id is not one the hub can place. A hub-assigned id
    /// is placed by its number (the canonical `<epoch>-<n>` of an event
    /// published, whose retained entry, if any, carries it); a
    /// publisher-chosen one by the newest event with exactly that id,
    /// retained or the newest a topic lost.
    fn resume_seq(&self, id: &str) -> Option<u64> {
        if !self.is_hub_id(id) {
            return self.history.seq_of(id);
        }
        let seq = id[self.epoch.len() + 1..].parse::<u64>().ok()?;
        let canonical = format!("{}-{seq}", self.epoch) == id && (1..self.next_seq).contains(&seq);
        let issued = self.history.get(seq).is_none_or(|e| e.id == id);
        (canonical && issued).then_some(seq)
    }

    fn subscribe(&mut self, sink: Sink, subscription: Subscription) {
        self.prune_history();
        let now = Instant::now();
        let stall = match &sink {
            Sink::Socket(stream) => self.config.stall_timeout.or(stream.write_timeout()),
            Sink::Local(_) => None,
        };
        let mut sub = Subscriber {
            chunked: matches!(&sink, Sink::Socket(stream) if stream.chunked()),
            sink,
            subscription,
            pending: Backlog::default(),
            offset: 0,
            last_write: now,
            retry_at: now,
            backoff: BACKOFF.0,
            stall,
            gone: false,
        };
        let entries = &self.history.entries;
        // Replay starts after `seq` (`None`: no replay, live only).
        let after = |seq: u64| entries.partition_point(|e| e.seq <= seq);
        let mut start = match sub.subscription.last_event_id.clone() {
            Some(id) => match self.resume_seq(&id) {
                Some(seq) if !self.history.lost_after(&sub.subscription, seq) => {
                    self.counters.replay_hits.fetch_add(1, Ordering::Relaxed);
                    after(seq)
                }
                seq => {
                    self.counters.replay_misses.fetch_add(1, Ordering::Relaxed);
                    sub.push(gap_frame("unknown-id"), Kind::Gap);
                    sub.log(
                        &self.config,
                        HubLogKind::Gap {
                            reason: "unknown-id",
                        },
                    );
                    match self.config.unknown_id {
                        UnknownId::ReplayAll => after(seq.unwrap_or(0)),
                        UnknownId::LiveOnly => entries.len(),
                    }
                }
            },
            // A new client: events published since its response head went
            // out are its own, even those that got here before the
            // subscription did (the client may have posted one the moment
            // the stream opened). The history is in publish order.
            None => match &sub.sink {
                Sink::Socket(stream) => {
                    let since = stream.head_sent();
                    entries.partition_point(|e| e.at < since)
                }
                // A local receiver gets what is published after it.
                Sink::Local(_) => entries.len(),
            },
        };
        // The `recent` events before a new client's time come first: find
        // where they start, noting which are wanted (a filter runs once).
        let mut wanted = VecDeque::new();
        if sub.subscription.last_event_id.is_none() {
            let mut recent = sub.subscription.recent;
            while recent > 0 && start > 0 && !sub.gone {
                start -= 1;
                let want = sub.wants(&entries[start], &self.config);
                recent -= usize::from(want);
                wanted.push_front(want);
            }
        }
        // It has seen everything before where its replay starts.
        let next = entries.get(start).map_or(
            Position {
                seq: self.next_seq,
                offset: self.next_offset,
                ..Position::default()
            },
            |e| e.position(),
        );
        match &sub.sink {
            Sink::Socket(_) => sub.pending.next = next,
            Sink::Local(queue) => queue.lock().backlog.next = next,
        }
        for (k, entry) in entries.iter().enumerate().skip(start) {
            let want = match wanted.get(k - start) {
                Some(&want) => want,
                None => sub.wants(entry, &self.config),
            };
            sub.offer(entry, want);
        }
        // Entries published before this subscription must reach the shards
        // before it does: they are in its replay (or before its time).
        self.forward();
        let shard = self
            .shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("a hub has at least one shard");
        shard.load.fetch_add(1, Ordering::Relaxed);
        self.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        // Its replay counts against the bound, as published events do.
        shard.queued.reserve(sub.queued(), self.config.inbox);
        let _ = shard.tx.send(ShardCommand::Subscribe(Box::new(sub)));
    }

    /// Forwards what is pending, closes every shard and waits for them.
    fn close(&mut self, done: Option<SyncSender<()>>) {
        self.forward();
        let mut waits = Vec::new();
        for shard in &self.shards {
            let (tx, rx) = mpsc::sync_channel(1);
            if shard.tx.send(ShardCommand::Close(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv();
        }
        // The fan-out threads handled everything: the counters settle.
        self.prune_history();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// A fan-out thread: writes to its share of the subscribers.
struct Shard {
    subscribers: Vec<Subscriber>,
    counters: Arc<Counters>,
    config: Arc<HubBuilder>,
    load: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    queued: Arc<Room>,
}

impl Shard {
    fn run(mut self, rx: mpsc::Receiver<ShardCommand>) {
        let tick = self
            .config
            .keep_alive
            .map_or(Duration::from_secs(1), |k| k / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut next_tick = Instant::now() + tick;
        loop {
            // Sleep until a command arrives; wake sooner to retry backlogs
            // that a full socket left behind, each after its back-off, and
            // on the tick.
            let retry = (self.subscribers.iter())
                .filter(|s| !s.pending.frames.is_empty())
                .map(|s| s.retry_at)
                .min();
            let wake = retry.map_or(next_tick, |retry| retry.min(next_tick));
            let wait = wake.saturating_duration_since(Instant::now());
            let mut next = match rx.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.close(None),
            };
            let mut handled = 0;
            while let Some(command) = next.take() {
                match command {
                    ShardCommand::Publish(entries) => {
                        self.queued.release(entries.len());
                        for entry in entries.iter() {
                            self.publish(entry);
                        }
                        // Every subscriber has been measured against these.
                        let last = entries.last().map_or(0, |e| e.seq);
                        self.seen.fetch_max(last, Ordering::Relaxed);
                    }
                    ShardCommand::Subscribe(sub) => {
                        self.queued.release(sub.queued());
                        self.subscribers.push(*sub);
                    }
                    ShardCommand::Close(done) => return self.close(Some(done)),
                }
                handled += 1;
                if handled < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                self.tick();
            }
            self.flush_all();
        }
    }

    fn publish(&mut self, entry: &Entry) {
        let (mut delivered, mut evicted, mut dropped) = (0, 0, 0);
        // How far behind a subscriber is counts every event published.
        let measure_all = self.config.slow_client == SlowClient::Disconnect;
        for sub in &mut self.subscribers {
            let wanted = sub.wants(entry, &self.config);
            if !wanted && (sub.gone || !measure_all) {
                continue;
            }
            let (written, bound) = sub.publish(entry, wanted, &self.config);
            delivered += written;
            match bound {
                Bound::Fits => {}
                Bound::Evict => {
                    sub.gone = true;
                    evicted += 1;
                    sub.log(&self.config, HubLogKind::Evicted { stalled: false });
                }
                Bound::Dropped { events: 0, .. } => {}
                Bound::Dropped { events, gap } => {
                    dropped += events;
                    sub.log(&self.config, HubLogKind::DroppedOldest { events });
                    if gap {
                        sub.log(&self.config, HubLogKind::Gap { reason: "lagged" });
                    }
                }
            }
        }
        let c = &self.counters;
        c.delivered.fetch_add(delivered, Ordering::Relaxed);
        c.evicted.fetch_add(evicted, Ordering::Relaxed);
        c.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Keep-alives for idle subscribers, and a check for clients that went
    /// away; backlogs that emptied give their memory back.
    fn tick(&mut self) {
        let keep_alive = self.config.keep_alive;
        for sub in &mut self.subscribers {
            if sub.gone || sub.sink.is_gone() {
                sub.gone = true;
                continue;
            }
            let Sink::Socket(_) = sub.sink else {
                continue; // receivers get no keep-alives
            };
            if sub.pending.frames.is_empty() {
                sub.pending.frames.shrink_to(4);
                let now = Instant::now();
                if keep_alive.is_some_and(|interval| now - sub.last_write >= interval) {
                    sub.push(keep_alive_frame(), Kind::Control);
                    (sub.last_write, sub.retry_at) = (now, now);
                }
            }
        }
    }

    /// Writes every backlog that is due, evicts the stalled, then removes
    /// subscribers that are gone.
    fn flush_all(&mut self) {
        let (mut delivered, mut evicted) = (0, 0);
        let now = Instant::now();
        for sub in &mut self.subscribers {
            if !sub.pending.frames.is_empty() && sub.retry_at <= now {
                delivered += sub.flush();
                if !sub.gone && sub.stalled(now) {
                    sub.gone = true;
                    evicted += 1;
                    sub.log(&self.config, HubLogKind::Evicted { stalled: true });
                }
            }
        }
        self.counters
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
        self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
        let before = self.subscribers.len();
        self.subscribers.retain(|sub| {
            if sub.gone {
                sub.sink.close(sub.between_frames());
            }
            !sub.gone
        });
        let removed = (before - self.subscribers.len()) as u64;
        if removed > 0 {
            self.load.fetch_sub(removed, Ordering::Relaxed);
            self.counters
                .subscribers
                .fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Sends the goodbye (close event, jittered retry), gives the sockets
    /// until the close timeout to take it, then ends every stream.
    fn close(&mut self, done: Option<SyncSender<()>>) {
        let deadline = Instant::now() + self.config.close_timeout;
        // One evicted in this round gets no goodbye, as it would not have
        // a round later.
        for sub in self.subscribers.iter_mut().filter(|s| !s.gone) {
            if let Some(event) = &self.config.close_event {
                sub.push(Frame::from(event), Kind::Control);
            }
            if let Some((base, jitter)) = self.config.close_retry {
                let retry = Event::new().retry(base + jitter.mul_f64(random_unit()));
                sub.push(Frame::from(&retry), Kind::Control);
            }
        }
        while Instant::now() < deadline {
            self.flush_all();
            if self.subscribers.iter().all(|s| s.pending.frames.is_empty()) {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        for sub in &self.subscribers {
            sub.sink.close(sub.between_frames());
        }
        let left = self.subscribers.len() as u64;
        self.subscribers.clear();
        self.load.fetch_sub(left, Ordering::Relaxed);
        self.counters.subscribers.fetch_sub(left, Ordering::Relaxed);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

fn gap_frame(reason: &str) -> Frame {
    Frame::from(Event::new().with_valid_event(GAP_EVENT).data(reason))
}

fn keep_alive_frame() -> Frame {
    Frame::from(Event::new().comment(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, topics: &[&str]) -> Arc<Entry> {
        let frame = Frame::from(Event::new().data("x"));
        Arc::new(Entry {
            seq,
            offset: (seq - 1) * frame.len() as u64,
            id: format!("e-{seq}"),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            event_type: None,
            frame,
            at: Instant::now(),
        })
    }

    #[test]
    fn topic_watermarks_decide_whether_a_resume_has_a_gap() {
        // Total 4, 2 per topic; a: 1, 2; b: 3..=8; everyone: 9.
        let config = Hub::builder().history(4, 1 << 20).topic_history(2, 1 << 20);
        let mut history = History::new(&config);
        let topics: [&[&str]; 9] = [
            &["a"],
            &["a"],
            &["b"],
            &["b"],
            &["b"],
            &["b"],
            &["b"],
            &["b"],
            &[],
        ];
        for (n, topics) in topics.iter().enumerate() {
            history.push(entry(n as u64 + 1, topics));
        }
        // Nothing handled by the fan-out threads yet: nothing dropped.
        assert!(history.prune(Instant::now(), 0));
        assert_eq!(history.entries.len(), 9);
        assert!(!history.prune(Instant::now(), u64::MAX));
        let kept: Vec<u64> = history.entries.iter().map(|e| e.seq).collect();
        assert_eq!(kept, [2, 7, 8, 9], "b's bound, then the total");
        let sub = |topic: &str| Subscription::new().topic(topic);
        #[rustfmt::skip]
        let cases = [
            ("a after 0", sub("a"), 0, true),
            ("a after 1", sub("a"), 1, false),
            ("b after 5", sub("b"), 5, true),
            ("b after 6", sub("b"), 6, false),
            ("c after 0", sub("c"), 0, false),
            ("b only after 6", sub("b").topics_only(), 6, false),
        ];
        for (name, sub, seq, gap) in cases {
            assert_eq!(history.lost_after(&sub, seq), gap, "{name}");
        }
        assert_eq!(history.seq_of("e-1"), Some(1), "a's newest lost id");
        assert_eq!(history.seq_of("e-3"), None, "not b's newest lost");
    }

    #[test]
    fn forgotten_topics_raise_the_floor() {
        let config = Hub::builder().history(1, 1 << 20);
        let mut history = History::new(&config);
        for seq in 1..=100 {
            history.push(entry(seq, &[&format!("t{seq}")]));
            history.prune(Instant::now(), u64::MAX);
        }
        assert!(history.topics.len() <= 64, "{}", history.topics.len());
        assert!(history.floor > 0);
        // A forgotten topic's client gets the gap signal; t100 has its event.
        assert!(history.lost_after(&Subscription::new().topic("t1"), 0));
        let newest = Subscription::new().topic("t100").topics_only();
        assert!(!history.lost_after(&newest, 99));
    }

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
