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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The host's own virtual pid.
const HOST_PID: u32 = 1;

pub(crate) struct ThreadBackend {
    next_pid: AtomicU32,
    /// Every process of the run is in this host: one count is the cap.
    live: Arc<AtomicU32>,
    max_processes: u32,
}

impl ThreadBackend {
    pub(crate) fn new(max_processes: u32) -> ThreadBackend {
        ThreadBackend { next_pid: AtomicU32::new(HOST_PID + 1), live: Arc::default(), max_processes }
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

    fn start(&self, host: &Arc<HostInner>, node: &Arc<Node>, launch: &Launch) -> Result<Arc<dyn Control>, Error> {
        self.admit()?;
        let live = self.live.clone();
        node.set_pid(self.next_pid.fetch_add(1, Ordering::Relaxed));
        let (signals, signalled) = oneshot::channel();
        // Boxed: the task keeps room for what it captures as long as the
        // process lives, and the launch is only read as it starts.
        let (host, node, launch) = (host.clone(), node.clone(), Box::new(launch.clone()));
        let engine = host.engine.clone();
        host.runtime.clone().spawn(async move {
            // Dropped last, after the instance: its memory is free again.
            let _reaped = Reaped(node.clone());
            let outputs = Outputs::new(&launch);
            // Made in place: a future moved into `pin!` would be stored twice.
            let mut guest = std::pin::pin!(instance::run_until_deadline(host.clone(), node.clone(), launch, &outputs));
            let ended = tokio::select! {
                biased;
                Ok(signal) = signalled => Ended::signal(signal),
                ended = &mut guest => ended,
            };
            outputs.finish();
            // The slot is free before a joiner wakes, so that it can start
            // another at once; the instance pool has room beyond the cap for
            // the instances still being torn down.
            live.fetch_sub(1, Ordering::AcqRel);
            // The instance is torn down only after this, when `guest` goes
            // out of scope: joiners need not wait for it.
            node.finish(&host, ended);
        });
        Ok(Arc::new(ThreadControl { signals: Mutex::new(Some(signals)), engine }))
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
}

impl Control for ThreadControl {
    fn signal(&self, signal: Signal) {
        if let Some(signals) = self.signals.lock().unwrap().take() {
            let _ = signals.send(signal);
            // A guest in a tight loop notices the signal at its next epoch
            // check; tick now rather than at the next time slice.
            self.engine.increment_epoch();
        }
    }
}
