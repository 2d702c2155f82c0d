//! `fork` on the native backend: a real OS fork of the worker.
//!
//! A guest's whole state (its linear memory, globals, tables, and the call
//! stack, which lives on a wasmtime fiber stack in the worker's memory) is
//! in its worker's address space, so `fork(2)` of the worker copies it, and
//! the child continues from the same host call with everything its parent
//! had. What the kernel does not copy, or copies but must not be shared, is
//! set right on each side:
//!
//! - **Threads.** Only the forking thread survives in the child. A worker
//!   drives its guest on its main thread (a current-thread tokio runtime);
//!   its helpers are the epoch ticker (which watches the lifeline), the spawner of
//!   its own children and the writer threads of its stdout and stderr. None
//!   holds a lock while idle, and the writers are made idle first (the
//!   output queued so far is written out before the fork, so none is
//!   printed twice; the guest's own buffer is flushed by the SDK before it
//!   calls the host). `fork` goes through glibc, whose fork handlers keep
//!   the allocator's locks sound. The child starts each helper anew.
//! - **The reactor.** The child's copy of the runtime still points at its
//!   parent's epoll instance (a descriptor shares the kernel object). The
//!   child makes its own: a fresh epoll with the registrations the child
//!   needs (read from `/proc/self/fdinfo`), put in place at the same
//!   descriptor number, and a fresh eventfd for its runtime's wake-ups. The
//!   pipes and pidfds of its parent's children are left out: those children
//!   are not the child's, and it must not take their reports.
//! - **Its place in the run.** The child is a new process of the tree: the
//!   parent takes a slot of the run's [`Slots`](super::slots::Slots) for it
//!   first (past the cap the fork is refused), and a new channel
//!   (`channel.rs`): the child takes one end in place of its parent's
//!   channel (which the root knows as its parent's: its requests,
//!   leases and reports are the parent's), the parent hands the root the
//!   other, so that the child's end reaches its parent, which waits for it,
//!   reaps it and gives the slot back, as for any child
//!   ([`supervise`](super::supervise)). The child's node becomes its own
//!   (new pid, ppid the forking worker, `Process-N` by its parent's count);
//!   its parent's children are not its own. Its deadline is its parent's (the same instant) and so
//!   are its limits.
//! - **Blocking work.** The runtime's blocking pool (WASI's file
//!   operations) would count in the child a thread the fork did not copy:
//!   a worker's blocking threads go after 10 ms idle, and the fork waits
//!   until none is left.
//!
//! Its output lines, where output is labelled (`host run --count N`), carry
//! its own label from the fork on, as a spawned child's do
//! (`Process-2/Process-1: `); an unfinished labelled line of its parent's
//! is ended at the fork, so that the child's lines, on the same pipe to the
//! root, start lines of their own.
//!
//! Not carried over: a guest that reads its stdin (inherited from the
//! host) does so through wasmtime-wasi's reader thread, which the child
//! lacks (a forked child reading a stdin its parent had read from is not
//! supported, nor tested); a pool worker does not fork.

use super::{
    INHERITED, NativeBackend, NativeControl, Spawner, SpawnerThread, Worker, ZygoteState, channel, open_pidfd,
};
use crate::backend::Forked;
use crate::command::Launch;
use crate::error::Error;
use crate::process::Node;
use crate::runtime::HostInner;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::unistd::ForkResult;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// How long the fork waits for output queued so far to be written.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(5);

/// Forks the worker running `node`: see the module's documentation.
pub(super) fn fork(
    backend: &NativeBackend,
    host: &Arc<HostInner>,
    node: &Arc<Node>,
    launch: &Launch,
) -> Result<Forked, Error> {
    let Some(inherited) = INHERITED.get() else {
        return Err(Error::Unsupported("only a process running in a native worker can fork".into()));
    };
    if matches!(launch.work, crate::work::Work::Serve(_)) {
        return Err(Error::Unsupported("a pool worker cannot fork: its tasks come from the pool".into()));
    }
    let parent_pid = node.pid().unwrap_or_default();
    let parent_name = node.name();
    let child = node.create_child(Launch {
        shares_output: true,
        label: None,
        parent_label: launch.label.clone(),
        ticket: None,
        ..launch.clone()
    });
    let mut in_child = None;
    child.start_with(host, |launch| {
        quiesce_blocking_pool()?;
        let mut slot = backend.slots.take()?;
        let (ours, theirs) = channel::pair().map_err(|e| Error::Spawn(format!("cannot make a channel: {e}")))?;
        // Nothing queued may be written by both sides, and the writer
        // threads must hold no lock as the fork copies them.
        crate::output::flush_output(OUTPUT_PATIENCE);
        // SAFETY: the other threads of a worker hold no lock that the child
        // needs (see the module's documentation); glibc's fork makes the
        // allocator safe to use in the child.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(Error::Spawn(format!("cannot fork: {e}"))),
            Ok(ForkResult::Child) => {
                in_child = Some(Box::new(launch.clone()));
                // The slot is the parent's to give back, once it reaps us.
                std::mem::forget(slot);
                drop(ours);
                // Before the reactor is remade: its parent's channel is no
                // longer ours to watch, and our own is registered afresh
                // when first used.
                let own = theirs.as_raw_fd();
                inherited.channel.rebind(theirs);
                let set_up = (|| -> Result<(), String> {
                    let keep = [inherited.lifeline.as_raw_fd()];
                    own_reactor(&keep, own).map_err(|e| format!("cannot make the child's reactor: {e}"))?;
                    crate::instance::reseed_random().map_err(|e| format!("cannot reseed its random generator: {e}"))?;
                    restart_helpers(backend, host, inherited)
                })();
                if let Err(why) = set_up {
                    eprintln!("error: the forked child cannot run: {why}");
                    // SAFETY: ends this process at once, running nothing of the parent's.
                    unsafe { libc::_exit(crate::ExitCode::FAILURE.code()) };
                }
                // What the child's node holds in the parent's copy is never used here.
                Ok(Arc::new(NotHere) as Arc<dyn crate::backend::Control>)
            }
            Ok(ForkResult::Parent { child: pid }) => {
                drop(theirs);
                let pid = pid.as_raw() as u32;
                let watched = open_pidfd(pid).map_err(|e| e.to_string()).and_then(|fd| {
                    let pidfd = Arc::new(fd);
                    let reports = inherited.channel.adopt(pid, ours)?;
                    Ok((pidfd, reports))
                });
                let (pidfd, reports) = watched.map_err(|e| {
                    // Not reaped yet, so the pid is still the child's.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    Error::Spawn(format!("cannot watch forked child {pid}: {e}"))
                })?;
                slot.started(pid);
                child.set_pid(pid);
                super::orphans::KNOWN.lock().unwrap().insert(pid);
                let worker = Worker { pid, stdout: None, stderr: None, channel: None };
                let orders = channel::Orders::Relayed(inherited.channel.clone(), pid);
                let channel = channel::Supervised { reports, orders };
                let supervised = super::supervise(
                    host.clone(),
                    child.clone(),
                    launch.clone(),
                    (worker, channel),
                    pidfd.clone(),
                    slot,
                );
                host.runtime.spawn(supervised);
                Ok(Arc::new(NativeControl { pidfd }) as Arc<dyn crate::backend::Control>)
            }
        }
    })?;
    let Some(own_launch) = in_child else {
        return Ok(Forked::Parent(child));
    };
    node.become_forked(std::process::id(), parent_pid, child.name());
    backend.parent.lock().unwrap().forked(parent_pid, parent_name);
    if let Some(journal) = &host.journal {
        // Its parent reports those records itself.
        journal.clear();
    }
    Ok(Forked::Child(own_launch))
}

/// How long a fork waits for the runtime's blocking threads to be gone.
const BLOCKING_PATIENCE: Duration = Duration::from_secs(2);

/// Waits until the runtime's blocking pool has no thread (an idle one goes
/// after a few milliseconds): the child's copy of the pool would count a
/// thread the fork did not copy as idle, and hand it work nobody does.
fn quiesce_blocking_pool() -> Result<(), Error> {
    let start = std::time::Instant::now();
    loop {
        let busy = std::fs::read_dir("/proc/self/task")
            .map_err(|e| Error::Spawn(format!("cannot list this worker's threads: {e}")))?
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .any(|name| name.trim_end() == crate::runtime::BLOCKING_THREAD);
        if !busy {
            return Ok(());
        }
        if start.elapsed() > BLOCKING_PATIENCE {
            return Err(Error::Spawn("cannot fork while a blocking operation is still running".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child's copy of its own node in its parent's tree: never signalled
/// (the child's node is closed by [`Node::become_forked`]).
struct NotHere;

impl crate::backend::Control for NotHere {
    fn signal(&self, _signal: crate::exit::Signal) {}
}

/// Starts anew, in the child, the helper threads the fork did not copy, and
/// drops what only the parent may use.
fn restart_helpers(backend: &NativeBackend, host: &Arc<HostInner>, inherited: &super::Inherited) -> Result<(), String> {
    // The epoch's ticker, which watches the lifeline too.
    crate::backend::Backend::tick_epochs(backend, &host.engine).map_err(|e| format!("no epoch ticker: {e}"))?;
    let spawner = Spawner {
        exe: backend.exe.clone(),
        lifeline: inherited.lifeline.try_clone().map_err(|e| e.to_string())?,
        slots: backend.slots.fd().try_clone().map_err(|e| e.to_string())?,
        settings: backend.settings,
    };
    // The parent's spawner thread did not survive the fork: this child
    // starts its own on first use. The old sender is forgotten, not
    // dropped (its thread is gone; dropping it would wake nobody).
    let old = std::mem::replace(&mut *backend.spawner.lock().unwrap(), SpawnerThread::NotYet(Box::new(spawner)));
    std::mem::forget(old);
    // Nor is the parent's zygote this child's: forgotten, not dropped
    // (dropping it would kill it), and the child starts its own.
    let old = std::mem::replace(&mut *backend.zygote.lock().unwrap(), ZygoteState::NotYet);
    std::mem::forget(old);
    crate::output::after_fork();
    host.sync.after_fork();
    Ok(())
}

/// Gives this (forked) process an epoll instance of its own in place of the
/// one it shares with its parent, registering again what it needs: its
/// runtime's wake-up eventfd (a new one) and its sockets, but its own
/// channel `own`, which is not registered yet. Pipes and pidfds
/// (its parent's children's) are left out, and each pipe the parent's
/// runtime watched (but those in `keep`) becomes `/dev/null` here: the
/// child's copies of its parent's tasks may still be polled, and one that
/// read its parent's pipes would steal the parent's bytes.
fn own_reactor(keep: &[RawFd], own: RawFd) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    // One epoll instance may be open under several numbers (a runtime
    // keeps a copy for its registry): one fresh instance for each, put in
    // place under all of its numbers.
    let mut instances: Vec<(u64, Vec<RawFd>)> = Vec::new();
    for epfd in descriptors_of("anon_inode:[eventpoll]")? {
        let inode = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(epfd) })?.st_ino;
        match instances.iter_mut().find(|(known, _)| *known == inode) {
            Some((_, fds)) => fds.push(epfd),
            None => instances.push((inode, vec![epfd])),
        }
    }
    let mut replaced = Vec::new();
    for (_, fds) in instances {
        let fresh = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (fd, events, data) in registrations(fds[0])? {
            // A registration outlives its descriptor while a copy of it is
            // open (in another process, say): one of ours no longer.
            let Ok(kind) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
                continue;
            };
            let kind = kind.to_string_lossy();
            if fd == own {
                // Our channel, under a number the parent's registration
                // of another (since closed) descriptor may still name.
                continue;
            }
            if kind == "anon_inode:[eventfd]" {
                if !replaced.contains(&fd) {
                    // Our own eventfd, so that our wake-ups are not our parent's.
                    let own = nix::sys::eventfd::EventFd::from_flags(
                        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
                    )?;
                    // SAFETY: `fd` belongs to the runtime's waker, which keeps
                    // it; it is replaced in one step by one of the same kind.
                    let _ = unsafe { nix::unistd::dup3_raw(&own, fd, nix::fcntl::OFlag::O_CLOEXEC) }?.into_raw_fd();
                    replaced.push(fd);
                }
            } else if !kind.starts_with("socket:") {
                if kind.starts_with("pipe:") && fd > 2 && !keep.contains(&fd) {
                    // SAFETY: `fd` is open; it is replaced in one step, and
                    // whatever holds it reads end-of-file from now on.
                    let _ = unsafe { nix::unistd::dup3_raw(&null, fd, nix::fcntl::OFlag::O_CLOEXEC) }?.into_raw_fd();
                }
                continue;
            }
            // SAFETY: `fd` is open for the duration of this call.
            let target = unsafe { BorrowedFd::borrow_raw(fd) };
            fresh.add(target, EpollEvent::new(EpollFlags::from_bits_retain(events as _), data))?;
        }
        for epfd in fds {
            // SAFETY: `epfd` is the runtime's epoll descriptor, which it
            // keeps; it is replaced in one step by our fresh instance.
            let _ = unsafe { nix::unistd::dup3_raw(&fresh.0, epfd, nix::fcntl::OFlag::O_CLOEXEC) }?.into_raw_fd();
        }
    }
    Ok(())
}

/// The descriptors of this process whose link in `/proc/self/fd` is `link`.
fn descriptors_of(link: &str) -> std::io::Result<Vec<RawFd>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<RawFd>().ok()) else {
            continue;
        };
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == link) {
            found.push(fd);
        }
    }
    Ok(found)
}

/// What the epoll instance `epfd` watches: each descriptor, its events and
/// its data, as the kernel lists them in `/proc/self/fdinfo`.
fn registrations(epfd: RawFd) -> std::io::Result<Vec<(RawFd, u32, u64)>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}"))?;
    let bad = || std::io::Error::other(format!("unexpected fdinfo of epoll descriptor {epfd}"));
    let mut found = Vec::new();
    for line in info.lines().filter(|line| line.starts_with("tfd:")) {
        // "tfd: %8d events: %8x data: %16llx  pos:... ino:... sdev:..."
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).copied();
        let fd = field("tfd:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let events = field("events:").and_then(|v| u32::from_str_radix(v, 16).ok()).ok_or_else(bad)?;
        let data = field("data:").and_then(|v| u64::from_str_radix(v, 16).ok()).ok_or_else(bad)?;
        found.push((fd, events, data));
    }
    Ok(found)
}
