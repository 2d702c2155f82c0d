//! Hostile test program: a fork bomb that stops at the process cap.
//!
//! Every process starts two children of itself, each one level shallower,
//! down to depth 0 (argv[1], default 30: 2^31 processes if nothing stopped
//! it). A start refused with `mp::Error::ProcessLimit` means "stop
//! recursing": the process starts no more children and joins the ones it
//! started. Prints `started` per child started, `refused: LIMIT: MESSAGE`
//! per refusal, and `unexpected: ...` for anything else (another error, a
//! child that did not exit 0), so a test can count them.
use mp::{Error, Process, target};

fn bomb(depth: u32) {
    if depth == 0 {
        return;
    }
    let mut started = Vec::new();
    for _ in 0..2 {
        let child = Process::new(target!(bomb), depth - 1);
        match child.start() {
            Ok(()) => {
                println!("started");
                started.push(child);
            }
            Err(error @ Error::ProcessLimit(limit)) => {
                println!("refused: {limit}: {error}");
                break;
            }
            Err(error) => {
                println!("unexpected: start failed: {error:?}");
                break;
            }
        }
    }
    for child in &started {
        if let Err(error) = child.join() {
            println!("unexpected: join failed: {error:?}");
        } else if child.exitcode() != Some(0) {
            println!("unexpected: a child exited with {:?}", child.exitcode());
        }
    }
}

mp::entries!(bomb);

fn main() {
    let depth = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    bomb(depth);
}
