//! The `host` command line: a thin client of the library.
//!
//! `host run FILE` loads a program, starts `--count` processes of it
//! concurrently, joins them (and every orphan they leave), prints one summary
//! line per process on stderr and exits with the first failure's status.
//! Everything that can be checked before a process starts is checked first:
//! bad input is one line on stderr and exit status 2.
//!
//! `host map FILE --entry NAME` runs a [`Pool`] of `--workers` processes of
//! the program and the entry on every line of its input: one JSON argument
//! per line in (stdin, or `--input FILE`), one JSON result per line out on
//! stdout, in input order (completion order with `--unordered`). A line that
//! is not JSON, or whose task fails, gives `{"error": "..."}` on its line and
//! nothing else is lost; the exit status is then 1 (0 when every line
//! succeeded, 2 for bad input before any process starts). The workers'
//! own output goes to stderr, so that stdout holds only results. With
//! `--shard I/N` it takes only every N-th line from the I-th (counting from
//! 0), so that N machines (a Kubernetes Indexed Job, a Slurm job array) share
//! one input between them.
//!
//! Both end with a report ([`report`]), show a live status on a terminal
//! ([`status`]) and log through `tracing` when asked ([`logs`]). The other
//! subcommands are tools around them: `inspect` ([`inspect`]), `new`
//! ([`scaffold`]) and `completions`.

mod cache;
mod inspect;
mod logs;
mod report;
mod scaffold;
mod status;

use clap::{Args, CommandFactory, Parser, Subcommand};
use host::{BackendKind, Command, Host, Limits, Pool, Process, Program, Stdin, Stdio};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

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
    Run(RunArgs),
    /// Run an entry on every input line with a pool of worker processes:
    /// one JSON argument per line in (stdin, or --input), one JSON result per
    /// line out, in input order (completion order with --unordered).
    ///
    /// A line that is not JSON, or whose task fails (an error, a trap, an
    /// exceeded limit), gives {"error": "..."} on its line; the others are
    /// unaffected. Exit status: 0 when every line succeeded, 1 when any
    /// failed, 2 for bad input (file, entry, flags) before any process starts.
    Map(MapArgs),
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

#[derive(Args, Debug)]
struct MapArgs {
    /// The program: a component of the mp:host world (named entries).
    file: PathBuf,

    /// The entry to run on each input.
    #[arg(long)]
    entry: String,

    /// How many worker processes (default: the cpu count).
    #[arg(long, short = 'w', value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,

    /// How many inputs each task carries (default: about four tasks per worker).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    chunksize: Option<u32>,

    /// Print results as they complete instead of in input order.
    #[arg(long)]
    unordered: bool,

    /// Read the inputs from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,

    #[command(flatten)]
    cache: cache::CacheArgs,

    /// Which backend runs the workers: `thread` or `native`.
    #[arg(long, default_value = "thread", value_parser = parse_backend)]
    backend: BackendKind,

    /// A task running longer than this fails, and its worker is replaced
    /// (e.g. 1s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = host::parse_timeout)]
    timeout: Option<Duration>,

    /// Cap each worker's linear memory (e.g. 64MiB); a task that grows past
    /// it fails with a message naming the limit, and its worker is replaced.
    #[arg(long, value_name = "SIZE", value_parser = host::parse_size)]
    max_memory: Option<u64>,

    /// Give each task an instruction budget (wasmtime fuel).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// What each worker may park in shared objects (queue items, pipe
    /// messages in flight, arrays), e.g. 16MiB (default 64MiB); past it a put
    /// or send fails.
    #[arg(long, value_name = "SIZE", value_parser = host::parse_size)]
    max_shared: Option<u64>,

    /// How many processes may be alive at once (the workers, and any
    /// children they start); default 10240 on the thread backend, 1500 on
    /// the native one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_processes: Option<u32>,

    /// Take only input lines I, I+N, I+2N, ... (counting from 0): shard I
    /// of N, so that N hosts share one input, each line on exactly one.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,

    #[command(flatten)]
    feedback: report::Feedback,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The program: a WASI 0.2 command component, a component of the mp:host
    /// world, or a WASI preview 1 core module (.wasm or .wat).
    file: PathBuf,

    /// How many processes to start, named Process-1..N; with more than one,
    /// each output line is prefixed with its process's name.
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Which backend runs the processes: `thread` (Wasm instances on a
    /// thread pool, virtual pids) or `native` (real OS processes; needs a
    /// build with `--features native`).
    #[arg(long, default_value = "thread", value_parser = parse_backend)]
    backend: BackendKind,

    /// Start at this named entry of the program instead of its main. The
    /// entry's argument is built from ARGS: none gives null, one is read as
    /// JSON (or else as a string), several make a JSON array.
    #[arg(long)]
    entry: Option<String>,

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

    /// Grant a host directory, seen by the guest at GUEST (default: the same
    /// path). Repeat to grant more. Nothing is granted by default.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    dirs: Vec<(PathBuf, String)>,

    /// Grant one environment variable. Repeat to grant more. None is
    /// granted by default.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    envs: Vec<(String, String)>,

    /// Which process reads the host's stdin (1..N). The default: the only
    /// one with --count 1, none with more (as Python gives child processes
    /// no stdin; several readers would split its bytes between them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    stdin: Option<u32>,

    #[command(flatten)]
    feedback: report::Feedback,

    #[command(flatten)]
    cache: cache::CacheArgs,

    /// Arguments for the program's main (or, with --entry, the entry's argument).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// How long the host, about to exit, waits for a stdout or stderr that
/// takes none of the output still queued (nobody reads it) before it
/// discards that output and exits anyway.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(5);

/// Shard `index` of `count`: the input lines whose number (from 0) is
/// `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    fn takes(self, line: usize) -> bool {
        line % self.count == self.index
    }
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    logs::init(cli.verbose);
    let status = match cli.command {
        Sub::Run(args) => run(args),
        Sub::Map(args) => map(args),
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

/// Checks everything, starts the processes, waits, reports. `Err` is bad input.
fn run(args: RunArgs) -> Result<i32, String> {
    check_dirs(&args.dirs)?;
    let reader = match args.stdin {
        Some(n) if n > args.count => {
            return Err(format!("--stdin {n}: there are only {} processes (--count)", args.count));
        }
        Some(n) => Some(n),
        None => (args.count == 1).then_some(1),
    };
    let report = args.feedback.open()?;
    let host = new_host(
        args.backend,
        args.fuel.is_some(),
        args.max_processes,
        args.max_memory,
        args.max_shared,
        report.wants_records(),
        args.cache.setting(&args.dirs.iter().map(|(dir, _)| dir.as_path()).collect::<Vec<_>>()),
    )?;
    if args.count > host.max_processes() {
        return Err(format!(
            "--count {} is more than the {} processes the run may have at once (--max-processes)",
            args.count,
            host.max_processes()
        ));
    }
    let program = host.load(&args.file).map_err(|e| e.to_string())?;
    check_entry(&program, args.entry.as_deref(), &args.file)?;
    let command = command(&program, &args)?;

    let processes: Vec<Process> = (1..=args.count)
        .map(|n| {
            let mut command = command.clone();
            if reader == Some(n) {
                command.stdin(Stdin::inherit());
            }
            command.create()
        })
        .collect();
    status::live(status::wanted(args.feedback.quiet), &processes, || {
        for process in &processes {
            if let Err(error) = process.start() {
                eprintln!("error: {}: {error}", process.name());
            }
        }
        for process in &processes {
            let _ = process.join();
        }
        host.wait();
    });
    // Everything the processes wrote goes out before the summary lines.
    host::flush_output(OUTPUT_PATIENCE);
    let status = summarize(&processes, report.human());
    report.write(&host.journal());
    Ok(status)
}

/// Runs `host map`. `Err` is bad input.
fn map(args: MapArgs) -> Result<i32, String> {
    let text = match &args.input {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?,
    };
    let report = args.feedback.open()?;
    let host = new_host(
        args.backend,
        args.fuel.is_some(),
        args.max_processes,
        args.max_memory,
        args.max_shared,
        report.wants_records(),
        args.cache.setting(&[]),
    )?;
    let program = host.load(&args.file).map_err(|e| e.to_string())?;
    check_entry(&program, Some(&args.entry), &args.file)?;
    let mut builder = Pool::builder(&program)
        .limits(Limits { max_memory: args.max_memory, fuel: args.fuel, timeout: args.timeout })
        .stdout(Stdio::host_stderr());
    if let Some(workers) = args.workers {
        builder = builder.processes(workers as usize);
    }
    let pool = builder.build().map_err(|e| e.to_string())?;

    // Each line (of this shard) is an input, or the error that it is not JSON.
    let lines: Vec<Result<Vec<u8>, String>> = text
        .lines()
        .enumerate()
        .filter(|(n, _)| args.shard.is_none_or(|shard| shard.takes(*n)))
        .map(|(n, line)| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => Ok(value.to_string().into_bytes()),
            Err(e) => Err(format!("line {}: not JSON: {e}", n + 1)),
        })
        .collect();
    let inputs: Vec<Vec<u8>> = lines.iter().filter_map(|l| l.as_ref().ok().cloned()).collect();
    let chunksize = args.chunksize.map_or_else(|| inputs.len().div_ceil(pool.processes() * 4).max(1), |c| c as usize);
    let mut results = pool.imap_json(&args.entry, inputs, chunksize, !args.unordered).map_err(|e| e.to_string())?;

    let progress = status::progress(status::wanted(args.feedback.quiet), lines.len());
    // Results on a terminal step aside for the progress bar, a line at a time.
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !progress.is_hidden();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = false;
    let mut emit = |result: Result<serde_json::Value, String>| {
        let line = match result {
            Ok(value) => value,
            Err(error) => {
                failed = true;
                serde_json::json!({ "error": error })
            }
        };
        if interactive {
            progress.suspend(|| writeln!(out, "{line}").and_then(|_| out.flush()).ok());
        } else {
            let _ = writeln!(out, "{line}");
        }
        progress.inc(1);
    };
    if args.unordered {
        // A malformed line has its answer at once: it comes first.
        lines.iter().filter_map(|l| l.as_ref().err()).for_each(|e| emit(Err(e.clone())));
        results.by_ref().for_each(|r| emit(r.map_err(|e| e.to_string())));
    } else {
        for line in &lines {
            match line {
                Ok(_) => match results.next() {
                    Some(result) => emit(result.map_err(|e| e.to_string())),
                    None => emit(Err("no result".into())),
                },
                Err(error) => emit(Err(error.clone())),
            }
        }
    }
    let _ = out.flush();
    drop(out);
    progress.finish_and_clear();
    pool.close();
    let _ = pool.join();
    // What the workers wrote (to the host's stderr) goes out before the exit.
    host::flush_output(OUTPUT_PATIENCE);
    report.write(&host.journal());
    Ok(i32::from(failed))
}

/// A host as the common flags ask; `Err` is bad input. A `--max-memory`
/// above what the host allows any one process is bad input rather than
/// silently lowered.
fn new_host(
    backend: BackendKind,
    fuel: bool,
    max_processes: Option<u32>,
    max_memory: Option<u64>,
    max_shared: Option<u64>,
    journal: bool,
    cache: host::CompileCache,
) -> Result<Host, String> {
    let mut builder = Host::builder().backend(backend).fuel(fuel).journal(journal).compile_cache(cache);
    if let Some(n) = max_processes {
        builder = builder.max_processes(n);
    }
    if let Some(bytes) = max_shared {
        builder = builder.max_shared(bytes);
    }
    let host = builder.build().map_err(|e| format!("{e:#}"))?;
    if let Some(bytes) = max_memory
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

fn command(program: &Program, args: &RunArgs) -> Result<Command, String> {
    let mut command = program.command();
    command
        .limits(Limits { max_memory: args.max_memory, fuel: args.fuel, timeout: args.timeout })
        .label_output(args.count > 1);
    for (key, value) in &args.envs {
        command.env(key, value);
    }
    for (host_dir, guest_dir) in &args.dirs {
        command.dir(host_dir, guest_dir);
    }
    match &args.entry {
        Some(entry) => command.entry(entry).input_json(entry_input(&args.args)),
        None => command.args(args.args.iter().cloned()),
    };
    Ok(command)
}

/// One summary line per process (if `print`); returns the host's exit status.
fn summarize(processes: &[Process], print: bool) -> i32 {
    let mut status = 0;
    for process in processes {
        let code = process.exitcode();
        if print {
            let pid = process.pid().map_or_else(|| "-".to_string(), |p| p.to_string());
            let wall = process.run_time().map_or_else(|| "-".to_string(), format_wall);
            let code_text = code.map_or_else(|| "none".to_string(), |c| c.to_string());
            eprintln!("[host] {} pid={pid} exitcode={code_text} wall={wall}", process.name());
        }
        let this = code.map_or(1, |c| c.shell_status());
        if status == 0 && this != 0 {
            status = this;
        }
    }
    status
}

fn format_wall(time: Duration) -> String {
    match time.as_secs_f64() {
        s if s >= 1.0 => format!("{s:.3}s"),
        s => format!("{:.3}ms", s * 1e3),
    }
}

/// The entry's JSON argument from the command line's ARGS.
fn entry_input(args: &[String]) -> Vec<u8> {
    let value = |arg: &String| {
        serde_json::from_str::<serde_json::Value>(arg).unwrap_or_else(|_| serde_json::Value::String(arg.clone()))
    };
    let json = match args {
        [] => serde_json::Value::Null,
        [one] => value(one),
        many => serde_json::Value::Array(many.iter().map(value).collect()),
    };
    json.to_string().into_bytes()
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
        None if !program.has_main() => Err(format!(
            "{} has no main to run; choose an entry with --entry ({})",
            file.display(),
            offers()
        )),
        _ => Ok(()),
    }
}

fn check_dirs(dirs: &[(PathBuf, String)]) -> Result<(), String> {
    for (host_dir, _) in dirs {
        if !host_dir.is_dir() {
            return Err(format!("--dir {}: no such directory on the host", host_dir.display()));
        }
    }
    Ok(())
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

fn parse_shard(text: &str) -> Result<Shard, String> {
    let invalid = || format!("invalid shard `{text}`: expected I/N with 0 <= I < N, such as 0/4");
    let (index, count) = text.split_once('/').ok_or_else(invalid)?;
    let (index, count): (usize, usize) = (index.parse().map_err(|_| invalid())?, count.parse().map_err(|_| invalid())?);
    if count == 0 || index >= count {
        return Err(invalid());
    }
    Ok(Shard { index, count })
}

fn parse_dir(text: &str) -> Result<(PathBuf, String), String> {
    let (host_dir, guest_dir) = match text.split_once("::") {
        Some((host_dir, guest_dir)) => (host_dir, guest_dir),
        None => (text, text),
    };
    if host_dir.is_empty() || guest_dir.is_empty() {
        return Err(format!("invalid directory grant `{text}`: expected HOST or HOST::GUEST"));
    }
    Ok((PathBuf::from(host_dir), guest_dir.to_string()))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("invalid environment variable `{text}`: expected KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_arguments_are_json_or_strings() {
        assert_eq!(entry_input(&[]), b"null");
        assert_eq!(entry_input(&["7".into()]), b"7");
        assert_eq!(entry_input(&["abc".into()]), b"\"abc\"");
        assert_eq!(entry_input(&["1".into(), "x".into()]), b"[1,\"x\"]");
    }

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!(parse_shard("1/3"), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        let shard = parse_shard("1/3").unwrap();
        assert_eq!((0..8).filter(|&n| shard.takes(n)).collect::<Vec<_>>(), [1, 4, 7]);
    }

    #[test]
    fn grants_parse() {
        assert_eq!(parse_dir("/tmp::/data"), Ok((PathBuf::from("/tmp"), "/data".into())));
        assert_eq!(parse_dir("/tmp"), Ok((PathBuf::from("/tmp"), "/tmp".into())));
        assert!(parse_dir("::/x").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("novalue").is_err());
    }
}
