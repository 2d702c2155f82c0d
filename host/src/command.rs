//! Building a process: what to run, with which arguments, grants and limits.
//!
//! [`Command`] is the builder (as `std::process::Command`); [`Launch`] is what
//! it hands to a backend when the process starts. A guest's child inherits
//! its parent's launch (program, grants, limits, output) with a new entry.

use crate::limits::Limits;
use crate::output::{Format, Stdin, Stdio};
use crate::program::Program;
use crate::work::Work;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A process to be: Python's `Process(target=.., args=.., name=.., daemon=..)`.
///
/// By default a process runs the program's `main`, with no arguments, no
/// environment variables, no directories and no network: everything it may
/// reach is granted here, one item at a time.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::time::Duration;
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/hello.wasm")?;
/// let process = program
///     .command()
///     .arg("world")
///     .env("GREETING", "hi")
///     .max_memory(64 << 20)
///     .timeout(Duration::from_secs(5))
///     .spawn()?;
/// assert!(process.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Command {
    /// The launch, running `main` ([`create`](Command::create) puts the
    /// entry in).
    launch: Launch,
    /// `None` for `main`.
    entry: Option<String>,
    /// The entry's argument (MessagePack, see [`crate::codec`]).
    input: Vec<u8>,
    name: Option<String>,
    daemon: bool,
}

/// Everything a backend needs to start a process.
#[derive(Clone)]
pub(crate) struct Launch {
    pub(crate) program: Program,
    /// What it runs: `main`, an entry, or a pool worker's task loop.
    pub(crate) work: Work,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dirs: Vec<(PathBuf, String)>,
    pub(crate) limits: Limits,
    /// When the process (and every descendant) is terminated; set at start
    /// from `limits.timeout` unless inherited.
    pub(crate) deadline: Option<Instant>,
    pub(crate) stdin: Stdin,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
    /// The output streams are shared with other processes (a child's with
    /// its parent's): lines are the unit, so that they never interleave.
    pub(crate) shares_output: bool,
    /// Prefix output lines with the process's name.
    pub(crate) labelled: bool,
    /// The prefix, fixed at start.
    pub(crate) label: Option<String>,
    /// The parent's prefix, which a child's extends.
    pub(crate) parent_label: Option<String>,
    /// The secret under which its parent handed it shared objects, which it
    /// claims as it starts (see [`crate::sync`]).
    pub(crate) ticket: Option<u64>,
}

impl Launch {
    /// Fixes what is decided at start: the deadline and the output label.
    pub(crate) fn prepare(&mut self, name: &str) {
        if self.deadline.is_none() {
            // A timeout too long to add to the clock is as good as none.
            self.deadline = self.limits.timeout.and_then(|t| Instant::now().checked_add(t));
        }
        if self.labelled && self.label.is_none() {
            self.label = Some(match &self.parent_label {
                Some(parent) => format!("{parent}/{name}"),
                None => name.to_string(),
            });
        }
    }

    /// How the process's output is passed on (see [`crate::output`]):
    /// labelled or shared, a whole line at a time; else byte for byte.
    pub(crate) fn output_format(&self) -> Format {
        Format::new(self.label.clone(), self.shares_output || matches!(self.work, Work::Serve(_)))
    }

    /// The launch of a child started at `entry`: same program, grants,
    /// limits and output (shared, so a line at a time), no stdin (as
    /// Python's children); its label extends its parent's.
    pub(crate) fn child(&self, entry: String, input: Vec<u8>) -> Launch {
        Launch {
            work: Work::Entry { name: entry, input },
            args: Vec::new(),
            stdin: Stdin::null(),
            shares_output: true,
            label: None,
            parent_label: self.label.clone(),
            deadline: self.deadline,
            ticket: None,
            ..self.clone()
        }
    }
}

impl Command {
    pub(crate) fn new(program: Program) -> Command {
        Command {
            launch: Launch {
                program,
                work: Work::Main,
                args: Vec::new(),
                env: Vec::new(),
                dirs: Vec::new(),
                limits: Limits::default(),
                deadline: None,
                stdin: Stdin::null(),
                stdout: Stdio::inherit(),
                stderr: Stdio::inherit(),
                shares_output: false,
                labelled: false,
                label: None,
                parent_label: None,
                ticket: None,
            },
            entry: None,
            input: crate::codec::NIL.to_vec(),
            name: None,
            daemon: false,
        }
    }

    /// Starts at the named entry instead of `main` (Python's `target`).
    pub fn entry(&mut self, name: impl Into<String>) -> &mut Command {
        self.entry = Some(name.into());
        self
    }

    /// The entry's argument (Python's `args`), serialized in the guests'
    /// binary format (MessagePack; see `wit/mp.wit`).
    ///
    /// # Panics
    /// If `value` does not serialize (a type whose `Serialize` fails).
    pub fn input<T: serde::Serialize>(&mut self, value: &T) -> &mut Command {
        self.input = crate::codec::encode(value).expect("the entry's argument serializes");
        self
    }

    /// The entry's argument as JSON text, turned into the guests' format.
    /// Text that is not JSON is passed on as it is: the entry then fails
    /// with "bad arguments".
    pub fn input_json(&mut self, json: impl Into<Vec<u8>>) -> &mut Command {
        let json = json.into();
        self.input = crate::codec::from_json(&json).unwrap_or(json);
        self
    }

    /// A command-line argument for `main` (after the program's name).
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Command {
        self.launch.args.push(arg.into());
        self
    }

    /// Appends arguments for the program's `main`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, args: I) -> &mut Command {
        self.launch.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Grants one environment variable.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Command {
        self.launch.env.push((key.into(), value.into()));
        self
    }

    /// Grants the host directory `host` to the process, seen there as `guest`.
    pub fn dir(&mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> &mut Command {
        self.launch.dirs.push((host.into(), guest.into()));
        self
    }

    /// Sets every limit at once (memory, fuel, timeout).
    pub fn limits(&mut self, limits: Limits) -> &mut Command {
        self.launch.limits = limits;
        self
    }

    /// Caps the process's linear memory; growing past it fails the process.
    pub fn max_memory(&mut self, bytes: u64) -> &mut Command {
        self.launch.limits.max_memory = Some(bytes);
        self
    }

    /// An instruction budget; needs a host built with [`fuel`](crate::HostBuilder::fuel).
    pub fn fuel(&mut self, fuel: u64) -> &mut Command {
        self.launch.limits.fuel = Some(fuel);
        self
    }

    /// Terminates the process (and its descendants) after `timeout`.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        self.launch.limits.timeout = Some(timeout);
        self
    }

    /// Where the process's stdin comes from (default [`Stdin::null`]).
    pub fn stdin(&mut self, stdin: Stdin) -> &mut Command {
        self.launch.stdin = stdin;
        self
    }

    /// Where the process's stdout goes (default [`Stdio::inherit`]): byte
    /// for byte, unless labelled (see [`Command::label_output`]).
    pub fn stdout(&mut self, stdio: Stdio) -> &mut Command {
        self.launch.stdout = stdio;
        self
    }

    /// Where the process's stderr goes (default [`Stdio::inherit`]).
    pub fn stderr(&mut self, stdio: Stdio) -> &mut Command {
        self.launch.stderr = stdio;
        self
    }

    /// Prefixes every output line with the process's name (`Process-2: ..`),
    /// and its children's lines with theirs (`Process-2/Process-1: ..`).
    /// Labelled output goes a whole line at a time (a line longer than 64 KiB
    /// in pieces, each labelled), and an unfinished last line is ended with a
    /// newline; unlabelled output is passed on byte for byte.
    pub fn label_output(&mut self, labelled: bool) -> &mut Command {
        self.launch.labelled = labelled;
        self
    }

    /// The process's name (default `Process-N`).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Command {
        self.name = Some(name.into());
        self
    }

    /// Makes the process a daemon: terminated when its parent ends, and
    /// not allowed children.
    pub fn daemon(&mut self, daemon: bool) -> &mut Command {
        self.daemon = daemon;
        self
    }

    pub(crate) fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The launch of the process to be, its entry put in.
    pub(crate) fn process_launch(&self) -> Launch {
        let mut launch = self.launch.clone();
        if let Some(name) = &self.entry {
            launch.work = Work::Entry { name: name.clone(), input: self.input.clone() };
        }
        launch
    }

    /// The name it was given, if any.
    pub(crate) fn given_name(&self) -> Option<&String> {
        self.name.as_ref()
    }

    pub(crate) fn is_daemon(&self) -> bool {
        self.daemon
    }
}
