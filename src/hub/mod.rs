//! The broadcast hub: publish from any thread; every subscribed stream or
//! [`Receiver`] gets the events for it, in order, and a reconnecting client
//! resumes after its `Last-Event-ID`.
//!
//! ```text
//! publish() ──mpsc──▶ coordinator ──mpsc──▶ fan-out threads ──non-blocking writev──▶ sockets
//!                     ids, the history      (each owns a share of the subscribers)
//! ```
//!
//! A resume after an id none of the client's topics lost an event after
//! gets what it missed, without gap or duplicate; otherwise first the gap
//! signal ([`GAP_EVENT`], then see [`UnknownId`]). Close the hub before the
//! server: a server's shutdown waits (at most a second) for its streams.

mod fanout;
mod history;
mod receiver;
mod redis;

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{fmt, io, thread};

use crate::event::{Event, Frame};
use crate::http::{Request, Response};
use crate::server::{Accept, EventStream};
use fanout::{Shard, Sink};
use history::{Coordinator, Entry, History};
use receiver::LocalQueue;

pub use receiver::Receiver;
pub use redis::RedisLog;

/// The event type of the gap signal (it has no id): the subscriber may have
/// missed events. Its data is `unknown-id` (the hub cannot place the
/// `Last-Event-ID`, or lost events after it) or `lagged` (dropped for a slow
/// client). In a browser: `source.addEventListener("stdsse-gap", ...)`.
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
        /// The signal's data (see [`GAP_EVENT`]).
        reason: &'static str,
    },
    /// Not about a subscriber: the Redis connections ([`HubBuilder::redis`]).
    Redis(RedisLog<'a>),
}

/// What happens to a subscriber whose backlog passes its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowClient {
    /// Close its connection (the default); it resumes from the history.
    Disconnect,
    /// Drop its oldest pending events and send the gap signal instead.
    DropOldest,
}

/// What follows the gap signal for an unknown `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownId {
    /// Every retained event, then the live stream (the default).
    ReplayAll,
    /// Only the live stream.
    LiveOnly,
}

/// Declares [`HubStats`] and the `Counters` the hub's threads add to.
macro_rules! counters {
    ($($name:ident: $metric:literal, $kind:literal, $help:literal;)*) => {
        stats! {
            /// The hub's counters.
            pub struct HubStats("stdsse_hub_") { $($name: u64, $metric, $kind, $help;)* }
        }

        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn stats(&self) -> HubStats {
                HubStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    subscribers: "subscribers", "gauge", "Subscribers now.";
    published: "published_total", "counter", "Events published.";
    delivered: "delivered_total", "counter", "Events delivered to a subscriber.";
    evicted: "evicted_total", "counter", "Subscribers disconnected as slow or stalled.";
    dropped: "dropped_total", "counter", "Events dropped from slow subscribers' backlogs.";
    replay_hits: "replay_hits_total", "counter", "Resumes without a gap.";
    replay_misses: "replay_misses_total", "counter", "Resumes with the gap signal.";
    history_len: "history_events", "gauge", "Events in the history.";
    history_bytes: "history_bytes", "gauge", "Bytes of the history.";
}

/// `publish` failed, and why. The event is given back, as by
/// `std::sync::mpsc::SendError`.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishError(pub Event, pub PublishErrorKind);

/// Why `publish` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The hub is closed.
    Closed,
    /// Redis is down ([`HubBuilder::redis`]): try later (HTTP: `503`).
    Unavailable,
    /// Over 16 MiB encoded, too large for Redis.
    TooLarge,
}

/// `subscribe` or `receiver` failed: the hub is closed (and the stream too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeError;

/// `close` did not finish within its timeout (the hub is closed anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseTimeoutError;

error_display! {
    PublishError(PublishError(_, kind), f) => f.write_str(match kind {
        PublishErrorKind::Closed => "publishing on a closed hub",
        PublishErrorKind::Unavailable => "Redis is unavailable",
        PublishErrorKind::TooLarge => "too large for Redis",
    });
    SubscribeError(_, f) => f.write_str("subscribing to a closed hub");
    CloseTimeoutError(_, f) => f.write_str("the hub did not finish closing in time");
}

/// Decides, per subscriber, whether an event is for it (besides topics).
pub type Filter = Arc<dyn Fn(&Published<'_>) -> bool + Send + Sync>;

/// What a [`Filter`] sees of a published event.
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
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    topics: Vec<String>,
    topics_only: bool,
    last_event_id: Option<String>,
    recent: usize,
    filter: Option<Hook<Filter>>,
    /// For the log (set by `Hub::subscribe`).
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

    setters! {
        /// Receive none of the events published to everyone ([`Hub::publish`]).
        topics_only() { topics_only: true }
        /// Without a last event id, first receive the newest `n` retained events
        /// this subscription would have received (default 0).
        recent(n: usize) { recent: n }
        /// Resume after this id (the client's `Last-Event-ID`). An empty id is
        /// no id, as in the standard (a browser never sends one).
        last_event_id(id: Option<&str>) {
            last_event_id: id.filter(|id| !id.is_empty()).map(str::to_string)
        }
        /// Receive only the events `filter` accepts. It runs on the hub's
        /// threads, once per event and subscriber: keep it quick. If it panics,
        /// this subscription ends and the others go on.
        filter(filter: impl Fn(&Published<'_>) -> bool + Send + Sync + 'static) {
            filter: Some(Hook(Arc::new(filter)))
        }
    }

    /// Whether `entry` is for its topics (or everyone's), before the filter.
    fn matches(&self, entry: &Entry) -> bool {
        (entry.topics.is_empty() && !self.topics_only)
            || entry.topics.iter().any(|t| self.topics.contains(t))
    }
}

builder! {
    /// Builds a [`Hub`]; every setting has a default.
    #[derive(Clone, Debug)]
    pub struct HubBuilder {
        history_events: usize = 2000,
        history_bytes: usize = 2 << 20,
        history_max_age: Option<Duration> = None,
        topic_history: Option<(usize, usize)> = None,
        backlog_events: usize = 1000,
        backlog_bytes: usize = 1 << 20,
        stall_timeout: Option<Duration> = None,
        slow_client: SlowClient = SlowClient::Disconnect,
        unknown_id: UnknownId = UnknownId::ReplayAll,
        keep_alive: Option<Duration> = Some(Duration::from_secs(15)),
        inbox: usize = 1024,
        close_event: Option<Event> = None,
        close_retry: Option<(Duration, Duration)> = None,
        close_timeout: Duration = Duration::from_secs(2),
        fanout_threads: usize = thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        log: Option<Hook<Arc<LogFn>>> = None,
        redis: Option<(Result<crate::redis::RedisUrl, crate::redis::RedisError>, String, redis::Start)>
            = None,
        // Set by `build`: the bound is checked for every subscriber and event.
        behind: [u64; 4] = [0; 4],
    }
}

type LogFn = dyn Fn(&HubLog<'_>) + Send + Sync;

/// An application's callback (a filter, the log), shown as `..`.
#[derive(Clone)]
struct Hook<F>(F);

impl<F> fmt::Debug for Hook<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

impl HubBuilder {
    setters! {
        /// The history's bounds in events and bytes (encoded, with the topics'
        /// names; default 2000, 2 MiB): the memory kept for resumes. Zero events
        /// disables replay.
        history(events: usize, bytes: usize) { history_events: events, history_bytes: bytes }
        /// The history's bounds per topic (default: half the total, at least one
        /// event), so a busy topic cannot push a quiet one's events out. An event
        /// counts against each of its topics; one to everyone, the total only.
        topic_history(events: usize, bytes: usize) { topic_history: Some((events.max(1), bytes)) }
        /// Also drop history entries older than this (default: no age limit).
        history_max_age(age: Option<Duration>) { history_max_age: age }
        /// How far a subscriber may fall behind (default 1000 events, 1 MiB): the
        /// memory a slow client holds. [`SlowClient::Disconnect`] counts the hub's
        /// (and its topics') events since the first not sent in full, capped at
        /// half the history's bounds so that its resume point is retained;
        /// [`SlowClient::DropOldest`], its own queued frames and bytes.
        backlog(events: usize, bytes: usize) { backlog_events: events.max(1), backlog_bytes: bytes.max(1) }
        /// A stream whose backlog makes no progress for this long is disconnected
        /// (default: [`Server::write_timeout`](crate::Server::write_timeout)).
        stall_timeout(timeout: Duration) { stall_timeout: Some(timeout) }
        /// What happens past the backlog bound (default [`SlowClient::Disconnect`]).
        slow_client(policy: SlowClient) { slow_client: policy }
        /// What follows an unknown id's gap signal (default [`UnknownId::ReplayAll`]).
        unknown_id(policy: UnknownId) { unknown_id: policy }
        /// A keep-alive comment after this long without a write (default 15 s).
        keep_alive(interval: Option<Duration>) { keep_alive: interval }
        /// How many publishes and subscriptions may queue before those calls wait
        /// (default 1,024): it bounds the events on their way to the fan-out.
        inbox(commands: usize) { inbox: commands.max(1) }
        /// An event every subscriber receives when the hub closes.
        close_event(event: Option<Event>) { close_event: event }
        /// A `retry:` hint sent at close: `base` plus up to `jitter`, per subscriber.
        close_retry(base: Duration, jitter: Duration) { close_retry: Some((base, jitter)) }
        /// How long `close` may spend delivering the final bytes (default 2 s).
        close_timeout(timeout: Duration) { close_timeout: timeout }
        /// How many fan-out threads write to subscribers (default: one per core, at most 4).
        fanout_threads(threads: usize) { fanout_threads: threads.max(1) }
        /// Calls `log` for what the hub does to a subscriber (default: none). It
        /// runs on the hub's threads: keep it quick; a panic in it is caught.
        log(log: impl Fn(&HubLog<'_>) + Send + Sync + 'static) {
            log: Some(Hook(Arc::new(log)))
        }
        /// Shares the hub with every other on this Redis stream (default: none): `url` is
        /// `redis://[user:password@]host[:port][/db]`, checked and connected to by
        /// [`build`](HubBuilder::build), which returns once the hub holds what the stream held
        /// (at most 2 s), for `recent`. All deliver the same events in one order, each hub's
        /// own as published: `publish` returns once the event is queued, so two published one
        /// after the other on two hubs may come in either order. Ids resume on any; the stream
        /// is bounded by the history's counts, in all and per topic; a resume across a loss, and
        /// every live subscriber when the hub notices one, get the gap signal; while Redis is
        /// down `publish` fails ([`PublishErrorKind::Unavailable`]). No TLS: see [`crate::redis`].
        redis(url: &str, stream: &str) {
            // `start` is reached only through here, so a program that never
            // calls `redis` links none of the engine.
            redis: Some((crate::redis::RedisUrl::parse(url), stream.into(), redis::start))
        }
    }

    fn topic_bound(&self) -> (usize, usize) {
        self.topic_history.unwrap_or(((self.history_events / 2).max(1), self.history_bytes / 2))
    }

    /// The [`backlog`](HubBuilder::backlog) bound with [`SlowClient::Disconnect`].
    fn behind_bound(&self) -> [u64; 4] {
        let (events, bytes, topic) = (self.backlog_events, self.backlog_bytes, self.topic_bound());
        let replay = self.history_events > 0;
        let cap = |n: usize, h: usize| n.min(if replay { (h / 2).max(1) } else { n }) as u64;
        let (h_events, h_bytes) = (self.history_events, self.history_bytes);
        [cap(events, h_events), cap(bytes, h_bytes), cap(events, topic.0), cap(bytes, topic.1)]
    }

    /// Calls the log hook, if any (one that panics must not take a thread down).
    fn emit(&self, kind: HubLogKind<'_>, peer: Option<SocketAddr>) {
        if let Some(hook) = &self.log {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| (hook.0)(&HubLog { kind, peer })));
        }
    }

    /// Starts the hub's threads (fails on a bad Redis URL).
    pub fn build(mut self) -> io::Result<Hub> {
        self.behind = self.behind_bound();
        let (tx, rx) = mpsc::sync_channel(self.inbox);
        let counters = Arc::new(Counters::default());
        let epoch = format!("{:08x}", crate::util::random_u64() as u32);
        let config = Arc::new(self);
        let start = config.redis.as_ref().map(|r| r.2);
        let (redis, engine) = start.map_or(Ok(None), |start| start(&config, &tx))?.unzip();
        let (redis, loading) = redis.unzip();
        let shards = (0..config.fanout_threads).map(|n| Shard::spawn(n, &config));
        let coordinator = Coordinator {
            shards: shards.collect::<io::Result<_>>()?,
            history: History::new(&config),
            next_seq: 1,
            next_offset: 0,
            epoch: if engine.is_some() { String::new() } else { epoch.clone() },
            counters: counters.clone(),
            config,
            outgoing: Vec::new(),
            redis: engine,
        };
        crate::util::spawn("stdsse-hub".into(), None, move || coordinator.run(rx))?;
        loading.map(|loading| loading.recv_timeout(Duration::from_secs(2)));
        let closed = AtomicBool::new(false);
        Ok(Hub { inner: Arc::new(HubInner { tx, closed, counters, epoch, redis }) })
    }
}

struct HubInner {
    tx: SyncSender<Command>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    epoch: String,
    redis: Option<redis::Link>,
}

/// A handle to a broadcast hub; clone it freely, publish from any thread.
///
/// ```no_run
/// use stdsse::hub::{Hub, Subscription};
/// use stdsse::{Event, Request, Response, Server};
///
/// # fn authenticate(req: &Request) -> Result<String, Response> { unimplemented!() }
/// let hub = Hub::new()?;
/// let mut server = Server::bind("127.0.0.1:8080")?;
/// // Each user reads their own topic, and the topic everyone reads.
/// server.sse("/events", hub.handler(|req| {
///     let user = authenticate(req)?;
///     Ok(Subscription::new().topic(format!("user/{user}")).topic("news"))
/// }));
/// hub.publish_to(&["user/ann"], Event::new().data("for Ann only")).unwrap();
/// hub.publish_to(&["news"], Event::new().data("hello, everyone")).unwrap();
/// server.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("epoch", &self.epoch()).field("stats", &self.stats()).finish()
    }
}

/// What the hub's threads are sent. Every queue of the hub carries it, the
/// Redis engine's too: each channel type is a copy of std's channel code.
enum Command {
    Publish(Vec<String>, Event),
    Subscribe(Sink, Subscription),
    Close(Done),
    Redis(redis::Msg),
    Shard(fanout::ShardCommand),
}

/// Dropped when a thread has finished closing: the waiter's `recv` returns.
type Done = SyncSender<Command>;

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
    /// full. It keeps its id unless it has none, an empty one or one of the
    /// hub's form (`<epoch>-...`); a repeated id resumes after its newest.
    pub fn publish(&self, event: Event) -> Result<(), PublishError> {
        self.publish_to::<&str>(&[], event)
    }

    /// Publishes an event to the subscribers of any of `topics`, once each.
    pub fn publish_to<T: AsRef<str>>(
        &self,
        topics: &[T],
        event: Event,
    ) -> Result<(), PublishError> {
        // Once each, also against its bound.
        let topics = crate::util::sorted_set(topics.iter().map(|t| t.as_ref().to_string()));
        if let (Some(link), false) = (&self.inner.redis, self.is_closed()) {
            return redis::publish(link, topics, event);
        }
        match self.send(Command::Publish(topics, event)) {
            Some(Command::Publish(_, event)) => Err(PublishError(event, PublishErrorKind::Closed)),
            _ => Ok(()),
        }
    }

    /// Hands an open event stream to the hub, which replays from the last
    /// event id, writes to it from now on and closes it when it goes away.
    pub fn subscribe(&self, stream: EventStream, sub: Subscription) -> Result<(), SubscribeError> {
        let sub = Subscription { peer: Some(stream.peer_addr()), ..sub };
        let command = Command::Subscribe(Sink::Socket(stream.detach()), sub);
        self.send(command).map_or(Ok(()), |_| Err(SubscribeError))
    }

    /// Subscribes in this process: the [`Receiver`] gets the frames a stream
    /// would be sent, except keep-alives, under the same backlog bound (with
    /// no kernel buffer in front: size it for the bursts you publish).
    ///
    /// ```
    /// use stdsse::hub::{Hub, Subscription};
    /// use stdsse::Event;
    ///
    /// let hub = Hub::new()?;
    /// let receiver = hub.receiver(Subscription::new()).unwrap();
    /// hub.publish(Event::new().data("hello")).unwrap();
    /// assert!(receiver.recv().unwrap().as_bytes().ends_with(b"data: hello\n\n"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receiver(&self, subscription: Subscription) -> Result<Receiver, SubscribeError> {
        let queue = LocalQueue::new(&self.inner.counters);
        let command = Command::Subscribe(Sink::Local(queue.clone()), subscription);
        self.send(command).map_or(Ok(Receiver { queue }), |_| Err(SubscribeError))
    }

    /// Sends `command` to the coordinator; gives it back if the hub is closed.
    fn send(&self, command: Command) -> Option<Command> {
        if self.is_closed() {
            return Some(command);
        }
        self.inner.tx.send(command).err().map(|e| e.0)
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

    /// For public topics only: a [`handler`](Hub::handler) whose topics are the
    /// values of the query parameter `topic_param` (`?topic=a&topic=b`).
    pub fn public_handler(
        &self,
        topic_param: &str,
    ) -> impl Fn(&Request) -> Result<Accept, Response> + Send + Sync + 'static {
        let param = topic_param.to_string();
        self.handler(move |req| {
            let topics = req.query_params().into_iter().filter(|(n, _)| *n == param);
            Ok(topics.fold(Subscription::new(), |s, (_, topic)| s.topic(topic)))
        })
    }

    /// Ends every stream (after the close event and retry hint) and stops the
    /// hub's threads, waiting at most the close timeout. A racing `publish`
    /// may be accepted and discarded, as on a closing `mpsc` channel.
    pub fn close(&self) -> Result<(), CloseTimeoutError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Slack over the close timeout, also for a full inbox (rare: polled).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (done_tx, done_rx) = mpsc::sync_channel(0);
        let mut command = Command::Close(done_tx);
        while let Err(TrySendError::Full(back)) = self.inner.tx.try_send(command) {
            if Instant::now() >= deadline {
                return Err(CloseTimeoutError);
            }
            command = back;
            thread::sleep(Duration::from_millis(1));
        }
        let done = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        (!matches!(done, Err(RecvTimeoutError::Timeout))).then_some(()).ok_or(CloseTimeoutError)
    }

    /// Whether [`close`](Hub::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// The epoch part of the ids this hub assigns (`<epoch>-<n>`); on Redis,
    /// ids carry the stream's epoch instead (`<epoch>-<ms>-<seq>`).
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// The hub's counters now.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inner.counters.stats()
    }
}
