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
//! queue empty first watches it for a moment ([`crate::watch`]) before it
//! sleeps: a producer running beside it on another core puts again within a
//! microsecond, and a getter that slept would cost a thread wake-up per item.
//!
//! A put that wakes a sleeping getter then gives up its turn on its thread.
//! The executor runs a task woken from one of its threads next on that same
//! thread, where no other thread may take it, so the getter would otherwise
//! wait for a producer that keeps putting (a guest in a loop) to yield at
//! its time slice's end, up to 10 ms, while the queue fills. Given up, the
//! turn goes to the getter, and the producer, queued behind it, to another
//! thread that is free.

use super::budget::Message;
use super::{Error, wait_for};
use crate::watch::{WATCH, watch};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::Instant;
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
    /// How many items were ever put: what a watching getter looks at.
    puts: AtomicU64,
    /// Getters waiting for a put (past any watch): a put that may have
    /// woken one gives up its turn.
    sleeping: AtomicUsize,
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
            sleeping: AtomicUsize::new(0),
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
                if self.sleeping.load(Ordering::SeqCst) > 0 {
                    give_up_turn().await;
                }
                Ok(())
            }
            None => Err(Error::Full),
        }
    }

    /// Removes the first item, waiting up to `timeout`; [`Error::Empty`] after.
    pub(crate) async fn get(&self, timeout: Option<u64>) -> Result<Vec<u8>, Error> {
        let item = match self.pop() {
            Some(item) => Some(item),
            None => {
                let _sleeping = Sleeping::count(&self.sleeping);
                Box::pin(wait_for(&self.put, timeout, || self.pop())).await
            }
        };
        self.handed(item)
    }

    /// [`get`](Self::get) for a getter running in this host, which watches
    /// an empty queue for a put (up to [`WATCH`]) before it sleeps, where
    /// another core could be putting and the wait is not shorter.
    pub(crate) async fn get_watching(&self, timeout: Option<u64>) -> Result<Vec<u8>, Error> {
        let watched = WATCH.as_nanos() as u64;
        if let Some(item) = self.pop() {
            return self.handed(Some(item));
        }
        if timeout.is_none_or(|t| t > watched) && several_cores() {
            if let Some(item) = self.watch() {
                return self.handed(Some(item));
            }
            return self.get(timeout.map(|t| t - watched)).await;
        }
        self.get(timeout).await
    }

    fn pop(&self) -> Option<Message> {
        self.state.lock().unwrap().items.pop_front()
    }

    /// The first item put within [`WATCH`], if one is and no other getter
    /// took it first.
    fn watch(&self) -> Option<Message> {
        let mut seen = self.puts.load(Ordering::Acquire);
        watch(Instant::now() + WATCH, || {
            let now = self.puts.load(Ordering::Acquire);
            if now == seen {
                return None;
            }
            seen = now;
            self.pop()
        })
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

/// A getter counted in [`Queue::sleeping`], uncounted however its wait ends
/// (its future may be dropped: a timeout, a terminate).
struct Sleeping<'a>(&'a AtomicUsize);

impl Sleeping<'_> {
    fn count(sleeping: &AtomicUsize) -> Sleeping<'_> {
        sleeping.fetch_add(1, Ordering::SeqCst);
        Sleeping(sleeping)
    }
}

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Ends the calling task's turn on its thread: it is woken at once and
/// queued behind what is ready there, where another thread may take it
/// (`tokio::task::yield_now` would hold it back from other threads until
/// this one had nothing else to run).
async fn give_up_turn() {
    let mut given_up = false;
    std::future::poll_fn(|cx| {
        if given_up {
            return Poll::Ready(());
        }
        given_up = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Whether this machine has more than one core: on one, a getter that
/// watches only keeps the producer off it.
fn several_cores() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| crate::runtime::cpu_count() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::budget::{Budgets, Quotas};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn message(budgets: &Budgets, bytes: &[u8]) -> Message {
        Message::new(bytes.to_vec(), budgets.charge_anyway(Message::cost(bytes.len())))
    }

    /// A putter that keeps its thread after its put (a guest in a loop)
    /// does not hold back the getter it woke: before, the getter waited on
    /// the putter's thread for it to yield, here for ever.
    #[test]
    fn a_woken_getter_runs_while_its_putter_keeps_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let budgets = Budgets::new(Quotas::default());
        let queue = Arc::new(Queue::new(0, false));
        let got = Arc::new(AtomicBool::new(false));
        let getter = runtime.spawn({
            let (queue, got) = (queue.clone(), got.clone());
            async move {
                let item = queue.get(None).await;
                got.store(true, Ordering::SeqCst);
                item
            }
        });
        while queue.sleeping.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let putter = runtime.spawn({
            let (queue, got, item) = (queue.clone(), got.clone(), message(&budgets, b"one"));
            async move {
                queue.put(item, None).await.unwrap();
                // Busy without yielding, as a guest between two epoch ticks;
                // bounded only so that a failure does not hang the suite.
                let give_up = Instant::now() + Duration::from_secs(30);
                while !got.load(Ordering::SeqCst) && Instant::now() < give_up {
                    std::hint::spin_loop();
                }
                got.load(Ordering::SeqCst)
            }
        });
        assert!(runtime.block_on(putter).unwrap(), "the getter never ran while its putter kept its thread");
        assert_eq!(runtime.block_on(getter).unwrap().unwrap(), b"one");
    }

    /// A getter that stops waiting (timed out, or its future dropped: a
    /// terminate) is no longer counted as sleeping, and takes nothing.
    #[test]
    fn a_getter_that_stops_waiting_is_uncounted() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let budgets = Budgets::new(Quotas::default());
        let queue = Queue::new(0, false);
        assert_eq!(runtime.block_on(queue.get(Some(1_000_000))), Err(Error::Empty));
        let dropped = runtime.block_on(async { tokio::time::timeout(Duration::from_millis(1), queue.get(None)).await });
        assert!(dropped.is_err());
        assert_eq!(queue.sleeping.load(Ordering::SeqCst), 0);
        runtime.block_on(queue.put(message(&budgets, b"kept"), None)).unwrap();
        assert_eq!(runtime.block_on(queue.get(None)).unwrap(), b"kept");
    }
}
