//! Python's `multiprocessing.Pool` for guests: worker processes of this same
//! program that run its entries as tasks.
//!
//! The workers are children of the calling process, daemonic, and each one
//! runs task after task in one instance (a `static` it changes persists from
//! task to task, unless `maxtasksperchild` replaces it). A task's error (its
//! entry panicked, trapped or exceeded a limit) surfaces at its
//! [`AsyncResult::get`] (or as `map`'s error), and the pool carries on.
//! Dropping the pool terminates it, as Python's `with Pool(..)` block does.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Target;
use crate::bindings::mp::host::pool as wit;

mod more;
use more::Pending;
pub use more::{Imap, MapResult};

/// Why a pool task or operation gave no result (mirrors the WIT
/// `task-error` variant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskError {
    /// The task failed: its entry panicked or trapped, returned an error,
    /// exceeded a limit, or its worker was terminated.
    Failed(String),
    /// [`AsyncResult::get_timeout`]: the result is not ready yet.
    Timeout,
    /// The pool was closed or terminated (Python's "Pool not running").
    NotRunning,
    /// `join` before `close` or `terminate`; `successful` before the result
    /// is ready.
    StillRunning,
    /// The program has no entry of this name.
    UnknownEntry(String),
    /// The pool's workers could not be started (a daemon cannot have any).
    SpawnFailed(String),
    /// A task's argument did not serialize or its result did not deserialize.
    Serde(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(why) => write!(f, "task failed: {why}"),
            TaskError::Timeout => f.write_str("the result is not ready (timeout)"),
            TaskError::NotRunning => f.write_str("Pool not running"),
            TaskError::StillRunning => f.write_str("Pool is still running"),
            TaskError::UnknownEntry(name) => write!(f, "the program has no entry named {name:?}"),
            TaskError::SpawnFailed(why) => write!(f, "cannot start the pool's workers: {why}"),
            TaskError::Serde(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<wit::TaskError> for TaskError {
    fn from(e: wit::TaskError) -> Self {
        match e {
            wit::TaskError::Failed(why) => TaskError::Failed(why),
            wit::TaskError::Timeout => TaskError::Timeout,
            wit::TaskError::NotRunning => TaskError::NotRunning,
            wit::TaskError::StillRunning => TaskError::StillRunning,
            wit::TaskError::UnknownEntry(name) => TaskError::UnknownEntry(name),
            wit::TaskError::SpawnFailed(why) => TaskError::SpawnFailed(why),
        }
    }
}

fn to_bytes<A: Serialize>(args: &A) -> Result<Vec<u8>, TaskError> {
    crate::codec::encode(args).map_err(|e| TaskError::Serde(format!("cannot serialize a task's argument: {e}")))
}

fn from_bytes<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, TaskError> {
    crate::codec::decode(bytes).map_err(|e| TaskError::Serde(format!("cannot deserialize a task's result: {e}")))
}

/// Configures a [`Pool`]: Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)`.
///
/// ```no_run
/// fn setup(name: String) {}
/// fn work(x: u32) -> u32 { x + 1 }
/// mp::entries!(setup, work);
/// # fn main() {
/// let pool = mp::Pool::builder()
///     .processes(3)
///     .maxtasksperchild(10)
///     .initializer(mp::target!(setup), "db".to_string())
///     .build()
///     .unwrap();
/// # }
/// ```
#[derive(Debug, Default, Clone)]
pub struct PoolBuilder {
    processes: Option<u32>,
    maxtasksperchild: Option<u32>,
    initializer: Option<(String, Vec<u8>)>,
    /// Why the initializer's arguments did not serialize, for `build`.
    error: Option<TaskError>,
}

impl PoolBuilder {
    /// How many workers (default: the host's cpu count).
    pub fn processes(mut self, n: u32) -> Self {
        self.processes = Some(n);
        self
    }

    /// A worker ends after this many tasks and a fresh one takes its place.
    pub fn maxtasksperchild(mut self, n: u32) -> Self {
        self.maxtasksperchild = Some(n);
        self
    }

    /// An entry each worker runs once as it starts (Python's `initializer`
    /// and `initargs`).
    ///
    /// Shared objects (a [`Queue`](crate::Queue), a [`Lock`](crate::Lock),
    /// a manager's [`Dict`](crate::Dict), ...) may be passed here, as
    /// Python's `initargs`: every worker, and every worker that replaces
    /// one, opens them; the pool holds them until it ends. A handle in a
    /// task's arguments is refused, as in Python.
    pub fn initializer<A: Serialize, R>(self, target: Target<A, R>, args: A) -> Self {
        self.initializer_with_handles(target, args)
    }

    /// [`initializer`](Self::initializer) with arguments that hold handles
    /// by reference (`(&queue, &lock)` for an entry taking `(Queue<T>,
    /// Lock)`), as [`Process::with_handles`](crate::Process::with_handles).
    pub fn initializer_with_handles<A, R>(mut self, target: Target<A, R>, args: impl Serialize) -> Self {
        match crate::sync::spawning(|| to_bytes(&args)) {
            Ok(bytes) => self.initializer = Some((target.name.to_string(), bytes)),
            Err(error) => self.error = Some(error),
        }
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, TaskError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let inner = wit::Pool::create(
            self.processes,
            self.maxtasksperchild,
            self.initializer.as_ref().map(|(e, a)| (e.as_str(), a.as_slice())),
        )?;
        Ok(Pool { inner, callbacks: RefCell::default() })
    }
}

/// Python's `multiprocessing.Pool`: at most `processes` tasks run at once,
/// each an entry of this program (see [`entries!`](crate::entries)).
///
/// ```no_run
/// fn worker(num: u32) { println!("pid={} num={num}", mp::getpid()); }
/// mp::entries!(worker);
/// fn main() {
///     let pool = mp::Pool::new(3);
///     for i in 0..10 {
///         pool.apply_async(mp::target!(worker), i);
///     }
///     pool.close();
///     pool.join().unwrap();
/// }
/// ```
pub struct Pool {
    inner: wit::Pool,
    /// `apply_async` callbacks not yet run: run on the next call into the pool.
    callbacks: RefCell<Vec<Pending>>,
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Panics
    /// If the workers cannot be started (a daemon cannot have children);
    /// [`Pool::builder`] returns the error instead.
    pub fn new(processes: u32) -> Pool {
        Pool::builder().processes(processes).build().expect("Pool::new")
    }

    /// A pool with more settings; `Pool::builder().build()` has the cpu
    /// count's workers.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Runs `target` with `args` in a worker and waits for its result.
    pub fn apply<A: Serialize, R: DeserializeOwned>(&self, target: Target<A, R>, args: A) -> Result<R, TaskError> {
        self.apply_async(target, args).get()
    }

    /// Submits `target` with `args` and returns at once; the result (or the
    /// task's error, or a refusal) is read from the handle.
    pub fn apply_async<A: Serialize, R: DeserializeOwned>(&self, target: Target<A, R>, args: A) -> AsyncResult<R> {
        self.run_callbacks(false);
        let inner = to_bytes(&args).map(|bytes| Rc::new(self.inner.apply_async(target.name, &bytes)));
        AsyncResult { inner, pending: None, _result: PhantomData }
    }

    /// Runs `target` on every item (Python's default chunk size) and waits;
    /// the results in order, or the first error.
    pub fn map<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> Result<Vec<R>, TaskError> {
        self.map_chunks(target, items, None)
    }

    /// [`map`](Self::map) with `chunksize` items per task.
    pub fn map_chunked<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
        chunksize: u32,
    ) -> Result<Vec<R>, TaskError> {
        self.map_chunks(target, items, Some(chunksize))
    }

    /// [`map`](Self::map) for entries of several arguments, each item a
    /// tuple of them (Python's `starmap`; an entry of several arguments
    /// takes a tuple, so this is `map`).
    pub fn starmap<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> Result<Vec<R>, TaskError> {
        self.map(target, items)
    }

    fn map_chunks<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
        chunksize: Option<u32>,
    ) -> Result<Vec<R>, TaskError> {
        self.run_callbacks(false);
        let args = items.into_iter().map(|item| to_bytes(&item)).collect::<Result<Vec<_>, _>>()?;
        let results = self.inner.map(target.name, &args, chunksize)?;
        results.iter().map(|bytes| from_bytes(bytes)).collect()
    }

    /// Takes no more tasks; the workers end once the submitted ones are done.
    pub fn close(&self) {
        self.run_callbacks(false);
        self.inner.close();
    }

    /// Waits for every worker to end; [`TaskError::StillRunning`] before
    /// [`close`](Self::close) or [`terminate`](Self::terminate).
    pub fn join(&self) -> Result<(), TaskError> {
        self.run_callbacks(false);
        self.inner.join()?;
        // Every task is done: every callback runs now.
        self.run_callbacks(true);
        Ok(())
    }

    /// Ends every worker at once, however busy; unfinished tasks fail.
    pub fn terminate(&self) {
        self.inner.terminate();
        self.run_callbacks(true);
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// The result of [`Pool::apply_async`]: Python's `AsyncResult`.
pub struct AsyncResult<R> {
    inner: Result<Rc<wit::AsyncResult>, TaskError>,
    /// Its callbacks, if any, run before `get` returns (at the latest).
    pending: Option<Pending>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the result.
    pub fn get(&self) -> Result<R, TaskError> {
        self.fetch(None)
    }

    /// Waits for the result up to `timeout`; [`TaskError::Timeout`] if it
    /// is not ready by then.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.fetch(Some(nanos(timeout)))
    }

    fn fetch(&self, timeout: Option<u64>) -> Result<R, TaskError> {
        let inner = self.inner.as_ref().map_err(Clone::clone)?;
        let got = inner.get(timeout);
        if let Some(pending) = &self.pending
            && !matches!(got, Err(wit::TaskError::Timeout))
        {
            pending.fire();
        }
        from_bytes(&got?)
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        if let Ok(inner) = &self.inner {
            inner.wait(None);
        }
    }

    /// Waits until the result is ready or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) {
        if let Ok(inner) = &self.inner {
            inner.wait(Some(nanos(timeout)));
        }
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        self.inner.as_ref().map_or(true, |inner| inner.ready())
    }

    /// Whether the task succeeded; [`TaskError::StillRunning`] before it is
    /// ready (Python raises `ValueError`).
    pub fn successful(&self) -> Result<bool, TaskError> {
        match &self.inner {
            Ok(inner) => Ok(inner.successful()?),
            Err(_) => Ok(false),
        }
    }
}

fn nanos(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)
}
