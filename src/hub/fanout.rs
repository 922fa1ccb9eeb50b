//! The fan-out threads: each owns a share of the subscribers and writes
//! their backlogs with non-blocking vectored writes; the backlog bound and
//! the slow-client policy.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::history::{Entry, Position, BATCH};
use super::receiver::LocalQueue;
use super::{Counters, HubBuilder, HubLogKind, SlowClient, Subscription, GAP_EVENT};
use crate::event::{Event, Frame};
use crate::stream::{goodbye, keep_alive_frame, tick, Detached, MAX_FRAMES};
use crate::util::{lock, wait_until};

/// One frame waiting to be written to a subscriber.
pub(super) struct Pending {
    pub(super) frame: Frame,
    pub(super) kind: Kind,
}

/// What a pending frame is: only events count as delivered or dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A published event, at its place in the hub's sequence.
    Event(Position),
    Gap,
    Control,
}

/// Frames waiting for a subscriber, and their size.
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) frames: VecDeque<Pending>,
    pub(super) bytes: usize,
    /// The first event of the hub's sequence not yet sent in full: the
    /// client's `Last-Event-ID` is the one before it (see
    /// [`HubBuilder::backlog`]).
    pub(super) next: Position,
    /// The events and bytes published to the subscriber's topics so far.
    pub(super) topic_end: (u64, u64),
}

impl Backlog {
    pub(super) fn push(&mut self, frame: Frame, kind: Kind) {
        self.bytes += frame.len();
        self.frames.push_back(Pending { frame, kind });
    }

    pub(super) fn pop_front(&mut self) -> Option<Pending> {
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
    pub(super) fn offer(&mut self, entry: &Entry, on_topic: bool, wanted: bool) {
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

    pub(super) fn over_own(&self, max_events: usize, max_bytes: usize) -> bool {
        self.frames.len() > max_events || self.bytes > max_bytes
    }

    /// The place of the first event waiting, if one is.
    pub(super) fn first_event(&self) -> Option<Position> {
        self.frames.iter().find_map(|p| match p.kind {
            Kind::Event(at) => Some(at),
            _ => None,
        })
    }

    /// Whether the backlog passed its bound once `newest` was published.
    pub(super) fn over(&self, newest: &Entry, config: &HubBuilder) -> bool {
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
    pub(super) fn drop_oldest(&mut self, keep: usize, max_events: usize, max_bytes: usize) -> u64 {
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
pub(super) enum Bound {
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
    pub(super) fn enforce(&mut self, keep: usize, newest: &Entry, config: &HubBuilder) -> Bound {
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
pub(super) enum Sink {
    /// An event stream, written with non-blocking writes from the
    /// subscriber's own backlog.
    Socket(Detached),
    /// A [`Receiver`] in this process; the queue is the backlog.
    Local(Arc<LocalQueue>),
}

impl Sink {
    /// Whether the other end went away (checked without blocking).
    pub(super) fn is_gone(&self) -> bool {
        match self {
            Sink::Socket(stream) => stream.is_gone(),
            // Only the fan-out thread's handle is left.
            Sink::Local(queue) => Arc::strong_count(queue) == 1,
        }
    }

    /// Ends the stream.
    pub(super) fn close(&self, between_frames: bool) {
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

pub(super) struct Subscriber {
    pub(super) sink: Sink,
    pub(super) subscription: Subscription,
    /// What waits to be written to a socket (a receiver's is its queue).
    pub(super) pending: Backlog,
    /// Bytes of the first pending frame already written.
    pub(super) offset: usize,
    /// The last write, or when the backlog last filled from empty: the
    /// clock of keep-alives and of the stall timeout.
    pub(super) last_write: Instant,
    /// When a socket that did not take everything is tried again, and the
    /// back-off that set it (see [`HubBuilder::stall_timeout`]).
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    /// The stall timeout (none for a receiver).
    pub(super) stall: Option<Duration>,
    pub(super) gone: bool,
}

/// The back-off of a socket that takes nothing: from the first retry to
/// the longest wait between two.
pub(super) const BACKOFF: (Duration, Duration) =
    (Duration::from_millis(2), Duration::from_millis(250));

impl Subscriber {
    /// Whether `entry` is for this subscriber. A filter that panics ends
    /// its own subscription (the panic hook reports it, as it does a
    /// handler's): it must not take down the fan-out thread and every
    /// other subscriber on it.
    pub(super) fn wants(&mut self, entry: &Entry, config: &HubBuilder) -> bool {
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

    pub(super) fn log(&self, config: &HubBuilder, kind: HubLogKind<'_>) {
        config.emit(kind, self.subscription.peer);
    }

    /// What a subscription counts against a fan-out thread's queue on its
    /// way there: itself and its replay (a receiver's is in its queue).
    pub(super) fn queued(&self) -> usize {
        1 + self.pending.frames.len()
    }

    /// Queues a frame that does not count against the bound (replay,
    /// gap signal, keep-alive, goodbye).
    pub(super) fn push(&mut self, frame: Frame, kind: Kind) {
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
    pub(super) fn offer(&mut self, entry: &Entry, wanted: bool) {
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
    pub(super) fn publish(
        &mut self,
        entry: &Entry,
        wanted: bool,
        config: &HubBuilder,
    ) -> (u64, Bound) {
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
    pub(super) fn flush(&mut self) -> u64 {
        let Sink::Socket(stream) = &self.sink else {
            return 0;
        };
        let (mut delivered, mut progress) = (0, false);
        while !self.pending.frames.is_empty() && !self.gone {
            let frames = self.pending.frames.iter().take(MAX_FRAMES);
            let offered = frames.len();
            match stream.write_frames(frames.map(|p| &p.frame), self.offset) {
                Ok(written) => {
                    progress |= written > 0;
                    let (mut left, mut done) = (written, 0);
                    while left > 0 {
                        let front_left =
                            stream.wire_len(self.pending.frames[0].frame.len()) - self.offset;
                        if left < front_left {
                            self.offset += left;
                            break;
                        }
                        (left, self.offset, done) = (left - front_left, 0, done + 1);
                        let sent = self
                            .pending
                            .pop_front()
                            .expect("written bytes belong to pending frames");
                        delivered += u64::from(matches!(sent.kind, Kind::Event(_)));
                    }
                    if done < offered {
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
    pub(super) fn stalled(&self, now: Instant) -> bool {
        !self.pending.frames.is_empty()
            && self
                .stall
                .is_some_and(|stall| now.saturating_duration_since(self.last_write) > stall)
    }

    /// Whether nothing is written in part: the body can end cleanly.
    pub(super) fn between_frames(&self) -> bool {
        self.offset == 0
    }
}

pub(super) struct ShardHandle {
    /// Unbounded as a channel; bounded by `queued`, below.
    pub(super) tx: mpsc::Sender<ShardCommand>,
    pub(super) load: Arc<AtomicU64>,
    /// The newest event the fan-out thread has handled (see `prune_history`).
    pub(super) seen: Arc<AtomicU64>,
    /// What the fan-out thread has not taken yet.
    pub(super) queued: Arc<Room>,
}

/// How many frames (events of published batches, and a subscriber's
/// replay) wait for a fan-out thread, and a way for the coordinator to wait
/// for that to drop.
#[derive(Default)]
pub(super) struct Room {
    pub(super) state: Mutex<RoomState>,
    pub(super) freed: Condvar,
}

#[derive(Default)]
pub(super) struct RoomState {
    pub(super) queued: usize,
    /// The coordinator waits: only then is a wake-up worth a system call.
    pub(super) waiting: bool,
}

impl Room {
    /// The coordinator's side: waits while `limit` or more frames are
    /// queued, then counts `n` more. A fan-out thread that ended has
    /// dropped its handle: then nothing is waited for.
    pub(super) fn reserve(self: &Arc<Room>, n: usize, limit: usize) {
        let mut state = lock(&self.state);
        while state.queued >= limit && Arc::strong_count(self) > 1 {
            state.waiting = true;
            // Bounded, so that a fan-out thread that ends is noticed.
            let deadline = Instant::now() + Duration::from_millis(100);
            state = wait_until(&self.freed, state, Some(deadline)).unwrap_or_else(|s| s);
            state.waiting = false;
        }
        state.queued += n;
    }

    /// The fan-out thread's side: `n` frames were taken.
    pub(super) fn release(&self, n: usize) {
        let mut state = lock(&self.state);
        state.queued -= n;
        if state.waiting {
            self.freed.notify_one();
        }
    }
}

pub(super) enum ShardCommand {
    Publish(Arc<[Arc<Entry>]>),
    Subscribe(Box<Subscriber>),
    Close(SyncSender<()>),
}

/// A fan-out thread: writes to its share of the subscribers.
pub(super) struct Shard {
    pub(super) subscribers: Vec<Subscriber>,
    pub(super) counters: Arc<Counters>,
    pub(super) config: Arc<HubBuilder>,
    pub(super) load: Arc<AtomicU64>,
    pub(super) seen: Arc<AtomicU64>,
    pub(super) queued: Arc<Room>,
}

impl Shard {
    pub(super) fn run(mut self, rx: mpsc::Receiver<ShardCommand>) {
        let tick = tick(self.config.keep_alive);
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

    pub(super) fn publish(&mut self, entry: &Entry) {
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
    pub(super) fn tick(&mut self) {
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
    pub(super) fn flush_all(&mut self) {
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
    pub(super) fn close(&mut self, done: Option<SyncSender<()>>) {
        let deadline = Instant::now() + self.config.close_timeout;
        // One evicted in this round gets no goodbye, as it would not have
        // a round later.
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

pub(super) fn gap_frame(reason: &str) -> Frame {
    Frame::from(Event::new().with_valid_event(GAP_EVENT).data(reason))
}
