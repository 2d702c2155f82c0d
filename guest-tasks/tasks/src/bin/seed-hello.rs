//! Seed: create a child process with a function target (Python's
//! `Process(target=task)`). The parent is not blocked by `start`; it joins the
//! child, so the last line is `over`.
use mp::{Process, getpid, target};

/// The child's body: it runs in a fresh instance of this program, never `main`.
fn task() {
    println!("this is sub process");
    println!("sub process id {}", getpid());
}

mp::entries!(task);

fn main() {
    let p = Process::new(target!(task), ());
    p.start().expect("start");
    println!("this is parent process");
    println!("main process pid={}", getpid());
    println!("waiting for the child...");
    p.join().expect("join");
    println!("over");
}
