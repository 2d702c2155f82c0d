//! Test program for `mp::fork`. argv[1] names a scenario; each check prints
//! one `key: value` line (a child's keys start with `child-`), an error as
//! its kind. The last line of the parent is `done: SCENARIO`. A fork the
//! backend refuses prints `fork: KIND: MESSAGE` and exits 1.
use std::thread::sleep;
use std::time::Duration;

use mp::{Fork, Process, getpid, getppid, target};

/// Forks; a refusal ends the program with exit 1.
fn fork() -> Fork {
    match mp::fork() {
        Ok(side) => side,
        Err(error) => {
            println!("fork: {}: {error}", error.kind());
            mp::exit(1);
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        sleep(Duration::from_secs(3600));
    }
}

/// A daemon's body: its fork is refused by the daemon rule.
fn daemon_forks() {
    match mp::fork() {
        Ok(Fork::Child) => mp::exit(9),
        Ok(Fork::Parent(_)) => println!("child-daemon: forked"),
        Err(error) => println!("child-daemon: {}", error.kind()),
    }
}

/// Ends at once with code 5.
fn five() {
    mp::exit(5);
}

/// Sleeps until terminated.
fn sleeper() {
    sleep_forever();
}

mp::entries!(daemon_forks, five, sleeper);

/// The heap, the stack and a global, before and after.
static mut GLOBAL: u32 = 1;

fn copy() {
    let mut numbers = vec![1, 2, 3];
    let mut local = 7u64;
    // SAFETY: one thread.
    unsafe { GLOBAL = 2 };
    match fork() {
        Fork::Child => {
            numbers.push(4);
            local *= 10;
            unsafe { GLOBAL = 3 };
            println!("child-numbers: {numbers:?}");
            println!("child-local: {local}");
            println!("child-global: {}", unsafe { GLOBAL });
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            local += 1;
            println!("child-exitcode: {:?}", child.exitcode());
            println!("numbers: {numbers:?}");
            println!("local: {local}");
            println!("global: {}", unsafe { GLOBAL });
        }
    }
}

unsafe extern "C" {
    /// wasi-libc's, from `wasi:random/random`.
    fn getentropy(buffer: *mut u8, len: usize) -> i32;
}

/// 16 bytes from `wasi:random/random`, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is 16 writable bytes (getentropy takes up to 256).
    assert_eq!(unsafe { getentropy(bytes.as_mut_ptr(), bytes.len()) }, 0);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Secure random bytes drawn on each side after the fork.
fn random() {
    match fork() {
        Fork::Child => {
            println!("child-random: {}", random_hex());
            mp::exit(0);
        }
        Fork::Parent(child) => {
            println!("random: {}", random_hex());
            child.join().unwrap();
        }
    }
}

fn returns() {
    let me = getpid();
    println!("pid: {me}");
    match fork() {
        Fork::Child => {
            println!("child-pid: {}", getpid());
            println!("child-ppid: {}", getppid());
            println!("child-name: {}", mp::current_process().name());
            mp::exit(7);
        }
        Fork::Parent(child) => {
            println!("forked-pid: {:?}", child.pid());
            println!("forked-name: {}", child.name());
            child.join().unwrap();
            println!("forked-exitcode: {:?}", child.exitcode());
            println!("forked-alive: {}", child.is_alive());
            // A second fork is the second child.
            match fork() {
                Fork::Child => mp::exit(0),
                Fork::Parent(second) => {
                    println!("second-name: {}", second.name());
                    second.join().unwrap();
                }
            }
        }
    }
}

fn terminate() {
    match fork() {
        Fork::Child => sleep_forever(),
        Fork::Parent(child) => {
            println!("alive: {}", child.is_alive());
            child.terminate().unwrap();
            child.join().unwrap();
            println!("exitcode: {:?}", child.exitcode());
            println!("alive-after: {}", child.is_alive());
        }
    }
}

fn many() {
    let mut children = Vec::new();
    for i in 0..100 {
        match fork() {
            // Each child ends with its own number: its copy of `i`.
            Fork::Child => mp::exit(i),
            Fork::Parent(child) => children.push((i, child)),
        }
    }
    let mut reaped = 0;
    let mut pids = std::collections::BTreeSet::new();
    for (i, child) in &children {
        child.join().unwrap();
        if child.exitcode() == Some(*i) && !child.is_alive() {
            reaped += 1;
        }
        pids.insert(child.pid());
    }
    println!("reaped: {reaped}");
    println!("distinct-pids: {}", pids.len());
}

fn deadline() {
    match fork() {
        // Ended by the deadline it inherited, or never.
        Fork::Child => sleep_forever(),
        Fork::Parent(child) => println!("forked: {}", child.pid().is_some()),
    }
}

fn cap() {
    match fork() {
        Fork::Child => sleep_forever(),
        Fork::Parent(child) => {
            match mp::fork() {
                Ok(Fork::Child) => mp::exit(0),
                Ok(Fork::Parent(_)) => println!("second: forked"),
                Err(error) => println!("second: {}", error.kind()),
            }
            child.terminate().unwrap();
            child.join().unwrap();
            // The slot is free again.
            match fork() {
                Fork::Child => mp::exit(0),
                Fork::Parent(third) => {
                    third.join().unwrap();
                    println!("third: {:?}", third.exitcode());
                }
            }
        }
    }
}

fn daemon() {
    let p = Process::new(target!(daemon_forks), ()).with_daemon(true);
    p.start().unwrap();
    p.join().unwrap();
}

/// Output printed before the fork, still in the buffer, is printed once.
fn output() {
    print!("before ");
    match fork() {
        Fork::Child => {
            println!("child");
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            println!("parent");
        }
    }
}

/// The forked child starts a child of its own, which runs an entry.
fn nested() {
    match fork() {
        Fork::Child => {
            let p = Process::new(target!(five), ());
            p.start().unwrap();
            p.join().unwrap();
            println!("child-grandchild-exitcode: {:?}", p.exitcode());
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            println!("child-exitcode: {:?}", child.exitcode());
        }
    }
}

/// The bench's workload: a process with 16 MiB of linear memory in use
/// forks and joins a child that ends at once, `argv[2]` times (default 20);
/// prints the mean microseconds per fork and join.
fn bench() {
    let n: u32 = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(20);
    // Every page written, as Python's `bytearray(16 MiB)` is.
    let memory = std::hint::black_box(vec![1u8; 16 << 20]);
    let start = std::time::Instant::now();
    for _ in 0..n {
        match fork() {
            Fork::Child => mp::exit(0),
            Fork::Parent(child) => {
                child.join().unwrap();
                assert_eq!(child.exitcode(), Some(0));
            }
        }
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("us-per-fork: {micros:.1}");
    println!("memory-sum: {}", memory.iter().map(|&b| u64::from(b)).sum::<u64>());
}

/// A queue made before the fork is usable on both sides.
fn shared() {
    let queue: mp::Queue<u32> = mp::Queue::new();
    queue.put(&1).unwrap();
    match fork() {
        Fork::Child => {
            let first = queue.get().unwrap();
            queue.put(&(first + 41)).unwrap();
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            println!("child-exitcode: {:?}", child.exitcode());
            println!("got: {:?}", queue.get());
        }
    }
}

/// Files of a granted directory (`--dir HOST::/data`) read on both sides:
/// `/data/note.txt` before the fork, then again in the child and in the
/// parent, each a second time after the other's read.
fn files() {
    let read = || std::fs::read_to_string("/data/note.txt").map(|text| text.trim_end().to_string());
    println!("before: {:?}", read());
    match fork() {
        Fork::Child => {
            println!("child-read: {:?}", read());
            println!("child-again: {:?}", read());
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            println!("child-exitcode: {:?}", child.exitcode());
            println!("after: {:?}", read());
        }
    }
}

/// A fork while a spawned child runs: that child is the parent's alone
/// (the forked child sees its handle closed), and the parent still
/// terminates and joins it.
fn with_child() {
    let spawned = Process::new(target!(sleeper), ());
    spawned.start().unwrap();
    let side = mp::fork().inspect_err(|_| {
        // Refused: the sleeper would keep the run alive.
        let _ = spawned.terminate();
    });
    match side.unwrap_or_else(|error| {
        println!("fork: {}: {error}", error.kind());
        mp::exit(1);
    }) {
        Fork::Child => {
            println!("child-sees-spawned: {:?}", spawned.join().map_err(|e| e.kind()));
            mp::exit(0);
        }
        Fork::Parent(child) => {
            child.join().unwrap();
            println!("child-exitcode: {:?}", child.exitcode());
            println!("spawned-alive: {}", spawned.is_alive());
            spawned.terminate().unwrap();
            spawned.join().unwrap();
            println!("spawned-exitcode: {:?}", spawned.exitcode());
            println!("forked-name: {}", child.name());
        }
    }
}

fn main() {
    let scenarios: [(&str, fn()); 14] = [
        ("with-child", with_child),
        ("files", files),
        ("shared", shared),
        ("bench", bench),
        ("copy", copy),
        ("random", random),
        ("returns", returns),
        ("terminate", terminate),
        ("many", many),
        ("deadline", deadline),
        ("cap", cap),
        ("daemon", daemon),
        ("output", output),
        ("nested", nested),
    ];
    let name = std::env::args().nth(1).unwrap_or_default();
    match scenarios.iter().find(|(n, _)| *n == name) {
        Some((_, scenario)) => {
            scenario();
            println!("done: {name}");
        }
        None => {
            let names: Vec<&str> = scenarios.iter().map(|(n, _)| *n).collect();
            eprintln!("scenarios: {}", names.join(" "));
            mp::exit(2);
        }
    }
}
