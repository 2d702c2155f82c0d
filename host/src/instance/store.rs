//! A process's store: its data ([`Ctx`]: the WASI context with exactly the
//! grants of the launch, the memory limiter, the process's place in the
//! tree), the linkers that bind it, its output sinks, and its set-up (fuel,
//! epoch yields, limits) before an instance is made in it.

use super::limiter::{MemoryLimiter, handle_cap};
use crate::command::Launch;
use crate::output::{Format, GuestOutput, Input, LineSink, Stream};
use crate::process::{Ended, Node};
use crate::program::Code;
use crate::runtime::HostInner;
use std::sync::Arc;
use wasmtime::component::{HasSelf, ResourceTable};
use wasmtime::{AsContext, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The data of a process's store.
pub(crate) struct Ctx {
    pub(super) wasi: WasiCtx,
    /// Only for core modules, which see WASI through the preview 1 adapter
    /// (boxed: every other store would carry its size).
    pub(super) p1: Option<Box<WasiP1Ctx>>,
    pub(crate) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    /// The fuel the store was last given, and what earlier budgets (a pool
    /// worker's earlier tasks) used: together they make the fuel used.
    pub(super) fuel_budget: u64,
    pub(super) fuel_before: u64,
    pub(crate) node: Arc<Node>,
    pub(crate) host: Arc<HostInner>,
    pub(crate) launch: Launch,
    /// Its stdout and stderr, which a forked child relabels.
    pub(super) outputs: Outputs,
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

/// A store for the process `launch` describes. The launch comes boxed and
/// leaves its box here: a caller that moved it out itself would keep the
/// empty box for as long as its future lives (the process's whole life).
pub(super) fn new_store(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: Box<Launch>,
    outputs: &Outputs,
) -> wasmtime::Result<Store<Ctx>> {
    let launch = *launch;
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
            limiter: MemoryLimiter::new(limits.max_memory.unwrap_or(host.max_memory), node.usage.clone()),
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

pub(super) fn prepare_store(store: &mut Store<Ctx>, budget: Option<u64>, metered: bool) {
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
pub(super) fn note_fuel(store: &impl AsContext<Data = Ctx>) {
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
pub(super) fn refuel(store: &mut Store<Ctx>, budget: u64) -> wasmtime::Result<()> {
    let left = store.get_fuel()?;
    let ctx = store.data_mut();
    ctx.fuel_before = ctx.fuel_before.saturating_add(ctx.fuel_budget.saturating_sub(left));
    ctx.fuel_budget = budget;
    store.set_fuel(budget)
}

pub(super) fn wasi_builder(env: &[(String, String)], stdin: &Input, outputs: &Outputs) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(GuestOutput::new(outputs.stdout.clone())).stderr(GuestOutput::new(outputs.stderr.clone())).envs(env);
    builder.secure_random(ThreadRandom).insecure_random(ThreadRandom);
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

/// `wasi:random`'s generators, secure and insecure alike: the thread's own
/// (rand's `ThreadRng`, a ChaCha12 generator seeded and reseeded from the
/// system's), instead of WASI's default of a generator per process seeded
/// from it, whose state (a third of a KiB) each of a hundred thousand
/// sleeping processes would keep. A forked process reseeds it
/// ([`reseed_random`]).
struct ThreadRandom;

impl rand::TryRng for ThreadRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        rand::rng().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        rand::rng().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::rng().try_fill_bytes(dst)
    }
}

/// In a forked process: the generator behind `wasi:random` ([`ThreadRandom`])
/// was copied with the rest, and would hand the child its parent's bytes.
// Only a backend that forks calls it.
#[cfg(outside_processes)]
pub(crate) fn reseed_random() -> Result<(), rand::rngs::SysError> {
    rand::rng().reseed()
}
