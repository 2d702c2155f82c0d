//! Python's `multiprocessing.Pool`: a fixed set of worker processes that run
//! many tasks.
//!
//! A pool worker is an ordinary process (a [`Node`]: it has a pid, it can be
//! terminated, it is a daemon) started in *serve* mode: it instantiates the
//! program once, runs the optional initializer entry, then takes task after
//! task from the pool's queue and calls the task's entry on that same
//! instance, so state persists between tasks. After `maxtasksperchild` tasks
//! it ends and the pool starts a replacement; a task that traps or exceeds a
//! limit ends its worker too (the task's result is an error naming the cause)
//! and the pool carries on with a fresh one. Idle workers pull from one
//! shared queue, so at most `processes` tasks run at once and none waits
//! while a worker is idle. `map` and its relatives send one task per chunk of
//! items, which the worker runs with one call into the guest.
//!
//! [`PoolCore`] is the pool itself, shared by the embedding API ([`Pool`])
//! and the guest's `mp:host/pool` interface; both only add typing and
//! blocking (or awaiting) on top of it.

use crate::codec::{self, Batch};
use crate::command::Launch;
use crate::error::Error;
use crate::exit::Signal;
use crate::limits::Limits;
use crate::output::Stdio;
use crate::process::Node;
use crate::program::{Program, ProgramKind};
use crate::runtime::HostInner;
pub(crate) use crate::work::Job;
use crate::work::{Outcome, Reply, ServeChannel, Work};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Why a pool task or operation gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The task failed: its entry returned an error, it trapped or panicked,
    /// it exceeded a limit, or its worker was terminated. The message says
    /// which.
    Failed(String),
    /// [`AsyncResult::get`] with a timeout: the result is not ready yet.
    Timeout,
    /// The pool was closed or terminated before the task was submitted
    /// (Python's "Pool not running").
    NotRunning,
    /// `join` before `close` or `terminate` (Python's "Pool is still running").
    StillRunning,
    /// The program exports no entry of this name.
    UnknownEntry(String),
    /// The pool's workers could not be started.
    Spawn(String),
    /// An argument did not serialize, or a result did not deserialize.
    Serde(String),
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Failed(why) => write!(f, "task failed: {why}"),
            TaskError::Timeout => f.write_str("the result is not ready (timeout)"),
            TaskError::NotRunning => f.write_str("Pool not running"),
            TaskError::StillRunning => f.write_str("Pool is still running (close or terminate it before join)"),
            TaskError::UnknownEntry(name) => write!(f, "the program has no entry named `{name}`"),
            TaskError::Spawn(why) => write!(f, "cannot start the pool's workers: {why}"),
            TaskError::Serde(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<Error> for TaskError {
    fn from(error: Error) -> TaskError {
        match error {
            Error::UnknownEntry(name) => TaskError::UnknownEntry(name),
            other => TaskError::Spawn(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Closed,
    Terminated,
}

/// The pool shared by the embedding API and the guest interface.
pub(crate) struct PoolCore {
    host: Arc<HostInner>,
    /// The process whose children the workers are.
    parent: Arc<Node>,
    /// Every worker's launch, its serve channel included.
    template: Launch,
    processes: usize,
    queue: async_channel::Sender<Job>,
    /// Kept to fail the tasks left when the pool ends.
    pending: async_channel::Receiver<Job>,
    state: Mutex<State>,
    /// The current worker of each slot.
    workers: Mutex<Vec<Option<Arc<Node>>>>,
    slots: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    live_slots: AtomicUsize,
    started: AtomicUsize,
    /// Why the last worker could not start, for the tasks left behind.
    spawn_error: Mutex<Option<String>>,
    /// The pool's hold on the shared objects of its initializer's arguments.
    ticket: Option<u64>,
}

/// How a pool is made.
pub(crate) struct Settings {
    pub(crate) processes: usize,
    pub(crate) max_tasks: Option<u32>,
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    pub(crate) task_timeout: Option<Duration>,
}

impl PoolCore {
    /// Starts a pool of `settings.processes` workers, children of `parent`,
    /// each launched as `launch` says (program, grants, limits, output). If
    /// one cannot start (the process cap), those already started are ended
    /// before the error returns: a pool that failed leaves nothing behind.
    pub(crate) async fn start(
        host: &Arc<HostInner>,
        parent: &Arc<Node>,
        mut launch: Launch,
        settings: Settings,
    ) -> Result<Arc<PoolCore>, TaskError> {
        let program = launch.program.clone();
        if program.kind() != ProgramKind::Program {
            return Err(TaskError::Spawn(
                "a pool needs a program of the mp:host world (one that exports named entries)".into(),
            ));
        }
        if let Some((entry, _)) = &settings.initializer
            && !program.has_entry(entry)
        {
            return Err(TaskError::UnknownEntry(entry.clone()));
        }
        if parent.is_daemon() {
            return Err(TaskError::Spawn(Error::DaemonChildren.to_string()));
        }
        let processes = settings.processes.max(1);
        let (queue, pending) = async_channel::unbounded();
        // Shared objects in the initializer's arguments (Python's
        // `initargs`): every worker may open them, as a child opens those
        // in its spawn arguments, and the pool holds them (the holds the
        // parent reserved as it serialized them) until it ends.
        let shared = match &settings.initializer {
            Some((_, input)) => crate::sync::handed_ids(input),
            None => Vec::new(),
        };
        let ticket = (!shared.is_empty()).then(crate::sync::random_u64);
        if let Some(ticket) = ticket {
            let _ = host.sync.call(parent, crate::sync::Request::Hand { ticket, ids: shared }).await;
        }
        launch.work = Work::Serve(ServeChannel {
            tasks: pending.clone(),
            initializer: settings.initializer,
            max_tasks: settings.max_tasks.filter(|&n| n > 0),
            task_timeout: settings.task_timeout,
        });
        let core = Arc::new(PoolCore {
            host: host.clone(),
            parent: parent.clone(),
            template: launch,
            processes,
            queue,
            pending,
            state: Mutex::new(State::Running),
            workers: Mutex::new(vec![None; processes]),
            slots: Mutex::new(Vec::new()),
            live_slots: AtomicUsize::new(processes),
            started: AtomicUsize::new(0),
            spawn_error: Mutex::new(None),
            ticket,
        });
        // The first workers start now, so that a pool that cannot start says so.
        let mut first = Vec::with_capacity(processes);
        for _ in 0..processes {
            match core.start_worker() {
                Ok(node) => first.push(node),
                Err(error) => {
                    core.terminate_now();
                    for node in &first {
                        let _ = node.signal(Signal::Term);
                    }
                    for node in &first {
                        let _ = node.join_async(None).await;
                    }
                    core.release_shared().await;
                    return Err(error.into());
                }
            }
        }
        let handles = first
            .into_iter()
            .enumerate()
            .map(|(slot, node)| host.runtime.spawn(core.clone().run_slot(slot, node)))
            .collect();
        *core.slots.lock().unwrap() = handles;
        Ok(core)
    }

    pub(crate) fn processes(&self) -> usize {
        self.processes
    }

    fn start_worker(&self) -> Result<Arc<Node>, Error> {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let node = self.parent.create_child(self.template.clone());
        node.set_name(format!("PoolWorker-{n}"));
        node.set_daemon(true)?;
        node.start(&self.host)?;
        Ok(node)
    }

    /// Keeps one worker running in `slot` until the pool ends.
    async fn run_slot(self: Arc<PoolCore>, slot: usize, mut node: Arc<Node>) {
        loop {
            self.workers.lock().unwrap()[slot] = Some(node.clone());
            let _ = node.join_async(None).await;
            if self.finished() {
                break;
            }
            match self.start_worker() {
                Ok(next) => node = next,
                Err(error) => {
                    *self.spawn_error.lock().unwrap() = Some(error.to_string());
                    break;
                }
            }
        }
        self.workers.lock().unwrap()[slot] = None;
        if self.live_slots.fetch_sub(1, Ordering::SeqCst) == 1 {
            let why = match self.spawn_error.lock().unwrap().clone() {
                Some(why) => format!("no pool worker is left to run the task: {why}"),
                None => "the pool was terminated before the task ran".to_string(),
            };
            self.fail_pending(&why);
            self.release_shared().await;
        }
    }

    /// Gives up the pool's hold on its initializer's shared objects.
    async fn release_shared(&self) {
        if let Some(ticket) = self.ticket {
            let request = crate::sync::Request::Unticket { ticket };
            let _ = self.host.sync.call(&self.parent, request).await;
        }
    }

    /// Whether a slot whose worker ended should stop rather than replace it.
    fn finished(&self) -> bool {
        let state = *self.state.lock().unwrap();
        state == State::Terminated
            || (state == State::Closed && self.pending.is_empty())
            || self.parent.ended().is_some()
            || self.host.closed.load(Ordering::SeqCst)
    }

    fn fail_pending(&self, why: &str) {
        while let Ok(job) = self.pending.try_recv() {
            job.reply.send(Outcome::Failed(why.to_string()));
        }
    }

    /// Queues a task; it never blocks.
    pub(crate) fn submit(&self, job: Job) -> Result<(), TaskError> {
        let refuse = |job: Job, error: TaskError| {
            job.reply.cancel();
            Err(error)
        };
        if *self.state.lock().unwrap() != State::Running {
            return refuse(job, TaskError::NotRunning);
        }
        if !self.template.program.has_entry(&job.entry) {
            let entry = job.entry.clone();
            return refuse(job, TaskError::UnknownEntry(entry));
        }
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(error) => refuse(error.into_inner(), TaskError::NotRunning),
        }
    }

    /// Takes no more tasks; the workers end once the queued ones are done.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap();
        if *state == State::Running {
            *state = State::Closed;
        }
        self.queue.close();
    }

    /// Ends every worker at once, however busy, without waiting; the tasks
    /// not yet done fail.
    pub(crate) fn terminate_now(&self) {
        *self.state.lock().unwrap() = State::Terminated;
        self.queue.close();
        self.fail_pending("the pool was terminated before the task ran");
        for node in self.workers.lock().unwrap().iter().flatten() {
            let _ = node.signal(Signal::Term);
        }
    }

    /// Waits for every worker to end; an error before `close` or `terminate`.
    pub(crate) fn check_joinable(&self) -> Result<(), TaskError> {
        match *self.state.lock().unwrap() {
            State::Running => Err(TaskError::StillRunning),
            _ => Ok(()),
        }
    }

    /// Waits until every slot has stopped (every worker has ended).
    pub(crate) async fn wait_workers(&self) {
        let handles = std::mem::take(&mut *self.slots.lock().unwrap());
        for handle in handles {
            let _ = handle.await;
        }
        // A second joiner (the handles are gone) waits for the slots too.
        while self.live_slots.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Python's default chunk size for `map`: about four chunks per worker.
    pub(crate) fn default_chunksize(&self, items: usize) -> usize {
        items.div_ceil(self.processes * 4).max(1)
    }

    /// Queues `inputs` for `entry` in chunks of `chunksize`; each chunk's
    /// outcome goes to `deliver` with the chunk's index. Returns each chunk's
    /// size.
    pub(crate) fn submit_chunks(
        &self,
        entry: &str,
        inputs: Batch,
        chunksize: usize,
        deliver: impl Fn(usize, Outcome) + Clone + Send + 'static,
    ) -> Result<Vec<usize>, TaskError> {
        if *self.state.lock().unwrap() != State::Running {
            return Err(TaskError::NotRunning);
        }
        if !self.template.program.has_entry(entry) {
            return Err(TaskError::UnknownEntry(entry.to_string()));
        }
        let chunksize = chunksize.max(1);
        let mut sizes = Vec::with_capacity(inputs.len().div_ceil(chunksize));
        for from in (0..inputs.len()).step_by(chunksize) {
            let chunk = inputs.part(from, from + chunksize);
            let index = sizes.len();
            sizes.push(chunk.len());
            let deliver = deliver.clone();
            let reply = Reply::new(move |outcome| deliver(index, outcome));
            self.submit(Job { entry: entry.to_string(), inputs: chunk, many: true, reply })?;
        }
        Ok(sizes)
    }
}

/// A chunk's outcome, item by item.
pub(crate) struct Chunk(Outcome);

impl Chunk {
    /// The outcome of a chunk of `size` items; a worker that returned
    /// another number of results failed them all.
    pub(crate) fn new(outcome: Outcome, size: usize) -> Chunk {
        Chunk(match outcome {
            Outcome::Done(results) if results.len() != size => {
                Outcome::Failed(format!("the worker returned {} results for {size} items", results.len()))
            }
            other => other,
        })
    }

    /// Item `index`'s result: its bytes, or why it failed.
    pub(crate) fn item(&self, index: usize) -> Result<&[u8], &str> {
        match &self.0 {
            Outcome::Done(results) => results.get(index),
            Outcome::Failed(why) => Err(why),
        }
    }
}

/// The result of a one-input task's outcome.
fn one_result(outcome: Outcome) -> Result<Vec<u8>, TaskError> {
    Chunk::new(outcome, 1).item(0).map(<[u8]>::to_vec).map_err(|why| TaskError::Failed(why.to_string()))
}

/// The result of one task, filled in once.
#[derive(Default)]
pub(crate) struct ResultSlot {
    value: Mutex<Option<Result<Vec<u8>, TaskError>>>,
    ready: Condvar,
    notify: tokio::sync::Notify,
}

impl ResultSlot {
    pub(crate) fn set(&self, value: Result<Vec<u8>, TaskError>) {
        let mut slot = self.value.lock().unwrap();
        if slot.is_none() {
            *slot = Some(value);
            self.ready.notify_all();
            self.notify.notify_waiters();
        }
    }

    /// A slot filled by the outcome of a one-input task.
    pub(crate) fn reply(self: &Arc<ResultSlot>) -> Reply {
        let slot = self.clone();
        Reply::new(move |outcome| slot.set(one_result(outcome)))
    }

    pub(crate) fn get(&self) -> Option<Result<Vec<u8>, TaskError>> {
        self.value.lock().unwrap().clone()
    }

    /// Blocks until filled or `timeout` passes; whether it is filled.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        // A timeout too long to add to the clock is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut value = self.value.lock().unwrap();
        while value.is_none() {
            value = match deadline {
                None => self.ready.wait(value).unwrap(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.ready.wait_timeout(value, left).unwrap().0
                }
            };
        }
        true
    }

    /// [`wait`](Self::wait), without blocking a thread.
    pub(crate) async fn wait_async(&self, timeout: Option<Duration>) -> bool {
        let filled = async {
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.value.lock().unwrap().is_some() {
                    return;
                }
                notified.await;
            }
        };
        match timeout {
            None => {
                filled.await;
                true
            }
            Some(t) => tokio::time::timeout(t, filled).await.is_ok(),
        }
    }
}

fn encode<A: Serialize + ?Sized>(value: &A) -> Result<Vec<u8>, TaskError> {
    codec::encode(value).map_err(|e| TaskError::Serde(format!("cannot serialize a task's argument: {e}")))
}

fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, TaskError> {
    codec::decode(bytes).map_err(|e| TaskError::Serde(format!("cannot deserialize a task's result: {e}")))
}

/// Every item, encoded back to back.
fn encode_all<A: Serialize, I: IntoIterator<Item = A>>(items: I) -> Result<Batch, TaskError> {
    let items = items.into_iter();
    let mut batch = Batch::with_capacity(items.size_hint().0, items.size_hint().0 * 4);
    for item in items {
        batch.push_value(&item).map_err(|e| TaskError::Serde(format!("cannot serialize a task's argument: {e}")))?;
    }
    Ok(batch)
}

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
        let inputs = encode_all(items)?;
        let chunksize = self.core.default_chunksize(inputs.len());
        self.map_batch(entry, inputs, chunksize, decode)?.collect()
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
        let inputs = encode_all(items)?;
        self.map_batch(entry, inputs, chunksize, decode)
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
        let mut results = self.map_batch(entry, batch, chunksize, to_json)?;
        results.ordered = ordered;
        Ok(results)
    }

    fn map_batch<R>(
        &self,
        entry: &str,
        inputs: Batch,
        chunksize: usize,
        decode: fn(&[u8]) -> Result<R, TaskError>,
    ) -> Result<Imap<R>, TaskError> {
        let (sender, receiver) = mpsc::channel();
        let deliver = move |index, outcome| {
            let _ = sender.send((index, outcome));
        };
        let sizes = self.core.submit_chunks(entry, inputs, chunksize, deliver)?;
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

/// The result of [`Pool::apply_async`]: Python's `AsyncResult`.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// # let host = host::Host::new()?;
/// # let program = host.load("target/guests/pool-square.wasm")?;
/// # let pool = host::Pool::new(&program, 2)?;
/// use std::time::Duration;
/// let result = pool.apply_async::<_, i64>("square", &3);
/// result.wait(Some(Duration::from_secs(1)));
/// if result.ready() && result.successful() == Some(true) {
///     println!("{}", result.get(None)?);
/// }
/// # Ok(()) }
/// ```
pub struct AsyncResult<R> {
    slot: Arc<ResultSlot>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the result (up to `timeout`, if given); [`TaskError::Timeout`]
    /// if it is not ready by then.
    pub fn get(&self, timeout: Option<Duration>) -> Result<R, TaskError> {
        if !self.slot.wait(timeout) {
            return Err(TaskError::Timeout);
        }
        decode(&self.slot.get().expect("a ready result")?)
    }

    /// Waits until the result is ready or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) {
        self.slot.wait(timeout);
    }

    /// Whether the task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        self.slot.get().is_some()
    }

    /// Whether the task succeeded; `None` while it is not ready (where
    /// Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        self.slot.get().map(|value| value.is_ok())
    }
}

/// The results of [`Pool::imap`] and [`Pool::imap_unordered`], one per item.
pub struct Imap<R> {
    receiver: mpsc::Receiver<(usize, Outcome)>,
    sizes: Vec<usize>,
    ordered: bool,
    next_chunk: usize,
    received: usize,
    arrived: BTreeMap<usize, Chunk>,
    /// The chunks being read, and the next item of the first.
    current: VecDeque<(Chunk, usize, usize)>,
    decode: fn(&[u8]) -> Result<R, TaskError>,
}

impl<R> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Result<R, TaskError>> {
        loop {
            if let Some((chunk, next, size)) = self.current.front_mut() {
                if *next < *size {
                    let item = chunk.item(*next);
                    *next += 1;
                    return Some(match item {
                        Ok(bytes) => (self.decode)(bytes),
                        Err(why) => Err(TaskError::Failed(why.to_string())),
                    });
                }
                self.current.pop_front();
                continue;
            }
            if self.ordered {
                if let Some(chunk) = self.arrived.remove(&self.next_chunk) {
                    self.current.push_back((chunk, 0, self.sizes[self.next_chunk]));
                    self.next_chunk += 1;
                    continue;
                }
                if self.next_chunk == self.sizes.len() {
                    return None;
                }
            } else if self.received == self.sizes.len() {
                return None;
            }
            // Every submitted chunk is answered exactly once (see `Reply`).
            let (index, outcome) = self.receiver.recv().ok()?;
            self.received += 1;
            let chunk = Chunk::new(outcome, self.sizes[index]);
            if self.ordered {
                self.arrived.insert(index, chunk);
            } else {
                self.current.push_back((chunk, 0, self.sizes[index]));
            }
        }
    }
}
