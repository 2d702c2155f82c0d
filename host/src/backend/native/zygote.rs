//! The zygote: a pre-started, single-threaded worker that forks workers.
//!
//! Starting a worker by exec costs a few milliseconds: loading the host
//! binary, building an engine and its linkers, mapping the program. The root
//! host therefore starts one zygote (the host binary as `__worker zygote`)
//! that does all of that once, stays single-threaded, and for every process
//! forks a child that already has it. The fork uses `clone3` with
//! `CLONE_PARENT`, so the new worker is the root host's own child (the root
//! waits for it, reaps it, and is its ppid), exactly as an exec'd worker is.
//!
//! A worker that starts more than one child starts a zygote of its own the same
//! way: the zygote is the worker's child, so its forks are the worker's
//! children. Its forks write on the worker's own stdout and stderr (shared,
//! as an exec'd child of a worker does); it holds a process slot of the run,
//! which it gives back when the worker needs it for a child at the cap; it
//! is stopped and reaped when the worker ends, and dies with the worker
//! (`PR_SET_PDEATHSIG`) when that is killed, the root then reaping it (its
//! name, `host-zygote`, tells it apart even as a zombie).
//!
//! The root talks to the zygote over a `SOCK_SEQPACKET` socket pair: one
//! message carries a [`Start`] frame and, as `SCM_RIGHTS`, the write ends of
//! the new worker's stdout and stderr pipes, its end of its channel
//! (`channel.rs`), the program's sealed code (mapped once per program,
//! shared by every fork) and the guest's stdin, if it has one; the answer
//! is one frame with the new pid or why there is none. A request too large
//! for one message, or any failure of the zygote, falls back to exec.

use super::code::Sealed;
use super::protocol::{self, EngineSettings, Start};
use super::slots::Slots;
use super::worker;
use super::{FDS_VAR, Inherited, Worker, pipe, set_cloexec, spawn_retrying};
use crate::output::Stdin;
use crate::program::Code;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

/// The second argument that makes a worker a zygote.
pub(crate) const ZYGOTE_ARG: &str = "zygote";

/// The third argument that has a zygote copy the host binary's code into
/// huge pages (`text.rs`): the root's, which forks many workers, and not a
/// worker's, for which the copy's cost (tens of milliseconds) is more than
/// its few forks save.
const COPY_CODE_ARG: &str = "copy-code";

/// The zygote's process name (its `comm`), which the workers it forks do
/// not keep.
pub(crate) const ZYGOTE_NAME: &std::ffi::CStr = c"host-zygote";

/// How long the root waits for the zygote's answer before going by exec.
const ANSWER_TIMEOUT_SECS: i64 = 10;

/// The largest request sent in one message; larger ones go by exec.
const MAX_REQUEST: usize = 60 << 10;

/// The root host's handle on its zygote.
pub(crate) struct Zygote {
    socket: OwnedFd,
    process: std::process::Child,
}

impl Zygote {
    /// Starts the zygote and hands it the engine settings; `inherited` are
    /// the lifeline and the process table its workers get.
    pub(crate) fn start(exe: &Path, inherited: [&OwnedFd; 2], settings: EngineSettings) -> std::io::Result<Zygote> {
        let (socket, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let [lifeline, slots] = inherited;
        let passed = [&theirs, lifeline, slots];
        let mut command = std::process::Command::new(exe);
        command
            .args([super::WORKER_ARG, ZYGOTE_ARG])
            .args(super::INHERITED.get().is_none().then_some(COPY_CODE_ARG))
            .env_clear()
            .env(FDS_VAR, passed.map(|fd| fd.as_raw_fd().to_string()).join(","))
            // Every symbol bound as it starts, once, rather than by each
            // worker as it first calls it.
            .env("LD_BIND_NOW", "1")
            .stdin(std::process::Stdio::null());
        passed.iter().for_each(|fd| set_cloexec(fd, false));
        let process = spawn_retrying(&mut command);
        passed.iter().for_each(|fd| set_cloexec(fd, true));
        // A zygote that stops answering is given up on, not waited for.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT_SECS, 0),
        )?;
        let zygote = Zygote { socket, process: process? };
        send(&zygote.socket, &protocol::encode_frame(&settings)?, &[])?;
        Ok(zygote)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// A new worker, forked by the zygote, running `start`, reading `stdin`,
    /// with `channel` for its end of its channel. With `shared_output` (the
    /// zygote of a worker) it writes on our own stdout and stderr, as an
    /// exec'd child of a worker does; else each on a pipe of its own, which
    /// the answer holds.
    pub(crate) fn spawn(
        &self,
        start: &Start,
        code: &Sealed,
        channel: &OwnedFd,
        stdin: Option<&OwnedFd>,
        shared_output: bool,
    ) -> Result<Started, Failed> {
        let request = protocol::encode_frame(start).map_err(|_| Failed::Refused)?;
        if request.len() > MAX_REQUEST {
            return Err(Failed::Unsupported);
        }
        let (stdout, stderr, theirs_out) = if shared_output {
            (None, None, None)
        } else {
            let (stdout, stdout_theirs) = pipe().map_err(|_| Failed::Refused)?;
            let (stderr, stderr_theirs) = pipe().map_err(|_| Failed::Refused)?;
            (Some(stdout), Some(stderr), Some((stdout_theirs, stderr_theirs)))
        };
        let (out, err) = match &theirs_out {
            Some((stdout, stderr)) => (stdout.as_raw_fd(), stderr.as_raw_fd()),
            // Sent as they are: the message carries copies.
            None => (1, 2),
        };
        let mut theirs = vec![out, err, channel.as_raw_fd(), code.fd().as_raw_fd()];
        theirs.extend(stdin.map(|fd| fd.as_raw_fd()));
        send(&self.socket, &request, &theirs).map_err(|_| Failed::Refused)?;
        drop(theirs_out);
        let Ok((answer, _)) = receive(&self.socket) else {
            return Err(Failed::Unanswered(Box::new(Started { pid: 0, stdout, stderr })));
        };
        // An answer not in our words is not from a zygote of ours: it forks nothing.
        let pid = protocol::decode_frame::<Result<u32, String>>(&answer)
            .map_err(|_| Failed::Refused)?
            .map_err(|_| Failed::Refused)?;
        Ok(Started { pid, stdout, stderr })
    }
}

/// A worker the zygote forked (or may have), and our ends of its output pipes.
pub(crate) struct Started {
    pub(crate) pid: u32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Started {
    /// The worker, with our end of its channel.
    pub(crate) fn with_channel(self, channel: OwnedFd) -> Worker {
        Worker { pid: self.pid, stdout: self.stdout, stderr: self.stderr, channel: Some(channel) }
    }
}

/// Why the zygote did not start a worker, and so whether exec may.
pub(crate) enum Failed {
    /// It cannot start this kind of worker (exec it instead).
    Unsupported,
    /// It did not start the worker, and said so (or was never asked, or is
    /// no zygote of ours).
    Refused,
    /// It was asked and did not answer in time (or died): it may have forked
    /// the worker all the same. The pipes the worker would have (no pid).
    Unanswered(Box<Started>),
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The workers it forked are our children, not its: they live on.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The zygote's side: build once, then fork a worker per request until the
/// root host goes away.
pub(crate) fn serve() -> Result<i32, String> {
    let [socket, lifeline, slots] =
        worker::inherit().ok_or("zygote mode is for the host's own use: its descriptors are missing")?;
    // It dies with the host (a worker, say) that started it, however that
    // ends, and goes by a name that tells it apart even as a zombie (which
    // the root, a worker's orphan's adopter, then reaps: `orphans.rs`).
    // SAFETY: prctl with these options reads and writes nothing of ours.
    let original = unsafe {
        let mut name = [0u8; 16];
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, ZYGOTE_NAME.as_ptr());
        name
    };
    // Mapped once here: every fork has the mapping.
    let table = Arc::new(Slots::inherit(&slots).map_err(|e| format!("cannot map the process table: {e}"))?);
    drop(slots);
    let (settings, _) = receive(&socket).map_err(|e| format!("no engine settings: {e}"))?;
    let settings: EngineSettings = protocol::decode_frame(&settings)?;
    let engines =
        worker::builder(settings).make_engines().map_err(|e| format!("cannot build the zygote's engine: {e:#}"))?;
    // Each fork takes this copy for its own (never cloned: a clone of the
    // linkers costs more than the rest of a worker's start).
    let mut engines = Some(engines);
    // Looked up once here, not by every worker.
    super::current_exe().map_err(|e| format!("cannot find the host binary: {e}"))?;
    // The engine's per-thread state (its signal stack) made here, once.
    wasmtime::Engine::tls_eager_initialize();
    // WASI's random generators probe the CPU's features on first use (each
    // probe a `cpuid`, which a virtual machine traps): probed here, once.
    drop(wasmtime_wasi::WasiCtxBuilder::new());
    let mut programs: HashMap<(u64, u64), (Code, Arc<Sealed>)> = HashMap::new();
    let copy_code = std::env::args_os().nth(3).is_some_and(|arg| arg == COPY_CODE_ARG);
    let mut requests = 0u32;
    // One buffer for every request: after a fork each page the zygote
    // writes is copied first, and a fresh one would be zeroed whole.
    let mut buffer = vec![0u8; MAX_REQUEST + 64];
    loop {
        let (length, fds) = match receive_into(&socket, &mut buffer) {
            Ok((0, _)) => return Ok(0),
            Ok(message) => message,
            Err(e) => return Err(format!("lost the root host: {e}")),
        };
        requests += 1;
        if copy_code && requests == 2 {
            // Before the second fork, not the first: a run of one process
            // (`host run x.wasm`) neither waits for the copy nor shares its
            // two cores with it. Without it, forks are slower, not wrong.
            let _ = super::text::anonymize();
        }
        let request = &buffer[..length];
        let inherited = (&lifeline, &table);
        let mut passed = Vec::new();
        let answer = fork_worker(
            request,
            fds,
            &mut passed,
            &socket,
            inherited,
            settings,
            &mut engines,
            &mut programs,
            &original,
        );
        send(&socket, &protocol::encode_frame(&answer).map_err(|e| e.to_string())?, &[])
            .map_err(|e| format!("lost the root host: {e}"))?;
        // Our copies of the new worker's descriptors, closed once it is told.
        drop(passed);
    }
}

/// Forks the worker one request asks for; the new pid, or why not. The
/// pipes and stdin the request passed, which the fork has its own copies of,
/// are left in `passed`.
///
/// The request is decoded by the fork, not by the zygote, once its program
/// is known: after a fork every page the zygote writes is copied (and the
/// fork's share of it freed later), and a decoded [`Start`] is a dozen
/// allocations spread over several pages of its heap. The zygote decodes
/// only the first request of each program, whose code it loads.
#[allow(clippy::too_many_arguments)]
fn fork_worker(
    request: &[u8],
    fds: Vec<OwnedFd>,
    passed: &mut Vec<OwnedFd>,
    socket: &OwnedFd,
    inherited: (&OwnedFd, &Arc<Slots>),
    settings: EngineSettings,
    engines: &mut Option<crate::runtime::Engines>,
    programs: &mut HashMap<(u64, u64), (Code, Arc<Sealed>)>,
    name: &[u8; 16],
) -> Result<u32, String> {
    let mut fds = fds.into_iter();
    let (Some(stdout), Some(stderr), Some(channel), Some(code)) = (fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return Err("expected four or five descriptors".into());
    };
    let stdin = fds.next();
    if fds.next().is_some() {
        return Err("expected four or five descriptors".into());
    }
    let key = super::code::identity(&code).map_err(|e| format!("cannot look at the compiled code: {e}"))?;
    // Cloned by the fork alone: a count the zygote wrote would be a page
    // it copies (its forks share every page it has).
    let (code, sealed) = match programs.entry(key) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(new) => {
            // Mapped here, before forking, so every worker shares the pages.
            let start = decode_start(request, settings)?;
            let loaded = super::code::load(engines.as_ref().ok_or("the zygote has no engine")?, code, &start)
                .map_err(|e| e.to_string())?;
            new.insert(loaded)
        }
    };
    // Opened here, where `/proc/self` is known, and the new worker's alone
    // once we close our copy; without it, the worker opens its own.
    let (lifeline, table) = inherited;
    let watch = super::ticker::own_description(lifeline).ok();
    match fork_sibling().map_err(|e| format!("cannot fork a worker: {e}"))? {
        0 => {
            // The new worker: its own name, stdio to its pipes, then run and exit.
            // SAFETY: `name` is NUL-terminated (PR_GET_NAME wrote it).
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            let status = (|| {
                dup_onto(&stdout, 1)?;
                dup_onto(&stderr, 2)?;
                drop((stdout, stderr));
                // Checked as the zygote checks a program's first request
                // (a failure is this worker's, told on its stderr).
                let start = decode_start(request, settings)?;
                let input = match stdin {
                    Some(stdin) => {
                        dup_onto(&stdin, 0)?;
                        Stdin::inherit()
                    }
                    None => Stdin::null(),
                };
                let _ = nix::unistd::close(socket.as_raw_fd());
                let inherited = Inherited {
                    lifeline: lifeline.try_clone().map_err(|e| e.to_string())?,
                    watch: std::sync::Mutex::new(watch),
                    slots: table.clone(),
                    channel: Arc::new(super::broker::Client::new(channel)),
                };
                // This process's copy of the zygote's engine: its own now.
                let engines = engines.take().ok_or("the zygote has no engine")?;
                worker::run(start, inherited, engines, code.clone(), sealed.clone(), input)
            })();
            let status = status.unwrap_or_else(|message| {
                eprintln!("error: {message}");
                crate::ExitCode::FAILURE.code()
            });
            std::process::exit(status)
        }
        pid => {
            passed.extend([stdout, stderr, channel]);
            passed.extend(stdin);
            drop(watch);
            Ok(pid)
        }
    }
}

/// The start a request asks for, if it is for the zygote's engine.
fn decode_start(request: &[u8], settings: EngineSettings) -> Result<Start, String> {
    let start: Start = protocol::decode_frame(request)?;
    if start.engine != settings {
        return Err("a worker for another engine than the zygote's".into());
    }
    Ok(start)
}

/// Forks this (single-threaded) process into a sibling: a child of our
/// parent. Returns 0 in the child, the child's pid in the parent.
fn fork_sibling() -> std::io::Result<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    // With CLONE_PARENT the kernel takes the exit signal from ours (SIGCHLD)
    // and refuses any other.
    let mut args = CloneArgs { flags: libc::CLONE_PARENT as u64, ..CloneArgs::default() };
    // SAFETY: the zygote has one thread, so the child's copy of its memory
    // holds no lock another thread was in; with no stack given, the child
    // runs on a copy of ours, as after fork(2).
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, size_of::<CloneArgs>()) };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        pid => Ok(pid as u32),
    }
}

fn dup_onto(fd: &OwnedFd, target: RawFd) -> Result<(), String> {
    // SAFETY: `target` is one of our standard streams, replaced atomically.
    match unsafe { libc::dup2(fd.as_raw_fd(), target) } {
        -1 => Err(format!("cannot set up stdio: {}", std::io::Error::last_os_error())),
        _ => Ok(()),
    }
}

fn send(socket: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    // A worker's guest thread takes its CPU timer's ticks (`ticker.rs`).
    retry_interrupted(|| sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(bytes)], control, MsgFlags::empty(), None))?;
    Ok(())
}

/// Calls `call` again while a signal interrupts it: a signal handled during
/// a wait with a timeout (the socket's) is not restarted by the kernel.
fn retry_interrupted<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => continue,
            result => return result,
        }
    }
}

/// The largest message [`receive`] takes: an answer or the engine
/// settings, a few bytes each.
const MAX_SMALL: usize = 4 << 10;

/// One small message and the descriptors it carried; empty at end-of-file.
fn receive(socket: &OwnedFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    // Not a request's size: zeroed for every answer, that cost the root
    // host a fresh 60 KiB at each start.
    let mut buffer = vec![0u8; MAX_SMALL];
    let (length, fds) = receive_into(socket, &mut buffer)?;
    buffer.truncate(length);
    Ok((buffer, fds))
}

/// One message into `buffer`: its length (0 at end-of-file) and the
/// descriptors it carried.
fn receive_into(socket: &OwnedFd, buffer: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let (length, fds, truncated) = retry_interrupted(|| receive_once(socket, buffer))?;
    if truncated {
        return Err(std::io::Error::other("message too large"));
    }
    Ok((length, fds))
}

/// One `recvmsg`: the message's length, its descriptors, and whether it
/// was cut short.
fn receive_once(socket: &OwnedFd, buffer: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut space = nix::cmsg_space!([RawFd; 5]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just gave us these descriptors.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((message.bytes, fds, message.flags.contains(MsgFlags::MSG_TRUNC)))
}
