//! The flags `host run` and `host map` share, and the host they build.
//!
//! Both subcommands take the same flags for the compile cache, the backend
//! and the limits on what a process may use ([`HostArgs`]). From them come
//! the host, built in this one place ([`HostArgs::host`]), the limits each
//! process or task runs under ([`HostArgs::limits`]), and the program,
//! loaded and checked for the entry asked ([`load`]). The flags' help speaks
//! of processes, as `host run` starts them; [`for_workers`] words it for
//! `host map`, whose processes are pool workers running tasks.

use super::cache;
use clap::{Arg, Args};
use host::{BackendKind, Host, Limits, Program};
use std::path::Path;
use std::time::Duration;

/// How long the host, about to exit, waits for a stdout or stderr that
/// takes none of the output still queued (nobody reads it) before it
/// discards that output and exits anyway.
pub(super) const OUTPUT_PATIENCE: Duration = Duration::from_secs(5);

/// The flags that make the host and limit its processes.
#[derive(Args, Debug)]
pub(super) struct HostArgs {
    #[command(flatten)]
    cache: cache::CacheArgs,

    /// Which backend runs the processes: `thread` (Wasm instances on a
    /// thread pool, virtual pids) or `native` (real OS processes; needs a
    /// build with `--features native`).
    #[arg(long, default_value = "thread", value_parser = parse_backend)]
    backend: BackendKind,

    /// Terminate each process still running after this long (exitcode -15),
    /// e.g. 1s, 500ms, 2m.
    #[arg(long, value_name = "DURATION", value_parser = host::parse_timeout)]
    timeout: Option<Duration>,

    /// Cap each process's linear memory, e.g. 64MiB, 1GiB; a process that
    /// grows past it fails (exitcode 1) with a message naming the limit.
    #[arg(long, value_name = "SIZE", value_parser = host::parse_size)]
    max_memory: Option<u64>,

    /// Give each process an instruction budget (wasmtime fuel); running out
    /// ends it with exitcode 1.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// What each process may park in shared objects: queue items nobody has
    /// taken, pipe messages in flight, arrays, e.g. 16MiB (default 64MiB).
    /// Past it a put or send fails with a quota error; the whole run may
    /// park 16 times it.
    #[arg(long, value_name = "SIZE", value_parser = host::parse_size)]
    max_shared: Option<u64>,

    /// How many processes of the run may be alive at once, every one
    /// counted: the N started, their children, grandchildren and pool
    /// workers. Past it, a guest's start fails with a process-limit error
    /// (Python's OSError EAGAIN) and it may try again once some have ended.
    /// Default: 10240 on the thread backend, 1500 on the native one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_processes: Option<u32>,
}

impl HostArgs {
    /// A host as the flags ask, its compile cache off where a `--dir` grant
    /// (`granted`) would let a guest reach it, keeping a journal when the
    /// report wants one; `Err` is bad input. A `--max-memory` above what the
    /// host allows any one process is bad input rather than silently
    /// lowered.
    pub(super) fn host(&self, journal: bool, granted: &[&Path]) -> Result<Host, String> {
        let mut builder = Host::builder()
            .backend(self.backend)
            .fuel(self.fuel.is_some())
            .journal(journal)
            .compile_cache(self.cache.setting(granted));
        if let Some(n) = self.max_processes {
            builder = builder.max_processes(n);
        }
        if let Some(bytes) = self.max_shared {
            builder = builder.max_shared(bytes);
        }
        let host = builder.build().map_err(|e| format!("{e:#}"))?;
        if let Some(bytes) = self.max_memory
            && bytes > host.max_memory_per_process()
        {
            return Err(format!(
                "--max-memory {} is more than the host allows any one process ({})",
                host::format_size(bytes),
                host::format_size(host.max_memory_per_process())
            ));
        }
        Ok(host)
    }

    /// The limits each process (each task, in `host map`) runs under.
    pub(super) fn limits(&self) -> Limits {
        Limits { max_memory: self.max_memory, fuel: self.fuel, timeout: self.timeout }
    }
}

/// The shared flags' help as `host map` words it (`#[command(mut_args =
/// for_workers)]`): its processes are workers, and the limits hold per task.
pub(super) fn for_workers(arg: Arg) -> Arg {
    let help = match arg.get_id().as_str() {
        "backend" => "Which backend runs the workers: `thread` or `native`",
        "timeout" => "A task running longer than this fails, and its worker is replaced (e.g. 1s, 500ms)",
        "max_memory" => {
            "Cap each worker's linear memory (e.g. 64MiB); a task that grows past it fails with a message naming \
             the limit, and its worker is replaced"
        }
        "fuel" => "Give each task an instruction budget (wasmtime fuel)",
        "max_shared" => {
            "What each worker may park in shared objects (queue items, pipe messages in flight, arrays), e.g. \
             16MiB (default 64MiB); past it a put or send fails"
        }
        "max_processes" => {
            "How many processes may be alive at once (the workers, and any children they start); default 10240 \
             on the thread backend, 1500 on the native one"
        }
        _ => return arg,
    };
    arg.help(help)
}

/// `file` loaded by `host`, with the entry asked (or, with none, a main);
/// `Err` (bad input) names what the program offers instead.
pub(super) fn load(host: &Host, file: &Path, entry: Option<&str>) -> Result<Program, String> {
    let program = host.load(file).map_err(|e| e.to_string())?;
    check_entry(&program, entry, file)?;
    Ok(program)
}

fn check_entry(program: &Program, entry: Option<&str>, file: &std::path::Path) -> Result<(), String> {
    let offers = || match program.entries() {
        [] => "it has no named entries".to_string(),
        entries => format!("it offers: {}", entries.join(", ")),
    };
    match entry {
        Some(name) if !program.entries().iter().any(|e| e == name) => {
            Err(format!("{} has no entry named `{name}` ({})", file.display(), offers()))
        }
        None if !program.has_main() => {
            Err(format!("{} has no main to run; choose an entry with --entry ({})", file.display(), offers()))
        }
        _ => Ok(()),
    }
}

fn parse_backend(text: &str) -> Result<BackendKind, String> {
    let kind: BackendKind = text.parse()?;
    if !kind.is_available() {
        return Err(format!(
            "the {text} backend is not built in: rebuild the host with `cargo build --features native` (Linux only)"
        ));
    }
    Ok(kind)
}
