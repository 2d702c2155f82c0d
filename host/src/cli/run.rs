//! `host run FILE`: start `--count` processes of a program concurrently,
//! join them (and every orphan they leave), print one summary line per
//! process on stderr and exit with the first failure's status.
//!
//! Everything that can be checked before a process starts is checked first
//! (the `--dir` grants, `--stdin`, `--count` against `--max-processes`, the
//! program and its entry): bad input is one line on stderr and exit status
//! 2. Here too: how the command line's ARGS become a process's arguments or
//! its entry's JSON argument, and the parsers of `--dir` and `--env`.

use super::host_args::{self, HostArgs, OUTPUT_PATIENCE};
use super::{report, status};
use clap::Args;
use host::{Command, Process, Program, Stdin};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// The program: a WASI 0.2 command component, a component of the mp:host
    /// world, or a WASI preview 1 core module (.wasm or .wat).
    file: PathBuf,

    /// How many processes to start, named Process-1..N; with more than one,
    /// each output line is prefixed with its process's name.
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Start at this named entry of the program instead of its main. The
    /// entry's argument is built from ARGS: none gives null, one is read as
    /// JSON (or else as a string), several make a JSON array.
    #[arg(long)]
    entry: Option<String>,

    #[command(flatten)]
    host: HostArgs,

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

    /// Arguments for the program's main (or, with --entry, the entry's argument).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Checks everything, starts the processes, waits, reports. `Err` is bad input.
pub(super) fn run(args: RunArgs) -> Result<i32, String> {
    check_dirs(&args.dirs)?;
    let reader = match args.stdin {
        Some(n) if n > args.count => {
            return Err(format!("--stdin {n}: there are only {} processes (--count)", args.count));
        }
        Some(n) => Some(n),
        None => (args.count == 1).then_some(1),
    };
    let report = args.feedback.open()?;
    let granted: Vec<&Path> = args.dirs.iter().map(|(dir, _)| dir.as_path()).collect();
    let host = args.host.host(report.wants_records(), &granted)?;
    if args.count > host.max_processes() {
        return Err(format!(
            "--count {} is more than the {} processes the run may have at once (--max-processes)",
            args.count,
            host.max_processes()
        ));
    }
    let program = host_args::load(&host, &args.file, args.entry.as_deref())?;
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

fn command(program: &Program, args: &RunArgs) -> Result<Command, String> {
    let mut command = program.command();
    command.limits(args.host.limits()).label_output(args.count > 1);
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
    use std::io::Write;
    // Buffered: unbuffered stderr costs a write per formatted piece, nine
    // per line, and a run may end a hundred thousand processes.
    let mut out = std::io::BufWriter::new(std::io::stderr().lock());
    let mut status = 0;
    for process in processes {
        let code = process.exitcode();
        if print {
            let pid = process.pid().map_or_else(|| "-".to_string(), |p| p.to_string());
            let wall = process.run_time().map_or_else(|| "-".to_string(), format_wall);
            let code_text = code.map_or_else(|| "none".to_string(), |c| c.to_string());
            // A closed stderr loses the summary, not the exit status.
            let _ = writeln!(out, "[host] {} pid={pid} exitcode={code_text} wall={wall}", process.name());
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

fn check_dirs(dirs: &[(PathBuf, String)]) -> Result<(), String> {
    for (host_dir, _) in dirs {
        if !host_dir.is_dir() {
            return Err(format!("--dir {}: no such directory on the host", host_dir.display()));
        }
    }
    Ok(())
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
    fn grants_parse() {
        assert_eq!(parse_dir("/tmp::/data"), Ok((PathBuf::from("/tmp"), "/data".into())));
        assert_eq!(parse_dir("/tmp"), Ok((PathBuf::from("/tmp"), "/tmp".into())));
        assert!(parse_dir("::/x").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("novalue").is_err());
    }
}
