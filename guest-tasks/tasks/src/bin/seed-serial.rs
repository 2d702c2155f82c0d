//! Seed: three tasks sleeping 1, 2 and 3 s, each started and joined before
//! the next: about 6 s in all.
use std::thread::sleep;
use std::time::{Duration, Instant};

use mp::{Process, target};

fn task(name: String, secs: u64) {
    println!("{name} is running");
    sleep(Duration::from_secs(secs));
    println!("{name} is gone");
}

mp::entries!(task);

fn main() {
    let start = Instant::now();
    for (name, secs) in [("changxin", 1), ("liye", 2), ("haigou", 3)] {
        let p = Process::new(target!(task), (name.to_string(), secs));
        p.start().expect("start");
        p.join().expect("join");
    }
    println!("serial elapsed: {:.3} s", start.elapsed().as_secs_f64());
}
