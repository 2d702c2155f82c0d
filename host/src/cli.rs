//! The `host` command line: a thin client of the library.
//!
//! `host run FILE` starts processes of a program and joins them ([`run`]);
//! `host map FILE --entry NAME` runs an entry on every input line with a
//! pool of workers ([`map`]). Both take the same flags for the backend, the
//! compile cache and the limits, and build their host from them in one
//! place ([`host_args`]); bad input before any process starts is one line
//! on stderr and exit status [`BAD_INPUT`].
//!
//! Both end with a report ([`report`]), show a live status on a terminal
//! ([`status`]) and log through `tracing` when asked ([`logs`]). The other
//! subcommands are tools around them: `inspect` ([`inspect`]), `new`
//! ([`scaffold`]) and `completions`.

mod cache;
mod host_args;
mod inspect;
mod logs;
mod map;
mod report;
mod run;
mod scaffold;
mod status;

use clap::{CommandFactory, Parser, Subcommand};
use host::BackendKind;

/// Exit status for bad input: a missing or non-Wasm file, a wrong world, an
/// unknown entry, a bad flag value.
pub const BAD_INPUT: i32 = 2;

/// `host --version`: the host's version, the wasmtime it runs on, the backends built in.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let backends: Vec<&str> = [("thread", BackendKind::Thread), ("native", BackendKind::Native)]
            .into_iter()
            .filter(|(_, kind)| kind.is_available())
            .map(|(name, _)| name)
            .collect();
        format!(
            "{} (wasmtime {}; backends: {})",
            env!("CARGO_PKG_VERSION"),
            env!("WASMTIME_VERSION"),
            backends.join(", ")
        )
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "host",
    version = version(),
    about = "Python's multiprocessing for WebAssembly: run every process as a sandboxed Wasm instance",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Sub,

    /// Log what the host does on stderr: -v each process's spawn, signals,
    /// end and reap; -vv and -vvv more. RUST_LOG (e.g. host=debug) also works.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Start N processes of a program concurrently, join them all, and print
    /// one summary line per process on stderr.
    ///
    /// Exit status: 0 when every process exits 0; otherwise the first
    /// non-zero exitcode in start order, a signal -S given as 128+S (a
    /// timeout gives 143); 2 for bad input, before any process starts.
    Run(run::RunArgs),
    /// Run an entry on every input line with a pool of worker processes:
    /// one JSON argument per line in (stdin, or --input), one JSON result per
    /// line out, in input order (completion order with --unordered).
    ///
    /// A line that is not JSON, or whose task fails (an error, a trap, an
    /// exceeded limit), gives {"error": "..."} on its line; the others are
    /// unaffected. Exit status: 0 when every line succeeded, 1 when any
    /// failed, 2 for bad input (file, entry, flags) before any process starts.
    Map(map::MapArgs),
    /// Say what a file is: a WASI p1 module, a WASI p2 command or an mp
    /// program; its entries, imports, size, and whether its compiled code is
    /// cached. Exit status 2 (one line on stderr) for a file that is not Wasm.
    Inspect(inspect::InspectArgs),
    /// Make a new guest program with the mp SDK: a crate that builds to a
    /// .wasm that `host run` and `host map` run.
    New(scaffold::NewArgs),
    /// Print a shell completion script on stdout: `host completions bash >
    /// ~/.local/share/bash-completion/completions/host`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    logs::init(cli.verbose);
    let status = match cli.command {
        Sub::Run(args) => run::run(args),
        Sub::Map(args) => map::map(args),
        Sub::Inspect(args) => inspect::inspect(args),
        Sub::New(args) => scaffold::new(args),
        Sub::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "host", &mut std::io::stdout());
            Ok(0)
        }
    };
    match status {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            BAD_INPUT
        }
    }
}

/// Help and version go to stdout with status 0; a usage error is one line.
fn usage_error(error: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return 0;
        }
        // `host` alone: the help, as a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{}", error.render());
            return BAD_INPUT;
        }
        _ => {}
    }
    let rendered = error.render().to_string();
    let line = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
    // The help of the subcommand the user was typing, if there is one.
    let command = Cli::command();
    let sub = std::env::args().nth(1).filter(|arg| command.find_subcommand(arg).is_some());
    let help = sub.map_or_else(|| "host --help".to_string(), |sub| format!("host {sub} --help"));
    eprintln!("{line} (see `{help}`)");
    BAD_INPUT
}
