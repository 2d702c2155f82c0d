//! Test program: the process cap as a guest sees it, one scenario per run
//! (argv[1]); run it under `--max-processes` of the number the scenario says.
//!
//! - `refill N`: starts N sleeping children (with itself, N + 1 processes),
//!   then one more, which is refused; terminates and joins them all, then
//!   starts N again, which all fit, since the first N have ended. Prints
//!   `first: N`, `extra: <error kind>`, `second: N`. The first N sleep an
//!   hour, so however slowly they start, none has ended by the extra one.
//! - `pool N`: a `Pool(N)` (N workers, children of this process) past the
//!   cap fails to be created; a `Pool(1)` then works. Prints `pool: <error>`
//!   and `small pool: [1, 4, 9]`.
//! - `orphan MS`: starts a child that sleeps MS milliseconds, and ends at
//!   once without joining it (the root adopts it).
//!
//! Entry `hold(ms)`: starts a child that sleeps `ms` milliseconds, prints
//! `child started`, then sleeps for ever (a parent to kill).
use mp::{Pool, Process, target};
use std::time::Duration;

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn square(x: u64) -> u64 {
    x * x
}

fn hold(ms: u64) {
    let child = Process::new(target!(nap), ms);
    child.start().unwrap();
    println!("child started");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

mp::entries!(nap, square, hold);

/// Starts `n` children sleeping `ms` each; how many started.
fn start_many(n: u32, ms: u64) -> Vec<Process> {
    let mut started = Vec::new();
    for _ in 0..n {
        let child = Process::new(target!(nap), ms);
        match child.start() {
            Ok(()) => started.push(child),
            Err(error) => {
                println!("start failed: {error}");
                break;
            }
        }
    }
    started
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    match args.get(1).map(String::as_str) {
        Some("refill") => {
            let first = start_many(n, 3_600_000);
            println!("first: {}", first.len());
            let extra = Process::new(target!(nap), 0);
            match extra.start() {
                Ok(()) => {
                    println!("extra: started");
                    extra.join().unwrap();
                }
                Err(error) => println!("extra: {}: {error}", error.kind()),
            }
            for child in &first {
                child.terminate().unwrap();
                child.join().unwrap();
            }
            let second = start_many(n, 0);
            println!("second: {}", second.len());
            for child in &second {
                child.join().unwrap();
            }
        }
        Some("pool") => {
            match Pool::builder().processes(n).build() {
                Ok(_) => println!("pool: created"),
                Err(error) => println!("pool: {error}"),
            }
            let pool = Pool::new(1);
            let squares: Vec<u64> = pool.map(target!(square), [1u64, 2, 3]).unwrap();
            println!("small pool: {squares:?}");
            pool.close();
            pool.join().unwrap();
        }
        Some("orphan") => {
            let child = Process::new(target!(nap), u64::from(n));
            child.start().unwrap();
        }
        other => {
            eprintln!("unknown scenario {other:?}: use refill, pool or orphan");
            mp::exit(2);
        }
    }
}
