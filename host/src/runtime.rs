//! The host: one engine, one executor and one process tree, shared by every
//! process it runs.
//!
//! [`Host`] is the embedder's entry point. It owns the wasmtime [`Engine`]
//! (configured once: pooling allocator with copy-on-write memory images, epoch
//! interruption, optional fuel), the tokio runtime that drives guests on the
//! thread backend, the linkers that give guests WASI and `mp:host/process`,
//! and the root of the process tree, which adopts orphans. Everything a
//! running process needs is in [`HostInner`], shared by `Arc`; the runtime
//! itself stays with [`Host`] so that it is only ever dropped outside of it.

use crate::allocation::Layout;
use crate::backend::{self, Backend, BackendKind};
use crate::cache::{self, CompileCache};
use crate::error::{Error, LoadError};
use crate::instance::Ctx;
use crate::journal::Journal;
use crate::process::{Live, Node, Tree};
use crate::program::{self, Program};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine};

/// The name of a one-process host's blocking threads (a fork waits for
/// none to be left).
pub(crate) const BLOCKING_THREAD: &str = "host-blocking";

/// How often running guests are asked to yield, so that many share few threads.
pub(crate) const TIME_SLICE: Duration = Duration::from_millis(10);

/// Configures a [`Host`].
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let host = host::Host::builder().fuel(true).max_processes(2_000).build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HostBuilder {
    backend: BackendKind,
    fuel: bool,
    journal: bool,
    /// `None`: the backend's default.
    max_processes: Option<u32>,
    max_memory: u64,
    shared: crate::sync::budget::Quotas,
    threads: Option<usize>,
    worker_program: Option<PathBuf>,
    compile_cache: CompileCache,
}

/// The engine and the linkers, made once per address space (a backend may
/// hand a host ones made before it: see [`Backend::engines`]).
#[derive(Clone)]
pub(crate) struct Engines {
    pub(crate) engine: Engine,
    pub(crate) component_linker: wasmtime::component::Linker<Ctx>,
    pub(crate) core_linker: wasmtime::Linker<Ctx>,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines").finish_non_exhaustive()
    }
}

impl Engines {
    fn new(config: &Config) -> anyhow::Result<Engines> {
        let engine = Engine::new(config)?;
        Ok(Engines {
            component_linker: crate::instance::component_linker(&engine)?,
            core_linker: crate::instance::core_linker(&engine)?,
            engine,
        })
    }
}

impl Default for HostBuilder {
    fn default() -> HostBuilder {
        HostBuilder {
            backend: BackendKind::Thread,
            fuel: false,
            journal: false,
            max_processes: None,
            max_memory: 1 << 30,
            shared: crate::sync::budget::Quotas::default(),
            threads: None,
            worker_program: None,
            compile_cache: CompileCache::Default,
        }
    }
}

impl HostBuilder {
    /// Which backend runs the processes (default: [`BackendKind::Thread`]).
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Meters instructions, so that processes can be given a fuel budget.
    /// Off by default: metering costs every guest some speed.
    pub fn fuel(mut self, enabled: bool) -> Self {
        self.fuel = enabled;
        self
    }

    /// Keeps a [`ProcessRecord`](crate::ProcessRecord) of every process that
    /// ends, guest-spawned children and pool workers included, for
    /// [`Host::journal`]. Off by default: a record per process is memory
    /// that only a report needs.
    pub fn journal(mut self, enabled: bool) -> Self {
        self.journal = enabled;
        self
    }

    /// How many processes of the run may be alive at once, counting every
    /// one: those the embedder starts, their children and grandchildren, and
    /// pool workers (on the native backend the root host counts for the whole
    /// tree, whoever spawns). Default: 10,240 on the thread backend, 1,500 on
    /// the native one ([`BackendKind::default_max_processes`], chosen so that
    /// a fork bomb cannot hurt a 2-core, 24 GiB machine while 10,000
    /// (thread) or 1,000 (native) concurrent sleepers still fit).
    ///
    /// Past the cap, [`Process::start`](crate::Process::start) (and a guest's
    /// start, or its `Pool`) fails with [`Error::ProcessLimit`](crate::Error::ProcessLimit);
    /// a slot is free again as soon as its process has ended. The engine's
    /// instance allocation is sized from it: a pooled slot per process
    /// reserved up front while the kernel's map count allows, instances on
    /// demand (in mappings the kernel merges) past that, so that 100,000
    /// live processes fit on the thread backend.
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = Some(n.max(1));
        self
    }

    fn cap(&self) -> u32 {
        self.max_processes.unwrap_or(self.backend.default_max_processes())
    }

    /// The most linear memory any one process may have (default 1 GiB); a
    /// process's own `max_memory` limit can only be lower.
    pub fn max_memory_per_process(mut self, bytes: u64) -> Self {
        self.max_memory = bytes.max(64 << 10);
        self
    }

    /// How many bytes each process may park in shared objects: queue items
    /// nobody has taken yet, pipe messages in flight, arrays (default
    /// [`DEFAULT_MAX_SHARED`](crate::sync::budget::DEFAULT_MAX_SHARED),
    /// 64 MiB; the whole run [`RUN_FACTOR`](crate::sync::budget::RUN_FACTOR)
    /// times that). Past it a `put` or `send` fails with
    /// [`sync::Error::Quota`](crate::sync::Error::Quota). The CLI's `--max-shared`.
    pub fn max_shared(mut self, bytes: u64) -> Self {
        self.shared.bytes = bytes;
        self
    }

    /// How many shared objects each process may have created and not freed
    /// (default [`DEFAULT_MAX_SHARED_OBJECTS`](crate::sync::budget::DEFAULT_MAX_SHARED_OBJECTS),
    /// 4096; a pipe counts two; the whole run
    /// [`RUN_FACTOR`](crate::sync::budget::RUN_FACTOR) times that).
    pub fn max_shared_objects(mut self, n: u64) -> Self {
        self.shared.objects = n;
        self
    }

    /// How many OS threads run guests on the thread backend (default: the
    /// cpu count). Guests time-slice on them; blocked guests take none.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// The binary the native backend re-executes as a worker (default: the
    /// `HOST_WORKER_EXE` environment variable, else the current executable,
    /// which must then call `host::worker::main` (feature `native`) when its
    /// first argument is `__worker`; the `host` binary does).
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(path.into());
        self
    }

    /// Where compiled programs are kept between runs (default
    /// [`CompileCache::Default`]: the user's cache directory, unless the
    /// environment moves it with `MP_HOST_CACHE_DIR` or turns it off with
    /// `MP_HOST_CACHE=off`). A program loaded again with the same engine
    /// configuration is then mapped instead of compiled; see
    /// [`CompileCache`] for what is checked before cached code is used.
    pub fn compile_cache(mut self, cache: CompileCache) -> Self {
        self.compile_cache = cache;
        self
    }

    /// The engine and linkers of this configuration, made now.
    pub(crate) fn make_engines(&self) -> anyhow::Result<Engines> {
        Engines::new(&self.engine_config())
    }

    /// Makes the host: its engine, its executor and its backend.
    pub fn build(self) -> anyhow::Result<Host> {
        let backend = backend::create(backend::Settings {
            kind: self.backend,
            worker_program: self.worker_program.clone(),
            fuel: self.fuel,
            max_memory: self.max_memory,
            max_processes: self.cap(),
        })?;
        let engines = match backend.engines() {
            Some(engines) => engines,
            None => self.make_engines()?,
        };
        let runtime = match (backend.runs_one_process(), self.threads) {
            // One process, driven by the thread that waits for it. Its
            // blocking pool (WASI's file operations) lets an idle thread go
            // soon: a fork waits for none to be left.
            (true, _) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(BLOCKING_THREAD)
                .thread_keep_alive(Duration::from_millis(10))
                .build()?,
            (false, threads) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.unwrap_or_else(cpu_count).max(2))
                // A guest's every time slice is one poll: look at timers (a
                // deadline, a sleeper's wake-up) after each, not every 61st.
                .event_interval(1)
                .thread_name("host-guest")
                .enable_all()
                .build()?,
        };
        let root = backend.root();
        let sync = crate::sync::Broker::new(runtime.handle(), backend.as_ref(), self.shared)?;
        let engines_engine = engines.engine.clone();
        let inner = Arc::new(HostInner {
            component_linker: engines.component_linker,
            core_linker: engines.core_linker,
            root,
            engine: engines.engine,
            runtime: runtime.handle().clone(),
            backend,
            fuel: self.fuel,
            max_memory: self.max_memory,
            sync,
            journal: self.journal.then(Journal::default),
            live: Live::default(),
            closed: AtomicBool::new(false),
            compile_cache: self.compile_cache.dir().map(|dir| cache::Store::new(dir, &engines_engine)),
        });
        inner.backend.tick_epochs(&inner.engine)?;
        Ok(Host { inner, runtime: Some(runtime) })
    }

    fn engine_config(&self) -> Config {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(self.fuel);
        config.wasm_component_model(true);
        // Sized from the run's limits: a slot per process up front where
        // the kernel's map count allows, instances on demand past that.
        let cap = self.cap();
        let layout = Layout::choose(cap, self.backend == BackendKind::Thread);
        layout.configure(&mut config, cap, self.max_memory);
        config
    }
}

/// Ticks the engine's epoch every time slice, from a thread of its own: the
/// guests' threads may all be busy in guests that only yield on a tick.
/// Ends with the engine.
pub(crate) fn tick_epochs(engine: &Engine) -> std::io::Result<()> {
    tick_epochs_then(engine, || {})
}

/// [`tick_epochs`], calling `on_tick` after every tick: work a backend
/// defers to a thread that wakes anyway.
pub(crate) fn tick_epochs_then(engine: &Engine, on_tick: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new().name("host-epoch".into()).spawn(move || {
        while let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
            drop(engine);
            on_tick();
            std::thread::sleep(TIME_SLICE);
        }
    })?;
    Ok(())
}

/// The processes of one host, and the engine that runs them.
///
/// Dropping the host terminates every process still running; call
/// [`Host::wait`] first to let non-daemon processes finish, as Python does at
/// exit.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/seed-hello.wasm")?;
/// let process = program.command().spawn()?;
/// println!("started pid {:?}", process.pid());
/// let code = process.join()?;
/// host.wait();
/// println!("ended with {code}");
/// # Ok(()) }
/// ```
pub struct Host {
    inner: Arc<HostInner>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What running processes share with the host.
pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) component_linker: wasmtime::component::Linker<Ctx>,
    pub(crate) core_linker: wasmtime::Linker<Ctx>,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) root: Arc<Node>,
    pub(crate) fuel: bool,
    pub(crate) max_memory: u64,
    /// Every ended process's record, if the embedder asked for them.
    pub(crate) journal: Option<Journal>,
    /// Where processes' shared objects live (see [`crate::sync`]).
    pub(crate) sync: crate::sync::Broker,
    pub(crate) live: Live,
    pub(crate) closed: AtomicBool,
    /// Where compiled programs are kept, unless the cache is off.
    pub(crate) compile_cache: Option<cache::Store>,
}

impl Host {
    /// A host with the default configuration: the thread backend.
    pub fn new() -> anyhow::Result<Host> {
        HostBuilder::default().build()
    }

    /// A builder for a host with another configuration.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Loads and compiles the program at `path` (a `.wasm` component or core
    /// module, or a `.wat` text module).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Program, LoadError> {
        program::load_file(&self.inner, path.as_ref())
    }

    /// Compiles a program from its bytes.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Program, LoadError> {
        program::load(&self.inner, bytes, None)
    }

    /// The directory compiled programs are kept in; `None` when the cache is off.
    pub fn compile_cache_dir(&self) -> Option<&Path> {
        self.inner.compile_cache.as_ref().map(cache::Store::dir)
    }

    /// Whether the compile cache holds valid compiled code of `bytes` (a
    /// program's file) for this host's engine: whether loading it will map
    /// code instead of compiling it.
    pub fn is_cached(&self, bytes: &[u8]) -> bool {
        program::is_cached(&self.inner, bytes)
    }

    /// The host's own pid: the parent of root processes and of orphans.
    pub fn pid(&self) -> u32 {
        self.inner.root.pid().unwrap_or_default()
    }

    /// Which backend runs this host's processes.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// How many processes of the run may be alive at once
    /// ([`HostBuilder::max_processes`]).
    pub fn max_processes(&self) -> u32 {
        self.inner.backend.max_processes()
    }

    /// The most linear memory any one process may have
    /// ([`HostBuilder::max_memory_per_process`]).
    pub fn max_memory_per_process(&self) -> u64 {
        self.inner.max_memory
    }

    /// The record of every process that has ended in this host so far, in
    /// the order they ended: the embedder's, the ones guests spawned (on the
    /// native backend, those a worker reported as it ended) and pool workers.
    /// Empty unless the host was built with [`HostBuilder::journal`].
    pub fn journal(&self) -> Vec<crate::ProcessRecord> {
        self.inner.journal.as_ref().map(Journal::records).unwrap_or_default()
    }

    /// Blocks until every non-daemon process has ended, orphans included.
    pub fn wait(&self) {
        self.inner.live.wait_idle();
        self.inner.backend.wait_adopted();
    }

    pub(crate) fn inner(&self) -> &Arc<HostInner> {
        &self.inner
    }

    /// Runs `future` on the host's own runtime, driving its timers and I/O
    /// from this thread (which the executor of a host that runs one process
    /// needs: see [`Backend::runs_one_process`]; a build without such a
    /// backend never asks).
    #[cfg(outside_processes)]
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("the runtime lives as long as the host").block_on(future)
    }

    /// Terminates every process still running (daemons included) and waits
    /// for them to end. Further starts are refused.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.root.terminate_descendants();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Tree for HostInner {
    fn root(&self) -> &Arc<Node> {
        &self.root
    }

    fn live(&self) -> &Live {
        &self.live
    }

    fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl HostInner {
    /// Whether the host runs one process and exits once it has ended (see
    /// [`Backend::runs_one_process`]).
    pub(crate) fn ends_with_its_process(&self) -> bool {
        self.backend.runs_one_process()
    }

    /// Starts the process `node` on the host's backend.
    pub(crate) fn start(self: &Arc<HostInner>, node: &Arc<Node>) -> Result<(), Error> {
        node.start_with(self, |launch| self.backend.start(self, node, launch))
    }

    /// Runs `future` to completion on the host's executor, from outside it.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(future)),
            Err(_) => self.runtime.block_on(future),
        }
    }
}

/// The host's cpu count, as Python's `os.cpu_count()`.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
