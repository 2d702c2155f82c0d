//! `Queue` and `JoinableQueue`: a FIFO of messages, optionally bounded.
//!
//! `get` removes an item only in the same step that hands it to the caller,
//! so a consumer terminated while it waits takes nothing with it. Getters,
//! putters and joiners wait on a signal each: an item put wakes one getter,
//! an item taken from a bounded queue one putter, the last `task_done` every
//! joiner. A woken waiter that goes away without taking its turn (it was
//! terminated, or it timed out at that moment) passes the wake-up on to the
//! next waiter (tokio's `Notify::notify_one` does), so none is lost.
//! Each item carries its charge on its putter's budget until it is handed
//! over (or the queue is freed).

use super::budget::Message;
use super::{Error, wait_for};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

pub(crate) struct Queue {
    /// 0: unbounded.
    maxsize: usize,
    joinable: bool,
    state: Mutex<State>,
    /// An item was put (getters wait on it).
    put: Notify,
    /// An item was taken from a bounded queue (putters wait on it).
    taken: Notify,
    /// Every item put was marked done (joiners wait on it).
    done: Notify,
}

struct State {
    items: VecDeque<Message>,
    /// Items put and not yet marked done (`JoinableQueue`).
    unfinished: u64,
}

impl Queue {
    pub(crate) fn new(maxsize: u32, joinable: bool) -> Queue {
        Queue {
            maxsize: maxsize as usize,
            joinable,
            state: Mutex::new(State { items: VecDeque::new(), unfinished: 0 }),
            put: Notify::new(),
            taken: Notify::new(),
            done: Notify::new(),
        }
    }

    /// Appends `item`, waiting up to `timeout` for room; [`Error::Full`] after.
    pub(crate) async fn put(&self, item: Message, timeout: Option<u64>) -> Result<(), Error> {
        let mut item = Some(item);
        let put = wait_for(&self.taken, timeout, || {
            let mut state = self.state.lock().unwrap();
            if self.maxsize != 0 && state.items.len() >= self.maxsize {
                return None;
            }
            state.items.push_back(item.take().expect("an item is put once"));
            state.unfinished += 1;
            Some(())
        })
        .await;
        match put {
            Some(()) => {
                self.put.notify_one();
                Ok(())
            }
            None => Err(Error::Full),
        }
    }

    /// Removes the first item, waiting up to `timeout`; [`Error::Empty`] after.
    pub(crate) async fn get(&self, timeout: Option<u64>) -> Result<Vec<u8>, Error> {
        let item = wait_for(&self.put, timeout, || self.state.lock().unwrap().items.pop_front()).await;
        match item {
            Some(item) => {
                if self.maxsize != 0 {
                    self.taken.notify_one();
                }
                Ok(item.into_bytes())
            }
            None => Err(Error::Empty),
        }
    }

    /// Removes the first items at once, at most `most` of them and, past
    /// the first, `bytes` in all (what a lease hands ahead; an unbounded
    /// queue's: no putter waits for the room).
    pub(crate) fn take_front(&self, most: usize, bytes: usize) -> Vec<Vec<u8>> {
        let mut state = self.state.lock().unwrap();
        let (mut taken, mut size) = (Vec::new(), 0);
        while taken.len() < most && size < bytes {
            let Some(item) = state.items.pop_front() else { break };
            let item = item.into_bytes();
            size += item.len();
            taken.push(item);
        }
        taken
    }

    /// Puts an item taken by `get` back in front (it was not handed over).
    pub(crate) fn give_back(&self, item: Message) {
        self.give_back_all(vec![item]);
    }

    /// Puts items taken by `get` back in front, oldest first, all at once:
    /// a getter woken meanwhile cannot take a later one before an earlier.
    pub(crate) fn give_back_all(&self, items: Vec<Message>) {
        let count = items.len();
        let mut state = self.state.lock().unwrap();
        for item in items.into_iter().rev() {
            state.items.push_front(item);
        }
        drop(state);
        for _ in 0..count {
            self.put.notify_one();
        }
    }

    /// Whether it has a `maxsize` (a `put` may wait); transport glue: an
    /// unbounded queue's puts may be pipelined.
    pub(crate) fn bounded(&self) -> bool {
        self.maxsize != 0
    }

    /// Whether a `put` would wait (Python's `Queue.full()`).
    pub(crate) fn is_full(&self) -> bool {
        self.maxsize != 0 && self.len() >= self.maxsize as u64
    }

    pub(crate) fn len(&self) -> u64 {
        self.state.lock().unwrap().items.len() as u64
    }

    /// Marks one item as processed (`JoinableQueue.task_done`).
    pub(crate) fn task_done(&self) -> Result<(), Error> {
        if !self.joinable {
            return Err(Error::Invalid("task_done() on a queue that is not joinable".into()));
        }
        let mut state = self.state.lock().unwrap();
        if state.unfinished == 0 {
            return Err(Error::Invalid("task_done() called too many times".into()));
        }
        state.unfinished -= 1;
        if state.unfinished == 0 {
            self.done.notify_waiters();
        }
        Ok(())
    }

    /// Waits until every item put has been marked done.
    pub(crate) async fn join(&self) -> Result<(), Error> {
        if !self.joinable {
            return Err(Error::Invalid("join() on a queue that is not joinable".into()));
        }
        wait_for(&self.done, None, || (self.state.lock().unwrap().unfinished == 0).then_some(())).await;
        Ok(())
    }
}
