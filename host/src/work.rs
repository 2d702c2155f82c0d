//! What a process runs: its `main`, one named entry with its argument, or a
//! pool worker's task loop.
//!
//! [`Work`] sits below the backends and the pool: a backend carries it to
//! wherever the process runs (the thread backend in place, the native
//! backend to a worker), and the pool is an ordinary client of processes
//! that hands its workers a [`ServeChannel`] to take [`Job`]s from.

use crate::codec::{Batch, BatchResults};
use crate::limits::Held;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a process runs.
#[derive(Clone)]
pub(crate) enum Work {
    /// The program's `main`, with the launch's command-line arguments.
    Main,
    /// A named entry and its argument (JSON).
    Entry { name: String, input: Vec<u8> },
    /// A pool worker: it instantiates the program once and serves tasks.
    Serve(ServeChannel),
}

impl Work {
    /// The entry it calls, `None` for `main` and for a pool worker.
    pub(crate) fn entry(&self) -> Option<&str> {
        match self {
            Work::Entry { name, .. } => Some(name),
            Work::Main | Work::Serve(_) => None,
        }
    }

    /// The argument the process was handed: an entry's, a pool worker's
    /// initializer's (Python's `initargs`); empty for `main`.
    pub(crate) fn input(&self) -> &[u8] {
        match self {
            Work::Entry { input, .. } => input,
            Work::Serve(serve) => serve.initializer.as_ref().map_or(&[], |(_, input)| input),
            Work::Main => &[],
        }
    }
}

/// How a task ended.
pub(crate) enum Outcome {
    /// Its entry ran: one result per input, in order.
    Done(BatchResults),
    /// It ended its worker (a trap, an exceeded limit, its time limit) or its
    /// worker ended under it; the message says which.
    Failed(String),
}

/// Where a task's outcome goes. It is delivered exactly once: a task dropped
/// unanswered (its worker was terminated) reports that. It may carry the
/// count of the task's argument on its submitter's [`Holds`](crate::limits::Holds),
/// released once the task is answered.
pub(crate) struct Reply {
    deliver: Option<Box<dyn FnOnce(Outcome) + Send>>,
    _held: Option<Held>,
}

impl Reply {
    pub(crate) fn new(deliver: impl FnOnce(Outcome) + Send + 'static) -> Reply {
        Reply { deliver: Some(Box::new(deliver)), _held: None }
    }

    /// The same reply, keeping `held` until it is answered.
    pub(crate) fn holding(mut self, held: Held) -> Reply {
        self._held = Some(held);
        self
    }

    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(deliver) = self.deliver.take() {
            deliver(outcome);
        }
    }

    /// Drops the reply without delivering anything.
    pub(crate) fn cancel(mut self) {
        self.deliver = None;
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(deliver) = self.deliver.take() {
            deliver(Outcome::Failed("the task's worker ended before the task finished (it was terminated)".into()));
        }
    }
}

/// One task: an entry and its inputs (MessagePack, back to back), one
/// input unless `many`.
pub(crate) struct Job {
    pub(crate) entry: String,
    pub(crate) inputs: Batch,
    /// A chunk: the entry runs once per input (`call-many`).
    pub(crate) many: bool,
    pub(crate) reply: Reply,
}

/// What makes a process a pool worker: where it takes its tasks from.
#[derive(Clone)]
pub(crate) struct ServeChannel {
    pub(crate) tasks: Arc<TaskQueue>,
    /// An entry and its argument, run once before the first task.
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    /// The worker ends after this many tasks.
    pub(crate) max_tasks: Option<u32>,
    /// A task running longer ends its worker (exitcode -15).
    pub(crate) task_timeout: Option<Duration>,
}

/// A pool's one queue of tasks, which its workers take from (Python's
/// pool has one inqueue too). A taker may take several tasks at once and
/// *lend* them: they may come back (given back, in front and in order,
/// when its worker does not start them), so the queue is at its end only
/// once it is closed, empty and none is lent. A taker that waits holding
/// nothing is *idle*: it is served before takers that already hold a task.
/// How a backend lends (and gives back) is its own business, written on
/// [`lock`](Self::lock), [`wake`](Self::wake) and [`wait_for`](Self::wait_for);
/// the rules every taker obeys are here.
#[derive(Default)]
pub(crate) struct TaskQueue {
    state: Mutex<Queued>,
    changed: tokio::sync::Notify,
}

/// A queue's state, under its lock.
#[derive(Default)]
pub(crate) struct Queued {
    pub(crate) jobs: VecDeque<Job>,
    closed: bool,
    /// Tasks taken that may come back.
    pub(crate) lent: usize,
    /// Takers waiting with nothing in hand.
    pub(crate) idle: usize,
}

impl TaskQueue {
    pub(crate) fn new() -> Arc<TaskQueue> {
        Arc::default()
    }

    /// Its state, to be changed under the lock; whoever changes what a
    /// taker waits for [`wake`](Self::wake)s them after.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap()
    }

    /// Wakes every waiting taker, to look at the state again.
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// Queues `job` at the back; gives it back if the queue is closed.
    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        let mut queued = self.lock();
        if queued.closed {
            return Err(job);
        }
        queued.jobs.push_back(job);
        drop(queued);
        self.wake();
        Ok(())
    }

    /// Takes no more pushes; what is queued (or comes back) is still taken.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    /// Takes every queued task (to fail them).
    pub(crate) fn drain(&self) -> Vec<Job> {
        self.lock().jobs.drain(..).collect()
    }

    /// Whether no task is queued or lent.
    pub(crate) fn exhausted(&self) -> bool {
        let queued = self.lock();
        queued.jobs.is_empty() && queued.lent == 0
    }

    /// The next task; `None` once the queue is at its end.
    pub(crate) async fn next(&self) -> Option<Job> {
        self.take_lending(1, usize::MAX, false, false).await.and_then(|jobs| jobs.into_iter().next())
    }

    /// At least one task, up to `max` and, past the first, up to `max_bytes`
    /// of inputs; `None` once the queue is at its end. An `idle` taker
    /// holds nothing while it waits; one that is not waits while another
    /// is. If `lend`, the tasks taken count as lent until the taker says
    /// otherwise, so that the queue is never seen at its end while they
    /// are on their way.
    pub(crate) async fn take_lending(&self, max: usize, max_bytes: usize, idle: bool, lend: bool) -> Option<Vec<Job>> {
        self.wait_for(idle, |queued, others_idle| {
            if !queued.jobs.is_empty() {
                if others_idle && !idle {
                    return None;
                }
                let jobs = queued.take_front(max, max_bytes);
                if lend {
                    queued.lent += jobs.len();
                }
                Some(Some(jobs))
            } else if queued.at_end() {
                Some(None)
            } else {
                None
            }
        })
        .await
    }

    /// Waits until `ready` (given whether a taker other than this one is
    /// idle) gives a value, counted as idle meanwhile if `idle`.
    /// Cancel-safe: `ready` runs under the lock and only its last call
    /// takes anything.
    pub(crate) async fn wait_for<T>(&self, idle: bool, mut ready: impl FnMut(&mut Queued, bool) -> Option<T>) -> T {
        let mut waiting = Idle { queue: self, counted: false };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queued = self.lock();
                let others_idle = queued.idle > usize::from(waiting.counted);
                if let Some(value) = ready(&mut queued, others_idle) {
                    if waiting.counted {
                        waiting.counted = false;
                        queued.unidle(&self.changed);
                    }
                    return value;
                }
                if idle && !waiting.counted {
                    queued.idle += 1;
                    waiting.counted = true;
                    drop(queued);
                    self.wake();
                }
            }
            notified.await;
        }
    }
}

impl Queued {
    /// Closed, empty, and nothing lent that may come back.
    pub(crate) fn at_end(&self) -> bool {
        self.closed && self.jobs.is_empty() && self.lent == 0
    }

    /// Up to `max` jobs from the front, the first whatever its size, the
    /// others while their inputs stay within `max_bytes`.
    pub(crate) fn take_front(&mut self, max: usize, max_bytes: usize) -> Vec<Job> {
        let (mut count, mut bytes) = (0, 0);
        for job in self.jobs.iter().take(max) {
            bytes += job.inputs.data.len();
            if count > 0 && bytes > max_bytes {
                break;
            }
            count += 1;
        }
        self.jobs.drain(..count).collect()
    }

    /// One idle taker less: the busy ones it held back may take what is left.
    fn unidle(&mut self, changed: &tokio::sync::Notify) {
        self.idle -= 1;
        if !self.jobs.is_empty() {
            changed.notify_waiters();
        }
    }
}

/// A waiter counted as idle, uncounted however its wait ends.
struct Idle<'a> {
    queue: &'a TaskQueue,
    counted: bool,
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.queue.lock().unidle(&self.queue.changed);
        }
    }
}
