//! The fan-out threads (each writes a share of the subscribers' backlogs
//! with non-blocking vectored writes), the backlog bound and the slow-client policy.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use std::{io, thread};

use super::history::{drain, Coordinator, Entry};
use super::receiver::LocalQueue;
use super::GAP_EVENT;
use super::{Command, Counters, Done, HubBuilder, HubLogKind, Published, SlowClient, Subscription};
use crate::event::{Event, Frame};
use crate::stream::{goodbye, keep_alive_frame, tick, Detached, MAX_FRAMES};
use crate::util::{later, lock, spawn, wait_until};

/// A place in the hub's sequence: the events and bytes published before it,
/// in all and to the subscriber's topics.
pub(super) type Count = [u64; 4];

pub(super) struct Pending {
    pub(super) frame: Frame,
    pub(super) kind: Kind,
}

/// What a pending frame is: only events count as delivered or dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A published event, from where to where in the sequence.
    Event(Count, Count),
    Gap,
    Control,
}

#[derive(Default)]
pub(super) struct Backlog {
    pub(super) frames: VecDeque<Pending>,
    pub(super) bytes: usize,
    /// Where the first event not yet sent in full starts (the client's
    /// `Last-Event-ID` is the one before it), and where the newest ends.
    pub(super) next: Count,
    end: Count,
}

impl Backlog {
    pub(super) fn push(&mut self, frame: Frame, kind: Kind) {
        self.bytes += frame.len();
        self.frames.push_back(Pending { frame, kind });
    }

    pub(super) fn pop_front(&mut self) -> Option<Pending> {
        let pending = self.frames.pop_front()?;
        self.bytes -= pending.frame.len();
        if let Kind::Event(_, end) = pending.kind {
            self.next = end;
        }
        Some(pending)
    }

    /// Notes a published event (`on_topic`: for one of the subscriber's
    /// topics), and queues it if `wanted`.
    pub(super) fn offer(&mut self, entry: &Entry, on_topic: bool, wanted: bool) {
        let (len, t) = (entry.frame.len() as u64, u64::from(on_topic));
        let start = [entry.seq, entry.offset, self.end[2], self.end[3]];
        self.end = [entry.seq + 1, entry.offset + len, start[2] + t, start[3] + t * len];
        if wanted {
            self.push(entry.frame.clone(), Kind::Event(start, self.end));
        }
    }

    fn over_own(&self, config: &HubBuilder) -> bool {
        self.frames.len() > config.backlog_events || self.bytes > config.backlog_bytes
    }

    fn first_event(&self) -> Option<Count> {
        let start = |p: &Pending| if let Kind::Event(s, _) = p.kind { Some(s) } else { None };
        self.frames.iter().find_map(start)
    }

    pub(super) fn over(&self, config: &HubBuilder) -> bool {
        if config.slow_client == SlowClient::DropOldest {
            return self.over_own(config);
        }
        let over = |i: usize| self.end[i].saturating_sub(self.next[i]) > config.behind[i];
        (over(0) || over(1) || over(2) || over(3)) && self.first_event().is_some()
    }

    /// Applies the slow-client policy if the backlog is over its bound: `None`
    /// to evict, or the events dropped (the oldest after the first `keep`
    /// frames, as a frame partly written must be finished) until it fits, and
    /// whether a new gap signal took their place.
    pub(super) fn enforce(&mut self, keep: usize, config: &HubBuilder) -> Option<(u64, bool)> {
        if !self.over(config) {
            return Some((0, false));
        }
        if config.slow_client == SlowClient::Disconnect {
            return match self.first_event() {
                // It had been sent everything it wanted: measure from here.
                Some(first) if first[0] + 1 == self.end[0] => {
                    self.next = first;
                    Some((0, false))
                }
                _ => None,
            };
        }
        let gap_queued = self.frames.get(keep).is_some_and(|p| p.kind == Kind::Gap);
        let first = keep + usize::from(gap_queued);
        let mut events = 0;
        while self.over_own(config) && self.frames.len() > first + 1 {
            let p = self.frames.remove(first).expect("more frames than `first`");
            self.bytes -= p.frame.len();
            events += u64::from(matches!(p.kind, Kind::Event(..)));
        }
        let gap = events > 0 && !gap_queued;
        if gap {
            self.push(gap_frame("lagged"), Kind::Gap);
            self.frames.make_contiguous()[keep..].rotate_right(1);
        }
        Some((events, gap))
    }
}

/// Where a subscriber's frames go.
pub(super) enum Sink {
    Socket(Detached),
    /// A [`Receiver`](super::Receiver): the queue is the backlog.
    Local(Arc<LocalQueue>),
}

impl Sink {
    fn is_gone(&self) -> bool {
        match self {
            Sink::Socket(stream) => stream.is_gone(),
            Sink::Local(queue) => Arc::strong_count(queue) == 1, // the receiver was dropped
        }
    }
}

impl Drop for Sink {
    /// A receiver's subscription ends however its subscriber goes (even in a
    /// panic): `recv` must not wait forever.
    fn drop(&mut self) {
        if let Sink::Local(queue) = self {
            queue.end();
        }
    }
}

pub(super) struct Subscriber {
    pub(super) sink: Sink,
    pub(super) subscription: Subscription,
    /// What waits to be written to a socket (a receiver's is its queue).
    pub(super) pending: Backlog,
    /// Bytes of the first pending frame already written.
    pub(super) offset: usize,
    /// The last write, or when the backlog filled from empty: the keep-alive and stall clock.
    pub(super) last_write: Instant,
    /// When a socket that did not take everything is tried again, after `backoff`.
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    pub(super) stall: Option<Duration>,
    pub(super) gone: bool,
    counters: Arc<Counters>,
}

/// The back-off of a socket that takes nothing: the first and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(250));

impl Subscriber {
    pub(super) fn new(sink: Sink, subscription: Subscription, hub: &Coordinator) -> Subscriber {
        let stall = match &sink {
            Sink::Socket(stream) => hub.config.stall_timeout.or(stream.write_timeout()),
            Sink::Local(_) => None,
        };
        let now = Instant::now();
        Subscriber {
            sink,
            subscription,
            pending: Backlog::default(),
            offset: 0,
            last_write: now,
            retry_at: now,
            backoff: BACKOFF.0,
            stall,
            gone: false,
            counters: hub.counters.clone(),
        }
    }

    /// Whether `entry` is for this subscriber. A filter that panics ends its
    /// own subscription, not the fan-out thread and every subscriber on it.
    pub(super) fn wants(&mut self, entry: &Entry, config: &HubBuilder) -> bool {
        let sub = &self.subscription;
        if self.gone || !sub.matches(entry) {
            return false;
        }
        let Some(super::Hook(filter)) = &sub.filter else { return true };
        let (topics, id, frame) = (&entry.topics, &entry.id, &entry.frame);
        let published = Published { topics, event_type: entry.event_type.as_deref(), id, frame };
        panic::catch_unwind(AssertUnwindSafe(|| filter(&published))).unwrap_or_else(|panic| {
            self.gone = true;
            let message = (panic.downcast_ref::<&str>().copied())
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
            self.log(config, HubLogKind::FilterPanicked { message });
            false
        })
    }

    pub(super) fn log(&self, config: &HubBuilder, kind: HubLogKind<'_>) {
        config.emit(kind, self.subscription.peer);
    }

    /// What a subscription counts against a shard's queue: itself and its
    /// replay (a receiver's is in its queue).
    pub(super) fn queued(&self) -> usize {
        1 + self.pending.frames.len()
    }

    /// Runs `update` on the backlog (waking a receiver if `wake`).
    pub(super) fn backlog<R>(&mut self, wake: bool, update: impl FnOnce(&mut Backlog) -> R) -> R {
        match &self.sink {
            Sink::Socket(_) => update(&mut self.pending),
            Sink::Local(queue) => queue.update(wake, update),
        }
    }

    /// Queues a frame that does not count against the bound.
    pub(super) fn push(&mut self, frame: Frame, kind: Kind) {
        self.backlog(true, |b| b.push(frame, kind));
    }

    /// Offers an event (see [`Backlog::offer`]), without the bound.
    pub(super) fn offer(&mut self, entry: &Entry, wanted: bool) {
        let on_topic = !entry.topics.is_empty() && (wanted || self.subscription.matches(entry));
        self.backlog(wanted, |b| b.offer(entry, on_topic, wanted));
    }

    /// Offers a published event and keeps the backlog within its bound (how
    /// far behind it is counts every event with [`SlowClient::Disconnect`]).
    fn publish(&mut self, entry: &Entry, config: &HubBuilder) {
        let wanted = self.wants(entry, config);
        // A dropped receiver is gone, not slow.
        self.gone |= matches!(self.sink, Sink::Local(_)) && self.sink.is_gone();
        if self.gone || (!wanted && config.slow_client == SlowClient::DropOldest) {
            return;
        }
        if wanted && self.pending.frames.is_empty() {
            // Not stalled before it had something to take; worth a write now.
            self.last_write = self.last_write.max(entry.at);
            self.retry_at = entry.at;
        }
        let on_topic = !entry.topics.is_empty() && (wanted || self.subscription.matches(entry));
        // A receiver takes the offer and the bound under one lock (nothing is written between).
        let local = matches!(self.sink, Sink::Local(_));
        if !local {
            self.pending.offer(entry, on_topic, wanted);
            // A batch queues many before any write: only a client that does not read is slow.
            if self.pending.over(config) {
                self.flush();
            }
            if self.gone {
                return;
            }
        }
        let keep = usize::from(self.offset > 0);
        let outcome = self.backlog(wanted, |b| {
            if local {
                b.offer(entry, on_topic, wanted);
            }
            b.enforce(keep, config)
        });
        let Some((events, gap)) = outcome else { return self.evict(config, false) };
        if events > 0 {
            self.counters.dropped.fetch_add(events, Ordering::Relaxed);
            self.log(config, HubLogKind::DroppedOldest { events });
        }
        if gap {
            self.log(config, HubLogKind::Gap { reason: "lagged" });
        }
    }

    /// Ends the subscription of a slow client.
    fn evict(&mut self, config: &HubBuilder, stalled: bool) {
        self.gone = true;
        self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        self.log(config, HubLogKind::Evicted { stalled });
    }

    /// Writes what a socket takes now.
    fn flush(&mut self) {
        let Sink::Socket(stream) = &self.sink else { return };
        let (mut delivered, mut progress) = (0, false);
        while !self.pending.frames.is_empty() && !self.gone {
            let frames = self.pending.frames.iter().take(MAX_FRAMES).map(|p| &p.frame);
            let offered =
                frames.clone().map(|f| stream.wire_len(f.len())).sum::<usize>() - self.offset;
            match stream.write_frames(frames, self.offset) {
                Ok(written) => {
                    (progress, self.offset) = (progress || written > 0, self.offset + written);
                    let wire_len = |p: &Pending| stream.wire_len(p.frame.len());
                    while let Some(len) = self.pending.frames.front().map(wire_len) {
                        if len > self.offset {
                            break;
                        }
                        self.offset -= len;
                        let sent = self.pending.pop_front().expect("a front frame");
                        delivered += u64::from(matches!(sent.kind, Kind::Event(..)));
                    }
                    if written < offered {
                        break; // the socket buffer is full
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        let now = Instant::now();
        self.backoff = (self.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
        if progress {
            (self.backoff, self.last_write) = (BACKOFF.0, now);
        }
        self.retry_at = now + self.backoff;
        self.counters.delivered.fetch_add(delivered, Ordering::Relaxed);
    }
}

/// What the coordinator and a fan-out thread share.
#[derive(Default)]
pub(super) struct ShardShared {
    /// Its subscribers.
    pub(super) load: AtomicU64,
    /// The newest event the fan-out thread has handled (see `prune_history`).
    pub(super) seen: AtomicU64,
    /// The frames (published or replayed) it has not taken yet, and whether
    /// the coordinator waits for that to drop.
    queued: Mutex<(usize, bool)>,
    freed: Condvar,
}

pub(super) struct ShardHandle {
    /// Bounded by the frames queued (and as a channel by the inbox).
    tx: SyncSender<Command>,
    pub(super) shared: Arc<ShardShared>,
}

impl ShardHandle {
    pub(super) fn ended(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Sends `command`, which counts `frames` against the queue; waits first
    /// while `limit` or more frames are queued, unless the thread ended.
    pub(super) fn send(&self, command: Command, frames: usize, limit: usize) -> bool {
        let mut state = lock(&self.shared.queued);
        while state.0 >= limit && !self.ended() {
            state.1 = true;
            // Bounded, so that a fan-out thread that ends is noticed.
            let deadline = Instant::now() + Duration::from_millis(100);
            state = wait_until(&self.shared.freed, state, Some(deadline)).unwrap_or_else(|s| s);
            state.1 = false;
        }
        state.0 += frames;
        drop(state);
        self.tx.send(command).is_ok()
    }
}

pub(super) enum ShardCommand {
    Publish(Arc<[Arc<Entry>]>),
    Subscribe(Box<Subscriber>),
    Gap(&'static str), // for every subscriber: the Redis stream was lost
}

/// A fan-out thread: writes to its share of the subscribers.
pub(super) struct Shard {
    subscribers: Vec<Subscriber>,
    config: Arc<HubBuilder>,
    shared: Arc<ShardShared>,
}

impl Shard {
    pub(super) fn spawn(n: usize, config: &Arc<HubBuilder>) -> io::Result<ShardHandle> {
        let (tx, rx) = mpsc::sync_channel(config.inbox);
        let shared = Arc::new(ShardShared::default());
        let shard =
            Shard { subscribers: Vec::new(), config: config.clone(), shared: shared.clone() };
        spawn(format!("stdsse-fanout-{n}"), None, move || shard.run(rx))?;
        Ok(ShardHandle { tx, shared })
    }

    /// The fan-out thread's side of the queue: `n` frames were taken.
    fn release(&self, n: usize) {
        let mut state = lock(&self.shared.queued);
        state.0 -= n;
        if state.1 {
            self.shared.freed.notify_one();
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let tick = tick(self.config.keep_alive);
        let mut next_tick = Instant::now() + tick;
        loop {
            // Wake for a command, a backlog's retry, or the tick.
            let wake = (self.subscribers.iter())
                .filter(|s| !s.pending.frames.is_empty())
                .fold(next_tick, |wake, s| wake.min(s.retry_at));
            let wait = wake.saturating_duration_since(Instant::now());
            let closed = drain(&rx, wait, usize::MAX, |command| match command {
                Command::Shard(ShardCommand::Publish(entries)) => {
                    self.release(entries.len());
                    let (subs, config) = (&mut self.subscribers, &self.config);
                    entries.iter().for_each(|e| subs.iter_mut().for_each(|s| s.publish(e, config)));
                    // Every subscriber has been measured against these.
                    let last = entries.last().map_or(0, |e| e.seq);
                    self.shared.seen.fetch_max(last, Ordering::Relaxed);
                    Ok(())
                }
                Command::Shard(ShardCommand::Subscribe(sub)) => {
                    self.release(sub.queued());
                    self.subscribers.push(*sub);
                    Ok(())
                }
                Command::Shard(ShardCommand::Gap(reason)) => {
                    for sub in &mut self.subscribers {
                        sub.push(gap_frame(reason), Kind::Gap);
                        sub.log(&self.config, HubLogKind::Gap { reason });
                    }
                    Ok(())
                }
                Command::Close(done) => Err(done),
                _ => Ok(()),
            });
            if let Err(done) = closed {
                return self.close(done);
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                self.tick();
            }
            self.flush_all();
        }
    }

    /// Keep-alives for idle streams, and a check for clients that went away;
    /// backlogs that emptied give their memory back.
    fn tick(&mut self) {
        for sub in &mut self.subscribers {
            sub.gone = sub.gone || sub.sink.is_gone();
            if sub.gone || matches!(sub.sink, Sink::Local(_)) || !sub.pending.frames.is_empty() {
                continue; // receivers get no keep-alives
            }
            sub.pending.frames.shrink_to(4);
            let now = Instant::now();
            if (self.config.keep_alive).is_some_and(|interval| now - sub.last_write >= interval) {
                sub.push(keep_alive_frame(), Kind::Control);
                (sub.last_write, sub.retry_at) = (now, now);
            }
        }
    }

    /// Writes every backlog that is due, evicts the stalled, removes the gone.
    fn flush_all(&mut self) {
        let now = Instant::now();
        for sub in &mut self.subscribers {
            if !sub.pending.frames.is_empty() && sub.retry_at <= now {
                sub.flush();
                let idle = now.saturating_duration_since(sub.last_write);
                let stalled = sub.stall.is_some_and(|stall| idle > stall);
                if !sub.gone && !sub.pending.frames.is_empty() && stalled {
                    sub.evict(&self.config, true);
                }
            }
        }
        self.remove(|sub| sub.gone);
    }

    /// Ends the streams of the subscribers `which` selects and removes them.
    fn remove(&mut self, which: impl Fn(&Subscriber) -> bool) {
        self.subscribers.retain(|sub| {
            if !which(sub) {
                return true;
            }
            if let Sink::Socket(stream) = &sub.sink {
                stream.close(sub.offset == 0); // nothing written in part
            }
            self.shared.load.fetch_sub(1, Ordering::Relaxed);
            sub.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
            false // a receiver's ends as its sink drops
        });
    }

    /// Sends the goodbye, gives the sockets until the close timeout to take
    /// it, then ends every stream.
    fn close(&mut self, done: Option<Done>) {
        let deadline = later(self.config.close_timeout);
        // One evicted in this round gets none, as it would not a round later.
        for sub in self.subscribers.iter_mut().filter(|s| !s.gone) {
            for frame in goodbye(self.config.close_event.as_ref(), self.config.close_retry) {
                sub.push(frame, Kind::Control);
            }
        }
        while Instant::now() < deadline {
            self.flush_all();
            if self.subscribers.iter().all(|s| s.pending.frames.is_empty()) {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        self.remove(|_| true);
        drop(done);
    }
}

pub(super) fn gap_frame(reason: &str) -> Frame {
    Frame::from(Event { event: Some(GAP_EVENT.into()), ..Event::new() }.data(reason))
}
