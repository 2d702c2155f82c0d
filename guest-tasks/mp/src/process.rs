//! A process and the calls about processes: [`Process`] (Python's
//! `multiprocessing.Process`), the calling process and its parent, its
//! children, pids, [`fork`] and [`exit`].

use super::{Error, Run, Target, codec, sync, wasi_exit, wit};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

/// A process: a child created by this process, the caller itself (from
/// [`current_process`]), or its parent (from [`parent_process`]: not the
/// caller's to control). Python's `multiprocessing.Process`.
///
/// Dropping a `Process` does not end or wait for the child: a non-daemon
/// child keeps running (the host waits for it before it exits), a daemon ends
/// with its parent.
///
/// Naming: the builder methods that take and return the process are
/// [`with_name`](Process::with_name) and [`with_daemon`](Process::with_daemon);
/// [`name`](Process::name)/[`daemon`](Process::daemon) read and
/// [`set_name`](Process::set_name)/[`set_daemon`](Process::set_daemon) write,
/// as Python's `p.name` / `p.daemon` attributes.
pub struct Process {
    pub(crate) inner: wit::Process,
    /// Set when the arguments could not be serialized: `start` reports it.
    bad_args: Option<String>,
}

impl Process {
    /// A new, not yet started process that will run `target` with `args`
    /// (Python's `Process(target=f, args=(..))`). Its default name is
    /// `Process-N`, N counting the processes this process created, from 1.
    ///
    /// If `args` cannot be serialized, [`start`](Process::start)
    /// fails with [`Error::SpawnFailed`].
    ///
    /// ```no_run
    /// fn task(name: String) { println!("{name} is running"); }
    /// mp::entries!(task);
    /// # fn main() {
    /// let p = mp::Process::new(mp::target!(task), "p1".to_string());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// # }
    /// ```
    pub fn new<A: Serialize, R>(target: Target<A, R>, args: A) -> Process {
        Self::with_entry(target.name, &args)
    }

    /// [`new`](Process::new) for arguments that hold shared objects
    /// ([`Queue`], [`Lock`], ...): `args` need only serialize as the
    /// entry's argument type does, so handles can be lent (`(&queue, 3)`
    /// for an entry taking `(Queue<T>, u32)`); each is given to the child.
    ///
    /// ```no_run
    /// fn worker((q, n): (mp::Queue<u32>, u32)) { q.put(&n).unwrap(); }
    /// mp::entries!(worker);
    /// # fn main() {
    /// let q = mp::Queue::new();
    /// let p = mp::Process::with_handles(mp::target!(worker), (&q, 3));
    /// p.start().unwrap();
    /// assert_eq!(q.get().unwrap(), 3);
    /// # }
    /// ```
    pub fn with_handles<A, R>(target: Target<A, R>, args: impl Serialize) -> Process {
        Self::with_entry(target.name, &args)
    }

    /// A new, not yet started process that runs `obj.run()` (the type form;
    /// see [`Run`]). The entry's name is `std::any::type_name::<T>()`; `T`
    /// must be listed under `types:` in [`entries!`].
    pub fn from_type<T: Run + Serialize + DeserializeOwned>(obj: T) -> Process {
        Self::with_entry(std::any::type_name::<T>(), &obj)
    }

    fn with_entry<A: Serialize + ?Sized>(entry: &str, args: &A) -> Process {
        // Handles to shared objects in `args` serialize as tokens the child opens.
        match sync::spawning(|| codec::encode(args)) {
            Ok(bytes) => Process { inner: wit::Process::new(entry, &bytes), bad_args: None },
            Err(e) => Process {
                inner: wit::Process::new(entry, codec::UNIT),
                bad_args: Some(format!("cannot serialize the arguments of entry {entry}: {e}")),
            },
        }
    }

    /// Builder form of [`set_name`](Process::set_name).
    ///
    /// # Panics
    /// If the name cannot be set (the process is closed).
    #[must_use]
    pub fn with_name(self, name: impl AsRef<str>) -> Process {
        self.set_name(name).expect("Process::with_name");
        self
    }

    /// Builder form of [`set_daemon`](Process::set_daemon).
    ///
    /// # Panics
    /// If the flag cannot be set (the process was started or is closed).
    #[must_use]
    pub fn with_daemon(self, daemon: bool) -> Process {
        self.set_daemon(daemon).expect("Process::with_daemon");
        self
    }

    /// The process's name (default `Process-N`).
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Renames the process (a name is only a label: it need not be unique).
    pub fn set_name(&self, name: impl AsRef<str>) -> Result<(), Error> {
        Ok(self.inner.set_name(name.as_ref())?)
    }

    /// Whether the process is a daemon: it ends when its parent ends, and it
    /// may not create children.
    pub fn daemon(&self) -> bool {
        self.inner.daemon()
    }

    /// Sets the daemon flag; only before [`start`](Process::start) (an
    /// error after).
    pub fn set_daemon(&self, daemon: bool) -> Result<(), Error> {
        Ok(self.inner.set_daemon(daemon)?)
    }

    /// Starts the process; the caller is not blocked. At most once
    /// ([`Error::AlreadyStarted`]).
    pub fn start(&self) -> Result<(), Error> {
        if let Some(msg) = &self.bad_args {
            return Err(Error::SpawnFailed(msg.clone()));
        }
        Ok(self.inner.start()?)
    }

    /// Blocks until the process ends. [`Error::NotStarted`] before `start`,
    /// [`Error::JoinSelf`] on [`current_process`].
    pub fn join(&self) -> Result<(), Error> {
        Ok(self.inner.join(None)?)
    }

    /// Blocks until the process ends or `timeout` passes. A timeout is not an
    /// error: check [`exitcode`](Process::exitcode) or
    /// [`is_alive`](Process::is_alive).
    ///
    /// ```no_run
    /// # fn f(_: ()) {}
    /// # mp::entries!(f);
    /// # fn main() {
    /// # let p = mp::Process::new(mp::target!(f), ());
    /// # p.start().unwrap();
    /// p.join_timeout(std::time::Duration::from_millis(100)).unwrap();
    /// if p.is_alive() {
    ///     p.terminate().unwrap();
    /// }
    /// # }
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Ok(self.inner.join(Some(nanos))?)
    }

    /// True from `start` until the process's end is observed.
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// `None` while running or before start; `Some(0)` for a normal end,
    /// `Some(n)` for `exit(n)`, `Some(1)` for a panic/trap or an entry's
    /// error, `Some(-15)` after terminate, `Some(-9)` after kill.
    pub fn exitcode(&self) -> Option<i32> {
        self.inner.exitcode()
    }

    /// The process's pid; `None` before start.
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// Ends the process however it is busy (SIGTERM on the native backend;
    /// exitcode -15). No cleanup runs in it.
    pub fn terminate(&self) -> Result<(), Error> {
        Ok(self.inner.terminate()?)
    }

    /// Ends the process however it is busy (SIGKILL on the native backend;
    /// exitcode -9).
    pub fn kill(&self) -> Result<(), Error> {
        Ok(self.inner.kill()?)
    }

    /// Releases the process object's resources; [`Error::StillRunning`] while
    /// it runs. Any later operation fails with [`Error::Closed`].
    pub fn close(&self) -> Result<(), Error> {
        Ok(self.inner.close()?)
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .field("daemon", &self.daemon())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// The calling process (Python's `multiprocessing.current_process()`).
/// Joining it fails with [`Error::JoinSelf`].
///
/// ```no_run
/// println!("I am {} (pid {:?})", mp::current_process().name(), mp::current_process().pid());
/// ```
pub fn current_process() -> Process {
    Process { inner: wit::current_process(), bad_args: None }
}

/// Python's `multiprocessing.active_children()`: this process's children
/// still running (pool workers included), as handles (joining one works;
/// its name and pid are the child's).
pub fn active_children() -> Vec<Process> {
    wit::active_children().into_iter().map(|inner| Process { inner, bad_args: None }).collect()
}

/// Python's `multiprocessing.parent_process()`: a handle to the process
/// that created this one, while it runs; `None` in a top-level process (one
/// the host, its CLI or an embedder started: its parent is the host itself)
/// and once the parent has ended.
///
/// The handle gives the parent's [`pid`](Process::pid) and
/// [`name`](Process::name), [`is_alive`](Process::is_alive) (false once the
/// parent has ended), and [`join`](Process::join) (waits for the parent's
/// end, as Python's does through its sentinel); its
/// [`sentinel`](Process::sentinel) works with [`wait`]. Its
/// [`exitcode`](Process::exitcode) stays `None`. Controlling it (`terminate`,
/// `kill`, `start`, `close`, `set_name`, `set_daemon`) fails with
/// [`Error::NotChild`]: a process controls only its own children. A pool
/// worker's parent is the process that made the pool; a forked child's is
/// the process that forked it.
///
/// ```no_run
/// fn child(_: ()) {
///     let parent = mp::parent_process().expect("started by another process");
///     println!("my parent is {} (pid {:?})", parent.name(), parent.pid());
///     assert!(parent.is_alive());
///     assert_eq!(parent.terminate(), Err(mp::Error::NotChild));
/// }
/// mp::entries!(child);
/// # fn main() {
/// assert!(mp::parent_process().is_none()); // main is top-level
/// let p = mp::Process::new(mp::target!(child), ());
/// p.start().unwrap();
/// p.join().unwrap();
/// # }
/// ```
pub fn parent_process() -> Option<Process> {
    wit::parent_process().map(|inner| Process { inner, bad_args: None })
}

/// The calling process's pid (Python's `os.getpid()`).
pub fn getpid() -> u32 {
    wit::getpid()
}

/// The parent's pid (Python's `os.getppid()`); the root's pid once the
/// parent has ended (orphans are adopted by the root).
pub fn getppid() -> u32 {
    wit::getppid()
}

/// The host's cpu count (Python's `os.cpu_count()`).
pub fn cpu_count() -> u32 {
    wit::cpu_count()
}

/// The two sides of a [`fork`].
#[derive(Debug)]
pub enum Fork {
    /// This is the new process (Python's `os.fork()` returning 0).
    Child,
    /// This is the caller; the new process, already started (Python's
    /// `os.fork()` returning its pid): join it, terminate it, read its
    /// exit code as for any child.
    Parent(Process),
}

/// Python's `os.fork()`: the calling process goes on as two. The child is
/// a copy of the whole process (its memory, its globals, its call stack)
/// that continues from this call; a variable set before the fork has its
/// value on both sides, and a change after it is seen only by the side
/// that made it. The child's name is `Process-N`, by this process's count;
/// it has the time left before this process's deadline and its limits.
///
/// What this process printed is flushed first, so it is not printed twice.
/// Fails with [`Error::Unsupported`] on a backend that cannot fork (the
/// thread backend: use `--backend native`), [`Error::DaemonChildren`] in a
/// daemon, [`Error::ProcessLimit`] past the run's cap.
///
/// ```no_run
/// match mp::fork().unwrap() {
///     mp::Fork::Child => println!("I am the child, pid {}", mp::getpid()),
///     mp::Fork::Parent(child) => {
///         println!("I forked {:?}", child.pid());
///         child.join().unwrap();
///     }
/// }
/// ```
pub fn fork() -> Result<Fork, Error> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    match wit::fork()? {
        wit::Forked::Child => Ok(Fork::Child),
        wit::Forked::Parent(inner) => Ok(Fork::Parent(Process { inner, bad_args: None })),
    }
}

/// Ends the calling process at once with exitcode `code` (Python's
/// `sys.exit(n)`), as far as the host is concerned: its parent sees
/// `exitcode() == Some(code)`. Codes are 0-255 on the wire (`code & 0xff`,
/// as a POSIX exit status).
///
/// Prefer this to `std::process::exit`: on `wasm32-wasip2`, Rust's standard
/// library only reports success or failure, so `std::process::exit(3)` is
/// seen as exitcode 1.
///
/// ```no_run
/// mp::exit(3);
/// ```
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    wasi_exit::wasi::cli::exit::exit_with_code((code & 0xff) as u8);
    // The host never returns from exit-with-code; should it, end anyway.
    std::process::exit(code)
}
