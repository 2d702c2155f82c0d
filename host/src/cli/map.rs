//! `host map FILE --entry NAME`: run a [`Pool`] of `--workers` processes of
//! the program and the entry on every line of its input.
//!
//! One JSON argument per line in (stdin, or `--input FILE`), one JSON result
//! per line out on stdout, in input order (completion order with
//! `--unordered`). A line that is not JSON, or whose task fails, gives
//! `{"error": "..."}` on its line and nothing else is lost; the exit status
//! is then 1 (0 when every line succeeded, 2 for bad input before any
//! process starts). The workers' own output goes to stderr, so that stdout
//! holds only results. With `--shard I/N` it takes only every N-th line from
//! the I-th (counting from 0), so that N machines share one input ([`Shard`]).

use super::host_args::{self, HostArgs, OUTPUT_PATIENCE};
use super::{report, status};
use clap::Args;
use host::{Pool, Stdio};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(mut_args = host_args::for_workers)]
pub(super) struct MapArgs {
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
    host: HostArgs,

    /// Take only input lines I, I+N, I+2N, ... (counting from 0): shard I
    /// of N, so that N hosts share one input, each line on exactly one.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,

    #[command(flatten)]
    feedback: report::Feedback,
}

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

/// Runs `host map`. `Err` is bad input.
pub(super) fn map(args: MapArgs) -> Result<i32, String> {
    // Bytes, not text: a line that is not UTF-8 is one malformed line.
    let text = match &args.input {
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            text
        }
    };
    let report = args.feedback.open()?;
    let host = args.host.host(report.wants_records(), &[])?;
    let program = host_args::load(&host, &args.file, Some(&args.entry))?;
    let mut builder = Pool::builder(&program).limits(args.host.limits()).stdout(Stdio::host_stderr());
    if let Some(workers) = args.workers {
        builder = builder.processes(workers as usize);
    }
    let pool = builder.build().map_err(|e| e.to_string())?;

    // Each line (of this shard) is an input, or the error that it is not JSON.
    let lines: Vec<Result<Vec<u8>, String>> = lines(&text)
        .enumerate()
        .filter(|(n, _)| args.shard.is_none_or(|shard| shard.takes(*n)))
        .map(|(n, line)| match serde_json::from_slice::<serde_json::Value>(line) {
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

/// The lines of `text` as `str::lines` cuts them: at each `\n`, with a
/// `\r` before it dropped.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n').map(|line| match line.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => line,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_as_text_lines_are() {
        for text in ["", "\n", "a", "a\n", "a\r\nb", "a\r", "a\n\nb\n", "a\n\n"] {
            let expected: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
            assert_eq!(lines(text.as_bytes()).collect::<Vec<_>>(), expected, "{text:?}");
        }
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
}
