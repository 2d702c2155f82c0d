//! The two ways to run a process, behind one small trait.
//!
//! A [`Backend`] only starts a process and delivers signals to it; it reports
//! the end through [`Node::finish`]. Everything above it (the lifecycle rules,
//! the process tree, the library API, the CLI) is written once.

use crate::command::Launch;
use crate::error::Error;
use crate::exit::Signal;
use crate::process::Node;
use crate::runtime::HostInner;
use std::sync::Arc;

#[cfg(all(feature = "native", target_os = "linux"))]
pub(crate) mod native;
pub(crate) mod thread;

/// Which backend runs a host's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// Each process a Wasm instance on a shared pool of OS threads, with
    /// virtual pids (the default).
    #[default]
    Thread,
    /// Each process a real OS process with a real pid (cargo feature `native`).
    Native,
}

impl BackendKind {
    /// Whether this build can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            BackendKind::Thread => true,
            BackendKind::Native => cfg!(all(feature = "native", target_os = "linux")),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(text: &str) -> Result<BackendKind, String> {
        match text {
            "thread" => Ok(BackendKind::Thread),
            "native" => Ok(BackendKind::Native),
            _ => Err(format!("unknown backend `{text}` (use thread or native)")),
        }
    }
}

/// Runs processes.
pub(crate) trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// The pid of the host itself, parent of the root processes.
    fn root_pid(&self) -> u32;

    /// Blocks until every process the host adopted outside its own tree
    /// (the native backend's orphans of workers) has ended.
    fn wait_adopted(&self) {}

    /// The parent pid a process sees for itself.
    fn ppid(&self, node: &Node) -> u32 {
        node.ppid()
    }

    /// Starts `node` as `launch` says: sets its pid before anything can
    /// observe it, calls [`Node::finish`] when it ends, and returns the means
    /// to signal it.
    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error>;
}

/// Delivers signals to one running process.
pub(crate) trait Control: Send + Sync {
    fn signal(&self, signal: Signal);
}

/// What a backend needs to know of the host's configuration.
#[cfg_attr(not(all(feature = "native", target_os = "linux")), allow(dead_code))]
pub(crate) struct Settings {
    pub(crate) kind: BackendKind,
    pub(crate) worker_program: Option<std::path::PathBuf>,
    pub(crate) fuel: bool,
    pub(crate) max_memory: u64,
}

pub(crate) fn create(settings: Settings) -> anyhow::Result<Box<dyn Backend>> {
    match settings.kind {
        BackendKind::Thread => Ok(Box::new(thread::ThreadBackend::new())),
        #[cfg(all(feature = "native", target_os = "linux"))]
        BackendKind::Native => Ok(Box::new(native::NativeBackend::new(
            settings.worker_program,
            native::protocol::EngineSettings {
                fuel: settings.fuel,
                max_memory: settings.max_memory,
            },
        )?)),
        #[cfg(not(all(feature = "native", target_os = "linux")))]
        BackendKind::Native => anyhow::bail!(
            "the native backend is not built in: rebuild the host with `cargo build --features native` (Linux only)"
        ),
    }
}
