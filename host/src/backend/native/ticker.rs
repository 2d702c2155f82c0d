//! A worker's one helper thread: it ticks the engine's epoch and watches
//! the lifeline.
//!
//! A worker runs one guest, on the thread that builds its host. That guest
//! needs the epoch ticked only while it computes (so that it yields to its
//! runtime's other tasks, and to its deadline), so the tick is a timer on
//! that thread's CPU clock, not the wall clock: a time slice of CPU used is
//! one tick, and a guest that sleeps or waits costs no wake-up at all (a
//! thousand sleeping workers ticking every 10 ms of wall time kept two cores
//! busy). The timer signals this thread alone (`SIGVTALRM`, blocked here and
//! read from a signalfd; the worker's other threads never see it), which
//! waits for that or for the lifeline's end-of-file (the root host gone,
//! however it died), and then kills the worker.

use nix::sys::signal::{SigEvent, SigSet, SigevNotify, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, TimerSetTimeFlags};
use nix::time::ClockId;
use std::os::fd::{AsFd, OwnedFd};
use wasmtime::Engine;

/// The signal the guest thread's CPU timer sends.
const TICK: Signal = Signal::SIGVTALRM;

/// Starts the helper for the guest running on the calling thread; it ends
/// with the engine (or kills the worker when the lifeline ends).
pub(super) fn start(engine: &Engine, lifeline: &OwnedFd) -> std::io::Result<()> {
    let engine = engine.weak();
    let lifeline = lifeline.try_clone()?;
    let guest = guest_clock();
    // Not waited for: the helper sets itself up (a start that waited for a
    // new thread to be scheduled would cost the worker's start that wait).
    std::thread::Builder::new().name("host-ticker".into()).spawn(move || {
        let ticks = cpu_ticks(guest);
        if let Err(error) = &ticks {
            eprintln!("warning: guest time slices by the wall clock: {error}");
        }
        let ticks = ticks.ok();
        while wait(&lifeline, ticks.as_ref()) {
            // Read them all: the next wait is for the next tick.
            while let Some(Ok(Some(_))) = ticks.as_ref().map(SignalFd::read_signal) {}
            let Some(engine) = engine.upgrade() else { return };
            engine.increment_epoch();
        }
        // SAFETY: ends this process, as the root's end must.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })?;
    Ok(())
}

/// The CPU clock of the calling thread, which others can read: made from
/// the kernel's id of the thread as the kernel encodes per-thread CPU
/// clocks (`pthread_getcpuclockid` reads an id that a zygote's fork, a raw
/// `clone3`, leaves stale: its zygote's).
fn guest_clock() -> ClockId {
    const PER_THREAD: libc::clockid_t = 4;
    const SCHEDULED: libc::clockid_t = 2;
    ClockId::from_raw((!nix::unistd::gettid().as_raw() << 3) | PER_THREAD | SCHEDULED)
}

/// A signalfd that reads one tick per time slice of `guest`'s CPU time:
/// a timer on that clock signalling the calling thread, which blocks the
/// signal. The timer lasts as long as this process (a fork has none: its
/// own helper makes another).
fn cpu_ticks(guest: ClockId) -> nix::Result<SignalFd> {
    let mut tick = SigSet::empty();
    tick.add(TICK);
    tick.thread_block()?;
    let ticks = SignalFd::with_flags(&tick, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let notify = SigevNotify::SigevThreadId { signal: TICK, thread_id: nix::unistd::gettid().as_raw(), si_value: 0 };
    let mut timer = nix::sys::timer::Timer::new(guest, SigEvent::new(notify))?;
    timer.set(Expiration::Interval(TimeSpec::from_duration(crate::runtime::TIME_SLICE)), TimerSetTimeFlags::empty())?;
    std::mem::forget(timer);
    Ok(ticks)
}

/// Waits for a tick (true) or the lifeline's end (false); without a CPU
/// timer, a tick is a time slice of wall time.
fn wait(lifeline: &OwnedFd, ticks: Option<&SignalFd>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let timeout = match ticks {
        Some(_) => PollTimeout::NONE,
        None => PollTimeout::try_from(crate::runtime::TIME_SLICE).unwrap_or(PollTimeout::NONE),
    };
    loop {
        let mut fds = vec![PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
        fds.extend(ticks.map(|ticks| PollFd::new(ticks.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            // The root never writes on the lifeline: any event there is its end.
            Ok(_) if fds[0].any().unwrap_or(true) => return false,
            Ok(_) => return true,
            // Polling cannot fail on these descriptors; if it did, the
            // lifeline could no longer be watched: end as if it had ended.
            Err(_) => return false,
        }
    }
}
