//! The lending half of a pool's task queue: the host's side of a worker
//! takes tasks ahead for it (they are sent many in one write), counts them
//! as lent while they may come back, gives back those the worker did not
//! start, and watches for an idle taker to revoke them for; the worker's
//! side takes back, on a revoke, the tasks it has not started.

use crate::work::{Job, Queued, TaskQueue};

/// What a backend whose workers take tasks ahead does with a [`TaskQueue`].
pub(super) trait Lending {
    /// Puts tasks a taker did not start back in front, in their order.
    fn give_back(&self, jobs: impl DoubleEndedIterator<Item = Job>);

    /// A taker that could give back `from` tasks can now give back `to`.
    fn relend(&self, from: usize, to: usize);

    /// At least one task, up to `max` and, past the first, up to
    /// `max_bytes` of inputs, lent ([`TaskQueue::take_lending`]) until the
    /// taker [`relend`](Self::relend)s them (from their number); `None`
    /// once the queue is at its end.
    async fn take(&self, max: usize, max_bytes: usize, idle: bool) -> Option<Vec<Job>>;

    /// Up to `max` tasks queued now, without waiting.
    fn take_now(&self, max: usize) -> Vec<Job>;

    /// Returns once a taker is idle with nothing queued for it.
    async fn idle_taker(&self);

    fn has_idle_taker(&self) -> bool;
}

impl Lending for TaskQueue {
    fn give_back(&self, jobs: impl DoubleEndedIterator<Item = Job>) {
        let mut queued = self.lock();
        jobs.rev().for_each(|job| queued.jobs.push_front(job));
        drop(queued);
        self.wake();
    }

    fn relend(&self, from: usize, to: usize) {
        let mut queued = self.lock();
        queued.lent = queued.lent + to - from;
        let end = queued.at_end();
        drop(queued);
        if end {
            self.wake();
        }
    }

    async fn take(&self, max: usize, max_bytes: usize, idle: bool) -> Option<Vec<Job>> {
        self.take_lending(max, max_bytes, idle, true).await
    }

    fn take_now(&self, max: usize) -> Vec<Job> {
        self.lock().take_front(max, usize::MAX)
    }

    async fn idle_taker(&self) {
        self.wait_for(false, |queued, _| has_idle_taker(queued).then_some(())).await
    }

    fn has_idle_taker(&self) -> bool {
        has_idle_taker(&self.lock())
    }
}

fn has_idle_taker(queued: &Queued) -> bool {
    queued.idle > 0 && queued.jobs.is_empty()
}
