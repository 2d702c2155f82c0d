//! The native backend's place in a build without it (it needs the cargo
//! feature `native`, and Linux): the same names, saying it is absent.

use super::{Backend, Settings};

/// Whether this build can run the native backend.
pub(crate) const AVAILABLE: bool = false;

/// Refuses: the native backend is not built in.
pub(crate) fn create(_settings: Settings) -> anyhow::Result<Box<dyn Backend>> {
    anyhow::bail!(
        "the native backend is not built in: rebuild the host with `cargo build --features native` (Linux only)"
    )
}
