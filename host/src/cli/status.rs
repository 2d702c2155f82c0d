//! The live status line of `host run` and the progress bar of `host map`,
//! drawn by indicatif on stderr.
//!
//! Both are shown only when stderr is a terminal, and not with `--quiet` (or
//! while logs are on, which also write to stderr). While one is shown, every
//! line of process output goes through [`host::set_terminal_hook`]: the bar
//! steps aside for the line and is drawn again below it, so neither tears
//! the other.

use host::Process;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the status line is redrawn.
const TICK: Duration = Duration::from_millis(100);

/// Whether to draw anything at all.
pub(super) fn wanted(quiet: bool) -> bool {
    !quiet && !super::logs::on() && std::io::stderr().is_terminal()
}

/// A bar on stderr that process output steps aside for.
fn bar(bar: ProgressBar, template: &str) -> ProgressBar {
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    let shown = bar.clone();
    host::set_terminal_hook(move |write| shown.suspend(write));
    bar
}

/// Runs `work` (which starts and joins `processes`) under a one-line live
/// status: how many are running, have ended, have failed, and the elapsed
/// time. Nothing is drawn unless `show`.
pub(super) fn live<R>(show: bool, processes: &[Process], work: impl FnOnce() -> R) -> R {
    if !show {
        return work();
    }
    let status = bar(ProgressBar::new_spinner(), "{spinner} {msg} · {elapsed}");
    // Drawn once before any process starts, however short the run.
    status.set_message(counts(processes));
    status.tick();
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                status.set_message(counts(processes));
                status.tick();
                std::thread::sleep(TICK);
            }
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    });
    status.finish_and_clear();
    result
}

/// `running R · ended E · failed F`.
fn counts(processes: &[Process]) -> String {
    let (mut running, mut ended, mut failed) = (0, 0, 0);
    for process in processes {
        match process.exitcode() {
            Some(code) => {
                ended += 1;
                failed += usize::from(!code.success());
            }
            None => running += usize::from(process.is_alive()),
        }
    }
    format!("running {running} · ended {ended} · failed {failed}")
}

/// The progress bar of `host map` over `total` items: done, rate, ETA. A
/// hidden one (which draws nothing) unless `show`.
pub(super) fn progress(show: bool, total: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let progress = bar(ProgressBar::new(total as u64), "{bar:30} {pos}/{len} items · {per_sec} · ETA {eta}");
    // Drawn once now, however quickly the items are done.
    progress.tick();
    progress.enable_steady_tick(TICK);
    progress
}
