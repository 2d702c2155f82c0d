//! The native backend: every process a real OS process (Linux).
//!
//! A process is a worker: the host's own binary re-executed in worker mode
//! (never a `fork` of the multi-threaded host without `exec`). It maps the
//! program's compiled code, which the host serialized once into sealed
//! memory and hands over by descriptor (see [`code`]; never recompiled, and
//! never on a file system a guest could be granted), and runs it as the
//! thread backend would.
//! Pids are real, and so is the tree: a child a guest spawns in a worker is
//! an OS child of that worker.
//!
//! The root forks its workers from a zygote (`zygote.rs`: a pre-started,
//! single-threaded worker that has the engine and the program's code mapped,
//! forking with `CLONE_PARENT` so each worker is the root's own child). A
//! worker forks its own children the same way from a zygote of its own (its
//! child, started at its second child: so the forks are the worker's
//! children), and execs its first, as does anyone whose zygote is
//! unavailable (`posix_spawn`: no `fork` of the host's large address space).
//! The starting thread asks the zygote itself, one request at a time; the
//! zygote is started, and execs are done, by one long-lived spawner thread
//! (`spawner.rs`); the root watches each started worker in `supervise.rs`,
//! through a pidfd (`pidfd.rs`).
//! The root's zygote copies the host binary's code into huge pages before
//! its second fork (`text.rs`), so that its forks do not fault it in again.
//! A worker has no helper thread (`ticker.rs`): a timer on its guest
//! thread's CPU clock ticks the engine's epoch from a signal handler (a
//! sleeping worker costs no wake-up), and the lifeline's end is a signal
//! that ends it.
//! Every worker has one channel to the root host, a socket pair made where
//! the worker is made, whoever makes it (`channel.rs`): its start, a pool
//! worker's orders and reports, its shared-object requests and their
//! answers (`broker.rs`: the run's objects live in the root), the children
//! it leaves to the root, and its end travel on it, in frames of one codec
//! ([`protocol`]). Besides it, and its stdin, stdout and stderr (the
//! root's workers' output is piped to the root host, which passes it on in
//! the process's format: byte for byte, or whole lines; the workers below
//! share it), a worker gets three descriptors, named in `HOST_WORKER_FDS`
//! after its channel:
//! - the lifeline: the read end of a pipe whose only writer is the root
//!   host, so that when the root dies, even by `SIGKILL`, every worker sees
//!   end-of-file and kills itself;
//! - the sealed compiled code of its program;
//! - the process table: the run's [`slots::Slots`] in shared memory, which
//!   every starter, root or worker, takes a slot from (the run's
//!   `max_processes` cap) and whoever reaps a process gives back.
//!
//! A worker that ends before its non-daemon children announces them on its
//! channel, so that the root (a `PR_SET_CHILD_SUBREAPER`) adopts, waits for
//! and reaps them (`orphans.rs`).
//!
//! A daemon sets `PR_SET_PDEATHSIG` on itself, so it dies with its parent
//! even when the parent crashes (the spawner thread lives as long as the
//! parent). Every child is waited for through a pidfd, which reaps exactly
//! our own children (never an embedder's), so no zombie stays.

mod bridge;
mod broker;
mod channel;
mod code;
// The fork of a worker (issue 13): its own file, hooks marked `fork::`.
mod fork;
mod lending;
mod orphans;
mod parent;
mod pidfd;
pub(crate) mod protocol;
mod slots;
mod spawner;
mod supervise;
mod text;
mod ticker;
pub mod worker;
mod zygote;

use super::{Backend, BackendKind, Control, Objects, RemoteObjects};
use crate::command::Launch;
use crate::error::Error;
use crate::process::Node;
use crate::runtime::{Engines, HostInner};
use crate::work::Work;
use broker::Client;
use pidfd::{NativeControl, SelfControl, Status, open_pidfd, wait_pid};
use protocol::{EngineSettings, Start};
use spawner::{SpawnRequest, Spawner, SpawnerThread, Worker, ZygoteState, set_cloexec, spawn_retrying, stdin_fd};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use supervise::supervise;

/// The environment variable naming a worker's channel, lifeline, code and
/// process table descriptors.
const FDS_VAR: &str = "HOST_WORKER_FDS";

/// Whether this build can run the native backend.
pub(crate) const AVAILABLE: bool = true;

/// The native backend of a host configured as `settings` says.
pub(crate) fn create(settings: super::Settings) -> anyhow::Result<Box<dyn Backend>> {
    let engine = EngineSettings { fuel: settings.fuel, max_memory: settings.max_memory };
    Ok(Box::new(NativeBackend::new(settings.worker_program, engine, settings.max_processes)?))
}

/// The subcommand that puts the host binary in worker mode.
pub const WORKER_ARG: &str = "__worker";

pub(crate) struct NativeBackend {
    exe: PathBuf,
    settings: EngineSettings,
    /// Workers are spawned from one long-lived thread: `PR_SET_PDEATHSIG`
    /// fires when the *thread* that spawned ends, and descriptors made
    /// inheritable for one spawn must not leak into another.
    /// Started on first use (most workers start no process of their own).
    spawner: std::sync::Mutex<SpawnerThread>,
    /// The zygote that forks this host's workers (`spawner.rs`).
    zygote: std::sync::Mutex<ZygoteState>,
    /// How many processes this host has started (a worker starts its
    /// zygote only once it has a few children).
    spawned: std::sync::atomic::AtomicU32,
    /// The run's process slots, shared with every worker.
    slots: Arc<slots::Slots>,
    /// The root keeps the lifeline's write end for as long as it lives.
    _lifeline_writer: Option<OwnedFd>,
    /// In the root: the run's shared objects, served on every worker's channel.
    objects: OnceLock<Arc<dyn Objects>>,
    /// In a worker: the process its host is (name, daemon).
    this_process: Option<(String, bool)>,
    /// In a worker: the engine its code was loaded with, until its host
    /// takes it (moved, not cloned: a linker's clone costs a worker's start).
    engines: std::sync::Mutex<Option<Engines>>,
    /// In a worker: its parent, when that is a process of the run.
    parent: std::sync::Mutex<parent::ParentLink>,
}

/// What a worker's host is, told before the host is built.
pub(crate) struct ThisProcess {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) engines: Engines,
    /// The parent's pid and name, when it is a process of the run (not the
    /// root host).
    pub(crate) parent: Option<(u32, String)>,
}

/// Set by a worker just before it builds its host, taken by its backend.
static THIS_PROCESS: std::sync::Mutex<Option<ThisProcess>> = std::sync::Mutex::new(None);

/// Makes the next host built in this process the worker's own.
pub(crate) fn become_process(this: ThisProcess) {
    *THIS_PROCESS.lock().unwrap() = Some(this);
}

/// What a worker inherited from its parent.
pub(crate) struct Inherited {
    lifeline: OwnedFd,
    /// The lifeline's own file description (see `ticker.rs`), when the
    /// zygote opened it before the fork: the first open of `/proc/self`
    /// costs a new process several times what it costs the long-lived
    /// zygote. Taken by the first ticker (a fork opens its own).
    watch: std::sync::Mutex<Option<OwnedFd>>,
    /// The run's process table, mapped (a zygote maps it once for all its
    /// forks).
    slots: Arc<slots::Slots>,
    /// Its channel to the root.
    channel: Arc<Client>,
}

static INHERITED: OnceLock<Inherited> = OnceLock::new();

impl NativeBackend {
    /// The backend of a root host (whose run may have `max_processes` live
    /// processes), or of a worker (whose run's cap is its root's).
    pub(crate) fn new(
        exe: Option<PathBuf>,
        settings: EngineSettings,
        max_processes: u32,
    ) -> anyhow::Result<NativeBackend> {
        // A worker's children run its own binary (its environment is the
        // root's choice, without the variable).
        let named = || std::env::var_os("HOST_WORKER_EXE").map(PathBuf::from);
        let exe = match exe.or_else(|| INHERITED.get().is_none().then(named).flatten()) {
            Some(exe) => exe,
            None => current_exe()?,
        };
        let (lifeline, slots, lifeline_writer) = match INHERITED.get() {
            Some(inherited) => (inherited.lifeline.try_clone()?, inherited.slots.clone(), None),
            None => {
                let slots = Arc::new(slots::Slots::new(max_processes)?);
                let (lifeline, writer) = become_root(&slots)?;
                (lifeline, slots, Some(writer))
            }
        };
        let this = THIS_PROCESS.lock().unwrap().take();
        let spawner = Spawner { exe: exe.clone(), lifeline, slots: slots.fd().try_clone()?, settings };
        Ok(NativeBackend {
            exe,
            settings,
            spawner: std::sync::Mutex::new(SpawnerThread::NotYet(Box::new(spawner))),
            // A worker's zygote is its own child, so that the workers that
            // zygote forks (with `CLONE_PARENT`) are the worker's children.
            zygote: std::sync::Mutex::new(ZygoteState::NotYet),
            spawned: std::sync::atomic::AtomicU32::new(0),
            slots,
            _lifeline_writer: lifeline_writer,
            objects: OnceLock::new(),
            this_process: this.as_ref().map(|this| (this.name.clone(), this.daemon)),
            parent: std::sync::Mutex::new(parent::ParentLink::new(this.as_ref().and_then(|this| this.parent.clone()))),
            engines: std::sync::Mutex::new(this.map(|this| this.engines)),
        })
    }
}

/// This process's executable, looked up once (a zygote looks it up before
/// it forks, so that its workers need not).
pub(crate) fn current_exe() -> std::io::Result<PathBuf> {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    if let Some(exe) = EXE.get() {
        return Ok(exe.clone());
    }
    let exe = std::env::current_exe()?;
    Ok(EXE.get_or_init(|| exe).clone())
}

/// Makes this process the root host: the adopter of orphans, and the
/// writer of the lifeline, whose two ends it returns.
fn become_root(slots: &Arc<slots::Slots>) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    // Orphans re-parent to the nearest subreaper: us, not init.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    orphans::become_adopter(slots.clone());
    Ok(pipe()?)
}

pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn root_pid(&self) -> u32 {
        std::process::id()
    }

    fn root(&self) -> Arc<Node> {
        match &self.this_process {
            Some((name, daemon)) => {
                // SAFETY: getppid has no preconditions and cannot fail.
                let ppid = unsafe { libc::getppid() } as u32;
                Node::top(std::process::id(), name.clone(), ppid, *daemon, Some(Arc::new(SelfControl)))
            }
            None => Node::root(self.root_pid()),
        }
    }

    fn runs_one_process(&self) -> bool {
        self.this_process.is_some()
    }

    fn engines(&self) -> Option<Engines> {
        self.engines.lock().unwrap().take()
    }

    fn wait_adopted(&self) {
        orphans::wait_all();
    }

    fn tick_epochs(&self, engine: &wasmtime::Engine) -> std::io::Result<()> {
        match (&self.this_process, INHERITED.get()) {
            // A worker: its one guest runs on this thread.
            (Some(_), Some(inherited)) => {
                ticker::start(engine, &inherited.lifeline, inherited.watch.lock().unwrap().take())
            }
            _ => crate::runtime::tick_epochs(engine),
        }
    }

    fn max_processes(&self) -> u32 {
        self.slots.limit()
    }

    fn ppid(&self, node: &Node) -> u32 {
        if node.pid() == Some(std::process::id()) {
            // Our own parent may have ended: the kernel knows who adopted us.
            unsafe { libc::getppid() as u32 }
        } else {
            node.ppid()
        }
    }

    fn parent(&self, host: &Arc<HostInner>, node: &Arc<Node>) -> Option<Arc<Node>> {
        if self.this_process.is_some() && Arc::ptr_eq(node, &host.root) {
            // The worker's own process: its parent is another OS process.
            return self.parent.lock().unwrap().node(host);
        }
        crate::backend::parent_in_tree(host, node)
    }

    fn serve_objects(&self, _runtime: &tokio::runtime::Handle, objects: Arc<dyn Objects>) -> anyhow::Result<()> {
        let _ = self.objects.set(objects);
        Ok(())
    }

    fn remote_objects(&self) -> anyhow::Result<Option<Arc<dyn RemoteObjects>>> {
        Ok(INHERITED.get().map(|inherited| inherited.channel.clone() as Arc<dyn RemoteObjects>))
    }

    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error> {
        let code = code::Sealed::of(&launch.program)
            .map_err(|e| Error::Spawn(format!("cannot seal the compiled program: {e}")))?;
        let mut start = self.start_message(node, launch, code.id(), host.journal.is_some());
        // A worker's children have it for parent; a root host's are top-level.
        start.parent_name = self.this_process.is_some().then(|| host.root.name());
        // Taken before the worker exists, given back (by dropping it) if it
        // never does, else once it is reaped.
        let mut slot = match self.slots.take() {
            // At the cap, a worker's own zygote makes room for its child.
            Err(Error::ProcessLimit { .. }) if self.yield_zygote() => self.slots.take()?,
            taken => taken?,
        };
        let stdin = stdin_fd(&launch.stdin.0).map_err(|e| Error::Spawn(format!("cannot pass on stdin: {e}")))?;
        start.stdin = stdin.is_some();
        let channel = channel::pair().map_err(|e| Error::Spawn(format!("cannot make a worker's channel: {e}")))?;
        let mut worker = self.spawn(SpawnRequest { start, code, channel, stdin })?;
        let pid = worker.pid;
        // Signals and the wait go through a pidfd: once the worker is reaped
        // its pid may be another process's, its pidfd never is.
        let watched = open_pidfd(pid).map(Arc::new);
        let _entered = host.runtime.enter();
        let supervised = watched.map_err(|e| e.to_string()).and_then(|pidfd| {
            let ours = worker.channel.take().ok_or("no channel")?;
            Ok((pidfd, self.supervised(pid, ours)?))
        });
        let (pidfd, supervised) = supervised.map_err(|e| {
            // Not reaped yet, so the pid is still the worker's.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Error::Spawn(format!("cannot watch worker {pid}: {e}"))
        })?;
        slot.started(pid);
        node.set_pid(pid);
        let control = Arc::new(NativeControl { pidfd: pidfd.clone() });
        let (host, node, launch) = (host.clone(), node.clone(), launch.clone());
        host.runtime.clone().spawn(supervise(host, node, launch, (worker, supervised), pidfd, slot));
        Ok(control)
    }

    fn fork(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<super::Forked, Error> {
        fork::fork(self, host, node, launch)
    }
}

impl NativeBackend {
    /// The channel `ours` of the new worker `pid`, served by the root (its
    /// own child), or handed to it (a worker's).
    fn supervised(&self, pid: u32, ours: OwnedFd) -> Result<channel::Supervised, String> {
        match INHERITED.get() {
            Some(inherited) => {
                let reports = inherited.channel.adopt(pid, ours)?;
                Ok(channel::Supervised { reports, orders: channel::Orders::Relayed(inherited.channel.clone(), pid) })
            }
            None => {
                let objects = self.objects.get().ok_or("the root serves no shared objects")?;
                channel::serve_child(objects.clone(), ours, pid).map_err(|e| e.to_string())
            }
        }
    }

    fn start_message(&self, node: &Node, launch: &Launch, code: protocol::CodeId, journal: bool) -> Start {
        let program = &launch.program;
        Start {
            code,
            source: program.path().map(|p| p.to_path_buf()),
            core: program.kind() == crate::ProgramKind::CoreModule,
            entries: program.entries().to_vec(),
            has_main: program.has_main(),
            entry: launch.work.entry().map(str::to_string),
            input: launch.work.input().to_vec(),
            ticket: launch.ticket,
            args: launch.args.clone(),
            env: launch.env.clone(),
            dirs: launch.dirs.clone(),
            max_memory: launch.limits.max_memory,
            fuel: launch.limits.fuel,
            // Saturated: u64::MAX nanoseconds (584 years) is as good as never.
            time_left: launch.deadline.map(|d| nanos(d.saturating_duration_since(std::time::Instant::now()))),
            name: node.name(),
            daemon: node.is_daemon(),
            parent: std::process::id(),
            parent_name: None,
            label: launch.label.clone(),
            labelled: launch.labelled,
            engine: self.settings,
            serve: match &launch.work {
                Work::Serve(serve) => Some(protocol::Serve {
                    initializer: serve.initializer.clone(),
                    max_tasks: serve.max_tasks,
                    task_timeout: serve.task_timeout.map(nanos),
                }),
                Work::Main | Work::Entry { .. } => None,
            },
            journal,
            stdin: false,
        }
    }
}

/// A duration in nanoseconds for the protocol, saturated rather than wrapped.
fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
