//! Where instances' memories and stacks come from, sized from the run's limits.
//!
//! Two layouts. A *pooled* one reserves a slot per process the run may have
//! (`max_processes`) up front: instantiation is a few page-table operations
//! and a linear memory is a copy-on-write image, but every slot costs two of
//! the kernel's memory mappings for as long as the host lives (its stack's
//! guard page splits the stack pool) and every live instance about four more
//! (its memory image, its accessible heap, the reservation's tail). With the
//! kernel's default `vm.max_map_count` of 65,530 that ends near 10,000
//! processes, and reserving the pool costs a start-up of tens of
//! milliseconds. A *dense* layout, for runs allowed more processes than that
//! (on the thread backend), allocates each instance on demand with nothing
//! that splits a mapping: linear memories exactly as large as they are (no
//! reservation, no guard regions: bounds are checked by the compiled code,
//! and a memory grows by `mremap`, moving if it must, [`DenseMemories`]),
//! initialised by copying rather than
//! from a mapped image (a copy-on-write image is a file mapping of its own
//! per instance, which no neighbour can merge with: 100,000 of them are
//! more than the default map count allows), and fiber stacks without guard pages
//! ([`DenseStacks`]). Adjacent anonymous mappings of the same protection are
//! merged by the kernel, so a live instance costs well under one mapping on
//! average, and 100,000 sleeping processes fit the default map count.
//!
//! Where the machine's limits are reached anyway, [`explain`] turns the bare
//! `os error 12` into the limit's name and what to change.

#[cfg(unix)]
use std::ops::Range;
#[cfg(unix)]
use std::sync::Arc;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};
#[cfg(unix)]
use wasmtime::{StackCreator, StackMemory};

/// The kernel's default `vm.max_map_count`, assumed when it cannot be read.
const DEFAULT_MAX_MAP_COUNT: u64 = 65_530;
/// Mappings the host needs besides its instances: code, libraries, threads,
/// compiled programs.
const HOST_MAPPINGS: u64 = 4_096;
/// Mappings a pooled layout costs per process the run may have: its slot's
/// stack and guard, and a live instance's memory image, heap and tail.
const POOLED_MAPPINGS_PER_PROCESS: u64 = 6;

/// Which layout a host's engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A slot reserved up front per process the run may have.
    Pooled,
    /// Each instance allocated as it starts, without guards or reservations.
    Dense,
}

impl Layout {
    /// The layout for a run of at most `cap` live processes; `dense_allowed`
    /// is false where the engine must match another host's (the native
    /// backend's workers deserialize the root's code, and the code depends
    /// on the layout).
    pub(crate) fn choose(cap: u32, dense_allowed: bool) -> Layout {
        let fits = u64::from(cap) * POOLED_MAPPINGS_PER_PROCESS + HOST_MAPPINGS <= max_map_count();
        if fits || !dense_allowed { Layout::Pooled } else { Layout::Dense }
    }

    /// Configures `config`'s instance allocation for `cap` live processes of
    /// at most `max_memory` bytes of linear memory each.
    pub(crate) fn configure(self, config: &mut Config, cap: u32, max_memory: u64) {
        match self {
            Layout::Pooled => {
                // A slot reserves `max_memory` of address space, not 4 GiB +
                // guards. A program with more than one memory per instance
                // takes more than one slot. A process's cap slot is given
                // back just before its instance is torn down, and a load's
                // probe takes an instance too: a few spare slots cover both.
                let slots = cap.saturating_add(cap / 64 + cap.min(16));
                let mut pool = PoolingAllocationConfig::default();
                pool.total_component_instances(slots)
                    .total_core_instances(slots.saturating_mul(4))
                    .total_memories(slots)
                    .total_tables(slots.saturating_mul(2))
                    .total_stacks(slots)
                    .max_memory_size(max_memory as usize)
                    .max_core_instances_per_component(32)
                    .max_memories_per_component(4)
                    .max_tables_per_component(16);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
                config.memory_reservation(max_memory);
                config.memory_guard_size(64 << 10);
                config.memory_reservation_for_growth(0);
            }
            Layout::Dense => {
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                config.memory_reservation(0);
                config.memory_guard_size(0);
                config.guard_before_linear_memory(false);
                config.memory_reservation_for_growth(0);
                config.memory_may_move(true);
                config.memory_init_cow(false);
                #[cfg(unix)]
                config.with_host_stack(Arc::new(DenseStacks));
                #[cfg(target_os = "linux")]
                config.with_host_memory(Arc::new(DenseMemories));
            }
        }
    }
}

/// The kernel's `vm.max_map_count`: how many mappings one process may have.
pub(crate) fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_MAP_COUNT)
}

/// How many mappings this process has now, if the system says.
fn map_count() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// `error` (an instantiation's), with a machine limit named if one was
/// reached: the kernel's map count, or memory itself.
pub(crate) fn explain(error: wasmtime::Error) -> wasmtime::Error {
    let out_of_memory = error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(ENOMEM))
        || format!("{error:#}").contains("os error 12");
    if !out_of_memory {
        return error;
    }
    let limit = max_map_count();
    match map_count() {
        Some(count) if count + 64 >= limit => error.context(format!(
            "vm.max_map_count ({limit}) reached ({count} mappings): lower --max-processes \
             or raise it with `sysctl vm.max_map_count=N`"
        )),
        _ => error.context(
            "out of memory or address space: lower --max-processes or --max-memory, \
             or raise the host's memory limits (ulimit -v, cgroup memory.max)",
        ),
    }
}

/// `ENOMEM`, whose number std does not name.
const ENOMEM: i32 = 12;

#[cfg(unix)]
/// Fiber stacks without guard pages, each its own anonymous mapping, which
/// the kernel merges with its neighbours: no split mappings per process.
///
/// A guard page would catch the host's own code overflowing a fiber's stack;
/// Wasm code cannot reach past `max_wasm_stack` (wasmtime checks it on every
/// call), and the host's code has the rest of the 2 MiB stack above it,
/// several times what any host call takes.
pub(crate) struct DenseStacks;

#[cfg(unix)]
struct DenseStack {
    base: *mut u8,
    len: usize,
}

// SAFETY: the stack is plain memory owned by this value; wasmtime hands it
// from thread to thread with its fiber, never to two at once.
#[cfg(unix)]
unsafe impl Send for DenseStack {}
// SAFETY: as above; shared references only read its address.
#[cfg(unix)]
unsafe impl Sync for DenseStack {}

// SAFETY: `new_stack` returns page-aligned, zero-filled, read-write memory of
// at least `size` bytes, valid until the `StackMemory` is dropped.
#[cfg(unix)]
unsafe impl StackCreator for DenseStacks {
    fn new_stack(&self, size: usize, _zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let page = page_size();
        // A page more than asked: a length that is a multiple of 2 MiB
        // would be aligned to 2 MiB by the kernel (for huge pages), leaving
        // a hole between neighbours that keeps them from merging.
        let len = size.div_ceil(page).max(1) * page + page;
        // Fresh pages are zero, so `zeroed` holds either way.
        let base = map_anonymous(len).map_err(|e| e.context("cannot map a fiber stack"))?;
        Ok(Box::new(DenseStack { base: base.as_ptr().cast(), len }))
    }
}

// SAFETY: `top` is the end of a live mapping of `len` bytes starting at `base`.
#[cfg(unix)]
unsafe impl StackMemory for DenseStack {
    fn top(&self) -> *mut u8 {
        // SAFETY: one past the end of the mapping.
        unsafe { self.base.add(self.len) }
    }

    fn range(&self) -> Range<usize> {
        self.base as usize..self.base as usize + self.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        self.base..self.base
    }
}

#[cfg(unix)]
impl Drop for DenseStack {
    fn drop(&mut self) {
        if let Some(base) = std::ptr::NonNull::new(self.base.cast()) {
            // SAFETY: the mapping is this value's alone, and no fiber runs on
            // it once wasmtime drops it.
            let _ = unsafe { nix::sys::mman::munmap(base, self.len) };
        }
    }
}

/// Linear memories in plain anonymous mappings, exactly as large as they
/// are, that grow by `mremap` (which moves page tables, never copies): no
/// reservation or guard region splits a mapping, and growing a memory page
/// by page costs no more than growing a reserved one.
#[cfg(target_os = "linux")]
pub(crate) struct DenseMemories;

#[cfg(target_os = "linux")]
struct DenseMemory {
    base: std::ptr::NonNull<std::ffi::c_void>,
    /// Bytes mapped (whole pages).
    mapped: usize,
    /// Bytes the guest may use.
    size: usize,
    maximum: Option<usize>,
}

// SAFETY: plain memory owned by this value; wasmtime synchronises its use.
#[cfg(target_os = "linux")]
unsafe impl Send for DenseMemory {}
// SAFETY: as above.
#[cfg(target_os = "linux")]
unsafe impl Sync for DenseMemory {}

// SAFETY: memories are fresh zero-filled, page-aligned mappings of whole
// pages, owned by the `LinearMemory` until it is dropped; no reservation or
// guard is promised (the engine is configured with none, so the code checks
// every access's bounds).
#[cfg(target_os = "linux")]
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
        let mapped = minimum.div_ceil(page_size()).max(1) * page_size();
        let base = map_anonymous(mapped).map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(DenseMemory { base, mapped, size: minimum, maximum }))
    }
}

// SAFETY: `as_ptr` is the start of `byte_capacity` mapped bytes, of which
// the first `byte_size` are the guest's; growth may move the base, which
// the engine allows (`memory_may_move`).
#[cfg(target_os = "linux")]
unsafe impl wasmtime::LinearMemory for DenseMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.mapped
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if self.maximum.is_some_and(|max| new_size > max) {
            wasmtime::bail!("memory past its maximum");
        }
        let mapped = new_size.div_ceil(page_size()).max(1) * page_size();
        if mapped > self.mapped {
            use nix::sys::mman::{MRemapFlags, mremap};
            // SAFETY: the mapping is this memory's own; the engine holds no
            // pointer into it across a grow (it reloads the base after).
            let base = unsafe { mremap(self.base, self.mapped, mapped, MRemapFlags::MREMAP_MAYMOVE, None) }
                .map_err(|errno| explain(wasmtime::Error::from(std::io::Error::from(errno))))?;
            self.base = base;
            self.mapped = mapped;
        }
        self.size = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr().cast()
    }
}

#[cfg(target_os = "linux")]
impl Drop for DenseMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping is this memory's alone, and the instance that
        // used it is gone.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.mapped) };
    }
}

/// `len` bytes (whole pages, at least one) of fresh, zero-filled, read-write
/// anonymous memory, reserving no swap: a dense stack's or memory's. A
/// failure names the machine limit it ran into ([`explain`]).
#[cfg(unix)]
fn map_anonymous(len: usize) -> wasmtime::Result<std::ptr::NonNull<std::ffi::c_void>> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    let length = std::num::NonZeroUsize::new(len).expect("at least a page");
    // SAFETY: a fresh anonymous private mapping, aliasing nothing.
    unsafe {
        mmap_anonymous(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(|errno| explain(wasmtime::Error::from(std::io::Error::from(errno))))
}

#[cfg(unix)]
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_are_pooled_large_ones_dense_where_allowed() {
        assert_eq!(Layout::choose(1_000, true), Layout::Pooled);
        assert_eq!(Layout::choose(100_000, true), Layout::Dense);
        assert_eq!(Layout::choose(100_000, false), Layout::Pooled);
    }

    #[test]
    fn running_out_of_memory_names_what_to_change() {
        let error = wasmtime::Error::from(std::io::Error::from_raw_os_error(12));
        let text = format!("{:#}", explain(error));
        assert!(text.contains("--max-processes"), "{text}");
        let other = format!("{:#}", explain(wasmtime::format_err!("unrelated")));
        assert_eq!(other, "unrelated");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dense_memories_grow_and_keep_their_contents() {
        use wasmtime::{MemoryCreator, MemoryType};
        let mut memory =
            DenseMemories.new_memory(MemoryType::new(1, Some(64)), 65_536, Some(64 << 16), Some(0), 0).unwrap();
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
        assert!(DenseMemories.new_memory(MemoryType::new(1, None), 65_536, None, Some(1 << 30), 0).is_err());
    }

    #[test]
    #[cfg(unix)]
    fn dense_stacks_are_writable_and_unguarded() {
        let stack = DenseStacks.new_stack(100_000, true).unwrap();
        let range = stack.range();
        assert!(range.len() >= 100_000);
        assert_eq!(stack.top() as usize, range.end);
        // SAFETY: the stack's memory is mapped read-write and ours.
        unsafe { *stack.top().sub(1) = 7 };
        assert!(stack.guard_range().is_empty());
    }
}
