//! Leases: items of an unbounded queue handed ahead to a consumer whose
//! process runs in another host (a native worker), so that its next gets
//! need no round trip to the root.
//!
//! When such a consumer's `get` finds more items waiting, the registry
//! takes up to [`LEASE_ITEMS`] more (at most [`LEASE_BYTES`]) and the
//! backend sends them with the answer. They are out of the queue but not
//! yet delivered: the registry keeps each lease's items, and the consumer
//! counts each it takes, before its guest sees it, in a counter the
//! registry reads whenever it needs to know ([`Leases::counted`]): the
//! first that many items are the consumer's. What the consumer did not
//! take goes back to the front of the queue, in order, when it returns the
//! lease ([`Leases::returned`]) or ends however it ends ([`Leases::release`]):
//! none is lost, none delivered twice.
//!
//! A lease never keeps an item from another consumer: no lease is granted
//! on a queue someone waits on, and a getter that finds the queue empty
//! while another process holds a lease on it recalls that lease (the
//! backend asks the holder to return it) before it waits. Leased items not
//! taken still count in the queue's size, exactly: a lease is made and
//! sized under one lock ([`Leases::grant`], [`Leases::size`]).

use crate::backend::{Lease, TakenCount};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The most items one lease hands ahead.
pub(crate) const LEASE_ITEMS: usize = 256;

/// The most bytes of items one lease hands ahead (the item that answers the
/// get does not count).
pub(crate) const LEASE_BYTES: usize = 256 << 10;

/// Every lease of a registry, and how many getters wait on each queue.
#[derive(Default)]
pub(super) struct Leases(Mutex<State>);

#[derive(Default)]
struct State {
    next: u64,
    by_serial: HashMap<u64, Record>,
    /// The serial of each holder's lease on each queue, by `(pid, queue)`.
    by_holder: HashMap<(u32, u64), u64>,
    /// Getters waiting, by queue.
    waiting: HashMap<u64, usize>,
}

/// One lease, as the registry keeps it.
struct Record {
    pid: u32,
    queue: u64,
    /// Every item leased, oldest first (shared with the lease as it is sent).
    items: Arc<Vec<Vec<u8>>>,
    /// How many the holder took; none until the backend gives it.
    counter: Option<Box<dyn TakenCount>>,
    /// Fired to recall the lease; dropped with the record.
    recall: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Record {
    fn taken(&self) -> usize {
        let taken = self.counter.as_ref().map_or(0, |counter| counter.taken());
        usize::try_from(taken).unwrap_or(usize::MAX).min(self.items.len())
    }

    /// How many items the holder did not take.
    fn left(&self) -> usize {
        self.items.len() - self.taken()
    }

    /// The items the holder did not take, oldest first.
    fn rest(self) -> VecDeque<Vec<u8>> {
        let taken = self.taken();
        match Arc::try_unwrap(self.items) {
            Ok(items) => items.into_iter().skip(taken).collect(),
            Err(shared) => shared[taken..].iter().cloned().collect(),
        }
    }
}

/// Items that go back to the front of their queue, oldest first.
pub(super) type GivenBack = Vec<(u64, VecDeque<Vec<u8>>)>;

impl State {
    fn remove(&mut self, serial: u64) -> Option<Record> {
        let record = self.by_serial.remove(&serial)?;
        self.by_holder.remove(&(record.pid, record.queue));
        Some(record)
    }

    fn contended(&self, queue: u64) -> bool {
        self.waiting.get(&queue).is_some_and(|&n| n > 0)
    }
}

impl Leases {
    /// Leases to `pid` the items `take` takes from `queue` (none: no
    /// lease), unless a getter waits on the queue, or `pid` holds a lease
    /// on it that it did not take all of (a worker asks only once it took
    /// all of its lease: one that asks before gets no more). `take` runs
    /// under the leases' lock, so that the items count in the queue's size
    /// throughout (see [`Leases::size`]).
    pub(super) fn grant(&self, pid: u32, queue: u64, take: impl FnOnce() -> Vec<Vec<u8>>) -> Option<Lease> {
        let mut state = self.0.lock().unwrap();
        if state.contended(queue) {
            return None;
        }
        if let Some(&serial) = state.by_holder.get(&(pid, queue)) {
            if state.by_serial[&serial].left() > 0 {
                return None;
            }
            state.remove(serial);
        }
        let items = take();
        if items.is_empty() {
            return None;
        }
        state.next += 1;
        let serial = state.next;
        let (recall, recalled) = tokio::sync::oneshot::channel();
        let items = Arc::new(items);
        let record = Record { pid, queue, items: items.clone(), counter: None, recall: Some(recall) };
        state.by_serial.insert(serial, record);
        state.by_holder.insert((pid, queue), serial);
        Some(Lease { object: queue, serial, items, recalled })
    }

    /// How many items of its lease `serial` the holder `pid` took is `counter`.
    pub(super) fn counted(&self, pid: u32, serial: u64, counter: Box<dyn TakenCount>) {
        let mut state = self.0.lock().unwrap();
        if let Some(record) = state.by_serial.get_mut(&serial).filter(|r| r.pid == pid) {
            record.counter = Some(counter);
        }
    }

    /// The holder `pid` returned its lease `serial`: what it did not take.
    pub(super) fn returned(&self, pid: u32, serial: u64) -> GivenBack {
        let mut state = self.0.lock().unwrap();
        match state.by_serial.get(&serial) {
            Some(record) if record.pid == pid => {
                let record = state.remove(serial).expect("just found");
                vec![(record.queue, record.rest())]
            }
            _ => Vec::new(),
        }
    }

    /// The process `pid` ended: what it did not take of every lease.
    pub(super) fn release(&self, pid: u32) -> GivenBack {
        let mut state = self.0.lock().unwrap();
        let serials: Vec<u64> =
            state.by_holder.iter().filter(|&(&(holder, _), _)| holder == pid).map(|(_, &s)| s).collect();
        serials
            .into_iter()
            .filter_map(|serial| state.remove(serial))
            .map(|record| (record.queue, record.rest()))
            .filter(|(_, rest)| !rest.is_empty())
            .collect()
    }

    /// The size of `queue`, `len` items in it: those and its leased items
    /// not taken yet.
    pub(super) fn size(&self, queue: u64, len: impl FnOnce() -> u64) -> u64 {
        let state = self.0.lock().unwrap();
        let leased: usize = state.by_serial.values().filter(|r| r.queue == queue).map(Record::left).sum();
        len() + leased as u64
    }

    /// A getter of `pid` is about to wait on `queue`: every other process's
    /// lease on it is recalled, and none is granted until the guard drops.
    pub(super) fn wait(&self, pid: u32, queue: u64) -> Waiting<'_> {
        let mut state = self.0.lock().unwrap();
        *state.waiting.entry(queue).or_default() += 1;
        for record in state.by_serial.values_mut().filter(|r| r.queue == queue && r.pid != pid) {
            if record.left() > 0
                && let Some(recall) = record.recall.take()
            {
                let _ = recall.send(());
            }
        }
        Waiting { leases: self, queue }
    }
}

/// A getter waiting on a queue (see [`Leases::wait`]).
pub(super) struct Waiting<'a> {
    leases: &'a Leases,
    queue: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.leases.0.lock().unwrap();
        if let Some(n) = state.waiting.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                state.waiting.remove(&self.queue);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn items(n: u8) -> impl FnOnce() -> Vec<Vec<u8>> {
        move || (0..n).map(|i| vec![i]).collect()
    }

    /// A holder's count, as a test sets it.
    struct Count(Arc<AtomicU64>);

    impl TakenCount for Count {
        fn taken(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn counted(leases: &Leases, pid: u32, lease: &Lease) -> Arc<AtomicU64> {
        let count = Arc::new(AtomicU64::new(0));
        leases.counted(pid, lease.serial, Box::new(Count(count.clone())));
        count
    }

    /// A lease counts in its queue's size until taken; a second on the
    /// same queue for the same process before the first is all taken, or
    /// any while a getter waits, is refused; a waiting getter recalls the
    /// others' leases; an ended holder's untaken items come back in order.
    #[test]
    fn leases_are_taken_refused_recalled_and_released() {
        let leases = Leases::default();
        let mut first = leases.grant(1, 7, items(3)).unwrap();
        assert_eq!(leases.size(7, || 5), 8);
        let taken = counted(&leases, 1, &first);
        assert!(leases.grant(1, 7, items(1)).is_none());
        taken.store(1, Ordering::SeqCst);
        // Another process's count is not this lease's.
        leases.counted(2, first.serial, Box::new(Count(Arc::new(AtomicU64::new(3)))));
        assert_eq!(leases.size(7, || 0), 2);
        let waiting = leases.wait(2, 7);
        assert_eq!(first.recalled.try_recv(), Ok(()));
        assert!(leases.grant(3, 7, items(1)).is_none());
        drop(waiting);
        assert!(leases.returned(2, first.serial).is_empty());
        let back = leases.returned(1, first.serial);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, 7);
        assert_eq!(Vec::from(back[0].1.clone()), vec![vec![1], vec![2]]);
        let second = leases.grant(1, 7, items(2)).unwrap();
        counted(&leases, 1, &second).store(1, Ordering::SeqCst);
        leases.grant(1, 8, items(1)).unwrap();
        let mut back = leases.release(1);
        back.sort_by_key(|(queue, _)| *queue);
        assert_eq!(back.iter().map(|(q, i)| (*q, i.len())).collect::<Vec<_>>(), vec![(7, 1), (8, 1)]);
        assert_eq!(leases.size(7, || 0), 0);
        // All taken: nothing left to recall, and the next lease is granted.
        let mut third = leases.grant(1, 7, items(1)).unwrap();
        counted(&leases, 1, &third).store(1, Ordering::SeqCst);
        drop(leases.wait(2, 7));
        assert!(third.recalled.try_recv().is_err());
        assert!(leases.grant(1, 7, items(1)).is_some());
        // Nothing to take: no lease.
        assert!(leases.grant(4, 9, items(0)).is_none());
    }
}
