//! How a process ended, in Python's terms.
//!
//! Python reports a process's end as one integer, `exitcode`: `0` for a normal
//! end, `N` for `exit(N)`, `1` for an uncaught error, and `-S` when a signal
//! `S` ended it. [`ExitCode`] keeps exactly that integer, so that the thread
//! backend's emulated signals and the native backend's real ones read alike.

use std::fmt;

/// A signal that ends a process, as Python's `terminate` and `kill` send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGTERM` (15): `terminate()`, and a `--timeout` that ran out.
    Term,
    /// `SIGKILL` (9): `kill()`.
    Kill,
}

impl Signal {
    /// The POSIX signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
        }
    }
}

/// The exit code of an ended process, with Python's values.
///
/// ```
/// use host::{ExitCode, Signal};
/// assert!(ExitCode::SUCCESS.success());
/// assert_eq!(ExitCode::from_signal(Signal::Term).code(), -15);
/// assert_eq!(ExitCode::from_signal(Signal::Term).shell_status(), 143);
/// assert_eq!(ExitCode::from(3).shell_status(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitCode(i32);

impl ExitCode {
    /// A normal end.
    pub const SUCCESS: ExitCode = ExitCode(0);
    /// An uncaught error: a trap, a panic, an exceeded limit.
    pub const FAILURE: ExitCode = ExitCode(1);

    /// The code of a process ended by `signal`: `-S`.
    pub fn from_signal(signal: Signal) -> ExitCode {
        ExitCode(-signal.number())
    }

    /// Python's `exitcode`.
    pub fn code(self) -> i32 {
        self.0
    }

    /// True for a normal end (`0`).
    pub fn success(self) -> bool {
        self.0 == 0
    }

    /// The number of the signal that ended the process, if one did.
    pub fn signal(self) -> Option<i32> {
        (self.0 < 0).then_some(-self.0)
    }

    /// The status a shell reports for this end: the code itself, or `128+S`
    /// for a signal `S` (so a terminated process gives 143).
    pub fn shell_status(self) -> i32 {
        match self.signal() {
            Some(s) => 128 + s,
            None => self.0 & 0xff,
        }
    }
}

impl From<i32> for ExitCode {
    fn from(code: i32) -> ExitCode {
        ExitCode(code)
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
