//! The embedder's pool: [`PoolBuilder`] and [`Pool`], typed and blocking
//! on top of [`PoolCore`](super::PoolCore), which the guest's `mp:host/pool`
//! interface shares.

use super::results::one_result;
use super::{AsyncResult, Imap, PoolCore, ResultSlot, Settings, TaskError, decode, encode, encode_chunks};
use crate::codec::{self, Batch};
use crate::limits::Limits;
use crate::output::Stdio;
use crate::program::Program;
use crate::work::{Job, Reply};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, mpsc};

/// Configures a [`Pool`]: Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)`, plus the limits and output of its workers.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/pool-square.wasm")?;
/// let pool = host::Pool::builder(&program).processes(2).maxtasksperchild(100).max_memory(64 << 20).build()?;
/// assert_eq!(pool.apply::<_, i64>("square", &7)?, 49);
/// # Ok(()) }
/// ```
pub struct PoolBuilder {
    program: Program,
    processes: Option<usize>,
    max_tasks: Option<u32>,
    initializer: Option<(String, Vec<u8>)>,
    limits: Limits,
    stdout: Stdio,
    stderr: Stdio,
}

impl PoolBuilder {
    /// How many workers (default: the cpu count).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n.max(1));
        self
    }

    /// A worker ends after this many tasks and a fresh one takes its place.
    pub fn maxtasksperchild(mut self, n: u32) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// An entry every worker runs once as it starts, with `args`.
    pub fn initializer<A: Serialize>(mut self, entry: &str, args: &A) -> Self {
        let bytes = codec::encode(args).unwrap_or_else(|_| codec::NIL.to_vec());
        self.initializer = Some((entry.to_string(), bytes));
        self
    }

    /// Limits for each worker: `max_memory` and `fuel` apply per task
    /// (fuel is refilled before each task), `timeout` to each task (a task
    /// running longer fails and its worker is replaced).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Caps each worker's linear memory.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.limits.max_memory = Some(bytes);
        self
    }

    /// Where the workers' stdout goes (default: the host's).
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdout = stdio;
        self
    }

    /// Where the workers' stderr goes (default: the host's).
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stderr = stdio;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, TaskError> {
        let host = self.program.inner.host.clone();
        let mut command = self.program.command();
        let task_timeout = self.limits.timeout;
        command.limits(Limits { timeout: None, ..self.limits }).stdout(self.stdout).stderr(self.stderr);
        let settings = Settings {
            processes: self.processes.unwrap_or_else(crate::runtime::cpu_count),
            max_tasks: self.max_tasks,
            initializer: self.initializer,
            task_timeout,
            max_held: u64::MAX,
        };
        let core = host.block_on(PoolCore::start(&host, &host.root, command.launch().clone(), settings))?;
        Ok(Pool { core })
    }
}

/// Python's `multiprocessing.Pool`: worker processes of one program that run
/// its entries as tasks, at most `processes` at once.
///
/// Arguments and results travel as MessagePack (serde; see `wit/mp.wit`),
/// a chunk's items back to back in one buffer. A task's error (its entry
/// returned an error, it panicked or trapped, it exceeded a limit) surfaces
/// where its result is read, and the pool carries on: a worker that died is
/// replaced. Workers are daemons. Dropping the pool terminates it, as
/// Python's `with Pool(..)` block does.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/pool-square.wasm")?;
/// let pool = host::Pool::new(&program, 2)?;
/// let squares: Vec<i64> = pool.map("square", 1..=10)?;
/// let pending = pool.apply_async::<_, i64>("square", &12);
/// assert_eq!(pending.get(None)?, 144);
/// pool.close();
/// pool.join()?;
/// # Ok(()) }
/// ```
pub struct Pool {
    core: Arc<PoolCore>,
}

impl Pool {
    /// A pool of `processes` workers of `program`.
    pub fn new(program: &Program, processes: usize) -> Result<Pool, TaskError> {
        Pool::builder(program).processes(processes).build()
    }

    /// A pool with more settings.
    pub fn builder(program: &Program) -> PoolBuilder {
        PoolBuilder {
            program: program.clone(),
            processes: None,
            max_tasks: None,
            initializer: None,
            limits: Limits::default(),
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
        }
    }

    /// How many workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.core.processes()
    }

    /// The pids of the workers running now.
    pub fn pids(&self) -> Vec<u32> {
        self.core.workers.lock().unwrap().iter().flatten().filter_map(|n| n.pid()).collect()
    }

    /// Runs `entry` with `args` in a worker and waits for its result.
    pub fn apply<A: Serialize + ?Sized, R: DeserializeOwned>(&self, entry: &str, args: &A) -> Result<R, TaskError> {
        self.apply_async(entry, args).get(None)
    }

    /// Submits `entry` with `args`; the result is read from the handle.
    /// Refusals (a closed pool, an unknown entry) also surface there.
    pub fn apply_async<A: Serialize + ?Sized, R: DeserializeOwned>(&self, entry: &str, args: &A) -> AsyncResult<R> {
        let slot = Arc::new(ResultSlot::default());
        let submitted = encode(args).and_then(|input| {
            let job = Job { entry: entry.to_string(), inputs: Batch::one(input), many: false, reply: slot.reply() };
            self.core.submit(job)
        });
        if let Err(error) = submitted {
            slot.set(Err(error));
        }
        AsyncResult { slot, _result: PhantomData }
    }

    /// Python's `apply_async(func, args, callback=.., error_callback=..)`:
    /// as [`apply_async`](Self::apply_async), and as soon as the task ends
    /// `callback` gets its result, or `error_callback` its error (a refusal
    /// included), on a thread of the host's (Python: the pool's result
    /// handler thread), before [`AsyncResult::get`] returns.
    pub fn apply_async_with_callbacks<A: Serialize + ?Sized, R: DeserializeOwned + 'static>(
        &self,
        entry: &str,
        args: &A,
        callback: impl FnOnce(R) + Send + 'static,
        error_callback: impl FnOnce(TaskError) + Send + 'static,
    ) -> AsyncResult<R> {
        let slot = Arc::new(ResultSlot::default());
        let call = move |value: Result<Vec<u8>, TaskError>| {
            match value.clone().and_then(|bytes| decode::<R>(&bytes)) {
                Ok(result) => callback(result),
                Err(error) => error_callback(error),
            }
            value
        };
        let input = match encode(args) {
            Ok(input) => input,
            Err(error) => {
                slot.set(call(Err(error)));
                return AsyncResult { slot, _result: PhantomData };
            }
        };
        let (runtime, filled) = (self.core.host.runtime.clone(), slot.clone());
        let call = Arc::new(Mutex::new(Some(call)));
        let on_refusal = call.clone();
        let reply = Reply::new(move |outcome| {
            let value = one_result(outcome);
            runtime.spawn_blocking(move || {
                if let Some(call) = call.lock().unwrap().take() {
                    filled.set(call(value));
                }
            });
        });
        let job = Job { entry: entry.to_string(), inputs: Batch::one(input), many: false, reply };
        if let Err(error) = self.core.submit(job) {
            // The refused job's reply may already have run the callbacks.
            if let Some(call) = on_refusal.lock().unwrap().take() {
                slot.set(call(Err(error)));
            }
        }
        AsyncResult { slot, _result: PhantomData }
    }

    /// Runs `entry` on every item, in chunks (Python's default chunk size);
    /// the results in order, or the first item's error.
    pub fn map<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        entry: &str,
        items: I,
    ) -> Result<Vec<R>, TaskError> {
        // Python's `map` also makes a list of the items first: the chunk
        // size depends on their number.
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = self.core.default_chunksize(items.len());
        self.imap(entry, items, chunksize)?.collect()
    }

    /// [`map`](Self::map) with `chunksize` items per task.
    pub fn map_chunked<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        entry: &str,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError> {
        self.imap(entry, items, chunksize)?.collect()
    }

    /// [`map`](Self::map) for entries of several arguments: each item is a
    /// tuple of them. (A tuple travels as an array, and an entry of
    /// several arguments takes one: `map` does the same.)
    pub fn starmap<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        entry: &str,
        items: I,
    ) -> Result<Vec<R>, TaskError> {
        self.map(entry, items)
    }

    /// Runs `entry` on every item, `chunksize` items per task; yields each
    /// item's result in order, as soon as it and those before it are done.
    pub fn imap<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        entry: &str,
        items: I,
        chunksize: usize,
    ) -> Result<Imap<R>, TaskError> {
        self.map_chunks(entry, encode_chunks(items, chunksize), decode)
    }

    /// [`imap`](Self::imap), yielding results as they complete.
    pub fn imap_unordered<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        entry: &str,
        items: I,
        chunksize: usize,
    ) -> Result<Imap<R>, TaskError> {
        let mut results = self.imap(entry, items, chunksize)?;
        results.ordered = false;
        Ok(results)
    }

    /// Runs `entry` on items given as JSON text (turned into the guests'
    /// format); yields each item's result as JSON, in order (`ordered`) or
    /// as they complete. What the CLI's `host map` uses.
    pub fn imap_json(
        &self,
        entry: &str,
        inputs: Vec<Vec<u8>>,
        chunksize: usize,
        ordered: bool,
    ) -> Result<Imap<serde_json::Value>, TaskError> {
        let mut batch = Batch::with_capacity(inputs.len(), inputs.iter().map(Vec::len).sum());
        for json in &inputs {
            batch.push(&codec::from_json(json).map_err(TaskError::Serde)?);
        }
        let to_json = |bytes: &[u8]| {
            codec::to_json(bytes).map_err(|e| TaskError::Serde(format!("cannot show a task's result as JSON: {e}")))
        };
        let mut results = self.map_chunks(entry, batch.chunks(chunksize).map(Ok), to_json)?;
        results.ordered = ordered;
        Ok(results)
    }

    /// Submits each chunk as it is made; its results, decoded by `decode`.
    fn map_chunks<R>(
        &self,
        entry: &str,
        chunks: impl IntoIterator<Item = Result<Batch, TaskError>>,
        decode: fn(&[u8]) -> Result<R, TaskError>,
    ) -> Result<Imap<R>, TaskError> {
        let (sender, receiver) = mpsc::channel();
        let budget = self.core.results_budget();
        let deliver = move |index, outcome| {
            let (outcome, held) = budget.hold(outcome);
            let _ = sender.send((index, outcome, held));
        };
        let sizes = self.core.submit_each(entry, chunks, deliver)?;
        Ok(Imap {
            receiver,
            sizes,
            ordered: true,
            next_chunk: 0,
            received: 0,
            arrived: BTreeMap::new(),
            current: VecDeque::new(),
            decode,
        })
    }

    /// Takes no more tasks; the workers end once the submitted ones are done.
    pub fn close(&self) {
        self.core.close();
    }

    /// Waits for every worker to end; [`TaskError::StillRunning`] before
    /// [`close`](Self::close) or [`terminate`](Self::terminate).
    pub fn join(&self) -> Result<(), TaskError> {
        self.core.check_joinable()?;
        self.core.host.block_on(self.core.wait_workers());
        Ok(())
    }

    /// Ends every worker at once, however busy, and waits for them; tasks
    /// not yet done fail.
    pub fn terminate(&self) {
        self.core.terminate_now();
        self.core.host.block_on(self.core.wait_workers());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("processes", &self.processes()).field("pids", &self.pids()).finish()
    }
}
