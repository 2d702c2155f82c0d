//! `Condition`: waiting for a notification while giving up a lock.
//!
//! `wait` releases the condition's lock (however many times the caller
//! holds it), waits for a `notify`, and takes the lock back as it held it,
//! as Python's `Condition.wait` does. A waiter that is terminated leaves the
//! queue of waiters; the lock stays released.

use super::lock::Lock;
use super::{Error, wait_for};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub(crate) struct Condition {
    pub(crate) lock: Arc<Lock>,
    /// The registry id of the lock, for `get_lock`.
    pub(crate) lock_id: u64,
    state: Mutex<Waiters>,
    changed: Notify,
}

#[derive(Default)]
struct Waiters {
    next: u64,
    /// Tickets in arrival order, and whether each was notified.
    queue: Vec<(u64, bool)>,
}

/// Takes a waiter out of the queue however its wait ends.
struct Ticket<'a> {
    condition: &'a Condition,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.condition.state.lock().unwrap().queue.retain(|(id, _)| *id != self.id);
    }
}

impl Condition {
    pub(crate) fn new(lock: Arc<Lock>, lock_id: u64) -> Condition {
        Condition { lock, lock_id, state: Mutex::new(Waiters::default()), changed: Notify::new() }
    }

    /// Python's `Condition.wait(timeout)`: false if it timed out.
    pub(crate) async fn wait(&self, pid: u32, timeout: Option<u64>) -> Result<bool, Error> {
        if !self.lock.is_owned_by(pid) {
            return Err(Error::Invalid("cannot wait on un-acquired lock".into()));
        }
        let ticket = {
            let mut state = self.state.lock().unwrap();
            state.next += 1;
            let id = state.next;
            state.queue.push((id, false));
            Ticket { condition: self, id }
        };
        let count = self.lock.release_all(pid);
        let notified = wait_for(&self.changed, timeout, || {
            let state = self.state.lock().unwrap();
            state.queue.iter().any(|&(id, notified)| id == ticket.id && notified).then_some(())
        })
        .await
        .is_some();
        drop(ticket);
        self.lock.acquire(pid, count, None).await;
        Ok(notified)
    }

    /// Wakes up to `n` waiters (`None`: all); the caller must hold the lock.
    pub(crate) fn notify(&self, pid: u32, n: Option<u32>) -> Result<(), Error> {
        if !self.lock.is_owned_by(pid) {
            return Err(Error::Invalid("cannot notify on un-acquired lock".into()));
        }
        let mut state = self.state.lock().unwrap();
        let mut left = n.map_or(usize::MAX, |n| n as usize);
        for (_, notified) in state.queue.iter_mut().filter(|(_, notified)| !notified) {
            if left == 0 {
                break;
            }
            *notified = true;
            left -= 1;
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }
}
