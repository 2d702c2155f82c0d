//! What a process used, and the journal of every process a host has ended.
//!
//! [`Usage`] is measured where the instance runs: the store's memory limiter
//! sees every growth (so the peak is exact), and fuel is read from the store
//! at every epoch tick and when the call returns (so a terminated process
//! still has a figure, at most one time slice old). It lives on the process's
//! node rather than in the store, because the thread backend drops the store
//! the moment a signal ends the process.
//!
//! A [`Journal`] keeps a [`ProcessRecord`] of every process that ended in a
//! host, guest-spawned children and pool workers included, in the order they
//! ended. It is off unless the embedder asks for it
//! ([`HostBuilder::journal`](crate::HostBuilder::journal)): a host that runs
//! a hundred thousand processes should not keep a hundred thousand records
//! nobody reads. On the native backend a worker keeps a journal of its own
//! descendants and hands it up with its end, so the root's journal is whole.

use crate::exit::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Everything known about one ended process: what `host run --report json`
/// prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// `Process-N`, or the name it was given.
    pub name: String,
    /// Its pid (virtual on the thread backend, real on the native one).
    pub pid: u32,
    /// Its parent's pid when it ended (the root's, once adopted as an orphan).
    pub ppid: u32,
    /// Whether it was a daemon.
    pub daemon: bool,
    /// Python's exit code.
    pub exitcode: ExitCode,
    /// Why it failed (a trap, an exceeded limit, an entry's error), if it did.
    pub failure: Option<String>,
    /// From start to end.
    pub wall: Duration,
    /// Instructions (wasmtime fuel) it used; `None` unless the host meters fuel.
    pub fuel_used: Option<u64>,
    /// The most linear memory it had at once, in bytes, all memories together.
    pub peak_memory: u64,
}

/// What one process has used so far.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Linear memory now, all memories together.
    memory: AtomicU64,
    peak_memory: AtomicU64,
    fuel_used: AtomicU64,
    metered: AtomicBool,
}

impl Usage {
    /// A memory grew from `current` to `desired` bytes (or was created: 0 to
    /// its initial size).
    pub(crate) fn memory_grew(&self, current: u64, desired: u64) {
        let grown = desired.saturating_sub(current);
        let now = self.memory.fetch_add(grown, Ordering::Relaxed) + grown;
        self.peak_memory.fetch_max(now, Ordering::Relaxed);
    }

    /// The fuel used so far, in total (it only grows).
    pub(crate) fn set_fuel_used(&self, used: u64) {
        self.metered.store(true, Ordering::Relaxed);
        self.fuel_used.fetch_max(used, Ordering::Relaxed);
    }

    pub(crate) fn peak_memory(&self) -> u64 {
        self.peak_memory.load(Ordering::Relaxed)
    }

    pub(crate) fn fuel_used(&self) -> Option<u64> {
        self.metered.load(Ordering::Relaxed).then(|| self.fuel_used.load(Ordering::Relaxed))
    }
}

/// The records of every process that ended in one host, in end order.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    records: Mutex<Vec<ProcessRecord>>,
}

impl Journal {
    pub(crate) fn push(&self, record: ProcessRecord) {
        self.records.lock().unwrap().push(record);
    }

    /// Forgets every record (a forked child's copy of its parent's).
    // Only a backend that forks calls it.
    #[cfg(outside_processes)]
    pub(crate) fn clear(&self) {
        self.records.lock().unwrap().clear();
    }

    pub(crate) fn records(&self) -> Vec<ProcessRecord> {
        self.records.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_sums_memories_and_keeps_the_most() {
        let usage = Usage::default();
        usage.memory_grew(0, 100);
        usage.memory_grew(0, 50);
        usage.memory_grew(100, 300);
        assert_eq!(usage.peak_memory(), 350);
        assert_eq!(usage.fuel_used(), None);
        usage.set_fuel_used(10);
        usage.set_fuel_used(7);
        assert_eq!(usage.fuel_used(), Some(10));
    }
}
