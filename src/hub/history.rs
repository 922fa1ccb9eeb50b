//! The coordinator thread: ids, the history (what is retained, what each
//! topic lost) and where a resuming client starts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fanout::{gap_frame, Kind, ShardCommand, ShardHandle, Sink};
use super::{Command, Counters, Done, HubBuilder, HubLogKind, Subscription, UnknownId};
use crate::event::{Event, Frame};

/// One published event as the history keeps it.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) seq: u64,
    /// The encoded bytes published before it: a span of bytes is a subtraction.
    pub(super) offset: u64,
    pub(super) id: String,
    pub(super) topics: Vec<String>,
    pub(super) event_type: Option<String>,
    pub(super) frame: Frame,
    pub(super) at: Instant,
}

impl Entry {
    /// Its topics; `None` stands for everyone.
    fn topics(&self) -> impl Iterator<Item = Option<&str>> {
        let everyone = self.topics.is_empty().then_some(None);
        everyone.into_iter().chain(self.topics.iter().map(|t| Some(t.as_str())))
    }

    /// Its bytes as the bounds count them: the frame and its topics' names.
    fn size(&self) -> usize {
        self.frame.len() + self.topics.iter().map(String::len).sum::<usize>()
    }
}

/// Events and bytes, as a bound counts them.
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

/// One topic's (or everyone's) counted events, and the newest it dropped: a
/// subscriber that saw that one, or a later one, missed nothing of it.
#[derive(Clone, Debug, Default)]
struct TopicState {
    counted: Tally,
    lost_seq: u64,
    lost_id: String,
}

/// The retained events, in publish order, bounded in total and per topic;
/// a client resuming after event `n` missed nothing iff none of its topics
/// lost (dropped for any bound) an event after `n`.
#[derive(Default)]
pub(super) struct History {
    pub(super) entries: VecDeque<Arc<Entry>>,
    all: Tally,
    /// Only entries every shard handled count (see `Coordinator::prune_history`).
    counted_through: u64,
    counted: Tally,
    everyone: TopicState,
    topics: HashMap<String, TopicState>,
    /// The bytes of the names in `topics`.
    names: usize,
    /// What a topic not in `topics` (forgotten, or never seen) lost.
    floor: u64,
    total: (usize, usize),
    per_topic: (usize, usize),
    age: Option<Duration>,
}

impl History {
    pub(super) fn new(config: &HubBuilder) -> History {
        History {
            total: (config.history_events, config.history_bytes),
            per_topic: config.topic_bound(),
            age: config.history_max_age,
            ..History::default()
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.all.add(entry.size());
        self.entries.push_back(entry);
        if self.total.0 == 0 {
            self.drop_at(self.entries.len() - 1); // no replay: lost at once
        }
    }

    /// The newest event with the publisher's `id`, retained or a topic's lost.
    pub(super) fn seq_of(&self, id: &str) -> Option<u64> {
        let lost = (self.topics.values().chain([&self.everyone]))
            .filter(|t| t.lost_id == id && !id.is_empty()) // "": a floor's, or none lost
            .map(|t| t.lost_seq);
        self.entries.iter().rev().find(|e| e.id == id).map(|e| e.seq).into_iter().chain(lost).max()
    }

    /// Whether a topic of `sub` (or everyone's, unless topics-only) lost an
    /// event after `seq`, whatever its filter would have said.
    fn lost_after(&self, sub: &Subscription, seq: u64) -> bool {
        let lost = |topic: &String| self.topics.get(topic).map_or(self.floor, |t| t.lost_seq);
        (!sub.topics_only && self.everyone.lost_seq > seq)
            || sub.topics.iter().any(|topic| lost(topic) > seq)
    }

    fn topic(&mut self, topic: Option<&str>) -> &mut TopicState {
        let Some(topic) = topic else { return &mut self.everyone };
        if !self.topics.contains_key(topic) {
            self.forget_idle_topics();
            let state = TopicState { lost_seq: self.floor, ..TopicState::default() };
            self.names += topic.len();
            self.topics.insert(topic.to_string(), state);
        }
        self.topics.get_mut(topic).expect("inserted")
    }

    /// Bounds the topics remembered: past twice the history's count (or
    /// their names past twice its bytes), the older half of those with
    /// nothing counted is forgotten, and the floor rises to what they had
    /// lost (a false gap signal at worst).
    fn forget_idle_topics(&mut self) {
        if self.topics.len() < 2 * self.total.0.max(32)
            && self.names <= 2 * self.total.1.max(1 << 16)
        {
            return;
        }
        let idle: Vec<u64> =
            (self.topics.values()).filter(|t| t.counted.events == 0).map(|t| t.lost_seq).collect();
        if idle.is_empty() {
            return;
        }
        // The median (the least value with more than half at or below it), by halving the range.
        let (mut threshold, mut high) = (0, u64::MAX);
        while threshold < high {
            let mid = threshold + (high - threshold) / 2;
            let more = idle.iter().filter(|&&seq| seq <= mid).count() > idle.len() / 2;
            (threshold, high) = if more { (threshold, mid) } else { (mid + 1, high) };
        }
        self.floor = self.floor.max(threshold);
        (self.topics).retain(|_, t| t.counted.events > 0 || t.lost_seq > threshold);
        self.names = self.topics.keys().map(String::len).sum();
    }

    /// Drops entry `index` as lost by its topics (off the tallies it counts in).
    fn drop_at(&mut self, index: usize) {
        let entry = self.entries.remove(index).expect("an entry at `index`");
        let (len, counted) = (entry.size(), entry.seq <= self.counted_through);
        self.all.sub(len);
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

    /// Counts the entries up to `seen` against each topic's bound, then the
    /// total and the age, dropping the oldest; returns whether the history
    /// is over its total bound.
    fn prune(&mut self, now: Instant, seen: u64) -> bool {
        let uncounted = |h: &History| h.entries.partition_point(|e| e.seq <= h.counted_through);
        while let Some(entry) = self.entries.get(uncounted(self)).filter(|e| e.seq <= seen).cloned()
        {
            self.counted_through = entry.seq;
            let size = entry.size(); // counted once for the total and each topic
            self.counted.add(size);
            for topic in entry.topics() {
                self.topic(topic).counted.add(size);
            }
            for topic in &entry.topics {
                while (self.topics.get(topic)).is_some_and(|t| t.counted.over(self.per_topic)) {
                    let oldest = self.entries.iter().position(|e| e.topics.contains(topic));
                    self.drop_at(oldest.expect("a topic with events counted has an oldest"));
                }
            }
        }
        while let Some(oldest) = self.entries.front() {
            let too_old = (self.age).is_some_and(|age| now.duration_since(oldest.at) > age);
            if !too_old && !self.counted.over(self.total) {
                break;
            }
            self.drop_at(0);
        }
        self.all.over(self.total)
    }
}

/// The coordinator thread: ids, encoding and the history. It forwards
/// published entries to every shard, and each new subscriber with its replay
/// queued to the least loaded one: as each shard's channel is first in,
/// first out, the hand-over from replay to live has no gap or duplicate.
pub(super) struct Coordinator {
    pub(super) history: History,
    pub(super) next_seq: u64,
    /// The bytes published so far.
    pub(super) next_offset: u64,
    pub(super) epoch: String,
    pub(super) counters: Arc<Counters>,
    pub(super) config: Arc<HubBuilder>,
    pub(super) shards: Vec<ShardHandle>,
    /// Entries published since the last forward, for every shard at once.
    pub(super) outgoing: Vec<Arc<Entry>>,
    pub(super) redis: Option<super::redis::Engine>,
}

/// The most commands handled before the results are passed on: a batch.
pub(super) const BATCH: usize = 4096;

/// Waits up to `wait` for a command, then handles it and those queued, at
/// most `max` in all. `Err` ends the thread: a close (whom to tell) or `None`.
pub(super) fn drain<C>(
    rx: &mpsc::Receiver<C>,
    wait: Duration,
    max: usize,
    mut handle: impl FnMut(C) -> Result<(), Done>,
) -> Result<(), Option<Done>> {
    let first = match rx.recv_timeout(wait) {
        Ok(command) => command,
        Err(RecvTimeoutError::Timeout) => return Ok(()),
        Err(RecvTimeoutError::Disconnected) => return Err(None),
    };
    let queued = rx.try_iter().take(max.min(BATCH) - 1);
    [first].into_iter().chain(queued).try_for_each(|command| handle(command).map_err(Some))
}

impl Coordinator {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut catching_up = false;
        loop {
            // Entries age out, and are counted once the shards handled them.
            let wait = Duration::from_millis(if catching_up { 10 } else { 1000 });
            let closed = drain(&rx, wait, self.config.inbox, |command| {
                match command {
                    Command::Publish(topics, event) => self.publish(topics, event),
                    Command::Subscribe(sink, subscription) => self.subscribe(sink, subscription),
                    Command::Close(done) => return Err(done),
                    Command::Redis(msg) => self.redis(msg),
                    Command::Shard(_) => {} // the fan-out threads'
                }
                Ok(())
            });
            if let Err(done) = closed {
                return self.close(done);
            }
            self.forward();
            catching_up = self.prune_history();
        }
    }

    /// Sends what was published since the last call to every shard; waits
    /// while one is an inbox's worth of frames behind ([`HubBuilder::inbox`]).
    pub(super) fn forward(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let batch: Arc<[Arc<Entry>]> = std::mem::take(&mut self.outgoing).into();
        for shard in &self.shards {
            let command = Command::Shard(ShardCommand::Publish(batch.clone()));
            shard.send(command, batch.len(), self.config.inbox);
        }
    }

    pub(super) fn is_hub_id(&self, id: &str) -> bool {
        (id.strip_prefix(self.epoch.as_str())).is_some_and(|rest| rest.starts_with('-'))
    }

    pub(super) fn publish(&mut self, topics: Vec<String>, event: Event) {
        // An id of the hub's form is the hub's to give, so that each resumes from one
        // place; an empty one would reset a client's last event id (`id:` alone).
        let seq = self.next_seq;
        let event = match event.get_id() {
            Some(id) if !id.is_empty() && !self.is_hub_id(id) => event,
            _ => Event { id: Some(format!("{}-{seq}", self.epoch)), ..event },
        };
        self.push(Entry {
            seq,
            offset: self.next_offset,
            id: event.get_id().unwrap_or_default().to_string(),
            topics,
            event_type: event.get_event().map(str::to_string),
            frame: Frame::from(&event),
            at: Instant::now(),
        });
    }

    /// Retains and forwards an entry numbered `next_seq` (the Redis reader's too).
    pub(super) fn push(&mut self, entry: Entry) {
        self.next_seq = entry.seq.saturating_add(1);
        self.next_offset = entry.offset.saturating_add(entry.frame.len() as u64);
        let entry = Arc::new(entry);
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.history.push(entry.clone());
        self.prune_history();
        self.outgoing.push(entry);
    }

    /// Applies the history's bounds up to the newest event every shard has
    /// handled (see [`HubBuilder::backlog`]) and publishes its size; returns
    /// whether more is to go once they catch up.
    pub(super) fn prune_history(&mut self) -> bool {
        let seen = (self.shards.iter())
            .filter(|shard| !shard.ended())
            .map(|shard| shard.shared.seen.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let more = self.history.prune(Instant::now(), seen);
        let (all, c) = (self.history.all, &self.counters);
        c.history_len.store(all.events as u64, Ordering::Relaxed);
        c.history_bytes.store(all.bytes as u64, Ordering::Relaxed);
        more
    }

    /// The number of the event with `id`, if the hub can place it: a hub's id
    /// by its number (if canonical, issued, and not replaced by the
    /// publisher's in its retained entry), a publisher's by [`History::seq_of`].
    pub(super) fn resume_seq(&self, id: &str) -> Option<u64> {
        if !self.is_hub_id(id) || self.redis.is_some() {
            return self.history.seq_of(id);
        }
        let seq = id[self.epoch.len() + 1..].parse::<u64>().ok()?;
        let canonical = format!("{}-{seq}", self.epoch) == id && (1..self.next_seq).contains(&seq);
        let entries = &self.history.entries;
        let retained = entries.binary_search_by_key(&seq, |e| e.seq).ok();
        (canonical && retained.is_none_or(|i| entries[i].id == id)).then_some(seq)
    }

    pub(super) fn subscribe(&mut self, sink: Sink, subscription: Subscription) {
        self.prune_history();
        // None: the Redis reader answers.
        let Some(mut sub) = self.subscriber(sink, subscription) else { return };
        let entries = &self.history.entries;
        let after = |seq: u64| entries.partition_point(|e| e.seq <= seq);
        let resume = (sub.subscription.last_event_id.as_deref()).map(|id| self.resume_seq(id));
        let mut start = match resume {
            Some(Some(seq)) if !self.history.lost_after(&sub.subscription, seq) => {
                self.counters.replay_hits.fetch_add(1, Ordering::Relaxed);
                after(seq)
            }
            Some(seq) => {
                self.counters.replay_misses.fetch_add(1, Ordering::Relaxed);
                let reason = "unknown-id";
                sub.push(gap_frame(reason), Kind::Gap);
                sub.log(&self.config, HubLogKind::Gap { reason });
                match self.config.unknown_id {
                    UnknownId::ReplayAll => after(seq.unwrap_or(0)),
                    UnknownId::LiveOnly => entries.len(),
                }
            }
            // A client: all since its head went out (it may have posted); a receiver: what follows.
            None => match &sub.sink {
                Sink::Socket(stream) => entries.partition_point(|e| e.at < stream.head_sent()),
                Sink::Local(_) => entries.len(),
            },
        };
        // First the `recent` events before it (the filter runs once per entry).
        let mut wanted = VecDeque::new();
        let mut recent = if resume.is_none() { sub.subscription.recent } else { 0 };
        while recent > 0 && start > 0 && !sub.gone {
            start -= 1;
            wanted.push_front(sub.wants(&entries[start], &self.config));
            recent -= usize::from(wanted[0]);
        }
        // It has seen everything before where its replay starts.
        let next =
            entries.get(start).map_or((self.next_seq, self.next_offset), |e| (e.seq, e.offset));
        sub.backlog(false, |b| b.next = [next.0, next.1, 0, 0]);
        for (k, entry) in entries.range(start..).enumerate() {
            let want = wanted.get(k).copied().unwrap_or_else(|| sub.wants(entry, &self.config));
            sub.offer(entry, want);
        }
        self.forward(); // what was published before it reaches the shards first
        let shard = (self.shards.iter())
            .min_by_key(|s| s.shared.load.load(Ordering::Relaxed))
            .expect("a hub has at least one shard");
        shard.shared.load.fetch_add(1, Ordering::Relaxed);
        self.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        let frames = sub.queued();
        let command = Command::Shard(ShardCommand::Subscribe(Box::new(sub)));
        shard.send(command, frames, self.config.inbox);
    }

    /// Forwards what is pending, closes every shard and waits for them.
    pub(super) fn close(&mut self, done: Option<Done>) {
        self.forward();
        let closing = |shard: &ShardHandle| {
            let (tx, rx) = mpsc::sync_channel(0);
            shard.send(Command::Close(tx), 0, usize::MAX).then_some(rx)
        };
        let waits: Vec<_> = self.shards.iter().filter_map(closing).collect();
        let wait = self.config.close_timeout.saturating_add(Duration::from_secs(1)); // the shards' own bound, and slack
        waits.iter().for_each(|rx| drop(rx.recv_timeout(wait)));
        self.prune_history(); // the shards handled everything: the counters settle
        drop(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event `seq` for `topic` (`""`: for everyone).
    fn entry(seq: u64, topic: &str) -> Arc<Entry> {
        let frame = Frame::from(Event::new().data("x"));
        let (offset, id) = ((seq - 1) * frame.len() as u64, format!("e-{seq}"));
        let topics = Some(topic.to_string()).filter(|t| !t.is_empty()).into_iter().collect();
        Arc::new(Entry { seq, offset, id, topics, event_type: None, frame, at: Instant::now() })
    }

    #[test]
    fn topic_watermarks_decide_whether_a_resume_has_a_gap() {
        // Total 4, 2 per topic; a: 1, 2; b: 3..=8; everyone: 9.
        let config = super::super::Hub::builder().history(4, 1 << 20).topic_history(2, 1 << 20);
        let mut history = History::new(&config);
        for (n, topic) in ["a", "a", "b", "b", "b", "b", "b", "b", ""].iter().enumerate() {
            history.push(entry(n as u64 + 1, topic));
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
        let mut history = History::new(&super::super::Hub::builder().history(1, 1 << 20));
        for seq in 1..=100 {
            history.push(entry(seq, &format!("t{seq}")));
            history.prune(Instant::now(), u64::MAX);
            if seq == 65 {
                // 64 remembered, 63 with nothing counted: those that lost up to the median (32) go.
                assert_eq!((history.floor, history.topics.len()), (32, 33));
            }
        }
        assert!(history.topics.len() <= 64, "{}", history.topics.len());
        assert!(history.floor > 0);
        // A forgotten topic's client gets the gap signal; t100 has its event.
        assert!(history.lost_after(&Subscription::new().topic("t1"), 0));
        assert!(!history.lost_after(&Subscription::new().topic("t100").topics_only(), 99));
    }

    #[test]
    fn topics_remembered_are_bounded_by_their_names_bytes() {
        // 4 KiB names: the history holds three; the names remembered, twice
        // 64 KiB (the least byte bound) and the one added after the check.
        let mut history = History::new(&super::super::Hub::builder().history(1000, 16 << 10));
        for seq in 1..=100 {
            history.push(entry(seq, &format!("{seq:4096}")));
            history.prune(Instant::now(), u64::MAX);
            assert_eq!(history.entries.len(), 3.min(seq as usize));
            assert!(history.names <= (128 << 10) + 4096, "{}", history.names);
        }
        assert_eq!(history.names, history.topics.keys().map(String::len).sum::<usize>());
    }
}
