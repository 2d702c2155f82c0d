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
//!
//! A getter that runs in this host ([`Queue::get_watching`]) and finds the
//! queue empty first watches it for a moment before it sleeps: a producer
//! running beside it on another core puts again within a microsecond, and a
//! getter that slept would cost a thread wake-up per item (and, woken from
//! the producer's own thread, wait on that thread until the producer
//! yields).

use super::budget::Message;
use super::{Error, wait_for};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a getter in this host watches an empty queue before it sleeps:
/// well under a thread wake-up on a busy machine, far over the time between
/// two puts of a producer that runs.
const WATCH: Duration = Duration::from_micros(50);

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
    /// How many items were ever put: what a watching getter looks at.
    puts: AtomicU64,
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
            puts: AtomicU64::new(0),
        }
    }

    /// Appends `item`, waiting up to `timeout` for room; [`Error::Full`] after.
    pub(crate) async fn put(&self, item: Message, timeout: Option<u64>) -> Result<(), Error> {
        let mut item = Some(item);
        let mut push = || {
            let mut state = self.state.lock().unwrap();
            if self.maxsize != 0 && state.items.len() >= self.maxsize {
                return None;
            }
            state.items.push_back(item.take().expect("an item is put once"));
            state.unfinished += 1;
            self.puts.fetch_add(1, Ordering::Release);
            Some(())
        };
        // The wait is boxed: a put that has room (most do) moves no waiter's
        // state around.
        let put = match push() {
            Some(()) => Some(()),
            None => Box::pin(wait_for(&self.taken, timeout, &mut push)).await,
        };
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
        let item = match self.pop() {
            Some(item) => Some(item),
            None => Box::pin(wait_for(&self.put, timeout, || self.pop())).await,
        };
        self.handed(item)
    }

    /// [`get`](Self::get) for a getter running in this host, which watches
    /// an empty queue for a put (up to [`WATCH`]) before it sleeps, where
    /// another core could be putting and the wait is not shorter.
    pub(crate) async fn get_watching(&self, timeout: Option<u64>) -> Result<Vec<u8>, Error> {
        let watch = WATCH.as_nanos() as u64;
        if let Some(item) = self.pop() {
            return self.handed(Some(item));
        }
        if timeout.is_none_or(|t| t > watch) && several_cores() {
            if let Some(item) = self.watch() {
                return self.handed(Some(item));
            }
            return self.get(timeout.map(|t| t - watch)).await;
        }
        self.get(timeout).await
    }

    fn pop(&self) -> Option<Message> {
        self.state.lock().unwrap().items.pop_front()
    }

    /// The first item put within [`WATCH`], if one is and no other getter
    /// took it first.
    fn watch(&self) -> Option<Message> {
        let start = Instant::now();
        let mut seen = self.puts.load(Ordering::Acquire);
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                let now = self.puts.load(Ordering::Acquire);
                if now != seen {
                    seen = now;
                    if let Some(item) = self.pop() {
                        return Some(item);
                    }
                }
            }
            if start.elapsed() >= WATCH {
                return None;
            }
        }
    }

    /// What a get of `item` (`None`: none came in time) gives its getter.
    fn handed(&self, item: Option<Message>) -> Result<Vec<u8>, Error> {
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

/// Whether this machine has more than one core: on one, a getter that
/// watches only keeps the producer off it.
fn several_cores() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| crate::runtime::cpu_count() > 1)
}
