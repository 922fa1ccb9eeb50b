//! A subscriber in this process: frames from a queue that is its backlog.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvError, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::fanout::{Backlog, Kind};
use super::Counters;
use crate::event::Frame;
use crate::util::{lock, wait_until};

/// A subscriber in this process: takes the hub's frames from a queue (see
/// [`Hub::receiver`](super::Hub::receiver)). Dropping it unsubscribes.
///
/// Frames arrive in the order a socket subscriber would be sent them.
/// Once the subscription ends (the hub was closed or its last handle
/// dropped, or the receiver was disconnected as a slow client, which
/// [`HubStats::evicted`](super::HubStats::evicted) counts), the frames already queued are still
/// received, then `recv` fails.
#[must_use = "dropping a Receiver unsubscribes it"]
pub struct Receiver {
    pub(super) queue: Arc<LocalQueue>,
}

impl Receiver {
    /// Waits for the next frame.
    pub fn recv(&self) -> Result<Frame, RecvError> {
        self.queue.take(None).map_err(|_| RecvError)
    }

    /// The next frame, if one is waiting.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        self.queue
            .take(Some(Instant::now()))
            .map_err(|ended| match ended {
                true => TryRecvError::Disconnected,
                false => TryRecvError::Empty,
            })
    }

    /// Waits at most `timeout` for the next frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        self.queue
            .take(Instant::now().checked_add(timeout))
            .map_err(|ended| match ended {
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
pub(super) struct LocalQueue {
    pub(super) state: Mutex<LocalState>,
    pub(super) ready: Condvar,
    /// An event counts as delivered when the receiver takes it.
    pub(super) counters: Arc<Counters>,
}

#[derive(Default)]
pub(super) struct LocalState {
    pub(super) backlog: Backlog,
    pub(super) ended: bool,
    /// Threads waiting on the condition variable (a `Receiver` may be
    /// shared): only then is a push worth a wake-up, which is a system call
    /// even when nobody waits.
    pub(super) waiting: usize,
}

impl LocalQueue {
    pub(super) fn lock(&self) -> MutexGuard<'_, LocalState> {
        lock(&self.state)
    }

    /// The next frame; `Err(true)` once the queue is empty and ended,
    /// `Err(false)` when the wait is over first.
    pub(super) fn take(&self, deadline: Option<Instant>) -> Result<Frame, bool> {
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
            state.waiting += 1;
            let waited = wait_until(&self.ready, state, deadline);
            let timed_out = waited.is_err();
            state = waited.unwrap_or_else(|s| s);
            state.waiting -= 1;
            if timed_out {
                return Err(false);
            }
        }
    }

    /// Updates the backlog (queues frames, applies the bound) under the
    /// lock, so that the bound sees what the receiver has taken, and wakes
    /// the receiver if it waits and a frame was queued (`wake`).
    pub(super) fn update<R>(&self, wake: bool, update: impl FnOnce(&mut Backlog) -> R) -> R {
        let mut state = self.lock();
        let wake = wake && state.waiting > 0;
        let outcome = update(&mut state.backlog);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        outcome
    }

    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_all();
    }
}
