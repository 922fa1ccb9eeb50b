//! A subscriber in this process: frames from a queue that is its backlog.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvError, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::fanout::{Backlog, Kind};
use super::Counters;
use crate::event::Frame;
use crate::util::{lock, wait_until};

/// A subscriber in this process (see [`Hub::receiver`](super::Hub::receiver));
/// dropping it unsubscribes. Once the subscription ends (the hub closed, or
/// it was evicted as slow), the frames queued are still received, then
/// `recv` fails.
#[must_use = "dropping a Receiver unsubscribes it"]
pub struct Receiver {
    pub(super) queue: Arc<LocalQueue>,
}

impl Receiver {
    /// Waits for the next frame.
    pub fn recv(&self) -> Result<Frame, RecvError> {
        self.queue.take(None, RecvError, RecvError)
    }

    /// The next frame, if one is waiting.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        self.queue.take(Some(Instant::now()), TryRecvError::Disconnected, TryRecvError::Empty)
    }

    /// Waits at most `timeout` for the next frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        (self.queue).take(deadline, RecvTimeoutError::Disconnected, RecvTimeoutError::Timeout)
    }

    /// The frames as they arrive, until the subscription ends.
    pub fn iter(&self) -> impl Iterator<Item = Frame> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.queue.state);
        let queued = state.backlog.frames.len();
        f.debug_struct("Receiver").field("queued", &queued).field("ended", &state.ended).finish()
    }
}

/// The queue between a fan-out thread and a [`Receiver`]: that subscriber's
/// whole backlog, so the bound acts on what the receiver has not taken yet.
pub(super) struct LocalQueue {
    state: Mutex<LocalState>,
    ready: Condvar,
    /// An event counts as delivered when the receiver takes it.
    counters: Arc<Counters>,
}

#[derive(Default)]
struct LocalState {
    backlog: Backlog,
    ended: bool,
    /// Threads waiting (a `Receiver` may be shared): only then is a push
    /// worth a wake-up (a system call).
    waiting: usize,
}

impl LocalQueue {
    pub(super) fn new(counters: &Arc<Counters>) -> Arc<LocalQueue> {
        let (state, ready, counters) = (Mutex::default(), Condvar::new(), counters.clone());
        Arc::new(LocalQueue { state, ready, counters })
    }

    /// The next frame; `ended` once the queue is empty and ended,
    /// `timed_out` when the wait is over first.
    fn take<E>(&self, deadline: Option<Instant>, ended: E, timed_out: E) -> Result<Frame, E> {
        let mut state = lock(&self.state);
        loop {
            if let Some(pending) = state.backlog.pop_front() {
                let event = u64::from(matches!(pending.kind, Kind::Event(..)));
                self.counters.delivered.fetch_add(event, Ordering::Relaxed);
                return Ok(pending.frame);
            }
            if state.ended {
                return Err(ended);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(timed_out);
            }
            state.waiting += 1;
            state = wait_until(&self.ready, state, deadline).unwrap_or_else(|s| s);
            state.waiting -= 1;
        }
    }

    /// Runs `update` on the backlog under the lock, so that the bound sees
    /// what the receiver has taken; wakes a waiting receiver if `wake`.
    pub(super) fn update<R>(&self, wake: bool, update: impl FnOnce(&mut Backlog) -> R) -> R {
        let mut state = lock(&self.state);
        let (wake, outcome) = (wake && state.waiting > 0, update(&mut state.backlog));
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        outcome
    }

    pub(super) fn end(&self) {
        lock(&self.state).ended = true;
        self.ready.notify_all();
    }
}
