//! Leases: items of an unbounded queue handed ahead to a consumer whose
//! process runs in another host (a native worker), so that its next gets
//! need no round trip to the root.
//!
//! When such a consumer's `get` finds more items waiting, the registry
//! takes up to [`LEASE_ITEMS`] more (at most [`LEASE_BYTES`]) and the
//! backend sends them with the answer. They are out of the queue but not
//! yet delivered: the registry keeps each lease's items until the consumer
//! tells it, item by item and before its guest sees the item, that it took
//! one ([`Leases::taken`]). What the consumer did not take goes back to the
//! front of the queue, in order, when it returns the lease ([`Leases::returned`])
//! or ends however it ends ([`Leases::release`]): none is lost, none
//! delivered twice.
//!
//! A lease never keeps an item from another consumer: no lease is granted
//! on a queue someone waits on, and a getter that finds the queue empty
//! while another process holds a lease on it recalls that lease (the
//! backend asks the holder to return it) before it waits. Leased items
//! still count in the queue's size.

use crate::backend::Lease;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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
    /// Getters waiting, by queue.
    waiting: HashMap<u64, usize>,
}

/// One lease, as the registry keeps it.
struct Record {
    pid: u32,
    queue: u64,
    /// What the holder has not taken yet, oldest first.
    items: VecDeque<Vec<u8>>,
    /// Fired to recall the lease; dropped with the record.
    recall: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Items that go back to the front of their queue, oldest first.
pub(super) type GivenBack = Vec<(u64, VecDeque<Vec<u8>>)>;

impl Leases {
    /// Records `items`, taken from `queue` for `pid`, as a lease, unless a
    /// getter waits on the queue meanwhile, or `pid` holds a lease on it
    /// already (a worker asks only once it took all of its lease: one that
    /// asks before gets no more): then they are handed back (`Err`) for the
    /// caller to return to the queue.
    pub(super) fn grant(&self, pid: u32, queue: u64, items: Vec<Vec<u8>>) -> Result<Lease, Vec<Vec<u8>>> {
        let mut state = self.0.lock().unwrap();
        let held = state.by_serial.values().any(|r| r.pid == pid && r.queue == queue);
        if held || state.waiting.get(&queue).is_some_and(|&n| n > 0) {
            return Err(items);
        }
        state.next += 1;
        let serial = state.next;
        let (recall, recalled) = tokio::sync::oneshot::channel();
        let record = Record { pid, queue, items: items.iter().cloned().collect(), recall: Some(recall) };
        state.by_serial.insert(serial, record);
        Ok(Lease { object: queue, serial, items, recalled })
    }

    /// Whether a getter waits on `queue` (no lease is granted then).
    pub(super) fn contended(&self, queue: u64) -> bool {
        self.0.lock().unwrap().waiting.get(&queue).is_some_and(|&n| n > 0)
    }

    /// The holder `pid` took the oldest item of its lease `serial`.
    pub(super) fn taken(&self, pid: u32, serial: u64) {
        let mut state = self.0.lock().unwrap();
        if let Some(record) = state.by_serial.get_mut(&serial).filter(|r| r.pid == pid) {
            record.items.pop_front();
            if record.items.is_empty() {
                state.by_serial.remove(&serial);
            }
        }
    }

    /// The holder `pid` returned its lease `serial`: what it did not take.
    pub(super) fn returned(&self, pid: u32, serial: u64) -> GivenBack {
        let mut state = self.0.lock().unwrap();
        match state.by_serial.get(&serial) {
            Some(record) if record.pid == pid => {
                let record = state.by_serial.remove(&serial).expect("just found");
                vec![(record.queue, record.items)]
            }
            _ => Vec::new(),
        }
    }

    /// The process `pid` ended: what it did not take of every lease.
    pub(super) fn release(&self, pid: u32) -> GivenBack {
        let mut state = self.0.lock().unwrap();
        let serials: Vec<u64> = state.by_serial.iter().filter(|(_, r)| r.pid == pid).map(|(&s, _)| s).collect();
        serials
            .into_iter()
            .filter_map(|serial| state.by_serial.remove(&serial))
            .map(|record| (record.queue, record.items))
            .collect()
    }

    /// How many leased items of `queue` are not taken yet.
    pub(super) fn outstanding(&self, queue: u64) -> u64 {
        let state = self.0.lock().unwrap();
        state.by_serial.values().filter(|r| r.queue == queue).map(|r| r.items.len() as u64).sum()
    }

    /// A getter of `pid` is about to wait on `queue`: every other process's
    /// lease on it is recalled, and none is granted until the guard drops.
    pub(super) fn wait(&self, pid: u32, queue: u64) -> Waiting<'_> {
        let mut state = self.0.lock().unwrap();
        *state.waiting.entry(queue).or_default() += 1;
        for record in state.by_serial.values_mut().filter(|r| r.queue == queue && r.pid != pid) {
            if let Some(recall) = record.recall.take() {
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

    fn items(n: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i]).collect()
    }

    /// A lease counts until taken; a second on the same queue for the same
    /// process, or any while a getter waits, is refused; a waiting getter
    /// recalls the others' leases; an ended holder's untaken items come
    /// back in order.
    #[test]
    fn leases_are_taken_refused_recalled_and_released() {
        let leases = Leases::default();
        let mut first = leases.grant(1, 7, items(3)).ok().unwrap();
        assert_eq!(leases.outstanding(7), 3);
        assert!(leases.grant(1, 7, items(1)).is_err());
        leases.taken(1, first.serial);
        leases.taken(2, first.serial);
        assert_eq!(leases.outstanding(7), 2);
        let waiting = leases.wait(2, 7);
        assert_eq!(first.recalled.try_recv(), Ok(()));
        assert!(leases.grant(3, 7, items(1)).is_err());
        drop(waiting);
        assert!(leases.returned(2, first.serial).is_empty());
        let back = leases.returned(1, first.serial);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, 7);
        assert_eq!(Vec::from(back[0].1.clone()), vec![vec![1], vec![2]]);
        let second = leases.grant(1, 7, items(2)).ok().unwrap();
        leases.grant(1, 8, items(1)).ok().unwrap();
        leases.taken(1, second.serial);
        let mut back = leases.release(1);
        back.sort_by_key(|(queue, _)| *queue);
        assert_eq!(back.iter().map(|(q, i)| (*q, i.len())).collect::<Vec<_>>(), vec![(7, 1), (8, 1)]);
        assert_eq!(leases.outstanding(7), 0);
        // All taken: nothing left to recall.
        let mut third = leases.grant(1, 7, items(1)).ok().unwrap();
        leases.taken(1, third.serial);
        assert!(third.recalled.try_recv().is_err());
    }
}
