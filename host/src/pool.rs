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
//! shared queue ([`TaskQueue`]), so at most `processes` tasks run at once
//! and none waits long while a worker is idle (tasks sent ahead to a busy
//! worker are given back for the idle one). `map` and its relatives send
//! one task per chunk of items, which the worker runs with one call into
//! the guest.
//!
//! [`PoolCore`] is the pool itself, shared by the embedding API ([`Pool`])
//! and the guest's `mp:host/pool` interface; both only add typing and
//! blocking (or awaiting) on top of it.

use crate::codec::{self, Batch};
use crate::command::Launch;
use crate::error::Error;
use crate::exit::Signal;
use crate::process::Node;
use crate::program::ProgramKind;
use crate::runtime::HostInner;
pub(crate) use crate::work::Job;
use crate::work::{Outcome, Reply, ServeChannel, TaskQueue, Work};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod embed;
mod results;
pub use embed::{Pool, PoolBuilder};
pub use results::{AsyncResult, Imap};
pub(crate) use results::{Chunk, ResultSlot, ResultsBudget};

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
    /// The task was not queued: the arguments of the tasks its submitter
    /// has queued would pass its memory cap (`--max-memory`).
    QueueFull(String),
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
            TaskError::QueueFull(why) => write!(f, "cannot queue the task: {why}"),
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
    /// The tasks not yet taken by a worker (or given back by one).
    queue: Arc<TaskQueue>,
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
    /// What the arguments of its tasks not yet answered may hold on the
    /// parent's [`Holds`](crate::limits::Holds), with its children's.
    max_held: u64,
}

/// How a pool is made.
pub(crate) struct Settings {
    pub(crate) processes: usize,
    pub(crate) max_tasks: Option<u32>,
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    pub(crate) task_timeout: Option<Duration>,
    /// The submitter's memory cap, which its queued tasks' arguments count
    /// against (`u64::MAX` for the embedder: its bytes are its own).
    pub(crate) max_held: u64,
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
        // More workers than the run may have never start: refused before
        // anything is sized by the count (a guest's `Pool(u32::MAX)`).
        let limit = host.backend.max_processes();
        if processes > limit as usize {
            return Err(TaskError::Spawn(format!(
                "a pool of {processes} workers is more than the run may have alive at once ({limit}): ask for fewer workers or raise --max-processes"
            )));
        }
        let queue = TaskQueue::new();
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
            tasks: queue.clone(),
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
            state: Mutex::new(State::Running),
            workers: Mutex::new(vec![None; processes]),
            slots: Mutex::new(Vec::new()),
            live_slots: AtomicUsize::new(processes),
            started: AtomicUsize::new(0),
            spawn_error: Mutex::new(None),
            ticket,
            max_held: settings.max_held,
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
        self.host.start(&node)?;
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
            || (state == State::Closed && self.queue.exhausted())
            || self.parent.ended().is_some()
            || self.host.closed.load(Ordering::SeqCst)
    }

    fn fail_pending(&self, why: &str) {
        for job in self.queue.drain() {
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
        // Tasks queued and never waited for would otherwise hold the host
        // without bound (their result handles dropped or not): their
        // arguments count on the submitter, as its unstarted children's do,
        // until each is answered.
        let bytes = job.inputs.data.len() as u64;
        let job = match self.parent.holds().hold(bytes, self.max_held) {
            Ok(held) => Job { reply: job.reply.holding(held), ..job },
            Err(why) => return refuse(job, TaskError::QueueFull(why)),
        };
        match self.queue.push(job) {
            Ok(()) => Ok(()),
            Err(job) => refuse(job, TaskError::NotRunning),
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

    /// Where the results of this pool's maps that came and are not yet
    /// taken count: the embedder's (whose arguments are unbounded) on each
    /// map's own count, up to its workers' memory cap, a guest's on its
    /// holds, up to its own.
    pub(crate) fn results_budget(&self) -> ResultsBudget {
        match self.max_held {
            u64::MAX => ResultsBudget::embedder(self.template.limits.max_memory.unwrap_or(self.host.max_memory)),
            limit => ResultsBudget::guest(self.parent.holds(), limit),
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
        self.submit_each(entry, inputs.chunks(chunksize).map(Ok), deliver)
    }

    /// Queues each chunk `chunks` gives for `entry` as soon as it is made,
    /// so that the workers start on the first while the next is encoded;
    /// each chunk's outcome goes to `deliver` with the chunk's index.
    /// Returns each chunk's size; a chunk that could not be made is the
    /// error (those before it still run, their outcomes unread).
    pub(crate) fn submit_each(
        &self,
        entry: &str,
        chunks: impl IntoIterator<Item = Result<Batch, TaskError>>,
        deliver: impl Fn(usize, Outcome) + Clone + Send + 'static,
    ) -> Result<Vec<usize>, TaskError> {
        if *self.state.lock().unwrap() != State::Running {
            return Err(TaskError::NotRunning);
        }
        if !self.template.program.has_entry(entry) {
            return Err(TaskError::UnknownEntry(entry.to_string()));
        }
        let mut sizes = Vec::new();
        for chunk in chunks {
            let chunk = chunk?;
            let index = sizes.len();
            sizes.push(chunk.len());
            let deliver = deliver.clone();
            let reply = Reply::new(move |outcome| deliver(index, outcome));
            self.submit(Job { entry: entry.to_string(), inputs: chunk, many: true, reply })?;
        }
        Ok(sizes)
    }
}

fn encode<A: Serialize + ?Sized>(value: &A) -> Result<Vec<u8>, TaskError> {
    codec::encode(value).map_err(|e| TaskError::Serde(format!("cannot serialize a task's argument: {e}")))
}

fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, TaskError> {
    codec::decode(bytes).map_err(|e| TaskError::Serde(format!("cannot deserialize a task's result: {e}")))
}

/// `items` in chunks of `chunksize`, each encoded back to back as it is
/// asked for.
fn encode_chunks<A: Serialize>(
    items: impl IntoIterator<Item = A>,
    chunksize: usize,
) -> impl Iterator<Item = Result<Batch, TaskError>> {
    let chunksize = chunksize.max(1);
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        let room = chunksize.min(items.size_hint().0).max(1);
        let mut batch = Batch::with_capacity(room, room * 4);
        for item in items.by_ref().take(chunksize) {
            if let Err(e) = batch.push_value(&item) {
                return Some(Err(TaskError::Serde(format!("cannot serialize a task's argument: {e}"))));
            }
        }
        Some(Ok(batch))
    })
}
