//! The host's side of a pool worker: tasks taken from the pool's queue are
//! sent ahead to the worker, several in one write, so that it does not wait
//! for the host between quick tasks, and their results are delivered as
//! they come. Tasks sent ahead and not started go back to the pool's queue
//! when another worker has idled for a moment (a revoke, which the worker
//! answers with how many it had not started) and when the worker ends, by
//! a signal included: only the task it was running fails with it, as in
//! Python, where a worker takes one task at a time from the shared queue.

use super::channel::{Orders, Reports};
use super::lending::Lending;
use super::protocol::{self, Order, Report};
use super::supervise::last_report;
use crate::work::{Job, Outcome, ServeChannel, TaskQueue};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// The most tasks sent ahead to one worker.
const WINDOW: usize = 64;
/// The most bytes of inputs sent ahead to one worker, past its first task.
const WINDOW_BYTES: usize = 1 << 20;
/// How long another worker idles while this one holds tasks it has not
/// started before they are revoked: quick tasks are done sooner than a
/// revoke and its answer would take.
const REVOKE_AFTER: Duration = Duration::from_millis(2);

/// Where a revoke of the tasks sent ahead stands.
#[derive(Clone, Copy)]
enum Revoke {
    Idle,
    /// Another worker was seen idle then.
    Noticed(Instant),
    /// Sent after the task of this id.
    Sent(u64),
}

/// The tasks sent to a worker and not answered, in the order sent (and so
/// run), with the queue told how many it could give back.
struct InFlight<'a> {
    queue: &'a TaskQueue,
    tasks: VecDeque<(u64, Job)>,
    /// All but the first, which may be running.
    lent: usize,
}

impl InFlight<'_> {
    fn recount(&mut self) {
        let lent = self.tasks.len().saturating_sub(1);
        self.queue.relend(self.lent, lent);
        self.lent = lent;
    }

    /// The worker has ended: the tasks after the first were not started
    /// (each result is written before the next task is taken) and go back
    /// to the queue; the first, which was running (or about to), is returned.
    fn ended(&mut self) -> Option<Job> {
        let first = self.tasks.pop_front().map(|(_, job)| job);
        self.queue.give_back(self.tasks.drain(..).map(|(_, job)| job));
        first
    }

    /// The worker gave back the last `count` tasks sent up to id `through`.
    fn returned(&mut self, through: u64, count: u64) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let end = self.tasks.iter().position(|(id, _)| *id == through).ok_or("an answered task was given back")? + 1;
        let start = usize::try_from(count).ok().and_then(|count| end.checked_sub(count));
        let start = start.ok_or("more tasks were given back than were sent")?;
        let jobs: Vec<Job> = self.tasks.drain(start..end).map(|(_, job)| job).collect();
        self.queue.give_back(jobs.into_iter());
        Ok(())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // The tasks left fail as their replies are dropped.
        self.queue.relend(self.lent, 0);
    }
}

/// Serves the pool's tasks to the worker `pid` until the queue is at its
/// end (then the worker is told no more come, and ends), the worker has
/// been sent its `max_tasks`, or it ends. Returns its final report, once
/// its channel is over.
pub(super) async fn bridge(
    pid: u32,
    serve: &ServeChannel,
    orders: Orders,
    mut reports: Reports,
) -> Result<Option<protocol::Ended>, String> {
    let queue = &*serve.tasks;
    let mut flight = InFlight { queue, tasks: VecDeque::new(), lent: 0 };
    // How many more tasks the worker may be sent.
    let mut left = serve.max_tasks.map_or(usize::MAX, |max| max as usize);
    let (mut sent, mut taking, mut revoke) = (0u64, true, Revoke::Idle);
    loop {
        let room = if taking { (WINDOW - flight.tasks.len()).min(left) } else { 0 };
        // A revoke is answered even when every task it could take back was
        // answered first (`Returned` of none): that answer is awaited here,
        // where it is expected, not met after the loop as a stray report.
        if room == 0 && flight.tasks.is_empty() && !matches!(revoke, Revoke::Sent(_)) {
            break;
        }
        let lending = flight.tasks.len() > 1;
        if !lending && matches!(revoke, Revoke::Noticed(_)) {
            revoke = Revoke::Idle;
        }
        let noticed = match revoke {
            Revoke::Noticed(at) => Some(at + REVOKE_AFTER),
            _ => None,
        };
        tokio::select! {
            biased;
            report = reports.recv() => {
                if let ControlFlow::Break(ended) = on_report(&mut flight, &mut revoke, report)? {
                    return last_report(&mut reports, ended, matches!(revoke, Revoke::Sent(_))).await;
                }
            }
            jobs = queue.take(room, WINDOW_BYTES, flight.tasks.is_empty()), if room > 0 => match jobs {
                Some(jobs) => {
                    // Counted as lent by the queue until recounted below.
                    left -= jobs.len();
                    flight.lent += jobs.len();
                    taking = send(&orders, pid, jobs, &mut flight, &mut sent).await.is_ok();
                }
                None => taking = false,
            },
            () = queue.idle_taker(), if lending && matches!(revoke, Revoke::Idle) => {
                revoke = Revoke::Noticed(Instant::now());
            }
            () = tokio::time::sleep_until(noticed.unwrap_or_else(Instant::now).into()), if noticed.is_some() => {
                revoke = Revoke::Idle;
                if queue.has_idle_taker() {
                    let order = orders.frame(&Order::Revoke).map_err(|e| e.to_string())?;
                    match orders.write(&order).await {
                        Ok(()) => revoke = Revoke::Sent(sent),
                        Err(_) => taking = false,
                    }
                }
            }
        }
        flight.recount();
    }
    if let Ok(close) = orders.frame(&Order::Close) {
        // The worker gone already: its end says so.
        let _ = orders.write(&close).await;
    }
    last_report(&mut reports, None, false).await
}

/// Sends `jobs` to the worker in one write, each as the task of the next id.
/// A task too large to send fails alone; a failed write leaves the tasks in
/// flight, to be answered as the worker ends.
async fn send(
    orders: &Orders,
    pid: u32,
    jobs: Vec<Job>,
    flight: &mut InFlight<'_>,
    sent: &mut u64,
) -> std::io::Result<()> {
    let mut frames = Vec::new();
    for mut job in jobs {
        let id = *sent + 1;
        let inputs = std::mem::take(&mut job.inputs);
        let order = Order::Task(protocol::Task { id, entry: job.entry.clone(), inputs, many: job.many });
        let encoded = orders.frame(&order);
        // The inputs stay with the job, to be sent again if it is given back.
        if let Order::Task(task) = order {
            job.inputs = task.inputs;
        }
        match encoded {
            Ok(frame) => {
                frames.extend_from_slice(&frame);
                *sent = id;
                flight.tasks.push_back((id, job));
            }
            Err(error) => job.reply.send(Outcome::Failed(format!("cannot hand the task to worker {pid}: {error}"))),
        }
    }
    orders.write(&frames).await
}

/// Delivers what the worker reported; `Break` with its final report (`None`
/// after a signal) once it has ended.
fn on_report(
    flight: &mut InFlight<'_>,
    revoke: &mut Revoke,
    report: Option<Result<Report, String>>,
) -> Result<ControlFlow<Option<protocol::Ended>>, String> {
    match report {
        Some(Ok(Report::Done { id, results })) => match flight.tasks.pop_front() {
            Some((sent, job)) if sent == id && results.len() == job.inputs.len() => {
                job.reply.send(Outcome::Done(results));
            }
            _ => return Err("a result for another task".into()),
        },
        Some(Ok(Report::Returned { count })) => {
            let Revoke::Sent(through) = *revoke else {
                return Err("tasks given back unasked".into());
            };
            *revoke = Revoke::Idle;
            flight.returned(through, count)?;
        }
        Some(Ok(Report::Ended(ended))) => {
            if let Some(job) = flight.ended() {
                let why = ended.reason.clone().unwrap_or_else(|| format!("its worker exited with code {}", ended.code));
                job.reply.send(Outcome::Failed(why));
            }
            return Ok(ControlFlow::Break(Some(ended)));
        }
        Some(Err(why)) => return Err(why),
        // Ended by a signal: the task it ran fails as its reply is dropped.
        None => {
            drop(flight.ended());
            return Ok(ControlFlow::Break(None));
        }
    }
    Ok(ControlFlow::Continue(()))
}
