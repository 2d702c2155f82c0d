//! What a process's memory cap bounds in its store: its memories and tables
//! (a [`ResourceLimiter`]), and how many resource handles it may hold; and
//! the message a call that failed on either ends with.

use crate::journal::Usage;
use crate::limits::format_size;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTableError;

/// Why a call that failed on a limit of this module failed: memory grown
/// past the cap, or one handle more than the cap allows.
pub(super) fn exceeded(error: &wasmtime::Error) -> Option<String> {
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Some(limit.to_string());
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return Some(format!(
            "too many handles: the process holds as many resource handles (processes, shared objects, streams) as its memory cap allows, one per {HANDLE_BYTES} bytes of it and at most {MAX_HANDLES} (--max-memory)"
        ));
    }
    None
}

/// Caps what a process's memories and tables hold, all of them together
/// (a module may have many of each); growing past the cap fails it. Every
/// growth of a memory it allows is counted in the process's usage (its peak
/// memory).
pub(super) struct MemoryLimiter {
    /// `--max-memory`, else the host's per-process maximum.
    max: u64,
    /// Bytes of every memory and table (a table element is a pointer) now.
    held: u64,
    usage: Arc<Usage>,
}

impl MemoryLimiter {
    pub(super) fn new(max: u64, usage: Arc<Usage>) -> MemoryLimiter {
        MemoryLimiter { max, held: 0, usage }
    }

    /// Counts growing something from `current` to `desired` bytes, unless
    /// that takes the process past its cap.
    fn grow(&mut self, current: u64, desired: u64) -> Result<(), MemoryLimitExceeded> {
        let held = self.held.saturating_sub(current).saturating_add(desired);
        if held > self.max {
            return Err(MemoryLimitExceeded { limit: self.max, desired: held });
        }
        self.held = held;
        Ok(())
    }
}

/// What a resource handle a guest holds (a process, a shared object, a
/// WASI stream or pollable: an entry of its store's table, which lives in
/// the host) is counted as against its memory cap: the cap bounds how many
/// it may hold at once, [`MAX_HANDLES`] at most.
const HANDLE_BYTES: u64 = 256;

/// The most handles one process may hold: wasmtime's own bound on the
/// handles of a store, past which it refuses one more itself.
const MAX_HANDLES: u64 = 100_000;

/// How many handles a process whose memory cap is `max_memory` may hold.
pub(super) fn handle_cap(max_memory: u64) -> usize {
    (max_memory / HANDLE_BYTES).min(MAX_HANDLES) as usize
}

/// What a table element takes in the host.
const TABLE_ELEMENT_BYTES: u64 = 8;

#[derive(Debug)]
pub(super) struct MemoryLimitExceeded {
    limit: u64,
    desired: u64,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit exceeded: the process tried to grow its memory to {} bytes (its memories and tables together), past its limit of {} (--max-memory)",
            self.desired,
            format_size(self.limit)
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)?;
        self.usage.memory_grew(current as u64, desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| (elements as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow(bytes(current), bytes(desired))?;
        Ok(true)
    }
}
