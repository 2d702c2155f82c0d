//! Errors of the library API.
//!
//! [`Error`] is a misuse or a refused operation on a process, one case for
//! each error Python raises for the same misuse; the guest sees the same cases
//! through WIT. [`LoadError`] is a program that cannot be run at all: the
//! CLI's "bad input", exit status 2.

use std::fmt;

/// An operation on a process that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `start` on a process that was already started, or `set_daemon` after start.
    AlreadyStarted,
    /// `join`, `terminate` or `kill` on a process never started.
    NotStarted,
    /// `join` on the calling process itself.
    JoinSelf,
    /// `close` on a process that is still running.
    StillRunning,
    /// An operation on a process after `close`.
    Closed,
    /// A daemon tried to start a child.
    DaemonChildren,
    /// The program has no entry of this name.
    UnknownEntry(String),
    /// The run already has as many live processes as it may (the host's
    /// [`max_processes`](crate::HostBuilder::max_processes), `--max-processes`);
    /// Python's `OSError` with `EAGAIN`. Starting again once some have ended works.
    ProcessLimit {
        /// The cap: how many processes the run may have alive at once.
        limit: u32,
    },
    /// The host could not start the process.
    Spawn(String),
    /// The backend cannot do this at all (a fork on the thread backend); the
    /// message names the backend that can.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyStarted => f.write_str("cannot start a process twice"),
            Error::NotStarted => f.write_str("can only use a started process"),
            Error::JoinSelf => f.write_str("cannot join current process"),
            Error::StillRunning => f.write_str("cannot do this while the process is running"),
            Error::Closed => f.write_str("process object is closed"),
            Error::DaemonChildren => f.write_str("daemonic processes are not allowed to have children"),
            Error::UnknownEntry(name) => write!(f, "the program has no entry named `{name}`"),
            Error::ProcessLimit { limit } => write!(
                f,
                "cannot start the process: the run already has {limit} live processes, its limit (--max-processes)"
            ),
            Error::Spawn(why) => write!(f, "cannot start the process: {why}"),
            Error::Unsupported(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

/// A program that cannot be loaded: a missing or unreadable file, bytes that
/// are not WebAssembly, or a program of a world this host does not run.
#[derive(Debug)]
pub struct LoadError {
    message: String,
}

impl LoadError {
    pub(crate) fn new(message: impl Into<String>) -> LoadError {
        LoadError { message: message.into() }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}
