//! The two ways to run a process, behind one small trait.
//!
//! A [`Backend`] only starts a process and delivers signals to it; it reports
//! the end through [`Node::finish`]. Everything above it (the lifecycle rules,
//! the process tree, the library API, the CLI) is written once.

use crate::command::Launch;
use crate::error::Error;
pub(crate) use crate::process::Control;
use crate::process::Node;
use crate::runtime::{Engines, HostInner};
use std::sync::Arc;

#[cfg(all(feature = "native", target_os = "linux"))]
pub(crate) mod native;
/// A build without the native backend has this stand-in in its place.
#[cfg(not(all(feature = "native", target_os = "linux")))]
#[path = "absent.rs"]
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
            BackendKind::Native => native::AVAILABLE,
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

    /// The top of the host's process tree: by default the host itself,
    /// parent of the root processes; in a host that is itself one process
    /// of a run rooted elsewhere, that process.
    fn root(&self) -> Arc<Node> {
        Node::root(self.root_pid())
    }

    /// Whether the host runs one process only, driven by the thread that
    /// waits for it, and exits once it has ended: its executor then needs
    /// no threads of its own, and its instance's memory need not be given
    /// back.
    fn runs_one_process(&self) -> bool {
        false
    }

    /// The engine and linkers the host must use, if made before it (they
    /// must match compiled code the backend was handed); `None`: the host
    /// makes its own.
    fn engines(&self) -> Option<Engines> {
        None
    }

    /// Blocks until every process the host adopted outside its own tree
    /// (the native backend's orphans of workers) has ended.
    fn wait_adopted(&self) {}

    /// Ticks the engine's epoch for as long as it lives, so that running
    /// guests yield (by default every time slice of wall time).
    fn tick_epochs(&self, engine: &wasmtime::Engine) -> std::io::Result<()> {
        crate::runtime::tick_epochs(engine)
    }

    /// How many live processes the whole run may have, nested ones
    /// included; [`start`](Backend::start) refuses more with
    /// [`Error::ProcessLimit`].
    fn max_processes(&self) -> u32;

    /// The parent pid a process sees for itself.
    fn ppid(&self, node: &Node) -> u32 {
        node.ppid()
    }

    /// Python's `parent_process()` for the process `node` runs as: the
    /// process that created it while that process runs; `None` for a
    /// top-level process (its parent is the host itself) and once the
    /// parent has ended. By default the parent is in this host's tree.
    fn parent(&self, host: &Arc<HostInner>, node: &Arc<Node>) -> Option<Arc<Node>> {
        parent_in_tree(host, node)
    }

    /// Starts `node` as `launch` says: sets its pid before anything can
    /// observe it, calls [`Node::finish`] when it ends, and returns the means
    /// to signal it. Every live process of the run holds one of the run's
    /// [`max_processes`](Backend::max_processes) slots, given back before its
    /// end is recorded (so that a joiner can start another at once); past
    /// the limit, start fails with [`Error::ProcessLimit`].
    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error>;

    /// Forks the running process `node` (whose launch is `launch`): a new
    /// child of `node` that continues, from this call, with a copy of the
    /// whole process. Returns [`Forked::Child`] in the copy and
    /// [`Forked::Parent`] (the started child) in the caller. By default a
    /// backend cannot fork: [`Error::Unsupported`], naming the one that can.
    fn fork(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Forked, Error> {
        let _ = (host, node, launch);
        Err(Error::Unsupported(format!(
            "fork is not supported on the {} backend: a process can only be forked on the native backend (`--backend native`)",
            match self.kind() {
                BackendKind::Thread => "thread",
                BackendKind::Native => "native",
            }
        )))
    }

    /// In a root host: the run's shared objects, which this backend serves
    /// to processes that run outside the host (the thread backend's run in
    /// it and need nothing). Called once, as the host is built.
    fn serve_objects(&self, _runtime: &tokio::runtime::Handle, _objects: Arc<dyn Objects>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Where this host's processes reach the run's shared objects when they
    /// are not in this host (a native worker: they are in its root);
    /// `None` when they are here.
    fn remote_objects(&self) -> anyhow::Result<Option<Arc<dyn RemoteObjects>>> {
        Ok(None)
    }
}

/// [`Backend::parent`] where the parent is in `host`'s own tree: the node
/// that created `node`, unless that is the host itself or has ended.
pub(crate) fn parent_in_tree(host: &Arc<HostInner>, node: &Arc<Node>) -> Option<Arc<Node>> {
    let parent = node.parent()?;
    (!Arc::ptr_eq(&parent, &host.root) && parent.is_alive()).then_some(parent)
}

/// The two sides of a [`Backend::fork`] (only the native backend forks).
// Only a backend that forks makes a `Child`; a build without one never does.
#[cfg_attr(not(outside_processes), allow(dead_code))]
pub(crate) enum Forked {
    /// This is the new process, started as this launch says (its own
    /// label, its own place in the tree).
    Child(Box<Launch>),
    /// This is the caller; the new process, started.
    Parent(Arc<Node>),
}

/// A future a trait object returns.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The run's shared objects as a backend carries requests for them:
/// encoded requests in, encoded answers out (the encoding is
/// [`crate::sync`]'s own; a backend only moves the bytes). A build whose
/// backends all run their processes inside the host never calls it.
#[cfg_attr(not(outside_processes), allow(dead_code))]
pub(crate) trait Objects: Send + Sync {
    /// Carries out one encoded request of the process `pid`. Dropping the
    /// future before it resolves withdraws the request (a blocking one
    /// takes nothing). An `Err` is a request that breaks the protocol: its
    /// sender is not served further.
    fn call(&self, pid: u32, request: Vec<u8>) -> BoxFuture<'_, Result<Answered, String>>;

    /// The process `pid` can send no more requests (it ended): whatever it
    /// held is released, and what it did not take of its leases goes back.
    fn release(&self, pid: u32);

    /// How many items of its lease `serial` the process `pid` took is
    /// `counter` (see [`Lease`]), which the objects read whenever they need
    /// to know; given before the lease reaches the process.
    fn lease_counted(&self, pid: u32, serial: u64, counter: Box<dyn TakenCount>);

    /// The process `pid` returned its lease `serial`: what it did not take
    /// goes back to the object.
    fn lease_returned(&self, pid: u32, serial: u64);

    /// The largest encoded request a process may send.
    fn max_request(&self) -> usize;
}

/// The encoded answer to a request, and how to undo what it hands over if
/// it cannot be delivered (a message taken for a process that is gone goes
/// back where it was).
#[cfg_attr(not(outside_processes), allow(dead_code))]
pub(crate) struct Answered {
    pub(crate) answer: Vec<u8>,
    /// Given the encoded answer back.
    pub(crate) undo: Option<Box<dyn FnOnce(Vec<u8>) + Send>>,
    /// The request failed (its answer is an error): what a request the
    /// process did not wait for tells it on its next one.
    pub(crate) failed: bool,
    /// How many bytes of requests like this one the process may send
    /// without waiting for their answers (see [`RemoteObjects::send`]): 0
    /// unless they can neither wait nor fail.
    pub(crate) allowance: u64,
    /// Items handed ahead with the answer, for the process's next requests.
    pub(crate) lease: Option<Lease>,
}

/// Items of an object (a queue) handed ahead to a process in another host,
/// so that its next requests for them need no round trip: it serves them
/// from the lease, counting each it takes before its guest sees it in a
/// counter the objects can read at any time ([`Objects::lease_counted`]),
/// and returns the rest when asked ([`Objects::lease_returned`]). Until
/// then the objects keep every item not taken, and take it back should the
/// process end.
#[cfg_attr(not(outside_processes), allow(dead_code))]
pub(crate) struct Lease {
    /// The object the items come from.
    pub(crate) object: u64,
    /// Names the lease in what the process tells of it.
    pub(crate) serial: u64,
    /// Encoded like a request's payload, oldest first (shared with the
    /// objects' own record of the lease).
    pub(crate) items: Arc<Vec<Vec<u8>>>,
    /// Resolves when the objects want the lease back; an error once there
    /// is nothing left to return (all taken or returned, or the process
    /// ended).
    pub(crate) recalled: tokio::sync::oneshot::Receiver<()>,
}

/// How many items of a lease its holder took, as the holder counts them
/// (in memory it shares with the objects' host): the first that many items
/// of the lease are the holder's, the rest the objects' to take back.
pub(crate) trait TakenCount: Send + Sync {
    fn taken(&self) -> u64;
}

/// The answer to a request a process waited for, as [`RemoteObjects::call`]
/// returns it.
pub(crate) struct Called {
    /// The encoded answer.
    pub(crate) answer: Vec<u8>,
    /// See [`Answered::allowance`].
    pub(crate) allowance: u64,
}

/// A process's way to the run's shared objects when they live in another
/// host (see [`Backend::remote_objects`]).
pub(crate) trait RemoteObjects: Send + Sync {
    /// Sends one encoded request and waits for its encoded answer; an
    /// `Err` says why the objects could not be reached. Requests are
    /// carried out in the order they are sent. Dropping the future before
    /// it resolves withdraws the request: a blocking one that has not ended
    /// takes nothing (one that ended as it was withdrawn keeps its effect).
    fn call(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Called, String>>;

    /// Sends one encoded request without waiting for its answer (within an
    /// allowance the objects gave, see [`Answered::allowance`]). Should it
    /// fail all the same, the next [`call`](Self::call) is not carried out
    /// and answers that failure instead.
    fn send(&self, request: Vec<u8>) -> Result<(), String>;

    /// Waits until every request sent has been carried out; the encoded
    /// answer of one sent without waiting that failed and was not told yet.
    fn flush(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;

    /// Whether [`flush`](Self::flush) has nothing to wait for or tell (a
    /// check without waiting, so that a caller that flushes often, after
    /// every pool task, pays for a flush only after a request sent ahead).
    fn settled(&self) -> bool;

    /// Whether this process has reached the objects yet (one that never
    /// did holds none).
    fn connected(&self) -> bool;

    /// In a forked child: the connection is its parent's (the other end
    /// knows it by its parent's pid), so it is left to the parent,
    /// untouched, and the child connects anew.
    #[cfg(outside_processes)]
    fn leave_connection(&self);

    /// The oldest item leased from `object` (see [`Lease`]), counted as
    /// taken before it is returned; `None` when no lease holds one.
    fn take_leased(&self, object: u64) -> Option<Vec<u8>>;

    /// Returns what is leased from `object`, if anything.
    fn return_lease(&self, object: u64);
}

/// What a backend needs to know of the host's configuration.
pub(crate) struct Settings {
    pub(crate) kind: BackendKind,
    /// What a backend that runs processes outside the host needs: the
    /// binary they run, and the engine settings their code was compiled
    /// with (unread in a build without such a backend).
    #[cfg_attr(not(outside_processes), allow(dead_code))]
    pub(crate) worker_program: Option<std::path::PathBuf>,
    #[cfg_attr(not(outside_processes), allow(dead_code))]
    pub(crate) fuel: bool,
    #[cfg_attr(not(outside_processes), allow(dead_code))]
    pub(crate) max_memory: u64,
    /// The cap on live processes; a native worker's comes from its root.
    pub(crate) max_processes: u32,
}

pub(crate) fn create(settings: Settings) -> anyhow::Result<Box<dyn Backend>> {
    match settings.kind {
        BackendKind::Thread => Ok(Box::new(thread::ThreadBackend::new(settings.max_processes))),
        BackendKind::Native => native::create(settings),
    }
}
