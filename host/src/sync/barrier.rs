//! `Barrier`: `parties` processes wait until all of them have arrived.
//!
//! Each round (generation) has its own outcome: released when the last
//! party arrives, broken by `abort`, `reset`, a waiter's timeout or the end
//! of a waiting process. A broken barrier fails every wait until `reset`.

use super::{Error, wait_for};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const PENDING: u8 = 0;
const RELEASED: u8 = 1;
const BROKEN: u8 = 2;

pub(crate) struct Barrier {
    parties: u32,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    waiting: u32,
    broken: bool,
    round: Arc<AtomicU8>,
}

/// Breaks the round of a waiter that leaves before it is released.
struct Waiting<'a> {
    barrier: &'a Barrier,
    round: Arc<AtomicU8>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.round.load(Ordering::SeqCst) == PENDING {
            self.barrier.break_round();
        }
    }
}

impl Barrier {
    pub(crate) fn new(parties: u32) -> Result<Barrier, Error> {
        if parties == 0 {
            return Err(Error::Invalid("a barrier needs at least one party".into()));
        }
        Ok(Barrier {
            parties,
            state: Mutex::new(State { waiting: 0, broken: false, round: Arc::new(AtomicU8::new(PENDING)) }),
            changed: Notify::new(),
        })
    }

    /// Arrives and waits for the others; the caller's arrival index.
    pub(crate) async fn wait(&self, timeout: Option<u64>) -> Result<u32, Error> {
        let (index, round) = {
            let mut state = self.state.lock().unwrap();
            if state.broken {
                return Err(Error::BrokenBarrier);
            }
            let index = state.waiting;
            state.waiting += 1;
            if state.waiting == self.parties {
                state.round.store(RELEASED, Ordering::SeqCst);
                state.round = Arc::new(AtomicU8::new(PENDING));
                state.waiting = 0;
                drop(state);
                self.changed.notify_waiters();
                return Ok(index);
            }
            (index, state.round.clone())
        };
        let waiting = Waiting { barrier: self, round: round.clone() };
        let outcome = wait_for(&self.changed, timeout, || match round.load(Ordering::SeqCst) {
            PENDING => None,
            outcome => Some(outcome),
        })
        .await;
        drop(waiting);
        match outcome {
            Some(RELEASED) => Ok(index),
            _ => Err(Error::BrokenBarrier),
        }
    }

    fn break_round(&self) {
        let mut state = self.state.lock().unwrap();
        state.broken = true;
        state.round.store(BROKEN, Ordering::SeqCst);
        drop(state);
        self.changed.notify_waiters();
    }

    pub(crate) fn abort(&self) {
        self.break_round();
    }

    /// Back to the empty state; parties waiting now see a broken barrier.
    pub(crate) fn reset(&self) {
        let mut state = self.state.lock().unwrap();
        if state.waiting > 0 {
            state.round.store(BROKEN, Ordering::SeqCst);
        }
        *state = State { waiting: 0, broken: false, round: Arc::new(AtomicU8::new(PENDING)) };
        drop(state);
        self.changed.notify_waiters();
    }

    /// Parties, parties waiting now, and whether the barrier is broken.
    pub(crate) fn state(&self) -> (u32, u32, bool) {
        let state = self.state.lock().unwrap();
        (self.parties, state.waiting, state.broken)
    }
}
