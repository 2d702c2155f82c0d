//! How workers are started: the starting thread asks the zygote to fork
//! the worker (one request at a time), or, when there is no zygote (a
//! worker's first child, a pool worker, after the zygote failed),
//! one long-lived spawner thread execs the host binary in worker mode. That
//! thread also starts the zygote.
//!
//! One thread, because `PR_SET_PDEATHSIG` fires when the *thread* that
//! spawned a child ends (the zygote's forks are its siblings: their parent
//! thread is the one that started the zygote), and because descriptors made
//! inheritable for one spawn must not leak into another spawned at the same
//! moment.

use super::code;
use super::protocol::{self, EngineSettings, Start};
use super::zygote;
use super::{FDS_VAR, INHERITED, NativeBackend, WORKER_ARG, orphans, pipe, slots};
use crate::error::Error;
use crate::output::Input;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

/// A worker to start.
pub(super) struct SpawnRequest {
    pub(super) start: Start,
    pub(super) code: Arc<code::Sealed>,
    /// The worker's end of its channel; our end goes back in [`Worker`].
    pub(super) channel: (OwnedFd, OwnedFd),
    /// The guest's stdin, if it has one.
    pub(super) stdin: Option<OwnedFd>,
}

/// What the spawner thread is asked to do.
pub(super) enum Request {
    /// Exec a worker, and send it back once started.
    Exec(Box<SpawnRequest>, crossbeam_channel::Sender<std::io::Result<Worker>>),
    /// Start the zygote: from this thread, which lives as long as the host,
    /// since `PR_SET_PDEATHSIG` of the workers the zygote forks (its
    /// siblings) fires when the thread that started it ends.
    Zygote { started: crossbeam_channel::Sender<std::io::Result<zygote::Zygote>> },
}

/// The spawner thread, once started.
pub(super) enum SpawnerThread {
    NotYet(Box<Spawner>),
    Running(crossbeam_channel::Sender<Request>),
    /// It could not be started.
    Failed,
}

impl NativeBackend {
    /// Where spawn requests go, the thread started on first use.
    fn spawner(&self) -> Result<crossbeam_channel::Sender<Request>, Error> {
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

    /// Asks the spawner thread to do something, and waits for its answer.
    fn ask_spawner<T>(&self, request: impl FnOnce(crossbeam_channel::Sender<T>) -> Request) -> Result<T, Error> {
        let gone = || Error::Spawn("the spawner thread is gone".into());
        let (sender, answer) = crossbeam_channel::bounded(1);
        self.spawner()?.send(request(sender)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())
    }

    /// Starts a worker: forked by the zygote if there is one, asked from
    /// this thread (one request at a time, the zygote's lock held), else
    /// exec'd by the spawner thread.
    pub(super) fn spawn(&self, request: SpawnRequest) -> Result<Worker, Error> {
        let failed = |e: std::io::Error| Error::Spawn(format!("cannot start a worker ({}): {e}", self.exe.display()));
        let in_worker = INHERITED.get().is_some();
        let earlier = self.spawned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut zygote = self.zygote.lock().unwrap();
        // A worker's zygote takes a process slot; none free, none yet.
        let slot = match (&*zygote, in_worker) {
            (ZygoteState::NotYet, true) if earlier >= ZYGOTE_AFTER => self.slots.take().ok(),
            _ => None,
        };
        if matches!(*zygote, ZygoteState::NotYet) && (!in_worker || slot.is_some()) {
            *zygote = match self.ask_spawner(|started| Request::Zygote { started })? {
                Ok(started) => {
                    if let Some(mut slot) = slot {
                        slot.started(started.pid());
                        *WORKER_ZYGOTE.lock().unwrap() = Some((std::process::id(), started.pid(), slot));
                    }
                    ZygoteState::Running(started)
                }
                Err(_) => ZygoteState::Off,
            };
        }
        if let ZygoteState::Running(running) = &*zygote {
            // No stray search may take a worker for an orphan between its
            // birth and the moment it is known.
            let _births = orphans::BIRTHS.lock().unwrap();
            // A worker's children write on its own stdout and stderr, as
            // when it execs them (an orphan's output still reaches the root).
            match running.spawn(&request.start, &request.code, &request.channel.1, request.stdin.as_ref(), in_worker) {
                Ok(started) => {
                    orphans::KNOWN.lock().unwrap().insert(started.pid);
                    return Ok(started.with_channel(request.channel.0));
                }
                Err(zygote::Failed::Unsupported) => {}
                // A zygote that fails once is not trusted again.
                Err(zygote::Failed::Refused) => *zygote = ZygoteState::Off,
                // It may have forked the worker before it fell silent or
                // died. Stopped for good, it forks no more: a fork of it
                // nobody knows is that worker; without one, exec is safe.
                Err(zygote::Failed::Unanswered(mut started)) => {
                    let mut known = orphans::KNOWN.lock().unwrap();
                    if let ZygoteState::Running(silent) = std::mem::replace(&mut *zygote, ZygoteState::Off) {
                        known.remove(&silent.pid());
                        drop(silent);
                    }
                    match orphans::unknown_zygote_forks(&known)[..] {
                        [] => {}
                        [pid] => {
                            started.pid = pid;
                            known.insert(pid);
                            return Ok(started.with_channel(request.channel.0));
                        }
                        _ => return Err(failed(std::io::Error::other("the zygote forked workers nobody asked for"))),
                    }
                }
            }
        }
        drop(zygote);
        self.ask_spawner(|started| Request::Exec(Box::new(request), started))?.map_err(failed)
    }
}

/// A worker starts a zygote of its own at its second child, not before: for
/// one child the zygote's own start (an exec) costs what it saves, and
/// holds a process slot for nothing.
const ZYGOTE_AFTER: u32 = 1;

/// In a worker: its own pid, its zygote's, and the process slot the zygote
/// holds (a worker's zygote is a process of the run: it counts against the
/// run's cap). A forked child's copy names its parent's, not its to stop.
static WORKER_ZYGOTE: std::sync::Mutex<Option<(u32, u32, slots::Slot)>> = std::sync::Mutex::new(None);

/// Stops this worker's zygote, if it has one, reaps it and gives back its
/// slot: called as the worker ends, so that it leaves no zygote behind (one
/// that ends by a signal leaves it to the root, see `orphans.rs`). The
/// workers it forked are this worker's children, and live on.
pub(super) fn stop_zygote() {
    let Some((owner, pid, slot)) = WORKER_ZYGOTE.lock().unwrap().take() else { return };
    if owner != std::process::id() {
        // The parent's, before this process was forked from it.
        std::mem::forget(slot);
        return;
    }
    // SAFETY: `pid` is our own child, not reaped yet: it is still the zygote.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
    drop(slot);
}

impl NativeBackend {
    /// Makes room for one more process at the cap: a worker's zygote gives
    /// its slot back (for good: its children are exec'd from now on). True
    /// if a slot was freed.
    pub(super) fn yield_zygote(&self) -> bool {
        if INHERITED.get().is_none() {
            return false;
        }
        let mut zygote = self.zygote.lock().unwrap();
        match std::mem::replace(&mut *zygote, ZygoteState::Off) {
            ZygoteState::Running(running) => {
                // Stopped, and reaped, by its handle's drop.
                drop(running);
                let held = WORKER_ZYGOTE.lock().unwrap().take();
                match held {
                    Some((owner, _, slot)) if owner == std::process::id() => drop(slot),
                    Some((_, _, slot)) => std::mem::forget(slot),
                    None => {}
                }
                true
            }
            other => {
                *zygote = other;
                false
            }
        }
    }
}

/// The spawner thread's state: how it starts workers.
pub(super) struct Spawner {
    pub(super) exe: PathBuf,
    /// Read end of the lifeline, passed to every worker.
    pub(super) lifeline: OwnedFd,
    /// The process table, passed to every worker.
    pub(super) slots: OwnedFd,
    pub(super) settings: EngineSettings,
}

pub(super) enum ZygoteState {
    /// Started on first use.
    NotYet,
    Running(zygote::Zygote),
    /// Not used: after the zygote failed.
    Off,
}

impl Spawner {
    fn run(self) -> std::io::Result<crossbeam_channel::Sender<Request>> {
        let (requests, incoming) = crossbeam_channel::unbounded::<Request>();
        std::thread::Builder::new().name("host-spawner".into()).spawn(move || {
            for request in incoming {
                let inherited = [&self.lifeline, &self.slots];
                // No stray search may take a worker for an orphan between its
                // birth and the moment it is known.
                let births = orphans::BIRTHS.lock().unwrap();
                let know = |pid| {
                    orphans::KNOWN.lock().unwrap().insert(pid);
                };
                match request {
                    Request::Exec(request, started) => {
                        let SpawnRequest { start, code, channel, stdin } = *request;
                        let spawned = spawn_worker(&self.exe, inherited, &start, &code, channel, stdin);
                        if let Ok(worker) = &spawned {
                            know(worker.pid);
                        }
                        drop(births);
                        let _ = started.send(spawned);
                    }
                    Request::Zygote { started } => {
                        let zygote = zygote::Zygote::start(&self.exe, inherited, self.settings);
                        if let Ok(zygote) = &zygote {
                            know(zygote.pid());
                        }
                        drop(births);
                        let _ = started.send(zygote);
                    }
                }
            }
        })?;
        Ok(requests)
    }
}

/// The descriptor a worker reads as the guest's stdin: a copy of the host's
/// own, or a pipe a thread fills with the given bytes; `None` for none.
pub(super) fn stdin_fd(input: &Input) -> std::io::Result<Option<OwnedFd>> {
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

/// A started worker: its pid, our end of its channel, and of its stdout and
/// stderr pipes (none when the worker shares its parent's).
pub(super) struct Worker {
    pub(super) pid: u32,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    /// Taken by whoever serves the channel.
    pub(super) channel: Option<OwnedFd>,
}

/// Starts a worker by exec; `inherited` are the lifeline and the process
/// table. Its start goes first on its channel.
pub(super) fn spawn_worker(
    exe: &PathBuf,
    inherited: [&OwnedFd; 2],
    start: &Start,
    code: &code::Sealed,
    (ours, theirs): (OwnedFd, OwnedFd),
    stdin: Option<OwnedFd>,
) -> std::io::Result<Worker> {
    let [lifeline, slots] = inherited;
    let named = [theirs.as_fd(), lifeline.as_fd(), code.fd(), slots.as_fd()];
    let fds = named.map(|fd| fd.as_raw_fd().to_string()).join(",");
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
        .stdin(stdin.map_or_else(std::process::Stdio::null, std::process::Stdio::from))
        .stdout(output())
        .stderr(output());
    // Inheritable for this one spawn only: spawns are serialized on the
    // spawner thread, so no other child can catch them.
    named.iter().for_each(|fd| set_cloexec(fd, false));
    let child = spawn_retrying(&mut command);
    named.iter().for_each(|fd| set_cloexec(fd, true));
    drop(theirs);
    let mut child = child?;
    // Written before `start` returns: the parent may end right after it.
    let frame = protocol::control(protocol::kind::START, 0, start)?;
    let ours = std::os::unix::net::UnixStream::from(ours);
    match std::io::Write::write_all(&mut &ours, &frame) {
        // Already gone: it ended without its start, which its end will say.
        Err(error) if matches!(error.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {}
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(()) => {}
    }
    Ok(Worker {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        channel: Some(OwnedFd::from(ours)),
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
