//! What `host run` and `host map` tell at the end: the human summary lines
//! (the default) or a JSON report of every process of the run.
//!
//! The JSON report is one object per line, one per process that ended in the
//! run, children and pool workers included, in the order they ended (from the
//! host's journal, [`host::Host::journal`]). Its keys are documented in the
//! README: `name`, `pid`, `ppid`, `daemon`, `exitcode`, `failure`, `wall_ms`,
//! `fuel_used`, `peak_memory`.

use clap::{Args, ValueEnum};
use host::ProcessRecord;
use std::io::Write;
use std::path::PathBuf;

/// The flags `run` and `map` share for what the user sees besides the
/// processes' own output.
#[derive(Args, Debug)]
pub(super) struct Feedback {
    /// What to print on stderr at the end: `human` (one summary line per
    /// process started here) or `json` (one JSON object per process of the
    /// run, children included).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    report: Format,

    /// Also write the JSON report (one object per line) to this file.
    #[arg(long, value_name = "PATH")]
    report_file: Option<PathBuf>,

    /// Show no live status line or progress bar (they are only ever shown
    /// when stderr is a terminal).
    #[arg(long, short = 'q')]
    pub(super) quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

/// Where the report goes, opened before any process starts.
pub(super) struct Report {
    format: Format,
    file: Option<(PathBuf, std::fs::File)>,
}

impl Feedback {
    /// Opens the report file; `Err` (bad input) if it cannot be created.
    pub(super) fn open(&self) -> Result<Report, String> {
        let file = match &self.report_file {
            Some(path) => Some((
                path.clone(),
                std::fs::File::create(path).map_err(|e| format!("--report-file {}: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(Report { format: self.report, file })
    }
}

impl Report {
    /// Whether the run needs the host to keep a record of every process.
    pub(super) fn wants_records(&self) -> bool {
        self.format == Format::Json || self.file.is_some()
    }

    /// Whether the human summary lines are printed on stderr.
    pub(super) fn human(&self) -> bool {
        self.format == Format::Human
    }

    /// Writes the JSON report where it was asked for.
    pub(super) fn write(self, records: &[ProcessRecord]) {
        let text: String = records.iter().map(|r| format!("{}\n", json(r))).collect();
        if self.format == Format::Json {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        if let Some((path, mut file)) = self.file
            && let Err(error) = file.write_all(text.as_bytes())
        {
            eprintln!("error: --report-file {}: {error}", path.display());
        }
    }
}

/// One process's line of the JSON report.
fn json(record: &ProcessRecord) -> serde_json::Value {
    serde_json::json!({
        "name": record.name,
        "pid": record.pid,
        "ppid": record.ppid,
        "daemon": record.daemon,
        "exitcode": record.exitcode.code(),
        "failure": record.failure,
        "wall_ms": record.wall.as_secs_f64() * 1e3,
        "fuel_used": record.fuel_used,
        "peak_memory": record.peak_memory,
    })
}
