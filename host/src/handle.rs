//! The embedder's handle on a process: [`Process`], Python's `Process`
//! object, as `std::process::Child` is Rust's. Every call is a rule of the
//! lifecycle that [`Node`] keeps, in the process tree below; the handle adds
//! only the host the process runs in. A [`Command`] becomes one here.

use crate::command::Command;
use crate::error::Error;
use crate::exit::{ExitCode, Signal};
use crate::journal::ProcessRecord;
use crate::process::Node;
use crate::runtime::HostInner;
use std::sync::Arc;
use std::time::Duration;

/// A process of a [`Program`](crate::Program): Python's `Process` object.
///
/// Made by [`Command::create`](crate::Command::create) (not started) or
/// [`Command::spawn`](crate::Command::spawn) (started). Dropping the handle
/// neither waits for nor ends the process.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::time::Duration;
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/sleep.wasm")?;
/// let process = program.command().arg("60").create();
/// assert_eq!(process.name(), "Process-1");
/// process.start()?;
/// assert_eq!(process.join_timeout(Duration::from_millis(10))?, None);
/// process.terminate()?;
/// assert_eq!(process.join()?.code(), -15);
/// # Ok(()) }
/// ```
pub struct Process {
    pub(crate) node: Arc<Node>,
    pub(crate) host: Arc<HostInner>,
}

impl Process {
    /// Starts the process; the caller is not blocked. At most once.
    pub fn start(&self) -> Result<(), Error> {
        self.host.start(&self.node)
    }

    /// Blocks until the process ends; returns its exit code.
    pub fn join(&self) -> Result<ExitCode, Error> {
        self.node.join(None).map(|code| code.expect("an unbounded join returns an end"))
    }

    /// Blocks until the process ends or `timeout` passes; `None` on timeout.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<ExitCode>, Error> {
        self.node.join(Some(timeout))
    }

    /// True from `start` until the process has ended.
    pub fn is_alive(&self) -> bool {
        self.node.is_alive()
    }

    /// `None` while running or before start; otherwise Python's exit code.
    pub fn exitcode(&self) -> Option<ExitCode> {
        self.node.exitcode()
    }

    /// Why the process failed (a trap, an exceeded limit, an entry's error),
    /// once it has; the same text went to its stderr.
    pub fn failure(&self) -> Option<String> {
        self.node.ended().and_then(|ended| ended.reason)
    }

    /// How long the process has run: from start to its end, or to now.
    pub fn run_time(&self) -> Option<Duration> {
        self.node.run_time()
    }

    /// `None` before start; a virtual pid on the thread backend, a real one
    /// on the native backend.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    /// The parent's pid (`None` before start): the host's for a process the
    /// embedder started, the root's once an orphan has been adopted.
    pub fn ppid(&self) -> Option<u32> {
        self.node.pid().map(|_| self.node.ppid())
    }

    /// The most linear memory the process has had at once, in bytes (all its
    /// memories together); `None` before start. On the native backend the
    /// figure comes with the process's end (0 until then).
    pub fn peak_memory(&self) -> Option<u64> {
        self.node.pid().map(|_| self.node.usage.peak_memory())
    }

    /// The instructions (wasmtime fuel) the process has used; `None` unless
    /// the host meters fuel ([`HostBuilder::fuel`](crate::HostBuilder::fuel)).
    /// Measured at every time slice and at the end: a process terminated
    /// mid-run has the figure of its last slice. On the native backend it
    /// comes with the process's end.
    pub fn fuel_used(&self) -> Option<u64> {
        self.node.usage.fuel_used()
    }

    /// Everything known about the process once it has ended: what a host's
    /// journal keeps for it.
    pub fn record(&self) -> Option<ProcessRecord> {
        self.node.record()
    }

    /// `Process-N` unless named otherwise.
    pub fn name(&self) -> String {
        self.node.name()
    }

    /// Renames the process (its output prefix is fixed at start).
    pub fn set_name(&self, name: impl Into<String>) {
        self.node.set_name(name.into());
    }

    /// Whether the process is a daemon.
    pub fn daemon(&self) -> bool {
        self.node.is_daemon()
    }

    /// A daemon is terminated when its parent ends and may not have
    /// children. Only before start.
    pub fn set_daemon(&self, daemon: bool) -> Result<(), Error> {
        self.node.set_daemon(daemon)
    }

    /// Ends the process however it is busy (`SIGTERM`; exitcode -15).
    pub fn terminate(&self) -> Result<(), Error> {
        self.node.signal(Signal::Term)
    }

    /// Ends the process however it is busy (`SIGKILL`; exitcode -9).
    pub fn kill(&self) -> Result<(), Error> {
        self.node.signal(Signal::Kill)
    }

    /// Releases the process object; an error while it is still running.
    pub fn close(&self) -> Result<(), Error> {
        self.node.close()
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .field("daemon", &self.daemon())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl Command {
    /// The process, not yet started: Python's `Process(...)`.
    pub fn create(&self) -> Process {
        let host = self.launch().program.inner.host.clone();
        let node = host.root.create_child(self.process_launch());
        if let Some(name) = self.given_name() {
            node.set_name(name.clone());
        }
        node.set_daemon(self.is_daemon()).expect("a new process is not started");
        Process { node, host }
    }

    /// The process, started.
    pub fn spawn(&self) -> Result<Process, Error> {
        let process = self.create();
        process.start()?;
        Ok(process)
    }
}
