//! What the host offers guests through WIT: bindings and their implementations.
//!
//! The bindings for the `mp:host/program` world are generated here, once;
//! each interface's implementation lives in a module of its own.

use crate::process::Node;
use std::sync::Arc;

mod process;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "program",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "mp:host/process.process": GuestProcess },
});

/// A process as a guest holds it.
pub struct GuestProcess {
    pub(crate) node: Arc<Node>,
    /// The calling process itself, from `current-process`.
    pub(crate) is_self: bool,
}
