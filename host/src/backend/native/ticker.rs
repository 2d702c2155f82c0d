//! A worker's epoch ticks and its watch on the lifeline, with no thread.
//!
//! A worker runs one guest, on the thread that builds its host. That guest
//! needs the epoch ticked only while it computes (so that it yields to its
//! runtime's other tasks, and to its deadline), so the tick is a timer on
//! that thread's CPU clock, not the wall clock: a time slice of CPU used is
//! one tick, and a guest that sleeps or waits costs no wake-up at all (a
//! thousand sleeping workers ticking every 10 ms of wall time kept two cores
//! busy). The timer signals the guest thread itself (`SIGVTALRM`), whose
//! handler only bumps the epoch (one atomic add); it is installed with
//! `SA_RESTART`, and what the guest thread calls that a signal can still
//! interrupt retries (`EINTR`: tokio's poll, the zygote's socket).
//!
//! The lifeline's end-of-file (the root host gone, however it died) is a
//! `SIGIO` to the worker, whose default action ends it: the worker opens the
//! pipe anew for a file description of its own (the one it inherited is
//! every worker's, and a description has one owner to signal), and asks for
//! a signal when the pipe's state changes, which for a pipe the root never
//! writes on is only its last writer's end.
//!
//! Without a CPU timer or the signal, one helper thread does both, the tick
//! by the wall clock (the thread was some 15% of the CPU a start costs).

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify, Signal, sigaction};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use wasmtime::Engine;

/// The signal the guest thread's CPU timer sends.
const TICK: Signal = Signal::SIGVTALRM;

/// The engine whose epoch the tick bumps: the worker's one.
static ENGINE: OnceLock<Engine> = OnceLock::new();

/// Ticks the epoch of `engine` by the CPU time of the calling thread (the
/// guest's), and ends the worker when the lifeline ends; `own` is the
/// lifeline's own description, if it was opened before ([`own_description`]).
pub(super) fn start(engine: &Engine, lifeline: &OwnedFd, own: Option<OwnedFd>) -> std::io::Result<()> {
    if let Err(error) = watch_lifeline(lifeline, own) {
        eprintln!("warning: the lifeline is watched by a thread: {error}");
        return helper(engine, lifeline);
    }
    if let Err(error) = cpu_ticks(engine) {
        eprintln!("warning: guest time slices by the wall clock: {error}");
        return helper(engine, lifeline);
    }
    Ok(())
}

/// A file description of the lifeline `lifeline` of its own, for one
/// process to watch.
pub(super) fn own_description(lifeline: &OwnedFd) -> nix::Result<OwnedFd> {
    // Not blocking: the open of a pipe without writers would wait for one.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    open(format!("/proc/self/fd/{}", lifeline.as_raw_fd()).as_str(), flags, Mode::empty())
}

/// Has the kernel end this process (`SIGIO`, whose default action does)
/// when the lifeline's last writer, the root host, is gone; through `own`,
/// a description nobody else holds, if given.
fn watch_lifeline(lifeline: &OwnedFd, own: Option<OwnedFd>) -> nix::Result<()> {
    let own = match own {
        Some(own) => own,
        None => own_description(lifeline)?,
    };
    // SAFETY: SIG_DFL for SIGIO touches no memory of ours.
    unsafe { sigaction(Signal::SIGIO, &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty())) }?;
    // SAFETY: F_SETOWN and F_SETFL take integers, on a descriptor we own.
    unsafe {
        if libc::fcntl(own.as_raw_fd(), libc::F_SETOWN, libc::getpid()) < 0
            || libc::fcntl(own.as_raw_fd(), libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) < 0
        {
            return Err(nix::errno::Errno::last());
        }
    }
    // The root may have gone before the signal was asked for.
    if ended(&own) {
        kill_self();
    }
    // Open for as long as this process lives (a fork opens its own).
    std::mem::forget(own);
    Ok(())
}

/// Whether the lifeline (which the root never writes on) has ended.
fn ended(lifeline: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].any().unwrap_or(true),
        Err(nix::errno::Errno::EINTR) => false,
        // It can no longer be watched: end as if it had ended.
        Err(_) => true,
    }
}

fn kill_self() -> ! {
    // SAFETY: ends this process, as the root's end must.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL cannot be caught")
}

/// Bumps the engine's epoch: the tick's handler (an atomic add, safe in a
/// signal handler).
extern "C" fn tick(_: libc::c_int) {
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
    }
}

/// A timer on the calling thread's CPU clock that ticks the epoch once per
/// time slice used. It lasts as long as this process (a fork has none: it
/// makes its own).
fn cpu_ticks(engine: &Engine) -> nix::Result<()> {
    // A fork's engine is its parent's, already kept.
    let _ = ENGINE.set(engine.clone());
    // On the alternate stack wasmtime gives the thread, if any: the guest's
    // own stack may be near its end.
    let action = SigAction::new(SigHandler::Handler(tick), SaFlags::SA_RESTART | SaFlags::SA_ONSTACK, SigSet::empty());
    // SAFETY: the handler only reads a set `OnceLock` and adds atomically.
    unsafe { sigaction(TICK, &action) }?;
    let notify = SigevNotify::SigevThreadId { signal: TICK, thread_id: nix::unistd::gettid().as_raw(), si_value: 0 };
    let mut timer = Timer::new(ClockId::CLOCK_THREAD_CPUTIME_ID, SigEvent::new(notify))?;
    timer.set(Expiration::Interval(TimeSpec::from_duration(crate::runtime::TIME_SLICE)), TimerSetTimeFlags::empty())?;
    std::mem::forget(timer);
    Ok(())
}

/// The fallback: a thread that ticks the epoch every time slice of wall
/// time and ends the worker when the lifeline ends; it ends with the engine.
fn helper(engine: &Engine, lifeline: &OwnedFd) -> std::io::Result<()> {
    let engine = engine.weak();
    let lifeline = lifeline.try_clone()?;
    let slice = PollTimeout::try_from(crate::runtime::TIME_SLICE).unwrap_or(PollTimeout::NONE);
    std::thread::Builder::new().name("host-ticker".into()).spawn(move || {
        loop {
            let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, slice) {
                Err(nix::errno::Errno::EINTR) => continue,
                // The root never writes on the lifeline: any event there is its end.
                Ok(_) if fds[0].any().unwrap_or(true) => kill_self(),
                Ok(_) => {}
                Err(_) => kill_self(),
            }
            let Some(engine) = engine.upgrade() else { return };
            engine.increment_epoch();
        }
    })?;
    Ok(())
}
