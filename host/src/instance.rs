//! One process's Wasm instance, from a fresh store to its end.
//!
//! Both backends run a process the same way: a [`Store`] whose data is a
//! [`Ctx`] (set up in `store.rs`, its memory capped in `limiter.rs`), an
//! instance from the program's `InstancePre`, and a call of `main` or of a
//! named entry. How the call ends (a return, `exit(N)`, a trap, an exceeded
//! limit) becomes an [`Ended`] here, with a message that names the cause.

mod limiter;
mod probe;
mod store;

pub(crate) use probe::list_entries;
#[cfg(outside_processes)]
pub(crate) use store::reseed_random;
pub(crate) use store::{Ctx, Outputs, component_linker, core_linker};

use crate::codec::{Batch, BatchResults};
use crate::command::Launch;
use crate::guest::exports::mp::host::entries as wit;
use crate::process::{Ended, Node};
use crate::program::{Code, first_line};
use crate::runtime::HostInner;
use crate::work::{Outcome, ServeChannel, Work};
use std::sync::Arc;
use store::{new_store, note_fuel, refuel};
use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::Command as WasiCommand;

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
    let mut store = new_store(host, node, launch, outputs)?;
    let ended = call_in(&mut store, &program.inner.code, entry, &input).await;
    note_fuel(&store);
    end(store);
    ended
}

/// Lets go of the store of an instance that has ended. In a host that ends
/// with its one process (a native worker), only what the guest held is
/// dropped (a pool it left open is terminated, as its handle's drop does):
/// the instance's memory and stack, which a drop would reset for another
/// instance (system calls and page faults that were some 5% of a native
/// worker's start), end with the process.
fn end(mut store: Store<Ctx>) {
    if store.data().host.ends_with_its_process() {
        drop(std::mem::take(&mut store.data_mut().table));
        std::mem::forget(store);
    }
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
    let mut store = new_store(host, node, launch, outputs)?;
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

/// Turns a failed call into Python's exit code and a message naming the cause.
fn classify(error: &wasmtime::Error, limits: &crate::limits::Limits) -> Ended {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ended::code(exit.0);
    }
    if let Some(why) = limiter::exceeded(error) {
        return Ended::failure(why);
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
