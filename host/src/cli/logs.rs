//! The host's logs, through `tracing`: off unless `RUST_LOG` or `-v` asks.
//!
//! The library opens a span per process (its name, pid and ppid) with an
//! event as it is spawned, signalled, ends and is reaped, so a run that hangs
//! shows who is still alive and why the others ended. `-v` shows those
//! (`host=info`), `-vv` more (`host=debug`), `-vvv` everything the host logs;
//! `RUST_LOG` takes targets and levels (`host=debug,wasmtime=info`).

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

static ON: AtomicBool = AtomicBool::new(false);

/// Whether logs are being written (on stderr).
pub(super) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Starts logging if `-v` (counted in `verbose`) or `RUST_LOG` asks for it.
pub(super) fn init(verbose: u8) {
    let filter = match verbose {
        0 => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
                Ok(targets) => targets,
                Err(error) => {
                    eprintln!("warning: RUST_LOG={spec} is not understood ({error}); no logs");
                    return;
                }
            },
            _ => return,
        },
        1 => "host=info".parse().expect("a valid filter"),
        2 => "host=debug".parse().expect("a valid filter"),
        _ => "host=trace".parse().expect("a valid filter"),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry().with(layer).with(filter).try_init().is_ok() {
        ON.store(true, Ordering::Relaxed);
    }
}
