//! What a process runs: its `main`, one named entry with its argument, or a
//! pool worker's task loop.
//!
//! [`Work`] sits below the backends and the pool: a backend carries it to
//! wherever the process runs (the thread backend in place, the native
//! backend to a worker), and the pool is an ordinary client of processes
//! that hands its workers a [`ServeChannel`] to take [`Job`]s from.

use crate::codec::{Batch, BatchResults};
use crate::limits::Held;
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
    pub(crate) tasks: async_channel::Receiver<Job>,
    /// An entry and its argument, run once before the first task.
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    /// The worker ends after this many tasks.
    pub(crate) max_tasks: Option<u32>,
    /// A task running longer ends its worker (exitcode -15).
    pub(crate) task_timeout: Option<Duration>,
}
