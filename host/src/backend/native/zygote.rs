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
//! message carries a request ([`Ask`]: a [`Start`] frame) and, as
//! `SCM_RIGHTS`, the write ends of the new worker's stdout and stderr
//! pipes, its end of its channel (`channel.rs`), the program's sealed code
//! (mapped once per program, shared by every fork) and the guest's stdin,
//! if it has one; the answer is one frame with the new pid or why there is
//! none. From its second worker on, the root's zygote also keeps spares,
//! workers forked ahead that wait for their start ([`Spares`]): the root
//! then sends the same message to a spare, and the fork is off the path of
//! the start. A request too large for one message, or any failure of the
//! zygote, falls back to exec.

use super::code::Sealed;
use super::protocol::{self, EngineSettings, Start};
use super::{FDS_VAR, Worker, pipe, set_cloexec, spawn_retrying};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

// The zygote's own side: what it does for each request.
mod serve;
pub(crate) use serve::serve;

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
    /// The root's zygote keeps spares (see [`Spares`]); a worker's does not.
    spares: Option<Spares>,
}

/// How many spares the root's zygote keeps forked ahead.
const SPARES: u32 = 2;

/// The root's zygote forks its workers ahead of their start: each spare,
/// forked (`CLONE_PARENT`: the root's child, as any worker) and announced
/// with its pid and one end of a socket pair, waits on that socket for the
/// request the zygote would have been sent; the root sends it there itself
/// and has its pid at once, and the zygote forks the next spare while the
/// new worker runs. Spares are kept from the second start on, so a run of
/// one process forks none. A spare is named `host-spare` until it is
/// started, so that nobody adopts it for an orphan (`orphans.rs`); it exits
/// when its socket ends (the root gone, or its handle dropped), and the
/// handle's drop kills and reaps those it holds.
struct Spares {
    ready: VecDeque<(u32, OwnedFd)>,
    /// Asked for and not yet announced.
    coming: u32,
    /// Workers started so far.
    started: u32,
}

/// What the root asks of its zygote: that it fork a worker for `start`
/// (passing five or four descriptors) and then `spares` spares with that
/// program mapped; or, without `fork`, the spares alone (passing the
/// program's code alone).
#[derive(Serialize, Deserialize)]
struct Ask<S> {
    start: S,
    fork: bool,
    spares: u32,
}

/// What the zygote says: the pid of the worker it was asked to fork (or why
/// there is none), or a spare it forked (its socket as `SCM_RIGHTS`).
#[derive(Serialize, Deserialize)]
enum Said {
    Forked(Result<u32, String>),
    Spare(Result<u32, String>),
}

/// A spare's name until it is started.
pub(crate) const SPARE_NAME: &std::ffi::CStr = c"host-spare";

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
        let spares = super::INHERITED.get().is_none().then(|| Spares { ready: VecDeque::new(), coming: 0, started: 0 });
        let zygote = Zygote { socket, process: process?, spares };
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
        &mut self,
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
        if let Some((pid, spare)) = self.next_spare()? {
            // The spare is ours to reap: until it has its start, it is no
            // worker, and nobody else waits for it.
            let sent = send(&spare, &request, &theirs);
            if sent.is_err() {
                reap_spare(pid);
                return Err(Failed::Refused);
            }
            self.ask_spare(start, code);
            return Ok(Started { pid, stdout, stderr });
        }
        let spares = self.spares.as_ref().map_or(0, |spares| if spares.started > 0 { SPARES } else { 0 });
        let ask = protocol::encode_frame(&Ask { start, fork: true, spares }).map_err(|_| Failed::Refused)?;
        send(&self.socket, &ask, &theirs).map_err(|_| Failed::Refused)?;
        drop(theirs_out);
        let Ok(Said::Forked(answer)) = self.hear() else {
            return Err(Failed::Unanswered(Box::new(Started { pid: 0, stdout, stderr })));
        };
        // An answer not in our words is not from a zygote of ours: it forks nothing.
        let pid = answer.map_err(|_| Failed::Refused)?;
        if let Some(kept) = &mut self.spares {
            kept.started += 1;
            kept.coming += spares;
        }
        Ok(Started { pid, stdout, stderr })
    }

    /// Asks the zygote for one more spare, with the program of `start`
    /// mapped; if it cannot be asked, none comes, and the next start asks
    /// it for a worker, which fails as it would have.
    fn ask_spare(&mut self, start: &Start, code: &Sealed) {
        let Ok(ask) = protocol::encode_frame(&Ask { start, fork: false, spares: 1 }) else { return };
        if send(&self.socket, &ask, &[code.fd().as_raw_fd()]).is_ok()
            && let Some(kept) = &mut self.spares
        {
            kept.coming += 1;
        }
    }

    /// A spare to start, waiting for one the zygote was asked for; `None`
    /// if it keeps none, or none is coming.
    fn next_spare(&mut self) -> Result<Option<(u32, OwnedFd)>, Failed> {
        loop {
            let Some(kept) = &mut self.spares else { return Ok(None) };
            if let Some(spare) = kept.ready.pop_front() {
                kept.started += 1;
                return Ok(Some(spare));
            }
            if kept.coming == 0 {
                return Ok(None);
            }
            // Silent, or out of turn: it is not trusted again.
            let Ok(Said::Spare(_)) = self.hear() else { return Err(Failed::Refused) };
        }
    }

    /// The zygote's next word; each spare it announces is kept.
    fn hear(&mut self) -> std::io::Result<Said> {
        let (said, fds) = receive(&self.socket)?;
        self.keep_spare(said, fds)
    }

    /// Keeps the spare `said` announces, if it does; what it says.
    fn keep_spare(&mut self, said: Vec<u8>, fds: Vec<OwnedFd>) -> std::io::Result<Said> {
        let said: Said = protocol::decode_frame(&said).map_err(std::io::Error::other)?;
        if let (Said::Spare(spare), Some(kept)) = (&said, &mut self.spares) {
            kept.coming = kept.coming.saturating_sub(1);
            if let (Ok(pid), Some(socket)) = (spare, fds.into_iter().next()) {
                kept.ready.push_back((*pid, socket));
            }
        }
        Ok(said)
    }
}

/// Kills and reaps the spare `pid`, our child that has not been started.
fn reap_spare(pid: u32) {
    // SAFETY: `pid` is our own child, not reaped yet: it is still the spare.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
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
        // Its spares are ours too, and die with it: those it announced and
        // we did not hear yet included.
        while let Ok((said, fds)) = receive_now(&self.socket) {
            if said.is_empty() || self.keep_spare(said, fds).is_err() {
                break;
            }
        }
        if let Some(kept) = &mut self.spares {
            kept.ready.drain(..).for_each(|(pid, socket)| {
                drop(socket);
                reap_spare(pid);
            });
        }
    }
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
    receive_small(socket, MsgFlags::empty())
}

/// [`receive`], but what is there already: an error if nothing is.
fn receive_now(socket: &OwnedFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    receive_small(socket, MsgFlags::MSG_DONTWAIT)
}

fn receive_small(socket: &OwnedFd, flags: MsgFlags) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    // Not a request's size: zeroed for every answer, that cost the root
    // host a fresh 60 KiB at each start.
    let mut buffer = vec![0u8; MAX_SMALL];
    let (length, fds, truncated) = retry_interrupted(|| receive_once(socket, &mut buffer, flags))?;
    if truncated {
        return Err(std::io::Error::other("message too large"));
    }
    buffer.truncate(length);
    Ok((buffer, fds))
}

/// One message into `buffer`: its length (0 at end-of-file) and the
/// descriptors it carried.
fn receive_into(socket: &OwnedFd, buffer: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let (length, fds, truncated) = retry_interrupted(|| receive_once(socket, buffer, MsgFlags::empty()))?;
    if truncated {
        return Err(std::io::Error::other("message too large"));
    }
    Ok((length, fds))
}

/// One `recvmsg`: the message's length, its descriptors, and whether it
/// was cut short.
fn receive_once(socket: &OwnedFd, buffer: &mut [u8], flags: MsgFlags) -> nix::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut space = nix::cmsg_space!([RawFd; 5]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags | MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just gave us these descriptors.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((message.bytes, fds, message.flags.contains(MsgFlags::MSG_TRUNC)))
}
