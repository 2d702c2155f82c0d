//! Budgets: how much each process may park in the host's shared objects.
//!
//! Everything a guest puts in a shared object (a queue item, a pipe message
//! in flight, an array's numbers) lives in the host's memory, not the
//! guest's, so `--max-memory` does not bound it: these budgets do. Each
//! process has an *account*; a queue item or pipe message is charged to the
//! process that put or sent it ([`ITEM_OVERHEAD`] bytes more than its size,
//! for the host's own bookkeeping), an object and an array's numbers to the
//! process that created it. The charge is a `Charge` that travels with what
//! it pays for and is given back when that goes: the item handed over to a
//! reader, the object freed, the pipe end closed.
//!
//! Two limits apply to every charge, and a charge past either is refused
//! with [`Error::Quota`] (the host does not grow):
//! - per process: `Quotas::bytes` (`--max-shared`, default
//!   [`DEFAULT_MAX_SHARED`]) and `Quotas::objects` (default
//!   [`DEFAULT_MAX_SHARED_OBJECTS`]);
//! - for the whole run: [`RUN_FACTOR`] times each, however many processes
//!   come and go.
//!
//! When a process ends, its account stops limiting anyone, but what it
//! parked and nobody has taken yet stays counted in the run's total until it
//! is taken or its object freed: a process cannot escape the bound by
//! parking and ending, over and over.

use super::{Error, QuotaKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What each process may park by default: 64 MiB.
pub const DEFAULT_MAX_SHARED: u64 = 64 << 20;

/// How many shared objects each process may have created and not freed,
/// by default.
pub const DEFAULT_MAX_SHARED_OBJECTS: u64 = 4096;

/// The whole run may park this many times one process's budget.
pub const RUN_FACTOR: u64 = 16;

/// What the host spends on one message beside its bytes, charged with it:
/// so that a flood of empty messages is bounded too.
pub const ITEM_OVERHEAD: u64 = 64;

/// One process's limits on what it parks in shared objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quotas {
    /// Bytes of queue items, pipe messages in flight and array numbers.
    pub(crate) bytes: u64,
    /// Objects created and not yet freed (a pipe counts two, one per end).
    pub(crate) objects: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas { bytes: DEFAULT_MAX_SHARED, objects: DEFAULT_MAX_SHARED_OBJECTS }
    }
}

/// Bytes and objects counted, updated without a lock: a put and a get on
/// the same queue from two threads only touch these counters.
#[derive(Default)]
struct Usage {
    bytes: AtomicU64,
    objects: AtomicU64,
}

impl Usage {
    /// Adds `more` to `counter` unless that takes it past `limit` (no limit:
    /// `None`); the total it would have come to otherwise.
    fn reserve(counter: &AtomicU64, more: u64, limit: Option<u64>) -> Result<(), u64> {
        if more == 0 {
            return Ok(());
        }
        let Some(limit) = limit else {
            counter.fetch_add(more, Ordering::Relaxed);
            return Ok(());
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let wanted = used.saturating_add(more);
                (wanted <= limit).then_some(wanted)
            })
            .map(|_| ())
            .map_err(|used| used.saturating_add(more))
    }

    fn release(&self, bytes: u64, objects: u64) {
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
        if objects > 0 {
            self.objects.fetch_sub(objects, Ordering::AcqRel);
        }
    }
}

/// One process's account (or the run's unlimited one, for what is counted
/// in the run's total only).
pub(crate) struct Account {
    usage: Usage,
    /// The run's total, which every charge counts in too.
    run: Arc<Usage>,
}

/// Every process's account, in the root host's registry.
pub(crate) struct Budgets {
    quotas: Quotas,
    run: Arc<Usage>,
    /// The account of each live process that has parked something.
    by_pid: Mutex<HashMap<u32, Arc<Account>>>,
    /// Charges counted in the run's total only.
    anyway: Arc<Account>,
}

/// A charge on an account, given back when dropped.
pub(crate) struct Charge {
    account: Arc<Account>,
    bytes: u64,
    objects: u64,
}

impl Budgets {
    pub(crate) fn new(quotas: Quotas) -> Arc<Budgets> {
        let run = Arc::new(Usage::default());
        let anyway = Arc::new(Account { usage: Usage::default(), run: run.clone() });
        Arc::new(Budgets { quotas, run, by_pid: Mutex::default(), anyway })
    }

    /// The account of the process `pid`, made at its first charge. A caller
    /// that charges it often keeps it and uses [`Budgets::charge_to`].
    pub(crate) fn account(&self, pid: u32) -> Arc<Account> {
        self.by_pid
            .lock()
            .unwrap()
            .entry(pid)
            .or_insert_with(|| Arc::new(Account { usage: Usage::default(), run: self.run.clone() }))
            .clone()
    }

    /// Charges `bytes` and `objects` to the process `pid`, or refuses with
    /// [`Error::Quota`] if that would take it, or the run, past a limit.
    pub(crate) fn charge(&self, pid: u32, bytes: u64, objects: u64) -> Result<Charge, Error> {
        self.charge_to(&self.account(pid), bytes, objects)
    }

    /// Charges `bytes` and `objects` to `account` (see [`Budgets::charge`]).
    pub(crate) fn charge_to(&self, account: &Arc<Account>, bytes: u64, objects: u64) -> Result<Charge, Error> {
        let run = RUN_FACTOR;
        let steps = [
            (QuotaKind::Bytes, &account.usage.bytes, bytes, self.quotas.bytes),
            (QuotaKind::Objects, &account.usage.objects, objects, self.quotas.objects),
            (QuotaKind::RunBytes, &self.run.bytes, bytes, self.quotas.bytes.saturating_mul(run)),
            (QuotaKind::RunObjects, &self.run.objects, objects, self.quotas.objects.saturating_mul(run)),
        ];
        for (done, &(kind, counter, more, limit)) in steps.iter().enumerate() {
            if let Err(wanted) = Usage::reserve(counter, more, Some(limit)) {
                // Undo the steps taken: the charge is refused whole.
                for &(_, counter, more, _) in &steps[..done] {
                    if more > 0 {
                        counter.fetch_sub(more, Ordering::AcqRel);
                    }
                }
                return Err(Error::Quota { kind, used: wanted, limit });
            }
        }
        Ok(Charge { account: account.clone(), bytes, objects })
    }

    /// Charges `bytes` to the run's total only, without a limit: for a
    /// message put back after it could not be handed over.
    pub(crate) fn charge_anyway(&self, bytes: u64) -> Charge {
        let _ = Usage::reserve(&self.run.bytes, bytes, None);
        let _ = Usage::reserve(&self.anyway.usage.bytes, bytes, None);
        Charge { account: self.anyway.clone(), bytes, objects: 0 }
    }

    /// How many more bytes the process `pid` may park now, within its own
    /// budget and the run's.
    pub(crate) fn headroom(&self, pid: u32) -> u64 {
        let mine = self.by_pid.lock().unwrap().get(&pid).map_or(0, |a| a.usage.bytes.load(Ordering::Acquire));
        let run = self.quotas.bytes.saturating_mul(RUN_FACTOR);
        self.quotas.bytes.saturating_sub(mine).min(run.saturating_sub(self.run.bytes.load(Ordering::Acquire)))
    }

    /// The process `pid` has ended: its account no longer limits anyone
    /// (what it parked stays counted in the run's total until it goes).
    pub(crate) fn end(&self, pid: u32) {
        self.by_pid.lock().unwrap().remove(&pid);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.usage.release(self.bytes, self.objects);
        self.account.run.release(self.bytes, self.objects);
    }
}

/// A queue item or pipe message in the host, with the charge that pays for it.
pub(crate) struct Message {
    bytes: Vec<u8>,
    charge: Charge,
}

impl Message {
    /// What a message of `len` bytes costs its sender.
    pub(crate) fn cost(len: usize) -> u64 {
        len as u64 + ITEM_OVERHEAD
    }

    pub(crate) fn new(bytes: Vec<u8>, charge: Charge) -> Message {
        Message { bytes, charge }
    }

    /// What the message costs (bytes and overhead).
    pub(crate) fn charged(&self) -> u64 {
        self.charge.bytes
    }

    /// The bytes, kept in the host (a manager's container reads them in place).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, handed over: the charge is given back.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(bytes: u64, objects: u64) -> Arc<Budgets> {
        Budgets::new(Quotas { bytes, objects })
    }

    #[test]
    fn a_process_is_refused_past_its_budget_and_gets_it_back() {
        let b = budgets(100, 2);
        let first = b.charge(7, 60, 0).unwrap();
        assert_eq!(b.charge(7, 50, 0).err(), Some(Error::Quota { kind: QuotaKind::Bytes, used: 110, limit: 100 }));
        // Another process has its own budget.
        let other = b.charge(8, 90, 0).unwrap();
        drop(first);
        let again = b.charge(7, 100, 0).unwrap();
        let objects = b.charge(7, 0, 2).unwrap();
        assert_eq!(b.charge(7, 0, 1).err(), Some(Error::Quota { kind: QuotaKind::Objects, used: 3, limit: 2 }));
        drop((other, again, objects));
        for pid in [7, 8] {
            let account = b.account(pid);
            assert_eq!(account.usage.bytes.load(Ordering::Relaxed), 0);
            assert_eq!(account.usage.objects.load(Ordering::Relaxed), 0);
        }
        assert_eq!(b.run.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(b.run.objects.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_run_is_bounded_though_processes_end() {
        let b = budgets(100, 10);
        let mut parked = Vec::new();
        // Each process parks its whole budget and ends; the next one starts
        // afresh, until the run's total is reached.
        for pid in 1.. {
            match b.charge(pid, 100, 0) {
                Ok(charge) => parked.push(charge),
                Err(error) => {
                    assert_eq!(
                        error,
                        Error::Quota {
                            kind: QuotaKind::RunBytes,
                            used: 100 * (RUN_FACTOR + 1),
                            limit: 100 * RUN_FACTOR
                        }
                    );
                    break;
                }
            }
            b.end(pid);
        }
        assert_eq!(parked.len() as u64, RUN_FACTOR);
        // What an ended process parked is given back when taken.
        parked.pop();
        assert!(b.charge(1000, 100, 0).is_ok());
    }
}
