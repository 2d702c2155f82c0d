//! The process cap of a whole native run, shared by the root and every worker.
//!
//! On the native backend a guest's children are started by its own worker,
//! not by the root host, so no one host sees every process. The root
//! therefore makes one table of slots in shared memory (a `memfd`, mapped
//! `MAP_SHARED`) as large as the cap, and every worker inherits its
//! descriptor and maps it too. Whoever starts a process takes a free slot
//! first (an atomic compare-and-swap, no round trip); past the cap, start
//! fails with [`Error::ProcessLimit`]. A slot holds the pid of its process,
//! so that whoever reaps the process gives the slot back: the parent's
//! supervisor, or the root for the orphans it adopts.
//!
//! Some processes are reaped by nobody who knows their slot: the children of
//! a worker killed by `SIGKILL` (they are re-parented to the root, which
//! never heard of them), and daemons that died with their parent. So when the
//! table is full, it is swept before the answer is no: a slot whose process
//! no longer exists or has ended (a zombie) is free, and so is a slot taken
//! by a starter that died before it could write the pid in. A slot therefore
//! counts a live process, whoever reaps it and however its parent ended.

use crate::error::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A free slot.
const FREE: u32 = 0;
/// Marks a slot taken by the process whose pid is in the low bits, for a
/// child it is starting (pids are below 2^22).
const STARTING: u32 = 1 << 31;
/// How often a full table may be swept: sweeping reads `/proc` once per slot.
const SWEEP_EVERY_MS: u64 = 50;

/// The table's header, before the slots.
#[repr(C)]
struct Header {
    /// The cap: how many slots follow.
    limit: AtomicU32,
    /// Where the next search for a free slot begins.
    hint: AtomicU32,
    /// When the table was last swept (ms on the monotonic clock).
    swept: AtomicU64,
}

/// One run's table of process slots, mapped into this process.
pub(crate) struct Slots {
    header: *const Header,
    slots: *const AtomicU32,
    limit: u32,
    length: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is only reached through atomics, and lives as long as
// `Slots`.
unsafe impl Send for Slots {}
unsafe impl Sync for Slots {}

impl Slots {
    /// A new table for a run of at most `limit` live processes (the root's).
    pub(crate) fn new(limit: u32) -> std::io::Result<Slots> {
        let fd = unsafe { libc::memfd_create(c"host-process-slots".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just made.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let length = size_of::<Header>() + limit as usize * size_of::<AtomicU32>();
        if unsafe { libc::ftruncate(fd.as_raw_fd(), length as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slots = Slots::map(fd, length, limit)?;
        // A new memfd reads as zeros: every slot is free.
        slots.header().limit.store(limit, Ordering::Release);
        Ok(slots)
    }

    /// The table a worker inherited from its parent, as `fd`.
    pub(crate) fn inherit(fd: &OwnedFd) -> std::io::Result<Slots> {
        let fd = fd.try_clone()?;
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let length = stat.st_size as usize;
        if length < size_of::<Header>() {
            return Err(std::io::Error::other("the process table is too small"));
        }
        let mut slots = Slots::map(fd, length, 0)?;
        let limit = slots.header().limit.load(Ordering::Acquire);
        if size_of::<Header>() + limit as usize * size_of::<AtomicU32>() > length {
            return Err(std::io::Error::other("the process table is smaller than its limit"));
        }
        slots.limit = limit;
        Ok(slots)
    }

    fn map(fd: OwnedFd, length: usize, limit: u32) -> std::io::Result<Slots> {
        let flags = libc::PROT_READ | libc::PROT_WRITE;
        let address = unsafe { libc::mmap(std::ptr::null_mut(), length, flags, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let header = address as *const Header;
        // SAFETY: the header is followed by the slots, both 4-byte aligned.
        let slots = unsafe { (address as *const u8).add(size_of::<Header>()) } as *const AtomicU32;
        Ok(Slots { header, slots, limit, length, fd })
    }

    /// The descriptor a worker inherits the table by.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    fn header(&self) -> &Header {
        // SAFETY: mapped for as long as `self` lives.
        unsafe { &*self.header }
    }

    fn slot(&self, index: u32) -> &AtomicU32 {
        debug_assert!(index < self.limit);
        // SAFETY: `index` is below the limit, and the mapping holds that many.
        unsafe { &*self.slots.add(index as usize) }
    }

    /// Takes a slot for a process this one is about to start; a full table
    /// is swept once before the answer is [`Error::ProcessLimit`].
    pub(crate) fn take(self: &Arc<Slots>) -> Result<Slot, Error> {
        let starting = STARTING | std::process::id();
        // An empty table (a cap of 0 never comes from the builder) has no
        // slot to give, and no index to take modulo.
        let rounds: &[bool] = if self.limit == 0 { &[] } else { &[false, true] };
        for &sweep in rounds {
            if sweep && !self.sweep() {
                break;
            }
            let begin = self.header().hint.load(Ordering::Relaxed);
            for offset in 0..self.limit {
                let index = (begin.wrapping_add(offset)) % self.limit;
                let slot = self.slot(index);
                if slot.load(Ordering::Relaxed) == FREE
                    && slot.compare_exchange(FREE, starting, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                {
                    self.header().hint.store(index.wrapping_add(1) % self.limit, Ordering::Relaxed);
                    return Ok(Slot { slots: self.clone(), index, holder: starting });
                }
            }
        }
        Err(Error::ProcessLimit { limit: self.limit })
    }

    /// Gives back the slot of `pid`, a process this one reaped without
    /// knowing its slot (an adopted orphan).
    pub(crate) fn release_pid(&self, pid: u32) {
        for index in 0..self.limit {
            if self.slot(index).compare_exchange(pid, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// Frees the slots of processes that have ended but were not given back;
    /// false if the table was swept too recently to try again.
    fn sweep(&self) -> bool {
        let now = monotonic_ms();
        let swept = self.header().swept.load(Ordering::Relaxed);
        if now.saturating_sub(swept) < SWEEP_EVERY_MS
            || self.header().swept.compare_exchange(swept, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return false;
        }
        for index in 0..self.limit {
            let holder = self.slot(index).load(Ordering::Acquire);
            if holder == FREE {
                continue;
            }
            let pid = holder & !STARTING;
            // A process's own slot is free once it has ended; a starter's
            // claim, once the starter is gone.
            let gone = if holder & STARTING != 0 { !exists(pid) } else { has_ended(pid) };
            if gone {
                let _ = self.slot(index).compare_exchange(holder, FREE, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        true
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.header as *mut libc::c_void, self.length) };
    }
}

/// A slot taken for one process: given back when dropped (the process could
/// not start, or whoever reaped it is done with it).
pub(crate) struct Slot {
    slots: Arc<Slots>,
    index: u32,
    holder: u32,
}

impl Slot {
    /// The process started as `pid`: the slot is now its own.
    pub(crate) fn started(&mut self, pid: u32) {
        let slot = self.slots.slot(self.index);
        if slot.compare_exchange(self.holder, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.holder = pid;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        release(&self.slots, self.index, self.holder);
    }
}

/// Frees slot `index` if `holder` still holds it (a sweep may have freed it,
/// and someone else taken it, meanwhile).
fn release(slots: &Slots, index: u32, holder: u32) {
    let _ = slots.slot(index).compare_exchange(holder, FREE, Ordering::AcqRel, Ordering::Relaxed);
}

fn monotonic_ms() -> u64 {
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

fn exists(pid: u32) -> bool {
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Whether `pid` is gone or a zombie (ended, not yet reaped).
fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may itself hold ')'.
        Ok(stat) => stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_given_back_and_shared() {
        let slots = Arc::new(Slots::new(2).unwrap());
        let mut first = slots.take().unwrap();
        first.started(std::process::id());
        let second = slots.take().unwrap();
        assert_eq!(slots.take().err(), Some(Error::ProcessLimit { limit: 2 }));
        drop(second);
        // A second mapping (a worker's) sees the same table.
        let inherited = Arc::new(Slots::inherit(slots.fd()).unwrap());
        assert_eq!(inherited.limit(), 2);
        let third = inherited.take().unwrap();
        assert!(slots.take().is_err(), "a slot taken through one mapping is taken in the other");
        drop(third);
        // Our own pid is alive: a sweep keeps its slot, and the adopter's
        // release by pid frees it.
        std::thread::sleep(std::time::Duration::from_millis(SWEEP_EVERY_MS + 10));
        let _a = inherited.take().unwrap();
        assert!(inherited.take().is_err());
        inherited.release_pid(std::process::id());
        std::mem::forget(first);
        assert!(inherited.take().is_ok());
    }

    #[test]
    fn a_sweep_frees_the_slot_of_a_process_that_ended() {
        let slots = Arc::new(Slots::new(1).unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let mut slot = slots.take().unwrap();
        slot.started(child.id());
        std::mem::forget(slot);
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(SWEEP_EVERY_MS + 10));
        assert!(slots.take().is_ok(), "the reaped child's slot is swept free");
    }
}
