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
//! forking with `CLONE_PARENT` so each worker is the root's own child); a
//! worker's own children, and every worker when the zygote is unavailable,
//! are started with `posix_spawn` (no `fork` of the host's large address
//! space). Both go one at a time through one long-lived spawner thread.
//! Besides its stdout and stderr (piped to the root host, which passes them
//! on in the process's format: byte for byte, or whole lines), and its stdin
//! (the start message, then a pool worker's tasks), every worker gets five
//! descriptors, named in `HOST_WORKER_FDS`:
//! - the report pipe: one [`protocol::Report::Ended`] frame saying why it
//!   ended (a pool worker first sends a [`protocol::Report::Done`] frame per
//!   task; its tasks come on its stdin, after the start message);
//! - the lifeline: the read end of a pipe whose only writer is the root
//!   host, so that when the root dies, even by `SIGKILL`, every worker sees
//!   end-of-file and kills itself;
//! - the orphanage: a pipe to the root host on which a worker that ends
//!   before its non-daemon children announces their pids, so that the root
//!   (a `PR_SET_CHILD_SUBREAPER`) adopts, waits for and reaps them;
//! - the sealed compiled code of its program;
//! - the process table: the run's [`slots::Slots`] in shared memory, which
//!   every starter, root or worker, takes a slot from (the run's
//!   `max_processes` cap) and whoever reaps a process gives back.
//!
//! A process given a stdin (the host's, or bytes) gets it as one more
//! descriptor, named in `HOST_WORKER_STDIN`, which the worker puts in place
//! of its own stdin once it has read its start message (a worker forked by
//! the zygote gets it with its other descriptors, as its stdin).
//!
//! The run's shared objects live in the root host, which serves them to
//! every worker on a unix socket (`broker.rs`), in frames of the same codec
//! as the control messages ([`protocol`]); what the frames carry is the
//! objects' own encoding, which the backend never looks into.
//!
//! A daemon sets `PR_SET_PDEATHSIG` on itself, so it dies with its parent
//! even when the parent crashes (the spawner thread lives as long as the
//! parent). Every child is waited for through a pidfd, which reaps exactly
//! our own children (never an embedder's), so no zombie stays.

mod broker;
mod code;
// The fork of a worker (issue 13): its own file, hooks marked `fork::`.
mod fork;
mod orphans;
mod parent;
pub(crate) mod protocol;
mod slots;
pub mod worker;
mod zygote;

use super::{Backend, BackendKind, Control, Objects, RemoteObjects};
use crate::command::Launch;
use crate::error::Error;
use crate::exit::Signal;
use crate::output::{Format, Input, LineSink, Stream};
use crate::work::{Outcome, ServeChannel, Work};
use crate::process::{Ended, Node};
use crate::runtime::{Engines, HostInner};
use protocol::{EngineSettings, Start};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};


/// The environment variable naming a worker's report, lifeline, orphanage
/// and process table descriptors.
const FDS_VAR: &str = "HOST_WORKER_FDS";

/// The environment variable naming the descriptor a worker takes as the
/// guest's stdin.
const STDIN_VAR: &str = "HOST_WORKER_STDIN";

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
    /// The run's process slots, shared with every worker.
    slots: Arc<slots::Slots>,
    /// The root keeps the lifeline's write end for as long as it lives.
    _lifeline_writer: Option<OwnedFd>,
    /// The socket on which the root serves the run's shared objects, which
    /// every worker is told of.
    broker: OnceLock<PathBuf>,
    /// The root's listening socket, kept as long as it lives.
    endpoint: OnceLock<broker::Endpoint>,
    /// In a worker: the process its host is (name, daemon).
    this_process: Option<(String, bool)>,
    /// In a worker: the engine its code was loaded with.
    engines: Option<Engines>,
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
    orphanage: OwnedFd,
    /// The run's process table.
    slots: OwnedFd,
}

static INHERITED: OnceLock<Inherited> = OnceLock::new();

impl NativeBackend {
    /// The backend of a root host (whose run may have `max_processes` live
    /// processes), or of a worker (whose run's cap is its root's).
    pub(crate) fn new(exe: Option<PathBuf>, settings: EngineSettings, max_processes: u32) -> anyhow::Result<NativeBackend> {
        let exe = match exe.or_else(|| std::env::var_os("HOST_WORKER_EXE").map(PathBuf::from)) {
            Some(exe) => exe,
            None => std::env::current_exe()?,
        };
        let (lifeline, orphanage, slots, lifeline_writer) = match INHERITED.get() {
            Some(inherited) => (
                inherited.lifeline.try_clone()?,
                inherited.orphanage.try_clone()?,
                Arc::new(slots::Slots::inherit(&inherited.slots)?),
                None,
            ),
            None => {
                let slots = Arc::new(slots::Slots::new(max_processes)?);
                let (lifeline, orphanage, writer) = root_pipes(&slots)?;
                (lifeline, orphanage, slots, writer)
            }
        };
        let this = THIS_PROCESS.lock().unwrap().take();
        let spawner = Spawner {
            exe: exe.clone(),
            lifeline,
            orphanage,
            slots: slots.fd().try_clone()?,
            settings,
            // Only the root forks workers from a zygote (they become its
            // children); a worker's children must be its own, so it execs.
            zygote: if INHERITED.get().is_none() { ZygoteState::NotYet } else { ZygoteState::Off },
        };
        Ok(NativeBackend {
            exe,
            settings,
            spawner: std::sync::Mutex::new(SpawnerThread::NotYet(Box::new(spawner))),
            slots,
            _lifeline_writer: lifeline_writer,
            broker: OnceLock::new(),
            endpoint: OnceLock::new(),
            this_process: this.as_ref().map(|this| (this.name.clone(), this.daemon)),
            parent: std::sync::Mutex::new(parent::ParentLink::new(this.as_ref().and_then(|this| this.parent.clone()))),
            engines: this.map(|this| this.engines),
        })
    }
}

/// The root host's side of the lifeline and the orphanage.
fn root_pipes(slots: &Arc<slots::Slots>) -> anyhow::Result<(OwnedFd, OwnedFd, Option<OwnedFd>)> {
    // Orphans re-parent to the nearest subreaper: us, not init.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (lifeline_read, lifeline_write) = pipe()?;
    let (orphans_read, orphans_write) = pipe()?;
    let slots = slots.clone();
    std::thread::Builder::new()
        .name("host-orphanage".into())
        .spawn(move || orphans::adopt_announced(orphans_read, slots))?;
    Ok((lifeline_read, orphans_write, Some(lifeline_write)))
}

pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A worker to start, and where to send it once started.
struct SpawnRequest {
    start: Start,
    code: Arc<code::Sealed>,
    /// Where the worker finds the broker of shared objects.
    broker: Option<(&'static str, PathBuf)>,
    /// The guest's stdin, if it has one.
    stdin: Option<OwnedFd>,
    started: crossbeam_channel::Sender<std::io::Result<Worker>>,
}

/// The spawner thread, once started.
enum SpawnerThread {
    NotYet(Box<Spawner>),
    Running(crossbeam_channel::Sender<SpawnRequest>),
    /// It could not be started.
    Failed,
}

impl NativeBackend {
    /// Where spawn requests go, the thread started on first use.
    fn spawner(&self) -> Result<crossbeam_channel::Sender<SpawnRequest>, Error> {
        let mut thread = self.spawner.lock().unwrap();
        if let SpawnerThread::NotYet(_) = &*thread
            && let SpawnerThread::NotYet(spawner) = std::mem::replace(&mut *thread, SpawnerThread::Failed)
        {
            let sender = spawner.run().map_err(|e| Error::Spawn(format!("cannot start the spawner thread: {e}")))?;
            *thread = SpawnerThread::Running(sender);
        }
        match &*thread {
            SpawnerThread::Running(sender) => Ok(sender.clone()),
            _ => Err(Error::Spawn("the spawner thread could not be started".into())),
        }
    }
}

/// The spawner thread's state: how it starts workers.
struct Spawner {
    exe: PathBuf,
    /// Read end of the lifeline, passed to every worker.
    lifeline: OwnedFd,
    /// Write end of the orphanage, passed to every worker.
    orphanage: OwnedFd,
    /// The process table, passed to every worker.
    slots: OwnedFd,
    settings: EngineSettings,
    zygote: ZygoteState,
}

enum ZygoteState {
    /// Started on first use.
    NotYet,
    Running(zygote::Zygote),
    /// Not used: in a worker, or after the zygote failed.
    Off,
}

impl Spawner {
    fn run(mut self) -> std::io::Result<crossbeam_channel::Sender<SpawnRequest>> {
        let (requests, incoming) = crossbeam_channel::unbounded::<SpawnRequest>();
        std::thread::Builder::new().name("host-spawner".into()).spawn(move || {
            for request in incoming {
                // No stray search may take a worker for an orphan between its
                // birth and the moment it is known.
                let mut known = orphans::KNOWN.lock().unwrap();
                let spawned = self.spawn(&request.start, &request.code, request.broker, request.stdin, &mut known);
                if let Ok(worker) = &spawned {
                    known.insert(worker.pid);
                }
                drop(known);
                let _ = request.started.send(spawned);
            }
        })?;
        Ok(requests)
    }

    /// Forks the worker from the zygote if there is one, else execs it.
    fn spawn(
        &mut self,
        start: &Start,
        code: &code::Sealed,
        broker: Option<(&'static str, PathBuf)>,
        stdin: Option<OwnedFd>,
        known: &mut std::collections::BTreeSet<u32>,
    ) -> std::io::Result<Worker> {
        if let ZygoteState::NotYet = self.zygote {
            // The broker is the root's for its whole life: the zygote's
            // children find it in the environment they inherit.
            let passed = [&self.lifeline, &self.orphanage, &self.slots];
            let zygote = zygote::Zygote::start(&self.exe, passed, self.settings, broker.clone());
            self.zygote = match zygote {
                Ok(zygote) => {
                    known.insert(zygote.pid());
                    ZygoteState::Running(zygote)
                }
                Err(_) => ZygoteState::Off,
            };
        }
        if let ZygoteState::Running(zygote) = &self.zygote {
            match zygote.spawn(start, code, stdin.as_ref()) {
                Ok(worker) => return Ok(worker),
                Err(zygote::Failed::Unsupported) => {}
                // A zygote that fails once is not trusted again.
                Err(zygote::Failed::Refused) => self.zygote = ZygoteState::Off,
                // It may have forked the worker before it fell silent or
                // died. Stopped for good, it forks no more: a fork of it
                // nobody knows is that worker; without one, exec is safe.
                Err(zygote::Failed::Unanswered(mut worker)) => {
                    if let ZygoteState::Running(zygote) = std::mem::replace(&mut self.zygote, ZygoteState::Off) {
                        known.remove(&zygote.pid());
                        drop(zygote);
                    }
                    match orphans::unknown_zygote_forks(known)[..] {
                        [] => {}
                        [pid] => {
                            worker.pid = pid;
                            return Ok(*worker);
                        }
                        _ => return Err(std::io::Error::other("the zygote forked workers nobody asked for")),
                    }
                }
            }
        }
        spawn_worker(&self.exe, [&self.lifeline, &self.orphanage, &self.slots], start, code, broker, stdin)
    }
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
        self.engines.clone()
    }

    fn wait_adopted(&self) {
        orphans::wait_all();
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

    fn serve_objects(&self, runtime: &tokio::runtime::Handle, objects: Arc<dyn Objects>) -> anyhow::Result<()> {
        let endpoint = broker::listen(runtime, objects)?;
        let _ = self.broker.set(endpoint.path.clone());
        let _ = self.endpoint.set(endpoint);
        Ok(())
    }

    fn remote_objects(&self) -> anyhow::Result<Option<Arc<dyn RemoteObjects>>> {
        if INHERITED.get().is_none() {
            return Ok(None);
        }
        let client = broker::Client::from_env().ok_or_else(|| {
            anyhow::anyhow!("worker mode is for the host's own use: {} is missing", broker::BROKER_VAR)
        })?;
        let _ = self.broker.set(client.path.clone());
        Ok(Some(Arc::new(client)))
    }

    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error> {
        let code = code::Sealed::of(&launch.program)
            .map_err(|e| Error::Spawn(format!("cannot seal the compiled program: {e}")))?;
        let mut start = self.start_message(node, launch, code.id(), host.journal.is_some());
        // A worker's children have it for parent; a root host's are top-level.
        start.parent_name = self.this_process.is_some().then(|| host.root.name());
        // Taken before the worker exists, given back (by dropping it) if it
        // never does, else once it is reaped.
        let mut slot = self.slots.take()?;
        let (started, worker) = crossbeam_channel::bounded(1);
        let gone = || Error::Spawn("the spawner thread is gone".into());
        let broker = self.broker.get().map(|path| (broker::BROKER_VAR, path.clone()));
        let stdin = stdin_fd(&launch.stdin.0).map_err(|e| Error::Spawn(format!("cannot pass on stdin: {e}")))?;
        self.spawner()?.send(SpawnRequest { start, code, broker, stdin, started }).map_err(|_| gone())?;
        let worker = worker
            .recv()
            .map_err(|_| gone())?
            .map_err(|e| Error::Spawn(format!("cannot start a worker ({}): {e}", self.exe.display())))?;
        let pid = worker.pid;
        // Signals and the wait go through a pidfd: once the worker is reaped
        // its pid may be another process's, its pidfd never is.
        let pidfd = open_pidfd(pid).and_then(|fd| Ok((fd.try_clone()?, fd))).map_err(|e| {
            // Not reaped yet, so the pid is still the worker's.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Error::Spawn(format!("cannot watch worker {pid}: {e}"))
        })?;
        slot.started(pid);
        node.set_pid(pid);
        let control = Arc::new(NativeControl { pidfd: pidfd.0 });
        let (host, node, launch) = (host.clone(), node.clone(), launch.clone());
        host.runtime.clone().spawn(supervise(host, node, launch, worker, pidfd.1, slot));
        Ok(control)
    }

    fn fork(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<super::Forked, Error> {
        fork::fork(self, host, node, launch)
    }
}

impl NativeBackend {
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
            time_left: launch
                .deadline
                .map(|d| nanos(d.saturating_duration_since(std::time::Instant::now()))),
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
        }
    }
}

/// The descriptor a worker reads as the guest's stdin: a copy of the host's
/// own, or a pipe a thread fills with the given bytes; `None` for none.
fn stdin_fd(input: &Input) -> std::io::Result<Option<OwnedFd>> {
    match input {
        Input::Null => Ok(None),
        Input::Inherit => {
            let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        Input::Bytes(bytes) => {
            let (read, write) = pipe()?;
            let bytes = bytes.clone();
            // Ends when every byte is written or the reader has gone.
            std::thread::Builder::new().name("host-stdin".into()).spawn(move || {
                let _ = std::io::Write::write_all(&mut std::fs::File::from(write), &bytes);
            })?;
            Ok(Some(read))
        }
    }
}

/// A duration in nanoseconds for the protocol, saturated rather than wrapped.
fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A started worker and the parent's ends of its pipes (no stdout or
/// stderr when the worker shares its parent's).
struct Worker {
    pid: u32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    report: OwnedFd,
    /// A pool worker's stdin, on which its tasks go.
    tasks: Option<std::process::ChildStdin>,
}

/// Starts a worker by exec; `inherited` are the lifeline, the orphanage and
/// the process table.
fn spawn_worker(
    exe: &PathBuf,
    inherited: [&OwnedFd; 3],
    start: &Start,
    code: &code::Sealed,
    broker: Option<(&str, PathBuf)>,
    stdin: Option<OwnedFd>,
) -> std::io::Result<Worker> {
    let (report_read, report_write) = pipe()?;
    let [lifeline, orphanage, slots] = inherited;
    let named = [report_write.as_fd(), lifeline.as_fd(), orphanage.as_fd(), code.fd(), slots.as_fd()];
    let fds = named.map(|fd| fd.as_raw_fd().to_string()).join(",");
    let passed: Vec<std::os::fd::BorrowedFd> = named.into_iter().chain(stdin.as_ref().map(|fd| fd.as_fd())).collect();
    // The root host reads each of its workers' output through a pipe; the
    // workers below share it, writing whole (labelled) lines, so that an
    // orphan's output still reaches the root after its parent is gone.
    let output = || match INHERITED.get() {
        None => std::process::Stdio::piped(),
        Some(_) => std::process::Stdio::inherit(),
    };
    let mut command = std::process::Command::new(exe);
    command
        .arg(WORKER_ARG)
        .env_clear()
        .env(FDS_VAR, fds)
        .envs(broker)
        .envs(stdin.as_ref().map(|fd| (STDIN_VAR, fd.as_raw_fd().to_string())))
        .stdin(std::process::Stdio::piped())
        .stdout(output())
        .stderr(output());
    // Inheritable for this one spawn only: spawns are serialized on the
    // spawner thread, so no other child can catch them.
    passed.iter().for_each(|fd| set_cloexec(fd, false));
    let child = spawn_retrying(&mut command);
    passed.iter().for_each(|fd| set_cloexec(fd, true));
    drop(stdin);
    let mut child = child?;
    // Written before `start` returns: the parent may end right after it.
    let mut stdin = child.stdin.take().expect("piped stdin");
    match protocol::write_frame(&mut stdin, start) {
        // Already gone: it ended without its start, which its end will say.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(()) => {}
    }
    let tasks = start.serve.is_some().then_some(stdin);
    Ok(Worker {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        report: report_read,
        tasks,
    })
}

/// Spawns, retrying briefly while the executable is "busy": a file just
/// written can still be open for writing in a child that another thread
/// forked and that has not yet reached its exec.
pub(crate) fn spawn_retrying(command: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

pub(crate) fn set_cloexec(fd: &impl AsFd, cloexec: bool) {
    let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
    unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETFD, flags) };
}

/// Passes on a worker's output, waits for its end (reaping it), gives back
/// its process slot and records that end on its node.
async fn supervise(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: Launch,
    worker: Worker,
    pidfd: OwnedFd,
    slot: slots::Slot,
) {
    let pid = worker.pid;
    let killer = pidfd.try_clone();
    // The worker labels its own lines (and its descendants'): pass them on
    // in the process's format, until every process sharing the pipes has
    // ended. A forwarder to a host stream is waited for by the host's final
    // `flush_output` (which gives up on a stream nobody reads); any other
    // by `Host::wait`, unless the process is a daemon (a pool worker, say),
    // which `Host::wait` does not wait for.
    let sinks = [
        (worker.stdout, &launch.stdout, Stream::Stdout),
        (worker.stderr, &launch.stderr, Stream::Stderr),
    ];
    // A copy of each pipe's read end, and the forwarder's turn: once the
    // worker is reaped, what it wrote is passed on before its end is
    // recorded (see `drain`).
    let mut drains = Vec::new();
    for (fd, stdio, stream) in sinks {
        let copy = fd.as_ref().and_then(|fd| fd.try_clone().ok());
        if let Some(reader) = pipe_reader(fd) {
            let turn = Arc::new(tokio::sync::Mutex::new(()));
            if let Some(copy) = copy {
                drains.push((copy, turn.clone()));
            }
            // The worker labelled its lines itself: no prefix here.
            let sink = LineSink::new(stdio, stream, Format { prefix: None, ..launch.output_format() });
            let producer = sink.producer();
            let counted = producer.is_none() && !node.is_daemon();
            if counted {
                host.live.add();
            }
            let host = host.clone();
            host.runtime.clone().spawn(async move {
                forward(reader, &sink, &turn).await;
                sink.finish();
                drop(producer);
                if counted {
                    host.live.remove();
                }
            });
        }
    }
    let read_report = async {
        let report = tokio::net::unix::pipe::Receiver::from_owned_fd(worker.report)
            .map_err(|e| format!("cannot read the report pipe: {e}"))?;
        let reports = read_reports(report);
        let report = match (&launch.work, worker.tasks) {
            (Work::Serve(serve), Some(stdin)) => bridge(pid, serve, stdin, reports).await,
            _ => {
                let mut reports = reports;
                ended_report(reports.recv().await)
            }
        };
        if report.is_err() {
            // A worker that breaks the protocol is not trusted to go on.
            if let Ok(killer) = &killer {
                send_signal(killer, libc::SIGKILL);
            }
        }
        report
    };
    let (mut report, status) = tokio::join!(read_report, wait_pidfd(pidfd));
    // Reaped: the slot is free before a joiner wakes, and its last output
    // is passed on.
    drop(slot);
    for (fd, turn) in &drains {
        drain(fd, turn).await;
    }
    let signalled = matches!(status, Status::Signalled(_));
    tracing::info!(parent: node.span(), "reap");
    if let Ok(Some(report)) = &mut report {
        // What the worker measured, and the descendants that ended in it
        // (which end before it, and so come first in the journal).
        // Its memory is the worker's to count: the root's node only ever
        // sees it grow once, to its peak.
        node.usage.memory_grew(0, report.peak_memory);
        if let Some(fuel) = report.fuel_used {
            node.usage.set_fuel_used(fuel);
        }
        if let Some(journal) = &host.journal {
            std::mem::take(&mut report.descendants).into_iter().for_each(|record| journal.push(record.into()));
        }
    }
    let ended = match (report, status) {
        (Err(why), _) => {
            let reason = format!("worker {pid} broke the control protocol and was killed: {why}");
            let stderr = LineSink::new(&launch.stderr, Stream::Stderr, launch.output_format());
            stderr.note(&format!("error: {reason}"));
            Ended::failure(reason)
        }
        (_, Status::Signalled(signal)) => Ended { code: crate::ExitCode::from(-signal), reason: None },
        (Ok(Some(report)), Status::Exited(code)) if report.code == code => Ended {
            code: crate::ExitCode::from(code),
            reason: report.reason,
        },
        (Ok(_), Status::Exited(code)) => Ended::code(code),
        (_, Status::Lost(why)) => Ended::failure(format!("lost track of worker {pid}: {why}")),
    };
    orphans::KNOWN.lock().unwrap().remove(&pid);
    node.finish(&host, ended);
    if signalled && orphans::adopts() {
        // It announced nothing: its children are ours now, unannounced.
        // Looked for off the joiner's path (`Host::wait` looks once more).
        tokio::task::spawn_blocking(orphans::adopt_strays);
    }
}

/// The frames of a worker's report pipe, read as they come.
type Reports = tokio::sync::mpsc::UnboundedReceiver<Result<protocol::Report, String>>;

/// Reads report frames in a task of their own (a read cut short by a
/// `select!` would lose bytes), until end-of-file or a bad frame.
fn read_reports(mut pipe: tokio::net::unix::pipe::Receiver) -> Reports {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match protocol::read_frame_async::<protocol::Report>(&mut pipe).await {
                Ok(Some(report)) => {
                    let last = matches!(report, protocol::Report::Ended(_));
                    if sender.send(Ok(report)).is_err() || last {
                        return;
                    }
                }
                Ok(None) => return,
                Err(why) => {
                    let _ = sender.send(Err(why));
                    return;
                }
            }
        }
    });
    receiver
}

/// The host's side of a pool worker: takes one task at a time from the
/// pool's queue, hands it to the worker and delivers its result, until the
/// queue closes (then the worker's stdin closes and it ends), the worker has
/// served its `max_tasks`, or it ends. A task in flight when the worker ends
/// fails with the reason the worker gave (a trap, a limit, a timeout).
async fn bridge(
    pid: u32,
    serve: &ServeChannel,
    stdin: std::process::ChildStdin,
    mut reports: Reports,
) -> Result<Option<protocol::Ended>, String> {
    let mut stdin = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(stdin))
        .map_err(|e| format!("cannot write to the worker's stdin: {e}"))?;
    let mut sent: u64 = 0;
    while serve.max_tasks.is_none_or(|max| sent < u64::from(max)) {
        let mut job = tokio::select! {
            job = serve.tasks.recv() => match job {
                Ok(job) => job,
                Err(_) => break,
            },
            // The worker ended while idle (its initializer failed, or it was
            // terminated): take no task for it.
            report = reports.recv() => return ended_report(report),
        };
        sent += 1;
        let count = job.inputs.len();
        let task = protocol::Task {
            id: sent,
            entry: job.entry.clone(),
            inputs: std::mem::take(&mut job.inputs),
            many: job.many,
        };
        if let Err(error) = protocol::write_frame_async(&mut stdin, &task).await {
            job.reply.send(Outcome::Failed(format!("cannot hand the task to worker {pid}: {error}")));
            if error.kind() == std::io::ErrorKind::InvalidInput {
                continue;
            }
            break;
        }
        match reports.recv().await {
            Some(Ok(protocol::Report::Done { id, results })) if id == sent && results.len() == count => {
                job.reply.send(Outcome::Done(results));
            }
            Some(Ok(protocol::Report::Done { .. })) => return Err("a result for another task".into()),
            Some(Ok(protocol::Report::Ended(ended))) => {
                let why = ended.reason.clone().unwrap_or_else(|| format!("its worker exited with code {}", ended.code));
                job.reply.send(Outcome::Failed(why));
                return Ok(Some(ended));
            }
            Some(Err(why)) => return Err(why),
            // Ended by a signal: dropping the job reports it.
            None => return Ok(None),
        }
    }
    drop(stdin);
    ended_report(reports.recv().await)
}

/// The worker's final report; `None` if it ended without one (a signal).
fn ended_report(report: Option<Result<protocol::Report, String>>) -> Result<Option<protocol::Ended>, String> {
    match report {
        None => Ok(None),
        Some(Ok(protocol::Report::Ended(ended))) => Ok(Some(ended)),
        Some(Ok(protocol::Report::Done { .. })) => Err("a task result from a worker given no task".into()),
        Some(Err(why)) => Err(why),
    }
}

fn pipe_reader(fd: Option<OwnedFd>) -> Option<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd?).ok()
}

/// Passes everything a worker writes on to `sink`, until end-of-file. It
/// reads only when the sink's destination has room: a full queue (a host
/// stream nobody reads) leaves the bytes in the pipe, and the worker waits.
/// Each read and the write that follows are one turn of `turn`, so that
/// [`drain`] can tell bytes in the pipe from bytes on their way.
async fn forward(reader: tokio::net::unix::pipe::Receiver, sink: &LineSink, turn: &tokio::sync::Mutex<()>) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        sink.writable(0).await;
        if reader.readable().await.is_err() {
            return;
        }
        let _turn = turn.lock().await;
        match reader.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => sink.write(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// How long an ended worker's output may take to be passed on before its
/// end is recorded anyway (a host stream nobody reads, descendants that
/// share the pipe and keep writing).
const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits, briefly, until the pipe `fd` (a copy of a forwarder's read end)
/// holds nothing its forwarder has not passed on: what an ended worker
/// wrote has then reached its sink. Bounded by [`DRAIN_PATIENCE`]; it
/// polls rather than waits on a wake-up, so it cannot hang.
async fn drain(fd: &OwnedFd, turn: &tokio::sync::Mutex<()>) {
    let deadline = std::time::Instant::now() + DRAIN_PATIENCE;
    loop {
        {
            let _turn = turn.lock().await;
            if pending_bytes(fd) == 0 {
                return;
            }
        }
        if std::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// How many bytes wait in the pipe `fd`; 0 if it cannot be asked.
fn pending_bytes(fd: &OwnedFd) -> usize {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut pending) };
    if result < 0 { 0 } else { pending.max(0) as usize }
}

pub(super) enum Status {
    Exited(i32),
    Signalled(i32),
    Lost(String),
}

/// A descriptor for the process `pid`, our unreaped child.
fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (always close-on-exec).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd`; nothing once it is reaped.
fn send_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: no siginfo, no flags: the same as kill(2), by descriptor.
    unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    };
}

/// Waits for the process `pid` (our child) to end, and reaps it.
pub(super) async fn wait_pid(pid: u32) -> Status {
    match open_pidfd(pid) {
        Ok(pidfd) => wait_pidfd(pidfd).await,
        Err(e) => Status::Lost(e.to_string()),
    }
}

/// Waits for the process behind `pidfd` (our child) to end, and reaps it.
async fn wait_pidfd(pidfd: OwnedFd) -> Status {
    // SAFETY: the pidfd is owned by the AsyncFd, and closed only with it.
    let ready = match unsafe { tokio::io::unix::AsyncFd::register(pidfd) } {
        Ok(fd) => fd,
        Err(e) => return Status::Lost(e.to_string()),
    };
    loop {
        match ready.readable().await {
            Ok(mut guard) => {
                if let Some(status) = reap(ready.get_ref()) {
                    return status;
                }
                guard.clear_ready();
                // An orphan that ended before its parent is still the
                // parent's for a moment; look again shortly.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => return Status::Lost(e.to_string()),
        }
    }
}

/// Reaps the ended process behind `pidfd`, if it is ours to reap yet.
fn reap(pidfd: &OwnedFd) -> Option<Status> {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG;
    let result = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return (error.raw_os_error() != Some(libc::ECHILD)).then(|| Status::Lost(error.to_string()));
    }
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return None;
    }
    let status = unsafe { info.si_status() };
    Some(match info.si_code {
        libc::CLD_EXITED => Status::Exited(status),
        _ => Status::Signalled(status),
    })
}

/// Signals to the process a worker's host is: the worker itself.
struct SelfControl;

impl Control for SelfControl {
    fn signal(&self, signal: Signal) {
        // SAFETY: raising a signal on ourselves has no preconditions.
        unsafe { libc::raise(signal.number()) };
    }
}

/// Signals one worker.
struct NativeControl {
    pidfd: OwnedFd,
}

impl Control for NativeControl {
    fn signal(&self, signal: Signal) {
        send_signal(&self.pidfd, signal.number());
    }
}
