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
//! and a memory grows by `mremap`, moving if it must), initialised by
//! copying rather than from a mapped image (a copy-on-write image is a file
//! mapping of its own per instance, which no neighbour can merge with:
//! 100,000 of them are more than the default map count allows), and fiber
//! stacks carved from shared chunks behind guards that split no mapping
//! (see [`dense`], which also recycles both from one process to the next). Adjacent anonymous mappings of the same
//! protection are merged by the kernel, so a live instance costs well under
//! one mapping on average, and 100,000 sleeping processes fit the default
//! map count.
//!
//! Where the machine's limits are reached anyway, [`explain`] turns the bare
//! `os error 12` into the limit's name and what to change.

#[cfg(target_os = "linux")]
mod dense;

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The kernel's default `vm.max_map_count`, assumed when it cannot be read.
const DEFAULT_MAX_MAP_COUNT: u64 = 65_530;
/// Mappings the host needs besides its instances: code, libraries, threads,
/// compiled programs.
const HOST_MAPPINGS: u64 = 4_096;
/// Mappings a pooled layout costs per process the run may have: its slot's
/// stack and guard, and a live instance's memory image, heap and tail.
const POOLED_MAPPINGS_PER_PROCESS: u64 = 6;
/// How deep Wasm frames may go on a fiber's stack (wasmtime's default,
/// named because the dense layout's stacks are sized from it).
const WASM_STACK: usize = 512 << 10;
/// What a dense layout's fiber stack has above the deepest Wasm frames, for
/// the host's own calls: four times what the whole test suite needed (it
/// passes with 64 KiB), where wasmtime's default leaves 1.5 MiB.
const DENSE_HOST_STACK: usize = 256 << 10;

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
                // A fiber touches only its stack's top, but tops 2 MiB apart
                // (wasmtime's default size) each take a page-table page of
                // their own, a fresh page the kernel clears: 100,000 were
                // 400 MB of page tables, and a third of the starts' CPU when
                // the machine's memory was cold. Stacks as deep as Wasm may
                // go plus the host's share put two or three tops in each.
                config.max_wasm_stack(WASM_STACK);
                config.async_stack_size(WASM_STACK + DENSE_HOST_STACK);
                #[cfg(target_os = "linux")]
                {
                    config.with_host_stack(std::sync::Arc::new(dense::DenseStacks::default()));
                    config.with_host_memory(std::sync::Arc::new(dense::DenseMemories::default()));
                }
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
}
