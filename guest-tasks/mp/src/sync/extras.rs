//! The small ones Python porters reach for: `SimpleQueue`, `Queue.full()`,
//! `Condition.wait_for`, a `Barrier` action and a `Semaphore` guard.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Barrier, Condition, Error, Queue, Semaphore, wit};

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Python's `Queue.full()`: whether a `put` would wait now (never for
    /// an unbounded queue).
    pub fn full(&self) -> Result<bool, Error> {
        Ok(wit::queue_full(&self.inner)?)
    }
}

/// Python's `multiprocessing.SimpleQueue`: an unbounded queue with only
/// `put`, `get` and `empty`. Pass it to a child as any shared object.
///
/// ```no_run
/// let q = mp::SimpleQueue::<u32>::new();
/// q.put(&1).unwrap();
/// assert_eq!(q.get().unwrap(), 1);
/// assert!(q.empty().unwrap());
/// ```
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
#[serde(bound = "")]
pub struct SimpleQueue<T>(Queue<T>);

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> SimpleQueue<T> {
        SimpleQueue(Queue::new())
    }

    /// Puts `item` (never waits: the queue is unbounded).
    pub fn put(&self, item: &T) -> Result<(), Error> {
        self.0.put(item)
    }

    /// Takes the first item, waiting for one.
    pub fn get(&self) -> Result<T, Error> {
        self.0.get()
    }

    /// Whether no item is waiting.
    pub fn empty(&self) -> Result<bool, Error> {
        self.0.empty()
    }

    /// This process is done with the queue (Python's `close()`).
    pub fn close(&self) {
        self.0.close()
    }
}

impl<T: Serialize + DeserializeOwned> Default for SimpleQueue<T> {
    fn default() -> Self {
        SimpleQueue::new()
    }
}

impl Condition {
    /// Python's `Condition.wait_for(predicate, timeout)`: with the lock
    /// held, waits until `predicate()` is true (checked first, then after
    /// each notification) or `timeout` passes; the predicate's last value.
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            self.wait(left)?;
        }
    }
}

impl Barrier {
    /// Python's `Barrier(parties, action)`: waits for every party, then one
    /// of them (the one given index 0) runs `action` while the others wait
    /// for it to finish; nobody goes on before it is done. Every party must
    /// wait with this method (the action travels with no handle: each
    /// process names its own). A panicking action ends its process, which
    /// breaks the barrier for the others.
    pub fn wait_with_action(&self, timeout: Option<Duration>, action: impl FnOnce()) -> Result<u32, Error> {
        let index = self.wait(timeout)?;
        if index == 0 {
            action();
        }
        // The second phase: released once the action is done.
        self.wait(timeout)?;
        Ok(index)
    }
}

/// A unit of a [`Semaphore`], given back when dropped (Python's `with sem:`).
#[must_use = "the unit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    semaphore: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.semaphore.release();
    }
}

impl Semaphore {
    /// Takes one unit until the guard is dropped, waiting for one.
    ///
    /// ```no_run
    /// let s = mp::Semaphore::new(1);
    /// {
    ///     let _unit = s.guard().unwrap();
    ///     assert_eq!(s.get_value().unwrap(), 0);
    /// }
    /// assert_eq!(s.get_value().unwrap(), 1);
    /// ```
    pub fn guard(&self) -> Result<SemaphoreGuard<'_>, Error> {
        self.acquire()?;
        Ok(SemaphoreGuard { semaphore: self })
    }
}
