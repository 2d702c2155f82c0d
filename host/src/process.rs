//! A process: its place in the process tree, its lifecycle and its end.
//!
//! [`Node`] is the state of one process shared by everyone who may look at
//! it: the embedder's [`Process`](crate::Process) handle (in `handle.rs`),
//! the guest that created it, the backend that runs it, and the tree (its
//! parent's children, the root that adopts orphans). It follows Python's lifecycle: created, started once,
//! ended (observed through `join`, `is_alive`, `exitcode`), and closed. The
//! backends only start a process and report its end through
//! [`Node::finish`]; every rule of the lifecycle lives here, written once.

use crate::command::Launch;
use crate::error::Error;
use crate::exit::{ExitCode, Signal};
use crate::journal::{Journal, ProcessRecord, Usage};
use crate::limits::{Held, Holds};
use crate::set_once::SetOnce;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How a process ended: its code and, for a failure, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) code: ExitCode,
    pub(crate) reason: Option<String>,
}

impl Ended {
    pub(crate) fn code(code: i32) -> Ended {
        Ended { code: ExitCode::from(code), reason: None }
    }

    pub(crate) fn signal(signal: Signal) -> Ended {
        Ended { code: ExitCode::from_signal(signal), reason: None }
    }

    pub(crate) fn failure(reason: String) -> Ended {
        Ended { code: ExitCode::FAILURE, reason: Some(reason) }
    }
}

enum State {
    /// Its launch, and its argument's count on its parent's [`Holds`] (kept
    /// for its `Drop`): a guest cannot park unbounded bytes in children it
    /// never starts.
    Created {
        launch: Box<Launch>,
        _held: Held,
    },
    Running(Arc<dyn Control>),
    Closed,
}

/// Delivers signals to one running process (its backend's way to it).
pub(crate) trait Control: Send + Sync {
    fn signal(&self, signal: Signal);
}

/// What the lifecycle rules need of the host whose tree a process is in:
/// the top of the tree (which adopts orphans), the count of its running
/// non-daemon processes, its journal, and whether it still starts any.
pub(crate) trait Tree {
    fn root(&self) -> &Arc<Node>;
    fn live(&self) -> &Live;
    fn journal(&self) -> Option<&Journal>;
    fn is_closed(&self) -> bool;
}

impl<T: Tree> Tree for Arc<T> {
    fn root(&self) -> &Arc<Node> {
        (**self).root()
    }

    fn live(&self) -> &Live {
        (**self).live()
    }

    fn journal(&self) -> Option<&Journal> {
        (**self).journal()
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
}

/// The count of running non-daemon processes, which the host waits on.
#[derive(Default)]
pub(crate) struct Live {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Live {
    pub(crate) fn add(&self) {
        *self.count.lock().unwrap() += 1;
    }

    pub(crate) fn remove(&self) {
        let mut count = self.count.lock().unwrap();
        *count -= 1;
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    pub(crate) fn wait_idle(&self) {
        let mut count = self.count.lock().unwrap();
        while *count > 0 {
            count = self.idle.wait(count).unwrap();
        }
    }
}

/// One process as the host tracks it.
pub(crate) struct Node {
    name: Mutex<String>,
    daemon: AtomicBool,
    /// 0 until the backend gives one (no process of a run has pid 0); a
    /// forked child takes its own on the copy of its parent's node.
    pid: AtomicU32,
    ppid: AtomicU32,
    state: Mutex<State>,
    ended: SetOnce<Ended>,
    children: Mutex<Vec<Arc<Node>>>,
    /// Bytes held in the host for this process outside its memory.
    holds: Holds,
    /// The process that created this one, while anyone holds it (none for
    /// the top of a tree).
    parent: Weak<Node>,
    created: AtomicU32,
    /// Unset again if the start is refused (the process cap).
    started_at: Mutex<Option<Instant>>,
    ended_at: OnceLock<Instant>,
    /// What the process used, measured where it runs (shared with its
    /// store's memory limiter).
    pub(crate) usage: Arc<Usage>,
    /// Its span in the host's logs (`RUST_LOG=host=info`), from its start.
    span: OnceLock<tracing::Span>,
}

impl Node {
    fn new(name: String, ppid: u32, state: State) -> Arc<Node> {
        Node::with_parent(name, ppid, state, Weak::new())
    }

    fn with_parent(name: String, ppid: u32, state: State, parent: Weak<Node>) -> Arc<Node> {
        Arc::new(Node {
            name: Mutex::new(name),
            daemon: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            ppid: AtomicU32::new(ppid),
            state: Mutex::new(state),
            ended: SetOnce::default(),
            children: Mutex::new(Vec::new()),
            holds: Holds::default(),
            parent,
            created: AtomicU32::new(0),
            started_at: Mutex::new(None),
            ended_at: OnceLock::new(),
            usage: Arc::default(),
            span: OnceLock::new(),
        })
    }

    /// The host itself: parent of root processes, adopter of orphans.
    pub(crate) fn root(pid: u32) -> Arc<Node> {
        Node::top(pid, "MainProcess".into(), 0, false, None)
    }

    /// The top of a host's tree, `pid`: the host itself (`control` `None`:
    /// it is not signalled as a process), or a host that is itself one
    /// process of a larger run, named `name`, signalled through `control`.
    pub(crate) fn top(pid: u32, name: String, ppid: u32, daemon: bool, control: Option<Arc<dyn Control>>) -> Arc<Node> {
        let state = match control {
            Some(control) => State::Running(control),
            None => State::Closed,
        };
        let node = Node::new(name, ppid, state);
        node.set_pid(pid);
        node.daemon.store(daemon, Ordering::SeqCst);
        node
    }

    /// The children still running.
    pub(crate) fn live_children(&self) -> Vec<Arc<Node>> {
        self.children.lock().unwrap().iter().filter(|c| c.is_alive()).cloned().collect()
    }

    /// The process that created this one, if it is still held by anyone
    /// (a process that has ended may still be).
    pub(crate) fn parent(&self) -> Option<Arc<Node>> {
        self.parent.upgrade()
    }

    /// A process of the run that is not in this host's tree (a native
    /// worker's parent, another OS process): running, as far as this host
    /// knows, until [`observe_end`](Node::observe_end); `control` is what
    /// signals it would go through.
    // Only a backend whose processes run outside the host makes one.
    #[cfg(outside_processes)]
    pub(crate) fn outside(pid: u32, name: String, control: Arc<dyn Control>) -> Arc<Node> {
        let node = Node::new(name, 0, State::Running(control));
        node.set_pid(pid);
        node
    }

    /// Records that a process [`outside`](Node::outside) the tree has ended
    /// (how, this host cannot know): its waiters are woken; nothing of the
    /// tree or the run's counts changes.
    #[cfg(outside_processes)]
    pub(crate) fn observe_end(&self, ended: Ended) {
        // Set before the end, as by `finish`: a second call finds both set.
        let _ = self.ended_at.set(Instant::now());
        self.ended.set(ended);
    }

    /// A process outside the tree, for looking into a program once.
    pub(crate) fn detached() -> Arc<Node> {
        Node::new("probe".into(), 0, State::Closed)
    }

    /// A new, not yet started child of `self`, named `Process-N`, its
    /// argument held on `self` without bound (see [`Node::create_child_within`]).
    pub(crate) fn create_child(self: &Arc<Node>, launch: Launch) -> Arc<Node> {
        let held = self.holds.hold_unbounded(launch.work.input().len() as u64);
        self.adopt(launch, held)
    }

    /// A new, not yet started child of `self`, unless its argument would
    /// take what `self` has the host hold past `limit` (its memory cap).
    pub(crate) fn create_child_within(self: &Arc<Node>, launch: Launch, limit: u64) -> Result<Arc<Node>, String> {
        let held = self.holds.hold(launch.work.input().len() as u64, limit)?;
        Ok(self.adopt(launch, held))
    }

    fn adopt(self: &Arc<Node>, launch: Launch, held: Held) -> Arc<Node> {
        let n = self.created.fetch_add(1, Ordering::Relaxed) + 1;
        let ppid = self.pid().unwrap_or_default();
        let state = State::Created { launch: Box::new(launch), _held: held };
        let child = Node::with_parent(format!("Process-{n}"), ppid, state, Arc::downgrade(self));
        let mut children = self.children.lock().unwrap();
        // Ended children are dropped when the list is full, and so are
        // those never started that only the list still holds (nobody can
        // start them any more: a guest that creates processes and drops
        // them would otherwise grow the host without end); the list
        // doubles if that leaves it more than half full: amortised constant
        // time per child however many are alive (100,000 at once). No other
        // holder can appear meanwhile: a child is only reached through
        // this list (locked) or a holder's own reference.
        if children.len() == children.capacity() {
            children.retain(|c| c.ended().is_none() && (c.is_alive() || Arc::strong_count(c) > 1));
            if children.len() > children.capacity() / 2 {
                let more = children.capacity().max(4);
                children.reserve(more);
            }
        }
        children.push(child.clone());
        child
    }

    /// What the host holds for this process outside its memory.
    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }

    /// Changes the launch of a process not yet started; `None` after.
    pub(crate) fn update_launch<R>(&self, f: impl FnOnce(&mut Launch) -> R) -> Option<R> {
        match &mut *self.state.lock().unwrap() {
            State::Created { launch, .. } => Some(f(launch)),
            _ => None,
        }
    }

    /// The backend gives the process its pid as it spawns it, before
    /// anything can observe the process.
    pub(crate) fn set_pid(&self, pid: u32) {
        let _ = self.pid.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(span) = self.span.get() {
            span.record("pid", pid);
            tracing::info!(parent: span, "spawn");
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|&pid| pid != 0)
    }

    pub(crate) fn ppid(&self) -> u32 {
        self.ppid.load(Ordering::SeqCst)
    }

    pub(crate) fn name(&self) -> String {
        self.name.lock().unwrap().clone()
    }

    pub(crate) fn set_name(&self, name: String) {
        *self.name.lock().unwrap() = name;
    }

    pub(crate) fn is_daemon(&self) -> bool {
        self.daemon.load(Ordering::SeqCst)
    }

    pub(crate) fn set_daemon(&self, daemon: bool) -> Result<(), Error> {
        match &*self.state.lock().unwrap() {
            State::Created { .. } => {
                self.daemon.store(daemon, Ordering::SeqCst);
                Ok(())
            }
            State::Running(_) => Err(Error::AlreadyStarted),
            State::Closed => Err(Error::Closed),
        }
    }

    /// Starts the process in `host`'s tree with `spawn`, which the backend
    /// gives (its start; a fork: the process exists once `spawn` returns).
    pub(crate) fn start_with(
        self: &Arc<Node>,
        host: &impl Tree,
        spawn: impl FnOnce(&Launch) -> Result<Arc<dyn Control>, Error>,
    ) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap();
        let launch = match &mut *state {
            State::Created { launch, .. } => launch,
            State::Running(_) => return Err(Error::AlreadyStarted),
            State::Closed => return Err(Error::Closed),
        };
        if let Some(entry) = launch.work.entry()
            && !launch.program.has_entry(entry)
        {
            return Err(Error::UnknownEntry(entry.to_string()));
        }
        if host.is_closed() {
            return Err(Error::Spawn("the host is shutting down".into()));
        }
        // Prepared on a copy: a refused start (the process cap) leaves the
        // process as it was, to be started later with a fresh deadline.
        let mut launch = (**launch).clone();
        launch.prepare(&self.name());
        *self.started_at.lock().unwrap() = Some(Instant::now());
        let daemon = self.is_daemon();
        if !daemon {
            host.live().add();
        }
        // The span exists before the backend starts the process: its spawn
        // event goes with its pid (`set_pid`), and its end may come at once.
        let entry = launch.work.entry().unwrap_or("main");
        let pid = tracing::field::Empty;
        let _ =
            self.span.set(tracing::info_span!("process", name = %self.name(), pid, ppid = self.ppid(), entry, daemon));
        match spawn(&launch) {
            Ok(control) => {
                *state = State::Running(control);
                Ok(())
            }
            Err(error) => {
                *self.started_at.lock().unwrap() = None;
                if !daemon {
                    host.live().remove();
                }
                tracing::warn!(name = %self.name(), %error, "spawn failed");
                Err(error)
            }
        }
    }

    /// Records the end of the process: daemon children are terminated,
    /// the others adopted by the root; then waiters are woken. Whether a
    /// thread was watching for the end as it came (a joiner about to see it
    /// without sleeping).
    pub(crate) fn finish(&self, host: &impl Tree, ended: Ended) -> bool {
        let children = std::mem::take(&mut *self.children.lock().unwrap());
        let orphans: Vec<Arc<Node>> = children.into_iter().filter(|c| c.is_alive()).collect();
        for child in &orphans {
            if child.is_daemon() {
                let _ = child.signal(Signal::Term);
            } else {
                child.ppid.store(host.root().pid().unwrap_or_default(), Ordering::SeqCst);
            }
        }
        let adopted: Vec<Arc<Node>> = orphans.into_iter().filter(|c| !c.is_daemon()).collect();
        let orphans = adopted.len();
        host.root().children.lock().unwrap().extend(adopted);
        let _ = self.ended_at.set(Instant::now());
        tracing::info!(
            parent: self.span(),
            exitcode = ended.code.code(),
            failure = ended.reason.as_deref(),
            orphans,
            "end"
        );
        let watched = self.ended.is_watched();
        // Its record is in the journal before any waiter wakes.
        self.ended.set_then(ended, || {
            if let Some(journal) = host.journal()
                && let Some(record) = self.record()
            {
                journal.push(record);
            }
        });
        if !self.is_daemon() {
            host.live().remove();
        }
        watched
    }

    pub(crate) fn ended(&self) -> Option<Ended> {
        self.ended.get()
    }

    /// The process's span in the host's logs (a disabled one before start).
    pub(crate) fn span(&self) -> &tracing::Span {
        static NONE: std::sync::LazyLock<tracing::Span> = std::sync::LazyLock::new(tracing::Span::none);
        self.span.get().unwrap_or(&NONE)
    }

    /// Its record, once it has ended.
    pub(crate) fn record(&self) -> Option<ProcessRecord> {
        let ended = self.ended()?;
        Some(ProcessRecord {
            name: self.name(),
            pid: self.pid().unwrap_or_default(),
            ppid: self.ppid(),
            daemon: self.is_daemon(),
            exitcode: ended.code,
            failure: ended.reason,
            wall: self.run_time().unwrap_or_default(),
            fuel_used: self.usage.fuel_used(),
            peak_memory: self.usage.peak_memory(),
        })
    }

    /// From start to end (or to now, while running).
    pub(crate) fn run_time(&self) -> Option<Duration> {
        let started = (*self.started_at.lock().unwrap())?;
        Some(self.ended_at.get().copied().unwrap_or_else(Instant::now) - started)
    }

    pub(crate) fn exitcode(&self) -> Option<ExitCode> {
        self.ended().map(|e| e.code)
    }

    pub(crate) fn is_alive(&self) -> bool {
        matches!(*self.state.lock().unwrap(), State::Running(_)) && !self.ended.is_set()
    }

    fn check_started(&self) -> Result<(), Error> {
        match &*self.state.lock().unwrap() {
            State::Created { .. } => Err(Error::NotStarted),
            State::Running(_) => Ok(()),
            State::Closed => Err(Error::Closed),
        }
    }

    /// Waits for the end, blocking the calling thread.
    pub(crate) fn join(&self, timeout: Option<Duration>) -> Result<Option<ExitCode>, Error> {
        self.check_started()?;
        Ok(if self.ended.wait(timeout) { self.exitcode() } else { None })
    }

    /// Waits for the end without blocking a thread: what a guest's `join` does.
    pub(crate) async fn join_async(&self, timeout: Option<Duration>) -> Result<Option<ExitCode>, Error> {
        self.check_started()?;
        Ok(if self.ended.wait_async(timeout).await { self.exitcode() } else { None })
    }

    /// Sends `signal`; a process that has already ended is left as it is.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), Error> {
        self.check_started()?;
        if let State::Running(control) = &*self.state.lock().unwrap()
            && !self.ended.is_set()
        {
            tracing::info!(parent: self.span(), signal = signal.number(), "signal");
            control.signal(signal);
        }
        Ok(())
    }

    pub(crate) fn close(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap();
        if matches!(*state, State::Running(_)) && !self.ended.is_set() {
            return Err(Error::StillRunning);
        }
        *state = State::Closed;
        Ok(())
    }

    /// In a forked child, on the copy of its parent's node: this node is now
    /// the new process `pid`, child of `ppid`, named `name`. The copied
    /// children are its parent's, not its own: closed here (their handles
    /// say so), forgotten by the tree, and its count of children restarts.
    // Only a backend that forks calls it.
    #[cfg(outside_processes)]
    pub(crate) fn become_forked(&self, pid: u32, ppid: u32, name: String) {
        self.pid.store(pid, Ordering::SeqCst);
        self.ppid.store(ppid, Ordering::SeqCst);
        self.set_name(name);
        self.created.store(0, Ordering::SeqCst);
        for child in std::mem::take(&mut *self.children.lock().unwrap()) {
            *child.state.lock().unwrap() = State::Closed;
        }
    }

    /// Terminates every live process below this one and waits for each; the
    /// host's shutdown. Orphans adopted meanwhile are ended too.
    pub(crate) fn terminate_descendants(&self) {
        loop {
            let children = std::mem::take(&mut *self.children.lock().unwrap());
            let live: Vec<_> = children.into_iter().filter(|c| c.is_alive()).collect();
            if live.is_empty() {
                return;
            }
            for child in &live {
                let _ = child.signal(Signal::Term);
            }
            for child in &live {
                let _ = child.join(None);
            }
        }
    }
}
