//! Seed: a daemon child ends with its parent. The child would print
//! "is gone" after 2 s, but the parent ends after 1 s without joining it, so
//! that line never appears.
use std::thread::sleep;
use std::time::Duration;

use mp::{Process, target};

fn task(name: String) {
    println!("{name} is running");
    sleep(Duration::from_secs(2));
    println!("{name} is gone");
}

mp::entries!(task);

fn main() {
    let p = Process::new(target!(task), "changxin".to_string()).with_daemon(true);
    p.start().expect("start");
    sleep(Duration::from_secs(1));
    println!("===main");
}
