//! Seed 003: `os.fork()`. The child gets a copy of everything its parent
//! has and their data do not affect each other; the child is told it is the
//! child, the parent gets the child's pid. A variable set before the fork
//! has its value on both sides; each side changes it after the fork, and
//! each sees only its own change. Unix only in Python; here, the native
//! backend only: elsewhere the fork fails with a clear error (exit 1).
use std::sync::atomic::{AtomicI32, Ordering};

use mp::{Fork, getpid, getppid};

static A: AtomicI32 = AtomicI32::new(257);

fn main() {
    let mut count = 10;
    let list = vec!["lili".to_string()];
    match mp::fork() {
        Ok(Fork::Child) => {
            count += 1;
            A.store(200, Ordering::SeqCst);
            let mut list = list;
            list.push("duijie".to_string());
            println!(
                "子进程 pid={} ppid={} count={count} a={} list={list:?}",
                getpid(),
                getppid(),
                A.load(Ordering::SeqCst)
            );
        }
        Ok(Fork::Parent(child)) => {
            child.join().expect("join");
            count -= 1;
            println!(
                "父进程 pid={} child={} exitcode={} count={count} a={} list={list:?}",
                getpid(),
                child.pid().unwrap_or_default(),
                child.exitcode().unwrap_or(-100),
                A.load(Ordering::SeqCst),
            );
        }
        Err(error) => {
            eprintln!("fork failed: {} ({error})", error.kind());
            mp::exit(1);
        }
    }
}
