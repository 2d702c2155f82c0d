//! Python's `multiprocessing`, rebuilt for WebAssembly.
//!
//! A [`Host`] runs every process as an isolated Wasm instance and enforces the
//! lifecycle Python users know: [`Process::start`], [`Process::join`],
//! [`Process::terminate`], [`Process::kill`], [`Process::is_alive`],
//! [`Process::exitcode`], daemons, pids, names, orphans adopted by the root,
//! no zombies. A process sees nothing of the host unless granted (files,
//! environment, network), and can be capped in memory, instructions and time.
//! Guests reach the same model through the WIT interface in `wit/`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let host = host::Host::new()?;
//! let program = host.load("target/guests/seed-hello.wasm")?;
//! let process = program.command().spawn()?;
//! let code = process.join()?;
//! println!("{} (pid {:?}) ended with {code}", process.name(), process.pid());
//! # Ok(()) }
//! ```
//!
//! A [`Pool`] runs many tasks (named entries of a program) on a fixed set of
//! worker processes, as Python's `multiprocessing.Pool`.
//!
//! The [`BackendKind::Thread`] backend (the default) runs processes as tasks
//! on a shared thread pool with virtual pids; [`BackendKind::Native`] (cargo
//! feature `native`) runs each as a real OS process.

#![warn(missing_docs)]

mod allocation;
mod backend;
mod cache;
mod codec;
mod command;
mod error;
mod exit;
#[cfg(test)]
mod fuzz;
mod guest;
mod handle;
mod instance;
mod journal;
mod limits;
mod output;
mod pool;
mod process;
mod program;
mod runtime;
mod set_once;
pub mod sync;
mod watch;
mod work;

pub use backend::BackendKind;
/// Worker mode of the native backend: what the re-executed binary runs.
#[cfg(all(feature = "native", target_os = "linux"))]
pub use backend::native::{WORKER_ARG, worker};
pub use cache::{CACHE_DIR_ENV, CACHE_ENV, CompileCache};
pub use command::Command;
pub use error::{Error, LoadError};
pub use exit::{ExitCode, Signal};
pub use handle::Process;
pub use journal::ProcessRecord;
pub use limits::{Limits, MAX_TIMEOUT, format_size, parse_duration, parse_size, parse_timeout};
pub use output::{Capture, Stdin, Stdio, flush_output, set_terminal_hook};
pub use pool::{AsyncResult, Imap, Pool, PoolBuilder, TaskError};
pub use program::{Program, ProgramKind};
pub use runtime::{Host, HostBuilder, cpu_count};
