//! What the host offers guests through WIT: bindings and their implementations.
//!
//! The bindings for the `mp:host/program` world are generated here, once;
//! each interface's implementation lives in a module of its own.

use crate::pool::{PoolCore, ResultSlot};
use crate::process::Node;
use std::sync::Arc;

mod container;
mod map_results;
mod pool;
mod primitives;
mod process;
mod sync;
mod wait;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "program",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "mp:host/process.process": GuestProcess,
        "mp:host/pool.pool": GuestPool,
        "mp:host/pool.async-result": GuestAsyncResult,
        "mp:host/pool.map-results": GuestMapResults,
        "mp:host/sync.queue": sync::GuestQueue,
        "mp:host/sync.connection": sync::GuestConnection,
        "mp:host/sync.lock": sync::GuestLock,
        "mp:host/sync.semaphore": sync::GuestSemaphore,
        "mp:host/sync.event": sync::GuestEvent,
        "mp:host/sync.condition": sync::GuestCondition,
        "mp:host/sync.barrier": sync::GuestBarrier,
        "mp:host/sync.shared-array": sync::GuestArray,
        "mp:host/sync.container": sync::GuestContainer,
    },
});

/// A process as a guest holds it.
pub struct GuestProcess {
    pub(crate) node: Arc<Node>,
    /// The calling process itself, from `current-process`.
    pub(crate) is_self: bool,
    /// The calling process's parent, from `parent-process`: not the
    /// caller's to control.
    pub(crate) is_parent: bool,
}

/// A pool as a guest holds it; dropping it (or ending the guest) terminates it.
pub struct GuestPool {
    pub(crate) core: Arc<PoolCore>,
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        self.core.terminate_now();
    }
}

/// A guest's results of many items, handed over as they arrive.
pub struct GuestMapResults {
    pub(crate) state: Arc<tokio::sync::Mutex<map_results::MapState>>,
}

/// The result of one of a guest's pool tasks.
pub struct GuestAsyncResult {
    pub(crate) slot: Arc<ResultSlot>,
}
