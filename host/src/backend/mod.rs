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
    /// How many live processes a run may have on this backend unless the
    /// host is told otherwise ([`HostBuilder::max_processes`](crate::HostBuilder::max_processes),
    /// `--max-processes`): 10,240 on the thread backend, 1,500 on the native
    /// backend.
    ///
    /// Both keep a fork bomb from hurting a small machine (2 cores, 24 GiB,
    /// 32,768 pids, the kernel's default 65,530 mappings per process) while
    /// leaving room for the benchmarks' 10,000 concurrent sleepers (thread)
    /// and 1,000 (native). A thread-backend process costs tens of KiB and no
    /// OS thread; a run may allow far more (100,000 sleepers fit: past what
    /// the kernel's map count allows in pooled slots, instances are
    /// allocated on demand in mappings the kernel merges), but the default
    /// stays here so that a depth-30 fork bomb at this cap ends by itself
    /// with the host under 1 GiB. A
    /// native process is an OS process with 4-5 threads (pids) and ~0.7 MiB
    /// of its own: 1,500 take under a quarter of the pids and about 1 GiB.
    pub const fn default_max_processes(self) -> u32 {
        match self {
            BackendKind::Thread => 10_240,
            BackendKind::Native => 1_500,
        }
    }

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
    /// How many live processes the whole run may have, nested ones
    /// included; [`start`](Backend::start) refuses more with
    /// [`Error::ProcessLimit`].
    fn max_processes(&self) -> u32;

    /// The parent pid a process sees for itself.
    fn ppid(&self, node: &Node) -> u32 {
        node.ppid()
    }

    /// Starts `node` as `launch` says: sets its pid before anything can
    /// observe it, calls [`Node::finish`] when it ends, and returns the means
    /// to signal it. Every live process of the run holds one of the run's
    /// [`max_processes`](Backend::max_processes) slots, given back before its
    /// end is recorded (so that a joiner can start another at once); past
    /// the limit, start fails with [`Error::ProcessLimit`].
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
    /// The cap on live processes; a native worker's comes from its root.
    pub(crate) max_processes: u32,
}

pub(crate) fn create(settings: Settings) -> anyhow::Result<Box<dyn Backend>> {
    match settings.kind {
        BackendKind::Thread => Ok(Box::new(thread::ThreadBackend::new(settings.max_processes))),
        #[cfg(all(feature = "native", target_os = "linux"))]
        BackendKind::Native => Ok(Box::new(native::NativeBackend::new(
            settings.worker_program,
            native::protocol::EngineSettings {
                fuel: settings.fuel,
                max_memory: settings.max_memory,
            },
            settings.max_processes,
        )?)),
        #[cfg(not(all(feature = "native", target_os = "linux")))]
        BackendKind::Native => anyhow::bail!(
            "the native backend is not built in: rebuild the host with `cargo build --features native` (Linux only)"
        ),
    }
}
