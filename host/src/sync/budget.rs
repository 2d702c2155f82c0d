//! Budgets: how much each process may park in the host's shared objects.
//!
//! Everything a guest puts in a shared object (a queue item, a pipe message
//! in flight, an array's numbers) lives in the host's memory, not the
//! guest's, so `--max-memory` does not bound it: these budgets do. Each
//! process has an *account*; a queue item or pipe message is charged to the
//! process that put or sent it ([`ITEM_OVERHEAD`] bytes more than its size,
//! for the host's own bookkeeping), an object and an array's numbers to the
//! process that created it. The charge is a [`Charge`] that travels with what
//! it pays for and is given back when that goes: the item handed over to a
//! reader, the object freed, the pipe end closed.
//!
//! Two limits apply to every charge, and a charge past either is refused
//! with [`Error::Quota`] (the host does not grow):
//! - per process: [`Quotas::bytes`] (`--max-shared`, default
//!   [`DEFAULT_MAX_SHARED`]) and [`Quotas::objects`] (default
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
        Quotas {
            bytes: DEFAULT_MAX_SHARED,
            objects: DEFAULT_MAX_SHARED_OBJECTS,
        }
    }
}

#[derive(Default)]
struct Usage {
    bytes: u64,
    objects: u64,
}

#[derive(Default)]
struct Accounts {
    /// The account of each live process that has parked something.
    by_pid: HashMap<u32, u64>,
    /// Accounts with something charged, live or ended.
    usage: HashMap<u64, Usage>,
    next: u64,
    run: Usage,
}

/// Every process's account, in the root host's registry.
pub(crate) struct Budgets {
    quotas: Quotas,
    accounts: Mutex<Accounts>,
}

/// A charge on an account, given back when dropped.
pub(crate) struct Charge {
    budgets: Arc<Budgets>,
    /// `None`: counted in the run's total only.
    account: Option<u64>,
    bytes: u64,
    objects: u64,
}

impl Budgets {
    pub(crate) fn new(quotas: Quotas) -> Arc<Budgets> {
        Arc::new(Budgets {
            quotas,
            accounts: Mutex::default(),
        })
    }

    /// Charges `bytes` and `objects` to the process `pid`, or refuses with
    /// [`Error::Quota`] if that would take it, or the run, past a limit.
    pub(crate) fn charge(self: &Arc<Self>, pid: u32, bytes: u64, objects: u64) -> Result<Charge, Error> {
        let mut accounts = self.accounts.lock().unwrap();
        let accounts = &mut *accounts;
        let account = accounts.by_pid.get(&pid).copied();
        let mine = account.and_then(|a| accounts.usage.get(&a));
        let (used_bytes, used_objects) = mine.map_or((0, 0), |u| (u.bytes, u.objects));
        let run = RUN_FACTOR;
        let checks = [
            (QuotaKind::Bytes, used_bytes, bytes, self.quotas.bytes),
            (QuotaKind::Objects, used_objects, objects, self.quotas.objects),
            (QuotaKind::RunBytes, accounts.run.bytes, bytes, self.quotas.bytes.saturating_mul(run)),
            (QuotaKind::RunObjects, accounts.run.objects, objects, self.quotas.objects.saturating_mul(run)),
        ];
        for (kind, used, more, limit) in checks {
            let wanted = used.saturating_add(more);
            if more > 0 && wanted > limit {
                return Err(Error::Quota { kind, used: wanted, limit });
            }
        }
        let account = account.unwrap_or_else(|| {
            accounts.next += 1;
            accounts.by_pid.insert(pid, accounts.next);
            accounts.next
        });
        let usage = accounts.usage.entry(account).or_default();
        usage.bytes += bytes;
        usage.objects += objects;
        accounts.run.bytes += bytes;
        accounts.run.objects += objects;
        Ok(Charge { budgets: self.clone(), account: Some(account), bytes, objects })
    }

    /// Charges `bytes` to the run's total only, without a limit: for a
    /// message put back after it could not be handed over.
    pub(crate) fn charge_anyway(self: &Arc<Self>, bytes: u64) -> Charge {
        self.accounts.lock().unwrap().run.bytes += bytes;
        Charge { budgets: self.clone(), account: None, bytes, objects: 0 }
    }

    /// How many more bytes the process `pid` may park now, within its own
    /// budget and the run's.
    pub(crate) fn headroom(&self, pid: u32) -> u64 {
        let accounts = self.accounts.lock().unwrap();
        let mine = accounts.by_pid.get(&pid).and_then(|a| accounts.usage.get(a)).map_or(0, |u| u.bytes);
        let run = self.quotas.bytes.saturating_mul(RUN_FACTOR);
        self.quotas.bytes.saturating_sub(mine).min(run.saturating_sub(accounts.run.bytes))
    }

    /// The process `pid` has ended: its account no longer limits anyone
    /// (what it parked stays counted in the run's total until it goes).
    pub(crate) fn end(&self, pid: u32) {
        self.accounts.lock().unwrap().by_pid.remove(&pid);
    }

    fn give_back(&self, charge: &Charge) {
        let mut accounts = self.accounts.lock().unwrap();
        accounts.run.bytes = accounts.run.bytes.saturating_sub(charge.bytes);
        accounts.run.objects = accounts.run.objects.saturating_sub(charge.objects);
        if let Some(account) = charge.account
            && let Some(usage) = accounts.usage.get_mut(&account)
        {
            usage.bytes = usage.bytes.saturating_sub(charge.bytes);
            usage.objects = usage.objects.saturating_sub(charge.objects);
            if usage.bytes == 0 && usage.objects == 0 {
                accounts.usage.remove(&account);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budgets.give_back(self);
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
        assert_eq!(
            b.charge(7, 50, 0).err(),
            Some(Error::Quota { kind: QuotaKind::Bytes, used: 110, limit: 100 })
        );
        // Another process has its own budget.
        let other = b.charge(8, 90, 0).unwrap();
        drop(first);
        let again = b.charge(7, 100, 0).unwrap();
        let objects = b.charge(7, 0, 2).unwrap();
        assert_eq!(
            b.charge(7, 0, 1).err(),
            Some(Error::Quota { kind: QuotaKind::Objects, used: 3, limit: 2 })
        );
        drop((other, again, objects));
        assert!(b.accounts.lock().unwrap().usage.is_empty());
        assert_eq!(b.accounts.lock().unwrap().run.bytes, 0);
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
                    assert_eq!(error, Error::Quota { kind: QuotaKind::RunBytes, used: 100 * (RUN_FACTOR + 1), limit: 100 * RUN_FACTOR });
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
