//! Children watched through pidfds: a signal by pidfd can never reach a
//! process that took a reaped child's pid, and a wait by pidfd reaps exactly
//! that child (never an embedder's own).

use super::super::Control;
use crate::exit::Signal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A pidfd that its worker's control and its supervisor share (one
/// descriptor, not a copy each: a start makes no `dup` for it).
pub(super) type SharedPidfd = Arc<OwnedFd>;

pub(super) enum Status {
    Exited(i32),
    Signalled(i32),
    Lost(String),
}

/// A descriptor for the process `pid`, our unreaped child.
pub(super) fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
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
pub(super) fn send_signal(pidfd: &impl AsRawFd, signal: i32) {
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
pub(super) async fn wait_pidfd(pidfd: impl AsRawFd) -> Status {
    // SAFETY: the pidfd is held by the AsyncFd (alone, or shared with a
    // control), and closed only once both are dropped.
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
pub(super) fn reap(pidfd: &impl AsRawFd) -> Option<Status> {
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
pub(super) struct SelfControl;

impl Control for SelfControl {
    fn signal(&self, signal: Signal) {
        // SAFETY: raising a signal on ourselves has no preconditions.
        unsafe { libc::raise(signal.number()) };
    }
}

/// Signals one worker.
pub(super) struct NativeControl {
    pub(super) pidfd: SharedPidfd,
}

impl Control for NativeControl {
    fn signal(&self, signal: Signal) {
        send_signal(&self.pidfd, signal.number());
    }
}
