//! How workers are started: one long-lived spawner thread takes start
//! requests one at a time and forks each worker from the zygote, or execs
//! the host binary in worker mode when there is no zygote (in a worker,
//! whose children must be its own, or after the zygote failed).
//!
//! One thread, because `PR_SET_PDEATHSIG` fires when the *thread* that
//! spawned a child ends, and because descriptors made inheritable for one
//! spawn must not leak into another spawned at the same moment.

use super::code;
use super::protocol::{self, EngineSettings, Start};
use super::zygote;
use super::{FDS_VAR, INHERITED, NativeBackend, STDIN_VAR, WORKER_ARG, orphans, pipe};
use crate::error::Error;
use crate::output::Input;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

/// A worker to start, and where to send it once started.
pub(super) struct SpawnRequest {
    pub(super) start: Start,
    pub(super) code: Arc<code::Sealed>,
    /// Where the worker finds the broker of shared objects.
    pub(super) broker: Option<(&'static str, PathBuf)>,
    /// The guest's stdin, if it has one.
    pub(super) stdin: Option<OwnedFd>,
    pub(super) started: crossbeam_channel::Sender<std::io::Result<Worker>>,
}

/// The spawner thread, once started.
pub(super) enum SpawnerThread {
    NotYet(Box<Spawner>),
    Running(crossbeam_channel::Sender<SpawnRequest>),
    /// It could not be started.
    Failed,
}

impl NativeBackend {
    /// Where spawn requests go, the thread started on first use.
    pub(super) fn spawner(&self) -> Result<crossbeam_channel::Sender<SpawnRequest>, Error> {
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
pub(super) struct Spawner {
    pub(super) exe: PathBuf,
    /// Read end of the lifeline, passed to every worker.
    pub(super) lifeline: OwnedFd,
    /// Write end of the orphanage, passed to every worker.
    pub(super) orphanage: OwnedFd,
    /// The process table, passed to every worker.
    pub(super) slots: OwnedFd,
    pub(super) settings: EngineSettings,
    pub(super) zygote: ZygoteState,
}

pub(super) enum ZygoteState {
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

/// A started worker and the parent's ends of its pipes (no stdout or
/// stderr when the worker shares its parent's).
pub(super) struct Worker {
    pub(super) pid: u32,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    pub(super) report: OwnedFd,
    /// A pool worker's stdin, on which its tasks go.
    pub(super) tasks: Option<std::process::ChildStdin>,
}

/// Starts a worker by exec; `inherited` are the lifeline, the orphanage and
/// the process table.
pub(super) fn spawn_worker(
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

