//! Seed: an orphan. The parent starts a (non-daemon) child and ends at once
//! without joining; the child keeps running, is adopted by the root, and
//! prints its new ppid two seconds later. The host waits for it.
use std::thread::sleep;
use std::time::Duration;

use mp::{Process, getpid, getppid, target};

fn task() {
    println!("child pid={} ppid={} (parent still alive)", getpid(), getppid());
    sleep(Duration::from_secs(2));
    println!("orphan pid={} ppid={}", getpid(), getppid());
}

mp::entries!(task);

fn main() {
    let p = Process::new(target!(task), ());
    p.start().expect("start");
    println!("parent pid={} exits without joining child pid={:?}", getpid(), p.pid());
}
