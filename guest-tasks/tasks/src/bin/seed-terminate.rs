//! Seed: terminate a sleeping child, then check it: `is_alive` right after
//! `terminate` (Python prints True there: the end is not observed yet; a host
//! that observes it at once prints false), `is_alive` after `join` (false),
//! the exitcode (-15) and the default name (`Process-1`).
use std::thread::sleep;
use std::time::Duration;

use mp::{Process, target};

fn task(name: String) {
    println!("{name} is running");
    sleep(Duration::from_secs(3600));
    println!("{name} is gone");
}

mp::entries!(task);

fn main() {
    let p = Process::new(target!(task), "changxin".to_string());
    p.start().expect("start");
    println!("is_alive after start: {}", p.is_alive());
    p.terminate().expect("terminate");
    // Python prints True here (its end is not observed yet); a host may
    // observe it at once, but never says "not alive" without an exitcode.
    let alive = p.is_alive();
    let code = p.exitcode();
    println!("is_alive after terminate: {alive}");
    println!("ended means an exitcode: {}", alive || code == Some(-15));
    p.join().expect("join");
    println!("is_alive after join: {}", p.is_alive());
    println!("exitcode: {:?}", p.exitcode());
    println!("name: {}", p.name());
}
