//! One process's Wasm instance, from a fresh store to its end.
//!
//! Both backends run a process the same way: a [`Store`] whose data is a
//! [`Ctx`] (the WASI context with exactly the grants of the launch, the
//! memory limiter, the process's place in the tree), an instance from the
//! program's `InstancePre`, and a call of `main` or of a named entry. How the
//! call ends (a return, `exit(N)`, a trap, an exceeded limit) becomes an
//! [`Ended`] here, with a message that names the cause.

use crate::codec::{Batch, BatchResults};
use crate::command::Launch;
use crate::guest::exports::mp::host::entries as wit;
use crate::limits::format_size;
use crate::output::{Format, GuestOutput, Input, LineSink, Stdio, Stream};
use crate::process::{Ended, Node};
use crate::program::{Code, first_line};
use crate::runtime::HostInner;
use crate::work::{Outcome, ServeChannel, Work};
use std::sync::Arc;
use wasmtime::component::{HasSelf, ResourceTable, ResourceTableError};
use wasmtime::{AsContext, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::Command as WasiCommand;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The data of a process's store.
pub(crate) struct Ctx {
    wasi: WasiCtx,
    /// Only for core modules, which see WASI through the preview 1 adapter
    /// (boxed: every other store would carry its size).
    p1: Option<Box<WasiP1Ctx>>,
    pub(crate) table: ResourceTable,
    limiter: MemoryLimiter,
    /// The fuel the store was last given, and what earlier budgets (a pool
    /// worker's earlier tasks) used: together they make the fuel used.
    fuel_budget: u64,
    fuel_before: u64,
    pub(crate) node: Arc<Node>,
    pub(crate) host: Arc<HostInner>,
    pub(crate) launch: Launch,
    /// Its stdout and stderr, which a forked child relabels.
    outputs: Outputs,
}

impl Ctx {
    /// Before a fork: what the process wrote so far is passed on and an
    /// unfinished labelled line is ended, so that the lines its child writes
    /// (to the same streams, under its own label) start lines of their own.
    pub(crate) fn end_output_lines(&self) {
        self.outputs.finish();
    }

    /// In a forked child, from the fork on: `launch` is its own (its
    /// children's labels extend its label), and so are its output lines'
    /// labels.
    pub(crate) fn become_forked(&mut self, launch: Launch) {
        self.outputs.stdout.relabel(launch.label.clone());
        self.outputs.stderr.relabel(launch.label.clone());
        self.launch = launch;
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The linker for components: WASI 0.2 and `mp:host/process`.
pub(crate) fn component_linker(engine: &wasmtime::Engine) -> wasmtime::Result<wasmtime::component::Linker<Ctx>> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::guest::Program::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx)?;
    Ok(linker)
}

/// The linker for core modules: WASI preview 1.
pub(crate) fn core_linker(engine: &wasmtime::Engine) -> wasmtime::Result<wasmtime::Linker<Ctx>> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx: &mut Ctx| {
        &mut **ctx.p1.as_mut().expect("a core module's store has a preview 1 context")
    })?;
    Ok(linker)
}

/// A process's stdout and stderr.
#[derive(Clone)]
pub(crate) struct Outputs {
    pub(crate) stdout: Arc<LineSink>,
    pub(crate) stderr: Arc<LineSink>,
}

impl Outputs {
    pub(crate) fn new(launch: &Launch) -> Outputs {
        Outputs::with_format(launch, launch.output_format())
    }

    /// Outputs in the given format.
    pub(crate) fn with_format(launch: &Launch, format: Format) -> Outputs {
        Outputs {
            stdout: LineSink::new(&launch.stdout, Stream::Stdout, format.clone()),
            stderr: LineSink::new(&launch.stderr, Stream::Stderr, format),
        }
    }

    /// Passes on what is left of the last lines.
    pub(crate) fn finish(&self) {
        self.stdout.finish();
        self.stderr.finish();
    }

    /// Tells, on the process's stderr, why it ended.
    pub(crate) fn report(&self, ended: &Ended) {
        if let Some(reason) = &ended.reason {
            self.stdout.finish();
            self.stderr.note(&format!("error: {reason}"));
        }
    }
}

/// Runs the process to its end or to its deadline, whichever comes first.
///
/// A live process's whole state is this future (and its store), so it is
/// kept small: the launch travels boxed (an async fn keeps room for each of
/// its arguments for as long as it lives), and the large futures of rarer
/// or passing states (a pool worker's loop, instantiation, claiming shared
/// objects) are boxed where they are awaited.
pub(crate) fn run_until_deadline<'a>(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: impl Into<Box<Launch>>,
    outputs: &'a Outputs,
) -> impl std::future::Future<Output = Ended> + Send + 'a {
    let launch = launch.into();
    let deadline = launch.deadline;
    // The block captures only what makes the futures: a future captured
    // whole would be stored twice, once more where `select!` keeps it.
    async move {
        tokio::select! {
            biased;
            _ = sleep_until(deadline) => timed_out(outputs),
            ended = run(host, node, launch, outputs) => ended,
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn timed_out(outputs: &Outputs) -> Ended {
    outputs.stdout.finish();
    outputs.stderr.note("error: timeout: the process ran past its time limit and was terminated (--timeout)");
    Ended::signal(crate::exit::Signal::Term)
}

/// Runs the process described by `launch` to its end.
async fn run(host: Arc<HostInner>, node: Arc<Node>, launch: Box<Launch>, outputs: &Outputs) -> Ended {
    let limits = launch.limits;
    if launch.ticket.is_some() {
        Box::pin(host.sync.claim(&node, launch.ticket)).await;
    }
    let result = match launch.work.clone() {
        // Boxed: a pool worker's loop is a large future, and every other
        // process would carry its size for as long as it lives.
        Work::Serve(serve) => Box::pin(self::serve(host, node, launch, outputs, serve)).await,
        Work::Main | Work::Entry { .. } => call(host, node, launch, outputs).await,
    };
    let ended = match result {
        Ok(ended) => ended,
        Err(error) => classify(&crate::allocation::explain(error), &limits),
    };
    outputs.report(&ended);
    ended
}

async fn call(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: Box<Launch>,
    outputs: &Outputs,
) -> wasmtime::Result<Ended> {
    let program = launch.program.clone();
    let entry = launch.work.entry().map(str::to_string);
    let input = launch.work.input().to_vec();
    let mut store = new_store(host, node, *launch, outputs)?;
    let ended = call_in(&mut store, &program.inner.code, entry, &input).await;
    note_fuel(&store);
    ended
}

/// Instantiates the program in `store` and calls its `main` or `entry`.
async fn call_in(store: &mut Store<Ctx>, code: &Code, entry: Option<String>, input: &[u8]) -> wasmtime::Result<Ended> {
    let mut store = store;
    match (code, entry) {
        (Code::Component(pre), None) => {
            let instance = Box::pin(pre.instantiate_async(&mut store)).await?;
            let command = WasiCommand::new(&mut store, &instance)?;
            Ok(match command.wasi_cli_run().call_run(&mut store).await? {
                Ok(()) => Ended::code(0),
                Err(()) => Ended::code(1),
            })
        }
        (Code::Component(pre), Some(entry)) => {
            let instance = Box::pin(pre.instantiate_async(&mut store)).await?;
            let program = crate::guest::Program::new(&mut store, &instance)?;
            Ok(match program.mp_host_entries().call_call(&mut store, &entry, input).await? {
                Ok(_) => Ended::code(0),
                Err(message) => Ended::failure(format!("entry `{entry}` failed: {message}")),
            })
        }
        (Code::Core(pre), entry) => {
            let instance = Box::pin(pre.instantiate_async(&mut store)).await?;
            let name = entry.as_deref().unwrap_or("_start");
            let func = instance.get_typed_func::<(), ()>(&mut store, name)?;
            func.call_async(&mut store, ()).await?;
            Ok(Ended::code(0))
        }
    }
}

/// A pool worker: one instance that runs the initializer, then task after
/// task from `serve`, until the queue is closed or `max_tasks` are done. A
/// task that traps, exceeds a limit or runs past its time limit fails and
/// ends the worker; an entry's error is only that task's result.
async fn serve(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: Box<Launch>,
    outputs: &Outputs,
    serve: ServeChannel,
) -> wasmtime::Result<Ended> {
    let program = launch.program.clone();
    let limits = launch.limits;
    let metered = host.fuel;
    let Code::Component(pre) = &program.inner.code else {
        wasmtime::bail!("a pool worker needs a program of the mp:host world (one that exports named entries)");
    };
    let mut store = new_store(host, node, *launch, outputs)?;
    let instance = Box::pin(pre.instantiate_async(&mut store)).await?;
    let guest = crate::guest::Program::new(&mut store, &instance)?;
    let entries = guest.mp_host_entries();
    if let Some((entry, input)) = &serve.initializer
        && let Err(message) = entries.call_call(&mut store, entry, input).await?
    {
        return Ok(Ended::failure(format!("initializer `{entry}` failed: {message}")));
    }
    let mut served = 0;
    while serve.max_tasks.is_none_or(|max| served < max) {
        let Some(mut job) = serve.tasks.next().await else { break };
        served += 1;
        if metered {
            refuel(&mut store, limits.fuel.unwrap_or(u64::MAX))?;
        }
        let inputs = std::mem::take(&mut job.inputs);
        let (entry, many) = (job.entry.as_str(), job.many);
        let task = async {
            if !many && inputs.len() == 1 {
                let result = entries.call_call(&mut store, entry, inputs.get(0)).await?;
                return wasmtime::Result::Ok(BatchResults::one(result));
            }
            let inputs = wit::Batch { data: inputs.data, ends: inputs.ends };
            let done = entries.call_call_many(&mut store, entry, &inputs).await?;
            let results = Batch { data: done.results.data, ends: done.results.ends };
            Ok(BatchResults { results, failed: done.failed })
        };
        let outcome = match serve.task_timeout {
            Some(limit) => tokio::time::timeout(limit, task).await.ok(),
            None => Some(task.await),
        };
        note_fuel(&store);
        match outcome {
            Some(Ok(results)) => {
                // What the task put without waiting is in its queues
                // before its results are handed over.
                let _ = store.data().host.sync.flush().await;
                job.reply.send(Outcome::Done(results))
            }
            Some(Err(error)) => {
                let ended = classify(&error, &limits);
                let why = ended.reason.clone().unwrap_or_else(|| format!("it exited with code {}", ended.code));
                job.reply.send(Outcome::Failed(format!("task `{}` ended its worker: {why}", job.entry)));
                return Ok(ended);
            }
            None => {
                let why = format!(
                    "timeout: task `{}` ran past its time limit of {:?} and its worker was terminated (--timeout)",
                    job.entry,
                    serve.task_timeout.unwrap_or_default()
                );
                job.reply.send(Outcome::Failed(why.clone()));
                return Ok(Ended { code: crate::ExitCode::from_signal(crate::exit::Signal::Term), reason: Some(why) });
            }
        }
    }
    Ok(Ended::code(0))
}

/// How long a program's entry listing may run when it is loaded.
pub(crate) const PROBE_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// How much linear memory the listing may grow to.
pub(crate) const PROBE_MEMORY: u64 = 64 << 20;
/// Its instruction budget, when the host meters fuel: far more than a list
/// of names takes.
const PROBE_FUEL: u64 = 1_000_000_000;

/// The entry names a program offers, asked of one throwaway instance.
///
/// This runs guest code before any limit of the user's applies, so it has
/// its own: [`PROBE_TIME`] of wall time (the guest yields at every epoch
/// tick, so the deadline holds even in a tight loop), [`PROBE_MEMORY`] of
/// memory and, on a host that meters fuel, a budget of instructions. The
/// probe cannot start processes (see [`Ctx::may_spawn`]).
pub(crate) async fn list_entries(
    host: Arc<HostInner>,
    pre: wasmtime::component::InstancePre<Ctx>,
) -> Result<Vec<String>, String> {
    let listing = list_entries_unbounded(host, pre);
    match tokio::time::timeout(PROBE_TIME, listing).await {
        Ok(Ok(names)) => Ok(names),
        Ok(Err(error)) if error.downcast_ref::<MemoryLimitExceeded>().is_some() => Err(format!(
            "its entry listing grew its memory past the {} allowed while loading",
            format_size(PROBE_MEMORY)
        )),
        Ok(Err(error)) if matches!(error.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)) => {
            Err(format!("its entry listing ran past the {PROBE_FUEL} instructions allowed while loading"))
        }
        Ok(Err(error)) => Err(first_line(&error)),
        Err(_) => Err(format!("its entry listing did not finish within the {PROBE_TIME:?} allowed while loading")),
    }
}

async fn list_entries_unbounded(
    host: Arc<HostInner>,
    pre: wasmtime::component::InstancePre<Ctx>,
) -> wasmtime::Result<Vec<String>> {
    let program = crate::guest::ProgramPre::new(pre.clone())?;
    let launch_outputs = Outputs {
        stdout: LineSink::new(&Stdio::null(), Stream::Stdout, Format::exact()),
        stderr: LineSink::new(&Stdio::null(), Stream::Stderr, Format::exact()),
    };
    let mut store = Store::new(
        &host.engine,
        Ctx {
            wasi: wasi_builder(&[], &Input::Null, &launch_outputs).build(),
            p1: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(PROBE_MEMORY, Node::detached()),
            fuel_budget: 0,
            fuel_before: 0,
            node: Node::detached(),
            launch: probe_launch(&host, pre)?,
            host: host.clone(),
            outputs: launch_outputs.clone(),
        },
    );
    prepare_store(&mut store, Some(PROBE_FUEL), host.fuel);
    let program = program.instantiate_async(&mut store).await?;
    program.mp_host_entries().call_list(&mut store).await
}

impl Ctx {
    /// Whether this process may start others: not the probe that lists a
    /// program's entries as it is loaded (it is no process of the run).
    pub(crate) fn may_spawn(&self) -> Result<(), crate::error::Error> {
        match self.node.pid() {
            Some(_) => Ok(()),
            None => Err(crate::error::Error::Spawn("a program cannot start processes while it is being loaded".into())),
        }
    }
}

/// A launch for the probe instance: it cannot spawn, so any will do.
fn probe_launch(host: &Arc<HostInner>, pre: wasmtime::component::InstancePre<Ctx>) -> wasmtime::Result<Launch> {
    let program = crate::program::Program {
        inner: Arc::new(crate::program::ProgramInner {
            host: host.clone(),
            path: None,
            code: Code::Component(pre),
            entries: Vec::new(),
            has_main: false,
            kind: crate::program::ProgramKind::Program,
            backend_data: std::sync::OnceLock::new(),
        }),
    };
    Ok(program.command().launch().clone())
}

fn new_store(host: Arc<HostInner>, node: Arc<Node>, launch: Launch, outputs: &Outputs) -> wasmtime::Result<Store<Ctx>> {
    let mut builder = wasi_builder(&launch.env, &launch.stdin.0, outputs);
    builder.arg(program_name(&launch));
    for arg in &launch.args {
        builder.arg(arg);
    }
    for (host_dir, guest_dir) in &launch.dirs {
        builder
            .preopened_dir(host_dir, guest_dir, FsPerms::ReadWrite)
            .map_err(|e| wasmtime::format_err!("cannot grant directory {}: {e}", host_dir.display()))?;
    }
    let (wasi, p1) = match &launch.program.inner.code {
        Code::Component(_) => (builder.build(), None),
        Code::Core(_) => (WasiCtxBuilder::new().build(), Some(Box::new(builder.build_p1()))),
    };
    let limits = launch.limits;
    let mut table = ResourceTable::new();
    table.set_max_capacity(handle_cap(limits.max_memory.unwrap_or(host.max_memory)));
    let fuel = host.fuel;
    if limits.fuel.is_some() && !fuel {
        wasmtime::bail!("a fuel limit needs a host built with fuel metering (HostBuilder::fuel)");
    }
    let engine = host.engine.clone();
    let mut store = Store::new(
        &engine,
        Ctx {
            wasi,
            p1,
            table,
            limiter: MemoryLimiter::new(limits.max_memory.unwrap_or(host.max_memory), node.clone()),
            fuel_budget: 0,
            fuel_before: 0,
            node,
            host,
            launch,
            outputs: outputs.clone(),
        },
    );
    prepare_store(&mut store, limits.fuel, fuel);
    Ok(store)
}

fn prepare_store(store: &mut Store<Ctx>, budget: Option<u64>, metered: bool) {
    store.limiter(|ctx| &mut ctx.limiter);
    // Yield at every epoch tick: many guests share few threads, and a
    // terminate (which ticks the epoch) reaches even a guest in a tight loop.
    store.set_epoch_deadline(1);
    if metered {
        // The tick is also when the fuel used so far is written down: a
        // process terminated mid-run (its store dropped) still has a figure.
        store.epoch_deadline_callback(|store| {
            note_fuel(&store);
            Ok(UpdateDeadline::Yield(1))
        });
        refuel(store, budget.unwrap_or(u64::MAX)).expect("fuel metering is on");
    } else {
        store.epoch_deadline_async_yield_and_update(1);
    }
}

/// Writes the fuel used so far on the process's node (if fuel is metered).
fn note_fuel(store: &impl AsContext<Data = Ctx>) {
    let store = store.as_context();
    let ctx = store.data();
    if !ctx.host.fuel {
        return;
    }
    if let Ok(left) = store.get_fuel() {
        ctx.node.usage.set_fuel_used(ctx.fuel_before.saturating_add(ctx.fuel_budget.saturating_sub(left)));
    }
}

/// Gives the store a new fuel budget, keeping count of what the last one used.
fn refuel(store: &mut Store<Ctx>, budget: u64) -> wasmtime::Result<()> {
    let left = store.get_fuel()?;
    let ctx = store.data_mut();
    ctx.fuel_before = ctx.fuel_before.saturating_add(ctx.fuel_budget.saturating_sub(left));
    ctx.fuel_budget = budget;
    store.set_fuel(budget)
}

fn wasi_builder(env: &[(String, String)], stdin: &Input, outputs: &Outputs) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(GuestOutput::new(outputs.stdout.clone())).stderr(GuestOutput::new(outputs.stderr.clone())).envs(env);
    match stdin {
        // The builder's default: end-of-file at once.
        Input::Null => {}
        // Read by wasmtime-wasi's own reader thread, so a guest waiting for
        // input is a pending future that a terminate can drop.
        Input::Inherit => {
            builder.stdin(std::io::stdin());
        }
        Input::Bytes(bytes) => {
            builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes.clone()));
        }
    }
    builder
}

/// `argv[0]`: the program's file name, as a shell would give it.
fn program_name(launch: &Launch) -> String {
    launch
        .program
        .path()
        .and_then(|p| p.file_name())
        .map_or_else(|| "program".to_string(), |n| n.to_string_lossy().into_owned())
}

/// Turns a failed call into Python's exit code and a message naming the cause.
fn classify(error: &wasmtime::Error, limits: &crate::limits::Limits) -> Ended {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ended::code(exit.0);
    }
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Ended::failure(limit.to_string());
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return Ended::failure(format!(
            "too many handles: the process holds as many resource handles (processes, shared objects, streams) as its memory cap allows, one per {HANDLE_BYTES} bytes of it and at most {MAX_HANDLES} (--max-memory)"
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Ended::failure(format!(
            "fuel exhausted: the process used up its budget of {} instructions (--fuel)",
            limits.fuel.unwrap_or_default()
        )),
        Some(Trap::StackOverflow) => Ended::failure("stack overflow: the call stack is exhausted".into()),
        Some(Trap::MemoryOutOfBounds) if in_deep_recursion(error) => Ended::failure(format!(
            "stack overflow: the guest's stack ran out of memory in deep recursion ({})",
            Trap::MemoryOutOfBounds
        )),
        Some(trap) => Ended::failure(trap.to_string()),
        // A host call that failed (a shared object refused at creation):
        // its own message, not the backtrace's heading.
        None if error.downcast_ref::<wasmtime::WasmBacktrace>().is_some() => {
            Ended::failure(error.root_cause().to_string())
        }
        None => Ended::failure(first_line(error)),
    }
}

/// Guests keep their data stack in linear memory, below their globals: when
/// it overflows, the next store lands out of bounds. A trap whose (capped)
/// backtrace is full of a few functions calling themselves is reported as
/// what it is.
fn in_deep_recursion(error: &wasmtime::Error) -> bool {
    let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = trace.frames();
    let distinct: std::collections::HashSet<_> = frames.iter().map(|f| f.func_index()).collect();
    frames.len() >= 16 && distinct.len() <= 3
}

/// Caps what a process's memories and tables hold, all of them together
/// (a module may have many of each); growing past the cap fails it. Every
/// growth of a memory it allows is counted on the process's node (its peak
/// memory).
struct MemoryLimiter {
    /// `--max-memory`, else the host's per-process maximum.
    max: u64,
    /// Bytes of every memory and table (a table element is a pointer) now.
    held: u64,
    node: Arc<Node>,
}

impl MemoryLimiter {
    fn new(max: u64, node: Arc<Node>) -> MemoryLimiter {
        MemoryLimiter { max, held: 0, node }
    }

    /// Counts growing something from `current` to `desired` bytes, unless
    /// that takes the process past its cap.
    fn grow(&mut self, current: u64, desired: u64) -> Result<(), MemoryLimitExceeded> {
        let held = self.held.saturating_sub(current).saturating_add(desired);
        if held > self.max {
            return Err(MemoryLimitExceeded { limit: self.max, desired: held });
        }
        self.held = held;
        Ok(())
    }
}

/// What a resource handle a guest holds (a process, a shared object, a
/// WASI stream or pollable: an entry of its store's table, which lives in
/// the host) is counted as against its memory cap: the cap bounds how many
/// it may hold at once, [`MAX_HANDLES`] at most.
const HANDLE_BYTES: u64 = 256;

/// The most handles one process may hold: wasmtime's own bound on the
/// handles of a store, past which it refuses one more itself.
const MAX_HANDLES: u64 = 100_000;

/// How many handles a process whose memory cap is `max_memory` may hold.
fn handle_cap(max_memory: u64) -> usize {
    (max_memory / HANDLE_BYTES).min(MAX_HANDLES) as usize
}

/// What a table element takes in the host.
const TABLE_ELEMENT_BYTES: u64 = 8;

#[derive(Debug)]
struct MemoryLimitExceeded {
    limit: u64,
    desired: u64,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit exceeded: the process tried to grow its memory to {} bytes (its memories and tables together), past its limit of {} (--max-memory)",
            self.desired,
            format_size(self.limit)
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)?;
        self.node.usage.memory_grew(current as u64, desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| (elements as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow(bytes(current), bytes(desired))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sleeping process is, besides its store, the future that runs it:
    /// 100,000 of them must stay small (it was 3.9 KiB when the launch was
    /// carried by value through every layer and a pool worker's loop sized
    /// every process's).
    #[test]
    fn a_process_future_stays_small() {
        let host = crate::Host::new().unwrap();
        let program = host.load_bytes(b"(module (func (export \"_start\")))").unwrap();
        let launch = program.command().launch().clone();
        let outputs = Outputs::new(&launch);
        let future = run_until_deadline(host.inner().clone(), Node::detached(), launch, &outputs);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 2048, "a process's future takes {size} bytes");
    }
}
