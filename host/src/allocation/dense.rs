//! The dense layout's fiber stacks and linear memories: plain anonymous
//! mappings, which the kernel merges with their neighbours, recycled from
//! one process to the next.
//!
//! Stacks are slots carved from large chunks, each behind a guard region
//! that splits no mapping ([`DenseStacks`]); an ended stack's slot goes to
//! a free list for the next. Memories are mappings of their own (they grow
//! by `mremap`); an instance that ends gives its memory back to a small
//! shelf (a few dozen, per engine) instead of unmapping it, and the next
//! instance takes it instead of mapping a new one. A start then costs no
//! `mmap`, an end no `munmap`, and the pages the next process touches (its
//! stack's top, its data and heap) are already there, instead of a page
//! fault each. What is kept resident is bounded: the few dozen most recently
//! freed stacks keep only their tops, the others nothing; and a kept memory
//! is zeroed before it is shelved (as wasmtime requires of a new memory), by
//! writing zeros over the few pages a small process touched, or by giving
//! every page back to the kernel.

use super::explain;
use std::ffi::c_void;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use wasmtime::{StackCreator, StackMemory};

/// How many ended instances' stacks, and how many of their memories, are
/// kept for the next ones.
const SHELF_SIZE: usize = 32;
/// How much of a kept stack's top stays resident: the depth a process's
/// host calls reach; deeper pages go back to the kernel.
const STACK_KEPT_RESIDENT: usize = 64 << 10;
/// Memories larger than this are unmapped rather than kept.
const MEMORY_KEPT_MAX: usize = 4 << 20;
/// A memory that has more pages resident than this is zeroed by giving
/// them back to the kernel rather than by writing zeros over them.
const MEMORY_KEPT_RESIDENT: usize = 256 << 10;

/// One private anonymous read-write mapping, unmapped when dropped.
struct Mapping {
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: plain memory owned by this value; whoever uses it (a fiber, an
// instance) is handed it whole, never shared between two at once.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only read its address.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes (whole pages, at least one) of fresh, zero-filled memory,
    /// reserving no swap. A failure names the machine limit it ran into
    /// ([`explain`]).
    fn new(len: usize) -> wasmtime::Result<Mapping> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let length = std::num::NonZeroUsize::new(len).expect("at least a page");
        // SAFETY: a fresh anonymous private mapping, aliasing nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .map_err(|errno| explain(wasmtime::Error::from(std::io::Error::from(errno))))?;
        Ok(Mapping { base, len })
    }

    fn start(&self) -> *mut u8 {
        self.base.as_ptr().cast()
    }

    /// Gives the pages of `range` (byte offsets, whole pages) back to the
    /// kernel: they read as zeros again, and cost nothing until touched.
    fn discard(&self, range: Range<usize>) {
        let start = self.start() as usize;
        // SAFETY: the range lies within this mapping, which nothing uses
        // while it is being recycled.
        unsafe { discard(start + range.start..start + range.end) };
    }

    /// Makes every byte zero again, at the cost of what was touched: the
    /// pages still resident are overwritten (the next process will likely
    /// touch them again), unless there are many, and every other page is
    /// discarded (it was never touched, or has gone to swap).
    fn zero(&self) {
        let page = page_size();
        let Some(resident) = self.resident_pages(page) else {
            return self.discard(0..self.len);
        };
        if resident.iter().filter(|&&r| r).count() * page > MEMORY_KEPT_RESIDENT {
            return self.discard(0..self.len);
        }
        let mut at = 0;
        for (is_resident, run) in runs(&resident) {
            let bytes = at * page..(at + run) * page;
            if is_resident {
                // SAFETY: within the mapping, which nothing uses meanwhile.
                unsafe { self.start().add(bytes.start).write_bytes(0, bytes.len()) };
            } else {
                self.discard(bytes);
            }
            at += run;
        }
    }

    /// Which of the mapping's pages are resident; `None` if the kernel
    /// does not say.
    fn resident_pages(&self, page: usize) -> Option<Vec<bool>> {
        let mut flags = vec![0u8; self.len / page];
        // SAFETY: `flags` has a byte for each page of the mapping, which is
        // page-aligned and ours. (`nix` has no `mincore`.)
        let status = unsafe { libc::mincore(self.base.as_ptr(), self.len, flags.as_mut_ptr()) };
        (status == 0).then(|| flags.iter().map(|f| f & 1 == 1).collect())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's alone, and whoever used it
        // (a fiber, an instance) is gone.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.len) };
    }
}

/// Gives the pages at the addresses `range` (whole pages) back to the
/// kernel: they read as zeros again, and cost nothing until touched.
///
/// # Safety
/// The pages are private anonymous memory that nothing uses meanwhile.
unsafe fn discard(range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    use nix::sys::mman::{MmapAdvise, madvise};
    // SAFETY: as the caller promises; the start is a page's, never null.
    let discarded =
        unsafe { madvise(NonNull::new_unchecked(range.start as *mut c_void), range.len(), MmapAdvise::MADV_DONTNEED) };
    discarded.expect("a private anonymous mapping's pages can always be discarded");
}

/// Consecutive runs of equal values: `(value, length)`.
fn runs(values: &[bool]) -> impl Iterator<Item = (bool, usize)> + '_ {
    values.chunk_by(|a, b| a == b).map(|run| (run[0], run.len()))
}

/// Mappings that ended instances gave back, the most recent last (its
/// pages the likeliest still in the cache).
#[derive(Default)]
struct Shelf {
    kept: Mutex<Vec<Mapping>>,
}

impl Shelf {
    /// The most recently kept mapping that `fits`.
    fn take(&self, fits: impl Fn(&Mapping) -> bool) -> Option<Mapping> {
        let mut kept = self.kept.lock().unwrap();
        let at = kept.iter().rposition(fits)?;
        Some(kept.swap_remove(at))
    }

    fn has_room(&self) -> bool {
        self.kept.lock().unwrap().len() < SHELF_SIZE
    }

    /// Keeps `mapping` if there is room; unmaps it otherwise.
    fn put(&self, mapping: Mapping) {
        let mut kept = self.kept.lock().unwrap();
        if kept.len() < SHELF_SIZE {
            kept.push(mapping);
        } else {
            drop(kept);
            drop(mapping);
        }
    }
}

/// Fiber stacks carved from large shared mappings ([`STACKS_PER_CHUNK`]
/// slots each), each slot a guard page then the stack: a new stack costs
/// no system call of its own but its guard's, and an ended one goes back to
/// a free list (its pages to the kernel) instead of being unmapped, so
/// that the chunks never split.
///
/// The guard is a *guard region* (`MADV_GUARD_INSTALL`, Linux 6.13): a
/// marker in the page table, which faults like `PROT_NONE` without making a
/// mapping of its own (a `PROT_NONE` page per stack would cost two mappings
/// per process: 100,000 of them are more than the default map count
/// allows). It sits just above the top of the slot below, in the same
/// page-table page, so it costs no memory either. Wasm code cannot reach
/// it (wasmtime checks `max_wasm_stack` on every call); it catches the
/// host's own code overflowing a fiber's stack, which would otherwise write
/// over the neighbouring one. A kernel without guard regions gets stacks
/// without guards, the host's code having the rest of the stack above the
/// Wasm frames, several times what any host call takes.
#[derive(Default)]
pub(crate) struct DenseStacks {
    /// One slab per stack size asked for (an engine asks one), by size.
    slabs: Mutex<Vec<(usize, Arc<Mutex<Slab>>)>>,
}

/// How many stacks one chunk of address space holds.
const STACKS_PER_CHUNK: usize = 64;
/// `madvise` advice that installs a guard region (linux/mman.h), which
/// neither `libc` nor `nix` names yet.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Stacks of one size: the chunks they are carved from and the slots free.
struct Slab {
    /// Bytes of a stack, without its guard page.
    stack_len: usize,
    chunks: Vec<Mapping>,
    /// Slots never used yet, at the end of the last chunk (addresses).
    fresh: Range<usize>,
    /// Slots that ended stacks gave back (addresses), the most recent last:
    /// the first [`SHELF_SIZE`] kept their tops resident.
    free: Vec<usize>,
    /// Stacks in use.
    live: usize,
    /// Whether the kernel installs guard regions (until it refuses one).
    guarded: bool,
}

impl Slab {
    fn slot_len(&self) -> usize {
        self.stack_len + page_size()
    }

    fn new(stack_len: usize) -> Slab {
        Slab { stack_len, chunks: Vec::new(), fresh: 0..0, free: Vec::new(), live: 0, guarded: true }
    }

    /// A slot's address; its stack is all zeros if `zeroed`.
    fn take(&mut self, zeroed: bool) -> wasmtime::Result<usize> {
        let slot = self.carve(zeroed)?;
        self.live += 1;
        Ok(slot)
    }

    fn carve(&mut self, zeroed: bool) -> wasmtime::Result<usize> {
        if let Some(slot) = self.free.pop() {
            if zeroed {
                self.discard(slot, 0);
            }
            return Ok(slot);
        }
        if self.fresh.is_empty() {
            let chunk = Mapping::new(self.slot_len() * STACKS_PER_CHUNK)?;
            let start = chunk.start() as usize;
            self.fresh = start..start + chunk.len;
            self.chunks.push(chunk);
        }
        let slot = self.fresh.start;
        self.fresh.start += self.slot_len();
        self.guard(slot);
        Ok(slot)
    }

    /// Makes the first page of the slot at `slot` a guard region.
    fn guard(&mut self, slot: usize) {
        if !self.guarded {
            return;
        }
        // SAFETY: the page is the slot's guard page, within a chunk of ours,
        // which no stack uses. (`nix` has no `MADV_GUARD_INSTALL`.)
        let status = unsafe { libc::madvise(slot as *mut c_void, page_size(), MADV_GUARD_INSTALL) };
        // Only a kernel without guard regions refuses one (`EINVAL`).
        self.guarded = status == 0;
    }

    /// Gives the pages of the stack of the slot at `slot` back to the
    /// kernel, all but its top `kept` bytes.
    fn discard(&self, slot: usize, kept: usize) {
        let stack = slot + page_size();
        // SAFETY: the slot's stack lies in one of the slab's chunks, and
        // is free (or being made free): no fiber runs on it.
        unsafe { discard(stack..stack + self.stack_len.saturating_sub(kept)) };
    }

    /// Takes back the slot at `slot`, whose stack is no longer used.
    ///
    /// Once no stack is in use, a slab of more than one chunk unmaps them
    /// all (the next stack maps a new one): a slot once used keeps its
    /// share of a page-table page (the one its top shares with the guard of
    /// the slot above, a marker the kernel does not reclaim), a few KiB per
    /// slot of the most processes seen at once, until the whole slab is
    /// idle again.
    fn give_back(&mut self, slot: usize) {
        self.live -= 1;
        if self.live == 0 && self.chunks.len() > 1 {
            self.chunks.clear();
            self.free.clear();
            self.fresh = 0..0;
            return;
        }
        let kept = if self.free.len() < SHELF_SIZE { STACK_KEPT_RESIDENT } else { 0 };
        self.discard(slot, kept);
        self.free.push(slot);
    }
}

struct DenseStack {
    slab: Arc<Mutex<Slab>>,
    /// The slot's address: its guard page, then the stack.
    slot: usize,
    /// The stack's bytes: the slot without its guard page.
    stack: Range<usize>,
    /// Whether the slot's first page is a guard region.
    guarded: bool,
}

// SAFETY: `new_stack` returns page-aligned, read-write memory of at least
// `size` bytes, valid until the `StackMemory` is dropped (its slab, which
// it keeps alive, unmaps nothing before), and zero-filled when `zeroed` is
// asked for. A recycled stack holds what an ended fiber left on it, as
// wasmtime's own pooled stacks do unless zeroing is asked for: Wasm code
// cannot read its native stack.
unsafe impl StackCreator for DenseStacks {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let page = page_size();
        let stack_len = size.div_ceil(page).max(1) * page;
        let slab = {
            let mut slabs = self.slabs.lock().unwrap();
            match slabs.iter().find(|(len, _)| *len == stack_len) {
                Some((_, slab)) => slab.clone(),
                None => {
                    let slab = Arc::new(Mutex::new(Slab::new(stack_len)));
                    slabs.push((stack_len, slab.clone()));
                    slab
                }
            }
        };
        let (slot, guarded) = {
            let mut slots = slab.lock().unwrap();
            let slot = slots.take(zeroed).map_err(|e| e.context("cannot map fiber stacks"))?;
            (slot, slots.guarded)
        };
        let stack = slot + page..slot + page + stack_len;
        Ok(Box::new(DenseStack { slab, slot, stack, guarded }))
    }
}

// SAFETY: `top` is the end of the stack's bytes, which lie in a live chunk.
unsafe impl StackMemory for DenseStack {
    fn top(&self) -> *mut u8 {
        self.stack.end as *mut u8
    }

    fn range(&self) -> Range<usize> {
        self.stack.clone()
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let end = if self.guarded { self.stack.start } else { self.slot };
        self.slot as *mut u8..end as *mut u8
    }
}

impl Drop for DenseStack {
    fn drop(&mut self) {
        self.slab.lock().unwrap().give_back(self.slot);
    }
}

/// Linear memories in plain anonymous mappings, exactly as large as they
/// are, that grow by `mremap` (which moves page tables, never copies): no
/// reservation or guard region splits a mapping, and growing a memory page
/// by page costs no more than growing a reserved one.
#[derive(Default)]
pub(crate) struct DenseMemories {
    shelf: Arc<Shelf>,
}

struct DenseMemory {
    /// Whole pages; always `Some` until it is dropped.
    mapping: Option<Mapping>,
    /// Bytes the guest may use.
    size: usize,
    maximum: Option<usize>,
    shelf: Weak<Shelf>,
}

impl DenseMemory {
    fn mapping(&self) -> &Mapping {
        self.mapping.as_ref().expect("a memory has its mapping until it is dropped")
    }
}

// SAFETY: memories are zero-filled, page-aligned mappings of whole pages
// (fresh, or recycled and zeroed whole), owned by the `LinearMemory` until
// it is dropped; no reservation or guard is promised (the engine is
// configured with none, so the code checks every access's bounds).
unsafe impl wasmtime::MemoryCreator for DenseMemories {
    fn new_memory(
        &self,
        _ty: wasmtime::MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, String> {
        if reserved_size_in_bytes.is_some_and(|r| r > 0) || guard_size_in_bytes > 0 {
            return Err("a dense linear memory has no reservation or guard region".into());
        }
        let len = minimum.div_ceil(page_size()).max(1) * page_size();
        let mapping = match self.shelf.take(|m| m.len >= len) {
            Some(mapping) => mapping,
            None => Mapping::new(len).map_err(|e| format!("{e:#}"))?,
        };
        let shelf = Arc::downgrade(&self.shelf);
        Ok(Box::new(DenseMemory { mapping: Some(mapping), size: minimum, maximum, shelf }))
    }
}

// SAFETY: `as_ptr` is the start of `byte_capacity` mapped bytes, of which
// the first `byte_size` are the guest's and the rest zeros; growth may move
// the base, which the engine allows (`memory_may_move`).
unsafe impl wasmtime::LinearMemory for DenseMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.mapping().len
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if self.maximum.is_some_and(|max| new_size > max) {
            wasmtime::bail!("memory past its maximum");
        }
        let len = new_size.div_ceil(page_size()).max(1) * page_size();
        let mapping = self.mapping.as_mut().expect("a memory has its mapping until it is dropped");
        if len > mapping.len {
            use nix::sys::mman::{MRemapFlags, mremap};
            // SAFETY: the mapping is this memory's own; the engine holds no
            // pointer into it across a grow (it reloads the base after).
            let base = unsafe { mremap(mapping.base, mapping.len, len, MRemapFlags::MREMAP_MAYMOVE, None) }
                .map_err(|errno| explain(wasmtime::Error::from(std::io::Error::from(errno))))?;
            mapping.base = base;
            mapping.len = len;
        }
        self.size = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.mapping().start()
    }
}

impl Drop for DenseMemory {
    fn drop(&mut self) {
        let Some(mapping) = self.mapping.take() else { return };
        if mapping.len <= MEMORY_KEPT_MAX
            && let Some(shelf) = self.shelf.upgrade()
            && shelf.has_room()
        {
            // The instance that used it is gone: nothing reads it meanwhile.
            mapping.zero();
            shelf.put(mapping);
        }
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

    fn memory(creator: &DenseMemories, pages: u64) -> Box<dyn LinearMemory> {
        creator.new_memory(MemoryType::new(1, Some(64)), (pages << 16) as usize, Some(64 << 16), Some(0), 0).unwrap()
    }

    #[test]
    fn dense_memories_grow_and_keep_their_contents() {
        let creator = DenseMemories::default();
        let mut memory = memory(&creator, 1);
        assert_eq!(memory.byte_size(), 65_536);
        // SAFETY: the first byte is the memory's and mapped.
        unsafe { *memory.as_ptr() = 42 };
        memory.grow_to(40 << 16).unwrap();
        assert_eq!(memory.byte_size(), 40 << 16);
        // SAFETY: as above, after the move; the last byte is mapped too.
        unsafe {
            assert_eq!(*memory.as_ptr(), 42);
            *memory.as_ptr().add((40 << 16) - 1) = 1;
        }
        assert!(memory.grow_to(65 << 16).is_err(), "past the maximum");
        assert!(creator.new_memory(MemoryType::new(1, None), 65_536, None, Some(1 << 30), 0).is_err());
    }

    /// A recycled memory is all zeros, its capacity beyond its size too,
    /// whether its pages were few and overwritten or many and discarded.
    #[test]
    fn recycled_memories_are_zero() {
        let creator = DenseMemories::default();
        for touched in [3usize, 40 << 4] {
            let used = memory(&creator, 41);
            let base = used.as_ptr();
            for page in 0..touched {
                // SAFETY: within the memory's 41 pages of 64 KiB.
                unsafe { *base.add(page * 4096 + 7) = 0xa5 };
            }
            drop(used);
            let again = memory(&creator, 2);
            assert_eq!(again.as_ptr(), base, "the kept memory is reused");
            assert_eq!(again.byte_capacity(), 41 << 16);
            // SAFETY: the whole capacity is mapped and ours.
            let bytes = unsafe { std::slice::from_raw_parts(again.as_ptr(), 41 << 16) };
            assert!(bytes.iter().all(|&b| b == 0), "{touched} pages touched");
        }
    }

    #[test]
    fn dense_stacks_are_writable_and_reused() {
        let creator = DenseStacks::default();
        let stack = creator.new_stack(100_000, false).unwrap();
        let range = stack.range();
        assert!(range.len() >= 100_000);
        assert_eq!(stack.top() as usize, range.end);
        // SAFETY: the stack's memory is mapped read-write and ours.
        unsafe { *stack.top().sub(1) = 7 };
        let other = creator.new_stack(100_000, false).unwrap();
        assert!(other.range().start >= range.end || other.range().end <= range.start, "stacks never overlap");
        drop(stack);
        let again = creator.new_stack(100_000, false).unwrap();
        assert_eq!(again.range(), range, "an ended stack's slot is reused");
        drop(again);
        let zeroed = creator.new_stack(100_000, true).unwrap();
        assert_eq!(zeroed.range(), range);
        // SAFETY: as above.
        assert_eq!(unsafe { *zeroed.top().sub(1) }, 0, "a stack asked zeroed is zeroed");
    }

    /// A slab that fell idle after more stacks than one chunk holds gives
    /// its chunks back; new stacks come from a new one.
    #[test]
    fn an_idle_slab_unmaps_its_chunks() {
        let creator = DenseStacks::default();
        let stacks: Vec<_> = (0..STACKS_PER_CHUNK + 1).map(|_| creator.new_stack(100_000, false).unwrap()).collect();
        let slab = creator.slabs.lock().unwrap()[0].1.clone();
        assert_eq!(slab.lock().unwrap().chunks.len(), 2);
        drop(stacks);
        assert!(slab.lock().unwrap().chunks.is_empty());
        let again = creator.new_stack(100_000, false).unwrap();
        // SAFETY: the new stack's memory is mapped read-write and ours.
        unsafe { *again.top().sub(1) = 1 };
        assert_eq!(slab.lock().unwrap().chunks.len(), 1);
    }

    /// Writing just below a stack (its host code overflowing it) faults
    /// instead of writing over the neighbouring stack; tried in a forked
    /// child, which the fault kills.
    #[test]
    fn a_stack_overflow_hits_the_guard_not_the_neighbour() {
        let creator = DenseStacks::default();
        let below = creator.new_stack(100_000, false).unwrap();
        let stack = creator.new_stack(100_000, false).unwrap();
        let guard = stack.guard_range();
        if guard.is_empty() {
            eprintln!("this kernel has no guard regions (MADV_GUARD_INSTALL): stacks are unguarded");
            return;
        }
        assert_eq!(guard.end as usize, stack.range().start);
        assert_eq!(below.top(), guard.start, "the guard sits right above the slot below");
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::{ForkResult, fork};
        // SAFETY: the child only writes one byte and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: the guard page is mapped (as a guard); the write
                // is meant to fault.
                unsafe { ((stack.range().start - 1) as *mut u8).write_volatile(1) };
                // SAFETY: exits the forked child at once, running nothing of the parent's.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Signaled(child, nix::sys::signal::Signal::SIGSEGV, false));
            }
        }
    }

    #[test]
    fn runs_of_pages() {
        let pages = [false, false, true, true, true, false];
        assert_eq!(runs(&pages).collect::<Vec<_>>(), [(false, 2), (true, 3), (false, 1)]);
    }
}
