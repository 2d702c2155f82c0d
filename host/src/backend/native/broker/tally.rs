//! The counts of leased items a worker took, in memory it shares with its
//! root: so a worker takes an item of a lease without a message, and the
//! root still knows, whenever it needs to (a queue's size, a recall, the
//! worker's end, however it ends), which items are the worker's.
//!
//! A worker makes one table of [`COUNTERS`] counters (a `memfd`, sealed
//! against resizing) and sends it on its channel before its first object
//! request ([`kind::TALLY`](crate::backend::native::protocol::kind::TALLY)).
//! The root maps it only once it has checked the seals and the size, so
//! that the worker cannot make the root's mapping fault. Each lease the
//! root hands over names a counter of its own, zeroed first; the worker
//! adds one to it before its guest sees each item. A counter is the root's
//! to give again only once its lease is over (taken to the last, returned,
//! or its worker ended), when the worker no longer writes it.

use crate::backend::TakenCount;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many leases one worker may hold at once (one per queue it gets from).
pub(super) const COUNTERS: u32 = 512;

const LENGTH: usize = COUNTERS as usize * size_of::<AtomicU64>();

/// One connection's table, mapped.
pub(super) struct Tally {
    base: NonNull<AtomicU64>,
    /// The counters free to give (the root's side).
    free: Mutex<Vec<u32>>,
}

// SAFETY: the mapping is only reached through atomics, and lives as long as
// the `Tally`.
unsafe impl Send for Tally {}
unsafe impl Sync for Tally {}

impl Tally {
    /// A new table (the worker's), and the descriptor to send its root.
    pub(super) fn new() -> std::io::Result<(Tally, OwnedFd)> {
        let fd = memfd_create(c"host-lease-tally", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        nix::unistd::ftruncate(&fd, LENGTH as i64)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
        Ok((Tally::map(&fd)?, fd))
    }

    /// The table a worker sent (the root's side), once its seals say it can
    /// never shrink under the root's mapping.
    pub(super) fn adopt(fd: &OwnedFd) -> std::io::Result<Arc<Tally>> {
        let seals = SealFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
            return Err(std::io::Error::other("a lease tally that is not sealed"));
        }
        let tally = Tally::map(fd)?;
        *tally.free.lock().unwrap() = (0..COUNTERS).rev().collect();
        Ok(Arc::new(tally))
    }

    /// The table of `fd`, checked for its size.
    fn map(fd: &OwnedFd) -> std::io::Result<Tally> {
        let size = nix::sys::stat::fstat(fd)?.st_size;
        if size != LENGTH as i64 {
            return Err(std::io::Error::other(format!("a lease tally of {size} bytes, not {LENGTH}")));
        }
        let length = std::num::NonZeroUsize::new(LENGTH).expect("not zero");
        let protection = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new shared mapping of a whole file of the size checked
        // (sealed against shrinking, on the root's side), at an address the
        // kernel picks.
        let base = unsafe { mmap(None, length, protection, MapFlags::MAP_SHARED, fd, 0)? };
        Ok(Tally { base: base.cast(), free: Mutex::new(Vec::new()) })
    }

    /// Counter `index`; `None` past the table.
    pub(super) fn counter(&self, index: u32) -> Option<&AtomicU64> {
        // SAFETY: below `COUNTERS`, within the mapping, 8-byte aligned
        // (the mapping is page-aligned), for as long as `self` lives.
        (index < COUNTERS).then(|| unsafe { &*self.base.as_ptr().add(index as usize) })
    }

    /// A free counter, zeroed, for a lease about to be handed over; `None`
    /// when every one is in use.
    pub(super) fn give(self: &Arc<Tally>) -> Option<Counter> {
        let index = self.free.lock().unwrap().pop()?;
        self.counter(index).expect("a counter of the table").store(0, Ordering::Release);
        Some(Counter { tally: self.clone(), index })
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, reached by nobody else now.
        let _ = unsafe { munmap(self.base.cast(), LENGTH) };
    }
}

/// One lease's counter, as the root reads it; free again once dropped.
pub(super) struct Counter {
    tally: Arc<Tally>,
    index: u32,
}

impl Counter {
    pub(super) fn index(&self) -> u32 {
        self.index
    }
}

impl TakenCount for Counter {
    fn taken(&self) -> u64 {
        self.tally.counter(self.index).expect("a counter of the table").load(Ordering::Acquire)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.tally.free.lock().unwrap().push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters are given zeroed, shared with the worker's mapping, and
    /// given again only once dropped; none past the table.
    #[test]
    fn counters_are_shared_and_given_again() {
        let (worker, fd) = Tally::new().unwrap();
        let root = Tally::adopt(&fd).unwrap();
        let first = root.give().unwrap();
        worker.counter(first.index()).unwrap().fetch_add(2, Ordering::Release);
        assert_eq!(first.taken(), 2);
        let index = first.index();
        drop(first);
        let again = root.give().unwrap();
        assert_eq!((again.index(), again.taken()), (index, 0));
        assert!(worker.counter(COUNTERS).is_none());
        let all: Vec<Counter> = std::iter::from_fn(|| root.give()).collect();
        assert_eq!(all.len(), COUNTERS as usize - 1);
        // Sealed: the worker cannot shrink it under the root; an unsealed
        // table is refused.
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        let unsealed = memfd_create(c"unsealed", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&unsealed, LENGTH as i64).unwrap();
        assert!(Tally::adopt(&unsealed).is_err());
    }
}
