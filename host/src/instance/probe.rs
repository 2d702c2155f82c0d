//! The entry names a program offers, asked of one throwaway instance as the
//! program is loaded, under limits of its own.

use super::limiter::{MemoryLimitExceeded, MemoryLimiter};
use super::store::{Ctx, Outputs, prepare_store, wasi_builder};
use crate::command::Launch;
use crate::limits::format_size;
use crate::output::{Format, Input, LineSink, Stdio, Stream};
use crate::process::Node;
use crate::program::{Code, first_line};
use crate::runtime::HostInner;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};

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
            limiter: MemoryLimiter::new(PROBE_MEMORY, Arc::default()),
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
