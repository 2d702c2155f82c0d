//! The thread backend: every process a Wasm instance on a shared thread pool.
//!
//! A process is a task on the host's tokio runtime, so starting one costs an
//! instantiation from a pre-reserved pool slot, not a new thread, and a
//! sleeping or blocked process costs no thread at all. Guests yield at every
//! epoch tick, so busy ones share the pool's threads. A signal wins a race
//! against the guest's own future, which is then dropped: the process ends at
//! once whether it spins, sleeps, waits in `join` or writes output. Pids are
//! virtual, counting up from the host's own (1).

use super::{Backend, BackendKind, Control};
use crate::command::Launch;
use crate::error::Error;
use crate::exit::Signal;
use crate::instance::{self, Outputs};
use crate::process::{Ended, Node};
use crate::runtime::HostInner;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;

/// The host's own virtual pid.
const HOST_PID: u32 = 1;

pub(crate) struct ThreadBackend {
    next_pid: AtomicU32,
    /// Every process of the run is in this host: one count is the cap.
    live: Arc<AtomicU32>,
    max_processes: u32,
    reaps: Arc<Reaps>,
}

impl ThreadBackend {
    pub(crate) fn new(max_processes: u32) -> ThreadBackend {
        ThreadBackend {
            next_pid: AtomicU32::new(HOST_PID + 1),
            live: Arc::default(),
            max_processes,
            reaps: Arc::default(),
        }
    }

    /// Takes a slot for a new process, unless every one is taken.
    fn admit(&self) -> Result<(), Error> {
        let limit = self.max_processes;
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| (live < limit).then_some(live + 1))
            .map(|_| ())
            .map_err(|_| Error::ProcessLimit { limit })
    }
}

impl Backend for ThreadBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Thread
    }

    fn root_pid(&self) -> u32 {
        HOST_PID
    }

    fn max_processes(&self) -> u32 {
        self.max_processes
    }

    fn tick_epochs(&self, engine: &wasmtime::Engine) -> std::io::Result<()> {
        let reaps = Arc::downgrade(&self.reaps);
        crate::runtime::tick_epochs_then(engine, move || {
            if let Some(reaps) = reaps.upgrade() {
                reaps.wake_all();
            }
        })
    }

    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error> {
        self.admit()?;
        // Instances of ended processes go before a new one: this start wakes
        // the runtime anyway.
        self.reaps.wake_all();
        node.set_pid(self.next_pid.fetch_add(1, Ordering::Relaxed));
        let (signals, signalled) = oneshot::channel();
        let end = Arc::new(End {
            state: AtomicU8::new(IDLE),
            outputs: Outputs::new(launch),
            node: Arc::downgrade(node),
            host: Arc::downgrade(host),
            live: self.live.clone(),
        });
        // Boxed: the task keeps room for what it captures as long as the
        // process lives, and the launch is only read as it starts.
        let (host, node, launch, task_end) = (host.clone(), node.clone(), Box::new(launch.clone()), end.clone());
        let engine = host.engine.clone();
        host.runtime.clone().spawn(async move {
            // Dropped last, after the instance: its memory is free again.
            let _reaped = Reaped(node.clone());
            let end = task_end;
            // Made in place: a future moved into `pin!` would be stored twice.
            let mut guest =
                std::pin::pin!(instance::run_until_deadline(host.clone(), node.clone(), launch, &end.outputs));
            // Borrowed, not moved in: a guest ended by a signal is torn
            // down after its end is reported, not before.
            let racing = std::pin::pin!(async {
                tokio::select! {
                    biased;
                    Ok(signal) = signalled => Ended::signal(signal),
                    ended = &mut guest => ended,
                }
            });
            // `None`: a signal ended the process while it waited.
            if let Some(ended) = (Polled { end: &end, guest: racing }).await {
                // A joiner watching for the end may share this cpu (the
                // scheduler packs threads onto few): it goes first, rather
                // than only once the instance is torn down.
                if end.finish(&host, &node, ended) {
                    std::thread::yield_now();
                }
            }
            // The instance is torn down only after this, when `guest` goes
            // out of scope: joiners need not wait for it.
        });
        Ok(Arc::new(ThreadControl { signals: Mutex::new(Some(signals)), engine, end, reaps: self.reaps.clone() }))
    }
}

/// The guest's future is not being polled: a signal may end the process at once.
const IDLE: u8 = 0;
/// A thread is running the guest: a signal must reach it through its task.
const POLLING: u8 = 1;
/// The process has ended: whoever moved it here reports the end.
const ENDED: u8 = 2;

/// How a process's end is reported, by its task or by a signal.
///
/// A process that waits (sleeps, blocks on a queue, joins) runs no code:
/// the signal that terminates it ends it there and then, from the
/// signalling thread, rather than waking a thread to poll the guest only to
/// find the signal. Its task then drops the guest when it next runs (see
/// [`Reaps`]).
struct End {
    /// [`IDLE`], [`POLLING`] or [`ENDED`].
    state: AtomicU8,
    outputs: Outputs,
    /// Weak: the node holds the process's control, which holds this.
    node: Weak<Node>,
    host: Weak<HostInner>,
    live: Arc<AtomicU32>,
}

impl End {
    /// Passes on the last output, frees the process's slot and records
    /// its end (which wakes its joiners); whether a joiner was watching
    /// for it ([`Node::finish`]).
    fn finish(&self, host: &HostInner, node: &Node, ended: Ended) -> bool {
        self.state.store(ENDED, Ordering::Release);
        self.outputs.finish();
        // The slot is free before a joiner wakes, so that it can start
        // another at once; the instance pool has room beyond the cap for
        // the instances still being torn down.
        self.live.fetch_sub(1, Ordering::AcqRel);
        node.finish(host, ended)
    }

    /// Ends the process by `signal` if no thread runs it; false if one does.
    fn end_waiting(&self, signal: Signal) -> bool {
        if self.state.compare_exchange(IDLE, ENDED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // The task holds both while it has not ended, and it has not: it
        // only ends by its own poll, which this state now forbids.
        if let (Some(host), Some(node)) = (self.host.upgrade(), self.node.upgrade()) {
            self.finish(&host, &node, Ended::signal(signal));
        }
        true
    }
}

/// The guest's future, polled only while no signal has ended the process.
struct Polled<'a, F> {
    end: &'a End,
    guest: std::pin::Pin<&'a mut F>,
}

impl<F: std::future::Future<Output = Ended>> std::future::Future for Polled<'_, F> {
    type Output = Option<Ended>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Ended>> {
        use std::task::Poll;
        let state = &self.end.state;
        if state.compare_exchange(IDLE, POLLING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Poll::Ready(None);
        }
        match self.guest.as_mut().poll(cx) {
            Poll::Ready(ended) => Poll::Ready(Some(ended)),
            Poll::Pending => {
                state.store(IDLE, Ordering::Release);
                Poll::Pending
            }
        }
    }
}

/// Logs a process's instance torn down: the thread backend's reap.
struct Reaped(Arc<Node>);

impl Drop for Reaped {
    fn drop(&mut self) {
        tracing::info!(parent: self.0.span(), "reap");
    }
}

/// The sending end of a process's one signal.
struct ThreadControl {
    signals: Mutex<Option<oneshot::Sender<Signal>>>,
    engine: wasmtime::Engine,
    end: Arc<End>,
    reaps: Arc<Reaps>,
}

impl Control for ThreadControl {
    fn signal(&self, signal: Signal) {
        let Some(signals) = self.signals.lock().unwrap().take() else { return };
        if self.end.end_waiting(signal) {
            // Ended here: its task has only the instance to tear down.
            self.reaps.defer(signals, signal);
            return;
        }
        // The task notices the signal in the running guest.
        let _ = signals.send(signal);
        // A guest in a tight loop notices the signal at its next epoch
        // check; tick now rather than at the next time slice.
        self.engine.increment_epoch();
    }
}

/// How many ended processes' tasks may wait to be woken before the
/// signalling thread wakes them itself.
const REAPS_DEFERRED_MAX: usize = 16;

/// The tasks of processes a signal ended while they waited, still to be
/// woken to tear their instances down.
///
/// Waking a task wakes an idle runtime thread, which on a busy machine
/// takes the signaller's CPU for the teardown: the caller of `terminate`,
/// about to `join`, would wait for it although the process has ended.
/// Instead the wake-up is left to a thread that wakes anyway: the next
/// start, or the epoch ticker within a time slice. The cap's slot is free
/// at once either way; a few instances more in teardown at a time is what
/// the pooled layout's spare slots are for.
#[derive(Default)]
struct Reaps {
    pending: Mutex<Vec<(oneshot::Sender<Signal>, Signal)>>,
}

impl Reaps {
    fn defer(&self, signals: oneshot::Sender<Signal>, signal: Signal) {
        let mut pending = self.pending.lock().unwrap();
        pending.push((signals, signal));
        if pending.len() >= REAPS_DEFERRED_MAX {
            let due = std::mem::take(&mut *pending);
            drop(pending);
            wake(due);
        }
    }

    fn wake_all(&self) {
        let due = std::mem::take(&mut *self.pending.lock().unwrap());
        wake(due);
    }
}

fn wake(due: Vec<(oneshot::Sender<Signal>, Signal)>) {
    for (signals, signal) in due {
        let _ = signals.send(signal);
    }
}
